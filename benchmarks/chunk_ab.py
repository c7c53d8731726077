"""A/B of the blocked CPU reductions in ``NormPlan``: block sizes against the floor, one process.

    python benchmarks/chunk_ab.py resnet     # or: vit

For each block size (``off`` = square the whole weight, then sum rows and columns) prints the
median time of ``NormPlan.stats()`` and its ratio to one ``torch._foreach_norm`` pass over the
same weights, measured in the same round; two rounds. docs/benchmarks.md quotes it.
"""

from __future__ import annotations

import sys
import time
import warnings

import torch

import widthwise.norms as norms
from widthwise import find_groups, zoo
from widthwise.norms import NormPlan


def timed(fn, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[repeats // 2] * 1e3


@torch.no_grad()
def main() -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    which = sys.argv[1] if len(sys.argv) > 1 else "resnet"
    if which == "resnet":
        model, x = zoo.resnet50(num_classes=1000, stem="imagenet"), torch.randn(1, 3, 64, 64)
    else:
        model = zoo.ViT(32, 16, dim=768, depth=12, heads=12, mlp_dims=[3072] * 12, num_classes=1000)
        x = torch.randn(1, 3, 32, 32)
    groups = find_groups(model, x)
    plan = NormPlan(model, groups)
    params = dict(model.named_parameters())
    weights = list({m.param: params[m.param] for g in groups for m in g.members}.values())
    weights = [w for w in weights if w.ndim >= 2]
    default = norms.CHUNK_ELEMENTS
    for _ in range(2):
        floor = timed(lambda: torch._foreach_norm(weights))
        row = [f"floor {floor:.1f} ms"]
        for chunk in (None, 1 << 16, 1 << 18, 1 << 20):
            norms.CHUNK_ELEMENTS = chunk or 1 << 62
            ms = timed(plan.stats)
            row.append(f"{chunk or 'off'}: {ms:.1f} ms ({ms / floor:.2f}x)")
        norms.CHUNK_ELEMENTS = default
        print(which, " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
