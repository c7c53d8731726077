"""Every group of every model in ``tests/archs.py``, resized three ways, as a user would.

The models are the module's builders and the variants ``archs.PATTERNS`` adds. For each group
found by ``find_groups``: widen by two multiples of its rule with
``init="net2net"`` and with ``"reinit"``, and narrow by one multiple with ``"net2net"``, each with
``example_inputs`` (the forward check). A run counts as ``ok`` when the resized model's groups,
found again, have the planned width (the group and every group tied to it); ``ResizeError`` is a
refusal that names the group; anything else is a crash. For net2net widening the largest output
change is printed too, relative to the output's scale (at least 1), as ``resize`` checks it.

    PYTHONPATH=src python benchmarks/resize_battery.py [--only hf_] [--counts]
    PYTHONPATH=src python benchmarks/resize_battery.py --timm test_vit resnet18 ...
    PYTHONPATH=src python benchmarks/resize_battery.py --streamline [--timm NAME ...]

``--timm NAME ...``: timm models instead (random weights, default input size; timm installed
with ``pip install --no-deps timm``, see ``bench_groups_timm.py``).

``--streamline``: instead of one group at a time, what a user of ``streamline`` gets: every
group is given a random verdict (DS, IS or undetermined, seeded by the model's name), a plan is
made at equal parameters and at 0.6x the parameters, and applied with net2net; a plan counts as
``applied`` when ``WidthPlan.apply`` returns (it finds the groups again and compares every
width with the plan), ``ResizeError`` as a refusal naming the group, anything else as a crash.

Hugging Face models are also saved with ``save_pretrained`` and loaded back after every resize
that raised no ``ResizeWarning``: ``config ok`` when the loaded model has the resized model's
outputs, ``CONFIG WRONG`` otherwise; a ``ResizeWarning`` counts as ``config refused`` (the
config cannot describe that resize, and resize said which field).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import warnings
from collections import Counter

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import archs  # noqa: E402
from widthwise.groups import _call_model, find_groups  # noqa: E402
from widthwise.resize import ResizeError, ResizeWarning, resize, width_rules  # noqa: E402


def _out(model: torch.nn.Module, x: object) -> torch.Tensor:
    with torch.no_grad():
        out = _call_model(model.eval(), x)
    for attr in ("logits", "last_hidden_state"):
        if hasattr(out, attr):
            return getattr(out, attr)
    return out[0] if isinstance(out, tuple) else out


def _round_trip(new: torch.nn.Module, x: object) -> str:
    """``save_pretrained`` + ``from_pretrained`` of a resized Hugging Face model."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            new.save_pretrained(tmp)
            loaded = type(new).from_pretrained(tmp)
        same = torch.allclose(_out(loaded, x), _out(new, x), atol=1e-5, rtol=1e-5)
    except Exception as exc:  # saving or loading failed: the config did not describe it
        print(f"  config wrong: {type(exc).__name__}: {str(exc)[:160]}")
        return "config wrong"
    return "config ok" if same else "config wrong"


