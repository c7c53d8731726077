"""Recurrent and attention modules, which Torch-Pruning cannot group (used by the finder).

What Torch-Pruning 1.6 does with them (checked on ``tests/archs.py``):

* ``nn.GRU`` has no pruner, so the fused kernel's autograd nodes are traced as element-wise ops:
  the GRU's input channels would be coupled straight to its output channels (a wrong group),
  and the gate ``split`` inside makes ``get_all_groups`` crash with an ``IndexError``.
* ``nn.LSTM`` has a pruner that asserts ``num_layers == 1`` and is never a group root, so the
  hidden units of a stacked LSTM are not found at all.
* ``nn.MultiheadAttention`` is one node whose input and output channels are the same group,
  which merges three independent permutation symmetries (input stream, attention channels,
  output stream) into one.

So during tracing each such module is *cut*: a forward hook replaces its outputs with copies made
by a single autograd node whose only graph inputs are the module's own inputs. Torch-Pruning then
sees an opaque layer with ``in`` and ``out`` channels that are not coupled to each other
(:func:`boundary_out_channels` / :func:`boundary_in_channels`, through
``tracing.channel_counter``); the groups inside the module are written here from its definition and
merged with the consumers that Torch-Pruning found downstream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast

import torch
from torch import nn
from torch.autograd.function import FunctionCtx
from torch.nn.utils.rnn import PackedSequence
from torch.utils.hooks import RemovableHandle

from widthwise.groups.types import Member

__all__ = [
    "BOUNDARY_TYPES",
    "CutHooks",
    "boundary_in_channels",
    "boundary_in_members",
    "boundary_out_channels",
    "boundary_out_members",
    "gate_labels",
    "lstm_cell_members",
    "mha_inner_members",
    "rnn_layer_members",
]

BOUNDARY_TYPES = (nn.RNNBase, nn.MultiheadAttention)


def gate_labels(rnn: nn.RNNBase) -> tuple[str | None, ...]:
    """Gate blocks of ``weight_ih``/``weight_hh`` rows, in PyTorch's storage order."""
    if isinstance(rnn, nn.LSTM):
        return ("i", "f", "g", "o")
    if isinstance(rnn, nn.GRU):
        return ("r", "z", "n")
    return (None,)


def _directions(rnn: nn.RNNBase) -> tuple[str, ...]:
    return ("", "_reverse") if rnn.bidirectional else ("",)


# Channel counts of a cut module for Torch-Pruning (``tracing.channel_counter``), registered for
# BOUNDARY_TYPES only: a layer that is not an RNN is an nn.MultiheadAttention.
def boundary_out_channels(layer: nn.Module) -> int:
    if isinstance(layer, nn.RNNBase):
        return (getattr(layer, "proj_size", 0) or layer.hidden_size) * len(_directions(layer))
    return cast(nn.MultiheadAttention, layer).embed_dim


def boundary_in_channels(layer: nn.Module) -> int:
    if isinstance(layer, nn.RNNBase):
        return layer.input_size
    return cast(nn.MultiheadAttention, layer).embed_dim


