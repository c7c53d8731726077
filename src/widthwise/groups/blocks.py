"""Blocks whose channel groups are written from their definition: the Mamba mixer, LeViT's
attention, BoTNet's relative-position attention, EfficientViT's lite multi-scale attention,
gMLP's spatial gating unit, iFormer's single-head modulation attention, CaiT's talking heads.

Contract: :func:`known_blocks` only *proposes* groups for modules it recognises by their
attributes; the finder verifies each one with the permutation check (:mod:`.verify`) like any
other group, and drops the groups its dependency walks built on the same tensor entries. A
block whose output is merged from heads (BoTNet) also names the producer rows that output's
channels are; the finder's walks stop at that merge and take those rows (within heads).

Why: a selective state-space mixer (Mamba, in Hugging Face ``transformers`` and in
``mamba_ssm``) reads its inner channels through a transpose, a ``chunk`` into the input and
the gate, a depthwise causal conv, a matrix product of ``dt_proj.weight`` with a slice of
``x_proj``'s output and an element-wise scan with ``A_log`` and ``D``: Torch-Pruning's index
maps cannot follow that, but the symmetry is plain from the definition::

    x, z = in_proj(h).chunk(2)               # inner channels I, twice
    x = act(conv1d(x))                       # depthwise: channel i stays i
    dt, B, C = x_proj(x).split([R, N, N])    # dt rank R, state size N
    dt = softplus(dt_proj.weight @ dt + dt_proj.bias)     # back to I
    y = scan(x, dt, A = -exp(A_log) [I, N], B, C) + D * x # per channel i, per state n
    out = out_proj(y * act(z))
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from widthwise.groups.types import ChannelGroup, Member


@dataclass(frozen=True)
class KnownBlock:
    """A recognised block: its groups and the layers they cover (walks from these are
    replaced by the groups)."""

    name: str
    groups: tuple[ChannelGroup, ...]
    layers: tuple[str, ...]
    #: the block's output, whose channels are rows of a producer the walks cannot reach through
    #: the heads (BoTNet's ``attn @ v`` merged back to ``B, C, H, W``): (the producer module,
    #: the rows of output channel 0, the head count); the walks stop at that merge and take
    #: these rows, permuted within heads
    values: tuple[nn.Module, Member, int] | None = None
    #: where the merged output's channel ``h * d + j`` is no row offset of the producer
    #: (HaloAttn's ``kv`` rows ``[k | v]`` per head; LambdaLayer's one ``v`` for all heads):
    #: (``d``, the producer members of dim ``j`` of every head); the walk from the merge is
    #: then folded onto the ``d`` dims, its members repeated for every head
    tiled: tuple[int, tuple[Member, ...]] | None = None


def known_blocks(model: nn.Module) -> list[KnownBlock]:
    """Every Mamba mixer, LeViT attention, BoTNet-style relative-position attention and
    EfficientViT lite multi-scale linear attention in ``model`` (recognised by their
    attributes), with their groups."""
    out = []
    for name, module in model.named_modules():
        block = (
            _mamba_mixer(name, module)
            or _levit_attention(name, module)
            or _rel_pos_attention(name, module)
            or _lite_mla(name, module)
            or _single_head_keys(name, module)
            or _conv_head_keys(name, module)
            or _spatial_gate(name, module)
            or _gated_single_head(name, module)
            or _talking_heads(name, module)
            or _halo_attention(name, module)
            or _lambda_layer(name, module)
        )
        if block is not None:
            out.append(block)
    return out + _factor_attention(model)


def _mamba_mixer(name: str, m: nn.Module) -> KnownBlock | None:
    in_proj, x_proj, dt_proj, out_proj = (
        getattr(m, a, None) for a in ("in_proj", "x_proj", "dt_proj", "out_proj")
    )
    conv, a_log, d = getattr(m, "conv1d", None), getattr(m, "A_log", None), getattr(m, "D", None)
    if not (
        isinstance(in_proj, nn.Linear)
        and isinstance(x_proj, nn.Linear)
        and isinstance(dt_proj, nn.Linear)
        and isinstance(out_proj, nn.Linear)
        and isinstance(conv, nn.Conv1d)
        and isinstance(a_log, nn.Parameter)
        and isinstance(d, nn.Parameter)
        and a_log.ndim == 2
        and d.ndim == 1
    ):
        return None
    inner, state = conv.out_channels, a_log.shape[1]
    rank = dt_proj.weight.shape[1]
    shapes_fit = (
        conv.groups == conv.in_channels == inner
        and in_proj.weight.shape[0] == 2 * inner
        and x_proj.weight.shape == (rank + 2 * state, inner)
        and dt_proj.weight.shape[0] == inner
        and tuple(a_log.shape[:1]) == tuple(d.shape) == (inner,)
        and out_proj.weight.shape[1] == inner
    )
    if not shapes_fit:
        return None
    p = f"{name}." if name else ""

    def rows(layer: str, mod: nn.Module, offset: int = 0) -> list[Member]:
        out = [Member(f"{p}{layer}.weight", 0, "producer", offset)]
        if getattr(mod, "bias", None) is not None:
            out.append(Member(f"{p}{layer}.bias", 0, "other", offset))
        return out

    inner_members = [
        *rows("in_proj", in_proj),  # x
        *rows("in_proj", in_proj, inner),  # the gate z multiplies y channel by channel
        *rows("conv1d", conv),
        Member(f"{p}x_proj.weight", 1, "consumer"),
        *rows("dt_proj", dt_proj),
        Member(f"{p}A_log", 0, "other"),
        Member(f"{p}D", 0, "other"),
        Member(f"{p}out_proj.weight", 1, "consumer"),
    ]
    state_members = [
        Member(f"{p}x_proj.weight", 0, "producer", rank),  # B
        Member(f"{p}x_proj.weight", 0, "producer", rank + state),  # C
        Member(f"{p}A_log", 1, "other"),
    ]
    rank_members = [
        Member(f"{p}x_proj.weight", 0, "producer"),
        Member(f"{p}dt_proj.weight", 1, "consumer"),
    ]
    layers = tuple(f"{p}{n}" for n in ("in_proj", "conv1d", "x_proj", "dt_proj", "out_proj"))
    note = "a Mamba mixer's {}, written from its definition"
    groups = [
        ChannelGroup(f"{p}in_proj (inner)", inner, tuple(inner_members), layers, "linear", 1,
                     (note.format("inner channels (input and gate of each)"),)),
        ChannelGroup(f"{p}x_proj (state)", state, tuple(state_members),
                     (f"{p}x_proj",), "linear", 1, (note.format("state size (B, C, A)"),)),
        ChannelGroup(f"{p}x_proj (dt rank)", rank, tuple(rank_members),
                     (f"{p}x_proj", f"{p}dt_proj"), "linear", 1, (note.format("dt rank"),)),
    ]  # fmt: skip
    return KnownBlock(name, tuple(g for g in groups if g.width > 1), layers)


def _linear_bn(
    block: nn.Module, prefix: str, names: tuple[str, ...]
) -> tuple[str, nn.Linear | nn.Conv2d, str | None] | None:
    """The first of ``names`` on ``block`` as (path of its Linear, the Linear, path of the
    BatchNorm after it): a bare Linear, a Linear+BatchNorm pair (LeViT's ``linear`` and
    ``batch_norm``/``bn``; in timm's ``levit_conv`` models a 1x1 convolution), or the last
    module of a Sequential holding one."""
    for n in names:
        mod, path = getattr(block, n, None), f"{prefix}{n}"
        if isinstance(mod, nn.Sequential) and len(mod):
            last = list(mod._modules)[-1]  # its name: timm's LeViT names them ("act", "ln")
            mod, path = mod[-1], f"{path}.{last}"
        if isinstance(mod, nn.Linear):
            return path, mod, None
        lin = getattr(mod, "linear", None)
        if isinstance(lin, nn.Linear) or _pointwise(lin):
            assert isinstance(lin, (nn.Linear, nn.Conv2d))
            bn = next((b for b in ("batch_norm", "bn") if hasattr(mod, b)), None)
            return f"{path}.linear", lin, f"{path}.{bn}" if bn else None
    return None


def _pointwise(mod: object) -> bool:
    """A 1x1 convolution of one group: a Linear on each pixel."""
    return (
        isinstance(mod, nn.Conv2d)
        and mod.groups == 1
        and tuple(mod.kernel_size) == (1, 1)
        and tuple(mod.stride) == (1, 1)
    )


def _widths(layer: nn.Linear | nn.Conv2d) -> tuple[int, int]:
    """(inputs, outputs) of a Linear or a 1x1 convolution."""
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    return layer.in_channels, layer.out_channels


def _levit_attention(name: str, m: nn.Module) -> KnownBlock | None:
    """LeViT's and EfficientFormer's attention (Hugging Face and timm): q/k/v of each head
    interleaved in one Linear+BatchNorm, or one Linear with a bias (``view(B, N, heads, -1)
    .split([key, key, value])``), per-head bias tables; the subsampling variant has separate
    ``queries`` and ``keys_values``. The key dims (q and k alike) and the value dims permute,
    each dim in every head at once: whole heads would move the bias tables too (and Hugging
    Face caches them in eval mode)."""
    heads = getattr(m, "num_attention_heads", getattr(m, "num_heads", None))
    kd = getattr(m, "key_dim", None)
    ratio = getattr(m, "attention_ratio", None)
    vd = getattr(m, "val_dim", None) or (ratio * kd if isinstance(ratio, int) and kd else None)
    if not all(isinstance(v, int) and v > 0 for v in (heads, kd, vd)):
        return None
    assert isinstance(heads, int) and isinstance(kd, int) and isinstance(vd, int)
    p = f"{name}." if name else ""
    proj = _linear_bn(m, p, ("projection", "proj"))
    qkv = _linear_bn(m, p, ("queries_keys_values", "qkv"))
    kv, q = _linear_bn(m, p, ("keys_values", "kv")), _linear_bn(m, p, ("queries", "q"))
    if proj is None or _widths(proj[1])[0] != heads * vd:
        return None

    def rows(part: tuple[str, nn.Linear | nn.Conv2d, str | None], offset: int) -> list[Member]:
        path, lin, bn = part
        out = [Member(f"{path}.weight", 0, "producer", offset)]
        if lin.bias is not None:  # EfficientFormer's qkv: a Linear with a bias, no BatchNorm
            out.append(Member(f"{path}.bias", 0, "other", offset))
        out += [Member(f"{bn}.{w}", 0, "norm", offset) for w in ("weight", "bias") if bn]
        return out

    keys: list[Member] = []
    values = [Member(f"{proj[0]}.weight", 1, "consumer", h * vd) for h in range(heads)]
    if qkv is not None and _widths(qkv[1])[1] == heads * (2 * kd + vd):
        step = 2 * kd + vd
        for h in range(heads):
            keys += [*rows(qkv, h * step), *rows(qkv, h * step + kd)]
            values += rows(qkv, h * step + 2 * kd)
        parts = [qkv]
    elif (
        kv is not None
        and q is not None
        and _widths(kv[1])[1] == heads * (kd + vd)
        and _widths(q[1])[1] == heads * kd
    ):
        for h in range(heads):
            keys += [*rows(q, h * kd), *rows(kv, h * (kd + vd))]
            values += rows(kv, h * (kd + vd) + kd)
        parts = [q, kv]
    else:
        return None
    layers = tuple(n for x in [*parts, proj] for n in (x[0], x[2]) if n is not None)
    note = "LeViT attention: dim {} of every head's {}, written from its definition"
    label = name or "attention"
    groups = (
        ChannelGroup(f"{label} (keys)", kd, tuple(keys), layers,
                     "attention", 1, (note.format("i", "query and key"),)),
        ChannelGroup(f"{label} (values)", vd, tuple(values), layers, "attention", 1,
                     (note.format("i", "value"),)),
    )  # fmt: skip
    return KnownBlock(name, tuple(g for g in groups if g.width > 1), layers)


def _rel_pos_attention(name: str, m: nn.Module) -> KnownBlock | None:
    """BoTNet's self-attention over a feature map (timm's ``BottleneckAttn``): one 1x1
    ``qkv`` conv split into q, k, v of ``heads`` heads, logits ``q @ k`` plus ``q`` against
    relative-position tables (raw parameters whose last dim is the key head size, shared by
    all heads). The key dims permute together in q, k and the tables, each dim in every head
    at once; the value dims permute within heads with whatever reads the block's output."""
    qkv = getattr(m, "qkv", None)
    heads = next((getattr(m, a) for a in ("num_heads", "heads") if hasattr(m, a)), None)
    dqk = next((getattr(m, a) for a in ("dim_head_qk", "hd", "dim_head") if hasattr(m, a)), None)
    dv = next((getattr(m, a) for a in ("dim_head_v", "hd", "dim_head") if hasattr(m, a)), None)
    if not (isinstance(qkv, (nn.Conv2d, nn.Linear)) and getattr(qkv, "groups", 1) == 1):
        return None
    if not all(isinstance(v, int) and v > 1 for v in (heads, dqk, dv)):
        return None
    assert isinstance(heads, int) and isinstance(dqk, int) and isinstance(dv, int)
    if qkv.weight.shape[0] != heads * (2 * dqk + dv):
        return None
    p = f"{name}." if name else ""
    tables = [
        n
        for n, t in m.named_parameters()
        if not n.startswith("qkv.") and t.ndim == 2 and t.shape[-1] == dqk
    ]
    if not tables:
        return None
    rows = [Member(f"{p}qkv.weight", 0, "producer", h * dqk) for h in range(2 * heads)]
    if qkv.bias is not None:
        rows += [Member(f"{p}qkv.bias", 0, "other", h * dqk) for h in range(2 * heads)]
    keys = ChannelGroup(
        f"{name or 'attention'} (keys)",
        dqk,
        (*rows, *(Member(f"{p}{t}", 1, "other") for t in tables)),
        (f"{p}qkv",),
        "attention",
        1,
        ("relative-position attention: dim i of every head's query, key and position tables",),
    )
    values = (qkv, Member(f"{p}qkv.weight", 0, "producer", 2 * heads * dqk), heads)
    return KnownBlock(name, (keys,), (f"{p}qkv", *(f"{p}{t}" for t in tables)), values)


