"""find_groups on the vision and recurrent patterns of issue 13 (tests/archs.py ``PATTERNS``):
gates broadcast over channels (FocalNet), per-head tables and scales, conv projections inside
attention, a multi-layer GRU started from one learned state.

Each test writes the groups expected from the architecture's definition and permutes every group
with the naive per-channel loops of ``tests/test_groups.py`` on a randomised copy of the model.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import archs
from test_groups import M, assert_each_group_is_a_symmetry, consumer
from widthwise import ChannelGroup, GroupingWarning, find_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def run(arch):
    """(model, inputs, groups, GroupingWarning messages)."""
    model, x = archs.PATTERNS[arch]()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        groups = find_groups(model, x)
    msgs = [str(r.message) for r in record if r.category is GroupingWarning]
    return model, x, groups, msgs


def rows(name, offset=0, repeat=1, bias=True):
    out = [M(f"{name}.weight", 0, "producer", offset, repeat)]
    if bias:
        out.append(M(f"{name}.bias", 0, "other", offset, repeat))
    return out


def by_members(groups):
    return {frozenset(g.members): g for g in groups}


# ---------------------------------------------------------------------------------------------
# FocalNet: one-channel gates scale whole context maps


def test_focal_modulation_groups_q_and_context_and_leaves_the_gates_fixed():
    model, x, groups, msgs = run("focal_modulation")
    assert msgs == []
    c, levels = model.dim, model.levels
    depthwise = [M(f"focal_layers.{k}.0.weight", 0, "producer") for k in range(levels)]
    expected = {
        # the stream: stem, the block's output projection, the convs and head that read it
        frozenset([*rows("stem"), *consumer("f"), *rows("proj"), *consumer("head")]),
        # q is multiplied element-wise by the modulator h(ctx_all): one permutation for both
        frozenset([*rows("f"), *rows("h"), *consumer("proj")]),
        # ctx: its rows of f, every depthwise level, the columns of h
        frozenset([*rows("f", offset=c), *depthwise, *consumer("h")]),
    }
    assert set(by_members(groups)) == expected
    assert all(g.width == c and g.divisor == 1 for g in groups)
    # the L+1 gate rows of f are in no group: each scales one level, a fixed role
    gate_rows = {(m.offset, m.repeat) for g in groups for m in g.members if m.param == "f.weight"}
    assert all(off + c * rep <= 2 * c for off, rep in gate_rows)
    assert_each_group_is_a_symmetry(model, x, groups)


def test_hf_focalnet_modulation_groups():
    model, x, groups, msgs = run("hf_focalnet_tiny")
    assert msgs == []
    for s, c in enumerate((16, 32)):
        mod = f"focalnet.encoder.stages.{s}.layers.0.modulation"
        found = set(by_members(groups))
        q = [*rows(f"{mod}.projection_in"), *rows(f"{mod}.projection_context")]
        q += consumer(f"{mod}.projection_out")
        ctx = [*rows(f"{mod}.projection_in", offset=c), *consumer(f"{mod}.projection_context")]
        ctx += [M(f"{mod}.focal_layers.{k}.0.weight", 0, "producer") for k in range(2)]
        assert frozenset(q) in found and frozenset(ctx) in found
    assert_each_group_is_a_symmetry(model, x, groups)


# ---------------------------------------------------------------------------------------------
# a stacked GRU started from one learned state


def test_stacked_gru_from_one_learned_state_is_one_hidden_group():
    model, x, groups, msgs = run("learned_h0_stacked_gru")
    assert msgs == []
    h, rnn = model.rnn.hidden_size, model.rnn
    expected = [M("h0", 2, "other"), *consumer("head")]
    for layer in range(rnn.num_layers):
        for k, gate in enumerate("rzn"):
            for kind in ("ih", "hh"):
                expected.append(M(f"rnn.weight_{kind}_l{layer}", 0, "producer", k * h, 1, gate))
                expected.append(M(f"rnn.bias_{kind}_l{layer}", 0, "other", k * h, 1, gate))
        expected.append(M(f"rnn.weight_hh_l{layer}", 1, "consumer"))
        if layer > 0:
            expected.append(M(f"rnn.weight_ih_l{layer}", 1, "consumer"))
    got = {g.name: g for g in groups}
    assert set(got) == {"embed", "rnn (hidden)"}
    assert (got["rnn (hidden)"].width, got["rnn (hidden)"].kind) == (h, "recurrent")
    assert set(got["rnn (hidden)"].members) == set(expected)
    assert_each_group_is_a_symmetry(model, x, groups)
    # permuting one layer's units (and all of h0) is not a symmetry: one group is needed
    g = got["rnn (hidden)"]
    one = [m for m in g.members if not m.param.endswith("_l1") and m.param != "head.weight"]
    broken = type(g)(g.name, g.width, tuple(one), g.layers, g.kind, g.divisor)
    from test_groups import _outputs, _permute_copy

    ref = _outputs(model, x)
    assert not torch.allclose(_outputs(_permute_copy(model, [broken], seed=1).eval(), x), ref)


# ---------------------------------------------------------------------------------------------
# Swin-V2: cosine attention, per-head logit scale, continuous position bias MLP


def test_swinv2_block_groups_within_heads_and_leaves_the_per_head_tables_alone():
    model, x, groups, msgs = run("swinv2_block")
    assert msgs == []
    c = model.proj.in_features
    qkv = [*rows("query"), *rows("key"), *rows("value")]
    # each stream channel is read by the reduction four times: cat of the 2x2 neighbours
    merge = [M("reduction.weight", 1, "consumer", k * c) for k in range(4)]
    stream = [*rows("patch"), *(M(f"{n}.weight", 1, "consumer") for n in ("query", "key", "value"))]
    stream += [*rows("proj"), M("norm1.weight", 0, "norm"), M("norm1.bias", 0, "norm")]
    stream += [*consumer("fc1"), *rows("fc2"), M("norm2.weight", 0, "norm")]
    stream += [M("norm2.bias", 0, "norm"), *merge]
    merged = [*rows("reduction", bias=False), M("merge_norm.weight", 0, "norm")]
    merged += [M("merge_norm.bias", 0, "norm"), *consumer("head")]
    expected = {
        frozenset(stream): (c, 1),
        # q/k/v channels permute within heads: the logit scale and the position bias are per
        # head, so whole heads would need them permuted too
        frozenset([*qkv, *consumer("proj")]): (c, model.heads),
        frozenset([*rows("cpb_mlp.0"), *consumer("cpb_mlp.2")]): (32, 1),
        frozenset([*rows("fc1"), *consumer("fc2")]): (2 * c, 1),
        frozenset(merged): (2 * c, 1),
    }
    got = by_members(groups)
    assert set(got) == set(expected)
    for members, (width, divisor) in expected.items():
        assert (got[members].width, got[members].divisor) == (width, divisor)
    # the per-head tables are in no group: their rows are heads, a fixed count
    tracked = {m.param for g in groups for m in g.members}
    assert "logit_scale" not in tracked and M("cpb_mlp.2.weight", 0, "producer") not in {
        m for g in groups for m in g.members
    }
    assert_each_group_is_a_symmetry(model, x, groups)


def test_hf_swinv2_attention_and_streams_are_grouped():
    model, x, groups, msgs = run("hf_swinv2_tiny")
    assert msgs == []
    for s, heads in enumerate(model.config.num_heads):
        att = f"swinv2.encoder.layers.{s}.blocks.0.attention"
        g = next(g for g in groups if g.kind == "attention" and att in g.name)
        width = model.config.embed_dim * 2**s
        assert (g.width, g.divisor) == (width, heads)
        want = {f"{att}.self.{n}.weight" for n in ("query", "key", "value")}
        assert want | {f"{att}.output.dense.weight"} <= {m.param for m in g.members}
        # the position bias MLP's hidden units (its ReLU runs in place on a view)
        cpb = f"{att}.self.continuous_position_bias_mlp"
        hidden = [*rows(f"{cpb}.0"), *consumer(f"{cpb}.2")]
        assert frozenset(hidden) in by_members(groups)
    streams = [g for g in groups if g.kind == "residual"]
    assert sorted(g.width for g in streams) == [16, 32]
    red = "swinv2.encoder.layers.0.downsample.reduction.weight"
    assert {m.offset for g in streams for m in g.members if m.param == red} == {0, 16, 32, 48}
    assert_each_group_is_a_symmetry(model, x, groups)


# ---------------------------------------------------------------------------------------------
# CvT: depthwise conv projections inside attention, a class token split off along tokens


def test_conv_projection_attention_keeps_the_stream_through_the_class_token_split():
    model, x, groups, msgs = run("conv_projection_attention")
    assert msgs == []
    c = model.out.out_features
    stream = [M("cls_token", 2, "other"), *rows("patch"), *rows("out"), *rows("fc2")]
    for ln in ("norm1", "norm2"):
        stream += [M(f"{ln}.weight", 0, "norm"), M(f"{ln}.bias", 0, "norm")]
    for p in ("q", "k", "v"):
        # the depthwise projection keeps channel i at i: it is part of the stream
        stream += [M(f"conv_{p}.0.weight", 0, "producer"), *consumer(p)]
        stream += [M(f"conv_{p}.1.weight", 0, "norm"), M(f"conv_{p}.1.bias", 0, "norm")]
    stream += [*consumer("fc1"), *consumer("head")]
    expected = {
        frozenset(stream): (c, 1),
        frozenset([*rows("q"), *rows("k"), *rows("v"), *consumer("out")]): (c, model.heads),
        frozenset([*rows("fc1"), *consumer("fc2")]): (2 * c, 1),
    }
    got = by_members(groups)
    assert set(got) == set(expected)
    for members, (width, divisor) in expected.items():
        assert (got[members].width, got[members].divisor) == (width, divisor)
    assert_each_group_is_a_symmetry(model, x, groups)


def test_hf_cvt_every_stage_is_grouped():
    model, x, groups, msgs = run("hf_cvt_tiny")
    assert msgs == []
    for s, (dim, heads) in enumerate(zip(model.config.embed_dim, model.config.num_heads)):
        stream = next(g for g in groups if g.name == f"cvt.encoder.stages.{s} (residual)")
        assert stream.width == dim
        att = f"cvt.encoder.stages.{s}.layers.0.attention.attention"
        conv = f"{att}.convolution_projection_query.convolution_projection.convolution.weight"
        assert M(conv, 0, "producer") in stream.members
        g = next(g for g in groups if g.name == f"{att} (attention)")
        assert (g.width, g.divisor) == (dim, heads if heads > 1 else 1)
    cls = "cvt.encoder.stages.2.cls_token"
    assert any(m.param == cls for g in groups for m in g.members)
    assert_each_group_is_a_symmetry(model, x, groups)


# ---------------------------------------------------------------------------------------------
# Mamba: a selective state-space mixer, written from its definition


def test_mamba_mixer_inner_state_and_rank_groups():
    model, x, groups, msgs = run("mamba_mixer")
    assert msgs == []
    i, n, r = model.inner, model.state, model.rank
    inner = [
        M("in_proj.weight", 0, "producer"),
        M("in_proj.weight", 0, "producer", i),  # the gate z of channel k multiplies y_k
        *rows("conv1d"),
        *consumer("x_proj"),
        *rows("dt_proj"),
        M("A_log", 0, "other"),
        M("D", 0, "other"),
        *consumer("out_proj"),
    ]
    state = [M("x_proj.weight", 0, "producer", r), M("x_proj.weight", 0, "producer", r + n)]
    state.append(M("A_log", 1, "other"))
    rank = [M("x_proj.weight", 0, "producer"), *consumer("dt_proj")]
    stream = [*rows("embed"), M("norm.weight", 0, "norm"), M("norm.bias", 0, "norm")]
    stream += [*consumer("in_proj"), M("out_proj.weight", 0, "producer"), *consumer("head")]
    expected = {
        frozenset(inner): i,
        frozenset(state): n,
        frozenset(rank): r,
        frozenset(stream): model.embed.out_features,
    }
    got = by_members(groups)
    assert set(got) == set(expected)
    assert all(got[k].width == w for k, w in expected.items())
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    # the gate rows are needed: without them the inner permutation changes the output
    g = got[frozenset(inner)]
    broken = type(g)(g.name, g.width, tuple(m for m in g.members if m.offset != i), g.layers)
    from test_groups import _outputs, _permute_copy

    assert not torch.allclose(_outputs(_permute_copy(model, [broken], seed=2).eval(), x), ref)


def test_hf_mamba_mixers_are_grouped():
    model, x, groups, msgs = run("hf_mamba_tiny")
    assert msgs == []
    cfg = model.config
    for layer in range(cfg.num_hidden_layers):
        p = f"backbone.layers.{layer}.mixer"
        inner = next(g for g in groups if g.name == f"{p}.in_proj (inner)")
        assert inner.width == cfg.intermediate_size
        assert {M(f"{p}.A_log", 0, "other"), M(f"{p}.D", 0, "other")} <= set(inner.members)
        state = next(g for g in groups if g.name == f"{p}.x_proj (state)")
        assert (state.width, M(f"{p}.A_log", 1, "other") in state.members) == (4, True)
    assert_each_group_is_a_symmetry(model, x, groups)


# ---------------------------------------------------------------------------------------------
# LeViT: q/k/v interleaved per head in one Linear+BatchNorm, per-head bias tables


def _norm_rows(name, offset=0):
    return [M(f"{name}.weight", 0, "norm", offset), M(f"{name}.bias", 0, "norm", offset)]


def test_levit_attention_key_and_value_dims_permute_in_every_head():
    model, x, groups, msgs = run("levit_attention")
    assert msgs == []
    h, kd, vd = model.num_heads, model.key_dim, model.val_dim
    step = 2 * kd + vd  # one head's [q | k | v] rows
    keys, values = [], []
    for head in range(h):
        for off in (head * step, head * step + kd):  # q and k: dim i of q meets dim i of k
            keys += [M("qkv.linear.weight", 0, "producer", off), *_norm_rows("qkv.bn", off)]
        off = head * step + 2 * kd
        values += [M("qkv.linear.weight", 0, "producer", off), *_norm_rows("qkv.bn", off)]
        values.append(M("proj.ln.linear.weight", 1, "consumer", head * vd))
    stream = [*rows("stem.0"), *_norm_rows("stem.1"), *consumer("qkv.linear")]
    stream += [M("proj.ln.linear.weight", 0, "producer"), *_norm_rows("proj.ln.bn")]
    stream += [*consumer("up.linear"), M("down.linear.weight", 0, "producer")]
    stream += [*_norm_rows("down.bn"), *consumer("head")]
    hidden = [M("up.linear.weight", 0, "producer"), *_norm_rows("up.bn"), *consumer("down.linear")]
    expected = {
        frozenset(keys): kd,
        frozenset(values): vd,
        frozenset(stream): model.head.in_features,
        frozenset(hidden): 2 * model.head.in_features,
    }
    got = by_members(groups)
    assert set(got) == set(expected)
    assert all(got[k].width == w for k, w in expected.items())
    # the bias tables are per head: not in any group
    assert all(m.param != "attention_biases" for g in groups for m in g.members)
    assert_each_group_is_a_symmetry(model, x, groups)


def test_hf_levit_attention_and_subsampling_attention_are_grouped():
    model, x, groups, msgs = run("hf_levit_tiny")
    assert msgs == []
    names = {g.name for g in groups}
    assert "levit.encoder.stages.0.layers.0.module (keys)" in names
    assert "levit.encoder.stages.0.layers.2 (values)" in names  # the subsampling attention
    streams = sorted(g.width for g in groups if g.kind == "residual")
    assert streams == sorted(model.config.hidden_sizes)
    assert_each_group_is_a_symmetry(model, x, groups)


# ---------------------------------------------------------------------------------------------
# BoTNet: relative-position self-attention over a conv feature map


def _bot_keys(heads, hd, tables):
    """q and k rows of every head (dim i of each), and the tables' columns."""
    keys = [M("qkv.weight", 0, "producer", j * hd) for j in range(2 * heads)]
    return keys + [M(t, 1, "other") for t in tables]


