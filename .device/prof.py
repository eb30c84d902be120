import sys, time, torch
sys.path.insert(0, "bench/benchmarks")
from conftest import SIZES, problem
from maml import gauss_newton, trpo
from maml.config import MAMLConfig, TRPOConfig
size = SIZES[sys.argv[1] if len(sys.argv) > 1 else "halfcheetah"]
theta, batch = problem(size, "cpu")
def t(f, n=5):
    f(); best = 1e9
    for _ in range(n):
        s = time.perf_counter(); f(); best = min(best, time.perf_counter() - s)
    return best
pt = gauss_newton.linearize(theta, batch, trpo.surrogate, 0.1)
v = torch.randn_like(pt.gradient)
print("threads", torch.get_num_threads())
print("linearize", t(lambda: gauss_newton.linearize(theta, batch, trpo.surrogate, 0.1)))
print("meta_gradient", t(lambda: gauss_newton.meta_gradient(theta, batch, trpo.surrogate, 0.1)))
print("kl_hvp", t(lambda: pt.kl_hvp(v)))
print("evaluate", t(lambda: gauss_newton.evaluate(theta, batch, trpo.surrogate, 0.1)))
print("step", t(lambda: trpo.trpo_step(theta, batch, MAMLConfig(), TRPOConfig()), 3))
