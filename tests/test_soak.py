"""The soak benchmark (benchmarks/soak.py), CI-sized: a tracker snapshotting every step while a
second process reads the run file. Nothing is lost, the reader never fails, the run file alone
holds every snapshot once closed and all but the last checkpoint interval's while training runs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"


@pytest.fixture(scope="module")
def soak():
    spec = importlib.util.spec_from_file_location("soak_benchmark", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_soak_short(soak, tmp_path):
    steps = 300
    res = soak.run_soak(steps, width=32, tmp=tmp_path)
    for key in ("on", "off"):
        r = res[key]
        assert r["reader"]["errors"] == 0, r["reader"]
        assert r["reader"]["reads"] > 0 and r["reader"]["went_backwards"] == 0
        assert r["alone_after_close"] == steps  # close() folds the log back, reader still open
        assert r["close_warnings"] == []
        assert r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"]
        sizes = r["sizes"]
        assert sizes[-1]["step"] == steps and sizes[-1]["run_bytes"] > 0
    # with the background checkpoint, a copy of the run file alone taken while training runs
    # misses at most what was committed in the last CHECKPOINT_SECONDS (here: a fraction)
    assert res["on"]["alone_before_close"] > 0
