/* AVX2 rows of 2x2 stride-2 max pooling (pool_simd.h): blocks of 8 windows (16 columns), or of 4
 * (SSE) for rows of 4 to 7 windows. Compiled with -mavx2 -mfma; used only when fc_cpu_isa()
 * reports avx2 or better.
 *
 * A row whose length is not a multiple of the block ends with a block that overlaps the one
 * before it: the overlapped windows are computed twice and written twice with the same values
 * (out never overlaps the inputs), which avoids masked stores (microcoded on AMD cores).
 * In a 16-column block the two in-lane shuffles that split the windows' left and right taps
 * leave the windows in the order 0 1 4 5 | 2 3 6 7; y and g are loaded in that order (one
 * cross-lane permute each), so the window math is lane-wise and only the max is permuted back;
 * the gradient's taps interleave back into columns with unpacklo/hi, in column order. */
#include "pool_simd.h"

#if (defined(__x86_64__) || defined(__amd64__)) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

#define EVEN _MM_SHUFFLE(2, 0, 2, 0)
#define ODD _MM_SHUFFLE(3, 1, 3, 1)

/* Windows 0 1 4 5 | 2 3 6 7 <-> 0 1 2 3 | 4 5 6 7 (the permutation is its own inverse). */
static inline __m256 swap_mid(__m256 v)
{
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* The scalar step m = (v > m || v != v) && m == m ? v : m: maxps(v, m) is v > m ? v : m and
 * keeps m when either is NaN; a NaN v then replaces a non-NaN m. */
static inline __m256 step_max8(__m256 v, __m256 m)
{
    const __m256 take_v = _mm256_andnot_ps(_mm256_cmp_ps(m, m, _CMP_UNORD_Q), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    return _mm256_blendv_ps(_mm256_max_ps(v, m), v, take_v);
}

static inline __m128 step_max4(__m128 v, __m128 m)
{
    const __m128 take_v = _mm_andnot_ps(_mm_cmpunord_ps(m, m), _mm_cmpunord_ps(v, v));
    return _mm_blendv_ps(_mm_max_ps(v, m), v, take_v);
}

static inline void max8(const float* r0, const float* r1, float* y)
{
    const __m256 a0 = _mm256_loadu_ps(r0), b0 = _mm256_loadu_ps(r0 + 8);
    const __m256 a1 = _mm256_loadu_ps(r1), b1 = _mm256_loadu_ps(r1 + 8);
    __m256 m = _mm256_shuffle_ps(a0, b0, EVEN);
    m = step_max8(_mm256_shuffle_ps(a0, b0, ODD), m);
    m = step_max8(_mm256_shuffle_ps(a1, b1, EVEN), m);
    m = step_max8(_mm256_shuffle_ps(a1, b1, ODD), m);
    _mm256_storeu_ps(y, swap_mid(m));
}

static inline void max4(const float* r0, const float* r1, float* y)
{
    const __m128 a0 = _mm_loadu_ps(r0), b0 = _mm_loadu_ps(r0 + 4);
    const __m128 a1 = _mm_loadu_ps(r1), b1 = _mm_loadu_ps(r1 + 4);
    __m128 m = _mm_shuffle_ps(a0, b0, EVEN);
    m = step_max4(_mm_shuffle_ps(a0, b0, ODD), m);
    m = step_max4(_mm_shuffle_ps(a1, b1, EVEN), m);
    m = step_max4(_mm_shuffle_ps(a1, b1, ODD), m);
    _mm_storeu_ps(y, m);
}

/* The gradient of 8 windows; e00..e11 are the taps' "equals y" masks. A window without a match
 * (y NaN) spreads nothing; dividing by 1 there keeps the division quiet. Adding the shares to
 * +0 turns a share of -0 into +0, as the general path's memset and += do. */
static inline void grad8(int relu, const float* r0, const float* r1, const float* y, const float* g, float* d0,
                         float* d1)
{
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    const __m256 a0 = _mm256_loadu_ps(r0), b0 = _mm256_loadu_ps(r0 + 8);
    const __m256 a1 = _mm256_loadu_ps(r1), b1 = _mm256_loadu_ps(r1 + 8);
    const __m256 t = swap_mid(_mm256_loadu_ps(y));
    __m256 gv = swap_mid(_mm256_loadu_ps(g));
    if (relu) { /* a window whose max fails t > 0 shares +0 (also for a NaN or inf g) */
        gv = _mm256_and_ps(gv, _mm256_cmp_ps(t, zero, _CMP_GT_OQ));
    }
    const __m256 e00 = _mm256_cmp_ps(_mm256_shuffle_ps(a0, b0, EVEN), t, _CMP_EQ_OQ);
    const __m256 e01 = _mm256_cmp_ps(_mm256_shuffle_ps(a0, b0, ODD), t, _CMP_EQ_OQ);
    const __m256 e10 = _mm256_cmp_ps(_mm256_shuffle_ps(a1, b1, EVEN), t, _CMP_EQ_OQ);
    const __m256 e11 = _mm256_cmp_ps(_mm256_shuffle_ps(a1, b1, ODD), t, _CMP_EQ_OQ);
    __m256 count = _mm256_add_ps(_mm256_add_ps(_mm256_and_ps(e00, one), _mm256_and_ps(e01, one)),
                                 _mm256_add_ps(_mm256_and_ps(e10, one), _mm256_and_ps(e11, one)));
    count = _mm256_blendv_ps(count, one, _mm256_cmp_ps(count, zero, _CMP_EQ_OQ));
    const __m256 sh = _mm256_div_ps(gv, count);
    const __m256 s00 = _mm256_add_ps(zero, _mm256_and_ps(e00, sh)), s01 = _mm256_add_ps(zero, _mm256_and_ps(e01, sh));
    const __m256 s10 = _mm256_add_ps(zero, _mm256_and_ps(e10, sh)), s11 = _mm256_add_ps(zero, _mm256_and_ps(e11, sh));
    _mm256_storeu_ps(d0, _mm256_unpacklo_ps(s00, s01));
    _mm256_storeu_ps(d0 + 8, _mm256_unpackhi_ps(s00, s01));
    _mm256_storeu_ps(d1, _mm256_unpacklo_ps(s10, s11));
    _mm256_storeu_ps(d1 + 8, _mm256_unpackhi_ps(s10, s11));
}

static inline void grad4(int relu, const float* r0, const float* r1, const float* y, const float* g, float* d0,
                         float* d1)
{
    const __m128 one = _mm_set1_ps(1.0f), zero = _mm_setzero_ps();
    const __m128 a0 = _mm_loadu_ps(r0), b0 = _mm_loadu_ps(r0 + 4);
    const __m128 a1 = _mm_loadu_ps(r1), b1 = _mm_loadu_ps(r1 + 4);
    const __m128 t = _mm_loadu_ps(y);
    __m128 gv = _mm_loadu_ps(g);
    if (relu) {
        gv = _mm_and_ps(gv, _mm_cmpgt_ps(t, zero));
    }
    const __m128 e00 = _mm_cmpeq_ps(_mm_shuffle_ps(a0, b0, EVEN), t);
    const __m128 e01 = _mm_cmpeq_ps(_mm_shuffle_ps(a0, b0, ODD), t);
    const __m128 e10 = _mm_cmpeq_ps(_mm_shuffle_ps(a1, b1, EVEN), t);
    const __m128 e11 = _mm_cmpeq_ps(_mm_shuffle_ps(a1, b1, ODD), t);
    __m128 count = _mm_add_ps(_mm_add_ps(_mm_and_ps(e00, one), _mm_and_ps(e01, one)),
                              _mm_add_ps(_mm_and_ps(e10, one), _mm_and_ps(e11, one)));
    count = _mm_blendv_ps(count, one, _mm_cmpeq_ps(count, zero));
    const __m128 sh = _mm_div_ps(gv, count);
    const __m128 s00 = _mm_add_ps(zero, _mm_and_ps(e00, sh)), s01 = _mm_add_ps(zero, _mm_and_ps(e01, sh));
    const __m128 s10 = _mm_add_ps(zero, _mm_and_ps(e10, sh)), s11 = _mm_add_ps(zero, _mm_and_ps(e11, sh));
    _mm_storeu_ps(d0, _mm_unpacklo_ps(s00, s01));
    _mm_storeu_ps(d0 + 4, _mm_unpackhi_ps(s00, s01));
    _mm_storeu_ps(d1, _mm_unpacklo_ps(s10, s11));
    _mm_storeu_ps(d1 + 4, _mm_unpackhi_ps(s10, s11));
}

/* Blocks of `width` windows over [0, ow) (ow >= width), the last one pulled back to end at ow. */
#define EACH_BLOCK(width, ow, block)                   \
    for (int64_t i = 0;; i += (width)) {                \
        if (i + (width) > (ow)) i = (ow) - (width);     \
        block;                                          \
        if (i + (width) == (ow)) break;                 \
    }

static int64_t avx2_max_f32(const float* r0, const float* r1, float* y, int64_t ow)
{
    if (ow >= 8) {
        EACH_BLOCK(8, ow, max8(r0 + 2 * i, r1 + 2 * i, y + i))
    } else if (ow >= 4) {
        EACH_BLOCK(4, ow, max4(r0 + 2 * i, r1 + 2 * i, y + i))
    } else {
        return 0;
    }
    return ow;
}

static int64_t avx2_grad_f32(int relu, const float* r0, const float* r1, const float* y, const float* g, float* d0,
                             float* d1, int64_t ow)
{
    if (ow >= 8) {
        EACH_BLOCK(8, ow, grad8(relu, r0 + 2 * i, r1 + 2 * i, y + i, g + i, d0 + 2 * i, d1 + 2 * i))
    } else if (ow >= 4) {
        EACH_BLOCK(4, ow, grad4(relu, r0 + 2 * i, r1 + 2 * i, y + i, g + i, d0 + 2 * i, d1 + 2 * i))
    } else {
        return 0;
    }
    return ow;
}

static const fc_pool2_kernels avx2_kernels = {avx2_max_f32, avx2_grad_f32};
const fc_pool2_kernels* const fc_pool2_avx2 = &avx2_kernels;

#else

const fc_pool2_kernels* const fc_pool2_avx2 = NULL;

#endif
