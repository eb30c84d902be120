"""Faster Meta-World v3 steps, bit-identical to stock Meta-World 3.1.1: per-instance replacements of generic
:class:`~metaworld.sawyer_xyz_env.SawyerXYZEnv` code.

:func:`install_fast_paths` binds, on one environment instance (``types.MethodType``; the class and the
metaworld package are left alone),
replacements of methods that every v3 class inherits, each one only where the instance's class does not
override the method (checked at install time). Each repeats the stock floating-point operations in the same
order, so that observations, rewards and every ``info`` value are the stock ones to the bit
(tests/test_metaworld_fast.py compares whole episodes of all 50 v3 classes with a stock instance):

- ``step``: ``SawyerXYZEnv.step`` without the per-step overheads. From the action to ``mj_forward`` it is one
  C call where the C library loads (``native``, default; ``maml_bench_sawyer_advance`` in
  ``native_step.c``, built with ``-ffp-contract=off``): ``set_xyz_action``'s clip / scale / add / clip on
  doubles with numpy's ``clip`` semantics, the mocap quaternion, the two gripper controls, ``frame_skip``
  ``mj_step`` calls, ``mj_forward``; a float64 ``[4]`` finite action only (the C function checks
  finiteness and writes nothing otherwise), anything else takes the same steps in Python (gymnasium's
  ``do_simulation`` without its ``np.array(ctrl).shape`` check). Left out, as computing nothing that is
  read: ``do_simulation``'s last call, ``mj_rnePostConstraint`` (its outputs ``cacc``, ``cfrc_int``,
  ``cfrc_ext`` are read by no Meta-World code and by no later MuJoCo call, which recomputes them where a
  sensor needs them: the only arrays of ``data`` that differ from stock after a step, tests say), and the
  target sites' ``site_xpos`` writes, which the ``mj_forward`` after them overwrites (their property is
  still read, for its checks). The observation clip is the ``clip`` ufunc in place (what ``np.clip``
  calls) instead of ``np.clip`` + the returned copy. Otherwise the same MuJoCo calls in the same order.
- ``set_xyz_action``: the clip / scale / add / clip of the mocap position on Python floats with numpy's
  ``clip`` semantics (``min(max(x, lo), hi)``, ``x > lo ? x : lo``); falls back to the stock method for any
  action that is not a finite float64 array or a model with more than one mocap body.
- ``_get_obs`` and ``_get_curr_obs_combined_no_goal``: the 39 (18) values written into one array instead
  of nested ``np.hstack`` / ``np.split`` (``array_split``); hand and finger positions read by cached body
  ids; the gripper opening ``math.sqrt(d·d)`` with the same ``ndarray.dot`` that ``np.linalg.norm`` uses
  (and a square root rounded as ``np.sqrt`` rounds it: IEEE).
- ``_get_quat_objects`` (the 22 classes that convert an object's rotation matrix with scipy's
  ``Rotation.from_matrix(...).as_quat()``, table :data:`ROTATION_MATRIX_QUATS`): :func:`quat_from_matrix`,
  scipy 1.17's Cython ``_from_matrix_orthogonal`` on Python floats (same trace, same ``argmax`` branch with
  the first maximum winning, same formulas, same normalisation ``sqrt((x²+y²+z²)+w²)`` then four divisions).
  scipy first checks ``det > 0`` and orthogonality (``isclose(M Mᵀ, I, atol=1e-12)``, rtol 1e-5) and would
  orthogonalise by SVD a matrix that fails; here the Gramian is computed on Python floats and only a matrix
  that passes with a margin (1e-14, far above the rounding of a 3-term dot product) takes the fast formula;
  anything else (never seen with MuJoCo's matrices) goes through scipy itself.
- ``_gripper_caging_reward`` (bound where the class does not override it: 44 classes, 18 of which call it):
  the same arithmetic on scalars; ``reward_utils.tolerance``'s ``long_tail`` sigmoid ``1 / ((d·3)² + 1)``
  with numpy float64 scalars (the square is numpy's scalar power, as in the stock code), norms as
  ``sqrt(v.dot(v))`` like ``np.linalg.norm``; ``hamacher_product`` is Meta-World's own function.
- ``get_body_com`` and ``_get_site_pos`` (called by the classes' rewards) and ``_set_pos_site``: the same
  arrays read by cached name → id lookups (``mj_name2id`` once per name and instance; an unknown name goes
  through the stock code, which raises as before).
- ``touching_object`` (only with ``contacts=True``): :func:`touching_object_cached`, Meta-World's two scans
  of ``data.contact`` as one loop over the contacts' geom pairs with cached pad ids (~3 µs a call against
  ~17 µs for a vectorised scan over ``data.contact.geom``, a few contacts a
  step); same value and type as the stock method (Meta-World returns ``False`` or a numpy bool).

- ``reset`` and ``_reset_hand`` (``resets=True``, the default; all 50 classes), in a base class of the
  instance's class placed just above ``SawyerXYZEnv`` (:func:`fast_class`): a class's own ``_reset_hand``
  (faucet-open, faucet-close, window-close: ``super()._reset_hand(steps=steps)`` then one attribute,
  :func:`hand_reset_extends_stock`) runs as before, its ``super()`` call reaching the fast one. Stock
  ``reset`` runs ``reset_model`` twice, ``mj_resetData`` between the two, and each call starts with
  ``_reset_hand``: 50 steps (250 ``mj_step``) holding the mocap at ``hand_init_pos``,
  nearly all of a reset's 5.3–10.0 ms (mean 6.7 ms over the 50 classes, quiet machine). The first call's
  steps start from wherever the last episode ended and ``mj_resetData`` throws their state away: they are
  skipped (``init_tcp`` is still set: some ``reset_model`` reads it). The second call's steps start from
  the freshly reset state, so their result is a function of the model and that state: the first run of
  each (``hand_init_pos``, body positions, integration state) stores a copy of ``data``
  (:class:`HandResets`, a few per instance, least recently used dropped first) and later runs copy it back
  with MuJoCo's ``mj_copyData`` (every array of ``data``: contacts, constraint rows, warm start, solver
  statistics). Body positions are the one model array that v3 ``reset_model`` calls change and that
  enters the dynamics (they also move sites, which carry no force in models without tendons or site
  actuators, the only ones this is installed on). A reset then costs 0.05–0.25 ms (×37–×111;
  ``python -m maml.envs.metaworld_fast --resets``). What the first call computes from its state (stock:
  after the hand reset; here: before it) the second call computes again, tests say, with one exception
  that nothing reads: push and push-back place their goal site from ``fix_extreme_obj_pos`` (the object's
  height after the hand reset) in the first call, and that marker's ``data.site_xpos`` keeps the value
  until the first step recomputes it from the second call's placement. Tests compare, after each reset of
  5 consecutive episodes with new and repeated goals on one instance, every array of ``data`` (but the
  island and sparse-Jacobian scratch arrays that MuJoCo does not write in these models), every contact,
  every model array and every attribute of the instance with a stock instance's, for all 50 classes.
- the class's own reward methods (``rewards=True``, the default; :mod:`maml.envs.metaworld_rewards`): its
  ``compute_reward``, ``reset_model`` and the like, relinked so that their ``reward_utils.tolerance`` and
  ``np.linalg.norm`` calls reach scalar fast paths (same code objects, other globals); bound last, on the
  names not already replaced above.

- ``tcp_center`` and ``touching_main_object`` (properties, which live on the class): the instance's
  ``__class__`` becomes a subclass of its class made for it (:func:`fast_class`, same name and module, these
  two properties only; the class itself is left alone): the finger sites by cached ids, and the main
  object's geom id looked up once per instance (only where the class's ``_get_id_main_object`` is a lookup
  of a literal name, :func:`main_object_is_constant`: all 50 classes).
- every function bound above is a copy per class (:func:`for_class`: the same bytecode in its own code
  object), so that CPython's in-place specialisation of attribute reads sees one type per copy when a
  worker steps instances of many classes in turn.

Not replaced: ``_get_pos_objects``' named lookups, ``mj_step`` and ``mj_forward``.

Steps: nothing found that could not be made bit-identical; the only values not computed by the stock code's
own operations are scipy's orthogonality and determinant checks, which decide a branch, never a value
(above). Resets: every output and every state equal, but for one marker position until the first step
(push and push-back, above).

The pool (:mod:`maml.envs.metaworld_pool`, ``fast_step``, on by default) installs them, contacts included (and
resets, the default).

Measured (ms per step, goal 0 of each class, 200 uniform random actions in [−1, 1] after a reset, best of 5
rounds, the variants interleaved in one process; 2026-12-04 22:14 UTC, AMD EPYC, beside one training run
and one mutation run). A: stock Meta-World; B: all fast paths but the relinked rewards; C: all of them (the
pool's default); D: all but the C step (``native=False``)::

    nice -n 10 .venv/bin/python -m maml.envs.metaworld_fast            # all 50 classes (~2 min)
    nice -n 10 .venv/bin/python -m maml.envs.metaworld_fast push-v3 reach-v3

    class                 A      B      C      D     A/C
    push-v3             0.585  0.127  0.116  0.119  ×5.06
    pick-place-v3       0.652  0.147  0.122  0.127  ×5.35
    peg-insert-side-v3  0.366  0.134  0.125  0.125  ×2.93
    reach-v3            0.313  0.108  0.097  0.101  ×3.22
    door-open-v3        0.312  0.144  0.109  0.113  ×2.86
    basketball-v3       0.242  0.126  0.115  0.117  ×2.10
    button-press-v3     0.186  0.106  0.092  0.094  ×2.03
    box-close-v3        0.251  0.192  0.175  0.178  ×1.43 (slowest gain: its own reward code)
    mean of 50 classes  0.351  0.134  0.117  0.120  ×3.00 (per class ×1.43 … ×5.43; B/C ×1.15, D/C ×1.02)

The classes with a contact test and a scipy quaternion gain most (×3–5.4: stock's contact scan walks
``data.contact`` in Python); the rest ×1.4–2.9, their remaining Python being their own ``compute_reward``.
One class stepped alone gains little from the C step (D/C ×1.02); a worker stepping instances of many classes
in turn gains more (results/bench/README.md, "A leaner Meta-World step"). On 2026-12-03 (another host,
before the fast reset, the relinked rewards and the C step) the same command read A 0.400, C 0.210 ms.
"""

