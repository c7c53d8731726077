"""find_groups on text-model attention variants (issue 13): ALiBi (BLOOM), raw head biases
(DeBERTa), relative attention with raw per-head tensors (Funnel) or raw projections (XLNet),
raw expert stacks (Mixtral, GPT-OSS), routers and gates broadcast over the stream (Qwen2-MoE,
Switch), experts the example never ran, attention mixed with a span-based convolution
(ConvBERT), norms over whole q/k projections (OLMoE), latent attention (DeepSeek).

For each pattern: a small model written here that reproduces it, the groups expected from its
definition, and, independently of find_groups' own check, every group permuted with naive
per-channel loops on random weights must leave the output unchanged; where a coarser
permutation is *not* a symmetry (heads that carry fixed per-head slopes), the test shows that
too. The Hugging Face model is checked from a tiny config where it builds quickly.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from test_groups import M, assert_each_group_is_a_symmetry
from widthwise import GroupingWarning, find_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def grouped(model, x):
    """(groups, GroupingWarning messages)."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        groups = find_groups(model, x)
    return groups, [str(r.message) for r in record if r.category is GroupingWarning]


def ids(vocab=20, t=6, seed=0):
    return torch.randint(0, vocab, (2, t), generator=torch.Generator().manual_seed(seed))


def hf_tiny(cls_name, **kw):
    """A Hugging Face model from a tiny config (random weights, no download) and its inputs."""
    transformers = pytest.importorskip("transformers")
    cls = getattr(transformers, cls_name)
    torch.manual_seed(0)
    model = cls(cls.config_class(**kw)).eval()
    return model, {"input_ids": ids(kw.get("vocab_size", 20), 7)}


#: the config every tiny mixture-of-experts model below shares (two of three experts per token)
_TINY_MOE = dict(
    vocab_size=20,
    hidden_size=16,
    intermediate_size=12,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_experts_per_tok=2,
)


# ---------------------------------------------------------------------------------------------
# ALiBi attention (BLOOM): fused rows [q_h | k_h | v_h] per head, a fixed slope per head position


class AlibiAttention(nn.Module):
    def __init__(self, d=16, heads=4, vocab=20, classes=3):
        super().__init__()
        self.heads, self.hd = heads, d // heads
        self.emb = nn.Embedding(vocab, d)
        self.qkv = nn.Linear(d, 3 * d)
        self.o = nn.Linear(d, d)
        self.head = nn.Linear(d, classes)

    def forward(self, ids):
        x = self.emb(ids)
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, self.heads, 3, self.hd).unbind(3)
        slopes = 2.0 ** (-8.0 * torch.arange(1, self.heads + 1) / self.heads)
        pos = torch.arange(t, dtype=torch.float)
        alibi = slopes[:, None, None] * (pos[None, None, :] - pos[None, :, None])  # h, q, k
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.hd) + alibi
        ctx = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(b, t, d)
        return self.head(x + self.o(ctx))


def _alibi_members(qkv, o, heads, hd):
    """Channel j: entry j of q_h, k_h, v_h (rows h*3hd + g*hd + j) and column h*hd + j of o."""
    out = []
    for h in range(heads):
        for g in range(3):
            out += [M(f"{qkv}.weight", 0, "producer", h * 3 * hd + g * hd)]
            out += [M(f"{qkv}.bias", 0, "other", h * 3 * hd + g * hd)]
        out += [M(f"{o}.weight", 1, "consumer", h * hd)]
    return set(out)


def _permute_heads(model, qkv, o, heads, hd, perm):
    """A copy of ``model`` whose heads are reordered by ``perm`` (naive loops)."""
    import copy

    new = copy.deepcopy(model)
    q, out = new.get_submodule(qkv), new.get_submodule(o)
    old_w, old_b, old_o = q.weight.clone(), q.bias.clone(), out.weight.clone()
    with torch.no_grad():
        for h, src in enumerate(perm):
            for r in range(3 * hd):
                q.weight[h * 3 * hd + r] = old_w[src * 3 * hd + r]
                q.bias[h * 3 * hd + r] = old_b[src * 3 * hd + r]
            for c in range(hd):
                out.weight[:, h * hd + c] = old_o[:, src * hd + c]
    return new


def test_alibi_heads_stay_in_place_and_their_channels_permute_together():
    model, x = AlibiAttention(), ids()
    groups, msgs = grouped(model, x)
    assert msgs == []
    got = {g.name: g for g in groups}
    att = got["qkv (attention)"]
    assert (att.width, att.kind, att.divisor) == (model.hd, "attention", 1)
    assert set(att.members) == _alibi_members("qkv", "o", model.heads, model.hd)
    assert len(att.members) == len(set(att.members))
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    # why not whole heads: the slopes are fixed per head position
    swapped = _permute_heads(model, "qkv", "o", model.heads, model.hd, [1, 0, 2, 3])
    assert not torch.allclose(swapped(x), ref, atol=1e-4)


def test_hf_bloom_attention_groups_channels_shared_by_the_heads():
    model, x = hf_tiny(
        "BloomForCausalLM", vocab_size=20, hidden_size=16, n_layer=2, n_head=4, pad_token_id=0
    )
    groups, msgs = grouped(model, x)
    assert msgs == []
    got = {g.name: g for g in groups}
    for layer in range(2):
        pre = f"transformer.h.{layer}.self_attention"
        att = got[f"{pre} (attention)"]
        assert (att.width, att.kind) == (4, "attention")
        expected = _alibi_members(f"{pre}.query_key_value", f"{pre}.dense", 4, 4)
        assert set(att.members) == expected
    assert_each_group_is_a_symmetry(model, x, groups)


