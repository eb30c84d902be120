"""The report (``python -m bench report``) on synthetic run folders with known values: validation errors,
partial runs, verdicts at the band edges, figures, and the command line itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer
from synthetic_runs import progress, write_run, write_seeds

from bench import run_format as rf
from bench.report import plots, stats
from bench.report import published as pub
from bench.report.comparisons import Comparison
from bench.report.generate import build_tables, figure_inputs, make_figures, report
from bench.report.runs import RunFolderError, load_runs
from bench.report.verdicts import (
    ABOVE,
    AT_OR_ABOVE_FLOOR,
    BELOW,
    BELOW_FLOOR,
    BUDGET_SHORT,
    LEARNED,
    MIN_SEEDS,
    NO_DATA,
    NOT_LEARNED,
    OFF_PROTOCOL,
    REPRODUCED,
    TOO_FEW_SEEDS,
    UNCLEAR,
    position,
)

REPO = Path(__file__).resolve().parents[1]
FAST = 200  # bootstrap resamples in tests
ML10 = "maml_trpo_metaworld_ml10"
HCD = "maml_trpo_half_cheetah_dir"


@pytest.fixture(scope="module")
def published() -> pd.DataFrame:
    return pub.load_published()


def tables_for(results: Path, published: pd.DataFrame, comparisons=None):
    kwargs = {} if comparisons is None else {"comparisons": comparisons}
    return build_tables(load_runs(results), published, n_resamples=FAST, **kwargs)


def row(tables, comparison: str) -> pd.Series:
    return tables.summary.set_index("comparison").loc[comparison]


# --- validation -----------------------------------------------------------------------------------------
def good_run(results: Path, seed: int = 0) -> Path:
    return write_run(results, HCD, seed, progress(5, 1000.0, {rf.RETURN: 1.0, rf.SUCCESS: np.nan}))


def _replace_text(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


CORRUPTIONS = {
    "config is not JSON": (lambda f: (f / rf.CONFIG).write_text("{not json"), rf.CONFIG, "not valid JSON"),
    "config lacks seed": (
        lambda f: (f / rf.CONFIG).write_text(json.dumps({"experiment": HCD, "profile": "full"})),
        rf.CONFIG,
        "missing key 'seed'",
    ),
    "config disagrees with folder": (
        lambda f: _replace_text(f / rf.CONFIG, '"seed": 0', '"seed": 7'),
        rf.CONFIG,
        "folder says",
    ),
    "manifest missing": (lambda f: (f / rf.MANIFEST).unlink(), rf.MANIFEST, "file not found"),
    "manifest bad status": (
        lambda f: _replace_text(f / rf.MANIFEST, '"finished"', '"done"'),
        rf.MANIFEST,
        "status 'done'",
    ),
    "manifest epochs not int": (
        lambda f: _replace_text(f / rf.MANIFEST, '"epochs_total": 5', '"epochs_total": "5"'),
        rf.MANIFEST,
        "epochs_total",
    ),
    "manifest counts more epochs than planned": (
        lambda f: _replace_text(f / rf.MANIFEST, '"epochs_completed": 5', '"epochs_completed": 9'),
        rf.MANIFEST,
        "epochs_completed 9 not in [0, epochs_total=5]",
    ),
    "progress missing": (lambda f: (f / rf.PROGRESS).unlink(), rf.PROGRESS, "file not found"),
    "progress lacks a required column": (
        lambda f: _replace_text(f / rf.PROGRESS, rf.TOTAL_ENV_STEPS, "Steps"),
        rf.PROGRESS,
        "missing required column(s) ['TotalEnvSteps']",
    ),
    "progress has a non-numeric value": (
        lambda f: _replace_text(f / rf.PROGRESS, "3000.0,1.0", "3000.0,oops"),
        rf.PROGRESS,
        "non-numeric value 'oops' in column 'Average/AverageReturn' at line 4",
    ),
    "progress is empty": (lambda f: (f / rf.PROGRESS).write_text(""), rf.PROGRESS, "empty file"),
    "progress epochs repeat": (
        lambda f: _replace_text(f / rf.PROGRESS, "\n2.0,", "\n1.0,"),
        rf.PROGRESS,
        "must count 0, 1, 2, … one row per epoch (line 4 breaks it)",
    ),
    "progress skips an epoch": (
        lambda f: _drop_line(f / rf.PROGRESS, 3),
        rf.PROGRESS,
        "must count 0, 1, 2, … one row per epoch (line 3 breaks it)",
    ),
    "progress line torn mid-write": (
        lambda f: _cut_last_line(f / rf.PROGRESS, keep=2),
        rf.PROGRESS,
        "line 6 has 2 cells, the header 4",
    ),
    "progress line too long": (
        lambda f: _replace_text(f / rf.PROGRESS, "3000.0,1.0", "3000.0,1.0,7"),
        rf.PROGRESS,
        "line 4 has 5 cells, the header 4",
    ),
    "progress has an infinity": (
        lambda f: _replace_text(f / rf.PROGRESS, "3000.0,1.0", "3000.0,inf"),
        rf.PROGRESS,
        "infinite value in column 'Average/AverageReturn' at line 4",
    ),
    "progress is not UTF-8": (
        lambda f: (f / rf.PROGRESS).write_bytes(b"Epoch,\xff\xfe\n"),
        rf.PROGRESS,
        "not UTF-8 text",
    ),
    "progress lacks epochs the manifest counts": (
        lambda f: _drop_line(f / rf.PROGRESS, 6),
        rf.PROGRESS,
        "has 4 rows, but manifest.json says 5 epochs completed",
    ),
}


def _drop_line(path: Path, line: int) -> None:
    """Remove line ``line`` (1 = the header) of a text file."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: line - 1] + lines[line:]))


