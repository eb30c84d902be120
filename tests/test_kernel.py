"""The explicit meta-gradient kernel (maml/gauss_newton.py, maml/mlp_passes.py) against float64 references —
an explicit Hessian through the adaptation, finite differences, autograd's double backward — and the fast
TRPO step against the per-task loop oracle; plus a CI guard that the batching is not lost."""

import statistics
import time
from dataclasses import replace

import pytest
import torch
from conftest import build

from bench.gpu import count_ops
from maml import gauss_newton, meta, mlp_passes, oracle, policy, ppo, trpo
from maml.config import MAMLConfig, TRPOConfig
from maml.synthetic import SyntheticSpec

INNER_LR = 0.1
# two hidden layers of different widths, padded (masked) episodes: every index and the mask are exercised
SPEC = SyntheticSpec(
    num_tasks=3, episodes=2, horizon=6, obs_dim=3, act_dim=2, hidden_sizes=(5, 4), padded=True
)
LOOP_SPEC = SyntheticSpec(num_tasks=6, episodes=3, horizon=12, obs_dim=6, act_dim=3, hidden_sizes=(16, 16))


def _rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def _flat(params):
    return meta.flatten(list(params.values()))


def _autograd_gradient(theta, batch, surrogate, first_order):
    leaf = meta.requires_grad(theta)
    loss, _ = meta.meta_objective(leaf, batch, surrogate, INNER_LR, first_order)
    return meta.flatten(torch.autograd.grad(loss, list(leaf.values())))


def _double_backward_hvp(theta, batch, first_order):
    leaf = meta.requires_grad(theta)
    return trpo.kl_hvp(leaf, meta.adapt(leaf, batch.pre, INNER_LR, first_order), batch.post)


def _explicit_kl_hessian(theta, batch, first_order):
    flat = _flat(theta)

    def kl(vector):
        adapted = meta.adapt(meta.unflatten(vector, theta), batch.pre, INNER_LR, first_order)
        return meta.mean_kl(adapted, batch.post)

    return torch.autograd.functional.hessian(kl, flat)


FUSED = [pytest.param(False, id="torch-passes"), pytest.param(None, id="default")]
"""The torch passes, and the default: the fused C kernels on CPU where they build (tests/test_fused_kernels.py
checks that they do)."""


