"""The streamlining proof harness: every variant at the right size, resumable, readable."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from widthwise import find_groups
from widthwise.reproduction import streamlining as S
from widthwise.reproduction import zoo
from widthwise.streamline import count_params

TINY = S.Setup(
    "tiny",
    "VGG1D 16-32, FC 32, one epoch on 600 MNIST-1D examples",
    lambda n: zoo.VGG1D([16, 32], length=40, num_classes=n, hidden=32),
    data="mnist1d",
    epochs=1,
    samples=600,
)


def fake_verdicts(run):
    """DS for the first group, IS for the rest: forces a plan that moves and saves parameters
    (a one-epoch run gives no verdicts of its own)."""
    names = [g.name for g in run.groups]
    return pd.DataFrame(
        [
            {"group": n, "width": 0, "label": "DS" if i == 0 else "IS", "confidence": 0.9}
            for i, n in enumerate(names)
        ]
    )


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(S.SETUPS, "tiny", TINY)
    monkeypatch.setattr("widthwise.verdicts.verdicts", fake_verdicts)
    return TINY


def test_every_variant_is_trained_at_the_streamlined_parameter_count(tiny, tmp_path):
    rows = S.run_proof(tmp_path, setups=["tiny"], seeds=1, plans=["flops"])
    by = rows.set_index("variant")
    assert sorted(by.index) == ["original", "pruned", "random", "streamlined", "uniform"]
    flops0, params0 = by.flops["original"], by.params["original"]
    assert abs(by.flops["streamlined"] / flops0 - 1) <= 0.02  # equal FLOPs, as planned
    for baseline in ("uniform", "random", "pruned"):
        assert abs(by.params[baseline] / by.params["streamlined"] - 1) <= 0.05, baseline
    assert by.params["streamlined"] < params0
    assert "Torch-Pruning" in by.note["pruned"]
    assert rows.accuracy.between(0, 1).all()
    # the streamlined widths are the plan's, recorded next to the row
    plans = json.loads((tmp_path / "plans.json").read_text())
    assert json.loads(by.widths["streamlined"]) == plans["tiny"]["plans"]["flops"]["widths"]
    # the random reallocation is not a uniform scaling
    w_u, w_r = json.loads(by.widths["uniform"]), json.loads(by.widths["random"])
    base = {g.name: g.width for g in find_groups(TINY.build(10), torch.zeros(2, 40))}
    ratios_u = {round(w_u[k] / base[k], 1) for k in base}
    ratios_r = {round(w_r[k] / base[k], 2) for k in base}
    assert len(ratios_u) <= 2 < len(ratios_r) + 1


def test_the_proof_resumes_without_retraining(tiny, tmp_path, monkeypatch):
    first = S.run_proof(tmp_path, setups=["tiny"], seeds=1, plans=["flops"])

    def no_training(*a, **k):
        raise AssertionError("a finished row was trained again")

    monkeypatch.setattr(S, "fit", no_training)
    again = S.run_proof(tmp_path, setups=["tiny"], seeds=1, plans=["flops"])
    pd.testing.assert_frame_equal(first.reset_index(drop=True), again.reset_index(drop=True))
    table = S.summary(again)
    orig = table[table.variant == "original"].iloc[0]
    assert orig.params_ratio == 1.0 and orig.vs_original == 0.0
    lines = S.verdict_lines(again)
    assert len(lines) == 1 and lines[0].startswith("tiny flops: params")
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    fig = S.figure(again)
    assert len(fig.axes) == 2
    assert plt.get_fignums() == before  # a bare Figure: nothing left open in pyplot


def test_uniform_and_random_widths_hit_the_target():
    net = zoo.VGG1D([16, 32, 64], length=40, hidden=64)
    x = torch.zeros(2, 40)
    groups = find_groups(net, x)
    target = count_params(net) // 2
    from widthwise.resize import resize

    for widths in (S.uniform_widths(net, groups, target), S.random_widths(net, groups, target, 3)):
        got = count_params(resize(net, groups, widths, init="reinit"))
        assert abs(got / target - 1) < 0.05
    assert S.random_widths(net, groups, target, 3) != S.random_widths(net, groups, target, 4)


def test_pruned_model_keeps_the_highest_norm_channels_and_the_target():
    torch.manual_seed(0)
    net = zoo.VGG1D([16, 32], length=40, hidden=32)
    x = torch.randn(4, 40)
    target = int(count_params(net) * 0.6)
    pruned, how = S.pruned_model(net, x, target)
    assert abs(count_params(pruned) / target - 1) < 0.06
    assert pruned(x).shape == (4, 10)
    # magnitude pruning: the surviving first-conv filters are the largest-norm ones
    norms = net.features[0].weight.flatten(1).norm(dim=1)
    kept = pruned.features[0].weight.shape[0]
    survivors = pruned.features[0].weight.flatten(1).norm(dim=1)
    assert torch.allclose(survivors.sort().values, norms.sort().values[-kept:], atol=0, rtol=0) or (
        "group" in how.lower()  # group norm also counts the BN and the next layer's columns
    )


def test_unknown_data_is_refused():
    with pytest.raises(ValueError, match="unknown data set"):
        S.build_task(TINY, data="cifar")


def test_cli_names_match_the_setups():
    from widthwise.commands import reproduce

    assert list(reproduce.PROOF_FAMILY_NAMES) == list(S.SETUPS)


def test_reproduce_streamline_runs_the_proof_through_the_cli(tiny, tmp_path, capsys, monkeypatch):
    from widthwise.cli import main
    from widthwise.commands import reproduce

    monkeypatch.setattr(reproduce, "PROOF_FAMILY_NAMES", ("tiny",))
    monkeypatch.setattr(S, "PLANS", [p for p in S.PLANS if p[0] in ("flops", "params0.6")])
    args = ["reproduce", "streamline", "--families", "tiny", "--seeds", "1", "--epochs", "1"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "tiny flops: params" in out and "tiny params0.6: params" in out
    table = pd.read_csv(tmp_path / "streamline-summary.csv")
    assert set(table.variant) == {"original", "streamlined", "uniform", "random", "pruned"}
    assert (tmp_path / "streamline.png").stat().st_size > 10_000
    # bad names and epochs: one line, nothing trained
    assert main(["reproduce", "streamline", "--families", "cnn9", "--out", str(tmp_path)]) != 0
    assert "no streamlining set-up for 'cnn9'" in capsys.readouterr().err
    assert main([*args[:4], "--epochs", "0", "--out", str(tmp_path / "new")]) != 0
    assert not (tmp_path / "new").exists()
