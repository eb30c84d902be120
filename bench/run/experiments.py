"""The five experiments (garage's MAML examples) and the profiles that scale them.

Profile ``full`` is garage's example exactly (shared/docs/garage-maml.md, "The five examples"), except
where a documented choice is needed: Meta-World v3 episodes last 500 steps (garage's examples used 200-step
v1 environments; the Meta-World paper's MAML numbers use 500-step v2 episodes), meta-test on Meta-World
runs every 10th epoch instead of every epoch (garage's bug 6: 250 test tasks every epoch), and HalfCheetahDir
meta-tests 10 held-out directions drawn once per run, with returns after up to 3 adaptation steps (garage:
one direction drawn per evaluation, one step; README, "Where garage's source says nothing"). ``quick`` is the
same algorithm scaled down to finish all five × 3 seeds within an hour on 2 cores (15–19 min measured);
``smoke`` runs every code path in seconds. Any field can be overridden (:func:`apply_overrides`).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

import torch

from bench.run import ablations
from maml.config import AdamConfig, MAMLConfig, TRPOConfig

ENVS = ("half_cheetah_dir", "ml1_push", "ml10", "ml45")
TRAIN_CLASSES = {"ml10": 10, "ml45": 45}
"""Meta-World's multi-class benchmarks: a meta-batch holds the same number of goals of every train class."""
ALGOS = ("trpo", "ppo", "vpg")


class ConfigError(ValueError):
    """An unknown experiment or profile, or an invalid override or value."""


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines one training run (with the seed)."""

    env: str
    """Task family: one of :data:`ENVS`."""
    algo: str
    """Outer optimiser: one of :data:`ALGOS`."""
    epochs: int
    """Meta-updates."""
    meta_batch_size: int
    """Tasks per meta-update."""
    episodes_per_task: int
    """Episodes sampled per task and sampling round (pre- and post-update alike)."""
    max_episode_length: int
    """Steps per episode (episodes never end early)."""
    hidden_sizes: tuple[int, ...]
    """Policy MLP hidden layers (tanh)."""
    action_scale: float
    """The environment receives ``clip(a / action_scale, −1, 1)`` (garage's ``expected_action_scale``)."""
    inner_lr: float = 0.1
    """α of the inner SGD step."""
    num_grad_updates: int = 1
    """Inner steps per task."""
    first_order: bool = False
    """Drop the second-order term (an ablation; garage: second order)."""
    discount: float = 0.99
    gae_lambda: float = 1.0
    max_kl: float = 0.01
    """TRPO: trust region."""
    outer_lr: float = 1e-3
    """PPO/VPG: Adam's learning rate."""
    clip_range: float = 0.5
    """PPO: clip range of the likelihood ratio."""
    outer_epochs: int = 1
    """PPO/VPG: Adam steps per meta-update."""
    evaluate_every_n_epochs: int = 1
    """Meta-test period (epochs); the last epoch is always evaluated. 0 disables meta-test."""
    test_tasks: int = 10
    """Held-out tasks per meta-test (Meta-World: capped at the benchmark's test tasks)."""
    test_adaptation_episodes: int = 10
    """Episodes per test task for each adaptation step."""
    test_episodes: int = 10
    """Episodes per test task after adaptation."""
    test_adapt_steps: int = 1
    """Meta-test logs the return after 0 … this many adaptation steps (``MetaTest/AdaptStep<k>/...``)."""
    checkpoint_every: int = 1
    """Write a checkpoint every N epochs (and always at the last)."""
    device: str = "cpu"
    """Torch device of the meta-update (sampling runs its small policy calls on the CPU)."""
    baseline: str = "linear"
    """Ablation of garage's bug 1: ``"garage_untrained_mlp"`` (:attr:`maml.config.MAMLConfig.baseline`)."""
    advantage_scaling: str = "std"
    """Ablation of garage's bug 3: ``"garage_variance"`` (``MAMLConfig.advantage_scaling``)."""
    outer_gradient: str = "meta"
    """PPO/VPG ablation of garage's bug 2: ``"garage_adam_closure"`` (``AdamConfig.outer_gradient``)."""

    def __post_init__(self) -> None:
        if self.env not in ENVS:
            raise ConfigError(f"env must be one of {ENVS}, got {self.env!r}")
        if self.algo not in ALGOS:
            raise ConfigError(f"algo must be one of {ALGOS}, got {self.algo!r}")
        positive = ("epochs", "meta_batch_size", "episodes_per_task", "max_episode_length", "test_tasks")
        positive += ("test_adaptation_episodes", "test_episodes", "checkpoint_every", "outer_epochs")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.evaluate_every_n_epochs < 0 or self.test_adapt_steps < 0:
            raise ConfigError("evaluate_every_n_epochs and test_adapt_steps must be ≥ 0")
        if not self.action_scale > 0 or any(h < 1 for h in self.hidden_sizes):
            raise ConfigError("action_scale must be > 0 and hidden sizes ≥ 1")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name} must be a finite number, got {value}")
        classes = TRAIN_CLASSES.get(self.env, 1)
        if self.meta_batch_size % classes:
            raise ConfigError(
                f"{self.env} has {classes} train classes: meta_batch_size must be a multiple of {classes} "
                f"(each meta-batch holds meta_batch_size/{classes} goals of every class), got "
                f"{self.meta_batch_size}"
            )
        try:
            torch.device(self.device)
        except RuntimeError as error:
            raise ConfigError(
                f"device {self.device!r} is not a torch device (e.g. cpu, cuda, cuda:1)"
            ) from error
        if self.outer_gradient != "meta" and (self.algo == "trpo" or self.num_grad_updates != 1):
            raise ConfigError(
                f"outer_gradient={self.outer_gradient!r} is an Adam outer step's ablation (algo ppo or vpg) "
                f"with one inner step; got algo {self.algo!r}, num_grad_updates {self.num_grad_updates}"
            )
        try:  # the algorithm configs validate their own fields
            self.maml(), self.trpo(), self.adam()
        except ValueError as error:
            raise ConfigError(str(error)) from error

    def maml(self) -> MAMLConfig:
        return MAMLConfig(
            meta_batch_size=self.meta_batch_size,
            inner_lr=self.inner_lr,
            num_grad_updates=self.num_grad_updates,
            first_order=self.first_order,
            discount=self.discount,
            gae_lambda=self.gae_lambda,
            baseline=self.baseline,
            advantage_scaling=self.advantage_scaling,
        )

    def trpo(self) -> TRPOConfig:
        return TRPOConfig(max_kl=self.max_kl)

    def adam(self) -> AdamConfig:
        return AdamConfig(
            outer_lr=self.outer_lr,
            epochs=self.outer_epochs,
            clip_range=self.clip_range,
            outer_gradient=self.outer_gradient,
        )

    def env_steps_per_epoch(self) -> int:
        """Training steps per epoch: pre- and post-update rounds (garage's TotalEnvSteps increment)."""
        rounds = self.num_grad_updates + 1
        return rounds * self.meta_batch_size * self.episodes_per_task * self.max_episode_length