from __future__ import annotations

import ast
import collections
import copy
import ctypes
import functools
import inspect
import math
import re
import textwrap
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
from metaworld.sawyer_xyz_env import SawyerXYZEnv
from metaworld.utils import reward_utils
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from maml.envs import metaworld_rewards, native_step

_clip_ufunc = np._core.umath.clip
"""The ufunc ``np.clip`` calls (numpy/_core/_methods.py ``_clip``)."""
_hamacher = reward_utils.hamacher_product
_MOCAP_QUAT = np.array([1.0, 0.0, 1.0, 0.0])
ORTHOGONALITY_MARGIN = 1e-14
"""How far inside scipy's orthogonality tolerances a Gramian computed here must be (fast formula)."""

_OBJ = {"body": mujoco.mjtObj.mjOBJ_BODY, "geom": mujoco.mjtObj.mjOBJ_GEOM, "site": mujoco.mjtObj.mjOBJ_SITE}
_XMAT = {"body": "xmat", "geom": "geom_xmat", "site": "site_xmat"}

ROTATION_MATRIX_QUATS: dict[str, tuple[str, str, int]] = {
    # class name → (element kind, element name, zeros appended): the class's _get_quat_objects returns
    # Rotation.from_matrix(data.<kind>(<name>).xmat.reshape(3, 3)).as_quat() (+ that many zeros)
    "SawyerCoffeePullEnvV3": ("geom", "mug", 0),
    "SawyerCoffeePushEnvV3": ("geom", "mug", 0),
    "SawyerDoorCloseEnvV3": ("geom", "handle", 0),
    "SawyerDoorEnvV3": ("geom", "handle", 0),
    "SawyerLeverPullEnvV3": ("geom", "objGeom", 0),
    "SawyerPegInsertionSideEnvV3": ("site", "pegGrasp", 0),
    "SawyerPickPlaceEnvV3": ("geom", "objGeom", 0),
    "SawyerPickPlaceWallEnvV3": ("geom", "objGeom", 0),
    "SawyerPlateSlideBackSideEnvV3": ("geom", "puck", 0),
    "SawyerPlateSlideBackEnvV3": ("geom", "puck", 0),
    "SawyerPlateSlideSideEnvV3": ("geom", "puck", 0),
    "SawyerPlateSlideEnvV3": ("geom", "puck", 0),
    "SawyerPushBackEnvV3": ("geom", "objGeom", 0),
    "SawyerPushEnvV3": ("geom", "objGeom", 0),
    "SawyerPushWallEnvV3": ("geom", "objGeom", 0),
    "SawyerReachEnvV3": ("geom", "objGeom", 0),
    "SawyerReachWallEnvV3": ("geom", "objGeom", 0),
    "SawyerShelfPlaceEnvV3": ("geom", "objGeom", 0),
    "SawyerSoccerEnvV3": ("body", "soccer_ball", 0),
    "SawyerStickPullEnvV3": ("body", "stick", 4),
    "SawyerStickPushEnvV3": ("body", "stick", 4),
    "SawyerSweepIntoGoalEnvV3": ("geom", "objGeom", 0),
}
"""Meta-World 3.1.1 classes whose ``_get_quat_objects`` converts a rotation matrix with scipy (keyed by the
name of the class that defines the method, checked against its module: see :func:`_quat_spec`)."""


