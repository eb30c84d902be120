"""The harness: configs and overrides, run folders, determinism, resume, errors."""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from bench import run_format as rf
from bench.run.experiments import EXPERIMENTS, ConfigError, apply_overrides, from_dict, preset, to_dict
from bench.run.trainer import NonFiniteError, RunSpec, Trainer

TRPO = "maml_trpo_half_cheetah_dir"
PPO = "maml_ppo_half_cheetah_dir"


def smoke_spec(tmp_path: Path, experiment: str = TRPO, seed: int = 0, **changes) -> RunSpec:
    config = replace(preset(experiment, "smoke"), **changes)
    return RunSpec(experiment, "smoke", seed, config, tmp_path, threads=1)


def read_progress(spec: RunSpec) -> pd.DataFrame:
    frame = pd.read_csv(spec.path / rf.PROGRESS)
    return frame[sorted(c for c in frame.columns if not c.startswith(rf.TIME_PREFIX))]


def test_presets_follow_garage_and_profiles_scale():
    assert EXPERIMENTS == (
        "maml_ppo_half_cheetah_dir",
        "maml_trpo_half_cheetah_dir",
        "maml_trpo_metaworld_ml1_push",
        "maml_trpo_metaworld_ml10",
        "maml_trpo_metaworld_ml45",
    )
    full = preset(TRPO, "full")
    assert (full.epochs, full.meta_batch_size, full.episodes_per_task, full.max_episode_length) == (
        300,
        20,
        40,
        100,
    )
    assert full.hidden_sizes == (64, 64) and full.action_scale == 10.0 and full.inner_lr == 0.1
    assert full.env_steps_per_epoch() == 160_000
    assert preset("maml_trpo_metaworld_ml45", "full").meta_batch_size == 45
    assert preset(PPO, "full").algo == "ppo" and preset(PPO, "full").clip_range == 0.5
    for name in EXPERIMENTS:
        quick, smoke = preset(name, "quick"), preset(name, "smoke")
        assert (
            smoke.env_steps_per_epoch()
            < quick.env_steps_per_epoch()
            <= preset(name, "full").env_steps_per_epoch()
        )


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match=r"unknown experiment 'nope'.*maml_trpo_half_cheetah_dir"):
        preset("nope", "quick")
    with pytest.raises(ConfigError, match=r"unknown profile 'fast'.*smoke, quick, full"):
        preset(TRPO, "fast")
    config = preset(TRPO, "smoke")
    with pytest.raises(ConfigError, match="unknown config field 'epoch'"):
        apply_overrides(config, ["epoch=3"])
    with pytest.raises(ConfigError, match="bad value for epochs"):
        apply_overrides(config, ["epochs=three"])
    with pytest.raises(ConfigError, match="not of the form field=value"):
        apply_overrides(config, ["epochs"])
    with pytest.raises(ConfigError, match="inner_lr must be > 0"):
        apply_overrides(config, ["inner_lr=0"])
    changed = apply_overrides(config, ["epochs=7", "hidden_sizes=8,8", "first_order=true", "max_kl=0.02"])
    assert (changed.epochs, changed.hidden_sizes, changed.first_order, changed.max_kl) == (
        7,
        (8, 8),
        True,
        0.02,
    )
    assert from_dict(to_dict(changed)) == changed


@pytest.mark.parametrize("experiment", [TRPO, PPO])
def test_run_folder_holds_plain_files_with_garage_keys(tmp_path, experiment):
    spec = smoke_spec(tmp_path, experiment)
    summary = Trainer(spec).run()
    assert summary.status == rf.STATUS_FINISHED and summary.epochs == spec.config.epochs
    config = json.loads((spec.path / rf.CONFIG).read_text())
    assert (
        config["experiment"] == experiment and config["seed"] == 0 and config["epochs"] == spec.config.epochs
    )
    manifest = json.loads((spec.path / rf.MANIFEST).read_text())
    assert manifest["status"] == rf.STATUS_FINISHED and manifest["epochs_completed"] == spec.config.epochs
    for key in ("versions", "git", "starts", "phase_seconds", "threads", "seed"):
        assert key in manifest
    assert manifest["versions"]["torch"].startswith("2.13") and manifest["versions"]["mujoco"] == "3.3.0"
    sampler = {"kind": "batched MuJoCo (all episodes in lockstep)", "threads": spec.threads}
    assert manifest["starts"][-1]["sampler"] == sampler, "how the run sampled"
    assert set(manifest["phase_seconds"]) == set(rf.TIME_PHASES)
    progress = pd.read_csv(spec.path / rf.PROGRESS)
    assert list(progress[rf.EPOCH]) == list(range(spec.config.epochs))
    steps = spec.config.env_steps_per_epoch()
    assert list(progress[rf.TOTAL_ENV_STEPS]) == [steps * (e + 1) for e in range(spec.config.epochs)]
    expected = [rf.RETURN, rf.PRE_RETURN, rf.TEST_RETURN, rf.TEST_PRE_RETURN, rf.adapt_step_key(0)]
    expected += [rf.POLICY_PREFIX + s for s in rf.POLICY_STATS] + [rf.TIME_PREFIX + p for p in rf.TIME_PHASES]
    expected += ["forward/AverageReturn", "MetaTest/backward/AverageReturn"]
    assert set(expected) <= set(progress.columns)
    assert progress[rf.RETURN].notna().all() and progress[rf.TEST_RETURN].notna().all()
    assert (spec.path / rf.CHECKPOINT).stat().st_size > 0
    assert any((spec.path / rf.TENSORBOARD).iterdir())


