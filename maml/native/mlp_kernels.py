"""The fused CPU kernels of ``mlp_kernels.c``: every pass of a MAML-TRPO outer step, tile by tile, in C.

:mod:`maml.gauss_newton`'s torch passes run each step of the R-operator chain over the whole batch, so on a
CPU every intermediate makes a round trip to memory and the narrow output head's products are memory-bound.
The C kernels push each task's samples through the whole chain a tile at a time (intermediates in cache)
with the same formulas: the inner adaptation keeping the constants of ``H_i`` (:meth:`MlpKernels.adapt`),
the forward and backward passes over the post-update samples (:meth:`MlpKernels.forward`,
:meth:`MlpKernels.backward`), ``H_i u`` and ``J_i F_i J_i v`` (:meth:`MlpKernels.run`). Torch only
differentiates the surrogate in the mean and log-std (:func:`maml.gauss_newton.linearize`).

The library is built on first use (``-O3 -march=native``, keyed by the CPU's instruction-set flags; see
:mod:`maml.native_build`). Where it cannot be built, :func:`load` warns once and returns ``None``, and the
torch passes run instead: slower, same numbers up to rounding. ``MAML_BENCH_NATIVE=0`` turns it off.
float32 and float64 tensors are supported; tensors must be contiguous on the CPU.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import platform
import weakref
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from maml import native_build

SOURCE = Path(__file__).with_name("mlp_kernels.c")
BODY = Path(__file__).with_name("mlp_kernels_body.h")
SWITCH_ENV_VAR = native_build.SWITCH_ENV_VAR
MAX_LAYERS = 8
ABI_VERSION = 2
OP_INNER_HVP, OP_KL_HVP, OP_ADAPT, OP_FORWARD, OP_BACKWARD = range(5)
MAX_WIDTH = 4096


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
        ("samples", ctypes.c_long),
        ("observations", ctypes.c_void_p),
        ("actions", ctypes.c_void_p),
        ("weights", ctypes.c_void_p),
        ("mean", ctypes.c_void_p),
        ("keep", ctypes.POINTER(_Side)),
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


def _check(tensors: Sequence[Tensor], dtype: torch.dtype) -> None:
    for tensor in tensors:
        if tensor.device.type != "cpu" or not tensor.is_contiguous() or tensor.dtype != dtype:
            raise ValueError("the fused kernels take contiguous CPU tensors of one dtype")


class Recycler:
    """Large constant arrays reused from one call to the next instead of freshly allocated.

    A linearization keeps ~100 MB of constants (HalfCheetahDir) to over 1 GB (ML45); freshly allocated, every
    page of it is faulted in and zeroed by the kernel on first write, which costs as much as the pass that
    fills it. :meth:`take` returns an array that an earlier owner has released, else a new one;
    :meth:`release_with` hands arrays back once their owner (a :class:`Side`, a :class:`Kept` list) has been
    garbage-collected, so nothing still referenced is ever reused. At most :attr:`HELD` released arrays per
    shape and dtype are held (a linearization takes up to six of one shape: hidden layers of equal widths).
    """

    HELD = 8

    def __init__(self) -> None:
        self._free: dict[tuple[tuple[int, ...], torch.dtype], list[Tensor]] = {}

    def take(self, shape: Sequence[int], dtype: torch.dtype) -> Tensor:
        released = self._free.get((tuple(shape), dtype))
        return released.pop() if released else torch.empty(tuple(shape), dtype=dtype)

    def release_with(self, owner: object, tensors: Sequence[Tensor]) -> None:
        weakref.finalize(owner, self._give_back, list(tensors))

    def _give_back(self, tensors: list[Tensor]) -> None:
        for tensor in tensors:
            released = self._free.setdefault((tuple(tensor.shape), tensor.dtype), [])
            if len(released) < self.HELD:
                released.append(tensor)


RECYCLER = Recycler()


class Kept(list):
    """The layer inputs a forward pass kept (a list, so that it can own recycled arrays)."""


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
        _check(tensors, params.dtype)
        self.tensors = tensors
        self.sources = (inputs, deltas)  # a Kept list's arrays are recycled only once this side is gone too
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


def num_params(widths: Sequence[int]) -> int:
    """P, the length of the flat θ the kernels read: each layer's ``[in, out]`` weights and ``[out]`` bias,
    then the log-std ``[act]``."""
    return sum((w_in + 1) * w_out for w_in, w_out in itertools.pairwise(widths)) + widths[-1]


def _expect(name: str, tensor: Tensor, *shapes: tuple[int, ...]) -> None:
    """The C code trusts the lengths it is given: a tensor of another shape would be read or written past
    its end, so it is refused here."""
    if tuple(tensor.shape) not in shapes:
        wanted = " or ".join(str(list(s)) for s in shapes)
        raise ValueError(f"{name} must have shape {wanted} for these widths, got {list(tensor.shape)}")


def _net(widths: Sequence[int]) -> _Net:
    if not 1 <= len(widths) - 1 <= MAX_LAYERS or max(widths) > MAX_WIDTH:
        raise ValueError(f"the fused kernels take 1 to {MAX_LAYERS} layers of at most {MAX_WIDTH} units")
    return _Net(num_layers=len(widths) - 1, widths=(ctypes.c_int * (MAX_LAYERS + 1))(*widths))


class MlpKernels:
    """The loaded library: the products (:meth:`run`) and the passes that build their constants
    (:meth:`adapt`, :meth:`forward`, :meth:`backward`), each over every task, on ``threads`` threads
    (default: torch's intra-op thread count)."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._library = library
        self._run = {}
        for dtype, suffix in ((torch.float32, "f32"), (torch.float64, "f64")):
            function = getattr(library, f"maml_bench_run_{suffix}")
            function.argtypes = [ctypes.POINTER(_Request)]
            function.restype = ctypes.c_int
            self._run[dtype] = function

    def _invoke(self, dtype: torch.dtype, threads: int | None, **fields) -> None:
        request = _Request(threads=torch.get_num_threads() if threads is None else threads, **fields)
        if self._run[dtype](ctypes.byref(request)) != 0:
            raise MemoryError("the fused kernels could not allocate their scratch memory")

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
        """``out [T, P]`` ← ``OP_INNER_HVP`` or ``OP_KL_HVP`` per task; ``vector`` is shared ``[P]`` or per
        task ``[T, P]``. ``total [P]``, when given, receives the sum over tasks (and is returned)."""
        side = inner if inner is not None else fisher
        if side is None or operation not in (OP_INNER_HVP, OP_KL_HVP):
            raise ValueError("run() computes OP_INNER_HVP or OP_KL_HVP and needs a side")
        _check([vector, out] if total is None else [vector, out, total], side.dtype)
        net, size, tasks = _net(widths), num_params(widths), side.num_tasks
        _expect("vector", vector, (size,), (tasks, size))
        _expect("out", out, (tasks, size))
        for given in (inner, fisher):
            if given is not None:
                _expect("a side's params", given.tensors[0], (size,), (tasks, size))
        if total is not None:
            _expect("total", total, (size,))
        self._invoke(
            side.dtype,
            threads,
            net=net,
            operation=operation,
            num_tasks=side.num_tasks,
            inner_lr=inner_lr,
            inner=None if inner is None else ctypes.pointer(inner.struct),
            fisher=None if fisher is None else ctypes.pointer(fisher.struct),
            vector=vector.data_ptr(),
            vector_task_stride=0 if vector.dim() == 1 else vector.shape[-1],
            out=out.data_ptr(),
            total=_pointer(total),
        )
        return out if total is None else total

    def adapt(
        self,
        widths: Sequence[int],
        params: Tensor,
        observations: Tensor,
        actions: Tensor,
        weights: Tensor,
        inner_lr: float,
        keep: bool,
        threads: int | None = None,
    ) -> tuple[Tensor, Side | None]:
        """One inner step per task: ``params`` (θ ``[P]`` or θ_i ``[T, P]``) → θ'_i ``[T, P]``, on the samples
        ``observations [T, M, obs]``, ``actions [T, M, act]`` with loss weights ``weights [T, M]``
        (advantage · mask / n_i). With ``keep``, also the inner side (the constants of ``H_i u``)."""
        num_tasks, samples = observations.shape[:2]
        _check([params, observations, actions, weights], params.dtype)
        net, size = _net(widths), num_params(widths)
        _expect("params", params, (size,), (num_tasks, size))
        _expect("observations", observations, (num_tasks, samples, widths[0]))
        _expect("actions", actions, (num_tasks, samples, widths[-1]))
        _expect("weights", weights, (num_tasks, samples))
        adapted = torch.empty(num_tasks, params.shape[-1], dtype=params.dtype)
        side = None
        if keep:
            act, dtype = widths[-1], params.dtype
            inputs = [RECYCLER.take((num_tasks, samples, w + 1), dtype) for w in widths[:-1]]
            deltas = [RECYCLER.take((num_tasks, samples, w), dtype) for w in widths[1:]]
            curvature, cross = (RECYCLER.take((num_tasks, samples, act), dtype) for _ in range(2))
            side = Side(
                params,
                inputs,
                curvature,
                torch.empty(num_tasks, act, dtype=dtype),
                deltas=deltas,
                cross=cross,
            )
            RECYCLER.release_with(side, [*inputs, *deltas, curvature, cross])
        self._invoke(
            params.dtype,
            threads,
            net=net,
            operation=OP_ADAPT,
            num_tasks=num_tasks,
            inner_lr=inner_lr,
            vector=params.data_ptr(),
            vector_task_stride=0 if params.dim() == 1 else params.shape[-1],
            out=adapted.data_ptr(),
            samples=samples,
            observations=observations.data_ptr(),
            actions=actions.data_ptr(),
            weights=weights.data_ptr(),
            keep=None if side is None else ctypes.pointer(side.struct),
        )
        return adapted, side

    def forward(
        self,
        widths: Sequence[int],
        params: Tensor,
        observations: Tensor,
        keep: bool,
        threads: int | None = None,
    ) -> tuple[Tensor, Kept | None]:
        """The mean ``[T, M, act]`` at θ_i ``[T, P]`` for ``observations [T, M, obs]``; with ``keep``, also
        the layer inputs ``X_k = [x_k, 1]  [T, M, in_k + 1]`` (recycled once the list is garbage)."""
        num_tasks, samples = observations.shape[:2]
        _check([params, observations], params.dtype)
        net, size = _net(widths), num_params(widths)
        _expect("params", params, (size,), (num_tasks, size))
        _expect("observations", observations, (num_tasks, samples, widths[0]))
        mean = torch.empty(num_tasks, samples, widths[-1], dtype=params.dtype)
        inputs = None
        if keep:
            inputs = Kept(RECYCLER.take((num_tasks, samples, w + 1), params.dtype) for w in widths[:-1])
            RECYCLER.release_with(inputs, inputs)
        keep_side = None
        if inputs is not None:
            keep_side = _Side(samples=samples, inputs=(ctypes.c_void_p * MAX_LAYERS)(*map(_pointer, inputs)))
        self._invoke(
            params.dtype,
            threads,
            net=net,
            operation=OP_FORWARD,
            num_tasks=num_tasks,
            vector=params.data_ptr(),
            vector_task_stride=0 if params.dim() == 1 else params.shape[-1],
            samples=samples,
            observations=observations.data_ptr(),
            mean=mean.data_ptr(),
            keep=None if keep_side is None else ctypes.pointer(keep_side),
        )
        return mean, inputs

    def backward(self, widths: Sequence[int], side: Side, head: Tensor, threads: int | None = None) -> Tensor:
        """``(∂μ/∂θ_i)ᵀ g_i [T, P]`` on ``side``'s samples (its inputs and θ_i), ``g = head [T, M, act]``;
        the log-std slot is zero."""
        _check([head], side.dtype)
        net = _net(widths)
        _expect("head", head, (side.num_tasks, side.struct.samples, widths[-1]))
        out = torch.empty(side.num_tasks, side.tensors[0].shape[-1], dtype=side.dtype)
        self._invoke(
            side.dtype,
            threads,
            net=net,
            operation=OP_BACKWARD,
            num_tasks=side.num_tasks,
            fisher=ctypes.pointer(side.struct),
            vector=head.data_ptr(),
            out=out.data_ptr(),
        )
        return out


@functools.cache
def load() -> MlpKernels | None:
    """The kernels (built on first use), or ``None`` when switched off or they cannot be built or loaded."""

    def build_and_load() -> MlpKernels:
        library = native_build.build_and_load(library_path(), SOURCE, FLAGS)
        if library.maml_bench_mlp_abi() // 1000 != ABI_VERSION:
            raise OSError("the cached library was built from another version of the source")
        return MlpKernels(library)

    instead = "the MLP passes run in torch (slower, same results): the fused C kernels are unavailable"
    return native_build.load_or_warn(instead, build_and_load)
