"""DDP and FSDP2 (two CPU processes, gloo): same numbers as one process, one run file.

Both scenarios run in one pair of worker processes. They come from a fork server that imports
torch and this module once: spawning pays the (slow) torch import in every worker, and forking
the test process itself can deadlock on threads the test runner started.
"""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from test_norms import naive_norms, naive_stats
from widthwise.groups import ChannelGroup, Member, find_groups
from widthwise.norms import NormPlan
from widthwise.store import open_run
from widthwise.tracker import WidthTracker

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available() or sys.platform != "linux",
    reason="needs torch.distributed with gloo and a fork server",
)

WORLD = 2


def build():
    """Conv (5 ch) -> flatten -> Linear(80 -> 7) -> Linear(7 -> 3): widths that 2 ranks split
    unevenly (3+2, 4+3), a conv consumer and a flatten repeat."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(5, 5, 3, padding=1),
        nn.Flatten(),
        nn.Linear(5 * 4 * 4, 7),
        nn.ReLU(),
        nn.Linear(7, 3),
    )
    with torch.no_grad():  # channels of clearly different sizes
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.mul_(torch.rand(p.shape[0], *[1] * (p.ndim - 1), generator=g) * 3)
    groups = [
        ChannelGroup(
            "0",
            5,
            (
                Member("0.weight", 0, "producer"),
                Member("0.bias", 0, "other"),
                Member("2.weight", 1, "consumer"),
            ),
        ),
        ChannelGroup(
            "2",
            5,
            (Member("2.weight", 0, "producer"), Member("4.weight", 1, "consumer", repeat=16)),
        ),
        ChannelGroup(
            "4", 7, (Member("4.weight", 0, "producer"), Member("6.weight", 1, "consumer"))
        ),
    ]
    return model, groups


def batches(rank, n=3):
    g = torch.Generator().manual_seed(100 + rank)  # each rank sees different data
    return [
        (torch.randn(4, 3, 4, 4, generator=g), torch.randn(4, 3, generator=g)) for _ in range(n)
    ]


def fit(model, tracker, rank):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step, (x, y) in enumerate(batches(rank)):
        loss = (model(x) - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert tracker.snapshot(step, metrics={"loss": loss.detach()})


def _worker(rank, tmp):
    dist.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=rank, world_size=WORLD)
    out = {}
    try:
        # DDP: replicated weights, every rank computes; rank 0 writes the file
        model, groups = build()
        ddp = nn.parallel.DistributedDataParallel(model)
        x = torch.randn(2, 3, 4, 4)
        out["ddp_found"] = WidthTracker(ddp, x).groups == find_groups(model, x)
        tracker = WidthTracker(ddp, groups=groups, store=f"{tmp}/ddp.wws")
        fit(ddp, tracker, rank)
        out["ddp"] = {
            "history": tracker.history(),
            "norms": {g.name: tracker.channel_norms(g.name)[1] for g in groups},
            "weights": {k: v.clone() for k, v in model.state_dict().items()},
            "path": tracker.store.path,
        }
        tracker.close()

        # FSDP2: every parameter sharded by rows; per-channel sums are all-reduced
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        model, groups = build()
        found = find_groups(model, x)
        mesh = init_device_mesh("cpu", (WORLD,))
        for i in (0, 2, 4, 6):
            fully_shard(model[i], mesh=mesh)
        fully_shard(model, mesh=mesh)
        out["fsdp_found"] = WidthTracker(model, x).groups == found  # grouped on a gathered copy
        tracker = WidthTracker(model, groups=groups, store=f"{tmp}/fsdp.wws")
        fit(model, tracker, rank)
        local = {n: p.to_local().shape[0] for n, p in model.named_parameters()}
        full = {k: v.full_tensor() for k, v in model.state_dict().items()}
        out["fsdp"] = {
            "history": tracker.history(),
            "norms": {g.name: tracker.channel_norms(g.name)[1] for g in groups},
            "weights": full,
            "local_rows": local,
            "path": tracker.store.path,
        }
        tracker.close()
    finally:
        dist.destroy_process_group()
    with open(f"{tmp}/rank{rank}.pkl", "wb") as f:
        pickle.dump(out, f)


def run_workers(tmp):
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    mp.start_processes(_worker, args=(str(tmp),), nprocs=WORLD, start_method="forkserver")
    out = []
    for r in range(WORLD):
        with open(tmp / f"rank{r}.pkl", "rb") as f:
            out.append(pickle.load(f))
    return out


def single_process_stats(weights):
    model, groups = build()
    model.load_state_dict(weights)
    return model, groups, NormPlan(model, groups, gates=False).stats()


def check_ranks_agree_with_a_single_process(out, kind):
    r0, r1 = out[0][kind], out[1][kind]
    drop = ["wall_time"]
    pd.testing.assert_frame_equal(
        r0["history"].drop(columns=drop), r1["history"].drop(columns=drop)
    )
    model, groups, ref = single_process_stats(r0["weights"])
    last = r0["history"][r0["history"].snapshot == 2].reset_index(drop=True)
    assert list(last.group) == [g.name for g in groups]
    np.testing.assert_allclose(last.variance, ref.table.variance, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(last["mean"], ref.table["mean"], rtol=1e-5)
    for g, want in zip(groups, ref.norms):
        for rank in (0, 1):
            np.testing.assert_allclose(out[rank][kind]["norms"][g.name][-1], want, rtol=1e-5)
        # and against the naive loops on the gathered weights
        naive = naive_norms(model, g)
        np.testing.assert_allclose(r0["norms"][g.name][-1], naive, rtol=1e-5)
        np.testing.assert_allclose(
            last.variance[groups.index(g)], naive_stats(naive)["variance"], rtol=1e-5
        )


def check_only_rank_zero_writes(tmp, out, kind):
    assert out[0][kind]["path"] == f"{tmp}/{kind}.wws" and out[1][kind]["path"] is None
    with open_run(tmp / f"{kind}.wws") as run:
        assert [g.name for g in run.groups] == ["0", "2", "4"]  # no "module." prefixes
        pd.testing.assert_frame_equal(run.history(), out[0][kind]["history"])
        assert list(run.metrics().step) == [0, 1, 2]


def test_ddp_and_fsdp_match_a_single_process(tmp_path):
    # one test, so that pytest-xdist never starts the workers twice
    out = run_workers(tmp_path)
    for kind in ("ddp", "fsdp"):
        check_ranks_agree_with_a_single_process(out, kind)
        check_only_rank_zero_writes(tmp_path, out, kind)
        # the tracker found the same groups on the wrapped model as on the plain one
        assert out[0][f"{kind}_found"] and out[1][f"{kind}_found"]
    allowed = {"pg", "rank0.pkl", "rank1.pkl", "ddp.wws", "fsdp.wws"}
    allowed |= {f"{n}-{x}" for n in allowed for x in ("wal", "shm")}
    assert {p.name for p in tmp_path.iterdir()} <= allowed
    # FSDP really sharded the rows (unevenly: 7 = 4 + 3)
    rows = [out[r]["fsdp"]["local_rows"] for r in range(WORLD)]
    assert rows[0]["4.weight"] + rows[1]["4.weight"] == 7
    assert rows[0]["0.weight"] < 5 and rows[1]["0.weight"] < 5