_HALF_CHEETAH = dict(env="half_cheetah_dir", epochs=300, meta_batch_size=20, episodes_per_task=40)
_HALF_CHEETAH |= dict(max_episode_length=100, hidden_sizes=(64, 64), action_scale=10.0)
_HALF_CHEETAH |= dict(test_tasks=10, test_adaptation_episodes=10, test_episodes=10, test_adapt_steps=3)
_METAWORLD = dict(epochs=300, max_episode_length=500, hidden_sizes=(100, 100), evaluate_every_n_epochs=10)
_METAWORLD |= dict(test_adaptation_episodes=10, test_episodes=1, meta_batch_size=20, episodes_per_task=10)

FULL: dict[str, ExperimentConfig] = {
    "maml_ppo_half_cheetah_dir": ExperimentConfig(algo="ppo", **_HALF_CHEETAH),
    "maml_trpo_half_cheetah_dir": ExperimentConfig(algo="trpo", **_HALF_CHEETAH),
    "maml_trpo_metaworld_ml1_push": ExperimentConfig(
        env="ml1_push", algo="trpo", action_scale=1.0, test_tasks=50, **_METAWORLD
    ),
    "maml_trpo_metaworld_ml10": ExperimentConfig(
        env="ml10", algo="trpo", action_scale=1.0, test_tasks=250, **_METAWORLD
    ),
    "maml_trpo_metaworld_ml45": ExperimentConfig(
        env="ml45",
        algo="trpo",
        action_scale=10.0,
        test_tasks=250,
        **(_METAWORLD | dict(meta_batch_size=45, episodes_per_task=45)),
    ),
}
"""garage's five examples (profile ``full``)."""
EXPERIMENTS = tuple(FULL)

