"""HalfCheetahDir: the physics is gymnasium's HalfCheetah-v5, the batched form is the single env bit for bit,
the reward follows the task's direction."""

from __future__ import annotations

import dataclasses
import importlib
import shutil
import warnings
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from maml.envs import (
    HALF_CHEETAH_DIR_ID,
    HalfCheetahDirBatch,
    HalfCheetahDirConfig,
    HalfCheetahDirEnv,
    native_step,
    sample_directions,
)
from maml.envs.half_cheetah_dir import model_path
from maml.envs.mujoco_batch import ChunkRunner

FORWARD_GAIT_HZ = 3.0
FORWARD_GAIT_PHASES = np.array([0.25, 1.25, 0.0, 0.5, 1.0, 0.75]) * np.pi
"""An open-loop sinusoidal gait (found by a search over phases) that runs the cheetah forwards."""


def forward_gait(step: int, dt: float = 0.05) -> np.ndarray:
    """Policy-unit actions ``[6]`` of the scripted gait at ``step`` (full control range after /10)."""
    return 10.0 * np.sin(2.0 * np.pi * FORWARD_GAIT_HZ * step * dt + FORWARD_GAIT_PHASES)


def random_actions(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Actions in the policy's units, some beyond ±10 so that the clipping is exercised."""
    return rng.normal(0.0, 6.0, size=shape)


def test_model_is_gymnasiums_half_cheetah():
    env = HalfCheetahDirEnv()
    assert model_path().is_relative_to(Path(gymnasium.__file__).parent)
    assert gymnasium.make("HalfCheetah-v5").unwrapped.fullpath == str(model_path())
    assert env.model.nq == env.model.nv == 9 and env.model.nu == 6
    assert env.dt == pytest.approx(0.05)
    assert env.observation_space.shape == (20,) and env.action_space.shape == (6,)


def test_reset_noise_is_gymnasiums():
    ours, theirs = HalfCheetahDirEnv(), gymnasium.make("HalfCheetah-v5").unwrapped
    for seed in (0, 7):
        obs, _ = ours.reset(seed=seed)
        their_obs, _ = theirs.reset(seed=seed)
        np.testing.assert_array_equal(ours.data.qpos, theirs.data.qpos)
        np.testing.assert_array_equal(ours.data.qvel, theirs.data.qvel)
        np.testing.assert_array_equal(obs[:17], their_obs)
    assert np.abs(ours.data.qpos - ours.model.qpos0).max() <= 0.1
    assert not np.array_equal(ours.reset(seed=1)[0], ours.reset(seed=2)[0])


def test_physics_equals_gymnasium_half_cheetah_v5():
    """Same initial state, same simulator-side actions → the same trajectory, exactly."""
    ours, theirs = HalfCheetahDirEnv(direction=-1.0), gymnasium.make("HalfCheetah-v5").unwrapped
    ours.reset(seed=3)
    theirs.reset(seed=11)
    theirs.set_state(ours.data.qpos.copy(), ours.data.qvel.copy())
    torso = theirs.model.body("torso").id
    rng = np.random.default_rng(0)
    for action in random_actions(rng, (60, 6)):
        obs, reward, terminated, truncated, info = ours.step(action)
        ctrl = np.clip(action / 10.0, -1.0, 1.0)
        their_obs, _, _, _, their_info = theirs.step(ctrl)  # v5 feeds its action straight to data.ctrl
        np.testing.assert_array_equal(ours.data.qpos, theirs.data.qpos)
        np.testing.assert_array_equal(ours.data.qvel, theirs.data.qvel)
        np.testing.assert_array_equal(obs[:17], their_obs)
        np.testing.assert_array_equal(obs[17:], theirs.data.xpos[torso])  # garage's get_body_com("torso")
        assert info["reward_forward"] == pytest.approx(-their_info["x_velocity"], abs=1e-12)
        assert info["reward_ctrl"] == pytest.approx(0.5 * their_info["reward_ctrl"], abs=1e-12)
        assert reward == pytest.approx(info["reward_forward"] + info["reward_ctrl"], abs=1e-12)
        assert not terminated and not truncated


def test_batched_equals_single_env():
    num_envs, steps = 6, 40
    directions = np.array([1.0, -1.0, -1.0, 1.0, 1.0, -1.0])
    seeds = [5, 6, 7, 8, 9, 10]
    actions = random_actions(np.random.default_rng(1), (steps, num_envs, 6))
    with HalfCheetahDirBatch(num_envs, num_threads=2) as batch:
        batch_obs = [batch.reset(directions, seeds)]
        batch_rewards, batch_infos = [], []
        for t in range(steps):
            obs, rewards, infos = batch.step(actions[t])
            batch_obs.append(obs)
            batch_rewards.append(rewards)
            batch_infos.append(infos)
    for b in range(num_envs):
        env = HalfCheetahDirEnv(directions[b])
        obs, _ = env.reset(seed=seeds[b])
        worst = np.abs(obs - batch_obs[0][b]).max()
        for t in range(steps):
            obs, reward, _, _, info = env.step(actions[t, b])
            worst = max(
                worst,
                np.abs(obs - batch_obs[t + 1][b]).max(),
                abs(reward - batch_rewards[t][b]),
                abs(info["reward_forward"] - batch_infos[t]["reward_forward"][b]),
                abs(info["reward_ctrl"] - batch_infos[t]["reward_ctrl"][b]),
            )
        assert worst <= 1e-12, f"env {b} differs by {worst}"


def test_thread_count_does_not_change_results():
    """Several chunks per thread, stepped concurrently, give the one-thread answer exactly."""
    num_envs = 64
    directions = sample_directions(np.random.default_rng(2), num_envs)
    seeds = [np.random.SeedSequence(4, spawn_key=(b,)) for b in range(num_envs)]
    actions = random_actions(np.random.default_rng(3), (25, num_envs, 6))
    results = []
    for threads in (1, 3):
        with HalfCheetahDirBatch(num_envs, num_threads=threads) as batch:
            observations = [batch.reset(directions, seeds)]
            observations += [batch.step(a)[0] for a in actions]
        results.append(np.stack(observations))
    np.testing.assert_array_equal(results[0], results[1])


def _rollout(num_envs: int, threads: int, native: bool, steps: int = 25):
    directions = sample_directions(np.random.default_rng(5), num_envs)
    seeds = [np.random.SeedSequence(6, spawn_key=(b,)) for b in range(num_envs)]
    actions = random_actions(np.random.default_rng(7), (steps, num_envs, 6))
    with HalfCheetahDirBatch(num_envs, num_threads=threads, native=native) as batch:
        assert batch.native == native
        observations, rewards = [batch.reset(directions, seeds)], []
        for a in actions:
            obs, reward, _ = batch.step(a)
            observations.append(obs)
            rewards.append(reward)
    return np.stack(observations), np.stack(rewards)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
@pytest.mark.parametrize("threads", [1, 2])
def test_native_loop_equals_python_loop(threads):
    """The compiled stepping loop builds here and gives the Python loop's numbers bit for bit."""
    assert native_step.load() is not None, "the C loop failed to build (see the warning)"
    python = _rollout(48, threads, native=False)
    native = _rollout(48, threads, native=True)
    np.testing.assert_array_equal(native[0], python[0])
    np.testing.assert_array_equal(native[1], python[1])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_reward_sign_follows_direction(seed):
    returns, forward, ctrl = {}, {}, {}
    for direction in (1.0, -1.0):
        env = HalfCheetahDirEnv(direction)
        env.reset(seed=seed)
        infos = [env.step(forward_gait(t))[4] for t in range(100)]
        forward[direction] = sum(i["reward_forward"] for i in infos)
        ctrl[direction] = sum(i["reward_ctrl"] for i in infos)
        returns[direction] = forward[direction] + ctrl[direction]
        assert infos[-1]["x_position"] > 2.0  # the gait really runs forwards
    assert returns[1.0] > 0.0 > returns[-1.0]
    assert forward[1.0] == -forward[-1.0]
    assert ctrl[1.0] == ctrl[-1.0] < 0.0


def test_set_task_and_sample_tasks():
    env = HalfCheetahDirEnv()
    env.reset(seed=0)
    tasks = env.sample_tasks(200)
    assert set(tasks) == {-1.0, 1.0}
    assert 60 < tasks.count(1.0) < 140
    env.set_task(-1.0)
    assert env.get_task() == -1.0
    a = sample_directions(np.random.default_rng(9), 50)
    np.testing.assert_array_equal(a, sample_directions(np.random.default_rng(9), 50))


@pytest.mark.filterwarnings("ignore:.*(recommend using a symmetric|Box observation space):UserWarning")
def test_registered_with_gymnasium_time_limit():
    env = gymnasium.make(HALF_CHEETAH_DIR_ID)
    assert env.spec.max_episode_steps == 100
    env.reset(seed=0)
    truncations = [env.step(env.action_space.sample())[3] for _ in range(100)]
    assert truncations == [False] * 99 + [True]
    check_env(env.unwrapped, skip_render_check=True)


def test_reimporting_the_package_keeps_its_one_registration():
    """Importing ``maml.envs`` registers HalfCheetahDir once: a re-import (``importlib.reload``, a notebook's
    autoreload) neither registers it again (gymnasium would warn that it overrides the entry) nor loses it."""
    import maml.envs

    spec = gymnasium.spec(HALF_CHEETAH_DIR_ID)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(maml.envs)
    assert gymnasium.spec(HALF_CHEETAH_DIR_ID) is spec
    assert spec.entry_point == "maml.envs.half_cheetah_dir:HalfCheetahDirEnv"


def test_bad_inputs_raise_clear_errors():
    env = HalfCheetahDirEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(5))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.full(6, np.nan))
    with pytest.raises(ValueError, match="finite"):
        env.set_task(float("inf"))
    with pytest.raises(ValueError, match="frame_skip"):
        HalfCheetahDirConfig(frame_skip=0)
    with HalfCheetahDirBatch(2, num_threads=1) as batch:
        with pytest.raises(RuntimeError, match="reset"):
            batch.step(np.zeros((2, 6)))
        with pytest.raises(ValueError, match="tasks"):
            batch.reset([1.0], [0, 1])
        with pytest.raises(ValueError, match="seed"):
            batch.reset([1.0, -1.0], [0])
        batch.reset([1.0, -1.0], [0, 1])
        with pytest.raises(ValueError, match=r"shape \(2, 6\)"):
            batch.step(np.zeros((3, 6)))


