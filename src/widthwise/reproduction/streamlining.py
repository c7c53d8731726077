"""The streamlining proof on conventional set-ups, against baselines, through the public API.

For each set-up of :data:`SETUPS` (widths as practitioners pick them: channels doubling per
stage with BatchNorm, an MLP ratio of 4, a tapering MLP, a GRU language model):

1. the original is trained once (seed 0) with a :class:`~widthwise.WidthTracker`; its verdicts
   come from :func:`widthwise.verdicts.verdicts` (only ``label`` and ``confidence`` are read);
2. :func:`widthwise.streamline` plans new widths for each :data:`PLANS` entry (equal FLOPs and
   a parameter budget, with the default amount rules and with ``floor="none"``);
3. for every seed, each variant is trained from scratch with the same settings:

   * ``original``;
   * ``streamlined`` (``plan.apply(original, init="reinit")``);
   * ``uniform``: every group scaled by one multiplier to the streamlined parameter count;
   * ``random``: widths drawn at random per group (log-uniform factor in [1/2, 2]), then scaled
     together to the same parameter count: is it the verdicts that help, or any rebalancing?
   * ``pruned``: the trained original of that seed, pruned by Torch-Pruning's magnitude
     (group L2 norm) pruner to the same parameter count, then fine-tuned for as many steps as
     a retrain (same epochs, cosine schedule, learning rate / 10). Torch-Pruning cannot prune a
     GRU; there widthwise's own magnitude surgery (:func:`widthwise.resize.resize`, highest-norm
     channels kept) stands in, and the row says so.

:func:`run_proof` writes one CSV row per finished (set-up, variant, budget, seed) and skips
finished rows on a restart, so it can be stopped and resumed. :func:`summary` and
:func:`figure` read the rows. ``widthwise reproduce streamline`` runs all of it.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from widthwise.groups import ChannelGroup, find_groups
from widthwise.reproduction import data as wdata
from widthwise.reproduction import zoo
from widthwise.reproduction.experiments import Task, ratios_to_original, train
from widthwise.resize import resize
from widthwise.streamline import count_flops, count_params, streamline

__all__ = [
    "PLANS",
    "SETUPS",
    "Setup",
    "build_task",
    "figure",
    "fit",
    "run_proof",
    "summary",
    "uniform_model",
]


@dataclass(frozen=True)
class Setup:
    """A conventional model, its data set and its training settings."""

    name: str
    description: str
    build: Callable[[int], nn.Module]  # vocabulary size (LM) or classes -> fresh model
    data: str = "mnist1d_hard"  # "mnist1d", "mnist1d_hard" or "chars"
    epochs: int = 5
    lr: float = 2e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    batch_size: int = 128
    samples: int = 10000  # MNIST-1D examples (train + test): 8000 to train, 2000 to test
    extra: dict[str, Any] = field(default_factory=dict)


SETUPS: dict[str, Setup] = {
    s.name: s
    for s in [
        Setup(
            "vgg1d",
            "VGG-style 1-D CNN, BatchNorm, channels 32-64-128-256, FC 256",
            lambda n: zoo.VGG1D([32, 64, 128, 256], length=40, num_classes=n, hidden=256),
        ),
        Setup(
            "resnet1d",
            "ResNet-style 1-D CNN, BatchNorm, basic blocks, stages 16-32-64-128",
            lambda n: zoo.ResNet1D([16, 32, 64, 128], length=40, num_classes=n),
        ),
        Setup(
            "vit1d",
            "ViT-style transformer on 1-D patches, dim 64, 4 heads, 2 blocks, MLP ratio 4",
            lambda n: zoo.ViT1D(40, 4, dim=64, depth=2, heads=4, num_classes=n),
            lr=1e-3,
        ),
        Setup(
            "mlp",
            "tapering MLP 40-512-256-128-10",
            lambda n: zoo.MLP(40, [512, 256, 128], n),
            lr=1e-3,
        ),
        Setup(
            "gru",
            "GRU character language model, embedding 64, hidden 256",
            lambda n: zoo.GRULM(n, 64, [256]),
            data="chars",
            epochs=6,
            lr=3e-3,
            batch_size=64,
            extra={"seq_len": 32, "max_chars": 60_000},
        ),
    ]
}

#: The plans compared: (name, budget kind, budget as a fraction of the original, settings).
#: Plain names are what a user gets from ``streamline(model, verdicts, x, budget=...)`` with the
#: default amount rules; the others change one rule, to measure it. Plans whose widths equal the
#: original's or an earlier plan's are not trained again.
PLANS: list[tuple[str, str, float, dict[str, Any]]] = [
    ("flops", "flops", 1.0, {}),
    ("params0.6", "params", 0.6, {}),
    ("flops-ifm", "flops", 1.0, {"floor": "ifm"}),
    ("params0.6-ifm", "params", 0.6, {"floor": "ifm"}),
    ("flops-widen3", "flops", 1.0, {"widen": 3.0}),
    ("params0.35", "params", 0.35, {}),
]
#: The plans trained first, for every seed, before the others.
CORE_PLANS = ("flops", "params0.6", "flops-ifm", "params0.6-ifm")

#: Snapshots per epoch of the tracked run: 6 epochs give 60 points, well above the verdicts'
#: minimum of 8 and enough for the stage boundaries to be resolved.
TRACKED_SNAPSHOTS_PER_EPOCH = 10

#: Fine-tuning a pruned model starts from trained weights: a tenth of the training rate, the
#: usual choice (a full rate would amount to retraining the pruned shape).
PRUNE_FINETUNE_LR = 0.1

# ---------------------------------------------------------------------------------------------
# tasks and training


def build_task(setup: Setup, *, data: str | None = None, cache_dir: str | None = None) -> Task:
    """The :class:`~widthwise.reproduction.experiments.Task` of ``setup`` (data generated once)."""
    name = data or setup.data
    if name == "chars":
        c = wdata.char_corpus(max_chars=setup.extra.get("max_chars", 60_000))
        x, _ = next(c.batches("train", batch_size=2, seq_len=16, seed=0))
        return Task("lm", c, x, {"seq_len": setup.extra.get("seq_len", 32)})
    if name not in ("mnist1d", "mnist1d_hard"):
        raise ValueError(f"unknown data set {name!r}: mnist1d, mnist1d_hard or chars")
    make = wdata.mnist1d_hard if name == "mnist1d_hard" else wdata.mnist1d
    d = make(num_samples=setup.samples, seed=42, cache_dir=cache_dir)
    return Task("classify", d, d.x_train[:2])


def _classes(task: Task) -> int:
    return int(task.data.vocab_size) if task.kind == "lm" else int(task.data.num_classes)


def fit(
    model: nn.Module,
    task: Task,
    setup: Setup,
    *,
    seed: int,
    epochs: int | None = None,
    lr_scale: float = 1.0,
    tracker: Any = None,
    snapshots_per_epoch: int = 4,
) -> float:
    """Train ``model`` with the set-up's settings (cosine schedule); return test accuracy."""
    m = train(
        model,
        task,
        epochs=epochs or setup.epochs,
        lr=setup.lr * lr_scale,
        optimizer=setup.optimizer,
        weight_decay=setup.weight_decay,
        batch_size=setup.batch_size,
        seed=seed,
        tracker=tracker,
        snapshots_per_epoch=snapshots_per_epoch,
    )
    return float(m["accuracy"])


