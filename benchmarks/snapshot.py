"""Cost of one snapshot on ResNet-50- and ViT-B-size models (CPU), and the overhead on training.

For each model, in the same run and on the same weights:

* floor: one ``torch._foreach_norm`` pass over the weights a snapshot reads (every member
  parameter with 2+ dims) — reading the weights once cannot be done faster;
* snapshot: ``NormPlan.stats()`` (all groups, per-gate series, one host transfer), then
  ``WidthTracker.snapshot()`` with a run file (adds the SQLite transaction and the channel norm
  blobs);
* reference: the approach of the paper's code — ``deepcopy`` of the state dict, then a Python
  loop over groups and tensors, one host sync per group.

Then the overhead of ``snapshot()`` every 50 steps on training a small CNN (batch 64, 32x32).
Targets: snapshot <= 2x floor; training overhead < 1%.

    python benchmarks/snapshot.py [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from widthwise import find_groups
from widthwise.norms import NormPlan
from widthwise.reproduction.zoo import ViT
from widthwise.reproduction.zoo.resnet import resnet50
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


def bench_model(name: str, model: nn.Module, x: torch.Tensor, repeats: int) -> dict:
    model.eval()
    t = time.perf_counter()
    groups = find_groups(model, x)
    t_groups = time.perf_counter() - t
    plan = NormPlan(model, groups)
    params = dict(model.named_parameters())
    read = sorted({m.param for g in groups for m in g.members if params[m.param].ndim >= 2})
    weights = [params[n].detach() for n in read]
    n_read = sum(w.numel() for w in weights)

    with torch.no_grad():
        floor = timed(lambda: [v.item() for v in torch._foreach_norm(weights)][:0], repeats)
    stats = timed(plan.stats, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        tracker = WidthTracker(model, groups=groups, store=Path(tmp) / "run.wws")
        written = timed(tracker.snapshot, repeats)
        size = (Path(tmp) / "run.wws").stat().st_size + (Path(tmp) / "run.wws-wal").stat().st_size
        tracker.close()
    ref = timed(lambda: reference_snapshot(model, groups), max(3, repeats // 2))
    n_series = len(plan.series)
    return {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "read": n_read,
        "groups": len(groups),
        "series": n_series,
        "find_groups_s": t_groups,
        "floor_ms": floor * 1e3,
        "stats_ms": stats * 1e3,
        "snapshot_ms": written * 1e3,
        "reference_ms": ref * 1e3,
        "kb_per_snapshot": size / (repeats + 1) / 1024,
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
        tracker = WidthTracker(model, groups=groups, store=Path(tmp) / "train.wws")
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--train-steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = [
        ("ResNet-50", resnet50(num_classes=1000, stem="imagenet"), torch.randn(1, 3, 64, 64)),
        (
            # 32x32 images (4 patches) keep find_groups' forward passes cheap; the weights are
            # ViT-B's except the position embedding (4 instead of 196 tokens)
            "ViT-B/16",
            ViT(32, 16, dim=768, depth=12, heads=12, mlp_dims=[3072] * 12, num_classes=1000),
            torch.randn(1, 3, 32, 32),
        ),
    ]
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats}\n")
    head = (
        f"{'model':<10} {'params':>7} {'groups':>6} {'floor':>8} {'stats':>8} {'snapshot':>9} "
        f"{'reference':>10} {'stats/floor':>11} {'snap/floor':>10} {'ref/snap':>8}"
    )
    print(head)
    for name, model, x in models:
        r = bench_model(name, model, x, args.repeats)
        print(
            f"{r['model']:<10} {r['params'] / 1e6:>6.1f}M {r['groups']:>6} "
            f"{r['floor_ms']:>6.1f}ms {r['stats_ms']:>6.1f}ms {r['snapshot_ms']:>7.1f}ms "
            f"{r['reference_ms']:>8.1f}ms {r['stats_ms'] / r['floor_ms']:>11.2f} "
            f"{r['snapshot_ms'] / r['floor_ms']:>10.2f} {r['reference_ms'] / r['snapshot_ms']:>8.1f}"
        )
        print(
            f"{'':<10} ({r['series']} series incl. gates; {r['kb_per_snapshot']:.0f} KiB per "
            f"snapshot on disk; find_groups {r['find_groups_s']:.1f}s, once)"
        )
        del model
    t = bench_training(args.train_steps, 50, args.rounds)
    print(
        f"\nSmall CNN training, {args.train_steps} steps, snapshot every 50 (file store): "
        f"{t['plain_s']:.2f}s plain, {t['tracked_s']:.2f}s tracked (best of {args.rounds}); "
        f"measured overhead {100 * t['measured_overhead']:+.2f}%"
    )
    print(
        f"  step {t['step_ms']:.1f}ms, snapshot {t['snapshot_ms']:.2f}ms -> "
        f"snapshot / (50 steps) = {100 * t['derived_overhead']:.2f}%"
    )


if __name__ == "__main__":
    main()
