"""The run file: one SQLite database per training run.

A run file holds the model description, the channel groups, one row per snapshot (step, epoch,
wall time), the per-group statistics, optionally the per-channel norm vectors (float32 blobs) and
the user's metrics. It is written in WAL mode with one transaction per snapshot, so a process
killed at any moment leaves a readable file with every completed snapshot, and :func:`open_run`
can read it while training is still writing.

Files are marked with SQLite's ``application_id`` and carry a schema version in ``user_version``;
anything else (another database, a text file, a damaged file, a newer schema) is refused with a
:class:`RunFileError` that says what to do.

>>> from widthwise.groups import ChannelGroup, Member
>>> g = ChannelGroup("fc1", 3, (Member("fc1.weight", 0, "producer"),))
>>> store = RunStore.memory([g])
>>> stats = {"group": ["fc1"], "gate": [""], "variance": [0.5], "mean": [1.0], "max": [2.0],
...          "min": [0.1], "n_nonfinite": [0], "n_zero": [0], "flag": [""]}
>>> store.append_snapshot(10, 0, 0.0, {"loss": 2.3}, stats, [np.array([0.1, 1.0, 2.0])])
0
>>> store.run.history()[["snapshot", "step", "group", "width", "variance"]]
   snapshot  step group  width  variance
0         0    10   fc1      3       0.5
>>> store.run.channel_norms("fc1")[1].round(2)
array([[0.1, 1. , 2. ]], dtype=float32)
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from widthwise.groups import ChannelGroup
from widthwise.norms import STAT_COLUMNS

if TYPE_CHECKING:
    from widthwise.report import Report

__all__ = ["SCHEMA_VERSION", "Run", "RunFileError", "RunStore", "open_run"]

#: Version of the table layout; readers refuse files with a larger number.
SCHEMA_VERSION = 1
#: SQLite ``application_id`` of widthwise run files (ASCII "Wdth").
APPLICATION_ID = 0x57647468

HISTORY_COLUMNS = ("snapshot", "step", "epoch", "wall_time", "group", *STAT_COLUMNS[1:])

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE groups (
    idx INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, width INTEGER NOT NULL,
    spec TEXT NOT NULL);
CREATE TABLE snapshots (
    snapshot INTEGER PRIMARY KEY, step INTEGER NOT NULL, epoch INTEGER,
    wall_time REAL NOT NULL, error TEXT);
CREATE TABLE stats (
    snapshot INTEGER NOT NULL, group_idx INTEGER NOT NULL, gate TEXT NOT NULL, pos INTEGER NOT NULL,
    variance REAL, mean REAL, max REAL, min REAL, n_nonfinite INTEGER NOT NULL,
    n_zero INTEGER NOT NULL, flag TEXT NOT NULL,
    PRIMARY KEY (snapshot, group_idx, gate)) WITHOUT ROWID;
CREATE TABLE norms (
    snapshot INTEGER NOT NULL, group_idx INTEGER NOT NULL, gate TEXT NOT NULL,
    norms BLOB NOT NULL,
    PRIMARY KEY (snapshot, group_idx, gate)) WITHOUT ROWID;
CREATE TABLE metrics (
    id INTEGER PRIMARY KEY, snapshot INTEGER, step INTEGER, epoch INTEGER,
    wall_time REAL NOT NULL, name TEXT NOT NULL, value REAL);
"""


class RunFileError(RuntimeError):
    """A run file that cannot be used: missing, damaged, foreign, newer, or for another model."""


def _real(x: Any) -> float | None:
    # SQLite stores NaN as NULL anyway; do it explicitly so it reads back as NaN.
    x = float(x)
    return None if math.isnan(x) else x


def _metric_value(v: Any) -> float | None:
    try:
        return _real(v.item() if hasattr(v, "item") else v)
    except (TypeError, ValueError):
        return None