# ---------------------------------------------------------------------------------------------
# baselines at a parameter count


def _scaled(groups: Sequence[ChannelGroup], factors: dict[str, float], mult: float) -> dict:
    out = {}
    for g in groups:
        step = max(g.divisor, 1)
        out[g.name] = max(step, round(g.width * factors.get(g.name, 1.0) * mult / step) * step)
    return out


def _match_params(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    factors: dict[str, float],
    target: int,
) -> dict[str, int]:
    """Widths ``width * factor * m`` with one ``m`` chosen so the parameters are nearest ``target``."""

    def params(m: float) -> int:
        return count_params(resize(model, groups, _scaled(groups, factors, m), init="reinit"))

    lo, hi = 0.05, 8.0
    for _ in range(30):
        mid = math.sqrt(lo * hi)
        if params(mid) < target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda m: abs(params(m) - target))
    return _scaled(groups, factors, best)


def uniform_model(model: nn.Module, mult: float, example_inputs: Any = None) -> nn.Module:
    """``model`` with every channel group scaled by ``mult`` (fresh weights)."""
    x = example_inputs if example_inputs is not None else _example(model)
    groups = find_groups(model, x)
    return resize(model, groups, _scaled(groups, {}, mult), init="reinit")


def _example(model: nn.Module) -> torch.Tensor:
    if isinstance(model, zoo.GRULM):
        return torch.zeros(2, 8, dtype=torch.long)
    if isinstance(model, zoo.MLP):
        return torch.zeros(2, model.config()["in_features"])
    return torch.zeros(2, 40)


