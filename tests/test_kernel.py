"""Tests for widthwise.probes.kernel, the ResidualMLP zoo model and `widthwise kernel`.

References (arc-cosine kernel, infinite-width recursion, cosine matrix, residual forward pass)
are written here from their definitions with explicit loops, independently of the library.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from widthwise.cli import main
from widthwise.probes.kernel import (
    circle_inputs,
    covariance_kernel,
    infinite_width_kernel,
    kernel_distance,
    kernel_samples,
    limit_kernel,
    normalized_gram,
    scaling_grid,
)
from widthwise.probes.residual_mlp import ResidualMLP, resolve_branch_scale

# --- independent references ----------------------------------------------------------------


def arccos1_correlation(x: np.ndarray) -> np.ndarray:
    """Cho & Saul's degree-1 arc-cosine kernel, normalised: (sin θ + (π - θ) cos θ) / π."""
    m = len(x)
    k = np.empty((m, m))
    for i in range(m):
        for j in range(m):
            c = float(x[i] @ x[j]) / math.sqrt(float(x[i] @ x[i]) * float(x[j] @ x[j]))
            theta = math.acos(max(-1.0, min(1.0, c)))
            k[i, j] = (math.sin(theta) + (math.pi - theta) * math.cos(theta)) / math.pi
    return k


def residual_recursion(x: np.ndarray, depth: int, s2: float) -> np.ndarray:
    """Infinite-width covariance of Y_l = Y_{l-1} + s W φ(Y_{l-1}), loop over pairs, ReLU."""
    m = len(x)
    q = [[float(x[i] @ x[j]) / x.shape[1] for j in range(m)] for i in range(m)]
    for _ in range(depth):
        new = [[0.0] * m for _ in range(m)]
        for i in range(m):
            for j in range(m):
                a, b = math.sqrt(q[i][i]), math.sqrt(q[j][j])
                theta = math.acos(max(-1.0, min(1.0, q[i][j] / (a * b))))
                relu_pair = a * b * (math.sin(theta) + (math.pi - theta) * math.cos(theta))
                new[i][j] = q[i][j] + s2 * relu_pair / (2 * math.pi)
        q = new
    return np.array([[q[i][j] / math.sqrt(q[i][i] * q[j][j]) for j in range(m)] for i in range(m)])


def relu_features(width: int, d: int):
    def factory() -> nn.Module:
        lin = nn.Linear(d, width, bias=False)
        nn.init.normal_(lin.weight)  # rotation-invariant weights, as the arc-cosine kernel assumes
        return nn.Sequential(lin, nn.ReLU())

    return factory


def check_within_monte_carlo(samples: torch.Tensor, reference: np.ndarray, bias: float) -> float:
    """Assert every off-diagonal entry of the mean is within 4 standard errors (+ bias) of ref.

    The per-initialisation kernels are i.i.d., so their sample standard deviation over
    sqrt(n_inits) is the Monte-Carlo standard error of each mean entry; 4 s.e. leaves a false
    alarm rate below 1e-4 per entry under the (CLT) normal approximation. ``bias`` bounds the
    O(1/width) bias of a ratio of averages (the cosine), which averaging inits does not remove.
    Returns the tolerance used, so callers can check the test had power.
    """
    mean = samples.mean(0).numpy()
    se = samples.std(0).numpy() / math.sqrt(samples.shape[0])
    m = mean.shape[0]
    off = ~np.eye(m, dtype=bool)
    tol = 4 * se + bias
    err = np.abs(mean - reference)
    worst = np.unravel_index(np.argmax(np.where(off, err - tol, -np.inf)), err.shape)
    assert (err[off] <= tol[off]).all(), (
        f"entry {worst}: |{mean[worst]:.4f} - {reference[worst]:.4f}| > tol {tol[worst]:.4f}"
    )
    return float(tol[off].max())


# --- the kernel's basic properties ---------------------------------------------------------


