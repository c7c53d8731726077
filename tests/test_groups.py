"""find_groups: expected group structure per architecture, warnings, errors and side effects.

Every expected structure is written out here from the architecture's definition (module
attributes and loops), not copied from find_groups' output. A second, independent check permutes
each group's channels with explicit per-channel loops on a randomised copy of the model and
asserts the output does not change.
"""

from __future__ import annotations

import copy
import gc
import pickle
import warnings
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archs
from widthwise import ChannelGroup, GroupingError, GroupingWarning, Member, find_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def M(param, dim, role, offset=0, repeat=1, gate=None):
    return Member(param, dim, role, offset, repeat, gate)


def producer(name, module, repeat=1):
    """Rows (or ConvTranspose columns) that compute the output channels, plus the bias."""
    out = [M(f"{name}.weight", 0, "producer", repeat=repeat)]
    if getattr(module, "bias", None) is not None:
        out.append(M(f"{name}.bias", 0, "other"))
    return out


LIN = nn.Linear(1, 1)  # stands for "a layer with a bias" in the expectations below


def consumer(name, offset=0, repeat=1):
    return [M(f"{name}.weight", 1, "consumer", offset, repeat)]


def norm(name):
    return [M(f"{name}.weight", 0, "norm"), M(f"{name}.bias", 0, "norm")]


def spec(groups):
    return {g.name: (g.width, g.kind, g.divisor, frozenset(g.members)) for g in groups}


def check(groups, expected):
    got = spec(groups)
    assert sorted(got) == sorted(expected)
    for name, (width, kind, divisor, members) in expected.items():
        w, k, d, ms = got[name]
        assert (w, k, d) == (width, kind, divisor), name
        assert ms == frozenset(members), (name, ms ^ frozenset(members))
        assert len(ms) == len(next(g for g in groups if g.name == name).members)