def _cut_last_line(path: Path, keep: int) -> None:
    """Cut the last line after its first ``keep`` cells, as a kill mid-write would."""
    lines = path.read_text().splitlines(keepends=True)
    lines[-1] = ",".join(lines[-1].split(",")[:keep])
    path.write_text("".join(lines))


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_run_folders_raise_an_error_naming_the_file(tmp_path, case):
    corrupt, file_name, message = CORRUPTIONS[case]
    good_run(tmp_path, seed=1)
    folder = good_run(tmp_path, seed=0)
    load_runs(tmp_path)  # valid before the corruption
    corrupt(folder)
    with pytest.raises(RunFolderError) as caught:
        load_runs(tmp_path)
    assert caught.value.path == folder / file_name
    assert message in str(caught.value) and str(folder / file_name) in str(caught.value)


def test_an_unfinished_run_keeps_its_rows_and_drops_a_torn_last_line(tmp_path):
    """A run killed mid-epoch: rows logged after its last checkpoint are kept, a torn last line is left out
    with a note; the same files in a finished run are an error."""
    table = progress(5, 1000.0, {rf.RETURN: 1.0, rf.SUCCESS: np.nan})
    folder = write_run(tmp_path, HCD, 0, table, status=rf.STATUS_RUNNING, epochs_total=10, epochs_completed=3)
    _cut_last_line(folder / rf.PROGRESS, keep=2)
    (run,) = load_runs(tmp_path)
    assert list(run.progress[rf.EPOCH]) == [0.0, 1.0, 2.0, 3.0] and run.partial
    assert any("line 6 is torn" in note for note in run.notes)
    assert any("1 epoch(s) logged after the last checkpoint" in note for note in run.notes)
    _replace_text(folder / rf.MANIFEST, '"running"', '"finished"')
    with pytest.raises(RunFolderError, match="line 6 has 2 cells"):
        load_runs(tmp_path)


def test_a_run_still_in_its_first_epoch_is_listed_not_an_error(tmp_path):
    """The trainer opens progress.csv (empty) before its first epoch ends; a report then lists the run."""
    good_run(tmp_path, seed=1)
    folder = write_run(tmp_path, HCD, 0, None, status=rf.STATUS_RUNNING, epochs_total=5)
    (folder / rf.PROGRESS).write_text("")
    runs = {r.seed: r for r in load_runs(tmp_path)}
    assert runs[0].partial and runs[0].progress.empty and "no epoch logged yet" in runs[0].notes


