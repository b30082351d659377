/* Portable C micro-kernels: the "scalar" path, and the definition the SIMD kernels are checked
 * against. Plain loops over a small register tile; the compiler may vectorise them for the
 * baseline instruction set, nothing more is asked of them. */
#include "gemm_internal.h"

#define REF_MR 4
#define REF_NR 8

/* One definition for both dtypes. The MR x NR tile is always computed in full (the padding of the
 * packed panels is zero); only its m x n corner is stored. */
#define DEFINE_REF_UKR(T, NAME)                                                                    \
    static void NAME(int64_t m, int64_t n, int64_t k, const T* alpha_p, const T* restrict a,      \
                     const T* restrict b, const T* beta_p, T* restrict c, int64_t ldc,             \
                     const fc_gemm_aux* aux)                                                       \
    {                                                                                              \
        (void)aux;                                                                                 \
        const T alpha = *alpha_p, beta = *beta_p;                                                  \
        T acc[REF_MR][REF_NR] = {{0}};                                                             \
        for (int64_t p = 0; p < k; ++p) {                                                          \
            for (int i = 0; i < REF_MR; ++i) {                                                     \
                const T ai = a[p * REF_MR + i];                                                    \
                for (int j = 0; j < REF_NR; ++j) {                                                 \
                    acc[i][j] += ai * b[p * REF_NR + j];                                           \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        for (int64_t i = 0; i < m; ++i) {                                                          \
            T* restrict ci = c + i * ldc;                                                          \
            if (beta == 0) {                                                                       \
                for (int64_t j = 0; j < n; ++j) {                                                  \
                    ci[j] = alpha * acc[i][j];                                                     \
                }                                                                                  \
            } else {                                                                               \
                for (int64_t j = 0; j < n; ++j) {                                                  \
                    ci[j] = alpha * acc[i][j] + beta * ci[j];                                      \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

DEFINE_REF_UKR(float, fc_sgemm_ukr_ref_4x8)
DEFINE_REF_UKR(double, fc_dgemm_ukr_ref_4x8)

/* Block sizes for a generic core with 32 KiB of L1 and >= 256 KiB of L2; nothing here is tuned. */
const fc_gemm_ctx fc_gemm_ctx_ref = {
    .isa = "scalar",
    .s = {.name = "fc_sgemm_ukr_ref_4x8", .ukr = fc_sgemm_ukr_ref_4x8, .mr = REF_MR, .nr = REF_NR,
          .mc = 128, .kc = 256, .nc = 4096, .pack_a = fc_spack_a, .pack_b = fc_spack_b},
    .d = {.name = "fc_dgemm_ukr_ref_4x8", .ukr = fc_dgemm_ukr_ref_4x8, .mr = REF_MR, .nr = REF_NR,
          .mc = 64, .kc = 256, .nc = 4096, .pack_a = fc_dpack_a, .pack_b = fc_dpack_b},
};
