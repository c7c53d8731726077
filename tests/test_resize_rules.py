"""Width rules: each module kind gets the right rule, legal resizes run and are found again at the
planned widths, illegal ones raise ResizeError naming the group, net2net widening is exact."""

from __future__ import annotations

import inspect
import re
import warnings
from dataclasses import replace

import pytest
import torch
from torch import nn

from test_resize import bert, gpt2, llama_gqa, mlp, randomise_bn
from widthwise.groups import ChannelGroup, Member, _call_model, find_groups
from widthwise.resize import (
    ResizeError,
    WidthRule,
    channel_map,
    check_widths,
    resize,
    resolve_widths,
    width_rules,
)

transformers = pytest.importorskip("transformers")
# whether a Hugging Face config can describe the result is test_resize_hf.py's subject
pytestmark = pytest.mark.filterwarnings("ignore::widthwise.resize.ResizeWarning")

TOL = 1e-5  # function preservation, float32


def _out(model: nn.Module, x: object) -> torch.Tensor:
    with torch.no_grad():
        out = _call_model(model.eval(), x)
    for attr in ("logits", "last_hidden_state"):
        if hasattr(out, attr):
            return getattr(out, attr)
    return out[0] if isinstance(out, tuple) else out


def _groups(model: nn.Module, x: object) -> list[ChannelGroup]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return find_groups(model, x)


def _found(model: nn.Module, x: object) -> dict[str, int]:
    return {g.name: g.width for g in _groups(model, x)}


def assert_preserved(model: nn.Module, groups, widths, x, init: str = "net2net") -> nn.Module:
    new = resize(model, groups, widths, init=init, example_inputs=x)
    torch.testing.assert_close(_out(new, x), _out(model, x), atol=TOL, rtol=TOL)
    return new


# ---------------------------------------------------------------------------------------------
# models


class RNNNet(nn.Module):
    def __init__(self, cls: type[nn.RNNBase], **kw: object) -> None:
        super().__init__()
        self.rnn = cls(4, 6, batch_first=True, **kw)
        self.head = nn.Linear(6 * (2 if kw.get("bidirectional") else 1), 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0])


class MHANet(nn.Module):
    def __init__(self, **kw: object) -> None:
        super().__init__()
        self.inp = nn.Linear(5, 8)
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True, **kw)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        return self.head(self.mha(h, h, h)[0])


class EncoderNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(5, 8)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.inp(x)))


class ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.c1 = nn.Sequential(nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.c2(self.c1(h)))
        return self.head(h.mean((2, 3)))


# ---------------------------------------------------------------------------------------------
# plain groups


def test_plain_groups_have_the_trivial_rule_and_widen_exactly():
    net, x = mlp()
    groups = _groups(net, x)
    rules = width_rules(net, groups)
    assert rules == {"0": WidthRule(), "2": WidthRule()}
    new = assert_preserved(net, groups, {"0": 13, "2": 7}, x)
    assert _found(new, x) == {"0": 13, "2": 7}


def test_residual_stream_with_batchnorm_widens_exactly():
    torch.manual_seed(0)
    net, x = randomise_bn(ResNet()), torch.randn(2, 3, 5, 5)
    groups = _groups(net, x)
    residual = next(g for g in groups if g.kind == "residual")
    rules = width_rules(net, groups)
    assert rules[residual.name].widen and rules[residual.name].multiple_of == 1
    widths = {g.name: g.width + 3 for g in groups}
    new = assert_preserved(net, groups, widths, x)
    assert _found(new, x) == widths
    assert_preserved(net, groups, widths, x, init="prune")


# ---------------------------------------------------------------------------------------------
# recurrent


