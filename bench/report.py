"""The report: read every run folder under ``<results>/runs``, aggregate across seeds, compare with the
published numbers, and write ``summary.csv``, ``REPORT.md`` and ``plots/`` — all generated, never edited.

``build_tables`` is the pure part (run folders and published data in, tidy tables out); ``write_report``
writes files; ``report`` does both and returns the verdict table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench import plots, stats
from bench import published as pub
from bench import run_format as rf
from bench.comparisons import COMPARISONS, CONTEXT, EXPERIMENTS, Comparison, ContextCurve
from bench.runs import Run, load_runs, progress_table, runs_table
from bench.verdicts import evaluate

PROFILES = ("smoke", "quick", "full")
REPORT_FILE = "REPORT.md"
FINAL_WINDOW = stats.FINAL_WINDOW
FINAL_METRICS = (
    rf.RETURN,
    rf.PRE_RETURN,
    rf.TEST_RETURN,
    rf.TEST_PRE_RETURN,
    rf.SUCCESS,
    rf.PRE_SUCCESS,
    rf.TEST_SUCCESS,
    rf.TEST_PRE_SUCCESS,
)
SUCCESS_METRICS = (rf.SUCCESS, rf.PRE_SUCCESS, rf.TEST_SUCCESS, rf.TEST_PRE_SUCCESS)
PRE_ADAPTATION = {
    rf.RETURN: rf.PRE_RETURN,
    rf.SUCCESS: rf.PRE_SUCCESS,
    rf.TEST_RETURN: rf.TEST_PRE_RETURN,
    rf.TEST_SUCCESS: rf.TEST_PRE_SUCCESS,
}
CLASS_COLUMN = re.compile(r"MetaTest/([^/]+)/SuccessRate")
ADAPT_COLUMN = re.compile(r"MetaTest/AdaptStep(\d+)/AverageReturn")
SUMMARY_COLUMNS = (
    "profile", "experiment", "comparison", "primary", "verdict", "position", "metric", "statistic", "match",
    "budget_epochs", "epochs_done", "compare_x", "n_seeds", "runs_used", "ours_mean", "ours_ci_low",
    "ours_ci_high", "ours_iqm", "ours_iqm_ci_low", "ours_iqm_ci_high", "reference", "reference_label",
    "source", "approx", "proxy", "ref_published", "y_scale", "ref_y", "tolerance", "band_low", "band_high",
    "note", "tolerance_reason",
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class ReportTables:
    """Everything the report says, as tidy tables."""

    runs: pd.DataFrame
    """One row per run folder (``bench.runs.runs_table``) plus ``used`` (bool)."""
    summary: pd.DataFrame
    """The verdict table: one row per (profile, experiment, comparison), columns ``SUMMARY_COLUMNS``."""
    finals: pd.DataFrame
    """``profile, experiment, metric, statistic (final | max), epochs, n_seeds, mean, ci_low, ci_high, iqm,
    iqm_ci_low, iqm_ci_high, ci_note``."""
    curves: pd.DataFrame
    """``profile, experiment, metric, Epoch, TotalEnvSteps, n_seeds, mean, ci_low, ci_high``."""
    per_class: pd.DataFrame
    """``profile, experiment, class, statistic (final | max over training), n_seeds, mean, ci_low,
    ci_high``."""
    adapt_steps: pd.DataFrame
    """``profile, experiment, k, n_seeds, mean, ci_low, ci_high`` (final meta-test return after k steps)."""


def _order(values: pd.Series, known: tuple[str, ...]) -> pd.Series:
    return values.map(lambda v: known.index(v) if v in known else len(known))


def used_runs(runs: list[Run]) -> tuple[list[Run], str]:
    """The runs of one (profile, experiment) that the comparison uses, and a phrase saying which.

    Complete runs when there are any (partial ones are listed, not averaged in: their last epoch differs);
    otherwise the partial runs, labelled so.
    """
    complete = [r for r in runs if not r.partial]
    partial = len(runs) - len(complete)
    if complete:
        extra = f", {partial} partial not used" if partial else ""
        return complete, f"{len(complete)} complete{extra}"
    return runs, f"{partial} partial (no complete run)"


def _has_values(progress: pd.DataFrame, metric: str) -> bool:
    return metric in progress and bool(progress[metric].notna().any())


def _finals(progress: pd.DataFrame, rng: np.random.Generator, n_resamples: int) -> list[dict]:
    rows = []
    for metric in FINAL_METRICS:
        if not _has_values(progress, metric):
            continue
        for statistic in ("final", "max") if metric in SUCCESS_METRICS else ("final",):
            summary = stats.summarise(
                stats.per_seed(progress, metric, statistic), rng, n_resamples=n_resamples
            )
            rows.append({"metric": metric, "statistic": statistic, **summary})
    return rows


def _per_class(progress: pd.DataFrame, rng: np.random.Generator, n_resamples: int) -> list[dict]:
    rows = []
    for column in progress.columns:
        match = CLASS_COLUMN.fullmatch(str(column))
        if not match or match.group(1) in ("Average", "PreAdapt") or not _has_values(progress, column):
            continue
        for statistic, label in (("final", "final"), ("max", "max over training")):
            summary = stats.summarise(
                stats.per_seed(progress, column, statistic), rng, n_resamples=n_resamples
            )
            rows.append({"class": match.group(1), "statistic": label, **summary})
    return rows


def _adapt_steps(progress: pd.DataFrame, rng: np.random.Generator, n_resamples: int) -> list[dict]:
    rows = []
    for column in progress.columns:
        match = ADAPT_COLUMN.fullmatch(str(column))
        if match and _has_values(progress, column):
            summary = stats.summarise(stats.per_seed(progress, column, "final"), rng, n_resamples=n_resamples)
            rows.append({"k": int(match.group(1)), **summary})
    return sorted(rows, key=lambda r: r["k"])


def _last(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """``table`` with ``column`` moved to the end (if present)."""
    return table[[c for c in table.columns if c != column] + [column]] if column in table else table


def _undeclared(experiment: str) -> tuple[Comparison, ...]:
    note = f"{experiment!r} is not one of the five experiments {EXPERIMENTS}: no comparison declared"
    return (Comparison(name="none-declared", metric=rf.RETURN, match="env_steps", primary=True, note=note),)


def build_tables(
    runs: list[Run],
    published: pd.DataFrame,
    comparisons: Mapping[str, tuple[Comparison, ...]] = COMPARISONS,
    ci_seed: int = 0,
    n_resamples: int = stats.N_RESAMPLES,
) -> ReportTables:
    """Aggregate the runs and evaluate every declared comparison (pure: no files are read or written).

    One ``numpy.random.Generator`` seeded with ``ci_seed`` drives every bootstrap, in a fixed order, so
    the same inputs give the same tables.
    """
    rng = np.random.default_rng(ci_seed)
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.profile, run.experiment), []).append(run)
    keys = sorted(
        groups,
        key=lambda k: (
            EXPERIMENTS.index(k[1]) if k[1] in EXPERIMENTS else len(EXPERIMENTS),
            k[1],
            PROFILES.index(k[0]) if k[0] in PROFILES else len(PROFILES),
            k[0],
        ),
    )
    summary, finals, curves, per_class, adapt = [], [], [], [], []
    used_paths: set[Path] = set()
    for profile, experiment in keys:
        chosen, runs_used = used_runs(groups[(profile, experiment)])
        used_paths.update(r.path for r in chosen)
        progress = progress_table(chosen)
        ids = {"profile": profile, "experiment": experiment}
        for comparison in comparisons.get(experiment) or _undeclared(experiment):
            row = evaluate(comparison, progress, published, rng, n_resamples)
            if runs_used.endswith("(no complete run)"):
                row["note"] = "; ".join(filter(None, ["only partial runs", str(row["note"])]))
            summary.append({**ids, "runs_used": runs_used, **row})
        last = int(progress[rf.EPOCH].max() + 1) if len(progress) else 0
        finals += [{**ids, "epochs": last, **r} for r in _finals(progress, rng, n_resamples)]
        per_class += [{**ids, **r} for r in _per_class(progress, rng, n_resamples)]
        adapt += [{**ids, **r} for r in _adapt_steps(progress, rng, n_resamples)]
        for metric in FINAL_METRICS:
            if _has_values(progress, metric):
                table = stats.curve(progress, metric, rng, n_resamples=n_resamples)
                curves.append(table.assign(metric=metric, **ids))
    runs_frame = runs_table(runs)
    runs_frame["used"] = runs_frame["path"].map(lambda p: Path(p) in used_paths)
    curve_columns = [
        "profile",
        "experiment",
        "metric",
        rf.EPOCH,
        rf.TOTAL_ENV_STEPS,
        "n_seeds",
        "mean",
        "ci_low",
        "ci_high",
    ]
    return ReportTables(
        runs=runs_frame,
        summary=pd.DataFrame(summary, columns=list(SUMMARY_COLUMNS)),
        finals=_last(pd.DataFrame(finals), "ci_note"),
        curves=pd.concat(curves, ignore_index=True)[curve_columns]
        if curves
        else pd.DataFrame(columns=curve_columns),
        per_class=_last(pd.DataFrame(per_class), "ci_note"),
        adapt_steps=_last(pd.DataFrame(adapt), "ci_note"),
    )


# --- figures -------------------------------------------------------------------------------------------
def _epochs_to_steps(curves: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Our epoch → env-steps map (mean over seeds and metrics), for drawing per-iteration references."""
    mapping = curves.groupby(rf.EPOCH)[rf.TOTAL_ENV_STEPS].mean()
    return mapping.index.to_numpy(float), mapping.to_numpy(float)


