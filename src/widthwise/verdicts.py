"""Verdicts for a tracked run: one row per channel group, as a plain DataFrame.

:func:`verdicts` reads a run (``widthwise.open_run(path)``, ``tracker.run``, anything with the
:class:`RunLike` interface) and classifies each group's weight-norm variance series with
:func:`widthwise.patterns.classify`: ``IS`` (wide enough), ``DS`` (would gain from width) or
``undetermined``, with a confidence, the stage boundaries and a suggestion. :func:`judge` returns
the same table together with the per-gate verdicts of recurrent and attention groups and the
:class:`~widthwise.patterns.Verdict` objects, which :class:`widthwise.report.Report` views.

This module computes; it never renders. ``streamline`` and the report both take its table.

>>> import torch
>>> from widthwise.groups import ChannelGroup, Member
>>> from widthwise.tracker import WidthTracker
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> hidden = ChannelGroup("0", 8, (Member("0.weight", 0, "producer"),
...                                Member("2.weight", 1, "consumer")))
>>> tracker = WidthTracker(model, groups=[hidden])
>>> for step in range(3):
...     ok = tracker.snapshot(step)
>>> verdicts(tracker.run)[["group", "width", "label", "snapshots", "suggestion"]]
  group  width         label  snapshots suggestion
0     0      8  undetermined          3       keep
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from widthwise.groups import ChannelGroup
from widthwise.patterns import Verdict, classify, stable_from

__all__ = ["GATE_COLUMNS", "TABLE_COLUMNS", "Judged", "RunLike", "judge", "verdicts"]


class RunLike(Protocol):
    """What a verdict needs of a run: :class:`widthwise.store.Run` and ``tracker.run`` have it."""

    @property
    def groups(self) -> Sequence[ChannelGroup]: ...

    def history(self, *, gates: bool = False) -> pd.DataFrame: ...

    def metrics(self) -> pd.DataFrame: ...


SUGGESTION = {"DS": "widen", "IS": "narrow", "undetermined": "keep"}

TABLE_COLUMNS = [
    "group",
    "kind",
    "layers",
    "width",
    "label",
    "confidence",
    "stage1_end",
    "stage2_end",
    "peak",
    "peak_at",
    "final_to_peak",
    "retained",
    "stable_from",
    "suggestion",
    "snapshots",
    "reason",
]
GATE_COLUMNS = [
    "group",
    "gate",
    "label",
    "confidence",
    "peak",
    "peak_at",
    "final_to_peak",
    "suggestion",
    "reason",
]


@dataclass(frozen=True)
class Judged:
    """Everything :func:`judge` found: ``table`` (one row per group, :data:`TABLE_COLUMNS`),
    ``gates`` (one row per gate of recurrent/attention groups, :data:`GATE_COLUMNS`) and the
    :class:`~widthwise.patterns.Verdict` of each group (None when it has no snapshots)."""

    table: pd.DataFrame
    gates: pd.DataFrame
    verdicts: dict[str, Verdict | None]


def verdicts(run: RunLike) -> pd.DataFrame:
    """One row per channel group of ``run``: its verdict, confidence, stages and suggestion."""
    return judge(run).table


def judge(run: RunLike, *, history: pd.DataFrame | None = None) -> Judged:
    """Classify every group (and every gate) of ``run``.

    ``history`` is ``run.history(gates=True)`` when the caller has read it already.
    """
    if history is None:
        history = run.history(gates=True)
    rows, gate_rows = [], []
    found: dict[str, Verdict | None] = {}
    for group in run.groups:
        steps, values = _series(history, group.name, "")
        verdict = classify(values, steps) if len(values) else None
        stable = stable_from(values, steps) if len(values) else None
        found[group.name] = verdict
        rows.append(
            {
                "group": group.name,
                "kind": group.kind,
                "layers": ", ".join(group.layers),
                "width": int(group.width),
                **_verdict_fields(verdict),
                "stable_from": _opt_int(stable),
                "snapshots": len(values),
            }
        )
        for gate in _gates_of(history, group.name):
            g_steps, g_values = _series(history, group.name, gate)
            gv = classify(g_values, g_steps) if len(g_values) else None
            fields = _verdict_fields(gv)
            gate_rows.append(
                {"group": group.name, "gate": gate, **{k: fields[k] for k in GATE_COLUMNS[2:]}}
            )
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    table["width"] = table["width"].astype("int64")
    table["snapshots"] = table["snapshots"].astype("int64")
    for col in ("stage1_end", "stage2_end", "peak_at", "stable_from"):
        table[col] = table[col].astype("Int64")
    return Judged(table, pd.DataFrame(gate_rows, columns=GATE_COLUMNS), found)


def _series(history: pd.DataFrame, group: str, gate: str) -> tuple[np.ndarray, np.ndarray]:
    """Finite (step, variance) points of one group/gate, in step order."""
    if not len(history):
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    sub = history[(history["group"] == group) & (history["gate"] == gate)].sort_values("step")
    steps = sub["step"].to_numpy(dtype=np.int64)
    values = sub["variance"].to_numpy(dtype=float)
    keep = np.isfinite(values)
    return steps[keep], values[keep]


def _gates_of(history: pd.DataFrame, group: str) -> list[str]:
    if not len(history):
        return []
    gates = history.loc[(history["group"] == group) & (history["gate"] != ""), "gate"]
    return list(dict.fromkeys(gates))


def _verdict_fields(verdict: Any) -> dict[str, Any]:
    if verdict is None:
        return {
            "label": "undetermined",
            "confidence": 0.0,
            "stage1_end": None,
            "stage2_end": None,
            "peak": math.nan,
            "peak_at": None,
            "final_to_peak": math.nan,
            "retained": math.nan,
            "suggestion": SUGGESTION["undetermined"],
            "reason": "no snapshots recorded",
        }
    label = str(verdict.label)
    return {
        "label": label,
        "confidence": _opt_float(verdict.confidence),
        "stage1_end": _opt_int(verdict.stage1_end),
        "stage2_end": _opt_int(verdict.stage2_end),
        "peak": _opt_float(verdict.peak),
        "peak_at": _opt_int(verdict.peak_at),
        "final_to_peak": _opt_float(verdict.final_to_peak),
        "retained": _opt_float(getattr(verdict, "retained", None)),
        "suggestion": SUGGESTION.get(label, "keep"),
        "reason": verdict.reason,
    }


def _present(v: Any) -> bool:
    return v is not None and v is not pd.NA and not (isinstance(v, float) and math.isnan(v))


def _finite(v: Any) -> bool:
    return _present(v) and math.isfinite(float(v))


def _opt_int(v: Any) -> int | None:
    return int(v) if _finite(v) else None


def _opt_float(v: Any) -> float:
    return float(v) if _finite(v) else math.nan