@pytest.mark.parametrize(
    "cls, kw",
    [
        (nn.GRU, {"num_layers": 2}),
        (nn.LSTM, {"num_layers": 2, "bidirectional": True}),
        (nn.RNN, {"num_layers": 3}),
    ],
)
def test_recurrent_hidden_groups_are_tied_and_move_together(cls, kw):
    torch.manual_seed(0)
    net, x = RNNNet(cls, **kw).eval(), torch.randn(2, 5, 4)
    groups = _groups(net, x)
    hidden = [g.name for g in groups if g.kind == "recurrent"]
    dirs = 2 if kw.get("bidirectional") else 1
    assert len(hidden) == kw["num_layers"] * dirs
    rules = width_rules(net, groups)
    for name in hidden:
        assert set(rules[name].tied) == set(hidden) - {name}
        assert rules[name].widen and "one hidden_size" in rules[name].reason
    # naming one group resizes the whole module; the others follow
    assert resolve_widths(net, groups, {hidden[-1]: 9}) == {g.name: 9 for g in groups}
    for init in ("net2net", "prune"):
        new = assert_preserved(net, groups, {hidden[0]: 9}, x, init=init)
        assert new.rnn.hidden_size == 9
    assert _found(new, x) == dict.fromkeys(hidden, 9)
    small = resize(net, groups, {hidden[1]: 4}, example_inputs=x)
    assert small.rnn.hidden_size == 4 and _found(small, x) == dict.fromkeys(hidden, 4)
    with pytest.raises(ResizeError, match=re.escape(f"group '{hidden[0]}' must keep the same")):
        resize(net, groups, {hidden[0]: 8, hidden[1]: 7})


def test_one_layer_of_a_stacked_rnn_alone_is_refused_not_crashed():
    # groups for layer 0 only (layer 1 left out, e.g. it reaches the output): not resizable
    torch.manual_seed(0)
    net, x = RNNNet(nn.GRU, num_layers=2).eval(), torch.randn(2, 5, 4)
    l0 = next(g for g in _groups(net, x) if g.name == "rnn.l0 (hidden)")
    rule = width_rules(net, [l0])[l0.name]
    assert not rule.resizable and "units of l1 are not a group" in rule.reason
    with pytest.raises(ResizeError, match=r"group 'rnn.l0 \(hidden\)' cannot be resized"):
        resize(net, [l0], {l0.name: 8})
    # a group resize cannot read as hidden units (columns only): the shape check after the
    # surgery names it
    cols = ChannelGroup("cols", 6, tuple(m for m in l0.members if m.role == "consumer"))
    with pytest.raises(ResizeError, match=r"\['cols'\].*one hidden size"):
        resize(net, [cols], {"cols": 8})


def test_lstm_with_projection_ties_hidden_and_projection_groups():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(4, 6, num_layers=2, proj_size=3, batch_first=True)
            self.head = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(x)[0])

    net, x = Net().eval(), torch.randn(2, 5, 4)
    groups = []
    for layer in range(2):
        s = f"_l{layer}"
        hidden = [
            Member(f"rnn.{w}{s}", 0, "producer" if w[0] == "w" else "other", k * 6, gate=g)
            for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            for k, g in enumerate("ifgo")
        ] + [Member(f"rnn.weight_hr{s}", 1, "consumer")]
        groups.append(ChannelGroup(f"rnn.l{layer} (hidden)", 6, tuple(hidden), kind="recurrent"))
        downstream = f"rnn.weight_ih_l{layer + 1}" if layer == 0 else "head.weight"
        proj = (
            Member(f"rnn.weight_hr{s}", 0, "producer"),
            Member(f"rnn.weight_hh{s}", 1, "consumer"),
            Member(downstream, 1, "consumer"),
        )
        groups.append(ChannelGroup(f"rnn.l{layer} (projection)", 3, proj, kind="recurrent"))
    rules = width_rules(net, groups)
    assert rules["rnn.l0 (hidden)"].tied == ("rnn.l1 (hidden)",)
    assert rules["rnn.l0 (projection)"].tied == ("rnn.l1 (projection)",)
    new = assert_preserved(net, groups, {"rnn.l0 (hidden)": 10, "rnn.l1 (projection)": 5}, x)
    assert (new.rnn.hidden_size, new.rnn.proj_size) == (10, 5)


# ---------------------------------------------------------------------------------------------
# attention


