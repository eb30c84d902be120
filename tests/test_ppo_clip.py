"""MAML-PPO's clipping (maml/ppo.py) where it acts: likelihood ratios outside [1 − ε, 1 + ε].

Every other gradient test runs at θ, where the ratio is exactly 1 and the clip changes nothing. Here the
ratios are moved off 1 (the sampling log-probabilities shifted), and the clipped surrogate, its gradient, the
meta-gradient through the adaptation and the outer step are checked against the clipped objective written
out sample by sample and the oracle's own PPO loss (float64 finite differences).
"""

import math
from dataclasses import replace

import pytest
import torch
from conftest import build, finite_differences

from maml import gauss_newton, meta, oracle, ppo
from maml.adam_outer import adam_outer_step
from maml.config import MAMLConfig

INNER_LR = 0.1
CLIP_RANGES = [0.2, 0.5]
MAML = MAMLConfig(meta_batch_size=3, inner_lr=INNER_LR)


def _ratios_around_the_clip(shape, clip_range, generator):
    """Ratios well below, inside (both sides of 1) and well above ``[1 − ε, 1 + ε]``, in random order."""
    eps = clip_range
    choices = torch.tensor([(1 - eps) / 1.5, 1 - eps / 2, 1 + eps / 2, 1.5 * (1 + eps)], dtype=torch.float64)
    return choices[torch.randint(len(choices), shape, generator=generator)]


def _clipped_term_is_the_min(ratio, advantages, clip_range):
    """Where ``min(r·A, clip(r)·A)`` takes the clipped term, a constant in θ: ``A > 0, r > 1 + ε`` or
    ``A < 0, r < 1 − ε``."""
    return ((advantages > 0) & (ratio > 1 + clip_range)) | ((advantages < 0) & (ratio < 1 - clip_range))


def _with_ratios_off_one(theta, batch, clip_range, seed=0):
    """The batch with the post-update episodes' sampling log-probabilities shifted so that π_θ'/π_sampled at θ
    takes the values of :func:`_ratios_around_the_clip`; returns the batch and those ratios ``[T, M]``."""
    post = batch.post
    ratio = _ratios_around_the_clip(post.log_probs.shape, clip_range, torch.Generator().manual_seed(seed))
    shifted = replace(post, log_probs=(post.log_probs - ratio.log()) * post.mask)
    batch = meta.MetaBatch(pre=batch.pre, post=shifted)
    adapted = meta.adapt(theta, batch.pre, INNER_LR)
    with torch.no_grad():
        at_theta = torch.exp(meta.new_log_prob(adapted, batch.post) - batch.post.flat("log_probs"))
    valid = batch.post.flat("mask") > 0
    torch.testing.assert_close(at_theta[valid], ratio.flatten(1)[valid], rtol=1e-12, atol=0)
    return batch, ratio.flatten(1)


