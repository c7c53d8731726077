"""Tests for widthwise.probes.similarity against naive references written here with explicit loops."""

from __future__ import annotations

import base64
import itertools
import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from widthwise.probes.similarity import (
    MinibatchCKA,
    block_structure,
    cka_cross,
    cka_heatmap,
    cka_matrix,
    compare_predictions,
    default_layers,
    linear_cka,
    pc1_share,
    report_section,
)

# --------------------------------------------------------------------------------------------
# Naive references
# --------------------------------------------------------------------------------------------


def naive_hsic_unbiased(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012) eq. as printed in Nguyen et al. (2021), eq. 3, with explicit loops."""
    n = len(K)
    Kt = [[0.0 if i == j else float(K[i, j]) for j in range(n)] for i in range(n)]
    Lt = [[0.0 if i == j else float(L[i, j]) for j in range(n)] for i in range(n)]
    trace = sum(Kt[i][j] * Lt[j][i] for i in range(n) for j in range(n))
    sum_k = sum(Kt[i][j] for i in range(n) for j in range(n))
    sum_l = sum(Lt[i][j] for i in range(n) for j in range(n))
    kl1 = sum(Kt[i][j] * Lt[j][m] for i in range(n) for j in range(n) for m in range(n))
    return (trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2 / (n - 2) * kl1) / (n * (n - 3))


def naive_hsic_biased(K: np.ndarray, L: np.ndarray) -> float:
    """tr(K H L H) / (n-1)², H = I - 11ᵀ/n, with explicit loops."""
    n = len(K)
    H = [[(1.0 if i == j else 0.0) - 1.0 / n for j in range(n)] for i in range(n)]

    def mul(A, B):
        return [[sum(A[i][m] * B[m][j] for m in range(n)) for j in range(n)] for i in range(n)]

    KH = mul(K.tolist(), H)
    LH = mul(L.tolist(), H)
    return sum(KH[i][j] * LH[j][i] for i in range(n) for j in range(n)) / (n - 1) ** 2


def naive_cka(X: np.ndarray, Y: np.ndarray, unbiased: bool = True) -> float:
    X, Y = (
        np.asarray(X, np.float64).reshape(len(X), -1),
        np.asarray(Y, np.float64).reshape(len(Y), -1),
    )
    K, L = X @ X.T, Y @ Y.T
    h = naive_hsic_unbiased if unbiased else naive_hsic_biased
    return h(K, L) / np.sqrt(h(K, K) * h(L, L))


def feature_hsic64(X: np.ndarray, Y: np.ndarray) -> float:
    """Unbiased HSIC for large n from the uncentred definitions, O(n d²), in long double.

    tr(K̃L̃) = ||XᵀY||² - Σ K_ii L_ii;  1ᵀK̃1 = ||Σx_i||² - Σ K_ii;  K̃1 = X(Xᵀ1) - diag K.
    Uncentred, these terms cancel so much that even float64 loses ~8 digits at n = 10,000
    with a feature mean of 30; x87 long double keeps ~11.
    """
    X, Y = X.astype(np.longdouble), Y.astype(np.longdouble)
    n = len(X)
    kd, ld = (X * X).sum(1), (Y * Y).sum(1)
    trace = (X.T @ Y) ** 2
    trace = trace.sum() - (kd * ld).sum()
    sk = (X.sum(0) ** 2).sum() - kd.sum()
    sl = (Y.sum(0) ** 2).sum() - ld.sum()
    k1 = X @ X.sum(0) - kd
    l1 = Y @ Y.sum(0) - ld
    return (trace + sk * sl / ((n - 1) * (n - 2)) - 2 / (n - 2) * (k1 @ l1)) / (n * (n - 3))


def feature_cka64(X: np.ndarray, Y: np.ndarray) -> float:
    return float(feature_hsic64(X, Y) / np.sqrt(feature_hsic64(X, X) * feature_hsic64(Y, Y)))


def related(rng: np.random.Generator, n: int, dx: int, dy: int, offset: float = 0.0):
    Z = rng.normal(size=(n, dx))
    Y = np.tanh(Z @ rng.normal(size=(dx, dy)) / np.sqrt(dx)) + 0.5 * rng.normal(size=(n, dy))
    return Z + offset, Y + offset


# --------------------------------------------------------------------------------------------
# linear_cka
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize(("n", "dx", "dy"), [(24, 3, 5), (16, 40, 30)])  # feature and Gram paths
def test_linear_cka_matches_naive(unbiased, n, dx, dy):
    rng = np.random.default_rng(n + dx)
    X, Y = related(rng, n, dx, dy, offset=2.0)
    ref = naive_cka(X, Y, unbiased)
    assert linear_cka(X, Y, unbiased=unbiased) == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert linear_cka(torch.tensor(X), torch.tensor(Y), unbiased) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_linear_cka_invariances(seed):
    rng = np.random.default_rng(seed)
    X, Y = related(rng, 200, 12, 9)
    base = linear_cka(X, Y)
    Q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    assert linear_cka(X @ Q, Y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(7.5 * X, 0.01 * Y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(X + rng.normal(size=12), Y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(X, Y) == pytest.approx(linear_cka(Y, X), rel=1e-12)
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(X, X, unbiased=False) == pytest.approx(1.0, abs=1e-12)
    # a non-isotropic scaling does change it: the invariances above are not vacuous
    assert abs(linear_cka(X * np.linspace(0.1, 10, 12), Y) - base) > 1e-3


def test_linear_cka_float32_at_n_10000():
    """Unbiased HSIC cancels badly: float32 features with a large mean, n = 10,000."""
    rng = np.random.default_rng(0)
    X, Y = related(rng, 10_000, 32, 24, offset=30.0)
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    ref = feature_cka64(X32, Y32)
    assert 0.1 < ref < 0.99
    assert linear_cka(torch.from_numpy(X32), torch.from_numpy(Y32)) == pytest.approx(ref, abs=1e-8)
    # the same formula evaluated in float32 is far off: the test data exercises the cancellation
    t = [torch.from_numpy(a) for a in (X32, Y32)]

    def hsic32(A, B):
        n = len(A)
        kd, ld = (A * A).sum(1), (B * B).sum(1)
        tr = ((A.T @ B) ** 2).sum() - (kd * ld).sum()
        sk, sl = (A.sum(0) ** 2).sum() - kd.sum(), (B.sum(0) ** 2).sum() - ld.sum()
        kl = (A @ A.sum(0) - kd) @ (B @ B.sum(0) - ld)
        return (tr + sk * sl / ((n - 1) * (n - 2)) - 2 / (n - 2) * kl) / (n * (n - 3))

    bad = hsic32(*t) / torch.sqrt(hsic32(t[0], t[0]) * hsic32(t[1], t[1]))
    assert not abs(float(bad) - ref) < 1e-2


def test_linear_cka_rejects_bad_input():
    with pytest.raises(ValueError, match="same number of rows"):
        linear_cka(np.zeros((5, 2)), np.zeros((6, 2)))
    with pytest.raises(ValueError, match="at least 4"):
        linear_cka(np.ones((3, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="examples x features"):
        linear_cka(np.ones(5), np.ones(5))
    assert np.isnan(linear_cka(np.ones((10, 3)), np.random.default_rng(0).normal(size=(10, 3))))


# --------------------------------------------------------------------------------------------
# Minibatch CKA
# --------------------------------------------------------------------------------------------


def minibatch_reference(feats: list[np.ndarray], k: int) -> np.ndarray:
    """Paper's minibatch CKA: Σ_b k_b·HSIC₁ per pair, then normalise (float64, explicit loops)."""
    n, L = len(feats[0]), len(feats)
    acc = np.zeros((L, L), dtype=np.longdouble)
    for start in range(0, n, k):
        sl = slice(start, start + k)
        m = len(feats[0][sl])
        for i in range(L):
            for j in range(L):
                acc[i, j] += m * feature_hsic64(feats[i][sl], feats[j][sl])
    d = np.sqrt(np.diag(acc))
    return (acc / np.outer(d, d)).astype(np.float64)


