"""The SQLite run file: round trips, live reading, crash safety and refusal of bad files."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pandas as pd
import pytest

from widthwise import store as store_module
from widthwise.groups import ChannelGroup, Member
from widthwise.store import SCHEMA_VERSION, RunFileError, RunStore, open_run

GROUPS = [
    ChannelGroup("fc1", 3, (Member("fc1.weight", 0, "producer"),), layers=("fc1",), kind="linear"),
    ChannelGroup(
        "rnn.l0 (hidden)",
        2,
        (
            Member("rnn.w", 0, "producer", offset=0, gate="r"),
            Member("rnn.w", 0, "producer", 2, 1, "z"),
        ),
        kind="recurrent",
    ),
]
SERIES = [("fc1", ""), ("rnn.l0 (hidden)", ""), ("rnn.l0 (hidden)", "r"), ("rnn.l0 (hidden)", "z")]
WIDTH = {"fc1": 3, "rnn.l0 (hidden)": 2}


def fake_snapshot(rng):
    """Random statistics and norms for every series, with a NaN and a flag in the mix."""
    k = len(SERIES)
    stats = {
        "group": [g for g, _ in SERIES],
        "gate": [t for _, t in SERIES],
        "variance": rng.random(k),
        "mean": rng.random(k),
        "max": rng.random(k) + 1,
        "min": rng.random(k) / 10,
        "n_nonfinite": rng.integers(0, 2, k),
        "n_zero": rng.integers(0, 2, k),
        "flag": rng.choice(["", "zero", "nonfinite"], k).tolist(),
    }
    stats["variance"][rng.integers(k)] = np.nan
    norms = [rng.random(WIDTH[g]).astype(np.float32) for g, _ in SERIES]
    return stats, norms


def write_run(store, n, seed=0):
    rng = np.random.default_rng(seed)
    written = []
    for i in range(n):
        stats, norms = fake_snapshot(rng)
        store.append_snapshot(10 * i, i // 2, 1000.0 + i, {"loss": 1.0 / (i + 1)}, stats, norms)
        written.append((stats, norms))
    return written


def check_round_trip(run, written):
    assert run.groups == GROUPS
    hist = run.history(gates=True)
    assert len(hist) == len(written) * len(SERIES)
    for i, (stats, norms) in enumerate(written):
        rows = hist[hist.snapshot == i]
        assert list(rows.step) == [10 * i] * len(SERIES)
        assert list(rows.epoch) == [i // 2] * len(SERIES)
        assert list(zip(rows.group, rows.gate)) == SERIES
        assert list(rows.width) == [WIDTH[g] for g, _ in SERIES]
        for col in ("variance", "mean", "max", "min"):
            np.testing.assert_array_equal(rows[col].to_numpy(), stats[col])
        assert list(rows.n_zero) == list(stats["n_zero"])
        assert list(rows.flag) == stats["flag"]
        for (g, gate), v in zip(SERIES, norms):
            steps, arr = run.channel_norms(g, gate)
            np.testing.assert_array_equal(arr[i], v)
            assert steps[i] == 10 * i
    whole = run.history()
    assert set(whole.gate) == {""} and len(whole) == 2 * len(written)
    m = run.metrics()
    assert list(m.name) == ["loss"] * len(written)
    np.testing.assert_allclose(m.value, [1.0 / (i + 1) for i in range(len(written))])


def test_file_round_trip(tmp_path):
    path = tmp_path / "run.wwrun"
    store = RunStore.create(path, GROUPS, meta={"model": {"class": "Net"}, "lr": 0.1})
    written = write_run(store, 4)
    check_round_trip(store.run, written)
    store.close()
    with open_run(path) as run:
        check_round_trip(run, written)
        assert run.meta["lr"] == 0.1 and run.meta["model"] == {"class": "Net"}
        assert len(run) == 4


def test_a_closed_run_is_one_file_and_reading_it_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / "run.wwrun"
    store = RunStore.create(path, GROUPS)
    write_run(store, 2)
    store.close()
    for _ in range(2):
        with open_run(path) as run:
            assert len(run) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.wwrun"]
    # appending later switches back to WAL for the writing phase, and closing ends it again
    store = RunStore.create(path, GROUPS, append=True)
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    write_run(store, 1, seed=3)
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.wwrun"]
    with open_run(path) as run:
        assert len(run) == 3


def test_memory_store_uses_the_same_code(tmp_path):
    store = RunStore.memory(GROUPS)
    written = write_run(store, 3)
    check_round_trip(store.run, written)
    assert store.path is None and not list(tmp_path.iterdir())


def test_history_columns_and_dtypes_on_empty_run():
    run = RunStore.memory(GROUPS).run
    h = run.history()
    assert list(h.columns)[:8] == [
        "snapshot", "step", "epoch", "wall_time", "group", "gate", "width", "variance"
    ]  # fmt: skip
    assert h.empty and run.channel_norms("fc1")[1].shape == (0, 3)
    with pytest.raises(KeyError, match="did you mean 'fc1'"):
        run.channel_norms("fc2")


def test_reader_sees_snapshots_while_writer_is_active(tmp_path):
    path = tmp_path / "live.wwrun"
    store = RunStore.create(path, GROUPS)
    write_run(store, 1)
    reader = open_run(path)
    assert len(reader) == 1
    write_run(store, 2, seed=1)  # appended while the reader stays open
    assert len(reader) == 3 and reader.history().snapshot.max() == 2
    reader.close()
    store.close()


def test_truncate_drops_later_snapshots_and_metrics(tmp_path):
    store = RunStore.create(tmp_path / "t.wwrun", GROUPS)
    write_run(store, 5)
    store.log_metrics(45, 2, {"acc": 0.5})
    store.truncate(3, n_metrics=3)
    h = store.run.history()
    assert sorted(set(h.snapshot)) == [0, 1, 2]
    assert store.run.channel_norms("fc1")[1].shape == (3, 3)
    assert list(store.run.metrics().step) == [0, 10, 20]
    write_run(store, 1)
    assert sorted(set(store.run.history().snapshot)) == [0, 1, 2, 3]


def test_append_reopens_same_groups_only(tmp_path):
    path = tmp_path / "a.wwrun"
    write_run(RunStore.create(path, GROUPS), 2)
    with pytest.raises(RunFileError, match="already exists"):
        RunStore.create(path, GROUPS)
    store = RunStore.create(path, GROUPS, append=True)
    write_run(store, 1)
    assert len(store.run) == 3
    other = [GROUPS[0], ChannelGroup("fc2", 4, (Member("fc2.weight", 0, "producer"),))]
    with pytest.raises(RunFileError, match="different channel groups"):
        RunStore.create(path, other, append=True)


def test_nan_and_inf_statistics_survive(tmp_path):
    store = RunStore.memory(GROUPS)
    stats, norms = fake_snapshot(np.random.default_rng(0))
    stats["mean"][:] = [np.inf, np.nan, -np.inf, 1.0]
    norms[0][1] = np.nan
    store.append_snapshot(0, None, 0.0, None, stats, norms)
    h = store.run.history(gates=True)
    assert math.isinf(h["mean"][0]) and math.isnan(h["mean"][1]) and h["mean"][2] < 0
    assert h.epoch.isna().all()
    assert math.isnan(store.run.channel_norms("fc1")[1][0, 1])


def test_statistics_as_a_dataframe_read_back_value_for_value():
    # append_snapshot takes the statistics a column at a time: a DataFrame (and NumPy scalars
    # of other widths) must store the same values as the dict of lists it was made from
    rng = np.random.default_rng(3)
    stats, norms = fake_snapshot(rng)
    stats["min"] = [np.float32(v) for v in stats["min"]]
    stats["n_zero"] = [float(v) for v in stats["n_zero"]]
    a, b = RunStore.memory(GROUPS), RunStore.memory(GROUPS)
    a.append_snapshot(0, None, 0.0, None, stats, norms)
    b.append_snapshot(0, None, 0.0, None, pd.DataFrame(stats), norms)
    ha, hb = a.run.history(gates=True), b.run.history(gates=True)
    pd.testing.assert_frame_equal(ha, hb)
    for col in ("variance", "mean", "max", "min"):
        expected = [float(v) for v in stats[col]]  # NaN stays NaN (stored as NULL)
        np.testing.assert_array_equal(ha[col].to_numpy(), expected)
    assert list(ha.n_zero) == [int(v) for v in stats["n_zero"]]


def test_a_statistics_column_shorter_than_the_series_writes_nothing():
    store = RunStore.memory(GROUPS)
    stats, norms = fake_snapshot(np.random.default_rng(4))
    stats["variance"] = stats["variance"][:2]
    with pytest.raises(IndexError):
        store.append_snapshot(0, None, 0.0, None, stats, norms)
    assert store.n_snapshots == 0 and len(store.run.history(gates=True)) == 0


# ---------------------------------------------------------------------------------------------
# files that are not (readable) run files


def test_missing_file(tmp_path):
    with pytest.raises(RunFileError, match="no such run file"):
        open_run(tmp_path / "nope.wwrun")
    assert not (tmp_path / "nope.wwrun").exists()


def test_text_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not a database\n" * 100)
    with pytest.raises(RunFileError, match="not a readable widthwise run file"):
        open_run(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wwrun"
    path.touch()
    with pytest.raises(RunFileError, match="empty file"):
        open_run(path)


def test_other_sqlite_database(tmp_path):
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE people (name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(RunFileError, match="SQLite database of another program"):
        open_run(path)
    with pytest.raises(RunFileError):
        RunStore.create(path, GROUPS, append=True)


def test_newer_schema(tmp_path):
    path = tmp_path / "future.wwrun"
    RunStore.create(path, GROUPS).close()
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(RunFileError, match=r"newer widthwise .*upgrade"):
        open_run(path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "bad.wwrun"
    store = RunStore.create(path, GROUPS)
    write_run(store, 30)
    store.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 8192
    rng = np.random.default_rng(0)
    data[100:] = rng.integers(0, 256, len(data) - 100, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(RunFileError, match=str(path.name)):
        run = open_run(path)
        run.history()


# ---------------------------------------------------------------------------------------------
# a writer killed with SIGKILL leaves every completed snapshot readable

WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    from test_store import GROUPS, fake_snapshot
    from widthwise.store import RunStore
    store = RunStore.create({path!r}, GROUPS)
    rng = np.random.default_rng(0)
    i = 0
    while True:
        stats, norms = fake_snapshot(rng)
        store.append_snapshot(i, 0, float(i), {{"loss": float(i)}}, stats, norms)
        i += 1
        print(i, flush=True)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_mid_run_leaves_a_readable_file(tmp_path):
    path = str(tmp_path / "killed.wwrun")
    code = WRITER.format(tests=os.path.dirname(__file__), path=path)
    src = os.path.dirname(os.path.dirname(os.path.abspath(store_module.__file__)))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )  # the child imports the widthwise under test, not another installed copy
    try:
        done = 0
        deadline = time.monotonic() + 60
        while done < 40 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            done = int(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert done >= 40, "writer did not get going"
    assert os.path.exists(path + "-wal")  # killed before a clean close
    with open_run(path) as run:
        n = len(run)
        assert n >= done  # every snapshot the writer reported as committed is there
        h = run.history(gates=True)
        counts = h.groupby("snapshot").size()
        assert (counts == len(SERIES)).all() and len(counts) == n  # no half-written snapshot
        assert list(run.snapshots().step) == list(range(n))
        pd.testing.assert_series_equal(
            run.metrics().value, pd.Series(np.arange(n, dtype=float), name="value")
        )


def test_deferred_snapshots_are_written_in_order_and_waited_for_by_every_read(tmp_path):
    path = tmp_path / "run.wwrun"
    store = RunStore.create(path, GROUPS)
    rng = np.random.default_rng(3)
    written, gate = [], threading.Event()
    for i in range(5):
        stats, norms = fake_snapshot(rng)
        written.append((stats, norms))

        def job(i=i, stats=stats, norms=norms):
            if i == 0:
                gate.wait(5)  # the writer is busy: nothing has been written yet
            store.append_snapshot(10 * i, i // 2, 1000.0 + i, {"loss": 1.0 / (i + 1)}, stats, norms)

        store.defer(job)
    threading.Timer(0.2, gate.set).start()
    t = time.perf_counter()
    with open_run(path) as early:  # another connection, same process: waits for the writer
        assert len(early) == 5 and time.perf_counter() - t < 4
    check_round_trip(store.run, written)  # in the order deferred, with every value
    stats, norms = fake_snapshot(rng)
    store.defer(lambda: store.append_snapshot(50, 2, 1005.0, None, stats, norms))
    store.close()  # writes what is pending
    with open_run(path) as run:
        assert len(run) == 6 and run.snapshots().step.tolist()[-1] == 50
    with pytest.raises(RunFileError, match="closed"):
        store.defer(lambda: None)


# ---------------------------------------------------------------------------------------------
# snapshots committed as their reductions (schema 3's pending rows)


def _tiny_plan():
    import torch
    from torch import nn

    from widthwise.norms import NormPlan

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    group = ChannelGroup(
        "0", 3, (Member("0.weight", 0, "producer"), Member("2.weight", 1, "consumer"))
    )
    return model, [group], NormPlan(model, [group])


def test_a_damaged_pending_snapshot_is_refused_by_readers_and_recorded_as_failed_by_appenders(
    tmp_path,
):
    _, groups, plan = _tiny_plan()
    path = tmp_path / "run.wwrun"
    store = RunStore.create(path, groups)
    reduced = plan.reduce().numpy()
    for i in range(3):
        store.append_pending(i, None, 1.0 + i, {"loss": float(i)}, reduced * (i + 1), plan.layout)
    store.expand_pending = lambda: []  # the writer never ran (a killed process)
    store.close()
    con = sqlite3.connect(path)
    con.execute("UPDATE pending SET reduced = x'00' WHERE snapshot = 1")
    con.commit()
    con.close()
    with open_run(path) as run:
        assert len(run) == 3  # the snapshot rows are there
        with pytest.raises(RunFileError, match=r"run.wwrun: cannot read .*wrong size"):
            run.history()
    appender = RunStore.create(path, groups, append=True)  # writes what it can
    h = appender.run.history()
    assert h.flag.tolist() == ["", "error", ""]
    assert appender.run.snapshots().error[1].startswith("ValueError")
    # the others hold the statistics of their reductions, as computed in the caller
    steps, norms = appender.run.channel_norms("0")
    assert steps.tolist() == [0, 2]  # a failed snapshot keeps no norms
    for k, i in enumerate((0, 2)):
        st = plan.stats_from(reduced * (i + 1))
        assert h.variance[i] == st.columns["variance"][0]
        np.testing.assert_array_equal(norms[k], st.norms[0])
    appender.close()


def test_a_schema_2_file_is_read_and_migrated_when_appended_to(tmp_path):
    path = tmp_path / "old.wwrun"
    store = RunStore.create(path, GROUPS)
    written = write_run(store, 4)
    store.close()
    con = sqlite3.connect(path)
    con.execute("DROP TABLE pending")
    con.execute("DROP TABLE layouts")
    con.execute("PRAGMA user_version = 2")
    con.commit()
    con.close()
    with open_run(path) as run:
        check_round_trip(run, written)
    store = RunStore.create(path, GROUPS, append=True)
    check_round_trip(store.run, written)
    store.close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    con.close()
    assert {"pending", "layouts"} <= tables


def test_a_pending_snapshot_takes_its_index_after_the_deferred_ones(tmp_path):
    _, groups, plan = _tiny_plan()
    store = RunStore.create(tmp_path / "run.wwrun", groups)
    gate = threading.Event()
    st = plan.stats()
    store.defer(lambda: (gate.wait(5), store.append_snapshot(0, None, 0.0, None, st.columns)))
    threading.Timer(0.2, gate.set).start()
    snap = store.append_pending(1, None, 1.0, None, plan.reduce().numpy(), plan.layout)
    assert snap == 1 and store.run.snapshots().step.tolist() == [0, 1]
    with pytest.raises(ValueError, match="reductions"):
        store.append_pending(2, None, 2.0, None, np.zeros(3, np.float32), plan.layout)
    store.close()
