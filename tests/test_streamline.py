"""Streamlining: FLOPs counted right, budgets met, rules followed, plans applied exactly."""

from __future__ import annotations

import importlib
import json
import warnings

import pandas as pd
import pytest
import torch
from torch import nn

from widthwise import (
    ResizeError,
    WidthPlan,
    count_flops,
    count_params,
    find_groups,
    streamline,
    zoo,
)
from widthwise.analysis import channel_vectors, ifm_width
from widthwise.resize import resize, shrink_with_torch_pruning
from widthwise.streamline import BudgetError, BudgetWarning, WidthRule

# the module (``widthwise.streamline`` the attribute is the function)
streamline_module = importlib.import_module("widthwise.streamline")

# --- FLOPs against analytic counts, written out by hand --------------------------------------


def test_count_flops_matches_the_analytic_count_of_an_mlp_and_a_conv():
    net = zoo.MLP(12, [32, 16], 5)
    x = torch.randn(7, 12)
    assert count_flops(net, x) == 2 * 7 * (12 * 32 + 32 * 16 + 16 * 5)

    conv = nn.Conv1d(3, 8, kernel_size=5, padding=2)
    x = torch.randn(4, 3, 40)
    assert count_flops(conv, x) == 2 * 4 * 40 * 8 * 3 * 5


def test_transformer_encoder_is_counted_with_grad_even_when_called_under_no_grad():
    d, ff, heads, length, batch = 16, 40, 2, 6, 3
    layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True)
    enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
    x = torch.randn(batch, length, d)
    tokens = batch * length
    projections = 2 * tokens * (d * 3 * d + d * d + 2 * d * ff)
    attention = 2 * 2 * batch * length * length * d  # QK^T and AV
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flops = count_flops(enc, x)
    # Under no_grad alone the fused fast path would report 0: the projections must be there.
    assert flops >= projections
    if flops == projections:  # attention kernel without a formula: must have been named
        assert any("undercounted" in str(w.message) for w in caught)
    else:
        assert flops == projections + attention


# --- the planner --------------------------------------------------------------------------


def verdict_table(labels: dict[str, tuple[str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"group": g, "label": lab, "confidence": c} for g, (lab, c) in labels.items()]
    )


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    net = zoo.CNN1D([8, 32, 32], length=40, num_classes=10)
    x = torch.randn(2, 1, 40)
    return net, x, find_groups(net, x)


@pytest.mark.parametrize("target", ["flops", "params", 0.6, 1.5])
def test_the_budget_is_met_within_two_percent(cnn, target):
    net, x, groups = cnn
    names = [g.name for g in groups]
    table = verdict_table({names[0]: ("DS", 0.9), names[1]: ("IS", 0.8), names[2]: ("IS", 1.0)})
    if isinstance(target, float):
        budget = target * count_flops(net, x)
        plan = streamline(net, table, x, budget=budget, floor="none")
    else:
        plan = streamline(net, table, x, budget=target, floor="none")
        budget = count_flops(net, x) if target == "flops" else count_params(net)
    new = plan.apply(net)
    cost = count_flops(new, x) if target != "params" else count_params(new)
    assert plan.budget["met"]
    assert abs(cost - budget) <= 0.02 * budget
    assert cost == plan.budget["achieved"]


def test_ds_widens_is_narrows_undetermined_stays(cnn):
    net, x, groups = cnn
    names = [g.name for g in groups]
    table = verdict_table(
        {names[0]: ("DS", 1.0), names[1]: ("IS", 1.0), names[2]: ("undetermined", 0.0)}
    )
    plan = streamline(net, table, x, budget="flops", floor="none")
    rows = plan.table.set_index("group")
    assert rows.new_width[names[0]] > rows.old_width[names[0]]
    assert rows.new_width[names[1]] < rows.old_width[names[1]]
    assert rows.new_width[names[2]] == rows.old_width[names[2]]
    assert rows.reason[names[0]].startswith("DS (confidence 1.00)")
    assert rows.reason[names[2]] == "undetermined: kept"
    assert set(plan.table.columns) >= {"group", "old_width", "new_width", "reason"}
    record = json.loads(plan.to_json())
    assert [g["new_width"] for g in record["groups"]] == list(plan.table.new_width)
    assert "WidthPlan: flops" in str(plan)


