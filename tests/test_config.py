"""The configs: garage's defaults, and every validation's boundary (accepted on it, rejected just past it)."""

from __future__ import annotations

import dataclasses

import pytest

from maml.config import AdamConfig, MAMLConfig, TRPOConfig

GARAGE_DEFAULTS = {
    # garage.torch.algos.MAML and its examples (shared/docs/garage-maml.md); first_order: the paper's MAML
    MAMLConfig: dict(
        meta_batch_size=40, inner_lr=0.1, num_grad_updates=1, first_order=False, discount=0.99,
        gae_lambda=1.0, baseline="linear", advantage_scaling="std",
    ),
    # garage's ConjugateGradientOptimizer as MAMLTRPO builds it
    TRPOConfig: dict(
        max_kl=0.01, cg_iters=10, cg_damping=1e-5, backtrack_ratio=0.8, max_backtracks=15,
        hvp="gauss_newton", cuda_graphs=False,
    ),
    # MAMLPPO / MAMLVPG: Adam(lr=1e-3, eps=1e-5), lr_clip_range=0.5, one step per meta-update
    AdamConfig: dict(outer_lr=1e-3, eps=1e-5, epochs=1, clip_range=0.5, outer_gradient="meta"),
}  # fmt: skip


@pytest.mark.parametrize("cls", list(GARAGE_DEFAULTS), ids=lambda c: c.__name__)
def test_defaults_are_garages(cls):
    config = cls()
    assert {f.name: getattr(config, f.name) for f in dataclasses.fields(cls)} == GARAGE_DEFAULTS[cls]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.inner_lr = 1.0


BOUNDARIES = [
    # (config, field, accepted on the boundary, rejected just past it)
    (MAMLConfig, "meta_batch_size", 1, 0),
    (MAMLConfig, "num_grad_updates", 1, 0),
    (MAMLConfig, "inner_lr", 1e-12, 0.0),
    (MAMLConfig, "discount", 1.0, 1.0 + 1e-12),
    (MAMLConfig, "discount", 1e-12, 0.0),
    (MAMLConfig, "gae_lambda", 0.0, -1e-12),
    (MAMLConfig, "gae_lambda", 1.0, 1.0 + 1e-12),
    (MAMLConfig, "baseline", "garage_untrained_mlp", "mlp"),
    (MAMLConfig, "advantage_scaling", "garage_variance", "variance"),
    (TRPOConfig, "max_kl", 1e-12, 0.0),
    (TRPOConfig, "cg_iters", 1, 0),
    (TRPOConfig, "max_backtracks", 1, 0),
    (TRPOConfig, "backtrack_ratio", 1.0 - 1e-12, 1.0),
    (TRPOConfig, "backtrack_ratio", 1e-12, 0.0),
    (TRPOConfig, "hvp", "double_backward", "autograd"),
    (AdamConfig, "outer_lr", 1e-12, 0.0),
    (AdamConfig, "epochs", 1, 0),
    (AdamConfig, "clip_range", 1e-12, 0.0),
    (AdamConfig, "outer_gradient", "garage_adam_closure", "garage"),
]


@pytest.mark.parametrize(("cls", "field", "good", "bad"), BOUNDARIES, ids=lambda v: str(v))
def test_validation_boundaries(cls, field, good, bad):
    assert getattr(cls(**{field: good}), field) == good
    with pytest.raises(ValueError, match=field):
        cls(**{field: bad})
