"""MAML-PPO's outer step: Adam on the clipped surrogate of the post-update episodes (Schulman et al. 2017,
eq. 7), differentiated through the adaptation. The likelihood ratio is taken against the adapted policy that
sampled the post-update episodes, so it is exactly 1 before the first outer step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from maml.adam_outer import adam_outer_step
from maml.config import AdamConfig, MAMLConfig
from maml.meta import MetaBatch, Surrogate
from maml.policy import Params
from maml.samples import masked_mean


def clipped_surrogate(clip_range: float) -> Surrogate:
    """``−mean(min(r·A, clip(r, 1−ε, 1+ε)·A))`` per task, ``r = π_new / π_sampled``; ``[T, M]`` → ``[T]``."""

    def surrogate(log_prob_new: Tensor, log_prob_old: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
        ratio = torch.exp(log_prob_new - log_prob_old)
        clipped = ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
        return -masked_mean(torch.minimum(ratio * advantages, clipped * advantages), mask)

    return surrogate


def ppo_step(
    theta: Params, optimizer: torch.optim.Optimizer, batch: MetaBatch, maml_cfg: MAMLConfig, cfg: AdamConfig
) -> dict[str, float]:
    """One MAML-PPO meta-update (``cfg.epochs`` Adam steps); θ is updated in place."""
    return adam_outer_step(
        theta,
        optimizer,
        batch,
        maml_cfg,
        clipped_surrogate(cfg.clip_range),
        cfg.epochs,
        outer_gradient=cfg.outer_gradient,
    )
