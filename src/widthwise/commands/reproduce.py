"""``widthwise reproduce FAMILY``: the paper's width sweeps, and the streamlining proof."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from widthwise.cli import CLIError

if TYPE_CHECKING:
    from tqdm.auto import tqdm

FAMILY_NAMES = ("mlp", "cnn1d", "vgg", "resnet", "gru", "gcn", "vit", "teacher")
#: the set-ups of reproduction.streamlining.SETUPS (kept here so `--help` needs no torch import)
PROOF_FAMILY_NAMES = ("vgg1d", "resnet1d", "vit1d", "mlp", "gru")
#: the budgets of reproduction.streamlining.PLANS
PROOF_PLAN_NAMES = (
    "flops",
    "params0.6",
    "flops-ifm",
    "params0.6-ifm",
    "flops-widen3",
    "params0.35",
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="width sweeps per model family (narrow to generous), or the streamlining proof",
        description="Train a model family at several widths of its examined layer, track it, "
        "and write the paper-style figure (variance against epoch, one panel per width) and a "
        "table of verdicts and accuracies per seed. FAMILY 'streamline' runs the streamlining "
        "proof instead: conventional set-ups, streamlined at equal FLOPs and at 0.6x the "
        "parameters, against a uniform width multiplier, a random reallocation and magnitude "
        "pruning at the same parameter count; resumable (rerun with the same --out).",
    )
    p.add_argument(
        "family",
        metavar="FAMILY",
        help=f"one of {', '.join(FAMILY_NAMES)}, 'all', or 'streamline'",
    )
    p.add_argument("--quick", action="store_true", help="two widths, fewer epochs (minutes)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per width (default 5; 2 quick)")
    p.add_argument("--out", default="widthwise-reproduce", help="output folder")
    p.add_argument(
        "--optimizer",
        choices=["family", "adamw"],
        default="family",
        help="train with each family's own optimiser (default) or with AdamW "
        "(lr 1e-2, weight decay 0.01); results go to OUT/FAMILY-adamw",
    )
    p.add_argument(
        "--families",
        nargs="+",
        default=list(PROOF_FAMILY_NAMES),
        help=f"for 'streamline': which set-ups ({', '.join(PROOF_FAMILY_NAMES)})",
    )
    p.add_argument(
        "--epochs", type=int, default=None, help="for 'streamline': epochs per model (default 6)"
    )
    p.add_argument(
        "--plans",
        nargs="+",
        default=None,
        help="for 'streamline': which budgets (default all: " + ", ".join(PROOF_PLAN_NAMES) + ")",
    )
    p.set_defaults(func=run)


def _bar(total: int | None, desc: str) -> tqdm:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="run", leave=False)


def run(args: argparse.Namespace) -> int:
    from widthwise.reproduction import experiments

    if args.seeds is not None and args.seeds < 1:
        raise CLIError(f"--seeds must be at least 1, got {args.seeds}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} exists and is not a folder")
    # check every name before anything is written: a typo leaves no empty --out folder behind
    if args.family == "streamline":
        for name in args.families:
            if name not in PROOF_FAMILY_NAMES:
                raise CLIError(
                    f"no streamlining set-up for {name!r}; choose from {', '.join(PROOF_FAMILY_NAMES)}"
                )
        bad = [p for p in args.plans or () if p not in PROOF_PLAN_NAMES]
        if bad:
            raise CLIError(f"no plan {bad[0]!r}; choose from {', '.join(PROOF_PLAN_NAMES)}")
        if args.epochs is not None and args.epochs < 1:
            raise CLIError(f"--epochs must be at least 1, got {args.epochs}")
        out.mkdir(parents=True, exist_ok=True)
        return _streamline(args, out)
    names = list(FAMILY_NAMES) if args.family == "all" else [args.family]
    unknown = [n for n in names if n not in experiments.FAMILIES]
    if unknown:
        raise CLIError(f"unknown family {unknown[0]!r}; choose from {', '.join(FAMILY_NAMES)}")
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        fam = experiments.FAMILIES[name]
        widths = fam.quick_widths if args.quick else fam.widths
        seeds = args.seeds or (2 if args.quick else fam.seeds)
        bar = _bar(len(widths) * seeds, name)
        started = [0]

        def progress(msg: str, bar: tqdm = bar, started: list[int] = started) -> None:
            # Called as each run starts: the bar counts the runs finished before it.
            bar.update(1 if started[0] else 0)
            started[0] += 1
            bar.set_postfix_str(msg)

        adamw = args.optimizer == "adamw"
        tag = f"{name}-adamw" if adamw else name
        results = experiments.sweep(
            name,
            seeds=seeds,
            quick=args.quick,
            out_dir=out / tag,
            progress=progress,
            optimizer="adamw" if adamw else None,
        )
        bar.update(1)
        bar.close()
        cols = ["width", "seed", "label", "confidence", "paper_label", "accuracy", "reason"]
        table = results[[c for c in cols if c in results.columns]]
        summary = experiments.summary(results)
        fig = experiments.sweep_figure(results)
        fig.savefig(out / f"{tag}.png", dpi=110)
        table.to_csv(out / f"{tag}.csv", index=False)
        summary.to_csv(out / f"{tag}-summary.csv", index=False)
        print(f"\n{fam.description}" + (" (AdamW)" if adamw else ""))
        print(table.to_string(index=False))
        print(summary.to_string(index=False))
        print(f"figure: {out / f'{tag}.png'}  table: {out / f'{tag}.csv'}")
    return 0


def _streamline(args: argparse.Namespace, out: Path) -> int:
    import json

    from widthwise.reproduction import streamlining

    seeds = args.seeds or (2 if args.quick else 5)
    epochs = args.epochs or (2 if args.quick else None)
    bar = _bar(None, "streamline")
    rows = streamlining.run_proof(
        out,
        setups=args.families,
        seeds=seeds,
        epochs=epochs,
        plans=args.plans,
        progress=lambda msg: (bar.set_postfix_str(msg), bar.update(1)),
    )
    bar.close()
    plans = json.loads((out / "plans.json").read_text())
    for name in args.families:
        print(f"\n{name}: {streamlining.SETUPS[name].description}")
        for v in plans[name]["verdicts"]:
            print(f"  {v['group']:<32} {v['width']:>5}  {v['label']:<12} {v['confidence']:.2f}")
        for plan, info in plans[name]["plans"].items():
            if args.plans is not None and plan not in args.plans:
                continue
            print(
                f"  plan {plan:<18} {info['achieved_ratio']:.2f}x  met={info['met']}  {info['widths']}"
            )
    table = streamlining.summary(rows)
    table.to_csv(out / "streamline-summary.csv", index=False)
    print()
    print(table.to_string(index=False))
    print()
    print("\n".join(streamlining.verdict_lines(rows)))
    fig = streamlining.figure(rows)
    fig.savefig(out / "streamline.png", dpi=100)
    print(
        f"\ntable: {out / 'streamline-summary.csv'}  rows: {out / 'rows.csv'}  figure: {out / 'streamline.png'}"
    )
    return 0
