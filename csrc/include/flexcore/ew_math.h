/* Elementwise math: one definition per op and dtype, shared by the C kernels (csrc/src) and the
 * CUDA kernels (kernels/), so the CPU tests check the same formulas the GPU runs.
 *
 * Semantics follow numpy (the reference backend): IEEE results for out-of-domain inputs (log(-1) is
 * NaN, exp(1000) is inf), NaN propagates through maximum/minimum/relu. */
#ifndef FLEXCORE_EW_MATH_H
#define FLEXCORE_EW_MATH_H

#include <math.h>

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

/* np.maximum(x, 0): the x != x term keeps NaN. */
static inline FC_HOST_DEVICE float fc_ew_relu_f32(float x) { return (x > 0.0f || x != x) ? x : 0.0f; }

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

static inline FC_HOST_DEVICE double fc_ew_relu_f64(double x) { return (x > 0.0 || x != x) ? x : 0.0; }

/* ---- binary ---- */

static inline FC_HOST_DEVICE float fc_ew_add_f32(float a, float b) { return a + b; }
static inline FC_HOST_DEVICE float fc_ew_sub_f32(float a, float b) { return a - b; }
static inline FC_HOST_DEVICE float fc_ew_mul_f32(float a, float b) { return a * b; }
static inline FC_HOST_DEVICE float fc_ew_div_f32(float a, float b) { return a / b; }

/* numpy's choice, bit for bit: NaN in either argument wins, and on a tie (0.0 vs -0.0) b wins. */
static inline FC_HOST_DEVICE float fc_ew_maximum_f32(float a, float b) { return (a > b || a != a) ? a : b; }
static inline FC_HOST_DEVICE float fc_ew_minimum_f32(float a, float b) { return (a < b || a != a) ? a : b; }

static inline FC_HOST_DEVICE double fc_ew_add_f64(double a, double b) { return a + b; }
static inline FC_HOST_DEVICE double fc_ew_sub_f64(double a, double b) { return a - b; }
static inline FC_HOST_DEVICE double fc_ew_mul_f64(double a, double b) { return a * b; }
static inline FC_HOST_DEVICE double fc_ew_div_f64(double a, double b) { return a / b; }
static inline FC_HOST_DEVICE double fc_ew_maximum_f64(double a, double b) { return (a > b || a != a) ? a : b; }
static inline FC_HOST_DEVICE double fc_ew_minimum_f64(double a, double b) { return (a < b || a != a) ? a : b; }

#endif /* FLEXCORE_EW_MATH_H */
