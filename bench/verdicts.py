"""Evaluate a declared comparison on our runs: our value at the matched x, the published value there, the
band, and a verdict.

Verdicts:

- ``reproduced``: our mean across seeds lies inside ``[reference − tolerance, reference + tolerance]``
  (edges included) at the matched budget;
- ``below`` / ``above``: outside the band at the matched budget;
- ``budget-short``: our runs end before the declared budget (``Comparison.budget_epochs``), or before the
  reference's x range starts; compared at the largest common x, and the note says where we stand there;
- ``no-reference``: nothing is published to compare with (our value is still reported);
- ``no-data``: our runs never logged the metric up to the matched x (e.g. no meta-test yet).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench import published as pub
from bench import run_format as rf
from bench import stats
from bench.comparisons import Comparison

REPRODUCED = "reproduced"
BELOW = "below"
ABOVE = "above"
BUDGET_SHORT = "budget-short"
NO_REFERENCE = "no-reference"
NO_DATA = "no-data"
VERDICTS = (REPRODUCED, BELOW, ABOVE, BUDGET_SHORT, NO_REFERENCE, NO_DATA)

X_COLUMN = {"env_steps": rf.TOTAL_ENV_STEPS, "epochs": rf.EPOCH}


def position(ours: float, reference: float, tolerance: float) -> str:
    """Where our value lies relative to the band ``reference ± tolerance`` (edges inside); '' if unknown."""
    if any(math.isnan(v) for v in (ours, reference, tolerance)):
        return ""
    if ours < reference - tolerance:
        return BELOW
    if ours > reference + tolerance:
        return ABOVE
    return REPRODUCED


def verdict(has_reference: bool, has_data: bool, at_budget: bool, where: str) -> str:
    """The verdict from the comparison's facts (see the module docstring)."""
    if not has_reference:
        return NO_REFERENCE
    if not has_data:
        return NO_DATA
    if not at_budget or not where:
        return BUDGET_SHORT
    return where


def per_seed_values(progress: pd.DataFrame, comparison: Comparison, upto: float) -> np.ndarray:
    """Our value per seed at the matched x: ``[n_seeds]`` in seed order, NaN for a seed with no value.

    ``progress``: rows of one experiment's runs, already cut at the compared epoch. Rows count up to ``upto``
    on the comparison's x column (all rows for ``adapt_steps``); ``statistic="value"`` averages the last
    ``window`` logged values, ``"max"`` takes the maximum over them all.
    """
    if comparison.match != "adapt_steps":
        progress = progress[progress[X_COLUMN[comparison.match]] <= upto]
    statistic = "max" if comparison.statistic == "max" else "final"
    return stats.per_seed(progress, comparison.metric, statistic, comparison.window)


def evaluate(
    comparison: Comparison,
    progress: pd.DataFrame,
    published: pd.DataFrame,
    rng: np.random.Generator,
    n_resamples: int = stats.N_RESAMPLES,
) -> dict[str, object]:
    """One comparison on one experiment's runs.

    ``progress``: the stacked progress rows of the runs to compare (columns ``seed``, ``Epoch``,
    ``TotalEnvSteps`` and the metric; ``Epoch`` counts from 0, so epoch ``budget_epochs − 1`` ends the
    budget). Returns one row of the verdict table (see ``bench.report.SUMMARY_COLUMNS``).
    """
    c = comparison
    notes: list[str] = []
    budget_epoch = c.budget_epochs - 1
    last_epoch = float(progress.groupby("seed")[rf.EPOCH].max().min()) if len(progress) else math.nan
    at_budget = last_epoch >= budget_epoch
    end_epoch = budget_epoch if at_budget else last_epoch
    rows = progress[progress[rf.EPOCH] <= end_epoch] if len(progress) else progress

    series = None
    info: dict[str, object] = {"label": "", "source": "", "approx": False, "proxy": c.proxy}
    if c.reference is not None:
        series = pub.curve(published, c.reference, c.reference_metric)
        info = pub.describe(published, c.reference)

    # the x we compare at: our end (at most the budget), at most the reference's end
    if c.match == "adapt_steps":
        compare_x = float(c.adapt_step)
    elif c.match == "epochs":
        compare_x = end_epoch
    else:
        ends = rows.groupby("seed")[rf.TOTAL_ENV_STEPS].max() if len(rows) else pd.Series(dtype=float)
        compare_x = float(ends.min()) if len(ends) else math.nan
    has_x = series is not None and not series["x"].isna().all()
    overlap = True
    if has_x:
        x_min, x_max = float(series["x"].min()), float(series["x"].max())
        if compare_x > x_max:
            notes.append(f"compared at the reference's last x ({x_max:g})")
            compare_x = x_max
        if compare_x < x_min:
            overlap = False
            notes.append(f"no common x: ours end at {compare_x:g}, the reference starts at {x_min:g}")

    values = per_seed_values(rows, c, compare_x) if len(rows) else np.array([])
    summary = stats.summarise(values, rng, n_resamples=n_resamples)
    has_data = summary["n_seeds"] > 0
    if not has_data:
        notes.append(f"no values of {c.metric!r} up to the compared x")
    published_y = pub.value_at(series, compare_x) if series is not None and overlap else math.nan
    ref_y = published_y * c.y_scale
    where = position(float(summary["mean"]), ref_y, c.tolerance)
    result = verdict(c.reference is not None, has_data, at_budget and overlap, where)
    if result == BUDGET_SHORT:
        epochs_done = int(last_epoch + 1) if not math.isnan(last_epoch) else 0
        there = f"; there: {where}" if where else ""
        notes.insert(
            0, f"runs end after {epochs_done}/{c.budget_epochs} epochs: compared at x={compare_x:g}{there}"
        )
    notes += [n for n in (c.note, str(summary["ci_note"]) if has_data else "") if n]
    return {
        "comparison": c.name,
        "primary": c.primary,
        "metric": c.metric,
        "statistic": c.statistic,
        "match": c.match,
        "reference": c.reference or "",
        "reference_label": info["label"],
        "source": info["source"],
        "approx": bool(info["approx"]),
        "proxy": bool(info["proxy"]),
        "budget_epochs": c.budget_epochs,
        "epochs_done": int(last_epoch + 1) if not math.isnan(last_epoch) else 0,
        "compare_x": compare_x,
        "n_seeds": summary["n_seeds"],
        "ours_mean": summary["mean"],
        "ours_ci_low": summary["ci_low"],
        "ours_ci_high": summary["ci_high"],
        "ours_iqm": summary["iqm"],
        "ours_iqm_ci_low": summary["iqm_ci_low"],
        "ours_iqm_ci_high": summary["iqm_ci_high"],
        "ref_published": published_y,
        "y_scale": c.y_scale,
        "ref_y": ref_y,
        "tolerance": c.tolerance,
        "band_low": ref_y - c.tolerance,
        "band_high": ref_y + c.tolerance,
        "position": where,
        "verdict": result,
        "note": "; ".join(notes),
        "tolerance_reason": c.tolerance_reason,
    }
