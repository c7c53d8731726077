"""The framework-neutral half of the training callbacks.

A callback only translates its framework's hooks into three calls — :meth:`TrackingSession.start`,
:meth:`TrackingSession.step` / :meth:`TrackingSession.epoch_end` and
:meth:`TrackingSession.finish` — so snapshot scheduling, resume and reporting behave the same
under Lightning, the Hugging Face Trainer and anything added later.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from widthwise.distributed import is_writer
from widthwise.integrations import scalar_metrics

STATE_VERSION = 1


class TrackingSession:
    """Owns (or borrows) a ``WidthTracker`` and decides when it snapshots.

    Args:
        path: run file to write; ignored when ``tracker`` is given. The callbacks fill in their
            default (under the trainer's output folder) before :meth:`start` when it is ``None``.
        tracker: an existing tracker to drive instead of creating one at ``start``.
        every_n_steps: snapshot whenever the optimizer step count is a multiple of this
            (``0`` or ``None``: never by step).
        at_epoch_end: also snapshot at the end of every training epoch.
        at_start: snapshot the untrained weights when a fresh fit starts (the paper's stage 1
            is the dip right after initialisation).
        example_inputs: passed to ``WidthTracker`` for grouping, unless :meth:`start` gets
            inputs (the callbacks resolve defaults and move them to the model's device).
        writer: a ``SummaryWriter`` or a :class:`~widthwise.integrations.tensorboard.TensorBoardLogger`.
        report: where to save the HTML report at the end of training: ``True`` for next to the run
            file, a path, or ``False``/``None`` for none.
        tracker_kwargs: further keyword arguments for ``WidthTracker``.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        tracker: Any = None,
        every_n_steps: int | None = 50,
        at_epoch_end: bool = True,
        at_start: bool = True,
        example_inputs: Any = None,
        writer: Any = None,
        report: bool | str | Path | None = True,
        tracker_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if every_n_steps is not None and (
            not isinstance(every_n_steps, int)
            or isinstance(every_n_steps, bool)
            or every_n_steps < 0
        ):
            raise ValueError(
                f"every_n_steps must be a non-negative int or None, got {every_n_steps!r}"
            )
        self.path = None if path is None else Path(path)
        self.tracker = tracker
        self.every_n_steps = every_n_steps or 0
        self.at_epoch_end = bool(at_epoch_end)
        self.at_start = bool(at_start)
        self.example_inputs = example_inputs
        self.report_target = report
        self.tracker_kwargs = dict(tracker_kwargs or {})
        self.logger = _as_logger(writer)
        self.last_step: int | None = None
        self._pending: dict | None = None
        self._finished = False

    # ----------------------------------------------------------------------------- lifecycle
    def start(self, model: Any, example_inputs: Any = None) -> None:
        """Create the tracker (once) and apply a state restored from a checkpoint, if any."""
        if self.tracker is None:
            from widthwise.tracker import WidthTracker

            inputs = example_inputs if example_inputs is not None else self.example_inputs
            if inputs is None:
                raise ValueError(
                    "widthwise needs example inputs to find the channel groups: pass "
                    "example_inputs=... to the callback"
                )
            if self.path is None:
                raise ValueError("pass a run file path (path=...) or a tracker (tracker=...)")
            self.tracker = WidthTracker(model, inputs, store=self.path, **self.tracker_kwargs)
        self._finished = False
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.tracker.load_state_dict(pending["tracker"])
            self.last_step = pending["last_step"]

    @property
    def started(self) -> bool:
        return self.tracker is not None

    def fit_start(self, epoch: int | None = None, metrics: Mapping[str, Any] | None = None) -> None:
        """Snapshot the initial weights unless this fit resumes an earlier one."""
        if self.at_start and self.last_step is None:
            self.snapshot(0, epoch, metrics)

    def step(self, step: int, epoch: int | None, metrics: Mapping[str, Any] | None = None) -> None:
        """Called after every optimizer step with the number of steps taken so far."""
        if self.every_n_steps and step % self.every_n_steps == 0:
            self.snapshot(step, epoch, metrics)

    def epoch_end(self, step: int, epoch: int | None, metrics: Mapping[str, Any] | None = None):
        """Called once the epoch's last optimizer step is done (before any checkpoint of it)."""
        if self.at_epoch_end:
            self.snapshot(step, epoch, metrics)

    def snapshot(self, step: int, epoch: int | None, metrics: Mapping[str, Any] | None) -> bool:
        """Snapshot at ``step`` unless that step already has one; returns whether it did."""
        if self.tracker is None or (self.last_step is not None and step <= self.last_step):
            return False
        values = scalar_metrics(metrics or {})
        taken = self.tracker.snapshot(step=step, epoch=epoch, metrics=values or None)
        if taken is False:
            return False
        self.last_step = step
        if self.logger is not None:
            try:
                self.logger.log(self.tracker, step=step)
            except Exception as err:  # like the tracker: never fail the training it observes
                warnings.warn(
                    f"widthwise: TensorBoard logging stopped ({type(err).__name__}: {err}); "
                    "the run file keeps recording",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.logger = None
        return True

    def log_metrics(self, step: int, epoch: int | None, metrics: Mapping[str, Any]) -> None:
        values = scalar_metrics(metrics)
        if self.tracker is not None and values:
            self.tracker.log_metrics(values, step=step, epoch=epoch)

    def finish(self, step: int | None = None, epoch: int | None = None, metrics=None) -> Any:
        """Take a last snapshot at ``step`` (if new) and write the report; returns it or None."""
        if self.tracker is None or self._finished:
            return None
        self._finished = True
        if step is not None and (self.every_n_steps or self.at_epoch_end):
            self.snapshot(step, epoch, metrics)
        if self.logger is not None:
            with contextlib.suppress(Exception):
                self.logger.flush()
        target = self.report_target
        if not target or not is_writer():
            return None
        try:
            report = self.tracker.report()
            if target is True:
                base = self.path or getattr(getattr(self.tracker, "store", None), "path", None)
                if base is None:  # an in-memory tracker: nowhere obvious to write
                    return report
                target = Path(base).with_suffix(".html")
            report.save_html(target)
            return report
        except Exception as err:  # the run file is safe; a report failure must not fail training
            warnings.warn(
                f"widthwise: the run was recorded but its report could not be written ({err}); "
                f"build it later with `widthwise report {self.path or '<run file>'}`",
                RuntimeWarning,
                stacklevel=2,
            )
            return None

    # --------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        if self.tracker is None:
            # Saved before training started (or restored and not yet started): keep what we have.
            return dict(self._pending) if self._pending is not None else {}
        return {
            "version": STATE_VERSION,
            "tracker": self.tracker.state_dict(),
            "last_step": self.last_step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        version = state.get("version")
        if version != STATE_VERSION:
            raise ValueError(
                f"this checkpoint holds widthwise callback state version {version!r}; this "
                f"widthwise reads version {STATE_VERSION}: resume with the widthwise that wrote it"
            )
        self._pending = {"tracker": state["tracker"], "last_step": state.get("last_step")}
        if self.tracker is not None:
            self.start(None)


def example_from_loader(loader: Any, drop_keys: tuple[str, ...] = ()) -> Any:
    """A two-sample model input built from a training dataloader without disturbing training.

    Iterating the training loader would draw from the global RNG (shuffling samplers) and shift
    the data order of the run being tracked, so map-style data sets are indexed and collated
    directly; only iterable data sets are iterated, under a forked RNG. A tuple or list batch
    gives its first element; a mapping batch loses ``drop_keys`` (labels).
    """
    if loader is None:
        return None
    dataset = getattr(loader, "dataset", None)
    collate = getattr(loader, "collate_fn", None)
    if dataset is not None and collate is not None and hasattr(dataset, "__getitem__"):
        try:
            n = len(dataset)
        except TypeError:
            n = 0
        batch = collate([dataset[i] for i in range(min(n, 2))]) if n else None
    else:
        batch = None
    if batch is None:
        import torch

        with torch.random.fork_rng(devices=[]):
            batch = next(iter(loader))
    if isinstance(batch, Mapping):
        batch = {k: v for k, v in batch.items() if k not in drop_keys}
    elif isinstance(batch, (tuple, list)) and batch:
        batch = batch[0]
    return batch


def to_device(data: Any, device: Any) -> Any:
    """Tensors in ``data`` (nested in mappings, tuples and lists) moved to ``device``."""
    import torch

    if device is None:
        return data
    if isinstance(data, torch.Tensor):
        return data.to(device)
    if isinstance(data, Mapping):
        return {k: to_device(v, device) for k, v in data.items()}
    if isinstance(data, (tuple, list)):
        return type(data)(to_device(v, device) for v in data)
    return data


def _as_logger(writer: Any) -> Any:
    if writer is None:
        return None
    from widthwise.integrations.tensorboard import TensorBoardLogger

    return writer if isinstance(writer, TensorBoardLogger) else TensorBoardLogger(writer)
