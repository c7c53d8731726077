"""Reproducible experiments: the paper's width sweeps and the streamlining proof, on local data.

Each :class:`Family` names a zoo model, a local data set, training settings and the *examined*
layer whose width is swept. :func:`sweep` trains the family at every width (narrow to generous)
and seed with a :class:`~widthwise.WidthTracker`, classifies the examined group's variance curve
and returns one row per run. :func:`streamline_proof` compares an original model, its streamlined
version at equal FLOPs, and a uniformly scaled model with the streamlined parameter count.

Everything here is what ``widthwise reproduce`` runs; the numbers in ``docs/reproduction.md`` and
``docs/streamlining.md`` come from it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from widthwise.groups import ChannelGroup
from widthwise.reproduction import data as wdata
from widthwise.reproduction import zoo

__all__ = ["FAMILIES", "Family", "Task", "examined_group", "streamline_proof", "sweep", "train"]


# ---------------------------------------------------------------------------------------------
# tasks and training


@dataclass
class Task:
    """What a model is trained on: ``kind`` is ``"classify"``, ``"regress"``, ``"graph"``, ``"lm"``."""

    kind: str
    data: Any
    example_inputs: Any
    extra: dict[str, Any] = field(default_factory=dict)


def _batches(task: Task, batch_size: int, gen: torch.Generator) -> Iterable[tuple]:
    if task.kind in ("classify", "regress"):
        d = task.data
        order = torch.randperm(len(d.x_train), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            yield (d.x_train[idx],), d.y_train[idx]
    elif task.kind == "graph":
        yield (task.data.x, task.extra["adj"]), task.data.y
    elif task.kind == "lm":
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        yield from (
            ((x,), y)
            for x, y in task.data.batches(
                "train", batch_size=batch_size, seq_len=task.extra["seq_len"], seed=seed
            )
        )
    else:  # pragma: no cover - guarded by Family definitions
        raise ValueError(task.kind)


def _loss(task: Task, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if task.kind == "regress":
        return nn.functional.mse_loss(out, y)
    if task.kind == "graph":
        mask = task.data.train_mask
        return nn.functional.cross_entropy(out[mask], y[mask])
    if task.kind == "lm":
        return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    return nn.functional.cross_entropy(out, y)


@torch.no_grad()
def evaluate(model: nn.Module, task: Task) -> float:
    """Test accuracy (classification, graph, LM next-character) or negative test MSE."""
    return test_metrics(model, task)["accuracy"]


@torch.no_grad()
def test_metrics(model: nn.Module, task: Task) -> dict[str, float]:
    """Held-out ``accuracy`` (negative MSE for regression) and mean held-out ``loss``."""
    was = model.training
    model.eval()
    try:
        d = task.data
        if task.kind == "graph":
            out = model(d.x, task.extra["adj"])
            m = d.test_mask
            acc = float((out[m].argmax(-1) == d.y[m]).float().mean())
            return {"accuracy": acc, "loss": float(nn.functional.cross_entropy(out[m], d.y[m]))}
        if task.kind == "lm":
            correct = total = 0
            loss_sum = 0.0
            for x, y in d.batches("test", 64, task.extra["seq_len"], shuffle=False):
                out = model(x)
                correct += int((out.argmax(-1) == y).sum())
                loss_sum += float(
                    nn.functional.cross_entropy(
                        out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="sum"
                    )
                )
                total += y.numel()
            return {"accuracy": correct / max(total, 1), "loss": loss_sum / max(total, 1)}
        out = torch.cat([model(x) for x in d.x_test.split(512)])
        if task.kind == "regress":
            mse = float(nn.functional.mse_loss(out, d.y_test))
            return {"accuracy": -mse, "loss": mse}
        return {
            "accuracy": float((out.argmax(-1) == d.y_test).float().mean()),
            "loss": float(nn.functional.cross_entropy(out, d.y_test)),
        }
    finally:
        model.train(was)


#: The optimisers :func:`train` knows: SGD with momentum 0.9, Adam (L2 weight decay in the
#: gradient) and AdamW (decoupled weight decay, as most people train today).
OPTIMIZERS = ("sgd", "adam", "adamw")


def make_optimizer(
    params: Iterable[torch.nn.Parameter], optimizer: str, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """The optimiser ``train`` uses; a clear error for an unknown name."""
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")


def train(
    model: nn.Module,
    task: Task,
    *,
    epochs: int,
    lr: float,
    optimizer: str = "sgd",
    weight_decay: float = 0.0,
    batch_size: int = 128,
    seed: int = 0,
    tracker: Any = None,
    snapshots_per_epoch: int = 4,
    schedule: str = "cosine",
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Train ``model`` on ``task``; snapshot ``tracker`` a few times per epoch. Returns metrics.

    ``schedule="cosine"`` anneals the learning rate to 0 over training, as the paper's runs
    decay theirs: with a constant rate the variance keeps drifting and stage 3 never settles.
    ``"constant"`` keeps it fixed.
    """
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model.parameters(), optimizer, lr, weight_decay)
    steps_per_epoch = max(1, sum(1 for _ in _batches(task, batch_size, torch.Generator())))
    every = max(1, steps_per_epoch // max(1, snapshots_per_epoch))
    total = steps_per_epoch * epochs
    sched = (
        torch.optim.lr_scheduler.LambdaLR(
            opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, total) / total))
        )
        if schedule == "cosine"
        else None
    )
    step = 0
    if tracker is not None:
        tracker.snapshot(step=0, epoch=0)
    model.train()
    loss = torch.tensor(float("nan"))
    for epoch in range(epochs):
        for inputs, y in _batches(task, batch_size, gen):
            opt.zero_grad(set_to_none=True)
            loss = _loss(task, model(*inputs), y)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            if tracker is not None and step % every == 0:
                tracker.snapshot(step=step, epoch=epoch, metrics={"loss": loss.item()})
        if progress is not None:
            progress(epoch)
    held_out = test_metrics(model, task)
    acc = held_out["accuracy"]
    if tracker is not None:
        tracker.log_metrics({"test_accuracy": acc}, step=step, epoch=epochs - 1)
    return {
        "accuracy": acc,
        "test_loss": held_out["loss"],
        "train_loss": float(loss.detach()),
        "steps": step,
    }