# --- quaternions ------------------------------------------------------------------------------------------
def quat_from_matrix(m: NDArray[np.float64]) -> NDArray[np.float64]:
    """``Rotation.from_matrix(m.reshape(3, 3)).as_quat()`` for a rotation matrix given as 9 row-major floats,
    to the bit (scipy 1.17's Cython ``from_matrix`` then ``_from_matrix_orthogonal``, see the module doc);
    a matrix not clearly orthogonal with a positive determinant goes through scipy itself."""
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.tolist()
    # Gramian M Mᵀ: scipy accepts |g_ii − 1| ≤ 1e-12 + 1e-5 and |g_ij| ≤ 1e-12 (np.isclose, rtol 1e-5)
    tol_off = 1e-12 - ORTHOGONALITY_MARGIN
    tol_diag = 1e-12 + 1e-5 - ORTHOGONALITY_MARGIN
    if not (
        abs(m00 * m00 + m01 * m01 + m02 * m02 - 1.0) <= tol_diag
        and abs(m10 * m10 + m11 * m11 + m12 * m12 - 1.0) <= tol_diag
        and abs(m20 * m20 + m21 * m21 + m22 * m22 - 1.0) <= tol_diag
        and abs(m00 * m10 + m01 * m11 + m02 * m12) <= tol_off
        and abs(m00 * m20 + m01 * m21 + m02 * m22) <= tol_off
        and abs(m10 * m20 + m11 * m21 + m12 * m22) <= tol_off
        # orthogonal, so det = ±1 (± ~1e-5): positive for sure
        and m00 * (m11 * m22 - m12 * m21) - m01 * (m10 * m22 - m12 * m20) + m02 * (m10 * m21 - m11 * m20)
        > 0.5
    ):
        return Rotation.from_matrix(np.asarray(m, dtype=np.float64).reshape(3, 3)).as_quat()
    matrix = ((m00, m01, m02), (m10, m11, m12), (m20, m21, m22))
    trace = m00 + m11 + m22
    choice, best = 0, m00  # _argmax4: the first maximum wins
    if m11 > best:
        choice, best = 1, m11
    if m22 > best:
        choice, best = 2, m22
    if trace > best:
        choice = 3
    if choice != 3:
        i = choice
        j = (i + 1) % 3
        k = (j + 1) % 3
        q = [0.0, 0.0, 0.0, 0.0]
        q[i] = 1 - trace + 2 * matrix[i][i]
        q[j] = matrix[j][i] + matrix[i][j]
        q[k] = matrix[k][i] + matrix[i][k]
        q[3] = matrix[k][j] - matrix[j][k]
        x, y, z, w = q
    else:
        x = m21 - m12
        y = m02 - m20
        z = m10 - m01
        w = 1 + trace
    norm = math.sqrt(x * x + y * y + z * z + w * w)  # _normalize4: sqrt(_dot3(q, q) + q3*q3)
    return np.array([x / norm, y / norm, z / norm, w / norm])


def _quat_spec(env: SawyerXYZEnv) -> tuple[str, str, int] | None:
    """The :data:`ROTATION_MATRIX_QUATS` entry of the class defining the instance's ``_get_quat_objects``."""
    for klass in type(env).__mro__:
        if "_get_quat_objects" in vars(klass):
            if klass.__module__.startswith("metaworld.envs.") and klass.__name__ in ROTATION_MATRIX_QUATS:
                return ROTATION_MATRIX_QUATS[klass.__name__]
            return None
    return None


# --- name → id caches ---------------------------------------------------------------------------------------
def _name_id(env: SawyerXYZEnv, kind: str, name: str) -> int:
    """``mj_name2id`` of a body, geom or site of the instance's model, once per name (−1: unknown)."""
    cache = env._fast_ids[kind]
    try:
        return cache[name]
    except KeyError:
        cache[name] = index = mujoco.mj_name2id(env.model, _OBJ[kind], name)
        return index


# --- fast methods (bound to one instance by install_fast_paths) -------------------------------------------
def get_body_com(self: SawyerXYZEnv, body_name: str) -> NDArray[np.float64]:
    """``data.body(name).xpos`` (a view of ``data.xpos``, as the stock method returns) by a cached id."""
    index = _name_id(self, "body", body_name)
    if index < 0:
        return MujocoEnv.get_body_com(self, body_name)
    return self.data.xpos[index]


def _get_site_pos(self: SawyerXYZEnv, site_name: str) -> NDArray[np.float64]:
    """``data.site(name).xpos.copy()`` by a cached id."""
    index = _name_id(self, "site", site_name)
    if index < 0:
        return SawyerXYZEnv._get_site_pos(self, site_name)
    return self.data.site_xpos[index].copy()


def _set_pos_site(self: SawyerXYZEnv, name: str, pos: NDArray[Any]) -> None:
    """``data.site(name).xpos = pos[:3]`` by a cached id."""
    assert isinstance(pos, np.ndarray)
    assert pos.ndim == 1
    index = _name_id(self, "site", name)
    if index < 0 or pos.shape[0] < 3:
        SawyerXYZEnv._set_pos_site(self, name, pos)
        return
    self.data.site_xpos[index] = pos[:3]


