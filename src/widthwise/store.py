"""The run file: one SQLite database per training run.

A run file holds the model description, the channel groups, one row per snapshot (step, epoch,
wall time), the per-group statistics, optionally the per-channel norm vectors (float32 blobs) and
the user's metrics. It is written in WAL mode with one transaction per snapshot, so a process
killed at any moment leaves a readable file with every completed snapshot, and :func:`open_run`
can read it while training is still writing.

Files are marked with SQLite's ``application_id`` and carry a schema version in ``user_version``;
anything else (another database, a text file, a damaged file, a newer schema) is refused with a
:class:`RunFileError` that says what to do. Every reader method either returns well-typed data or
raises :class:`RunFileError` (a damaged row never escapes as an ``IndexError`` or ``ValueError``).

**Steps.** The ``step`` of every snapshot is a *global* step, strictly increasing in snapshot
order, so the verdicts can always be computed. Training loops often count steps per epoch
(``for step, batch in enumerate(loader)`` inside ``for epoch in ...``); when a step repeats or
goes back, :class:`StepClock` continues the count: the new step is placed one usual snapshot
interval (the last gap between snapshots) after the previous one, and every later step of that
epoch keeps its distance from it. The step the caller passed is kept as ``user_step``. Pass a
global step (``epoch * len(loader) + step``) when exact spacing across epochs matters. Files of
schema 1 (before ``user_step``) are renumbered the same way when read.

**Deferred writes.** :meth:`RunStore.defer` hands a snapshot's statistics and transaction to
the store's writer thread (``WidthTracker(background=True)``, the default for in-memory runs),
so the training loop pays only for reading the weights. Every read and every other method of
the store first waits for what was deferred, so readers see the same data in the same order;
:meth:`RunStore.close` and the end of the interpreter write what is pending. A process killed
with SIGKILL loses what was still pending (the last few milliseconds).

**Snapshots committed as their reductions** (the tracker's default for a run file: durable when
``snapshot()`` returns, and cheap for the caller). :meth:`RunStore.append_pending` commits, in
the calling thread, the snapshot row, its metrics and one ``pending`` row holding the sums of
squares the statistics come from (:meth:`~widthwise.norms.NormPlan.reduce`, one float32 blob)
in one small transaction; :meth:`RunStore.expand_pending`, deferred to the writer thread, turns
pending rows into the statistics and norm rows and drops them, in one transaction. What turns
reductions into statistics (:class:`~widthwise.norms.StatsLayout`: index maps, series names and
widths) is stored once per file in ``layouts``, so a reader that finds pending rows — in another
process while training runs, or in a file whose writer was killed — computes their statistics
in memory with the same code, to the same bits, and the next store that appends to the file
writes them. Readers query both tables in one read transaction, so a snapshot is seen once.

**The run file alone is complete within a bounded delay.** Commits go to the ``-wal`` file; a
background thread copies them into the run file itself within :data:`CHECKPOINT_SECONDS`, so
copying only the run file, after a kill or while training runs, loses at most that much.
:meth:`RunStore.close` folds the whole log back (waiting at most :data:`CLOSE_TIMEOUT_SECONDS`
for readers in the middle of a query).

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

import atexit
import contextlib
import copy
import difflib
import functools
import json
import math
import os
import queue
import sqlite3
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import pandas as pd

from widthwise.groups import ChannelGroup
from widthwise.norms import STAT_COLUMNS, StatsLayout

if TYPE_CHECKING:
    from widthwise.report import Report

__all__ = ["SCHEMA_VERSION", "Run", "RunFileError", "RunStore", "StepClock", "open_run"]

#: Version of the table layout; readers refuse files with a larger number. 2 added ``user_step``
#: (the caller's step) beside the global ``step`` of snapshots and metrics; 3 added ``pending``
#: (snapshots written as their reductions, statistics to follow) and ``layouts`` (what turns
#: reductions into statistics), which a reader of schema 2 would not know to read.
SCHEMA_VERSION = 3
#: Schemas this version reads (1 is renumbered on reading; 1 and 2 are migrated when appended to).
READABLE_SCHEMAS = (1, 2, 3)
#: SQLite ``application_id`` of widthwise run files (ASCII "Wdth").
APPLICATION_ID = 0x57647468

HISTORY_COLUMNS = ("snapshot", "step", "epoch", "wall_time", "group", *STAT_COLUMNS[1:])

#: A background thread copies committed snapshots from the ``-wal`` log into the run file itself
#: (a passive checkpoint, which never waits for readers) at most this long after they were
#: committed: the bound on what a copy of the run file alone can miss. The thread, not the
#: training loop, pays the checkpoint and its fsyncs: 12 ms for a second of snapshots against
#: 0.9 ms per snapshot on the shared 2-core machine (benchmarks/soak.py, docs/reliability.md);
#: paid in the loop after every snapshot taken over a second apart, it would cost 13x the snapshot.
#: ``None`` leaves it to SQLite's own auto-checkpoint (every 1000 pages, in the training thread).
CHECKPOINT_SECONDS: float | None = 1.0
#: close() waits at most this long for readers to leave the log before giving up on TRUNCATE.
CLOSE_TIMEOUT_SECONDS = 2.0
#: The log file is cut back to this size after a checkpoint (it otherwise keeps its largest size).
JOURNAL_SIZE_LIMIT = 4 << 20

# Schema 3: a snapshot committed as its reductions (float32 sums of squares, one blob) and the
# layout that turns them into statistics rows (norms.StatsLayout, JSON; one row per distinct
# layout). The store's writer thread replaces a pending row by its stats/norms rows in one
# transaction; until then (or forever, after a SIGKILL) readers compute them in memory.
_PENDING_SCHEMA = """
CREATE TABLE layouts (id INTEGER PRIMARY KEY, spec TEXT NOT NULL);
CREATE TABLE pending (
    snapshot INTEGER PRIMARY KEY, layout INTEGER NOT NULL, reduced BLOB NOT NULL,
    changed TEXT, keep_norms INTEGER NOT NULL);
"""

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE groups (
    idx INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, width INTEGER NOT NULL,
    spec TEXT NOT NULL);
CREATE TABLE snapshots (
    snapshot INTEGER PRIMARY KEY, step INTEGER NOT NULL, epoch INTEGER,
    wall_time REAL NOT NULL, error TEXT, user_step INTEGER);
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
    wall_time REAL NOT NULL, name TEXT NOT NULL, value REAL, user_step INTEGER);
"""
_SCHEMA += _PENDING_SCHEMA


class RunFileError(RuntimeError):
    """A run file that cannot be used: missing, damaged, foreign, newer, or for another model."""


