"""The report's figures read on their own (issue 17, item 6): axis labels and titles in words, pre-adaptation
told apart from post-adaptation, legends outside the axes, legend entries only for what is drawn, error bars
that say what they are, zero bars that stay visible, markers where points are few, and deterministic PNGs.
Each test draws a figure from a small table and inspects its Axes."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection

from bench import run_format as rf
from bench.report import plots
from bench.report import published as pub
from bench.report.comparisons import COMPARISONS, CONTEXT
from bench.report.generate import adapt_references, figure_inputs

HCD = "maml_trpo_half_cheetah_dir"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "record"
ML1 = "maml_trpo_metaworld_ml1_push"


@pytest.fixture(scope="module")
def published() -> pd.DataFrame:
    return pub.load_published()


def ours_table(panel: str, points: int = 3, stages=("post", "pre"), x_end: float = 3.0) -> pd.DataFrame:
    x = np.linspace(x_end / points, x_end, points)
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "panel": panel,
                    "line": f"ours, {stage}-adaptation",
                    "stage": stage,
                    rf.TOTAL_ENV_STEPS: x,
                    "mean": 0.0,  # post and pre coincide, as for an untrained policy
                    "ci_low": 0.0,
                    "ci_high": 0.0,
                }
            )
            for stage in stages
        ],
        ignore_index=True,
    )


def legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [] if legend is None else [t.get_text().replace("\n", " ") for t in legend.get_texts()]


def line(ax, label: str):
    (found,) = [artist for artist in ax.get_lines() if artist.get_label() == label]
    return found


def assert_legend_outside(fig, ax) -> None:
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert not legend.overlaps(ax.get_window_extent()), "the legend covers the axes"


def test_curves_axes_and_titles_are_words_not_metric_keys():
    fig = plots.curves_figure(
        pd.concat([ours_table(rf.TEST_SUCCESS), ours_table(rf.RETURN, stages=("post",))]),
        pd.DataFrame(columns=["panel", "label", "x", "y"]),
        "test",
    )
    both, post_only = fig.axes
    assert both.get_ylabel() == "success rate, meta-test tasks"
    assert post_only.get_ylabel() == "return per episode, meta-train tasks"
    assert both.get_title() == "meta-test success rate: post- and pre-adaptation"
    assert post_only.get_title() == "meta-train return: post-adaptation"
    for ax in fig.axes:
        assert "/" not in ax.get_xlabel() + ax.get_ylabel() + ax.get_title()
        assert ax.get_xlabel().startswith("env steps")


def test_pre_adaptation_is_dashed_with_hollow_markers_and_post_solid():
    (ax,) = plots.curves_figure(
        ours_table(rf.RETURN), pd.DataFrame(columns=["panel", "label", "x", "y"]), "t"
    ).axes
    post, pre = line(ax, "ours, post-adaptation"), line(ax, "ours, pre-adaptation")
    assert post.get_linestyle() == "-" and pre.get_linestyle() == "--"
    assert post.get_marker() != pre.get_marker() and pre.get_markerfacecolor() == "none"
    assert post.get_color() != pre.get_color()
    assert legend_texts(ax) == ["ours, post-adaptation", "ours, pre-adaptation"]


def test_lines_with_few_points_get_markers_and_long_ones_do_not():
    empty = pd.DataFrame(columns=["panel", "label", "x", "y"])
    (few,) = plots.curves_figure(ours_table(rf.RETURN, points=2), empty, "smoke").axes
    (many,) = plots.curves_figure(ours_table(rf.RETURN, points=plots.FEW_POINTS + 1), empty, "full").axes
    assert all(
        line(few, f"ours, {s}-adaptation").get_marker() not in (None, "None", "") for s in ("post", "pre")
    )
    assert all(
        line(many, f"ours, {s}-adaptation").get_marker() in (None, "None", "") for s in ("post", "pre")
    )


def test_a_reference_with_nothing_in_our_x_range_has_no_legend_entry_and_a_note():
    refs = pd.DataFrame(
        {
            "panel": rf.RETURN,
            "label": ["beyond"] * 2 + ["no value"] * 2 + ["crossing"] * 2 + ["level"],
            "x": [10.0, 20.0, 1.0, 2.0, 1.0, 30.0, np.nan],
            "y": [5.0, 6.0, np.nan, np.nan, 1.0, 30.0, 2.0],
        }
    )
    (ax,) = plots.curves_figure(ours_table(rf.RETURN), refs, "t").axes
    assert legend_texts(ax) == ["ours, post-adaptation", "ours, pre-adaptation", "crossing", "level"]
    assert {a.get_label() for a in ax.get_lines()} >= {"crossing", "level"}
    assert not {"beyond", "no value"} & {a.get_label() for a in ax.get_lines()}
    (note,) = [t.get_text() for t in ax.texts if t.get_text().startswith("Not drawn")]
    assert "beyond: starts at 10 env steps, beyond our runs" in note and "no value: no value" in note
    # a curve crossing our x range's end is cut there, so that y limits follow what is drawn
    crossing = line(ax, "crossing")
    assert max(crossing.get_xdata()) == pytest.approx(ax.get_xlim()[1])
    assert ax.get_ylim()[1] < 30.0


def test_legends_sit_outside_the_axes():
    refs = pd.DataFrame(
        {"panel": rf.RETURN, "label": ["level"], "x": [np.nan], "y": [1.0], "low": 0, "high": 2}
    )
    fig = plots.curves_figure(ours_table(rf.RETURN), refs, "t")
    assert_legend_outside(fig, fig.axes[0])
    adapt = pd.DataFrame({"k": [0, 1], "mean": [0.0, 1.0], "ci_low": [-1.0, 0.0], "ci_high": [1.0, 2.0]})
    fig = plots.adapt_steps_figure(adapt, pd.DataFrame({"label": ["a"], "x": [1.0], "y": [1.0]}), "t")
    assert_legend_outside(fig, fig.axes[0])
    fig = plots.per_class_figure(per_class_table(), "t")
    assert_legend_outside(fig, fig.axes[0])
    fig = plots.ablation_figure(ablation_table(2), "t")
    assert_legend_outside(fig, fig.axes[0])


def per_class_table() -> pd.DataFrame:
    rows = [
        ("door-close-v3", "final", 3, 0.5, 0.2, 0.8),
        ("door-close-v3", "max over training", 3, 1.0, 1.0, 1.0),
        ("shelf-place-v3", "final", 1, 0.0, np.nan, np.nan),
        ("shelf-place-v3", "max over training", 1, 0.0, np.nan, np.nan),
    ]
    return pd.DataFrame(rows, columns=["class", "statistic", "n_seeds", "mean", "ci_low", "ci_high"])


def test_per_class_error_bars_say_what_they_are_and_zero_bars_stay_visible():
    (ax,) = plots.per_class_figure(per_class_table(), "t").axes
    assert legend_texts(ax) == [
        plots.STATISTIC_WORDS["final"],
        "maximum over training",
        "95 % t-CI across seeds (none with 1 seed)",
    ]
    # a thick tick at every bar's value, the zeros included, above the axes' lower edge
    ticks = [c for c in ax.collections if isinstance(c, LineCollection) and c.get_gid() == "value"]
    values = sorted(float(segment[0][1]) for c in ticks for segment in c.get_segments())
    assert values == [0.0, 0.0, 0.5, 1.0]
    assert ax.get_ylim()[0] < 0.0
    printed = sorted(t.get_text() for t in ax.texts)
    assert printed == ["0.00", "0.00", "0.50", "1.00"]
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "door-close-v3\n(3 seeds)",
        "shelf-place-v3\n(1 seed)",
    ]
    assert ax.get_xlabel() == "meta-test class" and "success rate" in ax.get_ylabel()


def ablation_table(epochs: int) -> pd.DataFrame:
    return pd.concat(
        [
            pd.DataFrame(
                {"line": name, rf.EPOCH: np.arange(epochs), "mean": 1.0, "ci_low": 0.0, "ci_high": 2.0}
            )
            for name in ("fixed (ours)", "first-order MAML")
        ],
        ignore_index=True,
    )


def test_ablation_figure_has_whole_epochs_and_tells_coinciding_lines_apart():
    (ax,) = plots.ablation_figure(ablation_table(2), "t").axes
    ax.figure.canvas.draw()
    assert all(float(t).is_integer() for t in ax.get_xticks())
    fixed, ablated = line(ax, "fixed (ours)"), line(ax, "first-order MAML")
    assert fixed.get_marker() != ablated.get_marker() and fixed.get_linestyle() != ablated.get_linestyle()
    assert ax.get_legend().get_title().get_text() == "mean, 95 % t-CI across seeds (shaded)"
    assert "/" not in ax.get_ylabel()


def test_figure_inputs_mark_stages_and_clip_a_floor_to_the_metrics_range(tmp_path, published):
    curves = pd.DataFrame(
        {
            "metric": [rf.TEST_SUCCESS, rf.TEST_PRE_SUCCESS],
            rf.EPOCH: [0, 0],
            rf.TOTAL_ENV_STEPS: [1000.0, 1000.0],
            "n_seeds": 3,
            "mean": 0.0,
            "ci_low": 0.0,
            "ci_high": 0.0,
        }
    )
    ours, refs = figure_inputs(curves, COMPARISONS[ML1], published)
    test = ours[ours["panel"] == rf.TEST_SUCCESS].set_index("stage")["line"]
    assert test.to_dict() == {
        "post": "ours, post-adaptation (mean, 95 % t-CI across seeds)",
        "pre": "ours, pre-adaptation (mean, 95 % t-CI across seeds)",
    }
    floor = refs[refs["panel"] == rf.TEST_SUCCESS]
    assert (floor["low"] >= 0.0).all() and (floor["high"] <= 1.0).all()  # garage's floor minus 0.1 stops at 0
    assert floor["label"].iloc[0].endswith("(floor; shaded: verdict floor, 0.1 below)")


def test_adapt_references_say_which_k_is_compared_and_which_curves_are_context(published):
    refs = adapt_references(COMPARISONS[HCD], CONTEXT[HCD], published)
    compared = refs[refs["low"].notna()]
    assert compared["x"].tolist() == [1.0] and (compared["high"] - compared["low"]).tolist() == [80.0]
    assert compared["label"].iloc[0].endswith("(compared at k=1: verdict band ±40)")
    ppo = adapt_references(
        COMPARISONS["maml_ppo_half_cheetah_dir"], CONTEXT["maml_ppo_half_cheetah_dir"], published
    )
    assert "MAML-TRPO, not MAML-PPO" in ppo["label"].iloc[0] and ppo["low"].isna().all()
    assert all("context, no verdict" in label for label in ppo["label"].unique())


def test_a_figure_saves_to_the_same_bytes_twice():
    def png() -> bytes:
        refs = pd.DataFrame({"panel": rf.RETURN, "label": ["a", "a"], "x": [1.0, 2.0], "y": [0.5, 1.0]})
        buffer = io.BytesIO()
        plots.curves_figure(ours_table(rf.RETURN), refs, "t").savefig(buffer, format="png", dpi=60)
        return buffer.getvalue()

    assert png() == png()


def test_adapt_steps_axes_are_words_and_mention_scaling_only_with_references():
    ours = pd.DataFrame({"k": [0, 1], "mean": [0.0, 1.0], "ci_low": [-1.0, 0.0], "ci_high": [1.0, 2.0]})
    (alone,) = plots.adapt_steps_figure(ours, pd.DataFrame(columns=["label", "x", "y"]), "t").axes
    (beside,) = plots.adapt_steps_figure(
        ours, pd.DataFrame({"label": ["a"], "x": [1.0], "y": [1.0]}), "t"
    ).axes
    assert alone.get_ylabel() == "return per episode, meta-test tasks"
    assert beside.get_ylabel().endswith("(references scaled to our episode length)")
    assert alone.get_xlabel().startswith("adaptation steps k")


def test_every_figure_in_the_report_has_a_caption_under_it(tmp_path):
    from bench.report.generate import FIGURE_CAPTIONS, build_tables, render_markdown
    from bench.report.runs import load_runs

    shutil.copytree(FIXTURE / "runs", tmp_path / "runs")
    tables = build_tables(load_runs(tmp_path), pub.load_published(), n_resamples=50)
    kinds = [
        (p, e, kind)
        for p, e in tables.summary[["profile", "experiment"]].drop_duplicates().values
        for kind in ("curves", "adapt_steps", "per_class")
    ]
    files = {key: tmp_path / "plots" / f"{'_'.join(key)}.png" for key in kinds}
    files[("smoke", HCD, "ablations")] = tmp_path / "plots" / "ablations.png"
    lines = render_markdown(tables, files, tmp_path).splitlines()
    images = [i for i, text in enumerate(lines) if text.startswith("![")]
    assert len(images) == len(files)
    for i in images:
        kind = next(k for k in FIGURE_CAPTIONS if lines[i].endswith(f"{k}.png)"))
        assert lines[i + 1] == "" and lines[i + 2] == FIGURE_CAPTIONS[kind][1]
        assert "/" not in lines[i].split("](")[0]  # alt text in words
