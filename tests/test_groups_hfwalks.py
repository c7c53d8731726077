"""find_groups on Llama-like decoders that differ from Llama (issue 13, the held-out Hugging Face
battery ``benchmarks/bench_groups_hf_all.py``): eager attention whose key is narrower than its
query (grouped key/value heads) with a rotary ``rotate_half`` and a cache ``cat`` on time, and
one learned entry per query head (attention sinks, GraniteSWA; a per-head gate bias, Beam).

For each pattern: a small model written here that reproduces it, the groups expected from its
definition, and, independently of find_groups' own check, every group permuted with naive
per-channel loops on random weights must leave the output unchanged. The Hugging Face model is
checked from a tiny config (random weights, no download).
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import torch
from torch import nn

from test_groups import M, _outputs, _permute_copy, assert_each_group_is_a_symmetry, check
from test_groups_text import grouped, ids

pytestmark = pytest.mark.usefixtures("one_thread")


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class SinkGQA(nn.Module):
    """Eager Llama-like attention, 4 query heads sharing 2 key/value heads (``repeat_kv``),
    rotary ``rotate_half`` on q and k, keys and values put behind an empty cache with
    ``cat(dim=-2)`` (a Hugging Face cache on its first call), and optionally one learned entry
    per query head: GraniteSWA's sink, ``out * sigmoid(logsumexp(scores) - sink)``, or Beam's
    gate ``out * sigmoid(gate(x) + bias)`` (gate per query channel, bias per head)."""

    def __init__(self, per_head=None, d=16, heads=4, kv=2, hd=4):
        super().__init__()
        self.heads, self.kv, self.hd, self.per_head = heads, kv, hd, per_head
        self.embed = nn.Embedding(20, d)
        self.q_proj = nn.Linear(d, heads * hd, bias=False)
        self.k_proj = nn.Linear(d, kv * hd, bias=False)
        self.v_proj = nn.Linear(d, kv * hd, bias=False)
        self.o_proj = nn.Linear(heads * hd, d, bias=False)
        if per_head == "sink":
            self.sinks = nn.Parameter(torch.randn(heads))
        elif per_head == "gate":
            self.gate_proj = nn.Linear(d, heads * hd, bias=False)
            self.gate_bias = nn.Parameter(torch.randn(heads))
        self.head = nn.Linear(d, 20)
        t = torch.arange(16.0)[:, None] * torch.arange(1, hd // 2 + 1.0)[None] / 8
        self.register_buffer("cos", torch.cat([t.cos(), t.cos()], -1), persistent=False)
        self.register_buffer("sin", torch.cat([t.sin(), t.sin()], -1), persistent=False)

    def forward(self, ids):
        x = self.embed(ids)
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, -1, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, -1, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, -1, self.hd).transpose(1, 2)
        cos, sin = self.cos[:t], self.sin[:t]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = torch.cat([k.new_zeros(b, self.kv, 0, self.hd), k], dim=-2)
        v = torch.cat([v.new_zeros(b, self.kv, 0, self.hd), v], dim=-2)
        n = self.heads // self.kv
        k = k[:, :, None].expand(b, self.kv, n, t, self.hd).reshape(b, self.heads, t, self.hd)
        v = v[:, :, None].expand(b, self.kv, n, t, self.hd).reshape(b, self.heads, t, self.hd)
        s = q @ k.transpose(2, 3) / self.hd**0.5
        y = torch.softmax(s, dim=-1) @ v  # b, heads, t, hd
        if self.per_head == "sink":
            y = y * torch.sigmoid(torch.logsumexp(s, -1) - self.sinks.view(1, -1, 1))[..., None]
        y = y.transpose(1, 2)  # b, t, heads, hd
        if self.per_head == "gate":
            gate = self.gate_proj(x).view_as(y) + self.gate_bias[None, None, :, None]
            y = y * torch.sigmoid(gate)
        return self.head(x + self.o_proj(y.reshape(b, t, -1)))


def expected_sink_gqa(per_head):
    residual = [
        M("embed.weight", 1, "producer"),
        M("o_proj.weight", 0, "producer"),
        M("q_proj.weight", 1, "consumer"),
        M("k_proj.weight", 1, "consumer"),
        M("v_proj.weight", 1, "consumer"),
        M("head.weight", 1, "consumer"),
    ]
    # whole key/value heads, each with its 2 query heads (8 rows) and their entries
    heads = [
        M("q_proj.weight", 0, "producer", repeat=8),
        M("k_proj.weight", 0, "producer", repeat=4),
        M("v_proj.weight", 0, "producer", repeat=4),
        M("o_proj.weight", 1, "consumer", repeat=8),
    ]
    name = "q_proj+k_proj+v_proj (attention)"
    if per_head == "sink":
        heads.append(M("sinks", 0, "other", repeat=2))
    elif per_head == "gate":
        residual.append(M("gate_proj.weight", 1, "consumer"))
        heads += [
            M("gate_proj.weight", 0, "producer", repeat=8),
            M("gate_bias", 0, "other", repeat=2),
        ]
        name = "q_proj+k_proj+v_proj+gate_proj (attention)"
    return {
        "embed+o_proj (residual)": (16, "residual", 1, residual),
        name: (2, "attention", 1, heads),
    }


@pytest.mark.parametrize("per_head", [None, "sink", "gate"])
def test_grouped_kv_heads_with_rotary_cache_and_per_head_entries(per_head):
    """The walk from the query ends (it used to cycle through the key's ``rotate_half``
    concat, mapped as two key-wide pieces on dim 1), and whole key/value heads carry their
    query heads' sinks or gate biases."""
    model, x = SinkGQA(per_head).eval(), ids()
    start = time.perf_counter()
    groups, warned = grouped(model, x)
    assert time.perf_counter() - start < 20
    assert warned == []
    check(groups, expected_sink_gqa(per_head))
    assert_each_group_is_a_symmetry(model, x, groups)


