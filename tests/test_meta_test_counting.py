"""The meta-test's success rate is the mean over every planned episode, even when successes come first.

metaworld 3.1.1's own ``evaluation.py`` ends an episode on success, starts the next one in the freed
environment and stops once every task name has its evaluation episodes: successful (short) episodes are
counted first, failures late or never, and the rate is biased upwards (Farama-Foundation/Metaworld PR #577,
open). Our meta-test runs every episode for its full length and divides by the number of planned episodes.
Here half the tasks are pushed to success by Meta-World's scripted policy (well before the episode's
end) and the other half stand still: the rate must be exactly the fraction of successful episodes among
all of them, with every episode run to its end.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import torch
from test_metaworld import SCRIPTED_WARNING, observable, replay, scripted_push

import bench.run.trainer
from bench import run_format as rf
from bench.run.experiments import preset
from bench.run.families import MetaWorldFamily
from bench.run.trainer import RunSpec, Trainer, _episode_rows
from maml import policy
from maml.envs.metaworld_pool import ACT_DIM, OBS_DIM, MetaWorldPool
from maml.sampler import ENV_STREAM, episode_seed
from maml.wave_sampler import sample_in_waves

HORIZON = 100
GOAL = slice(36, 39)  # the goal position in an observable task's observation


def pushed_or_still(params: policy.Params, obs: torch.Tensor, goals: list[np.ndarray]) -> torch.Tensor:
    """Meta-World's scripted push for episodes whose goal is in ``goals``; a zero action for the others."""
    pushed = scripted_push(params, obs)
    chosen = [any(np.allclose(o[GOAL], g) for g in goals) for o in obs[:, 0].double().numpy()]
    return torch.where(torch.tensor(chosen).view(-1, 1, 1), pushed, torch.zeros_like(pushed))


@pytest.fixture(scope="module")
def setting():
    config = replace(
        preset("maml_trpo_metaworld_ml1_push", "smoke"),
        max_episode_length=HORIZON,
        test_tasks=4,
        test_adaptation_episodes=2,
        test_episodes=3,
    )
    family = MetaWorldFamily("ml1_push", config.action_scale)
    tasks = [observable(t) for t in family.test_tasks(np.random.default_rng(1), config.test_tasks)]
    goals = [replay(t, np.random.SeedSequence(0), np.zeros((1, ACT_DIM)), 1.0)[0][0, GOAL] for t in tasks[:2]]
    with MetaWorldPool(1) as pool:
        yield config, family, tasks, goals, pool


@pytest.mark.filterwarnings(SCRIPTED_WARNING)
def test_sampled_successes_count_over_every_planned_episode(setting):
    _, family, tasks, goals, pool = setting
    params = {"w0": torch.zeros(4, OBS_DIM, 1), "log_std": torch.full((4, ACT_DIM), -20.0)}
    episodes_before, steps_before = pool.episodes["push-v3"], pool.env_steps["push-v3"]
    episodes, stats = sample_in_waves(
        pool, params, tasks, episodes_per_task=3, max_episode_length=HORIZON, seed=5,
        mean_action_fn=partial(pushed_or_still, goals=goals),
    )  # fmt: skip
    success = stats.env_infos["success"]
    # the pushed tasks succeed in every episode, the still ones in none
    assert (success[:2] == 1).all() and (success[2:] == 0).all()
    # every planned episode ran once and to its end, successful or not
    assert pool.episodes["push-v3"] - episodes_before == 12
    assert pool.env_steps["push-v3"] - steps_before == 12 * HORIZON == stats.num_env_steps
    assert episodes.observations.shape[:3] == (4, 3, HORIZON)
    # success comes well before the end: an evaluation that ends episodes on success would restart this one
    seed = episode_seed(5, 0, 0, 0, 0, ENV_STREAM)
    _, _, per_step = replay(tasks[0], seed, episodes.actions[0, 0].double().numpy(), 1.0)
    first = int(np.argmax(per_step))
    assert per_step[first] == 1 and first < HORIZON * 3 // 4  # step 61 of 100
    row: dict[str, float] = {}
    _episode_rows("MetaTest/", stats, family, ["push-v3"] * 4, row)
    assert row[rf.TEST_SUCCESS] == 0.5 == success.mean()
    assert row[rf.class_key("push-v3", "SuccessRate", True)] == 0.5


@pytest.mark.filterwarnings(SCRIPTED_WARNING)
def test_meta_test_rate_is_over_every_planned_episode(setting, monkeypatch, tmp_path):
    """bench.run.trainer's meta-test (adaptation disabled) on the same half-pushed, half-still tasks."""
    config, family, tasks, goals, pool = setting
    trainer = Trainer(RunSpec("maml_trpo_metaworld_ml1_push", "smoke", 0, config, tmp_path, threads=1))
    theta = policy.init_params(OBS_DIM, ACT_DIM, config.hidden_sizes, torch.Generator().manual_seed(0))
    theta["log_std"].fill_(-20.0)
    selective = partial(pushed_or_still, goals=goals)
    waves = partial(sample_in_waves, mean_action_fn=selective)
    monkeypatch.setattr(bench.run.trainer, "sample_in_waves", waves)
    monkeypatch.setattr(bench.run.trainer.meta, "inner_step", lambda params, *args, **kwargs: params)
    before = pool.episodes["push-v3"]
    row = trainer._meta_test(family, tasks, (pool, pool), theta, epoch=0)
    # 4 tasks × (2 adaptation episodes before and after the disabled step + 3 test episodes)
    assert pool.episodes["push-v3"] - before == 4 * (2 * 2 + 3)
    assert row[rf.TEST_SUCCESS] == 0.5 and row[rf.TEST_PRE_SUCCESS] == 0.5
    assert row[rf.class_key("push-v3", "SuccessRate", True)] == 0.5
