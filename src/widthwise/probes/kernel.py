"""The neural covariance kernel at initialisation, and how it moves as width and depth grow.

The kernel of a feature map ``f`` over inputs ``x_1 … x_m`` is the matrix of normalised inner
products ``K_ij = <f(x_i), f(x_j)> / (|f(x_i)| |f(x_j)|)`` (cosine similarities: unit diagonal,
symmetric, positive semi-definite), averaged over independent random initialisations.

Hayou & Yang (2023) and Hayou (2023) show that for a residual network whose branches are scaled
by ``1/sqrt(depth)`` this kernel converges to one deterministic limit however width and depth go
to infinity (width first, depth first, or together); without the scaling the limits disagree.
:func:`scaling_grid` measures the kernel of :class:`~widthwise.probes.residual_mlp.ResidualMLP`
over a grid of widths and depths and its distance to the kernel at the largest width and depth,
along both orders, so the claim can be checked on your own sizes.

For ReLU residual MLPs the infinite-width kernel is known exactly
(:func:`infinite_width_kernel`, the arc-cosine recursion of Cho & Saul, 2009), and so is the
commuting limit of the scaled network (:func:`limit_kernel`, the ODE of Hayou & Yang).

>>> import torch
>>> from widthwise.probes.residual_mlp import ResidualMLP
>>> x = circle_inputs(4)
>>> K = covariance_kernel(lambda: ResidualMLP(2, width=64, depth=4), x, n_inits=4, seed=0)
>>> tuple(K.shape), bool(torch.allclose(K.diagonal(), torch.ones(4, dtype=K.dtype)))
((4, 4), True)
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn

from widthwise.probes.residual_mlp import Block, BranchScale, ResidualMLP, resolve_branch_scale

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "ScalingGrid",
    "circle_inputs",
    "covariance_kernel",
    "infinite_width_kernel",
    "kernel_distance",
    "kernel_samples",
    "limit_kernel",
    "normalized_gram",
    "plot_scaling_grids",
    "scaling_grid",
]

ModelOrFactory = nn.Module | Callable[[], nn.Module]


def circle_inputs(n: int = 8, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` unit vectors in the plane at angles spread evenly over ``[0, π]``.

    Pair ``(0, j)`` has angle ``j·π/(n-1)``, so one row of a kernel reads as a function of angle.

    >>> circle_inputs(3).round(decimals=4) + 0.0  # + 0.0 turns -0.0 into 0.0
    tensor([[ 1.,  0.],
            [ 0.,  1.],
            [-1.,  0.]])
    """
    if n < 2:
        raise ValueError(f"need at least 2 inputs, got n={n}")
    theta = torch.linspace(0.0, math.pi, n, dtype=torch.float64)
    return torch.stack([theta.cos(), theta.sin()], dim=1).to(dtype)


def normalized_gram(features: torch.Tensor) -> torch.Tensor:
    """Cosine-similarity matrix of the rows of ``features`` (flattened per row), in float64.

    A row that is exactly zero (e.g. every ReLU unit dead for that input) has no direction; it
    is treated as orthogonal to every other row, which keeps the matrix PSD with unit diagonal.

    >>> normalized_gram(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))
    tensor([[1.0000, 0.7071, 0.0000],
            [0.7071, 1.0000, 0.0000],
            [0.0000, 0.0000, 1.0000]], dtype=torch.float64)
    """
    f = features.detach().reshape(features.shape[0], -1).to(torch.float64)
    # Normalise before the product: unscaled deep ResNets reach norms whose squares overflow.
    norms = torch.linalg.vector_norm(f, dim=1, keepdim=True)
    f = torch.where(norms > 0, f / norms.clamp_min(torch.finfo(f.dtype).tiny), 0.0)
    gram = f @ f.T
    gram = ((gram + gram.T) / 2).clamp(
        -1.0, 1.0
    )  # BLAS need not return an exactly symmetric product
    gram.fill_diagonal_(1.0)
    return gram


def _init_seeds(seed: int, n_inits: int) -> list[int]:
    # Independent streams per initialisation; seeds 0 and 1 do not share initialisations.
    return [int(s) for s in np.random.SeedSequence(seed).generate_state(n_inits, dtype=np.uint64)]


