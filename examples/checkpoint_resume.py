"""A plain PyTorch loop that survives being killed: widthwise state travels in the checkpoint.

    python examples/checkpoint_resume.py --out runs/resume            # train (or resume) to the end
    python examples/checkpoint_resume.py --out runs/resume --kill-at 70   # die with SIGKILL at step 70
    python examples/checkpoint_resume.py --out runs/resume            # ...resumes from step 50

The checkpoint holds the model, the optimizer and ``tracker.state_dict()`` together, written
atomically; after a restart ``tracker.load_state_dict`` drops the snapshots taken after the
checkpoint, so the run file ends with every snapshot exactly once. Each step's batch depends only
on (seed, step), so a resumed run reproduces an uninterrupted one exactly.
Data: scikit-learn's bundled 8x8 digits (no download).
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn

from widthwise.tracker import WidthTracker


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/checkpoint_resume"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--snapshot-every", type=int, default=10)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kill-at", type=int, default=None, help="SIGKILL this process at this step")
    args = p.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    run_file, ckpt_file = args.out / "run.wwrun", args.out / "checkpoint.pt"
    torch.manual_seed(args.seed)
    x, y = digits()
    model = nn.Sequential(
        nn.Linear(64, args.hidden), nn.ReLU(),
        nn.Linear(args.hidden, args.hidden), nn.ReLU(),
        nn.Linear(args.hidden, 10),
    )  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tracker = WidthTracker(model, x[:2], store=run_file)

    start = 0
    if ckpt_file.exists():
        ckpt = torch.load(ckpt_file, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        tracker.load_state_dict(ckpt["tracker"])  # forgets snapshots newer than the checkpoint
        start = ckpt["step"]
        print(f"resumed at step {start}", flush=True)
    else:
        tracker.snapshot(step=0)

    for step in range(start + 1, args.steps + 1):
        batch = torch.randint(
            len(x), (64,), generator=torch.Generator().manual_seed(args.seed * 100003 + step)
        )
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.snapshot_every == 0:
            tracker.snapshot(step=step, metrics={"loss": loss.item()})
        if step % args.checkpoint_every == 0:
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                     "tracker": tracker.state_dict(), "step": step}  # fmt: skip
            torch.save(state, ckpt_file.with_suffix(".tmp"))
            os.replace(ckpt_file.with_suffix(".tmp"), ckpt_file)  # never a half-written checkpoint
        if step == args.kill_at:
            print(f"killed at step {step}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    print(tracker.history().groupby("snapshot").size().size, "snapshots in", run_file)


if __name__ == "__main__":
    main()
