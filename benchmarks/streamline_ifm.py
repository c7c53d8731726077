"""IFM effective width of every group of the proof's trained originals: why the floor is opt-in.

Reads the seed-0 originals that ``widthwise reproduce streamline --out DIR`` saved (no training)
and prints, per set-up and channel group, its width and ``ifm_width`` at several ``beta``
(0.5 is the planner's). docs/streamlining.md quotes it.

    PYTHONPATH=src python benchmarks/streamline_ifm.py --out DIR
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

from widthwise.analysis import channel_vectors, ifm_width
from widthwise.groups import find_groups
from widthwise.reproduction import streamlining as S

BETAS = (0.3, 0.5, 0.7, 0.9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the proof's output folder")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    print("setup | group | width | " + " | ".join(f"IFM beta={b}" for b in BETAS))
    for name, setup in S.SETUPS.items():
        state = Path(args.out) / f"{name}-original-seed0.pt"
        if not state.exists():
            continue
        task = S.build_task(setup, cache_dir=str(Path(args.out) / "data"))
        model = setup.build(S._classes(task))
        model.load_state_dict(torch.load(state))
        for g in find_groups(model, task.example_inputs):
            v = channel_vectors(model, g)
            widths = [ifm_width(v, beta=b) for b in BETAS]
            print(f"{name} | {g.name} | {g.width} | " + " | ".join(map(str, widths)), flush=True)


if __name__ == "__main__":
    main()
