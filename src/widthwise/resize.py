"""Model surgery: give channel groups new widths, within the rules each group carries.

Width rules
-----------
:func:`width_rules` says, for every group, which widths are legal (:class:`WidthRule`): a
multiple of something, a minimum, groups that must keep the *same* width, and whether net2net can
widen it exactly. The rules come from the group (its ``divisor``) and from the modules its members
live in:

* ``nn.GRU``/``nn.LSTM``/``nn.RNN`` have one ``hidden_size`` (and one ``proj_size``): the hidden
  groups of all layers and directions of one module are *tied* and resized together (the module
  is not split);
* ``nn.MultiheadAttention`` has one ``embed_dim`` and a fixed head count: the groups of its input,
  attention and output channels are tied (torch needs the first two equal; ``find_groups`` reads
  the output width as ``embed_dim``), a multiple of ``num_heads`` (the head size changes); an ``nn.TransformerEncoder``'s residual stream is its layers' input, so it
  is tied to every layer's attention width;
* Hugging Face attention modules (GPT-2, BERT, Llama-style, ...) keep ``head_dim`` fixed and
  derive the head count, so their attention group's width is a multiple of the head size (times
  the number of key/value heads under grouped-query attention, whose count is kept); where
  ``find_groups`` makes a channel of whole heads (Llama-style, GPT-NeoX and Falcon fused
  weights: one key/value head with its query heads), any width is legal and heads come and go
  whole; an attention group in a module with no known head size cannot widen exactly;
* a group of one channel of every head (EfficientViT's LiteMLA: each head's q, k and v channel
  ``i``, one group per scale) whose width a module above keeps as ``dim``/``head_dim`` is that
  head size: the groups sharing it are tied and the attribute is set to the new width;
* grouped convolution members that are each one whole conv group only change the groups' size;
* grouped convolutions (``groups > 1``) and ``GroupNorm`` need multiples of their group count,
  and channels never move between their groups (a group that ``find_groups`` lists once per
  conv group, one row in each, is free);
* a weight-standardised convolution (timm's ``StdConv2d``/``ScaledStdConv2d``) normalises each
  filter over its input channels, so its input cannot widen exactly; so does torch's
  ``weight_norm`` (parametrized or hooks) over every dim its magnitude ``g`` is shared along
  (wav2vec2's positional conv: all of them);
* a ``divisor`` that no module above explains is kept as a multiple, and channels stay within
  its blocks (the blocks the group was verified on);
* a weight tied to another (an output layer sharing the input embedding) is resized once and
  stays shared; it both computes and reads the group's channels, so it cannot widen exactly.

With example inputs, :func:`width_rules` also resizes each group once by trial: a coupling the
groups do not record (a reshape to another group's width) shows up as a failing forward pass and
becomes a tie, or ``resizable=False`` when no tie makes it run.

``resize`` checks every width first (:func:`check_widths`); a group not named in ``widths`` takes
the width of a tied group that is named. Whatever breaks a rule, and anything the surgery or
the optional verification forward cannot do, raises :class:`ResizeError` naming the group.

Surgery
-------
One index map per group says, for every channel of the new model, which channel of the old model
it comes from. The same map is applied to every member of the group (producer rows, norm
parameters and their running statistics, consumer columns), so shrinking and widening are one
operation. Channels move in whole units (attention heads of a Hugging Face module) and stay in
their blocks (heads of ``nn.MultiheadAttention``, key/value groups, conv groups):

* shrinking keeps the highest-norm units of each block (norm as in :mod:`widthwise.norms`: the
  product over the group's weight tensors), in their original order;
* widening (``init="net2net"``) appends to each block copies of its highest-norm units and
  splits each copied channel's outgoing weights between the copies (Net2WiderNet, Chen et al.
  2016). The split is random but sums to one, so the new model computes the same function while
  the copies receive different gradients and drift apart — equal halves would keep them
  identical forever. Attention widens per head: Hugging Face modules get whole new heads (copies
  of existing heads, output projection split); ``nn.MultiheadAttention`` (fixed head count) gets
  new channels inside each head, where the copied key rows are split like outgoing weights (the
  score ``q·k`` is bilinear) and the query rows are scaled by ``sqrt(new_head_dim /
  old_head_dim)`` to undo the change of the ``1/sqrt(head_dim)`` temperature;
* ``init="prune"`` shrinks like ``net2net`` and widens with fresh incoming weights and zero
  outgoing weights (zero key rows inside ``nn.MultiheadAttention`` heads): again the same
  function;
* ``init="reinit"`` returns a freshly initialised model of the new shape, as the paper trains
  streamlined models from scratch (``reset_parameters`` of every layer, then a Hugging Face
  model's own initialiser).

Both function-preserving inits are exact (tested to 1e-5) for linear consumers, per-channel norms
(BatchNorm, InstanceNorm), recurrent hidden units and attention. A group normalised over its
channels (LayerNorm, RMSNorm, GroupNorm) cannot be widened exactly — the statistics change — so
its rule says ``widen=False`` and ``net2net``/``prune`` refuse to widen it (narrowing, and
``reinit``, are fine). A normalisation the modules do not show (``F.normalize`` over the channels
in a forward, as SwiftFormer's additive attention) is seen only by running the model: with
``example_inputs``, a widening by ``net2net``/``prune`` whose output differs from the unresized
model's by more than 1e-5 of its scale raises :class:`ResizeError` naming the widened groups.

Torch-Pruning, which finds the groups, has no widening and no recurrent layers, so widthwise does
the surgery itself: the index maps act on the :class:`~widthwise.groups.ChannelGroup` members,
and module attributes (``in_features``, ``num_features``, ``hidden_size``, ``embed_dim``,
Hugging Face ``num_heads``/``split_size``/``all_head_size``, ...) are then read back from the new
weight shapes.

Hugging Face configs
--------------------
The ``config`` of every Hugging Face model in the resized copy (duck-typed: a ``config`` with
``to_dict``; transformers is never imported) is updated, so that ``save_pretrained`` and
``from_pretrained`` rebuild it: ``hidden_size`` (read off the input embedding),
``num_attention_heads``, ``num_key_value_heads`` and ``head_dim`` (off the attention modules),
``intermediate_size``/``n_inner``/``d_ff`` (off the groups of that width; a list of per-layer
values is set per layer). A model built from the new config on the meta device (no memory) is
then compared with the resized one: numbers the model derives from its config when built
(T5's ``model_dim``, Gemma's embedding scale) are copied over, so that the resized model
computes what the loaded one will. Where no config can describe the result (one layer's MLP
resized in a config with one ``intermediate_size``; heads whose size is no longer
``hidden_size / num_attention_heads`` in GPT-2 or BERT, which derive it — Qwen2-style models
take an explicit ``head_dim`` instead; a value the config's own ``validate`` rejects; a layer
the rebuilt model shapes differently, such as BERT's pooler), one :class:`ResizeWarning` names
the field and the model still resizes.
"""

from __future__ import annotations

import copy
import logging
import math
import re
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils.weight_norm import WeightNorm

from widthwise.distributed import canonical_name
from widthwise.groups import ChannelGroup, Member
from widthwise.groups.verify import out_tensors
from widthwise.norms import channel_norms

Init = Literal["net2net", "prune", "reinit"]

__all__ = [
    "Init",
    "ResizeError",
    "ResizeWarning",
    "WidthRule",
    "channel_importance",
    "channel_map",
    "check_widths",
    "resize",
    "resolve_widths",
    "shrink_with_torch_pruning",
    "width_rules",
]


class ResizeError(RuntimeError):
    """The model could not be resized as planned; the message says which group and why."""


class ResizeWarning(UserWarning):
    """The resized model is fine, but its Hugging Face ``config`` cannot describe it (a field
    that holds one value for all layers, now different per layer): ``save_pretrained`` and
    ``from_pretrained`` would not rebuild it. The message names the field."""


# ---------------------------------------------------------------------------------------------
# width rules


@dataclass(frozen=True)
class WidthRule:
    """Which widths a channel group may take.

    Attributes:
        multiple_of: the width must be a multiple of this (head size of a Hugging Face attention
            module, head count of ``nn.MultiheadAttention``, GroupNorm or conv groups).
        minimum: the smallest legal width.
        tied: names of the groups that must keep the same width as this one (one ``hidden_size``
            for all layers of an ``nn.LSTM``; attention and input width of
            ``nn.MultiheadAttention``); their rules are merged, so tied groups share
            ``multiple_of``, ``minimum`` and ``widen``.
        widen: ``False`` when net2net (and ``prune``) cannot widen the group without changing
            the model's function; :func:`resize` then refuses to widen it with those inits.
        reason: why the rule holds, for users.
        resizable: ``False`` when the group must keep its width (a module resize does not
            support, or, with ``example_inputs``, a trial resize that breaks the forward pass).
    """

    multiple_of: int = 1
    minimum: int = 1
    tied: tuple[str, ...] = ()
    widen: bool = True
    reason: str = ""
    resizable: bool = True

    def allows(self, width: int) -> bool:
        """Whether ``width`` is a legal new width (ties aside). A group that is not resizable
        allows none: it keeps its current width."""
        return self.resizable and width >= self.minimum and width % self.multiple_of == 0


@dataclass(frozen=True)
class _HFHeads:
    """How one channel of an attention group maps to the heads of a Hugging Face module."""

    module: str
    head_dim: int
    q_rows: int  # query rows per channel: 1 (channels of heads) or a multiple of head_dim
    kv_rows: int | None  # key/value rows per channel; None: the key/value heads are kept
    kv_heads: int | None = None  # the kept key/value head count (when kv_rows is None)