def _conv_norm(
    block: nn.Module, prefix: str, attr: str
) -> tuple[str, nn.Conv2d, str | None] | None:
    """``attr`` of ``block`` as (path of its conv, the conv, path of a BatchNorm after it): a
    bare Conv2d or a conv-norm module (timm's ``ConvNormAct``: ``conv`` and ``norm``/``bn``)."""
    mod, path = getattr(block, attr, None), f"{prefix}{attr}"
    if isinstance(mod, nn.Conv2d):
        return path, mod, None
    c = next((c for c in ("conv", "c") if isinstance(getattr(mod, c, None), nn.Conv2d)), None)
    if c is None:
        return None
    bn = next(
        (b for b in ("norm", "bn") if isinstance(getattr(mod, b, None), nn.BatchNorm2d)), None
    )
    return f"{path}.{c}", getattr(mod, c), f"{path}.{bn}" if bn else None


def _lite_mla(name: str, m: nn.Module) -> KnownBlock | None:
    """EfficientViT's (MIT) lite multi-scale linear attention: a 1x1 ``qkv`` conv whose rows
    are ``[q | k | v]`` per head of ``dim`` channels; each scale of ``aggreg`` is a depthwise
    conv and a 1x1 conv grouped by those blocks, making as many heads again; ReLU linear
    attention per head (``q @ (k^T @ v)``), the heads concatenated into ``proj``. The grouped
    conv's weight ``[3T, dim, 1, 1]`` reads dim i of every block through one column, so the
    original heads' q, k and v share one permutation of their ``dim`` channels (with the
    value columns of ``proj``); each scale's outputs share another."""
    p = f"{name}." if name else ""
    qkv, proj = _conv_norm(m, p, "qkv"), _conv_norm(m, p, "proj")
    aggreg, d = getattr(m, "aggreg", None), getattr(m, "dim", None)
    if qkv is None or proj is None or not isinstance(aggreg, nn.ModuleList):
        return None
    if not isinstance(d, int) or d < 2 or qkv[1].out_channels % (3 * d):
        return None
    total3 = qkv[1].out_channels
    heads = total3 // (3 * d)
    scales: list[tuple[str, nn.Conv2d, str, nn.Conv2d]] = []
    for k, op in enumerate(aggreg):
        convs = list(op) if isinstance(op, nn.Sequential) else []
        if len(convs) != 2:
            return None
        dw, grouped = convs
        if not (isinstance(dw, nn.Conv2d) and isinstance(grouped, nn.Conv2d)):
            return None
        if dw.groups != total3 or grouped.groups != 3 * heads or grouped.out_channels != total3:
            return None
        scales.append((f"{p}aggreg.{k}.0", dw, f"{p}aggreg.{k}.1", grouped))
    if proj[1].in_channels != heads * d * (1 + len(scales)) or proj[1].groups != 1:
        return None

    def rows(path: str, conv: nn.Conv2d, bn: str | None, offset: int) -> list[Member]:
        out = [Member(f"{path}.weight", 0, "producer", offset)]
        if conv.bias is not None:
            out.append(Member(f"{path}.bias", 0, "other", offset))
        out += [Member(f"{bn}.{w}", 0, "norm", offset) for w in ("weight", "bias") if bn]
        return out

    blocks = range(3 * heads)
    first = [m_ for j in blocks for m_ in rows(qkv[0], qkv[1], qkv[2], j * d)]
    for dw_path, dw, g_path, _ in scales:
        first += [m_ for j in blocks for m_ in rows(dw_path, dw, None, j * d)]
        first.append(Member(f"{g_path}.weight", 1, "consumer"))
    first += [Member(f"{proj[0]}.weight", 1, "consumer", h * d) for h in range(heads)]
    note = "EfficientViT lite attention: channel i of every head's q, k and v{}"
    label = name or "attention"
    groups = [ChannelGroup(f"{label} (heads)", d, tuple(first), (qkv[0], proj[0]), "attention",
                           1, (note.format(""),))]  # fmt: skip
    for k, (_, _, g_path, grouped) in enumerate(scales):
        members = [m_ for j in blocks for m_ in rows(g_path, grouped, None, j * d)]
        start = heads * (1 + k)
        members += [
            Member(f"{proj[0]}.weight", 1, "consumer", (start + h) * d) for h in range(heads)
        ]
        groups.append(ChannelGroup(f"{label} (scale {k + 1} heads)", d, tuple(members),
                                   (g_path, proj[0]), "attention", 1,
                                   (note.format(f" at scale {k + 1}"),)))  # fmt: skip
    layers = (qkv[0], *(x for s in scales for x in (s[0], s[2])))
    return KnownBlock(name, tuple(groups), layers)


