"""Synthetic meta-batches with the exact structure training produces, for tests and kernel benchmarks.

Observations and rewards are random, but actions, log-probabilities and means come from the policy that
would have sampled them: round k of the pre-update episodes from θ adapted k times, the post-update
episodes from the fully adapted θ'. So likelihood ratios are exactly 1 and the KL exactly 0 at θ, as in a
real meta-update.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from maml import meta, policy
from maml.advantages import process_episodes
from maml.meta import MetaBatch
from maml.policy import Params
from maml.samples import Episodes


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes of a synthetic meta-batch."""

    num_tasks: int = 3
    """T."""
    episodes: int = 2
    """E per task."""
    horizon: int = 5
    """H, steps per episode (before padding is cut)."""
    obs_dim: int = 3
    act_dim: int = 2
    hidden_sizes: tuple[int, ...] = (4,)
    padded: bool = True
    """Make some episodes shorter than H (masked), so the padding logic is exercised."""


def random_episodes(params: Params, spec: SyntheticSpec, generator: torch.Generator) -> Episodes:
    """Episodes sampled from task-batched ``params`` on random observations and rewards (no advantages)."""
    dtype = params["w0"].dtype
    shape = (spec.num_tasks, spec.episodes, spec.horizon)
    obs = torch.randn(*shape, spec.obs_dim, generator=generator, dtype=torch.float64).to(dtype)
    rewards = torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)
    mask = torch.ones(shape, dtype=dtype)
    if spec.padded:
        lengths = torch.randint(max(1, spec.horizon // 2), spec.horizon + 1, shape[:2], generator=generator)
        mask = (torch.arange(spec.horizon).view(1, 1, -1) < lengths.unsqueeze(-1)).to(dtype)
    obs = obs * mask.unsqueeze(-1)
    flat_obs = obs.reshape(spec.num_tasks, -1, spec.obs_dim)
    with torch.no_grad():
        mean = policy.mean_action(params, flat_obs)
        noise = torch.randn(mean.shape, generator=generator, dtype=torch.float64).to(dtype)
        actions = mean + noise * params["log_std"].exp().unsqueeze(1)
        logp = policy.log_prob(mean, params["log_std"], actions)
    return Episodes(
        observations=obs,
        actions=actions.reshape(*shape, spec.act_dim) * mask.unsqueeze(-1),
        rewards=rewards * mask,
        mask=mask,
        log_probs=logp.reshape(shape) * mask,
        means=mean.reshape(*shape, spec.act_dim),
        log_std=params["log_std"].detach().clone(),
    )


def make_meta_batch(
    theta: Params,
    spec: SyntheticSpec,
    generator: torch.Generator,
    *,
    num_grad_updates: int = 1,
    inner_lr: float = 0.1,
    discount: float = 0.99,
    gae_lambda: float = 1.0,
) -> MetaBatch:
    """A meta-batch as the sampler would produce it for meta-parameters θ."""
    pre: list[Episodes] = []
    params = policy.broadcast({n: p.detach() for n, p in theta.items()}, spec.num_tasks)
    for _ in range(num_grad_updates):
        episodes = random_episodes(params, spec, generator)
        pre.append(process_episodes(episodes, discount, gae_lambda))
        params = {n: p.detach() for n, p in meta.adapt(theta, pre, inner_lr).items()}
    post = process_episodes(random_episodes(params, spec, generator), discount, gae_lambda)
    return MetaBatch(pre=tuple(pre), post=post)
