"""find_groups: Torch-Pruning's dependency graph turned into verified, plain channel groups.

Contract: :func:`find_groups` returns only groups whose joint channel permutation was checked to
leave the model's output unchanged; whatever it cannot group is left out with exactly one
:class:`GroupingWarning` that names each part and says why. It never hangs (``timeout``) and
never changes the model (weights, buffers, train/eval flags, hooks).

How it works:

1. Torch-Pruning's ``DependencyGraph`` traces the model once. GRU/LSTM/RNN and
   ``nn.MultiheadAttention`` are cut out of that trace first (:mod:`.recurrent`: Torch-Pruning
   mis-groups or crashes on them) and their inner groups are written from their definition.
   Hugging Face's ``Conv1D`` (a Linear with a transposed weight) gets its own pruner, and
   ``F.linear`` on a raw weight and bias is routed through a stand-in ``nn.Linear``. Raw
   parameters of known structures (expert stacks, Transformer-XL attention) get the channel dim
   :mod:`.layouts` declares for them instead of Torch-Pruning's guess. Index maps
   that Torch-Pruning cannot infer are skipped instead of failing the trace; ``split``/``chunk``
   pieces are mapped by the autograd edge they are read through.
2. From every root layer the dependency graph is walked (our own walk: Torch-Pruning's
   ``get_pruning_group`` can loop forever, so this one has a step and a time bound, and runs the
   index-map update once, not once per root). Each item reached is turned into members by a
   table from op type to member builder (:func:`_builders`): the index map must be one
   contiguous block per channel (or several such blocks: ``cat([x, f(x)])``), which gives
   ``offset`` and ``repeat``. A group whose channels go different ways after a split is cut into
   the channel classes every layer treats alike. Members are named as ``named_parameters()``
   names them, so a tied tensor appears once, and groups holding one slice of a tied tensor are
   merged.
3. Groups that reach the model's output (the logits of a Hugging Face output), or are added to
   its input (``x + f(x)``), are dropped: their width is fixed by the data. Matrix products on
   other raw parameters are refused (Torch-Pruning treats them as element-wise). A group read by
   a grouped convolution (``groups = G``) becomes ``width / G`` channels, each one a channel in
   every block; the grouped conv's own outputs permute within blocks (``divisor = G``).
4. Every remaining group is verified in one batch: all groups permuted at once must leave the
   output unchanged; only on failure is the batch halved. An attention group starts from the
   head count its module declares, or searches one. Where the walk failed or a group was
   refused, the layers around an attention or gated block (producers read by one consumer
   through parameter-free ops) are tried as candidates: every channel within heads, whole
   key/value heads (rotary embeddings, grouped-query attention), query heads (multi-query),
   heads of a fused projection. Candidate searches cost a few forwards per model, not per block.
   Whatever still fails is left out and named in the one warning.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, cast

import torch
from torch import nn

from widthwise.groups.candidates import (
    _HEADS_ATTRS,
    Candidate,
    ProjectionSpec,
    _channel_size,
    _common_prefix,
    _declared_head_dim,
    _head_params,
    _head_tables,
    _in_width,
    _is_head_table,
    _is_weight_layer,
    _out_width,
    _per_head_norms,
    _placed_candidates,
    _projection_candidates,
    _projection_norms,
    _projection_specs,
    _rows,
    _whole_heads_first,
    _with_head_modules,
    _with_head_params,
    _with_projection_norms,
)
from widthwise.groups.layouts import declared_layouts
from widthwise.groups.ssm import (
    mamba_candidates,
    param_head_candidates,
    state_block_candidates,
    with_concat_convs,
)
from widthwise.groups.tracing import (
    GradFn,
    PruningFn,
    TPGraph,
    TPNode,
    TPPruner,
    _blocks,
    _conv1d_pruner,
    _cut_channel_broadcasts,
    _cut_group_statistics,
    _cut_scoring_products,
    _cut_token_linears,
    _embedding_bag_pruner,
    _frozen_params_traced,
    _is_conv1d,
    _layout,
    _no_new_hooks,
    _out_of_place,
    _RouteLinear,
    _tolerant_index_mapping,
    _update_index_mapping,
    _weight_leaves,
    channel_counter,
)
from widthwise.groups.types import ChannelGroup, GroupingError, GroupingWarning, Member
from widthwise.groups.verify import Symmetry, call_model, map_tensors, out_tensors

__all__ = ["DEFAULT_TIMEOUT", "find_groups"]

#: seconds; a ResNet-50 takes about 3 s on one core, so this only stops pathological graphs
DEFAULT_TIMEOUT = 60.0
#: dependency-walk steps per root layer: a healthy walk visits each (node, handler) a few times
_STEPS_PER_NODE = 20
#: distinct index lists one (layer, handler) may be reached with in one walk: concat/split give a
#: few; a walk that keeps finding new ones is cycling through rotary or head reshapes
_SETS_PER_NODE = 16

IgnoreSpec = Iterable[nn.Module | str | type[nn.Module]]
#: one (node, handler) reached by a dependency walk: (node, handler, indices, root indices)
_WalkItem = tuple[TPNode, PruningFn, list[int], list[int]]


def find_groups(
    model: nn.Module,
    example_inputs: Any,
    *,
    ignore: IgnoreSpec = (),
    timeout: float | None = DEFAULT_TIMEOUT,
) -> list[ChannelGroup]:
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
        timeout: seconds for the work after tracing (dependency walks and verification); the
            groups not finished in time are left out with the warning. ``None``: no bound.

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
    if not isinstance(model, nn.Module):
        raise GroupingError(f"find_groups needs a torch.nn.Module, got {type(model).__name__}")
    if timeout is not None and not timeout > 0:
        raise GroupingError(f"timeout must be a positive number of seconds or None, got {timeout}")
    modes = {m: m.training for m in model.modules()}
    try:
        with torch.enable_grad():
            start = time.monotonic()
            finder = _Finder(model, example_inputs, ignore, timeout)
            groups = finder.run()
            left = None if timeout is None else timeout - (time.monotonic() - start)
            frozen = any(not p.requires_grad for p in model.parameters())
            if finder.left_out and frozen and (left is None or left > 0):
                # Frozen weights are traced so that a frozen position table or backbone couples
                # like a trained one; but a frozen table read by a rotary embedding (RoFormer)
                # then ties every layer's heads together. Keep whichever way leaves less out.
                other = _Finder(model, example_inputs, ignore, left, trace_frozen=False)
                other_groups = other.run()
                if len(other.left_out) < len(finder.left_out):
                    finder, groups = other, other_groups
            finder.warn(groups)
            return groups
    finally:
        for m, training in modes.items():
            m.training = training


#: the seed of the second weight draw (:meth:`_Finder._second_symmetry`)
_SECOND_SEED = 2

_MATMUL_OPS = ("mm", "matmul", "einsum", "linear", "convolution", "dot", "attention", "embedding")


def _module_of(param: str) -> str:
    """The module that owns a parameter: ``a.weight`` -> ``a``; a parametrized weight's
    ``a.parametrizations.weight.original1`` -> ``a`` too."""
    owner, _, _ = param.rpartition(".")
    head, sep, _ = owner.rpartition(".parametrizations.")
    return head if sep else owner


class _OutOfTime(Exception):
    """The dependency walk of one root went over its step budget or the deadline."""


class _Raw:
    """A group while it is being assembled (still holds module references)."""

    def __init__(self, width: int, root: str = ""):
        self.width = width
        self.root = root
        self.members: dict[Member, None] = {}  # ordered set: residual streams have many members
        self.reasons: list[str] = []
        self.output = False
        self.tied_input = False
        self.residual = False
        self.attention = False
        self.rearranged = False
        self.input_product = False
        # holds a raw parameter with a declared layout (.layouts): the walk went through it as
        # if element-wise, so the products it then met are inside that structure
        self.declared = False
        # reaches a gate broadcast over other channels (tracing._cut_channel_broadcasts): its
        # one channel is fixed like an output, unless the walk went through a declared raw
        # product first (a MoE's raw router, then the max over its experts, to the per-token
        # weight): then the stream's channels reached it only by that element-wise guess
        self.broadcast = False
        self.divisor = 1
        self.notes: list[str] = []
        self.name: str | None = None
        self.kind: str | None = None
        # names are None for a module that is not a submodule of the model
        self.rnn_out: list[tuple[str | None, nn.RNNBase, int, int]] = []  # (name, rnn, off, rep)
        # (name, conv, offset, repeat)
        self.grouped_in: list[tuple[str | None, nn.modules.conv._ConvNd, int, int]] = []
        # convs with k outputs per input channel (groups == in_channels) that compute these
        # channels: their groups bind this width unless the input group takes it over
        self.multiplied: list[nn.modules.conv._ConvNd] = []
        self.fused: list[tuple[str | None, object]] = []  # producers feeding a split/reshape
        # layers reached through a reshape Torch-Pruning cannot map: (builder, item, size)
        self.unplaced: list[tuple[_Builder, _Item, int]] = []

    def add(self, members: Iterable[Member]) -> None:
        for m in members:
            self.members.setdefault(m, None)


@dataclass
class _Item:
    """One element of a dependency walk, as the member builders see it."""

    node: TPNode
    # ``node.module``: which class it is follows from the op type (the builder table), so each
    # builder states it by annotating its local ``mod``
    module: Any
    mname: str | None  # None: not a submodule of the model
    is_in: bool
    layout: tuple[int, int] | None

    @property
    def span(self) -> tuple[int, int]:
        """``(offset, repeat)``; the builders flagged in :func:`_builders` always get one."""
        assert self.layout is not None, "a builder that needs a layout was called without one"
        return self.layout


_Builder = Callable[["_Finder", "_Raw", _Item], None]
#: a group that is verified once its unmapped layers are placed: (raw, group, why, options)
_Placement = tuple["_Raw", ChannelGroup, str, list[tuple[str, ChannelGroup]]]


# ---------------------------------------------------------------------------------------------
# the table: Torch-Pruning op type -> member builder


def _conv(f: _Finder, raw: _Raw, it: _Item) -> None:
    mod: nn.modules.conv._ConvNd = it.module
    off, rep = it.span
    if mod.groups > 1:
        if mod.transposed:
            raw.reasons.append(f"grouped transposed convolution '{it.mname}'")
        elif it.is_in:
            raw.grouped_in.append((it.mname, mod, off, rep))
        else:  # rows of block g compute outputs [g*C/G, (g+1)*C/G): permutable within blocks
            if _multiplier(mod):
                raw.multiplied.append(mod)  # the divisor is set by _merge_multipliers
            else:
                raw.divisor = math.lcm(raw.divisor, mod.groups)
            raw.add([Member(f"{it.mname}.weight", 0, "producer", off, rep)])
            if mod.bias is not None:
                raw.add([Member(f"{it.mname}.bias", 0, "other", off, rep)])
            raw.add(f._extra_rows(it.mname, mod, mod.out_channels, off, rep))
        return
    wdim = 1 if mod.transposed else 0
    if not it.is_in:
        raw.add([Member(f"{it.mname}.weight", wdim, "producer", off, rep)])
        if mod.bias is not None:
            raw.add([Member(f"{it.mname}.bias", 0, "other", off, rep)])
        raw.add(f._extra_rows(it.mname, mod, mod.out_channels, off, rep))
    else:
        raw.add([Member(f"{it.mname}.weight", 1 - wdim, "consumer", off, rep)])


def _multiplier(conv: nn.modules.conv._ConvNd) -> bool:
    """A depthwise conv with a channel multiplier: ``k > 1`` outputs per input channel."""
    c = conv.in_channels
    return not conv.transposed and conv.groups == c > 1 and conv.out_channels % c == 0


def _depthwise(f: _Finder, raw: _Raw, it: _Item) -> None:
    mod: nn.modules.conv._ConvNd = it.module
    off, rep = it.span
    if mod.in_channels != mod.out_channels:
        raw.reasons.append(f"depthwise convolution '{it.mname}' changes the width")
        return
    raw.add([Member(f"{it.mname}.weight", 0, "producer", off, rep)])
    if mod.bias is not None:
        raw.add([Member(f"{it.mname}.bias", 0, "other", off, rep)])
    raw.add(f._extra_rows(it.mname, mod, mod.out_channels, off, rep))


def _linear(f: _Finder, raw: _Raw, it: _Item) -> None:
    mod: nn.Linear = it.module
    off, rep = it.span
    if not it.is_in and mod.out_features < raw.width:
        # fewer outputs than the group has channels: combined with it only after a broadcast or
        # a reduction (Qwen2-MoE's sigmoid(gate(x)) * expert(x), Switch's max router prob)
        return
    if not it.is_in:
        raw.add([Member(f"{it.mname}.weight", 0, "producer", off, rep)])
        if mod.bias is not None:
            raw.add([Member(f"{it.mname}.bias", 0, "other", off, rep)])
        raw.add(f._extra_rows(it.mname, mod, mod.out_features, off, rep))
    else:
        raw.add([Member(f"{it.mname}.weight", 1, "consumer", off, rep)])


def _norm(f: _Finder, raw: _Raw, it: _Item) -> None:
    mod: nn.Module = it.module  # BatchNorm, LayerNorm, GroupNorm, InstanceNorm
    off, rep = it.span
    if isinstance(mod, nn.GroupNorm):
        raw.divisor = math.lcm(raw.divisor, mod.num_groups)
    w = getattr(mod, "weight", None)
    if w is not None and w.ndim != 1:
        raw.reasons.append(f"'{it.mname}' normalises over several dimensions")
        return
    for pname in ("weight", "bias"):
        if getattr(mod, pname, None) is not None:
            raw.add([Member(f"{it.mname}.{pname}", 0, "norm", off, rep)])


def _prelu(f: _Finder, raw: _Raw, it: _Item) -> None:
    mod: nn.PReLU = it.module
    off, rep = it.span
    if mod.weight.numel() > 1:
        raw.add([Member(f"{it.mname}.weight", 0, "other", off, rep)])


def _embed(f: _Finder, raw: _Raw, it: _Item) -> None:
    off, rep = it.span
    raw.add([Member(f"{it.mname}.weight", 1, "producer", off, rep)])


def _parameter(f: _Finder, raw: _Raw, it: _Item) -> None:
    off, rep = it.span
    p: nn.Parameter = it.module
    dim = it.node.pruning_dim if it.node.pruning_dim >= 0 else p.ndim - 1
    if p.ndim == 2 and p.shape[1] == 1 < p.shape[0]:
        dim = 0  # a [C, 1] scoring vector (SwiftFormer's w_g): its rows are the channels
    need = off + raw.width * rep
    if p.ndim == 4 and p.shape[dim] < need and p.shape[1] == need:
        dim = 1  # a (1, C, H, W) map added to a conv's output (Visformer's, SAM2's pos_embed)
    name = f.param_name[p]
    if name in f.declared.stream:  # a layout known from the module's structure (.layouts)
        f._declared_member(raw, it, name)
        return
    if f._head_table_in_scores(name, p, dim, need):
        return
    owner = f.modules.get(name.rpartition(".")[0])
    # the scale of a norm layer Torch-Pruning does not know (RMSNorm in Llama, T5, ...)
    norm = p.ndim == 1 and owner is not None and "norm" in type(owner).__name__.lower()
    raw.add([Member(name, dim, "norm" if norm else "other", off, rep)])


def _customized(f: _Finder, raw: _Raw, it: _Item) -> None:
    from widthwise.groups import recurrent as rec

    mod: nn.Module = it.module  # a cut RNN/MHA, HF Conv1D, EmbeddingBag (tracing.channel_counter)
    mname = it.mname
    off, rep = it.span
    if _is_conv1d(mod):  # Hugging Face Conv1D: y = x @ W + b with W [in, out]
        if it.is_in:
            raw.add([Member(f"{mname}.weight", 0, "consumer", off, rep)])
        else:
            raw.add([Member(f"{mname}.weight", 1, "producer", off, rep)])
            if getattr(mod, "bias", None) is not None:
                raw.add([Member(f"{mname}.bias", 0, "other", off, rep)])
        return
    if isinstance(mod, nn.EmbeddingBag):  # a bag of rows summed: channels are weight columns
        if not it.is_in:
            raw.add([Member(f"{mname}.weight", 1, "producer", off, rep)])
        return
    # an RNN's initial-state problem spoils its hidden units, not the group that feeds it
    if mname in f.cuts.problems and not (it.is_in and isinstance(mod, nn.RNNBase)):
        raw.reasons.append(f.cuts.problems[mname])
    if it.is_in and mname in f.cuts.input_problems:
        raw.reasons.append(f.cuts.input_problems[mname])
    if it.is_in:
        raw.add(replace(x, offset=off, repeat=rep) for x in rec.boundary_in_members(mname, mod))
    elif isinstance(mod, nn.MultiheadAttention):  # the only boundary type with an embed_dim
        raw.add(rec.boundary_out_members(mname, mod))
        raw.notes.append(f"nn.MultiheadAttention '{mname}' needs this width equal to its embed_dim")
        raw.divisor = math.lcm(raw.divisor, mod.num_heads)
    else:
        raw.rnn_out.append((mname, cast(nn.RNNBase, mod), off, rep))


def _op(f: _Finder, raw: _Raw, it: _Item) -> None:
    f._inspect_op(raw, it.node)


@functools.cache
def _builders() -> dict[Any, tuple[_Builder, bool]]:
    """op type -> (builder, whether it needs one contiguous block per channel)."""
    import torch_pruning as tp

    t = tp.ops.OPTYPE
    return {
        t.CONV: (_conv, True),
        t.DEPTHWISE_CONV: (_depthwise, True),
        t.LINEAR: (_linear, True),
        t.BN: (_norm, True),
        t.LN: (_norm, True),
        t.GN: (_norm, True),
        t.IN: (_norm, True),
        t.PRELU: (_prelu, True),
        t.EMBED: (_embed, True),
        t.PARAMETER: (_parameter, True),
        t.CUSTOMIZED: (_customized, True),
        t.ELEMENTWISE: (_op, False),
        t.RESHAPE: (_op, False),
    }


# ---------------------------------------------------------------------------------------------


class _Finder:
    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        ignore: IgnoreSpec,
        timeout: float | None,
        trace_frozen: bool = True,
    ):
        self.model = model
        self.trace_frozen = trace_frozen
        self.example_inputs = example_inputs
        self.timeout = timeout
        self.deadline = float("inf")
        self.module_name = {m: n for n, m in model.named_modules()}
        self.module_order = {n: i for i, n in enumerate(self.module_name.values())}
        self.param_name: dict[torch.Tensor, str] = {p: n for n, p in model.named_parameters()}
        self.param_order = {n: i for i, n in enumerate(self.param_name.values())}
        self.params = dict(model.named_parameters())
        # every path to a tensor -> the name named_parameters() gives it (tied weights)
        self.canonical = {
            n: self.param_name[p] for n, p in model.named_parameters(remove_duplicate=False)
        }
        self.modules = dict(model.named_modules())
        self.ignored = self._resolve_ignore(ignore)
        self.left_out: dict[str, str] = {}
        self.unfinished: list[nn.Module] = []  # roots whose dependency walk did not end
        self.root_keys: dict[str, set[str]] = {}  # root layer -> left_out keys that name it
        self.fallbacks: list[ProjectionSpec] = []
        self.keys_of: dict[str, str] = {}  # keys group (:meth:`_keys_together`) -> its root
        # left_out key of a raw parameter met in a product -> the roots whose walks met it
        self.param_roots: dict[str, set[str]] = {}
        self._sym: Symmetry | None = None
        self._sym2: Symmetry | None = None  # the second, independent weight draw
        self.declared = declared_layouts(model)

    # -- input / output plumbing ------------------------------------------------------------

    def _resolve_ignore(self, ignore: IgnoreSpec) -> set[str]:
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

    def _with_grad(self, obj: Any) -> Any:
        """Floating inputs as leaves that require grad, so ops on them are visible in the graph."""

        def leaf(t: torch.Tensor) -> torch.Tensor:
            t = t.requires_grad_(True)
            self.input_leaves.append(t)
            return t

        return map_tensors(obj, lambda t: leaf(t) if t.is_floating_point() else t)

    def _extra_rows(
        self, mname: str | None, module: nn.Module, width: int, off: int, rep: int
    ) -> Iterator[Member]:
        """Per-output-channel parameters of a layer beyond weight/bias (NFNet's ``gain``)."""
        for pname, p in module.named_parameters(recurse=False):
            if pname not in ("weight", "bias") and p.ndim >= 1 and p.shape[0] == width:
                yield Member(f"{mname}.{pname}", 0, "other", off, rep)

    @contextlib.contextmanager
    def _linear_shadows(self) -> Iterator[None]:
        """``F.linear(x, w, b)`` on a raw weight and a raw bias is traced as an ``nn.Linear``:
        for the trace, a stand-in Linear holding the same two tensors is attached to the model
        and the call is routed through it (Torch-Pruning would treat the product as
        element-wise). The stand-in's members are renamed to ``w`` and ``b``."""
        pairs = self._raw_linear_pairs()
        unbiased = self._unbiased_linears()
        if not pairs and not unbiased:
            yield
            return
        shadows = {}
        for k, (w, b) in enumerate(pairs):
            name = f"_widthwise_linear{k}"
            sh = nn.Linear(1, 1)
            sh._parameters["weight"], sh._parameters["bias"] = w, b
            sh.in_features, sh.out_features = w.shape[1], w.shape[0]
            self.model._modules[name] = sh
            shadows[(id(w), id(b))] = sh
            self.module_name[sh] = name
            self.modules[name] = sh
            self.module_order[name] = len(self.module_order)
            self.canonical[f"{name}.weight"] = self.param_name[w]
            self.canonical[f"{name}.bias"] = self.param_name[b]
        try:
            with _RouteLinear(shadows, unbiased=unbiased):
                yield
        finally:
            for sh in shadows.values():
                self.model._modules.pop(self.module_name[sh], None)

    def _unbiased_linears(self) -> dict[int, nn.Linear]:
        """Bias-less Linears beside raw 1-D parameters (BEiT's ``qkv`` with ``q_bias``,
        ``v_bias``), by id of their weight: ``F.linear(x, qkv.weight, bias)`` is traced through
        them (:class:`._RouteLinear`)."""
        out: dict[int, nn.Linear] = {}
        for name, m in self.modules.items():
            if type(m) is not nn.Linear or m.bias is not None:
                continue
            parent = self.modules.get(name.rpartition(".")[0])
            if parent is not None and any(p.ndim == 1 for p in parent.parameters(recurse=False)):
                out[id(m.weight)] = m
        return out

    def _raw_linear_pairs(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        """(weight, bias) raw parameters that the forward passes to ``F.linear`` together."""
        known = (
            nn.Linear,
            nn.modules.conv._ConvNd,
            nn.Embedding,
            nn.RNNBase,
            nn.MultiheadAttention,
        )
        raw: dict[int, nn.Parameter] = {}
        for n, p in self.params.items():
            owner = self.modules.get(n.rpartition(".")[0])
            if not isinstance(owner, known) and not _is_conv1d(owner):
                raw[id(p)] = p
        if not any(p.ndim == 2 for p in raw.values()):
            return []
        finder = _RouteLinear({}, raw)
        self.model.eval()  # no running statistics updated (find_groups restores the flags)
        with contextlib.suppress(Exception), torch.no_grad(), finder:
            call_model(self.model, map_tensors(self.example_inputs))
        return list(dict.fromkeys(finder.seen))

    # -- main --------------------------------------------------------------------------------

    def run(self) -> list[ChannelGroup]:
        import torch_pruning as tp

        from widthwise.groups import recurrent as rec

        outputs: list[torch.Tensor] = []

        def forward_fn(model: nn.Module, inputs: Any) -> list[torch.Tensor]:
            out = call_model(model, inputs)
            outputs.extend(t for t in out_tensors(out) if t.grad_fn is not None)
            return outputs

        pruners: dict[type, TPPruner] = {}
        for m in self.model.modules():
            if isinstance(m, rec.BOUNDARY_TYPES):
                pruners[type(m)] = channel_counter(
                    rec.boundary_out_channels, rec.boundary_in_channels
                )
            elif _is_conv1d(m):
                pruners[type(m)] = _conv1d_pruner()
            elif isinstance(m, nn.EmbeddingBag):
                pruners[type(m)] = _embedding_bag_pruner()
        self.input_leaves: list[torch.Tensor] = []
        # inputs as grad-requiring leaves reveal x + f(x) on the input; a model that writes
        # into its input in place cannot take them, so it is traced on the plain inputs
        attempts = [self._with_grad(self.example_inputs), map_tensors(self.example_inputs)]
        # a Linear subclass whose forward returns a tuple (the routers of Llama 4 and PhiMoE)
        # breaks Torch-Pruning's trace hook: as a last resort such layers are traced as ops
        odd = [
            m
            for m in self.model.modules()
            if isinstance(m, nn.Linear) and type(m).forward is not nn.Linear.forward
        ]
        if odd:
            attempts.append(self._with_grad(self.example_inputs))
        clone: list[nn.Module] = []  # Linears whose output view the forward writes into
        k = 0
        while k < len(attempts):
            traced_inputs = attempts[k]
            outputs.clear()
            with (
                rec.CutHooks(self.model) as cuts,
                _no_new_hooks(self.model),
                _frozen_params_traced(self.model)
                if self.trace_frozen
                else contextlib.nullcontext(),
                _tolerant_index_mapping(),
                _out_of_place(self.model, clone) as rewritten,
                self._linear_shadows(),
                warnings.catch_warnings(),
            ):
                warnings.simplefilter("ignore")
                try:
                    dg: TPGraph = tp.DependencyGraph().build_dependency(
                        self.model,
                        example_inputs=traced_inputs,
                        forward_fn=forward_fn,
                        customized_pruners=pruners,
                        ignored_layers=odd if k == 2 else None,
                        # their weights as raw parameters read along their input dim
                        unwrapped_parameters=[(m.weight, 1) for m in odd] if k == 2 else None,
                        verbose=False,
                    )
                except Exception as e:
                    if k + 1 < len(attempts):
                        k += 1
                        continue
                    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    raise GroupingError(
                        f"could not trace {type(self.model).__name__} on the example inputs "
                        f"({type(e).__name__}: {first}); check that the model runs on them "
                        "(tensor: model(x), tuple/list: model(*x), dict: model(**x)) and that "
                        "its forward builds an autograd graph"
                    ) from e
            if not rewritten or clone:
                break
            clone = rewritten  # traced again with those views copied
        del attempts
        if not outputs:
            raise GroupingError(
                f"{type(self.model).__name__} returned no tensor that depends on its parameters; "
                "is its forward wrapped in torch.no_grad()?"
            )
        if self.timeout is not None:
            self.deadline = time.monotonic() + self.timeout
        self.cuts = cuts
        try:
            raws = self._collect(dg, {t.grad_fn for t in outputs})
        finally:
            # the graph holds the autograd graph of the trace (and the model): drop it now
            dg.module2node.clear()
            outputs.clear()
            self.input_leaves.clear()
            del dg, traced_inputs
        return self._finish(raws)

    def warn(self, groups: list[ChannelGroup]) -> None:
        """The one :class:`GroupingWarning`: what was left out and why, or that nothing was
        found."""
        name = type(self.model).__name__
        if self.left_out:
            items = "; ".join(f"{k}: {v}" for k, v in self.left_out.items())
            warnings.warn(
                f"find_groups left out {len(self.left_out)} part(s) of {name} it cannot group "
                f"reliably ({items}). The groups it returns are verified; these channels are "
                "simply not tracked.",
                GroupingWarning,
                stacklevel=3,
            )
        elif not groups:
            warnings.warn(
                f"find_groups found no channel group in {name}: every layer's width is fixed by "
                "the model's inputs or outputs (or it has no Linear, Conv, Embedding or "
                "recurrent layer)",
                GroupingWarning,
                stacklevel=3,
            )

    # -- Torch-Pruning groups -> raw groups --------------------------------------------------

    def _collect(self, dg: TPGraph, out_fns: set[GradFn | None]) -> list[_Raw]:

        from widthwise.groups import recurrent as rec

        root_types = (
            nn.modules.conv._ConvNd,
            nn.Linear,
            nn.Embedding,
            nn.EmbeddingBag,
            *rec.BOUNDARY_TYPES,
        )
        roots = sorted(
            (
                m
                for m in dg.module2node
                if (isinstance(m, root_types) or _is_conv1d(m)) and m in self.module_name
            ),
            key=lambda m: self.module_order[self.module_name[m]],
        )
        self.leaves = {id(t) for t in self.input_leaves}
        self.out_fns = out_fns
        # parameters outside any module Torch-Pruning understands (it guesses their channel dim)
        self.unwrapped: dict[torch.Tensor, str] = {
            p: self.param_name[p]
            for p, _ in dg.unwrapped_parameters
            if self.param_name[p] not in self.declared.stream
        }
        self.traced = {self.module_name[m] for m in dg.module2node if m in self.module_name}
        self.token_rows = _cut_token_linears(dg)
        self.broadcast_operands = _cut_channel_broadcasts(dg)
        _cut_scoring_products(dg)
        self.value_merges = self._cut_value_merges(dg)
        # once for all roots (Torch-Pruning redoes it per group: quadratic in model size)
        _update_index_mapping(dg)
        self.group_stats = _cut_group_statistics(dg)
        budget = _STEPS_PER_NODE * max(len(dg.module2node), 50)
        # no index list can be longer than the longest tensor dimension it could address
        self.max_idxs = max((max(p.shape, default=1) for p in self.params.values()), default=1)
        visited: set[object] = set()  # modules and parameters
        # root layers reached with only some of their output channels: those reached
        covered: dict[nn.Module, set[int]] = {}
        late: list[str] = []
        raws: list[_Raw] = []

        def walk_from(root: nn.Module, start: list[int] | None) -> None:
            rname = self.module_name[root]
            if time.monotonic() > self.deadline:
                late.append(rname)
                return
            pruner = dg.get_pruner_of_module(root)
            width = pruner.get_out_channels(root) if start is None else len(start)
            try:
                items = self._walk(dg, root, pruner.prune_out_channels, width, budget, start)
            except _OutOfTime:
                if time.monotonic() > self.deadline:
                    late.append(rname)
                else:
                    self.unfinished.append(root)
                    self.root_keys.setdefault(rname, set()).add(rname)
                    self.left_out[rname] = (
                        f"the dependency walk from it did not end within {budget} steps "
                        "(Torch-Pruning's index maps cycle or multiply here: reshaped heads, "
                        "rotary embeddings, repeated key/value heads)"
                    )
                return
            except Exception as e:
                self.left_out[rname] = f"Torch-Pruning failed on it ({type(e).__name__}: {e})"
                self.unfinished.append(root)
                return
            raw = _Raw(width, rname)
            for node, handler, idxs, roots_ in items:
                if dg.is_out_channel_pruning_fn(handler):
                    visited.add(node.module)
                    if node.module in self.module_name:
                        covered.setdefault(node.module, set()).update(idxs)
                self._convert_item(raw, node, handler, idxs, roots_)
            raw.attention &= not raw.declared
            raw.output |= raw.broadcast and not raw.declared
            if raw.attention:
                self._score_rows(raw)
            misplaced = sum("split or rearranged" in r for r in raw.reasons)
            if misplaced and misplaced > len(raw.unplaced):  # not all placeable: split it
                raws.extend(self._refine(raw, items))
            else:
                raws.append(raw)

        for root in roots:
            if root in visited:
                continue
            if _is_head_table(root, self._owners([self.module_name[root]])):
                continue  # one output per head (Swin-V2's position-bias MLP): fixed, no walk
            if self._rows_declared(root):
                continue
            walk_from(root, None)
        # the rest of a convolution whose walk reached only some of its outputs (RexNet's
        # shortcut added to the first channels of a wider block): a walk from the channels not
        # reached. (Not Linear layers: in attention, a rotary table reaches half of each head.)
        for root in roots:
            reached = covered.get(root)
            if reached is None or root in self.unfinished:
                continue
            if not isinstance(root, nn.modules.conv._ConvNd):
                continue
            rest = sorted(
                set(range(dg.get_pruner_of_module(root).get_out_channels(root))) - reached
            )
            if rest and len(rest) < len(reached) + len(rest):
                walk_from(root, rest)
        raws += self._walk_value_merges(dg, budget)
        if late:
            self._late(late)
        # not a stream whose walk ended at the model's output or input (Qwen3 ViT's tokens):
        # its channels are fixed, so every projection candidate around it fails its check,
        # each a forward of the whole model
        retry = set(self.unfinished) | {
            self.modules[r.root]
            for r in raws
            if (r.reasons or r.attention or r.rearranged or not self._fits(r))
            and not self._fixed_by_output(r)
        }
        # the rows of a token-mixing Linear are positions (tracing._cut_token_linears): no
        # producer of channels for the candidates (each of those a forward, all refused)
        tokens = {self.module_name.get(n.module) for n in self.token_rows}
        self.fallbacks = [
            (o, om, kept, norms)
            for o, om, prods, norms in _projection_specs(dg, retry, self.module_name)
            if (kept := [p for p in prods if p[0] not in tokens])
        ]
        # groups inside the recurrent and attention modules
        for module, mname in self.module_name.items():
            if isinstance(module, nn.RNNBase):
                raws.extend(self._recurrent(mname, module, raws))
            elif isinstance(module, nn.MultiheadAttention) and module in dg.module2node:
                raw = _Raw(module.embed_dim, mname)
                raw.add(rec.mha_inner_members(mname, module))
                raw.kind, raw.name = "attention", f"{mname} (attention)"
                raw.divisor = module.num_heads
                if mname in self.cuts.problems:
                    raw.reasons.append(self.cuts.problems[mname])
                raws.append(raw)
        return raws

    def _fixed_by_output(self, raw: _Raw) -> bool:
        """A clean walk (no reason, no attention product) that reached the model's output or
        is tied to its input: its channels are fixed by the data, so candidates around its
        readers would only propose them again (a transformer's residual stream: a forward each,
        for every reader of the stream in every block)."""
        return (raw.output or raw.tied_input) and not raw.reasons and not raw.attention

    def _score_rows(self, raw: _Raw) -> None:
        """Refuse a walk that reached, through an attention product, the rows of a layer whose
        width is neither a multiple nor a divisor of the group's (VOLO's outlook attention:
        weights made by a Linear multiply the values): Torch-Pruning passes indices through
        the product as if element-wise, but those rows are scores, not channels. The
        projection candidates group the values without them, no forward spent on this one."""
        for m in raw.members:
            name = _module_of(m.param)
            mod = self.modules.get(name)
            if m.role != "producer" or name == raw.root or not _is_weight_layer(mod):
                continue
            w = _out_width(mod)
            if w % raw.width and raw.width % w:
                raw.reasons.append(
                    f"its channels reach the rows of '{name}' through an attention product "
                    "(scores, not channels)"
                )
                return

    def _fits(self, raw: _Raw) -> bool:
        """Every member lies inside its tensor (else Torch-Pruning's index maps went wrong)."""
        for m in raw.members:
            p = self.params.get(self.canonical.get(m.param, m.param))
            if p is None or m.dim >= p.ndim or p.shape[m.dim] < m.offset + raw.width * m.repeat:
                return False
        return True

    def _refine(self, raw: _Raw, items: list[_WalkItem]) -> list[_Raw]:
        """Split a group whose channels go different ways (``torch.split``/``chunk`` in CSP and
        Res2Net blocks) into the classes of root channels that every layer treats alike; each
        class is converted again on its own (and verified like any group)."""
        # root channels that reach the same index of one tensor are one channel of the group
        # (EdgeNeXt's chunks added to each other through depthwise convs: channel j of every
        # chunk; iFormer's and SHViT's conv q and k rows, which meet in ``q^T @ k``), except
        # where channels are multiplied together, or meet in the attention of Linear
        # projections: those are refused below (a fused projection's heads are placed by the
        # candidates)
        linear = isinstance(self.modules.get(raw.root), nn.Linear)
        tied_pairs = (self.walk_collisions if raw.attention else set()) | (
            self.walk_merges if raw.attention and linear else set()
        )
        # outside attention, channels multiplied channel by channel are one channel: a gated
        # unit ``act(g) * u`` of one projection (MambaOut's ``g * cat(i, conv(c))``, MobileViT-V2's
        # ``relu(v) * context(k)``) permutes ``g`` and ``u`` alike
        merged = self.walk_merges | (set() if raw.attention else self.walk_collisions)
        rep = _root_classes(raw.width, () if tied_pairs else merged)
        held: dict[int, list[int]] = {}  # class -> its roots
        for r, c in rep.items():
            held.setdefault(c, []).append(r)
        size = {c: len(rs) for c, rs in held.items()}
        # per class: the items it reaches and how many entries of each (GhostNet's
        # ``cat([x, cheap(x)])[:, :out]`` reads all but the last channels twice)
        sig: dict[int, list[tuple[int, int]]] = {c: [] for c in size}
        for k, (_, _, _, roots) in enumerate(items):
            counts = Counter(rep[r] for r in roots if r in rep)
            for c, n in counts.items():
                sig[c].append((k, n // size[c]))
        classes: dict[tuple[object, ...], list[int]] = {}
        for c, ks in sig.items():
            classes.setdefault((size[c], *ks), []).append(c)
        if len(classes) < 2 and len(size) == raw.width:
            return [raw]
        # classes whose channels are multiplied together (MobileViT-V2's key and value, rows of
        # one conv): as separate groups they would be wrong, and the permutation check can miss
        # it where the output barely depends on them
        cls_of = {r: k for k, cls in enumerate(classes.values()) for c in cls for r in held[c]}
        tied = {
            cls_of[r]
            for pair in tied_pairs
            if len({cls_of.get(r) for r in pair}) == 2 and None not in {cls_of.get(r) for r in pair}
            for r in pair
        }
        subs = []
        for k, cls in enumerate(classes.values()):
            pos = {r: k for k, c in enumerate(cls) for r in held[c]}
            sub = _Raw(len(cls), raw.root)
            for node, handler, idxs, roots in items:
                sel = [(i, pos[r]) for i, r in zip(idxs, roots) if r in pos]
                if sel:
                    self._convert_item(sub, node, handler, [i for i, _ in sel], [r for _, r in sel])
            sub.output |= sub.broadcast and not sub.declared
            if k in tied:
                sub.reasons.append(
                    f"its channels are multiplied by other channels of '{raw.root}' (two blocks of "
                    "one projection tied together, e.g. key and value)"
                )
            subs.append(sub)
        return self._keys_together(raw, subs)

    def _keys_together(self, raw: _Raw, subs: list[_Raw]) -> list[_Raw]:
        """Classes of a fused projection that reach nothing but its own rows (timm Twins'
        ``qkv``: q and k end at the score product ``q @ k^T``, cut from the walk) are one
        group, channel ``j`` of each together: ``q k^T`` is unchanged when both permute alike
        within heads. The head size comes from the attention module; the check decides."""
        parent = self.modules.get(raw.root.rpartition(".")[0])
        if not raw.attention or parent is None:
            return subs
        own = [
            s
            for s in subs
            if s.members
            and not s.reasons
            and all(_module_of(m.param) == raw.root and m.role != "consumer" for m in s.members)
        ]
        if len(own) < 2 or len({s.width for s in own}) != 1:
            return subs
        if any(p.ndim == 1 for p in parent.parameters(recurse=False)):
            # raw q/v biases beside it (BEiT), added outside the traced graph: refused without
            # a forward, left to the projection candidates, which hold those biases
            for s in own:
                s.reasons.append("its query/key rows take raw biases the trace cannot see")
            return subs
        keys = _Raw(own[0].width, raw.root)
        for s in own:
            keys.add(s.members)
        hd = _declared_head_dim(self._owners([raw.root]), keys.width, keys.width)
        if not hd:
            return subs
        keys.divisor = keys.width // hd  # one head: q and k channels permute freely
        keys.name, keys.kind = f"{raw.root.rpartition('.')[0] or raw.root} (keys)", "attention"
        keys.notes.append("query and key channels permute alike within each head")
        self.keys_of[keys.name] = raw.root
        return [s for s in subs if not any(s is o for o in own)] + [keys]

    def _late(self, names: list[str]) -> None:
        shown = ", ".join(f"'{n}'" for n in names[:5]) + (
            f" and {len(names) - 5} more" if len(names) > 5 else ""
        )
        self.left_out[f"{len(names)} layer(s)"] = (
            f"not examined within timeout={self.timeout:g} s ({shown}); pass a larger timeout"
        )

    def _walk(
        self,
        dg: TPGraph,
        root: nn.Module,
        fn: PruningFn,
        width: int,
        budget: int,
        channels: list[int] | None = None,
    ) -> list[_WalkItem]:
        """Torch-Pruning's ``get_pruning_group`` with a step and time bound and O(1) dedup.

        Starts from output channels ``channels`` of ``root`` (root channel ``k`` is ``channels[k]``;
        default: all ``width``). Returns ``(node, handler, idxs, root_idxs)`` per (node,
        handler), indices merged in first-seen order as Torch-Pruning merges them.
        """
        from torch_pruning import _helpers
        from torch_pruning.dependency.dependency import Dependency

        node0 = dg.module2node[root]
        # pairs of root channels multiplied together (k * v, gate * up of one projection)
        self.walk_collisions: set[tuple[int, int]] = set()
        self.walk_merges: set[tuple[int, int]] = set()  # other roots that meet at one index
        first_idxs = list(range(width)) if channels is None else channels
        start = [_helpers._HybridIndex(idx=i, root_idx=k) for k, i in enumerate(first_idxs)]
        dep0 = Dependency(fn, fn, source=node0, target=node0)
        order: list[tuple[TPNode, PruningFn]] = [(node0, fn)]
        # (node, handler) -> {idx: root}
        merged = {(node0, fn): {i: k for k, i in enumerate(first_idxs)}}
        # the (index, root) pairs that reached each (node, handler), and in how many batches:
        # index maps act on each pair alone, so only pairs not seen there yet go on (EdgeNeXt's
        # chunks added to each other reach the split again and again with known pairs)
        reached: dict[tuple[TPNode, PruningFn], set[Any]] = {(node0, fn): set(start)}
        batches: dict[tuple[TPNode, PruningFn], int] = {(node0, fn): 1}
        stack = [(dep0, start)]
        steps = 0
        while stack:
            steps += 1
            if steps > budget or time.monotonic() > self.deadline:
                raise _OutOfTime
            dep, idxs = stack.pop()
            node, handler = dep.target, dep.handler
            for new_dep in node.dependencies:
                if not new_dep.is_triggered_by(handler):
                    continue
                new = idxs
                for mapping in new_dep.index_mapping:
                    if mapping is not None:
                        new = mapping(new)
                if len(new) == 0:
                    continue
                if len(new) > self.max_idxs:  # a flatten/reshape map that multiplies indices
                    raise _OutOfTime
                key = (new_dep.target, new_dep.handler)
                done = reached.setdefault(key, set())
                new = [h for h in dict.fromkeys(new) if h not in done]
                if not new:
                    continue
                if batches.get(key, 0) >= _SETS_PER_NODE:  # reached with ever new indices
                    raise _OutOfTime
                batches[key] = batches.get(key, 0) + 1
                done.update(new)
                if key not in merged:
                    merged[key] = {}
                    order.append(key)
                slot = merged[key]
                for h in new:
                    first = slot.setdefault(h.idx, h.root_idx)
                    if first != h.root_idx and None not in (first, h.root_idx):
                        if _is_product(key[0]):
                            self.walk_collisions.add((first, h.root_idx))
                        else:
                            self.walk_merges.add((first, h.root_idx))
                stack.append((new_dep, new))
        out: list[_WalkItem] = []
        for key in order:
            node, handler = key
            if isinstance(node.module, nn.Parameter) and any(
                node.module is p for p in dg.ignored_params
            ):
                continue
            slot = merged[key]
            out.append((node, handler, list(slot), list(slot.values())))
        return out

    def _convert_item(
        self, raw: _Raw, node: TPNode, handler: PruningFn, idxs: list[int], roots: list[int]
    ) -> None:
        import torch_pruning as tp

        t = node.type
        module = node.module
        mname = self.module_name.get(module) if t != tp.ops.OPTYPE.PARAMETER else None
        # a pruner whose in and out functions are one (norms, element-wise ops) reports "out"
        is_in = handler.__name__ == "prune_in_channels"
        if node.grad_fn in self.out_fns and not is_in:
            raw.output = True
        if t == tp.ops.OPTYPE.OUTPUT:
            raw.output = True
            return
        if node in self.token_rows and not is_in:  # a token-mixing Linear's rows: positions
            raw.output = True
            return
        if node in self.broadcast_operands:  # a one-channel gate broadcast over channels
            # fixed like an output unless the walk crossed a declared raw weight (_Raw.broadcast);
            # a router's expert channels reach a per-token weight several at a time
            raw.broadcast = True
            return
        if node in self.group_stats:  # a hand-written group norm's statistic reads them
            self._group_statistic(raw, node, idxs, roots)
            return
        if node in self.value_merges:  # a block's output merged from heads (blocks.py)
            self.merges_reached.add(node)
            if node in self.tiled_merges:  # folded onto its head dims by its own walk only
                merged = _module_of(self.value_merges[node][0].param)
                raw.reasons.append(f"reaches the merged heads of '{merged}'")
                return
            layout = _layout(idxs, roots, raw.width)
            rows, heads = self.value_merges[node]
            if layout is None:
                raw.reasons.append(f"channels reaching '{rows.param}' are split or rearranged")
                return
            off, rep = layout
            raw.add([replace(rows, offset=rows.offset + off, repeat=rep)])
            raw.divisor = math.lcm(raw.divisor, heads)
            return
        entry = _builders().get(t)
        if entry is None:
            return
        builder, needs_layout = entry
        layout = _layout(idxs, roots, raw.width)
        if needs_layout and layout is None:
            blocks = _blocks(idxs, roots, raw.width)
            if blocks:  # the group reaches this layer twice (a concat of x and f(x))
                for b in blocks:
                    builder(self, raw, _Item(node, module, mname, is_in, b))
                return
            what = mname if mname is not None else self.param_name.get(module, "?")
            if not is_in and t in (tp.ops.OPTYPE.LINEAR, tp.ops.OPTYPE.CUSTOMIZED):
                raw.fused.append((mname, module))
            size = _channel_size(module, is_in) if mname is not None else None
            if size and size % raw.width == 0 and size > raw.width:
                raw.unplaced.append((builder, _Item(node, module, mname, is_in, None), size))
            raw.reasons.append(f"channels reaching '{what}' are split or rearranged")
            raw.rearranged = True
            return
        builder(self, raw, _Item(node, module, mname, is_in, layout))

    def _head_table_in_scores(self, name: str, p: torch.Tensor, dim: int, need: int) -> bool:
        """A raw ``(positions, heads)`` table (Swin's and GC-ViT's relative position bias) reached
        along its heads dim with more channels than it has heads: the walk went through a score
        product ``q @ k^T`` into the scores the table is added to. Its entries are heads, not
        these channels: not a member (a permutation within heads leaves it in place; the
        permutation check decides)."""
        if p.ndim != 2 or dim != p.ndim - 1 or need <= p.shape[dim]:
            return False
        for owner in self._owners([name])[:3]:
            heads = next((getattr(owner, a) for a in _HEADS_ATTRS if hasattr(owner, a)), None)
            if isinstance(heads, int):
                return heads == p.shape[dim]
        return False

    def _group_statistic(self, raw: _Raw, node: TPNode, idxs: list[int], roots: list[int]) -> None:
        """The channels reach a per-group statistic (:func:`._cut_group_statistics`): like
        ``nn.GroupNorm``, they permute within its groups, so a group that covers whole groups
        of it (all its channels, or a concatenated piece) gets one block per such group."""
        channels, groups = self.group_stats[node]
        size = channels // groups
        off, rep = _layout(idxs, roots, raw.width) or (-1, 0)
        if rep == 1 and off % size == 0 and raw.width % size == 0:
            raw.divisor = math.lcm(raw.divisor, raw.width // size)
            return
        raw.reasons.append(
            f"a group statistic computed by hand (reshape into {groups} groups of {size} "
            "channels, reduce, expand back) mixes its channels with others in a group"
        )

    def _inspect_op(self, raw: _Raw, node: TPNode) -> None:
        gf = node.grad_fn
        if gf is None or not hasattr(gf, "name"):
            return
        op = gf.name().lower().replace("backward", "").rstrip("0123456789")
        parents = [f for f, _ in gf.next_functions if f is not None]
        if any(k in op for k in ("view", "reshape", "transpose", "permute")):
            raw.rearranged = True
        # "upsamplebilinear2d" names "linear" but is a resampling (PVT's position embeddings)
        if any(k in op for k in _MATMUL_OPS) and not op.startswith("upsample"):
            weights = [_weight_leaves(f, self.param_name) for f in parents]
            params = sorted(
                {self.unwrapped[p] for w in weights if w for p in w if p in self.unwrapped}
                - _scoring_vectors(parents, weights, self.unwrapped)
                - _lookup_tables(gf, self.unwrapped)
            )
            if params:
                for p in params:
                    self.left_out.setdefault(
                        f"parameter '{p}'",
                        f"used by {op}() outside a module (F.linear/matmul/einsum on a raw "
                        "nn.Parameter); wrap it in nn.Linear to have it grouped",
                    )
                    self.param_roots.setdefault(f"parameter '{p}'", set()).add(raw.root)
                raw.reasons.append(
                    "parameter "
                    + ", ".join(f"'{p}'" for p in params)
                    + f" is used by {op}() outside a module"
                )
            elif sum(w is None for w in weights) >= 2:
                # A product of two activations: q @ k^T, attn @ v. Sparse products are message
                # passing (A @ H mixes nodes, not channels), as in a GCN.
                raw.attention = raw.attention or not op.startswith("sparse")
        if op.startswith(("mul", "div")) and any(
            id(getattr(f, "variable", None)) in self.leaves for f in parents
        ):
            raw.input_product = True
        if op.startswith(("add", "sub")) and len(parents) >= 2:
            raw.residual = True
            for f in parents:
                var = getattr(f, "variable", None)
                # x + f(x) on the model input: these channels are the input's, not tunable
                if (
                    var is not None
                    and id(var) in self.leaves
                    and var.ndim >= 2
                    and raw.width in (var.shape[1], var.shape[-1])
                ):
                    raw.tied_input = True

    def _recurrent(self, name: str, rnn: nn.RNNBase, raws: list[_Raw]) -> list[_Raw]:
        from widthwise.groups import recurrent as rec

        problems = self.cuts.problems
        proj = getattr(rnn, "proj_size", 0)
        h = proj or rnn.hidden_size  # the units the next layer and the output read
        dirs = ("", "_reverse") if rnn.bidirectional else ("",)
        out: list[_Raw] = []
        layers: list[_Raw] = []  # the hidden units' group of each layer
        for layer in range(rnn.num_layers):
            for d, sfx in enumerate(dirs):
                if proj:  # the cell units, read only by this layer's projection
                    cell = _Raw(rnn.hidden_size, name)
                    # proj_size is an LSTM option
                    cell.add(rec.lstm_cell_members(name, cast(nn.LSTM, rnn), layer, sfx))
                    cell.kind, cell.name = "recurrent", f"{name}.l{layer}{sfx} (cell)"
                    if name in problems:
                        cell.reasons.append(problems[name])
                    out.append(cell)
                members = rec.rnn_layer_members(name, rnn, layer, sfx)
                label = f"{name}.l{layer}{sfx} (hidden)"
                if layer + 1 < rnn.num_layers:
                    raw = _Raw(h, name)
                    raw.add(members)
                    out.append(raw)
                else:  # the last layer joins the group that Torch-Pruning built downstream
                    host = next((r for r in raws if any(x[1] is rnn for x in r.rnn_out)), None)
                    if host is None:
                        raw = _Raw(h, name)
                        raw.add(members)
                        out.append(raw)
                    elif len(dirs) == 1:
                        host.add(members)
                        raw = host
                    else:
                        raw = _Raw(h, name)
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
                for p in self.cuts.learned.get(name, ()) if layer == 0 else ():
                    pname = self.param_name.get(p, "?")
                    if p.shape[-1] != h or p.numel() not in (h, h * rnn.num_layers * len(dirs)):
                        raw.reasons.append(f"'{name}' starts from '{pname}' {tuple(p.shape)}")
                    elif rnn.num_layers * len(dirs) > 1 and (len(dirs) > 1 or proj):
                        raw.reasons.append(
                            f"'{name}' starts all its layers from one learned state '{pname}'"
                        )
                    else:
                        raw.add([Member(pname, p.ndim - 1, "other")])
                layers.append(raw)
        if rnn.num_layers > 1 and len(dirs) == 1 and not proj and self.cuts.learned.get(name):
            out = self._one_learned_state(name, layers, out)
        for r in raws:
            if len(dirs) == 2 and any(x[1] is rnn for x in r.rnn_out):
                r.members.clear()  # replaced by the per-direction copies above
                r.output = False
        return out

    def _one_learned_state(self, name: str, layers: list[_Raw], out: list[_Raw]) -> list[_Raw]:
        """A stacked RNN whose layers all start from one learned state (``h0`` of shape
        ``[L, 1, H]`` or ``[1, 1, H]`` expanded): the state's last dim is every layer's units,
        so the layers' units permute together, as one group (nn.RNNBase has one
        ``hidden_size`` anyway). The last layer may be a group built downstream of the RNN."""
        host = layers[-1]
        for raw in layers[:-1]:
            host.add(raw.members)
            host.reasons += raw.reasons
        host.name = f"{name} (hidden)"
        host.notes.append(f"'{name}' starts every layer from one learned state")
        return [r for r in out if not any(r is x for x in layers[:-1])]

    # -- raw groups -> verified ChannelGroups ------------------------------------------------

    def _regroup_grouped_conv(self, raw: _Raw) -> None:
        """A group read by convolutions with ``groups = G``: channel ``i`` becomes channel ``i``
        of every block (the conv's weight columns are shared by the blocks)."""
        big = 1
        for mname, conv, off, rep in raw.grouped_in:
            if off != 0 or rep != 1 or conv.in_channels != raw.width:
                raw.reasons.append(f"grouped convolution '{mname}' reads part of these channels")
                return
            big = math.lcm(big, conv.groups)
        if raw.width % big:
            raw.reasons.append(f"width {raw.width} is not a multiple of the conv groups {big}")
            return
        a = raw.width // big
        if a == 1:
            names = ", ".join(f"'{n}'" for n, *_ in raw.grouped_in)
            raw.reasons.append(f"depthwise convolution {names} multiplies its channels")
            return
        div = raw.divisor // math.gcd(raw.divisor, big)
        if a % div:
            raw.reasons.append(f"the conv groups {big} and the divisor {raw.divisor} disagree")
            return
        members = [
            replace(m, offset=m.offset + k * a * m.repeat) for m in raw.members for k in range(big)
        ]
        for mname, conv, _, _ in raw.grouped_in:
            members += [
                Member(f"{mname}.weight", 1, "consumer", j * a) for j in range(big // conv.groups)
            ]
        raw.members = dict.fromkeys(members)
        raw.width, raw.divisor = a, div
        raw.notes.append(f"each channel is one channel in each of the {big} conv groups")

    def _merge_multipliers(self, raws: list[_Raw]) -> list[_Raw]:
        """A group read by a depthwise conv with a channel multiplier (``groups ==
        in_channels``, ``k`` outputs per input: PiT's pooling, FastViT's downsample) takes over
        the group of the conv's outputs: input channel ``i`` owns outputs ``[k*i, k*i+k)``, so
        every member there becomes a block of ``k`` (``repeat`` times ``k``). Chains compose
        (PiT's three stages become one group). The outputs' permutations within blocks are not
        returned separately: they would share members with this group."""
        owner: dict[str, _Raw] = {}  # a multiplier conv's weight -> the group of its outputs
        for raw in raws:
            for conv in raw.multiplied:
                if conv in self.module_name:
                    owner.setdefault(self.module_name[conv] + ".weight", raw)
        gone: set[int] = set()
        changed = bool(owner)
        while changed:
            changed = False
            for raw in raws:
                # a fixed or failed input group would take the outputs' own groups down with it
                if id(raw) in gone or raw.reasons or raw.output or raw.tied_input:
                    continue
                for entry in list(raw.grouped_in):
                    mname, conv, off, rep = entry
                    if not _multiplier(conv) or off or conv.in_channels != raw.width * rep:
                        continue
                    out = owner.get(f"{mname}.weight")
                    if out is not raw and (
                        out is None or id(out) in gone or out.width != conv.out_channels
                    ):
                        continue
                    raw.grouped_in.remove(entry)
                    changed = True
                    if out is raw:  # a second conv into the same outputs (FastViT's small)
                        continue
                    self._take_outputs(raw, out, out.width // raw.width)
                    gone.add(id(out))
                    for k, v in owner.items():
                        if v is out:
                            owner[k] = raw
        for raw in raws:
            for conv in raw.multiplied:
                raw.divisor = math.lcm(raw.divisor, conv.groups)
        return [r for r in raws if id(r) not in gone]

    @staticmethod
    def _take_outputs(raw: _Raw, out: _Raw, f: int) -> None:
        """``raw`` absorbs ``out``, whose channels ``[f*i, f*i+f)`` are its channel ``i``."""
        raw.add(replace(m, repeat=m.repeat * f) for m in out.members)
        raw.grouped_in += [(n, c, off, rep * f) for n, c, off, rep in out.grouped_in]
        raw.divisor = math.lcm(raw.divisor, out.divisor // math.gcd(out.divisor, f))
        raw.reasons += out.reasons
        raw.notes += out.notes
        raw.notes.append(f"each channel owns {f} channels of '{out.name or out.root}'")
        raw.unplaced += out.unplaced
        raw.rnn_out += [(n, r, off, rep * f) for n, r, off, rep in out.rnn_out]
        raw.output |= out.output
        raw.tied_input |= out.tied_input
        raw.residual |= out.residual
        raw.attention |= out.attention
        raw.rearranged |= out.rearranged
        raw.input_product |= out.input_product
        raw.declared |= out.declared
        raw.broadcast |= out.broadcast

    def _merge_shared(self, raws: list[_Raw]) -> list[_Raw]:
        """One group for raw groups that hold the same slice of one tensor: a tied weight used
        twice (T5's shared embedding starts the encoder and the decoder stream; Torch-Pruning
        links a reused module to one of its calls only)."""
        owner: dict[tuple[str, int, int, int, int], _Raw] = {}
        parent: dict[int, _Raw] = {}

        def find(r: _Raw) -> _Raw:
            while id(r) in parent:
                r = parent[id(r)]
            return r

        for raw in raws:
            if raw.grouped_in or raw.name is not None:
                continue
            for m in raw.members:
                key = (self.canonical.get(m.param, m.param), m.dim, m.offset, m.repeat, raw.width)
                other = owner.setdefault(key, raw)
                a, b = find(other), find(raw)
                if a is not b:
                    parent[id(b)] = a
        if not parent:
            return raws
        out: list[_Raw] = []
        for raw in raws:
            root = find(raw)
            if root is raw:
                out.append(raw)
                continue
            root.add(raw.members)
            root.reasons += raw.reasons
            root.notes += raw.notes
            root.output |= raw.output
            root.tied_input |= raw.tied_input
            root.residual = True
            root.attention |= raw.attention
            root.rearranged |= raw.rearranged
            root.input_product |= raw.input_product
            root.divisor = math.lcm(root.divisor, raw.divisor)
        return out

    def _untraced_siblings(self, raws: list[_Raw]) -> list[_Raw]:
        """Modules of a ``ModuleList``/``ModuleDict`` that the example input never ran (experts
        no token was routed to: Switch, NLLB-MoE) couple like a sibling that ran, if all are
        alike: each group gets the same members in them, and a group inside one sibling is
        copied into each. The permutation check confirms both."""
        copies: dict[str, list[str]] = {}  # 'list.k.' of a sibling that ran -> ones that did not
        for name, mod in self.modules.items():
            if not isinstance(mod, (nn.ModuleList, nn.ModuleDict)) or not name:
                continue
            kids = [(f"{name}.{k}.", c) for k, c in mod.named_children()]
            shapes = {tuple((n, p.shape) for n, p in c.named_parameters()) for _, c in kids}
            if len(kids) < 2 or len(shapes) != 1 or not next(iter(shapes)):
                continue
            ran = [
                p for p, c in kids if any(self.module_name[m] in self.traced for m in c.modules())
            ]
            idle = [p for p, _ in kids if p not in ran]
            if ran and idle:
                copies[ran[0]] = idle
        if not copies:
            return raws
        out: list[_Raw] = []
        for raw in raws:
            out.append(raw)
            for src, dsts in copies.items():
                inside = [m for m in raw.members if m.param.startswith(src)]
                if not inside:
                    continue
                if len(inside) == len(raw.members):  # a group inside the sibling: one per copy
                    for dst in dsts:
                        root = raw.root
                        twin = _Raw(
                            raw.width, dst + root[len(src) :] if root.startswith(src) else root
                        )
                        twin.add(replace(m, param=dst + m.param[len(src) :]) for m in inside)
                        twin.reasons, twin.notes = list(raw.reasons), list(raw.notes)
                        twin.output, twin.residual = raw.output, raw.residual
                        twin.attention, twin.divisor = raw.attention, raw.divisor
                        out.append(twin)
                else:
                    raw.add(replace(m, param=d + m.param[len(src) :]) for m in inside for d in dsts)
        return out

    def _finish(self, raws: list[_Raw]) -> list[ChannelGroup]:
        cands: list[tuple[_Raw, ChannelGroup]] = []
        placements: list[_Placement] = []
        for raw in self._merge_multipliers(self._merge_shared(self._untraced_siblings(raws))):
            if raw.output or raw.tied_input:
                continue
            if raw.grouped_in and not raw.reasons:
                self._regroup_grouped_conv(raw)
            members = self._canonical_members(raw)
            if not members:
                if raw.reasons:  # every item refused: still say so
                    key = raw.name or raw.root or "?"
                    self.left_out[key] = "; ".join(dict.fromkeys(raw.reasons))
                    self.root_keys.setdefault(raw.root, set()).add(key)
                continue
            layers = sorted(
                {_module_of(m.param) for m in members},
                key=lambda n: self.module_order.get(n, -1),
            )
            if any(m.role == "producer" and _module_of(m.param) in self.ignored for m in members):
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
                why = "; ".join(dict.fromkeys(raw.reasons))
                options = self._placements(raw, group) if raw.unplaced else []
                if options:  # decided after verification, when the layouts have been tried
                    placements.append((raw, group, why, options))
                    continue
                self.left_out[group.name] = why
                self.root_keys.setdefault(raw.root, set()).add(group.name)
                continue
            problem = self._shape_problem(group)
            if problem:
                self.left_out[group.name] = problem
                self.root_keys.setdefault(raw.root, set()).add(group.name)
                continue
            cands.append((raw, group))
        cands, placements = self._known_blocks(cands, placements)
        for raw, group in list(cands):  # blocks written from a definition: shapes checked too
            if problem := self._shape_problem(group):
                cands.remove((raw, group))
                self.left_out[group.name] = problem
                self.root_keys.setdefault(raw.root, set()).add(group.name)
        cands = self._drop_overlaps(cands)
        groups = self._verify(cands)
        # a keys group whose other classes were left out gives way to the projection
        # candidates, which group the whole fused projection (one group for q, k and v)
        groups = [g for g in groups if not self.root_keys.get(self.keys_of.get(g.name, ""))]
        extra = self._mamba(groups)
        extra += self._projections(groups + extra)
        extra += self._declared_inner(groups + extra)
        extra += self._place(placements, groups + extra)
        groups += [  # ignore= applies to these too
            g for g in extra if not any(_module_of(m.param) in self.ignored for m in g.producers)
        ]
        groups = [
            replace(
                g,
                members=tuple(
                    sorted(
                        g.members,
                        key=lambda m: (self.param_order.get(m.param, -1), m.dim, m.offset),
                    )
                ),
            )
            for g in groups
        ]
        groups.sort(
            key=lambda g: min(self.param_order[m.param] for m in (g.producers or g.members))
        )
        seen: dict[str, int] = {}
        named = []
        for g in groups:
            k = seen[g.name] = seen.get(g.name, 0) + 1
            named.append(g if k == 1 else replace(g, name=f"{g.name} #{k}"))
        return named

    def _cut_value_merges(self, dg: TPGraph) -> dict[TPNode, tuple[Member, int]]:
        """For each block whose output is merged from heads (:mod:`.blocks`, BoTNet): the
        reshape that merges them, cut from the attention inside (whose head reshapes
        Torch-Pruning cannot map), with the producer rows its channels are."""
        from widthwise.groups.blocks import known_blocks

        self.blocks = known_blocks(self.model)
        out: dict[TPNode, tuple[Member, int]] = {}
        self.merges_reached: set[TPNode] = set()
        self.tiled_merges: dict[TPNode, tuple[int, tuple[Member, ...]]] = {}
        for b in self.blocks:
            if b.values is None or b.values[0] not in dg.module2node:
                continue
            producer, rows, heads = b.values
            width = self.params[rows.param].shape[rows.dim] - rows.offset
            if b.tiled:
                width = heads * b.tiled[0]
            node = _head_merge(dg.module2node[producer], width, any_shape=b.tiled is not None)
            if node is None:
                continue
            for n in list(node.inputs):
                node.dependencies = [d for d in node.dependencies if d.target is not n]
                n.dependencies = [d for d in n.dependencies if d.target is not node]
            out[node] = (rows, heads)
            if b.tiled:
                self.tiled_merges[node] = b.tiled
        return out

    def _rows_declared(self, root: nn.Module) -> bool:
        """Every output row of ``root`` is in a group of a block written from its definition
        (:mod:`.blocks`, value rows folded from a merge included): the groups replace what
        its walk would build, and through the block's head reshapes that walk does not end
        (CoaT's qkv and shared depthwise convs: each ran to its step bound)."""
        w = getattr(root, "weight", None)
        if not isinstance(root, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) or w is None:
            return False
        param, held = f"{self.module_name[root]}.weight", set()
        for b in self.blocks:
            found = [(m, g.width) for g in b.groups for m in g.members]
            found += [(m, b.tiled[0]) for m in b.tiled[1]] if b.tiled else []
            for m, width in found:
                if m.param == param and m.dim == 0:
                    held |= _span(m, width)
        return bool(held) and held >= set(range(w.shape[0]))

    def _walk_value_merges(self, dg: TPGraph, budget: int) -> list[_Raw]:
        """Walk from each head merge (:meth:`_cut_value_merges`) that no layer's walk reached
        downstream (timm's BoTNet: the attention's values are read by a BatchNorm and a conv,
        not added to a stream): their channels are the producer rows it names."""
        out = []
        for node, (rows, heads) in self.value_merges.items():
            if node in self.merges_reached or time.monotonic() > self.deadline:
                continue
            fn = dg.get_pruner_of_module(node.module).prune_out_channels
            width = self.params[rows.param].shape[rows.dim] - rows.offset
            tiled = self.tiled_merges.get(node)
            if tiled:
                width = heads * tiled[0]
            root = _module_of(rows.param)
            raw = _Raw(width, root)
            raw.name, raw.kind = f"{root} (values)", "attention"
            try:
                items = self._walk(dg, node.module, fn, width, budget)
            except _OutOfTime:
                self.left_out[raw.name] = f"the dependency walk from it did not end within {budget}"
                continue
            for item in items:
                if not (tiled and item[0] is node):
                    self._convert_item(raw, *item)
            out.append(_fold_heads(raw, heads, *tiled) if tiled else raw)
        return out

    def _known_blocks(
        self, cands: list[tuple[_Raw, ChannelGroup]], placements: list[_Placement]
    ) -> tuple[list[tuple[_Raw, ChannelGroup]], list[_Placement]]:
        """Groups of the blocks written from their definition (:mod:`.blocks`: the Mamba
        mixer) replace whatever the walks built on the same tensor dims; they are verified
        like the rest."""
        blocks = self.blocks
        if not blocks:
            return cands, placements
        claimed: dict[tuple[str, int], set[int]] = {}
        for g in (g for b in blocks for g in b.groups):
            for m in g.members:
                claimed.setdefault((m.param, m.dim), set()).update(_span(m, g.width))

        def free(g: ChannelGroup) -> bool:
            return not any(
                claimed.get((m.param, m.dim), set()) & _span(m, g.width) for m in g.members
            )

        for layer in (n for b in blocks for n in b.layers):
            for key in self.root_keys.pop(layer, set()) | {layer, f"parameter '{layer}'"}:
                self.left_out.pop(key, None)
        cands = [(r, g) for r, g in cands if free(g)]
        placements = [p for p in placements if free(p[1])]
        for g in (g for b in blocks for g in b.groups):
            if not any(_module_of(m.param) in self.ignored for m in g.producers):
                cands.append((_Raw(g.width, g.layers[0]), g))
        return cands, placements

    def _canonical_members(self, raw: _Raw) -> list[Member]:
        """Members under the names ``named_parameters()`` uses; a tied slice appears once (the
        first role seen wins: an embedding's producer rows over a tied head's consumer rows)."""
        out: dict[tuple[str, int, int, int, str | None], Member] = {}
        for m in (w for m0 in raw.members for w in self._weight_norm_members(m0)):
            name = self.canonical.get(m.param, m.param)
            key = (name, m.dim, m.offset, m.repeat, m.gate)
            if key not in out:
                out[key] = m if name == m.param else replace(m, param=name)
        return sorted(
            out.values(), key=lambda m: (self.param_order.get(m.param, -1), m.dim, m.offset)
        )

    def _weight_norm_members(self, m: Member) -> list[Member]:
        """A weight-normalised weight (``parametrizations.weight_norm``, or the older
        ``weight_g``/``weight_v`` hooks; wav2vec2's positional conv) is computed, not a
        parameter: its direction ``v`` takes the member's place, and its magnitude ``g`` joins
        as ``"other"`` where it runs along the channel dim (weight_norm's ``dim``). ``w = g v /
        ||v||`` with the norm over the other dims, so permuting both together permutes ``w``.
        The permutation check still confirms it."""
        if m.param in self.params or m.param in self.canonical:
            return [m]
        prefix, _, attr = m.param.rpartition(".")
        names = (
            (
                f"{prefix}.parametrizations.{attr}.original1",
                f"{prefix}.parametrizations.{attr}.original0",
            )
            if self._is_weight_norm(self.modules.get(prefix), attr)
            else (f"{prefix}.{attr}_v", f"{prefix}.{attr}_g")
        )
        v_name, g_name = names
        v, g = self.params.get(v_name), self.params.get(g_name)
        if v is None or g is None or g.ndim != v.ndim:
            return [m]
        out = [replace(m, param=v_name)]
        if g.shape[m.dim] == v.shape[m.dim] > 1:
            out.append(replace(m, param=g_name, role="other"))
        return out

    @staticmethod
    def _is_weight_norm(module: nn.Module | None, attr: str) -> bool:
        from torch.nn.utils import parametrize
        from torch.nn.utils.parametrizations import _WeightNorm

        if module is None or not parametrize.is_parametrized(module, attr):
            return False
        chain = getattr(module.parametrizations, attr)
        return len(chain) == 1 and isinstance(chain[0], _WeightNorm)

    def _name(self, raw: _Raw, members: list[Member]) -> str:
        producers = list(
            dict.fromkeys(_module_of(m.param) or m.param for m in members if m.role == "producer")
        )
        if not producers:
            producers = [_module_of(members[0].param) or members[0].param]
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
        if raw.attention:
            return "attention"
        producers = [m for m in members if m.role == "producer"]
        if len({m.param for m in producers}) > 1 and raw.residual:
            return "residual"
        first = self.modules.get(_module_of(producers[0].param)) if producers else None
        if isinstance(first, nn.modules.conv._ConvNd):
            return "conv"
        if isinstance(first, nn.Linear) or _is_conv1d(first):
            return "linear"
        if producers and producers[0].dim == 0 and self.params[producers[0].param].ndim == 2:
            return "linear"  # F.linear on a raw weight
        if isinstance(first, (nn.Embedding, nn.EmbeddingBag)):
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

    def _drop_overlaps(
        self, cands: list[tuple[_Raw, ChannelGroup]]
    ) -> list[tuple[_Raw, ChannelGroup]]:
        spans: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
        for k, (_, g) in enumerate(cands):
            for m in g.members:
                spans.setdefault((m.param, m.dim), []).append(
                    (m.offset, m.offset + g.width * m.repeat, k)
                )
        bad: dict[int, str] = {}
        for (param, dim), s in spans.items():
            s = sorted(set(s))
            # sorted by start: only neighbours whose spans still reach can overlap
            for i, (a0, a1, ka) in enumerate(s):
                for b0, b1, kb in s[i + 1 :]:
                    if b0 >= a1:
                        break
                    if ka != kb or (a0, a1) != (b0, b1):
                        for k in (ka, kb):
                            bad.setdefault(
                                k,
                                f"it claims '{param}' dim {dim} indices that overlap another group",
                            )
        for k, why in bad.items():
            self.left_out[cands[k][1].name] = why
        return [c for k, c in enumerate(cands) if k not in bad]

    # -- fused projections and attention heads, where the walk failed -------------------------

    def _projections(self, accepted: list[ChannelGroup]) -> list[ChannelGroup]:
        """Groups written from the layers around an attention or gated block whose dependency
        walk failed: producers P (q/k/v, a fused qkv or gate/up) read by one consumer o.

        Candidates, each kept only if the permutation check passes: (1) every channel, gates
        of a fused producer at their offsets, permuted within heads; (2) whole heads (rotary
        embeddings, grouped key/value heads): q rows in blocks of ``r * head_dim``, k/v rows in
        blocks of ``head_dim``, o columns like q.
        """
        if not self.fallbacks:
            return []
        if time.monotonic() > self.deadline:
            for _, _, prods, _ in self.fallbacks:
                self._not_tried(prods)
            return []
        claimed = {(m.param, m.dim) for g in accepted for m in g.members}
        specs, options = [], []
        for oname, omod, prods, norms in self.fallbacks:
            rows = [_rows(n, p, 0, 1, None)[0] for n, p in prods]
            if all((self.canonical.get(m.param, m.param), m.dim) in claimed for m in rows):
                continue  # every producer is already in a verified group
            owners = self._owners([oname, *dict(prods)])
            cands = _projection_candidates(oname, omod, prods, self.canonical, owners)
            if tables := _head_tables(omod, prods, [m for m in owners if m is not None]):
                rest = [p for p in prods if p not in tables]
                cands += _projection_candidates(
                    oname, omod, rest, self.canonical, owners, alone=True
                )
            din = _in_width(omod)
            cands = _with_head_params(cands, _head_params(prods, din, self.params), din)
            cands = _with_projection_norms(cands, prods, _projection_norms(prods, self.modules))
            cands = _with_head_modules(cands, oname, prods, self.modules)
            cands += param_head_candidates(oname, omod, prods, self.params, self.canonical)
            cands = with_concat_convs(cands, prods, self.modules, self.canonical)
            cands += _placed_candidates(oname, omod, prods, norms, self.canonical)
            if _per_head_norms(prods, self.modules, owners):
                cands = _whole_heads_first(cands)
            cands = [
                (key, c)
                for key, c in cands
                if not any((m.param, m.dim) in claimed for m in c.members)
                and self._shape_problem(c) is None
            ]
            if cands:
                specs.append(prods)
                options.append(cands)
        if not options:
            return []
        out: list[ChannelGroup] = []
        sym = self._symmetry()
        for prods, g in zip(specs, self._search(sym, options)):
            spans = {(m.param, m.dim) for m in g.members} if g is not None else set()
            if g is None and time.monotonic() > self.deadline:
                self._not_tried(prods)
            if g is None or spans & claimed:  # two readers of one producer: keep the first
                continue
            out.append(g)
            claimed |= spans
            for m in g.members:  # a raw parameter refused in the walk, now a member
                self.left_out.pop(f"parameter '{m.param}'", None)
            for pname, _ in prods:
                for key in self.root_keys.pop(pname, ()):
                    self.left_out.pop(key, None)
                self._release_params(pname, g)
        return out

    def _mamba(self, accepted: list[ChannelGroup]) -> list[ChannelGroup]:
        """Whole heads and state entries of the Mamba-2 mixers among the walk's failed
        producers (:mod:`.ssm`), each kept only if the permutation check passes. The heads group
        covers the mixer's ``in_proj`` (its walk's failure is no longer named); a state group
        that fails beside it is named."""
        if time.monotonic() > self.deadline:
            return []
        claimed = {(m.param, m.dim) for g in accepted for m in g.members}
        found: list[tuple[list[tuple[str, Any]], list[list[Candidate]]]] = []
        for oname, omod, prods, _ in self.fallbacks:
            opts = mamba_candidates(oname, omod, prods, self.modules, self.canonical)
            opts = [
                [
                    (k, g)
                    for k, g in o
                    if not {(m.param, m.dim) for m in g.members} & claimed
                    and self._shape_problem(g) is None
                ]
                for o in opts
            ]
            if len(opts) == 2 and all(opts):
                found.append((prods, opts))
        out: list[ChannelGroup] = []
        if not found:
            return self._state_blocks(claimed)
        results = self._search(self._symmetry(), [o for _, opts in found for o in opts])
        for k, (prods, opts) in enumerate(found):
            heads, state = results[2 * k], results[2 * k + 1]
            if heads is None:
                continue  # the walk's reason stands
            out += [heads] if state is None else [heads, state]
            if state is None:
                self.left_out[opts[1][0][1].name] = (
                    "permuting its channels (state entries of B and C) changes the model output"
                )
            for g in (heads, state):
                for m in g.members if g is not None else ():
                    self.left_out.pop(f"parameter '{m.param}'", None)
            for pname, _ in prods:
                for key in self.root_keys.pop(pname, ()):
                    self.left_out.pop(key, None)
        return out + self._state_blocks(
            claimed | {(m.param, m.dim) for g in out for m in g.members}
        )

    def _state_blocks(self, claimed: set[tuple[str, int]]) -> list[ChannelGroup]:
        """The state entries of left-out projections split into blocks that share a per-entry
        vector (:func:`.ssm.state_block_candidates`, EfficientViM's HSM-SSD), each kept only if
        the permutation check passes; the projection's walk failure is then no longer named."""
        if time.monotonic() > self.deadline:
            return []
        blocks: list[tuple[str, list[Candidate]]] = []
        for root in list(self.root_keys):
            cands = [
                (k, g)
                for k, g in state_block_candidates(root, self.modules, self.canonical)
                if not {(m.param, m.dim) for m in g.members} & claimed
                and self._shape_problem(g) is None
            ]
            if cands:
                blocks.append((root, cands))
        out: list[ChannelGroup] = []
        if blocks:
            for (root, _), g in zip(blocks, self._search(self._symmetry(), [c for _, c in blocks])):
                if g is not None:
                    out.append(g)
                    for key in self.root_keys.pop(root, ()):
                        self.left_out.pop(key, None)
        return out

    def _not_tried(self, prods: list[tuple[str, Any]]) -> None:
        """Say so where the candidates around left-out producers ran out of time (Gemma-4's
        ViT at 768 x 768: a forward takes seconds), so the reason shown is not taken for the
        last word."""
        note = (
            f"; candidate groups around it not tried within timeout={self.timeout:g} s: "
            "pass a larger timeout"
        )
        for pname, _ in prods:
            for key in self.root_keys.get(pname, ()):
                if key in self.left_out and note not in self.left_out[key]:
                    self.left_out[key] += note

    def _release_params(self, root: str, g: ChannelGroup) -> None:
        """A raw parameter indexed by head dim (its last dim is the ``repeat`` of ``g``'s
        consumer columns: one head) that only the walks from verified groups' producers met in
        a matrix product is not left out: those groups passed the permutation check with it
        fixed (SAM's relative-position tables ``(positions, head_dim)``, shared by all heads,
        under whole heads)."""
        heads = {m.repeat for m in g.consumers if m.repeat > 1}
        for key, roots in list(self.param_roots.items()):
            name = key[len("parameter '") : -1]
            p = self.params.get(name)
            if p is None or p.ndim != 2 or p.shape[-1] not in heads:
                continue
            roots.discard(root)
            if not roots:
                del self.param_roots[key]
                self.left_out.pop(key, None)

    # -- raw parameters whose layout is declared (.layouts) -----------------------------------

    def _declared_member(self, raw: _Raw, it: _Item, name: str) -> None:
        """The member of a raw parameter with a declared layout, in place of Torch-Pruning's
        guess (it reads a matrix product on a raw tensor as element-wise)."""
        declared = self.declared.stream[name]
        if declared is None:  # never on a width: reached only through that element-wise guess
            return
        dim, role = declared
        if self.params[name].shape[dim] != raw.width or it.span != (0, 1):
            raw.reasons.append(f"raw parameter '{name}' is reached with other channels")
            return
        raw.add([Member(name, dim, role)])
        raw.declared = True

    def _declared_inner(self, accepted: list[ChannelGroup]) -> list[ChannelGroup]:
        """The groups inside structures with declared layouts (experts, relative attention,
        span-based convolution): the first candidate of each that passes the permutation
        check. A structure whose every group passes is no longer named as left out."""
        claimed = {(m.param, m.dim) for g in accepted for m in g.members}
        todo: list[list[Candidate]] = []
        owner: list[int] = []  # todo entry -> its structure
        for k, (_, parts) in enumerate(self.declared.inner):
            for opts in parts:
                free: list[Candidate] = [
                    (key, g)
                    for key, g in opts
                    if not {(m.param, m.dim) for m in g.members} & claimed
                ]
                if free:
                    todo.append(free)
                    owner.append(k)
        if not todo or time.monotonic() > self.deadline:
            return []
        sym = self._symmetry()
        out: list[ChannelGroup] = []
        failed: set[int] = set()
        for k, opts, g in zip(owner, todo, self._search(sym, todo)):
            if g is None:
                failed.add(k)
                self.left_out[opts[0][1].name] = (
                    "permuting its channels (whole heads, or alike in every head or expert) "
                    "changes the model output"
                )
                continue
            out.append(g)
            for m in g.members:
                self.left_out.pop(f"parameter '{m.param}'", None)
        for k in set(owner) - failed:  # the walk's failed groups rooted inside it are covered
            prefix = self.declared.inner[k][0] + "."
            for root in [r for r in self.root_keys if r.startswith(prefix)]:
                for key in self.root_keys.pop(root):
                    self.left_out.pop(key, None)
        return out

    # -- verification by permutation symmetry ------------------------------------------------

    def _verify(self, cands: list[tuple[_Raw, ChannelGroup]]) -> list[ChannelGroup]:
        """Keep the groups whose joint channel permutation leaves the model output unchanged.

        All groups are checked in one forward (halving only on failure); an attention group
        starts from the head count its module declares. Failing attention groups then search
        their head count with :meth:`_search`, which costs a few forwards per model, not per
        group."""
        if not cands:
            return []
        if time.monotonic() > self.deadline:
            self._late([g.name for _, g in cands])
            return []
        sym = self._symmetry()
        checked: list[ChannelGroup] = []
        search: list[int] = []  # attention groups whose head count is not declared
        for k, (raw, g) in enumerate(cands):
            if raw.attention and g.divisor == 1:
                hd = _declared_head_dim(self._owners(g.layers), g.width, g.width)
                if hd and 1 < hd < g.width:
                    g = replace(g, divisor=g.width // hd)
                elif hd is None:
                    search.append(k)
            checked.append(g)
        first = [k for k in range(len(checked)) if k not in set(search)]
        failing = sorted([first[j] for j in sym.failing([checked[k] for k in first])] + search)
        retry = [k for k in failing if cands[k][0].attention or cands[k][1].kind == "attention"]
        options: list[list[Candidate]] = [
            [
                (d, replace(checked[k], divisor=d))
                for d in [1, *_divisors(checked[k].width)]
                if d % cands[k][1].divisor == 0 and (d > 1 or k in search)
            ]
            for k in retry
        ]
        # a view Torch-Pruning read as (C, k) that is (k, C): SKNet's paths, stacked on dim 1
        unfold = [k for k in failing if k not in retry and cands[k][0].rearranged]
        retry += unfold
        options += [self._outer_blocks(checked[k]) for k in unfold]
        groups: list[ChannelGroup | None] = list(checked)  # None: left out
        for k, fixed in zip(retry, self._search(sym, options)):
            groups[k] = fixed
        for k in range(len(checked)):  # a layout read from a view: can the check tell?
            if k not in failing and cands[k][0].rearranged:
                alts = [a for _, a in self._outer_blocks(checked[k])]
                groups[k] = self._one_layout(sym, checked[k], alts)
                if groups[k] is None:
                    self.root_keys.setdefault(cands[k][0].root, set()).add(checked[k].name)
        for k in failing:
            raw, g = cands[k]
            if k in retry and groups[k] is not None:
                continue  # a head count that passes was found
            if time.monotonic() > self.deadline:
                why = f"not verified within timeout={self.timeout:g} s"
            elif bufs := self._tied_buffers(sym, g):
                why = (
                    "fixed tensors "
                    + ", ".join(f"'{b}'" for b in bufs)
                    + " (buffers, not parameters: e.g. a sinusoidal position table) are "
                    "combined with its channels, so they cannot be permuted or resized without "
                    "rebuilding them"
                )
            elif raw.input_product:
                why = (
                    "its channels are multiplied element-wise by a model input (a per-channel "
                    "mask or scale), so they are tied to the input's channels"
                )
            elif raw.rearranged:
                why = (
                    "its channels are rearranged between layers (view/transpose/permute, "
                    "e.g. a channel shuffle)"
                )
            else:
                why = (
                    "permuting its channels together changes the model output (a coupling "
                    "the tracer cannot see)"
                )
            self.left_out[g.name] = why
            self.root_keys.setdefault(raw.root, set()).add(g.name)
            groups[k] = None
        return [g for g in groups if g is not None]

    def _outer_blocks(self, g: ChannelGroup) -> list[Candidate]:
        """``g`` with members Torch-Pruning placed as ``k`` consecutive entries per channel
        over a whole dim (a view it read as ``(C, k)``) placed as ``k`` blocks of the width
        instead (the view is ``(k, C)``: SKNet's ``fc_select`` rows viewed as paths by
        channels): all such members at once, then each alone."""
        spread = [
            m
            for m in g.members
            if m.repeat > 1
            and not m.offset
            and self.params[m.param].shape[m.dim] == m.repeat * g.width
        ]

        def unfolded(which: list[Member]) -> ChannelGroup:
            members = [
                replace(m, offset=j * g.width, repeat=1) if m in which else m
                for m in g.members
                for j in range(m.repeat if m in which else 1)
            ]
            note = "channel i is entry i of every block of " + ", ".join(
                f"'{_module_of(m.param)}'" for m in which
            )
            return replace(g, members=tuple(members), notes=(*g.notes, note))

        out: list[Candidate] = [("outer blocks", unfolded(spread))] if spread else []
        if len(spread) > 1:
            out += [(("outer blocks", m.param, m.dim), unfolded([m])) for m in spread]
        return out

    def _one_layout(
        self, sym: Symmetry, g: ChannelGroup, alts: list[ChannelGroup]
    ) -> ChannelGroup | None:
        """``g``, which passed ``sym``, if none of its other layouts ``alts`` (the same channels
        placed otherwise in some member: blocks instead of consecutive entries) passes too;
        else the one layout that alone passes a second, independent weight draw; else None
        (left out, with the reason). A check that passes two layouts of one member cannot see
        that member (SKNet's ``fc_select`` behind a ReLU that is zero for every input under
        the draw), so it must not choose between them."""
        if not alts:
            return g
        if time.monotonic() > self.deadline:
            self.left_out[g.name] = f"not verified within timeout={self.timeout:g} s"
            return None
        # a layout that differs only in members the check sees was decided by the pass itself
        differ = {m.param for a in alts for m in set(a.members) ^ set(g.members)}
        blind = sym.blind(sorted(differ))
        alts = [a for a in alts if {m.param for m in set(a.members) ^ set(g.members)} & blind]
        if not alts:
            return g
        passing = [g, *(a for a in alts if sym.passes([a]))]
        if len(passing) == 1:
            return g
        second = self._second_symmetry()
        alone = [c for c in passing if second.passes([c])]
        if len(alone) == 1:
            return alone[0]
        moved = sorted({m.param for a in passing[1:] for m in set(a.members) ^ set(g.members)})
        self.left_out[g.name] = (
            "the permutation check cannot tell apart the layouts of its channels in "
            + ", ".join(f"'{n}'" for n in moved)
            + " (permuting them there has no effect on the output for these inputs and "
            "weights, e.g. behind a ReLU that is zero for every input)"
        )
        return None

    def _second_symmetry(self) -> Symmetry:
        """The check under a second weight draw (and other permutations), made when needed."""
        if self._sym2 is None:
            self._sym2 = Symmetry(self.model, self.example_inputs, seed=_SECOND_SEED)
        return self._sym2

    def _tied_buffers(self, sym: Symmetry, g: ChannelGroup) -> list[str]:
        """The floating-point buffers (not a norm's running statistics) whose last dim,
        permuted with ``g``, makes ``g`` pass: fixed tables added to the channels (XGLM's one,
        M2M100's encoder and decoder ones). One forward for all, then one per buffer."""
        stats = ("running_mean", "running_var")
        bufs = [
            n
            for n, b in sym.buffers.items()
            if b.is_floating_point()
            and b.ndim >= 1
            and b.shape[-1] == g.width
            and not n.endswith(stats)
        ][:8]

        def probe(names: list[str]) -> bool:
            extra = tuple(Member(n, sym.buffers[n].ndim - 1, "other") for n in names)
            return sym.passes([replace(g, members=(*g.members, *extra))])

        if not bufs or not probe(bufs):
            return []
        needed = [n for n in bufs if not probe([b for b in bufs if b != n])]
        return needed or bufs[:1]

    def _placements(self, raw: _Raw, group: ChannelGroup) -> list[tuple[str, ChannelGroup]]:
        """Where a group's channels may sit in the layers Torch-Pruning could not map (``k``
        blocks of the width, or ``k`` consecutive entries per channel: Swin's patch merging,
        a flatten), when that was the only problem. Each is a candidate for the check."""
        if len(raw.unplaced) != len(raw.reasons) or raw.grouped_in or raw.rnn_out:
            return []
        out: list[tuple[str, ChannelGroup]] = []
        for key in ("blocks", "repeat"):
            extra = _Raw(raw.width, raw.root)
            for builder, it, size in raw.unplaced:
                k = size // raw.width
                for layout in (
                    [(j * raw.width, 1) for j in range(k)] if key == "blocks" else [(0, k)]
                ):
                    builder(self, extra, replace(it, layout=layout))
            if extra.reasons:
                return []
            members = [*group.members, *self._canonical_members(extra)]
            g = replace(group, members=tuple(dict.fromkeys(members)))
            if self._shape_problem(g) is None:
                out.append((key, g))
        return out

    def _place(
        self, placements: list[_Placement], accepted: list[ChannelGroup]
    ) -> list[ChannelGroup]:
        if not placements:
            return []
        claimed = {(m.param, m.dim) for g in accepted for m in g.members}
        sym = self._symmetry()
        options: list[list[Candidate]] = [
            [(k, g) for k, g in opts if not any((m.param, m.dim) in claimed for m in g.members)]
            for *_, opts in placements
        ]
        out: list[ChannelGroup] = []
        for (raw, group, why, _), g, opts in zip(placements, self._search(sym, options), options):
            if g is not None:  # blocks or consecutive entries: only if the check tells them apart
                g = self._one_layout(sym, g, [o for _, o in opts if o is not g])
                if g is None:
                    why = self.left_out.pop(group.name)
            spans = {(m.param, m.dim) for m in g.members} if g is not None else set()
            if g is None or spans & claimed:
                self.left_out[group.name] = why
                self.root_keys.setdefault(raw.root, set()).add(group.name)
                continue
            out.append(replace(g, notes=(*g.notes, "placed by the permutation check")))
            claimed |= spans
        return out

    def _symmetry(self) -> Symmetry:
        """One permutation check per search: its base forward (float64 where the model runs
        so) is the costly part on a large model, and the model does not change meanwhile."""
        if self._sym is None:
            self._sym = Symmetry(self.model, self.example_inputs)
        return self._sym

    def _owners(self, layers: Iterable[str]) -> list[nn.Module]:
        """The modules around ``layers``, nearest first up to the model (where a head count or
        a config is declared)."""
        out: dict[nn.Module, None] = {}
        for n in layers:
            while n:
                n = n.rpartition(".")[0]
                m = self.modules.get(n)
                if m is not None:
                    out.setdefault(m, None)
        return list(out)

    def _search(self, sym: Symmetry, options: list[list[Candidate]]) -> list[ChannelGroup | None]:
        """For each entry, the first option that passes the permutation check, or None.

        Options carry a key (a head count, a candidate kind): once one entry passes with a key,
        that key is tried for every other entry in one batch, since the blocks of one model are
        alike. Groups in a batch never overlap, so a batch that passes vouches for each."""
        result: list[ChannelGroup | None] = [None] * len(options)
        tried: list[set[Hashable]] = [set() for _ in options]
        pending = list(range(len(options)))
        while pending and time.monotonic() <= self.deadline:
            probe = pending[0]
            left = [(k, g) for k, g in options[probe] if k not in tried[probe]]
            if not left:
                pending.pop(0)
                continue
            key, g = left[0]
            tried[probe].add(key)
            if not sym.passes([g]):
                continue
            result[probe] = g
            pending.pop(0)
            batch, used = [], {(m.param, m.dim) for m in g.members}
            for i in pending:
                gi = next((x for k, x in options[i] if k == key and k not in tried[i]), None)
                spans = {(m.param, m.dim) for m in gi.members} if gi is not None else set()
                if gi is not None and not spans & used:
                    tried[i].add(key)
                    batch.append((i, gi))
                    used |= spans
            if batch:
                bad = set(sym.failing([gi for _, gi in batch]))
                for j, (i, gi) in enumerate(batch):
                    if j not in bad:
                        result[i] = gi
                pending = [i for i in pending if result[i] is None]
        return result


# ---------------------------------------------------------------------------------------------
# helpers


def _is_product(node: TPNode) -> bool:
    """An element-wise product of two activations (neither operand a parameter)."""
    gf = node.grad_fn
    if gf is None or not gf.name().startswith("MulBackward"):
        return False
    parents = [f for f, _ in gf.next_functions if f is not None]
    return len(parents) == 2 and all(getattr(f, "variable", None) is None for f in parents)


def _scoring_vectors(
    parents: list[GradFn], weights: list[list[torch.Tensor] | None], unwrapped: dict[Any, str]
) -> set[str]:
    """Raw parameters of shape ``[C, 1]`` that ``x @ w`` reads as the right operand, as they
    are (SwiftFormer's ``w_g``): one score per token from its C channels, so the channels of
    ``x`` are the rows of ``w`` and the single output is fixed like a gate."""
    if len(parents) != 2 or weights[0] is not None or not weights[1]:
        return set()
    w = weights[1]
    if len(w) != 1 or w[0] not in unwrapped or w[0].ndim != 2 or w[0].shape[1] != 1:
        return set()
    # the operand must be the parameter itself (a transpose would make it [1, C])
    return {unwrapped[w[0]]} if getattr(parents[1], "variable", None) is w[0] else set()


def _root_classes(width: int, pairs: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Root channel -> the smallest root it is tied to through ``pairs`` (union-find)."""
    parent = list(range(width))

    def find(r: int) -> int:
        while parent[r] != r:
            parent[r] = parent[parent[r]]
            r = parent[r]
        return r

    for a, b in pairs:
        if 0 <= a < width and 0 <= b < width:
            ra, rb = find(a), find(b)
            parent[max(ra, rb)] = min(ra, rb)
    return {r: find(r) for r in range(width)}


def _lookup_tables(gf: GradFn, unwrapped: dict[Any, str]) -> set[str]:
    """A raw parameter ``w`` that a matrix product reads as its right operand, as it is (up to
    views and broadcasts that keep its last dim), against a constant (Gemma-4's position
    table: ``one_hot(positions) @ w``), or that ``F.embedding`` reads: a table lookup, whose
    output channels are ``w``'s last dim, the dim Torch-Pruning assigns to a raw parameter. The
    check confirms it."""
    nxt = list(gf.next_functions)
    if gf.name().lower().startswith("embeddingbackward"):
        # F.embedding(ids, w) on a raw parameter (I-BERT's quantised embeddings): a lookup
        var = next((getattr(f, "variable", None) for f, _ in nxt if f is not None), None)
        return {unwrapped[var]} if var is not None and var in unwrapped else set()
    if len(nxt) != 2 or nxt[0][0] is not None or nxt[1][0] is None:
        return set()
    f = nxt[1][0]
    for _ in range(6):
        var = getattr(f, "variable", None)
        if var is not None:
            return {unwrapped[var]} if var in unwrapped else set()
        name = f.name().lower()
        parents = [g for g, _ in f.next_functions if g is not None]
        if len(parents) != 1 or not name.startswith(("view", "unsafeview", "expand", "clone")):
            return set()
        sizes = getattr(f, "_saved_self_sym_sizes", None)
        meta = getattr(f, "_input_metadata", None)
        if sizes is not None and meta and int(sizes[-1]) != int(meta[0].shape[-1]):
            return set()  # the last dim merged or split
        f = parents[0]
    return set()


def _span(m: Member, width: int) -> set[int]:
    """The indices a member addresses along its dim."""
    return set(range(m.offset, m.offset + width * m.repeat))


def _head_merge(
    start: TPNode, width: int, limit: int = 200, any_shape: bool = False
) -> TPNode | None:
    """The first reshape after an attention product (``attn @ v``) downstream of ``start``,
    through parameter-free ops, that makes a tensor of ``width`` channels (dim 1 of a 4-D
    map, or the last dim of tokens) out of a differently shaped one: where the heads are
    merged back."""
    import torch_pruning as tp

    seen, queue = {start}, [(start, False)]
    while queue and len(seen) < limit:
        node, after = queue.pop(0)
        for nxt in node.outputs:
            if nxt in seen or isinstance(nxt.module, nn.Parameter):
                continue
            seen.add(nxt)
            gf = nxt.grad_fn
            meta = getattr(gf, "_input_metadata", None)
            product = after or "mm" in (gf.name().lower() if gf is not None else "")
            if product and nxt.type == tp.ops.OPTYPE.RESHAPE and meta:
                shape = list(meta[0].shape)
                before = list(getattr(gf, "_saved_self_sym_sizes", ()))
                # B*heads, HW, d -> B, C, H, W; or B, N, heads, d -> B, N, C
                fits = (len(shape) == 4 and shape[1] == width and len(before) == 3) or (
                    len(shape) == 3 and shape[-1] == width and len(before) == 4
                )
                # any_shape: from B, heads, d, HW or a halo's B*heads, blocks, b, b, d
                fits |= any_shape and len(shape) == 4 and shape[1] == width and before != shape
                if fits:
                    return nxt
            if next(iter(getattr(nxt.module, "parameters", lambda: iter(()))()), None) is None:
                queue.append((nxt, product))
    return None


def _fold_heads(raw: _Raw, heads: int, d: int, rows: tuple[Member, ...]) -> _Raw:
    """The walk ``raw`` from a merge of ``heads`` heads of ``d`` dims (its channel ``h * d +
    j``) as a group of the ``d`` dims: each member repeated at every head's offset, and the
    producer ``rows`` of dim ``j`` of every head (:attr:`.blocks.KnownBlock.tiled`)."""
    out = _Raw(d, raw.root)
    per_channel = ("width", "members", "rnn_out", "grouped_in", "multiplied", "fused", "unplaced")
    for k, v in vars(raw).items():
        if k not in per_channel:
            setattr(out, k, v)
        elif k != "width" and k != "members" and v:  # laid out on the merged channels
            out.reasons.append(f"reaches a layer that reads the merged heads of '{raw.root}'")
    out.add(rows)
    out.add(
        replace(m, offset=m.offset + h * d * m.repeat) for m in raw.members for h in range(heads)
    )
    return out


def _divisors(n: int) -> list[int]:
    return [d for d in range(2, n // 2 + 1) if n % d == 0]


# old private names, still imported from here by callers of the former single module
_call_model = call_model
_map_tensors = map_tensors