def _rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("clip_range", CLIP_RANGES)
def test_clipped_surrogate_and_its_gradient_equal_the_formula(clip_range):
    """L_i = −1/n_i Σ_m min(r·A, clip(r, 1 − ε, 1 + ε)·A) over task i's valid samples; ∂L_i/∂log π_new is
    −r·A/n_i, except 0 where the clipped term is the min (and on padding)."""
    gen = torch.Generator().manual_seed(1)
    num_tasks, samples = 3, 40
    log_prob_new = torch.randn(num_tasks, samples, generator=gen, dtype=torch.float64)
    ratio = _ratios_around_the_clip((num_tasks, samples), clip_range, gen)
    log_prob_old = log_prob_new - ratio.log()
    advantages = torch.randn(num_tasks, samples, generator=gen, dtype=torch.float64)
    mask = torch.ones(num_tasks, samples, dtype=torch.float64)
    mask[1, 30:] = 0
    mask[2, 35:] = 0

    leaf = log_prob_new.clone().requires_grad_()
    loss = ppo.clipped_surrogate(clip_range)(leaf, log_prob_old, advantages, mask)
    (grad,) = torch.autograd.grad(loss.sum(), [leaf])

    expected_loss = torch.zeros(num_tasks, dtype=torch.float64)
    expected_grad = torch.zeros(num_tasks, samples, dtype=torch.float64)
    clipped_count = 0
    for i in range(num_tasks):
        valid = [m for m in range(samples) if mask[i, m] > 0]
        total = 0.0
        for m in valid:
            r, a = math.exp(log_prob_new[i, m] - log_prob_old[i, m]), advantages[i, m].item()
            if (a > 0 and r > 1 + clip_range) or (a < 0 and r < 1 - clip_range):
                total += min(max(r, 1 - clip_range), 1 + clip_range) * a  # constant: no gradient
                clipped_count += 1
            else:
                total += r * a
                expected_grad[i, m] = -r * a / len(valid)  # ∂r/∂log π_new = r
        expected_loss[i] = -total / len(valid)
    assert 10 < clipped_count < 100  # both branches are well represented
    torch.testing.assert_close(loss.detach(), expected_loss, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("clip_range", CLIP_RANGES)
def test_meta_gradient_off_ratio_one_equals_finite_differences_of_the_oracle(tiny_spec, clip_range):
    """At a θ whose ratios lie on both sides of the clip: J(θ) is the oracle's PPO objective, and ∇J (autograd
    through the adaptation, and the explicit passes PPO trains with) is its float64 central finite difference
    and the TRPO surrogate's gradient with the clipped samples' advantages zeroed (they contribute none)."""
    theta, batch = build(tiny_spec, seed=3)
    batch, ratio = _with_ratios_off_one(theta, batch, clip_range)
    surrogate, reference = ppo.clipped_surrogate(clip_range), oracle.ppo_surrogate(clip_range)
    valid = batch.post.flat("mask") > 0
    clipped = _clipped_term_is_the_min(ratio, batch.post.flat("advantages"), clip_range) & valid
    assert 0.2 < clipped.sum() / valid.sum() < 0.6

    loss = meta.meta_objective(theta, batch, surrogate, INNER_LR)[0]
    assert loss.item() == pytest.approx(
        oracle.meta_objective(theta, batch, reference, INNER_LR).item(), rel=1e-12
    )
    numeric = finite_differences(
        lambda t: oracle.meta_objective(t, batch, reference, INNER_LR), theta, eps=1e-6
    )

    unclipped_advantages = batch.post.advantages * ~clipped.view_as(batch.post.advantages)
    unclipped = meta.MetaBatch(pre=batch.pre, post=replace(batch.post, advantages=unclipped_advantages))
    formula = meta.flatten(
        list(oracle.meta_gradient(theta, unclipped, oracle.trpo_surrogate, INNER_LR).values())
    )
    assert _rel_err(formula, numeric) < 1e-7

    leaf = meta.requires_grad(theta)
    autograd = meta.flatten(
        torch.autograd.grad(meta.meta_objective(leaf, batch, surrogate, INNER_LR)[0], list(leaf.values()))
    )
    assert _rel_err(autograd, numeric) < 1e-7
    for fused in (None, False):  # the default (fused C kernels on CPU where they build) and the torch passes
        explicit, explicit_loss = gauss_newton.meta_gradient(theta, batch, surrogate, INNER_LR, fused=fused)
        assert _rel_err(explicit, numeric) < 1e-7
        assert explicit_loss == pytest.approx(loss.item(), rel=1e-12)
    # the clip matters here: the unclipped surrogate's gradient is far from it
    everything = meta.flatten(
        list(oracle.meta_gradient(theta, batch, oracle.trpo_surrogate, INNER_LR).values())
    )
    assert _rel_err(everything, numeric) > 0.1


@pytest.mark.parametrize("explicit_passes", [True, False])
def test_ppo_outer_step_off_ratio_one_is_the_oracle_meta_gradient_step(tiny_spec, explicit_passes):
    """Plain SGD through the PPO outer step's machinery at ratios off 1: θ moves by exactly −lr·∇J of the
    oracle's clipped objective (to rounding), as an outer epoch after the first does."""
    clip_range = 0.2
    theta, batch = build(tiny_spec, seed=4)
    batch, _ = _with_ratios_off_one(theta, batch, clip_range, seed=1)
    expected = meta.flatten(
        list(oracle.meta_gradient(theta, batch, oracle.ppo_surrogate(clip_range), INNER_LR).values())
    )
    leaf = meta.requires_grad(theta)
    lr = 0.1
    stats = adam_outer_step(
        leaf,
        torch.optim.SGD(list(leaf.values()), lr=lr),
        batch,
        MAML,
        ppo.clipped_surrogate(clip_range),
        explicit_passes=explicit_passes,
    )
    delta = meta.flatten([p.detach() for p in leaf.values()]) - meta.flatten(list(theta.values()))
    torch.testing.assert_close(delta, -lr * expected, rtol=1e-10, atol=1e-13)
    reference = oracle.meta_objective(theta, batch, oracle.ppo_surrogate(clip_range), INNER_LR).item()
    assert stats["LossBefore"] == pytest.approx(reference, rel=1e-12)
