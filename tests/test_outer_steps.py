"""The outer steps: TRPO's trust region, restore and non-finite guard; PPO/VPG taking exactly the
meta-gradient step; outer epochs through the trainer; determinism."""

import copy
import math
from dataclasses import replace

import pytest
import torch
from conftest import build

import bench.run.trainer
from bench.run.experiments import preset
from bench.run.trainer import RunSpec, Trainer
from maml import gauss_newton, meta, oracle, policy, ppo, trpo, vpg
from maml.adam_outer import adam_outer_step, make_optimizer
from maml.config import HVP_METHODS, AdamConfig, MAMLConfig, TRPOConfig
from maml.synthetic import SyntheticSpec

SPEC = SyntheticSpec(num_tasks=4, episodes=3, horizon=10, obs_dim=4, act_dim=2, hidden_sizes=(8, 8))
MAML = MAMLConfig(meta_batch_size=4)


def _cosine(a, b):
    return (a @ b / (a.norm() * b.norm())).item()


def _flat(params):
    return meta.flatten([p.detach() for p in params.values()])


def _rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("num_grad_updates", [1, 2])
def test_trpo_step_respects_trust_region_and_improves(num_grad_updates):
    theta, batch = build(SPEC, seed=1, dtype=torch.float32, num_grad_updates=num_grad_updates)
    maml_cfg = replace(MAML, num_grad_updates=num_grad_updates)
    cfg = TRPOConfig()
    new, stats = trpo.trpo_step(theta, batch, maml_cfg, cfg)
    assert stats["StepAccepted"] == 1.0
    assert stats["KLAfter"] <= cfg.max_kl and stats["LossAfter"] < stats["LossBefore"]
    assert stats["dLoss"] == stats["LossBefore"] - stats["LossAfter"]
    assert abs(stats["KLBefore"]) < 1e-6
    # the reported values are what the loop oracle measures at the new parameters
    loss = oracle.meta_objective(new, batch, oracle.trpo_surrogate, maml_cfg.inner_lr).item()
    kl = oracle.mean_kl(new, batch, maml_cfg.inner_lr).item()
    assert abs(loss - stats["LossAfter"]) < 1e-5 and abs(kl - stats["KLAfter"]) < 1e-6
    assert kl <= cfg.max_kl * 1.0001
    # and the step is a natural-gradient step: it decreases the surrogate to first order
    grad = meta.flatten(
        list(oracle.meta_gradient(theta, batch, oracle.trpo_surrogate, maml_cfg.inner_lr).values())
    )
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


def _spoil_candidate(monkeypatch, hvp, which, bad, value):
    """The line search's evaluation number ``which`` (1: the full step) gives ``value`` for its ``bad``
    quantity (``"loss"`` or ``"kl"``); every other evaluation is the real one (the one ``hvp`` uses)."""
    module, name = (gauss_newton, "evaluate") if hvp == "gauss_newton" else (trpo, "_evaluate")
    real, calls = getattr(module, name), []

    def evaluate(*args, **kwargs):
        loss, kl, entropy = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == which:
            loss, kl = (value, kl) if bad == "loss" else (loss, value)
        return loss, kl, entropy

    monkeypatch.setattr(module, name, evaluate)


def _clean_step(hvp):
    """θ, the batch, the config, and the step the line search takes when every value is finite."""
    theta, batch = build(SPEC, seed=10, dtype=torch.float64)
    cfg = TRPOConfig(hvp=hvp)
    new, stats = trpo.trpo_step(theta, batch, MAML, cfg)
    assert stats["StepAccepted"] == 1.0 and stats["LineSearchTries"] == 2.0  # the full step leaves the region
    return theta, batch, cfg, new


@pytest.mark.parametrize("bad", ["loss", "kl"])
@pytest.mark.parametrize("hvp", HVP_METHODS)
def test_trpo_line_search_rejects_a_minus_infinite_candidate(monkeypatch, hvp, bad):
    """−inf passes both acceptance tests (−inf < LossBefore, −inf ≤ max_kl): only the finiteness check stands
    between it and θ. On the candidate the line search would accept, it makes the step rejected and θ restored
    bit for bit."""
    theta, batch, cfg, _ = _clean_step(hvp)
    _spoil_candidate(monkeypatch, hvp, 2, bad, -math.inf)
    new, stats = trpo.trpo_step(theta, batch, MAML, cfg)
    assert stats["StepAccepted"] == 0.0 and stats["LineSearchTries"] == 2.0
    assert _restored(theta, new)
    assert stats["LossAfter"] == stats["LossBefore"] and stats["KLAfter"] == stats["KLBefore"]