class StepClock:
    """Turns the caller's step numbers into strictly increasing global steps.

    A step above the previous one keeps its distance from the last restart; a step that repeats
    or goes back (a new epoch of ``enumerate(loader)``, a loop restarted without resuming) starts
    a new segment one usual snapshot interval (the last gap seen, else 1) after the previous
    global step; a repeat within the same epoch is placed 1 after it.

    >>> clock = StepClock()
    >>> [clock.advance(s, e) for s, e in [(0, 0), (50, 0), (100, 0), (0, 1), (50, 1), (0, 2)]]
    [0, 50, 100, 150, 200, 250]
    >>> clock.peek(20, 2)  # a metric logged between snapshots: placed without advancing
    270
    """

    def __init__(self) -> None:
        self.last_user: int | None = None
        self.last_global: int | None = None
        self.last_epoch: int | None = None
        self.offset = 0
        self.gap: int | None = None

    def _place(self, user: int, epoch: int | None, *, strict: bool) -> int:
        if self.last_user is None or self.last_global is None:
            return user
        new_epoch = epoch is not None and self.last_epoch is not None and epoch > self.last_epoch
        if user > self.last_user or (not strict and user == self.last_user and not new_epoch):
            return user + self.offset
        restart = user < self.last_user or new_epoch
        return self.last_global + (self.gap if restart and self.gap else 1)

    def copy(self) -> StepClock:
        """An independent copy (cheaper than :func:`copy.copy`: one per snapshot)."""
        clock = StepClock.__new__(StepClock)
        clock.__dict__.update(self.__dict__)
        return clock

    def peek(self, user: int | None, epoch: int | None = None) -> int | None:
        """The global step of a metric logged at ``user`` now (None: the last snapshot's)."""
        if user is None:
            return self.last_global
        return self._place(int(user), epoch, strict=False)

    def next_user(self) -> int:
        """The caller's step when none is given: the previous one + 1 (0 for the first)."""
        return 0 if self.last_user is None else self.last_user + 1

    def advance(self, user: int, epoch: int | None = None) -> int:
        """The global step of a snapshot at ``user``; the clock moves on."""
        user = int(user)
        glob = self._place(user, epoch, strict=True)
        if self.last_user is not None and user > self.last_user and glob - user == self.offset:
            self.gap = user - self.last_user
        self.offset = glob - user
        self.last_user, self.last_global = user, glob
        if epoch is not None:
            self.last_epoch = epoch
        return glob

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[int, int, int | None]]) -> StepClock:
        """A clock continuing the last snapshots ``(global, user, epoch)``, oldest first."""
        clock = cls()
        if not rows:
            return clock
        g, u, e = rows[-1]
        clock.last_global, clock.last_user, clock.last_epoch = int(g), int(u), e
        clock.offset = int(g) - int(u)
        if len(rows) > 1:
            g0, u0, _ = rows[-2]
            if int(g0) - int(u0) == clock.offset and int(u) > int(u0):
                clock.gap = int(u) - int(u0)
        return clock


def _real(x: Any) -> float | None:
    # SQLite stores NaN as NULL anyway; do it explicitly so it reads back as NaN.
    x = float(x)
    return None if math.isnan(x) else x


def _column(values: Any, k: int, dtype: Any) -> list[Any]:
    """The first ``k`` values of a statistics column as Python objects (IndexError when
    shorter, as indexing them one by one would raise)."""
    a = np.asarray(values, dtype=dtype)
    if a.ndim != 1 or a.shape[0] < k:
        raise IndexError(f"a statistics column has {a.size} values for {k} series")
    return cast(list[Any], a[:k].tolist())


def _reals(values: Any, k: int) -> list[float | None]:
    """:func:`_real` of a whole column."""
    col = _column(values, k, np.float64)
    return [None if math.isnan(x) else x for x in col]


def _metric_value(v: Any) -> float | None:
    try:
        return _real(v.item() if hasattr(v, "item") else v)
    except (TypeError, ValueError):
        return None


#: One row of the stats table after its snapshot: ``(group_idx, gate, pos, variance, mean, max,
#: min, n_nonfinite, n_zero, flag)``; one of the norms table: ``(group_idx, gate, blob)``.
_StatRow = tuple[Any, ...]


def _stat_rows(
    index: Mapping[str, int],
    stats: Mapping[str, Sequence],
    channel_norms: Sequence[np.ndarray] | None,
) -> tuple[list[_StatRow], list[_StatRow] | None]:
    """The stats rows and norm rows of one snapshot (without its index), as stored."""
    groups, gates = list(stats["group"]), list(stats["gate"])
    idx = [index[g] for g in groups]
    k = len(idx)
    # a column at a time: a small model's snapshot is mostly per-value Python overhead
    reals = [_reals(stats[c], k) for c in ("variance", "mean", "max", "min")]
    counts = [_column(stats[c], k, np.int64) for c in ("n_nonfinite", "n_zero")]
    flags = [str(f) for f in _column(stats["flag"], k, object)]
    rows = list(zip(idx, gates, range(k), *reals, *counts, flags))
    blobs = None
    if channel_norms is not None:
        blobs = [
            (g, gate, np.asarray(v, dtype="<f4").tobytes())
            for g, gate, v in zip(idx, gates, channel_norms)
        ]
    return rows, blobs


def mark_changed(columns: dict[str, Any], changed: Any) -> None:
    """Add ``model_changed`` to the flags of the groups in ``changed`` (a module of theirs was
    replaced since the previous snapshot), in place."""
    if changed:
        columns["flag"] = [
            ",".join(filter(None, (f, "model_changed"))) if g in changed else f
            for g, f in zip(columns["group"], columns["flag"])
        ]


def _expanded(
    layout: StatsLayout,
    index: Mapping[str, int],
    reduced: bytes,
    changed: str | None,
    keep_norms: Any,
) -> tuple[list[_StatRow], list[_StatRow] | None]:
    """The stats and norm rows of a pending snapshot: what the tracker would have written in
    the calling thread (the same statistics code, :meth:`StatsLayout.stats_from`)."""
    if not isinstance(reduced, bytes) or len(reduced) != 4 * layout.n_reduced:
        raise ValueError("the reductions of a pending snapshot have the wrong size")
    stats = layout.stats_from(np.frombuffer(reduced, dtype="<f4"))
    if changed:
        mark_changed(stats.columns, set(json.loads(changed)))
    return _stat_rows(index, stats.columns, stats.norms if keep_norms else None)


#: What decoding a damaged row can raise; a reader turns these into RunFileError.
_DAMAGE = (
    sqlite3.DatabaseError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    OverflowError,
    UnicodeDecodeError,
)

_F = TypeVar("_F", bound=Callable[..., Any])


