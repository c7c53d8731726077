"""Per-group evidence for the user-facing width verdict, beyond the variance curve's shape.

The paper's verdict (:func:`widthwise.patterns.classify`) reads only the *shape* of the
weight-norm-variance curve. Measured against a widen-and-retrain oracle (docs/validity.md) that
shape is right under SGD but not under AdamW, where the variance of a bottleneck layer rises and
plateaus too. What the oracle shows to separate layers that need width from layers that have
enough is the variance's *level against its own reference*: the value at the run's first
snapshot, which for a run tracked from initialisation is the null model of random weights of
exactly that shape (fan-in, fan-out, width). A generous layer develops a channel Matthew effect --
a few channels win, many stay near their initial size -- so its normalised-norm variance grows
many-fold over that reference; in a bottleneck every channel is needed and grows alike, so the
variance stays near it.

This module computes, from what a run file already records (the variance series, the per-group
mean, the zero-channel counts and, when kept, the per-channel norm vectors):

* ``level_ratio``: final variance over the reference variance (both over live channels when the
  channel norms are kept), the deciding number of :func:`widthwise.verdicts.judge`;
* ``dead``: channels that died -- zero norm, a norm that collapsed below
  :data:`DEAD_RELATIVE_NORM` of the group's median, or a norm frozen since the first snapshot while
  the others moved (a never-firing ReLU under SGD without weight decay gets no gradient at all) --
  which inflate the variance without being spare capacity the layer could use;
* ``growth``: final mean channel norm over the reference mean;
* ``loss_ratio`` (one per run, :func:`loss_ratio`): the training loss at the end over the loss at
  the start, from the logged ``loss`` metric. A run whose loss is still high is under-fitted, and
  there widening almost any layer helped in the oracle.
* ``relative_width`` (set by :func:`widthwise.verdicts.judge`): the group's width over the median
  width of the run's hidden groups (:func:`relative_width`). The loss says *whether* the run is
  short of capacity; a layer much narrower than its neighbours is *where* it is short.
* ``residual_branch`` (set by :func:`widthwise.verdicts.judge`): 1 for a group inside a residual
  branch (a network with residual streams, the group not one of them: a ResNet block's inner
  conv, a transformer block's MLP or attention). In the oracle widening such a group almost
  never helped -- the skip connection carries the signal past a narrow branch.

>>> import numpy as np
>>> steps = np.arange(10)
>>> norms = np.ones((10, 4)); norms[5:, 0] = 0.0   # channel 0 dies half-way
>>> ev = group_evidence(steps, np.full(10, 0.1), norms=norms)
>>> ev.n_dead, ev.width
(1, 4)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "DEAD_RELATIVE_NORM",
    "LOSS_METRICS",
    "Evidence",
    "group_evidence",
    "loss_ratio",
    "relative_variance",
    "relative_width",
]

#: Metric names read as the training loss (``tracker.snapshot(metrics={"loss": ...})``).
LOSS_METRICS = ("loss", "train_loss")

#: The loss ratio needs at least this many logged loss values.
MIN_LOSS_POINTS = 4

#: A channel is dead when its norm is below this fraction of the group's median channel norm at
#: the end of training (or exactly zero). A never-firing ReLU unit gets no gradient, so weight
#: decay shrinks both of its weight slices and its norm product collapses; a live channel that
#: merely lost the Matthew race keeps a norm near its initial one (>= 0.2 of the median in the
#: oracle runs of docs/validity.md).
DEAD_RELATIVE_NORM = 0.02

#: A channel whose norm changed by less than this (relative) over the whole run is frozen: it got
#: no gradient (float32 norms move by ~1e-7 from rounding alone).
FROZEN_TOLERANCE = 1e-5

#: A live channel lags when it grew less than this fraction of the group's median growth.
LAGGARD_GROWTH = 0.5

#: The final level is the median over this last fraction of training (as in patterns.py).
FINAL_WINDOW = 0.10


@dataclass(frozen=True)
class Evidence:
    """What the verdict rule reads for one group. Ratios are NaN when undefined."""

    width: int
    n_dead: int
    reference_step: float
    reference_variance: float
    final_variance: float
    level_ratio: float
    growth: float
    from_norms: bool
    growth_dispersion: float = math.nan
    laggards: float = math.nan
    loss_ratio: float = math.nan
    relative_width: float = math.nan
    residual_branch: float = 0.0

    @property
    def dead_fraction(self) -> float:
        return self.n_dead / self.width if self.width else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "dead_fraction": self.dead_fraction}


def relative_variance(norms: np.ndarray) -> float:
    """Unbiased variance of ``norms / mean(norms)``: the tracker's metric, for one vector."""
    n = np.asarray(norms, dtype=np.float64)
    if n.size < 2 or not np.all(np.isfinite(n)) or n.mean() <= 0:
        return math.nan
    return float(np.var(n / n.mean(), ddof=1))


