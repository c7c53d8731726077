"""Channel groups: the sets of channels that must be permuted or resized together.

A :class:`ChannelGroup` is plain data (no reference to the model or to Torch-Pruning's graph), so
it can be stored, compared across runs and sent between processes.

Every coupled tensor is a :class:`Member`. Channel ``i`` of a group of width ``W`` occupies the
contiguous block ``[offset + i*repeat, offset + (i+1)*repeat)`` along ``member.dim`` of that
parameter. ``repeat`` covers flatten→linear (one conv channel feeds ``H*W`` input columns),
``offset`` covers concatenation and the gate blocks of recurrent/attention weights.

How :func:`find_groups` finds them:

1. Torch-Pruning's ``DependencyGraph`` traces the model once. GRU/LSTM/RNN and
   ``nn.MultiheadAttention`` are cut out of that trace first (see ``widthwise._recurrent``: Torch-
   Pruning mis-groups or crashes on them) and their inner groups are written from their
   definition.
2. Each Torch-Pruning group (full channel indices, with the root index of every element) is
   turned into members: the index map must be one contiguous block per channel, which gives
   ``offset`` and ``repeat``; anything else is refused.
3. Groups that reach the model's output, or are added to its input (``x + f(x)``), are dropped:
   their width is fixed by the data. Matrix products on parameters outside a module
   (``F.linear``/``einsum``/``@`` on a raw ``nn.Parameter``) are refused: Torch-Pruning treats them
   as element-wise and would report a wrong group.
4. Every remaining group is verified: permuting its channels in all members (within blocks of
   ``width // divisor``) on randomised weights must leave the output unchanged. A failing
   attention group gets the smallest head count that passes as its ``divisor``; any other
   failure (a channel shuffle, a coupling the tracer cannot see) is left out. One
   :class:`GroupingWarning` names everything left out.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

Role = Literal["producer", "consumer", "norm", "other"]


@dataclass(frozen=True)
class Member:
    """One tensor slice coupled to a channel group.

    Attributes:
        param: qualified parameter name, as in ``model.named_parameters()``.
        dim: the tensor dimension that indexes channels (0: output rows, 1: input columns).
        role: ``"producer"`` (incoming weights: the rows that compute the channel),
            ``"consumer"`` (outgoing weights: the columns that read it), ``"norm"`` (BatchNorm,
            LayerNorm, GroupNorm affine) or ``"other"`` (biases, positional embeddings, ...).
        offset: index of channel 0's first element along ``dim``.
        repeat: consecutive elements along ``dim`` that belong to one channel.
        gate: for recurrent and attention weights, which block (``"r"``, ``"z"``, ``"n"``,
            ``"i"``, ``"f"``, ``"g"``, ``"o"``, ``"q"``, ``"k"``, ``"v"``); ``None`` otherwise.
    """

    param: str
    dim: int
    role: Role
    offset: int = 0
    repeat: int = 1
    gate: str | None = None

    def indices(self, channel: int) -> range:
        """The indices along ``dim`` that belong to ``channel``."""
        start = self.offset + channel * self.repeat
        return range(start, start + self.repeat)


@dataclass(frozen=True)
class ChannelGroup:
    """A set of channels resized or permuted together.

    Attributes:
        name: readable and stable across runs, derived from module names (``"features.3"``,
            ``"layer2 (residual)"``, ``"rnn.l0 (hidden)"``).
        width: number of channels.
        members: every coupled tensor slice.
        layers: names of the modules whose weights are members, in model order.
        kind: ``"linear"``, ``"conv"``, ``"residual"``, ``"recurrent"``, ``"attention"``,
            ``"embedding"`` or ``"other"``.
        divisor: the width must stay a multiple of this (attention heads, GroupNorm groups).
    """

    name: str
    width: int
    members: tuple[Member, ...]
    layers: tuple[str, ...] = ()
    kind: str = "other"
    divisor: int = 1
    notes: tuple[str, ...] = field(default=())

    @property
    def producers(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.role == "producer")

    @property
    def consumers(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.role == "consumer")

    @property
    def gates(self) -> tuple[str, ...]:
        """Gate labels present among the members, in first-seen order."""
        seen: dict[str, None] = {}
        for m in self.members:
            if m.gate is not None:
                seen.setdefault(m.gate, None)
        return tuple(seen)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["members"] = [asdict(m) for m in self.members]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ChannelGroup:
        return cls(
            name=d["name"],
            width=int(d["width"]),
            members=tuple(Member(**m) for m in d["members"]),
            layers=tuple(d.get("layers", ())),
            kind=d.get("kind", "other"),
            divisor=int(d.get("divisor", 1)),
            notes=tuple(d.get("notes", ())),
        )


class GroupingError(RuntimeError):
    """The model could not be traced or grouped; the message says why and what to try."""


class GroupingWarning(UserWarning):
    """Some channels were left out because they cannot be grouped reliably."""


# ---------------------------------------------------------------------------------------------
# find_groups


def find_groups(model, example_inputs, *, ignore=()) -> list[ChannelGroup]:
    """Find every channel group of ``model`` whose width can be tuned.

    Traces ``model`` once on ``example_inputs`` with Torch-Pruning's ``DependencyGraph``, adds
    the groups inside GRU/LSTM/RNN and ``nn.MultiheadAttention`` modules (which Torch-Pruning
    cannot trace), and copies the result into plain :class:`ChannelGroup` objects. The model's
    input channels and its outputs are never part of a group. Every group is then *verified*: its
    channels are permuted together (on randomised copies of the weights) and the model's output
    must not change. Whatever fails that check is left out, with one :class:`GroupingWarning`
    that names it, rather than reported wrongly.

    The model's weights and ``train``/``eval`` flags are left as they were.

    Args:
        model: the network.
        example_inputs: a tiny input: a tensor, a tuple/list of positional arguments, or a dict
            of keyword arguments (Hugging Face models).
        ignore: modules, module names, or module classes (and their submodules) whose output
            groups should be left out: a group is dropped when one of them computes it.

    Raises:
        GroupingError: the model cannot be run or traced on ``example_inputs``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> [(g.name, g.width, g.kind) for g in find_groups(model, torch.randn(1, 4))]
        [('0', 8, 'linear')]
        >>> [(m.param, m.dim, m.role) for m in find_groups(model, torch.randn(1, 4))[0].members]
        [('0.weight', 0, 'producer'), ('0.bias', 0, 'other'), ('2.weight', 1, 'consumer')]
    """
    import torch
    from torch import nn

    if not isinstance(model, nn.Module):
        raise GroupingError(f"find_groups needs a torch.nn.Module, got {type(model).__name__}")
    modes = {m: m.training for m in model.modules()}
    try:
        with torch.enable_grad():
            return _Finder(model, example_inputs, ignore).run()
    finally:
        for m, training in modes.items():
            m.training = training


_MATMUL_OPS = ("mm", "matmul", "einsum", "linear", "convolution", "dot", "attention", "embedding")


class _Raw:
    """A group while it is being assembled (still holds module references)."""

    def __init__(self, width: int):
        self.width = width
        self.members: list[Member] = []
        self.reasons: list[str] = []
        self.output = False
        self.tied_input = False
        self.residual = False
        self.attention = False
        self.rearranged = False
        self.divisor = 1
        self.notes: list[str] = []
        self.name: str | None = None
        self.kind: str | None = None
        self.rnn_out: list[tuple[str, object, int, int]] = []  # (name, rnn, offset, repeat)

    def add(self, members) -> None:
        for m in members:
            if m not in self.members:
                self.members.append(m)


class _Finder:
    def __init__(self, model, example_inputs, ignore):
        import torch

        self.model = model
        self.example_inputs = example_inputs
        self.module_name = {m: n for n, m in model.named_modules()}
        self.module_order = {n: i for i, n in enumerate(self.module_name.values())}
        self.param_name = {p: n for n, p in model.named_parameters()}
        self.param_order = {n: i for i, n in enumerate(self.param_name.values())}
        self.params = dict(model.named_parameters())
        self.modules = dict(model.named_modules())
        self.ignored = self._resolve_ignore(ignore)
        self.left_out: dict[str, str] = {}
        self._torch = torch

    # -- input / output plumbing ------------------------------------------------------------

    def _resolve_ignore(self, ignore) -> set[str]:
        names: set[str] = set()
        for item in ignore:
            if isinstance(item, str):
                if item not in self.module_order:
                    raise GroupingError(f"ignore: the model has no module named {item!r}")
                names.add(item)
            elif isinstance(item, type):
                names.update(n for m, n in self.module_name.items() if isinstance(m, item))
            elif item in self.module_name:
                names.add(self.module_name[item])
            else:
                raise GroupingError(f"ignore: {item!r} is not a module of this model")
        return {n for n in names if n} | {
            m for m in self.module_order if any(m.startswith(n + ".") for n in names if n)
        }

    def _call(self, model, inputs):
        return _call_model(model, inputs)

    def _with_grad(self, obj):
        """Floating inputs as leaves that require grad, so ops on them are visible in the graph."""

        def leaf(t):
            t = t.requires_grad_(True)
            self.input_leaves.append(t)
            return t

        return _map_tensors(obj, lambda t: leaf(t) if t.is_floating_point() else t)

    def _out_tensors(self, out) -> list:
        torch = self._torch
        if isinstance(out, torch.Tensor):
            return [out] if out.is_floating_point() else []
        if isinstance(out, dict):
            return [t for v in out.values() for t in self._out_tensors(v)]
        if isinstance(out, (tuple, list)):
            return [t for v in out for t in self._out_tensors(v)]
        return []

    # -- main --------------------------------------------------------------------------------

    def run(self) -> list[ChannelGroup]:
        import torch_pruning as tp

        from widthwise import _recurrent as rec

        outputs: list = []

        def forward_fn(model, inputs):
            out = self._call(model, inputs)
            outputs.extend(t for t in self._out_tensors(out) if t.grad_fn is not None)
            return outputs

        boundary_types = {
            type(m) for m in self.model.modules() if isinstance(m, rec.BOUNDARY_TYPES)
        }
        self.input_leaves: list = []
        # inputs as grad-requiring leaves reveal x + f(x) on the input; a model that writes
        # into its input in place cannot take them, so it is traced on the plain inputs
        attempts = [self._with_grad(self.example_inputs), _map_tensors(self.example_inputs)]
        for k, traced_inputs in enumerate(attempts):
            outputs.clear()
            with (
                rec.CutHooks(self.model) as cuts,
                _no_new_hooks(self.model),
                warnings.catch_warnings(),
            ):
                warnings.simplefilter("ignore")
                try:
                    dg = tp.DependencyGraph().build_dependency(
                        self.model,
                        example_inputs=traced_inputs,
                        forward_fn=forward_fn,
                        customized_pruners={t: rec.BoundaryPruner() for t in boundary_types},
                        verbose=False,
                    )
                    break
                except Exception as e:
                    if k + 1 < len(attempts):
                        continue
                    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    raise GroupingError(
                        f"could not trace {type(self.model).__name__} on the example inputs "
                        f"({type(e).__name__}: {first}); check that the model runs on them "
                        "(tensor: model(x), tuple/list: model(*x), dict: model(**x)) and that "
                        "its forward builds an autograd graph"
                    ) from e
        del attempts
        if not outputs:
            raise GroupingError(
                f"{type(self.model).__name__} returned no tensor that depends on its parameters; "
                "is its forward wrapped in torch.no_grad()?"
            )
        try:
            self.input_problems = cuts.input_problems
            raws = self._collect(dg, {t.grad_fn for t in outputs}, cuts.problems, rec)
        finally:
            # the graph holds the autograd graph of the trace (and the model): drop it now
            dg.module2node.clear()
            outputs.clear()
            self.input_leaves.clear()
            del dg, traced_inputs
        groups = self._finish(raws)
        if self.left_out:
            items = "; ".join(f"{k}: {v}" for k, v in self.left_out.items())
            warnings.warn(
                f"find_groups left out {len(self.left_out)} part(s) of "
                f"{type(self.model).__name__} it cannot group reliably ({items}). The groups it "
                "returns are verified; these channels are simply not tracked.",
                GroupingWarning,
                stacklevel=3,
            )
        return groups

    # -- Torch-Pruning groups -> raw groups --------------------------------------------------

    def _collect(self, dg, out_fns, problems, rec) -> list[_Raw]:
        import torch_pruning as tp
        from torch import nn

        ops = tp.ops
        root_types = (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding, *rec.BOUNDARY_TYPES)
        roots = sorted(
            (m for m in dg.module2node if isinstance(m, root_types) and m in self.module_name),
            key=lambda m: self.module_order[self.module_name[m]],
        )
        leaves = {id(t) for t in self.input_leaves}
        # parameters outside any module Torch-Pruning understands (it guesses their channel dim)
        self.unwrapped = {p: self.param_name[p] for p, _ in dg.unwrapped_parameters}
        visited: set = set()
        raws: list[_Raw] = []
        for root in roots:
            if root in visited:
                continue
            pruner = dg.get_pruner_of_module(root)
            width = pruner.get_out_channels(root)
            rname = self.module_name[root]
            try:
                group = dg.get_pruning_group(root, pruner.prune_out_channels, list(range(width)))
            except Exception as e:
                self.left_out[rname] = f"Torch-Pruning failed on it ({type(e).__name__}: {e})"
                continue
            raw = _Raw(width)
            for item in group:
                node, handler = item.dep.target, item.dep.handler
                if dg.is_out_channel_pruning_fn(handler):
                    visited.add(node.module)
                self._convert_item(
                    raw,
                    node,
                    handler,
                    item.idxs,
                    item.root_idxs,
                    out_fns,
                    leaves,
                    problems,
                    ops,
                    rec,
                )
            raws.append(raw)
        # groups inside the recurrent and attention modules
        for module, mname in self.module_name.items():
            if isinstance(module, nn.RNNBase):
                raws.extend(self._recurrent(mname, module, raws, problems, rec))
            elif isinstance(module, nn.MultiheadAttention) and module in dg.module2node:
                raw = _Raw(module.embed_dim)
                raw.add(rec.mha_inner_members(mname, module))
                raw.kind, raw.name = "attention", f"{mname} (attention)"
                raw.divisor = module.num_heads
                if mname in problems:
                    raw.reasons.append(problems[mname])
                raws.append(raw)
        return raws

    def _convert_item(self, raw, node, handler, idxs, roots, out_fns, leaves, problems, ops, rec):
        t = node.type
        module = node.module
        mname = self.module_name.get(module) if t != ops.OPTYPE.PARAMETER else None
        # a pruner whose in and out functions are one (norms, element-wise ops) reports "out"
        is_in = handler.__name__ == "prune_in_channels"
        if node.grad_fn in out_fns and not is_in:
            raw.output = True
        if t == ops.OPTYPE.OUTPUT:
            raw.output = True
            return
        layout = _layout(idxs, roots, raw.width)
        if t in (
            ops.OPTYPE.CONV,
            ops.OPTYPE.LINEAR,
            ops.OPTYPE.DEPTHWISE_CONV,
            ops.OPTYPE.BN,
            ops.OPTYPE.LN,
            ops.OPTYPE.GN,
            ops.OPTYPE.IN,
            ops.OPTYPE.PRELU,
            ops.OPTYPE.EMBED,
            ops.OPTYPE.PARAMETER,
            ops.OPTYPE.CUSTOMIZED,
        ):
            if layout is None:
                what = mname if mname is not None else self.param_name.get(module, "?")
                raw.reasons.append(f"channels reaching '{what}' are split or rearranged")
                raw.rearranged = True
                return
            off, rep = layout

            def m(param: str, dim: int, role: str) -> Member:
                return Member(f"{mname}.{param}" if mname else param, dim, role, off, rep)

        if t == ops.OPTYPE.CONV:
            if module.groups > 1:
                raw.reasons.append(f"grouped convolution '{mname}' (groups={module.groups})")
                return
            wdim = 1 if module.transposed else 0
            if not is_in:
                raw.add([m("weight", wdim, "producer")])
                if module.bias is not None:
                    raw.add([m("bias", 0, "other")])
            else:
                raw.add([m("weight", 1 - wdim, "consumer")])
        elif t == ops.OPTYPE.DEPTHWISE_CONV:
            if module.in_channels != module.out_channels:
                raw.reasons.append(f"depthwise convolution '{mname}' changes the width")
                return
            raw.add([m("weight", 0, "producer")])
            if module.bias is not None:
                raw.add([m("bias", 0, "other")])
        elif t == ops.OPTYPE.LINEAR:
            if not is_in:
                raw.add([m("weight", 0, "producer")])
                if module.bias is not None:
                    raw.add([m("bias", 0, "other")])
            else:
                raw.add([m("weight", 1, "consumer")])
        elif t in (ops.OPTYPE.BN, ops.OPTYPE.LN, ops.OPTYPE.GN, ops.OPTYPE.IN):
            if t == ops.OPTYPE.GN:
                raw.divisor = math.lcm(raw.divisor, module.num_groups)
            w = getattr(module, "weight", None)
            if w is not None and w.ndim != 1:
                raw.reasons.append(f"'{mname}' normalises over several dimensions")
                return
            for pname in ("weight", "bias"):
                if getattr(module, pname, None) is not None:
                    raw.add([m(pname, 0, "norm")])
        elif t == ops.OPTYPE.PRELU:
            if module.weight.numel() > 1:
                raw.add([m("weight", 0, "other")])
        elif t == ops.OPTYPE.EMBED:
            raw.add([m("weight", 1, "producer")])
        elif t == ops.OPTYPE.PARAMETER:
            name = self.param_name[module]
            dim = node.pruning_dim if node.pruning_dim >= 0 else module.ndim - 1
            raw.add([Member(name, dim, "other", off, rep)])
        elif t == ops.OPTYPE.CUSTOMIZED:
            if mname in problems:
                raw.reasons.append(problems[mname])
            if is_in and mname in self.input_problems:
                raw.reasons.append(self.input_problems[mname])
            if is_in:
                raw.add(
                    [
                        replace(x, offset=off, repeat=rep)
                        for x in rec.boundary_in_members(mname, module)
                    ]
                )
            elif hasattr(module, "embed_dim"):
                raw.add(rec.boundary_out_members(mname, module))
                raw.notes.append(
                    f"nn.MultiheadAttention '{mname}' needs this width equal to its embed_dim"
                )
                raw.divisor = math.lcm(raw.divisor, module.num_heads)
            else:
                raw.rnn_out.append((mname, module, off, rep))
        elif t == ops.OPTYPE.ELEMENTWISE or t == ops.OPTYPE.RESHAPE:
            self._inspect_op(raw, node, leaves)

    def _inspect_op(self, raw, node, leaves) -> None:
        gf = node.grad_fn
        if gf is None or not hasattr(gf, "name"):
            return
        op = gf.name().lower().replace("backward", "").rstrip("0123456789")
        parents = [f for f, _ in gf.next_functions if f is not None]
        if any(k in op for k in ("view", "reshape", "transpose", "permute")):
            raw.rearranged = True
        if any(k in op for k in _MATMUL_OPS):
            weights = [_weight_leaves(f, self.param_name) for f in parents]
            params = sorted(
                {self.unwrapped[p] for w in weights if w for p in w if p in self.unwrapped}
            )
            if params:
                for p in params:
                    self.left_out.setdefault(
                        f"parameter '{p}'",
                        f"used by {op}() outside a module (F.linear/matmul/einsum on a raw "
                        "nn.Parameter); wrap it in nn.Linear to have it grouped",
                    )
                raw.reasons.append(
                    "parameter "
                    + ", ".join(f"'{p}'" for p in params)
                    + f" is used by {op}() outside a module"
                )
            elif sum(w is None for w in weights) >= 2:
                # A product of two activations: q @ k^T, attn @ v. Sparse products are message
                # passing (A @ H mixes nodes, not channels), as in a GCN.
                raw.attention = raw.attention or not op.startswith("sparse")
        if op.startswith(("add", "sub")) and len(parents) >= 2:
            raw.residual = True
        for f in parents:
            var = getattr(f, "variable", None)
            # x + f(x) on the model input: these channels are the input's, not tunable
            if (
                var is not None
                and id(var) in leaves
                and var.ndim >= 2
                and raw.width in (var.shape[1], var.shape[-1])
            ):
                raw.tied_input = True

    def _recurrent(self, name, rnn, raws, problems, rec) -> list[_Raw]:
        if getattr(rnn, "proj_size", 0):
            self.left_out[name] = "LSTM with proj_size > 0 is not supported"
            for raw in raws:
                if any(r[1] is rnn for r in raw.rnn_out):
                    raw.reasons.append(f"'{name}' (LSTM with proj_size) is not supported")
            return []
        h = rnn.hidden_size
        dirs = ("", "_reverse") if rnn.bidirectional else ("",)
        out: list[_Raw] = []
        for layer in range(rnn.num_layers):
            for d, sfx in enumerate(dirs):
                members = rec.rnn_layer_members(name, rnn, layer, sfx)
                label = f"{name}.l{layer}{sfx} (hidden)"
                if layer + 1 < rnn.num_layers:
                    raw = _Raw(h)
                    raw.add(members)
                    out.append(raw)
                else:  # the last layer joins the group that Torch-Pruning built downstream
                    host = next((r for r in raws if any(x[1] is rnn for x in r.rnn_out)), None)
                    if host is None:
                        raw = _Raw(h)
                        raw.add(members)
                        out.append(raw)
                    elif len(dirs) == 1:
                        host.add(members)
                        raw = host
                    else:
                        raw = _Raw(h)
                        raw.add(members)
                        raw.output, raw.tied_input = host.output, host.tied_input
                        raw.reasons = list(host.reasons)
                        if any(mm.role == "producer" for mm in host.members):
                            raw.reasons.append(f"bidirectional '{name}' feeds a residual sum")
                        # direction d reads entries [d*h, (d+1)*h) of the output channels
                        raw.add(
                            replace(mm, offset=mm.offset + d * h * mm.repeat) for mm in host.members
                        )
                        out.append(raw)
                raw.kind, raw.name = "recurrent", label
                if name in problems:
                    raw.reasons.append(problems[name])
        for r in raws:
            if len(dirs) == 2 and any(x[1] is rnn for x in r.rnn_out):
                r.members.clear()  # replaced by the per-direction copies above
                r.output = False
        return out

    # -- raw groups -> verified ChannelGroups ------------------------------------------------

    def _finish(self, raws: list[_Raw]) -> list[ChannelGroup]:
        cands: list[tuple[_Raw, ChannelGroup]] = []
        for raw in raws:
            if not raw.members or raw.output or raw.tied_input:
                continue
            members = sorted(
                raw.members, key=lambda m: (self.param_order[m.param], m.dim, m.offset)
            )
            layers = sorted(
                {m.param.rpartition(".")[0] for m in members},
                key=lambda n: self.module_order.get(n, -1),
            )
            if any(
                m.role == "producer" and m.param.rpartition(".")[0] in self.ignored for m in members
            ):
                continue
            group = ChannelGroup(
                name=raw.name or self._name(raw, members),
                width=raw.width,
                members=tuple(members),
                layers=tuple(layers),
                kind=raw.kind or self._kind(raw, members),
                divisor=raw.divisor,
                notes=tuple(dict.fromkeys(raw.notes)),
            )
            if raw.reasons:
                self.left_out[group.name] = "; ".join(dict.fromkeys(raw.reasons))
                continue
            problem = self._shape_problem(group)
            if problem:
                self.left_out[group.name] = problem
                continue
            cands.append((raw, group))
        cands = self._drop_overlaps(cands)
        groups = self._verify(cands)
        groups.sort(
            key=lambda g: min(self.param_order[m.param] for m in (g.producers or g.members))
        )
        seen: dict[str, int] = {}
        named = []
        for g in groups:
            k = seen[g.name] = seen.get(g.name, 0) + 1
            named.append(g if k == 1 else replace(g, name=f"{g.name} #{k}"))
        return named

    def _name(self, raw: _Raw, members: list[Member]) -> str:
        producers = list(
            dict.fromkeys(m.param.rpartition(".")[0] for m in members if m.role == "producer")
        )
        if not producers:
            producers = [members[0].param.rpartition(".")[0]]
        if raw.attention:
            base = _common_prefix(producers) or "+".join(producers)
            return f"{base} (attention)"
        if len(producers) > 1 and raw.residual:
            base = _common_prefix(producers)
            if not base:
                tops = [p.split(".")[0] for p in producers]
                top = max(tops, key=lambda t: (tops.count(t), -tops.index(t)))
                if tops.count(top) > 1:
                    base = _common_prefix([p for p in producers if p.split(".")[0] == top])
                else:
                    base = "+".join(producers)
            return f"{base} (residual)"
        return producers[0]

    def _kind(self, raw: _Raw, members: list[Member]) -> str:
        from torch import nn

        if raw.attention:
            return "attention"
        producers = [m for m in members if m.role == "producer"]
        if len({m.param for m in producers}) > 1 and raw.residual:
            return "residual"
        first = self.modules.get(producers[0].param.rpartition(".")[0]) if producers else None
        if isinstance(first, nn.modules.conv._ConvNd):
            return "conv"
        if isinstance(first, nn.Linear):
            return "linear"
        if isinstance(first, nn.Embedding):
            return "embedding"
        return "other"

    def _shape_problem(self, g: ChannelGroup) -> str | None:
        for m in g.members:
            p = self.params.get(m.param)
            if p is None:
                return f"'{m.param}' is not a parameter of the model"
            need = m.offset + g.width * m.repeat
            if m.dim >= p.ndim or p.shape[m.dim] < need:
                size = p.shape[m.dim] if m.dim < p.ndim else "no"
                return (
                    f"'{m.param}' has {size} entries along dim {m.dim} but the group needs {need}"
                )
        return None

    def _drop_overlaps(self, cands):
        spans: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
        for k, (_, g) in enumerate(cands):
            for m in g.members:
                spans.setdefault((m.param, m.dim), []).append(
                    (m.offset, m.offset + g.width * m.repeat, k)
                )
        bad: dict[int, str] = {}
        for (param, dim), s in spans.items():
            s = sorted(set(s))
            for (a0, a1, ka), (b0, b1, kb) in itertools.combinations(s, 2):
                if a0 < b1 and b0 < a1 and (ka != kb or (a0, a1) != (b0, b1)):
                    for k in (ka, kb):
                        bad.setdefault(
                            k, f"it claims '{param}' dim {dim} indices that overlap another group"
                        )
        for k, why in bad.items():
            self.left_out[cands[k][1].name] = why
        return [c for k, c in enumerate(cands) if k not in bad]

    # -- verification by permutation symmetry ------------------------------------------------

    def _verify(self, cands) -> list[ChannelGroup]:
        """Keep the groups whose joint channel permutation leaves the model output unchanged."""
        if not cands:
            return []
        sym = _Symmetry(self.model, self.example_inputs, self._call, self._out_tensors)
        groups = [g for _, g in cands]
        failing = sym.failing(groups, list(range(len(groups))))
        for k in failing:
            raw, g = cands[k]
            fixed = None
            if raw.attention or g.kind == "attention":
                for d in _divisors(g.width):
                    if d % g.divisor == 0 and sym.passes([replace(g, divisor=d)]):
                        fixed = replace(g, divisor=d)
                        break
            if fixed is not None:
                groups[k] = fixed
                continue
            why = (
                "its channels are rearranged between layers (view/transpose/permute, "
                "e.g. a channel shuffle)"
                if raw.rearranged
                else "permuting its channels together changes the model output (a coupling "
                "the tracer cannot see)"
            )
            self.left_out[g.name] = why
            groups[k] = None
        return [g for g in groups if g is not None]


class _Symmetry:
    """Checks that permuting a group's channels (in every member) is a symmetry of the model.

    Runs the model functionally on jittered copies of its parameters (so that ones-initialised
    norm weights or zero biases cannot hide a missing member), in eval mode and without grad.
    BatchNorm running statistics are permuted with their norm's affine members.
    """

    def __init__(self, model, example_inputs, call, out_tensors):
        import torch

        self.torch = torch
        self.model = model
        self.inputs = example_inputs
        self.call = call
        self.out_tensors = out_tensors
        gen = torch.Generator().manual_seed(0)
        self.params = {}
        for n, p in model.named_parameters():
            p = p.detach()
            if p.is_floating_point() and p.numel():
                noise = torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device)
                if p.ndim >= 2:  # fresh weights at the usual init scale: O(1) attention scores
                    p = noise * (p.shape[0] / p.numel()) ** 0.5
                else:
                    p = p + (0.5 * p.abs().mean().item() + 0.1) * noise
            self.params[n] = p
        self.buffers = {n: b for n, b in model.named_buffers()}
        self.modules = dict(model.named_modules())
        self.gen = torch.Generator().manual_seed(1)
        model.eval()
        self.base = self._run(self.params, self.buffers)

    def _run(self, params, buffers):
        from torch.func import functional_call

        torch = self.torch
        with torch.no_grad():
            inputs = _map_tensors(self.inputs)  # fresh copies: a forward may write into them
            if isinstance(inputs, Mapping):
                out = functional_call(self.model, {**params, **buffers}, (), inputs)
            elif isinstance(inputs, (tuple, list)):
                out = functional_call(self.model, {**params, **buffers}, tuple(inputs))
            else:
                out = functional_call(self.model, {**params, **buffers}, (inputs,))
        return [t.float() for t in self.out_tensors(out)]

    def _perm(self, g: ChannelGroup):
        torch = self.torch
        block = g.width // g.divisor
        return torch.cat(
            [b * block + torch.randperm(block, generator=self.gen) for b in range(g.divisor)]
        )

    def passes(self, groups) -> bool:
        torch = self.torch
        params, buffers = dict(self.params), dict(self.buffers)
        index: dict[tuple[str, int], object] = {}
        for g in groups:
            perm = self._perm(g)
            for m in g.members:
                key = (m.param, m.dim)
                if key not in index:
                    index[key] = torch.arange(self.params[m.param].shape[m.dim])
                r = torch.arange(m.repeat)
                dst = (m.offset + torch.arange(g.width)[:, None] * m.repeat + r).flatten()
                src = (m.offset + perm[:, None] * m.repeat + r).flatten()
                index[key][dst] = src
                if m.role == "norm" and m.param.endswith(".weight"):
                    mod = m.param.rpartition(".")[0]
                    for b in ("running_mean", "running_var"):
                        if f"{mod}.{b}" in self.buffers:
                            index[(f"{mod}.{b}", 0)] = index[key]
        for (name, dim), idx in index.items():
            src = params if name in params else buffers
            src[name] = src[name].index_select(dim, idx.to(src[name].device))
        out = self._run(params, buffers)
        for a, b in zip(self.base, out):
            tol = 1e-4 * a.abs().max().item() + 1e-7 if a.numel() else 0.0
            if a.shape != b.shape or (a - b).abs().max().item() > tol:
                return False
        return True

    def failing(self, groups, ks: list[int]) -> list[int]:
        """Indices of the groups that break the symmetry (group testing by halving)."""
        if not ks or self.passes([groups[k] for k in ks]):
            return []
        if len(ks) == 1:
            return ks
        mid = len(ks) // 2
        return self.failing(groups, ks[:mid]) + self.failing(groups, ks[mid:])


# ---------------------------------------------------------------------------------------------
# helpers


def _map_tensors(obj, fn=None):
    """Copy of a (nested) input structure with every tensor detached, cloned and passed to fn."""
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach().clone()
        return fn(t) if fn is not None else t
    if isinstance(obj, Mapping):  # dict, or e.g. a tokenizer's BatchEncoding
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map_tensors(v, fn) for v in obj)
    return obj


@contextlib.contextmanager
def _no_new_hooks(model):
    """Remove forward hooks added inside the block (Torch-Pruning leaves its own behind when the
    forward raises)."""
    before = {m: set(m._forward_hooks) for m in model.modules()}
    try:
        yield
    finally:
        for m, keys in before.items():
            for k in set(m._forward_hooks) - keys:
                m._forward_hooks.pop(k, None)


def _layout(idxs, roots, width: int) -> tuple[int, int] | None:
    """``(offset, repeat)`` if channel ``r`` owns exactly ``[offset + r*repeat, +repeat)``."""
    if not idxs or len(idxs) % width:
        return None
    rep = len(idxs) // width
    pairs = sorted(zip(roots, idxs))
    off = min(idxs)
    expected = [(c, off + c * rep + k) for c in range(width) for k in range(rep)]
    return (off, rep) if pairs == expected else None


def _weight_leaves(grad_fn, params, depth: int = 6) -> list | None:
    """The parameters behind ``grad_fn`` if it is computed from parameters alone (a weight such
    as ``w`` or ``w.t()``), or None if it depends on an activation or an input."""
    var = getattr(grad_fn, "variable", None)
    if var is not None:
        return [var] if var in params else None
    parents = [f for f, _ in grad_fn.next_functions if f is not None]
    if depth == 0 or not parents:
        return None
    leaves: list = []
    for f in parents:
        sub = _weight_leaves(f, params, depth - 1)
        if sub is None:
            return None
        leaves += sub
    return leaves


def _call_model(model, inputs):
    """Call ``model`` on example inputs: a dict as keywords, a tuple/list as positionals."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _common_prefix(names: list[str]) -> str:
    parts = [n.split(".") for n in names]
    common: list[str] = []
    for segs in zip(*parts):
        if len(set(segs)) != 1:
            break
        common.append(segs[0])
    return ".".join(common)


def _divisors(n: int) -> list[int]:
    return [d for d in range(2, n // 2 + 1) if n % d == 0]
