"""maml.envs.metaworld_fast: fast Meta-World steps equal stock Meta-World to the bit.

A stock instance and a fast instance (:func:`install_fast_paths`, fast contacts included) of the same class,
same task and reset seed, stepped with the same actions for a whole 500-step episode: observations, rewards,
``terminated``/``truncated``, every ``info`` value and the simulator state are equal at every step. Actions:
uniform random (beyond [−1, 1], so the clips act; the task as the ML benchmarks give it, goal hidden) and the
class's scripted policy from ``metaworld.policies`` (goal observable, as the policies need: both ``_get_obs``
branches). A few classes in the default suite, all 50 v3 classes (ML45's train and test classes) in the slow
one.
"""

from __future__ import annotations

import importlib.util
import inspect
import pickle
import textwrap
from pathlib import Path
from typing import Any

import metaworld.env_dict
import mujoco
import numpy as np
import pytest
from metaworld.policies import ENV_POLICY_MAP
from metaworld.sawyer_xyz_env import SawyerXYZEnv
from metaworld.utils import reward_utils
from scipy.spatial.transform import Rotation
from test_metaworld import SCRIPTED_WARNING, observable

from maml.envs import metaworld_fast
from maml.envs import metaworld_tasks as mwt
from maml.envs.metaworld_fast import ROTATION_MATRIX_QUATS, HandResets, install_fast_paths, quat_from_matrix
from maml.envs.metaworld_pool import MAX_EPISODE_LENGTH, make_env

ALL_CLASSES = (*metaworld.env_dict.ML45_V3["train"], *metaworld.env_dict.ML45_V3["test"])
SAMPLE = (
    # (class, policy): rotation-matrix quaternions from a geom (push) and a site (peg), Meta-World's caging
    # reward (push, peg; medium density: coffee-push) and a class's own (pick-place), two objects
    # (stick-pull), xquat (basketball)
    ("push-v3", "random"),
    ("push-v3", "scripted"),
    ("pick-place-v3", "scripted"),
    ("peg-insert-side-v3", "scripted"),
    ("stick-pull-v3", "random"),
    ("basketball-v3", "random"),
    ("coffee-push-v3", "scripted"),  # the caging reward's medium_density branch, gripping at effort 0.7
)
SEED = 5
STATE = ("qpos", "qvel", "act", "ctrl", "mocap_pos", "mocap_quat", "xpos", "site_xpos", "qacc", "efc_force")


@pytest.fixture(scope="module")
def ml45() -> mwt.TaskSet:
    return mwt.load_task_set("ml45")


def first_task(tasks: mwt.TaskSet, class_name: str) -> mwt.MetaWorldTask:
    return (tasks.train.get(class_name) or tasks.test[class_name])[0]


def reset(task: mwt.MetaWorldTask, fast: bool, prepare=None):
    """A stock or fast instance of the task, reset; ``prepare(env)`` runs on it before the fast paths."""
    env = make_env(task.task)
    if prepare is not None:
        prepare(env)
    if fast:
        install_fast_paths(env, contacts=True, resets=True)
    env.set_task(task.task)
    env.seed(SEED)
    obs, _ = env.reset(seed=SEED)
    return env, obs


def assert_same_step(
    stock: SawyerXYZEnv, fast: SawyerXYZEnv, out, fast_out, where: str, equal_nan=False
) -> None:
    """One step's outputs (values and types, ``info`` included) and the MuJoCo state afterwards equal;
    ``equal_nan``: NaN equals NaN (steps with non-finite actions)."""
    obs, reward, terminated, truncated, info = out
    f_obs, f_reward, f_terminated, f_truncated, f_info = fast_out
    assert f_obs.dtype == obs.dtype and np.array_equal(f_obs, obs, equal_nan=equal_nan), where
    assert f_reward == reward and type(f_reward) is type(reward), where
    assert (f_terminated, f_truncated) == (terminated, truncated), where
    assert f_info.keys() == info.keys(), where
    for key, value in info.items():
        same = np.array_equal(f_info[key], value, equal_nan=equal_nan)
        assert same and type(f_info[key]) is type(value), f"{where} {key}"
    for name in STATE:
        same = np.array_equal(getattr(fast.data, name), getattr(stock.data, name), equal_nan=equal_nan)
        assert same, f"{where} {name}"


def assert_same_episode(task: mwt.MetaWorldTask, policy: str, steps: int = MAX_EPISODE_LENGTH, dtype=float):
    """Step a stock and a fast instance in lockstep; every output and the MuJoCo state equal at every step."""
    stock, obs = reset(task, fast=False)
    fast, fast_obs = reset(task, fast=True)
    assert type(stock).step is SawyerXYZEnv.step and "step" in vars(fast) and "step" not in vars(stock)
    assert np.array_equal(obs, fast_obs)
    rng = np.random.default_rng(SEED)
    agent = ENV_POLICY_MAP[task.class_name]() if policy == "scripted" else None
    successes = 0
    for t in range(steps):
        if agent is None:
            action = rng.uniform(-1.5, 1.5, 4).astype(dtype)
        else:
            action = np.clip(agent.get_action(obs), -1.0, 1.0).astype(dtype)
        out = stock.step(action.copy())
        assert_same_step(stock, fast, out, fast.step(action.copy()), f"{task.class_name} {policy} step {t}")
        obs, _, _, truncated, info = out
        successes += bool(info["success"])
    assert truncated == (steps == MAX_EPISODE_LENGTH)
    stock.close()
    fast.close()
    return successes


@pytest.mark.filterwarnings(SCRIPTED_WARNING)
@pytest.mark.parametrize(("class_name", "policy"), SAMPLE)
def test_fast_episode_equals_stock(ml45, class_name, policy):
    task = first_task(ml45, class_name)
    successes = assert_same_episode(observable(task) if policy == "scripted" else task, policy)
    if policy == "scripted":
        assert successes > 0  # the scripted episode reaches the goal: rewards and success are exercised


def test_float32_actions_and_actions_as_lists_take_the_stock_arithmetic(ml45):
    """Actions that are not float64 arrays (float32 scales in float32 in the stock code) are still equal."""
    assert_same_episode(first_task(ml45, "push-v3"), "random", steps=60, dtype=np.float32)
    task = first_task(ml45, "reach-v3")
    stock, _ = reset(task, fast=False)
    fast, _ = reset(task, fast=True)
    for action in ([0.5, -2, 1, 0.3], [1, 1, -1, -1]):
        obs, reward, *_ = stock.step(list(action))
        f_obs, f_reward, *_ = fast.step(list(action))
        assert np.array_equal(obs, f_obs) and reward == f_reward


