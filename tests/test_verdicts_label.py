"""The user-facing ``label`` beside the paper's ``paper_label``, the evidence behind it, dead channels.

Runs are synthetic (a :class:`RunStore` in memory filled with hand-made channel norms), so every
test is fast and knows the truth it checks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import widthwise.verdicts as wv
from widthwise.evidence import (
    DEAD_RELATIVE_NORM,
    Evidence,
    group_evidence,
    relative_variance,
    relative_width,
)
from widthwise.groups import ChannelGroup, Member
from widthwise.patterns import _theil_sen, classify
from widthwise.store import RunStore
from widthwise.verdicts import (
    DEAD_MAX_FRACTION,
    FEATURES,
    P_DECIDE,
    TABLE_COLUMNS,
    UNVALIDATED_CONFIDENCE,
    decide,
    features,
    judge,
    needs_width_probability,
    verdicts,
)


def _run(
    norm_series: dict[str, np.ndarray],
    kind: str = "linear",
    meta: dict | None = None,
    loss: np.ndarray | None = None,
):
    """An in-memory run: one group per entry, ``[snapshots, width]`` channel norms each, and the
    training loss ``loss[t]`` logged at each snapshot when given."""
    groups = [
        ChannelGroup(name, arr.shape[1], (Member(f"{name}.weight", 0, "producer"),), kind=kind)
        for name, arr in norm_series.items()
    ]
    store = RunStore.memory(groups, meta)
    n = next(iter(norm_series.values())).shape[0]
    for t in range(n):
        cols: dict[str, list] = {k: [] for k in ("group", "gate", "variance", "mean", "max")}
        cols.update({"min": [], "n_nonfinite": [], "n_zero": [], "flag": []})
        vecs = []
        for name, arr in norm_series.items():
            v = arr[t]
            cols["group"].append(name)
            cols["gate"].append("")
            cols["variance"].append(relative_variance(v))
            cols["mean"].append(float(v.mean()))
            cols["max"].append(float(v.max()))
            cols["min"].append(float(v.min()))
            cols["n_nonfinite"].append(0)
            cols["n_zero"].append(int((v == 0).sum()))
            cols["flag"].append("")
            vecs.append(v.astype(np.float32))
        metrics = None if loss is None else {"loss": float(loss[t])}
        store.append_snapshot(t * 10, t // 10, 0.0, metrics, cols, vecs)
    return store.run


def _matthew(width: int, n: int = 60, winners: float = 0.2, seed: int = 0) -> np.ndarray:
    """A generous layer: a few channels grow ~6x, the rest stay near their initial norm."""
    g = np.random.default_rng(seed)
    init = 1 + 0.05 * g.standard_normal(width)
    t = np.linspace(0, 1, n)[:, None]
    gain = np.where(g.random(width) < winners, 6.0, 1.1)
    return init * (1 + (gain - 1) * (1 - np.exp(-t / 0.15)))


def _alike(width: int, n: int = 60, seed: int = 1) -> np.ndarray:
    """A bottleneck: every channel grows about alike (variance stays near its initial level)."""
    g = np.random.default_rng(seed)
    init = 1 + 0.05 * g.standard_normal(width)
    t = np.linspace(0, 1, n)[:, None]
    gain = 3 + 0.1 * g.standard_normal(width)
    return init * (1 + (gain - 1) * (1 - np.exp(-t / 0.15)))


def test_table_keeps_every_column_and_adds_the_paper_verdict():
    run = _run({"wide": _matthew(64), "narrow": _alike(6)})
    j = judge(run)
    assert list(j.table.columns) == TABLE_COLUMNS
    assert {"paper_label", "paper_confidence"} <= set(j.table.columns)
    hist = run.history()
    for r in j.table.itertuples():
        sub = hist[hist.group == r.group].sort_values("step")
        paper = classify(sub.variance.to_numpy(), sub.step.to_numpy())
        assert r.paper_label == paper.label  # the paper's verdict, exactly as classify gives it
        assert r.paper_confidence == pytest.approx(paper.confidence)
        assert r.suggestion == {"DS": "widen", "IS": "narrow", "undetermined": "keep"}[r.label]
    assert set(j.evidence) == {"wide", "narrow"}


def test_fitted_weights_read_clear_cases_right():
    # The fitted weights' main direction (docs/validity.md): in a run whose training loss fell to
    # 1 % of its start, a layer with a clear Matthew effect reads IS; in a run whose loss only
    # fell to 80 %, a layer whose channels all grew alike reads DS.
    t = np.linspace(0, 1, 60)
    good_loss = 2.3 * (0.01 + 0.99 * np.exp(-t / 0.1))
    fitted = _run({"wide": _matthew(256)}, loss=good_loss)
    under = _run({"narrow": _alike(6)}, loss=2.3 * (0.8 + 0.2 * np.exp(-t / 0.1)))
    jf, ju = judge(fitted), judge(under)
    assert jf.table.iloc[0].label == "IS"
    assert ju.table.iloc[0].label == "DS" and ju.table.iloc[0].suggestion == "widen"
    naive_loss = np.median(good_loss[-6:]) / np.median(good_loss[:6])
    assert jf.evidence["wide"].loss_ratio == pytest.approx(naive_loss, rel=1e-5)
    # the level ratio and the growth dispersion are the naive ones
    arr = _matthew(256)
    naive = np.median([relative_variance(r) for r in arr[-6:]]) / relative_variance(arr[0])
    assert jf.evidence["wide"].level_ratio == pytest.approx(naive, rel=1e-4)
    growth = np.median(arr[-6:], axis=0) / arr[0]
    assert jf.evidence["wide"].growth_dispersion == pytest.approx(
        np.var(growth / growth.mean(), ddof=1), rel=1e-4
    )


def _set_weights(monkeypatch, coef: list[float], intercept: float) -> None:
    """Known weights; the no-loss weights are the same without the last (loss) feature."""
    monkeypatch.setattr(wv, "COEF", tuple(coef))
    monkeypatch.setattr(wv, "INTERCEPT", intercept)
    monkeypatch.setattr(wv, "COEF_NO_LOSS", tuple(coef[:-1]))
    monkeypatch.setattr(wv, "INTERCEPT_NO_LOSS", intercept)


def test_label_and_confidence_follow_a_naive_logistic(monkeypatch):
    coef = [-0.7, 0.2, -0.3, -1.1, 0.9, -0.4, 0.35, -0.6, -2.0, 0.8]
    _set_weights(monkeypatch, coef, 0.5)
    paper = classify(np.r_[np.linspace(1, 0.5, 5), np.linspace(0.5, 3, 10), np.full(20, 3.0)])
    for disp, rel in ((0.001, 0.25), (0.02, 1.0), (0.1, 4.0), (1.0, 0.5), (5.0, 2.0)):
        e = Evidence(16, 0, 0.0, 0.01, 0.05, 5.0, 2.0, True, disp, 0.1, 0.3, rel)
        x = [math.log(disp), math.log(0.05), math.log(5.0), math.log(2.0), 0.0, 1.0]
        x += [math.log(16), math.log(rel), 0.0, math.log(0.3)]  # not in a residual branch
        p = 1 / (1 + math.exp(-(0.5 + sum(c * v for c, v in zip(coef, x)))))
        assert needs_width_probability("IS", e) == pytest.approx(p)
        label, conf, reason = decide(paper, e, kind="linear")
        want = "DS" if p >= P_DECIDE else "IS" if p <= 1 - P_DECIDE else "undetermined"
        assert label == want
        assert conf == pytest.approx({"DS": p, "IS": 1 - p, "undetermined": 0.0}[want], abs=1e-4)
        assert f"{p:.2f}" in reason
    assert len(features("IS", e)) == len(FEATURES) == len(wv.COEF)


def test_dead_channels_are_left_out_and_never_read_is():
    # Half the channels of a bottleneck die (norm -> 0): the variance of all channels explodes
    # (the paper's curve rises and holds: IS), but the live ones grew alike.
    arr = _alike(8, seed=3)
    t = np.linspace(0, 1, arr.shape[0])
    arr[:, :4] *= np.exp(-t / 0.05)[:, None] * (t < 0.9)[:, None]
    run = _run({"h": arr})
    row = judge(run).table.iloc[0]
    ev = judge(run).evidence["h"]
    assert ev.n_dead == 4
    assert relative_variance(arr[-1, 4:]) == pytest.approx(
        np.var(arr[-1, 4:] / arr[-1, 4:].mean(), ddof=1), rel=1e-6
    )
    assert row.label != "IS"
    assert "dead" in row.reason
    # The dead ones inflate the variance of all channels many-fold over that of the live ones.
    assert relative_variance(arr[-1]) > 20 * relative_variance(arr[-1, 4:])
    assert ev.final_variance == pytest.approx(
        np.median([relative_variance(r[4:]) for r in arr[-6:]]), rel=1e-4
    )


def test_dead_channels_cap_is_and_missing_snapshots_give_no_verdict(monkeypatch):
    _set_weights(monkeypatch, [0.0] * len(FEATURES), -5.0)  # p ~ 0.007: IS everywhere
    paper = classify(np.r_[np.linspace(1, 0.5, 5), np.linspace(0.5, 3, 10), np.full(20, 3.0)])
    e = Evidence(16, 0, 0.0, 0.01, 0.05, 5.0, 2.0, True, 0.5, 0.1)
    assert decide(paper, e)[0] == "IS"
    many = int(16 * DEAD_MAX_FRACTION) + 1
    dead = Evidence(16, many, 0.0, 0.01, 0.05, 5.0, 2.0, True, 0.5, 0.1)
    label, _, reason = decide(paper, dead)
    assert label == "undetermined" and f"{many} of 16 channels are dead" in reason
    assert decide(None, e, snapshots=0)[0] == "undetermined"
    nan_ref = Evidence(16, 0, 0.0, 0.0, 0.05, math.nan, 2.0, True, math.nan, math.nan)
    assert decide(paper, nan_ref)[0] == "undetermined"


def test_unvalidated_optimizer_or_kind_caps_confidence_and_says_so(monkeypatch):
    paper = classify(np.r_[np.linspace(1, 0.5, 5), np.linspace(0.5, 3, 10), np.full(20, 3.0)])
    e = Evidence(16, 0, 0.0, 0.01, 1.0, 100.0, 2.0, True, 1.0, 0.5)
    _set_weights(monkeypatch, [0.0] * len(FEATURES), -8.0)  # a confident verdict to cap
    _, c_ok, r_ok = decide(paper, e, kind="linear", optimizer="adamw")
    assert c_ok > UNVALIDATED_CONFIDENCE and "not validated" not in r_ok
    _, c_opt, r_opt = decide(paper, e, kind="linear", optimizer="lion")
    assert c_opt <= UNVALIDATED_CONFIDENCE and "'lion' not validated" in r_opt
    _, c_kind, r_kind = decide(paper, e, kind="attention", optimizer="sgd")
    assert c_kind <= UNVALIDATED_CONFIDENCE and "'attention' not validated" in r_kind


def test_optimizer_is_read_from_the_run_meta(monkeypatch):
    _set_weights(monkeypatch, [0.0] * len(FEATURES), -8.0)
    run = _run({"wide": _matthew(64)}, meta={"user": {"optimizer": "rmsprop"}})
    row = judge(run).table.iloc[0]
    assert row.confidence <= UNVALIDATED_CONFIDENCE and "rmsprop" in row.reason


def test_evidence_without_channel_norms_uses_the_stats():
    arr = _matthew(32)
    var = np.array([relative_variance(r) for r in arr])
    ev = group_evidence(np.arange(len(var)), var, mean=arr.mean(1), width=32)
    assert not ev.from_norms
    assert ev.level_ratio == pytest.approx(np.median(var[-6:]) / var[0])
    assert ev.growth == pytest.approx(np.median(arr.mean(1)[-6:]) / arr.mean(1)[0])


def test_dead_threshold_is_relative_to_the_median():
    norms = np.ones((10, 5))
    norms[:, 0] = DEAD_RELATIVE_NORM * 0.5  # below the threshold: dead
    norms[:, 1] = DEAD_RELATIVE_NORM * 2.0  # small but alive
    assert group_evidence(np.arange(10), np.full(10, 0.1), norms=norms).n_dead == 1


def test_theil_sen_matches_scipy():
    from scipy.stats import theilslopes

    g = np.random.default_rng(0)
    for n in (3, 10, 30, 48):
        u = np.sort(g.random(n))
        v = 2 * u + g.standard_normal(n) * 0.1
        assert _theil_sen(u, v) == pytest.approx(theilslopes(v, u).slope, rel=1e-12)


def test_frozen_channels_count_as_dead():
    # Never-firing ReLU units under plain SGD: their norms never move while the others grow.
    arr = _matthew(16, seed=5)
    arr[:, :3] = arr[0, :3]
    ev = group_evidence(np.arange(len(arr)), np.ones(len(arr)), norms=arr)
    assert ev.n_dead == 3
    # nothing moved at all (e.g. a frozen layer): no channel is singled out as dead
    still = np.repeat(arr[:1], len(arr), axis=0)
    assert group_evidence(np.arange(len(arr)), np.ones(len(arr)), norms=still).n_dead == 0


def test_loss_ratio_and_the_no_loss_fallback(monkeypatch):
    import pandas as pd

    from widthwise.evidence import loss_ratio

    steps = np.arange(40)
    vals = np.linspace(2.0, 0.5, 40)
    df = pd.DataFrame({"step": steps, "name": "loss", "value": vals})
    assert loss_ratio(df) == pytest.approx(np.median(vals[-4:]) / np.median(vals[:4]))
    assert math.isnan(loss_ratio(df.iloc[:3]))  # too few points
    assert math.isnan(loss_ratio(df.assign(name="accuracy")))
    # without a loss the probability uses the no-loss weights (here: a different intercept)
    monkeypatch.setattr(wv, "COEF", (0.0,) * len(FEATURES))
    monkeypatch.setattr(wv, "INTERCEPT", 3.0)
    monkeypatch.setattr(wv, "COEF_NO_LOSS", (0.0,) * (len(FEATURES) - 1))
    monkeypatch.setattr(wv, "INTERCEPT_NO_LOSS", -3.0)
    with_loss = Evidence(16, 0, 0.0, 0.01, 0.05, 5.0, 2.0, True, 0.5, 0.1, 0.5)
    no_loss = Evidence(16, 0, 0.0, 0.01, 0.05, 5.0, 2.0, True, 0.5, 0.1, math.nan)
    assert needs_width_probability("IS", with_loss) == pytest.approx(1 / (1 + math.exp(-3)))
    assert needs_width_probability("IS", no_loss) == pytest.approx(1 / (1 + math.exp(3)))


def test_undetermined_says_why_width_one_and_nan_weights():
    import torch

    from widthwise.tracker import WidthTracker

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 1),
        torch.nn.ReLU(),
        torch.nn.Linear(1, 6),
        torch.nn.ReLU(),
        torch.nn.Linear(6, 2),
    )
    tracker = WidthTracker(net, torch.randn(2, 4))
    with torch.no_grad():
        net[2].weight[0, 0] = float("nan")
    for step in range(6):
        tracker.snapshot(step=step)
    table = verdicts(tracker.run).set_index("group")
    assert table.loc["0", "label"] == "undetermined"
    assert table.loc["0", "reason"].startswith("width 1")
    assert table.loc["2", "label"] == "undetermined"
    assert "non-finite weights" in table.loc["2", "reason"]


def test_relative_width_is_the_width_over_the_median_hidden_width():
    run = _run({"a": _matthew(64), "b": _alike(6), "c": _matthew(32, seed=2)})
    ev = judge(run).evidence
    hidden = sorted([64, 6, 32])
    median = hidden[len(hidden) // 2]
    for name, width in (("a", 64), ("b", 6), ("c", 32)):
        assert ev[name].relative_width == pytest.approx(width / median)
    assert math.isnan(relative_width(6, []))  # no reference width


def test_recurrent_ds_reads_undetermined_and_says_why(monkeypatch):
    # The oracle confirmed DS on recurrent groups at chance: the same evidence that reads DS on a
    # linear group reads undetermined on a recurrent one; IS on a recurrent group still stands.
    paper = classify(np.r_[np.linspace(1, 0.5, 5), np.linspace(0.5, 3, 10), np.full(20, 3.0)])
    e = Evidence(16, 0, 0.0, 0.01, 0.05, 5.0, 2.0, True, 0.02, 0.1, 0.3, 1.0)
    right, total = wv.DS_AT_CHANCE["recurrent"]
    assert right / total < P_DECIDE
    for p, linear, recurrent in ((0.9, "DS", "undetermined"), (0.1, "IS", "IS")):
        _set_weights(monkeypatch, [0.0] * len(FEATURES), math.log(p / (1 - p)))
        assert decide(paper, e, kind="linear")[0] == linear
        label, conf, reason = decide(paper, e, kind="recurrent")
        assert label == recurrent
        if label == "undetermined":
            assert conf == 0.0 and f"right {right} of {total}" in reason and "0.90" in reason


def test_a_narrow_layer_outside_residual_branches_never_reads_is(monkeypatch):
    # Evidence that reads IS at confidence 0.9 on a layer of ordinary width reads undetermined on
    # a layer an eighth of the run's median width, unless it sits in a residual branch (where
    # the oracle found widening useless) or there are no peers to compare with (NaN).
    paper = classify(np.r_[np.linspace(1, 0.5, 5), np.linspace(0.5, 3, 10), np.full(20, 3.0)])
    _set_weights(monkeypatch, [0.0] * len(FEATURES), math.log(0.1 / 0.9))

    def ev(rel: float, residual: float = 0.0) -> Evidence:
        return Evidence(4, 0, 0.0, 0.01, 0.05, 5.0, 2.0, True, 0.02, 0.1, 0.3, rel, residual)

    limit = wv.NARROW_RELATIVE_WIDTH
    assert decide(paper, ev(2 * limit), kind="conv")[0] == "IS"
    label, conf, reason = decide(paper, ev(limit), kind="conv")
    assert (label, conf) == ("undetermined", 0.0) and "median hidden width" in reason
    assert decide(paper, ev(limit / 4, residual=1.0), kind="conv")[0] == "IS"
    assert decide(paper, ev(math.nan), kind="conv")[0] == "IS"
