"""The ablations of garage's bugs, each checked against a direct computation of garage's behaviour (written
here as garage's code computes it: per task, with torch.nn / torch.distributions / numpy), not against the
batched code itself; their presets; and that run folders written before the ablation fields existed resume.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench import run_format as rf
from bench.run.ablations import ABLATIONS, split
from bench.run.experiments import ConfigError, ExperimentConfig, preset
from bench.run.families import make_family
from bench.run.trainer import RunFolderConflict, RunSpec, Trainer, check_run_folder, make_baseline
from maml import adam_outer, meta, policy, value_function
from maml.advantages import center_by_variance, process_episodes
from maml.config import AdamConfig, MAMLConfig
from maml.ppo import clipped_surrogate
from maml.synthetic import SyntheticSpec, make_meta_batch

TRPO = "maml_trpo_half_cheetah_dir"
PPO = "maml_ppo_half_cheetah_dir"


def _garage_value_module(obs_dim: int, seed: int) -> torch.nn.Sequential:
    """garage's GaussianMLPValueFunction mean network: (32, 32) tanh, linear output, Xavier-uniform weights
    drawn layer by layer, zero biases."""
    generator = torch.Generator().manual_seed(seed)
    layers = [torch.nn.Linear(obs_dim, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), torch.nn.Tanh()]
    layers.append(torch.nn.Linear(32, 1))
    for layer in layers:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(layer.weight, generator=generator)
            torch.nn.init.zeros_(layer.bias)
    return torch.nn.Sequential(*layers)


def _discounted_returns_loop(rewards: np.ndarray, length: int, discount: float) -> np.ndarray:
    out, running = np.zeros(length), 0.0
    for t in reversed(range(length)):
        running = rewards[t] + discount * running
        out[t] = running
    return out


def _episodes(seed: int = 1, dtype=torch.float64):
    spec = SyntheticSpec(num_tasks=3, episodes=3, horizon=7, obs_dim=4, act_dim=2, hidden_sizes=(5,))
    theta = policy.init_params(4, 2, (5,), torch.Generator().manual_seed(0), dtype=dtype)
    return theta, make_meta_batch(theta, spec, torch.Generator().manual_seed(seed))


def test_untrained_value_function_is_garages_network_at_initialisation():
    obs_dim, seed = 4, 7
    params = value_function.init(obs_dim, torch.Generator().manual_seed(seed))
    module = _garage_value_module(obs_dim, seed)
    for (weight, bias), layer in zip(
        params, [m for m in module if isinstance(m, torch.nn.Linear)], strict=True
    ):
        assert torch.equal(weight, layer.weight.detach()) and not bias.any()
        fan_out, fan_in = weight.shape
        assert weight.abs().max() <= (6.0 / (fan_in + fan_out)) ** 0.5  # Xavier-uniform's bound
    _, batch = _episodes()
    episodes = batch.post
    with torch.no_grad():
        expected = module(episodes.observations.float()).squeeze(-1).double() * episodes.mask
    got = value_function.values(params, episodes.observations, episodes.mask)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_advantages_against_the_untrained_network_equal_returns_minus_its_values_centred():
    """GAE with λ = 1 over garage's untrained network: A_t = R_t − V(s_t), then centred per task; written
    per episode with numpy."""
    obs_dim, seed, discount = 4, 3, 0.99
    module = _garage_value_module(obs_dim, seed)
    params = value_function.init(obs_dim, torch.Generator().manual_seed(seed))
    _, batch = _episodes()
    raw = batch.post

    def baseline(obs, returns, mask):
        return value_function.values(params, obs, mask)

    out = process_episodes(raw, discount, 1.0, baseline=baseline, scaling="std")
    for task in range(raw.num_tasks):
        flat = []
        for episode in range(raw.observations.shape[1]):
            length = int(raw.mask[task, episode].sum())
            returns = _discounted_returns_loop(raw.rewards[task, episode].numpy(), length, discount)
            with torch.no_grad():
                values = module(raw.observations[task, episode, :length].float()).squeeze(-1).double()
            flat.append(returns - values.numpy())
        flat = np.concatenate(flat)
        expected = (flat - flat.mean()) / (flat.std() + 1e-8)
        got = out.advantages[task][raw.mask[task].bool()].numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_variance_centring_is_garages_formula():
    """garage: ``advantage_flat = (advantage_flat − mean) / (var + 1e-8)``, torch's unbiased variance."""
    generator = torch.Generator().manual_seed(5)
    advantages = torch.randn(3, 4, 6, generator=generator, dtype=torch.float64) * 3.0 + 1.0
    mask = (torch.rand(3, 4, 6, generator=generator) > 0.3).double()
    got = center_by_variance(advantages, mask)
    for task in range(3):
        flat = advantages[task][mask[task].bool()].numpy()
        expected = (flat - flat.mean()) / (flat.var(ddof=1) + 1e-8)
        np.testing.assert_allclose(got[task][mask[task].bool()].numpy(), expected, rtol=1e-12)
        assert not got[task][~mask[task].bool()].any()
    # it is not the standard-deviation centring: the scale differs by a factor std(A)
    assert not torch.allclose(got, process_episodes.__globals__["center"](advantages, mask))