def test_minibatch_matches_reference_float32_n_10000():
    rng = np.random.default_rng(1)
    X, Y = related(rng, 10_000, 20, 16, offset=25.0)
    Z = np.maximum(Y, 0) * 40 + 3
    feats = [a.astype(np.float32) for a in (X, Y, Z)]
    k = 1000
    ref = minibatch_reference(feats, k)
    metric = MinibatchCKA()
    for start in range(0, 10_000, k):
        metric.update([torch.from_numpy(f[start : start + k]) for f in feats])
    got = metric.compute().numpy()
    assert metric.n_examples == 10_000 and metric.n_batches == 10
    np.testing.assert_allclose(got, ref, atol=1e-9)
    assert got.dtype == np.float64


def test_minibatch_converges_to_full_data_and_biased_does_not():
    """Unbiased minibatch CKA (k = 100) ≈ full-data CKA; biased with small k is inflated."""
    rng = np.random.default_rng(2)
    n, d = 5_000, 64
    X = rng.normal(size=(n, d))
    Y = rng.normal(size=(n, d))  # independent of X: population CKA is 0
    Y[:, :5] += 3 * X[:, :5]  # ... apart from a shared low-dimensional part
    full = linear_cka(X, Y)
    metric, biased = MinibatchCKA(), MinibatchCKA(unbiased=False)
    for s in range(0, n, 100):
        xs = [torch.from_numpy(X[s : s + 100]), torch.from_numpy(Y[s : s + 100])]
        metric.update(xs)
        biased.update(xs)
    mb, mb_biased = float(metric.compute()[0, 1]), float(biased.compute()[0, 1])
    assert abs(mb - full) < 0.02
    assert mb_biased - full > 0.1


