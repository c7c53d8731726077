"""Channel layouts of raw parameters in known module structures, which Torch-Pruning cannot read.

Torch-Pruning sees a raw ``nn.Parameter`` in a matrix product (``einsum``, ``F.linear`` on a
slice, ``grouped_mm``) as an element-wise operand and guesses its channel dim (the last). For
structures whose layout follows from the shapes alone, this module declares it instead:

* mixture-of-experts stacks (Mixtral and most Hugging Face MoE models): ``gate_up_proj``
  ``(E, 2I, H)`` and ``down_proj`` ``(E, H, I)`` (or the transposed ``(E, H, 2I)``/``(E, I, H)``,
  GPT-OSS; or ungated, ``up_proj`` ``(E, I, H)``, Nemotron-H), optional ``*_bias``, and the
  router's raw ``weight`` ``(E, H)`` in a sibling module;
* Transformer-XL relative attention (XLNet): raw ``q``, ``k``, ``v``, ``o`` of one shape
  ``(H, heads, head_dim)``, the position kernel ``r``, the biases ``r_w_bias``/``r_r_bias``/
  ``r_s_bias`` ``(heads, head_dim)`` and ``seg_embed`` ``(2, heads, head_dim)``;
* ConvBERT's mixed attention, whose span-based convolution Torch-Pruning cannot follow
  (``unfold``, kernels reshaped per head): its three groups are declared from its layers;
* multi-head latent attention (DeepSeek-V2/V3): the compressed key/value channels and the
  heads, whose key has a rotary part shared by all heads, are declared from its layers.

:func:`declared_layouts` gives (1) for each such parameter the dim along the model width and
its role there (``None``: it never reads the width, e.g. a kernel applied to a fixed position
table), which the finder uses in place of Torch-Pruning's guess, and (2) candidate groups for the
channels inside the structure, which the finder keeps only if the permutation check passes.
Expert channels permute alike in every expert (a member indexes one dim, so the expert index
cannot be tied to a channel); attention channels permute as whole heads, or alike in every head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from widthwise.groups.candidates import Candidate
from widthwise.groups.types import ChannelGroup, Member, Role

__all__ = ["Declared", "declared_layouts"]

#: candidate groups for one structure, preferred first: (key, group)
_Options = list[Candidate]


@dataclass
class Declared:
    """Raw-parameter layouts of a model's known structures (see the module docstring)."""

    #: parameter name -> (dim along the model width, role), or None: not on the model width
    stream: dict[str, tuple[int, Role] | None] = field(default_factory=dict)
    #: per structure: its module name, and for each group inside it the candidates, preferred
    #: first
    inner: list[tuple[str, list[_Options]]] = field(default_factory=list)


def declared_layouts(model: nn.Module) -> Declared:
    """The layouts of every known structure in ``model``."""
    out = Declared()
    modules = dict(model.named_modules())
    for name, module in modules.items():
        params = dict(module.named_parameters(recurse=False))
        prefix = f"{name}." if name else ""
        if _experts(prefix, params, modules, name, out):
            continue
        _relative_attention(prefix, params, out)
        _span_conv_attention(name, module, modules, out)
        _latent_attention(name, module, out)
    return out


def _experts(
    prefix: str,
    params: dict[str, nn.Parameter],
    modules: dict[str, nn.Module],
    name: str,
    out: Declared,
) -> bool:
    # gated experts (gate and up rows in one tensor), or ungated ones (Nemotron-H: up_proj)
    up = "gate_up_proj" if "gate_up_proj" in params else "up_proj"
    gates = 2 if up == "gate_up_proj" else 1
    gu, dn = params.get(up), params.get("down_proj")
    if gu is None or dn is None or gu.ndim != 3 or dn.ndim != 3 or gu.shape[0] != dn.shape[0]:
        return False
    e = gu.shape[0]
    if gu.shape[1] == gates * dn.shape[2] and gu.shape[2] == dn.shape[1]:  # rows out: F.linear
        h, i, gu_in, gu_out, dn_in, dn_out = dn.shape[1], dn.shape[2], 2, 1, 2, 1
    elif gu.shape[2] == gates * dn.shape[1] and gu.shape[1] == dn.shape[2]:  # x @ W (GPT-OSS)
        h, i, gu_in, gu_out, dn_in, dn_out = dn.shape[2], dn.shape[1], 1, 2, 1, 2
    else:
        return False
    gu_n, dn_n = f"{prefix}{up}", f"{prefix}down_proj"
    gu_b = params.get(f"{up}_bias")
    dn_b = params.get("down_proj_bias")
    out.stream[gu_n] = (gu_in, "consumer")
    out.stream[dn_n] = (dn_out, "producer")
    if dn_b is not None and dn_b.shape == (e, h):
        out.stream[f"{prefix}down_proj_bias"] = (1, "other")
    if gu_b is not None:
        out.stream[f"{gu_n}_bias"] = None
    # the router: a raw (E, H) weight in a sibling module (a Linear is traced as one already)
    parent = name.rpartition(".")[0]
    for mname, m in modules.items():
        if mname.rpartition(".")[0] != parent or mname == name or _plain_linear(m):
            continue
        w = getattr(m, "weight", None)
        if isinstance(w, nn.Parameter) and w.shape == (e, h):
            out.stream[f"{mname}.weight"] = (1, "consumer")
    # gate and up rows as two blocks [gate | up], or interleaved (g0 u0 g1 u1 ...)
    options: _Options = []
    layouts = (("blocks", [(0, 1), (i, 1)]), ("interleaved", [(0, 2)]))
    for key, places in layouts if gates == 2 else (("rows", [(0, 1)]),):
        members = [Member(gu_n, gu_out, "producer", off, rep) for off, rep in places]
        if gu_b is not None and gu_b.shape == (e, gates * i):
            members += [Member(f"{gu_n}_bias", 1, "other", o, r) for o, r in places]
        members.append(Member(dn_n, dn_in, "consumer"))
        note = f"channel j is channel j of each of the {e} experts ({key} of {up})"
        label = name or "experts"
        g = ChannelGroup(f"{label} (experts)", i, tuple(members), (name,), "linear", 1, (note,))
        options.append((key, g))
    out.inner.append((name, [options]))
    return True


