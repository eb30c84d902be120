"""One wave's episodes run with the policy: the loop :func:`maml.wave_sampler.sample_in_waves` runs.

A wave's episodes can be stepped two ways, with the same loop (:func:`roll_out`) and the same bits:

- **by message** (the oracle, and any :class:`~maml.wave_sampler.WaveEnv`): the sampler's process calls the
  policy once per time step for every running episode and sends the workers their actions
  (``WaveEnv.step``): ``H`` round trips per wave, the workers idle while the policy runs;
- **on the workers** (a :class:`~maml.wave_sampler.RolloutEnv`, the Meta-World pools' default): each worker
  gets, once per wave, its episodes' rows of the policy parameters and action noise (a :class:`WavePolicy`)
  and runs :func:`roll_out` itself, calling the policy on its own episodes: one message each way per wave.

An episode's bits do not depend on which rows run beside it: each running episode is its own row of the
batched policy call (``baddbmm`` computes each matrix of the batch alone; ``tanh``, ``+`` and ``*`` are
element-wise; tests/test_sampling_contracts.py), a shared parameter (the pre-update round's ``θ``) is read as
a stride-0 view of its one copy on both sides, and the action noise is drawn per episode before the wave.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from maml.policy import Params
from maml.sampler import _check_array, _torch_threads

MeanActionFn = Callable[[Params, Tensor], Tensor]
Floats = NDArray[np.float64]
StepFn = Callable[[NDArray], tuple[Floats, Floats, Mapping[str, Floats]]]


@dataclass(frozen=True)
class Rollout:
    """A wave's episodes, ``n`` of them, ``H`` steps each: numpy arrays (they travel back from workers)."""

    observations: NDArray  # [n, H, obs], the policy's dtype
    means: NDArray  # [n, H, act]
    actions: NDArray  # [n, H, act], as the policy emitted them (before the environment's scaling)
    rewards: NDArray[np.float64]  # [n, H]
    infos: dict[str, NDArray[np.float64]]  # name → [n, H]


def roll_out(
    obs: NDArray[np.float64],
    step: StepFn,
    params: Params,
    std: Tensor,
    noise: Tensor,
    mean_action_fn: MeanActionFn,
    info_names: Sequence[str],
    obs_dim: int,
) -> Rollout:
    """Run ``n`` episodes for ``H = noise.shape[1]`` steps from their first observations ``obs [n, obs]``.

    At each step: one policy call ``mean_action_fn(params, obs [n, 1, obs])`` (``params``: each episode's
    row, ``[n, ...]``), actions ``mean + std · noise[:, step]`` (``std [n, act]``), then ``step(actions)``
    → ``(obs [n, obs], rewards [n], {name: [n]})`` with exactly the ``info_names``. Call under
    ``torch.no_grad()``.
    """
    num_running, horizon, act_dim = noise.shape
    dtype = noise.dtype
    observations = torch.empty(num_running, horizon, obs_dim, dtype=dtype)
    means = torch.empty(num_running, horizon, act_dim, dtype=dtype)
    actions = torch.empty_like(means)
    rewards = np.empty((num_running, horizon))
    infos = {name: np.empty((num_running, horizon)) for name in info_names}
    scaled_noise = std.unsqueeze(1) * noise  # element-wise: each step's std · noise[:, t], the same bits
    for t in range(horizon):
        _check_array("observations", obs, (num_running, obs_dim))
        obs_t = torch.from_numpy(obs).to(dtype)
        mean = mean_action_fn(params, obs_t.unsqueeze(1))
        if mean.shape != (num_running, 1, act_dim):
            raise ValueError(
                f"mean_action_fn returned shape {tuple(mean.shape)}, expected {(num_running, 1, act_dim)}"
            )
        mean = mean[:, 0]
        action = mean + scaled_noise[:, t]
        observations[:, t] = obs_t
        means[:, t] = mean
        actions[:, t] = action
        obs, reward, step_infos = step(action.numpy())
        _check_array("rewards", reward, (num_running,))
        if step_infos.keys() != infos.keys():
            raise ValueError(
                f"env returned infos {sorted(step_infos)} but declares {sorted(infos)} in info_reductions"
            )
        rewards[:, t] = reward
        for name, value in step_infos.items():
            infos[name][:, t] = value
    return Rollout(observations.numpy(), means.numpy(), actions.numpy(), rewards, infos)


