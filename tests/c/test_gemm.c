/* The GEMM through its public header only (flexcore/gemm.h), as an embedding program calls it:
 * every transpose combination and edge size against a float64 product, leading dimensions larger
 * than the rows, alpha/beta cases (beta == 0 never reads C), batches with broadcast operands, the
 * fused bias + activation, 1 vs 2 threads (bit-identical), concurrent callers, argument errors.
 * CMake runs it once per instruction set (FLEXCORE_ISA), also under ASan + UBSan. Exits nonzero
 * when any check fails. */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flexcore/ew_math.h"
#include "flexcore/flexcore.h"

static int n_passed = 0;
static int n_failed = 0;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            ++n_passed;                                                                            \
        } else {                                                                                   \
            ++n_failed;                                                                            \
            if (n_failed <= 20) {                                                                  \
                fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);          \
                fprintf(stderr, __VA_ARGS__);                                                      \
                fputc('\n', stderr);                                                               \
            }                                                                                      \
        }                                                                                          \
    } while (0)

static uint64_t rng_state = 0x853C49E6748FEA9Bu;
static double uniform(void) /* [-1, 1) */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545F4914F6CDD1Du) >> 11) * 0x1p-52 - 1.0;
}

static double act_f64(int act, double x)
{
    switch (act) {
    case FC_ACT_RELU:
        return fc_ew_relu_f64(x);
    case FC_ACT_SIGMOID:
        return fc_ew_sigmoid_f64(x);
    case FC_ACT_TANH:
        return fc_ew_tanh_f64(x);
    default:
        return x;
    }
}

/* One GEMM problem with its storage; the operands are float64 copies for the reference. */
typedef struct problem {
    int trans_a, trans_b;
    int64_t m, n, k, lda, ldb, ldc;
    double alpha, beta;
    int nan_c; /* C starts as NaN (with beta == 0) */
    int bias;  /* use a bias */
    int act;
    int packed; /* 1: A, 2: B, 3: both pre-packed (fc_?gemm_pack, then fc_?gemm_packed) */
} problem;

/* Fills the stored operands with uniforms and computes the reference and its error bound (per
 * element: (k + 3) eps times the sum of the absolute terms, the rounding of any summation order,
 * plus a few eps of the result for the activation). */
static void reference(const problem* p, const double* a, const double* b, const double* c0,
                      const double* bias, double eps, double* ref, double* bound)
{
    for (int64_t i = 0; i < p->m; ++i) {
        for (int64_t j = 0; j < p->n; ++j) {
            double s = 0.0, mag = 0.0;
            for (int64_t q = 0; q < p->k; ++q) {
                const double x = p->trans_a ? a[q * p->lda + i] : a[i * p->lda + q];
                const double y = p->trans_b ? b[j * p->ldb + q] : b[q * p->ldb + j];
                s += x * y;
                mag += fabs(x * y);
            }
            const double cij = p->beta == 0.0 ? 0.0 : c0[i * p->ldc + j];
            double pre = p->alpha * s + p->beta * cij;
            mag = fabs(p->alpha) * mag + fabs(p->beta * cij);
            if (bias != NULL) {
                pre += bias[j];
                mag += fabs(bias[j]);
            }
            ref[i * p->ldc + j] = act_f64(p->act, pre);
            bound[i * p->ldc + j] =
                (double)(p->k + 3) * eps * mag + 4.0 * eps * fabs(ref[i * p->ldc + j]) + DBL_MIN;
        }
    }
}

static int64_t stored_size(int trans, int64_t rows, int64_t cols, int64_t ld)
{
    const int64_t r = trans ? cols : rows;
    return r * ld + 1;
}

/* A packed copy of op(X) for fc_?gemm_packed, in a 64-byte aligned buffer the caller frees, or
 * NULL when packing failed (a failed check). */
#define DEFINE_PACK(T, P, DT)                                                                      \
    static void* pack_##P(int operand, int trans, int64_t rows, int64_t cols, const T* x,         \
                          int64_t ldx)                                                             \
    {                                                                                              \
        int64_t bytes = 0;                                                                         \
        int status = fc_gemm_packed_bytes(DT, operand, rows, cols, &bytes);                        \
        void* buf = status == FC_OK ? aligned_alloc(64, (size_t)(bytes + 63) / 64 * 64) : NULL;   \
        if (buf != NULL) {                                                                         \
            status = fc_##P##gemm_pack(operand, trans, rows, cols, x, ldx, buf, bytes);            \
        }                                                                                          \
        CHECK(buf != NULL && status == FC_OK, #P "gemm_pack operand %d: status %d", operand,       \
              status);                                                                             \
        if (status != FC_OK) {                                                                     \
            free(buf);                                                                             \
            return NULL;                                                                           \
        }                                                                                          \
        return buf;                                                                                \
    }

