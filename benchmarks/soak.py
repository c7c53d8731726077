"""Soak: a tracker snapshotting every training step while another process reads the run file.

One process trains a small MLP and calls ``tracker.snapshot()`` after every step (run file,
channel norms kept); a second process opens the same file with ``widthwise.open_run`` and reads
``len(run)`` and ``run.history()`` in a loop. Recorded:

* snapshot latency (p50 / p99 / max over all steps), with the checkpoint policy of
  ``widthwise.store`` (a background passive checkpoint within ``CHECKPOINT_SECONDS``)
  and, in the same run, with it switched off (SQLite's own 1000-page auto-checkpoint only): the
  cost of the policy;
* the size of the run file and of its ``-wal`` every 1000 steps;
* how many committed snapshots a copy of the run file *alone* holds while training runs (before
  ``close()``), and after ``close()`` with the reader still open;
* the reader's reads and errors (any exception counts).

    python benchmarks/soak.py --steps 10000 [--json soak.json]

Writes one JSON object (``--json``) and prints a summary. ``run_soak`` is also the CI-sized test
(tests/test_soak.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from widthwise import store as store_mod
from widthwise.store import open_run
from widthwise.tracker import WidthTracker

READER = r"""
import json, sys, time, traceback
from widthwise.store import open_run
path, stop = sys.argv[1], sys.argv[2]
import os
reads, errors, last, backwards, first_error = 0, 0, -1, 0, None
while not os.path.exists(path):
    time.sleep(0.01)
run = None
while not os.path.exists(stop):
    try:
        if run is None:
            run = open_run(path)
        n = len(run)
        h = run.history()
        if n < last:
            backwards += 1
        last = n
        reads += 1
        if reads == 1:
            open(stop + ".ready", "w").close()
    except Exception as exc:  # every failure counts
        errors += 1
        first_error = first_error or f"{type(exc).__name__}: {exc}"
    time.sleep(0.02)
print(json.dumps({"reads": reads, "errors": errors, "last_seen": last, "went_backwards": backwards,
                  "first_error": first_error}))
sys.stdout.flush()
# keep the file open (a reader that outlives the writer's close) until told to go
while not os.path.exists(stop + ".2"):
    time.sleep(0.01)
"""


#: Length of the busy loop timed after every snapshot (a baseline for the latency tail: on a
#: shared machine a fixed 0.5 ms of work also takes 10+ ms whenever the process is descheduled).
BUSY_S = 0.0005


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _count_alone(path: Path, tmp: Path) -> int:
    """Snapshots in a copy of the run file alone (no -wal beside it)."""
    copy = tmp / f"alone-{time.monotonic_ns()}.wwrun"
    shutil.copyfile(path, copy)
    try:
        with open_run(copy) as run:
            return len(run)
    finally:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{copy}{suffix}")


def _phase(
    path: Path, tmp: Path, steps: int, width: int, policy: bool, seed: int
) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    )
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    saved = store_mod.CHECKPOINT_SECONDS
    if not policy:
        store_mod.CHECKPOINT_SECONDS = None
    stop = tmp / f"stop-{policy}"
    src = str(Path(store_mod.__file__).resolve().parents[1])  # the reader runs this widthwise
    pythonpath = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=pythonpath)
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(path), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        tracker = WidthTracker(model, x[:2], store=path)
        ready = Path(f"{stop}.ready")
        deadline = time.monotonic() + 300
        while not ready.exists() and reader.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the reader reads the file once before training starts
        lat = np.zeros(steps)
        busy = np.zeros(steps)
        sizes = []
        t0 = time.perf_counter()
        for step in range(steps):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            t = time.perf_counter()
            tracker.snapshot(step, metrics={"loss": loss.item()})
            lat[step] = time.perf_counter() - t
            t = time.perf_counter()
            _busy(BUSY_S)  # the machine's own tail: a fixed amount of work, timed the same way
            busy[step] = time.perf_counter() - t
            if (step + 1) % 1000 == 0 or step + 1 == steps:
                wal = Path(f"{path}-wal")
                sizes.append(
                    {
                        "step": step + 1,
                        "run_bytes": path.stat().st_size,
                        "wal_bytes": wal.stat().st_size if wal.exists() else 0,
                    }
                )
        train_s = time.perf_counter() - t0
        alone_before = _count_alone(path, tmp)
        stop.touch()
        line = reader.stdout.readline() if reader.stdout else ""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t = time.perf_counter()
            tracker.close()  # the reader process still has the file open
            close_s = time.perf_counter() - t
        alone_after = _count_alone(path, tmp)
        (tmp / f"stop-{policy}.2").touch()
        reader.wait(timeout=60)
        out = json.loads(line) if line.strip() else {"reads": 0, "errors": -1}
    finally:
        if reader.poll() is None:
            reader.kill()
        store_mod.CHECKPOINT_SECONDS = saved
    ms = lat * 1e3
    bms = busy * 1e3
    return {
        "busy_p50_ms": float(np.percentile(bms, 50)),
        "busy_p99_ms": float(np.percentile(bms, 99)),
        "policy": f"background checkpoint within {saved}s" if policy else "sqlite default",
        "steps": steps,
        "train_s": train_s,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "mean_ms": float(ms.mean()),
        "sizes": sizes,
        "alone_before_close": alone_before,
        "alone_after_close": alone_after,
        "close_s": close_s,
        "close_warnings": [str(w.message) for w in caught],
        "reader": out,
        "snapshot_kib": sizes[-1]["run_bytes"] / 1024 / steps if sizes else 0.0,
    }


def checkpoint_cost(tmp: Path, rounds: int = 10, between: int = 70) -> dict[str, float]:
    """Median cost of one passive checkpoint of ``between`` fresh snapshots (about one second of
    this soak's snapshots), and of those snapshots: what the checkpoint would add to the loop if
    the training thread ran it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU())
    saved = store_mod.CHECKPOINT_SECONDS
    store_mod.CHECKPOINT_SECONDS = None  # no thread: time the checkpoint itself
    try:
        tracker = WidthTracker(model, torch.randn(2, 64), store=tmp / "ckpt.wwrun")
        ck, snap = [], []
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(between):
                tracker.snapshot()
            snap.append((time.perf_counter() - t) / between)
            t = time.perf_counter()
            tracker.store.checkpoint()
            ck.append(time.perf_counter() - t)
        tracker.close()
    finally:
        store_mod.CHECKPOINT_SECONDS = saved
    return {
        "checkpoint_ms": float(np.median(ck) * 1e3),
        "snapshot_ms": float(np.median(snap) * 1e3),
    }


