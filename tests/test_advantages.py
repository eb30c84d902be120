"""Returns, GAE, centring and the linear baseline against straightforward loops and closed forms."""

from dataclasses import replace

import numpy as np
import torch

from maml import baseline, policy
from maml.advantages import center, discounted_returns, gae, process_episodes
from maml.synthetic import SyntheticSpec, random_episodes


def _gae_loop(rewards, values, length, discount, lam):
    adv, running = [0.0] * length, 0.0
    for t in reversed(range(length)):
        next_value = values[t + 1] if t + 1 < length else 0.0
        delta = rewards[t] + discount * next_value - values[t]
        running = delta + discount * lam * running
        adv[t] = running
    return adv


def _padded(seed=0, shape=(3, 4, 9)):
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randn(shape, generator=gen, dtype=torch.float64)
    values = torch.randn(shape, generator=gen, dtype=torch.float64)
    lengths = torch.randint(1, shape[-1] + 1, shape[:-1], generator=gen)
    mask = (torch.arange(shape[-1]) < lengths.unsqueeze(-1)).double()
    return rewards * mask, values, mask, lengths


def test_gae_equals_loop_on_padded_episodes():
    rewards, values, mask, lengths = _padded()
    for discount, lam in [(0.99, 1.0), (0.9, 0.95), (1.0, 0.0)]:
        adv = gae(rewards, values, mask, discount, lam)
        for i in range(3):
            for j in range(4):
                n = int(lengths[i, j])
                expected = _gae_loop(rewards[i, j].tolist(), values[i, j].tolist(), n, discount, lam)
                torch.testing.assert_close(adv[i, j, :n], torch.tensor(expected, dtype=torch.float64))
                assert torch.all(adv[i, j, n:] == 0)


def test_discounted_returns_closed_form():
    rewards, _, mask, lengths = _padded(1)
    returns = discounted_returns(rewards, mask, 0.9)
    for i in range(3):
        for j in range(4):
            n = int(lengths[i, j])
            for t in range(n):
                expected = sum(0.9 ** (k - t) * rewards[i, j, k].item() for k in range(t, n))
                assert abs(returns[i, j, t].item() - expected) < 1e-12
            assert torch.all(returns[i, j, n:] == 0)
    # with λ = 1, GAE is the discounted return minus the baseline
    _, values, _, _ = _padded(2)
    torch.testing.assert_close(gae(rewards, values, mask, 0.9, 1.0), (returns - values) * mask)


def test_center_uses_standard_deviation_per_task():
    rewards, _, mask, _ = _padded(3)
    adv = center(rewards * 7.0 + 3.0, mask)
    for i in range(3):
        valid = adv[i][mask[i] > 0]
        assert abs(valid.mean().item()) < 1e-12
        assert abs(valid.std(unbiased=False).item() - 1.0) < 1e-6
    assert torch.all(adv[mask == 0] == 0)


def test_baseline_recovers_exactly_linear_targets():
    gen = torch.Generator().manual_seed(0)
    obs = torch.rand(4, 5, 30, 3, generator=gen, dtype=torch.float64) * 4 - 2
    mask = torch.ones(4, 5, 30, dtype=torch.float64)
    mask[:, :, 25:] = 0
    feats = baseline.features(obs, mask)
    true_w = torch.randn(4, feats.shape[-1], generator=gen, dtype=torch.float64)
    targets = torch.einsum("tehf,tf->teh", feats, true_w)
    fitted = baseline.fit(feats, targets, mask)
    # the observation weights are well determined; the polynomial-in-time ones are nearly collinear over
    # 25 steps, so the ridge term (1e-5) shifts them, but the predictions stay exact to ~1e-5 relative
    torch.testing.assert_close(fitted[:, :6], true_w[:, :6], rtol=0, atol=1e-4)
    predicted = baseline.fit_and_predict(obs, targets, mask)
    assert (predicted - targets * mask).abs().max() < 1e-4 * targets.abs().max()
    # targets in the observation features and the constant alone are recovered to rounding
    true_w[:, 6:9] = 0
    targets = torch.einsum("tehf,tf->teh", feats, true_w)
    predicted = baseline.fit_and_predict(obs, targets, mask)
    assert (predicted - targets * mask).abs().max() < 1e-6 * targets.abs().max()


def test_baseline_retries_a_singular_task_with_ten_times_the_regulariser():
    """garage's retry: a task whose ridge solution is not finite is solved again with reg ×10. Task 1's two
    features are equal and huge (XᵀX = 1.5e12 in every entry, float64 spacing 2⁻¹² there): 1e-5 and 1e-4
    vanish in the sum, the system stays singular (NaN), and 1e-3 is the first regulariser that counts (×11
    would give 1.21e-3, which rounds to another matrix). Task 0 is solved at the first try and must not
    change with task 1's retries."""
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(2, 1, 4, 2, generator=gen, dtype=torch.float64)
    feats[1] = (1.5e12 / 4) ** 0.5
    returns = torch.randn(2, 1, 4, generator=gen, dtype=torch.float64)
    mask = torch.ones(2, 1, 4, dtype=torch.float64)
    x, y = feats.flatten(1, 2), returns.flatten(1, 2)
    gram, rhs = x.transpose(1, 2) @ x, (x.transpose(1, 2) @ y.unsqueeze(-1)).squeeze(-1)

    def gram_of(features):
        flat = features.flatten(1, 2)
        return flat.transpose(1, 2) @ flat

    def solve(task, reg):
        return torch.linalg.solve(gram[task] + reg * torch.eye(2, dtype=torch.float64), rhs[task])

    assert not torch.isfinite(
        torch.linalg.solve_ex(gram[1] + 1e-4 * torch.eye(2, dtype=torch.float64), rhs[1])[0]
    ).all()
    weights = baseline.fit(feats, returns, mask)
    assert torch.equal(weights[0], solve(0, baseline.REG_COEFF))
    assert torch.equal(weights[1], solve(1, baseline.REG_COEFF * 10 * 10)) and weights[1].abs().min() > 0
    assert not torch.equal(weights[1], solve(1, baseline.REG_COEFF * 11 * 11))
    # five tries at most (reg up to 0.1): at XᵀX = 4.5e15 (spacing 0.5) all five vanish and the task keeps
    # zeros; a sixth try (reg 1) would count
    feats[1] = (4.5e15 / 4) ** 0.5
    assert torch.isfinite(
        torch.linalg.solve_ex(gram_of(feats)[1] + torch.eye(2, dtype=torch.float64), rhs[1])[0]
    ).all()
    assert torch.equal(baseline.fit(feats, returns, mask)[1], torch.zeros(2, dtype=torch.float64))


