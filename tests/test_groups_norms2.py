"""find_groups on hand-written norms and the blocks of timm models that use them (tests/archs.py,
end of file): EvoNorm's group statistic written with reshapes. The groups expected from each
architecture's definition, and every returned group permuted with naive per-channel loops on a
randomised copy must leave the output unchanged."""

from __future__ import annotations

import warnings

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
from widthwise.groups import GroupingWarning, find_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def affine(name, v=True):
    out = [M(f"{name}.weight", 0, "norm"), M(f"{name}.bias", 0, "norm")]
    return [*out, M(f"{name}.v", 0, "norm")] if v else out


def test_a_hand_written_group_std_permutes_within_its_groups():
    # EvoNorm-S0: x.reshape(B, G, C/G, H, W).var(...).expand(...).reshape(B, C, H, W); the
    # stream's norm has 4 groups (divisor 4), the hidden norm 3 groups in the (B, G, -1) form;
    # the stem's EvoNorm-B0 is per channel (its running_var moves with its weight)
    model, x, groups, msgs = run("evonorm_resnet")
    assert msgs == []
    stream = [
        *rows("stem"),
        *affine("n0"),
        *affine("n1"),
        *consumer("conv1"),
        *rows("conv2"),
        *consumer("head"),
    ]
    hidden = [*rows("conv1"), *affine("n2"), *consumer("conv2")]
    check(
        groups,
        {
            "stem+conv2 (residual)": (8, "residual", 4, stream),
            "conv1": (12, "conv", 3, hidden),
        },
    )
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    # across the norm's groups it is not a symmetry: the divisor is needed
    free = [g.__class__(g.name, g.width, g.members, g.layers, g.kind, 1) for g in groups]
    for k, g in enumerate(free):
        out = _outputs(_permute_copy(model, [g], seed=10 + k).eval(), x)
        assert not torch.allclose(out, ref, rtol=1e-4, atol=1e-5), g.name


def test_a_concatenated_piece_of_a_group_norm_permutes_within_its_whole_groups():
    # cat([a (8), b (6), c (2)]) normalised in 4 groups of 4: a holds two whole groups (divisor
    # 2); b and c share a group, so neither is a block structure: left out, the reason named
    model, x = archs.PARTLY_GROUPED["evonorm_concat"]()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        groups = find_groups(model, x)
    msgs = [str(r.message) for r in record if r.category is GroupingWarning]
    check(
        groups,
        {"a": (8, "conv", 2, [*rows("a"), *affine("norm"), *consumer("head")])},
    )
    assert_each_group_is_a_symmetry(model, x, groups)
    assert len(msgs) == 1
    for name in ("b", "c"):
        assert f"{name}: a group statistic computed by hand (reshape into 4 groups" in msgs[0]


def test_a_per_head_position_table_met_through_the_scores_is_not_a_member():
    # GC-ViT: the query is the stream (after a residual conv), so the keys' rows (and, through
    # attn @ v, the values' rows and proj's columns) permute with the stream within each head;
    # the (positions, heads) table added to the scores is reached along its heads dim and is
    # not a member (it used to fail the group: 2 entries along dim 1, the group needs 8)
    model, x, groups, msgs = run("global_query_window")
    assert msgs == []
    stream = [
        *rows("stem"),
        M("gconv.weight", 0, "producer"),
        M("gconv.weight", 1, "consumer"),
        M("gconv.bias", 0, "other"),
        *norm("norm1"),
        *norm("norm2"),
        *rows("attn.qkv"),
        *rows("attn.qkv", 8),
        *consumer("attn.qkv"),
        *rows("attn.proj"),
        *consumer("attn.proj"),
        *consumer("fc1"),
        *rows("fc2"),
        *consumer("head"),
    ]
    check(
        groups,
        {
            "stem+gconv+attn.qkv+attn.proj+fc2 (attention)": (8, "attention", 2, stream),
            "fc1": (16, "linear", 1, [*rows("fc1"), *consumer("fc2")]),
        },
    )
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    g = groups[0]
    free = g.__class__(g.name, g.width, g.members, g.layers, g.kind, 1)  # across heads
    out = _outputs(_permute_copy(model, [free], seed=5).eval(), x)
    assert not torch.allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_split_depthwise_blocks_beside_a_3d_parameter_keep_their_pieces_apart():
    # EdgeNeXt's split-transpose blocks: pieces 0 and 1 of the stream are chained (channel j of
    # both is one channel), piece 2 is untouched; XCA's (heads, 1, 1) temperature made
    # Torch-Pruning turn off the concat's index maps, which tied all three pieces (left out)
    model, x, groups, msgs = run("split_transpose_xca")
    assert msgs == []
    w = model.blocks[0].convs[0].out_channels

    def stream(off):
        out = [*rows("stem", off), *consumer("head", off)]
        for b in ("blocks.0", "blocks.1"):
            out += [
                *(
                    M(f"{b}.{n}.{p}", 0, "norm", off)
                    for n in ("norm_xca", "norm")
                    for p in ("weight", "bias")
                ),
                *consumer(f"{b}.xca.qkv", off),
                *rows(f"{b}.xca.proj", off),
                *consumer(f"{b}.fc1", off),
                *rows(f"{b}.fc2", off),
            ]
        return out

    convs = [m for b in ("blocks.0", "blocks.1") for k in (0, 1) for m in rows(f"{b}.convs.{k}")]

    def xca(b):
        qkv = [m for k, g in enumerate("qkv") for m in rows(f"{b}.xca.qkv", k * 3 * w, gate=g)]
        return (3 * w, "attention", 3, [*qkv, *consumer(f"{b}.xca.proj")])

    def mlp(b):
        return (6 * w, "linear", 1, [*rows(f"{b}.fc1"), *consumer(f"{b}.fc2")])

    check(
        groups,
        {
            "blocks (residual)": (w, "residual", 1, stream(0) + stream(w) + convs),
            "blocks (residual) #2": (w, "residual", 1, stream(2 * w)),
            "blocks.0.xca (attention)": xca("blocks.0"),
            "blocks.1.xca (attention)": xca("blocks.1"),
            "blocks.0.fc1": mlp("blocks.0"),
            "blocks.1.fc1": mlp("blocks.1"),
        },
    )
    assert_each_group_is_a_symmetry(model, x, groups)
