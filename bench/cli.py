"""``maml-bench <command>`` (or ``python -m bench <command>``): the harness's command line.

Each command is a subparser registered by an ``add_*(subparsers)`` function that sets ``func``: a callable
taking the parsed arguments and returning the exit status. A new command (``list``, ``run``, ``reproduce``)
is added by listing its registering function in ``COMMANDS``; heavy imports belong inside ``func``, so that
one command does not pay for another's.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.commands import DEFAULT_RESULTS, add_commands

EXIT_BAD_INPUT = 2
PROG = "maml-bench"
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
    from bench.published import PUBLISHED_DIR, PublishedDataError
    from bench.report import REPORT_FILE, report
    from bench.runs import RunFolderError
    from bench.stats import N_RESAMPLES

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


COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (add_commands, add_report)


def version() -> str:
    """The installed package's version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("maml-bench")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="maml-bench: train garage's five MAML examples over seeds, resume them, and compare them "
        "with published numbers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """The command line (the ``maml-bench`` entry point); returns the exit status: 0, 1 (a run failed), 2
    (bad input: nothing started), 128 + the signal that stopped training (130 SIGINT, 143 SIGTERM)."""
    from bench.experiments import ConfigError

    args = build_parser(prog).parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as error:  # Ctrl-C outside training, or a second signal during it
        print(f"{error or 'interrupted'}: rerun the same command to resume", file=sys.stderr)
        return 128 + getattr(error, "signum", signal.SIGINT)
