/* The inner loop of maml.envs.mujoco_batch in C: step a slice of saved simulations with one scratch mjData.
 *
 * For each row: load the integration state (mj_setState), take nstep mj_step calls (what the Python
 * binding's mj_step(m, d, nstep) does), save the state back (mj_getState) and copy data->xpos out.
 * The same MuJoCo calls in the same order as the Python loop, so the results are bit for bit the same;
 * called through ctypes, which releases the GIL for the whole slice, so threads step slices in parallel.
 */
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
