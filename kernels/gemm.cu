// Tiled shared-memory GEMM, our own, with the executor GEMM instruction's encoding:
//   c_b = act(op(a_b) @ op(b_b) + bias)   for b < batch, op = transpose when t* is 1,
// a_b = a + b * sa (rows of op(a): m, cols: k, leading dimension lda), likewise b and c; bias is
// NULL or n values; act is fc_act (0 none, 1 relu, 2 sigmoid, 3 tanh, math from ew_math.h).
// Every transposition variant the forward and backward passes need is the (ta, tb) pair.
//
// Launch: block (16, 16), grid up to (ceil(n / 64), ceil(m / 64), batch), each axis capped at 65535. A block computes a
// 64 x 64 tile of c, each thread a 4 x 4 sub-tile (rows ty + 16 i, cols tx + 16 j: neighbouring
// threads read neighbouring shared-memory words and write neighbouring c elements), accumulating
// in T. 16-deep slices of op(a) and op(b) are staged k-major in shared memory, each loaded along
// the operand's contiguous axis (so the global loads coalesce whether or not it is transposed).
#include "common.cuh"

#define FC_CU_TILE 16                      /* threads per block side */
#define FC_CU_BT 64                        /* c tile side per block */
#define FC_CU_BK 16                        /* depth of a shared-memory slice */
#define FC_CU_SUB (FC_CU_BT / FC_CU_TILE)  /* 4: c elements per thread per side */

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
    __shared__ T as[FC_CU_BK][FC_CU_BT + 1];  // as[p][r] = op(a)[row0 + r, p0 + p]
    __shared__ T bs[FC_CU_BK][FC_CU_BT + 1];  // bs[p][q] = op(b)[p0 + p, col0 + q]
    const int tx = (int)threadIdx.x, ty = (int)threadIdx.y;
    const int tid = ty * FC_CU_TILE + tx;
    // Grid-stride over batch and tiles (the grid is capped at 65535 per axis); every bound is
    // uniform over the block, so all its threads reach the same barriers.
    for (int64_t z = blockIdx.z; z < batch; z += gridDim.z) {
    for (int64_t row0 = (int64_t)blockIdx.y * FC_CU_BT; row0 < m; row0 += (int64_t)gridDim.y * FC_CU_BT) {
    for (int64_t col0 = (int64_t)blockIdx.x * FC_CU_BT; col0 < n; col0 += (int64_t)gridDim.x * FC_CU_BT) {
        const T* az = a + z * sa;
        const T* bz = b + z * sb;
        T acc[FC_CU_SUB][FC_CU_SUB];
        for (int i = 0; i < FC_CU_SUB; ++i) {
            for (int j = 0; j < FC_CU_SUB; ++j) {
                acc[i][j] = (T)0;
            }
        }
        for (int64_t p0 = 0; p0 < k; p0 += FC_CU_BK) {
            for (int l = tid; l < FC_CU_BK * FC_CU_BT; l += FC_CU_TILE * FC_CU_TILE) {
                int r, p;
                if (ta) {  // a stored (k, m): walk m
                    r = l % FC_CU_BT;
                    p = l / FC_CU_BT;
                } else {   // a stored (m, k): walk k
                    p = l % FC_CU_BK;
                    r = l / FC_CU_BK;
                }
                const int64_t gr = row0 + r, gp = p0 + p;
                as[p][r] = (gr < m && gp < k) ? (ta ? az[gp * lda + gr] : az[gr * lda + gp]) : (T)0;
                int q;
                if (tb) {  // b stored (n, k): walk k
                    p = l % FC_CU_BK;
                    q = l / FC_CU_BK;
                } else {   // b stored (k, n): walk n
                    q = l % FC_CU_BT;
                    p = l / FC_CU_BT;
                }
                const int64_t gq = col0 + q, gp2 = p0 + p;
                bs[p][q] = (gp2 < k && gq < n) ? (tb ? bz[gq * ldb + gp2] : bz[gp2 * ldb + gq]) : (T)0;
            }
            __syncthreads();
            for (int p = 0; p < FC_CU_BK; ++p) {  // zero-padded past k: adds zeros
                T av[FC_CU_SUB], bv[FC_CU_SUB];
                for (int i = 0; i < FC_CU_SUB; ++i) {
                    av[i] = as[p][ty + FC_CU_TILE * i];
                    bv[i] = bs[p][tx + FC_CU_TILE * i];
                }
                for (int i = 0; i < FC_CU_SUB; ++i) {
                    for (int j = 0; j < FC_CU_SUB; ++j) {
                        acc[i][j] += av[i] * bv[j];
                    }
                }
            }
            __syncthreads();
        }
        for (int i = 0; i < FC_CU_SUB; ++i) {
            const int64_t row = row0 + ty + FC_CU_TILE * i;
            for (int j = 0; j < FC_CU_SUB; ++j) {
                const int64_t col = col0 + tx + FC_CU_TILE * j;
                if (row < m && col < n) {
                    T v = acc[i][j];
                    if (bias != nullptr) {
                        v += bias[col];
                    }
                    c[z * sc + row * ldc + col] = act_of(act, v);
                }
            }
        }
    }
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
