"""Env-steps per second of the Meta-World wave sampler on ML10, ML1 push and ML45 against gymnasium's vector
env, measured in the same rounds (so the ratio compares like with like on a noisy, shared machine).

- ours: :func:`maml.wave_sampler.sample_in_waves` on a :class:`~maml.envs.metaworld_pool.MetaWorldPool`
  with one worker per core (all of them processes, or worker 0 in the calling process): a meta-batch of
  train tasks (ML10: ``NUM_TASKS``, 2 goals of each of the 10 classes; ML1 push: ``NUM_TASKS`` goals of
  push, several push instances per worker; ML45: ``ML45_TASKS``, one goal per class), one episode each, one
  batched policy call per time step of a wave;
- gymnasium: ``gym.make_vec("Meta-World/ML10-train", vector_strategy="sync", meta_batch_size=NUM_TASKS)``
  (``ML1-train`` with ``env_name="push-v3"``, ``ML45-train``), the same number of environments (one per
  task) and episodes, with one batched policy call per step (the way a gymnasium user samples a meta-batch;
  ``sample_tasks`` is called, untimed, before each timed reset);
- policy here (``policy_here_steps_per_s``, ``speedup_vs_policy_here``): ours with
  ``policy_on_workers=False``, this process calling the policy on the whole wave at every step and sending
  the workers their actions (the path before :mod:`maml.rollouts`; ours runs the policy on each worker).

Both time one reset and ``HORIZON`` steps per episode, policy included, and the same policy ((100, 100)
tanh, garage's Meta-World examples). The physics bound (``physics_bound_steps_per_s``,
``ratio_of_physics_bound``) is MuJoCo alone on the same episodes, as in the HalfCheetahDir benchmark: the
episodes of the previous round of ours replayed open loop by ``mujoco.rollout`` with the controls they
applied (:class:`bench.physics_bound.ReplayBound`; C, no Python, no policy), the tasks' times summed and
divided by the cores, measured in the same rounds (best round): the rate no sampler of these episodes can
beat. ``idle_physics_bound_steps_per_s`` / ``ratio_of_idle_physics_bound`` keep the bound this benchmark
reported until 2026-12-05 (each task stepped from its reset state with the hand still and the gripper
idle, best of 3: cheaper physics than a policy's episodes, so its ratio reads lower). Run with
``pytest bench/benchmarks/test_metaworld_speed.py --benchmark-only``; the speeds, per-step times and
``speedup_vs_gymnasium`` land in the benchmark's ``extra_info``. Goal on a 2-core CPU: ≥ 1.8× gymnasium.
"""

from __future__ import annotations

import os
import time

import gymnasium
import numpy as np
import pytest
import torch

from bench.physics_bound import ReplayBound, idle_seconds
from maml import policy
from maml.envs.metaworld_pool import MetaWorldPool, default_num_workers
from maml.envs.metaworld_tasks import load_task_set, sample_train_tasks
from maml.wave_sampler import assign_slots, plan_waves, sample_in_waves

from .conftest import steps_per_second

NUM_TASKS = 20
"""garage's ML10 and ML1 meta_batch_size (ML10: 2 goals × 10 classes; gymnasium's ML10-train needs a multiple
of 10)."""
ML45_TASKS = 45
"""garage's ML45 meta_batch_size (one goal of each class)."""
HORIZON = 150
"""Steps per episode (a short benchmark; the full profile runs 500)."""
HIDDEN = (100, 100)
"""garage's Meta-World policy."""
ROUNDS = 5
WARMUP_ROUNDS = 1
SEED = 0


def gymnasium_steps(venv: gymnasium.vector.VectorEnv, params: policy.Params) -> float:
    """One batch of ``HORIZON`` steps from a reset, a batched policy call per step → seconds."""
    generator = torch.Generator().manual_seed(SEED)
    std = torch.exp(params["log_std"])
    venv.call("sample_tasks")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        obs, _ = venv.reset(seed=SEED)
        with torch.no_grad():
            for _ in range(HORIZON):
                obs_t = torch.from_numpy(obs).float().unsqueeze(1)
                mean = policy.mean_action(params, obs_t)[:, 0]
                actions = mean + std * torch.randn(mean.shape, generator=generator)
                obs, *_ = venv.step(np.clip(actions.double().numpy(), -1.0, 1.0))
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(previous_threads)


def make_batch(task_set: str, gym_id: str, num_tasks: int, **gym_kwargs):
    """The tasks, the task-batched policy and gymnasium's vector env with one environment per task."""
    tasks = sample_train_tasks(load_task_set(task_set), np.random.default_rng(SEED), num_tasks)
    theta = policy.init_params(39, 4, HIDDEN, torch.Generator().manual_seed(SEED))
    venv = gymnasium.make_vec(
        gym_id, vector_strategy="sync", meta_batch_size=num_tasks, seed=SEED, **gym_kwargs
    )
    assert venv.num_envs == num_tasks
    return task_set, tasks, policy.broadcast(theta, num_tasks), venv


