"""PyTorch Lightning: track channel-norm variance from ``Trainer.fit`` with one callback::

    from widthwise.integrations.lightning import WidthCallback

    trainer = L.Trainer(callbacks=[WidthCallback("runs/mlp.wwrun", every_n_steps=20)])
    trainer.fit(model, train_loader, val_loader)      # or fit(..., ckpt_path=...) to resume

The callback snapshots the weights when a fresh fit starts, every ``every_n_steps`` optimizer
steps and at the end of each training epoch, records ``trainer.callback_metrics`` with each
snapshot (validation metrics once per validation), and writes the HTML report next to the run
file when ``fit`` ends. Its state travels in Lightning checkpoints, so
``trainer.fit(..., ckpt_path=...)`` continues the same run file with every snapshot exactly once.

Works with ``lightning`` (``import lightning.pytorch``) and with the older ``pytorch_lightning``
package; when both are installed the callback is accepted by either ``Trainer``.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from widthwise.integrations import require
from widthwise.integrations._session import TrackingSession, example_from_loader, to_device

__all__ = ["WidthCallback"]


def _callback_bases() -> tuple[type, ...]:
    bases = []
    for name in ("lightning.pytorch", "pytorch_lightning"):
        with contextlib.suppress(ImportError):
            bases.append(importlib.import_module(name).Callback)
    if not bases:  # neither installed: raise the one-line message naming the extra
        require("lightning.pytorch", "lightning", "widthwise.integrations.lightning")
    # Both packages can be installed side by side, each with its own Trainer that checks
    # isinstance(callback, <its> Callback): deriving from every installed base satisfies both.
    return tuple(bases)


class WidthCallback(*_callback_bases()):  # type: ignore[misc]
    """Record a widthwise run while Lightning trains.

    Args:
        path: the run file to write (created, or continued on resume). Defaults to
            ``<trainer.default_root_dir>/widthwise.wwrun``.
        every_n_steps: snapshot every this many optimizer steps (``trainer.global_step``);
            ``0``/``None`` for epoch ends only.
        at_epoch_end: snapshot after the last training batch of every epoch (before the epoch's
            validation and checkpoint; validation metrics are recorded at the same step).
        example_inputs: inputs used once to find the channel groups (moved to the module's
            device). Defaults to ``pl_module.example_input_array``, else two training samples
            (a tuple batch gives its first element).
        tracker: drive this existing ``WidthTracker`` instead of creating one.
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (or ``TensorBoardLogger``) that also
            receives each group's variance and channel-norm histograms; ``"logger"`` uses the
            trainer's TensorBoard logger.
        report: ``True`` writes ``<run file>.html`` when fit ends; a path writes it there;
            ``False`` skips it.
        **tracker_kwargs: passed on to ``WidthTracker`` (``mode``, ``keep_channel_norms``, ...).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        every_n_steps: int | None = 50,
        at_epoch_end: bool = True,
        example_inputs: Any = None,
        tracker: Any = None,
        writer: Any = None,
        report: bool | str | Path | None = True,
        **tracker_kwargs: Any,
    ) -> None:
        super().__init__()
        self._validation_keys: set[str] = set()
        self._use_trainer_logger = isinstance(writer, str) and writer == "logger"
        self._session = TrackingSession(
            path,
            tracker=tracker,
            every_n_steps=every_n_steps,
            at_epoch_end=at_epoch_end,
            example_inputs=example_inputs,
            writer=None if self._use_trainer_logger else writer,
            report=report,
            tracker_kwargs=tracker_kwargs,
        )
        # path=None is resolved against trainer.default_root_dir in on_train_start.
        self._default_path = path is None and tracker is None

    @property
    def tracker(self) -> Any:
        """The ``WidthTracker`` (``None`` until ``fit`` starts)."""
        return self._session.tracker

    @property
    def state_key(self) -> str:
        path = self._session.path
        return f"WidthCallback[{path.name if path is not None else 'default'}]"

    # ------------------------------------------------------------------------------- hooks
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        # Runs after checkpoint restore (load_state_dict) and once the dataloaders exist.
        session = self._session
        if self._default_path and session.path is None:
            session.path = Path(trainer.default_root_dir) / "widthwise.wwrun"
        if self._use_trainer_logger and session.logger is None:
            session.logger = _trainer_tensorboard(trainer)
        example = None
        if not session.started:
            example = session.example_inputs
            if example is None:
                example = getattr(pl_module, "example_input_array", None)
            if example is None:
                example = example_from_loader(trainer.train_dataloader)
            example = to_device(example, pl_module.device)
        session.start(pl_module, example)
        session.fit_start(trainer.current_epoch, self._train_metrics(trainer))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs, batch, batch_idx) -> None:
        session, step, epoch = self._session, trainer.global_step, trainer.current_epoch
        session.step(step, epoch, self._train_metrics(trainer))
        # The epoch-end snapshot is taken here, at the epoch's last batch, rather than in
        # on_train_epoch_end: ModelCheckpoint saves after the epoch-end validation, before
        # on_train_epoch_end, and a snapshot missing from the checkpoint would be lost on resume.
        if batch_idx + 1 >= trainer.num_training_batches:
            session.epoch_end(step, epoch, self._train_metrics(trainer))

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        # Loaders of unknown length never reach the test above.
        session, step = self._session, trainer.global_step
        if session.last_step is None or step > session.last_step:
            session.epoch_end(step, trainer.current_epoch, self._train_metrics(trainer))

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._before_validation = dict(trainer.callback_metrics)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        # callback_metrics keeps every value ever logged; the ones validation just replaced are
        # recorded now, at this step, and left out of later snapshots (where they would be stale).
        before = getattr(self, "_before_validation", {})
        fresh = {k: v for k, v in trainer.callback_metrics.items() if before.get(k) is not v}
        self._validation_keys.update(fresh)
        self._session.log_metrics(trainer.global_step, trainer.current_epoch, fresh)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        # A fit limited by max_steps can stop mid-epoch: its final weights get a snapshot too.
        self._session.finish(
            trainer.global_step, trainer.current_epoch, self._train_metrics(trainer)
        )

    def _train_metrics(self, trainer: Any) -> dict[str, Any]:
        return {k: v for k, v in trainer.callback_metrics.items() if k not in self._validation_keys}

    # ---------------------------------------------------------------------- checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return self._session.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self._session.load_state_dict(state_dict)


def _trainer_tensorboard(trainer: Any) -> Any:
    from widthwise.integrations.tensorboard import TensorBoardLogger

    writer = getattr(trainer.logger, "experiment", None)
    if writer is None or not hasattr(writer, "add_histogram"):
        raise ValueError(
            "WidthCallback(writer='logger') needs a TensorBoard logger on the trainer: "
            "Trainer(logger=lightning.pytorch.loggers.TensorBoardLogger(...))"
        )
    return TensorBoardLogger(writer)
