"""Time and peak memory of ``cka_matrix`` against torch-cka, the maintained peer on PyPI.

    python benchmarks/cka.py                      # 20 layers x 10,000 examples, k = 256
    python benchmarks/cka.py --examples 2000 --sizes 1000 2000   # quick

Both compute the same quantity — the minibatch CKA of Nguyen et al. (2021) with the unbiased
HSIC, between every pair of the same 20 layers of one model, over the same minibatches
(``torch_cka.CKA(model, model, ...).compare(loader)`` versus ``cka_matrix(model, loader)``).
torch-cka (0.21, https://github.com/AntixK/PyTorch-Model-Compare) is installed with
``pip install torch-cka==0.21`` (pure Python, no dependencies pulled).

Every measurement runs in a fresh subprocess; peak memory is the growth of the process's
high-water RSS during the call (``ru_maxrss`` minus the RSS just before), so the model and
data, identical for both, are not counted. The script then repeats ``cka_matrix`` at several
numbers of examples, with the data generated lazily batch by batch, to show its memory does not
grow with ``n``. It prints the ratios and the largest difference between the two matrices.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def make_model(layers: int, dim: int, init: str = "kaiming", seed: int = 0) -> nn.Module:
    """``layers`` blocks of Linear + ReLU.

    ``init="default"`` keeps PyTorch's default Linear init, under which the deep layers' outputs
    are nearly constant across examples (bias-dominated): a hard case for any estimator that
    does not centre in high precision. ``"kaiming"`` (He normal, zero bias) keeps them varied.
    """
    torch.manual_seed(seed)
    blocks = [nn.Sequential(nn.Linear(dim, dim), nn.ReLU()) for _ in range(layers)]
    if init == "kaiming":
        for b in blocks:
            nn.init.kaiming_normal_(b[0].weight, nonlinearity="relu")
            nn.init.zeros_(b[0].bias)
    return nn.Sequential(*blocks).eval()


def lazy_batches(n: int, dim: int, batch: int, seed: int = 1):
    """Generated on the fly: nothing grows with n except the work."""
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, n, batch):
        yield torch.randn(min(batch, n - start), dim, generator=gen)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    model = make_model(args.layers, args.dim, args.init)
    names = [str(i) for i in range(args.layers)]
    if args.method == "lazy":
        data = lazy_batches(args.n, args.dim, args.batch)
    else:
        x = torch.cat(list(lazy_batches(args.n, args.dim, args.batch)))
        if args.method.endswith("64"):
            # torch-cka builds its helper tensors with the default dtype; weights and data stay
            # those drawn in float32 above
            torch.set_default_dtype(torch.float64)
            model, x = model.double(), x.double()
        data = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x, torch.zeros(len(x))), batch_size=args.batch
        )
    import warnings

    from torch_cka import CKA

    from widthwise.probes.similarity import cka_matrix

    # warm up the kernels outside the measurement
    with torch.no_grad():
        model(torch.randn(args.batch, args.dim, dtype=next(model.parameters()).dtype))
    before = rss_mb()
    t0 = time.perf_counter()
    if args.method.startswith("torch-cka"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cka = CKA(model, model, "a", "b", model1_layers=names, model2_layers=names)
            # it asserts "HSIC computation resulted in NANs" after filling the matrix: keep it
            with contextlib.suppress(AssertionError):
                cka.compare(data)
        matrix = cka.hsic_matrix.double().numpy()
    else:
        matrix = cka_matrix(model, data, names, batch_size=args.batch).matrix
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.save(args.save, matrix)
    print(json.dumps({"seconds": seconds, "peak_mb": max(0.0, peak - before)}))


def measure(method: str, n: int, args: argparse.Namespace, tmp: Path) -> dict:
    save = tmp / f"{method}_{n}.npy"
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--n",
        str(n),
        "--save",
        str(save),
        "--layers",
        str(args.layers),
        "--dim",
        str(args.dim),
        "--batch",
        str(args.batch),
        "--threads",
        str(args.threads),
        "--init",
        args.init,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{method} n={n} failed:\n{out.stderr[-2000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["matrix"] = np.load(save)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--dim", type=int, default=256, help="features per layer")
    p.add_argument("--examples", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=256, help="minibatch size k")
    p.add_argument("--sizes", type=int, nargs="+", default=[2_500, 5_000, 10_000, 20_000])
    p.add_argument(
        "--check-examples",
        type=int,
        default=2048,
        help="examples for the accuracy check against torch-cka run in float64",
    )
    p.add_argument("--init", choices=["kaiming", "default"], default="kaiming")
    p.add_argument("--threads", type=int, default=1, help="torch threads (both methods)")
    p.add_argument(
        "--worker",
        choices=["widthwise", "widthwise64", "lazy", "torch-cka", "torch-cka64"],
        help=argparse.SUPPRESS,
    )
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.method = args.worker
        worker(args)
        return
    print(
        f"{args.layers} layers x {args.dim} features, minibatch k={args.batch}, "
        f"{args.threads} thread(s), {args.init} init, torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ours = measure("widthwise", args.examples, args, tmp)
        peer = measure("torch-cka", args.examples, args, tmp)
        diff = float(np.nanmax(np.abs(ours["matrix"] - peer["matrix"]), initial=0.0))
        nans = [int(np.isnan(r["matrix"]).sum()) for r in (peer, ours)]
        print(f"\nn = {args.examples:,} examples")
        print(f"{'method':<12}{'seconds':>10}{'peak MB':>10}")
        for name, r in (("torch-cka", peer), ("widthwise", ours)):
            print(f"{name:<12}{r['seconds']:>10.2f}{r['peak_mb']:>10.1f}")
        print(f"speed-up: {peer['seconds'] / ours['seconds']:.1f}x")
        if ours["peak_mb"] > 0:
            print(
                f"peak memory ratio (torch-cka / widthwise): "
                f"{peer['peak_mb'] / ours['peak_mb']:.2f}"
            )
        print(f"max |CKA difference| between the two (finite entries): {diff:.2e}")
        size = args.layers**2
        print(f"NaN entries out of {size}: torch-cka {nans[0]}, widthwise {nans[1]}")
        n_chk = args.check_examples
        ref = measure("torch-cka64", n_chk, args, tmp)["matrix"]
        ours_chk = measure("widthwise", n_chk, args, tmp)["matrix"]

        def err(m: np.ndarray) -> float:
            ok = np.isfinite(ref) & np.isfinite(m)
            return float(np.abs(m - ref)[ok].max(initial=0.0))

        peer_chk = measure("torch-cka", n_chk, args, tmp)["matrix"]
        print(
            f"\naccuracy at n = {n_chk:,} against torch-cka on a float64 model and data: "
            f"max |error| over its finite entries: widthwise {err(ours_chk):.1e}, "
            f"torch-cka {err(peer_chk):.1e} "
            f"(NaN entries: reference {int(np.isnan(ref).sum())}, "
            f"widthwise {int(np.isnan(ours_chk).sum())}, torch-cka {int(np.isnan(peer_chk).sum())})"
        )
        print("\nwidthwise cka_matrix, data generated lazily (memory vs n):")
        print(f"{'n':>8}{'seconds':>10}{'peak MB':>10}")
        rows = [(n, measure("lazy", n, args, tmp)) for n in args.sizes]
        for n, r in rows:
            print(f"{n:>8,}{r['seconds']:>10.2f}{r['peak_mb']:>10.1f}")
        first, last = rows[0], rows[-1]
        print(
            f"n x{last[0] / first[0]:.0f}: time x{last[1]['seconds'] / first[1]['seconds']:.1f}, "
            f"peak memory x{last[1]['peak_mb'] / max(first[1]['peak_mb'], 1e-9):.2f}"
        )


if __name__ == "__main__":
    main()
