"""find_groups on per-head norms and channel products (branch ``mults``, issue 13): the
patterns of tests/archs.py's ``mults`` section, each with the groups expected from its
definition and the naive-loop permutation check of every group returned."""

from __future__ import annotations

import warnings
from dataclasses import replace

import pytest
import torch

import archs
from test_groups import (
    M,
    _outputs,
    _permute_copy,
    assert_each_group_is_a_symmetry,
    check,
    consumer,
    norm,
)
from test_groups_archs import rows, run
from widthwise import ChannelGroup, GroupingWarning, find_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def test_spatial_gating_unit_pairs_both_halves_of_fc1():
    model, x, groups, msgs = run("spatial_gating")
    assert msgs == []
    d, h = model.stem.out_channels, model.mlp.fc2.in_features
    gate = [*rows("mlp.fc1"), *rows("mlp.fc1", offset=h), *norm("mlp.gate.norm")]
    check(
        groups,
        {
            "stem+mlp.fc2 (residual)": (
                d,
                "residual",
                1,
                [
                    *rows("stem"),
                    *norm("norm"),
                    *consumer("mlp.fc1"),
                    *rows("mlp.fc2"),
                    *consumer("head"),
                ],
            ),
            "mlp.fc1": (h, "linear", 1, [*gate, *consumer("mlp.fc2")]),
        },
    )
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    # why both halves: permuting the u half alone (with fc2's columns) is not a symmetry
    half = ChannelGroup("u", h, (*rows("mlp.fc1"), *consumer("mlp.fc2")))
    assert not torch.allclose(_outputs(_permute_copy(model, [half], seed=5).eval(), x), ref)


def test_relative_position_tables_shared_by_heads_stay_fixed_under_whole_heads():
    model, x, groups, msgs = run("decomposed_rel_pos")
    assert msgs == []  # the tables are not named as left out
    d, h = model.proj.in_features, model.heads
    hd = d // h
    qkv = [m for k, g in enumerate("qkv") for m in rows("qkv", k * d, hd, g)]
    check(
        groups,
        {
            "stem+proj (residual)": (
                d,
                "residual",
                1,
                [*rows("stem"), *norm("norm"), *consumer("qkv"), *rows("proj"), *consumer("head")],
            ),
            "qkv (attention)": (h, "attention", 1, [*qkv, *consumer("proj", repeat=hd)]),
        },
    )
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    # the tables matter: permuting their head-dim columns alone changes the output, so whole
    # heads pass because the tables are shared by the heads, not because they are ignored
    tables = ChannelGroup("t", hd, (M("rel_pos_h", 1, "other"), M("rel_pos_w", 1, "other")))
    assert not torch.allclose(_outputs(_permute_copy(model, [tables], seed=5).eval(), x), ref)
    # and channels permuted within heads (the tables fixed) are not a symmetry
    within = ChannelGroup(
        "w", d, (*[m for k in range(3) for m in rows("qkv", k * d)], *consumer("proj")), divisor=h
    )
    assert not torch.allclose(_outputs(_permute_copy(model, [within], seed=6).eval(), x), ref)


def test_interleaved_attention_with_a_biased_qkv_takes_the_bias_rows():
    model, x, groups, msgs = run("biased_interleaved_attention")
    assert msgs == []
    h, kd, vd, d = model.num_heads, model.key_dim, model.val_dim, model.proj.out_features
    step = 2 * kd + vd
    keys = [m for j in range(h) for off in (0, kd) for m in rows("qkv", j * step + off)]
    values = [m for j in range(h) for m in rows("qkv", j * step + 2 * kd)]
    values += [M("proj.weight", 1, "consumer", j * vd) for j in range(h)]
    check(
        groups,
        {
            "stem+proj (residual)": (
                d,
                "residual",
                1,
                [*rows("stem"), *consumer("qkv"), *rows("proj"), *consumer("head")],
            ),
            "attention (keys)": (kd, "attention", 1, keys),
            "attention (values)": (vd, "attention", 1, values),
        },
    )
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    # the bias rows are needed: the key rows permuted without them change the output
    g = next(g for g in groups if g.name == "attention (keys)")
    bare = ChannelGroup("k", kd, tuple(m for m in g.members if m.param != "qkv.bias"))
    assert not torch.allclose(_outputs(_permute_copy(model, [bare], seed=5).eval(), x), ref)


