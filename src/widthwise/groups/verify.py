"""The permutation check: is permuting a group's channels a symmetry of the model?

:class:`Symmetry` runs the model functionally on jittered copies of its parameters and compares
the output before and after permuting channels in every member of the groups under test. All
candidate groups are permuted at once in one forward; only when that fails is the set halved
(group testing), so a model whose groups are all right costs two forwards, whatever its size
(three where the batch passes narrowly: see ``RTOL``).

Also here: :func:`call_model` (how example inputs are passed to a model) and the small helpers
that copy nested inputs and collect output tensors, shared with the finder and with resizing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from widthwise.groups.types import ChannelGroup

__all__ = ["RTOL", "Symmetry", "call_model", "map_tensors", "out_tensors"]

#: The check's tolerance, relative to each output tensor's largest finite value. Float32
#: rounding (the same sums in another order) moved the outputs of right groups by at most
#: 1.41e-6 of it (99th percentile 1.06e-6) over 599 passing checks: the tests' architectures,
#: the Hugging Face battery and 15 timm models (docs/design.md); wrong groups moved them by
#: 2.7e-4 or more; coat_tiny's heads (coupled by convolutions the tracer cannot see) by 1.8e-4
#: to 4.0e-4 (its near-miss candidates), which the former 1e-4 let through now and then.
#: 1e-5 is 7x the largest rounding change and 18x below the smallest change of CoaT's heads.
RTOL = 1e-5
#: A pass that moved the output by more than RTOL / _NARROW (about the largest rounding change
#: measured) is drawn again with fresh permutations, and must pass both: a coupling's change
#: varies 10x between draws, and a head-count search tries several candidates, each a chance
#: of a lucky draw.
_NARROW = 10
#: blocks this small are checked with the generators of their permutations too (see passes)
_SMALL = 8
#: the extra draws of a narrow pass
_REDRAWS = 1
#: models above this many parameter elements are checked in float32 (float64 doubles memory)
_FLOAT64_MAX = 200_000_000


def call_model(model: nn.Module, inputs: Any) -> Any:
    """Call ``model`` on example inputs: a dict as keywords, a tuple/list as positionals."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Any:
    """Copy of a (nested) input structure with every tensor detached, cloned and passed to fn."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().clone()
        return fn(t) if fn is not None else t
    if isinstance(obj, Mapping):  # dict, or e.g. a tokenizer's BatchEncoding
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    return obj


def out_tensors(out: Any, *, logits_only: bool = True) -> list[torch.Tensor]:
    """The floating-point tensors of a model output (tensor, dict, dataclass-like, nested); of a
    Hugging Face output with ``logits``, the logits alone (T5 also returns its encoder's last
    hidden state, which would pin the whole residual stream) unless ``logits_only`` is False."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, Mapping):  # dict, or a Hugging Face ModelOutput
        if logits_only and "logits" in out:  # the prediction; hidden states are not outputs
            return out_tensors(out["logits"])
        return [t for v in out.values() for t in out_tensors(v, logits_only=logits_only)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in out_tensors(v, logits_only=logits_only)]
    return []


