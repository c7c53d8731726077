"""Report: verdict table, terminal view, figures and the self-contained HTML page, on real runs."""

from __future__ import annotations

import html
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from widthwise.patterns import classify, stable_from
from widthwise.report import Report, save_html
from widthwise.store import open_run
from widthwise.tracker import WidthTracker

ODD = "<script>alert(1)</script>"
QUOTE = "b&\"q'"


class OddNames(nn.Module):
    """An MLP whose module names need HTML escaping (model names can contain anything)."""

    def __init__(self, hidden: int = 16, bottleneck: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleDict(
            {
                ODD: nn.Linear(6, hidden),
                QUOTE: nn.Linear(hidden, bottleneck),
                "out": nn.Linear(bottleneck, 3),
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers.values()):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class TinyGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(6, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


def train_tracked(
    store=None,
    *,
    model: nn.Module | None = None,
    steps: int = 60,
    every: int = 2,
    keep_channel_norms: bool = True,
    seed: int = 0,
    sequence: bool = False,
) -> WidthTracker:
    """A real tracked training run on a small synthetic 3-class problem (about a second)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = model if model is not None else OddNames()
    x = torch.randn(256, 5, 6, generator=gen) if sequence else torch.randn(256, 6, generator=gen)
    flat = x.mean(1) if sequence else x
    y = (flat[:, :3].sum(1) > 0).long() + (flat[:, 3] > 0.5).long()
    tracker = WidthTracker(
        model, x[:2], store, keep_channel_norms=keep_channel_norms, meta={"name": "tiny"}
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    for step in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % every == 0:
            tracker.snapshot(step, epoch=step // 20, metrics={"loss": loss.item()})
        if step % 10 == 0:
            with torch.no_grad():
                acc = (model(x).argmax(1) == y).float().mean().item()
            tracker.log_metrics({"accuracy": acc}, step=step)
    return tracker


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train faster on one thread (and do not fight parallel test workers)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tracker(one_thread) -> WidthTracker:
    return train_tracked()


@pytest.fixture(scope="module")
def report(tracker) -> Report:
    return tracker.report()


def series_by_loops(history: pd.DataFrame, group: str, gate: str = ""):
    """Reference: the group's finite variance series in step order, with explicit loops."""
    points = []
    for row in history.to_dict("records"):
        if row["group"] == group and row["gate"] == gate and np.isfinite(row["variance"]):
            points.append((int(row["step"]), float(row["variance"])))
    points.sort()
    return np.array([p[0] for p in points]), np.array([p[1] for p in points])


def same(a, b) -> bool:
    if a is None or a is pd.NA or (isinstance(a, float) and np.isnan(a)):
        return b is None or b is pd.NA or (isinstance(b, float) and np.isnan(b))
    return float(a) == pytest.approx(float(b))


def test_table_has_one_row_per_group_with_the_classifier_verdict(tracker, report):
    table = report.table
    for col in ["group", "layers", "width", "label", "confidence", "stage1_end", "stage2_end"]:
        assert col in table.columns
    for col in ["peak", "peak_at", "final_to_peak", "stable_from", "suggestion"]:
        assert col in table.columns
    assert list(table["group"]) == [g.name for g in tracker.groups]
    assert list(table["width"]) == [g.width for g in tracker.groups]
    history = tracker.history()
    suggestion = {"DS": "widen", "IS": "narrow", "undetermined": "keep"}
    for row, group in zip(table.to_dict("records"), tracker.groups):
        steps, values = series_by_loops(history, group.name)
        expected = classify(values, steps)
        # the paper's shape verdict: "label" until verdicts.py adds its evidence-based verdict
        # beside it, then "paper_label" (the columns below describe the shape either way)
        assert row.get("paper_label", row["label"]) == expected.label
        conf = row.get("paper_confidence", row["confidence"])
        assert conf == pytest.approx(expected.confidence)
        assert row["snapshots"] == len(values) == 30
        for field in ("stage1_end", "stage2_end", "peak", "peak_at", "final_to_peak"):
            want = getattr(expected, field)
            want = int(want) if field.endswith(("_end", "_at")) and want is not None else want
            assert same(row[field], want), field
        s = stable_from(values, steps)
        assert same(row["stable_from"], None if s is None else int(s))
        assert row["suggestion"] == suggestion[row["label"]]
        assert row["layers"] == ", ".join(group.layers)


def test_gated_groups_get_per_gate_verdicts():
    tracker = train_tracked(model=TinyGRU(), sequence=True, steps=40)
    report = tracker.report()
    hidden = [g for g in tracker.groups if g.gates]
    assert hidden, "the GRU's hidden group should have gates"
    history = tracker.history(gates=True)
    for g in hidden:
        rows = report.gates[report.gates["group"] == g.name]
        assert list(rows["gate"]) == list(g.gates)
        for row in rows.to_dict("records"):
            steps, values = series_by_loops(history, g.name, row["gate"])
            assert row["label"] == classify(values, steps).label
    # the whole-group verdict comes from the gate == "" series only
    steps, values = series_by_loops(history, hidden[0].name)
    whole = report.table.set_index("group").loc[hidden[0].name]
    assert whole.get("paper_label", whole["label"]) == classify(values, steps).label
    assert "gates of rnn.l0 (hidden): r " in str(report)


def test_terminal_table_is_aligned_and_fits_100_columns(report):
    text = str(report)
    lines = text.splitlines()
    assert all(len(line) <= 100 for line in lines), max(lines, key=len)
    header = next(i for i, line in enumerate(lines) if line.startswith("group"))
    column = lines[header].index("verdict")
    body = lines[header + 2 : header + 2 + len(report.table)]
    for line, row in zip(body, report.table.itertuples()):
        assert line[column:].startswith(row.label)
        assert line.startswith(row.group[:10])
        assert line.rstrip().endswith(row.suggestion)
    assert any(line.startswith("stable: ") for line in lines)  # the legend


def test_long_group_names_are_shortened_not_wrapped():
    tracker = train_tracked(steps=20)
    report = tracker.report()
    long_name = "encoder." + "very_long_module_name." * 5 + "proj"
    report.table.loc[0, "group"] = long_name
    lines = report.to_text(width=100).splitlines()
    assert all(len(line) <= 100 for line in lines)
    assert any(line.startswith("encoder.very_long") and "~" in line for line in lines)


def test_figure_shows_the_recorded_series_and_leaks_nothing(tracker, report):
    import matplotlib.pyplot as plt

    group = tracker.groups[1].name
    fig = report.figure(group)
    assert len(fig.axes) >= 4
    steps, values = series_by_loops(tracker.history(), group)
    line = fig.axes[0].get_lines()[0]
    np.testing.assert_array_equal(line.get_xdata(), steps)
    np.testing.assert_allclose(line.get_ydata(), values)
    assert report.table.set_index("group").loc[group, "label"] in fig.texts[0].get_text()
    # the metrics panel carries both logged metrics on the same step axis
    labels = {h.get_label() for ax in fig.axes for h in ax.get_lines()}
    assert {"loss", "accuracy", "mean", "max"} <= labels
    assert plt.get_fignums() == []
    with pytest.raises(KeyError, match="no channel group"):
        report.figure("nope")


def test_figure_without_stored_channel_norms_says_so():
    report = train_tracked(steps=20, keep_channel_norms=False).report()
    fig = report.figure(report.table["group"][0])
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "channel norms not stored" in texts


def test_html_is_self_contained_and_escapes_model_names(tmp_path, tracker, report):
    report.add_section("extra <b>", "<p id='extra'>from another module</p>")
    try:
        path = report.save_html(tmp_path / "sub" / "r.html")
    finally:
        report.sections.clear()
    page = path.read_text(encoding="utf-8")
    # every image is inline, one figure per group, no external URL anywhere
    sources = re.findall(r"""\bsrc\s*=\s*["']([^"']*)""", page)
    assert len(sources) == len(tracker.groups)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert all(h.startswith("#") for h in re.findall(r"""\bhref\s*=\s*["']([^"']*)""", page))
    assert not re.search(r"(?i)(https?:|//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\()", page)
    # names are escaped: no markup from the model survives
    assert ODD not in page and html.escape(ODD) in page
    assert QUOTE not in page and html.escape(QUOTE) in page
    assert page.count("<script") == 0
    # extra sections: title escaped, fragment as given
    assert "extra &lt;b&gt;" in page and "<p id='extra'>from another module</p>" in page


def test_report_of_a_run_still_being_written(tmp_path):
    path = tmp_path / "live.wwrun"
    tracker = train_tracked(path, steps=20)
    first = open_run(path).report()
    assert set(first.table["snapshots"]) == {10}
    model = tracker.model
    for step in range(20, 30):  # the writer goes on; a new report sees the new snapshots
        model.zero_grad()
        tracker.snapshot(step)
    assert set(open_run(path).report().table["snapshots"]) == {20}
    assert set(first.table["snapshots"]) == {10}  # a report is a fixed view
    tracker.close()


def test_empty_run_gives_undetermined_rows_and_a_page(tmp_path):
    model = OddNames()
    tracker = WidthTracker(model, torch.randn(2, 6))
    report = tracker.report()
    assert (report.table["label"] == "undetermined").all()
    assert (report.table["suggestion"] == "keep").all()
    assert (report.table["snapshots"] == 0).all()
    assert "no snapshots yet" in str(report)
    page = report.save_html(tmp_path / "empty.html").read_text()
    assert "No snapshots recorded" in page and "<img" not in page


def test_one_page_for_several_runs(tmp_path, tracker):
    a = tracker.report(name="first")
    b = tracker.report(name="second")
    page = save_html([a, b], tmp_path / "both.html", title="two").read_text()
    assert page.count("<img") == len(a.table) + len(b.table)
    assert '<a href="#run0">first</a>' in page and '<a href="#run1">second</a>' in page


# ---------------------------------------------------------------------- the plan: by how much
def forced_plan(tracker: WidthTracker, report: Report, labels: dict[str, str]):
    """A real streamline plan for the tracked model, from verdicts with the given labels."""
    from widthwise.streamline import streamline

    verdicts = report.table.copy()
    verdicts["label"] = [labels[g] for g in verdicts["group"]]
    verdicts["confidence"] = 1.0
    example = torch.randn(2, 6)
    with warnings.catch_warnings():  # a 4-wide toy cannot always meet the budget exactly
        warnings.simplefilter("ignore", UserWarning)
        return streamline(
            tracker.model, verdicts, example, budget="flops", floor="none", min_width=1
        )


def text_rows(text: str, n: int) -> list[dict[str, str]]:
    """The body of ``to_text``'s table, one ``{header: cell}`` per row (no cell has a space;
    two headers do)."""
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("group"))
    names = lines[i].replace("dip end", "dip_end").replace("rise end", "rise_end").split()
    rows = [line.split() for line in lines[i + 2 : i + 2 + n]]
    assert all(len(cells) == len(names) for cells in rows), (names, rows)
    return [dict(zip(names, cells)) for cells in rows]


def forced(report: Report, labels: dict[str, str]) -> Report:
    """A copy of ``report`` whose verdicts are ``labels`` (whatever the verdict rule made of
    the tiny run), for tests of how verdicts are shown."""
    out = report.with_plan(report.plan)
    suggestion = {"DS": "widen", "IS": "narrow", "undetermined": "keep"}
    table = report.table.copy()
    table["label"] = [labels[g] for g in table["group"]]
    table["suggestion"] = [suggestion[v] for v in table["label"]]
    table["confidence"] = 0.9
    out.table = table
    return out


@pytest.fixture(scope="module")
def plan(tracker, report):
    first, second = report.table["group"]
    return forced_plan(tracker, report, {first: "IS", second: "DS"})


def test_plan_widths_on_the_page_and_in_the_terminal(tracker, report, plan, tmp_path):
    planned = report.with_plan(plan)
    assert report.plan is None and planned.plan is plan  # a copy; the original is unchanged
    new = dict(zip(plan.table["group"], plan.table["new_width"]))
    old = dict(zip(report.table["group"], report.table["width"]))
    first, second = report.table["group"]
    assert new[first] < old[first] and new[second] > old[second]  # the forced verdicts moved

    text = planned.to_text()
    header = next(line for line in text.splitlines() if line.startswith("group"))
    assert header.split()[:4] == ["group", "width", "new", "verdict"]
    for row, cells in zip(report.table.itertuples(), text_rows(text, len(report.table))):
        assert (cells["width"], cells["new"]) == (str(old[row.group]), str(new[row.group]))
        # the suggestion column says what the plan does
        assert cells["suggest"] == ("narrow" if new[row.group] < old[row.group] else "widen")
    assert "plan.apply(model" in text and "FLOPs" in text
    assert "widthwise.streamline(" not in text  # the plan is there: no recipe for one

    page = planned.save_html(tmp_path / "plan.html").read_text(encoding="utf-8")
    for g in (first, second):
        verb = "narrow" if new[g] < old[g] else "widen"
        assert f"{verb} {old[g]} → {new[g]}" in page  # the amount, in the what-to-change box
    b = plan.budget
    assert f"{b['original']:,} → {b['achieved']:,}" in page
    code = 'plan = widthwise.streamline(model, report, example_inputs, budget="flops")'
    assert html.escape(code) in page
    assert html.escape('new_model = plan.apply(model, init="reinit")') in page
    assert ">new width</th>" in page


def test_a_plan_that_changes_nothing_says_so(tracker, report, tmp_path):
    names = list(report.table["group"])
    keep = forced_plan(tracker, report, dict.fromkeys(names, "undetermined"))
    assert list(keep.table["new_width"]) == list(keep.table["old_width"])
    planned = forced(report, dict.fromkeys(names, "undetermined")).with_plan(keep)
    assert "The plan keeps every width" in planned.to_text()
    assert "plan.apply(" not in planned.to_text()
    page = planned.to_html()
    assert "The plan keeps every width" in page and "plan.apply(" not in page


def test_without_a_plan_the_page_says_how_to_get_one(report, tmp_path):
    first, second = report.table["group"]
    report = forced(report, {first: "IS", second: "DS"})
    page = report.save_html(tmp_path / "noplan.html").read_text(encoding="utf-8")
    assert "By how much" in page and "widthwise.streamline(model, report, example_inputs" in page
    assert ">new width</th>" not in page  # no column for widths we do not know
    assert "widthwise.streamline(model, report, example_inputs" in report.to_text()


def test_from_run_takes_a_plan_and_checks_it(tracker, report, plan):
    same = Report.from_run(tracker.run, plan=plan)
    assert same.plan is plan and same.to_text() == report.with_plan(plan).to_text()
    other = plan.table.copy()
    other.loc[0, "old_width"] += 1
    with pytest.raises(ValueError, match=r"is \d+ wide in the run"):
        report.with_plan(type(plan)(other, plan.groups, plan.budget))
    renamed = plan.table.copy()
    renamed.loc[0, "group"] = "elsewhere"
    with pytest.raises(ValueError, match="another model"):
        Report.from_run(tracker.run, plan=type(plan)(renamed, plan.groups, plan.budget))
    with pytest.raises(TypeError, match="WidthPlan"):
        report.with_plan({"widths": 1})  # type: ignore[arg-type]
    assert report.with_plan(plan).with_plan(None).plan is None


# ---------------------------------------------------------------------- paper_label column
def with_paper(report: Report, labels: list) -> Report:
    """The report as it looks once verdicts.py also returns the paper's shape verdict."""
    out = report.with_plan(report.plan)  # a copy
    out.table = report.table.assign(paper_label=labels, paper_confidence=0.5)
    return out


def without_paper(report: Report) -> Report:
    """The report as it looks before verdicts.py returns the paper's verdict beside its own."""
    out = report.with_plan(report.plan)
    out.table = report.table.drop(columns=["paper_label", "paper_confidence"], errors="ignore")
    return out


def test_paper_label_is_shown_beside_the_verdict_when_the_table_has_it(report):
    first, second = report.table["group"]
    base = forced(without_paper(report), {first: "undetermined", second: "IS"})
    paper = with_paper(base, ["DS", None])
    text = paper.to_text()
    header = next(line for line in text.splitlines() if line.startswith("group"))
    assert header.split()[2:4] == ["verdict", "paper"]
    rows = text_rows(text, 2)
    assert [r["verdict"] for r in rows] == ["undetermined", "IS"]
    assert [r["paper"] for r in rows] == ["DS", "-"]  # missing values show as "-"
    assert "paper: the paper's shape rule alone" in text  # its legend line
    page = paper.to_html()
    assert ">paper&#x27;s verdict</th>" in page and "it is this shape rule alone" in page
    # differs from the verdict: said in the group's words and in its figure
    assert "The paper&#x27;s shape rule alone reads DS; the verdict is undetermined" in page
    fig = paper.figure(first)
    assert fig.texts[0].get_text().endswith("paper's rule: DS")
    assert "3: DS" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "<th>paper&#x27;s verdict</th>" in paper._repr_html_()
    # an IS verdict the shape rule calls DS: the shape told neutrally, then the verdict
    all_ds = with_paper(base, ["DS", "DS"])
    why = all_ds._why(list(all_ds.table.itertuples())[1])
    assert "alone reads DS; the verdict is IS: it is wide enough" in why
    assert "it stayed high" not in why and "it fell back" not in why
    agree = base._why(list(base.table.itertuples())[1])  # no paper column: the shape explains
    assert "it stayed high" in agree and "wide enough" in agree
    # without the column (verdicts.py before its new verdict), nothing about it
    assert "paper" not in str(base).split("\n\n")[0]
    page = base.to_html()
    assert "paper's verdict" not in page and "paper&#x27;s verdict" not in page
    assert "paper: the paper's" not in str(base)


def test_a_too_wide_terminal_table_drops_the_stage_details_before_the_names(report):
    names = list(report.table["group"])
    wide = with_paper(forced(report, dict.fromkeys(names, "undetermined")), [None, None])
    wide.table["paper_label"] = "undetermined"
    lines = wide.to_text().splitlines()
    assert all(len(line) <= 100 for line in lines)
    header = next(line for line in lines if line.startswith("group"))
    assert "dip end" not in header and "rise end" not in header and "kept" in header
    rows = [line for line in lines if line.startswith("layers.")]
    assert [row.split()[0] for row in rows] == [n.replace(" ", "") for n in names]  # whole
    assert not any("dip end" in line for line in lines)  # nor in the legend
    narrow = forced(without_paper(report), dict.fromkeys(names, "IS"))
    assert "dip end" in narrow.to_text()  # room enough: everything stays


# ---------------------------------------------------------------------- other views
def test_repr_html_is_the_verdict_table(report, plan):
    page = report._repr_html_()
    assert "<img" not in page and page.count("<tr>") == len(report.table) + 1
    for row in report.table.itertuples():
        assert html.escape(row.group) in page and row.label in page
    assert ODD not in page
    planned = report.with_plan(plan)._repr_html_()
    assert "new width" in planned
    for w in plan.table["new_width"]:
        assert f"<td>{w}</td>" in planned


def test_no_groups_gives_an_explanation_not_an_empty_table(tmp_path):
    class Scalar(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.w

    tracker = WidthTracker(Scalar(), torch.randn(2, 3), groups=[])
    tracker.snapshot(0)
    report = tracker.report()
    assert len(report.table) == 0
    page = report.save_html(tmp_path / "none.html").read_text(encoding="utf-8")
    assert "No channel groups were found" in page and "find_groups" in page
    assert "<table" not in page
    assert "No channel groups were found" in str(report)
    assert "No channel groups were found" in report._repr_html_()


def test_to_text_can_leave_out_the_legend(report):
    assert "stable: step from which" in report.to_text()
    assert "stable: step from which" not in report.to_text(legend=False)
    assert report.to_text(legend=False) in report.to_text()


def test_small_groups_are_drawn_as_dots_one_per_channel(tracker, report):
    small = tracker.groups[1]  # the 4-wide bottleneck
    assert small.width <= 16
    fig = report.figure(small.name)
    dist = fig.axes[3]
    rows = [line for line in dist.get_lines() if line.get_marker() == "o"]
    assert rows and not dist.patches  # dots, no histogram bars
    steps, norms = tracker.run.channel_norms(small.name)
    labels = [t.get_text() for t in dist.get_yticklabels()]
    for line, label in zip(rows, labels):
        i = list(steps).index(int(label.split()[-1]))
        want = [v / (sum(norms[i]) / len(norms[i])) for v in norms[i]]  # naive mean
        np.testing.assert_allclose(line.get_xdata(), want, rtol=1e-6)
        assert len(line.get_xdata()) == small.width
    big = report.figure(tracker.groups[0].name)  # 16 wide: still dots; wider ones get bars
    assert big.axes[3].get_lines()


def test_wide_groups_get_a_histogram():
    model = OddNames(hidden=40)
    report = train_tracked(model=model, steps=20).report()
    fig = report.figure(report.table["group"][0])
    assert fig.axes[3].patches and not [
        line for line in fig.axes[3].get_lines() if line.get_marker() == "o"
    ]


def test_legends_sit_outside_the_curves_and_the_peak_is_not_clipped(tracker, report):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for group in report.table["group"]:
        fig = report.figure(group)
        FigureCanvasAgg(fig).draw()
        renderer = fig.canvas.get_renderer()
        legends = 0
        for ax in fig.axes:
            leg = ax.get_legend()
            if leg is None:
                continue
            legends += 1
            box, frame = leg.get_window_extent(renderer), ax.get_window_extent(renderer)
            assert box.y0 >= frame.y1 - 1, f"{group}: a legend overlaps its panel"
            title = ax.title.get_window_extent(renderer)
            assert title.y0 >= box.y1 - 1, f"{group}: the legend overlaps the panel title"
        assert legends >= 3
        var = fig.axes[0]
        peaks = [line for line in var.get_lines() if line.get_label() == "peak"]
        if peaks:
            assert not peaks[0].get_clip_on()
            assert var.get_ylim()[1] > peaks[0].get_ydata()[0]


def test_every_side_analysis_figure_has_a_caption(tmp_path):
    from widthwise.analysis import NormGradCorrelation, SignFlips, figures
    from widthwise.report import figure_caption

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    tracker = WidthTracker(net, x[:2])
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    flips = SignFlips(net, tracker.groups)
    grads = NormGradCorrelation(net, tracker.groups, opt)
    for step in range(6):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        tracker.snapshot(step=step)
        flips.update(step)
    grads.close()
    report = tracker.report()
    found = figures(tracker.run, net, tracker.groups, sign_flips=flips, norm_grad=grads)
    assert len(found) == 5
    for title, fig in found:
        assert figure_caption(title).startswith("How to read it")
        report.add_figure(f"run: {title}", fig)  # caption looked up through the run prefix
    page = report.to_html()
    # one sentence on how to read it per figure: the group figures and the side analyses
    assert page.count("How to read it") == len(report.table) + len(found)


def test_png_helper_releases_pyplot_figures():
    import matplotlib

    matplotlib.use("Agg")
    import base64 as b64

    import matplotlib.pyplot as plt

    from widthwise.report import _png_base64

    fig = plt.figure()
    fig.subplots().plot([0, 1])
    data = b64.b64decode(_png_base64(fig))
    assert data.startswith(b"\x89PNG") and plt.get_fignums() == []


def test_a_plan_that_keeps_every_width_says_why(tracker, report):
    # Undetermined groups are kept; with no DS beside IS ones there is nothing to widen, and the
    # terminal says so (not "no verdict to act on", which an IS verdict contradicts).
    first, second = report.table["group"]
    for labels, why in (
        ({first: "IS", second: "undetermined"}, "no group reads DS: nothing to widen"),
        ({first: "undetermined", second: "undetermined"}, "no verdict to act on"),
    ):
        plan = forced_plan(tracker, report, labels)
        old = dict(zip(report.table["group"], report.table["width"]))
        assert dict(zip(plan.table["group"], plan.table["new_width"])) == old
        text = forced(report, labels).with_plan(plan).to_text()
        assert f"The plan keeps every width ({why}" in text, text
