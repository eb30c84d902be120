"""HalfCheetahDir (Finn et al. 2017, as garage and pytorch-maml-rl define it) on maintained MuJoCo.

The cheetah must run forwards (direction +1) or backwards (direction −1); a task is a direction, drawn
±1 with probability ½. Everything follows garage's ``HalfCheetahDirEnv`` wrapped in
``normalize(..., expected_action_scale=10)`` (see shared/docs/garage-maml.md, "HalfCheetahDir"):

- Model: the ``half_cheetah.xml`` gymnasium ships (loaded from the installed package), ``frame_skip`` 5,
  so ``dt`` = 5 × 0.01 s = 0.05 s.
- Action: the policy's action ``a`` (6) reaches the simulator as ``a_env = clip(a / 10, −1, 1)``.
  garage computes the same map as ``−1 + (a + 10) · 0.1``; the two differ only in rounding.
- Observation (20): ``qpos[1:]`` (8), ``qvel`` (9), then the torso position (3). garage and
  pytorch-maml-rl read the torso with ``self.get_body_com("torso")``, which in gym's ``MujocoEnv``
  returns ``data.get_body_xpos`` — the body *frame origin* ``data.xpos``, not its centre of mass
  (``xipos``) nor ``subtree_com``, whatever the name says. It is read right after ``mj_step``, when MuJoCo's
  kinematics still describe the start of the last substep; we read ``data.xpos`` at the same moment, so
  the value is garage's exactly. (garage casts observations to float32; we return float64 and the sampler
  casts to its dtype.)
- Reward: ``direction · (x_after − x_before) / dt − 0.5 · 0.1 · Σ a_env²``. Episodes never terminate;
  their length (100) is the sampler's or the time limit's business.
- Reset: gym's HalfCheetah noise, ``qpos0 + U(−0.1, 0.1)`` then ``0 + 0.1 · N(0, 1)`` for the velocities,
  drawn in that order from the episode's generator.

:class:`HalfCheetahDirEnv` is a plain ``gymnasium.Env`` (registered as ``maml-bench/HalfCheetahDir-v0``)
and the test oracle; :class:`HalfCheetahDirBatch` steps ``B`` simulations at once on all cores and gives the
same numbers, bit for bit, for the same seeds and actions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, SupportsFloat

import gymnasium
import mujoco
import numpy as np
from numpy.typing import ArrayLike, NDArray

from maml.envs.errors import NonFiniteActionError
from maml.envs.mujoco_batch import MjBatch

OBS_DIM = 20
"""qpos[1:] (8) + qvel (9) + torso position (3)."""
ACT_DIM = 6
"""One motor per leg joint."""
EPISODE_LENGTH = 100
"""garage's ``max_episode_length`` for HalfCheetahDir; the registered environment's time limit."""
TORSO = "torso"

Seed = int | np.random.SeedSequence
"""A seed for one episode's reset noise: an int (as gymnasium's ``reset(seed=...)``) or a SeedSequence."""


@dataclass(frozen=True)
class HalfCheetahDirConfig:
    """Physics and reward constants; the defaults are garage's."""

    frame_skip: int = 5
    """Physics steps (0.01 s each) per environment step."""
    action_scale: float = 10.0
    """garage's ``expected_action_scale``: the simulator gets ``clip(a / action_scale, −1, 1)``."""
    ctrl_cost_weight: float = 0.05
    """Weight of ``Σ a_env²`` in the reward (garage writes it ``0.5 * 1e-1``)."""
    reset_noise_scale: float = 0.1
    """Half-width of the uniform qpos noise and std of the Gaussian qvel noise at reset."""

    def __post_init__(self) -> None:
        if self.frame_skip < 1:
            raise ValueError(f"frame_skip must be at least 1, got {self.frame_skip}")
        if not self.action_scale > 0:
            raise ValueError(f"action_scale must be positive, got {self.action_scale}")
        if self.ctrl_cost_weight < 0 or self.reset_noise_scale < 0:
            raise ValueError("ctrl_cost_weight and reset_noise_scale must be non-negative")


def model_path() -> Path:
    """``half_cheetah.xml`` inside the installed gymnasium package (the file HalfCheetah-v5 loads)."""
    path = Path(gymnasium.__file__).parent / "envs" / "mujoco" / "assets" / "half_cheetah.xml"
    if not path.is_file():
        raise FileNotFoundError(f"gymnasium {gymnasium.__version__} ships no HalfCheetah model at {path}")
    return path


def load_model() -> mujoco.MjModel:
    """The HalfCheetah ``MjModel`` (timestep 0.01 s, Euler integrator, Newton solver)."""
    return mujoco.MjModel.from_xml_path(str(model_path()))


