"""The declared comparisons (bench/report/comparisons.py) against the published data (results/published)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from bench import run_format as rf
from bench.report import published as pub
from bench.report.comparisons import COMPARISONS, CONTEXT, EXPERIMENTS, Comparison
from bench.run.experiments import FULL


@pytest.fixture(scope="module")
def published():
    return pub.load_published()


def test_every_experiment_has_exactly_one_primary_comparison_and_unique_names():
    assert set(COMPARISONS) == set(EXPERIMENTS) == set(FULL)
    for experiment, comparisons in COMPARISONS.items():
        assert sum(c.primary for c in comparisons) == 1, experiment
        assert len({c.name for c in comparisons}) == len(comparisons), experiment


def test_every_reference_exists_with_the_declared_x_unit(published):
    units = {
        "env_steps": {"env_steps"},
        "epochs": {"meta_iterations", "final"},
        "adapt_steps": {"adaptation_steps"},
    }
    for comparisons in COMPARISONS.values():
        for c in comparisons:
            if c.reference is None:
                continue
            series = pub.curve(published, c.reference, c.reference_metric)
            assert not series.empty
            assert pub.describe(published, c.reference)["x_unit"] in units[c.match], c.name
            assert c.proxy == bool(pub.describe(published, c.reference)["proxy"]), c.name
    for curves in CONTEXT.values():
        for context in curves:
            assert not pub.curve(published, context.reference).empty


def test_full_budget_lies_inside_every_env_step_reference(published):
    """At the full profile's budget a comparison on env steps must not be budget-short for lack of
    reference data: garage's budget in env steps lies inside the published x range."""
    for experiment, comparisons in COMPARISONS.items():
        budget = FULL[experiment].epochs * FULL[experiment].env_steps_per_epoch()
        for c in comparisons:
            if c.match == "env_steps" and c.reference is not None:
                series = pub.curve(published, c.reference, c.reference_metric)
                assert series["x"].min() <= budget <= series["x"].max(), (experiment, c.name, budget)


def test_published_values_are_the_sources_numbers(published):
    finn = pub.curve(published, "finn2017_fig5_maml")
    np.testing.assert_allclose(finn["y"], [-50.69, 293.19, 313.48, 315.65])
    promp = pub.curve(published, "promp2019_fig2_maml")
    assert pub.value_at(promp, 4.8e7) == pytest.approx(190 + (217 - 190) * 1.8 / 2.0)
    assert np.isnan(pub.value_at(promp, 5e6))  # no extrapolation before the first point
    assert pub.value_at(pub.curve(published, "metaworld2021_table1_ml10_test"), 123.0) == 31.6
    garage = pub.curve(published, "garage_v2_ml10", rf.TEST_SUCCESS)
    assert garage["n_seeds"].max() == 5 and garage["y"].between(0, 1).all()
    assert published.loc[published["curve"] == "promp2019_fig2_promp", "proxy"].all()
    assert published["source"].str.len().gt(10).all()


def test_a_curve_that_holds_several_metrics_needs_one_named(published):
    with pytest.raises(KeyError, match="name one"):
        pub.curve(published, "garage_v2_ml1_push")
    with pytest.raises(KeyError, match="known curves"):
        pub.curve(published, "no_such_curve")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(reference="x"), "tolerance"),
        (dict(reference="x", tolerance=1.0), "tolerance"),
        (dict(y_scale=0.5), "y_scale"),
        (dict(match="adapt_steps", adapt_step=1), "adapt_steps"),
    ],
)
def test_a_comparison_must_state_its_reasons(kwargs, message):
    base = dict(name="c", metric=rf.RETURN, match="env_steps")
    with pytest.raises(ValueError, match=message):
        Comparison(**(base | kwargs))


def test_a_blank_approx_flag_is_an_error_not_true(tmp_path):
    """``bool("")`` is False but ``bool(nan)`` is True: a blank flag must not silently read as set."""
    for name in pub.FILES:
        (tmp_path / name).write_text((pub.PUBLISHED_DIR / name).read_text())
    path = tmp_path / pub.FILES[0]
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    rows[1][rows[0].index("approx")] = ""
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with pytest.raises(pub.PublishedDataError, match=r"column 'approx' must be true or false.*line 2"):
        pub.load_published(tmp_path)
    assert pub.load_published()["approx"].dtype == bool