def _timm(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    sys.path.insert(0, str(ROOT / "benchmarks" / "_stubs"))  # torchvision stand-in
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))
    return model, torch.randn(1, *size, generator=torch.Generator().manual_seed(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="only the builders whose name contains this")
    parser.add_argument("--counts", action="store_true", help="print the counts only")
    parser.add_argument("--timm", nargs="*", default=[], help="timm model names instead")
    parser.add_argument("--streamline", action="store_true", help="random-verdict plans, applied")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    # the module's builders, and the variants PATTERNS makes of them (weight_norm_hooks)
    builders = {
        n: getattr(archs, n)
        for n in dir(archs)
        if n[0].islower()
        and callable(getattr(archs, n))
        and getattr(archs, n).__module__ == "archs"
    }
    builders.update({n: b for n, b in archs.PATTERNS.items() if n not in builders})
    if args.timm:
        builders = {n: (lambda n=n: _timm(n)) for n in args.timm}
    if args.streamline:
        streamline_battery({n: b for n, b in builders.items() if args.only in n}, args.counts)
        return
    tally: Counter[str] = Counter()
    worst = 0.0
    for name in sorted(n for n in builders if args.only in n):
        try:
            model, x = builders[name]()
            groups = find_groups(model.eval(), x)
        except Exception as exc:
            print(f"{name}: not grouped ({type(exc).__name__})")
            continue
        rules = width_rules(model, groups)
        base = _out(model, x)
        hf = callable(getattr(model, "save_pretrained", None))
        for g in groups:
            rule = rules[g.name]
            wide, narrow = (
                g.width + 2 * rule.multiple_of,
                max(rule.minimum, g.width - rule.multiple_of),
            )
            cells = []
            for width, init in ((wide, "net2net"), (wide, "reinit"), (narrow, "net2net")):
                try:
                    with warnings.catch_warnings(record=True) as said:
                        warnings.simplefilter("always", ResizeWarning)
                        new = resize(model, groups, {g.name: width}, init=init, example_inputs=x)
                    found = {h.name: h.width for h in find_groups(new, x)}
                    ok = all(found.get(t) == width for t in (g.name, *rule.tied))
                    tally["ok" if ok else "wrong widths"] += 1
                    cell = f"{init} {width}: {'ok' if ok else 'WRONG WIDTHS'}"
                    if init == "net2net" and width > g.width:
                        # relative to the output's scale (at least 1), as resize's own check
                        scale = max(1.0, base.abs().max().item())
                        change = (_out(new, x) - base).abs().max().item() / scale
                        worst = max(worst, change)
                        cell += f" (max change {change:.0e})"
                    if hf and any(issubclass(w.category, ResizeWarning) for w in said):
                        tally["config refused"] += 1
                        cell += ", config refused"
                    elif hf:
                        trip = _round_trip(new, x)
                        tally[trip] += 1
                        cell += f", {trip}"
                except ResizeError:
                    tally["refused"] += 1
                    cell = f"{init} {width}: ResizeError"
                except Exception as exc:
                    tally["crashed"] += 1
                    cell = f"{init} {width}: CRASH {type(exc).__name__}: {exc}"[:200]
                cells.append(cell)
            if not args.counts:
                print(f"{name} | {g.name} ({g.width}) | " + "; ".join(cells))
    print(dict(sorted(tally.items())), f"largest net2net output change (relative): {worst:.1e}")


def streamline_battery(builders: dict, counts: bool) -> None:
    """Random-verdict plans at equal and at 0.6x the parameters, applied with net2net."""
    import random
    import time
    import zlib

    import pandas as pd

    from widthwise import streamline

    tally: Counter[str] = Counter()
    for name in sorted(builders):
        try:
            model, x = builders[name]()
            groups = find_groups(model.eval(), x)
        except Exception as exc:
            print(f"{name}: not grouped ({type(exc).__name__})")
            continue
        if not groups:
            continue
        rng = random.Random(zlib.crc32(name.encode()))
        table = pd.DataFrame(
            {
                "group": [g.name for g in groups],
                "label": [rng.choice(["DS", "IS", "undetermined"]) for _ in groups],
                "confidence": [0.9] * len(groups),
            }
        )
        cells = []
        for budget in ("params", 0.6):
            t = time.perf_counter()
            try:
                target = budget if budget == "params" else budget * count_params(model)
                plan = streamline(
                    model, table, x, budget=target, budget_kind="params", groups=groups
                )
                moved = int((plan.table.new_width != plan.table.old_width).sum())
                plan.apply(model)
                tally["applied"] += 1
                cell = f"{budget}: applied ({moved} groups moved, {time.perf_counter() - t:.0f} s)"
            except ResizeError as exc:
                tally["refused"] += 1
                cell = f"{budget}: ResizeError {str(exc)[:120]}"
            except Exception as exc:
                tally["crashed"] += 1
                cell = f"{budget}: CRASH {type(exc).__name__}: {str(exc)[:160]}"
            cells.append(cell)
        if not counts:
            print(f"{name} ({len(groups)} groups) | " + "; ".join(cells), flush=True)
    print(dict(sorted(tally.items())))


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    main()