def test_layout_errors_name_the_path(tmp_path):
    with pytest.raises(RunFolderError, match="no runs folder"):
        load_runs(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(RunFolderError, match="no run folders"):
        load_runs(tmp_path)
    good_run(tmp_path)
    stray = tmp_path / "runs" / "full" / HCD / "seed-x"
    stray.mkdir()
    with pytest.raises(RunFolderError, match="not a seed-<k> folder") as caught:
        load_runs(tmp_path)
    assert caught.value.path == stray


def test_partial_runs_are_labelled_and_not_averaged_with_complete_ones(tmp_path, published):
    write_seeds(tmp_path, ML10, [0.3, 0.3], rf.TEST_SUCCESS, epochs=300, steps_per_epoch=200_000)
    write_run(
        tmp_path,
        ML10,
        2,
        progress(40, 200_000, {rf.RETURN: 0.0, rf.TEST_SUCCESS: 0.9}),
        epochs_total=300,
        status=rf.STATUS_RUNNING,
    )
    write_run(
        tmp_path,
        ML10,
        3,
        progress(12, 200_000, {rf.RETURN: 0.0, rf.TEST_SUCCESS: 0.9}),
        epochs_total=300,
        status=rf.STATUS_FAILED,
        error="NonFiniteError: NaN in the policy\ntraceback ...",
    )
    write_run(tmp_path, ML10, 4, None, epochs_total=300, status=rf.STATUS_RUNNING)  # just started
    tables = tables_for(tmp_path, published)
    runs = tables.runs.set_index("seed")
    assert runs["partial"].tolist() == [False, False, True, True, True]
    assert runs["used"].tolist() == [True, True, False, False, False]
    assert runs.loc[2, "partial_reason"] == "status running, stale (no live holder), 40/300 epochs"
    assert runs.loc[3, "partial_reason"] == "status failed, 12/300 epochs: NonFiniteError: NaN in the policy"
    assert "no epoch logged yet" in runs.loc[4, "notes"]
    primary = row(tables, "table1-meta-test")
    assert primary["runs_used"] == "2 complete, 3 partial not used"
    assert primary["ours_mean"] == pytest.approx(0.3) and primary["n_seeds"] == 2


def test_only_partial_runs_are_compared_and_labelled_budget_short(tmp_path, published):
    for seed in range(2):
        write_run(
            tmp_path,
            ML10,
            seed,
            progress(30, 200_000, {rf.RETURN: 0.0, rf.TEST_SUCCESS: 0.316}),
            epochs_total=300,
            status=rf.STATUS_RUNNING,
        )
    primary = row(tables_for(tmp_path, published), "table1-meta-test")
    assert primary["verdict"] == BUDGET_SHORT and primary["runs_used"] == "2 partial (no complete run)"
    assert primary["note"].startswith("only partial runs; runs end after 30/300 epochs")
    assert "there: inside the band" in primary["note"]


# --- verdicts -------------------------------------------------------------------------------------------
def test_position_includes_the_band_edges():
    assert position(1.5, 1.0, 0.5) == REPRODUCED and position(0.5, 1.0, 0.5) == REPRODUCED
    assert position(np.nextafter(1.5, 2.0), 1.0, 0.5) == ABOVE
    assert position(np.nextafter(0.5, 0.0), 1.0, 0.5) == BELOW
    assert position(np.nan, 1.0, 0.5) == ""


def _flat_reference(y: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "curve": "flat",
            "label": "flat test curve",
            "source": "tests",
            "metric": "m",
            "x": [1e5, 1e9],
            "x_unit": "env_steps",
            "y": y,
            "y_unit": "return_H100",
            "approx": False,
            "proxy": False,
            "seed": np.nan,
        }
    )


