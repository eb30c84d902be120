"""The per-task loop way of computing MAML (as garage does): a test oracle and benchmark reference only.

Written independently of the batched path: one task at a time, a plain ``x @ W + b`` MLP,
``torch.distributions`` for log-densities and KL, and its own TRPO, PPO and VPG losses. Nothing in training
calls this module.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Independent, Normal, kl_divergence

from maml.cg import conjugate_gradient
from maml.config import MAMLConfig, TRPOConfig
from maml.meta import MetaBatch, Surrogate
from maml.policy import Params
from maml.samples import Episodes


def _distribution(params: Params, obs: Tensor) -> Independent:
    layers = sum(1 for n in params if n.startswith("w"))
    x = obs
    for k in range(layers):
        x = x @ params[f"w{k}"] + params[f"b{k}"]
        if k < layers - 1:
            x = torch.tanh(x)
    return Independent(Normal(x, params["log_std"].exp().expand_as(x)), 1)


def _valid(episodes: Episodes, task: int, field: str) -> Tensor:
    """One task's samples of a field, padding dropped: ``[n_valid, ...]``."""
    value = getattr(episodes, field)[task]
    return value[episodes.mask[task] > 0]


def _adapt_task(theta: Params, rounds: tuple[Episodes, ...], task: int, inner_lr: float, first_order: bool):
    params = {n: p if p.requires_grad else p.detach().requires_grad_() for n, p in theta.items()}
    for episodes in rounds:
        dist = _distribution(params, _valid(episodes, task, "observations"))
        loss = -(
            dist.log_prob(_valid(episodes, task, "actions")) * _valid(episodes, task, "advantages")
        ).mean()
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
        step = [g.detach() if first_order else g for g in grads]
        params = {n: p - inner_lr * g for (n, p), g in zip(params.items(), step, strict=True)}
    return params


def meta_objective(
    theta: Params, batch: MetaBatch, surrogate: Surrogate, inner_lr: float, first_order: bool = False
) -> Tensor:
    """J(θ) = mean over tasks of the surrogate at each task's adapted parameters, one task at a time."""
    losses = []
    for task in range(batch.post.num_tasks):
        params = _adapt_task(theta, batch.pre, task, inner_lr, first_order)
        logp = _distribution(params, _valid(batch.post, task, "observations")).log_prob(
            _valid(batch.post, task, "actions")
        )
        old = _valid(batch.post, task, "log_probs")
        adv = _valid(batch.post, task, "advantages")
        losses.append(surrogate(logp[None], old[None], adv[None], torch.ones_like(adv)[None])[0])
    return torch.stack(losses).mean()


def mean_kl(theta: Params, batch: MetaBatch, inner_lr: float, first_order: bool = False) -> Tensor:
    """mean_i KL(π_sampled,i ‖ π_θ'_i) on the post-update observations, one task at a time."""
    kls = []
    for task in range(batch.post.num_tasks):
        params = _adapt_task(theta, batch.pre, task, inner_lr, first_order)
        new = _distribution(params, _valid(batch.post, task, "observations"))
        means = _valid(batch.post, task, "means")
        old = Independent(Normal(means, batch.post.log_std[task].exp().expand_as(means)), 1)
        kls.append(kl_divergence(old, new).mean())
    return torch.stack(kls).mean()


def meta_gradient(
    theta: Params, batch: MetaBatch, surrogate: Surrogate, inner_lr: float, first_order: bool = False
) -> Params:
    """∇_θ J(θ) by the loop."""
    theta = {n: p.detach().requires_grad_() for n, p in theta.items()}
    grads = torch.autograd.grad(
        meta_objective(theta, batch, surrogate, inner_lr, first_order), list(theta.values())
    )
    return dict(zip(theta, grads, strict=True))


def kl_hvp(
    theta: Params, batch: MetaBatch, vector: Params, inner_lr: float, first_order: bool = False
) -> Params:
    """∇²f(θ) v of the mean KL by double backward over the loop, rebuilt per call as garage does."""
    theta = {n: p.detach().requires_grad_() for n, p in theta.items()}
    grads = torch.autograd.grad(
        mean_kl(theta, batch, inner_lr, first_order), list(theta.values()), create_graph=True
    )
    dot = sum((g * vector[n]).sum() for n, g in zip(theta, grads, strict=True))
    return dict(zip(theta, torch.autograd.grad(dot, list(theta.values())), strict=True))


def mean_entropy(theta: Params, batch: MetaBatch, inner_lr: float) -> Tensor:
    """Entropy of each task's adapted policy, averaged over tasks, one task at a time."""
    entropies = []
    for task in range(batch.post.num_tasks):
        params = _adapt_task(theta, batch.pre, task, inner_lr, first_order=True)
        log_std = params["log_std"].detach()
        entropies.append(Normal(torch.zeros_like(log_std), log_std.exp()).entropy().sum())
    return torch.stack(entropies).mean()


