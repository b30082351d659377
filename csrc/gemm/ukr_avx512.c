/* AVX-512 micro-kernels (Skylake-X and later, Zen 4: F, BW, VL, DQ). Compiled on every x86-64
 * build with -mavx512* (CMake adds them to *_avx512.c files), run only when fc_cpu_isa() says
 * "avx512".
 *
 * Register tile: 12 rows x 2 vectors, float 12x32 and double 12x16: 24 accumulators + 2 vectors of
 * B + 1 broadcast of A use 27 of the 32 zmm registers; one step is 24 FMAs on 14 loads, so the two
 * FMA pipes, not the loads, set the pace. The body is the one the AVX2 kernels use (ukr_simd.h),
 * so the row/edge logic is tested wherever AVX2 runs; only the vector operations differ here.
 * The block sizes are not tuned: no AVX-512 machine was at hand when they were chosen. */
#include "gemm_internal.h"

#if FC_GEMM_X86

#include <immintrin.h>

/* The lanes below n (n <= 16 for float, <= 8 for double). */
static inline __mmask16 mask_f32(int n) { return (__mmask16)((1u << n) - 1u); }
static inline __mmask8 mask_f64(int n) { return (__mmask8)((1u << n) - 1u); }

#define UKR_NAME fc_sgemm_ukr_avx512_12x32
#define UKR_T float
#define UKR_V __m512
#define UKR_W 16
#define UKR_MR 12
#define UKR_NV 2
#define UKR_ZERO() _mm512_setzero_ps()
#define UKR_SET1(x) _mm512_set1_ps(x)
#define UKR_LOAD(p) _mm512_loadu_ps(p)
#define UKR_STORE(p, v) _mm512_storeu_ps(p, v)
#define UKR_BCAST(p) _mm512_set1_ps(*(p))
#define UKR_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define UKR_MUL(a, b) _mm512_mul_ps(a, b)
#define UKR_MASK_T __mmask16
#define UKR_MASK(n) mask_f32(n)
#define UKR_MASKLOAD(p, m) _mm512_maskz_loadu_ps(m, p)
#define UKR_MASKSTORE(p, m, v) _mm512_mask_storeu_ps(p, m, v)
#include "ukr_simd.h"

#define UKR_NAME fc_dgemm_ukr_avx512_12x16
#define UKR_T double
#define UKR_V __m512d
#define UKR_W 8
#define UKR_MR 12
#define UKR_NV 2
#define UKR_ZERO() _mm512_setzero_pd()
#define UKR_SET1(x) _mm512_set1_pd(x)
#define UKR_LOAD(p) _mm512_loadu_pd(p)
#define UKR_STORE(p, v) _mm512_storeu_pd(p, v)
#define UKR_BCAST(p) _mm512_set1_pd(*(p))
#define UKR_FMA(a, b, c) _mm512_fmadd_pd(a, b, c)
#define UKR_MUL(a, b) _mm512_mul_pd(a, b)
#define UKR_MASK_T __mmask8
#define UKR_MASK(n) mask_f64(n)
#define UKR_MASKLOAD(p, m) _mm512_maskz_loadu_pd(m, p)
#define UKR_MASKSTORE(p, m, v) _mm512_mask_storeu_pd(p, m, v)
#include "ukr_simd.h"

/* 1 MiB L2 (Skylake-X, Zen 4): MC x KC of A is 240 KiB (float) / 288 KiB (double); a KC x NR panel
 * of B is 32 KiB, as large as BLIS lets it grow on Skylake-X. */
const fc_gemm_ctx fc_gemm_ctx_avx512 = {
    .isa = "avx512",
    .s = {.name = "fc_sgemm_ukr_avx512_12x32", .ukr = fc_sgemm_ukr_avx512_12x32, .mr = 12,
          .nr = 32, .mc = 240, .kc = 256, .nc = 4096, .pack_a = fc_spack_a_avx2,
          .pack_b = fc_spack_b_avx2},
    .d = {.name = "fc_dgemm_ukr_avx512_12x16", .ukr = fc_dgemm_ukr_avx512_12x16, .mr = 12,
          .nr = 16, .mc = 144, .kc = 256, .nc = 4096, .pack_a = fc_dpack_a_avx2,
          .pack_b = fc_dpack_b_avx2},
};

#else
/* ISO C wants at least one declaration in a translation unit. */
typedef int fc_gemm_avx512_unavailable;
#endif