class Run:
    """Read access to a run: the groups, the statistics history, channel norms and metrics.

    Obtain one with :func:`open_run` (a file, possibly still being written) or from a
    :class:`RunStore` / :class:`~widthwise.tracker.WidthTracker` (``.run``). Every query reads the
    current contents, so a reader sees new snapshots as soon as they are committed.
    """

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock, path: str | None):
        self._conn = conn
        self._lock = lock
        self.path = path
        with self._read():
            rows = conn.execute("SELECT spec FROM groups ORDER BY idx").fetchall()
            self.groups: list[ChannelGroup] = [
                ChannelGroup.from_dict(json.loads(r[0])) for r in rows
            ]
            meta = conn.execute("SELECT key, value FROM meta").fetchall()
            self.meta: dict[str, Any] = {k: json.loads(v) for k, v in meta}
        self._index = {g.name: i for i, g in enumerate(self.groups)}

    # sqlite errors while reading become RunFileError (damaged file), everything else passes
    class _Reading:
        def __init__(self, run: Run):
            self.run = run

        def __enter__(self):
            self.run._lock.acquire()
            return self.run._conn

        def __exit__(self, typ, exc, tb):
            self.run._lock.release()
            if isinstance(exc, sqlite3.DatabaseError):
                raise RunFileError(
                    f"{self.run.path or 'run'}: cannot read the run file ({exc}); "
                    "it is damaged — open a copy or record the run again"
                ) from exc
            return False

    def _read(self) -> Run._Reading:
        return Run._Reading(self)

    def __len__(self) -> int:
        with self._read() as c:
            return int(c.execute("SELECT count(*) FROM snapshots").fetchone()[0])

    def __repr__(self) -> str:
        where = self.path or "memory"
        return f"Run({where!r}, groups={len(self.groups)}, snapshots={len(self)})"

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (only for runs from :func:`open_run`; a store's view stays open)."""
        if getattr(self, "_owns", False):
            self._conn.close()

    def _group_index(self, group: str) -> int:
        if group not in self._index:
            close = difflib.get_close_matches(group, list(self._index), n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise KeyError(f"no channel group {group!r} in this run{hint}")
        return self._index[group]

    def snapshots(self) -> pd.DataFrame:
        """One row per snapshot: ``snapshot, step, epoch, wall_time, error``."""
        with self._read() as c:
            rows = c.execute(
                "SELECT snapshot, step, epoch, wall_time, error FROM snapshots ORDER BY snapshot"
            ).fetchall()
        df = pd.DataFrame(rows, columns=["snapshot", "step", "epoch", "wall_time", "error"])
        return df.astype(
            {"snapshot": "int64", "step": "int64", "epoch": "Int64", "wall_time": "float64"}
        )

    def history(self, *, gates: bool = False) -> pd.DataFrame:
        """The statistics, one row per snapshot and group: ``HISTORY_COLUMNS``.

        Args:
            gates: also return the per-gate rows of gated groups (``gate`` set); by default only
                whole-group rows (``gate == ""``), so each (snapshot, group) appears once.
        """
        where = "" if gates else "WHERE st.gate = ''"
        with self._read() as c:
            rows = c.execute(
                "SELECT s.snapshot, s.step, s.epoch, s.wall_time, st.group_idx, st.gate, "
                "st.variance, st.mean, st.max, st.min, st.n_nonfinite, st.n_zero, st.flag "
                "FROM stats st JOIN snapshots s ON s.snapshot = st.snapshot "
                f"{where} ORDER BY st.snapshot, st.pos"
            ).fetchall()
        cols = ["snapshot", "step", "epoch", "wall_time", "group_idx", "gate", "variance"]
        cols += ["mean", "max", "min", "n_nonfinite", "n_zero", "flag"]
        df = pd.DataFrame(rows, columns=cols)
        idx = df.pop("group_idx").to_numpy(dtype=np.int64)
        df.insert(4, "group", [self.groups[i].name for i in idx])
        df.insert(6, "width", np.array([self.groups[i].width for i in idx], dtype=np.int64))
        df = df.astype(
            {
                "snapshot": "int64",
                "step": "int64",
                "epoch": "Int64",
                "wall_time": "float64",
                "variance": "float64",
                "mean": "float64",
                "max": "float64",
                "min": "float64",
                "n_nonfinite": "int64",
                "n_zero": "int64",
            }
        )
        return df[list(HISTORY_COLUMNS)]

    def channel_norms(self, group: str, gate: str = "") -> tuple[np.ndarray, np.ndarray]:
        """Per-channel norms of one group over the snapshots that kept them.

        Returns:
            ``(steps, norms)``: int64 array ``[n]`` and float32 array ``[n, width]``.
        """
        gi = self._group_index(group)
        width = self.groups[gi].width
        with self._read() as c:
            rows = c.execute(
                "SELECT s.step, n.norms FROM norms n JOIN snapshots s ON s.snapshot = n.snapshot "
                "WHERE n.group_idx = ? AND n.gate = ? ORDER BY n.snapshot",
                (gi, gate),
            ).fetchall()
        steps = np.array([r[0] for r in rows], dtype=np.int64)
        norms = np.zeros((len(rows), width), dtype=np.float32)
        for i, (_, blob) in enumerate(rows):
            norms[i] = np.frombuffer(blob, dtype="<f4")
        return steps, norms

    def metrics(self) -> pd.DataFrame:
        """User metrics, long format: ``step, epoch, wall_time, name, value``."""
        with self._read() as c:
            rows = c.execute(
                "SELECT step, epoch, wall_time, name, value FROM metrics ORDER BY id"
            ).fetchall()
        df = pd.DataFrame(rows, columns=["step", "epoch", "wall_time", "name", "value"])
        return df.astype(
            {"step": "Int64", "epoch": "Int64", "wall_time": "float64", "value": "float64"}
        )

    def report(self, *, name: str | None = None) -> Report:
        """A :class:`widthwise.report.Report` of this run (``Report.from_run``).

        A convenience for users: the one place where a lower layer reaches up to the view, so
        the import happens here, at call time (see docs/design.md).
        """
        from widthwise.report import Report

        return Report.from_run(self, name=name)


def _check(conn: sqlite3.Connection, path: str) -> None:
    """Raise RunFileError unless ``conn`` is a widthwise run file this version can read."""
    try:
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as e:
        kind = "not an SQLite database" if "not a database" in str(e) else str(e)
        raise RunFileError(
            f"{path} is not a readable widthwise run file ({kind}); pass the file a "
            "WidthTracker wrote"
        ) from e
    if app != APPLICATION_ID:
        what = "an empty file" if not tables else "an SQLite database of another program"
        raise RunFileError(
            f"{path} is {what}, not a widthwise run file; pass the file a WidthTracker wrote"
        )
    if version > SCHEMA_VERSION:
        raise RunFileError(
            f"{path} was written by a newer widthwise (run-file schema {version}; this version "
            f"reads up to {SCHEMA_VERSION}); upgrade widthwise to read it"
        )
    missing = {"meta", "groups", "snapshots", "stats", "norms", "metrics"} - tables
    if missing:
        raise RunFileError(
            f"{path} is a damaged widthwise run file (missing tables: {', '.join(sorted(missing))})"
        )


def _connect(path: str, *, readonly: bool) -> sqlite3.Connection:
    uri = Path(path).absolute().as_uri() + ("?mode=ro" if readonly else "?mode=rw")
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def open_run(path: str | os.PathLike) -> Run:
    """Open a run file for reading, also while a training process is still writing it.

    Raises:
        RunFileError: the file is missing, damaged, not a run file, or from a newer widthwise.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise RunFileError(f"{path}: no such run file")
    try:
        conn = _connect(path, readonly=True)
        conn.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError:
        # a read-only handle cannot recover a WAL left by a killed writer; a read-write one can
        conn = _connect(path, readonly=False)
    try:
        _check(conn, path)
        run = Run(conn, threading.RLock(), path)
    except BaseException:
        conn.close()
        raise
    run._owns = True
    return run


class RunStore:
    """Writer of a run: one transaction per snapshot.

    Create with :meth:`create` (a file) or :meth:`memory` (an in-memory database, same code).
    Thread-safe; ``run`` is a :class:`Run` view over the same database.
    """

    def __init__(self, conn: sqlite3.Connection, path: str | None):
        self._conn = conn
        self.path = path
        self._lock = threading.RLock()
        self.run = Run(conn, self._lock, path)
        self._index = {g.name: i for i, g in enumerate(self.run.groups)}

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        groups: Sequence[ChannelGroup],
        meta: Mapping[str, Any] | None = None,
        *,
        append: bool = False,
    ) -> RunStore:
        """Create a run file, or with ``append=True`` reopen an existing one for the same groups.

        Raises:
            RunFileError: the file exists (and ``append`` is false), is not a run file, or was
                recorded with different channel groups.
        """
        path = os.fspath(path)
        if os.path.exists(path) and os.path.getsize(path) > 0:
            if not append:
                raise RunFileError(f"{path} already exists; choose a new path for a new run")
            conn = _connect(path, readonly=False)
            try:
                _check(conn, path)
                _same_groups(conn, groups, path)
            except BaseException:
                conn.close()
                raise
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            return cls(conn, path)
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        conn.execute("PRAGMA journal_mode = WAL")
        # WAL + NORMAL: a commit survives a killed process (not a power cut) without an fsync
        conn.execute("PRAGMA synchronous = NORMAL")
        _initialise(conn, groups, meta)
        return cls(conn, path)

    @classmethod
    def memory(
        cls, groups: Sequence[ChannelGroup], meta: Mapping[str, Any] | None = None
    ) -> RunStore:
        """An in-memory run (nothing written to disk)."""
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        _initialise(conn, groups, meta)
        return cls(conn, None)

    # -- writing -------------------------------------------------------------------------------
    def _transaction(self):
        store = self

        class _Tx:
            def __enter__(self):
                store._lock.acquire()
                store._conn.execute("BEGIN IMMEDIATE")
                return store._conn

            def __exit__(self, typ, exc, tb):
                try:
                    store._conn.execute("ROLLBACK" if typ else "COMMIT")
                finally:
                    store._lock.release()
                return False

        return _Tx()

    def append_snapshot(
        self,
        step: int,
        epoch: int | None,
        wall_time: float,
        metrics: Mapping[str, Any] | None,
        stats: Mapping[str, Sequence],
        channel_norms: Sequence[np.ndarray] | None = None,
        *,
        error: str | None = None,
    ) -> int:
        """Record one snapshot in one transaction; returns its index.

        Args:
            stats: columns ``group, gate, variance, mean, max, min, n_nonfinite, n_zero, flag``
                (a dict of sequences, ``GroupStats.columns`` or a DataFrame), one row per series.
            channel_norms: per-channel norms, one array per row of ``stats`` (or ``None``).
            error: why the statistics are missing, for a snapshot that failed.
        """
        groups, gates = list(stats["group"]), list(stats["gate"])
        idx = [self._index[g] for g in groups]
        rows = [
            (
                g,
                gate,
                pos,
                _real(stats["variance"][pos]),
                _real(stats["mean"][pos]),
                _real(stats["max"][pos]),
                _real(stats["min"][pos]),
                int(stats["n_nonfinite"][pos]),
                int(stats["n_zero"][pos]),
                str(stats["flag"][pos]),
            )
            for pos, (g, gate) in enumerate(zip(idx, gates))
        ]
        with self._transaction() as c:
            snap = c.execute("SELECT coalesce(max(snapshot) + 1, 0) FROM snapshots").fetchone()[0]
            c.execute(
                "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?)",
                (snap, int(step), None if epoch is None else int(epoch), float(wall_time), error),
            )
            c.executemany(f"INSERT INTO stats VALUES ({snap}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            if channel_norms is not None:
                c.executemany(
                    f"INSERT INTO norms VALUES ({snap}, ?, ?, ?)",
                    [
                        (g, gate, np.asarray(v, dtype="<f4").tobytes())
                        for g, gate, v in zip(idx, gates, channel_norms)
                    ],
                )
            self._insert_metrics(c, snap, step, epoch, wall_time, metrics)
        return snap

    @staticmethod
    def _insert_metrics(c, snap, step, epoch, wall_time, metrics) -> None:
        if not metrics:
            return
        c.executemany(
            "INSERT INTO metrics (snapshot, step, epoch, wall_time, name, value) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    snap,
                    None if step is None else int(step),
                    None if epoch is None else int(epoch),
                    float(wall_time),
                    str(k),
                    _metric_value(v),
                )
                for k, v in metrics.items()
            ],
        )

    def log_metrics(
        self,
        step: int | None,
        epoch: int | None,
        metrics: Mapping[str, Any],
        wall_time: float | None = None,
    ) -> None:
        """Record user metrics (loss, accuracy, ...) outside a snapshot."""
        wall = time.time() if wall_time is None else wall_time
        with self._transaction() as c:
            self._insert_metrics(c, None, step, epoch, wall, metrics)

    def truncate(self, n_snapshots: int, n_metrics: int | None = None) -> None:
        """Keep the first ``n_snapshots`` snapshots (and metric rows up to id ``n_metrics``);
        drop the rest. Used when training resumes from a checkpoint."""
        with self._transaction() as c:
            for table in ("snapshots", "stats", "norms"):
                c.execute(f"DELETE FROM {table} WHERE snapshot >= ?", (int(n_snapshots),))
            if n_metrics is None:
                c.execute("DELETE FROM metrics WHERE snapshot >= ?", (int(n_snapshots),))
            else:
                c.execute("DELETE FROM metrics WHERE id > ?", (int(n_metrics),))

    # -- state ---------------------------------------------------------------------------------
    @property
    def n_snapshots(self) -> int:
        return len(self.run)

    @property
    def n_metrics(self) -> int:
        """Id of the last metric row (0 when none)."""
        with self._lock:
            return int(self._conn.execute("SELECT coalesce(max(id), 0) FROM metrics").fetchone()[0])

    @property
    def last_step(self) -> int | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT step FROM snapshots ORDER BY snapshot DESC LIMIT 1"
            ).fetchone()
        return None if row is None else int(row[0])

    def serialize(self) -> bytes:
        """The whole database as bytes (for checkpointing an in-memory run)."""
        with self._lock:
            return self._conn.serialize()

    def restore(self, data: bytes) -> None:
        """Replace the database with :meth:`serialize` output."""
        with self._lock:
            self._conn.deserialize(data)
            _check(self._conn, self.path or "checkpointed run")

    def close(self) -> None:
        """Close the file. A finished run goes back to a single file (no ``-wal``/``-shm``).

        WAL mode is for the writing phase (readers while training runs). Left in WAL mode, every
        later read-only open would leave ``-wal``/``-shm`` files beside the run, which a reader
        cannot clean up; switching back fails harmlessly while another process still reads.
        """
        with self._lock:
            if self.path is not None:
                # a reader holding the file makes this fail: the file then stays in WAL mode
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA journal_mode = DELETE")
            self._conn.close()


def _initialise(
    conn: sqlite3.Connection, groups: Sequence[ChannelGroup], meta: Mapping[str, Any] | None
) -> None:
    from widthwise._version import __version__

    names = [g.name for g in groups]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"channel group names must be unique; repeated: {sorted(dup)}")
    info = {"widthwise_version": __version__, "created": time.time(), **(meta or {})}
    conn.execute("BEGIN")
    for stmt in _SCHEMA.strip().split(";"):
        if stmt.strip():
            conn.execute(stmt)
    conn.executemany(
        "INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v, default=str)) for k, v in info.items()]
    )
    conn.executemany(
        "INSERT INTO groups VALUES (?, ?, ?, ?)",
        [(i, g.name, g.width, json.dumps(g.to_dict())) for i, g in enumerate(groups)],
    )
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.execute("COMMIT")


def _same_groups(conn: sqlite3.Connection, groups: Sequence[ChannelGroup], path: str) -> None:
    stored = [
        ChannelGroup.from_dict(json.loads(r[0]))
        for r in conn.execute("SELECT spec FROM groups ORDER BY idx")
    ]
    if stored == list(groups):
        return
    a, b = {g.name: g for g in stored}, {g.name: g for g in groups}
    diff = sorted(set(a) ^ set(b)) or [n for n in a if n in b and a[n] != b[n]]
    raise RunFileError(
        f"{path} was recorded with different channel groups (first difference: {diff[:1]}); "
        "use a new path for this model"
    )
