"""The Adam outer step shared by MAML-PPO and MAML-VPG.

garage's MAMLPPO/MAMLVPG call ``Adam.step(closure)`` with a closure that re-adapts every task and overwrites
``.grad`` with inner-loss gradients, so the step follows the last task's pre-adaptation gradient, never the
meta-gradient (its bug 2). Here each epoch computes the meta-gradient through the adaptation into θ's
``.grad``, and only then steps.

The meta-gradient comes from the explicit batched passes of :mod:`maml.gauss_newton` (one inner step, or
first order: the surrogate's own derivative is still autograd's, on the post-update means) and the loss, KL
and entropy statistics from its value-only passes; other adaptations back-propagate the meta-objective
through autograd's graph (``explicit_passes=False`` forces that path).

``outer_gradient="garage_adam_closure"`` reproduces garage's behaviour as an ablation: the step follows the
last task's inner-loss gradient at θ on its pre-update episodes (:func:`garage_closure_gradient`).
"""

from __future__ import annotations

import torch

from maml import gauss_newton, meta, policy
from maml.config import AdamConfig, MAMLConfig
from maml.meta import MetaBatch, Surrogate
from maml.mlp_passes import Buffers, Layout
from maml.policy import Params


def make_optimizer(theta: Params, cfg: AdamConfig) -> torch.optim.Adam:
    """Adam over θ's tensors (which must be leaves that require grad), with garage's ε."""
    return torch.optim.Adam(list(theta.values()), lr=cfg.outer_lr, eps=cfg.eps)


def _loss_kl_entropy(theta: Params, batch: MetaBatch, maml_cfg: MAMLConfig, surrogate: Surrogate):
    adapted = meta.adapt(theta, batch.pre, maml_cfg.inner_lr, first_order=True)
    with torch.no_grad():
        adapted = {n: p.detach() for n, p in adapted.items()}
        return (
            meta.surrogate_loss(adapted, batch.post, surrogate).item(),
            meta.mean_kl(adapted, batch.post).item(),
            meta.mean_entropy(adapted).item(),
        )


def _set_meta_gradient(theta: Params, batch: MetaBatch, maml_cfg: MAMLConfig, surrogate: Surrogate) -> None:
    """θ's ``.grad`` ← ∇_θ of the meta-objective, by the explicit passes."""
    flat, _ = gauss_newton.meta_gradient(theta, batch, surrogate, maml_cfg.inner_lr, maml_cfg.first_order)
    grads = Layout.of(theta).to_params(flat)
    for name, p in theta.items():
        p.grad = grads[name].reshape(p.shape).clone()


def garage_closure_gradient(theta: Params, batch: MetaBatch) -> Params:
    """What garage's ``Adam.step(closure)`` steps along (its bug 2): the closure re-adapts task after task,
    each ``_adapt`` zeroing ``.grad`` and back-propagating that task's inner (VPG) loss at θ, so ``.grad``
    ends as the last task's inner-loss gradient on its pre-update episodes. One inner step only."""
    if len(batch.pre) != 1:
        raise ValueError("garage's Adam-closure gradient is defined here for one inner step")
    leaves = {n: p.detach().requires_grad_() for n, p in theta.items()}
    with torch.enable_grad():
        last_task_loss = meta.vpg_loss(policy.broadcast(leaves, batch.pre[0].num_tasks), batch.pre[0])[-1]
        grads = torch.autograd.grad(last_task_loss, list(leaves.values()))
    return dict(zip(leaves, grads, strict=True))


def adam_outer_step(
    theta: Params,
    optimizer: torch.optim.Optimizer,
    batch: MetaBatch,
    maml_cfg: MAMLConfig,
    surrogate: Surrogate,
    epochs: int = 1,
    explicit_passes: bool = True,
    outer_gradient: str = "meta",
) -> dict[str, float]:
    """``epochs`` optimizer steps along the meta-gradient of ``surrogate``; updates θ in place.

    θ are the leaf tensors the optimizer holds. Returns garage's statistics for the meta-update.
    ``outer_gradient="garage_adam_closure"`` steps along :func:`garage_closure_gradient` instead (ablation).
    """
    explicit = explicit_passes and gauss_newton.supports(len(batch.pre), maml_cfg.first_order)
    scratch = Buffers()

    def statistics() -> tuple[float, float, float]:
        if not explicit:
            return _loss_kl_entropy(theta, batch, maml_cfg, surrogate)
        detached = {name: p.detach() for name, p in theta.items()}
        return gauss_newton.evaluate(detached, batch, surrogate, maml_cfg.inner_lr, scratch)

    loss_before, kl_before, _ = statistics()
    for _ in range(epochs):
        optimizer.zero_grad(set_to_none=True)
        if outer_gradient == "garage_adam_closure":
            for name, g in garage_closure_gradient(theta, batch).items():
                theta[name].grad = g.clone()
        elif explicit:
            _set_meta_gradient(theta, batch, maml_cfg, surrogate)
        else:
            loss, _ = meta.meta_objective(theta, batch, surrogate, maml_cfg.inner_lr, maml_cfg.first_order)
            loss.backward()
        optimizer.step()
    loss_after, kl_after, entropy = statistics()
    return {
        "LossBefore": loss_before,
        "LossAfter": loss_after,
        "dLoss": loss_before - loss_after,
        "KLBefore": kl_before,
        "KLAfter": kl_after,
        "Entropy": entropy,
    }
