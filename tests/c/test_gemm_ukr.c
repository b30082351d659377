/* The GEMM micro-kernels and packing routines tested alone, as BLIS' testsuite does
 * (testsuite/src/test_gemm_ukr.c): every registered kernel of every instruction set this CPU can
 * run, on random panels packed by the context's own packing routines, for every edge-tile shape
 * m <= MR, n <= NR, against a float64 product with an elementwise residual bound; and each
 * context's packing routines against the portable ones, bit for bit, at every panel width any
 * context uses (the AVX-512 context shares the AVX2 packing, so it is tested on AVX2 machines).
 *
 * This test reads the kernel table (csrc/gemm/gemm_internal.h), which libflexcore does not export,
 * so CMake compiles the GEMM sources into it. Exits nonzero when any check fails. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_internal.h"

static int n_passed = 0;
static int n_failed = 0;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            ++n_passed;                                                                            \
        } else {                                                                                   \
            ++n_failed;                                                                            \
            if (n_failed <= 20) {                                                                  \
                fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);          \
                fprintf(stderr, __VA_ARGS__);                                                      \
                fputc('\n', stderr);                                                               \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* xorshift64*: reproducible values in [-1, 1). */
static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static double uniform(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545F4914F6CDD1Du) >> 11) * 0x1p-52 - 1.0;
}

static const int64_t depths[] = {0, 1, 2, 7, 64, 257};
/* (alpha, beta, whether C starts as NaN: beta == 0 must not read it) */
static const struct {
    double alpha, beta;
    int nan_c;
} scalings[] = {{1.0, 0.0, 1}, {1.0, 1.0, 0}, {-2.0, 0.25, 0}, {0.5, 0.0, 0}};

enum { C_PAD = 3, C_ROWS_PAD = 2 }; /* C has more rows and columns than the tile: must stay put */
static const double SENTINEL = 12345.0;