@pytest.mark.parametrize("kw", [{}, {"add_bias_kv": True}])
def test_multihead_attention_keeps_heads_and_widens_inside_each_head(kw):
    torch.manual_seed(0)
    net, x = MHANet(**kw).eval(), torch.randn(2, 5, 5)
    groups = _groups(net, x)
    names = {"inp", "mha (attention)", "mha.out_proj"}
    assert {g.name for g in groups} == names
    rules = width_rules(net, groups)
    for name in names:
        assert rules[name].multiple_of == 2 and rules[name].widen
        assert set(rules[name].tied) == names - {name}
    for init in ("net2net", "prune"):
        new = assert_preserved(net, groups, {"mha (attention)": 14}, x, init=init)
        assert (new.mha.embed_dim, new.mha.num_heads, new.mha.head_dim) == (14, 2, 7)
    assert _found(new, x) == dict.fromkeys(names, 14)
    small = resize(net, groups, {"inp": 6}, example_inputs=x)
    assert _found(small, x) == dict.fromkeys(names, 6)
    with pytest.raises(ResizeError, match=r"group 'mha \(attention\)' needs a multiple of 2"):
        resize(net, groups, {"mha (attention)": 7})


def test_transformer_encoder_ties_residual_and_attention_widths():
    torch.manual_seed(0)
    net, x = EncoderNet().eval(), torch.randn(2, 5, 5)
    groups = _groups(net, x)
    rules = width_rules(net, groups)
    stream = {g.name for g in groups if g.kind in ("residual", "attention")}
    assert len(stream) == 3  # the residual stream and the two layers' attention
    for name in stream:
        r = rules[name]
        assert set(r.tied) == stream - {name} and r.multiple_of == 2
        assert not r.widen and "LayerNorm" in r.reason
    ffn = [g.name for g in groups if g.kind == "linear"]
    assert ffn and all(rules[n].widen for n in ffn)
    # widening the stream cannot be exact (LayerNorm statistics): refused, reinit is fine
    attention = next(n for n in stream if "attention" in n)
    with pytest.raises(ResizeError, match="cannot be widened function-preservingly"):
        resize(net, groups, {attention: 12})
    with pytest.raises(ResizeError, match="cannot be widened function-preservingly"):
        check_widths(net, groups, {attention: 12}, init="prune")
    check_widths(net, groups, {attention: 12})  # legal as a width
    wide = resize(net, groups, {attention: 12}, init="reinit", example_inputs=x)
    assert _found(wide, x) == {**dict.fromkeys(stream, 12), **dict.fromkeys(ffn, 16)}
    small = resize(net, groups, {attention: 6, ffn[0]: 10}, example_inputs=x)
    assert _found(small, x) == {**dict.fromkeys(stream, 6), ffn[0]: 10, ffn[1]: 16}
    new = assert_preserved(net, groups, {n: 21 for n in ffn}, x)
    assert _found(new, x)[ffn[1]] == 21
    with pytest.raises(ResizeError, match="needs a multiple of 2"):
        resize(net, groups, {attention: 5})


def test_bert_attention_keeps_the_head_size_and_adds_whole_heads():
    model, x = bert()
    groups = _groups(model, x)
    name = "encoder.layer.0.attention.self (attention)"
    rules = width_rules(model, groups)
    assert rules[name].multiple_of == 8 and rules[name].widen  # head size, not head count
    assert "head size 8" in rules[name].reason
    for init in ("net2net", "prune"):
        new = assert_preserved(model, groups, {name: 48}, x, init=init)
        attn = new.encoder.layer[0].attention.self
        assert (attn.num_attention_heads, attn.attention_head_size, attn.all_head_size) == (
            6,
            8,
            48,
        )
    assert _found(new, x)[name] == 48
    small = resize(model, groups, {name: 24}, example_inputs=x)  # 3 heads: not a multiple of 4
    assert _found(small, x)[name] == 24
    # a group holding only v (and o): heads cannot change in v alone, so it is not resizable
    g = next(g for g in groups if g.name == name)
    vo = replace(
        g,
        name="vo",
        members=tuple(m for m in g.members if ".query." not in m.param and ".key." not in m.param),
    )
    rule = width_rules(model, [vo])["vo"]
    assert not rule.resizable and "1 of the query/key/value projections" in rule.reason
    with pytest.raises(ResizeError, match="group 'vo' cannot be resized"):
        resize(model, [vo], {"vo": 40})
    for bad in (20, 36):  # 20 = 2.5 heads; 36: heads of 9
        with pytest.raises(
            ResizeError, match=r"attention.self \(attention\)' needs a multiple of 8"
        ):
            resize(model, groups, {name: bad})


