"""One training run: seeded, checkpointed every epoch, resumable at any moment, one folder of plain files.

Per epoch (Finn et al. 2017, Algorithm 3, as garage runs it): sample ``meta_batch_size`` tasks; sample
episodes with θ, fit the baseline, adapt (``num_grad_updates`` times, resampling with each adapted policy);
sample the post-update episodes with θ'; take the outer step; every ``evaluate_every_n_epochs`` epochs run
the meta-test on held-out tasks. All randomness is derived from (seed, epoch, round, task, episode) through
``numpy.random.SeedSequence``, so a checkpoint needs no RNG state: resuming at epoch n replays exactly what
an uninterrupted run does from epoch n on.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dowel
import numpy as np
import torch

from bench import files
from bench import run_format as rf
from bench.run import interrupts, provenance
from bench.run.experiments import ConfigError, ExperimentConfig, from_dict, to_dict, with_defaults
from bench.run.families import TaskFamily, class_mean, make_family
from maml import meta, policy, value_function
from maml.adam_outer import make_optimizer
from maml.advantages import Baseline, process_episodes
from maml.baseline import fit_and_predict
from maml.envs.errors import NonFiniteActionError
from maml.meta import MetaBatch
from maml.policy import Params
from maml.ppo import ppo_step
from maml.sampler import EpisodeStats, sample_episodes
from maml.trpo import trpo_step
from maml.vpg import vpg_step
from maml.wave_sampler import WaveEnv, sample_in_waves

INIT_STREAM, TASK_STREAM, TEST_TASK_STREAM, VALUE_FUNCTION_STREAM = 0, 1, 2, 3
TEST_ROUND = 1000
"""Meta-test sampling rounds start here, apart from the training rounds 0 … num_grad_updates."""
EVAL_ROUND = 2000


class NonFiniteError(RuntimeError):
    """Training produced NaN or infinite values; the last good checkpoint is kept."""


@dataclass(frozen=True)
class RunSpec:
    """One run of the harness: an experiment config under a profile with a seed, in a results folder."""

    experiment: str
    profile: str
    seed: int
    config: ExperimentConfig
    results: Path
    threads: int = 1
    """Torch and physics threads this run may use."""

    @property
    def path(self) -> Path:
        return rf.run_dir(self.results, self.profile, self.experiment, self.seed)

    @property
    def name(self) -> str:
        return f"{self.profile}/{self.experiment}/seed-{self.seed}"


@dataclass
class RunSummary:
    name: str
    status: str
    epochs: int
    """Epochs completed (all of them, not only this start's)."""
    final_return: float
    final_success: float
    wall_time: float
    """Seconds of this start, from :meth:`Trainer.run` to its end (setting up included)."""
    skipped: bool = False
    resumed_from: int = 0
    """Epochs completed before this start (its checkpoint's)."""
    epoch_seconds: float = math.nan
    """Mean seconds per epoch trained in this start."""


@dataclass
class _State:
    theta: Params
    optimizer: torch.optim.Optimizer | None
    epoch: int = 0
    total_env_steps: int = 0
    phase_times: dict[str, float] = field(default_factory=lambda: dict.fromkeys(rf.TIME_PHASES, 0.0))


def _generator(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=keys))


def _init_theta(config: ExperimentConfig, family: TaskFamily, seed: int) -> Params:
    torch_seed = int(_generator(seed, INIT_STREAM).integers(2**62))
    theta = policy.init_params(
        family.observation_dim,
        family.action_dim,
        config.hidden_sizes,
        torch.Generator().manual_seed(torch_seed),
        device=config.device,
    )
    return meta.requires_grad(theta)


def make_baseline(config: ExperimentConfig, family: TaskFamily, seed: int) -> Baseline:
    """The values advantages subtract: the linear baseline fitted per task and round, or (ablation of
    garage's bug 1) garage's value function as initialised from the run's seed, never fitted."""
    if config.baseline == "linear":
        return fit_and_predict
    torch_seed = int(_generator(seed, VALUE_FUNCTION_STREAM).integers(2**62))
    params = value_function.init(family.observation_dim, torch.Generator().manual_seed(torch_seed))
    return lambda observations, returns, mask: value_function.values(params, observations, mask)


