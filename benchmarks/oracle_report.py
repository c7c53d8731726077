"""Oracle labels, verdict agreement, confusion matrix and reliability diagram from oracle runs.

    python benchmarks/oracle_report.py                       # reads oracle-runs/, prints markdown
    python benchmarks/oracle_report.py --runs oracle-runs --figure docs/figures/validity-reliability.png \\
        --csv docs/results/oracle-verdicts.csv > /tmp/validity-tables.md
    # the same from the published table, each label decided again by today's widthwise.verdicts
    python benchmarks/oracle_report.py --verdicts docs/results/oracle-verdicts.csv \\
        --figure docs/figures/validity-reliability.png > docs/results/validity-tables.md

The oracle label of a hidden group (per family, configuration and optimiser) compares, seed by
seed, the held-out accuracy of the original with that of the model whose only change is that
group widened x4 (at least to 64): ``d`` = paired differences over the seeds, ``SE`` = their
standard error.

* ``needs width``: mean(d) > NEEDS_MIN_GAIN and mean(d) > 2 SE (a gain beyond seed noise);
* ``enough``: mean(d) < NEEDS_MIN_GAIN and mean(d) + 2 SE < ENOUGH_MAX_UPPER (any gain is small,
  confidently);
* ``unclear`` otherwise (left out of agreement counts, reported).

Each seed's tracked original is then judged (``widthwise.verdicts.judge``): its ``label`` and
``paper_label`` per group are compared with the group's oracle label (DS <-> needs width,
IS <-> enough). ``undetermined`` verdicts count as not agreeing in "agreement of all" and are
reported separately.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

#: "needs width": widening gains more than one point of held-out accuracy, beyond 2 SE.
NEEDS_MIN_GAIN = 0.01
#: "enough": the gain's upper bound (mean + 2 SE) stays under two points.
ENOUGH_MAX_UPPER = 0.02

ORACLE_TO_LABEL = {"needs width": "DS", "enough": "IS"}
VERDICT_COLUMNS = ("label", "paper_label", "baseline_always_DS", "baseline_width_lt_16")


def oracle_labels(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (family, config, opt, slot): the paired gain statistics and the oracle label."""
    orig = df[df.widened == -1].set_index(["family", "config", "opt", "seed"])
    rows = []
    for (fam, cfg, opt, wi), sub in df[df.widened >= 0].groupby(
        ["family", "config", "opt", "widened"]
    ):
        d_acc, d_loss = [], []
        for r in sub.itertuples():
            key = (fam, cfg, opt, r.seed)
            if key in orig.index:
                d_acc.append(r.accuracy - orig.loc[key, "accuracy"])
                d_loss.append(r.test_loss - orig.loc[key, "test_loss"])
        n = len(d_acc)
        if n < 2:
            continue
        m, se = float(np.mean(d_acc)), float(np.std(d_acc, ddof=1) / math.sqrt(n))
        ml, sel = float(np.mean(d_loss)), float(np.std(d_loss, ddof=1) / math.sqrt(n))
        if m > NEEDS_MIN_GAIN and m > 2 * se:
            label = "needs width"
        elif m < NEEDS_MIN_GAIN and m + 2 * se < ENOUGH_MAX_UPPER:
            label = "enough"
        else:
            label = "unclear"
        rows.append(
            {
                "family": fam,
                "config": cfg,
                "split": sub.split.iloc[0],
                "opt": opt,
                "widths": sub.widths.iloc[0],
                "widened": int(wi),
                "slot": sub.slot.iloc[0],
                "width": int(str(sub.widths.iloc[0]).split("x")[int(wi)]),
                "seeds": n,
                "d_acc": m,
                "d_acc_se": se,
                "d_loss": ml,
                "d_loss_se": sel,
                "oracle": label,
            }
        )
    return pd.DataFrame(rows)