DEFINE_PACK(float, s, FC_F32)
DEFINE_PACK(double, d, FC_F64)

/* Runs problem p in type T through fc_<P>gemm_ex (or fc_<P>gemm when plain, fc_<P>gemm_packed
 * when an operand is pre-packed) and checks it. The result is copied to *out (float64) for
 * comparisons between runs. */
#define DEFINE_RUN(T, P, EPS)                                                                      \
    static int run_##P(const problem* p, double* out)                                              \
    {                                                                                              \
        const int64_t na = stored_size(p->trans_a, p->m, p->k, p->lda);                            \
        const int64_t nb = stored_size(p->trans_b, p->k, p->n, p->ldb);                            \
        const int64_t nc = p->m * p->ldc + 1;                                                      \
        T* a = malloc((size_t)na * sizeof(T));                                                     \
        T* b = malloc((size_t)nb * sizeof(T));                                                     \
        T* c = malloc((size_t)nc * sizeof(T));                                                     \
        T* bias = malloc((size_t)(p->n + 1) * sizeof(T));                                          \
        double* da = malloc((size_t)na * sizeof(double));                                          \
        double* db = malloc((size_t)nb * sizeof(double));                                          \
        double* dc = malloc((size_t)nc * sizeof(double));                                          \
        double* dbias = malloc((size_t)(p->n + 1) * sizeof(double));                               \
        double* ref = malloc((size_t)nc * sizeof(double));                                         \
        double* bound = malloc((size_t)nc * sizeof(double));                                       \
        for (int64_t i = 0; i < na; ++i) {                                                         \
            a[i] = (T)uniform();                                                                   \
            da[i] = (double)a[i];                                                                  \
        }                                                                                          \
        for (int64_t i = 0; i < nb; ++i) {                                                         \
            b[i] = (T)uniform();                                                                   \
            db[i] = (double)b[i];                                                                  \
        }                                                                                          \
        for (int64_t i = 0; i < nc; ++i) {                                                         \
            c[i] = p->nan_c ? (T)NAN : (T)uniform();                                               \
            dc[i] = (double)c[i];                                                                  \
        }                                                                                          \
        for (int64_t i = 0; i <= p->n; ++i) {                                                      \
            bias[i] = (T)uniform();                                                                \
            dbias[i] = (double)bias[i];                                                            \
        }                                                                                          \
        reference(p, da, db, dc, p->bias ? dbias : NULL, EPS, ref, bound);                         \
        const int plain = !p->bias && p->act == FC_ACT_NONE;                                       \
        void* pa = p->packed & 1 ? pack_##P(FC_GEMM_OPERAND_A, p->trans_a, p->m, p->k, a, p->lda)  \
                                 : NULL;                                                           \
        void* pb = p->packed & 2 ? pack_##P(FC_GEMM_OPERAND_B, p->trans_b, p->k, p->n, b, p->ldb)  \
                                 : NULL;                                                           \
        int status;                                                                                \
        if (p->packed) {                                                                           \
            /* A packed operand's ld is ignored: pass a wrong one. */                             \
            status = fc_##P##gemm_packed(pa ? FC_GEMM_PACKED : p->trans_a,                         \
                                         pb ? FC_GEMM_PACKED : p->trans_b, p->m, p->n, p->k,       \
                                         (T)p->alpha, pa ? pa : (void*)a, pa ? -1 : p->lda,        \
                                         pb ? pb : (void*)b, pb ? -1 : p->ldb, (T)p->beta, c,      \
                                         p->ldc, p->bias ? bias : NULL, p->act);                   \
        } else if (plain) {                                                                        \
            status = fc_##P##gemm(p->trans_a, p->trans_b, p->m, p->n, p->k, (T)p->alpha, a,        \
                                  p->lda, b, p->ldb, (T)p->beta, c, p->ldc);                       \
        } else {                                                                                   \
            status = fc_##P##gemm_ex(p->trans_a, p->trans_b, p->m, p->n, p->k, (T)p->alpha, a,     \
                                     p->lda, b, p->ldb, (T)p->beta, c, p->ldc,                     \
                                     p->bias ? bias : NULL, p->act);                               \
        }                                                                                          \
        free(pa);                                                                                  \
        free(pb);                                                                                  \
        int ok = status == FC_OK, untouched = 1;                                                   \
        double worst = 0.0;                                                                        \
        for (int64_t i = 0; i < nc && ok; ++i) {                                                   \
            const int64_t row = i / p->ldc, col = i % p->ldc;                                      \
            if (row >= p->m || col >= p->n) {                                                      \
                /* padding of C past n (and the extra element) is never written */                 \
                untouched &= memcmp(&c[i], &(T){(T)dc[i]}, sizeof(T)) == 0 || (c[i] != c[i]);      \
                continue;                                                                          \
            }                                                                                      \
            const double err = fabs((double)c[i] - ref[i]);                                        \
            if (!(err <= bound[i])) {                                                              \
                ok = 0;                                                                            \
            }                                                                                      \
            if (err / bound[i] > worst) {                                                          \
                worst = err / bound[i];                                                            \
            }                                                                                      \
            if (out != NULL) {                                                                     \
                out[i] = (double)c[i];                                                             \
            }                                                                                      \
        }                                                                                          \
        CHECK(ok && untouched,                                                                     \
              #P "gemm %s%s m=%lld n=%lld k=%lld ld=%lld,%lld,%lld alpha=%g beta=%g nan_c=%d "     \
                 "bias=%d act=%d packed=%d: status %d, residual %.3g of the bound, padding %s",    \
              p->trans_a ? "T" : "N", p->trans_b ? "T" : "N", (long long)p->m, (long long)p->n,    \
              (long long)p->k, (long long)p->lda, (long long)p->ldb, (long long)p->ldc, p->alpha,  \
              p->beta, p->nan_c, p->bias, p->act, p->packed, status, worst,                        \
              untouched ? "kept" : "written");                                                     \
        free(a);                                                                                   \
        free(b);                                                                                   \
        free(c);                                                                                   \
        free(bias);                                                                                \
        free(da);                                                                                  \
        free(db);                                                                                  \
        free(dc);                                                                                  \
        free(dbias);                                                                               \
        free(ref);                                                                                 \
        free(bound);                                                                               \
        return ok && untouched;                                                                    \
    }

