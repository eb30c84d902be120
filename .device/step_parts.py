import sys, time, torch, collections
sys.path.insert(0, "bench/benchmarks")
from conftest import SIZES, problem
from maml import gauss_newton, trpo, cg
from maml.config import MAMLConfig, TRPOConfig
size = SIZES[sys.argv[1] if len(sys.argv) > 1 else "halfcheetah"]
theta, batch = problem(size, "cpu")
acc = collections.defaultdict(float)
def wrap(mod, name):
    f = getattr(mod, name)
    def g(*a, **k):
        s = time.perf_counter(); r = f(*a, **k); acc[name] += time.perf_counter() - s; return r
    setattr(mod, name, g)
wrap(gauss_newton, "linearize"); wrap(gauss_newton, "evaluate"); wrap(cg, "solve")
orig = gauss_newton.Linearization.kl_hvp
def khv(self, v):
    s = time.perf_counter(); r = orig(self, v); acc["kl_hvp"] += time.perf_counter() - s; return r
gauss_newton.Linearization.kl_hvp = khv
trpo.trpo_step(theta, batch, MAMLConfig(), TRPOConfig())
for _ in range(5):
    acc.clear(); s = time.perf_counter(); _, st = trpo.trpo_step(theta, batch, MAMLConfig(), TRPOConfig()); tot = time.perf_counter() - s
    print(f"step {tot:.3f} " + " ".join(f"{k} {v:.3f}" for k, v in acc.items()), st["LineSearchTries"])
