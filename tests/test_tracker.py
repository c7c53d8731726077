"""WidthTracker: snapshots during training, reading back, resuming, failing softly."""

from __future__ import annotations

import copy
import io
import math
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import archs
import widthwise
from test_norms import cnn_bn_flatten_groups, mlp_groups, naive_norms, naive_stats
from widthwise.groups import find_groups
from widthwise.store import open_run
from widthwise.tracker import TrackerWarning, WidthTracker


def train(model, tracker, steps, *, start=0, every=1, seed=0):
    """A few SGD steps on random data, snapshotting every ``every`` steps."""
    g = torch.Generator().manual_seed(seed + start)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    n_in = next(model.parameters()).shape[1]
    for step in range(start, start + steps):
        x = torch.randn(16, n_in, generator=g)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % every == 0:
            assert tracker.snapshot(step, epoch=step // 4, metrics={"loss": loss})


def test_snapshots_record_every_group_with_naive_values():
    model, groups = mlp_groups()
    tracker = WidthTracker(model, groups=groups)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    expected = []
    for step in range(4):
        loss = model(torch.randn(8, 5)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        expected.append({g.name: naive_stats(naive_norms(model, g)) for g in groups})
        tracker.snapshot(step * 10, epoch=step, metrics={"loss": loss.item()})
    h = tracker.history()
    assert {"snapshot", "step", "epoch", "group", "width", "variance", "mean", "max"} <= set(h)
    assert list(h.step) == [0, 0, 10, 10, 20, 20, 30, 30]
    assert list(h.group) == ["0", "2"] * 4
    for row in h.itertuples():
        ref = expected[row.snapshot][row.group]
        np.testing.assert_allclose(row.variance, ref["variance"], rtol=1e-6)
        np.testing.assert_allclose(row.mean, ref["mean"], rtol=1e-6)
    steps, norms = tracker.channel_norms("0")
    assert list(steps) == [0, 10, 20, 30] and norms.shape == (4, 7)
    np.testing.assert_allclose(norms[-1], naive_norms(model, groups[0]), rtol=1e-6)
    m = tracker.metrics()
    assert list(m.name) == ["loss"] * 4 and list(m.step) == [0, 10, 20, 30]


def test_steps_auto_increment():
    model, groups = mlp_groups()
    tracker = WidthTracker(model, groups=groups)
    tracker.snapshot()
    tracker.snapshot()
    tracker.snapshot(step=100)
    tracker.snapshot()
    assert list(tracker.run.snapshots().step) == [0, 1, 100, 101]


def test_file_run_reads_back_like_the_tracker(tmp_path):
    model, groups = cnn_bn_flatten_groups()
    path = tmp_path / "run.wwrun"
    tracker = WidthTracker(model, groups=groups, store=path, meta={"lr": 0.05})
    model.train()
    x = torch.randn(4, 3, 3, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(3):
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        tracker.snapshot(step)
        tracker.log_metrics({"loss": loss.item()})
    with open_run(path) as run:  # while the tracker still has the file open
        assert run.groups == tracker.groups
        pd.testing.assert_frame_equal(run.history(), tracker.history())
        pd.testing.assert_frame_equal(run.history(gates=True), tracker.history(gates=True))
        pd.testing.assert_frame_equal(run.metrics(), tracker.metrics())
        np.testing.assert_array_equal(run.channel_norms("3")[1], tracker.channel_norms("3")[1])
        assert run.meta["user"] == {"lr": 0.05} and run.meta["mode"] == "product"
        assert run.meta["model"]["n_parameters"] == sum(p.numel() for p in model.parameters())


def test_keep_channel_norms_off():
    model, groups = mlp_groups()
    tracker = WidthTracker(model, groups=groups, keep_channel_norms=False)
    tracker.snapshot()
    assert len(tracker.history()) == 2
    assert tracker.channel_norms("0")[1].shape == (0, 7)


def test_snapshot_leaves_the_model_untouched():
    model, groups = mlp_groups()
    before = copy.deepcopy(model.state_dict())
    tracker = WidthTracker(model, groups=groups)
    tracker.snapshot()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.grad is None for p in model.parameters())


def test_nan_weights_are_recorded_not_raised():
    model, groups = mlp_groups()
    tracker = WidthTracker(model, groups=groups)
    with torch.no_grad():
        model[0].weight.fill_(float("nan"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NaN weights are data, not a failure
        assert tracker.snapshot()
    h = tracker.history().set_index("group")
    assert h.loc["0", "n_nonfinite"] == 7 and "nonfinite" in h.loc["0", "flag"]


def test_failure_inside_snapshot_warns_once_and_is_recorded():
    model, groups = mlp_groups()
    tracker = WidthTracker(model, groups=groups)
    real = tracker.plan.reduce
    tracker.plan.reduce = lambda: 1 / 0
    with pytest.warns(TrackerWarning, match="ZeroDivisionError") as caught:
        assert tracker.snapshot(5, metrics={"loss": 1.0}) is False
        assert tracker.snapshot() is False
    assert len([w for w in caught if w.category is TrackerWarning]) == 1
    tracker.plan.reduce = real
    assert tracker.snapshot()
    h = tracker.history()
    assert list(h.step) == [5, 5, 6, 6, 7, 7]
    assert list(h.flag[:4]) == ["error"] * 4 and h.variance[:4].isna().all()
    assert h.flag[4:].tolist() == ["", ""] and tracker.n_failed == 2
    snaps = tracker.run.snapshots()
    assert snaps.error[0].startswith("ZeroDivisionError") and pd.isna(snaps.error[2])


def test_failing_store_does_not_raise():
    model, groups = mlp_groups()
    tracker = WidthTracker(model, groups=groups)
    tracker.store.close()
    with pytest.warns(TrackerWarning):
        assert tracker.snapshot() is False
    tracker.log_metrics({"loss": 1.0})  # silently counted after the first warning
    assert tracker.n_failed == 2


def _state_round_trip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_resume_file_run_drops_snapshots_after_checkpoint(tmp_path):
    path = tmp_path / "resume.wwrun"
    model, groups = mlp_groups()
    tracker = WidthTracker(model, groups=groups, store=path)
    train(model, tracker, 6)
    tracker.log_metrics({"acc": 0.5}, step=5)
    ckpt = {"model": copy.deepcopy(model.state_dict()), "tracker": tracker.state_dict()}
    train(model, tracker, 3, start=6)  # work lost in the crash
    reference = tracker.history()[lambda d: d.snapshot < 6]
    del tracker  # the process dies without closing anything

    ckpt = _state_round_trip(ckpt)
    model2, _ = mlp_groups()
    model2.load_state_dict(ckpt["model"])
    resumed = WidthTracker(model2, groups=groups, store=path)
    resumed.load_state_dict(ckpt["tracker"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(model2, resumed, 4, start=6)
    h = resumed.history()
    assert list(h.drop_duplicates("snapshot").step) == list(range(10))
    assert not h.duplicated(["step", "group"]).any()
    pd.testing.assert_frame_equal(h[h.snapshot < 6], reference)
    with open_run(path) as run:
        assert len(run) == 10
        m = run.metrics()
        assert list(m.step[m.name == "loss"]) == list(range(10))
        assert list(m.step[m.name == "acc"]) == [5]


def test_resume_memory_run_carries_the_record():
    model, groups = mlp_groups()
    tracker = WidthTracker(model, groups=groups)
    train(model, tracker, 3)
    state = _state_round_trip(tracker.state_dict())
    train(model, tracker, 2, start=3)
    resumed = WidthTracker(model, groups=groups)
    resumed.load_state_dict(state)
    resumed.snapshot()
    assert list(resumed.run.snapshots().step) == [0, 1, 2, 3]


def test_reopening_a_file_without_resuming_warns(tmp_path):
    path = tmp_path / "again.wwrun"
    model, groups = mlp_groups()
    WidthTracker(model, groups=groups, store=path).snapshot()
    again = WidthTracker(model, groups=groups, store=path)
    with pytest.warns(TrackerWarning, match="load_state_dict"):
        again.snapshot()
    assert list(again.run.snapshots().step) == [0, 1]


def test_bad_state_dict_is_a_clear_error():
    model, groups = mlp_groups()
    tracker = WidthTracker(model, groups=groups)
    with pytest.raises(ValueError, match="state_dict"):
        tracker.load_state_dict({"model": 1})


def test_groups_from_example_inputs():
    model, x = archs.resnet_small()
    expected = find_groups(model, x)
    tracker = WidthTracker(model, x)
    assert tracker.groups == expected
    tracker.snapshot()
    h = tracker.history()
    assert list(h.group) == [g.name for g in expected]
    for row, g in zip(h.itertuples(), expected):
        ref = naive_stats(naive_norms(model, g))
        np.testing.assert_allclose(row.variance, ref["variance"], rtol=1e-6)


def test_needs_inputs_or_groups():
    with pytest.raises(ValueError, match="example_inputs"):
        WidthTracker(nn.Linear(2, 2))


def test_compiled_model_names_match_the_plain_model():
    model, groups = mlp_groups()
    compiled = torch.compile(model)  # only wraps; never run, so nothing is compiled
    assert any(n.startswith("_orig_mod.") for n, _ in compiled.named_parameters())
    a = WidthTracker(compiled, groups=groups)
    b = WidthTracker(model, groups=groups)
    a.snapshot()
    b.snapshot()
    pd.testing.assert_frame_equal(
        a.history().drop(columns="wall_time"), b.history().drop(columns="wall_time")
    )


def test_report_is_wired(monkeypatch):
    import widthwise.report

    model, groups = mlp_groups()
    tracker = WidthTracker(model, groups=groups)
    seen = {}

    def fake_from_run(run, **kw):
        seen.update(run=run, kw=kw)
        return "report"

    monkeypatch.setattr(widthwise.report.Report, "from_run", staticmethod(fake_from_run))
    assert tracker.report(name="x") == "report"
    assert seen["run"] is tracker.run and seen["kw"] == {"name": "x"}


def test_snapshot_value_for_non_numeric_metric_is_kept_as_null():
    model, groups = mlp_groups()
    tracker = WidthTracker(model, groups=groups)
    assert tracker.snapshot(metrics={"note": "warmup", "lr": torch.tensor(0.1)})
    m = tracker.metrics().set_index("name")
    assert math.isnan(m.loc["note", "value"])
    np.testing.assert_allclose(m.loc["lr", "value"], 0.1)


# ---------------------------------------------------------------------------------------------
# the writer thread (background=True, the default): the same record as writing in the caller


def _records(tracker):
    h = tracker.history(gates=True)
    norms = [tracker.channel_norms(g.name)[1] for g in tracker.groups]
    return h.drop(columns="wall_time"), norms, tracker.metrics().drop(columns="wall_time")


def test_background_and_caller_writes_record_the_same_numbers():
    model, x = archs.gru_model()  # gated groups: per-gate series too
    groups = find_groups(model, x)
    bg = WidthTracker(model, groups=groups)
    fg = WidthTracker(model, groups=groups, background=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(6):
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert bg.snapshot(step, metrics={"loss": loss})
        assert fg.snapshot(step, metrics={"loss": loss})
    (hb, nb, mb), (hf, nf, mf) = _records(bg), _records(fg)
    pd.testing.assert_frame_equal(hb, hf)
    pd.testing.assert_frame_equal(mb, mf)
    for a, b in zip(nb, nf):
        np.testing.assert_array_equal(a, b)
    # and both equal the naive loop on the final weights
    last = hb[hb.snapshot == 5]
    for g in groups:
        ref = naive_stats(naive_norms(model, g))
        row = last[(last.group == g.name) & (last.gate == "")].iloc[0]
        np.testing.assert_allclose(row.variance, ref["variance"], rtol=1e-6)


def test_every_pending_snapshot_is_in_the_file_after_close_and_seen_by_readers(tmp_path):
    model, groups = mlp_groups()
    path = tmp_path / "run.wwrun"
    tracker = WidthTracker(model, groups=groups, store=path, background=True)
    other = WidthTracker(model, groups=groups, store=path, background=True)  # same file
    expected = []
    for step in range(40):
        with torch.no_grad():
            model[0].weight.mul_(1.01)
        expected.append(naive_stats(naive_norms(model, groups[0]))["variance"])
        assert tracker.snapshot(step)
    assert other.snapshot(100)
    assert (
        tracker.background
        and not WidthTracker(model, groups=groups, store=tmp_path / "x").background
    )
    with open_run(path) as run:  # same process: both trackers' pending writes land first
        assert len(run) == 41
    other.close()
    tracker.close()
    with open_run(path) as run:
        h = run.history()
    got = h[h.group == groups[0].name].variance.to_numpy()[:40]
    np.testing.assert_allclose(got, expected, rtol=1e-6)  # each snapshot has its own weights


def test_a_metric_tensor_is_recorded_with_its_value_at_the_snapshot():
    model, groups = mlp_groups()
    tracker = WidthTracker(model, groups=groups)
    running = torch.tensor(1.0)
    for step in range(3):
        tracker.snapshot(step, metrics={"acc": running})
        running += 1.0  # changed in place before the writer thread runs
    m = tracker.metrics()
    assert m.value.tolist() == [1.0, 2.0, 3.0]


def test_a_failure_on_the_writer_thread_is_recorded_and_warned_at_the_next_call():
    model, groups = mlp_groups()
    tracker = WidthTracker(model, groups=groups)
    real = tracker.plan.stats_from

    def broken(reduced):
        raise ZeroDivisionError("in the writer")

    tracker.plan.stats_from = broken
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is warned from the writer thread itself
        assert tracker.snapshot(0)  # taken; its write fails later
        tracker.store.flush()
    with pytest.warns(TrackerWarning, match="ZeroDivisionError: in the writer"):
        tracker.plan.stats_from = real
        assert tracker.snapshot(1)
    h = tracker.history()
    assert h.flag.tolist()[: len(groups)] == ["error"] * len(groups)
    assert tracker.run.snapshots().error[0].startswith("ZeroDivisionError")
    assert h.flag.tolist()[len(groups) :] == [""] * len(groups) and tracker.n_failed == 1


def test_a_process_that_ends_without_close_still_writes_every_pending_snapshot(tmp_path):
    path = tmp_path / "run.wwrun"
    script = textwrap.dedent(
        f"""
        import torch
        from torch import nn
        from widthwise.groups import ChannelGroup, Member
        from widthwise.tracker import WidthTracker
        m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        g = ChannelGroup("0", 4, (Member("0.weight", 0, "producer"),
                                  Member("2.weight", 1, "consumer")))
        t = WidthTracker(m, groups=[g], store={str(path)!r}, background=True)
        for i in range(50):
            t.snapshot(i)
        """
    )
    src = str(Path(widthwise.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    with open_run(path) as run:
        assert run.snapshots().step.tolist() == list(range(50))


# ---------------------------------------------------------------------------------------------
# a run file's snapshot is committed as its reductions; the statistics rows follow on the writer


def _same_records(a, b):
    """Statistics (every gate), norms and metrics of two runs, value for value (not wall time)."""
    ha, hb = a.history(gates=True), b.history(gates=True)
    pd.testing.assert_frame_equal(
        ha.drop(columns="wall_time"), hb.drop(columns="wall_time"), check_exact=True
    )
    for g in a.groups:
        for gate in ("", *g.gates):
            sa, na = a.channel_norms(g.name, gate)
            sb, nb = b.channel_norms(g.name, gate)
            np.testing.assert_array_equal(sa, sb)
            np.testing.assert_array_equal(na.view(np.int32), nb.view(np.int32))  # 0 ULP
    pd.testing.assert_frame_equal(
        a.metrics().drop(columns="wall_time"), b.metrics().drop(columns="wall_time")
    )


def test_snapshots_not_yet_expanded_read_the_same_as_statistics_written_in_the_caller(tmp_path):
    import sqlite3
    import threading

    model, x = archs.gru_model()  # per-gate series too
    groups = find_groups(model, x)
    path = tmp_path / "run.wwrun"
    tracker = WidthTracker(model, groups=groups, store=path)  # file: the caller commits reductions
    ref = WidthTracker(model, groups=groups, background=False)  # statistics in the caller
    assert not tracker.background
    gate = threading.Event()
    expand = tracker.store.expand_pending
    tracker.store.expand_pending = lambda: (gate.wait(20), expand())[1]  # the writer is stuck
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TrackerWarning)  # the swapped module below
        for step in range(6):
            with torch.no_grad():
                model.embed.weight.mul_(1.1)
                model.rnn.weight_hh_l0[:8].mul_(0.8)  # one gate only
                if step == 0:  # a replaced module: flagged model_changed (before anything
                    model.head = nn.Linear(8, 3)  # is pending: the swap waits for the writer)
                if step == 3:
                    model.embed.weight[0].zero_()  # a zero channel: flags and counts
            for t in (tracker, ref):
                assert t.snapshot(step % 4, epoch=step // 4, metrics={"loss": 0.5 * step})
        # a consistent copy of the file while nothing is expanded: another process's view
        copy_path = tmp_path / "copy.wwrun"
        with sqlite3.connect(path) as src, sqlite3.connect(copy_path) as dst:
            src.backup(dst)
        with sqlite3.connect(copy_path) as con:
            assert con.execute("SELECT count(*) FROM pending").fetchone()[0] == 6
            assert con.execute("SELECT count(*) FROM stats").fetchone()[0] == 0
        with open_run(copy_path) as early:  # computes the pending statistics in memory
            _same_records(early, ref.run)
            assert "model_changed" in ",".join(early.history().flag)
            assert early.snapshots().step.tolist() == ref.run.snapshots().step.tolist()
        gate.set()
        tracker.flush()  # the writer replaces the pending rows by statistics rows
        with sqlite3.connect(path) as con:
            assert con.execute("SELECT count(*) FROM pending").fetchone()[0] == 0
        _same_records(tracker.run, ref.run)
    tracker.close()
    with open_run(path) as run:
        _same_records(run, ref.run)
    # and the numbers are the paper's, not only self-consistent
    last = ref.history().query("snapshot == 5")
    for g in groups:
        want = naive_stats(naive_norms(model, g))["variance"]
        got = last[last.group == g.name].variance.iloc[0]
        np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize(
    "make", [archs.gru_model, archs.lstm_model, archs.resnet_small, archs.mha_model]
)
def test_a_stored_layout_gives_the_plans_statistics_bit_for_bit(make):
    from widthwise.norms import NormPlan, StatsLayout

    model, x = make()
    groups = find_groups(model, x)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")  # non-finite counts and flags
    plan = NormPlan(model, groups)
    reduced = plan.reduce().numpy()
    layout = StatsLayout.from_json(plan.layout.to_json())
    a, b = plan.stats_from(reduced), layout.stats_from(reduced)
    assert [(s.group, s.gate, s.width) for s in a.series] == [
        (s.group, s.gate, s.width) for s in b.series
    ]
    pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)
    for u, v in zip(a.norms, b.norms):
        np.testing.assert_array_equal(u.view(np.int32), v.view(np.int32))
    with pytest.raises(ValueError, match="layout"):
        StatsLayout.from_json('{"version": 99}')


def test_a_writer_that_falls_behind_never_holds_up_the_training_loop(tmp_path):
    import threading
    import time

    from widthwise.store import MAX_PENDING

    model, groups = mlp_groups()
    tracker = WidthTracker(model, groups=groups, store=tmp_path / "run.wwrun")
    gate, calls = threading.Event(), []
    expand = tracker.store.expand_pending
    tracker.store.expand_pending = lambda: (calls.append(1), gate.wait(3), expand())[-1]
    n = 2 * MAX_PENDING + 5  # more than the writer's queue holds
    expected = []
    t = time.perf_counter()
    for step in range(n):
        with torch.no_grad():
            model[0].weight.mul_(1.01)
        expected.append(naive_stats(naive_norms(model, groups[0]))["variance"])
        assert tracker.snapshot(step)
    assert time.perf_counter() - t < 2.5  # did not wait for the stuck writer (3 s a call)
    gate.set()
    h = tracker.history()  # waits for the writer
    assert len(calls) < n // 4  # the pending rows were expanded together
    got = h[h.group == groups[0].name].variance.to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    tracker.close()
