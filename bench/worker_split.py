"""Where one Meta-World sampling worker's time goes, with the policy on the worker (:mod:`maml.rollouts`).

One :class:`~maml.envs.metaworld_pool.MetaWorldPool` worker in this process samples a meta-batch of train
tasks (one episode each, ``HORIZON`` steps, garage's (100, 100) policy) with a clock around every
environment instance's ``step`` and around the policy calls; the best of ``ROUNDS`` rounds is printed as
microseconds per episode step: wall, ``env.step``, policy. The rest is the sampler's own work (the rollout
loop, the worker's step bookkeeping, the reset).

    python -m bench.worker_split ml10 20
    python -m bench.worker_split ml1_push 20
    python -m bench.worker_split ml45 45
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from maml import policy
from maml.envs.metaworld_pool import MetaWorldPool
from maml.envs.metaworld_tasks import load_task_set, sample_train_tasks
from maml.wave_sampler import sample_in_waves

HORIZON = 150
ROUNDS = 4


def split(task_set: str, num_tasks: int) -> dict[str, float]:
    """Microseconds per episode step of the best round: ``{"wall", "env", "policy"}``."""
    tasks = sample_train_tasks(load_task_set(task_set), np.random.default_rng(0), num_tasks)
    theta = policy.init_params(39, 4, (100, 100), torch.Generator().manual_seed(0))
    params = policy.broadcast(theta, num_tasks)
    clock = {"env": 0.0, "policy": 0.0}

    def timed(fn, name):
        def call(*args):
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                clock[name] += time.perf_counter() - start

        return call

    best: dict[str, float] | None = None
    with MetaWorldPool(1) as pool:  # worker 0 in this process: its instances can be wrapped
        kwargs = dict(episodes_per_task=1, seed=0, policy_on_workers=True)
        sample_in_waves(pool, params, tasks, max_episode_length=5, **kwargs)  # builds the instances
        assert pool._local is not None
        for env in (env for envs in pool._local.envs.values() for env in envs):
            env.step = timed(env.step, "env")
        mean_action = timed(policy.mean_action, "policy")
        for epoch in range(ROUNDS):
            clock.update(env=0.0, policy=0.0)
            start = time.perf_counter()
            sample_in_waves(
                pool,
                params,
                tasks,
                max_episode_length=HORIZON,
                epoch=epoch,
                mean_action_fn=mean_action,
                **kwargs,
            )
            round_ = {"wall": time.perf_counter() - start, **clock}
            if best is None or round_["wall"] < best["wall"]:
                best = round_
    assert best is not None
    return {name: 1e6 * seconds / (num_tasks * HORIZON) for name, seconds in best.items()}


def main(argv: list[str]) -> None:
    task_set, num_tasks = argv[0], int(argv[1])
    us = split(task_set, num_tasks)
    print(
        f"{task_set}, {num_tasks} tasks: wall {us['wall']:.1f} µs per episode step, env.step {us['env']:.1f} "
        f"({us['env'] / us['wall']:.0%}), policy {us['policy']:.1f}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
