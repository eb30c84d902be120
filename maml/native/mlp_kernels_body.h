/* The body of mlp_kernels.c for one floating-point type: included once per type with
 *   REAL (float or double), NAME(x) (x with the type's suffix), INT (the integer of REAL's width),
 *   MANTISSA_BITS, EXPONENT_BIAS, TANH_CLAMP and EXPM1_DEGREE (see mlp_kernels.c),
 * which it undefines at its end. See mlp_kernels.c for what is computed and how. */

typedef REAL NAME(vec) __attribute__((vector_size(VBYTES)));
typedef REAL NAME(uvec) __attribute__((vector_size(VBYTES), aligned(sizeof(REAL)))); /* unaligned */
typedef INT NAME(ivec) __attribute__((vector_size(VBYTES)));
#define VLEN ((int)(VBYTES / sizeof(REAL)))

/* expm1(y) for 0 ≤ y ≤ 2·TANH_CLAMP: y = k ln2 + r with |r| ≤ ln2/2 (Cody–Waite: ln2 in two parts),
 * expm1(y) = 2^k expm1(r) + (2^k − 1), expm1(r) by its Taylor series. Relative error of a few ulp; exact
 * reduction for k = 0, so small y keep full relative accuracy. */
static inline NAME(vec) NAME(expm1_nonnegative)(NAME(vec) y) {
  const REAL log2e = (REAL)1.4426950408889634, ln2_hi = (REAL)0.693359375, ln2_lo = (REAL)-2.12194440054690583e-4;
  NAME(ivec) k = __builtin_convertvector(y * log2e + (REAL)0.5, NAME(ivec)); /* y ≥ 0: truncation = floor */
  NAME(vec) kf = __builtin_convertvector(k, NAME(vec));
  NAME(vec) r = (y - kf * ln2_hi) - kf * ln2_lo;
  /* Horner on Σ_{n=1}^{D} r^n / n! = r (1/1! + r (1/2! + … + r / D!)) */
  NAME(vec) series = (NAME(vec)){0} + (REAL)INVERSE_FACTORIAL[EXPM1_DEGREE];
  _Pragma("GCC unroll 16") for (int n = EXPM1_DEGREE - 1; n >= 1; n--) series = series * r + (REAL)INVERSE_FACTORIAL[n];
  NAME(vec) expm1_r = series * r;
  NAME(vec) two_k = (NAME(vec))((k + EXPONENT_BIAS) << MANTISSA_BITS);
  return two_k * expm1_r + (two_k - (REAL)1);
}

/* tanh(z) = sign(z) · t / (t + 2), t = expm1(2 min(|z|, TANH_CLAMP)). */
static inline NAME(vec) NAME(tanh_vec)(NAME(vec) z) {
  const NAME(ivec) sign_bit = (NAME(ivec)){0} + ((INT)1 << (8 * sizeof(INT) - 1));
  NAME(ivec) bits = (NAME(ivec))z;
  NAME(vec) magnitude = (NAME(vec))(bits & ~sign_bit);
  NAME(vec) clamp = (NAME(vec)){0} + TANH_CLAMP;
  NAME(ivec) big = magnitude > clamp;
  magnitude = (NAME(vec))((big & (NAME(ivec))clamp) | (~big & (NAME(ivec))magnitude));
  NAME(vec) t = NAME(expm1_nonnegative)(magnitude + magnitude);
  NAME(vec) result = t / (t + (REAL)2);
  return (NAME(vec))((NAME(ivec))result | (bits & sign_bit));
}

/* x[j] = tanh(z[j]) for j < n (any alignment; the tail goes through a zero-padded vector). */
static void NAME(tanh_row)(const REAL *z, REAL *x, long n) {
  long j = 0;
  for (; j + VLEN <= n; j += VLEN) *(NAME(uvec) *)(x + j) = NAME(tanh_vec)(*(const NAME(uvec) *)(z + j));
  if (j < n) {
    REAL buffer[VLEN];
    memset(buffer, 0, sizeof buffer);
    memcpy(buffer, z + j, (size_t)(n - j) * sizeof(REAL));
    NAME(vec) out = NAME(tanh_vec)(*(const NAME(uvec) *)buffer);
    memcpy(x + j, &out, (size_t)(n - j) * sizeof(REAL));
  }
}

/* Micro-kernel: C[i][0 : NB·VLEN] (+)= Σ_p a(i, p) · B[p][0 : NB·VLEN] for i < MR, with
 * a(i, p) = a[i·ai + p·ap] (so A may be read transposed), B rows ldb apart, C rows ldc apart.
 * MR × NB accumulators stay in registers. */
