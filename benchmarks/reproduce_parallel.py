"""Run ``widthwise reproduce`` families and the streamlining proof in parallel processes.

The CLI runs one configuration after another on one core; on a machine with many cores this
script runs every family sweep and every (proof family, seed) at once, one BLAS thread each,
and writes the same files as the CLI (figures, tables) into ``--out``.

    python benchmarks/reproduce_parallel.py --jobs 16 --out results
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path


def _sweep(name: str, out: str, seeds: int) -> str:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    from widthwise.reproduction import experiments

    t0 = time.perf_counter()
    res = experiments.sweep(name, seeds=seeds, out_dir=None)
    res.attrs["seconds"] = time.perf_counter() - t0
    folder = Path(out)
    experiments.sweep_figure(res).savefig(folder / f"{name}.png", dpi=110)
    cols = ["family", "width", "seed", "group", "label", "confidence", "accuracy", "reason"]
    res[[*cols, "seconds"]].to_csv(folder / f"{name}.csv", index=False)
    experiments.summary(res).to_csv(folder / f"{name}-summary.csv", index=False)
    return f"{name}: {time.perf_counter() - t0:.0f} s"


def _proof(name: str, seed: int, out: str) -> str:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    from widthwise.reproduction import experiments

    t0 = time.perf_counter()
    df = experiments.streamline_proof(name, seeds=[seed])
    df.to_csv(Path(out) / f"proof-{name}-s{seed}.csv", index=False)
    if seed == 0:
        (Path(out) / f"plan-{name}.txt").write_text(str(df.attrs["plan"]) + "\n")
    return f"proof {name} seed {seed}: {time.perf_counter() - t0:.0f} s"


def main() -> None:
    from widthwise.reproduction import experiments

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="*", default=list(experiments.FAMILIES))
    p.add_argument("--proof", nargs="*", default=list(experiments.PROOF_FAMILIES))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--jobs", type=int, default=os.cpu_count())
    p.add_argument("--out", default="reproduce-results")
    a = p.parse_args()
    Path(a.out).mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(a.jobs) as pool:
        # the sweeps are the longest tasks: they start first
        futs = [pool.submit(_sweep, n, a.out, a.seeds) for n in a.families]
        futs += [pool.submit(_proof, n, s, a.out) for n in a.proof for s in range(a.seeds)]
        for f in as_completed(futs):
            print(f.result(), flush=True)


if __name__ == "__main__":
    main()
