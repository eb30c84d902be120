"""Discounted returns, GAE and advantage centring over masked, padded ``[T, E, H]`` batches.

garage computes advantages per task: discounted returns (γ = 0.99), GAE with λ = 1.0 over a baseline
fitted to those returns, then centring. garage divides by the *variance* (its bug 3, which rescales the
inner learning rate by 1/std(A)); we centre by mean and standard deviation, per task over valid steps.
garage's behaviour stays available as an ablation (``scaling="garage_variance"``), as does its untrained
value function (a ``baseline`` from :mod:`maml.value_function`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from maml.baseline import fit_and_predict
from maml.samples import Episodes


def _discount_matrix(length: int, factor: float, like: Tensor) -> Tensor:
    """``[H, H]`` upper-triangular matrix with entries ``factor**(j - i)`` for ``j ≥ i``."""
    steps = torch.arange(length, device=like.device, dtype=like.dtype)
    powers = steps.unsqueeze(0) - steps.unsqueeze(1)
    return torch.where(powers >= 0, factor ** powers.clamp_min(0), torch.zeros((), dtype=like.dtype))


def discounted_returns(rewards: Tensor, mask: Tensor, discount: float) -> Tensor:
    """``R_t = Σ_{k ≥ t} γ^{k−t} r_k`` within each episode; padding gets 0. Shapes ``[..., H]``."""
    rewards = rewards * mask
    return rewards @ _discount_matrix(rewards.shape[-1], discount, rewards).T * mask


def gae(rewards: Tensor, values: Tensor, mask: Tensor, discount: float, gae_lambda: float) -> Tensor:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16) over padded episodes.

    ``δ_t = r_t + γ V(s_{t+1}) − V(s_t)`` with ``V = 0`` after the last valid step (garage's convention:
    episodes that end by time limit are not bootstrapped), ``A_t = Σ_k (γλ)^k δ_{t+k}``. Shapes ``[..., H]``.
    """
    values = values * mask
    next_values = torch.nn.functional.pad(values[..., 1:], (0, 1))
    deltas = (rewards + discount * next_values - values) * mask
    return deltas @ _discount_matrix(rewards.shape[-1], discount * gae_lambda, deltas).T * mask


def center(advantages: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """``(A − mean) / (std + eps)`` per task over valid steps (population std). Shapes ``[T, ...]``."""
    dims = tuple(range(1, advantages.dim()))
    count = mask.sum(dims, keepdim=True).clamp_min(1.0)
    mean = (advantages * mask).sum(dims, keepdim=True) / count
    var = ((advantages - mean).square() * mask).sum(dims, keepdim=True) / count
    return (advantages - mean) / (var.sqrt() + eps) * mask


def center_by_variance(advantages: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """garage's centring (its bug 3), an ablation: ``(A − mean) / (var + eps)`` per task over valid steps,
    with the unbiased variance (``torch.Tensor.var``'s default, as garage's ``advantage_flat.var()``)."""
    dims = tuple(range(1, advantages.dim()))
    count = mask.sum(dims, keepdim=True)
    mean = (advantages * mask).sum(dims, keepdim=True) / count.clamp_min(1.0)
    var = ((advantages - mean).square() * mask).sum(dims, keepdim=True) / (count - 1.0).clamp_min(1.0)
    return (advantages - mean) / (var + eps) * mask


Baseline = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``(observations [T, E, H, obs], returns [T, E, H], mask [T, E, H])`` → values ``[T, E, H]``."""
SCALINGS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "std": center,
    "garage_variance": center_by_variance,
}
"""``MAMLConfig.advantage_scaling`` → its centring function."""


def process_episodes(
    episodes: Episodes,
    discount: float,
    gae_lambda: float,
    baseline: Baseline = fit_and_predict,
    scaling: str = "std",
) -> Episodes:
    """Fill ``episodes.advantages``: GAE over ``baseline``'s values (by default the linear baseline fitted
    per task to this round's returns), centred per task by ``scaling`` (a key of :data:`SCALINGS`)."""
    returns = discounted_returns(episodes.rewards, episodes.mask, discount)
    values = baseline(episodes.observations, returns, episodes.mask)
    advantages = gae(episodes.rewards, values, episodes.mask, discount, gae_lambda)
    advantages = SCALINGS[scaling](advantages, episodes.mask)
    return replace(episodes, advantages=advantages.detach())
