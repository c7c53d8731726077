"""Does width still pay on a data set? Accuracy against a uniform width multiplier.

Trains a conventional set-up (widthwise.reproduction.streamlining.SETUPS) with all its widths
scaled by one multiplier, for several multipliers and seeds, on its data set, and prints mean
test accuracy ± standard error per multiplier, with the gain over the next narrower multiplier.
Resumable: one CSV row per finished (set-up, data, multiplier, seed); rerun to continue.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/width_sweep.py --setups vgg1d \
        --data mnist1d mnist1d_hard --mults 0.25 0.5 1 2 --seeds 2 --out width_sweep.csv
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from widthwise.reproduction import streamlining as S


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setups", nargs="+", default=["vgg1d"])
    ap.add_argument("--data", nargs="+", default=["mnist1d_hard"], help="mnist1d or mnist1d_hard")
    ap.add_argument("--mults", nargs="+", type=float, default=[0.25, 0.5, 1.0, 2.0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None, help="default: the set-up's")
    ap.add_argument("--out", default="width_sweep.csv")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    done = pd.read_csv(out) if out.exists() else pd.DataFrame()
    for name in args.setups:
        for data_name in args.data:
            setup = S.SETUPS[name]
            task = S.build_task(setup, data=data_name)
            for mult in args.mults:
                for seed in range(args.seeds):
                    key = (name, data_name, mult, seed)
                    if (
                        len(done)
                        and (
                            (done.setup == name)
                            & (done.data == data_name)
                            & (done.mult == mult)
                            & (done.seed == seed)
                        ).any()
                    ):
                        continue
                    torch.manual_seed(seed)
                    model = S.uniform_model(
                        setup.build(S._classes(task)), mult, task.example_inputs
                    )
                    t = time.time()
                    acc = S.fit(model, task, setup, seed=seed, epochs=args.epochs)
                    row = {
                        "setup": name,
                        "data": data_name,
                        "mult": mult,
                        "seed": seed,
                        "params": S.count_params(model),
                        "accuracy": acc,
                        "seconds": round(time.time() - t, 1),
                    }
                    print(row, flush=True)
                    done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
                    done.to_csv(out, index=False)
                    del key
    g = done.groupby(["setup", "data", "mult"])
    table = g.agg(
        params=("params", "first"),
        accuracy=("accuracy", "mean"),
        sem=("accuracy", "sem"),
        seeds=("seed", "count"),
    ).reset_index()
    table["gain_vs_narrower"] = table.groupby(["setup", "data"]).accuracy.diff()
    print(table.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
