import torch

from maml.cg import conjugate_gradient, dot, solve


def test_cg_solves_random_spd_systems():
    gen = torch.Generator().manual_seed(0)
    for n in (2, 10, 30):
        m = torch.randn(n, n, generator=gen, dtype=torch.float64)
        a = m @ m.T + 0.5 * torch.eye(n, dtype=torch.float64)
        b = torch.randn(n, generator=gen, dtype=torch.float64)
        x = conjugate_gradient(lambda v, a=a: a @ v, b, iters=3 * n, residual_tol=1e-24)
        torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-8, atol=1e-8)


def test_cg_exact_in_n_steps_for_distinct_eigenvalues():
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    a = q @ torch.diag(torch.arange(1.0, 7.0, dtype=torch.float64)) @ q.T
    b = torch.ones(6, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iters=6)
    torch.testing.assert_close(a @ x, b, rtol=1e-9, atol=1e-9)
    # fewer iterations than the dimension leave a residual
    assert (a @ conjugate_gradient(lambda v: a @ v, b, iters=2) - b).norm() > 1e-3


def test_cg_curvature_from_the_residual_equals_the_explicit_product():
    gen = torch.Generator().manual_seed(2)
    m = torch.randn(40, 40, generator=gen, dtype=torch.float64)
    a = m @ m.T + 0.1 * torch.eye(40, dtype=torch.float64)
    b = torch.randn(40, generator=gen, dtype=torch.float64)
    for iters in (1, 3, 10):  # also short of convergence, as TRPO's 10 iterations are
        result = solve(lambda v: a @ v, b, iters=iters)
        explicit = result.x @ (a @ result.x)
        assert abs(result.curvature(b) - explicit) <= 1e-10 * explicit


def test_cg_gives_the_same_bits_on_one_thread_or_two():
    """MKL's ``?dot`` splits vectors of ≥ 8192 float32 (4096 float64) elements across threads; a Meta-World
    policy has 14,508 parameters, whose TRPO steps then changed with the threads per run."""
    gen = torch.Generator().manual_seed(3)
    previous = torch.get_num_threads()
    for dtype, n in ((torch.float32, 14508), (torch.float64, 40000)):
        scale = torch.rand(n, generator=gen, dtype=torch.float64).to(dtype) + 0.1
        b = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype)
        results = []
        try:
            for threads in (1, 2):
                torch.set_num_threads(threads)
                result = solve(lambda v, scale=scale: scale * v, b, iters=10)
                results.append((result.x, result.curvature(b), dot(b, scale)))
                assert torch.get_num_threads() == threads  # restored after each product
        finally:
            torch.set_num_threads(previous)
        for one, two in zip(*results, strict=True):
            assert torch.equal(one, two), dtype