@pytest.mark.parametrize("branch_scale", ["1/sqrt(depth)", "none"])
def test_kernel_is_symmetric_psd_with_unit_diagonal(branch_scale):
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    samples = kernel_samples(
        lambda: ResidualMLP(5, 24, 6, branch_scale=branch_scale), x, n_inits=5, seed=3
    )
    for k in [*samples, samples.mean(0)]:
        assert k.dtype == torch.float64
        assert torch.equal(k, k.T)
        assert torch.equal(k.diagonal(), torch.ones(7, dtype=torch.float64))
        assert torch.linalg.eigvalsh(k).min() > -1e-10
    # and it is not trivially the identity or all ones
    off = samples.mean(0)[~torch.eye(7, dtype=torch.bool)]
    assert off.abs().max() > 0.05 and off.min() < 0.99


def test_normalized_gram_matches_loop_reference_including_zero_rows():
    f = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(0))
    f[2] = 0.0  # a dead input: no direction
    got = normalized_gram(f)
    flat = f.reshape(5, -1).double()
    for i in range(5):
        for j in range(5):
            ni, nj = flat[i].norm().item(), flat[j].norm().item()
            want = 1.0 if i == j else (0.0 if ni == 0 or nj == 0 else flat[i] @ flat[j] / ni / nj)
            assert got[i, j].item() == pytest.approx(float(want), abs=1e-12)
    assert torch.linalg.eigvalsh(got).min() > -1e-12


def test_one_hidden_layer_relu_matches_arccos_kernel():
    """Width 2048, 12 inits: tolerance = 4 Monte-Carlo s.e. + 2/width (ratio bias), see helper."""
    width, d = 2048, 3
    x = torch.randn(6, d, generator=torch.Generator().manual_seed(5))
    x[1] = -x[0]  # antipodal pair: exactly 0 for ReLU features
    x[2] = x[0] + 0.05 * x[3]  # a nearly parallel pair
    samples = kernel_samples(relu_features(width, d), x, n_inits=12, seed=0)
    reference = arccos1_correlation(x.double().numpy())
    tol = check_within_monte_carlo(samples, reference, bias=2.0 / width)
    assert tol < 0.05  # the test is sharp enough to matter...
    # ...it tells the arc-cosine kernel from the linear one (input cosines) it is built on
    linear = normalized_gram(x).numpy()
    assert np.abs(samples.mean(0).numpy() - linear).max() > 3 * tol


def test_residual_mlp_at_large_width_matches_infinite_width_recursion():
    x = circle_inputs(5).double()
    depth = 3
    for scale in ("1/sqrt(depth)", "none"):
        s2 = resolve_branch_scale(scale, depth) ** 2
        reference = residual_recursion(x.numpy(), depth, s2)
        np.testing.assert_allclose(infinite_width_kernel(x, depth, scale), reference, atol=1e-12)
        samples = kernel_samples(
            lambda scale=scale: ResidualMLP(2, 1024, depth, branch_scale=scale),
            x.float(),
            n_inits=8,
            seed=1,
        )
        check_within_monte_carlo(samples, reference, bias=4.0 / 1024)
    # the two-layer "mlp" branch follows the same recursion (W1 x has the covariance of x)
    samples = kernel_samples(ResidualMLP(2, 512, 2, block="mlp"), x.float(), n_inits=6, seed=2)
    check_within_monte_carlo(samples, residual_recursion(x.numpy(), 2, 0.5), bias=4.0 / 512)


def test_limit_kernel_is_the_deep_end_of_the_scaled_recursion():
    x = circle_inputs(4).double()
    deep = residual_recursion(x.numpy(), 1000, 1.0 / 1000)
    limit = limit_kernel(x)
    np.testing.assert_allclose(limit, deep, atol=2e-3)  # Euler step error O(1/depth)
    # and it is not simply the input kernel: the flow moves it
    assert np.abs(limit - normalized_gram(x).numpy()).max() > 0.05


# --- the branch-scaling effect -------------------------------------------------------------


def test_branch_scaling_keeps_the_kernel_put_as_depth_grows():
    """With 1/sqrt(depth) the kernel hardly moves from depth 2 to 32; without, it collapses."""
    x = circle_inputs(6)
    moved = {}
    for scale in ("1/sqrt(depth)", "none"):
        k = {
            d: covariance_kernel(
                lambda d=d, scale=scale: ResidualMLP(2, 48, d, branch_scale=scale),
                x,
                n_inits=6,
                seed=0,
            )
            for d in (2, 32)
        }
        moved[scale] = kernel_distance(k[2], k[32])
        off = ~torch.eye(6, dtype=torch.bool)
        if scale == "none":  # unscaled: inputs become indistinguishable (entries near 1)
            assert k[32][off].mean() > k[2][off].mean() + 0.3
    assert moved["1/sqrt(depth)"] < 0.1
    assert moved["none"] > 4 * moved["1/sqrt(depth)"]


