"""TensorBoard: each group's variance as a scalar, its channel norms as a histogram.

Works with any ``torch.utils.tensorboard.SummaryWriter`` (including the one behind Lightning's
``TensorBoardLogger`` and the Hugging Face ``TensorBoardCallback``)::

    from torch.utils.tensorboard import SummaryWriter
    from widthwise.integrations.tensorboard import TensorBoardLogger

    tb = TensorBoardLogger(SummaryWriter("runs/tb")).attach(tracker)   # live, per snapshot
    TensorBoardLogger("runs/tb").log_run(open_run("mlp.wwrun"))         # a recorded run, after

Tags: ``widthwise/variance/<group>`` (and ``widthwise/variance/<group>/<gate>`` for gated groups)
and ``widthwise/channel_norms/<group>``, with the snapshot's training step as TensorBoard step.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import numpy as np

from widthwise.integrations import require

__all__ = ["TensorBoardLogger"]

_UNSAFE = re.compile(r"[^\w./-]+")


def tag_name(group: str) -> str:
    """A group name as a TensorBoard tag component (TensorBoard rejects spaces and brackets).

    >>> tag_name("layer2 (residual)")
    'layer2_residual'
    """
    return _UNSAFE.sub("_", group).strip("_") or "_"


class TensorBoardLogger:
    """Write widthwise snapshots to TensorBoard.

    Args:
        writer: a ``SummaryWriter`` (anything with ``add_scalar``/``add_histogram``), or a log
            directory for a new one.
        prefix: first component of every tag.
        histograms: also log per-channel norms as histograms (needs channel norms in the run,
            which ``WidthTracker`` keeps by default).
        gates: also log one variance scalar per gate of GRU/LSTM/attention groups.
    """

    def __init__(
        self,
        writer: Any,
        *,
        prefix: str = "widthwise",
        histograms: bool = True,
        gates: bool = True,
    ) -> None:
        if isinstance(writer, (str, Path)):
            tb = require("torch.utils.tensorboard", "tensorboard", "TensorBoardLogger")
            writer = tb.SummaryWriter(str(writer))
        if not (hasattr(writer, "add_scalar") and hasattr(writer, "add_histogram")):
            raise TypeError(
                "TensorBoardLogger needs a torch.utils.tensorboard.SummaryWriter or a log "
                f"directory, got {type(writer).__name__}"
            )
        self.writer = writer
        self.prefix = prefix.strip("/")
        self.histograms = histograms
        self.gates = gates

    # ---------------------------------------------------------------------------------- api
    def log(self, source: Any, step: int | None = None) -> None:
        """Log the latest snapshot of a ``WidthTracker`` or ``Run``.

        ``step`` overrides the TensorBoard step (default: the snapshot's training step).
        Only the writing process (rank 0) logs. The values are read back from the run, so
        TensorBoard shows exactly what the run file holds.
        """
        from widthwise.distributed import is_writer

        if not is_writer():
            return
        history = source.history(gates=self.gates)
        if history.empty:
            return
        last = history[history["snapshot"] == history["snapshot"].max()]
        at = int(last["step"].iloc[0]) if step is None else int(step)
        self._log_rows(last, at)
        if self.histograms:
            for group in last.loc[last["gate"] == "", "group"]:
                steps, norms = _all_norms(source, group)
                if len(steps) and steps[-1] == last["step"].iloc[0]:
                    self._log_histogram(group, norms[-1], at)

    def log_run(self, run: Any) -> int:
        """Log every snapshot of a recorded run (``open_run(path)``); returns how many."""
        history = run.history(gates=self.gates)
        for _, rows in history.groupby("snapshot", sort=True):
            self._log_rows(rows, int(rows["step"].iloc[0]))
        if self.histograms:
            for group in history.loc[history["gate"] == "", "group"].unique():
                steps, norms = _all_norms(run, group)
                for step, row in zip(steps, norms):
                    self._log_histogram(group, row, int(step))
        self.flush()
        return int(history["snapshot"].nunique())

    def attach(self, tracker: Any) -> TensorBoardLogger:
        """Log after every snapshot ``tracker`` takes from now on; returns ``self``."""
        snapshot = tracker.snapshot

        @functools.wraps(snapshot)
        def snapshot_and_log(*args: Any, **kwargs: Any) -> Any:
            taken = snapshot(*args, **kwargs)
            if taken:
                step = kwargs.get("step", args[0] if args else None)
                self.log(tracker, step=step)
            return taken

        tracker.snapshot = snapshot_and_log
        return self

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    # ------------------------------------------------------------------------------ helpers
    def _log_rows(self, rows: Any, step: int) -> None:
        for group, gate, variance in zip(rows["group"], rows["gate"], rows["variance"]):
            if gate and not self.gates:
                continue
            tag = f"{self.prefix}/variance/{tag_name(group)}"
            if gate:
                tag += f"/{tag_name(gate)}"
            self.writer.add_scalar(tag, float(variance), step)

    def _log_histogram(self, group: str, norms: np.ndarray, step: int) -> None:
        values = np.asarray(norms, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            self.writer.add_histogram(
                f"{self.prefix}/channel_norms/{tag_name(group)}", values, step
            )


def _all_norms(source: Any, group: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        steps, norms = source.channel_norms(group)
    except (KeyError, LookupError, ValueError):  # channel norms not kept for this run
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0))
    return np.asarray(steps), np.asarray(norms)
