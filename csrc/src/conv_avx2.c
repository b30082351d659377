/* AVX2 + FMA weight gradient of one image for window matrices of few rows (conv_simd.h).
 * Compiled with -mavx2 -mfma; used only when fc_cpu_isa() reports avx2 or better.
 *
 * Blocks of 2 output channels x 4 window rows: 8 accumulators, each step loads 8 columns of the
 * 2 gradient rows and the 4 window rows (6 loads for 8 FMAs). A block past the edge (og or kg
 * not a multiple) repeats the last row and drops what it computes for it. */
#include "conv_simd.h"

#if (defined(__x86_64__) || defined(__amd64__)) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>
#include <math.h>

static inline float hsum(__m256 v)
{
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

static void dw_small(int64_t og, int64_t kg, int64_t p, const float* g, const float* cols, float* dw, int accumulate)
{
    const int64_t p8 = p / 8 * 8;
    for (int64_t o = 0; o < og; o += 2) {
        const float* gr[2] = {g + o * p, g + (o + 1 < og ? o + 1 : o) * p};
        for (int64_t r = 0; r < kg; r += 4) {
            const float* cr[4];
            for (int k = 0; k < 4; ++k) {
                cr[k] = cols + (r + k < kg ? r + k : kg - 1) * p;
            }
            __m256 acc[2][4];
            for (int i = 0; i < 2; ++i) {
                for (int k = 0; k < 4; ++k) {
                    acc[i][k] = _mm256_setzero_ps();
                }
            }
            for (int64_t j = 0; j < p8; j += 8) {
                const __m256 g0 = _mm256_loadu_ps(gr[0] + j), g1 = _mm256_loadu_ps(gr[1] + j);
                for (int k = 0; k < 4; ++k) {
                    const __m256 c = _mm256_loadu_ps(cr[k] + j);
                    acc[0][k] = _mm256_fmadd_ps(g0, c, acc[0][k]);
                    acc[1][k] = _mm256_fmadd_ps(g1, c, acc[1][k]);
                }
            }
            for (int i = 0; i < 2 && o + i < og; ++i) {
                for (int k = 0; k < 4 && r + k < kg; ++k) {
                    float s = hsum(acc[i][k]);
                    for (int64_t j = p8; j < p; ++j) {
                        s = fmaf(gr[i][j], cr[k][j], s);
                    }
                    float* d = dw + (o + i) * kg + r + k;
                    *d = accumulate ? *d + s : s;
                }
            }
        }
    }
}

const fc_conv_dw_small_fn fc_conv_dw_small_avx2 = dw_small;

#else

const fc_conv_dw_small_fn fc_conv_dw_small_avx2 = NULL;

#endif