def test_bot_block_keys_with_the_position_tables_and_values_within_heads_of_the_stream():
    model, x, groups, msgs = run("bot_block")
    assert msgs == []
    c, heads, hd = model.bn.num_features, model.heads, model.hd
    # attention output is added to the stream: the stream permutes within heads, with v rows
    stream = [*rows("stem"), *consumer("qkv"), M("qkv.weight", 0, "producer", 2 * c)]
    stream += [M("bn.weight", 0, "norm"), M("bn.bias", 0, "norm"), *consumer("fc")]
    expected = {
        frozenset(_bot_keys(heads, hd, ("rel_h", "rel_w"))): (hd, 1),
        frozenset(stream): (c, heads),
    }
    got = by_members(groups)
    assert set(got) == set(expected)
    for members, (width, divisor) in expected.items():
        assert (got[members].width, got[members].divisor) == (width, divisor)
    assert_each_group_is_a_symmetry(model, x, groups)


def test_timm_bottleneck_attn_values_group_reaches_the_conv_after_it():
    model, x, groups, msgs = run("bottleneck_attn")
    assert msgs == []
    heads, hd, inner = model.num_heads, model.dim_head_qk, model.dim_out_v
    tables = ("pos_embed.height_rel", "pos_embed.width_rel")
    values = [M("qkv.weight", 0, "producer", 2 * inner), *_norm_rows("post_attn")]
    values += consumer("conv3.0")
    got = by_members(groups)
    assert frozenset(_bot_keys(heads, hd, tables)) in got
    v = got[frozenset(values)]
    assert (v.width, v.divisor, v.kind) == (inner, heads, "attention")
    stream = [*rows("stem.0"), *_norm_rows("stem.1"), *consumer("conv1.0")]
    stream += [M("conv3.0.weight", 0, "producer"), *_norm_rows("conv3.1"), *consumer("head")]
    hidden = [M("conv1.0.weight", 0, "producer"), *_norm_rows("conv1.1"), *consumer("qkv")]
    assert set(got) == {frozenset(_bot_keys(heads, hd, tables)), frozenset(values)} | {
        frozenset(stream),
        frozenset(hidden),
    }
    assert_each_group_is_a_symmetry(model, x, groups)