DEFINE_RUN(float, s, (double)FLT_EPSILON)
DEFINE_RUN(double, d, DBL_EPSILON)

static problem make(int ta, int tb, int64_t m, int64_t n, int64_t k, int64_t pad)
{
    problem p = {.trans_a = ta, .trans_b = tb, .m = m, .n = n, .k = k, .alpha = 1.0, .beta = 0.0};
    p.lda = (ta ? m : k) + pad;
    p.ldb = (tb ? k : n) + pad;
    p.ldc = n + pad;
    p.lda = p.lda < 1 ? 1 : p.lda;
    p.ldb = p.ldb < 1 ? 1 : p.ldb;
    p.ldc = p.ldc < 1 ? 1 : p.ldc;
    return p;
}

/* Every transpose combination on sizes around the register tiles and the cache blocks of every
 * kernel (MR 4/6/12, NR 8/16/32, KC 256, MC 64..240), plus empty dimensions. */
static void test_shapes(void)
{
    static const int64_t sizes[][3] = {
        {1, 1, 1}, {3, 3, 3}, {17, 17, 17}, {1, 17, 3}, {17, 1, 3}, {3, 17, 1}, {0, 5, 3}, {5, 0, 3},
        {5, 3, 0}, {13, 33, 257}, {127, 131, 129}, {150, 70, 300}, {250, 37, 260}, {2, 4100, 3},
    };
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; ++s) {
        for (int ta = 0; ta < 2; ++ta) {
            for (int tb = 0; tb < 2; ++tb) {
                for (int64_t pad = 0; pad <= 5; pad += 5) {
                    problem p = make(ta, tb, sizes[s][0], sizes[s][1], sizes[s][2], pad);
                    run_s(&p, NULL);
                    run_d(&p, NULL);
                }
            }
        }
    }
}

/* Pre-packed operands: every transpose pair, A, B or both packed, on the shapes of test_shapes,
 * against the reference, and bit-identical to the same product unpacked (the panels are the
 * ones the unpacked call packs itself); with alpha/beta, a bias and an activation too. */
