"""The C stepping loop of :mod:`maml.envs.mujoco_batch`, compiled on first use and loaded with ctypes.

Stepping a slice of simulations from Python costs four binding calls per simulation and a GIL handoff at
every ``mj_step`` (the binding releases the GIL inside it): on 2 cores the threads spent about as long
queueing for the GIL as in MuJoCo. ``native_step.c`` runs the same MuJoCo calls in the same order for a
whole slice inside one ctypes call, which releases the GIL once. The results are bit for bit the same
(``tests/test_half_cheetah_dir.py`` checks both loops against each other and against gymnasium).

The shared library is built with the system C compiler (``$CC``, else ``cc``) against the headers and the
``libmujoco`` that the installed ``mujoco`` wheel ships, into ``<cache>/native/`` (see :mod:`maml.cache`),
keyed by the source, MuJoCo's version and the library's path; later processes load it from there. Where
no compiler is found or the build fails, :func:`load` warns once and returns ``None``, and the batch steps
in Python: slower, same numbers. ``MAML_BENCH_NATIVE=0`` turns the C loop off.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import mujoco
import numpy as np

from maml import native_build

SOURCE = Path(__file__).with_name("native_step.c")
SWITCH_ENV_VAR = native_build.SWITCH_ENV_VAR
"""Set to ``0`` to step in Python."""
_ARGTYPES = [
    ctypes.c_void_p,  # const mjModel*
    ctypes.c_void_p,  # mjData* (scratch)
    ctypes.c_void_p,  # mjtNum* states, [nrows, nstate]
    ctypes.c_int,  # nrows
    ctypes.c_int,  # nstate
    ctypes.c_uint,  # state spec
    ctypes.c_int,  # nstep
    ctypes.c_void_p,  # mjtNum* xpos out, [nrows, nbody, 3]
]

_SAWYER_ARGTYPES = [
    ctypes.c_void_p,  # const mjModel*
    ctypes.c_void_p,  # mjData*
    *[ctypes.c_double] * 4,  # the action
    ctypes.c_void_p,  # const double* mocap_low [3]
    ctypes.c_void_p,  # const double* mocap_high [3]
    ctypes.c_double,  # action_scale
    ctypes.c_int,  # nstep (frame_skip)
    ctypes.c_int,  # forward
]


class NativeStep:
    """``step_rows(model, data, states, xpos, nstep)``: the C loop over ``states [n, nstate]`` rows."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._library = library
        self._step_rows = library.maml_bench_step_rows
        self._step_rows.argtypes = _ARGTYPES
        self._step_rows.restype = None
        self.sawyer_advance = library.maml_bench_sawyer_advance
        """``(model, data, a0, a1, a2, a3, low, high, scale, nstep, forward) → 0`` (1: the action was not
        finite or the model not a Sawyer arm, nothing written): Meta-World's ``SawyerXYZEnv.step`` from its
        action to its ``mj_forward`` (``native_step.c``; :func:`maml.envs.metaworld_fast.step` calls it)."""
        self.sawyer_advance.argtypes = _SAWYER_ARGTYPES
        self.sawyer_advance.restype = ctypes.c_int

    def step_rows(
        self,
        model: mujoco.MjModel,
        data: mujoco.MjData,
        states: np.ndarray,
        xpos: np.ndarray,
        spec: int,
        nstep: int,
    ) -> None:
        """Step every row of ``states`` (C-contiguous float64, written back) ``nstep`` times; ``xpos
        [n, nbody, 3]`` receives each row's ``data.xpos`` afterwards."""
        if not (states.flags.c_contiguous and xpos.flags.c_contiguous):
            raise ValueError("states and xpos must be C-contiguous")
        if states.dtype != np.float64 or xpos.dtype != np.float64:
            raise ValueError("states and xpos must be float64")
        width = mujoco.mj_stateSize(model, spec)
        if states.ndim != 2 or states.shape[1] != width:
            raise ValueError(f"states must have shape [rows, {width}] (mj_stateSize), got {states.shape}")
        if xpos.shape != (states.shape[0], model.nbody, 3):
            raise ValueError(f"xpos must have shape {(states.shape[0], model.nbody, 3)}, got {xpos.shape}")
        self._step_rows(
            model._address,
            data._address,
            states.ctypes.data,
            states.shape[0],
            states.shape[1],
            spec,
            nstep,
            xpos.ctypes.data,
        )


def _mujoco_files() -> tuple[Path, Path]:
    """The ``include`` folder and the ``libmujoco`` shared library of the installed wheel."""
    package = Path(mujoco.__file__).parent
    libraries = sorted(package.glob("libmujoco.so*")) or sorted(package.glob("libmujoco*.dylib"))
    if not libraries or not (package / "include" / "mujoco" / "mujoco.h").is_file():
        raise OSError(f"the mujoco package at {package} ships no libmujoco or headers")
    return package / "include", libraries[0]


def library_path() -> Path:
    """Where the compiled loop for this source, MuJoCo version and library lives in the cache."""
    _, library = _mujoco_files()
    return native_build.library_path(
        f"native_step-mujoco{mujoco.__version__}", [SOURCE], _flags(), f"{mujoco.__version__}|{library}"
    )


def _flags() -> list[str]:
    include, _ = _mujoco_files()
    return ["-O2", "-ffp-contract=off", f"-I{include}"]


def _libraries() -> list[str]:
    _, library = _mujoco_files()
    return [str(library), f"-Wl,-rpath,{library.parent}"]


def build(target: Path) -> None:
    """Compile :data:`SOURCE` into ``target`` (written atomically: a half-built library is never loaded)."""
    native_build.build(target, SOURCE, _flags(), _libraries())


@functools.cache
def load() -> NativeStep | None:
    """The C loop (built on first use), or ``None`` when it is switched off or cannot be built or loaded."""

    def build_and_load() -> NativeStep:
        library = native_build.build_and_load(library_path(), SOURCE, _flags(), _libraries())
        built_for = library.maml_bench_native_abi()
        if built_for != mujoco.mj_version():
            raise OSError(f"built against MuJoCo {built_for}, running {mujoco.mj_version()}")
        return NativeStep(library)

    instead = "MuJoCo simulations step in Python (slower, same results): the C loop is unavailable"
    return native_build.load_or_warn(instead, build_and_load)
