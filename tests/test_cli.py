"""The real command line: errors, local and Ray executors, and a SIGKILL'd run that resumes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench import run_format as rf
from bench.cli import main
from bench.report.runs import read_run

TRPO = "maml_trpo_half_cheetah_dir"


def bench(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=300, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(f"bench {args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def progress(results: Path, experiment: str = TRPO, seed: int = 0, profile: str = "smoke") -> pd.DataFrame:
    frame = pd.read_csv(rf.run_dir(results, profile, experiment, seed) / rf.PROGRESS)
    return frame[sorted(c for c in frame.columns if not c.startswith(rf.TIME_PREFIX))]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "nope"), "unknown experiment 'nope'; valid: maml_ppo_half_cheetah_dir"),
        (("run", TRPO, "--profile", "fast"), "unknown profile 'fast'"),
        (("run", TRPO, "--set", "epochs=x"), "bad value for epochs"),
        (("run", TRPO, "--set", "max_kl=-1"), "max_kl must be > 0"),
        (("run", TRPO, "--executor", "dask"), "unknown executor 'dask'; valid: local, ray"),
        (("run", TRPO, "--set", "inner_lr=inf"), "inner_lr must be a finite number"),
        (("run", TRPO, "--set", "device=foo"), "device 'foo' is not a torch device"),
        (("run", "maml_trpo_metaworld_ml10", "--set", "meta_batch_size=4"), "must be a multiple of 10"),
        (("run", TRPO, "--jobs", "0"), "--jobs must be at least 1"),
    ],
)
def test_bad_input_gives_a_clear_error(tmp_path, args, message):
    result = bench(*args, "--results", str(tmp_path), check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "runs").exists(), "nothing is written on bad input"


def test_unwritable_results_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    result = bench("run", TRPO, "--profile", "smoke", "--results", str(blocker / "sub"), check=False)
    assert result.returncode == 2 and "is not writable" in result.stderr
    result = bench("run", TRPO, "--profile", "smoke", "--results", str(blocker), check=False)
    assert result.returncode == 2 and "is a file, not a folder" in result.stderr
    assert blocker.read_text() == "keep me"


def test_report_options_are_checked():
    for option, value in (("--n-resamples", "0"), ("--ci-seed", "-1")):
        result = bench("report", option, value, check=False)
        assert result.returncode == 2 and "must be at least" in result.stderr


SMOKE = ("run", TRPO, "--profile", "smoke", "--no-progress", "--jobs", "1")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


def _unfinished_run(results: Path) -> tuple[tuple[str, ...], Path]:
    """A 3-epoch smoke run trained, then its manifest set back to 'running, 2 epochs done' (as a kill after
    epoch 2 leaves it); returns the command that resumes it and its folder."""
    args = (*SMOKE, "--seeds", "0", "--set", "epochs=3", "--results", str(results))
    bench(*args)
    run = rf.run_dir(results, "smoke", TRPO, 0)
    manifest = json.loads((run / rf.MANIFEST).read_text())
    (run / rf.MANIFEST).write_text(
        json.dumps(manifest | {"status": rf.STATUS_RUNNING, "epochs_completed": 2})
    )
    return args, run


@pytest.mark.parametrize("damage", ["config missing", "checkpoint missing", "manifest not an object"])
def test_a_run_folder_that_cannot_continue_stops_everything_before_it_starts(tmp_path, damage):
    """Nothing is trained, nothing is rewritten: the user decides what to do with the folder."""
    args, run = _unfinished_run(tmp_path)
    name, message = {
        "config missing": (rf.CONFIG, "config.json is missing but the folder holds manifest.json"),
        "checkpoint missing": (rf.CHECKPOINT, "checkpoint.pt is missing although manifest.json counts 2"),
        "manifest not an object": (rf.MANIFEST, "manifest.json holds a JSON list, not an object"),
    }[damage]
    if damage == "manifest not an object":
        (run / name).write_text("[]")
    else:
        (run / name).unlink()
    before = _files(run)
    result = bench(*args, check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert _files(run) == before


def test_a_corrupt_checkpoint_is_named_with_what_is_wrong(tmp_path):
    args, run = _unfinished_run(tmp_path)
    (run / rf.CHECKPOINT).write_bytes(b"")
    result = bench(*args, check=False)
    assert result.returncode == 1
    assert f"{run / rf.CHECKPOINT} is not a checkpoint of this run (empty file)" in result.stderr


def test_repeated_seeds_and_experiments_run_once(tmp_path):
    args = ("run", TRPO, TRPO, "--profile", "smoke", "--no-progress", "--seeds", "0", "0")
    result = bench(*args, "--set", "epochs=1", "--results", str(tmp_path))
    assert "1 runs (1 experiments × 1 seeds)" in result.stdout and "1 runs done, 0 failed" in result.stdout
    assert (
        "repeated experiments ignored (1)" in result.stderr and "repeated seeds ignored (1)" in result.stderr
    )


def test_a_run_folder_in_use_is_refused(tmp_path):
    from bench import files

    args = (*SMOKE, "--seeds", "0", "--set", "epochs=1", "--results", str(tmp_path))
    run = rf.run_dir(tmp_path, "smoke", TRPO, 0)
    run.mkdir(parents=True)
    with files.exclusive(run):  # as a trainer in another process would hold it
        result = bench(*args, check=False)
    assert result.returncode == 2 and "is being trained by process" in result.stderr
    assert not (run / rf.CONFIG).exists()
    bench(*args)  # free again


def test_a_refusal_names_a_holder_that_writes_its_name_just_after_locking(tmp_path, monkeypatch):
    """Between taking a lock and writing its name into the file the holder leaves it empty for an instant
    (two commands started together can meet there): the refused one waits for the name (up to
    HOLDER_WAIT_S) instead of reporting "another process"; a holder that never writes one is reported so."""
    import fcntl
    import threading

    from bench import files

    run = tmp_path / "seed-0"
    lock = files.command_lock_path(run)

    def take() -> None:
        with files.command_lock(run, "second"):
            pass

    with lock.open("a+") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # locked, name not yet written
        late = threading.Timer(0.2, lambda: (holder.write("process 1 on here (late)\n"), holder.flush()))
        late.start()
        with pytest.raises(
            files.FolderInUseError, match=r"in use by another command, process 1 on here \(late\)"
        ):
            take()
        late.join()
        assert files.lock_holder(lock) == "process 1 on here (late)"
        holder.seek(0)
        holder.truncate()
        holder.flush()
        monkeypatch.setattr(files, "HOLDER_WAIT_S", 0.05)
        with pytest.raises(files.FolderInUseError, match="in use by another command, another process:"):
            take()
        assert files.lock_holder(lock) == "another process"
    with files.command_lock(run, "third"):  # free again, and the holder's name is written
        assert "(third)" in lock.read_text()


def test_list_shows_experiments_and_profiles():
    out = bench("list").stdout
    for name in ("maml_trpo_metaworld_ml45", "maml_ppo_half_cheetah_dir", "smoke", "quick", "full"):
        assert name in out


def test_local_and_ray_executors_write_the_same_files(tmp_path):
    common = ("run", TRPO, "--profile", "smoke", "--seeds", "0", "1", "--no-progress")
    local = bench(*common, "--results", str(tmp_path / "local"))
    assert "2 runs done, 0 failed" in local.stdout
    ray = bench(*common, "--executor", "ray", "--results", str(tmp_path / "ray"))
    assert "2 runs done, 0 failed" in ray.stdout
    for seed in (0, 1):
        pd.testing.assert_frame_equal(
            progress(tmp_path / "local", seed=seed), progress(tmp_path / "ray", seed=seed)
        )
        headers = [
            (rf.run_dir(tmp_path / name, "smoke", TRPO, seed) / rf.PROGRESS).read_text().splitlines()[0]
            for name in ("local", "ray")
        ]
        assert headers[0] == headers[1], "the same columns in the same order, whichever process wrote them"
    again = bench(*common, "--results", str(tmp_path / "local"))
    assert "profile smoke: 2 already finished;" in again.stdout, "the header counts the runs to skip"
    assert again.stdout.count("already finished (2 epochs), skipped") == 2


def test_a_ray_task_asks_for_a_gpu_exactly_when_its_run_trains_on_cuda(tmp_path):
    """Ray hides every GPU from a task that asks for none: a ``device=cuda`` run must ask for one."""
    from dataclasses import replace

    from bench.run.executors import gpus_of, plan
    from bench.run.experiments import preset

    config = preset(TRPO, "smoke")
    cpu, cuda, cuda1 = (
        plan([(TRPO, replace(config, device=device))], "smoke", [0], tmp_path)[0]
        for device in ("cpu", "cuda", "cuda:1")
    )
    assert (gpus_of(cpu), gpus_of(cuda), gpus_of(cuda1)) == (0, 1, 1)


def _epochs_done(run: Path) -> int:
    try:
        return json.loads((run / rf.MANIFEST).read_text())["epochs_completed"]
    except (OSError, ValueError, KeyError):
        return 0


def test_sigkill_mid_run_then_rerun_resumes_to_identical_results(tmp_path, capsys):
    args = ["run", TRPO, "--profile", "smoke", "--seeds", "0", "--no-progress", "--jobs", "1"]
    args += ["--set", "epochs=12", "--set", "max_episode_length=20", "--set", "evaluate_every_n_epochs=3"]
    bench(*args, "--results", str(tmp_path / "whole"))

    killed = tmp_path / "killed"
    run = rf.run_dir(killed, "smoke", TRPO, 0)
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", *args, "--results", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while _epochs_done(run) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)  # the CLI alone, mid-epoch: the kernel takes its worker down with it
    process.wait()
    done = _epochs_done(run)
    assert 3 <= done < 12, f"the kill should land mid-run, not after {done} epochs"
    assert json.loads((run / rf.MANIFEST).read_text())["status"] == rf.STATUS_RUNNING
    assert read_run(run).stale, "running, but nobody holds it: the report says stale (no live holder)"
    assert main(["list", "--runs", "--results", str(killed)]) == 0
    assert f"smoke/{TRPO}/seed-0  stale (no live holder)  {done}/12 epochs" in capsys.readouterr().out

    result = bench(*args, "--results", str(killed))  # a worker still training would hold the folder's lock
    resumed = re.search(rf"^resuming smoke/{TRPO}/seed-0 from epoch (\d+) \(of 12\)$", result.stdout, re.M)
    assert resumed and int(resumed[1]) >= done, result.stdout  # ≥: the kill may follow a checkpoint's write
    assert f"smoke/{TRPO}/seed-0: finished, 12 epochs (resumed at epoch {resumed[1]}) in" in result.stdout
    pd.testing.assert_frame_equal(progress(killed), progress(tmp_path / "whole"))
    header = (run / rf.PROGRESS).read_text().splitlines()[0]
    assert (
        header == (rf.run_dir(tmp_path / "whole", "smoke", TRPO, 0) / rf.PROGRESS).read_text().splitlines()[0]
    )
    assert not list(run.glob(".*.tmp")), "no temporary files are left behind"


# --- the installed command --------------------------------------------------------------------------------
def test_the_installed_command_prints_its_version_and_every_help_its_defaults(capsys):
    """``pip install -e .`` installs ``maml-bench`` beside the interpreter; each command's help says what it
    does and its defaults (profile, results folder)."""
    from importlib.metadata import version

    from bench.run_format import DEFAULT_RESULTS

    script = Path(sys.executable).parent / "maml-bench"
    assert script.is_file(), "reinstall: pip install -c constraints.txt -e ."
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"maml-bench {version('maml-bench')}"
    result = subprocess.run([script, "run", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage: maml-bench run")
    expected = {
        "run": ["Train the named experiments over seeds", "(default: quick)"],
        "reproduce": ["The main job: train all five experiments", "(default: quick)"],
        "report": ["Read every run folder under RESULTS/runs"],
        "list": ["List the experiments, profiles and their settings", "(default: all)"],
    }
    for command, phrases in expected.items():
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines to the terminal's width
        assert exit_.value.code == 0 and text.startswith(f"usage: maml-bench {command}")
        for phrase in [*phrases, f"(default: {DEFAULT_RESULTS})"]:
            assert phrase in text, f"{command} --help lacks {phrase!r}"


# --- signals and concurrent commands ----------------------------------------------------------------------
def test_sigterm_to_the_command_alone_stops_its_run_at_once_and_a_rerun_resumes(tmp_path):
    """As a scheduler or ``kill`` does: the signal reaches the CLI only; the CLI passes it on, the run stops
    at once (no epoch begun after the signal) keeping its checkpoint, the manifest says so, and a rerun ends
    as an uninterrupted run."""
    from bench.run.executors import plan
    from bench.run.experiments import apply_overrides, preset
    from bench.run.trainer import Trainer

    epochs, name = 10, f"smoke/{TRPO}/seed-0"
    args = [*SMOKE, "--seeds", "0", "--set", f"epochs={epochs}", "--results", str(tmp_path / "stopped")]
    config = apply_overrides(preset(TRPO, "smoke"), [f"epochs={epochs}"])
    Trainer(plan([(TRPO, config)], "smoke", [0], tmp_path / "whole")[0]).run()  # as the CLI plans it
    run = rf.run_dir(tmp_path / "stopped", "smoke", TRPO, 0)
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while _epochs_done(run) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    at_signal = _epochs_done(run)
    os.kill(process.pid, signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, out + err
    manifest = json.loads((run / rf.MANIFEST).read_text())
    done = manifest["epochs_completed"]
    # at once: at most the epoch in flight, and one that ended between reading and signalling, complete (a
    # wall-clock bound fails on a loaded machine: 17 s there, under 10 s on a quiet one)
    assert manifest["status"] == rf.STATUS_INTERRUPTED and 2 <= at_signal <= done <= at_signal + 2, manifest
    kept = f"interrupted at epoch {done}/{epochs}; checkpoint of epoch {done} kept"
    assert manifest["error"] == f"{kept}; rerun the same command to resume"
    assert f"{name}: {kept}; rerun the same command to resume" in out
    assert "0 runs done, 0 failed, 1 interrupted" in out and "stopped by SIGTERM" in err

    result = bench(*args)
    assert f"resuming {name} from epoch {done} (of {epochs})" in result.stdout
    pd.testing.assert_frame_equal(progress(tmp_path / "stopped"), progress(tmp_path / "whole"))


def test_two_commands_started_together_on_one_folder_one_trains_the_other_exits_2(tmp_path):
    command = [sys.executable, "-m", "bench", *SMOKE, "--seeds", "0", "--set", "epochs=1"]
    command += ["--results", str(tmp_path)]
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [(p, *p.communicate(timeout=300)) for p in processes]
    assert sorted(p.returncode for p, _, _ in results) == [0, 2], results
    (_, trained, _), (_, refused_out, refused_err) = sorted(results, key=lambda r: r[0].returncode)
    assert "1 runs done, 0 failed" in trained
    assert refused_out == "", "the refused command starts nothing"
    assert refused_err.count("error:") == 1 and "is in use by another command, process" in refused_err


def test_user_runs_and_reports_go_to_a_git_ignored_folder_by_default():
    """A user's runs never touch the tracked files: the default results folder and everything a run or a
    report writes there is ignored by git, as are the record's TensorBoard events and lock files."""
    import shutil

    from bench.run_format import DEFAULT_RESULTS

    root = Path(__file__).resolve().parent.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    assert not DEFAULT_RESULTS.is_absolute() and DEFAULT_RESULTS.parts[0] != "results"
    written = [
        f"{DEFAULT_RESULTS}/REPORT.md",
        f"{DEFAULT_RESULTS}/plots/quick_x_curves.png",
        f"{DEFAULT_RESULTS}/runs/quick/maml_trpo_half_cheetah_dir/seed-0/progress.csv",
        "results/runs/full/maml_trpo_half_cheetah_dir/seed-0/tb/events.out",
        "results/runs/full/maml_trpo_half_cheetah_dir/seed-0/.lock",
        "results/runs/full/maml_trpo_half_cheetah_dir/.seed-0.lock",
    ]
    kept = ["results/runs/full/maml_trpo_half_cheetah_dir/seed-0/progress.csv", "results/REPORT.md"]
    for path in written + kept:
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=root).returncode == 0
        assert ignored == (path in written), path
