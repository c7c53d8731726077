"""Per-channel norms and group statistics against a naive loop implementation written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import archs
from widthwise.groups import ChannelGroup, Member, find_groups
from widthwise.norms import STAT_COLUMNS, NormPlan, channel_norms, group_stats, norm_variance

# ---------------------------------------------------------------------------------------------
# the reference: explicit loops over channels and members, float64, no vectorisation


def naive_norms(model, group, mode="product", gate=None):
    params = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        for prefix in ("module.", "_orig_mod."):
            name = name.removeprefix(prefix)
        params[name] = p.detach().to(torch.float64).cpu().numpy()
    out = []
    for i in range(group.width):
        prod = 1.0
        for m in group.members:
            w = params[m.param]
            if w.ndim < 2:
                continue
            if mode == "incoming" and m.role != "producer":
                continue
            if gate is not None and m.gate not in (gate, None):
                continue
            total = 0.0
            for j in range(m.offset + i * m.repeat, m.offset + (i + 1) * m.repeat):
                block = np.take(w, j, axis=m.dim)
                for v in block.ravel():
                    total += float(v) * float(v)
            prod *= math.sqrt(total)
        out.append(prod)
    return out


def naive_stats(norms):
    w = len(norms)
    mean = sum(norms) / w
    if w < 2 or mean == 0 or not all(math.isfinite(v) for v in norms):
        var = math.nan
    else:
        x = [v / mean for v in norms]
        mx = sum(x) / w
        var = sum((v - mx) ** 2 for v in x) / (w - 1)
    return {"variance": var, "mean": mean, "max": max(norms), "min": min(norms)}


def assert_matches_naive(model, groups, mode="product", rtol=1e-6):
    """Library statistics and channel norms equal the naive ones for every group and gate."""
    plan = NormPlan(model, groups, mode)
    stats = plan.stats()
    table = stats.table
    assert list(table.columns) == list(STAT_COLUMNS)
    seen = set()
    for row, s, got in zip(table.itertuples(index=False), stats.series, stats.norms):
        group = next(g for g in groups if g.name == s.group)
        want = naive_norms(model, group, mode, gate=s.gate or None)
        np.testing.assert_allclose(got, want, rtol=rtol, err_msg=f"{s.group}/{s.gate}")
        ref = naive_stats(want)
        np.testing.assert_allclose(row.variance, ref["variance"], rtol=rtol, atol=1e-9)
        for key in ("mean", "max", "min"):
            np.testing.assert_allclose(getattr(row, key), ref[key], rtol=rtol)
        assert row.width == group.width
        seen.add((s.group, s.gate))
    expected = {(g.name, "") for g in groups} | {(g.name, gt) for g in groups for gt in g.gates}
    assert seen == expected
    return table


# ---------------------------------------------------------------------------------------------
# hand-built groups: no dependence on find_groups


def mlp_groups():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 2))
    groups = [
        ChannelGroup(
            "0",
            7,
            (
                Member("0.weight", 0, "producer"),
                Member("0.bias", 0, "other"),
                Member("2.weight", 1, "consumer"),
            ),
        ),
        ChannelGroup(
            "2", 6, (Member("2.weight", 0, "producer"), Member("4.weight", 1, "consumer"))
        ),
    ]
    return model, groups


def cnn_bn_flatten_groups():
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 5, 3, padding=1),
        nn.BatchNorm2d(5),
        nn.Flatten(),
        nn.Linear(5 * 3 * 3, 6),
        nn.Linear(6, 2),
    )
    with torch.no_grad():  # make the BN weights matter if they were (wrongly) included
        model[1].weight.uniform_(0.5, 3.0)
    groups = [
        ChannelGroup(
            "0",
            4,
            (
                Member("0.weight", 0, "producer"),
                Member("0.bias", 0, "other"),
                Member("1.weight", 0, "norm"),
                Member("1.bias", 0, "norm"),
                Member("3.weight", 1, "consumer"),
            ),
        ),
        ChannelGroup(
            "3",
            5,
            (
                Member("3.weight", 0, "producer"),
                Member("4.weight", 0, "norm"),
                Member("6.weight", 1, "consumer", repeat=9),
            ),
        ),
        ChannelGroup(
            "6", 6, (Member("6.weight", 0, "producer"), Member("7.weight", 1, "consumer"))
        ),
    ]
    return model, groups


def gru_concat_groups():
    """GRU hidden group split per gate, and a concatenation (offset) consumer."""
    torch.manual_seed(2)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(3, 4, batch_first=True)
            self.a = nn.Linear(3, 2)
            self.head = nn.Linear(4 + 2, 1)

    model = Net()
    h = 4
    members = []
    for g, gate in enumerate("rzn"):
        members += [
            Member("rnn.weight_ih_l0", 0, "producer", offset=g * h, gate=gate),
            Member("rnn.weight_hh_l0", 0, "producer", offset=g * h, gate=gate),
            Member("rnn.bias_ih_l0", 0, "other", offset=g * h, gate=gate),
            Member("rnn.weight_hh_l0", 1, "consumer"),
        ][: 4 if g == 0 else 3]
    members.append(Member("head.weight", 1, "consumer"))
    hidden = ChannelGroup("rnn.l0 (hidden)", h, tuple(members), kind="recurrent")
    a = ChannelGroup(
        "a",
        2,
        (Member("a.weight", 0, "producer"), Member("head.weight", 1, "consumer", offset=4)),
    )
    return model, [hidden, a]


HAND_BUILT = [mlp_groups, cnn_bn_flatten_groups, gru_concat_groups]


@pytest.mark.parametrize("build", HAND_BUILT, ids=lambda f: f.__name__)
@pytest.mark.parametrize("mode", ["product", "incoming"])
def test_hand_built_groups_match_naive(build, mode):
    model, groups = build()
    assert_matches_naive(model, groups, mode)


def test_gate_series_differ_from_whole_group():
    model, groups = gru_concat_groups()
    table = assert_matches_naive(model, groups)
    rnn = table[table.group == "rnn.l0 (hidden)"]
    assert list(rnn.gate) == ["", "r", "z", "n"]
    assert len(set(np.round(rnn.variance, 12))) == 4


def test_one_dimensional_members_are_left_out():
    model, groups = cnn_bn_flatten_groups()
    before = channel_norms(model, groups)["0"]
    with torch.no_grad():
        model[1].weight.mul_(7.0)
        model[0].bias.add_(3.0)
    np.testing.assert_array_equal(channel_norms(model, groups)["0"], before)


# ---------------------------------------------------------------------------------------------
# groups found automatically on the shared reference architectures


def found_groups(builder):
    model, x = builder()
    groups = find_groups(model, x)
    assert groups, f"find_groups found nothing on {builder.__name__}"
    return model, groups


@pytest.mark.parametrize(
    "builder",
    [
        archs.mlp,
        archs.vgg_bn_flatten,
        archs.resnet_small,
        archs.gru_model,
        archs.lstm_model,
        archs.mha_model,
        archs.handwritten_attention,
        archs.unet_concat,
    ],
    ids=lambda f: f.__name__,
)
def test_reference_architectures_match_naive(builder):
    model, groups = found_groups(builder)
    # trained-looking weights rather than a fresh init: channels of different scales
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(torch.rand(p.shape, generator=g) * 2)
    assert_matches_naive(model, groups)


# ---------------------------------------------------------------------------------------------
# invariances (hypothesis)


@settings(max_examples=25, deadline=None)
@given(
    which=st.sampled_from(["0.weight", "3.weight", "6.weight", "7.weight"]),
    scale=st.floats(1e-3, 1e3),
)
def test_variance_unchanged_by_scaling_a_tensor(which, scale):
    model, groups = cnn_bn_flatten_groups()
    before = group_stats(model, groups).variance.to_numpy()
    with torch.no_grad():
        dict(model.named_parameters())[which].mul_(scale)
    after = group_stats(model, groups).variance.to_numpy()
    np.testing.assert_allclose(after, before, rtol=1e-5)


def _permute(model, group, perm):
    params = dict(model.named_parameters())
    with torch.no_grad():
        for m in group.members:
            p = params[m.param]
            idx = torch.arange(p.shape[m.dim])
            block = torch.stack([torch.tensor(list(m.indices(i))) for i in range(group.width)])
            idx[block.flatten()] = block[torch.as_tensor(perm)].flatten()
            p.copy_(p.index_select(m.dim, idx))


@settings(max_examples=25, deadline=None)
@given(data=st.data(), build=st.sampled_from(HAND_BUILT))
def test_variance_unchanged_by_permuting_channels(data, build):
    model, groups = build()
    group = data.draw(st.sampled_from(groups))
    perm = data.draw(st.permutations(range(group.width)))
    plan = NormPlan(model, groups)
    before = plan.stats()
    _permute(model, group, perm)
    after = plan.stats()  # the same compiled plan reads the new values
    np.testing.assert_allclose(after.table.variance, before.table.variance, rtol=1e-5)
    for s, a, b in zip(after.series, after.norms, before.norms):
        if s.group == group.name:
            np.testing.assert_allclose(a, b[list(perm)], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# dtypes and degenerate weights


def test_bfloat16_model_is_reduced_in_float32():
    model, groups = cnn_bn_flatten_groups()
    model = model.to(torch.bfloat16)
    # bf16 values are exact in float32/float64, so only float32 accumulation error remains
    assert_matches_naive(model, groups, rtol=1e-6)
    assert all(v.dtype == torch.float32 for v in NormPlan(model, groups).channel_norms())


def test_channel_norms_stay_on_device_without_grad():
    model, groups = mlp_groups()
    out = NormPlan(model, groups).channel_norms()
    assert [v.shape[0] for v in out] == [7, 6]
    assert not any(v.requires_grad for v in out)


def test_nan_weight_is_flagged_not_raised():
    model, groups = mlp_groups()
    with torch.no_grad():
        model[0].weight[3, 1] = float("nan")  # group "0", channel 3
        model[4].weight[0, 0] = float("inf")  # group "2", channel 0
    t = group_stats(model, groups).set_index("group")
    assert t.loc["0", "n_nonfinite"] == 1 and "nonfinite" in t.loc["0", "flag"]
    assert math.isnan(t.loc["0", "variance"])
    assert t.loc["2", "n_nonfinite"] == 1 and math.isinf(t.loc["2", "max"])


def test_all_zero_group_is_flagged():
    model, groups = mlp_groups()
    with torch.no_grad():
        model[0].weight.zero_()
        model[2].weight[:, 3] = 0  # one dead input column of the second group's producer
    t = group_stats(model, groups).set_index("group")
    assert t.loc["0", "n_zero"] == 7 and t.loc["0", "flag"] == "all_zero"
    assert math.isnan(t.loc["0", "variance"]) and t.loc["0", "mean"] == 0
    assert t.loc["2", "n_zero"] == 0 and t.loc["2", "flag"] == ""
    assert math.isfinite(t.loc["2", "variance"])


def test_some_zero_channels_are_counted():
    model, groups = mlp_groups()
    with torch.no_grad():
        model[0].weight[2] = 0
    t = group_stats(model, groups).set_index("group")
    assert t.loc["0", "n_zero"] == 1 and t.loc["0", "flag"] == "zero"
    assert t.loc["0", "min"] == 0 and math.isfinite(t.loc["0", "variance"])


def test_width_one_group_gives_nan_and_flag():
    model = nn.Sequential(nn.Linear(3, 1), nn.Linear(1, 2))
    g = ChannelGroup("0", 1, (Member("0.weight", 0, "producer"), Member("1.weight", 1, "consumer")))
    t = group_stats(model, [g])
    assert math.isnan(t.variance[0]) and t.flag[0] == "width1"
    np.testing.assert_allclose(t["mean"][0], naive_norms(model, g)[0], rtol=1e-6)


def test_group_without_weight_matrices_is_flagged():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    g = ChannelGroup("ln", 4, (Member("1.weight", 0, "norm"), Member("1.bias", 0, "norm")))
    t = group_stats(model, [g])
    assert t.flag[0] == "no_weights" and math.isnan(t.variance[0])


def test_products_beyond_float32_range():
    # 16 coupled slices with norms near 1e6: the product (~1e96) overflows float32, so the
    # members are combined in float64
    torch.manual_seed(0)
    layers = nn.ModuleList(nn.Linear(4, 4, bias=False) for _ in range(8))
    with torch.no_grad():
        for lin in layers:
            lin.weight.mul_(1e6)
    members = tuple(Member(f"{i}.weight", d, "producer") for i in range(8) for d in (0, 1))
    g = ChannelGroup("res", 4, members)
    t = group_stats(layers, [g])
    ref = naive_stats(naive_norms(layers, g))
    assert ref["max"] > 1e60 and t.flag[0] == ""
    np.testing.assert_allclose(t.variance[0], ref["variance"], rtol=1e-6)
    np.testing.assert_allclose(t["max"][0], ref["max"], rtol=1e-6)


def test_unknown_parameter_is_a_clear_error():
    model, _ = mlp_groups()
    g = ChannelGroup("x", 7, (Member("nope.weight", 0, "producer"),))
    with pytest.raises(ValueError, match=r"nope\.weight"):
        NormPlan(model, [g])
    with pytest.raises(ValueError, match="mode"):
        NormPlan(model, [], mode="sum")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 1e6), min_size=1, max_size=20))
def test_norm_variance_matches_naive(values):
    got = float(norm_variance(torch.tensor(values, dtype=torch.float64)))
    want = naive_stats(values)["variance"]
    if math.isnan(want):
        assert math.isnan(got)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_large_weights_reduced_in_blocks_match_naive(dtype, monkeypatch):
    # Weights above CHUNK_ELEMENTS take the blocked CPU path (row and column sums per block of
    # rows, the last block partial); both reductions of one tensor, conv kernels included.
    from widthwise import norms
    from widthwise.groups import find_groups

    monkeypatch.setattr(norms, "CHUNK_ELEMENTS", 50_000)  # blocks of a few rows, last one partial
    CHUNK_ELEMENTS = norms.CHUNK_ELEMENTS

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(3, 130, 5), nn.ReLU(), nn.Conv1d(130, 117, 5), nn.ReLU(), nn.Flatten(),
        nn.Linear(117 * 12, 301), nn.ReLU(), nn.Linear(301, 7),
    )  # fmt: skip
    assert model[2].weight.numel() > CHUNK_ELEMENTS and model[5].weight.numel() > CHUNK_ELEMENTS
    groups = find_groups(model, torch.randn(2, 3, 20))
    model = model.to(dtype)
    assert_matches_naive(model, groups, rtol=1e-5)


def test_a_plan_without_groups_gives_empty_statistics():
    model, _ = mlp_groups()
    plan = NormPlan(model, [])
    assert plan.reduce().numel() == 0 and plan.channel_norms() == []
    st = plan.stats()
    assert len(st) == 0 and list(st.table.columns) == list(STAT_COLUMNS) and st.table.empty


class _SameShapes(nn.Module):
    """Runs of same-shape weights of every kind: 3x3 convs (rows and columns, with a kernel),
    square linears (rows and columns) and two heads that read the same channels (columns)."""

    def __init__(self):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            *[m for _ in range(3) for m in (nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())],
        )  # fmt: skip
        self.fcs = nn.Sequential(
            nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU(),
            *[m for _ in range(3) for m in (nn.Linear(16, 16), nn.ReLU())],
        )  # fmt: skip
        self.heads = nn.ModuleList(nn.Linear(16, 4) for _ in range(3))

    def forward(self, x):
        h = self.fcs(self.convs(x))
        return sum(head(h) for head in self.heads)


def test_same_shape_weights_reduced_as_a_batch_match_naive_and_one_at_a_time(monkeypatch):
    from widthwise import norms

    torch.manual_seed(0)
    model = _SameShapes()
    groups = find_groups(model, torch.randn(2, 3, 4, 4))
    plans = {mode: NormPlan(model, groups, mode) for mode in ("product", "incoming")}
    # white-box: the batches this test is about exist (convs, linears and heads; rows only)
    assert sorted(plans["product"]._batches.values()) == [3, 3, 3]
    assert max(plans["incoming"]._batches.values()) == 3
    for mode in plans:
        assert_matches_naive(model, groups, mode)
    monkeypatch.setattr(norms, "BATCH_ELEMENTS", 0)
    for mode, plan in plans.items():
        single = NormPlan(model, groups, mode)
        assert not single._batches
        for a, b in zip(plan.stats().norms, single.stats().norms):  # the same float32 bits
            np.testing.assert_array_equal(a.view(np.int32), b.view(np.int32))
    # a member the fast path cannot take (channels-last) sends its batch one weight at a time
    before = plans["product"].stats().norms
    conv = model.convs[4]
    conv.weight = nn.Parameter(conv.weight.detach().contiguous(memory_format=torch.channels_last))
    assert not conv.weight.is_contiguous()
    for a, b in zip(before, plans["product"].stats().norms):
        np.testing.assert_array_equal(a.view(np.int32), b.view(np.int32))
    assert_matches_naive(model, groups)


class _LastDimChannels(nn.Module):
    """Raw parameters with their channels along the last of 3+ dims (a ViT's position table
    and class token), beside the Linear that makes those channels."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(5, 6)
        self.pos = nn.Parameter(torch.randn(1, 7, 6))
        self.table = nn.Parameter(torch.randn(2, 3, 4, 6))
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.proj(x) + self.pos + self.table.sum((0, 1))[:1])