/* Writes one kernel test per dtype: `T`, its packing functions and kernel type, its epsilon. */
#define DEFINE_UKR_TEST(T, P, EPS)                                                                 \
    static void test_ukr_##P(const char* isa, const fc_##P##gemm_kernel* kern)                     \
    {                                                                                              \
        const int mr = kern->mr, nr = kern->nr;                                                    \
        const int64_t ldc = nr + C_PAD;                                                            \
        const int64_t kmax = depths[sizeof depths / sizeof depths[0] - 1];                         \
        T* a = malloc((size_t)((mr + 1) * (kmax + 2)) * sizeof(T));                                \
        T* b = malloc((size_t)((nr + 2) * (kmax + 1)) * sizeof(T));                                \
        T* apack = aligned_alloc(FC_GEMM_ALIGN, (size_t)((mr * kmax + 16) / 16 * 16) * sizeof(T)); \
        T* bpack = aligned_alloc(FC_GEMM_ALIGN, (size_t)((nr * kmax + 16) / 16 * 16) * sizeof(T)); \
        T* c = malloc((size_t)((mr + C_ROWS_PAD) * ldc) * sizeof(T));                              \
        double* c0 = malloc((size_t)((mr + C_ROWS_PAD) * ldc) * sizeof(double));                   \
        for (size_t di = 0; di < sizeof depths / sizeof depths[0]; ++di) {                         \
            const int64_t k = depths[di];                                                          \
            for (int m = 1; m <= mr; ++m) {                                                        \
                for (int n = 1; n <= nr; ++n) {                                                    \
                    for (size_t si = 0; si < sizeof scalings / sizeof scalings[0]; ++si) {         \
                        const int trans = (m + n + (int)si) % 2; /* both packing paths */          \
                        /* op(A) is m x k, stored k x m when trans; op(B) is k x n, stored n x k   \
                         * when !trans (so both packing routines run both ways). */                \
                        const int64_t lda = trans ? m + 1 : k + 2, ldb = !trans ? k + 1 : n + 2;   \
                        for (int64_t i = 0; i < (trans ? k * lda : m * lda); ++i) {                \
                            a[i] = (T)uniform();                                                   \
                        }                                                                          \
                        for (int64_t i = 0; i < (!trans ? n * ldb : k * ldb); ++i) {               \
                            b[i] = (T)uniform();                                                   \
                        }                                                                          \
                        kern->pack_a(trans, m, k, a, lda, mr, apack);                              \
                        kern->pack_b(!trans, k, n, b, ldb, nr, bpack);                             \
                        /* The packed layouts, zero padding included. */                           \
                        int pack_ok = 1;                                                           \
                        for (int64_t p = 0; p < k; ++p) {                                          \
                            for (int i = 0; i < mr; ++i) {                                         \
                                const T want = i < m ? (trans ? a[p * lda + i] : a[i * lda + p])   \
                                                     : (T)0;                                       \
                                pack_ok &= apack[p * mr + i] == want;                              \
                            }                                                                      \
                            for (int j = 0; j < nr; ++j) {                                         \
                                const T want = j < n ? (!trans ? b[j * ldb + p] : b[p * ldb + j])  \
                                                     : (T)0;                                       \
                                pack_ok &= bpack[p * nr + j] == want;                              \
                            }                                                                      \
                        }                                                                          \
                        CHECK(pack_ok, "%s packing m=%d n=%d k=%lld trans=%d", isa, m, n,          \
                              (long long)k, trans);                                                \
                        const double alpha = scalings[si].alpha, beta = scalings[si].beta;         \
                        for (int64_t i = 0; i < (mr + C_ROWS_PAD) * ldc; ++i) {                    \
                            const int in_tile = i / ldc < m && i % ldc < n;                        \
                            c[i] = in_tile ? (scalings[si].nan_c ? (T)NAN : (T)uniform())          \
                                           : (T)SENTINEL;                                          \
                            c0[i] = (double)c[i];                                                  \
                        }                                                                          \
                        const fc_gemm_aux aux = {apack, bpack};                                    \
                        const T alpha_t = (T)alpha, beta_t = (T)beta;                              \
                        kern->ukr(m, n, k, &alpha_t, apack, bpack, &beta_t, c, ldc, &aux);         \
                        int tile_ok = 1, outside_ok = 1;                                           \
                        double worst = 0.0;                                                        \
                        for (int i = 0; i < mr + C_ROWS_PAD; ++i) {                                \
                            for (int64_t j = 0; j < ldc; ++j) {                                    \
                                const double got = (double)c[i * ldc + j];                         \
                                if (i >= m || j >= n) {                                            \
                                    outside_ok &= got == SENTINEL;                                 \
                                    continue;                                                      \
                                }                                                                  \
                                double ref = 0.0, mag = 0.0;                                       \
                                for (int64_t p = 0; p < k; ++p) {                                  \
                                    const double x = (double)apack[p * mr + i];                    \
                                    const double y = (double)bpack[p * nr + j];                    \
                                    ref += x * y;                                                  \
                                    mag += fabs(x * y);                                            \
                                }                                                                  \
                                const double cij = beta == 0.0 ? 0.0 : c0[i * ldc + j];            \
                                ref = alpha * ref + beta * cij;                                    \
                                mag = fabs(alpha) * mag + fabs(beta * cij);                        \
                                /* Any summation order: |err| <= (k + 2) u sum|terms| (u = EPS/2), \
                                 * with a factor 2 of slack for the alpha/beta roundings. */        \
                                const double bound = (double)(k + 2) * (EPS)*mag + DBL_MIN;        \
                                const double err = fabs(got - ref);                                \
                                tile_ok &= err <= bound; /* false for NaN */                       \
                                if (err / bound > worst) {                                         \
                                    worst = err / bound;                                           \
                                }                                                                  \
                            }                                                                      \
                        }                                                                          \
                        CHECK(tile_ok, "%s %s m=%d n=%d k=%lld alpha=%g beta=%g: residual %.3g "   \
                              "of the bound", isa, kern->name, m, n, (long long)k, alpha, beta,    \
                              worst);                                                              \
                        CHECK(outside_ok, "%s %s m=%d n=%d k=%lld wrote outside its tile", isa,    \
                              kern->name, m, n, (long long)k);                                     \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        free(a);                                                                                   \
        free(b);                                                                                   \
        free(apack);                                                                               \
        free(bpack);                                                                               \
        free(c);                                                                                   \
        free(c0);                                                                                  \
    }

DEFINE_UKR_TEST(float, s, (double)FLT_EPSILON)
DEFINE_UKR_TEST(double, d, DBL_EPSILON)

/* A context's packing routines write exactly what the portable ones write, for several panels at
 * once, partial last panels and depths that are not a multiple of any SIMD block. */
#define DEFINE_PACK_TEST(T, P)                                                                     \
    static void test_pack_##P(const char* isa, const fc_##P##gemm_kernel* kern)                    \
    {                                                                                              \
        static const int64_t lens[] = {1, 3, 5, 6, 8, 16, 17, 40, 127};                                    \
        static const int64_t kcs[] = {1, 3, 8, 13, 17, 64, 67, 127};                                        \
        const int widths[] = {kern->mr, kern->nr, 4, 6, 8, 12, 16, 32};                            \
        for (size_t wi = 0; wi < 2 * sizeof widths / sizeof widths[0]; ++wi) {                     \
            const int which = (int)(wi % 2), w = widths[wi / 2];                                   \
            for (size_t li = 0; li < sizeof lens / sizeof lens[0]; ++li) {                         \
                for (size_t ki = 0; ki < sizeof kcs / sizeof kcs[0]; ++ki) {                       \
                    for (int trans = 0; trans < 2; ++trans) {                                      \
                        const int64_t len = lens[li], kc = kcs[ki];                                \
                        const int64_t panels = (len + w - 1) / w;                                  \
                        /* source: len x kc (A not transposed, B transposed) or kc x len */        \
                        const int gathers = which == 0 ? !trans : trans;                           \
                        const int64_t rows = gathers ? len : kc, cols = gathers ? kc : len;        \
                        const int64_t ld = cols + 3;                                               \
                        T* src = malloc((size_t)(rows * ld) * sizeof(T));                          \
                        T* want = malloc((size_t)(panels * w * kc) * sizeof(T));                   \
                        T* got = malloc((size_t)(panels * w * kc) * sizeof(T));                    \
                        for (int64_t i = 0; i < rows * ld; ++i) {                                  \
                            src[i] = (T)uniform();                                                 \
                        }                                                                          \
                        for (int64_t i = 0; i < panels * w * kc; ++i) {                            \
                            want[i] = got[i] = (T)SENTINEL;                                        \
                        }                                                                          \
                        if (which == 0) {                                                          \
                            fc_##P##pack_a(trans, len, kc, src, ld, w, want);                      \
                            kern->pack_a(trans, len, kc, src, ld, w, got);                         \
                        } else {                                                                   \
                            fc_##P##pack_b(trans, kc, len, src, ld, w, want);                      \
                            kern->pack_b(trans, kc, len, src, ld, w, got);                         \
                        }                                                                          \
                        CHECK(memcmp(want, got, (size_t)(panels * w * kc) * sizeof(T)) == 0,       \
                              "%s pack_%c width %d len %lld kc %lld trans %d differs from the "    \
                              "portable packing", isa, which == 0 ? 'a' : 'b', w, (long long)len,  \
                              (long long)kc, trans);                                               \
                        free(src);                                                                 \
                        free(want);                                                                \
                        free(got);                                                                 \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

DEFINE_PACK_TEST(float, s)
DEFINE_PACK_TEST(double, d)

/* The block sizes the loops rely on: MC a multiple of MR, NC of NR, everything positive, the tile
 * within the loops' limits. */
static void test_block_sizes(const fc_gemm_ctx* ctx)
{
    CHECK(ctx->s.mr >= 1 && ctx->s.mr <= FC_GEMM_MAX_MR && ctx->s.nr >= 1 && ctx->s.nr <= FC_GEMM_MAX_NR,
          "%s float tile", ctx->isa);
    CHECK(ctx->d.mr >= 1 && ctx->d.mr <= FC_GEMM_MAX_MR && ctx->d.nr >= 1 && ctx->d.nr <= FC_GEMM_MAX_NR,
          "%s double tile", ctx->isa);
    CHECK(ctx->s.kc >= 1 && ctx->s.mc % ctx->s.mr == 0 && ctx->s.nc % ctx->s.nr == 0, "%s float blocks",
          ctx->isa);
    CHECK(ctx->d.kc >= 1 && ctx->d.mc % ctx->d.mr == 0 && ctx->d.nc % ctx->d.nr == 0, "%s double blocks",
          ctx->isa);
    /* fc_sgemm_ukr_<isa>_<mr>x<nr>, "ref" for the portable ones */
    char want_s[64], want_d[64];
    const char* tag = strcmp(ctx->isa, "scalar") == 0 ? "ref" : ctx->isa;
    snprintf(want_s, sizeof want_s, "fc_sgemm_ukr_%s_%dx%d", tag, ctx->s.mr, ctx->s.nr);
    snprintf(want_d, sizeof want_d, "fc_dgemm_ukr_%s_%dx%d", tag, ctx->d.mr, ctx->d.nr);
    CHECK(strcmp(ctx->s.name, want_s) == 0, "%s: kernel %s, expected %s", ctx->isa, ctx->s.name, want_s);
    CHECK(strcmp(ctx->d.name, want_d) == 0, "%s: kernel %s, expected %s", ctx->isa, ctx->d.name, want_d);
}

int main(void)
{
    int count = 0;
    const fc_gemm_ctx* const* all = fc_gemm_ctx_all(&count);
    const int here = fc_gemm_isa_level(fc_cpu_isa());
    CHECK(count >= 1 && strcmp(all[0]->isa, "scalar") == 0, "the portable kernels come first");
    CHECK(strcmp(fc_gemm_ctx_active()->isa, fc_cpu_isa()) == 0 || fc_gemm_isa_level(fc_cpu_isa()) >= count,
          "the active context is the one fc_cpu_isa() names");
    int tested = 0;
    for (int i = 0; i < count; ++i) {
        test_block_sizes(all[i]);
        if (fc_gemm_isa_level(all[i]->isa) > here) {
            printf("test_gemm_ukr: %s skipped: this CPU (or FLEXCORE_ISA) runs %s at most\n", all[i]->isa,
                   fc_cpu_isa());
            continue;
        }
        test_pack_s(all[i]->isa, &all[i]->s);
        test_pack_d(all[i]->isa, &all[i]->d);
        test_ukr_s(all[i]->isa, &all[i]->s);
        test_ukr_d(all[i]->isa, &all[i]->d);
        printf("test_gemm_ukr: %s (%s, %s) tested\n", all[i]->isa, all[i]->s.name, all[i]->d.name);
        ++tested;
    }
    CHECK(tested >= 1, "at least the portable kernels ran");
    printf("test_gemm_ukr: %d passed, %d failed\n", n_passed, n_failed);
    return n_failed == 0 ? 0 : 1;
}
