"""Sample a meta-batch's episodes in waves on a pool of worker processes (Meta-World).

:func:`maml.sampler.sample_episodes` runs all ``T·E`` episodes at once in one batched environment. That needs
``T·E`` simulations; a Meta-World environment instance is a 21 MB Python object costing 0.5–1.7 ms a step, and
ML45's full meta-batch has 2,025 episodes. Here a :class:`WaveEnv` (e.g. :class:`maml.envs.metaworld_pool.
MetaWorldPool`) has ``W`` workers, each holding environment instances of the *groups* (Meta-World classes) it
runs. Episodes run in *waves*: each wave gives every *slot* (an instance of a group on a worker) one pending
episode of its group, steps all of them
in lockstep with ONE batched policy call per time step, until all are done; then the next wave starts, until
no episode is pending. The result has the same layout as :func:`~maml.sampler.sample_episodes` 's.

Slots (:func:`assign_slots`): the ``C`` groups of a call share the workers. A *slot* is one instance of a
group on one worker; a worker may hold several slots of a group, one per episode of it that a wave runs
there, so that a single class (ML1) also fills the waves. For balance, each group has at least ``s₀`` slots
on distinct workers, ``s₀`` the smallest count ≥ ``⌈W / C⌉`` whose ``C·s₀`` slots can keep every worker at
least 90 % as busy as the busiest (ML10's 5 test classes: each on both workers, 5 slots per worker rather
than 3 and 2). Then, since every wave step pays a fixed cost (the policy call, the messages, the slowest
worker), each group gets enough slots to run its episodes in the fewest waves that fit
:data:`MAX_INSTANCES_PER_WORKER` instances per worker, a group with ``n`` episodes ``⌈n / N⌉`` slots for
``N`` waves: ML10's meta-batch of 20 (2 goals per class) runs as one wave of 20 on 2 workers, not two waves
of 10 (with worker 0 in process, the ML10 sampler went from 1.4× to 2.2× gymnasium's vector env on 2 cores;
results/bench/README.md), and ML1 push's 20 tasks × 10 episodes run as 3 waves of 67 (34 and 33 instances
per worker), not 100 waves of 2. Slots are placed so that a group's slots spread evenly over the workers and
each worker's sum of step costs (Meta-World classes differ by 3×) is as even as a greedy placement makes it.

Who calls the policy (``policy_on_workers``): by default each worker of a :class:`RolloutEnv` (both
Meta-World pools) runs its episodes of a wave with the policy itself (:mod:`maml.rollouts`), so a wave costs
one message each way per worker and the policy calls run in parallel on the workers; ``False`` keeps the
policy in this process, one call per wave step for the whole wave, the actions sent to the workers at
every step (the oracle of the tests, and the path for a policy function that cannot be pickled). Measured
on ML10, ML1 push and ML45: results/bench/README.md ("The policy on the workers").

Seeding and float results do not depend on the waves nor on who calls the policy: episode ``e`` of the
task keyed ``k`` takes its reset seed and its action noise from ``episode_seed(seed, epoch, round, k, e,
stream)`` exactly as :mod:`maml.sampler` does, and each running episode is its own row of the policy call,
with its task's parameters (``[n, ...]`` per-episode parameters, observations ``[n, 1, obs]``): a batched
product computes each row alone, so the same episode gives the same bits on 1 worker or 16, in whichever
wave it runs.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor

from maml import policy
from maml.policy import Params
from maml.rollouts import Rollout, WavePolicy, episode_rows, roll_out
from maml.sampler import (
    ACTION_STREAM,
    ENV_STREAM,
    EpisodeStats,
    _reduce,
    _standard_normal,
    _task_params,
    _torch_threads,
    check_request,
    episode_seed,
)
from maml.samples import Episodes

MIN_WORKER_BALANCE = 0.9
"""Slots are replicated until every worker runs at least this fraction of the busiest worker's episodes."""
MAX_INSTANCES_PER_WORKER = 48
"""Environment instances one worker runs at once, over all groups (unless a call has more groups than the
workers have room for: every group gets a slot). Meta-World: ~21 MB per push-v3 instance added to a worker
(its RSS, 1 → 48 instances: 334 → 1368 MB; a class's first instance costs more), so ~1.1 GB per worker, and
a worker keeps no more between calls (:data:`maml.envs.metaworld_pool.KEEP_INSTANCES`); ML45's 45 classes fit
on one worker. Fuller waves gain little beyond ~10 episodes per worker (ML1 push, 20 × 10 episodes on 2
workers, steps/s with at most 1, 5, 10, 20, 48 instances per worker: 1087, 1593, 1720, 1758, 1775)."""

