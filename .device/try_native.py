import sys, time, torch
sys.path.insert(0, "bench/benchmarks")
from conftest import SIZES, problem
from maml import gauss_newton, trpo, mlp_passes
from maml.native import mlp_kernels as mk
size = SIZES[sys.argv[1] if len(sys.argv) > 1 else "halfcheetah"]
theta, batch = problem(size, "cpu")
if len(sys.argv) > 2:
    theta = {n: p.double() for n, p in theta.items()}; batch = batch.to(dtype=torch.float64) if hasattr(batch, "to") else batch
lin = gauss_newton.linearize(theta, batch, trpo.surrogate, 0.1, task_chunk=size.num_tasks)
(inner, fisher), = lin.chunks
lib = mk.load()
widths = lin.layout.widths
L = len(widths) - 1
iside = mk.Side(inner.theta, inner.acts.inputs, inner.mean_curvature, inner.log_std_curvature, inner.deltas, inner.cross_curvature)
fside = mk.Side(fisher.adapted, fisher.acts.inputs, fisher.mean_weight, fisher.log_std_weight)
v = torch.randn_like(lin.gradient)
T, P = size.num_tasks, v.shape[0]
out = torch.empty(T, P)
# inner hvp check
ref = gauss_newton.inner_hvp(inner, v, torch.empty(T, P), mlp_passes.Buffers())
lib.run(mk.OP_INNER_HVP, widths, iside, None, v, out)
print("inner rel err", ((out - ref).norm() / ref.norm()).item())
ref = lin.kl_hvp(v)
def nat():
    lib.run(mk.OP_KL_HVP, widths, iside, fside, v, out, inner_lr=0.1)
    return out.sum(0)
print("kl rel err", ((nat() - ref).norm() / ref.norm()).item())
def t(f, n=5):
    f(); best = 1e9
    for _ in range(n):
        s = time.perf_counter(); f(); best = min(best, time.perf_counter() - s)
    return best
print("torch", t(lambda: lin.kl_hvp(v)), "native", t(nat), "native 1 thread", t(lambda: lib.run(mk.OP_KL_HVP, widths, iside, fside, v, out, inner_lr=0.1, threads=1)))
print("native 2 threads, no torch op", t(lambda: lib.run(mk.OP_KL_HVP, widths, iside, fside, v, out, inner_lr=0.1, threads=2)))
print("native 1 thread", t(lambda: lib.run(mk.OP_KL_HVP, widths, iside, fside, v, out, inner_lr=0.1, threads=1)))
