"""The fused C kernels (maml/native/mlp_kernels.c): the same numbers as the torch passes they replace on CPU —
float64 to rounding, float32 to float32 accuracy — for odd widths, padded episodes, several tiles per task,
any thread count; their vector tanh against torch's; the build, the fallback and the array recycling."""

import gc
import shutil

import pytest
import torch
from conftest import build

from maml import gauss_newton, trpo
from maml.mlp_passes import Layout
from maml.native import mlp_kernels
from maml.synthetic import SyntheticSpec

INNER_LR = 0.1
# widths that are not multiples of the vector length, 3 × 50 = 150 samples per task (over two tiles, not a
# multiple of one), padded (masked) episodes
SPEC = SyntheticSpec(
    num_tasks=5, episodes=3, horizon=50, obs_dim=7, act_dim=3, hidden_sizes=(37, 20), padded=True
)
# a hidden layer narrower than one vector (its weight gradient accumulated transposed, as the head's usually
# is) and a head wider than one vector but not a multiple of it (δ rows copied to padded rows)
NARROW_HIDDEN = SyntheticSpec(
    num_tasks=3, episodes=2, horizon=45, obs_dim=11, act_dim=17, hidden_sizes=(5, 40), padded=True
)
# the last hidden layer narrower than the action (the kept curvatures are as wide as the action, not it)
NARROW_LAST = SyntheticSpec(
    num_tasks=3, episodes=2, horizon=20, obs_dim=11, act_dim=17, hidden_sizes=(40, 5), padded=True
)
# no hidden layer (hidden_sizes=()): the mean head alone, one layer input, no tanh
LINEAR = SyntheticSpec(
    num_tasks=3, episodes=3, horizon=50, obs_dim=7, act_dim=3, hidden_sizes=(), padded=True
)
TOLERANCE = {torch.float64: 1e-11, torch.float32: 2e-5}

pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler"
)


def _rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(scope="module")
def kernels():
    loaded = mlp_kernels.load()
    assert loaded is not None, "the fused kernels failed to build (see the warning)"
    return loaded


@pytest.mark.parametrize(
    "spec",
    [SPEC, NARROW_HIDDEN, NARROW_LAST, LINEAR],
    ids=["odd-widths", "narrow-hidden", "narrow-last", "linear"],
)
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_linearization_equals_torch_passes(kernels, dtype, first_order, spec):
    theta, batch = build(spec, seed=1, dtype=dtype)
    fused = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR, first_order, fused=True)
    reference = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR, first_order, fused=False)
    assert fused.fused is not None and reference.fused is None
    tol = TOLERANCE[dtype]
    assert _rel_err(fused.gradient, reference.gradient) < tol
    assert fused.loss == pytest.approx(reference.loss, rel=tol, abs=tol)
    assert fused.kl == pytest.approx(reference.kl, abs=tol)
    assert fused.entropy == pytest.approx(reference.entropy, rel=tol)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        v = torch.randn(fused.gradient.shape, generator=gen, dtype=torch.float64).to(dtype)
        assert _rel_err(fused.kl_hvp(v), reference.kl_hvp(v)) < tol
    alone, loss = gauss_newton.meta_gradient(theta, batch, trpo.surrogate, INNER_LR, first_order, fused=True)
    assert _rel_err(alone, reference.gradient) < tol
    assert loss == pytest.approx(reference.loss, rel=tol, abs=tol)
    shifted = {n: p + 0.01 for n, p in theta.items()}
    values = gauss_newton.evaluate(shifted, batch, trpo.surrogate, INNER_LR, fused=True)
    expected = gauss_newton.evaluate(shifted, batch, trpo.surrogate, INNER_LR, fused=False)
    assert values == pytest.approx(expected, rel=tol, abs=tol)


