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


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_cuda_trpo_step_matches_cpu(cuda_graphs):
    theta, batch = build(SPEC, seed=1, dtype=torch.float64)
    maml_cfg = MAMLConfig(meta_batch_size=8)
    cpu_theta, cpu_stats = trpo.trpo_step(theta, batch, maml_cfg, TRPOConfig())
    cuda_theta, cuda_stats = trpo.trpo_step(
        {n: p.cuda() for n, p in theta.items()},
        batch.to("cuda"),
        maml_cfg,
        TRPOConfig(cuda_graphs=cuda_graphs),
    )
    assert cuda_stats["LineSearchTries"] == cpu_stats["LineSearchTries"]
    for n in theta:
        torch.testing.assert_close(cuda_theta[n].cpu(), cpu_theta[n], rtol=1e-8, atol=1e-10)


def test_graph_replay_equals_eager_passes():
    from maml import cuda_graphs, gauss_newton, mlp_passes

    theta, batch = build(SPEC, seed=2, dtype=torch.float32)
    theta = {n: p.cuda() for n, p in theta.items()}
    batch = batch.to("cuda")
    point = gauss_newton.linearize(theta, batch, trpo.surrogate, 0.1)
    graphed = cuda_graphs.CapturedFunction(point.kl_hvp, point.gradient)
    for seed in range(3):  # new inputs each replay: the static input is refreshed, not frozen at capture
        v = torch.randn(point.gradient.shape, generator=torch.Generator().manual_seed(seed)).cuda()
        torch.testing.assert_close(graphed(v), point.kl_hvp(v), rtol=1e-6, atol=1e-7)

    layout = mlp_passes.Layout.of(theta)
    flat = layout.flatten(theta)
    replay = gauss_newton.captured_meta_gradient(theta, batch, trpo.surrogate, 0.1)
    for scale in (1.0, 0.9):
        gradient, loss = replay(scale * flat)
        ref_gradient, ref_loss = gauss_newton.meta_gradient(
            layout.to_params(scale * flat), batch, trpo.surrogate, 0.1
        )
        torch.testing.assert_close(gradient, ref_gradient, rtol=1e-6, atol=1e-7)
        assert abs(loss.item() - ref_loss) <= 1e-6 * max(1.0, abs(ref_loss))


def test_trpo_step_with_graphs_equals_eager():
    theta, batch = build(SPEC, seed=3, dtype=torch.float32)
    theta = {n: p.cuda() for n, p in theta.items()}
    batch = batch.to("cuda")
    maml_cfg = MAMLConfig(meta_batch_size=8)
    graphed, graphed_stats = trpo.trpo_step(theta, batch, maml_cfg, TRPOConfig(cuda_graphs=True))
    eager, eager_stats = trpo.trpo_step(theta, batch, maml_cfg, TRPOConfig(cuda_graphs=False))
    assert graphed_stats["LineSearchTries"] == eager_stats["LineSearchTries"]
    for n in theta:
        torch.testing.assert_close(graphed[n], eager[n], rtol=1e-5, atol=1e-6)
