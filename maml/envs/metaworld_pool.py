"""Meta-World environments in a pool of worker processes, stepped in lockstep by :mod:`maml.wave_sampler`.

A Meta-World step costs 0.5–1.7 ms, mostly Python (shared/docs/environment.md), so threads do not help:
sampling needs one process per core. Each worker holds, per Meta-World class it has run, as many environment
instances as the most episodes of that class it has run at once (~21 MB each; :mod:`maml.wave_sampler` runs
at most ``MAX_INSTANCES_PER_WORKER`` at once on a worker), each built the first time it is needed and switched
between goals with ``set_task``, never rebuilt per task; beyond :data:`KEEP_INSTANCES` instances a worker
drops idle ones, least recently run class first. The main process says which episodes run where
(:meth:`MetaWorldPool.reset`: episode ``i`` on worker ``workers[i]``; the ``k``-th episode of a class on a
worker runs on that worker's ``k``-th instance of the class) and either sends every worker the actions of
its episodes at each step (:meth:`MetaWorldPool.step`) or, the sampler's default, sends each worker once
per wave its episodes' policy rows and action noise, and the worker runs the episodes calling the policy
itself (:meth:`MetaWorldPool.rollout`, :mod:`maml.rollouts`; workers then import torch and run its
policy on ``policy_threads`` threads): one message each way per wave instead of per step, and no worker
waits while the main process calls the policy.

Each episode, on its worker: ``env.set_task(task)``, then ``env.seed(s)`` and ``env.reset(seed=s)`` with
``s`` drawn from the episode's ``SeedSequence``. (Meta-World 3.1.1's ``reset`` drops its ``seed`` argument
and documents ``seed()`` instead; once a task is set, no v3 environment draws anything at reset, so an
episode is a function of its task and actions. Seeding both ways keeps reset randomness derived from the
episode should an environment ever draw some.) The environment receives ``clip(a / action_scale, −1, 1)``
for policy action ``a`` (``action_scale`` 10 is garage's ML45 normalisation, 1 leaves actions as they are);
the episode runs as long as the sampler says, at most Meta-World's ``max_path_length`` (500), whose
``truncated`` flag is ignored.

Speed-up, on by default (``fast_step``): each environment instance gets the bit-identical fast paths of
:mod:`maml.envs.metaworld_fast` (:func:`~maml.envs.metaworld_fast.install_fast_paths`, contact test included;
on the instances only, the classes are left alone): ~1.9× fewer milliseconds per step over the 50 v3 classes.
``fast_step=False`` runs stock Meta-World.

Workers are spawned (not forked: the main process holds torch's thread pools) and ignore SIGINT: Ctrl-C
reaches the main process, whose ``close`` (or the ``with`` block's exit) stops them. A worker whose parent
dies sees its pipe close and exits. An exception in a worker or a worker's death (e.g. killed) raises
:class:`WorkerError` naming the worker and the Meta-World class and task it was running, and closes the
pool.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import pickle
import signal
import time
import traceback
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import MappingProxyType
from typing import Any

import numpy as np
from metaworld.sawyer_xyz_env import SawyerXYZEnv
from numpy.typing import ArrayLike, NDArray

from maml.envs.errors import NonFiniteActionError
from maml.envs.metaworld_fast import install_fast_paths
from maml.envs.metaworld_tasks import MetaWorldTask
from maml.rollouts import Rollout, WavePolicy, gather_rollouts

OBS_DIM = 39
"""Meta-World's observation: hand, gripper and objects now (18) and one step earlier (18), goal (3, zeroed in
the ML benchmarks)."""
ACT_DIM = 4
"""Hand displacement (3) and gripper effort (1), each in [−1, 1] at the environment."""
MAX_EPISODE_LENGTH = SawyerXYZEnv.max_path_length
"""The longest episode a Meta-World environment allows (500 in 3.1.1)."""
START_TIMEOUT_S = 300.0
"""How long a worker may take to start (import Meta-World) on a loaded machine."""
CLOSE_TIMEOUT_S = 5.0
"""How long ``close`` waits for workers to exit before terminating them."""
STEP_COST_MS: Mapping[str, float] = MappingProxyType(
    {
        "assembly-v3": 0.146,
        "basketball-v3": 0.111,
        "bin-picking-v3": 0.123,
        "box-close-v3": 0.169,
        "button-press-topdown-v3": 0.092,
        "button-press-topdown-wall-v3": 0.094,
        "button-press-v3": 0.094,
        "button-press-wall-v3": 0.095,
        "coffee-button-v3": 0.112,
        "coffee-pull-v3": 0.131,
        "coffee-push-v3": 0.13,
        "dial-turn-v3": 0.111,
        "disassemble-v3": 0.139,
        "door-close-v3": 0.107,
        "door-lock-v3": 0.1,
        "door-open-v3": 0.112,
        "door-unlock-v3": 0.117,
        "drawer-close-v3": 0.108,
        "drawer-open-v3": 0.099,
        "faucet-close-v3": 0.103,
        "faucet-open-v3": 0.105,
        "hammer-v3": 0.138,
        "hand-insert-v3": 0.114,
        "handle-press-side-v3": 0.09,
        "handle-press-v3": 0.096,
        "handle-pull-side-v3": 0.097,
        "handle-pull-v3": 0.095,
        "lever-pull-v3": 0.102,
        "peg-insert-side-v3": 0.121,
        "peg-unplug-side-v3": 0.138,
        "pick-out-of-hole-v3": 0.118,
        "pick-place-v3": 0.135,
        "pick-place-wall-v3": 0.131,
        "plate-slide-back-side-v3": 0.1,
        "plate-slide-back-v3": 0.101,
        "plate-slide-side-v3": 0.097,
        "plate-slide-v3": 0.098,
        "push-back-v3": 0.148,
        "push-v3": 0.115,
        "push-wall-v3": 0.13,
        "reach-v3": 0.096,
        "reach-wall-v3": 0.1,
        "shelf-place-v3": 0.124,
        "soccer-v3": 0.146,
        "stick-pull-v3": 0.163,
        "stick-push-v3": 0.177,
        "sweep-into-v3": 0.157,
        "sweep-v3": 0.147,
        "window-close-v3": 0.112,
        "window-open-v3": 0.099,
    }
)
"""Milliseconds per step of each v3 class as the pool runs it by default, with the fast paths of
:mod:`maml.envs.metaworld_fast` (column C of ``python -m maml.envs.metaworld_fast``: goal 0, 200 uniform
random actions in [−1, 1] after a reset, best of 5; run 2026-12-03 15:50 UTC on the 2-core Xeon with nothing
else running: mean 0.118 ms, against 0.258 ms for stock Meta-World, whose per-class costs differ by other
ratios).
The balance of work between workers uses them (a stock pool too: balance changes speed, never episodes), and
:mod:`bench.scaling` 's time model."""
FAST_STEP = True
"""Workers install :func:`maml.envs.metaworld_fast.install_fast_paths` (contacts included) by default: the
stock observations, rewards and ``info`` to the bit (tests/test_metaworld_fast.py: whole episodes of all 50
v3 classes, scripted and random actions; tests/test_metaworld.py replays pool episodes in stock
environments)."""