def _single_head_keys(name: str, m: nn.Module) -> KnownBlock | None:
    """SHViT's single-head attention on part of the channels (timm's ``SHSA``): a 1x1
    conv-norm ``qkv`` whose rows are ``[q | k | v]`` of ``qk_dim``, ``qk_dim`` and ``pdim``,
    logits ``q^T @ k`` on ``B, C, H*W`` maps. The walks tie the query and key rows (they meet
    in the product) but cannot place them; the key dims permute in q and k at once. The
    values and the untouched channels are found by the walks."""
    qk, pdim = getattr(m, "qk_dim", None), getattr(m, "pdim", None)
    if not (isinstance(qk, int) and isinstance(pdim, int) and qk > 1):
        return None
    p = f"{name}." if name else ""
    qkv = _conv_norm(m, p, "qkv")
    if qkv is None or qkv[1].groups != 1 or qkv[1].out_channels != 2 * qk + pdim:
        return None
    path, conv, bn = qkv
    members = []
    for off in (0, qk):
        members.append(Member(f"{path}.weight", 0, "producer", off))
        if conv.bias is not None:
            members.append(Member(f"{path}.bias", 0, "other", off))
        members += [Member(f"{bn}.{w}", 0, "norm", off) for w in ("weight", "bias") if bn]
    keys = ChannelGroup(
        f"{name or 'attention'} (keys)",
        qk,
        tuple(members),
        (path,),
        "attention",
        1,
        ("single-head attention: dim i of the query and the key, written from its definition",),
    )
    return KnownBlock(name, (keys,), (path,))


