"""Candidate groups around an attention or gated block, for where the dependency walk failed.

Contract: these functions only *propose* groups, from the layers around a block (producers read
by one consumer through parameter-free ops) and the head sizes the modules declare; the finder
keeps a candidate only if the permutation check (:mod:`.verify`) passes. Kinds proposed: every
channel within heads (fused q/k/v at their offsets), whole key/value heads (rotary embeddings,
grouped-query attention), query heads (multi-query), heads of a projection whose rows are
grouped by head (GPT-NeoX), channels shared by heads that cannot move (BLOOM's ALiBi), and a
producer read as ``k`` features after a reshape (Swin's patch merging, pixel shuffle).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from torch import nn

from widthwise.groups.tracing import TPGraph, TPNode, _is_conv1d
from widthwise.groups.types import ChannelGroup, Member

if TYPE_CHECKING:
    from typing_extensions import TypeIs

    from widthwise.groups.tracing import WeightLayer

#: a candidate group and its key (a head size, a kind of candidate; see ``_Finder._search``)
Candidate = tuple[Hashable, ChannelGroup]
#: (consumer name, consumer, [(producer name, producer)], [(LayerNorm name, LayerNorm)])
ProjectionSpec = tuple[
    str, "WeightLayer", list[tuple[str, "WeightLayer"]], list[tuple[str, nn.LayerNorm]]
]

_HEAD_DIM_ATTRS = ("head_dim", "head_size", "attention_head_size", "d_kv", "key_value_proj_dim")


_HEADS_ATTRS = ("num_heads", "num_attention_heads", "n_head", "n_heads", "heads")
#: the key of candidates whose heads stay in place (:func:`_shared_channel_candidates`)
_SHARED = "shared channels"


def _channel_size(module: object, is_in: bool) -> int | None:
    """Entries along the channel dimension a member of ``module`` would index."""
    if _is_conv1d(module):
        return module.weight.shape[0 if is_in else 1]
    if isinstance(module, nn.Linear):
        return module.in_features if is_in else module.out_features
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups == 1:
        return module.in_channels if is_in else module.out_channels
    w = getattr(module, "weight", None)
    if isinstance(module, (nn.LayerNorm, nn.modules.batchnorm._NormBase, nn.GroupNorm)):
        return w.shape[0] if w is not None and w.ndim == 1 else None
    return None


def _is_weight_layer(module: object) -> TypeIs[WeightLayer]:
    return isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) or _is_conv1d(module)


def _out_width(m: WeightLayer) -> int:
    if _is_conv1d(m):
        return m.weight.shape[1]
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def _in_width(m: WeightLayer) -> int:
    if _is_conv1d(m):
        return m.weight.shape[0]
    return m.in_features if isinstance(m, nn.Linear) else m.in_channels


def _rows(name: str, m: WeightLayer, offset: int, repeat: int, gate: str | None) -> list[Member]:
    """The members that compute output channels [offset, ...) of a weight layer."""
    dim = 1 if _is_conv1d(m) or getattr(m, "transposed", False) else 0
    out = [Member(f"{name}.weight", dim, "producer", offset, repeat, gate)]
    if getattr(m, "bias", None) is not None:
        out.append(Member(f"{name}.bias", 0, "other", offset, repeat, gate))
    return out


def _cols(name: str, m: WeightLayer, repeat: int) -> Member:
    dim = 0 if _is_conv1d(m) or getattr(m, "transposed", False) else 1
    return Member(f"{name}.weight", dim, "consumer", 0, repeat)


def _projection_specs(
    dg: TPGraph, retry: set[nn.Module], module_name: dict[nn.Module, str]
) -> list[ProjectionSpec]:
    """For each layer in ``retry``: the weight layers that read it through parameter-free ops
    (reshape, rotary embedding, q @ k, softmax, ...), and for each such reader o, every weight
    layer that o reads that way. Walks Torch-Pruning's node graph, not its index maps."""

    norms: list[nn.LayerNorm] = []  # passed on the way (patch merging normalises 4C features)

    def reach(node: TPNode, forward: bool, width: int, limit: int = 400) -> list[WeightLayer]:
        found: list[WeightLayer] = []
        seen, stack = {node}, [node]
        while stack and len(seen) < limit:
            n = stack.pop()
            for nxt in n.outputs if forward else n.inputs:
                if nxt in seen:
                    continue
                seen.add(nxt)
                mod = nxt.module
                if _per_head_depthwise(mod, width):
                    stack.append(nxt)  # fixed under whole heads: the check decides
                elif _is_weight_layer(mod) and mod in module_name:
                    found.append(mod)
                elif (mod not in module_name and not isinstance(mod, nn.Parameter)) or isinstance(
                    mod, nn.LayerNorm
                ):
                    stack.append(nxt)  # a parameter-free op (Torch-Pruning's op wrappers)
                    if forward and isinstance(mod, nn.LayerNorm) and mod in module_name:
                        norms.append(mod)
        return found

    specs: dict[
        WeightLayer, tuple[list[tuple[str, WeightLayer]], list[tuple[str, nn.LayerNorm]]]
    ] = {}
    order = {n: i for i, n in enumerate(module_name.values())}
    for root in sorted(
        retry, key=lambda m: order.get(module_name[m], -1) if m in module_name else -1
    ):
        node = dg.module2node.get(root)
        if node is None or not _is_weight_layer(root):
            continue
        norms.clear()
        readers = reach(node, True, _out_width(root))
        passed = [(module_name[n], n) for n in dict.fromkeys(norms)]
        for o in readers:
            if o in specs or getattr(o, "groups", 1) != 1:
                continue
            prods = [
                p
                for p in reach(dg.module2node[o], False, _out_width(root))
                if getattr(p, "groups", 1) == 1
            ]
            if root in prods:
                ps = sorted({module_name[p]: p for p in prods}.items(), key=lambda x: order[x[0]])
                specs[o] = (ps, passed if len(readers) == 1 else [])
    return [(module_name[o], o, ps, ns) for o, (ps, ns) in specs.items()]


