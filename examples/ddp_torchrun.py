"""Multi-process (DDP) training with widthwise, launched by torchrun.

    torchrun --nproc_per_node 2 examples/ddp_torchrun.py                  # one machine, CPU (gloo)
    torchrun --nnodes 2 --node_rank 0 --master_addr host0 --nproc_per_node 8 examples/ddp_torchrun.py

Every rank builds the tracker and calls ``snapshot`` at the same steps (under FSDP the channel
norms need every rank's shard); only rank 0 writes the run file. Each rank trains on its own
slice of scikit-learn's bundled 8x8 digits.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.distributed as dist
from sklearn.datasets import load_digits
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from widthwise.tracker import WidthTracker


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/ddp"))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--snapshot-every", type=int, default=10)
    args = p.parse_args()

    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(
        f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    )

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x[rank::world] / 16.0, dtype=torch.float32, device=device)
    y = torch.tensor(y[rank::world], device=device)
    torch.manual_seed(0)  # same initial weights on every rank
    model = nn.Sequential(
        nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)
    ).to(device)
    ddp = DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)

    tracker = WidthTracker(ddp, x[:2], store=args.out / "run.wwrun")
    tracker.snapshot(step=0)
    gen = torch.Generator().manual_seed(rank)
    for step in range(1, args.steps + 1):
        batch = torch.randint(len(x), (32,), generator=gen).to(device)
        loss = nn.functional.cross_entropy(ddp(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.snapshot_every == 0:
            tracker.snapshot(step=step, metrics={"loss": loss.item()})

    if rank == 0:
        print(tracker.report())
        print(f"run file: {args.out / 'run.wwrun'}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
