"""Which published number each experiment is compared with, on which of our metrics, matched how, and how
close counts as reproduced — declared once, in code, with the reason for every tolerance.

The numbers themselves live in ``results/published/`` (see its README); a comparison names a series there
by its ``curve`` id. What the verdicts mean: ``bench/report/verdicts.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from bench import run_format as rf

EXPERIMENTS = (
    "maml_ppo_half_cheetah_dir",
    "maml_trpo_half_cheetah_dir",
    "maml_trpo_metaworld_ml1_push",
    "maml_trpo_metaworld_ml10",
    "maml_trpo_metaworld_ml45",
)
GARAGE_EPOCHS = 300
"""Every one of garage's five examples trains for 300 epochs: the budget a comparison is matched at."""

Match = Literal["env_steps", "epochs", "adapt_steps"]
Statistic = Literal["value", "max"]
Kind = Literal["band", "floor"]


@dataclass(frozen=True)
class Comparison:
    """One of our metrics against one published series (or against nothing, where none exists)."""

    name: str
    """Short id, unique within its experiment."""
    metric: str
    """Our ``progress.csv`` column (a ``bench.run_format`` key)."""
    match: Match
    """What x is matched on: ``env_steps`` (our ``TotalEnvSteps``, pre+post), ``epochs`` (our ``Epoch``:
    meta-iterations, or the training budget for a number printed without x), ``adapt_steps`` (k of
    ``MetaTest/AdaptStep<k>``, read at the end of training)."""
    reference: str | None = None
    """``curve`` id in ``results/published``; None where nothing is published."""
    reference_metric: str | None = None
    """The published series' metric, where one curve id holds several (garage's runs)."""
    statistic: Statistic = "value"
    """``value``: per seed, the mean of the last ``window`` logged values up to the matched x. ``max``: per
    seed, the maximum over training up to the matched x (Meta-World's "average maximum success rate")."""
    adapt_step: int | None = None
    """For ``match="adapt_steps"``: the k compared."""
    y_scale: float = 1.0
    """Multiplies the published y into our units (percent → fraction, a horizon change)."""
    y_scale_reason: str = ""
    tolerance: float = math.nan
    """Half-width of the band around the (scaled) published value, in our units."""
    kind: Kind = "band"
    """``band``: the published value is a target, reproduced within ``± tolerance``. ``floor``: it is a lower
    bound (garage's own runs of its buggy MAML): at or above ``reference − tolerance`` is the expected result,
    and being far above it is no failure."""
    tolerance_reason: str = ""
    window: int = 10
    """Epochs whose logged values are averaged per seed for ``statistic="value"`` (single epochs are noisy;
    the published curves are smoothed means), and the values averaged at each end for ``learned``."""
    budget_epochs: int = GARAGE_EPOCHS
    """Epochs of training at which the comparison is declared; runs that end earlier are budget-short."""
    primary: bool = False
    """The comparison that gives the experiment its verdict."""
    proxy: bool = False
    """The reference is a different algorithm standing in for one that has no published number."""
    note: str = ""

    def __post_init__(self) -> None:
        if self.reference is not None and not (self.tolerance > 0 and self.tolerance_reason):
            raise ValueError(f"{self.name}: a reference needs a tolerance > 0 and its reason")
        if self.y_scale != 1.0 and not self.y_scale_reason:
            raise ValueError(f"{self.name}: y_scale {self.y_scale} needs a reason")
        if self.match == "adapt_steps" and (
            self.adapt_step is None or self.metric != rf.adapt_step_key(self.adapt_step)
        ):
            raise ValueError(f"{self.name}: match on adapt_steps needs adapt_step k and metric AdaptStep<k>")
        if self.window < 1 or self.budget_epochs < 1:
            raise ValueError(f"{self.name}: window and budget_epochs must be ≥ 1")


@dataclass(frozen=True)
class ContextCurve:
    """A published series drawn on an experiment's figures for context, with no verdict."""

    reference: str
    y_scale: float = 1.0
    note: str = ""
    """Printed after the series' label in the figure's legend: its scale, and what it is where that is not
    obvious on this experiment's figure (Finn's MAML-TRPO on MAML-PPO's)."""


