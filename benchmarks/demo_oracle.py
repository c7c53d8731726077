"""Widen-and-retrain check of the demo's own verdicts: does widening the demo's narrow layers help?

    OMP_NUM_THREADS=1 python benchmarks/demo_oracle.py            # about 2 minutes on one thread

Trains each network of ``widthwise demo`` with exactly the demo's settings (MNIST-1D, 5,000
examples, SGD with momentum, 30 epochs, the demo's schedules) over ``--seeds`` seeds, next to the
same network with one group widened, and prints the mean test accuracy ± SEM of each and the
paired difference: the oracle of docs/validity.md, applied to the demo.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from widthwise.reproduction.data import mnist1d
from widthwise.reproduction.demo import DemoModel, train_tracked

#: (name, family, widths, schedule): the demo's networks and the same with one group widened.
VARIANTS = [
    ("cnn", "cnn1d", [4, 64, 128], "cosine"),
    ("cnn, convs.0 x4", "cnn1d", [16, 64, 128], "cosine"),
    ("mlp", "mlp", [512, 8, 256], "step"),
    ("mlp, hidden.1 x4", "mlp", [512, 32, 256], "step"),
    ("mlp, hidden.0 /4", "mlp", [128, 8, 256], "step"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(1)
    data = mnist1d(num_samples=5000, seed=42)
    acc: dict[str, list[float]] = {}
    for name, family, widths, schedule in VARIANTS:
        for seed in range(a.seeds):
            torch.manual_seed(seed)
            model = DemoModel(name, family, widths, schedule=schedule).build()
            t0 = time.time()
            _, got = train_tracked(
                model, data, None, epochs=30, seed=seed, schedule=schedule, snapshot_every=10**9
            )
            acc.setdefault(name, []).append(got)
            print(f"{name} seed {seed}: {got:.4f} ({time.time() - t0:.1f} s)", flush=True)
    print("\nvariant                 accuracy  SEM     vs its original (paired)")
    for name, _, _, _ in VARIANTS:
        v = np.array(acc[name])
        base = np.array(acc[name.split(",")[0]])
        d = v - base
        sem = v.std(ddof=1) / np.sqrt(len(v))
        dsem = d.std(ddof=1) / np.sqrt(len(d))
        print(f"{name:22s} {v.mean():.4f}  {sem:.4f}  {d.mean():+.4f} ± {dsem:.4f}")


if __name__ == "__main__":
    main()
