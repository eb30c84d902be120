"""Published reference numbers (``results/published/``) as one tidy table, and the curves drawn from it.

Provenance and caveats of every number: ``results/published/README.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

PUBLISHED_DIR = Path(__file__).resolve().parents[2] / "results" / "published"
FILES = ("references.csv", "garage_metaworld_v2.csv")
COLUMNS = ("curve", "label", "source", "metric", "x", "x_unit", "y", "y_unit", "approx", "proxy")
"""Columns every file has; garage's runs add ``seed``, ``iteration`` and ``benchmark``."""

X_UNITS = ("adaptation_steps", "env_steps", "meta_iterations", "final", "none")


class PublishedDataError(ValueError):
    """A published-data file is missing or malformed; the message names the file."""


def _flags(path: Path, column: pd.Series) -> pd.Series:
    """A true/false column (``True``/``False``, any case, or 1/0); anything else, blank included, is an
    error naming the file: a blank ``approx`` must not read as true."""
    text = column.astype(str).str.strip().str.lower()
    mapping = {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}
    bad = ~text.isin(list(mapping))
    if bad.any():
        raise PublishedDataError(
            f"{path}: column {column.name!r} must be true or false, found {column[bad].iloc[0]!r} at line "
            f"{int(np.flatnonzero(bad.to_numpy())[0]) + 2}"
        )
    return text.map(mapping).astype(bool)


def load_published(directory: Path = PUBLISHED_DIR) -> pd.DataFrame:
    """All published numbers, one row each.

    Returns columns ``COLUMNS`` plus ``seed`` (NaN outside garage's runs) and the files' other columns;
    ``x`` is NaN where the unit is ``final`` or ``none``; ``approx`` and ``proxy`` are bool.
    """
    frames = []
    for name in FILES:
        path = Path(directory) / name
        if not path.is_file():
            raise PublishedDataError(f"{path}: file not found")
        frame = pd.read_csv(path)
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise PublishedDataError(f"{path}: missing column(s) {missing}")
        bad_units = sorted(set(frame["x_unit"]) - set(X_UNITS))
        if bad_units:
            raise PublishedDataError(f"{path}: unknown x_unit {bad_units}; expected one of {X_UNITS}")
        for column in ("x", "y"):
            values = pd.to_numeric(frame[column], errors="coerce")
            if (values.isna() & frame[column].notna()).any():
                raise PublishedDataError(f"{path}: column {column!r} has non-numeric values")
            frame[column] = values
        if frame["y"].isna().any():
            raise PublishedDataError(f"{path}: column 'y' has empty values (store only published numbers)")
        for column in ("approx", "proxy"):
            frame[column] = _flags(path, frame[column])
        frames.append(frame.assign(file=name))
    table = pd.concat(frames, ignore_index=True)
    if "seed" not in table.columns:
        table["seed"] = np.nan
    return table


def curve(published: pd.DataFrame, curve_id: str, metric: str | None = None) -> pd.DataFrame:
    """One published series as ``x, y`` sorted by x, averaged over seeds where it has several.

    ``metric`` selects one of garage's logged keys (its runs hold several metrics under one curve id).
    Returns columns ``x, y, n_seeds``; one row with x = NaN for a single number without x (``final``).
    Raises ``KeyError`` naming the known ids when ``curve_id`` (or the metric) is absent.
    """
    rows = published[published["curve"] == curve_id]
    if rows.empty:
        known = ", ".join(sorted(published["curve"].unique()))
        raise KeyError(f"no published curve {curve_id!r}; known curves: {known}")
    if rows["metric"].nunique() > 1:
        if metric is None or metric not in set(rows["metric"]):
            raise KeyError(f"curve {curve_id!r} holds metrics {sorted(rows['metric'].unique())}: name one")
        rows = rows[rows["metric"] == metric]
    if rows["x"].isna().all():
        return pd.DataFrame({"x": [np.nan], "y": [rows["y"].mean()], "n_seeds": [len(rows)]})
    grouped = rows.groupby("x", sort=True)["y"]
    return pd.DataFrame({"y": grouped.mean(), "n_seeds": grouped.size()}).reset_index()


def value_at(series: pd.DataFrame, x: float) -> float:
    """The series' y at x: linear interpolation between published points; its constant when it has no x.

    NaN when x lies outside the series' x range (no extrapolation).
    """
    if series["x"].isna().all():
        return float(series["y"].iloc[0])
    xs, ys = series["x"].to_numpy(float), series["y"].to_numpy(float)
    if not xs[0] <= x <= xs[-1]:
        return float("nan")
    return float(np.interp(x, xs, ys))


def describe(published: pd.DataFrame, curve_id: str) -> dict[str, object]:
    """Label, source, units and approx/proxy flags of one series (constant within a series; a series
    spread over several files, such as garage's runs, names the first and counts the others)."""
    rows = published[published["curve"] == curve_id]
    info = {k: rows[k].iloc[0] for k in ("label", "x_unit", "y_unit", "approx", "proxy")}
    sources = list(dict.fromkeys(rows["source"]))
    info["source"] = sources[0] if len(sources) == 1 else f"{sources[0]} and {len(sources) - 1} more"
    return info