@pytest.mark.parametrize(
    "ours, expected",
    [
        (110.0, REPRODUCED),
        (110.0 + 1e-9, ABOVE),
        (90.0, REPRODUCED),
        (90.0 - 1e-9, BELOW),
        (100.0, REPRODUCED),
    ],
)
def test_verdicts_flip_at_the_band_edges(tmp_path, ours, expected):
    comparison = Comparison(
        name="flat",
        metric=rf.RETURN,
        match="env_steps",
        reference="flat",
        tolerance=10.0,
        tolerance_reason="test",
        primary=True,
    )
    write_seeds(tmp_path, HCD, [ours] * 3, rf.RETURN)
    tables = tables_for(tmp_path, _flat_reference(100.0), {HCD: (comparison,)})
    result = row(tables, "flat")
    assert result["verdict"] == expected
    assert result["compare_x"] == 300 * 160_000 and result["ref_y"] == 100.0
    assert result["band_low"] == 90.0 and result["band_high"] == 110.0


@pytest.mark.parametrize(
    "offset, expected", [(-0.101, BELOW), (-0.099, REPRODUCED), (0.099, REPRODUCED), (0.101, ABOVE)]
)
def test_table1_verdict_uses_the_maximum_over_training(tmp_path, published, offset, expected):
    """Meta-World's 'average maximum success rate': a peak mid-training counts, the final value does not."""
    peak = 0.316 + offset
    seeds = []
    for seed, shift in enumerate([-0.01, 0.0, 0.01]):
        success = np.full(300, 0.05)
        success[100 + seed] = peak + shift  # mean over seeds of the maxima = peak
        seeds.append(success)
        columns = {rf.RETURN: 0.0, rf.SUCCESS: 0.6, rf.TEST_SUCCESS: success}
        write_run(tmp_path, ML10, seed, progress(300, 200_000, columns))
    tables = tables_for(tmp_path, published)
    primary = row(tables, "table1-meta-test")
    assert primary["ours_mean"] == pytest.approx(peak) and primary["ref_y"] == pytest.approx(0.316)
    assert primary["verdict"] == expected
    assert row(tables, "metaworld-plus-test")["verdict"] == BELOW  # final value 0.05 vs ~35 %
    assert row(tables, "table1-meta-train")["verdict"] == ABOVE  # 0.6 vs 44.4 % ± 10


def test_halfcheetah_comparisons_read_the_references_at_our_budget(tmp_path, published):
    columns = {rf.adapt_step_key(0): -25.0, rf.adapt_step_key(1): 146.6}
    write_seeds(tmp_path, HCD, [214.0, 215.0, 216.0], rf.RETURN, extra=columns)
    tables = tables_for(tmp_path, published)
    promp = row(tables, "promp-maml")
    assert promp["verdict"] == REPRODUCED and promp["compare_x"] == 4.8e7
    assert promp["ref_y"] == pytest.approx(214.3) and promp["ours_mean"] == pytest.approx(215.0)
    assert promp["ours_ci_low"] <= 215.0 <= promp["ours_ci_high"]
    finn = row(tables, "finn2017-1-step")
    assert finn["ref_published"] == 293.19 and finn["ref_y"] == pytest.approx(146.595)
    assert finn["verdict"] == REPRODUCED
    assert row(tables, "learn2learn-1-step")["ref_y"] == 259.0


def test_short_runs_are_budget_short_and_say_where_they_stand(tmp_path, published):
    write_seeds(tmp_path, HCD, [400.0, 400.0], rf.RETURN, epochs=100)  # 1.6e7 steps: inside ProMP's range
    promp = row(tables_for(tmp_path, published), "promp-maml")
    assert promp["verdict"] == BUDGET_SHORT and promp["epochs_done"] == 100
    assert promp["compare_x"] == 1.6e7 and promp["ref_y"] == pytest.approx(147 + 30 * 0.6)
    assert "runs end after 100/300 epochs" in promp["note"] and "there: above the band" in promp["note"]


