"""Property tests: a damaged run file either reads or raises RunFileError, nothing else.

Hypothesis overwrites bytes at random offsets of a real run file (one written by a tracker
through the README's per-epoch loop, closed, so a single file), or deletes random rows of its
tables, then runs every reader (open, len, snapshots, history, metrics, channel norms, verdicts).
Any exception other than :class:`RunFileError` fails the property; so does a read that returns
steps that do not increase.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_faults import READERS, written_run
from widthwise.store import RunFileError, open_run

TABLES = ("meta", "groups", "snapshots", "stats", "norms", "metrics")
FUZZ = settings(
    max_examples=int(os.environ.get("WIDTHWISE_FUZZ_EXAMPLES", "80")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Pristine:
    """The undamaged file's bytes (a small repr: hypothesis prints its arguments)."""

    def __init__(self, data: bytes):
        self.data = data

    def __repr__(self) -> str:
        return f"Pristine({len(self.data)} bytes)"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Pristine:
    path = written_run(tmp_path_factory.mktemp("fuzz") / "run.wwrun", n=20)
    return Pristine(path.read_bytes())


def reads_or_refuses(path: Path) -> None:
    try:
        with open_run(path) as run:
            for name, read in READERS.items():
                out = read(run)
                if name == "history" and len(out):
                    for _, g in out.groupby(["group", "gate"]):
                        assert (np.diff(g["step"].to_numpy()) > 0).all()
    except RunFileError:
        pass


@FUZZ
@given(data=st.data())
def test_bytes_overwritten_at_random_offsets(tmp_path, pristine, data):
    buf = bytearray(pristine.data)
    for _ in range(data.draw(st.integers(1, 4), label="patches")):
        at = data.draw(st.integers(0, len(buf) - 1), label="offset")
        new = data.draw(st.binary(min_size=1, max_size=64), label="bytes")
        buf[at : at + len(new)] = new[: len(buf) - at]
    path = tmp_path / "damaged.wwrun"
    path.write_bytes(bytes(buf))
    reads_or_refuses(path)


@FUZZ
@given(data=st.data())
def test_random_rows_deleted(tmp_path, pristine, data):
    path = tmp_path / "rows.wwrun"
    path.write_bytes(pristine.data)
    with sqlite3.connect(path) as con:
        delete_rows(con, data)
    con.close()
    reads_or_refuses(path)


def delete_rows(con: sqlite3.Connection, data: st.DataObject) -> None:
    for _ in range(data.draw(st.integers(1, 3), label="deletions")):
        table = data.draw(st.sampled_from(TABLES), label="table")
        n = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        if n == 0:
            continue
        k = data.draw(st.integers(1, n), label="rows")
        start = data.draw(st.integers(0, n - 1), label="start")
        # delete k rows from a random position (by the table's own order)
        con.execute(
            f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} LIMIT ? OFFSET ?)"
            if table not in ("stats", "norms")
            else f"DELETE FROM {table} WHERE (snapshot, group_idx, gate) IN "
            f"(SELECT snapshot, group_idx, gate FROM {table} LIMIT ? OFFSET ?)",
            (k, start),
        )


@pytest.fixture(scope="module")
def with_log(tmp_path_factory) -> tuple[Pristine, Pristine]:
    """A run file and its ``-wal`` as a killed writer leaves them (no checkpoint since)."""
    from test_faults import epoch_loop, mlp
    from widthwise import store as store_mod
    from widthwise.tracker import WidthTracker

    saved = store_mod.CHECKPOINT_SECONDS
    store_mod.CHECKPOINT_SECONDS = None
    try:
        path = tmp_path_factory.mktemp("wal") / "run.wwrun"
        model, groups = mlp()
        tracker = WidthTracker(model, groups=groups, store=path)
        epoch_loop(tracker, model, epochs=3)
        data, log = path.read_bytes(), Path(f"{path}-wal").read_bytes()
        tracker.close()
    finally:
        store_mod.CHECKPOINT_SECONDS = saved
    assert len(log) > 0
    return Pristine(data), Pristine(log)


@FUZZ
@given(data=st.data())
def test_the_log_of_a_killed_writer_overwritten_at_random_offsets(tmp_path, with_log, data):
    run_bytes, log = with_log
    buf = bytearray(log.data)
    at = data.draw(st.integers(0, len(buf) - 1), label="offset")
    new = data.draw(st.binary(min_size=1, max_size=64), label="bytes")
    buf[at : at + len(new)] = new[: len(buf) - at]
    path = tmp_path / "killed.wwrun"
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(run_bytes.data)
    Path(f"{path}-wal").write_bytes(bytes(buf))
    reads_or_refuses(path)
