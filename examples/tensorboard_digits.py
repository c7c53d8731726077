"""TensorBoard + widthwise: each group's variance as scalars, channel norms as histograms.

    python examples/tensorboard_digits.py
    tensorboard --logdir runs/tensorboard

``TensorBoardLogger(writer).attach(tracker)`` logs every snapshot as it is taken; ``log_run``
replays a run file recorded earlier. Data: scikit-learn's bundled 8x8 digits (no download).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from widthwise.integrations.tensorboard import TensorBoardLogger
from widthwise.tracker import WidthTracker


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/tensorboard"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--snapshot-every", type=int, default=10)
    args = p.parse_args()

    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    model = nn.Sequential(
        nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    args.out.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(args.out)
    tracker = WidthTracker(model, x[:2], store=args.out / "run.wwrun")
    TensorBoardLogger(writer).attach(tracker)

    tracker.snapshot(step=0)
    for step in range(1, args.steps + 1):
        batch = torch.randint(len(x), (64,))
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        writer.add_scalar("train/loss", loss.item(), step)
        if step % args.snapshot_every == 0:
            tracker.snapshot(step=step, metrics={"loss": loss.item()})
    writer.close()
    print(f"TensorBoard logs in {args.out}: tensorboard --logdir {args.out}")


if __name__ == "__main__":
    main()