KEEP_INSTANCES = 48
"""Environment instances a worker keeps between waves (as many as :data:`maml.wave_sampler.
MAX_INSTANCES_PER_WORKER`, so ~1.1 GB: ~21 MB per push-v3 instance added to a worker, measured as its RSS,
1 → 48 instances 334 → 1368 MB). Beyond it the worker drops instances that the current wave does not run,
those of the least recently run class first (a wave that needs more keeps them all)."""


START_HINT = (
    "Workers are spawned processes that import the main module again: a script that makes a pool must make "
    'it under `if __name__ == "__main__":` (a worker\'s own traceback, if it printed one, is on stderr).'
)
"""Added to the error of a worker that dies before it has started."""


class WorkerError(RuntimeError):
    """A worker raised an exception or died; the message names the worker and the tasks it was running."""


def default_num_workers() -> int:
    """One worker per core this process may run on."""
    return len(os.sched_getaffinity(0))


def reset_seed(seed: np.random.SeedSequence) -> int:
    """The integer seed of an episode's reset (``env.seed``/``reset(seed=...)`` take non-negative ints)."""
    return int(seed.generate_state(1, np.uint64)[0])


def env_controls(actions: ArrayLike, action_scale: float) -> NDArray[np.float64]:
    """Policy actions ``[..., 4]`` → what the environment receives, ``clip(a / action_scale, −1, 1)``."""
    return np.clip(np.asarray(actions, dtype=np.float64) / action_scale, -1.0, 1.0)