def test_gpt2_attention_updates_what_its_forward_reads():
    model, x = gpt2()
    groups = _groups(model, x)
    rules = width_rules(model, groups)
    assert rules["h.0.attn (attention)"] == WidthRule(
        8, 8, (), True, "attention 'h.0.attn' keeps head size 8: width = heads × 8"
    )
    for init in ("net2net", "prune"):
        new = assert_preserved(model, groups, {"h.0.attn (attention)": 40}, x, init=init)
        attn = new.h[0].attn
        assert (attn.num_heads, attn.head_dim, attn.split_size) == (5, 8, 40)
        assert (attn.c_attn.nx, attn.c_attn.nf, attn.c_proj.nx) == (32, 120, 40)
    assert_preserved(model, groups, {"h.0.mlp.c_fc": 130}, x)
    small = resize(model, groups, {"h.0.attn (attention)": 16}, example_inputs=x)
    assert small.h[0].attn.num_heads == 2
    with pytest.raises(ResizeError, match=r"'h.0.attn \(attention\)' needs a multiple of 8"):
        resize(model, groups, {"h.0.attn (attention)": 20})
    fresh = resize(model, groups, {"h.0.attn (attention)": 48}, init="reinit", example_inputs=x)
    old_w, new_w = model.h[0].attn.c_attn.weight, fresh.h[0].attn.c_attn.weight
    assert new_w.shape == (32, 144) and not torch.equal(new_w[:, :32], old_w[:, :32])
    assert not torch.equal(fresh.wte.weight, model.wte.weight)  # Hugging Face's own initialiser


def test_grouped_query_attention_resizes_whole_key_value_heads():
    # find_groups' channel: one key/value head with its 2 query heads (k/v rows 8, q rows 16)
    model, x = llama_gqa()
    groups = _groups(model, x)
    attention = next(g.name for g in groups if g.kind == "attention")
    rules = width_rules(model, groups)
    assert rules[attention].multiple_of == 1 and rules[attention].widen
    assert "channels of 2 head(s) of 8" in rules[attention].reason
    for init in ("net2net", "prune"):
        new = assert_preserved(model, groups, {attention: 3}, x, init=init)
        attn = new.layers[0].self_attn
        assert (attn.q_proj.out_features, attn.k_proj.out_features) == (48, 24)
        assert (attn.num_key_value_groups, attn.o_proj.in_features) == (2, 48)
    assert _found(new, x)[attention] == 3
    small = resize(model, groups, {attention: 1}, example_inputs=x).layers[0].self_attn
    assert (small.q_proj.out_features, small.v_proj.out_features) == (16, 8)


@pytest.mark.parametrize(
    "builder, rows",
    [
        # one fused weight, q/k/v interleaved per head: a channel is 24 rows, 3 heads' worth
        ("hf_gpt_neox_tiny", lambda heads: 3 * 8 * heads),
        # one fused weight [q heads | k | v], one key/value head shared by every query head
        ("hf_falcon_mqa", lambda heads: 8 * heads + 16),
    ],
)
def test_fused_query_key_value_weights_gain_whole_heads(builder, rows):
    import archs

    model, x = getattr(archs, builder)()
    model.eval()
    groups = _groups(model, x)
    attention = next(g for g in groups if g.kind == "attention")
    assert attention.width == 4  # heads
    rule = width_rules(model, groups)[attention.name]
    assert rule.multiple_of == 1 and rule.widen and rule.resizable
    for heads in (6, 3):
        new = resize(model, groups, {attention.name: heads}, example_inputs=x)
        layer = next(m for n, m in new.named_modules() if n.endswith("query_key_value"))
        assert layer.out_features == rows(heads)
        assert _found(new, x)[attention.name] == heads
    torch.testing.assert_close(
        _out(resize(model, groups, {attention.name: 6}), x), _out(model, x), atol=TOL, rtol=TOL
    )


