"""maml.envs.metaworld_rewards: Meta-World's reward code with fast ``tolerance`` and ``norm``, to the bit.

The helpers against the stock functions over a grid of the arguments the classes pass (and the ones they
hand back to the stock code); the relinking against a stock instance (whole episodes of every class are in
tests/test_metaworld_fast.py, which installs it with the other fast paths).
"""

from __future__ import annotations

import itertools
import math
import pickle
import types

import metaworld.envs.sawyer_door_v3 as door_module
import numpy as np
import pytest
from metaworld.sawyer_xyz_env import SawyerXYZEnv
from metaworld.utils import reward_utils
from test_metaworld_fast import assert_same_episode, first_task

from maml.envs import metaworld_rewards
from maml.envs import metaworld_tasks as mwt
from maml.envs.metaworld_fast import install_fast_paths
from maml.envs.metaworld_pool import make_env
from maml.envs.metaworld_rewards import norm, relink, relinkable, tolerance

CLASS_NAME_STATICS = (
    "assembly-v3",
    "box-close-v3",
    "disassemble-v3",
    "door-open-v3",
    "door-close-v3",
    "hammer-v3",
)
"""Classes whose reward calls static methods through the class's global name (``Klass._reward_pos(…)``)."""


@pytest.fixture(scope="module")
def ml45() -> mwt.TaskSet:
    return mwt.load_task_set("ml45")


def same(result, expected) -> bool:
    """Equal value (NaN equal to NaN) and the same type."""
    if type(result) is not type(expected):
        return False
    if isinstance(expected, np.ndarray):
        return result.dtype == expected.dtype and np.array_equal(result, expected, equal_nan=True)
    return result == expected or (result != result and expected != expected)


def outcome(function, *args):
    """``function(*args)``, or ``(ValueError, message)`` for the error it raised."""
    try:
        return function(*args)
    except ValueError as error:
        return ValueError, str(error)


def same_outcome(result, expected) -> bool:
    return result == expected if isinstance(expected, tuple) else same(result, expected)


BOUNDS = (
    (0.0, 0.05),
    (0, 0.02),
    (np.float64(-0.3), np.float64(0.0)),
    (0.02, 0.02),
    (1.0, -1.0),
    (0.0, math.inf),
)
XS = (-0.7, -0.3, -1e-9, 0.0, 0.01, 0.02, 0.05, 0.05 + 1e-12, 0.3, 2.5, 1e6, math.inf, -math.inf, math.nan)
MARGINS = (0.0, 0, 0.01, np.float64(0.25), 3, -0.1)


@pytest.mark.parametrize("sigmoid", ["long_tail", "gaussian"])
@pytest.mark.parametrize("value_at_margin", [0.1, 0.5, np.float64(0.2)])
def test_tolerance_equals_metaworlds(sigmoid, value_at_margin):
    """Value and type (a Python float), or the same ValueError, for scalar ``x`` (Python and numpy floats)
    inside, at and beyond the bounds, non-finite ``x``, zero and positive margins of several types, inverted
    bounds and a negative margin."""
    checked = 0
    for (lower, upper), x, margin, kind in itertools.product(BOUNDS, XS, MARGINS, (float, np.float64)):
        args = (kind(x), (lower, upper), margin, sigmoid, value_at_margin)
        with np.errstate(all="ignore"):
            expected = outcome(reward_utils.tolerance, *args)
            result = outcome(tolerance, *args)
        assert same_outcome(result, expected), args
        checked += 1
    assert checked == len(BOUNDS) * len(XS) * len(MARGINS) * 2


