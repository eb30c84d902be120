"""GPU probe of the meta-gradient kernel: eager launches against CUDA-graph replay, and the whole TRPO step
with and without per-step graph capture (T=40 and garage's T=20, N=4000). Writes ``probe.json`` into the
folder given as the first argument, and kernel-time profiles of the eager KL-HVP and meta-gradient
(``profile-*.txt`` there, and printed).

Run on a CUDA machine from the repository root: ``python bench/gpu/probe.py results/bench`` (the device
script ``bench/gpu/run.sh`` runs it with the tests and the benchmark suite).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from bench.benchmarks.conftest import SIZES, problem
from maml import cuda_graphs, gauss_newton, mlp_passes, trpo
from maml.config import MAMLConfig, TRPOConfig

INNER_LR = 0.1


def wall_ms(fn: Callable[[], object], rounds: int = 50, warmup: int = 5) -> float:
    """Median wall time of one synchronised call, in ms."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def gpu_ms(fn: Callable[[], object], rounds: int = 20) -> float:
    """Mean GPU time of back-to-back calls (CUDA events), in ms."""
    for _ in range(3):
        fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(rounds):
        fn()
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) / rounds


def probe(name: str) -> dict[str, float]:
    theta, batch = problem(SIZES[name], "cuda")
    point = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR)
    vector = torch.randn(point.gradient.shape, device="cuda")
    graphed_hvp = cuda_graphs.CapturedFunction(point.kl_hvp, vector)
    flat = mlp_passes.Layout.of(theta).flatten(theta)
    graphed_gradient = gauss_newton.captured_meta_gradient(theta, batch, trpo.surrogate, INNER_LR)
    maml_cfg = MAMLConfig(meta_batch_size=SIZES[name].num_tasks)
    return {
        "hvp_eager_ms": wall_ms(lambda: point.kl_hvp(vector)),
        "hvp_graph_ms": wall_ms(lambda: graphed_hvp(vector)),
        "hvp_graph_gpu_ms": gpu_ms(lambda: graphed_hvp(vector)),
        "mg_eager_ms": wall_ms(
            lambda: gauss_newton.meta_gradient_tensors(theta, batch, trpo.surrogate, INNER_LR)
        ),
        "mg_graph_ms": wall_ms(lambda: graphed_gradient(flat)),
        "mg_graph_gpu_ms": gpu_ms(lambda: graphed_gradient(flat)),
        "trpo_step_graph_ms": wall_ms(
            lambda: trpo.trpo_step(theta, batch, maml_cfg, TRPOConfig(cuda_graphs=True)), rounds=5, warmup=1
        ),
        "trpo_step_eager_ms": wall_ms(
            lambda: trpo.trpo_step(theta, batch, maml_cfg, TRPOConfig(cuda_graphs=False)), rounds=5, warmup=1
        ),
    }


def kernel_profiles() -> dict[str, str]:
    """Where five eager KL-HVPs and five eager meta-gradients (T=40) spend their GPU time, op by op: what to
    fuse or drop next."""
    theta, batch = problem(SIZES["t40"], "cuda")
    point = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR)
    vector = torch.randn_like(point.gradient)
    calls: dict[str, Callable[[], object]] = {
        "kl-hvp": lambda: point.kl_hvp(vector),
        "meta-gradient": lambda: gauss_newton.meta_gradient_tensors(theta, batch, trpo.surrogate, INNER_LR),
    }
    tables = {}
    for name, call in calls.items():
        call()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                call()
            torch.cuda.synchronize()
        tables[name] = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
    return tables


def main(out: Path) -> None:
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    for name in ("t40", "halfcheetah"):
        results[name] = probe(name)
        print(name, json.dumps(results[name]), flush=True)
    (out / "probe.json").write_text(json.dumps(results, indent=1))
    for name, table in kernel_profiles().items():
        (out / f"profile-{name}.txt").write_text(table)
        print(f"{name} (5 calls, T=40):\n{table}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
