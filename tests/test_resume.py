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
