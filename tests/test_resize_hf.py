"""Hugging Face models: find_groups -> resize -> save_pretrained -> from_pretrained rebuilds the
resized model (same outputs, same config), or resize says which config field cannot describe it.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from test_resize import bert, gpt2, llama_gqa
from widthwise.groups import _call_model, find_groups
from widthwise.resize import ResizeWarning, resize

transformers = pytest.importorskip("transformers")

FIELDS = ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim")
FIELDS += ("intermediate_size", "n_inner")


def _logits(model: nn.Module, x: dict) -> torch.Tensor:
    with torch.no_grad():
        return _call_model(model.eval(), x).logits


def _groups(model: nn.Module, x: dict) -> dict[str, list]:
    """find_groups' groups, by kind: the residual stream, attention, MLP."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = find_groups(model.eval(), x)
    kinds: dict[str, list] = {"residual": [], "attention": [], "mlp": [], "pooler": []}
    for g in groups:
        kind = "pooler" if ".pooler." in g.name else g.kind
        kinds[kind if kind in kinds else "mlp"].append(g)
    assert [len(v) for v in kinds.values()][:3] == [1, 2, 2], [g.name for g in groups]
    return {"all": groups, **kinds}


def _plan(kinds: dict, residual: int | None, attention: int | None, mlp: int | None) -> dict:
    widths = {}
    # BERT's pooler is hidden_size wide too: it follows the residual stream
    plan = (("residual", residual), ("pooler", residual), ("attention", attention), ("mlp", mlp))
    for kind, w in plan:
        if w is not None:
            widths.update({g.name: w for g in kinds[kind]})
    return widths


def gpt2_lm():
    return gpt2(layers=2, head=True)


def llama_lm():
    return llama_gqa(layers=2, head=True)


def bert_classifier():
    return bert(layers=2, head=True)


