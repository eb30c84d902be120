"""MuJoCo alone on the episodes a Meta-World sampler produced: the physics bound of its benchmark.

A sampler's episodes cost at least the ``mj_step`` calls of their physics. :class:`ReplayBound` replays each
episode open loop with ``mujoco.rollout`` (C, no Python, no policy), from its task's reset state, with the
controls the episode applied: per environment step, ``frame_skip`` physics steps holding the gripper
controls ``(a₃, −a₃)`` and the mocap target that ``SawyerXYZEnv.set_xyz_action`` computes from the action
(``clip(a, −1, 1) · action_scale`` added to the last target, clipped to the mocap box; quaternion
``(1, 0, 1, 0)``). This is how the HalfCheetahDir benchmark bounds its sampler (the controls it applied).
The replay leaves out what a stock-equal step adds to the physics (``mj_forward`` after the steps, whose
warm start the next step reads): its first step equals the environment's to the bit, later ones drift by
rounding (tests/test_physics_bound.py), the same physics work.

:func:`idle_seconds` is the earlier bound (each task's model stepped from its reset state with the hand
held still and the gripper idle): cheaper physics than a policy's episodes (fewer contacts and solver
iterations), so a ratio against it reads lower; the benchmark reports both.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import mujoco
import numpy as np
from mujoco import rollout
from numpy.typing import NDArray

from maml.envs.metaworld_pool import env_controls, make_env

CONTROL_SPEC = int(
    mujoco.mjtState.mjSTATE_CTRL | mujoco.mjtState.mjSTATE_MOCAP_POS | mujoco.mjtState.mjSTATE_MOCAP_QUAT
)
"""What a replayed control row holds: the two gripper controls, the mocap position and quaternion."""
_START = mujoco.mjtState.mjSTATE_FULLPHYSICS
MOCAP_QUAT = (1.0, 0.0, 1.0, 0.0)
"""The mocap quaternion ``set_xyz_action`` writes at every step."""


def reset_env(task: Any, seed: int) -> tuple[Any, NDArray[np.float64]]:
    """A stock instance of the task's class, task set and reset with ``seed``, and its physics state then
    (``mjSTATE_FULLPHYSICS``): where a replay starts."""
    env = make_env(task.task)
    env.set_task(task.task)
    env.reset(seed=seed)
    state = np.empty(mujoco.mj_stateSize(env.model, _START))
    mujoco.mj_getState(env.model, env.data, state, _START)
    return env, state


def mocap_controls(
    actions: NDArray[np.float64],
    start: NDArray[np.float64],
    low: NDArray[np.float64],
    high: NDArray[np.float64],
    action_scale: float,
) -> NDArray[np.float64]:
    """Environment actions ``[H, 4]`` → control rows ``[H, 9]`` (:data:`CONTROL_SPEC`): each step's gripper
    controls and the mocap target ``set_xyz_action`` sets, from the target ``start`` after the reset."""
    rows = np.empty((len(actions), 9))
    position = np.asarray(start, dtype=np.float64).copy()
    for t, action in enumerate(np.asarray(actions, dtype=np.float64)):
        position = np.clip(position + np.clip(action[:3], -1, 1) * action_scale, low, high)
        rows[t, 0], rows[t, 1] = action[3], -action[3]
        rows[t, 2:5] = position
        rows[t, 5:] = MOCAP_QUAT
    return rows


class ReplayBound:
    """One reset environment per task (a stock instance, ``reset(seed=seed)``), whose episodes it replays."""

    def __init__(self, tasks: Sequence[Any], seed: int, pool_action_scale: float = 1.0) -> None:
        self.pool_action_scale = pool_action_scale
        self.envs = []
        self.starts: list[NDArray[np.float64]] = []
        self.warmstarts: list[NDArray[np.float64]] = []
        for task in tasks:
            env, state = reset_env(task, seed)
            self.envs.append(env)
            self.starts.append(state)
            self.warmstarts.append(env.data.qacc_warmstart.copy())
        self.controls: list[NDArray[np.float64]] | None = None
        self._data = [mujoco.MjData(env.model) for env in self.envs]

    def set_actions(self, actions: NDArray[np.floating]) -> None:
        """Policy actions ``[num_tasks, H, 4]`` (one episode per task, as the sampler returned them) → the
        control rows each physics step holds (the pool's ``env_controls``, then :func:`mocap_controls`,
        repeated ``frame_skip`` times)."""
        if len(actions) != len(self.envs):
            raise ValueError(f"need one episode per task ({len(self.envs)}), got {len(actions)}")
        self.controls = []
        for env, episode in zip(self.envs, actions, strict=True):
            rows = mocap_controls(
                env_controls(episode, self.pool_action_scale),
                env.data.mocap_pos[0],
                env.mocap_low,
                env.mocap_high,
                env.action_scale,
            )
            self.controls.append(np.repeat(rows, env.frame_skip, axis=0)[None])

    def run(self, tasks: Sequence[int] | None = None) -> float:
        """Replay every episode (or those of ``tasks``) in turn → seconds spent in ``mujoco.rollout``."""
        if self.controls is None:
            raise RuntimeError("set_actions first: there is nothing to replay")
        return sum(self.replay(i)[1] for i in (range(len(self.envs)) if tasks is None else tasks))

    def replay(self, i: int) -> tuple[NDArray[np.float64], float]:
        """Task ``i``'s episode → (states after each physics step ``[H · frame_skip, nstate]``, seconds)."""
        assert self.controls is not None
        env, control = self.envs[i], self.controls[i]
        nstep = control.shape[1]
        state = np.empty((1, nstep, len(self.starts[i])))
        start = time.perf_counter()
        rollout.rollout(
            [env.model], [self._data[i]], self.starts[i][None], control,
            control_spec=CONTROL_SPEC, skip_checks=True, nstep=nstep,
            initial_warmstart=self.warmstarts[i][None], state=state, sensordata=np.empty((1, nstep, 0)),
        )  # fmt: skip
        return state[0], time.perf_counter() - start

    def close(self) -> None:
        for env in self.envs:
            env.close()


def idle_seconds(tasks: Sequence[Any], horizon: int, seed: int, tries: int = 3) -> float:
    """The earlier bound: each task's model stepped ``horizon`` times by ``mj_step(nstep=frame_skip)`` from
    its reset state with the controls the reset left (hand still, gripper idle), best of ``tries``, summed."""
    total = 0.0
    for task in tasks:
        env, start_state = reset_env(task, seed)
        model, data, frame_skip = env.model, env.data, env.frame_skip
        best = float("inf")
        for _ in range(tries):
            mujoco.mj_setState(model, data, start_state, _START)
            start = time.perf_counter()
            for _ in range(horizon):
                mujoco.mj_step(model, data, nstep=frame_skip)
            best = min(best, time.perf_counter() - start)
        total += best
        env.close()
    return total
