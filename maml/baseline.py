"""Linear feature baseline (Duan et al. 2016), fitted per task per sampling round, batched over tasks.

garage's MAML examples train no working baseline (its bug 1: the value function is never updated); the
maintainers' unmerged fix uses this baseline, as did the original MAML code. Features per time step:
``[o, o², t/100, (t/100)², (t/100)³, 1]`` with observations clipped to ±10; ridge least squares with
regulariser 1e-5, multiplied by 10 (up to 5 times) while the solution is not finite.
"""

from __future__ import annotations

import torch
from torch import Tensor

REG_COEFF = 1e-5
REG_RETRIES = 5


def features(observations: Tensor, mask: Tensor) -> Tensor:
    """``observations [T, E, H, obs]`` → features ``[T, E, H, 2·obs + 4]`` (zero on padding)."""
    obs = observations.clamp(-10.0, 10.0)
    horizon = observations.shape[2]
    t = torch.arange(horizon, dtype=obs.dtype, device=obs.device) / 100.0
    t = t.view(1, 1, horizon, 1).expand(*obs.shape[:3], 1)
    ones = torch.ones_like(t)
    feats = torch.cat([obs, obs.square(), t, t.square(), t**3, ones], dim=-1)
    return feats * mask.unsqueeze(-1)


def fit(feats: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """Ridge regression per task, in float64: ``feats [T, E, H, F]``, ``returns [T, E, H]`` → ``w [T, F]``.

    Solves ``(XᵀX + reg·I) w = Xᵀy`` over the valid steps of each task; a task whose solution is not
    finite is solved again with ``reg`` ×10, up to five attempts (then it keeps zeros).
    """
    x = (feats * mask.unsqueeze(-1)).flatten(1, 2).double()
    y = (returns * mask).flatten(1, 2).double()
    gram = x.transpose(1, 2) @ x
    rhs = (x.transpose(1, 2) @ y.unsqueeze(-1)).squeeze(-1)
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    weights = torch.zeros_like(rhs)
    todo = torch.ones(gram.shape[0], dtype=torch.bool, device=gram.device)
    reg = REG_COEFF
    for _ in range(REG_RETRIES):
        solution, _info = torch.linalg.solve_ex(gram[todo] + reg * eye, rhs[todo])
        good = torch.isfinite(solution).all(-1)
        index = todo.nonzero().squeeze(-1)
        weights[index[good]] = solution[good]
        todo[index[good]] = False
        if not todo.any():
            break
        reg *= 10.0
    return weights


def predict(feats: Tensor, weights: Tensor) -> Tensor:
    """``feats [T, E, H, F]``, ``weights [T, F]`` → values ``[T, E, H]``."""
    return torch.einsum("tehf,tf->teh", feats.double(), weights).to(feats.dtype)


def fit_and_predict(observations: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """Fit on this round's discounted returns and predict them: the values GAE needs, ``[T, E, H]``."""
    feats = features(observations, mask)
    return predict(feats, fit(feats, returns, mask)) * mask
