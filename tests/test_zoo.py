"""Zoo models: shapes, configured widths == built layers, rebuild contract, numerics."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from torch import nn

from widthwise.reproduction.zoo import (
    CNN1D,
    GCN,
    GRULM,
    MLP,
    VGG,
    VGG1D,
    ResidualMLP,
    ResNet,
    ResNet1D,
    UNet,
    ViT,
    ViT1D,
    WidthConfigurable,
    normalize_adjacency,
    resnet18,
    resnet20,
    resnet50,
    vgg11,
    vgg16,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


EDGES = torch.tensor([[0, 1, 2, 2, 4], [1, 2, 3, 0, 4]])


def build(name: str, widths: list[int] | None = None):
    """(model, example_inputs, expected output shape) for a small instance of each family."""
    g = _gen()
    if name == "mlp":
        m = MLP(10, widths or [16, 12], 3)
        return m, torch.randn(2, 10, generator=g), (2, 3)
    if name == "cnn1d":
        m = CNN1D(widths or [8, 12, 6], batch_norm=True)
        return m, torch.randn(2, 40, generator=g), (2, 10)
    if name == "vgg":
        cfg = [*(widths or [8, 12, 16])]
        m = VGG([cfg[0], "M", cfg[1], "M", cfg[2], "M"], image_size=16, classifier_widths=[20])
        return m, torch.randn(2, 3, 16, 16, generator=g), (2, 10)
    if name == "resnet_basic":
        m = resnet20(width_mult=0.5) if widths is None else ResNet("basic", widths, [2, 1])
        return m, torch.randn(2, 3, 16, 16, generator=g), (2, 10)
    if name == "resnet_bottleneck":
        m = ResNet("bottleneck", widths or [16, 32], [2, 1], inner_widths=[[4, 6], 5, 8])
        return m, torch.randn(2, 3, 16, 16, generator=g), (2, 10)
    if name == "vit":
        w = widths or [16, 24, 20]
        m = ViT(8, 4, dim=w[0], depth=2, heads=2, mlp_dims=w[1:], num_classes=5)
        return m, torch.randn(2, 3, 8, 8, generator=g), (2, 5)
    if name == "gru":
        m = GRULM(20, 8, widths or [12, 10])
        return m, torch.randint(0, 20, (2, 5), generator=g), (2, 5, 20)
    if name == "gcn":
        m = GCN(5, widths or [7, 9], 3)
        x = torch.randn(5, 5, generator=g)
        return m, (x, normalize_adjacency(EDGES, 5)), (5, 3)
    if name == "unet":
        m = UNet(widths or [4, 6, 8], in_channels=1, num_classes=2)
        return m, torch.randn(2, 1, 16, 16, generator=g), (2, 2, 16, 16)
    if name == "vgg1d":
        w = widths or [8, 12, 16, 20]
        m = VGG1D(w[:-1], length=40, num_classes=10, hidden=w[-1])
        return m, torch.randn(2, 40, generator=g), (2, 10)
    if name == "resnet1d":
        w = widths or [8, 12, 8, 12]
        m = ResNet1D(w[:2], inner_widths=w[2:], length=40, num_classes=10)
        return m, torch.randn(2, 40, generator=g), (2, 10)
    if name == "vit1d":
        w = widths or [16, 24, 20]
        m = ViT1D(40, 4, dim=w[0], depth=2, heads=2, mlp_dims=w[1:], num_classes=5)
        return m, torch.randn(2, 40, generator=g), (2, 5)
    raise KeyError(name)


NAMES = [
    "mlp",
    "cnn1d",
    "vgg",
    "resnet_basic",
    "resnet_bottleneck",
    "vit",
    "gru",
    "gcn",
    "unet",
    "vgg1d",
    "resnet1d",
    "vit1d",
]

# other widths for each family, all different from the defaults
OTHER_WIDTHS = {
    "mlp": [5, 3],
    "cnn1d": [4, 4, 9],
    "vgg": [3, 5, 7],
    "resnet_basic": [6, 10],
    "resnet_bottleneck": [12, 20],
    "vit": [8, 4, 12],
    "gru": [3, 7],
    "gcn": [2, 11],
    "unet": [2, 3, 5],
    "vgg1d": [5, 7, 9, 11],
    "resnet1d": [6, 10, 3, 5],
    "vit1d": [8, 4, 12],
}


def run(model: nn.Module, x) -> torch.Tensor:
    return model(*x) if isinstance(x, tuple) else model(x)


def out_width(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)):
        return module.out_channels
    if isinstance(module, nn.GRU):
        return module.hidden_size
    if isinstance(module, nn.Embedding):
        return module.embedding_dim
    raise TypeError(type(module))


def weight_modules(model: nn.Module) -> dict[str, nn.Module]:
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.GRU, nn.Embedding)
    return {n: m for n, m in model.named_modules() if isinstance(m, kinds)}


# ---------------------------------------------------------------------------------------------
# expected producer widths, derived from the constructor arguments by hand


def expected_slots(model: nn.Module) -> dict[str, int]:
    cfg = model.config()
    if isinstance(model, MLP):
        return {f"hidden.{i}": w for i, w in enumerate(cfg["widths"])}
    if isinstance(model, CNN1D):
        return {f"convs.{i}": w for i, w in enumerate(cfg["widths"])}
    if isinstance(model, VGG):
        out, idx = {}, 0
        for v in cfg["cfg"]:
            if v == "M":
                idx += 1
            else:
                out[f"features.{idx}"] = v
                idx += 3 if cfg["batch_norm"] else 2
        for j, w in enumerate(cfg["classifier_widths"]):
            out[f"classifier.{2 * j}"] = w
        return out
    if isinstance(model, ResNet):
        basic = cfg["block"] == "basic"
        stem = cfg["stem_width"] or (
            cfg["stage_widths"][0] if basic else cfg["stage_widths"][0] // 4
        )
        out = {"conv1": stem}
        c, b = stem, 0
        inner = cfg["inner_widths"]
        for s, (w, n) in enumerate(zip(cfg["stage_widths"], cfg["blocks_per_stage"])):
            for j in range(n):
                p = f"layer{s + 1}.{j}"
                if basic:
                    out[f"{p}.conv1"] = inner[b] if inner else w
                    out[f"{p}.conv2"] = w
                else:
                    mids = inner[b] if inner else [w // 4, w // 4]
                    mids = [mids, mids] if isinstance(mids, int) else mids
                    out.update({f"{p}.conv1": mids[0], f"{p}.conv2": mids[1], f"{p}.conv3": w})
                if c != w or (s > 0 and j == 0):
                    out[f"{p}.downsample.0"] = w
                c, b = w, b + 1
        return out
    if isinstance(model, ViT):
        out = {"patch_embed": cfg["dim"]}
        for i, m in enumerate(cfg["mlp_dims"]):
            out.update({f"blocks.{i}.attn.{p}": cfg["dim"] for p in ("q", "k", "v", "proj")})
            out.update({f"blocks.{i}.fc1": m, f"blocks.{i}.fc2": cfg["dim"]})
        return out
    if isinstance(model, GRULM):
        return {"embed": cfg["embed_dim"]} | {
            f"rnns.{i}": h for i, h in enumerate(cfg["hidden_sizes"])
        }
    if isinstance(model, GCN):
        return {f"layers.{i}": w for i, w in enumerate(cfg["widths"])}
    if isinstance(model, VGG1D):  # conv, BN, ReLU, pool per stage of one conv
        out = {f"features.{4 * i}": w for i, w in enumerate(cfg["widths"])}
        return out | {"fc": cfg["hidden"]}
    if isinstance(model, ResNet1D):  # one block per stage here; stride 2 from stage 2
        out = {"stem": cfg["widths"][0]}
        for k, (w, inner) in enumerate(zip(cfg["widths"], cfg["inner_widths"])):
            out.update({f"blocks.{k}.conv1": inner, f"blocks.{k}.conv2": w})
            if k > 0:
                out[f"blocks.{k}.shortcut.0"] = w
        return out
    if isinstance(model, ViT1D):
        out = {"patch_embed": cfg["dim"]}
        for i, m in enumerate(cfg["mlp_dims"]):
            out.update({f"blocks.{i}.attn.{p}": cfg["dim"] for p in ("q", "k", "v", "proj")})
            out.update({f"blocks.{i}.fc1": m, f"blocks.{i}.fc2": cfg["dim"]})
        return out
    if isinstance(model, UNet):
        out = {}
        for i, w in enumerate(cfg["widths"]):
            out.update({f"enc.{i}.conv1": w, f"enc.{i}.conv2": w})
            if i < len(cfg["widths"]) - 1:
                out.update({f"up.{i}": w, f"dec.{i}.conv1": w, f"dec.{i}.conv2": w})
        return out
    raise TypeError(type(model))


OUTPUT_LAYERS = {
    MLP: {"head"},
    CNN1D: {"head"},
    ResNet: {"fc"},
    ViT: {"head"},
    GRULM: {"head"},
    GCN: {"head"},
    UNet: {"head"},
    VGG1D: {"head"},
    ResNet1D: {"head"},
    ViT1D: {"head"},
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("other", [False, True])
def test_forward_shape_and_width_slots_match_built_layers(name, other):
    model, x, shape = build(name, OTHER_WIDTHS[name] if other else None)
    assert isinstance(model, WidthConfigurable)
    out = run(model, x)
    assert tuple(out.shape) == shape
    assert torch.isfinite(out).all()

    slots = model.width_slots()
    assert slots == expected_slots(model)
    modules = weight_modules(model)
    for layer, width in slots.items():
        assert out_width(modules[layer]) == width, layer
    # every weight layer is a slot except the output layer
    if isinstance(model, VGG):
        output = {max(n for n in modules if n.startswith("classifier."))}
    else:
        output = OUTPUT_LAYERS[type(model)]
    assert set(modules) - set(slots) == output
    if other and name in ("resnet_basic", "resnet_bottleneck"):
        assert model.config()["stage_widths"] == OTHER_WIDTHS[name]
    elif other:
        skip = {"vgg": slice(0, 3), "gru": slice(1, None)}.get(name, slice(None))
        assert model.widths()[skip] == OTHER_WIDTHS[name]


@pytest.mark.parametrize("name", NAMES)
def test_rebuild_contract(name):
    model, x, shape = build(name)
    # from_config(config()) gives the same architecture
    clone = type(model).from_config(model.config())
    assert [(n, p.shape) for n, p in clone.named_parameters()] == [
        (n, p.shape) for n, p in model.named_parameters()
    ]
    same = model.with_widths(model.widths())
    assert same.width_slots() == model.width_slots()
    # new widths: every entry changes by one, the rebuilt model follows and still runs
    new = [w + 1 for w in model.widths()]
    if isinstance(model, ViT | ViT1D):
        new[0] = model.widths()[0] + 2  # keep dim divisible by heads
    rebuilt = model.with_widths(new)
    assert rebuilt.widths() == new
    assert rebuilt.width_slots() == expected_slots(rebuilt)
    assert tuple(run(rebuilt, x).shape) == shape
    # config is plain JSON (a run file can store it) and a copy, not a view
    assert type(model).from_config(json.loads(json.dumps(model.config()))).widths() == (
        model.widths()
    )
    cfg = model.config()
    next(v for v in cfg.values() if isinstance(v, list)).append(999)
    assert model.config() != cfg
    with pytest.raises(ValueError, match="configurable widths"):
        model.with_widths([*new, 3])


@pytest.mark.parametrize("name", NAMES)
def test_width_layers_name_the_slot_each_width_sets(name):
    model, _, _ = build(name)
    widths, layers, slots = model.widths(), model.width_layers(), model.width_slots()
    assert len(layers) == len(widths)
    for i, (layer, w) in enumerate(zip(layers, widths)):
        assert slots[layer] == w
        probe = list(widths)
        probe[i] += 2
        assert model.with_widths(probe).width_slots()[layer] == w + 2, layer
    assert type(model).from_config(model.config_with_widths(widths)).width_slots() == slots


def test_conventional_1d_models_refuse_bad_shapes_with_clear_errors():
    with pytest.raises(ValueError, match="stages of 2 convs"):
        VGG1D([8, 16, 32], convs_per_stage=2)
    with pytest.raises(ValueError, match="too short"):
        VGG1D([4] * 7, length=40)
    with pytest.raises(ValueError, match="inner_widths needs one entry per block"):
        ResNet1D([8, 16], inner_widths=[4])
    with pytest.raises(ValueError, match="patch_size 3 must divide length 40"):
        ViT1D(40, 3)
    with pytest.raises(ValueError, match="heads"):
        ViT1D(40, 4, dim=10, heads=4)
    # the defaults are the conventional ones: MLP ratio 4, one block per stage
    assert ViT1D(40, 4, dim=64).widths() == [64, 256, 256]
    assert ResNet1D([16, 32]).widths() == [16, 32, 16, 32]


def test_resnet_widths_order_and_tied_stem():
    r = ResNet("basic", [8, 16], [2, 1], inner_widths=[3, 4, 5])
    assert r.widths() == [8, 8, 16, 3, 4, 5]
    assert r.layer1[0].downsample is None  # stem joins stage 1's residual stream
    wider = r.with_widths([10, 10, 16, 3, 4, 5])
    assert wider.config()["stem_width"] is None and wider.layer1[0].downsample is None
    untied = r.with_widths([6, 10, 16, 3, 4, 5])
    assert untied.conv1.out_channels == 6
    assert untied.layer1[0].downsample[0].out_channels == 10


def test_presets_match_reference_sizes():
    def n_params(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    # torchvision's published sizes (ImageNet stem, 1000 classes), with a 10-class head instead
    def with_10_classes(total: int, features: int) -> int:
        return total - (features * 1000 + 1000) + (features * 10 + 10)

    assert n_params(resnet18(stem="imagenet")) == with_10_classes(11_689_512, 512)
    assert n_params(resnet50(stem="imagenet")) == with_10_classes(25_557_032, 2048)
    # CIFAR VGG-16 with BN, counted layer by layer
    expected, c = 0, 3
    for v in [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]:
        expected += c * v * 9 + 2 * v  # conv (no bias with BN) + BN affine
        c = v
    expected += 512 * 10 + 10
    assert n_params(vgg16()) == expected
    assert vgg11(width_mult=0.5).widths() == [32, 64, 128, 128, 256, 256, 256, 256]
    r20 = resnet20()
    assert r20.widths()[:4] == [16, 16, 32, 64] and len(r20.widths()) == 1 + 3 + 9
    assert resnet50(width_mult=0.5).widths()[:5] == [32, 128, 256, 512, 1024]


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: MLP(4, [3, 0], 2), "positive integers"),
        (lambda: MLP(4, [3], 2, activation="swish"), "activation"),
        (lambda: CNN1D([4], kernel_size=4), "odd"),
        (lambda: VGG([8, "M"] * 6, image_size=32), "divisible"),
        (lambda: ResNet("basic", [8, 16], [1]), "one entry per stage"),
        (lambda: ResNet("bottleneck", [8], [1], inner_widths=[[1, 2, 3]]), "bottleneck"),
        (lambda: ViT(8, 3, 16, 1, 2, [8], 3), "patch_size"),
        (lambda: ViT(8, 4, 15, 1, 2, [8], 3), "heads"),
        (lambda: ViT(8, 4, 16, 2, 2, [8], 3), "one entry per block"),
        (lambda: GRULM(10, 4, []), "must not be empty"),
    ],
)
def test_bad_arguments_raise_clear_errors(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


def test_numpy_and_torch_integers_are_accepted_as_plain_ints():
    import numpy as np

    m = ResNet("bottleneck", np.array([8, 16]), [1, 1], inner_widths=[np.int64(2), [3, 4]])
    assert m.config()["inner_widths"] == [[2, 2], [3, 4]]
    assert json.loads(json.dumps(m.config())) == m.config()
    assert MLP(3, torch.tensor([5, 4]), 2).with_widths(np.array([6, 7])).widths() == [6, 7]


def test_unet_rejects_indivisible_input():
    with pytest.raises(ValueError, match="divisible by 4"):
        UNet([2, 3, 4], in_channels=1)(torch.zeros(1, 1, 10, 10))


# ---------------------------------------------------------------------------------------------
# numerics against naive references


def test_mlp_matches_explicit_loops():
    torch.manual_seed(0)
    m = MLP(3, [4], 2, activation="tanh")
    x = torch.randn(5, 3)
    w1, b1, w2, b2 = (p.detach() for p in m.parameters())
    ref = torch.zeros(5, 2)
    for n in range(5):
        h = [math.tanh(sum(w1[j, i] * x[n, i] for i in range(3)) + b1[j]) for j in range(4)]
        for k in range(2):
            ref[n, k] = sum(w2[k, j] * h[j] for j in range(4)) + b2[k]
    assert torch.allclose(m(x), ref, atol=1e-5)


def test_normalize_adjacency_matches_loops():
    n = 5
    a = [[0.0] * n for _ in range(n)]
    for s, d in EDGES.T.tolist():
        a[s][d] = a[d][s] = 1.0
    for i in range(n):
        a[i][i] = 1.0
    deg = [sum(row) for row in a]
    ref = torch.tensor([[a[i][j] / math.sqrt(deg[i] * deg[j]) for j in range(n)] for i in range(n)])
    got = normalize_adjacency(EDGES, n)
    assert got.is_sparse
    assert torch.allclose(got.to_dense(), ref)
    # duplicated and reversed edges change nothing
    dup = torch.cat([EDGES, EDGES.flip(0)], dim=1)
    assert torch.allclose(normalize_adjacency(dup, n).to_dense(), ref)
    with pytest.raises(ValueError, match="outside"):
        normalize_adjacency(torch.tensor([[0], [7]]), 5)


def test_gcn_dense_and_sparse_agree_with_reference():
    torch.manual_seed(0)
    model, (x, adj), _ = build("gcn")
    dense = adj.to_dense()
    h = x
    for layer in model.layers:
        h = torch.relu(dense @ (h @ layer.weight.T + layer.bias))
    ref = dense @ (h @ model.head.weight.T + model.head.bias)
    assert torch.allclose(model(x, adj), ref, atol=1e-5)
    assert torch.allclose(model(x, dense), ref, atol=1e-5)


def test_vit_attention_matches_per_head_loops():
    torch.manual_seed(0)
    model, _, _ = build("vit")
    attn = model.blocks[0].attn
    x = torch.randn(2, 4, 16)
    q, k, v = attn.q(x), attn.k(x), attn.v(x)
    heads, hd = 2, 8
    out = torch.zeros(2, 4, 16)
    for b in range(2):
        for h in range(heads):
            sl = slice(h * hd, (h + 1) * hd)
            for i in range(4):
                scores = torch.stack([q[b, i, sl] @ k[b, j, sl] / math.sqrt(hd) for j in range(4)])
                p = torch.softmax(scores, 0)
                out[b, i, sl] = sum(p[j] * v[b, j, sl] for j in range(4))
    ref = out @ attn.proj.weight.T + attn.proj.bias
    assert torch.allclose(attn(x), ref, atol=1e-5)


def test_unet_skip_concat_comes_first():
    model, x, _ = build("unet")
    # the documented layout: dec.0.conv1 reads [skip from enc.0, upsampled map] in that order
    assert model.dec[0].conv1.in_channels == 2 * model.widths()[0]
    captured = {}
    model.dec[0].register_forward_pre_hook(lambda m, a: captured.setdefault("in", a[0]))
    model.enc[0].register_forward_hook(lambda m, a, o: captured.setdefault("skip", o))
    model.eval()
    model(x)
    w0 = model.widths()[0]
    assert torch.equal(captured["in"][:, :w0], captured["skip"])


def test_gru_stack_matches_manual_layers():
    torch.manual_seed(0)
    lm = GRULM(11, 4, [6, 5])
    tokens = torch.randint(0, 11, (3, 7))
    h = lm.embed(tokens)
    for rnn in lm.rnns:
        # explicit GRU recurrence (PyTorch gate order r, z, n)
        w_ih, w_hh, b_ih, b_hh = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0
        hs, state = [], torch.zeros(3, rnn.hidden_size)
        for t in range(7):
            gi = h[:, t] @ w_ih.T + b_ih
            gh = state @ w_hh.T + b_hh
            r_i, z_i, n_i = gi.chunk(3, 1)
            r_h, z_h, n_h = gh.chunk(3, 1)
            r, z = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
            n = torch.tanh(n_i + r * n_h)
            state = (1 - z) * n + z * state
            hs.append(state)
        h = torch.stack(hs, 1)
    ref = h @ lm.head.weight.T + lm.head.bias
    assert torch.allclose(lm(tokens), ref, atol=1e-5)


def test_cnn1d_flatten_size_follows_length():
    for length in (40, 41, 17):
        m = CNN1D([3, 5], length=length, kernel_size=3)
        n = length
        for _ in range(2):
            n = (n + 2 * 1 - 3) // 2 + 1
        assert m.head.in_features == 5 * n
        assert m(torch.zeros(2, 1, length)).shape == (2, 10)


def test_residual_mlp_is_reexported():
    assert ResidualMLP(3, 4, 1)(torch.zeros(2, 3)).shape == (2, 4)


# ---------------------------------------------------------------------------------------------
# channel groups: find_groups recovers exactly the widths the configuration asked for


def expected_partition(model: nn.Module) -> list[set[str]]:
    """Which producing layers share a channel group, worked out from the config by hand."""
    slots = expected_slots(model)
    if isinstance(model, ResNet):
        cfg = model.config()
        last = "conv2" if cfg["block"] == "basic" else "conv3"
        groups = []
        for s, n in enumerate(cfg["blocks_per_stage"]):
            p = f"layer{s + 1}"
            stream = {f"{p}.{j}.{last}" for j in range(n)}
            stream |= {k for k in slots if k.startswith(f"{p}.") and "downsample" in k}
            if s == 0 and f"{p}.0.downsample.0" not in slots:
                stream.add("conv1")  # identity shortcut: the stem feeds stage 1's residual sum
            groups.append(stream)
        tied = set().union(*groups)
        return groups + [{k} for k in slots if k not in tied]
    if isinstance(model, ResNet1D):
        n = len(model.config()["widths"])
        streams = [{"stem", "blocks.0.conv2"}] + [
            {f"blocks.{k}.conv2", f"blocks.{k}.shortcut.0"} for k in range(1, n)
        ]
        return streams + [{f"blocks.{k}.conv1"} for k in range(n)]
    if isinstance(model, ViT | ViT1D):
        depth = model.config()["depth"]
        stream = {"patch_embed"} | {
            f"blocks.{i}.{m}" for i in range(depth) for m in ("attn.proj", "fc2")
        }
        heads = [{f"blocks.{i}.attn.{p}" for p in "qkv"} for i in range(depth)]
        return [stream, *heads, *({f"blocks.{i}.fc1"} for i in range(depth))]
    return [{k} for k in slots]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("other", [False, True])
def test_find_groups_recovers_configured_widths(name, other):
    from widthwise import GroupingWarning, find_groups

    model, x, _ = build(name, OTHER_WIDTHS[name] if other else None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GroupingWarning)  # every channel must be grouped
        groups = find_groups(model, x)
    slots = expected_slots(model)
    found = []
    for g in groups:
        layers = {m.param.rsplit(".", 1)[0] for m in g.producers}
        assert layers, g.name
        for layer in layers:
            assert slots[layer] == g.width, (g.name, layer)
        found.append(sorted(layers))
    expected = [sorted(s) for s in expected_partition(model)]
    assert sorted(found) == sorted(expected)
    # and so the widths a report would show are the configured ones
    assert sorted(g.width for g in groups) == sorted(slots[s[0]] for s in expected)
    if name in ("gcn", "mlp", "cnn1d"):  # A @ H mixes nodes, not channels: not attention
        assert all(g.kind != "attention" and "attention" not in g.name for g in groups)


def test_flatten_consumers_repeat_over_positions():
    from widthwise import find_groups

    cnn, x, _ = build("cnn1d")
    last = find_groups(cnn, x)[-1]
    head = next(m for m in last.consumers if m.param == "head.weight")
    assert head.repeat == cnn.feature_length == 5


@pytest.mark.parametrize("name", NAMES)
def test_group_level_widths_rebuild_through_width_layers(name):
    """A plan says a new width per group; width_layers turns it into a config that has it."""
    from widthwise import find_groups

    model, x, _ = build(name)
    groups = find_groups(model, x)
    if name in (
        "vit",
        "vit1d",
        "unet",
    ):  # their groups are tied by the config: change them together
        new = {g.name: 2 * g.width for g in groups}
    else:
        new = {g.name: g.width + i + 1 for i, g in enumerate(sorted(groups, key=lambda g: g.name))}
    per_layer = {m.param.rsplit(".", 1)[0]: new[g.name] for g in groups for m in g.producers}
    widths = [per_layer[n] for n in model.width_layers()]
    rebuilt = type(model).from_config(model.config_with_widths(widths))
    got = {g.name: g.width for g in find_groups(rebuilt, x)}
    assert got == new