def _reinitialise(model: nn.Module) -> None:
    reset = getattr(model, "reset_parameters", None)
    if callable(reset):
        reset()
        return
    found = False
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if module is not model and callable(reset):
            reset()
            found = True
    if not found:
        raise ValueError(
            "cannot re-initialise this model (no module has reset_parameters()); pass a "
            "factory (a callable returning a fresh model) or reinit=False with n_inits=1"
        )


def _resolve_layer(model: nn.Module, layer: str | nn.Module | None) -> nn.Module | None:
    if layer is None or isinstance(layer, nn.Module):
        return layer
    modules = dict(model.named_modules())
    if layer not in modules:
        names = [n for n in modules if n][:8]
        raise ValueError(f"no module named {layer!r} in the model; some names: {names}")
    return modules[layer]


@torch.no_grad()
def _features(
    model: nn.Module, inputs: torch.Tensor, layer: str | nn.Module | None
) -> torch.Tensor:
    target = _resolve_layer(model, layer)
    if target is None:
        out = model(inputs)
    else:
        captured: list[torch.Tensor] = []

        def hook(_module: nn.Module, _args: object, output: object) -> None:
            out = output[0] if isinstance(output, tuple) else output
            captured.append(out)  # type: ignore[arg-type]

        handle = target.register_forward_hook(hook)
        try:
            model(inputs)
        finally:
            handle.remove()
        if not captured:
            raise ValueError(f"layer {layer!r} was not called in the forward pass")
        out = captured[-1]
    if not isinstance(out, torch.Tensor) or out.shape[0] != inputs.shape[0]:
        raise ValueError("the chosen layer must output a tensor with one row per input")
    return out


def kernel_samples(
    model_or_factory: ModelOrFactory,
    inputs: torch.Tensor,
    *,
    layer: str | nn.Module | None = None,
    n_inits: int = 32,
    seed: int = 0,
    reinit: bool = True,
) -> torch.Tensor:
    """One normalised kernel per random initialisation, shape ``[n_inits, m, m]``, float64.

    Args:
        model_or_factory: a model (copied, then re-initialised with ``reset_parameters()`` for
            every sample; your model is left untouched) or a callable returning a freshly
            initialised model (called once per sample under its own seed).
        inputs: ``[m, ...]``, one row per input; on the model's device.
        layer: module name (as in ``named_modules()``) or module whose output is the feature
            map; ``None`` uses the model's output.
        n_inits: number of independent initialisations.
        seed: the samples are a deterministic function of ``seed``; the global RNG is restored.
        reinit: ``False`` measures the model's current weights (needs ``n_inits=1``), e.g. a
            trained model.

    The model runs in eval mode: the kernel is a function of pairs of inputs, not of the batch.
    """
    if not isinstance(inputs, torch.Tensor) or inputs.ndim < 2 or inputs.shape[0] < 2:
        raise ValueError("inputs must be a tensor [m, ...] with at least 2 rows")
    if isinstance(n_inits, bool) or not isinstance(n_inits, int) or n_inits < 1:
        raise ValueError(f"n_inits must be an integer >= 1, got {n_inits!r}")
    if not reinit and n_inits != 1:
        raise ValueError("reinit=False measures one fixed model: use n_inits=1")
    given = model_or_factory if isinstance(model_or_factory, nn.Module) else None
    if given is None and not callable(model_or_factory):
        raise TypeError("model_or_factory must be an nn.Module or a callable returning one")
    if given is not None and not reinit:
        model = given
        was_training = model.training
        model.eval()
        try:
            return normalized_gram(_features(model, inputs, layer))[None]
        finally:
            model.train(was_training)
    if isinstance(layer, nn.Module):
        # Samples run on copies or fresh models, so a module given by identity must be named.
        names = {id(m): n for n, m in given.named_modules()} if given is not None else {}
        if id(layer) not in names:
            raise ValueError("layer must be given by name (as in named_modules()) here")
        layer = names[id(layer)]
    work = copy.deepcopy(given) if given is not None else None
    kernels = []
    devices = [inputs.device] if inputs.device.type == "cuda" else []
    for s in _init_seeds(seed, n_inits):
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(s)
            if work is not None:
                _reinitialise(work)
                model = work
            else:
                assert callable(model_or_factory)
                model = model_or_factory()
                if not isinstance(model, nn.Module):
                    raise TypeError("the factory must return an nn.Module")
        model.eval()
        kernels.append(normalized_gram(_features(model, inputs, layer)))
    return torch.stack(kernels)