# ---------------------------------------------------------------------------------------------
# SwiftFormer: efficient additive attention with a raw [C, 1] scoring vector


def test_additive_attention_scoring_vector_rows_join_q_and_k():
    model, x, groups, msgs = run("additive_attention")
    assert msgs == []
    # q's channels meet w_g's rows (the score), k's (global * k) and proj's output (+ q)
    inner = [M("w_g", 0, "other"), *rows("to_query"), *rows("to_key"), *rows("proj")]
    inner += [*consumer("proj"), *consumer("final")]
    stream = [*rows("embed"), *consumer("to_query"), *consumer("to_key"), *rows("final")]
    stream += consumer("head")
    got = by_members(groups)
    assert set(got) == {frozenset(inner), frozenset(stream)}
    assert got[frozenset(inner)].width == model.w_g.shape[0]
    assert_each_group_is_a_symmetry(model, x, groups)


def test_hf_swiftformer_attention_is_grouped():
    model, x, groups, msgs = run("hf_swiftformer_tiny")
    assert msgs == []
    for s in (0, 2, 4, 6):
        w_g = f"swiftformer.encoder.network.{s}.blocks.0.attn.w_g"
        g = next(g for g in groups if M(w_g, 0, "other") in g.members)
        assert g.width == model.get_parameter(w_g).shape[0]
    assert_each_group_is_a_symmetry(model, x, groups)