@pytest.mark.slow
@pytest.mark.filterwarnings(SCRIPTED_WARNING)
@pytest.mark.parametrize("policy", ["random", "scripted"])
@pytest.mark.parametrize("class_name", ALL_CLASSES)
def test_fast_episode_equals_stock_for_every_class(ml45, class_name, policy):
    task = first_task(ml45, class_name)
    assert_same_episode(observable(task) if policy == "scripted" else task, policy)


def test_fast_paths_stay_on_the_instance(ml45):
    """Installing replaces methods of the instance only: the class and other instances keep stock code."""
    task = first_task(ml45, "push-v3")
    env = make_env(task.task)
    replaced = install_fast_paths(env)
    expected = {"step", "_get_obs", "_get_quat_objects", "_gripper_caging_reward", "set_xyz_action", "reset"}
    assert expected <= set(replaced)
    assert "touching_object" not in replaced  # contacts only on request
    properties = {"tcp_center", "touching_main_object"}
    assert properties <= set(replaced)
    other = make_env(task.task)
    assert not set(replaced) & set(vars(other))
    stock_class = type(other)
    assert type(env) is not stock_class and type(env).__bases__[0] is stock_class  # a subclass for them
    hand_base = type(env).__bases__[1]  # the hand reset: under the class, over SawyerXYZEnv
    assert type(env).__mro__[1:] == (stock_class, hand_base, *SawyerXYZEnv.__mro__)
    assert (type(env).__name__, type(env).__module__) == (stock_class.__name__, stock_class.__module__)
    assert {name for name in vars(type(env)) if not name.startswith("__")} == properties
    hand = {"reset", "_reset_hand"}
    assert {name for name in vars(hand_base) if not name.startswith("__")} == hand <= set(replaced)
    for name in properties:  # the class itself keeps Meta-World's properties
        assert vars(type(env))[name] is not getattr(stock_class, name) is getattr(SawyerXYZEnv, name)
    for name in hand:
        assert getattr(stock_class, name) is getattr(SawyerXYZEnv, name) is not getattr(type(env), name)
        assert name not in vars(env)
    for name in set(replaced) - properties - hand:
        assert getattr(type(env), name) is getattr(stock_class, name)
        assert getattr(env, name).__func__ is not getattr(type(env), name)
    assert type(env).touching_object is SawyerXYZEnv.touching_object
    env.close()
    other.close()
    own = make_env(first_task(ml45, "pick-place-v3").task)  # overrides _gripper_caging_reward: its code kept
    install_fast_paths(own, rewards=False)
    assert "_gripper_caging_reward" not in vars(own)
    install_fast_paths(own)  # relinked: the class's own code with the fast helpers
    relinked = vars(own)["_gripper_caging_reward"].__func__
    assert relinked.__code__ is type(own)._gripper_caging_reward.__code__
    own.close()


def test_each_class_gets_its_own_copy_of_the_fast_code(ml45):
    """Instances of two classes run copies of the fast functions with their own code objects (CPython
    specialises attribute reads per code object), the same bytecode; two instances of one class share one."""
    names = ("push-v3", "reach-v3", "push-v3")
    push, reach, push_too = (make_env(first_task(ml45, name).task) for name in names)
    for env in (push, reach, push_too):
        install_fast_paths(env, contacts=True)
    for name in ("step", "_get_obs", "_fast_advance"):
        functions = [getattr(env, name).__func__ for env in (push, reach, push_too)]
        assert functions[0].__code__ is not functions[1].__code__, name
        assert functions[0].__code__.co_code == functions[1].__code__.co_code, name
        assert functions[0] is functions[2], name
    tcp = [vars(type(env))["tcp_center"].fget for env in (push, reach, push_too)]
    assert tcp[0].__code__ is not tcp[1].__code__ and tcp[0] is tcp[2]
    assert type(push) is type(push_too) and type(push) is not type(reach)
    for env in (push, reach, push_too):
        env.close()


def test_rotation_table_lists_the_classes_that_call_scipy():
    """Every v3 class whose ``_get_quat_objects`` calls ``Rotation.from_matrix`` is in the table (else it
    would only be slower), with the element its code reads (else the episode tests would fail)."""
    calling = {}
    for cls in metaworld.env_dict.ALL_V3_ENVIRONMENTS.values():
        source = inspect.getsource(cls._get_quat_objects)
        if "Rotation.from_matrix" in source:
            calling[cls.__name__] = source
    assert calling.keys() == ROTATION_MATRIX_QUATS.keys()
    for name, (kind, element, zeros) in ROTATION_MATRIX_QUATS.items():
        assert f'self.data.{kind}("{element}").xmat' in calling[name].replace("\n", "").replace(" ", "")
        assert (zeros > 0) == ("np.hstack" in calling[name])


def mujoco_matrix(q: np.ndarray) -> np.ndarray:
    m = np.zeros(9)
    mujoco.mju_quat2Mat(m, q / np.linalg.norm(q))
    return m


class _NoScipy:
    """Stands in for scipy's ``Rotation`` inside the fast paths: a MuJoCo rotation matrix must take the fast
    formula (the point of it), never the fallback."""

    @staticmethod
    def from_matrix(matrix):
        raise AssertionError(f"scipy called for {matrix.ravel().tolist()}")


def test_quat_from_matrix_equals_scipy(monkeypatch):
    """All four branches of scipy's conversion (the largest of the diagonal and the trace), MuJoCo's matrices
    from random and nearly axis-aligned quaternions, ties included; every one by the fast formula."""
    monkeypatch.setattr(metaworld_fast, "Rotation", _NoScipy)
    rng = np.random.default_rng(0)
    quats = [rng.normal(size=4) for _ in range(4000)]
    for axis in range(4):
        for _ in range(200):
            q = rng.normal(size=4) * 1e-6
            q[axis] = 1.0
            quats.append(q)
    quats += [np.eye(4)[i] for i in range(4)] + [np.array([1.0, 1.0, 0, 0]), np.array([1.0, 1.0, 1.0, 1.0])]
    branches = set()
    for q in quats:
        m = mujoco_matrix(q)
        assert np.array_equal(quat_from_matrix(m), Rotation.from_matrix(m.reshape(3, 3)).as_quat()), q
        branches.add(int(np.argmax([m[0], m[4], m[8], m[0] + m[4] + m[8]])))
    assert branches == {0, 1, 2, 3}


