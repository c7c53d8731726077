"""Cost of one snapshot over a distribution of models (CPU), and the overhead on training.

For each model, in the same run and on the same weights, interleaved (floor, stats, snapshot,
background, floor, ...) so that a slow phase of a shared machine hits all of them:

* floor: one ``torch._foreach_norm`` pass over the weights a snapshot reads (every member
  parameter with 2+ dims) — reading the weights once cannot be done faster;
* stats: ``NormPlan.stats()`` (all groups, per-gate series, one host transfer);
* snapshot: ``WidthTracker.snapshot()`` with a run file, the default for one: the calling
  thread commits the reductions (one ``pending`` row), so the snapshot is in the file when the
  call returns; the writer thread writes the statistics rows (flushed, untimed, after each call);
* background: the same with ``background=True``: the statistics and the SQLite transaction run
  on the store's writer thread (flushed, untimed, after each call).

Each is timed by the wall clock (``/wall``) and by the CPU time of the calling thread
(``/cpu``, ``time.thread_time``: on a loaded machine the wall clock also counts the time the
process waits for a core). ``/total`` is the CPU time of the whole process (caller + writer +
checkpointer threads, ``time.process_time``) per call over ``--repeats`` calls in a row, against
the floor's taken the same way, so that work moved to the writer thread is not hidden.

A ratio is the median over ``--rounds`` rounds of (median time / median floor time, same clock)
within the round, with the standard error over rounds. Targets (issue 13): <= 3x the floor on
models above 1M parameters, <= 4x below; the last column says y/n per ratio column.

    python benchmarks/snapshot.py [--repeats 21] [--rounds 5] [--large] [--reference] [--training]
    python benchmarks/snapshot.py --no-background   # also runs against a widthwise without it
    python benchmarks/snapshot.py --compare-with OLD_norms.py --large   # same stored numbers?
    python benchmarks/snapshot.py --compare-runs OLD/src/widthwise --large   # same run files?
    python benchmarks/snapshot.py --parts     # where a small model's snapshot time goes, and the
                                              # row+column reduction options on a 1024x1024 weight
    python benchmarks/snapshot.py --batches --large   # NormPlan.reduce() / floor against the
                                              # size of same-shape batches (norms.BATCH_ELEMENTS)
    python benchmarks/snapshot.py --tail --large      # the slowest file snapshots with SQLite's
                                              # auto-checkpoint at its default and as now
    python benchmarks/snapshot.py --against OLD/src/widthwise --large   # this tracker against
                                              # another checkout's, in one process, interleaved
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from widthwise import find_groups
from widthwise.norms import NormPlan
from widthwise.reproduction.zoo import ViT
from widthwise.reproduction.zoo.cnn1d import CNN1D
from widthwise.reproduction.zoo.gru import GRULM
from widthwise.reproduction.zoo.resnet import resnet18, resnet20, resnet50
from widthwise.tracker import WidthTracker


def timed(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up, in seconds."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def reference_snapshot(model: nn.Module, groups) -> list[float]:
    """The paper's approach: copy the weights, then loop over groups and tensors."""
    sd = copy.deepcopy(model.state_dict())
    out = []
    for g in groups:
        n = torch.ones(g.width)
        for m in g.members:
            w = sd[m.param]
            if w.dim() < 2:
                continue
            w = w.narrow(m.dim, m.offset, g.width * m.repeat).transpose(0, m.dim)
            n = n * w.reshape(g.width, -1).float().norm(dim=1)
        out.append((n / n.mean()).var().item())
    return out


def mlp(widths: list[int], n_in: int = 100) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w_in, w_out in zip([n_in, *widths], widths):
        layers += [nn.Linear(w_in, w_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], 10))


