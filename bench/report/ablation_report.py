"""The report's ablations: what each of garage's bugs (and the first-order approximation) costs.

Per ablation experiment (``<experiment>+<ablation>``, :mod:`bench.run.ablations`) and metric: its final value
across seeds with a t-CI, the same for its counterpart (the experiment's fixed runs of the same profile and
seeds, cut at the ablation's last common epoch when the ablation's runs are shorter), the difference with a
Welch CI, and whether the ablation learned. Never a verdict on a published reference.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from bench import run_format as rf
from bench.report import stats
from bench.report.runs import Run, progress_table
from bench.report.verdicts import learned
from bench.run import ablations

METRICS = (rf.RETURN, rf.adapt_step_key(1))
"""Compared per ablation: the post-update meta-train return and the meta-test return after one step."""
COLUMNS = (
    "profile", "experiment", "ablation", "label", "base", "metric", "epochs", "n_seeds", "mean", "ci_low",
    "ci_high", "base_n_seeds", "base_mean", "base_ci_low", "base_ci_high", "difference", "difference_ci_low",
    "difference_ci_high", "learned", "note",
)  # fmt: skip


def _final(progress: pd.DataFrame, metric: str) -> np.ndarray:
    return stats.per_seed(progress, metric, "final") if len(progress) else np.array([])


def ablation_rows(
    profile: str, experiment: str, chosen: list[Run], counterparts: list[Run], rng: np.random.Generator
) -> list[dict[str, object]]:
    """The rows of one ablation experiment (``chosen``: its runs used by the report; ``counterparts``: the
    fixed experiment's used runs of the same profile)."""
    base, ablation = ablations.split(experiment)
    assert ablation is not None
    seeds = {r.seed for r in chosen}
    progress = progress_table(chosen)
    last = int(progress.groupby("seed")[rf.EPOCH].max().min()) if len(progress) else -1
    fixed = [r for r in counterparts if r.seed in seeds]
    fixed_progress = progress_table(fixed) if fixed else pd.DataFrame()
    notes = []
    if last < 0:
        notes.append("the ablation's runs logged no epoch")
    if not fixed:
        notes.append(f"no fixed run of {base} with seeds {sorted(seeds)} in this profile")
    elif last >= 0 and int(fixed_progress[rf.EPOCH].max()) > last:
        fixed_progress = fixed_progress[fixed_progress[rf.EPOCH] <= last]
        notes.append(f"counterpart cut at epoch {last} (the ablation's runs end there)")
    missing = seeds - {r.seed for r in fixed}
    if fixed and missing:
        notes.append(f"no counterpart for seeds {sorted(missing)}")
    did_learn = learned(stats.start_to_end(progress, rf.RETURN))[0] if len(progress) else "unclear"
    rows = []
    for metric in METRICS:
        ours = stats.summarise(_final(progress, metric), rng)
        theirs = stats.summarise(_final(fixed_progress, metric), rng)
        diff, low, high = stats.welch_interval(_final(progress, metric), _final(fixed_progress, metric))
        rows.append(
            {
                "profile": profile,
                "experiment": experiment,
                "ablation": ablation.name,
                "label": ablation.label,
                "base": base,
                "metric": metric,
                "epochs": last + 1,
                "n_seeds": ours["n_seeds"],
                "mean": ours["mean"],
                "ci_low": ours["ci_low"],
                "ci_high": ours["ci_high"],
                "base_n_seeds": theirs["n_seeds"],
                "base_mean": theirs["mean"],
                "base_ci_low": theirs["ci_low"],
                "base_ci_high": theirs["ci_high"],
                "difference": diff,
                "difference_ci_low": low,
                "difference_ci_high": high,
                "learned": did_learn,
                "note": "; ".join(notes),
            }
        )
    return rows


def ablation_table(
    groups: Mapping[tuple[str, str], tuple[list[Run], str]], rng: np.random.Generator
) -> pd.DataFrame:
    """Every ablation experiment's rows; ``groups``: (profile, experiment) → (used runs, description)."""
    rows = []
    for (profile, experiment), (chosen, _) in groups.items():
        if ablations.is_ablation(experiment):
            base, _ = ablations.split(experiment)
            counterparts = groups.get((profile, base), ([], ""))[0]
            rows += ablation_rows(profile, experiment, chosen, counterparts, rng)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def figure_curves(curves: pd.DataFrame, profile: str, base: str) -> pd.DataFrame:
    """The post-update return curves of ``base`` and its ablations under ``profile``, with a ``line``
    label per experiment (the fixed run first)."""
    mine = curves[(curves["profile"] == profile) & (curves["metric"] == rf.RETURN)]
    keep = mine["experiment"].map(lambda e: e == base or ablations.split(e)[0] == base)
    mine = mine[keep]

    def label(experiment: str) -> str:
        ablation = ablations.split(experiment)[1]
        return "fixed (ours)" if ablation is None else ablation.label

    return mine.assign(line=mine["experiment"].map(label))
