"""CUDA results equal CPU float64 references. Skipped cleanly where no CUDA device is present."""

import pytest
import torch
from conftest import build

from maml import meta, trpo
from maml.config import MAMLConfig, TRPOConfig
from maml.synthetic import SyntheticSpec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

SPEC = SyntheticSpec(num_tasks=8, episodes=4, horizon=50, obs_dim=20, act_dim=6, hidden_sizes=(64, 64))


def _grad_and_hvp(theta, batch, vector):
    leaf = meta.requires_grad(theta)
    loss, adapted = meta.meta_objective(leaf, batch, trpo.surrogate, 0.1)
    grad = meta.flatten(torch.autograd.grad(loss, list(leaf.values()), retain_graph=True))
    return grad, trpo.kl_hvp(leaf, adapted, batch.post)(vector)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_meta_gradient_and_hvp_equal_cpu_float64(dtype):
    theta, batch = build(SPEC, seed=0, dtype=torch.float64)
    vector = torch.randn(sum(p.numel() for p in theta.values()), dtype=torch.float64)
    ref_grad, ref_hvp = _grad_and_hvp(theta, batch, vector)
    cuda_theta = {n: p.to("cuda", dtype) for n, p in theta.items()}
    grad, hvp = _grad_and_hvp(cuda_theta, batch.to("cuda", dtype), vector.to("cuda", dtype))
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    assert ((grad.cpu().double() - ref_grad).norm() / ref_grad.norm()).item() < tol
    assert ((hvp.cpu().double() - ref_hvp).norm() / ref_hvp.norm()).item() < tol


def test_cuda_trpo_step_matches_cpu():
    theta, batch = build(SPEC, seed=1, dtype=torch.float64)
    cpu_theta, cpu_stats = trpo.trpo_step(theta, batch, MAMLConfig(meta_batch_size=8), TRPOConfig())
    cuda_theta, cuda_stats = trpo.trpo_step(
        {n: p.cuda() for n, p in theta.items()}, batch.to("cuda"), MAMLConfig(meta_batch_size=8), TRPOConfig()
    )
    assert cuda_stats["LineSearchTries"] == cpu_stats["LineSearchTries"]
    for n in theta:
        torch.testing.assert_close(cuda_theta[n].cpu(), cpu_theta[n], rtol=1e-8, atol=1e-10)
