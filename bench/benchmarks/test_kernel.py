"""The meta-gradient kernel: meta-gradient, KL Hessian-vector product and the whole TRPO outer step.

Each case times our implementation (``trpo.trpo_step``'s default path: :mod:`maml.gauss_newton`) with
pytest-benchmark, and in the *same rounds* — one reference round in each round's untimed setup, so both
see the same load on a shared machine — the per-task loop oracle (garage's way, :mod:`maml.oracle`; its
HVP rebuilt per call) and autograd's batched double backward. ``extra_info`` records the medians,
``speedup_vs_loop``, the FLOP floor (matrix-product FLOPs of the work ÷ a square matmul's rate measured in
the same test) and ``ratio_to_flop_floor``, with device, torch version and threads.

Sizes: ``halfcheetah`` (garage's HalfCheetahDir: T=20, N=4000, 64×64, obs 20, act 6), ``t40`` (T=40) and
``ml45`` (T=45, N=9000, 100×100, obs 39, act 4; minutes: skip with ``-k "not ml45"``).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import pytest
import torch

from maml import cuda_graphs, gauss_newton, meta, mlp_passes, oracle, trpo
from maml.config import MAMLConfig, TRPOConfig

from .conftest import DEVICES, SIZES, Size, kernel_flops, matmul_rate, problem, record, synchronize

INNER_LR = 0.1
SIZE_PARAMS = [pytest.param(SIZES[name], id=name) for name in SIZES]


def _compare(
    benchmark,
    device: str,
    ours: Callable[[], object],
    references: dict[str, tuple[Callable[[], object], int]],
    rounds: int,
) -> tuple[object, dict[str, float], dict[str, object]]:
    """Time ``ours`` with ``benchmark.pedantic`` (one warm-up round, then ``rounds``); in the untimed setup of
    each timed round, run the next round of every reference that has rounds left.

    Returns ours' last result, each reference's median seconds (and its best round's, as ``<name>_best``) and
    each reference's last result.
    """
    times: dict[str, list[float]] = {name: [] for name in references}
    reference_results: dict[str, object] = {}
    results: list[object] = []
    setups = 0

    def setup() -> None:
        nonlocal setups
        setups += 1
        if setups == 1:  # before the warm-up round
            return
        for name, (fn, count) in references.items():
            if len(times[name]) < count:
                synchronize(device)
                start = time.perf_counter()
                reference_results[name] = fn()
                synchronize(device)
                times[name].append(time.perf_counter() - start)

    def target() -> None:
        results.append(ours())
        synchronize(device)

    benchmark.pedantic(target, setup=setup, rounds=rounds, warmup_rounds=1, iterations=1)
    if not all(times.values()):  # --benchmark-disable: one plain call each, still checked for equality
        setup()
    medians = {name: statistics.median(values) for name, values in times.items()}
    medians |= {f"{name}_best": min(values) for name, values in times.items()}  # best rounds, for the record
    return results[-1], medians, reference_results


def _ours_median(benchmark) -> float:
    return math.nan if benchmark.disabled else benchmark.stats.stats.median


def _ours_best(benchmark) -> float:
    return math.nan if benchmark.disabled else benchmark.stats.stats.min


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _flat(params) -> torch.Tensor:
    return meta.flatten(list(params.values()))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", SIZE_PARAMS)
def test_meta_gradient(benchmark, size: Size, device: str) -> None:
    theta, batch = problem(size, device)

    def eager():
        return gauss_newton.meta_gradient(theta, batch, trpo.surrogate, INNER_LR)[0]

    ours, references = eager, {}
    if device == "cuda":  # the same passes replayed from a CUDA graph (θ copied in; the batch stays put)
        graphed = gauss_newton.captured_meta_gradient(theta, batch, trpo.surrogate, INNER_LR)
        flat_theta = mlp_passes.Layout.of(theta).flatten(theta)
        ours, references = (lambda: graphed(flat_theta)[0]), {"eager": (eager, size.rounds)}

    def loop():
        return _flat(oracle.meta_gradient(theta, batch, trpo.surrogate, INNER_LR))

    def double_backward():
        leaf = meta.requires_grad(theta)
        loss, _ = meta.meta_objective(leaf, batch, trpo.surrogate, INNER_LR)
        return meta.flatten(torch.autograd.grad(loss, list(leaf.values())))

    rate = matmul_rate(device)
    references |= {"loop": (loop, size.loop_rounds), "double_backward": (double_backward, size.loop_rounds)}
    gradient, medians, results = _compare(benchmark, device, ours, references, size.rounds)
    assert _rel_err(gradient, results["loop"]) < 1e-4
    record(
        benchmark,
        f"meta_gradient[{size.name}-{device}]",
        device,
        _ours_median(benchmark),
        medians["loop"],
        medians["double_backward"],
        kernel_flops(size, "meta_gradient"),
        rate,
        eager=medians.get("eager"),
        best=(_ours_best(benchmark), medians["loop_best"]),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", SIZE_PARAMS)
def test_kl_hvp(benchmark, size: Size, device: str) -> None:
    theta, batch = problem(size, device)
    point = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR)
    vector = torch.randn(point.gradient.shape, generator=torch.Generator().manual_seed(2)).to(device)
    vector_params = meta.unflatten(vector, theta)
    leaf = meta.requires_grad(theta)
    graph_reused = trpo.kl_hvp(leaf, meta.adapt(leaf, batch.pre, INNER_LR), batch.post)

    def loop():
        return _flat(oracle.kl_hvp(theta, batch, vector_params, INNER_LR))

    rate = matmul_rate(device)
    references = {
        "loop": (loop, size.loop_rounds),
        "double_backward": (lambda: graph_reused(vector), size.loop_rounds),
    }
    ours = lambda: point.kl_hvp(vector)  # noqa: E731
    if device == "cuda":  # what trpo_step replays on a GPU: the same passes from a CUDA graph
        graphed = cuda_graphs.CapturedFunction(point.kl_hvp, vector)
        ours, references["eager"] = (lambda: graphed(vector)), (lambda: point.kl_hvp(vector), 2 * size.rounds)
    product, medians, results = _compare(benchmark, device, ours, references, 2 * size.rounds)
    assert _rel_err(product, results["loop"]) < 1e-4
    record(
        benchmark,
        f"kl_hvp[{size.name}-{device}]",
        device,
        _ours_median(benchmark),
        medians["loop"],
        medians["double_backward"],
        kernel_flops(size, "kl_hvp"),
        rate,
        eager=medians.get("eager"),
        best=(_ours_best(benchmark), medians["loop_best"]),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", SIZE_PARAMS)
def test_trpo_step(benchmark, size: Size, device: str) -> None:
    theta, batch = problem(size, device)
    maml_cfg = MAMLConfig(meta_batch_size=size.num_tasks)
    loop_rounds = max(1, size.loop_rounds - 1)  # ~10 s (HalfCheetahDir) to minutes (ML45) per loop step
    references = {"loop": (lambda: oracle.trpo_step(theta, batch, maml_cfg, TRPOConfig()), loop_rounds)}
    if size.name != "ml45":  # autograd's double backward through 45 × 9000 samples: minutes per step
        generic = TRPOConfig(hvp="double_backward")
        references["double_backward"] = (lambda: trpo.trpo_step(theta, batch, maml_cfg, generic), 1)

    rate = matmul_rate(device)
    ours = lambda: trpo.trpo_step(theta, batch, maml_cfg, TRPOConfig())  # noqa: E731
    (new_theta, stats), medians, results = _compare(benchmark, device, ours, references, min(size.rounds, 3))
    loop_theta, loop_stats = results["loop"]
    assert stats["LineSearchTries"] == loop_stats["LineSearchTries"]
    assert _rel_err(_flat(new_theta), _flat(loop_theta)) < 1e-5
    record(
        benchmark,
        f"trpo_step[{size.name}-{device}]",
        device,
        _ours_median(benchmark),
        medians["loop"],
        medians.get("double_backward"),
        kernel_flops(size, "trpo_step", tries=int(stats["LineSearchTries"])),
        rate,
        best=(_ours_best(benchmark), medians["loop_best"]),
    )