def _conv_head_keys(name: str, m: nn.Module) -> KnownBlock | None:
    """EfficientFormer-V2's attention on feature maps (timm's ``Attention2d`` and
    ``Attention2dDownsample``): 1x1 conv-norm ``q`` (in the downsampling variant the ``proj``
    of a local-global query) and ``k`` of ``num_heads * key_dim`` channels, reshaped to
    ``B, heads, key_dim, N``, logits ``q @ k`` mixed across heads (talking heads). The walks
    cannot follow the head reshape; the key dims permute in q and k at once, each dim in every
    head (the heads do not permute: the talking-head convs and the bias tables index them).
    The values (:func:`_conv_head_values`) permute within heads."""
    heads, kd = getattr(m, "num_heads", None), getattr(m, "key_dim", None)
    if not (isinstance(heads, int) and isinstance(kd, int) and heads > 0 and kd > 1):
        return None
    p = f"{name}." if name else ""
    q, k = _conv_norm(m, p, "q"), _conv_norm(m, p, "k")
    query = getattr(m, "q", None)
    if q is None and isinstance(query, nn.Module):
        q = _conv_norm(query, f"{p}q.", "proj")  # LocalGlobalQuery: local conv + pool, then proj
    if q is None or k is None:
        return None
    if any(c.groups != 1 or c.out_channels != heads * kd for _, c, _ in (q, k)):
        return None
    members = []
    for path, conv, bn in (q, k):
        for h in range(heads):
            members.append(Member(f"{path}.weight", 0, "producer", h * kd))
            if conv.bias is not None:
                members.append(Member(f"{path}.bias", 0, "other", h * kd))
            members += [Member(f"{bn}.{w}", 0, "norm", h * kd) for w in ("weight", "bias") if bn]
    keys = ChannelGroup(
        f"{name or 'attention'} (keys)",
        kd,
        tuple(members),
        (q[0], k[0]),
        "attention",
        1,
        ("attention on feature maps: dim i of every head's query and key, from its definition",),
    )
    values = _conv_head_values(name, m, heads)
    if values is None:
        return KnownBlock(name, (keys,), (q[0], k[0]))
    group, layers = values
    return KnownBlock(name, (keys, group), (q[0], k[0], *layers))