TaskT_contra = TypeVar("TaskT_contra", contravariant=True)
TaskT = TypeVar("TaskT")


@runtime_checkable
class WaveEnv(Protocol[TaskT_contra]):
    """Workers that hold environment instances of each group (one per episode of it they run at once) and
    run episodes as told.

    Observations and rewards are float64 numpy arrays; an episode must behave exactly like a single
    environment with its task and reset seed, whatever the worker and whatever ran there before.
    """

    @property
    def num_workers(self) -> int: ...

    @property
    def observation_dim(self) -> int: ...

    @property
    def action_dim(self) -> int: ...

    @property
    def max_episode_length(self) -> int:
        """The longest episode the environments allow."""
        ...

    @property
    def info_reductions(self) -> Mapping[str, str]:
        """The info names :meth:`step` returns, each with one of :data:`maml.sampler.INFO_REDUCTIONS`."""
        ...

    def group_of(self, task: TaskT_contra) -> Hashable:
        """Which instance runs the task's episodes (Meta-World: the class name)."""
        ...

    def step_cost(self, group: Hashable) -> float:
        """Relative cost of one step of an episode of ``group`` (balances the workers; results ignore it)."""
        ...

    def reset(
        self,
        workers: Sequence[int],
        tasks: Sequence[TaskT_contra],
        seeds: Sequence[np.random.SeedSequence],
    ) -> NDArray[np.float64]:
        """Start episode ``i`` (task ``tasks[i]``, reset seed ``seeds[i]``) on worker ``workers[i]`` (several
        episodes of a group on one worker run on as many instances) → observations ``[n, obs]``."""
        ...

    def step(
        self, actions: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], Mapping[str, NDArray[np.float64]]]:
        """Actions ``[n, act]`` of the last reset's episodes → ``(obs [n, obs], rewards [n], infos)``, with
        ``infos`` ``{name: [n]}``."""
        ...


@runtime_checkable
class RolloutEnv(WaveEnv[TaskT_contra], Protocol[TaskT_contra]):
    """A :class:`WaveEnv` whose workers can also run their episodes of a wave with the policy themselves."""

    def rollout(
        self,
        workers: Sequence[int],
        tasks: Sequence[TaskT_contra],
        seeds: Sequence[np.random.SeedSequence],
        wave_policy: WavePolicy,
    ) -> Rollout:
        """Run episode ``i`` (as :meth:`reset` starts it) for ``H`` steps on worker ``workers[i]`` with
        ``wave_policy`` (each worker its episodes' :meth:`~maml.rollouts.WavePolicy.select`, through
        :meth:`~maml.rollouts.WavePolicy.run`) → the wave's :class:`~maml.rollouts.Rollout` in call order.
        Must give the bits :meth:`reset` and :meth:`step` driven by :func:`~maml.rollouts.roll_out` give."""
        ...


