"""Task families: where an experiment's tasks come from and which batched environment runs them.

A family gives train tasks per epoch, a fixed set of held-out test tasks, the class name of each task (for
per-class logging, keyed by name) and batched environments: :class:`maml.sampler.BatchedEnv` (HalfCheetahDir,
sampled by :func:`maml.sampler.sample_episodes`) or :class:`maml.wave_sampler.WaveEnv` (Meta-World's worker
pool, sampled by :func:`maml.wave_sampler.sample_in_waves`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from bench.run.experiments import ConfigError, ExperimentConfig
from maml.envs.half_cheetah_dir import HalfCheetahDirBatch, HalfCheetahDirConfig, sample_directions
from maml.sampler import BatchedEnv
from maml.wave_sampler import WaveEnv

if TYPE_CHECKING:  # Meta-World is imported when a Meta-World family is made (0.7 s)
    from maml.envs.metaworld_pool import MetaWorldPool
    from maml.envs.metaworld_tasks import MetaWorldTask, TaskSet
    from maml.envs.ray_pool import RayMetaWorldPool

METAWORLD_ENVS = ("ml1_push", "ml10", "ml45")
"""Experiment envs served by :class:`MetaWorldFamily` (:data:`maml.envs.metaworld_tasks.BENCHMARKS`)."""
SAMPLER_ACTORS: ContextVar[int] = ContextVar("sampler_actors", default=0)
"""Ray actors that sample the Meta-World families made in this context (0: the local worker pool); set with
:func:`sampler_actors` (the Ray executor's ``--sampler-actors``). Not a config field: the episodes are the
same bits either way, so a run may resume on the other sampler."""


@contextlib.contextmanager
def sampler_actors(count: int) -> Iterator[None]:
    """Meta-World families made inside the block sample on ``count`` Ray actors (0: the local pool)."""
    if count < 0:
        raise ValueError(f"sampler actors must be at least 0, got {count}")
    token = SAMPLER_ACTORS.set(count)
    try:
        yield
    finally:
        SAMPLER_ACTORS.reset(token)


class TaskFamily(Protocol):
    observation_dim: int
    action_dim: int
    has_success: bool
    """Whether episodes report ``info["success"]`` (Meta-World)."""
    class_names: tuple[str, ...]
    """Every class a task can belong to, train and test (fixes the per-class log columns)."""

    def train_tasks(self, rng: np.random.Generator, num_tasks: int) -> list[Any]: ...

    def test_tasks(self, rng: np.random.Generator, num_tasks: int) -> list[Any]: ...

    def class_of(self, task: Any) -> str: ...

    def make_env(self, num_envs: int, num_threads: int) -> BatchedEnv[Any] | WaveEnv[Any]: ...

    def sampler(self, num_threads: int) -> dict[str, object]:
        """How :meth:`make_env` 's environments will sample with ``num_threads`` (the run's manifest
        records it: the episodes do not depend on it, the speed does)."""
        ...

    def close(self) -> None: ...


class HalfCheetahDirFamily:
    """Directions ±1, each with probability ½, for training and testing alike (garage's task sampler)."""

    observation_dim = 20
    action_dim = 6
    has_success = False
    class_names = ("forward", "backward")

    def __init__(self, action_scale: float) -> None:
        self._env_config = HalfCheetahDirConfig(action_scale=action_scale)
        self._envs: list[HalfCheetahDirBatch] = []

    def train_tasks(self, rng: np.random.Generator, num_tasks: int) -> list[float]:
        return [float(d) for d in sample_directions(rng, num_tasks)]

    def test_tasks(self, rng: np.random.Generator, num_tasks: int) -> list[float]:
        return self.train_tasks(rng, num_tasks)

    def class_of(self, task: float) -> str:
        return "forward" if task > 0 else "backward"

    def make_env(self, num_envs: int, num_threads: int) -> HalfCheetahDirBatch:
        env = HalfCheetahDirBatch(num_envs, self._env_config, num_threads=num_threads)
        self._envs.append(env)
        return env

    def sampler(self, num_threads: int) -> dict[str, object]:
        return {"kind": "batched MuJoCo (all episodes in lockstep)", "threads": num_threads}

    def close(self) -> None:
        for env in self._envs:
            env.close()
        self._envs.clear()


class MetaWorldFamily:
    """Meta-World ML1-push, ML10 or ML45 (:mod:`maml.envs.metaworld_tasks`), run on a worker pool.

    Train tasks: ``n / C`` goals of each of the ``C`` train classes per meta-batch (garage's sampler; ``n``
    must be a multiple of ``C``). Test tasks: ``n`` of the benchmark's test tasks (50 for ML1, 250 for ML10
    and ML45), spread evenly over the test classes, capped at what exists.

    Meta-test has the shape of Meta-World's protocol (metaworld/evaluation.py), with garage's episode counts
    (10 adaptation episodes, 1 test episode; Meta-World's own evaluation runs 3): adapt on
    ``test_adaptation_episodes`` episodes with ``num_grad_updates`` steps, then run ``test_episodes``
    episodes; an episode succeeds if ``info["success"]`` is 1 at any step; success rates overall and per class
    by name. With the test tasks spread evenly the overall rate equals Meta-World's mean of per-class rates.
    garage meta-tests all 250 test tasks every epoch (its bug 6); our ``full`` profile evaluates every 10
    epochs (``evaluate_every_n_epochs`` and ``test_tasks`` are config fields).

    :meth:`make_env` returns one :class:`~maml.envs.metaworld_pool.MetaWorldPool` shared by every caller
    (train and test sampling), with ``num_threads`` workers (worker 0 in this process, the others spawned);
    or, with ``sampler_actors`` > 0 (default: :data:`SAMPLER_ACTORS` when the family is made), a
    :class:`~maml.envs.ray_pool.RayMetaWorldPool` of that many Ray actors (Ray must be initialised: the Ray
    executor runs each run as a Ray task). :meth:`close` stops it.
    """

    observation_dim = 39
    action_dim = 4
    has_success = True

    def __init__(
        self,
        env: str,
        action_scale: float,
        benchmark_seed: int | None = None,
        sampler_actors: int | None = None,
    ) -> None:
        from maml.envs.metaworld_tasks import BENCHMARK_SEED, load_task_set

        if env not in METAWORLD_ENVS:
            raise ConfigError(f"{env!r} is not a Meta-World environment; valid: {', '.join(METAWORLD_ENVS)}")
        seed = BENCHMARK_SEED if benchmark_seed is None else benchmark_seed
        self.tasks: TaskSet = load_task_set(env, seed)
        self.class_names: tuple[str, ...] = self.tasks.class_names
        self.action_scale = action_scale
        self.sampler_actors = SAMPLER_ACTORS.get() if sampler_actors is None else sampler_actors
        self._pool: MetaWorldPool | RayMetaWorldPool | None = None

    def train_tasks(self, rng: np.random.Generator, num_tasks: int) -> list[MetaWorldTask]:
        from maml.envs.metaworld_tasks import sample_train_tasks

        return sample_train_tasks(self.tasks, rng, num_tasks)

    def test_tasks(self, rng: np.random.Generator, num_tasks: int) -> list[MetaWorldTask]:
        from maml.envs.metaworld_tasks import pick_test_tasks

        return pick_test_tasks(self.tasks, rng, num_tasks)

    def class_of(self, task: MetaWorldTask) -> str:
        return task.class_name

    def make_env(self, num_envs: int, num_threads: int) -> MetaWorldPool | RayMetaWorldPool:
        """The family's pool (started on the first call with ``num_threads`` workers, or
        ``sampler_actors`` Ray actors); ``num_envs`` is not needed: the wave sampler runs any number of
        episodes on it."""
        if self._pool is None or self._pool.closed:
            if self.sampler_actors:
                from maml.envs.ray_pool import RayMetaWorldPool

                self._pool = RayMetaWorldPool(self.sampler_actors, action_scale=self.action_scale)
            else:
                from maml.envs.metaworld_pool import MetaWorldPool

                self._pool = MetaWorldPool(num_threads, action_scale=self.action_scale)
        return self._pool

    def sampler(self, num_threads: int) -> dict[str, object]:
        from maml.envs.metaworld_pool import FAST_STEP

        if self.sampler_actors:
            where: dict[str, object] = {"kind": "Ray actors (wave sampler)", "actors": self.sampler_actors}
        else:
            where = {"kind": "local worker pool (wave sampler)", "workers": num_threads}
        return where | {"fast_step": FAST_STEP}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def make_family(config: ExperimentConfig) -> TaskFamily:
    """The task family of an experiment config."""
    if config.env == "half_cheetah_dir":
        return HalfCheetahDirFamily(config.action_scale)
    if config.env in METAWORLD_ENVS:
        from maml.envs.metaworld_tasks import check_meta_batch_size

        family = MetaWorldFamily(config.env, config.action_scale)
        try:
            check_meta_batch_size(family.tasks, config.meta_batch_size)
        except ValueError as error:
            raise ConfigError(str(error)) from error
        return family
    raise ConfigError(f"unknown environment {config.env!r}")


def class_mean(values: np.ndarray, classes: Sequence[str], name: str) -> float:
    """Mean of ``values [T, E]`` over the tasks of class ``name`` (NaN if none was sampled)."""
    rows = [i for i, c in enumerate(classes) if c == name]
    return float(values[rows].mean()) if rows else float("nan")