# ---------------------------------------------------------------------------------------------
# MobileViT-V2: key and value rows of one conv multiplied together: one channel, never split


def test_separable_attention_key_and_value_move_as_one_channel():
    model, x = archs.separable_attention()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        groups = find_groups(model, x)
    assert [r for r in record if r.category is GroupingWarning] == []
    c = model.dim
    g = next(g for g in groups if any(m.param == "qkv.weight" and m.dim == 0 for m in g.members))
    # channel j: key row 1 + j and value row 1 + c + j (the one query row stays), out column j
    assert g.width == c
    assert set(g.members) == {
        M("qkv.weight", 0, "producer", 1), M("qkv.weight", 0, "producer", 1 + c),
        M("qkv.bias", 0, "other", 1), M("qkv.bias", 0, "other", 1 + c), *consumer("out"),
    }  # fmt: skip
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    # why not split: permuting the key rows alone is not a symmetry
    keys = ChannelGroup(
        "keys", c, (M("qkv.weight", 0, "producer", 1), M("qkv.bias", 0, "other", 1))
    )
    from test_groups import _outputs, _permute_copy

    assert not torch.allclose(_outputs(_permute_copy(model, [keys], seed=4).eval(), x), ref)


# ---------------------------------------------------------------------------------------------
# EfficientViT (MIT): lite multi-scale linear attention