def make_env(task: Any) -> SawyerXYZEnv:
    """A fresh environment of a Meta-World ``Task``'s class (the class its data names), task not yet set."""
    return pickle.loads(task.data)["env_cls"]()


class _Runner:
    """A worker's environments: instances of each class, built on first use, reused across tasks."""

    def __init__(self, action_scale: float, fast: bool, keep: int = KEEP_INSTANCES) -> None:
        self.action_scale = action_scale
        self.fast = fast
        self.keep = keep
        self.envs: dict[str, list[SawyerXYZEnv]] = {}
        self.last_run: dict[str, int] = {}
        """The reset that last ran each class (idle instances of the least recent go first)."""
        self.resets = 0
        self.running: list[SawyerXYZEnv] = []
        self.current = -1
        """Index of the episode being reset or stepped (names the task when it fails)."""

    def env(self, task: Any, index: int) -> SawyerXYZEnv:
        """Instance ``index`` of the task's class (built, with any before it, if the worker lacks it)."""
        envs = self.envs.setdefault(task.env_name, [])
        while len(envs) <= index:
            env = make_env(task)
            if self.fast:  # this instance only: other Meta-World environments of the process keep their code
                install_fast_paths(env, contacts=True)
            envs.append(env)
        return envs[index]

    def reset(self, payload: Sequence[tuple[Any, int]]) -> NDArray[np.float64]:
        """``[(Task, seed), …]`` → observations ``[k, 39]``; these episodes are then the running ones, each
        on its own instance (the ``j``-th episode of a class on the class's ``j``-th instance)."""
        self.running = []
        reply = np.empty((len(payload), OBS_DIM))
        seen: Counter[str] = Counter()
        for i, (task, seed) in enumerate(payload):
            self.current = i
            env = self.env(task, seen[task.env_name])
            seen[task.env_name] += 1
            env.set_task(task)
            env.seed(seed)
            reply[i], _ = env.reset(seed=seed)
            self.running.append(env)
        self.resets += 1
        self.last_run.update(dict.fromkeys(seen, self.resets))
        self.drop_idle(seen)
        return reply

    def drop_idle(self, running: Counter[str]) -> None:
        """Close instances not running (``running``: instances in use per class, the first of each class's
        list) until the worker holds at most ``keep``, least recently run class first."""
        excess = sum(map(len, self.envs.values())) - self.keep
        dropped = False
        for name in sorted(self.envs, key=lambda n: self.last_run.get(n, 0)):
            if excess <= 0:
                break
            envs = self.envs[name]
            drop = min(excess, len(envs) - running[name])
            if drop > 0:
                closing = envs[-drop:]
                del envs[-drop:]
                while closing:  # no name left bound to a closed instance: the collection below frees them all
                    closing.pop().close()
                excess -= drop
                dropped = True
        if dropped:
            gc.collect()  # an instance is a reference cycle (its fast contact test is bound to it, and more)

    def step(self, actions: NDArray[np.floating]) -> NDArray[np.float64]:
        """Policy actions ``[k, 4]`` → ``[k, 41]``: each running episode's observation, reward and success."""
        controls = env_controls(actions, self.action_scale)
        reply = np.empty((len(self.running), OBS_DIM + 2))
        for i, env in enumerate(self.running):
            self.current = i
            obs, reward, _, _, info = env.step(controls[i])
            reply[i, :OBS_DIM] = obs
            reply[i, OBS_DIM] = reward
            reply[i, OBS_DIM + 1] = info["success"]
        return reply

    def rollout(self, payload: tuple[Sequence[tuple[Any, int]], WavePolicy]) -> Rollout:
        """``([(Task, seed), …], wave_policy)`` → the episodes run for ``H`` steps with the policy on this
        worker (:meth:`reset`, then :meth:`step` driven by :meth:`maml.rollouts.WavePolicy.run`)."""
        episodes, wave_policy = payload
        obs = self.reset(episodes)
        return wave_policy.run(obs, self.checked_step, INFO_NAMES, OBS_DIM)

    def checked_step(self, actions: NDArray[np.floating]):
        """:meth:`step` of actions checked as the pool checks them → ``(obs, rewards, {"success": …})``."""
        return step_result(self.step(wave_actions(actions, len(self.running))))

    def handle(self, command: str, payload: Any) -> NDArray[np.float64] | Rollout:
        self.current = -1
        if command == "reset":
            return self.reset(payload)
        if command == "step":
            return self.step(payload)
        if command == "rollout":
            return self.rollout(payload)
        raise ValueError(f"unknown command {command!r}")


