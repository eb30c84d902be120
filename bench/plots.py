"""Figures of the report, drawn with seaborn on plain matplotlib ``Figure`` objects (Agg canvas, no pyplot
state). Each function takes tidy tables and returns the figure, so a test can inspect its Axes; ``save``
writes it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from bench import files
from bench import run_format as rf

STYLE = "whitegrid"
OURS_PALETTE = "deep"
REFERENCE_COLORS = ("0.25", "tab:brown", "tab:purple", "tab:olive", "tab:pink", "tab:cyan", "0.55")
METRIC_TITLES = {
    rf.RETURN: "meta-train return, post-adaptation",
    rf.PRE_RETURN: "meta-train return, pre-adaptation",
    rf.SUCCESS: "meta-train success rate, post-adaptation",
    rf.PRE_SUCCESS: "meta-train success rate, pre-adaptation",
    rf.TEST_RETURN: "meta-test return, post-adaptation",
    rf.TEST_PRE_RETURN: "meta-test return, pre-adaptation",
    rf.TEST_SUCCESS: "meta-test success rate, post-adaptation",
    rf.TEST_PRE_SUCCESS: "meta-test success rate, pre-adaptation",
}


def _figure(n_panels: int, width: float = 6.4, height: float = 4.4) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    FigureCanvasAgg(fig)
    with sns.axes_style(STYLE):
        axes = [fig.add_subplot(1, n_panels, i + 1) for i in range(n_panels)]
    return fig, axes


def _reference_color(index: int) -> str:
    return REFERENCE_COLORS[index % len(REFERENCE_COLORS)]


def curves_figure(ours: pd.DataFrame, references: pd.DataFrame, title: str) -> Figure:
    """Our curves (mean and CI band across seeds) over env steps with published curves and levels, one
    panel per compared metric; the x axis spans our runs (a longer published curve is cut at its edge).

    ``ours``: columns ``panel, line, TotalEnvSteps, mean, ci_low, ci_high`` (``line`` = a legend label;
    a panel may hold several of our lines, e.g. post- and pre-adaptation). ``references``: columns
    ``panel, label, x, y`` (and optionally ``low, high``: the verdict's band, shaded) in our units; rows
    with x = NaN are a single published number, drawn as a horizontal line. A reference that starts beyond
    our runs' end says so in its label. Every panel named in either table gets an Axes, in order of first
    appearance.
    """
    panels = list(dict.fromkeys([*ours["panel"], *references["panel"]])) or ["(no data)"]
    fig, axes = _figure(len(panels))
    lines = list(dict.fromkeys(ours["line"]))
    palette = dict(zip(lines, sns.color_palette(OURS_PALETTE, max(len(lines), 1)), strict=False))
    for ax, panel in zip(axes, panels, strict=True):
        mine = ours[ours["panel"] == panel]
        if mine.empty:
            ax.text(0.5, 0.5, "no data in our runs", ha="center", va="center", transform=ax.transAxes)
        else:
            sns.lineplot(
                data=mine, x=rf.TOTAL_ENV_STEPS, y="mean", hue="line", palette=palette, errorbar=None, ax=ax
            )
            for line, rows in mine.groupby("line", sort=False):
                ax.fill_between(
                    rows[rf.TOTAL_ENV_STEPS], rows["ci_low"], rows["ci_high"], color=palette[line], alpha=0.2
                )
            ax.set_xlim(
                0, 1.05 * float(mine[rf.TOTAL_ENV_STEPS].max())
            )  # our range; references beyond it clip
        refs = references[references["panel"] == panel]
        our_end = float(mine[rf.TOTAL_ENV_STEPS].max()) if not mine.empty else np.inf
        for index, (label, rows) in enumerate(refs.groupby("label", sort=False)):
            color = _reference_color(index)
            has_band = {"low", "high"} <= set(rows.columns) and rows[["low", "high"]].notna().all().all()
            if rows["x"].isna().all():
                ax.axhline(float(rows["y"].iloc[0]), color=color, linestyle=":", linewidth=1.8, label=label)
                if has_band:
                    ax.axhspan(
                        float(rows["low"].iloc[0]), float(rows["high"].iloc[0]), color=color, alpha=0.1
                    )
                continue
            if float(rows["x"].min()) > our_end:
                label += " (beyond our x range)"
            ax.plot(rows["x"], rows["y"], color=color, linestyle="--", marker="o", markersize=4, label=label)
            if has_band:
                ax.fill_between(rows["x"], rows["low"], rows["high"], color=color, alpha=0.1)
        ax.set_title(METRIC_TITLES.get(panel, panel), fontsize=10)
        ax.set_xlabel("env steps (pre + post adaptation)")
        ax.set_ylabel(panel)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=11)
    return fig


def adapt_steps_figure(ours: pd.DataFrame, references: pd.DataFrame, title: str) -> Figure:
    """Meta-test return after k adaptation steps: ours (mean ± CI across seeds) next to published values.

    ``ours``: columns ``k, mean, ci_low, ci_high``. ``references``: columns ``label, x, y`` in our units
    (x = k; x = NaN for a level without k, such as Finn's oracle).
    """
    fig, (ax,) = _figure(1)
    if ours.empty:
        ax.text(
            0.5,
            0.5,
            "no MetaTest/AdaptStep<k> values in our runs",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    else:
        color = sns.color_palette(OURS_PALETTE, 1)[0]
        ax.plot(ours["k"], ours["mean"], marker="o", color=color, label="ours (mean, 95 % t-CI)")
        ax.fill_between(ours["k"], ours["ci_low"], ours["ci_high"], color=color, alpha=0.2)
    for index, (label, rows) in enumerate(references.groupby("label", sort=False)):
        color = _reference_color(index)
        if rows["x"].isna().all():
            ax.axhline(float(rows["y"].iloc[0]), color=color, linestyle=":", label=label)
        else:
            ax.plot(rows["x"], rows["y"], color=color, linestyle="--", marker="s", markersize=4, label=label)
    ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("adaptation steps k at meta-test")
    ax.set_ylabel("meta-test average return (references scaled to our horizon)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=11)
    return fig


def per_class_figure(table: pd.DataFrame, title: str) -> Figure:
    """Meta-test success rate per test class: one bar per (class, statistic) with its 95 % CI.

    ``table``: columns ``class, statistic, mean, ci_low, ci_high`` (``statistic`` e.g. ``final`` and
    ``max over training``).
    """
    classes = list(dict.fromkeys(table["class"]))
    fig, (ax,) = _figure(1, width=max(6.4, 0.9 * len(classes) + 2))
    if table.empty:
        ax.text(0.5, 0.5, "no per-class meta-test values", ha="center", va="center", transform=ax.transAxes)
    else:
        sns.barplot(data=table, x="class", y="mean", hue="statistic", errorbar=None, ax=ax, order=classes)
        levels = list(dict.fromkeys(table["statistic"]))
        bars = [c for c in ax.containers if isinstance(c, BarContainer)]
        for level, container in zip(levels, bars, strict=True):
            rows = table[table["statistic"] == level].set_index("class").reindex(classes)
            centres = np.array([p.get_x() + p.get_width() / 2 for p in container.patches])
            low = (rows["mean"] - rows["ci_low"]).to_numpy(float)
            high = (rows["ci_high"] - rows["mean"]).to_numpy(float)
            ax.errorbar(
                centres, rows["mean"], yerr=np.vstack([low, high]), fmt="none", ecolor="0.2", capsize=3
            )
        ax.tick_params(axis="x", labelrotation=30)
        ax.legend(fontsize=8, loc="best")
    ax.set_xlabel("meta-test class")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.05)
    fig.suptitle(title, fontsize=11)
    return fig


def ablation_figure(ours: pd.DataFrame, title: str) -> Figure:
    """The fixed runs' post-update return next to each ablation's, over epochs (mean and 95 % t-CI band
    across seeds). ``ours``: columns ``line, Epoch, mean, ci_low, ci_high``, the fixed line first."""
    fig, (ax,) = _figure(1, width=7.6, height=4.8)
    lines = list(dict.fromkeys(ours["line"]))
    palette = dict(zip(lines, sns.color_palette(OURS_PALETTE, max(len(lines), 1)), strict=False))
    for line in lines:
        rows = ours[ours["line"] == line]
        ax.plot(rows[rf.EPOCH], rows["mean"], color=palette[line], label=line, linewidth=1.6)
        ax.fill_between(rows[rf.EPOCH], rows["ci_low"], rows["ci_high"], color=palette[line], alpha=0.15)
    if ours.empty:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch (meta-update)")
    ax.set_ylabel("meta-train return, post-adaptation")
    if lines:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=min(3, len(lines)))
    fig.suptitle(title, fontsize=11)
    return fig


def save(fig: Figure, path: Path) -> Path:
    """Write the figure as PNG, atomically (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_with(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    return path
