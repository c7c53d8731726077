"""Resize on the grouping patterns of ``tests/archs.py`` that broke its promises (see
``benchmarks/resize_battery.py``): every resize gives the planned widths or raises ResizeError
naming the group; net2net widening is exact to 1e-5 or refused."""

from __future__ import annotations

import importlib
import itertools
import re
import warnings

import pytest
import torch
from torch import nn

import archs
from test_resize_rules import TOL, _out
from widthwise.groups import ChannelGroup, find_groups
from widthwise.resize import ResizeError, resize, width_rules

RESIZE = importlib.import_module("widthwise.resize")  # the module; the package exports the function


def _groups(model: nn.Module, x: object) -> list[ChannelGroup]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return find_groups(model.eval(), x)


def _group(groups: list[ChannelGroup], name: str) -> ChannelGroup:
    return next(g for g in groups if g.name == name)


def test_net2net_refuses_a_widening_a_hidden_normalisation_breaks():
    # SwiftFormer: F.normalize over q and k; a split copy changes every channel's norm
    model, x = archs.additive_attention()
    name = "to_query+to_key+proj (residual)"
    groups = _groups(model, x)
    g = _group(groups, name)
    # without example_inputs nothing shows the normalisation: the widening runs, and is not exact
    blind = resize(model, groups, {name: g.width + 2}, init="net2net")
    before, after = _out(model, x), _out(blind, x)
    worst = max(abs(float(a) - float(b)) for a, b in zip(before.flatten(), after.flatten()))
    assert worst > 10 * TOL
    with pytest.raises(ResizeError, match=re.escape(repr(name))):
        resize(model, groups, {name: g.width + 2}, init="net2net", example_inputs=x)
    with pytest.raises(ResizeError, match=re.escape(repr(name))):
        resize(model, groups, {name: g.width + 2}, init="prune", example_inputs=x)
    # reinit widens it, and narrowing keeps its meaning: both give the planned width
    for width, init in ((g.width + 2, "reinit"), (g.width - 1, "net2net")):
        new = resize(model, groups, {name: width}, init=init, example_inputs=x)
        assert _group(_groups(new, x), name).width == width


def test_net2net_still_widens_the_other_groups_of_those_models_exactly():
    model, x = archs.additive_attention()
    groups = _groups(model, x)
    g = _group(groups, "embed+final (residual)")
    new = resize(model, groups, {g.name: g.width + 2}, init="net2net", example_inputs=x)
    before, after = _out(model, x), _out(new, x)
    worst = max(abs(float(a) - float(b)) for a, b in zip(before.flatten(), after.flatten()))
    assert worst <= TOL


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated")
@pytest.mark.parametrize("form", ["parametrize", "hooks"])
def test_a_group_a_weight_norm_normalises_over_cannot_widen_exactly(form, monkeypatch):
    # pos is weight-normalised per kernel tap over all its channels (wav2vec2); a's norm is per
    # output channel, so its rows alone would copy exactly
    model, x = archs.weight_norm_net(form=form)
    groups = _groups(model, x)
    name = "a+pos (residual)"
    g = _group(groups, name)
    assert not width_rules(model, groups)[name].widen
    for init in ("net2net", "prune"):  # refused from the rule, without running anything
        with pytest.raises(ResizeError, match=re.escape(repr(name))):
            resize(model, groups, {name: g.width + 2}, init=init)
    # the rule is right: the surgery done anyway (the rule lifted) changes the output
    monkeypatch.setattr(RESIZE, "_weight_normalised_over", lambda *a: False)
    wide = resize(model, groups, {name: g.width + 2}, init="net2net")
    monkeypatch.undo()
    before, after = _out(model, x), _out(wide, x)
    worst = max(abs(float(a) - float(b)) for a, b in zip(before.flatten(), after.flatten()))
    assert worst > 10 * TOL
    new = resize(model, groups, {name: g.width - 1}, init="net2net", example_inputs=x)
    assert new.pos.weight.shape[:2] == (g.width - 1, g.width - 1)
    assert new.pos.in_channels == new.pos.out_channels == g.width - 1  # hooks: weight recomputed
    assert _group(_groups(new, x), name).width == g.width - 1


