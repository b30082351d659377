/* The AVX2 + FMA float32 exp, log, tanh and sigmoid of one vector (see vmath_avx2.c for the
 * methods and vmath.h for the accuracy contract), for the *_avx2.c files that vectorise a kernel
 * around them (vmath_avx2.c, rnn_cell_avx2.c). Internal; include only where -mavx2 -mfma apply
 * and after checking for x86-64 GCC/Clang. */
#ifndef FLEXCORE_VMATH_AVX2_INL_H
#define FLEXCORE_VMATH_AVX2_INL_H

#include <immintrin.h>

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

#endif /* FLEXCORE_VMATH_AVX2_INL_H */
