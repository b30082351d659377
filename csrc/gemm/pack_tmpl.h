/* Packing, written once for both dtypes: pack.c includes this file with
 *   PK_T  the element type,  PK_NAME(x)  the dtype's name for x (fc_s##x / fc_d##x).
 *
 * A panel of width w (MR for A, NR for B) and depth kc is stored depth-major: element (p, r) at
 * dst[p * w + r], r < w. Packing A without transpose and B with one both read the panel from rows
 * that run along the depth (a gather, "transposing"); the other two read rows of the panel that are
 * already contiguous (a copy). So two routines serve all four cases. */

/* dst[p * w + r] = src[p * ld + r] for r < valid, 0 for valid <= r < w. */
static inline __attribute__((always_inline)) void PK_NAME(copy_panel_w)(
    const int w, int valid, int64_t kc, const PK_T* restrict src, int64_t ld, PK_T* restrict dst)
{
    if (valid == w) {
        for (int64_t p = 0; p < kc; ++p) {
            for (int r = 0; r < w; ++r) {
                dst[p * w + r] = src[p * ld + r];
            }
        }
        return;
    }
    for (int64_t p = 0; p < kc; ++p) {
        for (int r = 0; r < w; ++r) {
            dst[p * w + r] = r < valid ? src[p * ld + r] : (PK_T)0;
        }
    }
}

/* dst[p * w + r] = src[r * ld + p] for r < valid, 0 for valid <= r < w. Blocks of 8 along the
 * depth keep the w source rows' current cache lines in use together. */
static inline __attribute__((always_inline)) void PK_NAME(gather_panel_w)(
    const int w, int valid, int64_t kc, const PK_T* restrict src, int64_t ld, PK_T* restrict dst)
{
    enum { BLOCK = 8 };
    int64_t p0 = 0;
    if (valid == w) {
        for (; p0 + BLOCK <= kc; p0 += BLOCK) {
            for (int r = 0; r < w; ++r) {
                const PK_T* restrict s = src + r * ld + p0;
                for (int q = 0; q < BLOCK; ++q) {
                    dst[(p0 + q) * w + r] = s[q];
                }
            }
        }
    }
    for (int64_t p = p0; p < kc; ++p) {
        for (int r = 0; r < w; ++r) {
            dst[p * w + r] = r < valid ? src[r * ld + p] : (PK_T)0;
        }
    }
}

/* The panel widths registered kernels use get a copy compiled for that width (the loops over r
 * unroll); any other width takes the generic copy. */
#define PK_WIDTHS(FN, w, ...)                                                                      \
    switch (w) {                                                                                   \
    case 4:                                                                                        \
        FN(4, __VA_ARGS__);                                                                        \
        break;                                                                                     \
    case 6:                                                                                        \
        FN(6, __VA_ARGS__);                                                                        \
        break;                                                                                     \
    case 8:                                                                                        \
        FN(8, __VA_ARGS__);                                                                        \
        break;                                                                                     \
    case 12:                                                                                       \
        FN(12, __VA_ARGS__);                                                                       \
        break;                                                                                     \
    case 16:                                                                                       \
        FN(16, __VA_ARGS__);                                                                       \
        break;                                                                                     \
    case 32:                                                                                       \
        FN(32, __VA_ARGS__);                                                                       \
        break;                                                                                     \
    default:                                                                                       \
        FN(w, __VA_ARGS__);                                                                        \
        break;                                                                                     \
    }

static void PK_NAME(copy_panel)(int w, int valid, int64_t kc, const PK_T* src, int64_t ld,
                                PK_T* dst)
{
    PK_WIDTHS(PK_NAME(copy_panel_w), w, valid, kc, src, ld, dst)
}

static void PK_NAME(gather_panel)(int w, int valid, int64_t kc, const PK_T* src, int64_t ld,
                                  PK_T* dst)
{
    PK_WIDTHS(PK_NAME(gather_panel_w), w, valid, kc, src, ld, dst)
}

void PK_NAME(pack_a)(int trans, int64_t mc, int64_t kc, const PK_T* a, int64_t lda, int mr,
                     PK_T* dst)
{
    for (int64_t i = 0; i < mc; i += mr) {
        const int valid = (int)(mc - i < mr ? mc - i : mr);
        if (trans) { /* op(A)[i + r][p] = a[p * lda + i + r]: rows of a run along r */
            PK_NAME(copy_panel)(mr, valid, kc, a + i, lda, dst);
        } else { /* op(A)[i + r][p] = a[(i + r) * lda + p] */
            PK_NAME(gather_panel)(mr, valid, kc, a + i * lda, lda, dst);
        }
        dst += (int64_t)mr * kc;
    }
}

void PK_NAME(pack_b)(int trans, int64_t kc, int64_t nc, const PK_T* b, int64_t ldb, int nr,
                     PK_T* dst)
{
    for (int64_t j = 0; j < nc; j += nr) {
        const int valid = (int)(nc - j < nr ? nc - j : nr);
        if (trans) { /* op(B)[p][j + r] = b[(j + r) * ldb + p] */
            PK_NAME(gather_panel)(nr, valid, kc, b + j * ldb, ldb, dst);
        } else { /* op(B)[p][j + r] = b[p * ldb + j + r]: rows of b run along r */
            PK_NAME(copy_panel)(nr, valid, kc, b + j, ldb, dst);
        }
        dst += (int64_t)nr * kc;
    }
}

#undef PK_WIDTHS
