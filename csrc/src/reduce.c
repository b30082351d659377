/* Reductions over the middle axis of x viewed as (outer, red, inner), rows of inner elements ld
 * apart: fc_reduce, fc_reduce_ld.
 *
 * Float sums accumulate in float64. Along a contiguous run (inner == 1, ld == 1) the sum is numpy's pairwise
 * algorithm (ku_sum_*, kernel_util.h), so it vectorises and its error grows with log2(red); across
 * rows (inner > 1) whole rows are added into a row of float64 accumulators, blockwise (128 rows
 * per partial sum), so the error grows with 128 + red / 128 instead of red. A fixed order
 * throughout: results are deterministic. */
#include <string.h>

#include "flexcore/ew_math.h"
#include "flexcore/kernels.h"
#include "kernel_util.h"

#define PW_BLOCK KU_PW_BLOCK
#define LANES KU_LANES
/* Inner elements accumulated at once: two float64 rows of this (32 KiB) on the stack. Rows are
 * streamed whole up to this width; a narrow chunk of wide rows (the old 256 of a 1024-wide
 * gradient) reads 1 KiB of every 4 KiB page, which the prefetchers follow poorly (3x slower). */
#define ROW_CHUNK 2048
/* y[j] = sum_r x[r * ld + j] for j < w <= ROW_CHUNK. Each column's order of additions depends on
 * red alone, never on w or on where the column block starts. */
#define DEFINE_SUM_BLOCK(T, SFX)                                                                   \
    static void sum_block_##SFX(int64_t red, int64_t w, int64_t ld, const T* base, T* y)           \
    {                                                                                              \
        double total[ROW_CHUNK], part[ROW_CHUNK];                                                  \
        for (int64_t j = 0; j < w; ++j) {                                                          \
            total[j] = 0.0;                                                                        \
        }                                                                                          \
        for (int64_t r0 = 0; r0 < red; r0 += PW_BLOCK) {                                           \
            const int64_t r1 = red - r0 < PW_BLOCK ? red : r0 + PW_BLOCK;                          \
            const T* row = base + r0 * ld;                                                         \
            for (int64_t j = 0; j < w; ++j) {                                                      \
                part[j] = (double)row[j];                                                          \
            }                                                                                      \
            int64_t r = r0 + 1;                                                                    \
            for (; r + 4 <= r1; r += 4) { /* 4 rows per pass: fewer loads of part */               \
                const T* a = base + r * ld;                                                        \
                const T* b = a + 2 * ld;                                                           \
                for (int64_t j = 0; j < w; ++j) {                                                  \
                    const double ab = (double)a[j] + (double)a[j + ld];                            \
                    part[j] += ab + ((double)b[j] + (double)b[j + ld]);                            \
                }                                                                                  \
            }                                                                                      \
            for (; r < r1; ++r) {                                                                  \
                row = base + r * ld;                                                               \
                for (int64_t j = 0; j < w; ++j) {                                                  \
                    part[j] += (double)row[j];                                                     \
                }                                                                                  \
            }                                                                                      \
            for (int64_t j = 0; j < w; ++j) {                                                      \
                total[j] += part[j];                                                               \
            }                                                                                      \
        }                                                                                          \
        for (int64_t j = 0; j < w; ++j) {                                                          \
            y[j] = (T)total[j];                                                                    \
        }                                                                                          \
    }

DEFINE_SUM_BLOCK(float, f32)
DEFINE_SUM_BLOCK(double, f64)

/* y[o, j] = sum_r x[o, r, j] for inner > 1 (float and double). Not split across threads: on
 * the 2-core machine, halves of each row summed by two threads (the split that keeps results
 * independent of the thread count) measured slower than one thread streaming whole rows. */
static void sum_rows(int dtype, int64_t outer, int64_t red, int64_t inner, int64_t ld, const void* x, void* y)
{
    for (int64_t o = 0; o < outer; ++o) {
        for (int64_t j = 0; j < inner; j += ROW_CHUNK) {
            const int64_t w = inner - j < ROW_CHUNK ? inner - j : ROW_CHUNK;
            if (dtype == FC_F32) {
                sum_block_f32(red, w, ld, (const float*)x + o * red * ld + j, (float*)y + o * inner + j);
            } else {
                sum_block_f64(red, w, ld, (const double*)x + o * red * ld + j, (double*)y + o * inner + j);
            }
        }
    }
}