@pytest.mark.parametrize(
    "args",
    [
        (np.array([0.1, -0.2, 0.01]), (0.0, 0.05), 0.1, "long_tail", 0.1),  # an array x
        (np.float32(0.3), (0.0, 0.05), 0.1, "long_tail", 0.1),  # float32 arithmetic
        (0.3, (np.float32(0.0), 0.05), 0.1, "long_tail", 0.1),
        (0.3, (0.0, 0.05), np.float32(0.1), "gaussian", 0.1),
        (0.3, (0.0, 0.05), 0.1, "long_tail", np.float32(0.1)),
        (0.3, (False, True), 0.1, "long_tail", 0.1),  # bool bounds
        (0.3, (0.0, 0.05), 0.1, "linear", 0.1),  # other sigmoids
        (0.3, (0.0, 0.05), 0.1, "reciprocal", 0.1),
        (0.3, (0.0, 0.05), 0.1, "tanh_squared", 0.1),
        (0.01, (0.0, 0.05), 0.1, "long_tail", 1.0),  # value at the margin out of range: stock refuses
        (0.01, (0.0, 0.05), 0.1, "gaussian", 0.0),
        (0.01, (0.0, 0.05), 0.0, "long_tail", 1.5),  # … unless the margin is 0
        (3, (0.0, 0.05), 0.1, "long_tail", 0.1),  # an int x
    ],
)
def test_tolerance_hands_other_arguments_to_metaworld(args, monkeypatch):
    """Arguments outside the fast case reach the stock function, whose answer (or error) comes back."""
    calls = []

    def stock(*arguments):
        calls.append(arguments)
        return reward_utils.tolerance(*arguments)

    monkeypatch.setattr(metaworld_rewards, "_stock_tolerance", stock)
    expected = outcome(reward_utils.tolerance, *args)
    result = outcome(tolerance, *args)
    assert calls == [args]
    assert same_outcome(result, expected)


def test_tolerance_takes_the_fast_case_without_metaworld(monkeypatch):
    monkeypatch.setattr(metaworld_rewards, "_stock_tolerance", None)
    assert tolerance(np.float64(0.08), (0, 0.05), 0.1, "long_tail") == reward_utils.tolerance(
        np.float64(0.08), (0, 0.05), 0.1, "long_tail"
    )
    assert tolerance(0.08, bounds=(0.0, 0.05), margin=np.float64(0.1)) == reward_utils.tolerance(
        0.08, bounds=(0.0, 0.05), margin=np.float64(0.1)
    )


def test_sigmoid_scales_are_metaworlds():
    assert metaworld_rewards.sigmoid_scale("long_tail", 0.1) == np.sqrt(1 / 0.1 - 1) == 3.0
    assert metaworld_rewards.sigmoid_scale("gaussian", 0.1) == np.sqrt(-2 * np.log(0.1))
    assert type(metaworld_rewards.sigmoid_scale("gaussian", 0.3)) is np.float64


def norm_inputs():
    rng = np.random.default_rng(0)
    vector = rng.normal(size=7) * 1e3
    matrix = rng.normal(size=(4, 5))
    return [
        vector[:3].copy(),
        vector,
        vector[::2],  # strided: ravel copies, as in numpy
        matrix,
        np.asfortranarray(matrix),  # ravel(order="K") keeps memory order
        matrix[:, 1],
        np.array([3.0, 4.0]),
        np.array([np.inf, 1.0]),
        np.array([np.nan, 1.0]),
        np.array([1e200, 1e200]),  # overflows in the square, as numpy's does
        np.zeros(0),
        np.array(2.5),  # 0-d
        pickle.loads(pickle.dumps(vector)),  # an unpickled array: float64, another dtype object (task data)
    ]


def test_norm_equals_numpys(monkeypatch):
    """Value and type, numpy's default case taken without numpy's function."""
    monkeypatch.setattr(metaworld_rewards, "_stock_norm", None)
    for x in norm_inputs():
        with np.errstate(all="ignore"):
            expected = np.linalg.norm(x)
            result = norm(x)
        assert same(result, expected), x
        if x.ndim == 1:  # the 2-norm of a vector: numpy's same default case
            with np.errstate(all="ignore"):
                assert same(norm(x, ord=2), np.linalg.norm(x, ord=2)), x