class Symmetry:
    """Checks that permuting groups' channels (in every member) leaves the model output unchanged.

    Runs the model functionally on jittered copies of its parameters (so that ones-initialised
    norm weights or zero biases cannot hide a missing member), in eval mode and without grad.
    BatchNorm running statistics are permuted with their norm's affine members. A tied parameter
    appears once (``named_parameters()``), so permuting it permutes every use.

    ``seed`` picks the weight draw (and the permutations, from ``seed + 1``): a second check
    with another seed is independent of the first, for a member the first draw cannot see (a
    ReLU that is zero for every input under one draw).
    """

    def __init__(self, model: nn.Module, example_inputs: Any, seed: int = 0):
        self.model = model
        self.inputs = example_inputs
        self.seed = seed
        gen = torch.Generator().manual_seed(seed)
        self.params: dict[str, torch.Tensor] = {}
        for n, param in model.named_parameters():
            p = param.detach()
            if p.is_floating_point() and p.numel():
                noise = torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device)
                if p.ndim >= 2:  # fresh weights at the usual init scale: O(1) attention scores
                    p = noise * (p.shape[0] / p.numel()) ** 0.5
                else:
                    p = p + (0.5 * p.abs().mean().item() + 0.1) * noise
            self.params[n] = p
        self.buffers = dict(model.named_buffers())
        self.gen = torch.Generator().manual_seed(seed + 1)
        self._grads: dict[str, float] | None = None  # see blind()
        model.eval()
        base = self._in_float64()
        #: float64 where the forward runs so; else float32, whose rounding RTOL covers
        self.dtype = torch.float32 if base is None else torch.float64
        self.base = self._run(self.params, self.buffers) if base is None else base

    def _in_float64(self) -> list[torch.Tensor] | None:
        """Switch to float64 parameters, buffers and inputs when the forward runs so and
        returns float64 outputs (its base output), else None.

        In float64 the rounding of a right group's permutation is ~1e-15 of the output instead
        of up to 1.4e-6 (float32), and deep element-wise products amplify float32 rounding
        further: the star operations of timm's StarNet move a right group's output by 3.6e-5
        in float32, 3.6x ``RTOL``, and by 0.0 in float64. A model that casts to float32 inside
        (Hugging Face's RMSNorm) keeps float32 rounding there, which ``RTOL`` covers."""
        if sum(p.numel() for p in self.params.values()) > _FLOAT64_MAX:
            return None

        def wide(t: torch.Tensor) -> torch.Tensor:
            return t.double() if t.is_floating_point() else t

        params = {n: wide(p) for n, p in self.params.items()}
        buffers = {n: wide(b) for n, b in self.buffers.items()}
        inputs = map_tensors(self.inputs, wide)
        try:
            base = self._run(params, buffers, inputs)
        except Exception:  # an op without float64, a dtype assertion, mixed dtypes inside
            return None
        if not base or any(t.dtype != torch.float64 for t in base):
            return None
        self.params, self.buffers, self.inputs = params, buffers, inputs
        return base

    def blind(self, names: Sequence[str]) -> set[str]:
        """The parameters among ``names`` this check cannot see: the gradient of a random
        projection of the output is exactly zero on every entry, as behind a ReLU that is zero
        for the example inputs under this draw (a random deep network's gradients span many
        orders of magnitude, so no relative threshold separates "small" from "none").
        One forward and backward for all parameters, once per check; every name counts as
        blind where the backward fails (the caller then checks the slow way)."""
        if self._grads is None:
            self._grads = {}
            try:
                leaves = {
                    n: p.detach().clone().requires_grad_(True)
                    for n, p in self.params.items()
                    if p.is_floating_point()
                }
                from torch.nn.attention import SDPBackend, sdpa_kernel

                # the fused CPU attention's backward returns NaN on saturated scores (FastViT)
                with sdpa_kernel([SDPBackend.MATH]):
                    out = self._run({**self.params, **leaves}, self.buffers, grad=True)
                gen = torch.Generator().manual_seed(self.seed + 2)
                loss = sum(
                    (o * torch.randn(o.shape, generator=gen, dtype=o.dtype).to(o.device)).sum()
                    for o in out
                    if o.is_floating_point() and o.requires_grad
                )
                if isinstance(loss, torch.Tensor):
                    with sdpa_kernel([SDPBackend.MATH]):
                        got = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
                    self._grads = {
                        n: 0.0 if g is None else float(g.abs().max()) if g.numel() else 0.0
                        for n, g in zip(leaves, got)
                    }
            except Exception:  # an op without a backward, an in-place write to a leaf, ...
                self._grads = {}
        if not self._grads:
            return set(names)
        # exactly 0 (no path to the output under this draw) or NaN (a backward that is not
        # defined there) counts as blind: the slow way decides
        return {n for n in names if not 0.0 < self._grads.get(n, 0.0) < math.inf}

    def _run(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        inputs: Any = None,
        grad: bool = False,
    ) -> list[torch.Tensor]:
        """The model's output tensors with ``params`` and ``buffers`` in place of its own, on
        fresh copies of ``inputs`` (default: the example inputs)."""
        from torch.func import functional_call

        # functional_call leaves some of its tensors in a module reached under two names (a
        # submodule shared by several blocks: timm's CoaT): the model's own tensors are put back
        saved: list[tuple[dict[str, Any], str, Any]] = [
            (table, name, t)
            for mod in self.model.modules()
            for table in (mod._parameters, mod._buffers)
            for name, t in table.items()
        ]
        try:
            with torch.enable_grad() if grad else torch.no_grad():
                # fresh copies: a forward may write into them
                inputs = map_tensors(self.inputs if inputs is None else inputs)
                state = {**params, **buffers}
                if isinstance(inputs, Mapping):
                    out = functional_call(self.model, state, (), dict(inputs))
                elif isinstance(inputs, (tuple, list)):
                    out = functional_call(self.model, state, tuple(inputs))
                else:
                    out = functional_call(self.model, state, (inputs,))
        finally:
            for table, name, t in saved:
                if table.get(name) is not t:
                    table[name] = t
        return list(out_tensors(out))

    def _perm(self, g: ChannelGroup, kind: str = "random") -> torch.Tensor:
        """A random permutation within each block that moves something in every block of 2+
        (an identity draw, half the time for 2 channels, would pass any group). Blocks of one
        channel (GroupNorm with a group per channel) permute nothing: then the channels permute
        freely, a stronger symmetry that vouches for the weaker one."""
        block = g.width // g.divisor
        if block < 2:
            block, divisor = g.width, 1
        else:
            divisor = g.divisor
        parts = []
        for b in range(divisor):
            if kind == "roll":
                p = torch.arange(block).roll(1)
            elif kind == "swap":
                p = torch.arange(block)
                p[:2] = torch.tensor([1, 0])
            else:
                p = torch.randperm(block, generator=self.gen)
                if block > 1 and bool((p == torch.arange(block)).all()):
                    p = p.roll(1)
            parts.append(b * block + p)
        return torch.cat(parts)

    def passes(self, groups: Sequence[ChannelGroup]) -> bool:
        """Whether permuting every group of ``groups`` at once (groups must not overlap) leaves
        the output unchanged: one forward, a second with fresh permutations after a narrow pass.

        A group of one channel has nothing to permute: it passes as it did before the check
        (its members come from the dependency walk alone; its verdict reads "width 1", and a
        resize of it is checked by the resized model's forward and regrouping)."""
        groups = [g for g in groups if g.width > 1]
        if not groups:
            return True
        change = self.change(groups)
        for _ in range(_REDRAWS):
            if not 1 / _NARROW < change <= 1:
                break
            change = max(change, self.change(groups))
        if change <= 1 and any(g.width // max(g.divisor, 1) <= _SMALL for g in groups):
            # a few channels: a random draw lands in a smaller symmetry too often (DeepSeek-V4's
            # latent heads: 2 of 12 draws of 4 channels passed a wrong group). A rotation and a
            # swap generate every permutation of a block: both must pass as well.
            change = max(change, self.change(groups, "roll"), self.change(groups, "swap"))
        return change <= 1

    def change(self, groups: Sequence[ChannelGroup], kind: str = "random") -> float:
        """How far one random joint permutation of ``groups`` moves the output, in units of the
        tolerance (the largest ``max|a - b| / (RTOL * max|a|)`` over the output tensors): at
        most 1 passes; ``inf`` where a shape contract breaks or a finite value turns NaN/inf."""
        params, buffers = dict(self.params), dict(self.buffers)
        index: dict[tuple[str, int], torch.Tensor] = {}
        for g in groups:
            perm = self._perm(g, kind)
            for m in g.members:
                key = (m.param, m.dim)
                if key not in index:
                    # a buffer only as a probe: which fixed tensor ties a failing group
                    t = self.params[m.param] if m.param in self.params else self.buffers[m.param]
                    index[key] = torch.arange(t.shape[m.dim])
                r = torch.arange(m.repeat)
                dst = (m.offset + torch.arange(g.width)[:, None] * m.repeat + r).flatten()
                src = (m.offset + perm[:, None] * m.repeat + r).flatten()
                index[key][dst] = src
                if m.role == "norm" and m.param.endswith(".weight"):
                    mod = m.param.rpartition(".")[0]
                    for stat in ("running_mean", "running_var"):
                        if f"{mod}.{stat}" in self.buffers:
                            index[(f"{mod}.{stat}", 0)] = index[key]
        for (name, dim), idx in index.items():
            state = params if name in params else buffers
            state[name] = state[name].index_select(dim, idx.to(state[name].device))
        try:
            out = self._run(params, buffers)
        except Exception:  # a permutation that breaks a shape contract is not a symmetry
            return math.inf
        if len(out) != len(self.base):
            return math.inf
        worst = 0.0
        for a, b in zip(self.base, out):
            if a.shape != b.shape:
                return math.inf
            # equal where both are the same inf or both NaN (a NaN in the base output must not
            # fail every group)
            moved = ~((a == b) | (a.isnan() & b.isnan()))
            if not bool(moved.any()):
                continue
            diff = (a - b)[moved].abs().max().item()
            finite = a[a.isfinite()]
            scale = finite.abs().max().item() if finite.numel() else 0.0
            if not math.isfinite(diff) or scale == 0.0:
                return math.inf
            worst = max(worst, diff / (RTOL * scale))
        return worst

    def failing(self, groups: Sequence[ChannelGroup], ks: list[int] | None = None) -> list[int]:
        """Indices of the groups that break the symmetry: all at once, halving only on failure."""
        ks = list(range(len(groups))) if ks is None else ks
        if not ks or self.passes([groups[k] for k in ks]):
            return []
        if len(ks) == 1:
            return ks
        mid = len(ks) // 2
        return self.failing(groups, ks[:mid]) + self.failing(groups, ks[mid:])