#define DEFINE_SUM_FLOAT(T, SFX, DT)                                                                \
    static void sum_##SFX(int64_t outer, int64_t red, int64_t inner, int64_t ld, const T* x, T* y) \
    {                                                                                              \
        if (inner == 1 && ld == 1) {                                                               \
            for (int64_t o = 0; o < outer; ++o) {                                                  \
                y[o] = (T)ku_sum_##SFX(x + o * red, red);                                        \
            }                                                                                      \
        } else {                                                                                   \
            sum_rows(DT, outer, red, inner, ld, x, y);                                           \
        }                                                                                          \
    }

DEFINE_SUM_FLOAT(float, f32, FC_F32)
DEFINE_SUM_FLOAT(double, f64, FC_F64)

/* int64 sums wrap (numpy); bool sums count the nonzero bytes into int64. TERM(v) maps an input
 * element to the uint64 added. */
#define DEFINE_SUM_INT(NAME, T, TERM)                                                              \
    static void NAME(int64_t outer, int64_t red, int64_t inner, int64_t ld, const T* x, int64_t* y) \
    {                                                                                              \
        for (int64_t o = 0; o < outer; ++o) {                                                      \
            const T* base = x + o * red * ld;                                                      \
            int64_t* out = y + o * inner;                                                          \
            if (inner == 1 && ld == 1) {                                                           \
                uint64_t acc = 0;                                                                  \
                for (int64_t r = 0; r < red; ++r) {                                                \
                    acc += TERM(base[r]);                                                          \
                }                                                                                  \
                out[0] = (int64_t)acc;                                                             \
                continue;                                                                          \
            }                                                                                      \
            for (int64_t j = 0; j < inner; ++j) {                                                  \
                out[j] = 0;                                                                        \
            }                                                                                      \
            for (int64_t r = 0; r < red; ++r) {                                                    \
                const T* row = base + r * ld;                                                      \
                for (int64_t j = 0; j < inner; ++j) {                                              \
                    out[j] = (int64_t)((uint64_t)out[j] + TERM(row[j]));                           \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

#define TERM_I64(v) ((uint64_t)(v))
#define TERM_BOOL(v) ((uint64_t)((v) != 0))
DEFINE_SUM_INT(sum_i64, int64_t, TERM_I64)
DEFINE_SUM_INT(sum_bool, uint8_t, TERM_BOOL)

/* Max over red >= 1 rows. MAXF is a numpy-maximum (NaN wins); NORM maps an input to the value
 * compared (bool bytes to 0/1). A contiguous run keeps MAX_LANES running maxima: with fewer, gcc
 * unrolls the lane loop completely and then fails to vectorise the selects; with 32 it vectorises
 * the lane loop itself. */
#define MAX_LANES 32
#define DEFINE_MAX(NAME, T, MAXF, NORM)                                                            \
    static void NAME(int64_t outer, int64_t red, int64_t inner, int64_t ld, const T* x, T* y)      \
    {                                                                                              \
        for (int64_t o = 0; o < outer; ++o) {                                                      \
            const T* base = x + o * red * ld;                                                      \
            T* out = y + o * inner;                                                                \
            if (inner == 1 && ld == 1) {                                                           \
                T m = (T)NORM(base[0]);                                                            \
                /* No index or lane is live after the main loop, so gcc vectorises it. */          \
                const int64_t body = red - red % MAX_LANES;                                        \
                if (body > 0) {                                                                    \
                    T r[MAX_LANES];                                                                \
                    for (int j = 0; j < MAX_LANES; ++j) {                                          \
                        r[j] = (T)NORM(base[j]);                                                   \
                    }                                                                              \
                    for (int64_t i = MAX_LANES; i < body; i += MAX_LANES) {                        \
                        for (int j = 0; j < MAX_LANES; ++j) {                                      \
                            r[j] = MAXF(r[j], (T)NORM(base[i + j]));                               \
                        }                                                                          \
                    }                                                                              \
                    for (int j = 0; j < MAX_LANES; ++j) {                                          \
                        m = MAXF(m, r[j]);                                                         \
                    }                                                                              \
                }                                                                                  \
                for (int64_t i = body; i < red; ++i) {                                             \
                    m = MAXF(m, (T)NORM(base[i]));                                                 \
                }                                                                                  \
                out[0] = m;                                                                        \
                continue;                                                                          \
            }                                                                                      \
            for (int64_t j = 0; j < inner; ++j) {                                                  \
                out[j] = (T)NORM(base[j]);                                                         \
            }                                                                                      \
            for (int64_t r = 1; r < red; ++r) {                                                    \
                const T* row = base + r * ld;                                                      \
                for (int64_t j = 0; j < inner; ++j) {                                              \
                    out[j] = MAXF(out[j], (T)NORM(row[j]));                                        \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

#define NORM_SAME(v) (v)
#define NORM_BOOL(v) ((v) != 0)
#define MAX_BOOL(a, b) ((uint8_t)((a) | (b)))
DEFINE_MAX(max_f32, float, fc_ew_maximum_f32, NORM_SAME)
DEFINE_MAX(max_f64, double, fc_ew_maximum_f64, NORM_SAME)
DEFINE_MAX(max_i64, int64_t, fc_ew_maximum_i64, NORM_SAME)
DEFINE_MAX(max_bool, uint8_t, MAX_BOOL, NORM_BOOL)

int fc_reduce(int dtype, int op, int64_t outer, int64_t red, int64_t inner, const void* x, void* y)
{
    return fc_reduce_ld(dtype, op, outer, red, inner, inner, x, y);
}

int fc_reduce_ld(int dtype, int op, int64_t outer, int64_t red, int64_t inner, int64_t ld, const void* x, void* y)
{
    if (!ku_dtype_ok(dtype)) {
        return FC_ERR_DTYPE;
    }
    if (op < 0 || op >= FC_REDUCE_COUNT) {
        return FC_ERR_OP;
    }
    const int64_t in_bytes = ku_dtype_size(dtype);
    const int64_t out_bytes = (op == FC_REDUCE_SUM && dtype == FC_BOOL) ? 8 : in_bytes;
    const int64_t n_out = ku_mul(outer, inner);
    const int64_t n_in = ku_mul(n_out, red);
    if (n_out < 0 || n_in < 0 || ku_mul(n_in, in_bytes) < 0 || ku_mul(n_out, out_bytes) < 0 || ld < inner ||
        ku_mul(ku_mul(outer, red), ld) < 0 || ku_mul(ku_mul(outer, red) * ld, in_bytes) < 0) {
        return FC_ERR_SIZE; /* a negative size, a row stride below the row, or too many bytes */
    }
    if (op == FC_REDUCE_MAX && red == 0 && n_out > 0) {
        return FC_ERR_SIZE; /* the max of nothing (numpy raises too) */
    }
    if (ku_bad_ptr(x, n_in) || ku_bad_ptr(y, n_out)) {
        return FC_ERR_NULL;
    }
    if (n_out == 0) {
        return FC_OK;
    }
    if (n_in == 0) { /* an empty sum; x is not touched (it may be NULL) */
        memset(y, 0, (size_t)(n_out * out_bytes)); /* all-zero bits: 0, 0.0f and 0.0 */
        return FC_OK;
    }
    if (op == FC_REDUCE_SUM) {
        switch (dtype) {
        case FC_F32:
            sum_f32(outer, red, inner, ld, (const float*)x, (float*)y);
            break;
        case FC_F64:
            sum_f64(outer, red, inner, ld, (const double*)x, (double*)y);
            break;
        case FC_I64:
            sum_i64(outer, red, inner, ld, (const int64_t*)x, (int64_t*)y);
            break;
        default:
            sum_bool(outer, red, inner, ld, (const uint8_t*)x, (int64_t*)y);
            break;
        }
        return FC_OK;
    }
    switch (dtype) {
    case FC_F32:
        max_f32(outer, red, inner, ld, (const float*)x, (float*)y);
        break;
    case FC_F64:
        max_f64(outer, red, inner, ld, (const double*)x, (double*)y);
        break;
    case FC_I64:
        max_i64(outer, red, inner, ld, (const int64_t*)x, (int64_t*)y);
        break;
    default:
        max_bool(outer, red, inner, ld, (const uint8_t*)x, (uint8_t*)y);
        break;
    }
    return FC_OK;
}
