"""One stateful convention for the analysis objects: update / compute / reset / state_dict.

Each object is checked the same way: a copy restored from ``state_dict`` computes what the
original computes, ``reset`` forgets, and updates after a restore continue the same record.
MinibatchCKA's distributed ``sync`` relies on its state being additive over examples: the sums
of two halves equal the state of the union (checked here against one object fed everything).
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.distributed as dist
from torch import nn

from widthwise.analysis import NormGradCorrelation, SignFlips
from widthwise.groups import find_groups
from widthwise.probes.similarity import MinibatchCKA


def _net() -> tuple[nn.Module, list]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 2))
    return net, find_groups(net, torch.randn(2, 6))


@pytest.mark.parametrize("kind", ["signflips", "normgrad"])
def test_state_dict_round_trip_reset_and_continue(kind: str) -> None:
    net, groups = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    make = (
        (lambda: SignFlips(net, groups))
        if kind == "signflips"
        else (lambda: NormGradCorrelation(net, groups))
    )
    metric = make()
    for step in range(3):
        x, y = torch.randn(16, 6), torch.randint(0, 2, (16,))
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        if kind == "normgrad":  # measured between backward and step
            metric.update(step)
        opt.step()
        if kind == "signflips":  # measured after the step moved the weights
            metric.update(step)
    first = metric.compute()
    assert len(first) == 3 * len(metric.groups) > 0

    copy = make()
    copy.load_state_dict(metric.state_dict())
    pd.testing.assert_frame_equal(copy.compute(), first)

    metric.reset()
    assert metric.compute().empty
    if kind == "signflips":  # reset takes the weights now as the new reference
        assert all(v == 0.0 for v in metric.update(9).values())


def test_signflips_restored_copy_keeps_the_original_reference() -> None:
    net, groups = _net()
    flips = SignFlips(net, groups)
    state = flips.state_dict()
    with torch.no_grad():
        net[0].weight.neg_()
    later = SignFlips(net, groups)  # built after the change: its own reference is the new signs
    assert later.update(1)["0"] == 0.0
    later.load_state_dict(state)  # ... until the original reference is restored
    assert later.update(2)["0"] > 0.3


def _feats(seed: int, k: int = 16) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(k, 7, generator=g)
    return [x, x.tanh() + 0.1 * torch.randn(k, 7, generator=g), torch.randn(k, 3, generator=g)]


@pytest.mark.parametrize("unbiased", [True, False])
def test_minibatch_cka_state_is_additive_and_restorable(unbiased: bool) -> None:
    whole, half_a, half_b = (MinibatchCKA(unbiased) for _ in range(3))
    for seed in range(6):
        whole.update(_feats(seed))
        (half_a if seed % 2 else half_b).update(_feats(seed))

    restored = MinibatchCKA(unbiased)
    restored.load_state_dict(whole.state_dict())
    torch.testing.assert_close(restored.compute(), whole.compute())

    # what sync() does over two ranks, done by hand: sum the sums, add the counts
    merged = MinibatchCKA(unbiased)
    sa, sb = half_a.state_dict(), half_b.state_dict()
    state = {**sa, **{k: sa[k] + sb[k] for k in ("cross", "self_a", "self_b")}}
    state["n_examples"] = sa["n_examples"] + sb["n_examples"]
    state["n_batches"] = sa["n_batches"] + sb["n_batches"]
    merged.load_state_dict(state)
    torch.testing.assert_close(merged.compute(), whole.compute())
    assert merged.n_examples == whole.n_examples == 96

    with pytest.raises(ValueError, match="other estimator"):
        MinibatchCKA(not unbiased).load_state_dict(whole.state_dict())
    whole.reset()
    with pytest.raises(ValueError, match="update"):
        whole.compute()


def test_minibatch_cka_sync_is_a_no_op_without_a_process_group_and_exact_with_one(
    tmp_path,
) -> None:
    metric = MinibatchCKA()
    metric.update(_feats(0))
    before = metric.compute()
    metric.sync()  # torch.distributed not initialised: nothing happens
    torch.testing.assert_close(metric.compute(), before)
    if not dist.is_gloo_available():
        pytest.skip("gloo not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        metric.sync()
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(metric.compute(), before)
    assert metric.n_examples == 16
