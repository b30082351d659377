/* Elementwise math: one definition per op and dtype, shared by the C kernels (csrc/src) and the
 * CUDA kernels (kernels/), so the CPU tests check the same formulas the GPU runs.
 *
 * Semantics follow numpy (the reference backend): IEEE results for out-of-domain inputs (log(-1) is
 * NaN, exp(1000) is inf), NaN propagates through maximum/minimum. relu is the reference's relu
 * composite where(x > 0, x, 0), so relu(NaN) is 0 on every path (elementwise, fused, GEMM epilogue). */
#ifndef FLEXCORE_EW_MATH_H
#define FLEXCORE_EW_MATH_H

#include <math.h>
#include <stdint.h>

#include "flexcore/host_device.h"

/* ---- unary, float32 ---- */

static inline FC_HOST_DEVICE float fc_ew_neg_f32(float x) { return -x; }
static inline FC_HOST_DEVICE float fc_ew_exp_f32(float x) { return expf(x); }
static inline FC_HOST_DEVICE float fc_ew_log_f32(float x) { return logf(x); }
static inline FC_HOST_DEVICE float fc_ew_log1p_f32(float x) { return log1pf(x); }
static inline FC_HOST_DEVICE float fc_ew_sqrt_f32(float x) { return sqrtf(x); }
static inline FC_HOST_DEVICE float fc_ew_abs_f32(float x) { return fabsf(x); }
static inline FC_HOST_DEVICE float fc_ew_tanh_f32(float x) { return tanhf(x); }
static inline FC_HOST_DEVICE float fc_ew_arctan_f32(float x) { return atanf(x); }

/* exp() only ever sees a non-positive argument, so it cannot overflow: 1/(1+exp(1000)) would be
 * fine, but exp(x)/(1+exp(x)) at x = 1000 is inf/inf = NaN. */
static inline FC_HOST_DEVICE float fc_ew_sigmoid_f32(float x)
{
    if (x >= 0.0f) {
        return 1.0f / (1.0f + expf(-x));
    }
    const float e = expf(x);
    return e / (1.0f + e);
}

/* where(x > 0, x, 0), as the reference's relu: NaN gives 0 (np.maximum(x, 0) would keep it). */
static inline FC_HOST_DEVICE float fc_ew_relu_f32(float x) { return x > 0.0f ? x : 0.0f; }

/* np.sign: +0.0 for both zeros, NaN for NaN (the last branch returns x itself). */
static inline FC_HOST_DEVICE float fc_ew_sign_f32(float x)
{
    return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : (x == 0.0f ? 0.0f : x));
}

/* (x > 0).astype(x.dtype): NaN gives 0. */
static inline FC_HOST_DEVICE float fc_ew_step_f32(float x) { return x > 0.0f ? 1.0f : 0.0f; }

/* ---- unary, float64 ---- */

static inline FC_HOST_DEVICE double fc_ew_neg_f64(double x) { return -x; }
static inline FC_HOST_DEVICE double fc_ew_exp_f64(double x) { return exp(x); }
static inline FC_HOST_DEVICE double fc_ew_log_f64(double x) { return log(x); }
static inline FC_HOST_DEVICE double fc_ew_log1p_f64(double x) { return log1p(x); }
static inline FC_HOST_DEVICE double fc_ew_sqrt_f64(double x) { return sqrt(x); }
static inline FC_HOST_DEVICE double fc_ew_abs_f64(double x) { return fabs(x); }
static inline FC_HOST_DEVICE double fc_ew_tanh_f64(double x) { return tanh(x); }
static inline FC_HOST_DEVICE double fc_ew_arctan_f64(double x) { return atan(x); }

static inline FC_HOST_DEVICE double fc_ew_sigmoid_f64(double x)
{
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    const double e = exp(x);
    return e / (1.0 + e);
}

static inline FC_HOST_DEVICE double fc_ew_relu_f64(double x) { return x > 0.0 ? x : 0.0; }

static inline FC_HOST_DEVICE double fc_ew_sign_f64(double x)
{
    return x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : (x == 0.0 ? 0.0 : x));
}

static inline FC_HOST_DEVICE double fc_ew_step_f64(double x) { return x > 0.0 ? 1.0 : 0.0; }

/* ---- binary ---- */

static inline FC_HOST_DEVICE float fc_ew_add_f32(float a, float b) { return a + b; }
static inline FC_HOST_DEVICE float fc_ew_sub_f32(float a, float b) { return a - b; }
static inline FC_HOST_DEVICE float fc_ew_mul_f32(float a, float b) { return a * b; }
static inline FC_HOST_DEVICE float fc_ew_div_f32(float a, float b) { return a / b; }
static inline FC_HOST_DEVICE float fc_ew_pow_f32(float a, float b) { return powf(a, b); }

