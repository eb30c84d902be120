"""What sampling one Meta-World run on Ray actors costs (issue 16): steps/s on the local pool and on
:class:`~maml.envs.ray_pool.RayMetaWorldPool` with 1 and 2 workers, the per-wave-step overhead, and the
driver's own work per wave step; the inputs of the scaling model in :mod:`bench.scaling`.

Design:

- **Throughput** (``test_sampler_steps_per_s``): ML45's 45 train classes, one goal and ``EPISODES`` episodes
  each, ``HORIZON`` steps, sampled with :func:`maml.wave_sampler.sample_in_waves` on four pools: local with
  1 worker (in process) and 2 workers (worker 0 in process), Ray with 1 and 2 actors. The same tasks, seeds
  and epochs on all four, so the episodes must be the same bits (asserted for every round). Ray's actors are
  :class:`_TimedActor` s: the pool's actor with a clock around its ``reset`` and ``step`` work (the
  ``_Runner`` calls alone, not Ray's (de)serialisation, which is overhead), so each round splits exactly into

  ``wall = policy + env + overhead``, with *policy* the driver's ``mean_action`` calls (a timing wrapper
  passed as ``mean_action_fn``), *env* the critical path of the actors (per wave step, the slowest actor's
  step work; per wave, the slowest actor's reset work) and *overhead* the rest: the remote calls (submit,
  transfer, wake-up, reply), the sampler's bookkeeping and gathering. ``overhead_ms_per_wave_step`` is
  that rest over the wave steps. The local pool's worker 0 runs in the driver and is timed the same way
  (its ``_Runner`` methods wrapped); its spawned worker 1 is not, so for "local, 2 workers" only steps/s
  and wall time per wave step are given (``ray_minus_local_ms_per_wave_step`` compares like with like: the
  same episodes and waves on 2 workers). Each round also runs every pool with the policy on the workers
  (``policy_on_workers=True``, :mod:`maml.rollouts`, the default elsewhere; the timed rounds above pass
  ``False``): ``<pool>_rollout`` gives its steps/s (wall time only: the work happens inside one call per
  worker) and ``speedup_vs_policy_on_driver``; its episodes are asserted equal too.
- **Call overhead** (``test_ray_call_overhead``): 1 or 40 reach-v3 episodes per worker (0.28 or ~11 ms of
  physics per step), ``pool.step`` called directly ``CALL_STEPS`` times with fixed actions, no policy: per
  wave step, wall minus the slowest actor's step work (median and 10th percentile over steps; the median is
  robust to the load's spikes), and (Ray) the driver process's CPU time per wave step
  (``time.process_time``: all its threads, Ray's included). The increase of that CPU time from 1 to 2 actors
  (1 episode each) is the model's ``b``: what the driver spends per remote call, serially, for every actor;
  the 1-actor overhead with 40 episodes, less ``b``, is its ``a`` (the calls' latency, measured where the
  driver waits as long as in a big wave: on a loaded machine waking up after a long wait costs more).
- **Driver work per wave step** (``test_driver_work_per_wave_step``): ``sample_in_waves`` on a
  :class:`NullEnv` that answers at once, one wave of ``n`` episodes for ``n`` up to 4,050, at two horizons
  (their difference: the work per wave step; the rest: per wave): the policy call
  on per-episode parameters plus the sampler's bookkeeping, everything the driver does per wave step besides
  the pool call; and the bare ``policy.mean_action`` call on ``[n, 39]`` for comparison.

Run (about 4 minutes on the loaded 2-core machine):

    pytest bench/benchmarks/test_ray_sampler_speed.py -p no:cacheprovider --benchmark-only -s \\
        --benchmark-json=results/bench/ray-sampler-cpu.json

Best rounds are the headline (other work only ever adds time); medians in ``extra_info`` for reference.
``load_average_1min`` says how busy the machine was.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import fields
from typing import Any

import numpy as np
import pytest
import ray
import torch
from numpy.typing import NDArray

from maml import policy
from maml.envs.metaworld_pool import STEP_COST_MS, MetaWorldPool
from maml.envs.metaworld_tasks import load_task_set, sample_train_tasks
from maml.envs.ray_pool import RayMetaWorldPool, _SamplerActor
from maml.wave_sampler import assign_slots, plan_waves, sample_in_waves

HIDDEN = (100, 100)
"""garage's Meta-World policy."""
SEED = 0
EPISODES = 1
"""Episodes per task in the throughput test (45 tasks: one wave of 45 on 1 or 2 workers)."""
HORIZON = 100
"""Steps per episode in the throughput test (the full profile runs 500; the waves do not depend on it)."""
ROUNDS = 5
WARMUP_ROUNDS = 1
CALL_STEPS = 500
"""Wave steps of the call-overhead test."""
CALL_EPISODES = (1, 40)
"""Reach-v3 episodes per worker in the call-overhead test."""
DRIVER_EPISODES = (1, 45, 225, 990, 2025, 4050)
"""Running episodes of the driver test: 2025 is ML45's full meta-batch (45 × 45) in one wave."""
DRIVER_SHORT = 10
"""The shorter of the driver test's two horizons."""
DRIVER_STEPS = 20_000
"""The longer horizon holds about this many episode-steps (at least 40 steps, at most 500)."""
CONFIGS = (("local", 1), ("local", 2), ("ray", 1), ("ray", 2))


