"""Figures of the report, drawn on plain matplotlib ``Figure`` objects (Agg canvas, no pyplot state) in
seaborn's style. Each function takes tidy tables and returns the figure, so a test can inspect its Axes;
``save`` writes it.

What every figure keeps to: axis labels in words, never a raw ``progress.csv`` key; legends outside the
axes (below them, or above a bar chart), so that no band is hidden; a legend entry only for what is drawn
(a reference with nothing to draw inside our x range is named, with why, in a note under the legend); our
pre-adaptation line dashed with hollow markers, distinguishable from the solid post-adaptation line even
where the two coincide; markers on every line with few points (smoke runs); shaded bands and error bars
said to be 95 % t-CIs across seeds, or the verdict's band.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import ScaledTranslation

from bench import files
from bench import run_format as rf
from bench.report import stats

STYLE = "whitegrid"
OURS_PALETTE = "deep"
REFERENCE_COLORS = ("0.25", "tab:brown", "tab:purple", "tab:olive", "tab:pink", "tab:cyan", "0.55")
ABLATION_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
FEW_POINTS = 30
"""A line with at most this many points gets a marker at each (a smoke run's two epochs are otherwise two
indistinguishable segments)."""
CI_WORDS = "mean, 95 % t-CI across seeds"
METRIC_WORDS: dict[str, tuple[str, str, str]] = {
    rf.RETURN: ("meta-train", "return", "post-adaptation"),
    rf.PRE_RETURN: ("meta-train", "return", "pre-adaptation"),
    rf.SUCCESS: ("meta-train", "success rate", "post-adaptation"),
    rf.PRE_SUCCESS: ("meta-train", "success rate", "pre-adaptation"),
    rf.TEST_RETURN: ("meta-test", "return", "post-adaptation"),
    rf.TEST_PRE_RETURN: ("meta-test", "return", "pre-adaptation"),
    rf.TEST_SUCCESS: ("meta-test", "success rate", "post-adaptation"),
    rf.TEST_PRE_SUCCESS: ("meta-test", "success rate", "pre-adaptation"),
}
"""Our metrics in words: (tasks, quantity, adaptation stage)."""
QUANTITY_LABELS = {"return": "return per episode", "success rate": "success rate"}
STATISTIC_WORDS = {
    "final": f"final (mean of each seed's last {stats.FINAL_WINDOW} epochs)",
    "max over training": "maximum over training",
}
STAGE_STYLE = {
    "post": {"linestyle": "-", "marker": "o", "markersize": 4.5},
    "pre": {"linestyle": "--", "marker": "s", "markersize": 6, "markerfacecolor": "none"},
}
"""Our post-adaptation line solid with filled circles, pre-adaptation dashed with hollow squares: where the
two coincide (an untrained policy) both stay visible."""
LEGEND_GAP_PT = 36.0
"""How far below the axes' bottom edge a legend starts: clear of the tick labels and the x label."""
LEGEND_WIDTH = 72
"""Characters per line of a legend label (longer ones are folded): a legend stays under its panel."""


def _figure(n_panels: int, width: float = 6.4, height: float = 4.4) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    FigureCanvasAgg(fig)
    with sns.axes_style(STYLE):
        axes = [fig.add_subplot(1, n_panels, i + 1) for i in range(n_panels)]
    return fig, axes


def _reference_color(index: int) -> str:
    return REFERENCE_COLORS[index % len(REFERENCE_COLORS)]


def _legend_below(ax, ncol: int = 1, not_drawn: list[str] | None = None, title: str | None = None) -> None:
    """The Axes' legend under its x label (a fixed gap in points, whatever the Axes' size), and under it a
    note naming the references that have nothing to draw, each with why."""
    handles, labels = ax.get_legend_handles_labels()
    below: object = "axes fraction"
    gap = -LEGEND_GAP_PT
    if handles:
        anchor = ax.transAxes + ScaledTranslation(0, -LEGEND_GAP_PT / 72, ax.figure.dpi_scale_trans)
        below = ax.legend(
            handles,
            [_wrap(label) for label in labels],
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            bbox_transform=anchor,
            ncol=ncol,
            fontsize=7.5,
            title=title,
            title_fontsize=7.5,
            frameon=False,
        )
        gap = -2.0
    if not_drawn:
        text = "\n".join(["Not drawn:", *map(_wrap, not_drawn)])
        ax.annotate(
            text,
            (0.5, 0.0),
            xycoords=below,
            xytext=(0, gap),
            textcoords="offset points",
            ha="center",
            va="top",
            fontsize=7,
            color="0.35",
        )


