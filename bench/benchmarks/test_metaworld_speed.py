"""Env-steps per second of the Meta-World wave sampler on ML10 against gymnasium's vector env, measured in
the same rounds (so the ratio compares like with like on a noisy, shared machine).

- ours: :func:`maml.wave_sampler.sample_in_waves` on a :class:`~maml.envs.metaworld_pool.MetaWorldPool`
  with one worker per core (all of them processes, or worker 0 in the calling process): ``NUM_TASKS`` ML10
  train tasks (2 goals of each of the 10 classes), one episode each, one batched policy call per time step of
  a wave;
- gymnasium: ``gym.make_vec("Meta-World/ML10-train", vector_strategy="sync", meta_batch_size=NUM_TASKS)``,
  the same number of environments (one per task) and episodes, with one batched policy call per step (the
  way a gymnasium user samples a meta-batch; ``sample_tasks`` is called, untimed, before each timed reset).

Both time one reset and ``HORIZON`` steps per episode, policy included, and the same policy ((100, 100)
tanh, garage's Meta-World examples). Run with
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

from maml import policy
from maml.envs.metaworld_pool import MetaWorldPool, default_num_workers
from maml.envs.metaworld_tasks import load_task_set, sample_train_tasks
from maml.wave_sampler import sample_in_waves

from .conftest import steps_per_second

NUM_TASKS = 20
"""garage's ML10 meta_batch_size (2 goals × 10 classes); gymnasium's ML10-train needs a multiple of 10."""
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


@pytest.fixture(scope="module")
def ml10_batch():
    """The tasks, the task-batched policy and gymnasium's vector env (built once: ML10 takes ~15 s)."""
    tasks = sample_train_tasks(load_task_set("ml10"), np.random.default_rng(SEED), NUM_TASKS)
    theta = policy.init_params(39, 4, HIDDEN, torch.Generator().manual_seed(SEED))
    venv = gymnasium.make_vec(
        "Meta-World/ML10-train", vector_strategy="sync", meta_batch_size=NUM_TASKS, seed=SEED
    )
    assert venv.num_envs == NUM_TASKS
    yield tasks, policy.broadcast(theta, NUM_TASKS), venv
    venv.close()


@pytest.mark.parametrize("in_process_worker", [False, True], ids=["worker-processes", "worker-0-in-process"])
def test_metaworld_ml10_sampler_speed(benchmark, ml10_batch, in_process_worker):
    tasks, params, venv = ml10_batch
    steps = NUM_TASKS * HORIZON
    num_workers = default_num_workers()
    pool = MetaWorldPool(num_workers, in_process_worker=in_process_worker)
    seconds: dict[str, list[float]] = {"ours": [], "gymnasium": []}
    rounds = iter(range(1000))

    def ours() -> None:
        start = time.perf_counter()
        epoch = next(rounds)
        sample_in_waves(
            pool, params, tasks, episodes_per_task=1, max_episode_length=HORIZON, seed=SEED, epoch=epoch
        )
        seconds["ours"].append(time.perf_counter() - start)

    def reference() -> None:
        # pedantic calls this, untimed, before every round: the reference interleaves with ours
        seconds["gymnasium"].append(gymnasium_steps(venv, params))

    try:
        benchmark.pedantic(ours, setup=reference, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS)
    finally:
        pool.close()
    if benchmark.disabled:
        return
    best, median = steps_per_second(seconds, steps, ROUNDS)
    benchmark.extra_info.update(
        {
            "num_envs": NUM_TASKS,
            "horizon": HORIZON,
            "workers": num_workers,
            "worker_processes": len(pool.pids),
            "cores": default_num_workers(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "device": "cpu",
            "steps_per_s": round(best["ours"]),
            "gymnasium_sync_steps_per_s": round(best["gymnasium"]),
            "speedup_vs_gymnasium": round(best["ours"] / best["gymnasium"], 2),
            "ms_per_step": round(1e3 / best["ours"], 3),
            "gymnasium_ms_per_step": round(1e3 / best["gymnasium"], 3),
            "median_steps_per_s": {name: round(v) for name, v in median.items()},
        }
    )
    print(f"\n{benchmark.extra_info}")
