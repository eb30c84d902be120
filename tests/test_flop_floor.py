"""The kernel benchmark's FLOP floor divides by the best matmul rate ever recorded for the machine, so a run
on a loaded machine (whose own matmul is slow) cannot put "ours" below the floor (issue 16, item 5)."""

from __future__ import annotations

import json

import pytest

from bench.benchmarks import conftest as bench_conftest


@pytest.fixture(autouse=True)
def fresh_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_conftest, "_BEST_RATE", {})
    monkeypatch.setattr(bench_conftest, "LAST_MEASURED", {})


def test_a_recorded_rate_above_this_runs_is_the_one_divided_by(tmp_path) -> None:
    path = tmp_path / "rates.json"
    recorded = {bench_conftest.machine_key("cpu"): {"gflops": 1e6, "measured_at": "then"}}
    path.write_text(json.dumps(recorded))
    before = path.read_bytes()
    assert bench_conftest.matmul_rate("cpu", path) == 1e15
    assert 0 < bench_conftest.LAST_MEASURED["cpu"] < 1e15
    assert path.read_bytes() == before  # not a new best: the calibration is left alone


def test_a_new_best_is_recorded_for_this_machine_only(tmp_path, monkeypatch) -> None:
    path = tmp_path / "rates.json"
    monkeypatch.setattr(bench_conftest, "_measure_matmul_rate", lambda device: 3.14e11)
    other = {"another CPU | 64 cpus | 64 threads | torch 0": {"gflops": 1e6, "measured_at": "then"}}
    path.write_text(json.dumps(other))
    assert bench_conftest.matmul_rate("cpu", path) == bench_conftest.LAST_MEASURED["cpu"] == 3.14e11
    written = json.loads(path.read_text())
    assert written[bench_conftest.machine_key("cpu")]["gflops"] == 314.0
    assert (
        written["another CPU | 64 cpus | 64 threads | torch 0"]
        == other["another CPU | 64 cpus | 64 threads | torch 0"]
    )


def test_a_slower_measurement_later_in_the_session_does_not_lower_the_rate(tmp_path, monkeypatch) -> None:
    path = tmp_path / "rates.json"
    monkeypatch.setattr(bench_conftest, "_measure_matmul_rate", lambda device: 3e11)
    assert bench_conftest.matmul_rate("cpu", path) == 3e11
    monkeypatch.setattr(bench_conftest, "_measure_matmul_rate", lambda device: 1e11)  # a loaded spell
    assert bench_conftest.matmul_rate("cpu", path) == 3e11
    assert bench_conftest.LAST_MEASURED["cpu"] == 1e11


def test_a_corrupt_calibration_file_is_named(tmp_path) -> None:
    path = tmp_path / "rates.json"
    path.write_text('{"half a file')
    with pytest.raises(ValueError, match=r"rates\.json is not valid JSON"):
        bench_conftest.matmul_rate("cpu", path)
    path.write_text('{"cpu": 300}')
    with pytest.raises(ValueError, match="expected"):
        bench_conftest.matmul_rate("cpu", path)


def test_the_committed_calibration_is_well_formed() -> None:
    rates = bench_conftest.calibrated_rates()
    assert rates, "results/bench/matmul-rates.json is missing or empty"
    assert all(value["gflops"] > 0 for value in rates.values())