def test_baseline_features_clip_and_time():
    obs = torch.full((1, 1, 3, 2), 50.0)
    feats = baseline.features(obs, torch.ones(1, 1, 3))
    assert feats[0, 0, 0, :4].tolist() == [10.0, 10.0, 100.0, 100.0]
    torch.testing.assert_close(feats[0, 0, 2, 4:], torch.tensor([0.02, 0.0004, 0.000008, 1.0]))


def test_process_episodes_centres_per_task():
    theta = policy.init_params(3, 2, (4,), torch.Generator().manual_seed(0), dtype=torch.float64)
    spec = SyntheticSpec(num_tasks=3, episodes=3, horizon=8)
    eps = random_episodes(policy.broadcast(theta, 3), spec, torch.Generator().manual_seed(1))
    out = process_episodes(eps, 0.99, 1.0)
    assert eps.advantages is None and out.advantages.shape == eps.rewards.shape
    masked = out.advantages * out.mask
    torch.testing.assert_close(masked.sum((1, 2)), torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)


def _linear_feature_baseline(observations, returns, lengths):
    """garage's LinearFeatureBaseline (shared/docs/garage-maml.md, bug 1) in numpy float64, for one task:
    features ``[o, o², t/100, (t/100)², (t/100)³, 1]`` with ``o`` the observation clipped to ±10 and ``t`` the
    step within its episode; ridge least squares ``(XᵀX + 1e-5·I) w = Xᵀy`` over the task's episodes. Returns
    the fitted values, episode by episode."""
    features = []
    for obs, length in zip(observations, lengths, strict=True):
        o = np.clip(obs[:length], -10, 10)
        t = np.arange(length).reshape(-1, 1) / 100.0
        features.append(np.concatenate([o, o**2, t, t**2, t**3, np.ones((length, 1))], axis=1))
    x, y = np.concatenate(features), np.concatenate([r[:n] for r, n in zip(returns, lengths, strict=True)])
    w = np.linalg.lstsq(x.T @ x + 1e-5 * np.eye(x.shape[1]), x.T @ y, rcond=None)[0]
    return [f @ w for f in features]


def test_advantages_are_returns_minus_the_linear_feature_baseline():
    """With λ = 1, A = R − b: the discounted return minus the linear feature baseline fitted to this round's
    returns per task; process_episodes then centres it per task, (A − mean) / (std + 1e-8) over the valid
    steps. A zero (or constant) baseline fails: the fitted values vary with the observations and the time."""
    theta = policy.init_params(3, 2, (4,), torch.Generator().manual_seed(0), dtype=torch.float64)
    spec = SyntheticSpec(num_tasks=3, episodes=4, horizon=12)
    eps = random_episodes(policy.broadcast(theta, 3), spec, torch.Generator().manual_seed(2))
    # observations beyond the clip, and rewards that the features can partly explain
    observations = eps.observations * torch.tensor([1.0, 1.0, 15.0], dtype=torch.float64)
    rewards = (observations[..., 0] + 0.5 * eps.rewards) * eps.mask
    eps = replace(eps, observations=observations, rewards=rewards)
    assert (observations.abs() > 10).any()
    lengths = eps.mask.sum(-1).long().numpy()
    assert (lengths < spec.horizon).any()  # padded episodes
    discount = 0.99

    returns_minus_baseline = torch.zeros_like(rewards)
    centred = torch.zeros_like(rewards)
    for i in range(spec.num_tasks):
        obs, rew = observations[i].numpy(), rewards[i].numpy()
        returns = [
            np.array([sum(discount ** (k - t) * rew[e, k] for k in range(t, n)) for t in range(n)])
            for e, n in enumerate(lengths[i])
        ]
        values = _linear_feature_baseline(obs, returns, lengths[i])
        assert np.concatenate(values).std() > 0.1  # far from a constant
        advantages = [r - v for r, v in zip(returns, values, strict=True)]
        flat = np.concatenate(advantages)
        for e, n in enumerate(lengths[i]):
            returns_minus_baseline[i, e, :n] = torch.from_numpy(advantages[e])
            centred[i, e, :n] = torch.from_numpy((advantages[e] - flat.mean()) / (flat.std() + 1e-8))

    values = baseline.fit_and_predict(observations, discounted_returns(rewards, eps.mask, discount), eps.mask)
    before_centring = gae(rewards, values, eps.mask, discount, 1.0)
    torch.testing.assert_close(before_centring, returns_minus_baseline, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(
        process_episodes(eps, discount, 1.0).advantages, centred, rtol=1e-9, atol=1e-10
    )