def episode_rows(param: Tensor, tasks: Tensor) -> Tensor:
    """The parameters of each running episode's task, ``[n, ...]``: for parameters shared by every task (a
    :func:`maml.policy.broadcast` view, stride 0 along tasks: the pre-update round) a view of the one copy,
    else a copy of the rows. The policy's batched products read a view's rows as they read copies of them,
    so the episodes are the same bits either way (tests/test_sampling_contracts.py); a view saves the copy
    and reads the weights once per wave step from cache (ML45, 2,025 episodes at once: 1.9 ms against
    10.5 ms for the policy call, and no 39 ms copy per wave; 96 episodes: 0.10 against 0.25 ms)."""
    if param.dim() > 0 and param.stride(0) == 0:
        return param.narrow(0, 0, 1).expand(len(tasks), *param.shape[1:])
    return param.index_select(0, tasks)


@dataclass(frozen=True)
class WavePolicy:
    """What a worker needs to run its episodes of a wave with the policy itself: numpy arrays (cheap to
    pickle; a tensor sent through a pipe would go through shared memory), each task's parameters once.

    ``params[name]`` is ``[U, ...]`` (the distinct tasks' rows, episode ``i`` reading row ``rows[i]``) or,
    for a name in ``shared``, ``[1, ...]``: one row every episode reads (as a stride-0 view, like the
    sampler's). ``std [n, act]`` and ``noise [n, H, act]`` are the episodes' own; ``threads`` is torch's
    intra-op threads for the policy calls.
    """

    params: Mapping[str, NDArray]
    shared: frozenset[str]
    rows: NDArray[np.int64]
    std: NDArray
    noise: NDArray
    mean_action_fn: MeanActionFn
    threads: int

    @classmethod
    def of_wave(
        cls,
        params: Params,
        tasks: Tensor,
        std: Tensor,
        noise: Tensor,
        mean_action_fn: MeanActionFn,
        threads: int,
    ) -> WavePolicy:
        """From the sampler's task-batched CPU parameters ``[T, ...]``, each running episode's task index
        ``tasks [n]``, and the episodes' ``std [n, act]`` and ``noise [n, H, act]``."""
        shared = frozenset(n for n, p in params.items() if p.dim() > 0 and p.stride(0) == 0)
        used, rows = np.unique(tasks.numpy(), return_inverse=True)
        return cls(
            params={n: p[:1].numpy() if n in shared else p.numpy()[used] for n, p in params.items()},
            shared=shared,
            rows=rows.astype(np.int64),
            std=std.numpy(),
            noise=noise.numpy(),
            mean_action_fn=mean_action_fn,
            threads=threads,
        )

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, episodes: Sequence[int]) -> WavePolicy:
        """The policy of episodes ``episodes`` (indices into this wave), with only their tasks' rows."""
        picked = np.asarray(episodes, dtype=np.int64)
        used, rows = np.unique(self.rows[picked], return_inverse=True)
        return WavePolicy(
            params={n: p if n in self.shared else p[used] for n, p in self.params.items()},
            shared=self.shared,
            rows=rows.astype(np.int64),
            std=self.std[picked],
            noise=self.noise[picked],
            mean_action_fn=self.mean_action_fn,
            threads=self.threads,
        )

    def episode_params(self) -> Params:
        """Each episode's parameters ``[n, ...]``, as the sampler's :func:`episode_rows` gives them."""
        rows = torch.from_numpy(self.rows)
        return {
            n: episode_rows(torch.from_numpy(p).expand(len(self), *p.shape[1:]), rows)
            if n in self.shared
            else torch.from_numpy(p).index_select(0, rows)
            for n, p in self.params.items()
        }

    def run(self, obs: NDArray[np.float64], step: StepFn, info_names: Sequence[str], obs_dim: int) -> Rollout:
        """:func:`roll_out` of these episodes from ``obs [n, obs]`` on ``self.threads`` torch threads."""
        with torch.no_grad(), _torch_threads(self.threads):
            return roll_out(
                obs,
                step,
                self.episode_params(),
                torch.from_numpy(self.std),
                torch.from_numpy(self.noise),
                self.mean_action_fn,
                info_names,
                obs_dim,
            )


def gather_rollouts(replies: Mapping[int, Rollout], rows: Sequence[Sequence[int]]) -> Rollout:
    """The workers' rollouts (``replies[w]``: episodes ``rows[w]`` of the wave) in the wave's order."""
    first = next(iter(replies.values()))
    n = sum(map(len, rows))

    def joined(pick: Callable[[Rollout], NDArray]) -> NDArray:
        out = np.empty((n, *pick(first).shape[1:]), dtype=pick(first).dtype)
        for w, reply in replies.items():
            out[list(rows[w])] = pick(reply)
        return out

    return Rollout(
        observations=joined(lambda r: r.observations),
        means=joined(lambda r: r.means),
        actions=joined(lambda r: r.actions),
        rewards=joined(lambda r: r.rewards),
        infos={name: joined(lambda r, name=name: r.infos[name]) for name in first.infos},
    )
