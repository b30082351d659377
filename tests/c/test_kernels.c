/* The generic kernels of flexcore/kernels.h from C, through the public headers only: known answers,
 * randomised cross-checks against naive loops written here, the fused interpreter against chains
 * of unfused kernels (bit for bit), and every argument error. Built by CMake with
 * FLEXCORE_BUILD_TESTS=ON and run by ctest; tests/native/test_embed_c.py also runs it under
 * ASan + UBSan, which is its main point: every fast path and edge case below executes there.
 * Exits nonzero when any check fails. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flexcore/conv.h"
#include "flexcore/flexcore.h"
#include "flexcore/rnn.h"

static int n_passed = 0;
static int n_failed = 0;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            ++n_passed;                                                                            \
        } else {                                                                                   \
            ++n_failed;                                                                            \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

/* ---------------------------------------------------------------------------------- helpers */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

/* splitmix64: deterministic, so a failure reproduces. */
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int64_t rnd_int(int64_t lo, int64_t hi) /* in [lo, hi] */
{
    return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1));
}

static double rnd_normal(void)
{
    const double u = ((double)(rnd() >> 11) + 0.5) * 0x1p-53;
    const double v = ((double)(rnd() >> 11) + 0.5) * 0x1p-53;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* Bitwise equality of doubles, so NaN == NaN and -0.0 != 0.0. */
static int same_f64(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }
static int same_f32(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

/* Row-major index -> element offset of a strided array. */
static int64_t offset_of(int ndim, const int64_t* shape, const int64_t* strides, int64_t flat)
{
    int64_t off = 0;
    for (int d = ndim - 1; d >= 0; --d) {
        off += (flat % shape[d]) * strides[d];
        flat /= shape[d];
    }
    return off;
}

static int64_t prod(int ndim, const int64_t* shape)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; ++d) {
        n *= shape[d];
    }
    return n;
}

/* ---------------------------------------------------------------------------- elementwise */

static void test_ew_known_answers(void)
{
    /* a (2, 3) + b (3,) broadcast as a row; then a column; then a scalar */
    const double a[6] = {1, 2, 3, 4, 5, 6};
    const double b[3] = {10, 20, 30};
    const int64_t shape[2] = {2, 3};
    const int64_t row[2] = {0, 1}, col[2] = {1, 0}, scalar[2] = {0, 0};
    double y[6];
    CHECK(fc_ew_binary(FC_F64, FC_BINARY_ADD, 2, shape, a, NULL, b, row, y) == FC_OK);
    CHECK(y[0] == 11 && y[2] == 33 && y[3] == 14 && y[5] == 36);
    CHECK(fc_ew_binary(FC_F64, FC_BINARY_MUL, 2, shape, a, NULL, b, col, y) == FC_OK);
    CHECK(y[0] == 10 && y[2] == 30 && y[3] == 80 && y[5] == 120);
    CHECK(fc_ew_binary(FC_F64, FC_BINARY_SUB, 2, shape, b, scalar, a, NULL, y) == FC_OK);
    CHECK(y[0] == 9 && y[5] == 4);
    CHECK(fc_ew_binary(FC_F64, FC_BINARY_POW, 2, shape, a, NULL, b, scalar, y) == FC_OK);
    CHECK(y[1] == 1024.0);
    /* in place, exactly aliased */
    double z[6] = {1, 2, 3, 4, 5, 6};
    CHECK(fc_ew_binary(FC_F64, FC_BINARY_MAXIMUM, 2, shape, z, NULL, b, row, z) == FC_OK);
    CHECK(z[0] == 10 && z[5] == 30);

    /* NaN propagation and signed zeros of maximum, numpy's way */
    const float fa[4] = {NAN, 1.0f, 0.0f, -0.0f};
    const float fb[4] = {1.0f, NAN, -0.0f, 0.0f};
    const int64_t n4[1] = {4};
    float fy[4];
    CHECK(fc_ew_binary(FC_F32, FC_BINARY_MAXIMUM, 1, n4, fa, NULL, fb, NULL, fy) == FC_OK);
    CHECK(isnan(fy[0]) && isnan(fy[1]) && same_f32(fy[2], -0.0f) && same_f32(fy[3], 0.0f));

    /* int64 wraps like numpy; bool add is 'or' */
    const int64_t ia[2] = {INT64_MAX, INT64_MIN};
    const int64_t ib[2] = {1, -1};
    const int64_t n2[1] = {2};
    int64_t iy[2];
    CHECK(fc_ew_binary(FC_I64, FC_BINARY_ADD, 1, n2, ia, NULL, ib, NULL, iy) == FC_OK);
    CHECK(iy[0] == INT64_MIN && iy[1] == INT64_MAX);
    CHECK(fc_ew_binary(FC_I64, FC_BINARY_MUL, 1, n2, ia, NULL, ia, NULL, iy) == FC_OK);
    CHECK(iy[0] == 1 && iy[1] == 0);
    CHECK(fc_ew_unary(FC_I64, FC_UNARY_NEG, 2, ia, iy) == FC_OK);
    CHECK(iy[0] == -INT64_MAX && iy[1] == INT64_MIN);
    const uint8_t ba[4] = {0, 0, 1, 2}, bb[4] = {0, 1, 0, 1};
    uint8_t by[4];
    CHECK(fc_ew_binary(FC_BOOL, FC_BINARY_ADD, 1, n4, ba, NULL, bb, NULL, by) == FC_OK);
    CHECK(by[0] == 0 && by[1] == 1 && by[2] == 1 && by[3] == 1);
    CHECK(fc_ew_binary(FC_BOOL, FC_BINARY_MINIMUM, 1, n4, ba, NULL, bb, NULL, by) == FC_OK);
    CHECK(by[0] == 0 && by[1] == 0 && by[2] == 0 && by[3] == 1);

    /* comparisons: NaN is unequal to everything */
    CHECK(fc_ew_compare(FC_F32, FC_CMP_NE, 1, n4, fa, NULL, fb, NULL, by) == FC_OK);
    CHECK(by[0] == 1 && by[1] == 1 && by[2] == 0 && by[3] == 0);
    CHECK(fc_ew_compare(FC_F32, FC_CMP_GE, 1, n4, fa, NULL, fb, NULL, by) == FC_OK);
    CHECK(by[0] == 0 && by[1] == 0 && by[2] == 1 && by[3] == 1);
    CHECK(fc_ew_compare(FC_BOOL, FC_CMP_EQ, 1, n4, ba, NULL, bb, NULL, by) == FC_OK);
    CHECK(by[0] == 1 && by[1] == 0 && by[2] == 0 && by[3] == 1); /* byte 2 reads as true */

    /* where with a scalar b (the gradient rules' where(mask, g, 0)) */
    const uint8_t cond[3] = {1, 0, 1};
    const double g[3] = {5, 6, 7}, zero = 0.0;
    const int64_t n3[1] = {3}, s0[1] = {0};
    double w[3];
    CHECK(fc_ew_where(FC_F64, 1, n3, cond, NULL, g, NULL, &zero, s0, w) == FC_OK);
    CHECK(w[0] == 5 && w[1] == 0 && w[2] == 7);

    /* unary sign/step */
    const double sx[5] = {-3.0, -0.0, 0.0, 2.0, NAN};
    double sy[5];
    CHECK(fc_ew_unary(FC_F64, FC_UNARY_SIGN, 5, sx, sy) == FC_OK);
    CHECK(sy[0] == -1.0 && same_f64(sy[1], 0.0) && same_f64(sy[2], 0.0) && sy[3] == 1.0 && isnan(sy[4]));
    CHECK(fc_ew_unary(FC_F64, FC_UNARY_STEP, 5, sx, sy) == FC_OK);
    CHECK(sy[0] == 0.0 && sy[1] == 0.0 && sy[2] == 0.0 && sy[3] == 1.0 && sy[4] == 0.0);
}

