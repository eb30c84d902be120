"""The Gaussian MLP policy against torch.distributions and a plain per-task MLP."""

import math

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from maml import policy


@pytest.fixture
def params():
    theta = policy.init_params(5, 3, (8, 8), torch.Generator().manual_seed(0), dtype=torch.float64)
    batched = policy.broadcast(theta, 4)
    # give every task its own parameters, as adapted parameters would be
    gen = torch.Generator().manual_seed(1)
    return {n: p + 0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in batched.items()}


def _plain_mean(params, task, obs):
    x = obs
    for k in range(3):
        x = x @ params[f"w{k}"][task] + params[f"b{k}"][task]
        if k < 2:
            x = torch.tanh(x)
    return x


def test_init_shapes_and_std():
    theta = policy.init_params(20, 6, (64, 64), torch.Generator().manual_seed(0))
    assert theta["w0"].shape == (20, 64) and theta["w2"].shape == (64, 6) and theta["b1"].shape == (64,)
    assert torch.equal(theta["log_std"], torch.zeros(6)), "initial std must be 1.0"
    assert torch.equal(theta["b0"], torch.zeros(64))
    bound = math.sqrt(6 / (20 + 64))
    assert theta["w0"].abs().max() <= bound and theta["w0"].abs().max() > 0.9 * bound


def test_mean_action_equals_per_task_mlp(params):
    obs = torch.randn(4, 7, 5, dtype=torch.float64)
    mean = policy.mean_action(params, obs)
    for task in range(4):
        torch.testing.assert_close(mean[task], _plain_mean(params, task, obs[task]), rtol=1e-12, atol=1e-12)


def test_log_prob_entropy_kl_equal_torch_distributions(params):
    obs = torch.randn(4, 7, 5, dtype=torch.float64)
    mean = policy.mean_action(params, obs)
    actions = torch.randn(4, 7, 3, dtype=torch.float64)
    log_std = params["log_std"]
    dist = Independent(Normal(mean, log_std.exp().unsqueeze(1).expand_as(mean)), 1)
    torch.testing.assert_close(policy.log_prob(mean, log_std, actions), dist.log_prob(actions))
    torch.testing.assert_close(policy.entropy(log_std), dist.entropy()[:, 0])
    other_mean, other_log_std = mean + 0.3, log_std - 0.2
    other = Independent(Normal(other_mean, other_log_std.exp().unsqueeze(1).expand_as(mean)), 1)
    torch.testing.assert_close(
        policy.kl_divergence(mean, log_std, other_mean, other_log_std), kl_divergence(dist, other)
    )
    assert policy.kl_divergence(mean, log_std, mean, log_std).abs().max() == 0


def test_sample_is_seeded_and_has_the_policy_statistics(params):
    obs = torch.zeros(4, 20000, 5, dtype=torch.float64)
    a1, logp, mean = policy.sample(params, obs, torch.Generator().manual_seed(3))
    a2, _, _ = policy.sample(params, obs, torch.Generator().manual_seed(3))
    a3, _, _ = policy.sample(params, obs, torch.Generator().manual_seed(4))
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)
    std = (a1 - mean).std(dim=1)
    torch.testing.assert_close(std, params["log_std"].exp(), rtol=0.03, atol=0)
    torch.testing.assert_close(logp, policy.log_prob(mean, params["log_std"], a1))
