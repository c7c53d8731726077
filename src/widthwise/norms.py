"""Per-channel weight norms and the channel-Matthew-effect statistics, in one pass.

For channel ``i`` of a group, the norm is the product, over the group's members whose parameter
has two or more dimensions, of the L2 norm of that channel's slice (Chen, Bu & Yan, NeurIPS 2024;
their reference code multiplies the norms of all coupled tensors and leaves 1-D tensors out):

    n_i = prod_m ||W_m[slice_i]||_2          (mode="product")
    n_i = prod_{m producer} ||W_m[slice_i]||_2   (mode="incoming")

The group's statistic is the unbiased variance of ``n / mean(n)``.

:class:`NormPlan` compiles the groups once. Each call then reads every parameter once (per needed
dimension) with a batched reduction into one vector of sums of squares (:meth:`NormPlan.reduce`,
on the model's device), makes one host transfer, and combines the members and computes the
statistics in NumPy (:meth:`NormPlan.stats_from`; a tracker can run that part on another thread). No gradient
tracking, no copy of the state dict, any device and dtype (``bfloat16`` is reduced in float32).
Sharded FSDP2 parameters contribute partial sums that are added across ranks with one
``all_reduce`` per call, so every rank gets the numbers a single process would.

>>> import torch
>>> from widthwise.groups import ChannelGroup, Member
>>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
>>> with torch.no_grad():
...     _ = model[0].weight.copy_(torch.ones(4, 3) * torch.tensor([[1.0], [1.0], [2.0], [2.0]]))
...     _ = model[2].weight.fill_(1.0)
>>> group = ChannelGroup("0", 4, (Member("0.weight", 0, "producer"), Member("0.bias", 0, "other"),
...                               Member("2.weight", 1, "consumer")))
>>> plan = NormPlan(model, [group])
>>> plan.channel_norms()[0]  # sqrt(3) * sqrt(2) and 2*sqrt(3) * sqrt(2)
tensor([2.4495, 2.4495, 4.8990, 4.8990])
>>> round(float(plan.stats().table.loc[0, "variance"]), 6)  # n / mean = [2/3, 2/3, 4/3, 4/3]
0.148148
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, cast

import numpy as np
import pandas as pd
import torch
from torch import nn

from widthwise.distributed import _dtensor_type, canonical_name, local_shard
from widthwise.groups import ChannelGroup, Member

__all__ = [
    "STAT_COLUMNS",
    "GroupStats",
    "ModelChangedError",
    "NormPlan",
    "Series",
    "StatsLayout",
    "channel_norms",
    "group_stats",
    "norm_variance",
]

Mode = Literal["product", "incoming"]

#: Columns of :attr:`GroupStats.table`, in order.
STAT_COLUMNS = (
    "group",
    "gate",
    "width",
    "variance",
    "mean",
    "max",
    "min",
    "n_nonfinite",
    "n_zero",
    "flag",
)


def norm_variance(n: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of ``n / mean(n)``; NaN when undefined (fewer than 2 channels, zero mean,
    non-finite values).

    >>> norm_variance(torch.tensor([1.0, 1.0, 2.0, 2.0]))
    tensor(0.1481)
    >>> norm_variance(torch.tensor([3.0]))
    tensor(nan)
    """
    n = n.detach()
    if n.numel() < 2:
        return torch.full((), float("nan"), dtype=n.dtype, device=n.device)
    return torch.var(n / n.mean(), correction=1)


@dataclass(frozen=True)
class Series:
    """One statistic series: a whole group (``gate == ""``) or one gate of it.

    ``members`` are the members that enter the product (2+ dimensions; producers only in mode
    ``"incoming"``; for a gate, that gate's members plus the ungated ones).
    """

    group: str
    gate: str
    width: int
    members: tuple[Member, ...]


#: On the CPU, weights larger than this many elements are reduced a block of rows at a time: a
#: 4 MiB float32 block stays in the last-level cache between its row and column sums, so the
#: weight is read from memory once. Measured (benchmarks/chunk_ab.py, docs/benchmarks.md): 1 << 20
#: was the best block size or close to it; 1 << 16 was slower (per-block overhead). With the
#: block views made once (NormPlan._fast_views), 1 << 18 was ~15% faster on MLP 1024x3 and level
#: elsewhere, but another block size sums the columns in another order: the stored norms would
#: move by up to 11 ULP (ViT-B), so it stays.
CHUNK_ELEMENTS = 1 << 20

#: Small weights of one shape with the same reductions (a ResNet's 3x3 convs of one stage, its
#: 1x1 convs) are reduced together, up to this many elements at a time: stacked into one
#: [n, rows, rest] buffer, squared and summed with one kernel call each instead of one per
#: weight, which is most of a small weight's cost. The sums of each weight are the same
#: numbers (every row and every column is summed in the same order). Only weights of at most
#: BATCH_ELEMENTS // 8 elements: above that, the extra pass of the stack and the batched
#: column sums cost more than the calls they save (``benchmarks/snapshot.py --batches``,
#: docs/benchmarks.md: ResNet-20's reductions 3.9x -> 2.7x the floor; 256x256 weights in
#: pairs were 15% slower and a pair of 64x64 ones no faster, so a batch has three or more).
BATCH_ELEMENTS = 1 << 17

# What a weight's reductions are (NormPlan._fast_views): row sums, column sums, or both.
_ROWS, _COLS, _BOTH = 1, 2, 3
_KINDS = {(0,): _ROWS, (1,): _COLS, (0, 1): _BOTH}


#: Per block of rows: the scratch view its squares go to, and the view its row sums go to.
_Blocks = tuple[tuple[torch.Tensor, torch.Tensor | None], ...]