def test_is_groups_stop_at_their_ifm_width(cnn):
    net, x, groups = cnn
    names = [g.name for g in groups]
    # A budget far below what the floors allow: every IS group ends at its floor (here, on an
    # untrained network, about its full width: random channels are all distinct).
    table = verdict_table({n: ("IS", 1.0) for n in names})
    with pytest.warns(UserWarning, match="budget not met"):
        plan = streamline(net, table, x, budget=0.05 * count_flops(net, x), floor="ifm")
    for g in groups:
        floor = max(4, ifm_width(channel_vectors(net, g)))
        assert plan.widths[g.name] == min(floor, g.width)


def test_a_budget_below_min_fraction_is_said_even_without_the_ifm_floor(cnn):
    net, x, groups = cnn
    table = verdict_table({g.name: ("IS", 1.0) for g in groups})
    with pytest.warns(BudgetWarning, match="At their floor"):
        plan = streamline(net, table, x, budget=0.01 * count_params(net), budget_kind="params")
    for g in groups:  # each at max(min_width, min_fraction * width), the closest plan
        assert plan.widths[g.name] == max(4, -(-g.width // 4))


def test_low_confidence_verdicts_count_as_undetermined(cnn):
    net, x, groups = cnn
    weak = verdict_table({g.name: ("IS", 0.3) for g in groups})
    # a budget the (ignored) IS verdicts would have met is no reason to move them
    plan = streamline(net, weak, x, budget="flops", min_confidence=0.5)
    assert plan.widths == {g.name: g.width for g in groups}
    # a smaller one narrows them by need, exactly as undetermined groups
    target = 0.5 * count_flops(net, x)
    plan = streamline(net, weak, x, budget=target, min_confidence=0.5)
    none = verdict_table({g.name: ("undetermined", 0.0) for g in groups})
    assert plan.widths == streamline(net, none, x, budget=target).widths
    assert plan.budget["met"]
    for reason in plan.table.reason[plan.table.new_width < plan.table.old_width]:
        assert reason.startswith(
            "IS below min_confidence (0.30 < 0.5), P(needs width) taken as 0.5"
        )


def test_round_to_keeps_changed_widths_divisible(cnn):
    net, x, groups = cnn
    names = [g.name for g in groups]
    table = verdict_table({names[0]: ("DS", 1.0), names[1]: ("IS", 0.7), names[2]: ("IS", 0.9)})
    plan = streamline(net, table, x, round_to=8, floor="none")
    for g in groups:
        if plan.widths[g.name] != g.width:
            assert plan.widths[g.name] % 8 == 0


def test_attention_heads_keep_the_width_divisible():
    torch.manual_seed(0)
    net = zoo.ViT(8, 4, 32, 2, 4, [64, 64], 10, channels=1)
    x = torch.randn(2, 1, 8, 8)
    groups = find_groups(net, x)
    heads = [g for g in groups if g.divisor > 1]
    assert heads, "the attention groups must carry their head count"
    table = verdict_table({g.name: ("IS", 1.0) for g in groups})
    plan = streamline(net, table, x, budget=0.7 * count_flops(net, x), floor="none")
    for g in heads:
        assert plan.widths[g.name] % g.divisor == 0
    new = plan.apply(net)
    assert new(x).shape == (2, 10)


def test_to_config_rebuilds_the_planned_zoo_model(cnn):
    net, x, groups = cnn
    names = [g.name for g in groups]
    table = verdict_table({names[0]: ("DS", 1.0), names[1]: ("IS", 1.0), names[2]: ("IS", 0.5)})
    plan = streamline(net, table, x, floor="none")
    rebuilt = type(net).from_config(plan.to_config(net))
    found = {g.name: g.width for g in find_groups(rebuilt, x)}
    assert found == plan.widths
    with pytest.raises(TypeError, match="zoo model"):
        plan.to_config(nn.Linear(2, 2))


def test_bad_budgets_are_refused(cnn):
    net, x, _ = cnn
    with pytest.raises(ValueError, match="budget must be"):
        streamline(net, verdict_table({}), x, budget="cheap")
    with pytest.raises(ValueError, match="positive"):
        streamline(net, verdict_table({}), x, budget=-5)


# --- apply: exact widths, the same function with net2net, zoo residual and concat models -----


def widened_plan(net, x) -> WidthPlan:
    groups = find_groups(net, x)
    table = verdict_table({g.name: ("DS", 1.0) for g in groups})
    # A large budget: every group widens (no pruning), so net2net must keep the function.
    return streamline(net, table, x, budget=3 * count_flops(net, x), max_factor=2.0)


@pytest.mark.parametrize(
    "build",
    [
        lambda: (zoo.ResNet("basic", [4, 8], [1, 1], in_channels=1), torch.randn(2, 1, 8, 8)),
        lambda: (zoo.UNet([4, 8], in_channels=1, num_classes=2), torch.randn(2, 1, 8, 8)),
        lambda: (zoo.VGG([4, "M", 8], in_channels=1, image_size=8), torch.randn(2, 1, 8, 8)),
        lambda: (zoo.CNN1D([4, 6], length=16, num_classes=3), torch.randn(2, 1, 16)),
    ],
    ids=["resnet", "unet", "vgg", "cnn1d"],
)
def test_net2net_apply_keeps_the_function_of_zoo_models(build):
    torch.manual_seed(0)
    net, x = build()
    for m in net.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    net.eval()
    plan = widened_plan(net, x)
    assert all(plan.table.new_width > plan.table.old_width)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    wide = plan.apply(net, init="net2net").eval()
    with torch.no_grad():
        torch.testing.assert_close(wide(x), net(x), atol=1e-5, rtol=1e-5)
    assert {g.name: g.width for g in find_groups(wide, x)} == plan.widths
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_reinit_apply_gives_the_planned_shape_with_fresh_weights(cnn):
    net, x, _ = cnn
    plan = widened_plan(net, x)
    fresh = plan.apply(net, init="reinit")
    assert {g.name: g.width for g in find_groups(fresh, x)} == plan.widths
    assert count_params(fresh) > count_params(net)


def test_a_plan_that_no_longer_fits_the_model_is_refused(cnn):
    net, x, _ = cnn
    plan = widened_plan(net, x)
    other = zoo.CNN1D([8, 32, 16], length=40, num_classes=10)
    with pytest.raises(ResizeError):
        plan.apply(other)


@pytest.mark.parametrize(
    "build",
    [
        lambda: (zoo.ResNet("basic", [4, 8], [1, 1], in_channels=1), torch.randn(2, 1, 8, 8)),
        lambda: (zoo.UNet([4, 8], in_channels=1, num_classes=2), torch.randn(2, 1, 8, 8)),
        lambda: (zoo.VGG([6, "M", 8], in_channels=1, image_size=8), torch.randn(2, 1, 8, 8)),
        lambda: (zoo.MLP(5, [8, 6], 3), torch.randn(4, 5)),
    ],
    ids=["resnet", "unet", "vgg", "mlp"],
)
def test_torch_pruning_cuts_exactly_what_our_surgery_would(build):
    torch.manual_seed(0)
    net, x = build()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    net.eval()
    groups = find_groups(net, x)
    widths = {g.name: max(2, g.width // 2) for g in groups}
    cut_model, cut = shrink_with_torch_pruning(net, groups, widths, x)
    assert cut == set(widths)  # every group of these models is Torch-Pruning's to cut
    own = resize(net, groups, widths, init="net2net")
    assert {k: v.shape for k, v in cut_model.state_dict().items()} == {
        k: v.shape for k, v in own.state_dict().items()
    }
    with torch.no_grad():
        torch.testing.assert_close(cut_model.eval()(x), own.eval()(x), atol=1e-6, rtol=1e-6)
    assert {g.name: g.width for g in find_groups(cut_model, x)} == widths


def test_recurrent_models_are_narrowed_by_our_own_surgery():
    net = zoo.GRULM(20, 16, [160])  # wide enough that one unit is < 2 % of the parameters
    x = torch.randint(0, 20, (2, 5))
    groups = find_groups(net, x)
    widths = {g.name: 6 for g in groups}
    _, cut = shrink_with_torch_pruning(net, groups, widths, x)
    assert cut == set()
    table = verdict_table({g.name: ("IS", 1.0) for g in groups})
    plan = streamline(
        net, table, x, budget=0.7 * count_params(net), budget_kind="params", floor="none"
    )
    assert plan.budget["met"]
    assert all(plan.widths[g.name] < g.width for g in groups)  # the GRU itself narrows
    new = plan.apply(net, init="net2net")
    assert {g.name: g.width for g in find_groups(new, x)} == plan.widths


# --- budgets the rules cannot meet, empty plans, width rules, apply's report ----------------


def test_a_budget_the_floors_cannot_meet_is_said_and_the_closest_plan_returned(cnn):
    net, x, groups = cnn
    table = verdict_table({g.name: ("IS", 1.0) for g in groups})
    target = 0.6 * count_params(net)
    # the case: untrained channels are all distinct, so the IFM floor keeps full widths
    with pytest.warns(BudgetWarning, match=r"budget not met: params .* target 0\.60x"):
        plan = streamline(net, table, x, budget=target, budget_kind="params", floor="ifm")
    assert not plan.budget["met"]
    assert plan.budget["achieved"] == count_params(plan.apply(net, init="reinit"))
    assert plan.budget["achieved"] > 1.02 * target
    assert "NOT met" in str(plan)
    # the closest plan: every IS group at its floor, nothing narrower is allowed
    floors = {
        g.name: max(4, 8 if g.width >= 32 else 4, ifm_width(channel_vectors(net, g)))
        for g in groups
    }
    assert all(plan.widths[g.name] == min(floors[g.name], g.width) for g in groups)
    with pytest.raises(BudgetError, match="budget not met"):
        streamline(net, table, x, budget=target, budget_kind="params", floor="ifm", on_miss="raise")
    # without the IFM floor (the default) the same budget is reachable, and no warning is given
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetWarning)
        plan = streamline(net, table, x, budget=target, budget_kind="params")
    assert plan.budget["met"]
    assert abs(count_params(plan.apply(net, init="reinit")) - target) <= 0.02 * target


def test_a_model_without_groups_gives_an_empty_plan_that_says_so():
    net = nn.Sequential(nn.Linear(4, 3))  # one layer: no hidden channels to group
    x = torch.randn(2, 4)
    assert find_groups(net, x) == []
    with pytest.warns(UserWarning, match="no channel groups"):
        plan = streamline(net, verdict_table({}), x)
    assert plan.widths == {}
    assert "no channel groups" in str(plan) and "no channel groups" in repr(plan)
    assert plan.budget["met"]
    out = plan.apply(net)
    torch.testing.assert_close(out(x), net(x))
    assert out is not net


def test_repr_is_one_line_and_apply_defaults_to_net2net(cnn):
    net, x, _ = cnn
    plan = widened_plan(net, x)
    text = repr(plan)
    assert "\n" not in text and "Member(" not in text and len(text) < 200
    changed = sum(plan.widths[g.name] != g.width for g in plan.groups)
    assert f"{len(plan.groups)} groups, {changed} changed" in text
    net.eval()
    wide = plan.apply(net).eval()  # default init: net2net, like resize
    with torch.no_grad():
        torch.testing.assert_close(wide(x), net(x), atol=1e-5, rtol=1e-5)
    assert plan.output_change is not None and plan.output_change < 1e-5


def test_apply_reports_how_much_narrowing_changed_the_output(cnn):
    net, x, groups = cnn
    net.eval()
    table = verdict_table({g.name: ("IS", 1.0) for g in groups})
    plan = streamline(net, table, x, budget=0.5 * count_flops(net, x), floor="none")
    with pytest.warns(UserWarning, match="narrowing changed the output by"):
        small = plan.apply(net, init="net2net")
    with torch.no_grad():
        ref, got = net(x).double(), small.eval()(x).double()
    expected = float((got - ref).norm() / ref.norm())  # independent recomputation
    assert plan.output_change == pytest.approx(expected, rel=1e-6)
    assert expected > 0.01
    assert f"{plan.output_change:.3g}" in str(plan)


def _rules(**by_group):
    def width_rules(model, groups):
        return {g.name: by_group.get(g.name, WidthRule()) for g in groups}

    return width_rules


def test_width_rules_multiples_minimums_and_no_widening_are_honoured(cnn, monkeypatch):
    net, x, groups = cnn
    a, b, c = (g.name for g in groups)
    monkeypatch.setattr(
        streamline_module,
        "width_rules",
        _rules(
            **{
                a: WidthRule(widen=False, reason="feeds a fixed-size stem"),
                b: WidthRule(multiple_of=6, minimum=18),
            }
        ),
    )
    table = verdict_table({a: ("DS", 1.0), b: ("IS", 1.0), c: ("DS", 1.0)})
    plan = streamline(net, table, x, budget="flops", floor="none")
    rows = plan.table.set_index("group")
    assert plan.widths[a] == 8 and "fixed-size stem" in rows.reason[a]
    assert plan.widths[c] > 32 and plan.widths[b] % 6 == 0 and 18 <= plan.widths[b] < 32
    # far below what b can give: b stops at its rule's minimum, the DS groups narrow by need
    plan = streamline(net, table, x, budget=0.3 * count_flops(net, x), floor="none")
    assert plan.widths[b] == 18 and plan.budget["met"]
    assert plan.widths[a] <= 8  # a DS group may narrow by need, never widen against its rule


def test_tied_groups_move_together(monkeypatch):
    torch.manual_seed(0)
    net = zoo.CNN1D([16, 16, 16], length=40, num_classes=10)
    x = torch.randn(2, 1, 40)
    groups = find_groups(net, x)
    a, b, c = (g.name for g in groups)
    monkeypatch.setattr(
        streamline_module,
        "width_rules",
        _rules(**{a: WidthRule(tied=(c,)), c: WidthRule(tied=(a,))}),
    )
    table = verdict_table({a: ("IS", 1.0), b: ("DS", 0.5), c: ("IS", 0.5)})
    plan = streamline(net, table, x, budget="flops", floor="none")
    assert plan.widths[a] == plan.widths[c] < 16
    assert plan.widths[b] > 16
    assert "tied with" in plan.table.set_index("group").reason[a]
    # tied groups that disagree are kept
    table = verdict_table({a: ("IS", 1.0), b: ("DS", 0.5), c: ("DS", 0.5)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BudgetWarning)
        plan = streamline(net, table, x, budget="flops", floor="none")
    assert plan.widths[a] == plan.widths[c] == 16
    assert "disagree" in plan.table.set_index("group").reason[a]


def test_a_group_whose_trial_resize_fails_is_kept_with_the_reason(cnn, monkeypatch):
    net, x, groups = cnn
    a, b, c = (g.name for g in groups)
    real = streamline_module.resize

    def fragile(model, gs, widths, **kw):
        if widths.get(b, dict((g.name, g.width) for g in gs)[b]) != 32:
            raise ResizeError(f"group {b!r}: heads would not divide")
        return real(model, gs, widths, **kw)

    monkeypatch.setattr(streamline_module, "resize", fragile)
    table = verdict_table({a: ("DS", 1.0), b: ("IS", 1.0), c: ("IS", 1.0)})
    plan = streamline(net, table, x, budget="flops", floor="none")
    rows = plan.table.set_index("group")
    assert plan.widths[b] == 32
    assert rows.reason[b].startswith("kept: resizing it failed") and "heads" in rows.reason[b]
    assert plan.widths[c] < 32  # the others still meet the budget
    assert plan.budget["met"]


def test_every_group_ds_at_equal_flops_widens_less_until_the_budget_is_met():
    # Nothing to narrow: the only way to the budget is to shrink the widening back (it once
    # skipped that search and returned a plan at 6x the FLOPs, "NOT met").
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))
    x = torch.randn(4, 8)
    groups = find_groups(net, x)
    table = pd.DataFrame({"group": [g.name for g in groups], "label": "DS", "confidence": 0.9})
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetWarning)
        plan = streamline(net, table, x, budget="flops", floor="none")
    assert plan.budget["met"]
    assert abs(plan.budget["achieved"] - count_flops(net, x)) <= 0.02 * count_flops(net, x)
    assert all(plan.widths[g.name] >= g.width for g in groups)


def test_every_group_ds_still_meets_a_smaller_budget_narrowing_the_least_needed_most():
    # Short, under-fitted runs read DS almost everywhere; asked for 0.6x the parameters the plan
    # must still meet it, taking width where the verdicts say it is least likely to be needed.
    torch.manual_seed(0)
    net = zoo.MLP(40, [128, 128, 128], 10)
    x = torch.randn(4, 40)
    assert {g.name for g in find_groups(net, x)} == {"hidden.0", "hidden.1", "hidden.2"}
    need = {"hidden.0": 0.95, "hidden.1": 0.6, "hidden.2": 0.9}
    table = verdict_table({g: ("DS", p) for g, p in need.items()})
    target = 0.6 * count_params(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetWarning)
        plan = streamline(net, table, x, budget=target, budget_kind="params")
    assert abs(plan.budget["achieved"] - target) <= 0.02 * target
    cut = {g: 1 - plan.widths[g] / 128 for g in need}
    assert cut["hidden.1"] > cut["hidden.2"] > cut["hidden.0"] >= 0
    reasons = dict(zip(plan.table.group, plan.table.reason))
    assert "only to meet the budget" in reasons["hidden.1"]
    assert (plan.table.label == "DS").all()  # the verdicts themselves are unchanged


def _mlp_params(widths, n_in=40, n_out=10):
    """Parameters of a Linear/ReLU MLP with these hidden widths, counted layer by layer."""
    total, fan_in = 0, n_in
    for w in [*widths, n_out]:
        total += fan_in * w + w  # weight and bias
        fan_in = w
    return total


def test_undetermined_groups_narrow_by_need_before_ds_groups():
    # The issue-15 MLP's shape: the IS group alone cannot reach the budget (it stops at its
    # min_fraction floor), so width comes from the others, least likely to need it first: the
    # undetermined group (P = 0.5) before the DS group (P = 0.9).
    torch.manual_seed(0)
    net = zoo.MLP(40, [128, 128, 128], 10)
    x = torch.randn(4, 40)
    assert count_params(net) == _mlp_params([128, 128, 128])
    table = verdict_table(
        {"hidden.0": ("DS", 0.9), "hidden.1": ("undetermined", 0.0), "hidden.2": ("IS", 0.9)}
    )
    target = 0.2 * _mlp_params([128, 128, 128])
    # out of reach unless the undetermined group narrows: even with the DS group at its floor
    assert _mlp_params([32, 128, 32]) > 1.02 * target
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetWarning)
        plan = streamline(net, table, x, budget=target, budget_kind="params")
    w = plan.widths
    assert abs(_mlp_params([w["hidden.0"], w["hidden.1"], w["hidden.2"]]) - target) <= 0.02 * target
    assert plan.budget["met"] and plan.budget["achieved"] == count_params(plan.apply(net, "reinit"))
    assert w["hidden.2"] == 32  # the IS group at its floor: max(min_width, 128 / 4)
    assert w["hidden.1"] < w["hidden.0"] < 128  # undetermined narrows more than DS
    reasons = dict(zip(plan.table.group, plan.table.reason))
    assert reasons["hidden.1"].startswith(
        "undetermined, P(needs width) taken as 0.5: narrowed only to meet the budget"
    )
    assert reasons["hidden.0"].startswith("DS (confidence 0.90), P(needs width) 0.90: narrowed")
    assert reasons["hidden.2"] == "IS (confidence 0.90): wide enough; stopped at its floor (32)"
    assert list(plan.table.label) == ["DS", "undetermined", "IS"]  # verdicts unchanged