def _conv_norm_rows(name, offset=0):
    return [
        M(f"{name}.conv.weight", 0, "producer", offset),
        *(M(f"{name}.bn.{w}", 0, "norm", offset) for w in ("weight", "bias")),
    ]


@pytest.mark.parametrize("arch", ["talking_heads_2d", "downsample_attention_2d"])
def test_values_of_attention_on_feature_maps_permute_within_heads(arch):
    make = archs.PATTERNS.get(arch) or archs.PARTLY_GROUPED[arch]
    model, x = make()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        groups = find_groups(model, x)
    assert [r for r in record if r.category is GroupingWarning] == []
    heads, kd, dh = model.num_heads, model.key_dim, model.dh
    q = "q.proj" if arch == "downsample_attention_2d" else "q"
    keys = [m for n in (q, "k") for h in range(heads) for m in _conv_norm_rows(n, h * kd)]
    values = [
        *_conv_norm_rows("v"),
        *_conv_norm_rows("v_local"),
        M("proj.conv.weight", 1, "consumer"),
    ]
    got = {g.name: g for g in groups}
    assert (got["attention (keys)"].width, set(got["attention (keys)"].members)) == (kd, set(keys))
    g = got["attention (values)"]
    assert (g.width, g.kind, g.divisor) == (dh, "attention", heads)
    assert set(g.members) == set(values) and len(g.members) == len(values)
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    # within heads only: swapping the two heads' value channels changes the output
    swap = ChannelGroup("heads", heads, tuple(replace(m, repeat=dh // heads) for m in values))
    assert not torch.allclose(_outputs(_permute_copy(model, [swap], seed=5).eval(), x), ref)


def test_gated_single_head_attention_pairs_value_and_gate_rows():
    model, x, groups, msgs = run("gated_single_head")
    assert msgs == []
    a, mid, w = model.q.conv.out_channels, model.proj.conv.in_channels, model.stem.out_channels
    keys = [*_conv_norm_rows("q"), *_conv_norm_rows("k")]
    values = [*_conv_norm_rows("v_gate"), *_conv_norm_rows("v_gate", mid)]
    stream = [
        *rows("stem"),
        *(M(f"{n}.conv.weight", 1, "consumer") for n in ("q", "k", "v_gate")),
        *_conv_norm_rows("proj"),
        *consumer("head"),
    ]
    check(
        groups,
        {
            "stem+proj.conv (residual)": (w, "residual", 1, stream),
            "attention (keys)": (a, "attention", 1, keys),
            "attention (values)": (
                mid,
                "attention",
                1,
                [*values, M("proj.conv.weight", 1, "consumer")],
            ),
        },
    )
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    # the value rows without their gate rows are not a symmetry
    v_only = ChannelGroup(
        "v", mid, (*_conv_norm_rows("v_gate"), M("proj.conv.weight", 1, "consumer"))
    )
    assert not torch.allclose(_outputs(_permute_copy(model, [v_only], seed=5).eval(), x), ref)


def test_pooled_attention_moves_whole_heads_past_per_head_pooling():
    model, x, groups, msgs = run("pooled_attention")
    assert msgs == []
    d, h = model.proj.in_features, model.heads
    hd = d // h
    qkv = [m for k, g in enumerate("qkv") for m in rows("qkv", k * d, hd, g)]
    check(
        groups,
        {
            "stem+proj (residual)": (
                d,
                "residual",
                1,
                [*rows("stem"), *consumer("qkv"), *rows("proj"), *consumer("head")],
            ),
            "qkv (attention)": (h, "attention", 1, [*qkv, *consumer("proj", repeat=hd)]),
        },
    )
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    # the pooling convs and norms are shared by the heads: channels within heads cannot move
    within = ChannelGroup(
        "w", d, (*[m for k in range(3) for m in rows("qkv", k * d)], *consumer("proj")), divisor=h
    )
    assert not torch.allclose(_outputs(_permute_copy(model, [within], seed=6).eval(), x), ref)


def test_per_head_norms_move_whole_heads_tried_first(monkeypatch):
    from widthwise.groups.verify import Symmetry

    tried: list[str] = []
    passes = Symmetry.passes

    def spy(self, groups):
        tried.extend(g.notes[0] if g.notes else g.name for g in groups)
        return passes(self, groups)

    monkeypatch.setattr(Symmetry, "passes", spy)
    model, x, groups, msgs = run("per_head_norm_attention")
    assert msgs == []
    d, h, hd = model.o_proj.linear.in_features, model.num_heads, model.head_dim
    heads = [M(f"{n}.linear.weight", 0, "producer", 0, hd) for n in ("q_proj", "k_proj", "v_proj")]
    lin = [M(f"{n}.linear.weight", 1, "consumer") for n in ("q_proj", "k_proj", "v_proj")]
    check(
        groups,
        {
            "stem+o_proj.linear (residual)": (
                d,
                "residual",
                1,
                [*rows("stem"), *lin, M("o_proj.linear.weight", 0, "producer"), *consumer("head")],
            ),
            "q_proj.linear+k_proj.linear+v_proj.linear (attention)": (
                h,
                "attention",
                1,
                [*heads, *consumer("o_proj.linear", repeat=hd)],
            ),
        },
    )
    # the per-head norms rule out every within-head candidate: whole heads are tried first
    assert [t for t in tried if "head" in t] == [
        f"one channel is one key/value head ({hd} columns of 'o_proj.linear')"
    ]
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    within = ChannelGroup(
        "w",
        d,
        (*[M(f"{n}.linear.weight", 0, "producer") for n in ("q_proj", "k_proj", "v_proj")],
         *consumer("o_proj.linear")),
        divisor=h,
    )  # fmt: skip
    assert not torch.allclose(_outputs(_permute_copy(model, [within], seed=6).eval(), x), ref)


def test_candidates_not_tried_in_time_are_named_in_the_warning(monkeypatch):
    from widthwise.groups import finder

    verify = finder._Finder._verify

    def then_late(self, cands):
        out = verify(self, cands)
        self.deadline = float("-inf")  # the walks' groups are verified; the time is now up
        return out

    monkeypatch.setattr(finder._Finder, "_verify", then_late)
    _, _, groups, msgs = run("per_head_norm_attention", timeout=30)
    assert [g.name for g in groups] == ["stem+o_proj.linear (residual)"]
    assert len(msgs) == 1
    assert "(attention)" in msgs[0] and "not tried within timeout=30 s" in msgs[0]


def test_one_head_pooled_attention_permutes_channels_with_the_pooling_convs_and_norms():
    model, x, groups, msgs = run("pooled_attention_one_head")
    assert msgs == []
    d = model.proj.in_features
    qkv = [m for k, g in enumerate("qkv") for m in rows("qkv", k * d, 1, g)]
    pools = [M(f"pool_{t}.weight", 0, "producer") for t in "qkv"]
    check(
        groups,
        {
            "stem+proj (residual)": (
                d,
                "residual",
                1,
                [*rows("stem"), *consumer("qkv"), *rows("proj"), *consumer("head")],
            ),
            "qkv (attention)": (
                d,
                "attention",
                1,
                [*qkv, *pools, *(m for t in "qkv" for m in norm(f"norm_{t}")), *consumer("proj")],
            ),
        },
    )
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    # without the pooling convs and norms (what the candidates proposed before) it fails
    g = next(g for g in groups if g.name == "qkv (attention)")
    bare = replace(g, members=tuple(m for m in g.members if m.param.startswith(("qkv", "proj"))))
    assert not torch.allclose(_outputs(_permute_copy(model, [bare], seed=5).eval(), x), ref)
