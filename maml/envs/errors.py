"""Errors the environments raise on bad input, shared by the HalfCheetahDir batch and the Meta-World pool."""

from __future__ import annotations


class NonFiniteActionError(ValueError):
    """An action holds NaN or infinity (a diverged policy): no simulator is stepped with it."""

    def __init__(self) -> None:
        super().__init__("actions must be finite (got NaN or inf)")
