"""Run many training runs: in local processes (the default) or as tasks on a Ray cluster.

Both executors run the same :class:`bench.trainer.Trainer` on the same :class:`RunSpec` s, so they write the
same files. Progress is read from the run folders' manifests, so one progress bar works for both.
A run that fails does not stop the others; its error is kept in its manifest and reported at the end.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from bench import files
from bench import run_format as rf
from bench.experiments import ExperimentConfig
from bench.trainer import RunSpec, RunSummary, Trainer

EXECUTORS = ("local", "ray")
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class RunFailure:
    name: str
    error: str


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def plan(
    experiments: Sequence[tuple[str, ExperimentConfig]],
    profile: str,
    seeds: Sequence[int],
    results: Path,
    jobs: int | None = None,
) -> list[RunSpec]:
    """One spec per (experiment, seed); threads per run so that ``jobs`` parallel runs fill the cores."""
    count = len(experiments) * len(seeds)
    cores = available_cores()
    jobs = max(1, min(jobs or cores, count))
    threads = max(1, cores // jobs)
    return [
        RunSpec(name, profile, seed, config, Path(results), threads)
        for name, config in experiments
        for seed in seeds
    ]


def train_one(spec: RunSpec) -> RunSummary:
    """Entry point of a worker process or Ray task."""
    return Trainer(spec).run()


def _die_with_parent(parent: int) -> None:
    """A worker's initializer: on Linux, have the kernel kill this worker when the process that started it
    dies, however it dies (``kill -9`` of the CLI must not leave a trainer writing into a run folder that a
    rerun is about to resume). The run folder's lock (:func:`bench.files.exclusive`) covers the rest."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _epochs_done(spec: RunSpec) -> int:
    try:
        return int(files.read_json_object(spec.path / rf.MANIFEST).get("epochs_completed", 0))
    except (OSError, ValueError, TypeError):
        return 0


def summary_line(summary: RunSummary) -> str:
    if summary.skipped:
        return f"{summary.name}: already finished ({summary.epochs} epochs), skipped"
    success = (
        "" if summary.final_success != summary.final_success else f", success {summary.final_success:.2f}"
    )
    return (
        f"{summary.name}: {summary.status} after {summary.epochs} epochs in {summary.wall_time:.0f} s, "
        f"post-update return {summary.final_return:.1f}{success}"
    )


class _Bar:
    """An overall progress bar over the epochs of all runs, fed from their manifests."""

    def __init__(self, specs: Sequence[RunSpec], show: bool) -> None:
        self.specs = specs
        total = sum(s.config.epochs for s in specs)
        self.bar = tqdm(total=total, unit="epoch", desc="training", disable=not show, dynamic_ncols=True)

    def update(self) -> None:
        done = sum(min(_epochs_done(s), s.config.epochs) for s in self.specs)
        self.bar.update(done - self.bar.n)

    def write(self, line: str) -> None:
        self.bar.write(line)

    def close(self) -> None:
        self.update()
        self.bar.close()


def run_local(
    specs: Sequence[RunSpec], show_progress: bool = True, echo: Callable[[str], None] | None = None
) -> tuple[list[RunSummary], list[RunFailure]]:
    """Run every spec in its own process (spawned), ``len(specs)`` or fewer at a time as planned."""
    jobs = max(1, available_cores() // max(1, specs[0].threads)) if specs else 1
    bar = _Bar(specs, show_progress)
    echo = echo or bar.write
    summaries, failures = [], []
    context = multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(
        max_workers=min(jobs, len(specs)) or 1,
        mp_context=context,
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    )
    try:
        futures = {pool.submit(train_one, spec): spec for spec in specs}
        pending = set(futures)
        while pending:
            done, pending = cf.wait(pending, timeout=POLL_SECONDS, return_when=cf.FIRST_COMPLETED)
            bar.update()
            for future in done:
                spec = futures[future]
                try:
                    summary = future.result()
                except Exception as error:  # a failed run does not stop the others
                    failures.append(RunFailure(spec.name, f"{type(error).__name__}: {error}"))
                    echo(f"{spec.name}: FAILED — {type(error).__name__}: {error}")
                else:
                    summaries.append(summary)
                    echo(summary_line(summary))
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)
    return summaries, failures


def run_ray(
    specs: Sequence[RunSpec],
    address: str | None = None,
    show_progress: bool = True,
    max_retries: int = 3,
    echo: Callable[[str], None] | None = None,
) -> tuple[list[RunSummary], list[RunFailure]]:
    """Submit each run as a Ray task (``num_cpus`` = its threads), retried on worker failure.

    ``address`` joins an existing cluster (the results folder must then be on storage every node sees);
    without it a local Ray instance is started with this machine's cores and stopped afterwards.
    A retried task resumes from the run's last checkpoint.
    """
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=available_cores(), include_dashboard=False, log_to_driver=False)
    bar = _Bar(specs, show_progress)
    echo = echo or bar.write
    summaries, failures = [], []
    try:
        remote = ray.remote(max_retries=max_retries)(train_one)
        refs = {
            remote.options(num_cpus=spec.threads, name=f"maml-bench {spec.name}").remote(spec): spec
            for spec in specs
        }
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=POLL_SECONDS)
            bar.update()
            for ref in done:
                spec = refs[ref]
                try:
                    summary = ray.get(ref)
                except Exception as error:
                    cause = getattr(error, "cause", None) or error
                    failures.append(RunFailure(spec.name, f"{type(cause).__name__}: {cause}"))
                    echo(f"{spec.name}: FAILED — {type(cause).__name__}: {cause}")
                else:
                    summaries.append(summary)
                    echo(summary_line(summary))
    finally:
        bar.close()
        if started_here:
            ray.shutdown()
    return summaries, failures


def execute(
    specs: Sequence[RunSpec], executor: str = "local", ray_address: str | None = None, show_progress=True
) -> tuple[list[RunSummary], list[RunFailure]]:
    """Run the specs with the named executor."""
    if executor == "local":
        return run_local(specs, show_progress)
    if executor == "ray":
        return run_ray(specs, ray_address, show_progress)
    raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
