"""``python -m bench <command>``: the harness's command line.

Each command is a subparser registered by an ``add_*(subparsers)`` function that sets ``func``: a callable
taking the parsed arguments and returning the exit status. A new command (``list``, ``run``, ``reproduce``)
is added by listing its registering function in ``COMMANDS``; heavy imports belong inside ``func``, so that
one command does not pay for another's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.commands import DEFAULT_RESULTS, add_commands

EXIT_BAD_INPUT = 2


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
    from bench.report import REPORT_FILE, format_verdicts, report
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
    print(format_verdicts(summary))
    print(f"\nreport: {Path(results) / REPORT_FILE}")
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="maml-bench harness")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from bench.experiments import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last checkpoints", file=sys.stderr)
        return 130
