"""Per-group verdicts for a tracked run: a table, a terminal view, figures and one HTML page.

:class:`Report` reads a run (``widthwise.open_run(path)`` or a live ``WidthTracker``), runs
:func:`widthwise.patterns.classify` on each group's weight-norm variance series and keeps the
result as a plain :class:`pandas.DataFrame` (``report.table``). Everything else is a view of that
table and of the run: ``print(report)``, ``report.figure(group)`` (a matplotlib Figure) and
``report.save_html(path)``, a single self-contained file (figures inlined as base64 PNG, inline
CSS, no scripts, no external URL) that opens offline.

The suggestion follows the paper's reading of the three-stage curve: a group whose variance rises
and then falls back (DS) would gain from more width, one whose variance stays high (IS) has width
to spare, and an undetermined group is left as it is. The verdict is evidence, not proof: see
``docs/verdicts.md`` for what it got right and wrong in our measurements.

Example:
    >>> import widthwise
    >>> report = widthwise.open_run("run.sqlite").report()      # doctest: +SKIP
    >>> print(report)                                           # doctest: +SKIP
    >>> report.save_html("report.html")                         # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from widthwise.patterns import DS_MAX_RETAINED
from widthwise.verdicts import (
    RunLike,
    _finite,
    _present,
    judge,
)


def legend() -> tuple[str, ...]:
    """What the verdicts and the terminal table's columns mean (lines under 100 characters)."""
    return (
        "IS: variance rises and stays high: wide enough, can narrow.  DS: variance rises, then",
        "falls back low: would gain from width.  undetermined: neither is clear: keep.",
        "dip end / rise end: last step of stage 1 / 2.  at: step of the peak.  end/peak: final",
        f"level / peak.  kept: share of the rise kept at the end (< {DS_MAX_RETAINED:g} reads DS).",
        "stable: step from which the early verdict no longer changed.",
    )


_VERDICT_COLOURS = {"IS": "#2b8a3e", "DS": "#c92a2a", "undetermined": "#6c757d"}
_STAGE_COLOURS = ("#e7f0fb", "#fff1db", "#eaf7ea")


