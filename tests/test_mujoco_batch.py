"""The batch of MuJoCo simulations (maml/envs/mujoco_batch.py) and its C stepping loop
(maml/envs/native_step.py), on a one-joint arm: how many threads it runs on and starts, one physics step,
the arrays the C loop refuses. (tests/test_half_cheetah_dir.py checks the physics against gymnasium.)"""

from __future__ import annotations

import os
import shutil
import threading

import mujoco
import numpy as np
import pytest

from maml.envs import mujoco_batch, native_step
from maml.envs.mujoco_batch import ChunkRunner, MjBatch, default_num_threads

ARM = """
<mujoco>
  <worldbody>
    <body name="arm" pos="0 0 1">
      <joint name="hinge" type="hinge" axis="0 1 0" damping="0.1"/>
      <geom type="capsule" fromto="0 0 0 0.5 0 0" size="0.05"/>
    </body>
  </worldbody>
  <actuator><motor joint="hinge" gear="2"/></actuator>
</mujoco>
"""
HAS_COMPILER = shutil.which("cc") is not None or shutil.which("gcc") is not None


@pytest.fixture(scope="module")
def arm() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_string(ARM)


def _helpers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("mj-batch-")}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: nothing to narrow")
def test_default_thread_count_is_the_cores_this_thread_may_use(arm: mujoco.MjModel) -> None:
    """By default a batch runs on as many threads as the calling thread has cores (its own affinity, not
    another process's); a thread count given is kept."""
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})  # this thread only, restored below
    try:
        assert default_num_threads() == 1
        batches = [MjBatch(arm, 64, native=False)]
    finally:
        os.sched_setaffinity(0, cores)
    assert default_num_threads() == len(cores)
    batches += [MjBatch(arm, 64, native=False), MjBatch(arm, 64, num_threads=len(cores) + 1, native=False)]
    assert [batch.num_threads for batch in batches] == [1, len(cores), len(cores) + 1]
    for batch in batches:
        batch.close()


def test_a_batch_starts_helper_threads_only_when_it_splits(arm: mujoco.MjModel) -> None:
    """A batch of ``num_threads`` threads that splits into at least two slices starts ``num_threads − 1``
    helpers (the caller is the last thread); one slice or one thread starts none. Helpers are daemon threads,
    so that a process still holding a batch exits, and ``close`` stops them."""
    smallest = 2 * mujoco_batch.MIN_ENVS_PER_CHUNK  # the Python loop's smallest batch of two slices
    before = _helpers()
    for num_envs, num_threads, expected in [
        (smallest, 2, 1),
        (smallest - 1, 2, 0),
        (4 * smallest, 3, 2),
        (4 * smallest, 1, 0),
    ]:
        batch = MjBatch(arm, num_envs, num_threads, native=False)
        started = _helpers() - before
        assert len(started) == expected, (num_envs, num_threads)
        assert all(helper.daemon and helper.is_alive() for helper in started)
        batch.close()
        assert not any(helper.is_alive() for helper in started)


def test_chunk_runner_runs_on_the_caller_and_every_helper_at_once() -> None:
    """``ChunkRunner(2)``: three chunks that each wait for the other two (a barrier of three) all run, at
    the same time, on workers 0 (the caller), 1 and 2."""
    runner = ChunkRunner(num_helpers=2)
    barrier = threading.Barrier(3, timeout=10.0)
    workers: dict[int, int] = {}

    def meet(chunk: int, worker: int) -> None:
        workers[chunk] = worker
        barrier.wait()

    try:
        runner.run(meet, 3)
    finally:
        runner.close()
    assert sorted(workers) == [0, 1, 2] and sorted(workers.values()) == [0, 1, 2]


@pytest.mark.parametrize(
    "native",
    [
        pytest.param(False, id="python-loop"),
        pytest.param(True, id="c-loop", marks=pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler")),
    ],
)
def test_a_single_physics_step(arm: mujoco.MjModel, native: bool) -> None:
    """``step(ctrl, 1)`` is one ``mj_step`` of each simulation, as a persistent ``MjData`` takes it, bit for
    bit; ``nstep`` below one is refused."""
    qpos, qvel, ctrl = np.array([[0.3], [-0.2]]), np.array([[0.0], [1.5]]), np.array([[0.5], [-0.8]])
    with_threads = 2 if native else 1
    batch = MjBatch(arm, 2, num_threads=with_threads, native=native)
    assert batch.native == native
    batch.reset(qpos, qvel)
    batch.step(ctrl, 1)
    for b in range(2):
        data = mujoco.MjData(arm)
        data.qpos[:], data.qvel[:] = qpos[b], qvel[b]
        mujoco.mj_forward(arm, data)
        data.ctrl[:] = ctrl[b]
        mujoco.mj_step(arm, data)
        np.testing.assert_array_equal(batch.qpos[b], data.qpos)
        np.testing.assert_array_equal(batch.qvel[b], data.qvel)
        np.testing.assert_array_equal(batch.xpos[b], data.xpos)
    with pytest.raises(ValueError, match="nstep must be at least 1"):
        batch.step(ctrl, 0)
    batch.close()


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler")
def test_the_c_loop_refuses_arrays_it_cannot_step(arm: mujoco.MjModel) -> None:
    """The C loop reads ``states`` and writes ``xpos`` as packed float64 rows: a strided or float32 array,
    either of the two, is refused before the call. (Each bad array lies in memory large enough for the
    rows the C code would touch, so that a missing check fails this test rather than the process.) So is a
    states array whose rows are not ``mj_stateSize`` long: the C code takes the row length from it."""
    loop = native_step.load()
    assert loop is not None, "the C loop failed to build (see the warning)"
    spec, data, rows = mujoco_batch.STATE.value, mujoco.MjData(arm), 4
    mujoco.mj_forward(arm, data)
    state = np.empty(mujoco.mj_stateSize(arm, spec))
    mujoco.mj_getState(arm, data, state, spec)
    states, xpos = np.tile(state, (rows, 1)), np.zeros((rows, arm.nbody, 3))
    strided_states = np.tile(state, (2 * rows, 1))[::2]
    strided_xpos = np.zeros((2 * rows, arm.nbody, 3))[::2]
    single_states = np.zeros((2 * rows, states.shape[1]), dtype=np.float32)[:rows]
    single_xpos = np.zeros((2 * rows, arm.nbody, 3), dtype=np.float32)[:rows]
    for bad_states, bad_xpos, match in [
        (strided_states, xpos, "C-contiguous"),
        (states, strided_xpos, "C-contiguous"),
        (single_states, xpos, "float64"),
        (states, single_xpos, "float64"),
        (states, np.zeros((rows, arm.nbody + 1, 3)), "shape"),
        (np.tile(np.append(state, 0.0), (rows, 1)), xpos, r"states must have shape \[rows, \d+\]"),
        (state, xpos[:1], r"states must have shape \[rows, \d+\]"),
    ]:
        with pytest.raises(ValueError, match=match):
            loop.step_rows(arm, data, bad_states, bad_xpos, spec, 1)
    loop.step_rows(arm, data, states, xpos, spec, 1)
    mujoco.mj_step(arm, data)
    np.testing.assert_array_equal(xpos, np.broadcast_to(data.xpos, xpos.shape))