static void test_packed(void)
{
    static const int64_t sizes[][3] = {
        {1, 1, 1},    {3, 3, 3},      {17, 17, 17},    {1, 17, 3},     {17, 1, 3},
        {3, 17, 1},   {5, 3, 0},      {13, 33, 257},   {127, 131, 129}, {150, 70, 300},
        {250, 37, 260}, {2, 4100, 3}, {32, 1024, 256}, {32, 256, 1024},
    };
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; ++s) {
        for (int ta = 0; ta < 2; ++ta) {
            for (int tb = 0; tb < 2; ++tb) {
                for (int packed = 1; packed <= 3; ++packed) {
                    problem p = make(ta, tb, sizes[s][0], sizes[s][1], sizes[s][2], 3 * (packed == 2));
                    if (s % 3 == 1) { /* scaling and the epilogue on some of them */
                        p.alpha = -0.5;
                        p.beta = 1.5;
                        p.bias = 1;
                        p.act = FC_ACT_TANH;
                    }
                    double* want = calloc((size_t)(p.m * p.ldc + 1), sizeof(double));
                    double* got = calloc((size_t)(p.m * p.ldc + 1), sizeof(double));
                    const uint64_t seed = rng_state;
                    run_s(&p, want);
                    rng_state = seed;
                    problem q = p;
                    q.packed = packed;
                    run_s(&q, got);
                    CHECK(memcmp(want, got, (size_t)(p.m * p.ldc + 1) * sizeof(double)) == 0,
                          "sgemm packed=%d differs from unpacked (shape %zu, %d%d)", packed, s, ta,
                          tb);
                    rng_state = seed;
                    run_d(&p, want);
                    rng_state = seed;
                    run_d(&q, got);
                    CHECK(memcmp(want, got, (size_t)(p.m * p.ldc + 1) * sizeof(double)) == 0,
                          "dgemm packed=%d differs from unpacked (shape %zu, %d%d)", packed, s, ta,
                          tb);
                    free(want);
                    free(got);
                }
            }
        }
    }
}

