"""Hand-written forward, backward and R-operator passes of the tanh MLP, batched over tasks.

The network of :mod:`maml.policy`: ``z_k = x_k W_k + b_k`` for layers ``k = 0 .. L−1``,
``x_{k+1} = tanh(z_k)`` for the hidden layers, and the mean ``μ = z_{L−1}``. Samples are ``[T, M, ·]``
(``T`` tasks, ``M`` samples).

Layout. Parameter-space vectors (θ, gradients, tangents) are flat tensors ``[P]`` (shared by all tasks) or
``[T, P]`` (one row per task) in :data:`policy`'s key order ``w0, b0, w1, b1, …, log_std``, so each layer's
``A_k = [W_k; b_k]`` is one contiguous ``[in_k + 1, out_k]`` view (:class:`Layout`). Layer inputs carry a
column of ones, ``X_k = [x_k, 1]  [T, M, in_k + 1]``, so that ``z_k = X_k A_k`` and ``∂ℓ/∂A_k = X_kᵀ δ_k``
(bias included) are single batched products that read and write the flat vectors in place: no bias
broadcasts, no separate bias reductions, no per-parameter bookkeeping.

- :func:`forward` keeps what the other passes reuse: each ``X_k``. The tanh slopes ``1 − x_{k+1}²`` are not
  stored: every pass that needs one multiplies by it in a single fused element-wise step
  (:meth:`Activations.times_slope`).
- :func:`backward` is the vector-Jacobian product ``(∂μ/∂θ)ᵀ g``: gradients per task or summed over tasks.
- :func:`r_forward` is the Jacobian-vector product ``R{z_k} = (∂z_k/∂θ) u`` (Pearlmutter 1994, §4).
- :func:`r_backward` is ``R{∇_θ ℓ}`` for a loss of the mean, the exact Hessian-vector product
  (Pearlmutter 1994, §5): the backward pass differentiated along ``u``.

Every pass is a chain of ``bmm``/``baddbmm`` and in-place element-wise updates (``mul``, ``addcmul_``),
with no autograd graph. Large intermediates are written into :class:`Buffers`, so the many passes of one
outer step reuse memory instead of allocating (and page-faulting) fresh tensors.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from maml.policy import Params


class Buffers:
    """Named scratch tensors, allocated on first use and then reused (contents are overwritten, not kept).

    A pass takes its outputs from here; they stay valid until a pass with the same name and shape runs again.
    """

    def __init__(self) -> None:
        self._tensors: dict[tuple[str, tuple[int, ...]], Tensor] = {}

    def take(self, name: str, shape: Sequence[int], like: Tensor) -> Tensor:
        """An uninitialised ``shape`` tensor with ``like``'s dtype and device, the same memory every call."""
        return self._take(name, shape, like)[0]

    def take_with_ones(self, name: str, shape: Sequence[int], like: Tensor) -> Tensor:
        """:meth:`take` whose last column is ones: filled when the tensor is allocated, then kept, so the
        users of such a buffer must write its first columns only (a strided fill costs as much as a GEMM)."""
        tensor, fresh = self._take(name, shape, like)
        if fresh:
            tensor[..., -1].fill_(1.0)
        return tensor

    def _take(self, name: str, shape: Sequence[int], like: Tensor) -> tuple[Tensor, bool]:
        key = (name, tuple(shape))
        tensor = self._tensors.get(key)
        if tensor is None or tensor.dtype != like.dtype or tensor.device != like.device:
            tensor = torch.empty(key[1], dtype=like.dtype, device=like.device)
            self._tensors[key] = tensor
            return tensor, True
        return tensor, False


