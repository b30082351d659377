/* A C program embedding libflexcore through its public headers only, as a user's program would.
 * Exits nonzero when any check fails. Built by CMake with FLEXCORE_BUILD_TESTS=ON; run by ctest and
 * by tests/native/test_embed_c.py (also under ASan/UBSan). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "flexcore/flexcore.h"
#include "flexcore/philox.h"

#ifndef FLEXCORE_EXPECTED_VERSION
#error "FLEXCORE_EXPECTED_VERSION must be defined by the build"
#endif

static int n_passed = 0;
static int n_failed = 0;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            ++n_passed;                                                                            \
        } else {                                                                                   \
            ++n_failed;                                                                            \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

/* |got - want| <= rtol * |want|, with want == 0 needing got == 0 and NaN matching NaN. */
static int close_f64(double got, double want, double rtol)
{
    if (isnan(want)) {
        return isnan(got);
    }
    if (isinf(want)) {
        return got == want;
    }
    return fabs(got - want) <= rtol * fabs(want);
}

static void test_identity(void)
{
    CHECK(strcmp(fc_version(), FLEXCORE_EXPECTED_VERSION) == 0);
    const char* isa = fc_cpu_isa();
    CHECK(strcmp(isa, "scalar") == 0 || strcmp(isa, "avx2") == 0 || strcmp(isa, "avx512") == 0);
    CHECK(fc_cpu_isa() == isa); /* detected once, same static string */
    CHECK(strcmp(fc_strerror(FC_OK), "ok") == 0);
    CHECK(strcmp(fc_strerror(FC_ERR_NULL), fc_strerror(FC_ERR_SIZE)) != 0);
    CHECK(strcmp(fc_strerror(12345), "unknown status") == 0);
}

static void test_unary(void)
{
    const double x[5] = {-1000.0, -1.0, 0.0, 1.0, 1000.0};
    double y[5];

    CHECK(fc_unary_f64(FC_UNARY_SIGMOID, x, y, 5) == FC_OK);
    const double sig_want[5] = {0.0, 0.2689414213699951, 0.5, 0.7310585786300049, 1.0};
    for (int i = 0; i < 5; ++i) {
        CHECK(!isnan(y[i]));
        CHECK(fabs(y[i] - sig_want[i]) <= 1e-15);
    }

    CHECK(fc_unary_f64(FC_UNARY_EXP, x + 1, y, 3) == FC_OK);
    CHECK(close_f64(y[0], 0.36787944117144233, 1e-15));
    CHECK(y[1] == 1.0);
    CHECK(close_f64(y[2], 2.718281828459045, 1e-15));

    CHECK(fc_unary_f64(FC_UNARY_RELU, x, y, 5) == FC_OK);
    CHECK(y[0] == 0.0 && y[1] == 0.0 && y[2] == 0.0 && y[3] == 1.0 && y[4] == 1000.0);

    const float xf[4] = {-2.0f, 0.25f, 1.0f, 4.0f};
    float yf[4];
    CHECK(fc_unary_f32(FC_UNARY_TANH, xf, yf, 4) == FC_OK);
    CHECK(close_f64((double)yf[0], -0.9640275800758169, 1e-6));
    CHECK(close_f64((double)yf[1], 0.24491866240370913, 1e-6));
    CHECK(fc_unary_f32(FC_UNARY_LOG, xf, yf, 4) == FC_OK);
    CHECK(isnan(yf[0]));
    CHECK(close_f64((double)yf[1], -1.3862943611198906, 1e-6));
    CHECK(yf[2] == 0.0f);

    /* In place: y may be x. */
    float inplace[3] = {1.0f, 4.0f, 9.0f};
    CHECK(fc_unary_f32(FC_UNARY_SQRT, inplace, inplace, 3) == FC_OK);
    CHECK(inplace[0] == 1.0f && inplace[1] == 2.0f && inplace[2] == 3.0f);
}

static void test_binary(void)
{
    const double a[4] = {1.0, -2.0, NAN, 0.0};
    const double b[4] = {3.0, 5.0, 1.0, NAN};
    double y[4];

    CHECK(fc_binary_f64(FC_BINARY_DIV, a, b, y, 2) == FC_OK);
    CHECK(close_f64(y[0], 1.0 / 3.0, 1e-16) && y[1] == -0.4);
    CHECK(fc_binary_f64(FC_BINARY_MAXIMUM, a, b, y, 4) == FC_OK);
    CHECK(y[0] == 3.0 && y[1] == 5.0 && isnan(y[2]) && isnan(y[3])); /* NaN wins, as in numpy */
    CHECK(fc_binary_f64(FC_BINARY_MINIMUM, a, b, y, 4) == FC_OK);
    CHECK(y[0] == 1.0 && y[1] == -2.0 && isnan(y[2]) && isnan(y[3]));

    const float af[3] = {1.5f, 2.0f, -3.0f};
    const float bf[3] = {0.5f, 4.0f, 2.0f};
    float yf[3];
    CHECK(fc_binary_f32(FC_BINARY_SUB, af, bf, yf, 3) == FC_OK);
    CHECK(yf[0] == 1.0f && yf[1] == -2.0f && yf[2] == -5.0f);
    CHECK(fc_binary_f32(FC_BINARY_MUL, af, bf, yf, 3) == FC_OK);
    CHECK(yf[0] == 0.75f && yf[1] == 8.0f && yf[2] == -6.0f);
}

