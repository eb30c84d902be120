/* The inner loop of maml.envs.mujoco_batch in C: step a slice of saved simulations with one scratch mjData.
 *
 * For each row: load the integration state (mj_setState), take nstep mj_step calls (what the Python
 * binding's mj_step(m, d, nstep) does), save the state back (mj_getState) and copy data->xpos out.
 * The same MuJoCo calls in the same order as the Python loop, so the results are bit for bit the same;
 * called through ctypes, which releases the GIL for the whole slice, so threads step slices in parallel.
 */
#include <math.h>
#include <string.h>

#include <mujoco/mujoco.h>

int maml_bench_native_abi(void) { return mjVERSION_HEADER; }

void maml_bench_step_rows(const mjModel* m, mjData* d, mjtNum* states, int nrows, int nstate,
                          unsigned int spec, int nstep, mjtNum* xpos) {
  const int nxpos = 3 * m->nbody;
  for (int row = 0; row < nrows; ++row) {
    mjtNum* state = states + (size_t)row * nstate;
    mj_setState(m, d, state, spec);
    for (int k = 0; k < nstep; ++k) {
      mj_step(m, d);
    }
    mj_getState(m, d, state, spec);
    memcpy(xpos + (size_t)row * nxpos, d->xpos, sizeof(mjtNum) * nxpos);
  }
}

/* SawyerXYZEnv.step of Meta-World 3.1.1 from its action to its mj_forward (maml.envs.metaworld_fast.step).
 *
 * The action (a0, a1, a2, a3) must be finite (checked first: else 1 is returned with nothing written and the
 * caller takes the Python path); low and high are the mocap box (3 float64 each). Then, as the stock Python
 * does: set_xyz_action (np.clip to [-1, 1], times scale, plus mocap_pos, np.clip to the box: numpy's clip is
 * min(max(x, lo), hi) with max(a, b) = a > b || a != a ? a : b, so a NaN passes), mocap_quat (1, 0, 1, 0),
 * ctrl = (a3, -a3), nstep mj_step calls; then mj_forward when `forward` is set. Built with
 * -ffp-contract=off: each product and sum is rounded on its own, as Python rounds it. Returns 0. */
int maml_bench_sawyer_advance(const mjModel* m, mjData* d, double a0, double a1, double a2, double a3,
                              const double* low, const double* high, double scale, int nstep, int forward) {
  if (!(isfinite(a0) && isfinite(a1) && isfinite(a2) && isfinite(a3)) || m->nmocap != 1 || m->nu != 2) {
    return 1;
  }
  const double action[3] = {a0, a1, a2};
  for (int i = 0; i < 3; ++i) {
    double a = action[i];
    a = a > -1.0 ? a : -1.0;
    a = a < 1.0 ? a : 1.0;
    double x = d->mocap_pos[i] + a * scale;
    x = (x > low[i] || x != x) ? x : low[i];
    x = (x < high[i] || x != x) ? x : high[i];
    d->mocap_pos[i] = x;
  }
  d->mocap_quat[0] = 1.0;
  d->mocap_quat[1] = 0.0;
  d->mocap_quat[2] = 1.0;
  d->mocap_quat[3] = 0.0;
  d->ctrl[0] = a3;
  d->ctrl[1] = -a3;
  for (int k = 0; k < nstep; ++k) {
    mj_step(m, d);
  }
  if (forward) {
    mj_forward(m, d);
  }
  return 0;
}
