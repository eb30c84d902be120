"""Many copies of one MuJoCo model, stepped in parallel by Python threads.

Each simulation is a row of MuJoCo's *integration state* (``mjSTATE_INTEGRATION``: time, qpos, qvel, act,
the solver's warm start ``qacc_warmstart``, ctrl, applied forces, …), which is everything ``mj_step``
reads. To step simulation ``b``, a thread loads row ``b`` into its scratch ``MjData`` (``mj_setState``),
calls ``mj_step`` and saves the row back (``mj_getState``), reading the kinematics it needs (``xpos``)
on the way. The result is bit for bit what a persistent ``MjData`` per simulation gives, as in a single
gymnasium environment; ``mujoco.mj_step`` releases the GIL, so threads each stepping a slice of the rows
run the physics on all cores at once.

Design notes, from checks on the 2-core CPU (each a few runs on a noisy machine):

- ``mujoco.rollout`` restarts each trajectory from a ``mjSTATE_FULLPHYSICS`` state and returns no warm
  start, so calling it once per policy step changes the trajectory (the constraint solver starts from
  another guess; 0.28 apart after 100 HalfCheetah steps) and it cannot return the torso position garage
  observes. It is the speed reference (the benchmark's physics bound), not the engine.
- A persistent ``MjData`` per simulation also works but costs ~460 KB of touched memory per simulation
  (``half_cheetah.xml`` asks for a 6 MB arena) and misses the cache at every switch: ~36 µs of CPU per
  environment step against ~32 µs with a scratch ``MjData`` per thread and ~29 µs inside ``rollout``.
- The calling thread takes part in every step, with ``num_threads − 1`` persistent helpers woken by
  semaphores; a ``ThreadPoolExecutor`` and its futures cost ~20 % of the speed.
- A thread steps its slice with the C loop of :mod:`maml.envs.native_step` when it can be built (the same
  MuJoCo calls, one GIL release per slice); else with the Python loop, which re-takes the GIL after every
  ``mj_step``. HalfCheetahDir, 800 simulations, 2 threads, ``step`` alone: 40k env-steps/s with the
  Python loop, 61k with the C loop (the sampler's numbers: ``results/bench/README.md``).
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections.abc import Callable, Iterator

import mujoco
import numpy as np
from numpy.typing import NDArray

from maml.envs import native_step

MIN_ENVS_PER_CHUNK = 16
"""Smallest slice of the batch a thread steps at a time in the Python loop; smaller slices cost more in
dispatch than they gain in load balance."""
CHUNKS_PER_THREAD = 2
"""Slices per thread (Python loop), taken first come first served so that a thread slowed down by another
process does not hold the step up."""
NATIVE_MIN_ENVS_PER_CHUNK = 8
NATIVE_CHUNKS_PER_THREAD = 16
"""The same for the C loop, whose dispatch costs one ctypes call per slice: finer slices balance the
threads better (HalfCheetahDir, 800 simulations, 2 threads: 4 slices ~35k env-steps/s in the sampler,
16–32 slices ~48k)."""
STATE = mujoco.mjtState.mjSTATE_INTEGRATION
"""The state a simulation is saved as between steps: all that ``mj_step`` reads."""


def default_num_threads() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


def state_slice(model: mujoco.MjModel, component: mujoco.mjtState) -> slice:
    """Where ``component`` (e.g. ``mjSTATE_QPOS``) lies in an :data:`STATE` vector (components are stored
    in the order of their bits)."""
    spec, bit = STATE.value, component.value
    start = mujoco.mj_stateSize(model, spec & (bit - 1))
    return slice(start, start + mujoco.mj_stateSize(model, bit))


class ChunkRunner:
    """Runs ``task(chunk, worker)`` for ``chunk = 0 … n−1`` on the calling thread (worker 0) and
    ``num_helpers`` helper threads (workers 1 … num_helpers).

    Every thread takes the next chunk index from one shared iterator until none are left (``next`` on a
    ``range`` iterator is atomic under the GIL), so each chunk runs exactly once and no two chunks run on
    one worker at the same time. Helpers wait on a semaphore between calls; the first exception of any
    thread is raised in the caller.
    """

    def __init__(self, num_helpers: int) -> None:
        self._go = threading.Semaphore(0)
        self._done = threading.Semaphore(0)
        self._task: Callable[[int, int], None] | None = None
        self._chunks: Iterator[int] = iter(())
        self._errors: list[BaseException] = []
        self._closed = False
        self._helpers = [
            threading.Thread(target=self._serve, args=(worker,), name=f"mj-batch-{worker}", daemon=True)
            for worker in range(1, num_helpers + 1)
        ]
        for helper in self._helpers:
            helper.start()

    def run(self, task: Callable[[int, int], None], num_chunks: int) -> None:
        if self._closed:
            raise RuntimeError("the batch is closed")
        self._task, self._chunks, self._errors = task, iter(range(num_chunks)), []
        for _ in self._helpers:
            self._go.release()
        try:
            self._drain(0)
        finally:
            for _ in self._helpers:
                self._done.acquire()
            self._task = None
        if self._errors:
            raise self._errors[0]

    def close(self) -> None:
        """Stop and join the helpers."""
        if self._closed:
            return
        self._closed = True
        for _ in self._helpers:
            self._go.release()
        for helper in self._helpers:
            helper.join()

    def _drain(self, worker: int) -> None:
        task = self._task
        assert task is not None
        for chunk in self._chunks:
            task(chunk, worker)

    def _serve(self, worker: int) -> None:
        while True:
            self._go.acquire()
            if self._closed:
                return
            try:
                self._drain(worker)
            except BaseException as error:  # handed to the caller by run()
                self._errors.append(error)
            finally:
                self._done.release()


class MjBatch:
    """``num_envs`` simulations of ``model``, saved as :data:`STATE` rows and stepped on ``num_threads``
    threads (one scratch ``MjData`` each).

    After :meth:`reset` or :meth:`step`, :attr:`qpos` ``[B, nq]`` and :attr:`qvel` ``[B, nv]`` (views of
    the state rows) and :attr:`xpos` ``[B, nbody, 3]`` describe every simulation; they change with the
    next call. ``xpos`` is what MuJoCo leaves in ``data.xpos``: after ``mj_step`` the kinematics of the
    start of the last substep, exactly what a gymnasium environment reads.
    """

    def __init__(
        self, model: mujoco.MjModel, num_envs: int, num_threads: int | None = None, native: bool = True
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        num_threads = default_num_threads() if num_threads is None else num_threads
        if num_threads < 1:
            raise ValueError(f"num_threads must be at least 1, got {num_threads}")
        self.model = model
        self.num_envs = num_envs
        self.num_threads = num_threads
        self._state = np.zeros((num_envs, mujoco.mj_stateSize(model, STATE.value)))
        self._ctrl = state_slice(model, mujoco.mjtState.mjSTATE_CTRL)
        self.qpos: NDArray[np.float64] = self._state[:, state_slice(model, mujoco.mjtState.mjSTATE_QPOS)]
        self.qvel: NDArray[np.float64] = self._state[:, state_slice(model, mujoco.mjtState.mjSTATE_QVEL)]
        self.xpos: NDArray[np.float64] = np.zeros((num_envs, model.nbody, 3))
        self._native = native_step.load() if native else None
        per_thread, min_envs = (
            (NATIVE_CHUNKS_PER_THREAD, NATIVE_MIN_ENVS_PER_CHUNK)
            if self._native is not None
            else (CHUNKS_PER_THREAD, MIN_ENVS_PER_CHUNK)
        )
        num_chunks = max(1, min(per_thread * num_threads, num_envs // min_envs))
        bounds = np.linspace(0, num_envs, num_chunks + 1).round().astype(int)
        self._chunks = [(int(lo), int(hi)) for lo, hi in itertools.pairwise(bounds)]
        parallel = num_threads > 1 and num_chunks > 1
        self._scratch = [mujoco.MjData(model) for _ in range(num_threads if parallel else 1)]
        self._runner = ChunkRunner(num_threads - 1) if parallel else None
        if self._runner is not None:
            weakref.finalize(self, self._runner.close)
        self._nstep = 1

    @property
    def native(self) -> bool:
        """Whether slices are stepped by the C loop (:mod:`maml.envs.native_step`) rather than in Python."""
        return self._native is not None

    def reset(self, qpos: NDArray[np.float64], qvel: NDArray[np.float64]) -> None:
        """Reset every simulation (``mj_resetData``) to ``qpos [B, nq]``, ``qvel [B, nv]``, then
        ``mj_forward`` (as gymnasium's ``MujocoEnv.set_state``)."""
        m, d = self.model, self._scratch[0]
        _check_shape("qpos", qpos, (self.num_envs, m.nq))
        _check_shape("qvel", qvel, (self.num_envs, m.nv))
        for b in range(self.num_envs):
            mujoco.mj_resetData(m, d)
            d.qpos[:] = qpos[b]
            d.qvel[:] = qvel[b]
            mujoco.mj_forward(m, d)
            mujoco.mj_getState(m, d, self._state[b], STATE.value)
            self.xpos[b] = d.xpos

    def step(self, ctrl: NDArray[np.float64], nstep: int) -> None:
        """Hold ``ctrl [B, nu]`` for ``nstep`` physics steps in every simulation."""
        _check_shape("ctrl", ctrl, (self.num_envs, self.model.nu))
        if nstep < 1:
            raise ValueError(f"nstep must be at least 1, got {nstep}")
        self._state[:, self._ctrl] = ctrl
        self._nstep = nstep
        if self._runner is None:
            for chunk in range(len(self._chunks)):
                self._step_chunk(chunk, 0)
        else:
            self._runner.run(self._step_chunk, len(self._chunks))

    def close(self) -> None:
        """Stop the helper threads."""
        if self._runner is not None:
            self._runner.close()

    def _step_chunk(self, chunk: int, worker: int) -> None:
        lo, hi = self._chunks[chunk]
        m, d, nstep, spec = self.model, self._scratch[worker], self._nstep, STATE.value
        if self._native is not None:
            self._native.step_rows(m, d, self._state[lo:hi], self.xpos[lo:hi], spec, nstep)
            return
        set_state, get_state, step = mujoco.mj_setState, mujoco.mj_getState, mujoco.mj_step
        xpos, rows = d.xpos, self._state[lo:hi]
        for row, out in zip(rows, self.xpos[lo:hi], strict=True):
            set_state(m, d, row, spec)
            step(m, d, nstep)
            get_state(m, d, row, spec)
            out[:] = xpos


def _check_shape(name: str, array: NDArray[np.float64], shape: tuple[int, ...]) -> None:
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
