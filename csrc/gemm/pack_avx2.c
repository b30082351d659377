/* AVX2 versions of the packing routines (pack.c). The two cases that gather, op(A) without
 * transpose (each row of A becomes a column of its panel) and op(B) transposed, move 8 x 8 float
 * (4 x 4 double) blocks through registers with in-register transposes instead of one element at a
 * time; the two that copy walk the source row by row. Partial panels and depth remainders go to
 * the portable routines, which produce the same layout. Compiled with -mavx2 -mfma (the file's name);
 * registered by the AVX2 and AVX-512 contexts. */
#include "gemm_internal.h"

#if FC_GEMM_X86

#include <immintrin.h>

/* 8 x 8 floats: r[i] holds row i (8 depths); afterwards r[q] holds depth q of the 8 rows. */
static inline void transpose8_f32(__m256 r[8])
{
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* 4 x 4 doubles, alike. */
static inline void transpose4_f64(__m256d r[4])
{
    const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}

/* The first `count` lanes of v to dst (count 1..8). */
static inline void store_lanes_f32(float* dst, __m256 v, int count)
{
    switch (count) {
    case 8:
        _mm256_storeu_ps(dst, v);
        break;
    case 4:
        _mm_storeu_ps(dst, _mm256_castps256_ps128(v));
        break;
    case 6:
        _mm_storeu_ps(dst, _mm256_castps256_ps128(v));
        _mm_storel_pi((__m64*)(void*)(dst + 4), _mm256_extractf128_ps(v, 1));
        break;
    default: {
        const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lanes);
        _mm256_maskstore_ps(dst, mask, v);
        break;
    }
    }
}

static inline void store_lanes_f64(double* dst, __m256d v, int count)
{
    switch (count) {
    case 4:
        _mm256_storeu_pd(dst, v);
        break;
    case 2:
        _mm_storeu_pd(dst, _mm256_castpd256_pd128(v));
        break;
    default: {
        const __m256i lanes = _mm256_setr_epi64x(0, 1, 2, 3);
        const __m256i mask = _mm256_cmpgt_epi64(_mm256_set1_epi64x(count), lanes);
        _mm256_maskstore_pd(dst, mask, v);
        break;
    }
    }
}

/* One full panel of width w gathered: dst[p * w + r] = src[r * ld + p] for r < w and p < the
 * returned depth (a multiple of the block); the caller packs the rest. */
static int64_t gather_panel_f32(int w, int64_t kc, const float* src, int64_t ld, float* dst)
{
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8) {
        for (int g = 0; g < w; g += 8) {
            const int rows = w - g < 8 ? w - g : 8;
            __m256 r[8];
            for (int i = 0; i < 8; ++i) {
                r[i] = i < rows ? _mm256_loadu_ps(src + (g + i) * ld + p) : _mm256_setzero_ps();
            }
            transpose8_f32(r);
            for (int q = 0; q < 8; ++q) {
                store_lanes_f32(dst + (p + q) * w + g, r[q], rows);
            }
        }
    }
    return p;
}

static int64_t gather_panel_f64(int w, int64_t kc, const double* src, int64_t ld, double* dst)
{
    int64_t p = 0;
    for (; p + 4 <= kc; p += 4) {
        for (int g = 0; g < w; g += 4) {
            const int rows = w - g < 4 ? w - g : 4;
            __m256d r[4];
            for (int i = 0; i < 4; ++i) {
                r[i] = i < rows ? _mm256_loadu_pd(src + (g + i) * ld + p) : _mm256_setzero_pd();
            }
            transpose4_f64(r);
            for (int q = 0; q < 4; ++q) {
                store_lanes_f64(dst + (p + q) * w + g, r[q], rows);
            }
        }
    }
    return p;
}

/* The copying cases (B without transpose, A transposed) for the full panels of a block, a whole
 * row of the source at a time: row p of every panel is src[p * ld + j .. j + w), so walking p
 * outermost reads the source sequentially (the hardware prefetchers stream it), where panel after
 * panel touches one cache line per row at a stride of ld. Packing B of 512 x 2048 is 15-25% of a
 * 64 x 2048 x 512 product; on the loaded 2-core VM it was written on, both orders measured within
 * the noise (memory-bound either way). A row of a panel moves as full vectors plus a 4- and a
 * 2-element tail, so the 6-wide A panels of the 6 x 16 kernels (A transposed: the weight gradient
 * X^T dY) move in two instructions, not six scalar copies. Returns the columns packed (whole
 * panels); 0 for widths it does not handle (odd ones), which the portable routine packs. */
static inline void copy_row_f32(int w, const float* s, float* d)
{
    int r = 0;
    for (; r + 8 <= w; r += 8) {
        _mm256_storeu_ps(d + r, _mm256_loadu_ps(s + r));
    }
    if (r + 4 <= w) {
        _mm_storeu_ps(d + r, _mm_loadu_ps(s + r));
        r += 4;
    }
    if (r + 2 <= w) {
        _mm_storel_epi64((__m128i*)(void*)(d + r), _mm_loadl_epi64((const __m128i*)(const void*)(s + r)));
    }
}

static inline void copy_row_f64(int w, const double* s, double* d)
{
    int r = 0;
    for (; r + 4 <= w; r += 4) {
        _mm256_storeu_pd(d + r, _mm256_loadu_pd(s + r));
    }
    if (r + 2 <= w) {
        _mm_storeu_pd(d + r, _mm_loadu_pd(s + r));
    }
}

