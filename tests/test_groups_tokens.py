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
