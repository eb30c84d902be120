"""Meta-World sampling on Ray actors (:mod:`maml.envs.ray_pool`): the local pool's episodes bit for bit on 1
and 2 actors, a killed actor replaced with nothing lost, failures, and the ``--sampler-actors`` wiring.

One local Ray instance (2 CPUs) serves the module; its actors are real processes running real Meta-World.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from dataclasses import fields, replace
from functools import partial

import metaworld
import numpy as np
import pandas as pd
import pytest
import ray
import test_metaworld
import torch
from test_metaworld import REPO, alive, mean_action_then_die_once, mixed_ml10_tasks, random_params, wait_dead

from bench import run_format as rf
from bench.cli import main
from bench.run import families
from bench.run.families import MetaWorldFamily
from maml import policy
from maml.envs import metaworld_tasks as mwt
from maml.envs.metaworld_pool import MetaWorldPool, WorkerError
from maml.envs.ray_pool import RayMetaWorldPool
from maml.wave_sampler import RolloutEnv, sample_in_waves

KWARGS = {"episodes_per_task": 2, "max_episode_length": 20, "seed": 5, "epoch": 1}


@pytest.fixture(scope="module")
def ray_instance():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def ml1() -> mwt.TaskSet:
    return mwt.load_task_set("ml1_push")


@pytest.fixture(scope="module")
def local_run():
    """Four ML10 tasks of three classes on the local pool (one worker, in process)."""
    tasks = mixed_ml10_tasks(mwt.load_task_set("ml10"))
    params = random_params(len(tasks))
    with MetaWorldPool(1) as pool:
        episodes, stats = sample_in_waves(pool, params, tasks, **KWARGS)
    return tasks, params, episodes, stats


def assert_same(run, local_run) -> None:
    _, _, episodes, stats = local_run
    again, again_stats = run
    for f in fields(episodes):
        if getattr(episodes, f.name) is not None:
            assert torch.equal(getattr(again, f.name), getattr(episodes, f.name)), f.name
    np.testing.assert_array_equal(again_stats.returns, stats.returns)
    np.testing.assert_array_equal(again_stats.env_infos["success"], stats.env_infos["success"])


@pytest.mark.parametrize("num_actors", [1, 2])
def test_actors_give_the_local_pools_episodes_bit_for_bit(ray_instance, local_run, num_actors):
    """With the policy on the actors (one call per actor and wave, the default) or here (one call per actor
    and step)."""
    tasks, params, _, _ = local_run
    with RayMetaWorldPool(num_actors) as pool:
        assert isinstance(pool, RolloutEnv) and pool.num_workers == num_actors
        assert len(set(pool.pids)) == num_actors and os.getpid() not in pool.pids
        assert pool.step_cost("push-v3") == MetaWorldPool.step_cost("push-v3")
        assert dict(pool.info_reductions) == {"success": "max"} and pool.max_episode_length == 500
        for on_workers in (True, False):
            assert_same(
                sample_in_waves(pool, params, tasks, policy_on_workers=on_workers, **KWARGS), local_run
            )
        assert sum(pool.env_steps.values()) == 2 * len(tasks) * 2 * 20 and pool.replacements == 0
        pids = pool.pids
    assert pool.closed and wait_dead(pids)
    with pytest.raises(RuntimeError, match="pool is closed"):
        sample_in_waves(pool, params, tasks, **KWARGS)


def test_a_killed_actor_is_replaced_and_its_episodes_rerun_bit_for_bit(ray_instance, local_run):
    """One retry is enough for one death (``max_retries=1``), mid-wave or while idle."""
    tasks, params, _, _ = local_run
    with RayMetaWorldPool(2, max_retries=1) as pool:
        first = pool.pids
        calls: list[int] = []

        def kill_actor_1(p, obs):  # mid-wave: after 5 of the wave's 20 steps
            calls.append(1)
            if len(calls) == 6:
                os.kill(first[1], signal.SIGKILL)
            return policy.mean_action(p, obs)

        here = {"mean_action_fn": kill_actor_1, "policy_on_workers": False}
        assert_same(sample_in_waves(pool, params, tasks, **here, **KWARGS), local_run)
        assert pool.replacements == 1 and pool.pids[0] == first[0] and pool.pids[1] != first[1]
        assert not alive(first[1])
        # an actor that died while idle: the next reset goes to its replacement
        second = pool.pids
        os.kill(second[0], signal.SIGKILL)
        assert wait_dead([second[0]])
        assert_same(sample_in_waves(pool, params, tasks, **KWARGS), local_run)
        assert pool.replacements == 2 and pool.pids[1] == second[1] and pool.pids[0] != second[0]


def test_an_actor_killed_during_its_rollout_is_replaced_and_runs_it_again_bit_for_bit(
    ray_instance, local_run, tmp_path
):
    """The first actor to reach its 6th policy call of the wave kills itself (SIGKILL, mid-rollout); its
    replacement runs the same episodes again from their reset seeds: the same bits, one replacement."""
    tasks, params, _, _ = local_run
    # the actors cannot import this test module: Ray's cloudpickle sends its functions by value instead
    ray.cloudpickle.register_pickle_by_value(test_metaworld)
    try:
        with RayMetaWorldPool(2, max_retries=1) as pool:
            first = set(pool.pids)
            suicide = partial(mean_action_then_die_once, marker=str(tmp_path / "died"), at_call=6)
            assert_same(sample_in_waves(pool, params, tasks, mean_action_fn=suicide, **KWARGS), local_run)
            assert (tmp_path / "died").exists() and pool.replacements == 1
            assert len(first & set(pool.pids)) == 1, "one actor replaced, the other kept"
    finally:
        ray.cloudpickle.unregister_pickle_by_value(test_metaworld)


def test_an_actor_that_keeps_dying_or_raises_stops_the_pool(ray_instance, ml1):
    tasks = mwt.sample_train_tasks(ml1, np.random.default_rng(0), 2)
    with RayMetaWorldPool(1, max_retries=0) as pool:
        pid = pool.pids[0]
        os.kill(pid, signal.SIGKILL)
        message = rf"worker 0 \(Ray actor, pid {pid} on .*\) died while running .*, 1 time\(s\) in a row"
        with pytest.raises(WorkerError, match=message):
            sample_in_waves(pool, random_params(2), tasks, episodes_per_task=1, max_episode_length=5, seed=0)
        assert pool.closed
    good = ml1.train["push-v3"][4]
    bad = replace(
        good, task=metaworld.Task("push-v3", pickle.dumps(pickle.loads(good.task.data) | {"bogus": 1}))
    )
    with RayMetaWorldPool(1) as pool:
        message = r"(?s)worker 0 \(Ray actor, pid \d+ on .*\) failed while running push-v3 train goal 4"
        with pytest.raises(WorkerError, match=message + ".*TypeError"):
            sample_in_waves(pool, random_params(1), [bad], episodes_per_task=1, max_episode_length=5, seed=0)
        assert pool.closed and pool.replacements == 0


def test_the_family_samples_on_actors_inside_sampler_actors(ray_instance):
    local = MetaWorldFamily("ml1_push", 1.0)
    assert local.sampler_actors == 0, "the local pool by default"
    assert local.sampler(2) == {"kind": "local worker pool (wave sampler)", "workers": 2, "fast_step": True}
    with families.sampler_actors(1):
        family = MetaWorldFamily("ml1_push", 1.0)
    assert family.sampler(2) == {"kind": "Ray actors (wave sampler)", "actors": 1, "fast_step": True}
    try:
        pool = family.make_env(10, 2)
        assert isinstance(pool, RayMetaWorldPool) and pool.num_workers == 1
        assert family.make_env(3, 2) is pool, "train and test sampling share the actors"
    finally:
        family.close()
    assert pool.closed
    with pytest.raises(ValueError, match="at least 0"), families.sampler_actors(-1):
        pass


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--sampler-actors", "2"), "--sampler-actors needs --executor ray"),
        (("--executor", "ray", "--sampler-actors", "-1"), "--sampler-actors must be at least 0"),
    ],
)
def test_sampler_actors_option_is_checked(tmp_path, capsys, args, message):
    code = main(["run", "maml_trpo_metaworld_ml1_push", "--results", str(tmp_path), *args])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def sampler_actor_pids() -> set[int]:
    """Processes now running a sampler actor (Ray titles them ``ray::_SamplerActor...``)."""
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                    if cmdline.read().startswith(b"ray::_SamplerActor"):
                        found.add(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.slow
def test_a_run_on_sampler_actors_writes_the_local_runs_numbers(tmp_path):
    """The command line end to end: ``--executor ray --sampler-actors 2`` (a local Ray) trains ML1 push to
    the same numbers as the local executor's worker pool, sampling on two actors."""
    experiment = "maml_trpo_metaworld_ml1_push"
    common = ("run", experiment, "--profile", "smoke", "--seeds", "0", "--no-progress")
    common += ("--set", "test_tasks=3")
    frames, seen = [], set()
    for name, extra in (("local", ()), ("ray", ("--executor", "ray", "--sampler-actors", "2"))):
        with subprocess.Popen(
            [sys.executable, "-m", "bench", *common, *extra, "--results", str(tmp_path / name)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ) as command:  # fmt: skip
            before = sampler_actor_pids()
            deadline = time.monotonic() + 600
            while command.poll() is None and time.monotonic() < deadline:
                seen |= sampler_actor_pids() - before
                time.sleep(0.2)
            command.kill()
            out = command.stdout.read()
        assert command.returncode == 0, out
        assert "1 runs done, 0 failed" in out
        frame = pd.read_csv(rf.run_dir(tmp_path / name, "smoke", experiment, 0) / rf.PROGRESS)
        frames.append(frame[sorted(c for c in frame.columns if not c.startswith(rf.TIME_PREFIX))])
        assert ("2 sampler actors per run" in out) == (name == "ray")
        assert len(seen) == (2 if name == "ray" else 0), seen
    pd.testing.assert_frame_equal(*frames)
