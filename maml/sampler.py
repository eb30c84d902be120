"""Sample every task's episodes at once: one batched environment, one policy call per time step.

A meta-batch of ``T`` tasks with ``E`` episodes each runs as ``B = T·E`` environments stepped together
(environment ``b = t·E + e`` is episode ``e`` of task ``t``). Each task may have its own (adapted)
parameters: one batched policy call per time step evaluates task-batched parameters on every task's
observations at once. Pre- and post-update sampling are the same call with different parameters and
``sampling_round``.

Seeding (house style: derived, never implicit): episode ``e`` of the task keyed ``k`` in sampling round
``r`` of epoch ``n`` takes its reset noise and its action noise from
``SeedSequence(seed, spawn_key=(n, r, k, e, stream))``, so an episode is the same whatever the batch
around it: its size, the other tasks, the number of threads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from maml import policy
from maml.policy import Params
from maml.samples import Episodes

ENV_STREAM = 0
"""Seed stream of an episode's reset noise."""
ACTION_STREAM = 1
"""Seed stream of an episode's action noise."""
POLICY_BLOCK_ROWS = 8
"""Rows per policy product when sampling is layout invariant (8: as fast as one ``[T, E]`` product at
``E = 40``, where one row per product is 5× slower)."""
INFO_REDUCTIONS = ("sum", "max", "mean", "last")
"""How a per-step env info becomes a per-episode value (``max`` of a 0/1 success flag: success at any
step)."""

TaskT_contra = TypeVar("TaskT_contra", contravariant=True)
TaskT = TypeVar("TaskT")


class BatchedEnv(Protocol[TaskT_contra]):
    """``num_envs`` environments of one family, reset and stepped together. Episodes never end early.

    Observations and rewards are float64 numpy arrays; environment ``b`` must behave exactly like a single
    environment with task ``tasks[b]`` and reset seed ``seeds[b]``.
    """

    @property
    def num_envs(self) -> int: ...

    @property
    def observation_dim(self) -> int: ...

    @property
    def action_dim(self) -> int: ...

    @property
    def info_reductions(self) -> Mapping[str, str]:
        """The info names :meth:`step` returns, each with one of :data:`INFO_REDUCTIONS`."""
        ...

    def reset(
        self, tasks: Sequence[TaskT_contra], seeds: Sequence[np.random.SeedSequence]
    ) -> NDArray[np.float64]:
        """Start an episode of task ``tasks[b]`` in environment ``b``, reset noise from ``seeds[b]`` →
        observations ``[B, obs]``."""
        ...

    def step(
        self, actions: NDArray[np.floating]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], Mapping[str, NDArray[np.float64]]]:
        """Policy actions ``[B, act]`` → ``(observations [B, obs], rewards [B], infos {name: [B]})``."""
        ...


@dataclass(frozen=True)
class EpisodeStats:
    """Per-episode summaries of one sampling call, in float64 for logging."""

    returns: NDArray[np.float64]
    """``[T, E]`` undiscounted returns."""
    lengths: NDArray[np.int64]
    """``[T, E]`` number of steps of each episode."""
    env_infos: Mapping[str, NDArray[np.float64]]
    """``{name: [T, E]}`` each env info reduced over its episode as the env's ``info_reductions`` says."""

    @property
    def num_env_steps(self) -> int:
        """Environment steps taken (garage's ``TotalEnvSteps`` counts these)."""
        return int(self.lengths.sum())


def episode_seed(
    seed: int, epoch: int, sampling_round: int, task_key: int, episode: int, stream: int
) -> np.random.SeedSequence:
    """The seed of one episode's ``stream`` (:data:`ENV_STREAM` or :data:`ACTION_STREAM`).

    All keys are non-negative integers; the result depends on nothing else.
    """
    keys = (epoch, sampling_round, task_key, episode, stream)
    if seed < 0 or min(keys) < 0:
        raise ValueError(f"seed and keys must be non-negative, got seed={seed}, keys={keys}")
    return np.random.SeedSequence(seed, spawn_key=keys)


def check_request(
    num_tasks: int,
    num_episodes: int,
    horizon: int,
    policy_threads: int,
    task_keys: Sequence[int] | None,
    info_reductions: Mapping[str, str],
) -> tuple[list[int], dict[str, str]]:
    """Validate a sampling request shared by every sampler → ``(task seed keys, info reductions)``."""
    if num_tasks < 1 or num_episodes < 1 or horizon < 1:
        raise ValueError(
            f"need at least one task, episode and step, got T={num_tasks}, E={num_episodes}, H={horizon}"
        )
    if policy_threads < 1:
        raise ValueError(f"policy_threads must be at least 1, got {policy_threads}")
    keys = list(range(num_tasks)) if task_keys is None else [int(k) for k in task_keys]
    if len(keys) != num_tasks:
        raise ValueError(f"need one task key per task ({num_tasks}), got {len(keys)}")
    reductions = dict(info_reductions)
    unknown = {name: how for name, how in reductions.items() if how not in INFO_REDUCTIONS}
    if unknown:
        raise ValueError(f"unknown info reductions {unknown}; valid: {INFO_REDUCTIONS}")
    return keys, reductions


