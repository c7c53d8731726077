"""``widthwise kernel``: the neural covariance kernel over a grid of widths and depths.

Writes ``kernel_grid.csv`` (one row per branch scale, width and depth), ``kernel_paths.csv``
(distance along the width-first and depth-first orders), ``kernel_grid.png`` and
``kernel_kernels.npz`` (every mean kernel) to ``--out``, and prints the distance tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from widthwise.cli import CLIError, check_writable

OUTPUTS = ("kernel_grid.csv", "kernel_paths.csv", "kernel_grid.png", "kernel_kernels.npz")


def _int_list(text: str, name: str, low: int) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CLIError(
            f"{name} must be comma-separated integers, e.g. 16,64,256; got {text!r}"
        ) from None
    if not values or min(values) < low:
        raise CLIError(f"{name} must be comma-separated integers >= {low}; got {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "kernel",
        help="neural covariance kernel of a residual MLP over widths x depths",
        description="Measure the neural covariance kernel (cosine similarity of the last "
        "residual stream between inputs, averaged over random initialisations) of "
        "ResidualMLP for every width and depth, and its distance to the kernel at the largest "
        "width and depth along both orders of limits (Hayou & Yang 2023; Hayou 2023).",
    )
    p.add_argument("--widths", default="16,64,256", help="comma-separated (default 16,64,256)")
    p.add_argument("--depths", default="1,4,16", help="comma-separated (default 1,4,16)")
    p.add_argument(
        "--branch-scale",
        default="1/sqrt(depth),none",
        help="comma-separated branch scales to compare: 1/sqrt(depth), 1/depth, none or a "
        "number (default 1/sqrt(depth),none)",
    )
    p.add_argument("--inits", type=int, default=16, help="initialisations per cell (default 16)")
    p.add_argument("--points", type=int, default=8, help="inputs on the half circle (default 8)")
    p.add_argument("--activation", default="relu", choices=["relu", "tanh", "gelu"])
    p.add_argument("--block", default="single", choices=["single", "mlp"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--force", action="store_true", help="overwrite earlier outputs in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    widths = _int_list(args.widths, "--widths", 1)
    depths = _int_list(args.depths, "--depths", 0)
    if args.inits < 1:
        raise CLIError(f"--inits must be >= 1; got {args.inits}")
    if args.points < 2:
        raise CLIError(f"--points must be >= 2; got {args.points}")
    from widthwise.probes.residual_mlp import resolve_branch_scale

    scales = [s.strip() for s in args.branch_scale.split(",") if s.strip()]
    if not scales:
        raise CLIError("--branch-scale needs at least one value, e.g. 1/sqrt(depth),none")
    for s in scales:
        try:
            resolve_branch_scale(s, 1)
        except ValueError as exc:
            raise CLIError(f"--branch-scale: {exc}") from None
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; give a directory")
    clash = [name for name in OUTPUTS if (out / name).exists()]
    if clash and not args.force:
        raise CLIError(f"{out} already holds {', '.join(clash)}; pass --force or another --out")
    check_writable(out)  # before minutes of work, not after

    import numpy as np
    import pandas as pd

    from widthwise.probes.kernel import circle_inputs, plot_scaling_grids, scaling_grid

    inputs = circle_inputs(args.points)
    grids = []
    for s in scales:
        grids.append(
            scaling_grid(
                widths,
                depths,
                branch_scale=s,
                inputs=inputs,
                n_inits=args.inits,
                seed=args.seed,
                activation=args.activation,
                block=args.block,
                progress=not args.quiet,
            )
        )
    out.mkdir(parents=True, exist_ok=True)
    table = pd.concat([g.table.assign(branch_scale=str(g.branch_scale)) for g in grids])
    paths = pd.concat([g.paths.assign(branch_scale=str(g.branch_scale)) for g in grids])
    table.to_csv(out / "kernel_grid.csv", index=False)
    paths.to_csv(out / "kernel_paths.csv", index=False)
    arrays = {f"{g.branch_scale}|w={w}|d={d}": k for g in grids for (w, d), k in g.kernels.items()}
    # allow_pickle is savez's default, named so no array name can be taken for it
    np.savez(out / "kernel_kernels.npz", inputs=inputs.numpy(), allow_pickle=True, **arrays)
    fig = plot_scaling_grids(grids)
    fig.savefig(out / "kernel_grid.png", dpi=110)

    for g in grids:
        print(
            f"\nbranch scale {g.branch_scale}: RMS distance to the kernel at "
            f"width {g.widths[-1]}, depth {g.depths[-1]} (Monte-Carlo s.e. in brackets)"
        )
        dist = g.table.pivot(index="depth", columns="width", values="distance")
        noise = g.table.pivot(index="depth", columns="width", values="noise")
        cells = dist.map(lambda v: f"{v:.3f}") + noise.map(lambda v: f" ({v:.3f})")
        print(cells.rename_axis(index="depth", columns="width").to_string())
        if g.limit is not None:
            from widthwise.probes.kernel import kernel_distance

            print(
                f"corner to the common width/depth limit (ODE): "
                f"{kernel_distance(g.corner, g.limit):.4f}"
            )
    print(f"\nwrote {', '.join(OUTPUTS)} to {out}")
    return 0
