"""Channel groups: the sets of channels that must be permuted or resized together.

* :mod:`~widthwise.groups.types`: the plain data (:class:`Member`, :class:`ChannelGroup`) and
  :class:`GroupingError` / :class:`GroupingWarning`.
* :mod:`~widthwise.groups.finder`: :func:`find_groups` (Torch-Pruning's dependency graph turned
  into members through a table from op type to member builders).
* :mod:`~widthwise.groups.verify`: the permutation check every group must pass, and
  :func:`call_model`.
* :mod:`~widthwise.groups.recurrent`: GRU/LSTM/RNN and ``nn.MultiheadAttention``, which
  Torch-Pruning cannot trace, written from their definition.
* :mod:`~widthwise.groups.tracing`: repairs and glue around Torch-Pruning's trace (index maps,
  HF ``Conv1D``, ``F.linear`` on raw parameters, layouts of index lists).
* :mod:`~widthwise.groups.candidates`: candidate groups around attention and gated blocks where
  the dependency walk failed (kept only if the permutation check passes).
* :mod:`~widthwise.groups.blocks`: groups of blocks written from their definition where the
  trace cannot follow them (the Mamba mixer), verified like the rest.
* :mod:`~widthwise.groups.layouts`: channel layouts declared for raw parameters of known
  structures (mixture-of-experts stacks, Transformer-XL attention, ConvBERT's span convolution)
  and candidate groups inside them.

Imports run one way: types <- verify, recurrent, tracing, blocks <- candidates <- layouts <-
finder <- this package (tests/test_groups_layout.py checks it).
"""

from widthwise.groups.finder import find_groups
from widthwise.groups.types import ChannelGroup, GroupingError, GroupingWarning, Member
from widthwise.groups.verify import call_model

# old private name, still imported by streamline and resize
_call_model = call_model

__all__ = [
    "ChannelGroup",
    "GroupingError",
    "GroupingWarning",
    "Member",
    "call_model",
    "find_groups",
]
