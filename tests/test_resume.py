"""A training run killed and resumed from its checkpoint ends with one run file whose history
holds every snapshot exactly once, with the values of an uninterrupted run (same seed).

Three loops: a plain PyTorch script killed with SIGKILL in a subprocess
(``examples/checkpoint_resume.py``), Lightning resumed with ``ckpt_path`` and the Hugging Face
Trainer resumed with ``resume_from_checkpoint``.
"""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from test_integrations import EXAMPLES, hf_train, lightning_fit
from widthwise.store import open_run

STATS = ["variance", "mean", "max", "min", "n_nonfinite", "n_zero"]


def _this_src() -> str:
    """PYTHONPATH for a child that imports the widthwise under test (not another installed copy)."""
    import widthwise

    src = os.path.dirname(os.path.dirname(os.path.abspath(widthwise.__file__)))
    return os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))


def assert_same_run(
    resumed: Path, reference: Path, steps: list[int], metrics: set[str] | None = None
) -> None:
    """Each snapshot step once, in order, with the reference run's statistics, norms and
    ``metrics`` (default: all of them)."""
    a, b = open_run(resumed), open_run(reference)
    assert a.snapshots()["step"].tolist() == steps
    assert b.snapshots()["step"].tolist() == steps
    ha, hb = a.history(gates=True), b.history(gates=True)
    cols = ["snapshot", "step", "epoch", "group", "gate", *STATS]
    pd.testing.assert_frame_equal(ha[cols], hb[cols], check_exact=True)
    for group in ha["group"].unique():
        sa, na = a.channel_norms(group)
        sb, nb = b.channel_norms(group)
        np.testing.assert_array_equal(sa, sb)
        np.testing.assert_array_equal(na, nb)
    ma, mb = a.metrics(), b.metrics()
    if metrics is not None:
        ma = ma[ma["name"].isin(metrics)].reset_index(drop=True)
        mb = mb[mb["name"].isin(metrics)].reset_index(drop=True)
        assert set(ma["name"]) == metrics
    pd.testing.assert_frame_equal(
        ma[["step", "epoch", "name", "value"]],
        mb[["step", "epoch", "name", "value"]],
        check_exact=True,
    )


