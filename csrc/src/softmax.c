/* fc_softmax_rows: (log-)softmax over the last axis, stable (the row max is subtracted first).
 *
 * Per element it computes what ops.py's composites compute (x - max and exp in the array's dtype),
 * but the row sum is the float64 pairwise sum of kernel_util.h, so results are at least as
 * accurate as the composite's (whose float32 sum is float32). */
#include <math.h>

#include "flexcore/ew_math.h"
#include "flexcore/kernels.h"
#include "kernel_util.h"

#define CHUNK 256 /* exp values buffered for the log-softmax sum (x must survive: y may be x) */

#define DEFINE_SOFTMAX(T, SFX)                                                                     \
    static void softmax_##SFX(int log_out, int64_t rows, int64_t cols, const T* x, T* y)           \
    {                                                                                              \
        for (int64_t r = 0; r < rows; ++r) {                                                       \
            const T* xr = x + r * cols;                                                            \
            T* yr = y + r * cols;                                                                  \
            T m = xr[0];                                                                           \
            for (int64_t j = 1; j < cols; ++j) {                                                   \
                m = fc_ew_maximum_##SFX(m, xr[j]); /* NaN wins: a NaN row stays NaN */             \
            }                                                                                      \
            if (log_out) {                                                                         \
                T buf[CHUNK];                                                                      \
                double s = 0.0;                                                                    \
                for (int64_t j0 = 0; j0 < cols; j0 += CHUNK) {                                     \
                    const int64_t w = cols - j0 < CHUNK ? cols - j0 : CHUNK;                       \
                    for (int64_t j = 0; j < w; ++j) {                                              \
                        buf[j] = fc_ew_exp_##SFX(xr[j0 + j] - m);                                  \
                    }                                                                              \
                    s += ku_sum_##SFX(buf, w);                                                     \
                }                                                                                  \
                const T ls = (T)log(s);                                                            \
                for (int64_t j = 0; j < cols; ++j) {                                               \
                    yr[j] = (xr[j] - m) - ls;                                                      \
                }                                                                                  \
            } else {                                                                               \
                for (int64_t j = 0; j < cols; ++j) {                                               \
                    yr[j] = fc_ew_exp_##SFX(xr[j] - m);                                            \
                }                                                                                  \
                const T ts = (T)ku_sum_##SFX(yr, cols);                                            \
                for (int64_t j = 0; j < cols; ++j) {                                               \
                    yr[j] = yr[j] / ts;                                                            \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

DEFINE_SOFTMAX(float, f32)
DEFINE_SOFTMAX(double, f64)

int fc_softmax_rows(int dtype, int log, int64_t rows, int64_t cols, const void* x, void* y)
{
    if (dtype != FC_F32 && dtype != FC_F64) {
        return FC_ERR_DTYPE;
    }
    const int64_t count = ku_mul(rows, cols);
    if (count < 0 || ku_mul(count, ku_dtype_size(dtype)) < 0) {
        return FC_ERR_SIZE;
    }
    if (ku_bad_ptr(x, count) || ku_bad_ptr(y, count)) {
        return FC_ERR_NULL;
    }
    if (count == 0) {
        return FC_OK;
    }
    if (dtype == FC_F32) {
        softmax_f32(log, rows, cols, (const float*)x, (float*)y);
    } else {
        softmax_f64(log, rows, cols, (const double*)x, (double*)y);
    }
    return FC_OK;
}