def evaluates(config: ExperimentConfig, epoch: int) -> bool:
    """Whether epoch ``epoch`` (0-based) runs the meta-test: every ``evaluate_every_n_epochs``-th, and the
    last."""
    every = config.evaluate_every_n_epochs
    return every > 0 and ((epoch + 1) % every == 0 or epoch + 1 == config.epochs)


def meta_test_env_steps(config: ExperimentConfig) -> int:
    """Environment steps of one meta-test (:meth:`Trainer._meta_test`): the adaptation episodes of every
    adaptation step, then the test episodes, on ``test_tasks`` held-out tasks (Meta-World may hold fewer)."""
    adapt_steps = max(config.test_adapt_steps, config.num_grad_updates)
    episodes = config.test_adaptation_episodes * (adapt_steps + 1) + config.test_episodes
    return config.test_tasks * episodes * config.max_episode_length


def _config_record(spec: RunSpec) -> dict[str, object]:
    return {"experiment": spec.experiment, "profile": spec.profile, "seed": spec.seed, **to_dict(spec.config)}


class RunFolderConflict(ConfigError):
    """A run folder that this run cannot continue: another config, a missing or corrupt file."""


def check_run_folder(spec: RunSpec) -> dict[str, object] | None:
    """Check, without writing, that ``spec`` can start or resume in its folder: config.json holds the same
    config (or is absent from a folder with nothing else in it), manifest.json is a JSON object, and an
    unfinished run that has completed epochs still has its checkpoint. Returns the stored config (None for a
    new run). Raises :class:`RunFolderConflict` naming the file; the folder is left as it is."""
    path = spec.path
    config_path, manifest_path, checkpoint_path = path / rf.CONFIG, path / rf.MANIFEST, path / rf.CHECKPOINT
    if not config_path.exists():
        others = [p.name for p in (manifest_path, checkpoint_path, path / rf.PROGRESS) if p.exists()]
        if others:
            raise RunFolderConflict(
                f"{config_path} is missing but the folder holds {', '.join(others)}: the config those were "
                "trained with is unknown; remove the folder to train this run again"
            )
        return None
    try:
        stored = with_defaults(files.read_json_object(config_path))
        manifest = files.read_json_object(manifest_path) if manifest_path.exists() else {}
    except ValueError as error:
        raise RunFolderConflict(f"{error}; remove that run folder to train it again") from error
    record = _config_record(spec)
    if stored != record:
        changed = sorted(k for k in set(stored) | set(record) if stored.get(k) != record.get(k))
        raise RunFolderConflict(
            f"{config_path} holds a different config (fields {', '.join(changed)}); use another --results "
            "folder or remove that run to start it again"
        )
    done = manifest.get("epochs_completed", 0)
    if manifest.get("status") != rf.STATUS_FINISHED and done and not checkpoint_path.exists():
        raise RunFolderConflict(
            f"{checkpoint_path} is missing although {manifest_path.name} counts {done} completed epochs: "
            "resuming would silently start over; remove the run folder to train it again"
        )
    return stored


def _check_config(spec: RunSpec) -> None:
    """Write config.json, or check that the run folder can continue (:func:`check_run_folder`)."""
    stored = check_run_folder(spec)
    if stored is None:
        files.write_json(spec.path / rf.CONFIG, _config_record(spec))
    else:
        from_dict({k: v for k, v in stored.items() if k not in ("experiment", "profile", "seed")})


class _TensorBoard(dowel.TensorBoardOutput):
    """dowel's TensorBoard output, leaving out NaN cells (a meta-test not run that epoch)."""

    def _record_kv(self, key: str, value: object, step: object) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            return
        super()._record_kv(key, value, step)


class _OrderedCsv(dowel.CsvOutput):
    """dowel's CSV output with the columns in the order the row records them: dowel keeps them in a set, so
    the column order of progress.csv changed from process to process (string hashing is salted per process).
    A keys view keeps the row's order and still compares as a set in dowel's "new keys?" test."""

    def record(self, data, prefix=""):
        if isinstance(data, dowel.TabularInput) and self._writer is None:
            self._fieldnames = dict.fromkeys(data.as_primitive_dict).keys()
            self._writer = csv.DictWriter(
                self._log_file, fieldnames=self._fieldnames, restval="", extrasaction="raise"
            )
            self._writer.writeheader()
        super().record(data, prefix)