/* y = a + b with numpy broadcasting, computed naively, against fc_ew_binary on random layouts. */
static void test_ew_binary_random(void)
{
    for (int trial = 0; trial < 300; ++trial) {
        const int ndim = (int)rnd_int(0, 4);
        int64_t shape[4], sa[4], sb[4], sy[4];
        for (int d = 0; d < ndim; ++d) {
            shape[d] = rnd_int(0, 5);
        }
        /* operands: random axes broadcast (stride 0), the rest strided by a random step */
        int64_t na = 1, nb = 1;
        for (int d = ndim - 1; d >= 0; --d) {
            const int64_t step_a = rnd_int(1, 2), step_b = rnd_int(1, 2);
            sa[d] = rnd_int(0, 3) == 0 ? 0 : na * step_a;
            sb[d] = rnd_int(0, 3) == 0 ? 0 : nb * step_b;
            if (sa[d] != 0) {
                na = sa[d] * (shape[d] > 0 ? shape[d] : 1);
            }
            if (sb[d] != 0) {
                nb = sb[d] * (shape[d] > 0 ? shape[d] : 1);
            }
        }
        const int64_t n = prod(ndim, shape);
        double* a = malloc((size_t)na * sizeof(double));
        double* b = malloc((size_t)nb * sizeof(double));
        double* y = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
        for (int64_t i = 0; i < na; ++i) {
            a[i] = rnd_normal();
        }
        for (int64_t i = 0; i < nb; ++i) {
            b[i] = rnd_normal();
        }
        const int ops[3] = {FC_BINARY_ADD, FC_BINARY_DIV, FC_BINARY_MAXIMUM};
        const int op = ops[trial % 3];
        CHECK(fc_ew_binary(FC_F64, op, ndim, shape, a, sa, b, sb, y) == FC_OK);
        int64_t s = 1;
        for (int d = ndim - 1; d >= 0; --d) {
            sy[d] = s;
            s *= shape[d];
        }
        int good = 1;
        for (int64_t i = 0; i < n; ++i) {
            const double x1 = a[offset_of(ndim, shape, sa, i)], x2 = b[offset_of(ndim, shape, sb, i)];
            const double want = op == FC_BINARY_ADD ? x1 + x2 : op == FC_BINARY_DIV ? x1 / x2 : (x1 > x2 ? x1 : x2);
            good &= same_f64(y[offset_of(ndim, shape, sy, i)], want);
        }
        CHECK(good);
        free(a);
        free(b);
        free(y);
    }
}

static void test_cast(void)
{
    const double x[8] = {NAN, INFINITY, -INFINITY, 1e300, -1e300, 2.9, -2.9, 9007199254740993.0};
    int64_t i[8];
    CHECK(fc_cast(FC_F64, FC_I64, 8, x, i) == FC_OK);
    CHECK(i[0] == 0 && i[1] == INT64_MAX && i[2] == INT64_MIN && i[3] == INT64_MAX && i[4] == INT64_MIN);
    CHECK(i[5] == 2 && i[6] == -2 && i[7] == 9007199254740992);
    float f[8];
    CHECK(fc_cast(FC_F64, FC_F32, 8, x, f) == FC_OK);
    CHECK(isnan(f[0]) && isinf(f[3]) && f[3] > 0 && isinf(f[4]) && f[4] < 0 && f[5] == 2.9f);
    uint8_t bo[8];
    CHECK(fc_cast(FC_F64, FC_BOOL, 8, x, bo) == FC_OK);
    CHECK(bo[0] == 1 && bo[5] == 1);
    const int64_t big[2] = {INT64_MAX, (int64_t)1 << 53};
    double d[2];
    CHECK(fc_cast(FC_I64, FC_F64, 2, big, d) == FC_OK);
    CHECK(d[0] == 9223372036854775808.0 && d[1] == 9007199254740992.0);
    const float ff[3] = {NAN, 3.0e38f, -1.5f};
    CHECK(fc_cast(FC_F32, FC_I64, 3, ff, i) == FC_OK);
    CHECK(i[0] == 0 && i[1] == INT64_MAX && i[2] == -1);
    int64_t same[2] = {7, -7};
    CHECK(fc_cast(FC_I64, FC_I64, 2, same, same) == FC_OK && same[0] == 7 && same[1] == -7);
}

/* ----------------------------------------------------------------------------------- copies */

/* Random copies of elements of 1, 2, 3, 4, 8 or 12 bytes: sources permuted, sliced and partly
 * broadcast, destinations strided, sizes that reach the transpose path; checked byte for byte. */
static void test_copy_strided_random(void)
{
    static const int elems[6] = {1, 2, 3, 4, 8, 12};
    for (int trial = 0; trial < 400; ++trial) {
        const int elem = elems[trial % 6];
        const int ndim = (int)rnd_int(0, 5);
        int64_t shape[5], ss[5], ds[5];
        const int big = trial % 10 == 0; /* a large 2-D transpose */
        for (int d = 0; d < ndim; ++d) {
            shape[d] = big && d >= ndim - 2 ? rnd_int(30, 90) : rnd_int(0, 5);
        }
        /* source: a permutation of a contiguous buffer's axes, with random steps and zeros */
        int perm[5];
        for (int d = 0; d < ndim; ++d) {
            perm[d] = d;
        }
        for (int d = ndim - 1; d > 0; --d) {
            const int j = (int)rnd_int(0, d);
            const int t = perm[d];
            perm[d] = perm[j];
            perm[j] = t;
        }
        if (big && ndim >= 2) { /* the last two axes swapped: the transpose path */
            for (int d = 0; d < ndim; ++d) {
                perm[d] = d;
            }
            perm[ndim - 1] = ndim - 2;
            perm[ndim - 2] = ndim - 1;
        }
        int64_t src_elems = 1;
        for (int k = ndim - 1; k >= 0; --k) { /* the buffer's axis order is perm */
            const int d = perm[k];
            const int64_t step = big ? 1 : rnd_int(1, 2);
            ss[d] = (!big && rnd_int(0, 4) == 0) ? 0 : src_elems * step;
            if (ss[d] != 0) {
                src_elems = ss[d] * (shape[d] > 0 ? shape[d] : 1);
            }
        }
        int64_t dst_elems = 1;
        for (int d = ndim - 1; d >= 0; --d) {
            ds[d] = dst_elems * (big ? 1 : rnd_int(1, 2));
            dst_elems = ds[d] * (shape[d] > 0 ? shape[d] : 1);
        }
        unsigned char* src = malloc((size_t)(src_elems * elem));
        unsigned char* dst = malloc((size_t)(dst_elems * elem));
        unsigned char* want = malloc((size_t)(dst_elems * elem));
        for (int64_t i = 0; i < src_elems * elem; ++i) {
            src[i] = (unsigned char)rnd();
        }
        for (int64_t i = 0; i < dst_elems * elem; ++i) {
            dst[i] = want[i] = (unsigned char)rnd();
        }
        const int64_t n = prod(ndim, shape);
        for (int64_t i = 0; i < n; ++i) {
            memcpy(want + offset_of(ndim, shape, ds, i) * elem, src + offset_of(ndim, shape, ss, i) * elem,
                   (size_t)elem);
        }
        CHECK(fc_copy_strided(elem, ndim, shape, src, ss, dst, ds) == FC_OK);
        CHECK(memcmp(dst, want, (size_t)(dst_elems * elem)) == 0);
        free(src);
        free(dst);
        free(want);
    }
}

static void test_fill(void)
{
    float f[5];
    CHECK(fc_fill(FC_F32, 5, -1.5, f) == FC_OK && f[0] == -1.5f && f[4] == -1.5f);
    int64_t i[3];
    CHECK(fc_fill(FC_I64, 3, NAN, i) == FC_OK && i[0] == 0 && i[2] == 0);
    CHECK(fc_fill(FC_I64, 3, -7.9, i) == FC_OK && i[1] == -7);
    uint8_t b[3];
    CHECK(fc_fill(FC_BOOL, 3, 0.25, b) == FC_OK && b[0] == 1 && b[2] == 1);
    CHECK(fc_fill(FC_F64, 0, 1.0, NULL) == FC_OK);
}

/* ------------------------------------------------------------------------------- reductions */

