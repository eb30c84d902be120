"""The outer steps: TRPO's trust region and restore, PPO/VPG following the meta-gradient, determinism."""

from dataclasses import replace

import pytest
import torch
from conftest import build

from maml import meta, oracle, policy, ppo, trpo, vpg
from maml.adam_outer import adam_outer_step, make_optimizer
from maml.config import AdamConfig, MAMLConfig, TRPOConfig
from maml.synthetic import SyntheticSpec

SPEC = SyntheticSpec(num_tasks=4, episodes=3, horizon=10, obs_dim=4, act_dim=2, hidden_sizes=(8, 8))
MAML = MAMLConfig(meta_batch_size=4)


def _cosine(a, b):
    return (a @ b / (a.norm() * b.norm())).item()


@pytest.mark.parametrize("num_grad_updates", [1, 2])
def test_trpo_step_respects_trust_region_and_improves(num_grad_updates):
    theta, batch = build(SPEC, seed=1, dtype=torch.float32, num_grad_updates=num_grad_updates)
    maml_cfg = replace(MAML, num_grad_updates=num_grad_updates)
    cfg = TRPOConfig()
    new, stats = trpo.trpo_step(theta, batch, maml_cfg, cfg)
    assert stats["StepAccepted"] == 1.0
    assert stats["KLAfter"] <= cfg.max_kl and stats["LossAfter"] < stats["LossBefore"]
    assert abs(stats["KLBefore"]) < 1e-6
    # the reported values are what the loop oracle measures at the new parameters
    loss = oracle.meta_objective(new, batch, trpo.surrogate, maml_cfg.inner_lr).item()
    kl = oracle.mean_kl(new, batch, maml_cfg.inner_lr).item()
    assert abs(loss - stats["LossAfter"]) < 1e-5 and abs(kl - stats["KLAfter"]) < 1e-6
    assert kl <= cfg.max_kl * 1.0001
    # and the step is a natural-gradient step: it decreases the surrogate to first order
    grad = meta.flatten(list(oracle.meta_gradient(theta, batch, trpo.surrogate, maml_cfg.inner_lr).values()))
    delta = meta.flatten(list(new.values())) - meta.flatten(list(theta.values()))
    assert _cosine(delta, -grad) > 0.1


def _restored(theta, new):
    return all(torch.equal(theta[n], new[n]) for n in theta)


def test_trpo_step_restores_parameters_bit_for_bit_when_no_improvement():
    theta, batch = build(SPEC, seed=2, dtype=torch.float32)
    # zero advantages: the surrogate is constant, so no step can improve it
    zero_post = replace(batch.post, advantages=torch.zeros_like(batch.post.advantages))
    zero_pre = tuple(replace(e, advantages=torch.zeros_like(e.advantages)) for e in batch.pre)
    new, stats = trpo.trpo_step(theta, meta.MetaBatch(pre=zero_pre, post=zero_post), MAML, TRPOConfig())
    assert stats["StepAccepted"] == 0.0 and _restored(theta, new)
    assert stats["LossAfter"] == stats["LossBefore"]


def test_trpo_step_restores_parameters_on_non_finite_values():
    theta, batch = build(SPEC, seed=3, dtype=torch.float32)
    nan_post = replace(batch.post, advantages=torch.full_like(batch.post.advantages, float("nan")))
    new, stats = trpo.trpo_step(theta, meta.MetaBatch(pre=batch.pre, post=nan_post), MAML, TRPOConfig())
    assert stats["StepAccepted"] == 0.0 and _restored(theta, new)


def test_trpo_step_size_reaches_the_trust_region_boundary():
    theta, batch = build(SPEC, seed=4, dtype=torch.float64)
    cfg = TRPOConfig(max_kl=1e-4)
    _, stats = trpo.trpo_step(theta, batch, MAML, cfg)
    assert stats["StepAccepted"] == 1.0
    # ‖step‖²_H = 2·max_kl puts the full step on the boundary of the quadratic model; each backtrack
    # shrinks the step by 0.8 and the KL by 0.64
    expected = cfg.max_kl * cfg.backtrack_ratio ** (2 * (stats["LineSearchTries"] - 1))
    assert stats["KLAfter"] <= cfg.max_kl
    assert 0.8 < stats["KLAfter"] / expected < 1.25