/* Packed operands that do not match the product, or bad packing arguments: rejected, C untouched. */
static void test_packed_errors(void)
{
    float a[6 * 5], b[5 * 4], c[6 * 4];
    for (int i = 0; i < 30; ++i) {
        a[i] = (float)i;
    }
    for (int i = 0; i < 20; ++i) {
        b[i] = (float)i;
    }
    for (int i = 0; i < 24; ++i) {
        c[i] = -7.0f;
    }
    int64_t bytes_a = 0, bytes_b = 0, big = 0;
    /* At least the elements (panels are padded to whole panel widths). */
    CHECK(fc_gemm_packed_bytes(FC_F32, FC_GEMM_OPERAND_A, 6, 5, &bytes_a) == FC_OK &&
              bytes_a >= 6 * 5 * 4,
          "bytes A");
    CHECK(fc_gemm_packed_bytes(FC_F32, FC_GEMM_OPERAND_B, 5, 4, &bytes_b) == FC_OK &&
              bytes_b >= 5 * 4 * 4,
          "bytes B");
    CHECK(fc_gemm_packed_bytes(FC_F64, FC_GEMM_OPERAND_B, 5, 4, &big) == FC_OK && big >= 5 * 4 * 8,
          "f64 bytes");
    CHECK(fc_gemm_packed_bytes(FC_I64, FC_GEMM_OPERAND_A, 6, 5, &big) == FC_ERR_DTYPE, "dtype");
    CHECK(fc_gemm_packed_bytes(FC_F32, 2, 6, 5, &big) == FC_ERR_OP, "operand 2");
    CHECK(fc_gemm_packed_bytes(FC_F32, FC_GEMM_OPERAND_A, -1, 5, &big) == FC_ERR_SIZE, "rows < 0");
    CHECK(fc_gemm_packed_bytes(FC_F32, FC_GEMM_OPERAND_A, INT64_MAX / 2, INT64_MAX / 2, &big) ==
              FC_ERR_SIZE,
          "bytes overflow");
    CHECK(fc_gemm_packed_bytes(FC_F32, FC_GEMM_OPERAND_A, 6, 5, NULL) == FC_ERR_NULL, "bytes NULL");
    void* pa = aligned_alloc(64, (size_t)(bytes_a + 63) / 64 * 64);
    void* pb = aligned_alloc(64, (size_t)(bytes_b + 63) / 64 * 64);
    CHECK(fc_sgemm_pack(FC_GEMM_OPERAND_A, 0, 6, 5, a, 5, pa, bytes_a - 1) == FC_ERR_SIZE, "short");
    CHECK(fc_sgemm_pack(FC_GEMM_OPERAND_A, 0, 6, 5, a, 4, pa, bytes_a) == FC_ERR_SIZE, "ldx < cols");
    CHECK(fc_sgemm_pack(FC_GEMM_OPERAND_A, 2, 6, 5, a, 5, pa, bytes_a) == FC_ERR_OP, "trans 2");
    CHECK(fc_sgemm_pack(FC_GEMM_OPERAND_A, 0, 6, 5, NULL, 5, pa, bytes_a) == FC_ERR_NULL, "x NULL");
    CHECK(fc_sgemm_pack(FC_GEMM_OPERAND_A, 0, 6, 5, a, 5, NULL, bytes_a) == FC_ERR_NULL, "dst NULL");
    CHECK(fc_sgemm_pack(FC_GEMM_OPERAND_A, 0, 6, 5, a, 5, (char*)pa + 1, bytes_a) == FC_ERR_ALIGN,
          "dst misaligned");
    CHECK(fc_sgemm_pack(FC_GEMM_OPERAND_A, 0, 6, 5, a, 5, pa, bytes_a) == FC_OK, "pack A");
    CHECK(fc_sgemm_pack(FC_GEMM_OPERAND_B, 0, 5, 4, b, 4, pb, bytes_b) == FC_OK, "pack B");
    /* The header says what was packed: a product of other dimensions, the other operand's side or
     * the other dtype is refused. */
    CHECK(fc_sgemm_packed(FC_GEMM_PACKED, 0, 6, 4, 4, 1, pa, 5, b, 4, 0, c, 4, NULL, 0) ==
              FC_ERR_SIZE,
          "A packed with another k");
    CHECK(fc_sgemm_packed(FC_GEMM_PACKED, 0, 5, 4, 5, 1, pa, 5, b, 4, 0, c, 4, NULL, 0) ==
              FC_ERR_SIZE,
          "A packed with another m");
    CHECK(fc_sgemm_packed(0, FC_GEMM_PACKED, 6, 4, 5, 1, a, 5, pa, 4, 0, c, 4, NULL, 0) == FC_ERR_SIZE,
          "A's panels as B");
    CHECK(fc_sgemm_packed(0, FC_GEMM_PACKED, 6, 3, 5, 1, a, 5, pb, 4, 0, c, 4, NULL, 0) == FC_ERR_SIZE,
          "B packed with another n");
    double cd[24];
    CHECK(fc_dgemm_packed(0, FC_GEMM_PACKED, 6, 4, 5, 1, (const double*)(const void*)a, 5, pb, 4, 0,
                          cd, 4, NULL, 0) == FC_ERR_SIZE,
          "float panels as double");
    CHECK(fc_sgemm_packed(0, FC_GEMM_PACKED, 6, 4, 5, 1, a, 5, NULL, 4, 0, c, 4, NULL, 0) ==
              FC_ERR_NULL,
          "packed NULL");
    CHECK(fc_sgemm_packed(3, 0, 6, 4, 5, 1, a, 5, b, 4, 0, c, 4, NULL, 0) == FC_ERR_OP, "trans 3");
    CHECK(fc_sgemm(FC_GEMM_PACKED, 0, 6, 4, 5, 1, pa, 5, b, 4, 0, c, 4) == FC_ERR_OP,
          "fc_sgemm takes no packed operand");
    for (int i = 0; i < 24; ++i) {
        CHECK(c[i] == -7.0f, "a rejected call wrote C[%d]", i);
    }
    /* Small integers: exact. */
    CHECK(fc_sgemm_packed(FC_GEMM_PACKED, FC_GEMM_PACKED, 6, 4, 5, 1, pa, 0, pb, 0, 0, c, 4, NULL,
                          0) == FC_OK,
          "both packed");
    int ok = 1;
    for (int i = 0; i < 6; ++i) {
        for (int j = 0; j < 4; ++j) {
            float want = 0;
            for (int q = 0; q < 5; ++q) {
                want += a[i * 5 + q] * b[q * 4 + j];
            }
            ok &= c[i * 4 + j] == want;
        }
    }
    CHECK(ok, "both packed values");
    free(pa);
    free(pb);
}

