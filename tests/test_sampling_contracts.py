"""Contracts both samplers share (:func:`maml.sampler.sample_episodes` and
:func:`maml.wave_sampler.sample_in_waves`), on toy environments without MuJoCo: the default seed keys, the
request checks, the policy threads, the error messages. Each test takes well under a second."""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from types import MappingProxyType

import numpy as np
import pytest
import torch

from maml import policy
from maml.sampler import ACTION_STREAM, ENV_STREAM, EpisodeStats, episode_seed, sample_episodes
from maml.samples import Episodes
from maml.wave_sampler import sample_in_waves

LONGEST = 5
"""The longest episode :class:`LineWorkers` allows."""


def start(seed: np.random.SeedSequence) -> float:
    """A line environment's start position: its reset noise, from the episode's reset seed alone."""
    return float(np.random.default_rng(seed).uniform(-1.0, 1.0))


class Line:
    """A batched toy env (``maml.sampler.BatchedEnv``): position on a line, moved by the action; reward
    ``−|x − goal|``."""

    observation_dim, action_dim = 1, 1
    info_reductions = MappingProxyType({"distance": "last"})

    def __init__(self, num_envs: int) -> None:
        self.num_envs = num_envs

    def reset(self, tasks: Sequence[float], seeds: Sequence[np.random.SeedSequence]) -> np.ndarray:
        self.goal = np.asarray(tasks, dtype=np.float64)
        self.x = np.array([start(s) for s in seeds], dtype=np.float64)
        return self.x[:, None].copy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        self.x = self.x + np.asarray(actions, dtype=np.float64)[:, 0]
        distance = np.abs(self.x - self.goal)
        return self.x[:, None].copy(), -distance, {"distance": distance}


class LineWorkers(Line):
    """The same toy env as a ``maml.wave_sampler.WaveEnv`` of ``num_workers`` workers (all one group)."""

    max_episode_length = LONGEST

    def __init__(self, num_workers: int = 2) -> None:
        super().__init__(0)
        self.num_workers = num_workers

    def group_of(self, task: float) -> Hashable:
        return "line"

    def step_cost(self, group: Hashable) -> float:
        return 1.0

    def reset(  # type: ignore[override]
        self, workers: Sequence[int], tasks: Sequence[float], seeds: Sequence[np.random.SeedSequence]
    ) -> np.ndarray:
        assert all(0 <= w < self.num_workers for w in workers)
        return super().reset(tasks, seeds)


def run(
    sampler: str, num_tasks: int = 2, episodes: int = 3, horizon: int = 4, **kwargs
) -> tuple[Episodes, EpisodeStats]:
    """Sample the toy env with ``sampler`` ("batched" or "waves"): task ``t``'s goal is ``t + 1`` and its
    linear policy ``mean = 0.5 − 0.1·x`` with ``log σ = 0.5 − 0.2·t`` (σ ≠ 1: a product and a quotient by σ
    differ)."""
    tasks = [float(t + 1) for t in range(num_tasks)]
    params = {
        "w0": torch.full((num_tasks, 1, 1), -0.1, dtype=torch.float64),
        "b0": torch.full((num_tasks, 1), 0.5, dtype=torch.float64),
        "log_std": torch.tensor([[0.5 - 0.2 * t] for t in range(num_tasks)], dtype=torch.float64),
    }
    params = kwargs.pop("params", params)
    dtype = kwargs.pop("dtype", torch.float64)
    common = {"episodes_per_task": episodes, "max_episode_length": horizon, "seed": 7, "dtype": dtype}
    if sampler == "batched":
        return sample_episodes(Line(num_tasks * episodes), params, tasks, **common, **kwargs)
    return sample_in_waves(LineWorkers(), params, tasks, **common, **kwargs)


SAMPLERS = pytest.mark.parametrize("sampler", ["batched", "waves"])


@SAMPLERS
def test_default_seed_keys_are_epoch_0_round_0_and_task_index(sampler: str) -> None:
    """Without ``epoch``, ``sampling_round`` and ``task_keys``, episode ``e`` of task ``t`` starts from the
    reset seed ``episode_seed(seed, 0, 0, t, e, ENV_STREAM)`` and acts ``mean + σ·noise`` with the noise of
    ``episode_seed(seed, 0, 0, t, e, ACTION_STREAM)``."""
    episodes, _ = run(sampler)
    std = torch.exp(torch.tensor([0.5, 0.3], dtype=torch.float64))
    for t in range(2):
        for e in range(3):
            assert episodes.observations[t, e, 0, 0].item() == start(episode_seed(7, 0, 0, t, e, ENV_STREAM))
            rng = np.random.Generator(np.random.PCG64(episode_seed(7, 0, 0, t, e, ACTION_STREAM)))
            noise = torch.from_numpy(rng.standard_normal((4, 1)))
            expected = episodes.means[t, e] + std[t] * noise
            torch.testing.assert_close(episodes.actions[t, e], expected, rtol=0, atol=1e-12)


