"""find_groups on the convolution patterns of timm's CNN-ish models (tests/archs.py, section
``convs``): the groups expected from each architecture's definition, and every returned group
permuted with naive per-channel loops on a randomised copy must leave the output unchanged."""

from __future__ import annotations

import pytest

import archs
from test_groups import M, assert_each_group_is_a_symmetry, check, consumer, norm, quiet_groups
from widthwise.resize import resize

pytestmark = pytest.mark.usefixtures("one_thread")


def run(arch):
    """(model, inputs, groups); a GroupingWarning fails the test."""
    model, x = archs.PATTERNS[arch]()
    return model, x, quiet_groups(model, x)


def rows(name, repeat=1, bias=True):
    out = [M(f"{name}.weight", 0, "producer", 0, repeat)]
    if bias:
        out.append(M(f"{name}.bias", 0, "other", 0, repeat))
    return out


def test_a_depthwise_multiplier_carries_its_output_blocks():
    # FastViT's downsample: large + small convs, groups = 4 inputs, 2 outputs per input
    model, x, groups = run("depthwise_multiplier")
    k = model.large.out_channels // model.large.in_channels
    assert k == 2
    stream = [
        *rows("stem"),
        *norm("bn"),
        *rows("large", k),
        *rows("small", k, bias=False),
        M("bn2.weight", 0, "norm", 0, k),
        M("bn2.bias", 0, "norm", 0, k),
        M("pw.weight", 1, "consumer", 0, k),
    ]
    check(
        groups,
        {
            "stem+large+small (residual)": (4, "residual", 1, stream),
            "pw": (6, "conv", 1, [*rows("pw"), *consumer("head")]),
        },
    )
    assert_each_group_is_a_symmetry(model, x, groups)


def test_multipliers_between_stages_compose():
    # PiT: stage 2's stream is blocks of 2 of stage 1's channels, stage 3's blocks of 4; the
    # class-token Linear reads stage 1 (columns) and writes stage 2 (rows in blocks)
    model, x, groups = run("multiplier_stages")
    stream = [
        *rows("stem"),
        M("fc1a.weight", 1, "consumer"),
        *rows("fc1b"),
        *rows("pool1", 2),
        *rows("token", 2),
        M("token.weight", 1, "consumer"),
        M("fc2a.weight", 1, "consumer", 0, 2),
        *rows("fc2b", 2),
        *rows("pool2", 4),
        M("head.weight", 1, "consumer", 0, 4),
    ]
    check(
        groups,
        {
            "stem+fc1b+pool1+token+fc2b+pool2 (residual)": (4, "residual", 1, stream),
            "fc1a": (8, "conv", 1, [*rows("fc1a"), *consumer("fc1b")]),
            "fc2a": (12, "conv", 1, [*rows("fc2a"), *consumer("fc2b")]),
        },
    )
    assert_each_group_is_a_symmetry(model, x, groups)