# --- instrumented pools -------------------------------------------------------------------------------
class _TimedActor(_SamplerActor):
    """The pool's actor with a clock around its reset and step work (seconds, one entry per call)."""

    def __init__(self, action_scale: float, fast: bool) -> None:
        super().__init__(action_scale, fast)
        self.step_s: list[float] = []
        self.reset_s: list[float] = []

    def reset(self, payload):
        start = time.perf_counter()
        reply = super().reset(payload)
        self.reset_s.append(time.perf_counter() - start)
        return reply

    def step(self, actions):
        start = time.perf_counter()
        reply = super().step(actions)
        self.step_s.append(time.perf_counter() - start)
        return reply

    def take_times(self) -> tuple[list[float], list[float]]:
        """``(reset seconds, step seconds)`` since the last call, then forgotten."""
        times = (self.reset_s, self.step_s)
        self.reset_s, self.step_s = [], []
        return times


_TimedRemote = ray.remote(_TimedActor)


class TimedRayPool(RayMetaWorldPool):
    """:class:`RayMetaWorldPool` on :class:`_TimedActor` s."""

    def _new_actor(self) -> Any:
        return _TimedRemote.options(**self._options).remote(*self._args)

    def take_times(self) -> list[tuple[list[float], list[float]]]:
        """Each actor's ``(reset seconds, step seconds)`` since the last call."""
        return ray.get([actor.take_times.remote() for actor in self._actors])


class TimedLocalPool(MetaWorldPool):
    """:class:`MetaWorldPool` whose in-process worker 0 is timed as :class:`_TimedActor` is; worker
    processes are not (``take_times`` gives worker 0's times only)."""

    def __init__(self, num_workers: int) -> None:
        super().__init__(num_workers, in_process_worker=True)
        self.reset_s: list[float] = []
        self.step_s: list[float] = []
        runner = self._local
        assert runner is not None
        reset, step = runner.reset, runner.step
        runner.reset = self._timed(reset, self.reset_s)  # instance attributes: handle() calls self.reset
        runner.step = self._timed(step, self.step_s)

    @staticmethod
    def _timed(method: Callable, into: list[float]) -> Callable:
        def timed(payload):
            start = time.perf_counter()
            try:
                return method(payload)
            finally:
                into.append(time.perf_counter() - start)

        return timed

    def take_times(self) -> list[tuple[list[float], list[float]]]:
        times = [(self.reset_s[:], self.step_s[:])]
        self.reset_s.clear()
        self.step_s.clear()
        return times


def make_pool(kind: str, workers: int) -> TimedRayPool | TimedLocalPool:
    return TimedRayPool(workers) if kind == "ray" else TimedLocalPool(workers)


def critical_path(times: Sequence[tuple[list[float], list[float]]]) -> tuple[float, float]:
    """``(reset, step)`` seconds on the critical path: per call, the slowest worker (workers that ran no
    episode in a wave made no call then; the calls line up because every busy worker is called at each
    step of its waves, and the workers here are busy in every wave)."""
    resets = [r for r, _ in times if r]
    steps = [s for _, s in times if s]
    reset = sum(map(max, zip(*resets, strict=True))) if resets else 0.0
    step = sum(map(max, zip(*steps, strict=True))) if steps else 0.0
    return reset, step