def sample_episodes(
    env: BatchedEnv[TaskT],
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
    layout_invariant: bool = True,
    policy_threads: int = 1,
) -> tuple[Episodes, EpisodeStats]:
    """Collect ``episodes_per_task`` episodes of ``max_episode_length`` steps for each of ``T`` tasks.

    Args:
        env: a batched environment with ``num_envs = T · episodes_per_task``.
        params: task-batched policy parameters ``[T, ...]`` (row ``t`` acts in task ``t``'s episodes).
        tasks: the ``T`` tasks, passed to ``env.reset``.
        episodes_per_task: ``E``.
        max_episode_length: ``H``.
        seed, epoch, sampling_round: keys of :func:`episode_seed`.
        task_keys: the seed key of each task (default ``0 … T−1``); give a task the same key to get its
            same episodes in another batch.
        device, dtype: where the returned tensors live; the policy runs on the CPU in ``dtype``.
        mean_action_fn: the policy mean, ``(params [N, ...], obs [N, M, obs]) → [N, M, act]``; called once
            per time step, with ``N = T·⌈E/8⌉, M = 8`` or ``N = T, M = E`` (see ``layout_invariant``).
        layout_invariant: show the policy each task's episodes in blocks of :data:`POLICY_BLOCK_ROWS` rows
            (zero-padded; parameters repeated to ``[T·⌈E/8⌉, ...]``), so that an episode's actions do not
            depend on how many episodes share its task. A BLAS product of ``E`` rows gives last-bit
            differences that depend on ``E`` (1e-7 in float32), and the dynamics amplify them into other
            trajectories within a few steps; with a fixed block shape, episode ``e`` is always row
            ``e mod 8`` of a same-shaped product. ``False`` calls the policy on ``[T, E, obs]`` (slightly
            faster); episodes are then reproducible only for the same ``E``.
        policy_threads: torch's intra-op threads while sampling (restored afterwards). One is right: the
            policy call is small, and torch's OpenMP workers keep spinning after each call, taking the
            cores from the physics threads (sampling ran 4× slower with 2 torch threads on 2 cores).

    Returns:
        ``Episodes`` with ``[T, E, H, ...]`` tensors (``actions`` as the policy emitted them, before the
        env's scaling; ``advantages`` unset) and the per-episode :class:`EpisodeStats`.
    """
    num_tasks, num_episodes, horizon = len(tasks), episodes_per_task, max_episode_length
    keys, reductions = check_request(
        num_tasks, num_episodes, horizon, policy_threads, task_keys, env.info_reductions
    )
    num_envs, obs_dim, act_dim = num_tasks * num_episodes, env.observation_dim, env.action_dim
    if env.num_envs != num_envs:
        raise ValueError(
            f"env holds {env.num_envs} environments but {num_tasks} tasks × {num_episodes} episodes "
            f"need {num_envs}"
        )
    cpu_params = _task_params(params, num_tasks, obs_dim, act_dim, dtype)

    def seeds(stream: int) -> list[np.random.SeedSequence]:
        return [
            episode_seed(seed, epoch, sampling_round, k, e, stream) for k in keys for e in range(num_episodes)
        ]

    noise = _standard_normal(seeds(ACTION_STREAM), (horizon, act_dim))
    noise_t = torch.from_numpy(noise).to(dtype).view(num_tasks, num_episodes, horizon, act_dim)
    log_std = cpu_params["log_std"]
    std = torch.exp(log_std).unsqueeze(1)
    blocks, rows = (
        (-(-num_episodes // POLICY_BLOCK_ROWS), POLICY_BLOCK_ROWS) if layout_invariant else (1, num_episodes)
    )
    call_params = {name: p.repeat_interleave(blocks, dim=0) for name, p in cpu_params.items()}
    call_obs = torch.zeros(num_tasks, blocks * rows, obs_dim, dtype=dtype)  # padding rows stay 0
    call_shape = (num_tasks * blocks, rows, obs_dim)

    observations = torch.empty(num_tasks, num_episodes, horizon, obs_dim, dtype=dtype)
    actions = torch.empty(num_tasks, num_episodes, horizon, act_dim, dtype=dtype)
    means = torch.empty_like(actions)
    rewards = np.empty((num_envs, horizon))
    infos = {name: np.empty((num_envs, horizon)) for name in reductions}

    obs = env.reset([tasks[t] for t in range(num_tasks) for _ in range(num_episodes)], seeds(ENV_STREAM))
    with torch.no_grad(), _torch_threads(policy_threads):
        for step in range(horizon):
            _check_array("observations", obs, (num_envs, obs_dim))
            obs_step = torch.from_numpy(obs).to(dtype).view(num_tasks, num_episodes, obs_dim)
            call_obs[:, :num_episodes] = obs_step
            mean = mean_action_fn(call_params, call_obs.view(call_shape))
            if mean.shape != (*call_shape[:2], act_dim):
                expected = (*call_shape[:2], act_dim)
                raise ValueError(f"mean_action_fn returned shape {tuple(mean.shape)}, expected {expected}")
            mean = mean.reshape(num_tasks, blocks * rows, act_dim)[:, :num_episodes]
            action = mean + std * noise_t[:, :, step]
            observations[:, :, step] = obs_step
            means[:, :, step] = mean
            actions[:, :, step] = action
            obs, reward, step_infos = env.step(action.view(num_envs, act_dim).numpy())
            _check_array("rewards", reward, (num_envs,))
            if step_infos.keys() != reductions.keys():
                raise ValueError(
                    f"env returned infos {sorted(step_infos)} but declares {sorted(reductions)} "
                    "in info_reductions"
                )
            rewards[:, step] = reward
            for name, value in step_infos.items():
                infos[name][:, step] = value
        log_probs = policy.log_prob(
            means.view(num_tasks, -1, act_dim), log_std, actions.view(num_tasks, -1, act_dim)
        ).view(num_tasks, num_episodes, horizon)

    shape = (num_tasks, num_episodes)
    episodes = Episodes(
        observations=observations,
        actions=actions,
        rewards=torch.from_numpy(rewards).to(dtype).view(num_tasks, num_episodes, horizon),
        mask=torch.ones(num_tasks, num_episodes, horizon, dtype=dtype),
        log_probs=log_probs,
        means=means,
        log_std=log_std.clone(),
    ).to(device=device)
    stats = EpisodeStats(
        returns=rewards.sum(axis=1).reshape(shape),
        lengths=np.full(shape, horizon, dtype=np.int64),
        env_infos={name: _reduce(infos[name], how).reshape(shape) for name, how in reductions.items()},
    )
    return episodes, stats


def _standard_normal(seeds: Sequence[np.random.SeedSequence], shape: tuple[int, ...]) -> NDArray[np.float64]:
    """One ``shape`` draw per seed, each from its own PCG64 generator → ``[len(seeds), *shape]``."""
    return np.stack([np.random.Generator(np.random.PCG64(s)).standard_normal(shape) for s in seeds])


@contextmanager
def _torch_threads(num_threads: int) -> Iterator[None]:
    """Run the block with ``num_threads`` torch intra-op threads, then restore the previous number."""
    previous = torch.get_num_threads()
    if num_threads == previous:
        yield
        return
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _task_params(params: Params, num_tasks: int, obs_dim: int, act_dim: int, dtype: torch.dtype) -> Params:
    """Check task-batched parameters against the env and copy them, detached, to the CPU in ``dtype``."""
    for name in ("w0", "log_std"):
        if name not in params:
            raise ValueError(f"params lack {name!r} (expected a Gaussian MLP policy's parameters)")
    w0, log_std = params["w0"], params["log_std"]
    if w0.dim() != 3 or w0.shape[0] != num_tasks or w0.shape[1] != obs_dim:
        raise ValueError(
            f"params['w0'] must be task-batched [T={num_tasks}, obs={obs_dim}, hidden], got "
            f"{tuple(w0.shape)} (use maml.policy.broadcast for one set of parameters)"
        )
    if tuple(log_std.shape) != (num_tasks, act_dim):
        raise ValueError(
            f"params['log_std'] must have shape {(num_tasks, act_dim)}, got {tuple(log_std.shape)}"
        )
    return {name: p.detach().to(device="cpu", dtype=dtype) for name, p in params.items()}


def _check_array(name: str, array: NDArray[np.float64], shape: tuple[int, ...]) -> None:
    if array.shape != shape:
        raise ValueError(f"env returned {name} of shape {array.shape}, expected {shape}")


def _reduce(values: NDArray[np.float64], how: str) -> NDArray[np.float64]:
    """``values [B, H]`` → ``[B]``."""
    if how == "sum":
        return values.sum(axis=1)
    if how == "max":
        return values.max(axis=1)
    if how == "mean":
        return values.mean(axis=1)
    return values[:, -1].copy()