def test_lite_mla_head_channels_share_one_permutation_per_scale():
    model, x, groups, msgs = run("lite_mla")
    assert msgs == []
    d = model.dim
    blocks = model.qkv.conv.out_channels // d  # [q | k | v] of every head
    heads = blocks // 3
    first = [M("qkv.conv.weight", 0, "producer", j * d) for j in range(blocks)]
    first += [M("qkv.conv.bias", 0, "other", j * d) for j in range(blocks)]
    first += [M("aggreg.0.0.weight", 0, "producer", j * d) for j in range(blocks)]
    # the grouped 1x1 conv reads channel i of every block through one column
    first.append(M("aggreg.0.1.weight", 1, "consumer"))
    first += [M("proj.conv.weight", 1, "consumer", h * d) for h in range(heads)]
    second = [M("aggreg.0.1.weight", 0, "producer", j * d) for j in range(blocks)]
    second += [M("proj.conv.weight", 1, "consumer", (heads + h) * d) for h in range(heads)]
    stream = [*rows("stem.conv", bias=False), *_norm_rows("stem.norm"), *consumer("qkv.conv")]
    stream += [M("proj.conv.weight", 0, "producer"), *_norm_rows("proj.norm"), *consumer("head")]
    got = by_members(groups)
    assert set(got) == {frozenset(first), frozenset(second), frozenset(stream)}
    assert got[frozenset(first)].width == got[frozenset(second)].width == d
    assert_each_group_is_a_symmetry(model, x, groups)


