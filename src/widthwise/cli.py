"""The ``widthwise`` command line.

Each sub-command lives in ``widthwise.commands.<name>`` and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a callable taking the parsed namespace and returning
an exit code. Errors a user can fix are raised as :class:`CLIError` and printed as one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("demo", "report", "groups", "reproduce", "cka", "kernel")


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


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
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"widthwise {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # an optional dependency is missing: say which and how to get it
        print(f"widthwise {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
