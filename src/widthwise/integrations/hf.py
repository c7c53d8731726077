"""Hugging Face ``Trainer``: track channel-norm variance with one ``TrainerCallback``::

    from widthwise.integrations.hf import WidthTrainerCallback

    width = WidthTrainerCallback("out/run.wwrun", every_n_steps=20)
    trainer = Trainer(model, args, train_dataset=ds, callbacks=[width])
    trainer.train()                     # or trainer.train(resume_from_checkpoint=...)

The callback snapshots the weights when a fresh training starts, every ``every_n_steps``
optimizer steps (``state.global_step``) and at every epoch end, records what the Trainer logs
(``on_log``: loss, learning rate, ``eval_*``), and writes the HTML report when training ends.

Resume: the callback is an ``ExportableState``, so its state is saved in every checkpoint's
``trainer_state.json`` (``stateful_callbacks``) and ``trainer.train(resume_from_checkpoint=...)``
continues the same run file with every snapshot exactly once — whether or not
``TrainingArguments.restore_callback_states_from_checkpoint`` is set.
"""

from __future__ import annotations

import base64
import math
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from widthwise.integrations import require
from widthwise.integrations._session import TrackingSession, example_from_loader, to_device

_trainer_callback = require("transformers.trainer_callback", "hf", "widthwise.integrations.hf")
require("accelerate", "hf", "the Hugging Face Trainer")

__all__ = ["WidthTrainerCallback"]

_LABEL_KEYS = ("labels", "label", "label_ids")

# Live callbacks by run file. With `restore_callback_states_from_checkpoint=True` the Trainer
# rebuilds every stateful callback as `type(cb)(**state["args"])`; that lookup hands it the
# configured instance (model, writer, example inputs cannot go through JSON) instead.
_LIVE: weakref.WeakValueDictionary[str, WidthTrainerCallback] = weakref.WeakValueDictionary()
# Callbacks whose default run file (under args.output_dir) is not known before training starts.
_UNRESOLVED: weakref.WeakSet[WidthTrainerCallback] = weakref.WeakSet()


