"""Per-group verdicts for a tracked run: a table, a terminal view, figures and one HTML page.

:class:`Report` reads a run (``widthwise.open_run(path)`` or a live ``WidthTracker``), takes the
verdict table of :func:`widthwise.verdicts.judge` (``report.table``, a plain
:class:`pandas.DataFrame`) and views it: ``print(report)``, ``report.figure(group)`` (a matplotlib
Figure), ``report._repr_html_()`` (the table in Jupyter) and ``report.save_html(path)``, a single
self-contained file (figures inlined as base64 PNG, inline CSS, no scripts, no external URL) that
opens offline and reads from 700 px wide screens up.

The page is written for a reader who has never seen the paper: it says which layers to change,
by how much and why. "Why" is the verdict in words (the shape of the group's channel-norm
spread). "By how much" needs the model, which a run file does not hold: give the report a
:class:`widthwise.streamline.WidthPlan` (``Report.from_run(run, plan=plan)`` or
``report.with_plan(plan)``) and the page and ``to_text`` show old -> new width per group under the
plan's budget and the line of code that builds the new model; without one they say how to compute
it (``widthwise.streamline(model, report, example_inputs)``).

The verdict is evidence, not proof: see ``docs/verdicts.md`` for what it got right and wrong.
The table may carry ``paper_label`` / ``paper_confidence`` (the paper's shape rule alone, beside
the verdict users act on); the views show that column when the table has it.

Example:
    >>> import widthwise
    >>> report = widthwise.open_run("run.wwrun").report()        # doctest: +SKIP
    >>> print(report)                                           # doctest: +SKIP
    >>> report.save_html("report.html")                         # doctest: +SKIP
"""

from __future__ import annotations