def _per_head_depthwise(module: object, width: int) -> bool:
    """A depthwise convolution over fewer channels than ``width``, a divisor of it: applied to
    each head's ``head_dim`` channels alike (MViT-v2's pooling convs on ``B * heads, hd, H,
    W``), so a layer read through it is read head by head; whole heads leave it fixed."""
    if not isinstance(module, nn.modules.conv._ConvNd):
        return False
    c = module.in_channels
    return module.groups == c == module.out_channels and 1 < c < width and width % c == 0


def _placed_candidates(
    oname: str,
    o: WeightLayer,
    prods: list[tuple[str, WeightLayer]],
    norms: list[tuple[str, nn.LayerNorm]],
    canonical: dict[str, str],
) -> list[Candidate]:
    """One producer of ``w`` channels read by ``o`` as ``k*w`` features after a reshape
    (Swin's patch merging, a channels-last flatten): each channel is ``k`` blocks apart or ``k``
    consecutive features in ``o``'s columns and in any LayerNorm on the way."""
    if len(prods) != 1:
        return []
    (name, p), din = prods[0], _in_width(o)
    w = _out_width(p)
    if din % w or din == w:
        return []
    k = din // w
    out: list[Candidate] = []
    for key, places in (("blocks", [(j * w, 1) for j in range(k)]), ("repeat", [(0, k)])):
        members = _rows(name, p, 0, 1, None)
        for off, rep in places:
            members.append(replace(_cols(oname, o, rep), offset=off))
            for n, ln in norms:
                if ln.weight is not None and ln.weight.shape == (din,):
                    members += [Member(f"{n}.{q}", 0, "norm", off, rep) for q in ("weight", "bias")]
        members = [replace(m, param=canonical.get(m.param, m.param)) for m in members]
        kind = "conv" if isinstance(p, nn.modules.conv._ConvNd) else "linear"
        note = f"each channel is {k} features of '{oname}' ({key})"
        g = ChannelGroup(name, w, tuple(dict.fromkeys(members)), (name, oname), kind, 1, (note,))
        out.append((("placed", key), g))
    return out