# ---------------------------------------------------------------------------------------------
# timm attention patterns


def _stream(qkv="attn.qkv"):
    out = [*rows("patch"), M("norm1.weight", 0, "norm"), M("norm1.bias", 0, "norm")]
    out += [*consumer(qkv), *rows("attn.proj"), M("norm2.weight", 0, "norm")]
    return [*out, M("norm2.bias", 0, "norm"), *consumer("fc1"), *rows("fc2"), *consumer("head")]


@pytest.mark.parametrize("arch", ["cat_bias_vit", "cat_bias_vit_no_table"])
def test_fused_qkv_with_a_concatenated_raw_bias_is_grouped_within_heads(arch):
    # BEiT/Eva/Swin-V2: F.linear(x, qkv.weight, cat(q_bias, zero k_bias buffer, v_bias))
    model, x, groups, msgs = run(arch)
    assert msgs == []
    c, heads = model.attn.proj.in_features, model.attn.num_heads
    qkv = [M("attn.qkv.weight", 0, "producer", k * c, 1, g) for k, g in enumerate("qkv")]
    # q_bias is added to q's rows, v_bias to v's: each indexed like its block's channels
    attn = [*qkv, M("attn.q_bias", 0, "other"), M("attn.v_bias", 0, "other")]
    expected = {
        frozenset(_stream()): (c, 1),
        # the position table is per head: channels permute within heads, heads stay
        frozenset([*attn, *consumer("attn.proj")]): (c, heads),
        frozenset([*rows("fc1"), *consumer("fc2")]): (2 * c, 1),
    }
    got = by_members(groups)
    assert set(got) == set(expected)
    for members, (width, divisor) in expected.items():
        assert (got[members].width, got[members].divisor) == (width, divisor)
    assert_each_group_is_a_symmetry(model, x, groups)


@pytest.mark.parametrize("arch", ["windowed_attention_vit", "windowed_attention_vit_one_head"])
def test_windowed_attention_is_grouped_within_heads(arch):
    # Twins, Hiera: 5-D matmuls whose broadcast Torch-Pruning read as a key/value-head repeat
    # (it divided by zero); the attention is grouped like any fused-qkv attention: channel i of
    # q, k and v in each head with proj's column (channels met at one index are one channel)
    model, x, groups, msgs = run(arch)
    assert msgs == []
    c, heads = model.proj.in_features, model.num_heads
    stream = [*rows("patch"), M("norm1.weight", 0, "norm"), M("norm1.bias", 0, "norm")]
    stream += [*consumer("qkv"), *rows("proj"), *consumer("head")]
    qkv = [
        M(f"qkv.{p}", 0, role, j * c, 1, gate)
        for j, gate in enumerate("qkv")
        for p, role in (("weight", "producer"), ("bias", "other"))
    ]
    expected = {
        frozenset(stream): (c, 1),
        frozenset([*qkv, *consumer("proj")]): (c, heads),
    }
    got = by_members(groups)
    assert set(got) == set(expected)
    for members, (width, divisor) in expected.items():
        assert (got[members].width, got[members].divisor) == (width, divisor)
    assert_each_group_is_a_symmetry(model, x, groups)


