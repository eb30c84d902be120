"""Meta-World: task samplers, the worker pool and wave sampler (seeding, oracle, scripted policy, failures),
the meta-test protocol, and the harness end to end.

Benchmarks come from the user cache (:mod:`maml.envs.metaworld_tasks`); ML45 is only built in a slow test.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections import Counter
from dataclasses import fields, replace
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import metaworld
import numpy as np
import pandas as pd
import pytest
import torch
from metaworld.policies import SawyerPickPlaceV3Policy, SawyerPushV3Policy
from metaworld.sawyer_xyz_env import SawyerXYZEnv

import bench.run.trainer
from bench import run_format as rf
from bench.run.experiments import ConfigError, preset
from bench.run.families import MetaWorldFamily, make_family
from bench.run.trainer import RunSpec, Trainer
from maml import cache, policy
from maml.envs import metaworld_tasks as mwt
from maml.envs.errors import NonFiniteActionError
from maml.envs.metaworld_fast import install_fast_paths
from maml.envs.metaworld_pool import (
    ACT_DIM,
    KEEP_INSTANCES,
    OBS_DIM,
    START_HINT,
    STEP_COST_MS,
    MetaWorldPool,
    WorkerError,
    _exit_reason,
    _Runner,
    _worker_main,
    default_num_workers,
    env_controls,
    make_env,
    reset_seed,
    where_running,
)
from maml.envs.metaworld_tasks import MetaWorldTask
from maml.sampler import ENV_STREAM, episode_seed
from maml.wave_sampler import (
    MAX_INSTANCES_PER_WORKER,
    WaveEnv,
    assign_slots,
    plan_waves,
    sample_in_waves,
)

REPO = Path(__file__).resolve().parents[1]
ML10_TRAIN = (
    "reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-close-v3", "button-press-topdown-v3",
    "peg-insert-side-v3", "window-open-v3", "sweep-v3", "basketball-v3",
)  # fmt: skip
ML10_TEST = ("drawer-open-v3", "door-close-v3", "shelf-place-v3", "sweep-into-v3", "lever-pull-v3")
SEED = 3
SCRIPTED_WARNING = "ignore:Constant.*may be too high:UserWarning"
"""Meta-World's scripted policies warn that their gains exceed the action bounds (the env clips)."""


# --- fixtures ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ml1() -> mwt.TaskSet:
    return mwt.load_task_set("ml1_push")


@pytest.fixture(scope="module")
def ml10() -> mwt.TaskSet:
    return mwt.load_task_set("ml10")


@pytest.fixture(scope="module")
def pool1():
    with MetaWorldPool(1) as pool:
        yield pool


@pytest.fixture(scope="module")
def pool2():
    """Two worker processes."""
    with MetaWorldPool(2, in_process_worker=False) as pool:
        yield pool


@pytest.fixture(scope="module")
def pool2_in_process():
    """Two workers, worker 0 in the test process (the default)."""
    with MetaWorldPool(2) as pool:
        yield pool


def random_params(num_tasks: int, seed: int = 0) -> policy.Params:
    """Different parameters per task ``[T, ...]`` (θ plus noise), float32."""
    g = torch.Generator().manual_seed(seed)
    theta = policy.init_params(OBS_DIM, ACT_DIM, (16, 16), g)
    noise = {n: 0.0 if n == "log_std" else 0.1 for n in theta}
    return {n: p + noise[n] * torch.randn(num_tasks, *p.shape, generator=g) for n, p in theta.items()}


def mixed_ml10_tasks(ml10: mwt.TaskSet) -> list[MetaWorldTask]:
    """Four train tasks of three classes (two of reach): 1 and 2 workers lay the waves out differently."""
    return [
        ml10.train["reach-v3"][3],
        ml10.train["push-v3"][0],
        ml10.train["reach-v3"][7],
        ml10.train["pick-place-v3"][1],
    ]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_dead(pids: list[int], timeout: float = 30.0) -> bool:
    """Whether every process in ``pids`` is gone within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(alive(pid) for pid in pids)


def reset_payload(tasks: list[MetaWorldTask]) -> list[tuple[metaworld.Task, int]]:
    """A worker's reset message for ``tasks``: ``[(Task, seed), …]``, episode ``i`` seeded from ``i``."""
    return [(t.task, reset_seed(np.random.SeedSequence(i))) for i, t in enumerate(tasks)]


def run_script(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    """``text`` run as a Python script from the repository (60 s at most)."""
    script = tmp_path / "script.py"
    script.write_text(text)
    return subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=60)


def observable(task: MetaWorldTask) -> MetaWorldTask:
    """The same goal with its position in the observation (what Meta-World's scripted policies read)."""
    data = pickle.loads(task.task.data)
    data["partially_observable"] = False
    return replace(task, task=metaworld.Task(task.task.env_name, pickle.dumps(data)))


def scripted_push(params: policy.Params, obs: torch.Tensor, calls: list[int] | None = None) -> torch.Tensor:
    """Meta-World's SawyerPushV3Policy as the policy mean: ``obs [n, 1, 39]`` → ``[n, 1, 4]``."""
    if calls is not None:
        calls.append(obs.shape[0])
    agent = SawyerPushV3Policy()
    actions = np.stack([agent.get_action(o) for o in obs[:, 0].double().numpy()])
    return torch.from_numpy(actions).to(obs.dtype).unsqueeze(1)


def replay(task: MetaWorldTask, seed: np.random.SeedSequence, actions: np.ndarray, action_scale: float):
    """A fresh Meta-World environment stepped by hand: observations ``[H, 39]`` (before each action), rewards
    ``[H]``, success ``[H]``."""
    env = make_env(task.task)
    env.set_task(task.task)
    env.seed(reset_seed(seed))
    obs, _ = env.reset(seed=reset_seed(seed))
    observations, rewards, success = [], [], []
    for action in actions:
        observations.append(obs)
        obs, reward, _, _, info = env.step(env_controls(action, action_scale))
        rewards.append(reward)
        success.append(info["success"])
    env.close()
    return np.array(observations), np.array(rewards), np.array(success)