def quiet_groups(model, inputs, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", GroupingWarning)
        return find_groups(model, inputs, **kw)


# ---------------------------------------------------------------------------------------------
# expected structures, written from each architecture's definition


def expected_mlp(model, x):
    return {
        "0": (model[0].out_features, "linear", 1, [*producer("0", model[0]), *consumer("2")]),
        "2": (model[2].out_features, "linear", 1, [*producer("2", model[2]), *consumer("4")]),
    }


def expected_layernorm_mlp(model, x):
    return {
        "0": (
            model[0].out_features,
            "linear",
            1,
            [*producer("0", model[0]), *norm("1"), *consumer("3")],
        )
    }


def expected_vgg_bn_flatten(model, x):
    f = model.features
    spatial = (x.shape[-2] // 4) * (x.shape[-1] // 4)  # two 2x2 max-pools
    assert model.classifier[1].in_features == f[4].out_channels * spatial
    return {
        "features.0": (
            f[0].out_channels,
            "conv",
            1,
            [*producer("features.0", f[0]), *norm("features.1"), *consumer("features.4")],
        ),
        "features.4": (
            f[4].out_channels,
            "conv",
            1,
            [
                *producer("features.4", f[4]),
                *norm("features.5"),
                *consumer("classifier.1", repeat=spatial),
            ],
        ),
        "classifier.1": (
            model.classifier[1].out_features,
            "linear",
            1,
            [*producer("classifier.1", model.classifier[1]), *consumer("classifier.3")],
        ),
    }


def expected_resnet_small(model, x):
    exp = {}
    streams = []
    stream = [*producer("conv1", model.conv1), *norm("bn1")]  # the stem opens stream 1
    for stage in ("layer1", "layer2"):
        for i, block in enumerate(getattr(model, stage)):
            p = f"{stage}.{i}"
            exp[f"{p}.conv1"] = (
                block.conv1.out_channels,
                "conv",
                1,
                [*producer(f"{p}.conv1", block.conv1), *norm(f"{p}.bn1"), *consumer(f"{p}.conv2")],
            )
            stream += consumer(f"{p}.conv1")  # each block reads the incoming stream
            if block.downsample is not None:  # ... and a downsampling block opens a new one
                streams.append(stream + consumer(f"{p}.downsample.0"))
                stream = [
                    *producer(f"{p}.downsample.0", block.downsample[0]),
                    *norm(f"{p}.downsample.1"),
                ]
            stream += [*producer(f"{p}.conv2", block.conv2), *norm(f"{p}.bn2")]
    streams.append(stream + consumer("fc"))
    # a stream is named after the stage that holds most of its producers
    exp["layer1 (residual)"] = (model.layer1[0].conv2.out_channels, "residual", 1, streams[0])
    exp["layer2 (residual)"] = (model.layer2[0].conv2.out_channels, "residual", 1, streams[1])
    return exp


def expected_depthwise_cnn(model, x):
    dw = model[3]
    assert dw.groups == dw.in_channels == dw.out_channels
    return {
        "0": (
            model[0].out_channels,
            "conv",
            1,
            [*producer("0", model[0]), *norm("1"), *producer("3", dw), *norm("4"), *consumer("6")],
        ),
        "6": (
            model[6].out_channels,
            "conv",
            1,
            [*producer("6", model[6]), *norm("7"), *consumer("11")],
        ),
    }


def expected_groupnorm_cnn(model, x):
    return {
        "0": (
            model[0].out_channels,
            "conv",
            model[1].num_groups,
            [*producer("0", model[0]), *norm("1"), *consumer("3")],
        ),
        "3": (
            model[3].out_channels,
            "conv",
            model[4].num_groups,
            [*producer("3", model[3]), *norm("4"), *consumer("8")],
        ),
    }


def expected_unet_concat(model, x):
    up = model.up.out_channels  # cat([up, enc1]): enc1 starts after up's channels
    return {
        "enc1": (
            model.enc1.out_channels,
            "conv",
            1,
            [*producer("enc1", model.enc1), *consumer("enc2"), *consumer("dec", offset=up)],
        ),
        "enc2": (
            model.enc2.out_channels,
            "conv",
            1,
            [*producer("enc2", model.enc2), *consumer("up")],
        ),
        "up": (up, "conv", 1, [*producer("up", model.up), *consumer("dec", offset=0)]),
        "dec": (
            model.dec.out_channels,
            "conv",
            1,
            [*producer("dec", model.dec), *consumer("head")],
        ),
    }


def expected_mha_model(model, x):
    a = model.attn
    e, h = a.embed_dim, a.num_heads
    inner = [M("attn.out_proj.weight", 1, "consumer")]
    for g, gate in enumerate("qkv"):
        inner += [
            M("attn.in_proj_weight", 0, "producer", g * e, gate=gate),
            M("attn.in_proj_bias", 0, "other", g * e, gate=gate),
        ]
    return {
        "embed": (
            e,
            "linear",
            1,
            [*producer("embed", model.embed), M("attn.in_proj_weight", 1, "consumer")],
        ),
        "attn (attention)": (e, "attention", h, inner),
        # nn.MultiheadAttention ties its output width to embed_dim (a multiple of the heads)
        "attn.out_proj": (
            e,
            "linear",
            h,
            [*producer("attn.out_proj", a.out_proj), *consumer("head")],
        ),
    }


def expected_handwritten_attention(model, x):
    d = model.q.out_features
    qkv = ("q", "k", "v")
    return {
        "embed+proj (residual)": (
            d,
            "residual",
            1,
            [
                *producer("embed", model.embed),
                *(c for n in qkv for c in consumer(n)),
                *producer("proj", model.proj),
                *consumer("head"),
            ],
        ),
        "q+k+v (attention)": (
            d,
            "attention",
            model.heads,
            [*(p for n in qkv for p in producer(n, getattr(model, n))), *consumer("proj")],
        ),
    }


def expected_hf_bert_tiny(model, x):
    cfg = model.config
    e = "bert.embeddings"
    stream = [
        M(f"{e}.{n}_embeddings.weight", 1, "producer") for n in ("word", "position", "token_type")
    ] + norm(f"{e}.LayerNorm")
    exp = {}
    for i in range(cfg.num_hidden_layers):
        p = f"bert.encoder.layer.{i}"
        s = f"{p}.attention.self"
        qkv = [f"{s}.query", f"{s}.key", f"{s}.value"]
        stream += [c for n in qkv for c in consumer(n)]
        stream += [
            *producer(f"{p}.attention.output.dense", LIN),
            *norm(f"{p}.attention.output.LayerNorm"),
            *consumer(f"{p}.intermediate.dense"),
            *producer(f"{p}.output.dense", LIN),
            *norm(f"{p}.output.LayerNorm"),
        ]
        exp[f"{s} (attention)"] = (
            cfg.hidden_size,
            "attention",
            cfg.num_attention_heads,
            [*(q for n in qkv for q in producer(n, LIN)), *consumer(f"{p}.attention.output.dense")],
        )
        exp[f"{p}.intermediate.dense"] = (
            cfg.intermediate_size,
            "linear",
            1,
            [*producer(f"{p}.intermediate.dense", LIN), *consumer(f"{p}.output.dense")],
        )
    exp["bert (residual)"] = (
        cfg.hidden_size,
        "residual",
        1,
        [*stream, *consumer("bert.pooler.dense")],
    )
    exp["bert.pooler.dense"] = (
        cfg.hidden_size,
        "linear",
        1,
        [*producer("bert.pooler.dense", LIN), *consumer("classifier")],
    )
    return exp


def _pick(names, prefix, *options):
    """Module names differ between transformers 4.x and 5.x: take the one this model has."""
    for o in options:
        if f"{prefix}.{o}" in names:
            return f"{prefix}.{o}"
    raise AssertionError(f"none of {options} under {prefix}")


def _prefix(names):
    parts = [n.split(".") for n in names]
    out = []
    for segs in zip(*parts):
        if len(set(segs)) > 1:
            break
        out.append(segs[0])
    return ".".join(out)


def expected_hf_vit_tiny(model, x):
    cfg = model.config
    names = dict(model.named_modules())
    layers = _pick(names, "vit", "layers", "encoder.layer")
    e = "vit.embeddings"
    lin = LIN
    stream = [
        M(f"{e}.cls_token", 2, "other"),
        M(f"{e}.position_embeddings", 2, "other"),
        *producer(f"{e}.patch_embeddings.projection", lin),
    ]
    exp = {}
    for i in range(cfg.num_hidden_layers):
        p = f"{layers}.{i}"
        q = _pick(names, p, "attention.q_proj", "attention.attention.query")
        k = _pick(names, p, "attention.k_proj", "attention.attention.key")
        v = _pick(names, p, "attention.v_proj", "attention.attention.value")
        o = _pick(names, p, "attention.o_proj", "attention.output.dense")
        fc1 = _pick(names, p, "mlp.fc1", "intermediate.dense")
        fc2 = _pick(names, p, "mlp.fc2", "output.dense")
        stream += [
            *norm(f"{p}.layernorm_before"),
            *consumer(q),
            *consumer(k),
            *consumer(v),
            *producer(o, lin),
            *norm(f"{p}.layernorm_after"),
            *consumer(fc1),
            *producer(fc2, lin),
        ]
        exp[f"{_prefix([q, k, v])} (attention)"] = (
            cfg.hidden_size,
            "attention",
            cfg.num_attention_heads,
            [*producer(q, lin), *producer(k, lin), *producer(v, lin), *consumer(o)],
        )
        exp[fc1] = (cfg.intermediate_size, "linear", 1, [*producer(fc1, lin), *consumer(fc2)])
    exp["vit (residual)"] = (
        cfg.hidden_size,
        "residual",
        1,
        [*stream, *norm("vit.layernorm"), *consumer("classifier")],
    )
    return exp


def expected_recurrent(model, x, gates):
    rnn, h = model.rnn, model.rnn.hidden_size
    exp = {
        "embed": (
            model.embed.out_features,
            "linear",
            1,
            [*producer("embed", model.embed), M("rnn.weight_ih_l0", 1, "consumer")],
        )
    }
    for layer in range(rnn.num_layers):
        members = [M(f"rnn.weight_hh_l{layer}", 1, "consumer")]
        for g, gate in enumerate(gates):
            for w in ("weight_ih", "weight_hh"):
                members.append(M(f"rnn.{w}_l{layer}", 0, "producer", g * h, gate=gate))
            for b in ("bias_ih", "bias_hh"):
                members.append(M(f"rnn.{b}_l{layer}", 0, "other", g * h, gate=gate))
        if layer + 1 < rnn.num_layers:
            members.append(M(f"rnn.weight_ih_l{layer + 1}", 1, "consumer"))
        else:
            members += consumer("head")
        exp[f"rnn.l{layer} (hidden)"] = (h, "recurrent", 1, members)
    return exp


EXPECTED = {
    "mlp": expected_mlp,
    "vgg_bn_flatten": expected_vgg_bn_flatten,
    "resnet_small": expected_resnet_small,
    "depthwise_cnn": expected_depthwise_cnn,
    "groupnorm_cnn": expected_groupnorm_cnn,
    "layernorm_mlp": expected_layernorm_mlp,
    "unet_concat": expected_unet_concat,
    "mha_model": expected_mha_model,
    "handwritten_attention": expected_handwritten_attention,
    "hf_bert_tiny": expected_hf_bert_tiny,
    "hf_vit_tiny": expected_hf_vit_tiny,
    "gru_model": lambda m, x: expected_recurrent(m, x, "rzn"),
    "lstm_model": lambda m, x: expected_recurrent(m, x, "ifgo"),
}


@pytest.mark.parametrize("arch", list(EXPECTED))
def test_group_structure(arch):
    model, x = archs.ARCHS[arch]()
    groups = quiet_groups(model, x)
    check(groups, EXPECTED[arch](model, x))
    # model order: the first producer of each group appears later than the previous one's
    order = {n: i for i, (n, _) in enumerate(model.named_parameters())}
    firsts = [min(order[m.param] for m in g.producers) for g in groups]
    assert firsts == sorted(firsts)
    for g in groups:
        assert list(g.layers) == sorted(set(g.layers), key=list(dict(model.named_modules())).index)


# ---------------------------------------------------------------------------------------------
# independent check: permuting a group's channels must not change the output


def _permute_copy(model, groups, seed):
    """A copy of ``model`` with every group's channels permuted, slice by slice (naive loops)."""
    gen = torch.Generator().manual_seed(seed)
    new = copy.deepcopy(model)
    params = dict(new.named_parameters())
    buffers = dict(new.named_buffers())
    with torch.no_grad():
        for g in groups:
            block = g.width // g.divisor
            perm = []
            for b in range(g.divisor):
                perm += [b * block + int(i) for i in torch.randperm(block, generator=gen)]
            for m in g.members:
                targets = [params[m.param]]
                if m.role == "norm" and m.param.endswith(".weight"):
                    mod = m.param[: -len(".weight")]
                    targets += [
                        buffers[f"{mod}.{b}"]
                        for b in ("running_mean", "running_var")
                        if f"{mod}.{b}" in buffers
                    ]
                for t in targets:
                    old = t.detach().clone()
                    for i in range(g.width):
                        for dst, src in zip(m.indices(i), m.indices(perm[i])):
                            t.select(m.dim, dst).copy_(old.select(m.dim, src))
    return new


def _outputs(model, x):
    if isinstance(x, dict):
        out = model(**x)
    elif isinstance(x, tuple):
        out = model(*x)
    else:
        out = model(x)
    return out.logits if hasattr(out, "logits") else out


def assert_each_group_is_a_symmetry(model, x, groups):
    """Permute each group alone (naive loops, :func:`_permute_copy`) on fresh random weights and
    check the output does not change; returns the unpermuted output. ``model`` keeps the random
    weights, in eval mode."""
    # fresh random weights so that ones/zeros-initialised members cannot hide a mistake
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) / (p[0].numel() ** 0.5 if p.ndim > 1 else 4.0))
    model.eval()
    ref = _outputs(model, x)
    for k, g in enumerate(groups):
        out = _outputs(_permute_copy(model, [g], seed=k).eval(), x)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5, msg=g.name)
    return ref