def run_soak(steps: int, *, width: int = 128, seed: int = 0, tmp: Path | None = None) -> dict:
    """Both phases (policy on, then off) in one process; results as a dict."""
    with tempfile.TemporaryDirectory() as d:
        base = Path(tmp or d)
        on = _phase(base / "on.wwrun", base, steps, width, True, seed)
        off = _phase(base / "off.wwrun", base, steps, width, False, seed)
        ck = checkpoint_cost(base)
    return {"on": on, "off": off, "checkpoint": ck}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t = time.perf_counter()
    res = run_soak(args.steps, width=args.width, seed=args.seed)
    res["wall_s"] = time.perf_counter() - t
    res["torch"] = torch.__version__
    print(
        f"soak: {args.steps} steps, snapshot every step, one reader process, torch {torch.__version__}"
    )
    for key in ("on", "off"):
        r = res[key]
        last = r["sizes"][-1]
        print(
            f"{r['policy']:<38} p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
            f"max {r['max_ms']:.1f} ms  mean {r['mean_ms']:.3f} ms  train {r['train_s']:.1f} s"
        )
        print(
            f"{'':<38} baseline {BUSY_S * 1e3:.1f} ms busy loop: p50 {r['busy_p50_ms']:.3f} ms  "
            f"p99 {r['busy_p99_ms']:.3f} ms"
        )
        print(
            f"{'':<38} run file {last['run_bytes'] / 2**20:.1f} MiB + wal "
            f"{last['wal_bytes'] / 2**20:.2f} MiB; run file alone before close: "
            f"{r['alone_before_close']}/{r['steps']}, after close: {r['alone_after_close']}/"
            f"{r['steps']} (close {r['close_s'] * 1e3:.0f} ms)"
        )
        rd = r["reader"]
        print(
            f"{'':<38} reader: {rd.get('reads')} reads, {rd.get('errors')} errors, "
            f"count went backwards {rd.get('went_backwards')} times"
        )
    ck = res["checkpoint"]
    print(
        f"one passive checkpoint of 70 fresh snapshots (with its fsyncs): "
        f"{ck['checkpoint_ms']:.1f} ms, against {ck['snapshot_ms']:.2f} ms per snapshot"
    )
    print(f"wall time {res['wall_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
