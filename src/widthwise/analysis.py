"""The paper's side analyses, per channel group.

Chen, Bu & Yan (NeurIPS 2024) support the weight-norm-variance verdicts with a handful of
measurements that a user can look at directly:

* :class:`SignFlips` — the fraction of a group's weights whose sign differs from initialisation,
  per snapshot (most flips happen in the first epochs).
* :func:`early_final_correlation` — how well each early snapshot's channel norms predict the final
  ones (Pearson and Spearman): once the Matthew effect sets in, the ranking is fixed early.
* :func:`cosine_matrix` — cosine similarity between a group's channels, sorted by norm.
* :func:`norm_distribution` — the channel norms at a few snapshots.
* :class:`NormGradCorrelation` — the Matthew effect itself: channels with larger weights receive
  larger gradients. Measured at each optimiser step from ``.grad`` and dropped right away.
* :func:`ifm_width` — iterative feature merging: how many distinct channels a group really holds.

Channel vectors are read from the members of a :class:`~widthwise.groups.ChannelGroup`: channel
``i`` of a member is the block ``[offset + i*repeat, offset + (i+1)*repeat)`` along ``member.dim``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from widthwise.distributed import canonical_name
from widthwise.groups import ChannelGroup, Member

__all__ = [
    "NormGradCorrelation",
    "SignFlips",
    "channel_vectors",
    "cosine_matrix",
    "early_final_correlation",
    "figures",
    "ifm_width",
    "norm_distribution",
]

#: IFM's default merge threshold, as a fraction of the largest distance between two channels at
#: the start. Channels are unit-normalised first, so a pair merges while their distance is below
#: ``beta * d_max``; with ``beta = 0.5`` and ``d_max`` near sqrt(2) (random directions) that is a
#: cosine similarity above about 0.75. Larger ``beta`` merges more and reports a smaller width.
IFM_BETA = 0.5


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {canonical_name(n): p for n, p in model.named_parameters()}


def member_matrix(tensor: torch.Tensor, member: Member, width: int) -> torch.Tensor:
    """The ``[width, k]`` view of ``tensor`` whose row ``i`` is channel ``i``'s slice."""
    t = tensor.movedim(member.dim, 0)
    t = t[member.offset : member.offset + width * member.repeat]
    return t.reshape(width, -1)


def _members(group: ChannelGroup, roles: Sequence[str], params: dict) -> list[Member]:
    out = [m for m in group.members if m.role in roles and params[m.param].dim() >= 2]
    if not out:
        raise ValueError(
            f"group {group.name!r} has no weight tensor with 2+ dims in roles {tuple(roles)}"
        )
    return out


@torch.no_grad()
def channel_vectors(
    model: nn.Module, group: ChannelGroup, *, roles: Sequence[str] = ("producer",)
) -> torch.Tensor:
    """Each channel's weights as one row: the concatenated slices of the group's members.

    The default, ``roles=("producer",)``, gives each channel's incoming weights (the neuron's
    weight vector in the paper's figures); add ``"consumer"`` to append the outgoing ones.
    Returns a float32 ``[width, k]`` tensor on the model's device.

    >>> import torch
    >>> from widthwise.groups import ChannelGroup, Member
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> g = ChannelGroup("0", 4, (Member("0.weight", 0, "producer"), Member("2.weight", 1, "consumer")))
    >>> channel_vectors(net, g).shape, channel_vectors(net, g, roles=("producer", "consumer")).shape
    (torch.Size([4, 3]), torch.Size([4, 5]))
    """
    params = _params(model)
    parts = [
        member_matrix(params[m.param].detach().float(), m, group.width)
        for m in _members(group, roles, params)
    ]
    return torch.cat(parts, dim=1)


