"""Count what one torch-pass meta-gradient or KL-HVP dispatches, on CPU: operations and bytes written.

A GPU runs (or replays) one kernel per such operation, so the count is a proxy for the GPU path's cost that
any machine can measure: ``python bench/gpu/count_ops.py [t40|halfcheetah|ml45] [segments]``. ``segments``
forces the GPU's split-K segments (16 at N=4000) so that the CPU dispatches what a GPU would; all tasks go
through in one chunk, as on a GPU. Views (reshape, slice, transpose, …) and allocations are not counted.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from maml import gauss_newton, mlp_passes, trpo

INNER_LR = 0.1
ALLOCATIONS = {"empty", "empty_like", "empty_strided", "_unsafe_view"}
"""Operations that write nothing (besides views, which :attr:`OpOverload.is_view` marks)."""


class _Count(TorchDispatchMode):
    """Records each dispatched operation with the bytes of the tensors it returns."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view and func.overloadpacket.__name__ not in ALLOCATIONS:
            outs = out if isinstance(out, tuple | list) else [out]
            written = sum(o.numel() * o.element_size() for o in outs if isinstance(o, torch.Tensor))
            self.calls.append((str(func), written))
        return out


def count(call: Callable[[], object]) -> tuple[int, int, Counter[str]]:
    """(operations, bytes written, operations by name) of one ``call``, views and allocations left out."""
    with _Count() as counter:
        call()
    return len(counter.calls), sum(b for _, b in counter.calls), Counter(name for name, _ in counter.calls)


def main(name: str, segments: int) -> None:
    from bench.benchmarks.conftest import SIZES, problem  # the benchmarks' problems (only for this script)

    size = SIZES[name]
    theta, batch = problem(size, "cpu")
    if segments > 1:
        mlp_passes.split_k_segments = lambda x: segments  # what a GPU would choose
    point = gauss_newton.linearize(
        theta, batch, trpo.surrogate, INNER_LR, task_chunk=size.num_tasks, fused=False
    )
    vector = torch.randn_like(point.gradient)
    calls = {
        "meta-gradient": lambda: gauss_newton.meta_gradient_tensors(
            theta, batch, trpo.surrogate, INNER_LR, task_chunk=size.num_tasks, fused=False
        ),
        "kl-hvp": lambda: point.kl_hvp(vector),
    }
    for label, call in calls.items():
        operations, written, by_name = count(call)
        print(
            f"{label} ({name}, {segments} split-K segments): {operations} operations, {written / 1e9:.3f} GB"
        )
        print("  " + ", ".join(f"{op.removeprefix('aten.')} ×{n}" for op, n in by_name.most_common(12)))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "t40", int(sys.argv[2]) if len(sys.argv) > 2 else 16)