@pytest.mark.parametrize(
    ("x", "kwargs"),
    [
        (np.array([1.0, 2.0, 2.0], dtype=np.float32), {}),
        (np.array([1, 2, 2]), {}),
        ([1.0, 2.0, 2.0], {}),
        (np.float64(-3.0), {}),
        (np.array([1.0, 2.0, 2.0]), {"ord": 1}),
        (np.array([1.0, 2.0, 2.0]), {"ord": np.inf}),
        (np.arange(6.0).reshape(2, 3), {"axis": 1}),
        (np.arange(6.0).reshape(2, 3), {"ord": 2}),  # a matrix's 2-norm: its largest singular value
        (np.array([1.0, 2.0, 2.0]), {"ord": 2.0}),  # a float order: numpy's own checks
        (np.array([1.0, 2.0, 2.0]), {"ord": 3}),
        (np.array([1.0, 2.0, 2.0]), {"keepdims": True}),
        (np.array([1.0, 2.0j]), {}),
        (np.array([1.0, 2.0, 2.0]).astype(">f8"), {}),  # big-endian float64
    ],
)
def test_norm_hands_other_arguments_to_numpy(x, kwargs, monkeypatch):
    calls = []
    stock = np.linalg.norm

    def counted(*arguments):
        calls.append(arguments)
        return stock(*arguments)

    monkeypatch.setattr(metaworld_rewards, "_stock_norm", counted)
    assert same(norm(x, **kwargs), stock(x, **kwargs))
    assert len(calls) == 1


def test_the_fast_namespaces_differ_from_the_stock_modules_only_where_replaced():
    fast_np, fast_ru = metaworld_rewards.FAST_NUMPY, metaworld_rewards.FAST_REWARD_UTILS
    assert fast_np.linalg.norm is norm and fast_ru.tolerance is tolerance
    assert np.linalg.norm is not norm and reward_utils.tolerance is not tolerance  # stock modules untouched
    assert fast_np.array is np.array and fast_np.float64 is np.float64 and fast_np.linalg.inv is np.linalg.inv
    assert fast_ru.hamacher_product is reward_utils.hamacher_product
    assert fast_np.__getattr__("testing") is np.testing  # a name numpy loads on demand


def test_relinking_stays_on_the_instance(ml45):
    """The relinked methods are the class's own code with other globals, bound on one instance; the class,
    its module and other instances keep the stock ones, and ``evaluate_state`` still checks the task."""
    task = first_task(ml45, "push-v3")
    env, other = make_env(task.task), make_env(task.task)
    klass = type(env)
    module_globals = klass.compute_reward.__globals__
    bound = relink(env)
    assert "compute_reward" in bound and not set(bound) & set(vars(other))
    relinked = vars(env)["compute_reward"].__func__
    assert relinked.__code__ is klass.compute_reward.__code__ and relinked is not klass.compute_reward
    assert relinked.__globals__["np"] is metaworld_rewards.FAST_NUMPY
    assert relinked.__globals__["reward_utils"] is metaworld_rewards.FAST_REWARD_UTILS
    assert module_globals["np"] is np and module_globals["reward_utils"] is reward_utils
    assert klass.compute_reward.__globals__ is module_globals
    with pytest.raises(RuntimeError, match=r"You must call env\.set_task before using env\.evaluate_state"):
        env.evaluate_state(np.zeros(39), np.zeros(4))
    assert relink(env) == []  # names the instance already holds are left alone
    env.close()
    other.close()