@pytest.mark.parametrize("bad", ["loss", "kl"])
@pytest.mark.parametrize("hvp", HVP_METHODS)
def test_trpo_line_search_backtracks_past_a_nan_candidate(monkeypatch, hvp, bad):
    """NaN fails both acceptance tests: on the candidate the line search would accept, it makes the line
    search go on to the next backtrack, 0.8 × that step."""
    theta, batch, cfg, clean = _clean_step(hvp)
    _spoil_candidate(monkeypatch, hvp, 2, bad, math.nan)
    new, stats = trpo.trpo_step(theta, batch, MAML, cfg)
    assert stats["StepAccepted"] == 1.0 and stats["LineSearchTries"] == 3.0
    step = _flat(clean) - _flat(theta)
    torch.testing.assert_close(_flat(new) - _flat(theta), cfg.backtrack_ratio * step, rtol=1e-12, atol=1e-15)
    assert math.isfinite(stats["LossAfter"]) and stats["LossAfter"] < stats["LossBefore"]


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


OUTER_LOSSES = {
    "ppo": (ppo.clipped_surrogate(0.5), oracle.ppo_surrogate(0.5), ppo.ppo_step),
    "vpg": (vpg.surrogate, oracle.vpg_surrogate, vpg.vpg_step),
}
"""The loss under test, the oracle's own writing of it, and the outer step that trains with it."""


@pytest.mark.parametrize("explicit_passes", [True, False])
@pytest.mark.parametrize("name", ["ppo", "vpg"])
def test_adam_outer_steps_take_exactly_the_meta_gradient_step(name, explicit_passes):
    """g = ∇J(θ), the full second-order meta-gradient by the oracle's per-task loop and loss. Plain SGD
    through the outer step's machinery moves θ by −lr·g to rounding; Adam's first step (m̂ = g, v̂ = g²) by
    −lr·g / (|g| + ε) elementwise. The first-order gradient (1 % or more away) fails both."""
    theta, batch = build(SPEC, seed=5, dtype=torch.float64)
    surrogate, reference, outer_step = OUTER_LOSSES[name]
    grad = _flat(oracle.meta_gradient(theta, batch, reference, MAML.inner_lr))
    first_order = _flat(oracle.meta_gradient(theta, batch, reference, MAML.inner_lr, first_order=True))
    assert _rel_err(first_order, grad) > 1e-2

    lr = 0.1
    leaf = meta.requires_grad(theta)
    sgd = torch.optim.SGD(list(leaf.values()), lr=lr)
    adam_outer_step(leaf, sgd, batch, MAML, surrogate, explicit_passes=explicit_passes)
    torch.testing.assert_close(_flat(leaf) - _flat(theta), -lr * grad, rtol=1e-10, atol=1e-14)

    cfg = AdamConfig(outer_lr=1e-3)
    leaf = meta.requires_grad(theta)
    if explicit_passes:  # the outer step training runs
        stats = outer_step(leaf, make_optimizer(leaf, cfg), batch, MAML, cfg)
    else:
        stats = adam_outer_step(
            leaf, make_optimizer(leaf, cfg), batch, MAML, surrogate, explicit_passes=False
        )
    delta = _flat(leaf) - _flat(theta)

    def adam_first_step(g):
        return -cfg.outer_lr * g / (g.abs() + cfg.eps)

    torch.testing.assert_close(delta, adam_first_step(grad), rtol=1e-9, atol=1e-15)
    assert not torch.allclose(delta, adam_first_step(first_order), rtol=1e-9, atol=1e-15)
    assert stats["LossAfter"] < stats["LossBefore"]
    assert stats["dLoss"] == stats["LossBefore"] - stats["LossAfter"]
    assert stats["LossBefore"] == pytest.approx(
        oracle.meta_objective(theta, batch, reference, MAML.inner_lr).item()
    )
    # garage's bug: the step followed the last task's pre-adaptation gradient; that is not this direction
    last = meta.requires_grad(theta)
    inner = meta.vpg_loss(policy.broadcast(last, 1), batch.pre[0].task(SPEC.num_tasks - 1)).sum()
    garage_dir = meta.flatten(list(torch.autograd.grad(inner, list(last.values()))))
    assert _cosine(delta, -garage_dir) < 0.9


@pytest.mark.parametrize("name", ["ppo", "vpg"])
def test_adam_outer_step_through_two_inner_steps_is_the_oracle_step(name):
    """Two inner steps, second order: beyond the explicit passes (``gauss_newton.supports``), so the outer
    step back-propagates through both adaptations and moves θ along the oracle's meta-gradient."""
    theta, batch = build(SPEC, seed=7, dtype=torch.float64, num_grad_updates=2)
    maml_cfg = replace(MAML, num_grad_updates=2)
    surrogate, reference, _ = OUTER_LOSSES[name]
    grad = _flat(oracle.meta_gradient(theta, batch, reference, MAML.inner_lr))
    leaf = meta.requires_grad(theta)
    stats = adam_outer_step(leaf, torch.optim.SGD(list(leaf.values()), lr=0.1), batch, maml_cfg, surrogate)
    torch.testing.assert_close(_flat(leaf) - _flat(theta), -0.1 * grad, rtol=1e-10, atol=1e-14)
    assert stats["LossAfter"] < stats["LossBefore"]
    assert stats["LossBefore"] == pytest.approx(
        oracle.meta_objective(theta, batch, reference, MAML.inner_lr).item(), rel=1e-12
    )


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