static void test_reduce(void)
{
    /* known answers: x (2, 3, 2) */
    const double x[12] = {1, 2, 3, 4, 5, 6, -1, -2, -3, -4, -5, NAN};
    double y[4];
    CHECK(fc_reduce(FC_F64, FC_REDUCE_SUM, 2, 3, 2, x, y) == FC_OK);
    CHECK(y[0] == 9 && y[1] == 12 && y[2] == -9 && isnan(y[3]));
    CHECK(fc_reduce(FC_F64, FC_REDUCE_MAX, 2, 3, 2, x, y) == FC_OK);
    CHECK(y[0] == 5 && y[1] == 6 && y[2] == -1 && isnan(y[3]));
    const uint8_t flags[6] = {1, 0, 1, 1, 3, 0};
    int64_t counts[2];
    CHECK(fc_reduce(FC_BOOL, FC_REDUCE_SUM, 2, 3, 1, flags, counts) == FC_OK);
    CHECK(counts[0] == 2 && counts[1] == 2);
    uint8_t any[3];
    CHECK(fc_reduce(FC_BOOL, FC_REDUCE_MAX, 1, 2, 3, flags, any) == FC_OK);
    CHECK(any[0] == 1 && any[1] == 1 && any[2] == 1);
    CHECK(fc_reduce(FC_F64, FC_REDUCE_SUM, 2, 0, 2, NULL, y) == FC_OK && y[0] == 0.0 && y[3] == 0.0);
    CHECK(fc_reduce(FC_F64, FC_REDUCE_MAX, 2, 0, 2, NULL, y) == FC_ERR_SIZE);

    /* random float32 sums against a long double loop: within one float32 ulp */
    static const int64_t shapes[6][3] = {{1, 1000003, 1}, {3, 257, 1}, {2, 300, 33}, {1, 7, 1}, {4, 1, 300},
                                         {1, 1000, 513}};
    for (int s = 0; s < 6; ++s) {
        const int64_t outer = shapes[s][0], red = shapes[s][1], inner = shapes[s][2];
        const int64_t n = outer * red * inner;
        float* xf = malloc((size_t)n * sizeof(float));
        float* yf = malloc((size_t)(outer * inner) * sizeof(float));
        float* mf = malloc((size_t)(outer * inner) * sizeof(float));
        for (int64_t i = 0; i < n; ++i) {
            xf[i] = (float)(rnd_normal() + 0.25);
        }
        CHECK(fc_reduce(FC_F32, FC_REDUCE_SUM, outer, red, inner, xf, yf) == FC_OK);
        CHECK(fc_reduce(FC_F32, FC_REDUCE_MAX, outer, red, inner, xf, mf) == FC_OK);
        int good_sum = 1, good_max = 1;
        for (int64_t o = 0; o < outer; ++o) {
            for (int64_t j = 0; j < inner; ++j) {
                long double acc = 0.0L;
                float m = xf[o * red * inner + j];
                for (int64_t r = 0; r < red; ++r) {
                    const float v = xf[(o * red + r) * inner + j];
                    acc += (long double)v;
                    m = v > m ? v : m;
                }
                const float exact = (float)acc;
                const float got = yf[o * inner + j];
                good_sum &= fabsf(got - exact) <= nextafterf(fabsf(exact), INFINITY) - fabsf(exact);
                good_max &= mf[o * inner + j] == m;
            }
        }
        CHECK(good_sum);
        CHECK(good_max);
        free(xf);
        free(yf);
        free(mf);
    }
}

/* --------------------------------------------------------------------------------- indexing */

static void test_indexing(void)
{
    const float table[6] = {0, 1, 10, 11, 20, 21}; /* (3, 2) */
    const int64_t idx[4] = {2, 0, 2, 1};
    float out[8];
    CHECK(fc_gather(FC_F32, 4, idx, 3, 2, table, out) == FC_OK);
    CHECK(out[0] == 20 && out[1] == 21 && out[2] == 0 && out[7] == 11);
    float acc[6];
    CHECK(fc_scatter_add(FC_F32, 4, idx, 3, 2, out, acc) == FC_OK);
    CHECK(acc[0] == 0 && acc[1] == 1 && acc[2] == 10 && acc[3] == 11 && acc[4] == 40 && acc[5] == 42);
    double hot[12];
    CHECK(fc_one_hot(FC_F64, 4, idx, 3, hot) == FC_OK);
    CHECK(hot[2] == 1.0 && hot[0] == 0.0 && hot[3] == 1.0 && hot[10] == 1.0 && hot[11] == 0.0);

    /* bad indices: nothing written, nothing read out of bounds */
    const int64_t bad[3] = {0, 3, -1};
    float sentinel[8] = {7, 7, 7, 7, 7, 7, 7, 7};
    CHECK(fc_gather(FC_F32, 3, bad, 3, 2, table, sentinel) == FC_ERR_INDEX);
    CHECK(fc_scatter_add(FC_F32, 3, bad, 3, 2, table, sentinel) == FC_ERR_INDEX);
    CHECK(fc_one_hot(FC_F32, 3, bad, 2, sentinel) == FC_ERR_INDEX);
    int untouched = 1;
    for (int i = 0; i < 8; ++i) {
        untouched &= sentinel[i] == 7.0f;
    }
    CHECK(untouched);
    const int64_t extreme[2] = {INT64_MIN, INT64_MAX};
    CHECK(fc_gather(FC_F32, 2, extreme, 3, 2, table, sentinel) == FC_ERR_INDEX);
    CHECK(fc_gather(FC_F32, 1, idx, 0, 2, NULL, sentinel) == FC_ERR_INDEX); /* an empty table */
}

/* ------------------------------------------------------------------------- sliding windows */

/* Naive unfold: cols[n, c, oh, ow, kh, kw] per the formula of kernels.h, 2-D. */
static double naive_window(const double* x, int64_t h, int64_t w, int64_t p, int64_t oh, int64_t ow, int64_t kh,
                           int64_t kw, const int64_t* s, const int64_t* lo, const int64_t* dl, double pad)
{
    const int64_t ih = oh * s[0] + kh * dl[0] - lo[0];
    const int64_t iw = ow * s[1] + kw * dl[1] - lo[1];
    if (ih < 0 || ih >= h || iw < 0 || iw >= w) {
        return pad;
    }
    return x[(p * h + ih) * w + iw];
}

static void test_windows_random(void)
{
    for (int trial = 0; trial < 200; ++trial) {
        const int64_t n = rnd_int(1, 2), c = rnd_int(1, 2);
        int64_t sp[2], k[2], s[2], lo[2], hi[2], dl[2], out[2];
        int fits = 1;
        for (int d = 0; d < 2; ++d) {
            sp[d] = rnd_int(0, 9);
            k[d] = rnd_int(1, 4);
            s[d] = rnd_int(1, 3);
            dl[d] = rnd_int(1, 3);
            lo[d] = rnd_int(0, 3);
            hi[d] = rnd_int(0, 3);
            const int64_t num = sp[d] + lo[d] + hi[d] - dl[d] * (k[d] - 1) - 1;
            fits &= num >= 0;
            out[d] = num >= 0 ? num / s[d] + 1 : 0;
        }
        const int64_t image = n * c * sp[0] * sp[1];
        const int64_t ncols = n * c * out[0] * out[1] * k[0] * k[1];
        double* x = malloc((size_t)(image > 0 ? image : 1) * sizeof(double));
        double* cols = malloc((size_t)(ncols > 0 ? ncols : 1) * sizeof(double));
        double* back = malloc((size_t)(image > 0 ? image : 1) * sizeof(double));
        for (int64_t i = 0; i < image; ++i) {
            x[i] = rnd_normal();
        }
        const int status = fc_unfold(FC_F64, 2, n, c, sp, k, s, lo, hi, dl, -3.0, x, cols);
        CHECK(status == (fits ? FC_OK : FC_ERR_SIZE));
        if (fits) {
            int good = 1;
            int64_t i = 0;
            for (int64_t p = 0; p < n * c; ++p) {
                for (int64_t oh = 0; oh < out[0]; ++oh) {
                    for (int64_t ow = 0; ow < out[1]; ++ow) {
                        for (int64_t kh = 0; kh < k[0]; ++kh) {
                            for (int64_t kw = 0; kw < k[1]; ++kw) {
                                good &= cols[i++] == naive_window(x, sp[0], sp[1], p, oh, ow, kh, kw, s, lo, dl, -3.0);
                            }
                        }
                    }
                }
            }
            CHECK(good);
            /* the adjoint: <unfold0(x), cols> == <x, fold(cols)> (pad 0 for the identity) */
            CHECK(fc_unfold(FC_F64, 2, n, c, sp, k, s, lo, hi, dl, 0.0, x, cols) == FC_OK);
            double lhs = 0.0, rhs = 0.0;
            for (int64_t j = 0; j < ncols; ++j) {
                lhs += cols[j] * cols[j];
            }
            CHECK(fc_fold(FC_F64, 2, n, c, sp, k, s, lo, hi, dl, cols, back) == FC_OK);
            for (int64_t j = 0; j < image; ++j) {
                rhs += x[j] * back[j];
            }
            CHECK(fabs(lhs - rhs) <= 1e-12 * (fabs(lhs) + 1.0));
        }
        free(x);
        free(cols);
        free(back);
    }
    /* 1-D is the same layout */
    const float x1[5] = {1, 2, 3, 4, 5};
    const int64_t sp1 = 5, k1 = 2, s1 = 2, lo1 = 1, hi1 = 0, d1 = 1;
    float c1[6];
    CHECK(fc_unfold(FC_F32, 1, 1, 1, &sp1, &k1, &s1, &lo1, &hi1, &d1, 9.0, x1, c1) == FC_OK);
    CHECK(c1[0] == 9 && c1[1] == 1 && c1[2] == 2 && c1[3] == 3 && c1[4] == 4 && c1[5] == 5);
}