def _wrap(text: str) -> str:
    """A legend label folded onto lines of at most :data:`LEGEND_WIDTH` characters."""
    return "\n".join(textwrap.wrap(text, LEGEND_WIDTH, break_on_hyphens=False)) or text


def panel_title(panel: str, stages: list[str]) -> str:
    """A panel's title in words, naming every adaptation stage it draws (e.g. ``meta-test success rate:
    post- and pre-adaptation``); a panel key outside :data:`METRIC_WORDS` is its own title."""
    if panel not in METRIC_WORDS:
        return panel
    tasks, quantity, stage = METRIC_WORDS[panel]
    if "pre" in stages and "post" in stages:
        stage = "post- and pre-adaptation"
    return f"{tasks} {quantity}: {stage}"


def y_label(panel: str) -> str:
    """A panel's y axis in words: what is measured, on which tasks."""
    if panel not in METRIC_WORDS:
        return panel
    tasks, quantity, _ = METRIC_WORDS[panel]
    return f"{QUANTITY_LABELS[quantity]}, {tasks} tasks"


def _visible(rows: pd.DataFrame, x_max: float) -> tuple[pd.DataFrame, str]:
    """The part of a reference curve inside ``[.., x_max]``, cut at ``x_max`` by linear interpolation (so
    that y limits follow what is drawn), and why nothing is drawn when nothing is (else ``""``)."""
    rows = rows[np.isfinite(rows["x"].to_numpy(float)) & np.isfinite(rows["y"].to_numpy(float))]
    rows = rows.sort_values("x", kind="stable")
    if rows.empty:
        return rows, "no value"
    if float(rows["x"].min()) > x_max:
        start = mpl.ticker.EngFormatter(sep="").format_data(float(rows["x"].min()))
        return rows.iloc[:0], f"starts at {start} env steps, beyond our runs"
    inside = rows[rows["x"] <= x_max]
    if len(inside) < len(rows):
        edge = {"x": x_max}
        for column in ("y", "low", "high"):
            if column in rows:
                edge[column] = float(np.interp(x_max, rows["x"], rows[column]))
        inside = pd.concat([inside, pd.DataFrame([edge])], ignore_index=True)
    return inside, ""


def _band_columns(rows: pd.DataFrame) -> bool:
    return {"low", "high"} <= set(rows.columns)


def _band(rows: pd.DataFrame) -> bool:
    return _band_columns(rows) and bool(rows[["low", "high"]].notna().all().all())


def curves_figure(ours: pd.DataFrame, references: pd.DataFrame, title: str) -> Figure:
    """Our curves (mean and CI band across seeds) over env steps with published curves and levels, one
    panel per compared metric; the x axis spans our runs (a longer published curve is cut at its edge).

    ``ours``: columns ``panel, line, TotalEnvSteps, mean, ci_low, ci_high`` and optionally ``stage``
    (``post`` or ``pre``: solid or dashed; ``post`` where absent). ``line`` is the legend label; a panel
    may hold several of our lines (post- and pre-adaptation), coloured by label alike in every panel.
    ``references``: columns ``panel, label, x, y`` (and optionally ``low, high``: the verdict's band,
    shaded) in our units; rows with x = NaN are a single published number, drawn as a horizontal line. A
    reference with nothing to draw in our x range (it starts beyond our runs' end, or has no value) gets no
    legend entry: a note under the legend names it. Every panel named in either table gets an Axes, in
    order of first appearance; its title names the adaptation stages it draws.
    """
    panels = list(dict.fromkeys([*ours["panel"], *references["panel"]])) or ["(no data)"]
    fig, axes = _figure(len(panels))
    stages = ours["stage"] if "stage" in ours else pd.Series("post", index=ours.index)
    ours = ours.assign(stage=stages)
    lines = list(dict.fromkeys(ours["line"]))
    palette = dict(zip(lines, sns.color_palette(OURS_PALETTE, max(len(lines), 1)), strict=False))
    for ax, panel in zip(axes, panels, strict=True):
        mine = ours[ours["panel"] == panel]
        if mine.empty:
            ax.text(0.5, 0.5, "no data in our runs", ha="center", va="center", transform=ax.transAxes)
            x_max = math.inf
        else:
            x_max = 1.05 * float(mine[rf.TOTAL_ENV_STEPS].max())
        for line, rows in mine.groupby("line", sort=False):
            style = dict(STAGE_STYLE[str(rows["stage"].iloc[0])])
            if len(rows) > FEW_POINTS:
                style["marker"] = None
            x = rows[rf.TOTAL_ENV_STEPS]
            ax.plot(x, rows["mean"], color=palette[line], linewidth=1.6, label=line, **style)
            ax.fill_between(x, rows["ci_low"], rows["ci_high"], color=palette[line], alpha=0.2, linewidth=0)
        refs = references[references["panel"] == panel]
        not_drawn = []
        for index, (label, rows) in enumerate(refs.groupby("label", sort=False)):
            color = _reference_color(index)
            band = _band(rows)
            if rows["x"].isna().all():
                level = rows.iloc[:1]
                if not np.isfinite(float(level["y"].iloc[0])):
                    not_drawn.append(f"{label}: no value")
                    continue
                ax.axhline(float(level["y"].iloc[0]), color=color, linestyle=":", linewidth=1.8, label=label)
                if band:
                    ax.axhspan(
                        float(level["low"].iloc[0]),
                        float(level["high"].iloc[0]),
                        color=color,
                        alpha=0.1,
                        linewidth=0,
                    )
                continue
            drawn, why = _visible(rows, x_max)
            if why:
                not_drawn.append(f"{label}: {why}")
                continue
            ax.plot(
                drawn["x"],
                drawn["y"],
                color=color,
                linestyle="-.",
                marker="D",
                markersize=3.5,
                linewidth=1.4,
                label=label,
            )
            if band:
                ax.fill_between(drawn["x"], drawn["low"], drawn["high"], color=color, alpha=0.1, linewidth=0)
        if np.isfinite(x_max):
            ax.set_xlim(0, x_max)
        ax.set_title(panel_title(panel, list(mine["stage"])), fontsize=10)
        ax.set_xlabel("env steps (pre- and post-adaptation samples)")
        ax.set_ylabel(y_label(panel))
        ax.xaxis.set_major_formatter(mpl.ticker.EngFormatter(sep=""))
        _legend_below(ax, not_drawn=not_drawn)
    fig.suptitle(title, fontsize=11)
    return fig