def test_a_query_side_group_keeps_the_key_value_heads():
    # surgery on groups find_groups does not make: query rows and output columns only, one
    # channel per row; the key/value heads are kept, each gets more query heads
    model, x = llama_gqa()
    p = "layers.0.self_attn."
    qo = ChannelGroup(
        "qo",
        32,
        (Member(p + "q_proj.weight", 0, "producer"), Member(p + "o_proj.weight", 1, "consumer")),
        kind="attention",
        divisor=4,
    )
    kv = ChannelGroup(
        "kv",
        16,
        (
            Member(p + "k_proj.weight", 0, "producer"),
            Member(p + "v_proj.weight", 0, "producer"),
        ),
        kind="attention",
    )
    rules = width_rules(model, [qo, kv])
    assert rules["qo"].multiple_of == 16 and rules["qo"].widen  # head size 8 × 2 key/value heads
    assert not rules["kv"].resizable and "not supported" in rules["kv"].reason
    new = assert_preserved(model, [qo, kv], {"qo": 48}, x)
    attn = new.layers[0].self_attn
    assert attn.num_key_value_groups == 3 and attn.q_proj.out_features == 48
    small = resize(model, [qo, kv], {"qo": 16}, example_inputs=x)
    assert small.layers[0].self_attn.o_proj.in_features == 16
    with pytest.raises(ResizeError, match="needs a multiple of 16"):
        resize(model, [qo, kv], {"qo": 24})
    with pytest.raises(ResizeError, match=r"group 'kv' cannot be resized"):
        resize(model, [qo, kv], {"kv": 8})


# ---------------------------------------------------------------------------------------------
# grouped convolutions and group norms


def test_grouped_convolution_keeps_channels_in_their_groups():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 8, 3, padding=1, groups=4)
            self.bn = nn.BatchNorm2d(8)
            self.c = nn.Conv2d(8, 8, 3, padding=1, groups=8)  # depthwise: follows its input
            self.d = nn.Conv2d(8, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.bn(self.b(torch.relu(self.a(x)))))
            return self.d(torch.relu(self.c(h)))

    net, x = randomise_bn(Net()), torch.randn(1, 3, 6, 6)
    groups = _groups(net, x)
    assert {g.name: g.width for g in groups} == {"a": 2, "b": 8}
    rules = width_rules(net, groups)
    # a's channels feed b's 4 conv groups: find_groups lists a's rows once per conv group (one
    # channel = one row in each), so any width keeps them apart
    assert rules["a"] == WidthRule()
    assert rules["b"].multiple_of == 4 and rules["b"].widen and "groups=4" in rules["b"].reason
    new = assert_preserved(net, groups, {"a": 3, "b": 12}, x)
    assert (new.a.out_channels, new.b.in_channels, new.b.groups) == (12, 12, 4)
    assert (new.b.out_channels, new.c.groups, new.d.in_channels) == (12, 12, 12)
    assert _found(new, x) == {"a": 3, "b": 12}
    # every new row of a (b's input) and of b (its output) copies a row of the same conv group
    only_b = resize(net, groups, {"b": 12})
    for conv, resized, old_per, new_per in (("a", new, 2, 3), ("b", only_b, 2, 3)):
        old_rows = getattr(net, conv).weight.detach()
        new_rows = getattr(resized, conv).weight.detach()
        for k in range(4):
            for r in new_rows[new_per * k : new_per * (k + 1)]:
                src = [i for i in range(len(old_rows)) if torch.equal(old_rows[i], r)]
                assert src and src[0] // old_per == k, (conv, k, src)
    with pytest.raises(ResizeError, match="group 'b' needs a multiple of 4"):
        resize(net, groups, {"b": 6})