class AlibiMultiQuery(nn.Module):
    """Falcon with ALiBi: separate q, and one key/value head shared by all query heads."""

    def __init__(self, d=16, heads=4, vocab=20, classes=3):
        super().__init__()
        self.heads, self.hd = heads, d // heads
        self.emb = nn.Embedding(vocab, d)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, self.hd), nn.Linear(d, self.hd)
        self.o = nn.Linear(d, d)
        self.head = nn.Linear(d, classes)

    def forward(self, ids):
        x = self.emb(ids)
        b, t, d = x.shape
        q = self.q(x).view(b, t, self.heads, self.hd).transpose(1, 2)
        k, v = self.k(x)[:, None], self.v(x)[:, None]
        slopes = 2.0 ** (-8.0 * torch.arange(1, self.heads + 1) / self.heads)
        pos = torch.arange(t, dtype=torch.float)
        alibi = slopes[:, None, None] * (pos[None, None, :] - pos[None, :, None])
        att = (q @ k.transpose(-1, -2) / math.sqrt(self.hd) + alibi).softmax(-1)
        return self.head(x + self.o((att @ v).transpose(1, 2).reshape(b, t, d)))


def test_alibi_with_one_key_value_head_permutes_channels_alike_in_every_head():
    model, x = AlibiMultiQuery(), ids()
    groups, msgs = grouped(model, x)
    assert msgs == []
    att = {g.name: g for g in groups}["q+k+v (attention)"]
    hd = model.hd
    expected = {M(f"{n}.{p}", 0, r) for n in ("k", "v") for p, r in _WB}
    for h in range(model.heads):
        expected |= {M(f"q.{p}", 0, r, h * hd) for p, r in _WB}
        expected.add(M("o.weight", 1, "consumer", h * hd))
    assert (att.width, set(att.members)) == (hd, expected)
    assert_each_group_is_a_symmetry(model, x, groups)


# ---------------------------------------------------------------------------------------------
# DeBERTa (v1): one fused projection without bias, rows [q_h | k_h | v_h] per head, and raw
# per-channel biases q_bias / v_bias added to the query and value heads


class BiasedHeads(nn.Module):
    def __init__(self, d=16, heads=4, vocab=20, classes=3):
        super().__init__()
        self.heads, self.hd = heads, d // heads
        self.emb = nn.Embedding(vocab, d)
        self.att = nn.Module()
        self.att.in_proj = nn.Linear(d, 3 * d, bias=False)
        self.att.q_bias = nn.Parameter(torch.zeros(d))
        self.att.v_bias = nn.Parameter(torch.zeros(d))
        self.o = nn.Linear(d, d)
        self.head = nn.Linear(d, classes)

    def forward(self, ids):
        x = self.emb(ids)
        b, t, d = x.shape

        def split(y):  # ..., t, d' -> ..., heads, t, d'/heads
            return y.view(*y.shape[:-1], self.heads, -1).transpose(-3, -2)

        q, k, v = split(self.att.in_proj(x)).chunk(3, dim=-1)
        q, v = q + split(self.att.q_bias[None, None]), v + split(self.att.v_bias[None, None])
        scores = (q @ k.transpose(-1, -2) / math.sqrt(self.hd)).softmax(-1)
        ctx = (scores @ v).transpose(1, 2).reshape(b, t, d)
        return self.head(x + self.o(ctx))


def _biased_head_members(pre, o, heads, hd):
    return {
        M(f"{pre}.in_proj.weight", 0, "producer", 0, 3 * hd),
        M(f"{pre}.q_bias", 0, "other", 0, hd),
        M(f"{pre}.v_bias", 0, "other", 0, hd),
        M(f"{o}.weight", 1, "consumer", 0, hd),
    }


def test_raw_query_and_value_biases_move_with_their_heads():
    model, x = BiasedHeads(), ids()
    groups, msgs = grouped(model, x)
    assert msgs == []
    got = {g.name: g for g in groups}
    att = got["att (attention)"]
    assert (att.width, att.kind) == (model.heads, "attention")
    assert set(att.members) == _biased_head_members("att", "o", model.heads, model.hd)
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    # the biases are needed: the same heads moved without q_bias change the output
    from dataclasses import replace

    from test_groups import _permute_copy

    without = replace(att, members=tuple(m for m in att.members if m.param != "att.q_bias"))
    assert not torch.allclose(_permute_copy(model, [without], seed=0)(x), ref, atol=1e-4)


def test_hf_deberta_v1_heads_with_their_biases():
    model, x = hf_tiny(
        "DebertaForSequenceClassification",
        vocab_size=20,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=24,
        max_position_embeddings=16,
        num_labels=3,
    )
    groups, msgs = grouped(model, x)
    assert msgs == []
    got = {g.name: g for g in groups}
    for layer in range(2):
        pre = f"deberta.encoder.layer.{layer}.attention"
        att = got[f"{pre}.self (attention)"]
        assert att.width == 4
        assert set(att.members) == _biased_head_members(f"{pre}.self", f"{pre}.output.dense", 4, 4)
    assert_each_group_is_a_symmetry(model, x, groups)