def test_chunk_runner_runs_each_chunk_once_and_reports_errors():
    runner = ChunkRunner(num_helpers=2)
    seen: list[tuple[int, int]] = []

    def record(chunk: int, worker: int) -> None:
        seen.append((chunk, worker))

    runner.run(record, 50)
    assert sorted(chunk for chunk, _ in seen) == list(range(50))
    assert {worker for _, worker in seen} <= {0, 1, 2}

    def fail_on_seven(chunk: int, worker: int) -> None:
        if chunk == 7:
            raise KeyError("chunk 7")

    with pytest.raises(KeyError, match="chunk 7"):
        runner.run(fail_on_seven, 20)
    seen.clear()
    runner.run(record, 5)  # still usable after an error
    assert sorted(chunk for chunk, _ in seen) == list(range(5))
    runner.close()
    with pytest.raises(RuntimeError, match="closed"):
        runner.run(record, 1)


def test_the_config_accepts_its_boundaries_refuses_beyond_them_and_is_frozen() -> None:
    """One physics step per env step, any positive action scale (below 1 too), zero control cost and zero
    reset noise are valid; nothing below them is; a config cannot be changed once made."""
    accepted = HalfCheetahDirConfig(
        frame_skip=1, action_scale=0.5, ctrl_cost_weight=0.0, reset_noise_scale=0.0
    )
    assert (accepted.frame_skip, accepted.action_scale) == (1, 0.5)
    refused = [
        ({"frame_skip": 0}, "frame_skip must be at least 1"),
        ({"action_scale": 0.0}, "action_scale must be positive"),
        ({"action_scale": float("nan")}, "action_scale must be positive"),
        ({"ctrl_cost_weight": -0.1}, "must be non-negative"),
        ({"reset_noise_scale": -0.1}, "must be non-negative"),
    ]
    for fields, message in refused:
        with pytest.raises(ValueError, match=message):
            HalfCheetahDirConfig(**fields)
    with pytest.raises(dataclasses.FrozenInstanceError):
        accepted.frame_skip = 2  # type: ignore[misc]


def test_the_defaults_a_user_gets() -> None:
    """``HalfCheetahDirEnv()`` runs forward, its action space is ``[−10, 10]⁶`` (garage's action scale), its
    reset reports the torso's x position (``qpos[0]``); a batch steps with the compiled loop by default
    wherever it builds."""
    env = HalfCheetahDirEnv()
    _, info = env.reset(seed=0)
    assert info["direction"] == 1.0
    assert np.array_equal(env.action_space.low, np.full(6, -10.0))
    assert np.array_equal(env.action_space.high, np.full(6, 10.0))
    assert info["x_position"] == float(env.data.qpos[0]) and env.data.qpos[0] != env.data.qpos[1]
    with HalfCheetahDirBatch(2, num_threads=1) as batch:
        assert batch.native == (native_step.load() is not None)
