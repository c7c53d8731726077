"""Real MLP-on-MNIST-1D variance curves, and the verdicts `widthwise.classify` gives them.

Trains small two-hidden-layer MLPs on MNIST-1D (generated locally, no download) under several
widths, optimisers, learning rates and seeds, records each hidden layer's weight-norm variance
(the channel Matthew effect metric) over training, and prints one row per layer with the verdict.

    python benchmarks/verdicts_mnist1d.py                 # the table in docs/verdicts.md
    python benchmarks/verdicts_mnist1d.py --seeds 1       # one seed
    python benchmarks/verdicts_mnist1d.py --save runs.npz # keep the curves for calibration

The variance is widthwise's own (`widthwise.group_stats` on the groups `find_groups` gives; for
an MLP hidden layer n_i = ||W_in[i, :]|| * ||W_out[:, i]||, variance = unbiased var(n / mean(n)),
which tests/test_patterns.py checks against explicit loops).
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch
from torch import nn


def mnist1d_tensors(num_samples: int = 5000, seed: int = 42):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    d = make_dataset(args)
    x = torch.tensor(d["x"], dtype=torch.float32)
    y = torch.tensor(d["y"], dtype=torch.long)
    xt = torch.tensor(d["x_test"], dtype=torch.float32)
    yt = torch.tensor(d["y_test"], dtype=torch.long)
    return x, y, xt, yt


def make_mlp(widths, n_in=40, n_out=10):
    dims = [n_in, *widths, n_out]
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(dims):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def layer_variances(model: nn.Sequential, groups) -> list[float]:
    from widthwise import group_stats

    return group_stats(model, groups, gates=False).variance.tolist()


def train(widths, opt_name, lr, seed, data, steps=3000, every=10, batch=128):
    torch.manual_seed(seed)
    x, y, xt, yt = data
    model = make_mlp(widths)
    opt = (
        torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        if opt_name == "sgd"
        else torch.optim.Adam(model.parameters(), lr=lr)
    )
    g = torch.Generator().manual_seed(seed)
    from widthwise import find_groups

    groups = find_groups(model, x[:2])
    rec_steps, rec_vals = [0], [layer_variances(model, groups)]
    for step in range(1, steps + 1):
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % every == 0:
            rec_steps.append(step)
            rec_vals.append(layer_variances(model, groups))
    with torch.no_grad():
        acc = float((model(xt).argmax(1) == yt).float().mean())
    return np.array(rec_steps), np.array(rec_vals), acc


CONFIGS = [
    ((8, 1024), "adam", 1e-3),
    ((1024, 8), "adam", 1e-3),
    ((8, 1024), "sgd", 0.05),
    ((1024, 8), "sgd", 0.05),
    ((16, 512), "adam", 3e-3),
    ((512, 16), "adam", 3e-3),
    ((8, 1024), "adam", 1e-2),
    ((64, 64), "adam", 1e-3),
    ((256, 256), "sgd", 0.05),
    ((4, 256), "adam", 1e-3),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 per configuration")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--save", default=None, help="write all curves to this .npz")
    a = p.parse_args()
    from widthwise.patterns import classify, stable_from

    torch.set_num_threads(1)
    data = mnist1d_tensors()
    seeds = range(a.seeds)
    saved = {}
    print(
        "| widths | opt | lr | seed | layer | width | label | conf | peak_at | retained | final/peak | "
        "final_slope | stable_from | test acc | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (widths, opt, lr), seed in itertools.product(CONFIGS, seeds):
        t0 = time.perf_counter()
        steps, vals, acc = train(widths, opt, lr, seed, data, steps=a.steps)
        dt = time.perf_counter() - t0
        for li, w in enumerate(widths):
            v = classify(vals[:, li], steps)
            sf = stable_from(vals[:, li], steps)
            key = f"{'x'.join(map(str, widths))}_{opt}_{lr:g}_s{seed}_l{li}"
            saved[key + "_steps"], saved[key + "_values"] = steps, vals[:, li]
            print(
                f"| {list(widths)} | {opt} | {lr:g} | {seed} | {li + 1} | {w} | {v.label} | "
                f"{v.confidence:.2f} | {v.peak_at:g} | {v.retained:.2f} | {v.final_to_peak:.2f} | "
                f"{v.final_slope:+.2f} | {sf} | {acc:.3f} | {dt:.0f} |",
                flush=True,
            )
    if a.save:
        np.savez_compressed(a.save, **saved)


if __name__ == "__main__":
    main()