# ---------------------------------------------------------------------------------------------
# families


@dataclass
class Family:
    """A model family, its data, training settings, and the examined layer's widths."""

    name: str
    description: str
    widths: list[int]
    quick_widths: list[int]
    epochs: int
    quick_epochs: int
    lr: float
    build_task: Callable[[int], Task]
    build_model: Callable[[int, Task], nn.Module]
    examined: str  # the width slot (module name) whose width is swept
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    batch_size: int = 128
    seeds: int = 5
    schedule: str = "cosine"

    def train_settings(self, quick: bool = False) -> dict[str, Any]:
        """The keyword arguments of :func:`train` for this family."""
        return {
            "epochs": self.quick_epochs if quick else self.epochs,
            "lr": self.lr,
            "optimizer": self.optimizer,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "schedule": self.schedule,
        }


def _mnist1d_task(seed: int) -> Task:
    d = wdata.mnist1d(num_samples=4000, seed=42)
    return Task("classify", d, d.x_train[:2])


def _digits_task(seed: int) -> Task:
    d = wdata.digits(seed=0, flatten=False)
    return Task("classify", d, d.x_train[:2])


def _digits_flat_task(seed: int) -> Task:
    d = wdata.digits(seed=0, flatten=True)
    return Task("classify", d, d.x_train[:2])


def _graph_task(seed: int) -> Task:
    g = wdata.sbm_graph(num_nodes=600, num_blocks=6, num_features=32, seed=0)
    adj = g.adjacency()
    return Task("graph", g, (g.x, adj), {"adj": adj})


def _lm_task(seed: int) -> Task:
    c = wdata.char_corpus(max_chars=60_000)
    x, _ = next(c.batches("train", batch_size=2, seq_len=16, seed=0))
    return Task("lm", c, x, {"seq_len": 32})