def judged_rows(df: pd.DataFrame, runs: Path) -> pd.DataFrame:
    """Judge every tracked original: one row per (run, slot) with label, paper label, evidence."""
    sys.path.insert(0, str(Path(__file__).parent))
    import oracle as orc

    from widthwise.reproduction.experiments import examined_group
    from widthwise.store import open_run
    from widthwise.verdicts import judge

    rows = []
    for r in df[(df.widened == -1) & df.run.notna()].itertuples():
        fam = orc.FAMILIES[r.family]
        widths = [int(x) for x in str(r.widths).split("x")]
        with open_run(runs / r.run) as run:
            j = judge(run)
            table = j.table.set_index("group")
            for i, slot in enumerate(fam.slots(widths)):
                g = examined_group(run.groups, slot).name
                t = table.loc[g]
                ev = j.evidence.get(g)
                rows.append(
                    {
                        "family": r.family,
                        "config": r.config,
                        "opt": r.opt,
                        "seed": int(r.seed),
                        "widened": i,
                        "group": g,
                        "kind": t.kind,
                        "label": t.label,
                        "confidence": float(t.confidence),
                        "paper_label": t.paper_label,
                        "paper_confidence": float(t.paper_confidence),
                        "reason": t.reason,
                        **({} if ev is None else ev.to_dict()),
                    }
                )
    return pd.DataFrame(rows)


def redecide(m: pd.DataFrame) -> pd.DataFrame:
    """``label``/``confidence``/``reason`` decided again from each row's stored evidence.

    Exact for rows whose verdict came from the probability (their reason states it): the label is
    a function of the evidence and the paper's label alone (``widthwise.verdicts.decide``). Rows
    undetermined for another reason (too few snapshots, no reference level) are kept as they are.
    """
    from widthwise.evidence import Evidence
    from widthwise.patterns import MIN_POINTS, Verdict
    from widthwise.verdicts import decide

    names = Evidence.__dataclass_fields__
    m = m.copy()
    for i, r in zip(m.index, m.itertuples()):
        if "P(widening helps)" not in str(r.reason):
            continue
        paper = Verdict(r.paper_label, r.paper_confidence, evidence={"n_snapshots": MIN_POINTS})
        ev = Evidence(**{k: getattr(r, k) for k in names})
        kind = getattr(r, "kind", None)
        if not isinstance(kind, str):  # tables written before the kind column: the GRU's
            kind = "recurrent" if r.family == "gru" else "linear"  # hidden groups, else checked
        label, conf, reason = decide(paper, ev, kind=kind, optimizer=str(r.opt).split("-")[0])
        m.loc[i, ["label", "confidence", "reason"]] = [label, conf, reason]
    return m


def agreement(m: pd.DataFrame, col: str) -> dict[str, float]:
    """Agreement of verdict column ``col`` with the oracle over groups the oracle decided."""
    dec = m[m.oracle != "unclear"]
    want = dec.oracle.map(ORACLE_TO_LABEL)
    n = len(dec)
    right = int((dec[col] == want).sum())
    undet = int((dec[col] == "undetermined").sum())
    decided = dec[dec[col] != "undetermined"]
    ds = decided[decided[col] == "DS"]
    is_ = decided[decided[col] == "IS"]
    return {
        "cases": n,
        "agree": right / n if n else math.nan,
        "agree_decided": (decided[col] == decided.oracle.map(ORACLE_TO_LABEL)).mean()
        if len(decided)
        else math.nan,
        "undetermined": undet / n if n else math.nan,
        "DS_right": float((ds.oracle == "needs width").mean()) if len(ds) else math.nan,
        "IS_right": float((is_.oracle == "enough").mean()) if len(is_) else math.nan,
        "n_DS": len(ds),
        "n_IS": len(is_),
    }