def _conv_head_values(
    name: str, m: nn.Module, heads: int
) -> tuple[ChannelGroup, tuple[str, ...]] | None:
    """The values of EfficientFormer-V2's attention: conv-norm ``v`` of ``heads * d``
    channels, ``attn @ v`` per head (channel ``h * d + j`` is dim ``j`` of head ``h``), merged
    back to a map and added to ``v_local`` (a depthwise conv-norm of ``v``), activation,
    conv-norm ``proj``. Each head's ``attn`` is one token mixing for all its ``d`` channels,
    so the channels permute within heads; the walks go through ``attn @ v`` into the
    attention map (and the talking-head convs), which Torch-Pruning reads as element-wise."""
    p = f"{name}." if name else ""
    v, proj = _conv_norm(m, p, "v"), _conv_norm(m, p, "proj")
    local = _conv_norm(m, p, "v_local") if hasattr(m, "v_local") else None
    if v is None or proj is None or (hasattr(m, "v_local") and local is None):
        return None
    dh = v[1].out_channels
    if v[1].groups != 1 or dh % heads or dh // heads < 2 or proj[1].in_channels != dh:
        return None
    if proj[1].groups != 1:
        return None
    if local is not None and not (
        local[1].groups == local[1].in_channels == dh == local[1].out_channels
    ):
        return None
    members = []
    for path, conv, bn in (x for x in (v, local) if x is not None):
        members.append(Member(f"{path}.weight", 0, "producer"))
        if conv.bias is not None:
            members.append(Member(f"{path}.bias", 0, "other"))
        members += [Member(f"{bn}.{w}", 0, "norm") for w in ("weight", "bias") if bn]
    members.append(Member(f"{proj[0]}.weight", 1, "consumer"))
    layers = tuple(x[0] for x in (v, local) if x is not None)
    group = ChannelGroup(
        f"{name or 'attention'} (values)",
        dh,
        tuple(members),
        (*layers, proj[0]),
        "attention",
        heads,
        ("attention on feature maps: value channels permute within each head, from its "
         "definition",),
    )  # fmt: skip
    return group, layers


