"""Gaussian MLP policy as pure functions of a parameter dict, batched over tasks.

Parameters are a dict of tensors. *Meta-parameters* θ have no task dimension (``w0: [obs, h0]``);
*task-batched* parameters carry a leading task dimension ``T`` (``w0: [T, obs, h0]``), one row per task's
adapted θ'_i. Every function below takes task-batched parameters and observations ``[T, M, obs]`` (any
number ``M`` of samples per task), so that all tasks go through one chain of batched matrix products.
:func:`broadcast` turns θ into task-batched parameters without copying.

The policy is garage's GaussianMLPPolicy: tanh hidden layers, a linear mean head, and a state-independent
learnable log standard deviation (initial std 1.0). Weights use Xavier-uniform initialisation, biases zero.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

Params = dict[str, Tensor]

LOG_2PI = math.log(2.0 * math.pi)


def init_params(
    obs_dim: int,
    act_dim: int,
    hidden_sizes: Sequence[int],
    generator: torch.Generator,
    *,
    init_std: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Params:
    """Fresh meta-parameters θ: ``w{k}: [in, out]``, ``b{k}: [out]`` per layer, ``log_std: [act]``.

    The generator is a CPU ``torch.Generator`` so that the same seed gives the same θ on every device.
    """
    sizes = [obs_dim, *hidden_sizes, act_dim]
    params: Params = {}
    for k, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w = (torch.rand(fan_in, fan_out, generator=generator, dtype=torch.float64) * 2.0 - 1.0) * bound
        params[f"w{k}"] = w.to(dtype=dtype, device=device)
        params[f"b{k}"] = torch.zeros(fan_out, dtype=dtype, device=device)
    params["log_std"] = torch.full((act_dim,), math.log(init_std), dtype=dtype, device=device)
    return params


def num_layers(params: Params) -> int:
    """Number of linear layers (hidden layers + output head)."""
    return sum(1 for name in params if name.startswith("w"))


def broadcast(params: Params, num_tasks: int) -> Params:
    """θ → task-batched parameters ``[T, ...]`` (an expanded view: gradients flow back to θ, summed)."""
    return {name: p.unsqueeze(0).expand(num_tasks, *p.shape) for name, p in params.items()}


def mean_action(params: Params, obs: Tensor) -> Tensor:
    """Mean of the action distribution: task-batched ``params``, ``obs [T, M, obs]`` → ``[T, M, act]``."""
    layers = num_layers(params)
    x = obs
    for k in range(layers):
        x = torch.baddbmm(params[f"b{k}"].unsqueeze(1), x, params[f"w{k}"])
        if k < layers - 1:
            x = torch.tanh(x)
    return x


def log_prob(mean: Tensor, log_std: Tensor, actions: Tensor) -> Tensor:
    """Log density of diagonal Gaussians, summed over action dimensions.

    ``mean, actions [T, M, act]``; ``log_std [T, act]`` (state-independent) → ``[T, M]``.
    """
    return log_prob_of_standardized(standardized(mean, log_std, actions), log_std)


def standardized(mean: Tensor, log_std: Tensor, actions: Tensor) -> Tensor:
    """``z = (a − μ) e^{−s}``, ``[T, M, act]`` (shapes as in :func:`log_prob`)."""
    return (actions - mean) * torch.exp(-log_std.unsqueeze(1))


def log_prob_of_standardized(z: Tensor, log_std: Tensor) -> Tensor:
    """:func:`log_prob` from the standardized residuals ``z`` of :func:`standardized`."""
    return -0.5 * z.square().sum(-1) - log_std.unsqueeze(1).sum(-1) - 0.5 * z.shape[-1] * LOG_2PI


def entropy(log_std: Tensor) -> Tensor:
    """Entropy of the diagonal Gaussian: ``log_std [..., act]`` → ``[...]``."""
    return (log_std + 0.5 * (LOG_2PI + 1.0)).sum(-1)


def kl_divergence(mean_p: Tensor, log_std_p: Tensor, mean_q: Tensor, log_std_q: Tensor) -> Tensor:
    """KL(p ‖ q) between diagonal Gaussians, summed over action dimensions.

    ``mean_* [T, M, act]``, ``log_std_* [T, act]`` → ``[T, M]``.
    """
    log_std_p, log_std_q = log_std_p.unsqueeze(1), log_std_q.unsqueeze(1)
    var_ratio = torch.exp(2.0 * (log_std_p - log_std_q))
    mean_term = (mean_p - mean_q).square() * torch.exp(-2.0 * log_std_q)
    return (0.5 * (var_ratio + mean_term - 1.0) - (log_std_p - log_std_q)).sum(-1)


def sample(
    params: Params, obs: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Sample actions for every task at once.

    Task-batched ``params``, ``obs [T, M, obs]`` → ``(actions, log_probs, means)``, shapes ``[T, M, act]``,
    ``[T, M]``, ``[T, M, act]``. Noise comes from ``generator`` (on the parameters' device), so sampling is
    reproducible; nothing here builds an autograd graph.
    """
    with torch.no_grad():
        mean = mean_action(params, obs)
        log_std = params["log_std"]
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        actions = mean + noise * torch.exp(log_std).unsqueeze(1)
        return actions, log_prob(mean, log_std, actions), mean