/* ------------------------------------------------------------------------------ max pooling */

/* 2x2 stride-2 max pooling and its gradients, plain and through a relu (fc_pool's own path for
 * them, vectorised for float32) against naive loops over conv.h's contract, bit for bit: odd sizes (a row or column in no window), rows of
 * 1 to 19 windows (every vector block and tail), ties, NaN, +-inf and -0 among the taps; also
 * a padded geometry whose windows all stay inside (pad_hi that adds no window). */
static float pool_value(void)
{
    const int64_t r = rnd_int(0, 39);
    if (r == 0) return NAN;
    if (r == 1) return INFINITY;
    if (r == 2) return -INFINITY;
    if (r == 3) return -0.0f;
    return (float)rnd_int(-3, 3) * 0.5f; /* a coarse grid: many ties */
}

static void test_max_pool_2x2(void)
{
    for (int trial = 0; trial < 300; ++trial) {
        const int dtype = trial % 2 ? FC_F64 : FC_F32;
        const int64_t n = rnd_int(1, 3), c = rnd_int(1, 3), h = rnd_int(2, 9), w = rnd_int(2, 40);
        const int64_t hi_h = rnd_int(0, 1) ? h % 2 == 0 : 0, hi_w = rnd_int(0, 1) ? w % 2 == 0 : 0;
        const fc_pool_geom g = {n, c, h, w, 2, 2, 2, 2, 0, 0, hi_h, hi_w};
        const int64_t oh = h / 2, ow = w / 2, planes = n * c, hw = h * w, ohw = oh * ow;
        int64_t img = 0, outn = 0;
        CHECK(fc_pool_sizes(&g, &img, &outn) == FC_OK && img == planes * hw && outn == planes * ohw);
        double* x = malloc((size_t)img * sizeof(double));
        double* gy = malloc((size_t)outn * sizeof(double));
        double* y = malloc((size_t)outn * sizeof(double));
        double* dx = malloc((size_t)img * sizeof(double));
        double* want_y = malloc((size_t)outn * sizeof(double));
        double* want_dx = calloc((size_t)img, sizeof(double));
        double* want_dr = calloc((size_t)img, sizeof(double)); /* FC_POOL_GRAD_RELU */
        float* xf = malloc((size_t)img * sizeof(float));
        float* gyf = malloc((size_t)outn * sizeof(float));
        float* yf = malloc((size_t)outn * sizeof(float));
        float* dxf = malloc((size_t)img * sizeof(float));
        for (int64_t i = 0; i < img; ++i) {
            xf[i] = pool_value();
            x[i] = (double)xf[i];
            dx[i] = dxf[i] = 7.0f; /* stale values the kernel must overwrite */
        }
        for (int64_t i = 0; i < outn; ++i) {
            gy[i] = rnd_normal();
            gyf[i] = (float)gy[i];
            if (rnd_int(0, 9) == 0) {
                gy[i] = gyf[i] = -0.0f;
            }
        }
        /* the naive max and gradient, computed in the dtype under test */
        for (int64_t p = 0; p < planes; ++p) {
            for (int64_t o = 0; o < ohw; ++o) {
                const int64_t at = p * hw + (o / ow) * 2 * w + (o % ow) * 2;
                const int64_t taps[4] = {at, at + 1, at + w, at + w + 1};
                if (dtype == FC_F32) {
                    float m = xf[taps[0]];
                    for (int k = 1; k < 4; ++k) {
                        const float v = xf[taps[k]];
                        m = (v > m || v != v) && m == m ? v : m;
                    }
                    want_y[p * ohw + o] = (double)m;
                    int count = 0;
                    for (int k = 0; k < 4; ++k) count += xf[taps[k]] == m;
                    for (int k = 0; k < 4 && count > 0; ++k) {
                        if (xf[taps[k]] == m) want_dx[taps[k]] = (double)(0.0f + gyf[p * ohw + o] / (float)count);
                        if (xf[taps[k]] == m && xf[taps[k]] > 0) want_dr[taps[k]] = want_dx[taps[k]];
                    }
                } else {
                    double m = x[taps[0]];
                    for (int k = 1; k < 4; ++k) {
                        const double v = x[taps[k]];
                        m = (v > m || v != v) && m == m ? v : m;
                    }
                    want_y[p * ohw + o] = m;
                    int count = 0;
                    for (int k = 0; k < 4; ++k) count += x[taps[k]] == m;
                    for (int k = 0; k < 4 && count > 0; ++k) {
                        if (x[taps[k]] == m) want_dx[taps[k]] = 0.0 + gy[p * ohw + o] / (double)count;
                        if (x[taps[k]] == m && x[taps[k]] > 0) want_dr[taps[k]] = want_dx[taps[k]];
                    }
                }
            }
        }
        int good = 1;
        if (dtype == FC_F32) {
            good &= fc_pool(FC_F32, FC_POOL_MAX, &g, xf, NULL, NULL, yf) == FC_OK;
            good &= fc_pool(FC_F32, FC_POOL_GRAD, &g, xf, yf, gyf, dxf) == FC_OK;
            for (int64_t i = 0; i < outn; ++i) good &= same_f32(yf[i], (float)want_y[i]);
            for (int64_t i = 0; i < img; ++i) good &= same_f32(dxf[i], (float)want_dx[i]);
            good &= fc_pool(FC_F32, FC_POOL_GRAD_RELU, &g, xf, yf, gyf, dxf) == FC_OK;
            for (int64_t i = 0; i < img; ++i) good &= same_f32(dxf[i], (float)want_dr[i]);
        } else {
            good &= fc_pool(FC_F64, FC_POOL_MAX, &g, x, NULL, NULL, y) == FC_OK;
            good &= fc_pool(FC_F64, FC_POOL_GRAD, &g, x, y, gy, dx) == FC_OK;
            for (int64_t i = 0; i < outn; ++i) good &= same_f64(y[i], want_y[i]);
            for (int64_t i = 0; i < img; ++i) good &= same_f64(dx[i], want_dx[i]);
            good &= fc_pool(FC_F64, FC_POOL_GRAD_RELU, &g, x, y, gy, dx) == FC_OK;
            for (int64_t i = 0; i < img; ++i) good &= same_f64(dx[i], want_dr[i]);
        }
        CHECK(good);
        if (!good) {
            fprintf(stderr, "  max pool 2x2: dtype %d, n %lld c %lld h %lld w %lld\n", dtype, (long long)n,
                    (long long)c, (long long)h, (long long)w);
        }
        free(x), free(gy), free(y), free(dx), free(want_y), free(want_dx), free(want_dr), free(xf), free(gyf), free(yf), free(dxf);
    }
}