# The outer losses, written apart from maml.trpo, maml.ppo and maml.vpg so that the oracle shares no
# loss with the code it checks. Each takes one task's valid samples, ``[1, n]`` → ``[1]``.


def trpo_surrogate(log_prob_new: Tensor, log_prob_old: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """TRPO's loss ``−mean(π_new/π_old · A)`` over one task's valid samples: ``[1, n]`` → ``[1]``."""
    ratio = torch.exp(log_prob_new - log_prob_old)
    return -(ratio * advantages * mask).sum(-1) / mask.sum(-1)


def vpg_surrogate(log_prob_new: Tensor, log_prob_old: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """VPG's loss ``−mean(log π_new · A)`` over one task's valid samples (``log_prob_old`` unused)."""
    del log_prob_old
    return -(log_prob_new * advantages * mask).sum(-1) / mask.sum(-1)


def ppo_surrogate(clip_range: float) -> Surrogate:
    """PPO's clipped loss in the form of OpenAI's Spinning Up, ``−mean(min(r·A, g(ε, A)))`` with
    ``g(ε, A) = (1 + ε)·A`` for ``A ≥ 0`` and ``(1 − ε)·A`` for ``A < 0``: Schulman et al. 2017, eq. 7, whose
    ``min(r·A, clip(r, 1 − ε, 1 + ε)·A)`` is ``r·A`` capped at ``g(ε, A)`` (``r = π_new / π_old``)."""

    def surrogate(log_prob_new: Tensor, log_prob_old: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
        ratio = torch.exp(log_prob_new - log_prob_old)
        bound = torch.where(advantages >= 0, (1.0 + clip_range) * advantages, (1.0 - clip_range) * advantages)
        return -(torch.minimum(ratio * advantages, bound) * mask).sum(-1) / mask.sum(-1)

    return surrogate


def _flat(tensors) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflat(vector: Tensor, like: Params) -> Params:
    sizes = [p.numel() for p in like.values()]
    return {n: v.view_as(p) for (n, p), v in zip(like.items(), vector.split(sizes), strict=True)}


def trpo_step(
    theta: Params, batch: MetaBatch, maml_cfg: MAMLConfig, cfg: TRPOConfig
) -> tuple[Params, dict[str, float]]:
    """MAML-TRPO's outer step as garage runs it: the per-task loop everywhere, the HVP rebuilt per call.

    garage's ConjugateGradientOptimizer: gradient of the meta-objective; ``(H + damping·I) s = g`` by
    conjugate gradient where each product re-adapts every task and differentiates the mean KL twice; step
    ``sqrt(2·max_kl / sᵀAs)·s``; backtracking ``ratio**k`` until the surrogate improves and KL ≤ max_kl,
    else θ is kept. Same statistics as :func:`maml.trpo.trpo_step` (the reference it is compared with).
    """
    lr, first_order = maml_cfg.inner_lr, maml_cfg.first_order
    theta = {n: p.detach() for n, p in theta.items()}
    surrogate = trpo_surrogate
    grad = _flat(meta_gradient(theta, batch, surrogate, lr, first_order).values())

    def damped_hvp(v: Tensor) -> Tensor:
        return _flat(kl_hvp(theta, batch, _unflat(v, theta), lr, first_order).values()) + cfg.cg_damping * v

    def evaluate(params: Params) -> tuple[float, float]:
        loss = meta_objective(params, batch, surrogate, lr, first_order=True).item()
        return loss, mean_kl(params, batch, lr, first_order=True).item()

    direction = conjugate_gradient(damped_hvp, grad, cfg.cg_iters)
    step = math.sqrt(2.0 * cfg.max_kl / ((direction @ damped_hvp(direction)).item() + 1e-8)) * direction
    loss_before, kl_before = evaluate(theta)
    old = _flat(theta.values())
    accepted, tries = False, 0
    for k in range(cfg.max_backtracks):
        tries = k + 1
        candidate = _unflat(old - cfg.backtrack_ratio**k * step, theta)
        loss_after, kl_after = evaluate(candidate)
        if loss_after < loss_before and kl_after <= cfg.max_kl:
            accepted = math.isfinite(loss_after) and math.isfinite(kl_after)
            break
    new_theta = candidate if accepted else theta
    if not accepted:
        loss_after, kl_after = loss_before, kl_before
    stats = {
        "LossBefore": loss_before,
        "LossAfter": loss_after,
        "dLoss": loss_before - loss_after,
        "KLBefore": kl_before,
        "KLAfter": kl_after,
        "Entropy": mean_entropy(new_theta, batch, lr).item(),
        "LineSearchTries": float(tries),
        "StepAccepted": float(accepted),
    }
    return {n: p.detach().clone() for n, p in new_theta.items()}, stats
