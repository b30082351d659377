// Elementwise CUDA kernels over the same math as the C kernels (flexcore/ew_math.h), with the op
// codes of the C ABI (flexcore/flexcore.h).
//
// Compiled by CMake (FLEXCORE_CUDA=ON) into elementwise.fatbin and loaded through pycuda; the
// kernels are extern "C" so their names are not mangled:
//   fc_cuda_unary_f32(int op, const float* x, float* y, int64_t n)      y = op(x)
//   fc_cuda_binary_f32(int op, const float* a, const float* b, float* y, int64_t n)
// and the same with _f64 and double. The caller checks op and n, as the C ABI does; an unknown op
// writes NaN so a bug shows. y may alias an input exactly. Any 1-D launch shape works (grid-stride
// loop); `op` is the same for the whole launch, so the switch never diverges within a warp.
#include <math.h>
#include <stdint.h>

#include "flexcore/ew_math.h"
#include "flexcore/flexcore.h"

#define UNARY_CASE(OP, FN)                                                                         \
    case OP:                                                                                       \
        return FN(x);

#define BINARY_CASE(OP, FN)                                                                        \
    case OP:                                                                                       \
        return FN(a, b);

#define DEFINE_KERNELS(T, SFX)                                                                     \
    static __device__ T unary_##SFX(int op, T x)                                                   \
    {                                                                                              \
        switch (op) {                                                                              \
            UNARY_CASE(FC_UNARY_NEG, fc_ew_neg_##SFX)                                              \
            UNARY_CASE(FC_UNARY_EXP, fc_ew_exp_##SFX)                                              \
            UNARY_CASE(FC_UNARY_LOG, fc_ew_log_##SFX)                                              \
            UNARY_CASE(FC_UNARY_LOG1P, fc_ew_log1p_##SFX)                                          \
            UNARY_CASE(FC_UNARY_SQRT, fc_ew_sqrt_##SFX)                                            \
            UNARY_CASE(FC_UNARY_ABS, fc_ew_abs_##SFX)                                              \
            UNARY_CASE(FC_UNARY_SIGMOID, fc_ew_sigmoid_##SFX)                                      \
            UNARY_CASE(FC_UNARY_TANH, fc_ew_tanh_##SFX)                                            \
            UNARY_CASE(FC_UNARY_ARCTAN, fc_ew_arctan_##SFX)                                        \
            UNARY_CASE(FC_UNARY_RELU, fc_ew_relu_##SFX)                                            \
            UNARY_CASE(FC_UNARY_SIGN, fc_ew_sign_##SFX)                                            \
            UNARY_CASE(FC_UNARY_STEP, fc_ew_step_##SFX)                                            \
        default:                                                                                   \
            return (T)NAN;                                                                         \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    static __device__ T binary_##SFX(int op, T a, T b)                                             \
    {                                                                                              \
        switch (op) {                                                                              \
            BINARY_CASE(FC_BINARY_ADD, fc_ew_add_##SFX)                                            \
            BINARY_CASE(FC_BINARY_SUB, fc_ew_sub_##SFX)                                            \
            BINARY_CASE(FC_BINARY_MUL, fc_ew_mul_##SFX)                                            \
            BINARY_CASE(FC_BINARY_DIV, fc_ew_div_##SFX)                                            \
            BINARY_CASE(FC_BINARY_MAXIMUM, fc_ew_maximum_##SFX)                                    \
            BINARY_CASE(FC_BINARY_MINIMUM, fc_ew_minimum_##SFX)                                    \
            BINARY_CASE(FC_BINARY_POW, fc_ew_pow_##SFX)                                            \
        default:                                                                                   \
            return (T)NAN;                                                                         \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    extern "C" __global__ void fc_cuda_unary_##SFX(int op, const T* x, T* y, int64_t n)            \
    {                                                                                              \
        const int64_t stride = (int64_t)gridDim.x * blockDim.x;                                    \
        for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {     \
            y[i] = unary_##SFX(op, x[i]);                                                          \
        }                                                                                          \
    }                                                                                              \
                                                                                                   \
    extern "C" __global__ void fc_cuda_binary_##SFX(int op, const T* a, const T* b, T* y,          \
                                                    int64_t n)                                     \
    {                                                                                              \
        const int64_t stride = (int64_t)gridDim.x * blockDim.x;                                    \
        for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {     \
            y[i] = binary_##SFX(op, a[i], b[i]);                                                   \
        }                                                                                          \
    }

DEFINE_KERNELS(float, f32)
DEFINE_KERNELS(double, f64)