def _teacher_task(seed: int) -> Task:
    ts = wdata.teacher_student(
        [16], in_features=16, out_features=4, task="classification", n_train=4000, seed=0
    )
    return Task("classify", ts.data, ts.data.x_train[:2], {"teacher_widths": ts.teacher_widths})


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            "mlp",
            "MLP 40-[w, 256]-10 on MNIST-1D; examined: first hidden layer",
            [8, 32, 128, 512],
            [8, 512],
            30,
            12,
            0.05,
            _mnist1d_task,
            lambda w, t: zoo.MLP(40, [w, 256], 10),
            "hidden.0",
        ),
        Family(
            "cnn1d",
            "1D CNN [w, 64, 64] on MNIST-1D; examined: first conv",
            [4, 16, 64, 128],
            [4, 128],
            20,
            8,
            0.1,
            _mnist1d_task,
            lambda w, t: zoo.CNN1D([w, 64, 64], length=40, num_classes=10),
            "convs.0",
        ),
        Family(
            "vgg",
            "VGG-style CNN [32, M, w, M, 64] on 8x8 digits; examined: the middle conv",
            [2, 8, 32, 128],
            [2, 128],
            25,
            10,
            0.05,
            _digits_task,
            lambda w, t: zoo.VGG([32, "M", w, "M", 64], in_channels=1, image_size=8),
            "features.4",
            weight_decay=5e-4,
        ),
        Family(
            "resnet",
            "ResNet (basic blocks, streams [16, 32, 64]) on 8x8 digits; examined: the inner "
            "width of the stage-2 block",
            [2, 8, 32, 128],
            [2, 128],
            20,
            8,
            0.05,
            _digits_task,
            lambda w, t: zoo.ResNet(
                "basic", [16, 32, 64], [1, 1, 1], in_channels=1, inner_widths=[16, w, 64]
            ),
            "layer2.0.conv1",
            weight_decay=5e-4,
        ),
        Family(
            "gru",
            "GRU language model, hidden [w] on Python's help topics; examined: the GRU",
            [8, 32, 128],
            [8, 128],
            12,
            3,
            1.0,
            _lm_task,
            lambda w, t: zoo.GRULM(t.data.vocab_size, 32, [w]),
            "rnns.0",
            weight_decay=5e-4,
            batch_size=64,
        ),
        Family(
            "gcn",
            "2-layer GCN [w] on a stochastic-block-model graph; examined: the hidden layer",
            [2, 8, 64, 256],
            [2, 256],
            400,
            160,
            0.2,
            _graph_task,
            lambda w, t: zoo.GCN(32, [w], 6),
            "layers.0",
            weight_decay=5e-4,
        ),
        Family(
            "vit",
            "ViT (dim 32, 2 blocks, MLP [w, 64]) on 8x8 digits; examined: block 0 MLP",
            [4, 16, 64, 256],
            [4, 256],
            30,
            10,
            0.05,
            _digits_task,
            lambda w, t: zoo.ViT(8, 2, 32, 2, 4, [w, 64], 10, channels=1),
            "blocks.0.fc1",
            weight_decay=5e-4,
        ),
        Family(
            "teacher",
            "student MLP 16-[w]-4 on labels of a teacher with 16 hidden units",
            [2, 4, 8, 16, 32, 64, 256],
            [2, 256],
            30,
            10,
            0.05,
            _teacher_task,
            lambda w, t: zoo.MLP(16, [w], 4),
            "hidden.0",
        ),
    ]
}


def examined_group(groups: Sequence[ChannelGroup], module: str) -> ChannelGroup:
    """The group one of whose producers is ``module`` (a width slot of a zoo model)."""
    for g in groups:
        if any(m.param.rpartition(".")[0] == module for m in g.producers):
            return g
    names = ", ".join(g.name for g in groups)
    raise KeyError(f"no channel group is produced by {module!r}; groups: {names}")