@dataclass(frozen=True)
class Layout:
    """Where each layer's ``A_k = [W_k; b_k]`` and the log-std sit in a flat parameter vector."""

    widths: tuple[int, ...]
    """``(obs, h_1, …, act)``: layer ``k`` maps ``widths[k]`` to ``widths[k + 1]``."""

    @staticmethod
    def of(params: Params) -> Layout:
        """The layout of a policy's parameter dict (shared or task-batched)."""
        count = sum(1 for name in params if name.startswith("w"))
        weights = [params[f"w{k}"] for k in range(count)]
        return Layout(widths=(weights[0].shape[-2], *(w.shape[-1] for w in weights)))

    @property
    def num_layers(self) -> int:
        return len(self.widths) - 1

    @property
    def names(self) -> tuple[str, ...]:
        """The canonical key order: ``w0, b0, w1, b1, …, log_std``."""
        return (*itertools.chain.from_iterable((f"w{k}", f"b{k}") for k in range(self.num_layers)), "log_std")

    def _offset(self, layer: int) -> int:
        return sum((self.widths[k] + 1) * self.widths[k + 1] for k in range(layer))

    @property
    def num_params(self) -> int:
        return self._offset(self.num_layers) + self.widths[-1]

    def layer(self, flat: Tensor, k: int) -> Tensor:
        """``A_k = [W_k; b_k]``: a view ``[..., in + 1, out]`` of ``flat [..., P]``."""
        start, rows, cols = self._offset(k), self.widths[k] + 1, self.widths[k + 1]
        return flat[..., start : start + rows * cols].view(*flat.shape[:-1], rows, cols)

    def weight(self, flat: Tensor, k: int) -> Tensor:
        """``W_k``: a view ``[..., in, out]``."""
        return self.layer(flat, k)[..., :-1, :]

    def log_std(self, flat: Tensor) -> Tensor:
        """The log-std: a view ``[..., act]``."""
        return flat[..., self._offset(self.num_layers) :]

    def flatten(self, params: Params) -> Tensor:
        """A parameter dict (shared or task-batched ``[T, ...]``) → one flat tensor in the canonical order."""
        first = params["log_std"]
        lead = first.shape[:-1]
        return torch.cat([params[name].reshape(*lead, -1) for name in self.names], dim=-1)

    def to_params(self, flat: Tensor) -> Params:
        """Views of ``flat`` as a parameter dict in the canonical order."""
        out: Params = {}
        for k in range(self.num_layers):
            out[f"w{k}"] = self.weight(flat, k)
            out[f"b{k}"] = self.layer(flat, k)[..., -1, :]
        out["log_std"] = self.log_std(flat)
        return out


@dataclass(frozen=True)
class Activations:
    """What a forward pass leaves for the backward and R-passes of the same parameters and samples."""

    inputs: tuple[Tensor, ...]
    """``X_k = [x_k, 1]``: each layer's input with a column of ones, ``[T, M, in_k + 1]``."""
    mean: Tensor
    """``μ = z_{L−1}``, ``[T, M, act]``."""

    def hidden(self, k: int) -> Tensor:
        """``x_{k+1} = tanh(z_k)`` of the hidden layer ``k`` (a view of the next input, ``[T, M, out_k]``)."""
        return self.inputs[k + 1][..., :-1]

    def times_slope(self, values: Tensor, k: int, out: Tensor) -> Tensor:
        """``values ⊙ tanh'(z_k) = values ⊙ (1 − x_{k+1}²)`` into ``out`` (``values`` itself allowed): one
        fused element-wise pass reading the layer's output, so no slopes are stored."""
        return torch.ops.aten.tanh_backward.grad_input(values, self.hidden(k), grad_input=out)

    def tasks(self, start: int, stop: int) -> Activations:
        """The same activations for tasks ``start .. stop − 1`` (views)."""
        return Activations(
            inputs=tuple(x[start:stop] for x in self.inputs),
            mean=self.mean[start:stop],
        )


def take(buffers: Buffers | None, name: str, shape: Sequence[int], like: Tensor) -> Tensor:
    """``buffers.take(...)``, or a fresh uninitialised tensor when ``buffers`` is ``None``."""
    if buffers is None:
        return torch.empty(tuple(shape), dtype=like.dtype, device=like.device)
    return buffers.take(name, shape, like)


def _batched(matrix: Tensor, num_tasks: int) -> Tensor:
    """A shared ``[r, c]`` matrix as a ``[T, r, c]`` view (``bmm`` beats one flat ``mm`` on CPU)."""
    return matrix.expand(num_tasks, *matrix.shape) if matrix.dim() == 2 else matrix


