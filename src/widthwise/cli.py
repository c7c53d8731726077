"""The ``widthwise`` command line.

Each sub-command lives in ``widthwise.commands.<name>`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a callable taking the parsed namespace and returning
an exit code. Errors a user can fix are raised as :class:`CLIError` and printed as one line.

Every error ends the same way, one line on stderr and a non-zero exit: :class:`CLIError`, a
damaged or foreign run file (``RunFileError``), a file or folder that cannot be read or written
(``OSError``) and a missing optional dependency exit with 2; anything else is a bug, reported in
one line with exit code 1 (set ``WIDTHWISE_TRACEBACK=1`` to see the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

COMMANDS = ("demo", "report", "groups", "reproduce", "cka", "kernel")


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def check_writable(out: Path, flag: str = "--out") -> None:
    """One-line CLIError unless ``out`` is (or can be made) a folder this process can write in,
    checked before any work starts."""
    if out.exists() and not out.is_dir():
        raise CLIError(f"{flag} {out} exists and is not a folder; choose another path")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".widthwise-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise CLIError(f"{flag} {out}: cannot write there ({exc.strerror or exc})") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="widthwise",
        description="Is each layer of your network wide enough? Track weight-norm variance, "
        "get IS/DS verdicts per channel group, and streamline widths.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"widthwise.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"widthwise.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from widthwise.store import RunFileError

    def fail(msg: object, code: int) -> int:
        text = " ".join(str(msg).split())  # one line, whatever the message holds
        print(f"widthwise {args.command}: error: {text}", file=sys.stderr)
        return code

    try:
        return int(args.func(args) or 0)
    except (CLIError, RunFileError) as exc:
        return fail(exc, 2)
    except ImportError as exc:  # an optional dependency is missing: say which and how to get it
        return fail(exc, 2)
    except OSError as exc:  # an unwritable --out, a full disk, a folder where a file should be
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return fail(f"cannot use {where}{exc.strerror or exc}", 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("WIDTHWISE_TRACEBACK"):
            raise
        return fail(
            f"unexpected {type(exc).__name__}: {exc} (a bug in widthwise: please report it; "
            "WIDTHWISE_TRACEBACK=1 shows where)",
            1,
        )


if __name__ == "__main__":  # pragma: no cover
    # `python -m widthwise.cli`: run the imported module's main, so that the commands' CLIError
    # (widthwise.cli.CLIError) is the class caught, not a second copy defined in __main__
    from widthwise.cli import main as _main

    sys.exit(_main())
