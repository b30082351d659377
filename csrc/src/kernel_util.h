/* Internal helpers of the generic kernels (csrc/src/ew_*.c, movement.c, reduce.c, ...): argument
 * checks for shapes and strides, dtype sizes, and the coalesced n-d layout the strided loops walk.
 * Not installed; nothing here is part of the ABI. */
#ifndef FLEXCORE_KERNEL_UTIL_H
#define FLEXCORE_KERNEL_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "flexcore/flexcore.h"

/* Most operands (inputs and the output) one strided loop walks together. */
#define KU_MAX_OPS 4

static inline int ku_dtype_ok(int dtype) { return dtype >= 0 && dtype < FC_DTYPE_COUNT; }

/* Bytes per element of a valid dtype. */
static inline int64_t ku_dtype_size(int dtype)
{
    static const int64_t sizes[FC_DTYPE_COUNT] = {4, 8, 8, 1};
    return sizes[dtype];
}

/* NULL is acceptable only where nothing is accessed. */
static inline int ku_bad_ptr(const void* p, int64_t n) { return p == NULL && n != 0; }

/* a * b for a, b >= 0, or -1 when it does not fit in int64. */
static inline int64_t ku_mul(int64_t a, int64_t b)
{
    if (a < 0 || b < 0 || (a != 0 && b > INT64_MAX / a)) {
        return -1;
    }
    return a * b;
}

/* a + b for a, b >= 0, or -1 when it does not fit in int64. */
static inline int64_t ku_add(int64_t a, int64_t b)
{
    if (a < 0 || b < 0 || b > INT64_MAX - a) {
        return -1;
    }
    return a + b;
}

/* Checks ndim and shape; *count = the number of elements. */
static inline int ku_check_shape(int ndim, const int64_t* shape, int64_t* count)
{
    if (ndim < 0 || ndim > FC_MAX_NDIM) {
        return FC_ERR_SIZE;
    }
    if (ndim > 0 && shape == NULL) {
        return FC_ERR_NULL;
    }
    int64_t total = 1;
    for (int d = 0; d < ndim; ++d) {
        total = ku_mul(total, shape[d]); /* a negative extent fails here too */
        if (total < 0) {
            return FC_ERR_SIZE;
        }
    }
    *count = total;
    return FC_OK;
}

/* Row-major strides (elements) of a shape already checked by ku_check_shape. */
static inline void ku_contiguous(int ndim, const int64_t* shape, int64_t* strides)
{
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; --d) {
        strides[d] = s;
        s *= shape[d] > 0 ? shape[d] : 1; /* cannot overflow: the product was checked */
    }
}

/* Resolves a stride argument: NULL means contiguous (written to `storage`). Checks that strides are
 * non-negative and that the last byte touched, for a non-empty array, fits in int64. */
static inline int ku_strides(int ndim, const int64_t* shape, int64_t count, const int64_t* given,
                             int64_t elem_bytes, int64_t* storage, const int64_t** out)
{
    if (given == NULL) {
        ku_contiguous(ndim, shape, storage);
        given = storage;
    }
    int64_t extent = 1; /* elements from the first to one past the last accessed */
    for (int d = 0; d < ndim; ++d) {
        if (given[d] < 0) {
            return FC_ERR_SIZE;
        }
        if (count > 0) {
            extent = ku_add(extent, ku_mul(shape[d] - 1, given[d]));
            if (extent < 0) {
                return FC_ERR_SIZE;
            }
        }
    }
    if (ku_mul(extent, elem_bytes) < 0) {
        return FC_ERR_SIZE;
    }
    *out = given;
    return FC_OK;
}

/* An n-d iteration space after coalescing: axes of length 1 dropped, and adjacent axes merged
 * wherever every operand steps through them as through one axis. At least one axis (length 1 for
 * a scalar). Strides in elements. */
typedef struct ku_layout {
    int ndim;
    int64_t shape[FC_MAX_NDIM];
    int64_t stride[KU_MAX_OPS][FC_MAX_NDIM];
} ku_layout;