# --- tolerance reasons --------------------------------------------------------------------------------
_HALF_H = "Finn's episodes are 200 steps, ours 100: a running cheetah earns about the same reward per step"
_PROMP_BAND = (
    "digitisation ±5–10; ProMP's curve is a mean of ≥3 seeds whose spread is not printed (learn2learn's "
    "MAML-TRPO seeds on this task spread by about ±150, ±85 for a 3-seed mean); observation 17 vs 20 dims "
    "— ±50 (about 20 % of the value at our budget)"
)
_TABLE1_BAND = (
    "10-seed mean of a granular rate (one of the 5 test classes solved = 20 points); the paper's own text "
    "says 35 % where its table says 31.6 %; v2 → v3 environments; the maxima over training of garage's 5 "
    "ML10 seeds range 0.20–0.23 — ±10 points"
)
_TABLE1_ML45_BAND = (
    "10-seed mean of a granular rate (one of the 5 test classes solved = 20 points); v2 → v3 environments; "
    "no garage ML45 run was published to calibrate the spread against (ML10's seeds' maxima range "
    "0.20–0.23) — ±10 points"
)
_TABLE1_TRAIN_BAND = (
    "10-seed mean of the maximum over training of a rate averaged over the training classes; v2 → v3 "
    "environments; the maxima over training of garage's 5 ML10 seeds range 0.035–0.205 — ±10 points"
)
_TABLE1_ML45_TRAIN_BAND = (
    "10-seed mean of the maximum over training of a rate averaged over the 45 training classes; v2 → v3 "
    "environments; no garage ML45 run was published to calibrate the spread against — ±10 points"
)
_TABLE1_NOTE = (
    "Table 1 prints no training budget: compared at garage's 300-epoch budget, max over training as in the "
    "paper. The paper's MAML used its own settings (policy 128×128, inner lr 1e-4, entropy 5e-5, std in "
    "[0.5, 1.5]) and evaluates 3 episodes per test task; ours are garage's (100×100, inner lr 0.1, 1 test "
    "episode)"
)
_GARAGE_NOTE = (
    "garage's own runs use garage's buggy MAML (untrained value function, advantages / variance): a floor, "
    "not a target (verdict at-or-above-floor / below-floor); above it is expected"
)
_MW_PLUS_BAND = "second-hand '~' number (±5), seed spread of 10 seeds (±5), IQM vs our mean — ±10 points"
_PERCENT = "the paper reports percent, our progress.csv fractions"

