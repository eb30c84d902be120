"""The user cache folder of maml-bench: built Meta-World benchmarks, the compiled MuJoCo stepping loop."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV_VAR = "MAML_BENCH_CACHE"
"""Environment variable naming the cache folder (overrides ``$XDG_CACHE_HOME/maml-bench``)."""


def cache_dir() -> Path:
    """``$MAML_BENCH_CACHE``, else ``$XDG_CACHE_HOME/maml-bench``, else ``~/.cache/maml-bench``."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "maml-bench"
