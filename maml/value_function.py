"""garage's value function as its MAML examples use it: an ablation (garage's bug 1), never the default.

garage's examples build a ``GaussianMLPValueFunction`` with hidden sizes (32, 32), tanh hidden layers, a
linear output, Xavier-uniform weights and zero biases, and read its Gaussian's mean as the baseline. MAML
deep-copies the value function, computes the fitting loss on the copy and steps an optimizer over the
original, so neither ever changes (garage #2301): every advantage of a run is computed against the network
as it was initialised. :func:`init` draws that network once per run; :func:`values` evaluates it for all
tasks at once (one network shared by every task, as in garage).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

HIDDEN_SIZES = (32, 32)
"""garage's ``GaussianMLPValueFunction`` default, used by all five examples."""

ValueParams = list[tuple[Tensor, Tensor]]
"""``[(weight [out, in], bias [out]), ...]`` per layer, in ``torch.nn.Linear``'s layout."""


def init(
    obs_dim: int, generator: torch.Generator, hidden_sizes: tuple[int, ...] = HIDDEN_SIZES
) -> ValueParams:
    """Xavier-uniform weights ``U(−a, a)``, ``a = √(6 / (fan_in + fan_out))``, and zero biases (garage's
    ``hidden_w_init`` / ``output_w_init`` and ``*_b_init`` defaults), float32."""
    sizes = (obs_dim, *hidden_sizes, 1)
    layers = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        weight = torch.nn.init.xavier_uniform_(torch.empty(fan_out, fan_in), generator=generator)
        layers.append((weight, torch.zeros(fan_out)))
    return layers


def values(params: ValueParams, observations: Tensor, mask: Tensor) -> Tensor:
    """The untrained network's values ``[T, E, H]`` for ``observations [T, E, H, obs]`` (0 on padding)."""
    x = observations
    for k, (weight, bias) in enumerate(params):
        x = x @ weight.to(x).T + bias.to(x)
        if k < len(params) - 1:
            x = torch.tanh(x)
    return x.squeeze(-1) * mask
