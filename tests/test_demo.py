"""The demo's output: tables flushed as soon as they are ready, progress on stderr (a bar on a
terminal, plain lines in a pipe), the legend once, and a page that shows the planned widths."""

from __future__ import annotations

import io
import re
import sys

import pytest
import torch

from widthwise.reproduction.demo import DemoModel, _Progress, run_demo

TINY = (DemoModel("tiny", "mlp", [24, 3]), DemoModel("conv", "cnn1d", [3, 8]))


class Pipe(io.StringIO):
    """A block-buffered pipe: what is written reaches ``timeline`` only when flushed."""

    def __init__(self, name: str, timeline: list[tuple[str, str]]) -> None:
        super().__init__()
        self.name, self.timeline, self.pending = name, timeline, ""

    def write(self, text: str) -> int:
        self.pending += text
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.timeline.append((self.name, self.pending))
            self.pending = ""

    def isatty(self) -> bool:
        return False


@pytest.fixture(scope="module")
def piped(tmp_path_factory):
    """The demo run with stdout and stderr both pipes, as in ``widthwise demo | cat``."""
    timeline: list[tuple[str, str]] = []
    out, err = Pipe("out", timeline), Pipe("err", timeline)
    before = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        result = run_demo(tmp_path_factory.mktemp("demo"), epochs=2, samples=200, models=TINY)
    finally:
        sys.stdout, sys.stderr = before
    # what never got flushed would arrive only at exit: keep it apart
    return result, timeline, out.pending + err.pending


def test_piped_output_arrives_in_order_with_one_legend(piped):
    _, timeline, unflushed = piped
    assert unflushed == ""  # nothing waits in a buffer until the end
    text = "".join(chunk for _, chunk in timeline)
    assert "\r" not in text  # no progress-bar redraws in a pipe
    assert text.count("stable: step from which") == 1  # the legend, once, after both tables

    def first(pattern: str, stream: str) -> int:
        for i, (name, chunk) in enumerate(timeline):
            if name == stream and re.search(pattern, chunk):
                return i
        raise AssertionError(f"{pattern!r} never reached std{stream}")

    order = [
        first(r"tiny \[24, 3\]: training, \d+ steps", "err"),
        first(r"tiny \[24, 3\]: done in \d+ s, test accuracy", "err"),
        first(r"widthwise report: tiny", "out"),
        first(r"conv \[3, 8\]: training", "err"),
        first(r"widthwise report: conv", "out"),
        first(r"stable: step from which", "out"),
    ]
    assert order == sorted(order), order
    # the tables carry the planned widths ("new" column) and the line that builds the model
    assert text.count(" new verdict") == 2
    assert text.count("plan.apply(model") + text.count("The plan keeps every width") == 2


def test_demo_plans_every_model_and_the_page_shows_the_widths(piped):
    result, _, _ = piped
    assert set(result.plans) == {"tiny", "conv"}
    page = result.html.read_text(encoding="utf-8")
    assert page.count("What to change") == 2 and ">new width</th>" in page
    for name, plan in result.plans.items():
        report = result.reports[name]
        assert report.plan is plan
        assert list(plan.table["group"]) == list(report.table["group"])
        assert list(plan.table["old_width"]) == list(report.table["width"])
        for w in plan.table["new_width"]:
            assert f"<td><b>{w}</b></td>" in page
    # every side analysis says how to read it, and every group figure does too
    extra = page.count('<section class="extra">')
    groups = sum(len(r.table) for r in result.reports.values())
    assert extra > 0 and page.count("How to read it") == extra + groups


def test_progress_is_a_bar_on_a_terminal_lines_in_a_pipe_and_can_be_off():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, enabled in ((Terminal(), None), (io.StringIO(), True)):
        with _Progress(8, "m", enabled, stream) as bar:
            for _ in range(8):
                bar.update(1)
            bar.done("ok")
        assert "\r" in stream.getvalue() and "8/8" in stream.getvalue()  # tqdm's bar
    pipe = io.StringIO()
    with _Progress(8, "m", None, pipe) as bar:
        for _ in range(8):
            bar.update(1)
        bar.done("test accuracy 0.5")
    lines = pipe.getvalue().splitlines()
    assert lines[0] == "m: training, 8 steps"
    assert lines[1:4] == ["m: step 2/8", "m: step 4/8", "m: step 6/8"]
    assert re.fullmatch(r"m: done in \d+ s, test accuracy 0.5", lines[4]) and len(lines) == 5
    off = io.StringIO()
    with _Progress(8, "m", False, off) as bar:
        bar.update(8)
        bar.done("x")
    assert off.getvalue() == ""


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