@pytest.mark.parametrize("arch", list(EXPECTED))
def test_permuting_each_group_preserves_the_output(arch):
    model, x = archs.ARCHS[arch]()
    groups = quiet_groups(model, x)
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    # and the permutation really does something: shuffling a producer alone changes the output
    g = groups[0]
    broken = replace_members(g, [m for m in g.members if m.role != "consumer"])
    out = _outputs(_permute_copy(model, [broken], seed=99).eval(), x)
    assert not torch.allclose(out, ref, rtol=1e-4, atol=1e-5)


def replace_members(g, members):
    return ChannelGroup(g.name, g.width, tuple(members), g.layers, g.kind, g.divisor)


# ---------------------------------------------------------------------------------------------
# what cannot be grouped


@pytest.mark.parametrize("form", ["linear", "einsum", "matmul"])
def test_raw_parameter_matmul_is_left_out_with_one_warning(form):
    model, x = archs.raw_param_linear(form=form)
    with pytest.warns(GroupingWarning) as record:
        groups = find_groups(model, x)
    assert len([r for r in record if r.category is GroupingWarning]) == 1
    assert "'w'" in str(record[0].message)
    check(groups, {"fc2": (10, "linear", 1, [*producer("fc2", model.fc2), *consumer("fc3")])})


def test_channel_shuffle_is_left_out_with_one_warning():
    model, x = archs.channel_shuffle_cnn()
    with pytest.warns(GroupingWarning) as record:
        groups = find_groups(model, x)
    assert len([r for r in record if r.category is GroupingWarning]) == 1
    msg = str(record[0].message)
    assert "conv1" in msg and "shuffle" in msg
    check(
        groups,
        {
            "conv2": (8, "conv", 1, [*producer("conv2", model.conv2), *consumer("conv3")]),
            "conv3": (12, "conv", 1, [*producer("conv3", model.conv3), *consumer("fc")]),
        },
    )


