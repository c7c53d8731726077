"""The HTML report in a real headless browser (Debian's chromium): it loads offline, without
errors, every figure decodes, nothing external is requested and no model name becomes markup.

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

from test_report import ODD, QUOTE, train_tracked
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
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var out = document.createElement("pre");
  out.id = "__probe";
  out.textContent = JSON.stringify({
    images: images.length,
    decoded: images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    widths: images.map(function (i) { return i.naturalWidth; }),
    errors: window.__errors,
    scripts: document.scripts.length,
    title: document.title,
    text: document.body.innerText
  });
  document.body.appendChild(out);
});
</script>"""


def probe_page(page: str, tmp_path) -> dict:
    """Load ``page`` from a file:// URL in headless chromium and return the probe's record."""
    # let the probe (an inline script) run; the report itself allows no script at all
    assert "default-src 'none'" in page
    page = page.replace("default-src 'none'", "default-src 'none'; script-src 'unsafe-inline'", 1)
    page = page.replace("<head>", "<head>" + PROBE, 1)
    path = tmp_path / "probed.html"
    path.write_text(page, encoding="utf-8")
    proc = subprocess.run(
        [BROWSER, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", path.as_uri()],
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
    finally:
        torch.set_num_threads(before)
    return tracker.report(name="first <run>"), tracker.report(name="second")


def test_report_page_loads_offline_with_every_figure(tmp_path, reports):
    first, second = reports
    first.add_section("Similarity", "<p>an extra section</p>")
    try:
        page = save_html([first, second], tmp_path / "report.html").read_text(encoding="utf-8")
    finally:
        first.sections.clear()
    seen = probe_page(page, tmp_path)
    n_groups = len(first.table) + len(second.table)
    assert seen["errors"] == []
    assert seen["images"] == n_groups
    assert seen["decoded"] == n_groups
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
