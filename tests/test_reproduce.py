"""End to end through the real command line: the smoke profile of all five experiments, then the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from bench import run_format as rf
from bench.experiments import EXPERIMENTS

EXPECTED = Path(__file__).resolve().parent.parent / "results" / "regression" / "expected.json"


def test_reproduce_smoke_trains_all_five_and_writes_the_report(tmp_path):
    command = ["reproduce", "--profile", "smoke", "--seeds", "0", "--results", str(tmp_path), "--no-progress"]
    result = subprocess.run(
        [sys.executable, "-m", "bench", *command],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 runs done, 0 failed" in result.stdout
    for experiment in EXPERIMENTS:
        assert f"smoke/{experiment}/seed-0: finished, 2 epochs in" in result.stdout
        assert experiment in result.stdout.split("5 runs done")[1], "the verdict table lists every experiment"
    assert f"report: {tmp_path / 'REPORT.md'}" in result.stdout
    assert (tmp_path / "REPORT.md").stat().st_size > 0 and (tmp_path / "summary.csv").exists()
    assert any((tmp_path / "plots").glob("*.png"))

    # the smoke metrics are a regression fingerprint of the whole pipeline (same seed → same numbers)
    expected = json.loads(EXPECTED.read_text())["smoke"]
    for experiment in EXPERIMENTS:
        frame = pd.read_csv(rf.run_dir(tmp_path, "smoke", experiment, 0) / rf.PROGRESS).sort_values(rf.EPOCH)
        for column, value in expected["metrics"][experiment].items():
            got = frame[column].iloc[-1]
            tolerance = expected["abs_tolerance"] + expected["rel_tolerance"] * abs(value)
            assert abs(got - value) <= tolerance, f"{experiment} {column}: {got} vs expected {value}"
