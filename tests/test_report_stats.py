"""Aggregation across seeds (bench/report/stats.py): Student-t and bootstrap CIs, IQM, per-epoch curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench import run_format as rf
from bench.report import stats


def test_t_interval_of_two_seeds_is_the_textbook_value():
    low, high = stats.t_interval(np.array([[1.0], [3.0]]))
    half = 12.706204736 * np.sqrt(2.0) / np.sqrt(2.0)  # t_{0.975, 1} · s / √n, s = √2
    np.testing.assert_allclose([low[0], high[0]], [2.0 - half, 2.0 + half], rtol=1e-9)


@pytest.mark.parametrize("n", [3, 5])
def test_t_interval_keeps_its_coverage_with_few_seeds_where_the_bootstrap_does_not(n):
    """2000 experiments of n normal seeds: the t-interval covers the true mean ~95 % of the time, the
    percentile bootstrap far less (why the mean's CI is a t-interval)."""
    values = np.random.default_rng(n).normal(loc=1.0, scale=2.0, size=(n, 2000))
    low, high = stats.t_interval(values)
    assert 0.93 <= np.mean((low < 1.0) & (high > 1.0)) <= 0.97
    low, high = stats.bootstrap_ci(values, np.random.default_rng(0), n_resamples=300)
    assert np.mean((low < 1.0) & (high > 1.0)) < 0.88


def test_t_interval_leaves_out_missing_seeds_and_needs_two():
    samples = np.array([[1.0, 2.0, 7.0], [3.0, np.nan, np.nan], [np.nan, 4.0, np.nan]])
    low, high = stats.t_interval(samples)
    expected = stats.t_interval(np.array([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_allclose(low[:2], expected[0])
    np.testing.assert_allclose(high[:2], expected[1])
    assert np.isnan(low[2]) and np.isnan(high[2])


def test_few_seeds_get_a_mean_ci_but_no_iqm_ci_and_say_so():
    summary = stats.summarise(np.array([1.0, 2.0, 4.0]), np.random.default_rng(0))
    assert summary["ci_low"] < 1.0 and summary["ci_high"] > 4.0  # wider than the seeds' range
    assert np.isnan(summary["iqm_ci_low"]) and "no IQM CI" in summary["ci_note"]


def test_ci_contains_the_true_mean():
    values = np.random.default_rng(3).normal(loc=3.0, scale=1.0, size=(20, 1))
    low, high = stats.bootstrap_ci(values, np.random.default_rng(0))
    assert low[0] < 3.0 < high[0]
    assert high[0] - low[0] < 1.5  # ≈ 2 · 1.96 / √20 = 0.88: a real interval, not an infinite one


def test_ci_coverage_is_near_nominal():
    """Over 400 independent experiments of 20 seeds the 95 % interval covers the true mean ~95 % of the
    time (percentile bootstrap under-covers slightly at n = 20)."""
    values = np.random.default_rng(7).normal(loc=1.0, scale=2.0, size=(20, 400))
    low, high = stats.bootstrap_ci(values, np.random.default_rng(0), n_resamples=1000)
    coverage = np.mean((low < 1.0) & (high > 1.0))
    assert 0.88 <= coverage <= 0.99


def test_ci_of_the_iqm_contains_the_true_centre_despite_outliers():
    values = np.random.default_rng(1).normal(loc=5.0, scale=0.5, size=20)
    values[:2] = [500.0, -400.0]  # two broken seeds
    summary = stats.summarise(values, np.random.default_rng(0))
    assert summary["iqm_ci_low"] < 5.0 < summary["iqm_ci_high"]
    assert summary["iqm_ci_high"] - summary["iqm_ci_low"] < (summary["ci_high"] - summary["ci_low"]) / 10


def test_one_seed_gives_nan_ci_and_says_so():
    summary = stats.summarise(np.array([4.0]), np.random.default_rng(0))
    assert summary["n_seeds"] == 1 and summary["mean"] == 4.0 and summary["iqm"] == 4.0
    assert np.isnan(summary["ci_low"]) and np.isnan(summary["ci_high"]) and np.isnan(summary["iqm_ci_low"])
    assert "1 seed" in summary["ci_note"]


def test_no_values_give_nan_and_say_so():
    summary = stats.summarise(np.array([np.nan, np.nan]), np.random.default_rng(0))
    assert summary["n_seeds"] == 0 and np.isnan(summary["mean"]) and summary["ci_note"] == "no values"


def test_points_with_missing_seeds_resample_only_the_present_ones():
    samples = np.array(
        [
            [1.0, 2.0, 7.0, np.nan],
            [1.0, 4.0, np.nan, np.nan],
            [1.0, np.nan, np.nan, 5.0],
        ]
    )
    low, high = stats.bootstrap_ci(samples, np.random.default_rng(0), n_resamples=500)
    assert low[0] == high[0] == 1.0  # three equal values: no spread
    assert 2.0 <= low[1] <= high[1] <= 4.0  # resampled among {2, 4} only, NaN ignored
    assert np.isnan(low[2]) and np.isnan(high[2]) and np.isnan(low[3])  # one seed: no CI


def test_bootstrap_is_reproducible_with_the_same_seed_and_differs_with_another():
    values = np.random.default_rng(5).normal(size=(6, 3))
    first = stats.bootstrap_ci(values, np.random.default_rng(11), n_resamples=300)
    again = stats.bootstrap_ci(values, np.random.default_rng(11), n_resamples=300)
    other = stats.bootstrap_ci(values, np.random.default_rng(12), n_resamples=300)
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], other[0])


def test_iqm_is_the_mean_of_the_middle_half():
    assert stats.iqm(np.array([100.0, 1, 2, 3, 4, 5, 6, -50])) == pytest.approx(3.5)  # mean of 2, 3, 4, 5
    assert stats.iqm(np.array([1.0, 2.0, 9.0])) == pytest.approx(4.0)  # n < 4: nothing trimmed


def test_curve_is_the_mean_across_seeds_per_epoch():
    rows = []
    for seed, offset in enumerate([0.0, 1.0, 2.0]):
        for epoch in range(4):
            value = np.nan if (seed == 2 and epoch == 3) else 10 * epoch + offset
            rows.append({"seed": seed, rf.EPOCH: epoch, rf.TOTAL_ENV_STEPS: 100 * (epoch + 1), "m": value})
    table = stats.curve(pd.DataFrame(rows), "m")
    np.testing.assert_allclose(table["mean"], [1.0, 11.0, 21.0, 30.5])
    np.testing.assert_array_equal(table["n_seeds"], [3, 3, 3, 2])
    np.testing.assert_array_equal(table[rf.TOTAL_ENV_STEPS], [100, 200, 300, 400])
    assert (table["ci_low"] <= table["mean"]).all() and (table["mean"] <= table["ci_high"]).all()


def test_curve_of_a_metric_never_logged_is_empty():
    table = pd.DataFrame({"seed": [0], rf.EPOCH: [0], rf.TOTAL_ENV_STEPS: [1], "m": [np.nan]})
    assert stats.curve(table, "m").empty
    assert stats.curve(table, "absent").empty


def test_success_rate_intervals_stay_inside_zero_to_one():
    """A rate's mean lies in [0, 1]: its t-interval is cut there (returns keep theirs)."""
    low, high = stats.t_interval(np.array([[0.0, 0.9], [0.1, 1.0]]), bounds=(0.0, 1.0))
    assert low[0] == 0.0 and high[1] == 1.0 and 0.0 < high[0] < 1.0 and 0.0 < low[1] < 1.0
    rows = [
        {"seed": s, rf.EPOCH: 0, rf.TOTAL_ENV_STEPS: 1.0, rf.SUCCESS: v, rf.RETURN: v}
        for s, v in enumerate([0.0, 0.05, 0.0])
    ]
    table = pd.DataFrame(rows)
    assert stats.curve(table, rf.SUCCESS)["ci_low"].iloc[0] == 0.0
    assert stats.curve(table, rf.RETURN)["ci_low"].iloc[0] < 0.0
