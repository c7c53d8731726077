"""find_groups on the architecture patterns of issue 13 (tests/archs.py ``PATTERNS``).

For each pattern: the groups expected from the architecture's definition, or what must be left
out and the one warning that says so; and, independently of find_groups' own check, every group
it returns is permuted with naive per-channel loops on a randomised copy of the model and the
output must not change. Also: the time bound, and the cases that used to be silent.
"""

from __future__ import annotations

import time
import warnings

import pytest
import torch
from torch import nn

import archs
from test_groups import M, assert_each_group_is_a_symmetry, check, consumer, norm
from widthwise import GroupingWarning, find_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def run(arch, **kw):
    """(model, inputs, groups, GroupingWarning messages)."""
    model, x = archs.PATTERNS[arch]()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        groups = find_groups(model, x, **kw)
    msgs = [str(r.message) for r in record if r.category is GroupingWarning]
    return model, x, groups, msgs


def rows(name, offset=0, repeat=1, gate=None, bias=True, dim=0):
    out = [M(f"{name}.weight", dim, "producer", offset, repeat, gate)]
    if bias:
        out.append(M(f"{name}.bias", 0, "other", offset, repeat, gate))
    return out


# ---------------------------------------------------------------------------------------------
# fully grouped: no warning, structure from the definition


def test_gpt2_tied_head_and_conv1d():
    model, _x, groups, msgs = run("hf_gpt2_tiny")
    assert msgs == []
    t, d = "transformer", model.config.n_embd
    h = f"{t}.h.0"
    names = {n for n, _ in model.named_parameters()}
    assert "lm_head.weight" not in names  # tied: named_parameters() lists wte only
    # Conv1D stores [in, out]: producers are columns (dim 1), consumers rows (dim 0)
    stream = [
        M(f"{t}.wte.weight", 1, "producer"),
        M(f"{t}.wpe.weight", 1, "producer"),
        *norm(f"{h}.ln_1"),
        M(f"{h}.attn.c_attn.weight", 0, "consumer"),
        *rows(f"{h}.attn.c_proj", dim=1),
        *norm(f"{h}.ln_2"),
        M(f"{h}.mlp.c_fc.weight", 0, "consumer"),
        *rows(f"{h}.mlp.c_proj", dim=1),
        *norm(f"{t}.ln_f"),
    ]
    qkv = [
        m for g, gate in enumerate("qkv") for m in rows(f"{h}.attn.c_attn", g * d, 1, gate, dim=1)
    ]
    check(
        groups,
        {
            f"{t} (residual)": (d, "residual", 1, stream),
            f"{h}.attn (attention)": (
                d,
                "attention",
                model.config.n_head,
                [*qkv, M(f"{h}.attn.c_proj.weight", 0, "consumer")],
            ),
            f"{h}.mlp.c_fc": (
                4 * d,
                "linear",
                1,
                [*rows(f"{h}.mlp.c_fc", dim=1), M(f"{h}.mlp.c_proj.weight", 0, "consumer")],
            ),
        },
    )


@pytest.mark.parametrize("arch", ["hf_llama_tiny", "hf_mistral_gqa", "hf_qwen2_gqa"])
def test_rotary_and_grouped_query_attention_permute_whole_heads(arch):
    model, _x, groups, msgs = run(arch)
    assert msgs == []
    cfg = model.config
    hd = cfg.hidden_size // cfg.num_attention_heads
    kv, r = cfg.num_key_value_heads, cfg.num_attention_heads // cfg.num_key_value_heads
    a = "model.layers.0.self_attn"
    bias = arch == "hf_qwen2_gqa"
    # one channel = one key/value head: its r query heads, its k and v rows, r heads of o
    members = [
        *rows(f"{a}.q_proj", repeat=r * hd, bias=bias),
        *rows(f"{a}.k_proj", repeat=hd, bias=bias),
        *rows(f"{a}.v_proj", repeat=hd, bias=bias),
        M(f"{a}.o_proj.weight", 1, "consumer", 0, r * hd),
    ]
    got = {g.name: g for g in groups}
    g = got[f"{a} (attention)"]
    assert (g.width, g.kind, g.divisor) == (kv, "attention", 1)
    assert set(g.members) == set(members)
    mlp = got["model.layers.0.mlp.gate_proj"]  # SwiGLU: gate and up rows, down columns
    assert set(mlp.members) == {
        *rows("model.layers.0.mlp.gate_proj", bias=False),
        *rows("model.layers.0.mlp.up_proj", bias=False),
        *consumer("model.layers.0.mlp.down_proj"),
    }
    assert mlp.width == cfg.intermediate_size
    stream = got["model (residual)"]
    assert M("model.norm.weight", 0, "norm") in stream.members  # RMSNorm scale is a norm


