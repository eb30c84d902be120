"""The meta-gradient and the KL Hessian-vector product through the adaptation: against float64 finite
differences, an explicit Hessian, and the per-task loop oracle."""

import pytest
import torch
from conftest import build, finite_differences

from maml import meta, oracle, ppo, trpo, vpg
from maml.synthetic import SyntheticSpec

INNER_LR = 0.1
SURROGATES = {"trpo": trpo.surrogate, "ppo": ppo.clipped_surrogate(0.5), "vpg": vpg.surrogate}
ORACLE_SURROGATES = {
    "trpo": oracle.trpo_surrogate,
    "ppo": oracle.ppo_surrogate(0.5),
    "vpg": oracle.vpg_surrogate,
}
"""The same losses as the oracle writes them, apart from the code under test."""


def _objective(theta, batch, surrogate, first_order=False):
    return meta.meta_objective(theta, batch, surrogate, INNER_LR, first_order)[0]


def _meta_gradient(theta, batch, surrogate, first_order=False):
    theta = meta.requires_grad(theta)
    loss = _objective(theta, batch, surrogate, first_order)
    return meta.flatten(torch.autograd.grad(loss, list(theta.values())))


def _rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("num_grad_updates", [1, 2])
@pytest.mark.parametrize("name", ["trpo", "ppo", "vpg"])
def test_meta_gradient_equals_finite_differences(tiny_spec, num_grad_updates, name):
    theta, batch = build(tiny_spec, seed=num_grad_updates, num_grad_updates=num_grad_updates)
    surrogate = SURROGATES[name]
    analytic = _meta_gradient(theta, batch, surrogate)
    numeric = finite_differences(lambda t: _objective(t, batch, surrogate), theta)
    assert _rel_err(analytic, numeric) < 1e-6


@pytest.mark.parametrize("num_grad_updates", [1, 2])
def test_second_order_term_is_present(tiny_spec, num_grad_updates):
    theta, batch = build(tiny_spec, seed=5, num_grad_updates=num_grad_updates)
    full = _meta_gradient(theta, batch, trpo.surrogate)
    first = _meta_gradient(theta, batch, trpo.surrogate, first_order=True)
    assert _rel_err(first, full) > 1e-2
    # the first-order gradient is the post-update policy gradient evaluated at θ' (∂θ'/∂θ = I)
    adapted = {n: p.detach().requires_grad_() for n, p in meta.adapt(theta, batch.pre, INNER_LR).items()}
    loss = meta.surrogate_loss(adapted, batch.post, trpo.surrogate)
    at_adapted = meta.flatten([g.sum(0) for g in torch.autograd.grad(loss, list(adapted.values()))])
    torch.testing.assert_close(first, at_adapted, rtol=1e-12, atol=1e-14)


def _kl_of_flat(flat, theta, batch):
    return meta.mean_kl(meta.adapt(meta.unflatten(flat, theta), batch.pre, INNER_LR), batch.post)


@pytest.mark.parametrize("num_grad_updates", [1, 2])
def test_kl_hvp_equals_explicit_hessian(tiny_spec, num_grad_updates):
    theta, batch = build(tiny_spec, seed=10 + num_grad_updates, num_grad_updates=num_grad_updates)
    flat = meta.flatten(list(theta.values()))
    hessian = torch.autograd.functional.hessian(lambda f: _kl_of_flat(f, theta, batch), flat)
    leaf = meta.requires_grad(theta)
    adapted = meta.adapt(leaf, batch.pre, INNER_LR)
    hvp = trpo.kl_hvp(leaf, adapted, batch.post)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = torch.randn(flat.shape, generator=gen, dtype=flat.dtype)
        torch.testing.assert_close(hvp(v), hessian @ v, rtol=1e-10, atol=1e-12)
    # at θ the KL is 0 and minimal: the Hessian is symmetric positive semi-definite
    torch.testing.assert_close(hessian, hessian.T)
    assert torch.linalg.eigvalsh(hessian).min() > -1e-10
    assert abs(_kl_of_flat(flat, theta, batch).item()) < 1e-14


LOOP_SPEC = SyntheticSpec(num_tasks=6, episodes=3, horizon=12, obs_dim=6, act_dim=3, hidden_sizes=(16, 16))


@pytest.mark.parametrize("num_grad_updates", [1, 2])
@pytest.mark.parametrize("first_order", [False, True])
def test_batched_meta_gradient_equals_loop_oracle(num_grad_updates, first_order):
    theta, batch = build(LOOP_SPEC, seed=20, dtype=torch.float32, num_grad_updates=num_grad_updates)
    for name, surrogate in SURROGATES.items():
        reference = ORACLE_SURROGATES[name]
        batched = _meta_gradient(theta, batch, surrogate, first_order)
        loop = meta.flatten(
            list(oracle.meta_gradient(theta, batch, reference, INNER_LR, first_order).values())
        )
        assert _rel_err(batched, loop) < 1e-5, name
        leaf = meta.requires_grad(theta)
        torch.testing.assert_close(
            _objective(leaf, batch, surrogate, first_order),
            oracle.meta_objective(leaf, batch, reference, INNER_LR, first_order),
            rtol=1e-5,
            atol=1e-6,
        )


@pytest.mark.parametrize("num_grad_updates", [1, 2])
def test_batched_kl_hvp_equals_loop_oracle(num_grad_updates):
    theta, batch = build(LOOP_SPEC, seed=30, dtype=torch.float32, num_grad_updates=num_grad_updates)
    leaf = meta.requires_grad(theta)
    hvp = trpo.kl_hvp(leaf, meta.adapt(leaf, batch.pre, INNER_LR), batch.post)
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        v = {n: torch.randn(p.shape, generator=gen) for n, p in theta.items()}
        loop = meta.flatten(list(oracle.kl_hvp(theta, batch, v, INNER_LR).values()))
        assert _rel_err(hvp(meta.flatten(list(v.values()))), loop) < 1e-5


def test_likelihood_ratio_is_exactly_one_before_any_update(tiny_spec):
    for num_grad_updates in (1, 2):
        theta, batch = build(tiny_spec, seed=40, num_grad_updates=num_grad_updates)
        adapted = meta.adapt(theta, batch.pre, INNER_LR)
        ratio = torch.exp(meta.new_log_prob(adapted, batch.post) - batch.post.flat("log_probs"))
        valid = batch.post.flat("mask") > 0
        assert torch.equal(ratio[valid], torch.ones_like(ratio[valid]))
        assert meta.mean_kl(adapted, batch.post).item() == 0.0
