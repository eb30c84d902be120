"""Run many training runs: in local processes (the default) or as tasks on a Ray cluster.

Both executors run the same :class:`bench.run.trainer.Trainer` on the same :class:`RunSpec` s, so they
write the same files. What the console shows is read from the run folders (``manifest.json``,
``progress.csv``), so it is the same for both (:class:`Console`). A run that fails does not stop the
others; its error is kept in its manifest and reported at the end.

SIGINT or SIGTERM sent to the command (a terminal's Ctrl-C, a scheduler, ``kill``) is forwarded to the runs:
each stops at once, keeping its last checkpoint (:mod:`bench.run.interrupts`); runs not started yet are not
started. A second signal kills the runs where they are (their last checkpoints are kept all the same).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import csv
import ctypes
import io
import itertools
import math
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from bench import files
from bench import run_format as rf
from bench.run import families, interrupts
from bench.run.experiments import ExperimentConfig
from bench.run.trainer import RunSpec, RunSummary, Trainer, evaluates, meta_test_env_steps

EXECUTORS = ("local", "ray")
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class RunFailure:
    name: str
    error: str


@dataclass
class Outcome:
    """What became of the runs of one command."""

    summaries: list[RunSummary] = field(default_factory=list)
    """Runs that finished."""
    failures: list[RunFailure] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    """One message per run stopped by a signal: where it stopped, what was kept."""
    not_started: list[str] = field(default_factory=list)
    """Names of the runs a signal kept from starting."""
    signal: int | None = None
    """The signal that stopped the command, if one did."""


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


def train_one(spec: RunSpec, sampler_actors: int = 0) -> RunSummary:
    """Entry point of a worker process or Ray task; ``sampler_actors`` > 0 samples a Meta-World run on that
    many Ray actors (:func:`bench.run.families.sampler_actors`)."""
    with families.sampler_actors(sampler_actors):
        return Trainer(spec).run()


def _worker_init(parent: int) -> None:
    """A worker's initializer: SIGINT and SIGTERM stop its run at a safe point (:mod:`bench.run.interrupts`);
    on Linux the kernel kills this worker when the process that started it dies, however it dies
    (``kill -9`` of the CLI must not leave a trainer writing into a run folder that a rerun is about to
    resume). The run folder's lock (:func:`bench.files.exclusive`) covers the rest."""
    interrupts.install()
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


# --- what the console shows ---------------------------------------------------------------------------
def epoch_work(config: ExperimentConfig, epoch: int) -> int:
    """The work of epoch ``epoch`` (0-based) in environment steps: the training rounds
    (:meth:`ExperimentConfig.env_steps_per_epoch`) plus, in an epoch that meta-tests, the meta-test's steps.
    An epoch of one experiment may cost ten times one of another: their steps tell them apart, their count
    does not."""
    return config.env_steps_per_epoch() + (meta_test_env_steps(config) if evaluates(config, epoch) else 0)


def cumulative_work(config: ExperimentConfig) -> list[int]:
    """``[w_0, …, w_E]``: the work of the first ``e`` epochs, ``e`` = 0 … ``config.epochs``."""
    return [0, *itertools.accumulate(epoch_work(config, e) for e in range(config.epochs))]


def duration(seconds: float) -> str:
    """``4.2 s``, ``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _steps(count: float) -> str:
    if count >= 1e6:
        return f"{count / 1e6:.3g}M"
    return f"{count / 1e3:.3g}k" if count >= 1e3 else f"{count:.0f}"


def summary_line(summary: RunSummary) -> str:
    """The line that ends a run on the console."""
    if summary.skipped:
        return f"{summary.name}: already finished ({summary.epochs} epochs), skipped"
    resumed = f" (resumed at epoch {summary.resumed_from})" if summary.resumed_from else ""
    per_epoch = "" if math.isnan(summary.epoch_seconds) else f", {summary.epoch_seconds:.2g} s/epoch"
    success = "" if math.isnan(summary.final_success) else f", success {summary.final_success:.2f}"
    return (
        f"{summary.name}: {summary.status}, {summary.epochs} epochs{resumed} in {duration(summary.wall_time)}"
        f"{per_epoch}; post-update return {summary.final_return:.1f}{success}"
    )


def _read_rows(path: Path) -> list[dict[str, str]]:
    """The complete rows of a progress.csv being written (a torn last line is left out)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return []
    lines = list(csv.reader(io.StringIO(text, newline="")))
    if not lines:
        return []
    header = lines[0]
    return [dict(zip(header, row, strict=True)) for row in lines[1:] if len(row) == len(header)]