def _reader(fn: _F) -> _F:
    """Reader methods return good data or raise RunFileError, never a decoding error."""

    @functools.wraps(fn)
    def wrapper(self: Run, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except RunFileError:
            raise
        except _DAMAGE as exc:
            if isinstance(exc, KeyError) and getattr(exc, "_user_error", False):
                raise
            raise self._damaged(exc) from exc

    return cast(_F, wrapper)


def _after_deferred(fn: _F) -> _F:
    """A :class:`RunStore` method that first waits for the jobs deferred before it (a no-op on
    the writer thread): every caller then sees the store as if the deferred snapshots had been
    written in its own thread, in the order they were taken (:meth:`RunStore.defer`)."""

    @functools.wraps(fn)
    def wrapper(self: RunStore, *args: Any, **kwargs: Any) -> Any:
        self.flush()
        return fn(self, *args, **kwargs)

    return cast(_F, wrapper)


class _GroupNotFound(KeyError):
    _user_error = True


def _renumber(rows: Sequence[tuple[Any, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """Global steps for ``(user_step, epoch)`` rows in snapshot order (see StepClock)."""
    clock = StepClock()
    users = np.array([int(r[0]) for r in rows], dtype=np.int64)
    glob = np.array(
        [clock.advance(int(u), None if e is None else int(e)) for u, e in rows], dtype=np.int64
    )
    return glob, users


class Run:
    """Read access to a run: the groups, the statistics history, channel norms and metrics.

    Obtain one with :func:`open_run` (a file, possibly still being written) or from a
    :class:`RunStore` / :class:`~widthwise.tracker.WidthTracker` (``.run``). Every query reads the
    current contents, so a reader sees new snapshots as soon as they are committed. Every method
    returns well-typed data or raises :class:`RunFileError`.
    """

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock, path: str | None):
        self._conn = conn
        self._lock = lock
        self.path = path
        self._owns = False  # open_run's runs close their connection; a store's view does not
        self._store: RunStore | None = None  # the store this is a view of (its deferred writes)
        self._layouts: dict[int, StatsLayout] = {}  # decoded rows of the layouts table
        try:
            with self._read():
                rows = conn.execute("SELECT idx, spec FROM groups ORDER BY idx").fetchall()
                meta = conn.execute("SELECT key, value FROM meta").fetchall()
                cols = {r[1] for r in conn.execute("PRAGMA table_info(snapshots)")}
            self.meta: dict[str, Any] = {str(k): json.loads(v) for k, v in meta}
            self.groups: list[ChannelGroup] = [
                ChannelGroup.from_dict(json.loads(spec)) for _, spec in rows
            ]
        except RunFileError:
            raise
        except _DAMAGE as exc:
            raise self._damaged(exc) from exc
        idx = [r[0] for r in rows]
        if idx != list(range(len(rows))):
            gaps = sorted(
                set(range(max([i for i in idx if isinstance(i, int)] + [0]) + 1)) - set(idx)
            )
            raise self._damaged(f"rows of the groups table are missing (index {gaps[:3]})")
        recorded = self.meta.get("model", {}) if isinstance(self.meta.get("model"), dict) else {}
        n_rec = recorded.get("n_groups")
        if isinstance(n_rec, int) and n_rec != len(self.groups):
            raise self._damaged(
                f"the run was recorded with {n_rec} channel groups but the groups table has "
                f"{len(self.groups)} rows"
            )
        self._has_user_step = "user_step" in cols
        self._index = {g.name: i for i, g in enumerate(self.groups)}
        if len(self._index) != len(self.groups):
            raise self._damaged("two rows of the groups table have the same name")
        self._widths = np.array([g.width for g in self.groups], dtype=np.int64)

    def _damaged(self, why: Any) -> RunFileError:
        return RunFileError(
            f"{self.path or 'run'}: cannot read the run file ({why}); "
            "it is damaged — open a copy or record the run again"
        )

    # sqlite errors while reading become RunFileError (damaged file), everything else passes
    class _Reading:
        def __init__(self, run: Run):
            self.run = run

        def __enter__(self) -> sqlite3.Connection:
            # writes this process deferred to a writer thread land before the read (outside
            # the lock: the writer needs it)
            _flush_writers(self.run.path, self.run._store)
            self.run._lock.acquire()
            return self.run._conn

        def __exit__(self, typ: Any, exc: Any, tb: Any) -> None:
            self.run._lock.release()
            if isinstance(exc, sqlite3.DatabaseError):
                raise self.run._damaged(exc) from exc

    def _read(self) -> Run._Reading:
        return Run._Reading(self)

    @contextlib.contextmanager
    def _consistent(self) -> Iterator[sqlite3.Connection]:
        """:meth:`_read` in one read transaction: the queries see the same commit, so a
        snapshot the writer moves from ``pending`` to ``stats`` meanwhile is seen once."""
        with self._read() as c:
            c.execute("BEGIN")
            try:
                yield c
            finally:
                c.execute("COMMIT")

    def _layout(self, c: sqlite3.Connection, lid: int) -> StatsLayout:
        layout = self._layouts.get(lid)
        if layout is None:
            row = c.execute("SELECT spec FROM layouts WHERE id = ?", (lid,)).fetchone()
            if row is None:
                raise self._damaged("a pending snapshot refers to a layout the file does not have")
            layout = self._layouts[lid] = StatsLayout.from_json(row[0])
        return layout

    def _pending(
        self, c: sqlite3.Connection, head: str
    ) -> list[tuple[tuple[Any, ...], list[_StatRow], list[_StatRow] | None]]:
        """``(columns head of snapshots s, stats rows, norm rows)`` of every snapshot still
        pending (committed as its reductions; a writer killed before it wrote the statistics),
        computed in memory as the writer would have stored them (:func:`_expanded`)."""
        if not c.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'pending'"
        ).fetchone():
            return []  # schema 1 or 2
        rows = c.execute(
            f"SELECT {head}, p.layout, p.reduced, p.changed, p.keep_norms FROM pending p "
            "JOIN snapshots s ON s.snapshot = p.snapshot ORDER BY p.snapshot"
        ).fetchall()
        n = len(head.split(","))
        out = []
        for r in rows:
            stats, norms = _expanded(self._layout(c, int(r[n])), self._index, *r[n + 1 :])
            out.append((tuple(r[:n]), stats, norms))
        return out

    @_reader
    def __len__(self) -> int:
        with self._read() as c:
            return int(c.execute("SELECT count(*) FROM snapshots").fetchone()[0])

    def __repr__(self) -> str:
        where = self.path or "memory"
        try:
            n: Any = len(self)
        except RunFileError:
            n = "?"
        return f"Run({where!r}, groups={len(self.groups)}, snapshots={n})"

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (only for runs from :func:`open_run`; a store's view stays open)."""
        if self._owns:
            self._conn.close()

    def _group_index(self, group: str) -> int:
        if group not in self._index:
            close = difflib.get_close_matches(group, list(self._index), n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise _GroupNotFound(f"no channel group {group!r} in this run{hint}")
        return self._index[group]

    def _steps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """``(snapshot ids, global steps, user steps, renumbered)`` in snapshot order.

        Stored steps are global already (schema 2); files of schema 1, or damaged ones, whose
        steps repeat or go back are renumbered with :class:`StepClock`.
        """
        user_col = "user_step" if self._has_user_step else "NULL"
        with self._read() as c:
            rows = c.execute(
                f"SELECT snapshot, step, {user_col}, epoch FROM snapshots ORDER BY snapshot"
            ).fetchall()
        ids = np.array([int(r[0]) for r in rows], dtype=np.int64)
        steps = np.array([int(r[1]) for r in rows], dtype=np.int64)
        users = np.array([int(r[1] if r[2] is None else r[2]) for r in rows], dtype=np.int64)
        if steps.size < 2 or bool(np.all(np.diff(steps) > 0)):
            return ids, steps, users, False
        glob, users = _renumber([(u, r[3]) for u, r in zip(users.tolist(), rows)])
        return ids, glob, users, True

    def _step_of(self, snapshot: np.ndarray) -> np.ndarray:
        ids, steps, _, _ = self._steps()
        pos = np.searchsorted(ids, snapshot)
        if pos.size and (pos.max() >= ids.size or np.any(ids[pos] != snapshot)):
            raise self._damaged("statistics of a snapshot the snapshots table does not have")
        return steps[pos]

    @_reader
    def snapshots(self) -> pd.DataFrame:
        """One row per snapshot: ``snapshot, step, epoch, wall_time, error, user_step``.

        ``step`` is the global step (strictly increasing); ``user_step`` the step the caller
        passed (they differ when a loop's steps restart every epoch).
        """
        ids, steps, users, _ = self._steps()
        with self._read() as c:
            rows = c.execute(
                "SELECT epoch, wall_time, error FROM snapshots ORDER BY snapshot"
            ).fetchall()
        if len(rows) != ids.size:  # written between the two queries: read again
            return self.snapshots()
        df = pd.DataFrame(
            {
                "snapshot": ids,
                "step": steps,
                "epoch": pd.array([r[0] for r in rows], dtype="Int64"),
                "wall_time": np.array([float(r[1]) for r in rows], dtype=np.float64),
                "error": [None if r[2] is None else str(r[2]) for r in rows],
                "user_step": users,
            }
        )
        return df

    @_reader
    def history(self, *, gates: bool = False) -> pd.DataFrame:
        """The statistics, one row per snapshot and group: ``HISTORY_COLUMNS``.

        Args:
            gates: also return the per-gate rows of gated groups (``gate`` set); by default only
                whole-group rows (``gate == ""``), so each (snapshot, group) appears once.
        """
        where = "" if gates else "WHERE st.gate = ''"
        with self._consistent() as c:
            rows = c.execute(
                "SELECT s.snapshot, s.step, s.epoch, s.wall_time, st.group_idx, st.gate, "
                "st.variance, st.mean, st.max, st.min, st.n_nonfinite, st.n_zero, st.flag "
                "FROM stats st JOIN snapshots s ON s.snapshot = st.snapshot "
                f"{where} ORDER BY st.snapshot, st.pos"
            ).fetchall()
            pending = self._pending(c, "s.snapshot, s.step, s.epoch, s.wall_time")
        if pending:
            for head, stats, _ in pending:
                rows += [(*head, r[0], r[1], *r[3:]) for r in stats if gates or r[1] == ""]
            rows.sort(key=lambda r: r[0])  # stable: each snapshot's rows keep their order
        cols = ["snapshot", "step", "epoch", "wall_time", "group_idx", "gate", "variance"]
        cols += ["mean", "max", "min", "n_nonfinite", "n_zero", "flag"]
        df = pd.DataFrame(rows, columns=cols)
        idx = df.pop("group_idx").to_numpy(dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.groups)):
            raise self._damaged(
                f"statistics of channel group index {int(idx.max())}, which the groups table "
                "does not have"
            )
        df.insert(4, "group", [self.groups[i].name for i in idx])
        df.insert(6, "width", self._widths[idx])
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
        df["gate"] = df["gate"].astype(str)
        df["flag"] = df["flag"].astype(str)
        if bool((df["variance"] < 0).any()):  # a variance is never negative: a damaged value
            raise self._damaged("a negative variance")
        if len(df):
            df["step"] = self._step_of(df["snapshot"].to_numpy())
        return df[list(HISTORY_COLUMNS)]

    @_reader
    def channel_norms(self, group: str, gate: str = "") -> tuple[np.ndarray, np.ndarray]:
        """Per-channel norms of one group over the snapshots that kept them.

        Returns:
            ``(steps, norms)``: int64 array ``[n]`` and float32 array ``[n, width]``.
        """
        gi = self._group_index(group)
        width = self.groups[gi].width
        with self._consistent() as c:
            rows = c.execute(
                "SELECT n.snapshot, n.norms FROM norms n JOIN snapshots s "
                "ON s.snapshot = n.snapshot WHERE n.group_idx = ? AND n.gate = ? "
                "ORDER BY n.snapshot",
                (gi, gate),
            ).fetchall()
            pending = self._pending(c, "s.snapshot")
        if pending:
            for head, _, kept in pending:
                rows += [(head[0], r[2]) for r in kept or () if r[0] == gi and r[1] == gate]
            rows.sort(key=lambda r: r[0])
        snaps = np.array([int(r[0]) for r in rows], dtype=np.int64)
        norms = np.zeros((len(rows), width), dtype=np.float32)
        for i, (_, blob) in enumerate(rows):
            if not isinstance(blob, bytes) or len(blob) != 4 * width:
                raise self._damaged(f"a channel-norm vector of {group!r} has the wrong size")
            norms[i] = np.frombuffer(blob, dtype="<f4")
        return self._step_of(snaps), norms

    @_reader
    def metrics(self) -> pd.DataFrame:
        """User metrics, long format: ``step, epoch, wall_time, name, value``.

        ``step`` is on the same global scale as the snapshots' steps.
        """
        with self._read() as c:
            rows = c.execute(
                "SELECT step, epoch, wall_time, name, value, snapshot FROM metrics ORDER BY id"
            ).fetchall()
        df = pd.DataFrame(rows, columns=["step", "epoch", "wall_time", "name", "value", "snap"])
        df = df.astype(
            {"step": "Int64", "epoch": "Int64", "wall_time": "float64", "value": "float64"}
        )
        df["name"] = df["name"].astype(str)
        snap = df.pop("snap")
        ids, steps, users, renumbered = self._steps()
        if renumbered and len(df):
            with self._read() as c:
                info = c.execute(
                    "SELECT epoch, wall_time FROM snapshots ORDER BY snapshot"
                ).fetchall()[: ids.size]
            rows = [(int(g), int(u), r[0]) for g, u, r in zip(steps, users, info)]
            walls = np.maximum.accumulate(np.array([float(r[1]) for r in info]))
            placed = _metric_steps(df, snap, rows, ids[: len(rows)], walls)
            df["step"] = pd.array(placed, dtype="Int64")
        return df

    def report(self, *, name: str | None = None) -> Report:
        """A :class:`widthwise.report.Report` of this run (``Report.from_run``).

        A convenience for users: the one place where a lower layer reaches up to the view, so
        the import happens here, at call time (see docs/design.md).
        """
        from widthwise.report import Report

        return Report.from_run(self, name=name)


def _metric_steps(
    df: pd.DataFrame,
    snap: pd.Series,
    clock_rows: list[tuple[int, int, int | None]],
    ids: np.ndarray,
    walls: np.ndarray,
) -> list[int | None]:
    """Global steps of the metric rows of a renumbered run: a row written with a snapshot takes
    its step; one logged between snapshots is placed as the writer's clock would have placed it
    (the clock just after the last snapshot before it in wall time)."""
    where = {int(i): k for k, i in enumerate(ids)}
    out: list[int | None] = []
    for i in range(len(df)):
        s, u, e = snap.iloc[i], df["step"].iloc[i], df["epoch"].iloc[i]
        if not pd.isna(s) and int(s) in where:
            out.append(clock_rows[where[int(s)]][0])
        elif pd.isna(u):
            out.append(None)
        else:
            k = int(np.searchsorted(walls, df["wall_time"].iloc[i], side="right")) - 1
            clock = StepClock.from_rows(clock_rows[max(0, k - 1) : k + 1] if k >= 0 else [])
            out.append(clock.peek(int(u), None if pd.isna(e) else int(e)))
    return out


def _check(conn: sqlite3.Connection, path: str) -> None:
    """Raise RunFileError unless ``conn`` is a widthwise run file this version can read."""
    try:
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except (sqlite3.DatabaseError, UnicodeDecodeError, ValueError) as e:
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
    if version not in READABLE_SCHEMAS and version < SCHEMA_VERSION:
        raise RunFileError(f"{path} is a damaged widthwise run file (schema version {version})")
    if version > SCHEMA_VERSION:
        raise RunFileError(
            f"{path} was written by a newer widthwise (run-file schema {version}; this version "
            f"reads up to {SCHEMA_VERSION}); upgrade widthwise to read it"
        )
    needed = {"meta", "groups", "snapshots", "stats", "norms", "metrics"}
    if version >= 3:
        needed |= {"pending", "layouts"}
    missing = needed - tables
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
    if not os.path.exists(path):
        raise RunFileError(f"{path}: no such run file")
    if not os.path.isfile(path):
        what = "a directory" if os.path.isdir(path) else "not a regular file"
        raise RunFileError(f"{path} is {what}; pass a run file written by WidthTracker")
    try:
        try:
            conn = _connect(path, readonly=True)
            conn.execute("PRAGMA schema_version").fetchone()
        except sqlite3.DatabaseError:
            # a read-only handle cannot recover a WAL left by a killed writer; a read-write one can
            conn = _connect(path, readonly=False)
    except (OSError, sqlite3.Error) as exc:
        raise RunFileError(f"{path}: cannot open the run file ({_why(exc)})") from exc
    try:
        _check(conn, path)
        run = Run(conn, threading.RLock(), path)
    except _DAMAGE as exc:  # anything a damaged file makes sqlite3 or decoding raise
        conn.close()
        raise RunFileError(f"{path}: cannot read the run file ({exc}); it is damaged") from exc
    except BaseException:
        conn.close()
        raise
    run._owns = True
    return run


class RunStore:
    """Writer of a run: one transaction per snapshot (:meth:`append_snapshot`), or one small
    one per snapshot and its statistics later (:meth:`append_pending`, :meth:`expand_pending`).

    Create with :meth:`create` (a file) or :meth:`memory` (an in-memory database, same code).
    Thread-safe; ``run`` is a :class:`Run` view over the same database. Steps go through a
    :class:`StepClock`, so the stored steps increase strictly whatever the caller passes.
    """

    def __init__(self, conn: sqlite3.Connection, path: str | None):
        self._conn = conn
        self.path = path
        self._lock = threading.RLock()
        self.run = Run(conn, self._lock, path)
        self.run._store = self
        self._index = {g.name: i for i, g in enumerate(self.run.groups)}
        self._reclock()
        self._checkpointer = (
            _Checkpointer(path) if path is not None and CHECKPOINT_SECONDS is not None else None
        )
        self._writer: _Writer | None = None
        self._ordered = 0  # deferred jobs that may add snapshots (not expansions) still to run
        self._ordered_lock = threading.Lock()
        self._expansion_queued = False  # an expand_pending job waits for the writer
        self._reports: list[Callable[[list[tuple[int, str]]], Any]] = []
        self._layouts = self.run._layouts  # layout id -> layout, shared with the reader
        self._layout_ids: dict[int, tuple[StatsLayout, int]] = {}  # id(layout) -> (it, row id)
        self.closed = False
        with _STORES_LOCK:
            _STORES.add(self)

    # -- deferred writes -----------------------------------------------------------------------
    def defer(self, job: Callable[[], Any]) -> None:
        """Run ``job`` (typically one :meth:`append_snapshot`) on this store's writer thread,
        after every job deferred before it; returns at once (it waits only when
        :data:`MAX_PENDING` jobs are already waiting). ``job`` handles its own errors.

        Every other method of the store and every read of its :attr:`run` (or of a run opened
        on the same file in this process) first waits for the deferred jobs, so callers see
        the same data as if the jobs had run in the caller; :meth:`close` and interpreter exit
        run what is pending.

        Raises:
            RunFileError: the store is closed.
        """
        with self._ordered_lock:
            self._ordered += 1

        def counted() -> None:
            try:
                job()
            finally:
                with self._ordered_lock:
                    self._ordered -= 1

        try:
            self._submit(counted)
        except BaseException:
            with self._ordered_lock:
                self._ordered -= 1
            raise

    def _submit(self, job: Callable[[], Any]) -> None:
        if self.closed:
            raise RunFileError(f"{self.path or 'the in-memory run'} is closed")
        if self._writer is None:
            self._writer = _Writer()
            # a store dropped without close(): its idle thread ends once the store is collected
            weakref.finalize(self, self._writer.stop_soon)
        self._writer.submit(job)

    def flush(self) -> None:
        """Wait until every deferred job has run (no-op on the writer thread itself)."""
        w = self._writer
        if w is not None and not _on_writer_thread():
            w.flush()

    def _reclock(self) -> None:
        with self._lock:
            rows = self._conn.execute(
                "SELECT step, coalesce(user_step, step), epoch FROM snapshots "
                "ORDER BY snapshot DESC LIMIT 2"
            ).fetchall()
        self.clock = StepClock.from_rows(rows[::-1])

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
            RunFileError: the file exists (and ``append`` is false), is not a run file, was
                recorded with different channel groups, or cannot be written.
        """
        path = os.fspath(path)
        try:
            if os.path.exists(path) and os.path.getsize(path) > 0:
                if not append:
                    raise RunFileError(f"{path} already exists; choose a new path for a new run")
                conn = _connect(path, readonly=False)
                try:
                    _check(conn, path)
                    _same_groups(conn, groups, path)
                    _writer_pragmas(conn)
                    _migrate(conn)
                except BaseException:
                    conn.close()
                    raise
                store = cls(conn, path)
                try:
                    store.expand_pending()  # snapshots a killed writer committed as reductions
                except BaseException:
                    store.close()
                    raise
                return store
            parent = os.path.dirname(os.path.abspath(path))
            os.makedirs(parent, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
            _writer_pragmas(conn)
            _initialise(conn, groups, meta)
        except (OSError, sqlite3.Error) as exc:
            raise RunFileError(f"cannot write the run file {path}: {_why(exc)}") from exc
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
            raise RunFileError(f"{path} is a damaged run file ({exc}); use a new path") from exc
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
    def _transaction(self) -> _Transaction:
        return _Transaction(self)

    @_after_deferred
    def append_snapshot(
        self,
        step: int | None,
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
            step: the caller's step (``None``: the previous one + 1); stored as ``user_step``,
                and placed on the global scale by the store's :class:`StepClock`.
            stats: columns ``group, gate, variance, mean, max, min, n_nonfinite, n_zero, flag``
                (a dict of sequences, ``GroupStats.columns`` or a DataFrame), one row per series.
            channel_norms: per-channel norms, one array per row of ``stats`` (or ``None``).
            error: why the statistics are missing, for a snapshot that failed.
        """
        rows, blobs = _stat_rows(self._index, stats, channel_norms)
        epoch = None if epoch is None else int(epoch)
        with self._lock:
            clock = copy.copy(self.clock)
            user = clock.next_user() if step is None else int(step)
            glob = clock.advance(user, epoch)
            with self._transaction() as c:
                # read inside the transaction: another writer of the same file may have added one
                snap = c.execute("SELECT coalesce(max(snapshot) + 1, 0) FROM snapshots").fetchone()[
                    0
                ]
                c.execute(
                    "INSERT INTO snapshots (snapshot, step, epoch, wall_time, error, user_step) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (snap, glob, epoch, float(wall_time), error, user),
                )
                self._insert_rows(c, snap, rows, blobs)
                self._insert_metrics(c, snap, glob, user, epoch, wall_time, metrics)
            # the clock moves only once the snapshot is committed
            self.clock = clock
        if self._checkpointer is not None:
            self._checkpointer.dirty.set()
        return snap

    def append_pending(
        self,
        step: int | None,
        epoch: int | None,
        wall_time: float,
        metrics: Mapping[str, Any] | None,
        reduced: np.ndarray,
        layout: StatsLayout,
        *,
        changed: Sequence[str] | set[str] = (),
        keep_norms: bool = True,
    ) -> int:
        """Record one snapshot as its reductions: one small transaction (the snapshot row, the
        metrics and one ``pending`` row with ``reduced`` as a float32 blob); returns its index.

        The snapshot is in the file when this returns; its statistics rows follow with
        :meth:`expand_pending` (the tracker defers it to the writer thread). Until then, and
        for good after a SIGKILL, every reader computes them from the pending row with the same
        code (:meth:`StatsLayout.stats_from`), so they read the same numbers either way, and
        the next store that appends to the file writes them.

        Args:
            reduced: :meth:`NormPlan.reduce`'s output on the host (``layout.n_reduced`` values).
            layout: the plan's :attr:`NormPlan.layout` (stored once per file).
            changed: groups to flag ``model_changed``.
            keep_norms: also store the per-channel norm vectors.
        """
        if self._ordered:  # a deferred append takes its snapshot index first
            self.flush()
        blob = np.asarray(reduced, dtype="<f4").tobytes()
        if len(blob) != 4 * layout.n_reduced:
            raise ValueError(
                f"{len(blob) // 4} reductions for a layout of {layout.n_reduced}; pass "
                "NormPlan.reduce() of the plan the layout belongs to"
            )
        lid = self._layout_id(layout)
        epoch = None if epoch is None else int(epoch)
        marked = json.dumps(sorted(changed)) if changed else None
        with self._lock:
            clock = self.clock.copy()
            user = clock.next_user() if step is None else int(step)
            glob = clock.advance(user, epoch)
            with self._transaction() as c:
                # the index is read inside the transaction: another writer of the file may
                # have added a snapshot
                snap = c.execute(
                    "INSERT INTO snapshots (snapshot, step, epoch, wall_time, user_step) "
                    "VALUES ((SELECT coalesce(max(snapshot) + 1, 0) FROM snapshots), ?, ?, ?, ?)",
                    (glob, epoch, float(wall_time), user),
                ).lastrowid
                c.execute(
                    "INSERT INTO pending VALUES (?, ?, ?, ?, ?)",
                    (snap, lid, blob, marked, int(bool(keep_norms))),
                )
                self._insert_metrics(c, snap, glob, user, epoch, wall_time, metrics)
            self.clock = clock
        if self._checkpointer is not None and not self._checkpointer.dirty.is_set():
            self._checkpointer.dirty.set()
        return int(cast(int, snap))

    def _layout_id(self, layout: StatsLayout) -> int:
        hit = self._layout_ids.get(id(layout))
        if hit is not None and hit[0] is layout:
            return hit[1]
        spec = layout.to_json()
        with self._transaction() as c:
            row = c.execute("SELECT id FROM layouts WHERE spec = ?", (spec,)).fetchone()
            if row is None:
                row = (c.execute("INSERT INTO layouts (spec) VALUES (?)", (spec,)).lastrowid,)
        lid = int(row[0])
        self._layout_ids[id(layout)] = (layout, lid)
        self._layouts.setdefault(lid, layout)
        return lid

    def defer_expansion(self, report: Callable[[list[tuple[int, str]]], Any] | None = None) -> None:
        """:meth:`expand_pending` on the writer thread; ``report`` gets what it returns when a
        snapshot failed. A later :meth:`append_pending` does not wait for it (it adds no
        snapshot); every read does. While one expansion is waiting for the writer, more calls
        join it (it expands every pending row), so a writer that falls behind never makes the
        caller wait for a place in the queue, and catches up in one transaction.

        Raises:
            RunFileError: the store is closed.
        """
        with self._ordered_lock:
            if report is not None:
                self._reports.append(report)
            if self._expansion_queued:
                return
            self._expansion_queued = True

        def job() -> None:
            with self._ordered_lock:  # rows committed from now on get an expansion of their own
                self._expansion_queued = False
                reports, self._reports = self._reports, []
            failed = self.expand_pending()
            if failed:
                for tell in {getattr(r, "func", r): r for r in reports}.values():
                    tell(failed)

        try:
            self._submit(job)
        except BaseException:
            with self._ordered_lock:
                self._expansion_queued = False
            raise

    def expand_pending(self) -> list[tuple[int, str]]:
        """Write the statistics of every pending snapshot (:meth:`append_pending`) and drop its
        pending row, in one transaction. Returns ``(snapshot, why)`` for those whose statistics
        could not be computed: they are recorded as failed snapshots (flag ``"error"``), as a
        failure in the calling thread would have been."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT snapshot, layout, reduced, changed, keep_norms FROM pending "
                "ORDER BY snapshot"
            ).fetchall()
        if not rows:
            return []
        done, failed = [], []
        for snap, lid, *rest in rows:  # the arithmetic outside the lock
            try:
                with self._lock:
                    layout = self.run._layout(self._conn, int(lid))
                stats, norms = _expanded(layout, self._index, *rest)
                error = None
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                failed.append((int(snap), error))
                stats, norms = self._error_rows(lid), None
            done.append((snap, stats, norms, error))
        with self._transaction() as c:
            for snap, stats, norms, error in done:
                if c.execute("DELETE FROM pending WHERE snapshot = ?", (snap,)).rowcount != 1:
                    continue  # another store of the file wrote it meanwhile
                self._insert_rows(c, snap, stats, norms)
                if error is not None:
                    c.execute("UPDATE snapshots SET error = ? WHERE snapshot = ?", (error, snap))
        if self._checkpointer is not None:
            self._checkpointer.dirty.set()
        return failed

    def _error_rows(self, lid: Any) -> list[_StatRow]:
        """Rows of a snapshot whose statistics failed: its layout's series (the groups when the
        layout cannot be read), NaN, flagged ``"error"``."""
        try:
            with self._lock:
                series = [(s.group, s.gate) for s in self.run._layout(self._conn, int(lid)).series]
        except Exception:
            series = [(g.name, "") for g in self.run.groups]
        nan = None
        return [
            (self._index[g], gate, pos, nan, nan, nan, nan, 0, 0, "error")
            for pos, (g, gate) in enumerate(series)
            if g in self._index
        ]

    @_after_deferred
    def checkpoint(self) -> tuple[int, int, int]:
        """Copy committed snapshots from the ``-wal`` log into the run file now (passive: never
        waits for readers). Returns SQLite's ``(busy, log frames, checkpointed frames)``."""
        with self._lock:
            if self.path is None:
                return (0, 0, 0)
            row = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            return (int(row[0]), int(row[1]), int(row[2]))

    @staticmethod
    def _insert_rows(
        c: sqlite3.Connection, snap: int, stats: Sequence[Any], norms: Sequence[Any] | None
    ) -> None:
        """One snapshot's stats rows and (if any) norm blobs."""
        # the same statement text every time, so sqlite3 prepares it once (its cache)
        c.executemany(
            "INSERT INTO stats VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(snap, *r) for r in stats],
        )
        if norms is not None:
            c.executemany("INSERT INTO norms VALUES (?, ?, ?, ?)", [(snap, *b) for b in norms])

    @staticmethod
    def _insert_metrics(
        c: sqlite3.Connection,
        snap: int | None,
        step: int | None,
        user_step: int | None,
        epoch: int | None,
        wall_time: float,
        metrics: Mapping[str, Any] | None,
    ) -> None:
        if not metrics:
            return
        c.executemany(
            "INSERT INTO metrics (snapshot, step, epoch, wall_time, name, value, user_step) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    snap,
                    None if step is None else int(step),
                    None if epoch is None else int(epoch),
                    float(wall_time),
                    str(k),
                    _metric_value(v),
                    None if user_step is None else int(user_step),
                )
                for k, v in metrics.items()
            ],
        )

    @_after_deferred
    def log_metrics(
        self,
        metrics: Mapping[str, Any] | int | None,
        step: Any = None,
        epoch: Any = None,
        wall_time: float | None = None,
    ) -> None:
        """Record user metrics (loss, accuracy, ...) outside a snapshot.

        ``log_metrics(metrics, step=None, epoch=None)``, as ``WidthTracker.log_metrics``;
        ``step`` is the caller's step (placed like a snapshot's), ``None`` for the last
        snapshot's. The older order ``log_metrics(step, epoch, metrics)`` still works.
        """
        if not isinstance(metrics, Mapping) and isinstance(epoch, Mapping):
            metrics, step, epoch = epoch, metrics, step  # the pre-0.x order (step, epoch, metrics)
        if not isinstance(metrics, Mapping):
            raise TypeError(
                f"metrics must be a mapping of names to numbers, not {type(metrics).__name__}"
            )
        wall = time.time() if wall_time is None else wall_time
        epoch = None if epoch is None else int(epoch)
        user = None if step is None else int(step)
        with self._lock:
            glob = self.clock.peek(user, epoch)
            with self._transaction() as c:
                self._insert_metrics(c, None, glob, user, epoch, wall, metrics)
        if self._checkpointer is not None:
            self._checkpointer.dirty.set()

    @_after_deferred
    def truncate(self, n_snapshots: int, n_metrics: int | None = None) -> None:
        """Keep the first ``n_snapshots`` snapshots (and metric rows up to id ``n_metrics``);
        drop the rest. Used when training resumes from a checkpoint."""
        with self._transaction() as c:
            tables = ["snapshots", "stats", "norms"]
            if c.execute("SELECT 1 FROM sqlite_master WHERE name = 'pending'").fetchone():
                tables.append("pending")
            for table in tables:
                c.execute(f"DELETE FROM {table} WHERE snapshot >= ?", (int(n_snapshots),))
            if n_metrics is None:
                c.execute("DELETE FROM metrics WHERE snapshot >= ?", (int(n_snapshots),))
            else:
                c.execute("DELETE FROM metrics WHERE id > ?", (int(n_metrics),))
        self._reclock()

    # -- state ---------------------------------------------------------------------------------
    @property
    def n_snapshots(self) -> int:
        return len(self.run)

    @property
    @_after_deferred
    def n_metrics(self) -> int:
        """Id of the last metric row (0 when none)."""
        with self._lock:
            return int(self._conn.execute("SELECT coalesce(max(id), 0) FROM metrics").fetchone()[0])

    @property
    @_after_deferred
    def last_step(self) -> int | None:
        """Global step of the last snapshot (None before the first)."""
        return self.clock.last_global

    @_after_deferred
    def serialize(self) -> bytes:
        """The whole database as bytes (for checkpointing an in-memory run)."""
        with self._lock:
            return self._conn.serialize()

    @_after_deferred
    def restore(self, data: bytes) -> None:
        """Replace the database with :meth:`serialize` output."""
        with self._lock:
            self._conn.deserialize(data)
            _check(self._conn, self.path or "checkpointed run")
            _migrate(self._conn)
            self._layouts.clear()
            self._layout_ids.clear()
            self._reclock()

    def close(self) -> None:
        """Close the file, with every committed snapshot folded back into the run file itself.

        A TRUNCATE checkpoint copies the whole log into the run file and empties it, waiting at
        most :data:`CLOSE_TIMEOUT_SECONDS` for readers in the middle of a query. Then the file
        leaves WAL mode, so a finished run is a single file and later read-only opens leave no
        ``-wal``/``-shm`` beside it; while another process still has the file open that switch
        fails harmlessly (the run file is complete anyway). Only a reader that holds a read
        transaction open for longer keeps frames in the log; a warning then names the ``-wal``.
        """
        if self._writer is not None:
            self._writer.stop()  # runs every deferred job first
        if not self.closed:
            # what a failed expansion left (readers compute it meanwhile; a store of the file
            # that appends later writes it)
            with contextlib.suppress(Exception):
                self.expand_pending()
        self.closed = True
        with _STORES_LOCK:
            _STORES.discard(self)
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self._lock:
            if self.path is not None:
                try:
                    self._fold_back()
                finally:
                    self._conn.close()
            else:
                self._conn.close()

    def _fold_back(self) -> None:
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(CLOSE_TIMEOUT_SECONDS * 1000)}")
            busy, log, done = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error:
            return
        if busy and log > done >= 0:
            warnings.warn(
                f"{self.path}: a reader kept a read transaction open, so {log - done} log frames "
                f"stay in {self.path}-wal; copy it with the run file (or open the run once "
                "more to fold it back)",
                RuntimeWarning,
                stacklevel=3,
            )
        if not busy:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA journal_mode = DELETE")


