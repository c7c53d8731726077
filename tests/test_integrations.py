"""Lightning, Hugging Face Trainer and TensorBoard integrations, checked against naive loops.

Every callback run is compared with a reference recorder written here: the channel-norm variance
of each hidden layer computed with explicit Python loops over the weights at the same steps, and
the expected snapshot schedule worked out by hand.
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from widthwise.store import open_run
from widthwise.tracker import WidthTracker

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
HIDDEN = 12


# --------------------------------------------------------------------------------- references
def naive_variances(net: nn.Sequential) -> dict[str, float]:
    """Variance of n_i / mean(n) per hidden layer, n_i = |row i of W_k| * |column i of W_k+1|."""
    linears = [(name, m) for name, m in net.named_children() if isinstance(m, nn.Linear)]
    out = {}
    for (name, layer), (_, nxt) in itertools.pairwise(linears):
        w_in, w_out = layer.weight.detach().double(), nxt.weight.detach().double()
        norms = []
        for i in range(w_in.shape[0]):
            row = math.sqrt(sum(float(w_in[i, j]) ** 2 for j in range(w_in.shape[1])))
            col = math.sqrt(sum(float(w_out[j, i]) ** 2 for j in range(w_out.shape[0])))
            norms.append(row * col)
        mean = sum(norms) / len(norms)
        ratios = [n / mean for n in norms]
        centre = sum(ratios) / len(ratios)
        out[name] = sum((r - centre) ** 2 for r in ratios) / (len(ratios) - 1)
    return out


def assert_matches_reference(run_path: Path, reference: dict[int, dict[str, float]], prefix: str):
    """Every snapshot of the run equals the naive variance recorded at the same step."""
    history = open_run(run_path).history()
    assert len(history), "the run file holds no snapshot"
    for step, rows in history.groupby("step"):
        expected = reference[int(step)]
        got = {g.removeprefix(prefix): v for g, v in zip(rows["group"], rows["variance"])}
        assert set(got) == set(expected), (step, got, expected)
        for layer, value in expected.items():
            assert got[layer] == pytest.approx(value, rel=1e-4, abs=1e-7), (step, layer)


def digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x[:n] / 16.0, dtype=torch.float32), torch.tensor(y[:n])


def make_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10)
    )  # fmt: skip


# ---------------------------------------------------------------------------- optional extras
def test_core_import_needs_no_extra_and_missing_extras_say_how_to_install(tmp_path):
    """`import widthwise` (and the tracker) work with every optional framework blocked; each
    integration then fails with one line naming its pip extra."""
    script = textwrap.dedent(
        """
        import importlib.abc, sys
        BLOCKED = {"lightning", "pytorch_lightning", "transformers", "accelerate", "tensorboard"}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)

        sys.meta_path.insert(0, Block())
        import widthwise, widthwise.tracker, widthwise.store, widthwise.integrations
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print("LOADED", loaded)

        from widthwise.integrations import MissingExtraError
        for module, extra in [("lightning", "lightning"), ("hf", "hf")]:
            try:
                importlib.import_module("widthwise.integrations." + module)
            except MissingExtraError as err:
                print("ERROR", extra, str(err))
        from widthwise.integrations.tensorboard import TensorBoardLogger
        try:
            TensorBoardLogger(sys.argv[1])
        except ImportError as err:
            print("ERROR", "tensorboard", str(err))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "tb")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "LOADED []" in lines
    errors = {line.split()[1]: line.split(" ", 2)[2] for line in lines if line.startswith("ERROR")}
    assert set(errors) == {"lightning", "hf", "tensorboard"}
    for extra, message in errors.items():
        assert f'pip install "widthwise[{extra}]"' in message
        assert "\n" not in message
    assert not (tmp_path / "tb").exists()


# ---------------------------------------------------------------------------------- Lightning
class LitDigits(L.LightningModule):
    def __init__(self, example: bool = True) -> None:
        super().__init__()
        self.net = make_net()
        if example:
            self.example_input_array = torch.zeros(2, 64)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


class LitRecorder(L.Callback):
    """Naive variances after every optimizer step (and at the start)."""

    def __init__(self) -> None:
        self.values: dict[int, dict[str, float]] = {}

    def on_train_start(self, trainer, pl_module):
        self.values[trainer.global_step] = naive_variances(pl_module.net)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.values[trainer.global_step] = naive_variances(pl_module.net)


def lightning_fit(
    root: Path,
    callbacks: list,
    *,
    example: bool = True,
    epochs: int = 2,
    shuffle: bool = True,
    ckpt_path: Path | None = None,
    logger=False,
) -> LitDigits:
    x, y = digits(96 + 32)
    train = DataLoader(TensorDataset(x[:96], y[:96]), batch_size=16, shuffle=shuffle)
    val = DataLoader(TensorDataset(x[96:], y[96:]), batch_size=32)
    L.seed_everything(0, verbose=False)
    model = LitDigits(example)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        default_root_dir=root,
        callbacks=callbacks,
        logger=logger,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
    )
    trainer.fit(model, train, val, ckpt_path=ckpt_path)
    return model


