"""GRU language model with one hidden size per layer."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from widthwise.reproduction.zoo._base import WidthConfigurable, check_positive, check_widths


class GRULM(WidthConfigurable):
    """Embedding → stacked single-layer GRUs → Linear over the vocabulary.

    Each layer is its own ``nn.GRU(num_layers=1, batch_first=True)`` so hidden sizes can differ.

    Args:
        vocab_size: number of tokens.
        embed_dim: embedding width.
        hidden_sizes: hidden size of each GRU layer.
        dropout: dropout between layers (and before the head).

    ``forward(tokens[B, T])`` returns logits ``[B, T, vocab_size]``. ``widths()`` is
    ``[embed_dim, *hidden_sizes]``; ``width_slots()`` maps ``"embed"`` and ``"rnns.i"``.

    >>> lm = GRULM(30, 8, [16, 12])
    >>> tuple(lm(torch.zeros(2, 5, dtype=torch.long)).shape), lm.widths()
    ((2, 5, 30), [8, 16, 12])
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden_sizes: Sequence[int],
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        vocab_size = check_positive("vocab_size", vocab_size)
        embed_dim = check_positive("embed_dim", embed_dim)
        hidden_sizes = check_widths("hidden_sizes", hidden_sizes)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self._set_config(
            vocab_size=vocab_size,
            embed_dim=embed_dim,
            hidden_sizes=hidden_sizes,
            dropout=dropout,
        )
        self.embed = nn.Embedding(vocab_size, embed_dim)
        sizes = [embed_dim, *hidden_sizes]
        self.rnns = nn.ModuleList(
            nn.GRU(a, b, batch_first=True) for a, b in itertools.pairwise(sizes)
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(sizes[-1], vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for rnn in self.rnns:
            x, _ = rnn(x)
            x = self.drop(x)
        return self.head(x)

    def widths(self) -> list[int]:
        return [self._config["embed_dim"], *self._config["hidden_sizes"]]

    def width_slots(self) -> dict[str, int]:
        slots = {"embed": self._config["embed_dim"]}
        slots.update({f"rnns.{i}": h for i, h in enumerate(self._config["hidden_sizes"])})
        return slots

    def width_layers(self) -> list[str]:
        return list(self.width_slots())

    def _config_with_widths(self, widths: list[int]) -> dict[str, Any]:
        return {**self.config(), "embed_dim": widths[0], "hidden_sizes": widths[1:]}
