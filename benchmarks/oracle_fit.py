"""Fit the user-facing verdict's evidence weights on the oracle's *development* runs.

    python benchmarks/oracle_fit.py --runs oracle-runs            # prints coefficients + checks

Reads the oracle runs (benchmarks/oracle.py), the oracle labels (benchmarks/oracle_report.py)
and each group's evidence (widthwise.evidence via widthwise.verdicts.judge); fits a logistic
regression of "needs width" (vs "enough"; "unclear" groups left out) on the development
configurations only, and prints the coefficients to paste into ``widthwise.verdicts`` (so the
library needs no scikit-learn) with its agreement on dev and on the held-out configurations, and
the agreement of two baselines measured on the same rows: the paper's shape verdict and
"width < 16 needs width" (width alone, no evidence).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
import oracle_report as rep

from widthwise.evidence import Evidence
from widthwise.verdicts import FEATURES, features


def _evidence(r) -> Evidence:
    """The :class:`Evidence` of one merged row (its fields are columns of the table)."""
    names = Evidence.__dataclass_fields__
    return Evidence(**{k: getattr(r, k) for k in names})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="oracle-runs")
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength")
    p.add_argument("--cache", default=None, help="reuse/keep the judged rows in this pickle")
    a = p.parse_args()
    from sklearn.linear_model import LogisticRegression

    runs = Path(a.runs)
    df = pd.read_csv(runs / "oracle.csv")
    ol = rep.oracle_labels(df)
    if a.cache and Path(a.cache).exists():
        jr = pd.read_pickle(a.cache)
        known = set(zip(jr.family, jr.config, jr.opt, jr.seed))
        todo = df[
            [(f, c, o, s) not in known for f, c, o, s in zip(df.family, df.config, df.opt, df.seed)]
        ]
        jr = pd.concat([jr, rep.judged_rows(todo, runs)], ignore_index=True)
    else:
        jr = rep.judged_rows(df, runs)
    if a.cache:
        jr.to_pickle(a.cache)
    m = jr.merge(ol.drop(columns="width"), on=["family", "config", "opt", "widened"], how="inner")
    m = m[m.oracle != "unclear"].copy()
    m["width"] = [int(str(w).split("x")[i]) for w, i in zip(m.widths, m.widened)]
    x = np.array([features(r.paper_label, _evidence(r)) for r in m.itertuples()])
    ok = np.all(np.isfinite(x), axis=1)
    m, x = m[ok], x[ok]
    y = (m.oracle == "needs width").to_numpy()
    dev = (m.split == "dev").to_numpy()
    clf = LogisticRegression(C=a.C, max_iter=1000).fit(x[dev], y[dev])
    print("FEATURES =", FEATURES)
    print("COEF =", [round(float(c), 4) for c in clf.coef_[0]])
    print("INTERCEPT =", round(float(clf.intercept_[0]), 4))
    prob = clf.predict_proba(x)[:, 1]
    for name, mask in (("dev", dev), ("held", ~dev)):
        if not mask.any():
            continue
        pred = prob[mask] > 0.5
        print(
            f"{name}: n={mask.sum()} needs={y[mask].mean():.2f} "
            f"fit={np.mean(pred == y[mask]):.3f} "
            f"paper={np.mean((m.paper_label[mask] == 'DS') == y[mask]):.3f} "
            f"width<16={np.mean((m.width[mask] < 16) == y[mask]):.3f}"
        )
    for opt, sub in m.assign(p=prob, y=y).groupby("opt"):
        print(f"  {opt}: n={len(sub)} fit={np.mean((sub.p > 0.5) == sub.y):.3f}")
    for fam, sub in m.assign(p=prob, y=y).groupby("family"):
        print(f"  {fam}: n={len(sub)} fit={np.mean((sub.p > 0.5) == sub.y):.3f}")


if __name__ == "__main__":
    main()