class _Transaction:
    """``with store._transaction() as conn``: BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error),
    under the store's lock."""

    __slots__ = ("store",)

    def __init__(self, store: RunStore):
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._lock.acquire()
        try:
            self.store._conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.store._lock.release()
            raise
        return self.store._conn

    def __exit__(self, typ: Any, exc: Any, tb: Any) -> None:
        try:
            self.store._conn.execute("ROLLBACK" if typ else "COMMIT")
        finally:
            self.store._lock.release()


#: Deferred jobs waiting for a store's writer thread before :meth:`RunStore.defer` waits (so a
#: writer that falls behind slows the caller down instead of holding unbounded memory).
MAX_PENDING = 64

_STORES: weakref.WeakSet[RunStore] = weakref.WeakSet()
_STORES_LOCK = threading.Lock()  # a WeakSet is not safe to iterate while another thread adds
_writer_thread = threading.local()


def _on_writer_thread() -> bool:
    return getattr(_writer_thread, "active", False)


def _flush_writers(path: str | None, store: RunStore | None) -> None:
    """Run the jobs deferred by ``store`` and by every open store of the same file."""
    if store is not None:
        store.flush()
    if path is not None:
        here = os.path.abspath(path)
        with _STORES_LOCK:
            stores = list(_STORES)
        for other in stores:
            if (
                other is not store
                and other.path is not None
                and os.path.abspath(other.path) == here
            ):
                other.flush()


