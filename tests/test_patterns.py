"""Tests for widthwise.patterns: the IS / DS verdicts."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from widthwise.patterns import (
    DS_MAX_RETAINED,
    FINAL_WINDOW,
    MIN_POINTS,
    Verdict,
    _running_median,
    classify,
    stable_from,
    synthetic_series,
)

KINDS = {"IS": "IS", "DS": "DS", "unsaturated": "undetermined"}


def _draws(count: int, seed: int):
    """Random synthetic series across lengths, noise levels, scales and spacings."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        kind = list(KINDS)[i % 3]
        n = int(rng.integers(8, 501))
        # Real MNIST-1D curves have 0-10 % relative noise around a 3-point median.
        noise = float(rng.choice([0.0, 0.01, 0.03, 0.1]))
        scale = float(10 ** rng.uniform(-4, 3))
        spacing = str(rng.choice(["even", "uneven"]))
        steps, values = synthetic_series(
            kind, n, noise=noise, scale=scale, spacing=spacing, rng=rng
        )
        yield kind, steps, values


def test_synthetic_labels_at_least_95_percent_correct():
    draws = list(_draws(300, seed=2024))
    correct = [classify(v, s).label == KINDS[k] for k, s, v in draws]
    per_kind = {k: np.mean([c for (kk, _, _), c in zip(draws, correct) if kk == k]) for k in KINDS}
    assert np.mean(correct) >= 0.95, per_kind
    assert min(per_kind.values()) >= 0.9, per_kind


def test_synthetic_generator_honours_its_definitions():
    rng = np.random.default_rng(5)
    for kind in KINDS:
        steps, values = synthetic_series(kind, 400, noise=0.0, spacing="uneven", rng=rng)
        assert steps.shape == values.shape == (400,)
        assert np.all(np.diff(steps) > 0) and np.all(values > 0)
        u = (steps - steps[0]) / (steps[-1] - steps[0])
        if kind == "unsaturated":
            # Still falling at >= 15 % of its level per 10 % of training at the very end.
            rate = -(values[-1] - values[-2]) / (u[-1] - u[-2]) / values[-1]
            assert rate >= 1.5 * 0.9