def models(large: bool) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """The distribution: MLPs, 1-D and 2-D CNNs, a GRU language model and transformers, from
    15k to 86M parameters."""
    out = [
        ("MLP 64x3", mlp([64] * 3), torch.randn(2, 100)),
        ("MLP 256x3", mlp([256] * 3), torch.randn(2, 100)),
        ("CNN1D 32-64-128", CNN1D([32, 64, 128]), torch.randn(2, 1, 40)),
        ("ResNet-20", resnet20(), torch.randn(2, 3, 32, 32)),
        ("GRU LM 256", GRULM(1000, 64, [256, 256]), torch.randint(0, 1000, (2, 16))),
        ("MLP 1024x3", mlp([1024] * 3), torch.randn(2, 100)),
        ("CNN1D 128-256-512", CNN1D([128, 256, 512]), torch.randn(2, 1, 40)),
        (
            "ViT-tiny",
            ViT(32, 4, dim=192, depth=6, heads=3, mlp_dims=[768] * 6, num_classes=10),
            torch.randn(2, 3, 32, 32),
        ),
        ("ResNet-18", resnet18(), torch.randn(2, 3, 32, 32)),
    ]
    if large:
        out += [
            ("ResNet-50", resnet50(num_classes=1000, stem="imagenet"), torch.randn(1, 3, 64, 64)),
            (
                # 32x32 images (4 patches) keep find_groups' forward passes cheap; the weights
                # are ViT-B's except the position embedding (4 instead of 196 tokens)
                "ViT-B/16",
                ViT(32, 16, dim=768, depth=12, heads=12, mlp_dims=[3072] * 12, num_classes=1000),
                torch.randn(1, 3, 32, 32),
            ),
        ]
    return out


