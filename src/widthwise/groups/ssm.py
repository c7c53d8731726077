"""Candidate groups in a Mamba-2 mixer (state space duality), for where the dependency walk failed.

Layout (Mamba-2, and Hugging Face's Mamba-2, Bamba, FalconH1, NemotronH, Zamba2 and
GraniteMoeHybrid mixers): one ``in_proj`` makes ``[z | x | B | C | dt]`` with ``x`` and the gate
``z`` of ``inner = heads * head_dim`` channels, ``B`` and ``C`` of ``groups * state`` each and
``dt`` one per head; a causal depthwise ``conv1d`` over ``x | B | C``; per-head ``dt_bias``,
``A_log`` and ``D``; the scan, whose head ``h`` reads the ``B``/``C`` of group
``h // (heads // groups)``; a gated norm (over ``inner // groups`` channels at a time in the
grouped variants); ``out_proj``. Two symmetries hold:

* whole heads (their ``head_dim`` channels of ``z``, ``x``, the conv, the norm and
  ``out_proj``'s columns, their ``dt`` row, ``dt_bias``, ``A_log`` and ``D``), within the heads
  of one ``B``/``C`` group: a group of ``heads`` channels with divisor ``groups``;
* the state: entry ``n`` of ``B`` and of ``C`` in every group (rows of ``in_proj`` and the
  conv), each group's entries permuted alone: ``groups * state`` channels, divisor ``groups``.

Channels within a head permute too (alike in ``x``, ``z``, the norm and ``out_proj``), but
that group overlaps the whole-head one; whole heads are proposed since they also carry the
per-head parameters. Also here, for other state-space and linear-attention mixers: whole heads
counted by per-head vectors beside separate projections (Gated DeltaNet), the depthwise conv
over concatenated projections moved with their rows, and the state entries of a projection
split into blocks sharing a per-entry vector (EfficientViM's HSM-SSD). As everywhere in
:mod:`.candidates`, these are only proposed: the finder keeps a candidate only if the
permutation check passes.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import replace

from torch import nn

from widthwise.groups.types import ChannelGroup, Member

Candidate = tuple[Hashable, ChannelGroup]


def mamba_candidates(
    oname: str,
    o: object,
    prods: Sequence[tuple[str, object]],
    modules: dict[str, nn.Module],
    canonical: dict[str, str],
) -> list[list[Candidate]]:
    """Options for a Mamba-2 mixer whose ``in_proj`` is the one producer in ``prods`` and whose
    ``out_proj`` is ``o``: ``[heads options, state options]``, or ``[]`` when the layers do not
    have the layout (see the module docstring)."""
    if len(prods) != 1:
        return []
    pname, p = prods[0]
    if not isinstance(o, nn.Linear) or not isinstance(p, nn.Linear):
        return []
    parent = pname.rpartition(".")[0]
    owner = modules.get(parent)
    if owner is None:
        return []
    inner, width = int(o.in_features), int(p.out_features)
    children = [(f"{parent}.{n}" if parent else n, m) for n, m in owner.named_children()]
    own = {f"{parent}.{n}" if parent else n: t for n, t in owner.named_parameters(recurse=False)}
    convs = [
        (n, m)
        for n, m in children
        if isinstance(m, nn.Conv1d)
        and m.groups == m.in_channels == m.out_channels > inner
        and (m.in_channels - inner) % 2 == 0
    ]
    if len(convs) != 1:
        return []
    cname, conv = convs[0]
    cw = int(conv.in_channels)
    heads = width - inner - cw
    if heads < 1 or inner % heads:
        return []
    hd, bc = inner // heads, (cw - inner) // 2
    per_head = [n for n, t in own.items() if t.shape == (heads,)]
    if not per_head:
        return []
    per_channel = [n for n, t in own.items() if t.shape == (inner,)]  # D with head_dim entries
    norms = [
        f"{n}.{q}"
        for n, m in children
        if "norm" in (n.rpartition(".")[2] + type(m).__name__).lower()
        for q, t in m.named_parameters(recurse=False)
        if t.shape == (inner,)
    ]
    declared = getattr(owner, "n_groups", getattr(owner, "ngroups", None))
    if isinstance(declared, int) and declared > 0:
        counts = [declared] if heads % declared == 0 and bc % declared == 0 else []
    else:
        counts = [g for g in range(1, heads + 1) if heads % g == 0 and bc % g == 0]

    def rows(name: str, layer: nn.Module, dim: int, offset: int, repeat: int) -> list[Member]:
        out = [Member(f"{name}.weight", dim, "producer", offset, repeat)]
        if getattr(layer, "bias", None) is not None:
            out.append(Member(f"{name}.bias", 0, "other", offset, repeat))
        return out

    def group(name: str, w: int, members: list[Member], divisor: int, note: str) -> ChannelGroup:
        ms = tuple(
            dict.fromkeys(replace(m, param=canonical.get(m.param, m.param)) for m in members)
        )
        layers = tuple(dict.fromkeys([pname, cname, oname]))
        return ChannelGroup(name, w, ms, layers, "attention", divisor, (note,))

    head_members = [
        *rows(pname, p, 0, 0, hd),  # z
        *rows(pname, p, 0, inner, hd),  # x
        *rows(pname, p, 0, inner + cw, 1),  # dt
        *rows(cname, conv, 0, 0, hd),
        *(Member(n, 0, "other") for n in per_head),
        *(Member(n, 0, "other", 0, hd) for n in per_channel),
        *(Member(n, 0, "norm", 0, hd) for n in norms),
        Member(f"{oname}.weight", 1, "consumer", 0, hd),
    ]
    state_members = [
        *rows(pname, p, 0, 2 * inner, 1),  # B
        *rows(pname, p, 0, 2 * inner + bc, 1),  # C
        *rows(cname, conv, 0, inner, 1),
        *rows(cname, conv, 0, inner + bc, 1),
    ]
    heads_opts: list[Candidate] = []
    state_opts: list[Candidate] = []
    for g in counts:
        within = f" within each of the {g} B/C groups" if g > 1 else ""
        note = f"one channel is one SSM head ({hd} columns of '{oname}'){within}"
        heads_opts.append(
            (("ssm heads", g), group(f"{parent} (heads)", heads, head_members, g, note))
        )
        note = f"one channel is one SSM state entry of B and C (rows of '{pname}'){within}"
        state_opts.append(
            (("ssm state", g), group(f"{parent} (state)", bc, state_members, g, note))
        )
    return [heads_opts, state_opts] if heads_opts else []


def with_concat_convs(
    cands: list[Candidate],
    prods: Sequence[tuple[str, object]],
    modules: dict[str, nn.Module],
    canonical: dict[str, str],
) -> list[Candidate]:
    """Each candidate with the rows of a causal depthwise convolution run over the producers'
    outputs concatenated in model order (Gated DeltaNet, OLMo-Hybrid's linear attention:
    ``conv1d(cat([q, k, v]))``): a conv beside the producers (a child of their parent) whose
    width is the sum of a run of consecutive producers' widths; each producer row member gets
    the conv rows at its offset in the concatenation. Ahead of the candidate without them; the
    check decides."""
    parents = {n.rpartition(".")[0] for n, _ in prods}
    convs = [
        (n, m)
        for n, m in modules.items()
        if n.rpartition(".")[0] in parents
        and isinstance(m, nn.Conv1d)
        and m.groups == m.in_channels == m.out_channels > 1
    ]
    widths = [
        int(p.out_features) if isinstance(p, nn.Linear) else -1 for _, p in prods
    ]  # Linears only
    runs: list[tuple[str, nn.Conv1d, dict[str, int]]] = []
    for cname, conv in convs:
        for i in range(len(prods)):
            acc, base = 0, {}
            for j in range(i, len(prods)):
                if widths[j] < 0:
                    break
                name = f"{prods[j][0]}.weight"
                base[canonical.get(name, name)] = acc
                acc += widths[j]
                if acc >= conv.in_channels:
                    break
            if acc == conv.in_channels and len(base) > 1:
                runs.append((cname, conv, base))
    if not runs:
        return cands
    out: list[Candidate] = []
    for key, g in cands:
        for k, (cname, conv, base) in enumerate(runs):
            more: list[Member] = []
            for m in g.members:
                if m.role == "producer" and m.dim == 0 and m.param in base:
                    off = base[m.param] + m.offset
                    more.append(Member(f"{cname}.weight", 0, "producer", off, m.repeat))
                    if conv.bias is not None:
                        more.append(Member(f"{cname}.bias", 0, "other", off, m.repeat))
            if more:
                more = [replace(m, param=canonical.get(m.param, m.param)) for m in more]
                out.append((("concat conv", k, key), replace(g, members=(*g.members, *more))))
    return out + cands


def param_head_candidates(
    oname: str,
    o: object,
    prods: Sequence[tuple[str, object]],
    params: dict[str, nn.Parameter],
    canonical: dict[str, str],
) -> list[Candidate]:
    """Whole heads counted by the per-head vectors beside the producers (Gated DeltaNet's
    ``A_log``/``dt_bias`` of ``(heads,)``), for producers whose widths are not multiples or
    divisors of the consumer's (q/k of ``heads * d_k`` rows, v and the gate of
    ``heads * d_v``): ``h`` heads, each producer's rows in ``width // h`` blocks, ``o``'s
    columns in ``din // h``, the vectors in ``heads // h`` entries; ``h`` from ``heads`` down
    (key heads shared by several value heads: ``h`` the key heads). The check decides."""
    if not isinstance(o, nn.Linear) or not all(isinstance(p, nn.Linear) for _, p in prods):
        return []
    din = int(o.in_features)
    widths = [int(p.out_features) for _, p in prods if isinstance(p, nn.Linear)]
    parents = {n.rpartition(".")[0] for n, _ in prods}
    vecs: dict[int, list[str]] = {}
    for n, t in params.items():
        if n.rpartition(".")[0] in parents and t.ndim == 1 and 1 < t.shape[0] < din:
            vecs.setdefault(int(t.shape[0]), []).append(n)
    out: list[Candidate] = []
    for heads, names in sorted(vecs.items(), reverse=True):
        for h in range(heads, 1, -1):
            if heads % h or din % h or any(w % h for w in widths):
                continue
            members: list[Member] = []
            for (name, p), w in zip(prods, widths):
                members.append(Member(f"{name}.weight", 0, "producer", 0, w // h))
                if getattr(p, "bias", None) is not None:
                    members.append(Member(f"{name}.bias", 0, "other", 0, w // h))
            members += [Member(n, 0, "other", 0, heads // h) for n in names]
            members.append(Member(f"{oname}.weight", 1, "consumer", 0, din // h))
            members = [replace(m, param=canonical.get(m.param, m.param)) for m in members]
            label = _common_prefix([n for n, _ in prods]) or prods[0][0]
            note = f"one channel is one head ({din // h} columns of '{oname}')"
            layers = tuple(dict.fromkeys([*(n for n, _ in prods), oname]))
            g = ChannelGroup(
                f"{label} (attention)", h, tuple(members), layers, "attention", 1, (note,)
            )
            out.append((("param heads", heads // h), g))
    return out


def _common_prefix(names: list[str]) -> str:
    parts = [n.split(".") for n in names]
    common: list[str] = []
    for segs in zip(*parts):
        if len(set(segs)) != 1:
            break
        common.append(segs[0])
    return ".".join(common)


def state_block_candidates(
    root: str, modules: dict[str, nn.Module], canonical: dict[str, str]
) -> list[Candidate]:
    """The state entries of a projection split into ``k`` equal blocks that share a per-entry
    vector (EfficientViM's HSM-SSD: ``BCdt_proj`` makes ``[B | C | dt]`` of ``state`` rows
    each, a depthwise conv runs over all three, ``dt + A`` with ``A`` of ``(state,)``): entry
    ``s`` is row ``j * state + s`` of every block of the projection and of the depthwise conv
    and entry ``s`` of the vector. Looked for in the module holding the projection's parent
    (or its parent); the check decides."""
    layer = modules.get(root)
    if not isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)) or getattr(layer, "groups", 1) != 1:
        return []
    width = int(layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels)
    out: list[Candidate] = []
    parent = root.rpartition(".")[0]
    for owner in dict.fromkeys([parent, parent.rpartition(".")[0]]):
        holder = modules.get(owner)
        if holder is None:
            continue
        pre = f"{owner}." if owner else ""
        convs = [
            (n, m)
            for n, m in modules.items()
            if n.startswith(pre)
            and n.count(".") - pre.count(".") <= 1
            and isinstance(m, nn.modules.conv._ConvNd)
            and m.groups == m.in_channels == m.out_channels == width
        ]
        if not convs:  # the depthwise conv over the blocks: what tells this layout apart
            continue
        for pname, t in holder.named_parameters(recurse=False):
            size = int(t.shape[0]) if t.ndim == 1 else 0
            if size < 2 or width % size or width == size:
                continue
            members = [Member(f"{pre}{pname}", 0, "other")]
            for j in range(width // size):
                members.append(Member(f"{root}.weight", 0, "producer", j * size))
                if getattr(layer, "bias", None) is not None:
                    members.append(Member(f"{root}.bias", 0, "other", j * size))
                for cname, conv in convs:
                    members.append(Member(f"{cname}.weight", 0, "producer", j * size))
                    if conv.bias is not None:
                        members.append(Member(f"{cname}.bias", 0, "other", j * size))
            members = [replace(m, param=canonical.get(m.param, m.param)) for m in members]
            note = f"one channel is entry s of each of the {width // size} blocks of '{root}'"
            layers = tuple(dict.fromkeys([root, *(n for n, _ in convs)]))
            g = ChannelGroup(
                f"{owner} (state)", size, tuple(members), layers, "attention", 1, (note,)
            )
            out.append((("state blocks", width // size), g))
    return out