def sample_directions(rng: np.random.Generator, num_tasks: int) -> NDArray[np.float64]:
    """``num_tasks`` directions ``[n]``, each −1.0 or +1.0 with probability ½ (garage's ``sample_tasks``)."""
    return (2 * rng.binomial(1, 0.5, size=num_tasks) - 1).astype(np.float64)


def make_rng(seed: Seed) -> np.random.Generator:
    """The generator gymnasium's ``reset(seed=...)`` builds: PCG64 on ``SeedSequence(seed)``."""
    sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return np.random.Generator(np.random.PCG64(sequence))


def reset_state(
    rng: np.random.Generator, qpos0: NDArray[np.float64], noise_scale: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """gym's HalfCheetah reset noise: ``qpos0 + U(−s, s)`` ``[nq]``, then ``s · N(0, 1)`` ``[nv = nq]``."""
    qpos = qpos0 + rng.uniform(low=-noise_scale, high=noise_scale, size=qpos0.shape[0])
    qvel = noise_scale * rng.standard_normal(qpos0.shape[0])
    return qpos, qvel


def scale_action(actions: NDArray[np.float64], action_scale: float) -> NDArray[np.float64]:
    """Policy actions ``[..., 6]`` → simulator controls ``clip(a / action_scale, −1, 1)``."""
    return np.clip(actions / action_scale, -1.0, 1.0)


def observe(
    qpos: NDArray[np.float64], qvel: NDArray[np.float64], torso_xpos: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``qpos [..., 9]``, ``qvel [..., 9]``, ``torso_xpos [..., 3]`` → observation ``[..., 20]``."""
    return np.concatenate([qpos[..., 1:], qvel, torso_xpos], axis=-1)


def reward_terms(
    direction: ArrayLike,
    x_before: ArrayLike,
    x_after: ArrayLike,
    ctrl: NDArray[np.float64],
    dt: float,
    ctrl_cost_weight: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(reward_forward, reward_ctrl)``, each ``[...]``; the reward is their sum.

    ``direction, x_before, x_after [...]``, ``ctrl [..., 6]`` (the scaled controls). ``reward_ctrl`` is the
    negated control cost, as garage logs it.
    """
    forward = np.asarray(direction) * ((np.asarray(x_after) - np.asarray(x_before)) / dt)
    return forward, -ctrl_cost_weight * np.square(ctrl).sum(axis=-1)


def _check_actions(actions: ArrayLike, shape: tuple[int, ...]) -> NDArray[np.float64]:
    array = np.asarray(actions, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"actions must have shape {shape}, got {array.shape}")
    if not np.isfinite(array).all():
        raise NonFiniteActionError
    return array


def _check_direction(direction: SupportsFloat) -> float:
    value = float(direction)
    if not np.isfinite(value):
        raise ValueError(f"direction must be finite, got {direction!r}")
    return value


class HalfCheetahDirEnv(gymnasium.Env[NDArray[np.float64], NDArray[np.float64]]):
    """One HalfCheetahDir simulation as a gymnasium environment (never terminates; add a time limit).

    Observations ``[20]`` float64; actions ``[6]`` in the policy's units (``Box(−10, 10)``: the simulator
    gets ``clip(a / 10, −1, 1)``). ``info`` holds ``reward_forward``, ``reward_ctrl``, ``x_position`` and
    ``direction``.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's class attribute)

    def __init__(self, direction: float = 1.0, config: HalfCheetahDirConfig | None = None) -> None:
        self.config = config or HalfCheetahDirConfig()
        self.model = load_model()
        self.data = mujoco.MjData(self.model)
        self.dt = self.model.opt.timestep * self.config.frame_skip
        self._torso = self.model.body(TORSO).id
        self._direction = _check_direction(direction)
        scale = self.config.action_scale
        self.action_space = gymnasium.spaces.Box(-scale, scale, (ACT_DIM,), np.float64)
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float64)

    def set_task(self, direction: float) -> None:
        """Run towards ``direction`` (+1 forwards, −1 backwards) from the next step on."""
        self._direction = _check_direction(direction)

    def get_task(self) -> float:
        """The current direction."""
        return self._direction

    def sample_tasks(self, num_tasks: int) -> list[float]:
        """``num_tasks`` directions drawn from the environment's generator (garage's API)."""
        return sample_directions(self.np_random, num_tasks).tolist()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float64], dict[str, Any]]:
        super().reset(seed=seed)
        qpos, qvel = reset_state(self.np_random, self.model.qpos0, self.config.reset_noise_scale)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = qpos
        self.data.qvel[:] = qvel
        mujoco.mj_forward(self.model, self.data)
        return self._observe(), {"x_position": float(self.data.qpos[0]), "direction": self._direction}

    def step(
        self, action: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], float, bool, bool, dict[str, Any]]:
        ctrl = scale_action(_check_actions(action, (ACT_DIM,)), self.config.action_scale)
        x_before = self.data.qpos[0]
        self.data.ctrl[:] = ctrl
        mujoco.mj_step(self.model, self.data, self.config.frame_skip)
        x_after = self.data.qpos[0]
        forward, ctrl_reward = reward_terms(
            self._direction, x_before, x_after, ctrl, self.dt, self.config.ctrl_cost_weight
        )
        info = {
            "reward_forward": float(forward),
            "reward_ctrl": float(ctrl_reward),
            "x_position": float(x_after),
            "direction": self._direction,
        }
        return self._observe(), float(forward + ctrl_reward), False, False, info

    def _observe(self) -> NDArray[np.float64]:
        return observe(self.data.qpos, self.data.qvel, self.data.xpos[self._torso])


class HalfCheetahDirBatch:
    """``num_envs`` HalfCheetahDir simulations stepped together on ``num_threads`` threads.

    Implements :class:`maml.sampler.BatchedEnv` with tasks = directions. Environment ``b`` of a batch
    gives exactly what :class:`HalfCheetahDirEnv` gives for the same direction, seed and actions.
    """

    observation_dim = OBS_DIM
    action_dim = ACT_DIM
    info_reductions: Mapping[str, str] = MappingProxyType({"reward_forward": "sum", "reward_ctrl": "sum"})
    """Per-step infos and how the sampler reduces each over an episode."""

    def __init__(
        self,
        num_envs: int,
        config: HalfCheetahDirConfig | None = None,
        num_threads: int | None = None,
        native: bool = True,
    ) -> None:
        """``native``: step with the compiled C loop where it builds (:mod:`maml.envs.native_step`; the same
        numbers as the Python loop, faster)."""
        self.config = config or HalfCheetahDirConfig()
        model = load_model()
        self.dt = model.opt.timestep * self.config.frame_skip
        self._torso = model.body(TORSO).id
        self._sims = MjBatch(model, num_envs, num_threads, native=native)
        self._directions: NDArray[np.float64] | None = None

    @property
    def num_envs(self) -> int:
        return self._sims.num_envs

    @property
    def num_threads(self) -> int:
        return self._sims.num_threads

    @property
    def native(self) -> bool:
        """Whether the C loop steps the simulations."""
        return self._sims.native

    def reset(self, tasks: ArrayLike, seeds: Sequence[Seed]) -> NDArray[np.float64]:
        """Reset environment ``b`` to direction ``tasks[b]`` with reset noise from ``seeds[b]``.

        ``tasks [B]`` (±1), ``seeds``: ``B`` ints or ``SeedSequence`` s → observations ``[B, 20]``.
        """
        directions = np.asarray(tasks, dtype=np.float64)
        if directions.shape != (self.num_envs,):
            raise ValueError(f"tasks must have shape ({self.num_envs},), got {directions.shape}")
        if not np.isfinite(directions).all():
            raise ValueError("tasks (directions) must be finite")
        if len(seeds) != self.num_envs:
            raise ValueError(f"need one seed per environment ({self.num_envs}), got {len(seeds)}")
        model = self._sims.model
        states = [reset_state(make_rng(s), model.qpos0, self.config.reset_noise_scale) for s in seeds]
        self._sims.reset(np.stack([q for q, _ in states]), np.stack([v for _, v in states]))
        self._directions = directions
        return self._observe()

    def step(
        self, actions: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], dict[str, NDArray[np.float64]]]:
        """Apply policy actions ``[B, 6]`` → ``(observations [B, 20], rewards [B], infos {name: [B]})``."""
        if self._directions is None:
            raise RuntimeError("call reset() before step()")
        ctrl = scale_action(_check_actions(actions, (self.num_envs, ACT_DIM)), self.config.action_scale)
        x_before = self._sims.qpos[:, 0].copy()
        self._sims.step(ctrl, self.config.frame_skip)
        forward, ctrl_reward = reward_terms(
            self._directions, x_before, self._sims.qpos[:, 0], ctrl, self.dt, self.config.ctrl_cost_weight
        )
        infos = {"reward_forward": forward, "reward_ctrl": ctrl_reward}
        return self._observe(), forward + ctrl_reward, infos

    def close(self) -> None:
        """Stop the worker threads."""
        self._sims.close()

    def __enter__(self) -> HalfCheetahDirBatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _observe(self) -> NDArray[np.float64]:
        return observe(self._sims.qpos, self._sims.qvel, self._sims.xpos[:, self._torso])