@pytest.mark.parametrize("arch", ["depthwise_multiplier", "multiplier_stages"])
def test_a_multiplied_group_resizes_in_whole_blocks(arch):
    model, x, groups = run(arch)
    g = groups[0]
    new = resize(model.eval(), groups, {g.name: g.width + 2}, init="net2net", example_inputs=x)
    convs = [m for m in model.modules() if getattr(m, "groups", 1) > 1]
    wide = [m for m in new.modules() if getattr(m, "groups", 1) > 1]
    for old, conv in zip(convs, wide, strict=True):
        k = old.out_channels // old.in_channels
        assert conv.groups == conv.in_channels == old.in_channels + 2 * (old.groups // g.width)
        assert conv.out_channels == k * conv.in_channels


def test_a_grouped_weight_standardised_conv_carries_its_gain():
    # NFNet (group_size): the gain rows of a grouped conv are its outputs' like its weight rows
    model, x, groups = run("grouped_gain_convs")
    a = model.conv2.in_channels // model.conv2.groups  # channels per conv group

    def gained(name, offsets):
        return [
            M(f"{name}.{p}", 0, "producer" if p == "weight" else "other", o)
            for p in ("weight", "bias", "gain")
            for o in offsets
        ]

    check(
        groups,
        {  # read by a grouped conv: channel i is channel i of each conv group
            "conv1": (a, "conv", 1, [*gained("conv1", (0, a)), *consumer("conv2")]),
            "conv2": (a, "conv", 1, [*gained("conv2", (0, a)), *consumer("conv2b")]),
            # computed by a grouped conv: permutable within its groups
            "conv2b": (2 * a, "conv", 2, [*gained("conv2b", (0,)), *consumer("conv3")]),
            "conv3": (6, "conv", 1, [*gained("conv3", (0,)), *consumer("head")]),
        },
    )
    assert_each_group_is_a_symmetry(model, x, groups)


def test_selective_kernel_paths_share_their_output_channels():
    # SKNet: output channel c is channel c of both paths and rows c and C + c of fc_select (its
    # rows are viewed as (paths, C)); the input halves go to one path each
    model, x, groups = run("selective_kernel")
    c = model.paths[0][0].out_channels
    half = model.stem.out_channels // 2
    stem = [M("stem.weight", 0, "producer"), M("stem.bias", 0, "other")]
    paths = [m for p in ("paths.0", "paths.1") for m in (*rows(f"{p}.0"), *norm(f"{p}.1"))]
    check(
        groups,
        {
            "stem": (half, "conv", 1, [*stem, *consumer("paths.0.0")]),
            "stem #2": (
                half,
                "conv",
                1,
                [*(M(m.param, 0, m.role, half) for m in stem), *consumer("paths.1.0")],
            ),
            "paths.0.0": (
                c,
                "conv",
                1,
                [
                    *paths,
                    M("attn.fc_reduce.weight", 1, "consumer"),
                    M("attn.fc_select.weight", 0, "producer", 0),
                    M("attn.fc_select.weight", 0, "producer", c),
                    *consumer("conv2"),
                ],
            ),
            "attn.fc_reduce": (
                model.attn.fc_reduce.out_channels,
                "conv",
                1,
                [
                    M("attn.fc_reduce.weight", 0, "producer"),
                    *norm("attn.bn"),
                    *consumer("attn.fc_select"),
                ],
            ),
            "conv2": (5, "conv", 1, [*rows("conv2"), *consumer("head")]),
        },
    )
    assert_each_group_is_a_symmetry(model, x, groups)


def test_factorized_positions_written_in_place_join_the_stream():
    # NaFlexViT: the outer sum of the row and column tables is not a gate over channels, and
    # the patch Linear written into in place stays in the graph
    model, x, groups = run("factorized_positions")
    stream = [
        M("pos_embed_y", 2, "other"),
        M("pos_embed_x", 2, "other"),
        M("reg_token", 2, "other"),
        *rows("proj"),
        *norm("norm"),
        M("fc1.weight", 1, "consumer"),
        *rows("fc2"),
        *consumer("head"),
    ]
    check(
        groups,
        {
            "proj+fc2 (residual)": (8, "residual", 1, stream),
            "fc1": (16, "linear", 1, [*rows("fc1"), *consumer("fc2")]),
        },
    )
    assert_each_group_is_a_symmetry(model, x, groups)
    assert model.proj._forward_pre_hooks == {} and model.proj._forward_hooks == {}


def test_a_multiplier_on_fixed_channels_leaves_its_outputs_their_own_group():
    model, x, groups = run("multiplier_features")
    k = 2
    outputs = [
        *rows("large"),
        *rows("small", bias=False),
        *norm("bn2"),
        *consumer("pw"),
    ]
    check(
        groups,
        {  # within the blocks of k outputs of each (fixed) input channel: divisor = 4 blocks
            "large+small (residual)": (k * 4, "residual", 4, outputs),
            "pw": (6, "conv", 1, [*rows("pw"), *consumer("head")]),
        },
    )
    assert_each_group_is_a_symmetry(model, x, groups)
