"""A ViT-style transformer over 1-D sequences (patches of the signal), MLP ratio 4 by default."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from widthwise.reproduction.zoo._base import check_positive, check_widths
from widthwise.reproduction.zoo.vit import Block, PatchTransformer


class ViT1D(PatchTransformer):
    """Patch embedding (Conv1d, stride = patch), learned positions, pre-norm blocks, mean, head.

    Args:
        length: input length; ``patch_size`` must divide it.
        dim: residual stream width; ``heads`` must divide it.
        mlp_dims: each block's MLP width (default ``4 * dim``, the usual ratio).

    ``widths()`` is ``[dim, *mlp_dims]``, as :class:`~widthwise.reproduction.zoo.ViT`.

    >>> net = ViT1D(40, 4, dim=16, depth=2, heads=2, num_classes=5)
    >>> tuple(net(torch.zeros(3, 40)).shape), net.widths()
    ((3, 5), [16, 64, 64])
    """

    def __init__(
        self,
        length: int = 40,
        patch_size: int = 4,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_dims: Sequence[int] | None = None,
        num_classes: int = 10,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        length, patch_size, dim, depth, heads, num_classes, in_channels = (
            check_positive(n, v)
            for n, v in (
                ("length", length),
                ("patch_size", patch_size),
                ("dim", dim),
                ("depth", depth),
                ("heads", heads),
                ("num_classes", num_classes),
                ("in_channels", in_channels),
            )
        )
        mlp_dims = check_widths("mlp_dims", mlp_dims if mlp_dims is not None else [4 * dim] * depth)
        if len(mlp_dims) != depth:
            raise ValueError(f"mlp_dims needs one entry per block ({depth}), got {len(mlp_dims)}")
        if length % patch_size:
            raise ValueError(f"patch_size {patch_size} must divide length {length}")
        if dim % heads:
            raise ValueError(f"heads ({heads}) must divide dim ({dim})")
        self._set_config(
            length=length,
            patch_size=patch_size,
            dim=dim,
            depth=depth,
            heads=heads,
            mlp_dims=mlp_dims,
            num_classes=num_classes,
            in_channels=in_channels,
        )
        self.patch_embed = nn.Conv1d(in_channels, dim, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, length // patch_size, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, m) for m in mlp_dims)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            x = x.unsqueeze(1)
        return self._encode(self.patch_embed(x).transpose(1, 2) + self.pos_embed)
