"""IFM effective width of each group of the streamlining set-ups after training, for several beta.

    python benchmarks/ifm_widths.py

Trains each model of ``experiments.PROOF_FAMILIES`` once (seed 0, the family's settings) and
prints, per channel group, its width and ``ifm_width`` at beta 0.3, 0.5, 0.7, 0.8, 0.9.
docs/streamlining.md quotes it (why the IFM floor rarely lets a group narrow).
"""

from __future__ import annotations

import warnings

import torch

from widthwise.analysis import channel_vectors, ifm_width
from widthwise.reproduction import experiments, find_groups

BETAS = (0.3, 0.5, 0.7, 0.8, 0.9)


def main() -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    print("family group width " + " ".join(f"beta={b}" for b in BETAS))
    for name, (fam_name, build) in experiments.PROOF_FAMILIES.items():
        fam = experiments.FAMILIES[fam_name]
        task = fam.build_task(0)
        torch.manual_seed(0)
        model = build(task)
        experiments.train(model, task, seed=0, **fam.train_settings())
        for g in find_groups(model, task.example_inputs):
            v = channel_vectors(model, g)
            print(name, g.name, g.width, *[ifm_width(v, beta=b) for b in BETAS], flush=True)


if __name__ == "__main__":
    main()