static void test_scalings(void)
{
    static const struct {
        double alpha, beta;
        int nan_c;
    } cases[] = {{1, 0, 1}, {-0.5, 0, 1}, {1, 1, 0}, {2, -1.5, 0}, {0, 0.5, 0}, {0, 0, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        for (int64_t k = 0; k <= 70; k += 70) {
            problem p = make(0, 1, 37, 45, k, 2);
            p.alpha = cases[i].alpha;
            p.beta = cases[i].beta;
            p.nan_c = cases[i].nan_c;
            run_s(&p, NULL);
            run_d(&p, NULL);
        }
    }
}

static void test_epilogue(void)
{
    for (int act = FC_ACT_NONE; act < FC_ACT_COUNT; ++act) {
        for (int bias = 0; bias < 2; ++bias) {
            for (int64_t k = 0; k <= 300; k += 150) { /* k = 300: two KC passes, epilogue once */
                problem p = make(act % 2, act / 2, 29, 51, k, 1);
                p.act = act;
                p.bias = bias;
                p.beta = k == 150 ? 0.5 : 0.0;
                p.nan_c = p.beta == 0.0;
                run_s(&p, NULL);
                run_d(&p, NULL);
            }
        }
    }
}

/* Thread counts change which thread computes a tile, never how: results are bit-identical. */
static void test_threads(void)
{
    const int saved = fc_get_num_threads();
    const problem shapes[] = {make(0, 0, 300, 200, 100, 0), make(1, 1, 64, 1030, 256, 3),
                              make(0, 1, 512, 48, 64, 0)};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
        const problem* p = &shapes[s];
        double* one = calloc((size_t)(p->m * p->ldc + 1), sizeof(double));
        double* two = calloc((size_t)(p->m * p->ldc + 1), sizeof(double));
        const uint64_t seed = rng_state;
        CHECK(fc_set_num_threads(1) == FC_OK && fc_get_num_threads() == 1, "1 thread");
        run_s(p, one);
        rng_state = seed;
        CHECK(fc_set_num_threads(2) == FC_OK && fc_get_num_threads() == 2, "2 threads");
        run_s(p, two);
        CHECK(memcmp(one, two, (size_t)(p->m * p->ldc + 1) * sizeof(double)) == 0,
              "1 and 2 threads differ on shape %zu", s);
        free(one);
        free(two);
    }
    CHECK(fc_set_num_threads(0) == FC_ERR_SIZE && fc_set_num_threads(-3) == FC_ERR_SIZE, "n < 1");
    CHECK(fc_set_num_threads(1000) == FC_OK && fc_get_num_threads() == 64, "capped at 64");
    CHECK(fc_set_num_threads(saved) == FC_OK, "restore");
}

/* Application threads calling GEMM at the same time: one gets the pool, the others run alone;
 * all results right. */
static void* concurrent_caller(void* arg)
{
    int* ok = arg;
    const int64_t m = 96, n = 160, k = 200;
    float* a = malloc((size_t)(m * k) * sizeof(float));
    float* b = malloc((size_t)(k * n) * sizeof(float));
    float* c = malloc((size_t)(m * n) * sizeof(float));
    for (int64_t i = 0; i < m * k; ++i) {
        a[i] = (float)((i % 7) - 3);
    }
    for (int64_t i = 0; i < k * n; ++i) {
        b[i] = (float)((i % 5) - 2);
    }
    *ok = 1;
    for (int rep = 0; rep < 20; ++rep) {
        *ok &= fc_sgemm(0, 0, m, n, k, 1.0f, a, k, b, n, 0.0f, c, n) == FC_OK;
        for (int64_t i = 0; i < m; i += 17) { /* small integers: the float sums are exact */
            for (int64_t j = 0; j < n; j += 13) {
                double want = 0;
                for (int64_t q = 0; q < k; ++q) {
                    want += (double)a[i * k + q] * (double)b[q * n + j];
                }
                *ok &= (double)c[i * n + j] == want;
            }
        }
    }
    free(a);
    free(b);
    free(c);
    return NULL;
}

static void test_concurrent_callers(void)
{
    enum { N = 3 };
    pthread_t threads[N];
    int ok[N] = {0};
    for (int i = 0; i < N; ++i) {
        CHECK(pthread_create(&threads[i], NULL, concurrent_caller, &ok[i]) == 0, "create %d", i);
    }
    for (int i = 0; i < N; ++i) {
        pthread_join(threads[i], NULL);
        CHECK(ok[i], "caller %d", i);
    }
}

