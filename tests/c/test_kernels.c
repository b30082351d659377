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

#include "flexcore/flexcore.h"

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
    test_fused_random();
    test_strided_rows();
    test_softmax();
    test_bad_arguments();
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed == 0 ? 0 : 1;
}
