"""The training commands of ``python -m bench``: ``list``, ``run`` and ``reproduce``."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from bench.experiments import EXPERIMENTS, PROFILES, ConfigError, apply_overrides, preset

DEFAULT_RESULTS = Path("results")
EXECUTORS = ("local", "ray")
LIST_FIELDS = ("algo", "epochs", "meta_batch_size", "episodes_per_task", "max_episode_length", "hidden_sizes")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``list``, ``run`` and ``reproduce`` on the CLI's subparsers."""
    listing = subparsers.add_parser("list", help="experiments, profiles and their settings")
    listing.add_argument("--profile", choices=PROFILES, help="only this profile")
    listing.set_defaults(func=cmd_list)

    run = subparsers.add_parser("run", help="train experiments over seeds (resumes unfinished runs)")
    run.add_argument("experiments", nargs="+", metavar="EXPERIMENT", help=f"one of {', '.join(EXPERIMENTS)}")
    _add_run_options(run, default_profile="quick")
    run.set_defaults(func=cmd_run)

    reproduce = subparsers.add_parser("reproduce", help="train all five experiments, then write the report")
    _add_run_options(reproduce, default_profile="quick")
    reproduce.set_defaults(func=cmd_reproduce)


def _add_run_options(parser: argparse.ArgumentParser, default_profile: str) -> None:
    parser.add_argument("--profile", default=default_profile, help=f"one of {', '.join(PROFILES)}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--executor", default="local", help=f"one of {', '.join(EXECUTORS)} (default local)")
    parser.add_argument("--ray-address", default=None, help="Ray cluster address (default: a local Ray)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder")
    parser.add_argument("--jobs", type=int, default=None, help="runs in parallel (default: one per core)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
        help="override a config field for every experiment (repeatable), e.g. --set epochs=5",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_list(args: argparse.Namespace) -> int:
    profiles = [args.profile] if args.profile else list(PROFILES)
    header = f"{'experiment':32} {'profile':8} " + " ".join(f"{f:>18}" for f in LIST_FIELDS)
    print(header)
    for experiment in EXPERIMENTS:
        for profile in profiles:
            config = preset(experiment, profile)
            values = " ".join(f"{getattr(config, f)!s:>18}" for f in LIST_FIELDS)
            print(f"{experiment:32} {profile:8} {values}")
    print("\nEvery field (override with --set FIELD=VALUE):")
    for field in dataclasses.fields(preset(EXPERIMENTS[0], "full")):
        print(f"  {field.name}")
    return 0


def _unique(values: list, what: str) -> list:
    """``values`` without repeats (first occurrence kept), saying so: one run folder, one trainer."""
    unique = list(dict.fromkeys(values))
    if len(unique) < len(values):
        print(f"note: repeated {what} ignored ({len(values) - len(unique)})", file=sys.stderr)
    return unique


def _check_device(configs: list, executor: str) -> None:
    """A CUDA device named for local runs must exist here (a Ray cluster's nodes are not checked)."""
    import torch

    for name, config in configs:
        device = torch.device(config.device)
        if executor == "local" and device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                f"{name}: device {config.device!r} asked for, but torch sees no CUDA device here"
            )


def _train(args: argparse.Namespace, experiments: list[str]) -> int:
    from bench import files
    from bench.executors import execute, plan
    from bench.trainer import check_run_folder

    if args.executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {args.executor!r}; valid: {', '.join(EXECUTORS)}")
    if any(seed < 0 for seed in args.seeds):
        raise ConfigError(f"seeds must be non-negative, got {args.seeds}")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    experiments, seeds = _unique(experiments, "experiments"), _unique(args.seeds, "seeds")
    configs = [(name, apply_overrides(preset(name, args.profile), args.overrides)) for name in experiments]
    _check_device(configs, args.executor)
    _check_results(args.results)
    specs = plan(configs, args.profile, seeds, args.results, args.jobs)
    for spec in specs:  # every run folder that exists must fit its run and be free: nothing starts otherwise
        check_run_folder(spec)
        if spec.path.is_dir():
            try:
                with files.exclusive(spec.path):
                    pass
            except files.FolderInUseError as error:
                raise ConfigError(str(error)) from error
    print(
        f"{len(specs)} runs ({len(experiments)} experiments × {len(seeds)} seeds), profile "
        f"{args.profile}, {args.executor} executor, {specs[0].threads} thread(s) per run → {args.results}",
        flush=True,
    )
    start = time.perf_counter()
    summaries, failures = execute(specs, args.executor, args.ray_address, not args.no_progress)
    print(f"{len(summaries)} runs done, {len(failures)} failed, in {time.perf_counter() - start:.0f} s")
    for failure in failures:
        print(f"  FAILED {failure.name}: {failure.error}", file=sys.stderr)
    return 1 if failures else 0


def _check_results(results: Path) -> None:
    if results.exists() and not results.is_dir():
        raise ConfigError(f"results folder {results} is a file, not a folder")
    try:
        results.mkdir(parents=True, exist_ok=True)
        probe = results / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"results folder {results} is not writable: {error.strerror}") from error


def cmd_run(args: argparse.Namespace) -> int:
    return _train(args, args.experiments)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from bench.cli import report_and_print

    status = _train(args, list(EXPERIMENTS))
    return status or report_and_print(args.results)
