"""Learning regression (``nox -s slow``): MAML-TRPO and MAML-PPO learn to adapt on HalfCheetahDir.

Thresholds, the command and the values they were derived from live in results/regression/expected.json.
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


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["maml_trpo_half_cheetah_dir", "maml_ppo_half_cheetah_dir"])
def test_post_adaptation_return_rises_above_pre_adaptation_and_epoch_zero(tmp_path, experiment):
    expected = json.loads(EXPECTED.read_text())["learning"][experiment]
    command = shlex.split(expected["command"])
    assert command[:3] == ["python", "-m", "bench"]
    subprocess.run(
        [sys.executable, *command[1:], "--results", str(tmp_path), "--no-progress"], check=True, timeout=1800
    )
    window, gaps, rises = expected["window"], [], []
    for seed in SEEDS:
        frame = pd.read_csv(rf.run_dir(tmp_path, "quick", experiment, seed) / rf.PROGRESS).sort_values(
            rf.EPOCH
        )
        post, pre = frame[rf.RETURN], frame[rf.PRE_RETURN]
        gaps.append(post.tail(window).mean() - pre.tail(window).mean())
        rises.append(post.tail(window).mean() - post.iloc[0])
    mean_gap, mean_rise = sum(gaps) / len(gaps), sum(rises) / len(rises)
    assert mean_gap >= expected["min_mean_post_minus_pre"], f"post − pre per seed: {gaps}"
    assert mean_rise >= expected["min_mean_rise_over_epoch0"], f"rise over epoch 0 per seed: {rises}"