def test_without_branch_scaling_narrow_deep_nets_leave_the_infinite_width_kernel():
    """Width 8: the gap to the width-first (infinite-width) kernel at the same depth stays put
    with 1/sqrt(depth) scaling but grows with depth without it (a depth-to-width effect)."""
    x = circle_inputs(6)
    gap = {}
    for scale in ("1/sqrt(depth)", "none"):
        for depth in (1, 32):
            k = covariance_kernel(ResidualMLP(2, 8, depth, branch_scale=scale), x, n_inits=48)
            gap[scale, depth] = kernel_distance(k, infinite_width_kernel(x, depth, scale))
    assert gap["1/sqrt(depth)", 32] < 0.1
    assert gap["none", 32] > 0.12
    assert gap["none", 32] > 2 * gap["1/sqrt(depth)", 32]
    assert gap["none", 32] > 2 * gap["none", 1]


def test_scaling_grid_table_paths_and_figure():
    g = scaling_grid([4, 16], [1, 2, 8], branch_scale="none", n_inits=3, inputs=circle_inputs(4))
    assert len(g.table) == 6 and set(g.kernels) == {(w, d) for w in (4, 16) for d in (1, 2, 8)}
    corner = g.table[(g.table.width == 16) & (g.table.depth == 8)].iloc[0]
    assert corner.distance == 0.0
    for row in g.table.itertuples():
        k = g.kernels[(row.width, row.depth)]
        assert row.distance == pytest.approx(kernel_distance(k, g.corner))
        assert row.theory_distance == pytest.approx(
            kernel_distance(k, infinite_width_kernel(g.inputs, row.depth, "none"))
        )
    wf = g.paths[g.paths.order == "width first"][["width", "depth"]].to_numpy().tolist()
    df = g.paths[g.paths.order == "depth first"][["width", "depth"]].to_numpy().tolist()
    assert wf == [[4, 1], [16, 1], [16, 2], [16, 8]]
    assert df == [[4, 1], [4, 2], [4, 8], [16, 8]]
    assert g.limit is None  # no common limit without scaling
    fig = g.figure()
    assert len(fig.axes) >= 3
    import matplotlib.pyplot as plt

    plt.close(fig)


# --- covariance_kernel plumbing ------------------------------------------------------------


def test_module_is_reinitialised_on_a_copy_and_results_are_seeded():
    net = ResidualMLP(2, 16, 3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = circle_inputs(5)
    rng_state = torch.get_rng_state()
    a = kernel_samples(net, x, n_inits=3, seed=7)
    assert torch.equal(torch.get_rng_state(), rng_state)  # global RNG untouched
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert torch.equal(a, kernel_samples(net, x, n_inits=3, seed=7))
    assert not torch.equal(a[0], a[1])  # each init is different
    assert not torch.equal(a, kernel_samples(net, x, n_inits=3, seed=8))
    # a module and the equivalent factory give the same samples under the same seed
    b = kernel_samples(lambda: ResidualMLP(2, 16, 3), x, n_inits=3, seed=7)
    torch.testing.assert_close(a, b)


def test_layer_by_name_or_module_and_fixed_weights():
    net = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 4))
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    by_name = kernel_samples(net, x, layer="1", n_inits=2, seed=0)
    by_module = kernel_samples(net, x, layer=net[1], n_inits=2, seed=0)
    torch.testing.assert_close(by_name, by_module)
    fixed = kernel_samples(net, x, layer=net[1], reinit=False, n_inits=1)
    with torch.no_grad():
        want = normalized_gram(net[1](net[0](x)))
    torch.testing.assert_close(fixed[0], want)
    assert by_name.shape == (2, 5, 5)
    assert by_module.shape == (2, 5, 5)


