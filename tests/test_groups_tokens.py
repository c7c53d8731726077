"""find_groups on Linears over the token axis and talking heads (branch ``tokens``, issue 13):
the patterns of tests/archs.py's ``tokens`` section, each with the groups expected from its
definition and the naive-loop permutation check of every group returned."""

from __future__ import annotations

import pytest
import torch

from test_groups import (
    M,
    _outputs,
    _permute_copy,
    assert_each_group_is_a_symmetry,
    check,
    consumer,
    expected_mha_model,
    expected_recurrent,
    norm,
)
from test_groups_archs import rows, run
from widthwise import ChannelGroup

pytestmark = pytest.mark.usefixtures("one_thread")


def test_token_mixing_mlp_keeps_the_stream_channels_and_has_its_own_hidden_units():
    model, x, groups, msgs = run("token_mixing")
    assert msgs == []  # no left-out warning: the token MLP's rows and columns are tokens
    d, n = model.stem.out_channels, len(model.blocks)
    hidden = model.blocks[0].mlp_tokens.fc1.out_features
    stream = [*rows("stem"), *norm("norm"), *consumer("head")]
    for i in range(n):
        b = f"blocks.{i}"
        stream += [*norm(f"{b}.norm1"), *norm(f"{b}.norm2")]
        stream += [*consumer(f"{b}.mlp_channels.fc1"), *rows(f"{b}.mlp_channels.fc2")]
    expected = {"blocks (residual)": (d, "residual", 1, stream)}
    for i in range(n):
        for mlp, width in (("mlp_tokens", hidden), ("mlp_channels", 2 * d)):
            fc = f"blocks.{i}.{mlp}"
            expected[f"{fc}.fc1"] = (
                width,
                "linear",
                1,
                [*rows(f"{fc}.fc1"), *consumer(f"{fc}.fc2")],
            )
    check(groups, expected)
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    # why the token MLP is no member of the stream: its columns are tokens, and permuting them
    # (as if they were channels) with the stream's... cannot even be written; permuting its
    # output rows (tokens) alone is not a symmetry either
    out_rows = ChannelGroup("t", model.blocks[0].mlp_tokens.fc2.out_features,
                            tuple(rows("blocks.0.mlp_tokens.fc2")))  # fmt: skip
    assert not torch.allclose(_outputs(_permute_copy(model, [out_rows], seed=5).eval(), x), ref)


def test_token_linear_with_affine_norms_and_layer_scales():
    model, x, groups, msgs = run("token_linear")
    assert msgs == []
    d, n = model.stem.out_channels, len(model.blocks)
    stream = [*rows("stem"), M("norm.alpha", 2, "other"), M("norm.beta", 2, "other")]
    stream += consumer("head")
    expected = {}
    for i in range(n):
        b = f"blocks.{i}"
        stream += [M(f"{b}.{p}", 2, "other") for p in ("norm1.alpha", "norm1.beta")]
        stream += [M(f"{b}.{p}", 2, "other") for p in ("norm2.alpha", "norm2.beta")]
        stream += [M(f"{b}.ls1", 0, "other"), M(f"{b}.ls2", 0, "other")]
        stream += [*consumer(f"{b}.fc1"), *rows(f"{b}.fc2")]
        expected[f"{b}.fc1"] = (2 * d, "linear", 1, [*rows(f"{b}.fc1"), *consumer(f"{b}.fc2")])
    expected["blocks (residual)"] = (d, "residual", 1, stream)
    check(groups, expected)
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    # the token Linear is applied to every channel alike: permuting its rows with its columns
    # (tokens) is not a symmetry, since the stem fixes which token is which
    t = model.blocks[0].linear_tokens.in_features
    tok = ChannelGroup("t", t, (*rows("blocks.0.linear_tokens"),
                                *consumer("blocks.0.linear_tokens")))  # fmt: skip
    assert not torch.allclose(_outputs(_permute_copy(model, [tok], seed=5).eval(), x), ref)


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("per_step_attention", expected_mha_model),
        ("per_step_lstm", lambda m, x: expected_recurrent(m, x, "ifgo")),
    ],
)
def test_heads_at_every_step_of_batch_first_layers_read_features(arch, expected):
    # nn.MultiheadAttention and LSTM with batch_first=True give (batch, time, features): a
    # Linear on that output reads features, so it is no token-mixing Linear to cut
    model, x, groups, msgs = run(arch)
    assert msgs == []
    check(groups, expected(model, x))
    assert_each_group_is_a_symmetry(model, x, groups)


