"""The trainer's bookkeeping: per-phase seconds, the meta-test's protocol, the columns of skipped meta-tests.

Each test runs a tiny :class:`bench.run.trainer.Trainer` in-process (a second or two) and checks what a user
reads in ``progress.csv`` and ``manifest.json``, or what the meta-test's docstring promises.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench import run_format as rf
from bench.run.experiments import preset
from bench.run.trainer import EVAL_ROUND, TEST_ROUND, RunSpec, Trainer, meta_test_env_steps
from maml import meta

HALF_CHEETAH = "maml_trpo_half_cheetah_dir"
ML1_PUSH = "maml_trpo_metaworld_ml1_push"
PHASES = ("Sampling", "Adaptation", "OuterStep", "Evaluation")
"""The phases of an epoch, timed one after the other (``Epoch`` is the whole)."""


def smoke_run_spec(tmp_path: Path, experiment: str = HALF_CHEETAH, **changes: object) -> RunSpec:
    """The ``smoke`` profile of ``experiment`` with ``changes``, one thread, in ``tmp_path``."""
    config = replace(preset(experiment, "smoke"), **changes)
    return RunSpec(experiment, "smoke", 0, config, tmp_path, threads=1)


def test_phase_seconds_are_disjoint_parts_of_each_epoch(tmp_path: Path) -> None:
    """``Time/<phase>`` of every epoch is positive where the phase ran (Evaluation: 0 without a meta-test),
    and the phases, timed one after the other, add up to no more than ``Time/Epoch``; the manifest's
    ``phase_seconds`` are the columns' sums."""
    spec = smoke_run_spec(tmp_path, epochs=2, evaluate_every_n_epochs=2)  # the meta-test at epoch 1 only
    summary = Trainer(spec).run()
    progress = pd.read_csv(spec.path / rf.PROGRESS).set_index(rf.EPOCH)
    times = progress[[rf.TIME_PREFIX + p for p in (*PHASES, "Epoch")]].rename(columns=lambda c: c[5:])
    for epoch, row in times.iterrows():
        assert row["Sampling"] > 0 and row["Adaptation"] > 0 and row["OuterStep"] > 0, epoch
        assert (row["Evaluation"] > 0) == (epoch == 1), epoch
        assert row["Evaluation"] >= 0
        assert sum(row[p] for p in PHASES) <= row["Epoch"], epoch
    manifest = json.loads((spec.path / rf.MANIFEST).read_text())
    seconds = manifest["phase_seconds"]  # rounded to milliseconds
    for phase in (*PHASES, "Epoch"):
        assert seconds[phase] == pytest.approx(times[phase].sum(), abs=1e-3), phase
    assert sum(seconds[p] for p in PHASES) <= seconds["Epoch"] + 0.004
    assert manifest["seconds_per_epoch"] == pytest.approx(times["Epoch"].mean(), abs=1e-3)
    assert summary.epoch_seconds == pytest.approx(times["Epoch"].mean())


@dataclass
class _Sampled:
    episodes: int
    sampling_round: int
    params: dict[str, torch.Tensor]
    env_steps: int