/* Batches: A broadcast (stride 0), B per product, C matrices interleaved row by row. */
static void test_batched(void)
{
    const int64_t batch = 5, m = 7, n = 9, k = 11;
    for (int ta = 0; ta < 2; ++ta) {
        const int64_t lda = ta ? m : k, ldb = n;
        float a[7 * 11];
        double ad[7 * 11];
        float b[5 * 11 * 9];
        double c0[5 * 7 * 9];
        float c[5 * 7 * 9];
        for (int i = 0; i < 7 * 11; ++i) {
            a[i] = (float)uniform();
            ad[i] = (double)a[i];
        }
        for (int i = 0; i < 5 * 11 * 9; ++i) {
            b[i] = (float)uniform();
        }
        for (int i = 0; i < 5 * 7 * 9; ++i) {
            c[i] = (float)uniform();
            c0[i] = (double)c[i];
        }
        /* C as (m, batch, n): product i's row r at r * (batch * n) + i * n. */
        const int status = fc_sgemm_batched(ta, 0, batch, m, n, k, 1.5f, a, lda, 0, b, ldb, k * n,
                                            0.5f, c, batch * n, n);
        CHECK(status == FC_OK, "batched status %d", status);
        int ok = 1;
        for (int64_t t = 0; t < batch; ++t) {
            for (int64_t i = 0; i < m; ++i) {
                for (int64_t j = 0; j < n; ++j) {
                    double s = 0, mag = 0;
                    for (int64_t q = 0; q < k; ++q) {
                        const double x = ta ? ad[q * lda + i] : ad[i * lda + q];
                        const double y = (double)b[t * k * n + q * ldb + j];
                        s += x * y;
                        mag += fabs(x * y);
                    }
                    const int64_t at = i * batch * n + t * n + j;
                    const double want = 1.5 * s + 0.5 * c0[at];
                    const double bound = (double)(k + 3) * (double)FLT_EPSILON * (1.5 * mag + fabs(c0[at]));
                    ok &= fabs((double)c[at] - want) <= bound;
                }
            }
        }
        CHECK(ok, "batched ta=%d", ta);
    }
    /* A batch of 3 products big enough to run on several threads, stride-0 B. */
    const int64_t m2 = 64, n2 = 80, k2 = 96, batch2 = 3;
    double* a2 = malloc((size_t)(batch2 * m2 * k2) * sizeof(double));
    double* b2 = malloc((size_t)(k2 * n2) * sizeof(double));
    double* c2 = malloc((size_t)(batch2 * m2 * n2) * sizeof(double));
    for (int64_t i = 0; i < batch2 * m2 * k2; ++i) {
        a2[i] = (double)((i % 9) - 4);
    }
    for (int64_t i = 0; i < k2 * n2; ++i) {
        b2[i] = (double)((i % 4) - 1);
    }
    CHECK(fc_dgemm_batched(0, 0, batch2, m2, n2, k2, 1.0, a2, k2, m2 * k2, b2, n2, 0, 0.0, c2, n2,
                           m2 * n2) == FC_OK,
          "batched f64");
    int ok2 = 1;
    for (int64_t t = 0; t < batch2; ++t) {
        for (int64_t i = 0; i < m2; i += 5) {
            for (int64_t j = 0; j < n2; j += 3) {
                double want = 0;
                for (int64_t q = 0; q < k2; ++q) {
                    want += a2[t * m2 * k2 + i * k2 + q] * b2[q * n2 + j];
                }
                ok2 &= c2[t * m2 * n2 + i * n2 + j] == want; /* small integers: exact */
            }
        }
    }
    CHECK(ok2, "batched f64 values");
    free(a2);
    free(b2);
    free(c2);
}