# --- tasks ------------------------------------------------------------------------------------------------
def test_cache_builds_once_and_rebuilds_a_corrupt_file(tmp_path, monkeypatch):
    builds = []

    def build():
        builds.append(1)
        return {"tasks": len(builds)}

    path = tmp_path / "sub" / "thing.pkl"

    def check(value):
        return isinstance(value, dict)

    assert mwt.cached(path, build, check, "thing") == {"tasks": 1}
    assert mwt.cached(path, build, check, "thing") == {"tasks": 1} and len(builds) == 1
    path.write_bytes(b"\x80\x05 truncated")
    with pytest.warns(UserWarning, match=r"thing\.pkl is corrupt .*rebuilding"):
        assert mwt.cached(path, build, check, "thing") == {"tasks": 2}
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.warns(UserWarning, match="holds a list, not the expected object"):
        assert mwt.cached(path, build, check, "thing") == {"tasks": 3}
    assert pickle.loads(path.read_bytes()) == {"tasks": 3}
    assert [p.name for p in path.parent.iterdir()] == ["thing.pkl"]  # no temporary files left

    monkeypatch.setenv(cache.CACHE_ENV_VAR, str(tmp_path / "cache"))
    version = mwt.importlib.metadata.version("metaworld")
    assert mwt.cache_path("ml10", 0) == tmp_path / "cache" / f"metaworld-{version}" / "ml10-seed0.pkl"
    monkeypatch.delenv(cache.CACHE_ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "maml-bench"


class Unpicklable:
    def __reduce__(self):
        raise TypeError("not picklable, on purpose")


def test_atomic_write_makes_its_folders_replaces_and_leaves_nothing_behind_on_failure(tmp_path):
    """The cache writer creates missing folders (several levels), replaces a file in a folder that exists,
    and when pickling or the final rename fails it raises, keeps the file already there, and removes its
    temporary file."""
    folder = tmp_path / "a" / "b"
    path = folder / "value.pkl"
    mwt.write_atomically(path, {"x": 1})
    mwt.write_atomically(path, {"x": 2})
    assert pickle.loads(path.read_bytes()) == {"x": 2}
    with pytest.raises(TypeError, match="on purpose"):
        mwt.write_atomically(path, Unpicklable())
    taken = folder / "taken"  # the rename onto a folder that holds a file fails
    taken.mkdir()
    (taken / "file").touch()
    with pytest.raises(OSError):
        mwt.write_atomically(taken, {"x": 3})
    assert pickle.loads(path.read_bytes()) == {"x": 2}
    assert sorted(p.name for p in folder.iterdir()) == ["taken", "value.pkl"]


def test_cold_build_of_ml1_is_cached_and_equal(tmp_path, ml1):
    benchmark = mwt.load_benchmark("ml1_push", directory=tmp_path)
    assert mwt.cache_path("ml1_push", mwt.BENCHMARK_SEED, tmp_path).is_file()
    assert mwt.task_set("ml1_push", benchmark) == ml1 == mwt.load_task_set("ml1_push", directory=tmp_path)
    with pytest.raises(ValueError, match=r"unknown Meta-World benchmark 'ml5'.*ml1_push, ml10, ml45"):
        mwt.load_benchmark("ml5", directory=tmp_path)


def test_ml1_samples_push_goals_seeded(ml1):
    assert ml1.train_classes == ml1.test_classes == ml1.class_names == ("push-v3",)
    assert len(ml1.train["push-v3"]) == len(ml1.test["push-v3"]) == 50
    tasks = mwt.sample_train_tasks(ml1, np.random.default_rng(0), 20)
    assert len(tasks) == 20 and len({t.goal for t in tasks}) == 20  # distinct goals within a meta-batch
    assert {(t.class_name, t.split, t.task.env_name) for t in tasks} == {("push-v3", "train", "push-v3")}
    assert tasks == mwt.sample_train_tasks(ml1, np.random.default_rng(0), 20)
    assert tasks != mwt.sample_train_tasks(ml1, np.random.default_rng(1), 20)
    assert len({t.goal for t in mwt.sample_train_tasks(ml1, np.random.default_rng(0), 70)}) == 50
    test = mwt.pick_test_tasks(ml1, np.random.default_rng(0), 5)
    assert len(test) == 5 and {t.split for t in test} == {"test"}
    assert len(mwt.pick_test_tasks(ml1, np.random.default_rng(0), 500)) == 50  # capped
    train_goals = {pickle.loads(t.task.data)["rand_vec"].tobytes() for t in ml1.train["push-v3"]}
    assert not train_goals & {pickle.loads(t.task.data)["rand_vec"].tobytes() for t in ml1.test["push-v3"]}
    assert pickle.loads(pickle.dumps(tasks[0])) == tasks[0]


def test_ml10_samples_meta_batch_over_classes(ml10):
    assert ml10.train_classes == ML10_TRAIN and ml10.test_classes == ML10_TEST
    assert ml10.class_names == ML10_TRAIN + ML10_TEST and ml10.num_test_tasks == 250
    tasks = mwt.sample_train_tasks(ml10, np.random.default_rng(0), 20)
    assert Counter(t.class_name for t in tasks) == dict.fromkeys(ML10_TRAIN, 2)
    assert all(t.split == "train" and t.task.env_name == t.class_name for t in tasks)
    with pytest.raises(
        ValueError, match="10 train classes: meta_batch_size must be a positive multiple of 10"
    ):
        mwt.sample_train_tasks(ml10, np.random.default_rng(0), 15)
    test = mwt.pick_test_tasks(ml10, np.random.default_rng(0), 7)
    assert sorted(Counter(t.class_name for t in test).values()) == [1, 1, 1, 2, 2]
    assert [t.class_name for t in test] == sorted((t.class_name for t in test), key=ML10_TEST.index)
    everything = mwt.pick_test_tasks(ml10, np.random.default_rng(0), 300)
    assert len(everything) == 250 and len({(t.class_name, t.goal) for t in everything}) == 250


def test_test_tasks_fill_classes_of_unequal_sizes_evenly():
    """Classes with 1, 2, 5 and 12 test goals, every request size from 1 to beyond all 20 goals, many draws:
    distinct tasks, exactly min(n, 20), no class over its goals, and no class far behind another unless it
    has run out of goals: one behind at most while every class has goals left; two where a class ran out
    and its part of the remainder was drawn again among the rest. Who gets the remainder is drawn: each
    class misses out in some draw. (Meta-World's test classes have 50 goals each: none runs out below 50
    tasks per class.)"""
    sizes = {"a": 1, "b": 2, "c": 5, "d": 12}
    test = {c: tuple(mwt.MetaWorldTask(c, "test", g, None) for g in range(k)) for c, k in sizes.items()}
    tasks = mwt.TaskSet("synthetic", train={}, test=test)
    with pytest.raises(ValueError, match="num_tasks must be at least 1, got 0"):
        mwt.pick_test_tasks(tasks, np.random.default_rng(0), 0)
    for n in range(1, 23):
        left_out = set()
        for seed in range(30):
            picked = mwt.pick_test_tasks(tasks, np.random.default_rng(seed), n)
            assert len(picked) == len({(t.class_name, t.goal) for t in picked}) == min(n, 20), (n, seed)
            counts = Counter(t.class_name for t in picked)
            gap = 1 if n <= len(sizes) else 2
            for x, y in itertools.permutations(sizes, 2):
                assert counts[x] <= sizes[x], (n, seed)
                assert counts[x] >= counts[y] - gap or counts[x] == sizes[x], (n, seed)
            left_out |= {c for c in sizes if counts[c] == 0}
        if n == 3:  # three classes of four get a goal: each of the four is left out in some draw
            assert left_out == set(sizes)


@pytest.mark.slow
def test_ml45_samples_one_goal_per_class():
    ml45 = mwt.load_task_set("ml45")
    assert len(ml45.train_classes) == 45 and len(ml45.test_classes) == 5 and ml45.num_test_tasks == 250
    tasks = mwt.sample_train_tasks(ml45, np.random.default_rng(0), 45)
    assert Counter(t.class_name for t in tasks) == dict.fromkeys(ml45.train_classes, 1)
    with pytest.raises(
        ValueError, match="45 train classes: meta_batch_size must be a positive multiple of 45"
    ):
        mwt.sample_train_tasks(ml45, np.random.default_rng(0), 20)


def test_family_checks_meta_batch_size():
    family = make_family(preset("maml_trpo_metaworld_ml10", "smoke"))
    try:
        assert isinstance(family, MetaWorldFamily) and family.has_success
        assert family.class_names == ML10_TRAIN + ML10_TEST
        assert (family.observation_dim, family.action_dim) == (OBS_DIM, ACT_DIM)
    finally:
        family.close()
    with pytest.raises(ConfigError, match="multiple of 10"):
        make_family(replace(preset("maml_trpo_metaworld_ml10", "smoke"), meta_batch_size=15))


# --- waves ------------------------------------------------------------------------------------------------
def test_slots_balance_workers_with_distinct_workers_per_class():
    assert assign_slots(["push"] * 5, 2) == {"push": [0, 1, 0, 1, 0]}  # a slot per episode, spread evenly
    ten = assign_slots([f"c{i}" for i in range(10)], 2)
    assert Counter(w for ws in ten.values() for w in ws) == {0: 5, 1: 5} and all(
        len(w) == 1 for w in ten.values()
    )
    assert assign_slots([f"c{i}" for i in range(5)], 2) == {f"c{i}": [i % 2, (i + 1) % 2] for i in range(5)}
    for groups, workers in ((1, 3), (45, 2), (45, 16), (10, 16), (5, 16), (3, 7)):
        slots = assign_slots([f"c{i}" for i in range(groups)], workers)
        load = Counter(w for ws in slots.values() for w in ws)
        assert all(len(set(ws)) == len(ws) for ws in slots.values())  # distinct workers per class
        assert sum(load.values()) / (workers * max(load.values())) >= 0.9  # every worker nearly as busy


def test_slots_balance_step_costs():
    cost = {"slow": 3.0, "a": 1.0, "b": 1.0, "c": 1.0}
    assert assign_slots(["a", "b", "slow", "c"], 2, cost.__getitem__) == {
        "slow": [0],
        "a": [1],
        "b": [1],
        "c": [1],
    }
    slots = assign_slots(list(STEP_COST_MS)[:10], 2, MetaWorldPool.step_cost)
    loads = [sum(STEP_COST_MS[g] for g, ws in slots.items() if w in ws) for w in (0, 1)]
    assert max(loads) <= 1.1 * min(loads)
    with pytest.raises(ValueError, match="step costs must be positive"):
        assign_slots(["a"], 2, lambda group: 0.0)


def test_slots_grow_to_run_fewer_fuller_waves_within_the_memory_cap():
    ml10_batch = [f"c{i}" for i in range(10)] * 2  # ML10's meta-batch of 20: 2 goals per class
    slots = assign_slots(ml10_batch, 2)
    assert all(sorted(ws) == [0, 1] for ws in slots.values())
    assert len(plan_waves(ml10_batch, 1, slots)) == 1  # one wave of 20, not two of 10
    capped = assign_slots(ml10_batch, 2, max_instances_per_worker=5)  # 5 classes per worker at most
    assert all(len(ws) == 1 for ws in capped.values()) and len(plan_waves(ml10_batch, 1, capped)) == 2
    one_each = [f"c{i}" for i in range(45)]
    assert all(len(ws) == 2 for ws in assign_slots(one_each, 2, episodes_per_task=10).values())
    assert all(len(ws) == 1 for ws in assign_slots(one_each, 2, episodes_per_task=1).values())
    many = assign_slots(one_each, 16, episodes_per_task=10)
    assert all(len(ws) == 10 for ws in many.values())  # as many copies as a class has episodes
    with pytest.raises(ValueError, match="episodes_per_task"):
        assign_slots(one_each, 2, episodes_per_task=0)


def test_one_class_gets_several_slots_per_worker_within_the_cap():
    ml1_batch = ["push"] * 20  # ML1's meta-batch: 20 goals of one class, 10 episodes each
    slots = assign_slots(ml1_batch, 2, MetaWorldPool.step_cost, episodes_per_task=10)
    assert Counter(slots["push"]) == {0: 34, 1: 33}  # 3 waves of 67 (≤ 48 per worker), not 100 waves of 2
    assert [len(wave) for wave in plan_waves(ml1_batch, 10, slots)] == [67, 67, 66]
    capped = assign_slots(ml1_batch, 2, episodes_per_task=10, max_instances_per_worker=5)
    assert Counter(capped["push"]) == {0: 5, 1: 5} and len(plan_waves(ml1_batch, 10, capped)) == 20
    assert assign_slots(ml1_batch, 2, episodes_per_task=10, max_instances_per_worker=1) == {"push": [0, 1]}
    for groups, workers, episodes, cap in (
        (list(STEP_COST_MS)[:10] * 2, 2, 10, 48),  # ML10-like: 20 episodes per class, costs differ
        (list(STEP_COST_MS)[:5] * 50, 2, 10, 48),  # ML10's meta-test: 500 episodes per class
        (list(STEP_COST_MS)[:45], 2, 45, 48),  # ML45: 2 slots per class
        (list(STEP_COST_MS)[:3], 4, 7, 3),
    ):
        slots = assign_slots(groups, workers, MetaWorldPool.step_cost, episodes, cap)
        held = Counter(w for ws in slots.values() for w in ws)
        assert max(held.values()) <= cap and sum(held.values()) > len(slots)
        for ws in slots.values():  # a class's slots spread evenly over the workers
            per_worker = Counter(ws)
            assert max(per_worker.values()) - min(per_worker[w] for w in range(workers)) <= 1
        loads = [sum(STEP_COST_MS[g] * ws.count(w) for g, ws in slots.items()) for w in range(workers)]
        assert min(loads) >= 0.9 * max(loads)


@pytest.mark.parametrize(
    ("groups", "workers", "s0"),
    [
        (5, 2, 2),  # ML10's 5 test classes: 5 slots per worker (1 each: 3 and 2, 83 %)
        (10, 2, 1),  # 10 slots on 2 workers: 5 and 5
        (10, 16, 3),  # ⌈16/10⌉ = 2: 20 slots, at most 2 a worker, 62.5 %; 3: 30 of 32, 94 %
        (5, 16, 6),  # 4: 20 of 32, 62.5 %; 5: 25 of 32, 78 %; 6: 30 of 32, 94 %
        (3, 10, 6),  # 4: 12 of 20; 5: 15 of 20; 6: 18 of 20, exactly 90 % (at least 90 % is enough)
        (3, 7, 7),  # 3: 9 of 14; 4: 12 of 14, 86 %; 5: 15 of 21; 6: 18 of 21, 86 %; 7: all equal
    ],
)
def test_each_class_gets_the_fewest_slots_that_balance_the_workers(groups: int, workers: int, s0: int):
    """``s₀`` is the smallest count ≥ ⌈W/C⌉ whose ``C·s₀`` slots keep every worker at least 90 % as busy as
    the busiest (hand-computed: ``C·s / (W·⌈C·s/W⌉)``); one episode per class adds no slot."""
    slots = assign_slots([f"c{i}" for i in range(groups)], workers)
    assert [len(ws) for ws in slots.values()] == [s0] * groups
    assert all(len(set(ws)) == s0 for ws in slots.values())  # on distinct workers


@pytest.mark.parametrize("cap", [1, 5, 33, 34, 48, 50, 99, 100, 150])
def test_one_class_runs_in_the_fewest_waves_that_fit_the_cap(cap: int):
    """ML1's 200 episodes of push on 2 workers with ``cap`` instances each run in ``N = ⌈200 / (2·cap)⌉``
    waves (the fewest that fit) on ``⌈200 / N⌉`` slots, never more than ``cap`` on a worker."""
    ml1_batch = ["push"] * 20
    slots = assign_slots(ml1_batch, 2, episodes_per_task=10, max_instances_per_worker=cap)
    waves = -(-200 // min(200, 2 * cap))
    assert len(plan_waves(ml1_batch, 10, slots)) == waves
    assert len(slots["push"]) == -(-200 // waves) and max(Counter(slots["push"]).values()) <= cap


def test_classes_of_different_sizes_fit_the_cap_in_the_fewest_waves():
    """100 episodes of one class and 1 of another on one worker with room for 10 instances: the fewest
    waves N with ⌈100/N⌉ + 1 ≤ 10 slots is 12 (9 + 1 slots), not one wave on 101 instances."""
    groups = ["big"] * 100 + ["small"]
    slots = assign_slots(groups, 1, max_instances_per_worker=10)
    assert {g: len(ws) for g, ws in slots.items()} == {"big": 9, "small": 1}
    assert len(plan_waves(groups, 1, slots)) == 12


def test_slots_fill_the_workers_with_room_before_the_least_loaded():
    """A slot goes to a worker holding fewer than ``cap`` slots while one has room, even if another is less
    loaded: ``slow`` (cost 3) on worker 0, ``a`` and ``b`` (cost 1) on worker 1, which is then full (cap 2),
    so ``c`` goes to worker 0."""
    cost = {"slow": 3.0, "a": 1.0, "b": 1.0, "c": 1.0}
    slots = assign_slots(["a", "b", "slow", "c"], 2, cost.__getitem__, max_instances_per_worker=2)
    assert slots == {"a": [1], "b": [1], "slow": [0], "c": [0]}


@pytest.mark.parametrize(("episodes_per_task", "cap"), [(1, 48), (3, 48), (3, 2)])
def test_waves_cover_every_episode_once(episodes_per_task, cap):
    groups = ["a", "b", "a", "c"]
    slots = assign_slots(groups, 2, episodes_per_task=episodes_per_task, max_instances_per_worker=cap)
    waves = plan_waves(groups, 3, slots)
    done = [(t, e) for wave in waves for t, e, _ in wave]
    assert sorted(done) == [(t, e) for t in range(4) for e in range(3)]
    instances = Counter((w, g) for g, ws in slots.items() for w in ws)
    for wave in waves:
        placed = Counter((w, groups[t]) for t, _, w in wave)
        assert all(n <= instances[key] for key, n in placed.items())  # one episode per instance


# --- the pool and the wave sampler -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def ml10_run(ml10, pool2):
    tasks = mixed_ml10_tasks(ml10)
    episodes, stats = sample_in_waves(
        pool2,
        random_params(len(tasks)),
        tasks,
        episodes_per_task=3,
        max_episode_length=15,
        seed=SEED,
        epoch=2,
    )
    return tasks, episodes, stats


def test_pool_is_a_wave_env(pool2):
    assert isinstance(pool2, WaveEnv) and pool2.num_workers == 2 and len(pool2.pids) == 2
    assert pool2.step_cost("push-v3") == STEP_COST_MS["push-v3"] and pool2.step_cost("new-v9") > 0
    assert pool2.max_episode_length == 500 and dict(pool2.info_reductions) == {"success": "max"}


def test_same_seed_same_episodes_whatever_the_workers(ml10, ml10_run, pool1, pool2, pool2_in_process):
    tasks, episodes, stats = ml10_run
    assert episodes.observations.shape == (4, 3, 15, OBS_DIM) and episodes.actions.shape == (
        4,
        3,
        15,
        ACT_DIM,
    )
    assert episodes.rewards.shape == episodes.log_probs.shape == (4, 3, 15) and episodes.log_std.shape == (
        4,
        4,
    )
    assert stats.returns.shape == stats.env_infos["success"].shape == (4, 3) and stats.num_env_steps == 180
    np.testing.assert_allclose(stats.returns, episodes.rewards.double().sum(-1).numpy(), rtol=1e-6)
    kwargs = dict(episodes_per_task=3, max_episode_length=15, seed=SEED, epoch=2)
    params = random_params(len(tasks))
    assert len(pool2_in_process.pids) == 1 and pool2_in_process.num_workers == 2
    for pool in (pool1, pool2, pool2_in_process):
        again, again_stats = sample_in_waves(pool, params, tasks, **kwargs)
        for f in fields(episodes):
            if getattr(episodes, f.name) is not None:
                assert torch.equal(getattr(again, f.name), getattr(episodes, f.name)), f.name
        np.testing.assert_array_equal(again_stats.returns, stats.returns)
        np.testing.assert_array_equal(again_stats.env_infos["success"], stats.env_infos["success"])
    # an episode does not depend on the batch around it: task 2 alone, keyed 2
    alone, _ = sample_in_waves(
        pool2, {n: p[2:3] for n, p in params.items()}, tasks[2:3], task_keys=[2], **kwargs
    )
    assert torch.equal(alone.observations[0], episodes.observations[2])
    assert torch.equal(alone.actions[0], episodes.actions[2])
    other, _ = sample_in_waves(pool2, params, tasks, **(kwargs | {"seed": SEED + 1}))
    assert not torch.equal(other.actions, episodes.actions)


def test_pool_equals_a_plain_env_stepped_by_hand(ml10_run):
    tasks, episodes, stats = ml10_run
    for t, e in ((0, 0), (0, 2), (1, 1), (3, 2)):  # reach's 6 episodes ran at once, on 3 instances per worker
        seed = episode_seed(SEED, 2, 0, t, e, ENV_STREAM)
        obs, rewards, success = replay(tasks[t], seed, episodes.actions[t, e].double().numpy(), 1.0)
        assert torch.equal(episodes.observations[t, e], torch.from_numpy(obs).float())
        assert torch.equal(episodes.rewards[t, e], torch.from_numpy(rewards).float())
        assert stats.returns[t, e] == rewards.sum() and stats.env_infos["success"][t, e] == success.max()


def test_action_scale_reaches_the_env(ml1):
    tasks = mwt.sample_train_tasks(ml1, np.random.default_rng(0), 2)
    params = random_params(2)
    params["log_std"] = torch.full((2, ACT_DIM), np.log(10.0))  # actions ~10: scaled back into [−1, 1]
    with MetaWorldPool(1, action_scale=10.0) as pool:
        episodes, _ = sample_in_waves(
            pool, params, tasks, episodes_per_task=1, max_episode_length=12, seed=SEED
        )
    seed = episode_seed(SEED, 0, 0, 1, 0, ENV_STREAM)
    obs, rewards, _ = replay(tasks[1], seed, episodes.actions[1, 0].double().numpy(), 10.0)
    assert episodes.actions.abs().max() > 3
    assert torch.equal(episodes.observations[1, 0], torch.from_numpy(obs).float())
    assert torch.equal(episodes.rewards[1, 0], torch.from_numpy(rewards).float())
    np.testing.assert_array_equal(env_controls([[20.0, -5.0, 0.5, -30.0]], 10.0), [[1.0, -0.5, 0.05, -1.0]])


def test_episode_length_is_checked(ml1, pool2):
    tasks = mwt.sample_train_tasks(ml1, np.random.default_rng(0), 1)
    with pytest.raises(ValueError, match="max_episode_length 501 exceeds what the environments allow"):
        sample_in_waves(pool2, random_params(1), tasks, episodes_per_task=1, max_episode_length=501, seed=0)


def test_ml1_several_instances_per_worker_same_episodes_in_fewer_waves(ml1, pool2):
    """Push episodes give the same bits on one instance per worker (reused wave after wave) as on several per
    worker at once, in or out of process, while fewer, fuller waves run."""
    tasks = mwt.sample_train_tasks(ml1, np.random.default_rng(1), 3)
    params = random_params(len(tasks))
    horizon = 25

    def run(pool, cap):
        calls: list[int] = []

        def counted(p, obs):
            calls.append(obs.shape[0])
            return policy.mean_action(p, obs)

        episodes, stats = sample_in_waves(
            pool, params, tasks, episodes_per_task=4, max_episode_length=horizon, seed=SEED, epoch=1,
            mean_action_fn=counted, max_instances_per_worker=cap, policy_on_workers=False,
        )  # fmt: skip
        return episodes, stats, calls

    def assert_same(a, b):
        (episodes, stats, _), (other, other_stats, _) = a, b
        for f in fields(episodes):
            if getattr(episodes, f.name) is not None:
                assert torch.equal(getattr(other, f.name), getattr(episodes, f.name)), f.name
        np.testing.assert_array_equal(other_stats.returns, stats.returns)
        np.testing.assert_array_equal(other_stats.env_infos["success"], stats.env_infos["success"])

    one = run(pool2, 1)  # one push instance on each worker: 6 waves of 2
    assert one[2] == [2] * (6 * horizon)
    assert_same(one, run(pool2, 48))  # 6 instances on each worker: 1 wave of 12
    with MetaWorldPool(1) as pool:  # worker 0 in this process: its instances can be counted
        for cap, waves, instances in ((3, 4, 3), (48, 1, 12), (1, 12, 12)):  # instances are kept
            result = run(pool, cap)
            assert result[2] == [12 // waves] * (waves * horizon)
            assert len(pool._local.envs["push-v3"]) == instances
            assert_same(one, result)


def test_worker_keeps_at_most_its_cap_of_instances(ml1, ml10):
    """Beyond ``keep`` instances a worker drops idle ones, least recently run class first; an episode on a
    rebuilt instance is the same."""
    assert KEEP_INSTANCES == MAX_INSTANCES_PER_WORKER
    push = mwt.sample_train_tasks(ml1, np.random.default_rng(2), 3)
    reach = [ml10.train["reach-v3"][i] for i in range(3)]
    kwargs = dict(episodes_per_task=1, max_episode_length=5, seed=SEED)
    with MetaWorldPool(1) as pool:  # worker 0 in this process
        runner = pool._local
        runner.keep = 4

        def held():
            return {name: len(envs) for name, envs in runner.envs.items()}

        first, _ = sample_in_waves(pool, random_params(3), push, **kwargs)
        sample_in_waves(pool, random_params(3), reach, **kwargs)
        assert held() == {"push-v3": 1, "reach-v3": 3}  # 2 idle push instances dropped
        again, _ = sample_in_waves(pool, random_params(3), push, **kwargs)
        assert held() == {"push-v3": 3, "reach-v3": 1}
        assert torch.equal(again.observations, first.observations)
        assert torch.equal(again.rewards, first.rewards)
        sample_in_waves(pool, random_params(6), push + reach, **kwargs)  # a wave that needs 6 keeps them
        assert held() == {"push-v3": 3, "reach-v3": 3}


def test_worker_drops_the_last_idle_instances_of_the_least_recently_run_class(ml1, ml10):
    """One instance over the cap: exactly one is closed, the last of the least recently run class (the first
    instances stay, the same objects), and it is freed at once (an instance is a reference cycle)."""
    push = mwt.sample_train_tasks(ml1, np.random.default_rng(2), 3)
    kwargs = dict(episodes_per_task=1, max_episode_length=2, seed=SEED)
    with MetaWorldPool(1) as pool:  # worker 0 in this process, with the fast step
        runner = pool._local
        runner.keep = 4
        sample_in_waves(pool, random_params(3), push, **kwargs)
        sample_in_waves(pool, random_params(1), [ml10.train["reach-v3"][0]], **kwargs)
        assert {name: len(envs) for name, envs in runner.envs.items()} == {"push-v3": 3, "reach-v3": 1}
        before = {name: [id(env) for env in envs] for name, envs in runner.envs.items()}
        closed: list[tuple[str, int]] = []
        for name, envs in runner.envs.items():
            for i, env in enumerate(envs):
                env.close = partial(spy_close, env.close, closed, (name, i))
        last_push = weakref.ref(runner.envs["push-v3"][2])
        sample_in_waves(pool, random_params(1), [ml10.train["pick-place-v3"][0]], **kwargs)
        held = {name: [id(env) for env in envs] for name, envs in runner.envs.items()}
        assert held["push-v3"] == before["push-v3"][:2] and held["reach-v3"] == before["reach-v3"]
        assert len(held["pick-place-v3"]) == 1 and closed == [("push-v3", 2)]
        assert last_push() is None


def spy_close(close, closed: list, name: tuple[str, int]) -> None:
    closed.append(name)
    close()


def test_an_error_outside_any_episode_names_no_task(ml1):
    """A command that fails before any episode runs (a step's actions that are not numbers) reports episode
    −1, which names no task, after a reset and a step that left the worker at its second episode, for the
    local worker and the Ray actor alike; an index of no episode names none either."""
    from maml.envs.ray_pool import _SamplerActor

    tasks = mwt.sample_train_tasks(ml1, np.random.default_rng(0), 2)
    payload = reset_payload(tasks)
    runner = _Runner(1.0, fast=False)
    runner.handle("reset", payload)
    runner.handle("step", np.zeros((2, ACT_DIM)))
    assert runner.current == 1
    for command, payload_ in (("step", "junk"), ("bogus", None)):
        with pytest.raises(ValueError):
            runner.handle(command, payload_)
        assert runner.current == -1, command
    actor = _SamplerActor(1.0, fast=False)
    assert actor.reset(payload)[0] == "ok" and actor.step(np.zeros((2, ACT_DIM)))[0] == "ok"
    status, index, trace = actor.step("junk")
    assert (status, index) == ("error", -1) and "ValueError" in trace
    assert where_running(tasks, [0, 1], 1) == f" while running {tasks[1].describe()}"
    for index in (-1, 2, 5):
        assert where_running(tasks, [0, 1], index) == ""


def test_worker_loop_answers_commands_until_close_or_end_of_file(ml1):
    """The worker process's loop (run here, in this process, against a pipe): its pid first, then a reply per
    command (the runner's own results, or an error naming the episode), until ``close`` or a closed pipe."""
    tasks = mwt.sample_train_tasks(ml1, np.random.default_rng(0), 2)
    payload = reset_payload(tasks)
    actions = np.full((2, ACT_DIM), 0.3)
    reference = _Runner(1.0, fast=True)
    expected = [reference.reset(payload), reference.step(actions)]
    replies = run_worker_loop([("reset", payload), ("step", actions), ("step", "junk"), ("close", None)])
    assert [reply[0] for reply in replies] == ["ok", "ok", "ok", "error"]
    assert replies[0][1] == os.getpid()
    np.testing.assert_array_equal(replies[1][1], expected[0])
    np.testing.assert_array_equal(replies[2][1], expected[1])
    assert replies[3][1] == -1 and replies[3][2].splitlines()[-1].startswith("ValueError")
    assert run_worker_loop([]) == [("ok", os.getpid())]  # the main process closed its end


def run_worker_loop(commands: list[tuple]) -> list[tuple]:
    """``_worker_main`` in this thread (it ignores SIGINT: the handler is restored after), fed by a thread
    that sends ``commands`` and collects the replies, then closes its end of the pipe unless it sent
    ``close``."""
    parent, child = multiprocessing.Pipe()
    replies: list[tuple] = []

    def drive() -> None:
        if parent.poll(60):
            replies.append(parent.recv())
        for command in commands:
            parent.send(command)
            if command[0] == "close":
                return
            if not parent.poll(60):
                return
            replies.append(parent.recv())
        parent.close()

    thread = threading.Thread(target=drive)
    previous = signal.getsignal(signal.SIGINT)
    thread.start()
    try:
        _worker_main(child, 1.0, True)
    finally:
        signal.signal(signal.SIGINT, previous)
        child.close()
        thread.join(60)
    assert not thread.is_alive()
    return replies


@pytest.mark.filterwarnings(SCRIPTED_WARNING)
@pytest.mark.parametrize(
    ("class_name", "agent"), [("push-v3", SawyerPushV3Policy), ("pick-place-v3", SawyerPickPlaceV3Policy)]
)
def test_fast_contact_test_equals_metaworlds(ml10, class_name, agent):
    """The fast contact test the pool installs (maml.envs.metaworld_fast.touching_object_cached) gives
    Meta-World's booleans at every step of scripted episodes (grasps included), for the main object and every
    geom in contact."""
    task = observable(ml10.train[class_name][0])
    env = make_env(task.task)
    install_fast_paths(env, contacts=True)
    env.set_task(task.task)
    obs, _ = env.reset()
    scripted, seen = agent(), Counter()
    for _ in range(120):
        obs, *_ = env.step(np.clip(scripted.get_action(obs), -1.0, 1.0))
        for geom in {env._get_id_main_object(), *env.data.contact.geom.ravel().tolist()}:
            expected = SawyerXYZEnv.touching_object(env, geom)
            assert env.touching_object(geom) == expected
            seen[expected] += 1
    assert seen[True] > 0 and seen[False] > 0
    env.close()


@pytest.mark.filterwarnings(SCRIPTED_WARNING)
def test_scripted_push_succeeds_with_exact_counts(ml1, pool2):
    tasks = [observable(t) for t in mwt.pick_test_tasks(ml1, np.random.default_rng(0), 5)]
    params = {"w0": torch.zeros(5, OBS_DIM, 1), "log_std": torch.full((5, ACT_DIM), -20.0)}
    calls: list[int] = []
    episodes_before, steps_before = sum(pool2.episodes.values()), sum(pool2.env_steps.values())
    episodes, stats = sample_in_waves(
        pool2, params, tasks, episodes_per_task=2, max_episode_length=100, seed=SEED,
        mean_action_fn=partial(scripted_push, calls=calls), policy_on_workers=False,
    )  # fmt: skip
    assert stats.env_infos["success"].mean() >= 0.8
    assert sum(pool2.episodes.values()) - episodes_before == 10
    assert sum(pool2.env_steps.values()) - steps_before == 1000 == stats.num_env_steps
    assert len(calls) == 100 and set(calls) == {10}  # 1 wave of 10 episodes (5 push instances per worker)
    assert (episodes.rewards.sum(-1) > 300).all()
    for t, e in (
        (0, 1),
        (4, 0),
    ):  # the pool (fast contacts) equals Meta-World's own code on grasping episodes
        seed = episode_seed(SEED, 0, 0, t, e, ENV_STREAM)
        obs, rewards, success = replay(tasks[t], seed, episodes.actions[t, e].double().numpy(), 1.0)
        assert torch.equal(episodes.observations[t, e], torch.from_numpy(obs).float())
        assert stats.returns[t, e] == rewards.sum() and stats.env_infos["success"][t, e] == success.max()


@pytest.mark.filterwarnings(SCRIPTED_WARNING)
def test_meta_test_protocol_with_scripted_push(ml1, pool2, monkeypatch, tmp_path):
    """bench.run.trainer's meta-test, adaptation disabled, with Meta-World's scripted push policy."""
    config = replace(
        preset("maml_trpo_metaworld_ml1_push", "smoke"),
        max_episode_length=100,
        test_tasks=4,
        test_adaptation_episodes=2,
    )
    trainer = Trainer(RunSpec("maml_trpo_metaworld_ml1_push", "smoke", 0, config, tmp_path, threads=2))
    family = MetaWorldFamily("ml1_push", config.action_scale)
    tasks = [observable(t) for t in family.test_tasks(np.random.default_rng(0), config.test_tasks)]
    theta = policy.init_params(OBS_DIM, ACT_DIM, config.hidden_sizes, torch.Generator().manual_seed(0))
    theta["log_std"].fill_(-20.0)
    monkeypatch.setattr(
        bench.run.trainer, "sample_in_waves", partial(sample_in_waves, mean_action_fn=scripted_push)
    )
    monkeypatch.setattr(bench.run.trainer.meta, "inner_step", lambda params, *args, **kwargs: params)
    before = pool2.episodes["push-v3"]
    row = trainer._meta_test(family, tasks, (pool2, pool2), theta, epoch=0)
    # 4 tasks × (2 adaptation episodes before and after the (disabled) step + 1 test episode)
    assert pool2.episodes["push-v3"] - before == 4 * (2 * 2 + 1)
    assert row[rf.TEST_SUCCESS] >= 0.8 and row[rf.TEST_PRE_SUCCESS] >= 0.8
    assert row[rf.class_key("push-v3", "SuccessRate", True)] == row[rf.TEST_SUCCESS]
    assert row[rf.adapt_step_key(0)] == row[rf.TEST_PRE_RETURN]


# --- the policy on the workers (maml.rollouts) -----------------------------------------------------------
def slow_mean_action(params: policy.Params, obs: torch.Tensor) -> torch.Tensor:
    """The policy, 20 ms a call: a rollout long enough to be interrupted (module level: it pickles)."""
    time.sleep(0.02)
    return policy.mean_action(params, obs)


_policy_calls: Counter[str] = Counter()
"""Calls of :func:`mean_action_then_die_once` in this process, per marker."""


def mean_action_then_die_once(params: policy.Params, obs: torch.Tensor, marker: str, at_call: int):
    """The policy, except that the first process (of all that run it with this ``marker`` file) to make its
    ``at_call``-th call kills itself there (SIGKILL): a worker dying mid-rollout, once."""
    _policy_calls[marker] += 1
    if _policy_calls[marker] == at_call:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            pass
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    return policy.mean_action(params, obs)


def assert_same_episodes(a, b) -> None:
    (episodes, stats), (other, other_stats) = a, b
    for f in fields(episodes):
        if getattr(episodes, f.name) is not None:
            assert torch.equal(getattr(other, f.name), getattr(episodes, f.name)), f.name
    np.testing.assert_array_equal(other_stats.returns, stats.returns)
    np.testing.assert_array_equal(other_stats.env_infos["success"], stats.env_infos["success"])


def test_policy_on_the_workers_gives_the_bits_of_the_policy_stepped_here(
    ml1, ml10, pool1, pool2, pool2_in_process
):
    """Each worker calling the policy on its own episodes (one message per wave) gives the episodes, bit for
    bit, of this process calling it on the whole wave at every step: for per-task parameters and for one θ
    shared by every task (a stride-0 view on both sides), garage's (100, 100) policy, several classes
    (ML10) and several instances of one class per worker in several waves (ML1), on 1 and 2 workers, in or
    out of process. The pool's counters advance alike."""
    theta = policy.init_params(OBS_DIM, ACT_DIM, (100, 100), torch.Generator().manual_seed(5))
    push = mwt.sample_train_tasks(ml1, np.random.default_rng(2), 3)
    cases = [
        (mixed_ml10_tasks(ml10), random_params(4), {}),
        (mixed_ml10_tasks(ml10), policy.broadcast(theta, 4), {}),
        (push, random_params(3, seed=1), {"max_instances_per_worker": 2}),  # 3 waves on 2 workers
        (push, policy.broadcast(theta, 3), {"max_instances_per_worker": 2}),
    ]
    for tasks, params, extra in cases:
        kwargs = dict(episodes_per_task=4, max_episode_length=12, seed=SEED, epoch=3, **extra)
        here = sample_in_waves(pool2, params, tasks, policy_on_workers=False, **kwargs)
        for pool in (pool1, pool2, pool2_in_process):
            episodes, steps = sum(pool.episodes.values()), sum(pool.env_steps.values())
            assert_same_episodes(here, sample_in_waves(pool, params, tasks, **kwargs))
            assert sum(pool.episodes.values()) - episodes == len(tasks) * 4
            assert sum(pool.env_steps.values()) - steps == len(tasks) * 4 * 12


def test_a_policy_that_cannot_travel_to_the_workers_is_refused_before_any_is_sent(ml1, pool2):
    tasks = mwt.sample_train_tasks(ml1, np.random.default_rng(0), 2)
    episodes_before = sum(pool2.episodes.values())
    with pytest.raises(ValueError, match=r"cannot be sent to the workers .*policy_on_workers=False"):
        sample_in_waves(
            pool2, random_params(2), tasks, episodes_per_task=1, max_episode_length=5, seed=0,
            mean_action_fn=lambda params, obs: policy.mean_action(params, obs),
        )  # fmt: skip
    assert not pool2.closed and sum(pool2.episodes.values()) == episodes_before
    sample_in_waves(pool2, random_params(2), tasks, episodes_per_task=1, max_episode_length=5, seed=0)


@pytest.mark.parametrize("in_process", [False, True])
def test_non_finite_actions_on_the_workers_stop_the_sampling_and_the_pool_goes_on(ml1, in_process):
    """A diverged policy (NaN parameters) raises ``NonFiniteActionError`` as the per-step path does (the
    trainer reports it as a non-finite epoch); every worker answers first, so the pool stays usable."""
    tasks = mwt.sample_train_tasks(ml1, np.random.default_rng(0), 2)
    broken = random_params(2)
    broken["w0"][1, 0, 0] = float("nan")  # task 1's episodes only: one worker fails, the other completes
    with MetaWorldPool(2, in_process_worker=in_process) as pool:
        for on_workers in (True, False):
            with pytest.raises(NonFiniteActionError):
                sample_in_waves(
                    pool, broken, tasks, episodes_per_task=2, max_episode_length=5, seed=0,
                    policy_on_workers=on_workers,
                )  # fmt: skip
            assert not pool.closed
        good = sample_in_waves(
            pool, random_params(2), tasks, episodes_per_task=2, max_episode_length=5, seed=0
        )
        assert torch.isfinite(good[0].observations).all()


def test_a_worker_killed_during_its_rollout_is_reported_and_the_pool_stops(ml1):
    tasks = mwt.sample_train_tasks(ml1, np.random.default_rng(0), 2)
    pool = MetaWorldPool(2, in_process_worker=False)
    pids = pool.pids
    killer = threading.Timer(1.0, os.kill, (pids[1], signal.SIGKILL))  # 100 steps × 20 ms: mid-rollout
    running = ", ".join(f"push-v3 train goal {t.goal}" for t in tasks)
    killer.start()
    try:
        with pytest.raises(
            WorkerError, match=rf"worker 1 \(pid {pids[1]}\) killed by SIGKILL while running {running}$"
        ):
            sample_in_waves(
                pool, random_params(2), tasks, episodes_per_task=2, max_episode_length=100, seed=0,
                mean_action_fn=slow_mean_action,
            )  # fmt: skip
    finally:
        killer.cancel()
    assert pool.closed and not any(alive(pid) for pid in pids)


# --- failures and shutdown --------------------------------------------------------------------------------
def test_crashed_worker_is_reported_and_the_pool_stops(ml1):
    tasks = mwt.sample_train_tasks(ml1, np.random.default_rng(0), 2)
    pool = MetaWorldPool(2, in_process_worker=False)
    pids = pool.pids
    steps: list[int] = []

    def kill_worker_1(params, obs):
        steps.append(1)
        if len(steps) == 3:
            os.kill(pids[1], signal.SIGKILL)
        return policy.mean_action(params, obs)

    running = ", ".join(f"push-v3 train goal {t.goal}" for t in tasks)  # worker 1: an episode of each
    message = rf"worker 1 \(pid {pids[1]}\) killed by SIGKILL while running {running}$"
    with pytest.raises(WorkerError, match=message):
        sample_in_waves(
            pool,
            random_params(2),
            tasks,
            episodes_per_task=2,
            max_episode_length=20,
            seed=0,
            mean_action_fn=kill_worker_1,
            policy_on_workers=False,
        )
    assert pool.closed and not any(alive(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="pool is closed"):
        sample_in_waves(pool, random_params(2), tasks, episodes_per_task=1, max_episode_length=5, seed=0)


@pytest.mark.parametrize("in_process", [False, True])
def test_worker_exception_names_the_task_and_stops_the_pool(ml1, in_process):
    good = ml1.train["push-v3"][4]
    data = pickle.loads(good.task.data) | {"bogus": 1}
    bad = replace(good, task=metaworld.Task("push-v3", pickle.dumps(data)))
    worker = rf"in process {os.getpid()}" if in_process else r"pid \d+"
    with MetaWorldPool(1, in_process_worker=in_process) as pool:
        pids = pool.pids
        assert len(pids) == (0 if in_process else 1)
        message = rf"(?s)worker 0 \({worker}\) failed while running push-v3 train goal 4.*TypeError"
        with pytest.raises(WorkerError, match=message):
            sample_in_waves(pool, random_params(1), [bad], episodes_per_task=1, max_episode_length=5, seed=0)
        assert pool.closed
    assert not any(alive(pid) for pid in pids)


def test_close_lets_workers_exit_and_kills_one_that_cannot(ml1):
    """``close`` asks every worker to exit and waits: a healthy worker exits by itself (code 0); a worker that
    cannot answer (stopped by SIGSTOP) is terminated after the timeout, then killed (SIGTERM waits while a
    process is stopped; SIGKILL does not). The workers are daemons: an interpreter that exits with a pool
    left open ends them instead of waiting for them (test_an_open_pool_does_not_keep_python_alive)."""
    pool = MetaWorldPool(2, in_process_worker=False)
    processes = [worker.process for worker in pool._processes]
    assert [p.daemon for p in processes] == [True, True]
    sample_in_waves(pool, random_params(2), mwt.sample_train_tasks(ml1, np.random.default_rng(0), 2),
                    episodes_per_task=1, max_episode_length=2, seed=0)  # fmt: skip
    os.kill(processes[1].pid, signal.SIGSTOP)
    # the healthy worker's interpreter must finish exiting within the timeout: 1 s was not always enough on
    # a loaded machine (two training runs and a coverage run beside it: it was terminated, code -15)
    pool.close(timeout=5.0)
    assert [p.exitcode for p in processes] == [0, -signal.SIGKILL]
    assert pool.closed and not any(alive(p.pid) for p in processes)


def test_a_worker_that_does_not_start_in_time_is_reported_and_stopped():
    """A worker process that has not said it started within ``start_timeout`` (here 0 s: none can) stops the
    pool's construction with an error that names it; no worker is left running."""
    before = {p.pid for p in multiprocessing.active_children()}
    with pytest.raises(WorkerError, match=r"Meta-World worker 0 did not start in 0 s"):
        MetaWorldPool(1, in_process_worker=False, start_timeout=0.0)
    started = [p for p in multiprocessing.active_children() if p.pid not in before]
    assert started == []


OPEN_POOL_SCRIPT = textwrap.dedent(
    """
    import json
    from maml.envs.metaworld_pool import MetaWorldPool

    if __name__ == "__main__":
        pool = MetaWorldPool(2)  # worker 1 a process; never closed
        print(json.dumps(pool.pids), flush=True)
    """
)


def test_an_open_pool_does_not_keep_python_alive(tmp_path):
    """A script that exits without closing its pool exits (its workers are daemons, ended at exit), and no
    worker outlives it."""
    result = run_script(tmp_path, OPEN_POOL_SCRIPT)
    assert result.returncode == 0, result.stderr
    pids = json.loads(result.stdout)
    assert len(pids) == 1 and wait_dead(pids)


def test_a_script_without_a_main_guard_is_told_why_its_workers_died(tmp_path):
    """A script that makes a pool at import time (no ``if __name__ == "__main__":``) kills its spawned
    workers as they re-import it: the error says so, instead of only "exited with code 1"."""
    result = run_script(tmp_path, OPEN_POOL_SCRIPT.replace('if __name__ == "__main__":\n', "if True:\n"))
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("maml.envs.metaworld_pool.WorkerError: Meta-World worker 1 (pid "), last
    assert "exited with code 1 while idle: it failed to start." in last and START_HINT in last


def test_exit_reasons_name_the_signal_or_the_code():
    reasons = {
        None: "closed its pipe", 0: "exited with code 0", 3: "exited with code 3",
        -signal.SIGKILL: "killed by SIGKILL", -signal.SIGTERM: "killed by SIGTERM",
        -200: "killed by signal 200",
    }  # fmt: skip
    for code, reason in reasons.items():
        assert _exit_reason(SimpleNamespace(exitcode=code)) == reason, code


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to pin this process to one")
def test_default_workers_are_the_cores_this_process_may_use():
    """One worker per core of this process's affinity (what ``taskset`` or a container's CPU set allows), not
    the machine's count."""
    cores = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(cores)})
        assert default_num_workers() == 1
    finally:
        os.sched_setaffinity(0, cores)
    assert default_num_workers() == len(cores)


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import json, signal
    import numpy as np, torch
    from maml import policy
    from maml.envs.metaworld_pool import MetaWorldPool
    from maml.envs.metaworld_tasks import load_task_set, sample_train_tasks
    from maml.wave_sampler import sample_in_waves

    if __name__ == "__main__":
        # a shell's background jobs (CI may run us as one) start with SIGINT ignored; a terminal's do not
        signal.signal(signal.SIGINT, signal.default_int_handler)
        tasks = sample_train_tasks(load_task_set("ml1_push"), np.random.default_rng(0), 4)
        params = policy.broadcast(policy.init_params(39, 4, (8,), torch.Generator().manual_seed(0)), 4)
        with MetaWorldPool(2) as pool:  # worker 0 here, worker 1 a process
            # a first small call: both workers are up (worker 1 ignores SIGINT) before the test interrupts
            sample_in_waves(pool, params, tasks, episodes_per_task=1, max_episode_length=2, seed=0)
            print(json.dumps(pool.pids), flush=True)
            sample_in_waves(pool, params, tasks, episodes_per_task=50, max_episode_length=500, seed=0)
    """
)


def test_ctrl_c_stops_the_workers(tmp_path):
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, text=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        assert line, process.stderr.read()
        pids = json.loads(line)
        time.sleep(1.0)  # sampling (100,000 steps) is under way
        interrupted = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert time.monotonic() - interrupted < 30
    assert process.returncode != 0 and "KeyboardInterrupt" in stderr
    assert not any(alive(pid) for pid in pids)


# --- the harness end to end ------------------------------------------------------------------------------
TEST_TASKS = 7
"""Meta-test tasks in the harness smoke run: of ML10's 5 test classes 2 get 2 tasks and 3 get 1, so that the
overall figure is the episode-weighted mean of the per-class ones, not their plain mean."""
OVERALL_TEST = {"AverageReturn": rf.TEST_RETURN, "SuccessRate": rf.TEST_SUCCESS}


def test_harness_smoke_ml1_push_and_ml10(tmp_path, ml10):
    experiments = ("maml_trpo_metaworld_ml1_push", "maml_trpo_metaworld_ml10")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "run", *experiments, "--profile", "smoke", "--seeds", "0",
         "--set", f"test_tasks={TEST_TASKS}", "--results", str(tmp_path), "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for experiment, classes in ((experiments[0], ("push-v3",)), (experiments[1], ML10_TRAIN + ML10_TEST)):
        progress = pd.read_csv(rf.run_dir(tmp_path, "smoke", experiment, 0) / rf.PROGRESS)
        assert len(progress) == 2
        for key in (rf.SUCCESS, rf.TEST_SUCCESS, rf.PRE_SUCCESS, rf.TEST_PRE_SUCCESS):
            assert progress[key].between(0, 1).all(), key
        for name in classes:
            assert (
                rf.class_key(name, "SuccessRate") in progress
                and rf.class_key(name, "SuccessRate", True) in progress
            )
        trained = ML10_TRAIN if experiment == experiments[1] else classes
        assert progress[[rf.class_key(n, "SuccessRate") for n in trained]].notna().all().all()
        config = preset(experiment, "smoke")
        assert progress[rf.TOTAL_ENV_STEPS].iloc[-1] == 2 * config.env_steps_per_epoch()

    # ML10 writes every class's columns every epoch, NaN where no task of the class ran: training runs the
    # 10 train classes, meta-test the 5 test classes (the trainer's test tasks, drawn from seed 0's stream)
    progress = pd.read_csv(rf.run_dir(tmp_path, "smoke", experiments[1], 0) / rf.PROGRESS)
    rng = np.random.default_rng(np.random.SeedSequence(0, spawn_key=(bench.run.trainer.TEST_TASK_STREAM,)))
    tasks_per_class = Counter(t.class_name for t in mwt.pick_test_tasks(ml10, rng, TEST_TASKS))
    assert sorted(tasks_per_class.values()) == [1, 1, 1, 2, 2] and set(tasks_per_class) == set(ML10_TEST)
    test_episodes = preset(experiments[1], "smoke").test_episodes
    episodes = np.array([tasks_per_class[n] * test_episodes for n in ML10_TEST], dtype=float)
    for metric, overall in OVERALL_TEST.items():
        assert progress[[rf.class_key(n, metric) for n in ML10_TRAIN]].notna().all().all()
        assert progress[[rf.class_key(n, metric) for n in ML10_TEST]].isna().all().all()
        assert progress[[rf.class_key(n, metric, True) for n in ML10_TRAIN]].isna().all().all()
        per_class = progress[[rf.class_key(n, metric, True) for n in ML10_TEST]].to_numpy()
        assert np.isfinite(per_class).all()
        weighted = per_class @ episodes / episodes.sum()
        np.testing.assert_allclose(weighted, progress[overall], rtol=1e-12, atol=1e-12)
        if metric == "AverageReturn":  # the weights matter: the plain mean of the classes is another number
            assert not np.allclose(per_class.mean(axis=1), progress[overall])


def test_bad_pool_arguments_are_refused_before_any_worker_starts():
    """A zero or NaN action scale, a wave without one worker and one seed per task, a worker out of range:
    each refused by name (the wave layout is shared by the local and the Ray pool)."""
    from maml.envs.metaworld_pool import wave_rows
    from maml.envs.ray_pool import RayMetaWorldPool

    for scale in (0.0, float("nan")):
        with pytest.raises(ValueError, match="action_scale must be positive"):
            MetaWorldPool(num_workers=1, action_scale=scale)
        with pytest.raises(ValueError, match="action_scale must be positive"):
            RayMetaWorldPool(num_actors=1, action_scale=scale)
    assert wave_rows([0, 1, 0], 3, 3, 2) == [[0, 2], [1]]
    for workers, seeds in (([0, 1], 3), ([0, 1, 0], 2), ([0, 1, 0, 1], 3)):
        with pytest.raises(ValueError, match="one worker and one seed per task"):
            wave_rows(workers, 3, seeds, 2)
    for worker in (2, -1):
        with pytest.raises(ValueError, match=f"worker {worker} out of range"):
            wave_rows([0, worker, 1], 3, 3, 2)
