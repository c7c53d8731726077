"""The ``widthwise`` command line: demo, report, groups; help, exit codes, one-line errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_report import train_tracked
from widthwise.cli import main
from widthwise.groups import find_groups
from widthwise.reproduction.zoo.mlp import MLP
from widthwise.store import open_run


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("command", [None, "demo", "report", "groups"])
def test_help(capsys, command):
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: widthwise" in out
    if command:
        assert f"widthwise {command}" in out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


@pytest.fixture(scope="module")
def run_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("runs") / "tiny.wwrun"
    train_tracked(path, steps=40).close()
    return path


def test_report_prints_the_table_and_writes_html(capsys, run_file, tmp_path):
    html_path = tmp_path / "out" / "page.html"
    code, out, err = run_cli(capsys, "report", str(run_file), "--html", str(html_path))
    assert code == 0, err
    expected = open_run(run_file).report()
    assert str(expected) in out  # the same table the API gives
    for row in expected.table.itertuples():
        assert row.group[:8] in out and row.label in out
    page = html_path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.count("<img") == len(expected.table)
    assert str(html_path) in out


def test_report_defaults_to_html_beside_the_run(capsys, run_file, tmp_path):
    copy = tmp_path / "copy.wwrun"
    shutil.copy(run_file, copy)
    code, _, err = run_cli(capsys, "report", str(copy))
    assert code == 0, err
    assert (tmp_path / "copy.html").exists()
    code, _, _ = run_cli(capsys, "report", str(copy), "--no-html", "--html", str(tmp_path / "x"))
    assert code == 0 and not (tmp_path / "x").exists()


def test_report_errors(capsys, tmp_path, run_file):
    code, _, err = run_cli(capsys, "report", str(tmp_path / "missing.wwrun"))
    assert_one_line_error(code, err, "widthwise report: error:", "no such file", "missing.wwrun")
    text = tmp_path / "notes.txt"
    text.write_text("this is not a run\n" * 50)
    code, _, err = run_cli(capsys, "report", str(text))
    assert_one_line_error(code, err, "notes.txt")
    code, _, err = run_cli(capsys, "report", str(tmp_path))
    assert_one_line_error(code, err, "directory")
    code, _, err = run_cli(capsys, "report", str(run_file), "--html", str(tmp_path))
    assert_one_line_error(code, err, "--html", "directory")


def test_groups_of_a_zoo_model(capsys):
    kwargs = '{"in_features": 40, "widths": [64, 8], "out_features": 10}'
    code, out, err = run_cli(
        capsys,
        "groups",
        "widthwise.reproduction.zoo.mlp:MLP",
        "--kwargs",
        kwargs,
        "--input-shape",
        "2,40",
    )
    assert code == 0, err
    expected = find_groups(MLP(40, [64, 8], 10), torch.randn(2, 40))
    lines = out.splitlines()
    for g in expected:
        row = next(line for line in lines if line.startswith(g.name + " "))
        assert row.split()[1:3] == [g.kind, str(g.width)]
    assert f"{len(expected)} channel groups, {sum(g.width for g in expected)} channels" in out


def test_groups_of_a_user_file(capsys, tmp_path):
    source = tmp_path / "my_net.py"
    source.write_text(
        "import torch.nn as nn\n"
        "def build(hidden=12):\n"
        "    return nn.Sequential(nn.Conv1d(1, hidden, 3), nn.ReLU(), nn.Conv1d(hidden, 5, 3))\n"
    )
    code, out, err = run_cli(
        capsys,
        "groups",
        f"{source}:build",
        "--kwargs",
        '{"hidden": 7}',
        "--input-shape",
        "2,1,16",
        "--members",
    )
    assert code == 0, err
    assert any(line.startswith("0 ") and " 7 " in line for line in out.splitlines())
    assert "producer 0.weight dim=0" in out and "consumer 2.weight dim=1" in out


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["nocolon", "--input-shape", "2,4"], ["MODULE:CALLABLE"]),
        (["no_such_module_xyz:f", "--input-shape", "2,4"], ["cannot import", "no_such_module_xyz"]),
        (["widthwise.reproduction.zoo.mlp:Nope", "--input-shape", "2,4"], ["no attribute", "Nope"]),
        (["missing/net.py:build", "--input-shape", "2,4"], ["no such file"]),
        (["widthwise.reproduction.zoo.mlp:MLP", "--input-shape", "2,x"], ["--input-shape"]),
        (
            ["widthwise.reproduction.zoo.mlp:MLP", "--input-shape", "2,4", "--kwargs", "{bad"],
            ["--kwargs"],
        ),
        (
            ["widthwise.reproduction.zoo.mlp:MLP", "--input-shape", "2,4", "--kwargs", "[1]"],
            ["JSON object"],
        ),
        (["widthwise.reproduction.zoo.mlp:MLP", "--input-shape", "2,4"], ["failed", "TypeError"]),
        (
            ["builtins:dict", "--input-shape", "2,4", "--kwargs", '{"x": 4}'],
            ["not a torch.nn.Module"],
        ),
    ],
)
def test_groups_errors(capsys, argv, fragments):
    code, _, err = run_cli(capsys, "groups", *argv)
    assert_one_line_error(code, err, "widthwise groups: error:", *fragments)


def test_bad_arguments_exit_nonzero(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--epochs", "two"])
    assert exc.value.code == 2
    assert "invalid int value" in capsys.readouterr().err
    code, _, err = run_cli(capsys, "demo", "--epochs", "0", "--out", str(tmp_path))
    assert_one_line_error(code, err, "--epochs")
    clash = tmp_path / "file"
    clash.write_text("")
    code, _, err = run_cli(capsys, "demo", "--out", str(clash))
    assert_one_line_error(code, err, "--out", "not a folder")


def test_demo_writes_runs_and_report(capsys, tmp_path):
    out_dir = tmp_path / "demo"
    code, out, err = run_cli(
        capsys, "demo", "--out", str(out_dir), "--epochs", "2", "--samples", "400", "--no-progress"
    )
    assert code == 0, err
    for name, widths in (("mlp", [512, 8, 256]), ("cnn", [4, 64, 128])):
        run = open_run(out_dir / f"{name}.wwrun")
        assert [g.width for g in run.groups] == widths
        history = run.history()
        # 320 training examples, batch 100: 4 steps per epoch; snapshots at 0 and at the end
        assert sorted(set(history["step"])) == [0, 8]
        assert set(run.metrics()["name"]) == {"train_loss", "test_accuracy"}
        assert run.meta["user"]["name"] == name
        assert f"widthwise report: {name}" in out
    page = (out_dir / "report.html").read_text(encoding="utf-8")
    extra = page.count('<section class="extra">')
    assert page.count("<img") == 6 + extra  # one figure per group, one per extra section
    for name in ("mlp", "cnn"):  # the paper's side analyses, per model
        for title in ("Early vs final channel norms", "Cosine similarity", "IFM effective width"):
            assert f"<h3>{name}: {title}" in page
    assert str(out_dir / "report.html") in out


def test_demo_training_is_deterministic_given_the_seed():
    from widthwise.reproduction.data import mnist1d
    from widthwise.reproduction.demo import train_tracked as demo_train

    data = mnist1d(num_samples=200, seed=0)
    histories = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        tracker, _ = demo_train(
            MLP(40, [16, 4], 10), data, None, epochs=2, seed=seed, snapshot_every=1
        )
        histories.append(tracker.history()[["step", "group", "variance", "mean"]])
    assert histories[0].equals(histories[1])
    assert not histories[0].equals(histories[2])


def test_installed_entry_point(tmp_path):
    exe = shutil.which("widthwise") or str(Path(sys.executable).with_name("widthwise"))
    assert os.path.exists(exe), "the widthwise console script is not installed"
    ok = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "usage: widthwise" in ok.stdout
    bad = subprocess.run(
        [exe, "report", str(tmp_path / "nope.wwrun")], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"widthwise report: error: no such file: {tmp_path / 'nope.wwrun'}"
    ]