class WidthTrainerCallback(_trainer_callback.TrainerCallback, _trainer_callback.ExportableState):  # type: ignore[name-defined]
    """Record a widthwise run while a Hugging Face ``Trainer`` trains.

    Args:
        path: the run file to write (created, or continued on resume). Defaults to
            ``<args.output_dir>/widthwise.wwrun``.
        every_n_steps: snapshot every this many optimizer steps; ``0``/``None`` for epoch ends only.
        at_epoch_end: snapshot at the end of every epoch.
        example_inputs: inputs used once to find the channel groups (a dict of model keyword
            arguments, or a tensor). Defaults to two training examples, labels removed.
        tracker: drive this existing ``WidthTracker`` instead of creating one.
        writer: a ``torch.utils.tensorboard.SummaryWriter`` (or ``TensorBoardLogger``) that also
            receives each group's variance and channel-norm histograms.
        report: ``True`` writes ``<run file>.html`` when training ends; a path writes it there;
            ``False`` skips it.
        **tracker_kwargs: passed on to ``WidthTracker`` (``mode``, ``keep_channel_norms``, ...).
    """

    def __new__(cls, *args: Any, _resume_into: str | None = None, **kwargs: Any):
        if _resume_into is not None:
            live = _LIVE.get(_resume_into)
            if live is None and len(_UNRESOLVED) == 1:
                live = next(iter(_UNRESOLVED))
            if live is None:
                raise ValueError(
                    f"the checkpoint continues the widthwise run {_resume_into!r}, but no "
                    "WidthTrainerCallback for that run file was passed to the Trainer"
                )
            return live
        return super().__new__(cls)

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
        _resume_into: str | None = None,
        **tracker_kwargs: Any,
    ) -> None:
        if _resume_into is not None:  # __new__ returned the configured live instance
            return
        self._session = TrackingSession(
            path,
            tracker=tracker,
            every_n_steps=every_n_steps,
            at_epoch_end=at_epoch_end,
            example_inputs=example_inputs,
            writer=writer,
            report=report,
            tracker_kwargs=tracker_kwargs,
        )
        self._default_path = path is None and tracker is None
        if self._default_path:
            _UNRESOLVED.add(self)
        else:
            _LIVE[self._key()] = self

    def _key(self) -> str:
        """Names this callback's run across processes (the run file, when there is one)."""
        path = self._session.path
        if path is None and self._session.tracker is not None:
            path = getattr(getattr(self._session.tracker, "store", None), "path", None)
        return "memory" if path is None else str(path)

    @property
    def tracker(self) -> Any:
        """The ``WidthTracker`` (``None`` until training starts)."""
        return self._session.tracker

    # ----------------------------------------------------------------- ExportableState protocol
    def state(self) -> dict:
        # trainer_state.json is JSON: an in-memory tracker's database (bytes) goes as base64.
        session_state = _to_json(self._session.state_dict())
        return {
            "args": {"_resume_into": self._key()},
            "attributes": {"resume_state": session_state},
        }

    @property
    def resume_state(self) -> dict:
        return _to_json(self._session.state_dict())

    @resume_state.setter
    def resume_state(self, value: Mapping[str, Any]) -> None:
        self._session.load_state_dict(_from_json(value))

    # ------------------------------------------------------------------------------- hooks
    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        session = self._session
        if self._default_path and session.path is None:
            session.path = Path(args.output_dir) / "widthwise.wwrun"
            _LIVE[self._key()] = self
            _UNRESOLVED.discard(self)
        # With the default restore_callback_states_from_checkpoint=False the Trainer does not
        # touch callbacks on resume; the loaded trainer state still holds ours.
        saved = (state.stateful_callbacks or {}).get(type(self).__name__)
        if isinstance(saved, list):  # several instances of this callback: find ours by args
            key = self._key()
            saved = next((s for s in saved if s.get("args", {}).get("_resume_into") == key), None)
        if isinstance(saved, Mapping) and saved.get("attributes", {}).get("resume_state"):
            session.load_state_dict(_from_json(saved["attributes"]["resume_state"]))
        example = None
        if not session.started:
            example = session.example_inputs
            if example is None:
                labels = tuple(getattr(args, "label_names", None) or ()) + _LABEL_KEYS
                example = example_from_loader(train_dataloader, drop_keys=labels)
            example = to_device(example, _device(model))
        session.start(model, example)
        session.fit_start(_epoch(state))

    def on_step_end(self, args, state, control, **kwargs):
        self._session.step(state.global_step, _epoch(state))

    def on_epoch_end(self, args, state, control, **kwargs):
        self._session.epoch_end(state.global_step, _epoch(state))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self._session.log_metrics(state.global_step, _epoch(state), logs)

    def on_train_end(self, args, state, control, **kwargs):
        self._session.finish(state.global_step, _epoch(state))


_BYTES = "__widthwise_bytes_base64__"


def _to_json(obj: Any) -> Any:
    """``obj`` with every ``bytes`` replaced by a base64 marker dict (JSON-serialisable).

    >>> import json
    >>> _from_json(json.loads(json.dumps(_to_json({"a": [b"\\x00\\xff", 1]}))))
    {'a': [b'\\x00\\xff', 1]}
    """
    if isinstance(obj, bytes):
        return {_BYTES: base64.b64encode(obj).decode("ascii")}
    if isinstance(obj, Mapping):
        return {str(k): _to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_json(v) for v in obj]
    return obj


def _from_json(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        if set(obj) == {_BYTES}:
            return base64.b64decode(obj[_BYTES])
        return {k: _from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_json(v) for v in obj]
    return obj


def _epoch(state: Any) -> int | None:
    # TrainerState.epoch counts epochs done so far, fractionally (1.0 at the end of the first);
    # the run file records the 0-based index of the epoch a step belongs to, as Lightning does.
    return None if state.epoch is None else max(math.ceil(state.epoch) - 1, 0)


def _device(model: Any) -> Any:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return None
