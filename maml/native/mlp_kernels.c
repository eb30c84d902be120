/* Fused CPU kernels of the tanh MLP's R-operator passes (maml/gauss_newton.py, maml/mlp_passes.py).
 *
 * The torch passes run one whole-batch operation at a time: every intermediate ([T, M, width]) goes to
 * memory and comes back for the next element-wise step, and the narrow output head's products are
 * memory-bound. Here each task's samples go through the whole chain — R-forward, the head, R-backward and
 * the weight-gradient products — a tile of TILE samples at a time, so the intermediates stay in the
 * core's cache; the products are a small register-blocked GEMM (GCC vector extensions: AVX-512, AVX or
 * SSE as the compiler targets). Threads take contiguous ranges of tasks.
 *
 * Operations (Request.operation):
 *   OP_INNER_HVP  out_i = H_i u_i: the inner loss's Hessian-vector product per task (u shared or per task);
 *   OP_KL_HVP     out_i = J_i F_i J_i v, J_i = I − α H_i (or F_i v without an inner side: first order);
 * and, where asked, the sum over tasks. Same formulas as the torch passes, term by term (see their docstrings).
 * The constants (layer inputs with their ones column, backward signals, loss curvatures) come from torch. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
#define VBYTES 64
#elif defined(__AVX__)
#define VBYTES 32
#else
#define VBYTES 16
#endif
#define MAX_LAYERS 8
#define MAX_WIDTH 4096
#define MAX_THREADS 256
#define MAX_MR 6
#define MAX_NB 4
#ifndef TILE
#define TILE 128
#endif
#define ABI_VERSION 1

enum { OP_INNER_HVP = 0, OP_KL_HVP = 1 };

typedef struct {
  int num_layers;
  int widths[MAX_LAYERS + 1];
} Net;

/* One side of the computation: the pre-update samples (inner loss) or the post-update ones (Fisher). */
typedef struct {
  long samples;                   /* M per task */
  const void *params;             /* θ [P] (inner side) or θ' [T, P] (Fisher side) */
  const void *inputs[MAX_LAYERS]; /* X_k [T, M, in_k + 1] */
  const void *deltas[MAX_LAYERS]; /* δ_k [T, M, out_k] (inner side only) */
  const void *curvature;          /* c [T, M, act] (inner) or the Fisher's mean weight [T, M, act] */
  const void *cross;              /* 2cr [T, M, act] (inner side only) */
  const void *log_std_curvature;  /* Σ 2cr² [T, act] (inner) or the Fisher's log-std weight [T] */
} Side;

typedef struct {
  Net net;
  int operation;
  int threads;
  long num_tasks;
  double inner_lr;
  const Side *inner;    /* NULL: J_i = I */
  const Side *fisher;
  const void *vector;   /* [P] shared (vector_task_stride 0) or [T, P] */
  long vector_task_stride;
  void *out;            /* [T, P] */
  void *total;          /* NULL, or [P]: receives Σ_i out_i */
} Request;

int maml_bench_mlp_abi(void) { return ABI_VERSION * 1000 + VBYTES; }

#define REAL float
#define NAME(x) x##_f32
#include "mlp_kernels_body.h"
#undef NAME
#undef REAL

#define REAL double
#define NAME(x) x##_f64
#include "mlp_kernels_body.h"
#undef NAME
#undef REAL
