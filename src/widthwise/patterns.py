"""IS / DS verdicts on a channel group's weight-norm-variance series.

The channel Matthew effect paper (Chen, Bu & Yan, NeurIPS 2024) describes three stages of the
variance of normalised channel norms: (1) it dips after initialisation, (2) it rises sharply,
(3) it keeps rising or holds high -- the *IS* pattern, the layer is wide enough -- or it falls
after a peak and settles low -- the *DS* pattern, the layer would gain from more width. The paper
gives no numeric criterion; this module defines one (docs/verdicts.md explains and measures it):

* time is the fraction of training elapsed, ``u = (step - first) / (last - first)``, so steps,
  epochs or shifted step counters give the same verdict;
* the series is smoothed by a running median over a window of training *time* (not of points),
  so uneven snapshot spacing does not bias it;
* every decision uses ratios of levels of the series, so multiplying it by a constant changes
  nothing;
* the deciding number is the share of the stage-2 rise still *retained* at the end,
  ``(final - base) / (peak - base)`` with ``base`` the stage-1 low before the peak: DS gives
  most of its rise back, IS keeps it.

>>> import numpy as np
>>> t = np.linspace(0, 1, 200)
>>> rise = 1 - np.exp(-t / 0.08)
>>> classify(0.2 + rise).label                                  # rises and holds
'IS'
>>> classify(0.2 + rise * np.exp(-np.clip(t - 0.25, 0, None) / 0.1)).label   # falls back
'DS'
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["Verdict", "classify", "stable_from", "synthetic_series"]

Label = Literal["IS", "DS", "undetermined"]

# --- thresholds (each documented in docs/verdicts.md, calibrated on real MNIST-1D runs) ---------

#: Fewer snapshots than this cannot show three stages (dip, rise, plateau or fall, with at least
#: two points for the final level): the verdict is "undetermined".
MIN_POINTS = 8

#: Running-median window, as a fraction of training time. Real stage-2 spikes (SGD on a width-8
#: layer) last 2-3 % of training, so a wider window would erase the peak that defines DS.
SMOOTH_WINDOW = 0.02

#: The smoothing window always spans at least this many average snapshot spacings, so short
#: series are still smoothed (about three points on an even grid).
SMOOTH_MIN_SPACINGS = 2.0

#: Smoothing widens (where needed) until the median of a window pins a level to about this
#: relative precision: a window holds at least (relative noise / PEAK_PRECISION)^2 points, capped
#: at 1/8 of the series. Without it the maximum of a noisy curve overstates the peak.
PEAK_PRECISION = 0.03

#: Residuals around a 3-point running median understate the noise; this factor (measured on
#: Gaussian noise, 5000 points: a third of the residuals are exactly 0) corrects it.
NOISE_MEDIAN3_CORRECTION = 2.07

#: A smoothing window never holds more than this many points per side (beyond what the noise
#: needs): where snapshots are dense it is narrower in time, and the cost stays linear in n.
MAX_WINDOW_POINTS = 10

#: The final level is the median of the raw values over this last fraction of training.
FINAL_WINDOW = 0.10

#: The final slope is the Theil-Sen slope over this last fraction of training.
TAIL_WINDOW = 0.25

#: DS when less than this share of the stage-2 rise is retained at the end. Real runs: narrow
#: DS layers retain 0-0.51, wide IS layers 0.73-1 (docs/verdicts.md); 0.6 splits them.
DS_MAX_RETAINED = 0.6

#: "Not yet saturated": after a peak, the tail still falls faster than this, in units of the final
#: level per whole training length (1.0 = would lose 10 % of its level over the next 10 % of
#: training). Settled real DS tails fall at 0.3-0.4.
NOT_SATURATED_SLOPE = 1.0

#: "Too noisy": the stage-2 rise (peak - base, from smoothed values) is smaller than this many
#: noise standard deviations at the peak level (relative noise x peak). Pure 5 % noise around a
#: flat line gives about 2-3; real runs give hundreds.
MIN_RISE_SNR = 4.0

#: "No stage-2 rise": the rise from the dip to the peak is less than this share of the peak. On
#: smooth curves the noise estimate is tiny, so the signal-to-noise test alone would let a wiggle
#: of 0.1 % count as a rise (BatchNorm'd ResNet layers whose variance only decays from init).
MIN_RISE_FRACTION = 0.05

#: Confidence softness: a retained share this far from DS_MAX_RETAINED gives confidence ~0.68
#: (one standard deviation of a normal), twice as far ~0.95, on a noise-free series.
CONFIDENCE_SCALE = 0.1

#: Early verdicts (``final=False``) on a series still rising at its end predict IS (most curves
#: that are still rising end IS), but only with at most this confidence.
EARLY_RISING_CONFIDENCE = 0.3


@dataclass(frozen=True)
class Verdict:
    """The IS / DS verdict on one variance series, with the evidence behind it.

    ``confidence`` is 0 for "no evidence either way" and 1 for "far from every threshold"; it is a
    heuristic score, not a calibrated probability. Positions (``stage1_end``, ``stage2_end``,
    ``peak_at``) are in the units of the ``steps`` given to :func:`classify`. ``final_slope`` is the
    change over the last quarter of training relative to the final level, per whole training
    length (``-0.5`` = falling by 5 % of its level per 10 % of training).
    """

    label: Label
    confidence: float
    reason: str | None = None
    stage1_end: float | None = None
    stage2_end: float | None = None
    peak: float | None = None
    peak_at: float | None = None
    final_level: float | None = None
    final_to_peak: float | None = None
    final_slope: float | None = None
    retained: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready: floats, strings, None)."""
        return asdict(self)