@SAMPLERS
def test_sampling_runs_on_the_requested_torch_threads_one_by_default(sampler: str) -> None:
    """The policy runs on ``policy_threads`` torch threads (1 unless asked: more steal the physics' cores),
    whatever the caller had set, and the caller's number is restored afterwards."""
    seen: list[int] = []

    def recording(params: policy.Params, obs: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return policy.mean_action(params, obs)

    before = torch.get_num_threads()
    try:
        for outside, requested, inside in ((2, None, 1), (1, 2, 2), (2, 2, 2)):
            torch.set_num_threads(outside)
            seen.clear()
            threads = {} if requested is None else {"policy_threads": requested}
            run(sampler, horizon=2, mean_action_fn=recording, **threads)
            assert seen and set(seen) == {inside}, (outside, requested)
            assert torch.get_num_threads() == outside
    finally:
        torch.set_num_threads(before)


@SAMPLERS
@pytest.mark.parametrize("empty", ["num_tasks", "episodes", "horizon"])
def test_a_request_without_tasks_episodes_or_steps_is_refused(sampler: str, empty: str) -> None:
    """No task, no episode per task or no step: a ValueError that says so, never an empty batch."""
    with pytest.raises(ValueError, match="need at least one task, episode and step"):
        run(sampler, **{empty: 0})


@SAMPLERS
def test_one_step_episodes_are_a_valid_request(sampler: str) -> None:
    """A horizon of 1 is the smallest valid request: one step per episode."""
    episodes, stats = run(sampler, horizon=1)
    assert episodes.rewards.shape == (2, 3, 1) and stats.num_env_steps == 6


def test_episodes_may_last_as_long_as_the_environments_allow() -> None:
    """``max_episode_length`` equal to the env's limit is allowed (Meta-World runs 500 of 500 steps);
    one more step is refused."""
    episodes, _ = run("waves", horizon=LONGEST)
    assert episodes.rewards.shape == (2, 3, LONGEST)
    with pytest.raises(ValueError, match="exceeds what the environments allow"):
        run("waves", horizon=LONGEST + 1)


@SAMPLERS
def test_a_policy_output_of_the_wrong_shape_names_the_expected_shape(sampler: str) -> None:
    """The batched sampler shows the policy ``[T·⌈E/8⌉, 8, obs]`` (2 tasks × 1 block of 8 rows), the wave
    sampler ``[n, 1, obs]`` (the 6 episodes of one wave); the error names the matching ``[…, act]``."""

    def too_wide(params: policy.Params, obs: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*obs.shape[:2], 3, dtype=obs.dtype)

    expected = "(2, 8, 1)" if sampler == "batched" else "(6, 1, 1)"
    with pytest.raises(ValueError, match=r"returned shape .*, expected " + re.escape(expected)):
        run(sampler, mean_action_fn=too_wide)


@SAMPLERS
@pytest.mark.parametrize("wrong", ["num_tasks", "obs"])
def test_parameters_must_be_batched_over_the_tasks_and_fit_the_env(sampler: str, wrong: str) -> None:
    """A first layer ``[T, obs, hidden]`` with one task too many, or one observation input too many, is
    refused with the task-batched error (not a shape error deep in the policy, or parameters silently cut)."""
    shape = {"num_tasks": (3, 1, 1), "obs": (2, 2, 1)}[wrong]
    params = {
        "w0": torch.zeros(shape, dtype=torch.float64),
        "b0": torch.zeros(shape[0], 1, dtype=torch.float64),
        "log_std": torch.zeros(2, 1, dtype=torch.float64),
    }
    with pytest.raises(ValueError, match="task-batched"):
        run(sampler, params=params)


def test_shared_parameters_sample_as_views_and_give_the_copies_bits() -> None:
    """Pre-update sampling passes one θ for every task (a ``policy.broadcast`` view): the wave sampler then
    hands the policy views of that one copy instead of a copy per running episode. The (100, 100) float32
    policy must produce the same episodes, bit for bit, as from parameters copied out per task."""
    torch.manual_seed(0)
    theta = policy.init_params(1, 1, (100, 100), torch.Generator().manual_seed(3))
    shared = policy.broadcast(theta, 4)
    copied = {name: p.contiguous() for name, p in shared.items()}
    strides: list[int] = []

    def recording(params: policy.Params, obs: torch.Tensor) -> torch.Tensor:
        strides.append(params["w0"].stride(0))
        return policy.mean_action(params, obs)

    kwargs = {"episodes": 3, "horizon": LONGEST, "dtype": torch.float32, "mean_action_fn": recording}
    viewed, viewed_stats = run("waves", num_tasks=4, params=shared, **kwargs)
    assert set(strides) == {0}, "the policy reads views of the one copy"
    strides.clear()
    copies, copies_stats = run("waves", num_tasks=4, params=copied, **kwargs)
    assert strides and 0 not in strides, "task-batched parameters: a copy per running episode"
    for field in ("observations", "actions", "means", "rewards", "log_probs"):
        assert torch.equal(getattr(viewed, field), getattr(copies, field)), field
    assert np.array_equal(viewed_stats.returns, copies_stats.returns)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_policy_reads_a_broadcast_view_as_it_reads_copies_at_meta_world_sizes(threads: int) -> None:
    """The bit-identity the wave sampler's views rely on, at Meta-World's sizes (39 → 100 → 100 → 4) and
    wave widths from one episode to ML45's 2,025, on 1 and 2 torch threads."""
    theta = policy.init_params(39, 4, (100, 100), torch.Generator().manual_seed(0))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for n in (1, 7, 96, 2025):
            view = {name: p.unsqueeze(0).expand(n, *p.shape) for name, p in theta.items()}
            copies = {name: p.contiguous() for name, p in view.items()}
            obs = torch.randn(n, 1, 39, generator=torch.Generator().manual_seed(n))
            with torch.no_grad():
                assert torch.equal(policy.mean_action(view, obs), policy.mean_action(copies, obs)), n
    finally:
        torch.set_num_threads(previous)
