/* AVX2 + FMA float32 exp, log, tanh and sigmoid, 8 lanes at a time (see vmath.h for the contract).
 * Compiled with -mavx2 -mfma (CMake adds them to *_avx2.c files); used only when fc_cpu_isa()
 * reports avx2 or better.
 *
 * exp:  x = n ln2 + r, |r| <= ln2/2 (Cody-Waite, two FMAs), exp(r) by its degree-7 Taylor
 *       polynomial (truncation < 0.05 ulp), times 2^n applied as two factors 2^(n/2) 2^(n-n/2), so
 *       that results that underflow to denormals are rounded once, and overflow gives inf.
 * log:  x = 2^e m, m in [sqrt(1/2), sqrt(2)), f = m - 1 (exact), s = f / (2 + f);
 *       log(1 + f) = f - s (f - R(s^2)) with R the atanh series (fdlibm's arrangement: f is exact
 *       and the rounded terms are small against it), plus e ln2 in two parts.
 * tanh: |x| < 0.625: x + x^3 P(x^2), P a float64 least-squares fit (< 0.1 ulp); else
 *       1 - 2 / (exp(2|x|) + 1), sign restored; tanh(+-inf) = +-1, tanh(-0) = -0.
 * sigmoid: e = exp(-|x|); 1 / (1 + e) for x >= 0, e / (1 + e) below (never exp of a positive
 *       argument, as ew_math.h), one division either way. */
#include "vmath.h"

#if (defined(__x86_64__) || defined(__amd64__)) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>
#include <string.h>

static inline __m256 v_exp(__m256 x)
{
    const __m256 nan_mask = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    /* exp(89) overflows and exp(-104) rounds to 0; clamping keeps n in [-150, 129]. */
    const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-104.0f)), _mm256_set1_ps(89.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i n1 = _mm256_srai_epi32(ni, 1);
    const __m256i n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    const __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    return _mm256_blendv_ps(y, x, nan_mask);
}

static inline __m256 v_log(__m256 x)
{
    const __m256 zero = _mm256_setzero_ps();
    /* Denormals: scale into the normal range first (exactly), and take 23 off the exponent. */
    const __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(1.17549435e-38f), _CMP_LT_OQ);
    const __m256 xs = _mm256_blendv_ps(x, _mm256_mul_ps(x, _mm256_set1_ps(8388608.0f)), tiny);
    const __m256i bits = _mm256_castps_si256(xs);
    __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127));
    e = _mm256_sub_epi32(e, _mm256_and_si256(_mm256_castps_si256(tiny), _mm256_set1_epi32(23)));
    __m256 m = _mm256_castsi256_ps(
        _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f800000)));
    const __m256 big = _mm256_cmp_ps(m, _mm256_set1_ps(1.41421356f), _CMP_GT_OQ);
    m = _mm256_blendv_ps(m, _mm256_mul_ps(m, _mm256_set1_ps(0.5f)), big);
    e = _mm256_sub_epi32(e, _mm256_castps_si256(big)); /* big lanes are -1: e + 1 */
    const __m256 ef = _mm256_cvtepi32_ps(e);
    const __m256 f = _mm256_sub_ps(m, _mm256_set1_ps(1.0f));
    const __m256 s = _mm256_div_ps(f, _mm256_add_ps(f, _mm256_set1_ps(2.0f)));
    const __m256 z = _mm256_mul_ps(s, s);
    __m256 q = _mm256_set1_ps(2.0f / 11.0f);
    q = _mm256_fmadd_ps(q, z, _mm256_set1_ps(2.0f / 9.0f));
    q = _mm256_fmadd_ps(q, z, _mm256_set1_ps(2.0f / 7.0f));
    q = _mm256_fmadd_ps(q, z, _mm256_set1_ps(2.0f / 5.0f));
    q = _mm256_fmadd_ps(q, z, _mm256_set1_ps(2.0f / 3.0f));
    const __m256 R = _mm256_mul_ps(q, z);
    const __m256 lg = _mm256_fnmadd_ps(s, _mm256_sub_ps(f, R), f);
    __m256 y = _mm256_fmadd_ps(ef, _mm256_set1_ps(0.693145751953125f),
                               _mm256_fmadd_ps(ef, _mm256_set1_ps(1.428606765330187045e-06f), lg));
    /* log(0) = -inf, log(x < 0) = NaN, log(inf) = inf, NaN stays. */
    y = _mm256_blendv_ps(y, _mm256_set1_ps(-__builtin_inff()), _mm256_cmp_ps(x, zero, _CMP_EQ_OQ));
    y = _mm256_blendv_ps(y, _mm256_set1_ps(__builtin_nanf("")), _mm256_cmp_ps(x, zero, _CMP_LT_OQ));
    y = _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, _mm256_set1_ps(__builtin_inff()), _CMP_EQ_OQ));
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

static inline __m256 v_tanh(__m256 x)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 a = _mm256_andnot_ps(sign, x);
    /* Small |x|: odd polynomial, on |x| (the sign goes on last, so tanh(-0) = -0). */
    const __m256 z = _mm256_mul_ps(a, a);
    __m256 p = _mm256_set1_ps(2.138226293e-03f);
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-8.171788417e-03f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(2.169821039e-02f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-5.394625291e-02f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.333320141e-01f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(-3.333333135e-01f));
    const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(a, z), p, a);
    /* Large |x| (and NaN): 1 - 2 / (exp(2|x|) + 1); exp overflowing to inf gives 1. */
    const __m256 e = v_exp(_mm256_add_ps(a, a));
    const __m256 large = _mm256_sub_ps(_mm256_set1_ps(1.0f),
                                       _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
    const __m256 t = _mm256_blendv_ps(large, small, _mm256_cmp_ps(a, _mm256_set1_ps(0.625f), _CMP_LT_OQ));
    return _mm256_or_ps(t, _mm256_and_ps(x, sign));
}

static inline __m256 v_sigmoid(__m256 x)
{
    const __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
    const __m256 e = v_exp(_mm256_sub_ps(_mm256_setzero_ps(), a)); /* NaN stays NaN */
    const __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
    const __m256 num = _mm256_blendv_ps(_mm256_set1_ps(1.0f), e, neg);
    return _mm256_div_ps(num, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

/* Full vectors, then the tail through a zero-padded vector (no reads or writes past n). */
#define DEFINE_VMAP(NAME)                                                                          \
    static void avx2_##NAME(const float* x, float* y, int64_t n)                                   \
    {                                                                                              \
        int64_t i = 0;                                                                             \
        for (; i + 8 <= n; i += 8) {                                                               \
            _mm256_storeu_ps(y + i, v_##NAME(_mm256_loadu_ps(x + i)));                             \
        }                                                                                          \
        if (i < n) {                                                                               \
            float buf[8] = {0};                                                                    \
            memcpy(buf, x + i, (size_t)(n - i) * sizeof(float));                                   \
            _mm256_storeu_ps(buf, v_##NAME(_mm256_loadu_ps(buf)));                                 \
            memcpy(y + i, buf, (size_t)(n - i) * sizeof(float));                                   \
        }                                                                                          \
    }

DEFINE_VMAP(exp)
DEFINE_VMAP(log)
DEFINE_VMAP(tanh)
DEFINE_VMAP(sigmoid)

static const fc_vmath_table avx2_table = {"avx2", avx2_exp, avx2_log, avx2_tanh, avx2_sigmoid};
const fc_vmath_table* const fc_vmath_avx2 = &avx2_table;

#else

const fc_vmath_table* const fc_vmath_avx2 = NULL;

#endif