def test_runs_that_end_before_the_reference_starts_have_no_reference_value(tmp_path, published):
    write_seeds(
        tmp_path,
        "maml_ppo_half_cheetah_dir",
        [-3.0],
        rf.RETURN,
        epochs=2,
        steps_per_epoch=800,
        profile="smoke",
    )
    tables = tables_for(tmp_path, published)
    rllib = row(tables, "rllib-proxy")  # a number without x: compared at our end, budget-short here
    assert rllib["verdict"] == BUDGET_SHORT and rllib["ref_y"] == 262.0 and rllib["proxy"]
    proxy = row(tables, "promp-proxy")
    assert proxy["verdict"] == BUDGET_SHORT and np.isnan(proxy["ref_y"]) and proxy["proxy"]
    assert "no common x" in proxy["note"] and "1 seed: no confidence interval" in proxy["note"]


def test_a_metric_never_logged_gives_no_data(tmp_path, published):
    write_seeds(
        tmp_path,
        ML10,
        [0.4, 0.45, 0.425],
        rf.SUCCESS,
        steps_per_epoch=200_000,
        extra={rf.TEST_SUCCESS: np.nan},
    )
    tables = tables_for(tmp_path, published)
    assert row(tables, "table1-meta-test")["verdict"] == NO_DATA
    assert "no values of 'MetaTest/Average/SuccessRate'" in row(tables, "table1-meta-test")["note"]
    assert row(tables, "table1-meta-train")["verdict"] == REPRODUCED  # 0.425 vs 0.444 ± 0.1


# --- what a verdict needs: garage's config, enough seeds, and learning ----------------------------------
def _flat_comparison(**changes) -> Comparison:
    fields = dict(
        name="flat", metric=rf.RETURN, match="env_steps", reference="flat", tolerance=10.0,
        tolerance_reason="test", primary=True,
    )  # fmt: skip
    return Comparison(**(fields | changes))


def test_runs_off_garages_config_get_no_verdict_and_the_note_names_the_fields(tmp_path):
    for folder in write_seeds(tmp_path, HCD, [100.0] * 3, rf.RETURN):
        config = json.loads((folder / rf.CONFIG).read_text())
        (folder / rf.CONFIG).write_text(json.dumps(config | {"inner_lr": 0.05, "device": "cuda"}))
    result = row(tables_for(tmp_path, _flat_reference(100.0), {HCD: (_flat_comparison(),)}), "flat")
    assert result["verdict"] == OFF_PROTOCOL
    assert (
        "inner_lr=0.05 (garage's example: 0.1)" in result["note"]
        and "there: inside the band" in result["note"]
    )
    assert "device" not in result["note"]  # the device changes no result beyond rounding


def test_seeds_with_different_configs_are_flagged(tmp_path):
    folders = write_seeds(tmp_path, HCD, [100.0] * 3, rf.RETURN)
    config = json.loads((folders[0] / rf.CONFIG).read_text())
    (folders[0] / rf.CONFIG).write_text(json.dumps(config | {"checkpoint_every": 5}))
    result = row(tables_for(tmp_path, _flat_reference(100.0), {HCD: (_flat_comparison(),)}), "flat")
    assert "the seeds ran with different configs (checkpoint_every)" in result["note"]
    assert result["verdict"] == REPRODUCED  # checkpoints change no result


@pytest.mark.parametrize("seeds, expected", [(1, TOO_FEW_SEEDS), (2, TOO_FEW_SEEDS), (MIN_SEEDS, REPRODUCED)])
def test_a_verdict_needs_enough_seeds(tmp_path, seeds, expected):
    write_seeds(tmp_path, HCD, [100.0] * seeds, rf.RETURN)
    result = row(tables_for(tmp_path, _flat_reference(100.0), {HCD: (_flat_comparison(),)}), "flat")
    assert result["verdict"] == expected
    if expected == TOO_FEW_SEEDS:
        assert f"{seeds} seed(s), a verdict needs ≥ {MIN_SEEDS}; there: inside the band" in result["note"]


@pytest.mark.parametrize(
    "ours, expected", [(90.0, AT_OR_ABOVE_FLOOR), (500.0, AT_OR_ABOVE_FLOOR), (90.0 - 1e-9, BELOW_FLOOR)]
)
def test_a_floor_is_one_sided(tmp_path, ours, expected):
    write_seeds(tmp_path, HCD, [ours] * 3, rf.RETURN)
    comparison = _flat_comparison(kind="floor")
    assert (
        row(tables_for(tmp_path, _flat_reference(100.0), {HCD: (comparison,)}), "flat")["verdict"] == expected
    )