static void test_errors(void)
{
    float a[64], b[64], c[64];
    for (int i = 0; i < 64; ++i) {
        a[i] = b[i] = 1.0f;
        c[i] = -7.0f;
    }
    CHECK(fc_sgemm(2, 0, 2, 2, 2, 1, a, 2, b, 2, 0, c, 2) == FC_ERR_OP, "trans_a 2");
    CHECK(fc_sgemm(0, -1, 2, 2, 2, 1, a, 2, b, 2, 0, c, 2) == FC_ERR_OP, "trans_b -1");
    CHECK(fc_sgemm_ex(0, 0, 2, 2, 2, 1, a, 2, b, 2, 0, c, 2, NULL, FC_ACT_COUNT) == FC_ERR_OP, "act");
    CHECK(fc_sgemm_ex(0, 0, 2, 2, 2, 1, a, 2, b, 2, 0, c, 2, NULL, -1) == FC_ERR_OP, "act -1");
    CHECK(fc_sgemm(0, 0, -1, 2, 2, 1, a, 2, b, 2, 0, c, 2) == FC_ERR_SIZE, "m < 0");
    CHECK(fc_sgemm(0, 0, 2, -1, 2, 1, a, 2, b, 2, 0, c, 2) == FC_ERR_SIZE, "n < 0");
    CHECK(fc_sgemm(0, 0, 2, 2, -1, 1, a, 2, b, 2, 0, c, 2) == FC_ERR_SIZE, "k < 0");
    CHECK(fc_sgemm(0, 0, 2, 3, 4, 1, a, 3, b, 3, 0, c, 3) == FC_ERR_SIZE, "lda < k");
    CHECK(fc_sgemm(1, 0, 2, 3, 4, 1, a, 1, b, 3, 0, c, 3) == FC_ERR_SIZE, "lda < m (transposed)");
    CHECK(fc_sgemm(0, 0, 2, 3, 4, 1, a, 4, b, 2, 0, c, 3) == FC_ERR_SIZE, "ldb < n");
    CHECK(fc_sgemm(0, 1, 2, 3, 4, 1, a, 4, b, 3, 0, c, 3) == FC_ERR_SIZE, "ldb < k (transposed)");
    CHECK(fc_sgemm(0, 0, 2, 3, 4, 1, a, 4, b, 3, 0, c, 2) == FC_ERR_SIZE, "ldc < n");
    CHECK(fc_sgemm(0, 0, 0, 0, 0, 1, NULL, 0, NULL, 0, 0, NULL, 0) == FC_ERR_SIZE, "ld 0");
    CHECK(fc_sgemm(0, 0, 2, 2, 2, 1, NULL, 2, b, 2, 0, c, 2) == FC_ERR_NULL, "a NULL");
    CHECK(fc_sgemm(0, 0, 2, 2, 2, 1, a, 2, NULL, 2, 0, c, 2) == FC_ERR_NULL, "b NULL");
    CHECK(fc_sgemm(0, 0, 2, 2, 2, 1, a, 2, b, 2, 0, NULL, 2) == FC_ERR_NULL, "c NULL");
    CHECK(fc_sgemm(0, 0, INT64_MAX / 2, 2, 2, 1, a, 2, b, 2, 0, c, 2) == FC_ERR_SIZE, "m huge");
    CHECK(fc_sgemm(0, 0, 2, 2, (int64_t)1 << 62, 1, a, (int64_t)1 << 62, b, 2, 0, c, 2) == FC_ERR_SIZE,
          "extent overflows");
    CHECK(fc_sgemm_batched(0, 0, -1, 2, 2, 2, 1, a, 2, 4, b, 2, 4, 0, c, 2, 4) == FC_ERR_SIZE, "batch < 0");
    CHECK(fc_sgemm_batched(0, 0, 2, 2, 2, 2, 1, a, 2, -4, b, 2, 4, 0, c, 2, 4) == FC_ERR_SIZE, "stride < 0");
    CHECK(fc_sgemm_batched(0, 0, 2, 2, 2, 2, 1, a, 2, 4, b, 2, 4, 0, c, 2, 0) == FC_ERR_OVERLAP, "C shared");
    CHECK(fc_sgemm_batched(0, 0, 2, 2, 2, 2, 1, a, 2, 4, b, 2, 4, 0, c, 2, 3) == FC_ERR_OVERLAP, "C overlap");
    CHECK(fc_sgemm_batched(0, 0, (int64_t)1 << 61, 2, 2, 2, 1, a, 2, 4, b, 2, 4, 0, c, 2, 4) == FC_ERR_SIZE,
          "batch extent overflows");
    for (int i = 0; i < 64; ++i) {
        CHECK(c[i] == -7.0f, "a rejected call wrote C[%d]", i);
    }
    /* Empty products: NULL is fine where nothing is read or written. */
    CHECK(fc_sgemm(0, 0, 0, 0, 0, 1, NULL, 1, NULL, 1, 0, NULL, 1) == FC_OK, "all empty");
    CHECK(fc_sgemm(0, 0, 0, 3, 2, 1, NULL, 2, b, 3, 0, NULL, 3) == FC_OK, "m == 0");
    CHECK(fc_sgemm_batched(0, 0, 0, 2, 2, 2, 1, NULL, 2, 4, NULL, 2, 4, 0, NULL, 2, 4) == FC_OK, "batch 0");
    /* k == 0: C = beta * C, A and B never read. */
    CHECK(fc_sgemm(0, 0, 2, 2, 0, 1, NULL, 1, NULL, 2, 0.5f, c, 2) == FC_OK && c[0] == -3.5f && c[4] == -7.0f,
          "k == 0 scales C");
}

int main(void)
{
    printf("test_gemm: isa %s, %d threads\n", fc_cpu_isa(), fc_get_num_threads());
    test_errors();
    test_shapes();
    test_packed();
    test_packed_errors();
    test_scalings();
    test_epilogue();
    test_batched();
    test_threads();
    test_concurrent_callers();
    printf("test_gemm: %d passed, %d failed\n", n_passed, n_failed);
    return n_failed == 0 ? 0 : 1;
}
