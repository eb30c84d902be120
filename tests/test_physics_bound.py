"""The Meta-World benchmark's physics bound (bench/physics_bound.py) replays the episodes the sampler
produced: its controls are the ones a stock environment applies, its first step is the environment's to
the bit."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from bench.physics_bound import CONTROL_SPEC, ReplayBound, idle_seconds, mocap_controls
from maml import policy
from maml.envs import metaworld_tasks as mwt
from maml.envs.metaworld_pool import MetaWorldPool, env_controls, make_env
from maml.wave_sampler import sample_in_waves

SEED = 0
STEPS = 12


@pytest.fixture(scope="module")
def tasks() -> list[mwt.MetaWorldTask]:
    task_set = mwt.load_task_set("ml10")
    return [goals[0] for goals in list(task_set.train.values())[:2]]


def policy_actions(num_tasks: int, scale: float = 1.5) -> np.ndarray:
    """Actions ``[num_tasks, STEPS, 4]`` past [−1, 1] in places (the environment clips them)."""
    return np.random.default_rng(1).uniform(-scale, scale, (num_tasks, STEPS, 4)).astype(np.float32)


def stock_env(task: mwt.MetaWorldTask):
    env = make_env(task.task)
    env.set_task(task.task)
    env.reset(seed=SEED)
    return env


def test_the_controls_are_the_ones_the_environment_applies(tasks):
    """Mocap target, quaternion and gripper controls of each step equal a stock instance's after that step,
    the mocap box included (a large action scale drives the hand into it)."""
    env = stock_env(tasks[0])
    env.action_scale = 0.2  # reaches the mocap box within a few steps
    actions = env_controls(policy_actions(1)[0], 1.0)
    rows = mocap_controls(actions, env.data.mocap_pos[0], env.mocap_low, env.mocap_high, env.action_scale)
    assert rows.shape == (STEPS, mujoco.mj_stateSize(env.model, CONTROL_SPEC))
    clipped = 0
    for t, action in enumerate(actions):
        env.step(action)
        assert np.array_equal(
            rows[t], np.concatenate([env.data.ctrl, env.data.mocap_pos[0], env.data.mocap_quat[0]])
        )
        clipped += bool(np.any(rows[t, 2:5] == env.mocap_low) or np.any(rows[t, 2:5] == env.mocap_high))
    assert clipped > 0
    env.close()


def test_a_replay_starts_as_the_environment_steps_and_stays_close(tasks):
    """The first environment step (``frame_skip`` physics steps) is the stock one to the bit; later ones
    drift by rounding only (the replay runs no ``mj_forward`` between steps)."""
    bound = ReplayBound(tasks, SEED)
    actions = policy_actions(len(tasks))
    bound.set_actions(actions)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    for i, task in enumerate(tasks):
        env = stock_env(task)
        states, seconds = bound.replay(i)
        assert seconds > 0 and states.shape[0] == STEPS * env.frame_skip
        drift = []
        for t, action in enumerate(env_controls(actions[i], 1.0)):
            env.step(action)
            state = np.empty(mujoco.mj_stateSize(env.model, spec))
            mujoco.mj_getState(env.model, env.data, state, spec)
            replayed = states[(t + 1) * env.frame_skip - 1]
            if t == 0:
                assert np.array_equal(state, replayed), task.class_name
            drift.append(np.abs(state - replayed).max())
        assert max(drift) < 1e-6, (task.class_name, drift)
        env.close()
    assert bound.run() > 0 and bound.run([1]) > 0
    bound.close()


def test_the_bound_replays_what_the_sampler_returned(tasks):
    """Episodes of the pool (policy on the worker): their actions set the replay, one episode per task."""
    params = policy.broadcast(policy.init_params(39, 4, (8,), torch.Generator().manual_seed(0)), len(tasks))
    with MetaWorldPool(1) as pool:
        episodes, _ = sample_in_waves(
            pool,
            params,
            tasks,
            episodes_per_task=1,
            max_episode_length=STEPS,
            seed=SEED,
            policy_on_workers=True,
        )
    bound = ReplayBound(tasks, SEED)
    bound.set_actions(episodes.actions[:, 0].numpy())
    assert bound.controls is not None
    for env, control, episode in zip(bound.envs, bound.controls, episodes.actions[:, 0].numpy(), strict=True):
        assert control.shape == (1, STEPS * env.frame_skip, 9)
        first = env_controls(episode[0], 1.0)
        assert np.array_equal(
            control[0, : env.frame_skip, :2], np.tile([first[3], -first[3]], (env.frame_skip, 1))
        )
    bound.close()


def test_a_replay_needs_one_episode_per_task_and_actions_first(tasks):
    bound = ReplayBound(tasks, SEED)
    with pytest.raises(RuntimeError, match="set_actions first"):
        bound.run()
    with pytest.raises(ValueError, match="one episode per task"):
        bound.set_actions(policy_actions(len(tasks) + 1))
    bound.close()


def test_the_idle_bound_runs_each_task(tasks):
    assert 0 < idle_seconds(tasks, horizon=5, seed=SEED, tries=1) < float("inf")