def _spatial_gate(name: str, m: nn.Module) -> KnownBlock | None:
    """gMLP's gated MLP (timm's ``GatedMlp`` with a ``SpatialGatingUnit``): ``fc1`` makes
    ``2d`` features, chunked into ``u | v``; ``v`` is normalised (``gate.norm``) and mixed
    across tokens (``gate.proj``, a Linear over the token axis), then multiplies ``u``
    feature by feature; an optional ``norm`` and ``fc2`` read the ``d`` products. Feature
    ``j`` of ``u`` and of ``v`` are one channel (rows ``j`` and ``d + j`` of ``fc1``). The
    walks cannot follow it: Torch-Pruning maps neither a chunk of the last dim nor a Linear
    applied to the token axis."""
    fc1, fc2, gate = (getattr(m, a, None) for a in ("fc1", "fc2", "gate"))
    gnorm, proj = getattr(gate, "norm", None), getattr(gate, "proj", None)
    if not (
        isinstance(fc1, nn.Linear)
        and isinstance(fc2, nn.Linear)
        and isinstance(gnorm, nn.Module)
        and isinstance(proj, nn.Linear)
    ):
        return None
    d = fc2.in_features
    if fc1.out_features != 2 * d or d < 2 or proj.in_features != proj.out_features:
        return None
    p = f"{name}." if name else ""
    norms = []
    for path, mod in ((f"{p}gate.norm", gnorm), (f"{p}norm", getattr(m, "norm", None))):
        for w in ("weight", "bias"):
            t = getattr(mod, w, None)
            if isinstance(t, nn.Parameter):
                if t.shape != (d,):
                    return None
                norms.append(Member(f"{path}.{w}", 0, "norm"))
    members = [Member(f"{p}fc1.weight", 0, "producer", off) for off in (0, d)]
    if fc1.bias is not None:
        members += [Member(f"{p}fc1.bias", 0, "other", off) for off in (0, d)]
    members += [*norms, Member(f"{p}fc2.weight", 1, "consumer")]
    group = ChannelGroup(
        f"{p}fc1",
        d,
        tuple(members),
        (f"{p}fc1", f"{p}fc2"),
        "linear",
        1,
        ("spatial gating: feature j of both halves of 'fc1', written from its definition",),
    )
    return KnownBlock(name, (group,), (f"{p}fc1",))


def _gated_single_head(name: str, m: nn.Module) -> KnownBlock | None:
    """iFormer's single-head modulation attention (timm's ``SHMA``): conv-norm ``q`` and
    ``k`` of ``a`` channels, logits ``q^T @ k`` (one head); conv-norm ``v_gate`` of ``2m``
    channels, sigmoid, chunked into ``v | gate``; ``(v @ attn^T) * gate`` into conv-norm
    ``proj``. The key dims permute in q and k at once; value channel ``j`` is rows ``j`` and
    ``m + j`` of ``v_gate`` (multiplied together), read by column ``j`` of ``proj``. The walks
    carry channels through the attention products as if element-wise."""
    p = f"{name}." if name else ""
    q, k = _conv_norm(m, p, "q"), _conv_norm(m, p, "k")
    vg, proj = _conv_norm(m, p, "v_gate"), _conv_norm(m, p, "proj")
    if q is None or k is None or vg is None or proj is None:
        return None
    a, mid = q[1].out_channels, proj[1].in_channels
    if any(c.groups != 1 for _, c, _ in (q, k, vg, proj)) or k[1].out_channels != a:
        return None
    if vg[1].out_channels != 2 * mid or a < 2 or mid < 2:
        return None

    def rows(part: tuple[str, nn.Conv2d, str | None], offset: int) -> list[Member]:
        path, conv, bn = part
        out = [Member(f"{path}.weight", 0, "producer", offset)]
        if conv.bias is not None:
            out.append(Member(f"{path}.bias", 0, "other", offset))
        return out + [Member(f"{bn}.{w}", 0, "norm", offset) for w in ("weight", "bias") if bn]

    label = name or "attention"
    keys = ChannelGroup(
        f"{label} (keys)",
        a,
        (*rows(q, 0), *rows(k, 0)),
        (q[0], k[0]),
        "attention",
        1,
        ("single-head attention: dim i of the query and the key, from its definition",),
    )
    values = ChannelGroup(
        f"{label} (values)",
        mid,
        (*rows(vg, 0), *rows(vg, mid), Member(f"{proj[0]}.weight", 1, "consumer")),
        (vg[0], proj[0]),
        "attention",
        1,
        ("single-head attention: value j and gate j (rows j and m + j of 'v_gate'), from its "
         "definition",),
    )  # fmt: skip
    return KnownBlock(name, (keys, values), (q[0], k[0], vg[0]))


def _talking_heads(name: str, m: nn.Module) -> KnownBlock | None:
    """CaiT's talking-heads attention (timm's ``TalkingHeadAttn``): a fused ``qkv`` Linear
    (``[q | k | v]``, ``heads`` heads each), logits ``q @ k^T`` mixed across heads by
    ``proj_l`` (a Linear over the heads dim of the attention map), softmax, mixed again by
    ``proj_w``, ``attn @ v`` per head into ``proj``. Each head's logits are sums over its own
    query and key dims, so those permute together within each head; the value dims permute
    within each head with ``proj``'s columns. Whole heads do not move on their own:
    ``proj_l`` and ``proj_w`` index them (their rows and columns are grouped by the walks).
    The walks carry the channels through the head-mixing Linears as if they were channels."""
    heads = getattr(m, "num_heads", None)
    qkv, proj = getattr(m, "qkv", None), getattr(m, "proj", None)
    mix = [getattr(m, a, None) for a in ("proj_l", "proj_w")]
    if not (isinstance(heads, int) and isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear)):
        return None
    if not all(isinstance(x, nn.Linear) and x.in_features == x.out_features == heads for x in mix):
        return None
    c = proj.in_features
    if qkv.out_features != 3 * c or c % heads or c // heads < 2:
        return None
    p = f"{name}." if name else ""

    def rows(offset: int) -> list[Member]:
        out = [Member(f"{p}qkv.weight", 0, "producer", offset)]
        if qkv.bias is not None:
            out.append(Member(f"{p}qkv.bias", 0, "other", offset))
        return out

    label = name or "attention"
    note = "talking-heads attention: the {} dims permute within each head, from its definition"
    keys = ChannelGroup(f"{label} (keys)", c, (*rows(0), *rows(c)), (f"{p}qkv",), "attention",
                        heads, (note.format("query and key"),))  # fmt: skip
    values = ChannelGroup(
        f"{label} (values)",
        c,
        (*rows(2 * c), Member(f"{p}proj.weight", 1, "consumer")),
        (f"{p}qkv", f"{p}proj"),
        "attention",
        heads,
        (note.format("value"),),
    )
    return KnownBlock(name, (keys, values), (f"{p}qkv",))