@dataclass
class _Layout:
    """How a group's channels may move, beyond its public rule."""

    blocks: int = 1  # channels stay inside `blocks` equal contiguous blocks
    unit: int = 1  # ... and move in whole units of this many channels (attention heads)
    within_heads: bool = False  # nn.MultiheadAttention: q rows scaled, k rows split
    hf: list[_HFHeads] = field(default_factory=list)  # Hugging Face attention modules
    refuse: str | None = None  # why any resize of this group is refused
    head_attr: tuple[str, str] | None = None  # (module, attribute) holding the head size


_HEAD_DIM_ATTRS = ("head_dim", "attention_head_size", "head_size", "key_value_proj_dim")
_HEADS_ATTRS = ("num_heads", "num_attention_heads", "n_head", "n_heads")
# attributes of a Hugging Face attention module equal to its attention width
_KV_ATTRS = ("num_key_value_heads", "num_kv_heads")
_WIDTH_ATTRS = ("all_head_size", "split_size", "embed_dim", "inner_dim", "hidden_size")
_OUT_PROJ = ("o_proj", "out_proj", "c_proj", "wo", "dense")
_RNN_PARAM = re.compile(r"^(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")


def _some(names: Sequence[str]) -> str:
    """``"a"``, ``"a and b"`` or ``"a and 3 more"``."""
    names = list(dict.fromkeys(names))
    if len(names) <= 2:
        return " and ".join(names)
    return f"{names[0]} and {len(names) - 1} more"


def _aliases(model: nn.Module) -> dict[str, str]:
    """Every parameter name, tied copies included (an output layer sharing the input embedding),
    mapped to the name ``named_parameters()`` lists it under."""
    primary: dict[int, str] = {}
    out: dict[str, str] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        out[canonical_name(n)] = primary.setdefault(id(p), canonical_name(n))
    return out


def _named_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {canonical_name(n): m for n, m in model.named_modules()}


def _ancestors(name: str) -> list[str]:
    """``"a.b.c"`` -> ``["a.b.c", "a.b", "a", ""]``."""
    parts = name.split(".") if name else []
    return [".".join(parts[:k]) for k in range(len(parts), -1, -1)]


def _hf_attention(module: nn.Module) -> tuple[int, int | None, int | None] | None:
    """``(head_dim, num_heads or None, key/value groups or None)`` of a Hugging Face-style
    attention module (one that keeps the head size as an attribute), else None."""
    if isinstance(module, nn.MultiheadAttention):
        return None
    d = next((getattr(module, a) for a in _HEAD_DIM_ATTRS if hasattr(module, a)), None)
    if not isinstance(d, int) or isinstance(d, bool) or d < 1:
        return None
    heads = next((getattr(module, a) for a in _HEADS_ATTRS if hasattr(module, a)), None)
    if heads is None:  # Llama-style modules keep no head count: read it off the output projection
        out = next((getattr(module, a) for a in _OUT_PROJ if hasattr(module, a)), None)
        if isinstance(out, nn.Linear) and out.in_features % d == 0:
            heads = out.in_features // d
    groups = getattr(module, "num_key_value_groups", None)
    kv_heads = next((getattr(module, a) for a in _KV_ATTRS if hasattr(module, a)), None)
    if groups is None and isinstance(heads, int) and isinstance(kv_heads, int) and kv_heads > 0:
        groups = heads // kv_heads if heads % kv_heads == 0 else None  # Falcon: kv heads only
    if heads is None and groups is None and not hasattr(module, "scaling"):
        return None
    return d, heads if isinstance(heads, int) else None, groups if isinstance(groups, int) else None


def _is_channelwise_norm(module: nn.Module) -> bool:
    # BatchNorm and InstanceNorm normalise each channel on its own; a copied channel keeps its
    # statistics, so widening is exact.
    return isinstance(module, nn.modules.batchnorm._NormBase)


def _normalises_over_channels(module: nn.Module) -> bool:
    if isinstance(module, nn.LayerNorm | nn.GroupNorm):
        return True
    name = type(module).__name__.lower()
    return any(k in name for k in ("layernorm", "rmsnorm", "groupnorm", "layer_norm", "rms_norm"))


_WEIGHT_STANDARDISED = re.compile(r"stdconv|wsconv|weightstandard", re.IGNORECASE)


def _standardises_weights(module: nn.Module) -> bool:
    # timm's StdConv2d/ScaledStdConv2d (NFNet, BiT) normalise each filter over its input
    # channels: split copies change its mean and spread, so widening its input is not exact
    return isinstance(module, nn.modules.conv._ConvNd) and bool(
        _WEIGHT_STANDARDISED.search(type(module).__name__)
    )


def _weight_normalised_over(model: nn.Module, mod_name: str, attr: str, dim: int) -> bool:
    """Whether ``dim`` of a weight-normalised direction ``v`` is normalised over: its magnitude
    ``g`` (torch's ``weight_norm``: ``original0``/``weight_g``) is shared along that dim, so a
    split copy changes the norm of every slice it lies in."""
    if attr == "original1":
        g_name = f"{mod_name}.original0"
    elif attr.endswith("_v"):
        g_name = f"{mod_name}.{attr[:-2]}_g" if mod_name else f"{attr[:-2]}_g"
    else:
        return False
    try:
        g = model.get_parameter(g_name)
        v = model.get_parameter(f"{mod_name}.{attr}" if mod_name else attr)
    except AttributeError:
        return False
    return g.dim() == v.dim() and dim < v.dim() and g.shape[dim] == 1 < v.shape[dim]


_HEAD_SIZE_ATTRS = (*_HEAD_DIM_ATTRS, "dim")


