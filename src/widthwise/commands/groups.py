"""``widthwise groups MODULE:CALLABLE``: the channel groups of a user's model, as a table."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from widthwise.cli import CLIError

if TYPE_CHECKING:
    from widthwise.groups import ChannelGroup

DTYPES = ("float32", "float64", "long")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "groups",
        help="list the channel groups (channels resized together) of a model",
        description="Build a model from MODULE:CALLABLE (an importable module such as "
        "widthwise.reproduction.zoo:MLP, or a file path such as path/to/net.py:build), trace it on a random "
        "input and print its channel groups.",
        epilog="example: widthwise groups widthwise.reproduction.zoo:MLP --kwargs "
        '\'{"in_features": 40, "widths": [64, 8], "out_features": 10}\' --input-shape 2,40',
    )
    p.add_argument("target", metavar="MODULE:CALLABLE", help="what builds the model")
    p.add_argument(
        "--input-shape",
        action="append",
        required=True,
        metavar="N,D,...",
        help="shape of one example input, comma-separated; repeat for several inputs",
    )
    p.add_argument(
        "--input-dtype",
        choices=DTYPES,
        default="float32",
        help="dtype of the example inputs ('long' gives zeros, for token ids)",
    )
    p.add_argument(
        "--kwargs", default="{}", metavar="JSON", help="keyword arguments for the callable"
    )
    p.add_argument("--members", action="store_true", help="also list every coupled tensor")
    p.add_argument(
        "--timeout",
        default=None,
        metavar="SECONDS",
        help="seconds for grouping after the trace (default 60); the groups not finished in "
        "time are left out with a warning; 'none' for no bound",
    )
    p.set_defaults(func=run)


def load_callable(target: str) -> Callable[..., Any]:
    """Resolve ``module.path:name`` or ``file.py:name`` to the object it names."""
    where, sep, attr = target.rpartition(":")
    if not sep or not where or not attr:
        raise CLIError(
            f"expected MODULE:CALLABLE (e.g. widthwise.reproduction.zoo:MLP), got {target!r}"
        )
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where)
        if not path.is_file():
            raise CLIError(f"no such file: {path}")
        spec = importlib.util.spec_from_file_location(f"_widthwise_user_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise CLIError(f"cannot import {path} as Python source; give a .py file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise CLIError(f"importing {path} failed: {type(exc).__name__}: {exc}") from None
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise CLIError(f"cannot import module {where!r}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CLIError(f"{where} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise CLIError(f"{target} is not callable")
    return obj


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(s < 1 for s in shape):
        raise CLIError(f"--input-shape expects positive integers like 2,40, got {text!r}")
    return shape


def parse_timeout(text: str | None) -> float | None:
    """``--timeout``: positive seconds, ``none`` for no bound; absent: find_groups' default."""
    from widthwise.groups.finder import DEFAULT_TIMEOUT

    if text is None:
        return DEFAULT_TIMEOUT
    if text.strip().lower() == "none":
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds > 0:  # also NaN
        raise CLIError(f"--timeout expects a positive number of seconds or 'none', got {text!r}")
    return seconds


def run(args: argparse.Namespace) -> int:
    import torch
    from torch import nn

    from widthwise.groups import GroupingError, find_groups

    try:
        kwargs = json.loads(args.kwargs)
    except json.JSONDecodeError as exc:
        raise CLIError(f"--kwargs is not valid JSON ({exc.msg}): {args.kwargs!r}") from None
    if not isinstance(kwargs, dict):
        raise CLIError("--kwargs must be a JSON object such as '{\"widths\": [64, 8]}'")
    shapes = [parse_shape(s) for s in args.input_shape]
    timeout = parse_timeout(args.timeout)
    builder = load_callable(args.target)
    try:
        model = builder(**kwargs)
    except Exception as exc:
        raise CLIError(f"{args.target}(**kwargs) failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise CLIError(f"{args.target} returned {type(model).__name__}, not a torch.nn.Module")
    gen = torch.Generator().manual_seed(0)
    if args.input_dtype == "long":
        inputs = tuple(torch.zeros(s, dtype=torch.long) for s in shapes)
    else:
        dtype = getattr(torch, args.input_dtype)
        inputs = tuple(torch.randn(s, generator=gen, dtype=dtype) for s in shapes)
    model.eval()
    example = inputs[0] if len(inputs) == 1 else inputs
    try:
        groups = find_groups(model, example, timeout=timeout)
    except GroupingError as exc:
        raise CLIError(str(exc).splitlines()[0]) from None
    print(format_groups(groups, members=args.members))
    return 0


def format_groups(
    groups: Sequence[ChannelGroup], *, members: bool = False, width: int = 100
) -> str:
    """Aligned text table of channel groups (name, kind, width, layers)."""
    headers = ["group", "kind", "width", "tensors", "layers"]
    rows = [
        [g.name, g.kind, str(g.width), str(len(g.members)), ", ".join(g.layers)] for g in groups
    ]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers[:-1])]

    def clip(text: str, w: int) -> str:
        return text if len(text) <= w else text[: max(0, w - 1)] + "~"

    widths[0] = min(widths[0], 40)
    last = max(10, width - sum(widths) - len(widths) * 2)
    lines = []
    for r in [headers, *rows]:
        cells = [
            clip(c, w).rjust(w) if i in (2, 3) else clip(c, w).ljust(w)
            for i, (c, w) in enumerate(zip(r, widths))
        ]
        lines.append("  ".join([*cells, clip(r[-1], last)]).rstrip())
        if r is headers:
            lines.append("  ".join("-" * w for w in [*widths, min(last, 6)]))
    if members:
        for g in groups:
            lines.append(f"\n{g.name}:")
            for m in g.members:
                extra = f" offset={m.offset}" if m.offset else ""
                extra += f" repeat={m.repeat}" if m.repeat != 1 else ""
                extra += f" gate={m.gate}" if m.gate else ""
                lines.append(f"  {m.role:<8} {m.param} dim={m.dim}{extra}")
    lines.append(f"\n{len(groups)} channel groups, {sum(g.width for g in groups)} channels")
    return "\n".join(lines)
