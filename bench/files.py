"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
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


@contextlib.contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock (``flock`` on ``folder/.lock``; Linux maps it to a record lock on NFS) for the
    block; raises :class:`FolderInUseError` at once if anyone else holds it (another process, or another
    open of the same file in this one). The kernel releases the lock when its holder dies, however it dies,
    so a stale lock cannot block a resume."""
    path = Path(folder) / ".lock"
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise FolderInUseError(
                f"{folder} is being trained by {holder}: two trainers must not share a run folder "
                "(stop the other one, or wait for it)"
            ) from error
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def save_torch(path: Path, obj: Any) -> None:
    """``torch.save`` atomically."""
    _atomic(path, lambda handle: torch.save(obj, handle))