#: The AdamW set-up of the sweeps (``sweep(..., optimizer="adamw")``): a well-tuned rate for
#: these small nets (the oracle's "adamw-1e-2", docs/validity.md) and decoupled weight decay 0.01.
ADAMW_LR = 1e-2
ADAMW_WEIGHT_DECAY = 0.01


def _settings(family: Family, quick: bool, optimizer: str | None) -> dict[str, Any]:
    kw = family.train_settings(quick)
    if optimizer is None or optimizer == family.optimizer:
        return kw
    if optimizer != "adamw":
        raise ValueError(
            f"optimizer must be None, {family.optimizer!r} or 'adamw', not {optimizer!r}"
        )
    return {**kw, "optimizer": "adamw", "lr": ADAMW_LR, "weight_decay": ADAMW_WEIGHT_DECAY}


def _run_one(
    family: Family,
    width: int,
    seed: int,
    *,
    quick: bool,
    out_dir: Path | None,
    task: Task,
    progress: Callable[[int], None] | None = None,
    optimizer: str | None = None,
) -> dict[str, Any]:
    from widthwise.tracker import WidthTracker
    from widthwise.verdicts import judge

    settings = _settings(family, quick, optimizer)
    torch.manual_seed(seed)
    model = family.build_model(width, task)
    path = None
    if out_dir is not None:
        suffix = "" if optimizer in (None, family.optimizer) else f"-{optimizer}"
        path = out_dir / f"{family.name}{suffix}-w{width}-s{seed}.wwrun"
        path.unlink(missing_ok=True)
    tracker = WidthTracker(
        model,
        task.example_inputs,
        store=path,
        meta={
            "family": family.name,
            "width": width,
            "seed": seed,
            "optimizer": settings["optimizer"],
        },
    )
    t0 = time.perf_counter()
    metrics = train(model, task, seed=seed, tracker=tracker, progress=progress, **settings)
    group = examined_group(tracker.groups, family.examined)
    hist = tracker.history()
    series = hist[(hist.group == group.name) & (hist.get("gate", "") == "")]
    row = judge(tracker.run).table.set_index("group").loc[group.name]
    tracker.close()
    return {
        "family": family.name,
        "optimizer": settings["optimizer"],
        "width": width,
        "seed": seed,
        "group": group.name,
        "label": row["label"],
        "confidence": round(float(row["confidence"]), 3),
        "paper_label": row["paper_label"],
        "paper_confidence": round(float(row["paper_confidence"]), 3),
        "reason": row["reason"] or "",
        "accuracy": round(metrics["accuracy"], 4),
        "seconds": round(time.perf_counter() - t0, 1),
        "epochs": series.epoch.to_numpy(),
        "steps": series.step.to_numpy(),
        "variance": series.variance.to_numpy(),
        "run": str(path) if path else "",
    }