@pytest.mark.parametrize("seed", range(6))
def test_scale_invariance(seed):
    kind = ["IS", "DS", "unsaturated"][seed % 3]
    steps, values = synthetic_series(kind, 120, noise=0.05, rng=seed)
    ref = classify(values, steps)
    for c in (2.0**-20, 2.0**10):  # powers of two: exact in floating point
        got = classify(values * c, steps)
        assert got.label == ref.label and got.confidence == ref.confidence
        assert got.retained == ref.retained and got.final_slope == ref.final_slope
        assert got.peak == ref.peak * c
    for c in (1e-4, 3.7, 1e3):
        got = classify(values * c, steps)
        assert got.label == ref.label
        assert got.confidence == pytest.approx(ref.confidence, abs=1e-6)
        assert got.final_to_peak == pytest.approx(ref.final_to_peak, rel=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_time_axis_invariance(seed):
    kind = ["IS", "DS", "unsaturated"][seed % 3]
    steps, values = synthetic_series(kind, 150, noise=0.03, spacing="uneven", rng=seed)
    ref = classify(values, steps)
    for a, b in ((1 / 937.0, 0.0), (1.0, 123_456.0), (4.0, -7.0)):  # epochs, shifted counters
        got = classify(values, a * steps + b)
        assert got.label == ref.label
        assert got.confidence == pytest.approx(ref.confidence, abs=1e-9)
        assert got.retained == pytest.approx(ref.retained, rel=1e-9, abs=1e-12)
        assert got.peak_at == pytest.approx(a * ref.peak_at + b)
        assert got.stage1_end == pytest.approx(a * ref.stage1_end + b)


def _naive_running_median(u, v, half):
    out = []
    for i in range(len(v)):
        window = [v[j] for j in range(len(v)) if abs(u[j] - u[i]) <= half * (1 + 1e-9)]
        out.append(float(np.median(window)))
    return np.array(out)


def test_running_median_matches_explicit_loops():
    rng = np.random.default_rng(0)
    u = np.sort(rng.uniform(0, 1, 60))
    u[0], u[-1] = 0.0, 1.0
    v = rng.normal(size=60)
    half = 0.1
    # With k=1 the only departure from a plain time window is the symmetric shrink at the ends.
    got = _running_median(u, v, half)
    inner = (u >= half) & (u <= 1 - half)
    assert np.allclose(got[inner], _naive_running_median(u, v, half)[inner])
    assert got[0] == pytest.approx(np.median(v[:2])) and got[-1] == pytest.approx(np.median(v[-2:]))


def test_evidence_matches_explicit_definitions():
    steps, values = synthetic_series("DS", 200, noise=0.0, rng=11)
    v = classify(values, steps)
    u = [(s - steps[0]) / (steps[-1] - steps[0]) for s in steps]
    tail = [values[i] for i in range(len(values)) if u[i] >= 1 - FINAL_WINDOW]
    assert v.final_level == pytest.approx(float(np.median(tail)))
    # Noise-free: a running median clips a sharp peak only slightly.
    assert v.peak == pytest.approx(max(values), rel=0.05)
    assert v.peak_at == pytest.approx(steps[int(np.argmax(values))], abs=3 * (steps[1] - steps[0]))
    base = min(values[: int(np.argmax(values)) + 1])
    assert v.retained == pytest.approx((v.final_level - base) / (v.peak - base), abs=0.05)
    assert v.final_to_peak == pytest.approx(v.final_level / v.peak)
    assert v.stage1_end <= v.stage2_end <= v.peak_at
    assert v.label == ("DS" if v.retained < DS_MAX_RETAINED else "IS")


def test_figure_one_shapes():
    t = np.linspace(0, 1, 300)
    dip = 1 - 0.5 * np.minimum(t / 0.05, 1)
    rise = 8 * (1 - np.exp(-np.clip(t - 0.05, 0, None) / 0.05))
    is_curve = dip + rise * (1 + 0.3 * t)
    ds_curve = dip + rise * (0.1 + 0.9 * np.exp(-np.clip(t - 0.3, 0, None) / 0.08))
    vi, vd = classify(is_curve), classify(ds_curve)
    assert (vi.label, vd.label) == ("IS", "DS")
    assert vi.confidence > 0.9 and vd.confidence > 0.9
    assert 10 <= vd.stage1_end <= 20  # dip ends at 5 % of 300 snapshots
    assert vd.stage1_end < vd.stage2_end < vd.peak_at
    assert vi.final_slope > 0 and abs(vd.final_slope) < 0.5


def test_undetermined_reasons():
    few = classify(np.arange(MIN_POINTS - 1, dtype=float) + 1)
    assert (few.label, few.confidence) == ("undetermined", 0.0) and "too few" in few.reason
    nan = classify([1, 2, 3, 4, np.nan, 5, 6, 7, 8, 9])
    assert nan.label == "undetermined" and "non-finite" in nan.reason
    flat = classify(1 + 0.05 * np.random.default_rng(0).normal(size=200))
    assert flat.label == "undetermined" and "too noisy" in flat.reason
    t = np.linspace(0, 1, 200)
    falling = 1 + 9 * np.minimum(t / 0.1, 1) * np.exp(-np.clip(t - 0.1, 0, None) / 0.5)
    v = classify(falling)
    assert v.label == "undetermined" and "not yet saturated" in v.reason
    assert v.final_slope < -1


def test_early_verdict_predicts_instead_of_waiting():
    t = np.linspace(0, 1, 200)
    falling = 1 + 9 * np.minimum(t / 0.1, 1) * np.exp(-np.clip(t - 0.1, 0, None) / 0.5)
    early = classify(falling, final=False)
    assert early.label == "DS" and early.reason is None and early.confidence > 0
    rising = classify(1 + 9 * t, final=False)
    assert rising.label == "IS" and 0 < rising.confidence <= 0.3


def test_stable_from_is_where_prefix_verdicts_stop_changing():
    steps, values = synthetic_series("DS", 120, noise=0.01, rng=3)
    got = stable_from(values, steps)
    labels = [classify(values[:e], steps[:e], final=False).label for e in range(MIN_POINTS, 121)]
    # Naive reference: last index where the label differs from the final one.
    last_change = max((i for i, lab in enumerate(labels) if lab != labels[-1]), default=-1)
    assert got == steps[MIN_POINTS + last_change]
    assert stable_from([1.0, 2.0]) is None


@pytest.mark.parametrize(
    ("values", "steps", "match"),
    [
        (np.ones((3, 3)), None, "1-D"),
        (np.ones(10), np.arange(9), "one step per value"),
        (np.ones(10), np.r_[np.arange(9), 3], "strictly increasing"),
        (-np.ones(10), None, "negative"),
    ],
)
def test_bad_input_one_line_errors(values, steps, match):
    with pytest.raises(ValueError, match=match) as e:
        classify(values, steps)
    assert "\n" not in str(e.value)


def test_verdict_is_frozen_and_serialisable():
    import json

    steps, values = synthetic_series("IS", 60, noise=0.02, rng=1)
    v = classify(values, steps)
    assert isinstance(v, Verdict)
    with pytest.raises(AttributeError):
        v.label = "DS"  # type: ignore[misc]
    d = json.loads(json.dumps(v.to_dict()))
    assert d["label"] == v.label and set(d) >= {"stage1_end", "stage2_end", "peak_at", "reason"}
    assert all(isinstance(x, float) for x in (v.confidence, v.peak, v.final_slope))
    assert 0.0 <= v.confidence <= 1.0 and not math.isnan(v.retained)


# --- real training -------------------------------------------------------------------------------


def _layer_variances(linears) -> list[float]:
    """The metric for each MLP hidden layer, written out with loops (independent of widthwise)."""
    out = []
    for w_in, w_out in itertools.pairwise([m.weight.detach() for m in linears]):
        norms = [float(w_in[i].norm() * w_out[:, i].norm()) for i in range(w_in.shape[0])]
        mean = sum(norms) / len(norms)
        rel = [x / mean for x in norms]
        m = sum(rel) / len(rel)
        out.append(sum((x - m) ** 2 for x in rel) / (len(rel) - 1))
    return out


@pytest.mark.slow
def test_real_mlp():
    """A wide then a narrow hidden layer on MNIST-1D: narrow reads DS, wide reads IS."""
    torch = pytest.importorskip("torch")
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    # 3000 samples: with 1500 the narrow layer is not the bottleneck and reads IS (docs/verdicts.md).
    args.num_samples = 3000
    data = make_dataset(args)
    x = torch.tensor(data["x"], dtype=torch.float32)
    y = torch.tensor(data["y"])
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only contend with pytest-xdist workers
    try:
        _train_and_check(torch, x, y)
    finally:
        torch.set_num_threads(threads)


def _train_and_check(torch, x, y):
    from widthwise import WidthTracker

    nn = torch.nn
    linears = [nn.Linear(40, 1024), nn.Linear(1024, 8), nn.Linear(8, 10)]
    model = nn.Sequential(linears[0], nn.ReLU(), linears[1], nn.ReLU(), linears[2])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    tracker = WidthTracker(model, x[:2], keep_channel_norms=False)
    tracker.snapshot(step=0)
    for step in range(1, 3001):
        idx = torch.randint(0, x.shape[0], (128,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            tracker.snapshot(step=step)
    hist = tracker.history()
    last = hist[hist.step == 3000].set_index("group").variance
    # the tracker's last snapshot equals the metric written out with loops
    np.testing.assert_allclose([last["0"], last["2"]], _layer_variances(linears), rtol=1e-4)
    series = {name: d.sort_values("step") for name, d in hist.groupby("group")}
    wide = classify(series["0"].variance.to_numpy(), series["0"].step.to_numpy())
    narrow = classify(series["2"].variance.to_numpy(), series["2"].step.to_numpy())
    assert wide.label == "IS", wide
    assert narrow.label == "DS", narrow
    assert narrow.retained < wide.retained
