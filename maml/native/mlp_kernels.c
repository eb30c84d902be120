/* Fused CPU kernels of the tanh MLP's R-operator passes (maml/gauss_newton.py, maml/mlp_passes.py).
 *
 * The torch passes run one whole-batch operation at a time: every intermediate ([T, M, width]) goes to
 * memory and comes back for the next element-wise step, and the narrow output head's products are
 * memory-bound. Here each task's samples go through the whole chain — R-forward, the head, R-backward and
 * the weight-gradient products — a tile of TILE samples at a time, so the intermediates stay in the
 * core's cache; the products are a small register-blocked GEMM (GCC vector extensions: AVX-512, AVX or
 * SSE as the compiler targets). Threads take contiguous ranges of tasks.
 *
 * Operations (Request.operation), `vector` being shared [P] or per task [T, P]:
 *   OP_INNER_HVP  out_i = H_i u_i: the inner loss's Hessian-vector product per task (u = vector);
 *   OP_KL_HVP     out_i = J_i F_i J_i v, J_i = I − α H_i (or F_i v without an inner side: first order);
 *   OP_ADAPT      out_i = θ_i − α ∇L_i(θ_i) (θ = vector): one inner step on the VPG loss, keeping the
 *                 constants of H_i (the inner side) when `keep` is given;
 *   OP_FORWARD    mean_i = μ_{θ_i}(observations), keeping the layer inputs when `keep` is given;
 *   OP_BACKWARD   out_i = (∂μ/∂θ_i)ᵀ g_i on the fisher side's samples (g = vector [T, M, act]), the
 *                 log-std slot zero;
 * and, where asked, the sum over tasks. Same formulas as the torch passes, term by term (see their docstrings);
 * the constants kept by OP_ADAPT / OP_FORWARD (layer inputs with their ones column, backward signals, loss
 * curvatures) have the torch passes' layouts. Only the surrogate's derivatives in μ and the log-std come from
 * torch (maml/gauss_newton.py). */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
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
#define MAX_MR 6 /* register blocking: MAX_MR rows × MAX_NB vectors of accumulators (24 of 32 zmm) */
#define MAX_NB 4
#define TILE 64 /* samples per tile: 64–128 measured alike on the 2-core Xeon, 64 slightly ahead */
#define ABI_VERSION 2

enum { OP_INNER_HVP = 0, OP_KL_HVP = 1, OP_ADAPT = 2, OP_FORWARD = 3, OP_BACKWARD = 4 };

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
  long samples;         /* M of the observations below */
  const void *observations; /* [T, M, obs] (OP_ADAPT, OP_FORWARD) */
  const void *actions;  /* [T, M, act] (OP_ADAPT) */
  const void *weights;  /* [T, M]: A·mask/n, the inner loss's sample weights (OP_ADAPT) */
  void *mean;           /* [T, M, act] out (OP_FORWARD) */
  const Side *keep;     /* NULL, or where OP_ADAPT / OP_FORWARD store the constants of a side */
} Request;

int maml_bench_mlp_abi(void) { return ABI_VERSION * 1000 + VBYTES; }

/* 1/n!, n = 0 .. 13: the Taylor coefficients of expm1. */
static const double INVERSE_FACTORIAL[14] = {
    1.0,        1.0,           1.0 / 2,        1.0 / 6,         1.0 / 24,         1.0 / 120,         1.0 / 720,
    1.0 / 5040, 1.0 / 40320.0, 1.0 / 362880.0, 1.0 / 3628800.0, 1.0 / 39916800.0, 1.0 / 479001600.0, 1.0 / 6227020800.0};

/* Per type: the integer of the same width and the bit layout (for 2^k in the vector exp), the clamp past
 * which tanh rounds to ±1, and the Taylor degree of expm1 on |r| ≤ ln2/2 (error below half an ulp). */
#define REAL float
#define INT int32_t
#define MANTISSA_BITS 23
#define EXPONENT_BIAS 127
#define TANH_CLAMP 10.0f
#define EXPM1_DEGREE 8
#define NAME(x) x##_f32
#include "mlp_kernels_body.h"

#define REAL double
#define INT int64_t
#define MANTISSA_BITS 52
#define EXPONENT_BIAS 1023
#define TANH_CLAMP 20.0
#define EXPM1_DEGREE 13
#define NAME(x) x##_f64
#include "mlp_kernels_body.h"
