"""The scaling model of one Meta-World run on Ray actors (:mod:`bench.scaling`): hand-computed rounds, the
waves it takes from the sampler, monotone in actors, and the experiments' sizes as the trainer counts them."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest

from bench import scaling
from bench.run.experiments import preset
from bench.run.trainer import meta_test_env_steps
from maml.envs.metaworld_pool import STEP_COST_MS

TOY = scaling.Measured(
    call_fixed_ms=0.5,
    call_per_actor_ms=0.25,
    driver_step_ms=((1, 0.1),),
    driver_wave_ms=((1, 2.0),),
    reset_ms=1.0,
    step_ms={"a": 1.0, "b": 2.0, "c": 4.0},
)
ML10_TRAIN = (
    "reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-close-v3", "button-press-topdown-v3",
    "peg-insert-side-v3", "window-open-v3", "sweep-v3", "basketball-v3",
)  # fmt: skip


def test_one_actor_runs_the_episodes_one_after_the_other():
    # one wave of 3 on one actor: 10 × (d + a + b + 1 + 2 + 4) + r + a + b + 3 resets
    expected = 10 * (0.1 + 0.5 + 0.25 + 7.0) + 2.0 + 0.75 + 3 * 1.0
    assert scaling.round_seconds(("a", "b", "c"), 1, 10, 1, TOY) == pytest.approx(expected / 1e3)


def test_actors_run_in_parallel_and_the_slowest_sets_the_pace():
    # three classes on three actors (c, b, a: one each): the wave steps at c's pace, three calls per step
    expected = 10 * (0.1 + 0.5 + 3 * 0.25 + 4.0) + 2.0 + (0.5 + 3 * 0.25) + 1.0
    assert scaling.round_seconds(("a", "b", "c"), 1, 10, 3, TOY) == pytest.approx(expected / 1e3)


def test_the_instance_cap_makes_more_waves():
    # 5 episodes of one class on one actor holding at most 2 instances: waves of 2, 2 and 1
    two = 10 * (0.1 + 0.75 + 2.0) + 2.0 + 0.75 + 2 * 1.0
    one = 10 * (0.1 + 0.75 + 1.0) + 2.0 + 0.75 + 1.0
    got = scaling.round_seconds(("a",), 5, 10, 1, TOY, max_instances_per_worker=2)
    assert got == pytest.approx((2 * two + one) / 1e3)


def test_one_actor_is_the_serial_sum_of_the_step_costs_plus_the_overheads():
    measured = replace(TOY, step_ms=STEP_COST_MS, env_slowdown=1.5, driver_step_ms=((1, 0.1), (101, 1.1)))
    groups = scaling.spread(ML10_TRAIN, 20)
    serial = 1.5 * sum(STEP_COST_MS[g] for g in groups)
    expected = 500 * (0.29 + 0.5 + 0.25 + serial) + 2.0 + 0.75 + 20 * 1.0  # d(20) = 0.1 + 19 × 0.01
    assert scaling.round_seconds(groups, 1, 500, 1, measured) == pytest.approx(expected / 1e3)
    steps = scaling.steps_per_second(groups, 1, 500, 1, measured)
    assert steps == pytest.approx(20 * 500 / (expected / 1e3))


ML45_LIKE = tuple(g for g in STEP_COST_MS if g not in ("bin-picking-v3", "box-close-v3", "hand-insert-v3"))


def test_with_the_policy_on_the_actors_each_actor_runs_its_wave_in_one_call():
    # three classes on three actors, one call each per wave: the slowest actor's H steps of d(1) + c, a reset
    rolled = replace(TOY, rollouts=True, driver_step_ms=((1, 0.1), (3, 0.3)))
    expected = 2.0 + (0.5 + 3 * 0.25) + 10 * (0.1 + 4.0) + 1.0
    assert scaling.round_seconds(("a", "b", "c"), 1, 10, 3, rolled) == pytest.approx(expected / 1e3)
    # one actor: d at its 3 episodes, every step's env costs summed, 3 resets, the calls once
    expected = 2.0 + 0.75 + 10 * (0.3 + 7.0) + 3 * 1.0
    assert scaling.round_seconds(("a", "b", "c"), 1, 10, 1, rolled) == pytest.approx(expected / 1e3)
    assert scaling.benchmark_steps_per_second("ray_2_rollout", TOY) > scaling.benchmark_steps_per_second(
        "ray_2", TOY
    )


def nonincreasing(values: list[float]) -> bool:
    return all(b <= a * (1 + 1e-9) for a, b in itertools.pairwise(values))


def test_more_actors_never_slow_a_round_down_when_calls_cost_nothing_per_actor():
    measured = replace(TOY, step_ms=STEP_COST_MS, call_per_actor_ms=0.0)
    for groups, episodes in ((ML45_LIKE, 45), (scaling.spread(ML10_TRAIN, 20), 10), (("push-v3",) * 20, 10)):
        times = [
            scaling.round_seconds(groups, episodes, 50, a, measured) for a in (1, 2, 4, 8, 16, 32, 64, 256)
        ]
        assert nonincreasing(times), times


def test_more_actors_speed_a_big_round_up_while_each_has_episodes_to_spare():
    # 2025 episodes: ≥ 31 per actor up to 64 actors, against 0.05 ms per call
    measured = replace(TOY, step_ms=STEP_COST_MS, call_per_actor_ms=0.05)
    times = [scaling.round_seconds(ML45_LIKE, 45, 50, a, measured) for a in (1, 2, 4, 8, 16, 32, 64)]
    assert nonincreasing(times), times


def test_costly_calls_make_too_many_actors_slower():
    measured = replace(TOY, step_ms=STEP_COST_MS, call_per_actor_ms=1.0)
    groups = scaling.spread(ML10_TRAIN, 20)
    assert scaling.round_seconds(groups, 1, 50, 20, measured) > scaling.round_seconds(
        groups, 1, 50, 4, measured
    )


def test_interpolate():
    points = ((1, 1.0), (3, 5.0), (5, 6.0))
    assert scaling.interpolate(points, 2) == 3.0
    assert scaling.interpolate(points, 3) == 5.0
    assert scaling.interpolate(points, 0) == -1.0  # the first segment's slope
    assert scaling.interpolate(points, 9) == 8.0  # the last segment's slope
    assert scaling.interpolate(((4, 2.5),), 100) == 2.5
    with pytest.raises(ValueError):
        scaling.interpolate(((2, 1.0), (1, 0.0)), 1)


@pytest.mark.parametrize("experiment", ["ml1_push", "ml10", "ml45"])
def test_the_workloads_are_the_full_profiles_as_the_trainer_counts_them(experiment):
    config = preset(f"maml_trpo_metaworld_{experiment}", "full")
    work = scaling.workload(
        config, (("x-v3",) * 1, ("y-v3", "z-v3"), 125) if experiment != "ml1_push" else None
    )
    assert work.epoch_env_steps == config.env_steps_per_epoch()
    assert work.meta_test_env_steps == meta_test_env_steps(config)
    assert work.evaluate_every == 10 and work.train_rounds == 2


def test_the_outer_step_scales_with_the_samples_and_the_threads():
    work = scaling.workload(preset("maml_trpo_metaworld_ml45", "full"), (("x-v3",), ("y-v3",), 250))
    assert work.round_samples == 45 * 45 * 500
    assert scaling.outer_step_seconds(work, TOY, threads=2) == pytest.approx(25.0)
    assert scaling.outer_step_seconds(work, TOY, threads=1) == pytest.approx(50.0)
    epoch = scaling.epoch_seconds(work, 8, TOY, outer_threads=2)
    assert epoch.outer_s == pytest.approx(25.0)
    assert epoch.total_s == pytest.approx(epoch.sampling_s + epoch.outer_s + epoch.meta_test_s)
    assert math.isfinite(epoch.meta_test_s) and epoch.meta_test_s > 0


def test_calibrate_reads_the_benchmarks_extra_info():
    driver = {
        "sampler_ms_per_wave_step": {"45": 0.5, "1": 0.1},
        "sampler_ms_per_wave": {"1": 1.0, "45": 4.0},
        "policy_ms_per_wave_step_in_sampler": {"1": 0.05, "45": 0.3},
        "policy_call_ms_broadcast_params": {"1": 0.02, "45": 0.1},
    }
    speed = {
        "tasks": 45,
        "load_average_1min": 3.0,
        "local_1": {"steps_per_s": 2000, "env_ms_per_wave_step": 21.0, "reset_ms_per_wave": 450.0},
        "ray_1": {"steps_per_s": 1500},
        "ray_minus_local_ms_per_wave_step": {"1": 1.0},
    }
    calls = {
        scaling.CALL_TEST.format(1, 1): {"driver_cpu_ms_per_wave_step": 2.0, "overhead_ms_median": 2.5},
        scaling.CALL_TEST.format(2, 1): {"driver_cpu_ms_per_wave_step": 2.5, "overhead_ms_median": 3.5},
        scaling.CALL_TEST.format(1, 40): {"driver_cpu_ms_per_wave_step": 4.0, "overhead_ms_median": 4.5},
    }
    extra = {"test_driver_work_per_wave_step": driver, "test_sampler_steps_per_s": speed} | calls
    got = scaling.calibrate(extra, step_ms={"a-v3": 6.0, "b-v3": 8.0}, benchmark_classes=("a-v3", "b-v3"))
    assert got.loaded.call_per_actor_ms == pytest.approx(0.5)
    assert got.loaded.call_fixed_ms == pytest.approx(4.0)
    assert got.loaded.reset_ms == pytest.approx(10.0)
    assert got.loaded.env_slowdown == pytest.approx(1.5)
    assert got.loaded.driver_step_ms == ((1.0, 0.1), (45.0, 0.5))
    assert got.measured_steps_per_s == {"local_1": 2000.0, "ray_1": 1500.0}
    calm = scaling.quiet(got.loaded)
    assert calm.env_slowdown == 1.0 and calm.call_fixed_ms == pytest.approx(4.0 / 1.5)
    assert got.loaded.shared_driver_step_ms is not None
    expected_shared = [1.0, 0.07, 45.0, 0.3]  # d − policy share + shared call
    assert [x for point in got.loaded.shared_driver_step_ms for x in point] == pytest.approx(expected_shared)
    shared = scaling.shared_policy(got.loaded)
    assert [x for point in shared.driver_step_ms for x in point] == pytest.approx(expected_shared)
    assert [x for point in calm.shared_driver_step_ms for x in point] == pytest.approx(
        [v / 1.5 if i % 2 else v for i, v in enumerate(expected_shared)]
    ), "quiet scales the shared d(n) as it scales d(n)"


def test_the_first_round_of_training_and_of_the_meta_test_runs_on_shared_parameters():
    """Pre-update sampling and the meta-test's adaptation episodes of θ give every task the same
    parameters: those rounds pay the shared ``d(n)``, the others the per-episode one."""
    groups = ("a", "b")
    shared = replace(TOY, shared_driver_step_ms=((1.0, 0.0), (100.0, 0.0)))
    per_round = scaling.round_seconds(groups, 1, 10, 1, shared)
    cheaper = scaling.round_seconds(groups, 1, 10, 1, shared, shared=True)
    assert cheaper == pytest.approx(per_round - 10 * scaling.interpolate(TOY.driver_step_ms, 2) / 1e3)
    assert scaling.round_seconds(groups, 1, 10, 1, TOY, shared=True) == pytest.approx(per_round), (
        "without a shared d(n), d(n)"
    )
    work = scaling.Workload("toy", groups, 1, 10, 2, groups, (1, 1, 1), 1)
    epoch = scaling.epoch_seconds(work, 1, shared)
    assert epoch.sampling_s == pytest.approx(cheaper + per_round)
    assert epoch.meta_test_s == pytest.approx(cheaper + 2 * per_round)
