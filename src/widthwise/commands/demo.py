"""``widthwise demo``: train two small mixed-width networks on MNIST-1D and show the verdicts."""

from __future__ import annotations

import argparse

from widthwise.cli import CLIError, check_writable


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train two mixed-width networks on MNIST-1D and report which layers are too narrow",
        description="Generate MNIST-1D locally, train an MLP (40-512-8-256-10) and a 1-D CNN "
        "(4, 64, 128 channels) while tracking their channel norms, print the IS/DS verdict of every "
        "channel group and write the run files and report.html.",
    )
    p.add_argument(
        "--out",
        default="widthwise-demo",
        metavar="DIR",
        help="output folder (default: %(default)s)",
    )
    p.add_argument(
        "--epochs", type=int, default=30, metavar="N", help="training epochs (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed (default: %(default)s)")
    p.add_argument(
        "--samples",
        type=int,
        default=5000,
        metavar="N",
        help="MNIST-1D examples, 80%% for training (default: %(default)s)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from widthwise.reproduction.demo import run_demo

    if args.epochs < 1:
        raise CLIError(f"--epochs must be at least 1, got {args.epochs}")
    if args.samples < 100:
        raise CLIError(f"--samples must be at least 100, got {args.samples}")
    out = Path(args.out)
    check_writable(out)
    result = run_demo(
        out,
        epochs=args.epochs,
        seed=args.seed,
        samples=args.samples,
        progress=False if args.no_progress else None,
    )
    print(f"Run files: {', '.join(str(p) for p in result.runs.values())}")
    print(f"Report:    {result.html}  (open it in a browser)")
    print(f"Again:     widthwise report {result.runs[next(iter(result.runs))]}")
    print(f"Done in {result.seconds:.0f} s.")
    return 0
