"""Read and validate run folders (the contract: ``bench/run_format.py``) into tidy tables.

Every problem raises ``RunFolderError`` naming the file and what is wrong; nothing is skipped. Runs that
did not finish their epochs are kept and labelled partial.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import files
from bench import run_format as rf
from bench.report.comparisons import EXPERIMENTS
from bench.run.ablations import is_ablation
from bench.run.experiments import with_defaults

REQUIRED_COLUMNS = (rf.EPOCH, rf.TOTAL_ENV_STEPS, rf.RETURN)
"""Columns every progress.csv must have; the others are read by name where a table needs them."""
STATUSES = (rf.STATUS_RUNNING, rf.STATUS_FINISHED, rf.STATUS_FAILED, rf.STATUS_INTERRUPTED)
STALE = "stale (no live holder)"
"""A run whose manifest says running, but whose lock no process holds: its trainer was killed."""
SEED_DIR = re.compile(r"seed-(\d+)")
LAYOUT = "runs/<profile>/<experiment>/seed-<k>/"


class RunFolderError(ValueError):
    """A run folder is missing a file, or a file is corrupt; ``path`` is the offending file or folder."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


@dataclass(frozen=True, eq=False)
class Run:
    """One validated run folder."""

    path: Path
    experiment: str
    profile: str
    seed: int
    status: str
    epochs_completed: int
    epochs_total: int
    config: Mapping[str, Any]
    manifest: Mapping[str, Any]
    """manifest.json as read (versions, git commit, host and device per start, …)."""
    progress: pd.DataFrame
    """One row per logged epoch, sorted by ``Epoch``; every column numeric (empty cells are NaN)."""
    notes: tuple[str, ...] = ()
    error: str = ""
    """First line of the manifest's ``error`` (failed and interrupted runs)."""
    stale: bool = False
    """Status ``running`` with nobody holding the folder (:func:`liveness`)."""

    @property
    def partial(self) -> bool:
        return self.status != rf.STATUS_FINISHED or self.epochs_completed < self.epochs_total

    @property
    def partial_reason(self) -> str:
        """Why the run is partial ('' when it is complete)."""
        if not self.partial:
            return ""
        status = f"{self.status}, {STALE}" if self.stale else self.status
        reason = f"status {status}, {self.epochs_completed}/{self.epochs_total} epochs"
        return f"{reason}: {self.error}" if self.error else reason


def liveness(folder: Path, status: str) -> str:
    """``status``, and for a run that says it is running, who holds it: its trainer (the run folder's lock)
    or the command that will resume it (the command lock); :data:`STALE` when nobody does, as after a
    ``kill -9``. Each probe holds a free lock for an instant (:func:`bench.files.lock_holder`)."""
    if status != rf.STATUS_RUNNING:
        return status
    folder = Path(folder)
    holder = files.lock_holder(folder / files.LOCK) or files.lock_holder(files.command_lock_path(folder))
    return f"{status}, held by {holder}" if holder else STALE


