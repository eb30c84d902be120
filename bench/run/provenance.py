"""What a run records about where and with what it ran: versions, git commit, host, device."""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import subprocess
from pathlib import Path

import torch

PACKAGES = ("torch", "numpy", "mujoco", "gymnasium", "metaworld", "dowel", "scipy", "pandas", "ray")
REPO = Path(__file__).resolve().parents[2]


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_state() -> dict[str, object]:
    """Commit and dirty flag of the checkout this package runs from (``unknown`` outside git)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info(device: str) -> dict[str, object]:
    info: dict[str, object] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    info["compiled"] = compiled_code()
    return info


def compiled_code() -> dict[str, bool]:
    """Which compiled pieces this process runs (each falls back to Python/torch, the same numbers up to
    rounding, where it cannot be built or ``MAML_BENCH_NATIVE=0``)."""
    from maml.envs import native_step  # imports mujoco: only when a run starts
    from maml.native import mlp_kernels

    return {"stepping_loop": native_step.load() is not None, "mlp_kernels": mlp_kernels.load() is not None}