/* The row loop for one width (a constant at each call site below, so copy_row unrolls). */
#define COPY_ROWS_BODY(T, SUFFIX, w)                                                               \
    do {                                                                                           \
        const int64_t panel = (int64_t)(w) * kc;                                                   \
        for (int64_t p = 0; p < kc; ++p) {                                                         \
            const T* s = src + p * ld;                                                             \
            T* d = dst + p * (w);                                                                  \
            for (int64_t j = 0; j < full; j += (w), d += panel) {                                  \
                copy_row_##SUFFIX((w), s + j, d);                                                  \
            }                                                                                      \
        }                                                                                          \
    } while (0)

static int64_t copy_rows_f32(int w, int64_t kc, int64_t nc, const float* src, int64_t ld,
                             float* dst)
{
    const int64_t full = nc / w * w;
    if (w % 2 != 0 || full == 0) {
        return 0;
    }
    switch (w) {
    case 6:
        COPY_ROWS_BODY(float, f32, 6);
        break;
    case 16:
        COPY_ROWS_BODY(float, f32, 16);
        break;
    default:
        COPY_ROWS_BODY(float, f32, w);
        break;
    }
    return full;
}

static int64_t copy_rows_f64(int w, int64_t kc, int64_t nc, const double* src, int64_t ld,
                             double* dst)
{
    const int64_t full = nc / w * w;
    if (w % 2 != 0 || full == 0) {
        return 0;
    }
    switch (w) {
    case 6:
        COPY_ROWS_BODY(double, f64, 6);
        break;
    case 8:
        COPY_ROWS_BODY(double, f64, 8);
        break;
    default:
        COPY_ROWS_BODY(double, f64, w);
        break;
    }
    return full;
}

#undef COPY_ROWS_BODY

/* The gathering cases, panel by panel: full panels through the transposes, then their depth
 * remainder and whole partial panels through the portable routine, which writes the same layout. */

void fc_spack_a_avx2(int trans, int64_t mc, int64_t kc, const float* a, int64_t lda, int mr,
                     float* dst)
{
    if (trans) { /* the panel's rows are contiguous in a: a copy */
        const int64_t done = copy_rows_f32(mr, kc, mc, a, lda, dst);
        if (done < mc) {
            fc_spack_a(trans, mc - done, kc, a + done, lda, mr, dst + done * kc);
        }
        return;
    }
    for (int64_t i = 0; i < mc; i += mr, dst += (int64_t)mr * kc) {
        const float* src = a + i * lda;
        const int64_t p0 = mc - i >= mr ? gather_panel_f32(mr, kc, src, lda, dst) : 0;
        if (p0 < kc) {
            fc_spack_a(0, mc - i < mr ? mc - i : mr, kc - p0, src + p0, lda, mr, dst + p0 * mr);
        }
    }
}

void fc_dpack_a_avx2(int trans, int64_t mc, int64_t kc, const double* a, int64_t lda, int mr,
                     double* dst)
{
    if (trans) { /* the panel's rows are contiguous in a: a copy */
        const int64_t done = copy_rows_f64(mr, kc, mc, a, lda, dst);
        if (done < mc) {
            fc_dpack_a(trans, mc - done, kc, a + done, lda, mr, dst + done * kc);
        }
        return;
    }
    for (int64_t i = 0; i < mc; i += mr, dst += (int64_t)mr * kc) {
        const double* src = a + i * lda;
        const int64_t p0 = mc - i >= mr ? gather_panel_f64(mr, kc, src, lda, dst) : 0;
        if (p0 < kc) {
            fc_dpack_a(0, mc - i < mr ? mc - i : mr, kc - p0, src + p0, lda, mr, dst + p0 * mr);
        }
    }
}

void fc_spack_b_avx2(int trans, int64_t kc, int64_t nc, const float* b, int64_t ldb, int nr,
                     float* dst)
{
    if (!trans) { /* the panel's rows are contiguous in b: a copy */
        const int64_t done = copy_rows_f32(nr, kc, nc, b, ldb, dst);
        if (done < nc) {
            fc_spack_b(trans, kc, nc - done, b + done, ldb, nr, dst + done * kc);
        }
        return;
    }
    for (int64_t j = 0; j < nc; j += nr, dst += (int64_t)nr * kc) {
        const float* src = b + j * ldb;
        const int64_t p0 = nc - j >= nr ? gather_panel_f32(nr, kc, src, ldb, dst) : 0;
        if (p0 < kc) {
            fc_spack_b(1, kc - p0, nc - j < nr ? nc - j : nr, src + p0, ldb, nr, dst + p0 * nr);
        }
    }
}

void fc_dpack_b_avx2(int trans, int64_t kc, int64_t nc, const double* b, int64_t ldb, int nr,
                     double* dst)
{
    if (!trans) { /* the panel's rows are contiguous in b: a copy */
        const int64_t done = copy_rows_f64(nr, kc, nc, b, ldb, dst);
        if (done < nc) {
            fc_dpack_b(trans, kc, nc - done, b + done, ldb, nr, dst + done * kc);
        }
        return;
    }
    for (int64_t j = 0; j < nc; j += nr, dst += (int64_t)nr * kc) {
        const double* src = b + j * ldb;
        const int64_t p0 = nc - j >= nr ? gather_panel_f64(nr, kc, src, ldb, dst) : 0;
        if (p0 < kc) {
            fc_dpack_b(1, kc - p0, nc - j < nr ? nc - j : nr, src + p0, ldb, nr, dst + p0 * nr);
        }
    }
}

#else
/* ISO C wants at least one declaration in a translation unit. */
typedef int fc_gemm_pack_avx2_unavailable;
#endif
