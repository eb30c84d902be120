import sys, time, torch
sys.path.insert(0, "bench/benchmarks")
from conftest import SIZES, problem
from maml import gauss_newton, trpo
from maml.native import mlp_kernels as mk
size = SIZES["halfcheetah"]
theta, batch = problem(size, "cpu")
lin = gauss_newton.linearize(theta, batch, trpo.surrogate, 0.1, task_chunk=size.num_tasks)
(inner, fisher), = lin.chunks
lib = mk.load()
iside = mk.Side(inner.theta, inner.acts.inputs, inner.mean_curvature, inner.log_std_curvature, inner.deltas, inner.cross_curvature)
fside = mk.Side(fisher.adapted, fisher.acts.inputs, fisher.mean_weight, fisher.log_std_weight)
v = torch.randn_like(lin.gradient); out = torch.empty(size.num_tasks, v.shape[0])
s = time.perf_counter()
for _ in range(30): lib.run(mk.OP_KL_HVP, lin.layout.widths, iside, fside, v, out, inner_lr=0.1, threads=1)
print((time.perf_counter() - s) / 30)
