"""Width-wise streamlining: new widths under a budget, from the verdicts.

The paper's recipe is to widen DS groups (they would gain from more width), narrow IS groups
(wide enough) and keep FLOPs about equal. Measured here, a fixed ratio is not safe: an IS layer
can still lose accuracy when narrowed too far, and a DS layer right before a small output gains
nothing from widening. So the amounts come from evidence, through a few explicit parameters:

``widen``
    A DS group with confidence ``c`` is first widened by the factor ``1 + widen * c``.
``min_fraction``, ``min_width``
    An IS group keeps at least ``min_fraction`` of its width and ``min_width`` channels.
``floor="ifm"`` (opt-in)
    An IS group is also never narrowed below its IFM effective width (the number of distinct
    channels it really holds, :func:`widthwise.analysis.ifm_width`). The default is
    ``floor="none"``: on all five conventional set-ups of the streamlining proof the IFM width
    of every trained IS group was its full width, so the IFM floor forbade any narrowing and
    every plan came back unchanged or missed its budget (docs/streamlining.md).
``max_factor``
    No group grows beyond ``max_factor`` times its width.

The budget is then met (within ``tolerance``) by one monotone search: IS groups narrow together,
``w * (1 - c * t)`` for the smallest ``t`` that fits; when narrowing is not needed (a larger
budget) the DS widening grows instead, and when narrowing to the floors is not enough the DS
widening shrinks back. Undetermined groups keep their width, unless the budget is still out of
reach: then every group not tied to a disagreeing or differently sized group narrows by need,
the least likely to need width most (undetermined ones count as even odds,
:data:`UNDETERMINED_NEED`), each within its floors. Costs are counted on the resized model
itself: FLOPs with :mod:`torch.utils.flop_counter`, parameters by counting.

Contract:

* every group obeys its width rule (:func:`widthwise.resize.width_rules`): widths are multiples
  of ``multiple_of`` and at least ``minimum``, tied groups move together (by one factor), and a
  group whose rule says ``widen=False`` is never widened;
* every resize the plan asks for runs: each moving group is first resized once on its own and
  run on the example inputs, and a group whose trial fails is kept at its width with the error
  as its reason; the finished plan is then resized whole, run and grouped again (the checks of
  :meth:`WidthPlan.apply`), and a group it fails on is kept too;
* ``WidthPlan.apply`` raises :class:`ResizeError` naming the moved groups, and nothing else, for
  any failure (Torch-Pruning's cut is retried with widthwise's own surgery first);
* a budget the rules cannot meet is never silently missed: the closest plan comes back with
  ``plan.budget["met"] == False`` and a :class:`BudgetWarning` naming what stopped it
  (``on_miss="raise"`` raises :class:`BudgetError` instead);
* a model without channel groups gets an empty plan that says so.
"""

from __future__ import annotations

import copy
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
from widthwise.groups import call_model as _call
from widthwise.resize import (
    Init,
    ResizeError,
    ResizeWarning,
    WidthRule,
    resize,
    shrink_with_torch_pruning,
    width_rules,
)
from widthwise.resize import check_widths as _check_widths

__all__ = [
    "BudgetError",
    "BudgetWarning",
    "FlopCountWarning",
    "HasVerdicts",
    "WidthPlan",
    "count_flops",
    "count_params",
    "streamline",
]

#: Default DS widening strength: a DS group at confidence 1 doubles before the budget search.
WIDEN = 1.0
#: Groups never grow beyond this factor, whatever the budget.
MAX_FACTOR = 4.0
#: The default IS floor: ``"none"`` (min_fraction and min_width only). The IFM floor returned the
#: full width of every trained IS group on the five conventional set-ups of
#: ``widthwise reproduce streamline`` (plans.json there), i.e. it forbade all narrowing.
FLOOR: Literal["ifm", "none"] = "none"
#: Narrowest width any group may get.
MIN_WIDTH = 4
#: An IS group keeps at least this share of its width: narrowing a 64-wide residual stream of a
#: small ResNet to 4 (no such floor) cost 2 points of accuracy on digits (docs/streamlining.md).
MIN_FRACTION = 0.25
#: The budget counts as met within this relative error.
TOLERANCE = 0.02
#: P(needs width) of an undetermined group (or a verdict below ``min_confidence``) when a budget
#: the IS groups alone cannot reach makes the planner narrow by need. The verdict table gives
#: such groups no probability (confidence 0), and the label is undetermined inside the band
#: around even odds (``widthwise.verdicts.P_DECIDE``: 0.45 < P < 0.55), so even odds: they
#: narrow before any DS group and after any IS group (verdicts whose confidence was capped at
#: 0.50, outside what the oracle validated, tie with them).
UNDETERMINED_NEED = 0.5