def test_quat_from_matrix_breaks_ties_as_scipy_does(monkeypatch):
    """Where two diagonal entries, or a diagonal entry and the trace, are equal and largest, the branches
    give quaternions that differ in the last bits: the first maximum is scipy's. Half turns about (1, 1, 0)
    and its kin tie two diagonal entries; q = (1, 1, u, v) and its kin tie the trace with an entry."""
    monkeypatch.setattr(metaworld_fast, "Rotation", _NoScipy)
    rng = np.random.default_rng(3)
    matrices = []
    for angle in np.linspace(2.0, 3.1, 60):
        for axis in ((1, 1, 0), (0, 1, 1), (1, 0, 1), (1, 1, 1)):
            unit = np.array(axis, dtype=float) / np.linalg.norm(axis)
            matrices.append(mujoco_matrix(np.r_[np.cos(angle / 2), np.sin(angle / 2) * unit]))
    for _ in range(300):
        q = np.r_[1.0, rng.uniform(-0.5, 0.5, 3)]
        q[1 + rng.integers(3)] = 1.0
        matrices.append(mujoco_matrix(q))
    ties = {"diagonal": 0, "trace": 0}
    for m in matrices:
        diagonal = [m[0], m[4], m[8]]
        ties["diagonal"] += sorted(diagonal)[-1] == sorted(diagonal)[-2] >= sum(diagonal)
        ties["trace"] += sum(diagonal) == max(diagonal)
        assert np.array_equal(quat_from_matrix(m), Rotation.from_matrix(m.reshape(3, 3)).as_quat()), m
    assert min(ties.values()) > 50, ties


def test_quat_from_matrix_leaves_other_matrices_to_scipy():
    """A matrix scipy would orthogonalise (SVD) or reject gets scipy's result or error."""
    rng = np.random.default_rng(1)
    for scale in (1e-13, 1e-12, 1e-11, 1e-6, 1e-2):
        m = mujoco_matrix(rng.normal(size=4)) + scale * rng.normal(size=9)
        assert np.array_equal(quat_from_matrix(m), Rotation.from_matrix(m.reshape(3, 3)).as_quat()), scale
    reflection = np.diag([1.0, 1.0, -1.0]).ravel()
    with pytest.raises(ValueError, match="Non-positive determinant"):
        quat_from_matrix(reflection)


def test_quat_from_matrix_sends_a_scaled_rotation_to_scipy():
    """A uniformly scaled rotation keeps its rows orthogonal but not of unit length: only the diagonal of
    the Gramian tells it apart, and the fast formula on it would be off by up to 3e-2 (1.2·R)."""
    rng = np.random.default_rng(2)
    for scale in (1 + 1e-4, 1 + 1e-3, 1 - 1e-3, 1.2):
        m = mujoco_matrix(rng.normal(size=4)) * scale
        assert np.array_equal(quat_from_matrix(m), Rotation.from_matrix(m.reshape(3, 3)).as_quat()), scale


@pytest.mark.filterwarnings(SCRIPTED_WARNING)
def test_fast_contacts_equal_metaworlds(ml45):
    """The cached contact test gives Meta-World's results (value and type) and the pool's booleans at every
    step of a scripted pick-place (grasps included), for the main object and every geom in contact."""
    task = observable(first_task(ml45, "pick-place-v3"))
    env, obs = reset(task, fast=True)
    agent = ENV_POLICY_MAP["pick-place-v3"]()
    seen = set()
    for _ in range(150):
        obs, *_ = env.step(np.clip(agent.get_action(obs), -1.0, 1.0))
        for geom in {env._get_id_main_object(), -1, *env.data.contact.geom.ravel().tolist()}:
            expected = SawyerXYZEnv.touching_object(env, geom)
            result = env.touching_object(geom)
            assert result == expected and type(result) is type(expected)
            seen.add(bool(expected))
            if expected:  # a light grip: the same pad contacts with forces scaled into (0, 0.5]
                assert_light_grip_equal(env, geom)
    assert seen == {True, False}
    env.close()


def assert_light_grip_equal(env, geom: int) -> None:
    """The contact test on the step's contacts with every constraint force scaled so that the largest is
    0.5 N: a grip lighter than 1 N is still a grip (both pads' sums stay positive), as in Meta-World."""
    forces = env.data.efc_force
    original = forces.copy()
    try:
        forces *= 0.5 / np.abs(original).max()
        expected = SawyerXYZEnv.touching_object(env, geom)
        assert expected and env.touching_object(geom) == expected
    finally:
        forces[:] = original


def test_long_tail_tolerance_equals_metaworlds():
    """The scalar ``long_tail`` tolerance of the fast rewards equals ``reward_utils.tolerance``, value and
    type, inside, at and beyond the bounds, for a zero margin, and for equal bounds (a valid interval of one
    point); inverted bounds and a negative margin are refused as Meta-World refuses them."""
    for lower, upper in ((0.0, 0.05), (0.02, 0.02), (-1.0, 0.0)):
        for x in (lower - 0.3, lower - 1e-3, lower, (lower + upper) / 2, upper, upper + 1e-3, upper + 2.0):
            for margin in (0.0, 0.01, 0.25):
                expected = reward_utils.tolerance(
                    np.float64(x), bounds=(lower, upper), margin=margin, sigmoid="long_tail"
                )
                result = metaworld_fast._long_tail(np.float64(x), lower, upper, margin)
                assert result == expected and type(result) is type(expected), (x, lower, margin)
    refused = (((0.1, 0.0, 0.1), "Lower bound must be <= upper bound"), ((0.0, 0.1, -0.1), "margin"))
    for args, message in refused:
        with pytest.raises(ValueError, match=message):
            metaworld_fast._long_tail(np.float64(0.0), *args)
        with pytest.raises(ValueError, match=message):
            reward_utils.tolerance(np.float64(0.0), bounds=args[:2], margin=args[2], sigmoid="long_tail")


