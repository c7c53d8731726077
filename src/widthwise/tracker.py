"""Record the channel-norm statistics of every group during training.

>>> import torch
>>> from widthwise.groups import ChannelGroup, Member
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> hidden = ChannelGroup("0", 8, (Member("0.weight", 0, "producer"),
...                                Member("2.weight", 1, "consumer")))
>>> tracker = WidthTracker(model, groups=[hidden])        # in memory; pass a path to keep a file
>>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
>>> for step in range(3):
...     loss = model(torch.randn(16, 4)).square().mean()
...     opt.zero_grad(); loss.backward(); opt.step()
...     ok = tracker.snapshot(step, metrics={"loss": loss.item()})
>>> tracker.history()[["snapshot", "step", "group", "width"]]
   snapshot  step group  width
0         0     0     0      8
1         1     1     0      8
2         2     2     0      8
>>> tracker.channel_norms("0")[1].shape
(3, 8)
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
import traceback
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from widthwise.distributed import has_sharded_parameters, is_writer, plain_copy, unwrap
from widthwise.groups import ChannelGroup
from widthwise.norms import Mode, ModelChangedError, NormPlan
from widthwise.store import Run, RunStore, mark_changed

if TYPE_CHECKING:
    from widthwise.report import Report

__all__ = ["TrackerWarning", "WidthTracker"]

_STATE_VERSION = 1


class TrackerWarning(RuntimeWarning):
    """A snapshot could not be taken; training goes on and the failure is recorded in the run."""


class WidthTracker:
    """Takes snapshots of per-channel norm statistics while a model trains.

    Args:
        model: the model being trained; DDP-, FSDP2- or ``torch.compile``-wrapped is fine (group
            names are those of the plain model).
        example_inputs: inputs for one forward pass, used to find the channel groups.
        store: ``None`` (in memory), a path to a run file (created, or appended to when it exists
            and holds the same groups), or a :class:`RunStore`. Under ``torch.distributed`` only
            rank 0 writes the file; other ranks keep their record in memory.
        groups: channel groups to track instead of ``find_groups(model, example_inputs)``.
        mode: ``"product"`` (the paper's metric) or ``"incoming"`` (producer rows only).
        keep_channel_norms: store each snapshot's per-channel norm vectors (for distributions and
            correlations); statistics are always stored.
        gates: also record per-gate statistics of recurrent and attention groups.
        meta: extra JSON-serialisable information to keep with the run.
        background: compute the statistics and write them on the store's writer thread, so
            ``snapshot()`` costs the training loop only the reductions over the weights (every
            read of the run still sees every snapshot taken before it; ``close()`` and the end
            of the process write what is pending, but a process killed with SIGKILL loses the
            snapshots still pending, a few milliseconds' worth). ``None`` (default): in the
            background for an in-memory run; for a run file, the calling thread commits the
            reductions in one small transaction and the writer thread writes the statistics
            rows (:meth:`widthwise.store.RunStore.append_pending`), so a snapshot is in the
            file, and survives a SIGKILL, when ``snapshot()`` returns. ``False``: all of it in
            the calling thread.

    Raises:
        RunFileError: ``store`` cannot be created or written, is not a run file, or holds
            other channel groups (one line that says what to do).
        ValueError: a :class:`RunStore` made for other channel groups, or no way to find groups.

    ``snapshot()`` never raises: a failure becomes one :class:`TrackerWarning` and a snapshot row
    flagged ``"error"`` (a failure on the writer thread is warned about by the next call into
    the tracker). Under DDP/FSDP, call ``snapshot()`` on every rank (it runs one collective
    for sharded parameters).

    Steps may restart every epoch (``for step, batch in enumerate(loader)``): the run keeps a
    global step that always increases and the step you passed as ``user_step`` (see
    :class:`widthwise.store.StepClock`). If a module is replaced while training
    (``model[2] = nn.Linear(...)``), the next snapshot reads the new module, warns once and flags
    its groups ``model_changed``; if the new module has other shapes, snapshots fail (recorded,
    one warning) until a new tracker is made for the changed model.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any = None,
        store: str | os.PathLike | RunStore | None = None,
        *,
        groups: Sequence[ChannelGroup] | None = None,
        mode: Mode = "product",
        keep_channel_norms: bool = True,
        gates: bool = True,
        meta: Mapping[str, Any] | None = None,
        background: bool | None = None,
    ):
        if groups is None:
            if example_inputs is None:
                raise ValueError(
                    "WidthTracker needs example_inputs (one batch for a forward pass) to find "
                    "the channel groups, or groups=find_groups(...)"
                )
            from widthwise.groups import find_groups

            plain = unwrap(model)
            if has_sharded_parameters(plain):  # FSDP2: group a gathered, unsharded copy
                plain = plain_copy(plain)
            groups = find_groups(plain, example_inputs)
        self.model = model
        self.plan = NormPlan(model, groups, mode, gates=gates)
        self.keep_channel_norms = keep_channel_norms
        self.background = bool(background)
        self._n_failed = 0
        self._count = threading.Lock()
        # the first failure on the writer thread not yet warned about (warned in the caller's)
        self._late: str | None = None
        self._warned = False
        self._warned_swap = False
        self._loaded = False
        if not self.plan.groups:
            warnings.warn(
                f"no channel groups in {type(unwrap(model)).__name__}: nothing will be tracked "
                "(find_groups found no layer whose output channels can be resized; its warnings "
                "say what was left out)",
                TrackerWarning,
                stacklevel=2,
            )
        info = {
            "mode": mode,
            "model": _describe(model, self.plan.groups),
            "torch_version": torch.__version__,
            "user": dict(meta or {}),
        }
        if isinstance(store, RunStore):
            if store.run.groups != list(self.plan.groups):
                raise ValueError(
                    "the RunStore was created for other channel groups than this tracker's; "
                    "create it with RunStore.create(path, tracker_groups) or pass a path"
                )
            self.store = store
        elif store is None or not is_writer():
            self.store = RunStore.memory(self.plan.groups, info)
        else:
            self.store = RunStore.create(store, self.plan.groups, info, append=True)
        self._preexisting = self.store.n_snapshots
        # a run file by default: the caller commits the reductions, the writer the statistics
        self._reductions_first = background is None and self.store.path is not None
        if background is None:
            self.background = self.store.path is None

    # -- recording -----------------------------------------------------------------------------
    @property
    def groups(self) -> list[ChannelGroup]:
        return list(self.plan.groups)

    @property
    def run(self) -> Run:
        """A :class:`~widthwise.store.Run` view of what has been recorded."""
        return self.store.run

    def snapshot(
        self,
        step: int | None = None,
        epoch: int | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record the statistics of every group now. Returns ``True`` on success.

        ``step`` defaults to the previous snapshot's step + 1 (0 for the first); a step that
        repeats or goes back (steps counted per epoch) continues the run's global step.
        """
        if self._preexisting and not self._loaded:
            self._preexisting = 0
            warnings.warn(
                f"{self.store.path} already holds snapshots of an earlier run; new ones are "
                "appended after them. When resuming from a checkpoint, call "
                "tracker.load_state_dict(...) first so that snapshots taken after the checkpoint "
                "are dropped",
                TrackerWarning,
                stacklevel=2,
            )
        if metrics is not None and not isinstance(metrics, Mapping):
            # a bad metrics argument must not cost the statistics: they are recorded without it
            self._failed_metrics(TypeError(f"metrics must be a dict, not {type(metrics).__name__}"))
            metrics = None
        self._warn_late()
        try:
            step = None if step is None else int(step)
            epoch = None if epoch is None else int(epoch)
            wall = time.time()
            swapped = self._check_model()
            if self.store.closed:
                raise RuntimeError("the tracker was closed")
            if metrics is not None:  # the values now: a tensor may change before the write
                metrics = {k: _now(v) for k, v in metrics.items()}
            # the only pass over the weights; the writer thread gets NumPy (no torch call there)
            if self._reductions_first:
                # the plan's own buffer where it can: append_pending copies it at once
                out = self.plan.reduce(fresh=False)
                # (on the CPU already: the same memory, no copy)
                reduced = out.numpy() if out.is_cpu else out.cpu().numpy()
                # durable now, cheap for the caller: the reductions in one small transaction;
                # the statistics rows follow on the writer thread (readers compute them until
                # then, from the same numbers with the same code)
                self.store.append_pending(
                    step,
                    epoch,
                    wall,
                    metrics,
                    reduced,
                    self.plan.layout,
                    changed=swapped,
                    keep_norms=self.keep_channel_norms,
                )
                # the job holds the tensor: freeing a torch tensor releases the GIL, which
                # would hand it to the woken writer in the middle of this call
                self.store.defer_expansion(functools.partial(self._expansion_failed, reduced))
                return True
            reduced = self.plan.reduce().cpu().numpy()
            write = functools.partial(self._write, reduced, step, epoch, wall, metrics, swapped)
            if not self.background:
                return write()
            self.store.defer(write)
            return True
        except Exception as exc:
            self._failed(exc, step, epoch, metrics)
            return False

    def _write(
        self,
        reduced: np.ndarray,
        step: int | None,
        epoch: int | None,
        wall: float,
        metrics: Mapping[str, Any] | None,
        swapped: set[str],
    ) -> bool:
        """The statistics and the transaction of one snapshot (on the writer thread when
        ``background``)."""
        try:
            stats = self.plan.stats_from(reduced)
            mark_changed(stats.columns, swapped)
            norms = stats.norms if self.keep_channel_norms else None
            self.store.append_snapshot(step, epoch, wall, metrics, stats.columns, norms)
            return True
        except Exception as exc:
            self._failed(exc, step, epoch, metrics, late=self.background)
            return False

    def _expansion_failed(self, reduced: Any, failed: list[tuple[int, str]]) -> None:
        """On the writer thread: statistics of pending snapshots that could not be computed
        (recorded by the store as failed snapshots); warned at the next call."""
        with self._count:
            self._n_failed += len(failed)
        if self._late is None:
            self._late = failed[0][1]

    @property
    def n_failed(self) -> int:
        """Snapshots and metric records that failed (each one recorded or at least counted)."""
        with contextlib.suppress(Exception):
            self.store.flush()
        return self._n_failed

    def flush(self) -> None:
        """Wait until every snapshot taken so far is written (reads do this themselves)."""
        self.store.flush()
        self._warn_late()

    def _warn_late(self) -> None:
        msg, self._late = self._late, None
        if msg is not None:
            self._warn_failure(msg)

    def _check_model(self) -> set[str]:
        """Rebind the plan when a module it reads was replaced; the names of the groups that
        read a replaced module (empty when nothing changed)."""
        gone = self.plan.stale()
        if not gone:
            return set()
        self.store.flush()  # the writer thread reads the plan
        self.plan.rebind()  # ModelChangedError when the shapes changed: recorded as a failure
        prefixes = tuple(f"{p}." for p in gone)
        swapped = {
            g.name
            for g in self.plan.groups
            if any(m.param.startswith(prefixes) or m.param in gone for m in g.members)
        }
        swapped = swapped or {g.name for g in self.plan.groups}
        if not self._warned_swap:
            self._warned_swap = True
            warnings.warn(
                f"module {', '.join(gone)} of the model was replaced since the last snapshot; the "
                "tracker now reads the new module (same parameter shapes), and this snapshot of "
                f"{', '.join(sorted(swapped))} is flagged 'model_changed'. If the new module "
                "changes the architecture, start a new WidthTracker with a new run file",
                TrackerWarning,
                stacklevel=3,
            )
        return swapped

    def _failed(
        self, exc: Exception, step: Any, epoch: Any, metrics: Any, *, late: bool = False
    ) -> None:
        with self._count:
            self._n_failed += 1
        msg = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, ModelChangedError):
            tb = traceback.extract_tb(exc.__traceback__)
            msg_at = f"{msg}, at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else msg
        else:
            msg_at = msg
        if late:  # on the writer thread: warn in the caller's thread, at its next call
            if self._late is None:
                self._late = msg_at
        else:
            self._warn_failure(msg_at)
        try:
            try:
                step = None if step is None else int(step)
            except (TypeError, ValueError):
                step = None
            series = self.plan.series
            k = len(series)
            nan = np.full(k, np.nan)
            cols: dict[str, Any] = {
                "group": [s.group for s in series],
                "gate": [s.gate for s in series],
                "variance": nan,
                "mean": nan,
                "max": nan,
                "min": nan,
                "n_nonfinite": np.zeros(k, dtype=np.int64),
                "n_zero": np.zeros(k, dtype=np.int64),
                "flag": ["error"] * k,
            }
            try:
                epoch = None if epoch is None else int(epoch)
            except (TypeError, ValueError):
                epoch = None
            self.store.append_snapshot(step, epoch, time.time(), metrics, cols, None, error=msg)
        except Exception:  # the store itself is failing: counting is all that is left
            pass

    def _warn_failure(self, msg: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"widthwise snapshot failed and was recorded as an error ({msg}); "
                "training continues. Further failures are recorded without a warning",
                TrackerWarning,
                stacklevel=4,
            )

    def log_metrics(
        self, metrics: Mapping[str, Any], step: int | None = None, epoch: int | None = None
    ) -> None:
        """Record user metrics (loss, accuracy, ...) between snapshots; never raises.

        ``step`` is your step, placed on the run's global scale like a snapshot's (``None``:
        the last snapshot's step).
        """
        try:
            self.store.log_metrics(metrics, step=step, epoch=epoch)
        except Exception as exc:
            self._failed_metrics(exc)

    def _failed_metrics(self, exc: Exception) -> None:
        with self._count:
            self._n_failed += 1
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"widthwise could not record metrics ({type(exc).__name__}: {exc})",
                TrackerWarning,
                stacklevel=3,
            )

    # -- reading -------------------------------------------------------------------------------
    def history(self, *, gates: bool = False) -> pd.DataFrame:
        """Statistics per snapshot and group; see :meth:`widthwise.store.Run.history`."""
        return self.run.history(gates=gates)

    def channel_norms(self, group: str, gate: str = "") -> tuple[np.ndarray, np.ndarray]:
        """``(steps, norms[n_snapshots, width])`` for one group."""
        return self.run.channel_norms(group, gate)

    def metrics(self) -> pd.DataFrame:
        return self.run.metrics()

    def report(self, *, name: str | None = None) -> Report:
        """A :class:`widthwise.report.Report` of the run so far (``Report.from_run``).

        A convenience for users: the one place where a lower layer reaches up to the view, so
        the import happens here, at call time (see docs/design.md).
        """
        from widthwise.report import Report

        return Report.from_run(self.run, name=name)

    # -- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to resume the same record.

        For a file run this is a few counters (the file holds the data); an in-memory run carries
        its whole database.
        """
        return {
            "version": _STATE_VERSION,
            "n_snapshots": self.store.n_snapshots,
            "n_metrics": self.store.n_metrics,
            "last_step": self.store.last_step,
            "path": self.store.path,
            "records": self.store.serialize() if self.store.path is None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the record saved in ``state``: snapshots and metrics recorded after that
        checkpoint are dropped, so a resumed run has no duplicated or lost snapshots."""
        try:
            n_snap, n_met = int(state["n_snapshots"]), int(state["n_metrics"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                "not a WidthTracker state_dict (expected keys n_snapshots, n_metrics, last_step); "
                "pass the dict that tracker.state_dict() returned"
            ) from e
        if int(state.get("version", 1)) > _STATE_VERSION:
            raise ValueError("this WidthTracker state_dict comes from a newer widthwise")
        records = state.get("records")
        if records is not None and self.store.path is None:
            self.store.restore(records)
        elif self.store.path is not None and is_writer():
            have = self.store.n_snapshots
            if have < n_snap:
                warnings.warn(
                    f"{self.store.path} holds {have} snapshots but the checkpoint was taken after "
                    f"{n_snap}; the missing ones cannot be recovered",
                    TrackerWarning,
                    stacklevel=2,
                )
        self.store.truncate(n_snap, n_met)  # also resets the store's step clock to the checkpoint
        self._loaded = True

    def close(self) -> None:
        """Write what is pending and close the run file (the record stays readable with
        :func:`widthwise.open_run`)."""
        self.store.close()
        self._warn_late()

    def __repr__(self) -> str:
        where = self.store.path or "memory"
        return (
            f"WidthTracker({type(unwrap(self.model)).__name__}, groups={len(self.plan.groups)}, "
            f"snapshots={self.store.n_snapshots}, store={where!r})"
        )


def _now(value: Any) -> Any:
    """A one-element tensor's value now (the write may come later); anything else as it is."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        try:
            return value.item()
        except Exception:  # (a meta tensor, ...) the store records what it cannot read as null
            return value
    return value


def _describe(model: nn.Module, groups: Sequence[ChannelGroup]) -> dict[str, Any]:
    inner = unwrap(model)
    return {
        "class": f"{type(inner).__module__}.{type(inner).__qualname__}",
        "n_parameters": int(sum(p.numel() for p in inner.parameters())),
        "n_groups": len(groups),
        "widths": {g.name: g.width for g in groups},
    }