def _undetermined(reason: str, **evidence: Any) -> Verdict:
    return Verdict("undetermined", 0.0, reason, evidence=evidence)


def _as_series(values: Any, steps: Any) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(
            f"values must be a 1-D series, got shape {v.shape}; pass one group's series"
        )
    if steps is None:
        s = np.arange(v.size, dtype=np.float64)
    else:
        s = np.asarray(steps, dtype=np.float64)
        if s.shape != v.shape:
            raise ValueError(
                f"steps has shape {s.shape} but values has {v.shape}; give one step per value"
            )
        if not np.all(np.isfinite(s)):
            raise ValueError("steps contain NaN or infinity; give finite step (or epoch) numbers")
        if s.size > 1 and np.any(np.diff(s) <= 0):
            raise ValueError(
                "steps must be strictly increasing; sort the series and drop duplicate steps"
            )
    return s, v


def _running_median(u: np.ndarray, v: np.ndarray, half: float, k: int = 1) -> np.ndarray:
    """Median of the values within ``half`` training time of each point (vectorised).

    Where snapshots are sparse, a point's window widens to reach ``k // 2`` neighbours per side.
    """
    n = v.size
    i = np.arange(n)
    m = k // 2
    reach = np.maximum(u - u[np.maximum(i - m, 0)], u[np.minimum(i + m, n - 1)] - u)
    # Near the ends the window shrinks to stay symmetric (a one-sided window would bias the
    # level there), but never below one neighbour per side.
    edge = np.minimum(u - u[0], u[-1] - u)
    near = np.maximum(u - u[np.maximum(i - 1, 0)], u[np.minimum(i + 1, n - 1)] - u)
    h = np.minimum(np.maximum(half, reach), np.maximum(edge, near))
    lo = np.searchsorted(u, u - h * (1 + 1e-9), side="left")
    hi = np.searchsorted(u, u + h * (1 + 1e-9), side="right")
    # Bound the work where snapshots are dense: at most MAX_WINDOW_POINTS per side (or k // 2).
    cap = max(MAX_WINDOW_POINTS, m)
    lo = np.maximum(lo, i - cap)
    hi = np.minimum(hi, i + cap + 1)
    count = hi - lo
    idx = lo[:, None] + np.arange(int(count.max()))[None, :]
    win = np.where(idx < hi[:, None], v[np.minimum(idx, n - 1)], np.inf)
    win.sort(axis=1)
    return 0.5 * (win[i, (count - 1) // 2] + win[i, count // 2])


def _theil_sen(u: np.ndarray, v: np.ndarray, max_points: int = 48) -> float:
    """Theil-Sen slope: the median of pairwise slopes, equal to ``scipy.stats.theilslopes``'s
    (tests/test_verdicts_label.py checks it). Kept by hand because scipy's also computes a
    confidence interval: 2.0 ms against 0.24 ms per call at 48 points (measured on the 2-core
    machine), and ``stable_from`` calls it up to 200 times per group."""
    if u.size > max_points:  # evenly thinned: the median of ~1100 pairwise slopes is plenty
        keep = np.linspace(0, u.size - 1, max_points).round().astype(int)
        u, v = u[keep], v[keep]
    i, j = np.triu_indices(u.size, k=1)
    return float(np.median((v[j] - v[i]) / (u[j] - u[i])))


def classify(values: Any, steps: Any = None, *, final: bool = True) -> Verdict:
    """Classify one group's variance series as IS, DS or undetermined.

    Args:
        values: the variance series (any length; per step or per epoch).
        steps: when each value was recorded (strictly increasing; uneven spacing is fine).
            Defaults to ``0, 1, 2, ...``. Only relative positions matter.
        final: ``True`` when the series covers the whole training run. ``False`` treats it as the
            first part of a run and *predicts* the end-of-training label: a series still falling
            steeply then reads DS, one still rising reads IS with low confidence.

    Returns:
        A :class:`Verdict`.

    >>> v = classify([5, 4, 2, 2, 2, 6, 9, 10, 10.2, 10.1, 10.3, 10.2])
    >>> v.label, v.stage1_end, v.stage2_end, v.retained
    ('IS', 2.0, 7.0, 1.0)
    >>> classify([1.0, 2.0, 3.0]).reason
    'too few snapshots (3 < 8)'
    """
    s, v = _as_series(values, steps)
    if v.size < MIN_POINTS:
        return _undetermined(f"too few snapshots ({v.size} < {MIN_POINTS})")
    if not np.all(np.isfinite(v)):
        bad = int(np.count_nonzero(~np.isfinite(v)))
        return _undetermined(f"non-finite values ({bad} of {v.size} snapshots)")
    if np.any(v < 0):
        raise ValueError("a variance series cannot be negative; pass the weight-norm variance")
    if np.max(v) == 0:
        return _undetermined("too noisy: the series is identically zero")

    u = (s - s[0]) / (s[-1] - s[0])
    n = v.size
    # Relative noise first (scale-free: residuals around a 3-point median, over its level), then
    # a window holding enough points to pin the peak to PEAK_PRECISION.
    pre = _running_median(u, v, 0.0, 3)
    ok = pre > 0
    rel_noise = 1.4826 * NOISE_MEDIAN3_CORRECTION * float(np.median(np.abs(v[ok] / pre[ok] - 1)))
    k = int(min(max(3, math.ceil((rel_noise / PEAK_PRECISION) ** 2)), max(3, n // 8)))
    half = max(SMOOTH_WINDOW, SMOOTH_MIN_SPACINGS / (n - 1)) / 2
    sm = _running_median(u, v, half, k)
    # Absolute noise at the peak (multiplicative noise is largest there; conservative).
    noise = rel_noise * float(np.max(sm))

    # The peak is the top of the largest rise above the running minimum, not the global maximum:
    # a group whose variance starts higher than anything training reaches (a residual stream,
    # say) still shows its dip and rise.
    ipk = int(np.argmax(sm - np.minimum.accumulate(sm)))
    peak = float(sm[ipk])
    ib = int(np.argmin(sm[: ipk + 1]))
    base = float(sm[ib])
    # stage2_end: the knee of the rise (Kneedle: farthest above the chord from base to peak).
    if ipk > ib:
        seg_u = (u[ib : ipk + 1] - u[ib]) / (u[ipk] - u[ib])
        seg_v = (sm[ib : ipk + 1] - base) / (peak - base)
        i2 = ib + int(np.argmax(seg_v - seg_u))
    else:
        i2 = ipk

    fin = u >= 1 - FINAL_WINDOW
    if np.count_nonzero(fin) < 2:
        fin = np.arange(n) >= n - 2
    final_level = float(np.median(v[fin]))
    tail = u >= 1 - TAIL_WINDOW
    if np.count_nonzero(tail) < 3:
        tail = np.arange(n) >= n - 3
    slope_abs = _theil_sen(u[tail], v[tail])
    final_slope = slope_abs / final_level if final_level > 0 else -math.inf * (slope_abs < 0)
    rise = peak - base
    retained = (final_level - base) / rise if rise > 0 else 1.0

    evidence = {
        "base": base,
        "noise": noise,
        "relative_noise": rel_noise,
        "smooth_points": k,
        "rise_snr": rise / noise if noise > 0 else math.inf,
        "peak_fraction": float(u[ipk]),
        "n_snapshots": n,
        "final": final,
    }

    def verdict(label: Label, confidence: float, reason: str | None) -> Verdict:
        return Verdict(
            label,
            confidence,
            reason,
            stage1_end=float(s[ib]),
            stage2_end=float(s[i2]),
            peak=peak,
            peak_at=float(s[ipk]),
            final_level=final_level,
            final_to_peak=final_level / peak,
            final_slope=float(final_slope),
            retained=float(retained),
            evidence=evidence,
        )

    if rise == 0:
        return verdict(
            "undetermined", 0.0, "no stage-2 rise: the variance never rose after its dip"
        )
    if rise < MIN_RISE_FRACTION * peak:
        return verdict(
            "undetermined",
            0.0,
            f"no clear stage-2 rise: it is {rise / peak:.1%} of the peak "
            f"(< {MIN_RISE_FRACTION:.0%})",
        )
    if rise < MIN_RISE_SNR * noise:
        return verdict(
            "undetermined",
            0.0,
            f"too noisy: the rise is {evidence['rise_snr']:.1f} noise "
            f"standard deviations (< {MIN_RISE_SNR:g})",
        )

    peaked = u[ipk] < 1 - TAIL_WINDOW
    falling = peaked and final_slope < -NOT_SATURATED_SLOPE
    # Uncertainty of `retained` from the noise of the final median, added to the fixed softness.
    se = noise / math.sqrt(np.count_nonzero(fin)) / rise
    margin = retained - DS_MAX_RETAINED
    confidence = math.erf(abs(margin) / (math.sqrt(2) * (CONFIDENCE_SCALE + se)))

    if final:
        if falling:
            return verdict(
                "undetermined",
                0.0,
                f"not yet saturated: still falling at {final_slope:+.2f} "
                f"(faster than -{NOT_SATURATED_SLOPE:g}) after the peak",
            )
        label: Label = "DS" if margin < 0 else "IS"
        return verdict(label, round(confidence, 4), None)

    # Early verdict: predict the label at the end of training.
    if falling:
        # Still falling fast: heading for DS; more certain the more is already given back.
        steep = min(1.0, -final_slope / (2 * NOT_SATURATED_SLOPE))
        conf = max(confidence if margin < 0 else 0.0, steep * (1 - max(margin, 0.0)))
        return verdict("DS", round(conf, 4), None)
    if not peaked:
        # Still rising (or at its peak): most such curves end IS, but a fall may come.
        return verdict("IS", round(EARLY_RISING_CONFIDENCE * confidence, 4), None)
    label = "DS" if margin < 0 else "IS"
    return verdict(label, round(confidence, 4), None)


#: stable_from evaluates at most this many prefixes (evenly spaced), so it stays fast on long runs.
STABLE_MAX_PREFIXES = 200


def stable_from(values: Any, steps: Any = None) -> float | None:
    """First step from which the early verdict on the series so far no longer changed.

    The early verdict (``classify(prefix, final=False)``) is computed on growing prefixes; the
    result is the end step of the first prefix whose label equals that of every later prefix and
    of the whole series. ``None`` when the whole-series early verdict is undetermined.

    >>> import numpy as np
    >>> t = np.linspace(0, 1, 100)
    >>> v = 0.1 + (1 - np.exp(-t / 0.05)) * np.exp(-np.clip(t - 0.2, 0, None) / 0.1)
    >>> classify(v).label, stable_from(v) < 40
    ('DS', True)
    """
    s, v = _as_series(values, steps)
    n = v.size
    if n < MIN_POINTS:
        return None
    ends = np.unique(
        np.linspace(MIN_POINTS, n, min(STABLE_MAX_PREFIXES, n - MIN_POINTS + 1)).astype(int)
    )
    last = classify(v, s, final=False).label
    if last == "undetermined":
        return None
    first = int(ends[-1])
    for e in ends[::-1]:
        if classify(v[:e], s[:e], final=False).label != last:
            break
        first = int(e)
    return float(s[first - 1])


# --- synthetic series ---------------------------------------------------------------------------

SyntheticKind = Literal["IS", "DS", "unsaturated"]


def synthetic_series(
    kind: SyntheticKind,
    n: int,
    *,
    noise: float = 0.05,
    scale: float = 1.0,
    spacing: Literal["even", "uneven"] = "even",
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Random variance series shaped like real training runs, for tests and demos.

    All three kinds start at an initial level, dip (stage 1), rise sharply (stage 2, its length
    and timing drawn at random), then:

    * ``"IS"``: hold the peak or keep rising slowly, sometimes after a small overshoot
      (retaining 80-100+ % of the rise, as wide layers do in docs/verdicts.md);
    * ``"DS"``: fall back exponentially and settle (retaining 0-40 % of the rise), the fall
      finished well before the end;
    * ``"unsaturated"``: a DS-like fall still under way at the end of the series (at the end
      the fall loses at least 15 % of the current level per 10 % of training).

    ``noise`` is multiplicative log-normal noise (sigma, e.g. 0.05 = 5 %) plus occasional
    spikes; ``scale`` multiplies the whole series; ``spacing="uneven"`` draws sorted random steps
    (denser early, as with logarithmic snapshot schedules).

    >>> steps, values = synthetic_series("DS", 50, noise=0.02, rng=0)
    >>> steps.shape, values.shape, bool(values.min() > 0)
    ((50,), (50,), True)
    """
    if kind not in ("IS", "DS", "unsaturated"):
        raise ValueError(f"kind must be 'IS', 'DS' or 'unsaturated', not {kind!r}")
    if n < 2:
        raise ValueError("n must be at least 2")
    g = np.random.default_rng(rng)
    if spacing == "even":
        steps = (np.arange(n) * int(g.integers(1, 50)) + int(g.integers(0, 1000))).astype(
            np.float64
        )
    elif spacing == "uneven":
        raw = np.sort(g.uniform(0, 1, n - 2) ** g.uniform(1.0, 2.5))
        steps = np.round(np.concatenate([[0.0], raw, [1.0]]) * 10_000 * n) + 1.0
        steps = np.unique(steps)
        while steps.size < n:  # rounding collisions: top up past the end
            steps = np.append(steps, steps[-1] + 1)
    else:
        raise ValueError(f"spacing must be 'even' or 'uneven', not {spacing!r}")
    u = (steps - steps[0]) / (steps[-1] - steps[0])

    init = 1.0
    dip = init * g.uniform(0.4, 0.95)
    t1 = g.uniform(0.0, 0.08)  # end of the stage-1 dip
    rise_len = g.uniform(0.02, 0.25)  # stage-2 duration
    height = init * math.exp(g.uniform(math.log(2.0), math.log(40.0)))  # peak / init, as measured
    stage1 = init + (dip - init) * np.clip(u / max(t1, 1e-9), 0, 1)
    r = np.clip((u - t1) / rise_len, 0, None)
    rise_curve = 1 - np.exp(-3 * r)  # reaches 95 % at t1 + rise_len
    t_peak = t1 + rise_len
    after = np.clip(u - t_peak, 0, None)
    if kind == "IS":
        drift = g.uniform(-0.25, 0.6)  # slow further rise (or slight sag) over the rest of training
        overshoot = g.uniform(0, 0.15) * (g.random() < 0.4)
        shape = rise_curve * (1 + drift * after + overshoot * np.exp(-after / 0.05) * (r > 1))
    else:
        if kind == "DS":
            keep = g.uniform(0.0, 0.45)  # share of the rise left at the end
            tau = g.uniform(0.02, max(0.021, (1 - t_peak) / 5))  # settled well before the end
        else:
            keep = g.uniform(0.0, 0.3)
            # Fall time constant long enough that the end is still steep.
            tau = g.uniform(0.25, 0.6) * (1 - t_peak)
        fall = keep + (1 - keep) * np.exp(-after / tau)
        shape = rise_curve * fall
    clean = stage1 + (height - dip) * shape
    if kind == "unsaturated":
        # Guarantee the definition: relative fall rate at the end >= 1.5 per training length.
        rate = (height - dip) * (1 - keep) * np.exp(-after[-1] / tau) / tau / clean[-1]
        if rate < 1.5:
            return synthetic_series(kind, n, noise=noise, scale=scale, spacing=spacing, rng=g)
    noisy = clean * np.exp(g.normal(0, noise, n))
    spikes = g.random(n) < 0.02
    noisy[spikes] *= np.exp(np.abs(g.normal(0, 4 * noise + 0.1, int(spikes.sum()))))
    return steps, noisy * scale