def test_garages_own_runs_are_floors():
    from bench.report.comparisons import COMPARISONS

    kinds = {c.reference: c.kind for cs in COMPARISONS.values() for c in cs if c.reference}
    assert {r for r, k in kinds.items() if k == "floor"} == {"garage_v2_ml1_push", "garage_v2_ml10"}


@pytest.mark.parametrize("slope, expected", [(1.0, LEARNED), (0.0, NOT_LEARNED), (-1.0, NOT_LEARNED)])
def test_learned_says_whether_the_metric_rose_over_training(tmp_path, slope, expected):
    for seed, noise in enumerate([-0.5, 0.0, 0.5]):
        values = slope * np.arange(300) + noise * np.cos(np.arange(300))
        write_run(tmp_path, HCD, seed, progress(300, 160_000.0, {rf.RETURN: values}))
    result = row(tables_for(tmp_path, _flat_reference(100.0), {HCD: (_flat_comparison(),)}), "flat")
    assert result["learned"] == expected
    assert result["moved"] == pytest.approx(slope * 290, abs=1.0)  # last 10 vs first 10 epochs


def test_learned_is_unclear_when_the_seeds_disagree(tmp_path):
    for seed, slope in enumerate([1.0, -1.0, 0.8]):
        write_run(tmp_path, HCD, seed, progress(300, 160_000.0, {rf.RETURN: slope * np.arange(300)}))
    result = row(tables_for(tmp_path, _flat_reference(100.0), {HCD: (_flat_comparison(),)}), "flat")
    assert result["learned"] == UNCLEAR and result["moved_ci_low"] < 0 < result["moved_ci_high"]


def test_final_value_counts_the_last_epochs_not_the_last_logged_rows():
    """A metric logged every 10th epoch: its final value is the one logged in the last 10 epochs, not the
    mean of its last 10 evaluations (most of training)."""
    epochs = np.arange(300, dtype=float)
    metric = np.where(epochs % 10 == 9, epochs, np.nan)
    table = pd.DataFrame({"seed": 0, rf.EPOCH: epochs, "m": metric})
    assert stats.per_seed(table, "m", "final") == pytest.approx([299.0])
    dense = table.assign(m=epochs)
    assert stats.per_seed(dense, "m", "final") == pytest.approx([294.5])  # mean of epochs 290 … 299
    cut = table[table[rf.EPOCH] <= 295]  # nothing logged in its last 10 epochs: the last logged value
    assert stats.per_seed(cut, "m", "final") == pytest.approx([289.0])


def test_provenance_lists_commits_and_warns_when_averaged_runs_differ(tmp_path):
    folders = write_seeds(tmp_path, HCD, [100.0] * 3, rf.RETURN)
    for index, folder in enumerate(folders):
        manifest = json.loads((folder / rf.MANIFEST).read_text())
        commit = "a" * 40 if index < 2 else "b" * 40
        manifest |= {"git": {"commit": commit, "dirty": index == 0}, "versions": {"torch": "2.13.0"}}
        manifest |= {"starts": [{"host": "h", "cpu": "c", "device": "cpu"}]}
        (folder / rf.MANIFEST).write_text(json.dumps(manifest))
    (prov,) = tables_for(tmp_path, _flat_reference(100.0), {HCD: (_flat_comparison(),)}).provenance.to_dict(
        "records"
    )
    assert (
        prov["runs"] == 3
        and "aaaaaaaaaaaa (dirty) (1)" in prov["commits"]
        and "bbbbbbbbbbbb (1)" in prov["commits"]
    )
    assert prov["versions"] == "torch 2.13.0" and prov["devices"] == "cpu"
    assert prov["warning"] == "runs averaged together differ in commits"