def _conv_rows(path: str, conv: nn.Conv2d | nn.Conv3d, offsets: range) -> list[Member]:
    out = [Member(f"{path}.weight", 0, "producer", o) for o in offsets]
    if conv.bias is not None:
        out += [Member(f"{path}.bias", 0, "other", o) for o in offsets]
    return out


def _halo_attention(name: str, m: nn.Module) -> KnownBlock | None:
    """Halo attention (timm's ``HaloAttn``): ``q`` conv of ``heads * dqk`` channels, ``kv``
    conv of ``heads * (dqk + dv)`` channels, ``[k | v]`` per head, unfolded into halo blocks;
    logits ``q @ k`` plus ``q`` against relative-position tables (``pos_embed``, last dim
    ``dqk``, shared by all heads); ``attn @ v`` merged back to ``heads * dv`` channels. The
    key dims permute in q, k and the tables, each dim in every head at once; value dim ``j``
    of every head permutes with the readers of the output (the walks cannot follow the head
    reshapes and the unfold)."""
    heads, dqk, dv = (getattr(m, a, None) for a in ("num_heads", "dim_head_qk", "dim_head_v"))
    q, kv, pos = getattr(m, "q", None), getattr(m, "kv", None), getattr(m, "pos_embed", None)
    if not all(isinstance(v, int) and v > 1 for v in (dqk, dv)) or not isinstance(heads, int):
        return None
    assert isinstance(dqk, int) and isinstance(dv, int)
    if not (isinstance(q, nn.Conv2d) and isinstance(kv, nn.Conv2d) and isinstance(pos, nn.Module)):
        return None
    if q.groups != 1 or kv.groups != 1 or heads < 1:
        return None
    if q.out_channels != heads * dqk or kv.out_channels != heads * (dqk + dv):
        return None
    tables = [n for n, t in pos.named_parameters() if t.ndim == 2 and t.shape[-1] == dqk]
    if not tables or len(tables) != len(list(pos.parameters())):
        return None
    p = f"{name}." if name else ""
    step = dqk + dv
    members = _conv_rows(f"{p}q", q, range(0, heads * dqk, dqk))
    members += _conv_rows(f"{p}kv", kv, range(0, heads * step, step))
    members += [Member(f"{p}pos_embed.{t}", 1, "other") for t in tables]
    keys = ChannelGroup(
        f"{name or 'attention'} (keys)", dqk, tuple(members), (f"{p}q", f"{p}kv"), "attention",
        1, ("halo attention: dim i of every head's query, key and position tables",),
    )  # fmt: skip
    values = (kv, Member(f"{p}kv.weight", 0, "producer"), heads)
    tiled = (dv, tuple(_conv_rows(f"{p}kv", kv, range(dqk, heads * step, step))))
    layers = (f"{p}q", f"{p}kv", *(f"{p}pos_embed.{t}" for t in tables))
    return KnownBlock(name, (keys,), layers, values, tiled)