def test_a_budget_the_is_groups_can_meet_leaves_undetermined_groups_alone():
    # Two IS groups at one confidence narrow by one factor: the plan is the widest common width
    # within the budget (cost within the 2 % tolerance: nothing left for the greedy pass).
    torch.manual_seed(0)
    net = zoo.MLP(40, [128, 128, 128], 10)
    x = torch.randn(4, 40)
    table = verdict_table(
        {"hidden.0": ("undetermined", 0.0), "hidden.1": ("IS", 0.8), "hidden.2": ("IS", 0.8)}
    )
    target = 0.7 * _mlp_params([128, 128, 128])
    fits = [w for w in range(32, 129) if _mlp_params([128, w, w]) <= target]
    w = max(fits)
    assert abs(_mlp_params([128, w, w]) - target) <= 0.02 * target
    plan = streamline(net, table, x, budget=target, budget_kind="params")
    assert plan.widths == {"hidden.0": 128, "hidden.1": w, "hidden.2": w}
    assert plan.table.set_index("group").reason["hidden.0"] == "undetermined: kept"


def test_the_need_pool_keeps_disagreeing_ties_other_widths_and_failed_resizes(monkeypatch):
    torch.manual_seed(0)
    net = zoo.CNN1D([16, 16, 16, 8], length=40, num_classes=10)
    x = torch.randn(2, 1, 40)
    groups = find_groups(net, x)
    a, b, c, d = (g.name for g in groups)
    # a and c tied, one IS and one DS: they disagree; b is tied to d, of another width
    monkeypatch.setattr(
        streamline_module,
        "width_rules",
        _rules(
            **{
                a: WidthRule(tied=(c,)),
                c: WidthRule(tied=(a,)),
                b: WidthRule(tied=(d,)),
                d: WidthRule(tied=(b,)),
            }
        ),
    )
    table = verdict_table({a: ("IS", 1.0), b: ("undetermined", 0.0), c: ("DS", 0.5)})
    with pytest.warns(BudgetWarning, match="budget not met"):
        plan = streamline(net, table, x, budget=0.5 * count_flops(net, x))
    assert plan.widths == {g.name: g.width for g in groups}  # nothing may narrow
    rows = plan.table.set_index("group")
    assert "disagree" in rows.reason[a] and "another width" in rows.reason[b]
    # untied, the undetermined groups narrow; one whose narrowing fails is kept, and says why
    monkeypatch.setattr(streamline_module, "width_rules", _rules())
    real = streamline_module.resize

    def fragile(model, gs, widths, **kw):
        if widths.get(b, 16) != 16:
            raise ResizeError(f"group {b!r}: cannot narrow")
        return real(model, gs, widths, **kw)

    monkeypatch.setattr(streamline_module, "resize", fragile)
    table = verdict_table({g.name: ("undetermined", 0.0) for g in groups})
    plan = streamline(net, table, x, budget=0.8 * count_flops(net, x))
    rows = plan.table.set_index("group")
    assert plan.widths[b] == 16 and "narrowing it failed" in rows.reason[b]
    assert "cannot narrow" in rows.reason[b]
    assert all(plan.widths[n] < w for n, w in ((a, 16), (c, 16), (d, 8)))
    assert plan.budget["met"]