def _head_size_attr(g: ChannelGroup, modules: Mapping[str, nn.Module]) -> tuple[str, str] | None:
    """``(module, attribute)`` of the head size of a group of one channel of every head (the same
    weight listed at several offsets: EfficientViT's LiteMLA), kept by the nearest module above
    its producers as an integer equal to the group's width (``dim``, ``head_dim``)."""
    producers = g.producers
    by_param: dict[str, set[int]] = defaultdict(set)
    for m in producers:
        by_param[m.param].add(m.offset)
    if not producers or max(len(offsets) for offsets in by_param.values()) < 2:
        return None
    for name in _ancestors(producers[0].param.rpartition(".")[0])[1:]:
        mod = modules.get(name)
        for attr in _HEAD_SIZE_ATTRS:
            value = getattr(mod, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and value == g.width:
                return name, attr
    return None


class _Rules:
    """Width rules and layouts of a model's groups (derived once per :func:`resize`)."""

    def __init__(
        self,
        model: nn.Module,
        groups: Sequence[ChannelGroup],
        ties: Sequence[Sequence[str]] = (),
        fixed: Mapping[str, str] | None = None,
    ) -> None:
        self.groups = list(groups)
        self.by_name = {g.name: g for g in self.groups}
        modules = _named_modules(model)
        aliases = _aliases(model)
        multiple: dict[str, int] = {}
        reasons: dict[str, list[str]] = {}
        no_widen: dict[str, list[str]] = {}
        self.layouts: dict[str, _Layout] = {}
        keys: dict[str, set[tuple[str, str]]] = {}
        tie_reasons: dict[tuple[str, str], tuple[str, str]] = {}
        covered: dict[tuple[str, str], set[tuple[int, str]]] = defaultdict(set)
        rnns: dict[tuple[str, str], nn.RNNBase] = {}
        for g in self.groups:
            lay = _Layout()
            mult = max(g.divisor, 1)
            why: list[str] = []
            nw: list[str] = []
            exact_no: list[str] = []
            ks: set[tuple[str, str]] = set()
            blocks: list[int] = []
            explained = False
            for m in g.members:
                mod_name, _, attr = m.param.rpartition(".")
                mod = modules.get(mod_name)
                if mod is None:
                    continue
                parent_name = mod_name.rpartition(".")[0] if mod_name else None
                parent = modules.get(parent_name) if parent_name is not None else None
                if isinstance(mod, nn.RNNBase):
                    hit = _RNN_PARAM.match(attr)
                    if hit:
                        kind, which = hit.group(1), hit.group(2)
                        proj = which == "hr" and m.dim == 0
                        hidden = (
                            which in ("ih", "hh") and m.dim == 0 and m.role != "consumer"
                        ) or (which == "hr" and m.dim == 1)
                        what = f"nn.{type(mod).__name__} '{mod_name}'"
                        # the (layer, direction) whose units these rows compute
                        where = (int(hit.group(3)), hit.group(4) or "")
                        if hidden:
                            key = (mod_name, "hidden")
                            tie_reasons[key] = (
                                what,
                                "one hidden_size for all layers and directions",
                            )
                            ks.add(key)
                            covered[key].add(where)
                            rnns[key] = mod
                        elif proj and kind == "weight":
                            key = (mod_name, "proj")
                            tie_reasons[key] = (what, "one proj_size for all layers and directions")
                            ks.add(key)
                            covered[key].add(where)
                            rnns[key] = mod
                elif isinstance(mod, nn.MultiheadAttention) or (
                    isinstance(parent, nn.MultiheadAttention) and mod is parent.out_proj
                ):
                    mha = mod if isinstance(mod, nn.MultiheadAttention) else parent
                    mha_name = mod_name if mha is mod else str(parent_name)
                    assert isinstance(mha, nn.MultiheadAttention)
                    # input (in_proj columns), attention (q/k/v rows, out_proj columns) and
                    # output (out_proj rows) channels: torch needs the first two equal to
                    # embed_dim; find_groups reads the output width as embed_dim too
                    key = (mha_name, "embed")
                    tie_reasons[key] = (
                        f"nn.MultiheadAttention '{mha_name}'",
                        "one embed_dim for its input, attention and output channels",
                    )
                    if not mha._qkv_same_embed_dim:
                        lay.refuse = (
                            f"nn.MultiheadAttention '{mha_name}' has kdim/vdim different from "
                            "embed_dim, which resize does not support"
                        )
                    ks.add(key)
                    mult = math.lcm(mult, mha.num_heads)
                    explained = True
                    if mha is mod:
                        inner = m.dim == 0 or attr in ("bias_k", "bias_v")
                    else:
                        inner = attr == "weight" and m.dim == 1
                    if inner:
                        lay.within_heads = True
                        blocks.append(mha.num_heads)
                        why.append(
                            f"nn.MultiheadAttention '{mha_name}' keeps {mha.num_heads} heads: "
                            "its width is a multiple of the head count"
                        )
                elif isinstance(mod, nn.modules.conv._ConvNd) and mod.groups > 1:
                    depthwise = mod.groups == mod.in_channels and not mod.transposed
                    # dim 1 of a grouped weight counts channels within one conv group: a group
                    # holding it has one channel per conv group already (find_groups lists its
                    # producers once per conv group), so any width keeps them apart
                    # a member that is one whole conv group (LiteMLA's per-head aggregation: one
                    # member per conv group) only changes the conv groups' size
                    per = mod.weight.shape[0] // mod.groups
                    whole = m.offset % per == 0 and g.width * m.repeat == per
                    if not depthwise and m.dim == 0 and not whole:
                        mult = math.lcm(mult, mod.groups)
                        blocks.append(mod.groups)
                        explained = True
                        why.append(
                            f"grouped convolution '{mod_name}' (groups={mod.groups}): a multiple "
                            "of its group count, channels stay in their groups"
                        )
                if isinstance(mod, nn.GroupNorm):
                    mult = math.lcm(mult, mod.num_groups)
                    blocks.append(mod.num_groups)
                    explained = True
                    why.append(f"GroupNorm '{mod_name}' has {mod.num_groups} groups")
                if _normalises_over_channels(mod) and not _is_channelwise_norm(mod):
                    nw.append(f"{type(mod).__name__} '{mod_name}'")  # normalises over them
                if _standardises_weights(mod) and m.dim == 1:
                    nw.append(f"weight-standardised {type(mod).__name__} '{mod_name}'")
                if _weight_normalised_over(model, mod_name, attr, m.dim):
                    nw.append(
                        f"the weight norm of '{mod_name.removesuffix('.parametrizations.weight')}'"
                    )
            seen: dict[tuple[str, int, int], str] = {}
            for m in g.members:  # one tensor listed twice: a tied weight (input/output embedding)
                key3 = (aliases.get(m.param, m.param), m.dim, m.offset)
                if key3 in seen and (seen[key3] == "consumer") != (m.role == "consumer"):
                    exact_no.append(f"tied weight '{key3[0]}' both computes and reads them")
                seen.setdefault(key3, m.role)
            if g.kind == "attention" and not lay.within_heads:
                hf = self._hf_layout(g, modules)
                if hf is not None:
                    lay_hf, mult_hf, why_hf = hf
                    lay.hf, lay.unit, lay.refuse = lay_hf.hf, lay_hf.unit, lay_hf.refuse
                    blocks.append(lay_hf.blocks)
                    mult = mult_hf  # replaces the head-count divisor: HF keeps the head size
                    explained = True
                    why.append(why_hf)
            if g.kind == "attention" and not lay.within_heads and not lay.hf and not lay.refuse:
                # heads of unknown size and temperature: new channels may land in any head
                exact_no.append("its attention module keeps no head size resize knows")
                lay.head_attr = _head_size_attr(g, modules)
                if lay.head_attr is not None:  # its forward reads it: every group of it moves
                    attn_mod, size_attr = lay.head_attr
                    key = (attn_mod, f"head size {size_attr}")
                    tie_reasons[key] = (
                        f"attention '{attn_mod or type(model).__name__}'",
                        f"one head size ({size_attr}) for the channels of all its heads",
                    )
                    ks.add(key)
            if g.divisor > 1 and not explained:
                blocks.append(g.divisor)
                why.append(f"verified as {g.divisor} blocks of equal width (its divisor)")
            b = 1
            for x in blocks:
                b = math.lcm(b, x)
            lay.blocks = b
            mult = math.lcm(mult, b * lay.unit)
            self.layouts[g.name] = lay
            multiple[g.name] = mult
            reasons[g.name] = why
            no_widen[g.name] = ([f"{_some(nw)} normalise(s) over them"] if nw else []) + exact_no
            keys[g.name] = ks
        for key, rnn in rnns.items():  # one size for all layers: every layer must be a group
            dirs = ("", "_reverse") if rnn.bidirectional else ("",)
            missing = [
                f"l{k}{d}"
                for k in range(rnn.num_layers)
                for d in dirs
                if (k, d) not in covered[key]
            ]
            if missing:
                for g in self.groups:
                    if key in keys[g.name]:
                        self.layouts[g.name].refuse = (
                            f"nn.{type(rnn).__name__} '{key[0]}' has one {key[1]} size, but the "
                            f"units of {', '.join(missing)} are not a group here"
                        )
        for i, names in enumerate(ties):  # found by trial resizes (width_rules' probe)
            key = ("", f"trial {i}")
            tie_reasons[key] = (
                "trial resizes",
                "alone it breaks the forward pass, together it runs",
            )
            for n in names:
                keys[n].add(key)
        for n, why_fixed in (fixed or {}).items():
            self.layouts[n].refuse = why_fixed
        # tied groups: union-find over the shared keys
        parent_of = {g.name: g.name for g in self.groups}

        def find(x: str) -> str:
            while parent_of[x] != x:
                parent_of[x] = parent_of[parent_of[x]]
                x = parent_of[x]
            return x

        owner: dict[tuple[str, str], str] = {}
        for g in self.groups:
            for k in keys[g.name]:
                if k in owner:
                    parent_of[find(g.name)] = find(owner[k])
                else:
                    owner[k] = g.name
        classes: dict[str, list[str]] = defaultdict(list)
        for g in self.groups:
            classes[find(g.name)].append(g.name)
        self.rules: dict[str, WidthRule] = {}
        self.tied: dict[str, tuple[str, ...]] = {}
        for members in classes.values():
            mult = 1
            for n in members:
                mult = math.lcm(mult, multiple[n])
            widen = all(not no_widen[n] for n in members)
            refused = [n for n in members if self.layouts[n].refuse]
            by_what: dict[str, list[str]] = defaultdict(list)
            for k in sorted({k for n in members for k in keys[n]}):
                by_what[tie_reasons[k][1]].append(tie_reasons[k][0])
            tie_why = [f"{_some(labels)}: {what}" for what, labels in by_what.items()]
            for n in members:
                own = list(dict.fromkeys(reasons[n]))
                others = [x for x in members if x != n]
                if others:
                    own += tie_why
                if no_widen[n]:
                    own.append(f"cannot widen exactly: {'; '.join(no_widen[n])}")
                elif not widen:
                    blocked = next(x for x in others if no_widen[x])
                    own.append(
                        f"cannot widen exactly: tied to '{blocked}' ({no_widen[blocked][0]})"
                    )
                lay = self.layouts[n]
                if lay.refuse:
                    own.insert(0, lay.refuse)
                elif refused:
                    lay.refuse = f"tied to '{refused[0]}', which cannot be resized"
                    own.insert(0, lay.refuse)
                self.rules[n] = WidthRule(
                    multiple_of=mult,
                    minimum=mult,
                    tied=tuple(others),
                    widen=widen and not refused,
                    reason="; ".join(dict.fromkeys(own)),
                    resizable=not refused,
                )
                self.tied[n] = tuple(others)

    def _hf_layout(
        self, g: ChannelGroup, modules: Mapping[str, nn.Module]
    ) -> tuple[_Layout, int, str] | None:
        """Head-size layout of a Hugging Face attention group, found on the nearest ancestor of
        its producers that keeps a head size."""
        producers = g.producers or g.members
        for m in producers:
            for name in _ancestors(m.param.rpartition(".")[0])[1:]:
                mod = modules.get(name)
                info = _hf_attention(mod) if mod is not None else None
                if info is None:
                    continue
                d, heads, kv_groups = info
                under = f"{name}." if name else ""
                inside = [x for x in g.producers if x.param.startswith(under)]
                outs = [
                    x.repeat
                    for x in g.members
                    if x.role == "consumer" and x.param.startswith(under)
                ]
                # a channel is one row of each projection (width = heads × head size) or whole
                # heads (find_groups: one key/value head and its query heads, repeat = rows);
                # the output projection reads query rows only, so its repeat counts them even
                # in a fused q/k/v weight interleaved per head (GPT-NeoX: repeat 3 × rows)
                q_rows = min(outs) if outs else max((x.repeat for x in inside), default=1)
                per_head = q_rows == 1
                if (per_head and g.width % d) or (not per_head and q_rows % d):
                    return None
                here = g.width * q_rows // d  # query heads, if the group holds the query side
                total = heads if heads is not None else here
                gqa = bool(kv_groups and kv_groups > 1 and total % kv_groups == 0)
                kv = total // kv_groups if gqa and kv_groups else total
                lay = _Layout(unit=d if per_head else 1)
                kv_rows = [x.repeat for x in inside if x.repeat < q_rows]
                projections = sum(3 if x.repeat == 3 * q_rows > 3 else 1 for x in inside)
                # q, k and v rows (slices of one fused weight, or three weights) must all be in
                # the group: with one head size, heads come and go in all of them together
                if projections < (1 if gqa and not kv_rows else 3):
                    lay.refuse = (
                        f"it holds {projections} of the query/key/value projections of attention "
                        f"'{name}', whose head size {d} is shared by all of them"
                    )
                    return lay, d, f"attention '{name}' keeps head size {d}"
                if here != total:
                    if gqa and here == kv:  # the key/value side alone
                        lay.refuse = (
                            f"resizing the key/value heads of grouped-query attention '{name}' "
                            "without their query heads is not supported"
                        )
                        return lay, d, f"attention '{name}' keeps head size {d}"
                    return None
                unit = f"{d}" if per_head else f"{q_rows // d} head(s) of {d}"
                if gqa and not kv_rows:  # the query/output side: key/value heads are kept
                    lay.blocks = kv
                    lay.hf = [_HFHeads(name, d, q_rows, None, kv)]
                    return (
                        lay,
                        lay.unit * kv,
                        f"attention '{name}' keeps head size {d} and {kv} key/value heads "
                        f"(grouped-query): channels of {unit}, a multiple of {kv}",
                    )
                lay.hf = [_HFHeads(name, d, q_rows, kv_rows[0] if kv_rows else q_rows)]
                if per_head:
                    return lay, d, f"attention '{name}' keeps head size {d}: width = heads × {d}"
                return lay, 1, f"attention '{name}' keeps head size {d}: channels of {unit}"
        return None

    # -- checks -----------------------------------------------------------------------------

    def resolve(self, widths: Mapping[str, int]) -> dict[str, int]:
        """Every group's width: the named ones, tied groups following them, the rest as now."""
        unknown = sorted(set(widths) - set(self.by_name))
        if unknown:
            raise ResizeError(
                f"no channel group named {unknown[0]!r}; known: {sorted(self.by_name)}"
            )
        named: dict[str, int] = {}
        for name, w in widths.items():
            try:
                iw = int(w)
            except (TypeError, ValueError):
                raise ResizeError(f"group {name!r}: width must be an integer, got {w!r}") from None
            if iw != w:
                raise ResizeError(f"group {name!r}: width must be an integer, got {w!r}")
            named[name] = iw
        out = {g.name: g.width for g in self.groups}
        for name, w in named.items():
            for other in self.tied[name]:
                if other in named and named[other] != w:
                    raise ResizeError(
                        f"group {name!r} must keep the same width as {other!r} "
                        f"({self.rules[name].reason}), got {w} and {named[other]}"
                    )
                out[other] = w
            out[name] = w
        return out

    def check(self, widths: Mapping[str, int], init: Init | None) -> dict[str, int]:
        full = self.resolve(widths)
        # named groups first, so that an error names the group the caller asked for
        order = [self.by_name[n] for n in widths] + [g for g in self.groups if g.name not in widths]
        for g in order:
            w = full[g.name]
            if w == g.width:
                continue
            rule = self.rules[g.name]
            lay = self.layouts[g.name]
            why = f" ({rule.reason})" if rule.reason else ""
            if lay.refuse:
                raise ResizeError(f"group {g.name!r} cannot be resized: {lay.refuse}")
            if not rule.resizable:
                raise ResizeError(f"group {g.name!r} cannot be resized{why}")
            if w < 1:
                raise ResizeError(f"group {g.name!r} cannot be resized to {w} channels")
            if w % rule.multiple_of:
                raise ResizeError(
                    f"group {g.name!r} needs a multiple of {rule.multiple_of}, got {w}{why}"
                )
            if w < rule.minimum:
                raise ResizeError(f"group {g.name!r} needs at least {rule.minimum}, got {w}{why}")
            if init in ("net2net", "prune") and w > g.width and not rule.widen:
                raise ResizeError(
                    f"group {g.name!r} cannot be widened function-preservingly{why}; "
                    "use init='reinit' to widen it"
                )
        return full


def width_rules(
    model: nn.Module, groups: Sequence[ChannelGroup], example_inputs: Any = None
) -> dict[str, WidthRule]:
    """The :class:`WidthRule` of every group, by group name.

    The rules come from the groups and the modules they live in. With ``example_inputs``, every
    resizable group is also resized once by trial (one multiple wider, ``init="reinit"``) and
    the model run on them: a group whose trial breaks the forward pass is tied to the groups of
    its width that make it run when resized with it (a coupling the groups do not record, such as
    a reshape to the residual width), or else marked ``resizable=False``. This costs one resize
    and one forward pass per group, and more for the groups that fail.

    >>> import torch
    >>> from widthwise.groups import find_groups
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.GroupNorm(4, 8), nn.Conv2d(8, 2, 1))
    >>> rule = width_rules(net, find_groups(net, torch.randn(1, 3, 4, 4)))["0"]
    >>> rule.multiple_of, rule.widen
    (4, False)
    """
    rules = _Rules(model, groups)
    if example_inputs is None:
        return dict(rules.rules)
    ties, fixed = _probe(model, groups, rules, example_inputs)
    return dict(_Rules(model, groups, ties, fixed).rules)


def _probe(
    model: nn.Module, groups: Sequence[ChannelGroup], rules: _Rules, example_inputs: Any
) -> tuple[list[tuple[str, ...]], dict[str, str]]:
    """Ties and fixed groups found by trial resizes (see :func:`width_rules`)."""

    def fails(names: Sequence[str], width: int) -> str | None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResizeWarning)  # a trial, not the user's resize
                resize(
                    model,
                    groups,
                    dict.fromkeys(names, width),
                    init="reinit",
                    example_inputs=example_inputs,
                )
        except ResizeError as exc:
            return str(exc)
        return None

    def step(names: Sequence[str]) -> int:
        m = 1
        for n in names:
            m = math.lcm(m, rules.rules[n].multiple_of)
        return m

    failing: dict[str, str] = {}
    for g in groups:
        rule = rules.rules[g.name]
        if not rule.resizable or g.name in failing or any(t in failing for t in rule.tied):
            continue
        why = fails([g.name], g.width + rule.multiple_of)
        if why is not None:
            failing[g.name] = why
    ties: list[tuple[str, ...]] = []
    fixed: dict[str, str] = {}
    pending = [g for g in groups if g.name in failing]
    while pending:
        g = pending.pop(0)
        same = [h for h in pending if h.width == g.width]
        found: tuple[str, ...] | None = None
        for h in same:
            pair = (g.name, h.name)
            if fails(pair, g.width + step(pair)) is None:
                found = pair
                break
        if found is None and len(same) > 1:
            every = (g.name, *(h.name for h in same))
            if fails(every, g.width + step(every)) is None:
                found = every
        if found is None:
            fixed[g.name] = f"a trial resize breaks the model: {failing[g.name]}"
            continue
        ties.append(found)
        pending = [h for h in pending if h.name not in found]
    return ties, fixed