def _plain_linear(m: nn.Module) -> bool:
    """An ``nn.Linear`` traced as one (a subclass with its own forward may be traced as an op,
    see the finder's last trace attempt)."""
    return isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward


_XL_PROJ = ("q", "k", "v", "o")
_XL_BIAS = ("r_w_bias", "r_r_bias", "r_s_bias")


def _relative_attention(prefix: str, params: dict[str, nn.Parameter], out: Declared) -> None:
    if any(n not in params for n in _XL_PROJ):
        return
    shape = params["q"].shape
    if len(shape) != 3 or any(params[n].shape != shape for n in _XL_PROJ):
        return
    _, heads, hd = shape
    for n in ("q", "k", "v"):
        out.stream[prefix + n] = (0, "consumer")
    out.stream[prefix + "o"] = (0, "producer")
    extra: dict[str, int] = {}  # raw tensors indexed by head: name -> its head dim
    if "r" in params and params["r"].ndim == 3 and params["r"].shape[1:] == (heads, hd):
        extra["r"] = 1  # (position features, heads, hd): the table's width, not the model's
    extra |= {n: 0 for n in _XL_BIAS if n in params and params[n].shape == (heads, hd)}
    if "seg_embed" in params and params["seg_embed"].shape[1:] == (heads, hd):
        extra["seg_embed"] = 1
    for n in extra:
        out.stream[prefix + n] = None  # reads a position table, or is added to the heads

    def members(shift: int) -> tuple[Member, ...]:
        """q/k/v/r rows and o's columns, along the head dim (shift 0) or the last (shift 1)."""
        roles: dict[str, Role] = {"q": "producer", "k": "producer", "v": "producer"}
        roles["o"] = "consumer"
        roles.update(dict.fromkeys(extra, "other"))
        dims = {n: 1 for n in _XL_PROJ} | extra
        return tuple(Member(prefix + n, dims[n] + shift, roles[n]) for n in roles)

    label = prefix.rstrip(".") or "attention"
    layers = (prefix.rstrip("."),)
    options: _Options = [
        ("heads", ChannelGroup(f"{label} (attention)", heads, members(0), layers, "attention")),
        (
            "shared channels",
            ChannelGroup(
                f"{label} (attention)",
                hd,
                members(1),
                layers,
                "attention",
                1,
                (f"channel j is channel j of each of the {heads} heads",),
            ),
        ),
    ]
    out.inner.append((prefix.rstrip("."), [options]))