def test_lightning_callback_schedule_values_metrics_report_and_tensorboard(tmp_path):
    import pytorch_lightning
    from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoard

    from widthwise.integrations.lightning import WidthCallback

    recorder = LitRecorder()
    width = WidthCallback(tmp_path / "run.wwrun", every_n_steps=4, writer="logger")
    # Accepted by the Trainer of either package (both are installed here).
    assert isinstance(width, L.Callback) and isinstance(width, pytorch_lightning.Callback)
    logger = LightningTensorBoard(tmp_path, name="tb", version=0)
    # No example_input_array: the callback builds example inputs from the training data.
    trained = lightning_fit(tmp_path, [width, recorder], example=False, logger=logger)
    logger.experiment.close()

    # 6 batches per epoch, 2 epochs: start, every 4 steps, and both epoch ends.
    expected_steps = [0, 4, 6, 8, 12]
    snaps = open_run(tmp_path / "run.wwrun").snapshots()
    assert snaps["step"].tolist() == expected_steps
    assert snaps["epoch"].tolist() == [0, 0, 0, 1, 1]
    assert_matches_reference(tmp_path / "run.wwrun", recorder.values, prefix="net.")

    metrics = open_run(tmp_path / "run.wwrun").metrics()
    loss_steps = metrics.loc[metrics["name"] == "train_loss", "step"].tolist()
    assert loss_steps == [4, 6, 8, 12]  # every snapshot after the first, once
    # Validation metrics are recorded once per validation, never repeated by later snapshots.
    assert metrics.loc[metrics["name"] == "val_acc", "step"].tolist() == [6, 12]
    assert (tmp_path / "run.html").stat().st_size > 0

    # The callback must not change training: same final weights without it.
    untouched = lightning_fit(tmp_path / "plain", [])
    for a, b in zip(trained.parameters(), untouched.parameters()):
        assert torch.equal(a, b)

    assert_tensorboard_holds_run(tmp_path / "tb" / "version_0", tmp_path / "run.wwrun")


# ----------------------------------------------------------------------------- Hugging Face
class HFDigits(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"pixels": self.x[i], "labels": self.y[i]}


class HFNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = make_net()

    def forward(self, pixels, labels=None):
        logits = self.net(pixels)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


def hf_train(out: Path, callbacks: list, **overrides) -> HFNet:
    from transformers import Trainer, TrainingArguments

    x, y = digits(96 + 32)
    settings = dict(
        output_dir=str(out),
        num_train_epochs=2,
        per_device_train_batch_size=16,
        learning_rate=0.1,
        optim="sgd",
        lr_scheduler_type="constant",
        logging_steps=2,
        eval_strategy="epoch",
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    resume = overrides.pop("resume", None)
    settings.update(overrides)
    torch.manual_seed(0)
    model = HFNet()
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**settings),
        train_dataset=HFDigits(x[:96], y[:96]),
        eval_dataset=HFDigits(x[96:], y[96:]),
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=resume)
    return model


def hf_recorder():
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        def __init__(self) -> None:
            self.values: dict[int, dict[str, float]] = {}

        def on_train_begin(self, args, state, control, model=None, **kw):
            self.values[state.global_step] = naive_variances(model.net)

        def on_step_end(self, args, state, control, model=None, **kw):
            self.values[state.global_step] = naive_variances(model.net)

    return Recorder()