/* ---------------------------------------------------------------------------- convolution */

/* fc_conv_ex against naive loops on small random geometries (float32): the forward with a bias
 * and relu, and the weight gradient, whose window matrices here have few rows (conv_simd.h's
 * kernel on AVX2, the GEMM otherwise), with 1 and 3 slots. */
static void test_conv_small(void)
{
    for (int trial = 0; trial < 120; ++trial) {
        const int64_t n = rnd_int(1, 3), c = rnd_int(1, 2), o = rnd_int(1, 5), h = rnd_int(1, 9), w = rnd_int(1, 19);
        const int64_t kh = rnd_int(1, h < 3 ? h : 3), kw = rnd_int(1, w < 3 ? w : 3), s = rnd_int(1, 2), pad = rnd_int(0, 1);
        const fc_conv_geom g = {n, c, o, 1, h, w, kh, kw, s, s, pad, pad, pad, pad, 1, 1};
        const int64_t oh = (h + 2 * pad - kh) / s + 1, ow = (w + 2 * pad - kw) / s + 1;
        const int64_t nx = n * c * h * w, nw = o * c * kh * kw, ny = n * o * oh * ow;
        int64_t scratch = 0;
        CHECK(fc_conv_sizes(FC_F32, FC_CONV_BACKWARD_WEIGHT, &g, 3, NULL, NULL, NULL, &scratch) == FC_OK);
        int64_t fwd_scratch = 0;
        CHECK(fc_conv_sizes(FC_F32, FC_CONV_FORWARD, &g, 3, NULL, NULL, NULL, &fwd_scratch) == FC_OK);
        scratch = scratch > fwd_scratch ? scratch : fwd_scratch;
        float* x = malloc((size_t)nx * sizeof(float));
        float* wt = malloc((size_t)nw * sizeof(float));
        float* bias = malloc((size_t)o * sizeof(float));
        float* gy = malloc((size_t)ny * sizeof(float));
        float* y = malloc((size_t)ny * sizeof(float));
        float* dw = malloc((size_t)nw * sizeof(float));
        float* scr = malloc((size_t)(scratch > 0 ? scratch : 1));
        for (int64_t i = 0; i < nx; ++i) x[i] = (float)rnd_normal();
        for (int64_t i = 0; i < nw; ++i) wt[i] = (float)rnd_normal();
        for (int64_t i = 0; i < o; ++i) bias[i] = (float)rnd_normal();
        for (int64_t i = 0; i < ny; ++i) gy[i] = (float)rnd_normal();
        int good = 1;
        for (int64_t slots = 1; slots <= 3; slots += 2) {
            good &= fc_conv_ex(FC_F32, FC_CONV_FORWARD, &g, slots, x, wt, bias, FC_ACT_RELU, y, scr) == FC_OK;
            good &= fc_conv(FC_F32, FC_CONV_BACKWARD_WEIGHT, &g, slots, x, gy, dw, scr) == FC_OK;
            for (int64_t b = 0; b < n; ++b) {
                for (int64_t f = 0; f < o; ++f) {
                    for (int64_t i = 0; i < oh * ow; ++i) {
                        double acc = 0.0, mag = 0.0;
                        for (int64_t ci = 0; ci < c; ++ci) {
                            for (int64_t a = 0; a < kh; ++a) {
                                for (int64_t e = 0; e < kw; ++e) {
                                    const int64_t iy = (i / ow) * s - pad + a, ix = (i % ow) * s - pad + e;
                                    if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
                                        const double t = (double)x[((b * c + ci) * h + iy) * w + ix] *
                                                         (double)wt[((f * c + ci) * kh + a) * kw + e];
                                        acc += t, mag += fabs(t);
                                    }
                                }
                            }
                        }
                        acc += (double)bias[f];
                        const double want = acc > 0.0 ? acc : 0.0;
                        good &= fabs((double)y[(b * o + f) * oh * ow + i] - want) <= 1e-5 * (mag + fabs((double)bias[f]) + 1.0);
                    }
                }
            }
            for (int64_t f = 0; f < o; ++f) {
                for (int64_t ci = 0; ci < c; ++ci) {
                    for (int64_t a = 0; a < kh; ++a) {
                        for (int64_t e = 0; e < kw; ++e) {
                            double acc = 0.0, mag = 0.0;
                            for (int64_t b = 0; b < n; ++b) {
                                for (int64_t i = 0; i < oh * ow; ++i) {
                                    const int64_t iy = (i / ow) * s - pad + a, ix = (i % ow) * s - pad + e;
                                    if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
                                        const double t = (double)x[((b * c + ci) * h + iy) * w + ix] *
                                                         (double)gy[(b * o + f) * oh * ow + i];
                                        acc += t, mag += fabs(t);
                                    }
                                }
                            }
                            good &= fabs((double)dw[((f * c + ci) * kh + a) * kw + e] - acc) <= 1e-5 * (mag + 1.0);
                        }
                    }
                }
            }
        }
        CHECK(good);
        /* a bias or an activation is only for the forward */
        CHECK(fc_conv_ex(FC_F32, FC_CONV_BACKWARD_WEIGHT, &g, 1, x, gy, bias, FC_ACT_NONE, dw, scr) == FC_ERR_OP);
        CHECK(fc_conv_ex(FC_F32, FC_CONV_FORWARD, &g, 1, x, wt, NULL, FC_ACT_TANH, y, scr) == FC_ERR_OP);
        free(x), free(wt), free(bias), free(gy), free(y), free(dw), free(scr);
    }
}

/* --------------------------------------------------------------------------- fused programs */

/* The program run as a chain of unfused kernels on full-size buffers (n elements each). */
static int unfused_chain(int n_inputs, double* const* regs_in, int64_t n, int n_instr, const int32_t* code,
                         const double* consts, double* out)
{
    double* regs[8 + 16];
    for (int j = 0; j < n_inputs; ++j) {
        regs[j] = regs_in[j];
    }
    const int64_t shape[1] = {n};
    uint8_t* mask = malloc((size_t)n);
    const double zero = 0.0;
    const int64_t s0[1] = {0};
    int status = FC_OK;
    for (int k = 0; k < n_instr && status == FC_OK; ++k) {
        const int32_t op = code[4 * k], a = code[4 * k + 1], b = code[4 * k + 2], c = code[4 * k + 3];
        double* d = malloc((size_t)n * sizeof(double));
        regs[n_inputs + k] = d;
        static const int unary[12] = {FC_UNARY_NEG,  FC_UNARY_EXP,  FC_UNARY_LOG,    FC_UNARY_LOG1P,
                                      FC_UNARY_SQRT, FC_UNARY_ABS,  FC_UNARY_SIGMOID, FC_UNARY_TANH,
                                      FC_UNARY_ARCTAN, FC_UNARY_SIGN, FC_UNARY_STEP,  FC_UNARY_RELU};
        static const int binary[7] = {FC_BINARY_ADD, FC_BINARY_SUB,     FC_BINARY_MUL,    FC_BINARY_DIV,
                                      FC_BINARY_POW, FC_BINARY_MAXIMUM, FC_BINARY_MINIMUM};
        static const int compare[6] = {FC_CMP_GT, FC_CMP_GE, FC_CMP_LT, FC_CMP_LE, FC_CMP_EQ, FC_CMP_NE};
        if (op <= FC_EW_RELU) {
            status = fc_ew_unary(FC_F64, unary[op], n, regs[a], d);
        } else if (op <= FC_EW_MIN) {
            status = fc_ew_binary(FC_F64, binary[op - FC_EW_ADD], 1, shape, regs[a], NULL, regs[b], NULL, d);
        } else if (op <= FC_EW_NE) {
            status = fc_ew_compare(FC_F64, compare[op - FC_EW_GT], 1, shape, regs[a], NULL, regs[b], NULL, mask);
            if (status == FC_OK) {
                status = fc_cast(FC_BOOL, FC_F64, n, mask, d);
            }
        } else if (op == FC_EW_WHERE) {
            status = fc_ew_compare(FC_F64, FC_CMP_NE, 1, shape, regs[a], NULL, &zero, s0, mask);
            if (status == FC_OK) {
                status = fc_ew_where(FC_F64, 1, shape, mask, NULL, regs[b], NULL, regs[c], NULL, d);
            }
        } else {
            status = fc_fill(FC_F64, n, consts[a], d);
        }
    }
    if (status == FC_OK) {
        memcpy(out, regs[n_inputs + n_instr - 1], (size_t)n * sizeof(double));
    }
    for (int k = 0; k < n_instr; ++k) {
        free(regs[n_inputs + k]);
    }
    free(mask);
    return status;
}