class Report:
    """Verdicts and views for one tracked run.

    Build it with :meth:`from_run` (``tracker.report()`` and ``run.report()`` do that).

    Attributes:
        table: one row per channel group; columns ``group, kind, layers, width, label,
            confidence, stage1_end, stage2_end, peak, peak_at, final_to_peak, stable_from,
            suggestion, snapshots, reason``. Steps are training steps as recorded in the run.
        gates: per-gate verdicts for recurrent/attention groups (empty when there are none).
        verdicts: the :class:`widthwise.patterns.Verdict` of each group, by group name.
        name: a label for the run, used in titles.
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
    ) -> None:
        self.run = run
        self.history = history
        self.metrics = metrics
        self.table = table
        self.gates = gates
        self.verdicts = verdicts
        self.name = name
        self.sections: list[tuple[str, str]] = []

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_run(cls, run: RunLike, *, name: str | None = None) -> Report:
        """Judge every group of ``run`` (:func:`widthwise.verdicts.judge`) and view the result."""
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
        )

    # ------------------------------------------------------------------ terminal
    def to_text(self, width: int = 100) -> str:
        """The verdict table as aligned plain text, at most ``width`` characters per line."""
        steps = self._steps()
        span = f"steps {steps[0]}-{steps[-1]}" if len(steps) else "no snapshots yet"
        lines = [_clip(f"widthwise report: {self.name} ({len(steps)} snapshots, {span})", width)]
        headers = ["group", "width", "verdict", "conf", "dip end", "rise end", "peak", "at"]
        headers += ["end/peak", "kept", "stable", "suggest"]
        right = {1, 3, 4, 5, 6, 7, 8, 9, 10}
        body = [
            [
                r.group,
                str(r.width),
                r.label,
                _fmt(r.confidence, ".2f"),
                _fmt(r.stage1_end),
                _fmt(r.stage2_end),
                _fmt(r.peak, ".3g"),
                _fmt(r.peak_at),
                _fmt(r.final_to_peak, ".2f"),
                _fmt(r.retained, ".2f"),
                _fmt(r.stable_from),
                r.suggestion,
            ]
            for r in self.table.itertuples()
        ]
        widths = [max([len(h)] + [len(row[i]) for row in body]) for i, h in enumerate(headers)]
        excess = sum(widths) + len(widths) - 1 - width
        if excess > 0:  # only the group name is shortened; everything else is short already
            widths[0] = max(8, widths[0] - excess)

        def line(cells: list[str]) -> str:
            out = []
            for i, (cell, w) in enumerate(zip(cells, widths)):
                cell = _clip(cell, w)
                out.append(cell.rjust(w) if i in right else cell.ljust(w))
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
        lines += [_clip(text, width) for text in legend()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        counts = self.table["label"].value_counts().to_dict()
        return f"Report({self.name!r}, groups={len(self.table)}, verdicts={counts})"

    # ------------------------------------------------------------------ figures
    def figure(self, group: str, *, snapshots: int = 4):
        """A matplotlib Figure for one group: variance with the stages shaded and the verdict,
        mean and max channel norm, the user's logged metrics on the same step axis, and the
        distribution of channel norms (relative to their mean) at up to ``snapshots`` points.

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

        # fixed margins: constrained layout costs more than drawing the figure itself
        fig = Figure(figsize=(11, 7.2))
        grid = fig.add_gridspec(
            3,
            2,
            width_ratios=(1.7, 1),
            left=0.07,
            right=0.985,
            bottom=0.07,
            top=0.9,
            hspace=0.32,
            wspace=0.28,
        )
        ax_var = fig.add_subplot(grid[0, 0])
        ax_norm = fig.add_subplot(grid[1, 0], sharex=ax_var)
        ax_met = fig.add_subplot(grid[2, 0], sharex=ax_var)
        ax_dist = fig.add_subplot(grid[:, 1])
        colour = _VERDICT_COLOURS.get(row["label"], "#333333")
        fig.suptitle(
            f"{_mpl_text(group)}  (width {row['width']}): {row['label']}"
            + (f", confidence {row['confidence']:.2f}" if _finite(row["confidence"]) else ""),
            color=colour,
            fontsize=12,
        )

        steps = sub["step"].to_numpy()
        ax_var.plot(steps, sub["variance"].to_numpy(), color="#1c3d5a", lw=1.6, marker=".")
        if len(steps):
            bounds = [steps[0], row["stage1_end"], row["stage2_end"], steps[-1]]
            labels = ("1: dip", "2: rise", "3: " + row["label"])
            for i in range(3):
                lo, hi = bounds[i], bounds[i + 1]
                if _present(lo) and _present(hi) and hi > lo:
                    ax_var.axvspan(lo, hi, color=_STAGE_COLOURS[i], zorder=0, label=labels[i])
            if _present(row["peak_at"]) and _finite(row["peak"]):
                ax_var.plot([row["peak_at"]], [row["peak"]], "v", color=colour, ms=9, label="peak")
            if _present(row["stable_from"]):
                ax_var.axvline(
                    row["stable_from"], color=colour, ls="--", lw=1, label="verdict stable from"
                )
            if ax_var.get_legend_handles_labels()[0]:
                ax_var.legend(loc="best", fontsize=7, framealpha=0.8)
        ax_var.set_ylabel("var(n / mean n)")
        ax_var.set_title("weight-norm variance", fontsize=9, loc="left")

        ax_norm.plot(steps, sub["mean"].to_numpy(), label="mean", color="#1971c2")
        ax_norm.plot(steps, sub["max"].to_numpy(), label="max", color="#e8590c")
        ax_norm.set_ylabel("channel norm")
        ax_norm.set_title("mean and max channel norm", fontsize=9, loc="left")
        ax_norm.legend(loc="best", fontsize=7)

        self._plot_metrics(ax_met)
        ax_met.set_xlabel("step")
        self._plot_distribution(ax_dist, group, verdict, snapshots)
        for ax in (ax_var, ax_norm):
            ax.tick_params(labelbottom=False)
        return fig

    def _plot_metrics(self, ax) -> None:
        metrics = self.metrics
        metrics = metrics[metrics["step"].notna() & metrics["value"].notna()]
        if not len(metrics):
            ax.text(0.5, 0.5, "no metrics logged", ha="center", va="center", transform=ax.transAxes)
            ax.set_title("logged metrics", fontsize=9, loc="left")
            return
        names = list(dict.fromkeys(metrics["name"]))
        left = [n for n in names if "loss" in n.lower()] or names[:1]
        rest = [n for n in names if n not in left]
        colours = iter(["#1c3d5a", "#c92a2a", "#2b8a3e", "#9c36b5", "#e8590c", "#1098ad"] * 4)
        handles = []
        for n in left:
            m = metrics[metrics["name"] == n].sort_values("step")
            handles += ax.plot(m["step"], m["value"], label=n, color=next(colours), lw=1.2)
        ax.set_ylabel(", ".join(left) if len(left) < 3 else "loss")
        if rest:
            twin = ax.twinx()
            for n in rest:
                m = metrics[metrics["name"] == n].sort_values("step")
                handles += twin.plot(
                    m["step"], m["value"], label=n, color=next(colours), lw=1.2, ls="--"
                )
            twin.set_ylabel(", ".join(rest) if len(rest) < 3 else "other metrics")
        ax.legend(handles=handles, loc="best", fontsize=7)
        ax.set_title("logged metrics", fontsize=9, loc="left")

    def _plot_distribution(self, ax, group: str, verdict: Any, snapshots: int) -> None:
        ax.set_title("channel norms / mean, at snapshots", fontsize=9, loc="left")
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
            return
        steps = np.asarray(steps)
        if len(self.history):  # stay within the snapshots the table was built from
            keep = steps <= int(self.history["step"].max())
            steps, norms = steps[keep], norms[keep]
            if not len(steps):
                return
        picks = _pick_snapshots(steps, verdict, snapshots)
        rel = norms / np.where(
            norms.mean(axis=1, keepdims=True) > 0, norms.mean(1, keepdims=True), 1
        )
        finite = rel[picks][np.isfinite(rel[picks])]
        hi = float(finite.max()) if finite.size else 1.0
        n_bins = int(np.clip(round(2 * math.sqrt(norms.shape[1])), 6, 30))
        bins = np.linspace(0.0, max(hi, 1e-9) * 1.02, n_bins + 1)
        cmap_colours = ["#74c0fc", "#4dabf7", "#1971c2", "#0b3d91", "#000000"]
        for j, i in enumerate(picks):
            values = rel[i][np.isfinite(rel[i])]
            ax.hist(
                values,
                bins=bins,
                histtype="step",
                lw=1.6,
                color=cmap_colours[min(j, len(cmap_colours) - 1)],
                label=f"step {int(steps[i])}",
            )
        ax.set_xlabel("n_i / mean(n)")
        ax.set_ylabel("channels")
        ax.legend(loc="best", fontsize=7)

    def _steps(self) -> list[int]:
        h = self.history
        return sorted({int(s) for s in h["step"]}) if len(h) else []

    # ------------------------------------------------------------------ HTML
    def add_section(self, title: str, html_fragment: str) -> Report:
        """Append an extra section to the HTML page (the title is escaped; the fragment is
        inserted as given, so it must be trusted, self-contained HTML). Returns ``self``."""
        self.sections.append((str(title), str(html_fragment)))
        return self

    def add_figure(self, title: str, fig: Any, caption: str = "") -> Report:
        """Append a matplotlib Figure as its own section (embedded PNG; title and caption are
        escaped). Returns ``self``.

        >>> from matplotlib.figure import Figure
        >>> fig = Figure(); _ = fig.subplots().plot([0, 1], [1, 0])
        >>> r = Report.__new__(Report); r.sections = []
        >>> "data:image/png;base64," in r.add_figure("A <b>test</b>", fig).sections[0][1]
        True
        """
        img = (
            f'<img alt="{html.escape(str(title))}" src="data:image/png;base64,{_png_base64(fig)}">'
        )
        note = f"<p>{html.escape(caption)}</p>" if caption else ""
        return self.add_section(title, f"{note}{img}")

    def to_html(self, *, title: str | None = None) -> str:
        """The whole report as one self-contained HTML document."""
        return render_html([self], title=title)

    def save_html(self, path: str | Path, *, title: str | None = None) -> Path:
        """Write :meth:`to_html` to ``path`` (UTF-8) and return the path."""
        return save_html([self], path, title=title)

    def _html_body(self, anchor: str) -> str:
        e = html.escape
        parts = [f'<section class="run" id="{anchor}">', f"<h2>{e(self.name)}</h2>"]
        steps = self._steps()
        info = [f"{len(steps)} snapshots"] + ([f"steps {steps[0]}–{steps[-1]}"] if steps else [])
        info += [f"{e(k)}: {e(_short(v))}" for k, v in _meta_items(self.run)]
        parts.append(f'<p class="meta">{" · ".join(info)}</p>')
        parts.append(_summary_table(self.table, anchor))
        for i, row in enumerate(self.table.itertuples()):
            gid = f"{anchor}-g{i}"
            parts.append(f'<section class="group" id="{gid}">')
            parts.append(
                f"<h3>{e(row.group)} <span class='badge {_css_label(row.label)}'>"
                f"{e(row.label)}</span> <span class='sugg'>suggestion: {e(row.suggestion)}"
                "</span></h3>"
            )
            parts.append(
                f"<p class='meta'>kind {e(str(row.kind))} · width {row.width} · layers: "
                f"{e(row.layers) or '—'}</p>"
            )
            if isinstance(row.reason, str) and row.reason:
                parts.append(f"<p class='reason'>{e(row.reason)}</p>")
            if row.snapshots:
                fig = self.figure(row.group)
                parts.append(
                    f'<img alt="{e(row.group)}: variance, norms, metrics" '
                    f'src="data:image/png;base64,{_png_base64(fig)}">'
                )
            else:
                parts.append("<p>No snapshots recorded for this group yet.</p>")
            gates = self.gates[self.gates["group"] == row.group]
            if len(gates):
                parts.append(_gate_table(gates))
            parts.append("</section>")
        for title, fragment in self.sections:
            parts.append(f'<section class="extra"><h3>{e(title)}</h3>{fragment}</section>')
        parts.append("</section>")
        return "\n".join(parts)


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
    legend_html = f"<p class='legend'>{e(' '.join(legend()))}</p>"
    bodies = "\n".join(r._html_body(a) for r, a in zip(reports, anchors))
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
{legend_html}
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