# (builder, residual, attention group width, MLP width, init, expected config fields)
# GPT-2 and BERT derive the head size as hidden / heads: residual and attention move together.
# Llama's attention groups count key/value heads (each with its 2 query heads, head size 8).
CASES = {
    "gpt2 wider": (gpt2_lm, 48, 48, 160, "reinit", {"n_embd": 48, "n_head": 6, "n_inner": 160}),
    "gpt2 narrower": (gpt2_lm, 16, 16, 64, "net2net", {"n_embd": 16, "n_head": 2, "n_inner": 64}),
    "gpt2 mlp": (gpt2_lm, None, None, 100, "net2net", {"n_embd": 32, "n_head": 4, "n_inner": 100}),
    # n_inner was None (4 × n_embd): it must now say 128 explicitly
    "gpt2 mlp kept": (gpt2_lm, 48, 48, None, "reinit", {"n_embd": 48, "n_head": 6, "n_inner": 128}),
    "llama wider": (
        llama_lm,
        48,
        3,
        56,
        "reinit",
        {"hidden_size": 48, "num_attention_heads": 6, "num_key_value_heads": 3},
    ),
    "llama narrower": (
        llama_lm,
        24,
        1,
        24,
        "net2net",
        {"hidden_size": 24, "num_attention_heads": 2, "num_key_value_heads": 1},
    ),
    "llama heads": (
        llama_lm,
        None,
        4,
        None,
        "net2net",
        {"hidden_size": 32, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 8},
    ),
    "bert wider": (
        bert_classifier,
        48,
        48,
        50,
        "reinit",
        {"hidden_size": 48, "num_attention_heads": 6},
    ),
    "bert narrower": (
        bert_classifier,
        16,
        16,
        20,
        "net2net",
        {"hidden_size": 16, "num_attention_heads": 2},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_save_pretrained_rebuilds_the_resized_model(case, tmp_path):
    build, residual, attention, mlp, init, expected = CASES[case]
    model, x = build()
    kinds = _groups(model, x)
    widths = _plan(kinds, residual, attention, mlp)
    before = model.config.to_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResizeWarning)
        new = resize(model, kinds["all"], widths, init=init, example_inputs=x)
    assert model.config.to_dict() == before  # the input model and its config are untouched
    for field, value in expected.items():
        assert getattr(new.config, field) == value, field
    if mlp is not None:
        inner = "n_inner" if hasattr(new.config, "n_inner") else "intermediate_size"
        assert getattr(new.config, inner) == mlp
    new.save_pretrained(tmp_path)
    loaded = type(new).from_pretrained(tmp_path).eval()
    for field in FIELDS:
        assert getattr(loaded.config, field, None) == getattr(new.config, field, None), field
    shapes = {k: v.shape for k, v in new.state_dict().items()}
    assert {k: v.shape for k, v in loaded.state_dict().items()} == shapes
    torch.testing.assert_close(_logits(loaded, x), _logits(new, x), atol=1e-5, rtol=1e-5)
    if init == "net2net" and all(w >= g.width for g in kinds["all"] if (w := widths.get(g.name))):
        # widening only: the rebuilt model also computes what the original did
        torch.testing.assert_close(_logits(loaded, x), _logits(model, x), atol=1e-5, rtol=1e-5)


def test_llama_key_value_heads_follow_the_attention_groups():
    model, x = llama_lm()
    kinds = _groups(model, x)
    new = resize(model, kinds["all"], {g.name: 4 for g in kinds["attention"]})
    for layer in new.model.layers:  # 4 key/value heads, each with its 2 query heads, of size 8
        attn = layer.self_attn
        assert (attn.q_proj.out_features, attn.k_proj.out_features) == (64, 32)
        assert attn.num_key_value_groups == 2 and attn.o_proj.in_features == 64
    for layer, old in zip(new.model.layers, model.model.layers, strict=True):
        # key/value head 2 (and its query heads 4, 5) copies an existing one, whole
        k_new, k_old = layer.self_attn.k_proj.weight, old.self_attn.k_proj.weight
        q_new, q_old = layer.self_attn.q_proj.weight, old.self_attn.q_proj.weight
        src = next(h for h in range(2) if torch.equal(k_new[16:24], k_old[8 * h : 8 * h + 8]))
        torch.testing.assert_close(q_new[32:48], q_old[16 * src : 16 * src + 16], rtol=0, atol=0)
    torch.testing.assert_close(_logits(new, x), _logits(model, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "build, kind, field",
    [
        (gpt2_lm, "attention", "n_head"),  # heads alone: hidden / heads is not the head size
        (bert_classifier, "attention", "num_attention_heads"),
        (bert_classifier, "residual", "num_attention_heads"),
        (bert_classifier, "residual and attention", "bert.pooler.dense.weight"),
        (llama_lm, "one mlp", "intermediate_size"),
        (gpt2_lm, "one mlp", "n_inner"),
        (llama_lm, "one attention", "num_attention_heads"),
    ],
)
def test_a_config_that_cannot_describe_the_model_is_named_in_one_warning(build, kind, field):
    model, x = build()
    kinds = _groups(model, x)
    if kind.startswith("one "):  # one layer's MLP or attention: the config has one value
        g = kinds[kind[4:]][0]
        widths = {g.name: g.width + 1}
    elif kind == "residual and attention":  # but not the pooler: no field says so
        widths = {g.name: 48 for g in kinds["residual"] + kinds["attention"]}
    else:
        widths = {g.name: g.width + (16 if kind == "attention" else 8) for g in kinds[kind]}
    old = getattr(model.config, field, None)
    with pytest.warns(ResizeWarning) as record:
        new = resize(model, kinds["all"], widths, init="reinit", example_inputs=x)
    assert len(record) == 1 and field in str(record[0].message)
    if old is not None:
        assert getattr(new.config, field) == old  # left as it was; the model still runs
    _logits(new, x)


class _Config:
    """A config duck-typed like Hugging Face's: attributes and ``to_dict``."""

    def __init__(self, **kw: object) -> None:
        self.__dict__.update(kw)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class PerLayerMLP(nn.Module):
    """A model whose config keeps one intermediate size per layer (as Gemma 3n's does)."""

    def __init__(self) -> None:
        super().__init__()
        self.config = _Config(hidden_size=8, intermediate_size=[12, 10])
        self.embed = nn.Embedding(20, 8)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(8, n), nn.ReLU(), nn.Linear(n, 8))
            for n in self.config.intermediate_size
        )
        self.head = nn.Linear(8, 3)

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        for layer in self.layers:
            h = h + layer(h)
        return self.head(h)