def set_xyz_action(self: SawyerXYZEnv, action: NDArray[Any]) -> None:
    """``SawyerXYZEnv.set_xyz_action`` on Python floats (finite float64 actions, one mocap body, a float
    ``action_scale``)."""
    data = self.data
    if (
        type(action) is not np.ndarray
        or action.dtype != np.float64
        or action.shape != (3,)
        or data.mocap_pos.shape[0] != 1
        or type(self.action_scale) is not float  # e.g. a scale per axis: numpy's broadcasting
    ):
        SawyerXYZEnv.set_xyz_action(self, action)
        return
    a0, a1, a2 = action.tolist()
    if not (math.isfinite(a0) and math.isfinite(a1) and math.isfinite(a2)):
        SawyerXYZEnv.set_xyz_action(self, action)
        return
    # np.clip(action, -1, 1): min(max(x, lo), hi) with max(a, b) = a > b ? a : b, min(a, b) = a < b ? a : b
    a0 = a0 if a0 > -1 else -1.0
    a0 = a0 if a0 < 1 else 1.0
    a1 = a1 if a1 > -1 else -1.0
    a1 = a1 if a1 < 1 else 1.0
    a2 = a2 if a2 > -1 else -1.0
    a2 = a2 if a2 < 1 else 1.0
    scale = self.action_scale
    p0, p1, p2 = data.mocap_pos[0].tolist()
    x0 = p0 + a0 * scale
    x1 = p1 + a1 * scale
    x2 = p2 + a2 * scale
    lo0, lo1, lo2 = self.mocap_low.tolist()
    hi0, hi1, hi2 = self.mocap_high.tolist()
    x0 = x0 if (x0 > lo0 or x0 != x0) else lo0
    x0 = x0 if (x0 < hi0 or x0 != x0) else hi0
    x1 = x1 if (x1 > lo1 or x1 != x1) else lo1
    x1 = x1 if (x1 < hi1 or x1 != x1) else hi1
    x2 = x2 if (x2 > lo2 or x2 != x2) else lo2
    x2 = x2 if (x2 < hi2 or x2 != x2) else hi2
    data.mocap_pos[0] = (x0, x1, x2)
    data.mocap_quat[:] = _MOCAP_QUAT