def test_several_first_order_inner_steps(kernels):
    theta, batch = build(SPEC, seed=2, num_grad_updates=3)
    fused = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR, first_order=True, fused=True)
    reference = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR, first_order=True, fused=False)
    assert _rel_err(fused.gradient, reference.gradient) < 1e-11
    v = torch.randn(fused.gradient.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert _rel_err(fused.kl_hvp(v), reference.kl_hvp(v)) < 1e-11


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_any_thread_count_gives_identical_results(kernels, threads):
    """Each task is computed by one thread with the same code and the task sum is serial: bit for bit."""
    theta, batch = build(SPEC, seed=3)
    point = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR)
    product = point.fused
    v = torch.randn(point.gradient.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    results = []
    for count in (1, threads):
        out = torch.empty(SPEC.num_tasks, v.shape[0], dtype=v.dtype)
        args = (mlp_kernels.OP_KL_HVP, product.layout.widths, product.inner, product.fisher, v, out)
        total = kernels.run(*args, INNER_LR, threads=count, total=torch.empty_like(v))
        results.append((out.clone(), total))
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_vector_tanh_matches_torch(kernels, dtype):
    """The forward pass's tanh, read back from the kept layer inputs of a layer that passes its input on
    unchanged (W = I, b = 0): within a few ulp of torch.tanh from tiny to saturated arguments, sign kept."""
    width = 33  # two full vectors and a tail
    magnitudes = torch.cat([torch.logspace(-30, 1.6, 3000, dtype=torch.float64), torch.tensor([0.0, 1e-45])])
    z = torch.cat([magnitudes, -magnitudes]).to(dtype)
    z = torch.cat([z, torch.zeros((-z.numel()) % width, dtype=dtype)]).view(1, -1, width)
    layout = Layout(widths=(width, width, 1))
    params = torch.zeros(layout.num_params, dtype=dtype)
    layout.weight(params, 0).copy_(torch.eye(width, dtype=dtype))
    _, inputs = kernels.forward(layout.widths, params.unsqueeze(0), z.contiguous(), keep=True)
    hidden = inputs[1][..., :-1]
    expected = torch.tanh(z)
    ulp = torch.finfo(dtype).eps
    torch.testing.assert_close(hidden, expected, rtol=4 * ulp, atol=torch.finfo(dtype).tiny)
    nonzero = z != 0  # (the layer's product turns −0 into +0 before the tanh)
    assert torch.equal(torch.signbit(hidden[nonzero]), torch.signbit(expected[nonzero]))
    assert torch.all(inputs[1][..., -1] == 1.0)


def test_arrays_still_held_are_never_reused(kernels):
    recycler = mlp_kernels.Recycler()

    class Owner:
        pass

    owner = Owner()
    first, second = (recycler.take((4, 8), torch.float32) for _ in range(2))
    recycler.release_with(owner, [first, second])
    third = recycler.take((4, 8), torch.float32)
    assert third.data_ptr() not in (first.data_ptr(), second.data_ptr())  # the owner still holds them
    del owner
    gc.collect()
    again = {recycler.take((4, 8), torch.float32).data_ptr() for _ in range(2)}
    assert again == {first.data_ptr(), second.data_ptr()}  # both, although of one shape

    # through the kernels: a linearization kept alive keeps its products while later ones are computed
    theta, batch = build(SPEC, seed=4, dtype=torch.float32)
    point = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR)
    v = torch.randn(point.gradient.shape, generator=torch.Generator().manual_seed(3))
    before = point.kl_hvp(v).clone()
    for shift in (0.01, 0.02):
        other = gauss_newton.linearize({n: p + shift for n, p in theta.items()}, batch, trpo.surrogate, 0.1)
        del other
        gc.collect()
    torch.testing.assert_close(point.kl_hvp(v), before, rtol=0, atol=0)


