"""Ablations: what each of garage's bugs costs, and the first-order approximation.

An ablation run is one of the five experiments with a few config fields switched to garage's behaviour
(shared/docs/garage-maml.md, "garage's bugs"); it is named ``<experiment>+<ablation>`` (e.g.
``maml_trpo_half_cheetah_dir+garage_variance``) and lives in its own run folders. Its counterpart is the
experiment's fixed run of the same profile and seed. Ablations are reported in their own section and never
enter a verdict on a published reference.
"""

from __future__ import annotations

from dataclasses import dataclass

SEPARATOR = "+"


@dataclass(frozen=True)
class Ablation:
    """A named set of config changes that reproduces a behaviour of garage's (or drops a term of MAML)."""

    name: str
    label: str
    """Short text for tables and legends."""
    garage_source: str
    """What garage's code does that the changes reproduce."""
    changes: tuple[tuple[str, object], ...]
    """Config fields and values, for every algorithm."""
    adam_changes: tuple[tuple[str, object], ...] = ()
    """Extra changes for the Adam outer steps (PPO, VPG) only."""
    adam_only: bool = False
    """Defined for PPO/VPG only (garage's bug 2 concerns the Adam outer step)."""

    def changes_for(self, algo: str) -> dict[str, object]:
        return dict(self.changes) | (dict(self.adam_changes) if algo != "trpo" else {})


_BUG1 = (("baseline", "garage_untrained_mlp"),)
_BUG3 = (("advantage_scaling", "garage_variance"),)
_BUG2 = (("outer_gradient", "garage_adam_closure"),)

ABLATIONS: dict[str, Ablation] = {
    a.name: a
    for a in (
        Ablation(
            "garage_untrained_vf",
            "bug 1: untrained value function",
            "garage's MAML deep-copies its GaussianMLPValueFunction (32, 32), fits the copy and steps an "
            "optimizer over the original: advantages are taken against the network at its initialisation "
            "(garage #2301)",
            _BUG1,
        ),
        Ablation(
            "garage_variance",
            "bug 3: advantages / variance",
            "garage's VPG centres advantages as (A − mean) / (var + 1e-8) per task, dividing by the "
            "(unbiased) variance instead of the standard deviation",
            _BUG3,
        ),
        Ablation(
            "garage_adam_closure",
            "bug 2: Adam closure",
            "garage's MAMLPPO/MAMLVPG call Adam.step(closure); the closure re-adapts every task, leaving the "
            "last task's inner-loss gradient at θ in .grad, and Adam steps along it, never along the "
            "meta-gradient",
            (),
            adam_changes=_BUG2,
            adam_only=True,
        ),
        Ablation(
            "garage_as_shipped",
            "garage as shipped (bugs 1 + 3, + 2 for PPO/VPG)",
            "garage's MAML as its examples run it: bugs 1 and 3, and bug 2 where the outer step is Adam",
            _BUG1 + _BUG3,
            adam_changes=_BUG2,
        ),
        Ablation(
            "first_order",
            "first-order MAML",
            "Not a garage bug: the first-order approximation (Finn et al. 2017, Fig. 5 compares it)",
            (("first_order", True),),
        ),
    )
}


def split(experiment: str) -> tuple[str, Ablation | None]:
    """``"<experiment>+<ablation>"`` → (experiment, ablation); a plain experiment → (experiment, None).

    Raises ``KeyError`` naming the valid ablations for an unknown one."""
    base, sep, name = experiment.partition(SEPARATOR)
    if not sep:
        return base, None
    if name not in ABLATIONS:
        raise KeyError(f"unknown ablation {name!r} in {experiment!r}; valid: {', '.join(ABLATIONS)}")
    return base, ABLATIONS[name]


def is_ablation(experiment: str) -> bool:
    return SEPARATOR in experiment
