"""The demo behind ``widthwise demo``: two small networks with deliberately mixed widths.

Both train on MNIST-1D (generated locally, no download) while a :class:`WidthTracker` records
their channel norms; the verdicts then show which layer is starved and which is generous:

* ``mlp``: ``40 → 512 → 8 → 256 → 10``: a deliberately narrow 8-unit bottleneck between two
  generous layers.
* ``cnn``: ``Conv1d`` widths ``4 → 64 → 128``: the first conv has only 4 channels.

Both use SGD with momentum 0.9, learning rate 0.05 and batch 100; the MLP's learning rate drops
tenfold for the last fifth of training, the CNN's follows a cosine to zero. The schedule matters
for the verdicts: at a constant rate the bottleneck's variance is still falling after 30 epochs
(undetermined), and at learning rate 0.1 with a cosine schedule the bottleneck reads IS (both
measured with seed 0): a verdict is evidence about a training run, not a law of the layer.

After training, :func:`widthwise.streamline` plans each model's new widths for the same FLOPs
from its verdicts, and the reports show them (old -> new width per group). The run files
(``mlp.wwrun``, ``cnn.wwrun``) and one HTML page covering both (``report.html``) go to the
output directory. Everything is seeded: the same ``seed`` gives the same runs.

Output: the verdict tables (with the planned widths) go to ``log`` (stdout, flushed), the
column legend once at the end; progress goes to stderr: a bar on a terminal, a few plain lines
otherwise (a pipe or a log file gets no carriage-return noise, and is not silent meanwhile).

>>> from widthwise.reproduction.demo import DEMO_MODELS
>>> [(m.name, m.widths) for m in DEMO_MODELS]
[('mlp', [512, 8, 256]), ('cnn', [4, 64, 128])]
"""

from __future__ import annotations

import functools
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch
from torch import nn

from widthwise.report import Report

if TYPE_CHECKING:
    from widthwise.reproduction.data import TensorSplit
    from widthwise.tracker import WidthTracker

__all__ = ["DEMO_MODELS", "DemoModel", "DemoResult", "run_demo", "train_tracked"]


@dataclass(frozen=True)
class DemoModel:
    """One network of the demo and how it is trained (SGD with momentum, cross-entropy)."""

    name: str
    family: str  # "mlp" or "cnn1d"
    widths: list[int]
    lr: float = 0.05
    momentum: float = 0.9
    schedule: str = "step"
    note: str = ""

    def build(self) -> nn.Module:
        from widthwise.reproduction.zoo.cnn1d import CNN1D
        from widthwise.reproduction.zoo.mlp import MLP

        if self.family == "mlp":
            return MLP(40, list(self.widths), 10)
        return CNN1D(list(self.widths), length=40, num_classes=10)


DEMO_MODELS: tuple[DemoModel, ...] = (
    DemoModel(
        "mlp", "mlp", [512, 8, 256], schedule="step", note="hidden.1 (8 units) is a bottleneck"
    ),
    DemoModel(
        "cnn",
        "cnn1d",
        [4, 64, 128],
        schedule="cosine",
        note="convs.0 (4 channels) is far too narrow",
    ),
)