class _Progress:
    """progress.csv and TensorBoard through dowel. On resume the kept rows (the checkpoint's epochs) are
    replayed into a fresh CSV and a fresh TensorBoard folder, each swapped in for the old one: epochs logged
    after the last checkpoint are trained again, and must not appear twice in either."""

    def __init__(self, run: Path, keep_epochs: int) -> None:
        csv_path, tb_path = run / rf.PROGRESS, run / rf.TENSORBOARD
        kept = _read_rows(csv_path, keep_epochs) if keep_epochs else []
        tmp, tb_tmp = run / f".{rf.PROGRESS}.tmp", run / f".{rf.TENSORBOARD}.tmp"
        shutil.rmtree(tb_tmp, ignore_errors=True)  # a replay a kill interrupted
        self._logger = dowel.Logger()
        self._csv = _OrderedCsv(str(tmp))
        self._logger.add_output(self._csv)
        self._logger.add_output(_TensorBoard(str(tb_tmp), x_axis=rf.EPOCH))
        self._tabular = dowel.TabularInput()
        for row in kept:
            self.write(row)  # each row dumped (flushed) to both outputs
        os.replace(tmp, csv_path)  # the open handles follow the files
        shutil.rmtree(tb_path, ignore_errors=True)  # derived from progress.csv: a kill here loses nothing
        os.replace(tb_tmp, tb_path)

    def write(self, row: dict[str, float]) -> None:
        for key, value in row.items():
            self._tabular.record(key, value)
        self._logger.log(self._tabular)
        self._logger.dump_all(int(row[rf.EPOCH]))
        self._tabular.clear()

    def close(self) -> None:
        self._logger.remove_all()


def _read_rows(path: Path, epochs: int) -> list[dict[str, float]]:
    """The first ``epochs`` complete rows of a progress.csv (a torn last line is dropped)."""
    if not path.exists():
        raise ValueError(f"{path} is missing although a checkpoint exists")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [r for r in reader if None not in r.values() and None not in r]
    by_epoch = {int(float(r[rf.EPOCH])): {k: float(v) for k, v in r.items()} for r in rows}
    missing = [e for e in range(epochs) if e not in by_epoch]
    if missing:
        raise ValueError(f"{path} lacks the rows of epochs {missing} that the checkpoint says are done")
    return [by_epoch[e] for e in range(epochs)]


def _success(stats: EpisodeStats) -> np.ndarray:
    return stats.env_infos["success"]


def _episode_rows(
    prefix: str, stats: EpisodeStats, family: TaskFamily, classes: list[str], row: dict[str, float]
) -> None:
    """Average return and success rate (overall under ``prefix``, per class by name)."""
    is_test = prefix.startswith("MetaTest")
    row[f"{prefix}Average/AverageReturn"] = float(stats.returns.mean())
    if family.has_success:
        row[f"{prefix}Average/SuccessRate"] = float(_success(stats).mean())
    if prefix in ("", "MetaTest/"):
        for name in family.class_names:
            row[rf.class_key(name, "AverageReturn", is_test)] = class_mean(stats.returns, classes, name)
            if family.has_success:
                row[rf.class_key(name, "SuccessRate", is_test)] = class_mean(_success(stats), classes, name)


CHECKPOINT_KEYS = ("theta", "optimizer", "epoch", "total_env_steps", "phase_times")