def test_untraceable_model_raises_grouping_error():
    model, x = archs.untraceable()
    with pytest.raises(GroupingError, match="could not trace Untraceable") as info:
        find_groups(model, x)
    assert isinstance(info.value.__cause__, ValueError)
    assert "\n" not in str(info.value)
    assert all(not m._forward_hooks for m in model.modules())  # no tracing hooks left behind
    with pytest.raises(GroupingError, match=r"torch\.nn\.Module"):
        find_groups(lambda t: t, x)


class NoGradForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        with torch.no_grad():
            return self.fc(x)


def test_forward_without_autograd_raises_grouping_error():
    with pytest.raises(GroupingError, match="no_grad"):
        find_groups(NoGradForward(), torch.randn(2, 8))


class InputResidual(nn.Module):
    """x + f(x): the inner output is tied to the model's input channels, so not tunable."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(x + self.b(F.relu(self.a(x))))


def test_groups_tied_to_the_input_are_excluded():
    model = InputResidual()
    groups = quiet_groups(model, torch.randn(2, 8))
    check(groups, {"a": (16, "linear", 1, [*producer("a", model.a), *consumer("b")])})


class InPlaceInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 2)

    def forward(self, x):
        x.mul_(2.0)  # illegal on a leaf that requires grad: find_groups must cope
        return self.b(F.relu(self.a(x)))


def test_model_writing_into_its_input():
    model, x = InPlaceInput(), torch.randn(2, 8)
    x0 = x.clone()
    groups = quiet_groups(model, x)
    check(groups, {"a": (16, "linear", 1, [*producer("a", model.a), *consumer("b")])})
    assert torch.equal(x, x0)  # the caller's example input is not touched


class Attend(nn.Module):
    """Self-attention called with keywords, or cross-attention (key/value from another layer)."""

    def __init__(self, cross: bool):
        super().__init__()
        self.cross = cross
        self.q_in = nn.Linear(4, 8)
        self.kv_in = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        q = self.q_in(x)
        kv = self.kv_in(x) if self.cross else q
        return self.fc(self.attn(q, key=kv, value=kv, need_weights=False)[0].mean(1))


@pytest.mark.parametrize("cross", [False, True])
def test_multihead_attention_keywords_and_cross_attention(cross):
    model, x = Attend(cross), torch.randn(2, 3, 4)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        groups = find_groups(model, x)
    names = [g.name for g in groups]
    # the attention channels and the output stream do not depend on where key/value come from
    assert names[-2:] == ["attn (attention)", "attn.out_proj"]
    caught = [r for r in record if r.category is GroupingWarning]
    if cross:  # the input columns of in_proj_weight read two streams: not one member
        assert names == ["attn (attention)", "attn.out_proj"]
        assert len(caught) == 1 and "cross-attention" in str(caught[0].message)
    else:
        assert names == ["q_in", "attn (attention)", "attn.out_proj"] and not caught


class ComputedHidden(nn.Module):
    def __init__(self):
        super().__init__()
        self.init = nn.Linear(6, 8)
        self.rnn = nn.GRU(6, 8, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        h0 = self.init(x[:, 0]).unsqueeze(0)
        return self.fc(self.rnn(x, h0)[0][:, -1])


def test_initial_hidden_state_from_the_model_is_left_out():
    with pytest.warns(GroupingWarning, match=r"rnn\.l0 \(hidden\).*initial hidden state"):
        groups = find_groups(ComputedHidden(), torch.randn(2, 3, 6))
    assert groups == []  # init's channels are the GRU's hidden units: neither can be grouped


class BiGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(6, 5, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(10, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def test_bidirectional_gru_splits_directions():
    model = BiGRU()
    groups = quiet_groups(model, torch.randn(2, 4, 6))
    h = 5
    exp = {}
    for layer in range(2):
        for d, sfx in enumerate(("", "_reverse")):
            ms = [M(f"rnn.weight_hh_l{layer}{sfx}", 1, "consumer")]
            for g, gate in enumerate("rzn"):
                for w in ("weight_ih", "weight_hh"):
                    ms.append(M(f"rnn.{w}_l{layer}{sfx}", 0, "producer", g * h, gate=gate))
                for b in ("bias_ih", "bias_hh"):
                    ms.append(M(f"rnn.{b}_l{layer}{sfx}", 0, "other", g * h, gate=gate))
            if layer == 0:
                ms += [M(f"rnn.weight_ih_l1{s}", 1, "consumer", d * h) for s in ("", "_reverse")]
            else:
                ms += consumer("head", offset=d * h)
            exp[f"rnn.l{layer}{sfx} (hidden)"] = (h, "recurrent", 1, ms)
    check(groups, exp)


# ---------------------------------------------------------------------------------------------
# side effects, stability, plain data


@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
def test_train_eval_flags_are_restored(mode):
    model, x = archs.resnet_small()
    model.train(mode != "eval")
    if mode == "mixed":
        model.layer1.eval()
        model.fc.train()
    before = {n: m.training for n, m in model.named_modules()}
    find_groups(model, x)
    assert {n: m.training for n, m in model.named_modules()} == before


@pytest.mark.parametrize("arch", ["resnet_small", "lstm_model", "mha_model"])
def test_weights_and_buffers_are_unchanged(arch):
    model, x = archs.ARCHS[arch]()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    find_groups(model, x)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("arch", ["resnet_small", "gru_model", "hf_bert_tiny"])
def test_names_are_stable(arch):
    model, x = archs.ARCHS[arch](seed=0)
    first = [g.to_dict() for g in find_groups(model, x)]
    again = [g.to_dict() for g in find_groups(model, x)]
    other_model, other_x = archs.ARCHS[arch](seed=1)
    other = [g.to_dict() for g in find_groups(other_model, other_x)]
    assert first == again == other
    assert len({g["name"] for g in first}) == len(first)


def test_groups_are_plain_data_and_the_model_is_released():
    model, x = archs.resnet_small()
    groups = find_groups(model, x)
    assert [ChannelGroup.from_dict(g.to_dict()) for g in groups] == groups
    assert pickle.loads(pickle.dumps(groups)) == groups
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None  # nothing (graph, hooks, caches) keeps the model alive


def test_ignore_by_name_type_and_module():
    model, x = archs.resnet_small()
    names = [g.name for g in find_groups(model, x)]
    kept = [g.name for g in find_groups(model, x, ignore=["layer1.0.conv1"])]
    assert kept == [n for n in names if n != "layer1.0.conv1"]
    model, x = archs.gru_model()
    assert [g.name for g in find_groups(model, x, ignore=[nn.GRU])] == ["embed"]
    model, x = archs.mlp()
    assert [g.name for g in find_groups(model, x, ignore=[model[2]])] == ["0"]
    with pytest.raises(GroupingError, match="no module named 'nope'"):
        find_groups(model, x, ignore=["nope"])


def test_works_under_no_grad():
    model, x = archs.mlp()
    with torch.no_grad():
        assert [g.name for g in find_groups(model, x)] == ["0", "2"]