def with_ones(x: Tensor, name: str, buffers: Buffers | None = None) -> Tensor:
    """``[x, 1]``: ``x [T, M, n]`` with a column of ones appended, ``[T, M, n + 1]``."""
    out = _ones_input(x.shape, name, x, buffers)
    out[..., :-1].copy_(x)
    return out


def _ones_input(shape: Sequence[int], name: str, like: Tensor, buffers: Buffers | None) -> Tensor:
    """An uninitialised ``[T, M, n + 1]`` input whose last column is ones (the first ``n`` get written)."""
    full = (*shape[:-1], shape[-1] + 1)
    if buffers is not None:
        return buffers.take_with_ones(name, full, like)
    out = torch.empty(full, dtype=like.dtype, device=like.device)
    out[..., -1].fill_(1.0)
    return out


def forward(layout: Layout, params: Tensor, obs: Tensor, buffers: Buffers | None = None) -> Activations:
    """The policy mean for ``obs [T, M, obs]`` at flat ``params`` (``[P]`` or ``[T, P]``), keeping what the
    other passes reuse. Fresh tensors (constants for the caller to keep) unless ``buffers`` are given."""
    num_tasks = obs.shape[0]
    x = with_ones(obs, "forward_x0", buffers)
    inputs = [x]
    for k in range(layout.num_layers - 1):
        width = layout.widths[k + 1]
        z = take(buffers, "forward_z", (*x.shape[:-1], width), x)
        torch.bmm(x, _batched(layout.layer(params, k), num_tasks), out=z)
        x = _ones_input(z.shape, f"forward_x{k + 1}", z, buffers)
        torch.tanh(z, out=x[..., :-1])  # straight into the next input: no copy pass
        inputs.append(x)
    last = layout.num_layers - 1
    mean = torch.bmm(
        x,
        _batched(layout.layer(params, last), num_tasks),
        out=take(buffers, "forward_mean", (*x.shape[:-1], layout.widths[-1]), x),
    )
    return Activations(inputs=tuple(inputs), mean=mean)


def mean_only(layout: Layout, params: Tensor, obs: Tensor, buffers: Buffers) -> Tensor:
    """The policy mean ``[T, M, act]`` alone (a value-only pass; scratch from ``buffers``)."""
    num_tasks = obs.shape[0]
    x = with_ones(obs, "mean_only_x0", buffers)
    for k in range(layout.num_layers - 1):
        z = buffers.take("mean_only_z", (*x.shape[:-1], layout.widths[k + 1]), x)
        torch.bmm(x, _batched(layout.layer(params, k), num_tasks), out=z)
        x = _ones_input(z.shape, f"mean_only_x{k + 1}", z, buffers)
        torch.tanh(z, out=x[..., :-1])
    last = layout.num_layers - 1
    return torch.bmm(x, _batched(layout.layer(params, last), num_tasks))


def _narrow(x: Tensor, delta: Tensor) -> bool:
    """Whether ``Xᵀ δ`` is better computed as ``(δᵀ X)ᵀ``: ``δ`` far narrower than ``X`` (the output head)."""
    return 4 * delta.shape[-1] <= x.shape[-1]


GPU_SEGMENT_SAMPLES = 256
"""On a GPU, ``Xᵀ δ`` sums over ``M`` samples per task with a tiny ``[in + 1, out]`` result: one GEMM per task
runs a few thread blocks down a 4000-long reduction and leaves most of the chip idle (~145 µs of a 3.5 ms
HVP at T=40 on an H200). Splitting the reduction into segments of at least this many samples, one GEMM each,
then summing the partial products ("split-K"), fills the chip."""