def _restore(state: _State, path: Path, device: str) -> None:
    """Load a checkpoint into ``state``; any problem raises an exception that says what it is."""
    if path.stat().st_size == 0:
        raise ValueError("empty file")
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch's own message advises unsafe loading: say what it means here
        raise ValueError(f"torch cannot read it: {type(error).__name__}") from error
    if not isinstance(saved, dict) or any(key not in saved for key in CHECKPOINT_KEYS):
        raise ValueError(f"expected the keys {list(CHECKPOINT_KEYS)}")
    theta = state.theta
    if set(saved["theta"]) != set(theta):
        raise ValueError(f"parameters {sorted(saved['theta'])}, the run's policy has {sorted(theta)}")
    for name, value in saved["theta"].items():
        if tuple(value.shape) != tuple(theta[name].shape):
            raise ValueError(
                f"parameter {name} is {tuple(value.shape)}, the policy's {tuple(theta[name].shape)}"
            )
    with torch.no_grad():
        for name, value in saved["theta"].items():
            theta[name].copy_(value)
    if state.optimizer is not None:
        state.optimizer.load_state_dict(saved["optimizer"])
    state.epoch = int(saved["epoch"])
    state.total_env_steps = int(saved["total_env_steps"])
    state.phase_times = {k: float(v) for k, v in saved["phase_times"].items()}