def test_provenance_warns_when_runs_span_cpu_models(tmp_path):
    """One run resumed on another CPU model (or runs on different ones) averaged together: a warning, the
    hosts column listing both."""
    folders = write_seeds(tmp_path, HCD, [100.0] * 2, rf.RETURN)
    for index, folder in enumerate(folders):
        manifest = json.loads((folder / rf.MANIFEST).read_text())
        cpus = ["Intel Xeon"] + (["AMD EPYC"] if index else [])
        manifest |= {"git": {"commit": "a" * 40}, "starts": [{"host": "vm", "cpu": c} for c in cpus]}
        (folder / rf.MANIFEST).write_text(json.dumps(manifest))
    (prov,) = tables_for(tmp_path, _flat_reference(100.0), {HCD: (_flat_comparison(),)}).provenance.to_dict(
        "records"
    )
    assert prov["warning"] == "runs averaged together differ in CPU models"
    assert prov["hosts"] == "vm (Intel Xeon) (1); vm (AMD EPYC), vm (Intel Xeon) (1)"


# --- figures and files ----------------------------------------------------------------------------------
def _data_lines(ax) -> int:
    return sum(len(line.get_xdata()) > 0 for line in ax.get_lines())


def test_curves_figure_draws_one_line_per_input():
    ours = pd.concat(
        [
            pd.DataFrame(
                {
                    "panel": p,
                    "line": line,
                    rf.TOTAL_ENV_STEPS: [1.0, 2.0, 3.0],
                    "mean": [1.0, 2, 3],
                    "ci_low": [0.5, 1.5, 2.5],
                    "ci_high": [1.5, 2.5, 3.5],
                }
            )
            for p, line in [("A", "ours"), ("A", "ours, pre"), ("B", "ours B")]
        ]
    )
    refs = pd.DataFrame(
        {
            "panel": ["A", "A", "A", "C"],
            "label": ["curve", "curve", "level", "only ref"],
            "x": [1.0, 3.0, np.nan, np.nan],
            "y": [2.0, 3.0, 2.5, 1.0],
        }
    )
    fig = plots.curves_figure(ours, refs, "test")
    a, b, c = fig.axes
    assert (_data_lines(a), _data_lines(b), _data_lines(c)) == (4, 1, 1)
    assert [t.get_text() for t in a.get_legend().get_texts()] == ["ours", "ours, pre", "curve", "level"]
    assert len(a.collections) == 2  # one CI band per line of ours


def test_per_class_and_adapt_step_figures_draw_every_input():
    classes = ["door-close-v3", "drawer-open-v3", "lever-pull-v3"]
    table = pd.DataFrame(
        [
            {"class": c, "statistic": s, "mean": 0.5, "ci_low": 0.4, "ci_high": 0.6}
            for s in ("final", "max")
            for c in classes
        ]
    )
    (ax,) = plots.per_class_figure(table, "test").axes
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [len(c) for c in bars] == [3, 3]
    ours = pd.DataFrame({"k": [0, 1, 2], "mean": [0.0, 5, 6], "ci_low": [0.0, 4, 5], "ci_high": [0.0, 6, 7]})
    refs = pd.DataFrame({"label": ["a"] * 4 + ["oracle"], "x": [0, 1, 2, 3, np.nan], "y": [1.0, 2, 3, 4, 9]})
    (ax,) = plots.adapt_steps_figure(ours, refs, "test").axes
    assert _data_lines(ax) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "ours (mean, 95 % t-CI across seeds)",
        "a",
        "oracle",
    ]


def test_figure_inputs_hold_our_lines_and_every_compared_reference(tmp_path, published):
    write_seeds(tmp_path, HCD, [200.0, 210.0], rf.RETURN, epochs=20, extra={rf.PRE_RETURN: -10.0})
    tables = tables_for(tmp_path, published)
    from bench.report.comparisons import COMPARISONS

    ours, refs = figure_inputs(tables.curves, COMPARISONS[HCD], published)
    assert ours["line"].nunique() == 2 and len(ours) == 2 * 20  # post- and pre-adaptation, 20 epochs each
    assert list(refs["label"].unique()) == [
        "ProMP paper Fig. 2: MAML (TRPO) (shaded: verdict band ±50)",
        "learn2learn maml_trpo.py: 1 step (shaded: verdict band ±90)",
    ]
    np.testing.assert_allclose(
        refs["high"] - refs["low"], np.where(refs["label"].str.startswith("ProMP"), 100, 180)
    )
    l2l = refs[refs["label"].str.startswith("learn2learn")]
    assert l2l["x"].tolist()[:2] == [160_000.0, 51 * 160_000.0]  # iterations 0, 50 at our steps per epoch