COMPARISONS: dict[str, tuple[Comparison, ...]] = {
    "maml_ppo_half_cheetah_dir": (
        Comparison(
            name="promp-proxy",
            metric=rf.RETURN,
            match="env_steps",
            reference="promp2019_fig2_promp",
            tolerance=50.0,
            tolerance_reason=_PROMP_BAND + "; ProMP is a different algorithm, so the band only says whether "
            "we are in its range",
            primary=True,
            proxy=True,
            note="proxy: ProMP (clipped PPO-like outer objective, different inner loss), not MAML-PPO; no "
            "MAML-PPO curve is published at matched env steps (garage has only a unit-test smoke threshold). "
            "Primary since 2026-12-03, declared before any full-budget MAML-PPO run had ended",
        ),
        Comparison(
            name="rllib-proxy",
            metric=rf.RETURN,
            match="epochs",
            reference="rllib_maml_halfcheetah_rand_direc",
            tolerance=80.0,
            tolerance_reason="one run, no seed spread printed (learn2learn's MAML-TRPO seeds on this task "
            "spread by about ±150); read from a figure (±10; smoothed 268); RLlib trained 4.4× our env steps "
            "(211 M vs 48 M; ProMP's curves rise 10–25 over such a span) with 5 PPO steps per iteration — "
            "±80, declared 2026-12-03 before any full-budget MAML-PPO run had ended",
            proxy=True,
            note="proxy: RLlib's MAML with a PPO-clip outer step, one run, its end of training (211 M env "
            "steps) against our end of training (48 M)",
        ),
    ),
    "maml_trpo_half_cheetah_dir": (
        Comparison(
            name="promp-maml",
            metric=rf.RETURN,
            match="env_steps",
            reference="promp2019_fig2_maml",
            tolerance=50.0,
            tolerance_reason=_PROMP_BAND,
            primary=True,
            note="same algorithm and horizon (H=100); x = env steps pre+post on both sides",
        ),
        Comparison(
            name="finn2017-1-step",
            metric=rf.adapt_step_key(1),
            match="adapt_steps",
            adapt_step=1,
            reference="finn2017_fig5_maml",
            y_scale=0.5,
            y_scale_reason=_HALF_H + ", so half of Finn's H=200 return is the like-for-like value",
            tolerance=40.0,
            tolerance_reason="Finn's value is one trained policy (one seed; SE over its 40 tasks ≈ 4 at "
            "H=100); halving the horizon is approximate (±15); rllab vs gymnasium model; seed spread ±25 "
            "— ±40",
            note="meta-test after 1 adaptation step at the end of training; Finn's 293.19 at H=200",
        ),
        Comparison(
            name="learn2learn-1-step",
            metric=rf.RETURN,
            match="epochs",
            reference="l2l_maml_trpo_1step",
            tolerance=90.0,
            tolerance_reason="learn2learn's 3 seeds spread by about ±150 in its figure, ±85 for a 3-seed "
            "mean; digitisation ±10 — ±90",
            note="x = meta-iterations = our epochs; learn2learn's batch sizes differ from garage's",
        ),
    ),
    "maml_trpo_metaworld_ml1_push": (
        Comparison(
            name="garage-v2-train-success",
            metric=rf.SUCCESS,
            match="env_steps",
            reference="garage_v2_ml1_push",
            reference_metric=rf.SUCCESS,
            kind="floor",
            tolerance=0.05,
            tolerance_reason="garage's 3 seeds spread by about ±0.01 around 0.01; binomial noise of 200 "
            "episodes per epoch (±0.01 at p = 0.01, more at higher p) — ±0.05",
            primary=True,
            note="no paper prints an ML1 number: garage's own v2 runs are the only reference. "
            + _GARAGE_NOTE,
        ),
        Comparison(
            name="garage-v2-test-success",
            metric=rf.TEST_SUCCESS,
            match="env_steps",
            reference="garage_v2_ml1_push",
            reference_metric=rf.TEST_SUCCESS,
            kind="floor",
            tolerance=0.10,
            tolerance_reason="garage's meta-test runs 1 episode per test task: one success moves the rate "
            "by several points, and its seeds range 0–1 at single evaluations — ±0.10",
            note=_GARAGE_NOTE,
        ),
    ),
    "maml_trpo_metaworld_ml10": (
        Comparison(
            name="table1-meta-test",
            metric=rf.TEST_SUCCESS,
            match="epochs",
            statistic="max",
            reference="metaworld2021_table1_ml10_test",
            y_scale=0.01,
            y_scale_reason=_PERCENT,
            tolerance=0.10,
            tolerance_reason=_TABLE1_BAND,
            primary=True,
            note=_TABLE1_NOTE,
        ),
        Comparison(
            name="table1-meta-train",
            metric=rf.SUCCESS,
            match="epochs",
            statistic="max",
            reference="metaworld2021_table1_ml10_train",
            y_scale=0.01,
            y_scale_reason=_PERCENT,
            tolerance=0.10,
            tolerance_reason=_TABLE1_TRAIN_BAND,
            note=_TABLE1_NOTE,
        ),
        Comparison(
            name="garage-v2-test-success",
            metric=rf.TEST_SUCCESS,
            match="env_steps",
            reference="garage_v2_ml10",
            reference_metric=rf.TEST_SUCCESS,
            kind="floor",
            tolerance=0.10,
            tolerance_reason="garage's 5 seeds sit at about 0.2 (one of 5 test classes solved; maxima over "
            "training 0.20–0.23); one class more or fewer is ±0.20 — ±0.10",
            note=_GARAGE_NOTE,
        ),
        Comparison(
            name="metaworld-plus-test",
            metric=rf.TEST_SUCCESS,
            match="epochs",
            reference="metaworld_plus2025_ml10_test_reward_v2",
            y_scale=0.01,
            y_scale_reason=_PERCENT,
            tolerance=0.10,
            tolerance_reason=_MW_PLUS_BAND,
            note="approximate, second-hand; v3 environments like ours; budget unknown (compared at ours)",
        ),
    ),
    "maml_trpo_metaworld_ml45": (
        Comparison(
            name="table1-meta-test",
            metric=rf.TEST_SUCCESS,
            match="epochs",
            statistic="max",
            reference="metaworld2021_table1_ml45_test",
            y_scale=0.01,
            y_scale_reason=_PERCENT,
            tolerance=0.10,
            tolerance_reason=_TABLE1_ML45_BAND,
            primary=True,
            note=_TABLE1_NOTE,
        ),
        Comparison(
            name="table1-meta-train",
            metric=rf.SUCCESS,
            match="epochs",
            statistic="max",
            reference="metaworld2021_table1_ml45_train",
            y_scale=0.01,
            y_scale_reason=_PERCENT,
            tolerance=0.10,
            tolerance_reason=_TABLE1_ML45_TRAIN_BAND,
            note=_TABLE1_NOTE,
        ),
        Comparison(
            name="metaworld-plus-test",
            metric=rf.TEST_SUCCESS,
            match="epochs",
            reference="metaworld_plus2025_ml45_test_reward_v2",
            y_scale=0.01,
            y_scale_reason=_PERCENT,
            tolerance=0.10,
            tolerance_reason=_MW_PLUS_BAND,
            note="approximate, second-hand; v3 environments like ours; budget unknown (compared at ours)",
        ),
    ),
}

_FINN_BASELINES = tuple(
    ContextCurve(f"finn2017_fig5_{name}", y_scale=0.5, note="×0.5 for our 100-step episodes")
    for name in ("pretrained", "random", "oracle")
)
CONTEXT: dict[str, tuple[ContextCurve, ...]] = {
    "maml_ppo_half_cheetah_dir": (
        ContextCurve(
            "finn2017_fig5_maml", y_scale=0.5, note="MAML-TRPO, not MAML-PPO; ×0.5 for our 100-step episodes"
        ),
        *_FINN_BASELINES,
    ),
    "maml_trpo_half_cheetah_dir": _FINN_BASELINES,
}


def comparisons_for(experiment: str) -> tuple[Comparison, ...]:
    """The declared comparisons of one experiment; an experiment outside the five has none."""
    return COMPARISONS.get(experiment, ())
