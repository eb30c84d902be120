"""Meta-World ML1-push, ML10 and ML45 tasks: the benchmarks (cached on disk), seeded train-task samplers and
test-task pickers, with garage's meta-batch semantics (shared/docs/garage-maml.md, "Meta-World").

A Meta-World *benchmark* holds train and test *classes* (environment types, e.g. ``push-v3``) and 50 *tasks*
(goals) per class and split. :class:`MetaWorldTask` is one of them: a picklable record of its class name,
split, goal index and Meta-World's ``Task`` (what ``env.set_task`` takes).

- ``ml1_push``: ``metaworld.ML1("push-v3")``: one class, 50 train and 50 other test goals.
- ``ml10``: ``metaworld.ML10()``: 10 train classes, 5 test classes.
- ``ml45``: ``metaworld.ML45()``: 45 train classes, 5 test classes.

A meta-batch of ``n`` train tasks holds ``n / C`` goals of each of the ``C`` train classes (garage's
``MetaWorldTaskSampler``): ML1 ``n`` goals of push, ML10 ``n / 10`` per class, ML45 ``n / 45``; ``n`` must
be a multiple of ``C``. Goals are drawn without replacement within a meta-batch from a generator the caller
seeds per epoch (garage instead cycles through a shuffled order across epochs; a per-epoch generator keeps a
resumed run identical to an uninterrupted one).

Building ML45 takes about a minute (ML10 15–20 s, ML1 2–3 s), so :func:`load_benchmark` pickles the benchmark
object into a cache folder keyed by Meta-World's version, the benchmark and its seed: ``$MAML_BENCH_CACHE``,
else ``$XDG_CACHE_HOME/maml-bench``, else ``~/.cache/maml-bench``. The cache is written atomically; a missing
one is built, a corrupt one rebuilt with a warning. (The cache is a pickle: it is trusted like the code.)
"""

from __future__ import annotations

import importlib.metadata
import os
import pickle
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

import metaworld
import numpy as np

from maml.cache import cache_dir

BENCHMARKS: Mapping[str, Callable[[int], metaworld.Benchmark]] = MappingProxyType(
    {
        "ml1_push": lambda seed: metaworld.ML1("push-v3", seed=seed),
        "ml10": lambda seed: metaworld.ML10(seed=seed),
        "ml45": lambda seed: metaworld.ML45(seed=seed),
    }
)
"""Our benchmark names → a builder taking Meta-World's seed."""
BENCHMARK_SEED = 0
"""Meta-World's seed for the goals of every benchmark: the goals are fixed, the run seed picks among them."""
SPLITS = ("train", "test")

T = TypeVar("T")


@dataclass(frozen=True)
class MetaWorldTask:
    """One Meta-World task (a goal of one class); picklable, cheap to send to a worker process."""

    class_name: str
    """Meta-World's environment name, e.g. ``"push-v3"``."""
    split: str
    """``"train"`` or ``"test"``."""
    goal: int
    """Index of the task among its class's tasks in that split of the benchmark (0 … 49)."""
    task: metaworld.Task
    """What ``env.set_task`` takes (its ``data`` also names the environment class)."""

    def describe(self) -> str:
        """``"push-v3 test goal 7"``: how errors name the task."""
        return f"{self.class_name} {self.split} goal {self.goal}"


