"""``widthwise report RUN``: verdicts for a stored run (also one still being written)."""

from __future__ import annotations

import argparse
from pathlib import Path

from widthwise.cli import CLIError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "report",
        help="print the IS/DS verdict table of a stored run and write its HTML report",
        description="Analyse a run file written by WidthTracker (it may still be growing): "
        "print one verdict per channel group and write a self-contained HTML report.",
    )
    p.add_argument("run", metavar="RUN", help="run file (.wwrun) written by WidthTracker")
    p.add_argument(
        "--html",
        metavar="PATH",
        help="where to write the HTML report (default: RUN with the suffix .html)",
    )
    p.add_argument("--no-html", action="store_true", help="only print the table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from widthwise.store import RunFileError, open_run

    path = Path(args.run)
    if not path.exists():
        raise CLIError(f"no such file: {path}")
    if path.is_dir():
        raise CLIError(f"{path} is a directory; pass a run file written by WidthTracker")
    try:
        stored = open_run(path)
        report = stored.report()
    except RunFileError as exc:
        raise CLIError(str(exc)) from None
    print(report)
    if not stored.groups:
        print(
            "\nThis run has no channel groups: find_groups found no layer whose output channels "
            "can be resized (its warnings, when the tracker was created, said what was left out)."
        )
    if not args.no_html:
        out = Path(args.html) if args.html else path.with_suffix(".html")
        if out.is_dir():
            raise CLIError(f"--html {out} is a directory; give a file name such as report.html")
        try:
            report.save_html(out)
        except OSError as exc:
            raise CLIError(f"cannot write {out}: {exc.strerror or exc}") from None
        print(f"\nHTML report: {out}")
    return 0