def sweep(
    family: str | Family,
    *,
    seeds: int | None = None,
    quick: bool = False,
    out_dir: str | Path | None = None,
    widths: Sequence[int] | None = None,
    progress: Callable[[str], Any] | None = None,
    optimizer: str | None = None,
) -> pd.DataFrame:
    """Train ``family`` at every width and seed; one row per run (curves in array columns).

    ``optimizer="adamw"`` trains with AdamW (:data:`ADAMW_LR`, :data:`ADAMW_WEIGHT_DECAY`)
    instead of the family's own optimiser. Each row has the user-facing ``label`` and the
    paper's ``paper_label`` of the examined group (:func:`widthwise.verdicts.judge`).
    """
    fam = FAMILIES[family] if isinstance(family, str) else family
    _settings(fam, quick, optimizer)  # a bad optimiser name fails before any training
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    widths = list(widths or (fam.quick_widths if quick else fam.widths))
    n_seeds = seeds if seeds is not None else (2 if quick else fam.seeds)
    task = fam.build_task(0)
    rows = []
    for seed in range(n_seeds):
        for w in widths:
            if progress is not None:
                progress(f"{fam.name} w={w} seed={seed}")
            rows.append(
                _run_one(fam, w, seed, quick=quick, out_dir=out, task=task, optimizer=optimizer)
            )
    return pd.DataFrame(rows)


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per family (and optimiser) and width: seeds giving IS / DS / undetermined, mean accuracy.

    ``IS``/``DS``/``undetermined`` count the user-facing ``label``; ``paper_IS``/``paper_DS``
    count the paper's shape verdict when the results have it.
    """
    keys = ["family", "optimizer", "width"] if "optimizer" in results else ["family", "width"]
    g = results.groupby(keys)
    cols: dict[str, Any] = {
        "seeds": g.size(),
        "IS": g.label.apply(lambda s: int((s == "IS").sum())),
        "DS": g.label.apply(lambda s: int((s == "DS").sum())),
        "undetermined": g.label.apply(lambda s: int((s == "undetermined").sum())),
    }
    if "paper_label" in results:
        cols["paper_IS"] = g.paper_label.apply(lambda s: int((s == "IS").sum()))
        cols["paper_DS"] = g.paper_label.apply(lambda s: int((s == "DS").sum()))
    cols["accuracy"] = g.accuracy.mean().round(4)
    cols["accuracy_std"] = g.accuracy.std().round(4)
    return pd.DataFrame(cols).reset_index()


def sweep_figure(results: pd.DataFrame):
    """The paper-style figure: variance against epoch, one panel per width, seeds overlaid."""
    from matplotlib.figure import Figure

    # A bare Figure, not pyplot: nothing is registered globally, nothing to close.
    widths = sorted(results.width.unique())
    fig = Figure(figsize=(3.2 * len(widths), 2.8))
    axes = fig.subplots(1, len(widths), squeeze=False)
    for ax, w in zip(axes[0], widths):
        sub = results[results.width == w]
        for r in sub.itertuples():
            x = np.asarray(r.steps, dtype=float)
            x = x / max(x.max(), 1) * (max(np.asarray(r.epochs, dtype=float).max(), 0) + 1)
            ax.plot(x, r.variance, lw=1, label=f"seed {r.seed}: {r.label}")
        labels = sub.label.value_counts().to_dict()
        ax.set_title(f"width {w}: " + ", ".join(f"{k} {v}" for k, v in labels.items()), fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("weight-norm variance")
    fam = results.family.iloc[0]
    fig.suptitle(f"{fam}: examined group {results.group.iloc[0]}", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# streamlining proof


def uniform_widths(model: nn.Module, target_params: int) -> list[int]:
    """The zoo model's widths scaled by one multiplier so its parameter count matches ``target``."""
    from widthwise.streamline import count_params

    base = model.widths()

    def params(mult: float) -> int:
        return count_params(model.with_widths([max(1, round(w * mult)) for w in base]))

    lo, hi = 0.05, 4.0
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        if params(mid) < target_params:
            lo = mid
        else:
            hi = mid
    mult = lo if abs(params(lo) - target_params) <= abs(params(hi) - target_params) else hi
    return [max(1, round(w * mult)) for w in base]


#: Streamlining set-ups: a zoo model of the family whose widths follow the common habit (narrow
#: early layers, wide late ones), trained with the family's settings. A plain MLP is left out on
#: purpose: its FLOPs equal twice its parameters, so "equal FLOPs" leaves no parameters to save.
PROOF_FAMILIES: dict[str, tuple[str, Callable[[Task], nn.Module]]] = {
    "cnn1d": ("cnn1d", lambda t: zoo.CNN1D([4, 16, 256], length=40, num_classes=10)),
    "vgg": ("vgg", lambda t: zoo.VGG([32, "M", 2, "M", 256], in_channels=1, image_size=8)),
    "resnet": (
        "resnet",
        lambda t: zoo.ResNet(
            "basic", [16, 32, 64], [1, 1, 1], in_channels=1, inner_widths=[16, 2, 128]
        ),
    ),
}


#: The planner settings of the proof (see :func:`widthwise.streamline`): DS groups may grow up
#: to 4x before the budget search, IS groups keep at least a quarter of their width. The IFM
#: floor is off: on these small trained models it returned the full width for most groups.
PROOF_SETTINGS: dict[str, Any] = {"widen": 3.0, "floor": "none", "min_fraction": 0.25}


