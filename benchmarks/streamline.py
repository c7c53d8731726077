"""What each streamlining rule parameter does, on one proof set-up (default: the VGG on digits).

One tracked run of the original gives the verdicts; :func:`widthwise.streamline` then plans new
widths under several settings of its parameters (``widen``, ``floor``, ``min_fraction``), each at
equal FLOPs, and every plan is trained from scratch for a few seeds. Printed: widths, parameter
and FLOP ratios to the original, accuracy mean and standard deviation, all measured in this run.

    python benchmarks/streamline.py --family vgg --seeds 3

The proof on conventional set-ups (five set-ups, baselines, budget sweep, 5 seeds) is
``widthwise reproduce streamline``; docs/streamlining.md quotes both.
"""

from __future__ import annotations

import argparse
import warnings

import pandas as pd
import torch

SETTINGS = {
    "library default (widen 1, IFM floor)": {},
    "widen 1, no IFM floor": {"floor": "none"},
    "proof (widen 3, no IFM floor)": {"widen": 3.0, "floor": "none"},
    "widen 3, no floors (min_fraction 0)": {"widen": 3.0, "floor": "none", "min_fraction": 0.0},
}


def main() -> None:
    from widthwise import Report, WidthTracker, count_flops, count_params, experiments, streamline

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="vgg", choices=list(experiments.PROOF_FAMILIES))
    p.add_argument("--seeds", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    fam_name, build = experiments.PROOF_FAMILIES[a.family]
    fam = experiments.FAMILIES[fam_name]
    task = fam.build_task(0)
    kw = fam.train_settings()
    torch.manual_seed(0)
    original = build(task)
    tracker = WidthTracker(original, task.example_inputs)
    experiments.train(original, task, seed=0, tracker=tracker, **kw)
    report = Report.from_run(tracker.run)
    variants = {"original": original.widths()}
    for name, settings in SETTINGS.items():
        plan = streamline(original, report, task.example_inputs, budget="flops", **settings)
        variants[name] = type(original).from_config(plan.to_config(original)).widths()
    rows = []
    base = None
    for name, widths in variants.items():
        accs = []
        for seed in range(a.seeds):
            torch.manual_seed(seed)
            model = original.with_widths(widths)
            accs.append(experiments.train(model, task, seed=seed, **kw)["accuracy"])
        params = count_params(model)
        flops = count_flops(model, task.example_inputs, warn=False)
        base = base or (params, flops)
        rows.append(
            {
                "setting": name,
                "widths": str(widths),
                "params_ratio": round(params / base[0], 3),
                "flops_ratio": round(flops / base[1], 3),
                "accuracy": round(float(pd.Series(accs).mean()), 4),
                "accuracy_std": round(float(pd.Series(accs).std()), 4),
            }
        )
    print(f"{a.family}: {fam.description}; {a.seeds} seeds")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