def _number(row: dict[str, str], key: str) -> float:
    try:
        return float(row.get(key) or "nan")
    except ValueError:
        return math.nan


@dataclass
class _Watch:
    """The console's view of one run."""

    spec: RunSpec
    work: list[int]
    starts: int
    """Starts its manifest recorded before this command: one more is this command's."""
    done: int
    """Epochs completed, as last seen."""
    started: bool = False
    ended: bool = False
    reported: int = 0
    """Epochs reported in a progress line so far."""
    csv_stamp: tuple[int, int, int] | None = None
    rows: list[dict[str, str]] = field(default_factory=list)


def _manifest(spec: RunSpec) -> dict:
    try:
        return files.read_json_object(spec.path / rf.MANIFEST)
    except (OSError, ValueError):
        return {}


class Console:
    """What the command prints while its runs train, read from the run folders.

    Per run: ``starting``/``resuming <run> from epoch N`` when its trainer starts it, a compact line every
    ``log_every`` epochs (epoch, environment steps, post-update return, success rate where there is one,
    seconds per epoch), and :func:`summary_line` at its end; several runs in flight each print their own
    lines. Overall: on a terminal one bar at the bottom, elsewhere (a log file, ``--no-progress``) the same
    figures at the end of each progress line. Progress is weighted by work (:func:`epoch_work`), so its ETA
    holds when epochs of different runs cost different times.
    """

    def __init__(self, specs: Sequence[RunSpec], show_bar: bool = True, log_every: int | None = None) -> None:
        self.watches = {}
        for spec in specs:
            manifest = _manifest(spec)
            done = min(int(manifest.get("epochs_completed", 0)), spec.config.epochs)
            starts = len(manifest.get("starts", []))
            self.watches[spec.name] = _Watch(spec, cumulative_work(spec.config), starts, done, reported=done)
        self.log_every = log_every
        self.total = sum(w.work[-1] for w in self.watches.values())
        self.initial = self._work_done()
        self.clock = time.perf_counter()
        self.bar = None
        if show_bar and sys.stderr.isatty():
            self.bar = tqdm(
                total=self.total,
                initial=self.initial,
                bar_format="training |{bar}| {desc}",
                dynamic_ncols=True,
                leave=False,
            )
            self._refresh_bar()

    def _work_done(self) -> int:
        return sum(w.work[w.done] for w in self.watches.values())

    def overall(self) -> str:
        """Epochs done of all, and the time left at the rate of this command's work so far."""
        done = self._work_done()
        epochs = sum(w.done for w in self.watches.values())
        total = sum(w.spec.config.epochs for w in self.watches.values())
        text = f"{epochs}/{total} epochs, {100 * done / max(self.total, 1):.0f} % of the work"
        elapsed = time.perf_counter() - self.clock
        if done > self.initial and done < self.total:
            text += f", about {duration((self.total - done) * elapsed / (done - self.initial))} left"
        return text

    def _refresh_bar(self) -> None:
        if self.bar is not None:
            self.bar.n = self._work_done()
            self.bar.set_description_str(self.overall(), refresh=False)
            self.bar.refresh()

    def echo(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def poll(self) -> None:
        """Read the run folders; print what changed."""
        for watch in self.watches.values():
            if not watch.ended:
                self._poll(watch)
        self._refresh_bar()

    def _poll(self, watch: _Watch) -> None:
        spec, total = watch.spec, watch.spec.config.epochs
        if not watch.started:
            starts = _manifest(spec).get("starts", [])
            if len(starts) <= watch.starts:
                return
            watch.started = True
            first = int(starts[-1].get("from_epoch", 0))
            watch.done = watch.reported = first
            if first:
                change = rf.cpu_change(starts)
                self.echo(f"resuming {spec.name} from epoch {first} (of {total}){change}")
            else:
                self.echo(f"starting {spec.name} ({total} epochs)")
        path = spec.path / rf.PROGRESS
        try:
            stat = path.stat()
        except OSError:
            return
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if stamp == watch.csv_stamp:
            return
        watch.csv_stamp, watch.rows = stamp, _read_rows(path)
        watch.done = min(len(watch.rows), total)
        every = max(1, round(total / 10)) if self.log_every is None else self.log_every
        due = [e for e in range(watch.reported + 1, watch.done + 1) if every and e % every == 0 and e < total]
        if due:
            self.echo(self._progress_line(watch, due[-1]))
            watch.reported = due[-1]

    def _progress_line(self, watch: _Watch, epochs: int) -> str:
        row, total = watch.rows[epochs - 1], watch.spec.config.epochs
        times = [_number(r, rf.TIME_PREFIX + "Epoch") for r in watch.rows[watch.reported : epochs]]
        times = [t for t in times if not math.isnan(t)]
        success = _number(row, rf.SUCCESS)
        line = (
            f"  {watch.spec.name}: epoch {epochs:>{len(str(total))}}/{total}, "
            f"{_steps(_number(row, rf.TOTAL_ENV_STEPS))} steps, return {_number(row, rf.RETURN):.1f}"
        )
        if not math.isnan(success):
            line += f", success {success:.2f}"
        if times:
            line += f", {sum(times) / len(times):.2g} s/epoch"
        return line if self.bar is not None else f"{line}  [{self.overall()}]"

    def ended(self, name: str, line: str) -> None:
        """A run ended (finished, failed, interrupted, not started): its last line."""
        watch = self.watches[name]
        self._poll(watch)
        watch.ended = True
        self.echo(line)
        self._refresh_bar()

    def started(self, name: str) -> bool:
        """Whether this command started the run (as far as its manifest says)."""
        watch = self.watches[name]
        if not watch.ended:
            self._poll(watch)
        return watch.started

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- signals --------------------------------------------------------------------------------------------
class ForcedStop(KeyboardInterrupt):
    """A second stop signal: the runs were killed where they were (their last checkpoints stay)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped at once by a second {signal.Signals(signum).name}")
        self.signum = signum


class _Stop:
    """The command's SIGINT and SIGTERM while runs train: the first is passed at once to ``forward`` and
    remembered (the executor's loop then cancels the runs not started), a second raises
    :class:`ForcedStop` (the executor then kills the runs)."""

    def __init__(self, forward: Callable[[int], None]) -> None:
        self.signum: int | None = None
        self.announced = False
        self._forward = forward
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _Stop:
        for signum in interrupts.STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise ForcedStop(signum)
        self.signum = signum
        self._forward(signum)

    def announce(self, console: Console) -> None:
        self.announced = True
        console.echo(
            f"{signal.Signals(self.signum).name} received: stopping every run at once, keeping its last "
            "checkpoint (a second signal kills them where they are)"
        )


def _interrupted(spec: RunSpec, console: Console) -> str:
    """What a run stopped by a signal kept, from its manifest (where its worker's message did not come)."""
    if not console.started(spec.name):
        return ""
    error = str(_manifest(spec).get("error", ""))
    return f"{spec.name}: {error or 'interrupted; rerun the same command to resume'}"


def _stop_children(signum: int) -> None:
    """Pass ``signum`` on to this process's worker processes."""
    for child in multiprocessing.active_children():
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(child.pid, signum)


def run_local(specs: Sequence[RunSpec], show_progress: bool = True, log_every: int | None = None) -> Outcome:
    """Run every spec in its own process (spawned), ``len(specs)`` or fewer at a time as planned."""
    jobs = max(1, available_cores() // max(1, specs[0].threads)) if specs else 1
    outcome = Outcome()
    console = Console(specs, show_progress, log_every)
    context = multiprocessing.get_context("spawn")
    with _Stop(_stop_children) as stop:
        pool = cf.ProcessPoolExecutor(
            max_workers=min(jobs, len(specs)) or 1,
            mp_context=context,
            initializer=_worker_init,
            initargs=(os.getpid(),),
        )
        try:
            futures = {pool.submit(train_one, spec): spec for spec in specs}
            pending = set(futures)
            while pending:
                done, pending = cf.wait(pending, timeout=POLL_SECONDS, return_when=cf.FIRST_COMPLETED)
                if stop.signum is not None and not stop.announced:
                    outcome.signal = stop.signum
                    stop.announce(console)
                    _stop_children(stop.signum)  # again, for a worker started since (a worker takes one)
                    for future in [f for f in pending if f.cancel()]:
                        pending.discard(future)
                        _file_interrupted(futures[future], "", outcome, console)
                console.poll()
                for future in done:
                    _collect(future, futures[future], outcome, console)
        except BaseException:
            for child in multiprocessing.active_children():
                child.kill()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            console.close()
        pool.shutdown(wait=True)
    return outcome


def _collect(future, spec: RunSpec, outcome: Outcome, console: Console) -> None:
    """File a run's result in ``outcome`` and print its last line."""
    try:
        summary = future.result()
    except interrupts.RunInterrupted as stopped:
        message = str(stopped) if console.started(spec.name) else ""
        _file_interrupted(spec, message, outcome, console)
    except cf.process.BrokenProcessPool as error:  # a worker killed (a second signal, the OOM killer)
        if outcome.signal is not None:
            _file_interrupted(spec, _interrupted(spec, console), outcome, console)
        else:
            _file_failure(spec, f"{type(error).__name__}: {error}", outcome, console)
    except Exception as error:  # a failed run does not stop the others
        _file_failure(spec, f"{type(error).__name__}: {error}", outcome, console)
    else:
        outcome.summaries.append(summary)
        console.ended(spec.name, summary_line(summary))


def _file_interrupted(spec: RunSpec, message: str, outcome: Outcome, console: Console) -> None:
    if message:
        outcome.interrupted.append(message)
        console.ended(spec.name, message)
    else:
        outcome.not_started.append(spec.name)
        console.ended(spec.name, f"{spec.name}: not started")


def _file_failure(spec: RunSpec, error: str, outcome: Outcome, console: Console) -> None:
    outcome.failures.append(RunFailure(spec.name, error))
    console.ended(spec.name, f"{spec.name}: FAILED — {error}")


def gpus_of(spec: RunSpec) -> int:
    """The GPUs a run's Ray task asks for: one if its meta-update runs on CUDA (Ray hides the GPUs from a
    task that asks for none), else none."""
    return 1 if spec.config.device.startswith("cuda") else 0


def run_ray(
    specs: Sequence[RunSpec],
    address: str | None = None,
    show_progress: bool = True,
    max_retries: int = 3,
    log_every: int | None = None,
    sampler_actors: int = 0,
) -> Outcome:
    """Submit each run as a Ray task (``num_cpus`` = its threads, one GPU if its ``device`` is CUDA:
    :func:`gpus_of`), retried on worker failure.

    ``sampler_actors`` > 0: each Meta-World run samples on that many Ray actors of one CPU each, placed
    anywhere in the cluster (:class:`maml.envs.ray_pool.RayMetaWorldPool`), and its own task asks for one
    CPU (the policy and the updates), so a run needs ``sampler_actors + 1`` CPUs of the cluster.

    ``address`` joins an existing cluster (the results folder must then be on storage every node sees);
    without it a local Ray instance is started with this machine's cores (at least ``sampler_actors + 1``)
    and stopped afterwards.
    A retried task resumes from the run's last checkpoint. A stop signal cancels the tasks (Ray raises
    ``KeyboardInterrupt`` in a running one: its trainer records what it kept).
    """
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            # a run with sampler actors needs their CPUs and its own: Ray's CPUs are logical, so one
            # machine may hold them all (at the speed of its cores)
            cpus = max(available_cores(), sampler_actors + 1)
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    outcome = Outcome()
    console = Console(specs, show_progress, log_every)
    try:
        with _Stop(lambda signum: None) as stop:
            remote = ray.remote(max_retries=max_retries)(train_one)
            refs = {
                remote.options(
                    num_cpus=1 if sampler_actors else spec.threads,
                    num_gpus=gpus_of(spec),
                    name=f"maml-bench {spec.name}",
                ).remote(spec, sampler_actors): spec
                for spec in specs
            }
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=POLL_SECONDS)
                if stop.signum is not None and not stop.announced:
                    outcome.signal = stop.signum
                    stop.announce(console)
                    for ref in pending:
                        ray.cancel(ref)
                console.poll()
                for ref in done:
                    spec = refs[ref]
                    try:
                        summary = ray.get(ref)
                    except Exception as error:
                        if outcome.signal is not None:
                            _file_interrupted(spec, _interrupted(spec, console), outcome, console)
                            continue
                        cause = getattr(error, "cause", None) or error
                        _file_failure(spec, f"{type(cause).__name__}: {cause}", outcome, console)
                    else:
                        outcome.summaries.append(summary)
                        console.ended(spec.name, summary_line(summary))
    finally:
        console.close()
        if started_here:
            ray.shutdown()
    return outcome


def execute(
    specs: Sequence[RunSpec],
    executor: str = "local",
    ray_address: str | None = None,
    show_progress: bool = True,
    log_every: int | None = None,
    sampler_actors: int = 0,
) -> Outcome:
    """Run the specs with the named executor (``sampler_actors``: Ray only, see :func:`run_ray`)."""
    if sampler_actors and executor != "ray":
        raise ValueError("sampler actors need the Ray executor")
    if executor == "local":
        return run_local(specs, show_progress, log_every)
    if executor == "ray":
        return run_ray(specs, ray_address, show_progress, log_every=log_every, sampler_actors=sampler_actors)
    raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
