"""The batched sampler: shapes, seeding that does not depend on the batch layout, per-task parameters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from types import MappingProxyType

import numpy as np
import pytest
import torch

from maml import policy
from maml.envs import HalfCheetahDirBatch
from maml.sampler import ACTION_STREAM, ENV_STREAM, episode_seed, sample_episodes
from maml.synthetic import SyntheticSpec, random_episodes

OBS, ACT = 20, 6
DIRECTIONS = [1.0, -1.0, -1.0, 1.0, 1.0]


def task_params(num_tasks: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> policy.Params:
    """Different parameters per task: θ plus task-specific noise, ``[T, ...]``."""
    g = torch.Generator().manual_seed(seed)
    theta = policy.init_params(OBS, ACT, (16, 16), g, dtype=dtype)
    return {
        name: p.unsqueeze(0).repeat(num_tasks, *([1] * p.dim()))
        + 0.1 * torch.randn(num_tasks, *p.shape, generator=g, dtype=dtype)
        for name, p in theta.items()
    }


def sample(num_tasks: int, episodes: int, horizon: int = 12, params=None, **kwargs):
    params = task_params(num_tasks) if params is None else params
    kwargs = {"seed": 3, "epoch": 1, "sampling_round": 0, "dtype": torch.float64, **kwargs}
    with HalfCheetahDirBatch(num_tasks * episodes, num_threads=2) as env:
        return sample_episodes(
            env,
            params,
            DIRECTIONS[:num_tasks],
            episodes_per_task=episodes,
            max_episode_length=horizon,
            **kwargs,
        )


def test_shapes_masks_and_stats():
    params = {name: p.requires_grad_() for name, p in task_params(3).items()}  # as meta-parameters are
    episodes, stats = sample(3, 2, horizon=7, params=params, dtype=torch.float32)
    assert episodes.observations.shape == (3, 2, 7, OBS)
    assert episodes.actions.shape == episodes.means.shape == (3, 2, 7, ACT)
    assert episodes.rewards.shape == episodes.mask.shape == episodes.log_probs.shape == (3, 2, 7)
    assert episodes.log_std.shape == (3, ACT)
    assert episodes.advantages is None
    for f in fields(episodes):
        value = getattr(episodes, f.name)
        if value is not None:
            assert value.dtype == torch.float32 and not value.requires_grad, f.name
    assert torch.equal(episodes.mask, torch.ones(3, 2, 7))
    assert stats.returns.shape == stats.lengths.shape == (3, 2)
    assert (stats.lengths == 7).all() and stats.num_env_steps == 42
    np.testing.assert_allclose(stats.returns, episodes.rewards.double().sum(-1).numpy(), rtol=1e-6)
    assert set(stats.env_infos) == {"reward_forward", "reward_ctrl"}
    np.testing.assert_allclose(
        stats.env_infos["reward_forward"] + stats.env_infos["reward_ctrl"], stats.returns, atol=1e-9
    )


def test_actions_are_mean_plus_std_times_the_episodes_noise():
    params = task_params(2)
    params["log_std"] = torch.tensor([[0.0] * ACT, [-1.0] * ACT], dtype=torch.float64)
    episodes, _ = sample(2, 3, params=params)
    for t in range(2):
        for e in range(3):
            rng = np.random.Generator(np.random.PCG64(episode_seed(3, 1, 0, t, e, ACTION_STREAM)))
            noise = torch.from_numpy(rng.standard_normal((12, ACT)))
            expected = episodes.means[t, e] + torch.exp(params["log_std"][t]) * noise
            torch.testing.assert_close(episodes.actions[t, e], expected, rtol=0, atol=1e-12)
    expected_log_probs = policy.log_prob(
        episodes.flat("means"), episodes.log_std, episodes.flat("actions")
    ).view(2, 3, 12)
    torch.testing.assert_close(episodes.log_probs, expected_log_probs)


def test_episodes_replay_in_the_env():
    """Each recorded episode is what the env gives for its seed and the recorded actions."""
    episodes, stats = sample(2, 2)
    for t in range(2):
        for e in range(2):
            with HalfCheetahDirBatch(1, num_threads=1) as env:
                obs = env.reset([DIRECTIONS[t]], [episode_seed(3, 1, 0, t, e, ENV_STREAM)])
                for step in range(12):
                    np.testing.assert_array_equal(episodes.observations[t, e, step].numpy(), obs[0])
                    obs, reward, _ = env.step(episodes.actions[t, e, step].numpy()[None])
                    assert episodes.rewards[t, e, step].item() == reward[0]
                assert stats.returns[t, e] == pytest.approx(episodes.rewards[t, e].sum().item(), abs=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_seeding_does_not_depend_on_the_batch_layout(dtype):
    params = task_params(5)
    layout = {"horizon": 30, "dtype": dtype}
    small, small_stats = sample(2, 2, params={k: v[:2] for k, v in params.items()}, **layout)
    large, large_stats = sample(5, 9, params=params, **layout)  # two blocks of 8 rows per task
    for f in ("observations", "actions", "rewards", "log_probs", "means"):
        assert torch.equal(getattr(small, f), getattr(large, f)[:2, :2]), f
    np.testing.assert_array_equal(small_stats.returns, large_stats.returns[:2, :2])
    # one task alone, keyed as task 3 of the large batch: its episodes again
    with HalfCheetahDirBatch(3, num_threads=1) as env:
        alone, _ = sample_episodes(
            env,
            {k: v[3:4] for k, v in params.items()},
            [DIRECTIONS[3]],
            episodes_per_task=3,
            max_episode_length=30,
            seed=3,
            epoch=1,
            task_keys=[3],
            dtype=dtype,
        )
    assert torch.equal(alone.observations[0], large.observations[3, :3])
    assert torch.equal(alone.actions[0], large.actions[3, :3])


def test_same_seed_same_episodes_other_seed_other_episodes():
    first, _ = sample(2, 2)
    again, _ = sample(2, 2)
    for f in fields(first):
        a, b = getattr(first, f.name), getattr(again, f.name)
        assert (a is None and b is None) or torch.equal(a, b), f.name
    for change in ({"seed": 4}, {"epoch": 2}, {"sampling_round": 1}):
        other, _ = sample(2, 2, **change)
        assert not torch.equal(first.observations[:, :, 0], other.observations[:, :, 0]), change
        assert not torch.equal(first.actions, other.actions), change


def test_each_task_acts_with_its_own_parameters():
    params = task_params(3)
    last = f"b{policy.num_layers(params) - 1}"
    params[last][1] += 50.0  # task 1's mean action is far from the others'
    episodes, _ = sample(3, 2, params=params)
    assert (episodes.means[1] > 40.0).all()
    assert (episodes.means[[0, 2]].abs() < 10.0).all()
    for t in range(3):
        own = {name: p[t : t + 1] for name, p in params.items()}
        expected = policy.mean_action(own, episodes.observations[t : t + 1].reshape(1, -1, OBS))
        torch.testing.assert_close(episodes.means[t : t + 1].reshape(1, -1, ACT), expected)


def test_one_batched_policy_call_per_step_and_torch_threads_restored():
    calls = []

    def counting_mean_action(params, obs):
        calls.append(tuple(obs.shape))
        return policy.mean_action(params, obs)

    threads = torch.get_num_threads()
    sample(3, 2, horizon=9, mean_action_fn=counting_mean_action, policy_threads=1)
    assert calls == [(3, 8, OBS)] * 9  # a zero-padded block of 8 rows per task
    calls.clear()
    sample(3, 2, horizon=9, mean_action_fn=counting_mean_action, layout_invariant=False)
    assert calls == [(3, 2, OBS)] * 9
    assert torch.get_num_threads() == threads


def test_bad_inputs_raise_clear_errors():
    params = task_params(2)
    with HalfCheetahDirBatch(4, num_threads=1) as env:
        common = {"episodes_per_task": 2, "max_episode_length": 3, "seed": 0}
        with pytest.raises(ValueError, match="holds 4 environments"):
            sample_episodes(env, params, [1.0, -1.0], **{**common, "episodes_per_task": 3})
        with pytest.raises(ValueError, match="task-batched"):
            sample_episodes(env, policy.init_params(OBS, ACT, (4,), torch.Generator()), [1.0, -1.0], **common)
        with pytest.raises(ValueError, match="log_std"):
            sample_episodes(env, {**params, "log_std": params["log_std"][0]}, [1.0, -1.0], **common)
        with pytest.raises(ValueError, match="task key"):
            sample_episodes(env, params, [1.0, -1.0], task_keys=[0], **common)
        with pytest.raises(ValueError, match="non-negative"):
            sample_episodes(env, params, [1.0, -1.0], **{**common, "seed": -1})


class GoalLine:
    """A toy batched env on a line (no MuJoCo): move by the action, success within 0.5 of the goal."""

    observation_dim, action_dim = 1, 1

    def __init__(self, num_envs: int, infos: Mapping[str, str] | None = None) -> None:
        self.num_envs = num_envs
        self.info_reductions = MappingProxyType(
            infos or {"success": "max", "distance": "last", "speed": "mean"}
        )

    def reset(self, tasks: Sequence[float], seeds: Sequence[np.random.SeedSequence]) -> np.ndarray:
        self.goal = np.asarray(tasks, dtype=np.float64)
        self.x = np.array([np.random.default_rng(s).uniform(-0.1, 0.1) for s in seeds])
        return self.x[:, None].copy()

    def step(self, actions: np.ndarray):
        step = np.clip(actions[:, 0].astype(np.float64), -1.0, 1.0)
        self.x = self.x + step
        distance = np.abs(self.x - self.goal)
        infos = {"success": (distance < 0.5).astype(np.float64), "distance": distance, "speed": np.abs(step)}
        return self.x[:, None].copy(), -distance, {k: infos[k] for k in self.info_reductions}


def test_generic_env_and_info_reductions():
    """A scripted policy (mean = goal direction, tiny std) reaches the goal of one task, not the other."""
    params = {
        "w0": torch.zeros(2, 1, 1, dtype=torch.float64),
        "b0": torch.tensor([[1.0], [-1.0]], dtype=torch.float64),
        "log_std": torch.full((2, 1), -20.0, dtype=torch.float64),
    }
    _, stats = sample_episodes(
        GoalLine(4), params, [3.0, 100.0], episodes_per_task=2, max_episode_length=5, seed=0
    )
    np.testing.assert_array_equal(stats.env_infos["success"], [[1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(stats.env_infos["distance"][1], 100.0 + 5.0, atol=0.2)
    np.testing.assert_allclose(stats.env_infos["speed"], 1.0)
    with pytest.raises(ValueError, match="unknown info reductions"):
        sample_episodes(
            GoalLine(2, {"success": "any"}),
            params,
            [1.0, 2.0],
            episodes_per_task=1,
            max_episode_length=2,
            seed=0,
        )


def test_env_and_action_streams_of_an_episode_are_independent():
    """An episode's reset seed and its action noise come from two different streams: the same stream for
    both would correlate the start state with the noise (and each episode's noise with another's start)."""
    for keys in ((0, 0, 0, 0), (3, 1, 7, 2)):
        env = episode_seed(5, *keys, ENV_STREAM).generate_state(4)
        action = episode_seed(5, *keys, ACTION_STREAM).generate_state(4)
        assert ENV_STREAM != ACTION_STREAM and not np.array_equal(env, action)


def test_episodes_task_keeps_exactly_one_task():
    """``Episodes.task(i)`` (what the per-task oracle reads): task i alone, with a task axis of size 1."""
    spec = SyntheticSpec(num_tasks=3, episodes=2, horizon=4, obs_dim=2, act_dim=1, hidden_sizes=(3,))
    gen = torch.Generator().manual_seed(0)
    theta = policy.init_params(spec.obs_dim, spec.act_dim, spec.hidden_sizes, gen)
    episodes = random_episodes(policy.broadcast(theta, spec.num_tasks), spec, gen)
    for i in range(3):
        one = episodes.task(i)
        assert one.num_tasks == 1
        for f in fields(episodes):
            value = getattr(episodes, f.name)
            if value is not None:
                assert torch.equal(getattr(one, f.name), value[i : i + 1]), f.name
