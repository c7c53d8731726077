"""Why does (or doesn't) a family show "narrow -> DS, wide -> IS"? Sweep its training settings.

Each configuration is a family of :data:`widthwise.reproduction.experiments.FAMILIES` with some fields
overridden (learning rate, weight decay, epochs, schedule) or a variant of its model (another
examined layer). For every configuration the narrowest and the widest width are trained for a
few seeds; the output is one row per configuration with the share of DS verdicts at the narrow
width and of IS verdicts at the wide one, and the accuracies.

    python benchmarks/sweep_ablation.py --family mlp cnn1d --seeds 3 --jobs 2

Runs are independent (one BLAS thread each) and spread over ``--jobs`` processes; rows are
appended to ``--out`` as they finish, so an interrupted sweep keeps what it measured. The tables
in docs/reproduction.md came from this script.
"""

from __future__ import annotations

import argparse
import itertools
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import pandas as pd

#: Model variants: another examined layer for the families whose default layer is easy.
VARIANTS = {
    "vgg-mid": ("vgg", "features.4"),
    "vgg-nobn": ("vgg", "features.0"),
}


def _variant(name: str):
    from widthwise.reproduction import experiments, zoo

    if name == "vgg-mid":
        return replace(
            experiments.FAMILIES["vgg"],
            name="vgg-mid",
            build_model=lambda w, t: zoo.VGG([32, "M", w, "M", 64], in_channels=1, image_size=8),
            examined="features.4",
        )
    if name == "vgg-nobn":
        return replace(
            experiments.FAMILIES["vgg"],
            name="vgg-nobn",
            build_model=lambda w, t: zoo.VGG(
                [w, "M", 64, "M", 128], in_channels=1, image_size=8, batch_norm=False
            ),
        )
    return experiments.FAMILIES[name]


def grid(family: str, epochs_factors=(1, 2), optimizer=None, lrs=None) -> list[dict]:
    fam = _variant(family)
    opt = optimizer or fam.optimizer
    lrs = lrs or {"sgd": [0.02, 0.05, 0.1], "adam": [0.001, 0.003, 0.01]}[opt]
    return [
        {"optimizer": opt, "lr": lr, "weight_decay": wd, "epochs": fam.epochs * f}
        for lr, wd, f in itertools.product(lrs, [0.0, 5e-4], epochs_factors)
    ]


def run(job: tuple[str, dict, int, int]) -> dict:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    from widthwise.reproduction import experiments

    family, overrides, width, seed = job
    fam = replace(_variant(family), **overrides)
    r = experiments._run_one(fam, width, seed, quick=False, out_dir=None, task=fam.build_task(0))
    return {
        "family": family,
        **overrides,
        "width": width,
        "seed": seed,
        "label": r["label"],
        "confidence": r["confidence"],
        "reason": r["reason"],
        "accuracy": r["accuracy"],
        "seconds": r["seconds"],
    }


def table(df: pd.DataFrame) -> pd.DataFrame:
    keys = ["family", "optimizer", "lr", "weight_decay", "epochs"]
    lo = df.groupby(keys).width.transform("min")
    hi = df.groupby(keys).width.transform("max")
    narrow, wide = df[df.width == lo].groupby(keys), df[df.width == hi].groupby(keys)
    return pd.DataFrame(
        {
            "narrow_DS": narrow.label.apply(lambda s: (s == "DS").mean()),
            "wide_IS": wide.label.apply(lambda s: (s == "IS").mean()),
            "narrow_acc": narrow.accuracy.mean(),
            "wide_acc": wide.accuracy.mean(),
            "runs": df.groupby(keys).size(),
            "seconds": df.groupby(keys).seconds.max(),
        }
    ).reset_index()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", nargs="+", required=True, help="families or variants (vgg-mid)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--epochs-factors", type=int, nargs="+", default=[1, 2])
    p.add_argument("--optimizer", choices=["sgd", "adam"], help="instead of the family's")
    p.add_argument("--lrs", type=float, nargs="+", help="learning rates to try")
    p.add_argument("--widths", type=int, nargs=2, help="narrow and wide width to train")
    p.add_argument("--out", default="sweep-ablation.csv")
    p.add_argument("--append", action="store_true", help="add to --out instead of replacing it")
    a = p.parse_args()
    jobs = []
    for f in a.family:
        fam = _variant(f)
        for cfg in grid(f, a.epochs_factors, a.optimizer, a.lrs):
            for w in a.widths or (fam.widths[0], fam.widths[-1]):
                jobs.extend((f, cfg, w, s) for s in range(a.seeds))
    out = Path(a.out)
    if not a.append:
        out.unlink(missing_ok=True)
    # the slow (wide, long) runs first, so the pool ends evenly
    jobs.sort(key=lambda j: -j[2] * j[1]["epochs"])
    with ProcessPoolExecutor(a.jobs) as pool:
        for fut in as_completed([pool.submit(run, j) for j in jobs]):
            row = pd.DataFrame([fut.result()])
            row.to_csv(out, mode="a", header=not out.exists(), index=False)
    print(table(pd.read_csv(out)).round({"narrow_acc": 3, "wide_acc": 3}).to_string(index=False))


if __name__ == "__main__":
    main()