def test_report_writes_summary_report_and_one_figure_per_kind(tmp_path, published):
    classes = {
        rf.class_key(c, "SuccessRate", meta_test=True): 0.2 for c in ("door-close-v3", "sweep-into-v3")
    }
    write_seeds(
        tmp_path, ML10, [0.3, 0.35, 0.4], rf.TEST_SUCCESS, epochs=12, steps_per_epoch=200_000, extra=classes
    )
    extra = {rf.adapt_step_key(k): 10.0 * k for k in range(4)}
    write_seeds(tmp_path, HCD, [100.0, 120.0], rf.RETURN, epochs=8, profile="quick", extra=extra)
    summary = report(tmp_path, n_resamples=FAST)
    assert list(summary["experiment"].unique()) == [HCD, ML10]
    assert (tmp_path / "summary.csv").is_file() and len(pd.read_csv(tmp_path / "summary.csv")) == len(summary)
    text = (tmp_path / "REPORT.md").read_text()
    for name in [
        "quick_maml_trpo_half_cheetah_dir_curves.png",
        "quick_maml_trpo_half_cheetah_dir_adapt_steps.png",
        "full_maml_trpo_metaworld_ml10_curves.png",
        "full_maml_trpo_metaworld_ml10_per_class.png",
    ]:
        path = tmp_path / "plots" / name
        assert path.is_file() and path.stat().st_size > 1000, name
        assert f"(plots/{name})" in text
    assert "## Caveats" in text and "budget-short" in text and "table1-meta-test" in text
    assert "## Provenance" in text and (tmp_path / "provenance.csv").is_file()
    figures = make_figures(tables_for(tmp_path, published), published)
    assert len(figures) == 4
    keep = tmp_path / "plots" / "my_notes.png"
    keep.write_bytes(b"mine")
    for folder in rf.run_dir(tmp_path, "quick", HCD, 0).parent.iterdir():  # the quick runs are deleted
        for file in folder.iterdir():
            file.unlink()
        folder.rmdir()
    rf.run_dir(tmp_path, "quick", HCD, 0).parent.rmdir()
    report(tmp_path, n_resamples=FAST)
    assert not (tmp_path / "plots" / "quick_maml_trpo_half_cheetah_dir_curves.png").exists()
    assert (tmp_path / "plots" / "full_maml_trpo_metaworld_ml10_curves.png").is_file() and keep.is_file()


# --- the command line -----------------------------------------------------------------------------------
def _cli(results: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bench", "report", "--results", str(results), "--n-resamples", str(FAST)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_cli_prints_the_verdict_table_and_the_report_path(tmp_path):
    write_seeds(tmp_path, HCD, [214.0, 215.0, 216.0], rf.RETURN)
    done = _cli(tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["comparison", "ours", "reference", "learned", "verdict"]
    assert lines[1] == f"{HCD} (full): 300/300 epochs, 3 seed(s)"
    assert any(line.startswith("* promp-maml") and line.endswith(REPRODUCED) for line in lines)
    assert any(line.startswith("* the experiment's primary comparison") for line in lines), "* is explained"
    assert max(len(line) for line in lines) <= 100
    assert lines[-1] == f"report: {tmp_path / 'REPORT.md'}" and (tmp_path / "REPORT.md").is_file()


def test_cli_names_the_corrupt_file_and_fails(tmp_path):
    folder = write_seeds(tmp_path, HCD, [1.0], rf.RETURN, epochs=3)[0]
    (folder / rf.MANIFEST).write_text('{"status": "finished", "epochs_completed": 3,')
    done = _cli(tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert f"{folder / rf.MANIFEST}: not valid JSON" in done.stderr
    assert not (tmp_path / "REPORT.md").exists()
