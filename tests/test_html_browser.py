"""The HTML report in a real headless browser (Debian's chromium): it loads offline, without
errors, every figure decodes, nothing external is requested, no model name becomes markup, the
explaining text is there, and nothing sticks out of the window at 700 px or 1400 px wide.

Skipped when chromium is missing, unless WIDTHWISE_REQUIRE_BROWSER=1 (set by CI).
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess

import pytest
import torch

from test_report import (
    ODD,
    QUOTE,
    forced,
    forced_plan,
    train_tracked,
    with_paper,
    without_paper,
)
from widthwise.report import save_html

BROWSER = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser")) if p), None)
if BROWSER is None:
    if os.environ.get("WIDTHWISE_REQUIRE_BROWSER") == "1":
        pytest.fail("WIDTHWISE_REQUIRE_BROWSER=1 but chromium is not on PATH", pytrace=False)
    pytest.skip("chromium is not installed", allow_module_level=True)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Injected before everything else in <head>: collects errors (script errors, failed resources,
# blocked requests) and, once the page has loaded, writes what it saw into the DOM.
PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  var t = e.target || {};
  window.__errors.push(String(e.message || t.src || t.href || "resource error"));
}, true);
document.addEventListener("securitypolicyviolation", function (e) {
  window.__errors.push("blocked: " + e.blockedURI);
});
// An element overflows when it reaches past the window's right or left edge and no ancestor
// that scrolls or clips horizontally (a table's scroll box) contains it.
function overflowing() {
  var vw = document.documentElement.clientWidth, out = [];
  document.querySelectorAll("body *").forEach(function (el) {
    var r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) return;
    for (var a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      var ov = getComputedStyle(a).overflowX;
      if (ov === "auto" || ov === "scroll" || ov === "hidden") return;
    }
    if (r.right > vw + 0.5 || r.left < -0.5) {
      out.push(el.tagName.toLowerCase() + "." + el.className + " right=" + Math.round(r.right));
    }
  });
  return out;
}
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var out = document.createElement("pre");
  out.id = "__probe";
  out.textContent = JSON.stringify({
    images: images.length,
    decoded: images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    widths: images.map(function (i) { return i.naturalWidth; }),
    shown: images.map(function (i) { return i.getBoundingClientRect().width; }),
    errors: window.__errors,
    scripts: document.scripts.length,
    title: document.title,
    text: document.body.innerText,
    viewport: document.documentElement.clientWidth,
    scrollWidth: document.documentElement.scrollWidth,
    overflow: overflowing()
  });
  document.body.appendChild(out);
});
</script>"""


