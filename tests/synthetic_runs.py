"""Synthetic run folders (``bench/run_format.py``'s layout) with known values, for the report's tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from bench import run_format as rf
from bench.run.experiments import ConfigError, preset, to_dict


def _garage_config(experiment: str, epochs: int) -> dict[str, object]:
    """What the trainer writes for garage's example of ``experiment`` (every field), trained ``epochs``
    epochs; an experiment outside the five (or its ablations) gets the epochs alone."""
    try:
        return to_dict(preset(experiment, "full")) | {"epochs": epochs}
    except ConfigError:
        return {"epochs": epochs}


def progress(epochs: int, steps_per_epoch: float, columns: Mapping[str, object]) -> pd.DataFrame:
    """A progress table: ``Epoch`` 0 … epochs−1, ``TotalEnvSteps`` = (epoch + 1) · steps_per_epoch, and each
    of ``columns`` as a constant or an array of length ``epochs`` (NaN = empty cell)."""
    epoch = np.arange(epochs, dtype=float)
    table = {rf.EPOCH: epoch, rf.TOTAL_ENV_STEPS: (epoch + 1) * steps_per_epoch}
    for name, value in columns.items():
        table[name] = np.broadcast_to(np.asarray(value, dtype=float), (epochs,)).copy()
    return pd.DataFrame(table)


def write_run(
    results: Path,
    experiment: str,
    seed: int,
    table: pd.DataFrame | None,
    profile: str = "full",
    status: str = rf.STATUS_FINISHED,
    epochs_total: int | None = None,
    epochs_completed: int | None = None,
    **manifest: object,
) -> Path:
    """One run folder with config.json, manifest.json and (unless ``table`` is None) progress.csv."""
    folder = rf.run_dir(results, profile, experiment, seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = 0 if table is None else len(table)
    total = rows if epochs_total is None else epochs_total
    config = {"experiment": experiment, "profile": profile, "seed": seed, **_garage_config(experiment, total)}
    (folder / rf.CONFIG).write_text(json.dumps(config))
    record = {
        "status": status,
        "epochs_completed": rows if epochs_completed is None else epochs_completed,
        "epochs_total": total,
        **manifest,
    }
    (folder / rf.MANIFEST).write_text(json.dumps(record))
    if table is not None:
        table.to_csv(folder / rf.PROGRESS, index=False)
    return folder


def write_seeds(
    results: Path,
    experiment: str,
    finals: list[float],
    metric: str,
    epochs: int = 300,
    steps_per_epoch: float = 160_000.0,
    profile: str = "full",
    extra: Mapping[str, object] | None = None,
) -> list[Path]:
    """One finished run per value in ``finals``: ``metric`` constant at that value over all epochs (so the
    seed's final, windowed and maximum values all equal it), ``Average/AverageReturn`` too unless it is
    ``metric``; ``extra`` adds columns to every run."""
    folders = []
    for seed, value in enumerate(finals):
        columns = {rf.RETURN: 0.0, **(extra or {}), metric: value}
        folders.append(
            write_run(results, experiment, seed, progress(epochs, steps_per_epoch, columns), profile=profile)
        )
    return folders
