"""What a worker receives to run its episodes with the policy (:class:`maml.rollouts.WavePolicy`): each task's
parameter rows once, a parameter every task shares as one row, and the episodes' rows as the sampler reads
them. The episodes themselves are compared bit for bit through the pools (tests/test_metaworld.py,
tests/test_ray_pool.py); here, what travels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from maml import policy
from maml.rollouts import WavePolicy, episode_rows

NUM_TASKS = 5
TASKS = torch.tensor([3, 0, 3, 1, 3, 0])
"""The running episodes' tasks: three of the five, task 3 three times."""


def theta() -> policy.Params:
    return policy.init_params(3, 2, (4,), torch.Generator().manual_seed(0))


def wave(params: policy.Params, tasks: torch.Tensor = TASKS) -> WavePolicy:
    n = len(tasks)
    std = torch.arange(1.0, 2 * n + 1.0).reshape(n, 2)
    noise = torch.randn(n, 3, 2, generator=torch.Generator().manual_seed(1))
    return WavePolicy.of_wave(params, tasks, std, noise, policy.mean_action, threads=1)


def per_task(params: policy.Params) -> policy.Params:
    """Task-batched parameters with a different value per task (as after the inner step)."""
    return {name: p + torch.arange(NUM_TASKS).reshape(-1, *[1] * (p.dim() - 1)) for name, p in params.items()}


def test_a_parameter_every_task_shares_travels_as_one_row() -> None:
    shared = {**policy.broadcast(theta(), NUM_TASKS), "scale": torch.tensor(2.5).expand(NUM_TASKS)}  # 1-D too
    sent = wave(shared)
    assert sent.shared == frozenset(shared)
    for name, p in shared.items():
        assert sent.params[name].shape == (1, *p.shape[1:]), name
        assert np.array_equal(sent.params[name][0], p[0].numpy()), name


def test_per_task_parameters_travel_as_the_running_tasks_rows_once() -> None:
    params = per_task(policy.broadcast(theta(), NUM_TASKS))
    sent = wave(params)
    assert sent.shared == frozenset()
    used = [0, 1, 3]
    assert sent.rows.tolist() == [used.index(t) for t in TASKS.tolist()]
    for name, p in params.items():
        assert np.array_equal(sent.params[name], p[used].numpy()), name


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-task"])
def test_each_episode_reads_its_tasks_parameters_as_the_sampler_does(shared: bool) -> None:
    """``episode_params`` gives the rows :func:`episode_rows` gives on the sampler's side: the same values,
    and for a shared parameter a stride-0 view of one copy (what makes the two sides the same bits)."""
    params = policy.broadcast(theta(), NUM_TASKS)
    if not shared:
        params = per_task(params)
    received = wave(params).episode_params()
    for name, p in params.items():
        expected = episode_rows(p, TASKS)
        assert torch.equal(received[name], expected), name
        assert torch.equal(expected, p[TASKS]), name
        assert (received[name].stride(0) == 0) == (expected.stride(0) == 0) == shared, name


def test_a_shared_one_dimensional_parameter_is_read_as_a_view_too() -> None:
    scale = torch.tensor(2.5).expand(NUM_TASKS)  # one value per task, all the same copy
    rows = episode_rows(scale, TASKS)
    assert rows.stride(0) == 0 and rows.data_ptr() == scale.data_ptr()
    assert torch.equal(rows, torch.full((len(TASKS),), 2.5))


def test_select_keeps_the_chosen_episodes_and_only_their_tasks_rows() -> None:
    params = per_task(policy.broadcast(theta(), NUM_TASKS))
    whole = wave(params)
    part = whole.select([1, 3])  # tasks 0 and 1
    assert len(part) == 2 and part.rows.tolist() == [0, 1]
    assert np.array_equal(part.std, whole.std[[1, 3]]) and np.array_equal(part.noise, whole.noise[[1, 3]])
    for name, p in params.items():
        assert np.array_equal(part.params[name], p[[0, 1]].numpy()), name
    shared_part = wave(policy.broadcast(theta(), NUM_TASKS)).select([0, 5])
    assert all(p.shape[0] == 1 for p in shared_part.params.values())


def test_a_wave_policy_cannot_be_changed_on_its_way() -> None:
    sent = wave(policy.broadcast(theta(), NUM_TASKS))
    with pytest.raises(dataclasses.FrozenInstanceError):
        sent.threads = 2  # type: ignore[misc]