def test_weight_standardised_convolutions_cannot_widen_their_input_exactly():
    import archs

    # NFNet's ScaledStdConv2d normalises each filter over its input channels: a widened input
    # moved the output by 5e-2 before this rule (benchmarks/resize_battery.py)
    model, x = archs.nfnet_tiny()
    model.eval()
    groups = _groups(model, x)
    rules = width_rules(model, groups)
    assert not rules["conv1"].widen and "weight-standardised" in rules["conv1"].reason
    assert rules["conv2"].widen  # its own filters (output channels) copy exactly
    with pytest.raises(ResizeError, match="group 'conv1' cannot be widened function-pres"):
        resize(model, groups, {"conv1": 10})
    assert_preserved(model, groups, {"conv2": 14}, x)
    assert _found(resize(model, groups, {"conv1": 10}, init="reinit"), x)["conv1"] == 10


def test_group_norm_needs_multiples_and_cannot_widen_exactly():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.GroupNorm(4, 8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4, 2)
    )
    x = torch.randn(2, 3, 4, 4)
    groups = _groups(net, x)
    rule = width_rules(net, groups)["0"]
    assert (rule.multiple_of, rule.widen) == (4, False) and "GroupNorm" in rule.reason
    with pytest.raises(ResizeError, match="group '0' cannot be widened function-preservingly"):
        resize(net, groups, {"0": 12})
    wide = resize(net, groups, {"0": 12}, init="reinit", example_inputs=x)
    small = resize(net, groups, {"0": 4}, example_inputs=x)
    assert _found(wide, x) == {"0": 12} and _found(small, x) == {"0": 4}
    with pytest.raises(ResizeError, match="group '0' needs a multiple of 4"):
        resize(net, groups, {"0": 6})


# ---------------------------------------------------------------------------------------------
# groups resize does not recognise; errors


def test_an_unexplained_divisor_keeps_channels_in_its_blocks():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 9), nn.ReLU(), nn.Linear(9, 2))
    group = ChannelGroup(
        "0",
        9,
        (Member("0.weight", 0, "producer"), Member("2.weight", 1, "consumer")),
        divisor=3,
    )
    rule = width_rules(net, [group])["0"]
    assert rule.multiple_of == 3 and "3 blocks" in rule.reason
    small = resize(net, [group], {"0": 6})
    rows = net[0].weight.detach()
    for j, r in enumerate(small[0].weight.detach()):  # new block j // 2 holds old block j // 2
        old = next(i for i in range(9) if torch.equal(rows[i], r))
        assert old // 3 == j // 2
    with pytest.raises(ResizeError, match="needs a multiple of 3"):
        resize(net, [group], {"0": 7})


def test_blocked_channel_map_matches_a_naive_reference():
    gen = torch.Generator().manual_seed(0)
    for blocks, unit, old, new in [(2, 1, 8, 12), (1, 4, 16, 8), (2, 3, 12, 24), (3, 2, 18, 6)]:
        imp = torch.rand(old, generator=gen, dtype=torch.float64)
        got = channel_map(imp, new, blocks=blocks, unit=unit).tolist()
        expected = []
        per, n_new = old // blocks, new // blocks // unit
        for b in range(blocks):
            units = list(range(per // unit))
            score = {
                u: float(imp[b * per + u * unit : b * per + (u + 1) * unit].sum()) for u in units
            }
            ranked = sorted(units, key=lambda u: -score[u])
            if n_new <= len(units):
                chosen = sorted(ranked[:n_new])
            else:
                chosen = units + [ranked[i % len(units)] for i in range(n_new - len(units))]
            expected += [b * per + u * unit + r for u in chosen for r in range(unit)]
        assert got == expected, (blocks, unit, old, new)


def test_a_broken_plan_fails_as_resize_error_naming_the_group():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 2))
    # a wrong group: its consumer is the layer after the next one
    wrong = ChannelGroup(
        "0", 4, (Member("0.weight", 0, "producer"), Member("2.weight", 1, "consumer"))
    )
    bad = ChannelGroup(
        "bad", 2, (Member("2.weight", 0, "producer"), Member("0.weight", 1, "consumer"))
    )
    x = torch.randn(3, 3)
    with pytest.raises(ResizeError, match=r"\['bad'\].*fails its forward pass"):
        resize(net, [wrong, bad], {"bad": 3}, example_inputs=x)
    not_a_param = ChannelGroup("gone", 4, (Member("9.weight", 0, "producer"),))
    with pytest.raises(ResizeError, match="group 'gone' names parameters the model lacks"):
        resize(net, [not_a_param], {"gone": 5})
    # a model that cannot be copied (a lock, an open file, ...): one line, not deepcopy's error
    import threading

    net.lock = threading.Lock()
    with pytest.raises(ResizeError, match=r"\['0'\]: the model cannot be copied .*TypeError"):
        resize(net, [wrong], {"0": 5})