@pytest.mark.parametrize("fused", FUSED)
@pytest.mark.parametrize("task_chunk", [1, 2, None])
@pytest.mark.parametrize("first_order", [False, True])
def test_kl_hvp_equals_explicit_hessian_and_double_backward(first_order, task_chunk, fused):
    theta, batch = build(SPEC, seed=1)
    hessian = _explicit_kl_hessian(theta, batch, first_order)
    point = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR, first_order, task_chunk, fused)
    double_backward = _double_backward_hvp(theta, batch, first_order)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = torch.randn(hessian.shape[0], generator=gen, dtype=torch.float64)
        fast = point.kl_hvp(v)
        torch.testing.assert_close(fast, hessian @ v, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(fast, double_backward(v), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fused", FUSED)
@pytest.mark.parametrize("name", ["trpo", "ppo"])
def test_meta_gradient_equals_finite_differences(name, fused):
    theta, batch = build(SPEC, seed=2)
    surrogate = trpo.surrogate if name == "trpo" else ppo.clipped_surrogate(0.5)
    fast = gauss_newton.linearize(theta, batch, surrogate, INNER_LR, task_chunk=2, fused=fused).gradient
    flat, eps = _flat(theta), 1e-5
    numeric = torch.zeros_like(flat)
    for i in range(flat.numel()):
        step = torch.zeros_like(flat)
        step[i] = eps
        values = [
            meta.meta_objective(meta.unflatten(flat + sign * step, theta), batch, surrogate, INNER_LR)[
                0
            ].item()
            for sign in (1.0, -1.0)
        ]
        numeric[i] = (values[0] - values[1]) / (2 * eps)
    assert _rel_err(fast, numeric) < 1e-6
    assert _rel_err(fast, _autograd_gradient(theta, batch, surrogate, False)) < 1e-12
    for task_chunk in (1, 2, None):  # the standalone, chunked meta-gradient: same passes, nothing kept
        alone, loss = gauss_newton.meta_gradient(
            theta, batch, surrogate, INNER_LR, task_chunk=task_chunk, fused=fused
        )
        assert _rel_err(alone, fast) < 1e-12
        assert loss == pytest.approx(
            meta.meta_objective(theta, batch, surrogate, INNER_LR)[0].item(), rel=1e-12
        )


def test_meta_gradient_reusing_its_memory_gives_the_same_bits():
    """The torch passes' buffers kept across calls (as the CUDA-graph replay does): the columns of ones are
    written once and every call after the first, at another θ too, equals a call with fresh memory."""
    theta, batch = build(SPEC, seed=2)
    memory = (mlp_passes.Buffers(), mlp_passes.Buffers())
    for shift in (0.0, 0.01, 0.0):
        moved = {n: p + shift for n, p in theta.items()}
        fresh = gauss_newton.meta_gradient_tensors(moved, batch, trpo.surrogate, INNER_LR, fused=False)
        reused = gauss_newton.meta_gradient_tensors(
            moved, batch, trpo.surrogate, INNER_LR, fused=False, buffers=memory
        )
        assert torch.equal(reused[0], fresh[0]) and torch.equal(reused[1], fresh[1])


@pytest.mark.parametrize("fused", FUSED)
@pytest.mark.parametrize("num_grad_updates", [1, 3])
def test_first_order_meta_gradient_and_hvp_equal_autograd(num_grad_updates, fused):
    """First order (J = I) is covered for any number of inner steps."""
    theta, batch = build(SPEC, seed=3, num_grad_updates=num_grad_updates)
    point = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR, first_order=True, fused=fused)
    expected = _autograd_gradient(theta, batch, trpo.surrogate, True)
    assert _rel_err(point.gradient, expected) < 1e-12
    alone, _ = gauss_newton.meta_gradient(
        theta, batch, trpo.surrogate, INNER_LR, first_order=True, task_chunk=2, fused=fused
    )
    assert _rel_err(alone, expected) < 1e-12
    v = torch.randn(point.gradient.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert _rel_err(point.kl_hvp(v), _double_backward_hvp(theta, batch, True)(v)) < 1e-12
    loss, adapted = meta.meta_objective(theta, batch, trpo.surrogate, INNER_LR, first_order=True)
    assert point.loss == pytest.approx(loss.item(), rel=1e-12)
    assert point.kl == pytest.approx(meta.mean_kl(adapted, batch.post).item(), abs=1e-14)


@pytest.mark.parametrize("fused", FUSED)
def test_evaluate_equals_autograd_path(fused):
    theta, batch = build(SPEC, seed=4)
    shifted = {n: p + 0.01 for n, p in theta.items()}
    assert gauss_newton.evaluate(shifted, batch, trpo.surrogate, INNER_LR, fused=fused) == pytest.approx(
        _autograd_values(shifted, batch), rel=1e-12
    )


def _autograd_values(theta, batch) -> tuple[float, float, float]:
    """The line search's values at ``theta`` by autograd: the post-update surrogate, mean KL and entropy of
    the adapted policy."""
    adapted = meta.adapt(theta, batch.pre, INNER_LR)
    return (
        meta.surrogate_loss(adapted, batch.post, trpo.surrogate).item(),
        meta.mean_kl(adapted, batch.post).item(),
        meta.mean_entropy(adapted).item(),
    )


def test_second_order_with_several_inner_steps_is_refused():
    theta, batch = build(SPEC, seed=5, num_grad_updates=2)
    assert not gauss_newton.supports(2, first_order=False)
    for kernel in (gauss_newton.linearize, gauss_newton.meta_gradient):
        with pytest.raises(ValueError, match="double backward"):
            kernel(theta, batch, trpo.surrogate, INNER_LR)


LINEAR = replace(SPEC, hidden_sizes=())
"""A policy without hidden layers (``hidden_sizes=()``, which the experiment config accepts): the mean head
alone, one layer input and no tanh."""


@pytest.mark.parametrize("fused", FUSED)
@pytest.mark.parametrize("first_order", [False, True])
def test_linear_policy_equals_autograd(first_order: bool, fused: bool | None) -> None:
    """A linear policy's meta-gradient, KL-HVP and line-search values equal autograd's, by the kept
    linearization and the standalone meta-gradient, in chunks of one task and by default."""
    theta, batch = build(LINEAR, seed=10)
    expected = _autograd_gradient(theta, batch, trpo.surrogate, first_order)
    double_backward = _double_backward_hvp(theta, batch, first_order)
    v = torch.randn(expected.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for task_chunk in (1, None):
        point = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR, first_order, task_chunk, fused)
        assert _rel_err(point.gradient, expected) < 1e-12
        assert _rel_err(point.kl_hvp(v), double_backward(v)) < 1e-12
        alone, loss = gauss_newton.meta_gradient(
            theta, batch, trpo.surrogate, INNER_LR, first_order, task_chunk, fused
        )
        assert _rel_err(alone, expected) < 1e-12
        assert loss == pytest.approx(point.loss, rel=1e-12, abs=1e-15)
    shifted = {n: p + 0.01 for n, p in theta.items()}
    evaluated = gauss_newton.evaluate(shifted, batch, trpo.surrogate, INNER_LR, fused=fused)
    assert evaluated == pytest.approx(_autograd_values(shifted, batch), rel=1e-12)


def test_task_chunk_under_the_byte_cap_is_a_whole_number(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a CPU byte cap that holds 2.5 tasks' intermediates the torch passes take 2 tasks per chunk (a
    whole number: ``range`` takes no float step), sized by the widest layer after the input, and give the
    numbers of one chunk of all tasks."""
    spec = replace(SPEC, num_tasks=5)
    theta, batch = build(spec, seed=11)
    widest = max(*spec.hidden_sizes, spec.act_dim)
    per_task = spec.episodes * spec.horizon * widest * torch.float64.itemsize
    monkeypatch.setattr(gauss_newton, "CPU_CHUNK_BYTES", int(2.5 * per_task))
    assert gauss_newton.default_task_chunk(batch, widest) == 2
    point = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR, fused=False)
    assert [fisher.adapted.shape[0] for _, fisher in point.chunks] == [2, 2, 1]
    whole = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR, task_chunk=5, fused=False)
    v = torch.randn(whole.gradient.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    assert _rel_err(point.gradient, whole.gradient) < 1e-12
    assert _rel_err(point.kl_hvp(v), whole.kl_hvp(v)) < 1e-12
    alone, loss = gauss_newton.meta_gradient(theta, batch, trpo.surrogate, INNER_LR, fused=False)
    assert _rel_err(alone, whole.gradient) < 1e-12
    assert loss == pytest.approx(whole.loss, rel=1e-12)


@pytest.mark.parametrize("fused", FUSED)
def test_meta_gradient_tensors_is_second_order_by_default(fused: bool | None) -> None:
    """Called without ``first_order``, ``meta_gradient_tensors`` gives ``meta_gradient``'s default: the
    second-order meta-gradient, not FOMAML's."""
    theta, batch = build(SPEC, seed=12)
    gradient, loss = gauss_newton.meta_gradient_tensors(theta, batch, trpo.surrogate, INNER_LR, fused=fused)
    expected = _autograd_gradient(theta, batch, trpo.surrogate, first_order=False)
    assert _rel_err(gradient, expected) < 1e-12
    assert _rel_err(gradient, _autograd_gradient(theta, batch, trpo.surrogate, first_order=True)) > 1e-3
    assert loss.item() == pytest.approx(meta.meta_objective(theta, batch, trpo.surrogate, INNER_LR)[0].item())


def _assert_same_step(fast, fast_stats, ref, ref_stats, rtol):
    assert fast_stats["LineSearchTries"] == ref_stats["LineSearchTries"]
    assert fast_stats["StepAccepted"] == ref_stats["StepAccepted"] == 1.0
    assert _rel_err(_flat(fast), _flat(ref)) < rtol
    for key in ("LossBefore", "LossAfter", "KLAfter", "Entropy"):
        assert fast_stats[key] == pytest.approx(ref_stats[key], rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_fast_trpo_step_equals_loop_oracle(first_order, seed, padded):
    theta, batch = build(replace(LOOP_SPEC, padded=padded), seed=seed, dtype=torch.float32)
    maml_cfg = MAMLConfig(meta_batch_size=LOOP_SPEC.num_tasks, first_order=first_order)
    fast, fast_stats = trpo.trpo_step(theta, batch, maml_cfg, TRPOConfig())
    ref, ref_stats = oracle.trpo_step(theta, batch, maml_cfg, TRPOConfig())
    _assert_same_step(fast, fast_stats, ref, ref_stats, rtol=1e-5)


@pytest.mark.parametrize("num_grad_updates", [1, 2])
def test_hvp_switch_gives_the_same_step(num_grad_updates):
    """``hvp="double_backward"`` is the generic path; two second-order inner steps fall back to it."""
    theta, batch = build(LOOP_SPEC, seed=6, num_grad_updates=num_grad_updates)
    maml_cfg = MAMLConfig(meta_batch_size=LOOP_SPEC.num_tasks, num_grad_updates=num_grad_updates)
    fast, fast_stats = trpo.trpo_step(theta, batch, maml_cfg, TRPOConfig())
    generic, generic_stats = trpo.trpo_step(theta, batch, maml_cfg, TRPOConfig(hvp="double_backward"))
    _assert_same_step(fast, fast_stats, generic, generic_stats, rtol=1e-10)
    with pytest.raises(ValueError, match="gauss_newton, double_backward"):
        TRPOConfig(hvp="finite_differences")


@pytest.fixture
def one_thread():
    """Time on one thread: on a shared machine a co-tenant can stall a 2-thread OpenMP barrier for
    milliseconds per operation, which would measure the neighbours, not the batching."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


GUARD_FLOORS = {"fused C kernels": 2.0, "torch passes": 1.5}
"""The guard's floor on double backward / fast, by the passes the fast path runs. Measured 2026-12-03 on the
shared 2-core Xeon by this test's timing (one thread, under `nice`, a training campaign busy on both cores):
with the fused C kernels (the CPU default) 5.4–7.4 in 13 runs, most 5.7–6.4 (4.8–5.2 at a larger size, 10
tasks × 500 samples, 64×64): floor = 6 / 3. With the torch passes (no compiler, ``MAML_BENCH_NATIVE=0``)
2.3–2.5 in 8 runs: floor = 2.3 / 1.5, since a floor must stay above 1. A fast path replaced by double backward
on a reused graph measures 0.9–1.0, by double backward rebuilt for every product 0.56: both fail."""


def test_fast_trpo_linearization_keeps_its_lead_over_double_backward(one_thread):
    """CI guard on the TRPO step's local model (the meta-gradient and the 10 KL-HVPs of conjugate gradient),
    timed alternately in the same process, medians of 8: the fast path (``gauss_newton.linearize``, its
    precomputation included) over the best generic alternative, autograd's double backward on one graph of
    ∇f built once and reused by every product. Only the ratio is checked (never absolute times)."""
    spec = SyntheticSpec(num_tasks=8, episodes=4, horizon=25, obs_dim=8, act_dim=3, hidden_sizes=(32, 32))
    theta, batch = build(spec, seed=7, dtype=torch.float32)
    v = torch.randn(_flat(theta).shape, generator=torch.Generator().manual_seed(2))
    cg_iters = TRPOConfig().cg_iters

    def fast():
        point = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR)
        return point.gradient, [point.kl_hvp(v) for _ in range(cg_iters)]

    def double_backward():
        leaf = meta.requires_grad(theta)
        loss, adapted = meta.meta_objective(leaf, batch, trpo.surrogate, INNER_LR)
        gradient = meta.flatten(torch.autograd.grad(loss, list(leaf.values()), retain_graph=True))
        hvp = trpo.kl_hvp(leaf, adapted, batch.post)  # ∇f with its graph, once
        return gradient, [hvp(v) for _ in range(cg_iters)]

    (fast_gradient, fast_products), (gradient, products) = fast(), double_backward()  # and warm up
    assert _rel_err(fast_gradient, gradient) < 1e-4 and _rel_err(fast_products[0], products[0]) < 1e-4
    timings = {"fast": [], "double_backward": []}
    runs = {"fast": fast, "double_backward": double_backward}
    for _ in range(8):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - start)
    fast_time, generic_time = (statistics.median(timings[name]) for name in ("fast", "double_backward"))
    passes = "torch passes" if gauss_newton.fused_kernels(v.device) is None else "fused C kernels"
    assert generic_time / fast_time > GUARD_FLOORS[passes], (
        f"double backward {generic_time * 1e3:.1f} ms vs fast {fast_time * 1e3:.1f} ms ({passes})"
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("first_order", [False, True])
def test_cuda_kernel_equals_cpu_float64(first_order):
    spec = SyntheticSpec(num_tasks=8, episodes=4, horizon=50, obs_dim=20, act_dim=6, hidden_sizes=(64, 64))
    theta, batch = build(spec, seed=8)
    ref = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR, first_order)
    v = torch.randn(ref.gradient.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        point = gauss_newton.linearize(
            {n: p.to("cuda", dtype) for n, p in theta.items()},
            batch.to("cuda", dtype),
            trpo.surrogate,
            INNER_LR,
            first_order,
        )
        assert _rel_err(point.gradient.cpu().double(), ref.gradient) < tol
        assert _rel_err(point.kl_hvp(v.to("cuda", dtype)).cpu().double(), ref.kl_hvp(v)) < tol


def test_graph_capture_refuses_cpu_tensors():
    from maml import cuda_graphs

    assert not cuda_graphs.available(torch.zeros(3))
    with pytest.raises(ValueError, match="CUDA tensors"):
        cuda_graphs.CapturedFunction(lambda x: 2 * x, torch.zeros(3))


def test_gpu_path_dispatches_no_more_operations_than_counted(monkeypatch):
    """The torch passes (a GPU's path; one kernel per operation there) with the GPU's split-K forced: a change
    that adds passes fails here, where CI has no GPU to time it. Counted 2026-11-27 (the same at T=40,
    `bench/gpu/count_ops.py`): 134 for a meta-gradient, 83 for a KL-HVP (165 and 103 before the stored slopes
    went and the split-K sums were merged)."""
    spec = SyntheticSpec(num_tasks=4, episodes=4, horizon=16, obs_dim=5, act_dim=2, hidden_sizes=(8, 8))
    theta, batch = build(spec, seed=9)
    monkeypatch.setattr(mlp_passes, "split_k_segments", lambda x: 4)
    point = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR, fused=False)
    v = torch.randn_like(point.gradient)
    meta_ops, meta_bytes, _ = count_ops.count(
        lambda: gauss_newton.meta_gradient_tensors(theta, batch, trpo.surrogate, INNER_LR, fused=False)
    )
    hvp_ops, hvp_bytes, _ = count_ops.count(lambda: point.kl_hvp(v))
    assert meta_bytes > 0 and hvp_bytes > 0
    assert meta_ops <= 134
    assert hvp_ops <= 83


@pytest.mark.parametrize("segments", [2, 4, 8])
def test_split_k_weight_gradients_equal_one_gemm_per_task(monkeypatch, segments):
    """The GPU's split-K weight gradients (forced on CPU): per task and summed over tasks, the narrow head
    included, equal to one GEMM per task and term."""
    gen = torch.Generator().manual_seed(4)
    theta = policy.init_params(5, 2, (8, 8), gen, dtype=torch.float64)
    layout = mlp_passes.Layout.of(theta)
    flat = layout.flatten(theta)
    obs = torch.randn(3, 64, 5, generator=gen, dtype=torch.float64)
    acts = mlp_passes.forward(layout, flat, obs)
    signal = torch.randn(3, 64, 2, generator=gen, dtype=torch.float64)
    tangent = torch.randn(layout.num_params, generator=gen, dtype=torch.float64)

    def gradients() -> tuple[torch.Tensor, ...]:
        per_task = torch.zeros(3, layout.num_params, dtype=torch.float64)
        summed = torch.zeros(layout.num_params, dtype=torch.float64)
        buffers = mlp_passes.Buffers()
        deltas = mlp_passes.backward(layout, acts, flat, signal, per_task, buffers, None)
        mlp_passes.backward(layout, acts, flat, signal, summed, buffers, None)
        r_z, r_x = mlp_passes.r_forward(layout, acts, flat, tangent, buffers)
        curvature = [
            torch.randn(d.shape, generator=torch.Generator().manual_seed(6), dtype=d.dtype) for d in deltas
        ]
        products = []
        for out in (
            torch.zeros(3, layout.num_params, dtype=torch.float64),
            torch.zeros(layout.num_params, dtype=torch.float64),
        ):
            mlp_passes.r_backward(
                layout, acts, flat, deltas, curvature[:-1], tangent, r_z, r_x, signal, out, buffers
            )
            products.append(out)
        return per_task, summed, *products

    plain = gradients()
    assert mlp_passes.split_k_segments(obs) == 1  # CPU: one GEMM per task
    monkeypatch.setattr(mlp_passes, "split_k_segments", lambda x: segments)
    for split, reference in zip(gradients(), plain, strict=True):
        assert reference.abs().sum() > 0
        torch.testing.assert_close(split, reference, rtol=1e-12, atol=1e-12)


def test_kernel_with_split_k_equals_plain_gemms(monkeypatch):
    """The GPU's split-K path (torch passes), forced on CPU: the same gradient and products."""
    spec = SyntheticSpec(num_tasks=4, episodes=4, horizon=16, obs_dim=5, act_dim=2, hidden_sizes=(8, 8))
    theta, batch = build(spec, seed=9)
    plain = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR, fused=False)
    v = torch.randn(plain.gradient.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    monkeypatch.setattr(mlp_passes, "split_k_segments", lambda x: 4)
    split = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR, fused=False)
    assert _rel_err(split.gradient, plain.gradient) < 1e-12
    assert _rel_err(split.kl_hvp(v), plain.kl_hvp(v)) < 1e-12
    gradient, _ = gauss_newton.meta_gradient(theta, batch, trpo.surrogate, INNER_LR, fused=False)
    assert _rel_err(gradient, plain.gradient) < 1e-12