def _head_dims(owners: Sequence[nn.Module], din: int, kv: int) -> list[int]:
    """Head sizes to try: declared on the attention module (or its config), else divisors."""
    hd = _declared_head_dim(owners, din, kv)
    return [hd] if hd else [d for d in range(1, kv + 1) if kv % d == 0 and din % d == 0]


def _declared_head_dim(owners: Sequence[nn.Module], din: int, kv: int) -> int | None:
    """The head size an attention module (or its config) declares, if it fits the widths."""
    for m in owners:
        for src in (m, getattr(m, "config", None)):
            if src is None:
                continue
            for a in _HEAD_DIM_ATTRS:
                v = getattr(src, a, None)
                if isinstance(v, int) and v > 0 and kv % v == 0 and din % v == 0:
                    return v
            for a in _HEADS_ATTRS:
                v = getattr(src, a, None)
                if isinstance(v, int) and v > 0 and din % v == 0 and kv % (din // v) == 0:
                    return din // v
    return None


def _projection_candidates(
    oname: str,
    o: WeightLayer,
    prods: list[tuple[str, WeightLayer]],
    canonical: dict[str, str],
    owners: Sequence[nn.Module | None],
    alone: bool = False,
) -> list[Candidate]:
    """Candidate groups for producers ``prods`` read by ``o`` (see ``_Finder._projections``);
    ``alone``: also for one producer read whole (the others were head tables or scores)."""
    din = _in_width(o)
    widths = [_out_width(p) for _, p in prods]
    parts: list[
        tuple[str, WeightLayer, int, int]
    ] = []  # (name, module, offset, width) per gate block
    gqa: list[tuple[str, WeightLayer, int, int]] = []
    for (name, p), w in zip(prods, widths):
        if len(prods) == 1 and w > din and (w - din) % 2 == 0 and din % ((w - din) // 2) == 0:
            kvw = (w - din) // 2  # fused [q | k | v] with fewer key/value heads (Falcon, Phi-3)
            gqa = [(name, p, 0, din), (name, p, din, kvw), (name, p, din + kvw, kvw)]
        if w <= din and din % w == 0:  # q, k, v (k/v narrower with grouped key/value heads)
            parts.append((name, p, 0, w))
        elif w % din == 0:  # a fused projection: qkv, kv, gate/up
            parts += [(name, p, k * din, din) for k in range(w // din)]
        elif not gqa:
            return []
    # 2*din rows read as din columns are [q | k | v] with half-width k/v (Phi-3 with half the
    # key/value heads) as much as [gate | up]: both are proposed, the check decides
    # one block read whole is the walk's group, unless the walk failed on a block beside it
    many = len(parts) > 1 or (alone and len(parts) == 1)
    cands = _layout_candidates(oname, o, prods, parts, canonical, owners) if many else []
    if gqa and gqa != parts:
        extra = _layout_candidates(oname, o, prods, gqa, canonical, owners)
        cands += [(("q|k|v", key), g) for key, g in extra]
    # channels shared by heads that stay in place are the last resort: coarser than the rest
    return sorted(cands, key=lambda c: _SHARED in str(c[0]))


def _layout_candidates(
    oname: str,
    o: WeightLayer,
    prods: list[tuple[str, WeightLayer]],
    parts: list[tuple[str, WeightLayer, int, int]],
    canonical: dict[str, str],
    owners: Sequence[nn.Module | None],
) -> list[Candidate]:
    """Candidates for one reading of the producers' rows as gate blocks ``parts``."""
    din = _in_width(o)
    widths = [_out_width(p) for _, p in prods]
    # gate labels only where the order is known: the blocks of one fused q/k/v projection
    gates = ("q", "k", "v") if len(parts) == 3 and len(prods) == 1 else (None,) * len(parts)
    # blocks of one producer that are not q/k/v (SwiGLU's gate * up, a pixel shuffle's
    # sub-pixels): named and kinded after the producer, not attention
    gated = len(prods) == 1 and len(parts) != 3
    kv = min(w for *_, w in parts)
    pnames = list(dict(prods))
    label = _common_prefix(pnames) if len(pnames) > 1 else pnames[0].rpartition(".")[0]
    label = label or "+".join(pnames)
    layers = tuple(dict.fromkeys([*pnames, oname]))
    dims = _head_dims([m for m in owners if m is not None], din, kv)  # ascending

    def group(width: int, members: list[Member], divisor: int, note: str) -> ChannelGroup:
        members = [replace(m, param=canonical.get(m.param, m.param)) for m in members]
        plain = gated and divisor == 1
        kind = "conv" if isinstance(prods[0][1], nn.modules.conv._ConvNd) else "linear"
        return ChannelGroup(
            name=pnames[0] if plain else f"{label} (attention)",
            width=width,
            members=tuple(dict.fromkeys(members)),
            layers=layers,
            kind=kind if plain else "attention",
            divisor=divisor,
            notes=(note,),
        )

    cands: list[Candidate] = []
    if all(w == din for *_, w in parts):
        members = [m for (n, p, off, _), g in zip(parts, gates) for m in _rows(n, p, off, 1, g)]
        members.append(_cols(oname, o, 1))
        for hd in [d for d in [*dims[::-1], din] if d > 1]:  # a block of 1 permutes nothing
            note = "channels permute within each head" if hd < din else "channels permute freely"
            cands.append((("channels", hd), group(din, members, din // hd, note)))
    for hd in dims:
        heads = kv // hd
        if heads < 1 or (heads == 1 and din == kv):
            continue
        members = [
            m for (n, p, off, w), g in zip(parts, gates) for m in _rows(n, p, off, w // heads, g)
        ]
        members.append(_cols(oname, o, din // heads))
        note = f"one channel is one key/value head ({din // heads} columns of '{oname}')"
        if heads >= 2:
            cands.append((("heads", hd), group(heads, members, 1, note)))
        if heads >= 2 and din // heads >= 2:
            # heads merged back dim-major (NesT: ``(attn @ v).permute(0, 2, 3, 4, 1)``
            # .reshape(B, T, N, C)``): dim j of head h is column j*heads + h of o
            members[-1:] = [
                replace(_cols(oname, o, 1), offset=j * heads) for j in range(din // heads)
            ]
            note = f"one channel is one head (every {heads}th column of '{oname}')"
            cands.append((("dim-major heads", hd), group(heads, members, 1, note)))
        elif din // hd >= 2:  # one key/value head: the query heads permute alone
            members = [m for n, p, off, w in parts if w == din for m in _rows(n, p, off, hd, None)]
            members.append(_cols(oname, o, hd))
            note = f"one channel is one query head ({hd} columns of '{oname}')"
            cands.append((("query heads", hd), group(din // hd, members, 1, note)))
    if len(prods) == 1 and len(parts) > 1:  # rows grouped by head: [q_h, k_h, v_h] (GPT-NeoX)
        (name, p), w = prods[0], widths[0]
        for hd in dims:
            heads = din // hd
            if heads >= 2 and w % heads == 0:
                members = [*_rows(name, p, 0, w // heads, None), _cols(oname, o, hd)]
                note = f"one channel is one head ({w // heads} rows of '{name}')"
                cands.append((("interleaved heads", hd), group(heads, members, 1, note)))
        cands += _shared_channel_candidates(oname, o, name, p, dims, group)
    for hd in dims:  # heads that cannot move, gate blocks [q | k | v] (Falcon with ALiBi)
        if hd < 2 or din // hd < 2 or any(w % hd for *_, w in parts):
            continue
        members = [
            m
            for (n, p, off, w), g in zip(parts, gates)
            for h in range(w // hd)
            for m in _rows(n, p, off + h * hd, 1, g)
        ]
        members += [replace(_cols(oname, o, 1), offset=h * hd) for h in range(din // hd)]
        note = f"one channel is one channel of each of the {din // hd} heads (heads stay in place)"
        cands.append(((_SHARED, "blocks", hd), group(hd, members, 1, note)))
    return cands


def _shared_channel_candidates(
    oname: str,
    o: WeightLayer,
    name: str,
    p: WeightLayer,
    dims: list[int],
    group: Callable[[int, list[Member], int, str], ChannelGroup],
) -> list[Candidate]:
    """Rows grouped by head ``[q_h, k_h, v_h]`` whose heads cannot move (BLOOM's ALiBi slopes
    are fixed per head position): channel ``j`` is entry ``j`` of every gate block of every
    head, and column ``h*hd + j`` of ``o`` for every head ``h``; the same permutation in every
    head. Channels within one head could also permute independently, but the rows of channel
    ``j`` are not one block per channel then (see :class:`.types.Member`)."""
    din, w = _in_width(o), _out_width(p)
    out: list[Candidate] = []
    for hd in dims:
        heads = din // hd
        if hd < 2 or heads < 2 or w % heads or (w // heads) % hd:
            continue
        per = w // heads  # rows of one head: w // heads // hd gate blocks of hd
        members = [
            m
            for h in range(heads)
            for g in range(0, per, hd)
            for m in _rows(name, p, h * per + g, 1, None)
        ]
        members += [replace(_cols(oname, o, 1), offset=h * hd) for h in range(heads)]
        note = f"one channel is one channel of each of the {heads} heads (heads stay in place)"
        out.append(((_SHARED, hd), group(hd, members, 1, note)))
    return out


def _head_tables(
    o: WeightLayer, prods: list[tuple[str, WeightLayer]], owners: Sequence[nn.Module]
) -> list[tuple[str, WeightLayer]]:
    """Producers with one output per attention head (Swin-V2's continuous position bias MLP):
    added to the attention scores, not read as channels by ``o``. The candidates are also
    proposed without them; the permutation check decides."""
    din = _in_width(o)
    # attention weights made by a layer (VOLO's outlook attention), multiplying the values:
    # a width neither a multiple nor a divisor of the consumer's cannot be read as its channels
    scores = [(n, p) for n, p in prods if _out_width(p) % din and din % _out_width(p)]
    if len(prods) < 2 or len(scores) == len(prods):
        scores = []
    hd = _declared_head_dim(owners, din, din)
    if not hd or hd == din:
        return scores
    return scores + [
        (n, p) for n, p in prods if _out_width(p) == din // hd and (n, p) not in scores
    ]


def _is_head_table(module: object, owners: Sequence[nn.Module]) -> bool:
    """A Linear with one output per attention head of the module around it (Swin-V2's
    continuous position bias MLP, added to the attention scores): its width is the head
    count, fixed like an output; a walk from it reaches the heads' q/k/v rows only through
    the score products, so it is not walked."""
    if not isinstance(module, nn.Linear):
        return False
    for owner in owners[:3]:  # the attention module: the table's parent or grandparent
        heads = next((getattr(owner, a) for a in _HEADS_ATTRS if hasattr(owner, a)), None)
        if isinstance(heads, int):
            return module.out_features == heads and module.in_features > heads
    return False


def _common_prefix(names: list[str]) -> str:
    """The dotted module path all ``names`` share ("" if none)."""
    parts = [n.split(".") for n in names]
    common: list[str] = []
    for segs in zip(*parts):
        if len(set(segs)) != 1:
            break
        common.append(segs[0])
    return ".".join(common)


def _head_params(
    prods: list[tuple[str, WeightLayer]], din: int, params: dict[str, nn.Parameter]
) -> list[tuple[str, tuple[int, ...]]]:
    """Raw parameters held by the module that holds the producers, not by a layer, shaped like
    the heads: ``(din,)`` (DeBERTa's ``q_bias``/``v_bias`` beside a fused projection without
    bias) or ``(..., heads, head_dim)`` with ``heads * head_dim == din`` (Funnel's and XLNet's
    relative-position biases, segment embeddings and position kernel), or one entry per query
    head, ``(heads,)`` with ``heads`` dividing ``din`` (the attention sinks of GPT-OSS-like
    attention, Beam's per-head gate bias). (name, shape) each."""
    owners = {n.rpartition(".")[0] for n, _ in prods}
    return [
        (n, tuple(p.shape))
        for n, p in params.items()
        if n.rpartition(".")[0] in owners
        and (
            p.shape == (din,)
            or (p.ndim == 1 and 1 < p.shape[0] < din and din % p.shape[0] == 0)
            or (p.ndim >= 2 and p.shape[-2] * p.shape[-1] == din > p.shape[-1])
        )
    ]


def _with_head_params(
    cands: list[Candidate], extras: list[tuple[str, tuple[int, ...]]], din: int
) -> list[Candidate]:
    """Each candidate with ``extras`` (:func:`_head_params`), ahead of the candidate without
    them; the check decides. A ``(din,)`` bias added to q or v lies in the space the output
    projection reads, so it is indexed like the consumer's columns; a ``(..., heads, hd)``
    tensor joins whole-head candidates along its head dim and shared-channel candidates along
    its last dim (channels permuted independently within each head are not expressible); a
    ``(heads,)`` vector joins candidates that move whole heads, one entry per ``din // heads``
    consumer columns, and is left alone by those that keep the heads in place."""
    if not extras:
        return cands
    out: list[Candidate] = []
    for key, g in cands:
        cols = [m for m in g.members if m.role == "consumer"]
        more: list[Member] = []
        for n, shape in extras:
            if shape == (din,):
                more += [Member(n, 0, "other", m.offset, m.repeat) for m in cols]
                continue
            if len(shape) == 1:  # one entry per query head
                hd = din // shape[0]
                if len({m.repeat for m in cols}) == 1 and all(
                    m.offset == 0 and m.repeat % hd == 0 for m in cols
                ):
                    more += [Member(n, 0, "other", 0, cols[0].repeat // hd)]
                    continue
                break
            heads, hd = shape[-2:]
            if g.width == heads and all((m.offset, m.repeat) == (0, hd) for m in cols):
                more.append(Member(n, len(shape) - 2, "other"))
            elif g.width == hd and {(m.offset, m.repeat) for m in cols} == {
                (h * hd, 1) for h in range(heads)
            }:
                more.append(Member(n, len(shape) - 1, "other"))
            else:
                break
        else:
            out.append((("head params", key), replace(g, members=(*g.members, *more))))
    return out + cands


def _projection_norms(
    prods: list[tuple[str, WeightLayer]], modules: dict[str, nn.Module]
) -> list[tuple[str, int]]:
    """1-D parameters of the norm layers beside the producers (other children of their parent)
    whose size is a producer's output width: a norm over a whole projection (OLMoE's and
    OLMo-2's ``q_norm``/``k_norm``). (name, size) each."""
    parents = {n.rpartition(".")[0] for n, _ in prods}
    widths = {_out_width(p) for _, p in prods}
    out = []
    for mname, m in modules.items():
        if mname.rpartition(".")[0] not in parents or "norm" not in type(m).__name__.lower():
            continue
        for pname, p in m.named_parameters(recurse=False):
            if p.ndim == 1 and p.shape[0] in widths:
                out.append((f"{mname}.{pname}", p.shape[0]))
    return out


def _with_projection_norms(
    cands: list[Candidate], prods: list[tuple[str, WeightLayer]], norms: list[tuple[str, int]]
) -> list[Candidate]:
    """Each candidate with ``norms`` (:func:`_projection_norms`) indexed like the rows of the
    producers of their size, ahead of the candidate without them; the check decides."""
    if not norms:
        return cands
    width_of = {f"{n}.weight": _out_width(p) for n, p in prods}
    out: list[Candidate] = []
    for key, g in cands:
        more: list[Member] = []
        for n, size in norms:
            rows = [m for m in g.members if m.role == "producer" and width_of.get(m.param) == size]
            more += dict.fromkeys(Member(n, 0, "norm", m.offset, m.repeat) for m in rows)
        if {m.param for m in more} == {n for n, _ in norms}:
            out.append((("projection norms", key), replace(g, members=(*g.members, *more))))
    return out + cands


def _per_head_norms(
    prods: list[tuple[str, WeightLayer]],
    modules: dict[str, nn.Module],
    owners: Sequence[nn.Module | None],
) -> bool:
    """A norm beside the producers (a child of their parent) whose 1-D weight has the head size
    the attention declares, smaller than the producers' widths: a per-head norm shared by all
    heads (Qwen3's, Gemma-3's and Gemma-4's ``q_norm``/``k_norm`` over ``head_dim``), under
    which channels cannot permute within heads but whole heads can."""
    # the producers' parent and grandparent (Gemma-4 wraps each Linear in a module)
    parents = {n.rpartition(".")[0] for n, _ in prods}
    parents |= {n.rpartition(".")[0] for n in parents}
    widths = [_out_width(p) for _, p in prods]
    din = min(widths)
    hd = _declared_head_dim([m for m in owners if m is not None], din, din)
    if not hd or hd == din:
        return False
    for mname, m in modules.items():
        if mname.rpartition(".")[0] not in parents or "norm" not in type(m).__name__.lower():
            continue
        w = getattr(m, "weight", None)
        if isinstance(w, nn.Parameter) and w.shape == (hd,):
            return True
    return False


def _whole_heads_first(cands: list[Candidate]) -> list[Candidate]:
    """The whole-head candidates ahead of the rest (stable): on a large model each candidate
    that fails costs a forward, and per-head norms make every within-head candidate fail."""

    def kinds(key: Hashable) -> list[Hashable]:
        return [k for part in key for k in kinds(part)] if isinstance(key, tuple) else [key]

    return sorted(cands, key=lambda c: "heads" not in kinds(c[0]))


def _with_head_modules(
    cands: list[Candidate],
    oname: str,
    prods: list[tuple[str, WeightLayer]],
    modules: dict[str, nn.Module],
) -> list[Candidate]:
    """Each candidate whose channel ``j`` is channel ``j`` of every head (heads in place, or one
    head) with what the attention module applies to every head alike over ``head_dim``, just
    ahead of that candidate (the order of kinds kept: whole heads first); the check decides.
    MViT-v2's pooled attention: depthwise pooling convs and LayerNorms over ``head_dim``
    (rows), relative-position tables ``(positions, head_dim)`` (columns), one head in its
    first stage. Only the children of the attention module (the one holding the producers
    and ``oname``) are looked at."""
    owner = _common_prefix([*(n for n, _ in prods), oname])
    if owner not in modules:
        return cands
    parents = {owner}
    out: list[Candidate] = []
    for key, g in cands:
        cols = [m for m in g.members if m.role == "consumer"]
        spans = {(m.offset, m.repeat) for m in cols}
        heads = len(spans)
        if not cols or spans != {(h * g.width, 1) for h in range(heads)}:
            out.append((key, g))
            continue
        more: list[Member] = []
        for mname, m in modules.items():
            owner, _, _ = mname.rpartition(".")
            if owner not in parents or not mname:
                continue
            conv = isinstance(m, nn.modules.conv._ConvNd)
            if conv and m.groups == m.in_channels == m.out_channels == g.width:
                more.append(Member(f"{mname}.weight", 0, "producer"))
                if m.bias is not None:
                    more.append(Member(f"{mname}.bias", 0, "other"))
            elif not conv and "norm" in type(m).__name__.lower():
                for pname, p in m.named_parameters(recurse=False):
                    if p.shape == (g.width,):
                        more.append(Member(f"{mname}.{pname}", 0, "norm"))
        for pname, p in (
            (f"{o}.{n}" if o else n, p)
            for o in parents
            if o in modules
            for n, p in modules[o].named_parameters(recurse=False)
        ):
            if p.ndim == 2 and p.shape[-1] == g.width:
                more.append(Member(pname, 1, "other"))
        if more:
            out.append((("head modules", key), replace(g, members=(*g.members, *more))))
        out.append((key, g))
    return out