def adapt_steps_figure(ours: pd.DataFrame, references: pd.DataFrame, title: str) -> Figure:
    """Meta-test return after k adaptation steps: ours (mean ± CI across seeds) next to published values.

    ``ours``: columns ``k, mean, ci_low, ci_high``. ``references``: columns ``label, x, y`` in our units
    (x = k; x = NaN for a level without k, such as Finn's oracle) and optionally ``low, high``: the
    verdict's band at the compared k, drawn as an error bar. A reference with no value gets no legend
    entry (a note names it).
    """
    fig, (ax,) = _figure(1, height=5.0)
    if ours.empty:
        ax.text(
            0.5,
            0.5,
            "no meta-test return after k adaptation steps in our runs",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    else:
        color = sns.color_palette(OURS_PALETTE, 1)[0]
        ax.plot(ours["k"], ours["mean"], marker="o", color=color, label=f"ours ({CI_WORDS})")
        ax.fill_between(ours["k"], ours["ci_low"], ours["ci_high"], color=color, alpha=0.2, linewidth=0)
    not_drawn = []
    for index, (label, rows) in enumerate(references.groupby("label", sort=False)):
        color = _reference_color(index)
        rows = rows[np.isfinite(rows["y"].to_numpy(float))]
        if rows.empty:
            not_drawn.append(f"{label}: no value")
        elif rows["x"].isna().all():
            ax.axhline(float(rows["y"].iloc[0]), color=color, linestyle=":", label=label)
        else:
            ax.plot(
                rows["x"], rows["y"], color=color, linestyle="-.", marker="D", markersize=3.5, label=label
            )
            banded = (
                rows[rows["low"].notna() & rows["high"].notna()] if _band_columns(rows) else rows.iloc[:0]
            )
            if not banded.empty:
                y = banded["y"].to_numpy(float)
                ax.errorbar(
                    banded["x"].to_numpy(float),
                    y,
                    yerr=[y - banded["low"].to_numpy(float), banded["high"].to_numpy(float) - y],
                    fmt="none",
                    ecolor=color,
                    capsize=5,
                    elinewidth=1.2,
                )
    ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("adaptation steps k at meta-test (gradient steps on each test task)")
    scaled = "\n(references scaled to our episode length)" if not references.empty else ""
    ax.set_ylabel(f"return per episode, meta-test tasks{scaled}")
    _legend_below(ax, not_drawn=not_drawn)
    fig.suptitle(title, fontsize=11)
    return fig


def _class_label(name: str, seeds: float | None) -> str:
    if seeds is None or not np.isfinite(seeds):
        return name
    return f"{name}\n({int(seeds)} seed{'s' if int(seeds) != 1 else ''})"


def per_class_figure(table: pd.DataFrame, title: str) -> Figure:
    """Meta-test success rate per test class: one bar per (class, statistic), its 95 % t-CI across seeds as
    an error bar, its value printed above it, and a thick tick at the value so that a rate of 0 still shows.

    ``table``: columns ``class, statistic, mean, ci_low, ci_high`` and optionally ``n_seeds`` (shown under
    each class: classes are drawn at random per meta-test, so seeds differ per class). ``statistic`` e.g.
    ``final`` and ``max over training`` (legend words: :data:`STATISTIC_WORDS`).
    """
    classes = list(dict.fromkeys(table["class"]))
    fig, (ax,) = _figure(1, width=max(6.4, 1.1 * len(classes) + 2), height=4.8)
    if table.empty:
        ax.text(0.5, 0.5, "no per-class meta-test values", ha="center", va="center", transform=ax.transAxes)
    levels = list(dict.fromkeys(table["statistic"]))
    colors = sns.color_palette(OURS_PALETTE, max(len(levels), 1))
    width = 0.8 / max(len(levels), 1)
    for index, level in enumerate(levels):
        rows = table[table["statistic"] == level].set_index("class").reindex(classes)
        centres = np.arange(len(classes)) + (index - (len(levels) - 1) / 2) * width
        mean = rows["mean"].to_numpy(float)
        ax.bar(
            centres,
            np.nan_to_num(mean),
            width=width * 0.95,
            color=colors[index],
            alpha=0.85,
            label=STATISTIC_WORDS.get(level, level),
        )
        ax.hlines(
            mean,
            centres - width * 0.45,
            centres + width * 0.45,
            colors=[colors[index]],
            linewidth=3,
            gid="value",
        )
        low, high = rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float)
        ax.errorbar(
            centres,
            mean,
            yerr=np.vstack([mean - low, high - mean]),
            fmt="none",
            ecolor="0.2",
            capsize=3,
            label="95 % t-CI across seeds (none with 1 seed)" if index == 0 else None,
        )
        for x, value, top in zip(centres, mean, np.fmax(mean, high), strict=True):
            if np.isfinite(value):
                ax.annotate(
                    f"{value:.2f}",
                    (x, top),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    seeds = table.groupby("class", sort=False)["n_seeds"].max() if "n_seeds" in table else None
    ax.set_xticks(np.arange(len(classes)))
    ax.set_xticklabels(
        [_class_label(c, None if seeds is None else seeds.get(c)) for c in classes], rotation=30, ha="right"
    )
    ax.set_xlabel("meta-test class")
    ax.set_ylabel("meta-test success rate (fraction of episodes)")
    ax.set_ylim(-0.04, 1.12)
    ax.grid(False, axis="x")
    handles, labels = ax.get_legend_handles_labels()
    if handles:  # the bars' statistics first, then what the error bars are
        order = sorted(range(len(labels)), key=lambda i: labels[i].startswith("95 %"))
        ax.legend(
            [handles[i] for i in order],
            [labels[i] for i in order],
            loc="lower left",
            bbox_to_anchor=(0.0, 1.0),
            fontsize=7.5,
            frameon=False,
        )
    fig.suptitle(title, fontsize=11)
    return fig


def ablation_figure(ours: pd.DataFrame, title: str) -> Figure:
    """The fixed runs' post-update return next to each ablation's, over epochs (mean and 95 % t-CI band
    across seeds). ``ours``: columns ``line, Epoch, mean, ci_low, ci_high``, the fixed line first (solid;
    ablations dash-dotted, each with its own marker where points are few)."""
    fig, (ax,) = _figure(1, width=7.6, height=4.8)
    lines = list(dict.fromkeys(ours["line"]))
    palette = dict(zip(lines, sns.color_palette(OURS_PALETTE, max(len(lines), 1)), strict=False))
    for index, line in enumerate(lines):
        rows = ours[ours["line"] == line]
        marker = ABLATION_MARKERS[index % len(ABLATION_MARKERS)] if len(rows) <= FEW_POINTS else None
        ax.plot(
            rows[rf.EPOCH],
            rows["mean"],
            color=palette[line],
            label=line,
            linewidth=1.6,
            marker=marker,
            markersize=5 + 1.5 * (index == 0),
            linestyle="-" if index == 0 else "-.",
            markerfacecolor="none" if index else palette[line],
        )
        ax.fill_between(
            rows[rf.EPOCH], rows["ci_low"], rows["ci_high"], color=palette[line], alpha=0.15, linewidth=0
        )
    if ours.empty:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch (meta-update)")
    ax.set_ylabel("return per episode, meta-train\ntasks, post-adaptation")
    _legend_below(ax, ncol=min(3, max(len(lines), 1)), title=f"{CI_WORDS} (shaded)")
    fig.suptitle(title, fontsize=11)
    return fig


def save(fig: Figure, path: Path) -> Path:
    """Write the figure as PNG, atomically (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_with(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    return path