class _Batch(NamedTuple):
    """Where the kernels of a batch of same-shape weights write (NormPlan._fast_views)."""

    kind: int
    n: int  # weights in the batch
    rows: int
    width: int  # elements per row (columns * kernel)
    buf: torch.Tensor  # [n, rows, width] scratch: the weights, then their squares
    rows_out: torch.Tensor | None  # [n, rows] (_ROWS, _BOTH)
    cols_out: torch.Tensor | None  # [n, columns] (_COLS, _BOTH)
    tmp: torch.Tensor | None  # [n, width] column sums before the kernel sum (convs)


class _Views(NamedTuple):
    """Where one weight's fast-path kernels write (NormPlan._fast_views)."""

    kind: int
    rows: int
    rows_out: torch.Tensor | None  # row sums (_ROWS, _BOTH)
    cols_out: torch.Tensor | None  # column sums (_COLS, _BOTH)
    tmp: torch.Tensor | None  # column sums before the kernel sum, [columns * kernel] (convs)
    per: int  # rows per block (all of them when the weight is one block)
    part: torch.Tensor | None  # one block's column sums, added to the rest (several blocks)
    blocks: _Blocks  # (_COLS, _BOTH)


class _Reader(NamedTuple):
    """One parameter the plan reads, and where its sums of squares go (NormPlan._compile)."""

    module: nn.Module
    leaf: str  # the parameter's name in module._parameters
    name: str
    dims: list[int]  # the parameter's dims whose channels are summed
    shape: torch.Size  # the parameter's shape (checked at every call)
    plain: bool  # not a sharded DTensor
    kind: int  # _ROWS, _COLS, _BOTH: the fast path's reductions of ``grid``; 0: none
    grid: tuple[int, ...]  # the shape the kernels read (_grid)
    start: int  # offset of its first sums in the reduction vector


def _grid(shape: Sequence[int], dims: list[int]) -> tuple[tuple[int, ...], list[int]]:
    """The shape a parameter's reductions read and the dims they keep: its own, except for
    channels along the last of 3+ dims (a ViT's ``pos_embed`` [1, tokens, C]), read as
    [rows, C] column sums: contiguous and vectorised, where summing over the leading dims is a
    strided reduction (ViT-tiny's 12k-element ``pos_embed``: 83 us against 15 us)."""
    if len(shape) > 2 and dims == [len(shape) - 1]:
        return (math.prod(shape[:-1]), shape[-1]), [1]
    return tuple(shape), dims


def _find_batches(readers: Sequence[_Reader]) -> dict[int, int]:
    """First reader -> number of readers, for each run of three or more consecutive small plain
    weights of one shape and the same reductions (at most BATCH_ELEMENTS in all, each at most
    an eighth of that), laid out one after the other in the reduction vector."""
    span = {_ROWS: lambda sh: sh[0], _COLS: lambda sh: sh[1], _BOTH: lambda sh: sh[0] + sh[1]}
    out: dict[int, int] = {}
    i = 0
    while i < len(readers):
        r = readers[i]
        numel = math.prod(r.shape)
        j = i + 1
        if r.plain and r.kind and numel <= CHUNK_ELEMENTS and 8 * numel <= BATCH_ELEMENTS:
            step = span[r.kind](r.grid)
            while (
                j < len(readers)
                and (j - i + 1) * numel <= BATCH_ELEMENTS
                and readers[j].shape == r.shape
                and readers[j].dims == r.dims
                and readers[j].plain
                and readers[j].start == r.start + (j - i) * step
            ):
                j += 1
        if j - i >= 3:  # a pair was slower than two weights one at a time (the stack's cost)
            out[i] = j - i
        i = j
    return out