def uniform_widths(model: nn.Module, groups: Sequence[ChannelGroup], target: int) -> dict:
    """One multiplier for every group, parameters nearest ``target``."""
    return _match_params(model, groups, {}, target)


def random_widths(
    model: nn.Module, groups: Sequence[ChannelGroup], target: int, seed: int
) -> dict[str, int]:
    """A random reallocation: log-uniform factors in [1/2, 2] per group, scaled to ``target``."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    factors = {g.name: float(2 ** (2 * torch.rand((), generator=gen) - 1)) for g in groups}
    return _match_params(model, groups, factors, target)


def pruned_model(trained: nn.Module, example_inputs: Any, target: int) -> tuple[nn.Module, str]:
    """Magnitude (group L2 norm) pruning of ``trained`` to about ``target`` parameters.

    Torch-Pruning's ``MagnitudePruner`` with ``GroupMagnitudeImportance(p=2)``, the output
    layer kept, one uniform ratio found by bisection. Models Torch-Pruning cannot prune (GRU)
    use widthwise's own magnitude surgery (highest-norm channels kept, uniform ratio).
    """
    if isinstance(trained, zoo.GRULM):
        groups = find_groups(trained, example_inputs)
        return (
            resize(trained, groups, _match_params(trained, groups, {}, target), init="net2net"),
            "widthwise magnitude surgery (Torch-Pruning has no GRU)",
        )
    import torch_pruning as tp

    groups = find_groups(trained, example_inputs)
    round_to = math.lcm(*[max(g.divisor, 1) for g in groups]) if groups else 1
    head: Any = trained.head if hasattr(trained, "head") else list(trained.modules())[-1]

    def prune(ratio: float) -> nn.Module:
        m = copy.deepcopy(trained)
        pruner = tp.pruner.MagnitudePruner(
            m,
            example_inputs,
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio,
            ignored_layers=[_same(m, trained, head)],
            round_to=round_to,
        )
        pruner.step()
        return m

    lo, hi = 0.0, 0.95
    for _ in range(12):
        mid = (lo + hi) / 2
        if count_params(prune(mid)) > target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda r: abs(count_params(prune(r)) - target))
    return prune(best), "Torch-Pruning MagnitudePruner, group L2 norm"


def _same(copy_: nn.Module, original: nn.Module, module: nn.Module) -> nn.Module:
    names = {id(m): n for n, m in original.named_modules()}
    return copy_.get_submodule(names[id(module)])


# ---------------------------------------------------------------------------------------------
# the proof


def _widths_of(model: nn.Module, example_inputs: Any) -> dict[str, int]:
    return {g.name: g.width for g in find_groups(model, example_inputs)}


def _plans(
    setup: Setup,
    original: nn.Module,
    table: pd.DataFrame,
    x: Any,
    which: Sequence[tuple[str, str, float, dict[str, Any]]] = tuple(PLANS),
) -> dict[str, Any]:
    """Each plan of ``which``: planned widths, whether the budget was met, the warnings."""
    out: dict[str, Any] = {}
    for name, kind, frac, settings in which:
        budget = (
            kind
            if frac == 1.0
            else frac
            * (count_params(original) if kind == "params" else count_flops(original, x, warn=False))
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            plan = streamline(
                original,
                table,
                x,
                budget=budget,  # type: ignore[arg-type]
                budget_kind=kind,  # type: ignore[arg-type]
                **settings,
            )
        out[name] = {
            "widths": plan.widths,
            "met": plan.budget["met"],
            "achieved_ratio": plan.budget["achieved"] / plan.budget["original"],
            "warnings": [
                str(w.message) for w in caught if "FLOPs undercounted" not in str(w.message)
            ],
            "table": plan.table.to_dict(orient="records"),
        }
    return out


def run_proof(
    out_dir: str | Path,
    *,
    setups: Sequence[str] = tuple(SETUPS),
    seeds: int = 5,
    epochs: int | None = None,
    plans: Sequence[str] | None = None,
    progress: Callable[[str], Any] | None = None,
) -> pd.DataFrame:
    """Run (or resume) the proof; return every finished row. See the module docstring.

    ``out_dir`` holds ``rows.csv`` (one row per trained model), ``plans.json`` (the plans and
    verdicts per set-up) and the trained originals (``SETUP-original-seedS.pt``) the pruning
    baseline starts from. Seeds run outermost, so a stopped run has the same seeds everywhere.
    """
    from widthwise.tracker import WidthTracker
    from widthwise.verdicts import verdicts as verdict_table

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows_path, plans_path = out / "rows.csv", out / "plans.json"
    rows = (
        pd.read_csv(rows_path).fillna({"note": ""}).to_dict("records") if rows_path.exists() else []
    )
    done = {(r["setup"], r["variant"], r["plan"], int(r["seed"])) for r in rows}
    all_plans: dict[str, Any] = json.loads(plans_path.read_text()) if plans_path.exists() else {}
    wanted = list(plans) if plans is not None else [p[0] for p in PLANS]
    say = progress or (lambda msg: None)
    torch.set_num_threads(1)

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        done.add((row["setup"], row["variant"], row["plan"], int(row["seed"])))
        pd.DataFrame(rows).to_csv(rows_path, index=False)  # after every model: resumable

    tasks: dict[str, Task] = {}

    def task_of(name: str) -> Task:
        if name not in tasks:
            tasks[name] = build_task(SETUPS[name], cache_dir=str(out / "data"))
        return tasks[name]

    def run_one(name: str, variant: str, plan: str, seed: int, make: Callable[[], Any]) -> None:
        if (name, variant, plan, seed) in done:
            return
        setup, task = SETUPS[name], task_of(name)
        say(f"{name} {variant} {plan} seed {seed}")
        t0 = time.time()
        try:
            model, note, lr_scale = make()
            acc = fit(model, task, setup, seed=seed, epochs=epochs, lr_scale=lr_scale)
        except Exception as exc:  # one failed variant must not stop a long unattended run
            say(f"{name} {variant} {plan} seed {seed} FAILED: {exc}")
            record(
                {
                    "setup": name,
                    "variant": variant,
                    "plan": plan,
                    "seed": seed,
                    "params": float("nan"),
                    "flops": float("nan"),
                    "accuracy": float("nan"),
                    "widths": "{}",
                    "note": f"failed: {exc}"[:300],
                    "seconds": round(time.time() - t0, 1),
                }
            )
            return
        if variant == "original":
            torch.save(model.state_dict(), out / f"{name}-original-seed{seed}.pt")
        x = task.example_inputs
        record(
            {
                "setup": name,
                "variant": variant,
                "plan": plan,
                "seed": seed,
                "params": count_params(model),
                "flops": count_flops(model, x, warn=False),
                "accuracy": acc,
                "widths": json.dumps(_widths_of(model, x)),
                "note": note,
                "seconds": round(time.time() - t0, 1),
            }
        )

    # 1. the tracked original (seed 0) and its plans
    for name in setups:
        setup, task = SETUPS[name], task_of(name)
        if name in all_plans:
            missing = [p for p in PLANS if p[0] not in all_plans[name]["plans"]]
            if missing:  # plans added since: planned from the saved verdicts and weights
                original = setup.build(_classes(task))
                original.load_state_dict(torch.load(out / f"{name}-original-seed0.pt"))
                table = pd.DataFrame(all_plans[name]["verdicts"])
                all_plans[name]["plans"].update(
                    _plans(
                        setup,
                        original,
                        table[["group", "label", "confidence"]],
                        task.example_inputs,
                        missing,
                    )
                )
                plans_path.write_text(json.dumps(all_plans, indent=1, default=str))
            continue
        say(f"{name}: tracked run of the original (seed 0)")
        torch.manual_seed(0)
        original = setup.build(_classes(task))
        tracker = WidthTracker(original, task.example_inputs)
        t0 = time.time()
        acc = fit(
            original,
            task,
            setup,
            seed=0,
            epochs=epochs,
            tracker=tracker,
            snapshots_per_epoch=TRACKED_SNAPSHOTS_PER_EPOCH,
        )
        table = verdict_table(tracker.run)
        tracker.close()
        all_plans[name] = {
            "verdicts": table[["group", "width", "label", "confidence"]].to_dict("records"),
            "plans": _plans(
                setup, original, table[["group", "label", "confidence"]], task.example_inputs
            ),
        }
        plans_path.write_text(json.dumps(all_plans, indent=1, default=str))
        torch.save(original.state_dict(), out / f"{name}-original-seed0.pt")
        if (name, "original", "-", 0) not in done:
            x = task.example_inputs
            record(
                {
                    "setup": name,
                    "variant": "original",
                    "plan": "-",
                    "seed": 0,
                    "params": count_params(original),
                    "flops": count_flops(original, x, warn=False),
                    "accuracy": acc,
                    "widths": json.dumps(_widths_of(original, x)),
                    "note": "tracked run",
                    "seconds": round(time.time() - t0, 1),
                }
            )

    # 2. every variant, seeds outermost; the core plans for every seed first
    core = [p for p in wanted if p in CORE_PLANS]
    for seed, todo in [(s, core) for s in range(seeds)] + [(s, wanted) for s in range(seeds)]:
        for name in setups:
            setup, task = SETUPS[name], task_of(name)
            x = task.example_inputs

            def fresh(seed: int = seed, setup: Setup = setup, task: Task = task) -> nn.Module:
                torch.manual_seed(seed)
                return setup.build(_classes(task))

            run_one(name, "original", "-", seed, lambda: (fresh(), "", 1.0))
            base = fresh()
            groups = find_groups(base, x)
            seen_widths: dict[str, str] = {}
            for plan_name in todo:
                info = all_plans[name]["plans"][plan_name]
                widths = {k: int(v) for k, v in info["widths"].items()}
                key = json.dumps(widths, sort_keys=True)
                if all(widths[g.name] == g.width for g in groups):
                    continue  # the plan changed nothing: it is the original
                if key in seen_widths:  # same widths as another plan: trained once
                    continue
                seen_widths[key] = plan_name

                target = count_params(resize(base, groups, widths, init="reinit"))
                for variant in ("streamlined", "uniform", "random", "pruned"):
                    if variant == "pruned" and target >= count_params(base):
                        continue  # pruning cannot reach a larger model than the original
                    run_one(
                        name,
                        variant,
                        plan_name,
                        seed,
                        functools.partial(
                            _variant,
                            variant,
                            base,
                            groups,
                            x,
                            widths,
                            target,
                            info["met"],
                            seed,
                            out / f"{name}-original-seed{seed}.pt",
                            fresh,
                        ),
                    )
    return pd.DataFrame(rows)


def _variant(
    variant: str,
    base: nn.Module,
    groups: Sequence[ChannelGroup],
    x: Any,
    widths: dict[str, int],
    target: int,
    met: bool,
    seed: int,
    original_state: Path,
    fresh: Callable[[], nn.Module],
) -> tuple[nn.Module, str, float]:
    """``(model to train, note, learning-rate scale)`` for one variant at one plan's size."""
    if variant == "streamlined":
        torch.manual_seed(seed)
        return resize(base, groups, widths, init="reinit"), "" if met else "budget not met", 1.0
    if variant == "uniform":
        torch.manual_seed(seed)
        return resize(base, groups, uniform_widths(base, groups, target), init="reinit"), "", 1.0
    if variant == "random":
        w = random_widths(base, groups, target, seed)
        torch.manual_seed(seed)
        return resize(base, groups, w, init="reinit"), "", 1.0
    if variant == "pruned":
        trained = fresh()
        trained.load_state_dict(torch.load(original_state))
        m, how = pruned_model(trained, x, target)
        torch.manual_seed(seed)
        return m, how, PRUNE_FINETUNE_LR
    raise ValueError(f"unknown variant {variant!r}")


