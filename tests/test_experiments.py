"""`widthwise reproduce`: quick sweeps through the CLI, the stored runs, the streamlining proof."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from widthwise import classify, count_flops, count_params, experiments, open_run, zoo
from widthwise.cli import main
from widthwise.verdicts import judge


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("family", ["teacher", "mlp"])
def test_quick_sweep_through_the_cli_writes_figure_tables_and_runs(family, tmp_path, capsys):
    assert main(["reproduce", family, "--quick", "--seeds", "1", "--out", str(tmp_path)]) == 0
    fam = experiments.FAMILIES[family]
    for name in (f"{family}.png", f"{family}.csv", f"{family}-summary.csv"):
        assert (tmp_path / name).stat().st_size > 0
    table = pd.read_csv(tmp_path / f"{family}.csv")
    assert list(table.width) == fam.quick_widths
    assert set(table.label) <= {"IS", "DS", "undetermined"}
    assert table.accuracy.between(0, 1).all()
    assert fam.description in capsys.readouterr().out
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []  # the figure was not left open in pyplot
    # Each row's label is what judge says on the stored run, whose paper_label is what classify
    # says on the examined group's history: independent paths through the run file.
    for row in table.itertuples():
        run = open_run(tmp_path / family / f"{family}-w{row.width}-s{row.seed}.wwrun")
        hist = run.history()
        groups = {g.name: g for g in run.groups}
        name = experiments.examined_group(list(groups.values()), fam.examined).name
        series = hist[(hist.group == name) & (hist.gate.fillna("") == "")]
        assert groups[name].width == row.width
        judged = judge(run).table.set_index("group").loc[name]
        assert judged.label == row.label
        paper = classify(series.variance.to_numpy(), series.step.to_numpy()).label
        assert judged.paper_label == paper


def test_the_teacher_family_reads_ds_when_narrow_and_is_when_wide():
    # Measured: 2 and 256 hidden units against a teacher of 16 give DS and IS at confidence
    # ~1 even in the quick setting (docs/reproduction.md has the full sweep).
    res = experiments.sweep("teacher", seeds=2, quick=True)
    assert res[res.width == 2].paper_label.tolist() == ["DS", "DS"]
    assert res[res.width == 256].paper_label.tolist() == ["IS", "IS"]
    assert res[res.width == 2].label.tolist() == ["DS", "DS"]
    assert "IS" not in res[res.width == 2].label.tolist()


def test_sweep_takes_adamw_and_refuses_an_unknown_optimizer():
    with pytest.raises(ValueError, match="optimizer must be"):
        experiments.sweep("teacher", seeds=1, quick=True, optimizer="lion")
    kw = experiments._settings(experiments.FAMILIES["teacher"], True, "adamw")
    assert (kw["optimizer"], kw["lr"]) == ("adamw", experiments.ADAMW_LR)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        experiments.make_optimizer([torch.nn.Parameter(torch.zeros(1))], "lion", 0.1, 0.0)


def test_summary_counts_labels_per_width():
    rows = [
        {"family": "f", "width": w, "seed": s, "label": lab, "accuracy": a}
        for w, s, lab, a in [
            (2, 0, "DS", 0.5),
            (2, 1, "IS", 0.7),
            (8, 0, "IS", 0.9),
            (8, 1, "undetermined", 0.8),
        ]
    ]
    got = experiments.summary(pd.DataFrame(rows)).set_index("width")
    assert got.loc[2, ["DS", "IS", "undetermined"]].tolist() == [1, 1, 0]
    assert got.loc[8, ["DS", "IS", "undetermined"]].tolist() == [0, 1, 1]
    assert got.loc[2, "accuracy"] == pytest.approx(0.6)


def test_uniform_widths_match_the_parameter_target():
    model = zoo.CNN1D([4, 16, 256], length=40, num_classes=10)
    target = count_params(model) * 0.75
    widths = experiments.uniform_widths(model, int(target))
    ratios = np.array(widths) / np.array(model.widths())
    assert np.ptp(ratios[np.array(model.widths()) > 10]) < 0.1  # one multiplier
    assert abs(count_params(model.with_widths(widths)) - target) / target < 0.03


def test_streamline_proof_quick_keeps_flops_and_matches_params():
    df = experiments.streamline_proof("cnn1d", seeds=[0], quick=True)
    assert sorted(df.variant) == ["original", "streamlined", "uniform"]
    row = df.set_index("variant")
    assert abs(row.flops["streamlined"] / row.flops["original"] - 1) <= 0.02
    assert abs(row.params["uniform"] / row.params["streamlined"] - 1) <= 0.03
    plan = df.attrs["plan"]
    assert plan.budget["met"]
    task = experiments.FAMILIES["cnn1d"].build_task(0)
    rebuilt = zoo.CNN1D.from_config(
        plan.to_config(zoo.CNN1D([4, 16, 256], length=40, num_classes=10))
    )
    assert count_flops(rebuilt, task.example_inputs) == row.flops["streamlined"]
    table = experiments.proof_table(df)
    assert table.set_index("variant").params_ratio["original"] == 1.0


def test_bad_reproduce_arguments_get_one_line_errors(tmp_path, capsys):
    assert main(["reproduce", "nosuch", "--out", str(tmp_path / "new")]) != 0
    assert "unknown family" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # nothing written for a typo
    assert main(["reproduce", "mlp", "--seeds", "0", "--out", str(tmp_path)]) != 0
    assert "--seeds" in capsys.readouterr().err


def test_training_settings_are_validated():
    task = experiments.FAMILIES["teacher"].build_task(0)
    with pytest.raises(ValueError, match="schedule"):
        experiments.train(torch.nn.Linear(16, 4), task, epochs=1, lr=0.1, schedule="step")


def test_streamline_example_runs_as_is(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "streamline_mnist1d.py"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(script), "--epochs", "6", "--out", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert [g["group"] for g in plan["groups"]] == ["convs.0", "convs.1", "convs.2"]
    assert plan["budget"]["met"]
    assert len(open_run(tmp_path / "original.wwrun")) > 8
    assert "test accuracy: original" in done.stdout


def test_cli_names_match_the_experiment_definitions():
    from widthwise.commands import reproduce

    assert set(reproduce.FAMILY_NAMES) == set(experiments.FAMILIES)
    from widthwise.reproduction import streamlining

    assert tuple(streamlining.SETUPS) == reproduce.PROOF_FAMILY_NAMES
    assert tuple(p[0] for p in streamlining.PLANS) == reproduce.PROOF_PLAN_NAMES


def test_streamline_proof_refuses_an_unknown_plan(tmp_path, capsys):
    out = tmp_path / "new"
    assert main(["reproduce", "streamline", "--plans", "flopz", "--out", str(out)]) != 0
    assert "no plan 'flopz'" in capsys.readouterr().err
    assert not out.exists()


def test_reproduce_with_adamw_through_the_cli_records_the_optimizer(tmp_path, capsys):
    args = ["reproduce", "teacher", "--quick", "--seeds", "1", "--optimizer", "adamw"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "teacher-adamw.csv")
    assert {"label", "paper_label"} <= set(table.columns)
    assert "(AdamW)" in capsys.readouterr().out
    run = open_run(tmp_path / "teacher-adamw" / f"teacher-adamw-w{table.width[0]}-s0.wwrun")
    assert "adamw" in str(run.meta).lower()
    with pytest.raises(SystemExit) as bad:  # argparse's one-line usage error
        main(["reproduce", "teacher", "--optimizer", "rmsprop", "--out", str(tmp_path)])
    assert bad.value.code == 2