def _garage_closure_step(theta, batch, lr: float, eps: float) -> dict[str, torch.Tensor]:
    """Adam's first step along garage's ``.grad``: the last task's inner VPG loss gradient at θ, written per
    sample with torch.distributions (Adam's first step is ``−lr · g / (|g| + eps)``)."""
    last = batch.pre[0].task(batch.pre[0].num_tasks - 1)
    leaves = {n: p.detach().clone().requires_grad_() for n, p in theta.items()}
    x = last.observations.reshape(-1, last.observations.shape[-1])
    valid = last.mask.reshape(-1).bool()
    h = x
    layers = policy.num_layers(leaves)
    for k in range(layers):
        h = h @ leaves[f"w{k}"] + leaves[f"b{k}"]
        if k < layers - 1:
            h = torch.tanh(h)
    dist = torch.distributions.Normal(h, leaves["log_std"].exp())
    logp = dist.log_prob(last.actions.reshape(-1, last.actions.shape[-1])).sum(-1)
    loss = -(logp * last.advantages.reshape(-1))[valid].mean()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return {n: p.detach() - lr * g / (g.abs() + eps) for (n, p), g in zip(theta.items(), grads, strict=True)}


def _cosine(a: dict, b: dict) -> float:
    va, vb = meta.flatten(list(a.values())), meta.flatten(list(b.values()))
    return float(va @ vb / (va.norm() * vb.norm()))


def test_adam_closure_steps_along_the_last_tasks_inner_gradient_as_garage_does():
    theta, batch = _episodes(seed=2)
    maml_cfg = MAMLConfig(meta_batch_size=3)
    surrogate = clipped_surrogate(0.5)
    leaves = meta.requires_grad(theta)
    loss, _ = meta.meta_objective(leaves, batch, surrogate, maml_cfg.inner_lr)
    meta_grad = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))
    descent = {n: -g for n, g in meta_grad.items()}

    steps = {}
    for outer_gradient in ("meta", "garage_adam_closure"):
        leaves = meta.requires_grad(theta)
        cfg = AdamConfig(outer_gradient=outer_gradient)
        optimizer = adam_outer.make_optimizer(leaves, cfg)
        adam_outer.adam_outer_step(
            leaves, optimizer, batch, maml_cfg, surrogate, outer_gradient=outer_gradient
        )
        steps[outer_gradient] = {n: leaves[n].detach() - theta[n] for n in theta}

    expected = _garage_closure_step(theta, batch, AdamConfig().outer_lr, AdamConfig().eps)
    for name in theta:
        torch.testing.assert_close(steps["garage_adam_closure"][name], expected[name] - theta[name])
    garage_direct = {n: expected[n] - theta[n] for n in theta}
    cos_garage = _cosine(steps["garage_adam_closure"], descent)
    assert cos_garage == pytest.approx(_cosine(garage_direct, descent), abs=1e-9)
    assert _cosine(steps["meta"], descent) - cos_garage > 0.2  # ours follows the meta-gradient; garage's not


def test_ablation_presets_switch_exactly_garages_behaviours():
    defaults = ExperimentConfig(
        env="half_cheetah_dir",
        algo="trpo",
        epochs=1,
        meta_batch_size=1,
        episodes_per_task=1,
        max_episode_length=1,
        hidden_sizes=(2,),
        action_scale=1.0,
    )
    assert (defaults.baseline, defaults.advantage_scaling, defaults.outer_gradient) == (
        "linear",
        "std",
        "meta",
    )
    assert preset(f"{TRPO}+garage_as_shipped", "full") == replace(
        preset(TRPO, "full"), baseline="garage_untrained_mlp", advantage_scaling="garage_variance"
    )
    assert preset(f"{PPO}+garage_as_shipped", "full") == replace(
        preset(PPO, "full"),
        baseline="garage_untrained_mlp",
        advantage_scaling="garage_variance",
        outer_gradient="garage_adam_closure",
    )
    assert preset(f"{TRPO}+first_order", "full") == replace(preset(TRPO, "full"), first_order=True)
    assert preset(f"{PPO}+garage_adam_closure", "quick").outer_gradient == "garage_adam_closure"
    with pytest.raises(ConfigError, match="Adam outer step"):
        preset(f"{TRPO}+garage_adam_closure", "full")
    with pytest.raises(ConfigError, match=r"unknown ablation 'nope'.*garage_variance"):
        preset(f"{TRPO}+nope", "full")
    with pytest.raises(ConfigError, match="baseline must be one of"):
        replace(preset(TRPO, "smoke"), baseline="mlp")
    assert split(TRPO) == (TRPO, None) and split(f"{TRPO}+garage_variance")[1] is ABLATIONS["garage_variance"]


def _smoke(tmp_path: Path, experiment: str) -> pd.DataFrame:
    spec = RunSpec(experiment, "smoke", 0, preset(experiment, "smoke"), tmp_path, threads=1)
    Trainer(spec).run()
    return pd.read_csv(spec.path / rf.PROGRESS)


