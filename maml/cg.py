"""Conjugate gradient for ``A x = b`` with A symmetric positive definite, given only ``v ↦ A v``."""

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
        return self.x @ (b - self.residual)


def solve(
    matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10, residual_tol: float = 1e-10
) -> CGResult:
    """At most ``iters`` iterations of CG from ``x = 0`` (Nocedal & Wright, Algorithm 5.2).

    Stops early once the squared residual norm falls below ``residual_tol``.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    r_dot = r @ r
    for _ in range(iters):
        if r_dot < residual_tol:
            break
        ap = matvec(p)
        alpha = r_dot / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        new_r_dot = r @ r
        p = r + (new_r_dot / r_dot) * p
        r_dot = new_r_dot
    return CGResult(x=x, residual=r)


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor], b: Tensor, iters: int = 10, residual_tol: float = 1e-10
) -> Tensor:
    """Approximate ``A⁻¹ b``: :func:`solve`'s ``x``."""
    return solve(matvec, b, iters, residual_tol).x