class TimedPolicy:
    """``policy.mean_action`` with a clock (seconds summed over calls)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, params, obs):
        start = time.perf_counter()
        try:
            return policy.mean_action(params, obs)
        finally:
            self.seconds += time.perf_counter() - start


# --- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray (as tests/test_ray_pool.py): the actors are real processes on this machine. Ray's CPUs
    are logical: 3 hold the 1-actor and 2-actor pools that the throughput test keeps side by side (only one
    of them runs at a time)."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def ml45_batch():
    """One goal of each ML45 train class, and a task-batched policy."""
    tasks = sample_train_tasks(load_task_set("ml45"), np.random.default_rng(SEED), 45)
    theta = policy.init_params(39, 4, HIDDEN, torch.Generator().manual_seed(SEED))
    return tasks, policy.broadcast(theta, len(tasks))


def load() -> float:
    return round(os.getloadavg()[0], 2)


# --- throughput -----------------------------------------------------------------------------------------
def test_sampler_steps_per_s(benchmark, ray_instance, ml45_batch) -> None:
    """Steps/s and the split of each round into policy, env and overhead, for the four pools (module
    docstring). All configurations run inside each timed round, in turn, so the load hits them alike."""
    tasks, params = ml45_batch
    steps = len(tasks) * EPISODES * HORIZON
    groups = [MetaWorldPool.group_of(task) for task in tasks]
    pools = {}
    try:
        for kind, workers in CONFIGS:
            pools[kind, workers] = make_pool(kind, workers)
        rounds: dict[tuple[str, int], list[dict[str, float]]] = {key: [] for key in pools}
        rollout_walls: dict[tuple[str, int], list[float]] = {key: [] for key in pools}
        reference: dict[int, Any] = {}
        counter = iter(range(1000))

        def one_round() -> None:
            epoch = next(counter)
            for key, pool in pools.items():
                pool.take_times()
                timed_policy = TimedPolicy()
                start, cpu = time.perf_counter(), time.process_time()
                episodes, stats = sample_in_waves(
                    pool, params, tasks, episodes_per_task=EPISODES, max_episode_length=HORIZON,
                    seed=SEED, epoch=epoch, mean_action_fn=timed_policy, policy_on_workers=False,
                )  # fmt: skip
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu
                times = pool.take_times()
                reset, env = critical_path(times)
                busy = sum(sum(s) for _, s in times)  # step work summed over the timed workers
                rounds[key].append(
                    {"wall": wall, "policy": timed_policy.seconds, "env": env, "reset": reset, "cpu": cpu}
                    | {"busy": busy}
                )
                if epoch not in reference:
                    reference[epoch] = (episodes, stats)
                else:
                    assert_same((episodes, stats), reference[epoch], key)
                start = time.perf_counter()  # the same round with the policy on the workers
                rolled = sample_in_waves(
                    pool, params, tasks, episodes_per_task=EPISODES, max_episode_length=HORIZON,
                    seed=SEED, epoch=epoch, policy_on_workers=True,
                )  # fmt: skip
                rollout_walls[key].append(time.perf_counter() - start)
                assert_same(rolled, reference[epoch], (*key, "rollout"))

        benchmark.pedantic(one_round, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS)
    finally:
        for pool in pools.values():
            pool.close()
    if benchmark.disabled:
        return
    info: dict[str, Any] = {
        "task_set": "ml45",
        "tasks": len(tasks),
        "episodes_per_task": EPISODES,
        "horizon": HORIZON,
        "steps_per_round": steps,
        "load_average_1min": load(),
        "cores": len(os.sched_getaffinity(0)),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "policy_threads": 1,
        "model_env_ms_per_step_sum": round(sum(STEP_COST_MS[g] for g in groups), 3),
    }
    for (kind, workers), measured in rounds.items():
        slots = assign_slots(groups, workers, MetaWorldPool.step_cost, EPISODES)
        waves = plan_waves(groups, EPISODES, slots)
        wave_steps = len(waves) * HORIZON
        best = min(measured[-ROUNDS:], key=lambda r: r["wall"])
        median_wall = statistics.median(r["wall"] for r in measured[-ROUNDS:])
        timed_all = kind == "ray" or workers == 1
        row = {
            "workers": workers,
            "waves": len(waves),
            "steps_per_s": round(steps / best["wall"]),
            "median_steps_per_s": round(steps / median_wall),
            "per_worker_steps_per_s": round(steps / best["wall"] / workers),
            "ms_per_wave_step": round(1e3 * best["wall"] / wave_steps, 3),
            "policy_ms_per_wave_step": round(1e3 * best["policy"] / wave_steps, 3),
            "driver_cpu_ms_per_wave_step": round(1e3 * best["cpu"] / wave_steps, 3),
        }
        if timed_all:
            overhead = best["wall"] - best["policy"] - best["env"] - best["reset"]
            row |= {
                "env_ms_per_wave_step": round(1e3 * best["env"] / wave_steps, 3),
                "reset_ms_per_wave": round(1e3 * best["reset"] / len(waves), 3),
                "overhead_ms_per_wave_step": round(1e3 * overhead / wave_steps, 3),
                "env_steps_per_s_per_busy_worker": round(steps / best["busy"]),
            }
        info[f"{kind}_{workers}"] = row
        best_rollout = min(rollout_walls[kind, workers][-ROUNDS:])
        info[f"{kind}_{workers}_rollout"] = {
            "workers": workers,
            "waves": len(waves),
            "steps_per_s": round(steps / best_rollout),
            "median_steps_per_s": round(steps / statistics.median(rollout_walls[kind, workers][-ROUNDS:])),
            "ms_per_wave_step": round(1e3 * best_rollout / wave_steps, 3),
            "speedup_vs_policy_on_driver": round(best["wall"] / best_rollout, 2),
        }
    info["ray_minus_local_ms_per_wave_step"] = {
        str(w): round(info[f"ray_{w}"]["ms_per_wave_step"] - info[f"local_{w}"]["ms_per_wave_step"], 3)
        for w in (1, 2)
    }
    benchmark.extra_info.update(info)
    print(f"\n{info}")


def assert_same(run, reference, key) -> None:
    """The same episodes on every pool (the WaveEnv contract): every tensor and statistic bit for bit."""
    episodes, stats = run
    ref_episodes, ref_stats = reference
    for f in fields(episodes):
        value = getattr(episodes, f.name)
        if value is not None:
            assert torch.equal(value, getattr(ref_episodes, f.name)), (key, f.name)
    np.testing.assert_array_equal(stats.returns, ref_stats.returns)
    np.testing.assert_array_equal(stats.env_infos["success"], ref_stats.env_infos["success"])


# --- call overhead ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reach_tasks():
    return list(load_task_set("ml10").train["reach-v3"])


@pytest.mark.parametrize("per_worker", CALL_EPISODES, ids=[f"{k}-episodes" for k in CALL_EPISODES])
@pytest.mark.parametrize("kind,workers", CONFIGS, ids=[f"{k}-{w}" for k, w in CONFIGS])
def test_ray_call_overhead(benchmark, ray_instance, reach_tasks, kind, workers, per_worker) -> None:
    """Per wave step with ``per_worker`` reach-v3 episodes per worker: wall minus the slowest worker's step
    work, and the driver's CPU time (module docstring). 1 episode: the calls' cost alone; 40: the same
    calls between ~12 ms of work, as a big wave's are (does waiting that long cost wake-up time?)."""
    n = workers * per_worker
    tasks = [reach_tasks[i % len(reach_tasks)] for i in range(n)]
    seeds = [np.random.SeedSequence([SEED, i]) for i in range(n)]
    where = [i % workers for i in range(n)]
    actions = np.zeros((n, 4))
    actions[:, 0] = 0.3
    pool = make_pool(kind, workers)
    walls: list[float] = []
    cpus: list[float] = []

    def run() -> None:
        pool.reset(where, tasks, seeds)
        pool.take_times()
        walls.clear()
        cpu = time.process_time()
        for _ in range(CALL_STEPS):
            start = time.perf_counter()
            pool.step(actions)
            walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)

    try:
        benchmark.pedantic(run, rounds=1, warmup_rounds=1)
        times = pool.take_times()
    finally:
        pool.close()
    if benchmark.disabled:
        return
    step_times = [s for _, s in times]
    timed_all = kind == "ray" or workers == 1
    info: dict[str, Any] = {
        "pool": kind,
        "workers": workers,
        "episodes_per_worker": per_worker,
        "steps": CALL_STEPS,
        "load_average_1min": load(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_ms_median": round(1e3 * statistics.median(walls), 3),
        "wall_ms_p10": round(1e3 * float(np.percentile(walls, 10)), 3),
        "env_ms_median": round(1e3 * statistics.median(step_times[0]), 3),
    }
    if kind == "ray":  # the local pool's worker 0 runs in the driver: its CPU time is not the calls'
        info["driver_cpu_ms_per_wave_step"] = round(1e3 * cpus[-1] / CALL_STEPS, 3)
        info["driver_cpu_ms_per_call"] = round(1e3 * cpus[-1] / CALL_STEPS / workers, 3)
    if timed_all:
        critical = np.max(np.array(step_times), axis=0)  # [steps]
        overhead = np.array(walls) - critical
        info["overhead_ms_median"] = round(1e3 * float(np.median(overhead)), 3)
        info["overhead_ms_p10"] = round(1e3 * float(np.percentile(overhead, 10)), 3)
    benchmark.extra_info.update(info)
    print(f"\n{info}")


# --- the driver's own work ------------------------------------------------------------------------------
class NullEnv:
    """A :class:`maml.wave_sampler.WaveEnv` whose workers answer at once with zeros: ``sample_in_waves`` on
    it is the driver's work alone. Tasks are integers; task ``t`` is of group ``t % 45``."""

    observation_dim = 39
    action_dim = 4
    max_episode_length = 500
    info_reductions: Mapping[str, str] = {"success": "max"}
    num_workers = 1

    def group_of(self, task: int) -> Hashable:
        return task % 45

    def step_cost(self, group: Hashable) -> float:
        return 1.0

    def reset(self, workers, tasks, seeds) -> NDArray[np.float64]:
        self.n = len(tasks)
        return np.zeros((self.n, 39))

    def step(self, actions):
        return np.zeros((self.n, 39)), np.zeros(self.n), {"success": np.zeros(self.n)}


def test_driver_work_per_wave_step(benchmark) -> None:
    """Driver work of a wave of ``n`` running episodes, 1 thread, best of 3: ``sample_in_waves`` on
    :class:`NullEnv` at two horizons, whose difference gives the cost per wave step (policy included, and
    the policy's share from a timing wrapper) and the rest the cost per wave (seeds, noise, allocation);
    and the bare policy call on ``n`` rows of parameters, materialised per episode as the sampler's
    ``index_select`` makes them, and broadcast (stride 0, one copy in cache) for comparison."""
    theta = policy.init_params(39, 4, HIDDEN, torch.Generator().manual_seed(SEED))
    short = DRIVER_SHORT
    horizons: dict[int, int] = {}
    info: dict[str, Any] = {"threads": 1}
    step_ms, wave_ms, policy_share_ms, materialised_ms, broadcast_ms = {}, {}, {}, {}, {}

    def sample(n: int, horizon: int) -> tuple[float, float]:
        tasks = list(range(min(n, 45)))
        params = policy.broadcast(theta, len(tasks))
        best, best_policy = float("inf"), 0.0
        for _ in range(5):
            timed_policy = TimedPolicy()
            start = time.perf_counter()
            sample_in_waves(
                NullEnv(), params, tasks, episodes_per_task=n // len(tasks), max_episode_length=horizon,
                seed=SEED, max_instances_per_worker=10**6, mean_action_fn=timed_policy,
            )  # fmt: skip
            seconds = time.perf_counter() - start
            if seconds < best:
                best, best_policy = seconds, timed_policy.seconds
        return best, best_policy

    def call(params: policy.Params, n: int) -> float:
        obs = torch.randn(n, 1, 39)
        best = float("inf")
        with torch.no_grad():
            for _ in range(10):
                start = time.perf_counter()
                policy.mean_action(params, obs)
                best = min(best, time.perf_counter() - start)
        return 1e3 * best

    def run() -> None:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)  # sample_in_waves' policy_threads default
        try:
            for n in DRIVER_EPISODES:
                long = horizons[n] = min(max(40, DRIVER_STEPS // n), 500)
                t_short, _ = sample(n, short)
                t_long, p_long = sample(n, long)
                per_step = (t_long - t_short) / (long - short)
                step_ms[n] = round(1e3 * per_step, 3)
                wave_ms[n] = round(1e3 * (t_short - short * per_step), 3)
                policy_share_ms[n] = round(1e3 * p_long / long, 3)
                broadcast = policy.broadcast(theta, n)
                broadcast_ms[n] = round(call(broadcast, n), 3)
                materialised_ms[n] = round(call({k: v.contiguous() for k, v in broadcast.items()}, n), 3)
        finally:
            torch.set_num_threads(previous)

    benchmark.pedantic(run, rounds=1, warmup_rounds=0)
    if benchmark.disabled:
        return
    info |= {
        "load_average_1min": load(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "horizons": {"short": short, "long": horizons},
        "sampler_ms_per_wave_step": step_ms,
        "sampler_ms_per_wave": wave_ms,
        "policy_ms_per_wave_step_in_sampler": policy_share_ms,
        "policy_call_ms_materialised_params": materialised_ms,
        "policy_call_ms_broadcast_params": broadcast_ms,
    }
    benchmark.extra_info.update(info)
    print(f"\n{info}")