# Aten ops that carry most of a network's FLOPs; one of them running uncounted means the count is
# too low (e.g. CPU flash attention, fused RNN kernels).
_HEAVY = ("mm", "conv", "attention", "einsum", "linear", "matmul", "gru", "lstm", "rnn", "dot")


#: ``WidthPlan.apply`` warns when a function-preserving init (net2net, prune) still moved the
#: output on ``example_inputs`` by more than this (relative L2): narrowing is not preserving.
OUTPUT_CHANGE_WARN = 0.01

_COLUMNS = ["group", "old_width", "new_width", "label", "confidence", "reason"]


class BudgetWarning(UserWarning):
    """The width rules and floors cannot meet the budget: the closest plan was returned."""


class BudgetError(ValueError):
    """``on_miss="raise"``: the width rules and floors cannot meet the budget."""


class FlopCountWarning(UserWarning):
    """``torch.utils.flop_counter`` ran operations it has no formula for: FLOPs are undercounted."""


class _OpRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: set[Any] = set()

    def __torch_dispatch__(  # type: ignore[no-untyped-def]
        self, func, types, args=(), kwargs=None
    ):
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
    After :meth:`apply`, ``output_change`` is the relative L2 change of the output on
    ``example_inputs`` (``None`` before, or without example inputs).
    """

    table: pd.DataFrame
    groups: list[ChannelGroup]
    budget: dict[str, Any]
    example_inputs: Any = field(default=None, repr=False)
    params: dict[str, Any] = field(default_factory=dict)
    output_change: float | None = None

    @property
    def widths(self) -> dict[str, int]:
        """``{group: new width}`` for every group (empty for a model without groups)."""
        return {str(g): int(w) for g, w in zip(self.table.group, self.table.new_width)}

    def _head(self) -> str:
        b = self.budget
        if not len(self.table):
            return "WidthPlan: the model has no channel groups; nothing to resize"
        ratio = b["achieved"] / b["original"] if b["original"] else float("nan")
        return (
            f"WidthPlan: {b['kind']} {b['original']:,} -> {b['achieved']:,} ({ratio:.2f}x; "
            f"target {b['target']:,}, {'met' if b['met'] else 'NOT met'})"
        )

    def __str__(self) -> str:
        text = self._head()
        if len(self.table):
            text += "\n" + self.table[_COLUMNS].to_string(index=False)
        if self.output_change is not None:
            text += f"\nlast apply changed the output by {self.output_change:.3g} (relative L2)"
        return text

    def __repr__(self) -> str:
        changed = (
            int((self.table.new_width != self.table.old_width).sum()) if len(self.table) else 0
        )
        return f"<{self._head()}; {len(self.table)} groups, {changed} changed>"

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

    def apply(self, model: nn.Module, init: Init = "net2net", *, seed: int = 0) -> nn.Module:
        """A new model with the planned widths (``model`` is not changed), verified.

        ``init`` as in :func:`widthwise.resize.resize` (same default, ``"net2net"``). Groups
        that narrow are cut by Torch-Pruning (highest-norm channels kept) where it can;
        widening (Torch-Pruning has none) and recurrent or attention-internal groups go through
        :func:`widthwise.resize.resize`.

        After the surgery the new model's groups are found again and their widths compared with
        the plan, and a forward pass is run; any mismatch raises :class:`ResizeError`. Widening
        with net2net keeps the function; narrowing does not (channels are dropped): the relative
        change of the output is stored in ``self.output_change``, with a :class:`UserWarning`
        when a function-preserving ``init`` moved it by more than ``OUTPUT_CHANGE_WARN``.
        """
        moved = [g for g, w in self.widths.items() if w != self.old_widths.get(g, w)]
        if not moved:
            try:
                return copy.deepcopy(model)
            except Exception as exc:
                raise ResizeError(f"the model cannot be copied: {_one_line(exc)}") from None
        failures = []
        # Narrowing is Torch-Pruning's job where it can cut the group; the rest (widening,
        # recurrent and attention-internal groups) is widthwise's own surgery. Where the cut
        # model fails the checks, widthwise's surgery does it all.
        paths = [True, False] if self.example_inputs is not None and init != "reinit" else [False]
        for use_tp in paths:
            try:
                new, after = self._resized(model, init, seed, use_tp)
                break
            except Exception as exc:  # every failure becomes one ResizeError
                failures.append(_one_line(exc))
        else:
            raise ResizeError(
                f"the plan for {', '.join(moved) or 'these groups'} could not be applied: "
                + failures[-1]
            ) from None
        if self.example_inputs is not None:
            self.output_change = _output_change(model, after, self.example_inputs)
            if (
                init != "reinit"
                and self.output_change is not None
                and self.output_change > OUTPUT_CHANGE_WARN
            ):
                warnings.warn(
                    f"narrowing changed the output by {self.output_change:.3g} (relative L2 on "
                    "example_inputs): net2net preserves the function only where it widens; "
                    "fine-tune the new model, or retrain it (init='reinit')",
                    stacklevel=2,
                )
        return new

    def _resized(
        self, model: nn.Module, init: Init, seed: int, use_tp: bool
    ) -> tuple[nn.Module, Any]:
        """The resized model and its output on ``example_inputs`` (None without them), with
        Torch-Pruning's cuts first when ``use_tp``; raises where the widths are not met."""
        groups, widths, base = self.groups, self.widths, model
        if use_tp:
            base, cut = shrink_with_torch_pruning(model, groups, widths, self.example_inputs)
            if cut:
                found = {g.name: g for g in find_groups(base, self.example_inputs)}
                lost = sorted(set(widths) - set(found))
                if lost:
                    raise ResizeError(f"after Torch-Pruning's cuts, groups not found again: {lost}")
                groups = list(found.values())
                widths = {k: v for k, v in widths.items() if k not in cut}
        new = resize(base, groups, widths, init=init, seed=seed)
        if self.example_inputs is None:
            return new, None
        try:
            with torch.no_grad():
                after = _call(new.eval(), self.example_inputs)
        except Exception as exc:  # surgery bug or unsupported module: say which
            raise ResizeError(f"the resized model's forward pass failed: {exc}") from exc
        new.train(model.training)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the groups it leaves out were left out before
            got = {g.name: g.width for g in find_groups(new, self.example_inputs)}
        wrong = {k: (v, got.get(k)) for k, v in self.widths.items() if got.get(k) not in (v,)}
        if wrong:
            raise ResizeError(f"achieved widths differ from the plan (planned, got): {wrong}")
        return new, after

    @property
    def old_widths(self) -> dict[str, int]:
        """``{group: width today}``."""
        return {str(g): int(w) for g, w in zip(self.table.group, self.table.old_width)}

    def to_config(self, model: nn.Module) -> dict[str, Any]:
        """The zoo model's constructor arguments with the planned widths.

        Works for :mod:`widthwise.reproduction.zoo` models: each width slot takes the new width of the group
        its layer produces.
        """
        if not hasattr(model, "width_layers"):
            raise TypeError(
                "to_config needs a widthwise.reproduction.zoo model (with width_layers)"
            )
        zoo_model: Any = model
        new = self.widths
        slot_width: dict[str, int] = {}
        for g in self.groups:
            for m in g.producers:
                slot_width.setdefault(m.param.rpartition(".")[0], new[g.name])
        layers = zip(zoo_model.width_layers(), zoo_model.widths())
        return dict(zoo_model.config_with_widths([slot_width.get(n, w) for n, w in layers]))


