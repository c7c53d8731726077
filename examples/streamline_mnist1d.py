"""Track, read the verdicts, re-plan the widths, rebuild, retrain: the whole loop on MNIST-1D.

    python examples/streamline_mnist1d.py --epochs 30

A 1D CNN whose first layer is far too narrow ([4, 16, 256]) is trained with a ``WidthTracker``;
``streamline`` plans new widths at the same FLOPs (DS groups widen, IS groups narrow); the plan
is applied twice: ``net2net`` (widened groups keep the function exactly, narrowed ones lose
their lowest-norm channels: a warm start for fine-tuning) and ``reinit`` (a fresh model of the
new shape, trained from scratch as the paper does). Prints the plan and the test
accuracy of the original and of the streamlined model. Everything is generated locally.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import widthwise
from widthwise.reproduction import experiments, zoo


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/streamline"))
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)

    task = experiments.FAMILIES["cnn1d"].build_task(0)  # MNIST-1D, generated
    settings = {**experiments.FAMILIES["cnn1d"].train_settings(), "epochs": args.epochs}
    torch.manual_seed(args.seed)
    model = zoo.CNN1D([4, 16, 256], length=40, num_classes=10)
    run_file = args.out / "original.wwrun"
    run_file.unlink(missing_ok=True)
    tracker = widthwise.WidthTracker(model, task.example_inputs, store=run_file)
    before = experiments.train(model, task, seed=args.seed, tracker=tracker, **settings)
    report = tracker.report()
    print(report)

    plan = widthwise.streamline(
        model, report, task.example_inputs, budget="flops", **experiments.PROOF_SETTINGS
    )
    print(plan)
    (args.out / "plan.json").write_text(plan.to_json())

    warm = plan.apply(model, init="net2net").eval()
    with torch.no_grad():
        x, y = task.data.x_test, task.data.y_test
        agree = float((warm(x).argmax(1) == model.eval()(x).argmax(1)).float().mean())
        acc = float((warm(x).argmax(1) == y).float().mean())
    print(f"net2net warm start, before any training: test accuracy {acc:.3f}, same prediction")
    print(f"as the original on {agree:.1%} of the test set (narrowed groups lost channels)")

    torch.manual_seed(args.seed)
    fresh = plan.apply(model, init="reinit")
    after = experiments.train(fresh, task, seed=args.seed, **settings)
    print(
        f"test accuracy: original {before['accuracy']:.3f} "
        f"({widthwise.count_params(model):,} parameters), "
        f"streamlined {after['accuracy']:.3f} ({widthwise.count_params(fresh):,} parameters)"
    )
    tracker.close()


if __name__ == "__main__":
    main()