def test_grouped_convolution():
    model, _x, groups, msgs = run("resnext_block")
    assert msgs == []
    G, C = model.conv2.groups, model.conv2.in_channels
    a = C // G  # channel i of conv1's group is channel i of every block of conv2
    blocks = [m for k in range(G) for m in [*rows("conv1", k * a, bias=False)]]
    blocks += [M(f"bn1.{p}", 0, "norm", k * a) for p in ("weight", "bias") for k in range(G)]
    check(
        groups,
        {
            "stem+conv3 (residual)": (
                16,
                "residual",
                1,
                [
                    *rows("stem", bias=False),
                    *norm("bn0"),
                    *consumer("conv1"),
                    *rows("conv3", bias=False),
                    *norm("bn3"),
                    *consumer("fc"),
                ],
            ),
            "conv1": (a, "conv", 1, [*blocks, *consumer("conv2")]),
            # rows of block g compute outputs [g*C/G, (g+1)*C/G): permutable within blocks
            "conv2": (C, "conv", G, [*rows("conv2", bias=False), *norm("bn2"), *consumer("conv3")]),
        },
    )


def test_fused_qkv_reshaped_and_permuted():
    model, _x, groups, msgs = run("fused_qkv_vit")
    assert msgs == []
    d = model.proj.in_features
    qkv = [m for g, gate in enumerate("qkv") for m in rows("qkv", g * d, 1, gate)]
    got = {g.name: g for g in groups}
    g = got["qkv (attention)"]
    assert (g.width, g.kind, g.divisor) == (d, "attention", model.heads)
    assert set(g.members) == {*qkv, *consumer("proj")}
    assert M("pos", 2, "other") in got["patch+proj+fc2 (residual)"].members


def test_fused_swiglu_is_two_gate_blocks():
    model, _x, groups, msgs = run("swiglu_fused")
    assert msgs == []
    h = model.down.in_features
    got = {g.name: g for g in groups}
    assert set(got["gate_up"].members) == {*rows("gate_up"), *rows("gate_up", h), *consumer("down")}
    assert (got["gate_up"].width, got["gate_up"].kind) == (h, "linear")


def test_ghost_concat_of_x_and_cheap_x():
    model, _x, groups, msgs = run("ghost_module")
    assert msgs == []
    c = model.primary.out_channels
    got = {g.name: g for g in groups}
    # cat([a, cheap(a)]): the depthwise conv follows a, and 'out' reads a at 0 and at c
    assert set(got["primary"].members) == {
        *rows("primary", bias=False),
        *norm("bn1"),
        *rows("cheap", bias=False),
        *norm("bn2"),
        *consumer("out", 0),
        *consumer("out", c),
    }


def test_per_channel_gain_is_a_member():
    _model, _x, groups, msgs = run("nfnet_tiny")
    assert msgs == []
    got = {g.name: g for g in groups}
    assert M("conv1.gain", 0, "other") in got["conv1"].members
    assert M("conv2.gain", 0, "other") in got["conv2"].members