static inline void ku_coalesce(int ndim, const int64_t* shape, int nops, const int64_t* const* strides,
                               ku_layout* out)
{
    int m = 0;
    for (int d = 0; d < ndim; ++d) {
        if (shape[d] == 1) {
            continue;
        }
        if (m > 0) {
            int merge = 1;
            for (int k = 0; k < nops; ++k) {
                /* the outer axis steps over exactly one run of the inner axis */
                const int64_t span = ku_mul(strides[k][d], shape[d]);
                merge &= span >= 0 && out->stride[k][m - 1] == span;
            }
            if (merge) {
                out->shape[m - 1] *= shape[d];
                for (int k = 0; k < nops; ++k) {
                    out->stride[k][m - 1] = strides[k][d];
                }
                continue;
            }
        }
        out->shape[m] = shape[d];
        for (int k = 0; k < nops; ++k) {
            out->stride[k][m] = strides[k][d];
        }
        ++m;
    }
    if (m == 0) {
        out->shape[0] = 1;
        for (int k = 0; k < nops; ++k) {
            out->stride[k][0] = 0;
        }
        m = 1;
    }
    out->ndim = m;
}

/* Odometer over the first n_outer axes of L: steps idx and the element offsets off[k] of each
 * operand to the next position; returns 0 (with everything back at zero) after the last one. */
static inline int ku_next(const ku_layout* L, int n_outer, int nops, int64_t* idx, int64_t* off)
{
    for (int d = n_outer - 1; d >= 0; --d) {
        if (++idx[d] < L->shape[d]) {
            for (int k = 0; k < nops; ++k) {
                off[k] += L->stride[k][d];
            }
            return 1;
        }
        idx[d] = 0;
        for (int k = 0; k < nops; ++k) {
            off[k] -= L->stride[k][d] * (L->shape[d] - 1);
        }
    }
    return 0;
}

#define KU_PW_BLOCK 128 /* numpy's PW_BLOCKSIZE */
#define KU_LANES 8        /* independent accumulators (the r[] below spells out 8) */

/* Sum of x[0 .. n) in float64, for float and double x: numpy's pairwise algorithm (KU_LANES
 * independent accumulators over blocks of up to KU_PW_BLOCK, halves above that), so the loop
 * vectorises and the error bound grows with log2(n), not n. */
#define KU_DEFINE_SUM(T, SFX)                                                                      \
    static inline double ku_sum_##SFX(const T* x, int64_t n)                                       \
    {                                                                                              \
        if (n < KU_LANES) {                                                                        \
            double s = n > 0 ? (double)x[0] : 0.0;                                                 \
            for (int64_t i = 1; i < n; ++i) {                                                      \
                s += (double)x[i];                                                                 \
            }                                                                                      \
            return s;                                                                              \
        }                                                                                          \
        if (n <= KU_PW_BLOCK) {                                                                    \
            double r[KU_LANES];                                                                    \
            for (int j = 0; j < KU_LANES; ++j) {                                                   \
                r[j] = (double)x[j];                                                               \
            }                                                                                      \
            int64_t i = KU_LANES;                                                                  \
            for (; i + KU_LANES <= n; i += KU_LANES) {                                             \
                for (int j = 0; j < KU_LANES; ++j) {                                               \
                    r[j] += (double)x[i + j];                                                      \
                }                                                                                  \
            }                                                                                      \
            double s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));          \
            for (; i < n; ++i) {                                                                   \
                s += (double)x[i];                                                                 \
            }                                                                                      \
            return s;                                                                              \
        }                                                                                          \
        int64_t half = n / 2;                                                                      \
        half -= half % KU_LANES;                                                                   \
        return ku_sum_##SFX(x, half) + ku_sum_##SFX(x + half, n - half);                           \
    }

KU_DEFINE_SUM(float, f32)
KU_DEFINE_SUM(double, f64)
#undef KU_DEFINE_SUM

#endif /* FLEXCORE_KERNEL_UTIL_H */