def test_bad_input_is_refused(kernels):
    theta, batch = build(SPEC, seed=5, dtype=torch.float32)
    layout = Layout.of(theta)
    flat = layout.flatten(theta)
    observations = batch.post.flat("observations")
    with pytest.raises(ValueError, match="contiguous CPU tensors of one dtype"):
        kernels.forward(layout.widths, flat.unsqueeze(0).expand(5, -1), observations, keep=False)
    with pytest.raises(ValueError, match="contiguous CPU tensors of one dtype"):
        kernels.forward(layout.widths, flat.double().expand(5, -1).contiguous(), observations, keep=False)
    with pytest.raises(ValueError, match="1 to 8 layers"):
        kernels.forward((3,) * 10, flat, observations, keep=False)
    with pytest.raises(RuntimeError, match="CPU tensors only"):
        gauss_newton.fused_kernels(torch.device("meta"), fused=True)
    assert gauss_newton.fused_kernels(torch.device("meta")) is None


def test_linearization_falls_back_to_the_torch_passes(monkeypatch, tmp_path):
    monkeypatch.setenv("MAML_BENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    mlp_kernels.load.cache_clear()
    try:
        theta, batch = build(SPEC, seed=6)
        with pytest.warns(RuntimeWarning, match="run in torch"):
            point = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR)  # default: falls back
        assert point.fused is None and point.chunks
        with pytest.raises(RuntimeError, match="must build"):
            gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR, fused=True)
    finally:
        mlp_kernels.load.cache_clear()


def test_net_limits_match_the_c_arrays() -> None:
    """The C structure holds at most ``MAX_LAYERS`` layers and its scratch rows ``MAX_WIDTH`` units: a
    network on either limit is accepted (one layer too: a linear policy), one past it refused before any C
    code runs — the input width counts as much as a hidden one."""
    width, layers = mlp_kernels.MAX_WIDTH, mlp_kernels.MAX_LAYERS
    assert (width, layers) == (4096, 8)
    for widths in [(4, 2), (4, width, 2), (width, 3), (3, width), (3,) * (layers + 1)]:
        net = mlp_kernels._net(widths)
        assert net.num_layers == len(widths) - 1
        assert list(net.widths)[: len(widths)] == list(widths)
    for widths in [(4, width + 1, 2), (width + 1, 3), (3, width + 1), (3,) * (layers + 2), (3,)]:
        with pytest.raises(ValueError, match="1 to 8 layers of at most 4096 units"):
            mlp_kernels._net(widths)


@pytest.mark.parametrize("spec", [NARROW_LAST, LINEAR], ids=["narrow-last", "linear"])
def test_kept_inner_side_has_the_network_shapes(kernels, spec: SyntheticSpec) -> None:
    """The inner side an adaptation keeps (``H_i``'s constants, written by the C code): one input
    ``[T, M, in + 1]`` and one delta ``[T, M, out]`` per layer, and the curvatures as wide as the action —
    not as the last hidden layer, which a narrow one would make the C code overrun."""
    theta, batch = build(spec, seed=7)
    layout = Layout.of(theta)
    pre = batch.pre[0]
    observations, actions = (pre.flat(f).contiguous() for f in ("observations", "actions"))
    weights = (pre.flat("mask") * pre.flat("advantages")).contiguous()
    flat = layout.flatten(theta)
    adapted, side = kernels.adapt(layout.widths, flat, observations, actions, weights, INNER_LR, keep=True)
    tasks, samples = observations.shape[:2]
    act = spec.act_dim
    inputs, deltas = side.sources
    assert [tuple(x.shape) for x in inputs] == [(tasks, samples, w + 1) for w in layout.widths[:-1]]
    assert [tuple(d.shape) for d in deltas] == [(tasks, samples, w) for w in layout.widths[1:]]
    curvature, log_std_curvature, cross = side.tensors[-3:]
    assert tuple(curvature.shape) == tuple(cross.shape) == (tasks, samples, act)
    assert tuple(log_std_curvature.shape) == (tasks, act)
    assert side.num_tasks == tasks and side.struct.samples == samples
    plain, none = kernels.adapt(layout.widths, flat, observations, actions, weights, INNER_LR, keep=False)
    assert none is None and torch.equal(plain, adapted)