@pytest.mark.parametrize("class_name", ["stick-push-v3", "stick-pull-v3"])
def test_relinking_rewraps_a_decorated_evaluate_state(ml45, class_name):
    """A class whose ``evaluate_state`` itself uses a fast name (these two) gets it relinked inside
    Meta-World's ``assert_task_is_set`` wrapper, found by the wrapper's code: the wrapper's check and the
    method's own code with the fast globals."""
    env = make_env(first_task(ml45, class_name).task)
    wrapper = relinkable(env)["evaluate_state"]
    assert wrapper.__code__ is metaworld_rewards._TASK_CHECK_CODE
    inner = wrapper.__closure__[0].cell_contents
    stock_inner = type(env).evaluate_state.__closure__[0].cell_contents
    assert inner.__code__ is stock_inner.__code__
    assert inner.__globals__["np"] is metaworld_rewards.FAST_NUMPY and stock_inner.__globals__["np"] is np
    with pytest.raises(RuntimeError, match=r"before using env\.evaluate_state"):
        wrapper(env, np.zeros(39), np.zeros(4))
    env.close()


def stock_calls(env, monkeypatch, steps: int = 30) -> int:
    """Calls of Meta-World's own ``reward_utils.tolerance`` (the module attribute, which stock code reads at
    each call) and of the fast one's hand-over to it, over a reset and ``steps`` random steps."""
    calls = []
    stock = reward_utils.tolerance

    def counted(*args, **kwargs):
        calls.append(args)
        return stock(*args, **kwargs)

    monkeypatch.setattr(reward_utils, "tolerance", counted)
    monkeypatch.setattr(metaworld_rewards, "_stock_tolerance", counted)
    env.reset(seed=0)
    for action in np.random.default_rng(0).uniform(-1, 1, (steps, 4)):
        env.step(action)
    monkeypatch.undo()
    return len(calls)


@pytest.mark.parametrize("class_name", CLASS_NAME_STATICS)
def test_static_reward_methods_called_through_the_class_name_are_relinked(ml45, class_name, monkeypatch):
    """A class's static reward methods reached as ``Klass._reward_pos(…)`` run the fast helpers too (a
    proxy under the class's name in the relinked globals): an episode calls Meta-World's ``tolerance``
    never, where a stock instance calls it at every step."""
    task = first_task(ml45, class_name)
    stock, fast = make_env(task.task), make_env(task.task)
    install_fast_paths(fast, contacts=True)
    for env in (stock, fast):
        env.set_task(task.task)
    assert stock_calls(stock, monkeypatch) >= 30
    assert stock_calls(fast, monkeypatch) == 0
    stock.close()
    fast.close()


def test_tolerance_defaults_are_metaworlds():
    """The defaults (exact bounds at 0, no margin, gaussian, 0.1 at the margin) are Meta-World's."""
    for x in (0.0, 0.3, -0.2):
        assert tolerance(x) == reward_utils.tolerance(x)
        assert tolerance(x, margin=0.5) == reward_utils.tolerance(x, margin=0.5)
        assert tolerance(x, bounds=(0.0, 0.5)) == reward_utils.tolerance(x, bounds=(0.0, 0.5))
    assert tolerance(0.3) == 0.0 and tolerance(0.0) == 1.0


def test_the_class_proxy_answers_everything_else_from_the_class():
    scope, names = metaworld_rewards._module_scope(door_module.__name__)
    proxy = scope["SawyerDoorEnvV3"]
    assert "SawyerDoorEnvV3" in names and isinstance(proxy, types.ModuleType)
    assert proxy._reward_pos is not door_module.SawyerDoorEnvV3._reward_pos  # relinked copy
    assert proxy._reward_pos.__code__ is door_module.SawyerDoorEnvV3._reward_pos.__code__
    assert proxy.max_path_length == SawyerXYZEnv.max_path_length  # inherited attributes, from the class
    assert proxy.evaluate_state is door_module.SawyerDoorEnvV3.evaluate_state
    assert door_module.SawyerDoorEnvV3 is vars(door_module)["SawyerDoorEnvV3"]  # the module keeps its class


@pytest.mark.parametrize("class_name", ["door-open-v3", "hammer-v3", "sweep-v3"])
def test_relinked_episodes_equal_stock(ml45, class_name):
    """Whole episodes with the fast paths and the relinked rewards against stock (every class:
    test_metaworld_fast)."""
    assert_same_episode(first_task(ml45, class_name), "random")