static void test_fused_random(void)
{
    const double consts[3] = {0.5, -2.0, 1e300};
    for (int trial = 0; trial < 300; ++trial) {
        const int64_t rows = rnd_int(0, 5), cols = rnd_int(1, 700), n = rows * cols;
        const int n_inputs = (int)rnd_int(1, 4), n_instr = (int)rnd_int(1, 16);
        int32_t modes[4], code[4 * 16];
        int64_t lens[4];
        double* data[4];
        double* full[4];
        for (int j = 0; j < n_inputs; ++j) {
            modes[j] = (int32_t)rnd_int(0, 3);
            const int64_t want[4] = {n, 1, cols, rows};
            lens[j] = want[modes[j]];
            data[j] = malloc((size_t)(lens[j] > 0 ? lens[j] : 1) * sizeof(double));
            for (int64_t i = 0; i < lens[j]; ++i) {
                data[j][i] = rnd_int(0, 9) == 0 ? (i % 2 ? (double)NAN : 0.0) : 2.0 * rnd_normal();
            }
            full[j] = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
            for (int64_t i = 0; i < n; ++i) {
                const int64_t at[4] = {i, 0, i % cols, i / cols};
                full[j][i] = data[j][at[modes[j]]];
            }
        }
        for (int k = 0; k < n_instr; ++k) {
            const int32_t op = (int32_t)rnd_int(0, FC_EW_CODE_COUNT - 1);
            code[4 * k] = op;
            code[4 * k + 1] = op == FC_EW_CONST ? (int32_t)rnd_int(0, 2) : (int32_t)rnd_int(0, n_inputs + k - 1);
            code[4 * k + 2] = (int32_t)rnd_int(0, n_inputs + k - 1);
            code[4 * k + 3] = (int32_t)rnd_int(0, n_inputs + k - 1);
        }
        double* got = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
        double* want = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
        const void* inputs[4] = {data[0], n_inputs > 1 ? data[1] : NULL, n_inputs > 2 ? data[2] : NULL,
                                 n_inputs > 3 ? data[3] : NULL};
        CHECK(fc_fused_ew(FC_F64, n_inputs, inputs, modes, lens, n, cols, n_instr, code, 3, consts, got) == FC_OK);
        CHECK(unfused_chain(n_inputs, full, n, n_instr, code, consts, want) == FC_OK);
        int same = 1;
        for (int64_t i = 0; i < n; ++i) {
            same &= same_f64(got[i], want[i]) || (isnan(got[i]) && isnan(want[i]));
        }
        CHECK(same);
        for (int j = 0; j < n_inputs; ++j) {
            free(data[j]);
            free(full[j]);
        }
        free(got);
        free(want);
    }

    /* the header's example: sigmoid(x + bias_row) * 2.0 */
    const float x[6] = {-1, 0, 1, 2, 3, 4};
    const float bias[3] = {1, 0, -1};
    const void* in[2] = {x, bias};
    const int32_t modes[2] = {FC_IN_FULL, FC_IN_ROW};
    const int64_t lens[2] = {6, 3};
    const double two = 2.0;
    const int32_t prog[16] = {FC_EW_ADD, 0, 1, 0, FC_EW_SIGMOID, 2, 0, 0, FC_EW_CONST, 0, 0, 0, FC_EW_MUL, 3, 4, 0};
    float y[6];
    CHECK(fc_fused_ew(FC_F32, 2, in, modes, lens, 6, 3, 4, prog, 1, &two, y) == FC_OK);
    CHECK(y[0] == 1.0f && fabsf(y[3] - 2.0f * (1.0f / (1.0f + expf(-3.0f)))) < 1e-6f);
}

/* fc_fused_ew_ld and fc_reduce_ld: column blocks of wider matrices (rows ld apart), exactly the
 * block's share of the memory written or read (the sanitizer build sees any access outside). */
static void test_strided_rows(void)
{
    enum { ROWS = 5, COLS = 7, LD = 11 };
    double x[ROWS * COLS], dense[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; ++i) {
        x[i] = rnd_normal();
    }
    const void* in[1] = {x};
    const int32_t full = FC_IN_FULL;
    const int64_t len = ROWS * COLS;
    const int32_t prog[8] = {FC_EW_TANH, 0, 0, 0, FC_EW_MUL, 1, 0, 0};
    CHECK(fc_fused_ew(FC_F64, 1, in, &full, &len, ROWS * COLS, COLS, 2, prog, 0, NULL, dense) == FC_OK);
    /* the exact span of the block: (ROWS - 1) * LD + COLS elements, on the heap */
    double* block = malloc(sizeof(double) * ((ROWS - 1) * LD + COLS));
    for (int i = 0; i < (ROWS - 1) * LD + COLS; ++i) {
        block[i] = -7.0;
    }
    CHECK(fc_fused_ew_ld(FC_F64, 1, in, &full, &len, ROWS * COLS, COLS, 2, prog, 0, NULL, block, LD) == FC_OK);
    int same = 1, untouched = 1;
    for (int r = 0; r < ROWS; ++r) {
        for (int c = 0; c < LD && r * LD + c < (ROWS - 1) * LD + COLS; ++c) {
            if (c < COLS) {
                same = same && same_f64(block[r * LD + c], dense[r * COLS + c]);
            } else {
                untouched = untouched && block[r * LD + c] == -7.0;
            }
        }
    }
    CHECK(same && untouched);
    CHECK(fc_fused_ew_ld(FC_F64, 1, in, &full, &len, ROWS * COLS, COLS, 2, prog, 0, NULL, block, COLS - 1) ==
          FC_ERR_SIZE);
    double sums[COLS], want[COLS];
    CHECK(fc_reduce_ld(FC_F64, FC_REDUCE_SUM, 1, ROWS, COLS, LD, block, sums) == FC_OK);
    CHECK(fc_reduce(FC_F64, FC_REDUCE_SUM, 1, ROWS, COLS, dense, want) == FC_OK);
    int sums_same = 1;
    for (int c = 0; c < COLS; ++c) {
        sums_same = sums_same && same_f64(sums[c], want[c]);
    }
    CHECK(sums_same);
    CHECK(fc_reduce_ld(FC_F64, FC_REDUCE_MAX, 1, ROWS, COLS, LD, block, sums) == FC_OK);
    CHECK(fc_reduce_ld(FC_F64, FC_REDUCE_SUM, 1, ROWS, COLS, COLS - 1, block, sums) == FC_ERR_SIZE);
    free(block);
}

/* -------------------------------------------------------------------------------- softmax */

static void test_softmax(void)
{
    const double x[6] = {1000.0, 1000.0, 0.0, -INFINITY, 0.0, 0.0};
    double y[6];
    CHECK(fc_softmax_rows(FC_F64, 0, 2, 3, x, y) == FC_OK);
    CHECK(y[0] == 0.5 && y[1] == 0.5 && y[2] == 0.0 && y[3] == 0.0 && y[4] == 0.5 && y[5] == 0.5);
    CHECK(fc_softmax_rows(FC_F64, 1, 2, 3, x, y) == FC_OK);
    CHECK(fabs(y[0] - log(0.5)) < 1e-15 && y[2] == -1000.0 - log(2.0) && isinf(y[3]) && y[3] < 0);
    float z[4] = {1, 2, 3, 4};
    CHECK(fc_softmax_rows(FC_F32, 0, 1, 4, z, z) == FC_OK); /* in place */
    CHECK(fabsf(z[0] + z[1] + z[2] + z[3] - 1.0f) < 1e-6f && z[3] > z[2]);
}

