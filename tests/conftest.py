import pytest
import torch

from maml import meta, policy
from maml.synthetic import SyntheticSpec, make_meta_batch


def build(spec: SyntheticSpec, seed: int = 0, dtype=torch.float64, num_grad_updates: int = 1, inner_lr=0.1):
    """Meta-parameters θ and a synthetic meta-batch sampled with them."""
    gen = torch.Generator().manual_seed(seed)
    theta = policy.init_params(spec.obs_dim, spec.act_dim, spec.hidden_sizes, gen, dtype=dtype)
    # perturb biases and log-std so that no symmetry hides a mistake
    theta = {
        n: p + 0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64).to(dtype)
        for n, p in theta.items()
    }
    batch = make_meta_batch(theta, spec, gen, num_grad_updates=num_grad_updates, inner_lr=inner_lr)
    return theta, batch


@pytest.fixture
def tiny_spec() -> SyntheticSpec:
    return SyntheticSpec(num_tasks=3, episodes=2, horizon=5, obs_dim=3, act_dim=2, hidden_sizes=(4,))


def finite_differences(fn, theta, eps=1e-5):
    """Central differences of the scalar ``fn`` at the parameter dict ``theta``, as one flat vector."""
    flat = meta.flatten(list(theta.values()))
    grad = torch.zeros_like(flat)
    for i in range(flat.numel()):
        step = torch.zeros_like(flat)
        step[i] = eps
        plus = fn(meta.unflatten(flat + step, theta)).item()
        minus = fn(meta.unflatten(flat - step, theta)).item()
        grad[i] = (plus - minus) / (2 * eps)
    return grad