@pytest.mark.parametrize("name", ["ppo", "vpg"])
def test_adam_outer_steps_follow_the_meta_gradient(name):
    theta, batch = build(SPEC, seed=5, dtype=torch.float64)
    surrogate = ppo.clipped_surrogate(0.5) if name == "ppo" else vpg.surrogate
    grad = meta.flatten(list(oracle.meta_gradient(theta, batch, surrogate, MAML.inner_lr).values()))
    # a small SGD step through the same code path moves exactly along −∇J
    leaf = meta.requires_grad(theta)
    before = meta.flatten([p.detach().clone() for p in leaf.values()])
    adam_outer_step(leaf, torch.optim.SGD(list(leaf.values()), lr=1e-4), batch, MAML, surrogate)
    delta = meta.flatten([p.detach() for p in leaf.values()]) - before
    assert _cosine(delta, -grad) > 0.9
    # garage's bug: the step followed the last task's pre-adaptation gradient; that is not this direction
    last = meta.requires_grad(theta)
    inner = meta.vpg_loss(policy.broadcast(last, 1), batch.pre[0].task(SPEC.num_tasks - 1)).sum()
    garage_dir = meta.flatten(list(torch.autograd.grad(inner, list(last.values()))))
    assert _cosine(delta, -garage_dir) < 0.9
    # Adam's own step: positive cosine with −∇J, and the surrogate falls
    leaf = meta.requires_grad(theta)
    step = ppo.ppo_step if name == "ppo" else vpg.vpg_step
    cfg = AdamConfig(outer_lr=1e-3)
    stats = step(leaf, make_optimizer(leaf, cfg), batch, MAML, cfg)
    delta = meta.flatten([p.detach() for p in leaf.values()]) - before
    assert _cosine(delta, -grad) > 0.0
    assert stats["LossAfter"] < stats["LossBefore"]


@pytest.mark.parametrize("name", ["ppo", "vpg"])
@pytest.mark.parametrize("first_order", [False, True])
def test_adam_outer_step_explicit_passes_equal_autograd(name, first_order):
    """The default path (explicit passes) and autograd's back-propagation through the adaptation take the
    same Adam steps and report the same statistics."""
    theta, batch = build(SPEC, seed=9, dtype=torch.float64)
    surrogate = ppo.clipped_surrogate(0.2) if name == "ppo" else vpg.surrogate
    maml_cfg = replace(MAML, first_order=first_order)
    results = []
    for explicit in (True, False):
        leaf = meta.requires_grad(theta)
        optimizer = make_optimizer(leaf, AdamConfig(outer_lr=1e-2))
        stats = adam_outer_step(
            leaf, optimizer, batch, maml_cfg, surrogate, epochs=3, explicit_passes=explicit
        )
        results.append((meta.flatten([p.detach() for p in leaf.values()]), stats))
    (fast, fast_stats), (reference, reference_stats) = results
    torch.testing.assert_close(fast, reference, rtol=1e-9, atol=1e-11)
    for key, value in reference_stats.items():
        assert fast_stats[key] == pytest.approx(value, rel=1e-8, abs=1e-11), key


def test_ppo_several_epochs_keep_improving():
    theta, batch = build(SPEC, seed=6, dtype=torch.float32)
    losses = []
    for epochs in (1, 5):
        leaf = meta.requires_grad(theta)
        cfg = AdamConfig(epochs=epochs)
        losses.append(ppo.ppo_step(leaf, make_optimizer(leaf, cfg), batch, MAML, cfg)["LossAfter"])
    assert losses[1] < losses[0]


def test_trpo_step_is_deterministic_both_ways():
    def run(seed):
        theta, batch = build(SPEC, seed=seed, dtype=torch.float32)
        return trpo.trpo_step(theta, batch, MAML, TRPOConfig())

    (a, sa), (b, sb), (c, sc) = run(7), run(7), run(8)
    assert sa == sb and all(torch.equal(a[n], b[n]) for n in a)
    assert sa != sc and not all(torch.equal(a[n], c[n]) for n in a)
