"""Width-wise streamlining: new widths under a budget, from the verdicts.

The paper's recipe is to widen DS groups (they would gain from more width), narrow IS groups
(wide enough) and keep FLOPs about equal. Measured here, a fixed ratio is not safe: an IS layer
can still lose accuracy when narrowed too far, and a DS layer right before a small output gains
nothing from widening. So the amounts come from evidence, through a few explicit parameters:

``widen``
    A DS group with confidence ``c`` is first widened by the factor ``1 + widen * c``.
``floor="ifm"``
    An IS group is never narrowed below its IFM effective width (the number of distinct
    channels it really holds, :func:`widthwise.analysis.ifm_width`), nor below ``min_width``
    or ``min_fraction`` of its width. IFM is a coarse floor: on trained networks it often
    returns the full width (nothing narrows) or very few channels, depending on ``beta``.
    ``floor="none"`` leaves ``min_width`` and ``min_fraction``.
``max_factor``
    No group grows beyond ``max_factor`` times its width.

The budget is then met (within ``tolerance``) by one monotone search: IS groups narrow together,
``w * (1 - c * t)`` for the smallest ``t`` that fits; when narrowing is not needed (a larger
budget) the DS widening grows instead, and when narrowing to the floors is not enough the DS
widening shrinks back. Undetermined groups keep their width. Costs are counted on the resized
model itself: FLOPs with :mod:`torch.utils.flop_counter`, parameters by counting.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import pandas as pd
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from widthwise.analysis import channel_vectors, ifm_width
from widthwise.groups import ChannelGroup, find_groups
from widthwise.groups import _call_model as _call
from widthwise.resize import Init, ResizeError, resize, shrink_with_torch_pruning

__all__ = ["FlopCountWarning", "HasVerdicts", "WidthPlan", "count_flops", "count_params", "streamline"]

#: Default DS widening strength: a DS group at confidence 1 doubles before the budget search.
WIDEN = 1.0
#: Groups never grow beyond this factor, whatever the budget.
MAX_FACTOR = 4.0
#: Narrowest width any group may get.
MIN_WIDTH = 4
#: An IS group keeps at least this share of its width: narrowing a 64-wide residual stream of a
#: small ResNet to 4 (no such floor) cost 2 points of accuracy on digits (docs/streamlining.md).
MIN_FRACTION = 0.25
#: The budget counts as met within this relative error.
TOLERANCE = 0.02

# Aten ops that carry most of a network's FLOPs; one of them running uncounted means the count is
# too low (e.g. CPU flash attention, fused RNN kernels).
_HEAVY = ("mm", "conv", "attention", "einsum", "linear", "matmul", "gru", "lstm", "rnn", "dot")


class FlopCountWarning(UserWarning):
    """``torch.utils.flop_counter`` ran operations it has no formula for: FLOPs are undercounted."""


class _OpRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: set[Any] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.overloadpacket)
        return func(*args, **(kwargs or {}))


def count_flops(model: nn.Module, example_inputs: Any, *, warn: bool = True) -> int:
    """Forward FLOPs of one call on ``example_inputs``, from :mod:`torch.utils.flop_counter`.

    Counted with gradients enabled: under ``no_grad`` ``nn.TransformerEncoder`` takes a fused
    fast path the counter reports as 0. Heavy operations without a FLOP formula are named in a
    :class:`FlopCountWarning`.

    >>> count_flops(torch.nn.Linear(8, 4), torch.randn(2, 8))  # 2 * batch * in * out
    128
    """
    was_training = model.training
    model.eval()
    recorder = _OpRecorder()
    try:
        with torch.enable_grad(), FlopCounterMode(display=False) as counter, recorder:
            _call(model, example_inputs)
    finally:
        model.train(was_training)
    if warn:
        missed = sorted(
            str(op)
            for op in recorder.ops
            if op not in flop_registry and any(h in str(op).lower() for h in _HEAVY)
        )
        if missed:
            warnings.warn(
                f"FLOPs undercounted: no formula for {', '.join(missed)}",
                FlopCountWarning,
                stacklevel=2,
            )
    return int(counter.get_total_flops())


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


@dataclass
class WidthPlan:
    """New widths per channel group, with the reason for each change.

    ``table`` has one row per group: ``group, old_width, new_width, label, confidence, reason``.
    """

    table: pd.DataFrame
    groups: list[ChannelGroup]
    budget: dict[str, Any]
    example_inputs: Any = field(default=None, repr=False)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def widths(self) -> dict[str, int]:
        """``{group: new width}`` for every group."""
        return dict(zip(self.table.group, self.table.new_width.astype(int)))

    def __str__(self) -> str:
        b = self.budget
        head = (
            f"WidthPlan: {b['kind']} {b['original']:,} -> {b['achieved']:,} "
            f"(target {b['target']:,}, {'met' if b['met'] else 'NOT met'})"
        )
        cols = ["group", "old_width", "new_width", "label", "confidence", "reason"]
        return head + "\n" + self.table[cols].to_string(index=False)

    def to_json(self) -> str:
        """The plan as JSON: budget, parameters and one record per group."""
        return json.dumps(
            {
                "budget": self.budget,
                "params": self.params,
                "groups": json.loads(self.table.to_json(orient="records")),
            },
            indent=2,
        )

    def apply(self, model: nn.Module, init: Init = "reinit", *, seed: int = 0) -> nn.Module:
        """A new model with the planned widths (``model`` is not changed), verified.

        Groups that narrow are cut by Torch-Pruning (highest-norm channels kept) where it can;
        widening (Torch-Pruning has none) and recurrent or attention-internal groups go through
        :func:`widthwise.resize.resize`.

        After the surgery the new model's groups are found again and their widths compared with
        the plan, and a forward pass is run; any mismatch raises :class:`ResizeError`.
        """
        groups, widths, base = self.groups, self.widths, model
        if self.example_inputs is not None:
            # Narrowing is Torch-Pruning's job where it can cut the group; the rest (widening,
            # recurrent and attention-internal groups) is widthwise's own surgery.
            base, cut = shrink_with_torch_pruning(model, groups, widths, self.example_inputs)
            if cut:
                found = {g.name: g for g in find_groups(base, self.example_inputs)}
                lost = sorted(set(widths) - set(found))
                if lost:
                    raise ResizeError(f"after Torch-Pruning's cuts, groups not found again: {lost}")
                groups = list(found.values())
                widths = {k: v for k, v in widths.items() if k not in cut}
        new = resize(base, groups, widths, init=init, seed=seed)
        if self.example_inputs is not None:
            try:
                with torch.no_grad():
                    _call(new.eval(), self.example_inputs)
            except Exception as exc:  # surgery bug or unsupported module: say which
                raise ResizeError(f"the resized model's forward pass failed: {exc}") from exc
            new.train(model.training)
            found = {g.name: g.width for g in find_groups(new, self.example_inputs)}
            wrong = {
                k: (v, found.get(k)) for k, v in self.widths.items() if found.get(k) not in (v,)
            }
            if wrong:
                raise ResizeError(f"achieved widths differ from the plan (planned, got): {wrong}")
        return new

    def to_config(self, model: nn.Module) -> dict[str, Any]:
        """The zoo model's constructor arguments with the planned widths.

        Works for :mod:`widthwise.reproduction.zoo` models: each width slot takes the new width of the group
        its layer produces.
        """
        if not hasattr(model, "width_layers"):
            raise TypeError("to_config needs a widthwise.reproduction.zoo model (with width_layers)")
        new = self.widths
        slot_width: dict[str, int] = {}
        for g in self.groups:
            for m in g.producers:
                slot_width.setdefault(m.param.rpartition(".")[0], new[g.name])
        widths = [slot_width.get(n, w) for n, w in zip(model.width_layers(), model.widths())]
        return model.config_with_widths(widths)


class HasVerdicts(Protocol):
    """Anything that carries a verdict table (a :class:`widthwise.report.Report`)."""

    @property
    def table(self) -> pd.DataFrame: ...


def streamline(
    model: nn.Module,
    verdicts: pd.DataFrame | HasVerdicts,
    example_inputs: Any,
    budget: Literal["flops", "params"] | float | int = "flops",
    *,
    budget_kind: Literal["flops", "params"] | None = None,
    widen: float = WIDEN,
    max_factor: float = MAX_FACTOR,
    min_width: int = MIN_WIDTH,
    min_fraction: float = MIN_FRACTION,
    floor: Literal["ifm", "none"] = "ifm",
    round_to: int = 1,
    min_confidence: float = 0.0,
    groups: Sequence[ChannelGroup] | None = None,
    tolerance: float = TOLERANCE,
) -> WidthPlan:
    """Plan new widths: widen DS groups, narrow IS groups, meet the budget.

    ``verdicts`` is the table of :func:`widthwise.verdicts.verdicts` (a DataFrame with
    ``group``, ``label`` and ``confidence``) or a :class:`~widthwise.report.Report`. ``budget`` is ``"flops"`` or ``"params"`` (keep
    today's cost) or a number: a target cost, smaller or larger than today's, counted in
    ``budget_kind`` (default FLOPs). Verdicts below ``min_confidence`` count as undetermined.
    """
    table = verdicts if isinstance(verdicts, pd.DataFrame) else verdicts.table
    labels = {r.group: (r.label, float(r.confidence)) for r in table.itertuples()}
    groups = list(groups) if groups is not None else find_groups(model, example_inputs)
    if isinstance(budget, str):
        if budget not in ("flops", "params"):
            raise ValueError(f"budget must be 'flops', 'params' or a number, got {budget!r}")
        kind, target = budget, None
    else:
        kind, target = budget_kind or "flops", float(budget)
    cost_fn = (
        (lambda m: count_flops(m, example_inputs, warn=False)) if kind == "flops" else count_params
    )
    count_flops(model, example_inputs)  # warn once about undercounting
    original = cost_fn(model)
    target = original if target is None else target
    if target <= 0:
        raise ValueError(f"the budget must be positive, got {target}")

    moves: dict[str, tuple[int, float, int]] = {}  # name -> (direction, confidence, floor)
    for g in groups:
        label, conf = labels.get(g.name, ("undetermined", 0.0))
        if conf < min_confidence or label not in ("IS", "DS"):
            continue
        step = _lcm(max(g.divisor, 1), max(round_to, 1))
        lo = max(min_width, step, math.ceil(min_fraction * g.width / step) * step)
        if label == "IS" and floor == "ifm":
            lo = max(lo, ifm_width(channel_vectors(model, g)))
        moves[g.name] = (1 if label == "DS" else -1, conf, lo)

    def widths_at(k: float, t: float) -> dict[str, int]:
        out = {}
        for g in groups:
            if g.name not in moves:
                out[g.name] = g.width
                continue
            direction, conf, lo = moves[g.name]
            step = _lcm(max(g.divisor, 1), max(round_to, 1))
            raw = g.width * (1 + k * conf) if direction > 0 else g.width * (1 - conf * t)
            raw = min(raw, g.width * max_factor)
            w = max(step, round(raw / step) * step)
            out[g.name] = max(w, min(lo, g.width)) if direction < 0 else w
        return out

    cache: dict[tuple, float] = {}

    def cost(w: dict[str, int]) -> float:
        key = tuple(sorted(w.items()))
        if key not in cache:
            cache[key] = cost_fn(resize(model, groups, w, init="reinit"))
        return cache[key]

    t_max = max((1 / c for d, c, _ in moves.values() if d < 0 and c > 0), default=0.0)
    k_max = max_factor
    best = widths_at(widen, 0.0)
    if cost(best) > target * (1 + tolerance) and t_max > 0:
        if cost(widths_at(widen, t_max)) <= target:
            best = widths_at(widen, _bisect(lambda t: cost(widths_at(widen, t)) - target, 0, t_max))
        else:  # narrowing to the floors is not enough: widen less
            best = widths_at(0.0, t_max)
            if cost(best) <= target:
                k = _bisect(lambda k: target - cost(widths_at(k, t_max)), 0.0, widen)
                best = widths_at(k, t_max)
    elif cost(best) < target * (1 - tolerance):
        if cost(widths_at(k_max, 0.0)) >= target:
            best = widths_at(_bisect(lambda k: target - cost(widths_at(k, 0.0)), widen, k_max), 0)
        else:
            best = widths_at(k_max, 0.0)
    best = _refine(best, moves, groups, cost, target, tolerance, max_factor, round_to)
    achieved = cost(best)
    met = abs(achieved - target) <= tolerance * target
    if not met:
        warnings.warn(
            f"budget not met: {kind} {achieved:,.0f} for a target of {target:,.0f} "
            "(the verdicts leave too little room: lower min_width, or allow a larger max_factor)",
            stacklevel=2,
        )

    rows = []
    for g in groups:
        label, conf = labels.get(g.name, ("undetermined", 0.0))
        new = best[g.name]
        if g.name in moves:
            why = f"{label} (confidence {conf:.2f}): " + (
                "would gain from more width" if label == "DS" else "wide enough"
            )
            if label == "IS" and new == moves[g.name][2] and new < g.width:
                why += f"; stopped at its floor ({moves[g.name][2]})"
        elif label in ("IS", "DS"):
            why = f"{label} below min_confidence ({conf:.2f} < {min_confidence}): kept"
        else:
            why = "undetermined: kept"
        rows.append(
            {
                "group": g.name,
                "old_width": g.width,
                "new_width": new,
                "label": label,
                "confidence": round(conf, 3),
                "reason": why,
            }
        )
    return WidthPlan(
        table=pd.DataFrame(rows),
        groups=list(groups),
        budget={
            "kind": kind,
            "original": int(original),
            "target": round(target),
            "achieved": int(achieved),
            "met": bool(met),
        },
        example_inputs=example_inputs,
        params={
            "widen": widen,
            "max_factor": max_factor,
            "min_width": min_width,
            "min_fraction": min_fraction,
            "floor": floor,
            "round_to": round_to,
            "min_confidence": min_confidence,
            "tolerance": tolerance,
        },
    )


def _refine(best, moves, groups, cost, target, tolerance, max_factor, round_to):
    """Greedy one-step moves towards the target after the joint search.

    All IS groups narrow by one shared parameter, so integer widths can leave the cost a few
    percent off the target when a single channel is expensive. Each round tries every moving
    group one step up and one step down (staying on its side of its old width, within its floor
    and ``max_factor``) and keeps the move that brings the cost closest to the target.
    """
    by_name = {g.name: g for g in groups}
    best = dict(best)
    for _ in range(4 * len(moves) + 8):
        gap = abs(cost(best) - target)
        if gap <= tolerance * target:
            break
        options = []
        for name, (direction, _conf, lo) in moves.items():
            g = by_name[name]
            step = _lcm(max(g.divisor, 1), max(round_to, 1))
            for delta in (-step, step):
                w = best[name] + delta
                if direction > 0 and not g.width <= w <= g.width * max_factor:
                    continue
                if direction < 0 and not min(lo, g.width) <= w <= g.width:
                    continue
                trial = {**best, name: w}
                options.append((abs(cost(trial) - target), name, w))
        if not options or min(options)[0] >= gap:
            break
        _, name, w = min(options)
        best[name] = w
    return best


def _lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)


def _bisect(f, lo: float, hi: float, iters: int = 30) -> float:
    """The smallest x in [lo, hi] with f(x) <= 0, for f decreasing (integer steps make it coarse)."""
    for _ in range(iters):
        mid = (lo + hi) / 2
        if f(mid) <= 0:
            hi = mid
        else:
            lo = mid
    return hi
