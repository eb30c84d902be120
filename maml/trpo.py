"""MAML-TRPO's outer step: a trust-region step on the meta-objective (Finn et al. 2017, §5.3).

The objective is the importance-sampled surrogate on the post-update episodes,

    L(θ) = −1/T Σ_i mean_t[ π_θ'_i(a_t|s_t) / π_sampled,i(a_t|s_t) · A_t ],

and the constraint the mean KL between each task's sampling policy and its re-adapted policy,
f(θ) = 1/T Σ_i mean_t KL(π_sampled,i ‖ π_θ'_i(θ)), both differentiated through the adaptation θ → θ'_i.
Schulman et al. 2015 (Appendix C): solve (H + damping·I) s = g by conjugate gradient with Hessian-vector
products of f, scale s to the trust region, ‖step‖_H² = 2·max_kl, then backtrack until the surrogate
improves and f ≤ max_kl; otherwise keep θ unchanged.

The meta-gradient and the products come from :mod:`maml.gauss_newton` (the exact Hessian at θ as Jᵀ F J,
explicit batched passes over constants computed once per step) by default, or from autograd's double
backward through the adaptation (``TRPOConfig.hvp``; also the fallback for several second-order steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from maml import cg, cuda_graphs, gauss_newton, meta, mlp_passes
from maml.config import MAMLConfig, TRPOConfig
from maml.meta import MetaBatch
from maml.policy import Params
from maml.samples import Episodes, masked_mean


def surrogate(log_prob_new: Tensor, log_prob_old: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """−mean(ratio · A) per task, ratio = π_new / π_sampled. Shapes ``[T, M]`` → ``[T]``."""
    ratio = torch.exp(log_prob_new - log_prob_old)
    return -masked_mean(ratio * advantages, mask)


def kl_hvp(theta: Params, adapted: Params, post: Episodes) -> Callable[[Tensor], Tensor]:
    """``v ↦ ∇²f(θ) v`` for the mean-KL constraint through the adaptation, by double backward.

    ``theta`` are leaf tensors that require grad and ``adapted`` = θ'(θ) built from them with its graph.
    The returned function reuses one graph of ∇f (built once), so each product costs one backward pass.
    """
    names = list(theta)
    kl_grad = meta.flatten(
        torch.autograd.grad(meta.mean_kl(adapted, post), [theta[n] for n in names], create_graph=True)
    )

    def hvp(vector: Tensor) -> Tensor:
        grads = torch.autograd.grad(kl_grad @ vector, [theta[n] for n in names], retain_graph=True)
        return meta.flatten(grads)

    return hvp


def _evaluate(theta: Params, batch: MetaBatch, maml_cfg: MAMLConfig) -> tuple[float, float, float]:
    """Surrogate loss, mean KL and mean entropy at θ (no graph kept beyond the inner gradients)."""
    adapted = meta.adapt(theta, batch.pre, maml_cfg.inner_lr, first_order=True)
    with torch.no_grad():
        adapted = {n: p.detach() for n, p in adapted.items()}
        loss = meta.surrogate_loss(adapted, batch.post, surrogate)
        kl = meta.mean_kl(adapted, batch.post)
    return loss.item(), kl.item(), meta.mean_entropy(adapted).item()


@dataclass(frozen=True)
class _LocalModel:
    """What the trust-region step needs at θ, however it was computed."""

    loss: float
    kl: float
    entropy: float
    gradient: Tensor
    kl_hvp: Callable[[Tensor], Tensor]
    evaluate: Callable[[Params], tuple[float, float, float]]


def _linearize_double_backward(theta: Params, batch: MetaBatch, maml_cfg: MAMLConfig) -> _LocalModel:
    """The generic autograd path: meta-gradient by backward, KL-HVP by double backward (any inner steps)."""
    theta = meta.requires_grad(theta)
    names = list(theta)
    loss, adapted = meta.meta_objective(theta, batch, surrogate, maml_cfg.inner_lr, maml_cfg.first_order)
    grad = meta.flatten(torch.autograd.grad(loss, [theta[n] for n in names], retain_graph=True))
    detached = {n: p.detach() for n, p in adapted.items()}
    return _LocalModel(
        loss=loss.item(),
        kl=meta.mean_kl(detached, batch.post).item(),
        entropy=meta.mean_entropy(detached).item(),
        gradient=grad,
        kl_hvp=kl_hvp(theta, adapted, batch.post),
        evaluate=lambda candidate: _evaluate(candidate, batch, maml_cfg),
    )


def _linearize_gauss_newton(
    theta: Params, batch: MetaBatch, maml_cfg: MAMLConfig, use_graphs: bool
) -> _LocalModel:
    """The explicit batched passes of :mod:`maml.gauss_newton`: HVP = Jᵀ F J with precomputed constants,
    replayed from a CUDA graph on a GPU when ``use_graphs``."""
    point = gauss_newton.linearize(theta, batch, surrogate, maml_cfg.inner_lr, maml_cfg.first_order)
    scratch = mlp_passes.Buffers()
    kl_hvp = point.kl_hvp
    if use_graphs and cuda_graphs.available(point.gradient):
        kl_hvp = cuda_graphs.CapturedFunction(point.kl_hvp, point.gradient)
    return _LocalModel(
        loss=point.loss,
        kl=point.kl,
        entropy=point.entropy,
        gradient=point.gradient,
        kl_hvp=kl_hvp,
        evaluate=lambda candidate: gauss_newton.evaluate(
            candidate, batch, surrogate, maml_cfg.inner_lr, scratch
        ),
    )


def trpo_step(
    theta: Params, batch: MetaBatch, maml_cfg: MAMLConfig, cfg: TRPOConfig
) -> tuple[Params, dict[str, float]]:
    """One MAML-TRPO meta-update: new θ (detached tensors) and garage's statistics.

    ``cfg.hvp`` picks how the meta-gradient and the KL Hessian-vector products are computed: the explicit
    passes (``"gauss_newton"``, for one inner step or first order) or the generic double backward (any other
    adaptation falls back to it). On rejection (no backtracking ratio improves the surrogate within the trust
    region, or a non-finite value) the returned θ holds the input values unchanged.
    """
    theta = {name: theta[name] for name in mlp_passes.Layout.of(theta).names}  # flat vectors: canonical order
    if cfg.hvp == "gauss_newton" and gauss_newton.supports(len(batch.pre), maml_cfg.first_order):
        point = _linearize_gauss_newton(theta, batch, maml_cfg, cfg.cuda_graphs)
    else:
        point = _linearize_double_backward(theta, batch, maml_cfg)

    def damped_hvp(v: Tensor) -> Tensor:
        return point.kl_hvp(v) + cfg.cg_damping * v  # a new tensor: a graph's static output is not kept

    solution = cg.solve(damped_hvp, point.gradient, cfg.cg_iters)
    direction = solution.x
    curvature = solution.curvature(point.gradient).item()  # xᵀ(H + damping·I)x, no 11th product
    step = math.sqrt(2.0 * cfg.max_kl / (curvature + 1e-8)) * direction

    old = meta.flatten([p.detach() for p in theta.values()])
    accepted, tries = False, 0
    for k in range(cfg.max_backtracks):
        tries = k + 1
        candidate = meta.unflatten(old - cfg.backtrack_ratio**k * step, theta)
        loss_after, kl_after, entropy_after = point.evaluate(candidate)
        if loss_after < point.loss and kl_after <= cfg.max_kl:
            accepted = math.isfinite(loss_after) and math.isfinite(kl_after)
            break
    entropy = point.entropy
    if accepted:
        new_theta = {n: p.detach().clone() for n, p in candidate.items()}
        entropy = entropy_after
    else:
        new_theta = {n: p.detach().clone() for n, p in theta.items()}
        loss_after, kl_after = point.loss, point.kl

    stats = {
        "LossBefore": point.loss,
        "LossAfter": loss_after,
        "dLoss": point.loss - loss_after,
        "KLBefore": point.kl,
        "KLAfter": kl_after,
        "Entropy": entropy,
        "LineSearchTries": float(tries),
        "StepAccepted": float(accepted),
    }
    return new_theta, stats
