"""MAML-TRPO's meta-gradient and exact KL Hessian-vector product by explicit batched passes.

With one inner step per task, ``θ'_i = θ − α ∇L_i(θ)`` has the Jacobian ``J_i = ∂θ'_i/∂θ = I − α H_i``,
``H_i = ∇²L_i(θ)``, the Hessian of the inner VPG loss on the pre-update samples (symmetric, so
``J_iᵀ = J_i``). For the meta-objective J(θ) and the mean-KL constraint f(θ) of :mod:`maml.trpo`:

    ∇_θ J(θ) = 1/T Σ_i J_i ∇_θ' S_i(θ'_i)                      (meta-gradient)
    ∇²_θ f(θ) = 1/T Σ_i J_i F_i J_i                             (KL Hessian at the current θ)

with ``F_i = ∇²_θ' KL(π_sampled,i ‖ π_θ')`` at ``θ' = θ'_i``. The second line is exact because the
post-update samples come from ``π_θ'_i`` itself: the KL and its gradient vanish at θ, so the chain rule's
term ``Σ ∂KL/∂θ' · ∇²θ'`` is zero. ``F_i`` is the Fisher of the Gaussian head pulled back through the
network: ``Gᵀ diag(σ'⁻²) G`` on the mean (``G = ∂μ/∂θ'``, a mask-weighted mean over the task's samples)
plus ``2·I`` on the log-std, with no mean/log-std cross term. (Were the samples drawn by a slightly
different policy, this would be the Gauss-Newton approximation of the Hessian: still positive semi-definite.)

During a TRPO outer step θ is fixed, so every activation (pre- and post-update), θ', the inner backward
signals and the loss curvatures are constants: :func:`linearize` computes them once. Each Hessian-vector
product is then R-operator passes only (Pearlmutter 1994, :mod:`maml.mlp_passes`): ``J_i v`` (R-forward and
R-backward over the pre-update samples, ``H_i v``), ``F_i u_i`` (R-forward and backward over the
post-update samples) and ``Σ_i J_i g_i`` (``H_i`` again). Tasks are independent until the final sum, so a
product runs over chunks of tasks whose intermediates stay in cache (on CPU; one chunk on a GPU).
``first_order=True`` sets ``J_i = I`` (FOMAML), for any number of inner steps. The line search uses
:func:`evaluate`, value-only passes.

On CPU every pass above runs by default in the fused C kernels of :mod:`maml.native.mlp_kernels` (the same
formulas, each task's samples pushed through the whole chain a tile at a time, so that intermediates stay in
cache), with torch left to compute the surrogate's derivatives in the mean and log-std; the torch passes
here remain the GPU path, the fallback where no C compiler is found, and the reference the kernels are
tested against. ``fused=False`` selects them on CPU.

Vectors are flat in the canonical key order ``w0, b0, …, log_std`` (:class:`maml.mlp_passes.Layout`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from maml import cuda_graphs, mlp_passes, policy
from maml.meta import MetaBatch, Surrogate
from maml.mlp_passes import Activations, Buffers, Layout
from maml.native import mlp_kernels
from maml.policy import Params
from maml.samples import Episodes, masked_mean

CPU_CHUNK_BYTES = 4 * 2**20
"""On CPU, tasks per chunk are chosen so that one ``[chunk, M, width]`` intermediate takes about this many
bytes. Measured on the 2-core machine (T=20, N=4000, 64×64, one thread): chunks of 1–4 tasks are 10–15 %
faster than one chunk of all 20, whose intermediates no longer stay in the last-level cache; smaller chunks
issue more operations, which costs under contention."""


def supports(num_grad_updates: int, first_order: bool) -> bool:
    """Whether the explicit passes cover this adaptation: one inner step, or any number first-order."""
    return num_grad_updates == 1 or first_order


def default_task_chunk(batch: MetaBatch, width: int) -> int:
    """Tasks per chunk: all of them on a GPU; on CPU as many as fit :data:`CPU_CHUNK_BYTES` per array."""
    obs = batch.post.observations
    if obs.device.type != "cpu":
        return batch.post.num_tasks
    samples = max(e.flat("mask").shape[1] for e in (*batch.pre, batch.post))
    per_task = samples * width * obs.element_size()
    return max(1, min(batch.post.num_tasks, CPU_CHUNK_BYTES // per_task))


def _per_sample(values: Tensor) -> Tensor:
    """``[act]`` (shared) or ``[T, act]`` (per task) → broadcastable against ``[T, M, act]``."""
    return values if values.dim() == 1 else values.unsqueeze(1)


def _sample_weights(episodes: Episodes, scale: float = 1.0) -> Tensor:
    """``scale · mask / n_i`` (``n_i``: the task's valid samples, ≥ 1), a masked mean as a sum: ``[T, M]``."""
    mask = episodes.flat("mask")
    return mask * (scale / mask.sum(1, keepdim=True).clamp_min(1.0))


def _write_log_std(layout: Layout, out: Tensor, per_task: Tensor) -> None:
    """Store a per-task log-std block ``[T, act]`` into ``out`` (``[T, P]``, or ``[P]`` as the task sum)."""
    target = layout.log_std(out)
    if out.dim() == 1:
        torch.sum(per_task, 0, out=target)
    else:
        target.copy_(per_task)


def fused_kernels(device: torch.device, fused: bool | None = None) -> mlp_kernels.MlpKernels | None:
    """The fused C kernels (:mod:`maml.native.mlp_kernels`) for tensors on ``device``, or ``None`` for the
    torch passes. ``fused=None`` uses them on CPU where they build; ``True`` insists (an error if they are
    unavailable or the device is not a CPU); ``False`` never uses them."""
    if fused is False:
        return None
    kernels = mlp_kernels.load() if device.type == "cpu" else None
    if fused and kernels is None:
        raise RuntimeError(f"the fused kernels run on CPU tensors only and must build (device {device})")
    return kernels


@dataclass(frozen=True)
class InnerCurvature:
    """What ``H_i v`` needs: the inner losses ``L_i(θ) = −Σ_t w_t log π_θ(a_t|s_t)``, ``w = A·mask/n_i``.

    For the Gaussian head with residual ``r = a − μ`` and ``c = w·e^{−2s}`` (per action dimension):
    ``∂L/∂μ = −c r``, ``∂²L/∂μ² = c``, ``∂²L/∂μ∂s = 2 c r``, ``∂²L/∂s² = Σ_t 2 c r²``.
    """

    layout: Layout
    theta: Tensor
    """θ, flat ``[P]``."""
    acts: Activations
    """The forward pass at θ on the pre-update observations (``[T, M, ·]``)."""
    deltas: tuple[Tensor, ...]
    """``δ_k = ∂L/∂z_k [T, M, out_k]`` of the inner loss."""
    tanh_curvature: tuple[Tensor, ...]
    """``q_k = x_{k+1} ⊙ δ_k`` for the hidden layers (the R-backward's slope term is ``−2 q_k ⊙ R{z_k}``)."""
    mean_curvature: Tensor
    """``c [T, M, act]``."""
    cross_curvature: Tensor
    """``2 c r [T, M, act]``."""
    log_std_curvature: Tensor
    """``Σ_t 2 c r² [T, act]``."""
    inner_lr: float
    """α."""

    def tasks(self, start: int, stop: int) -> InnerCurvature:
        """The constants of tasks ``start .. stop − 1`` (views)."""
        return InnerCurvature(
            layout=self.layout,
            theta=self.theta,
            acts=self.acts.tasks(start, stop),
            deltas=tuple(d[start:stop] for d in self.deltas),
            tanh_curvature=tuple(q[start:stop] for q in self.tanh_curvature),
            mean_curvature=self.mean_curvature[start:stop],
            cross_curvature=self.cross_curvature[start:stop],
            log_std_curvature=self.log_std_curvature[start:stop],
            inner_lr=self.inner_lr,
        )


def _inner_step(
    layout: Layout,
    params: Tensor,
    episodes: Episodes,
    inner_lr: float,
    scratch: Buffers,
    keep: bool,
    store: Buffers | None = None,
) -> tuple[Tensor, InnerCurvature | None]:
    """One SGD step on every task's VPG loss: flat ``params`` (``[P]`` θ or ``[T, P]``) → θ' ``[T, P]``.

    With ``keep`` the pass also returns the curvature constants of ``H_i``, held in ``store`` (fresh tensors
    when ``None``); otherwise it is value-only and its intermediates live in ``scratch``.
    """
    kept = store if keep else scratch
    acts = mlp_passes.forward(layout, params, episodes.flat("observations"), kept)
    residual = episodes.flat("actions") - acts.mean
    sample_w = (_sample_weights(episodes) * episodes.flat("advantages")).unsqueeze(-1)
    mean_curvature = sample_w * _per_sample(torch.exp(-2.0 * layout.log_std(params)))
    weighted_residual = mean_curvature * residual
    grads = torch.empty(episodes.num_tasks, layout.num_params, dtype=params.dtype, device=params.device)
    deltas = mlp_passes.backward(layout, acts, params, -weighted_residual, grads, scratch, kept)
    layout.log_std(grads).copy_((sample_w - weighted_residual * residual).sum(1))
    adapted = torch.add(params, grads, alpha=-inner_lr)
    if not keep:
        return adapted, None
    curvature = InnerCurvature(
        layout=layout,
        theta=params,
        acts=acts,
        deltas=tuple(deltas),
        tanh_curvature=tuple(
            torch.mul(
                acts.hidden(k), delta, out=mlp_passes.take(store, f"tanh_curvature{k}", delta.shape, delta)
            )
            for k, delta in enumerate(deltas[:-1])
        ),
        mean_curvature=mean_curvature,
        cross_curvature=2.0 * weighted_residual,
        log_std_curvature=2.0 * (weighted_residual * residual).sum(1),
        inner_lr=inner_lr,
    )
    return adapted, curvature


def inner_hvp(curv: InnerCurvature, tangent: Tensor, out: Tensor, buffers: Buffers) -> Tensor:
    """``H_i u`` for every task into ``out``: ``[T, P]`` per task, or ``[P]`` for ``Σ_i H_i u_i``.

    ``tangent`` is flat, shared ``[P]`` or per task ``[T, P]``.
    """
    layout = curv.layout
    r_z, r_x = mlp_passes.r_forward(layout, curv.acts, curv.theta, tangent, buffers)
    r_mean, tangent_log_std = r_z[-1], layout.log_std(tangent)
    scratch = buffers.take("inner_hvp", r_mean.shape, r_mean)
    r_grad_log_std = torch.mul(curv.cross_curvature, r_mean, out=scratch).sum(1)
    _write_log_std(layout, out, r_grad_log_std.addcmul_(curv.log_std_curvature, tangent_log_std))
    r_delta_out = torch.mul(curv.mean_curvature, r_mean, out=scratch)
    r_delta_out.addcmul_(curv.cross_curvature, _per_sample(tangent_log_std))
    mlp_passes.r_backward(
        layout,
        curv.acts,
        curv.theta,
        curv.deltas,
        curv.tanh_curvature,
        tangent,
        r_z,
        r_x,
        r_delta_out,
        out,
        buffers,
    )
    return out


def adaptation_jvp(curv: InnerCurvature, vector: Tensor, out: Tensor, buffers: Buffers) -> Tensor:
    """``J_i v = v − α H_i v`` for a shared flat ``v [P]``, into ``out [T, P]``."""
    inner_hvp(curv, vector, out, buffers)
    return torch.add(vector, out, alpha=-curv.inner_lr, out=out)


def adaptation_vjp_sum(curv: InnerCurvature, vectors: Tensor, out: Tensor, buffers: Buffers) -> Tensor:
    """``Σ_i J_iᵀ g_i = Σ_i (g_i − α H_i g_i)`` for per-task ``g [T, P]``, into ``out [P]``."""
    hessian_part = inner_hvp(curv, vectors, buffers.take("vjp_sum", out.shape, out), buffers)
    return torch.sum(vectors, 0, out=out).add_(hessian_part, alpha=-curv.inner_lr)


@dataclass(frozen=True)
class PostFisher:
    """``F_i``: the KL's Hessian w.r.t. θ'_i on the post-update observations, task mean folded in."""

    layout: Layout
    adapted: Tensor
    """θ'_i, flat ``[T, P]``."""
    acts: Activations
    """The forward pass at θ' on the post-update observations."""
    mean_weight: Tensor
    """``mask / (n_i T) · e^{−2s'_i}  [T, M, act]``: ``∂²/∂μ²`` of the task-averaged masked-mean KL."""
    log_std_weight: Tensor
    """``2 ρ_i / T  [T, 1]`` with ``ρ_i = Σ mask / max(Σ mask, 1)``: ``∂²/∂s'²`` of the same."""

    def tasks(self, start: int, stop: int) -> PostFisher:
        """The constants of tasks ``start .. stop − 1`` (views)."""
        return PostFisher(
            layout=self.layout,
            adapted=self.adapted[start:stop],
            acts=self.acts.tasks(start, stop),
            mean_weight=self.mean_weight[start:stop],
            log_std_weight=self.log_std_weight[start:stop],
        )


def fisher_vector(fisher: PostFisher, tangent: Tensor, out: Tensor, buffers: Buffers) -> Tensor:
    """``F_i u_i`` into ``out`` (``[T, P]``, or ``[P]`` summed): R-forward to ``R{μ}``, weights, backward.

    ``tangent`` is flat, shared ``[P]`` or per task ``[T, P]``.
    """
    layout = fisher.layout
    r_z, _ = mlp_passes.r_forward(layout, fisher.acts, fisher.adapted, tangent, buffers)
    weighted = r_z[-1].mul_(fisher.mean_weight)
    mlp_passes.backward(layout, fisher.acts, fisher.adapted, weighted, out, buffers, buffers)
    _write_log_std(layout, out, fisher.log_std_weight * layout.log_std(tangent))
    return out


@dataclass(frozen=True)
class FusedProduct:
    """``v ↦ 1/T Σ_i J_i F_i J_i v`` by the fused C kernels, over every task at once."""

    kernels: mlp_kernels.MlpKernels
    layout: Layout
    inner: mlp_kernels.Side | None
    """``None``: first order, ``J_i = I``."""
    fisher: mlp_kernels.Side
    inner_lr: float

    def __call__(self, vector: Tensor, buffers: Buffers) -> Tensor:
        per_task = buffers.take("kl_hvp_fused", (self.fisher.num_tasks, vector.shape[0]), vector)
        return self.kernels.run(
            mlp_kernels.OP_KL_HVP,
            self.layout.widths,
            self.inner,
            self.fisher,
            vector,
            per_task,
            self.inner_lr,
            total=torch.empty_like(vector),
        )


@dataclass(frozen=True)
class Linearization:
    """Everything a TRPO outer step needs at the current θ, computed once by :func:`linearize`."""

    layout: Layout
    chunks: tuple[tuple[InnerCurvature | None, PostFisher], ...]
    """Per chunk of tasks: the adaptation's curvature (``None`` for first order, ``J_i = I``) and ``F_i``."""
    buffers: Buffers
    """Scratch memory shared by every product (chunks run one after the other)."""
    loss: float
    """The meta-objective J(θ)."""
    kl: float
    """The mean KL at θ (0 up to rounding when the post-update samples came from θ')."""
    entropy: float
    """Mean entropy of the adapted policies."""
    gradient: Tensor
    """∇_θ J(θ), flat ``[P]`` (canonical order)."""
    fused: FusedProduct | None = None
    """The same product by the fused C kernels (CPU), used instead of the chunks when present."""

    def kl_hvp(self, vector: Tensor) -> Tensor:
        """``∇²f(θ) v = 1/T Σ_i J_i F_i J_i v`` for a flat ``v [P]`` (the exact Hessian at θ)."""
        if self.fused is not None:
            return self.fused(vector, self.buffers)
        total = torch.zeros_like(vector)
        part = self.buffers.take("kl_hvp_part", vector.shape, vector)
        for inner, fisher in self.chunks:
            num_tasks = fisher.adapted.shape[0]
            if inner is None:
                fisher_vector(fisher, vector, part, self.buffers)
            else:
                per_task_shape = (num_tasks, vector.shape[0])
                adapted_tangent = self.buffers.take("kl_hvp_jv", per_task_shape, vector)
                adaptation_jvp(inner, vector, adapted_tangent, self.buffers)
                fisher_part = self.buffers.take("kl_hvp_fjv", per_task_shape, vector)
                fisher_vector(fisher, adapted_tangent, fisher_part, self.buffers)
                adaptation_vjp_sum(inner, fisher_part, part, self.buffers)
            total += part
        return total


def _adapt(
    layout: Layout,
    theta: Tensor,
    rounds: Sequence[Episodes],
    inner_lr: float,
    keep: bool,
    scratch: Buffers,
    store: Buffers | None = None,
) -> tuple[Tensor, InnerCurvature | None]:
    """θ → θ' ``[T, P]`` after ``len(rounds)`` inner steps; the first step's curvature when ``keep``."""
    params, curvature = _inner_step(layout, theta, rounds[0], inner_lr, scratch, keep, store)
    for episodes in rounds[1:]:
        params, _ = _inner_step(layout, params, episodes, inner_lr, scratch, keep=False)
    return params, curvature


def _surrogate_value(post: Episodes, mean: Tensor, log_std: Tensor, surrogate: Surrogate) -> Tensor:
    """The outer loss (mean over tasks) from θ''s post-update means ``[T, M, act]``, ``log_std [T, act]``."""
    log_prob = policy.log_prob(mean, log_std, post.flat("actions"))
    return surrogate(log_prob, post.flat("log_probs"), post.flat("advantages"), post.flat("mask")).mean()


def _surrogate_derivatives(
    post: Episodes, mean: Tensor, log_std: Tensor, surrogate: Surrogate, num_tasks: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """The outer loss ``Σ_i surrogate_i / num_tasks`` (detached; ``num_tasks`` defaults to this batch's, a
    mean) and its derivatives in θ''s means ``[T, M, act]`` and log-std ``[T, act]``: the signal the backward
    passes carry into the network.

    The surrogate sees the policy only through ``log π(a|s)``, so autograd runs on the ``[T, M]``
    log-densities alone, ``g = ∂L/∂log π``, and the Gaussian's chain rule is written out: with
    ``z = (a − μ) e^{−s}``, ``∂log π/∂μ = z e^{−s}`` and ``∂log π/∂s = z² − 1``."""
    num_tasks = post.num_tasks if num_tasks is None else num_tasks
    mean, log_std = mean.detach(), log_std.detach()
    z = policy.standardized(mean, log_std, post.flat("actions"))
    log_prob = policy.log_prob_of_standardized(z, log_std).requires_grad_()
    with torch.enable_grad():
        per_task = surrogate(log_prob, post.flat("log_probs"), post.flat("advantages"), post.flat("mask"))
        loss = per_task.sum() / num_tasks
        (grad_log_prob,) = torch.autograd.grad(loss, [log_prob])
    weighted = grad_log_prob.unsqueeze(-1) * z
    grad_log_std = (weighted * z).sum(1).sub_(grad_log_prob.sum(1, keepdim=True))
    return loss.detach(), weighted.mul_(torch.exp(-log_std).unsqueeze(1)), grad_log_std


def _kl_value(post: Episodes, mean: Tensor, log_std: Tensor) -> Tensor:
    """mean_i KL(π_sampled,i ‖ π_θ'_i) over the post-update samples, from θ''s means and log-std."""
    kl = policy.kl_divergence(post.flat("means"), post.log_std, mean, log_std)
    return masked_mean(kl, post.flat("mask")).mean()


def _task_slice(batch: MetaBatch, start: int, stop: int) -> MetaBatch:
    """The meta-batch of tasks ``start .. stop − 1`` (views)."""

    def cut(episodes: Episodes) -> Episodes:
        changes = {f.name: getattr(episodes, f.name) for f in fields(episodes)}
        return replace(episodes, **{n: None if v is None else v[start:stop] for n, v in changes.items()})

    return MetaBatch(pre=tuple(cut(e) for e in batch.pre), post=cut(batch.post))


def _fisher_weights(post: Episodes, adapted_log_std: Tensor) -> tuple[Tensor, Tensor]:
    """:class:`PostFisher`'s ``mean_weight [T, M, act]`` and ``log_std_weight [T, 1]``."""
    num_tasks = post.num_tasks
    valid = post.flat("mask").sum(1, keepdim=True)
    mean_weight = _sample_weights(post, 1.0 / num_tasks).unsqueeze(-1) * torch.exp(
        -2.0 * adapted_log_std
    ).unsqueeze(1)
    return mean_weight, 2.0 / num_tasks * valid / valid.clamp_min(1.0)


def _contiguous(episodes: Episodes, field: str) -> Tensor:
    return episodes.flat(field).contiguous()


def _fused_adapt(
    kernels: mlp_kernels.MlpKernels,
    layout: Layout,
    theta: Tensor,
    rounds: Sequence[Episodes],
    inner_lr: float,
    keep: bool,
) -> tuple[Tensor, mlp_kernels.Side | None]:
    """:func:`_adapt` by the fused kernels: θ' ``[T, P]`` and, with ``keep``, the first step's inner side."""
    params, side = theta, None
    for index, episodes in enumerate(rounds):
        weights = (_sample_weights(episodes) * episodes.flat("advantages")).contiguous()
        observations, actions = _contiguous(episodes, "observations"), _contiguous(episodes, "actions")
        params, kept = kernels.adapt(
            layout.widths, params, observations, actions, weights, inner_lr, keep and index == 0
        )
        side = kept if index == 0 else side
    return params, side


@dataclass(frozen=True)
class _FusedPoint:
    """What the fused passes at θ leave: the meta-gradient and loss, and what :func:`linearize` keeps."""

    gradient: Tensor
    loss: Tensor
    mean: Tensor
    """θ''s post-update means ``[T, M, act]``."""
    adapted_log_std: Tensor
    inner: mlp_kernels.Side | None
    fisher: mlp_kernels.Side


def _fused_point(
    kernels: mlp_kernels.MlpKernels,
    layout: Layout,
    theta: Tensor,
    batch: MetaBatch,
    surrogate: Surrogate,
    inner_lr: float,
    first_order: bool,
) -> _FusedPoint:
    """:func:`linearize`'s passes by the fused kernels: adapt (keeping ``H_i``'s constants), forward and
    backward over the post-update samples, ``Σ_i J_i g_i``; the surrogate's derivatives in μ and the log-std
    by autograd, as in the torch path. No host synchronisation."""
    post = batch.post
    with torch.no_grad():
        adapted, inner = _fused_adapt(kernels, layout, theta, batch.pre, inner_lr, keep=not first_order)
        mean, inputs = kernels.forward(layout.widths, adapted, _contiguous(post, "observations"), keep=True)
    adapted_log_std = layout.log_std(adapted)
    loss, grad_mean, grad_log_std = _surrogate_derivatives(post, mean, adapted_log_std, surrogate)
    with torch.no_grad():
        mean_weight, log_std_weight = _fisher_weights(post, adapted_log_std)
        fisher = mlp_kernels.Side(adapted, inputs, mean_weight.contiguous(), log_std_weight.contiguous())
        outer = kernels.backward(layout.widths, fisher, grad_mean.contiguous())
        layout.log_std(outer).copy_(grad_log_std)
        gradient = outer.sum(0)
        if inner is not None:
            hessian_part = kernels.run(
                mlp_kernels.OP_INNER_HVP,
                layout.widths,
                inner,
                None,
                outer,
                torch.empty_like(outer),
                total=torch.empty_like(gradient),
            )
            gradient.add_(hessian_part, alpha=-inner_lr)
    return _FusedPoint(gradient, loss, mean, adapted_log_std, inner, fisher)


def meta_gradient(
    theta: Params,
    batch: MetaBatch,
    surrogate: Surrogate,
    inner_lr: float,
    first_order: bool = False,
    task_chunk: int | None = None,
    fused: bool | None = None,
) -> tuple[Tensor, float]:
    """``(∇_θ J(θ), J(θ))`` alone, chunk by chunk of tasks with memory reused across chunks.

    The same passes as :func:`linearize` (adapt, forward and backward over the post-update samples,
    ``Σ_i J_i g_i``), but nothing is kept for later products. The gradient is flat ``[P]``, canonical order.
    ``fused``: whether the fused C kernels run the passes, all tasks at once (:func:`fused_kernels`; by
    default on CPU where they build).
    """
    gradient, loss = meta_gradient_tensors(theta, batch, surrogate, inner_lr, first_order, task_chunk, fused)
    return gradient, loss.item()


def meta_gradient_tensors(
    theta: Params,
    batch: MetaBatch,
    surrogate: Surrogate,
    inner_lr: float,
    first_order: bool = False,
    task_chunk: int | None = None,
    fused: bool | None = None,
    buffers: tuple[Buffers, Buffers] | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`meta_gradient` with the loss as a 0-d tensor: no host synchronisation, so that the whole
    computation can be captured in a CUDA graph (:mod:`maml.cuda_graphs`).

    ``buffers``: the torch passes' memory ``(kept constants, scratch)``, for repeated calls to reuse (their
    inputs' columns of ones are then written once, not on every call); fresh ones when ``None``."""
    if not supports(len(batch.pre), first_order):
        raise ValueError("the explicit passes support one inner step (or first order); use double backward")
    layout = Layout.of(theta)
    flat_theta = layout.flatten({name: p.detach() for name, p in theta.items()})
    kernels = fused_kernels(flat_theta.device, fused)
    if kernels is not None:
        point = _fused_point(kernels, layout, flat_theta, batch, surrogate, inner_lr, first_order)
        return point.gradient, point.loss
    num_tasks = batch.post.num_tasks
    chunk = task_chunk or default_task_chunk(batch, max(layout.widths[1:]))
    store, scratch = (Buffers(), Buffers()) if buffers is None else buffers
    gradient = torch.zeros_like(flat_theta)
    part = torch.empty_like(flat_theta)
    loss = torch.zeros((), dtype=flat_theta.dtype, device=flat_theta.device)
    for start in range(0, num_tasks, chunk):
        tasks = _task_slice(batch, start, min(start + chunk, num_tasks))
        post = tasks.post
        with torch.no_grad():
            adapted, inner = _adapt(layout, flat_theta, tasks.pre, inner_lr, not first_order, scratch, store)
            acts = mlp_passes.forward(layout, adapted, post.flat("observations"), scratch)
            chunk_loss, grad_mean, grad_log_std = _surrogate_derivatives(
                post, acts.mean, layout.log_std(adapted), surrogate, num_tasks
            )
            outer = scratch.take("meta_gradient_outer", adapted.shape, adapted)
            mlp_passes.backward(layout, acts, adapted, grad_mean, outer, scratch, scratch)
            layout.log_std(outer).copy_(grad_log_std)
            gradient += outer.sum(0) if inner is None else adaptation_vjp_sum(inner, outer, part, scratch)
        loss += chunk_loss.detach()
    return gradient, loss


def captured_meta_gradient(
    theta: Params, batch: MetaBatch, surrogate: Surrogate, inner_lr: float, first_order: bool = False
) -> cuda_graphs.CapturedFunction:
    """:func:`meta_gradient_tensors` as a function of a flat θ ``[P]`` (canonical order), replayed from a
    CUDA graph: ``captured(flat_theta) → (gradient [P], loss)``, the graph's static outputs.

    ``theta`` (on a CUDA device) gives the shapes; the graph reads ``batch``'s tensors where they are, so new
    samples must be copied into them. Capture costs a few eager calls: worth it for repeated calls.
    """
    layout = Layout.of(theta)
    memory = (Buffers(), Buffers())  # filled by the warm-up call: the graph only overwrites them

    def from_flat(flat: Tensor) -> tuple[Tensor, Tensor]:
        params = layout.to_params(flat)
        return meta_gradient_tensors(params, batch, surrogate, inner_lr, first_order, buffers=memory)

    return cuda_graphs.CapturedFunction(from_flat, layout.flatten({n: p.detach() for n, p in theta.items()}))


def linearize(
    theta: Params,
    batch: MetaBatch,
    surrogate: Surrogate,
    inner_lr: float,
    first_order: bool = False,
    task_chunk: int | None = None,
    fused: bool | None = None,
) -> Linearization:
    """Adapt, evaluate and differentiate at θ once, keeping the constants of every Hessian-vector product.

    ``task_chunk`` tasks go through each product's torch passes together (default
    :func:`default_task_chunk`). ``fused``: whether the products run as the fused C kernels, which take all
    tasks at once (:func:`fused_kernels`; by default on CPU where they build).
    """
    if not supports(len(batch.pre), first_order):
        raise ValueError("the explicit passes support one inner step (or first order); use double backward")
    layout = Layout.of(theta)
    flat_theta = layout.flatten({name: p.detach() for name, p in theta.items()})
    post, num_tasks = batch.post, batch.post.num_tasks
    kernels = fused_kernels(flat_theta.device, fused)
    if kernels is not None:
        point = _fused_point(kernels, layout, flat_theta, batch, surrogate, inner_lr, first_order)
        return Linearization(
            layout=layout,
            chunks=(),
            buffers=Buffers(),
            loss=point.loss.item(),
            kl=_kl_value(post, point.mean, point.adapted_log_std).item(),
            entropy=policy.entropy(point.adapted_log_std).mean().item(),
            gradient=point.gradient,
            fused=FusedProduct(kernels, layout, point.inner, point.fisher, inner_lr),
        )
    buffers = Buffers()
    with torch.no_grad():
        adapted, inner = _adapt(layout, flat_theta, batch.pre, inner_lr, not first_order, buffers)
        acts = mlp_passes.forward(layout, adapted, post.flat("observations"))
    adapted_log_std = layout.log_std(adapted)
    loss, grad_mean, grad_log_std = _surrogate_derivatives(post, acts.mean, adapted_log_std, surrogate)
    with torch.no_grad():
        mean_weight, log_std_weight = _fisher_weights(post, adapted_log_std)
        fisher = PostFisher(
            layout=layout, adapted=adapted, acts=acts, mean_weight=mean_weight, log_std_weight=log_std_weight
        )
        chunk = task_chunk or default_task_chunk(batch, max(layout.widths[1:]))
        bounds = [(start, min(start + chunk, num_tasks)) for start in range(0, num_tasks, chunk)]
        chunks = tuple(
            (None if inner is None else inner.tasks(start, stop), fisher.tasks(start, stop))
            for start, stop in bounds
        )
        outer = torch.empty_like(adapted)
        mlp_passes.backward(layout, acts, adapted, grad_mean, outer, buffers, buffers)
        layout.log_std(outer).copy_(grad_log_std)
        if inner is None:
            gradient = outer.sum(0)
        else:
            gradient = torch.zeros_like(flat_theta)
            part = torch.empty_like(flat_theta)
            for (chunk_inner, _), (start, stop) in zip(chunks, bounds, strict=True):
                gradient += adaptation_vjp_sum(chunk_inner, outer[start:stop], part, buffers)
        return Linearization(
            layout=layout,
            chunks=chunks,
            buffers=buffers,
            loss=loss.item(),
            kl=_kl_value(post, acts.mean, adapted_log_std).item(),
            entropy=policy.entropy(adapted_log_std).mean().item(),
            gradient=gradient,
        )


def evaluate(
    theta: Params,
    batch: MetaBatch,
    surrogate: Surrogate,
    inner_lr: float,
    scratch: Buffers | None = None,
    fused: bool | None = None,
) -> tuple[float, float, float]:
    """Surrogate, mean KL and mean entropy at θ by value-only passes (the line search's evaluation).

    Pass the same ``scratch`` to repeated calls (the line search's tries) to reuse their memory. ``fused``:
    see :func:`fused_kernels`.
    """
    scratch = Buffers() if scratch is None else scratch
    layout = Layout.of(theta)
    with torch.no_grad():
        flat_theta = layout.flatten(theta)
        kernels = fused_kernels(flat_theta.device, fused)
        if kernels is not None:
            adapted, _ = _fused_adapt(kernels, layout, flat_theta, batch.pre, inner_lr, keep=False)
            mean, _ = kernels.forward(layout.widths, adapted, _contiguous(batch.post, "observations"), False)
        else:
            adapted, _ = _adapt(layout, flat_theta, batch.pre, inner_lr, False, scratch)
            mean = mlp_passes.mean_only(layout, adapted, batch.post.flat("observations"), scratch)
        log_std = layout.log_std(adapted)
        loss = _surrogate_value(batch.post, mean, log_std, surrogate)
        kl = _kl_value(batch.post, mean, log_std)
        return loss.item(), kl.item(), policy.entropy(log_std).mean().item()