import base64
import copy
import html
import io
import math
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from widthwise.patterns import DS_MAX_RETAINED
from widthwise.verdicts import (
    RunLike,
    _finite,
    _present,
    judge,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from widthwise.streamline import WidthPlan

__all__ = ["Report", "figure_caption", "legend", "render_html", "save_html"]

#: Up to this many channels the norm distribution is drawn as dots (one per channel) instead of a
#: histogram: 2*sqrt(W) bins (at least 6) over 4-8 values left mostly empty bins and 1-channel
#: bars (the demo's 4-channel conv and 8-unit bottleneck were unreadable as histograms).
STRIP_MAX_WIDTH = 16

# 7.2 in x 120 dpi = 864 px: native size on wide screens, scaled down (text ~10 px) at 700 px.
_GROUP_DPI = 120

#: What a plan's code line says; shown under the plan on the page and in the terminal.
HOW_TO_PLAN = 'plan = widthwise.streamline(model, report, example_inputs, budget="flops")'
HOW_TO_APPLY = 'new_model = plan.apply(model, init="reinit")  # then train new_model'


def legend(*, paper: bool = False, plan: bool = False, stages: bool = True) -> tuple[str, ...]:
    """What the verdicts and the terminal table's columns mean (lines under 100 characters).

    ``paper`` adds the ``paper`` column, ``plan`` the ``new`` column; ``stages=False`` leaves
    out the columns a narrow table drops (``dip end``, ``rise end``, ``end/peak``).
    """
    if paper:  # the verdict weighs more than the shape; the shape rule is the paper column's
        lines = [
            "verdict (act on it): IS: wide enough, can narrow.  DS: would gain from width.",
            "undetermined: unclear: keep.  paper: the paper's shape rule alone: IS when the",
            "variance rises and stays high, DS when it rises, then falls back low.",
        ]
    else:
        lines = [
            "IS: variance rises and stays high: wide enough, can narrow.  DS: variance rises, then",
            "falls back low: would gain from width.  undetermined: neither is clear: keep.",
        ]
    if plan:
        lines.append("new: the width in the plan (same budget); - where the plan has no entry.")
    kept = f"kept: share of the rise kept at the end (< {DS_MAX_RETAINED:g} reads DS)."
    if stages:
        lines += [
            "dip end / rise end: last step of stage 1 / 2.  at: step of the peak.  end/peak: final",
            f"level / peak.  {kept}",
        ]
    else:
        lines.append(f"at: step of the peak.  {kept}")
    lines.append("stable: step from which the early verdict no longer changed.")
    return tuple(lines)


# How to read each figure, one sentence each. The side analyses are keyed by the titles
# ``widthwise.analysis.figures`` gives them.
GROUP_FIGURE_CAPTION = (
    "How to read it: at the top, the spread of the group's channel norms over training (the "
    "paper's rule: IS if it ends near its peak, DS if it falls back; shaded: stages 1-3; triangle: "
    "the peak; dashed: the verdict is stable from here); below, the mean and largest channel "
    "norm and your logged metrics on the same steps, and on the right each channel's norm "
    "divided by the mean at a few steps, where a long tail to the right means a few channels "
    "dominate."
)
_SIDE_CAPTIONS = {
    "Early vs final channel norms": (
        "How to read it: one line per group, the rank correlation between the channel norms at "
        "that step and the final ones (1 = same order); a line that reaches 1 early means the "
        "strong channels were picked early in training, the rich-get-richer effect the verdicts "
        "build on."
    ),
    "Sign flips since initialisation": (
        "How to read it: the share of each group's weights whose sign differs from "
        "initialisation; most flips happen early, and a curve still climbing at the end means "
        "the weights have not settled."
    ),
    "Matthew effect: weight norm vs gradient norm per channel": (
        "How to read it: per step, the rank correlation between each channel's weight norm and "
        "its gradient norm; above 0 means larger channels receive larger updates (the rich get "
        "richer), which is what spreads the norms apart."
    ),
    "Cosine similarity between channels, sorted by norm": (
        "How to read it: each square compares two channels' weight vectors (red: same "
        "direction, blue: opposite), largest channels top left; large red blocks mean many "
        "channels duplicate each other, so the group has width to spare."
    ),
    "IFM effective width": (
        "How to read it: per group, its width beside the number of distinct channels it really "
        "holds (iterative feature merging); a much shorter second bar means many channels are "
        "redundant, and streamline never narrows an IS group below it."
    ),
}


def figure_caption(title: str) -> str:
    """One sentence on how to read a side-analysis figure of :func:`widthwise.analysis.figures`
    (its title, optionally prefixed with ``"run name: "``); ``""`` for a title it does not know.

    >>> figure_caption("mlp: Sign flips since initialisation").startswith("How to read it")
    True
    >>> figure_caption("something else")
    ''
    """
    if title in _SIDE_CAPTIONS:
        return _SIDE_CAPTIONS[title]
    return _SIDE_CAPTIONS.get(title.partition(": ")[2], "")


_VERDICT_COLOURS = {"IS": "#2b8a3e", "DS": "#c92a2a", "undetermined": "#6c757d"}
_STAGE_COLOURS = ("#e7f0fb", "#fff1db", "#eaf7ea")
_MEANING = {
    "IS": "wide enough",
    "DS": "would gain from more width",
    "undetermined": "no clear pattern",
}


class Report:
    """Verdicts and views for one tracked run.

    Build it with :meth:`from_run` (``tracker.report()`` and ``run.report()`` do that).

    Attributes:
        table: one row per channel group; columns ``group, kind, layers, width, label,
            confidence, stage1_end, stage2_end, peak, peak_at, final_to_peak, retained,
            stable_from, suggestion, snapshots, reason`` (and ``paper_label``,
            ``paper_confidence`` where :mod:`widthwise.verdicts` provides them). Steps are
            training steps as recorded in the run.
        gates: per-gate verdicts for recurrent/attention groups (empty when there are none).
        verdicts: the :class:`widthwise.patterns.Verdict` of each group, by group name.
        name: a label for the run, used in titles.
        plan: a :class:`widthwise.streamline.WidthPlan` for this run's model, or None.
        sections: extra ``(title, html_fragment)`` pairs appended to the HTML page.

    The report is a fixed view: it reads the run's history once, when it is built.

    >>> import torch
    >>> from widthwise.groups import ChannelGroup, Member
    >>> from widthwise.tracker import WidthTracker
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> hidden = ChannelGroup("0", 8, (Member("0.weight", 0, "producer"),
    ...                                Member("2.weight", 1, "consumer")))
    >>> tracker = WidthTracker(model, groups=[hidden])
    >>> for step in range(3):
    ...     ok = tracker.snapshot(step)
    >>> report = tracker.report()
    >>> report.table[["group", "width", "label", "snapshots", "suggestion"]]
      group  width         label  snapshots suggestion
    0     0      8  undetermined          3       keep
    >>> print(report.to_text().splitlines()[0])
    widthwise report: run (3 snapshots, steps 0-2)
    """

    def __init__(
        self,
        run: Any,
        table: pd.DataFrame,
        gates: pd.DataFrame,
        verdicts: dict[str, Any],
        name: str,
        history: pd.DataFrame,
        metrics: pd.DataFrame,
        plan: WidthPlan | None = None,
    ) -> None:
        self.run = run
        self.history = history
        self.metrics = metrics
        self.table = table
        self.gates = gates
        self.verdicts = verdicts
        self.name = name
        self.plan: WidthPlan | None = None
        self.sections: list[tuple[str, str]] = []
        if plan is not None:
            _check_plan(plan, table)
            self.plan = plan

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_run(
        cls, run: RunLike, *, name: str | None = None, plan: WidthPlan | None = None
    ) -> Report:
        """Judge every group of ``run`` (:func:`widthwise.verdicts.judge`) and view the result.

        ``plan``, from ``widthwise.streamline(model, report, example_inputs)`` for the same
        model, adds the new widths to every view (see :meth:`with_plan`).
        """
        # read once: the report describes the run as it was at this moment, even if it grows
        history = run.history(gates=True)
        judged = judge(run, history=history)
        return cls(
            run,
            judged.table,
            judged.gates,
            judged.verdicts,
            name if name is not None else _run_name(run),
            history,
            run.metrics(),
            plan=plan,
        )

    def with_plan(self, plan: WidthPlan | None) -> Report:
        """A copy of this report that shows ``plan``'s widths (None: a copy without a plan).

        The plan must be for this run's model: a group the plan lists with another old width
        than the run recorded raises :class:`ValueError`. Groups the plan does not list are shown
        as "-". The copy starts with the same extra sections (a new list).
        """
        if plan is not None:
            _check_plan(plan, self.table)
        out = copy.copy(self)
        out.sections = list(self.sections)
        out.plan = plan
        return out

    # ------------------------------------------------------------------ terminal
    def to_text(self, width: int = 100, *, legend: bool = True) -> str:
        """The verdict table as aligned plain text, at most ``width`` characters per line.

        ``legend=False`` leaves out the lines that explain the columns (print them once with
        :func:`legend` when showing several reports).
        """
        steps = self._steps()
        span = f"steps {steps[0]}-{steps[-1]}" if len(steps) else "no snapshots yet"
        lines = [_clip(f"widthwise report: {self.name} ({len(steps)} snapshots, {span})", width)]
        if not len(self.table):
            lines += [_clip(line, width) for line in _NO_GROUPS_TEXT]
            return "\n".join(lines)
        has_paper = "paper_label" in self.table.columns
        new = self._new_widths()
        headers = ["group", "width"] + (["new"] if new is not None else []) + ["verdict"]
        headers += (["paper"] if has_paper else []) + ["conf", "dip end", "rise end", "peak"]
        headers += ["at", "end/peak", "kept", "stable", "suggest"]
        left = {"group", "verdict", "paper", "suggest"}
        body = []
        for r in self.table.itertuples():
            cells = [r.group, str(r.width)]
            if new is not None:
                cells.append(_fmt(new.get(r.group)))
            cells.append(r.label)
            if has_paper:
                cells.append(_label_text(getattr(r, "paper_label", None)))
            cells += [
                _fmt(r.confidence, ".2f"),
                _fmt(r.stage1_end),
                _fmt(r.stage2_end),
                _fmt(r.peak, ".3g"),
                _fmt(r.peak_at),
                _fmt(r.final_to_peak, ".2f"),
                _fmt(_get(r, "retained"), ".2f"),
                _fmt(r.stable_from),
                _plan_verb(r, new),
            ]
            body.append(cells)
        widths = [max([len(h)] + [len(row[i]) for row in body]) for i, h in enumerate(headers)]
        excess = sum(widths) + len(widths) - 1 - width
        stages = True
        if excess > 0 and widths[0] - excess < _MIN_GROUP_CHARS:
            # too wide (two 12-character "undetermined" columns): drop the stage details, which
            # the figure shows, before cutting the group names down
            drop = [headers.index(h) for h in _STAGE_DETAILS]
            headers = [h for i, h in enumerate(headers) if i not in drop]
            body = [[c for i, c in enumerate(row) if i not in drop] for row in body]
            widths = [w for i, w in enumerate(widths) if i not in drop]
            excess, stages = sum(widths) + len(widths) - 1 - width, False
        if excess > 0:  # only the group name is shortened; everything else is short already
            widths[0] = max(8, widths[0] - excess)

        def line(cells: list[str]) -> str:
            out = []
            for cell, w, h in zip(cells, widths, headers):
                cell = _clip(cell, w)
                out.append(cell.ljust(w) if h in left else cell.rjust(w))
            return " ".join(out).rstrip()

        lines += [line(headers), line(["-" * w for w in widths])]
        lines += [line(row) for row in body]
        if len(self.gates):
            lines.append("")
            for group, sub in self.gates.groupby("group", sort=False):
                per_gate = ", ".join(f"{r.gate} {r.label}" for r in sub.itertuples())
                lines.append(_clip(f"gates of {group}: {per_gate}", width))
        lines.append("")
        notes = [
            f"{r.group}: {r.reason}"
            for r in self.table.itertuples()
            if r.label == "undetermined" and isinstance(r.reason, str) and r.reason
        ]
        if notes:
            lines += ["why undetermined:"] + [_clip("  " + n, width) for n in notes] + [""]
        if self.plan is not None and not _plan_changes(self.plan):
            labels = set(self.table["label"]) - {"undetermined"}
            why = (
                "no group reads DS: nothing to widen at this budget"
                if labels == {"IS"}
                else "no group reads IS: nothing to narrow at this budget"
                if labels == {"DS"}
                else "no verdict to act on"
            )
            lines += [_clip(f"The plan keeps every width ({why}).", width), ""]
        elif self.plan is not None:
            budget = _budget_text(self.plan, arrow="->")
            lines += [_clip(budget + ". To build it:", width), _clip("  " + HOW_TO_APPLY, width)]
            lines.append("")
        elif self._actionable():
            lines += [
                "by how much (new widths at equal FLOPs, needs the model):",
                _clip("  " + HOW_TO_PLAN + "; print(plan)", width),
                "",
            ]
        if legend:
            shown = _legend(paper=has_paper, plan=new is not None, stages=stages)
            lines += [_clip(text, width) for text in shown]
        return "\n".join(lines).rstrip("\n")

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        counts = self.table["label"].value_counts().to_dict()
        plan = ", with plan" if self.plan is not None else ""
        return f"Report({self.name!r}, groups={len(self.table)}, verdicts={counts}{plan})"

    def _repr_html_(self) -> str:
        """Jupyter: the verdict table (and the plan's widths), compact, without figures."""
        e = html.escape
        steps = self._steps()
        span = f", steps {steps[0]}–{steps[-1]}" if steps else ""
        head = (
            f"<p><b>widthwise report: {e(self.name)}</b> ({len(steps)} snapshots{span}; "
            "<code>report.save_html(path)</code> writes the page with figures)</p>"
        )
        if not len(self.table):
            return f"<div>{head}<p>{e(' '.join(_NO_GROUPS_TEXT))}</p></div>"
        new = self._new_widths()
        has_paper = "paper_label" in self.table.columns
        cols = ["group", "width"] + (["new width"] if new is not None else []) + ["verdict"]
        cols += (["paper's verdict"] if has_paper else []) + ["confidence", "suggestion"]
        rows = []
        for r in self.table.itertuples():
            cells = [e(r.group), str(r.width)]
            if new is not None:
                cells.append(_fmt(new.get(r.group)))
            cells.append(e(r.label))
            if has_paper:
                cells.append(e(_label_text(getattr(r, "paper_label", None))))
            cells += [_fmt(r.confidence, ".2f"), e(self._change(r, new, short=True))]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        th = "".join(f"<th>{e(c)}</th>" for c in cols)
        return f"<div>{head}<table><tr>{th}</tr>{''.join(rows)}</table></div>"

    # ------------------------------------------------------------------ figures
    def figure(self, group: str, *, snapshots: int = 4) -> Figure:
        """A matplotlib Figure for one group: variance with the stages shaded and the verdict,
        mean and max channel norm, the user's logged metrics on the same step axis, and the
        distribution of channel norms (relative to their mean) at up to ``snapshots`` points
        (as dots, one per channel, up to :data:`STRIP_MAX_WIDTH` channels).

        The figure is not registered with pyplot, so it never leaks or pops up a window; show it
        with ``IPython.display.display(fig)`` or write it with ``fig.savefig(path)``.
        """
        from matplotlib.figure import Figure

        if group not in self.verdicts:
            known = ", ".join(self.table["group"])
            raise KeyError(f"no channel group named {group!r}; groups: {known}")
        row = self.table.set_index("group").loc[group]
        verdict = self.verdicts[group]
        history = self.history
        sub = history[(history["group"] == group) & (history["gate"] == "")]
        sub = sub[sub["variance"].notna() | sub["mean"].notna()].sort_values("step")

        # Fixed margins (constrained layout costs more than drawing the figure). 7.2 in wide:
        # on the page (_GROUP_DPI) shown at 640 px on a 700 px screen, 8 pt labels stay ~10 px.
        # The variance, the evidence of the verdict, gets the full width; every legend sits
        # above its panel, under the panel's title, so it never covers a curve.
        fig = Figure(figsize=(7.2, 7.4))
        grid = fig.add_gridspec(
            3,
            2,
            width_ratios=(1.35, 1),
            height_ratios=(1.25, 1, 1),
            left=0.1,
            right=0.985,
            bottom=0.065,
            top=0.87,
            hspace=0.7,
            wspace=0.45,
        )
        ax_var = fig.add_subplot(grid[0, :])
        ax_norm = fig.add_subplot(grid[1, 0], sharex=ax_var)
        ax_met = fig.add_subplot(grid[2, 0], sharex=ax_var)
        ax_dist = fig.add_subplot(grid[1:, 1])
        colour = _VERDICT_COLOURS.get(row["label"], "#333333")
        # the stages and the peak are the paper's shape rule: its label names stage 3
        shape_label = _label_text(row.get("paper_label", row["label"]))
        paper = f"; paper's rule: {shape_label}" if "paper_label" in row.index else ""
        fig.suptitle(
            f"{_mpl_text(group)}  (width {row['width']}): {row['label']}"
            + (f", confidence {row['confidence']:.2f}" if _finite(row["confidence"]) else "")
            + paper,
            color=colour,
            fontsize=12,
            y=0.985,
        )

        steps = sub["step"].to_numpy()
        ax_var.plot(steps, sub["variance"].to_numpy(), color="#1c3d5a", lw=1.4, marker=".", ms=3)
        if len(steps):
            bounds = [steps[0], row["stage1_end"], row["stage2_end"], steps[-1]]
            labels = ("1: dip", "2: rise", "3: " + shape_label)
            for i in range(3):
                lo, hi = bounds[i], bounds[i + 1]
                if _present(lo) and _present(hi) and hi > lo:
                    ax_var.axvspan(lo, hi, color=_STAGE_COLOURS[i], zorder=0, label=labels[i])
            if _present(row["peak_at"]) and _finite(row["peak"]):
                # clip_on=False and headroom: a peak at the top or the last step stays whole
                ax_var.plot(
                    [row["peak_at"]], [row["peak"]], "v", color=colour, ms=8, label="peak",
                    clip_on=False, zorder=5,
                )  # fmt: skip
            if _present(row["stable_from"]):
                ax_var.axvline(row["stable_from"], color=colour, ls="--", lw=1, label="stable from")
            ax_var.margins(x=0.02, y=0.12)
        ax_var.set_ylabel("var(n / mean n)", fontsize=8)
        _panel(ax_var, "spread of channel norms")

        ax_norm.plot(steps, sub["mean"].to_numpy(), label="mean", color="#1971c2")
        ax_norm.plot(steps, sub["max"].to_numpy(), label="max", color="#e8590c")
        ax_norm.set_ylabel("channel norm", fontsize=8)
        _panel(ax_norm, "channel norm")

        self._plot_metrics(ax_met)
        ax_met.set_xlabel("step", fontsize=8)
        self._plot_distribution(ax_dist, group, verdict, snapshots)
        ax_norm.tick_params(labelbottom=False)
        ax_var.set_xlabel("step", fontsize=8)
        for ax in fig.axes:
            ax.tick_params(labelsize=8)
        return fig

    def _plot_metrics(self, ax: Axes) -> None:
        metrics = self.metrics
        metrics = metrics[metrics["step"].notna() & metrics["value"].notna()]
        if not len(metrics):
            ax.text(0.5, 0.5, "no metrics logged", ha="center", va="center", transform=ax.transAxes)
            _panel(ax, "logged metrics")
            return
        names = list(dict.fromkeys(metrics["name"]))
        left = [n for n in names if "loss" in n.lower()] or names[:1]
        rest = [n for n in names if n not in left]
        colours = iter(["#1c3d5a", "#c92a2a", "#2b8a3e", "#9c36b5", "#e8590c", "#1098ad"] * 4)
        handles = []
        for n in left:
            m = metrics[metrics["name"] == n].sort_values("step")
            handles += ax.plot(m["step"], m["value"], label=n, color=next(colours), lw=1.2)
        ax.set_ylabel(", ".join(left) if len(left) < 3 else "loss", fontsize=8)
        if rest:
            twin = ax.twinx()
            for n in rest:
                m = metrics[metrics["name"] == n].sort_values("step")
                handles += twin.plot(
                    m["step"], m["value"], label=n, color=next(colours), lw=1.2, ls="--"
                )
            twin.set_ylabel(", ".join(rest) if len(rest) < 3 else "other metrics", fontsize=8)
        _panel(ax, "logged metrics", handles=handles)

    def _plot_distribution(self, ax: Axes, group: str, verdict: Any, snapshots: int) -> None:
        try:
            steps, norms = self.run.channel_norms(group)
        except (KeyError, LookupError, ValueError):
            steps, norms = np.zeros(0), np.zeros((0, 0))
        norms = np.asarray(norms, dtype=float)
        if norms.ndim != 2 or norms.shape[0] == 0 or norms.shape[1] == 0:
            ax.text(
                0.5,
                0.5,
                "channel norms not stored",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            _panel(ax, "channel norm / mean")
            return
        steps = np.asarray(steps)
        if len(self.history):  # stay within the snapshots the table was built from
            keep = steps <= int(self.history["step"].max())
            steps, norms = steps[keep], norms[keep]
            if not len(steps):
                _panel(ax, "channel norm / mean")
                return
        picks = _pick_snapshots(steps, verdict, snapshots)
        mean = norms.mean(axis=1, keepdims=True)
        rel = norms / np.where(mean > 0, mean, 1)
        colours = ["#74c0fc", "#339af0", "#1864ab", "#0b2e59", "#000000"]
        width = norms.shape[1]
        ax.set_xlabel("channel norm / mean", fontsize=8)
        if width <= STRIP_MAX_WIDTH:
            # one dot per channel, one row per snapshot (latest at the top)
            for j, i in enumerate(picks):
                values = rel[i][np.isfinite(rel[i])]
                ax.plot(
                    values, np.full(len(values), j), "o", ms=7, alpha=0.75,
                    color=colours[min(j, len(colours) - 1)], markeredgecolor="white",
                )  # fmt: skip
            ax.axvline(1.0, color="#adb5bd", lw=0.8, zorder=0)
            ax.set_yticks(range(len(picks)), [f"step {int(steps[i])}" for i in picks])
            ax.set_ylim(-0.6, len(picks) - 0.4)
            ax.margins(x=0.1)
            ax.grid(axis="x", alpha=0.3)
            _panel(ax, f"channel norm / mean ({width} dots)")
            return
        finite = rel[picks][np.isfinite(rel[picks])]
        hi = float(finite.max()) if finite.size else 1.0
        n_bins = int(np.clip(round(2 * math.sqrt(width)), 6, 30))
        bins = np.linspace(0.0, max(hi, 1e-9) * 1.02, n_bins + 1).tolist()
        for j, i in enumerate(picks):
            values = rel[i][np.isfinite(rel[i])]
            ax.hist(
                values,
                bins=bins,
                histtype="step",
                lw=1.5,
                color=colours[min(j, len(colours) - 1)],
                label=f"step {int(steps[i])}",
            )
        ax.set_ylabel("channels", fontsize=8)
        _panel(ax, "channel norm / mean", ncol=2)

    def _steps(self) -> list[int]:
        h = self.history
        return sorted({int(s) for s in h["step"]}) if len(h) else []

    # ------------------------------------------------------------------ HTML
    def add_section(self, title: str, html_fragment: str) -> Report:
        """Append an extra section to the HTML page (the title is escaped; the fragment is
        inserted as given, so it must be trusted, self-contained HTML). Returns ``self``."""
        self.sections.append((str(title), str(html_fragment)))
        return self

    def add_figure(self, title: str, fig: Figure, caption: str | None = None) -> Report:
        """Append a matplotlib Figure as its own section (embedded PNG; title and caption are
        escaped). ``caption=None`` uses :func:`figure_caption` (how to read the paper's side
        analyses; nothing for other titles). Returns ``self``.

        >>> from matplotlib.figure import Figure
        >>> fig = Figure(); _ = fig.subplots().plot([0, 1], [1, 0])
        >>> r = Report.__new__(Report); r.sections = []
        >>> "data:image/png;base64," in r.add_figure("A <b>test</b>", fig).sections[0][1]
        True
        """
        caption = figure_caption(title) if caption is None else caption
        img = (
            f'<img alt="{html.escape(str(title))}" src="data:image/png;base64,{_png_base64(fig)}">'
        )
        note = f"<p class='how'>{html.escape(caption)}</p>" if caption else ""
        return self.add_section(title, f"{note}{img}")

    def to_html(self, *, title: str | None = None) -> str:
        """The whole report as one self-contained HTML document."""
        return render_html([self], title=title)

    def save_html(self, path: str | Path, *, title: str | None = None) -> Path:
        """Write :meth:`to_html` to ``path`` (UTF-8) and return the path."""
        return save_html([self], path, title=title)

    # ------------------------------------------------------------------ plan and wording
    def _new_widths(self) -> dict[str, int] | None:
        if self.plan is None:
            return None
        t = self.plan.table
        return {str(g): int(w) for g, w in zip(t["group"], t["new_width"])}

    def _actionable(self) -> bool:
        return bool(self.table["label"].isin(["IS", "DS"]).any())

    def _change(self, r: Any, new: dict[str, int] | None, *, short: bool = False) -> str:
        """What to do with one group: 'widen 8 → 20', 'narrow', 'keep'."""
        if new is None or r.group not in new:
            return str(r.suggestion)
        old, w = int(r.width), new[r.group]
        if w == old:
            return f"keep {old}"
        verb = "widen" if w > old else "narrow"
        rel = (w - old) / old
        pct = "" if short else f" ({rel:+.1%})" if abs(rel) < 0.1 else f" ({rel:+.0%})"
        return f"{verb} {old} → {w}{pct}"

    def _why(self, r: Any) -> str:
        """The verdict in words: the shape of the group's spread and what it means.

        When the table's ``paper_label`` (the shape rule alone) differs from ``label`` (the
        verdict to act on), the shape is told neutrally and the verdict's own reason follows.
        """
        label = str(r.label)
        peak, at, end = _get(r, "peak"), _get(r, "peak_at"), _get(r, "final_to_peak")
        reason = r.reason if isinstance(r.reason, str) and r.reason else ""
        paper = _get(r, "paper_label")
        paper = paper if isinstance(paper, str) and paper else None
        shape = ""
        if _finite(peak) and _present(at) and _finite(end):
            shape = (
                f"the spread of its channel norms peaked at {float(peak):.3g} (step {int(at)}) "
                f"and ended at {float(end):.0%} of that peak"
            )
        meaning = {
            "DS": "the layer is too narrow and would gain from more width",
            "IS": "it is wide enough and has width to spare",
        }.get(label, "keep its width")
        if paper is not None and paper != label:  # the shape alone says otherwise
            text = (f"{shape[:1].upper()}{shape[1:]}. " if shape else "") + (
                f"The paper's shape rule alone reads {paper}; the verdict is {label}: {meaning}"
            )
            return text + (f" ({reason})." if reason else ".")
        if label not in ("IS", "DS"):
            text = f"neither pattern is clear ({reason or 'no clear pattern'}): keep its width."
            if shape:
                text = f"{shape[:1].upper()}{shape[1:]}; {text}"
            return text[:1].upper() + text[1:]
        if label == "DS":
            told = "fell back, so all its channels grew alike and every one is in use"
        else:
            told = "stayed high, so a few channels carry the layer while the others lag behind"
        text = (shape + ": it " if shape else "its spread ") + f"{told}: {meaning}"
        text = text[:1].upper() + text[1:]
        return text + (f" ({reason})." if reason else ".")


_NO_GROUPS_TEXT = (
    "No channel groups were found in this model, so there is nothing to judge.",
    "widthwise judges groups of channels it can resize together (a layer's outputs and every",
    "weight that reads them); check what it finds with widthwise.find_groups(model, inputs) or",
    "`widthwise groups MODULE:CALLABLE --input-shape ...`; layers it cannot group are named in a",
    "warning when the tracker starts.",
)


def _legend(*, paper: bool, plan: bool, stages: bool) -> tuple[str, ...]:
    # for to_text, whose ``legend`` argument hides the module-level function
    return legend(paper=paper, plan=plan, stages=stages)


# The terminal table drops these (the figure shows them) rather than cut group names shorter
# than _MIN_GROUP_CHARS: with the paper's verdict beside the verdict ("undetermined" twice), a
# 100-column table otherwise left 8 characters of "layers.<script>..." (test_report.py).
_STAGE_DETAILS = ("dip end", "rise end", "end/peak")
_MIN_GROUP_CHARS = 16


# ---------------------------------------------------------------------- HTML
def _html_body(report: Report, anchor: str) -> str:
    e = html.escape
    parts = [f'<section class="run" id="{anchor}">', f"<h2>{e(report.name)}</h2>"]
    steps = report._steps()
    info = [f"{len(steps)} snapshots"] + ([f"steps {steps[0]}–{steps[-1]}"] if steps else [])
    info += [f"{e(k)}: {e(_short(v))}" for k, v in _meta_items(report.run)]
    parts.append(f'<p class="meta">{" · ".join(info)}</p>')
    table = report.table
    if not len(table):
        parts.append(
            "<div class='todo'><h3>Nothing to judge</h3><p>No channel groups were found in "
            "this model, so there is no verdict. widthwise judges <em>channel groups</em>: the "
            "channels it can resize together (a layer's outputs and every weight that reads "
            "them). Check what it finds with <code>widthwise.find_groups(model, "
            "example_inputs)</code> or <code>widthwise groups MODULE:CALLABLE --input-shape "
            "...</code>; layers it cannot group (for example <code>F.linear</code> on a raw "
            "parameter) are named in a warning when the tracker starts.</p></div>"
        )
    else:
        parts.append(_todo(report, anchor))
        parts.append(_summary_table(report, anchor))
        parts.append(_table_legend(report))
    new = report._new_widths()
    for i, row in enumerate(table.itertuples()):
        gid = f"{anchor}-g{i}"
        parts.append(f'<section class="group" id="{gid}">')
        parts.append(
            f"<h3>{e(row.group)} <span class='badge {_css_label(row.label)}'>{e(row.label)}"
            f"</span> <span class='sugg'>{e(report._change(row, new))}</span></h3>"
        )
        parts.append(
            f"<p class='meta'>kind {e(str(row.kind))} · width {row.width} · layers: "
            f"{e(row.layers) or '—'}</p>"
        )
        # the words first; on a wide screen they sit beside the figure (CSS flex-wrap)
        parts.append(f"<div class='ev'><div class='txt'><p class='why'>{e(report._why(row))}</p>")
        if row.snapshots:
            parts.append(f"<p class='how'>{e(GROUP_FIGURE_CAPTION)}</p>")
        gates = report.gates[report.gates["group"] == row.group]
        if len(gates):
            parts.append(_gate_table(gates))
        parts.append("</div>")
        if row.snapshots:
            fig = report.figure(row.group)
            parts.append(
                f'<div class="fig"><img alt="{e(row.group)}: spread of channel norms, norms, '
                f'metrics" src="data:image/png;base64,{_png_base64(fig, dpi=_GROUP_DPI)}"></div>'
            )
        else:
            parts.append("<p>No snapshots recorded for this group yet.</p>")
        parts.append("</div></section>")
    for title, fragment in report.sections:
        parts.append(f'<section class="extra"><h3>{e(title)}</h3>{fragment}</section>')
    parts.append("</section>")
    return "\n".join(parts)


def _todo(report: Report, anchor: str) -> str:
    """The 'what to change' box: one line per group to change, the plan or how to get one.

    With a plan, a group is to change when the plan changes its width (widening first); without
    one, when its verdict is IS or DS.
    """
    e = html.escape
    new = report._new_widths()

    def moves(r: Any) -> int:  # 0 widen, 1 narrow, 2 keep
        if new is not None and r.group in new:
            return 0 if new[r.group] > r.width else 1 if new[r.group] < r.width else 2
        return {"DS": 0, "IS": 1}.get(r.label, 2)

    rows = sorted(enumerate(report.table.itertuples()), key=lambda ir: moves(ir[1]))
    items, keep = [], []
    for i, r in rows:
        link = f"<a href='#{anchor}-g{i}'>{e(r.group)}</a>"
        if moves(r) == 2:
            keep.append(link)
            continue
        conf = f", confidence {r.confidence:.2f}" if _finite(r.confidence) else ""
        items.append(
            f"<li><b>{link}</b>: <b>{e(report._change(r, new))}</b> {_badge(r.label)} "
            f"<span class='muted'>{e(_MEANING.get(r.label, ''))}{conf}</span></li>"
        )
    out = ["<div class='todo'><h3>What to change</h3>"]
    if items:
        out.append(f"<ul>{''.join(items)}</ul>")
    else:
        out.append("<p>Nothing: keep the widths (why: under each group).</p>")
    if keep and items:
        out.append(f"<p>Keep as they are: {', '.join(keep)}.</p>")
    if report.plan is not None and not items:
        out.append("<p class='muted'>The plan keeps every width.</p>")
    elif report.plan is not None:
        out.append(f"<p>{e(_budget_text(report.plan))}. To build the new model:</p>")
        out.append(f"<pre><code>{e(_plan_code(report.plan))}</code></pre>")
    elif items:
        out.append(
            "<p><b>By how much:</b> new widths need the model, which the run file does not "
            "hold. With the model at hand, this computes them for the same FLOPs (it widens "
            "the DS groups, narrows the IS ones, and never below what a group really uses), "
            "and <code>print(plan)</code> shows old → new width per group:</p>"
            f"<pre><code>{e(HOW_TO_PLAN)}\nprint(plan)\n{e(HOW_TO_APPLY)}</code></pre>"
            "<p class='muted'>Pass the plan to the report "
            "(<code>report.with_plan(plan)</code>) to see the new widths on this page.</p>"
        )
    out.append("</div>")
    return "".join(out)


def _plan_changes(plan: Any) -> bool:
    t = plan.table
    return bool((t["new_width"].astype(int) != t["old_width"].astype(int)).any())


def _plan_code(plan: Any) -> str:
    """The lines that make this plan's model (its budget argument; other settings as shown)."""
    b = getattr(plan, "budget", {}) or {}
    kind = str(b.get("kind", "flops"))
    try:
        equal = int(b["target"]) == int(b["original"])
        arg = f'"{kind}"' if equal else f'{int(b["target"])}, budget_kind="{kind}"'
    except (KeyError, TypeError, ValueError):
        arg = f'"{kind}"'
    line = f"plan = widthwise.streamline(model, report, example_inputs, budget={arg})"
    return f"{line}\n{HOW_TO_APPLY}"


def _plan_verb(r: Any, new: dict[str, int] | None) -> str:
    """The suggestion, or with a plan what the plan does: widen, narrow or keep."""
    if new is None or r.group not in new:
        return str(r.suggestion)
    w = new[r.group]
    return "widen" if w > r.width else "narrow" if w < r.width else "keep"


def _budget_text(plan: Any, *, arrow: str = "→") -> str:
    b = plan.budget
    kind = {"flops": "FLOPs", "params": "parameters"}.get(str(b.get("kind")), str(b.get("kind")))
    try:
        equal = int(b["target"]) == int(b["original"])
        what = f"equal {kind}" if equal else f"a budget of {int(b['target']):,} {kind}"
        met = "met" if b.get("met") else "NOT met"
        return (
            f"Widths from the plan for {what}: {int(b['original']):,} {arrow} "
            f"{int(b['achieved']):,} "
            f"{kind} ({met})"
        )
    except (KeyError, TypeError, ValueError):
        return "Widths from the plan"


def _check_plan(plan: Any, table: pd.DataFrame) -> None:
    """A plan must be for this run's model: same group names, same old widths."""
    t = getattr(plan, "table", None)
    if not isinstance(t, pd.DataFrame) or not {"group", "old_width", "new_width"} <= set(t):
        raise TypeError(f"plan must be a widthwise.streamline.WidthPlan, got {type(plan).__name__}")
    width = dict(zip(table["group"], table["width"]))
    unknown = [g for g in t["group"] if g not in width]
    if unknown:
        raise ValueError(f"the plan is for another model: groups {unknown[:3]} are not in the run")
    wrong = [(g, width[g], int(o)) for g, o in zip(t["group"], t["old_width"]) if width[g] != o]
    if wrong:
        g, w, o = wrong[0]
        raise ValueError(
            f"the plan is for another model: group {g!r} is {w} wide in the run, {o} in the plan"
        )


def render_html(reports: Sequence[Report], *, title: str | None = None) -> str:
    """One self-contained HTML page covering several reports (one per run)."""
    e = html.escape
    if title is None:
        title = "widthwise report" + (f": {reports[0].name}" if len(reports) == 1 else "")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    anchors = [f"run{i}" for i in range(len(reports))]
    nav = ""
    if len(reports) > 1:
        links = " · ".join(f'<a href="#{a}">{e(r.name)}</a>' for a, r in zip(anchors, reports))
        nav = f"<nav>Runs: {links}</nav>"
    bodies = "\n".join(_html_body(r, a) for r, a in zip(reports, anchors))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<header><h1>{e(title)}</h1><p class="meta">generated {stamp} by widthwise</p>{nav}</header>
<main>
{_intro(paper=any("paper_label" in r.table.columns for r in reports))}
{bodies}
</main>
</body>
</html>
"""


def save_html(
    reports: Report | Sequence[Report], path: str | Path, *, title: str | None = None
) -> Path:
    """Write one self-contained HTML page for one or several reports; returns the path."""
    if isinstance(reports, Report):
        reports = [reports]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(list(reports), title=title), encoding="utf-8")
    return path


def _intro(*, paper: bool) -> str:
    """The page's own explanation, for a reader who has never seen the paper."""
    if not paper:
        return _INTRO
    return _INTRO.replace("</div>", _INTRO_PAPER + "</div>")


_INTRO_PAPER = """<p>Where a <b>paper's verdict</b> column is shown, it is this shape rule alone; the
<b>verdict</b> weighs the shape together with further evidence from the same run, and is the one
to act on (each group's section says why when the two differ).</p>
"""

_INTRO = f"""<div class="intro">
<h2>How to read this page</h2>
<p>During training, widthwise looked at every <em>channel group</em> of the model (the channels
of a layer that can only be resized together) and measured how far the sizes (weight norms) of
its channels spread apart: the variance of each channel's norm divided by the group's mean norm.
Training first shrinks this spread (stage 1, <em>dip</em>), then makes it grow as some channels
win and get ever larger updates (stage 2, <em>rise</em>), and then one of two things happens
(stage 3):</p>
<ul>
<li><span class="badge v-IS">IS</span> the spread <b>stays high</b>: a few channels carry the
layer and the others lag behind. The layer is <b>wide enough</b> and can be <b>narrowed</b>.</li>
<li><span class="badge v-DS">DS</span> the spread <b>falls back</b>: all channels end up alike,
every one is in use. The layer is <b>too narrow</b> and would gain from being <b>widened</b>.</li>
<li><span class="badge v-undetermined">undetermined</span> neither is clear (too few snapshots,
too noisy, still changing): <b>keep</b> its width.</li>
</ul>
<p>Each run starts with <b>what to change</b>, then a table of all groups, then one section per
group with the evidence. A verdict is evidence about one training run, not a law of the layer:
it is clearest with SGD and a decaying learning rate (Chen, Bu &amp; Yan, NeurIPS 2024, the
channel Matthew effect; the rule and its measured accuracy: docs/verdicts.md). DS means less
than {DS_MAX_RETAINED:.0%} of the stage-2 rise is kept at the end.</p>
</div>"""

_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (key, page header, what it means)
    ("group", "group", "the channel group (its layers are listed in its section)"),
    ("label", "verdict", "IS (wide enough), DS (would gain from width) or undetermined"),
    ("paper", "paper's verdict", "the paper's shape rule alone, for comparison"),
    ("change", "change", "what to do with the width (with a plan: from old to new width)"),
    ("confidence", "confidence", "0 = no evidence either way, 1 = far from the threshold"),
    ("width", "width", "channels today"),
    ("new", "new width", "channels in the plan, for the plan's budget"),
    ("peak", "peak spread", "the highest spread of the channel norms"),
    ("peak_at", "peak at step", "when it peaked"),
    ("final_to_peak", "end / peak", "the spread at the end, as a share of the peak"),
    (
        "retained",
        "rise kept",
        f"share of the stage-2 rise still there at the end (below {DS_MAX_RETAINED:g}: DS)",
    ),
    ("stable_from", "stable from step", "from this step on, the verdict did not change"),
    ("stage1_end", "dip ends", "last step of stage 1, where the spread was lowest"),
    ("stage2_end", "rise ends", "last step of the sharp rise (stage 2)"),
)


def _columns(report: Report) -> list[tuple[str, str, str]]:
    skip = set()
    if report.plan is None:
        skip.add("new")
    if "paper_label" not in report.table.columns:
        skip.add("paper")
    return [c for c in _COLUMNS if c[0] not in skip]


def _summary_table(report: Report, anchor: str) -> str:
    e = html.escape
    cols = _columns(report)
    new = report._new_widths()
    left = {"group", "label", "paper", "change"}
    head = "".join(
        f"<th class='l' title='{e(m)}'>{e(h)}</th>"
        if k in left
        else f"<th title='{e(m)}'>{e(h)}</th>"
        for k, h, m in cols
    )
    rows = []
    for i, r in enumerate(report.table.itertuples()):
        cells = []
        for key, _, _ in cols:
            if key == "group":
                cells.append(f"<td class='l'><a href='#{anchor}-g{i}'>{e(r.group)}</a></td>")
            elif key == "width":
                cells.append(f"<td>{r.width}</td>")
            elif key == "new":
                cells.append(f"<td><b>{_fmt(new.get(r.group) if new else None)}</b></td>")
            elif key == "label":
                cells.append(f"<td class='l'>{_badge(r.label)}</td>")
            elif key == "paper":
                p = _get(r, "paper_label")
                cells.append(f"<td class='l'>{_badge(p) if _present(p) and p else '-'}</td>")
            elif key == "change":
                cells.append(f"<td class='l'>{e(report._change(r, new, short=True))}</td>")
            elif key in ("confidence", "final_to_peak", "retained"):
                cells.append(f"<td>{_fmt(_get(r, key), '.2f')}</td>")
            elif key == "peak":
                cells.append(f"<td>{_fmt(r.peak, '.3g')}</td>")
            else:
                cells.append(f"<td>{_fmt(_get(r, key))}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f"<div class='scroll'><table class='summary'><tr>{head}</tr>{''.join(rows)}</table></div>"
    )


def _table_legend(report: Report) -> str:
    e = html.escape
    items = "".join(f"<dt>{e(h)}</dt><dd>{e(m)}</dd>" for _, h, m in _columns(report))
    return (
        f"<details class='cols'><summary>What the columns mean</summary><dl>{items}</dl></details>"
    )


def _gate_table(gates: pd.DataFrame) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td class='l'>{e(r.gate)}</td><td class='l'>{_badge(r.label)}</td>"
        f"<td>{_fmt(r.confidence, '.2f')}</td><td>{_fmt(r.peak, '.3g')}</td>"
        f"<td>{_fmt(r.peak_at)}</td><td>{_fmt(r.final_to_peak, '.2f')}</td></tr>"
        for r in gates.itertuples()
    )
    return (
        "<p>Per-gate verdicts (the same statistics from each gate's weights alone):</p>"
        "<div class='scroll'><table><tr><th class='l'>gate</th><th class='l'>verdict</th>"
        "<th>confidence</th><th>peak spread</th><th>peak at step</th><th>end / peak</th></tr>"
        f"{rows}</table></div>"
    )


