/* AVX2 + FMA micro-kernels (Haswell and later, Zen). Compiled with -mavx2 -mfma (CMake adds them
 * to *_avx2.c files), run only when fc_cpu_isa() says "avx2" or better.
 *
 * Register tile: 6 rows x 2 vectors, float 6x16 and double 6x8 (BLIS' Haswell shapes): 12
 * accumulators + 2 vectors of B + 1 broadcast of A fill 15 of the 16 ymm registers, and the 12
 * independent FMAs of one step cover the latency of the 2 FMA pipes. With alpha and beta passed by
 * value the 16th register went to them and GCC spilled an accumulator inside the loop (66 instead
 * of 100 GFLOP/s on one Zen 3 core, data in L1); hence the by-address contract. */
#include "gemm_internal.h"

#if FC_GEMM_X86

#include <immintrin.h>

/* The lanes below n: compare the lane numbers with n. */
static inline __m256i mask_f32(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline __m256i mask_f64(int n)
{
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}

#define UKR_NAME fc_sgemm_ukr_avx2_6x16
#define UKR_T float
#define UKR_V __m256
#define UKR_W 8
#define UKR_MR 6
#define UKR_NV 2
#define UKR_ZERO() _mm256_setzero_ps()
#define UKR_SET1(x) _mm256_set1_ps(x)
#define UKR_LOAD(p) _mm256_loadu_ps(p)
#define UKR_STORE(p, v) _mm256_storeu_ps(p, v)
#define UKR_BCAST(p) _mm256_broadcast_ss(p)
#define UKR_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define UKR_MUL(a, b) _mm256_mul_ps(a, b)
#define UKR_MASK_T __m256i
#define UKR_MASK(n) mask_f32(n)
#define UKR_MASKLOAD(p, m) _mm256_maskload_ps(p, m)
#define UKR_MASKSTORE(p, m, v) _mm256_maskstore_ps(p, m, v)
#include "ukr_simd.h"

#define UKR_NAME fc_dgemm_ukr_avx2_6x8
#define UKR_T double
#define UKR_V __m256d
#define UKR_W 4
#define UKR_MR 6
#define UKR_NV 2
#define UKR_ZERO() _mm256_setzero_pd()
#define UKR_SET1(x) _mm256_set1_pd(x)
#define UKR_LOAD(p) _mm256_loadu_pd(p)
#define UKR_STORE(p, v) _mm256_storeu_pd(p, v)
#define UKR_BCAST(p) _mm256_broadcast_sd(p)
#define UKR_FMA(a, b, c) _mm256_fmadd_pd(a, b, c)
#define UKR_MUL(a, b) _mm256_mul_pd(a, b)
#define UKR_MASK_T __m256i
#define UKR_MASK(n) mask_f64(n)
#define UKR_MASKLOAD(p, m) _mm256_maskload_pd(p, m)
#define UKR_MASKSTORE(p, m, v) _mm256_maskstore_pd(p, m, v)
#include "ukr_simd.h"

/* Block sizes for Zen 3 / Haswell-class caches (32 KiB L1d, 512 KiB L2 per core, shared L3): a KC
 * x NR panel of B (16 KiB) stays in L1 while MC x KC of A (144 KiB float, 144 KiB double) stays in
 * L2. Tuned with bench/gemm_quick.py on the 2-core Zen 3 this was written on. */
const fc_gemm_ctx fc_gemm_ctx_avx2 = {
    .isa = "avx2",
    .s = {.name = "fc_sgemm_ukr_avx2_6x16", .ukr = fc_sgemm_ukr_avx2_6x16, .mr = 6, .nr = 16,
          .mc = 144, .kc = 256, .nc = 4080, .pack_a = fc_spack_a_avx2, .pack_b = fc_spack_b_avx2},
    .d = {.name = "fc_dgemm_ukr_avx2_6x8", .ukr = fc_dgemm_ukr_avx2_6x8, .mr = 6, .nr = 8,
          .mc = 72, .kc = 256, .nc = 4080, .pack_a = fc_dpack_a_avx2, .pack_b = fc_dpack_b_avx2},
};

#else
/* ISO C wants at least one declaration in a translation unit. */
typedef int fc_gemm_avx2_unavailable;
#endif
