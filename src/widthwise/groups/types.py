"""Plain data of channel groups: :class:`Member`, :class:`ChannelGroup`, and the error/warning.

A :class:`ChannelGroup` holds no reference to the model or to Torch-Pruning's graph, so it can
be stored, compared across runs and sent between processes. Channel ``i`` of a group of width
``W`` occupies the contiguous block ``[offset + i*repeat, offset + (i+1)*repeat)`` along
``member.dim`` of ``member.param``; several members may name one parameter at different offsets
(gate blocks of recurrent/attention weights, the blocks of a grouped convolution).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

__all__ = ["ChannelGroup", "GroupingError", "GroupingWarning", "Member", "Role"]

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