def test_meta_test_adapts_step_by_step_and_evaluates_once_after_num_grad_updates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``test_adapt_steps=3`` and one inner step in training, the meta-test samples adaptation episodes
    with θ and after each of 3 inner steps (no step after the last sampling), its test episodes once, with
    the parameters after ``num_grad_updates`` steps, in sampling rounds of its own; ``progress.csv`` holds
    ``MetaTest/AdaptStep0 … 3`` and the environment steps are ``meta_test_env_steps``'s, by hand:
    2 tasks × (3 adaptation episodes × 4 + 1 test episode) × 10 steps = 260."""
    # episodes per task tell the samplings apart: training 2, meta-test adaptation 3, meta-test test 1
    spec = smoke_run_spec(
        tmp_path,
        epochs=1,
        num_grad_updates=1,
        test_adapt_steps=3,
        test_tasks=2,
        episodes_per_task=2,
        test_adaptation_episodes=3,
        test_episodes=1,
    )
    trainer = Trainer(spec)
    events: list[_Sampled | str] = []
    sample = trainer._sample

    def recorded_sample(env, params, tasks, episodes: int, epoch: int, sampling_round: int):
        result = sample(env, params, tasks, episodes, epoch, sampling_round)
        cloned = {n: p.detach().clone() for n, p in params.items()}
        events.append(_Sampled(episodes, sampling_round, cloned, result[1].num_env_steps))
        return result

    inner_step = meta.inner_step

    def recorded_inner_step(*args, **kwargs) -> dict[str, torch.Tensor]:
        events.append("inner step")
        return inner_step(*args, **kwargs)

    monkeypatch.setattr(trainer, "_sample", recorded_sample)
    monkeypatch.setattr(meta, "inner_step", recorded_inner_step)
    trainer.run()

    first = next(i for i, e in enumerate(events) if isinstance(e, _Sampled) and e.episodes == 3)
    training = [e for e in events[:first] if isinstance(e, _Sampled)]
    meta_test = events[first:]
    adaptation = [e for e in meta_test if isinstance(e, _Sampled) and e.episodes == 3]
    test = [e for e in meta_test if isinstance(e, _Sampled) and e.episodes == 1]
    assert [e.episodes for e in training] == [2, 2]
    assert len(adaptation) == 4 and len(test) == 1
    assert meta_test.count("inner step") == 3 and meta_test[-1] != "inner step"
    # θ (the checkpoint's, after the epoch's outer step), then a different policy after every step
    theta = torch.load(spec.path / rf.CHECKPOINT, weights_only=True)["theta"]
    for name, value in theta.items():
        assert torch.equal(adaptation[0].params[name], value.expand_as(adaptation[0].params[name]))
    for before, after in pairwise(adaptation):
        assert not torch.equal(before.params["log_std"], after.params["log_std"])
    # the test episodes run the policy adapted by num_grad_updates = 1 step, not θ nor a later one
    for name, value in test[0].params.items():
        assert torch.equal(value, adaptation[1].params[name]), name
    # rounds: training 0 … num_grad_updates; the meta-test's own from TEST_ROUND up, all different
    assert [e.sampling_round for e in training] == [0, 1]
    rounds = [e.sampling_round for e in adaptation]
    assert len(set(rounds)) == 4 and all(TEST_ROUND <= r < EVAL_ROUND for r in rounds)
    assert test[0].sampling_round == EVAL_ROUND
    steps = sum(e.env_steps for e in adaptation + test)
    assert steps == 2 * (3 * 4 + 1) * 10 == meta_test_env_steps(spec.config)
    progress = pd.read_csv(spec.path / rf.PROGRESS)
    adapt_steps = {c for c in progress.columns if c.startswith("MetaTest/AdaptStep")}
    assert adapt_steps == {rf.adapt_step_key(k) for k in range(4)}
    assert progress[rf.adapt_step_key(3)].notna().all() and progress[rf.TEST_RETURN].notna().all()


def test_skipped_meta_test_leaves_its_columns_empty_and_training_columns_whole(tmp_path: Path) -> None:
    """A Meta-World run whose first epoch skips the meta-test: that row holds every meta-test column of the
    evaluated epoch (returns and success rates, overall and per class) as NaN, and its training success
    rates untouched."""
    spec = smoke_run_spec(tmp_path, ML1_PUSH, epochs=2, evaluate_every_n_epochs=2)  # the meta-test at epoch 1
    Trainer(spec).run()
    progress = pd.read_csv(spec.path / rf.PROGRESS).set_index(rf.EPOCH)
    meta_test = [c for c in progress.columns if c.startswith("MetaTest/")]
    expected = [rf.adapt_step_key(0), rf.adapt_step_key(1), rf.TEST_RETURN, rf.TEST_PRE_RETURN]
    expected += [rf.TEST_SUCCESS, rf.TEST_PRE_SUCCESS]
    expected += [rf.class_key("push-v3", m, True) for m in ("AverageReturn", "SuccessRate")]
    assert sorted(meta_test) == sorted(expected)
    assert progress.loc[0, meta_test].isna().all()
    assert progress.loc[1, meta_test].notna().all()
    training = [rf.SUCCESS, rf.PRE_SUCCESS, rf.class_key("push-v3", "SuccessRate")]
    for epoch in (0, 1):
        assert all(0 <= progress.loc[epoch, c] <= 1 for c in training), epoch
    assert not any(
        math.isnan(progress.loc[0, c]) for c in (rf.RETURN, rf.class_key("push-v3", "AverageReturn"))
    )