def test_an_ablation_run_samples_the_same_first_round_and_adapts_differently(tmp_path):
    fixed = _smoke(tmp_path, TRPO)
    ablated = _smoke(tmp_path, f"{TRPO}+garage_untrained_vf")
    assert (tmp_path / "runs" / "smoke" / f"{TRPO}+garage_untrained_vf" / "seed-0").is_dir()
    # same θ, same seeds: the pre-update round is identical; the adaptation used other advantages
    assert fixed[rf.PRE_RETURN][0] == ablated[rf.PRE_RETURN][0]
    assert fixed[rf.RETURN][0] != ablated[rf.RETURN][0]


def test_the_untrained_network_is_drawn_from_the_seed_and_never_changes():
    config = preset(f"{TRPO}+garage_untrained_vf", "smoke")
    family = make_family(config)
    try:
        obs = torch.randn(2, 3, 4, family.observation_dim, generator=torch.Generator().manual_seed(0))
        mask = torch.ones(2, 3, 4)
        first, again = make_baseline(config, family, 0), make_baseline(config, family, 0)
        other = make_baseline(config, family, 1)
        assert torch.equal(first(obs, None, mask), again(obs, None, mask))
        assert not torch.equal(first(obs, None, mask), other(obs, None, mask))
    finally:
        family.close()


def test_a_run_folder_written_before_the_ablation_fields_existed_resumes(tmp_path):
    spec = RunSpec(TRPO, "smoke", 0, preset(TRPO, "smoke"), tmp_path, threads=1)
    spec.path.mkdir(parents=True)
    record = {
        "experiment": TRPO,
        "profile": "smoke",
        "seed": 0,
        **json.loads(
            json.dumps(
                {k: list(v) if isinstance(v, tuple) else v for k, v in preset(TRPO, "smoke").__dict__.items()}
            )
        ),
    }
    for name in ("baseline", "advantage_scaling", "outer_gradient"):
        del record[name]
    (spec.path / rf.CONFIG).write_text(json.dumps(record))
    assert check_run_folder(spec) is not None  # the missing fields read as their defaults
    ablated = replace(spec, config=replace(spec.config, advantage_scaling="garage_variance"))
    with pytest.raises(RunFolderConflict, match="advantage_scaling"):
        check_run_folder(ablated)


# --- the report's Ablations section ------------------------------------------------------------------------
def test_welch_interval_equals_scipys_welch_t_test():
    from scipy import stats as sps

    from bench.report.stats import welch_interval

    a, b = np.array([1.0, 2.0, 3.5]), np.array([4.0, 6.0, 8.0, 9.5])
    diff, low, high = welch_interval(a, b)
    expected = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert (low, high) == pytest.approx((expected.low, expected.high), rel=1e-12)
    assert np.isnan(welch_interval(a, b[:1])[1]) and np.isnan(welch_interval(a, np.array([]))[0])


def test_report_puts_ablations_beside_their_fixed_runs_and_never_gives_them_a_verdict(tmp_path):
    from synthetic_runs import write_run, write_seeds

    from bench.report import published as pub
    from bench.report.generate import build_tables, make_figures, render_markdown
    from bench.report.runs import load_runs

    fixed, ablated = [100.0, 110.0, 120.0, 130.0], [50.0, 60.0, 70.0]
    write_seeds(tmp_path, TRPO, fixed, rf.RETURN, epochs=40)  # seed 3 has no ablation counterpart
    write_seeds(tmp_path, f"{TRPO}+garage_variance", ablated, rf.RETURN, epochs=40)
    write_run(tmp_path, f"{TRPO}+first_order", 0, None, status=rf.STATUS_RUNNING, epochs_total=300)
    published = pub.load_published()
    tables = build_tables(load_runs(tmp_path), published, n_resamples=100)
    assert set(tables.summary["experiment"]) == {TRPO}  # no verdict row for an ablation
    row = tables.ablations.set_index(["ablation", "metric"]).loc[("garage_variance", rf.RETURN)]
    assert row["n_seeds"] == 3 and row["base_n_seeds"] == 3 and row["mean"] == pytest.approx(60.0)
    assert row["base_mean"] == pytest.approx(110.0)  # seeds 0-2 only
    diff, low, high = (row["difference"], row["difference_ci_low"], row["difference_ci_high"])
    assert diff == pytest.approx(-50.0) and low < -50.0 < high
    assert row["learned"] == "no"  # constant curves did not rise
    empty = tables.ablations.set_index(["ablation", "metric"]).loc[("first_order", rf.RETURN)]
    assert empty["n_seeds"] == 0 and "logged no epoch" in empty["note"]
    figures = make_figures(tables, published)
    figure = figures[("full", TRPO, "ablations")]
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert labels == ["fixed (ours)", "bug 3: advantages / variance"]
    text = render_markdown(tables, {}, tmp_path)
    assert "## Ablations" in text and "-50 [" in text and "`garage_variance`: bug 3" in text