# ---------------------------------------------------------------------------------------------
# reading the rows


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per set-up, plan and variant: parameter and FLOP ratios, accuracy mean ± SEM, seeds."""
    g = rows.groupby(["setup", "plan", "variant"], sort=False)
    t = g.agg(
        params=("params", "mean"),
        flops=("flops", "mean"),
        accuracy=("accuracy", "mean"),
        sem=("accuracy", "sem"),
        seeds=("seed", "count"),
    ).reset_index()
    t = ratios_to_original(t, "setup", accuracy=True)
    return t.round({"accuracy": 4, "sem": 4, "params_ratio": 3, "flops_ratio": 3, "vs_original": 4})


def figure(rows: pd.DataFrame):  # -> matplotlib Figure
    """Accuracy against parameters and against FLOPs, one row of panels per set-up."""
    # A bare Figure, not pyplot (as experiments.sweep_figure): nothing registered globally.
    from matplotlib.figure import Figure

    t = summary(rows)
    setups = list(dict.fromkeys(t.setup))
    fig = Figure(figsize=(10, 3.2 * len(setups)))
    axes = fig.subplots(len(setups), 2, squeeze=False)
    style = {
        "original": ("k", "*"),
        "streamlined": ("C0", "o"),
        "uniform": ("C1", "s"),
        "random": ("C2", "^"),
        "pruned": ("C3", "v"),
    }
    for row, name in zip(axes, setups):
        sub = t[t.setup == name]
        for ax, col in zip(row, ("params_ratio", "flops_ratio")):
            for variant, (color, marker) in style.items():
                v = sub[sub.variant == variant]
                if len(v):
                    ax.errorbar(
                        v[col],
                        v.accuracy,
                        yerr=v["sem"].fillna(0),
                        fmt=marker,
                        color=color,
                        label=variant,
                        capsize=3,
                    )
            ax.set_xlabel(col.replace("_ratio", "") + " / original's")
            ax.set_ylabel("test accuracy")
            ax.set_title(f"{name}: accuracy vs {col.split('_')[0]}")
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def verdict_lines(rows: pd.DataFrame) -> list[str]:
    """The issue's targets per set-up and plan, answered from the rows."""
    t = summary(rows)
    lines = []
    for (name, plan), sub in t[t.plan != "-"].groupby(["setup", "plan"], sort=False):
        base = t[(t.setup == name) & (t.variant == "original")].iloc[0]
        v = sub.set_index("variant")
        if "streamlined" not in v.index:
            continue
        s = v.loc["streamlined"]
        keeps = s.accuracy >= base.accuracy - (0 if np.isnan(base["sem"]) else base["sem"])
        beats = {
            b: bool(s.accuracy > v.loc[b].accuracy)
            for b in ("uniform", "random", "pruned")
            if b in v.index
        }
        lines.append(
            f"{name} {plan}: params {s.params_ratio:.2f}x flops {s.flops_ratio:.2f}x, "
            f"accuracy {s.accuracy:.4f} vs original {base.accuracy:.4f}±{base['sem']:.4f} "
            f"({'kept' if keeps else 'LOST'}); beats "
            + ", ".join(f"{b} {'yes' if ok else 'no'}" for b, ok in beats.items())
            + f" [{int(s.seeds)} seeds]"
        )
    return lines
