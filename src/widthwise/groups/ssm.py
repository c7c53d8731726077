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
per-head parameters. As everywhere in :mod:`.candidates`, these are only proposed: the finder
keeps a candidate only if the permutation check passes.
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
