"""The report: read every run folder under ``<results>/runs``, aggregate across seeds, compare with the
published numbers, and write ``summary.csv``, ``REPORT.md`` and ``plots/`` — all generated, never edited.

``build_tables`` is the pure part (run folders and published data in, tidy tables out); ``write_report``
writes files; ``report`` does both and returns the verdict table.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench import files
from bench import run_format as rf
from bench.report import ablation_report, plots, stats
from bench.report import published as pub
from bench.report.comparisons import COMPARISONS, CONTEXT, EXPERIMENTS, Comparison, ContextCurve
from bench.report.runs import Run, load_runs, progress_table, runs_table
from bench.report.verdicts import MIN_SEEDS, evaluate
from bench.run import ablations
from bench.run.experiments import FULL, to_dict

PROFILES = ("smoke", "quick", "full")
REPORT_FILE = "REPORT.md"
FIGURE_KINDS = ("_curves", "_adapt_steps", "_per_class", "_ablations")
"""How the report's figure names end (``plots/<profile>_<experiment><kind>.png``)."""
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
    "kind", "budget_epochs", "epochs_done", "compare_x", "n_seeds", "runs_used", "ours_mean", "ours_ci_low",
    "ours_ci_high", "ours_iqm", "ours_iqm_ci_low", "ours_iqm_ci_high", "reference", "reference_label",
    "source", "approx", "proxy", "ref_published", "y_scale", "ref_y", "tolerance", "band_low", "band_high",
    "learned", "moved", "moved_ci_low", "moved_ci_high", "note", "tolerance_reason",
)  # fmt: skip
NOT_PROTOCOL = ("experiment", "profile", "seed", "epochs", "checkpoint_every", "device", "test_adapt_steps")
"""Config fields that do not change what a comparison measures: the budget is checked on its own
(``budget-short``), checkpoints and the device change no result beyond rounding, and extra adaptation steps
at meta-test only add columns."""


@dataclass(frozen=True, eq=False)
class ReportTables:
    """Everything the report says, as tidy tables."""

    runs: pd.DataFrame
    """One row per run folder (``bench.report.runs.runs_table``) plus ``used`` (bool)."""
    summary: pd.DataFrame
    """The verdict table: one row per (profile, experiment, comparison), columns ``SUMMARY_COLUMNS``."""
    finals: pd.DataFrame
    """``profile, experiment, metric, statistic (final | max), epochs, n_seeds, mean, ci_low, ci_high, iqm,
    iqm_ci_low, iqm_ci_high, ci_note``."""
    curves: pd.DataFrame
    """``profile, experiment, metric, Epoch, TotalEnvSteps, n_seeds, mean, ci_low, ci_high``."""
    provenance: pd.DataFrame
    """One row per (profile, experiment): ``profile, experiment, runs, commits, versions, devices, hosts,
    started, updated, warning`` (what the used runs' manifests record)."""
    per_class: pd.DataFrame
    """``profile, experiment, class, statistic (final | max over training), n_seeds, mean, ci_low,
    ci_high``."""
    adapt_steps: pd.DataFrame
    """``profile, experiment, k, n_seeds, mean, ci_low, ci_high`` (final meta-test return after k steps)."""
    ablations: pd.DataFrame
    """One row per (profile, ablation experiment, metric): ``bench.report.ablation_report.COLUMNS``."""


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


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def protocol_deviations(experiment: str, configs: list[Mapping[str, object]]) -> list[str]:
    """How the runs' configs differ from garage's example (the ``full`` preset), as ``field=value (garage's
    example: value)`` phrases; fields in :data:`NOT_PROTOCOL` and fields a config lacks are not compared.
    An experiment outside the five has no example: nothing to differ from."""
    if experiment not in FULL:
        return []
    garage = to_dict(FULL[experiment])
    out = []
    for name, value in garage.items():
        if name in NOT_PROTOCOL:
            continue
        seen = sorted({_json(c[name]) for c in configs if name in c} - {_json(value)})
        if seen:
            out.append(f"{name}={' / '.join(seen)} (garage's example: {_json(value)})")
    return out