class _Lookups:
    """``_get_id_main_object`` bodies: kept (a literal name, or None) or not (anything else)."""

    class Data:
        def _get_id_main_object(self):
            return self.data.geom("objGeom").id

    class Model:
        def _get_id_main_object(self):
            """A docstring first."""
            return self.model.geom_name2id("btnGeom")

    class Nothing:
        def _get_id_main_object(self):
            return None

    class Computed:
        def _get_id_main_object(self):
            return self.data.geom(self.name).id

    class Counted:
        def _get_id_main_object(self):
            print("looked up")
            return None

    class Assigned:
        def _get_id_main_object(self):
            unused = 1  # noqa: F841
            return None

    class DocstringOnly:
        def _get_id_main_object(self):
            """Nothing returned."""

    class Lambda:
        _get_id_main_object = lambda self: None  # noqa: E731

    class Bare:
        def _get_id_main_object(self):
            return


def test_the_main_object_id_is_kept_only_for_a_literal_lookup(ml45):
    """:func:`main_object_is_constant`: one ``return`` (after a docstring, if any) of a geom looked up by a
    literal name, or of ``None`` (a bare ``return`` too); a computed name, other statements, a lambda or a
    function without source are not kept. Every v3 class's is."""
    constant = metaworld_fast.main_object_is_constant
    for kept in (_Lookups.Data, _Lookups.Model, _Lookups.Nothing, _Lookups.Bare):
        assert constant(kept), kept.__name__
    for other in (_Lookups.Computed, _Lookups.Counted, _Lookups.Assigned, _Lookups.DocstringOnly,
                  _Lookups.Lambda):  # fmt: skip
        assert not constant(other), other.__name__
    scope: dict[str, Any] = {}
    exec("class NoSource:\n    def _get_id_main_object(self):\n        return None\n", scope)
    assert not constant(scope["NoSource"])  # inspect cannot find its source
    for class_name in ALL_CLASSES:
        assert constant(pickle.loads(first_task(ml45, class_name).task.data)["env_cls"]), class_name


def test_pickled_task_names_the_class_the_fast_paths_were_built_for(ml45):
    """``set_task`` still checks the class (the fast instance is an instance of the stock class)."""
    task = first_task(ml45, "push-v3")
    env = make_env(task.task)
    install_fast_paths(env)
    assert isinstance(env, pickle.loads(task.task.data)["env_cls"])
    wrong = first_task(ml45, "reach-v3")
    with pytest.raises(AssertionError):
        env.set_task(wrong.task)
    env.close()


def test_every_rotation_table_entry_gives_the_stock_quaternions(ml45):
    """For each of the 22 classes of :data:`ROTATION_MATRIX_QUATS` (not only the sampled episodes' classes):
    the fast ``_get_quat_objects`` equals the stock method to the bit after a reset and after 20 random
    steps (the objects then turned): the table's element kind, name and zero padding are the class's."""
    classes = [c for c in ALL_CLASSES if _defining_class(c) in ROTATION_MATRIX_QUATS]
    assert len(classes) == 22
    rng = np.random.default_rng(0)
    for class_name in classes:
        env, _ = reset(first_task(ml45, class_name), fast=True)
        assert "_get_quat_objects" in vars(env), class_name
        for _ in range(2):
            expected = type(env)._get_quat_objects(env)
            quats = env._get_quat_objects()
            assert quats.shape == expected.shape and np.array_equal(quats, expected), class_name
            for action in rng.uniform(-1.0, 1.0, (20, 4)):
                env.step(action)
        env.close()


def _defining_class(class_name: str) -> str:
    """The name of the class that defines ``_get_quat_objects`` for a v3 environment name."""
    cls = metaworld.env_dict.ALL_V3_ENVIRONMENTS[class_name]
    return next(k.__name__ for k in cls.__mro__ if "_get_quat_objects" in vars(k))


def test_the_step_breakdown_times_mujocos_calls_and_puts_the_module_back(monkeypatch):
    """bench/step_breakdown.py (the README's "where a fast step's time goes"): its parts add up to the step,
    every part is positive, and the fast step calls the real mujoco module again afterwards."""
    from bench import step_breakdown

    monkeypatch.setattr(step_breakdown, "HORIZON", 5)
    monkeypatch.setattr(step_breakdown, "ROUNDS", 1)
    (row,) = step_breakdown.breakdown("ml1_push", 2)
    assert all(row[key] > 0 for key in ("step", "mj_step", "forward", "python", "bound", "reset"))
    assert row["step"] == pytest.approx(row["mj_step"] + row["forward"] + row["python"])
    assert metaworld_fast.mujoco is mujoco


def _lockstep(task: mwt.MetaWorldTask, actions) -> tuple[SawyerXYZEnv, SawyerXYZEnv]:
    """Stock and fast instances stepped with ``actions``, equal at each step as in :func:`assert_same_step`
    (NaN for NaN: some of the actions are not finite); returned open."""
    stock, _ = reset(task, fast=False)
    fast, _ = reset(task, fast=True)
    for t, action in enumerate(actions):
        out = stock.step(action.copy())
        assert_same_step(stock, fast, out, fast.step(action.copy()), f"step {t}", equal_nan=True)
    return stock, fast


PUSHES = [np.array([1.0, -1.0, 1.0, 0.2])] * 40 + [np.array([-1.0, 1.0, -1.0, -0.3])] * 40
"""Full-scale pushes one way then the other: the hand reaches both corners of its box."""


def _episode_equals_stock(task: mwt.MetaWorldTask, prepare=None, change=None, actions=PUSHES):
    """Stock and fast instances (``prepare``d before the fast paths, ``change``d after the reset) stepped
    with ``actions``: equal at every step. Returns the fast instance's C step (or ``None``)."""
    stock, _ = reset(task, fast=False, prepare=prepare)
    fast, _ = reset(task, fast=True, prepare=prepare)
    for env in (stock, fast):
        if change is not None:
            change(env)
    for t, action in enumerate(actions):
        out = stock.step(action.copy())
        assert_same_step(stock, fast, out, fast.step(action.copy()), f"step {t}")
    native = fast._fast_native
    stock.close()
    fast.close()
    return native


def _narrower_box(env: SawyerXYZEnv) -> None:
    env.mocap_low = env.mocap_low + 0.05  # new arrays: the C step holds the old ones' addresses
    env.mocap_high = env.mocap_high - 0.05