# ---------------------------------------------------------------------- helpers
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#212529;
background:#fafafa}
header{background:#1c3d5a;color:#fff;padding:14px 28px}header h1{margin:0;font-size:1.4em}
header .meta{color:#cfd8e3}nav a{color:#fff;margin-right:6px}
main{padding:10px 28px 40px;max-width:1200px}
table{border-collapse:collapse;margin:10px 0;font-size:.9em;background:#fff}
th,td{border:1px solid #dee2e6;padding:4px 8px;text-align:right}
th{background:#f1f3f5}td.l,th.l{text-align:left}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:.8em}
.v-IS{background:#2b8a3e}.v-DS{background:#c92a2a}.v-undetermined{background:#6c757d}
.sugg{font-size:.75em;color:#495057;font-weight:normal}
section.group{background:#fff;border:1px solid #e9ecef;border-radius:6px;padding:8px 16px;
margin:18px 0}
section.extra{background:#fff;border:1px solid #e9ecef;border-radius:6px;padding:8px 16px;
margin:18px 0}
img{max-width:100%;height:auto}.meta{color:#6c757d;font-size:.85em}
.reason{font-style:italic;color:#495057}.legend{font-size:.85em;color:#495057}
"""


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


def _summary_table(table: pd.DataFrame, anchor: str) -> str:
    e = html.escape
    head = (
        "<tr><th class='l'>group</th><th>width</th><th class='l'>verdict</th><th>confidence</th>"
        "<th>stage 1 end</th><th>stage 2 end</th><th>peak</th><th>peak at</th>"
        "<th>final / peak</th><th>verdict stable from</th><th class='l'>suggestion</th></tr>"
    )
    rows = []
    for i, r in enumerate(table.itertuples()):
        rows.append(
            f"<tr><td class='l'><a href='#{anchor}-g{i}'>{e(r.group)}</a></td><td>{r.width}</td>"
            f"<td class='l'><span class='badge {_css_label(r.label)}'>{e(r.label)}</span></td>"
            f"<td>{_fmt(r.confidence, '.2f')}</td><td>{_fmt(r.stage1_end)}</td>"
            f"<td>{_fmt(r.stage2_end)}</td><td>{_fmt(r.peak, '.3g')}</td>"
            f"<td>{_fmt(r.peak_at)}</td><td>{_fmt(r.final_to_peak, '.2f')}</td>"
            f"<td>{_fmt(r.stable_from)}</td><td class='l'>{e(r.suggestion)}</td></tr>"
        )
    return f"<table class='summary'>{head}{''.join(rows)}</table>"


def _gate_table(gates: pd.DataFrame) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td class='l'>{e(r.gate)}</td>"
        f"<td class='l'><span class='badge {_css_label(r.label)}'>{e(r.label)}</span></td>"
        f"<td>{_fmt(r.confidence, '.2f')}</td><td>{_fmt(r.peak, '.3g')}</td>"
        f"<td>{_fmt(r.peak_at)}</td><td>{_fmt(r.final_to_peak, '.2f')}</td></tr>"
        for r in gates.itertuples()
    )
    return (
        "<p>Per-gate verdicts (same statistics from each gate's weights alone):</p>"
        "<table><tr><th class='l'>gate</th><th class='l'>verdict</th><th>confidence</th>"
        f"<th>peak</th><th>peak at</th><th>final / peak</th></tr>{rows}</table>"
    )


def _png_base64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    fig.clear()  # Figure objects made without pyplot are freed with their last reference
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _css_label(label: str) -> str:
    return "v-" + (label if label in _VERDICT_COLOURS else "undetermined")


def _run_name(run: Any) -> str:
    """``meta={"name": ...}`` given to the tracker, else the run file's stem, else "run"."""
    meta = dict(getattr(run, "meta", {}) or {})
    user = meta.get("user") if isinstance(meta.get("user"), dict) else {}
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
    user = meta.get("user") if isinstance(meta.get("user"), dict) else {}
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
