"""find_groups where Torch-Pruning's dependency walks used to cycle until their step bound
(timm models of ``benchmarks/bench_groups_timm.py``, reproduced by hand in ``tests/archs.py``).

For each: the groups expected from the definition, no warning, and every returned group
permuted with naive per-channel loops (``assert_each_group_is_a_symmetry``) must leave the
output unchanged.
"""

from __future__ import annotations

import time
import warnings

import pytest
from torch import nn

import archs
from test_groups import M, assert_each_group_is_a_symmetry, check, consumer, norm
from test_groups_archs import run
from widthwise import GroupingWarning, find_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def rows(name, offsets, gate=None, repeat=1):
    """Producer rows and bias entries of ``name`` at each offset."""
    return [
        m
        for o in offsets
        for m in (
            M(f"{name}.weight", 0, "producer", o, repeat, gate),
            M(f"{name}.bias", 0, "other", o, repeat, gate),
        )
    ]


# ---------------------------------------------------------------------------------------------
# MambaOut: [g | i | c] split on the last dim, c through a depthwise conv, g * cat(i, c)


def test_gated_conv_block_pairs_each_gate_row_with_its_value_row():
    model, x, groups, msgs = run("gated_conv_block")
    assert msgs == []
    hidden, conv = model.split[0], model.split[2]
    plain = hidden - conv  # the value channels that skip the conv
    stream = [
        M("stem.weight", 0, "producer"),
        M("stem.bias", 0, "other"),
        *norm("norm"),
        M("fc1.weight", 1, "consumer"),
        M("fc2.weight", 0, "producer"),
        M("fc2.bias", 0, "other"),
        M("head.weight", 1, "consumer"),
    ]
    # channel j: gate row j and value row hidden + j, read by column j of fc2 (j < plain)
    gated = [*rows("fc1", [0, hidden]), *consumer("fc2")]
    # channel j: gate row plain + j, value row hidden + plain + j, conv channel j, fc2 column
    # plain + j: the conv's channels cannot trade places with the plain ones
    convolved = [
        *rows("fc1", [plain, hidden + plain]),
        M("conv.weight", 0, "producer"),
        M("conv.bias", 0, "other"),
        *consumer("fc2", plain),
    ]
    check(
        groups,
        {
            "stem+fc2 (residual)": (model.fc2.out_features, "residual", 1, stream),
            "fc1": (plain, "linear", 1, gated),
            "fc1+conv (residual)": (conv, "residual", 1, convolved),
        },
    )
    assert_each_group_is_a_symmetry(model, x, groups)


# ---------------------------------------------------------------------------------------------
# NesT: heads merged back dim-major, (attn @ v).permute(0, 2, 3, 4, 1).reshape(B, T, N, C)


def test_dim_major_heads_move_whole_with_every_heads_th_column():
    model, x, groups, msgs = run("dim_major_heads_attention")
    assert msgs == []
    c, heads = model.proj.in_features, model.heads
    hd = c // heads
    stream = [
        M("stem.weight", 0, "producer"),
        M("stem.bias", 0, "other"),
        M("qkv.weight", 1, "consumer"),
        M("proj.weight", 0, "producer"),
        M("proj.bias", 0, "other"),
        M("head.weight", 1, "consumer"),
    ]
    # channel h: the hd rows of head h in each of q, k, v; columns j * heads + h of proj
    qkv = [m for k, gate in enumerate("qkv") for m in rows("qkv", [k * c], gate, hd)]
    cols = [M("proj.weight", 1, "consumer", j * heads) for j in range(hd)]
    check(
        groups,
        {
            "stem+proj (residual)": (c, "residual", 1, stream),
            "qkv (attention)": (heads, "attention", 1, [*qkv, *cols]),
        },
    )
    assert_each_group_is_a_symmetry(model, x, groups)


# ---------------------------------------------------------------------------------------------
# time out after a walk that did not end: the warning says that more time may group it


class _Slow(nn.Module):
    """``inner`` with a fixed delay per forward, as a large model's forwards take seconds."""

    def __init__(self, inner: nn.Module, delay: float):
        super().__init__()
        self.inner, self.delay = inner, delay

    def forward(self, x):
        time.sleep(self.delay)
        return self.inner(x)


def test_a_walk_left_to_candidates_that_time_ran_out_for_says_to_pass_more_time():
    model, x = archs.dim_major_heads_attention()
    # the qkv walk does not end (heads merged dim-major): it is left to the projection
    # candidates, which need forwards; two forwards of 0.5 s outlast timeout=0.5
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        find_groups(_Slow(model, 0.5), x, timeout=0.5)
    msgs = [str(r.message) for r in record if r.category is GroupingWarning]
    assert len(msgs) == 1
    start = msgs[0].index("(inner.qkv: the dependency walk from it did not end")
    part = msgs[0][start : msgs[0].index("). The groups", start)]
    assert part.endswith("not tried within timeout=0.5 s: pass a larger timeout")
    # with time, the same model is grouped (test_dim_major_heads_move_whole_...)
