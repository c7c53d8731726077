"""Faults and bad input: what real training loops and real hands do to a run (docs/reliability.md).

Every test here is a row of the fault matrix in docs/reliability.md: the fault, what happens, and
the assertion that pins it. Reference values come from independent code (naive loops over the
weights, a hand-written step sequence, sqlite3 directly), never from the code under test.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from test_norms import naive_norms, naive_stats
from widthwise import store as store_mod
from widthwise.cli import main
from widthwise.groups import ChannelGroup, Member
from widthwise.store import RunFileError, RunStore, StepClock, open_run
from widthwise.tracker import TrackerWarning, WidthTracker
from widthwise.verdicts import verdicts


def this_widthwise() -> dict[str, str]:
    """Environment for a child process that imports this checkout's widthwise."""
    src = str(Path(store_mod.__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")


def mlp() -> tuple[nn.Sequential, list[ChannelGroup]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3))
    groups = [
        ChannelGroup(
            "0", 8, (Member("0.weight", 0, "producer"), Member("2.weight", 1, "consumer"))
        ),
        ChannelGroup(
            "2", 5, (Member("2.weight", 0, "producer"), Member("4.weight", 1, "consumer"))
        ),
    ]
    return model, groups


def sgd_step(model: nn.Module, opt: torch.optim.Optimizer, g: torch.Generator) -> float:
    loss = model(torch.randn(16, 6, generator=g)).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def epoch_loop(tracker, model, epochs=4, batches=10, every=2, start_epoch=0):
    """The README loop inside `for epoch`: `step` restarts at 0 every epoch."""
    g = torch.Generator().manual_seed(start_epoch)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for epoch in range(start_epoch, start_epoch + epochs):
        for step in range(batches):
            loss = sgd_step(model, opt, g)
            if step % every == 0:
                assert tracker.snapshot(step=step, epoch=epoch, metrics={"loss": loss})


def written_run(path: Path, n: int = 12) -> Path:
    model, groups = mlp()
    tracker = WidthTracker(model, groups=groups, store=path)
    epoch_loop(tracker, model, epochs=n // 5 + 1, batches=10, every=2)
    tracker.close()
    return path


# -- steps that repeat or go back ------------------------------------------------------------


def expected_global(pairs):
    """Independent restatement of the documented rule, for the sequences used below."""
    out, gap, offset, last_u, last_g, last_e = [], None, 0, None, None, None
    for u, e in pairs:
        if last_u is None:
            g = u
        elif u > last_u:
            g = u + offset
            if g - u == offset:
                gap = u - last_u
        else:
            restart = u < last_u or (e is not None and last_e is not None and e > last_e)
            g = last_g + (gap if restart and gap else 1)
        offset, last_u, last_g, last_e = g - u, u, g, e if e is not None else last_e
        out.append(g)
    return out


def test_steps_restarting_every_epoch_give_a_report(tmp_path):
    model, groups = mlp()
    tracker = WidthTracker(model, groups=groups, store=tmp_path / "r.wwrun")
    epoch_loop(tracker, model, epochs=4, batches=10, every=2)
    snaps = tracker.run.snapshots()
    users = [0, 2, 4, 6, 8] * 4
    assert list(snaps.user_step) == users
    assert list(snaps.step) == [10 * e + s for e in range(4) for s in (0, 2, 4, 6, 8)]
    assert list(snaps.step) == expected_global([(u, i // 5) for i, u in enumerate(users)])
    table = tracker.report().table  # raised "steps must be strictly increasing" before
    assert list(table.snapshots) == [20, 20]
    tracker.close()
    code = main(["report", str(tmp_path / "r.wwrun"), "--no-html"])
    assert code == 0


def test_a_repeated_step_in_the_same_epoch_is_placed_just_after():
    clock = StepClock()
    steps = [clock.advance(u, 0) for u in (0, 10, 20, 20, 30)]
    assert steps == [0, 10, 20, 21, 31]
    assert steps == expected_global([(u, 0) for u in (0, 10, 20, 20, 30)])


def test_steps_going_back_without_epochs_continue_the_count():
    model, groups = mlp()
    tracker = WidthTracker(model, groups=groups)
    for s in [0, 5, 10, 0, 5, 10, 3]:
        assert tracker.snapshot(s)
    assert list(tracker.run.snapshots().step) == [0, 5, 10, 15, 20, 25, 30]
    h = tracker.history()
    assert (np.diff(h[h.group == "0"].step) > 0).all()


def test_metrics_between_snapshots_land_on_the_same_scale():
    model, groups = mlp()
    tracker = WidthTracker(model, groups=groups)
    for epoch in range(3):
        for step in (0, 50, 100):
            tracker.snapshot(step, epoch)
        tracker.log_metrics({"acc": float(epoch)}, step=120, epoch=epoch)
    m = tracker.metrics()
    # epoch e's snapshots sit at 150 e + (0, 50, 100); step 120 of that epoch 20 after the last
    assert list(m.step) == [120, 270, 420]


def schema1(path: Path) -> None:
    """Rewrite a run file the way widthwise before schema 2 wrote it (steps as passed)."""
    con = sqlite3.connect(path)
    con.execute("UPDATE snapshots SET step = user_step")
    con.execute("UPDATE metrics SET step = user_step")
    con.execute("ALTER TABLE snapshots DROP COLUMN user_step")
    con.execute("ALTER TABLE metrics DROP COLUMN user_step")
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()


def test_an_old_file_with_repeated_steps_reads_and_reports(tmp_path):
    path = written_run(tmp_path / "old.wwrun")
    with open_run(path) as run:
        want = run.history(gates=True)
        want_metrics = run.metrics()
    schema1(path)
    con = sqlite3.connect(path)
    raw = [r[0] for r in con.execute("SELECT step FROM snapshots ORDER BY snapshot")]
    con.close()
    assert raw[:6] == [0, 2, 4, 6, 8, 0]  # really repeated on disk
    with open_run(path) as run:
        got = run.history(gates=True)
        assert list(got.step) == list(want.step)
        assert list(run.metrics().step) == list(want_metrics.step)
        assert len(verdicts(run)) == 2


def test_appending_to_an_old_file_migrates_it(tmp_path):
    path = written_run(tmp_path / "old.wwrun")
    schema1(path)
    model, groups = mlp()
    with pytest.warns(TrackerWarning, match="already holds snapshots"):
        tracker = WidthTracker(model, groups=groups, store=path)
        n = len(tracker.run)
        last = int(tracker.run.snapshots().step.iloc[-1])
        assert tracker.snapshot(0, epoch=99)
    steps = tracker.run.snapshots().step
    assert len(steps) == n + 1 and steps.iloc[-1] == last + 2  # the usual gap of 2
    assert (np.diff(steps) > 0).all()
    tracker.close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == store_mod.SCHEMA_VERSION
    con.close()


def test_resumed_without_load_state_dict_warns_and_still_reports(tmp_path):
    path = tmp_path / "r.wwrun"
    model, groups = mlp()
    tracker = WidthTracker(model, groups=groups, store=path)
    epoch_loop(tracker, model, epochs=2)
    tracker.close()
    tracker = WidthTracker(model, groups=groups, store=path)
    with pytest.warns(TrackerWarning, match="load_state_dict"):
        epoch_loop(tracker, model, epochs=2)  # the same epochs again: steps go back
    assert len(tracker.report().table) == 2  # raised before
    tracker.close()


def test_a_step_that_is_not_a_number_is_recorded_as_a_failure():
    model, groups = mlp()
    tracker = WidthTracker(model, groups=groups)
    with pytest.warns(TrackerWarning, match="snapshot failed"):
        assert tracker.snapshot("three") is False
    snaps = tracker.run.snapshots()
    assert len(snaps) == 1 and "ValueError" in snaps.error.iloc[0]


def test_resume_restores_the_step_clock(tmp_path):
    path = tmp_path / "r.wwrun"
    model, groups = mlp()
    tracker = WidthTracker(model, groups=groups, store=path)
    epoch_loop(tracker, model, epochs=2)
    state = tracker.state_dict()
    epoch_loop(tracker, model, epochs=1, start_epoch=2)  # lost in the crash
    tracker.close()
    tracker = WidthTracker(model, groups=groups, store=path)
    tracker.load_state_dict(state)
    epoch_loop(tracker, model, epochs=1, start_epoch=2)
    assert list(tracker.run.snapshots().step) == [
        10 * e + s for e in range(3) for s in range(0, 10, 2)
    ]
    tracker.close()


# -- the model changes under the tracker -----------------------------------------------------


def test_a_swapped_layer_is_read_from_the_model_not_the_detached_module():
    model, groups = mlp()
    tracker = WidthTracker(model, groups=groups)
    assert tracker.snapshot(0)
    torch.manual_seed(5)
    model[2] = nn.Linear(8, 5)
    with pytest.warns(TrackerWarning, match=r"module 2 .*replaced"):
        assert tracker.snapshot(1)
    h = tracker.history()
    got = h[h.snapshot == 1].set_index("group")
    for g in groups:  # the new module's weights, by a naive loop
        want = naive_stats(naive_norms(model, g))["variance"]
        assert got.loc[g.name, "variance"] == pytest.approx(want, rel=1e-5)
    assert all("model_changed" in f for f in got.flag)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        assert tracker.snapshot(2)
    assert (tracker.history().query("snapshot == 2").flag == "").all()


def test_a_swapped_layer_of_another_shape_is_a_recorded_failure_that_names_the_fix():
    model, groups = mlp()
    tracker = WidthTracker(model, groups=groups)
    model[2] = nn.Linear(8, 7)
    with pytest.warns(TrackerWarning, match="new WidthTracker"):
        assert tracker.snapshot(0) is False
    assert tracker.snapshot(1) is False  # still refused, never raised, never the old module
    snaps = tracker.run.snapshots()
    assert snaps.error.str.contains("ModelChangedError").all()


def test_a_parameter_replaced_with_another_shape_is_refused():
    model, groups = mlp()
    tracker = WidthTracker(model, groups=groups)
    model[4].weight = nn.Parameter(torch.randn(3, 9))
    with pytest.warns(TrackerWarning, match=r"4\.weight"):
        assert tracker.snapshot(0) is False


def test_a_parameter_replaced_with_the_same_shape_is_read():
    model, groups = mlp()
    tracker = WidthTracker(model, groups=groups)
    model[0].weight = nn.Parameter(torch.ones(8, 6))
    assert tracker.snapshot(0)
    _, norms = tracker.channel_norms("0")
    want = np.sqrt(6.0) * model[2].weight.detach().norm(dim=0).numpy()
    np.testing.assert_allclose(norms[0], want, rtol=1e-6)


def test_a_model_with_no_groups_warns_when_the_tracker_is_made():
    with pytest.warns(TrackerWarning, match="no channel groups"):
        WidthTracker(nn.Sequential(nn.Linear(4, 1)), torch.randn(2, 4))


def test_nan_weights_and_width_one_groups_are_flagged_in_the_run():
    model, groups = mlp()
    one = ChannelGroup("one", 1, (Member("4.weight", 0, "producer", offset=0),))
    tracker = WidthTracker(model, groups=[*groups, one])
    with torch.no_grad():
        model[0].weight[3, 0] = float("nan")
    assert tracker.snapshot(0)
    h = tracker.history().set_index("group")
    assert "nonfinite" in h.loc["0", "flag"] and h.loc["0", "n_nonfinite"] >= 1
    assert "width1" in h.loc["one", "flag"]


# -- bad files -------------------------------------------------------------------------------


def damage(path: Path, sql: str) -> None:
    con = sqlite3.connect(path)
    con.execute(sql)
    con.commit()
    con.close()


READERS = {
    "open": lambda run: None,
    "len": len,
    "snapshots": lambda run: run.snapshots(),
    "history": lambda run: run.history(gates=True),
    "metrics": lambda run: run.metrics(),
    "norms": lambda run: [run.channel_norms(g.name) for g in run.groups],
    "verdicts": verdicts,
}


def read_all(path: Path) -> None:
    with open_run(path) as run:
        for read in READERS.values():
            read(run)


@pytest.mark.parametrize(
    "sql, match",
    [
        ("DELETE FROM groups WHERE idx = 0", "groups table"),
        ("DELETE FROM groups WHERE idx = 1", "recorded with 2 channel groups"),
        ("UPDATE groups SET spec = '{not json'", "cannot read"),
        ("UPDATE groups SET spec = '{}'", "cannot read"),
        ("UPDATE meta SET value = 'nope' WHERE key = 'model'", "cannot read"),
        ("UPDATE stats SET group_idx = 7 WHERE snapshot = 1 AND group_idx = 0", "index 7"),
        ("UPDATE norms SET norms = x'0000' WHERE snapshot = 2", "wrong size"),
        ("UPDATE snapshots SET step = 'soon' WHERE snapshot = 3", "cannot read"),
        ("UPDATE stats SET variance = -1 WHERE snapshot = 0", "negative variance"),
        ("UPDATE stats SET n_zero = 'many' WHERE snapshot = 0", "cannot read"),
        ("PRAGMA user_version = 0", "damaged"),
        ("DROP TABLE norms", "missing tables"),
    ],
)
def test_a_damaged_row_is_a_run_file_error(tmp_path, sql, match):
    path = written_run(tmp_path / "r.wwrun")
    damage(path, sql)
    with pytest.raises(RunFileError, match=match):
        read_all(path)


def test_a_deleted_snapshot_row_still_reads(tmp_path):
    path = written_run(tmp_path / "r.wwrun")
    damage(path, "DELETE FROM snapshots WHERE snapshot = 4")
    with open_run(path) as run:
        assert 4 not in set(run.history().snapshot)
        read_all(path)


def test_a_directory_or_unreadable_path_is_one_line(capsys, tmp_path):
    for bad in (tmp_path, tmp_path / "missing.wwrun"):
        with pytest.raises(RunFileError):
            open_run(bad)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    model, groups = mlp()
    with pytest.raises(RunFileError, match="cannot write the run file"):
        WidthTracker(model, groups=groups, store=blocker / "run.wwrun")


# -- the run file alone holds every committed snapshot within a bounded delay ---------------

KILLED = textwrap.dedent(
    """
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    from test_faults import mlp
    from widthwise import store
    store.CHECKPOINT_SECONDS = {every!r}
    from widthwise.tracker import WidthTracker
    model, groups = mlp()
    tracker = WidthTracker(model, groups=groups, store={path!r})
    for i in range({n}):
        tracker.snapshot(i)
    print("done", flush=True)
    time.sleep(120)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_after_sigkill_the_run_file_alone_holds_every_snapshot_older_than_the_bound(tmp_path):
    path = tmp_path / "killed.wwrun"
    every, n = 0.2, 60
    code = KILLED.format(tests=os.path.dirname(__file__), path=str(path), every=every, n=n)
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=this_widthwise()
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "done"
        time.sleep(every + 1.0)  # the bound, plus room for the checkpoint on a busy machine
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    alone = tmp_path / "copy" / "alone.wwrun"
    alone.parent.mkdir()
    shutil.copyfile(path, alone)  # the run file only, not its -wal
    assert os.path.getsize(f"{path}-wal") > 0
    with open_run(alone) as run:
        assert len(run) == n


def test_close_with_a_reader_open_folds_everything_into_the_run_file(tmp_path):
    path = tmp_path / "r.wwrun"
    model, groups = mlp()
    tracker = WidthTracker(model, groups=groups, store=path)
    reader = open_run(path)
    for i in range(40):
        tracker.snapshot(i)
        assert len(reader) == i + 1
    tracker.close()
    alone = tmp_path / "alone.wwrun"
    shutil.copyfile(path, alone)
    with open_run(alone) as run:
        assert len(run) == 40
    reader.close()


def test_close_does_not_wait_forever_for_a_reader_stuck_in_a_transaction(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "CLOSE_TIMEOUT_SECONDS", 0.3)
    path = tmp_path / "r.wwrun"
    model, groups = mlp()
    tracker = WidthTracker(model, groups=groups, store=path)
    tracker.snapshot(0)
    stuck = sqlite3.connect(path, isolation_level=None)
    stuck.execute("BEGIN")
    stuck.execute("SELECT count(*) FROM snapshots").fetchone()  # holds snapshot 0's view
    for i in range(1, 20):
        tracker.snapshot(i)
    t = time.monotonic()
    with pytest.warns(RuntimeWarning, match="-wal"):
        tracker.close()
    assert time.monotonic() - t < 5
    stuck.execute("COMMIT")
    stuck.close()
    with open_run(path) as run:  # with its -wal beside it, nothing is lost
        assert len(run) == 20


def test_a_reader_in_another_thread_sees_every_commit_in_order(tmp_path):
    path = tmp_path / "r.wwrun"
    model, groups = mlp()
    tracker = WidthTracker(model, groups=groups, store=path)
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            with open_run(path) as run:
                while not stop.is_set():
                    seen.append(len(run.history()) // 2)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=read)
    t.start()
    for i in range(100):
        tracker.snapshot(i)
    stop.set()
    t.join()
    tracker.close()
    assert not errors and seen == sorted(seen)


# -- the command line: one line, non-zero exit, no traceback --------------------------------


def one_line(code: int, err: str, expect: int = 2) -> str:
    assert code == expect, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--epochs", "1", "--out", "{blocker}/sub"],
        ["kernel", "--widths", "4", "--depths", "1", "--out", "{blocker}/sub"],
        ["reproduce", "mlp", "--quick", "--out", "{blocker}/sub"],
    ],
)
def test_an_unwritable_out_is_one_line(capsys, tmp_path, argv):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    code = main([a.format(blocker=blocker) for a in argv])
    line = one_line(code, capsys.readouterr().err)
    assert "Not a directory" in line or "not a folder" in line


def test_report_of_a_run_missing_a_groups_row_is_one_line(capsys, tmp_path):
    path = written_run(tmp_path / "r.wwrun")
    damage(path, "DELETE FROM groups WHERE idx = 1")
    line = one_line(main(["report", str(path)]), capsys.readouterr().err)
    assert "damaged" in line


def test_report_of_a_run_without_groups_says_so(capsys, tmp_path):
    path = tmp_path / "empty.wwrun"
    RunStore.create(path, []).close()
    assert main(["report", str(path), "--no-html"]) == 0
    assert "no channel groups" in capsys.readouterr().out


def test_a_bug_in_a_command_is_one_line_with_exit_1(capsys, monkeypatch, tmp_path):
    import widthwise.commands.report as cmd

    def boom(args):
        raise ZeroDivisionError("inner detail")

    monkeypatch.setattr(cmd, "run", boom)
    monkeypatch.delenv("WIDTHWISE_TRACEBACK", raising=False)
    line = one_line(main(["report", str(tmp_path / "x")]), capsys.readouterr().err, expect=1)
    assert "ZeroDivisionError" in line and "WIDTHWISE_TRACEBACK" in line


def test_report_help_names_the_wwrun_suffix(capsys):
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    out = capsys.readouterr().out
    assert ".wwrun" in out and ".sqlite" not in out


# -- API -------------------------------------------------------------------------------------


def test_log_metrics_takes_metrics_first_on_the_store_too_and_the_old_order_still_works():
    _, groups = mlp()
    store = RunStore.memory(groups)
    store.log_metrics({"a": 1.0}, step=3, epoch=0)
    store.log_metrics(4, 0, {"b": 2.0})  # the order before: (step, epoch, metrics)
    m = store.run.metrics()
    assert list(m.name) == ["a", "b"] and list(m.step) == [3, 4]
    with pytest.raises(TypeError, match="mapping"):
        store.log_metrics(5, 0, 7)


def test_two_trackers_writing_one_file_neither_raises_nor_loses_a_snapshot(tmp_path):
    path = tmp_path / "shared.wwrun"
    model, groups = mlp()
    a = WidthTracker(model, groups=groups, store=path)
    b = WidthTracker(model, groups=groups, store=path)
    for i in range(5):
        assert a.snapshot(i) and b.snapshot(i)
    assert len(a.run) == 10
    assert (np.diff(a.run.snapshots().snapshot) == 1).all()
    assert (np.diff(a.run.snapshots().step) > 0).all()  # interleaved steps are renumbered
    assert len(verdicts(a.run)) == 2
    a.close()
    b.close()


def test_a_snapshot_after_close_is_counted_not_raised():
    model, groups = mlp()
    tracker = WidthTracker(model, groups=groups)
    tracker.close()
    with pytest.warns(TrackerWarning, match="snapshot failed"):
        assert tracker.snapshot(0) is False
    assert tracker.n_failed == 1


def test_python_dash_m_cli_prints_one_line(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    proc = subprocess.run(
        [sys.executable, "-m", "widthwise.cli", "demo", "--out", str(blocker / "sub")],
        capture_output=True,
        text=True,
        env=this_widthwise(),
        timeout=120,
    )
    line = one_line(proc.returncode, proc.stderr)
    assert "--out" in line


def test_metrics_that_are_not_a_dict_cost_the_metrics_not_the_snapshot():
    model, groups = mlp()
    tracker = WidthTracker(model, groups=groups)
    with pytest.warns(TrackerWarning, match="metrics"):
        assert tracker.snapshot(0, metrics="loss=3")
    assert len(tracker.history()) == 2 and tracker.n_failed == 1
    tracker.log_metrics(["not", "a", "dict"])  # counted, not raised
    assert tracker.n_failed == 2


def test_a_truncated_run_file_is_a_run_file_error_and_one_cli_line(capsys, tmp_path):
    path = written_run(tmp_path / "r.wwrun")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RunFileError):
        read_all(path)
    one_line(main(["report", str(path), "--no-html"]), capsys.readouterr().err)


def test_a_device_file_is_not_taken_for_a_missing_one():
    with pytest.raises(RunFileError, match="not a regular file"):
        open_run("/dev/null")


def test_a_run_store_for_other_groups_is_refused_when_the_tracker_is_made():
    model, groups = mlp()
    with pytest.raises(ValueError, match="other channel groups"):
        WidthTracker(model, groups=groups, store=RunStore.memory(groups[:1]))