def test_every_corrupted_group_fails_as_resize_error_naming_it():
    # each member of each found group of an MLP, a ResNet and GPT-2 broken one way at a time
    # (wrong dim, offset, repeat, role; dropped): the resize runs or raises ResizeError naming
    # the group, never another exception
    ran = refused = 0
    for model, x in (mlp(), (randomise_bn(ResNet()), torch.randn(2, 3, 5, 5)), gpt2()):
        groups = _groups(model, x)
        for g in groups:
            for k, m in enumerate(g.members):
                for bad in (
                    replace(m, dim=1 - m.dim if m.dim < 2 else 0),
                    replace(m, offset=m.offset + 1),
                    replace(m, repeat=m.repeat + 1),
                    replace(m, role="consumer" if m.role != "consumer" else "producer"),
                    None,
                ):
                    members = g.members[:k] + ((bad,) if bad else ()) + g.members[k + 1 :]
                    broken = [replace(h, members=members) if h is g else h for h in groups]
                    try:
                        resize(model, broken, {g.name: g.width + 1}, example_inputs=x)
                        ran += 1
                    except ResizeError as exc:
                        assert repr(g.name) in str(exc), str(exc)
                        refused += 1
    assert refused > 0 and ran > 0


def test_check_widths_and_resize_share_defaults():
    torch.manual_seed(0)
    net, x = RNNNet(nn.GRU, num_layers=2).eval(), torch.randn(2, 5, 4)
    groups = _groups(net, x)
    assert check_widths(net, groups, {"rnn.l0 (hidden)": 9}) is None
    with pytest.raises(ResizeError, match="no channel group named 'x'"):
        check_widths(net, groups, {"x": 3})
    with pytest.raises(ResizeError, match="cannot be resized to 0"):
        check_widths(net, groups, {"rnn.l0 (hidden)": 0})
    with pytest.raises(ResizeError, match="must be an integer"):
        check_widths(net, groups, {"rnn.l0 (hidden)": 6.5})
    assert inspect.signature(resize).parameters["init"].default == "net2net"