def _rows_per_block(shape: Sequence[int], device: torch.device) -> int:
    """Rows of a [rows, rest] weight squared and summed at a time: all of them, except on the
    CPU above CHUNK_ELEMENTS, where a block must still be in cache for its row and column sums."""
    numel = math.prod(shape)
    if device.type != "cpu" or numel <= CHUNK_ELEMENTS:
        return shape[0]
    return max(1, CHUNK_ELEMENTS // (numel // shape[0]))


def _blocks(sq: torch.Tensor, rows_out: torch.Tensor | None, rows: int, per: int) -> _Blocks:
    """The scratch and row-sum views of each block of ``per`` rows (the last may be shorter)."""
    out = []
    for r0 in range(0, rows, per):
        n = min(per, rows - r0)
        out.append((sq[:n], None if rows_out is None else rows_out[r0 : r0 + n]))
    return tuple(out)


def _checked(module: nn.Module, leaf: str, name: str, shape: torch.Size) -> torch.Tensor:
    """The parameter now, if it still has the shape the plan was made for."""
    param = cast(torch.Tensor, module._parameters[leaf])
    if param.shape != shape:
        raise ModelChangedError(
            f"parameter {name!r} now has shape {tuple(param.shape)}, the channel groups "
            f"expect {tuple(shape)}; channel groups are fixed per run: start a new "
            "WidthTracker (a new run file) for the changed model"
        )
    return param


def _fast_ok(param: torch.Tensor, device: torch.device | None) -> bool:
    """Whether the fast path's preallocated float32 views can take this parameter."""
    return param.dtype == torch.float32 and param.device == device and param.is_contiguous()


def _reduce_batch(b: _Batch, params: Sequence[torch.Tensor]) -> None:
    """The reductions of a batch of same-shape weights with one kernel call each: every row
    and every column is summed in the same order as one weight at a time (_square_sums)."""
    torch.stack([p.view(b.rows, b.width) for p in params], out=b.buf)
    if b.kind == _ROWS:
        torch.linalg.vector_norm(b.buf, dim=2, out=b.rows_out).square_()
        return
    b.buf.square_()
    if b.rows_out is not None:
        torch.sum(b.buf, 2, out=b.rows_out)
    cols = cast(torch.Tensor, b.cols_out)
    if b.tmp is None:
        torch.sum(b.buf, 1, out=cols)
    else:
        torch.sum(b.buf, 1, out=b.tmp)
        torch.sum(b.tmp.view(b.n, cols.shape[1], -1), 2, out=cols)


def _square_into(m: torch.Tensor, out: torch.Tensor) -> None:
    if m.dtype == out.dtype:
        torch.square(m, out=out)
    else:  # bfloat16/float16: convert into the buffer, then square in place
        out.copy_(m).square_()


def _square_sums(
    m: torch.Tensor, per: int, blocks: _Blocks, cols: torch.Tensor, part: torch.Tensor | None
) -> None:
    """Row sums (into each block's row-sum view, where it has one) and column sums (into
    ``cols``) of the squares of ``m`` [rows, rest], ``per`` rows at a time.

    The one reduction of both NormPlan paths, so both store the same numbers. A block is squared
    into its scratch view and summed both ways while it is in cache: the weight is read from
    memory once instead of three times. The column sums of later blocks are added to the first
    block's in order (into ``part`` first), so the block size fixes the float32 sums.
    """
    if len(blocks) == 1:  # most weights: no split, no loop (a small model's cost is calls)
        s, r = blocks[0]
        _square_into(m, s)
        if r is not None:
            torch.sum(s, 1, out=r)
        torch.sum(s, 0, out=cols)
        return
    for i, (block, (s, r)) in enumerate(zip(torch.split(m, per), blocks)):
        _square_into(block, s)
        if r is not None:
            torch.sum(s, 1, out=r)
        if i == 0:
            torch.sum(s, 0, out=cols)
        else:
            cols.add_(torch.sum(s, 0, out=cast(torch.Tensor, part)))


class GroupStats:
    """Statistics of every series from one pass: plain arrays, a table on demand.

    Attributes:
        series: the series, in row order.
        columns: ``STAT_COLUMNS`` name -> list or array, one entry per series.
        norms: per-channel norms of each series (float32 arrays, host memory).
    """

    def __init__(self, series: Sequence[Series], columns: dict, norms: list[np.ndarray]):
        self.series = tuple(series)
        self.columns = columns
        self.norms = norms

    @property
    def table(self) -> pd.DataFrame:
        """One row per series with ``STAT_COLUMNS``."""
        return pd.DataFrame({c: self.columns[c] for c in STAT_COLUMNS})

    def __len__(self) -> int:
        return len(self.series)


def _param_slots(model: nn.Module) -> dict[str, tuple[nn.Module, str, str]]:
    # Every name a parameter is reachable under (tied weights included), wrappers stripped:
    # canonical name -> (module, parameter name in it, the module's path in the wrapped model).
    slots: dict[str, tuple[nn.Module, str, str]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for leaf, p in module._parameters.items():
            if p is None:
                continue
            full = f"{mod_name}.{leaf}" if mod_name else leaf
            slots.setdefault(canonical_name(full), (module, leaf, mod_name))
    return slots


def _path_of(module: nn.Module, root: nn.Module) -> str:
    """``"a.b."``: where ``module`` sits in ``root`` (empty for the root, ``?.`` if detached)."""
    if module is root:
        return ""
    for name, m in root.named_modules(remove_duplicate=False):
        if m is module:
            return f"{name}."
    return "?."


def _links(model: nn.Module, paths: Sequence[str]) -> list[tuple[nn.Module, str, nn.Module]]:
    """``(parent, child name, child)`` along the path to every module in ``paths``: if any
    parent no longer holds that child (``net[2] = nn.Linear(...)``), the plan reads a module
    that is not the model's any more."""
    seen: dict[tuple[int, str], tuple[nn.Module, str, nn.Module]] = {}
    for path in paths:
        parent = model
        for part in path.split(".") if path else ():
            child = parent._modules[part]
            if child is None:
                break
            seen.setdefault((id(parent), part), (parent, part, child))
            parent = child
    return list(seen.values())


class ModelChangedError(ValueError):
    """The model no longer has the parameters (or shapes) its channel groups were found on."""


class NormPlan:
    """Compiled per-channel norm computation for a model and its channel groups.

    Args:
        model: the model (plain, DDP, ``torch.compile``d or FSDP2-sharded).
        groups: channel groups with the plain model's parameter names.
        mode: ``"product"`` (all members with 2+ dims) or ``"incoming"`` (producers only).
        gates: also compute one series per gate for gated groups (GRU/LSTM/attention).

    Raises:
        ValueError: a group names a parameter the model does not have, or an unknown mode.
    """

    def __init__(
        self,
        model: nn.Module,
        groups: Sequence[ChannelGroup],
        mode: Mode = "product",
        *,
        gates: bool = True,
    ):
        if mode not in ("product", "incoming"):
            raise ValueError(f"mode must be 'product' or 'incoming', not {mode!r}")
        self.model = model
        self.groups = tuple(groups)
        self.mode = mode
        self.gates = gates
        self._compile()

    # -- compile -------------------------------------------------------------------------------
    def _compile(self) -> None:
        slots = _param_slots(self.model)
        self._slots = slots
        series: list[Series] = []
        for g in self.groups:
            for m in g.members:
                if m.param not in slots:
                    raise ValueError(
                        f"group {g.name!r} refers to parameter {m.param!r}, which the model does "
                        "not have; find the groups on this model (widthwise.find_groups)"
                    )

            def counts(m: Member) -> bool:
                p = self._param(m.param)
                return p.ndim >= 2 and (self.mode == "product" or m.role == "producer")

            used = tuple(m for m in g.members if counts(m))
            series.append(Series(g.name, "", g.width, used))
            if self.gates:
                for gate in g.gates:
                    sel = tuple(m for m in used if m.gate in (gate, None))
                    series.append(Series(g.name, gate, g.width, sel))
        self.series = tuple(series)

        # One reduction per (parameter, dim); the ones of sharded parameters go last, grouped by
        # process group, so each group's partial sums are one contiguous all_reduce.
        keys: dict[tuple[str, int], None] = {}
        for s in series:
            for m in s.members:
                keys.setdefault((m.param, m.dim), None)
        by_param: dict[str, list[int]] = {}
        for name, dim in keys:
            by_param.setdefault(name, []).append(dim)
        sharded = {n: local_shard(self._param(n)).group for n in by_param}
        complete = [n for n in by_param if sharded[n] is None]
        # weights of one shape and the same reductions side by side, so that a run of them can
        # be reduced as one batch (BATCH_ELEMENTS) straight into the reduction vector
        key = {n: (tuple(self._param(n).shape), tuple(sorted(by_param[n]))) for n in complete}
        seen_at = {k: i for i, k in reversed(list(enumerate(key.values())))}
        complete.sort(key=lambda n: seen_at[key[n]])
        partial = [n for n in by_param if sharded[n] is not None]
        self._params = [(n, sorted(by_param[n])) for n in complete + partial]
        self._links = _links(self.model, sorted({slots[n][2] for n in by_param}))
        # (the parent's _modules dict, name, child): stale()'s check without attribute lookups
        self._link_dicts = [(parent._modules, name, child) for parent, name, child in self._links]
        self._shapes = {n: tuple(self._param(n).shape) for n in by_param}
        dtensor = _dtensor_type()
        base: dict[tuple[str, int], int] = {}
        pos = 0
        self._partial_ranges: list[tuple[object, int, int]] = []
        self._readers: list[_Reader] = []
        for name, dims in self._params:
            start = pos
            for d in dims:
                base[(name, d)] = pos
                pos += self._param(name).shape[d]
            pg = sharded[name]
            if pg is not None:
                if self._partial_ranges and self._partial_ranges[-1][0] is pg:
                    self._partial_ranges[-1] = (pg, self._partial_ranges[-1][1], pos)
                else:
                    self._partial_ranges.append((pg, start, pos))
            p = self._param(name)
            plain = not isinstance(p, dtensor)
            grid, grid_dims = _grid(p.shape, dims)
            kind = _KINDS.get(tuple(grid_dims), 0) if plain and p.numel() > 0 else 0
            self._readers.append(
                _Reader(
                    slots[name][0], slots[name][1], name, dims, p.shape, plain, kind, grid, start
                )
            )
        self._reduced_len = pos
        self._batches = _find_batches(self._readers)

        # Index maps: gather each member's channel block out of the reductions, sum the block
        # (flatten -> linear repeats), then multiply the members of a series per channel.
        gather, block, chan = [], [], []
        offsets = [0]
        n_blocks = 0
        for s in series:
            c0 = offsets[-1]
            for m in s.members:
                start = base[(m.param, m.dim)] + m.offset
                idx = np.arange(start, start + s.width * m.repeat)
                gather.append(idx)
                block.append(n_blocks + np.arange(s.width).repeat(m.repeat))
                chan.append(c0 + np.arange(s.width))
                n_blocks += s.width
            offsets.append(c0 + s.width)
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, dtype=np.int64)  # noqa: E731
        self._gather = torch.from_numpy(cat(gather).astype(np.int64))
        self._block = torch.from_numpy(cat(block).astype(np.int64))
        self._chan = torch.from_numpy(cat(chan).astype(np.int64))
        # the same maps for NumPy (stats_from): block starts (None when every block is one
        # element), and the blocks ordered by channel, members in order, for the products
        blk = self._block.numpy()
        first = np.flatnonzero(np.diff(blk, prepend=-1)) if blk.size else blk
        ch = self._chan.numpy()
        per = np.bincount(ch, minlength=offsets[-1]) if ch.size else np.zeros(offsets[-1], int)
        self._n_blocks = n_blocks
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self.layout = StatsLayout(
            series,
            self._reduced_len,
            self._gather.numpy(),
            None if first.size == blk.size else first,
            np.argsort(ch, kind="stable"),
            (np.cumsum(per) - per)[per > 0],
            per > 0,
            self._offsets,
            np.array([len(s.members) == 0 for s in series], dtype=bool),
        )
        self._device_cache: dict[torch.device, tuple[torch.Tensor, ...]] = {}
        self._buffers: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        self._fast: dict[
            torch.device, tuple[torch.Tensor, list[_Views | None], dict[int, _Batch]]
        ] = {}

    def _param(self, name: str) -> torch.Tensor:
        module, leaf, _ = self._slots[name]
        return cast(torch.Tensor, module._parameters[leaf])

    # -- a model changed under the plan ------------------------------------------------------
    def stale(self) -> list[str]:
        """Paths of modules the plan reads that the model no longer holds (cheap: one identity
        check per module on the way to a member)."""
        for held, name, child in self._link_dicts:  # every snapshot: the cheap check first
            if held.get(name) is not child:
                break
        else:
            return []
        return [
            f"{_path_of(parent, self.model)}{name}"
            for parent, name, child in self._links
            if parent._modules.get(name) is not child
        ]

    def rebind(self) -> None:
        """Read the parameters from the model's current modules (after a module was replaced).

        Raises:
            ModelChangedError: a member parameter is gone or has another shape; the channel
                groups do not describe this model any more.
        """
        before = dict(self.__dict__)
        old = self._shapes
        try:
            self._compile()
        except (ValueError, KeyError) as exc:
            self.__dict__.update(before)
            raise ModelChangedError(
                f"the model changed since its channel groups were found: {exc}"
            ) from None
        for name, shape in old.items():
            if self._shapes.get(name) != shape:
                got = self._shapes.get(name, ())
                self.__dict__.update(before)
                raise ModelChangedError(
                    f"the model changed since its channel groups were found: parameter {name!r} "
                    f"has shape {got}, the groups expect {shape}; "
                    "channel groups are fixed per run: start a new WidthTracker (a new run file) "
                    "for the changed model"
                )

    def _indices(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._device_cache:
            self._device_cache[device] = tuple(
                t.to(device) for t in (self._gather, self._block, self._chan)
            )
        return self._device_cache[device]

    # -- compute -------------------------------------------------------------------------------
    def _scratch(self, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        # one reused buffer for the squares: a fresh multi-MB allocation per tensor costs page
        # faults that take longer than the arithmetic
        key = (like.device, dtype)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < like.numel():
            buf = self._buffers[key] = torch.empty(like.numel(), dtype=dtype, device=like.device)
        return buf[: like.numel()].view(like.shape)

    def _sums_of_squares(self, t: torch.Tensor, dims: list[int]) -> list[torch.Tensor]:
        acc = torch.float64 if t.dtype == torch.float64 else torch.float32
        if t.numel() == 0:
            return [torch.zeros(t.shape[d], dtype=acc, device=t.device) for d in dims]
        if t.ndim > 2 and dims == [t.ndim - 1]:  # channels along the last dim: _grid
            return self._sums_of_squares(t.reshape(-1, t.shape[-1]), [1])
        if max(dims) > 1:  # rare (channels along a middle dim): a general, slower reduction
            return [
                torch.linalg.vector_norm(
                    t, dim=tuple(i for i in range(t.ndim) if i != d), dtype=acc
                ).square_()
                for d in dims
            ]
        # Reductions along strided dims are slow on CPU; flattening to [rows, cols * kernel]
        # keeps both sums contiguous or vectorised across columns.
        m = t.reshape(t.shape[0], -1)
        if dims == [0]:
            return [torch.linalg.vector_norm(m, dim=1, dtype=acc).square_()]
        n_rows, width = m.shape
        per = _rows_per_block(m.shape, m.device)
        sq = self._scratch(m[:per], acc)
        new = functools.partial(torch.empty, dtype=acc, device=m.device)
        rows = new(n_rows) if dims == [0, 1] else None
        col_sums = new(width)
        part = new(width) if per < n_rows else None
        _square_sums(m, per, _blocks(sq, rows, n_rows, per), col_sums, part)
        cols = col_sums.view(t.shape[1], -1).sum(1)
        return [cols] if dims == [1] else [cast(torch.Tensor, rows), cols]

    def _fast_views(
        self, device: torch.device
    ) -> tuple[torch.Tensor, list[_Views | None], dict[int, _Batch]]:
        """The reduction vector and, per weight that can take the fast path (and per batch of
        them, by first weight), the views its kernels write into, made once per device: a small
        model's snapshot is mostly per-call fixed cost (slicing, buffers, dispatch), not
        arithmetic."""
        cached = self._fast.get(device)
        if cached is not None:
            return cached
        f32 = torch.float32
        reduced = torch.empty(self._reduced_len, dtype=f32, device=device)
        # elements per (row, column): a conv's kernel
        todo = [(r.grid, r.kind, math.prod(r.grid[2:]), r.start) for r in self._readers]

        def scratch_size(shape: Sequence[int]) -> int:
            return _rows_per_block(shape, device) * (math.prod(shape) // shape[0])

        size = max(
            (scratch_size(sh) for sh, kind, _, _ in todo if kind in (_COLS, _BOTH)), default=0
        )
        batch_sizes = [n * math.prod(todo[i][0]) for i, n in self._batches.items()]
        size = max([size, *batch_sizes])
        # one scratch buffer for the squares, shared with _sums_of_squares (_scratch finds it):
        # every buffer more is memory traffic when the cache is contended
        scratch = self._buffers.get((device, f32))
        if scratch is None or scratch.numel() < size:
            scratch = self._buffers[(device, f32)] = torch.empty(size, dtype=f32, device=device)
        widths = [math.prod(sh[1:]) for sh, kind, _, _ in todo if kind in (_COLS, _BOTH)]
        widths += [n * math.prod(todo[i][0][1:]) for i, n in self._batches.items()]
        tmp = torch.empty(max(widths, default=0), dtype=f32, device=device)
        part = torch.empty(max(widths, default=0), dtype=f32, device=device)
        views: list[_Views | None] = []
        for shape, kind, k, a in todo:
            if not kind:
                views.append(None)
                continue
            rows = shape[0]
            if kind == _ROWS:
                views.append(_Views(kind, rows, reduced[a : a + rows], None, None, rows, None, ()))
                continue
            width = math.prod(shape) // rows
            per = _rows_per_block(shape, device)
            dst_rows = reduced[a : a + rows] if kind == _BOTH else None
            c0 = a + rows if kind == _BOTH else a
            sq = scratch[: per * width].view(per, width)
            # column sums of the [rows, columns * kernel] view go to tmp first for a conv
            col_tmp = tmp[:width] if k > 1 else None
            views.append(
                _Views(
                    kind,
                    rows,
                    dst_rows,
                    reduced[c0 : c0 + shape[1]],
                    col_tmp,
                    per,
                    part[:width] if per < rows else None,
                    _blocks(sq, dst_rows, rows, per),
                )
            )
        batches: dict[int, _Batch] = {}
        for i, n in self._batches.items():
            shape, kind, k, a = todo[i]
            rows, cols = shape[0], shape[1]
            width = math.prod(shape) // rows
            span = {_ROWS: rows, _COLS: cols, _BOTH: rows + cols}[kind]
            region = reduced[a : a + n * span].view(n, span)
            batches[i] = _Batch(
                kind,
                n,
                rows,
                width,
                scratch[: n * rows * width].view(n, rows, width),
                region[:, :rows] if kind != _COLS else None,
                region[:, span - cols :] if kind != _ROWS else None,
                tmp[: n * width].view(n, width) if k > 1 and kind != _ROWS else None,
            )
        self._fast[device] = (reduced, views, batches)
        return reduced, views, batches

    def reduce(self, *, fresh: bool = True) -> torch.Tensor:
        """Sums of squares of every (weight, dimension) the groups read, float32, on the model's
        device, summed across ranks for sharded parameters: the only part of a snapshot that
        reads the weights. A new tensor each call, so it can be handed to another thread
        (``fresh=False``: the plan's own buffer where it has one, valid until the next call —
        for a caller that copies it at once);
        :meth:`stats_from` turns it into the statistics."""
        # torch.no_grad() without its context-manager objects (a decorator costs ~3 us a call,
        # a tenth of a small model's reductions)
        grad = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)
        try:
            return self._reduce(fresh)
        finally:
            torch._C._set_grad_enabled(grad)

    def _reduce(self, fresh: bool) -> torch.Tensor:
        f32 = torch.float32
        device = None
        reduced = None
        views: list[_Views | None] = []
        batches: dict[int, _Batch] = {}
        readers = self._readers
        cpu = False
        done = 0  # readers before this one were reduced with their batch
        for i, (module, leaf, name, dims, shape, plain, _, _, a) in enumerate(readers):
            if i < done:
                continue
            param = module._parameters[leaf]
            if param is None or param.shape != shape:
                _checked(module, leaf, name, shape)  # raises ModelChangedError
                continue  # (not reached)
            if reduced is None:
                device = param.device if plain else local_shard(param).tensor.device
                reduced, views, batches = self._fast_views(device)
                cpu = device.type == "cpu"
            if batches:
                batch = batches.get(i)
                if batch is not None:
                    ms = [param, *(_checked(*r[:3], r.shape) for r in readers[i + 1 : i + batch.n])]
                    if all(_fast_ok(m, device) for m in ms):
                        _reduce_batch(batch, ms)
                        done = i + batch.n
                        continue
            v = views[i]
            if (
                v is not None
                and param.dtype is f32
                and (param.is_cpu if cpu else param.device == device)
                and param.is_contiguous()
            ):
                # the kernels of _sums_of_squares, so the same numbers
                m = param if param.ndim == 2 else param.view(v.rows, -1)
                kind = v.kind
                if kind == _ROWS:
                    torch.linalg.vector_norm(m, dim=1, out=v.rows_out).square_()
                    continue
                tmp = v.tmp
                blocks = v.blocks
                if len(blocks) == 1:  # _square_sums' first case, inline
                    sq, r = blocks[0]
                    torch.square(m, out=sq)
                    if r is not None:
                        torch.sum(sq, 1, out=r)
                    torch.sum(sq, 0, out=v.cols_out if tmp is None else tmp)
                else:
                    cols = v.cols_out if tmp is None else tmp
                    _square_sums(m, v.per, blocks, cast(torch.Tensor, cols), v.part)
                if tmp is not None:
                    out = cast(torch.Tensor, v.cols_out)
                    torch.sum(tmp.view(out.shape[0], -1), 1, out=out)
                continue
            # plain tensors skip local_shard (a per-call import and dataclass: fixed cost that
            # dominates a small model's snapshot)
            shard = None if plain else local_shard(param)
            t = param.detach() if shard is None else shard.tensor
            sums = self._sums_of_squares(t, dims)
            for d, s in zip(dims, sums):
                if shard is not None and shard.group is not None and s.numel() != shape[d]:
                    full = torch.zeros(shape[d], dtype=s.dtype, device=s.device)
                    full[shard.offsets[d] : shard.offsets[d] + s.numel()] = s
                    s = full
                reduced[a : a + shape[d]].copy_(s)
                a += shape[d]
        if reduced is not None and fresh:
            reduced = reduced.clone()  # the views are reused by the next call
        if device is None:  # no member has 2+ dims
            device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        if reduced is None:
            reduced = torch.zeros(0, device=device)
        if self._partial_ranges:
            import torch.distributed as dist

            pieces, prev = [], 0
            for pg, a, b in self._partial_ranges:
                pieces.append(reduced[prev:a])
                chunk = reduced[a:b].contiguous()
                dist.all_reduce(chunk, op=dist.ReduceOp.SUM, group=pg)
                pieces.append(chunk)
                prev = b
            pieces.append(reduced[prev:])
            reduced = torch.cat(pieces)
        return reduced

    def _flat_norms(self) -> torch.Tensor:
        """Norms of every series, concatenated, on the model's device (float64 where supported)."""
        reduced = self.reduce()
        device = reduced.device
        wide = torch.float32 if device.type == "mps" else torch.float64
        reduced = reduced.to(wide)
        gather, block, chan = self._indices(device)
        blocks = torch.zeros(self._n_blocks, dtype=wide, device=device)
        blocks.index_add_(0, block, reduced[gather])
        n = torch.ones(int(self._offsets[-1]), dtype=wide, device=device)
        n.scatter_reduce_(0, chan, blocks.sqrt_(), reduce="prod")
        return n

    @torch.no_grad()
    def channel_norms(self) -> list[torch.Tensor]:
        """Per-channel norms of each group (whole group, not per gate), float32, on the model's
        device; no host synchronisation."""
        flat = self._flat_norms().float()
        return [
            flat[self._offsets[i] : self._offsets[i + 1]]
            for i, s in enumerate(self.series)
            if s.gate == ""
        ]

    @torch.no_grad()
    def stats(self) -> GroupStats:
        """Statistics of every series (one host transfer)."""
        return self.stats_from(self.reduce())

    def stats_from(self, reduced: torch.Tensor | np.ndarray) -> GroupStats:
        """Statistics from the output of :meth:`reduce` (or its NumPy copy on the host: then
        no torch call at all, e.g. on another thread), in float64: the same gather, block
        sums, square roots and products as :meth:`channel_norms`, in the same order
        (:meth:`StatsLayout.stats_from`)."""
        if isinstance(reduced, torch.Tensor):
            reduced = reduced.detach().cpu().numpy()
        return self.layout.stats_from(reduced)


class StatsLayout:
    """What turns the output of :meth:`NormPlan.reduce` into the statistics, and nothing of
    the model: index maps and the series' names and widths. A run file keeps it (:meth:`to_json`)
    beside each snapshot written as its reductions, so the statistics can be computed later, in
    another thread or another process, by this same code and to the same bits.

    >>> import torch
    >>> from widthwise.groups import ChannelGroup, Member
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> plan = NormPlan(model, [ChannelGroup("0", 4, (Member("0.weight", 0, "producer"),
    ...                                               Member("2.weight", 1, "consumer")))])
    >>> layout = StatsLayout.from_json(plan.layout.to_json())
    >>> reduced = plan.reduce().numpy()
    >>> bool((layout.stats_from(reduced).norms[0] == plan.stats_from(reduced).norms[0]).all())
    True
    """

    def __init__(
        self,
        series: Sequence[Series],
        n_reduced: int,
        gather: np.ndarray,
        block_starts: np.ndarray | None,
        chan_order: np.ndarray,
        chan_starts: np.ndarray,
        chan_has: np.ndarray,
        offsets: np.ndarray,
        empty: np.ndarray,
    ):
        self.series = tuple(series)
        self.n_reduced = int(n_reduced)
        self.gather = gather
        self.block_starts = block_starts
        self.chan_order = chan_order
        self.chan_starts = chan_starts
        self.chan_has = chan_has
        self.chan_all = bool(chan_has.all())
        self.offsets = offsets
        self.empty = empty
        self._layout = _layout(self.series, offsets, empty)

    def stats_from(self, reduced: np.ndarray) -> GroupStats:
        """Statistics from the sums of squares ``reduced`` (float32, ``n_reduced`` values)."""
        r = reduced.astype(np.float64)
        blocks = r[self.gather]
        if self.block_starts is not None:
            blocks = np.add.reduceat(blocks, self.block_starts) if blocks.size else blocks
        np.sqrt(blocks, out=blocks)
        if not blocks.size:
            n = np.ones(int(self.offsets[-1]))
        else:
            prods = np.multiply.reduceat(blocks[self.chan_order], self.chan_starts)
            if self.chan_all:  # every channel has a member (no empty series): no scatter
                n = prods
            else:
                n = np.ones(int(self.offsets[-1]))
                n[self.chan_has] = prods
        return _stats_from_flat(self.series, n, self.offsets, self.empty, self._layout)

    def to_json(self) -> str:
        """The layout as JSON (names, widths and index lists; the members are left out)."""
        ints = lambda a: [int(x) for x in a]  # noqa: E731
        return json.dumps(
            {
                "version": 1,
                "series": [[s.group, s.gate, s.width] for s in self.series],
                "n_reduced": self.n_reduced,
                "gather": ints(self.gather),
                "block_starts": None if self.block_starts is None else ints(self.block_starts),
                "chan_order": ints(self.chan_order),
                "chan_starts": ints(self.chan_starts),
                "chan_has": ints(self.chan_has),
                "offsets": ints(self.offsets),
                "empty": ints(self.empty),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> StatsLayout:
        """The layout :meth:`to_json` wrote (``ValueError`` when it is not one)."""
        d = json.loads(text)
        if not isinstance(d, dict) or d.get("version") != 1:
            raise ValueError("not a statistics layout this widthwise can read")
        i64 = lambda k: np.asarray(d[k], dtype=np.int64).reshape(-1)  # noqa: E731
        series = [Series(str(g), str(gate), int(w), ()) for g, gate, w in d["series"]]
        offsets, gather = i64("offsets"), i64("gather")
        n = int(d["n_reduced"])
        widths = np.diff(offsets)
        if (
            offsets.size != len(series) + 1
            or (series and (offsets[0] != 0 or bool((widths < 0).any())))
            or [s.width for s in series] != widths.tolist()
            or (gather.size and (gather.min() < 0 or gather.max() >= n))
        ):
            raise ValueError("a statistics layout whose index lists do not fit together")
        starts = None if d["block_starts"] is None else i64("block_starts")
        has = i64("chan_has").astype(bool)
        return cls(
            series,
            n,
            gather,
            starts,
            i64("chan_order"),
            i64("chan_starts"),
            has,
            offsets,
            i64("empty").astype(bool),
        )


class _Layout(NamedTuple):
    """What the statistics need that depends only on the plan (made once, not per snapshot:
    a small model's statistics are mostly per-call NumPy overhead, not arithmetic)."""

    widths: np.ndarray
    starts: np.ndarray  # segment starts, clipped for reduceat
    bad: np.ndarray  # series with no weights or no channels: NaN statistics
    any_bad: bool
    static_flags: list[str]  # the flags when no channel is zero or non-finite
    groups: list[str]
    gates: list[str]
    multi: np.ndarray  # widths > 1: the variance is defined
    dof: np.ndarray  # widths - 1
    bounds: list[tuple[int, int]]  # each series' slice of the flat norms
    empty_at: list[int]  # series with no weights (their norms are NaN)


def _layout(series: Sequence[Series], offsets: np.ndarray, empty: np.ndarray) -> _Layout:
    widths = np.diff(offsets)
    size = int(offsets[-1]) if len(offsets) else 0
    flags = []
    for e, w in zip(empty, widths):
        f = ["no_weights"] if e else ["all_zero"] if w == 0 else []  # as _stats_from_flat's loop
        flags.append(",".join([*f, "width1"] if w < 2 else f))
    bad = (widths <= 0) | np.asarray(empty, dtype=bool)
    ends = offsets.tolist()
    return _Layout(
        widths,
        np.minimum(offsets[:-1], max(size - 1, 0)),
        bad,
        bool(bad.any()),
        flags,
        [s.group for s in series],
        [s.gate for s in series],
        widths > 1,
        widths - 1,
        list(itertools.pairwise(ends)),
        np.flatnonzero(empty).tolist(),
    )


def _stats_from_flat(
    series: Sequence[Series],
    n: np.ndarray,
    offsets: np.ndarray,
    empty: np.ndarray,
    layout: _Layout | None = None,
) -> GroupStats:
    lay = layout or _layout(series, offsets, empty)
    widths = lay.widths
    k = len(series)
    cols: dict = {"group": list(lay.groups), "gate": list(lay.gates), "width": widths.copy()}
    if k == 0 or n.size == 0:
        for c in ("variance", "mean", "max", "min"):
            cols[c] = np.full(k, np.nan)
        cols["n_nonfinite"] = np.zeros(k, dtype=np.int64)
        cols["n_zero"] = np.zeros(k, dtype=np.int64)
        cols["flag"] = ["no_weights" if e else "" for e in empty]
        return GroupStats(series, cols, [np.zeros(0, np.float32) for _ in series])
    # reduceat misreads zero-width segments; widths are >= 1 for real groups, guard anyway
    starts_c = lay.starts
    with np.errstate(all="ignore"):
        mean = np.add.reduceat(n, starts_c) / widths
        mx = np.maximum.reduceat(n, starts_c)
        mn = np.minimum.reduceat(n, starts_c)
        x = n / np.repeat(mean, widths)
        xm = np.add.reduceat(x, starts_c) / widths
        ss = np.add.reduceat((x - np.repeat(xm, widths)) ** 2, starts_c)
        var = np.where(lay.multi, ss / lay.dof, np.nan)
        n32 = n.astype(np.float32)  # stored vectors are float32; the statistics used float64
    # the counts are taken only when there is something to count (a clean snapshot: zeros)
    finite = np.isfinite(n)
    clean_finite = bool(finite.all())
    no_zero = bool(n.all())
    if clean_finite:
        nonfinite = np.zeros(k, dtype=np.int64)
    else:
        nonfinite = np.add.reduceat((~finite).astype(np.int64), starts_c)
    zero = (
        np.zeros(k, dtype=np.int64)
        if no_zero
        else np.add.reduceat(n == 0, starts_c, dtype=np.int64)
    )
    if lay.any_bad:
        bad = lay.bad
        for arr in (mean, mx, mn, var):
            arr[bad] = np.nan
        nonfinite[bad] = 0
        zero[bad] = 0
    if (clean_finite or not nonfinite.any()) and (no_zero or not zero.any()):
        flags = list(lay.static_flags)
    else:
        flags = []
        for i in range(k):
            f = []
            if empty[i]:
                f.append("no_weights")
            else:
                if nonfinite[i]:
                    f.append("nonfinite")
                if zero[i] == widths[i]:
                    f.append("all_zero")
                elif zero[i]:
                    f.append("zero")
            if widths[i] < 2:
                f.append("width1")
            flags.append(",".join(f))
    cols.update(
        variance=var, mean=mean, max=mx, min=mn, n_nonfinite=nonfinite, n_zero=zero, flag=flags
    )
    norms = [n32[a:b] for a, b in lay.bounds]
    for j in lay.empty_at:
        norms[j] = np.full(widths[j], np.nan, dtype=np.float32)
    return GroupStats(series, cols, norms)


def channel_norms(
    model: nn.Module, groups: Sequence[ChannelGroup], mode: Mode = "product"
) -> dict[str, np.ndarray]:
    """Per-channel norms of each group, as float32 NumPy arrays keyed by group name."""
    plan = NormPlan(model, groups, mode, gates=False)
    st = plan.stats()
    return {s.group: v for s, v in zip(st.series, st.norms)}


def group_stats(
    model: nn.Module, groups: Sequence[ChannelGroup], mode: Mode = "product", *, gates: bool = True
) -> pd.DataFrame:
    """One row of statistics per group (and per gate): ``STAT_COLUMNS``."""
    return NormPlan(model, groups, mode, gates=gates).stats().table
