"""Where a fast Meta-World step's time goes: MuJoCo's calls against the Python around them (issue 16).

``python -m bench.step_breakdown [ml10|ml1_push|ml45] [tasks]`` builds one environment per train task (the
pool's fast paths, :func:`maml.envs.metaworld_fast.install_fast_paths` with contacts, but with the step's
MuJoCo calls made from Python (``native=False``: the C step makes the same calls, out of reach of a Python
clock), resets them and steps them in lockstep, as a pool worker does, with uniform random actions for
:data:`HORIZON` steps, three rounds. It prints per step: the whole step, ``mj_step`` (the frame skip's
substeps), ``mj_forward``, the rest (Python), and the physics bound's ``mj_step`` of the same tasks (from the
reset state, no action, one task at a time, as ``bench/benchmarks/test_metaworld_speed.py`` counts it); and
the reset per episode. Times are the process's CPU time (``time.process_time``), so that other processes on
a loaded machine do not count (their cache and core sharing still do). results/bench/README.md has a run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import mujoco
import numpy as np

from maml.envs import metaworld_fast
from maml.envs.metaworld_pool import make_env
from maml.envs.metaworld_tasks import load_task_set, sample_train_tasks

HORIZON = 150
ROUNDS = 3
TIMED = ("mj_step", "mj_forward")


def _timed(name: str, seconds: dict[str, float]) -> Callable[..., Any]:
    call = getattr(mujoco, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return call(*args, **kwargs)
        finally:
            seconds[name] += time.process_time() - start

    return timed


def breakdown(task_set: str = "ml10", num_tasks: int = 20, seed: int = 0) -> list[dict[str, float]]:
    """One row per round: ms per step (``step``, ``mj_step``, ``forward``, ``python``, ``bound``) and ms
    per ``reset``."""
    tasks = sample_train_tasks(load_task_set(task_set), np.random.default_rng(seed), num_tasks)
    envs = [make_env(task.task) for task in tasks]
    for env in envs:
        metaworld_fast.install_fast_paths(env, contacts=True, native=False)
    seconds = dict.fromkeys(TIMED, 0.0)
    # the fast step calls mujoco.<name> through the module attribute: time those calls, nothing else
    shim = type("TimedMujoco", (), {name: staticmethod(_timed(name, seconds)) for name in TIMED})
    for name in dir(mujoco):
        if not name.startswith("_") and name not in TIMED:
            setattr(shim, name, getattr(mujoco, name))
    rows = []
    steps = len(envs) * HORIZON
    for round_ in range(ROUNDS):
        rng = np.random.default_rng(round_)
        start = time.process_time()
        for env, task in zip(envs, tasks, strict=True):
            env.set_task(task.task)
            env.reset(seed=seed)
        reset = time.process_time() - start
        seconds.update(dict.fromkeys(TIMED, 0.0))
        metaworld_fast.mujoco = shim  # type: ignore[assignment]
        try:
            start = time.process_time()
            for _ in range(HORIZON):
                for env in envs:
                    env.step(rng.uniform(-1.0, 1.0, 4))
            step = time.process_time() - start
        finally:
            metaworld_fast.mujoco = mujoco
        bound = 0.0
        for env, task in zip(envs, tasks, strict=True):
            env.set_task(task.task)
            env.reset(seed=seed)
            start = time.process_time()
            for _ in range(HORIZON):
                mujoco.mj_step(env.model, env.data, nstep=env.frame_skip)
            bound += time.process_time() - start
        physics = seconds["mj_step"]
        rest = seconds["mj_forward"]
        rows.append(
            {
                "step": step / steps * 1e3,
                "mj_step": physics / steps * 1e3,
                "forward": rest / steps * 1e3,
                "python": (step - physics - rest) / steps * 1e3,
                "bound": bound / steps * 1e3,
                "reset": reset / len(envs) * 1e3,
            }
        )
    for env in envs:
        env.close()
    return rows


def main(argv: list[str]) -> None:
    task_set = argv[0] if argv else "ml10"
    num_tasks = int(argv[1]) if len(argv) > 1 else 20
    for row in breakdown(task_set, num_tasks):
        print(
            f"step {row['step']:.4f} ms: mj_step {row['mj_step']:.4f}, mj_forward {row['forward']:.4f}, "
            f"python {row['python']:.4f} | bound's mj_step {row['bound']:.4f} | reset {row['reset']:.2f} ms"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