def test_per_head_entry_left_alone_is_not_a_symmetry():
    """The sinks must move with the heads: the whole-head group without them changes the
    output (so the member is needed, not decoration)."""
    model, x = SinkGQA("sink").eval(), ids()
    groups, _ = grouped(model, x)
    heads = next(g for g in groups if g.kind == "attention")
    bare = replace(heads, members=tuple(m for m in heads.members if m.param != "sinks"))
    ref = assert_each_group_is_a_symmetry(model, x, [heads])  # fresh random weights
    # two key/value heads: some seeds draw the swap (the others the identity)
    outs = [_outputs(_permute_copy(model, [bare], seed=s), x) for s in range(8)]
    assert any(not torch.allclose(o, ref, rtol=1e-4, atol=1e-5) for o in outs)


def hf_tiny(cls_name, **kw):
    transformers = pytest.importorskip("transformers")
    cls = getattr(transformers, cls_name, None)
    if cls is None:
        pytest.skip(f"transformers has no {cls_name}")
    torch.manual_seed(0)
    model = cls(cls.config_class(**kw)).eval()
    return model, {"input_ids": ids(kw["vocab_size"], 7)}


_TINY = dict(
    vocab_size=20,
    hidden_size=16,
    intermediate_size=12,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=4,
)


@pytest.mark.parametrize("cls_name", ["GraniteSWAForCausalLM", "BeamForCausalLM"])
def test_hf_decoders_with_sinks_or_head_gates(cls_name):
    model, x = hf_tiny(cls_name, **_TINY)
    groups, warned = grouped(model, x)
    assert warned == []
    attention = [g for g in groups if g.kind == "attention"]
    assert len(attention) == 2
    for g in attention:
        per_head = [m for m in g.members if m.param.endswith(("sinks", "gate_bias"))]
        assert [(m.dim, m.offset, m.repeat) for m in per_head] == [(0, 0, 2)]
    assert_each_group_is_a_symmetry(model, x, groups)


class ForeignSinks(SinkGQA):
    """:class:`SinkGQA` whose sinks are held by another module: no candidate holds them, so
    the heads cannot be grouped."""

    def __init__(self):
        super().__init__("sink")
        del self.sinks
        self.elsewhere = nn.Module()
        self.elsewhere.sinks = nn.Parameter(torch.randn(4))

    @property
    def sinks(self):  # type: ignore[override]
        return self.elsewhere.sinks


def test_ungroupable_heads_are_left_out_without_hitting_the_walk_bound():
    """Left out, with the reason found by a walk that ended (not its step bound)."""
    model, x = ForeignSinks().eval(), ids()
    groups, warned = grouped(model, x)
    assert len(warned) == 1
    assert "q_proj" in warned[0] and "did not end" not in warned[0]
    assert not any(g.kind == "attention" for g in groups)
    assert_each_group_is_a_symmetry(model, x, groups)


class CausalConvMixer(nn.Module):
    """A depthwise causal convolution over time, as in Mamba-like and Inkling-2 mixers:
    ``conv(in_proj(x)^T)[:, :, -T:]``, a slice with a negative start along the time axis of
    ``B, C, T``. Autograd saves that start as ``2**64 - T``; Torch-Pruning mapped the slice
    as one on channels (dim 2 of a 3-D tensor), so the walk from ``in_proj`` carried indices
    near ``2**64``."""

    def __init__(self, d=8, inner=12, k=3):
        super().__init__()
        self.embed = nn.Embedding(20, d)
        self.in_proj = nn.Linear(d, inner)
        self.conv = nn.Conv1d(inner, inner, k, groups=inner, padding=k - 1)
        self.out_proj = nn.Linear(inner, d)
        self.head = nn.Linear(d, 20)

    def forward(self, ids):
        x = self.embed(ids)
        t = x.shape[1]
        h = self.conv(self.in_proj(x).transpose(1, 2))[:, :, -t:]
        return self.head(x + self.out_proj(torch.nn.functional.silu(h).transpose(1, 2)))


def test_negative_slice_on_time_of_a_causal_conv():
    model, x = CausalConvMixer().eval(), ids()
    groups, warned = grouped(model, x)
    assert warned == []
    check(
        groups,
        {
            "embed+out_proj (residual)": (
                8,
                "residual",
                1,
                [
                    M("embed.weight", 1, "producer"),
                    M("out_proj.weight", 0, "producer"),
                    M("out_proj.bias", 0, "other"),
                    M("in_proj.weight", 1, "consumer"),
                    M("head.weight", 1, "consumer"),
                ],
            ),
            "in_proj": (
                12,
                "linear",
                1,
                [
                    M("in_proj.weight", 0, "producer"),
                    M("in_proj.bias", 0, "other"),
                    M("conv.weight", 0, "producer"),  # depthwise: one filter per channel
                    M("conv.bias", 0, "other"),
                    M("out_proj.weight", 1, "consumer"),
                ],
            ),
        },
    )
    assert_each_group_is_a_symmetry(model, x, groups)