def _lite_mla_by_hand(model: nn.Module, x: torch.Tensor, dim: int) -> torch.Tensor:
    """LiteMLA's forward written per head with loops, head size ``dim`` given, not read."""
    with torch.no_grad():
        h = model.stem(x)
        qkv = model.qkv(h)
        scales = [qkv, *(op(qkv) for op in model.aggreg)]
        b, _, rows, cols = h.shape
        heads = []
        for t in scales:
            for first in range(0, t.shape[1], 3 * dim):
                q = torch.relu(t[:, first : first + dim].flatten(2))  # [b, dim, n]
                k = torch.relu(t[:, first + dim : first + 2 * dim].flatten(2))
                v = t[:, first + 2 * dim : first + 3 * dim].flatten(2)
                out = torch.zeros_like(v)
                for n in range(q.shape[2]):
                    w = torch.einsum("bd,bdm->bm", q[:, :, n], k)  # q_n · k_m over channels
                    out[:, :, n] = torch.einsum("bm,bdm->bd", w, v) / (
                        w.sum(1, keepdim=True) + 1e-5
                    )
                heads.append(out)
        y = model.proj(torch.cat(heads, 1).reshape(b, -1, rows, cols))
        return model.head((h + y).mean((2, 3)))


@pytest.mark.parametrize(("width", "init"), [(6, "reinit"), (3, "net2net"), (2, "prune")])
def test_lite_mla_head_size_follows_its_groups(width, init):
    # EfficientViT's LiteMLA reshapes by its `dim` attribute: resize sets it, and the groups of
    # all scales (one head size) move together
    model, x = archs.lite_mla()
    groups = _groups(model, x)
    new = resize(model, groups, {"attention (heads)": width}, init=init, example_inputs=x)
    assert new.dim == width and model.dim == 4
    found = {g.name: g.width for g in _groups(new, x)}
    assert found["attention (heads)"] == found["attention (scale 1 heads)"] == width
    torch.testing.assert_close(_out(new, x), _lite_mla_by_hand(new, x, width), atol=TOL, rtol=TOL)
    # the unresized model agrees with the hand-written forward too (the reference is right)
    torch.testing.assert_close(_out(model, x), _lite_mla_by_hand(model, x, 4), atol=TOL, rtol=TOL)
    with pytest.raises(ResizeError, match=re.escape("'attention (heads)'")):
        resize(model, groups, {"attention (heads)": 6}, init="net2net", example_inputs=x)


@pytest.mark.parametrize(("width", "init"), [(18, "net2net"), (18, "reinit"), (15, "net2net")])
def test_embedding_bag_reports_its_new_width(width, init):
    model, x = archs.embedding_bag()
    groups = _groups(model, x)
    new = resize(model, groups, {"bag": width}, init=init, example_inputs=x)
    assert new.bag.embedding_dim == width and new.bag.weight.shape == (30, width)
    assert {g.name: g.width for g in _groups(new, x)}["bag"] == width
    if init == "net2net" and width > 16:  # mean of each bag's rows, by hand, through the layers
        ids, offsets = x
        bounds = [*offsets.tolist(), len(ids)]
        with torch.no_grad():
            bags = torch.stack(
                [new.bag.weight[ids[a:b]].mean(0) for a, b in itertools.pairwise(bounds)]
            )
            by_hand = new.head(torch.relu(new.fc(bags)))
        torch.testing.assert_close(by_hand, _out(model, x), atol=TOL, rtol=TOL)


def test_res2net_last_split_narrows_as_planned_and_cannot_widen():
    # torch.split(x, w) takes every part at w channels and the last at what is left: the last
    # part can narrow (find_groups then cannot regroup the uneven split; resize's model is the
    # planned one), but not widen (the extra channels would make a part of their own)
    model, x = archs.res2net_block()
    groups = _groups(model, x)
    new = resize(model, groups, {"conv1 #2": 3}, init="net2net", example_inputs=x)
    assert new.conv1.out_channels == new.conv3.in_channels == 15
    with torch.no_grad():  # the forward by hand, parts cut at 4, 8, 12 and 12..15
        h = torch.relu(new.stem(x))
        y = torch.relu(new.bn1(new.conv1(h)))
        parts = [y[:, 0:4], y[:, 4:8], y[:, 8:12], y[:, 12:15]]
        outs, sp = [], parts[0]
        for i in range(3):
            sp = torch.relu(new.convs[i](parts[0] if i == 0 else sp + parts[i]))
            outs.append(sp)
        by_hand = new.fc((h + new.conv3(torch.cat([*outs, parts[3]], 1))).mean((2, 3)))
    torch.testing.assert_close(_out(new, x), by_hand, atol=TOL, rtol=TOL)
    for init in ("net2net", "reinit"):
        with pytest.raises(ResizeError, match=re.escape("'conv1 #2'")):
            resize(model, groups, {"conv1 #2": 6}, init=init, example_inputs=x)