def test_minibatch_cka_errors():
    m = MinibatchCKA()
    with pytest.raises(ValueError, match="update"):
        m.compute()
    with pytest.raises(ValueError, match="at least 4"):
        m.update([torch.randn(3, 2)])
    with pytest.raises(ValueError, match="same examples"):
        m.update([torch.randn(8, 2), torch.randn(9, 2)])
    m.update([torch.randn(8, 2)])
    with pytest.raises(ValueError, match="mix"):
        m.update([torch.randn(8, 2)], [torch.randn(8, 2)])


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class Tiny(nn.Module):
    """Blocks inside a Sequential, plus a head: default layers are the three blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *[nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(6), nn.ReLU()) for _ in range(3)]
        )
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.blocks(x))


def tiny_features(model: nn.Module, x: torch.Tensor, names: list[str]) -> list[np.ndarray]:
    out, mods = {}, dict(model.named_modules())
    hs = [mods[n].register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, o)) for n in names]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    return [out[n].double().numpy() for n in names]


def test_cka_matrix_matches_reference_and_accepts_every_data_form():
    torch.manual_seed(0)
    model = Tiny().train()
    x, y = torch.randn(300, 6), torch.randint(0, 3, (300,))
    layers = ["blocks.0", "blocks.1", "blocks.2", "head"]
    model.eval()
    ref = minibatch_reference(tiny_features(model, x, layers), 64)
    model.train()
    bn_before = model.blocks[0][1].running_mean.clone()
    r = cka_matrix(model, x, layers, batch_size=64)
    assert model.training  # mode restored
    assert torch.equal(model.blocks[0][1].running_mean, bn_before)  # eval: stats untouched
    np.testing.assert_allclose(r.matrix, ref, atol=1e-10)
    assert r.n_examples == 300 and r.n_batches == 5 and r.batch_size == 64
    assert r.rows == layers and r.row_shapes == [(6,)] * 3 + [(3,)]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    batches = [x[i : i + 64] for i in range(0, 300, 64)]
    for data in (loader, batches, [(b, None) for b in batches], x.numpy()):
        np.testing.assert_allclose(
            cka_matrix(model, data, layers, batch_size=64).matrix, ref, atol=1e-10
        )
    frame = r.to_frame()
    assert list(frame.index) == layers and frame.loc["head", "head"] == pytest.approx(1.0)


def test_cka_matrix_default_layers_and_limits():
    model = Tiny()
    assert default_layers(model) == ["blocks.0", "blocks.1", "blocks.2"]
    r = cka_matrix(model, torch.randn(103, 6), batch_size=50, max_examples=102)
    assert r.rows == ["blocks.0", "blocks.1", "blocks.2"]
    assert r.n_examples == 100 and r.meta["skipped_examples"] == 2  # a 2-example tail is dropped
    with pytest.raises(ValueError, match="no module named 'nope'"):
        cka_matrix(model, torch.randn(10, 6), ["nope"])
    with pytest.raises(ValueError, match="batch_size"):
        cka_matrix(model, torch.randn(10, 6), batch_size=2)
    with pytest.raises(TypeError, match="data must be"):
        cka_matrix(model, 42)


def test_default_layers_of_zoo_resnet_in_execution_order():
    zoo = pytest.importorskip("widthwise.reproduction.zoo")
    net = zoo.ResNet("basic", [4, 8], [2, 1], in_channels=1, num_classes=3)
    r = cka_matrix(net, torch.randn(40, 1, 8, 8), batch_size=20)
    assert r.rows == ["layer1.0", "layer1.1", "layer2.0"]
    assert r.row_shapes == [(4, 8, 8), (4, 8, 8), (8, 4, 4)]
    assert np.allclose(np.diag(r.matrix), 1.0)
    assert np.allclose(r.matrix, r.matrix.T)


def test_cka_cross():
    torch.manual_seed(1)
    a, b = Tiny(), Tiny()
    x = torch.randn(200, 6)
    layers = ["blocks.0", "blocks.2", "head"]
    same = cka_cross(a, a, x, layers, layers, batch_size=50)
    np.testing.assert_allclose(
        same.matrix, cka_matrix(a, x, layers, batch_size=50).matrix, atol=1e-10
    )
    r = cka_cross(a, b, x, layers, ["blocks.1", "head"], batch_size=50)
    a.eval(), b.eval()
    fa, fb = tiny_features(a, x, layers), tiny_features(b, x, ["blocks.1", "head"])
    ref = minibatch_reference(fa + fb, 50)[:3, 3:]
    np.testing.assert_allclose(r.matrix, ref, atol=1e-10)
    assert not r.symmetric and r.cols == ["blocks.1", "head"]
    with pytest.raises(ValueError, match="one model"):
        block_structure(r)


# --------------------------------------------------------------------------------------------
# Block structure
# --------------------------------------------------------------------------------------------


def brute_force_blocks(m: np.ndarray, t: float, min_size: int) -> list[tuple[int, int]]:
    n = len(m)
    valid = [
        (s, e)
        for s in range(n)
        for e in range(s + min_size - 1, n)
        if all(m[i, j] >= t for i in range(s, e + 1) for j in range(s, e + 1))
    ]
    maximal = [c for c in valid if not any(o != c and o[0] <= c[0] and c[1] <= o[1] for o in valid)]

    def mean(c):
        s, e = c
        return np.mean([m[i, j] for i in range(s, e + 1) for j in range(s, e + 1) if i != j])

    kept: list[tuple[int, int]] = []
    for c in sorted(maximal, key=lambda c: (-(c[1] - c[0]), -mean(c))):
        if all(c[1] < k[0] or c[0] > k[1] for k in kept):
            kept.append(c)
    return sorted(kept)


@pytest.mark.parametrize("seed", range(20))
def test_block_structure_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 14))
    m = rng.uniform(0.5, 1.0, size=(n, n))
    m = (m + m.T) / 2
    np.fill_diagonal(m, 1.0)
    t, min_size = float(rng.uniform(0.6, 0.85)), int(rng.integers(2, 4))
    got = block_structure(m, threshold=t, min_size=min_size)
    assert list(zip(got.start, got.end)) == brute_force_blocks(m, t, min_size)
    for b in got.itertuples():
        sub = m[b.start : b.end + 1, b.start : b.end + 1]
        off = sub[~np.eye(b.size, dtype=bool)]
        assert b.mean_cka == pytest.approx(off.mean()) and b.min_cka == pytest.approx(off.min())


def test_block_structure_planted_blocks_and_nan():
    m = np.full((10, 10), 0.2)
    m[2:6, 2:6] = 0.97
    m[7:10, 7:10] = 0.93
    np.fill_diagonal(m, 1.0)
    df = block_structure(m, names=[f"l{i}" for i in range(10)])
    assert df[["start", "end", "size"]].values.tolist() == [[2, 5, 4], [7, 9, 3]]
    assert df.first_layer.tolist() == ["l2", "l7"]
    assert block_structure(m, threshold=0.95)[["start", "end"]].values.tolist() == [[2, 5]]
    m[3, 4] = m[4, 3] = np.nan  # undefined similarity breaks a block
    assert block_structure(m, min_size=4).empty
    assert block_structure(pd.DataFrame(m)).shape[1] == 7
    with pytest.raises(ValueError, match="square"):
        block_structure(np.zeros((2, 3)))


# --------------------------------------------------------------------------------------------
# PC1 share
# --------------------------------------------------------------------------------------------


def test_pc1_share_exact_and_sketch():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 40), nn.Tanh(), nn.Linear(40, 40))
    x = torch.randn(900, 10) * torch.linspace(3, 0.1, 10)
    feats = tiny_features(net.eval(), x, ["0", "2"])
    ref = []
    for f in feats:
        c = f - f.mean(0)
        s = np.linalg.svd(c, compute_uv=False) ** 2
        ref.append(s[0] / s.sum())
    exact = pc1_share(net, x, ["0", "2"], batch_size=128)
    np.testing.assert_allclose(exact.pc1_share, ref, rtol=1e-9)
    assert exact.method.tolist() == ["exact", "exact"] and exact.n_examples.tolist() == [900, 900]
    sk = pc1_share(net, x, ["0", "2"], batch_size=128, max_dim=8, sketch_rows=12)
    assert sk.method.tolist() == ["sketch", "sketch"]
    for got, r, gap in zip(sk.pc1_share, ref, sk.bound_gap):
        assert r - gap - 1e-9 <= got <= r + 1e-9


# --------------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------------


def test_compare_predictions_matches_loops():
    torch.manual_seed(0)
    a, b = nn.Linear(5, 4), nn.Linear(5, 4)
    x, y = torch.randn(150, 5), torch.randint(0, 4, (150,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    c = compare_predictions(a, b, loader)
    with torch.no_grad():
        pa, pb = a(x).argmax(1).tolist(), b(x).argmax(1).tolist()
    ys = y.tolist()
    assert c.per_example.pred_a.tolist() == pa and c.per_example.pred_b.tolist() == pb
    assert c.accuracy_a == pytest.approx(sum(p == t for p, t in zip(pa, ys)) / 150)
    assert c.disagreement == pytest.approx(sum(p != q for p, q in zip(pa, pb)) / 150)
    for row in c.per_class.itertuples():
        idx = [i for i, t in enumerate(ys) if t == row._1]
        assert row.n == len(idx)
        assert row.accuracy_b == pytest.approx(sum(pb[i] == ys[i] for i in idx) / len(idx))
        assert row.disagreement == pytest.approx(sum(pa[i] != pb[i] for i in idx) / len(idx))
        bw = sum(pa[i] != ys[i] and pb[i] != ys[i] and pa[i] != pb[i] for i in idx) / len(idx)
        assert row.both_wrong_different == pytest.approx(bw)
    with pytest.raises(ValueError, match="labelled"):
        compare_predictions(a, b, x)


# --------------------------------------------------------------------------------------------
# Figures and HTML
# --------------------------------------------------------------------------------------------


def planted_result():
    torch.manual_seed(0)
    base = torch.randn(256, 8)
    # layers 1-3 are near-copies of each other: one planted block
    feats = [
        torch.randn(256, 8),
        base,
        base + 0.05 * torch.randn(256, 8),
        base * 2,
        torch.randn(256, 8),
    ]

    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Sequential(nn.Identity()) for _ in feats])

        def forward(self, idx):
            return [layer(feats[i][idx]) for i, layer in enumerate(self.layers)]

    return cka_matrix(Fixed(), torch.arange(256), batch_size=128, label="<b>net</b> & co")


def test_heatmap_outlines_blocks_and_states_n():
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    r = planted_result()
    blocks = r.blocks()
    assert blocks[["start", "end"]].values.tolist() == [[1, 3]]
    fig = cka_heatmap(r)
    ax = fig.axes[0]
    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(rects) == 1 and rects[0].get_xy() == (0.5, 0.5) and rects[0].get_width() == 3
    assert "n=256" in ax.get_title() and "feature dims 8–8" in ax.get_title()
    assert all("[8]" in t.get_text() for t in ax.get_yticklabels())
    plt.close(fig)


def test_report_section_is_self_contained_and_escaped():
    r = planted_result()
    frag = report_section(r)
    assert "<b>net</b>" not in frag and "&lt;b&gt;net&lt;/b&gt; &amp; co" in frag
    srcs = re.findall(r'src="([^"]+)"', frag)
    assert len(srcs) == 1 and srcs[0].startswith("data:image/png;base64,")
    png = base64.b64decode(srcs[0].split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "layers.1" in frag and "layers.3" in frag and "n=256" in frag
    assert "http" not in frag.replace("data:image", "")


def test_state_does_not_grow_with_examples():
    m = MinibatchCKA()
    sizes = []
    for _ in range(5):
        m.update([torch.randn(32, 7), torch.randn(32, 3)])
        sizes.append(sum(t.numel() for t in (m.cross, m.self_a, m.self_b)))
    assert len(set(sizes)) == 1 and sizes[0] == 4 + 2 + 2


def test_all_pairs_equal_pairwise():
    rng = np.random.default_rng(5)
    feats = [torch.from_numpy(rng.normal(size=(64, d))) for d in (3, 9, 17)]
    m = MinibatchCKA()
    m.update(feats)
    got = m.compute().numpy()
    for i, j in itertools.product(range(3), repeat=2):
        assert got[i, j] == pytest.approx(linear_cka(feats[i], feats[j]), rel=1e-9)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def test_cli_help_and_one_line_errors(capsys, tmp_path):
    from widthwise.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["cka", "--help"])
    assert exc.value.code == 0 and "--widths" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["cka"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and "--out" in err
    with pytest.raises(SystemExit) as exc:
        main(["cka", "--widths", "abc", "--out", str(tmp_path)])
    assert exc.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    for bad in (["--depths", "9"], ["--widths", "0"], ["--threshold", "2"], ["--load"]):
        assert main(["cka", *bad, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("widthwise cka: error:")


def test_cli_end_to_end(tmp_path, capsys):
    from widthwise.cli import main

    pytest.importorskip("widthwise.reproduction.zoo")
    out = tmp_path / "cka"
    argv = ["cka", "--widths", "0.25", "0.5", "--depths", "8", "--epochs", "1", "--size", "8"]
    argv += ["--cka-batch", "128", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert summary.model.tolist() == ["resnet8_w0.25", "resnet8_w0.5"]
    assert (summary.n_examples == 450).all() and (summary.layers == 3).all()
    for name in summary.model:
        assert (out / f"{name}_cka.png").read_bytes()[:4] == b"\x89PNG"
        m = pd.read_csv(out / f"{name}_cka.csv", index_col=0)
        assert np.allclose(np.diag(m.to_numpy()), 1.0)
    pred = pd.read_csv(out / "predictions.csv")
    assert pred.n.sum() == 450 and set(pred.model_b) == {"resnet8_w0.5"}
    html_page = (out / "cka.html").read_text()
    assert html_page.count("<section") == 2 and "n=450" in html_page
    capsys.readouterr()
    assert main(argv) == 2  # nothing is overwritten without --force
    assert "--force" in capsys.readouterr().err
    assert main([*argv, "--load"]) == 0  # reuses the checkpoints, same accuracy
    again = pd.read_csv(out / "summary.csv")
    assert np.allclose(again.test_accuracy, summary.test_accuracy)