def config_disagreements(configs: list[Mapping[str, object]]) -> list[str]:
    """Config fields (besides the seed) on which the runs disagree with each other."""
    names = sorted({name for c in configs for name in c} - {"seed"})
    return [n for n in names if len({_json(c.get(n)) for c in configs}) > 1]


def _distinct(values: list[str]) -> str:
    counts = pd.Series(values, dtype=object).value_counts(sort=False)
    return "; ".join(f"{v} ({n})" if len(counts) > 1 else str(v) for v, n in counts.items())


def provenance_row(runs: list[Run]) -> dict[str, object]:
    """What the runs' manifests record about where and with what they ran (see :attr:`ReportTables
    .provenance`); ``warning`` names what differs between runs that are averaged together."""
    commits, versions, devices, hosts = [], [], [], []
    cpus: set[str] = set()
    for run in runs:
        git = run.manifest.get("git") or {}
        commit = str(git.get("commit", "unknown"))[:12]
        commits.append(commit + (" (dirty)" if git.get("dirty") else ""))
        version = run.manifest.get("versions") or {}
        versions.append(", ".join(f"{k} {version[k]}" for k in PINNED if k in version) or "unknown")
        starts = run.manifest.get("starts") or [{}]
        devices.append(", ".join(sorted({str(s.get("gpu") or s.get("device", "unknown")) for s in starts})))
        hosts.append(", ".join(sorted({f"{s.get('host', 'unknown')} ({s.get('cpu', '?')})" for s in starts})))
        cpus.update(str(s.get("cpu", "?")) for s in starts)
    differ = [name for name, v in (("commits", commits), ("versions", versions)) if len(set(v)) > 1]
    if len(cpus) > 1:  # MKL's products take other code paths on another CPU model (README)
        differ.append("CPU models")
    times = [str(r.manifest.get(k, "")) for r in runs for k in ("started", "updated") if r.manifest.get(k)]
    return {
        "runs": len(runs),
        "commits": _distinct(commits),
        "versions": _distinct(versions),
        "devices": _distinct(devices),
        "hosts": _distinct(hosts),
        "started": min(times, default=""),
        "updated": max(times, default=""),
        "warning": f"runs averaged together differ in {' and '.join(differ)}" if differ else "",
    }


PINNED = ("torch", "mujoco", "metaworld", "gymnasium", "numpy")
"""Versions the provenance table shows (what ``constraints.txt`` pins because it changes numbers)."""


def _has_values(progress: pd.DataFrame, metric: str) -> bool:
    return metric in progress and bool(progress[metric].notna().any())


def _finals(progress: pd.DataFrame, rng: np.random.Generator, n_resamples: int) -> list[dict]:
    rows = []
    for metric in FINAL_METRICS:
        if not _has_values(progress, metric):
            continue
        for statistic in ("final", "max") if metric in SUCCESS_METRICS else ("final",):
            values = stats.per_seed(progress, metric, statistic)
            summary = stats.summarise(values, rng, n_resamples=n_resamples, bounds=rf.value_range(metric))
            rows.append({"metric": metric, "statistic": statistic, **summary})
    return rows


