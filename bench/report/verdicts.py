"""Evaluate a declared comparison on our runs: our value at the matched x, the published value there, the
band, and a verdict.

Verdicts, the first that applies:

- ``no-reference``: nothing is published to compare with (our value is still reported);
- ``no-data``: our runs never logged the metric up to the matched x (e.g. no meta-test yet);
- ``budget-short``: our runs end before the declared budget (``Comparison.budget_epochs``), or before the
  reference's x range starts; compared at the largest common x, and the note says where we stand there;
- ``off-protocol``: the runs' config differs from garage's example (the ``full`` preset) in a field that
  changes the algorithm or its measurements (``--set`` overrides, or another profile at full length);
  the note lists the fields and says where we stand;
- ``too-few-seeds``: fewer than :data:`MIN_SEEDS` seeds; the note says where we stand;
- a band comparison: ``reproduced`` when our mean across seeds lies inside ``[reference − tolerance,
  reference + tolerance]`` (edges included), else ``below`` / ``above``;
- a floor comparison (a reference that is a lower bound, not a target, e.g. garage's own runs of its buggy
  MAML): ``at-or-above-floor`` when our mean is at least ``reference − tolerance``, else ``below-floor``.

Every comparison also says whether our runs **learned** (``learned``, from how far the metric moved from
its first to its last logged values, per seed: :func:`bench.report.stats.start_to_end`): ``no`` when it did
not rise on average, ``yes`` when it rose and the Student-t CI of the rise across seeds lies above zero,
``unclear`` otherwise. A verdict inside a band or above a floor that contains the untrained policy's value
says little without it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bench import run_format as rf
from bench.report import published as pub
from bench.report import stats
from bench.report.comparisons import Comparison

REPRODUCED = "reproduced"
BELOW = "below"
ABOVE = "above"
AT_OR_ABOVE_FLOOR = "at-or-above-floor"
BELOW_FLOOR = "below-floor"
BUDGET_SHORT = "budget-short"
OFF_PROTOCOL = "off-protocol"
TOO_FEW_SEEDS = "too-few-seeds"
NO_REFERENCE = "no-reference"
NO_DATA = "no-data"
VERDICTS = (
    REPRODUCED, BELOW, ABOVE, AT_OR_ABOVE_FLOOR, BELOW_FLOOR, BUDGET_SHORT, OFF_PROTOCOL, TOO_FEW_SEEDS,
    NO_REFERENCE, NO_DATA,
)  # fmt: skip
MIN_SEEDS = 3
"""Fewest seeds for a verdict on a reference (garage ran 3–5 per example; the harness's default is 3)."""
LEARNED, NOT_LEARNED, UNCLEAR = "yes", "no", "unclear"
STANDING = {
    REPRODUCED: "inside the band",
    BELOW: "below the band",
    ABOVE: "above the band",
    AT_OR_ABOVE_FLOOR: "at or above the floor",
    BELOW_FLOOR: "below the floor",
}
"""Where the mean stands, in a note on a comparison that gets no verdict (short, off-protocol, too few
seeds): said without the verdict's word, which a smoke or partial run must never print."""

X_COLUMN = {"env_steps": rf.TOTAL_ENV_STEPS, "epochs": rf.EPOCH}


def position(ours: float, reference: float, tolerance: float, kind: str = "band") -> str:
    """Where our value lies relative to the band ``reference ± tolerance`` (edges inside), or for
    ``kind="floor"`` relative to ``reference − tolerance``; '' if unknown."""
    if any(math.isnan(v) for v in (ours, reference, tolerance)):
        return ""
    if kind == "floor":
        return BELOW_FLOOR if ours < reference - tolerance else AT_OR_ABOVE_FLOOR
    if ours < reference - tolerance:
        return BELOW
    if ours > reference + tolerance:
        return ABOVE
    return REPRODUCED


def verdict(
    has_reference: bool,
    has_data: bool,
    at_budget: bool,
    where: str,
    deviations: Sequence[str] = (),
    n_seeds: int = MIN_SEEDS,
) -> str:
    """The verdict from the comparison's facts (see the module docstring)."""
    if not has_reference:
        return NO_REFERENCE
    if not has_data:
        return NO_DATA
    if not at_budget or not where:
        return BUDGET_SHORT
    if deviations:
        return OFF_PROTOCOL
    if n_seeds < MIN_SEEDS:
        return TOO_FEW_SEEDS
    return where


def learned(moved: np.ndarray) -> tuple[str, float, float, float]:
    """(``yes`` / ``no`` / ``unclear``, mean, CI low, CI high) of the per-seed movement from the first to
    the last logged values (``moved``, NaN entries dropped): ``no`` when the mean movement is ≤ 0 (the
    metric did not rise), ``yes`` when it rose and its t-interval lies above zero, ``unclear`` when it rose
    but the interval reaches zero, or with fewer than 2 seeds."""
    moved = np.asarray(moved, dtype=float)
    moved = moved[~np.isnan(moved)]
    if len(moved) == 0:
        return UNCLEAR, math.nan, math.nan, math.nan
    low, high = stats.t_interval(moved[:, None])
    mean = float(moved.mean())
    if mean <= 0:
        return NOT_LEARNED, mean, float(low[0]), float(high[0])
    answer = LEARNED if low[0] > 0 else UNCLEAR  # NaN (one seed) compares False: unclear
    return answer, mean, float(low[0]), float(high[0])


def up_to(progress: pd.DataFrame, comparison: Comparison, upto: float) -> pd.DataFrame:
    """The rows that count at the matched x: up to ``upto`` on the comparison's x column (all rows for
    ``adapt_steps``, whose values are read at the end of training)."""
    if comparison.match == "adapt_steps":
        return progress
    return progress[progress[X_COLUMN[comparison.match]] <= upto]


def per_seed_values(progress: pd.DataFrame, comparison: Comparison, upto: float) -> np.ndarray:
    """Our value per seed at the matched x: ``[n_seeds]`` in seed order, NaN for a seed with no value.

    ``progress``: rows of one experiment's runs, already cut at the compared epoch, then at ``upto``
    (:func:`up_to`); ``statistic="value"`` averages what was logged in the last ``window`` epochs
    (:func:`bench.report.stats.per_seed`), ``"max"`` takes the maximum of all.
    """
    statistic = "max" if comparison.statistic == "max" else "final"
    return stats.per_seed(up_to(progress, comparison, upto), comparison.metric, statistic, comparison.window)


def per_seed_moved(progress: pd.DataFrame, comparison: Comparison, upto: float) -> np.ndarray:
    """Per seed, how far the compared metric moved over training up to the matched x (:func:`up_to`,
    :func:`bench.report.stats.start_to_end`)."""
    return stats.start_to_end(up_to(progress, comparison, upto), comparison.metric, comparison.window)


def evaluate(
    comparison: Comparison,
    progress: pd.DataFrame,
    published: pd.DataFrame,
    rng: np.random.Generator,
    n_resamples: int = stats.N_RESAMPLES,
    deviations: Sequence[str] = (),
) -> dict[str, object]:
    """One comparison on one experiment's runs.

    ``progress``: the stacked progress rows of the runs to compare (columns ``seed``, ``Epoch``,
    ``TotalEnvSteps`` and the metric; ``Epoch`` counts from 0, so epoch ``budget_epochs − 1`` ends the
    budget). ``deviations``: how the runs' config differs from garage's example (``field=value`` phrases,
    see :func:`bench.report.protocol_deviations`). Returns one row of the verdict table (see
    ``bench.report.SUMMARY_COLUMNS``).
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
    summary = stats.summarise(values, rng, n_resamples=n_resamples, bounds=rf.value_range(c.metric))
    has_data = summary["n_seeds"] > 0
    if not has_data:
        notes.append(f"no values of {c.metric!r} up to the compared x")
    published_y = pub.value_at(series, compare_x) if series is not None and overlap else math.nan
    ref_y = published_y * c.y_scale
    where = position(float(summary["mean"]), ref_y, c.tolerance, c.kind)
    n_seeds = int(summary["n_seeds"])
    result = verdict(c.reference is not None, has_data, at_budget and overlap, where, deviations, n_seeds)
    there = f"; there: {STANDING[where]}" if where else ""  # not a verdict: no verdict words
    if result == BUDGET_SHORT:
        epochs_done = int(last_epoch + 1) if not math.isnan(last_epoch) else 0
        notes.insert(
            0, f"runs end after {epochs_done}/{c.budget_epochs} epochs: compared at x={compare_x:g}{there}"
        )
    elif result == OFF_PROTOCOL:
        notes.insert(0, f"config differs from garage's example: {', '.join(deviations)}{there}")
    elif result == TOO_FEW_SEEDS:
        notes.insert(0, f"{n_seeds} seed(s), a verdict needs ≥ {MIN_SEEDS}{there}")
    elif result == REPRODUCED:
        low, high = float(summary["ci_low"]), float(summary["ci_high"])
        if low < ref_y - c.tolerance or high > ref_y + c.tolerance:
            notes.append(f"the mean is inside the band but its CI [{low:.4g}, {high:.4g}] reaches outside")
    moved = per_seed_moved(rows, c, compare_x) if len(rows) else np.array([])
    did_learn, moved_mean, moved_low, moved_high = learned(moved)
    notes += [n for n in (c.note, str(summary["ci_note"]) if has_data else "") if n]
    return {
        "comparison": c.name,
        "primary": c.primary,
        "metric": c.metric,
        "statistic": c.statistic,
        "match": c.match,
        "kind": c.kind,
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
        "learned": did_learn,
        "moved": moved_mean,
        "moved_ci_low": moved_low,
        "moved_ci_high": moved_high,
        "note": "; ".join(notes),
        "tolerance_reason": c.tolerance_reason,
    }
