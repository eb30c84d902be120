import sys, time, torch
from maml import gauss_newton, trpo, policy
from maml.synthetic import SyntheticSpec, make_meta_batch
from maml.native import mlp_kernels as mk
def run(T, E, H, reps):
    gen = torch.Generator().manual_seed(0)
    theta = policy.init_params(20, 6, (64, 64), gen)
    spec = SyntheticSpec(num_tasks=T, episodes=E, horizon=H, obs_dim=20, act_dim=6, hidden_sizes=(64, 64), padded=False)
    batch = make_meta_batch(theta, spec, torch.Generator().manual_seed(1))
    lin = gauss_newton.linearize(theta, batch, trpo.surrogate, 0.1)
    v = torch.randn_like(lin.gradient)
    f = lin.fused
    f(v, lin.buffers)
    s = time.perf_counter()
    for _ in range(reps): f.kernels.run(mk.OP_KL_HVP, f.layout.widths, f.inner, f.fisher, v, torch.empty(T, v.shape[0]), 0.1, threads=1)
    el = (time.perf_counter() - s) / reps
    print(T, E * H, f"{el / (T * E * H) * 1e9:.0f} ns/sample")
run(1, 4, 100, 400)
run(1, 10, 100, 200)
run(20, 40, 100, 3)
