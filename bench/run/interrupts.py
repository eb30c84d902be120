"""Stopping a training run on SIGINT or SIGTERM, at once but never in the middle of its bookkeeping.

A worker process (:func:`bench.run.executors.run_local`'s, which forwards the command's signal to it) calls
:func:`install`. From then on the first SIGINT or SIGTERM is remembered, and, while a trainer is
:func:`armed`, raises :class:`RunInterrupted` right where the trainer is (sampling, the outer step): the
epoch in progress is dropped, its last checkpoint kept. Inside a :func:`deferred` section (an epoch's row,
checkpoint and manifest) it waits for the section's end, where the trainer's next :func:`check` acts on
it. Later signals are ignored: a trainer recording what it kept is not cut short. Without :func:`install`
(a trainer used directly, a Ray task) Python's own handling stays: SIGINT raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: int | None = None
_armed = False
_deferred = 0


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM; the message says what was kept. A ``KeyboardInterrupt``, so that
    no ``except Exception`` on the way mistakes it for a failure."""


def _handle(signum: int, frame: object) -> None:
    global _received
    if _received is not None:
        return
    _received = signum
    if _armed and not _deferred:
        raise RunInterrupted(f"stopped by {signal.Signals(signum).name}")


def install() -> None:
    """Handle SIGINT and SIGTERM in this process as the module says (call from its main thread)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _handle)


def received() -> int | None:
    """The stop signal this process received, if any."""
    return _received


def check(message: str = "") -> None:
    """Raise :class:`RunInterrupted` (with ``message``, or the signal's name) if a stop signal was
    received."""
    if _received is not None:
        raise RunInterrupted(message or f"stopped by {signal.Signals(_received).name}")


@contextlib.contextmanager
def armed() -> Iterator[None]:
    """Inside the block a stop signal raises at once (outside :func:`deferred` sections); one received
    before it raises on entry."""
    global _armed
    check()
    _armed = True
    try:
        yield
    finally:
        _armed = False


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A section that a stop must not cut in half: a signal received inside is acted on by the next
    :func:`check` (or on entering :func:`armed`)."""
    global _deferred
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1
