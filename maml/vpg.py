"""MAML-VPG's outer step: Adam on the policy-gradient surrogate −mean(log π_θ'(a|s) · A) of the post-update
episodes (Williams 1992; Finn et al. 2017, Algorithm 3), differentiated through the adaptation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from maml.adam_outer import adam_outer_step
from maml.config import AdamConfig, MAMLConfig
from maml.meta import MetaBatch, policy_gradient_loss
from maml.policy import Params


def surrogate(log_prob_new: Tensor, log_prob_old: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """``−mean(log π · A)`` per task (``log_prob_old`` is unused); ``[T, M]`` → ``[T]``."""
    del log_prob_old
    return policy_gradient_loss(log_prob_new, advantages, mask)


def vpg_step(
    theta: Params, optimizer: torch.optim.Optimizer, batch: MetaBatch, maml_cfg: MAMLConfig, cfg: AdamConfig
) -> dict[str, float]:
    """One MAML-VPG meta-update (``cfg.epochs`` Adam steps); θ is updated in place."""
    return adam_outer_step(
        theta, optimizer, batch, maml_cfg, surrogate, cfg.epochs, outer_gradient=cfg.outer_gradient
    )