@pytest.mark.parametrize("which", ["low", "high"])
def test_a_mocap_box_replaced_after_install_is_the_one_used(ml45, which: str) -> None:
    """Stock reads ``mocap_low``/``mocap_high`` at every step: a box replaced on the instance after the fast
    paths were installed is the one the hand stops at (the C step sees its arrays are not the instance's)."""
    bound = np.full(3, 0.05)

    def change(env: SawyerXYZEnv) -> None:
        if which == "low":
            env.mocap_low = env.mocap_low + bound
        else:
            env.mocap_high = env.mocap_high - bound

    assert _episode_equals_stock(first_task(ml45, "reach-v3"), change=change) is not None


def test_an_action_scale_per_axis_takes_the_python_step(ml45) -> None:
    """``action_scale`` as an array (stock multiplies the action by it): not a float, so the Python step."""

    def change(env: SawyerXYZEnv) -> None:
        env.action_scale = np.array([0.01, 0.02, 0.005])

    _episode_equals_stock(first_task(ml45, "reach-v3"), change=change)


@pytest.mark.parametrize(
    "box",
    [
        lambda b: b.astype(np.float32),  # not float64: the C step would read it as doubles
        lambda b: np.repeat(b, 2)[::2],  # (3,) but strided: not where the C step reads
    ],
    ids=["float32", "strided"],
)
def test_a_mocap_box_the_c_step_cannot_read_keeps_the_python_step(ml45, box) -> None:
    def prepare(env: SawyerXYZEnv) -> None:
        env.mocap_low, env.mocap_high = box(env.mocap_low), box(env.mocap_high)

    assert _episode_equals_stock(first_task(ml45, "reach-v3"), prepare=prepare) is None


def test_without_the_c_library_the_step_stays_in_python(ml45, monkeypatch) -> None:
    from maml.envs import native_step

    monkeypatch.setattr(native_step, "load", lambda: None)
    assert _episode_equals_stock(first_task(ml45, "reach-v3")) is None


@pytest.mark.parametrize("override", ["get_endeff_pos", "_get_curr_obs_combined_no_goal"])
def test_a_class_with_its_own_observation_keeps_it(ml45, override: str) -> None:
    """The fast observation reads the hand by its body id: a class that overrides ``get_endeff_pos`` (or the
    observation itself) keeps the stock observation code."""
    task = first_task(ml45, "reach-v3")
    base = type(make_env(task.task))
    shifted = type("Shifted", (base,), {override: lambda self: getattr(base, override)(self) + 1.0})
    env = shifted()
    replaced = install_fast_paths(env, contacts=True)
    assert "_get_curr_obs_combined_no_goal" not in replaced
    assert "_get_obs" in replaced  # the stacking around it is still the fast one
    env.close()


def test_a_class_with_its_own_hand_control_keeps_it_and_the_python_step(ml45) -> None:
    """A class that overrides ``set_xyz_action`` keeps it, and its steps call it (no C step)."""
    task = first_task(ml45, "reach-v3")
    base = type(make_env(task.task))
    calls = []
    own = type(
        "OwnHand",
        (base,),
        {"set_xyz_action": lambda self, a: calls.append(1) or base.set_xyz_action(self, a)},
    )
    env = own()
    replaced = install_fast_paths(env, contacts=True)
    assert "set_xyz_action" not in replaced and "step" in replaced and env._fast_native is None
    env.set_task(task.task)
    env.reset(seed=SEED)
    env.step(np.array([0.1, 0.2, -0.1, 0.3]))
    assert calls == [1]
    env.close()


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_the_hand_stops_at_each_bound_of_its_box_as_in_stock(ml45, axis: int) -> None:
    """Full-scale pushes along one axis, each way, until the mocap sits on the box's bound and stays there:
    the fast clip to ``mocap_low``/``mocap_high`` equals ``np.clip``'s (random actions seldom reach one)."""
    task = first_task(ml45, "reach-v3")
    for sign in (-1.0, 1.0):
        action = np.zeros(4)
        action[axis] = sign
        stock, fast = _lockstep(task, [action] * 150)
        bound = (stock.mocap_low if sign < 0 else stock.mocap_high)[axis]
        assert fast.data.mocap_pos[0, axis] == bound
        stock.close()
        fast.close()


def test_a_non_finite_action_takes_stocks_arithmetic(ml45) -> None:
    """NaN passes through ``np.clip`` (the fast clip alone would send it to −1) and ±inf clips to ±1: the
    mocap target and the observations equal stock's, NaN for NaN."""
    task = first_task(ml45, "reach-v3")
    for bad in (np.nan, np.inf, -np.inf):
        action = np.array([0.2, bad, -0.1, 0.5])
        stock, fast = _lockstep(task, [action, np.array([0.1, 0.2, 0.3, 0.4])])
        stock.close()
        fast.close()


def test_the_c_step_runs_for_float64_actions_and_python_otherwise(ml45) -> None:
    """With the C step loaded, a finite float64 action never reaches the Python ``set_xyz_action``; a float32,
    a list or a non-finite action does (the C function writes nothing and says so); ``native=False`` keeps
    the Python step. Each gives stock's episode (the other tests); here: which path ran."""
    from maml.envs import native_step

    if native_step.load() is None:
        pytest.skip("the C step cannot be built here (no compiler)")
    task = first_task(ml45, "reach-v3")
    python_calls = []
    envs = {}
    for native in (True, False):
        env = make_env(task.task)
        install_fast_paths(env, contacts=True, native=native)
        env.set_task(task.task)
        env.reset(seed=SEED)
        python = env.set_xyz_action
        env.set_xyz_action = lambda a, python=python, native=native: python_calls.append(native) or python(a)
        envs[native] = env
    assert isinstance(envs[True]._fast_native, metaworld_fast.NativeAdvance)
    assert envs[False]._fast_native is None
    outs = {native: env.step(np.array([0.3, -0.2, 0.1, 0.5])) for native, env in envs.items()}
    assert python_calls == [False]
    assert np.array_equal(outs[True][0], outs[False][0]) and outs[True][1] == outs[False][1]
    float32 = np.array([0.3, -0.2, 0.1, 0.5], np.float32)
    for action in (float32, [0.3, -0.2, 0.1, 0.5], np.array([np.nan] * 4)):
        python_calls.clear()
        envs[True].step(action)
        assert python_calls == [True], action
    for env in envs.values():
        env.close()