def test_lstm_with_proj_size():
    model, _x, groups, msgs = run("proj_lstm")
    assert msgs == []
    rnn = model.rnn
    h, p = rnn.hidden_size, rnn.proj_size
    got = {g.name: g for g in groups}
    for layer in range(rnn.num_layers):
        cell = got[f"rnn.l{layer} (cell)"]
        assert cell.width == h
        assert M(f"rnn.weight_hr_l{layer}", 1, "consumer") in cell.members
        assert M(f"rnn.weight_hh_l{layer}", 0, "producer", 3 * h, gate="o") in cell.members
        hidden = got[f"rnn.l{layer} (hidden)"]
        assert hidden.width == p
        nxt = f"rnn.weight_ih_l{layer + 1}" if layer + 1 < rnn.num_layers else "head.weight"
        assert set(hidden.members) == {
            M(f"rnn.weight_hr_l{layer}", 0, "producer"),
            M(f"rnn.weight_hh_l{layer}", 1, "consumer"),
            M(nxt, 1, "consumer"),
        }


def test_learned_initial_state_joins_the_hidden_group_and_keeps_the_embedding():
    _model, _x, groups, msgs = run("learned_h0_gru")
    assert msgs == []
    got = {g.name: g for g in groups}
    assert set(got) == {"embed", "rnn.l0 (hidden)"}
    assert M("h0", 2, "other") in got["rnn.l0 (hidden)"].members


def test_t5_shared_embedding_is_named_once():
    model, _x, groups, msgs = run("hf_t5_tiny")
    params = dict(model.named_parameters())
    for g in groups:
        assert all(m.param in params for m in g.members), g.name
    assert "decoder.embed_tokens.weight" not in params  # tied to shared.weight
    assert msgs == []
    # the shared embedding starts both residual streams, so they are one group: the encoder's
    # output is read by the decoder's cross-attention keys and values
    stream = next(g for g in groups if g.kind == "residual")
    assert stream.width == model.config.d_model
    assert sum(m.param == "shared.weight" for m in stream.members) == 1
    x = "decoder.block.0.layer.1.EncDecAttention"
    for p in ("encoder.block.0.layer.0.SelfAttention.o", f"{x}.k", f"{x}.v", f"{x}.o"):
        assert any(m.param == f"{p}.weight" for m in stream.members), p


def test_raw_weight_and_bias_in_f_linear_are_a_linear_layer():
    model, _, groups, msgs = run("raw_linear_bias")
    assert msgs == []
    check(
        groups,
        {
            "w": (
                model.w.shape[0],
                "linear",
                1,
                [M("w", 0, "producer"), M("b", 0, "other"), *consumer("fc2")],
            ),
            "fc1": (model.fc1.out_features, "linear", 1, [*rows("fc1"), M("w", 1, "consumer")]),
        },
    )
    assert not hasattr(model, "_widthwise_linear0")  # the stand-in is gone again


def test_token_mask_keeps_the_group_and_a_channel_mask_is_named():
    _, _, groups, msgs = run("masked_mlp")
    assert [g.name for g in groups] == ["fc1"] and msgs == []
    _, _, groups, msgs = run("masked_mlp_per_channel")
    assert groups == [] and len(msgs) == 1
    assert "fc1" in msgs[0] and "model input" in msgs[0]


# ---------------------------------------------------------------------------------------------
# left out, with one warning that names it


@pytest.mark.parametrize(
    "arch, named",
    [
        ("single_linear", ["no channel group"]),
        ("buffer_positions", ["tok+fc2 (residual)", "fixed tensors 'table' (buffers"]),
    ],
)
def test_left_out_with_one_warning(arch, named):
    t = time.perf_counter()
    _, _, _groups, msgs = run(arch)
    assert time.perf_counter() - t < 5  # the dependency walk is bounded
    assert len(msgs) == 1
    for n in named:
        assert n in msgs[0]


def test_timeout_leaves_out_what_is_unfinished():
    model, x = archs.resnet_small()
    with pytest.warns(GroupingWarning, match="not examined within timeout") as record:
        groups = find_groups(model, x, timeout=1e-9)
    assert groups == [] and len([r for r in record if r.category is GroupingWarning]) == 1
    with pytest.raises(Exception, match="timeout"):
        find_groups(model, x, timeout=0)