def test_levit_conv_attention_and_subsampling_attention_permute_dims_in_every_head():
    model, x, groups, msgs = run("levit_conv_attention")
    assert msgs == []  # before: the walks from qkv and kv did not end
    h, kd, vd = model.heads, model.key_dim, model.val_dim

    def rows_bn(conv_norm, offset):
        return [
            M(f"{conv_norm}.linear.weight", 0, "producer", offset),
            M(f"{conv_norm}.bn.weight", 0, "norm", offset),
            M(f"{conv_norm}.bn.bias", 0, "norm", offset),
        ]

    keys, values, dkeys, dvalues = [], [], [], []
    for head in range(h):
        step = 2 * kd + vd  # one head's [q | k | v] rows
        keys += [*rows_bn("attn.qkv", head * step), *rows_bn("attn.qkv", head * step + kd)]
        values += rows_bn("attn.qkv", head * step + 2 * kd)
        values.append(M("attn.proj.ln.linear.weight", 1, "consumer", head * vd))
        step = kd + vd  # one head's [k | v] rows
        dkeys += [*rows_bn("down.kv", head * step), *rows_bn("down.q.ln", head * kd)]
        dvalues += rows_bn("down.kv", head * step + kd)
        dvalues.append(M("down.proj.ln.linear.weight", 1, "consumer", head * vd))
    d = model.stem[0].out_channels
    stream = [*rows("stem.0"), *norm("stem.1"), *consumer("attn.qkv.linear")]
    stream += [M("attn.proj.ln.linear.weight", 0, "producer"), *norm("attn.proj.ln.bn")]
    stream += [*consumer("down.kv.linear"), *consumer("down.q.ln.linear")]
    out = [M("down.proj.ln.linear.weight", 0, "producer"), *norm("down.proj.ln.bn")]
    check(
        groups,
        {
            "stem.0+attn.proj.ln.linear (residual)": (d, "residual", 1, stream),
            "attn (keys)": (kd, "attention", 1, keys),
            "attn (values)": (vd, "attention", 1, values),
            "down (keys)": (kd, "attention", 1, dkeys),
            "down (values)": (vd, "attention", 1, dvalues),
            "down.proj.ln.linear": (model.head.in_features, "conv", 1, [*out, *consumer("head")]),
        },
    )
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    # why dim i of every head: whole heads would move the per-head bias tables
    whole = ChannelGroup(
        "heads",
        h,
        (
            M("down.kv.linear.weight", 0, "producer", 0, kd + vd),
            M("down.kv.bn.weight", 0, "norm", 0, kd + vd),
            M("down.kv.bn.bias", 0, "norm", 0, kd + vd),
            M("down.q.ln.linear.weight", 0, "producer", 0, kd),
            M("down.q.ln.bn.weight", 0, "norm", 0, kd),
            M("down.q.ln.bn.bias", 0, "norm", 0, kd),
            M("down.proj.ln.linear.weight", 1, "consumer", 0, vd),
        ),
    )
    assert not torch.allclose(_outputs(_permute_copy(model, [whole], seed=5).eval(), x), ref)


def test_talking_heads_keys_and_values_permute_within_each_head():
    model, x, groups, msgs = run("talking_heads")
    assert msgs == []
    d, h = model.stem.out_channels, model.heads
    hd = d // h
    stream = [M("gamma_1", 0, "other"), M("gamma_2", 0, "other"), *rows("stem")]
    stream += [*norm("norm1"), *norm("norm2"), *consumer("attn.qkv"), *rows("attn.proj")]
    stream += [*consumer("fc1"), *rows("fc2"), *consumer("head")]
    check(
        groups,
        {
            "stem+attn.proj+fc2 (residual)": (d, "residual", 1, stream),
            "attn (keys)": (d, "attention", h, [*rows("attn.qkv"), *rows("attn.qkv", d)]),
            "attn (values)": (
                d,
                "attention",
                h,
                [*rows("attn.qkv", 2 * d), *consumer("attn.proj")],
            ),
            # the heads of the logits mixed by proj_l, read by proj_w after the softmax
            "attn.proj_l": (h, "linear", 1, [*rows("attn.proj_l"), *consumer("attn.proj_w")]),
            "fc1": (2 * d, "linear", 1, [*rows("fc1"), *consumer("fc2")]),
        },
    )
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    # keys and values permute independently: both at once, with different permutations
    keys, values = (next(g for g in groups if g.name == f"attn ({k})") for k in ("keys", "values"))
    assert torch.allclose(_outputs(_permute_copy(model, [keys, values], seed=7).eval(), x), ref)
    # whole heads of q, k, v and proj's columns are no symmetry: proj_l and proj_w mix heads
    qkv = [m for g, _ in enumerate("qkv") for m in rows("attn.qkv", g * d, hd)]
    heads = ChannelGroup("heads", h, (*qkv, *consumer("attn.proj", repeat=hd)))
    assert not torch.allclose(_outputs(_permute_copy(model, [heads], seed=5).eval(), x), ref)


def test_one_slope_prelu_between_linears_on_tokens_is_element_wise():
    model, x, groups, msgs = run("shared_slope_mlp")
    assert msgs == []
    check(
        groups,
        {
            "a": (8, "linear", 1, [*rows("a"), *consumer("b")]),
            "b": (6, "linear", 1, [*rows("b"), *consumer("head")]),
        },
    )
    assert_each_group_is_a_symmetry(model, x, groups)
