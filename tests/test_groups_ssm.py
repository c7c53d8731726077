"""find_groups on Mamba-2 mixers (state space duality): ``in_proj`` makes ``[z | x | B | C | dt]``,
a depthwise ``conv1d`` runs over ``x | B | C``, per-head ``dt_bias``/``A_log``/``D``, a gated
(possibly grouped) norm, ``out_proj``. Expected: one group of whole heads (within their B/C
group: divisor ``n_groups``) and one group of state entries of B and C (tests/archs.py,
``Mamba2Mixer``, and Hugging Face's Mamba2, FalconH1 and NemotronH from tiny configs); every
group permuted with naive per-channel loops on random weights must leave the output unchanged,
and heads moved across B/C groups must not."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import archs
from test_groups import M, _outputs, _permute_copy, assert_each_group_is_a_symmetry, quiet_groups
from test_groups_text import grouped, hf_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def mamba_members(pre, heads, hd, bc, norm=True, conv_bias=True, conv="conv1d"):
    """(heads members, state members) of a mixer at ``pre`` with ``heads`` heads of ``hd``
    channels and B, C of ``bc`` rows each (``n_groups * state``)."""
    inner = heads * hd
    cw = inner + 2 * bc
    inp, cv = f"{pre}.in_proj.weight", f"{pre}.{conv}"

    def conv_rows(offset, repeat):
        out = [M(f"{cv}.weight", 0, "producer", offset, repeat)]
        return out + ([M(f"{cv}.bias", 0, "other", offset, repeat)] if conv_bias else [])

    head = [
        M(inp, 0, "producer", 0, hd),  # z
        M(inp, 0, "producer", inner, hd),  # x
        M(inp, 0, "producer", inner + cw, 1),  # dt
        *conv_rows(0, hd),
        *(M(f"{pre}.{n}", 0, "other") for n in ("dt_bias", "A_log", "D")),
        *([M(f"{pre}.norm.weight", 0, "norm", 0, hd)] if norm else []),
        M(f"{pre}.out_proj.weight", 1, "consumer", 0, hd),
    ]
    state = [
        M(inp, 0, "producer", 2 * inner),  # B
        M(inp, 0, "producer", 2 * inner + bc),  # C
        *conv_rows(inner, 1),
        *conv_rows(inner + bc, 1),
    ]
    return set(head), set(state)


def check_mixer(groups, pre, heads, hd, bc, n_groups, **kw):
    got = {g.name: g for g in groups}
    h, s = got[f"{pre} (heads)"], got[f"{pre} (state)"]
    assert (h.width, h.kind, h.divisor) == (heads, "attention", n_groups)
    assert (s.width, s.kind, s.divisor) == (bc, "attention", n_groups)
    want_h, want_s = mamba_members(pre, heads, hd, bc, **kw)
    assert set(h.members) == want_h and len(h.members) == len(want_h)
    assert set(s.members) == want_s and len(s.members) == len(want_s)


def test_mamba2_mixer_whole_heads_and_state_entries():
    model, x = archs.PATTERNS["mamba2_mixer"]()
    groups = quiet_groups(model, x)
    assert {g.name for g in groups} == {
        "embed+mixer.out_proj (residual)",
        "mixer (heads)",
        "mixer (state)",
    }
    check_mixer(groups, "mixer", heads=4, hd=3, bc=2, n_groups=1, conv_bias=True)
    assert_each_group_is_a_symmetry(model, x, groups)


def test_mamba2_mixer_heads_stay_in_their_bc_group():
    # two B/C groups, a norm over each group's channels: heads (and state entries) permute
    # only within their group (divisor 2); moving them across groups changes the output
    model, x = archs.PATTERNS["mamba2_mixer_groups"]()
    groups = quiet_groups(model, x)
    check_mixer(groups, "mixer", heads=4, hd=3, bc=4, n_groups=2)
    ref = assert_each_group_is_a_symmetry(model, x, groups)
    for g in groups:
        if g.divisor == 2:
            free = replace(g, divisor=1)
            changes = [
                (_outputs(_permute_copy(model, [free], seed=k).eval(), x) - ref).abs().max()
                for k in range(6)
            ]
            assert max(changes) > 1e-2, g.name


def test_hf_mamba2_grouped_heads_and_state():
    model, x = hf_tiny(
        "Mamba2ForCausalLM",
        vocab_size=20,
        hidden_size=8,
        num_hidden_layers=1,
        num_heads=4,
        head_dim=4,
        expand=2,
        n_groups=2,
        state_size=2,
        chunk_size=4,
        conv_kernel=3,
    )
    groups, msgs = grouped(model, x)
    assert msgs == []
    check_mixer(groups, "backbone.layers.0.mixer", heads=4, hd=4, bc=4, n_groups=2)
    assert_each_group_is_a_symmetry(model, x, groups)


def test_hf_falcon_h1_mamba_with_grouped_norm_and_multipliers():
    # the gated RMSNorm over each B/C group's channels; mup multipliers per block of in_proj
    model, x = hf_tiny(
        "FalconH1ForCausalLM",
        vocab_size=20,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=4,
        intermediate_size=12,
        mamba_d_ssm=16,
        mamba_n_heads=4,
        mamba_d_head=4,
        mamba_n_groups=2,
        mamba_d_state=2,
        mamba_d_conv=3,
        mamba_chunk_size=4,
        mamba_rms_norm=True,
        ssm_multipliers=[0.5, 2.0, 1.5, 0.7, 1.3],
    )
    groups, msgs = grouped(model, x)
    assert msgs == []
    check_mixer(groups, "model.layers.0.mamba", heads=4, hd=4, bc=4, n_groups=2)
    assert_each_group_is_a_symmetry(model, x, groups)


def test_hf_nemotron_h_mamba_layer():
    model, x = hf_tiny(
        "NemotronHForCausalLM",
        vocab_size=20,
        hidden_size=8,
        layers_block_type=["mamba", "attention"],
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=4,
        intermediate_size=12,
        mamba_num_heads=4,
        mamba_head_dim=4,
        n_groups=2,
        ssm_state_size=2,
        conv_kernel=3,
        chunk_size=4,
    )
    groups, msgs = grouped(model, x)
    assert msgs == []
    check_mixer(groups, "model.layers.0.mixer", heads=4, hd=4, bc=4, n_groups=2)
    assert_each_group_is_a_symmetry(model, x, groups)
    assert torch.isfinite(_outputs(model, x)).all()


# ---------------------------------------------------------------------------------------------
# Gated DeltaNet (OLMo-Hybrid's linear attention): separate q/k/v/a/b/g projections, a causal
# depthwise conv over cat([q, k, v]), per-head A_log/dt_bias, a norm over head_v_dim shared by
# every head (fixed under whole heads), o_proj


def test_hf_olmo_hybrid_gated_deltanet_whole_heads_with_the_conv():
    # q/k of 3 heads x 4 (wider than o_proj's 6 columns), v/g of 3 heads x 2
    model, x = hf_tiny(
        "OlmoHybridForCausalLM",
        vocab_size=20,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=12,
        linear_num_key_heads=3,
        linear_num_value_heads=3,
        linear_key_head_dim=4,
        linear_value_head_dim=2,
        linear_conv_kernel_dim=3,
    )
    groups, msgs = grouped(model, x)
    assert msgs == []
    pre = "model.layers.0.linear_attn"
    att = {g.name: g for g in groups}[f"{pre} (attention)"]
    assert (att.width, att.kind, att.divisor) == (3, "attention", 1)
    rows = [
        M(f"{pre}.{p}_proj.weight", 0, "producer", 0, r)
        for p, r in zip("qkvabg", (4, 4, 2, 1, 1, 2))
    ]
    conv = [
        M(f"{pre}.conv1d.weight", 0, "producer", off, r) for off, r in ((0, 4), (12, 4), (24, 2))
    ]
    expected = {
        *rows,
        *conv,
        M(f"{pre}.A_log", 0, "other"),
        M(f"{pre}.dt_bias", 0, "other"),
        M(f"{pre}.o_proj.weight", 1, "consumer", 0, 2),
    }
    assert set(att.members) == expected and len(att.members) == len(expected)
    assert_each_group_is_a_symmetry(model, x, groups)


# ---------------------------------------------------------------------------------------------
# EfficientViM's HSM-SSD: the state entries of [B | C | dt] with the per-entry A


def test_hsm_ssd_state_entries_of_the_three_blocks_with_a():
    model, x = archs.hsm_ssd()
    groups, msgs = grouped(model, x)
    # left out: the channels of the stream read through ``x @ (a * B)^T`` (the stem's, and
    # out_proj's through ``h @ C``), not the state entries
    assert len(msgs) == 1 and "left out 2 part(s)" in msgs[0], msgs
    assert "(state)" not in msgs[0] and "mixer.out_proj (attention)" in msgs[0]
    st = {g.name: g for g in groups}["mixer (state)"]
    assert (st.width, st.kind, st.divisor) == (4, "attention", 1)
    expected = {M("mixer.A", 0, "other")}
    for j in range(3):
        expected |= {
            M("mixer.BCdt_proj.weight", 0, "producer", 4 * j),
            M("mixer.dw.weight", 0, "producer", 4 * j),
            M("mixer.dw.bias", 0, "other", 4 * j),
        }
    assert set(st.members) == expected and len(st.members) == len(expected)
    assert_each_group_is_a_symmetry(model, x, groups)
