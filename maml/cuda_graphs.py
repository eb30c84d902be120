"""CUDA-graph replay of the kernel's fixed-shape products: one launch instead of hundreds.

On a GPU the explicit passes of :mod:`maml.gauss_newton` are launch-bound at garage's sizes: a KL
Hessian-vector product is ~220 tensor operations and the meta-gradient ~360, each a few microseconds of
Python and kernel launch, while the arithmetic of a whole product takes about a millisecond. A CUDA graph
records the kernels of one call and replays them with a single launch.

:class:`CapturedFunction` captures a function of tensors on *static* inputs. Each call copies its arguments
into those static tensors, replays the graph and returns the static outputs, which the next call
overwrites: copy or consume them first. The function must be capturable: no host synchronisation
(``.item()``, data-dependent Python control flow) and the same shapes every call. Everything it allocates
during capture lives in the graph's private memory pool for as long as the object lives, and so does ``fn``
(with its closure or bound object): the graph reads their tensors by address, so they must not be freed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Outputs = Tensor | tuple[Tensor, ...]


def available(*tensors: Tensor) -> bool:
    """Whether graph capture applies: every tensor lives on a CUDA device."""
    return bool(tensors) and all(t.device.type == "cuda" for t in tensors)


class CapturedFunction:
    """``fn(*inputs) → tensor or tuple of tensors``, replayed from a CUDA graph.

    ``example_inputs`` give the shapes, dtypes and device (they are copied, not kept). ``warmup`` eager
    calls on a side stream come first, as CUDA graphs require (lazy library handles and workspaces, and the
    first allocations of reused scratch buffers, must happen outside the capture).
    """

    def __init__(self, fn: Callable[..., Outputs], *example_inputs: Tensor, warmup: int = 1) -> None:
        if not available(*example_inputs):
            raise ValueError("CUDA-graph capture needs CUDA tensors as inputs")
        device = example_inputs[0].device
        self._fn = fn  # keeps what the graph reads alive (e.g. a bound method's object and its constants)
        self._inputs = tuple(x.detach().clone() for x in example_inputs)
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                fn(*self._inputs)
        torch.cuda.current_stream(device).wait_stream(stream)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._outputs = fn(*self._inputs)

    def __call__(self, *inputs: Tensor) -> Outputs:
        if len(inputs) != len(self._inputs):
            raise TypeError(f"expected {len(self._inputs)} inputs, got {len(inputs)}")
        for static, value in zip(self._inputs, inputs, strict=True):
            static.copy_(value)
        self._graph.replay()
        return self._outputs
