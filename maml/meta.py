"""MAML's inner adaptation and meta-objective, for all tasks of a meta-batch in one computation.

Finn, Abbeel & Levine 2017, Algorithm 3. For task i with pre-update episodes D_i and post-update
episodes D'_i:

    θ'_i = θ − α ∇_θ L_VPG(θ; D_i)                         (inner step, eq. 1; repeated per update)
    J(θ) = 1/T Σ_i L_outer(θ'_i(θ); D'_i)                   (meta-objective)

The inner step keeps its graph (``create_graph``) so that ∇_θ J contains the second-order term
−α ∇²L_VPG; ``first_order=True`` drops it (FOMAML). θ is broadcast to a task axis once, so every
operation below runs on ``[T, ...]`` tensors with no per-task Python loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from maml import policy
from maml.policy import Params
from maml.samples import Episodes, masked_mean

Surrogate = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""``(log_prob_new, log_prob_old, advantages, mask)``, each ``[T, M]`` → per-task loss ``[T]``."""


@dataclass(frozen=True)
class MetaBatch:
    """What one meta-update consumes: the pre-update rounds (one per inner step) and the post-update round."""

    pre: tuple[Episodes, ...]
    """Episodes sampled before each inner step (``num_grad_updates`` of them), advantages filled."""
    post: Episodes
    """Episodes sampled with the adapted parameters, advantages filled."""

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> MetaBatch:
        """Every round moved (and floating tensors cast) like :meth:`Episodes.to`."""
        return MetaBatch(pre=tuple(e.to(device, dtype) for e in self.pre), post=self.post.to(device, dtype))


def new_log_prob(params: Params, episodes: Episodes) -> Tensor:
    """log π_params(a|s) for every sample of every task: task-batched params → ``[T, E·H]``."""
    mean = policy.mean_action(params, episodes.flat("observations"))
    return policy.log_prob(mean, params["log_std"], episodes.flat("actions"))


def policy_gradient_loss(log_prob: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """``−mean(log π(a|s) · A)`` over the valid samples of each task: ``[T, M]`` → ``[T]``."""
    return -masked_mean(log_prob * advantages, mask)


def vpg_loss(params: Params, episodes: Episodes) -> Tensor:
    """The inner loss (the policy-gradient loss at ``params``), per task: ``[T]``."""
    logp = new_log_prob(params, episodes)
    return policy_gradient_loss(logp, episodes.flat("advantages"), episodes.flat("mask"))


def inner_step(params: Params, episodes: Episodes, inner_lr: float, create_graph: bool) -> Params:
    """One SGD step on the VPG loss for every task at once (task-batched params in and out).

    Tasks do not interact, so the gradient of the summed loss w.r.t. the task-batched parameters is each
    task's own gradient.
    """
    names = list(params)
    grads = torch.autograd.grad(
        vpg_loss(params, episodes).sum(), [params[n] for n in names], create_graph=create_graph
    )
    return {n: params[n] - inner_lr * g for n, g in zip(names, grads, strict=True)}


def adapt(theta: Params, rounds: Sequence[Episodes], inner_lr: float, first_order: bool = False) -> Params:
    """θ → task-batched θ' after ``len(rounds)`` inner steps (step k uses ``rounds[k]``).

    With ``first_order=False`` the result is differentiable w.r.t. θ through the inner gradients
    (full second order, as garage and the MAML paper); with ``first_order=True`` the inner gradients are
    treated as constants.
    """
    if not rounds:
        raise ValueError("adapt needs at least one round of pre-update episodes")
    params = policy.broadcast(theta, rounds[0].num_tasks)
    with torch.enable_grad():
        for episodes in rounds:
            if not any(p.requires_grad for p in params.values()):
                params = {n: p.detach().requires_grad_() for n, p in params.items()}
            params = inner_step(params, episodes, inner_lr, create_graph=not first_order)
            if first_order:
                params = _reattach(theta, params)
    return params


def _reattach(theta: Params, adapted: Params) -> Params:
    """θ' = θ + stop_gradient(θ' − θ): the first-order approximation's graph (∂θ'/∂θ = I)."""
    return {n: theta[n].unsqueeze(0) + (adapted[n] - theta[n].unsqueeze(0)).detach() for n in theta}


def surrogate_loss(adapted: Params, episodes: Episodes, surrogate: Surrogate) -> Tensor:
    """The outer algorithm's loss on the post-update episodes, averaged over tasks (a scalar)."""
    per_task = surrogate(
        new_log_prob(adapted, episodes),
        episodes.flat("log_probs"),
        episodes.flat("advantages"),
        episodes.flat("mask"),
    )
    return per_task.mean()


def mean_kl(adapted: Params, episodes: Episodes) -> Tensor:
    """mean_i KL(π_sampled,i ‖ π_θ'_i) over the post-update observations (garage's constraint): a scalar."""
    mean = policy.mean_action(adapted, episodes.flat("observations"))
    kl = policy.kl_divergence(episodes.flat("means"), episodes.log_std, mean, adapted["log_std"])
    return masked_mean(kl, episodes.flat("mask")).mean()


def mean_entropy(adapted: Params) -> Tensor:
    """Entropy of the adapted policies, averaged over tasks (state-independent std): a scalar."""
    return policy.entropy(adapted["log_std"]).mean()


def meta_objective(
    theta: Params, batch: MetaBatch, surrogate: Surrogate, inner_lr: float, first_order: bool = False
) -> tuple[Tensor, Params]:
    """J(θ) and the adapted parameters it was evaluated at (reuse them for the KL constraint)."""
    adapted = adapt(theta, batch.pre, inner_lr, first_order)
    return surrogate_loss(adapted, batch.post, surrogate), adapted


def requires_grad(theta: Params) -> Params:
    """Detached leaf copies of θ that record gradients (the variables of one outer step)."""
    return {n: p.detach().clone().requires_grad_() for n, p in theta.items()}


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate tensors into one vector (parameter order = dict order)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: Tensor, like: Params) -> Params:
    """Split a vector into tensors shaped like ``like`` (dict order)."""
    out, start = {}, 0
    for name, p in like.items():
        out[name] = vector[start : start + p.numel()].view_as(p)
        start += p.numel()
    return out
