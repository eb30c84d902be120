import sys, torch
sys.path.insert(0, "bench/benchmarks")
from conftest import SIZES, problem
from maml import gauss_newton, trpo
from torch.profiler import profile, ProfilerActivity
size = SIZES["halfcheetah"]
theta, batch = problem(size, "cpu")
what = sys.argv[1]
f = {"eval": lambda: gauss_newton.evaluate(theta, batch, trpo.surrogate, 0.1),
     "lin": lambda: gauss_newton.linearize(theta, batch, trpo.surrogate, 0.1)}[what]
f(); f()
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(3): f()
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
