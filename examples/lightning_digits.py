"""PyTorch Lightning + widthwise: one callback records the run and writes the report.

    python examples/lightning_digits.py                       # CPU
    python examples/lightning_digits.py --devices 2 --strategy ddp   # DDP on CPU (gloo)
    python examples/lightning_digits.py --resume runs/lightning/checkpoints/last.ckpt

Resuming with ``ckpt_path`` continues the same run file: the callback's state is saved in every
Lightning checkpoint. Data: scikit-learn's bundled 8x8 digits (no download).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from widthwise.integrations.lightning import WidthCallback


class DigitsMLP(L.LightningModule):
    def __init__(self, hidden: int = 64, lr: float = 0.05) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(
            nn.Linear(64, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 10),
        )
        self.example_input_array = torch.zeros(2, 64)  # widthwise finds the channel groups with it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def loaders(batch_size: int) -> tuple[DataLoader, DataLoader]:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    train = TensorDataset(x[:1500], y[:1500])
    val = TensorDataset(x[1500:], y[1500:])
    return DataLoader(train, batch_size, shuffle=True), DataLoader(val, 256)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/lightning"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--every-n-steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--strategy", default="auto")
    p.add_argument("--resume", type=Path, default=None, help="a checkpoint to resume from")
    args = p.parse_args()

    L.seed_everything(0, verbose=False)
    train, val = loaders(args.batch_size)
    width = WidthCallback(args.out / "run.wwrun", every_n_steps=args.every_n_steps)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy=args.strategy,
        max_epochs=args.epochs,
        default_root_dir=args.out,
        callbacks=[width, ModelCheckpoint(args.out / "checkpoints", save_last=True)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(DigitsMLP(), train, val, ckpt_path=args.resume)
    if trainer.is_global_zero:
        print(width.tracker.report())
        print(f"run file: {args.out / 'run.wwrun'}; report: {args.out / 'run.html'}")


if __name__ == "__main__":
    main()