/* --------------------------------------------------------------------------- bad arguments */

static void test_bad_arguments(void)
{
    const double a[4] = {1, 2, 3, 4};
    double y[4] = {0, 0, 0, 0};
    const int64_t shape[1] = {4}, neg[1] = {-1}, huge[2] = {INT64_MAX, 2};
    CHECK(fc_ew_binary(-1, 0, 1, shape, a, NULL, a, NULL, y) == FC_ERR_DTYPE);
    CHECK(fc_ew_binary(FC_F64, FC_BINARY_COUNT, 1, shape, a, NULL, a, NULL, y) == FC_ERR_OP);
    CHECK(fc_ew_binary(FC_F64, 0, FC_MAX_NDIM + 1, shape, a, NULL, a, NULL, y) == FC_ERR_SIZE);
    CHECK(fc_ew_binary(FC_F64, 0, 1, neg, a, NULL, a, NULL, y) == FC_ERR_SIZE);
    CHECK(fc_ew_binary(FC_F64, 0, 2, huge, a, NULL, a, NULL, y) == FC_ERR_SIZE);
    CHECK(fc_ew_binary(FC_F64, 0, 1, shape, a, neg, a, NULL, y) == FC_ERR_SIZE);
    CHECK(fc_ew_binary(FC_F64, 0, 1, shape, a, NULL, NULL, NULL, y) == FC_ERR_NULL);
    CHECK(fc_ew_binary(FC_F64, 0, 1, NULL, a, NULL, a, NULL, y) == FC_ERR_NULL);
    CHECK(fc_ew_binary(FC_F64, 0, 0, NULL, a, NULL, a, NULL, y) == FC_OK); /* a scalar */
    CHECK(y[0] == 2.0);
    y[0] = 0.0;
    CHECK(fc_ew_compare(FC_DTYPE_COUNT, 0, 1, shape, a, NULL, a, NULL, y) == FC_ERR_DTYPE);
    CHECK(fc_ew_where(FC_F64, 1, shape, NULL, NULL, a, NULL, a, NULL, y) == FC_ERR_NULL);
    CHECK(fc_ew_unary(FC_BOOL, FC_UNARY_NEG, 4, a, y) == FC_ERR_DTYPE);
    CHECK(fc_ew_unary(FC_F64, -1, 4, a, y) == FC_ERR_OP);
    CHECK(fc_cast(FC_F64, -1, 4, a, y) == FC_ERR_DTYPE);
    CHECK(fc_cast(FC_F64, FC_F32, -4, a, y) == FC_ERR_SIZE);
    CHECK(fc_copy_strided(-8, 1, shape, a, NULL, y, NULL) == FC_ERR_SIZE);
    CHECK(fc_copy_strided(8, 1, shape, NULL, NULL, y, NULL) == FC_ERR_NULL);
    CHECK(fc_fill(FC_F64, -1, 0.0, y) == FC_ERR_SIZE);
    CHECK(fc_reduce(FC_F64, -1, 1, 4, 1, a, y) == FC_ERR_OP);
    CHECK(fc_reduce(FC_F64, FC_REDUCE_SUM, 1, 4, -1, a, y) == FC_ERR_SIZE);
    CHECK(fc_gather(FC_F64, 1, NULL, 4, 1, a, y) == FC_ERR_NULL);
    CHECK(fc_scatter_add(FC_BOOL, 0, NULL, 0, 0, NULL, NULL) == FC_ERR_DTYPE);
    CHECK(fc_one_hot(FC_F64, -1, NULL, 4, y) == FC_ERR_SIZE);
    const int64_t one = 1;
    CHECK(fc_unfold(FC_F64, 2, 1, 1, NULL, &one, &one, &one, &one, &one, 0.0, a, y) == FC_ERR_NULL);
    CHECK(fc_fold(FC_F64, 0, 1, 1, &one, &one, &one, &one, &one, &one, a, y) == FC_ERR_SIZE);
    const int32_t bad_op[4] = {FC_EW_CODE_COUNT, 0, 0, 0}, bad_reg[4] = {FC_EW_NEG, 1, 0, 0};
    const int32_t full = FC_IN_FULL;
    const int64_t len = 4;
    const void* in[1] = {a};
    CHECK(fc_fused_ew(FC_F64, 1, in, &full, &len, 4, 4, 1, bad_op, 0, NULL, y) == FC_ERR_OP);
    CHECK(fc_fused_ew(FC_F64, 1, in, &full, &len, 4, 4, 1, bad_reg, 0, NULL, y) == FC_ERR_INDEX);
    CHECK(fc_fused_ew(FC_I64, 1, in, &full, &len, 4, 4, 1, bad_reg, 0, NULL, y) == FC_ERR_DTYPE);
    CHECK(fc_softmax_rows(FC_F64, 0, -1, 4, a, y) == FC_ERR_SIZE);
    CHECK(y[0] == 0.0 && y[1] == 0.0 && y[2] == 0.0 && y[3] == 0.0); /* no failed call wrote */
    CHECK(strcmp(fc_strerror(FC_ERR_INDEX), fc_strerror(FC_ERR_DTYPE)) != 0);
}

/* ---- fused LSTM / GRU cells (flexcore/rnn.h): the forward against naive libm loops, the backward
 * against central differences of the forward (float64), float32 against float64, and the
 * argument errors. h = 17 leaves a tail after the 8-wide AVX2 vectors. */
enum { RN = 3, RH = 17, RLD = 4 * RH + 3 };

static double sig_ref(double v) { return 1.0 / (1.0 + exp(-v)); }

/* L = sum(wh * h + wc * c) of one LSTM step, a (RN, RLD) with the blocks of order. */
static double lstm_loss(const double* a, const double* cp, const double* wh, const double* wc, const int64_t* order)
{
    static double out[7 * RN * RH];
    if (fc_lstm_cell_fwd_f64(RN, RH, a, RLD, NULL, 0, NULL, cp, order, out) != FC_OK) {
        return NAN;
    }
    double l = 0;
    for (int e = 0; e < RN * RH; ++e) {
        l += wh[e] * out[6 * RN * RH + e] + wc[e] * out[4 * RN * RH + e];
    }
    return l;
}