def _read_json(path: Path, required: Mapping[str, type | tuple[type, ...]]) -> dict[str, Any]:
    if not path.is_file():
        raise RunFolderError(path, "file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunFolderError(path, f"not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise RunFolderError(path, f"expected a JSON object, found {type(data).__name__}")
    for key, kind in required.items():
        if key not in data:
            raise RunFolderError(path, f"missing key {key!r}")
        value = data[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise RunFolderError(path, f"key {key!r} has {value!r}; expected {_kind_name(kind)}")
    return data


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _progress_rows(path: Path, torn_tail_ok: bool) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, rows, notes) of a progress.csv; every row as long as the header. A short or long last row
    (a line torn by a kill mid-write) is dropped with a note where ``torn_tail_ok``, else an error."""
    if not path.is_file():
        raise RunFolderError(path, "file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise RunFolderError(path, f"not UTF-8 text ({err})") from err
    try:
        lines = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise RunFolderError(path, f"not a readable CSV ({err})") from err
    if not lines or not lines[0]:
        raise RunFolderError(path, "empty file: no header row")
    header, rows, notes = lines[0], lines[1:], []
    for index, row in enumerate(rows):
        if len(row) == len(header):
            continue
        line = index + 2
        if index == len(rows) - 1 and torn_tail_ok:
            notes.append(f"progress.csv line {line} is torn ({len(row)} of {len(header)} cells): left out")
            rows = rows[:-1]
            break
        raise RunFolderError(path, f"line {line} has {len(row)} cells, the header {len(header)}")
    return header, rows, notes


def read_progress(path: Path, torn_tail_ok: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """progress.csv as numbers, with notes: empty cells and ``nan`` → NaN; every row as long as the header
    (see :func:`_progress_rows`); no infinities; ``Epoch`` the integers 0, 1, 2, … without gaps and
    ``TotalEnvSteps`` non-decreasing. Raises ``RunFolderError`` otherwise."""
    header, rows, notes = _progress_rows(path, torn_tail_ok)
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise RunFolderError(path, f"duplicate column(s) {duplicates}")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise RunFolderError(path, f"missing required column(s) {missing}; has {header}")
    raw = pd.DataFrame(rows, columns=header, dtype=str)
    columns: dict[str, pd.Series] = {}
    for column in raw.columns:
        text = raw[column].str.strip()
        values = pd.to_numeric(text.where(text != ""), errors="coerce")
        bad = values.isna() & (text != "") & ~text.str.lower().isin(["nan", "-nan"])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise RunFolderError(
                path, f"non-numeric value {raw[column].iloc[row]!r} in column {column!r} at line {row + 2}"
            )
        infinite = np.isinf(values.to_numpy(float))
        if infinite.any():
            row = int(np.flatnonzero(infinite)[0])
            raise RunFolderError(path, f"infinite value in column {column!r} at line {row + 2}")
        columns[column] = values.astype(float)
    table = pd.DataFrame(columns, index=raw.index)
    for column in (rf.EPOCH, rf.TOTAL_ENV_STEPS):
        if table[column].isna().any():
            row = int(np.flatnonzero(table[column].isna().to_numpy())[0])
            raise RunFolderError(path, f"empty {column!r} at line {row + 2}")
    epochs = table[rf.EPOCH].to_numpy()
    if (epochs != np.arange(len(epochs))).any():
        line = int(np.flatnonzero(epochs != np.arange(len(epochs)))[0]) + 2
        raise RunFolderError(
            path, f"column {rf.EPOCH!r} must count 0, 1, 2, … one row per epoch (line {line} breaks it)"
        )
    if (np.diff(table[rf.TOTAL_ENV_STEPS].to_numpy()) < 0).any():
        raise RunFolderError(path, f"column {rf.TOTAL_ENV_STEPS!r} decreases")
    return table, notes


def read_run(folder: Path) -> Run:
    """Validate one ``runs/<profile>/<experiment>/seed-<k>/`` folder and read it."""
    folder = Path(folder)
    config = _read_json(folder / rf.CONFIG, {"experiment": str, "profile": str, "seed": int})
    expected = {"experiment": folder.parent.name, "profile": folder.parent.parent.name}
    match = SEED_DIR.fullmatch(folder.name)
    expected["seed"] = int(match.group(1)) if match else folder.name
    for key, value in expected.items():
        if config[key] != value:
            raise RunFolderError(
                folder / rf.CONFIG, f"{key} is {config[key]!r} but the folder says {value!r}"
            )
    manifest = _read_json(folder / rf.MANIFEST, {"status": str, "epochs_completed": int, "epochs_total": int})
    if manifest["status"] not in STATUSES:
        raise RunFolderError(folder / rf.MANIFEST, f"status {manifest['status']!r} is not one of {STATUSES}")
    done, total = manifest["epochs_completed"], manifest["epochs_total"]
    if not 0 <= done <= total:
        raise RunFolderError(
            folder / rf.MANIFEST, f"epochs_completed {done} not in [0, epochs_total={total}]"
        )
    notes: list[str] = []
    progress_path = folder / rf.PROGRESS
    finished = manifest["status"] == rf.STATUS_FINISHED
    empty = not progress_path.exists() or progress_path.stat().st_size == 0
    if empty and done == 0 and not finished:  # the trainer opens progress.csv before its first epoch ends
        progress = pd.DataFrame({c: pd.Series(dtype=float) for c in REQUIRED_COLUMNS})
        notes.append("no epoch logged yet")
    else:
        progress, notes = read_progress(progress_path, torn_tail_ok=not finished)
    # the trainer appends a row every epoch and checkpoints (updating the manifest) every few: an
    # unfinished run may be rows ahead of its manifest, never behind it
    if len(progress) < done or (finished and len(progress) != done):
        raise RunFolderError(
            progress_path, f"has {len(progress)} rows, but {rf.MANIFEST} says {done} epochs completed"
        )
    if len(progress) > done:
        notes.append(
            f"{len(progress) - done} epoch(s) logged after the last checkpoint (rerun resumes there)"
        )
    if is_ablation(config["experiment"]):
        notes.append("an ablation: reported under Ablations, never in a verdict")
    elif config["experiment"] not in EXPERIMENTS:
        notes.append(f"experiment {config['experiment']!r} is not one of the five: no comparison declared")
    error = str(manifest.get("error") or "").strip()
    return Run(
        path=folder,
        experiment=config["experiment"],
        profile=config["profile"],
        seed=config["seed"],
        status=manifest["status"],
        epochs_completed=done,
        epochs_total=total,
        config=with_defaults(config),
        manifest=manifest,
        progress=progress,
        notes=tuple(notes),
        error=error.splitlines()[0][:200] if error else "",
        stale=liveness(folder, manifest["status"]) == STALE,
    )


def find_run_folders(results: Path) -> list[Path]:
    """Every ``seed-<k>`` folder under ``results/runs``, sorted; anything else there is an error."""
    root = Path(results) / "runs"
    if not root.is_dir():
        raise RunFolderError(root, f"no runs folder (expected {LAYOUT} under {results})")
    folders = []
    for profile in _entries(root):
        for experiment in _entries(profile):
            for seed in _entries(experiment):
                if not SEED_DIR.fullmatch(seed.name):
                    raise RunFolderError(seed, f"not a seed-<k> folder (expected {LAYOUT})")
                folders.append(seed)
    if not folders:
        raise RunFolderError(root, f"no run folders (expected {LAYOUT})")
    return sorted(folders, key=lambda p: (p.parent.parent.name, p.parent.name, int(p.name[5:])))


def _entries(folder: Path) -> list[Path]:
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    for entry in entries:
        if not entry.is_dir():
            raise RunFolderError(entry, f"unexpected file in the run tree (expected {LAYOUT})")
    return entries


def load_runs(results: Path) -> list[Run]:
    """Read and validate every run folder under ``results/runs``."""
    return [read_run(folder) for folder in find_run_folders(results)]


def runs_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: ``profile, experiment, seed, status, epochs_completed, epochs_total, rows, partial,
    partial_reason, notes, path``."""
    return pd.DataFrame(
        [
            {
                "profile": r.profile,
                "experiment": r.experiment,
                "seed": r.seed,
                "status": r.status,
                "epochs_completed": r.epochs_completed,
                "epochs_total": r.epochs_total,
                "rows": len(r.progress),
                "partial": r.partial,
                "partial_reason": r.partial_reason,
                "notes": "; ".join(r.notes),
                "path": str(r.path),
            }
            for r in runs
        ]
    )


def progress_table(runs: list[Run]) -> pd.DataFrame:
    """All runs' progress.csv rows stacked: ``profile, experiment, seed, partial`` + the progress columns
    (union over runs; a column a run lacks is NaN there)."""
    frames = [
        r.progress.assign(profile=r.profile, experiment=r.experiment, seed=r.seed, partial=r.partial)
        for r in runs
    ]
    frames = [f for f in frames if not f.empty] or [pd.DataFrame(columns=list(REQUIRED_COLUMNS))]
    table = pd.concat(frames, ignore_index=True, sort=False)
    ids = ["profile", "experiment", "seed", "partial"]
    for column in ids:
        if column not in table:
            table[column] = pd.Series(dtype=object)
    return table[ids + [c for c in table.columns if c not in ids]]
