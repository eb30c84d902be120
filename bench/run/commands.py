"""The training side of the command line: ``run``, the experiment listing of ``list``, and the options and
training that ``reproduce`` shares (:mod:`bench.cli` registers the commands)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench import run_format as rf
from bench.run.experiments import EXPERIMENTS, PROFILES, ConfigError, apply_overrides, preset
from bench.run_format import DEFAULT_RESULTS

EXECUTORS = ("local", "ray")
LIST_FIELDS = ("algo", "epochs", "meta_batch_size", "episodes_per_task", "max_episode_length", "hidden_sizes")


def add_run(subparsers: argparse._SubParsersAction) -> None:
    """Register ``run``."""
    run = subparsers.add_parser(
        "run",
        help="train experiments over seeds (finished runs skipped, unfinished ones resumed)",
        description="Train the named experiments over seeds, one folder per run under RESULTS/runs: a "
        "finished run is skipped, an unfinished one resumes from its last checkpoint.",
    )
    run.add_argument("experiments", nargs="+", metavar="EXPERIMENT", help=f"one of {', '.join(EXPERIMENTS)}")
    add_run_options(run, default_profile="quick")
    run.set_defaults(func=cmd_run)


def add_run_options(parser: argparse.ArgumentParser, default_profile: str) -> None:
    parser.add_argument(
        "--profile", default=default_profile, help=f"one of {', '.join(PROFILES)} (default: %(default)s)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    parser.add_argument(
        "--executor", default="local", help=f"one of {', '.join(EXECUTORS)} (default: %(default)s)"
    )
    parser.add_argument(
        "--ray-address", default=None, help="Ray cluster address (default: start a local Ray)"
    )
    parser.add_argument(
        "--sampler-actors", type=int, default=0, metavar="N",
        help="with --executor ray: each Meta-World run samples on N Ray actors anywhere in the cluster (the "
        "same episodes; the run needs N + 1 CPUs) (default: 0, worker processes beside the run)",
    )  # fmt: skip
    parser.add_argument(
        "--results", type=Path, default=DEFAULT_RESULTS, help="results folder (default: %(default)s)"
    )
    parser.add_argument("--jobs", type=int, default=None, help="runs in parallel (default: one per core)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
        help="override a config field for every experiment (repeatable), e.g. --set epochs=5",
    )  # fmt: skip
    parser.add_argument(
        "--log-every", type=int, default=None, metavar="N",
        help="a progress line per run every N epochs (default: a tenth of its epochs; 0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (the progress lines are printed all the same)",
    )


def list_experiments(profile: str | None) -> int:
    """Print the experiments' settings per profile, and every config field."""
    profiles = [profile] if profile else list(PROFILES)
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