class SignFlips:
    """Fraction of each group's weights whose sign differs from the first ``update`` (or init).

    A torchmetrics-style stateful object: build it right after initialisation, call
    :meth:`update` whenever you snapshot, read :meth:`compute`. It keeps one ``int8`` sign per
    coupled weight, on the model's device.

    >>> import torch
    >>> from widthwise.groups import ChannelGroup, Member
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> g = ChannelGroup("0", 4, (Member("0.weight", 0, "producer"), Member("2.weight", 1, "consumer")))
    >>> flips = SignFlips(net, [g])
    >>> with torch.no_grad():
    ...     _ = net[0].weight.neg_()
    >>> flips.update(step=1)["0"]  # 12 of the 20 coupled weights changed sign
    0.6
    """

    def __init__(self, model: nn.Module, groups: Iterable[ChannelGroup]):
        self.model = model
        self.groups = [g for g in groups if self._has_matrix(model, g)]
        self.reset()

    def reset(self) -> None:
        """Start again: the signs of the weights *now* become the reference; no rows."""
        self._initial = self._signs()
        self._rows: list[dict] = []

    @staticmethod
    def _has_matrix(model: nn.Module, group: ChannelGroup) -> bool:
        params = _params(model)
        return any(m.param in params and params[m.param].dim() >= 2 for m in group.members)

    @torch.no_grad()
    def _signs(self) -> dict[str, torch.Tensor]:
        roles = ("producer", "consumer", "norm", "other")
        return {
            g.name: torch.sign(channel_vectors(self.model, g, roles=roles)).to(torch.int8)
            for g in self.groups
        }

    @torch.no_grad()
    def update(self, step: int | None = None) -> dict[str, float]:
        """Record the flipped fraction of every group now; returns ``{group: fraction}``."""
        now = self._signs()
        fractions = torch.stack(
            [(now[g.name] != self._initial[g.name]).double().mean() for g in self.groups]
        ).tolist()  # one host transfer for all groups
        step = len(self._rows) // max(len(self.groups), 1) if step is None else step
        out = {g.name: f for g, f in zip(self.groups, fractions)}
        self._rows.extend({"step": step, "group": k, "flipped": v} for k, v in out.items())
        return out

    def compute(self) -> pd.DataFrame:
        """A long DataFrame: ``step, group, flipped``."""
        return pd.DataFrame(self._rows, columns=["step", "group", "flipped"])

    def state_dict(self) -> dict[str, Any]:
        return {"initial": {k: v.cpu() for k, v in self._initial.items()}, "rows": list(self._rows)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        device = next(iter(self._initial.values())).device if self._initial else "cpu"
        self._initial = {k: v.to(device) for k, v in state["initial"].items()}
        self._rows = list(state["rows"])


def _rank(a: np.ndarray) -> np.ndarray:
    # Average ranks for ties, as Spearman's rho expects.
    return pd.Series(a).rank(method="average").to_numpy()


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def early_final_correlation(steps: Sequence[int], norms: np.ndarray) -> pd.DataFrame:
    """Correlation between each snapshot's channel norms and the final snapshot's.

    ``norms`` is ``[n_snapshots, width]``, as returned by ``run.channel_norms(group)``.
    Returns ``step, pearson, spearman``; undefined correlations (constant norms) are NaN.

    >>> import numpy as np
    >>> early_final_correlation([0, 1], np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 7.0]]))
       step   pearson  spearman
    0     0  0.993399       1.0
    1     1  1.000000       1.0
    """
    norms = np.asarray(norms, dtype=np.float64)
    if norms.ndim != 2 or len(norms) == 0:
        raise ValueError(f"norms must be [n_snapshots, width], got shape {norms.shape}")
    final, final_rank = norms[-1], _rank(norms[-1])
    rows = [
        {"step": s, "pearson": _pearson(n, final), "spearman": _pearson(_rank(n), final_rank)}
        for s, n in zip(steps, norms)
    ]
    return pd.DataFrame(rows, columns=["step", "pearson", "spearman"])


def cosine_matrix(
    model: nn.Module, group: ChannelGroup, *, roles: Sequence[str] = ("producer",)
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity between a group's channels, rows and columns sorted by norm (largest first).

    Returns ``(matrix, order)``: ``order[k]`` is the channel shown at position ``k``.
    """
    v = channel_vectors(model, group, roles=roles).double()
    norms = v.norm(dim=1)
    order = torch.argsort(norms, descending=True, stable=True)
    unit = v / norms.clamp_min(torch.finfo(torch.float64).tiny)[:, None]
    sim = unit @ unit.T
    return sim[order][:, order].cpu().numpy(), order.cpu().numpy()


def norm_distribution(
    steps: Sequence[int], norms: np.ndarray, *, at: int | Sequence[int] = 4
) -> pd.DataFrame:
    """Channel norms at a few snapshots, long format: ``step, channel, norm``.

    ``at`` is a number of evenly spread snapshots (first and last included) or explicit indices.
    """
    norms = np.asarray(norms)
    n = len(norms)
    if n == 0:
        return pd.DataFrame(columns=["step", "channel", "norm"])
    idx = (
        sorted(set(np.linspace(0, n - 1, min(at, n)).round().astype(int)))
        if isinstance(at, int)
        else list(at)
    )
    frames = [
        pd.DataFrame({"step": steps[i], "channel": np.arange(norms.shape[1]), "norm": norms[i]})
        for i in idx
    ]
    return pd.concat(frames, ignore_index=True)


class NormGradCorrelation:
    """The Matthew effect measured during training: weight norm versus gradient norm per channel.

    For every group, at each optimiser step, the incoming weight norm and the incoming gradient
    norm of each channel are correlated (Spearman and Pearson); only those scalars are kept, so no
    gradient outlives the step. Pass the optimiser to measure automatically before each step
    (``register_step_pre_hook``), or call :meth:`update` yourself between ``backward`` and
    ``step``. ``every`` thins the measurement.
    """

    def __init__(
        self,
        model: nn.Module,
        groups: Iterable[ChannelGroup],
        optimizer: torch.optim.Optimizer | None = None,
        *,
        every: int = 1,
    ):
        self.model = model
        params = _params(model)
        self.groups = [
            g
            for g in groups
            if any(m.role == "producer" and params[m.param].dim() >= 2 for m in g.members)
        ]
        self.every = max(1, int(every))
        self.reset()
        self._handle = (
            optimizer.register_step_pre_hook(lambda *_: self.update()) if optimizer else None
        )

    @torch.no_grad()
    def update(self, step: int | None = None) -> None:
        """Measure now (reads ``.grad``; groups whose gradients are missing are skipped)."""
        self._calls += 1
        if (self._calls - 1) % self.every:
            return
        step = self._calls - 1 if step is None else step
        params = _params(self.model)
        for g in self.groups:
            w2 = torch.zeros(g.width, device=next(iter(params.values())).device)
            g2 = torch.zeros_like(w2)
            ok = True
            for m in _members(g, ("producer",), params):
                p = params[m.param]
                if p.grad is None:
                    ok = False
                    break
                w2 += member_matrix(p.detach().float(), m, g.width).pow(2).sum(1).to(w2.device)
                g2 += member_matrix(p.grad.float(), m, g.width).pow(2).sum(1).to(w2.device)
            if not ok or g.width < 3:
                continue
            w, gr = w2.sqrt().cpu().numpy(), g2.sqrt().cpu().numpy()
            self._rows.append(
                {
                    "step": step,
                    "group": g.name,
                    "pearson": _pearson(w, gr),
                    "spearman": _pearson(_rank(w), _rank(gr)),
                }
            )

    def compute(self) -> pd.DataFrame:
        """A long DataFrame: ``step, group, pearson, spearman``."""
        return pd.DataFrame(self._rows, columns=["step", "group", "pearson", "spearman"])

    def reset(self) -> None:
        """Forget every measurement (the optimiser hook stays)."""
        self._calls = 0
        self._rows: list[dict] = []

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self._calls, "rows": list(self._rows)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._calls = int(state["calls"])
        self._rows = list(state["rows"])

    def close(self) -> None:
        """Remove the optimiser hook."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def ifm_width(
    vectors: torch.Tensor | np.ndarray, *, beta: float = IFM_BETA, normalize: bool = True
) -> int:
    """Iterative feature merging: the number of distinct channels a group really holds.

    Repeatedly merges the two closest channels (their mean, weighted by how many channels each
    already stands for) until the smallest distance exceeds ``beta`` times the largest distance
    between two channels at the start. Returns the number of channels left. With
    ``normalize=True`` channels are compared by direction only (unit vectors), which is what the
    Matthew effect is about; dead (all-zero) channels then count as one.

    >>> import torch
    >>> base = torch.eye(3)
    >>> ifm_width(torch.cat([base, base * 2, base + 1e-3]))  # three directions, nine channels
    3
    """
    v = torch.as_tensor(vectors, dtype=torch.float64).detach().cpu()
    if v.dim() != 2:
        raise ValueError(f"vectors must be [channels, features], got shape {tuple(v.shape)}")
    if not torch.isfinite(v).all():
        raise ValueError("vectors contain NaN or Inf; IFM width is undefined")
    if not 0 < beta <= 1:
        raise ValueError(f"beta must be in (0, 1], got {beta}")
    n = v.shape[0]
    if n < 2:
        return n
    if normalize:
        v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)
    dist = torch.cdist(v, v)
    limit = beta * float(dist.max())
    counts = torch.ones(n, dtype=torch.float64)
    alive = torch.ones(n, dtype=torch.bool)
    dist.fill_diagonal_(float("inf"))
    while int(alive.sum()) > 1:
        flat = int(torch.argmin(dist))
        i, j = divmod(flat, n)
        if float(dist[i, j]) > limit:
            break
        # Merge j into i; distances to the merged centre are recomputed exactly.
        v[i] = (v[i] * counts[i] + v[j] * counts[j]) / (counts[i] + counts[j])
        counts[i] += counts[j]
        alive[j] = False
        d = (v - v[i]).norm(dim=1)
        d[~alive] = float("inf")
        d[i] = float("inf")
        dist[i], dist[:, i] = d, d
        dist[j], dist[:, j] = float("inf"), float("inf")
    return int(alive.sum())


