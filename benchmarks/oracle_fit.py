"""Fit the user-facing verdict's evidence weights on the oracle's *development* runs.

    python benchmarks/oracle_fit.py --runs oracle-runs            # prints coefficients + checks
    python benchmarks/oracle_fit.py --verdicts docs/results/oracle-verdicts.csv   # no runs needed

Reads the oracle runs (benchmarks/oracle.py), the oracle labels (benchmarks/oracle_report.py)
and each group's evidence (widthwise.evidence via widthwise.verdicts.judge); fits a logistic
regression of "needs width" (vs "enough"; "unclear" groups left out) on the development
configurations only, chooses the undetermined band by cross-validation on them (each development
configuration predicted by a fit without it; the band with the best agreement among those leaving
at most :data:`MAX_UNDETERMINED` undetermined), and prints the coefficients to paste into ``widthwise.verdicts`` (so the
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


#: The undetermined band may leave at most this share of the (cross-validated) dev cases undecided.
MAX_UNDETERMINED = 0.15


def choose_band(x: np.ndarray, y: np.ndarray, rows: pd.DataFrame, C: float) -> tuple[float, float]:
    """The (IS at P <= lo, DS at P >= hi) band with the best cross-validated agreement.

    Every development configuration (family + widths) is predicted by a fit on the others, as a
    user's unseen network would be; among bands on a 0.05 grid leaving at most
    :data:`MAX_UNDETERMINED` of the cases undetermined, the one agreeing best with the oracle on
    the decided ones wins (ties: the narrower band). Prints the candidates' scores.
    """
    from sklearn.linear_model import LogisticRegression

    fold = (rows.family + "/" + rows.config).to_numpy()
    cv = np.full(len(y), np.nan)
    for f in np.unique(fold):
        out = fold == f
        clf = LogisticRegression(C=C, max_iter=1000).fit(x[~out], y[~out])
        cv[out] = clf.predict_proba(x[out])[:, 1]
    best: tuple[float, float, float] | None = None
    for lo in np.round(np.arange(0.30, 0.501, 0.05), 2):
        for hi in np.round(np.arange(0.50, 0.801, 0.05), 2):
            decided = (cv <= lo) | (cv >= hi)
            if hi < lo or 1 - decided.mean() > MAX_UNDETERMINED:
                continue
            agree = float(np.mean((cv[decided] >= hi) == y[decided]))
            ds_right = float(np.mean(y[cv >= hi]))
            print(
                f"  cv band {lo:.2f}-{hi:.2f}: agree {agree:.3f} "
                f"undet {1 - decided.mean():.3f} DS right {ds_right:.3f}"
            )
            if best is None or agree > best[0] + 1e-12:
                best = (agree, float(lo), float(hi))
    assert best is not None, "no band leaves few enough cases undetermined"
    return best[1], best[2]


def _from_runs(runs: Path, cache: str | None) -> pd.DataFrame:
    df = pd.read_csv(runs / "oracle.csv")
    ol = rep.oracle_labels(df)
    if cache and Path(cache).exists():
        jr = pd.read_pickle(cache)
        known = set(zip(jr.family, jr.config, jr.opt, jr.seed))
        todo = df[
            [(f, c, o, s) not in known for f, c, o, s in zip(df.family, df.config, df.opt, df.seed)]
        ]
        jr = pd.concat([jr, rep.judged_rows(todo, runs)], ignore_index=True)
    else:
        jr = rep.judged_rows(df, runs)
    if cache:
        jr.to_pickle(cache)
    m = jr.merge(ol.drop(columns="width"), on=["family", "config", "opt", "widened"], how="inner")
    m = m[m.oracle != "unclear"].copy()
    m["width"] = [int(str(w).split("x")[i]) for w, i in zip(m.widths, m.widened)]
    return m


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="oracle-runs")
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength")
    p.add_argument("--cache", default=None, help="reuse/keep the judged rows in this pickle")
    p.add_argument(
        "--verdicts",
        default=None,
        help="the merged per-verdict table of oracle_report.py --csv (evidence columns) instead "
        "of judging the runs again",
    )
    a = p.parse_args()
    from sklearn.linear_model import LogisticRegression

    if a.verdicts:
        m = pd.read_csv(a.verdicts)
        m = m[m.oracle != "unclear"].copy()
    else:
        m = _from_runs(Path(a.runs), a.cache)
    x = np.array([features(r.paper_label, _evidence(r)) for r in m.itertuples()])
    ok = np.all(np.isfinite(x), axis=1)
    m, x = m[ok], x[ok]
    y = (m.oracle == "needs width").to_numpy()
    dev = (m.split == "dev").to_numpy()
    from sklearn.metrics import roc_auc_score

    for i, name in enumerate(FEATURES):
        auc = roc_auc_score(y[dev], x[dev, i])
        print(f"dev AUC of {name} alone: {max(auc, 1 - auc):.3f} ({'+' if auc >= 0.5 else '-'})")
    clf = LogisticRegression(C=a.C, max_iter=1000).fit(x[dev], y[dev])
    no_loss = LogisticRegression(C=a.C, max_iter=1000).fit(x[dev][:, :-1], y[dev])
    print("FEATURES =", FEATURES)
    print("COEF =", tuple(round(float(c), 4) for c in clf.coef_[0]))
    print("INTERCEPT =", round(float(clf.intercept_[0]), 4))
    print("COEF_NO_LOSS =", tuple(round(float(c), 4) for c in no_loss.coef_[0]))
    lo, hi = x[dev].min(axis=0), x[dev].max(axis=0)
    print("FEATURE_RANGE = (")
    for name, a_, b_ in zip(FEATURES, lo, hi):
        print(f"    ({round(float(a_), 2)}, {round(float(b_), 2)}),  # {name}")
    print(")")
    print("INTERCEPT_NO_LOSS =", round(float(no_loss.intercept_[0]), 4))
    p_nl = no_loss.predict_proba(x[:, :-1])[:, 1]
    print(
        f"without the loss feature: dev {np.mean((p_nl[dev] > 0.5) == y[dev]):.3f} "
        f"held {np.mean((p_nl[~dev] > 0.5) == y[~dev]):.3f}"
    )
    prob = clf.predict_proba(x)[:, 1]
    want = np.where(y, "DS", "IS")
    lo_cv, hi_cv = choose_band(x[dev], y[dev], m[dev], C=a.C)
    print(f"band chosen by cross-validation on dev: IS at P <= {lo_cv}, DS at P >= {hi_cv}")
    bands = [(1 - q, q) for q in (0.5, 0.55, 0.6, 0.65, 0.7)] + [(0.4, 0.7), (0.45, 0.75)]
    bands.append((lo_cv, hi_cv))
    for lo, hi in bands:
        lab = np.where(prob >= hi, "DS", np.where(prob <= lo, "IS", "U"))
        parts = []
        for name, mask in (("dev", dev), ("held", ~dev)):
            ds = lab[mask] == "DS"
            parts.append(
                f"{name} agree {np.mean(lab[mask] == want[mask]):.3f} "
                f"undet {np.mean(lab[mask] == 'U'):.2f} "
                f"DS right {np.mean(y[mask][ds]) if ds.any() else float('nan'):.2f}"
            )
        print(f"IS at P <= {lo:.2f}, DS at P >= {hi:.2f}: " + " | ".join(parts))
    for name, mask in (("dev", dev), ("held", ~dev)):
        if not mask.any():
            continue
        print(
            f"{name}: n={mask.sum()} needs={y[mask].mean():.2f} "
            f"fit(0.5)={np.mean((prob[mask] > 0.5) == y[mask]):.3f} "
            f"paper={np.mean((m.paper_label[mask] == 'DS') == y[mask]):.3f} "
            f"always_DS={y[mask].mean():.3f} "
            f"width<16={np.mean((m.width[mask] < 16) == y[mask]):.3f}"
        )


if __name__ == "__main__":
    main()