def test_one_adam_step_makes_ppo_the_vpg_step():
    """garage's MAML-PPO takes one Adam step per meta-update, with the likelihood ratio taken against the
    policy that sampled: the ratio is exactly 1 where the gradient is taken, the clip never acts, and the step
    is MAML-VPG's to rounding. Nothing bounds it (the README's MAML-PPO finding). From the second Adam step
    on, the ratio leaves 1 and the two steps part."""
    theta, batch = build(SPEC, seed=4, dtype=torch.float64)
    steps = {}
    for epochs in (1, 3):
        for name, outer_step in (("ppo", ppo.ppo_step), ("vpg", vpg.vpg_step)):
            leaf = meta.requires_grad(theta)
            cfg = AdamConfig(epochs=epochs, outer_lr=1e-2)
            outer_step(leaf, make_optimizer(leaf, cfg), batch, MAML, cfg)
            steps[name, epochs] = _flat(leaf) - _flat(theta)
    torch.testing.assert_close(steps["ppo", 1], steps["vpg", 1], rtol=1e-12, atol=1e-15)
    assert _rel_err(steps["ppo", 3], steps["vpg", 3]) > 1e-3


def test_trpo_step_is_deterministic_both_ways():
    def run(seed):
        theta, batch = build(SPEC, seed=seed, dtype=torch.float32)
        return trpo.trpo_step(theta, batch, MAML, TRPOConfig())

    (a, sa), (b, sb), (c, sc) = run(7), run(7), run(8)
    assert sa == sb and all(torch.equal(a[n], b[n]) for n in a)
    assert sa != sc and not all(torch.equal(a[n], c[n]) for n in a)


def test_trpo_step_is_the_same_on_one_thread_or_two():
    """A Meta-World-sized policy (14,508 parameters: over the size at which MKL threads a dot product) takes
    the same step on 1 and 2 threads: the number of threads per run must not change a result."""
    spec = SyntheticSpec(num_tasks=2, episodes=2, horizon=6, obs_dim=39, act_dim=4, hidden_sizes=(100, 100))
    theta, batch = build(spec, seed=3, dtype=torch.float32)
    previous, runs = torch.get_num_threads(), []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs.append(trpo.trpo_step(theta, batch, MAMLConfig(meta_batch_size=2), TRPOConfig()))
    finally:
        torch.set_num_threads(previous)
    (a, stats_a), (b, stats_b) = runs
    assert stats_a == stats_b and all(torch.equal(a[n], b[n]) for n in a)


def test_trainer_takes_outer_epochs_adam_steps_per_meta_update(tmp_path, monkeypatch):
    """``outer_epochs=2`` through the harness: the PPO meta-update the trainer runs is ``ppo_step`` with
    ``AdamConfig(epochs=2)`` called directly, two Adam steps (Adam's step count 2), not one."""
    calls = []

    def recording_ppo_step(theta, optimizer, batch, maml_cfg, cfg):
        before = ({n: p.detach().clone() for n, p in theta.items()}, copy.deepcopy(optimizer.state_dict()))
        stats = ppo.ppo_step(theta, optimizer, batch, maml_cfg, cfg)
        after = ({n: p.detach().clone() for n, p in theta.items()}, optimizer.state_dict())
        calls.append((before, after, batch, maml_cfg))
        return stats

    monkeypatch.setattr(bench.run.trainer, "ppo_step", recording_ppo_step)
    experiment = "maml_ppo_half_cheetah_dir"
    config = replace(preset(experiment, "smoke"), epochs=1, outer_epochs=2, evaluate_every_n_epochs=0)
    threads = torch.get_num_threads()
    try:
        Trainer(RunSpec(experiment, "smoke", 0, config, tmp_path, threads=1)).run()
        ((theta, state), (trained, trained_state), batch, maml_cfg), *others = calls
        assert not others and not state["state"]  # one meta-update, from a fresh optimizer
        assert [s["step"].item() for s in trained_state["state"].values()] == [2.0] * len(theta)
        for epochs in (2, 1):
            cfg = AdamConfig(outer_lr=config.outer_lr, clip_range=config.clip_range, epochs=epochs)
            leaf = meta.requires_grad(theta)
            ppo.ppo_step(leaf, make_optimizer(leaf, cfg), batch, maml_cfg, cfg)
            assert _restored(trained, leaf) == (epochs == 2)
    finally:
        torch.set_num_threads(threads)
