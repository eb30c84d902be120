"""The reporting side of the command line: ``report``, the run listing of ``list --runs``, and the verdict
table printed after ``report`` and ``reproduce`` (:mod:`bench.cli` registers the commands)."""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from bench.run_format import DEFAULT_RESULTS

EXIT_BAD_INPUT = 2
WIDTH = 100
"""Columns the verdict table fits in."""


def report_and_print(
    results: Path,
    published: Path | None = None,
    ci_seed: int = 0,
    n_resamples: int | None = None,
) -> int:
    """Write the report for ``results``; print the verdict table and the path of REPORT.md.

    Returns the exit status: 0, or ``EXIT_BAD_INPUT`` after printing the error (a missing or corrupt run
    folder, bad published data) to stderr.
    """
    from bench.report.generate import REPORT_FILE, report
    from bench.report.published import PUBLISHED_DIR, PublishedDataError
    from bench.report.runs import RunFolderError
    from bench.report.stats import N_RESAMPLES

    try:
        summary = report(
            results,
            published_dir=published or PUBLISHED_DIR,
            ci_seed=ci_seed,
            n_resamples=N_RESAMPLES if n_resamples is None else n_resamples,
        )
    except (RunFolderError, PublishedDataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(verdict_text(summary))
    print(f"\nreport: {Path(results) / REPORT_FILE}")
    return 0


def _g(value: float, digits: int = 3) -> str:
    """A number in at most 8 characters: ``digits`` significant ones, whole numbers from 100 on."""
    if math.isnan(value):
        return "–"
    return f"{value:.0f}" if 100 <= abs(value) < 1e7 else f"{value:.{digits}g}"


def _ours(r, with_ci: bool = True) -> str:
    ci = "" if math.isnan(r.ours_ci_low) or not with_ci else f" [{_g(r.ours_ci_low)}, {_g(r.ours_ci_high)}]"
    return f"{'max ' if r.statistic == 'max' else ''}{_g(r.ours_mean)}{ci}"


def _reference(r) -> str:
    if not r.reference:
        return "–"
    if math.isnan(r.ref_y):
        return "none at this x"
    text = f"≥ {_g(r.ref_y - r.tolerance)}" if r.kind == "floor" else f"{_g(r.ref_y)} ± {_g(r.tolerance, 2)}"
    return f"{text} (proxy)" if r.proxy else text


VERDICT_NOTE = (
    "* the experiment's primary comparison. ours: mean across seeds [95 % t-CI] (max: the maximum over "
    "training); reference: published value ± tolerance, or ≥ a floor. A verdict needs garage's 300 epochs, "
    "its config and ≥ 3 seeds (else budget-short, off-protocol, too-few-seeds). Where each is compared, "
    "notes and definitions: REPORT.md."
)


def verdict_text(summary) -> str:
    """The verdict table for the console, in :data:`WIDTH` columns: a heading per experiment and profile
    (epochs, seeds), a line per comparison, then what ``*`` and the columns mean. Where the CIs would make
    a line too long, they are left to REPORT.md."""
    if summary.empty:
        return "(no runs)"
    header = ("  comparison", "ours", "reference", "learned", "verdict")
    records = list(summary.itertuples(index=False))
    note = VERDICT_NOTE
    for with_ci in (True, False):
        cells = [
            (
                ("* " if r.primary else "  ") + r.comparison,
                _ours(r, with_ci),
                _reference(r),
                r.learned,
                r.verdict,
            )
            for r in records
        ]
        widths = [max(len(str(cell)) for cell in column) for column in zip(header, *cells, strict=True)]
        if sum(widths) + 2 * (len(widths) - 1) <= WIDTH:
            break
        note = VERDICT_NOTE.replace("mean across seeds [95 % t-CI]", "mean across seeds (CIs: REPORT.md)")

    def line(row: tuple) -> str:
        return "  ".join(f"{cell!s:<{width}}" for cell, width in zip(row, widths, strict=True)).rstrip()

    seeds = summary.groupby(["experiment", "profile"], sort=False)["n_seeds"].max()
    lines, group = [line(header)], None
    for r, row in zip(records, cells, strict=True):
        if (r.experiment, r.profile) != group:
            group = (r.experiment, r.profile)
            heading = f"{r.experiment} ({r.profile}): {r.epochs_done}/{r.budget_epochs} epochs"
            lines.append(f"{heading}, {int(seeds[group])} seed(s)")
        lines.append(line(row))
    return "\n".join([*lines, "", textwrap.fill(note, WIDTH)])


def _report(args: argparse.Namespace) -> int:
    return report_and_print(args.results, args.published, args.ci_seed, args.n_resamples)


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer ≥ ``low`` (argparse reports anything else and exits with status 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def add_report(subparsers: argparse._SubParsersAction) -> None:
    """Register ``report``."""
    parser = subparsers.add_parser(
        "report",
        help="aggregate run folders, compare with published numbers, write REPORT.md",
        description="Read every run folder under RESULTS/runs, aggregate across seeds, compare with the "
        "published numbers and write RESULTS/summary.csv, RESULTS/REPORT.md and RESULTS/plots/.",
    )
    parser.add_argument(
        "--results", type=Path, default=DEFAULT_RESULTS, help="results folder (default: %(default)s)"
    )
    parser.add_argument(
        "--published", type=Path, default=None, help="published reference data (default: results/published)"
    )
    parser.add_argument(
        "--ci-seed", type=_at_least(0), default=0, help="seed of the bootstrap's generator (default: 0)"
    )
    parser.add_argument(
        "--n-resamples", type=_at_least(1), default=None, help="bootstrap resamples (default: 2000)"
    )
    parser.set_defaults(func=_report)


def list_runs(results: Path) -> int:
    """Every run folder under ``results`` with its status; ``running`` says who trains it, or that nobody
    does (stale: its trainer was killed; rerunning its command resumes it)."""
    from bench import files
    from bench import run_format as rf
    from bench.report.runs import RunFolderError, find_run_folders, liveness

    try:
        folders = find_run_folders(results)
    except RunFolderError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    rows = []
    for folder in folders:
        try:
            manifest = files.read_json_object(folder / rf.MANIFEST)
        except FileNotFoundError:
            manifest = {}
        except ValueError as error:
            rows.append((folder, "unreadable manifest", str(error)))
            continue
        status = str(manifest.get("status", "not started"))
        epochs = f"{manifest.get('epochs_completed', 0)}/{manifest.get('epochs_total', '?')}"
        rows.append((folder, liveness(folder, status), f"{epochs} epochs"))
    names = ["/".join(folder.parts[-3:]) for folder, _, _ in rows]
    width = max(len(name) for name in names)
    status_width = max(len(status) for _, status, _ in rows)
    for name, (_, status, epochs) in zip(names, rows, strict=True):
        print(f"{name:{width}}  {status:{status_width}}  {epochs}")
    return 0