def test_grouped_conv_producer_alone_is_not_silent():
    """A grouped conv whose output goes straight to the model output: dropped (output width),
    but a grouped transposed conv feeding a layer is named, not silently skipped."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.up = nn.ConvTranspose2d(8, 8, 2, stride=2, groups=2)
            self.b = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.b(self.up(self.a(x)))

    with pytest.warns(GroupingWarning, match="grouped transposed convolution 'up'"):
        find_groups(Net(), torch.randn(1, 3, 4, 4))


# ---------------------------------------------------------------------------------------------
# independent check of every group returned


@pytest.mark.parametrize("arch", list(archs.PATTERNS))
def test_every_group_is_a_symmetry(arch):
    model, x, groups, _ = run(arch)
    # without grad: the old weight_norm hooks leave a non-leaf ``weight`` behind a forward with
    # grad, and such a module cannot be deep-copied
    with torch.no_grad():
        assert_each_group_is_a_symmetry(model, x, groups)
    assert all(len(g.members) == len(set(g.members)) for g in groups)


def test_csp_chunk_splits_the_stem_into_its_two_halves():
    model, _, groups, msgs = run("csp_block")
    assert msgs == []
    h = model.a.in_channels  # x.chunk(2): x1 = channels [0, h) goes to trans, x2 = [h, 2h)
    got = {g.name: g for g in groups}
    assert set(got["stem"].members) == {*rows("stem"), *consumer("trans")}
    assert set(got["stem+b (residual)"].members) == {
        *rows("stem", h),
        *consumer("a"),
        *rows("b"),
        *consumer("trans", h),
    }
    assert got["stem"].width == got["stem+b (residual)"].width == h


def test_res2net_split_pieces_are_separate_groups():
    model, _, groups, msgs = run("res2net_block")
    assert msgs == []
    w = model.w
    # piece i of conv1's output (offset i*w) is read by convs.(i-1)'s residual sum, or by
    # conv3 directly (the last piece); every group has the piece width
    rows_of = {
        m.offset: g for g in groups for m in g.members if m.param == "conv1.weight" and m.dim == 0
    }
    assert sorted(rows_of) == [0, w, 2 * w, 3 * w]
    assert all(g.width == w for g in rows_of.values())
    assert len({g.name for g in rows_of.values()}) == 4
    # piece 1 is added to convs.0's output: one group with convs.0's rows and convs.1's columns
    assert M("convs.0.weight", 0, "producer") in rows_of[w].members
    assert M("convs.1.weight", 1, "consumer") in rows_of[w].members
    assert M("conv3.weight", 1, "consumer", 3 * w) in rows_of[3 * w].members


def test_fused_qkv_grouped_by_head_and_multi_query_attention():
    model, _, groups, msgs = run("hf_gpt_neox_tiny")
    assert msgs == []
    cfg = model.config
    hd = cfg.hidden_size // cfg.num_attention_heads
    a = "gpt_neox.layers.0.attention"
    g = next(g for g in groups if g.kind == "attention")
    # query_key_value rows are [q_h, k_h, v_h] per head: one channel = 3*hd rows, hd columns
    assert g.width == cfg.num_attention_heads
    assert set(g.members) == {
        *rows(f"{a}.query_key_value", repeat=3 * hd),
        M(f"{a}.dense.weight", 1, "consumer", 0, hd),
    }

    model, _, groups, msgs = run("hf_gemma_mqa")
    assert msgs == []
    hd = model.config.head_dim
    a = "model.layers.0.self_attn"
    g = next(g for g in groups if g.kind == "attention")
    # one shared key/value head: the query heads permute with their o_proj columns
    assert g.width == model.config.num_attention_heads
    assert set(g.members) == {
        *rows(f"{a}.q_proj", repeat=hd, bias=False),
        M(f"{a}.o_proj.weight", 1, "consumer", 0, hd),
    }


# every pattern not named in test_left_out_with_one_warning or the mask test is fully grouped
FULLY_GROUPED = sorted(
    set(archs.PATTERNS)
    - {"single_linear", "masked_mlp_per_channel", "buffer_positions"}
    - {"split_attn"}  # left out on purpose: test_groups_split.py
)


@pytest.mark.parametrize("arch", FULLY_GROUPED)
def test_fully_grouped_without_a_warning(arch):
    model, _, groups, msgs = run(arch)
    assert msgs == [], msgs
    assert groups
    # members name parameters as named_parameters() does (tied tensors once)
    tracked = {m.param for g in groups for m in g.members}
    assert tracked <= {n for n, _ in model.named_parameters()}


def test_patch_merging_channels_are_four_features_apart():
    model, _, groups, msgs = run("patch_merging")
    assert msgs == []
    c = model.embed.out_features
    g = next(g for g in groups if g.name == "embed")
    # reshape(b, h/2, 2, w/2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3): feature = k*c + ch
    placed = [(o, 1) for o in range(0, 4 * c, c)]
    assert set(g.members) == {
        *rows("embed"),
        *(M("reduction.weight", 1, "consumer", o, r) for o, r in placed),
        *(M(f"norm.{q}", 0, "norm", o, r) for o, r in placed for q in ("weight", "bias")),
    }


def test_ignore_applies_to_attention_found_around_a_failed_walk():
    model, x = archs.hf_llama_tiny()
    a = "model.layers.0.self_attn"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = [g.name for g in find_groups(model, x, ignore=[f"{a}.q_proj"])]
    assert f"{a} (attention)" not in names and "model (residual)" in names


def test_pixel_shuffle_reads_four_consecutive_channels():
    _, _, groups, msgs = run("pixel_shuffle_net")
    assert msgs == []
    g = next(g for g in groups if g.name == "a")
    assert (g.width, g.kind) == (4, "conv")
    assert set(g.members) == {*rows("a", repeat=4), *consumer("b")}


def test_hf_swin_patch_merging_places_the_first_stage_stream():
    model, _, groups, msgs = run("hf_swin_tiny")
    assert msgs == []
    c = model.config.embed_dim
    stream = next(g for g in groups if g.width == c and g.kind == "residual")
    red = "swin.encoder.layers.0.downsample.reduction.weight"
    # the 4 neighbours are concatenated: stage-1 channel ch is feature k*c + ch of the merge
    assert {m.offset for m in stream.members if m.param == red} == {0, c, 2 * c, 3 * c}


def test_a_frozen_position_table_joins_the_stream_and_stays_frozen():
    model, _, groups, msgs = run("frozen_positions")
    assert msgs == []
    d, h = model.tok.embedding_dim, model.fc1.out_features
    check(
        groups,
        {
            "tok+pos+fc2 (residual)": (
                d,
                "residual",
                1,
                [
                    M("tok.weight", 1, "producer"),
                    M("pos.weight", 1, "producer"),
                    *norm("norm"),
                    *consumer("fc1"),
                    *rows("fc2"),
                    *consumer("head"),
                ],
            ),
            "fc1": (h, "linear", 1, [*rows("fc1"), *consumer("fc2")]),
        },
    )
    assert not model.pos.weight.requires_grad  # find_groups put the flag back
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("pos"))


def test_hf_marian_position_tables_are_members_of_both_streams():
    model, _, groups, msgs = run("hf_marian_tiny")
    assert msgs == []
    stream = next(g for g in groups if g.kind == "residual")
    params = {m.param for m in stream.members}
    assert {"model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight"} <= (
        params
    )
    assert not model.model.encoder.embed_positions.weight.requires_grad


@pytest.mark.parametrize(
    "arch, v, g",
    [
        (
            "weight_norm_net",
            "parametrizations.weight.original1",
            "parametrizations.weight.original0",
        ),
        ("weight_norm_hooks", "weight_v", "weight_g"),
    ],
)
def test_weight_norm_direction_and_magnitude_are_members(arch, v, g):
    model, _, groups, msgs = run(arch)
    assert msgs == []
    c, h = model.a.out_channels, model.b.out_channels
    # w = g v / ||v||: a normalises each output channel (dim=0, g per channel); pos normalises
    # each kernel tap (dim=2, g per tap, so not a member)
    check(
        groups,
        {
            "a+pos (residual)": (
                c,
                "residual",
                1,
                [
                    M(f"a.{v}", 0, "producer"),
                    M(f"a.{g}", 0, "other"),
                    M("a.bias", 0, "other"),
                    M(f"pos.{v}", 0, "producer"),
                    M("pos.bias", 0, "other"),
                    M(f"pos.{v}", 1, "consumer"),
                    *consumer("b"),
                ],
            ),
            "b": (h, "conv", 1, [*rows("b"), *consumer("head")]),
        },
    )


def test_embedding_bag_columns_are_a_group():
    model, _, groups, msgs = run("embedding_bag")
    assert msgs == []
    check(
        groups,
        {
            "bag": (
                model.bag.embedding_dim,
                "embedding",
                1,
                [M("bag.weight", 1, "producer"), *consumer("fc")],
            ),
            "fc": (model.fc.out_features, "linear", 1, [*rows("fc"), *consumer("head")]),
        },
    )


def test_a_head_on_cat_of_class_token_and_patch_mean_reads_each_channel_twice():
    model, _, groups, msgs = run("cls_mean_head")
    assert msgs == []
    d = model.patch.out_features
    stream = next(g for g in groups if g.kind == "residual")
    assert stream.width == d
    assert set(stream.members) == {
        *rows("patch"),
        M("cls", 2, "other"),
        M("pos", 2, "other"),
        *norm("norm"),
        *consumer("fc1"),
        *rows("fc2"),
        *consumer("head", 0),
        *consumer("head", d),
    }


def test_a_frozen_rotary_table_does_not_tie_the_layers_heads_together():
    model, _, groups, msgs = run("frozen_rotary")
    assert msgs == []
    names = {g.name for g in groups}
    assert {"layers.0 (attention)", "layers.1 (attention)"} <= names, names
    assert not any(m.param == "table.weight" for g in groups for m in g.members)
    assert not model.table.weight.requires_grad


def test_fused_qkv_with_half_as_many_key_value_heads_groups_whole_key_value_heads():
    model, _, groups, msgs = run("fused_gqa")
    assert msgs == []
    d, hd, kvh = model.o_proj.in_features, model.hd, model.kv_heads
    q_rows = d // kvh  # the query heads that share one key/value head
    got = {g.name: g for g in groups}
    att = got["qkv_proj (attention)"]
    assert (att.width, att.kind) == (kvh, "attention")
    assert set(att.members) == {
        M("qkv_proj.weight", 0, "producer", 0, q_rows, "q"),
        M("qkv_proj.weight", 0, "producer", d, hd, "k"),
        M("qkv_proj.weight", 0, "producer", d + kvh * hd, hd, "v"),
        M("o_proj.weight", 1, "consumer", 0, q_rows),
    }


def test_a_concat_on_the_last_feature_dim_places_each_piece():
    model, _, groups, msgs = run("trigram_embedding")
    assert msgs == []
    e, d = model.tok.embedding_dim, model.proj.out_features
    got = {g.name: g for g in groups}
    # cat([left, e, right], dim=2): embedding channel c is read at c, e + c and 2e + c
    assert set(got["tok"].members) == {
        M("tok.weight", 1, "producer"),
        *(consumer("proj", off)[0] for off in (0, e, 2 * e)),
    }
    assert got["tok"].width == e
    stream = next(g for g in groups if g.kind == "residual")
    assert stream.width == d and set(rows("proj")) <= set(stream.members)


def test_a_concat_on_time_is_not_read_as_channels():
    model, _, groups, msgs = run("time_cat")
    assert msgs == []
    check(
        groups,
        {
            "a": (model.a.out_channels, "conv", 1, [*rows("a"), *consumer("b")]),
            "b": (model.b.out_channels, "conv", 1, [*rows("b"), *consumer("head")]),
        },
    )


def test_a_bilinearly_resampled_position_table_is_a_member_not_a_matmul():
    model, _, groups, msgs = run("interpolated_positions")
    assert msgs == []  # 'upsamplebilinear2d' is a resampling, not a linear layer
    stream = next(g for g in groups if g.kind == "residual")
    assert stream.width == model.patch.out_channels
    assert M("pos", 2, "other") in stream.members
    assert {*rows("patch"), *norm("norm"), *consumer("fc1"), *rows("fc2")} <= set(stream.members)


# ---------------------------------------------------------------------------------------------
# timm CNN patterns


def test_inception_split_pieces_and_reshaped_layer_scale():
    model, x, groups, msgs = run("inception_dw")
    assert msgs == []
    # stage 0: the stream's x_id piece and each depthwise piece are separate groups; the
    # per-channel scale gamma.reshape(1, -1, 1, 1) keeps every channel where it is
    first = model.splits[0][0]
    ident = [
        M("stem.weight", 0, "producer", 0),
        M("stem.bias", 0, "other", 0),
        M("down.1.weight", 1, "consumer", 0),
        *(M(f"norm.0.{w}", 0, "norm", 0) for w in ("weight", "bias")),
        M("fc1.0.weight", 1, "consumer", 0),
        M("fc2.0.weight", 0, "producer", 0),
        M("fc2.0.bias", 0, "other", 0),
        M("gamma.0", 0, "other", 0),
    ]
    got = {g.name: g for g in groups}
    g = got["stem+fc2.0 (residual)"]
    assert (g.width, set(g.members)) == (first, set(ident))
    for k in range(3):
        off = first + k * model.splits[0][k + 1]
        g = got[f"stem+dw.0.{k}+fc2.0 (residual)"]
        assert M(f"dw.0.{k}.weight", 0, "producer", 0) in g.members
        assert M("gamma.0", 0, "other", off) in g.members
    with torch.no_grad():
        assert_each_group_is_a_symmetry(model, x, groups)


def test_partial_attention_untouched_channels_values_and_keys_are_groups():
    model, x, groups, msgs = run("partial_attention")
    assert msgs == []
    p, qk, c = model.pdim, model.qk_dim, model.proj.out_channels
    stream = ["stem", "proj"]
    first = [m for n in stream for m in rows(n)] + [
        *norm("pre_norm"),
        *consumer("qkv"),
        *consumer("head"),
    ]
    rest = [m for n in stream for m in rows(n, p)] + [*consumer("proj", p), *consumer("head", p)]
    values = [*rows("qkv", 2 * qk), *consumer("proj")]
    keys = [*rows("qkv"), *rows("qkv", qk)]  # q and k meet in q^T @ k: one permutation
    check(
        groups,
        {
            "stem+proj (residual)": (p, "residual", 1, first),
            "stem+proj (residual) #2": (c - p, "residual", 1, rest),
            "qkv (attention)": (p, "attention", 1, values),
            "attention (keys)": (qk, "attention", 1, keys),
        },
    )
    with torch.no_grad():
        assert_each_group_is_a_symmetry(model, x, groups)


def test_partial_conv_splits_the_stream_where_the_conv_reads_it():
    model, x, groups, msgs = run("partial_conv")
    assert msgs == []
    p, c = model.part, model.stem.out_channels
    stream = ["stem", "fc2"]
    conv_part = [m for n in stream for m in rows(n)] + [
        *consumer("partial_conv3"),
        *consumer("head"),
    ]
    untouched = [m for n in stream for m in rows(n, p)] + [
        *consumer("fc1", p),
        *consumer("head", p),
    ]
    check(
        groups,
        {
            "stem+fc2 (residual)": (p, "residual", 1, conv_part),
            "stem+fc2 (residual) #2": (c - p, "residual", 1, untouched),
            "partial_conv3": (p, "conv", 1, [*rows("partial_conv3", bias=False), *consumer("fc1")]),
            "fc1": (2 * c, "conv", 1, [*rows("fc1"), *norm("bn"), *consumer("fc2")]),
        },
    )
    with torch.no_grad():
        assert_each_group_is_a_symmetry(model, x, groups)


def test_a_shortcut_added_to_the_first_channels_leaves_the_rest_a_group():
    model, x, groups, msgs = run("partial_residual")
    assert msgs == []
    cin, cout = model.cin, model.pwl.out_channels
    first = [*rows("stem"), *consumer("expand"), *rows("pwl"), *norm("bn"), *consumer("head")]
    bn_rest = [M(f"bn.{w}", 0, "norm", cin) for w in ("weight", "bias")]
    rest = [*rows("pwl", cin), *bn_rest, *consumer("head", cin)]
    expand = [*rows("expand"), *rows("dw"), *consumer("pwl")]
    check(
        groups,
        {
            "stem+pwl (residual)": (cin, "residual", 1, first),
            "pwl": (cout - cin, "conv", 1, rest),
            "expand": (2 * cin, "conv", 1, expand),
        },
    )
    with torch.no_grad():
        assert_each_group_is_a_symmetry(model, x, groups)


def test_ghost_concat_cut_short_reads_all_but_the_last_channels_twice():
    model, x, groups, msgs = run("ghost_slice")
    assert msgs == []
    init = model.primary_conv.out_channels
    twice = model.out - init  # channels whose cheap copy survives the [:, :out] slice
    stem = [*rows("conv_stem"), *norm("bn1"), *consumer("primary_conv")]
    head = [*rows("conv_head"), *consumer("head")]

    def ghost(off, reads):
        out = [*rows("primary_conv", off, bias=False), *rows("cheap_operation", off, bias=False)]
        return out + [m for r in reads for m in consumer("conv_head", r)]

    check(
        groups,
        {
            "conv_stem": (4, "conv", 1, stem),
            "primary_conv": (twice, "conv", 1, ghost(0, [0, init])),
            "primary_conv #2": (init - twice, "conv", 1, ghost(twice, [twice])),
            "conv_head": (6, "conv", 1, head),
        },
    )
    with torch.no_grad():
        assert_each_group_is_a_symmetry(model, x, groups)


def test_chained_split_pieces_move_together_and_the_last_piece_alone():
    model, x, groups, msgs = run("split_chain")
    assert msgs == []
    w = model.convs[0].out_channels
    stream = ["stem", "fc2"]

    def at(off):
        out = [m for n in stream for m in rows(n, off)]
        bn = [M(f"norm.{p}", 0, "norm", off) for p in ("weight", "bias")]
        return [*out, *bn, *consumer("fc1", off), *consumer("head", off)]

    # piece 0 goes through convs.0, whose output is added to piece 1: channel j of both pieces
    # is one channel (two blocks); the last piece is untouched
    chained = at(0) + at(w) + [m for k in range(len(model.convs)) for m in rows(f"convs.{k}")]
    check(
        groups,
        {
            "convs (residual)": (w, "residual", 1, chained),
            "stem+fc2 (residual)": (w, "residual", 1, at(2 * w)),
            "fc1": (6 * w, "conv", 1, [*rows("fc1"), *consumer("fc2")]),
        },
    )
    with torch.no_grad():
        assert_each_group_is_a_symmetry(model, x, groups)


def test_talking_heads_attention_on_feature_maps_keys_permute_in_every_head():
    model, x = archs.PARTLY_GROUPED["talking_heads_2d"]()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        groups = find_groups(model, x)
    msgs = [str(r.message) for r in record if r.category is GroupingWarning]
    heads, kd = model.num_heads, model.key_dim
    keys = [
        m
        for n in ("q", "k")
        for h in range(heads)
        for m in [
            M(f"{n}.conv.weight", 0, "producer", h * kd),
            *(M(f"{n}.bn.{w}", 0, "norm", h * kd) for w in ("weight", "bias")),
        ]
    ]
    got = {g.name: g for g in groups}
    g = got["attention (keys)"]
    assert (g.width, g.kind, set(g.members)) == (kd, "attention", set(keys))
    # the stream reaches q, k and v as their inputs only
    stream = got["stem+proj.conv (residual)"]
    assert {m.param for m in stream.members if m.role == "consumer"} >= {
        "q.conv.weight",
        "k.conv.weight",
        "v.conv.weight",
    }
    # the value dims are grouped too (tests/test_groups_mults.py): nothing is left out
    assert msgs == []
    with torch.no_grad():
        assert_each_group_is_a_symmetry(model, x, groups)