@atexit.register
def _flush_all() -> None:
    # writer threads are daemons: run what they still hold before the interpreter ends
    with _STORES_LOCK:
        stores = list(_STORES)
    for store in stores:
        with contextlib.suppress(Exception):
            store.flush()


class _Writer:
    """A daemon thread that runs deferred jobs one at a time, in the order they came."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Callable[[], Any] | None] = queue.Queue(MAX_PENDING)
        self._thread = threading.Thread(target=self._loop, name="widthwise-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        _writer_thread.active = True
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                job()
            except BaseException:  # a job records its own failures; the thread must live on
                pass
            finally:
                job = None  # holds the store (and the tracker) alive while idle otherwise
                self._queue.task_done()

    def submit(self, job: Callable[[], Any]) -> None:
        self._queue.put(job)

    def flush(self) -> None:
        if self._thread.is_alive():
            self._queue.join()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def stop_soon(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)


class _Checkpointer:
    """A daemon thread with its own connection: a passive checkpoint at most
    :data:`CHECKPOINT_SECONDS` after each commit. sqlite releases the GIL while it copies and
    syncs, so training does not wait for it; a failure (disk full, file gone) is left to the
    next commit or to close(), never raised."""

    def __init__(self, path: str):
        self.path = path
        self.dirty = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="widthwise-checkpoint", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        conn = None
        try:
            while not self._stopping.is_set():
                if not self.dirty.wait(timeout=1.0):
                    continue
                if self._stopping.wait(CHECKPOINT_SECONDS or 1.0):
                    break
                self.dirty.clear()
                try:
                    if conn is None:
                        conn = _connect(self.path, readonly=False)
                        conn.execute("PRAGMA busy_timeout = 0")
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error:
                    pass
        finally:
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()

    def stop(self) -> None:
        self._stopping.set()
        self.dirty.set()
        self._thread.join(timeout=10)


def _why(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or exc)


def _writer_pragmas(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode = WAL")
    # WAL + NORMAL: a commit survives a killed process (not a power cut) without an fsync;
    # checkpoints (CHECKPOINT_SECONDS) bring the commits into the run file itself
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a file of schema 1 or 2 to schema 3 (1 -> 2 adds ``user_step`` and renumbers
    repeated steps; 2 -> 3 adds the empty ``pending`` and ``layouts`` tables)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for stmt in _PENDING_SCHEMA.strip().split(";"):
            name = stmt.split("(")[0].split()[-1] if stmt.strip() else ""
            if name and name not in tables:
                conn.execute(stmt)
        if version >= 2:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
            return
        for table in ("snapshots", "metrics"):
            cols = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            if "user_step" not in cols:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN user_step INTEGER")
        conn.execute("UPDATE snapshots SET user_step = step")
        conn.execute("UPDATE metrics SET user_step = step")
        rows = conn.execute(
            "SELECT snapshot, step, epoch FROM snapshots ORDER BY snapshot"
        ).fetchall()
        glob, _ = _renumber([(r[1], r[2]) for r in rows])
        conn.executemany(
            "UPDATE snapshots SET step = ? WHERE snapshot = ?",
            [(int(g), r[0]) for g, r in zip(glob, rows)],
        )
        conn.execute(
            "UPDATE metrics SET step = (SELECT s.step FROM snapshots s "
            "WHERE s.snapshot = metrics.snapshot) WHERE snapshot IS NOT NULL"
        )
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


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