/* numpy's choice, bit for bit: NaN in either argument wins, and on a tie (0.0 vs -0.0) b wins. */
static inline FC_HOST_DEVICE float fc_ew_maximum_f32(float a, float b) { return (a > b || a != a) ? a : b; }
static inline FC_HOST_DEVICE float fc_ew_minimum_f32(float a, float b) { return (a < b || a != a) ? a : b; }

static inline FC_HOST_DEVICE double fc_ew_add_f64(double a, double b) { return a + b; }
static inline FC_HOST_DEVICE double fc_ew_sub_f64(double a, double b) { return a - b; }
static inline FC_HOST_DEVICE double fc_ew_mul_f64(double a, double b) { return a * b; }
static inline FC_HOST_DEVICE double fc_ew_div_f64(double a, double b) { return a / b; }
static inline FC_HOST_DEVICE double fc_ew_pow_f64(double a, double b) { return pow(a, b); }
static inline FC_HOST_DEVICE double fc_ew_maximum_f64(double a, double b) { return (a > b || a != a) ? a : b; }
static inline FC_HOST_DEVICE double fc_ew_minimum_f64(double a, double b) { return (a < b || a != a) ? a : b; }

/* ---- int64: numpy wraps on overflow; going through uint64 makes that defined behaviour in C
 * (unsigned arithmetic is modular; the conversion back is modular on every target we build). ---- */

static inline FC_HOST_DEVICE int64_t fc_ew_neg_i64(int64_t a) { return (int64_t)(0u - (uint64_t)a); }
static inline FC_HOST_DEVICE int64_t fc_ew_add_i64(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
static inline FC_HOST_DEVICE int64_t fc_ew_sub_i64(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b); }
static inline FC_HOST_DEVICE int64_t fc_ew_mul_i64(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }
static inline FC_HOST_DEVICE int64_t fc_ew_maximum_i64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline FC_HOST_DEVICE int64_t fc_ew_minimum_i64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- conversions ---- */

/* float -> int64 truncates toward zero (as numpy's astype); C leaves values outside the int64
 * range undefined, so they saturate here, and NaN becomes 0. 2^63 is exact in double; every
 * double below it and >= -2^63 converts exactly after truncation. */
static inline FC_HOST_DEVICE int64_t fc_ew_f64_to_i64(double x)
{
    if (x != x) {
        return 0;
    }
    if (x >= 9223372036854775808.0) {
        return INT64_MAX;
    }
    if (x < -9223372036854775808.0) {
        return INT64_MIN;
    }
    return (int64_t)x;
}

/* ---- op-code tables: which function each op code of the C ABI (flexcore/flexcore.h) applies.
 * Written once and expanded by every kernel that dispatches on an op code: the C loops put one
 * case around each loop (X(OP, FN) -> case OP: loop calling FN), the CUDA kernels one case per
 * element. SFX is f32 or f64. ---- */
#define FC_EW_UNARY_TABLE(X, SFX)                                                                  \
    X(FC_UNARY_NEG, fc_ew_neg_##SFX)                                                               \
    X(FC_UNARY_EXP, fc_ew_exp_##SFX)                                                               \
    X(FC_UNARY_LOG, fc_ew_log_##SFX)                                                               \
    X(FC_UNARY_LOG1P, fc_ew_log1p_##SFX)                                                           \
    X(FC_UNARY_SQRT, fc_ew_sqrt_##SFX)                                                             \
    X(FC_UNARY_ABS, fc_ew_abs_##SFX)                                                               \
    X(FC_UNARY_SIGMOID, fc_ew_sigmoid_##SFX)                                                       \
    X(FC_UNARY_TANH, fc_ew_tanh_##SFX)                                                             \
    X(FC_UNARY_ARCTAN, fc_ew_arctan_##SFX)                                                         \
    X(FC_UNARY_RELU, fc_ew_relu_##SFX)                                                             \
    X(FC_UNARY_SIGN, fc_ew_sign_##SFX)                                                             \
    X(FC_UNARY_STEP, fc_ew_step_##SFX)

#define FC_EW_BINARY_TABLE(X, SFX)                                                                 \
    X(FC_BINARY_ADD, fc_ew_add_##SFX)                                                              \
    X(FC_BINARY_SUB, fc_ew_sub_##SFX)                                                              \
    X(FC_BINARY_MUL, fc_ew_mul_##SFX)                                                              \
    X(FC_BINARY_DIV, fc_ew_div_##SFX)                                                              \
    X(FC_BINARY_MAXIMUM, fc_ew_maximum_##SFX)                                                      \
    X(FC_BINARY_MINIMUM, fc_ew_minimum_##SFX)                                                      \
    X(FC_BINARY_POW, fc_ew_pow_##SFX)

#endif /* FLEXCORE_EW_MATH_H */
