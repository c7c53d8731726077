"""Graph convolutional network (Kipf & Welling 2017) in plain PyTorch."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from widthwise.reproduction.zoo._base import WidthConfigurable, check_positive, check_widths


def normalize_adjacency(
    edge_index: torch.Tensor, num_nodes: int, *, self_loops: bool = True
) -> torch.Tensor:
    """``D^-1/2 (A + I) D^-1/2`` as a coalesced sparse COO tensor ``[num_nodes, num_nodes]``.

    ``edge_index`` is ``[2, E]`` (source, target); edges are made symmetric and duplicates count
    once.

    >>> a = normalize_adjacency(torch.tensor([[0], [1]]), 2).to_dense()
    >>> torch.allclose(a, torch.full((2, 2), 0.5))
    True
    """
    edge_index = torch.as_tensor(edge_index, dtype=torch.long)
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {tuple(edge_index.shape)}")
    num_nodes = check_positive("num_nodes", num_nodes)
    if edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= num_nodes):
        raise ValueError(f"edge_index refers to nodes outside [0, {num_nodes})")
    rows = [edge_index[0], edge_index[1]]
    cols = [edge_index[1], edge_index[0]]
    if self_loops:
        loops = torch.arange(num_nodes)
        rows.append(loops)
        cols.append(loops)
    idx = torch.stack([torch.cat(rows), torch.cat(cols)])
    ones = torch.ones(idx.shape[1])
    adj = torch.sparse_coo_tensor(idx, ones, (num_nodes, num_nodes), check_invariants=True)
    adj = adj.coalesce()
    # duplicate edges were summed by coalesce; an edge is present or not
    idx = adj.indices()
    deg = torch.zeros(num_nodes).index_add_(0, idx[0], torch.ones(idx.shape[1]))
    inv_sqrt = deg.clamp(min=1).rsqrt()
    values = inv_sqrt[idx[0]] * inv_sqrt[idx[1]]
    shape = (num_nodes, num_nodes)
    return torch.sparse_coo_tensor(idx, values, shape, check_invariants=True).coalesce()


class GCN(WidthConfigurable):
    """``H_{l+1} = act(Â H_l W_l)`` for every hidden layer, then ``Â H W_out``.

    Args:
        in_features: node feature size.
        widths: hidden widths.
        num_classes: outputs per node.
        dropout: dropout on the input of every layer.

    Each layer is an ``nn.Linear`` applied before propagation, so its bias is averaged over
    neighbours too (Kipf & Welling add it after); keeping every weight inside a module is what
    lets :func:`~widthwise.find_groups` see the layers.

    ``forward(x[N, F], adj)`` takes a (sparse) normalised adjacency from
    :func:`normalize_adjacency`. ``widths()`` is the hidden widths; ``width_slots()`` maps
    ``"layers.i"``.

    >>> adj = normalize_adjacency(torch.tensor([[0, 1], [1, 2]]), 3)
    >>> tuple(GCN(4, [8], 2)(torch.zeros(3, 4), adj).shape)
    (3, 2)
    """

    def __init__(
        self, in_features: int, widths: Sequence[int], num_classes: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        in_features = check_positive("in_features", in_features)
        num_classes = check_positive("num_classes", num_classes)
        widths = check_widths("widths", widths, allow_empty=True)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self._set_config(
            in_features=in_features, widths=widths, num_classes=num_classes, dropout=dropout
        )
        sizes = [in_features, *widths]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.head = nn.Linear(sizes[-1], num_classes)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = self.act(_propagate(adj, layer(self.drop(x))))
        return _propagate(adj, self.head(self.drop(x)))

    def widths(self) -> list[int]:
        return list(self._config["widths"])

    def width_slots(self) -> dict[str, int]:
        return {f"layers.{i}": w for i, w in enumerate(self._config["widths"])}

    def width_layers(self) -> list[str]:
        return list(self.width_slots())

    def _config_with_widths(self, widths: list[int]) -> dict[str, Any]:
        return {**self.config(), "widths": widths}


def _propagate(adj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    return torch.sparse.mm(adj, h) if adj.is_sparse else adj @ h
