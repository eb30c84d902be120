"""Conjugate gradient for ``A x = b`` with A symmetric positive definite, given only ``v ↦ A v``.

Every inner product is :func:`dot`, whose bits do not depend on torch's thread count: a TRPO step is the same
on 1 thread or 16.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class CGResult:
    """The approximate solution and CG's recursively updated residual ``r ≈ b − A x``."""

    x: Tensor
    residual: Tensor

    def curvature(self, b: Tensor) -> Tensor:
        """``xᵀ A x`` without another product: ``xᵀ (b − r)``, since CG keeps ``r = b − A x`` (up to rounding
        in the recursion). TRPO needs it to scale the step; garage spends an extra Hessian-vector product."""
        return dot(self.x, b - self.residual)


def dot(a: Tensor, b: Tensor) -> Tensor:
    """``a · b`` of two vectors, with the bits of a one-thread run whatever torch's thread count.

    On CPU, torch hands a 1-D product to MKL's ``?dot``, which splits vectors of 8192 or more float32
    elements (4096 float64) across threads and adds the partial sums: the bits then depend on the thread
    count. A Meta-World policy (39 → 100 → 100 → 4) has 14,508 parameters, so its CG, and every TRPO step
    after it, changed with the threads per run; HalfCheetahDir's 64×64 policy (5,900) stayed under the cut.
    Here the product runs on one thread (microseconds: cheaper than waking a second thread), giving the bits
    such a run always had. Other devices compute ``a @ b`` as they did.
    """
    threads = torch.get_num_threads()
    if a.device.type != "cpu" or threads == 1:
        return a @ b
    torch.set_num_threads(1)
    try:
        return a @ b
    finally:
        torch.set_num_threads(threads)


def solve(
    matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10, residual_tol: float = 1e-10
) -> CGResult:
    """At most ``iters`` iterations of CG from ``x = 0`` (Nocedal & Wright, Algorithm 5.2).

    Stops early once the squared residual norm falls below ``residual_tol``.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    r_dot = dot(r, r)
    for _ in range(iters):
        if r_dot < residual_tol:
            break
        ap = matvec(p)
        alpha = r_dot / dot(p, ap)
        x = x + alpha * p
        r = r - alpha * ap
        new_r_dot = dot(r, r)
        p = r + (new_r_dot / r_dot) * p
        r_dot = new_r_dot
    return CGResult(x=x, residual=r)


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10, residual_tol: float = 1e-10
) -> Tensor:
    """Approximate ``A⁻¹ b``: :func:`solve`'s ``x``."""
    return solve(matvec, b, iters, residual_tol).x