def test_bad_arguments_give_clear_errors():
    x = circle_inputs(4)
    with pytest.raises(ValueError, match="no module named 'nope'"):
        covariance_kernel(ResidualMLP(2, 8, 1), x, layer="nope", n_inits=1)
    with pytest.raises(ValueError, match="n_inits=1"):
        covariance_kernel(ResidualMLP(2, 8, 1), x, reinit=False, n_inits=3)
    with pytest.raises(ValueError, match="at least 2 rows"):
        covariance_kernel(ResidualMLP(2, 8, 1), x[:1])
    with pytest.raises(ValueError, match="pass a factory"):
        covariance_kernel(nn.Sequential(nn.ReLU()), x, n_inits=1)
    with pytest.raises(ValueError, match="branch_scale"):
        ResidualMLP(2, 8, 1, branch_scale="sometimes")
    with pytest.raises(ValueError, match="width"):
        ResidualMLP(2, 0, 1)


# --- the zoo model -------------------------------------------------------------------------


@pytest.mark.parametrize("block", ["single", "mlp"])
def test_residual_mlp_forward_matches_loop_reference(block):
    torch.manual_seed(0)
    net = ResidualMLP(3, 10, 4, out_features=2, branch_scale="1/sqrt(depth)", block=block)
    x = torch.randn(6, 3)
    relu = torch.nn.functional.relu
    with torch.no_grad():
        for n in range(6):
            h = [sum(net.inp.weight[i, k] * x[n, k] for k in range(3)) for i in range(10)]
            for blk in net.blocks:
                if block == "single":
                    branch = [
                        sum(blk.fc.weight[i, k] * relu(h[k]) for k in range(10)) for i in range(10)
                    ]
                else:
                    mid = [
                        relu(sum(blk.fc1.weight[i, k] * h[k] for k in range(10))) for i in range(10)
                    ]
                    branch = [
                        sum(blk.fc2.weight[i, k] * mid[k] for k in range(10)) for i in range(10)
                    ]
                h = [h[i] + 0.5 * branch[i] for i in range(10)]  # 1/sqrt(4)
            out = [sum(net.out.weight[j, i] * h[i] for i in range(10)) for j in range(2)]
            torch.testing.assert_close(net(x[n : n + 1])[0], torch.stack(out), atol=1e-5, rtol=1e-5)


def test_residual_mlp_init_and_scales():
    torch.manual_seed(0)
    net = ResidualMLP(50, 400, 2, branch_scale="none")
    assert net.branch_scale == 1.0
    # N(0, 1/fan_in): the sample std of 160k (resp. 20k) draws is within 2 % of 1/sqrt(fan_in)
    assert net.blocks[0].fc.weight.std().item() == pytest.approx(1 / math.sqrt(400), rel=0.02)
    assert net.inp.weight.std().item() == pytest.approx(1 / math.sqrt(50), rel=0.02)
    assert ResidualMLP(2, 4, 9).branch_scale == pytest.approx(1 / 3)
    assert ResidualMLP(2, 4, 9, branch_scale="1/depth").branch_scale == pytest.approx(1 / 9)
    assert ResidualMLP(2, 4, 9, branch_scale=0.25).branch_scale == 0.25
    assert not any(p.is_meta for p in net.parameters())


# --- CLI -----------------------------------------------------------------------------------


def test_cli_writes_outputs_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "k"
    argv = [
        "kernel",
        "--widths",
        "4,8",
        "--depths",
        "1,3",
        "--inits",
        "2",
        "--points",
        "4",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    for name in ("kernel_grid.csv", "kernel_paths.csv", "kernel_grid.png", "kernel_kernels.npz"):
        assert (out / name).stat().st_size > 0
    import pandas as pd

    table = pd.read_csv(out / "kernel_grid.csv")
    assert set(table.branch_scale) == {"1/sqrt(depth)", "none"} and len(table) == 8
    assert "common width/depth limit" in capsys.readouterr().out
    stamp = (out / "kernel_grid.csv").read_bytes()
    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "kernel_grid.csv").read_bytes() == stamp


@pytest.mark.parametrize(
    "args, message",
    [
        (["--widths", "a,b"], "--widths must be comma-separated integers"),
        (["--depths", "-1"], "--depths must be comma-separated integers >= 0"),
        (["--branch-scale", "often"], "--branch-scale"),
        (["--inits", "0"], "--inits must be >= 1"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(tmp_path, capsys, args, message):
    assert main(["kernel", *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["kernel", "--help"])
    assert exc.value.code == 0
    assert "--branch-scale" in capsys.readouterr().out