def test_tied_input_and_output_embeddings_stay_tied():
    torch.manual_seed(0)

    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(20, 8)
            self.body = nn.Linear(8, 8)
            self.head = nn.Linear(8, 20, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            h = self.emb(ids)
            return self.head(h + torch.tanh(self.body(h)))

    net, x = LM().eval(), torch.randint(0, 20, (2, 5))
    # the residual stream, its output layer named by the tied tensor's second name
    stream = ChannelGroup(
        "stream",
        8,
        (
            Member("emb.weight", 1, "producer"),
            Member("body.weight", 1, "consumer"),
            Member("body.weight", 0, "producer"),
            Member("body.bias", 0, "other"),
            Member("head.weight", 1, "consumer"),
        ),
        kind="residual",
    )
    rule = width_rules(net, [stream])["stream"]
    assert not rule.widen and "tied weight 'emb.weight'" in rule.reason
    with pytest.raises(ResizeError, match="cannot be widened function-preservingly"):
        resize(net, [stream], {"stream": 10})
    keep = channel_map(torch.from_numpy(_norms(net, stream)), 6)
    small = resize(net, [stream], {"stream": 6}, example_inputs=x)
    assert small.head.weight is small.emb.weight
    torch.testing.assert_close(small.emb.weight, net.emb.weight[:, keep], rtol=0, atol=0)
    assert _out(small, x).shape == (2, 5, 20)
    wide = resize(net, [stream], {"stream": 12}, init="reinit", example_inputs=x)
    assert wide.head.weight is wide.emb.weight and wide.emb.weight.shape == (20, 12)


def _norms(net: nn.Module, group: ChannelGroup):
    from widthwise.norms import channel_norms

    return channel_norms(net, [group])[group.name]


# ---------------------------------------------------------------------------------------------
# trial resizes (width_rules with example_inputs)


def test_trial_resizes_tie_groups_coupled_by_a_reshape():
    import archs

    # its attention output is reshaped to the residual width: neither group resizes alone
    model, x = archs.handwritten_attention()
    groups = _groups(model, x)
    names = {g.name for g in groups}
    assert names == {"embed+proj (residual)", "q+k+v (attention)"}
    static = width_rules(model, groups)
    assert all(not r.tied for r in static.values())
    probed = width_rules(model, groups, example_inputs=x)
    for name in names:
        assert set(probed[name].tied) == names - {name} and probed[name].resizable
        assert "alone it breaks the forward pass" in probed[name].reason
    with pytest.raises(ResizeError, match="fails its forward pass"):
        resize(model, groups, {"q+k+v (attention)": 20}, init="reinit", example_inputs=x)
    new = resize(model, groups, dict.fromkeys(names, 20), init="reinit", example_inputs=x)
    assert _found(new, x) == dict.fromkeys(names, 20)


def test_trial_resizes_fix_a_group_nothing_can_resize():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(3, 8), nn.Linear(8, 6), nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.fc1(x)).view(-1, 2, 4).flatten(1)  # a literal shape
            return self.fc3(torch.relu(self.fc2(h)))

    net, x = Net(), torch.randn(4, 3)
    groups = _groups(net, x)
    rules = width_rules(net, groups, example_inputs=x)
    assert not rules["fc1"].resizable and not rules["fc1"].allows(9)
    assert "shape '[-1, 2, 4]' is invalid" in rules["fc1"].reason
    assert rules["fc2"] == WidthRule()


def test_depthwise_convolution_with_a_channel_multiplier_follows_its_input():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, padding=1, groups=4),  # 2 output channels per input channel
        nn.ReLU(),
        nn.Conv2d(8, 2, 1),
    ).eval()
    x = torch.randn(1, 3, 5, 5)
    group = ChannelGroup(
        "0",
        4,
        (
            Member("0.weight", 0, "producer"),
            Member("0.bias", 0, "other"),
            Member("2.weight", 0, "producer", repeat=2),
            Member("2.bias", 0, "other", repeat=2),
            Member("4.weight", 1, "consumer", repeat=2),
        ),
        kind="conv",
    )
    assert width_rules(net, [group])["0"] == WidthRule()
    wide = assert_preserved(net, [group], {"0": 6}, x)
    assert (wide[2].in_channels, wide[2].out_channels, wide[2].groups) == (6, 12, 6)
    small = resize(net, [group], {"0": 3}, example_inputs=x)
    assert (small[2].in_channels, small[2].out_channels, small[2].groups) == (3, 6, 3)


def test_vit_attention_from_find_groups():
    import archs

    model, x = archs.hf_vit_tiny()
    model.eval()
    groups = _groups(model, x)
    attention = [g.name for g in groups if g.kind == "attention"]
    assert len(attention) == 2
    rules = width_rules(model, groups)
    assert all(rules[n].multiple_of == 8 and rules[n].widen for n in attention)
    new = assert_preserved(model, groups, {attention[0]: 32}, x)
    assert _found(new, x)[attention[0]] == 32
    with pytest.raises(ResizeError, match="needs a multiple of 8"):
        resize(model, groups, {attention[1]: 12})