# ---------------------------------------------------------------------------------------------
# Funnel / Transformer-XL relative attention: q/k/v layers, raw per-head biases (heads, hd), a
# position kernel (d, heads, hd) on a sinusoid computed in the forward, segment embeddings


class RelativeHeads(nn.Module):
    def __init__(self, d=16, heads=4, vocab=20, classes=3):
        super().__init__()
        self.heads, self.hd = heads, d // heads
        self.emb = nn.Embedding(vocab, d)
        self.att = nn.Module()
        for name in ("q", "k", "v"):
            setattr(self.att, name, nn.Linear(d, d))
        for name in ("r_w_bias", "r_r_bias", "r_s_bias"):
            setattr(self.att, name, nn.Parameter(torch.zeros(heads, self.hd)))
        self.att.r_kernel = nn.Parameter(torch.zeros(d, heads, self.hd))
        self.att.seg_embed = nn.Parameter(torch.zeros(2, heads, self.hd))
        self.o = nn.Linear(d, d)
        self.head = nn.Linear(d, classes)

    def forward(self, ids):
        a, x = self.att, self.emb(ids)
        b, t, d = x.shape
        q, k, v = (f(x).view(b, t, self.heads, self.hd) for f in (a.q, a.k, a.v))
        freq = torch.arange(t, dtype=torch.float)[:, None] / 100 ** (torch.arange(d) / d)
        r = torch.einsum("td,dnh->tnh", freq.sin(), a.r_kernel)  # fixed table: not the stream
        scores = torch.einsum("bind,bjnd->bnij", q + a.r_w_bias, k)
        scores = scores + torch.einsum("bind,jnd->bnij", q + a.r_r_bias, r)
        seg = torch.einsum("bind,snd->bnis", q + a.r_s_bias, a.seg_embed)
        same = (ids[:, :, None] % 2 == ids[:, None, :] % 2)[:, None]
        scores = scores + torch.where(same, seg[..., 1:], seg[..., :1])
        att = (scores / math.sqrt(self.hd)).softmax(-1)
        ctx = torch.einsum("bnij,bjnd->bind", att, v).reshape(b, t, d)
        return self.head(x + self.o(ctx))


def _relative_head_members(pre, o, q, k, v, hd):
    """Whole heads: hd rows of q/k/v, hd columns of o, one entry along each raw tensor's head
    dim."""
    out = {M(f"{o}.weight", 1, "consumer", 0, hd)}
    for name in (q, k, v):
        out |= {
            M(f"{pre}.{name}.weight", 0, "producer", 0, hd),
            M(f"{pre}.{name}.bias", 0, "other", 0, hd),
        }
    out |= {M(f"{pre}.{n}", 0, "other") for n in ("r_w_bias", "r_r_bias", "r_s_bias")}
    out |= {M(f"{pre}.{n}", 1, "other") for n in ("r_kernel", "seg_embed")}
    return out


def test_relative_attention_heads_move_with_their_raw_biases_and_kernels():
    model, x = RelativeHeads(), ids()
    groups, msgs = grouped(model, x)
    assert msgs == []
    got = {g.name: g for g in groups}
    att = got["att (attention)"]
    assert att.width == model.heads
    assert set(att.members) == _relative_head_members("att", "o", "q", "k", "v", model.hd)
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    from dataclasses import replace

    from test_groups import _permute_copy

    for raw in ("att.r_kernel", "att.seg_embed", "att.r_r_bias"):  # each one is needed
        without = replace(att, members=tuple(m for m in att.members if m.param != raw))
        assert not torch.allclose(_permute_copy(model, [without], seed=0)(x), ref, atol=1e-4)


def test_hf_funnel_relative_attention_heads():
    model, x = hf_tiny(
        "FunnelForSequenceClassification",
        vocab_size=20,
        d_model=16,
        n_head=4,
        d_head=4,
        d_inner=24,
        block_sizes=[1, 1],
        num_decoder_layers=1,
        num_labels=3,
    )
    groups, msgs = grouped(model, x)
    assert msgs == []
    got = {g.name: g for g in groups}
    for block in range(2):
        pre = f"funnel.encoder.blocks.{block}.0.attention"
        att = got[f"{pre} (attention)"]
        assert att.width == 4
        expected = _relative_head_members(pre, f"{pre}.post_proj", "q_head", "k_head", "v_head", 4)
        expected -= {M(f"{pre}.q_head.bias", 0, "other", 0, 4)}  # q_head has no bias
        assert set(att.members) == expected
    assert_each_group_is_a_symmetry(model, x, groups)


# ---------------------------------------------------------------------------------------------
# Mixture of experts (Mixtral): raw expert stacks gate_up_proj (E, 2I, H) and down_proj
# (E, H, I) read with F.linear on one expert's slice, a router with a raw (E, H) weight


class Experts(nn.Module):
    def __init__(self, e, h, i):
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.randn(e, 2 * i, h) / h**0.5)
        self.down_proj = nn.Parameter(torch.randn(e, h, i) / i**0.5)

    def forward(self, x, idx, weight):
        out = torch.zeros_like(x)
        for e in range(self.gate_up_proj.shape[0]):
            sel = (idx == e).nonzero()[:, 0]
            gate, up = F.linear(x[sel], self.gate_up_proj[e]).chunk(2, dim=-1)
            y = F.linear(F.silu(gate) * up, self.down_proj[e]) * weight[sel, None]
            out = out.index_add(0, sel, y)
        return out