def _lambda_layer(name: str, m: nn.Module) -> KnownBlock | None:
    """LambdaNet's lambda layer (timm's ``LambdaLayer``): one ``qkv`` conv split into q
    (``heads * K``, BatchNorm ``norm_q``), k (``K``) and v (``V``, BatchNorm ``norm_v``);
    content lambda ``softmax(k) @ v``, position lambda from ``conv_lambda`` (a Conv3d with
    ``K`` outputs over v's map) or a relative-position table ``pos_emb`` (last dim ``K``);
    every head's queries read both lambdas, and output channel ``h * V + j`` is value dim ``j``
    of head ``h`` (one v for all heads). The key dims permute in q (every head), k, norm_q
    and the position lambda; value dim ``j`` permutes with ``norm_v`` and the output's channel
    ``j`` of every head."""
    heads, dk, dv = (getattr(m, a, None) for a in ("num_heads", "dim_qk", "dim_v"))
    qkv, nq, nv = (getattr(m, a, None) for a in ("qkv", "norm_q", "norm_v"))
    conv, table = getattr(m, "conv_lambda", None), getattr(m, "pos_emb", None)
    if not (isinstance(heads, int) and isinstance(dk, int) and isinstance(dv, int)):
        return None
    if not (isinstance(qkv, nn.Conv2d) and qkv.groups == 1 and heads > 0 and dk > 1 and dv > 1):
        return None
    if qkv.out_channels != heads * dk + dk + dv:
        return None
    norms = [(a, n) for a, n in (("norm_q", nq), ("norm_v", nv)) if isinstance(n, nn.Module)]
    if any(not isinstance(n, nn.BatchNorm2d) for _, n in norms):
        return None
    p = f"{name}." if name else ""
    members = _conv_rows(f"{p}qkv", qkv, range(0, heads * dk + 1, dk))
    if isinstance(nq, nn.BatchNorm2d) and nq.affine:
        members += [Member(f"{p}norm_q.{w}", 0, "norm", h * dk) for w in ("weight", "bias")
                    for h in range(heads)]  # fmt: skip
    layers = [f"{p}qkv"]
    if isinstance(conv, nn.Conv3d) and conv.out_channels == dk and conv.in_channels == 1:
        members += _conv_rows(f"{p}conv_lambda", conv, range(1))
        layers.append(f"{p}conv_lambda")
    elif isinstance(table, nn.Parameter) and table.shape[-1] == dk and conv is None:
        members.append(Member(f"{p}pos_emb", table.ndim - 1, "other"))
        layers.append(f"{p}pos_emb")
    else:
        return None
    keys = ChannelGroup(
        f"{name or 'attention'} (keys)", dk, tuple(members), tuple(layers), "attention", 1,
        ("lambda layer: dim i of every head's query, the key and the position lambda",),
    )  # fmt: skip
    rows = _conv_rows(f"{p}qkv", qkv, range(heads * dk + dk, heads * dk + dk + 1))
    if isinstance(nv, nn.BatchNorm2d) and nv.affine:
        rows += [Member(f"{p}norm_v.{w}", 0, "norm") for w in ("weight", "bias")]
    values = (qkv, Member(f"{p}qkv.weight", 0, "producer"), heads)
    return KnownBlock(name, (keys,), tuple(layers), values, (dv, tuple(rows)))


def _factor_attention(model: nn.Module) -> list[KnownBlock]:
    """CoaT's factorized attention with convolutional relative position encoding (timm's
    ``FactorAttnConvRelPosEnc``): a ``qkv`` Linear (``[q | k | v]``, ``heads`` heads of ``d``
    dims), ``q @ (softmax(k)^T @ v)`` plus ``q * crpe(v)``, where ``crpe`` splits v's
    channels by groups of heads into depthwise convs (``conv_list``, one kernel size per group)
    and is shared by several blocks; ``proj`` reads the merged heads. Query, key and value
    dim ``j`` meet each other in every head, so dim ``j`` of every head permutes in q, k, v,
    the depthwise convs and ``proj``'s columns, in every block sharing one ``crpe`` at once.
    (Whole heads could move only within one kernel group; not written.)"""
    names = {id(mod): n for n, mod in model.named_modules()}
    shared: dict[int, tuple[nn.Module, list[tuple[str, nn.Linear, nn.Linear, object]]]] = {}
    for name, m in model.named_modules():
        crpe, qkv, proj = (getattr(m, a, None) for a in ("crpe", "qkv", "proj"))
        if not (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear)):
            continue
        if isinstance(crpe, nn.Module) and isinstance(
            getattr(crpe, "conv_list", None), nn.ModuleList
        ):
            entry = (name, qkv, proj, getattr(m, "num_heads", None))
            shared.setdefault(id(crpe), (crpe, []))[1].append(entry)
    out = []
    for crpe, users in shared.values():
        heads, c = users[0][3], users[0][2].in_features
        splits = list(getattr(crpe, "head_splits", ()))
        if not isinstance(heads, int) or heads < 1 or c % heads or sum(splits) != heads:
            continue
        d = c // heads
        convs = list(getattr(crpe, "conv_list"))  # noqa: B009
        if d < 2 or len(convs) != len(splits) or id(crpe) not in names:
            continue
        if any(not (isinstance(v, nn.Conv2d) and v.groups == v.in_channels == v.out_channels
                    == s * d) for v, s in zip(convs, splits)):  # fmt: skip
            continue
        if any(h != heads or qkv.out_features != 3 * c or proj.in_features != c
               for _, qkv, proj, h in users):  # fmt: skip
            continue
        cp = names[id(crpe)]
        members: list[Member] = []
        layers: list[str] = []
        for name, qkv, _, _ in users:
            p = f"{name}." if name else ""
            members += [Member(f"{p}qkv.weight", 0, "producer", o) for o in range(0, 3 * c, d)]
            if qkv.bias is not None:
                members += [Member(f"{p}qkv.bias", 0, "other", o) for o in range(0, 3 * c, d)]
            members += [Member(f"{p}proj.weight", 1, "consumer", o) for o in range(0, c, d)]
            layers += [f"{p}qkv", f"{p}proj"]
        for k, (v, s) in enumerate(zip(convs, splits)):
            members += _conv_rows(f"{cp}.conv_list.{k}", v, range(0, s * d, d))
            layers.append(f"{cp}.conv_list.{k}")
        group = ChannelGroup(
            f"{cp} (heads)", d, tuple(members), tuple(layers), "attention", 1,
            ("factorized attention with conv position encoding: dim j of every head in q, k, "
             "v, the depthwise convs and proj, in every block sharing the convs",),
        )  # fmt: skip
        out.append(KnownBlock(cp, (group,), tuple(n for n in layers if not n.endswith("proj"))))
    return out