def assign_slots(
    groups: Sequence[Hashable],
    num_workers: int,
    step_cost: Callable[[Hashable], float] | None = None,
    episodes_per_task: int = 1,
    max_instances_per_worker: int = MAX_INSTANCES_PER_WORKER,
) -> dict[Hashable, list[int]]:
    """The workers that run each group's episodes: ``{group: [worker, …]}``, a worker listed once per slot.

    ``groups`` holds each task's group (a group appears once per task). Each of the ``C`` groups (in order
    of first appearance) gets at least ``s₀`` slots on distinct workers, the fewest that keep the workers
    balanced (module docstring); then, so that fewer, fuller waves run, a group with ``n`` episodes
    (``count × episodes_per_task``) gets ``⌈n / N⌉`` slots for the fewest waves ``N`` whose slots fit in
    ``max_instances_per_worker × W`` instances (several slots of a group may share a worker). The slots are
    placed costliest first (``step_cost``, default 1), each on a worker with room (fewer than
    ``max_instances_per_worker`` slots, unless none has room) that holds the fewest slots of its group, then
    the least loaded, then the lower index: a group's slots spread evenly over the workers and the workers
    finish a wave's steps together.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")
    if episodes_per_task < 1 or max_instances_per_worker < 1:
        raise ValueError("episodes_per_task and max_instances_per_worker must be at least 1")
    unique = list(dict.fromkeys(groups))
    if not unique:
        return {}
    num_groups = len(unique)
    most = num_workers // math.gcd(num_groups, num_workers)  # every worker equally busy
    copies = -(-num_workers // num_groups)
    while copies < most:
        total = num_groups * copies
        if total / (num_workers * -(-total // num_workers)) >= MIN_WORKER_BALANCE:
            break
        copies += 1
    copies = min(copies, most)
    episodes = {g: n * episodes_per_task for g, n in Counter(groups).items()}

    def counts(waves: int) -> dict[Hashable, int]:
        return {g: max(copies, -(-episodes[g] // waves)) for g in unique}

    budget = max_instances_per_worker * num_workers
    waves = 1  # the fewest waves whose slots fit the budget (or every group on its s₀ slots)
    while sum(counts(waves).values()) > budget and max(episodes.values()) > copies * waves:
        waves += 1
    count = counts(waves)
    cost = {g: 1.0 if step_cost is None else float(step_cost(g)) for g in unique}
    if not all(math.isfinite(c) and c > 0 for c in cost.values()):
        raise ValueError(f"step costs must be positive and finite, got {cost}")
    order = sorted((-cost[g], k, i) for i, g in enumerate(unique) for k in range(count[g]))
    load = [0.0] * num_workers
    held = [0] * num_workers
    slots: dict[Hashable, list[int]] = {g: [] for g in unique}
    for _, _, i in order:
        group = unique[i]
        room = [w for w in range(num_workers) if held[w] < max_instances_per_worker] or range(num_workers)
        worker = min(room, key=lambda w: (slots[group].count(w), load[w], w))
        slots[group].append(worker)
        load[worker] += cost[group]
        held[worker] += 1
    return slots


def plan_waves(
    groups: Sequence[Hashable], episodes_per_task: int, slots: Mapping[Hashable, Sequence[int]]
) -> list[list[tuple[int, int, int]]]:
    """Waves of ``(task, episode, worker)``: each wave gives each slot the next pending episode of its group.

    Episodes of a group are taken in ``(task, episode)`` order; the waves cover every episode exactly once.
    """
    pending = {g: deque() for g in slots}
    for t, group in enumerate(groups):
        pending[group].extend((t, e) for e in range(episodes_per_task))
    waves = []
    while any(pending.values()):
        waves.append(
            [(*pending[g].popleft(), w) for g, workers in slots.items() for w in workers if pending[g]]
        )
    return waves


def sample_in_waves(
    env: WaveEnv[TaskT],
    params: Params,
    tasks: Sequence[TaskT],
    *,
    episodes_per_task: int,
    max_episode_length: int,
    seed: int,
    epoch: int = 0,
    sampling_round: int = 0,
    task_keys: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    mean_action_fn: Callable[[Params, Tensor], Tensor] = policy.mean_action,
    policy_threads: int = 1,
    max_instances_per_worker: int = MAX_INSTANCES_PER_WORKER,
    policy_on_workers: bool | None = None,
) -> tuple[Episodes, EpisodeStats]:
    """Collect ``episodes_per_task`` episodes of ``max_episode_length`` steps for each of ``T`` tasks.

    Args:
        env: the worker pool.
        params: task-batched policy parameters ``[T, ...]`` (row ``t`` acts in task ``t``'s episodes); any
            extra entries with a leading task axis travel with them (a scripted policy may read them).
        tasks: the ``T`` tasks.
        episodes_per_task: ``E``.
        max_episode_length: ``H``, at most ``env.max_episode_length``; every episode runs ``H`` steps.
        seed, epoch, sampling_round: keys of :func:`maml.sampler.episode_seed`.
        task_keys: the seed key of each task (default ``0 … T−1``).
        device, dtype: where the returned tensors live; the policy runs on the CPU in ``dtype``.
        mean_action_fn: the policy mean, ``(params [n, ...], obs [n, 1, obs]) → [n, 1, act]``, called once per
            time step of each wave with the ``n`` running episodes (each with its own task's parameters).
        policy_threads: torch's intra-op threads while sampling (restored afterwards); see
            :func:`maml.sampler.sample_episodes`.
        max_instances_per_worker: the cap of :func:`assign_slots` (the episodes do not depend on it).
        policy_on_workers: each worker runs its episodes of a wave with the policy itself (one message per
            wave and worker, :mod:`maml.rollouts`; ``mean_action_fn`` must then pickle, e.g. a module-level
            function) rather than this process calling the policy at every step and sending the actions;
            default: when ``env`` is a :class:`RolloutEnv`. The episodes do not depend on it.

    Returns:
        ``Episodes`` with ``[T, E, H, ...]`` tensors (``actions`` as the policy emitted them, before the env's
        scaling; ``advantages`` unset) and the per-episode :class:`~maml.sampler.EpisodeStats`.
    """
    num_tasks, num_episodes, horizon = len(tasks), episodes_per_task, max_episode_length
    keys, reductions = check_request(
        num_tasks, num_episodes, horizon, policy_threads, task_keys, env.info_reductions
    )
    if horizon > env.max_episode_length:
        raise ValueError(
            f"max_episode_length {horizon} exceeds what the environments allow ({env.max_episode_length})"
        )
    obs_dim, act_dim = env.observation_dim, env.action_dim
    cpu_params = _task_params(params, num_tasks, obs_dim, act_dim, dtype)
    groups = [env.group_of(task) for task in tasks]
    cap = max_instances_per_worker
    slots = assign_slots(groups, env.num_workers, env.step_cost, num_episodes, max_instances_per_worker=cap)
    waves = plan_waves(groups, num_episodes, slots)

    def seeds(stream: int) -> list[np.random.SeedSequence]:
        return [
            episode_seed(seed, epoch, sampling_round, k, e, stream) for k in keys for e in range(num_episodes)
        ]

    noise = _standard_normal(seeds(ACTION_STREAM), (horizon, act_dim))
    noise_t = torch.from_numpy(noise).to(dtype).view(num_tasks, num_episodes, horizon, act_dim)
    env_seeds = seeds(ENV_STREAM)
    log_std = cpu_params["log_std"]
    std = torch.exp(log_std)

    observations = torch.empty(num_tasks, num_episodes, horizon, obs_dim, dtype=dtype)
    actions = torch.empty(num_tasks, num_episodes, horizon, act_dim, dtype=dtype)
    means = torch.empty_like(actions)
    rewards = np.empty((num_tasks, num_episodes, horizon))
    infos = {name: np.empty((num_tasks, num_episodes, horizon)) for name in reductions}
    on_workers = isinstance(env, RolloutEnv) if policy_on_workers is None else policy_on_workers
    if on_workers and not isinstance(env, RolloutEnv):
        raise ValueError(f"policy_on_workers=True needs a RolloutEnv; {type(env).__name__} has no rollout")

    with torch.no_grad(), _torch_threads(policy_threads):
        for wave in waves:
            t_idx = torch.tensor([t for t, _, _ in wave])
            e_idx = torch.tensor([e for _, e, _ in wave])
            t_np, e_np = t_idx.numpy(), e_idx.numpy()
            wave_std = std.index_select(0, t_idx)
            wave_noise = noise_t[t_idx, e_idx]  # [n, H, act]
            workers = [w for _, _, w in wave]
            wave_tasks = [tasks[t] for t, _, _ in wave]
            wave_seeds = [env_seeds[t * num_episodes + e] for t, e, _ in wave]
            if on_workers:
                wave_policy = WavePolicy.of_wave(
                    cpu_params, t_idx, wave_std, wave_noise, mean_action_fn, policy_threads
                )
                rolled = env.rollout(workers, wave_tasks, wave_seeds, wave_policy)
            else:
                wave_params = {name: episode_rows(p, t_idx) for name, p in cpu_params.items()}
                obs = env.reset(workers, wave_tasks, wave_seeds)
                rolled = roll_out(
                    obs, env.step, wave_params, wave_std, wave_noise, mean_action_fn, [*reductions], obs_dim
                )
            observations[t_idx, e_idx] = torch.from_numpy(rolled.observations)
            means[t_idx, e_idx] = torch.from_numpy(rolled.means)
            actions[t_idx, e_idx] = torch.from_numpy(rolled.actions)
            rewards[t_np, e_np] = rolled.rewards
            for name in reductions:
                infos[name][t_np, e_np] = rolled.infos[name]
        log_probs = policy.log_prob(
            means.view(num_tasks, -1, act_dim), log_std, actions.view(num_tasks, -1, act_dim)
        ).view(num_tasks, num_episodes, horizon)

    shape = (num_tasks, num_episodes)
    episodes = Episodes(
        observations=observations,
        actions=actions,
        rewards=torch.from_numpy(rewards).to(dtype),
        mask=torch.ones(num_tasks, num_episodes, horizon, dtype=dtype),
        log_probs=log_probs,
        means=means,
        log_std=log_std.clone(),
    ).to(device=device)
    stats = EpisodeStats(
        returns=rewards.sum(axis=2),
        lengths=np.full(shape, horizon, dtype=np.int64),
        env_infos={
            name: _reduce(infos[name].reshape(-1, horizon), how).reshape(shape)
            for name, how in reductions.items()
        },
    )
    return episodes, stats
