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

#include <string.h>

#include "vmath_avx2_inl.h"

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