def _to_steps(x: np.ndarray, epochs: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Epochs to env steps by our steps per epoch (linear, extrapolated beyond our last epoch)."""
    if len(epochs) == 0:
        return np.full_like(x, np.nan, dtype=float)
    per_epoch = steps[-1] / (epochs[-1] + 1)
    return np.where(x <= epochs[-1], np.interp(x, epochs, steps), (x + 1) * per_epoch)


def figure_inputs(
    experiment_curves: pd.DataFrame,
    comparisons: tuple[Comparison, ...],
    published: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tables ``plots.curves_figure`` draws for one experiment: our lines and the references.

    Panels are the compared metrics (not adapt-step ones) in declaration order; each panel shows our
    metric and its pre-adaptation counterpart, and every reference compared on that metric. A reference
    matched on epochs is drawn at our env steps of those epochs; ``y_scale`` is applied.
    """
    panels = list(dict.fromkeys(c.metric for c in comparisons if c.match != "adapt_steps"))
    epochs, steps = _epochs_to_steps(experiment_curves)
    ours, refs = [], []
    for panel in panels:
        for metric, suffix in ((panel, "ours"), (PRE_ADAPTATION.get(panel), "ours, pre-adaptation")):
            rows = experiment_curves[experiment_curves["metric"] == metric]
            if metric is not None and not rows.empty:
                ours.append(rows.assign(panel=panel, line=f"{suffix}: {metric} (mean, 95 % CI)"))
        for c in comparisons:
            if c.metric != panel or c.reference is None or c.match == "adapt_steps":
                continue
            series = pub.curve(published, c.reference, c.reference_metric)
            x = series["x"].to_numpy(float)
            if c.match == "epochs" and not np.isnan(x).all():
                x = _to_steps(x, epochs, steps)
            label = pub.describe(published, c.reference)["label"]
            label += f" ×{c.y_scale:g}" if c.y_scale not in (1.0, 0.01) else ""
            refs.append(pd.DataFrame({"panel": panel, "label": label, "x": x, "y": series["y"] * c.y_scale}))
    ours_columns = ["panel", "line", rf.TOTAL_ENV_STEPS, "mean", "ci_low", "ci_high"]
    return (
        pd.concat(ours, ignore_index=True)[ours_columns] if ours else pd.DataFrame(columns=ours_columns),
        pd.concat(refs, ignore_index=True) if refs else pd.DataFrame(columns=["panel", "label", "x", "y"]),
    )


def adapt_references(
    comparisons: tuple[Comparison, ...], context: tuple[ContextCurve, ...], published: pd.DataFrame
) -> pd.DataFrame:
    """Published per-adaptation-step values for one experiment (compared ones, then context), scaled to
    our units: columns ``label, x, y``."""
    items = [(c.reference, c.y_scale) for c in comparisons if c.match == "adapt_steps" and c.reference]
    items += [(c.reference, c.y_scale) for c in context]
    frames = []
    for reference, scale in items:
        series = pub.curve(published, reference)
        label = pub.describe(published, reference)["label"] + (f" ×{scale:g}" if scale != 1.0 else "")
        frames.append(pd.DataFrame({"label": label, "x": series["x"], "y": series["y"] * scale}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["label", "x", "y"])


def _select(table: pd.DataFrame, profile: str, experiment: str) -> pd.DataFrame:
    if table.empty:
        return table
    return table[(table["profile"] == profile) & (table["experiment"] == experiment)]


def make_figures(
    tables: ReportTables,
    published: pd.DataFrame,
    comparisons: Mapping[str, tuple[Comparison, ...]] = COMPARISONS,
    context: Mapping[str, tuple[ContextCurve, ...]] = CONTEXT,
) -> dict[tuple[str, str, str], plots.Figure]:
    """Every figure, keyed by ``(profile, experiment, kind)`` with kind ``curves``, ``adapt_steps`` or
    ``per_class``."""
    figures = {}
    pairs = tables.summary[["profile", "experiment"]].drop_duplicates().itertuples(index=False)
    for profile, experiment in pairs:
        declared = comparisons.get(experiment) or _undeclared(experiment)
        name = f"{experiment} ({profile})"
        ours, refs = figure_inputs(_select(tables.curves, profile, experiment), declared, published)
        figures[(profile, experiment, "curves")] = plots.curves_figure(ours, refs, name)
        adapt = _select(tables.adapt_steps, profile, experiment)
        adapt_refs = adapt_references(declared, context.get(experiment, ()), published)
        if not adapt.empty or not adapt_refs.empty:
            title = f"{name}: return after k adaptation steps"
            figures[(profile, experiment, "adapt_steps")] = plots.adapt_steps_figure(adapt, adapt_refs, title)
        per_class = _select(tables.per_class, profile, experiment)
        if not per_class.empty:
            title = f"{name}: meta-test success per class"
            figures[(profile, experiment, "per_class")] = plots.per_class_figure(per_class, title)
    return figures


# --- files ---------------------------------------------------------------------------------------------
def _fmt(value: object, digits: int = 4) -> str:
    if isinstance(value, bool | str):
        return str(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int | np.integer):
        return str(value)
    return f"{float(value):.{digits}g}"


AT_FORMAT = {"env_steps": "{} steps", "epochs": "epoch {}", "adapt_steps": "k={}"}


def verdict_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The compact verdict table printed by the CLI and shown in REPORT.md: experiment, profile,
    comparison (``*`` = primary), budget, our value with CI, reference with tolerance, verdict."""
    rows = []
    for r in summary.itertuples(index=False):
        ci = "" if math.isnan(r.ours_ci_low) else f" [{_fmt(r.ours_ci_low, 3)}, {_fmt(r.ours_ci_high, 3)}]"
        statistic = "max " if r.statistic == "max" else ""
        if not r.reference:
            reference = "–"
        elif math.isnan(r.ref_y):
            reference = "none at this x"
        else:
            reference = f"{_fmt(r.ref_y)} ± {_fmt(r.tolerance, 3)}"
        if r.reference and r.proxy:
            reference += " (proxy)"
        rows.append(
            {
                "experiment": r.experiment,
                "profile": r.profile,
                "comparison": ("* " if r.primary else "  ") + r.comparison,
                "budget": f"{r.epochs_done}/{r.budget_epochs} ep",
                "at": AT_FORMAT[r.match].format(_fmt(r.compare_x)),
                "seeds": r.n_seeds,
                "ours": f"{statistic}{_fmt(r.ours_mean)}{ci}",
                "reference": reference,
                "verdict": r.verdict,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "experiment",
            "profile",
            "comparison",
            "budget",
            "at",
            "seeds",
            "ours",
            "reference",
            "verdict",
        ],
    )


def format_verdicts(summary: pd.DataFrame) -> str:
    """The verdict table as fixed-width text."""
    table = verdict_table(summary)
    return table.to_string(index=False) if len(table) else "(no runs)"


def markdown_table(table: pd.DataFrame) -> str:
    """A pandas table as a GitHub markdown table (numbers to 4 significant digits)."""
    if table.empty:
        return "_(none)_"
    cells = [
        [_fmt(v).replace("|", "\\|").replace("\n", " ") for v in row] for row in table.itertuples(index=False)
    ]
    header = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    return "\n".join([header, rule, *("| " + " | ".join(row) + " |" for row in cells)])


CAVEATS = (
    "Verdicts compare the **mean across seeds** with a band around the published value; the band's width "
    "and its reason are declared per comparison in `bench/comparisons.py` (listed below). CIs are 95 % "
    "percentile-bootstrap intervals across seeds (scipy.stats.bootstrap, seeded); with one seed there is no "
    "CI.",
    "With few seeds (the harness's default is 3) a percentile bootstrap understates the uncertainty, and "
    "below 4 seeds the IQM trims nothing (it equals the mean).",
    "A verdict is `budget-short` when our runs end before the declared budget (garage's 300 epochs) or "
    "before the reference's x range; the note says where we stand at the largest common x.",
    "Finn et al. 2017 used 200-step episodes, ours (like ProMP, learn2learn and garage) 100: Finn's returns "
    "are halved for the comparison. ProMP observes 17 dims, garage's HalfCheetahDir 20.",
    "x axes differ: adaptation steps (Finn), env steps pre+post (ProMP, garage), meta-iterations "
    "(learn2learn, drawn at our env steps per epoch).",
    "Meta-World Table 1 reports the *average maximum* success rate (per run the maximum over training, "
    "averaged over 10 seeds) with v2 environments; we run v3 (Meta-World 3.x) — not interchangeable.",
    "No MAML-PPO number is published: the ProMP curve is a *proxy* (a different algorithm).",
    "garage's own ML1/ML10 runs use garage's buggy MAML (value function never trained, advantages divided "
    "by the variance): a floor, not a target. ML1 push has no other reference.",
    "Digitised curves (ProMP, learn2learn) carry ±5–10 in y; Meta-World+ numbers are second-hand "
    "approximations. Provenance: `results/published/README.md`.",
    "Partial runs (status running/failed, or fewer epochs than planned) are listed below and not averaged "
    "with complete ones; an experiment with only partial runs is compared on them, labelled so.",
)


def _comparison_lines(r: tuple) -> list[str]:
    """REPORT.md's bullet for one summary row (a namedtuple of ``SUMMARY_COLUMNS``)."""
    primary = " (primary)" if r.primary else ""
    match = r.match.replace("_", " ")
    lines = [
        f"- **{r.comparison}**{primary}: `{r.metric}` ({r.statistic}, matched on {match}) "
        f"— **{r.verdict}**. Ours {_fmt(r.ours_mean)} [{_fmt(r.ours_ci_low)}, {_fmt(r.ours_ci_high)}] over "
        f"{r.n_seeds} seed(s), {r.runs_used}."
    ]
    if r.reference:
        scale = f", ×{r.y_scale:g}" if r.y_scale != 1.0 else ""
        flags = (" (approximate)" if r.approx else "") + (" (proxy)" if r.proxy else "")
        lines.append(
            f"  Reference: {r.reference_label} — {r.source}; {_fmt(r.ref_published)} as published{scale} → "
            f"band [{_fmt(r.band_low)}, {_fmt(r.band_high)}]{flags}. Tolerance: {r.tolerance_reason}."
        )
    if r.note:
        lines.append(f"  Note: {r.note}.")
    return lines


def render_markdown(
    tables: ReportTables, figure_files: Mapping[tuple[str, str, str], Path], root: Path
) -> str:
    """REPORT.md's text. ``figure_files`` paths are linked relative to ``root`` (the results folder)."""
    summary = tables.summary
    lines = [
        "# MAML benchmark report",
        "",
        "Generated by `python -m bench report` from the run folders under `runs/` — do not edit by hand.",
        "",
        "## Verdicts",
        "",
        "`*` marks the comparison that gives the experiment its verdict.",
        "",
        markdown_table(verdict_table(summary)),
        "",
        "Verdicts: `reproduced` (inside the band at the matched budget), `below`, `above`, `budget-short` "
        "(runs end before the budget or the reference's x range: compared at the largest common x), "
        "`no-reference` (nothing published), `no-data` (the metric was never logged).",
        "",
        "## Caveats",
        "",
        *[f"- {c}" for c in CAVEATS],
        "",
        "## Runs",
        "",
        markdown_table(
            tables.runs[
                [
                    "profile",
                    "experiment",
                    "seed",
                    "status",
                    "epochs_completed",
                    "epochs_total",
                    "partial",
                    "used",
                    "partial_reason",
                    "notes",
                ]
            ]
        ),
        "",
        "## Final metrics across seeds",
        "",
        f"`final`: per seed the mean of its last {FINAL_WINDOW} logged values; `max`: per seed the maximum "
        "over training. Mean and IQM with 95 % bootstrap CIs.",
        "",
        markdown_table(tables.finals),
    ]
    for (profile, experiment), rows in summary.groupby(["profile", "experiment"], sort=False):
        lines += ["", f"## {experiment} ({profile})", ""]
        for r in rows.itertuples(index=False):
            lines += _comparison_lines(r)
        lines.append("")
        for kind in ("curves", "adapt_steps", "per_class"):
            path = figure_files.get((profile, experiment, kind))
            if path is not None:
                lines.append(f"![{experiment} {profile} {kind}]({path.relative_to(root).as_posix()})")
    return "\n".join(lines) + "\n"


def write_report(
    results: Path,
    tables: ReportTables,
    figures: Mapping[tuple[str, str, str], plots.Figure],
) -> Path:
    """Write ``summary.csv``, the aggregate tables, ``plots/*.png`` and ``REPORT.md``; returns the path of
    REPORT.md."""
    results = Path(results)
    tables.summary.to_csv(results / "summary.csv", index=False)
    tables.finals.to_csv(results / "final_metrics.csv", index=False)
    tables.curves.to_csv(results / "curves.csv", index=False)
    tables.runs.to_csv(results / "runs.csv", index=False)
    files = {
        key: plots.save(fig, results / "plots" / f"{key[0]}_{key[1]}_{key[2]}.png")
        for key, fig in figures.items()
    }
    path = results / REPORT_FILE
    path.write_text(render_markdown(tables, files, results))
    return path


def report(
    results: Path,
    published_dir: Path = pub.PUBLISHED_DIR,
    comparisons: Mapping[str, tuple[Comparison, ...]] = COMPARISONS,
    context: Mapping[str, tuple[ContextCurve, ...]] = CONTEXT,
    ci_seed: int = 0,
    n_resamples: int = stats.N_RESAMPLES,
) -> pd.DataFrame:
    """Read ``results/runs``, write the report into ``results``, and return the verdict table (the summary:
    one row per (profile, experiment, comparison), columns ``SUMMARY_COLUMNS``).

    Raises ``bench.runs.RunFolderError`` for a missing or corrupt run folder and
    ``bench.published.PublishedDataError`` for bad published data.
    """
    runs = load_runs(results)
    published = pub.load_published(published_dir)
    tables = build_tables(runs, published, comparisons, ci_seed, n_resamples)
    figures = make_figures(tables, published, comparisons, context)
    write_report(results, tables, figures)
    return tables.summary