def _output_change(model: nn.Module, after: Any, example_inputs: Any) -> float | None:
    """Relative L2 distance between ``model``'s output and ``after`` (tensors only)."""
    was = model.training
    try:
        with torch.no_grad():
            before = _call(model.eval(), example_inputs)
    finally:
        model.train(was)
    if not (isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor)):
        return None
    if before.shape != after.shape:
        return None
    before, after = before.double(), after.double()
    return float((after - before).norm() / before.norm().clamp_min(1e-12))


class HasVerdicts(Protocol):
    """Anything that carries a verdict table (a :class:`widthwise.report.Report`)."""

    @property
    def table(self) -> pd.DataFrame: ...


@dataclass
class _Unit:
    """Groups that move together (tied by their width rules); the first one leads."""

    groups: list[ChannelGroup]
    step: int  # the leader's width stays a multiple of this
    direction: int = 0  # +1 widen (DS), -1 narrow (IS), 0 keep
    confidence: float = 0.0
    floor: int = 1  # narrowest leader width
    reason: str = ""
    need: float = UNDETERMINED_NEED  # P(needs width) read from the verdict
    verdict: str = "undetermined"  # the verdict the need was read from, for the reason
    judged: bool = False  # need read from an IS/DS verdict (else UNDETERMINED_NEED)
    shrink_ok: bool = False  # may narrow by need: one width, tied groups do not disagree
    shrunk_by_need: bool = False

    @property
    def lead(self) -> ChannelGroup:
        return self.groups[0]


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
    floor: Literal["ifm", "none"] = FLOOR,
    round_to: int = 1,
    min_confidence: float = 0.0,
    groups: Sequence[ChannelGroup] | None = None,
    tolerance: float = TOLERANCE,
    on_miss: Literal["warn", "raise"] = "warn",
) -> WidthPlan:
    """Plan new widths: widen DS groups, narrow IS groups, meet the budget.

    ``verdicts`` is the table of :func:`widthwise.verdicts.verdicts` (a DataFrame with
    ``group``, ``label`` and ``confidence``) or a :class:`~widthwise.report.Report`. ``budget``
    is ``"flops"`` or ``"params"`` (keep today's cost) or a number: a target cost, smaller or
    larger than today's, counted in ``budget_kind`` (default FLOPs). Verdicts below
    ``min_confidence`` count as undetermined. When the rules and floors cannot reach the budget
    the closest plan is returned with a :class:`BudgetWarning` (``on_miss="raise"``: a
    :class:`BudgetError`).
    """
    if on_miss not in ("warn", "raise"):
        raise ValueError(f"on_miss must be 'warn' or 'raise', got {on_miss!r}")
    table = verdicts if isinstance(verdicts, pd.DataFrame) else verdicts.table
    labels = {str(r.group): (str(r.label), float(r.confidence)) for r in table.itertuples()}
    groups = list(groups) if groups is not None else find_groups(model, example_inputs)
    if isinstance(budget, str):
        if budget not in ("flops", "params"):
            raise ValueError(f"budget must be 'flops', 'params' or a number, got {budget!r}")
        kind, target = budget, None
    else:
        kind, target = budget_kind or "flops", float(budget)
    if kind not in ("flops", "params"):
        raise ValueError(f"budget_kind must be 'flops' or 'params', got {kind!r}")
    cost_fn = (
        (lambda m: count_flops(m, example_inputs, warn=False)) if kind == "flops" else count_params
    )
    count_flops(model, example_inputs)  # warn once about undercounting
    original = cost_fn(model)
    target = original if target is None else target
    if target <= 0:
        raise ValueError(f"the budget must be positive, got {target}")
    settings = {
        "widen": widen,
        "max_factor": max_factor,
        "min_width": min_width,
        "min_fraction": min_fraction,
        "floor": floor,
        "round_to": round_to,
        "min_confidence": min_confidence,
        "tolerance": tolerance,
    }
    if not groups:
        warnings.warn("the model has no channel groups: the plan is empty", stacklevel=2)
        return WidthPlan(
            table=pd.DataFrame(columns=_COLUMNS),
            groups=[],
            budget={
                "kind": kind,
                "original": int(original),
                "target": round(target),
                "achieved": int(original),
                "met": bool(abs(original - target) <= tolerance * target),
            },
            example_inputs=example_inputs,
            params=settings,
        )

    units = _units(model, groups, labels, min_confidence, round_to)
    for u in units:  # the amounts: floors on IS units (the need pool's: _shrink_by_need)
        if u.direction >= 0:
            continue
        lo = _narrowest(u, min_width, min_fraction)
        if floor == "ifm":
            lo = max([lo] + [ifm_width(channel_vectors(model, g)) for g in u.groups])
        u.floor = math.ceil(lo / u.step) * u.step
    _trial_resizes(model, groups, units, example_inputs)
    moving = [u for u in units if u.direction]

    def widths_at(k: float, t: float) -> dict[str, int]:
        out = {g.name: g.width for g in groups}
        for u in moving:
            w0 = u.lead.width
            if u.direction > 0:
                raw = min(w0 * (1 + k * u.confidence), w0 * max_factor)
            else:
                raw = w0 * (1 - u.confidence * t)
            w = max(u.step, round(raw / u.step) * u.step)
            if u.direction < 0:
                w = min(w0, max(w, min(u.floor, w0)))
            out.update(_spread(u, w))
        return out

    # today's widths cost what the model costs (a model that cannot be copied still has a plan)
    cache: dict[tuple[tuple[str, int], ...], float] = {
        tuple(sorted((g.name, g.width) for g in groups)): original
    }

    def cost(w: dict[str, int]) -> float:
        key = tuple(sorted(w.items()))
        if key not in cache:
            try:
                cache[key] = cost_fn(_trial_resize(model, groups, w))
            except Exception:  # widths each fine alone, not together: out of reach
                cache[key] = math.inf
        return cache[key]

    t_max = max(
        (1 / u.confidence for u in moving if u.direction < 0 and u.confidence > 0), default=0.0
    )
    k_max = max_factor
    best = widths_at(widen, 0.0)
    # With nothing to narrow (t_max == 0: every moving group reads DS) only widening less helps.
    if cost(best) > target * (1 + tolerance):
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
    if cost(best) > target * (1 + tolerance):  # only here: the IS groups alone fall short
        pool = [u for u in units if u.shrink_ok and u.direction >= 0]
        _trial_narrowing(model, groups, pool, example_inputs)
        best = _shrink_by_need(units, best, cost, target, min_width, min_fraction)
        moving = [u for u in units if u.direction]
    best = _refine(best, moving, cost, target, tolerance, max_factor)
    for _ in range(3):  # every resize the plan asks for runs: the whole plan is tried once
        bad = _plan_failures(model, groups, units, best, example_inputs)
        if not bad:
            break
        for u in units:
            if id(u) in bad:
                u.direction, u.shrink_ok, u.shrunk_by_need = 0, False, False
                u.reason = f"kept: the planned resize failed ({bad[id(u)]})"
                best.update({g.name: g.width for g in u.groups})
        moving = [u for u in units if u.direction]
        best = _refine(best, moving, cost, target, tolerance, max_factor)
    if _plan_failures(model, groups, units, best, example_inputs):  # still: keep every width
        for u in moving:
            u.direction, u.shrunk_by_need = 0, False
            u.reason = "kept: no plan moving it could be resized and run"
        best = {g.name: g.width for g in groups}
    achieved = cost(best)
    met = abs(achieved - target) <= tolerance * target

    rows = []
    at_floor = []
    for u in units:
        for g in u.groups:
            label, conf = labels.get(g.name, ("undetermined", 0.0))
            new = best[g.name]
            why = u.reason
            if u.direction and not u.shrunk_by_need:  # (a need-shrunk unit says why itself)
                why = f"{label} (confidence {conf:.2f}): " + (
                    "would gain from more width" if u.direction > 0 else "wide enough"
                )
                if u.direction < 0 and best[u.lead.name] == min(u.floor, u.lead.width):
                    why += f"; stopped at its floor ({new})"
                    at_floor.append(g.name)
                if len(u.groups) > 1:
                    why += "; tied with " + ", ".join(h.name for h in u.groups if h is not g)
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
    plan_table = pd.DataFrame(rows, columns=_COLUMNS)
    if not met:
        kept = [str(r["group"]) for r in rows if r["new_width"] == r["old_width"]]
        short = "over" if achieved > target else "under"
        msg = (
            f"budget not met: {kind} {achieved:,.0f} = {achieved / original:.2f}x the original, "
            f"target {target / original:.2f}x ({short} by {abs(achieved - target) / target:.0%}); "
            f"the closest plan is returned. "
            + (f"At their floor: {', '.join(at_floor)}. " if at_floor else "")
            + (f"Kept at their width: {', '.join(kept)}. " if kept else "")
            + (
                "Lower the floors (floor='none', min_fraction, min_width)"
                if achieved > target
                else "Allow more growth (max_factor, widen)"
            )
            + " or choose a reachable budget."
        )
        if on_miss == "raise":
            raise BudgetError(msg)
        warnings.warn(msg, BudgetWarning, stacklevel=2)
    return WidthPlan(
        table=plan_table,
        groups=list(groups),
        budget={
            "kind": kind,
            "original": int(original),
            "target": round(target),
            "achieved": int(achieved),
            "met": bool(met),
        },
        example_inputs=example_inputs,
        params=settings,
    )