def test_products_refuse_bad_calls(kernels) -> None:
    """``run`` computes the two products only, with a side, and checks every tensor it hands the C code (the
    task sum ``total`` included) before the call."""
    theta, batch = build(SPEC, seed=8)
    point = gauss_newton.linearize(theta, batch, trpo.surrogate, INNER_LR, fused=True)
    product = point.fused
    widths, inner, fisher = product.layout.widths, product.inner, product.fisher
    v = torch.randn(point.gradient.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = torch.empty(SPEC.num_tasks, v.shape[0], dtype=v.dtype)
    with pytest.raises(ValueError, match="needs a side"):
        kernels.run(mlp_kernels.OP_KL_HVP, widths, None, None, v, out, INNER_LR)
    for operation in (mlp_kernels.OP_ADAPT, mlp_kernels.OP_FORWARD, mlp_kernels.OP_BACKWARD):
        with pytest.raises(ValueError, match="OP_INNER_HVP or OP_KL_HVP"):
            kernels.run(operation, widths, inner, fisher, v, out, INNER_LR)
    strided = torch.empty(2 * v.shape[0], dtype=v.dtype)[::2]  # room for the C code's writes all the same
    for total in (strided, torch.empty(2 * v.shape[0], dtype=torch.float32)[: v.shape[0]]):
        with pytest.raises(ValueError, match="contiguous CPU tensors of one dtype"):
            kernels.run(mlp_kernels.OP_KL_HVP, widths, inner, fisher, v, out, INNER_LR, total=total)
    total = kernels.run(
        mlp_kernels.OP_KL_HVP, widths, inner, fisher, v, out, INNER_LR, total=torch.empty_like(v)
    )
    torch.testing.assert_close(total, point.kl_hvp(v), rtol=1e-12, atol=1e-14)
    assert kernels.run(mlp_kernels.OP_KL_HVP, widths, inner, fisher, v, out, INNER_LR) is out
    torch.testing.assert_close(out.sum(0), total, rtol=1e-12, atol=1e-14)


def _with_params(side: mlp_kernels.Side, params: torch.Tensor) -> mlp_kernels.Side:
    """``side`` with other params (the same kept inputs, deltas and curvatures)."""
    inputs, deltas = side.sources
    rest = side.tensors[1 + len(inputs) + len(deltas) :]
    return mlp_kernels.Side(
        params, inputs, *rest[:2], deltas=deltas, cross=rest[2] if len(rest) > 2 else None
    )


@pytest.mark.parametrize("spec", [SPEC, LINEAR], ids=["odd-widths", "linear"])
def test_every_call_checks_its_shapes_against_the_widths(kernels, spec: SyntheticSpec) -> None:
    """The C code takes lengths from ``widths`` and the sample count, not from the tensors: each tensor of
    another shape is refused, by name, before the call. Every bad tensor here is larger than the right one,
    so that a missing check shows as a call that returns, not as a write past a buffer."""
    theta, batch = build(spec, seed=9)
    layout = Layout.of(theta)
    widths, flat = layout.widths, layout.flatten(theta)
    size = mlp_kernels.num_params(widths)
    assert size == flat.shape[0] == sum(p.numel() for p in theta.values())
    pre = batch.pre[0]
    observations, actions = (pre.flat(f).contiguous() for f in ("observations", "actions"))
    weights = (pre.flat("mask") * pre.flat("advantages")).contiguous()
    tasks, samples = weights.shape

    def grown(tensor: torch.Tensor, dim: int) -> torch.Tensor:
        shape = list(tensor.shape)
        shape[dim] += 1
        return torch.zeros(shape, dtype=tensor.dtype)

    adapt_args = {"params": flat, "observations": observations, "actions": actions, "weights": weights}
    for name, value in adapt_args.items():
        for dim in range(value.dim()):
            bad = {**adapt_args, name: grown(value, dim)}
            # (the task and sample counts are read from the observations: the others then disagree)
            named = "" if name == "observations" and dim < 2 else name
            with pytest.raises(ValueError, match=rf"{named} must have shape"):
                kernels.adapt(widths, *bad.values(), INNER_LR, keep=False)
    with pytest.raises(ValueError, match=r"^params must have shape"):
        kernels.adapt(
            widths, flat.expand(tasks + 1, -1).contiguous(), *list(adapt_args.values())[1:], 0.1, False
        )
    for bad_params, bad_observations in [(grown(flat, 0), observations), (flat, grown(observations, 2))]:
        with pytest.raises(ValueError, match="must have shape"):
            kernels.forward(widths, bad_params, bad_observations, keep=False)
    adapted, inner = kernels.adapt(widths, flat, observations, actions, weights, INNER_LR, keep=True)
    assert tuple(adapted.shape) == (tasks, size)
    head = torch.zeros(tasks, samples, widths[-1], dtype=flat.dtype)
    for dim in range(3):
        with pytest.raises(ValueError, match=r"^head must have shape"):
            kernels.backward(widths, inner, grown(head, dim))
    assert tuple(kernels.backward(widths, inner, head).shape) == (tasks, size)

    v, out, total = flat.clone(), torch.empty(tasks, size, dtype=flat.dtype), torch.empty_like(flat)
    op = mlp_kernels.OP_INNER_HVP
    for bad_v in (grown(v, 0), grown(adapted, 0), grown(adapted, 1)):
        with pytest.raises(ValueError, match=r"^vector must have shape"):
            kernels.run(op, widths, inner, None, bad_v, out, INNER_LR)
    for bad_out in (grown(out, 0), grown(out, 1)):
        with pytest.raises(ValueError, match=r"^out must have shape"):
            kernels.run(op, widths, inner, None, v, bad_out, INNER_LR)
    with pytest.raises(ValueError, match=r"^total must have shape"):
        kernels.run(op, widths, inner, None, v, out, INNER_LR, total=grown(total, 0))
    for bad_side in (_with_params(inner, grown(flat, 0)), _with_params(inner, grown(adapted, 0))):
        with pytest.raises(ValueError, match=r"^a side's params must have shape"):
            kernels.run(op, widths, bad_side, None, v, out, INNER_LR)
        with pytest.raises(ValueError, match=r"^a side's params must have shape"):
            kernels.run(mlp_kernels.OP_KL_HVP, widths, None, bad_side, v, out, INNER_LR)
    for vector in (v, adapted):  # shared [P] and per task [T, P]
        assert kernels.run(op, widths, inner, None, vector, out, INNER_LR, total=total) is total


@pytest.mark.parametrize("threads", [1, 2])
def test_shared_theta_equals_theta_copied_per_task(kernels, threads: int) -> None:
    """``adapt`` and ``forward`` take θ shared ``[P]`` (read once per thread, stride 0) or per task
    ``[T, P]``: the same bits either way, on one thread or two (a chunk starting past the first task)."""
    theta, batch = build(SPEC, seed=10)
    layout = Layout.of(theta)
    widths, flat = layout.widths, layout.flatten(theta)
    pre = batch.pre[0]
    observations, actions = (pre.flat(f).contiguous() for f in ("observations", "actions"))
    weights = (pre.flat("mask") * pre.flat("advantages")).contiguous()
    copied = flat.expand(observations.shape[0], -1).contiguous()
    shared, _ = kernels.adapt(widths, flat, observations, actions, weights, INNER_LR, False, threads)
    per_task, _ = kernels.adapt(widths, copied, observations, actions, weights, INNER_LR, False, threads)
    assert torch.equal(shared, per_task)
    mean_shared, _ = kernels.forward(widths, flat, observations, keep=False, threads=threads)
    mean_copied, _ = kernels.forward(widths, copied, observations, keep=False, threads=threads)
    assert torch.equal(mean_shared, mean_copied)
    mean_adapted, _ = kernels.forward(widths, shared, observations, keep=False, threads=threads)
    assert not torch.equal(mean_adapted, mean_shared)  # per-task θ_i are read per task
