"""The layout of a run folder: the one contract between the harness that writes runs and the report that
reads them. Nothing else is shared between the two.

``<results>/runs/<profile>/<experiment>/seed-<k>/`` holds:

- ``config.json`` — the frozen experiment config as a JSON object, plus ``experiment``, ``profile``, ``seed``.
- ``manifest.json`` — ``status`` (``running`` | ``finished`` | ``failed`` | ``interrupted``),
  ``epochs_completed``, ``epochs_total``, package versions, git commit and dirty flag, host, device, torch
  threads, seed, start and end times, wall time per phase, and ``error`` for a failed or interrupted run
  (what stopped it, what was kept). ``running`` with nobody holding ``.lock`` is a run whose trainer was
  killed (``kill -9``, a crash of the machine): stale, resumable.
- ``progress.csv`` — one row per epoch, written through dowel; columns named below (read by name: dowel's
  column order is not stable). Values a row does not have (a meta-test skipped that epoch, a success rate
  on an environment without one) are empty.
- ``checkpoint.pt`` — policy, optimiser and RNG states after the last completed epoch (written atomically).
- ``tb/`` — the same scalars as TensorBoard events.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_RESULTS = Path("out")
"""Where runs and reports go unless ``--results`` says otherwise: a git-ignored folder, so that a user's
runs never touch the committed record in ``results/`` (written only when asked for: ``--results results``)."""

CONFIG = "config.json"
MANIFEST = "manifest.json"
PROGRESS = "progress.csv"
CHECKPOINT = "checkpoint.pt"
TENSORBOARD = "tb"

STATUS_RUNNING = "running"
STATUS_FINISHED = "finished"
STATUS_FAILED = "failed"
STATUS_INTERRUPTED = "interrupted"
"""Stopped by SIGINT or SIGTERM at a safe point; its last checkpoint is kept and a rerun resumes it."""

# --- progress.csv columns -------------------------------------------------------------------------------
EPOCH = "Epoch"
TOTAL_ENV_STEPS = "TotalEnvSteps"
"""Pre- plus post-update training steps so far (garage's meaning; meta-test steps are not counted)."""

# post-update episodes of the meta-batch (garage's keys)
RETURN = "Average/AverageReturn"
SUCCESS = "Average/SuccessRate"
# pre-update episodes of the meta-batch
PRE_RETURN = "PreAdapt/Average/AverageReturn"
PRE_SUCCESS = "PreAdapt/Average/SuccessRate"

# meta-test on held-out tasks: after adaptation (garage's keys) and before it
TEST_RETURN = "MetaTest/Average/AverageReturn"
TEST_SUCCESS = "MetaTest/Average/SuccessRate"
TEST_PRE_RETURN = "MetaTest/PreAdapt/Average/AverageReturn"
TEST_PRE_SUCCESS = "MetaTest/PreAdapt/Average/SuccessRate"

# outer-step statistics (garage's keys)
POLICY_STATS = ("LossBefore", "LossAfter", "dLoss", "KLBefore", "KLAfter", "Entropy")
POLICY_PREFIX = "GaussianMLPPolicy/"

TIME_PHASES = ("Sampling", "Adaptation", "OuterStep", "Evaluation", "Epoch")
TIME_PREFIX = "Time/"


def value_range(metric: str) -> tuple[float, float] | None:
    """The values a column can take, where bounded: success rates lie in [0, 1]; returns are unbounded."""
    return (0.0, 1.0) if metric.endswith("SuccessRate") else None


def class_key(class_name: str, metric: str, meta_test: bool = False) -> str:
    """Per-class column, keyed by name: ``push-v3/SuccessRate`` or ``MetaTest/push-v3/SuccessRate``."""
    return f"MetaTest/{class_name}/{metric}" if meta_test else f"{class_name}/{metric}"


def adapt_step_key(step: int) -> str:
    """Meta-test return after ``step`` adaptation steps (0 = pre-adaptation), for Finn et al.'s Fig. 5."""
    return f"MetaTest/AdaptStep{step}/AverageReturn"


def run_dir(results: Path, profile: str, experiment: str, seed: int) -> Path:
    return Path(results) / "runs" / profile / experiment / f"seed-{seed}"


def cpu_change(starts: list[dict[str, object]]) -> str:
    """For a run's manifest ``starts``: ``""``, or a note when the latest sitting runs on a CPU model that no
    earlier sitting ran on (a run resumes bit for bit on the same CPU model only: MKL's products take
    other code paths on another, README "The numbers depend on the CPU")."""
    if len(starts) < 2:
        return ""
    latest = str(starts[-1].get("cpu", "?"))
    earlier = sorted({str(s.get("cpu", "?")) for s in starts[:-1]})
    if latest in earlier:
        return ""
    return (
        f"; on {latest}, where earlier sittings ran on {', '.join(earlier)}: from here the numbers"
        " differ from a run on one CPU model"
    )