def probe_page(page: str, tmp_path, width: int = 1400) -> dict:
    """Load ``page`` from a file:// URL in a ``width`` px wide headless chromium window and
    return the probe's record."""
    # let the probe (an inline script) run; the report itself allows no script at all
    assert "default-src 'none'" in page
    page = page.replace("default-src 'none'", "default-src 'none'; script-src 'unsafe-inline'", 1)
    page = page.replace("<head>", "<head>" + PROBE, 1)
    path = tmp_path / "probed.html"
    path.write_text(page, encoding="utf-8")
    proc = subprocess.run(
        [
            BROWSER,
            *FLAGS,
            "--hide-scrollbars",
            f"--window-size={width},900",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    start = proc.stdout.find('<pre id="__probe">')
    assert start >= 0, f"probe did not run; chromium said: {proc.stderr[-2000:]}"
    end = proc.stdout.index("</pre>", start)

    return json.loads(html.unescape(proc.stdout[start + len('<pre id="__probe">') : end]))


@pytest.fixture(scope="module")
def reports():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tracker = train_tracked(steps=40)
        first = tracker.report(name="first <run>")
        a, b = first.table["group"]
        plan = forced_plan(tracker, first, {a: "IS", b: "DS"})
    finally:
        torch.set_num_threads(before)
    # verdicts as the plan had them, whatever the verdict rule made of the tiny run; the
    # widest page there is: the plan's column and the paper's verdict beside the verdict
    first = forced(without_paper(first), {a: "IS", b: "DS"})
    first = with_paper(first.with_plan(plan), ["DS", None])
    second = forced(without_paper(tracker.report(name="second")), {a: "IS", b: "IS"})
    return first, second


@pytest.fixture(scope="module")
def page(reports, tmp_path_factory) -> str:
    """Both runs on one page, with a side-analysis figure (it has its own caption)."""
    from matplotlib.figure import Figure

    from widthwise.report import Report

    fig = Figure(figsize=(7, 3.2))
    fig.subplots().plot([0, 1, 2], [0, 1, 0.5])
    first, second = reports
    first = first.with_plan(first.plan)  # a copy: the sections below stay on this page only
    first.add_figure("first: Sign flips since initialisation", fig)
    first.add_section("Similarity", "<p>an extra section</p>")
    assert isinstance(first, Report)
    path = tmp_path_factory.mktemp("page") / "report.html"
    return save_html([first, second], path).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def seen_at(page, tmp_path_factory):
    """The probe's record of ``page`` at a window width (each width loaded once)."""
    cache: dict[int, dict] = {}

    def at(width: int) -> dict:
        if width not in cache:
            cache[width] = probe_page(page, tmp_path_factory.mktemp(f"w{width}"), width=width)
        return cache[width]

    return at


def test_report_page_loads_offline_with_every_figure(reports, seen_at):
    first, second = reports
    seen = seen_at(1400)
    n_figures = len(first.table) + len(second.table) + 1  # and one side analysis
    assert seen["errors"] == []
    assert seen["images"] == n_figures
    assert seen["decoded"] == n_figures
    assert all(w >= 500 for w in seen["widths"])  # real figures, not broken-image icons
    assert seen["scripts"] == 1  # only the probe: no model name turned into a script element
    # the odd names are shown as text, exactly as the model spells them
    assert ODD in seen["text"] and QUOTE in seen["text"] and "first <run>" in seen["text"]
    assert "an extra section" in seen["text"]
    for label in first.table["label"]:
        assert label in seen["text"]


def test_probe_catches_a_broken_image_and_an_external_request(tmp_path, reports):
    """The check above can fail: a truncated image and an external URL are both reported."""
    page = save_html(reports[0], tmp_path / "r.html").read_text(encoding="utf-8")
    start = page.index("base64,") + len("base64,")
    broken = page[:start] + "AAAA" + page[start + 200 :]
    broken = broken.replace("</main>", '<img src="https://example.com/x.png"></main>', 1)
    seen = probe_page(broken, tmp_path)
    assert seen["decoded"] == seen["images"] - 2
    assert any("example.com" in e for e in seen["errors"])


def test_page_explains_which_layers_to_change_by_how_much_and_why(reports, seen_at):
    first, second = reports
    seen = seen_at(1400)
    text = seen["text"]
    assert "How to read this page" in text and "stays high" in text and "falls back" in text
    assert text.count("What to change") == 2  # one box per run
    # by how much: the planned widths for the first run, the recipe for the second
    new = dict(zip(first.plan.table["group"], first.plan.table["new_width"]))
    for row in first.table.itertuples():
        verb = "narrow" if new[row.group] < row.width else "widen"
        assert f"{row.group}: {verb} {row.width} → {new[row.group]}" in text
    assert 'new_model = plan.apply(model, init="reinit")' in text
    assert "By how much" in text and "widthwise.streamline(model, report, example_inputs" in text
    # why: each group's verdict in words, and one sentence per figure on how to read it
    assert (
        text.count("How to read it") == seen["images"] == len(first.table) + 1 + len(second.table)
    )
    assert "fell back, so all its channels grew alike" in text  # the DS group, in words
    assert "the verdict is IS" in text  # the IS group the paper's rule reads DS
    assert "paper's verdict" in text  # the column beside the verdict (its header)
    assert "What the columns mean" in text


@pytest.mark.parametrize("width", [700, 1400])
def test_nothing_overflows_the_window(seen_at, width):
    seen = seen_at(width)
    assert seen["viewport"] == width  # the window really had that width
    assert seen["overflow"] == []
    assert seen["scrollWidth"] <= seen["viewport"]  # no sideways scrolling of the page
    assert seen["decoded"] == seen["images"] > 0
    assert all(0 < w <= width for w in seen["shown"])


def test_no_groups_page_explains_itself_at_700_px(tmp_path):
    from widthwise.tracker import WidthTracker

    tracker = WidthTracker(torch.nn.Sequential(torch.nn.ReLU()), torch.randn(2, 3), groups=[])
    tracker.snapshot(0)
    page = tracker.report(name="empty").to_html()
    seen = probe_page(page, tmp_path, width=700)
    assert "No channel groups were found" in seen["text"] and seen["overflow"] == []
    assert seen["images"] == 0 and seen["errors"] == []


def test_probe_catches_an_element_wider_than_the_window(tmp_path, reports):
    """The overflow check can fail: a 2000 px block outside any scroll box is reported, one
    inside a scroll box is not."""
    page = save_html(reports[1], tmp_path / "w.html").read_text(encoding="utf-8")
    wide = (
        '<div id="wide" style="width:2000px">x</div>'
        '<div style="overflow-x:auto"><div style="width:3000px">y</div></div></main>'
    )
    seen = probe_page(page.replace("</main>", wide, 1), tmp_path, width=700)
    assert seen["overflow"] and all("right=2" in o for o in seen["overflow"])
    assert seen["scrollWidth"] > 700