class TupleRouter(nn.Linear):
    """PhiMoE's and Llama 4's router: an nn.Linear whose forward returns a tuple."""

    def forward(self, x):
        logits = super().forward(x)
        weight, idx = logits.softmax(-1).max(-1)
        return logits, weight, idx


class MoE(nn.Module):
    def __init__(
        self, d=16, experts=3, inner=12, vocab=20, classes=3, shared=False, linear=False, odd=False
    ):
        super().__init__()
        self.shared, self.linear, self.odd = shared, linear, odd
        self.emb = nn.Embedding(vocab, d)
        self.mlp = nn.Module()
        self.mlp.gate = nn.Linear(d, experts, bias=False) if linear else nn.Module()
        if odd:
            self.mlp.gate = TupleRouter(d, experts, bias=False)
        self.mlp.gate.weight = nn.Parameter(torch.randn(experts, d))
        self.mlp.experts = Experts(experts, d, inner)
        if shared:  # Qwen2-MoE: a shared expert scaled by a per-token sigmoid gate
            self.mlp.shared_expert = nn.Sequential(
                nn.Linear(d, inner), nn.SiLU(), nn.Linear(inner, d)
            )
            self.mlp.shared_expert_gate = nn.Linear(d, 1, bias=False)
        self.head = nn.Linear(d, classes)

    def forward(self, ids):
        x = self.emb(ids)
        flat = x.reshape(-1, x.shape[-1])
        if self.odd:
            _, weight, idx = self.mlp.gate(flat)
        else:
            logits = self.mlp.gate(flat) if self.linear else F.linear(flat, self.mlp.gate.weight)
            weight, idx = logits.softmax(-1).max(-1)
        y = self.mlp.experts(flat, idx, weight).view_as(x)
        if self.shared:
            y = y + torch.sigmoid(self.mlp.shared_expert_gate(x)) * self.mlp.shared_expert(x)
        return self.head(x + y)


def _expert_members(pre, inner):
    return {
        M(f"{pre}.gate_up_proj", 1, "producer", 0),
        M(f"{pre}.gate_up_proj", 1, "producer", inner),
        M(f"{pre}.down_proj", 2, "consumer"),
    }


def test_expert_channels_permute_alike_in_every_expert_and_the_stream_reads_the_router():
    model, x = MoE(), ids(t=12)
    _, idx = F.linear(model.emb(x).reshape(-1, 16), model.mlp.gate.weight).max(-1)
    assert len(set(idx.tolist())) > 1  # the input reaches several experts
    groups, msgs = grouped(model, x)
    assert msgs == []
    got = {g.name: g for g in groups}
    inner = got["mlp.experts (experts)"]
    assert inner.width == 12
    assert set(inner.members) == _expert_members("mlp.experts", 12)
    stream = next(g for g in groups if g.kind == "residual")
    assert set(stream.members) == {
        M("emb.weight", 1, "producer"),
        M("mlp.gate.weight", 1, "consumer"),
        M("mlp.experts.gate_up_proj", 2, "consumer"),
        M("mlp.experts.down_proj", 1, "producer"),
        M("head.weight", 1, "consumer"),
    }
    assert_each_group_is_a_symmetry(model, x, groups)


@pytest.mark.parametrize("linear", [False, True])
def test_a_per_token_gate_is_read_by_the_stream_not_a_producer_of_it(linear):
    # the gate's one output, and a Linear router's top probability (Switch), are broadcast over
    # the stream: they read it, they do not produce its channels
    model, x = MoE(shared=True, linear=linear), ids(t=12)
    groups, msgs = grouped(model, x)
    assert msgs == []
    got = {g.name: g for g in groups}
    stream = next(g for g in groups if g.kind == "residual")
    gate = [m for m in stream.members if m.param == "mlp.shared_expert_gate.weight"]
    assert gate == [M("mlp.shared_expert_gate.weight", 1, "consumer")]
    router = [m for m in stream.members if m.param == "mlp.gate.weight"]
    assert router == [M("mlp.gate.weight", 1, "consumer")]
    assert M("mlp.shared_expert.2.weight", 0, "producer") in stream.members
    assert set(got["mlp.experts (experts)"].members) == _expert_members("mlp.experts", 12)
    assert got["mlp.shared_expert.0"].width == 12
    assert_each_group_is_a_symmetry(model, x, groups)


def test_a_linear_router_that_returns_a_tuple_is_traced_as_an_op():
    # Torch-Pruning's trace hook fails on it (an AttributeError, so a GroupingError before)
    model, x = MoE(odd=True), ids(t=12)
    groups, msgs = grouped(model, x)
    assert msgs == []
    stream = next(g for g in groups if g.kind == "residual")
    assert M("mlp.gate.weight", 1, "consumer") in stream.members
    assert set({g.name: g for g in groups}["mlp.experts (experts)"].members) == _expert_members(
        "mlp.experts", 12
    )
    assert_each_group_is_a_symmetry(model, x, groups)


def test_hf_phimoe_router_is_a_linear_that_returns_a_tuple():
    model, x = hf_tiny(
        "PhimoeForCausalLM",
        **_TINY_MOE,
        num_local_experts=3,
        max_position_embeddings=16,
        pad_token_id=0,
    )
    groups, msgs = grouped(model, x)
    assert msgs == []
    stream = {g.name: g for g in groups}["model (residual)"]
    for layer in range(2):
        assert M(f"model.layers.{layer}.mlp.router.weight", 1, "consumer") in stream.members
    assert_each_group_is_a_symmetry(model, x, groups)