def test_after_a_simulation_exception_the_step_returns_stocks_placeholder(ml45) -> None:
    """Once an instance has seen a MuJoCo exception, stock ``step`` returns the last stable observation with
    zero reward and a fixed ``info``: the fast step returns the same values of the same types."""
    task = first_task(ml45, "push-v3")
    action = np.array([0.3, -0.2, 0.1, 0.5])
    stock, fast = _lockstep(task, [action] * 3)
    for env in (stock, fast):
        env._did_see_sim_exception = True
    out = stock.step(action.copy())
    assert out[0] is stock._last_stable_obs
    assert_same_step(stock, fast, out, fast.step(action.copy()), "after the exception")
    stock.close()
    fast.close()


def test_the_hidden_goal_is_zero_whatever_the_fresh_array_held(ml45) -> None:
    """The fast observation fills a fresh ``np.empty`` array: every entry must be written. A freed array of
    sevens just before makes a missed entry show (the allocator hands the same memory back)."""
    env, _ = reset(first_task(ml45, "push-v3"), fast=True)
    assert env._partially_observable
    for _ in range(3):
        junk = np.full(39, 7.0)
        del junk
        obs = env._get_obs()
        assert not (obs == 7.0).any() and obs[36:].tolist() == [0.0, 0.0, 0.0]
    env.close()


def test_a_step_past_the_episode_end_is_refused_as_in_stock(ml45) -> None:
    """After 500 steps (truncated) stock ``step`` raises until a reset: so does the fast one."""
    task = first_task(ml45, "reach-v3")
    action = np.array([0.1, -0.1, 0.1, 0.0])
    stock, fast = _lockstep(task, [action] * MAX_EPISODE_LENGTH)
    for env in (stock, fast):
        with pytest.raises(ValueError, match="reset the env manually"):
            env.step(action.copy())
        env.close()


# --- resets -------------------------------------------------------------------------------------------------
SCRATCH = ("dof_island", "dof_islandind", "efc_island", "island_", "efc_AR_", "efc_JT", "efc_J_")
"""``data`` arrays no step of these models writes (checked below: island discovery off, dense Jacobians):
they keep whatever bytes earlier use of MuJoCo's arena left, so they differ between instances with
different histories and are never read."""
FIRST_CALL_SITES = {"push-v3": "goal", "push-back-v3": "goal"}
"""The one value a fast reset leaves different from stock until the first step: these classes' goal marker
``data.site_xpos`` after a reset is computed (by the second ``reset_model``'s ``mj_forward``) from the site
position that the *first* ``reset_model`` set from ``fix_extreme_obj_pos``, which reads the object's height
after that call's hand reset: in stock the 50 steps from wherever the last episode left the object, in the
fast reset none. A marker has no mass and no collision; no observation, reward or ``info`` reads it, and the
first step recomputes it from the site position the second call set (equal in both)."""
OWN_HAND_RESET = ("faucet-close-v3", "faucet-open-v3", "window-close-v3")
"""Classes that override ``_reset_hand`` (``super()._reset_hand()`` then an attribute): the fast hand reset
runs under their override."""
RESET_GOALS = (0, 1, 0, 2, 2)
"""Goals of consecutive episodes on one instance: new tasks (new body positions: hand-reset cache misses),
a task seen before (hits) and the same task twice."""


RNE_OUTPUTS = ("cacc", "cfrc_int", "cfrc_ext")
"""What ``mj_rnePostConstraint`` writes, the last call of stock ``do_simulation``, which the fast step leaves
out: no Meta-World code reads them and MuJoCo recomputes them where it needs them (sensors). The state after
every step is compared, and every array after the next reset: the stale values leak nowhere."""


def data_values(data: mujoco.MjData) -> dict[str, Any]:
    """Every array and number of ``data`` except the :data:`SCRATCH` arrays, and every field of its
    contacts."""
    values = {}
    for name in dir(data):
        if name.startswith("_") or name.startswith(SCRATCH) or name == "threadpool":
            continue
        value = getattr(data, name)
        if isinstance(value, np.ndarray | int | float):
            values[name] = value
    contact = data.contact
    values |= {f"contact.{name}": getattr(contact, name) for name in dir(contact) if not name.startswith("_")}
    return values


def model_arrays(model: mujoco.MjModel) -> dict[str, np.ndarray]:
    return {name: getattr(model, name) for name in dir(model) if isinstance(getattr(model, name), np.ndarray)}


def assert_same_instance(
    stock: SawyerXYZEnv, fast: SawyerXYZEnv, where: str, site: str | None = None, stepped: bool = False
):
    """MuJoCo data (but ``site``'s ``site_xpos``), model and every attribute of the two instances equal;
    ``stepped`` (after steps): but :data:`RNE_OUTPUTS`, which the fast step does not compute."""
    fast_values = data_values(fast.data)
    if stepped:
        for name in RNE_OUTPUTS:
            del fast_values[name]
    for name, value in data_values(stock.data).items():
        if name not in fast_values:
            continue
        other = fast_values[name]
        if site is not None and name == "site_xpos":
            keep = np.arange(len(value)) != stock.model.site(site).id
            value, other = value[keep], other[keep]
        assert np.array_equal(value, other, equal_nan=True), f"{where}: data.{name}"
    fast_model = model_arrays(fast.model)
    for name, value in model_arrays(stock.model).items():
        assert np.array_equal(value, fast_model[name], equal_nan=True), f"{where}: model.{name}"
    for name, value in vars(stock).items():
        if name in ("model", "data") or name.startswith("_fast"):
            continue
        other = vars(fast)[name]
        if isinstance(value, np.ndarray):
            same = other.dtype == value.dtype and np.array_equal(value, other, equal_nan=True)
            assert same, f"{where}: {name}"
        elif isinstance(value, bool | int | float | str | tuple | type(None)):
            assert other == value or (value != value and other != other), f"{where}: {name}"


