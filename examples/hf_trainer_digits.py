"""Hugging Face Trainer + widthwise: one callback records the run and writes the report.

    python examples/hf_trainer_digits.py                                  # CPU
    torchrun --nproc_per_node 2 examples/hf_trainer_digits.py             # DDP (gloo on CPU)
    python examples/hf_trainer_digits.py --save-steps 20                  # with checkpoints...
    python examples/hf_trainer_digits.py --save-steps 20 --resume runs/hf/checkpoint-40  # ...resumed

Any ``nn.Module`` whose ``forward`` takes the batch's keys and returns a ``loss`` works with the
Trainer; a ``transformers`` model works the same way. Data: scikit-learn's bundled 8x8 digits.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn
from transformers import Trainer, TrainingArguments

from widthwise.integrations.hf import WidthTrainerCallback


class DigitsMLP(nn.Module):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 10),
        )

    def forward(self, pixels: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        logits = self.net(pixels)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


class Digits(torch.utils.data.Dataset):
    def __init__(self, part: slice) -> None:
        x, y = load_digits(return_X_y=True)
        self.x = torch.tensor(x[part] / 16.0, dtype=torch.float32)
        self.y = torch.tensor(y[part])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"pixels": self.x[i], "labels": self.y[i]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/hf"))
    p.add_argument("--epochs", type=float, default=5)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--every-n-steps", type=int, default=10)
    p.add_argument("--save-steps", type=int, default=0, help="checkpoint every this many steps")
    p.add_argument("--resume", default=None, help="a checkpoint-N folder to resume from")
    args = p.parse_args()

    torch.manual_seed(0)
    training_args = TrainingArguments(
        output_dir=str(args.out),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=64,
        learning_rate=0.05,
        optim="sgd",
        lr_scheduler_type="constant",
        logging_steps=args.every_n_steps,
        eval_strategy="epoch",
        save_strategy="steps" if args.save_steps else "no",
        save_steps=args.save_steps or 500,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    width = WidthTrainerCallback(args.out / "run.wwrun", every_n_steps=args.every_n_steps)
    trainer = Trainer(
        model=DigitsMLP(),
        args=training_args,
        train_dataset=Digits(slice(0, 1500)),
        eval_dataset=Digits(slice(1500, None)),
        callbacks=[width],
    )
    trainer.train(resume_from_checkpoint=args.resume)
    if trainer.is_world_process_zero():
        print(width.tracker.report())
        print(f"run file: {args.out / 'run.wwrun'}; report: {args.out / 'run.html'}")


if __name__ == "__main__":
    main()