def _worker_main(conn: Connection, action_scale: float, fast: bool) -> None:
    """A worker process's loop: run :class:`_Runner` commands as the main process asks.

    Messages: ``("reset", [(Task, seed), …])`` → observations ``[k, 39]``; ``("step", actions [k, 4])`` →
    ``[k, 41]`` (observation, reward, success) for the episodes of the last reset, in order;
    ``("rollout", ([(Task, seed), …], WavePolicy))`` → a :class:`~maml.rollouts.Rollout` of those episodes;
    ``("close", None)``. Replies are ``("ok", value)``, ``("nonfinite", episode index)`` (the policy's
    actions held NaN or inf: nothing was stepped with them) or ``("error", episode index or −1, traceback)``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runner = _Runner(action_scale, fast)
    conn.send(("ok", os.getpid()))
    while True:
        try:
            command, payload = conn.recv()
        except (EOFError, OSError):  # the main process is gone
            return
        if command == "close":
            return
        try:
            reply = runner.handle(command, payload)
        except NonFiniteActionError:
            conn.send(("nonfinite", runner.current))
        except Exception:
            conn.send(("error", runner.current, traceback.format_exc()))
        else:
            conn.send(("ok", reply))


@dataclass(frozen=True)
class _Worker:
    index: int
    process: multiprocessing.process.BaseProcess
    conn: Connection


def wave_rows(workers: Sequence[int], num_tasks: int, num_seeds: int, num_workers: int) -> list[list[int]]:
    """The episodes of a reset each worker runs, ``rows[w]`` (indices into the call's tasks), checked: one
    worker and one seed per task, every worker in range. Both pools (local and Ray) lay waves out so."""
    if len(workers) != num_tasks or num_seeds != num_tasks:
        raise ValueError(
            f"need one worker and one seed per task ({num_tasks}), got {len(workers)}, {num_seeds}"
        )
    rows: list[list[int]] = [[] for _ in range(num_workers)]
    for i, worker in enumerate(workers):
        if not 0 <= worker < num_workers:
            raise ValueError(f"worker {worker} out of range: the pool has {num_workers} workers")
        rows[worker].append(i)
    return rows


def rollout_rows(
    workers: Sequence[int],
    tasks: Sequence[Any],
    seeds: Sequence[Any],
    wave_policy: WavePolicy,
    num_workers: int,
) -> list[list[int]]:
    """:func:`wave_rows` of a rollout, checked: the policy covers every episode of the wave."""
    if len(wave_policy) != len(tasks):
        raise ValueError(f"wave_policy covers {len(wave_policy)} episodes, the wave has {len(tasks)}")
    return wave_rows(workers, len(tasks), len(seeds), num_workers)


def count_rollout(
    episodes: Counter[str], env_steps: Counter[str], tasks: Sequence[MetaWorldTask], wave_policy: WavePolicy
) -> None:
    """Add a rollout's episodes and environment steps to a pool's per-class counters."""
    per_class = Counter(task.class_name for task in tasks)
    episodes.update(per_class)
    horizon = wave_policy.noise.shape[1]
    env_steps.update({name: n * horizon for name, n in per_class.items()})


def wave_actions(actions: ArrayLike, num_running: int) -> NDArray[np.floating]:
    """A step's policy actions as an array ``[num_running, 4]``, checked for shape and finiteness."""
    actions = np.asarray(actions)
    if actions.shape != (num_running, ACT_DIM):
        raise ValueError(f"actions must have shape {(num_running, ACT_DIM)}, got {actions.shape}")
    if not np.isfinite(actions).all():
        raise NonFiniteActionError
    return actions


def where_running(running: Sequence[Any], rows: Sequence[int], index: int) -> str:
    """``" while running <task>"`` for episode ``index`` of a worker's reset (``rows``: its episodes, indices
    into ``running``, the call's tasks), or ``""`` for an index of no episode (−1: the worker failed outside
    any episode)."""
    return f" while running {running[rows[index]].describe()}" if 0 <= index < len(rows) else ""


def gather(replies: Mapping[int, NDArray[np.float64]], rows: Sequence[Sequence[int]], width: int):
    """The workers' replies ``{w: [len(rows[w]), width]}`` back in the call's order: ``[n, width]``."""
    out = np.empty((sum(map(len, rows)), width))
    for w, reply in replies.items():
        out[rows[w]] = reply
    return out


INFO_NAMES = ("success",)


def step_result(out: NDArray[np.float64]):
    """A gathered step reply ``[n, 41]`` → ``(observations [n, 39], rewards [n], {"success": [n]})``."""
    return out[:, :OBS_DIM], out[:, OBS_DIM], {"success": out[:, OBS_DIM + 1]}


def check_picklable(mean_action_fn: Any) -> None:
    """Refuse, with a clear error, a policy function that cannot travel to a worker process."""
    try:
        pickle.dumps(mean_action_fn)
    except Exception as error:
        raise ValueError(
            f"mean_action_fn {mean_action_fn!r} cannot be sent to the workers ({type(error).__name__}: "
            f"{error}): use a module-level function, or sample with policy_on_workers=False"
        ) from error


class _InProcess:
    """Worker 0 when it runs in the calling process: no process, no pipe."""


def _exit_reason(process: multiprocessing.process.BaseProcess) -> str:
    code = process.exitcode
    if code is None:
        return "closed its pipe"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class MetaWorldPool:
    """``num_workers`` workers running Meta-World episodes; a :class:`maml.wave_sampler.WaveEnv`.

    Worker 0 runs in the calling process (``in_process_worker``, the default) or, like the others, in a
    spawned process.

    Use as a context manager (or call :meth:`close`). Tasks are :class:`MetaWorldTask` s; observations and
    rewards come back as float64.
    """

    observation_dim = OBS_DIM
    action_dim = ACT_DIM
    max_episode_length = MAX_EPISODE_LENGTH
    info_reductions: Mapping[str, str] = MappingProxyType({"success": "max"})
    """``success`` per step is 0 or 1; an episode succeeds if it succeeds at any step (Meta-World's and
    garage's definition)."""

    def __init__(
        self,
        num_workers: int | None = None,
        action_scale: float = 1.0,
        fast_step: bool = FAST_STEP,
        in_process_worker: bool = True,
        start_timeout: float = START_TIMEOUT_S,
    ) -> None:
        """``num_workers`` workers (default: one per core); the environments get
        ``clip(a / action_scale, −1, 1)``; ``fast_step`` installs :mod:`maml.envs.metaworld_fast` (stock
        Meta-World when False).

        ``in_process_worker`` (default) runs worker 0 in the calling process, between sending the other
        workers their actions and collecting their replies, and spawns ``num_workers − 1`` processes: on a
        machine with as many cores as workers, the caller then no longer competes with the workers for a
        core at every step, and one worker means no process at all (ML10 sampler on 2 cores: ~1.3× the
        steps per second of two worker processes, results/bench/README.md). ``False`` spawns every worker.
        """
        num_workers = default_num_workers() if num_workers is None else num_workers
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        if not action_scale > 0:
            raise ValueError(f"action_scale must be positive, got {action_scale}")
        self.action_scale = float(action_scale)
        self.episodes: Counter[str] = Counter()
        """Episodes started so far, per Meta-World class."""
        self.env_steps: Counter[str] = Counter()
        """Environment steps taken so far, per Meta-World class."""
        self._closed = False
        self._workers: list[_Worker | _InProcess] = [_InProcess()] if in_process_worker else []
        self._local = _Runner(self.action_scale, fast_step) if in_process_worker else None
        self._rows: list[list[int]] = [[] for _ in range(num_workers)]
        self._running: list[MetaWorldTask] = []
        context = multiprocessing.get_context("spawn")
        try:
            for index in range(len(self._workers), num_workers):
                parent, child = context.Pipe()
                process = context.Process(
                    target=_worker_main,
                    args=(child, self.action_scale, fast_step),
                    name=f"metaworld-worker-{index}",
                    daemon=True,
                )
                process.start()
                child.close()  # the worker holds the only copy: its death shows here as end of file
                self._workers.append(_Worker(index, process, parent))
            deadline = time.monotonic() + start_timeout
            for worker in self._processes:
                if not worker.conn.poll(max(deadline - time.monotonic(), 0.0)):
                    raise WorkerError(
                        f"Meta-World worker {worker.index} did not start in {start_timeout:.0f} s"
                    )
                try:
                    self._receive(worker)
                except WorkerError as error:
                    raise WorkerError(f"{error}: it failed to start. {START_HINT}") from error
        except BaseException:
            self.close()
            raise

    # --- the WaveEnv protocol -------------------------------------------------------------------------
    @property
    def num_workers(self) -> int:
        return len(self._workers)

    @staticmethod
    def group_of(task: MetaWorldTask) -> str:
        """Episodes of one class share a worker's instance of that class."""
        return task.class_name

    @staticmethod
    def step_cost(group: str) -> float:
        """Relative cost of a step of class ``group`` (:data:`STEP_COST_MS`; unknown classes: the median)."""
        return STEP_COST_MS.get(group, float(np.median(list(STEP_COST_MS.values()))))

    def reset(
        self,
        workers: Sequence[int],
        tasks: Sequence[MetaWorldTask],
        seeds: Sequence[np.random.SeedSequence],
    ) -> NDArray[np.float64]:
        """Start episode ``i`` of task ``tasks[i]`` on worker ``workers[i]`` with reset seed ``seeds[i]``.

        A worker runs several episodes of a class on as many instances. Returns observations ``[n, 39]``;
        :meth:`step` then steps exactly these episodes.
        """
        rows = wave_rows(workers, len(tasks), len(seeds), self.num_workers)
        self._rows, self._running = rows, list(tasks)
        replies = self._call(
            {
                w: ("reset", [(tasks[i].task, reset_seed(seeds[i])) for i in r])
                for w, r in enumerate(rows)
                if r
            }
        )
        self.episodes.update(task.class_name for task in tasks)
        return gather(replies, rows, OBS_DIM)

    def step(
        self, actions: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], dict[str, NDArray[np.float64]]]:
        """Policy actions ``[n, 4]`` → ``(observations [n, 39], rewards [n], {"success": [n]})``."""
        actions = wave_actions(actions, len(self._running))
        replies = self._call({w: ("step", actions[r]) for w, r in enumerate(self._rows) if r})
        self.env_steps.update(task.class_name for task in self._running)
        return step_result(gather(replies, self._rows, OBS_DIM + 2))

    def rollout(
        self,
        workers: Sequence[int],
        tasks: Sequence[MetaWorldTask],
        seeds: Sequence[np.random.SeedSequence],
        wave_policy: WavePolicy,
    ) -> Rollout:
        """Run episode ``i`` (as :meth:`reset` starts it) for ``H`` steps on worker ``workers[i]``, each
        worker calling the policy on its own episodes (:class:`maml.wave_sampler.RolloutEnv`): one message
        each way per worker. Raises :class:`~maml.envs.errors.NonFiniteActionError` (the pool stays open)
        when the policy's actions hold NaN or inf, before any environment is stepped with them."""
        rows = rollout_rows(workers, tasks, seeds, wave_policy, self.num_workers)
        if len(self._processes) > 0:
            check_picklable(wave_policy.mean_action_fn)
        self._rows, self._running = rows, list(tasks)
        replies = self._call(
            {
                w: ("rollout", ([(tasks[i].task, reset_seed(seeds[i])) for i in r], wave_policy.select(r)))
                for w, r in enumerate(rows)
                if r
            }
        )
        count_rollout(self.episodes, self.env_steps, tasks, wave_policy)
        return gather_rollouts(replies, rows)

    # --- lifecycle ------------------------------------------------------------------------------------
    @property
    def _processes(self) -> list[_Worker]:
        return [w for w in self._workers if isinstance(w, _Worker)]

    @property
    def pids(self) -> list[int]:
        """Process ids of the worker processes (for monitoring and tests)."""
        return [w.process.pid for w in self._processes if w.process.pid is not None]

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Stop every worker: ask, wait up to ``timeout`` s, then terminate (and kill) the stragglers."""
        if self._closed:
            return
        self._closed = True
        self._local = None
        processes = self._processes
        for worker in processes:
            if worker.process.pid is not None and worker.process.is_alive():
                with contextlib.suppress(OSError):
                    worker.conn.send(("close", None))
        deadline = time.monotonic() + timeout
        for worker in processes:
            if worker.process.pid is not None:
                worker.process.join(max(deadline - time.monotonic(), 0.0))
        for worker in processes:
            if worker.process.pid is not None and worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(1.0)
                if worker.process.is_alive():
                    worker.process.kill()
                    worker.process.join()
            worker.conn.close()

    def __enter__(self) -> MetaWorldPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- messaging ------------------------------------------------------------------------------------
    def _call(self, messages: dict[int, tuple[str, Any]]) -> dict[int, Any]:
        """Send each worker process its message, run the in-process worker's, then collect the replies. Any
        failure closes the pool."""
        if self._closed:
            raise RuntimeError("the Meta-World pool is closed")
        non_finite: NonFiniteActionError | None = None
        try:
            replies = {}
            for w, message in messages.items():
                worker = self._workers[w]
                if isinstance(worker, _Worker):
                    try:
                        worker.conn.send(message)
                    except OSError as error:
                        raise self._death(worker) from error
            if self._local is not None and 0 in messages:
                try:
                    replies[0] = self._run_local(*messages[0])
                except NonFiniteActionError as error:
                    non_finite = error
            for w in messages:
                worker = self._workers[w]
                if isinstance(worker, _Worker):
                    try:
                        replies[w] = self._receive(worker)
                    except NonFiniteActionError as error:
                        non_finite = non_finite or error
        except BaseException:
            self.close()
            raise
        if non_finite is not None:  # every worker answered: the pool can go on
            raise non_finite
        return replies

    def _run_local(self, command: str, payload: Any) -> Any:
        runner = self._local
        assert runner is not None
        try:
            return runner.handle(command, payload)
        except NonFiniteActionError:
            raise
        except Exception as error:
            raise WorkerError(
                f"Meta-World worker 0 (in process {os.getpid()}) failed{self._where(0, runner.current)}: "
                f"{type(error).__name__}: {error}"
            ) from error

    def _where(self, worker: int, index: int) -> str:
        return where_running(self._running, self._rows[worker], index)

    def _receive(self, worker: _Worker) -> Any:
        try:
            status, *payload = worker.conn.recv()
        except (EOFError, OSError) as error:
            raise self._death(worker) from error
        if status == "nonfinite":
            raise NonFiniteActionError
        if status == "error":
            index, trace = payload
            where = self._where(worker.index, index)
            raise WorkerError(
                f"Meta-World worker {worker.index} (pid {worker.process.pid}) failed{where}:\n{trace}"
            )
        return payload[0]

    def _death(self, worker: _Worker) -> WorkerError:
        worker.process.join(1.0)
        tasks = [self._running[i].describe() for i in self._rows[worker.index]]
        doing = f"while running {', '.join(tasks)}" if tasks else "while idle"
        reason = _exit_reason(worker.process)
        return WorkerError(f"Meta-World worker {worker.index} (pid {worker.process.pid}) {reason} {doing}")
