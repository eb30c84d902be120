"""Meta-World's own reward code, run with faster helpers, bit for bit (issue 16).

Each v3 class computes its reward in methods of its own (``evaluate_state``, ``compute_reward``, some
``_gripper_caging_reward`` …) that call ``reward_utils.tolerance`` (101 ``long_tail`` and 7 ``gaussian`` calls
in metaworld 3.1.1's sources) and ``np.linalg.norm`` (94 methods): general functions whose argument handling
costs more than their arithmetic on the scalars and 3-vectors the classes pass (stock, per call: ~11 µs
for a tolerance, ~4 µs for a norm; together ~15 % of a fast step of ML10's classes).

:func:`relink` binds, on one instance, copies of the class's methods that name ``reward_utils`` or
``np.linalg``: the same code objects (the same operations in the same order) with globals in which
``reward_utils.tolerance`` is :func:`tolerance` and ``np.linalg.norm`` is :func:`norm`. Each of the two takes
the common case with the stock arithmetic (numpy's own scalar operations, ``sqrt`` ufunc and ``dot``) and
hands any other argument to the stock function:

- :func:`tolerance`: a float64 or Python-float ``x``, float / int / float64 bounds and margin, the
  ``long_tail`` or ``gaussian`` sigmoid with a value at the margin in (0, 1): the stock's
  ``np.where``/``np.logical_and``/``.item()`` on a scalar reduce to one comparison and the sigmoid's own
  expression on a float64 scalar (``d = (lower − x or x − upper) / margin``, ``1 / ((d·s)² + 1)`` or
  ``exp(−0.5·(d·s)²)``, ``s`` computed by the stock expression), returned as the same Python float;
- :func:`norm`: a float64 ndarray with no ``ord``, ``axis`` or ``keepdims``: ``sqrt(x.dot(x))`` of
  ``x.ravel(order="K")``, numpy's own code for that case without its checks.

The metaworld modules, their classes and every other instance keep the stock functions (the test oracle is
a stock instance in the same process). ``evaluate_state`` is wrapped by Meta-World's
``assert_task_is_set``; the wrapped method is relinked and wrapped again by the same decorator.
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Callable
from typing import Any

import numpy as np
from metaworld.sawyer_xyz_env import SawyerXYZEnv
from metaworld.utils import reward_utils

_stock_tolerance = reward_utils.tolerance
_stock_norm = np.linalg.norm
_sqrt = np.sqrt
_FLOAT64 = np.dtype(np.float64)
_SCALAR_TYPES = (float, np.float64)
_BOUND_TYPES = (float, int, np.float64)
_SIGMOIDS = ("long_tail", "gaussian")
_NAMES = frozenset({"reward_utils", "linalg"})
"""Names in a method's code that make it worth relinking."""
_TASK_CHECK = SawyerXYZEnv._Decorators.assert_task_is_set
_TASK_CHECK_CODE = _TASK_CHECK(lambda self: None).__code__
"""The code of Meta-World's ``assert_task_is_set`` wrapper (its closure holds the wrapped method)."""


@functools.cache
def sigmoid_scale(sigmoid: str, value_at_1: float) -> np.float64:
    """``reward_utils._sigmoids``'s scale, by its own expression (``long_tail``: 3.0 at the default 0.1)."""
    if sigmoid == "long_tail":
        return np.sqrt(1 / value_at_1 - 1)
    return np.sqrt(-2 * np.log(value_at_1))


def tolerance(
    x: Any,
    bounds: tuple[Any, Any] = (0.0, 0.0),
    margin: Any = 0.0,
    sigmoid: str = "gaussian",
    value_at_margin: float = reward_utils._DEFAULT_VALUE_AT_MARGIN,
) -> Any:
    """``reward_utils.tolerance`` (same value, same type) for a scalar ``x`` and a ``long_tail`` or
    ``gaussian`` sigmoid; anything else goes to the stock function."""
    lower, upper = bounds
    if not (
        type(x) in _SCALAR_TYPES
        and type(lower) in _BOUND_TYPES
        and type(upper) in _BOUND_TYPES
        and type(margin) in _BOUND_TYPES
        and sigmoid in _SIGMOIDS
        and type(value_at_margin) in _SCALAR_TYPES
        and 0 < value_at_margin < 1
    ):
        return _stock_tolerance(x, bounds, margin, sigmoid, value_at_margin)  # type: ignore[arg-type]
    if lower > upper:
        raise ValueError("Lower bound must be <= upper bound.")
    if margin < 0:
        raise ValueError(f"`margin` must be non-negative. Current value: {margin}")
    if lower <= x and x <= upper:
        return 1.0
    if margin == 0:
        return 0.0
    d = np.float64(lower - x if x < lower else x - upper) / margin
    scaled = d * sigmoid_scale(sigmoid, value_at_margin)
    if sigmoid == "long_tail":
        return float(1 / (scaled**2 + 1))
    return float(np.exp(-0.5 * scaled**2))


def norm(x: Any, ord: Any = None, axis: Any = None, keepdims: bool = False) -> Any:
    """``np.linalg.norm`` (same value, same type): a float64 array with no options, or a 1-D one with
    ``ord=2``, takes numpy's own default case, ``sqrt(x.dot(x))`` of ``x.ravel(order="K")``, without the
    checks; else the stock one."""
    if (
        type(x) is not np.ndarray
        or x.dtype != _FLOAT64
        or keepdims
        or axis is not None
        or not (ord is None or (type(ord) is int and ord == 2 and x.ndim == 1))
    ):
        return _stock_norm(x, ord, axis, keepdims)
    flat = x.ravel(order="K")
    return _sqrt(flat.dot(flat))