def test_meta_test_runs_on_its_period_and_last_epoch(tmp_path):
    spec = smoke_spec(tmp_path, epochs=5, evaluate_every_n_epochs=2)
    Trainer(spec).run()
    progress = pd.read_csv(spec.path / rf.PROGRESS).set_index(rf.EPOCH)
    evaluated = progress[rf.TEST_RETURN].notna()
    assert list(evaluated[evaluated].index) == [1, 3, 4]


def test_same_seed_identical_different_seed_different(tmp_path):
    runs = [smoke_spec(tmp_path / name, seed=seed) for name, seed in (("a", 0), ("b", 0), ("c", 1))]
    for spec in runs:
        Trainer(spec).run()
    a, b, c = (read_progress(spec) for spec in runs)
    pd.testing.assert_frame_equal(a, b)
    assert not a[rf.RETURN].equals(c[rf.RETURN])


def test_finished_run_is_skipped_and_changed_config_refused(tmp_path):
    spec = smoke_spec(tmp_path)
    Trainer(spec).run()
    before = (spec.path / rf.PROGRESS).read_text()
    assert Trainer(spec).run().skipped
    assert (spec.path / rf.PROGRESS).read_text() == before
    with pytest.raises(ConfigError, match=r"holds a different config.*epochs"):
        Trainer(replace(spec, config=replace(spec.config, epochs=3))).run()
    assert (spec.path / rf.PROGRESS).read_text() == before


def test_resume_from_checkpoint_equals_uninterrupted(tmp_path):
    full = smoke_spec(tmp_path / "full", epochs=4)
    Trainer(full).run()
    part = smoke_spec(tmp_path / "part", epochs=4)

    def stop_after_two(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(part, on_epoch=stop_after_two).run()
    manifest = json.loads((part.path / rf.MANIFEST).read_text())
    assert manifest["status"] == rf.STATUS_INTERRUPTED and manifest["epochs_completed"] == 2
    assert manifest["error"] == (
        "interrupted at epoch 2/4; checkpoint of epoch 2 kept; rerun the same command to resume"
    )
    # a torn, half-written row after the checkpoint must not survive the resume
    with (part.path / rf.PROGRESS).open("a") as handle:
        handle.write("3.0,0.5,")
    Trainer(part).run()
    pd.testing.assert_frame_equal(read_progress(part), read_progress(full))
    assert len(json.loads((part.path / rf.MANIFEST).read_text())["starts"]) == 2


def _tensorboard_points(folder: Path) -> list[tuple[str, int]]:
    """(tag, step) of every scalar in the TFRecord event files under ``folder``."""
    from tensorboardX.proto import event_pb2

    points = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4  # length, its CRC, the record, its CRC
            points += [(value.tag, event.step) for value in event.summary.value]
    return points


def test_resume_writes_each_epoch_to_tensorboard_once(tmp_path):
    """Epochs logged after the last checkpoint are trained again on resume: TensorBoard, like progress.csv,
    must then hold them once, not twice."""
    spec = smoke_spec(tmp_path, epochs=6, checkpoint_every=2)

    def stop_after_three(done: int, total: int) -> None:
        if done == 3:  # epoch 2 logged, the last checkpoint after epoch 1
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(spec, on_epoch=stop_after_three).run()
    Trainer(spec).run()
    points = _tensorboard_points(spec.path / rf.TENSORBOARD)
    returns = sorted(step for tag, step in points if tag == rf.RETURN)
    assert returns == [0, 1, 2, 3, 4, 5]
    assert len(points) == len(set(points))
    assert not (spec.path / f".{rf.TENSORBOARD}.tmp").exists()


def test_non_finite_training_stops_with_a_clear_error(tmp_path):
    spec = smoke_spec(tmp_path, PPO, outer_lr=1e30)
    with pytest.raises(NonFiniteError, match=r"epoch 0 .* produced non-finite values"):
        Trainer(spec).run()
    manifest = json.loads((spec.path / rf.MANIFEST).read_text())
    assert manifest["status"] == rf.STATUS_FAILED and "NonFiniteError" in manifest["error"]
    assert (spec.path / rf.CONFIG).exists() and not (spec.path / rf.CHECKPOINT).exists()


def test_a_diverging_inner_step_stops_before_the_simulator_sees_nan(tmp_path):
    spec = smoke_spec(tmp_path, TRPO, inner_lr=1e30)
    with pytest.raises(NonFiniteError, match=r"epoch 0 .* \(the policy's actions in sampling round 1: "):
        Trainer(spec).run()


def test_unwritable_results_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot create the run folder"):
        Trainer(smoke_spec(blocker)).run()