# ------------------------------------------------------------------------ plain loop, SIGKILL
def test_plain_loop_killed_with_sigkill_resumes_without_duplicates(tmp_path):
    script = str(EXAMPLES / "checkpoint_resume.py")
    common = [
        "--steps",
        "100",
        "--snapshot-every",
        "10",
        "--checkpoint-every",
        "30",
        "--hidden",
        "16",
    ]

    def launch(out: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, script, "--out", str(out), *common, *extra],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": _this_src()},
        )

    # The uninterrupted reference runs in this process (same code, no second interpreter start).
    # One thread, as in the subprocesses: float sums must be taken in the same order.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sys, "argv", [script, "--out", str(tmp_path / "whole"), *common])
            runpy.run_path(script, run_name="__main__")
    finally:
        torch.set_num_threads(threads)

    killed = launch(tmp_path / "killed", "--kill-at", "80")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # The dead process had recorded snapshots past its last checkpoint (step 60).
    at_death = open_run(tmp_path / "killed" / "run.wwrun").snapshots()["step"].tolist()
    assert at_death == list(range(0, 81, 10))

    resumed = launch(tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at step 60" in resumed.stdout
    assert_same_run(
        tmp_path / "killed" / "run.wwrun", tmp_path / "whole" / "run.wwrun", list(range(0, 101, 10))
    )


# --------------------------------------------------------------------------------- Lightning
class Crash(RuntimeError):
    pass


class LitCrash(L.Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at:
            raise Crash(f"simulated failure at step {self.at}")


def test_lightning_resume_from_ckpt_path_continues_the_same_run(tmp_path):
    from widthwise.integrations.lightning import WidthCallback

    def fit(root: Path, crash_at: int | None = None, ckpt: Path | None = None) -> None:
        callbacks = [
            WidthCallback(root / "run.wwrun", every_n_steps=4, report=False),
            ModelCheckpoint(root / "ckpt", every_n_epochs=1, save_top_k=-1),
        ]
        if crash_at is not None:
            callbacks.append(LitCrash(crash_at))
        lightning_fit(root, callbacks, epochs=3, shuffle=False, ckpt_path=ckpt)

    fit(tmp_path / "whole")
    with pytest.raises(Crash):
        fit(tmp_path / "crashed", crash_at=16)
    at_crash = open_run(tmp_path / "crashed" / "run.wwrun").snapshots()["step"].tolist()
    assert at_crash == [0, 4, 6, 8, 12, 16]  # 16 is past the last checkpoint (end of epoch 1)

    fit(tmp_path / "crashed", ckpt=tmp_path / "crashed" / "ckpt" / "epoch=1-step=12.ckpt")
    assert_same_run(
        tmp_path / "crashed" / "run.wwrun",
        tmp_path / "whole" / "run.wwrun",
        [0, 4, 6, 8, 12, 16, 18],
    )


# ------------------------------------------------------------------------------ Hugging Face
def test_hf_resume_from_checkpoint_continues_the_same_run(tmp_path):
    from transformers import TrainerCallback

    from widthwise.integrations.hf import WidthTrainerCallback

    class HFCrash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 10:
                raise Crash("simulated failure at step 10")

    def train(out: Path, run: Path | None, crash=False, resume: str | None = None, **kw) -> None:
        callbacks = [WidthTrainerCallback(run, every_n_steps=2, report=False)]
        if crash:
            callbacks.append(HFCrash())
        hf_train(out, callbacks, save_strategy="steps", save_steps=4, resume=resume, **kw)

    steps = [0, 2, 4, 6, 8, 10, 12]
    train(tmp_path / "whole", tmp_path / "whole" / "run.wwrun")
    # Both ways the Trainer can hand callback state back on resume; the second with the
    # default run file (<output_dir>/widthwise.wwrun), unknown until training starts.
    for restore, name in ((False, "run.wwrun"), (True, None)):
        out = tmp_path / f"restore_{restore}"
        run = None if name is None else out / name
        with pytest.raises(Crash):
            train(out, run, crash=True)
        run_file = out / (name or "widthwise.wwrun")
        assert open_run(run_file).snapshots()["step"].tolist() == steps[:-1]
        train(
            out,
            run,
            resume=str(out / "checkpoint-8"),
            restore_callback_states_from_checkpoint=restore,
        )
        # Timings (eval_runtime, ...) and the Trainer's whole-run train_loss differ by nature.
        same = {"loss", "grad_norm", "learning_rate", "epoch", "eval_loss"}
        assert_same_run(run_file, tmp_path / "whole" / "run.wwrun", steps, same)


# ------------------------------------------------- SIGKILL between the commit and the statistics
KILLED_BEFORE_EXPANSION = """
import sys, threading, time, torch
from torch import nn
from widthwise import find_groups
from widthwise.store import RunStore
from widthwise.tracker import WidthTracker

def model_at(step, model=None):
    if model is None:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 7), nn.ReLU(),
                              nn.Linear(7, 3))
    with torch.no_grad():
        model[0].weight.mul_(1.0 + 0.01 * step)
        model[2].weight[:4].mul_(0.9)
        if step == 4:
            model[2].weight[1].zero_()
    return model

if __name__ == "__main__":
    stuck = threading.Event()
    expand = RunStore.expand_pending
    def expand_unless_stuck(self):
        if stuck.is_set():
            threading.Event().wait()  # the writer never gets to the statistics
        return expand(self)
    RunStore.expand_pending = expand_unless_stuck
    torch.set_num_threads(1)
    model = model_at(0)
    tracker = WidthTracker(model, torch.randn(2, 6), store=sys.argv[1])
    for step in range(100):
        if step:
            model_at(step, model)
        tracker.snapshot(10 * step, epoch=step // 3, metrics={"loss": 1.0 / (step + 1)})
        if step == 2:
            tracker.flush()  # the first three are expanded, the later ones stay pending
            stuck.set()
        print(step, flush=True)  # snapshot() has returned
    time.sleep(600)
"""


def test_a_process_killed_before_its_writer_wrote_the_statistics_keeps_every_snapshot(tmp_path):
    import sqlite3

    from widthwise.tracker import WidthTracker

    script = tmp_path / "child.py"
    script.write_text(KILLED_BEFORE_EXPANSION)
    path = tmp_path / "killed.wwrun"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": _this_src()},
    )
    import threading

    watchdog = threading.Timer(180, proc.kill)  # a stuck child must not hang the suite
    watchdog.start()
    try:
        last = -1
        while last < 7:
            line = proc.stdout.readline()
            assert line, "the child ended early (or was stuck)"
            last = int(line)
    finally:
        watchdog.cancel()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        pending = con.execute("SELECT count(*) FROM pending").fetchone()[0]
    assert pending >= 5  # killed with snapshots committed as their reductions only

    # the same steps in this process, statistics written in the calling thread (no file)
    ns = runpy.run_path(str(script), run_name="child")
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the child's: float sums in the same order
    try:
        model = ns["model_at"](0)
        ref = WidthTracker(model, torch.randn(2, 6), background=False)
        with open_run(path) as run:
            n = len(run)
        assert n >= last + 1  # every snapshot whose snapshot() returned
        for step in range(n):
            if step:
                ns["model_at"](step, model)
            ref.snapshot(10 * step, epoch=step // 3, metrics={"loss": 1.0 / (step + 1)})
    finally:
        torch.set_num_threads(threads)

    def same(run) -> None:
        ha, hb = run.history(gates=True), ref.run.history(gates=True)
        cols = ["snapshot", "step", "epoch", "group", "gate", "width", *STATS, "flag"]
        pd.testing.assert_frame_equal(ha[cols], hb[cols], check_exact=True)
        assert (ha.n_zero > 0).any()  # the zeroed channel is in the record
        for g in ref.groups:
            sa, na = run.channel_norms(g.name)
            sb, nb = ref.run.channel_norms(g.name)
            np.testing.assert_array_equal(sa, sb)
            np.testing.assert_array_equal(na.view(np.int32), nb.view(np.int32))  # 0 ULP
        pd.testing.assert_frame_equal(
            run.metrics()[["step", "epoch", "name", "value"]],
            ref.run.metrics()[["step", "epoch", "name", "value"]],
            check_exact=True,
        )

    with open_run(path) as run:  # a reader computes the pending statistics in memory
        same(run)
    resumed = WidthTracker(ref.model, groups=ref.groups, store=path)  # an appender writes them
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        assert con.execute("SELECT count(*) FROM pending").fetchone()[0] == 0
    same(resumed.run)
    resumed.close()
    with open_run(path) as run:
        same(run)