@dataclass
class DemoResult:
    """What :func:`run_demo` produced."""

    out_dir: Path
    runs: dict[str, Path] = field(default_factory=dict)
    reports: dict[str, Report] = field(default_factory=dict)
    plans: dict[str, Any] = field(default_factory=dict)  # name -> WidthPlan (absent: failed)
    html: Path | None = None
    accuracy: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def train_tracked(
    model: nn.Module,
    data: TensorSplit,
    store: str | Path | None,
    *,
    epochs: int,
    seed: int,
    lr: float = 0.05,
    momentum: float = 0.9,
    batch_size: int = 100,
    snapshot_every: int = 10,
    schedule: str = "step",
    meta: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    analyses: dict[str, Any] | None = None,
) -> tuple[WidthTracker, float]:
    """Train ``model`` on a :class:`~widthwise.reproduction.data.TensorSplit` with a :class:`WidthTracker`.

    A snapshot is taken before the first step, every ``snapshot_every`` steps and after the last
    one, with the mean training loss since the previous snapshot; the test accuracy is logged at
    the end of every epoch. ``schedule``: ``"constant"`` learning rate, ``"step"`` (divided by 10
    for the last fifth of training, which lets stage 3 settle within a short run) or
    ``"cosine"`` (decays to zero). Returns ``(tracker, test_accuracy)``.

    ``analyses``, a dict, is filled with the paper's stateful side analyses measured along the
    way (``"sign_flips"``, ``"norm_grad"``; see :mod:`widthwise.analysis`).
    """
    from widthwise.tracker import WidthTracker

    x, y = data.x_train, data.y_train
    tracker = WidthTracker(model, x[:2], store, meta=meta)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    order = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = epochs * steps_per_epoch
    factors = {
        "constant": lambda s: 1.0,
        "step": lambda s: 1.0 if s < 0.8 * total else 0.1,
        "cosine": lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)),
    }
    if schedule not in factors:
        raise ValueError(f"schedule must be one of {sorted(factors)}, got {schedule!r}")
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(opt, factors[schedule])
    flips = None
    if analyses is not None:
        from widthwise.analysis import NormGradCorrelation, SignFlips

        flips = analyses["sign_flips"] = SignFlips(model, tracker.groups)
        analyses["norm_grad"] = NormGradCorrelation(
            model, tracker.groups, opt, every=snapshot_every
        )
    step, running, count, acc = 0, 0.0, 0, float("nan")
    tracker.snapshot(step=0, epoch=0)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=order)
        for k in range(steps_per_epoch):
            idx = perm[k * batch_size : (k + 1) * batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lr_schedule.step()
            step += 1
            running, count = running + loss.item(), count + 1
            if step % snapshot_every == 0:
                tracker.snapshot(step=step, epoch=epoch, metrics={"train_loss": running / count})
                running, count = 0.0, 0
                if flips is not None:
                    flips.update(step)
            if progress is not None:
                progress(1)
        acc = _accuracy(model, data.x_test, data.y_test)
        tracker.log_metrics({"test_accuracy": acc}, step=step, epoch=epoch)
    if step % snapshot_every:
        metrics = {"train_loss": running / count} if count else None
        tracker.snapshot(step=step, epoch=epochs - 1, metrics=metrics)
    if analyses is not None:
        analyses["norm_grad"].close()
    return tracker, acc


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def run_demo(
    out_dir: str | Path = "widthwise-demo",
    *,
    epochs: int = 30,
    seed: int = 0,
    samples: int = 5000,
    models: Sequence[DemoModel] = DEMO_MODELS,
    snapshot_every: int = 10,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> DemoResult:
    """Train the demo models, plan their widths, write the run files and ``report.html``.

    Existing ``<name>.wwrun`` files in ``out_dir`` are replaced (the demo always starts fresh).
    ``progress``: None shows a bar on a terminal and a few plain lines otherwise, True always a
    bar, False nothing (all on stderr). ``log`` receives the tables (default: print, flushed,
    so a pipe sees each table as soon as it is ready).
    """
    log = log if log is not None else functools.partial(print, flush=True)
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    # These models are tiny: one intra-op thread beats two (and does not collapse when the
    # cores are shared with other work, where two threads made the demo ~10x slower).
    torch.set_num_threads(1)
    try:
        return _run_demo(out_dir, epochs, seed, samples, models, snapshot_every, progress, log, t0)
    finally:
        torch.set_num_threads(threads)


def _run_demo(
    out_dir: str | Path,
    epochs: int,
    seed: int,
    samples: int,
    models: Sequence[DemoModel],
    snapshot_every: int,
    progress: bool | None,
    log: Callable[[str], None],
    t0: float,
) -> DemoResult:
    from widthwise.analysis import figures
    from widthwise.report import legend, save_html
    from widthwise.reproduction.data import mnist1d

    out = Path(out_dir)
    trackers = []
    out.mkdir(parents=True, exist_ok=True)
    data = mnist1d(num_samples=samples, seed=42)
    result = DemoResult(out)
    steps_per_epoch = math.ceil(len(data.x_train) / 100)
    for spec in models:
        path = out / f"{spec.name}.wwrun"
        for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            stale.unlink(missing_ok=True)
        torch.manual_seed(seed)
        model = spec.build()
        analyses: dict[str, Any] = {}
        with _Progress(epochs * steps_per_epoch, f"{spec.name} {spec.widths}", progress) as bar:
            tracker, acc = train_tracked(
                model,
                data,
                path,
                epochs=epochs,
                seed=seed,
                lr=spec.lr,
                momentum=spec.momentum,
                schedule=spec.schedule,
                snapshot_every=snapshot_every,
                meta={
                    "name": spec.name,
                    "data": f"MNIST-1D, {len(data.x_train)} train / {len(data.x_test)} test",
                    "widths": list(spec.widths),
                    "epochs": epochs,
                    "seed": seed,
                    "optimizer": f"SGD lr={spec.lr} momentum={spec.momentum} "
                    f"({spec.schedule} schedule), batch 100",
                },
                progress=bar.update,
                analyses=analyses,
            )
            bar.done(f"test accuracy {acc:.3f}")
        report = tracker.report(name=spec.name)
        plan = _plan(model, report, data.x_train[:2], spec.name)
        if plan is not None:
            report = report.with_plan(plan)
            result.plans[spec.name] = plan
        for title, fig in figures(tracker.run, model, tracker.groups, **analyses):
            report.add_figure(f"{spec.name}: {title}", fig)  # caption: how to read it
        trackers.append(tracker)
        result.runs[spec.name] = path
        result.reports[spec.name] = report
        result.accuracy[spec.name] = acc
        log(f"\n{report.to_text(legend=False)}\n(final test accuracy {acc:.3f})")
    reports = list(result.reports.values())
    paper = any("paper_label" in r.table.columns for r in reports)
    log("\n" + "\n".join(legend(paper=paper, plan=bool(result.plans))) + "\n")
    result.html = save_html(reports, out / "report.html", title="widthwise demo")
    for tracker in trackers:  # after the figures, which read the channel norms from the runs
        tracker.close()
    result.seconds = time.perf_counter() - t0
    return result


def _plan(model: nn.Module, report: Report, example_inputs: torch.Tensor, name: str) -> Any:
    """New widths for the same FLOPs (``widthwise.streamline``), or None with a note on stderr."""
    from widthwise.resize import ResizeError
    from widthwise.streamline import streamline

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            plan = streamline(model, report, example_inputs, budget="flops")
    except (ResizeError, ValueError) as exc:
        print(f"{name}: no width plan ({exc})", file=sys.stderr, flush=True)
        return None
    for w in caught:  # e.g. "budget not met": the plan says so too
        print(f"{name}: {w.message}", file=sys.stderr, flush=True)
    return plan


class _Progress:
    """Training progress on stderr: a tqdm bar on a terminal, else a line every quarter.

    ``enabled``: None decides by whether stderr is a terminal; False shows nothing.
    """

    def __init__(self, total: int, label: str, enabled: bool | None, stream: IO[str] | None = None):
        self.total, self.label, self.count = total, label, 0
        self.stream = stream if stream is not None else sys.stderr
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = None
        self.lines = enabled is None and not tty
        self.t0 = time.perf_counter()
        if enabled or (enabled is None and tty):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=label, unit="step", file=self.stream)
        elif self.lines:
            self._say(f"{label}: training, {total} steps")

    def update(self, n: int = 1) -> None:
        before, self.count = self.count, self.count + n
        if self.bar is not None:
            self.bar.update(n)
        elif self.lines and self.total:
            quarter = self.total / 4
            if int(self.count / quarter) > int(before / quarter) and self.count < self.total:
                self._say(f"{self.label}: step {self.count}/{self.total}")

    def done(self, note: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(note)
        elif self.lines:
            seconds = time.perf_counter() - self.t0
            self._say(f"{self.label}: done in {seconds:.0f} s, {note}")

    def _say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