def train(args: argparse.Namespace, experiments: list[str]) -> int:
    """Train ``experiments`` as the parsed ``run``/``reproduce`` arguments say; returns the exit status."""
    from bench.run.executors import duration, execute, plan

    if args.executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {args.executor!r}; valid: {', '.join(EXECUTORS)}")
    if any(seed < 0 for seed in args.seeds):
        raise ConfigError(f"seeds must be non-negative, got {args.seeds}")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    if args.log_every is not None and args.log_every < 0:
        raise ConfigError(f"--log-every must be at least 0, got {args.log_every}")
    if args.sampler_actors < 0:
        raise ConfigError(f"--sampler-actors must be at least 0, got {args.sampler_actors}")
    if args.sampler_actors and args.executor != "ray":
        raise ConfigError("--sampler-actors needs --executor ray")
    experiments, seeds = _unique(experiments, "experiments"), _unique(args.seeds, "seeds")
    configs = [(name, apply_overrides(preset(name, args.profile), args.overrides)) for name in experiments]
    _check_device(configs, args.executor)
    _check_results(args.results)
    specs = plan(configs, args.profile, seeds, args.results, args.jobs)
    with contextlib.ExitStack() as locks:
        _claim(specs, locks)
        manifests = {spec.name: _manifest(spec) for spec in specs}  # read once, after the locks are held
        finished = {
            name: int(m.get("epochs_completed", 0))
            for name, m in manifests.items()
            if m.get("status") == rf.STATUS_FINISHED
        }
        todo = [spec for spec in specs if spec.name not in finished]
        resuming = sum(int(manifests[spec.name].get("epochs_completed", 0)) > 0 for spec in todo)
        kinds = ((len(todo) - resuming, "new"), (resuming, "to resume"), (len(finished), "already finished"))
        counts = ", ".join(f"{count} {what}" for count, what in kinds if count)
        actors = f" and {args.sampler_actors} sampler actors" if args.sampler_actors else ""
        print(
            f"{len(specs)} runs ({len(experiments)} experiments × {len(seeds)} seeds), profile "
            f"{args.profile}: {counts}; {args.executor} executor, {specs[0].threads} thread(s){actors} "
            f"per run → {args.results}",
            flush=True,
        )
        for name, epochs in finished.items():
            print(f"{name}: already finished ({epochs} epochs), skipped")
        if not todo:
            return 0
        start = time.perf_counter()
        outcome = execute(
            todo, args.executor, args.ray_address, not args.no_progress, args.log_every, args.sampler_actors
        )
    parts = [f"{len(outcome.summaries)} runs done", f"{len(outcome.failures)} failed"]
    if outcome.interrupted:
        parts.append(f"{len(outcome.interrupted)} interrupted")
    if outcome.not_started:
        parts.append(f"{len(outcome.not_started)} not started")
    print(f"{', '.join(parts)}, in {duration(time.perf_counter() - start)}", flush=True)
    for failure in outcome.failures:
        print(f"  FAILED {failure.name}: {failure.error}", file=sys.stderr)
    if outcome.signal is not None:
        name = signal.Signals(outcome.signal).name
        print(f"stopped by {name}: rerun the same command to resume", file=sys.stderr)
        return 128 + outcome.signal
    return 1 if outcome.failures else 0


def _claim(specs: list, locks: contextlib.ExitStack) -> None:
    """Hold every run's command lock for the command's lifetime (in ``locks``), then check that each run
    folder that exists fits its run and that no trainer holds it: two commands on one run folder, however
    close their starts, are refused here, before anything starts (:class:`ConfigError`, exit status 2)."""
    from bench import files
    from bench.run.trainer import check_run_folder

    command = shlex.join(["maml-bench", *sys.argv[1:]])
    for spec in sorted(specs, key=lambda s: str(s.path)):  # one order: of two commands, one wins
        try:
            spec.path.parent.mkdir(parents=True, exist_ok=True)
            locks.enter_context(files.command_lock(spec.path, command))
            if spec.path.is_dir():
                with files.exclusive(spec.path):  # a trainer outside any command, or one still dying
                    pass
        except files.FolderInUseError as error:
            raise ConfigError(str(error)) from error
        except OSError as error:
            raise ConfigError(f"cannot create {spec.path.parent}: {error.strerror}") from error
    for spec in specs:
        check_run_folder(spec)


def _manifest(spec) -> dict:
    from bench import files

    path = spec.path / rf.MANIFEST
    return files.read_json_object(path) if path.exists() else {}


def _check_results(results: Path) -> None:
    if results.exists() and not results.is_dir():
        raise ConfigError(f"results folder {results} is a file, not a folder")
    try:
        results.mkdir(parents=True, exist_ok=True)
        # a probe of its own: two commands started together on one folder must not delete each other's
        with tempfile.NamedTemporaryFile(dir=results, prefix=".write-test-"):
            pass
    except OSError as error:
        raise ConfigError(f"results folder {results} is not writable: {error.strerror}") from error


def cmd_run(args: argparse.Namespace) -> int:
    return train(args, args.experiments)