def test_hf_mixtral_experts_and_stream():
    model, x = hf_tiny(
        "MixtralForCausalLM",
        **_TINY_MOE,
        num_local_experts=3,
        max_position_embeddings=16,
        pad_token_id=0,
    )
    groups, msgs = grouped(model, x)
    assert msgs == []
    got = {g.name: g for g in groups}
    for layer in range(2):
        pre = f"model.layers.{layer}.mlp"
        assert set(got[f"{pre}.experts (experts)"].members) == _expert_members(f"{pre}.experts", 12)
        assert {
            M(f"{pre}.gate.weight", 1, "consumer"),
            M(f"{pre}.experts.gate_up_proj", 2, "consumer"),
            M(f"{pre}.experts.down_proj", 1, "producer"),
        } <= set(got["model (residual)"].members)
    assert_each_group_is_a_symmetry(model, x, groups)


# ---------------------------------------------------------------------------------------------
# XLNet / Transformer-XL: raw q, k, v, o (d, heads, hd) in einsums, a position kernel r on a
# sinusoid computed in the forward, raw per-head biases; the residual and its LayerNorm


class RawRelativeAttention(nn.Module):
    def __init__(self, d=16, heads=4, d_pos=8, vocab=20, classes=3, alibi=False):
        super().__init__()
        hd = d // heads
        self.hd, self.d_pos, self.heads, self.alibi = hd, d_pos, heads, alibi
        self.emb = nn.Embedding(vocab, d)
        self.att = nn.Module()
        for name in ("q", "k", "v", "o"):
            setattr(self.att, name, nn.Parameter(torch.randn(d, heads, hd) / d**0.5))
        self.att.r = nn.Parameter(torch.randn(d_pos, heads, hd) / d_pos**0.5)
        self.att.r_w_bias = nn.Parameter(torch.zeros(heads, hd))
        self.att.r_r_bias = nn.Parameter(torch.zeros(heads, hd))
        self.att.layer_norm = nn.LayerNorm(d)
        self.ff1, self.ff2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.head = nn.Linear(d, classes)

    def forward(self, ids):
        a, h = self.att, self.emb(ids)
        t = h.shape[1]
        q, k, v = (torch.einsum("bid,dnh->binh", h, w) for w in (a.q, a.k, a.v))
        freq = torch.arange(t, dtype=torch.float)[:, None] / 100 ** (torch.arange(self.d_pos) / 8)
        kr = torch.einsum("jd,dnh->jnh", freq.sin(), a.r)
        scores = torch.einsum("binh,bjnh->bnij", q + a.r_w_bias, k)
        scores = scores + torch.einsum("binh,jnh->bnij", q + a.r_r_bias, kr)
        if self.alibi:  # a fixed slope per head position: heads cannot move
            pos = torch.arange(t, dtype=torch.float)
            slopes = 2.0 ** -torch.arange(1.0, self.heads + 1)
            scores = scores + slopes[:, None, None] * (pos[None, None] - pos[None, :, None])
        vec = torch.einsum("bnij,bjnh->binh", (scores / math.sqrt(self.hd)).softmax(-1), v)
        h = a.layer_norm(h + torch.einsum("binh,dnh->bid", vec, a.o))
        h = h + self.ff2(self.ff1(h).relu())
        return self.head(h.mean(1))


def _xl_head_members(pre, biases=("r_w_bias", "r_r_bias")):
    out = {M(f"{pre}.{n}", 1, "producer") for n in ("q", "k", "v")}
    out |= {M(f"{pre}.o", 1, "consumer"), M(f"{pre}.r", 1, "other")}
    return out | {M(f"{pre}.{n}", 0, "other") for n in biases}


def test_raw_relative_attention_projections_join_the_stream_and_move_whole_heads():
    model, x = RawRelativeAttention(), ids()
    groups, msgs = grouped(model, x)
    assert msgs == []
    got = {g.name: g for g in groups}
    att = got["att (attention)"]
    assert att.width == 4
    assert set(att.members) == _xl_head_members("att")
    stream = next(g for g in groups if g.kind == "residual")
    assert stream.divisor == 1
    assert set(stream.members) == {
        M("emb.weight", 1, "producer"),
        *(M(f"att.{n}", 0, "consumer") for n in ("q", "k", "v")),
        M("att.o", 0, "producer"),
        M("att.layer_norm.weight", 0, "norm"),
        M("att.layer_norm.bias", 0, "norm"),
        M("ff1.weight", 1, "consumer"),
        M("ff2.weight", 0, "producer"),
        M("ff2.bias", 0, "other"),
        M("head.weight", 1, "consumer"),
    }
    assert_each_group_is_a_symmetry(model, x, groups)


def test_raw_relative_attention_with_fixed_heads_permutes_channels_alike_in_every_head():
    model, x = RawRelativeAttention(alibi=True), ids()
    groups, msgs = grouped(model, x)
    assert msgs == []
    att = {g.name: g for g in groups}["att (attention)"]
    assert att.width == model.hd  # channel j of every head; the last dim of each raw tensor
    assert set(att.members) == {M(m.param, m.dim + 1, m.role) for m in _xl_head_members("att")}
    assert_each_group_is_a_symmetry(model, x, groups)


