"""Shared pieces of the kernel benchmarks: problem sizes, synthetic meta-batches, the matmul rate, the FLOP
model of the explicit passes, and a summary table printed at the end of the run."""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from maml import policy
from maml.meta import MetaBatch
from maml.policy import Params
from maml.synthetic import SyntheticSpec, make_meta_batch


@dataclass(frozen=True)
class Size:
    """One benchmark problem: T tasks × E episodes × H steps, pre and post, and the policy's shape."""

    name: str
    num_tasks: int
    episodes: int
    horizon: int
    obs_dim: int
    act_dim: int
    hidden_sizes: tuple[int, ...]
    rounds: int
    """Rounds of our implementation (the loop oracle gets fewer on the big sizes)."""
    loop_rounds: int

    @property
    def samples(self) -> int:
        """N, samples per task in each round."""
        return self.episodes * self.horizon

    @property
    def spec(self) -> SyntheticSpec:
        return SyntheticSpec(
            num_tasks=self.num_tasks,
            episodes=self.episodes,
            horizon=self.horizon,
            obs_dim=self.obs_dim,
            act_dim=self.act_dim,
            hidden_sizes=self.hidden_sizes,
            padded=False,
        )


SIZES = {
    # garage's MAML-TRPO HalfCheetahDir: meta_batch_size 20, 40 episodes × 100 steps, (64, 64) tanh
    "halfcheetah": Size("halfcheetah", 20, 40, 100, 20, 6, (64, 64), rounds=5, loop_rounds=3),
    "t40": Size("t40", 40, 40, 100, 20, 6, (64, 64), rounds=5, loop_rounds=2),
    # ML45-like: 45 tasks × 45 episodes × 200 steps, (100, 100) tanh, Meta-World's obs 39 / act 4
    "ml45": Size("ml45", 45, 45, 200, 39, 4, (100, 100), rounds=3, loop_rounds=1),
}

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")],
    ),
]

_CACHE: dict[tuple[str, str], tuple[Params, MetaBatch]] = {}


def problem(size: Size, device: str) -> tuple[Params, MetaBatch]:
    """θ (float32) and a synthetic meta-batch of ``size`` on ``device``, built once per session."""
    key = (size.name, device)
    if key not in _CACHE:
        _CACHE.clear()  # one problem in memory at a time (the ML45 one is large)
        gen = torch.Generator().manual_seed(0)
        theta = policy.init_params(size.obs_dim, size.act_dim, size.hidden_sizes, gen)
        theta = {n: p + 0.1 * torch.randn(p.shape, generator=gen) for n, p in theta.items()}
        batch = make_meta_batch(theta, size.spec, torch.Generator().manual_seed(1))
        _CACHE[key] = ({n: p.to(device) for n, p in theta.items()}, batch.to(device))
    return _CACHE[key]


def steps_per_second(
    seconds: dict[str, list[float]], steps: int, rounds: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Env-steps per second of each sampler's last ``rounds`` rounds: ``(best round, median round)``.

    The best round is the headline: on a shared machine other work only ever adds time. Medians for
    reference."""
    best = {name: steps / min(s[-rounds:]) for name, s in seconds.items()}
    median = {name: steps / statistics.median(s[-rounds:]) for name, s in seconds.items()}
    return best, median


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


RATES_FILE = Path(__file__).resolve().parents[2] / "results" / "bench" / "matmul-rates.json"
"""The best square-matmul rate ever measured per machine (CPU model or GPU name, threads, torch version): the
calibration the FLOP floor divides by. Committed; a benchmark run that measures a higher rate raises it."""

_BEST_RATE: dict[str, float] = {}
LAST_MEASURED: dict[str, float] = {}
"""This run's own matmul rate per device (reported beside the calibrated one: how loaded the machine was)."""


def machine_key(device: str) -> str:
    """What a matmul rate belongs to: the processor, the thread count and the torch build."""
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} | torch {torch.__version__}"
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model} | {os.cpu_count()} cpus | {torch.get_num_threads()} threads | torch {torch.__version__}"


def calibrated_rates(path: Path = RATES_FILE) -> dict[str, dict]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); restore it with git or delete it") from err
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "gflops" in v for v in data.values()):
        raise ValueError(f"{path}: expected {{machine: {{'gflops': ..., ...}}}}")
    return data


