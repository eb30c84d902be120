"""Sampled episodes of a meta-batch, as task-batched tensors.

Every tensor has the layout ``[T, E, H, ...]``: ``T`` tasks, ``E`` episodes per task, ``H`` time steps
(the longest episode; shorter ones are padded and masked out). The sampler fills everything but
``advantages``, which :func:`maml.advantages.process_episodes` adds.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


@dataclass(frozen=True)
class Episodes:
    """One sampling round for all tasks of a meta-batch."""

    observations: Tensor
    """``[T, E, H, obs]`` observation before each action."""
    actions: Tensor
    """``[T, E, H, act]`` actions as the policy emitted them (before any env-side scaling)."""
    rewards: Tensor
    """``[T, E, H]``."""
    mask: Tensor
    """``[T, E, H]`` 1.0 for real steps, 0.0 for padding (same dtype as the observations)."""
    log_probs: Tensor
    """``[T, E, H]`` log π(a|s) under the policy that sampled (detached)."""
    means: Tensor
    """``[T, E, H, act]`` mean of the sampling policy (detached): the KL constraint's reference."""
    log_std: Tensor
    """``[T, act]`` log std of the sampling policy (detached)."""
    advantages: Tensor | None = None
    """``[T, E, H]`` centred advantages, filled by :func:`maml.advantages.process_episodes`."""

    @property
    def num_tasks(self) -> int:
        return self.observations.shape[0]

    def flat(self, field: str) -> Tensor:
        """A field with episodes and time merged into one sample axis: ``[T, E*H, ...]``."""
        value = getattr(self, field)
        if value is None:
            raise ValueError(f"Episodes.{field} is not set (process the episodes first)")
        return value.reshape(value.shape[0], -1, *value.shape[3:])

    def task(self, index: int) -> Episodes:
        """The episodes of one task, keeping a task axis of size 1 (used by the per-task oracle)."""
        return Episodes(
            **{
                f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[index : index + 1])
                for f in fields(self)
            }
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Episodes:
        """Move every tensor (floating tensors also cast to ``dtype`` when given)."""
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                changes[f.name] = value.to(device=device, dtype=dtype)
        return replace(self, **changes)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over the valid samples of each task: ``values, mask [T, ...]`` → ``[T]``."""
    dims = tuple(range(1, values.dim()))
    return (values * mask).sum(dims) / mask.sum(dims).clamp_min(1.0)
