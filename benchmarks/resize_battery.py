"""Every group of every model in ``tests/archs.py``, resized three ways, as a user would.

For each group found by ``find_groups``: widen by two multiples of its rule with
``init="net2net"`` and with ``"reinit"``, and narrow by one multiple with ``"net2net"``, each with
``example_inputs`` (the forward check). A run counts as ``ok`` when the resized model's groups,
found again, have the planned width (the group and every group tied to it); ``ResizeError`` is a
refusal that names the group; anything else is a crash. For net2net widening the largest output
change is printed too.

    PYTHONPATH=src python benchmarks/resize_battery.py
"""

from __future__ import annotations

import pathlib
import sys
import warnings
from collections import Counter

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import archs  # noqa: E402
from widthwise.groups import _call_model, find_groups  # noqa: E402
from widthwise.resize import ResizeError, resize, width_rules  # noqa: E402


def _out(model: torch.nn.Module, x: object) -> torch.Tensor:
    with torch.no_grad():
        out = _call_model(model.eval(), x)
    for attr in ("logits", "last_hidden_state"):
        if hasattr(out, attr):
            return getattr(out, attr)
    return out[0] if isinstance(out, tuple) else out


def main() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    builders = [
        n
        for n in dir(archs)
        if n[0].islower()
        and callable(getattr(archs, n))
        and getattr(archs, n).__module__ == "archs"
    ]
    tally: Counter[str] = Counter()
    worst = 0.0
    for name in builders:
        try:
            model, x = getattr(archs, name)()
            groups = find_groups(model.eval(), x)
        except Exception as exc:
            print(f"{name}: not grouped ({type(exc).__name__})")
            continue
        rules = width_rules(model, groups)
        base = _out(model, x)
        for g in groups:
            rule = rules[g.name]
            wide, narrow = (
                g.width + 2 * rule.multiple_of,
                max(rule.minimum, g.width - rule.multiple_of),
            )
            cells = []
            for width, init in ((wide, "net2net"), (wide, "reinit"), (narrow, "net2net")):
                try:
                    new = resize(model, groups, {g.name: width}, init=init, example_inputs=x)
                    found = {h.name: h.width for h in find_groups(new, x)}
                    ok = all(found.get(t) == width for t in (g.name, *rule.tied))
                    tally["ok" if ok else "wrong widths"] += 1
                    cell = f"{init} {width}: {'ok' if ok else 'WRONG WIDTHS'}"
                    if init == "net2net" and width > g.width:
                        change = (_out(new, x) - base).abs().max().item()
                        worst = max(worst, change)
                        cell += f" (max change {change:.0e})"
                except ResizeError:
                    tally["refused"] += 1
                    cell = f"{init} {width}: ResizeError"
                except Exception as exc:
                    tally["crashed"] += 1
                    cell = f"{init} {width}: CRASH {type(exc).__name__}"
                cells.append(cell)
            print(f"{name} | {g.name} ({g.width}) | " + "; ".join(cells))
    print(dict(tally), f"largest net2net output change: {worst:.1e}")


if __name__ == "__main__":
    main()