def test_flatten_patch_merging_reads_each_channel_at_four_offsets():
    # timm Swin: (B, H, W, C) -> (B, H/2, W/2, 2, 2, C) flattened: channel c is feature
    # c + j*C of the merged map for each of the four neighbours j
    model, x, groups, msgs = run("flatten_patch_merging")
    assert msgs == []
    c = model.patch.out_channels
    merge = [M(f"norm.{p}", 0, "norm", j * c) for p in ("weight", "bias") for j in range(4)]
    merge += [M("reduction.weight", 1, "consumer", j * c) for j in range(4)]
    stream = [*rows("patch"), M("norm1.weight", 0, "norm"), M("norm1.bias", 0, "norm")]
    stream += [*consumer("fc1"), *rows("fc2"), *merge]
    expected = {
        frozenset(stream): c,
        frozenset([*rows("fc1"), *consumer("fc2")]): 2 * c,
        frozenset([*rows("reduction", bias=False), *consumer("head")]): 2 * c,
    }
    got = by_members(groups)
    assert set(got) == set(expected)
    assert all(got[k].width == w and got[k].divisor == 1 for k, w in expected.items())
    assert_each_group_is_a_symmetry(model, x, groups)


def test_one_hot_position_table_is_a_member_of_the_stream():
    # Gemma-4 ViT: one_hot(positions) @ table, a lookup whose last dim is the stream's channels
    model, x, groups, msgs = run("one_hot_position_table")
    assert msgs == []
    c = model.input_proj.out_features
    stream = [M("position_embedding_table", 2, "other"), *rows("input_proj", bias=False)]
    stream += [*consumer("fc1"), *rows("fc2"), *consumer("head")]
    expected = {frozenset(stream): c, frozenset([*rows("fc1"), *consumer("fc2")]): 2 * c}
    got = by_members(groups)
    assert set(got) == set(expected)
    assert all(got[k].width == w and got[k].divisor == 1 for k, w in expected.items())
    assert_each_group_is_a_symmetry(model, x, groups)


def test_values_of_attention_weights_made_by_a_linear_are_grouped_without_its_rows():
    # VOLO: attention weights are a Linear's outputs (positions, not channels), so the walk
    # from v through attn @ v reaching them is refused; v and proj permute within heads
    model, x, groups, msgs = run("linear_weights_attention")
    assert msgs == []
    c, heads = model.proj.in_features, model.num_heads
    stream = [*rows("patch"), M("norm1.weight", 0, "norm"), M("norm1.bias", 0, "norm")]
    stream += [*consumer("v"), *consumer("attn"), *rows("proj"), *consumer("head")]
    expected = {
        frozenset(stream): (c, 1),
        frozenset([*rows("v", bias=False), *consumer("proj")]): (c, heads),
    }
    got = by_members(groups)
    assert set(got) == set(expected)
    for members, (width, divisor) in expected.items():
        assert (got[members].width, got[members].divisor) == (width, divisor)
    assert all(m.param != "attn.weight" or m.dim == 1 for g in groups for m in g.members)
    assert_each_group_is_a_symmetry(model, x, groups)


def test_position_embedding_map_joins_the_stream_along_its_channel_dim():
    # Visformer, SAM2-Hiera: pos_embed (1, C, H, W) added to a conv map: channels are dim 1
    model, x, groups, msgs = run("map_position_embedding")
    assert msgs == []
    c = model.stem.out_channels
    stream = [*rows("stem"), M("pos_embed", 1, "other"), *consumer("fc1"), *rows("fc2")]
    stream += consumer("head")
    expected = {frozenset(stream): c, frozenset([*rows("fc1"), *consumer("fc2")]): 2 * c}
    got = by_members(groups)
    assert set(got) == set(expected)
    assert all(got[k].width == w and got[k].divisor == 1 for k, w in expected.items())
    assert_each_group_is_a_symmetry(model, x, groups)