def streamline_proof(
    name: str,
    *,
    seeds: int | Sequence[int] = 5,
    quick: bool = False,
    budget: str = "flops",
    progress: Callable[[str], Any] | None = None,
    **streamline_kw: Any,
) -> pd.DataFrame:
    """Original vs streamlined (equal FLOPs) vs uniform multiplier (streamlined's parameters).

    The plan comes from a tracked run of the original with seed 0 (the same plan whichever
    ``seeds`` are asked for, so seeds can run in separate processes); every variant is then
    trained from scratch for each seed. One row per (variant, seed).
    """
    from widthwise.report import Report
    from widthwise.streamline import count_flops, count_params, streamline
    from widthwise.tracker import WidthTracker

    fam_name, build = PROOF_FAMILIES[name]
    fam = FAMILIES[fam_name]
    task = fam.build_task(0)
    kw = fam.train_settings(quick)
    torch.manual_seed(0)
    original = build(task)
    tracker = WidthTracker(original, task.example_inputs)
    if progress:
        progress(f"{name}: tracked run of the original")
    train(original, task, seed=0, tracker=tracker, **kw)
    table = Report.from_run(tracker.run).table.copy()
    # The proof reproduces the paper's claim, so it plans from the paper's shape verdict. With
    # the user-facing label, these short (quick) trainings read DS on every group -- the run is
    # under-fitted, and the oracle agrees that width helps there (docs/validity.md) -- which
    # leaves nothing to narrow and no plan within equal FLOPs.
    table["label"], table["confidence"] = table["paper_label"], table["paper_confidence"]
    settings = {**PROOF_SETTINGS, **streamline_kw}
    plan = streamline(original, table, task.example_inputs, budget=budget, **settings)
    cfg = plan.to_config(original)
    streamlined_widths = type(original).from_config(cfg).widths()
    uniform = uniform_widths(original, count_params(type(original).from_config(cfg)))
    variants = {
        "original": original.widths(),
        "streamlined": streamlined_widths,
        "uniform": uniform,
    }
    rows = []
    for seed in range(seeds) if isinstance(seeds, int) else seeds:
        for variant, widths in variants.items():
            if progress:
                progress(f"{name}: {variant} seed {seed}")
            torch.manual_seed(seed)
            model = original.with_widths(widths)
            m = train(model, task, seed=seed, **kw)
            rows.append(
                {
                    "family": name,
                    "variant": variant,
                    "seed": seed,
                    "widths": str(widths),
                    "params": count_params(model),
                    "flops": count_flops(model, task.example_inputs, warn=False),
                    "accuracy": m["accuracy"],
                }
            )
    out = pd.DataFrame(rows)
    out.attrs["plan"] = plan
    return out


def proof_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per family and variant: parameters, FLOPs, accuracy mean and std, ratios to the original."""
    g = results.groupby(["family", "variant"], sort=False)
    table = g.agg(
        widths=("widths", "first"),
        params=("params", "first"),
        flops=("flops", "first"),
        accuracy=("accuracy", "mean"),
        accuracy_std=("accuracy", "std"),
        seeds=("seed", "count"),
    ).reset_index()
    table = ratios_to_original(table, "family")
    return table.round({"accuracy": 4, "accuracy_std": 4, "params_ratio": 3, "flops_ratio": 3})


def ratios_to_original(table: pd.DataFrame, key: str, *, accuracy: bool = False) -> pd.DataFrame:
    """Add ``params_ratio`` and ``flops_ratio`` (with ``accuracy``, also ``vs_original``): each
    row against the ``original`` variant's row of the same ``key``."""
    base = table[table.variant == "original"].set_index(key)
    table["params_ratio"] = [p / base.params[k] for k, p in zip(table[key], table.params)]
    table["flops_ratio"] = [f / base.flops[k] for k, f in zip(table[key], table.flops)]
    if accuracy:
        table["vs_original"] = [a - base.accuracy[k] for k, a in zip(table[key], table.accuracy)]
    return table
