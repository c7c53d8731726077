"""find_groups on attention over feature maps whose head reshapes Torch-Pruning's walks cannot
follow (tests/archs.py: ``halo_attn``, ``lambda_layer``, ``coat_factor_attn``; timm's
``HaloAttn``, ``LambdaLayer`` and CoaT's ``FactorAttnConvRelPosEnc``): the groups written from
each definition, exact members, and every group permuted with naive per-channel loops on a
randomised copy must leave the output unchanged."""

from __future__ import annotations

import pytest

import archs
from test_groups import M, assert_each_group_is_a_symmetry, check, consumer, norm, quiet_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def run(arch):
    """(model, inputs, groups); a GroupingWarning fails the test."""
    model, x = archs.PATTERNS[arch]()
    return model, x, quiet_groups(model, x)


def at(members, offsets):
    """``members`` repeated at each offset (dim ``j`` of every head)."""
    return [M(m.param, m.dim, m.role, o) for o in offsets for m in members]


def bottleneck_stream_and_hidden(attn_inputs):
    stream = [M("stem.0.weight", 0, "producer"), M("stem.0.bias", 0, "other"), *norm("stem.1")]
    stream += [*consumer("conv1.0"), M("conv3.0.weight", 0, "producer"), *norm("conv3.1")]
    stream += consumer("head")
    hidden = [M("conv1.0.weight", 0, "producer"), *norm("conv1.1")]
    hidden += [c for name in attn_inputs for c in consumer(name)]
    return stream, hidden


def test_halo_attention_keys_with_tables_and_value_dims_of_every_head():
    # HaloAttn: q rows h*dqk + i, kv rows h*(dqk+dv) + i ([k | v] per head) and the tables'
    # columns; value dim j of every head: kv rows h*(dqk+dv) + dqk + j, then the map's
    # channel h*dv + j in post_attn and conv3
    model, x, groups = run("halo_attn")
    a = model.self_attn
    heads, dqk, dv = a.num_heads, a.dim_head_qk, a.dim_head_v
    step = dqk + dv
    keys = at([M("self_attn.q.weight", 0, "producer")], range(0, heads * dqk, dqk))
    keys += at([M("self_attn.kv.weight", 0, "producer")], range(0, heads * step, step))
    keys += [M(f"self_attn.pos_embed.{t}", 1, "other") for t in ("height_rel", "width_rel")]
    values = at([M("self_attn.kv.weight", 0, "producer")], range(dqk, heads * step, step))
    values += at([*norm("post_attn"), *consumer("conv3.0")], range(0, heads * dv, dv))
    stream, hidden = bottleneck_stream_and_hidden(["self_attn.q", "self_attn.kv"])
    check(
        groups,
        {
            "stem.0+conv3.0 (residual)": (8, "residual", 1, stream),
            "conv1.0": (6, "conv", 1, hidden),
            "self_attn (keys)": (dqk, "attention", 1, keys),
            "self_attn.kv (values)": (dv, "attention", 1, values),
        },
    )
    assert_each_group_is_a_symmetry(model, x, groups)


def test_lambda_layer_keys_with_conv_lambda_and_one_value_for_every_head():
    # LambdaLayer: key dim i in q (every head, with norm_q), k and conv_lambda's outputs;
    # value dim j: v's row and norm_v, and channel h*dv + j of the output for every head h
    model, x, groups = run("lambda_layer")
    a = model.self_attn
    heads, dk, dv = a.num_heads, a.dim_qk, a.dim_v
    keys = at([M("self_attn.qkv.weight", 0, "producer")], range(0, heads * dk + 1, dk))
    keys += at(norm("self_attn.norm_q"), range(0, heads * dk, dk))
    keys += [M("self_attn.conv_lambda.weight", 0, "producer")]
    keys += [M("self_attn.conv_lambda.bias", 0, "other")]
    values = [M("self_attn.qkv.weight", 0, "producer", heads * dk + dk), *norm("self_attn.norm_v")]
    values += at([*norm("post_attn"), *consumer("conv3.0")], range(0, heads * dv, dv))
    stream, hidden = bottleneck_stream_and_hidden(["self_attn.qkv"])
    check(
        groups,
        {
            "stem.0+conv3.0 (residual)": (8, "residual", 1, stream),
            "conv1.0": (6, "conv", 1, hidden),
            "self_attn (keys)": (dk, "attention", 1, keys),
            "self_attn.qkv (values)": (dv, "attention", 1, values),
        },
    )
    assert_each_group_is_a_symmetry(model, x, groups)


def test_coat_factor_attention_dims_of_every_head_across_the_blocks_sharing_crpe():
    # CoaT: q, k and v dim j meet in every head (q @ (k^T v) and q * conv(v)); the depthwise
    # convs of crpe are shared by both blocks, so both blocks' q, k, v and proj columns move
    # with them; conv_list.0 covers two heads (kernel 3), conv_list.1 one (kernel 5)
    model, x, groups = run("coat_factor_attn")
    c, heads = model.head.in_features, model.attn[0].num_heads
    d = c // heads
    dims = []
    for b in range(2):
        dims += at([M(f"attn.{b}.qkv.weight", 0, "producer")], range(0, 3 * c, d))
        dims += at([M(f"attn.{b}.qkv.bias", 0, "other")], range(0, 3 * c, d))
        dims += at(consumer(f"attn.{b}.proj"), range(0, c, d))
    conv = [M("crpe.conv_list.{}.weight", 0, "producer"), M("crpe.conv_list.{}.bias", 0, "other")]
    for k, split in enumerate((2, 1)):
        dims += at([M(m.param.format(k), m.dim, m.role) for m in conv], range(0, split * d, d))
    stream = [M("cls_token", 2, "other"), M("patch.weight", 0, "producer")]
    stream += [M("patch.bias", 0, "other"), *consumer("head")]
    for b in range(2):
        stream += [*norm(f"norm1.{b}"), *consumer(f"attn.{b}.qkv")]
        stream += [M(f"attn.{b}.proj.weight", 0, "producer"), M(f"attn.{b}.proj.bias", 0, "other")]
        stream += [*norm(f"norm2.{b}"), *consumer(f"fc1.{b}")]
        stream += [M(f"fc2.{b}.weight", 0, "producer"), M(f"fc2.{b}.bias", 0, "other")]
    mlp = {
        f"fc1.{b}": (
            2 * c,
            "linear",
            1,
            [
                M(f"fc1.{b}.weight", 0, "producer"),
                M(f"fc1.{b}.bias", 0, "other"),
                *consumer(f"fc2.{b}"),
            ],
        )
        for b in range(2)
    }
    check(
        groups,
        {
            "attn (residual)": (c, "residual", 1, stream),
            "crpe (heads)": (d, "attention", 1, dims),
            **mlp,
        },
    )
    assert_each_group_is_a_symmetry(model, x, groups)
