"""``widthwise groups --timeout``: passed to find_groups, bad values are one-line errors."""

from __future__ import annotations

import warnings

import pytest
import torch

from widthwise.cli import main
from widthwise.groups import GroupingWarning, find_groups
from widthwise.groups.finder import DEFAULT_TIMEOUT
from widthwise.reproduction.zoo.mlp import MLP

KWARGS = '{"in_features": 12, "widths": [16, 8], "out_features": 3}'
ARGV = ["groups", "widthwise.reproduction.zoo.mlp:MLP", "--kwargs", KWARGS, "--input-shape", "2,12"]


def _rows(out: str) -> list[tuple[str, str, int]]:
    """(name, kind, width) of each table row, read independently of format_groups."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("-")) + 1
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        name, kind, width, *_ = line.split()
        rows.append((name, kind, int(width)))
    return rows


@pytest.mark.parametrize("value", ["abc", "0", "-3", "nan", "", "1s"])
def test_bad_timeout_is_one_line_error_exit_2(capsys, value):
    code = main([*ARGV, "--timeout", value])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("widthwise groups: error: --timeout")
    assert repr(value) in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("value", ["30", "2.5", "none", "None"])
def test_timeout_gives_the_same_groups_as_find_groups(capsys, value):
    code = main([*ARGV, "--timeout", value])
    out, err = capsys.readouterr()
    assert code == 0, err
    expected = find_groups(MLP(12, [16, 8], 3), torch.randn(2, 12), timeout=None)
    assert expected, "the reference model must have groups for this test to mean anything"
    assert _rows(out) == [(g.name, g.kind, g.width) for g in expected]


def test_a_tiny_timeout_reaches_find_groups(capsys):
    """With a timeout too short for any grouping, the groups are left out with the warning that
    names the timeout; without --timeout, the default bound finds them all."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main([*ARGV, "--timeout", "1e-9"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert _rows(out) == []
    assert "0 channel groups" in out
    messages = [str(w.message) for w in caught if issubclass(w.category, GroupingWarning)]
    assert len(messages) == 1 and "timeout=1e-09 s" in messages[0], messages

    assert main(ARGV) == 0
    expected = find_groups(MLP(12, [16, 8], 3), torch.randn(2, 12))
    assert expected and _rows(capsys.readouterr().out) == [
        (g.name, g.kind, g.width) for g in expected
    ]


def test_help_names_the_default(capsys):
    with pytest.raises(SystemExit):
        main(["groups", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--timeout SECONDS" in text
    assert f"(default {DEFAULT_TIMEOUT:g})" in text
