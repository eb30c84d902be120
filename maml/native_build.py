"""Compile a C source of maml-bench into a shared library in the user cache, once, and load it with ctypes.

Both compiled pieces (the MuJoCo stepping loop, :mod:`maml.envs.native_step`; the fused MLP kernels,
:mod:`maml.native.mlp_kernels`) are built on first use with the system C compiler (``$CC``, else ``cc`` or
``gcc``) into ``<cache>/native/`` (:mod:`maml.cache`), under a name keyed by everything that changes the
binary: the sources, the compiler command and whatever the caller adds (a library version, the CPU). The
library is written atomically: a half-built file is never loaded, and a damaged one is built again.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from maml.cache import cache_dir

SWITCH_ENV_VAR = "MAML_BENCH_NATIVE"
"""Set to ``0`` to run without compiled code: the Python stepping loop and the torch passes."""

T = TypeVar("T")


def compiler() -> str:
    """The C compiler: ``$CC``, else ``cc`` or ``gcc`` on the path."""
    found = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if found is None:
        raise OSError("no C compiler found ($CC, cc or gcc)")
    return found


def library_path(stem: str, sources: Sequence[Path], flags: Sequence[str], key: str = "") -> Path:
    """Where the library built from ``sources`` with ``flags`` lives in the cache."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.read_bytes())
    digest.update("|".join([*flags, key]).encode())
    return cache_dir() / "native" / f"{stem}-{digest.hexdigest()[:16]}.so"


def build(target: Path, source: Path, flags: Sequence[str], libraries: Sequence[str] = ()) -> None:
    """Compile ``source`` into the shared library ``target``, atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        built = Path(tmp) / target.name
        command = [compiler(), *flags, "-shared", "-fPIC", str(source), "-o", str(built), *libraries]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0:
            raise OSError(f"{' '.join(command)} failed:\n{result.stderr.strip()}")
        os.replace(built, target)


def build_and_load(
    target: Path, source: Path, flags: Sequence[str], libraries: Sequence[str] = ()
) -> ctypes.CDLL:
    """The library at ``target``, built first when missing, and built again once when it will not load."""
    if not target.is_file():
        build(target, source, flags, libraries)
    try:
        return ctypes.CDLL(str(target))
    except OSError:  # a damaged cache entry (e.g. written by a full disk): build it again, once
        build(target, source, flags, libraries)
        return ctypes.CDLL(str(target))


def load_or_warn(instead: str, load: Callable[[], T]) -> T | None:
    """``load()``, or ``None`` when compiled code is switched off (:data:`SWITCH_ENV_VAR`) or cannot be built
    or loaded; the latter warns once per caller (``instead`` says what runs in its place)."""
    if os.environ.get(SWITCH_ENV_VAR, "1") == "0":
        return None
    try:
        return load()
    except (OSError, subprocess.SubprocessError) as error:
        warnings.warn(f"maml-bench: {instead}: {error}", RuntimeWarning, stacklevel=3)
        return None
