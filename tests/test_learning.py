"""Learning regression (``nox -s slow``): MAML-TRPO and MAML-PPO learn to adapt on HalfCheetahDir, every
seed of them, and the first-order ablation run by the same command is the control.

Per seed, over the last ``window`` epochs: the post-adaptation return must exceed the pre-adaptation return,
and the epoch-0 post-adaptation return, by at least a floor. The control compares the seed means of post −
pre: where the second-order term matters at the budget (TRPO) first-order MAML must score that much lower;
where it does not (PPO at 70 epochs) the control asserts what was measured. Commands, floors and the
measurements behind them (per seed, with margins): results/regression/expected.json ["learning"].
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench import run_format as rf

EXPECTED = Path(__file__).resolve().parent.parent / "results" / "regression" / "expected.json"
SEEDS = (0, 1, 2)
CONTROL = "+first_order"


def seed_scores(results: Path, experiment: str, window: int) -> dict[str, list[float]]:
    """Per seed: post − pre over the last ``window`` epochs, and that post return's rise over epoch 0."""
    gaps, rises = [], []
    for seed in SEEDS:
        frame = pd.read_csv(rf.run_dir(results, "quick", experiment, seed) / rf.PROGRESS).sort_values(
            rf.EPOCH
        )
        post, pre = frame[rf.RETURN], frame[rf.PRE_RETURN]
        gaps.append(float(post.tail(window).mean() - pre.tail(window).mean()))
        rises.append(float(post.tail(window).mean() - post.iloc[0]))
    return {"post_minus_pre": gaps, "rise_over_epoch0": rises}


def check(results: Path, experiment: str, expected: dict, window: int) -> None:
    """The assertions of the learning check on runs already in ``results``."""
    scores = seed_scores(results, experiment, window)
    for name, floor in (
        ("post_minus_pre", expected["min_post_minus_pre_per_seed"]),
        ("rise_over_epoch0", expected["min_rise_over_epoch0_per_seed"]),
    ):
        values = scores[name]
        assert min(values) >= floor, f"{experiment} {name} per seed {values}: a seed below {floor}"
    control, bounds = seed_scores(results, experiment + CONTROL, window), expected["first_order_control"]
    second = sum(scores["post_minus_pre"]) / len(SEEDS)
    first = sum(control["post_minus_pre"]) / len(SEEDS)
    said = f"post − pre, seed mean: second order {second:.2f}, first order {first:.2f} (per seed {control})"
    if "min_second_minus_first_order" in bounds:
        assert second - first >= bounds["min_second_minus_first_order"], f"first order not lower: {said}"
    if "max_second_minus_first_order" in bounds:
        assert second - first <= bounds["max_second_minus_first_order"], f"first order now far lower: {said}"
    if "min_mean_post_minus_pre" in bounds:
        assert first >= bounds["min_mean_post_minus_pre"], f"first order no longer learns: {said}"


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["maml_trpo_half_cheetah_dir", "maml_ppo_half_cheetah_dir"])
def test_every_seed_learns_to_adapt_and_first_order_control(tmp_path, experiment):
    learning = json.loads(EXPECTED.read_text())["learning"]
    expected = learning[experiment]
    command = shlex.split(expected["command"])
    assert command[:3] == ["python", "-m", "bench"] and experiment + CONTROL in command, command
    subprocess.run(
        [sys.executable, *command[1:], "--results", str(tmp_path), "--no-progress"], check=True, timeout=3600
    )
    check(tmp_path, experiment, expected, learning["window"])