def bench_model(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    repeats: int,
    rounds: int,
    reference: bool,
    background: bool = True,
) -> dict:
    model.eval()
    t = time.perf_counter()
    groups = find_groups(model, x)
    t_groups = time.perf_counter() - t
    plan = NormPlan(model, groups)
    params = dict(model.named_parameters())
    read = sorted({m.param for g in groups for m in g.members if params[m.param].ndim >= 2})
    weights = [params[n].detach() for n in read]

    def floor() -> None:
        with torch.no_grad():
            [v.item() for v in torch._foreach_norm(weights)]

    clocks = {"wall": time.perf_counter, "cpu": time.thread_time}
    ratios: dict[str, list[float]] = {}  # "snapshot/wall", ... per round
    medians: dict[str, list[float]] = {}  # "floor/wall", ... per round, seconds
    with tempfile.TemporaryDirectory() as tmp:
        tracker = WidthTracker(model, groups=groups, store=Path(tmp) / "run.wwrun")
        fns = {"floor": floor, "stats": plan.stats, "snapshot": tracker.snapshot}
        behind = None
        if background:
            behind = WidthTracker(
                model, groups=groups, store=Path(tmp) / "bg.wwrun", background=True
            )
            fns["background"] = behind.snapshot
        for fn in fns.values():
            fn()  # warm-up
        for _ in range(rounds):
            times: dict[str, list[float]] = {f"{k}/{c}": [] for k in fns for c in clocks}
            for _ in range(repeats):
                for k, fn in fns.items():
                    t0, c0 = time.perf_counter(), time.thread_time()
                    fn()
                    c1, t1 = time.thread_time(), time.perf_counter()
                    times[f"{k}/wall"].append(t1 - t0)
                    times[f"{k}/cpu"].append(c1 - c0)
                    if k == "snapshot":
                        tracker.flush()  # untimed: the statistics rows, on the writer thread
                    if behind is not None and k == "background":
                        behind.flush()  # untimed: the writer's work must not slow the others
            med = {k: statistics.median(v) for k, v in times.items()}
            for key, v in med.items():
                medians.setdefault(key, []).append(v)
                clock = key.split("/")[1]
                ratios.setdefault(key, []).append(v / med[f"floor/{clock}"])
            if behind is not None:
                # CPU time of every thread of the process (caller + writer + checkpointer) per
                # call, against the floor's: the work moved to the writer is not hidden
                cpu = {}
                for k, fn in (
                    ("floor", floor),
                    ("snapshot", tracker.snapshot),
                    ("background", behind.snapshot),
                ):
                    c = time.process_time()
                    for _ in range(repeats):
                        fn()
                    behind.flush()
                    tracker.flush()
                    cpu[k] = (time.process_time() - c) / repeats
                for k in ("snapshot", "background"):
                    medians.setdefault(f"{k}/total", []).append(cpu[k])
                    ratios.setdefault(f"{k}/total", []).append(cpu[k] / cpu["floor"])
        n_snap = tracker.store.n_snapshots
        tracker.close()
        if behind is not None:
            behind.close()
        size = (Path(tmp) / "run.wwrun").stat().st_size
    ref = (
        timed(lambda: reference_snapshot(model, groups), max(3, repeats // 4))
        if reference
        else None
    )

    def se(v: list[float]) -> float:
        return statistics.stdev(v) / len(v) ** 0.5 if len(v) > 1 else float("nan")

    return {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "groups": len(groups),
        "series": len(plan.series),
        "find_groups_s": t_groups,
        "ms": {k: statistics.median(v) * 1e3 for k, v in medians.items()},
        "ratio": {k: statistics.median(v) for k, v in ratios.items()},
        "se": {k: se(v) for k, v in ratios.items()},
        "reference_ms": None if ref is None else ref * 1e3,
        "kb_per_snapshot": size / max(n_snap, 1) / 1024,
    }


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        return self.head(self.features(x))


def bench_training(steps: int, every: int, rounds: int) -> dict:
    torch.manual_seed(0)
    model = SmallCNN()
    data = [(torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))) for _ in range(8)]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    groups = find_groups(model, data[0][0][:2])

    def run(tracker) -> float:
        t = time.perf_counter()
        for step in range(steps):
            x, y = data[step % len(data)]
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if tracker is not None and step % every == 0:
                tracker.snapshot(step, metrics={"loss": loss.item()})
        return time.perf_counter() - t

    with tempfile.TemporaryDirectory() as tmp:
        tracker = WidthTracker(model, groups=groups, store=Path(tmp) / "train.wwrun")
        run(None)  # warm-up
        plain, tracked = [], []
        for _ in range(rounds):  # interleaved, so slow phases of a shared machine hit both
            plain.append(run(None))
            tracked.append(run(tracker))
        snap = timed(tracker.snapshot, 9)
        tracker.close()
    step_s = min(plain) / steps
    return {
        "plain_s": min(plain),
        "tracked_s": min(tracked),
        "measured_overhead": min(tracked) / min(plain) - 1,
        "step_ms": step_s * 1e3,
        "snapshot_ms": snap * 1e3,
        "derived_overhead": snap / (every * step_s),
    }


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median microseconds of each function, timed round-robin (same load for all). A function
    that returns a callable has it called after the timing (untimed: a writer thread's share)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            after = fn()
            times[k].append(time.perf_counter() - t)
            if callable(after):
                after()
    return {k: statistics.median(v) * 1e6 for k, v in times.items()}


def parts(repeats: int) -> None:
    """Breakdown of one snapshot of MLP 64x3, and the options for row + column sums."""
    from widthwise.store import RunStore

    model = mlp([64] * 3)
    groups = find_groups(model, torch.randn(2, 100))
    plan = NormPlan(model, groups)
    weights = [p.detach() for p in model.parameters() if p.ndim >= 2]
    with torch.no_grad():
        st = plan.stats()
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore.create(Path(tmp) / "x.wwrun", groups)
        mem = RunStore.memory(groups)
        tracker = WidthTracker(model, groups=groups, store=Path(tmp) / "y.wwrun")

        behind = WidthTracker(model, groups=groups, background=True)
        reduced = plan.reduce()
        host = reduced.numpy()
        pending = RunStore.create(Path(tmp) / "p.wwrun", groups)  # commits timed, rows untimed
        expand = RunStore.create(Path(tmp) / "e.wwrun", groups)  # the other way round

        def commit_pending() -> Callable[[], object]:
            pending.append_pending(None, None, 0.0, None, host, plan.layout)
            return pending.expand_pending

        def expand_rows() -> Callable[[], object]:
            expand.expand_pending()
            return lambda: expand.append_pending(None, None, 0.0, None, host, plan.layout)

        def file_snapshot() -> Callable[[], None]:
            tracker.snapshot()
            return tracker.flush  # the statistics rows on the writer thread: untimed

        def background() -> None:
            behind.snapshot()
            behind.flush()  # the writer's share, so the parts after it are not slowed by it

        fns = {
            "floor": lambda: [v.item() for v in torch._foreach_norm(weights)],
            "reduce()": plan.reduce,
            "stats_from() (NumPy)": lambda: plan.stats_from(reduced),
            "stats()": plan.stats,
            "transaction (memory)": lambda: mem.append_snapshot(
                None, None, 0.0, None, st.columns, st.norms
            ),
            "transaction (file)": lambda: store.append_snapshot(
                None, None, 0.0, None, st.columns, st.norms
            ),
            "pending commit (file)": commit_pending,
            "expand_pending() (writer)": expand_rows,
            "snapshot() (file)": file_snapshot,
            "snapshot()+flush (file)": lambda: (tracker.snapshot(), tracker.flush()),
            "snapshot()+flush (bg)": background,
        }
        with torch.no_grad():
            res = interleaved(fns, repeats)
        for s in (tracker, behind, store, pending, expand):
            s.close()
    print("MLP 64x3, one snapshot, by part (median us, interleaved):")
    for k, v in res.items():
        print(f"  {k:<26} {v:8.0f}")
    w = torch.randn(1024, 1024)
    buf = torch.empty_like(w)
    ones = torch.ones(1024)

    def current() -> None:
        torch.square(w, out=buf)
        buf.sum(1), buf.sum(0)

    def norm_rows_then_square() -> None:
        torch.linalg.vector_norm(w, dim=1)
        torch.square(w, out=buf)
        buf.sum(0)

    def blas_mv() -> None:
        torch.square(w, out=buf)
        torch.mv(buf, ones), torch.mv(buf.t(), ones)

    def vecdot() -> None:
        torch.linalg.vector_norm(w, dim=1), torch.linalg.vecdot(w, w, dim=0)

    def blocks(per: int) -> None:
        rows, cols, part = torch.empty(1024), torch.zeros(1024), torch.empty(1024)
        for i in range(0, 1024, per):
            s = buf[i : i + per]
            torch.square(w[i : i + per], out=s)
            torch.sum(s, 1, out=rows[i : i + per])
            cols.add_(torch.sum(s, 0, out=part))

    col_out = torch.empty(1024)

    def column_blocks(per: int) -> None:
        # the same column sums bit for bit (each column's rows in the same order), in pieces
        for j in range(0, 1024, per):
            torch.sum(buf[:, j : j + per], 0, out=col_out[j : j + per])

    torch.square(w, out=buf)
    opts = {
        "floor (_foreach_norm)": lambda: torch._foreach_norm([w]),
        "square, sum(1), sum(0)": current,
        "  square alone": lambda: torch.square(w, out=buf),
        "  sum(1) alone": lambda: buf.sum(1),
        "  sum(0) alone": lambda: buf.sum(0),
        "  sum(0), column blocks 256": lambda: column_blocks(256),
        "  sum(0), column blocks 64": lambda: column_blocks(64),
        "vector_norm rows + square": norm_rows_then_square,
        "square, BLAS mv x2": blas_mv,
        "vector_norm + vecdot(dim=0)": vecdot,
        "row blocks of 128": lambda: blocks(128),
        "row blocks of 32": lambda: blocks(32),
        "einsum x2": lambda: (
            torch.einsum("ij,ij->i", w, w),
            torch.einsum("ij,ij->j", w, w),
        ),
    }
    res = interleaved(opts, max(5, repeats // 5))
    print("\nrow and column sums of squares of a 1024x1024 float32 weight (median us):")
    for k, v in res.items():
        print(f"  {k:<28} {v:9.0f}")


def batches(large: bool, only: str | None, rounds: int) -> None:
    """``NormPlan.reduce()`` against the floor (caller-thread CPU time, interleaved) with
    same-shape weights reduced in batches of up to 0 (one weight at a time), 2^15, 2^17 and
    2^19 elements (``norms.BATCH_ELEMENTS``; weights of at most an eighth of that)."""
    from widthwise import norms

    caps = [0, 1 << 15, 1 << 17, 1 << 19]
    default = norms.BATCH_ELEMENTS
    print("reduce() / floor, caller-thread CPU, median over rounds; batches: weights per batch")
    for name, model, x in models(large):
        if only and only not in name:
            continue
        groups = find_groups(model.eval(), x)
        plans = {}
        for cap in caps:
            norms.BATCH_ELEMENTS = cap
            plans[cap] = NormPlan(model, groups)
        norms.BATCH_ELEMENTS = default
        weights = [p.detach() for p in model.parameters() if p.ndim >= 2]
        fns = {"floor": lambda w=weights: [v.item() for v in torch._foreach_norm(w)]}
        fns.update(
            {f"2^{cap.bit_length() - 1}" if cap else "none": plans[cap].reduce for cap in caps}
        )
        repeats = 11 if sum(w.numel() for w in weights) > 10_000_000 else 41
        for fn in fns.values():
            fn()
        per_round = []
        for _ in range(rounds):
            times: dict[str, list[float]] = {k: [] for k in fns}
            for _ in range(repeats):
                for k, fn in fns.items():
                    c = time.thread_time()
                    fn()
                    times[k].append(time.thread_time() - c)
            per_round.append({k: statistics.median(v) for k, v in times.items()})
        ratio = {k: statistics.median(r[k] / r["floor"] for r in per_round) for k in fns}
        sizes = sorted(plans[default]._batches.values(), reverse=True)
        print(
            f"{name:<18} "
            + "  ".join(f"{k}: {v:.2f}" for k, v in ratio.items() if k != "floor")
            + f"   batches at the default: {sizes or 'none'}",
            flush=True,
        )


def tail(large: bool, only: str | None, repeats: int) -> None:
    """``WidthTracker.snapshot()`` with a run file (the default: the caller commits the
    reductions; the writer's statistics rows flushed untimed), two trackers taken in
    turn: SQLite's auto-checkpoint at its default (1000 pages, in the training thread) and at
    16384 pages (leaving the work to the store's checkpoint thread; measured, not adopted: see
    docs/benchmarks.md). Median, mean and 99th
    percentile of the wall and caller-thread CPU time per call."""
    print(f"file snapshot, {repeats} calls each, in turn: median / mean / p99 ms")
    for name, model, x in models(large):
        if only and only not in name:
            continue
        groups = find_groups(model.eval(), x)
        with tempfile.TemporaryDirectory() as tmp:
            trackers = {}
            for pages in (1000, 16384):
                tr = WidthTracker(model, groups=groups, store=Path(tmp) / f"{pages}.wwrun")
                tr.store._conn.execute(f"PRAGMA wal_autocheckpoint = {pages}")
                trackers[pages] = tr
            n = (
                max(20, repeats // 10)
                if sum(p.numel() for p in model.parameters()) > 1e7
                else repeats
            )
            times: dict[tuple[int, str], list[float]] = {}
            for _ in range(n):
                for pages, tr in trackers.items():
                    t0, c0 = time.perf_counter(), time.thread_time()
                    tr.snapshot()
                    c1, t1 = time.thread_time(), time.perf_counter()
                    tr.flush()
                    times.setdefault((pages, "wall"), []).append(t1 - t0)
                    times.setdefault((pages, "cpu"), []).append(c1 - c0)
            for tr in trackers.values():
                tr.close()
        for (pages, clock), v in times.items():
            v = sorted(v)
            p99 = v[min(len(v) - 1, int(0.99 * len(v)))]
            print(
                f"{name:<18} auto-checkpoint {pages:>5} pages, {clock:<4}: "
                f"{statistics.median(v) * 1e3:7.3f} / {statistics.mean(v) * 1e3:7.3f} / "
                f"{p99 * 1e3:7.3f}",
                flush=True,
            )


def load_other(src: str):
    """``WidthTracker`` of another checkout (``OLD/src/widthwise``): its norms.py, store.py and
    tracker.py loaded under private names and wired to each other; everything else they
    import (groups, distributed) is this checkout's."""
    import importlib.util
    import sys

    loaded = {}
    for mod in ("norms", "store", "tracker"):
        spec = importlib.util.spec_from_file_location(f"other_{mod}", Path(src) / f"{mod}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[f"other_{mod}"] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        loaded[mod] = module
    loaded["store"].STAT_COLUMNS = loaded["norms"].STAT_COLUMNS
    tracker = loaded["tracker"]
    tracker.NormPlan = loaded["norms"].NormPlan
    tracker.ModelChangedError = loaded["norms"].ModelChangedError
    tracker.RunStore, tracker.Run = loaded["store"].RunStore, loaded["store"].Run
    return tracker.WidthTracker


def against(src: str, large: bool, only: str | None, repeats: int, rounds: int) -> None:
    """The snapshot of another checkout ("before") and of this one ("after"), with a run file
    (each one's default) and with ``background=True``, timed in the same process, in shuffled
    order with the floor: caller-thread CPU time / the floor's, median over rounds."""
    import random

    Other = load_other(src)
    print(f"caller-thread CPU / floor, median of {repeats} per round, median over {rounds} rounds")
    print(
        f"{'model':<18} {'floor ms':>8}  file: before  after   background: before  after"
        "   file after/before per round: median [min-max]"
    )
    for name, model, x in models(large):
        if only and only not in name:
            continue
        groups = find_groups(model.eval(), x)
        params = dict(model.named_parameters())
        read = sorted({m.param for g in groups for m in g.members if params[m.param].ndim >= 2})
        weights = [params[n].detach() for n in read]
        with tempfile.TemporaryDirectory() as tmp:
            trackers = {
                (who, bg): cls(
                    model, groups=groups, store=Path(tmp) / f"{who}{bg}.wwrun", background=bg
                )
                for who, cls in (("before", Other), ("after", WidthTracker))
                for bg in (None, True)  # None: each one's default for a run file
            }
            fns = {"floor": lambda w=weights: [v.item() for v in torch._foreach_norm(w)]}
            fns.update({k: tr.snapshot for k, tr in trackers.items()})
            for fn in fns.values():
                fn()
            keys = list(fns)
            n = max(5, repeats // 4) if sum(w.numel() for w in weights) > 10_000_000 else repeats
            per_round = []
            for _ in range(rounds):
                times: dict = {k: [] for k in fns}
                for _ in range(n):
                    random.shuffle(keys)
                    for k in keys:
                        c = time.thread_time()
                        fns[k]()
                        times[k].append(time.thread_time() - c)
                        if k != "floor":
                            trackers[k].flush()  # untimed: the writer's work
                per_round.append({k: statistics.median(v) for k, v in times.items()})
            for tr in trackers.values():
                tr.close()
        r = {k: statistics.median(d[k] / d["floor"] for d in per_round) for k in fns}
        floor_ms = statistics.median(d["floor"] for d in per_round) * 1e3
        # paired: both timed in the same round, so a slow phase of the machine cancels out
        pair = [d[("after", None)] / d[("before", None)] for d in per_round]
        print(
            f"{name:<18} {floor_ms:>8.3f}  {r[('before', None)]:>12.2f} {r[('after', None)]:>6.2f}"
            f"   {r[('before', True)]:>18.2f} {r[('after', True)]:>6.2f}"
            f"   {statistics.median(pair):.2f} [{min(pair):.2f}-{max(pair):.2f}]",
            flush=True,
        )


def compare_with(path: str, large: bool) -> None:
    """Stored numbers of another ``norms.py`` (e.g. ``git show REV:src/widthwise/norms.py``)
    against this one's, on every model: float32 norms in ULPs, variances relative."""
    import importlib.util
    import sys

    import numpy as np

    spec = importlib.util.spec_from_file_location("other_norms", path)
    assert spec is not None and spec.loader is not None
    other = importlib.util.module_from_spec(spec)
    sys.modules["other_norms"] = other  # dataclasses look their module up
    spec.loader.exec_module(other)
    for name, model, x in models(large):
        groups = find_groups(model.eval(), x)
        a, b = other.NormPlan(model, groups).stats(), NormPlan(model, groups).stats()
        ulps = max(
            (
                int(np.abs(u.view(np.int32).astype(np.int64) - v.view(np.int32)).max())
                if u.size
                else 0
            )
            for u, v in zip(a.norms, b.norms)
        )
        va, vb = np.asarray(a.columns["variance"]), np.asarray(b.columns["variance"])
        rel = float(np.nanmax(np.abs(va - vb) / np.abs(va))) if np.isfinite(va).any() else 0.0
        print(f"{name:<18} norms: max {ulps} ULP apart; variances: max relative {rel:.1e}")


def compare_runs(src: str, large: bool, n: int = 4) -> None:
    """Run files of another checkout's tracker and of this one's (each one's default for a run
    file), recorded side by side on the same weights, read back: every stored number equal?
    ``n`` snapshots per model, with the weights scaled between them and a metric."""
    import numpy as np

    from widthwise.store import open_run

    Other = load_other(src)
    for name, model, x in models(large):
        groups = find_groups(model.eval(), x)
        with tempfile.TemporaryDirectory() as tmp:
            paths = {who: Path(tmp) / f"{who}.wwrun" for who in ("before", "after")}
            trackers = {
                "before": Other(model, groups=groups, store=paths["before"]),
                "after": WidthTracker(model, groups=groups, store=paths["after"]),
            }
            for step in range(n):
                with torch.no_grad():
                    for i, p in enumerate(model.parameters()):
                        p.mul_(1.0 + 0.01 * ((i + step) % 5))
                for tr in trackers.values():
                    tr.snapshot(10 * step, epoch=step // 2, metrics={"loss": 1.0 / (step + 1)})
            for tr in trackers.values():
                tr.close()
            with open_run(paths["before"]) as a, open_run(paths["after"]) as b:
                ha, hb = (r.history(gates=True).drop(columns="wall_time") for r in (a, b))
                same = ha.equals(hb) and len(ha) == n * len(NormPlan(model, groups).series)
                bits = 0
                for g in groups:
                    for gate in ("", *g.gates):
                        na, nb = a.channel_norms(g.name, gate)[1], b.channel_norms(g.name, gate)[1]
                        same = same and na.shape == nb.shape
                        if na.shape == nb.shape and na.size:
                            d = np.abs(na.view(np.int32).astype(np.int64) - nb.view(np.int32))
                            bits = max(bits, int(d.max()))
                ma, mb = (r.metrics().drop(columns="wall_time") for r in (a, b))
                same = same and ma.equals(mb)
        print(f"{name:<18} {n} snapshots: history and metrics equal: {same}; norms max {bits} ULP")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--large", action="store_true", help="add ResNet-50 and ViT-B/16")
    ap.add_argument("--reference", action="store_true", help="time the paper-style snapshot")
    ap.add_argument("--training", action="store_true", help="measure the training overhead")
    ap.add_argument("--train-steps", type=int, default=200)
    ap.add_argument("--only", default=None, help="models whose name contains this")
    ap.add_argument(
        "--no-background",
        action="store_true",
        help="skip background=True (also: time a widthwise from before it had one)",
    )
    ap.add_argument("--compare-with", metavar="NORMS_PY", help="stored numbers vs another norms.py")
    ap.add_argument("--parts", action="store_true", help="where the time goes (see above)")
    ap.add_argument("--batches", action="store_true", help="reduce() against the batch size")
    ap.add_argument("--tail", action="store_true", help="slowest file snapshots (auto-checkpoint)")
    ap.add_argument("--against", metavar="OLD_SRC_WIDTHWISE", help="before/after in one process")
    ap.add_argument(
        "--compare-runs", metavar="OLD_SRC_WIDTHWISE", help="stored run files vs another checkout"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.parts:
        parts(max(args.repeats, 200))
        return
    if args.against:
        against(args.against, args.large, args.only, args.repeats, args.rounds)
        return
    if args.tail:
        tail(args.large, args.only, max(args.repeats, 300))
        return
    if args.batches:
        batches(args.large, args.only, args.rounds)
        return
    if args.compare_runs:
        compare_runs(args.compare_runs, args.large)
        return
    if args.compare_with:
        compare_with(args.compare_with, args.large)
        return
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats} per round, "
        f"{args.rounds} rounds (ratio: median over rounds, +- s.e.)\n"
    )
    cols = ["snapshot/wall", "snapshot/cpu"]
    if not args.no_background:
        cols += ["snapshot/total", "background/wall", "background/cpu", "background/total"]
    print(
        f"{'model':<18} {'params':>7} {'floor ms':>8} {'floor CPU':>9} {'snap ms':>8} "
        + " ".join(f"{c:>16}" for c in cols)
        + "  target"
    )
    t0 = time.perf_counter()
    for name, model, x in models(args.large):
        if args.only and args.only not in name:
            continue
        r = bench_model(
            name, model, x, args.repeats, args.rounds, args.reference, not args.no_background
        )
        target = 3.0 if r["params"] > 1_000_000 else 4.0
        ok = "".join("y" if r["ratio"][c] <= target else "n" for c in cols)
        print(
            f"{r['model']:<18} {r['params'] / 1e6:>6.2f}M {r['ms']['floor/wall']:>8.3f} "
            f"{r['ms']['floor/cpu']:>9.3f} {r['ms']['snapshot/wall']:>8.3f} "
            + " ".join(f"{r['ratio'][c]:>10.2f}+-{r['se'][c]:<4.2f}" for c in cols)
            + f"  <={int(target)} {ok}",
            flush=True,
        )
        if r["reference_ms"] is not None:
            print(
                f"{'':<18} reference {r['reference_ms']:.1f} ms = "
                f"{r['reference_ms'] / r['ms']['snapshot/wall']:.1f}x the snapshot; "
                f"{r['kb_per_snapshot']:.0f} KiB per snapshot on disk"
            )
        del model
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")
    if args.training:
        t = bench_training(args.train_steps, 50, 3)
        print(
            f"\nSmall CNN training, {args.train_steps} steps, snapshot every 50 (file store): "
            f"{t['plain_s']:.2f}s plain, {t['tracked_s']:.2f}s tracked (best of 3); "
            f"measured overhead {100 * t['measured_overhead']:+.2f}%"
        )
        print(
            f"  step {t['step_ms']:.1f}ms, snapshot {t['snapshot_ms']:.2f}ms -> "
            f"snapshot / (50 steps) = {100 * t['derived_overhead']:.2f}%"
        )


if __name__ == "__main__":
    main()