_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#212529;
background:#fafafa;line-height:1.45;overflow-wrap:break-word}
header{background:#1c3d5a;color:#fff;padding:14px 28px}header h1{margin:0;font-size:1.4em}
header .meta{color:#cfd8e3}nav a{color:#fff;margin-right:6px}
main{padding:10px 28px 40px;max-width:1320px}
h2{margin:1.2em 0 .3em}h3{margin:.4em 0}
table{border-collapse:collapse;margin:6px 0;font-size:.9em;background:#fff}
th,td{border:1px solid #dee2e6;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f1f3f5;font-weight:600;white-space:normal;min-width:3.5em}td.l,th.l{text-align:left}
.scroll{overflow-x:auto;max-width:100%}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:.8em;
font-weight:600}
.v-IS{background:#2b8a3e}.v-DS{background:#c92a2a}.v-undetermined{background:#6c757d}
.sugg{font-size:.8em;color:#343a40;font-weight:600;margin-left:4px}
.intro,.todo{background:#fff;border:1px solid #d0ddec;border-left:4px solid #1c3d5a;
border-radius:6px;padding:6px 16px;margin:14px 0}
.intro h2{margin-top:.3em;font-size:1.15em}.intro ul{padding-left:1.2em}
.todo ul{padding-left:1.2em;margin:.4em 0}.todo li{margin:.25em 0}
pre{background:#f1f3f5;padding:8px 10px;border-radius:4px;overflow-x:auto;font-size:.95em}
section.group,section.extra{background:#fff;border:1px solid #e9ecef;border-radius:6px;
padding:8px 16px;margin:18px 0}
img{max-width:100%;height:auto;display:block}
.meta,.muted{color:#6c757d;font-size:.88em}
.ev{display:flex;flex-wrap:wrap;gap:4px 20px;align-items:flex-start}
.ev .txt{flex:1 1 260px;min-width:0}.ev .fig{flex:0 1 864px;min-width:0}
.why{color:#212529}.how{color:#495057;font-size:.88em;font-style:italic}
details.cols{font-size:.85em;color:#495057;margin:4px 0 10px}
details.cols dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:6px 0}
details.cols dt{font-weight:600}details.cols dd{margin:0}
@media (max-width:760px){header{padding:10px 12px}main{padding:6px 10px 30px}
section.group,section.extra,.intro,.todo{padding:6px 10px}
details.cols dl{grid-template-columns:1fr}details.cols dd{margin-bottom:4px}}
"""


# ---------------------------------------------------------------------- helpers
def _panel(ax: Axes, title: str, *, handles: list[Any] | None = None, ncol: int = 5) -> None:
    """Title on the left above the panel, its legend between title and panel: never over a
    curve."""
    if handles is None:
        handles = ax.get_legend_handles_labels()[0]
    rows = math.ceil(len(handles) / ncol) if handles else 0
    ax.set_title(title, fontsize=9, loc="left", pad=4 + 11 * rows)
    if handles:
        ax.legend(
            handles=handles,
            loc="lower left",
            bbox_to_anchor=(0.0, 1.0),
            ncol=min(ncol, len(handles)),
            fontsize=7,
            frameon=False,
            borderaxespad=0.15,
            borderpad=0.0,
            handlelength=1.4,
            columnspacing=0.9,
        )


def _pick_snapshots(steps: np.ndarray, verdict: Any, k: int) -> list[int]:
    """Snapshot indices at the start, the stage boundaries and the end (then evenly spaced)."""
    n = len(steps)
    if n <= k:
        return list(range(n))
    wanted = [steps[0], steps[-1]]
    for attr in ("stage1_end", "stage2_end"):
        v = getattr(verdict, attr, None) if verdict is not None else None
        if _present(v):
            wanted.append(v)
    picks = {int(np.argmin(np.abs(steps - w))) for w in wanted}
    for i in np.linspace(0, n - 1, k).round().astype(int):
        if len(picks) >= k:
            break
        picks.add(int(i))
    return sorted(picks)[:k] if len(picks) > k else sorted(picks)


def _png_base64(fig: Figure, *, dpi: int = 100) -> str:
    """``fig`` as a base64 PNG for a ``data:`` URL; the figure is released afterwards.

    The one PNG encoder of the HTML views (the report and the CKA section use it).
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt = sys.modules.get("matplotlib.pyplot")
    number = getattr(fig, "number", None)  # set only on figures pyplot manages
    if plt is not None and number is not None and plt.fignum_exists(number):
        plt.close(fig)  # a pyplot figure stays registered until closed
    else:
        fig.clear()  # Figure objects made without pyplot are freed with their last reference
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _badge(label: Any) -> str:
    return f"<span class='badge {_css_label(str(label))}'>{html.escape(str(label))}</span>"


def _css_label(label: str) -> str:
    return "v-" + (label if label in _VERDICT_COLOURS else "undetermined")


def _label_text(v: Any) -> str:
    return str(v) if _present(v) and str(v) else "-"


def _get(row: Any, name: str) -> Any:
    return getattr(row, name, None)


def _run_name(run: Any) -> str:
    """``meta={"name": ...}`` given to the tracker, else the run file's stem, else "run"."""
    meta = dict(getattr(run, "meta", {}) or {})
    user: dict[str, Any] = meta["user"] if isinstance(meta.get("user"), dict) else {}
    name = user.get("name") or meta.get("name")
    if not name and getattr(run, "path", None):
        name = Path(run.path).stem
    return str(name or "run")


def _meta_items(run: Any) -> list[tuple[str, str]]:
    """A few readable facts from the run's metadata (model class, size, mode, user meta)."""
    meta = dict(getattr(run, "meta", {}) or {})
    items = []
    model = meta.get("model")
    if isinstance(model, dict):
        if model.get("class"):
            items.append(("model", str(model["class"]).rsplit(".", 1)[-1]))
        if model.get("n_parameters") is not None:
            items.append(("parameters", f"{int(model['n_parameters']):,}"))
    if meta.get("mode"):
        items.append(("norm", str(meta["mode"])))
    user: dict[str, Any] = meta["user"] if isinstance(meta.get("user"), dict) else {}
    items += [(str(k), str(v)) for k, v in user.items() if k != "name"]
    return items


def _fmt(v: Any, spec: str = "d") -> str:
    if not _finite(v):
        return "-"
    return format(int(v), "d") if spec == "d" else format(float(v), spec)


def _mpl_text(text: str) -> str:
    """Escape ``$`` so that a module name is never parsed as mathtext."""
    return text.replace("$", r"\$")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "~"


def _short(v: Any, limit: int = 80) -> str:
    s = str(v)
    return s if len(s) <= limit else s[: limit - 1] + "…"