@dataclass(frozen=True)
class TaskSet:
    """The classes and tasks of one benchmark, grouped by class in the benchmark's class order."""

    name: str
    """One of :data:`BENCHMARKS`."""
    train: Mapping[str, tuple[MetaWorldTask, ...]]
    """Train class name → its train tasks."""
    test: Mapping[str, tuple[MetaWorldTask, ...]]
    """Test class name → its test tasks (ML1: the same class as train, other goals)."""

    @property
    def train_classes(self) -> tuple[str, ...]:
        return tuple(self.train)

    @property
    def test_classes(self) -> tuple[str, ...]:
        return tuple(self.test)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Train then test class names, each once (ML1: ``("push-v3",)``)."""
        return tuple(dict.fromkeys((*self.train, *self.test)))

    @property
    def num_test_tasks(self) -> int:
        return sum(len(tasks) for tasks in self.test.values())


def cache_path(name: str, seed: int, directory: Path | None = None) -> Path:
    """Where the benchmark ``name`` built with ``seed`` is cached (keyed by Meta-World's version too)."""
    version = importlib.metadata.version("metaworld")
    return (directory or cache_dir()) / f"metaworld-{version}" / f"{name}-seed{seed}.pkl"


def cached(path: Path, build: Callable[[], T], check: Callable[[object], bool], what: str) -> T:
    """The object pickled at ``path`` if it is there and passes ``check``; else ``build()``, stored there.

    A file that cannot be unpickled or fails ``check`` is rebuilt with a warning naming it. The new file is
    written to a temporary file in the same folder and renamed, so readers never see a partial file (two runs
    building at once both succeed). An unwritable cache folder only costs a warning.
    """
    try:
        with path.open("rb") as handle:
            value = pickle.load(handle)
    except FileNotFoundError:
        pass
    except Exception as error:  # a truncated or foreign file: any unpickling error
        warnings.warn(
            f"cached {what} at {path} is corrupt ({type(error).__name__}: {error}); rebuilding it",
            stacklevel=2,
        )
    else:
        if check(value):
            return value
        warnings.warn(
            f"cached {what} at {path} holds a {type(value).__name__}, not the expected object; rebuilding it",
            stacklevel=2,
        )
    value = build()
    try:
        write_atomically(path, value)
    except OSError as error:
        warnings.warn(f"cannot cache {what} at {path}: {error}", stacklevel=2)
    return value


def write_atomically(path: Path, value: object) -> None:
    """Pickle ``value`` to a temporary file beside ``path``, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        temporary = Path(handle.name)
        try:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:
            handle.close()
            temporary.unlink(missing_ok=True)
            raise
    try:
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def load_benchmark(
    name: str, seed: int = BENCHMARK_SEED, directory: Path | None = None
) -> metaworld.Benchmark:
    """Meta-World's benchmark object for ``name`` (:data:`BENCHMARKS`), from the cache or built and cached."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown Meta-World benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
    return cached(
        cache_path(name, seed, directory),
        lambda: BENCHMARKS[name](seed),
        lambda value: isinstance(value, metaworld.Benchmark),
        f"Meta-World benchmark {name} (seed {seed})",
    )


def task_set(name: str, benchmark: metaworld.Benchmark) -> TaskSet:
    """Group a benchmark's tasks by class; each class keeps Meta-World's task order (goal index)."""

    def group(split: str, classes: Sequence[str], tasks: Sequence[metaworld.Task]):
        grouped: dict[str, list[MetaWorldTask]] = {c: [] for c in classes}
        for task in tasks:
            if task.env_name not in grouped:
                raise ValueError(
                    f"{name}: {split} task of class {task.env_name!r} outside the {split} classes"
                )
            goals = grouped[task.env_name]
            goals.append(MetaWorldTask(task.env_name, split, len(goals), task))
        empty = [c for c, goals in grouped.items() if not goals]
        if empty:
            raise ValueError(f"{name}: {split} classes {empty} have no tasks")
        return MappingProxyType({c: tuple(goals) for c, goals in grouped.items()})

    return TaskSet(
        name=name,
        train=group("train", list(benchmark.train_classes), benchmark.train_tasks),
        test=group("test", list(benchmark.test_classes), benchmark.test_tasks),
    )


def load_task_set(name: str, seed: int = BENCHMARK_SEED, directory: Path | None = None) -> TaskSet:
    """:func:`task_set` of :func:`load_benchmark`."""
    return task_set(name, load_benchmark(name, seed, directory))


def check_meta_batch_size(tasks: TaskSet, meta_batch_size: int) -> int:
    """Goals per train class in a meta-batch of ``meta_batch_size`` tasks; raises if it does not fit."""
    num_classes = len(tasks.train)
    if meta_batch_size < 1 or meta_batch_size % num_classes:
        raise ValueError(
            f"{tasks.name} has {num_classes} train classes: meta_batch_size must be a positive multiple of "
            f"{num_classes} (each meta-batch holds meta_batch_size/{num_classes} goals of every class), "
            f"got {meta_batch_size}"
        )
    return meta_batch_size // num_classes


def _draw(rng: np.random.Generator, goals: tuple[MetaWorldTask, ...], count: int) -> list[MetaWorldTask]:
    """``count`` of ``goals``, without replacement while they last (then from a fresh permutation)."""
    if count == 0:
        return []
    order = np.concatenate([rng.permutation(len(goals)) for _ in range(-(-count // len(goals)))])
    return [goals[i] for i in order[:count]]


def sample_train_tasks(tasks: TaskSet, rng: np.random.Generator, meta_batch_size: int) -> list[MetaWorldTask]:
    """A meta-batch: ``meta_batch_size / C`` goals of each of the ``C`` train classes, class by class."""
    per_class = check_meta_batch_size(tasks, meta_batch_size)
    return [task for goals in tasks.train.values() for task in _draw(rng, goals, per_class)]


def pick_test_tasks(tasks: TaskSet, rng: np.random.Generator, num_tasks: int) -> list[MetaWorldTask]:
    """``min(num_tasks, all)`` distinct test tasks spread evenly over the test classes, class by class.

    Each class gets ``⌊n / C⌋`` goals and ``n mod C`` classes (drawn) one more, so that with ``n`` a multiple
    of ``C`` the mean over tasks equals Meta-World's mean over per-class success rates.
    """
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be at least 1, got {num_tasks}")
    num_tasks = min(num_tasks, tasks.num_test_tasks)
    classes = list(tasks.test)
    counts = dict.fromkeys(classes, 0)
    remaining = num_tasks
    while remaining:  # fill classes evenly; a class with fewer goals than its share passes the rest on
        open_classes = [c for c in classes if counts[c] < len(tasks.test[c])]
        share, extra = divmod(remaining, len(open_classes))
        lucky = set(rng.choice(len(open_classes), size=extra, replace=False).tolist()) if extra else set()
        for i, name in enumerate(open_classes):
            take = min(share + (i in lucky), len(tasks.test[name]) - counts[name])
            counts[name] += take
            remaining -= take
    return [task for name in classes for task in _draw(rng, tasks.test[name], counts[name])]