def _span_conv_attention(
    name: str, module: nn.Module, modules: dict[str, nn.Module], out: Declared
) -> None:
    """ConvBERT: ``query``/``key``/``value`` (A = heads * hd rows each), a separable conv whose
    pointwise rows are multiplied by the query and read by ``conv_kernel_layer`` (one kernel per
    head), ``conv_out_layer`` unfolded and mixed per head by those kernels; the output dense
    reads ``[attention context | span conv]`` (2A columns). Groups, each permuted within heads:
    query/key with the kernel generator's input, value with the first A columns, the span conv
    with the last A columns."""
    linears = ("query", "key", "value", "conv_kernel_layer", "conv_out_layer")
    sep = getattr(module, "key_conv_attn_layer", None)
    pointwise = getattr(sep, "pointwise", None)
    heads = getattr(module, "num_attention_heads", None)
    if not all(isinstance(getattr(module, n, None), nn.Linear) for n in linears):
        return
    query = getattr(module, "query", None)
    if not isinstance(pointwise, nn.Conv1d) or not isinstance(query, nn.Linear):
        return
    a = pointwise.out_channels
    parent = name.rpartition(".")[0]
    dname = f"{parent}.output.dense" if parent else "output.dense"
    dense = modules.get(dname)
    if not isinstance(heads, int) or a % heads or not isinstance(dense, nn.Linear):
        return
    if dense.in_features != 2 * a or query.out_features != a:
        return
    bias = getattr(sep, "bias", None)
    p, dn = f"{name}.", f"{dname}.weight"

    def rows(layer: str) -> list[Member]:
        out = [Member(f"{p}{layer}.weight", 0, "producer")]
        if getattr(modules[p + layer], "bias", None) is not None:
            out.append(Member(f"{p}{layer}.bias", 0, "other"))
        return out

    qk = [
        *rows("query"),
        *rows("key"),
        Member(f"{p}key_conv_attn_layer.pointwise.weight", 0, "producer"),
    ]
    if isinstance(bias, nn.Parameter) and bias.shape[0] == a:
        qk.append(Member(f"{p}key_conv_attn_layer.bias", 0, "other"))
    qk.append(Member(f"{p}conv_kernel_layer.weight", 1, "consumer"))
    note = "channels permute within each head"
    parts = [
        (f"{name} (query/key)", qk),
        (f"{name} (value)", [*rows("value"), Member(dn, 1, "consumer")]),
        (f"{name} (span conv)", [*rows("conv_out_layer"), Member(dn, 1, "consumer", a)]),
    ]
    groups: list[_Options] = []
    for n, ms in parts:
        layers = tuple(dict.fromkeys(m.param.rpartition(".")[0] for m in ms))
        g = ChannelGroup(n, a, tuple(ms), layers, "attention", heads, (note,))
        groups.append([("heads", g)])
    out.inner.append((name, groups))


def _latent_attention(name: str, module: nn.Module, out: Declared) -> None:
    """DeepSeek's multi-head latent attention: ``kv_a_proj_with_mqa`` computes ``kv_lora_rank``
    compressed channels (normalised by ``kv_a_layernorm``, read by ``kv_b_proj``) and a rotary
    key part shared by all heads; ``kv_b_proj`` rows are ``[k_nope | v]`` per head, the query
    projection (``q_b_proj``, or ``q_proj`` without a query rank) rows ``[q_nope | q_rope]`` per
    head, ``o_proj`` reads ``v_head_dim`` columns per head. Groups: the compressed channels, and
    whole heads (the shared rotary part stays)."""
    kv_a, kv_b, o, norm = (
        getattr(module, n, None)
        for n in ("kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "kv_a_layernorm")
    )
    q = getattr(module, "q_b_proj", None) or getattr(module, "q_proj", None)
    v = getattr(module, "v_head_dim", None)  # head sizes stay; counts are read off the weights
    if not (
        isinstance(kv_a, nn.Linear)
        and isinstance(kv_b, nn.Linear)
        and isinstance(o, nn.Linear)
        and isinstance(q, nn.Linear)
        and isinstance(norm, nn.Module)
        and isinstance(v, int)
        and v > 0
    ):
        return
    heads, rank = o.in_features // v, kv_b.in_features
    if o.in_features % v or kv_a.out_features <= rank or not name:
        return
    if kv_b.out_features % heads or q.out_features % heads:
        return
    p = f"{name}."
    qname = p + ("q_b_proj" if q is getattr(module, "q_b_proj", None) else "q_proj")

    def rows(layer: str, m: nn.Linear, repeat: int) -> list[Member]:
        ms = [Member(f"{layer}.weight", 0, "producer", 0, repeat)]
        return ms + ([Member(f"{layer}.bias", 0, "other", 0, repeat)] if m.bias is not None else [])

    latent = [
        *rows(p + "kv_a_proj_with_mqa", kv_a, 1),
        Member(p + "kv_b_proj.weight", 1, "consumer"),
    ]
    latent += [Member(f"{p}kv_a_layernorm.{n}", 0, "norm") for n, _ in norm.named_parameters()]
    whole = [
        *rows(qname, q, q.out_features // heads),
        *rows(p + "kv_b_proj", kv_b, kv_b.out_features // heads),
        Member(p + "o_proj.weight", 1, "consumer", 0, v),
    ]
    parts: list[_Options] = []
    for label, width, members in (("latent", rank, latent), ("attention", heads, whole)):
        layers = tuple(dict.fromkeys(m.param.rpartition(".")[0] for m in members))
        kind = "attention" if label == "attention" else "linear"
        g = ChannelGroup(f"{name} ({label})", width, tuple(members), layers, kind)
        parts.append([(label, g)])
    out.inner.append((name, parts))
