"""Report: verdict table, terminal view, figures and the self-contained HTML page, on real runs."""

from __future__ import annotations

import html
import re

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
        assert row["label"] == expected.label
        assert row["confidence"] == pytest.approx(expected.confidence)
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
    assert whole["label"] == classify(values, steps).label
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
    assert any(line.startswith("IS: ") for line in lines)  # the legend


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
    path = tmp_path / "live.sqlite"
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