def _get_curr_obs_combined_no_goal(self: SawyerXYZEnv) -> NDArray[np.float64]:
    """The 18 values of the stock method written into one array (same values, same order)."""
    xpos = self.data.xpos
    ids = self._fast_obs_ids  # hand, rightclaw, leftclaw
    obj_pos = self._get_pos_objects()
    obj_quat = self._get_quat_objects()
    n = len(obj_pos)
    nq = len(obj_quat)
    assert n % 3 == 0
    assert nq % 4 == 0
    if n // 3 != nq // 4 or n + nq > self._obs_obj_max_len:
        return SawyerXYZEnv._get_curr_obs_combined_no_goal(self)
    obs = np.zeros(18)
    obs[0:3] = xpos[ids[0]]
    diff = xpos[ids[1]] - xpos[ids[2]]
    # np.linalg.norm of a 1-D float array: np.sqrt(x.dot(x)); math.sqrt rounds as np.sqrt (IEEE)
    apart = math.sqrt(diff.dot(diff)) / 0.1
    # np.clip(apart, 0.0, 1.0) (NaN passes through)
    if apart != apart:
        obs[3] = apart
    else:
        apart = apart if apart > 0.0 else 0.0
        obs[3] = apart if apart < 1.0 else 1.0
    if n == 3:
        obs[4:7] = obj_pos
        obs[7:11] = obj_quat
    else:
        for o in range(n // 3):
            obs[4 + 7 * o : 7 + 7 * o] = obj_pos[3 * o : 3 * o + 3]
            obs[7 + 7 * o : 11 + 7 * o] = obj_quat[4 * o : 4 * o + 4]
    return obs


def _get_obs(self: SawyerXYZEnv) -> NDArray[np.float64]:
    """``SawyerXYZEnv._get_obs`` (frame stacking and goal) without ``np.hstack``."""
    pos_goal = self._get_pos_goal()
    curr_obs = self._get_curr_obs_combined_no_goal()
    prev = self._prev_obs
    if len(curr_obs) != 18 or len(prev) != 18 or len(pos_goal) != 3:
        obs = np.hstack((curr_obs, prev, np.zeros_like(pos_goal) if self._partially_observable else pos_goal))
    else:
        obs = np.empty(39)
        obs[:18] = curr_obs
        obs[18:36] = prev
        if self._partially_observable:
            obs[36:] = 0.0
        else:
            obs[36:] = pos_goal
    self._prev_obs = curr_obs
    return obs


def _long_tail(x: Any, lower: float, upper: float, margin: Any) -> float:
    """``reward_utils.tolerance(x, bounds=(lower, upper), margin=margin, sigmoid="long_tail")`` for a scalar
    ``x`` (numpy or Python float), returned as the stock ``value.item()``: a Python float
    (:func:`maml.envs.metaworld_rewards.tolerance`)."""
    return metaworld_rewards.tolerance(x, (lower, upper), margin, "long_tail")


def _gripper_caging_reward(
    self: SawyerXYZEnv,
    action: NDArray[np.float32],
    obj_pos: NDArray[Any],
    obj_radius: float,
    pad_success_thresh: float,
    object_reach_radius: float,
    xz_thresh: float,
    desired_gripper_effort: float = 1.0,
    high_density: bool = False,
    medium_density: bool = False,
) -> float:
    """``SawyerXYZEnv._gripper_caging_reward`` on scalars (same operations, same order)."""
    obj_init_pos = self.obj_init_pos
    assert obj_init_pos is not None, "`obj_init_pos` must be initialized before calling this function."
    if not (
        type(obj_pos) is np.ndarray
        and obj_pos.dtype == np.float64
        and type(obj_init_pos) is np.ndarray
        and obj_init_pos.dtype == np.float64
        and type(self.init_tcp) is np.ndarray
        and self.init_tcp.dtype == np.float64
    ):
        return SawyerXYZEnv._gripper_caging_reward(
            self, action, obj_pos, obj_radius, pad_success_thresh, object_reach_radius, xz_thresh,
            desired_gripper_effort, high_density, medium_density,
        )  # fmt: skip
    if high_density and medium_density:
        raise ValueError("Can only be either high_density or medium_density")
    data = self.data
    xpos = data.xpos
    left_pad, right_pad, right_tcp, left_tcp = self._fast_caging_ids
    left_y = float(xpos[left_pad, 1])
    right_y = float(xpos[right_pad, 1])
    obj_y = float(obj_pos[1])
    init_y = float(obj_init_pos[1])
    caging_y = _hamacher(
        _long_tail(np.float64(abs(left_y - obj_y)), obj_radius, pad_success_thresh,
                   np.float64(abs(abs(left_y - init_y) - pad_success_thresh))),
        _long_tail(np.float64(abs(right_y - obj_y)), obj_radius, pad_success_thresh,
                   np.float64(abs(abs(right_y - init_y) - pad_success_thresh))),
    )  # fmt: skip

    site_xpos = data.site_xpos
    tcp = (site_xpos[right_tcp] + site_xpos[left_tcp]) / 2.0  # tcp_center
    init_tcp = self.init_tcp
    margin_xz = np.array([obj_init_pos[0] - init_tcp[0], obj_init_pos[2] - init_tcp[2]])
    caging_xz_margin = np.sqrt(margin_xz.dot(margin_xz))
    caging_xz_margin -= xz_thresh
    to_obj_xz = np.array([tcp[0] - obj_pos[0], tcp[2] - obj_pos[2]])
    caging_xz = _long_tail(np.sqrt(to_obj_xz.dot(to_obj_xz)), 0, xz_thresh, caging_xz_margin)

    gripper_closed = min(max(0, action[-1]), desired_gripper_effort) / desired_gripper_effort

    caging = _hamacher(caging_y, float(caging_xz))
    gripping = gripper_closed if caging > 0.97 else 0.0
    caging_and_gripping = _hamacher(caging, gripping)

    if high_density:
        caging_and_gripping = (caging_and_gripping + caging) / 2
    if medium_density:
        to_obj = obj_pos - tcp
        tcp_to_obj = np.sqrt(to_obj.dot(to_obj))
        init = obj_init_pos - init_tcp
        tcp_to_obj_init = np.sqrt(init.dot(init))
        reach_margin = abs(tcp_to_obj_init - object_reach_radius)
        reach = _long_tail(tcp_to_obj, 0, object_reach_radius, reach_margin)
        caging_and_gripping = (caging_and_gripping + float(reach)) / 2

    return caging_and_gripping


def _get_quat_objects(self: SawyerXYZEnv) -> NDArray[np.float64]:
    """The class's ``Rotation.from_matrix(data.<kind>(<name>).xmat.reshape(3, 3)).as_quat()`` (+ zeros) with
    :func:`quat_from_matrix` (the element from :data:`ROTATION_MATRIX_QUATS`, its id cached)."""
    attribute, index, zeros = self._fast_quat
    quat = quat_from_matrix(getattr(self.data, attribute)[index])
    return np.hstack((quat, np.zeros(zeros))) if zeros else quat


def touching_object_cached(self: SawyerXYZEnv, object_geom_id: int) -> bool:
    """``SawyerXYZEnv.touching_object``: the same result (value and type), the contacts scanned in one Python
    loop over ``data.contact.geom`` (a few contacts per step) with the pad geom ids looked up once, each
    pad's forces summed from 0 in contact order as the stock ``sum`` does (``efc_force[efc_address]``, −1
    included)."""
    data = self.data
    if not data.ncon:
        return False  # 0 < 0
    contact = data.contact
    left_id, right_id = self._fast_pad_ids
    left = right = 0
    efc_force = None
    for (geom1, geom2), address in zip(contact.geom.tolist(), contact.efc_address.tolist(), strict=True):
        if geom1 == object_geom_id or geom2 == object_geom_id:
            if efc_force is None:
                efc_force = data.efc_force
            if geom1 == left_id or geom2 == left_id:
                left += efc_force[address]
            if geom1 == right_id or geom2 == right_id:
                right += efc_force[address]
    return left > 0 and right > 0  # Meta-World's 0 < left and 0 < right: the same values and types


@dataclass(frozen=True)
class NativeAdvance:
    """What :func:`step` hands the C step (:meth:`maml.envs.native_step.NativeStep.sawyer_advance`): the
    addresses of the instance's MuJoCo structs and mocap box, and the objects they belong to (a step checks
    that the instance still holds these, else it takes the Python path)."""

    advance: Callable[..., int]
    data: mujoco.MjData
    low: NDArray[np.float64]
    high: NDArray[np.float64]
    model_address: int
    data_address: int
    low_address: int
    high_address: int

    @classmethod
    def of(cls, env: SawyerXYZEnv) -> NativeAdvance | None:
        """For an instance whose mocap box is two 3-float64 C arrays, when the C step can be loaded."""
        native = native_step.load()
        low, high = env.mocap_low, env.mocap_high
        if native is None or not all(
            type(b) is np.ndarray and b.dtype == np.float64 and b.shape == (3,) and b.flags.c_contiguous
            for b in (low, high)
        ):
            return None
        return cls(
            native.sawyer_advance, env.data, low, high,
            env.model._address, env.data._address, low.ctypes.data, high.ctypes.data,
        )  # fmt: skip


def _advance_in_c(self: SawyerXYZEnv, action: Any) -> bool:
    """The C step from the action to ``mj_forward`` (skipped after a simulation exception), when the action
    is a float64 ``[4]`` array, the episode has steps left and the instance still holds what
    :class:`NativeAdvance` points at; ``False``: nothing was done (non-finite action included)."""
    native = self._fast_native
    if (
        native is None
        or type(action) is not np.ndarray
        or action.dtype != np.float64
        or action.shape != (4,)
        or self.curr_path_length >= self.max_path_length
        or self.data is not native.data
        or self.mocap_low is not native.low
        or self.mocap_high is not native.high
        or type(self.action_scale) is not float
    ):
        return False
    a0, a1, a2, a3 = action.tolist()
    forward = not self._did_see_sim_exception
    return not native.advance(
        native.model_address, native.data_address, a0, a1, a2, a3,
        native.low_address, native.high_address, self.action_scale, self.frame_skip, forward,
    )  # fmt: skip


def step(self: SawyerXYZEnv, action: NDArray[Any]) -> tuple[NDArray[np.float64], Any, bool, bool, dict]:
    """``SawyerXYZEnv.step``: the same MuJoCo state and outputs, less Python around them; from the action to
    ``mj_forward`` in C where it can (:func:`_advance_in_c`)."""
    if not self._set_task_called:
        raise RuntimeError("You must call env.set_task before using env.step")
    assert len(action) == 4, f"Actions should be size 4, got {len(action)}"
    model, data = self.model, self.data
    if not self._fast_advance(action):
        self.set_xyz_action(action[:3])
        if self.curr_path_length >= self.max_path_length:
            raise ValueError("You must reset the env manually once truncate==True")
        effort = action[-1]
        ctrl = data.ctrl  # do_simulation([a, -a], frame_skip): ctrl[:] = …, mj_step (mj_rnePostConstraint)
        ctrl[0] = effort
        ctrl[1] = -effort
        mujoco.mj_step(model, data, nstep=self.frame_skip)
        if not self._did_see_sim_exception:
            mujoco.mj_forward(model, data)
    # mj_rnePostConstraint (do_simulation's last call) is left out: its outputs (cacc, cfrc_int, cfrc_ext)
    # are read by no Meta-World code and by no later MuJoCo call (tests/test_metaworld_fast.py)
    self.curr_path_length += 1

    if self._did_see_sim_exception:
        for site in self._target_site_config:
            self._set_pos_site(*site)
        assert self._last_stable_obs is not None
        return (
            self._last_stable_obs,
            0.0,
            False,
            False,
            {
                "success": False,
                "near_object": 0.0,
                "grasp_success": False,
                "grasp_reward": 0.0,
                "in_place_reward": 0.0,
                "obj_to_target": 0.0,
                "unscaled_reward": 0.0,
            },
        )
    # stock writes the target sites' site_xpos here, which mj_forward (above) then computes anew: only the
    # property is read (its checks of the goal stay)
    self._target_site_config  # noqa: B018
    obs = self._get_obs()
    space = self.sawyer_observation_space
    if obs.dtype == np.float64 and obs.shape == space.low.shape:
        obs = _clip_ufunc(obs, space.low, space.high, out=obs)
    else:
        obs = np.clip(obs, a_max=space.high, a_min=space.low, dtype=np.float64)
    self._last_stable_obs = obs
    reward, info = self.evaluate_state(obs, action)
    truncate = self.curr_path_length == self.max_path_length
    return obs.copy(), reward, False, truncate, info


# --- resets -------------------------------------------------------------------------------------------------
HAND_RESET_CACHE_SIZE = 4
"""Post-hand-reset states kept per instance, least recently used dropped first (0.65 MB resident each: 2.6
MB at most beside a ~21 MB instance). Four: a training round gives an instance at most two goals of its
class (ML10), the meta-test one goal at a time; per instance, not per process, so that a stored state
(which holds its model) never keeps a dropped instance's model alive."""
_SKIP, _RESTORE = "skip", "restore"


@functools.cache
def _copy_data() -> Callable[[int, int, int], int] | None:
    """MuJoCo's ``mj_copyData(dest, m, src)`` from the wheel's own ``libmujoco`` (the library the binding has
    loaded: the same code), or ``None`` where it cannot be loaded (resets then run the stock code)."""
    try:
        _, library = native_step._mujoco_files()
        function = ctypes.CDLL(str(library)).mj_copyData
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    function.restype = ctypes.c_void_p
    return function


class HandResets:
    """One instance's MuJoCo data after ``SawyerXYZEnv._reset_hand`` from a freshly reset state, by what the
    hand-reset steps depend on: ``steps``, ``hand_init_pos``, the model's body positions (the only model
    array a v3 class changes that enters the dynamics: tested) and the integration state they start from
    (``mj_getState(mjSTATE_INTEGRATION)``: qpos, qvel, act, warmstart, ctrl, mocap, …)."""

    def __init__(self, size: int = HAND_RESET_CACHE_SIZE) -> None:
        self.size = size
        self.states: collections.OrderedDict[tuple, mujoco.MjData] = collections.OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(env: SawyerXYZEnv, steps: int) -> tuple:
        model, data = env.model, env.data
        state = np.empty(mujoco.mj_stateSize(model, mujoco.mjtState.mjSTATE_INTEGRATION))
        mujoco.mj_getState(model, data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
        hand = np.asarray(env.hand_init_pos, dtype=np.float64)
        return steps, hand.tobytes(), model.body_pos.tobytes(), state.tobytes()

    def get(self, key: tuple) -> mujoco.MjData | None:
        found = self.states.get(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
            self.states.move_to_end(key)
        return found

    def put(self, key: tuple, data: mujoco.MjData) -> None:
        self.states[key] = data
        self.states.move_to_end(key)
        while len(self.states) > self.size:
            self.states.popitem(last=False)


def _reset_hand(self: SawyerXYZEnv, steps: int = 50) -> None:
    """``SawyerXYZEnv._reset_hand`` inside :func:`reset`: the first ``reset_model`` call's hand reset (whose
    state ``mj_resetData`` discards before the second call) runs no physics, and the second call's, from
    the freshly reset state, is copied from the instance's :class:`HandResets` (``mj_copyData``: every
    array of ``data``, contacts and solver statistics included, as the 50 steps leave them) once a first run
    stored it. Any other call runs the stock method."""
    mode, self._fast_hand = self._fast_hand, None
    if mode == _SKIP:
        self._fast_hand = _RESTORE
        # some reset_model read it before setting it (reach; on a fresh instance it would not exist yet)
        self.init_tcp = self.tcp_center
        return
    if mode != _RESTORE:
        SawyerXYZEnv._reset_hand(self, steps)
        return
    key = HandResets.key(self, steps)
    stored = self._fast_hand_resets.get(key)
    if stored is None:
        SawyerXYZEnv._reset_hand(self, steps)
        self._fast_hand_resets.put(key, copy.copy(self.data))
        return
    _copy_data()(self.data._address, self.model._address, stored._address)
    self.init_tcp = self.tcp_center


def reset(self: SawyerXYZEnv, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple:
    """``SawyerXYZEnv.reset`` (``reset_model``; ``MujocoEnv.reset``: ``mj_resetData``, ``reset_model``) with
    the hand resets of :func:`_reset_hand`."""
    self._fast_hand = _SKIP
    try:
        return SawyerXYZEnv.reset(self, seed=seed, options=options)
    finally:
        self._fast_hand = None


# --- properties (a subclass made for the instance) ----------------------------------------------------------
_MAIN_OBJECT_LOOKUP = re.compile(
    r"None|self\.(data|model)\.geom\('[^'\\]*'\)\.id|self\.model\.geom_name2id\('[^'\\]*'\)"
)
"""What a ``_get_id_main_object`` may return for its value to be kept (ast.unparse of its one statement): a
geom looked up by a constant name, or ``None``."""
_UNSET = object()


def tcp_center(self: SawyerXYZEnv) -> NDArray[np.float64]:
    """``SawyerXYZEnv.tcp_center``: ``(right + left) / 2.0`` of the finger sites' ``xpos``, read by cached
    ids (the same rows of ``data.site_xpos``, the same numpy operations)."""
    site_xpos = self.data.site_xpos
    right, left = self._fast_tcp_ids
    return (site_xpos[right] + site_xpos[left]) / 2.0


def touching_main_object(self: SawyerXYZEnv) -> bool:
    """``SawyerXYZEnv.touching_main_object``: ``touching_object(_get_id_main_object())`` with the id looked
    up once per instance (installed only for classes whose lookup is of a constant name:
    :func:`main_object_is_constant`)."""
    geom = self._fast_main_object
    if geom is _UNSET:
        geom = self._fast_main_object = self._get_id_main_object()
    return self.touching_object(geom)


def _statements(function: Any) -> list[ast.stmt]:
    """The statements of a function's ``def``, docstring left out, read from its source (none where the
    source cannot be read or is not a ``def``: a lambda, a builtin, code made at run time)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(inspect.unwrap(function))))
    except (OSError, TypeError, SyntaxError):
        return []
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.FunctionDef) else []
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    return body


@functools.cache
def main_object_is_constant(cls: type) -> bool:
    """Whether the class's ``_get_id_main_object`` is one ``return`` of a geom looked up by a literal name
    (or of ``None``): its value is then the same for the life of an instance."""
    body = _statements(cls._get_id_main_object)
    if len(body) != 1 or not isinstance(body[0], ast.Return):
        return False
    value = body[0].value
    return _MAIN_OBJECT_LOOKUP.fullmatch("None" if value is None else ast.unparse(value)) is not None


_SUPER_HAND_RESET = re.compile(r"super\(\)\._reset_hand\((steps=)?steps\)")
"""The first statement of a ``_reset_hand`` that :func:`hand_reset_extends_stock` accepts."""


@functools.cache
def hand_reset_extends_stock(cls: type) -> bool:
    """Whether each ``_reset_hand`` that the class's own code defines (below ``SawyerXYZEnv``; none: the
    stock one) is ``super()._reset_hand(steps=steps)`` followed by plain settings of ``self``'s attributes
    to a constant or to another attribute of ``self`` (faucet-open and -close's ``reachCompleted = False``,
    window-close's ``init_tcp = self.tcp_center``). Each ``reset_model`` call sets them again after its hand
    reset, so the fast hand reset can run under such an override (:func:`fast_class`)."""
    for klass in cls.__mro__[: cls.__mro__.index(SawyerXYZEnv)]:
        function = vars(klass).get("_reset_hand")
        if function is None:
            continue
        body = _statements(function)
        if not body or _SUPER_HAND_RESET.fullmatch(ast.unparse(body[0])) is None:
            return False
        for statement in body[1:]:
            if not (
                isinstance(statement, ast.Assign)
                and len(statement.targets) == 1
                and _is_attribute_of_self(statement.targets[0])
                and (isinstance(statement.value, ast.Constant) or _is_attribute_of_self(statement.value))
            ):
                return False
    return True


def _is_attribute_of_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"


@functools.cache
def for_class(function: types.FunctionType, cls: type) -> types.FunctionType:
    """A copy of ``function`` with its own code object for the instances of ``cls`` (same bytecode, globals,
    defaults and closure). CPython (3.11+) specialises attribute reads in place, in the code object, for
    the type it last saw: one function stepping instances of ten classes in turn (a worker's wave) keeps
    missing and re-specialising; a copy per class reads one type. ~2 % of an ML10 step interleaved over 10
    classes (measured beside one campaign run); the same operations, so the same bits."""
    return metaworld_rewards.function_copy(function, code=function.__code__.replace())


@functools.cache
def fast_class(cls: type, tcp: bool, main_object: bool, hand: bool) -> type:
    """A subclass of ``cls`` (same name and module) whose ``tcp_center`` (``tcp``) and
    ``touching_main_object`` (``main_object``) are the properties above: an instance's ``__class__`` is set
    to it (properties live on the class; ``cls`` itself is left alone). ``hand``: with a second base, under
    ``cls`` and over ``SawyerXYZEnv`` in the method resolution order, that holds :func:`reset` and
    :func:`_reset_hand`: a class's own ``_reset_hand`` (:func:`hand_reset_extends_stock`) runs as before
    and its ``super()._reset_hand`` reaches the fast one."""
    namespace: dict[str, Any] = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
    if tcp:
        namespace["tcp_center"] = property(for_class(tcp_center, cls), doc=SawyerXYZEnv.tcp_center.__doc__)
    if main_object:
        namespace["touching_main_object"] = property(for_class(touching_main_object, cls))
    bases: tuple[type, ...] = (cls,)
    if hand:
        resets = {"reset": for_class(reset, cls), "_reset_hand": for_class(_reset_hand, cls)}
        bases += (type("FastHandReset", (SawyerXYZEnv,), {"__module__": __name__, **resets}),)
    return type(cls.__name__, bases, namespace)


# --- installation -------------------------------------------------------------------------------------------
def _inherits(env: SawyerXYZEnv, name: str, base: type = SawyerXYZEnv) -> bool:
    """Whether the instance's class uses ``base``'s ``name`` (does not override it)."""
    return getattr(type(env), name) is getattr(base, name)


def install_fast_paths(
    env: SawyerXYZEnv, contacts: bool = False, resets: bool = True, rewards: bool = True, native: bool = True
) -> list[str]:
    """Bind the fast methods onto this one instance where its class uses the stock ones; returns the names of
    the methods replaced. ``contacts``: also replace ``touching_object`` by :func:`touching_object_cached`;
    ``resets`` (default): also ``reset`` and ``_reset_hand`` (:func:`reset`); ``rewards`` (default): then
    the class's own reward methods with fast ``tolerance`` and ``norm``
    (:func:`maml.envs.metaworld_rewards.relink`); ``native`` (default): the step's action-to-``mj_forward``
    part in C (:func:`_advance_in_c`) where the C step loads."""
    env._fast_ids = {kind: {} for kind in _OBJ}
    replaced: list[str] = []

    def bind(name: str, fn: Callable[..., Any]) -> None:
        setattr(env, name, types.MethodType(for_class(fn, type(env)), env))
        replaced.append(name)

    def ids(kind: str, *names: str) -> tuple[int, ...] | None:
        found = tuple(_name_id(env, kind, name) for name in names)
        return found if min(found) >= 0 else None

    if _inherits(env, "get_body_com", MujocoEnv):
        bind("get_body_com", get_body_com)
    if _inherits(env, "_get_site_pos"):
        bind("_get_site_pos", _get_site_pos)
    if _inherits(env, "_set_pos_site"):
        bind("_set_pos_site", _set_pos_site)
    bounds_ok = all(isinstance(b, np.ndarray) and b.shape == (3,) for b in (env.mocap_low, env.mocap_high))
    if _inherits(env, "set_xyz_action") and bounds_ok:
        bind("set_xyz_action", set_xyz_action)

    spec = _quat_spec(env)
    if spec is not None:
        kind, name, zeros = spec
        index = _name_id(env, kind, name)
        if index >= 0:
            env._fast_quat = (_XMAT[kind], index, zeros)
            bind("_get_quat_objects", _get_quat_objects)

    obs_ids = ids("body", "hand", "rightclaw", "leftclaw")
    if obs_ids and _inherits(env, "_get_curr_obs_combined_no_goal") and _inherits(env, "get_endeff_pos"):
        env._fast_obs_ids = obs_ids
        bind("_get_curr_obs_combined_no_goal", _get_curr_obs_combined_no_goal)
    if _inherits(env, "_get_obs"):
        bind("_get_obs", _get_obs)

    pads = ids("body", "leftpad", "rightpad")
    fingers = ids("site", "rightEndEffector", "leftEndEffector")
    if pads and fingers and _inherits(env, "_gripper_caging_reward") and _inherits(env, "tcp_center"):
        env._fast_caging_ids = pads + fingers
        bind("_gripper_caging_reward", _gripper_caging_reward)

    pad_geoms = ids("geom", "leftpad_geom", "rightpad_geom")
    if contacts and pad_geoms and _inherits(env, "touching_object"):
        env._fast_pad_ids = pad_geoms
        bind("touching_object", touching_object_cached)

    stock_simulation = _inherits(env, "do_simulation", MujocoEnv) and _inherits(
        env, "_step_mujoco_simulation", MujocoEnv
    )
    if env.model.nu == 2 and _inherits(env, "step") and stock_simulation:
        env._fast_native = NativeAdvance.of(env) if _inherits(env, "set_xyz_action") and native else None
        env._fast_advance = types.MethodType(for_class(_advance_in_c, type(env)), env)
        bind("step", step)

    hand = (
        resets
        and _copy_data() is not None
        and _inherits(env, "reset")
        and hand_reset_extends_stock(type(env))
        and stock_simulation
        and env.model.ntendon == 0
        and bool(np.all(env.model.actuator_trntype == mujoco.mjtTrn.mjTRN_JOINT))
    )  # sites then carry no force: site_pos (set per task) stays out of the hand-reset key
    if hand:
        env._fast_hand = None
        env._fast_hand_resets = HandResets()
    if rewards:
        replaced += metaworld_rewards.relink(env)

    tcp = fingers is not None and _inherits(env, "tcp_center")
    main_object = _inherits(env, "touching_main_object") and main_object_is_constant(type(env))
    if tcp or main_object or hand:  # last: the checks above look at the class's own attributes
        env._fast_tcp_ids = fingers
        env._fast_main_object = _UNSET
        env.__class__ = fast_class(type(env), tcp, main_object, hand)
        on = {"tcp_center": tcp, "touching_main_object": main_object, "_reset_hand": hand, "reset": hand}
        replaced += [name for name, installed in on.items() if installed]
    return replaced


# --- benchmark ---------------------------------------------------------------------------------------------
def _benchmark_envs(class_names: list[str] | None, **variants: dict[str, bool] | None):
    """For each named v3 class (default: all 50, ML45's train then test classes): ``(name, {variant: env})``,
    one instance per variant with goal 0 set (``None``: stock; else :func:`install_fast_paths`'s options),
    closed after the caller's loop body."""
    import warnings

    from maml.envs import metaworld_tasks
    from maml.envs.metaworld_pool import make_env

    warnings.simplefilter("ignore")
    task_set = metaworld_tasks.load_task_set("ml45")
    tasks = {name: goals[0] for name, goals in (*task_set.train.items(), *task_set.test.items())}
    for name in class_names or list(tasks):
        envs = {}
        for variant, options in variants.items():
            envs[variant] = env = make_env(tasks[name].task)
            if options is not None:
                install_fast_paths(env, **options)
            env.set_task(tasks[name].task)
        try:
            yield name, envs
        finally:
            for env in envs.values():
                env.close()


def benchmark(class_names: list[str] | None = None, rounds: int = 5, steps: int = 200) -> None:
    """Print ms per step of ML45's classes, interleaved in one process: A stock, B the fast paths but the
    relinked rewards (:mod:`maml.envs.metaworld_rewards`), C all fast paths (the pool's default), D all but
    the C step (``native=False``: the step's MuJoCo calls from Python)."""
    import time

    actions = np.random.default_rng(0).uniform(-1, 1, (steps, 4))
    variants = {
        "A": None,
        "B": {"contacts": True, "rewards": False},
        "C": {"contacts": True},
        "D": {"contacts": True, "native": False},
    }
    rows = []
    for name, envs in _benchmark_envs(class_names, **variants):
        best = dict.fromkeys(envs, math.inf)
        for _ in range(rounds):
            for key, env in envs.items():
                env.reset(seed=0)
                env_step = env.step
                start = time.perf_counter()
                for action in actions:
                    env_step(action)
                best[key] = min(best[key], (time.perf_counter() - start) / steps * 1e3)
        rows.append(list(best.values()))
        times = "  ".join(f"{key} {ms:.3f}" for key, ms in best.items())
        ratios = "  ".join(f"{key}/C ×{ms / best['C']:.2f}" for key, ms in best.items() if key != "C")
        print(f"{name:28s} {times} ms   {ratios}", flush=True)
    columns = dict(zip(variants, np.array(rows).T, strict=True))
    means = "  ".join(f"{key} {ms.mean():.3f}" for key, ms in columns.items())
    ratios = "; ".join(
        f"{key}/C ×{ms.mean() / columns['C'].mean():.2f} (per class ×{(ms / columns['C']).min():.2f} … "
        f"×{(ms / columns['C']).max():.2f})"
        for key, ms in columns.items()
        if key != "C"
    )
    print(f"mean of {len(rows)} classes: {means} ms; {ratios}")


def benchmark_resets(class_names: list[str] | None = None, rounds: int = 5, resets: int = 4) -> None:
    """Print ms per reset of ML45's classes (goal 0, after a first reset: the fast one's hand reset is
    stored), stock against :func:`reset`, best of ``rounds`` rounds of ``resets`` resets."""
    import time

    variants = {"stock": {"contacts": True, "resets": False}, "fast": {"contacts": True}}
    rows = []
    for name, envs in _benchmark_envs(class_names, **variants):
        best = []
        for env in envs.values():
            env.reset(seed=0)
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                for _ in range(resets):
                    env.reset(seed=0)
                times.append((time.perf_counter() - start) / resets * 1e3)
            best.append(min(times))
        rows.append(best)
        ratio = best[0] / best[1]
        print(f"{name:28s} stock {best[0]:6.2f} ms  fast {best[1]:6.3f} ms  ×{ratio:.0f}", flush=True)
    stock, fast = np.array(rows).T
    print(
        f"mean of {len(rows)} classes: stock {stock.mean():.2f} ms ({stock.min():.2f}–{stock.max():.2f}),"
        f" fast {fast.mean():.3f} ms ({fast.min():.3f}–{fast.max():.3f})"
    )


def main(arguments: list[str]) -> None:
    """``python -m maml.envs.metaworld_fast [--resets] [class …]``: :func:`benchmark` (ms per step) or, with
    ``--resets``, :func:`benchmark_resets`, of the named classes (default: all 50)."""
    names = [name for name in arguments if name != "--resets"]
    (benchmark_resets if "--resets" in arguments else benchmark)(names or None)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
