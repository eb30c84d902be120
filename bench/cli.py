"""``maml-bench <command>`` (or ``python -m bench <command>``): the harness's command line.

Each command is a subparser registered by an ``add_*(subparsers)`` function that sets ``func``: a callable
taking the parsed arguments and returning the exit status. A new command (``list``, ``run``, ``reproduce``)
is added by listing its registering function in ``COMMANDS``; heavy imports belong inside ``func``, so that
one command does not pay for another's.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.report.commands import EXIT_BAD_INPUT, add_report, list_runs, report_and_print
from bench.run.commands import add_run, add_run_options, list_experiments, train
from bench.run.experiments import EXPERIMENTS, PROFILES
from bench.run_format import DEFAULT_RESULTS

PROG = "maml-bench"


def add_list(subparsers: argparse._SubParsersAction) -> None:
    """Register ``list``: the experiments and profiles, or (``--runs``) the run folders."""
    text = "experiments, profiles and their settings; with --runs, the run folders and their status"
    listing = subparsers.add_parser("list", help=text, description=f"List the {text}.")
    listing.add_argument("--profile", choices=PROFILES, help="only this profile (default: all)")
    listing.add_argument("--runs", action="store_true", help="list the run folders under --results instead")
    listing.add_argument(
        "--results",
        type=Path,
        default=DEFAULT_RESULTS,
        help="results folder of --runs (default: %(default)s)",
    )
    listing.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    return list_runs(args.results) if args.runs else list_experiments(args.profile)


def add_reproduce(subparsers: argparse._SubParsersAction) -> None:
    """Register ``reproduce``: ``run`` on all five experiments, then ``report``."""
    reproduce = subparsers.add_parser(
        "reproduce",
        help="train all five experiments over seeds, then write the report",
        description="The main job: train all five experiments over seeds (as `run` does), then write the "
        "report (as `report` does).",
    )
    add_run_options(reproduce, default_profile="quick")
    reproduce.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:
    status = train(args, list(EXPERIMENTS))
    return status or report_and_print(args.results)


COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    add_list,
    add_run,
    add_reproduce,
    add_report,
)


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
    from bench.run.experiments import ConfigError

    args = build_parser(prog).parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as error:  # Ctrl-C outside training, or a second signal during it
        print(f"{error or 'interrupted'}: rerun the same command to resume", file=sys.stderr)
        return 128 + getattr(error, "signum", signal.SIGINT)