static void test_lstm_cell(void)
{
    static double a[RN * RLD], bias[4 * RH], cp[RN * RH], wh[RN * RH], wc[RN * RH], out[7 * RN * RH];
    static double dg[RN * 4 * RH], dcp[RN * RH];
    static float af[RN * RLD], biasf[4 * RH], cpf[RN * RH], whf[RN * RH], wcf[RN * RH], outf[7 * RN * RH];
    static float dgf[RN * 4 * RH], dcpf[RN * RH];
    const int64_t order[4] = {2, 0, 3, 1};
    for (int k = 0; k < RN * RLD; ++k) af[k] = (float)(a[k] = 2 * rnd_normal());
    for (int k = 0; k < 4 * RH; ++k) biasf[k] = (float)(bias[k] = rnd_normal());
    for (int k = 0; k < RN * RH; ++k) {
        cpf[k] = (float)(cp[k] = rnd_normal());
        whf[k] = (float)(wh[k] = rnd_normal());
        wcf[k] = (float)(wc[k] = rnd_normal());
    }
    CHECK(fc_lstm_cell_fwd_f64(RN, RH, a, RLD, NULL, 0, bias, cp, order, out) == FC_OK);
    double worst = 0;
    for (int r = 0; r < RN; ++r) {
        for (int j = 0; j < RH; ++j) {
            double act[4];
            for (int k = 0; k < 4; ++k) {
                const double p = a[r * RLD + order[k] * RH + j] + bias[order[k] * RH + j];
                act[k] = k == 2 ? tanh(p) : sig_ref(p);
            }
            const double c = act[1] * cp[r * RH + j] + act[0] * act[2];
            const int e = r * RH + j;
            worst = fmax(worst, fabs(out[4 * RN * RH + e] - c));
            worst = fmax(worst, fabs(out[6 * RN * RH + e] - act[3] * tanh(c)));
            worst = fmax(worst, fabs(out[e] - act[0]) + fabs(out[2 * RN * RH + e] - act[2]));
        }
    }
    CHECK(worst < 1e-14);
    /* Backward: dgates and dc_prev against central differences of L (no bias: L reads a). */
    CHECK(fc_lstm_cell_fwd_f64(RN, RH, a, RLD, NULL, 0, NULL, cp, order, out) == FC_OK);
    CHECK(fc_lstm_cell_bwd_f64(RN, RH, out, cp, wh, wc, order, dg, dcp) == FC_OK);
    const double eps = 1e-6;
    worst = 0;
    for (int r = 0; r < RN; ++r) {
        for (int col = 0; col < 4 * RH; ++col) {
            double* x = &a[r * RLD + col];
            const double keep = *x;
            *x = keep + eps;
            const double up = lstm_loss(a, cp, wh, wc, order);
            *x = keep - eps;
            const double down = lstm_loss(a, cp, wh, wc, order);
            *x = keep;
            worst = fmax(worst, fabs((up - down) / (2 * eps) - dg[r * 4 * RH + col]));
        }
    }
    for (int e = 0; e < RN * RH; ++e) {
        const double keep = cp[e];
        cp[e] = keep + eps;
        const double up = lstm_loss(a, cp, wh, wc, order);
        cp[e] = keep - eps;
        const double down = lstm_loss(a, cp, wh, wc, order);
        cp[e] = keep;
        worst = fmax(worst, fabs((up - down) / (2 * eps) - dcp[e]));
    }
    CHECK(worst < 1e-7);
    /* float32 (the AVX2 row kernels where the CPU has them) against float64. */
    CHECK(fc_lstm_cell_fwd_f64(RN, RH, a, RLD, NULL, 0, bias, cp, order, out) == FC_OK);
    CHECK(fc_lstm_cell_fwd_f32(RN, RH, af, RLD, NULL, 0, biasf, cpf, order, outf) == FC_OK);
    CHECK(fc_lstm_cell_bwd_f64(RN, RH, out, cp, wh, wc, order, dg, dcp) == FC_OK);
    CHECK(fc_lstm_cell_bwd_f32(RN, RH, outf, cpf, whf, wcf, order, dgf, dcpf) == FC_OK);
    worst = 0;
    for (int k = 0; k < 7 * RN * RH; ++k) worst = fmax(worst, fabs((double)outf[k] - out[k]));
    for (int k = 0; k < RN * 4 * RH; ++k) worst = fmax(worst, fabs((double)dgf[k] - dg[k]) / (1 + fabs(dg[k])));
    for (int k = 0; k < RN * RH; ++k) worst = fmax(worst, fabs((double)dcpf[k] - dcp[k]) / (1 + fabs(dcp[k])));
    CHECK(worst < 2e-5);
    /* Argument errors: nothing written. */
    const int64_t bad[4] = {0, 1, 1, 3};
    out[0] = 42;
    CHECK(fc_lstm_cell_fwd_f64(RN, RH, a, RLD, NULL, 0, NULL, cp, bad, out) == FC_ERR_SIZE);
    CHECK(fc_lstm_cell_fwd_f64(RN, RH, a, 4 * RH - 1, NULL, 0, NULL, cp, NULL, out) == FC_ERR_SIZE);
    CHECK(fc_lstm_cell_fwd_f64(RN, RH, NULL, RLD, NULL, 0, NULL, cp, NULL, out) == FC_ERR_NULL);
    CHECK(fc_lstm_cell_bwd_f64(RN, RH, out, cp, NULL, NULL, NULL, dg, NULL) == FC_ERR_NULL);
    CHECK(fc_lstm_cell_bwd_f64(-1, RH, out, cp, wh, NULL, NULL, dg, NULL) == FC_ERR_SIZE);
    CHECK(out[0] == 42);
}

/* L = sum(wh * h) of one GRU step: x (RN, 3h) and hh (RN, 3h), blocks xo / ho. */
static double gru_loss(const double* x, const double* hh, const double* bias, const double* hp, const double* wh,
                       const int64_t* xo, const int64_t* ho)
{
    static double out[5 * RN * RH];
    if (fc_gru_cell_fwd_f64(RN, RH, x, 3 * RH, hh, 3 * RH, bias, hp, xo, ho, out) != FC_OK) {
        return NAN;
    }
    double l = 0;
    for (int e = 0; e < RN * RH; ++e) {
        l += wh[e] * out[4 * RN * RH + e];
    }
    return l;
}

static void test_gru_cell(void)
{
    static double x[RN * 3 * RH], hh[RN * 3 * RH], bias[4 * RH], hp[RN * RH], wh[RN * RH], out[5 * RN * RH];
    static double dx[RN * 3 * RH], dhh[RN * 3 * RH], dhp[RN * RH];
    const int64_t xo[3] = {1, 2, 0}, ho[3] = {2, 0, 1};
    for (int k = 0; k < RN * 3 * RH; ++k) {
        x[k] = 2 * rnd_normal();
        hh[k] = 2 * rnd_normal();
    }
    for (int k = 0; k < 4 * RH; ++k) bias[k] = rnd_normal();
    for (int k = 0; k < RN * RH; ++k) {
        hp[k] = rnd_normal();
        wh[k] = rnd_normal();
    }
    CHECK(fc_gru_cell_fwd_f64(RN, RH, x, 3 * RH, hh, 3 * RH, bias, hp, xo, ho, out) == FC_OK);
    double worst = 0;
    for (int r = 0; r < RN; ++r) {
        for (int j = 0; j < RH; ++j) {
            const double* xr = x + r * 3 * RH;
            const double* hr = hh + r * 3 * RH;
            const double rg = sig_ref(xr[xo[0] * RH + j] + hr[ho[0] * RH + j] + bias[j]);
            const double z = sig_ref(xr[xo[1] * RH + j] + hr[ho[1] * RH + j] + bias[RH + j]);
            const double nn = tanh(xr[xo[2] * RH + j] + rg * (hr[ho[2] * RH + j] + bias[3 * RH + j]) + bias[2 * RH + j]);
            worst = fmax(worst, fabs(out[4 * RN * RH + r * RH + j] - ((1 - z) * nn + z * hp[r * RH + j])));
        }
    }
    CHECK(worst < 1e-14);
    CHECK(fc_gru_cell_bwd_f64(RN, RH, out, hp, wh, xo, ho, dx, dhh, dhp) == FC_OK);
    const double eps = 1e-6;
    worst = 0;
    double* ins[3] = {x, hh, hp};
    const double* grads[3] = {dx, dhh, dhp};
    const int sizes[3] = {RN * 3 * RH, RN * 3 * RH, RN * RH};
    for (int m = 0; m < 3; ++m) {
        for (int k = 0; k < sizes[m]; ++k) {
            const double keep = ins[m][k];
            ins[m][k] = keep + eps;
            const double up = gru_loss(x, hh, bias, hp, wh, xo, ho);
            ins[m][k] = keep - eps;
            const double down = gru_loss(x, hh, bias, hp, wh, xo, ho);
            ins[m][k] = keep;
            worst = fmax(worst, fabs((up - down) / (2 * eps) - grads[m][k]));
        }
    }
    CHECK(worst < 1e-7);
    const int64_t bad[3] = {0, 0, 2};
    CHECK(fc_gru_cell_fwd_f64(RN, RH, x, 3 * RH, hh, 3 * RH, bias, hp, bad, ho, out) == FC_ERR_SIZE);
    CHECK(fc_gru_cell_fwd_f64(RN, RH, x, 3 * RH, hh, 3 * RH - 1, bias, hp, xo, ho, out) == FC_ERR_SIZE);
    CHECK(fc_gru_cell_bwd_f64(RN, RH, out, hp, wh, xo, ho, NULL, dhh, dhp) == FC_ERR_NULL);
}

int main(void)
{
    test_ew_known_answers();
    test_ew_binary_random();
    test_cast();
    test_copy_strided_random();
    test_fill();
    test_reduce();
    test_indexing();
    test_windows_random();
    test_max_pool_2x2();
    test_conv_small();
    test_fused_random();
    test_strided_rows();
    test_softmax();
    test_bad_arguments();
    test_lstm_cell();
    test_gru_cell();
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed == 0 ? 0 : 1;
}
