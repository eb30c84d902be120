"""A time model of one Meta-World run spread over Ray actors: seconds per sampling round and per epoch on
``A`` actors (one core each) plus one driver core (issue 16).

The model follows :func:`maml.wave_sampler.sample_in_waves` on :class:`maml.envs.ray_pool.RayMetaWorldPool`
step by step. A round's episodes run in the waves of :func:`~maml.wave_sampler.assign_slots` and
:func:`~maml.wave_sampler.plan_waves` (with the instance cap); within a wave of ``n`` running episodes on
``A_w`` busy actors, each of the ``H`` wave steps is the driver's policy call, then one remote call per busy
actor, which steps its episodes one after the other::

    step(wave) = d(n) + a + b·A_w + max_w Σ_{episodes e on actor w} s·c(class(e))
    wave       = H·step(wave) + r(n) + a + b·A_w + max_w (episodes on w)·reset
    round      = Σ_waves wave

with ``c`` the per-class ms per step of the pool's environments (:data:`maml.envs.metaworld_pool.
STEP_COST_MS`, best of 5) and ``s`` a slowdown on them (1 as listed; >1 on a loaded machine), ``d(n)`` the
driver's work per wave step (policy call on per-episode parameters and the sampler's bookkeeping; in the
first round of training and of the meta-test, where every task runs θ, the call on views of one copy) and
``r(n)`` per wave (seeds, noise), both interpolated in measured points; ``a`` the fixed cost of a wave
step's calls (latency of the round trip) and ``b`` the driver's CPU per remote call (submit and reply), which
adds up over the actors because one driver core makes every call. Terms are added, not overlapped: an
upper bound where the first actors start their work while the driver still submits calls to the others.

With the policy on the actors (``Measured.rollouts``, :mod:`maml.rollouts`, the pools' default), a wave is
one call per busy actor, each running its ``k_w`` episodes for ``H`` steps with its own policy calls::

    wave = r(n) + a + b·A_w + max_w (H·(d(k_w) + Σ_{episodes e on actor w} s·c(class(e))) + k_w·reset)

the driver's per-step work ``d`` now done by each actor on its own ``k_w`` rows (the same code,
:func:`maml.rollouts.roll_out`). Not modelled: the driver pickling each actor's parameter rows once per
wave (≤ 58 KB per task row of the (100, 100) policy: ML45 on 63 actors, ≤ ~120 MB per post-update wave).

An epoch (Meta-World ``full`` profile, :mod:`bench.run.experiments`) is ``num_grad_updates + 1`` training
rounds (``meta_batch_size`` tasks × ``episodes_per_task`` × ``max_episode_length`` steps), the outer step on
the driver, and the meta-test (:func:`bench.run.trainer.meta_test_env_steps`: ``adapt_steps + 1`` rounds of
``test_adaptation_episodes`` and one of ``test_episodes`` on ``test_tasks`` held-out tasks) amortised over
``evaluate_every_n_epochs``. The outer step's time is linear in the samples of a round, from the TRPO step
measured at the ML45 kernel size (results/bench/README.md: 10.0 s for 45 tasks × 9000 samples at 2 threads on
the 2-core Xeon; 122 ms on an H200), scaled by ``2 / threads`` on a CPU. Not modelled: the inner
adaptation step between rounds, baseline fits, logging, checkpoints (each well under the outer step) and
the meta-test's adaptation steps.

The model's functions are pure (only :func:`load_calibration` and :func:`main` read a file); the parameters
come from a run of
``bench/benchmarks/test_ray_sampler_speed.py`` (:func:`calibrate`, :func:`load_calibration`: its JSON in
``results/bench/ray-sampler-cpu.json``). ``python -m bench.scaling`` prints them, the model's check on the
measured points and the projection table of results/bench/README.md.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import sys
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from maml.envs.metaworld_pool import STEP_COST_MS
from maml.wave_sampler import MAX_INSTANCES_PER_WORKER, assign_slots, plan_waves

Points = tuple[tuple[float, float], ...]
"""``((x₀, y₀), (x₁, y₁), …)`` with increasing ``x``: a piecewise-linear function."""

TRPO_ML45_KERNEL_S = 10.0
"""TRPO step at the ML45 kernel size on the 2-core Xeon, 2 threads (results/bench/README.md)."""
TRPO_ML45_KERNEL_SAMPLES = 45 * 9000
"""That size: 45 tasks × 9000 samples (45 episodes × 200 steps) per task, pre- and post-update alike."""
TRPO_ML45_H200_S = 0.122
"""The same step on an H200 (results/bench/README.md, 2026-12-04; 0.124 s on 2026-11-26)."""


@dataclass(frozen=True)
class Measured:
    """The model's parameters (module docstring); times in ms unless named ``_s``."""

    call_fixed_ms: float
    """``a``: per wave step, the calls' fixed cost (wall minus the slowest actor's work, less ``b``)."""
    call_per_actor_ms: float
    """``b``: the driver's CPU per remote call."""
    driver_step_ms: Points
    """``d(n)``: the driver's work per wave step of ``n`` running episodes."""
    driver_wave_ms: Points
    """``r(n)``: the driver's work per wave of ``n`` episodes (seeds, noise, buffers)."""
    reset_ms: float
    """One episode's reset on its actor (``set_task``, seed, ``reset``)."""
    shared_driver_step_ms: Points | None = None
    """``d(n)`` in a round whose tasks all run the same parameters (the pre-update round and the meta-test's
    first): the sampler hands the policy views of one copy (:func:`maml.rollouts.episode_rows`) instead of a
    copy per episode; None: ``driver_step_ms``."""
    env_slowdown: float = 1.0
    """``s``: actual ms per step over ``step_ms``."""
    step_ms: Mapping[str, float] = field(default_factory=lambda: STEP_COST_MS)
    """``c``: ms per step of each class."""
    balance_ms: Mapping[str, float] = field(default_factory=lambda: STEP_COST_MS)
    """The costs the sampler balances the actors on (the pool's ``step_cost``: :data:`STEP_COST_MS`)."""
    outer_step_s_per_sample: float = TRPO_ML45_KERNEL_S / TRPO_ML45_KERNEL_SAMPLES
    """Outer (TRPO) step seconds per sample of one round (``T·E·H``) at ``outer_reference_threads``."""
    outer_reference_threads: int = 2
    """The threads ``outer_step_s_per_sample`` was measured with (a CPU driver with ``k`` threads takes
    ``reference / k`` times as long; a GPU: give the GPU's rate and the same threads)."""
    rollouts: bool = False
    """The policy on the actors (:mod:`maml.rollouts`, the pools' default): per wave, one call per actor,
    each actor running :func:`maml.rollouts.roll_out` on its ``k`` episodes, the driver's per-step work
    ``d(k)`` now on the actor (the same code; module docstring). False: the policy on the driver."""

    def cost_ms(self, group: Hashable) -> float:
        """``s·c(group)``: ms per step of an episode of ``group`` (unknown classes: the median)."""
        if group in self.step_ms:
            return self.env_slowdown * self.step_ms[group]
        costs = sorted(self.step_ms.values())
        return self.env_slowdown * costs[len(costs) // 2]


@dataclass(frozen=True)
class Workload:
    """One experiment's sampling and updates, as the model needs them."""

    name: str
    train_groups: tuple[str, ...]
    """The class of each task of a meta-batch."""
    episodes_per_task: int
    horizon: int
    train_rounds: int
    """Training rounds per epoch: ``num_grad_updates + 1``."""
    test_groups: tuple[str, ...] = ()
    """The class of each meta-test task (empty: no meta-test)."""
    test_round_episodes: tuple[int, ...] = ()
    """Episodes per task of each meta-test round."""
    evaluate_every: int = 0
    """Meta-test period in epochs (its cost is amortised over it); 0: none."""

    @property
    def round_samples(self) -> int:
        """Samples of one training round, ``T·E·H`` (the outer step's size)."""
        return len(self.train_groups) * self.episodes_per_task * self.horizon

    @property
    def epoch_env_steps(self) -> int:
        """Training environment steps per epoch (``ExperimentConfig.env_steps_per_epoch``)."""
        return self.train_rounds * self.round_samples

    @property
    def meta_test_env_steps(self) -> int:
        """Environment steps of one meta-test (``bench.run.trainer.meta_test_env_steps``)."""
        return len(self.test_groups) * sum(self.test_round_episodes) * self.horizon


@dataclass(frozen=True)
class EpochTime:
    """Predicted seconds of one epoch, by part."""

    sampling_s: float
    """The training rounds."""
    outer_s: float
    """The outer step on the driver."""
    meta_test_s: float
    """One meta-test's sampling divided by the meta-test period."""

    @property
    def total_s(self) -> float:
        return self.sampling_s + self.outer_s + self.meta_test_s


def interpolate(points: Points, x: float) -> float:
    """The piecewise-linear function through ``points`` at ``x`` (beyond the ends: the end segments'
    slopes; a single point: a constant)."""
    if not points:
        raise ValueError("need at least one point")
    xs = [p[0] for p in points]
    if any(b <= a for a, b in itertools.pairwise(xs)):
        raise ValueError(f"points must have increasing x, got {xs}")
    if len(points) == 1:
        return points[0][1]
    i = min(max(bisect.bisect_left(xs, x), 1), len(points) - 1)
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def waves(
    groups: Sequence[Hashable],
    episodes_per_task: int,
    actors: int,
    measured: Measured,
    max_instances_per_worker: int = MAX_INSTANCES_PER_WORKER,
) -> list[dict[int, list[Hashable]]]:
    """The sampler's waves on ``actors`` actors: per wave, each busy actor's episodes (their classes).

    The slots are balanced on ``measured.balance_ms`` (the pool's ``step_cost``, as the sampler does; unknown
    classes: the median). Plans are cached (``assign_slots`` takes seconds for thousands of slots on hundreds
    of actors)."""
    costs = tuple(sorted((str(g), float(c)) for g, c in measured.balance_ms.items()))
    plan = _plan(tuple(groups), episodes_per_task, actors, max_instances_per_worker, costs)
    return [{w: list(episodes) for w, episodes in wave} for wave in plan]


@functools.lru_cache(maxsize=256)
def _plan(
    groups: tuple[Hashable, ...],
    episodes_per_task: int,
    actors: int,
    cap: int,
    costs: tuple[tuple[str, float], ...],
) -> tuple[tuple[tuple[int, tuple[Hashable, ...]], ...], ...]:
    table = dict(costs)
    median = sorted(table.values())[len(table) // 2]
    slots = assign_slots(groups, actors, lambda g: table.get(g, median), episodes_per_task, cap)
    out = []
    for wave in plan_waves(groups, episodes_per_task, slots):
        per_actor: dict[int, list[Hashable]] = {}
        for task, _, worker in wave:
            per_actor.setdefault(worker, []).append(groups[task])
        out.append(tuple((w, tuple(e)) for w, e in per_actor.items()))
    return tuple(out)


def wave_step_ms(
    per_actor: Mapping[int, Sequence[Hashable]], measured: Measured, shared: bool = False
) -> float:
    """One wave step: ``d(n) + a + b·A_w + max_w Σ s·c`` (``shared``: every task runs the same parameters)."""
    n = sum(map(len, per_actor.values()))
    env = max(sum(measured.cost_ms(g) for g in episodes) for episodes in per_actor.values())
    driver = measured.driver_step_ms
    if shared and measured.shared_driver_step_ms is not None:
        driver = measured.shared_driver_step_ms
    return interpolate(driver, n) + measured.call_fixed_ms + measured.call_per_actor_ms * len(per_actor) + env


def rollout_wave_ms(
    per_actor: Mapping[int, Sequence[Hashable]], horizon: int, measured: Measured, shared: bool = False
) -> float:
    """One wave with the policy on the actors: ``r(n) + a + b·A_w + max_w (H·(d(k_w) + Σ s·c) + k_w·reset)``,
    ``k_w`` the episodes of actor ``w``."""
    n = sum(map(len, per_actor.values()))
    step = measured.driver_step_ms
    if shared and measured.shared_driver_step_ms is not None:
        step = measured.shared_driver_step_ms
    actor = max(
        horizon * (interpolate(step, len(e)) + sum(map(measured.cost_ms, e))) + measured.reset_ms * len(e)
        for e in per_actor.values()
    )
    calls = measured.call_fixed_ms + measured.call_per_actor_ms * len(per_actor)
    return interpolate(measured.driver_wave_ms, n) + calls + actor


def round_seconds(
    groups: Sequence[Hashable],
    episodes_per_task: int,
    horizon: int,
    actors: int,
    measured: Measured,
    max_instances_per_worker: int = MAX_INSTANCES_PER_WORKER,
    shared: bool = False,
) -> float:
    """Seconds of one sampling round: ``episodes_per_task`` episodes of ``horizon`` steps of each task
    (``groups``: each task's class) on ``actors`` actors (``shared``: every task runs the same parameters)."""
    if actors < 1 or horizon < 1 or episodes_per_task < 1:
        raise ValueError("actors, horizon and episodes_per_task must be at least 1")
    if not groups:
        return 0.0
    total_ms = 0.0
    for per_actor in waves(groups, episodes_per_task, actors, measured, max_instances_per_worker):
        if measured.rollouts:
            total_ms += rollout_wave_ms(per_actor, horizon, measured, shared)
            continue
        n = sum(map(len, per_actor.values()))
        calls = measured.call_fixed_ms + measured.call_per_actor_ms * len(per_actor)
        resets = measured.reset_ms * max(map(len, per_actor.values()))
        total_ms += horizon * wave_step_ms(per_actor, measured, shared)
        total_ms += interpolate(measured.driver_wave_ms, n) + calls + resets
    return total_ms / 1e3


def steps_per_second(
    groups: Sequence[Hashable],
    episodes_per_task: int,
    horizon: int,
    actors: int,
    measured: Measured,
    max_instances_per_worker: int = MAX_INSTANCES_PER_WORKER,
) -> float:
    """Environment steps per second of one round (:func:`round_seconds`)."""
    steps = len(groups) * episodes_per_task * horizon
    return steps / round_seconds(
        groups, episodes_per_task, horizon, actors, measured, max_instances_per_worker
    )


def outer_step_seconds(workload: Workload, measured: Measured, threads: int = 1) -> float:
    """The outer step on a driver with ``threads`` threads: linear in the round's samples."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    scale = measured.outer_reference_threads / threads
    return measured.outer_step_s_per_sample * workload.round_samples * scale


def epoch_seconds(
    workload: Workload,
    actors: int,
    measured: Measured,
    outer_threads: int = 1,
    max_instances_per_worker: int = MAX_INSTANCES_PER_WORKER,
) -> EpochTime:
    """Predicted seconds of one epoch of ``workload`` on ``actors`` actors and one driver (module
    docstring), the meta-test amortised over its period. The first round of each (training: before the
    inner step; meta-test: the adaptation episodes of θ) runs every task on the same parameters."""
    cap = max_instances_per_worker
    train = workload.train_groups, workload.episodes_per_task, workload.horizon, actors, measured, cap
    sampling = round_seconds(*train, shared=True)
    sampling += (workload.train_rounds - 1) * round_seconds(*train)
    meta_test = 0.0
    if workload.evaluate_every and workload.test_groups:
        meta_test = sum(
            round_seconds(
                workload.test_groups, episodes, workload.horizon, actors, measured, cap, shared=i == 0
            )
            for i, episodes in enumerate(workload.test_round_episodes)
        )
        meta_test /= workload.evaluate_every
    return EpochTime(
        sampling_s=sampling,
        outer_s=outer_step_seconds(workload, measured, outer_threads),
        meta_test_s=meta_test,
    )


def spread(classes: Sequence[str], count: int) -> tuple[str, ...]:
    """``count`` tasks over ``classes`` evenly, class by class (as ``sample_train_tasks`` and
    ``pick_test_tasks`` lay them out): ``⌊count / C⌋`` each, the first ``count mod C`` one more."""
    share, extra = divmod(count, len(classes))
    return tuple(c for i, c in enumerate(classes) for _ in range(share + (i < extra)))


def metaworld_classes(env: str) -> tuple[tuple[str, ...], tuple[str, ...], int]:
    """``(train classes, test classes, test goals per class)`` of a Meta-World benchmark of
    :mod:`bench.run.experiments` (``ml1_push``, ``ml10``, ``ml45``), from Meta-World's class lists."""
    from metaworld import env_dict

    if env == "ml1_push":
        return ("push-v3",), ("push-v3",), 50
    tables = {"ml10": env_dict.ML10_V3, "ml45": env_dict.ML45_V3}
    if env not in tables:
        raise ValueError(f"not a Meta-World benchmark: {env!r}")
    return tuple(tables[env]["train"]), tuple(tables[env]["test"]), 50


def workload(config, classes: tuple[tuple[str, ...], tuple[str, ...], int] | None = None) -> Workload:
    """The :class:`Workload` of a Meta-World :class:`bench.run.experiments.ExperimentConfig`; ``classes``
    as :func:`metaworld_classes` gives them (its default)."""
    train, test, goals = classes if classes is not None else metaworld_classes(config.env)
    adapt_steps = max(config.test_adapt_steps, config.num_grad_updates)
    test_tasks = min(config.test_tasks, goals * len(test))
    evaluates = config.evaluate_every_n_epochs
    return Workload(
        name=config.env,
        train_groups=spread(train, config.meta_batch_size),
        episodes_per_task=config.episodes_per_task,
        horizon=config.max_episode_length,
        train_rounds=config.num_grad_updates + 1,
        test_groups=spread(test, test_tasks) if evaluates else (),
        test_round_episodes=(config.test_adaptation_episodes,) * (adapt_steps + 1) + (config.test_episodes,),
        evaluate_every=evaluates,
    )


# --- calibration from the benchmark's JSON (bench/benchmarks/test_ray_sampler_speed.py) -------------------
BENCHMARK_JSON = Path(__file__).resolve().parents[1] / "results" / "bench" / "ray-sampler-cpu.json"
BENCHMARK_HORIZON = 100
"""``test_sampler_steps_per_s``: the 45 ML45 train classes, one episode each, 100 steps."""
CALL_TEST = "test_ray_call_overhead[ray-{}-{}-episodes]"
"""The call tests (actors, episodes per actor): ``b`` from 1 and 2 actors with 1 episode each (little
waiting), ``a`` from 1 actor with 40 episodes (~11 ms of work per step, as in a big wave: ML45 on 63 actors
runs ~32 episodes per actor)."""


@dataclass(frozen=True)
class Calibration:
    """The model's parameters as measured by one run of the benchmark, and what they were measured on."""

    loaded: Measured
    """Every term as measured (the env at the measured slowdown)."""
    measured_steps_per_s: Mapping[str, float]
    """``test_sampler_steps_per_s``: best-round steps/s per configuration (``ray_1``, ``local_1``, …)."""
    load_average: float


def _points(values: Mapping[str, float]) -> Points:
    return tuple(sorted((float(n), float(ms)) for n, ms in values.items()))


def calibrate(
    extra_info: Mapping[str, Mapping[str, Any]],
    step_ms: Mapping[str, float] = STEP_COST_MS,
    benchmark_classes: Sequence[str] | None = None,
) -> Calibration:
    """The parameters from the benchmark's ``extra_info`` per test name (module docstring of the benchmark):
    ``b`` the driver's CPU per wave step on 2 actors minus on 1, ``a`` the 1-actor overhead of a long step
    less ``b`` (:data:`CALL_TEST`); ``d(n)``, ``r(n)`` from the driver test; the reset cost and the env's
    slowdown ``s`` (over ``step_ms`` summed over ``benchmark_classes``, default ML45's train classes, one
    episode each) from the local pool's in-process worker in the throughput test (no Ray call in its
    timing)."""
    classes = metaworld_classes("ml45")[0] if benchmark_classes is None else benchmark_classes
    one, two = extra_info[CALL_TEST.format(1, 1)], extra_info[CALL_TEST.format(2, 1)]
    per_call = two["driver_cpu_ms_per_wave_step"] - one["driver_cpu_ms_per_wave_step"]
    one = extra_info[CALL_TEST.format(1, 40)]
    driver = extra_info["test_driver_work_per_wave_step"]
    speed = extra_info["test_sampler_steps_per_s"]
    local = speed["local_1"]
    step = _points(driver["sampler_ms_per_wave_step"])
    policy_share = _points(driver["policy_ms_per_wave_step_in_sampler"])
    shared_call = _points(driver["policy_call_ms_broadcast_params"])
    loaded = Measured(
        call_fixed_ms=one["overhead_ms_median"] - per_call,
        call_per_actor_ms=per_call,
        driver_step_ms=step,
        shared_driver_step_ms=tuple(
            (n, d - interpolate(policy_share, n) + interpolate(shared_call, n)) for n, d in step
        ),
        driver_wave_ms=_points(driver["sampler_ms_per_wave"]),
        reset_ms=local["reset_ms_per_wave"] / speed["tasks"],
        env_slowdown=local["env_ms_per_wave_step"] / sum(step_ms[c] for c in classes),
        step_ms=step_ms,
    )
    configs = [k for k, v in speed.items() if isinstance(v, dict) and "steps_per_s" in v]
    return Calibration(
        loaded=loaded,
        measured_steps_per_s={k: float(speed[k]["steps_per_s"]) for k in configs},
        load_average=float(speed["load_average_1min"]),
    )


def load_calibration(path: Path = BENCHMARK_JSON) -> Calibration:
    """:func:`calibrate` on a pytest-benchmark JSON of the benchmark."""
    data = json.loads(path.read_text())
    return calibrate({b["name"]: b["extra_info"] for b in data["benchmarks"]})


def scaled(measured: Measured, factor: float, env_slowdown: float = 1.0) -> Measured:
    """``measured`` with every driver and call term divided by ``factor`` and the env at ``env_slowdown``."""

    def points(p: Points) -> Points:
        return tuple((x, y / factor) for x, y in p)

    return replace(
        measured,
        call_fixed_ms=measured.call_fixed_ms / factor,
        call_per_actor_ms=measured.call_per_actor_ms / factor,
        driver_step_ms=points(measured.driver_step_ms),
        shared_driver_step_ms=None
        if measured.shared_driver_step_ms is None
        else points(measured.shared_driver_step_ms),
        driver_wave_ms=points(measured.driver_wave_ms),
        reset_ms=measured.reset_ms / factor,
        env_slowdown=env_slowdown,
    )


def quiet(measured: Measured) -> Measured:
    """Every term quiet: the env at its listed cost (``s`` = 1), the driver and call terms divided by the
    measured env slowdown (assumed to slow them alike; nothing is divided when ``s`` ≤ 1)."""
    return scaled(measured, max(measured.env_slowdown, 1.0))


def shared_policy(measured: Measured) -> Measured:
    """What if every round's policy call read one copy of each task's parameters, as the first rounds' call
    does (``d(n) − policy share + shared call``, :func:`calibrate`), instead of a copy per episode."""
    if measured.shared_driver_step_ms is None:
        raise ValueError("the parameters have no shared-parameter d(n)")
    return replace(measured, driver_step_ms=measured.shared_driver_step_ms)


def benchmark_steps_per_second(config: str, measured: Measured) -> float:
    """The model's steps/s for a configuration of ``test_sampler_steps_per_s`` (``"ray_1"``, ``"ray_2"``,
    ``"local_1"``, each with the policy on the driver, or with ``_rollout``: on the workers; the local
    pool's in-process worker makes no call: ``a = b = 0``)."""
    pool, workers, *mode = config.split("_")
    measured = replace(measured, rollouts=mode == ["rollout"])
    if pool == "local":
        if workers != "1":
            raise ValueError("the model covers the local pool's in-process worker only")
        measured = replace(measured, call_fixed_ms=0.0, call_per_actor_ms=0.0)
    train, _, _ = metaworld_classes("ml45")
    return steps_per_second(train, 1, BENCHMARK_HORIZON, int(workers), measured)


def best_actors(
    work: Workload, cores: int, measured: Measured, outer_threads: int = 1
) -> tuple[int, EpochTime]:
    """The actor count ≤ ``cores − 1`` (powers of two and ``cores − 1``) with the shortest epoch."""
    candidates = sorted({a for a in (2**k for k in range(12)) if a < cores} | {cores - 1})
    times = {a: epoch_seconds(work, a, measured, outer_threads) for a in candidates}
    best = min(times, key=lambda a: times[a].total_s)
    return best, times[best]


def largest_per_call_ms(
    work: Workload, actors: int, measured: Measured, target_s: float, outer_threads: int = 1
) -> float:
    """The largest ``b`` (ms per remote call, to 0.001 ms) with which an epoch on ``actors`` actors takes at
    most ``target_s`` (0 when even free calls miss it)."""

    def epoch(b: float) -> float:
        return epoch_seconds(work, actors, replace(measured, call_per_actor_ms=b), outer_threads).total_s

    if epoch(0.0) > target_s:
        return 0.0
    low, high = 0.0, 1.0
    while epoch(high) <= target_s:
        low, high = high, 2 * high
    while high - low > 1e-3:
        mid = (low + high) / 2
        low, high = (mid, high) if epoch(mid) <= target_s else (low, mid)
    return low


def projection(
    measured: Measured,
    experiments: Sequence[str] = ("ml1_push", "ml10", "ml45"),
    cores: Sequence[int] = (16, 64, 256),
    outer_threads: int = 1,
) -> list[tuple[str, int, EpochTime, int, EpochTime]]:
    """``(experiment, cores, epoch on cores − 1 actors, best actor count, its epoch)`` of each full-profile
    experiment, one driver core besides the actors."""
    from bench.run.experiments import preset

    rows = []
    for experiment in experiments:
        work = workload(preset(f"maml_trpo_metaworld_{experiment}", "full"))
        for n in cores:
            best, best_epoch = best_actors(work, n, measured, outer_threads)
            epoch = epoch_seconds(work, n - 1, measured, outer_threads)
            rows.append((experiment, n, epoch, best, best_epoch))
    return rows


def cases(calibration: Calibration) -> dict[str, Measured]:
    """The parameter sets of the README's table: actors at the listed step costs (a core each) with the
    driver and call terms as measured under load (``loaded``) or divided by the load's slowdown of the env
    (``quiet``); the outer step on the driver's one CPU core, or on an H200; the policy on the actors
    (``rollouts``, the pools' default) or on the driver, as before :mod:`maml.rollouts`."""
    gpu_rate = TRPO_ML45_H200_S / TRPO_ML45_KERNEL_SAMPLES
    gpu = {"outer_step_s_per_sample": gpu_rate, "outer_reference_threads": 1}
    loaded = replace(calibration.loaded, env_slowdown=1.0)
    calm = quiet(calibration.loaded)
    return {
        "rollouts, loaded, CPU outer": replace(loaded, rollouts=True),
        "rollouts, quiet, CPU outer": replace(calm, rollouts=True),
        "rollouts, loaded, GPU outer": replace(loaded, rollouts=True, **gpu),
        "rollouts, quiet, GPU outer": replace(calm, rollouts=True, **gpu),
        "driver policy, quiet, CPU": calm,
        "driver policy, quiet, GPU": replace(calm, **gpu),
    }


def main(path: Path = BENCHMARK_JSON) -> None:
    """Print the parameters, the check on the measured points and the projection table
    (``python -m bench.scaling [benchmark JSON]``)."""
    calibration = load_calibration(path)
    m = calibration.loaded
    print(f"calibration: {path.name}, load average {calibration.load_average}")
    print(
        f"  a {m.call_fixed_ms:.3f} ms, b {m.call_per_actor_ms:.3f} ms/actor, reset {m.reset_ms:.2f} ms, "
        f"env slowdown {m.env_slowdown:.3f}"
    )
    print(f"  d(n) {m.driver_step_ms}\n  r(n) {m.driver_wave_ms}")
    print("check (steps/s, model with the parameters as measured / measured best round):")
    for config, steps in calibration.measured_steps_per_s.items():
        if config.startswith("local_2"):
            continue
        model = benchmark_steps_per_second(config, m)
        print(f"  {config:8} model {model:7.0f}  measured {steps:7.0f}  ratio {model / steps:.2f}")
    header = f"{'case':27} {'exp':9} {'cores':>5} {'sampling':>8} {'outer':>6} {'test':>5} {'epoch':>6}"
    print(header + f" {'best A':>6} {'epoch':>6}")
    for name, measured in cases(calibration).items():
        for experiment, cores, epoch, best, best_epoch in projection(measured):
            print(
                f"{name:27} {experiment:9} {cores:5d} {epoch.sampling_s:8.1f} {epoch.outer_s:6.1f} "
                f"{epoch.meta_test_s:5.1f} {epoch.total_s:6.1f} {best:6d} {best_epoch.total_s:6.1f}"
            )
    from bench.run.experiments import preset

    ml45 = workload(preset("maml_trpo_metaworld_ml45", "full"))
    print("largest b (ms per call) for an ML45 epoch <= 60 s on 63 actors:")
    for name, measured in cases(calibration).items():
        print(f"  {name:27} {largest_per_call_ms(ml45, 63, measured, 60.0):.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else BENCHMARK_JSON)