/* Random123 tests/kat_vectors, the three "philox4x32 10" lines: counter[4], key[2] -> output[4]. */
static void test_philox_kat(void)
{
    static const uint32_t kat[3][10] = {
        {0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u,
         0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u},
        {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu,
         0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu},
        {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u,
         0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u},
    };
    for (int v = 0; v < 3; ++v) {
        uint32_t out[4];
        fc_philox4x32_10(&kat[v][0], &kat[v][4], out);
        CHECK(memcmp(out, &kat[v][6], sizeof out) == 0);
    }

    /* The stream maps element j of (seed, salt) to counter (j_lo, j_hi, salt_lo, salt_hi), key
     * (seed_lo, seed_hi): element 0 of stream (0, 0) is the all-zero vector. */
    float f;
    double d;
    CHECK(fc_philox_uniform_f32(0, 0, 0, &f, 1) == FC_OK);
    CHECK(f == (float)(0x6627e8d5u >> 8) * 0x1p-24f);
    CHECK(fc_philox_uniform_f64(0, 0, 0, &d, 1) == FC_OK);
    CHECK(d == (double)(((uint64_t)0x6627e8d5u << 32 | 0xe169c58du) >> 11) * 0x1p-53);
}

static void test_philox_stream(void)
{
    enum { N = 20000 };
    static float f[N];
    static double d[N];
    const uint64_t seed = 0x0123456789abcdefull, salt = 42;

    CHECK(fc_philox_uniform_f32(seed, salt, 0, f, N) == FC_OK);
    CHECK(fc_philox_uniform_f64(seed, salt, 0, d, N) == FC_OK);
    double sum = 0.0;
    int in_range = 1, f32_is_truncated_f64 = 1;
    for (int i = 0; i < N; ++i) {
        in_range &= f[i] >= 0.0f && f[i] < 1.0f && d[i] >= 0.0 && d[i] < 1.0;
        f32_is_truncated_f64 &= (double)f[i] == floor(d[i] * 0x1p24) * 0x1p-24;
        sum += d[i];
    }
    CHECK(in_range);
    CHECK(f32_is_truncated_f64);
    CHECK(fabs(sum / N - 0.5) < 0.01); /* sd of the mean is 0.002 */

    /* An offset continues the same stream. */
    float tail[7];
    CHECK(fc_philox_uniform_f32(seed, salt, 1000, tail, 7) == FC_OK);
    CHECK(memcmp(tail, f + 1000, sizeof tail) == 0);

    /* Another salt is another stream. */
    float other[16];
    CHECK(fc_philox_uniform_f32(seed, salt + 1, 0, other, 16) == FC_OK);
    CHECK(memcmp(other, f, sizeof other) != 0);
}

static void test_bad_arguments(void)
{
    float x[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    float y[4];
    double yd[4];

    CHECK(fc_unary_f32(FC_UNARY_EXP, NULL, y, 4) == FC_ERR_NULL);
    CHECK(fc_unary_f32(FC_UNARY_EXP, x, NULL, 4) == FC_ERR_NULL);
    CHECK(fc_unary_f32(FC_UNARY_EXP, x, y, -1) == FC_ERR_SIZE);
    CHECK(fc_unary_f32(FC_UNARY_COUNT, x, y, 4) == FC_ERR_OP);
    CHECK(fc_unary_f32(-1, x, y, 4) == FC_ERR_OP);
    CHECK(fc_unary_f64(99, NULL, NULL, 0) == FC_ERR_OP);
    CHECK(fc_unary_f64(FC_UNARY_NEG, NULL, NULL, 0) == FC_OK); /* empty arrays may be NULL */

    CHECK(fc_binary_f32(FC_BINARY_ADD, x, NULL, y, 4) == FC_ERR_NULL);
    CHECK(fc_binary_f32(FC_BINARY_ADD, x, x, y, INT64_MIN) == FC_ERR_SIZE);
    CHECK(fc_binary_f32(FC_BINARY_COUNT, x, x, y, 4) == FC_ERR_OP);
    CHECK(fc_binary_f64(FC_BINARY_ADD, NULL, NULL, yd, 4) == FC_ERR_NULL);

    CHECK(fc_philox_uniform_f32(1, 2, -1, y, 4) == FC_ERR_SIZE);
    CHECK(fc_philox_uniform_f32(1, 2, 0, y, -4) == FC_ERR_SIZE);
    CHECK(fc_philox_uniform_f32(1, 2, INT64_MAX - 2, y, 4) == FC_ERR_SIZE);
    CHECK(fc_philox_uniform_f32(1, 2, INT64_MAX - 4, y, 4) == FC_OK);
    CHECK(fc_philox_uniform_f64(1, 2, 0, NULL, 4) == FC_ERR_NULL);
}

int main(void)
{
    test_identity();
    test_unary();
    test_binary();
    test_philox_kat();
    test_philox_stream();
    test_bad_arguments();
    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed == 0 ? 0 : 1;
}
