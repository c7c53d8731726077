"""Resize on the grouping patterns of ``tests/archs.py`` that broke its promises (see
``benchmarks/resize_battery.py``): every resize gives the planned widths or raises ResizeError
naming the group; net2net widening is exact to 1e-5 or refused."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from torch import nn

import archs
from widthwise.groups import ChannelGroup, _call_model, find_groups
from widthwise.resize import ResizeError, resize

TOL = 1e-5


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


@pytest.mark.parametrize(
    ("builder", "name"),
    [
        # F.normalize over q and k: a split copy changes every channel's norm
        ("additive_attention", "to_query+to_key+proj (residual)"),
        # pos is weight-normalised over its input channels (and each tap over all of them)
        ("weight_norm_net", "a+pos (residual)"),
    ],
)
def test_net2net_refuses_a_widening_a_hidden_normalisation_breaks(builder, name):
    model, x = getattr(archs, builder)()
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