def figures(
    run: Any,
    model: nn.Module | None = None,
    groups: Sequence[ChannelGroup] | None = None,
    *,
    sign_flips: SignFlips | None = None,
    norm_grad: NormGradCorrelation | None = None,
    max_groups: int = 6,
) -> list[tuple[str, Any]]:
    """The paper's side analyses as ``(title, Figure)`` pairs, for ``Report.add_figure``.

    From the run alone: the correlation of each snapshot's channel norms with the final ones.
    With ``model`` (its weights now): cosine similarity between channels sorted by norm, and the
    IFM effective width against the real width. With the stateful trackers used during training:
    sign flips since initialisation, and the weight-norm/gradient-norm correlation. (Channel-norm
    distributions are in every group's own figure.) Figures are bare matplotlib Figures.
    """
    from matplotlib.figure import Figure

    groups = list(groups if groups is not None else run.groups)[:max_groups]
    out: list[tuple[str, Any]] = []

    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    for g in groups:
        steps, norms = run.channel_norms(g.name)
        if len(steps) >= 2 and norms.shape[1] >= 3:
            c = early_final_correlation(steps, norms)
            ax.plot(c.step, c.spearman, lw=1.2, label=f"{g.name} (w={g.width})")
    _finish(ax, "step", "Spearman with final norms", fig)
    out.append(("Early vs final channel norms", fig))

    per_group = [
        (sign_flips, "flipped", "share of weights with flipped sign",
         "Sign flips since initialisation"),
        (norm_grad, "spearman", "Spearman(weight norm, grad norm)",
         "Matthew effect: weight norm vs gradient norm per channel"),
    ]  # fmt: skip
    for tracker, column, ylabel, title in per_group:
        if tracker is None or not len(table := tracker.compute()):
            continue
        fig = Figure(figsize=(7, 3.2))
        ax = fig.subplots()
        for name, d in table.groupby("group", sort=False):
            ax.plot(d.step, d[column], lw=1.2, label=str(name))
        ax.axhline(0, color="grey", lw=0.8)
        _finish(ax, "step", ylabel, fig)
        out.append((title, fig))

    if model is not None and groups:
        fig = Figure(figsize=(3.2 * len(groups), 3.2))
        axes = fig.subplots(1, len(groups), squeeze=False)[0]
        for ax, g in zip(axes, groups):
            sim, _ = cosine_matrix(model, g)
            im = ax.imshow(sim, vmin=-1, vmax=1, cmap="RdBu_r")
            ax.set_title(f"{g.name} (w={g.width})", fontsize=8)
            ax.set_xlabel("channel, by norm (largest first)", fontsize=7)
        fig.colorbar(im, ax=list(axes), fraction=0.02)
        out.append(("Cosine similarity between channels, sorted by norm", fig))

        widths = [g.width for g in groups]
        ifm = [ifm_width(channel_vectors(model, g)) for g in groups]
        fig = Figure(figsize=(7, 3.2))
        ax = fig.subplots()
        x = np.arange(len(groups))
        ax.bar(x - 0.2, widths, 0.4, label="width")
        ax.bar(x + 0.2, ifm, 0.4, label=f"IFM width (beta {IFM_BETA})")
        ax.set_xticks(x, [g.name for g in groups], rotation=20, fontsize=7)
        _finish(ax, None, "channels", fig)
        out.append(("IFM effective width", fig))
    return out


def _finish(ax: Any, xlabel: str | None, ylabel: str, fig: Any) -> None:
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
