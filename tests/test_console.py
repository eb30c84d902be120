"""What the command prints and how it stops: work-weighted progress, the verdict table's width, stale runs,
safe points for a stop signal. Units only; the command line itself is tested in test_cli.py."""

from __future__ import annotations

import json
import math
import os
import signal
from dataclasses import replace

import pandas as pd
import pytest
from synthetic_runs import progress, write_run

from bench import files
from bench import run_format as rf
from bench.report.commands import WIDTH, verdict_text
from bench.report.runs import STALE, liveness, read_run
from bench.run import interrupts
from bench.run.executors import Console, cumulative_work, duration, epoch_work
from bench.run.experiments import preset
from bench.run.trainer import RunSpec

TRPO = "maml_trpo_half_cheetah_dir"
ML45 = "maml_trpo_metaworld_ml45"


def test_an_epochs_work_is_its_training_steps_plus_its_meta_test_steps():
    quick = preset(TRPO, "quick")  # 10 tasks × 10 episodes × 100 steps, twice; meta-test every 5th epoch
    train = 2 * 10 * 10 * 100
    meta_test = 4 * (10 * 4 + 10) * 100  # 4 tasks × (10 episodes at 0…3 adaptation steps, 10 tested)
    assert [epoch_work(quick, e) for e in range(5)] == [train] * 4 + [train + meta_test]
    work = cumulative_work(quick)
    assert len(work) == quick.epochs + 1 and work[0] == 0 and work[5] == 5 * train + meta_test
    assert work[-1] == quick.epochs * train + (quick.epochs // 5) * meta_test
    no_test = replace(quick, evaluate_every_n_epochs=0)
    assert cumulative_work(no_test)[-1] == quick.epochs * train


def _spec(tmp_path, experiment: str, profile: str, **changes) -> RunSpec:
    return RunSpec(experiment, profile, 0, replace(preset(experiment, profile), **changes), tmp_path)


def _manifest(spec: RunSpec, done: int) -> None:
    spec.path.mkdir(parents=True)
    (spec.path / rf.MANIFEST).write_text(json.dumps({"status": "running", "epochs_completed": done}))


def test_progress_counts_work_not_epochs(tmp_path):
    """A cheap run done and an expensive one not started: most epochs are done, little of the work."""
    cheap, costly = _spec(tmp_path, TRPO, "smoke", epochs=30), _spec(tmp_path, ML45, "quick")
    _manifest(cheap, 30)
    console = Console([cheap, costly], show_bar=False)
    done, total = cumulative_work(cheap.config)[-1], cumulative_work(costly.config)[-1]
    percent = round(100 * done / (done + total))
    assert console.overall() == f"30/36 epochs, {percent} % of the work"
    assert percent < 20, "30 of 36 epochs, but far from 83 % of the time"


def test_durations_read_as_a_person_would_say_them():
    assert [duration(s) for s in (0.42, 8.04, 42.4, 185, 7620)] == [
        "0.4 s",
        "8.0 s",
        "42 s",
        "3 min 05 s",
        "2 h 07 min",
    ]


def _summary_row(**changes) -> dict:
    row = dict(
        experiment="maml_trpo_metaworld_ml1_push",
        profile="full",
        comparison="garage-v2-train-success",
        primary=True,
        epochs_done=300,
        budget_epochs=300,
        n_seeds=5,
        statistic="value",
        ours_mean=0.0523,
        ours_ci_low=0.00123,
        ours_ci_high=0.103,
        reference="garage",
        ref_y=0.02,
        tolerance=0.0683,
        kind="floor",
        proxy=False,
        learned="unclear",
        verdict="at-or-above-floor",
    )
    return row | changes


def test_the_verdict_table_fits_100_columns_and_explains_the_star():
    ml10 = dict(
        experiment="maml_trpo_metaworld_ml10", statistic="max", kind="band", ref_y=0.316, tolerance=0.1
    )
    ppo = dict(experiment="maml_ppo_half_cheetah_dir", kind="band", ours_mean=-123.456, proxy=True)
    summary = pd.DataFrame(
        [
            _summary_row(),
            _summary_row(comparison="garage-v2-test-success", primary=False, ours_ci_low=math.nan),
            _summary_row(**ml10, comparison="table1-meta-test", ours_mean=0.1, verdict="below"),
            _summary_row(**ppo, comparison="none-published", reference="", verdict="no-reference"),
            _summary_row(**ppo, comparison="promp-proxy", primary=False, ref_y=math.nan, epochs_done=20),
            _summary_row(**ppo, comparison="promp-proxy", primary=False, ref_y=147.0, tolerance=30.0),
        ]
    )
    lines = verdict_text(summary).splitlines()
    assert max(len(line) for line in lines) <= WIDTH, "\n".join(lines)
    assert lines[0].split() == ["comparison", "ours", "reference", "learned", "verdict"]
    assert lines[1] == "maml_trpo_metaworld_ml1_push (full): 300/300 epochs, 5 seed(s)"
    assert lines[2].split()[:7] == [
        "*",
        "garage-v2-train-success",
        "0.0523",
        "[0.00123,",
        "0.103]",
        "≥",
        "-0.0483",
    ]
    assert lines[2].endswith("unclear  at-or-above-floor")
    assert "max 0.1 [0.00123, 0.103]  0.316 ± 0.1 " in lines[5]
    assert "–" in lines[7] and "none at this x (proxy)" not in lines[8] and "147 ± 30 (proxy)" in lines[9]
    assert any(line.startswith("* the experiment's primary comparison") for line in lines)

    extreme = pd.DataFrame([_summary_row(ours_mean=-1.234e-7, ours_ci_low=-2.5e-7, ours_ci_high=1.5e-8)] * 2)
    text = verdict_text(extreme.assign(proxy=True, kind="band", ref_y=-9.87e-7, tolerance=1.23e-7))
    assert max(len(line) for line in text.splitlines()) <= WIDTH, text
    assert "CIs: REPORT.md" in text, "too wide with its CIs: they are left to the report"


def test_a_running_run_that_nobody_holds_is_stale(tmp_path):
    folder = write_run(tmp_path, TRPO, 0, progress(3, 10.0, {rf.RETURN: 1.0}), status=rf.STATUS_RUNNING)
    assert liveness(folder, rf.STATUS_RUNNING) == STALE and read_run(folder).stale
    assert "stale (no live holder)" in read_run(folder).partial_reason
    with files.exclusive(folder):  # its trainer
        assert (
            liveness(folder, rf.STATUS_RUNNING)
            == f"running, held by process {os.getpid()} on {os.uname()[1]}"
        )
        assert not read_run(folder).stale
    with files.command_lock(folder, "maml-bench run ..."):  # the command that will resume it
        assert liveness(folder, rf.STATUS_RUNNING).endswith("(maml-bench run ...)")
    assert liveness(folder, rf.STATUS_FINISHED) == rf.STATUS_FINISHED and read_run(folder).stale


@pytest.fixture
def stop_handlers(monkeypatch):
    """bench.run.interrupts' handlers installed in this process for one test, then the previous ones back."""
    previous = {s: signal.getsignal(s) for s in interrupts.STOP_SIGNALS}
    monkeypatch.setattr(interrupts, "_received", None)
    interrupts.install()
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def test_a_stop_signal_waits_for_the_end_of_a_deferred_section(stop_handlers):
    with interrupts.armed():
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGTERM)  # handled at once: recorded, not raised
            assert interrupts.received() == signal.SIGTERM
        with pytest.raises(interrupts.RunInterrupted, match="stopped by SIGTERM"):
            interrupts.check()
    os.kill(os.getpid(), signal.SIGINT)  # a second signal is ignored: the cleanup is not cut short
    with pytest.raises(interrupts.RunInterrupted), interrupts.armed():  # one received before raises on entry
        pass