def assert_same_resets(tasks: mwt.TaskSet, class_name: str, steps: int = 80) -> None:
    """Episodes of :data:`RESET_GOALS` on one stock and one fast instance (scripted and random actions in
    turn, so objects end anywhere): after every reset the observation, ``info``, MuJoCo data, model and
    attributes are equal (:data:`FIRST_CALL_SITES` aside), and so is every step; the model arrays the hand-
    reset cache leaves out of its key never change."""
    goals = tasks.train.get(class_name) or tasks.test[class_name]
    stock = make_env(goals[0].task)
    fast = make_env(goals[0].task)
    fresh = make_env(goals[0].task)
    pristine = {name: value.copy() for name, value in model_arrays(fresh.model).items()}
    fresh.close()
    replaced = set(install_fast_paths(fast, contacts=True, resets=True))
    assert {"reset", "_reset_hand"} <= replaced
    assert fast.model.opt.enableflags & mujoco.mjtEnableBit.mjENBL_ISLAND == 0
    assert not mujoco.mj_isSparse(fast.model)  # SCRATCH: no island, no sparse Jacobian structure written
    rng = np.random.default_rng(SEED)
    for episode, goal in enumerate(RESET_GOALS):
        task = observable(goals[goal])
        for env in (stock, fast):
            env.set_task(task.task)
            env.seed(SEED)
        obs, info = stock.reset(seed=SEED)
        fast_obs, fast_info = fast.reset(seed=SEED)
        where = f"{class_name} episode {episode} (goal {goal})"
        assert np.array_equal(obs, fast_obs) and fast_info == info, where
        assert_same_instance(stock, fast, f"{where} after the reset", FIRST_CALL_SITES.get(class_name))
        agent = ENV_POLICY_MAP[class_name]()
        for t in range(steps):
            scripted = np.clip(agent.get_action(obs), -1.0, 1.0)
            action = rng.uniform(-1.5, 1.5, 4) if episode % 2 else scripted
            out = stock.step(action.copy())
            assert_same_step(stock, fast, out, fast.step(action.copy()), f"{where} step {t}")
            obs = out[0]
        assert_same_instance(stock, fast, f"{where} after {steps} steps", stepped=True)
    for name, value in model_arrays(fast.model).items():
        if name not in ("body_pos", "site_pos"):
            assert np.array_equal(value, pristine[name], equal_nan=True), f"{class_name}: model.{name}"
    stock.close()
    fast.close()


RESET_SAMPLE = (
    "push-v3",  # the first reset_model's goal marker
    "box-close-v3",  # a body placed from a height read after the hand reset
    "bin-picking-v3",  # an object's height read after it
    "door-lock-v3",  # attributes that are views of data
    "basketball-v3",  # a target read from data
    "hammer-v3",  # same
    "stick-pull-v3",  # two objects
    "reach-v3",  # init_tcp read by the first reset_model of a fresh instance
    "faucet-open-v3",  # its own _reset_hand over the fast one (reachCompleted)
    "window-close-v3",  # same (init_tcp)
)


@pytest.mark.filterwarnings(SCRIPTED_WARNING)
@pytest.mark.parametrize("class_name", RESET_SAMPLE)
def test_fast_resets_equal_stock(ml45, class_name):
    assert_same_resets(ml45, class_name)


@pytest.mark.slow
@pytest.mark.filterwarnings(SCRIPTED_WARNING)
@pytest.mark.parametrize("class_name", ALL_CLASSES)
def test_fast_resets_equal_stock_for_every_class(ml45, class_name):
    assert_same_resets(ml45, class_name)


def test_the_first_calls_goal_marker_differs_until_the_first_step(ml45):
    """:data:`FIRST_CALL_SITES` is needed (on a fresh instance stock's marker sits where the settled object
    put it, the fast one where the unsettled one did) and it is all: the first step makes them equal."""
    for class_name, site in FIRST_CALL_SITES.items():
        stock, _ = reset(first_task(ml45, class_name), fast=False)
        fast, _ = reset(first_task(ml45, class_name), fast=True)
        index = stock.model.site(site).id
        assert not np.array_equal(stock.data.site_xpos[index], fast.data.site_xpos[index])
        action = np.array([0.1, 0.2, -0.3, 0.4])
        assert_same_step(stock, fast, stock.step(action.copy()), fast.step(action.copy()), class_name)
        assert np.array_equal(stock.data.site_xpos, fast.data.site_xpos)
        stock.close()
        fast.close()


def test_the_hand_reset_cache_keys_on_what_the_steps_depend_on(ml45):
    """The key changes with the body positions and with the state the steps start from; the cache keeps
    the ``size`` most recently used states and counts hits and misses."""
    env, _ = reset(first_task(ml45, "box-close-v3"), fast=True)
    mujoco.mj_resetData(env.model, env.data)
    key = HandResets.key(env, 50)
    assert HandResets.key(env, 50) == key and HandResets.key(env, 49) != key
    env.model.body_pos[1, 0] += 1e-12
    assert HandResets.key(env, 50) != key
    env.model.body_pos[1, 0] -= 1e-12
    env.data.qvel[0] = 1e-300
    assert HandResets.key(env, 50) != key
    cache = HandResets(size=2)
    states = [mujoco.MjData(env.model) for _ in range(3)]
    for k, state in enumerate(states):
        assert cache.get(k) is None
        cache.put(k, state)
        if k == 1:
            assert cache.get(0) is states[0]  # 0 is now the most recent: 1 goes next
    assert list(cache.states) == [0, 2] and cache.get(1) is None
    assert (cache.hits, cache.misses) == (1, 4)
    env.close()


def test_each_instance_keeps_its_own_hand_resets_and_reuses_them(ml45):
    """Two resets of one goal: a miss, then a hit (the state copied back); another instance starts empty, and
    after five goals an instance holds the four most recent."""
    goals = ml45.test["box-close-v3"]  # its box moves with the goal: one stored state per goal
    env, _ = reset(goals[0], fast=True)
    cache = env._fast_hand_resets
    assert (cache.hits, cache.misses, len(cache.states)) == (0, 1, 1)
    env.reset(seed=SEED)
    assert (cache.hits, cache.misses) == (1, 1)
    other, _ = reset(goals[0], fast=True)
    assert other._fast_hand_resets is not cache and other._fast_hand_resets.hits == 0
    for goal in goals[1:5]:
        env.set_task(goal.task)
        env.reset(seed=SEED)
    assert len(cache.states) == metaworld_fast.HAND_RESET_CACHE_SIZE == 4 and cache.misses == 5
    env.close()
    other.close()


def test_a_hand_reset_outside_a_reset_runs_the_stock_steps(ml45):
    """``_reset_hand`` called by anything but the fast ``reset`` (from a moved state) takes the stock 50
    steps and leaves the cache alone; a reset after it is stock's again."""
    task = first_task(ml45, "push-v3")
    stock, _ = reset(task, fast=False)
    fast, _ = reset(task, fast=True)
    action = np.array([0.5, -0.5, 0.5, 1.0])
    for _ in range(20):
        assert_same_step(stock, fast, stock.step(action.copy()), fast.step(action.copy()), "moving")
    cache = fast._fast_hand_resets
    counts = (cache.hits, cache.misses, len(cache.states))
    stock._reset_hand()
    fast._reset_hand()
    assert (cache.hits, cache.misses, len(cache.states)) == counts
    assert_same_instance(stock, fast, "after a direct hand reset")
    assert np.array_equal(stock.reset(seed=SEED)[0], fast.reset(seed=SEED)[0])
    stock.close()
    fast.close()


