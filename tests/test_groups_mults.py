"""find_groups on per-head norms and channel products (branch ``mults``, issue 13): the
patterns of tests/archs.py's ``mults`` section, each with the groups expected from its
definition and the naive-loop permutation check of every group returned."""

from __future__ import annotations

import pytest
import torch

from test_groups import (
    _outputs,
    _permute_copy,
    assert_each_group_is_a_symmetry,
    check,
    consumer,
    norm,
)
from test_groups_archs import rows, run
from widthwise import ChannelGroup

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