def _units(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    labels: dict[str, tuple[str, float]],
    min_confidence: float,
    round_to: int,
) -> list[_Unit]:
    """Groups joined by their ``tied`` rules, each with its direction from the verdicts."""
    rules = width_rules(model, groups)
    by_name = {g.name: g for g in groups}
    parent = {g.name: g.name for g in groups}

    def root(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n

    for g in groups:
        for other in getattr(rules.get(g.name), "tied", ()):
            if other in parent:
                parent[root(other)] = root(g.name)
    members: dict[str, list[ChannelGroup]] = {}
    for g in groups:  # model order: the first group of a tie leads
        members.setdefault(root(g.name), []).append(by_name[g.name])
    units = []
    for gs in members.values():
        step = max(round_to, 1)
        for g in gs:
            rule = rules.get(g.name, WidthRule())
            step = math.lcm(step, max(rule.multiple_of, 1), max(g.divisor, 1))
        u = _Unit(list(gs), step)
        seen = [labels.get(g.name, ("undetermined", 0.0)) for g in gs]
        determined = [(lab, c) for lab, c in seen if lab in ("IS", "DS") and c >= min_confidence]
        names = {lab for lab, _ in determined}
        one_width = len({g.width for g in gs}) == 1
        # Narrowing by need takes any unit of one width whose groups do not disagree; a unit
        # without a verdict it acts on counts as even odds (UNDETERMINED_NEED).
        u.shrink_ok = one_width and len(names) <= 1
        if determined:
            lab, c = min(determined, key=lambda d: d[1] if d[0] == "DS" else 1 - d[1])
            u.need = c if lab == "DS" else 1 - c
            u.verdict, u.judged = f"{lab} (confidence {c:.2f})", True
        elif seen[0][0] in ("IS", "DS"):
            u.verdict = f"{seen[0][0]} below min_confidence ({seen[0][1]:.2f} < {min_confidence})"
        if not one_width:
            u.reason = "tied to groups of another width: kept"
        elif not determined:
            lab, c = seen[0]
            u.reason = (
                f"{lab} below min_confidence ({c:.2f} < {min_confidence}): kept"
                if lab in ("IS", "DS")
                else "undetermined: kept"
            )
        elif len(names) > 1:
            u.reason = "tied groups disagree (IS and DS): kept"
        else:
            u.direction = 1 if names == {"DS"} else -1
            u.confidence = min(c for _, c in determined)
            no_widen = [g.name for g in gs if not rules.get(g.name, WidthRule()).widen]
            if u.direction > 0 and no_widen:
                why = rules[no_widen[0]].reason or "its width rule forbids widening"
                lab, c = seen[0]
                u.direction, u.reason = 0, f"DS (confidence {c:.2f}) but kept: {why}"
        u.floor = max(u.step, max(rules.get(g.name, WidthRule()).minimum for g in gs))
        units.append(u)
    return units


def _shrink_by_need(
    units: list[_Unit],
    best: dict[str, int],
    cost: Any,
    target: float,
    min_width: int,
    min_fraction: float,
) -> dict[str, int]:
    """Meet a budget that the verdicts' directions cannot reach, narrowing by need.

    Reached when every group reads DS (nothing to take width from: short, under-fitted runs read
    DS almost everywhere, docs/validity.md) or the IS groups already sit at their floors while
    the budget asks for less. The verdicts still rank the groups: each narrows in proportion to
    ``1 - P(needs width)``, the least likely to need width most, within ``min_fraction``,
    ``min_width`` and its width rule (IS groups arrive at their floors, the IFM floor included
    when asked for, and stay there). A group without a verdict the planner acts on
    (undetermined, or below ``min_confidence``) has P = :data:`UNDETERMINED_NEED`, so it
    narrows more than any DS group. Units tied to groups of another width, or whose tied groups
    disagree, stay. Units narrowed here are marked so the plan's reason says why they narrowed.
    """
    start = {id(u): best[u.lead.name] for u in units}
    lows = {id(u): min(_narrowest(u, min_width, min_fraction), start[id(u)]) for u in units}
    # (IS groups arrive here at their floors: they would only set the pace, not move)
    pool = [u for u in units if u.shrink_ok and lows[id(u)] < start[id(u)]]
    if not pool:
        return best
    spare = {id(u): 1.0 - u.need + 1e-3 for u in pool}
    top = max(spare.values())

    def widths_at(s: float) -> dict[str, int]:
        out = dict(best)
        for u in pool:
            raw = start[id(u)] * (1 - s * spare[id(u)] / top)
            w = max(lows[id(u)], round(raw / u.step) * u.step)
            out.update(_spread(u, min(w, start[id(u)])))
        return out

    # At s = 1 the units least likely to need width reach their floors; past it the others
    # keep narrowing at their own pace until, at s_max, every unit is at its floor.
    s_max = top / min(spare.values())
    if cost(widths_at(1.0)) <= target:
        new = widths_at(_bisect(lambda s: cost(widths_at(s)) - target, 0.0, 1.0))
    elif cost(widths_at(s_max)) <= target:
        new = widths_at(_bisect(lambda s: cost(widths_at(s)) - target, 1.0, s_max))
    else:
        new = widths_at(s_max)  # at the floors: the closest plan, the caller warns
    for u in pool:
        if new[u.lead.name] < start[id(u)] and u.direction >= 0:
            u.direction, u.confidence, u.floor = -1, 1.0 - u.need, lows[id(u)]
            u.shrunk_by_need = True
            p = f"P(needs width) {u.need:.2f}" if u.judged else f"P(needs width) taken as {u.need}"
            u.reason = (
                f"{u.verdict}, {p}: narrowed only to meet the budget, which the IS groups alone "
                "cannot reach; the groups least likely to need width narrow most"
            )
    return new


def _narrowest(u: _Unit, min_width: int, min_fraction: float) -> int:
    """The leader width ``u`` may narrow to under the amount rules (before any IFM floor)."""
    lo = max(u.floor, min_width, min_fraction * u.lead.width)
    return math.ceil(lo / u.step) * u.step  # a floor off the rule's multiples breaks resize


def _one_line(exc: BaseException) -> str:
    """An exception as one short line: its type where the message does not say it."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, ResizeError):
        text = f"{type(exc).__name__}: {text}"
    return text[:300]


def _runs(model: nn.Module, example_inputs: Any) -> None:
    """A forward pass of a trial model on the example inputs (raises where it fails)."""
    with torch.no_grad():
        _call(model.eval(), example_inputs)


def _plan_failures(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    units: Sequence[_Unit],
    widths: dict[str, int],
    example_inputs: Any,
) -> dict[int, str]:
    """The moving units (by ``id``) whose planned resize does not run: the whole plan is resized
    once, run on the example inputs and grouped again (the checks of ``WidthPlan.apply``);
    where that fails, the units are blamed by the widths found again, else by resizing them
    alone, else one at a time on top of the ones that passed."""
    moved = [u for u in units if any(widths[g.name] != g.width for g in u.groups)]

    def fails(ws: dict[str, int], regroup: bool) -> tuple[str | None, set[str]]:
        try:
            new = _trial_resize(model, groups, ws)
            _runs(new, example_inputs)
            if not regroup:
                return None, set()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = {g.name: g.width for g in find_groups(new, example_inputs)}
        except Exception as exc:  # any failure keeps the unit at its width
            return _one_line(exc), set()
        wrong = {k for k, v in ws.items() if got.get(k) != v}
        return (f"found again at another width: {sorted(wrong)}" if wrong else None), wrong

    if not moved:
        return {}
    why, wrong = fails(widths, regroup=True)
    if why is None:
        return {}
    if wrong:
        return {id(u): why for u in moved if any(g.name in wrong for g in u.groups)}
    base = {g.name: g.width for g in groups}
    alone = {id(u): fails({**base, **_spread(u, widths[u.lead.name])}, False)[0] for u in moved}
    bad = {k: w for k, w in alone.items() if w is not None}
    if bad:
        return bad
    ok = dict(base)
    for u in moved:  # only a combination fails: keep adding units while the whole runs
        trial = {**ok, **_spread(u, widths[u.lead.name])}
        w = fails(trial, False)[0]
        if w is None:
            ok = trial
        else:
            bad[id(u)] = w
    return bad


def _trial_resize(
    model: nn.Module, groups: Sequence[ChannelGroup], widths: dict[str, int]
) -> nn.Module:
    """A resize the budget search only counts: a config it cannot describe is the plan's business
    (``WidthPlan.apply`` warns), not each trial's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResizeWarning)
        return resize(model, groups, widths, init="reinit")


def _spread(u: _Unit, lead_width: int) -> dict[str, int]:
    """Widths of every group of ``u`` when its leader has ``lead_width`` (one shared factor)."""
    return {g.name: round(lead_width * g.width / u.lead.width) for g in u.groups}


def _trial_narrowing(
    model: nn.Module, groups: Sequence[ChannelGroup], units: Sequence[_Unit], example_inputs: Any
) -> None:
    """Resize each unit of the need pool one step narrower; one that fails leaves the pool."""
    for u in units:
        w = max(u.step, u.lead.width - u.step)
        failed = (
            "no narrower width"
            if w == u.lead.width
            else _resize_fails(model, groups, u, w, example_inputs)
        )
        if failed is not None:
            u.shrink_ok = False
            if not u.direction:
                u.reason += f"; narrowing it failed ({failed})"


def _trial_resizes(
    model: nn.Module, groups: Sequence[ChannelGroup], units: list[_Unit], example_inputs: Any
) -> None:
    """Resize every moving unit once, one step in its direction; keep those that fail."""
    for u in units:
        if not u.direction:
            continue
        w0 = u.lead.width
        w = w0 + u.step if u.direction > 0 else max(u.step, w0 - u.step)
        if w == w0:
            u.direction, u.reason = 0, f"kept: no narrower width is a multiple of {u.step}"
            u.shrink_ok = False
            continue
        failed = _resize_fails(model, groups, u, w, example_inputs)
        if failed is not None:
            # a failed narrowing also keeps it out of the need pool; a failed widening does not
            u.shrink_ok = u.shrink_ok and u.direction > 0
            u.direction, u.reason = 0, f"kept: resizing it failed ({failed})"


def _resize_fails(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    u: _Unit,
    lead_width: int,
    example_inputs: Any,
) -> str | None:
    """Why resizing ``u`` to ``lead_width`` fails, or None when it runs: resized, then run on
    the example inputs (a width written into the forward, e.g. a reshape to fixed sizes, only
    fails there)."""
    try:
        _check_widths(model, groups, _spread(u, lead_width))
        _runs(_trial_resize(model, groups, _spread(u, lead_width)), example_inputs)
    except Exception as exc:  # ResizeError, or a raw error from any module
        return _one_line(exc)
    return None


def _refine(
    best: dict[str, int],
    moving: list[_Unit],
    cost: Any,
    target: float,
    tolerance: float,
    max_factor: float,
) -> dict[str, int]:
    """Greedy one-step moves towards the target after the joint search.

    All IS groups narrow by one shared parameter, so integer widths can leave the cost a few
    percent off the target when a single channel is expensive. Each round tries every moving
    unit one step up and one step down (staying on its side of its old width, within its floor
    and ``max_factor``) and keeps the move that brings the cost closest to the target.
    """
    best = dict(best)
    for _ in range(4 * len(moving) + 8):
        gap = abs(cost(best) - target)
        if gap <= tolerance * target:
            break
        options = []
        for u in moving:
            w0 = u.lead.width
            for delta in (-u.step, u.step):
                w = best[u.lead.name] + delta
                if u.direction > 0 and not w0 <= w <= w0 * max_factor:
                    continue
                if u.direction < 0 and not min(u.floor, w0) <= w <= w0:
                    continue
                trial = {**best, **_spread(u, w)}
                options.append((abs(cost(trial) - target), u.lead.name, w, id(u)))
        if not options or min(options)[0] >= gap:
            break
        _, _name, w, uid = min(options)
        unit = next(u for u in moving if id(u) == uid)
        best.update(_spread(unit, w))
    return best


def _bisect(f: Any, lo: float, hi: float, iters: int = 30) -> float:
    """The smallest x in [lo, hi] with f(x) <= 0, for f decreasing (integer steps make it coarse)."""
    for _ in range(iters):
        mid = (lo + hi) / 2
        if f(mid) <= 0:
            hi = mid
        else:
            lo = mid
    return hi