class FixedReshape(nn.Module):
    """A width written into the forward: ``fc2``'s 16 outputs are viewed as (4, 4) by constants
    (its group is the 4 inner channels, each a block of 4 rows), so resizing that group succeeds
    as surgery and fails only when the model runs."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 24)
        self.fc2 = nn.Linear(24, 16)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = self.fc2(torch.relu(self.fc1(x)))
        return self.head(h.view(x.shape[0], 4, 4).relu().mean(1))


def test_a_width_fixed_in_the_forward_is_kept_and_every_planned_resize_runs():
    torch.manual_seed(0)
    net, x = FixedReshape(), torch.randn(3, 6)
    groups = find_groups(net, x)
    assert {g.name: g.width for g in groups} == {"fc1": 24, "fc2": 4}
    # the surgery alone succeeds: only running the model shows the fixed view
    with pytest.raises(RuntimeError, match="shape"):
        resize(net, groups, {"fc2": 3}, init="reinit")(x)
    for label in ("DS", "IS"):
        table = verdict_table({"fc1": (label, 0.9), "fc2": (label, 0.9)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BudgetWarning)
            plan = streamline(net, table, x, budget=0.6 * count_params(net), budget_kind="params")
        rows = plan.table.set_index("group")
        assert plan.widths["fc2"] == 4
        assert rows.reason["fc2"].startswith("kept: resizing it failed")
        assert "shape" in rows.reason["fc2"]
        assert plan.widths["fc1"] != 24  # the other group still moves
        new = plan.apply(net)
        assert {g.name: g.width for g in find_groups(new, x)} == plan.widths
        assert new(x).shape == (3, 3)


def test_apply_turns_every_failure_into_one_resize_error_naming_the_moved_groups(cnn):
    net, x, groups = cnn
    a, b, c = (g.name for g in groups)
    table = verdict_table({a: ("DS", 1.0), b: ("IS", 1.0), c: ("IS", 1.0)})
    plan = streamline(net, table, x, budget="flops", floor="none")
    moved = [g for g, w in plan.widths.items() if w != plan.old_widths[g]]
    assert moved

    class Broken(type(net)):  # the resized copy cannot even be traced
        def forward(self, x):
            raise ValueError("this model refuses to run")

    broken = Broken.__new__(Broken)
    broken.__dict__ = dict(net.__dict__)
    with pytest.raises(ResizeError) as err:
        plan.apply(broken)
    text = str(err.value)
    assert "\n" not in text and "could not be applied" in text
    assert all(g in text for g in moved) and "refuses to run" in text


def test_floors_off_a_rules_multiples_are_rounded_up_so_the_need_pool_never_crashes():
    # GroupNorm(3, 12): widths stay multiples of 3, and min_width=4 is not one. Before, the
    # need pool planned 4 channels and streamline raised a ResizeError from its own search.
    import archs

    model, x = archs.groupnorm_cnn()
    groups = find_groups(model, x)
    rules = streamline_module.width_rules(model, groups)
    assert {g.name: rules[g.name].multiple_of for g in groups} == {"0": 4, "3": 3}
    table = verdict_table({"0": ("DS", 0.9), "3": ("undetermined", 0.9)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BudgetWarning)
        plan = streamline(model, table, x, budget=0.6 * count_params(model), budget_kind="params")
    assert plan.widths["3"] < 12
    assert all(w % rules[g].multiple_of == 0 and w >= 4 for g, w in plan.widths.items())
    new = plan.apply(model)
    assert {g.name: g.width for g in find_groups(new, x)} == plan.widths
