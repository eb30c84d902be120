"""Env-steps per second of the HalfCheetahDir sampler, policy call included, against two references
measured in the same rounds (so the ratios compare like with like on a noisy, shared machine):

- gymnasium: ``SyncVectorEnv`` over the same number of ``HalfCheetah-v5`` environments, with one batched
  policy call per step (the way a gymnasium user would sample);
- physics bound: the same batch rolled out open loop by ``mujoco.rollout`` (C, no Python, no policy) on
  the same number of threads, from the same initial states with the controls our sampler applied.

Run with ``pytest bench/benchmarks --benchmark-only``; the three speeds and the two ratios land in the
benchmark's ``extra_info``. Goals on a 2-core CPU: ≥ 3× gymnasium, ≥ 60 % of the physics bound.
"""

from __future__ import annotations

import time

import gymnasium
import mujoco
import numpy as np
import pytest
import torch
from mujoco import rollout

from maml import policy
from maml.envs import HalfCheetahDirBatch, sample_directions
from maml.envs.half_cheetah_dir import load_model, make_rng, reset_state
from maml.sampler import ENV_STREAM, episode_seed, sample_episodes

from .conftest import steps_per_second

NUM_TASKS = 20
"""garage's meta_batch_size for HalfCheetahDir."""
HORIZON = 100
"""garage's max_episode_length."""
HIDDEN = (64, 64)
"""garage's HalfCheetahDir policy."""
WARMUP_ROUNDS = 1
SEED = 0


def gymnasium_steps(
    venv: gymnasium.vector.SyncVectorEnv, params: policy.Params, shape: tuple[int, int]
) -> float:
    """Sample one batch of HORIZON steps in ``venv`` with a batched policy call per step → seconds."""
    num_tasks, num_episodes = shape
    generator = torch.Generator().manual_seed(SEED)
    std = torch.exp(params["log_std"]).unsqueeze(1)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        obs, _ = venv.reset(seed=SEED)
        with torch.no_grad():
            for _ in range(HORIZON):
                obs_t = torch.from_numpy(obs).float().view(num_tasks, num_episodes, -1)
                mean = policy.mean_action(params, obs_t)
                actions = mean + std * torch.randn(mean.shape, generator=generator)
                ctrl = np.clip(actions.view(num_tasks * num_episodes, -1).numpy() / 10.0, -1.0, 1.0)
                obs, *_ = venv.step(ctrl)
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(previous_threads)


class PhysicsBound:
    """Open-loop ``mujoco.rollout`` of the same batch on ``num_threads`` threads."""

    def __init__(self, num_tasks: int, episodes_per_task: int, num_threads: int) -> None:
        num_envs = num_tasks * episodes_per_task
        self.model = load_model()
        self.num_envs = num_envs
        self.rollout = rollout.Rollout(nthread=num_threads)
        self.data = [mujoco.MjData(self.model) for _ in range(max(num_threads, 1))]
        spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        nstate = mujoco.mj_stateSize(self.model, spec)
        self.initial_state = np.empty((num_envs, nstate))
        data = mujoco.MjData(self.model)
        for b in range(num_envs):
            seed = episode_seed(SEED, 0, 0, b // episodes_per_task, b % episodes_per_task, ENV_STREAM)
            qpos, qvel = reset_state(make_rng(seed), self.model.qpos0, 0.1)
            mujoco.mj_resetData(self.model, data)
            data.qpos[:], data.qvel[:] = qpos, qvel
            mujoco.mj_forward(self.model, data)
            mujoco.mj_getState(self.model, data, self.initial_state[b], spec)
        self.nstep = HORIZON * 5
        self.control = np.zeros((num_envs, self.nstep, self.model.nu))
        self.state = np.empty((num_envs, self.nstep, nstate))
        self.sensordata = np.empty((num_envs, self.nstep, 0))

    def set_controls(self, actions: torch.Tensor) -> None:
        """Policy actions ``[T, E, H, 6]`` → the controls each physics step holds (frame_skip 5)."""
        ctrl = np.clip(actions.reshape(self.num_envs, HORIZON, -1).double().numpy() / 10.0, -1.0, 1.0)
        self.control[:] = np.repeat(ctrl, 5, axis=1)

    def run(self) -> float:
        """Roll the batch out → seconds."""
        start = time.perf_counter()
        self.rollout.rollout(
            [self.model] * self.num_envs,
            self.data,
            self.initial_state,
            self.control,
            skip_checks=True,
            nstep=self.nstep,
            state=self.state,
            sensordata=self.sensordata,
        )
        return time.perf_counter() - start


@pytest.mark.parametrize(("episodes_per_task", "rounds"), [(10, 5), (40, 3)])
def test_sampler_speed(benchmark, episodes_per_task, rounds):
    num_envs = NUM_TASKS * episodes_per_task
    steps = num_envs * HORIZON
    generator = torch.Generator().manual_seed(SEED)
    params = policy.broadcast(policy.init_params(20, 6, HIDDEN, generator), NUM_TASKS)
    gym_params = policy.broadcast(policy.init_params(17, 6, HIDDEN, generator), NUM_TASKS)
    tasks = sample_directions(np.random.default_rng(SEED), NUM_TASKS).tolist()
    env = HalfCheetahDirBatch(num_envs)
    venv = gymnasium.vector.SyncVectorEnv([lambda: gymnasium.make("HalfCheetah-v5")] * num_envs)
    bound = PhysicsBound(NUM_TASKS, episodes_per_task, env.num_threads)
    seconds: dict[str, list[float]] = {"ours": [], "gymnasium": [], "physics": []}

    def ours() -> None:
        start = time.perf_counter()
        episodes, _ = sample_episodes(
            env, params, tasks, episodes_per_task=episodes_per_task, max_episode_length=HORIZON, seed=SEED
        )
        seconds["ours"].append(time.perf_counter() - start)
        bound.set_controls(episodes.actions)

    def references() -> None:
        # pedantic calls this, untimed, before every round: the references interleave with ours
        seconds["gymnasium"].append(gymnasium_steps(venv, gym_params, (NUM_TASKS, episodes_per_task)))
        if seconds["ours"]:
            seconds["physics"].append(bound.run())

    try:
        benchmark.pedantic(ours, setup=references, rounds=rounds, warmup_rounds=WARMUP_ROUNDS)
    finally:
        env.close()
        venv.close()
    if benchmark.disabled:
        return
    best, median = steps_per_second(seconds, steps, rounds)
    benchmark.extra_info.update(
        {
            "num_envs": num_envs,
            "threads": env.num_threads,
            "device": "cpu",
            "steps_per_s": round(best["ours"]),
            "gymnasium_sync_steps_per_s": round(best["gymnasium"]),
            "physics_bound_steps_per_s": round(best["physics"]),
            "speedup_vs_gymnasium": round(best["ours"] / best["gymnasium"], 2),
            "ratio_of_physics_bound": round(best["ours"] / best["physics"], 3),
            "median_steps_per_s": {name: round(v) for name, v in median.items()},
        }
    )
    print(f"\n{benchmark.extra_info}")