def covariance_kernel(
    model_or_factory: ModelOrFactory,
    inputs: torch.Tensor,
    *,
    layer: str | nn.Module | None = None,
    n_inits: int = 32,
    seed: int = 0,
    reinit: bool = True,
) -> torch.Tensor:
    """The neural covariance kernel ``[m, m]`` (float64), averaged over ``n_inits`` initialisations.

    Each initialisation's matrix is normalised before averaging, so the mean keeps a unit
    diagonal and stays positive semi-definite. Arguments as in :func:`kernel_samples`.

    >>> net = nn.Sequential(nn.Linear(2, 4096, bias=False), nn.ReLU())
    >>> K = covariance_kernel(net, circle_inputs(3), n_inits=2)
    >>> K[0, 2].item()  # antipodal inputs never switch on the same ReLU unit
    0.0
    """
    return kernel_samples(
        model_or_factory, inputs, layer=layer, n_inits=n_inits, seed=seed, reinit=reinit
    ).mean(0)


def kernel_distance(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Root-mean-square difference of the off-diagonal entries of two kernels.

    >>> kernel_distance(torch.eye(3), torch.ones(3, 3))
    1.0
    """
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    off = ~torch.eye(a.shape[0], dtype=torch.bool)
    return float(((a - b)[off] ** 2).mean().sqrt())


# --- infinite-width theory (ReLU) --------------------------------------------------------------


def _relu_expectation(cov: np.ndarray) -> np.ndarray:
    """E[relu(u) relu(v)] for (u, v) ~ N(0, cov), entrywise over a covariance matrix."""
    d = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    outer = np.outer(d, d)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(outer > 0, cov / outer, 0.0)
    theta = np.arccos(np.clip(c, -1.0, 1.0))
    return outer * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)


def _input_covariance(inputs: torch.Tensor) -> np.ndarray:
    x = inputs.detach().reshape(inputs.shape[0], -1).to(torch.float64).cpu().numpy()
    return x @ x.T / x.shape[1]


def _to_correlation(cov: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.diag(cov))
    k = cov / np.outer(d, d)
    np.fill_diagonal(k, 1.0)
    return np.clip(k, -1.0, 1.0)


def infinite_width_kernel(
    inputs: torch.Tensor, depth: int, branch_scale: BranchScale | str = "1/sqrt(depth)"
) -> np.ndarray:
    """The width → ∞ kernel of a ReLU :class:`ResidualMLP` at a given depth.

    With weights N(0, 1/fan_in) the residual stream's covariance obeys, at infinite width,
    ``Σ_l = Σ_{l-1} + s² E[relu(u) relu(v)]``, ``(u, v) ~ N(0, Σ_{l-1})``, from
    ``Σ_0 = x xᵀ / in_features``; the expectation is the degree-1 arc-cosine kernel. This holds
    for both the ``"single"`` and ``"mlp"`` blocks (``W1 x`` has the covariance of ``x``).

    >>> K = infinite_width_kernel(circle_inputs(3), depth=0)
    >>> np.round(K, 6).tolist()
    [[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 1.0]]
    """
    s2 = resolve_branch_scale(branch_scale, depth) ** 2
    cov = _input_covariance(inputs)
    for _ in range(depth):
        cov = cov + s2 * _relu_expectation(cov)
        # The kernel is scale-free; rescaling keeps unscaled deep recursions finite.
        cov = cov / np.max(np.diag(cov))
    return _to_correlation(cov)


def limit_kernel(inputs: torch.Tensor) -> np.ndarray:
    """The common limit of the ``1/sqrt(depth)``-scaled ReLU ResidualMLP (width, depth → ∞).

    Solves ``dΣ/dt = E[relu(u) relu(v)]``, ``t ∈ [0, 1]``, the flow of Hayou & Yang (2023).

    >>> K = limit_kernel(circle_inputs(3))
    >>> bool(K[0, 2] > -1.0), bool(np.allclose(K, infinite_width_kernel(circle_inputs(3), 1024),
    ...                                        atol=1e-3))
    (True, True)
    """
    from scipy.integrate import solve_ivp

    cov0 = _input_covariance(inputs)
    m = cov0.shape[0]
    sol = solve_ivp(
        lambda _t, y: _relu_expectation(y.reshape(m, m)).ravel(),
        (0.0, 1.0),
        cov0.ravel(),
        rtol=1e-8,
        atol=1e-10,
    )
    return _to_correlation(sol.y[:, -1].reshape(m, m))


# --- the width/depth grid ----------------------------------------------------------------------


@dataclass
class ScalingGrid:
    """Kernels of :class:`ResidualMLP` over widths × depths (plain result of :func:`scaling_grid`).

    Attributes:
        widths, depths: the grid, ascending.
        branch_scale: as given (``"1/sqrt(depth)"``, ``"none"``, a number).
        kernels: ``{(width, depth): mean kernel [m, m]}``.
        table: one row per cell: ``width, depth``, ``mean_entry`` (mean off-diagonal entry: 1
            means every input has the same features), ``distance`` (to the kernel at the largest
            width and depth), ``noise`` (RMS Monte-Carlo standard error of the entry differences,
            about the distance two equal kernels show from sampling alone: a distance below
            about twice this is not resolved), ``spread`` (init-to-init standard deviation of
            the entries, RMS over pairs), ``theory_distance`` (to the infinite-width kernel at the
            same depth; NaN unless ReLU).
        paths: the distance along the two orders of limits: ``order`` (``"width first"``:
            widen at the smallest depth, then deepen at the largest width; ``"depth first"``:
            deepen at the smallest width, then widen at the largest depth), ``step``, ``width``,
            ``depth``, ``distance``, ``noise``.
        limit: for the ``1/sqrt(depth)`` ReLU net, the common limit (:func:`limit_kernel`);
            ``None`` otherwise.
    """

    widths: list[int]
    depths: list[int]
    branch_scale: BranchScale | str
    inputs: torch.Tensor
    n_inits: int
    kernels: dict[tuple[int, int], np.ndarray]
    table: pd.DataFrame
    paths: pd.DataFrame
    limit: np.ndarray | None = None
    activation: str = "relu"
    block: Block = "single"
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def corner(self) -> np.ndarray:
        """The kernel at the largest width and depth."""
        return self.kernels[(self.widths[-1], self.depths[-1])]

    def figure(self) -> Figure:
        """Distance heat map, the two paths, and the init-to-init spread (one row)."""
        return plot_scaling_grids([self])

    def __repr__(self) -> str:
        return (
            f"ScalingGrid(branch_scale={self.branch_scale!r}, widths={self.widths}, "
            f"depths={self.depths}, n_inits={self.n_inits})"
        )


def _int_list(name: str, values: Sequence[int]) -> list[int]:
    out = sorted({int(v) for v in values})
    if not out or any(isinstance(v, bool) or int(v) != v for v in values):
        raise ValueError(f"{name} must be a non-empty list of integers, got {values!r}")
    return out


def _paths(widths: list[int], depths: list[int], table: pd.DataFrame) -> pd.DataFrame:
    cells = table.set_index(["width", "depth"])
    w0, d0, w1, d1 = widths[0], depths[0], widths[-1], depths[-1]
    orders = {
        "width first": [(w, d0) for w in widths] + [(w1, d) for d in depths[1:]],
        "depth first": [(w0, d) for d in depths] + [(w, d1) for w in widths[1:]],
    }
    rows = []
    for order, cells_on_path in orders.items():
        for step, (w, d) in enumerate(cells_on_path):
            row = cells.loc[(w, d)]
            rows.append((order, step, w, d, row["distance"], row["noise"]))
    return pd.DataFrame(rows, columns=["order", "step", "width", "depth", "distance", "noise"])


def scaling_grid(
    widths: Sequence[int],
    depths: Sequence[int],
    *,
    branch_scale: BranchScale | str = "1/sqrt(depth)",
    inputs: torch.Tensor | None = None,
    n_inits: int = 16,
    seed: int = 0,
    activation: str = "relu",
    block: Block = "single",
    progress: bool = False,
) -> ScalingGrid:
    """Measure the kernel of ``ResidualMLP(width, depth)`` for every width and depth.

    Args:
        widths, depths: grid values (sorted and de-duplicated); the largest pair is the
            reference every cell is compared with.
        branch_scale: see :class:`~widthwise.probes.residual_mlp.ResidualMLP`.
        inputs: ``[m, in_features]``; default :func:`circle_inputs` ``(8)``.
        n_inits: initialisations per cell.
        seed: every cell uses the same seed (its own weights differ by shape anyway).
        progress: show a tqdm bar over the cells.

    >>> g = scaling_grid([8, 32], [1, 4], n_inits=2, inputs=circle_inputs(4))
    >>> list(g.table.columns)
    ['width', 'depth', 'mean_entry', 'distance', 'noise', 'spread', 'theory_distance']
    >>> g.paths.groupby("order").size().to_dict()
    {'depth first': 3, 'width first': 3}
    """
    widths_ = _int_list("widths", widths)
    depths_ = _int_list("depths", depths)
    if widths_[0] < 1 or depths_[0] < 0:
        raise ValueError("widths must be >= 1 and depths >= 0")
    x = circle_inputs(8) if inputs is None else inputs
    if x.ndim != 2:
        raise ValueError("inputs must be a 2-D tensor [m, in_features]")
    resolve_branch_scale(branch_scale, 1)  # fail before any work
    from tqdm.auto import tqdm

    samples: dict[tuple[int, int], torch.Tensor] = {}
    cells = [(w, d) for d in depths_ for w in widths_]
    # By depth, then width: the most expensive cell comes last.
    for w, d in tqdm(
        cells, desc=f"kernel grid, branch scale {branch_scale}", unit="cell", disable=not progress
    ):
        samples[(w, d)] = kernel_samples(
            functools.partial(
                ResidualMLP,
                x.shape[1],
                w,
                d,
                branch_scale=branch_scale,
                activation=activation,
                block=block,
            ),
            x,
            n_inits=n_inits,
            seed=seed,
        )
    kernels = {k: v.mean(0).numpy() for k, v in samples.items()}
    corner_key = (widths_[-1], depths_[-1])
    corner = kernels[corner_key]
    m = x.shape[0]
    off = ~np.eye(m, dtype=bool)
    std = {
        k: (v.std(0, unbiased=True).numpy() if n_inits > 1 else np.zeros((m, m)))
        for k, v in samples.items()
    }
    rows = []
    for (w, d), k in kernels.items():
        var = std[(w, d)][off] ** 2 / n_inits
        if (w, d) != corner_key:
            var = var + std[corner_key][off] ** 2 / n_inits
        theory = (
            kernel_distance(k, infinite_width_kernel(x, d, branch_scale))
            if activation == "relu"
            else float("nan")
        )
        rows.append(
            (
                w,
                d,
                float(k[off].mean()),
                kernel_distance(k, corner),
                float(np.sqrt(var.mean())),
                float(np.sqrt((std[(w, d)][off] ** 2).mean())),
                theory,
            )
        )
    table = pd.DataFrame(
        rows,
        columns=["width", "depth", "mean_entry", "distance", "noise", "spread", "theory_distance"],
    ).sort_values(["width", "depth"], ignore_index=True)
    scaled = all(resolve_branch_scale(branch_scale, d) == 1 / math.sqrt(d) for d in (4, 16))
    limit = limit_kernel(x) if scaled and activation == "relu" else None
    return ScalingGrid(
        widths=widths_,
        depths=depths_,
        branch_scale=branch_scale,
        inputs=x,
        n_inits=n_inits,
        kernels=kernels,
        table=table,
        paths=_paths(widths_, depths_, table),
        limit=limit,
        activation=activation,
        block=block,
        meta={"seed": seed},
    )


def plot_scaling_grids(grids: Sequence[ScalingGrid]) -> Figure:
    """One row per grid: distance to the corner, distance along both orders, distance to the
    infinite-width kernel (init spread if not ReLU), and the first input's kernel row against
    the angle to every other input."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(19, 3.8 * len(grids)), layout="constrained")
    axes = fig.subplots(len(grids), 4, squeeze=False)
    vmax = max(float(np.nanmax(g.table[["distance", "theory_distance"]])) for g in grids)
    for row, g in zip(axes, grids):
        label = f"branch scale {g.branch_scale}"
        third = (
            (row[2], "theory_distance", "RMS distance to the infinite-width kernel, same depth")
            if g.activation == "relu"
            else (row[2], "spread", "init-to-init std of kernel entries")
        )
        for ax, column, title in (
            (row[0], "distance", "RMS distance to kernel at largest (width, depth)"),
            third,
        ):
            grid = g.table.pivot(index="depth", columns="width", values=column)
            im = ax.imshow(
                grid.to_numpy(), origin="lower", cmap="viridis", vmin=0, vmax=vmax, aspect="auto"
            )
            ax.set_xticks(range(len(grid.columns)), [str(c) for c in grid.columns])
            ax.set_yticks(range(len(grid.index)), [str(i) for i in grid.index])
            ax.set_xlabel("width")
            ax.set_ylabel("depth")
            ax.set_title(f"{title}\n{label}", fontsize=9)
            for i, d in enumerate(grid.index):
                for j, w in enumerate(grid.columns):
                    v = grid.loc[d, w]
                    ax.text(
                        j,
                        i,
                        f"{v:.3f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if v < 0.6 * vmax else "black",
                    )
            fig.colorbar(im, ax=ax, shrink=0.8)
        ax = row[1]
        for order, part in g.paths.groupby("order", sort=False):
            ax.errorbar(
                part["step"],
                part["distance"],
                yerr=2 * part["noise"],
                marker="o",
                capsize=2,
                label=order,
            )
            for step, w, d, dist in zip(
                part["step"], part["width"], part["depth"], part["distance"]
            ):
                ax.annotate(
                    f"{w},{d}", (step, dist), textcoords="offset points", xytext=(3, 3), fontsize=6
                )
        ax.set_xticks(sorted(set(g.paths["step"])))
        ax.set_xlabel("step along the path (labels: width,depth)")
        ax.set_ylabel("RMS distance to corner kernel")
        ax.set_ylim(bottom=0)
        ax.set_title(f"along both orders (bars: ±2 s.e.)\n{label}", fontsize=9)
        ax.legend(fontsize=8)
        _plot_rows(row[3], g, label)
    return fig


def _plot_rows(ax: Axes, g: ScalingGrid, label: str) -> None:
    angle = np.degrees(np.arccos(normalized_gram(g.inputs).numpy()[0]))
    w1 = g.widths[-1]
    for d in g.depths:
        ax.plot(angle, g.kernels[(w1, d)][0], marker="o", ms=3, label=f"width {w1}, depth {d}")
    w0, d1 = g.widths[0], g.depths[-1]
    ax.plot(
        angle, g.kernels[(w0, d1)][0], ls=":", marker="x", ms=4, label=f"width {w0}, depth {d1}"
    )
    if g.activation == "relu":
        theory = infinite_width_kernel(g.inputs, d1, g.branch_scale)[0]
        ax.plot(angle, theory, color="black", lw=1, label=f"infinite width, depth {d1}")
    if g.limit is not None:
        ax.plot(angle, g.limit[0], color="black", ls="--", lw=1, label="width, depth → ∞ (ODE)")
    ax.set_xlabel("angle between inputs (degrees)")
    ax.set_ylabel("kernel entry")
    ax.set_title(f"kernel against input angle\n{label}", fontsize=9)
    ax.legend(fontsize=6)