def test_hf_callback_schedule_values_metrics_and_report(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from widthwise.integrations.hf import WidthTrainerCallback

    recorder = hf_recorder()
    writer = SummaryWriter(tmp_path / "tb")
    width = WidthTrainerCallback(tmp_path / "run.wwrun", every_n_steps=4, writer=writer)
    trained = hf_train(tmp_path / "out", [width, recorder])
    writer.close()
    assert_tensorboard_holds_run(tmp_path / "tb", tmp_path / "run.wwrun")

    run = open_run(tmp_path / "run.wwrun")
    snaps = run.snapshots()
    assert snaps["step"].tolist() == [0, 4, 6, 8, 12]
    assert snaps["epoch"].tolist() == [0, 0, 0, 1, 1]
    assert_matches_reference(tmp_path / "run.wwrun", recorder.values, prefix="net.")

    metrics = run.metrics()
    assert metrics.loc[metrics["name"] == "loss", "step"].tolist() == [2, 4, 6, 8, 10, 12]
    assert metrics.loc[metrics["name"] == "eval_loss", "step"].tolist() == [6, 12]
    assert (tmp_path / "run.html").stat().st_size > 0

    untouched = hf_train(tmp_path / "plain", [])
    for a, b in zip(trained.parameters(), untouched.parameters()):
        assert torch.equal(a, b)


def test_hf_state_survives_json_even_for_an_in_memory_tracker():
    """trainer_state.json is JSON; an in-memory run (bytes) must round-trip through it."""
    import json

    from widthwise.integrations.hf import WidthTrainerCallback

    x, _ = digits(4)
    net = make_net()
    source = WidthTrainerCallback(tracker=WidthTracker(net, x[:2]), every_n_steps=1)
    source.tracker.snapshot(step=0)
    with torch.no_grad():
        net[0].weight.mul_(1.5)
    source.tracker.snapshot(step=1, metrics={"loss": 0.25})
    saved = json.loads(json.dumps(source.state()))

    target = WidthTrainerCallback(tracker=WidthTracker(net, x[:2]), every_n_steps=1)
    target.resume_state = saved["attributes"]["resume_state"]
    pd.testing.assert_frame_equal(target.tracker.history(), source.tracker.history())
    pd.testing.assert_frame_equal(target.tracker.metrics(), source.tracker.metrics())
    with pytest.raises(ValueError, match="version"):
        target.resume_state = {"version": 99, "tracker": {}}


# ---------------------------------------------------------------------------------- TensorBoard
def read_tensorboard(logdir: Path) -> tuple[dict[str, dict[int, float]], dict[str, dict]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    scalars = {t: {e.step: e.value for e in acc.Scalars(t)} for t in tags["scalars"]}
    histograms = {
        t: {e.step: e.histogram_value for e in acc.Histograms(t)} for t in tags["histograms"]
    }
    return scalars, histograms


def assert_tensorboard_holds_run(logdir: Path, run_path: Path) -> None:
    """Every snapshot's variance as a scalar and channel norms as a histogram, at its step."""
    scalars, histograms = read_tensorboard(logdir)
    run = open_run(run_path)
    history = run.history()
    ours = {t for t in scalars if t.startswith("widthwise/")}
    assert ours == {f"widthwise/variance/{g}" for g in history["group"].unique()}
    for group, rows in history.groupby("group"):
        assert scalars[f"widthwise/variance/{group}"] == pytest.approx(
            dict(zip(rows["step"], rows["variance"])), rel=1e-6
        )
        steps, norms = run.channel_norms(group)
        hist = histograms[f"widthwise/channel_norms/{group}"]
        assert sorted(hist) == steps.tolist()
        for step, row in zip(steps, norms):
            h = hist[int(step)]
            assert h.num == len(row)
            assert h.min == pytest.approx(float(row.min()), rel=1e-6)
            assert h.max == pytest.approx(float(row.max()), rel=1e-6)
            assert h.sum == pytest.approx(float(np.sum(row, dtype=np.float64)), rel=1e-5)


def test_tensorboard_logger_live_and_replayed_match_the_run(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from widthwise.integrations.tensorboard import TensorBoardLogger

    net = make_net()
    x, y = digits(64)
    tracker = WidthTracker(net, x[:2], store=tmp_path / "run.wwrun")
    live = TensorBoardLogger(SummaryWriter(tmp_path / "live")).attach(tracker)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    tracker.snapshot(step=0)
    for step in range(1, 7):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 2 == 0:
            tracker.snapshot(step=step)
    live.close()
    replayed = TensorBoardLogger(tmp_path / "replayed")  # a log directory works too
    assert replayed.log_run(open_run(tmp_path / "run.wwrun")) == 4
    replayed.close()

    for logdir in ("live", "replayed"):
        assert_tensorboard_holds_run(tmp_path / logdir, tmp_path / "run.wwrun")


def test_tensorboard_logger_rejects_a_non_writer():
    from widthwise.integrations.tensorboard import TensorBoardLogger

    with pytest.raises(TypeError, match="SummaryWriter"):
        TensorBoardLogger(object())


# ------------------------------------------------------------------------------------ examples
def run_example(args: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


EXAMPLE_RUNS = {
    # Lightning runs its DDP strategy (two CPU processes, gloo): one run file, from rank 0.
    "lightning_digits.py": (
        ["--epochs", "1", "--every-n-steps", "4", "--devices", "2", "--strategy", "ddp"],
        [0, 4, 8, 12],
    ),
    "hf_trainer_digits.py": (["--max-steps", "12", "--every-n-steps", "4"], [0, 4, 8, 12]),
    "tensorboard_digits.py": (["--steps", "12", "--snapshot-every", "4"], [0, 4, 8, 12]),
}


@pytest.mark.parametrize("example", sorted(EXAMPLE_RUNS))
def test_example_runs_as_is(example, tmp_path):
    args, steps = EXAMPLE_RUNS[example]
    out = tmp_path / "out"
    run_example([sys.executable, str(EXAMPLES / example), "--out", str(out), *args], tmp_path)
    assert [p.name for p in out.glob("*.wwrun")] == ["run.wwrun"]
    assert open_run(out / "run.wwrun").snapshots()["step"].tolist() == steps


def test_ddp_torchrun_example_writes_one_run_file_from_rank_zero(tmp_path):
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    out_dir = tmp_path / "out"
    args = [
        str(EXAMPLES / "ddp_torchrun.py"),
        "--out",
        str(out_dir),
        "--steps",
        "12",
        "--snapshot-every",
        "4",
    ]
    run_example([*launcher, *args], tmp_path)
    assert [p.name for p in out_dir.glob("*.wwrun")] == ["run.wwrun"]
    assert open_run(out_dir / "run.wwrun").snapshots()["step"].tolist() == [0, 4, 8, 12]
