"""``widthwise reproduce FAMILY``: the paper's width sweeps, and the streamlining proof."""

from __future__ import annotations

import argparse
from pathlib import Path

from widthwise.cli import CLIError

FAMILY_NAMES = ("mlp", "cnn1d", "vgg", "resnet", "gru", "gcn", "vit", "teacher")
#: the set-ups of experiments.PROOF_FAMILIES (kept here so `--help` needs no torch import)
PROOF_FAMILY_NAMES = ("cnn1d", "vgg", "resnet")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="width sweeps per model family (narrow to generous), or the streamlining proof",
        description="Train a model family at several widths of its examined layer, track it, "
        "and write the paper-style figure (variance against epoch, one panel per width) and a "
        "table of verdicts and accuracies per seed. FAMILY 'streamline' compares original, "
        "streamlined (equal FLOPs) and uniformly scaled models instead.",
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
        "--families",
        nargs="+",
        default=list(PROOF_FAMILY_NAMES),
        help="for 'streamline': which families to compare",
    )
    p.set_defaults(func=run)


def _bar(total: int, desc: str):
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
        known = ", ".join(experiments.PROOF_FAMILIES)
        for name in args.families:
            if name not in experiments.PROOF_FAMILIES:
                raise CLIError(f"no streamlining set-up for {name!r}; choose from {known}")
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

        def progress(msg: str, bar=bar, started=started) -> None:
            # Called as each run starts: the bar counts the runs finished before it.
            bar.update(1 if started[0] else 0)
            started[0] += 1
            bar.set_postfix_str(msg)

        results = experiments.sweep(
            name, seeds=seeds, quick=args.quick, out_dir=out / name, progress=progress
        )
        bar.update(1)
        bar.close()
        table = results[["width", "seed", "label", "confidence", "accuracy", "reason"]]
        summary = experiments.summary(results)
        fig = experiments.sweep_figure(results)
        fig.savefig(out / f"{name}.png", dpi=110)
        table.to_csv(out / f"{name}.csv", index=False)
        summary.to_csv(out / f"{name}-summary.csv", index=False)
        print(f"\n{fam.description}")
        print(table.to_string(index=False))
        print(summary.to_string(index=False))
        print(f"figure: {out / f'{name}.png'}  table: {out / f'{name}.csv'}")
    return 0


def _streamline(args: argparse.Namespace, out: Path) -> int:
    import pandas as pd

    from widthwise.reproduction import experiments

    frames = []
    for name in args.families:
        seeds = args.seeds or (2 if args.quick else 5)
        bar = _bar(1 + 3 * seeds, f"streamline {name}")
        df = experiments.streamline_proof(
            name,
            seeds=seeds,
            quick=args.quick,
            progress=lambda msg, bar=bar: (bar.set_postfix_str(msg), bar.update(1)),
        )
        bar.close()
        print(df.attrs.pop("plan"))  # concat compares attrs, and a plan holds DataFrames
        frames.append(df)
    results = pd.concat(frames, ignore_index=True)
    results.to_csv(out / "streamline.csv", index=False)
    table = experiments.proof_table(results)
    print(table.to_string(index=False))
    table.to_csv(out / "streamline-summary.csv", index=False)
    print(f"table: {out / 'streamline-summary.csv'}")
    return 0
