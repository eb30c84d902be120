"""Hyperparameters of MAML and its outer optimisers, as frozen dataclasses.

Defaults are garage's (``garage.torch.algos.MAML`` and the examples; see shared/docs/garage-maml.md).
"""

from __future__ import annotations

from dataclasses import dataclass

BASELINES = ("linear", "garage_untrained_mlp")
"""Valid values of :attr:`MAMLConfig.baseline` (the second is an ablation: garage's bug 1)."""
ADVANTAGE_SCALINGS = ("std", "garage_variance")
"""Valid values of :attr:`MAMLConfig.advantage_scaling` (the second is an ablation: garage's bug 3)."""
OUTER_GRADIENTS = ("meta", "garage_adam_closure")
"""Valid values of :attr:`AdamConfig.outer_gradient` (the second is an ablation: garage's bug 2)."""


@dataclass(frozen=True)
class MAMLConfig:
    """The meta-learning part, shared by every outer optimiser."""

    meta_batch_size: int = 40
    """Tasks per meta-update (garage's default; the HalfCheetahDir examples use 20)."""
    inner_lr: float = 0.1
    """α, the step size of the inner SGD step on the VPG loss."""
    num_grad_updates: int = 1
    """Inner steps per task; each uses a fresh round of episodes sampled with the current adapted policy."""
    first_order: bool = False
    """Drop the second-order term of the meta-gradient (FOMAML). garage and the paper: full second order."""
    discount: float = 0.99
    """γ for returns and GAE."""
    gae_lambda: float = 1.0
    """λ of GAE; 1.0 makes the advantage the discounted return minus the baseline."""
    baseline: str = "linear"
    """What advantages subtract: ``"linear"``, the linear feature baseline fitted per task and round
    (:mod:`maml.baseline`); ``"garage_untrained_mlp"``, an ablation reproducing garage's bug 1: its (32, 32)
    tanh Gaussian MLP value function at initialisation, never fitted (:mod:`maml.value_function`)."""
    advantage_scaling: str = "std"
    """How advantages are centred per task: ``"std"``, ``(A − mean) / (std + 1e-8)``; ``"garage_variance"``,
    an ablation reproducing garage's bug 3, ``(A − mean) / (var + 1e-8)`` with torch's unbiased variance."""

    def __post_init__(self) -> None:
        if self.meta_batch_size < 1:
            raise ValueError(f"meta_batch_size must be ≥ 1, got {self.meta_batch_size}")
        if self.num_grad_updates < 1:
            raise ValueError(f"num_grad_updates must be ≥ 1, got {self.num_grad_updates}")
        if not self.inner_lr > 0:
            raise ValueError(f"inner_lr must be > 0, got {self.inner_lr}")
        if not 0 < self.discount <= 1:
            raise ValueError(f"discount must be in (0, 1], got {self.discount}")
        if not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"gae_lambda must be in [0, 1], got {self.gae_lambda}")
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {', '.join(BASELINES)}; got {self.baseline!r}")
        if self.advantage_scaling not in ADVANTAGE_SCALINGS:
            raise ValueError(
                f"advantage_scaling must be one of {', '.join(ADVANTAGE_SCALINGS)}; "
                f"got {self.advantage_scaling!r}"
            )


HVP_METHODS = ("gauss_newton", "double_backward")
"""Valid values of :attr:`TRPOConfig.hvp`."""


@dataclass(frozen=True)
class TRPOConfig:
    """garage's ConjugateGradientOptimizer as MAMLTRPO configures it (``outer_lr`` is unused by TRPO)."""

    max_kl: float = 0.01
    """δ, the trust region: mean KL(π_sampled ‖ π_new) over post-update samples."""
    cg_iters: int = 10
    """Conjugate-gradient iterations for the natural-gradient direction."""
    cg_damping: float = 1e-5
    """Tikhonov damping: CG solves (H + damping·I) s = g."""
    backtrack_ratio: float = 0.8
    """Line search shrinks the step by this ratio each try."""
    max_backtracks: int = 15
    """Line search tries ratios ``backtrack_ratio**k`` for k = 0 .. max_backtracks − 1."""
    hvp: str = "gauss_newton"
    """How the meta-gradient and KL Hessian-vector products are computed. ``"gauss_newton"``: the exact
    Hessian at θ as Jᵀ F J by explicit batched R-operator passes over precomputed constants
    (:mod:`maml.gauss_newton`; one inner step or first order, other adaptations fall back to the generic
    path). ``"double_backward"``: autograd's double backward through the adaptation (any number of steps)."""
    cuda_graphs: bool = False
    """On a CUDA device, replay the explicit KL-HVP of each step from a CUDA graph captured once per step
    (:mod:`maml.cuda_graphs`): the same kernels, one launch. No effect on CPU or with double backward. Off by
    default: at garage's sizes the products are GPU-bound, so capturing anew each step costs more than the
    10 replays save (H200, T=40: 40.0 ms per step with graphs, 32.9 ms without, 2026-12-04;
    results/bench/README.md)."""

    def __post_init__(self) -> None:
        if self.hvp not in HVP_METHODS:
            raise ValueError(f"hvp must be one of {', '.join(HVP_METHODS)}; got {self.hvp!r}")
        if not self.max_kl > 0:
            raise ValueError(f"max_kl must be > 0, got {self.max_kl}")
        if self.cg_iters < 1 or self.max_backtracks < 1:
            raise ValueError("cg_iters and max_backtracks must be ≥ 1")
        if not 0 < self.backtrack_ratio < 1:
            raise ValueError(f"backtrack_ratio must be in (0, 1), got {self.backtrack_ratio}")


@dataclass(frozen=True)
class AdamConfig:
    """An Adam outer step (MAML-PPO and MAML-VPG)."""

    outer_lr: float = 1e-3
    """Adam's learning rate (garage's ``outer_lr``)."""
    eps: float = 1e-5
    """Adam's ε (garage's value)."""
    epochs: int = 1
    """Adam steps per meta-update, each re-adapting from the current θ (garage: 1)."""
    clip_range: float = 0.5
    """PPO only: ε of the clipped likelihood ratio (garage's ``lr_clip_range``)."""
    outer_gradient: str = "meta"
    """What Adam steps along: ``"meta"``, the meta-gradient; ``"garage_adam_closure"``, an ablation
    reproducing garage's bug 2: ``Adam.step(closure)`` re-adapts every task inside the closure, which leaves
    in ``.grad`` the last task's inner-loss gradient at θ on its pre-update episodes, and steps along that."""

    def __post_init__(self) -> None:
        if not self.outer_lr > 0:
            raise ValueError(f"outer_lr must be > 0, got {self.outer_lr}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be ≥ 1, got {self.epochs}")
        if not self.clip_range > 0:
            raise ValueError(f"clip_range must be > 0, got {self.clip_range}")
        if self.outer_gradient not in OUTER_GRADIENTS:
            raise ValueError(
                f"outer_gradient must be one of {', '.join(OUTER_GRADIENTS)}; got {self.outer_gradient!r}"
            )
