"""Resize on the grouping patterns of ``tests/archs.py`` that broke its promises (see
``benchmarks/resize_battery.py``): every resize gives the planned widths or raises ResizeError
naming the group; net2net widening is exact to 1e-5 or refused."""

from __future__ import annotations

import importlib
import re
import warnings

import pytest
import torch
from torch import nn

import archs
from widthwise.groups import ChannelGroup, _call_model, find_groups
from widthwise.resize import ResizeError, resize, width_rules

TOL = 1e-5
RESIZE = importlib.import_module("widthwise.resize")  # the module; the package exports the function


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
    if form == "parametrize":  # find_groups does not find the hooks form's group again (reported)
        assert _group(_groups(new, x), name).width == g.width - 1
