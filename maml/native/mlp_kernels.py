"""The fused CPU kernels of ``mlp_kernels.c``: ``H_i u`` and ``J_i F_i J_i v`` tile by tile, in C.

:mod:`maml.gauss_newton`'s torch passes run each step of the R-operator chain over the whole batch, so on a
CPU every intermediate makes a round trip to memory and the narrow output head's products are memory-bound.
The C kernels push each task's samples through the whole chain a tile at a time (intermediates in cache)
with the same formulas; torch still computes the constants (:func:`maml.gauss_newton.linearize`).

The library is built on first use (``-O3 -march=native``, keyed by the CPU's instruction-set flags; see
:mod:`maml.native_build`). Where it cannot be built, :func:`load` warns once and returns ``None``, and the
torch passes run instead: slower, same numbers up to rounding. ``MAML_BENCH_NATIVE=0`` turns it off.
float32 and float64 tensors are supported; tensors must be contiguous on the CPU.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import subprocess
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from maml import native_build

SOURCE = Path(__file__).with_name("mlp_kernels.c")
BODY = Path(__file__).with_name("mlp_kernels_body.h")
SWITCH_ENV_VAR = "MAML_BENCH_NATIVE"
"""Set to ``0`` to use the torch passes (and the Python stepping loop)."""
MAX_LAYERS = 8
ABI_VERSION = 1
OP_INNER_HVP, OP_KL_HVP = 0, 1


class _Net(ctypes.Structure):
    _fields_ = [("num_layers", ctypes.c_int), ("widths", ctypes.c_int * (MAX_LAYERS + 1))]


class _Side(ctypes.Structure):
    _fields_ = [
        ("samples", ctypes.c_long),
        ("params", ctypes.c_void_p),
        ("inputs", ctypes.c_void_p * MAX_LAYERS),
        ("deltas", ctypes.c_void_p * MAX_LAYERS),
        ("curvature", ctypes.c_void_p),
        ("cross", ctypes.c_void_p),
        ("log_std_curvature", ctypes.c_void_p),
    ]


class _Request(ctypes.Structure):
    _fields_ = [
        ("net", _Net),
        ("operation", ctypes.c_int),
        ("threads", ctypes.c_int),
        ("num_tasks", ctypes.c_long),
        ("inner_lr", ctypes.c_double),
        ("inner", ctypes.POINTER(_Side)),
        ("fisher", ctypes.POINTER(_Side)),
        ("vector", ctypes.c_void_p),
        ("vector_task_stride", ctypes.c_long),
        ("out", ctypes.c_void_p),
        ("total", ctypes.c_void_p),
    ]


def _cpu_key() -> str:
    """What ``-march=native`` compiles for: the CPU's instruction-set flags (Linux), else the machine name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return f"{platform.machine()}|{platform.processor()}"


FLAGS = ["-O3", "-march=native", "-pthread", f"-I{SOURCE.parent}"]


def library_path() -> Path:
    return native_build.library_path("mlp_kernels", [SOURCE, BODY], FLAGS, _cpu_key())


def _pointer(tensor: Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


class Side:
    """One side's constants as the C structure wants them (the tensors are kept alive here)."""

    def __init__(
        self,
        params: Tensor,
        inputs: Sequence[Tensor],
        curvature: Tensor,
        log_std_curvature: Tensor,
        deltas: Sequence[Tensor] = (),
        cross: Tensor | None = None,
    ) -> None:
        tensors = [params, *inputs, *deltas, curvature, log_std_curvature] + (
            [] if cross is None else [cross]
        )
        for tensor in tensors:
            if tensor.device.type != "cpu" or not tensor.is_contiguous() or tensor.dtype != params.dtype:
                raise ValueError("the fused kernels take contiguous CPU tensors of one dtype")
        self.tensors = tensors
        self.dtype = params.dtype
        self.num_tasks = inputs[0].shape[0]
        self.struct = _Side(
            samples=inputs[0].shape[1],
            params=_pointer(params),
            inputs=(ctypes.c_void_p * MAX_LAYERS)(*map(_pointer, inputs)),
            deltas=(ctypes.c_void_p * MAX_LAYERS)(*map(_pointer, deltas)),
            curvature=_pointer(curvature),
            cross=_pointer(cross),
            log_std_curvature=_pointer(log_std_curvature),
        )


class MlpKernels:
    """The loaded library: :meth:`run` one operation over every task."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._library = library
        self._run = {}
        for dtype, suffix in ((torch.float32, "f32"), (torch.float64, "f64")):
            function = getattr(library, f"maml_bench_run_{suffix}")
            function.argtypes = [ctypes.POINTER(_Request)]
            function.restype = ctypes.c_int
            self._run[dtype] = function

    def run(
        self,
        operation: int,
        widths: Sequence[int],
        inner: Side | None,
        fisher: Side | None,
        vector: Tensor,
        out: Tensor,
        inner_lr: float = 0.0,
        threads: int | None = None,
        total: Tensor | None = None,
    ) -> Tensor:
        """``out [T, P]`` ← the operation per task; ``vector`` is shared ``[P]`` or per task ``[T, P]``.
        ``total [P]``, when given, receives the sum over tasks (returned instead of ``out``)."""
        if len(widths) - 1 > MAX_LAYERS:
            raise ValueError(f"the fused kernels take at most {MAX_LAYERS} layers")
        side = inner if inner is not None else fisher
        if side is None:
            raise ValueError("no side given")
        for tensor in (vector, out) if total is None else (vector, out, total):
            if tensor.device.type != "cpu" or not tensor.is_contiguous() or tensor.dtype != side.dtype:
                raise ValueError("vector and out must be contiguous CPU tensors of the sides' dtype")
        request = _Request(
            net=_Net(num_layers=len(widths) - 1, widths=(ctypes.c_int * (MAX_LAYERS + 1))(*widths)),
            operation=operation,
            threads=torch.get_num_threads() if threads is None else threads,
            num_tasks=side.num_tasks,
            inner_lr=inner_lr,
            inner=None if inner is None else ctypes.pointer(inner.struct),
            fisher=None if fisher is None else ctypes.pointer(fisher.struct),
            vector=vector.data_ptr(),
            vector_task_stride=0 if vector.dim() == 1 else vector.shape[-1],
            out=out.data_ptr(),
            total=_pointer(total),
        )
        if self._run[side.dtype](ctypes.byref(request)) != 0:
            raise MemoryError("the fused kernels could not allocate their scratch memory")
        return out if total is None else total


@functools.cache
def load() -> MlpKernels | None:
    """The kernels (built on first use), or ``None`` when switched off or they cannot be built or loaded."""
    if os.environ.get(SWITCH_ENV_VAR, "1") == "0":
        return None
    try:
        library = native_build.build_and_load(library_path(), SOURCE, FLAGS)
        if library.maml_bench_mlp_abi() // 1000 != ABI_VERSION:
            raise OSError("the cached library was built from another version of the source")
        return MlpKernels(library)
    except (OSError, subprocess.SubprocessError) as error:
        warnings.warn(
            f"maml-bench: the KL Hessian-vector products run as torch passes (slower, same results): the "
            f"fused C kernels are unavailable: {error}",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
