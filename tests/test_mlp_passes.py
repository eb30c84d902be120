"""The torch passes' bookkeeping (maml/mlp_passes.py): named scratch buffers, reused by name, shape, dtype and
device; the flat layout of shared and task-batched parameter dicts."""

from __future__ import annotations

import torch

from maml import policy
from maml.mlp_passes import Buffers, Layout


def test_buffers_reuse_memory_by_name_shape_dtype_and_device() -> None:
    """The same name and shape give the same memory for tensors of one dtype and device (the passes of an
    outer step allocate once); another name or shape is other memory, and another dtype or device a new
    tensor of that dtype and device, never the old one reinterpreted."""
    buffers = Buffers()
    double, single = torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float32)
    first = buffers.take("z", (3, 4), double)
    assert (first.shape, first.dtype, first.device.type) == ((3, 4), torch.float64, "cpu")
    assert buffers.take("z", [3, 4], double).data_ptr() == first.data_ptr()
    assert buffers.take("z", (4, 3), double).data_ptr() != first.data_ptr()
    assert buffers.take("x", (3, 4), double).data_ptr() != first.data_ptr()
    other = buffers.take("z", (3, 4), single)
    assert other.dtype == torch.float32 and other.data_ptr() != first.data_ptr()
    assert buffers.take("z", (3, 4), single).data_ptr() == other.data_ptr()
    assert buffers.take("z", (3, 4), torch.zeros(1, dtype=torch.float32, device="meta")).device.type == "meta"
    again = buffers.take("z", (3, 4), double)
    assert again.dtype == torch.float64 and again.device.type == "cpu"

    ones = buffers.take_with_ones("x1", (2, 5, 4), double)
    assert torch.all(ones[..., -1] == 1.0)
    ones[..., :-1] = 7.0
    assert buffers.take_with_ones("x1", (2, 5, 4), double).data_ptr() == ones.data_ptr()
    assert torch.all(ones[..., -1] == 1.0) and torch.all(ones[..., :-1] == 7.0)
    assert torch.all(buffers.take_with_ones("x1", (2, 5, 4), single)[..., -1] == 1.0)


def test_layout_of_shared_and_task_batched_parameters() -> None:
    """``Layout.of`` reads the widths from θ (``w0: [in, out]``) and from task-batched θ'_i
    (``w0: [T, in, out]``) alike; ``flatten`` of a task-batched dict is ``[T, P]``, one flat row per task,
    and ``to_params`` gives the dict back."""
    theta = policy.init_params(3, 2, (5, 4), torch.Generator().manual_seed(0), dtype=torch.float64)
    batched = {name: torch.stack([p + task for task in range(6)]) for name, p in theta.items()}
    layout = Layout.of(theta)
    assert layout.widths == (3, 5, 4, 2)
    assert Layout.of(batched) == layout
    flat = layout.flatten(batched)
    assert flat.shape == (6, layout.num_params)
    for task in range(6):
        row = layout.flatten({name: p[task] for name, p in batched.items()})
        assert row.shape == (layout.num_params,) and torch.equal(flat[task], row)
    assert torch.equal(layout.flatten(theta), flat[0])
    back = layout.to_params(flat)
    assert list(back) == list(layout.names)
    assert all(torch.equal(back[name], batched[name]) for name in layout.names)