class Trainer:
    """Trains one run; :meth:`run` is the whole lifecycle (fresh, resumed or already finished)."""

    def __init__(self, spec: RunSpec, on_epoch: Callable[[int, int], None] | None = None) -> None:
        self.spec = spec
        self.config = spec.config
        self.on_epoch = on_epoch
        self.baseline: Baseline = fit_and_predict
        """What advantages subtract; :meth:`run` sets the config's (:func:`make_baseline`)."""
        self.manifest: dict[str, object] = {}
        self.resumed_from = 0
        self.epochs_done = 0
        self._started = time.perf_counter()

    # --- lifecycle -----------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        """Train (or resume, or skip a finished run), holding the run folder's lock throughout.

        Stopped by a signal (:mod:`bench.run.interrupts`), it raises
        :class:`bench.run.interrupts.RunInterrupted` saying what was kept; one received before the run began
        leaves the folder untouched."""
        interrupts.check(f"{self.spec.name}: not started")
        self._started = time.perf_counter()
        path = self.spec.path
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create the run folder {path}: {error.strerror}") from error
        if not os.access(path, os.W_OK):
            raise ConfigError(f"the run folder {path} is not writable")
        with files.exclusive(path):
            return self._run()

    def _run(self) -> RunSummary:
        spec, path = self.spec, self.spec.path
        _check_config(spec)
        manifest_path = path / rf.MANIFEST
        self.manifest = files.read_json_object(manifest_path) if manifest_path.exists() else {}
        if self.manifest.get("status") == rf.STATUS_FINISHED:
            return self._summary(skipped=True)

        torch.set_num_threads(spec.threads)
        family = make_family(self.config)
        self.baseline = make_baseline(self.config, family, spec.seed)
        try:
            state = self._load_or_init(family)
            self._start_manifest(state, family.sampler(spec.threads))
            progress = _Progress(path, state.epoch)
            try:
                self._train(family, state, progress)
            finally:
                progress.close()
        except BaseException as error:
            # after a stop signal, an error is the stop's doing (a worker of the Meta-World pool killed by
            # the SIGTERM a scheduler sends to every process of the job)
            interrupted = isinstance(error, KeyboardInterrupt) or interrupts.received() is not None
            note = self._fail(error, interrupted)
            if interrupted:
                raise interrupts.RunInterrupted(f"{spec.name}: {note}") from error
            raise
        finally:
            family.close()
        return self._summary()

    def _load_or_init(self, family: TaskFamily) -> _State:
        checkpoint_path = self.spec.path / rf.CHECKPOINT
        theta = _init_theta(self.config, family, self.spec.seed)
        optimizer = None if self.config.algo == "trpo" else make_optimizer(theta, self.config.adam())
        state = _State(theta=theta, optimizer=optimizer)
        if checkpoint_path.exists():
            try:
                _restore(state, checkpoint_path, self.config.device)
            except Exception as error:
                raise RunFolderConflict(
                    f"{checkpoint_path} is not a checkpoint of this run ({error}); remove the run folder to "
                    "train it again"
                ) from error
        return state

    def _save(self, state: _State) -> None:
        files.save_torch(
            self.spec.path / rf.CHECKPOINT,
            {
                "theta": {n: p.detach().cpu() for n, p in state.theta.items()},
                "optimizer": None if state.optimizer is None else state.optimizer.state_dict(),
                "epoch": state.epoch,
                "total_env_steps": state.total_env_steps,
                "phase_times": state.phase_times,
            },
        )
        self.manifest.update(
            epochs_completed=state.epoch,
            total_env_steps=state.total_env_steps,
            phase_seconds={k: round(v, 3) for k, v in state.phase_times.items()},
            seconds_per_epoch=round(state.phase_times["Epoch"] / max(state.epoch, 1), 3),
            updated=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        files.write_json(self.spec.path / rf.MANIFEST, self.manifest)

    def _start_manifest(self, state: _State, sampler: dict[str, object]) -> None:
        starts = list(self.manifest.get("starts", []))
        starts.append(
            {"time": datetime.now(UTC).isoformat(timespec="seconds"), "from_epoch": state.epoch}
            | provenance.host_info(self.config.device)
            | {"sampler": sampler}
        )
        self.manifest.update(
            status=rf.STATUS_RUNNING,
            experiment=self.spec.experiment,
            profile=self.spec.profile,
            seed=self.spec.seed,
            epochs_total=self.config.epochs,
            epochs_completed=state.epoch,
            versions=provenance.package_versions(),
            git=provenance.git_state(),
            threads=self.spec.threads,
            started=self.manifest.get("started", starts[0]["time"]),
            starts=starts,
        )
        self.manifest.pop("error", None)
        files.write_json(self.spec.path / rf.MANIFEST, self.manifest)

    def _fail(self, error: BaseException, interrupted: bool) -> str:
        """Record in the manifest why the run stopped; returns that reason."""
        if interrupted:
            status, reason = rf.STATUS_INTERRUPTED, self._interrupted_note()
        else:
            status, reason = rf.STATUS_FAILED, f"{type(error).__name__}: {error}"
        if self.manifest:
            self.manifest.update(status=status, error=reason)
            files.write_json(self.spec.path / rf.MANIFEST, self.manifest)
        return reason

    def _interrupted_note(self) -> str:
        kept = int(self.manifest.get("epochs_completed", 0))
        checkpoint = f"checkpoint of epoch {kept} kept" if kept else "no checkpoint yet (it starts over)"
        return (
            f"interrupted at epoch {max(self.epochs_done, kept)}/{self.config.epochs}; {checkpoint}; "
            "rerun the same command to resume"
        )

    def _summary(self, skipped: bool = False) -> RunSummary:
        rows = _read_rows(self.spec.path / rf.PROGRESS, int(self.manifest.get("epochs_completed", 0)))
        last = rows[-1] if rows else {}
        resumed_from = len(rows) if skipped else self.resumed_from
        trained = [row.get(rf.TIME_PREFIX + "Epoch", math.nan) for row in rows[resumed_from:]]
        return RunSummary(
            name=self.spec.name,
            status=str(self.manifest.get("status")),
            epochs=len(rows),
            final_return=last.get(rf.RETURN, math.nan),
            final_success=last.get(rf.SUCCESS, math.nan),
            wall_time=time.perf_counter() - self._started,
            skipped=skipped,
            resumed_from=resumed_from,
            epoch_seconds=sum(trained) / len(trained) if trained else math.nan,
        )

    # --- training ------------------------------------------------------------------------------------
    def _train(self, family: TaskFamily, state: _State, progress: _Progress) -> None:
        cfg, spec = self.config, self.spec
        num_envs = cfg.meta_batch_size * cfg.episodes_per_task
        train_env = family.make_env(num_envs, spec.threads)
        test_tasks = family.test_tasks(_generator(spec.seed, TEST_TASK_STREAM), cfg.test_tasks)
        test_envs = None
        if cfg.evaluate_every_n_epochs:
            test_envs = (
                family.make_env(len(test_tasks) * cfg.test_adaptation_episodes, spec.threads),
                family.make_env(len(test_tasks) * cfg.test_episodes, spec.threads),
            )
        self.resumed_from = self.epochs_done = state.epoch
        with interrupts.armed():  # a stop signal drops the epoch in progress; the last checkpoint is kept
            self._epochs(family, state, progress, train_env, test_tasks, test_envs)
        self.manifest.update(
            status=rf.STATUS_FINISHED, finished=datetime.now(UTC).isoformat(timespec="seconds")
        )
        files.write_json(spec.path / rf.MANIFEST, self.manifest)

    def _epochs(
        self, family: TaskFamily, state: _State, progress: _Progress, train_env, test_tasks, test_envs
    ):
        """Train epochs from ``state.epoch`` on, each recorded (row, checkpoint, manifest) as a whole."""
        cfg = self.config
        while state.epoch < cfg.epochs:
            interrupts.check()  # a signal received while the last epoch was being recorded
            epoch = state.epoch
            times = dict.fromkeys(rf.TIME_PHASES, 0.0)
            start = time.perf_counter()
            row = self._epoch(family, train_env, state, times)
            self._check_finite(state, row, epoch)
            if test_envs is not None and evaluates(cfg, epoch):
                t0 = time.perf_counter()
                row |= self._meta_test(family, test_tasks, test_envs, state.theta, epoch)
                times["Evaluation"] = time.perf_counter() - t0
            else:
                row |= self._meta_test_blank(family)
            times["Epoch"] = time.perf_counter() - start
            row |= {rf.TIME_PREFIX + k: v for k, v in times.items()}
            with interrupts.deferred():  # the row, the checkpoint and the manifest, whole
                state.epoch += 1
                for k, v in times.items():
                    state.phase_times[k] += v
                progress.write(row)
                if state.epoch % cfg.checkpoint_every == 0 or state.epoch == cfg.epochs:
                    self._save(state)
                self.epochs_done = state.epoch
            if self.on_epoch is not None:
                self.on_epoch(state.epoch, cfg.epochs)

    def _advantages(self, episodes):
        cfg = self.config
        return process_episodes(
            episodes, cfg.discount, cfg.gae_lambda, self.baseline, scaling=cfg.advantage_scaling
        )

    def _sample(self, env, params: Params, tasks, episodes: int, epoch: int, sampling_round: int):
        sample = sample_in_waves if isinstance(env, WaveEnv) else sample_episodes  # Meta-World: worker pool
        try:
            return sample(
                env,
                params,
                tasks,
                episodes_per_task=episodes,
                max_episode_length=self.config.max_episode_length,
                seed=self.spec.seed,
                epoch=epoch,
                sampling_round=sampling_round,
                device=self.config.device,
            )
        except NonFiniteActionError as error:
            what = f"the policy's actions in sampling round {sampling_round}: {error}"
            raise self._non_finite(epoch, what) from error

    def _epoch(self, family: TaskFamily, env, state: _State, times: dict[str, float]) -> dict[str, float]:
        cfg, epoch, theta = self.config, state.epoch, state.theta
        maml_cfg = cfg.maml()
        tasks = family.train_tasks(_generator(self.spec.seed, TASK_STREAM, epoch), cfg.meta_batch_size)
        classes = [family.class_of(t) for t in tasks]
        params = policy.broadcast({n: p.detach() for n, p in theta.items()}, len(tasks))
        pre, pre_stats = [], []
        for k in range(cfg.num_grad_updates + 1):
            t0 = time.perf_counter()
            episodes, stats = self._sample(env, params, tasks, cfg.episodes_per_task, epoch, k)
            t1 = time.perf_counter()
            times["Sampling"] += t1 - t0
            episodes = self._advantages(episodes)
            state.total_env_steps += stats.num_env_steps
            if k == cfg.num_grad_updates:
                post, post_stats = episodes, stats
            else:
                pre.append(episodes)
                pre_stats.append(stats)
                adapted = meta.adapt(theta, pre, cfg.inner_lr, first_order=True)
                params = {n: p.detach() for n, p in adapted.items()}
            times["Adaptation"] += time.perf_counter() - t1

        t0 = time.perf_counter()
        batch = MetaBatch(pre=tuple(pre), post=post)
        if cfg.algo == "trpo":
            new_theta, step_stats = trpo_step(theta, batch, maml_cfg, cfg.trpo())
            with torch.no_grad():
                for name, value in new_theta.items():
                    theta[name].copy_(value)
        else:
            step = ppo_step if cfg.algo == "ppo" else vpg_step
            step_stats = step(theta, state.optimizer, batch, maml_cfg, cfg.adam())
        times["OuterStep"] = time.perf_counter() - t0

        row: dict[str, float] = {rf.EPOCH: float(epoch), rf.TOTAL_ENV_STEPS: float(state.total_env_steps)}
        _episode_rows("", post_stats, family, classes, row)
        _episode_rows("PreAdapt/", pre_stats[0], family, classes, row)
        row["Average/StdReturn"] = float(post_stats.returns.std())
        for key, value in step_stats.items():
            row[rf.POLICY_PREFIX + key] = float(value)
        return row

    def _adapt_steps(self) -> int:
        return max(self.config.test_adapt_steps, self.config.num_grad_updates)

    def _meta_test(self, family: TaskFamily, tasks, envs, theta: Params, epoch: int) -> dict[str, float]:
        """Adapt to each held-out task on fresh episodes and measure before, during and after adaptation.

        The shape of Meta-World's protocol (metaworld/evaluation.py) with garage's numbers: adapt on
        ``test_adaptation_episodes`` episodes with ``num_grad_updates`` steps, then run ``test_episodes``
        episodes (garage's examples: 10 and 1 on Meta-World; Meta-World's own evaluation runs 3); success
        rates overall and per class by name. garage meta-tests all 250 test tasks every epoch; the ``full``
        profile every 10 epochs.
        """
        cfg = self.config
        adapt_env, eval_env = envs
        classes = [family.class_of(t) for t in tasks]
        params = policy.broadcast({n: p.detach() for n, p in theta.items()}, len(tasks))
        row: dict[str, float] = {}
        for k in range(self._adapt_steps() + 1):
            episodes, stats = self._sample(
                adapt_env, params, tasks, cfg.test_adaptation_episodes, epoch, TEST_ROUND + k
            )
            row[rf.adapt_step_key(k)] = float(stats.returns.mean())
            if k == 0:
                _episode_rows("MetaTest/PreAdapt/", stats, family, classes, row)
            if k == cfg.num_grad_updates:
                _, eval_stats = self._sample(eval_env, params, tasks, cfg.test_episodes, epoch, EVAL_ROUND)
                _episode_rows("MetaTest/", eval_stats, family, classes, row)
            if k < self._adapt_steps():
                episodes = self._advantages(episodes)
                leaf = {n: p.detach().requires_grad_() for n, p in params.items()}
                with torch.enable_grad():
                    params = meta.inner_step(leaf, episodes, cfg.inner_lr, create_graph=False)
                params = {n: p.detach() for n, p in params.items()}
        return row

    def _meta_test_blank(self, family: TaskFamily) -> dict[str, float]:
        """The meta-test columns with NaN (dowel's CSV header is fixed by the first row)."""
        if not self.config.evaluate_every_n_epochs:
            return {}
        keys = [rf.adapt_step_key(k) for k in range(self._adapt_steps() + 1)]
        keys += [rf.TEST_RETURN, rf.TEST_PRE_RETURN]
        keys += [rf.class_key(n, "AverageReturn", True) for n in family.class_names]
        if family.has_success:
            keys += [rf.TEST_SUCCESS, rf.TEST_PRE_SUCCESS]
            keys += [rf.class_key(n, "SuccessRate", True) for n in family.class_names]
        return dict.fromkeys(keys, math.nan)

    def _check_finite(self, state: _State, row: dict[str, float], epoch: int) -> None:
        bad = [n for n, p in state.theta.items() if not torch.isfinite(p).all()]
        losses = [k for k in row if k.startswith(rf.POLICY_PREFIX) and not math.isfinite(row[k])]
        if bad or losses or not math.isfinite(row[rf.RETURN]):
            raise self._non_finite(epoch, f"parameters: {bad or 'finite'}; statistics: {losses or 'finite'}")

    def _non_finite(self, epoch: int, what: str) -> NonFiniteError:
        return NonFiniteError(
            f"epoch {epoch} of {self.spec.name} produced non-finite values ({what}); "
            f"the last checkpoint ({self.manifest.get('epochs_completed', 0)} epochs done) is kept"
        )
