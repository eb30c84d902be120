"""Meta-World sampling workers as Ray actors, anywhere in a Ray cluster: a :class:`maml.wave_sampler.WaveEnv`.

:class:`RayMetaWorldPool` is :class:`maml.envs.metaworld_pool.MetaWorldPool` with Ray actors in place of the
worker processes: each actor holds the same :class:`~maml.envs.metaworld_pool._Runner` (environment instances
per class, reused across tasks, fast paths), so :func:`maml.wave_sampler.sample_in_waves` drives it
unchanged and an episode, a function of its task, reset seed and actions, gives the same bits on a local
pool, on one actor or on many actors on many nodes. Per wave step the pool makes ONE remote call per actor
that runs episodes: its episodes' actions in (``[k, 4]``), ``[k, 41]`` out (observation, reward, success);
a reset sends each actor its ``(Task, seed)`` pairs.

Actors are placed by Ray (``scheduling_strategy="SPREAD"`` and one CPU each unless ``actor_options`` says
otherwise), from the process that made the pool: a driver after ``ray.init(address=...)``, or a Ray task
(the harness's Ray executor runs each run as one; :mod:`bench.run.families`). Every node needs this package
and Meta-World installed, as for the executor.

An actor that dies (its process killed, its node lost) is replaced, not retried in place: the pool keeps,
per actor, the reset of the current wave (tasks and seeds) and the actions it has sent since; a new actor
re-runs that reset and those actions in one call (:meth:`_SamplerActor.replay`) and answers the call that
failed. Episodes are deterministic in their task, seed and actions (the ``WaveEnv`` contract), so nothing is
lost and the bits are the same; the sampler never notices. An actor that dies ``max_retries`` times in a
row within one call (a crash its episodes cause, a node that cannot hold it) raises :class:`WorkerError`,
as does an exception in an actor (naming the task, as the local pool does) or an actor that Ray cannot
place within ``start_timeout``; any of them closes the pool.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
from collections import Counter
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import ray
from numpy.typing import ArrayLike, NDArray
from ray.exceptions import GetTimeoutError, ObjectLostError, RayActorError

from maml.envs.errors import NonFiniteActionError
from maml.envs.metaworld_pool import (
    ACT_DIM,
    FAST_STEP,
    MAX_EPISODE_LENGTH,
    OBS_DIM,
    START_TIMEOUT_S,
    MetaWorldPool,
    WorkerError,
    _Runner,
    check_picklable,
    count_rollout,
    gather,
    reset_seed,
    rollout_rows,
    step_result,
    wave_actions,
    wave_rows,
    where_running,
)
from maml.envs.metaworld_tasks import MetaWorldTask
from maml.rollouts import Rollout, WavePolicy, gather_rollouts

logger = logging.getLogger(__name__)

ACTOR_OPTIONS: Mapping[str, Any] = MappingProxyType({"num_cpus": 1, "scheduling_strategy": "SPREAD"})
"""Ray options of each actor (``actor_options`` overrides them): a core each, spread over the nodes."""
MAX_RETRIES = 3
"""Replacements of one actor in a row within one call before the pool gives up."""


class _SamplerActor:
    """One sampling worker (a Ray actor): a :class:`_Runner` and the commands of the local pool's workers.

    Replies are ``("ok", value)``, ``("nonfinite", episode index)`` or ``("error", episode index or −1,
    traceback)``, as the local workers'.
    """

    def __init__(self, action_scale: float, fast: bool) -> None:
        self.runner = _Runner(action_scale, fast)

    def ready(self) -> tuple[int, str]:
        """``(pid, host)``: the actor has started."""
        return os.getpid(), socket.gethostname()

    def reset(self, payload: Sequence[tuple[Any, int]]) -> tuple:
        return self._run(self.runner.reset, payload)

    def step(self, actions: NDArray[np.floating]) -> tuple:
        return self._run(self.runner.step, actions)

    def rollout(self, payload: Sequence[tuple[Any, int]], wave_policy: WavePolicy) -> tuple:
        """Reset ``payload`` and run the episodes with the policy here (:meth:`_Runner.rollout`)."""
        return self._run(self.runner.rollout, (payload, wave_policy))

    def replay(self, payload: Sequence[tuple[Any, int]], actions: NDArray[np.floating]) -> tuple:
        """A dead actor's wave on its replacement: reset ``payload``, step ``actions [s, k, 4]`` → the reply
        of the last of them (the reset's observations when ``s`` is 0)."""

        def run(_: None) -> NDArray[np.float64]:
            reply = self.runner.reset(payload)
            for step_actions in actions:
                reply = self.runner.step(step_actions)
            return reply

        return self._run(run, None)

    def _run(self, command, payload) -> tuple:
        self.runner.current = -1
        try:
            return ("ok", command(payload))
        except NonFiniteActionError:
            return ("nonfinite", self.runner.current)
        except Exception:
            return ("error", self.runner.current, traceback.format_exc())


_RemoteActor = ray.remote(_SamplerActor)


class RayMetaWorldPool:
    """``num_actors`` Ray actors running Meta-World episodes; a :class:`maml.wave_sampler.WaveEnv` giving the
    same episodes as :class:`~maml.envs.metaworld_pool.MetaWorldPool` (module docstring).

    Needs Ray initialised (``ray.init``, or inside a Ray task). Use as a context manager (or call
    :meth:`close`). :attr:`replacements` counts the actors replaced so far.
    """

    observation_dim = OBS_DIM
    action_dim = ACT_DIM
    max_episode_length = MAX_EPISODE_LENGTH
    info_reductions: Mapping[str, str] = MetaWorldPool.info_reductions
    group_of = staticmethod(MetaWorldPool.group_of)
    step_cost = staticmethod(MetaWorldPool.step_cost)

    def __init__(
        self,
        num_actors: int,
        action_scale: float = 1.0,
        fast_step: bool = FAST_STEP,
        actor_options: Mapping[str, Any] | None = None,
        max_retries: int = MAX_RETRIES,
        start_timeout: float = START_TIMEOUT_S,
    ) -> None:
        """``num_actors`` actors with :data:`ACTOR_OPTIONS` updated by ``actor_options`` (Ray's
        ``.options()``); the environments get ``clip(a / action_scale, −1, 1)``; ``fast_step`` as for the
        local pool. Waits up to ``start_timeout`` s for the actors to start."""
        if num_actors < 1:
            raise ValueError(f"num_actors must be at least 1, got {num_actors}")
        if not action_scale > 0:
            raise ValueError(f"action_scale must be positive, got {action_scale}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be at least 0, got {max_retries}")
        if not ray.is_initialized():
            raise RuntimeError("RayMetaWorldPool needs Ray: call ray.init(...) first (or run in a Ray task)")
        self.action_scale = float(action_scale)
        self.max_retries = max_retries
        self.start_timeout = start_timeout
        self._options = {**ACTOR_OPTIONS, **(actor_options or {}), "max_restarts": 0, "max_task_retries": 0}
        """Ray restarts nothing: a dead actor's episodes need a reset and a replay (:meth:`_replace`)."""
        self._args = (self.action_scale, fast_step)
        self.episodes: Counter[str] = Counter()
        """Episodes started so far, per Meta-World class."""
        self.env_steps: Counter[str] = Counter()
        """Environment steps taken so far, per Meta-World class."""
        self.replacements = 0
        """Actors replaced after dying, over the pool's life."""
        self._closed = False
        self._actors: list[Any] = []
        self._where: list[tuple[int, str]] = []
        """Each actor's ``(pid, host)``."""
        self._rows: list[list[int]] = [[] for _ in range(num_actors)]
        self._running: list[MetaWorldTask] = []
        self._payloads: list[list[tuple[Any, int]]] = [[] for _ in range(num_actors)]
        """Each actor's reset of the current wave: ``[(Task, seed), …]``."""
        self._sent: list[list[NDArray[np.floating]]] = [[] for _ in range(num_actors)]
        """The actions each actor has been sent since that reset."""
        self._policies: list[WavePolicy | None] = [None] * num_actors
        """Each actor's policy of the current wave when it runs the wave itself (:meth:`rollout`)."""
        try:
            self._actors = [self._new_actor() for _ in range(num_actors)]
            self._where = self._ready(self._actors, "start")
        except BaseException:
            self.close()
            raise

    # --- the WaveEnv protocol -------------------------------------------------------------------------
    @property
    def num_workers(self) -> int:
        return len(self._actors)

    def reset(
        self,
        workers: Sequence[int],
        tasks: Sequence[MetaWorldTask],
        seeds: Sequence[np.random.SeedSequence],
    ) -> NDArray[np.float64]:
        """Start episode ``i`` of task ``tasks[i]`` on actor ``workers[i]`` with reset seed ``seeds[i]``
        → observations ``[n, 39]`` (as :meth:`MetaWorldPool.reset`)."""
        rows = wave_rows(workers, len(tasks), len(seeds), self.num_workers)
        self._rows, self._running = rows, list(tasks)
        self._payloads = [[(tasks[i].task, reset_seed(seeds[i])) for i in r] for r in rows]
        self._sent = [[] for _ in rows]
        self._policies = [None] * len(rows)
        replies = self._call({w: ("reset", (self._payloads[w],)) for w, r in enumerate(rows) if r})
        self.episodes.update(task.class_name for task in tasks)
        return gather(replies, rows, OBS_DIM)

    def rollout(
        self,
        workers: Sequence[int],
        tasks: Sequence[MetaWorldTask],
        seeds: Sequence[np.random.SeedSequence],
        wave_policy: WavePolicy,
    ) -> Rollout:
        """Each actor runs its episodes of the wave with the policy itself (as
        :meth:`MetaWorldPool.rollout`): one remote call per actor per wave. An actor that dies is replaced
        and the replacement runs the same call (the same episodes, bit for bit)."""
        rows = rollout_rows(workers, tasks, seeds, wave_policy, self.num_workers)
        check_picklable(wave_policy.mean_action_fn)
        self._rows, self._running = rows, list(tasks)
        self._payloads = [[(tasks[i].task, reset_seed(seeds[i])) for i in r] for r in rows]
        self._sent = [[] for _ in rows]
        self._policies = [wave_policy.select(r) if r else None for r in rows]
        replies = self._call(
            {w: ("rollout", (self._payloads[w], self._policies[w])) for w, r in enumerate(rows) if r}
        )
        count_rollout(self.episodes, self.env_steps, tasks, wave_policy)
        return gather_rollouts(replies, rows)

    def step(
        self, actions: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], dict[str, NDArray[np.float64]]]:
        """Policy actions ``[n, 4]`` → ``(observations [n, 39], rewards [n], {"success": [n]})``."""
        actions = wave_actions(actions, len(self._running))
        messages = {}
        for w, r in enumerate(self._rows):
            if r:
                self._sent[w].append(actions[r])
                messages[w] = ("step", (self._sent[w][-1],))
        replies = self._call(messages)
        self.env_steps.update(task.class_name for task in self._running)
        return step_result(gather(replies, self._rows, OBS_DIM + 2))

    # --- lifecycle ------------------------------------------------------------------------------------
    @property
    def pids(self) -> list[int]:
        """Process ids of the actors (on their nodes: :attr:`hosts`)."""
        return [pid for pid, _ in self._where]

    @property
    def hosts(self) -> list[str]:
        """Host name of each actor's node."""
        return [host for _, host in self._where]

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Kill every actor (their environments go with them)."""
        if self._closed:
            return
        self._closed = True
        for actor in self._actors:
            _kill(actor)

    def __enter__(self) -> RayMetaWorldPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- calls and replacements -----------------------------------------------------------------------
    def _call(self, messages: dict[int, tuple[str, tuple]]) -> dict[int, Any]:
        """One remote call per actor in ``messages``, then their replies; a dead actor is replaced and its
        wave replayed. Any failure closes the pool."""
        if self._closed:
            raise RuntimeError("the Meta-World pool is closed")
        try:
            refs = {w: getattr(self._actors[w], name).remote(*args) for w, (name, args) in messages.items()}
            try:  # one wait for all the replies ...
                replies = dict(zip(refs, ray.get(list(refs.values())), strict=True))
            except (RayActorError, ObjectLostError):  # ... then, an actor having died, one by one
                replies = {w: self._reply(w, ref) for w, ref in refs.items()}
            if any(reply[0] == "nonfinite" for reply in replies.values()):
                raise NonFiniteActionError  # every actor has answered: the pool can go on
            return {w: self._check(w, reply) for w, reply in replies.items()}
        except NonFiniteActionError:
            raise
        except BaseException:
            self.close()
            raise

    def _reply(self, w: int, ref: Any) -> tuple:
        """Actor ``w``'s reply to ``ref``, replacing the actor (and replaying its wave) while it dies."""
        deaths = 0
        while True:
            try:
                return ray.get(ref if ref is not None else self._replace(w))
            except (RayActorError, ObjectLostError) as error:
                deaths += 1
                if deaths > self.max_retries:
                    raise WorkerError(
                        f"Meta-World worker {w} (Ray actor, {self._name(w)}) died {self._doing(w)}, "
                        f"{deaths} time(s) in a row: {type(error).__name__}: {error}"
                    ) from error
                logger.warning(
                    "Meta-World worker %d (Ray actor, %s) died %s (%s): replacing it",
                    w, self._name(w), self._doing(w), type(error).__name__,
                )  # fmt: skip
                ref = None

    def _check(self, w: int, reply: tuple) -> Any:
        """The value of actor ``w``'s reply, or :class:`WorkerError` naming the task that raised."""
        status, *payload = reply
        if status == "error":
            index, trace = payload
            where = where_running(self._running, self._rows[w], index)
            raise WorkerError(f"Meta-World worker {w} (Ray actor, {self._name(w)}) failed{where}:\n{trace}")
        return payload[0]

    def _replace(self, w: int) -> Any:
        """A new actor in place of dead actor ``w``, told to replay ``w``'s wave so far (or to run its
        rollout again) → that call's ref."""
        _kill(self._actors[w])
        self._actors[w] = self._new_actor()
        self.replacements += 1
        (self._where[w],) = self._ready([self._actors[w]], "start a replacement for a dead")
        wave_policy = self._policies[w]
        if wave_policy is not None:
            logger.warning(
                "Meta-World worker %d replaced by a Ray actor (%s), which runs its %d episodes again from "
                "their reset seeds",
                w, self._name(w), len(self._rows[w]),
            )  # fmt: skip
            return self._actors[w].rollout.remote(self._payloads[w], wave_policy)
        sent = self._sent[w]
        logger.warning(
            "Meta-World worker %d replaced by a Ray actor (%s), which replays its %d episodes from their "
            "reset seeds (%d steps)",
            w, self._name(w), len(self._rows[w]), len(sent),
        )  # fmt: skip
        actions = np.stack(sent) if sent else np.empty((0, len(self._rows[w]), ACT_DIM))
        return self._actors[w].replay.remote(self._payloads[w], actions)

    def _new_actor(self) -> Any:
        return _RemoteActor.options(**self._options).remote(*self._args)

    def _ready(self, actors: list[Any], what: str) -> list[tuple[int, str]]:
        try:
            return ray.get([actor.ready.remote() for actor in actors], timeout=self.start_timeout)
        except GetTimeoutError as error:
            raise WorkerError(
                f"Ray could not {what} Meta-World sampler actor(s) in {self.start_timeout:.0f} s "
                f"(resources available now: {ray.available_resources()})"
            ) from error

    def _name(self, w: int) -> str:
        pid, host = self._where[w]
        return f"pid {pid} on {host}"

    def _doing(self, w: int) -> str:
        tasks = [self._running[i].describe() for i in self._rows[w]]
        return f"while running {', '.join(tasks)}" if tasks else "while idle"


def _kill(actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already gone, or Ray shut down
        logger.debug("could not kill a Meta-World sampler actor", exc_info=True)