# quick: the same algorithm on a budget (sizes chosen from measured epoch times; see README)
QUICK_CHANGES: dict[str, dict[str, object]] = {
    "maml_ppo_half_cheetah_dir": dict(
        epochs=100, meta_batch_size=10, episodes_per_task=10, test_tasks=4, evaluate_every_n_epochs=5,
    ),
    "maml_trpo_half_cheetah_dir": dict(
        epochs=100, meta_batch_size=10, episodes_per_task=10, test_tasks=4, evaluate_every_n_epochs=5,
    ),
    "maml_trpo_metaworld_ml1_push": dict(
        epochs=20, meta_batch_size=10, episodes_per_task=4, max_episode_length=150, test_tasks=5,
        evaluate_every_n_epochs=5, test_adaptation_episodes=4,
    ),
    "maml_trpo_metaworld_ml10": dict(
        epochs=15, meta_batch_size=10, episodes_per_task=2, max_episode_length=150, test_tasks=5,
        evaluate_every_n_epochs=5, test_adaptation_episodes=2,
    ),
    "maml_trpo_metaworld_ml45": dict(
        epochs=6, meta_batch_size=45, episodes_per_task=1, max_episode_length=100, test_tasks=5,
        evaluate_every_n_epochs=3, test_adaptation_episodes=2,
    ),
}  # fmt: skip
SMOKE_CHANGES: dict[str, object] = dict(
    epochs=2, episodes_per_task=2, max_episode_length=10, test_tasks=2, test_adaptation_episodes=2,
    test_episodes=1, evaluate_every_n_epochs=1, test_adapt_steps=1, hidden_sizes=(16, 16),
)  # fmt: skip
SMOKE_BATCH = {"maml_trpo_metaworld_ml10": 10, "maml_trpo_metaworld_ml45": 45}
"""Meta-World's multi-task meta-batches must cover every class; the rest use 4 tasks in ``smoke``."""

PROFILES = ("smoke", "quick", "full")


def preset(experiment: str, profile: str) -> ExperimentConfig:
    """The config of ``experiment`` under ``profile``; ``<experiment>+<ablation>`` applies the ablation's
    changes (:mod:`bench.run.ablations`) on top."""
    try:
        base, ablation = ablations.split(experiment)
    except KeyError as error:
        raise ConfigError(error.args[0]) from error
    if ablation is not None:
        config = preset(base, profile)
        if ablation.adam_only and config.algo == "trpo":
            raise ConfigError(
                f"ablation {ablation.name!r} concerns the Adam outer step (PPO/VPG); {base} uses TRPO"
            )
        return replace(config, **ablation.changes_for(config.algo))
    if experiment not in FULL:
        raise ConfigError(f"unknown experiment {experiment!r}; valid: {', '.join(EXPERIMENTS)}")
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    config = FULL[experiment]
    if profile == "quick":
        config = replace(config, **QUICK_CHANGES[experiment])
    elif profile == "smoke":
        config = replace(config, **SMOKE_CHANGES, meta_batch_size=SMOKE_BATCH.get(experiment, 4))
    return config


def _parse(name: str, text: str, annotation: object) -> object:
    kind = typing.get_origin(annotation) or annotation
    if kind is tuple:
        return tuple(int(part) for part in text.replace("(", "").replace(")", "").split(",") if part.strip())
    if kind is bool:
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"expected true or false, got {text!r}")
    if kind in (int, float, str):
        return kind(text)
    raise ConfigError(f"cannot override field {name} of type {annotation}")


def apply_overrides(config: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """Apply ``field=value`` strings (e.g. ``epochs=5``, ``hidden_sizes=32,32``, ``first_order=true``)."""
    hints = typing.get_type_hints(ExperimentConfig)
    names = [f.name for f in fields(ExperimentConfig)]
    changes: dict[str, object] = {}
    for item in overrides:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form field=value")
        if name not in hints:
            raise ConfigError(
                f"unknown config field {name!r} in override {item!r}; valid: {', '.join(names)}"
            )
        try:
            changes[name] = _parse(name, text.strip(), hints[name])
        except ValueError as error:
            raise ConfigError(f"bad value for {name} in override {item!r}: {error}") from error
    return replace(config, **changes)


def to_dict(config: ExperimentConfig) -> dict[str, object]:
    """JSON-ready fields (tuples become lists)."""
    return to_dict_values(dataclasses.asdict(config))


def with_defaults(data: Mapping[str, object]) -> dict[str, object]:
    """A stored config record with every field it lacks set to that field's default, in JSON form.

    Fields are only ever added with a default that keeps what runs computed before them (the ablation
    switches of garage's bugs, for instance), so a run folder written before a field existed holds a run
    of that default: its record compares equal to one written today, and resumes."""
    missing = {
        f.name: f.default
        for f in fields(ExperimentConfig)
        if f.name not in data and f.default is not dataclasses.MISSING
    }
    return {**data, **to_dict_values(missing)}


def to_dict_values(values: Mapping[str, object]) -> dict[str, object]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def from_dict(data: dict[str, object]) -> ExperimentConfig:
    """Inverse of :func:`to_dict` (unknown keys are an error)."""
    names = {f.name for f in fields(ExperimentConfig)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown config fields {sorted(unknown)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return ExperimentConfig(**values)