def test_per_layer_config_values_are_set_per_layer():
    torch.manual_seed(0)
    model, x = PerLayerMLP().eval(), torch.randint(0, 20, (2, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = find_groups(model, x)
    names = {g.width: g.name for g in groups if g.kind != "residual"}
    assert set(names) == {12, 10}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResizeWarning)
        new = resize(model, groups, {names[10]: 15}, example_inputs=x)
    assert new.config.intermediate_size == [12, 15] and model.config.intermediate_size == [12, 10]
    # as a rebuild from the config would make it
    assert [layer[0].out_features for layer in new.layers] == new.config.intermediate_size
    new = resize(model, groups, {names[10]: 6, names[12]: 6}, example_inputs=x)
    assert new.config.intermediate_size == [6, 6]


def _found(model: nn.Module, x: dict) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return find_groups(model.eval(), x)


@pytest.mark.parametrize(
    "builder, kind, width",
    [
        ("hf_qwen2_gqa", "attention", 4),  # 8 heads of 8 in hidden 32: Qwen2 reads `head_dim`
        ("hf_gemma_mqa", "residual", 40),  # its embedding scale, sqrt(hidden), follows
        ("hf_t5_tiny", "residual", 24),  # its model_dim (the tied output's scale) follows
    ],
)
def test_what_a_model_derives_from_its_config_follows(builder, kind, width, tmp_path):
    import archs

    model, x = getattr(archs, builder)()
    groups = _found(model, x)
    widths = {g.name: width for g in groups if g.kind == kind}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResizeWarning)
        new = resize(model, groups, widths, init="reinit", example_inputs=x)
    if kind == "attention":
        assert (new.config.num_attention_heads, new.config.head_dim) == (8, 8)
    if builder == "hf_gemma_mqa":
        scale = new.model.embed_tokens.embed_scale
        assert scale.item() == pytest.approx(width**0.5) and model.config.hidden_size == 32
    if builder == "hf_t5_tiny":
        assert new.model_dim == width == new.config.d_model and model.model_dim == 16
    new.save_pretrained(tmp_path)
    loaded = type(new).from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_logits(loaded, x), _logits(new, x), atol=1e-5, rtol=1e-5)


def test_a_config_that_builds_no_model_is_named():
    import archs

    # Falcon needs hidden_size divisible by its head count; its head size is derived
    model, x = archs.hf_falcon_mqa()
    groups = _found(model, x)
    residual = next(g for g in groups if g.kind == "residual")
    with pytest.warns(ResizeWarning, match="hidden_size=34: a model built from it fails"):
        resize(model, groups, {residual.name: 34}, init="reinit", example_inputs=x)


def test_gemma3n_keeps_one_mlp_width_per_layer(tmp_path):
    # Gemma 3n's config holds intermediate_size per layer: a one-layer resize is describable
    torch.manual_seed(0)
    cfg = transformers.Gemma3nTextConfig(
        vocab_size=50,
        vocab_size_per_layer_input=50,
        hidden_size=32,
        hidden_size_per_layer_input=8,
        intermediate_size=[40, 48],
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=32,
        laurel_rank=4,
        activation_sparsity_pattern=[0.0, 0.0],
        layer_types=["sliding_attention", "full_attention"],
        num_kv_shared_layers=0,
        sliding_window=8,
    )
    model = transformers.Gemma3nForCausalLM(cfg).eval()
    x = {"input_ids": torch.randint(0, 50, (1, 6))}
    groups = _found(model, x)
    mlp = {g.width: g.name for g in groups if g.name.endswith("mlp.gate_proj")}
    assert set(mlp) == {40, 48}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResizeWarning)
        new = resize(model, groups, {mlp[48]: 56}, example_inputs=x)
    assert new.config.intermediate_size == [40, 56] and model.config.intermediate_size == [40, 48]
    torch.testing.assert_close(_logits(new, x), _logits(model, x), atol=1e-5, rtol=1e-5)
    new.save_pretrained(tmp_path)
    loaded = type(new).from_pretrained(tmp_path).eval()
    assert loaded.model.layers[1].mlp.up_proj.out_features == 56
    torch.testing.assert_close(_logits(loaded, x), _logits(new, x), atol=1e-5, rtol=1e-5)
