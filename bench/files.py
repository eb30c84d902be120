"""Atomic file writes (a reader sees the old file or the new one, never half of one) and run-folder locks."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch


def _atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=True) + "\n"
    _atomic(path, lambda handle: handle.write(text.encode()))


def write_with(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` atomically through ``write(handle)`` (a binary file handle)."""
    _atomic(path, write)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8), atomically."""
    _atomic(path, lambda handle: handle.write(text.encode()))


def read_json(path: Path) -> Any:
    """Read a JSON file; a corrupt one raises ``ValueError`` naming the file."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error


def read_json_object(path: Path) -> dict[str, Any]:
    """:func:`read_json` of a file that must hold a JSON object (config.json, manifest.json)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data


class FolderInUseError(RuntimeError):
    """Another process holds the lock of a run folder."""


LOCK = ".lock"
"""A run folder's trainer lock: held by the process that trains the run, while it trains it."""


def command_lock_path(run: Path) -> Path:
    """The lock a command holds on a run for its whole lifetime (``.seed-<k>.lock`` beside the run folder,
    so that a run not started yet needs no folder, and the report, which skips dot-files, never sees it)."""
    run = Path(run)
    return run.parent / f".{run.name}{LOCK}"


@contextlib.contextmanager
def _locked(path: Path, busy: Callable[[str], str], holder: str) -> Iterator[None]:
    """Hold ``flock`` on ``path`` for the block, writing ``holder`` into it; raises
    :class:`FolderInUseError` with ``busy(who holds it)`` at once if anyone else holds it (another process,
    or another open of the same file in this one). The kernel releases the lock when its holder dies,
    however it dies, so a stale lock cannot block a resume."""
    with Path(path).open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            raise FolderInUseError(busy(_holder_text(handle))) from error
        handle.seek(0)
        handle.truncate()
        handle.write(holder + "\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


HOLDER_WAIT_S = 1.0
"""How long a refused process waits for the lock's holder to write its name (it does so right after taking
the lock: two commands started together can otherwise find the lock held and its file still empty)."""


def _holder_text(handle: IO[str]) -> str:
    """The name a lock's holder wrote into the lock file, read as soon as it is there (at most
    :data:`HOLDER_WAIT_S`; "another process" if none comes)."""
    deadline = time.monotonic() + HOLDER_WAIT_S
    while True:
        handle.seek(0)
        text = handle.read().strip()
        if text or time.monotonic() >= deadline:
            return text or "another process"
        time.sleep(0.01)


def _me() -> str:
    return f"process {os.getpid()} on {socket.gethostname()}"


def exclusive(folder: Path) -> contextlib.AbstractContextManager[None]:
    """Hold ``folder``'s trainer lock (``flock`` on ``folder/.lock``; Linux maps it to a record lock on NFS)
    for the block; raises :class:`FolderInUseError` at once if anyone else holds it."""
    return _locked(
        Path(folder) / LOCK,
        lambda who: (
            f"{folder} is being trained by {who}: two trainers must not share a run folder "
            "(stop the other one, or wait for it)"
        ),
        _me(),
    )


def command_lock(run: Path, command: str) -> contextlib.AbstractContextManager[None]:
    """Hold the lock of a command on ``run`` (:func:`command_lock_path`) for the block: a second command on
    the same run is refused before it starts anything. ``command`` (its command line) is written into the
    lock for that refusal to name."""
    return _locked(
        command_lock_path(run),
        lambda who: f"{run} is in use by another command, {who}: wait for it to end, or stop it",
        f"{_me()} ({command})",
    )


def lock_holder(path: Path) -> str | None:
    """Who holds the lock file ``path`` (its text), or None when nobody does (or it does not exist).

    Probes with a shared lock taken and released at once: it never waits, and a holder's exclusive lock
    makes it fail (a trainer or command starting in that instant is refused, as with any other holder)."""
    if not Path(path).exists():
        return None
    with Path(path).open() as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _holder_text(handle)
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def save_torch(path: Path, obj: Any) -> None:
    """``torch.save`` atomically."""
    _atomic(path, lambda handle: torch.save(obj, handle))