@pytest.fixture(scope="module")
def ml10_batch():
    """ML10 (built once: ML10 takes ~15 s)."""
    batch = make_batch("ml10", "Meta-World/ML10-train", NUM_TASKS)
    yield batch
    batch[-1].close()


@pytest.fixture(scope="module")
def ml1_push_batch():
    """ML1 push: ``NUM_TASKS`` goals of one class."""
    # 40 of the 50 goals: gymnasium's ML1 splits a class's goals evenly over its environments
    gym_kwargs = dict(env_name="push-v3", total_tasks_per_cls=2 * NUM_TASKS)
    batch = make_batch("ml1_push", "Meta-World/ML1-train", NUM_TASKS, **gym_kwargs)
    yield batch
    batch[-1].close()


@pytest.fixture(scope="module")
def ml45_batch():
    """ML45: one goal of each of the 45 train classes."""
    batch = make_batch("ml45", "Meta-World/ML45-train", ML45_TASKS)
    yield batch
    batch[-1].close()


@pytest.mark.parametrize("in_process_worker", [False, True], ids=["worker-processes", "worker-0-in-process"])
def test_metaworld_ml10_sampler_speed(benchmark, ml10_batch, in_process_worker):
    measure(benchmark, ml10_batch, in_process_worker)


def test_metaworld_ml1_push_sampler_speed(benchmark, ml1_push_batch):
    """One class: its episodes share each worker's instances of push (several per worker)."""
    measure(benchmark, ml1_push_batch, in_process_worker=True)


def test_metaworld_ml45_sampler_speed(benchmark, ml45_batch):
    measure(benchmark, ml45_batch, in_process_worker=True)


def measure(benchmark, batch, in_process_worker: bool) -> None:
    """Time ``ROUNDS`` rounds of ours, each after a round of gymnasium's; speeds into ``extra_info``."""
    task_set, tasks, params, venv = batch
    num_tasks = len(tasks)
    steps = num_tasks * HORIZON
    num_workers = default_num_workers()
    pool = MetaWorldPool(num_workers, in_process_worker=in_process_worker)
    groups = [pool.group_of(task) for task in tasks]
    slots = assign_slots(groups, num_workers, pool.step_cost)
    bound = ReplayBound(tasks, SEED)
    seconds: dict[str, list[float]] = {"ours": [], "gymnasium": [], "policy_here": [], "physics": []}
    rounds = iter(range(1000))

    def sample(name: str, policy_on_workers: bool):
        start = time.perf_counter()
        episodes, _ = sample_in_waves(
            pool, params, tasks, episodes_per_task=1, max_episode_length=HORIZON, seed=SEED,
            epoch=next(rounds), policy_on_workers=policy_on_workers,
        )  # fmt: skip
        seconds[name].append(time.perf_counter() - start)
        return episodes

    def ours() -> None:
        bound.set_actions(sample("ours", policy_on_workers=True).actions[:, 0].numpy())

    def reference() -> None:
        # pedantic calls this, untimed, before every round: the references interleave with ours
        seconds["gymnasium"].append(gymnasium_steps(venv, params))
        sample("policy_here", policy_on_workers=False)
        if bound.controls is not None:  # the previous round's episodes, one core's time each
            seconds["physics"].append(bound.run() / default_num_workers())

    try:
        benchmark.pedantic(ours, setup=reference, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS)
    finally:
        pool.close()
        bound.close()
    if benchmark.disabled:
        return
    best, median = steps_per_second(seconds, steps, ROUNDS)
    physics = best.pop("physics")
    median.pop("physics")
    idle = steps / (idle_seconds(tasks, HORIZON, SEED) / default_num_workers())
    benchmark.extra_info.update(
        {
            "task_set": task_set,
            "num_envs": num_tasks,
            "horizon": HORIZON,
            "waves": len(plan_waves(groups, 1, slots)),
            "workers": num_workers,
            "worker_processes": len(pool.pids),
            "cores": default_num_workers(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "device": "cpu",
            "steps_per_s": round(best["ours"]),
            "gymnasium_sync_steps_per_s": round(best["gymnasium"]),
            "speedup_vs_gymnasium": round(best["ours"] / best["gymnasium"], 2),
            "policy_here_steps_per_s": round(best["policy_here"]),
            "speedup_vs_policy_here": round(best["ours"] / best["policy_here"], 2),
            "ms_per_step": round(1e3 / best["ours"], 3),
            "gymnasium_ms_per_step": round(1e3 / best["gymnasium"], 3),
            "median_steps_per_s": {name: round(v) for name, v in median.items()},
            "physics_bound_steps_per_s": round(physics),
            "ratio_of_physics_bound": round(best["ours"] / physics, 3),
            "idle_physics_bound_steps_per_s": round(idle),
            "ratio_of_idle_physics_bound": round(best["ours"] / idle, 3),
        }
    )
    print(f"\n{benchmark.extra_info}")