#define KERNEL(MR, NB)                                                                                  \
  static void NAME(kernel_##MR##_##NB)(long K, const REAL *a, long ai, long ap, const REAL *b, long ldb, \
                                       REAL *c, long ldc, int accumulate) {                             \
    NAME(vec) acc[MR][NB];                                                                              \
    _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++)                                                \
    _Pragma("GCC unroll 8") for (int j = 0; j < NB; j++)                                                \
      acc[i][j] = accumulate ? *(const NAME(uvec) *)(c + i * ldc + j * VLEN) : (NAME(vec)){0};          \
    for (long p = 0; p < K; p++) {                                                                      \
      NAME(vec) bv[NB];                                                                                 \
      _Pragma("GCC unroll 8") for (int j = 0; j < NB; j++) bv[j] = *(const NAME(uvec) *)(b + p * ldb + j * VLEN); \
      _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++) {                                            \
        const REAL av = a[i * ai + p * ap]; /* a scalar operand: broadcast from memory */                \
        _Pragma("GCC unroll 8") for (int j = 0; j < NB; j++) acc[i][j] += av * bv[j];                   \
      }                                                                                                 \
    }                                                                                                   \
    _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++)                                                \
    _Pragma("GCC unroll 8") for (int j = 0; j < NB; j++)                                                \
      *(NAME(uvec) *)(c + i * ldc + j * VLEN) = acc[i][j];                                              \
  }
#define KERNEL_ROW(MR) KERNEL(MR, 1) KERNEL(MR, 2) KERNEL(MR, 3) KERNEL(MR, 4)
KERNEL_ROW(1) KERNEL_ROW(2) KERNEL_ROW(3) KERNEL_ROW(4) KERNEL_ROW(5) KERNEL_ROW(6)
#undef KERNEL_ROW
#undef KERNEL