def _per_class(progress: pd.DataFrame, rng: np.random.Generator, n_resamples: int) -> list[dict]:
    rows = []
    for column in progress.columns:
        match = CLASS_COLUMN.fullmatch(str(column))
        if not match or match.group(1) in ("Average", "PreAdapt") or not _has_values(progress, column):
            continue
        for statistic, label in (("final", "final"), ("max", "max over training")):
            values = stats.per_seed(progress, column, statistic)
            summary = stats.summarise(values, rng, n_resamples=n_resamples, bounds=rf.value_range(column))
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
    summary, finals, curves, per_class, adapt, provenance = [], [], [], [], [], []
    used_paths: set[Path] = set()
    used = {key: used_runs(groups[key]) for key in keys}
    for profile, experiment in keys:
        chosen, runs_used = used[(profile, experiment)]
        used_paths.update(r.path for r in chosen)
        progress = progress_table(chosen)
        ids = {"profile": profile, "experiment": experiment}
        configs = [r.config for r in chosen]
        deviations = protocol_deviations(experiment, configs)
        prefix = ["only partial runs"] if runs_used.endswith("(no complete run)") else []
        disagree = config_disagreements(configs)
        if disagree:
            prefix.append(f"the seeds ran with different configs ({', '.join(disagree)})")
        declared = () if ablations.is_ablation(experiment) else comparisons.get(experiment)
        for comparison in declared if declared is not None else _undeclared(experiment):
            row = evaluate(comparison, progress, published, rng, n_resamples, deviations)
            row["note"] = "; ".join(filter(None, [*prefix, str(row["note"])]))
            summary.append({**ids, "runs_used": runs_used, **row})
        provenance.append({**ids, **provenance_row(chosen)})
        last = int(progress[rf.EPOCH].max() + 1) if len(progress) else 0
        finals += [{**ids, "epochs": last, **r} for r in _finals(progress, rng, n_resamples)]
        per_class += [{**ids, **r} for r in _per_class(progress, rng, n_resamples)]
        adapt += [{**ids, **r} for r in _adapt_steps(progress, rng, n_resamples)]
        for metric in FINAL_METRICS:
            if _has_values(progress, metric):
                table = stats.curve(progress, metric)
                curves.append(table.assign(metric=metric, **ids))
    runs_frame = runs_table(runs)
    runs_frame["used"] = runs_frame["path"].map(lambda p: Path(p) in used_paths)
    # relative to the results folder (runs/<profile>/<experiment>/seed-<k>): the tables name no machine's path
    runs_frame["path"] = runs_frame["path"].map(lambda p: Path(p).relative_to(Path(p).parents[3]).as_posix())
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
        provenance=pd.DataFrame(provenance),
        per_class=_last(pd.DataFrame(per_class), "ci_note"),
        adapt_steps=_last(pd.DataFrame(adapt), "ci_note"),
        ablations=ablation_report.ablation_table(used, rng),
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


def reference_label(published: pd.DataFrame, comparison: Comparison) -> str:
    """A reference's legend label: the published series, its scale into our units, what our runs are
    compared with (where that is not the plotted mean) and what its shading is."""
    label = pub.describe(published, comparison.reference)["label"]
    label += f" ×{comparison.y_scale:g}" if comparison.y_scale not in (1.0, 0.01) else ""
    what = "mean of per-run max over training; " if comparison.statistic == "max" else ""
    if comparison.kind == "band":
        return label + f" ({what}shaded: verdict band ±{comparison.tolerance:g})"
    return label + f" ({what}floor; shaded: verdict floor, {comparison.tolerance:g} below)"