def split_k_segments(x: Tensor) -> int:
    """Segments of the sample axis for ``Xᵀ δ``: 1 on CPU (per-task GEMMs run near peak there), else the
    largest of 16, 8, 4, 2 that divides ``M`` into segments of at least :data:`GPU_SEGMENT_SAMPLES`."""
    samples = x.shape[1]
    if x.device.type == "cpu":
        return 1
    return next((s for s in (16, 8, 4, 2) if samples % s == 0 and samples // s >= GPU_SEGMENT_SAMPLES), 1)


def _direct_outer(target: Tensor, x: Tensor, delta: Tensor, extra: tuple[Tensor, Tensor] | None) -> None:
    """``target = Xᵀ δ (+ [r_xᵀ δ'; 0])`` per task ``[T, in + 1, out]``, one GEMM per task and term."""
    if _narrow(x, delta):  # (δᵀ X)ᵀ: the narrow operand in the rows
        torch.bmm(delta.transpose(1, 2), x, out=target.transpose(1, 2))
        if extra is not None:
            target[:, :-1].transpose(1, 2).baddbmm_(extra[1].transpose(1, 2), extra[0])
        return
    torch.bmm(x.transpose(1, 2), delta, out=target)
    if extra is not None:
        target[:, :-1].baddbmm_(extra[0].transpose(1, 2), extra[1])


def _grouped_outer(
    target: Tensor,
    k: int,
    buffers: Buffers,
    x: Tensor,
    delta: Tensor,
    extra: tuple[Tensor, Tensor] | None,
    segments: int,
) -> None:
    """:func:`_direct_outer` by groups of samples: each task cut into ``segments`` (split-K), one batched
    product per term into the same partial sums, then one sum, per task (``target [T, in + 1, out]``) or
    over every task (``target [in + 1, out]``)."""
    num_tasks = x.shape[0]
    groups = num_tasks * segments

    def grouped(t: Tensor) -> Tensor:
        return t.reshape(groups, -1, t.shape[-1])

    narrow = _narrow(x, delta)
    block = (delta.shape[-1], x.shape[-1]) if narrow else (x.shape[-1], delta.shape[-1])
    parts = buffers.take(f"layer_gradient{k}", (groups, *block), x)
    if narrow:
        torch.bmm(grouped(delta).transpose(1, 2), grouped(x), out=parts)
        if extra is not None:
            parts[..., :-1].baddbmm_(grouped(extra[1]).transpose(1, 2), grouped(extra[0]))
    else:
        torch.bmm(grouped(x).transpose(1, 2), grouped(delta), out=parts)
        if extra is not None:
            parts[:, :-1].baddbmm_(grouped(extra[0]).transpose(1, 2), grouped(extra[1]))
    result = target.transpose(-1, -2) if narrow else target
    if target.dim() == 3:
        torch.sum(parts.view(num_tasks, segments, *block), 1, out=result)
    else:
        torch.sum(parts, 0, out=result)


def _layer_gradient(
    out: Tensor,
    k: int,
    layout: Layout,
    buffers: Buffers,
    x: Tensor,
    delta: Tensor,
    extra: tuple[Tensor, Tensor] | None = None,
) -> None:
    """``∂ℓ/∂A_k = X_kᵀ δ_k`` (plus ``extra = (r_x, δ')``: ``+ [r_xᵀ δ'; 0]``) into the flat ``out``:
    per task when ``out`` is ``[T, P]``, summed over tasks when it is ``[P]``."""
    target = layout.layer(out, k)
    segments = split_k_segments(x)
    if out.dim() == 2 and segments == 1:
        _direct_outer(target, x, delta, extra)
    else:
        _grouped_outer(target, k, buffers, x, delta, extra, segments)


def backward(
    layout: Layout,
    acts: Activations,
    params: Tensor,
    grad_mean: Tensor,
    out: Tensor,
    buffers: Buffers,
    delta_store: Buffers | None,
) -> list[Tensor]:
    """Vector-Jacobian product of the mean: ``grad_mean = ∂ℓ/∂μ [T, M, act]`` → ``∂ℓ/∂A_k`` written into the
    layer views of ``out`` (``[T, P]`` per task or ``[P]`` summed; the log-std slot is left to the caller).

    Returns ``δ_k = ∂ℓ/∂z_k [T, M, out_k]`` with ``δ_{k−1} = (δ_k W_kᵀ) ⊙ (1 − x_k²)``, held in
    ``delta_store`` (fresh tensors when ``None``: constants the caller keeps); scratch from ``buffers``.
    """
    num_tasks = grad_mean.shape[0]
    deltas = [grad_mean] * layout.num_layers
    for k in range(layout.num_layers - 1, -1, -1):
        delta = deltas[k]
        _layer_gradient(out, k, layout, buffers, acts.inputs[k], delta)
        if k > 0:
            hidden = acts.hidden(k - 1)
            previous = take(delta_store, f"backward{k - 1}", hidden.shape, hidden)
            weight = _batched(layout.weight(params, k), num_tasks).transpose(1, 2)
            deltas[k - 1] = acts.times_slope(torch.bmm(delta, weight, out=previous), k - 1, previous)
    return deltas


def r_forward(
    layout: Layout, acts: Activations, params: Tensor, tangent: Tensor, buffers: Buffers
) -> tuple[list[Tensor], list[Tensor]]:
    """Directional derivatives of the pre-activations along the flat ``tangent`` (``[P]`` or ``[T, P]``).

    ``R{z_0} = X_0 U_0``; ``R{x_k} = tanh'(z_{k−1}) ⊙ R{z_{k−1}}``; ``R{z_k} = X_k U_k + R{x_k} W_k`` with
    ``U_k = [dW_k; db_k]`` the tangent's layer view. Returns ``(R{z_k}, k = 0 .. L−1; R{x_k}, k = 1 .. L−1)``
    (``R{z_{L−1}} = R{μ}``), all in ``buffers``.
    """
    num_tasks = acts.mean.shape[0]
    r_z: list[Tensor] = []
    r_x: list[Tensor] = []
    for k in range(layout.num_layers):
        x = acts.inputs[k]
        out = buffers.take(f"r_z{k}", (*x.shape[:-1], layout.widths[k + 1]), x)
        torch.bmm(x, _batched(layout.layer(tangent, k), num_tasks), out=out)
        if k > 0:
            out.baddbmm_(r_x[-1], _batched(layout.weight(params, k), num_tasks))
        r_z.append(out)
        if k < layout.num_layers - 1:
            r_x.append(acts.times_slope(out, k, buffers.take(f"r_x{k + 1}", out.shape, out)))
    return r_z, r_x


def r_backward(
    layout: Layout,
    acts: Activations,
    params: Tensor,
    deltas: Sequence[Tensor],
    tanh_curvature: Sequence[Tensor],
    tangent: Tensor,
    r_z: Sequence[Tensor],
    r_x: Sequence[Tensor],
    r_delta_out: Tensor,
    out: Tensor,
    buffers: Buffers,
) -> None:
    """``R{∂ℓ/∂A_k}``: the backward pass differentiated along ``tangent`` (Pearlmutter 1994), written into
    the layer views of ``out`` (``[T, P]`` per task or ``[P]`` summed; the log-std slot is left alone).

    With ``δ_{k−1} = (δ_k W_kᵀ) ⊙ (1 − x_k²)``: ``R{∂ℓ/∂A_k} = X_kᵀ R{δ_k} + [R{x_k}ᵀ δ_k; 0]``,
    ``R{δ_{k−1}} = (R{δ_k} W_kᵀ + δ_k dW_kᵀ) ⊙ (1 − x_k²) − 2 q_{k−1} ⊙ R{z_{k−1}}`` with the constants
    ``q_{k−1} = x_k ⊙ δ_{k−1}`` (``tanh_curvature``, from the slope's derivative). ``r_delta_out`` is
    ``R{δ_{L−1}} = R{∂ℓ/∂μ}``, which the loss supplies.
    """
    num_tasks = r_delta_out.shape[0]
    r_delta = r_delta_out
    for k in range(layout.num_layers - 1, -1, -1):
        extra = (r_x[k - 1], deltas[k]) if k > 0 else None
        _layer_gradient(out, k, layout, buffers, acts.inputs[k], r_delta, extra)
        if k == 0:
            break
        hidden = acts.hidden(k - 1)
        r_delta_x = buffers.take(f"r_delta{k - 1}", hidden.shape, hidden)
        torch.bmm(deltas[k], _batched(layout.weight(tangent, k), num_tasks).transpose(1, 2), out=r_delta_x)
        r_delta_x.baddbmm_(r_delta, _batched(layout.weight(params, k), num_tasks).transpose(1, 2))
        r_delta = acts.times_slope(r_delta_x, k - 1, r_delta_x).addcmul_(
            tanh_curvature[k - 1], r_z[k - 1], value=-2.0
        )