def test_a_stop_signal_raises_at_once_where_the_run_is_armed(stop_handlers):
    with pytest.raises(interrupts.RunInterrupted, match="stopped by SIGINT"), interrupts.armed():
        os.kill(os.getpid(), signal.SIGINT)
        pytest.fail("the signal should have raised")


def test_a_run_resumed_on_another_cpu_model_says_so(tmp_path, capsys):
    """Resuming prints the epoch; where the new sitting's CPU model is not one an earlier sitting ran on,
    the line says that from here the numbers differ from a run on one CPU model (README)."""
    spec = _spec(tmp_path, TRPO, "smoke", epochs=30)
    _manifest(spec, 10)
    console = Console([spec], show_bar=False)
    starts = [{"from_epoch": 0, "cpu": "Intel Xeon"}, {"from_epoch": 10, "cpu": "AMD EPYC"}]
    (spec.path / rf.MANIFEST).write_text(json.dumps({"epochs_completed": 10, "starts": starts}))
    console.poll()
    resumed = f"resuming {spec.name} from epoch 10 (of 30)"
    change = "; on AMD EPYC, where earlier sittings ran on Intel Xeon: from here the numbers differ"
    assert capsys.readouterr().out.startswith(resumed + change)


def test_only_a_new_cpu_model_is_a_cpu_change():
    xeon, epyc = {"cpu": "Intel Xeon"}, {"cpu": "AMD EPYC"}
    assert rf.cpu_change([]) == rf.cpu_change([xeon]) == rf.cpu_change([xeon, xeon]) == ""
    assert rf.cpu_change([xeon, epyc, xeon]) == ""  # back on a model an earlier sitting ran on
    assert rf.cpu_change([xeon, epyc, epyc]) == ""
    assert "on AMD EPYC, where earlier sittings ran on Intel Xeon:" in rf.cpu_change([xeon, xeon, epyc])
    assert "ran on ?, Intel Xeon:" in rf.cpu_change([{}, xeon, epyc])  # a start without a CPU recorded