def _final_mask(steps: np.ndarray) -> np.ndarray:
    s = np.asarray(steps, dtype=np.float64)
    if s.size < 2 or s[-1] == s[0]:
        return np.ones(s.size, dtype=bool)
    u = (s - s[0]) / (s[-1] - s[0])
    fin = u >= 1 - FINAL_WINDOW
    if np.count_nonzero(fin) < 2:
        fin = np.arange(s.size) >= s.size - 2
    return fin


def group_evidence(
    steps: Any,
    variance: Any,
    *,
    norms: np.ndarray | None = None,
    mean: Any = None,
    n_zero: Any = None,
    width: int | None = None,
) -> Evidence:
    """Evidence for one group from its recorded series.

    Args:
        steps: snapshot steps, increasing.
        variance: the group's variance series (one value per step).
        norms: ``[len(steps), width]`` per-channel norms when the run kept them (dead channels are
            then found per channel and excluded from both variances).
        mean: the per-step mean channel norm (for ``growth`` when ``norms`` is absent).
        n_zero: the per-step count of zero-norm channels (dead channels when ``norms`` is absent).
        width: the group's width (taken from ``norms`` when given).
    """
    s = np.asarray(steps, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    if s.shape != v.shape:
        raise ValueError(f"steps has shape {s.shape} but variance has {v.shape}")
    if s.size == 0:
        w = int(width or (0 if norms is None else np.asarray(norms).shape[1]))
        return Evidence(w, 0, math.nan, math.nan, math.nan, math.nan, math.nan, norms is not None)
    fin = _final_mask(s)
    if norms is not None and np.asarray(norms).shape[0] == s.size and np.asarray(norms).size:
        nm = np.asarray(norms, dtype=np.float64)
        w = nm.shape[1]
        last = np.median(nm[fin], axis=0)
        med = float(np.median(last))
        dead = (last <= DEAD_RELATIVE_NORM * med) | (last == 0)
        # Frozen: a ReLU unit that never fires gets no gradient in either weight slice, so under
        # SGD without weight decay its norm never moves; counted only when others did move.
        with np.errstate(divide="ignore", invalid="ignore"):
            change = np.abs(nm[-1] / nm[0] - 1)
        moved = np.nanmedian(change) > 100 * FROZEN_TOLERANCE if change.size else False
        if moved:
            dead |= change < FROZEN_TOLERANCE
        live = ~dead
        ref = relative_variance(nm[0, live]) if live.sum() >= 2 else math.nan
        fv = (
            float(np.median([relative_variance(row[live]) for row in nm[fin]]))
            if live.sum() >= 2
            else math.nan
        )
        m0 = float(nm[0].mean())
        growth = float(np.median(nm[fin].mean(axis=1)) / m0) if m0 > 0 else math.nan
        n_dead = int(dead.sum())
        from_norms = True
        # Per-channel growth since the reference: the Matthew effect without the spread that the
        # initialisation's shape (fan-in, fan-out) puts into the norms themselves.
        g0 = nm[0, live]
        gi = last[live] / np.where(g0 > 0, g0, np.nan)
        gi = gi[np.isfinite(gi)]
        dispersion = relative_variance(gi) if gi.size >= 2 else math.nan
        laggards = float(np.mean(gi < LAGGARD_GROWTH * np.median(gi))) if gi.size else math.nan
    else:
        w = int(width or 0)
        ok = np.isfinite(v)
        ref = float(v[0]) if ok[0] else math.nan
        fv = float(np.median(v[fin & ok])) if np.any(fin & ok) else math.nan
        growth = math.nan
        if mean is not None:
            mm = np.asarray(mean, dtype=np.float64)
            growth = float(np.median(mm[fin]) / mm[0]) if mm[0] > 0 else math.nan
        n_dead = int(np.asarray(n_zero)[-1]) if n_zero is not None and len(n_zero) else 0
        from_norms = False
        dispersion = laggards = math.nan
    ratio = fv / ref if ref > 0 and math.isfinite(fv) else math.nan
    return Evidence(
        w, n_dead, float(s[0]), ref, fv, ratio, growth, from_norms, dispersion, laggards
    )


def loss_ratio(metrics: Any) -> float:
    """Final over initial training loss (medians of the last and first 10 % of the logged values).

    ``metrics`` is ``run.metrics()`` (long format: ``step, name, value``). NaN when no loss was
    logged (fewer than :data:`MIN_LOSS_POINTS` finite positive values).
    """
    if metrics is None or not len(metrics) or "name" not in metrics:
        return math.nan
    sub = metrics[metrics["name"].isin(LOSS_METRICS)]
    if "step" in sub:
        sub = sub.sort_values("step", kind="stable")
    v = sub["value"].to_numpy(dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size < MIN_LOSS_POINTS:
        return math.nan
    k = max(1, v.size // 10)
    return float(np.median(v[-k:]) / np.median(v[:k]))


def relative_width(width: int, widths: Any) -> float:
    """``width`` over the median of ``widths`` (the run's hidden groups); NaN when undefined.

    >>> relative_width(8, [256, 8, 256])
    0.03125
    """
    w = np.asarray(list(widths), dtype=np.float64)
    w = w[np.isfinite(w) & (w > 0)]
    if not w.size or width <= 0:
        return math.nan
    return float(width / np.median(w))