class _Cut(torch.autograd.Function):
    """Identity on ``outputs`` whose graph parents are ``inputs`` (never differentiated)."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, n_inputs: int, anchor: torch.Tensor, *tensors: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        return tuple(t.clone() for t in tensors[n_inputs:])

    @staticmethod
    def backward(  # pragma: no cover - tracing never calls backward
        ctx: FunctionCtx, *grads: torch.Tensor
    ) -> NoReturn:
        raise RuntimeError("widthwise tracing graph is not differentiable")


@dataclass
class CutHooks:
    """Forward hooks that cut every recurrent/attention module of ``model`` during one trace."""

    model: nn.Module
    # module name -> why its groups cannot be built; ``input_problems`` only spoil the groups
    # that feed the module (cross-attention: the key/value columns read another stream)
    problems: dict[str, str] = field(default_factory=dict)
    input_problems: dict[str, str] = field(default_factory=dict)
    # module name -> the parameters its initial hidden state is read from (a learned h0)
    learned: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    _handles: list[RemovableHandle] = field(default_factory=list)

    def __enter__(self) -> CutHooks:
        self._anchor = torch.zeros((), requires_grad=True)
        for name, module in self.model.named_modules():
            if isinstance(module, BOUNDARY_TYPES):
                self._handles.append(
                    module.register_forward_hook(self._hook(name), with_kwargs=True)
                )
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str) -> Callable[[nn.Module, tuple[Any, ...], dict[str, Any], Any], Any]:
        def hook(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
        ) -> Any:
            if isinstance(module, nn.RNNBase):
                x = args[0] if args else kwargs.get("input")
                hx = args[1] if len(args) > 1 else kwargs.get("hx")
                states = [t for t in _tensors(hx) if t.requires_grad]
                learned = [p for t in states if (p := _learned_state(t)) is not None]
                if states and len(learned) == len(states):
                    self.learned[name] = learned  # nn.Parameter h0 (expanded over the batch)
                elif states:
                    self.problems[name] = (
                        f"'{name}' receives an initial hidden state computed by the model"
                    )
                ins = [x.data if isinstance(x, PackedSequence) else x]
            else:  # hooked on BOUNDARY_TYPES only: an nn.MultiheadAttention
                q, k, v = (
                    args[i] if i < len(args) else kwargs.get(n)
                    for i, n in enumerate(("query", "key", "value"))
                )
                if not (k is q and v is q):
                    self.input_problems[name] = (
                        f"'{name}' is cross-attention (different query/key/value inputs)"
                    )
                if not cast(nn.MultiheadAttention, module)._qkv_same_embed_dim:
                    self.problems[name] = f"'{name}' has kdim/vdim different from embed_dim"
                ins = [q, k, v]
            ins = [t for t in ins if isinstance(t, torch.Tensor) and t.requires_grad]
            flat, rebuild = _flatten_output(output)
            outs = _Cut.apply(len(ins), self._anchor, *ins, *(t.detach() for t in flat))
            return rebuild(outs)

        return hook


_SHAPE_OPS = ("expand", "view", "reshape", "unsqueeze", "repeat", "clone", "select", "slice")


def _learned_state(t: torch.Tensor) -> torch.Tensor | None:
    """The parameter ``t`` is read from if only shape ops (expand over the batch, ...) lie
    between them, else None (a state computed from the input or from other layers)."""
    fn, leaf = t.grad_fn, None
    if fn is None:
        return t if isinstance(t, nn.Parameter) else None
    for _ in range(16):
        var = getattr(fn, "variable", None)
        if var is not None:
            leaf = var
            break
        if not any(k in fn.name().lower() for k in _SHAPE_OPS):
            return None
        parents = [f for f, _ in fn.next_functions if f is not None]
        if len(parents) != 1:
            return None
        fn = parents[0]
    return leaf if isinstance(leaf, nn.Parameter) else None


def _tensors(obj: object) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _tensors(o)


def _flatten_output(
    output: Any,
) -> tuple[list[torch.Tensor], Callable[[Sequence[torch.Tensor]], Any]]:
    """Floating tensors of an RNN/MHA output and a function that puts new ones back."""
    slots: list[tuple[int, int | None]] = []  # (position, index inside a tuple or None)
    flat: list[torch.Tensor] = []
    items = list(output) if isinstance(output, tuple) else [output]
    for i, item in enumerate(items):
        if isinstance(item, PackedSequence):
            slots.append((i, -1))
            flat.append(item.data)
        elif isinstance(item, torch.Tensor) and item.is_floating_point():
            slots.append((i, None))
            flat.append(item)
        elif isinstance(item, tuple):  # LSTM (h_n, c_n)
            for j, t in enumerate(item):
                slots.append((i, j))
                flat.append(t)

    def rebuild(new: Sequence[torch.Tensor]) -> Any:
        out: list[Any] = [
            list(x) if isinstance(x, tuple) and not isinstance(x, PackedSequence) else x
            for x in items
        ]
        for (i, j), t in zip(slots, new):
            if j is None:
                out[i] = t
            elif j == -1:
                out[i] = items[i]._replace(data=t)
            else:
                out[i][j] = t
        done = [tuple(x) if isinstance(x, list) else x for x in out]
        return tuple(done) if isinstance(output, tuple) else done[0]

    return flat, rebuild


# --------------------------------------------------------------------------------------------
# members of the coupled tensors inside the cut modules


def boundary_in_members(name: str | None, module: nn.Module) -> list[Member]:
    """Parameters that read the module's input channels (the upstream group's consumers)."""
    p = f"{name}." if name else ""
    if isinstance(module, nn.RNNBase):
        return [Member(f"{p}weight_ih_l0{s}", 1, "consumer") for s in _directions(module)]
    return [Member(f"{p}in_proj_weight", 1, "consumer")]


def boundary_out_members(name: str | None, module: nn.Module) -> list[Member]:
    """Parameters that compute the module's output channels (MHA only; RNNs build their own)."""
    p = f"{name}." if name else ""
    assert isinstance(module, nn.MultiheadAttention)
    members = [Member(f"{p}out_proj.weight", 0, "producer")]
    if module.out_proj.bias is not None:
        members.append(Member(f"{p}out_proj.bias", 0, "other"))
    return members


