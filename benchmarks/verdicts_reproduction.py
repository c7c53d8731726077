"""The reproduction sweep under SGD and AdamW, judged with ``label`` and ``paper_label``.

    OMP_NUM_THREADS=1 python benchmarks/verdicts_reproduction.py --families mlp,cnn1d --quick
    python benchmarks/verdicts_reproduction.py --rejudge          # re-judge the kept run files

Trains each family's narrow and generous examined width (``--quick`` widths and epochs, or the
full sweep) over ``--seeds`` seeds, once with the family's own optimiser and once with AdamW
(``widthwise.reproduction.experiments.ADAMW_LR``), keeping every run file under ``--out``; one
run per (family, optimiser, width, seed) is skipped when its file is already complete, so the
script resumes. ``--rejudge`` re-reads the run files and judges them with the current
``widthwise.verdicts`` (used after the verdict weights change); it prints, per family, optimiser
and width, how many seeds read DS / IS / undetermined under ``label`` and ``paper_label``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from widthwise.reproduction import experiments as ex


def run(families: list[str], opts: list[str], seeds: int, quick: bool, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in families:
        fam = ex.FAMILIES[name]
        task = fam.build_task(0)
        widths = fam.quick_widths if quick else fam.widths
        for opt in opts:
            optimizer = None if opt == fam.optimizer else opt
            for seed in range(seeds):
                for w in widths:
                    done = out / f"{name}-{opt}-w{w}-s{seed}.done"
                    if done.exists():
                        continue
                    sub = out / f"{name}-{opt}"
                    sub.mkdir(exist_ok=True)
                    row = ex._run_one(
                        fam, w, seed, quick=quick, out_dir=sub, task=task, optimizer=optimizer
                    )
                    done.write_text(row["run"])
                    print(
                        f"{name} {opt} w={w} s={seed}: {row['label']} "
                        f"(paper {row['paper_label']}) acc {row['accuracy']}",
                        flush=True,
                    )


def rejudge(out: Path) -> pd.DataFrame:
    from widthwise.store import open_run
    from widthwise.verdicts import judge

    rows = []
    for done in sorted(out.glob("*.done")):
        path = Path(done.read_text())
        name = done.name.split("-")[0]
        opt = done.name.split("-")[1]
        with open_run(path) as r:
            meta = r.meta.get("user", {})
            g = ex.examined_group(r.groups, ex.FAMILIES[name].examined).name
            t = judge(r).table.set_index("group").loc[g]
            acc = r.metrics()
            acc = acc[acc.name == "test_accuracy"].value
            rows.append(
                {
                    "family": name,
                    "optimizer": opt,
                    "width": int(meta["width"]),
                    "seed": int(meta["seed"]),
                    "label": t.label,
                    "confidence": float(t.confidence),
                    "paper_label": t.paper_label,
                    "accuracy": float(acc.iloc[-1]) if len(acc) else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default="mlp,cnn1d")
    p.add_argument("--opts", default="sgd,adamw")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="oracle-runs/reproduction")
    p.add_argument("--rejudge", action="store_true")
    a = p.parse_args()
    out = Path(a.out)
    if a.rejudge:
        res = rejudge(out)
        print(ex.summary(res).to_string(index=False))
        res.to_csv(out / "rejudged.csv", index=False)
        return
    torch.set_num_threads(1)
    run(a.families.split(","), a.opts.split(","), a.seeds, a.quick, out)


if __name__ == "__main__":
    main()