def test_hf_xlnet_relative_attention():
    model, x = hf_tiny(
        "XLNetForSequenceClassification",
        vocab_size=20,
        d_model=16,
        n_layer=2,
        n_head=4,
        d_inner=24,
        num_labels=3,
        pad_token_id=0,
    )
    groups, msgs = grouped(model, x)
    assert msgs == []
    got = {g.name: g for g in groups}
    for layer in range(2):
        pre = f"transformer.layer.{layer}.rel_attn"
        att = got[f"{pre} (attention)"]
        biases = ("r_w_bias", "r_r_bias", "r_s_bias")
        assert set(att.members) == _xl_head_members(pre, biases) | {
            M(f"{pre}.seg_embed", 1, "other")
        }
        assert {
            *(M(f"{pre}.{n}", 0, "consumer") for n in ("q", "k", "v")),
            M(f"{pre}.o", 0, "producer"),
        } <= set(got["transformer (residual)"].members)
    assert_each_group_is_a_symmetry(model, x, groups)


# ---------------------------------------------------------------------------------------------
# ConvBERT's mixed attention: attention heads beside a span-based dynamic convolution (per-head
# kernels generated from query * separable-conv(key), applied to unfolded conv_out_layer rows);
# the output dense reads [attention context | span conv]


class SeparableConv1D(nn.Module):
    def __init__(self, cin, cout, k):
        super().__init__()
        self.depthwise = nn.Conv1d(cin, cin, k, groups=cin, padding=k // 2, bias=False)
        self.pointwise = nn.Conv1d(cin, cout, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(cout, 1))

    def forward(self, x):
        return self.pointwise(self.depthwise(x)) + self.bias


class SpanConvAttention(nn.Module):
    def __init__(self, d, heads, k):
        super().__init__()
        self.num_attention_heads, self.hd, self.k = heads, d // heads // 2, k
        a = heads * self.hd
        self.query, self.key, self.value = nn.Linear(d, a), nn.Linear(d, a), nn.Linear(d, a)
        self.key_conv_attn_layer = SeparableConv1D(d, a, k)
        self.conv_kernel_layer = nn.Linear(a, heads * k)
        self.conv_out_layer = nn.Linear(d, a)

    def forward(self, x):
        b, t, _ = x.shape
        h, hd, k = self.num_attention_heads, self.hd, self.k
        q = self.query(x)
        key_conv = self.key_conv_attn_layer(x.transpose(1, 2)).transpose(1, 2)
        kernels = self.conv_kernel_layer(key_conv * q).reshape(b, t, h, k).softmax(-1)
        spans = F.pad(self.conv_out_layer(x), (0, 0, k // 2, k // 2)).unfold(1, k, 1)
        conv = torch.einsum("bthck,bthk->bthc", spans.reshape(b, t, h, hd, k), kernels)
        split = [f.view(b, t, h, hd).transpose(1, 2) for f in (q, self.key(x), self.value(x))]
        att = (split[0] @ split[1].transpose(-1, -2) / math.sqrt(hd)).softmax(-1) @ split[2]
        return torch.cat([att.transpose(1, 2), conv], 2).reshape(b, t, 2 * h * hd)


class MixedAttentionBlock(nn.Module):
    def __init__(self, d=16, heads=2, k=3, vocab=20, classes=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.attention = nn.Module()
        self.attention.self = SpanConvAttention(d, heads, k)
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(d, d)
        self.head = nn.Linear(d, classes)

    def forward(self, ids):
        x = self.emb(ids)
        return self.head(x + self.attention.output.dense(self.attention.self(x)))


def _span_conv_groups(pre, dense, a):
    return {
        f"{pre} (query/key)": {
            *(M(f"{pre}.{n}.{p}", 0, r) for n in ("query", "key") for p, r in _WB),
            M(f"{pre}.key_conv_attn_layer.pointwise.weight", 0, "producer"),
            M(f"{pre}.key_conv_attn_layer.bias", 0, "other"),
            M(f"{pre}.conv_kernel_layer.weight", 1, "consumer"),
        },
        f"{pre} (value)": {
            *(M(f"{pre}.value.{p}", 0, r) for p, r in _WB),
            M(f"{dense}.weight", 1, "consumer"),
        },
        f"{pre} (span conv)": {
            *(M(f"{pre}.conv_out_layer.{p}", 0, r) for p, r in _WB),
            M(f"{dense}.weight", 1, "consumer", a),
        },
    }


_WB = (("weight", "producer"), ("bias", "other"))


def test_span_conv_attention_groups_its_three_parts_within_heads():
    model, x = MixedAttentionBlock(), ids()
    groups, msgs = grouped(model, x)
    assert msgs == []
    got = {g.name: g for g in groups}
    for name, members in _span_conv_groups("attention.self", "attention.output.dense", 8).items():
        assert (got[name].width, got[name].divisor) == (8, 2)
        assert set(got[name].members) == members
    assert_each_group_is_a_symmetry(model, x, groups)


def test_hf_convbert_mixed_attention():
    model, x = hf_tiny(
        "ConvBertForSequenceClassification",
        vocab_size=20,
        hidden_size=16,
        embedding_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=24,
        max_position_embeddings=16,
        num_labels=3,
    )
    groups, msgs = grouped(model, x)
    assert msgs == []
    got = {g.name: g for g in groups}
    for layer in range(2):
        pre = f"convbert.encoder.layer.{layer}.attention"
        for name, members in _span_conv_groups(f"{pre}.self", f"{pre}.output.dense", 8).items():
            assert set(got[name].members) == members
    assert_each_group_is_a_symmetry(model, x, groups)


def test_hf_gpt_oss_transposed_interleaved_experts_and_no_crash():
    # (E, H, 2I) / (E, I, H) stacks with gate and up interleaved (gate_up[..., ::2], [..., 1::2]);
    # its trace also yields index maps that lose their root channel (a TypeError before)
    model, x = hf_tiny(
        "GptOssForCausalLM",
        **_TINY_MOE,
        head_dim=4,
        num_local_experts=3,
        layer_types=["full_attention", "sliding_attention"],
        pad_token_id=0,
    )
    groups, msgs = grouped(model, x)
    assert len(msgs) == 1  # its stream and attention are left out, with the one warning
    got = {g.name: g for g in groups}
    for layer in range(2):
        pre = f"model.layers.{layer}.mlp.experts"
        assert set(got[f"{pre} (experts)"].members) == {
            M(f"{pre}.gate_up_proj", 2, "producer", 0, 2),
            M(f"{pre}.gate_up_proj_bias", 1, "other", 0, 2),
            M(f"{pre}.down_proj", 1, "consumer"),
        }
    assert_each_group_is_a_symmetry(model, x, groups)


# ---------------------------------------------------------------------------------------------
# OLMoE / OLMo-2: RMSNorm over the whole q and k projections (q_norm, k_norm), with grouped
# key/value heads


class RMSNorm(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class NormedProjections(nn.Module):
    def __init__(self, d=16, heads=4, kv_heads=2, vocab=20, classes=3):
        super().__init__()
        self.heads, self.kv, self.hd = heads, kv_heads, d // heads
        self.emb = nn.Embedding(vocab, d)
        self.att = nn.Module()
        self.att.q_proj = nn.Linear(d, d, bias=False)
        self.att.k_proj = nn.Linear(d, kv_heads * self.hd, bias=False)
        self.att.v_proj = nn.Linear(d, kv_heads * self.hd, bias=False)
        self.att.o_proj = nn.Linear(d, d, bias=False)
        self.att.q_norm, self.att.k_norm = RMSNorm(d), RMSNorm(kv_heads * self.hd)
        self.att.other = nn.Linear(2, d)  # not a norm: its (d,) bias is no member
        self.head = nn.Linear(d, classes)

    def forward(self, ids):
        a, x = self.att, self.emb(ids)
        b, t, d = x.shape
        q = a.q_norm(a.q_proj(x)).view(b, t, self.heads, self.hd).transpose(1, 2)
        k = a.k_norm(a.k_proj(x)).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = a.v_proj(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        r = self.heads // self.kv
        k, v = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
        ctx = ((q @ k.transpose(-1, -2)) / math.sqrt(self.hd)).softmax(-1) @ v
        return self.head(x + a.o_proj(ctx.transpose(1, 2).reshape(b, t, d)))


def _normed_head_members(pre, q_rows, hd):
    return {
        M(f"{pre}.q_proj.weight", 0, "producer", 0, q_rows),
        M(f"{pre}.k_proj.weight", 0, "producer", 0, hd),
        M(f"{pre}.v_proj.weight", 0, "producer", 0, hd),
        M(f"{pre}.o_proj.weight", 1, "consumer", 0, q_rows),
        M(f"{pre}.q_norm.weight", 0, "norm", 0, q_rows),
        M(f"{pre}.k_norm.weight", 0, "norm", 0, hd),
    }


def test_norms_over_whole_projections_move_with_the_key_value_heads():
    model, x = NormedProjections(), ids()
    groups, msgs = grouped(model, x)
    assert msgs == []
    att = {g.name: g for g in groups}["att (attention)"]
    assert att.width == model.kv
    assert set(att.members) == _normed_head_members("att", 2 * model.hd, model.hd)
    assert_each_group_is_a_symmetry(model, x, groups)


def test_hf_olmoe_attention_with_projection_norms():
    model, x = hf_tiny(
        "OlmoeForCausalLM",
        **_TINY_MOE,
        num_experts=3,
        max_position_embeddings=16,
        pad_token_id=0,
    )
    groups, msgs = grouped(model, x)
    assert msgs == []
    got = {g.name: g for g in groups}
    for layer in range(2):
        pre = f"model.layers.{layer}"
        assert set(got[f"{pre}.self_attn (attention)"].members) == _normed_head_members(
            f"{pre}.self_attn", 8, 4
        )
        assert got[f"{pre}.mlp.experts (experts)"].width == 12
    assert_each_group_is_a_symmetry(model, x, groups)


# ---------------------------------------------------------------------------------------------
# Experts as a ModuleList of MLPs (Switch, NLLB-MoE): an expert no token of the example input
# was routed to never runs in the trace, yet couples like the others


class ListMoE(nn.Module):
    def __init__(self, d=16, experts=3, inner=12, vocab=20, classes=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.router = nn.Linear(d, experts)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(d, inner), nn.ReLU(), nn.Linear(inner, d))
            for _ in range(experts)
        )
        self.head = nn.Linear(d, classes)

    def forward(self, ids):
        x = self.emb(ids)
        prob, idx = self.router(x).softmax(-1).max(-1)
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            mask = idx == e
            if mask.any():
                y = y.masked_scatter(mask[..., None], expert(x[mask]))
        return self.head(x + prob[..., None] * y)


def test_an_expert_that_never_ran_couples_like_the_ones_that_did():
    model, x = ListMoE(), ids(t=12)
    with torch.no_grad():
        model.router.bias.copy_(torch.tensor([0.0, 0.0, -1e4]))  # no token reaches expert 2
    groups, msgs = grouped(model, x)
    assert msgs == []
    got = {g.name: g for g in groups}
    for e in range(3):
        hidden = got[f"experts.{e}.0"]
        assert set(hidden.members) == {
            M(f"experts.{e}.0.weight", 0, "producer"),
            M(f"experts.{e}.0.bias", 0, "other"),
            M(f"experts.{e}.2.weight", 1, "consumer"),
        }
    stream = next(g for g in groups if g.kind == "residual")
    assert {M("experts.2.0.weight", 1, "consumer"), M("experts.2.2.weight", 0, "producer")} <= set(
        stream.members
    )
    # on its fresh random weights the naive check routes tokens to all three experts
    assert_each_group_is_a_symmetry(model, x, groups)


# ---------------------------------------------------------------------------------------------
# DeepSeek's multi-head latent attention: compressed key/value channels (kv_a_proj_with_mqa ->
# kv_a_layernorm -> kv_b_proj), a rotary key part shared by every head, per-head [nope | rope]
# query rows and [k_nope | v] key/value rows


def _rotate(x, t):
    """A fixed rotation of channel pairs by position (a rotary embedding)."""
    angle = torch.arange(t, dtype=torch.float)[:, None] / 10 ** torch.arange(x.shape[-1] // 2)
    cos, sin = angle.cos(), angle.sin()
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)


class LatentAttention(nn.Module):
    def __init__(self, d=16, heads=4, rank=8, nope=4, rope=2, v=4, vocab=20, classes=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.att = nn.Module()
        a = self.att
        a.num_heads, a.kv_lora_rank, a.v_head_dim, a.nope, a.rope = heads, rank, v, nope, rope
        a.q_proj = nn.Linear(d, heads * (nope + rope), bias=False)
        a.kv_a_proj_with_mqa = nn.Linear(d, rank + rope, bias=False)
        a.kv_a_layernorm = RMSNorm(rank)
        a.kv_b_proj = nn.Linear(rank, heads * (nope + v), bias=False)
        a.o_proj = nn.Linear(heads * v, d, bias=False)
        self.head = nn.Linear(d, classes)

    def forward(self, ids):
        a, x = self.att, self.emb(ids)
        b, t, _ = x.shape
        h = a.num_heads
        q = a.q_proj(x).view(b, t, h, a.nope + a.rope).transpose(1, 2)
        q = torch.cat([q[..., : a.nope], _rotate(q[..., a.nope :], t)], -1)
        latent, k_pe = a.kv_a_proj_with_mqa(x).split([a.kv_lora_rank, a.rope], -1)
        kv = a.kv_b_proj(a.kv_a_layernorm(latent)).view(b, t, h, -1).transpose(1, 2)
        k_nope, val = kv.split([a.nope, a.v_head_dim], -1)
        k_pe = _rotate(k_pe, t)[:, None].expand(b, h, t, a.rope)
        k = torch.cat([k_nope, k_pe], -1)
        att = (q @ k.transpose(-1, -2) / math.sqrt(a.nope + a.rope)).softmax(-1)
        return self.head(x + a.o_proj((att @ val).transpose(1, 2).reshape(b, t, -1)))


def _latent_groups(pre, q, q_rows, kv_rows, v, biases=()):
    return {
        f"{pre} (latent)": {
            M(f"{pre}.kv_a_proj_with_mqa.weight", 0, "producer"),
            M(f"{pre}.kv_a_layernorm.weight", 0, "norm"),
            M(f"{pre}.kv_b_proj.weight", 1, "consumer"),
        },
        f"{pre} (attention)": {
            M(f"{pre}.{q}.weight", 0, "producer", 0, q_rows),
            M(f"{pre}.kv_b_proj.weight", 0, "producer", 0, kv_rows),
            M(f"{pre}.o_proj.weight", 1, "consumer", 0, v),
        },
    }


def test_latent_attention_groups_its_compressed_channels_and_whole_heads():
    model, x = LatentAttention(), ids()
    groups, msgs = grouped(model, x)
    assert msgs == []
    got = {g.name: g for g in groups}
    for name, members in _latent_groups("att", "q_proj", 6, 8, 4).items():
        assert set(got[name].members) == members
    assert (got["att (latent)"].width, got["att (attention)"].width) == (8, 4)
    assert_each_group_is_a_symmetry(model, x, groups)


def test_hf_deepseek_v3_latent_attention():
    model, x = hf_tiny(
        "DeepseekV3ForCausalLM",
        vocab_size=20,
        hidden_size=16,
        intermediate_size=24,
        moe_intermediate_size=12,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        n_routed_experts=4,
        num_experts_per_tok=2,
        q_lora_rank=8,
        kv_lora_rank=8,
        qk_rope_head_dim=2,
        qk_nope_head_dim=4,
        v_head_dim=4,
        first_k_dense_replace=1,
        n_group=1,
        topk_group=1,
        max_position_embeddings=16,
        pad_token_id=0,
    )
    groups, msgs = grouped(model, x)
    assert msgs == []
    got = {g.name: g for g in groups}
    for layer in range(2):
        pre = f"model.layers.{layer}.self_attn"
        for name, members in _latent_groups(pre, "q_b_proj", 6, 8, 4).items():
            assert set(got[name].members) == members
    assert got["model.layers.1.mlp.experts (experts)"].width == 12
    assert_each_group_is_a_symmetry(model, x, groups)