def rnn_layer_members(name: str, rnn: nn.RNNBase, layer: int, direction: str) -> list[Member]:
    """One hidden unit of ``layer``/``direction``: gate rows of W_ih, W_hh (+ biases), W_hh columns,
    and the next layer's W_ih columns. The last layer's downstream consumers come from the trace.
    With ``proj_size`` these are the projected units: W_hr rows, W_hh and next W_ih columns.
    """
    p = f"{name}." if name else ""
    h = rnn.hidden_size
    sfx = f"_l{layer}{direction}"
    members: list[Member] = []
    if getattr(rnn, "proj_size", 0):
        members.append(Member(f"{p}weight_hr{sfx}", 0, "producer"))
        members.append(Member(f"{p}weight_hh{sfx}", 1, "consumer"))
        if layer + 1 < rnn.num_layers:
            d = _directions(rnn).index(direction)
            for s in _directions(rnn):
                members.append(
                    Member(f"{p}weight_ih_l{layer + 1}{s}", 1, "consumer", offset=d * rnn.proj_size)
                )
        return members
    for g, gate in enumerate(gate_labels(rnn)):
        members.append(Member(f"{p}weight_ih{sfx}", 0, "producer", offset=g * h, gate=gate))
        members.append(Member(f"{p}weight_hh{sfx}", 0, "producer", offset=g * h, gate=gate))
        if rnn.bias:
            members.append(Member(f"{p}bias_ih{sfx}", 0, "other", offset=g * h, gate=gate))
            members.append(Member(f"{p}bias_hh{sfx}", 0, "other", offset=g * h, gate=gate))
    members.append(Member(f"{p}weight_hh{sfx}", 1, "consumer"))
    if layer + 1 < rnn.num_layers:
        d = _directions(rnn).index(direction)
        for s in _directions(rnn):
            members.append(Member(f"{p}weight_ih_l{layer + 1}{s}", 1, "consumer", offset=d * h))
    return members


def lstm_cell_members(name: str, rnn: nn.LSTM, layer: int, direction: str) -> list[Member]:
    """The cell units of an LSTM with ``proj_size``: gate rows of W_ih, W_hh (+ biases) and the
    columns of the projection W_hr that reads them."""
    p = f"{name}." if name else ""
    h = rnn.hidden_size
    sfx = f"_l{layer}{direction}"
    members: list[Member] = []
    for g, gate in enumerate(gate_labels(rnn)):
        members.append(Member(f"{p}weight_ih{sfx}", 0, "producer", offset=g * h, gate=gate))
        members.append(Member(f"{p}weight_hh{sfx}", 0, "producer", offset=g * h, gate=gate))
        if rnn.bias:
            members.append(Member(f"{p}bias_ih{sfx}", 0, "other", offset=g * h, gate=gate))
            members.append(Member(f"{p}bias_hh{sfx}", 0, "other", offset=g * h, gate=gate))
    members.append(Member(f"{p}weight_hr{sfx}", 1, "consumer"))
    return members


def mha_inner_members(name: str, mha: nn.MultiheadAttention) -> list[Member]:
    """The attention channels of ``nn.MultiheadAttention``: q/k/v rows and out_proj columns."""
    p = f"{name}." if name else ""
    e = mha.embed_dim
    members: list[Member] = []
    for g, gate in enumerate(("q", "k", "v")):
        members.append(Member(f"{p}in_proj_weight", 0, "producer", offset=g * e, gate=gate))
        if mha.in_proj_bias is not None:
            members.append(Member(f"{p}in_proj_bias", 0, "other", offset=g * e, gate=gate))
    if mha.bias_k is not None:
        members.append(Member(f"{p}bias_k", 2, "other", gate="k"))
        members.append(Member(f"{p}bias_v", 2, "other", gate="v"))
    members.append(Member(f"{p}out_proj.weight", 1, "consumer"))
    return members
