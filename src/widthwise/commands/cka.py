"""``widthwise cka``: train (or load) zoo ResNets on a local data set and compare their layers.

For every width multiplier x depth it writes to ``--out``:

* ``<name>.pt`` — the trained model (config, state dict, test accuracy), reused by ``--load``;
* ``<name>_cka.csv`` and ``<name>_cka.png`` — the minibatch CKA matrix and its heatmap, with
  the detected blocks outlined and ``n`` / feature dimensions printed beside it;
* and, over all models, ``summary.csv`` (accuracy, blocks), ``blocks.csv``, ``pc1.csv``,
  ``predictions.csv`` (per-class accuracy and disagreement of the first model against each
  other one) and ``cka.html`` (self-contained).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from widthwise.cli import CLIError

if TYPE_CHECKING:
    import torch
    from torch import nn

SUMMARY = ("summary.csv", "blocks.csv", "pc1.csv", "predictions.csv", "cka.html")


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    def error(message: str) -> NoReturn:
        print(f"widthwise cka: error: {message} (see widthwise cka --help)", file=sys.stderr)
        sys.exit(2)

    parser.error = error  # type: ignore[method-assign]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "cka",
        help="layer-by-layer representation similarity (linear CKA) of zoo models",
        description="Train (or --load) zoo ResNets of several widths and depths on a local data "
        "set, then write the minibatch linear CKA between every pair of residual blocks "
        "(Nguyen, Raghu & Kornblith, ICLR 2021) as heatmaps and CSV, the detected block "
        "structure, each block's PC1 share and where the models' predictions disagree.",
        epilog="example: widthwise cka --family resnet --widths 1 4 --depths 20 --out cka_out",
    )
    p.add_argument("--family", default="resnet", choices=["resnet"], help="model family")
    p.add_argument(
        "--widths",
        type=float,
        nargs="+",
        default=[1.0],
        metavar="MULT",
        help="width multipliers of the CIFAR ResNet's 16/32/64 channels (default 1)",
    )
    p.add_argument(
        "--depths",
        type=int,
        nargs="+",
        default=[20],
        metavar="DEPTH",
        help="ResNet depths 6n+2: 8, 14, 20, 26, 32, 44, 56, ... (default 20)",
    )
    p.add_argument("--dataset", default="digits", choices=["digits"], help="local data set")
    p.add_argument("--size", type=int, default=16, help="images upsampled to SIZE x SIZE")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=64, help="training batch size")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (cosine decay)")
    p.add_argument("--cka-batch", type=int, default=256, help="CKA minibatch size k (default 256)")
    p.add_argument(
        "--estimator",
        default="unbiased",
        choices=["unbiased", "biased"],
        help="HSIC estimator; biased is for comparison only (fakes blocks at small n)",
    )
    p.add_argument("--threshold", type=float, default=0.9, help="block: every pair CKA >= this")
    p.add_argument("--min-size", type=int, default=3, help="block: at least this many layers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--load", action="store_true", help="reuse <name>.pt in --out, no training")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--force", action="store_true", help="overwrite earlier outputs in --out")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    _one_line_errors(p)


def _name(mult: float, depth: int) -> str:
    return f"resnet{depth}_w{mult:g}"


def _check(args: argparse.Namespace) -> None:
    if any(not m > 0 for m in args.widths):
        raise CLIError(f"--widths are multipliers > 0, got {args.widths}")
    bad = [d for d in args.depths if d < 8 or (d - 2) % 6]
    if bad:
        raise CLIError(f"--depths must be 6n+2 with n >= 1 (8, 14, 20, ...), got {bad[0]}")
    for opt, low in (("size", 8), ("epochs", 0), ("batch_size", 1), ("cka_batch", 4)):
        if getattr(args, opt) < low:
            raise CLIError(f"--{opt.replace('_', '-')} must be >= {low}, got {getattr(args, opt)}")
    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads must be >= 1, got {args.threads}")
    if not args.lr > 0:
        raise CLIError(f"--lr must be > 0, got {args.lr}")
    if not 0 < args.threshold <= 1:
        raise CLIError(f"--threshold must be in (0, 1], got {args.threshold}")
    if args.min_size < 2:
        raise CLIError(f"--min-size must be >= 2, got {args.min_size}")
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; give a directory")
    names = [_name(m, d) for m in args.widths for d in args.depths]
    if len(set(names)) != len(names):
        raise CLIError("--widths / --depths contain duplicates")
    if args.load:
        missing = [n for n in names if not (out / f"{n}.pt").exists()]
        if missing:
            raise CLIError(f"--load: {out / (missing[0] + '.pt')} does not exist; train first")
    else:
        clash = [n for n in (*SUMMARY, *(f"{n}.pt" for n in names)) if (out / n).exists()]
        if clash and not args.force:
            raise CLIError(f"{out} already holds {clash[0]}; pass --force, --load or another --out")


def _data(args: argparse.Namespace) -> Any:
    import torch.nn.functional as F

    from widthwise.reproduction.data import digits

    d = digits(seed=args.seed, flatten=False)

    def up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=(args.size, args.size), mode="bilinear", align_corners=False)

    return up(d.x_train), d.y_train, up(d.x_test), d.y_test, d.num_classes


def _train(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace, desc: str
) -> None:
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(
        TensorDataset(x, y), batch_size=args.batch_size, shuffle=True, generator=gen
    )
    # AdamW with clipping: SGD at a fixed rate diverged for the deep and wide ResNets here
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = max(1, args.epochs * len(loader))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    bar = tqdm(range(args.epochs), desc=f"train {desc}", disable=args.quiet, leave=False)
    for _ in bar:
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xb).argmax(1) for xb in x.split(256)])
    return float((pred == y).float().mean())


def run(args: argparse.Namespace) -> int:
    _check(args)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import torch

    from widthwise.probes.similarity import (
        block_structure,
        cka_matrix,
        compare_predictions,
        pc1_share,
        report_section,
    )
    from widthwise.reproduction.zoo import ResNet

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot create --out {out}: {exc.strerror}") from None
    x_tr, y_tr, x_te, y_te, n_classes = _data(args)
    unbiased = args.estimator == "unbiased"
    models, summary, blocks_all, pc1_all, sections = {}, [], [], [], []
    for mult in args.widths:
        for depth in args.depths:
            name = _name(mult, depth)
            path = out / f"{name}.pt"
            if args.load:
                try:
                    ckpt = torch.load(path, map_location="cpu", weights_only=False)
                    model = ResNet.from_config(ckpt["config"])
                    model.load_state_dict(ckpt["state_dict"])
                except Exception as exc:  # any unreadable checkpoint is a user-facing error
                    raise CLIError(f"cannot load {path}: {type(exc).__name__}: {exc}") from None
            else:
                torch.manual_seed(args.seed)
                widths = [max(1, round(w * mult)) for w in (16, 32, 64)]
                n = (depth - 2) // 6
                model = ResNet("basic", widths, [n, n, n], in_channels=1, num_classes=n_classes)
                _train(model, x_tr, y_tr, args, name)
            acc = _accuracy(model, x_te, y_te)
            if not args.load:
                torch.save(
                    {"config": model.config(), "state_dict": model.state_dict(), "accuracy": acc},
                    path,
                )
            result = cka_matrix(
                model,
                x_te,
                unbiased=unbiased,
                batch_size=args.cka_batch,
                progress=not args.quiet,
                label=name,
            )
            blocks = block_structure(result, threshold=args.threshold, min_size=args.min_size)
            pc1 = pc1_share(model, x_te, result.rows, batch_size=args.cka_batch)
            result.to_frame().to_csv(out / f"{name}_cka.csv")
            fig = result.figure(blocks=blocks)
            fig.savefig(out / f"{name}_cka.png", dpi=130)
            plt.close(fig)
            sections.append(
                report_section(result, threshold=args.threshold, min_size=args.min_size, pc1=pc1)
            )
            blocks_all.append(blocks.assign(model=name))
            pc1_all.append(pc1.assign(model=name))
            params = sum(p.numel() for p in model.parameters())
            summary.append(
                {
                    "model": name,
                    "width_mult": mult,
                    "depth": depth,
                    "params": params,
                    "test_accuracy": acc,
                    "layers": len(result.rows),
                    "n_examples": result.n_examples,
                    "blocks": len(blocks),
                    "largest_block": int(blocks["size"].max()) if len(blocks) else 0,
                    "mean_offdiag_cka": float(
                        result.matrix[~torch.eye(len(result.rows), dtype=torch.bool).numpy()].mean()
                    )
                    if len(result.rows) > 1
                    else float("nan"),
                }
            )
            models[name] = model
    names = list(models)
    preds = []
    for other in names[1:]:
        cmp = compare_predictions(
            models[names[0]], models[other], [(x_te, y_te)], batch_size=len(x_te)
        )
        preds.append(cmp.per_class.assign(model_a=names[0], model_b=other))
    summary_df = pd.DataFrame(summary)
    summary_df.to_csv(out / "summary.csv", index=False)
    pd.concat(blocks_all, ignore_index=True).to_csv(out / "blocks.csv", index=False)
    pd.concat(pc1_all, ignore_index=True).to_csv(out / "pc1.csv", index=False)
    if preds:
        pd.concat(preds, ignore_index=True).to_csv(out / "predictions.csv", index=False)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>widthwise cka</title></head>"
        "<body>" + "\n".join(sections) + "</body></html>"
    )
    (out / "cka.html").write_text(page, encoding="utf-8")
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        print(summary_df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {out}/ (summary.csv, blocks.csv, pc1.csv, cka.html, <model>_cka.png)")
    return 0