#define CASE(MR, NB) \
  case MR * 8 + NB: NAME(kernel_##MR##_##NB)(K, a, ai, ap, b, ldb, c, ldc, accumulate); break;
#define CASE_ROW(MR) CASE(MR, 1) CASE(MR, 2) CASE(MR, 3) CASE(MR, 4)
static void NAME(kernel)(int mr, int nb, long K, const REAL *a, long ai, long ap, const REAL *b, long ldb,
                         REAL *c, long ldc, int accumulate) {
  switch (mr * 8 + nb) { CASE_ROW(1) CASE_ROW(2) CASE_ROW(3) CASE_ROW(4) CASE_ROW(5) CASE_ROW(6) }
}
#undef CASE_ROW
#undef CASE

/* C [M, N] (+)= A [M, K] · B [K, N] with A's element (i, p) at a[i·ai + p·ap]; N a multiple of VLEN. */
static void NAME(gemm)(long M, long N, long K, const REAL *a, long ai, long ap, const REAL *b, long ldb,
                       REAL *c, long ldc, int accumulate) {
  long vectors = N / VLEN;
  for (long j = 0; j < vectors; j += MAX_NB) {
    int nb = (int)(vectors - j < MAX_NB ? vectors - j : MAX_NB);
    for (long i = 0; i < M; i += MAX_MR) {
      int mr = (int)(M - i < MAX_MR ? M - i : MAX_MR);
      NAME(kernel)(mr, nb, K, a + i * ai, ai, ap, b + j * VLEN, ldb, c + i * ldc + j * VLEN, ldc, accumulate);
    }
  }
}

/* One layer's parameters in padded form: A = [W; b] as [in + 1, pad(out)] (for X·A and R{x}·W) and,
 * for the layers past the first, Wᵀ as [out, pad(in)] (for δ·Wᵀ). Pad columns are zero. */
typedef struct {
  REAL *layer[MAX_LAYERS];
  REAL *transposed[MAX_LAYERS];
} NAME(Padded);

/* Scratch of one thread: padded parameters, per-layer gradient blocks and the tile's intermediates. */
typedef struct {
  NAME(Padded) theta, tangent;
  REAL *gradient[MAX_LAYERS]; /* [in + 1, pad(out)]; a narrow layer's transposed, [out, pad(in + 1)] */
  REAL *r_z[MAX_LAYERS];      /* R{z_k} [TILE, pad(out_k)] */
  REAL *r_x[MAX_LAYERS];      /* R{x_k} [TILE, pad(in_k)], k ≥ 1 */
  REAL *r_delta, *r_delta_x;  /* [TILE, pad(max width)] */
  REAL *delta_tile;           /* a δ tile copied to padded rows when its width is not a multiple of VLEN */
  REAL *inputs[MAX_LAYERS];   /* X_k tiles [TILE, in_k + 1] when they are not kept */
  REAL *vec_a, *vec_b, *vec_c; /* flat [P] vectors */
  double log_std[MAX_WIDTH]; /* a sum over the task's samples: accumulated in double */
} NAME(Scratch);

static long NAME(pad)(long n) { return (n + VLEN - 1) / VLEN * VLEN; }

/* A layer narrower than one vector (the Gaussian head): its weight gradient is accumulated transposed,
 * Dᵀ X with vectors along X's columns, instead of Xᵀ D with most lanes of each vector padding. */
static int NAME(narrow)(const Net *net, int k) { return net->widths[k + 1] < VLEN; }

static long NAME(gradient_size)(const Net *net, int k) {
  long in = net->widths[k], out = net->widths[k + 1];
  return NAME(narrow)(net, k) ? out * NAME(pad)(in + 1) : (in + 1) * NAME(pad)(out);
}

/* Ask for the `count` elements at `p` to be brought into L2: the same row of the next tile, requested while
 * this one computes, so that the first touch of each constant does not wait on memory. (A prefetch past the
 * end of an array is harmless.) */
static inline void NAME(prefetch_row)(const REAL *p, long count) {
  for (long offset = 0; offset < count * (long)sizeof(REAL); offset += 64) __builtin_prefetch((const char *)p + offset, 0, 2);
}

static REAL *NAME(zeros)(long count, int *failed) {
  size_t bytes = (size_t)((count * (long)sizeof(REAL) + 63) / 64 * 64);
  REAL *p = aligned_alloc(64, bytes ? bytes : 64);
  if (p == NULL) *failed = 1;
  else memset(p, 0, bytes);
  return p;
}

static long NAME(layer_offset)(const Net *net, int k) {
  long offset = 0;
  for (int j = 0; j < k; j++) offset += (long)(net->widths[j] + 1) * net->widths[j + 1];
  return offset;
}

static long NAME(num_params)(const Net *net) {
  return NAME(layer_offset)(net, net->num_layers) + net->widths[net->num_layers];
}

static int NAME(padded_alloc)(const Net *net, NAME(Padded) *p) {
  int failed = 0;
  for (int k = 0; k < net->num_layers; k++) {
    long in = net->widths[k], out = net->widths[k + 1];
    p->layer[k] = NAME(zeros)((in + 1) * NAME(pad)(out), &failed);
    p->transposed[k] = k > 0 ? NAME(zeros)(out * NAME(pad)(in), &failed) : NULL;
  }
  return failed;
}

static void NAME(padded_free)(const Net *net, NAME(Padded) *p) {
  for (int k = 0; k < net->num_layers; k++) {
    free(p->layer[k]);
    free(p->transposed[k]);
  }
}

/* Copy a flat parameter vector (canonical order w0, b0, …, log_std) into padded layers. */
static void NAME(padded_set)(const Net *net, NAME(Padded) *p, const REAL *flat, int with_transposed) {
  for (int k = 0; k < net->num_layers; k++) {
    long in = net->widths[k], out = net->widths[k + 1], po = NAME(pad)(out), pi = NAME(pad)(in);
    const REAL *src = flat + NAME(layer_offset)(net, k);
    for (long r = 0; r <= in; r++) memcpy(p->layer[k] + r * po, src + r * out, (size_t)out * sizeof(REAL));
    if (k > 0 && with_transposed)
      for (long r = 0; r < in; r++)
        for (long c = 0; c < out; c++) p->transposed[k][c * pi + r] = src[r * out + c];
  }
}

static int NAME(scratch_alloc)(const Net *net, NAME(Scratch) *s) {
  int failed = NAME(padded_alloc)(net, &s->theta) | NAME(padded_alloc)(net, &s->tangent);
  long widest = 0;
  for (int k = 0; k <= net->num_layers; k++) widest = net->widths[k] > widest ? net->widths[k] : widest;
  for (int k = 0; k < net->num_layers; k++) {
    long in = net->widths[k], out = net->widths[k + 1];
    s->gradient[k] = NAME(zeros)(NAME(gradient_size)(net, k), &failed);
    s->r_z[k] = NAME(zeros)(TILE * NAME(pad)(out), &failed);
    s->r_x[k] = k > 0 ? NAME(zeros)(TILE * NAME(pad)(in), &failed) : NULL;
    s->inputs[k] = NAME(zeros)(TILE * (in + 1), &failed);
  }
  s->r_delta = NAME(zeros)(TILE * NAME(pad)(widest), &failed);
  s->r_delta_x = NAME(zeros)(TILE * NAME(pad)(widest), &failed);
  s->delta_tile = NAME(zeros)(TILE * NAME(pad)(widest), &failed);
  long params = NAME(num_params)(net);
  s->vec_a = NAME(zeros)(params, &failed);
  s->vec_b = NAME(zeros)(params, &failed);
  s->vec_c = NAME(zeros)(params, &failed);
  return failed;
}

static void NAME(scratch_free)(const Net *net, NAME(Scratch) *s) {
  NAME(padded_free)(net, &s->theta);
  NAME(padded_free)(net, &s->tangent);
  for (int k = 0; k < net->num_layers; k++) {
    free(s->gradient[k]);
    free(s->r_z[k]);
    free(s->r_x[k]);
    free(s->inputs[k]);
  }
  free(s->r_delta);
  free(s->r_delta_x);
  free(s->delta_tile);
  free(s->vec_a);
  free(s->vec_b);
  free(s->vec_c);
}

/* Per-layer gradient blocks → the layer views of a flat vector (the log-std slot is left alone). */
static void NAME(gradient_store)(const Net *net, const NAME(Scratch) *s, REAL *flat) {
  for (int k = 0; k < net->num_layers; k++) {
    long in = net->widths[k], out = net->widths[k + 1], po = NAME(pad)(out);
    REAL *dst = flat + NAME(layer_offset)(net, k);
    if (NAME(narrow)(net, k)) {
      long pu = NAME(pad)(in + 1);
      for (long r = 0; r <= in; r++)
        for (long c = 0; c < out; c++) dst[r * out + c] = s->gradient[k][c * pu + r];
      continue;
    }
    for (long r = 0; r <= in; r++) memcpy(dst + r * out, s->gradient[k] + r * po, (size_t)out * sizeof(REAL));
  }
}

static void NAME(gradient_zero)(const Net *net, NAME(Scratch) *s) {
  for (int k = 0; k < net->num_layers; k++)
    memset(s->gradient[k], 0, (size_t)NAME(gradient_size)(net, k) * sizeof(REAL));
}

/* R-forward over one tile of `rows` samples: R{z_k} = X_k U_k + R{x_k} W_k, R{x_k} = tanh'(z_{k−1}) R{z_{k−1}}
 * with tanh' = 1 − x_k² read from the layer input X_k. `inputs[k]` point at the tile's first row. */
static void NAME(r_forward)(const Net *net, NAME(Scratch) *s, const REAL *const *inputs, long rows) {
  int L = net->num_layers;
  for (int k = 0; k < L; k++) {
    long in = net->widths[k], out = net->widths[k + 1], po = NAME(pad)(out);
    if (k > 0) {
      long pi = NAME(pad)(in);
      const REAL *prev = s->r_z[k - 1];
      for (long i = 0; i < rows; i++) {
        const REAL *x = inputs[k] + i * (in + 1);
        REAL *rx = s->r_x[k] + i * pi;
        NAME(prefetch_row)(x + TILE * (in + 1), in + 1);
        if (k == 1) NAME(prefetch_row)(inputs[0] + (i + TILE) * (net->widths[0] + 1), net->widths[0] + 1);
        for (long j = 0; j < in; j++) rx[j] = prev[i * pi + j] * (1 - x[j] * x[j]);
      }
    }
    NAME(gemm)(rows, po, in + 1, inputs[k], in + 1, 1, s->tangent.layer[k], po, s->r_z[k], po, 0);
    if (k > 0) NAME(gemm)(rows, po, in, s->r_x[k], NAME(pad)(in), 1, s->theta.layer[k], po, s->r_z[k], po, 1);
  }
}

/* gradient_k += X_kᵀ · D for a tile (X [rows, x_cols] of which the first `used` columns count; D [rows, out],
 * rows `ld` apart, padded to pad(out) unless the layer is narrow): the weight-gradient product. */
static void NAME(add_outer)(const Net *net, NAME(Scratch) *s, int k, const REAL *x, long x_cols, long used,
                            const REAL *d, long ld, long rows) {
  long in = net->widths[k], out = net->widths[k + 1];
  if (NAME(narrow)(net, k)) { /* gradient_kᵀ += Dᵀ X: whole vectors of X's columns, then the odd ones */
    long pu = NAME(pad)(in + 1), whole = used / VLEN * VLEN;
    REAL *gradient = s->gradient[k];
    if (whole > 0) NAME(gemm)(out, whole, rows, d, 1, ld, x, x_cols, gradient, pu, 1);
    for (long c = whole; c < used; c++)
      for (long j = 0; j < out; j++) {
        REAL sum = 0;
        for (long i = 0; i < rows; i++) sum += d[i * ld + j] * x[i * x_cols + c];
        gradient[j * pu + c] += sum;
      }
    return;
  }
  long po = NAME(pad)(out);
  NAME(gemm)(used, po, rows, x, 1, x_cols, d, ld, s->gradient[k], po, 1);
}

/* H_i u for one task: the inner loss's exact Hessian-vector product (R-forward, then R-backward, tile by tile).
 * `s->theta` holds θ padded; `tangent` is the flat u; the result goes to the flat `out` (log-std included). */
static void NAME(inner_hvp_task)(const Net *net, const Side *side, long task, NAME(Scratch) *s,
                                 const REAL *tangent, REAL *out) {
  int L = net->num_layers;
  long M = side->samples, act = net->widths[L], pact = NAME(pad)(act);
  const REAL *u_log_std = tangent + NAME(layer_offset)(net, L);
  NAME(padded_set)(net, &s->tangent, tangent, 1);
  NAME(gradient_zero)(net, s);
  for (long j = 0; j < act; j++) s->log_std[j] = 0;
  const REAL *curv = (const REAL *)side->curvature + task * M * act;
  const REAL *cross = (const REAL *)side->cross + task * M * act;
  for (long r0 = 0; r0 < M; r0 += TILE) {
    long rows = M - r0 < TILE ? M - r0 : TILE;
    const REAL *x[MAX_LAYERS], *delta[MAX_LAYERS];
    for (int k = 0; k < L; k++) {
      long in = net->widths[k], out = net->widths[k + 1];
      x[k] = (const REAL *)side->inputs[k] + (task * M + r0) * (in + 1);
      delta[k] = (const REAL *)side->deltas[k] + (task * M + r0) * out;
    }
    NAME(r_forward)(net, s, x, rows);
    /* The Gaussian head: R{∂ℓ/∂μ} = c R{μ} + 2cr·u_s and R{∂ℓ/∂s} = Σ 2cr R{μ} (+ the constant part below). */
    const REAL *r_mean = s->r_z[L - 1];
    REAL *r_delta = s->r_delta;
    for (long i = 0; i < rows; i++) {
      const REAL *c = curv + (r0 + i) * act, *cr = cross + (r0 + i) * act;
      NAME(prefetch_row)(c + TILE * act, act);
      NAME(prefetch_row)(cr + TILE * act, act);
      for (long j = 0; j < act; j++) {
        REAL m = r_mean[i * pact + j];
        s->log_std[j] += cr[j] * m;
        r_delta[i * pact + j] = c[j] * m + cr[j] * u_log_std[j];
      }
    }
    /* R-backward: R{∂ℓ/∂A_k} = X_kᵀ R{δ_k} + [R{x_k}ᵀ δ_k; 0];
     * R{δ_{k−1}} = (δ_k dW_kᵀ + R{δ_k} W_kᵀ) ⊙ (1 − x_k²) − 2 x_k ⊙ δ_{k−1} ⊙ R{z_{k−1}}. */
    for (int k = L - 1; k >= 0; k--) {
      long in = net->widths[k], out = net->widths[k + 1], po = NAME(pad)(out), pi = NAME(pad)(in);
      NAME(add_outer)(net, s, k, x[k], in + 1, in + 1, r_delta, po, rows);
      if (k == 0) break;
      const REAL *d = delta[k];
      long ld = out;
      if (out % VLEN != 0 && !NAME(narrow)(net, k)) { /* rows padded for the vector loads of add_outer */
        for (long i = 0; i < rows; i++) memcpy(s->delta_tile + i * po, d + i * out, (size_t)out * sizeof(REAL));
        d = s->delta_tile;
        ld = po;
      }
      NAME(add_outer)(net, s, k, s->r_x[k], pi, in, d, ld, rows);
      REAL *r_delta_x = s->r_delta_x;
      NAME(gemm)(rows, pi, out, d, ld, 1, s->tangent.transposed[k], pi, r_delta_x, pi, 0);
      NAME(gemm)(rows, pi, out, r_delta, po, 1, s->theta.transposed[k], pi, r_delta_x, pi, 1);
      const REAL *r_z = s->r_z[k - 1], *previous = delta[k - 1];
      for (long i = 0; i < rows; i++) {
        const REAL *xi = x[k] + i * (in + 1), *di = previous + i * in;
        NAME(prefetch_row)(di + TILE * in, in);
        NAME(prefetch_row)(delta[k] + (i + TILE) * out, out);
        for (long j = 0; j < in; j++) {
          REAL xv = xi[j];
          r_delta[i * pi + j] = r_delta_x[i * pi + j] * (1 - xv * xv) - 2 * xv * di[j] * r_z[i * pi + j];
        }
      }
    }
  }
  NAME(gradient_store)(net, s, out);
  const REAL *log_std_curv = (const REAL *)side->log_std_curvature + task * act;
  for (long j = 0; j < act; j++) out[NAME(layer_offset)(net, L) + j] = s->log_std[j] + log_std_curv[j] * u_log_std[j];
}

/* F_i u for one task: R-forward at θ'_i (in `s->theta`), weight R{μ}, backward. */
static void NAME(fisher_task)(const Net *net, const Side *side, long task, NAME(Scratch) *s, const REAL *tangent,
                              REAL *out) {
  int L = net->num_layers;
  long M = side->samples, act = net->widths[L], pact = NAME(pad)(act);
  NAME(padded_set)(net, &s->tangent, tangent, 0);
  NAME(gradient_zero)(net, s);
  const REAL *weight = (const REAL *)side->curvature + task * M * act;
  for (long r0 = 0; r0 < M; r0 += TILE) {
    long rows = M - r0 < TILE ? M - r0 : TILE;
    const REAL *x[MAX_LAYERS];
    for (int k = 0; k < L; k++) x[k] = (const REAL *)side->inputs[k] + (task * M + r0) * (net->widths[k] + 1);
    NAME(r_forward)(net, s, x, rows);
    REAL *delta = s->r_delta;
    for (long i = 0; i < rows; i++) {
      NAME(prefetch_row)(weight + (r0 + i + TILE) * act, act);
      for (long j = 0; j < act; j++) delta[i * pact + j] = s->r_z[L - 1][i * pact + j] * weight[(r0 + i) * act + j];
    }
    for (int k = L - 1; k >= 0; k--) {
      long in = net->widths[k], out = net->widths[k + 1], po = NAME(pad)(out), pi = NAME(pad)(in);
      NAME(add_outer)(net, s, k, x[k], in + 1, in + 1, delta, po, rows);
      if (k == 0) break;
      NAME(gemm)(rows, pi, out, delta, po, 1, s->theta.transposed[k], pi, s->r_delta_x, pi, 0);
      for (long i = 0; i < rows; i++) {
        const REAL *xi = x[k] + i * (in + 1);
        for (long j = 0; j < in; j++) delta[i * pi + j] = s->r_delta_x[i * pi + j] * (1 - xi[j] * xi[j]);
      }
    }
  }
  NAME(gradient_store)(net, s, out);
  const REAL *log_std_weight = (const REAL *)side->log_std_curvature;
  for (long j = 0; j < act; j++)
    out[NAME(layer_offset)(net, L) + j] = log_std_weight[task] * tangent[NAME(layer_offset)(net, L) + j];
}

/* The forward pass over one tile at the padded parameters in `s->theta`: X_0 = [obs, 1] and
 * X_{k+1} = [tanh(X_k A_k), 1] written to `inputs[k]` (rows in_k + 1 apart); the mean z_{L−1} is left in
 * s->r_z[L − 1] (rows pad(act) apart). */
static void NAME(forward_tile)(const Net *net, NAME(Scratch) *s, const REAL *obs, REAL *const *inputs, long rows) {
  int L = net->num_layers;
  long obs_dim = net->widths[0];
  for (long i = 0; i < rows; i++) {
    memcpy(inputs[0] + i * (obs_dim + 1), obs + i * obs_dim, (size_t)obs_dim * sizeof(REAL));
    inputs[0][i * (obs_dim + 1) + obs_dim] = 1;
  }
  for (int k = 0; k < L; k++) {
    long in = net->widths[k], out = net->widths[k + 1], po = NAME(pad)(out);
    NAME(gemm)(rows, po, in + 1, inputs[k], in + 1, 1, s->theta.layer[k], po, s->r_z[k], po, 0);
    if (k == L - 1) break;
    for (long i = 0; i < rows; i++) {
      NAME(tanh_row)(s->r_z[k] + i * po, inputs[k + 1] + i * (out + 1), out);
      inputs[k + 1][i * (out + 1) + out] = 1;
    }
  }
}

/* The layer inputs of a tile: the kept arrays (task `task`, rows from r0) or the scratch tiles. */
static void NAME(tile_inputs)(const Net *net, NAME(Scratch) *s, const Side *keep, long task, long M, long r0,
                              REAL **inputs) {
  for (int k = 0; k < net->num_layers; k++) {
    long cols = net->widths[k] + 1;
    inputs[k] = keep != NULL ? (REAL *)keep->inputs[k] + (task * M + r0) * cols : s->inputs[k];
  }
}

/* Backward from the head signal in s->r_delta (rows pad(act) apart) through the tile: the weight gradients
 * accumulate in s->gradient; δ_k is stored (unpadded) into `deltas[k]` when given. */
static void NAME(backward_tile)(const Net *net, NAME(Scratch) *s, REAL *const *inputs, REAL *const *deltas, long rows) {
  int L = net->num_layers;
  REAL *delta = s->r_delta;
  for (int k = L - 1; k >= 0; k--) {
    long in = net->widths[k], out = net->widths[k + 1], po = NAME(pad)(out), pi = NAME(pad)(in);
    if (deltas != NULL)
      for (long i = 0; i < rows; i++) memcpy(deltas[k] + i * out, delta + i * po, (size_t)out * sizeof(REAL));
    NAME(add_outer)(net, s, k, inputs[k], in + 1, in + 1, delta, po, rows);
    if (k == 0) break;
    NAME(gemm)(rows, pi, out, delta, po, 1, s->theta.transposed[k], pi, s->r_delta_x, pi, 0);
    for (long i = 0; i < rows; i++) {
      const REAL *xi = inputs[k] + i * (in + 1);
      for (long j = 0; j < in; j++) delta[i * pi + j] = s->r_delta_x[i * pi + j] * (1 - xi[j] * xi[j]);
    }
  }
}

/* One inner step for one task: θ' = θ − α ∇L(θ), L = −Σ_t w_t log π_θ(a_t|s_t). θ is in s->theta (padded)
 * and `theta` (flat); θ' goes to `out`. With `keep`, the constants of H_i are stored there. */
static void NAME(adapt_task)(const Net *net, const Request *q, long task, NAME(Scratch) *s, const REAL *theta,
                             REAL *out) {
  int L = net->num_layers;
  long M = q->samples, obs_dim = net->widths[0], act = net->widths[L], pact = NAME(pad)(act);
  long log_std_at = NAME(layer_offset)(net, L);
  const Side *keep = q->keep;
  REAL inverse_variance[MAX_WIDTH];
  double log_std_gradient[MAX_WIDTH], log_std_curvature[MAX_WIDTH]; /* sums over M samples: in double */
  for (long j = 0; j < act; j++) {
    inverse_variance[j] = exp(-2 * theta[log_std_at + j]);
    log_std_gradient[j] = 0;
    log_std_curvature[j] = 0;
  }
  NAME(gradient_zero)(net, s);
  for (long r0 = 0; r0 < M; r0 += TILE) {
    long rows = M - r0 < TILE ? M - r0 : TILE, first = task * M + r0;
    REAL *inputs[MAX_LAYERS], *deltas[MAX_LAYERS];
    NAME(tile_inputs)(net, s, keep, task, M, r0, inputs);
    NAME(forward_tile)(net, s, (const REAL *)q->observations + first * obs_dim, inputs, rows);
    /* The head: r = a − μ, c = w e^{−2s}; ∂L/∂μ = −c r, ∂L/∂s = Σ (w − c r²). */
    const REAL *mean = s->r_z[L - 1], *actions = (const REAL *)q->actions + first * act;
    const REAL *weights = (const REAL *)q->weights + first;
    REAL *delta = s->r_delta;
    for (long i = 0; i < rows; i++)
      for (long j = 0; j < act; j++) {
        REAL residual = actions[i * act + j] - mean[i * pact + j];
        REAL c = weights[i] * inverse_variance[j], weighted = c * residual;
        delta[i * pact + j] = -weighted;
        log_std_gradient[j] += weights[i] - weighted * residual;
        if (keep != NULL) {
          ((REAL *)keep->curvature)[(first + i) * act + j] = c;
          ((REAL *)keep->cross)[(first + i) * act + j] = 2 * weighted;
          log_std_curvature[j] += 2 * weighted * residual;
        }
      }
    if (keep != NULL)
      for (int k = 0; k < L; k++) deltas[k] = (REAL *)keep->deltas[k] + first * net->widths[k + 1];
    NAME(backward_tile)(net, s, inputs, keep != NULL ? deltas : NULL, rows);
  }
  NAME(gradient_store)(net, s, out);
  for (long j = 0; j < act; j++) out[log_std_at + j] = log_std_gradient[j];
  const REAL alpha = (REAL)q->inner_lr;
  for (long p = 0; p < NAME(num_params)(net); p++) out[p] = theta[p] - alpha * out[p];
  if (keep != NULL)
    for (long j = 0; j < act; j++) ((REAL *)keep->log_std_curvature)[task * act + j] = log_std_curvature[j];
}

/* The mean at θ_i (in s->theta) for one task's observations, into q->mean; layer inputs kept when asked. */
static void NAME(forward_task)(const Net *net, const Request *q, long task, NAME(Scratch) *s) {
  int L = net->num_layers;
  long M = q->samples, obs_dim = net->widths[0], act = net->widths[L], pact = NAME(pad)(act);
  for (long r0 = 0; r0 < M; r0 += TILE) {
    long rows = M - r0 < TILE ? M - r0 : TILE, first = task * M + r0;
    REAL *inputs[MAX_LAYERS];
    NAME(tile_inputs)(net, s, q->keep, task, M, r0, inputs);
    NAME(forward_tile)(net, s, (const REAL *)q->observations + first * obs_dim, inputs, rows);
    REAL *mean = (REAL *)q->mean + first * act;
    for (long i = 0; i < rows; i++) memcpy(mean + i * act, s->r_z[L - 1] + i * pact, (size_t)act * sizeof(REAL));
  }
}

/* (∂μ/∂θ_i)ᵀ g_i over the fisher side's samples (its kept inputs, θ_i in s->theta) into `out`. */
static void NAME(backward_task)(const Net *net, const Side *side, long task, NAME(Scratch) *s, const REAL *head,
                                REAL *out) {
  int L = net->num_layers;
  long M = side->samples, act = net->widths[L], pact = NAME(pad)(act);
  NAME(gradient_zero)(net, s);
  for (long r0 = 0; r0 < M; r0 += TILE) {
    long rows = M - r0 < TILE ? M - r0 : TILE;
    REAL *inputs[MAX_LAYERS];
    NAME(tile_inputs)(net, s, side, task, M, r0, inputs);
    for (long i = 0; i < rows; i++)
      memcpy(s->r_delta + i * pact, head + (task * M + r0 + i) * act, (size_t)act * sizeof(REAL));
    NAME(backward_tile)(net, s, inputs, NULL, rows);
  }
  NAME(gradient_store)(net, s, out);
  for (long j = 0; j < act; j++) out[NAME(layer_offset)(net, L) + j] = 0;
}

typedef struct {
  const Request *request;
  long first, last;
  int status;
} NAME(Job);

/* The work of one thread: tasks first .. last − 1 of the request. */
static void *NAME(run_job)(void *argument) {
  NAME(Job) *job = argument;
  const Request *q = job->request;
  const Net *net = &q->net;
  NAME(Scratch) s;
  memset(&s, 0, sizeof s);
  if (NAME(scratch_alloc)(net, &s)) {
    NAME(scratch_free)(net, &s);
    job->status = 1;
    return NULL;
  }
  long P = NAME(num_params)(net);
  const REAL alpha = (REAL)q->inner_lr;
  if (q->inner != NULL) NAME(padded_set)(net, &s.theta, q->inner->params, 1);
  for (long t = job->first; t < job->last; t++) {
    const REAL *v = (const REAL *)q->vector + t * q->vector_task_stride;
    REAL *out = (REAL *)q->out + t * P;
    if (q->operation == OP_INNER_HVP) {
      NAME(inner_hvp_task)(net, q->inner, t, &s, v, out);
      continue;
    }
    if (q->operation == OP_ADAPT || q->operation == OP_FORWARD) {
      if (t == job->first || q->vector_task_stride != 0) NAME(padded_set)(net, &s.theta, v, 1);
      if (q->operation == OP_ADAPT) NAME(adapt_task)(net, q, t, &s, v, out);
      else NAME(forward_task)(net, q, t, &s);
      continue;
    }
    if (q->operation == OP_BACKWARD) {
      NAME(padded_set)(net, &s.theta, (const REAL *)q->fisher->params + t * P, 1);
      NAME(backward_task)(net, q->fisher, t, &s, (const REAL *)q->vector, out);
      continue;
    }
    /* OP_KL_HVP: J_i F_i J_i v with J_i = I − α H_i (J_i = I when there is no inner side: first order). */
    const REAL *u = v;
    if (q->inner != NULL) {
      NAME(inner_hvp_task)(net, q->inner, t, &s, v, s.vec_a);
      for (long p = 0; p < P; p++) s.vec_a[p] = v[p] - alpha * s.vec_a[p];
      u = s.vec_a;
    }
    NAME(padded_set)(net, &s.theta, (const REAL *)q->fisher->params + t * P, 1);
    NAME(fisher_task)(net, q->fisher, t, &s, u, q->inner != NULL ? s.vec_b : out);
    if (q->inner != NULL) {
      NAME(padded_set)(net, &s.theta, q->inner->params, 1);
      NAME(inner_hvp_task)(net, q->inner, t, &s, s.vec_b, s.vec_c);
      for (long p = 0; p < P; p++) out[p] = s.vec_b[p] - alpha * s.vec_c[p];
    }
  }
  NAME(scratch_free)(net, &s);
  job->status = 0;
  return NULL;
}

int NAME(maml_bench_run)(const Request *q) {
  NAME(Job) jobs[MAX_THREADS];
  pthread_t threads[MAX_THREADS];
  int count = q->threads < 1 ? 1 : (q->threads > MAX_THREADS ? MAX_THREADS : q->threads);
  if (count > q->num_tasks) count = (int)(q->num_tasks > 0 ? q->num_tasks : 1);
  int started[MAX_THREADS] = {0};
  for (int i = 0; i < count; i++) {
    jobs[i].request = q;
    jobs[i].first = q->num_tasks * i / count;
    jobs[i].last = q->num_tasks * (i + 1) / count;
    jobs[i].status = 1;
  }
  pthread_attr_t attributes; /* the per-task sums over actions live on the stack: ask for room everywhere */
  int have_attributes = pthread_attr_init(&attributes) == 0;
  if (have_attributes) pthread_attr_setstacksize(&attributes, 8 << 20);
  for (int i = 1; i < count; i++)
    started[i] = pthread_create(&threads[i], have_attributes ? &attributes : NULL, NAME(run_job), &jobs[i]) == 0;
  if (have_attributes) pthread_attr_destroy(&attributes);
  NAME(run_job)(&jobs[0]);
  int status = jobs[0].status;
  for (int i = 1; i < count; i++) {
    if (started[i]) pthread_join(threads[i], NULL);
    else NAME(run_job)(&jobs[i]); /* no thread to spare: run it here */
    status |= jobs[i].status;
  }
  if (status == 0 && q->total != NULL) {
    long P = NAME(num_params)(&q->net);
    REAL *total = q->total;
    const REAL *out = q->out;
    memcpy(total, out, (size_t)P * sizeof(REAL));
    for (long t = 1; t < q->num_tasks; t++)
      for (long p = 0; p < P; p++) total[p] += out[t * P + p];
  }
  return status;
}
#undef VLEN
#undef EXPM1_DEGREE
#undef TANH_CLAMP
#undef EXPONENT_BIAS
#undef MANTISSA_BITS
#undef INT
#undef NAME
#undef REAL
