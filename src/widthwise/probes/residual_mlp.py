"""A residual MLP with an explicit branch scale, the model of the width/depth kernel probe.

The default follows the setup of Hayou & Yang (2023), "Width and Depth Limits Commute in
Residual Networks", and Hayou (2023), "Commutative Width and Depth Scaling in Deep Neural
Networks": a linear input projection followed by ``depth`` single-layer residual branches,

    Y_0 = W_in x,        Y_l = Y_{l-1} + s · W_l φ(Y_{l-1}),   l = 1 … depth,

with every weight drawn from N(0, 1/fan_in), no biases, and ``s = 1/sqrt(depth)``. The last
residual stream ``Y_depth`` is the feature whose covariance the kernel probe measures; an
optional linear read-out maps it to ``out_features``. ``block="mlp"`` gives the two-layer branch
``Y_{l-1} + s · W2 φ(W1 Y_{l-1})`` of a transformer-style MLP block instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

BranchScale = Literal["1/sqrt(depth)", "1/depth", "none"] | float
Block = Literal["single", "mlp"]

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}


def resolve_branch_scale(branch_scale: BranchScale | str, depth: int) -> float:
    """The multiplier of every residual branch.

    >>> resolve_branch_scale("1/sqrt(depth)", 16)
    0.25
    >>> resolve_branch_scale("none", 16), resolve_branch_scale(0.5, 16)
    (1.0, 0.5)
    """
    if isinstance(branch_scale, bool):
        raise ValueError(_SCALE_HELP.format(branch_scale))
    if isinstance(branch_scale, (int, float)):
        value = float(branch_scale)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"branch_scale must be a finite number >= 0, got {branch_scale!r}")
        return value
    key = str(branch_scale).strip().lower().replace(" ", "")
    if key in ("1/sqrt(depth)", "1/sqrt(l)", "sqrt"):
        return 1.0 / math.sqrt(max(depth, 1))
    if key in ("1/depth", "1/l"):
        return 1.0 / max(depth, 1)
    if key in ("none", "1"):
        return 1.0
    try:
        return resolve_branch_scale(float(key), depth)
    except ValueError:
        raise ValueError(_SCALE_HELP.format(branch_scale)) from None


_SCALE_HELP = "branch_scale must be '1/sqrt(depth)', '1/depth', 'none' or a number >= 0, got {!r}"


class ResidualBlock(nn.Module):
    """``x + scale · W φ(x)`` (``block="single"``) or ``x + scale · W2 φ(W1 x)`` (``"mlp"``)."""

    def __init__(self, width: int, scale: float, activation: str, block: Block) -> None:
        super().__init__()
        self.scale = scale
        self.block = block
        self.act = _ACTIVATIONS[activation]()
        if block == "single":
            self.fc = nn.Linear(width, width, bias=False, device="meta")
        else:
            self.fc1 = nn.Linear(width, width, bias=False, device="meta")
            self.fc2 = nn.Linear(width, width, bias=False, device="meta")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.block == "single":
            return x + self.scale * self.fc(self.act(x))
        return x + self.scale * self.fc2(self.act(self.fc1(x)))

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4g}, block={self.block!r}"


class ResidualMLP(nn.Module):
    """Input projection, ``depth`` scaled residual branches, optional linear read-out.

    Args:
        in_features: input dimension.
        width: dimension of the residual stream.
        depth: number of residual blocks (0 allowed: projection only).
        out_features: size of a linear read-out of the last residual stream; ``None`` returns
            the residual stream itself (the features the kernel probe looks at).
        branch_scale: ``"1/sqrt(depth)"`` (the commutative scaling), ``"1/depth"``, ``"none"``
            (a plain ResNet) or a number.
        activation: ``"relu"``, ``"tanh"``, ``"gelu"`` or ``"identity"``.
        block: ``"single"`` (the paper's ``W φ(x)`` branch) or ``"mlp"`` (``W2 φ(W1 x)``).
        device, dtype: where and in which precision the weights live.

    Weights are i.i.d. N(0, 1/fan_in); :meth:`reset_parameters` redraws them.

    >>> _ = torch.manual_seed(0)
    >>> net = ResidualMLP(3, width=8, depth=4)
    >>> net.branch_scale, tuple(net(torch.randn(5, 3)).shape)
    (0.5, (5, 8))
    >>> tuple(ResidualMLP(3, 8, 2, out_features=1)(torch.randn(5, 3)).shape)
    (5, 1)
    """

    def __init__(
        self,
        in_features: int,
        width: int,
        depth: int,
        out_features: int | None = None,
        branch_scale: BranchScale | str = "1/sqrt(depth)",
        activation: str = "relu",
        *,
        block: Block = "single",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("in_features", in_features, 1),
            ("width", width, 1),
            ("depth", depth, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if out_features is not None and (not isinstance(out_features, int) or out_features < 1):
            raise ValueError(f"out_features must be None or an integer >= 1, got {out_features!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        if block not in ("single", "mlp"):
            raise ValueError(f"block must be 'single' or 'mlp', got {block!r}")
        self.in_features = in_features
        self.width = width
        self.depth = depth
        self.out_features = out_features
        self.activation = activation
        self.branch_scale = resolve_branch_scale(branch_scale, depth)
        # Built on the meta device and drawn once by reset_parameters(): nn.Linear's own
        # initialisation would double the cost of building wide, deep probes.
        self.inp = nn.Linear(in_features, width, bias=False, device="meta")
        self.blocks = nn.ModuleList(
            ResidualBlock(width, self.branch_scale, activation, block) for _ in range(depth)
        )
        self.out = (
            nn.Linear(width, out_features, bias=False, device="meta") if out_features else None
        )
        self.to_empty(device=device or "cpu")
        if dtype is not None:
            self.to(dtype)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Redraw every weight from N(0, 1/fan_in), using torch's global generator."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, 1.0 / math.sqrt(module.in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = block(x)
        return x if self.out is None else self.out(x)