def _namespace(module: types.ModuleType, **replacements: Any) -> types.ModuleType:
    """A module object holding ``module``'s names with ``replacements``; any name not copied (numpy loads
    some lazily) is looked up on ``module``."""
    proxy = types.ModuleType(module.__name__, module.__doc__)
    vars(proxy).update(vars(module))
    vars(proxy).update(replacements, __getattr__=functools.partial(getattr, module))
    return proxy


def _class_proxy(klass: type, **functions: Callable[..., Any]) -> types.ModuleType:
    """An object that answers ``klass.<name>`` with ``functions[name]`` and anything else with ``klass``'s
    own attribute: what a relinked method's ``Klass._reward_pos(…)`` (a static method called through the
    class's global name) reaches."""
    proxy = types.ModuleType(klass.__name__, klass.__doc__)
    vars(proxy).update(functions, __getattr__=functools.partial(getattr, klass))
    return proxy


FAST_NUMPY = _namespace(np, linalg=_namespace(np.linalg, norm=norm))
FAST_REWARD_UTILS = _namespace(reward_utils, tolerance=tolerance)


def _names(code: types.CodeType) -> set[str]:
    """The global and attribute names a code object and the functions nested in it use."""
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _names(constant)
    return names


@functools.cache
def _module_scope(module_name: str) -> tuple[dict[str, Any], frozenset[str]]:
    """The module's globals for relinked code, and the names whose use makes a method worth relinking.

    ``np`` and ``reward_utils`` (where they are numpy and Meta-World's) become the fast namespaces; a class
    of the module with static methods that use them (5 classes call ``Klass._reward_pos(…)``,
    ``Klass._reward_quat(…)`` …) becomes a :func:`_class_proxy` holding relinked copies of those. Shared by
    every relinked method of the module."""
    module = sys.modules[module_name]
    scope = dict(vars(module))
    if scope.get("np") is np:
        scope["np"] = FAST_NUMPY
    if scope.get("reward_utils") is reward_utils:
        scope["reward_utils"] = FAST_REWARD_UTILS
    names = set(_NAMES)
    for name, value in vars(module).items():
        if not (isinstance(value, type) and value.__module__ == module_name):
            continue
        statics = {
            key: _relinked(method.__func__, scope)
            for key, method in vars(value).items()
            if isinstance(method, staticmethod)
            and isinstance(method.__func__, types.FunctionType)
            and _NAMES & _names(method.__func__.__code__)
        }
        if statics:
            scope[name] = _class_proxy(value, **statics)
            names.add(name)
    return scope, frozenset(names)


def function_copy(
    function: types.FunctionType, code: types.CodeType | None = None, scope: dict[str, Any] | None = None
) -> types.FunctionType:
    """A new function object of ``code`` (default: ``function``'s own) with the globals ``scope`` (default:
    ``function``'s own), and ``function``'s defaults, closure and names."""
    copy = types.FunctionType(
        function.__code__ if code is None else code,
        function.__globals__ if scope is None else scope,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    copy.__kwdefaults__ = function.__kwdefaults__
    copy.__qualname__ = function.__qualname__
    copy.__doc__ = function.__doc__
    return copy


def _relinked(function: types.FunctionType, scope: dict[str, Any] | None = None) -> types.FunctionType:
    """``function`` with the fast globals of its module: same code, defaults, closure and names."""
    return function_copy(function, scope=_module_scope(function.__module__)[0] if scope is None else scope)


def _uses_fast_names(function: types.FunctionType) -> bool:
    return bool(_module_scope(function.__module__)[1] & _names(function.__code__))


def relinkable(env: SawyerXYZEnv) -> dict[str, Callable[..., Any]]:
    """The instance's class methods to relink, by name: each one defined by a class of a
    ``metaworld.envs`` module (the most derived definition of the name) that uses ``reward_utils`` or
    ``np.linalg`` (or one of the module's relinked static methods), directly or inside Meta-World's
    ``assert_task_is_set`` wrapper."""
    found: dict[str, Callable[..., Any]] = {}
    seen: set[str] = set()
    for klass in type(env).__mro__:
        for name, value in vars(klass).items():
            if name in seen:
                continue
            seen.add(name)
            if not (klass.__module__.startswith("metaworld.envs.") and isinstance(value, types.FunctionType)):
                continue
            if value.__code__ is _TASK_CHECK_CODE:
                wrapped = value.__closure__[0].cell_contents if value.__closure__ else None
                if isinstance(wrapped, types.FunctionType) and _uses_fast_names(wrapped):
                    found[name] = _TASK_CHECK(_relinked(wrapped))
            elif _uses_fast_names(value):
                found[name] = _relinked(value)
    return found


def relink(env: SawyerXYZEnv) -> list[str]:
    """Bind :func:`relinkable`'s methods onto this one instance, except names the instance already holds (the
    other fast paths); returns the names bound."""
    bound = []
    for name, function in relinkable(env).items():
        if name not in vars(env):
            setattr(env, name, types.MethodType(function, env))
            bound.append(name)
    return bound
