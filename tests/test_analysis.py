"""The paper's side analyses against naive loop implementations written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

from widthwise.analysis import (
    NormGradCorrelation,
    SignFlips,
    channel_vectors,
    cosine_matrix,
    early_final_correlation,
    ifm_width,
    norm_distribution,
)
from widthwise.groups import ChannelGroup, Member


def conv_flatten_model():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 5, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(5 * 4 * 4, 3),
    )
    group = ChannelGroup(
        "0",
        5,
        (
            Member("0.weight", 0, "producer"),
            Member("0.bias", 0, "other"),
            Member("3.weight", 1, "consumer", repeat=16),
        ),
    )
    return net, group


def naive_channel(net, group, i, roles):
    params = dict(net.named_parameters())
    parts = []
    for m in group.members:
        p = params[m.param].detach()
        if m.role not in roles or p.dim() < 2:
            continue
        idx = list(range(m.offset + i * m.repeat, m.offset + (i + 1) * m.repeat))
        parts.append(p.index_select(m.dim, torch.tensor(idx)).reshape(-1))
    return torch.cat(parts).double()


def test_channel_vectors_match_explicit_slices():
    net, group = conv_flatten_model()
    for roles in [("producer",), ("producer", "consumer")]:
        got = channel_vectors(net, group, roles=roles).double()
        for i in range(group.width):
            expected = naive_channel(net, group, i, roles)
            # Same entries; order within a member's slice may differ, so compare sorted.
            torch.testing.assert_close(got[i].sort().values, expected.sort().values)


def test_sign_flips_counts_changed_signs():
    net, group = conv_flatten_model()
    flips = SignFlips(net, [group])
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    got = flips.update(step=7)[group.name]
    changed = total = 0
    for i in range(group.width):
        for m in group.members:
            if before[m.param].dim() < 2:
                continue
            for j in range(m.offset + i * m.repeat, m.offset + (i + 1) * m.repeat):
                a = before[m.param].select(m.dim, j).reshape(-1)
                b = dict(net.named_parameters())[m.param].detach().select(m.dim, j).reshape(-1)
                changed += int((torch.sign(a) != torch.sign(b)).sum())
                total += a.numel()
    assert got == pytest.approx(changed / total)
    table = flips.compute()
    assert list(table.columns) == ["step", "group", "flipped"]
    assert table.iloc[0]["step"] == 7

    restored = SignFlips(net, [group])
    restored.load_state_dict(flips.state_dict())
    assert restored.update()[group.name] == pytest.approx(got)


def test_early_final_correlation_matches_scipy():
    rng = np.random.default_rng(0)
    norms = rng.random((6, 20))
    norms[3, :5] = norms[3, 0]  # ties
    table = early_final_correlation(range(6), norms)
    for k in range(6):
        assert table.pearson[k] == pytest.approx(scipy.stats.pearsonr(norms[k], norms[-1])[0])
        assert table.spearman[k] == pytest.approx(scipy.stats.spearmanr(norms[k], norms[-1])[0])
    assert table.pearson.iloc[-1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n_snapshots, width"):
        early_final_correlation([0], np.ones(3))


def test_cosine_matrix_sorted_by_norm():
    net, group = conv_flatten_model()
    matrix, order = cosine_matrix(net, group)
    vectors = [naive_channel(net, group, i, ("producer",)) for i in range(group.width)]
    norms = [float(v.norm()) for v in vectors]
    assert list(order) == sorted(range(group.width), key=lambda i: -norms[i])
    for a in range(group.width):
        for b in range(group.width):
            va, vb = vectors[order[a]], vectors[order[b]]
            cos = float(va @ vb) / (float(va.norm()) * float(vb.norm()))
            assert matrix[a, b] == pytest.approx(cos, abs=1e-6)


def test_norm_distribution_picks_first_and_last():
    norms = np.arange(30, dtype=float).reshape(10, 3)
    table = norm_distribution(list(range(100, 110)), norms, at=3)
    assert sorted(table.step.unique()) == [100, 104, 109] or sorted(table.step.unique()) == [
        100,
        105,
        109,
    ]
    last = table[table.step == 109].sort_values("channel").norm.tolist()
    assert last == norms[-1].tolist()


def test_norm_grad_correlation_matches_naive_and_keeps_no_tensors():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    group = ChannelGroup(
        "0", 16, (Member("0.weight", 0, "producer"), Member("2.weight", 1, "consumer"))
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    tracker = NormGradCorrelation(net, [group], opt)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    expected = []
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        w = [float(net[0].weight[i].detach().norm()) for i in range(16)]
        g = [float(net[0].weight.grad[i].norm()) for i in range(16)]
        expected.append(scipy.stats.spearmanr(w, g)[0])
        opt.step()  # the pre-hook measures here
    table = tracker.compute()
    assert table.spearman.tolist() == pytest.approx(expected)
    assert all(isinstance(v, float) for v in table.pearson)
    tracker.close()
    opt.step()
    assert len(tracker.compute()) == 3


def naive_ifm(vectors, beta, normalize=True):
    pts = [np.asarray(v, dtype=np.float64) for v in vectors]
    if normalize:
        pts = [p / max(np.linalg.norm(p), 1e-300) for p in pts]
    counts = [1.0] * len(pts)
    d_max = max(np.linalg.norm(a - b) for a in pts for b in pts)
    while len(pts) > 1:
        best = None
        for i in range(len(pts)):
            for j in range(i + 1, len(pts)):
                d = np.linalg.norm(pts[i] - pts[j])
                if best is None or d < best[0]:
                    best = (d, i, j)
        d, i, j = best
        if d > beta * d_max:
            break
        pts[i] = (pts[i] * counts[i] + pts[j] * counts[j]) / (counts[i] + counts[j])
        counts[i] += counts[j]
        del pts[j], counts[j]
    return len(pts)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("beta", [0.3, 0.5, 0.8])
def test_ifm_width_matches_naive(seed, beta):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 6))
    vectors = np.concatenate([c + 0.2 * rng.normal(size=(5, 6)) for c in centres])
    assert ifm_width(vectors, beta=beta) == naive_ifm(vectors, beta)
    assert ifm_width(vectors, beta=beta, normalize=False) == naive_ifm(vectors, beta, False)


def test_ifm_width_bad_input():
    assert ifm_width(np.ones((1, 3))) == 1
    with pytest.raises(ValueError, match="NaN"):
        ifm_width(np.full((3, 2), math.nan))
    with pytest.raises(ValueError, match="beta"):
        ifm_width(np.eye(3), beta=0)
    # Larger beta merges more.
    rng = np.random.default_rng(0)
    v = rng.normal(size=(40, 8))
    widths = [ifm_width(v, beta=b) for b in (0.2, 0.5, 0.8)]
    assert widths == sorted(widths, reverse=True)


def test_figures_plot_the_analyses_and_land_in_the_html_report(tmp_path):
    from widthwise import WidthTracker
    from widthwise.analysis import figures

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    tracker = WidthTracker(net, x[:2], tmp_path / "r.wws")
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    flips = SignFlips(net, tracker.groups)
    grads = NormGradCorrelation(net, tracker.groups, opt)
    for step in range(12):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        tracker.snapshot(step=step)
        flips.update(step)
    grads.close()
    figs = dict(figures(tracker.run, net, tracker.groups, sign_flips=flips, norm_grad=grads))
    assert set(figs) == {
        "Early vs final channel norms",
        "Sign flips since initialisation",
        "Matthew effect: weight norm vs gradient norm per channel",
        "Cosine similarity between channels, sorted by norm",
        "IFM effective width",
    }
    g = tracker.groups[0]
    line = figs["Early vs final channel norms"].axes[0].get_lines()[0]
    steps, norms = tracker.run.channel_norms(g.name)
    np.testing.assert_allclose(line.get_ydata(), early_final_correlation(steps, norms).spearman)
    flipped = figs["Sign flips since initialisation"].axes[0].get_lines()[0].get_ydata()
    np.testing.assert_allclose(flipped, flips.compute().query("group == @g.name").flipped)
    bars = [p.get_height() for p in figs["IFM effective width"].axes[0].patches]
    expected = [h.width for h in tracker.groups]
    expected += [ifm_width(channel_vectors(net, h)) for h in tracker.groups]
    assert bars == expected
    report = tracker.report()
    for title, fig in figs.items():
        report.add_figure(title, fig, caption="<measured>")
    page = report.to_html()
    assert page.count("data:image/png;base64,") >= len(figs) + len(tracker.groups)
    assert "&lt;measured&gt;" in page and "<measured>" not in page