def figure_inputs(
    experiment_curves: pd.DataFrame,
    comparisons: tuple[Comparison, ...],
    published: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tables ``plots.curves_figure`` draws for one experiment: our lines and the references.

    Panels are the compared metrics (not adapt-step ones) in declaration order; each panel shows our
    metric (``stage`` ``post``) and its pre-adaptation counterpart (``pre``), labelled alike in every panel,
    and every reference compared on that metric with the band its verdict uses (``low``, ``high``:
    ``y ± tolerance``, or ``y − tolerance`` up to ``y`` for a floor), clipped to the values the metric can
    take (a success rate's band stops at 0 and 1). A reference matched on epochs is drawn at our env steps
    of those epochs; ``y_scale`` is applied.
    """
    panels = list(dict.fromkeys(c.metric for c in comparisons if c.match != "adapt_steps"))
    epochs, steps = _epochs_to_steps(experiment_curves)
    ours, refs = [], []
    for panel in panels:
        for metric, stage in ((panel, "post"), (PRE_ADAPTATION.get(panel), "pre")):
            rows = experiment_curves[experiment_curves["metric"] == metric]
            if metric is not None and not rows.empty:
                line = f"ours, {stage}-adaptation ({plots.CI_WORDS})"
                ours.append(rows.assign(panel=panel, line=line, stage=stage))
        bounds = rf.value_range(panel) or (-np.inf, np.inf)
        for c in comparisons:
            if c.metric != panel or c.reference is None or c.match == "adapt_steps":
                continue
            series = pub.curve(published, c.reference, c.reference_metric)
            x = series["x"].to_numpy(float)
            if c.match == "epochs" and not np.isnan(x).all():
                x = _to_steps(x, epochs, steps)
            y = series["y"] * c.y_scale
            low, high = (y - c.tolerance, y + c.tolerance) if c.kind == "band" else (y - c.tolerance, y)
            refs.append(
                pd.DataFrame(
                    {
                        "panel": panel,
                        "label": reference_label(published, c),
                        "x": x,
                        "y": y,
                        "low": low.clip(*bounds),
                        "high": high.clip(*bounds),
                    }
                )
            )
    ours_columns = ["panel", "line", "stage", rf.TOTAL_ENV_STEPS, "mean", "ci_low", "ci_high"]
    ref_columns = ["panel", "label", "x", "y", "low", "high"]
    return (
        pd.concat(ours, ignore_index=True)[ours_columns] if ours else pd.DataFrame(columns=ours_columns),
        pd.concat(refs, ignore_index=True)[ref_columns] if refs else pd.DataFrame(columns=ref_columns),
    )


def adapt_references(
    comparisons: tuple[Comparison, ...], context: tuple[ContextCurve, ...], published: pd.DataFrame
) -> pd.DataFrame:
    """Published per-adaptation-step values for one experiment (compared ones, then context), scaled to
    our units: columns ``label, x, y, low, high`` (``low``, ``high``: the verdict's band at the compared k,
    NaN elsewhere). A compared series' label names its k and band; a context series' label carries its
    note (e.g. that it is MAML-TRPO on a MAML-PPO figure)."""
    frames = []
    for c in comparisons:
        if c.match != "adapt_steps" or not c.reference:
            continue
        series = pub.curve(published, c.reference)
        y = series["y"] * c.y_scale
        at_k = series["x"] == c.adapt_step
        label = pub.describe(published, c.reference)["label"] + (
            f" ×{c.y_scale:g}" if c.y_scale != 1.0 else ""
        )
        label += f" (compared at k={c.adapt_step}: verdict band ±{c.tolerance:g})"
        low, high = (y - c.tolerance).where(at_k), (y + c.tolerance).where(at_k)
        frames.append(pd.DataFrame({"label": label, "x": series["x"], "y": y, "low": low, "high": high}))
    for c in context:
        series = pub.curve(published, c.reference)
        label = pub.describe(published, c.reference)["label"]
        label += f" ({c.note}; context, no verdict)" if c.note else " (context, no verdict)"
        frames.append(pd.DataFrame({"label": label, "x": series["x"], "y": series["y"] * c.y_scale}))
    columns = ["label", "x", "y", "low", "high"]
    return (
        pd.concat(frames, ignore_index=True).reindex(columns=columns)
        if frames
        else pd.DataFrame(columns=columns)
    )


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
    for profile, base in tables.ablations[["profile", "base"]].drop_duplicates().itertuples(index=False):
        ours = ablation_report.figure_curves(tables.curves, profile, base)
        title = f"{base} ({profile}): garage's bugs and first-order MAML, ablated one at a time"
        figures[(profile, base, "ablations")] = plots.ablation_figure(ours, title)
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
    """The verdict table of REPORT.md (the console's: :func:`bench.report.commands.verdict_text`):
    experiment, profile, comparison (``*`` = primary), budget, our value with CI, reference with tolerance,
    whether our runs learned, verdict."""
    rows = []
    for r in summary.itertuples(index=False):
        ci = "" if math.isnan(r.ours_ci_low) else f" [{_fmt(r.ours_ci_low, 3)}, {_fmt(r.ours_ci_high, 3)}]"
        statistic = "max " if r.statistic == "max" else ""
        if not r.reference:
            reference = "–"
        elif math.isnan(r.ref_y):
            reference = "none at this x"
        elif r.kind == "floor":
            reference = (
                f"≥ {_fmt(r.ref_y - r.tolerance, 3)} (floor: {_fmt(r.ref_y)} − {_fmt(r.tolerance, 3)})"
            )
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
                "learned": r.learned,
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
            "learned",
            "verdict",
        ],
    )


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
    "Verdicts compare the **mean across seeds** with a band around the published value (or, for a floor, "
    "with its lower edge); the band's width and its reason are declared per comparison in "
    "`bench/report/comparisons.py` (listed below). A verdict on a reference needs garage's budget (300 "
    "epochs), "
    f"garage's config (the `full` preset; otherwise `off-protocol`) and at least {MIN_SEEDS} seeds "
    "(otherwise `too-few-seeds`); the note then says where the mean stands.",
    "CIs of the mean are 95 % Student-t intervals across seeds (with 3–5 seeds a percentile bootstrap "
    "covers far less than it claims); with one seed there is none. The IQM gets a percentile-bootstrap CI "
    f"from {stats.BOOTSTRAP_MIN_SEEDS} seeds on; below 4 seeds it trims nothing (it equals the mean).",
    "`learned` says whether the compared metric rose from its first to its last logged values (per seed, "
    "the mean of the last 10 minus the first 10): `yes` when the t-CI of the rise lies above zero, `no` "
    "when it did not rise, `unclear` otherwise. A band or floor that contains the untrained policy's value "
    "(ML1 push: garage's runs reached 2 % success) cannot tell learning from none; `learned` can.",
    "A verdict is `budget-short` when our runs end before the declared budget (garage's 300 epochs) or "
    "before the reference's x range; the note says where we stand at the largest common x.",
    "Finn et al. 2017 used 200-step episodes, ours (like ProMP, learn2learn and garage) 100: Finn's returns "
    "are halved for the comparison. ProMP observes 17 dims, garage's HalfCheetahDir 20.",
    "x axes differ: adaptation steps (Finn), env steps pre+post (ProMP, garage), meta-iterations "
    "(learn2learn, drawn at our env steps per epoch).",
    "Meta-World Table 1 reports the *average maximum* success rate (per run the maximum over training, "
    "averaged over 10 seeds) with v2 environments and the paper's own MAML settings (128×128 policy, inner "
    "lr 1e-4, 3 evaluation episodes per test task); we run v3 (Meta-World 3.x) with garage's settings — "
    "not interchangeable.",
    "No MAML-PPO number is published at garage's budget: the ProMP curve (a different algorithm, matched on "
    "env steps) and RLlib's MAML with a PPO-clip outer step (one run, 4.4× our env steps, compared at the "
    "end of training) are *proxies*.",
    "garage's own ML1/ML10 runs use garage's buggy MAML (value function never trained, advantages divided "
    "by the variance): a floor, not a target. ML1 push has no other reference.",
    "Digitised curves (ProMP, learn2learn) carry ±5–10 in y; Meta-World+ numbers are second-hand "
    "approximations. Provenance: `results/published/README.md`.",
    "Partial runs (status running/failed, or fewer epochs than planned) are listed below and not averaged "
    "with complete ones; an experiment with only partial runs is compared on them, labelled so.",
    "Findings at garage's full budget on HalfCheetahDir (2026-12-03, 5 seeds each; README.md): MAML-TRPO's "
    "`above` on Finn et al. is a unit mismatch, not a better algorithm — our adapted policies earn 2.3–2.9 "
    "reward per step, Finn's about 1.5, so his 200-step return halved understates a 100-step one. MAML-PPO's "
    "`below` on both proxies: every seed rises, then falls once its outer step starts raising its own "
    "surrogate (dLoss < 0) and KLAfter grows from ~0.01 to 0.2–10 nats; with garage's one Adam step per "
    "meta-update the likelihood ratio is exactly 1 where the gradient is taken, so PPO's clip never acts and "
    "nothing bounds the step (tests/test_outer_steps.py::test_one_adam_step_makes_ppo_the_vpg_step).",
)
VERDICT_LEGEND = (
    "Verdicts: `reproduced` (inside the band), `below`, `above`, `at-or-above-floor` / `below-floor` (a "
    "reference that is a lower bound), `budget-short` (runs end before the budget or the reference's x "
    "range: compared at the largest common x), `off-protocol` (a config that is not garage's example), "
    "`too-few-seeds`, `no-reference` (nothing published), `no-data` (the metric was never logged). "
    "Definitions: `bench/report/verdicts.py`."
)


FIGURE_CAPTIONS = {
    "curves": (
        "learning curves",
        "_Solid: ours after adaptation; dashed: ours before it (mean across seeds, shaded 95 % t-CI). "
        "Dash-dotted: published curves (those matched on epochs drawn at our env steps per epoch); dotted: "
        "single published numbers; their shading is the verdict's band or floor, within the metric's range. "
        "A reference with nothing inside our x range is named under the legend._",
    ),
    "adapt_steps": (
        "return after k adaptation steps",
        "_Ours: meta-test return after k adaptation steps at the end of training, mean across seeds with "
        "shaded 95 % t-CI. Published values scaled to our episode length; the compared k carries its "
        "verdict band as an error bar; context curves get no verdict._",
    ),
    "per_class": (
        "meta-test success per class",
        f"_Bars: `final` (per seed the mean of its last {FINAL_WINDOW} epochs) and the maximum over "
        "training, the value printed above; error bars: 95 % t-CI across seeds (none with one seed). Each "
        "seed draws its own test tasks, so the seeds per class can differ._",
    ),
    "ablations": (
        "ablations",
        "_Solid: our fixed runs; dash-dotted: each ablation; mean across seeds with shaded 95 % t-CI._",
    ),
}
"""Per figure kind: the image's alt text and the caption REPORT.md prints under it."""


def _comparison_lines(r: tuple) -> list[str]:
    """REPORT.md's bullet for one summary row (a namedtuple of ``SUMMARY_COLUMNS``)."""
    primary = " (primary)" if r.primary else ""
    match = r.match.replace("_", " ")
    lines = [
        f"- **{r.comparison}**{primary}: `{r.metric}` ({r.statistic}, matched on {match}) "
        f"— **{r.verdict}**. Ours {_fmt(r.ours_mean)} [{_fmt(r.ours_ci_low)}, {_fmt(r.ours_ci_high)}] over "
        f"{r.n_seeds} seed(s), {r.runs_used}; learned: {r.learned} (rose by {_fmt(r.moved)} "
        f"[{_fmt(r.moved_ci_low)}, {_fmt(r.moved_ci_high)}])."
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


def _ablation_lines(
    table: pd.DataFrame, figure_files: Mapping[tuple[str, str, str], Path], root: Path
) -> list[str]:
    """The Ablations section (nothing when no ablation ran)."""
    if table.empty:
        return []

    def with_ci(value: str, low: str, high: str) -> list[str]:
        rows = zip(table[value], table[low], table[high], strict=True)
        return [f"{_fmt(v)} [{_fmt(lo, 3)}, {_fmt(hi, 3)}]" for v, lo, hi in rows]

    shown = table.assign(
        ours=with_ci("mean", "ci_low", "ci_high"),
        fixed=with_ci("base_mean", "base_ci_low", "base_ci_high"),
        change=with_ci("difference", "difference_ci_low", "difference_ci_high"),
    )
    columns = ["profile", "experiment", "metric", "epochs", "n_seeds", "ours", "fixed", "change", "learned"]
    lines = [
        "",
        "## Ablations",
        "",
        "What each of garage's bugs costs: the same experiment with garage's behaviour switched back on "
        "(`<experiment>+<ablation>`, defined in `bench/run/ablations.py`), against our fixed runs of the "
        f"same profile and seeds. Values are per seed the mean of its last {FINAL_WINDOW} epochs, with 95 % "
        "t-CIs; `change` = ablation − fixed with a Welch CI. Ablations never enter a verdict.",
        "",
        *[f"- `{a.name}`: {a.label}. {a.garage_source}." for a in ablations.ABLATIONS.values()
          if a.name in set(table["ablation"])],
        "",
        markdown_table(shown[[*columns, "note"]]),
    ]  # fmt: skip
    for key, path in figure_files.items():
        if key[2] == "ablations":
            alt = f"{key[1]} ({key[0]}): {FIGURE_CAPTIONS['ablations'][0]}"
            lines += [
                "",
                f"![{alt}]({path.relative_to(root).as_posix()})",
                "",
                FIGURE_CAPTIONS["ablations"][1],
            ]
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
        VERDICT_LEGEND,
        "",
        "## Caveats",
        "",
        *[f"- {c}" for c in CAVEATS],
        "",
        "## Provenance",
        "",
        "What the runs' manifests record (counts in brackets where runs differ); every run's own "
        "`manifest.json` holds the full record.",
        "",
        markdown_table(tables.provenance),
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
        f"`final`: per seed the mean of what it logged in its last {FINAL_WINDOW} epochs (at least its last "
        "logged value); `max`: per seed the maximum over training. Mean with its 95 % t-CI, IQM with its "
        f"bootstrap CI (from {stats.BOOTSTRAP_MIN_SEEDS} seeds).",
        "",
        markdown_table(tables.finals),
        *_ablation_lines(tables.ablations, figure_files, root),
    ]
    for (profile, experiment), rows in summary.groupby(["profile", "experiment"], sort=False):
        lines += ["", f"## {experiment} ({profile})", ""]
        for r in rows.itertuples(index=False):
            lines += _comparison_lines(r)
        for kind in ("curves", "adapt_steps", "per_class"):
            path = figure_files.get((profile, experiment, kind))
            if path is not None:
                alt = f"{experiment} ({profile}): {FIGURE_CAPTIONS[kind][0]}"
                lines += ["", f"![{alt}]({path.relative_to(root).as_posix()})", "", FIGURE_CAPTIONS[kind][1]]
    return "\n".join(lines) + "\n"


def write_report(
    results: Path,
    tables: ReportTables,
    figures: Mapping[tuple[str, str, str], plots.Figure],
) -> Path:
    """Write ``summary.csv``, the aggregate tables, ``plots/*.png`` and ``REPORT.md``, each atomically, and
    remove the figures an earlier report drew for runs no longer there; returns the path of REPORT.md."""
    results = Path(results)
    for name, table in (
        ("summary", tables.summary),
        ("final_metrics", tables.finals),
        ("curves", tables.curves),
        ("runs", tables.runs),
        ("provenance", tables.provenance),
        ("ablations", tables.ablations),
    ):
        files.write_text(results / f"{name}.csv", table.to_csv(index=False))
    figure_files = {
        key: plots.save(fig, results / "plots" / f"{key[0]}_{key[1]}_{key[2]}.png")
        for key, fig in figures.items()
    }
    written = set(figure_files.values())
    for stale in (results / "plots").glob("*.png"):  # figures of runs no longer in the report
        if stale not in written and stale.stem.endswith(FIGURE_KINDS):
            stale.unlink()
    path = results / REPORT_FILE
    files.write_text(path, render_markdown(tables, figure_files, results))
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

    Raises ``bench.report.runs.RunFolderError`` for a missing or corrupt run folder and
    ``bench.report.published.PublishedDataError`` for bad published data.
    """
    runs = load_runs(results)
    published = pub.load_published(published_dir)
    tables = build_tables(runs, published, comparisons, ci_seed, n_resamples)
    figures = make_figures(tables, published, comparisons, context)
    write_report(results, tables, figures)
    return tables.summary