def _last_dim_groups(model):
    members = (
        Member("proj.weight", 0, "producer"),
        Member("pos", 2, "other"),
        Member("table", 3, "other"),
        Member("head.weight", 1, "consumer"),
    )
    return [ChannelGroup("proj", 6, members)]


def test_channels_along_the_last_dim_match_naive_on_every_path(monkeypatch):
    from widthwise import norms

    torch.manual_seed(0)
    model = _LastDimChannels()
    groups = _last_dim_groups(model)
    assert_matches_naive(model, groups)
    plan = NormPlan(model, groups)
    assert all(r.kind for r in plan._readers)  # white-box: all four on the fast path
    fast = plan.stats().norms
    # the same values in a layout the fast path does not take (_sums_of_squares): same bits
    model.pos = nn.Parameter(model.pos.detach().transpose(0, 1).contiguous().transpose(0, 1))
    model.table = nn.Parameter(
        model.table.detach().permute(3, 0, 1, 2).contiguous().permute(1, 2, 3, 0)
    )
    assert not model.table.is_contiguous()
    slow = NormPlan(model, groups).stats().norms
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a.view(np.int32), b.view(np.int32))
    # above CHUNK_ELEMENTS: blocks of rows, the last one partial
    monkeypatch.setattr(norms, "CHUNK_ELEMENTS", 30)
    assert_matches_naive(model, groups)
    assert_matches_naive(model.to(torch.bfloat16), groups)
