"""A small Vision Transformer with one MLP width per block."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from widthwise.reproduction.zoo._base import WidthConfigurable, check_positive, check_widths


class Attention(nn.Module):
    """Multi-head self-attention with separate ``q``, ``k``, ``v`` and ``proj`` Linear layers.

    Separate modules (rather than one fused ``qkv`` or raw parameters) let a dependency graph see
    every projection as an ordinary Linear layer.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        # the head count is fixed; the head size follows the projections' width
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in self._qkv(x))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.q(x), self.k(x), self.v(x)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln1(x))`` then ``x + fc2(gelu(fc1(ln2(x))))``."""

    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class PatchTransformer(WidthConfigurable):
    """What the 2-D :class:`ViT` and the 1-D ``ViT1D`` share: pre-norm blocks over patch tokens,
    a mean over tokens, a head, and the width contract ``widths() == [dim, *mlp_dims]`` (the
    config holds ``dim``, ``depth`` and ``mlp_dims``; the model ``blocks``, ``norm``, ``head``)."""

    blocks: nn.ModuleList
    norm: nn.LayerNorm
    head: nn.Linear

    def _encode(self, tokens: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.norm(tokens).mean(dim=1))

    def widths(self) -> list[int]:
        return [self._config["dim"], *self._config["mlp_dims"]]

    def width_slots(self) -> dict[str, int]:
        dim = self._config["dim"]
        slots = {"patch_embed": dim}
        for i, m in enumerate(self._config["mlp_dims"]):
            for proj in ("q", "k", "v", "proj"):
                slots[f"blocks.{i}.attn.{proj}"] = dim
            slots[f"blocks.{i}.fc1"] = m
            slots[f"blocks.{i}.fc2"] = dim
        return slots

    def width_layers(self) -> list[str]:
        return ["patch_embed", *(f"blocks.{i}.fc1" for i in range(self._config["depth"]))]

    def _config_with_widths(self, widths: list[int]) -> dict[str, Any]:
        return {**self.config(), "dim": widths[0], "mlp_dims": widths[1:]}


class ViT(PatchTransformer):
    """Patch embedding (conv), learned position embedding, pre-norm blocks, mean-pool, head.

    Args:
        image_size: input height and width.
        patch_size: patch side; must divide ``image_size``.
        dim: width of the residual stream (the embedding dimension).
        depth: number of transformer blocks.
        heads: attention heads; must divide ``dim``.
        mlp_dims: hidden width of each block's MLP (one entry per block).
        num_classes: classifier outputs.
        channels: image channels.

    Tokens are mean-pooled (no class token) so the only parameter outside a module call is the
    position embedding. ``widths()`` is ``[dim, *mlp_dims]``; ``width_slots()`` maps
    ``"patch_embed"``, every ``blocks.i.attn.{q,k,v,proj}`` and ``blocks.i.fc2`` to ``dim`` and
    ``blocks.i.fc1`` to ``mlp_dims[i]``.

    >>> net = ViT(8, 4, dim=16, depth=2, heads=2, mlp_dims=[32, 24], num_classes=5)
    >>> tuple(net(torch.zeros(3, 3, 8, 8)).shape), net.widths()
    ((3, 5), [16, 32, 24])
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_dims: Sequence[int],
        num_classes: int,
        channels: int = 3,
    ) -> None:
        super().__init__()
        image_size, patch_size, dim, depth, heads, num_classes, channels = (
            check_positive("image_size", image_size),
            check_positive("patch_size", patch_size),
            check_positive("dim", dim),
            check_positive("depth", depth),
            check_positive("heads", heads),
            check_positive("num_classes", num_classes),
            check_positive("channels", channels),
        )
        mlp_dims = check_widths("mlp_dims", mlp_dims)
        if len(mlp_dims) != depth:
            raise ValueError(f"mlp_dims needs one entry per block ({depth}), got {len(mlp_dims)}")
        if image_size % patch_size:
            raise ValueError(f"patch_size {patch_size} must divide image_size {image_size}")
        if dim % heads:
            raise ValueError(f"heads ({heads}) must divide dim ({dim})")
        self._set_config(
            image_size=image_size,
            patch_size=patch_size,
            dim=dim,
            depth=depth,
            heads=heads,
            mlp_dims=mlp_dims,
            num_classes=num_classes,
            channels=channels,
        )
        n_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(channels, dim, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, n_patches, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, m) for m in mlp_dims)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._encode(self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed)