def test_the_classes_with_their_own_hand_reset_are_the_ones_listed():
    own = {name for name, klass in metaworld.env_dict.ALL_V3_ENVIRONMENTS.items()
           if klass._reset_hand is not SawyerXYZEnv._reset_hand}  # fmt: skip
    assert own == set(OWN_HAND_RESET)


@pytest.mark.parametrize("class_name", OWN_HAND_RESET)
def test_classes_with_their_own_hand_reset_run_it_over_the_fast_one(ml45, class_name):
    """Their override stays the instance's ``_reset_hand``; its ``super()`` call reaches the fast one (the
    second reset's hand reset is copied back from the store) and its own line still runs after it."""
    klass = metaworld.env_dict.ALL_V3_ENVIRONMENTS[class_name]
    env = make_env(first_task(ml45, class_name).task)
    replaced = install_fast_paths(env, contacts=True, resets=True)
    assert {"reset", "_reset_hand", "step"} <= set(replaced)
    assert "_reset_hand" not in vars(env) and "reset" not in vars(env)  # on the instance's class
    assert type(env)._reset_hand is klass._reset_hand  # the override first in the resolution order
    assert type(env).__mro__.index(klass) < type(env).__mro__.index(SawyerXYZEnv) - 1  # the fast base between
    attribute = "init_tcp" if class_name == "window-close-v3" else "reachCompleted"
    for _ in range(2):
        env.set_task(first_task(ml45, class_name).task)
        env.reset(seed=SEED)
        setattr(env, attribute, "stale")
        env.reset(seed=SEED)
        assert getattr(env, attribute) is not None and not isinstance(getattr(env, attribute), str)
    assert env._fast_hand_resets.hits >= 2
    env.close()


def _push_subclass(class_body: str, folder: Path) -> type:
    """A subclass of push with this class body, from a module file (``inspect`` reads its source)."""
    source = (
        "from metaworld.envs.sawyer_push_v3 import SawyerPushEnvV3\n\n\n"
        "class Pushed(SawyerPushEnvV3):\n" + textwrap.indent(class_body, " " * 4)
    )
    path = folder / "hand_reset_variant.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"hand_reset_variant_{folder.name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Pushed


def _hand_reset_class(body: str, folder: Path) -> type:
    """A subclass of push whose ``_reset_hand`` has this body."""
    return _push_subclass(
        "def _reset_hand(self, steps: int = 50) -> None:\n" + textwrap.indent(body, " " * 4), folder
    )


@pytest.mark.parametrize(
    ("body", "accepted"),
    [
        ("super()._reset_hand(steps=steps)\nself.flag = False\n", True),
        ('"""doc"""\nsuper()._reset_hand(steps)\nself.init_tcp = self.tcp_center\n', True),
        ("super()._reset_hand(steps=steps)\n", True),
        ("super()._reset_hand(steps=10)\n", False),  # not the steps asked for
        ("self.flag = False\nsuper()._reset_hand(steps=steps)\n", False),  # before the hand reset
        ("super()._reset_hand(steps=steps)\nself.flag = self.compute()\n", False),  # a call
        ("super()._reset_hand(steps=steps)\nself.data.qpos[0] = 0.0\n", False),  # not an attribute of self
        ("super()._reset_hand(steps=steps)\nself.a = self.b = 0.0\n", False),  # two targets
        ("super()._reset_hand(steps=steps)\nself.a += 1\n", False),  # not a plain setting
        ("pass\n", False),
    ],
)
def test_which_own_hand_resets_the_fast_one_runs_under(body, accepted, tmp_path):
    klass = _hand_reset_class(body, tmp_path)
    assert metaworld_fast.hand_reset_extends_stock(klass) is accepted
    assert metaworld_fast.hand_reset_extends_stock(type("Sub", (klass,), {})) is accepted  # inherited


def test_a_hand_reset_that_is_not_a_function_definition_is_refused(tmp_path):
    klass = _push_subclass("_reset_hand = lambda self, steps=50: None\n", tmp_path)
    assert not metaworld_fast.hand_reset_extends_stock(klass)


def test_a_class_with_its_own_tcp_center_keeps_it_beside_the_other_fast_property(ml45):
    """Without the fast resets, a class whose ``tcp_center`` is its own still gets the subclass for the fast
    ``touching_main_object`` (either property, or the hand reset, is reason enough for one)."""
    base = type(make_env(first_task(ml45, "push-v3").task))
    own_tcp = property(lambda self: base.tcp_center.fget(self))
    env = type("OwnTcp", (base,), {"tcp_center": own_tcp})()
    replaced = install_fast_paths(env, contacts=True, resets=False)
    assert "touching_main_object" in replaced and "tcp_center" not in replaced and "reset" not in replaced
    assert type(env).__bases__ == (type(env).__mro__[1],) and type(env).tcp_center is own_tcp
    assert "touching_main_object" in vars(type(env))
    env.close()


def test_the_stock_hand_reset_and_every_v3_override_are_accepted():
    assert metaworld_fast.hand_reset_extends_stock(SawyerXYZEnv)
    assert all(map(metaworld_fast.hand_reset_extends_stock, metaworld.env_dict.ALL_V3_ENVIRONMENTS.values()))
    namespace: dict[str, Any] = {}
    exec(
        "def _reset_hand(self, steps=50):\n    super()._reset_hand(steps=steps)\n", namespace
    )  # no source file
    assert not metaworld_fast.hand_reset_extends_stock(type("NoSource", (SawyerXYZEnv,), namespace))


def test_a_reset_without_mujocos_copy_function_stays_stock(ml45, monkeypatch):
    """Where ``mj_copyData`` cannot be loaded the fast reset is not installed, nor with ``resets=False``."""
    monkeypatch.setattr(metaworld_fast, "_copy_data", lambda: None)
    env = make_env(first_task(ml45, "push-v3").task)
    assert "reset" not in install_fast_paths(env, contacts=True, resets=True)
    other = make_env(first_task(ml45, "push-v3").task)
    assert "reset" not in install_fast_paths(other, resets=False)
    env.close()
    other.close()