def reliability(m: pd.DataFrame, col: str, conf: str, path: Path | None) -> pd.DataFrame:
    """Share right per confidence bin (decided verdicts on decided oracle cases)."""
    dec = m[(m.oracle != "unclear") & (m[col] != "undetermined")].copy()
    dec["right"] = dec[col] == dec.oracle.map(ORACLE_TO_LABEL)
    bins = [0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0001]
    dec["bin"] = pd.cut(dec[conf], bins, right=False)
    tab = dec.groupby("bin", observed=False).agg(n=("right", "size"), right=("right", "mean"))
    tab["mean_conf"] = dec.groupby("bin", observed=False)[conf].mean()
    if path is not None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.2, 4))
        ax = fig.subplots()
        ok = tab.n > 0
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
        ax.plot(tab.mean_conf[ok], tab.right[ok], "o-", label=f"{col} (n={int(tab.n.sum())})")
        pdec = m[(m.oracle != "unclear") & (m.paper_label != "undetermined")].copy()
        if len(pdec) and col != "paper_label":
            pdec["right"] = pdec.paper_label == pdec.oracle.map(ORACLE_TO_LABEL)
            pdec["bin"] = pd.cut(pdec.paper_confidence, bins, right=False)
            pt = pdec.groupby("bin", observed=False).agg(
                n=("right", "size"), right=("right", "mean"), c=("paper_confidence", "mean")
            )
            pok = pt.n > 0
            ax.plot(pt.c[pok], pt.right[pok], "s:", label=f"paper_label (n={int(pt.n.sum())})")
        ax.set_xlabel("stated confidence (bin mean)")
        ax.set_ylabel("share agreeing with the oracle")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        ax.set_title("Reliability of the verdict confidence", fontsize=10)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return tab


def _md(df: pd.DataFrame, index: bool = False) -> str:
    """A GitHub markdown table (no tabulate dependency); floats to 3 significant digits."""
    if index:
        df = df.reset_index()
    cells = [
        [f"{v:.3g}" if isinstance(v, float) else str(v) for v in row]
        for row in df.itertuples(index=False)
    ]
    head = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="oracle-runs")
    p.add_argument("--figure", default=None, help="write the reliability diagram here (PNG)")
    p.add_argument("--csv", default=None, help="write the merged per-verdict table here")
    p.add_argument(
        "--verdicts",
        default=None,
        help="start from a table written by --csv (no runs needed): each label is decided again "
        "from its stored evidence by today's widthwise.verdicts.decide",
    )
    a = p.parse_args()
    if a.verdicts:
        m = redecide(pd.read_csv(a.verdicts))
        keys = ["family", "config", "opt", "widened"]
        ol = m.drop_duplicates(keys).sort_values(keys)
    else:
        runs = Path(a.runs)
        df = pd.read_csv(runs / "oracle.csv")
        # Only complete configurations: every slot widened for every seed of the original.
        ol = oracle_labels(df)
        jr = judged_rows(df, runs)
        m = jr.merge(
            ol.drop(columns="width"), on=["family", "config", "opt", "widened"], how="inner"
        )
    # Baselines measured on the same cases: no evidence at all ("always DS") and width alone.
    m["baseline_always_DS"] = "DS"
    m["width"] = [int(str(w).split("x")[i]) for w, i in zip(m.widths, m.widened)]
    m["baseline_width_lt_16"] = np.where(m.width < 16, "DS", "IS")
    if a.csv:
        m.to_csv(a.csv, index=False)
    print("## Oracle labels\n")
    print(
        _md(
            ol[
                [
                    "family",
                    "split",
                    "opt",
                    "widths",
                    "slot",
                    "width",
                    "d_acc",
                    "d_acc_se",
                    "d_loss",
                    "d_loss_se",
                    "oracle",
                ]
            ]
        )
    )
    for split in ("dev", "held", "all"):
        sub = m if split == "all" else m[m.split == split]
        if not len(sub):
            continue
        print(f"\n## Agreement, {split} configurations\n")
        rows = []
        for key, part in (
            [("all", sub)]
            + [(f"{k}", g) for k, g in sub.groupby("family")]
            + [(f"{k}", g) for k, g in sub.groupby("opt")]
        ):
            for col in VERDICT_COLUMNS:
                rows.append({"subset": key, "verdict": col, **agreement(part, col)})
        print(_md(pd.DataFrame(rows)))
        print(f"\n### Confusion ({split}; rows oracle, columns verdict)\n")
        for col in ("label", "paper_label"):
            cm = pd.crosstab(sub.oracle, sub[col])
            print(f"{col}:\n\n" + _md(cm, index=True) + "\n")
    print("\n## Reliability (label, all configurations)\n")
    tab = reliability(m, "label", "confidence", Path(a.figure) if a.figure else None)
    print(_md(tab.reset_index().astype({"bin": str})))


if __name__ == "__main__":
    main()