def resolve_widths(
    model: nn.Module, groups: Sequence[ChannelGroup], widths: Mapping[str, int]
) -> dict[str, int]:
    """Every group's width after ``widths``: named groups, groups tied to a named one (same
    width), the rest unchanged. Raises :class:`ResizeError` on unknown names or when tied groups
    are given different widths; use :func:`check_widths` for the other rules."""
    return _Rules(model, groups).resolve(widths)


def check_widths(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    widths: Mapping[str, int],
    *,
    init: Init | None = None,
) -> None:
    """Raise :class:`ResizeError` naming the group for any width that breaks a rule.

    Groups not named in ``widths`` keep their width, unless tied to a named group. With
    ``init="net2net"`` or ``"prune"``, widening a group whose rule has ``widen=False`` is refused
    too.
    """
    _Rules(model, groups).check(widths, init)


# ---------------------------------------------------------------------------------------------
# surgery


def channel_importance(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """Per-channel norm (:func:`widthwise.norms.channel_norms`: the product of the channel's
    slice norms over weights with 2+ dims); non-finite norms count as 0."""
    norms = channel_norms(model, [group])[group.name]
    return torch.nan_to_num(torch.from_numpy(norms).double(), nan=0.0, posinf=0.0, neginf=0.0)


def _unit_map(score: torch.Tensor, new: int) -> torch.Tensor:
    old = len(score)
    ranked = torch.argsort(score, descending=True, stable=True)
    if new <= old:
        return ranked[:new].sort().values
    extra = ranked.repeat((new - old) // old + 1)[: new - old]
    return torch.cat([torch.arange(old), extra])


def channel_map(
    importance: torch.Tensor, new_width: int, *, blocks: int = 1, unit: int = 1
) -> torch.Tensor:
    """For each new channel, the old channel it comes from.

    The channels form ``blocks`` equal contiguous blocks of units of ``unit`` channels (heads).
    Within each block, shrinking keeps the most important units in their original order;
    widening keeps every unit and appends copies of the most important ones, cycling if needed.
    A unit's importance is the sum over its channels.

    >>> channel_map(torch.tensor([1.0, 3.0, 2.0]), 2).tolist()
    [1, 2]
    >>> channel_map(torch.tensor([1.0, 3.0, 2.0]), 5).tolist()
    [0, 1, 2, 1, 2]
    >>> channel_map(torch.tensor([1.0, 3.0, 2.0, 0.0]), 6, blocks=2).tolist()
    [0, 1, 1, 2, 3, 2]
    >>> channel_map(torch.tensor([1.0, 1.0, 0.0, 5.0]), 6, unit=2).tolist()
    [0, 1, 2, 3, 2, 3]
    """
    old = len(importance)
    if new_width < 1:
        raise ResizeError(f"a group cannot be resized to {new_width} channels")
    step = blocks * unit
    if old % step or new_width % step:
        raise ResizeError(
            f"{old} -> {new_width} channels cannot keep {blocks} block(s) of {unit}-channel units"
        )
    per = old // blocks
    score = importance.reshape(blocks, per // unit, unit).sum(-1)
    parts = []
    for b in range(blocks):
        units = _unit_map(score[b], new_width // step)
        parts.append(b * per + (units[:, None] * unit + torch.arange(unit)).reshape(-1))
    return torch.cat(parts)


def _split_ratios(mapping: torch.Tensor, old: int, generator: torch.Generator) -> torch.Tensor:
    # Every old channel's copies share its outgoing weight: random positive shares summing to 1.
    shares = torch.rand(len(mapping), generator=generator, dtype=torch.float64) + 0.5
    totals = torch.zeros(old, dtype=torch.float64).index_add_(0, mapping, shares)
    return shares / totals[mapping]


def _copies(mapping: torch.Tensor) -> torch.Tensor:
    """True for every new channel that repeats an old channel already mapped before it."""
    seen: set[int] = set()
    out = torch.zeros(len(mapping), dtype=torch.bool)
    for i, c in enumerate(mapping.tolist()):
        out[i] = c in seen
        seen.add(c)
    return out


@dataclass
class _Edit:
    member: Member
    width: int
    mapping: torch.Tensor  # new channel -> old channel
    scale: torch.Tensor | None  # per new channel, for consumers when widening
    fresh: torch.Tensor | None  # per new channel: True where incoming weights are re-initialised
    group: str = ""


def _index_and_scale(
    size: int, edits: Sequence[_Edit]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One index (and per-element scale/fresh masks) over a tensor dim for all edits on it."""
    edits = sorted(edits, key=lambda e: e.member.offset)
    index, scale, fresh = [], [], []
    cursor = 0
    for e in edits:
        m = e.member
        if m.offset < cursor:
            raise ResizeError(f"overlapping channel blocks in {m.param} (dim {m.dim})")
        keep = torch.arange(cursor, m.offset)
        index.append(keep)
        scale.append(torch.ones(len(keep), dtype=torch.float64))
        fresh.append(torch.zeros(len(keep), dtype=torch.bool))
        block = m.offset + e.mapping[:, None] * m.repeat + torch.arange(m.repeat)[None, :]
        index.append(block.reshape(-1))
        s = e.scale if e.scale is not None else torch.ones(len(e.mapping), dtype=torch.float64)
        scale.append(s.repeat_interleave(m.repeat))
        f = e.fresh if e.fresh is not None else torch.zeros(len(e.mapping), dtype=torch.bool)
        fresh.append(f.repeat_interleave(m.repeat))
        cursor = m.offset + e.width * m.repeat
    if cursor > size:
        raise ResizeError(f"channel blocks reach index {cursor} of a dim of size {size}")
    tail = torch.arange(cursor, size)
    index.append(tail)
    scale.append(torch.ones(len(tail), dtype=torch.float64))
    fresh.append(torch.zeros(len(tail), dtype=torch.bool))
    return torch.cat(index), torch.cat(scale), torch.cat(fresh)


def _owner(model: nn.Module, param: str) -> tuple[nn.Module, str]:
    module_name, _, attr = param.rpartition(".")
    return (model.get_submodule(module_name) if module_name else model), attr


def _holders(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """Every (module, attribute) that holds each parameter tensor (tied weights: several)."""
    out: dict[int, list[tuple[nn.Module, str]]] = defaultdict(list)
    for module in model.modules():
        for name, q in module._parameters.items():
            if q is not None:
                out[id(q)].append((module, name))
    return out


def _apply_dim(
    model: nn.Module,
    param: str,
    dim: int,
    edits: Sequence[_Edit],
    gen: torch.Generator,
    holders: dict[int, list[tuple[nn.Module, str]]],
) -> None:
    module, attr = _owner(model, param)
    p = getattr(module, attr)
    old_size = p.shape[dim]
    index, scale, fresh = _index_and_scale(old_size, edits)
    data = p.data.index_select(dim, index.to(p.device))
    shape = [1] * data.dim()
    shape[dim] = -1
    if any(e.scale is not None for e in edits):
        data = data * scale.to(device=p.device, dtype=data.dtype).reshape(shape)
    if fresh.any():
        mask = fresh.to(p.device).reshape(shape).expand_as(data)
        if data.dim() >= 2:
            bound = 1.0 / max(data[0].numel(), 1) ** 0.5  # nn.Linear/Conv default scale
            noise = (torch.rand(data.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
            data = torch.where(mask, noise.to(device=p.device, dtype=data.dtype), data)
        else:
            data = torch.where(mask, torch.zeros_like(data), data)
    new = nn.Parameter(data.contiguous(), requires_grad=p.requires_grad)
    # tied weights: every holder gets the new tensor; the map follows it (keys stay live ids)
    targets = holders.pop(id(p), [(module, attr)])
    for holder, name in targets:
        holder._parameters[name] = new
    holders[id(new)] = targets
    if dim == 0:
        # Per-channel buffers (BatchNorm running statistics) follow the same map.
        for bname, buf in list(module.named_buffers(recurse=False)):
            if buf is not None and buf.dim() >= 1 and buf.shape[0] == old_size:
                module._buffers[bname] = buf.index_select(0, index.to(buf.device)).contiguous()


class _SyncError(Exception):
    def __init__(self, module: str, message: str) -> None:
        super().__init__(message)
        self.module = module


def _sync_rnn(name: str, rnn: nn.RNNBase) -> None:
    """Read an RNN's sizes back from its weights and check that every layer agrees."""
    proj = getattr(rnn, "proj_size", 0)
    gates = {"LSTM": 4, "GRU": 3}.get(rnn.mode, 1)
    w = {n: p.shape for n, p in rnn.named_parameters(recurse=False)}
    hidden = int(w["weight_hr_l0"][1] if proj else w["weight_hh_l0"][1])
    if proj:
        rnn.proj_size = int(w["weight_hr_l0"][0])
    rnn.hidden_size = hidden
    rnn.input_size = int(w["weight_ih_l0"][1])
    dirs = ("", "_reverse") if rnn.bidirectional else ("",)
    out = rnn.proj_size if proj else hidden
    for layer in range(rnn.num_layers):
        for sfx in dirs:
            want_in = rnn.input_size if layer == 0 else out * len(dirs)
            got = {
                f"weight_ih_l{layer}{sfx}": (
                    w[f"weight_ih_l{layer}{sfx}"],
                    (gates * hidden, want_in),
                ),
                f"weight_hh_l{layer}{sfx}": (
                    w[f"weight_hh_l{layer}{sfx}"],
                    (gates * hidden, out),
                ),
            }
            if proj:
                got[f"weight_hr_l{layer}{sfx}"] = (
                    w[f"weight_hr_l{layer}{sfx}"],
                    (out, hidden),
                )
            for pname, (shape, want) in got.items():
                if tuple(shape) != want:
                    raise _SyncError(
                        name,
                        f"nn.{type(rnn).__name__} '{name}' has one hidden size, but {pname} "
                        f"would be {tuple(shape)}, not {want}: resize all its layers and "
                        "directions together",
                    )
    rnn._init_flat_weights()  # the cached list still points at the old tensors


def _sync_attributes(model: nn.Module) -> None:
    """Read module attributes back from the (resized) weight shapes."""
    for module in model.modules():
        # the older nn.utils.weight_norm keeps `weight` as a plain tensor its pre-hook recomputes
        # from g and v at each forward: until then it has the old shape
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, WeightNorm):
                with torch.no_grad():
                    setattr(module, hook.name, hook.compute_weight(module))
    for name, module in _named_modules(model).items():
        if isinstance(module, nn.Linear):
            module.out_features, module.in_features = module.weight.shape
        elif isinstance(module, nn.modules.conv._ConvNd):
            w = module.weight
            if module.transposed:  # weight: [in, out / groups, *kernel]
                module.in_channels = w.shape[0]
                module.out_channels = w.shape[1] * module.groups
            elif module.groups > 1 and w.shape[1] == 1 and module.groups == module.in_channels:
                # depthwise, with out = multiplier * in: the multiplier is kept
                mult = module.out_channels // module.in_channels
                module.out_channels = w.shape[0]
                module.groups = module.in_channels = w.shape[0] // mult
            else:  # weight: [out, in / groups, *kernel]
                module.out_channels = w.shape[0]
                module.in_channels = w.shape[1] * module.groups
            if module.out_channels % module.groups or module.in_channels % module.groups:
                raise _SyncError(
                    name,
                    f"convolution '{name}' with groups={module.groups} cannot take "
                    f"{module.in_channels} -> {module.out_channels} channels",
                )
        elif type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # Hugging Face
            conv1d: Any = module  # attributes torch's stubs do not know
            conv1d.nx, conv1d.nf = (int(n) for n in module.get_parameter("weight").shape)
        elif isinstance(module, nn.modules.batchnorm._NormBase):
            if module.weight is not None:
                module.num_features = module.weight.shape[0]
            elif module.running_mean is not None:
                module.num_features = module.running_mean.shape[0]
        elif isinstance(module, nn.LayerNorm) and module.weight is not None:
            module.normalized_shape = tuple(module.weight.shape)
        elif isinstance(module, nn.GroupNorm) and module.weight is not None:
            module.num_channels = module.weight.shape[0]
            if module.num_channels % module.num_groups:
                raise _SyncError(
                    name,
                    f"GroupNorm '{name}' with {module.num_groups} groups cannot take "
                    f"{module.num_channels} channels",
                )
        elif isinstance(module, nn.Embedding | nn.EmbeddingBag):  # not subclasses of each other
            module.num_embeddings, module.embedding_dim = module.weight.shape
        elif isinstance(module, nn.MultiheadAttention):
            if module.in_proj_weight is not None:
                module.embed_dim = module.in_proj_weight.shape[0] // 3
                module.kdim = module.vdim = module.in_proj_weight.shape[1]
                if module.kdim != module.embed_dim:
                    raise _SyncError(
                        name,
                        f"nn.MultiheadAttention '{name}' needs its input width "
                        f"({module.kdim}) equal to its attention width ({module.embed_dim})",
                    )
            module.head_dim = module.embed_dim // module.num_heads
            if module.head_dim * module.num_heads != module.embed_dim:
                raise _SyncError(
                    name,
                    f"nn.MultiheadAttention '{name}' with {module.num_heads} heads cannot take "
                    f"{module.embed_dim} channels",
                )
        elif isinstance(module, nn.RNNBase):
            _sync_rnn(name, module)


def _sync_hf_attention(model: nn.Module, name: str, hf: _HFHeads, old: int, new: int) -> None:
    """Head counts and width attributes of a Hugging Face attention module after a resize of its
    attention group from ``old`` to ``new`` channels (head size fixed)."""
    module: Any = model.get_submodule(name)
    old_heads, new_heads = old * hf.q_rows // hf.head_dim, new * hf.q_rows // hf.head_dim
    for attr in _HEADS_ATTRS:
        if getattr(module, attr, None) == old_heads:
            setattr(module, attr, new_heads)
    for attr in _WIDTH_ATTRS:
        if getattr(module, attr, None) == old * hf.q_rows:
            setattr(module, attr, new * hf.q_rows)
    if hf.kv_rows is None:  # key/value heads kept: more query heads share each
        if hasattr(module, "num_key_value_groups") and hf.kv_heads:
            module.num_key_value_groups = new_heads // hf.kv_heads
        return
    old_kv, new_kv = old * hf.kv_rows // hf.head_dim, new * hf.kv_rows // hf.head_dim
    for attr in _KV_ATTRS:
        if getattr(module, attr, None) == old_kv:
            setattr(module, attr, new_kv)


def resize(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    widths: Mapping[str, int],
    *,
    init: Init = "net2net",
    seed: int = 0,
    example_inputs: Any = None,
) -> nn.Module:
    """A new model whose groups have the given widths; ``model`` is left unchanged.

    ``widths`` maps group names to new widths; groups not named keep theirs, except that a group
    tied to a named one (:attr:`WidthRule.tied`) takes its width. Every width is checked against
    :func:`width_rules` first. With ``example_inputs`` (a tensor, a tuple of positional arguments
    or a dict of keyword arguments) the new model is run once on them, in eval mode and without
    grad, as a check; when ``init`` is ``"net2net"`` or ``"prune"`` and a group widens, its output
    must also match the unresized model's (to 1e-5 of its scale).

    Raises:
        ResizeError: a width breaks a rule, a group cannot be widened function-preservingly with
            ``init="net2net"``/``"prune"`` (by its rule, or by the check forward's output), the
            surgery fails, or the check forward fails; the message names the group.

    >>> import torch
    >>> from widthwise.groups import ChannelGroup, Member
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> g = ChannelGroup("0", 4, (Member("0.weight", 0, "producer"), Member("0.bias", 0, "other"),
    ...                           Member("2.weight", 1, "consumer")))
    >>> wide = resize(net, [g], {"0": 7})
    >>> wide[0].out_features, wide[2].in_features
    (7, 7)
    >>> x = torch.randn(5, 3)
    >>> torch.allclose(wide(x), net(x), atol=1e-6)
    True
    """
    if init not in ("net2net", "prune", "reinit"):
        raise ValueError(f"init must be 'net2net', 'prune' or 'reinit', got {init!r}")
    rules = _Rules(model, groups)
    full = rules.check(widths, init)
    aliases = _aliases(model)
    shapes = {canonical_name(n): p.shape for n, p in model.named_parameters(remove_duplicate=False)}
    for g in groups:  # groups found on another model would fail deep inside the surgery
        for m in g.members:
            if m.param in shapes and (
                m.dim >= len(shapes[m.param])
                or shapes[m.param][m.dim] < m.offset + g.width * m.repeat
            ):
                size = shapes[m.param][m.dim] if m.dim < len(shapes[m.param]) else "no"
                raise ResizeError(
                    f"group {g.name!r} does not fit this model: {m.param} has "
                    f"{size} channels in dim {m.dim}, the group needs "
                    f"{m.offset + g.width * m.repeat} (were the groups found on another model?)"
                )
    changed = [g for g in groups if full[g.name] != g.width]
    names = [g.name for g in changed]
    try:
        new = copy.deepcopy(model)
    except Exception as exc:  # a hook or attribute that cannot be copied
        raise ResizeError(
            f"group(s) {names}: the model cannot be copied to resize it "
            f"({type(exc).__name__}: {exc}); remove what holds it (hooks, open files) first"
        ) from exc
    gen = torch.Generator().manual_seed(seed)
    edits: dict[tuple[str, int], list[_Edit]] = defaultdict(list)
    for g in changed:
        width = full[g.name]
        missing = [m.param for m in g.members if m.param not in shapes]
        if missing:
            raise ResizeError(f"group {g.name!r} names parameters the model lacks: {missing[:3]}")
        lay = rules.layouts[g.name]
        # reinit resets every weight, so which old channel a new one comes from does not matter:
        # skip the norms (the budget search resizes this way once per trial)
        try:
            importance = torch.zeros(g.width) if init == "reinit" else channel_importance(model, g)
        except Exception as exc:
            raise ResizeError(
                f"group {g.name!r}: its channel norms failed ({type(exc).__name__}: {exc})"
            ) from exc
        try:
            mapping = channel_map(importance, width, blocks=lay.blocks, unit=lay.unit)
        except ResizeError as exc:
            raise ResizeError(f"group {g.name!r}: {exc}") from None
        widening = width > g.width
        ratios = _split_ratios(mapping, g.width, gen) if widening else None
        fresh = _copies(mapping) if widening and init == "prune" else None
        # nn.MultiheadAttention heads change size: scores are q·k / sqrt(head_dim), so the query
        # rows absorb the new temperature and the key rows play the outgoing side of q·k
        q_scale = math.sqrt(width / g.width) if lay.within_heads else 1.0
        done: set[tuple[str, int, int]] = set()
        for m in g.members:
            param = aliases[m.param]
            if (param, m.dim, m.offset) in done:  # a tied weight listed under both its names
                continue
            done.add((param, m.dim, m.offset))
            outgoing = m.role == "consumer" or (lay.within_heads and m.gate == "k")
            scale = None
            if outgoing and widening:
                scale = ratios if fresh is None else (~fresh).double()
            if lay.within_heads and m.gate == "q" and q_scale != 1.0:
                scale = torch.full((width,), q_scale, dtype=torch.float64)
            edits[(param, m.dim)].append(
                _Edit(m, g.width, mapping, scale, None if outgoing else fresh, g.name)
            )
    holders = _holders(new)
    for (param, dim), es in edits.items():
        names = sorted({e.group for e in es})
        try:
            _apply_dim(new, _strip_to(new, param), dim, es, gen, holders)
        except ResizeError as exc:
            raise ResizeError(f"group(s) {names}: {exc}") from None
        except Exception as exc:  # a member torch cannot index: name the group, not the tensor
            raise ResizeError(
                f"group(s) {names}: resizing {param} (dim {dim}) failed "
                f"({type(exc).__name__}: {exc})"
            ) from exc
    try:
        _sync_attributes(new)
    except _SyncError as exc:
        touching = [
            g.name
            for g in changed
            if any(m.param.startswith(exc.module + ".") or not exc.module for m in g.members)
        ]
        raise ResizeError(f"group(s) {touching or names}: {exc}") from None
    except Exception as exc:
        raise ResizeError(
            f"group(s) {names}: the resized layers' sizes cannot be read back "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    for g in changed:
        head_attr = rules.layouts[g.name].head_attr
        if head_attr is not None:
            setattr(new.get_submodule(_strip_module(new, head_attr[0])), head_attr[1], full[g.name])
        for hf in rules.layouts[g.name].hf:
            try:
                _sync_hf_attention(new, _strip_module(new, hf.module), hf, g.width, full[g.name])
            except Exception as exc:
                raise ResizeError(
                    f"group {g.name!r}: the head counts of attention '{hf.module}' cannot be "
                    f"updated ({type(exc).__name__}: {exc})"
                ) from exc
    if changed:
        try:
            _update_configs(model, new, groups, full)
        except Exception as exc:  # the model is resized; only its description is in doubt
            warnings.warn(
                f"the config of the model resized at group(s) {names} could not be updated "
                f"({type(exc).__name__}: {exc}); save_pretrained/from_pretrained may not rebuild it",
                ResizeWarning,
                stacklevel=2,
            )
    if init == "reinit":
        try:
            _reinitialise(new)
        except Exception as exc:
            raise ResizeError(
                f"the model resized at group(s) {[g.name for g in changed]} cannot be "
                f"re-initialised ({type(exc).__name__}: {exc})"
            ) from exc
    if example_inputs is not None and changed:
        got = _run_eval(new, example_inputs, [g.name for g in changed])
        widened = [g.name for g in changed if full[g.name] > g.width]
        if init in ("net2net", "prune") and widened:
            # a normalisation the modules do not show (F.normalize over the channels in the
            # forward) breaks net2net's split: the outputs say so
            change = _largest_change(_run_eval(model, example_inputs, []), got)
            if change > _EXACT:
                raise ResizeError(
                    f"group(s) {widened} cannot be widened function-preservingly: with "
                    f"init={init!r} the model's output on example_inputs changes by "
                    f"{change:.1e} (more than {_EXACT:.0e} of its scale; something in the "
                    "forward, such as F.normalize over these channels, depends on how many "
                    "there are); use init='reinit' to widen them"
                )
    return new


# relative to the output's scale: net2net and prune are exact up to float rounding
_EXACT = 1e-5


def _run_eval(model: nn.Module, inputs: Any, names: Sequence[str]) -> Any:
    """``model``'s output on ``inputs``, in eval mode and without grad; training flags restored.
    With ``names`` (a resized model), a failing forward is a ResizeError naming those groups."""
    from widthwise.groups import _call_model

    modes = {mod: mod.training for mod in model.modules()}
    try:
        with torch.no_grad():
            return _call_model(model.eval(), inputs)
    except Exception as exc:
        if not names:
            raise
        raise ResizeError(
            f"the model resized at group(s) {list(names)} fails its forward "
            f"pass ({type(exc).__name__}: {exc})"
        ) from exc
    finally:
        for mod, training in modes.items():
            mod.training = training


def _largest_change(before: Any, after: Any) -> float:
    """Largest change between two outputs, over the tensors of equal shape (a resized residual
    stream changes shape), relative to each tensor's scale (at least 1)."""
    worst = 0.0
    pairs = zip(out_tensors(before, logits_only=False), out_tensors(after, logits_only=False))
    for a, b in pairs:
        if a.shape == b.shape and a.numel():
            scale = max(1.0, a.abs().max().item())
            worst = max(worst, (a - b).abs().max().item() / scale)
    return worst


# ---------------------------------------------------------------------------------------------
# Hugging Face configs

# canonical names; a config's attribute_map resolves its own spelling (n_embd, n_head, d_model)
_CFG_HIDDEN = "hidden_size"
_CFG_HEADS = "num_attention_heads"
_CFG_KV = "num_key_value_heads"
_CFG_HEAD_DIM = ("head_dim", "d_kv")
_CFG_INNER = ("intermediate_size", "n_inner", "d_ff", "ffn_dim")
_LAYER_INDEX = re.compile(r"\.(\d+)\.")


def _hf_models(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the outermost module holding each Hugging Face-style ``config``
    (duck-typed: an object with ``to_dict``); inner modules share their model's config."""
    seen: set[int] = set()
    out = []
    for name, module in model.named_modules():
        cfg = getattr(module, "config", None)
        if cfg is None or id(cfg) in seen or not callable(getattr(cfg, "to_dict", None)):
            continue
        seen.add(id(cfg))
        out.append((canonical_name(name), module))
    return out


def _field(cfg: Any, name: str) -> str:
    """The attribute a config stores ``name`` under (GPT-2: ``hidden_size`` is ``n_embd``)."""
    return str(getattr(cfg, "attribute_map", {}).get(name, name))


def _one(values: Mapping[str, Any]) -> Any:
    return next(iter(values.values())) if len(set(values.values())) == 1 else None


def _build_on_meta(cls: type, cfg: Any) -> tuple[nn.Module | None, str]:
    """``cls(cfg)`` on the meta device (no memory, ~10 ms for a tiny model), quietly; or
    ``(None, why)``."""
    log = logging.getLogger("transformers")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return cls(copy.deepcopy(cfg)), ""
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        log.setLevel(level)


def _match_rebuilt(module: nn.Module, old_cfg: Any, cfg: Any) -> list[str]:
    """Compare ``module`` with the model ``from_pretrained`` would build from ``cfg``.

    A parameter shaped differently is a problem (returned): a coupling the fields do not know,
    such as BERT's pooler, ``hidden_size`` wide. When every shape matches, the numbers a model
    derives from its config when built (T5's ``model_dim``, Gemma's embedding scale) are copied
    into ``module``, and so is a scalar non-persistent buffer that held an old one of them: the
    resized model then computes what the loaded one will.
    """
    if not hasattr(type(module), "config_class"):  # not a Hugging Face model class
        return []
    rebuilt, why = _build_on_meta(type(module), cfg)
    if rebuilt is None:
        if _build_on_meta(type(module), old_cfg)[0] is None:
            return []  # a model class that needs more than its config: nothing to compare
        return [f"a model built from it fails ({why})"]
    want = {n: tuple(p.shape) for n, p in rebuilt.named_parameters()}
    for name, p in module.named_parameters():
        if name in want and want[name] != tuple(p.shape):
            return [
                f"{name} is {tuple(p.shape)}, but a model built from the config would make it "
                f"{want[name]}"
            ]
    twins = dict(rebuilt.named_modules())
    for name, sub in module.named_modules():
        twin: Any = twins.get(name)
        if type(twin) is not type(sub):
            continue
        moved: dict[float, float] = {}
        for attr, value in list(vars(sub).items()):
            other = getattr(twin, attr, None)
            numbers = type(value) in (int, float) and type(other) is type(value)
            if attr[0] != "_" and numbers and other != value:
                setattr(sub, attr, other)
                moved[float(value)] = float(other)  # type: ignore[arg-type]
        transient: Any = sub._non_persistent_buffers_set
        for bname, buf in sub._buffers.items():
            if buf is None or buf.ndim or not buf.is_floating_point() or bname not in transient:
                continue
            old = next((a for a in moved if math.isclose(float(buf), a, rel_tol=1e-6)), None)
            if old is not None:
                with torch.no_grad():
                    buf.fill_(moved[old])
    return []


@dataclass
class _ConfigEdit:
    """What one resize changes in one Hugging Face config, and what it cannot say."""

    cfg: Any
    sets: dict[str, Any] = field(default_factory=dict)
    # set only if a model built from the config agrees (an extra `head_dim`), else `derived`
    tentative: dict[str, Any] = field(default_factory=dict)
    derived: str = ""
    problems: list[str] = field(default_factory=list)

    def said(self, values: Mapping[str, Any]) -> str:
        return ", ".join(f"{_field(self.cfg, k)}={v}" for k, v in values.items())

    def apply(self, module: nn.Module, old_cfg: Any) -> list[str]:
        """Set the values, let the config validate itself, compare a model built from it."""
        cfg = self.cfg
        earlier = list(self.problems)
        stored = {k: _field(cfg, k) for k in self.tentative}  # GPT-2 keeps heads as n_head
        before = {k: cfg.__dict__[f] for k, f in stored.items() if f in cfg.__dict__}
        values = {**self.sets, **(self.tentative if not self.problems else {})}
        for k, v in list(values.items()):
            try:
                setattr(cfg, k, v)
            except Exception as exc:  # a config that refuses the value: say so, keep the model
                self.problems.append(f"{_field(cfg, k)}={v} ({type(exc).__name__}: {exc})")
                del values[k]
        validate = getattr(cfg, "validate", None)  # Hugging Face's own checks of a config
        if values and callable(validate) and not self.problems:
            try:
                validate()
            except Exception as exc:
                self.problems.append(
                    f"{self.said(values)}: {type(cfg).__name__} rejects them ({exc})"
                )
        if not self.problems:
            for why in _match_rebuilt(module, old_cfg, cfg):
                self.problems.append(f"{self.said(values) or 'as it was'}: {why}")
        if self.tentative and self.problems:  # the extra head_dim did not do: undo, say why
            for k in self.tentative:
                if k in before:
                    setattr(cfg, k, before[k])
                elif stored[k] in cfg.__dict__:
                    delattr(cfg, stored[k])
            self.problems = [*earlier, self.derived]
        return self.problems


def _config_hidden(old: nn.Module, new: nn.Module, edit: _ConfigEdit) -> int | None:
    """The residual width, read off the input embedding (when the config's is its width)."""
    hidden = getattr(edit.cfg, _CFG_HIDDEN, None)
    try:
        emb_old = old.get_input_embeddings()  # type: ignore[operator]
        emb_new = new.get_input_embeddings()  # type: ignore[operator]
    except Exception:  # not a PreTrainedModel after all
        return hidden if isinstance(hidden, int) else None
    if not isinstance(hidden, int):
        return None
    embeddings = isinstance(emb_new, nn.Embedding) and isinstance(emb_old, nn.Embedding)
    if embeddings and emb_old.embedding_dim == hidden != emb_new.embedding_dim:
        edit.sets[_CFG_HIDDEN] = emb_new.embedding_dim
        return int(emb_new.embedding_dim)
    return hidden


def _config_heads(new: nn.Module, hidden: int | None, edit: _ConfigEdit) -> None:
    """Head counts and head size, read off the attention modules."""
    cfg = edit.cfg
    heads: dict[str, int] = {}
    kv: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for name, sub in _named_modules(new).items():
        info = _hf_attention(sub)
        if info is not None and info[1] is not None:
            heads[name], sizes[name] = info[1], info[0]
            if info[2]:
                kv[name] = info[1] // info[2]
    if not heads or not isinstance(getattr(cfg, _CFG_HEADS, None), int):
        return
    n, d = _one(heads), _one(sizes)
    explicit = next((f for f in _CFG_HEAD_DIM if getattr(cfg, f, None) is not None), None)
    if n is None:
        edit.problems.append(
            f"{_field(cfg, _CFG_HEADS)} (attention layers now have "
            f"{sorted(set(heads.values()))} heads)"
        )
    elif d is not None and explicit is None and hidden is not None and n * d != hidden:
        # the config derives the head size as hidden / heads; models that read an extra
        # `head_dim` (Qwen2) take one, the others (BERT, GPT-2) cannot: a rebuild tells
        edit.derived = (
            f"{_field(cfg, _CFG_HEADS)} ({n} heads of {d} channels, but "
            f"{type(cfg).__name__} derives the head size as "
            f"{_field(cfg, _CFG_HIDDEN)} / {_field(cfg, _CFG_HEADS)} = {hidden} / {n}: "
            "resize the residual stream and the attention together)"
        )
        edit.tentative = {_CFG_HEADS: n, "head_dim": d}
    elif n != getattr(cfg, _CFG_HEADS):
        edit.sets[_CFG_HEADS] = n
    if explicit is not None and d is not None and getattr(cfg, explicit) != d:
        edit.sets[explicit] = d
    if kv and getattr(cfg, _CFG_KV, None) is not None:
        k = _one(kv)
        if k is None:
            edit.problems.append(
                f"{_field(cfg, _CFG_KV)} (attention layers now have "
                f"{sorted(set(kv.values()))} key/value heads)"
            )
        elif k != getattr(cfg, _CFG_KV):
            edit.sets[_CFG_KV] = k


def _config_mlp(
    groups: Sequence[ChannelGroup],
    full: Mapping[str, int],
    under: str,
    hidden: tuple[int | None, int | None],
    edit: _ConfigEdit,
) -> None:
    """The MLP width, off the groups as wide as the config's intermediate size was."""
    cfg = edit.cfg
    inner = next((f for f in _CFG_INNER if hasattr(cfg, f)), None)
    if inner is None:
        return
    value = getattr(cfg, inner)
    hidden_old, hidden_new = hidden
    # GPT-2 & co.: None means 4 × the hidden size
    was = value if value is not None else 4 * hidden_old if hidden_old else None
    implied = value if value is not None else 4 * hidden_new if hidden_new else None
    per_layer = isinstance(value, list | tuple)
    mlp = {
        g.name: full[g.name]
        for g in groups
        if g.kind not in ("residual", "attention", "recurrent")
        and g.producers
        and all(m.param.startswith(under) for m in g.members)
        and (g.width == was or (per_layer and g.width in value))
    }
    if not mlp:
        return
    w = _one(mlp)
    if w is not None and per_layer:
        if any(v != w for v in value):
            edit.sets[inner] = type(value)([w] * len(value))
    elif w is not None:
        if w != was or was != implied:  # resized, or no longer what None (4 × hidden) says
            edit.sets[inner] = w
    elif per_layer:
        new_value = list(value)
        for gname, width in mlp.items():
            hit = _LAYER_INDEX.search(gname[len(under) :])
            if hit is None or int(hit.group(1)) >= len(new_value):
                edit.problems.append(f"{inner} (no layer index in group '{gname}')")
                return
            new_value[int(hit.group(1))] = width
        edit.sets[inner] = type(value)(new_value)
    else:
        edit.problems.append(
            f"{inner} (the MLP widths now differ per layer: {sorted(set(mlp.values()))}, and "
            f"{type(cfg).__name__}.{inner} holds one value for all layers)"
        )


def _update_configs(
    old: nn.Module, new: nn.Module, groups: Sequence[ChannelGroup], full: Mapping[str, int]
) -> None:
    """Write the resized widths into the config of every Hugging Face model inside ``new``.

    The residual width is read off the input embedding, head counts off the attention modules,
    the MLP width off the groups of the config's intermediate size. A value that differs per
    layer is written per layer where the config holds a list of them; what the config cannot
    say raises one :class:`ResizeWarning` naming the field (which keeps its old value).
    """
    old_modules = _named_modules(old)
    for prefix, module in _hf_models(new):
        if prefix not in old_modules:
            continue
        before = old_modules[prefix]
        edit = _ConfigEdit(module.config)
        hidden_old = getattr(edit.cfg, _CFG_HIDDEN, None)
        hidden = _config_hidden(before, module, edit)
        _config_heads(module, hidden, edit)
        under = f"{prefix}." if prefix else ""
        _config_mlp(groups, full, under, (hidden_old, hidden), edit)
        problems = edit.apply(module, before.config)
        if problems:
            warnings.warn(
                f"{type(edit.cfg).__name__} of "
                f"{('model ' + repr(prefix)) if prefix else 'the model'} cannot describe the "
                f"resized model: {'; '.join(problems)}. save_pretrained/from_pretrained will "
                "not rebuild it; keep its widths uniform per field, or save it whole "
                "(torch.save)",
                ResizeWarning,
                stacklevel=3,
            )


def _reinitialise(model: nn.Module) -> None:
    """Fresh weights for every layer of ``model`` (its shapes as they are)."""
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None) or getattr(
            module, "_reset_parameters", None
        )
        if callable(reset) and module is not model:
            reset()
    # Hugging Face layers (Conv1D, embeddings with padding) have no reset_parameters; their
    # model's own initialiser covers them, at its scale (the outermost such model, once)
    covered: set[int] = set()
    for module in model.modules():
        init_fn = getattr(module, "_init_weights", None)
        if callable(init_fn) and hasattr(module, "config") and id(module) not in covered:
            module.apply(init_fn)
            covered.update(id(m) for m in module.modules())


def _strip_to(model: nn.Module, param: str) -> str:
    # Groups use plain names; a wrapped model's parameters carry a prefix.
    for name, _ in model.named_parameters():
        if canonical_name(name) == param:
            return name
    raise ResizeError(f"parameter {param!r} not found in the model")


def _strip_module(model: nn.Module, module: str) -> str:
    for name, _ in model.named_modules():
        if canonical_name(name) == module:
            return str(name)
    raise ResizeError(f"module {module!r} not found in the model")


def _tp_producer(model: nn.Module, group: ChannelGroup) -> str | None:
    """The name of the Linear/Conv whose output channels are the group's, if Torch-Pruning can
    cut it."""
    if group.kind in ("recurrent", "attention") or any(m.gate for m in group.members):
        return None
    for m in group.producers:
        if m.offset or m.repeat != 1 or not m.param.endswith(".weight"):
            continue
        try:
            module = model.get_submodule(m.param.rpartition(".")[0])
        except AttributeError:
            continue
        if not isinstance(module, nn.Linear | nn.modules.conv._ConvNd):
            continue
        if m.dim == (1 if getattr(module, "transposed", False) else 0):  # its output channels
            return m.param.rpartition(".")[0]
    return None


def shrink_with_torch_pruning(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    widths: Mapping[str, int],
    example_inputs: object,
) -> tuple[nn.Module, set[str]]:
    """Narrow groups with Torch-Pruning, keeping each group's highest-norm channels.

    Returns ``(new_model, done)``: a copy of ``model`` in which every group named in ``done`` has
    its new width; the others (wider, unchanged, or not cuttable by Torch-Pruning: recurrent and
    attention-internal groups, groups whose channels stay in blocks (heads, conv groups) or that
    are tied to others, models with GRU/LSTM or ``nn.MultiheadAttention``, and every cut after
    one Torch-Pruning cannot trace, such as a Hugging Face model returning a cache) are left to
    :func:`resize`. The plan is checked against :func:`width_rules` first (:class:`ResizeError`). Which channels go is decided on ``model`` before any cut (the same choice as
    :func:`resize`), and the dependency graph is rebuilt after every cut, because Torch-Pruning
    caches concat offsets that a cut makes stale.
    """
    import torch_pruning as tp

    from widthwise.groups import _call_model

    rules = _Rules(model, groups)
    rules.check(widths, None)  # refuse a plan that breaks a rule before cutting anything
    new = copy.deepcopy(model)
    if any(isinstance(m, nn.RNNBase | nn.MultiheadAttention) for m in new.modules()):
        return new, set()
    by_name = {g.name: g for g in groups}
    cuts = []
    for name, width in widths.items():
        g = by_name[name]
        lay = rules.layouts[name]
        # Torch-Pruning picks channels without regard to heads or conv groups, and cuts one group
        if int(width) >= g.width or lay.blocks > 1 or lay.unit > 1 or rules.tied[name]:
            continue
        module_name = _tp_producer(model, g)
        if module_name is None:
            continue
        keep = channel_map(channel_importance(model, g), int(width))
        drop = sorted(set(range(g.width)) - set(keep.tolist()))
        cuts.append((name, module_name, drop))
    done: set[str] = set()
    was_training = new.training
    new.eval()
    for name, module_name, drop in cuts:
        try:  # nothing is cut yet: a model Torch-Pruning cannot trace is left to resize()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Torch-Pruning's notes on unwrapped parameters
                graph = tp.DependencyGraph().build_dependency(
                    new,
                    example_inputs=example_inputs,
                    forward_fn=_call_model,
                    verbose=False,
                )
                module = new.get_submodule(module_name)
                pruner = graph.get_pruner_of_module(module)
                cut = graph.get_pruning_group(module, pruner.prune_out_channels, idxs=drop)
        except Exception:
            break
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cut.prune()
        except Exception as exc:  # half cut: the copy is no longer usable
            raise ResizeError(
                f"group {name!r}: Torch-Pruning failed cutting '{module_name}' "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        del graph, cut
        done.add(name)
    new.train(was_training)
    return new, done
