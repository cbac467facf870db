"""The speed benchmark scripts, run end to end on a workload small enough for CI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def speed_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A work folder after one small bfloat16 run of speed.py, and that run's output."""
    work = tmp_path_factory.mktemp("speed-bench")
    # bfloat16 runs the non-float32 code path that a GPU float16 or bfloat16 run also takes.
    command = [sys.executable, str(BENCHMARKS / "speed.py"), "--work", str(work), "--images", "3", "--per-image", "2",
               "--rounds", "1", "--skip-memory", "--dtype", "bfloat16"]  # fmt: skip
    return work, subprocess.run(command, capture_output=True, text=True, timeout=600, env=ENV)


def test_speed_script_small_bfloat16_run(speed_run):
    work, completed = speed_run
    assert completed.returncode == 0, completed.stderr[-3000:]

    results = json.loads((work / "speed-cpu-bfloat16.json").read_text())
    assert results["pairs"] == 6
    assert results["unique_images"] == 3
    assert results["dtype"] == "bfloat16"
    for name in ("i0tscore", "torchmetrics", "plain", "floor"):
        assert len(results["seconds"][name]) == 1
        assert results["pairs_per_second"][name] > 0
    for name, ratio in results["ratios"].items():
        assert math.isfinite(ratio), f"{name} is {ratio}"
        assert ratio > 0, f"{name} is {ratio}"
    means = results["mean_cosine"]
    assert abs(means["plain"] - means["i0tscore"]) <= 2e-3
    assert "| i0tscore |" in completed.stdout


def test_prefetch_script_one_thread(speed_run):
    work, _ = speed_run
    command = [sys.executable, str(BENCHMARKS / "prefetch.py"), "--work", str(work), "--images", "3", "--rounds", "1", "--threads", "1"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, env=ENV)
    assert completed.returncode == 0, completed.stderr[-3000:]

    results = json.loads((work / "prefetch-cpu-threads1.json").read_text())
    assert results["images"] == 3
    assert results["environment"]["torch_threads"] == "1"
    assert set(results["seconds"]) == {"worker thread", "serial", "floor"}
    for name, times in results["seconds"].items():
        assert len(times) == 1, name
        assert times[0] > 0, name
    assert "| serial |" in completed.stdout


def test_speed_agreement_check_rejects_different_scores():
    sys.path.insert(0, str(BENCHMARKS))
    import speed

    speed.check_agreement({"i0tscore": -0.02, "plain": -0.02, "torchmetrics": 0.0, "floor": math.nan}, "float32")
    with pytest.raises(SystemExit, match="plain gives a mean cosine of 0.030000"):
        speed.check_agreement({"i0tscore": 0.02, "plain": 0.03, "torchmetrics": 0.02, "floor": math.nan}, "float32")
    with pytest.raises(SystemExit, match="torchmetrics"):
        speed.check_agreement({"i0tscore": 0.02, "plain": 0.02, "torchmetrics": 0.0, "floor": math.nan}, "float32")
