"""Aggregation across seeds: means, interquartile means and percentile-bootstrap confidence intervals.

Small pure functions over ``[n_seeds, n_points]`` matrices (NaN = that seed has no value at that point), in
the spirit of rliable, but with ``scipy.stats.bootstrap`` and an explicit, seeded ``numpy.random.Generator``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from bench import run_format as rf

CONFIDENCE = 0.95
N_RESAMPLES = 2000
FINAL_WINDOW = 10
"""A seed's final value is the mean of its last ``FINAL_WINDOW`` logged values (single epochs are noisy)."""
StatName = Literal["mean", "iqm"]


def iqm(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50 % (25 % trimmed from each end, as rliable does).

    With fewer than 4 values nothing is trimmed (``scipy.stats.trim_mean`` trims ``int(0.25 n)``), so the
    IQM of 1–3 seeds equals their mean.
    """
    return stats.trim_mean(values, 0.25, axis=axis)


STATISTICS: dict[StatName, Callable[..., np.ndarray]] = {"mean": np.mean, "iqm": iqm}


def bootstrap_ci(
    samples: np.ndarray,
    rng: np.random.Generator,
    statistic: StatName = "mean",
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap CI of ``statistic`` across seeds, for every point at once.

    ``samples``: ``[n_seeds, n_points]``, NaN where a seed has no value. Seeds are resampled among those
    that have a value at the point. Returns ``(low, high)``, each ``[n_points]``; NaN where fewer than 2
    seeds have a value (no spread to resample).
    """
    samples = np.asarray(samples, dtype=float)
    if samples.ndim != 2:
        raise ValueError(f"samples must be [n_seeds, n_points], got shape {samples.shape}")
    low = np.full(samples.shape[1], np.nan)
    high = np.full(samples.shape[1], np.nan)
    valid = ~np.isnan(samples)
    if samples.shape[1] == 0:
        return low, high
    # points with the same set of seeds present are bootstrapped together, in one vectorised call
    patterns, group = np.unique(valid.T, axis=0, return_inverse=True)
    for index, pattern in enumerate(patterns):
        if pattern.sum() < 2:
            continue
        columns = np.flatnonzero(group.ravel() == index)
        result = stats.bootstrap(
            (samples[np.ix_(pattern, columns)],),
            STATISTICS[statistic],
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            axis=0,
            vectorized=True,
            rng=rng,
        )
        low[columns] = result.confidence_interval.low
        high[columns] = result.confidence_interval.high
    return low, high


def summarise(
    values: np.ndarray,
    rng: np.random.Generator,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
) -> dict[str, float | int | str]:
    """Mean and IQM across seeds with their bootstrap CIs.

    ``values``: ``[n_seeds]`` (NaN entries are dropped). Returns ``n_seeds, mean, ci_low, ci_high, iqm,
    iqm_ci_low, iqm_ci_high, ci_note``; with one seed the CIs are NaN and ``ci_note`` says so.
    """
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    n = len(values)
    out: dict[str, float | int | str] = {"n_seeds": n, "ci_note": ""}
    if n == 0:
        out.update(dict.fromkeys(("mean", "ci_low", "ci_high", "iqm", "iqm_ci_low", "iqm_ci_high"), np.nan))
        out["ci_note"] = "no values"
        return out
    column = values[:, None]
    for name, prefix in (("mean", ""), ("iqm", "iqm_")):
        out[name] = float(STATISTICS[name](values, axis=0))
        low, high = bootstrap_ci(column, rng, name, confidence, n_resamples)
        out[f"{prefix}ci_low"], out[f"{prefix}ci_high"] = float(low[0]), float(high[0])
    if n == 1:
        out["ci_note"] = "1 seed: no confidence interval"
    return out


def per_seed(
    progress: pd.DataFrame, metric: str, statistic: Literal["final", "max"], window: int = FINAL_WINDOW
) -> np.ndarray:
    """One number per seed: the mean of its last ``window`` logged values (``final``) or their maximum
    (``max``, e.g. Meta-World's maximum over training).

    ``progress``: rows of one experiment (columns ``seed`` and ``metric``; empty cells NaN). Returns
    ``[n_seeds]`` in seed order; NaN for a seed that never logged the metric.
    """
    seeds = np.sort(progress["seed"].unique())
    if metric not in progress:
        return np.full(len(seeds), np.nan)
    logged = progress.dropna(subset=[metric]).groupby("seed")[metric]
    values = logged.max() if statistic == "max" else logged.apply(lambda s: s.tail(window).mean())
    return values.reindex(seeds).to_numpy(float)


def seed_matrix(progress: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One metric as ``[n_seeds, n_epochs]``, with the epochs and the mean env steps at each epoch.

    ``progress``: rows of one experiment (columns ``seed``, ``Epoch``, ``TotalEnvSteps``, ``metric``).
    Returns ``(epochs [n_epochs], env_steps [n_epochs], values [n_seeds, n_epochs])``; NaN where a seed has
    no value at an epoch (not logged there, or the run ended earlier).
    """
    values = progress.set_index(["seed", rf.EPOCH])[metric].unstack(rf.EPOCH).sort_index(axis=1)
    steps = progress.groupby(rf.EPOCH)[rf.TOTAL_ENV_STEPS].mean()
    epochs = values.columns.to_numpy(float)
    return epochs, steps.reindex(values.columns).to_numpy(float), values.to_numpy(float)


def curve(
    progress: pd.DataFrame,
    metric: str,
    rng: np.random.Generator,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
) -> pd.DataFrame:
    """Mean and bootstrap CI across seeds at every epoch where any seed logged ``metric``.

    Returns columns ``Epoch, TotalEnvSteps, n_seeds, mean, ci_low, ci_high`` (CI NaN where n_seeds < 2).
    """
    columns = [rf.EPOCH, rf.TOTAL_ENV_STEPS, "n_seeds", "mean", "ci_low", "ci_high"]
    if metric not in progress or progress[metric].isna().all():
        return pd.DataFrame(columns=columns)
    epochs, steps, values = seed_matrix(progress, metric)
    keep = ~np.isnan(values).all(axis=0)
    epochs, steps, values = epochs[keep], steps[keep], values[:, keep]
    low, high = bootstrap_ci(values, rng, "mean", confidence, n_resamples)
    return pd.DataFrame(
        {
            rf.EPOCH: epochs,
            rf.TOTAL_ENV_STEPS: steps,
            "n_seeds": (~np.isnan(values)).sum(axis=0),
            "mean": np.nanmean(values, axis=0),
            "ci_low": low,
            "ci_high": high,
        }
    )
