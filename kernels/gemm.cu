// Tiled shared-memory GEMM, our own, with the executor GEMM instruction's encoding:
//   c_b = act(op(a_b) @ op(b_b) + bias)   for b < batch, op = transpose when t* is 1,
// a_b = a + b * sa (rows of op(a): m, cols: k, leading dimension lda), likewise b and c; bias is
// NULL or n values; act is fc_act (0 none, 1 relu, 2 sigmoid, 3 tanh, math from ew_math.h).
// Every transposition variant the forward and backward passes need is the (ta, tb) pair.
//
// Launch: block (FC_CU_TILE, FC_CU_TILE), grid (ceil(n / TILE), ceil(m / TILE), min(batch, 65535));
// each thread computes one c element, accumulating in T; A and B tiles are staged in shared
// memory (the B tile padded by one column against bank conflicts in the transposed load).
#include "common.cuh"

#define FC_CU_TILE 16

static __device__ __forceinline__ float act_of(int act, float v)
{
    return act == FC_ACT_RELU ? fc_ew_relu_f32(v)
           : act == FC_ACT_SIGMOID ? fc_ew_sigmoid_f32(v)
           : act == FC_ACT_TANH ? fc_ew_tanh_f32(v)
                                : v;
}

static __device__ __forceinline__ double act_of(int act, double v)
{
    return act == FC_ACT_RELU ? fc_ew_relu_f64(v)
           : act == FC_ACT_SIGMOID ? fc_ew_sigmoid_f64(v)
           : act == FC_ACT_TANH ? fc_ew_tanh_f64(v)
                                : v;
}

template <typename T>
static __device__ void gemm_impl(int ta, int tb, int64_t batch, int64_t m, int64_t n, int64_t k, const T* a,
                                 int64_t lda, int64_t sa, const T* b, int64_t ldb, int64_t sb, T* c, int64_t ldc,
                                 int64_t sc, const T* bias, int act)
{
    __shared__ T as[FC_CU_TILE][FC_CU_TILE + 1];
    __shared__ T bs[FC_CU_TILE][FC_CU_TILE + 1];
    const int tx = (int)threadIdx.x, ty = (int)threadIdx.y;
    const int64_t row = (int64_t)blockIdx.y * FC_CU_TILE + ty;
    const int64_t col = (int64_t)blockIdx.x * FC_CU_TILE + tx;
    for (int64_t z = blockIdx.z; z < batch; z += gridDim.z) {
        const T* az = a + z * sa;
        const T* bz = b + z * sb;
        T acc = (T)0;
        for (int64_t p0 = 0; p0 < k; p0 += FC_CU_TILE) {
            // as[ty][tx] = op(a)[row, p0 + tx]; bs[ty][tx] = op(b)[p0 + ty, col]
            const int64_t pa = p0 + tx, pb = p0 + ty;
            as[ty][tx] = (row < m && pa < k) ? (ta ? az[pa * lda + row] : az[row * lda + pa]) : (T)0;
            bs[ty][tx] = (pb < k && col < n) ? (tb ? bz[col * ldb + pb] : bz[pb * ldb + col]) : (T)0;
            __syncthreads();
            const int64_t kk = k - p0 < FC_CU_TILE ? k - p0 : FC_CU_TILE;
            for (int64_t p = 0; p < kk; ++p) {
                acc += as[ty][p] * bs[p][tx];
            }
            __syncthreads();
        }
        if (row < m && col < n) {
            T v = acc;
            if (bias != nullptr) {
                v += bias[col];
            }
            c[z * sc + row * ldc + col] = act_of(act, v);
        }
    }
}

extern "C" __global__ void fc_cu_gemm_f32(int ta, int tb, int64_t batch, int64_t m, int64_t n, int64_t k,
                                          const float* a, int64_t lda, int64_t sa, const float* b, int64_t ldb,
                                          int64_t sb, float* c, int64_t ldc, int64_t sc, const float* bias, int act)
{
    gemm_impl<float>(ta, tb, batch, m, n, k, a, lda, sa, b, ldb, sb, c, ldc, sc, bias, act);
}

extern "C" __global__ void fc_cu_gemm_f64(int ta, int tb, int64_t batch, int64_t m, int64_t n, int64_t k,
                                          const double* a, int64_t lda, int64_t sa, const double* b, int64_t ldb,
                                          int64_t sb, double* c, int64_t ldc, int64_t sc, const double* bias, int act)
{
    gemm_impl<double>(ta, tb, batch, m, n, k, a, lda, sa, b, ldb, sb, c, ldc, sc, bias, act);
}