def matmul_rate(device: str, path: Path = RATES_FILE) -> float:
    """FLOP/s the floor divides by: the highest of this run's square float32 matmul (2048² on CPU, 8192² on a
    GPU; best of 7), the best earlier in this session, and the best ever recorded for this machine in
    ``results/bench/matmul-rates.json``. A rate measured while other work shares the cores would lower the
    floor's bar (a loaded run once read 0.52–0.67× "the floor"); the best ever measured is what the hardware
    does alone, so ours / floor stays ≥ 1 however busy the machine is. A new best is written back."""
    rates = calibrated_rates(path)
    key = machine_key(device)
    measured = _measure_matmul_rate(device)
    calibrated = 1e9 * float(rates.get(key, {}).get("gflops", 0.0))
    _BEST_RATE[device] = max(_BEST_RATE.get(device, 0.0), measured, calibrated)
    if measured > calibrated:
        rates[key] = {
            "gflops": round(measured / 1e9, 1),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rates, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    LAST_MEASURED[device] = measured
    return _BEST_RATE[device]


def _measure_matmul_rate(device: str) -> float:
    n = 2048 if device == "cpu" else 8192
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    best = math.inf
    for _ in range(7):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _layer_flops(widths: tuple[int, ...]) -> list[int]:
    """``c_k = 2·in_k·out_k``: FLOPs per sample of one product through layer k (bias columns ignored)."""
    return [2 * a * b for a, b in itertools.pairwise(widths)]


def kernel_flops(size: Size, what: str, first_order: bool = False, tries: int = 1) -> float:
    """Matrix-product FLOPs of the exact computation in its R-operator form (what the explicit passes run).

    Per sample, with ``c_k`` per layer: forward ``Σ c``; backward ``Σ c + Σ_{k≥1} c`` (weight gradients and
    δ propagation); ``H_i v`` ``2 c_0 + 6 Σ_{k≥1} c`` (R-forward + R-backward); ``F_i u``
    ``2 c_0 + 4 Σ_{k≥1} c``.
    KL-HVP = 2 ``H`` on the pre-update samples + ``F`` on the post-update ones (``F`` alone first order);
    meta-gradient = adaptation (forward + backward, pre) + forward + backward (post) + ``H`` (pre);
    one line-search try = adaptation + forward (post); TRPO step = gradient + 10 HVPs (the CG iterations; the
    step's curvature comes from CG's residual) + tries.
    """
    c = _layer_flops((size.obs_dim, *size.hidden_sizes, size.act_dim))
    head, rest = c[0], sum(c[1:])
    forward = head + rest
    backward = head + 2 * rest
    inner = 2 * head + 6 * rest
    fisher = 2 * head + 4 * rest
    n = size.num_tasks * size.samples
    hvp = n * (fisher if first_order else 2 * inner + fisher)
    gradient = n * (2 * (forward + backward) + (0 if first_order else inner))
    line_search = n * (forward + backward + forward)
    flops = {"meta_gradient": gradient, "kl_hvp": hvp, "trpo_step": gradient + 10 * hvp + tries * line_search}
    return float(flops[what])


@dataclass
class Row:
    case: str
    ours_s: float
    loop_s: float
    double_backward_s: float | None
    floor_s: float
    eager_s: float | None = None
    speedup_best: float | None = None
    """Best round of the loop over ours' best round (on a shared machine other work only ever adds time)."""

    @property
    def speedup(self) -> float:
        return self.loop_s / self.ours_s


ROWS: list[Row] = []


def record(
    benchmark,
    case: str,
    device: str,
    ours: float,
    loop: float,
    double_backward: float | None,
    flops: float,
    rate: float,
    eager: float | None = None,
    best: tuple[float, float] | None = None,
) -> None:
    """Store the comparison in ``benchmark.extra_info`` (JSON) and for the summary table. On a GPU ``ours``
    is the CUDA-graph replay and ``eager`` the same passes launched one by one. Nothing under
    ``--benchmark-disable`` (a correctness run)."""
    if benchmark.disabled:
        return
    floor = flops / rate
    benchmark.extra_info.update(
        {
            "eager_median_s": eager,
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "ours_median_s": ours,
            "loop_median_s": loop,
            "double_backward_median_s": double_backward,
            "speedup_vs_loop": loop / ours,
            "ours_best_s": None if best is None else best[0],
            "loop_best_s": None if best is None else best[1],
            "speedup_vs_loop_best_round": None if best is None else best[1] / best[0],
            "speedup_vs_double_backward": None if double_backward is None else double_backward / ours,
            "flops": flops,
            "matmul_gflops": rate / 1e9,
            "matmul_gflops_this_run": LAST_MEASURED.get(device, math.nan) / 1e9,
            "flop_floor_s": floor,
            "ratio_to_flop_floor": ours / floor,
        }
    )
    ROWS.append(
        Row(case, ours, loop, double_backward, floor, eager, None if best is None else best[1] / best[0])
    )


def pytest_terminal_summary(terminalreporter) -> None:
    if not ROWS:
        return
    write = terminalreporter.write_line
    write("")
    write(
        f"meta-gradient kernel (median seconds; {torch.get_num_threads()} threads, torch {torch.__version__})"
    )
    columns = ("ours", "eager", "loop", "dbl-bwd", "floor")
    header = (
        f"{'case':<34} " + " ".join(f"{c:>9}" for c in columns) + f" {'×loop':>7} {'×best':>7} {'×floor':>7}"
    )
    write(header)
    write("-" * len(header))
    for row in ROWS:
        double_backward = "-" if row.double_backward_s is None else f"{row.double_backward_s:9.4f}"
        eager = "-" if row.eager_s is None else f"{row.eager_s:9.4f}"
        best = "-" if row.speedup_best is None else f"{row.speedup_best:7.1f}"
        write(
            f"{row.case:<34} {row.ours_s:9.4f} {eager:>9} {row.loop_s:9.4f} {double_backward:>9} "
            f"{row.floor_s:9.4f} {row.speedup:7.1f} {best:>7} {row.ours_s / row.floor_s:7.2f}"
        )
    write("×loop: loop median / ours median; ×best: best rounds; ×floor: ours median / FLOP floor")
