"""End to end through the real command line, and the regression fingerprints of the numbers.

The smoke profile of all five experiments, then the report, with a fingerprint of the whole pipeline; and a
second-order fingerprint: MAML-PPO and MAML-TRPO at a setting where dropping the second-order term moves the
numbers far beyond rounding, with the first-order ablation as its control. Values, tolerances and the
measurements behind them: results/regression/expected.json (["smoke"], ["second_order"]). After an intended
change of the numbers, `python tests/test_reproduce.py` reruns both commands and rewrites the values there
(in the same commit).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import mujoco
import pandas as pd
import torch

from bench import run_format as rf
from bench.run.experiments import EXPERIMENTS

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = ROOT / "results" / "regression" / "expected.json"
ROWS = {"first_epoch": 0, "last_epoch": -1}
"""The fingerprints' rows of progress.csv (by position after sorting on the epoch)."""
CONTROL = "+first_order"


def _bench(command: str, results: Path) -> subprocess.CompletedProcess:
    """Run ``python -m bench ...`` (the command as expected.json writes it) into ``results``."""
    arguments = shlex.split(command)
    assert arguments[:3] == ["python", "-m", "bench"], command
    return subprocess.run(
        [sys.executable, *arguments[1:], "--results", str(results), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=900,
    )


def _row(results: Path, profile: str, experiment: str, row: str) -> pd.Series:
    frame = pd.read_csv(rf.run_dir(results, profile, experiment, 0) / rf.PROGRESS).sort_values(rf.EPOCH)
    return frame.iloc[ROWS[row]]


def relative_differences(got: pd.Series, expected: dict[str, float]) -> dict[str, float]:
    """``|got − expected| / |expected|`` per fingerprinted column (``|got|`` where 0 is expected)."""
    return {
        column: abs(got[column] - value) / abs(value) if value else abs(got[column])
        for column, value in expected.items()
    }


def _above(differences: dict[str, float], tolerance: float) -> dict[str, str]:
    return {column: f"{d:.2e}" for column, d in differences.items() if not d <= tolerance}


def test_reproduce_smoke_trains_all_five_and_writes_the_report(tmp_path):
    fingerprint = json.loads(EXPECTED.read_text())["smoke"]
    result = _bench(fingerprint["command"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 runs done, 0 failed" in result.stdout
    for experiment in EXPERIMENTS:
        assert f"smoke/{experiment}/seed-0: finished, 2 epochs in" in result.stdout
        assert experiment in result.stdout.split("5 runs done")[1], "the verdict table lists every experiment"
    assert f"report: {tmp_path / 'REPORT.md'}" in result.stdout
    assert (tmp_path / "REPORT.md").stat().st_size > 0 and (tmp_path / "summary.csv").exists()
    assert any((tmp_path / "plots").glob("*.png"))

    # the pipeline's fingerprint: epoch 0 (no learning yet) tight; the last epoch as tight as rounding allows
    assert sorted(fingerprint["metrics"]) == sorted(EXPERIMENTS)
    for experiment, rows in fingerprint["metrics"].items():
        for row, expected in rows.items():
            tolerance = fingerprint["rel_tolerance"][row]
            differences = relative_differences(_row(tmp_path, "smoke", experiment, row), expected)
            off = _above(differences, tolerance)
            assert not off, f"{experiment}, {row}: relative differences above {tolerance:g}: {off}"


def test_second_order_fingerprint_of_ppo_and_trpo_fails_first_order_maml(tmp_path):
    fingerprint = json.loads(EXPECTED.read_text())["second_order"]
    result = _bench(fingerprint["command"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    tolerance, control_floor = fingerprint["rel_tolerance"], fingerprint["first_order_min_largest_difference"]
    assert fingerprint["metrics"], "the fingerprint names its experiments"
    for experiment, expected in fingerprint["metrics"].items():
        differences = relative_differences(_row(tmp_path, "smoke", experiment, "last_epoch"), expected)
        off = _above(differences, tolerance)
        assert not off, f"{experiment}: relative differences above {tolerance:g}: {off}"
        # the control: the same run without the second-order term must fail the same check, by far
        control = relative_differences(_row(tmp_path, "smoke", experiment + CONTROL, "last_epoch"), expected)
        assert max(control.values()) >= control_floor, (
            f"{experiment}{CONTROL} is within {max(control.values()):.2e} of the second-order fingerprint "
            f"(must differ by ≥ {control_floor:g} somewhere): {_above(control, 0.0)}"
        )


def _measured_on() -> dict[str, object]:
    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    return {
        "date": datetime.date.today().isoformat(),
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--", "maml", "bench", "constraints.txt")),
        "host": f"{cpu}, {len(os.sched_getaffinity(0))} cores",
        "torch": torch.__version__,
        "mujoco": mujoco.__version__,
    }


def update(expected_path: Path = EXPECTED) -> None:
    """Rerun both fingerprints' commands and rewrite their values (same columns) and ``measured_on``;
    the second-order one also records the first-order control's relative differences."""
    expected = json.loads(expected_path.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("smoke", "second_order"):
            results = Path(tmp) / name
            result = _bench(expected[name]["command"], results)
            if result.returncode != 0:
                raise SystemExit(result.stdout + result.stderr)
            section = expected[name]
            if name == "smoke":
                for experiment, rows in section["metrics"].items():
                    for row, columns in rows.items():
                        got = _row(results, "smoke", experiment, row)
                        rows[row] = {column: float(got[column]) for column in columns}
            else:
                controls = section["measured"]["first_order_relative_differences"] = {}
                for experiment, columns in section["metrics"].items():
                    got = _row(results, "smoke", experiment, "last_epoch")
                    section["metrics"][experiment] = {column: float(got[column]) for column in columns}
                    control = _row(results, "smoke", experiment + CONTROL, "last_epoch")
                    differences = relative_differences(control, section["metrics"][experiment])
                    controls[experiment] = {column: float(f"{d:.2e}") for column, d in differences.items()}
            section["measured_on"] = _measured_on()
    expected_path.write_text(json.dumps(expected, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    update()
    print(f"rewrote the fingerprints in {EXPECTED}")
