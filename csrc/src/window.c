/* Sliding windows: fc_unfold (im2col) and fc_fold (col2im, its adjoint), in the layout of
 * ops.py's unfold/fold: image (N, C, *spatial), windows (N, C, *out, *kernel).
 *
 * One 2-D implementation serves both ranks: a 1-D problem is the 2-D one with a height-1 image,
 * a height-1 kernel and unit stride/dilation, which has the same memory layout. For each window
 * row the valid taps [kw_lo, kw_hi) are computed once, so the inner loops carry no bounds test. */
#include <string.h>

#include "flexcore/ew_math.h"
#include "flexcore/kernels.h"
#include "kernel_util.h"

typedef struct window2d {
    int64_t planes;           /* N * C */
    int64_t h, w;             /* image */
    int64_t kh, kw;           /* kernel */
    int64_t sh, sw, dh, dw;   /* stride, dilation */
    int64_t ph, pw;           /* leading padding */
    int64_t oh, ow;           /* output positions */
    int64_t image_count;      /* planes * h * w */
    int64_t cols_count;       /* planes * oh * ow * kh * kw */
} window2d;

/* Checks one spatial axis and sets *out to its number of window positions. */
static int axis_geometry(int64_t size, int64_t k, int64_t s, int64_t lo, int64_t hi, int64_t d, int64_t* out)
{
    if (size < 0 || k < 1 || s < 1 || d < 1 || lo < 0 || hi < 0) {
        return FC_ERR_SIZE;
    }
    const int64_t span = ku_add(ku_mul(d, k - 1), 1);
    const int64_t padded = ku_add(ku_add(size, lo), hi);
    if (span < 0 || padded < 0 || padded < span) {
        return FC_ERR_SIZE; /* overflow, or the window does not fit */
    }
    *out = (padded - span) / s + 1;
    return FC_OK;
}

static int window_setup(int dtype, int nd, int64_t n, int64_t c, const int64_t* spatial, const int64_t* kernel,
                        const int64_t* stride, const int64_t* pad_lo, const int64_t* pad_hi, const int64_t* dilation,
                        window2d* g)
{
    if (!ku_dtype_ok(dtype)) {
        return FC_ERR_DTYPE;
    }
    if (nd != 1 && nd != 2) {
        return FC_ERR_SIZE;
    }
    if (spatial == NULL || kernel == NULL || stride == NULL || pad_lo == NULL || pad_hi == NULL ||
        dilation == NULL) {
        return FC_ERR_NULL;
    }
    int64_t g_in[2] = {1, 1}, g_k[2] = {1, 1}, g_s[2] = {1, 1}, g_lo[2] = {0, 0}, g_hi[2] = {0, 0},
            g_d[2] = {1, 1}, g_out[2];
    const int first = 2 - nd; /* a 1-D problem fills axis 1; axis 0 keeps the neutral height-1 axis */
    for (int d = 0; d < nd; ++d) {
        g_in[first + d] = spatial[d];
        g_k[first + d] = kernel[d];
        g_s[first + d] = stride[d];
        g_lo[first + d] = pad_lo[d];
        g_hi[first + d] = pad_hi[d];
        g_d[first + d] = dilation[d];
    }
    for (int d = 0; d < 2; ++d) {
        const int status = axis_geometry(g_in[d], g_k[d], g_s[d], g_lo[d], g_hi[d], g_d[d], &g_out[d]);
        if (status != FC_OK) {
            return status;
        }
    }
    g->planes = ku_mul(n, c);
    g->h = g_in[0], g->w = g_in[1];
    g->kh = g_k[0], g->kw = g_k[1];
    g->sh = g_s[0], g->sw = g_s[1];
    g->dh = g_d[0], g->dw = g_d[1];
    g->ph = g_lo[0], g->pw = g_lo[1];
    g->oh = g_out[0], g->ow = g_out[1];
    g->image_count = ku_mul(g->planes, ku_mul(g->h, g->w));
    g->cols_count = ku_mul(ku_mul(g->planes, ku_mul(g->oh, g->ow)), ku_mul(g->kh, g->kw));
    const int64_t elem = ku_dtype_size(dtype);
    if (g->planes < 0 || g->image_count < 0 || g->cols_count < 0 || ku_mul(g->image_count, elem) < 0 ||
        ku_mul(g->cols_count, elem) < 0) {
        return FC_ERR_SIZE; /* a negative N or C, or too many bytes */
    }
    return FC_OK;
}

/* Taps kw in [*lo, *hi) read image column iw0 + kw * dw inside [0, w). Called per window
 * position, so the usual dw == 1 avoids the two divisions. */
static inline void valid_taps(int64_t iw0, int64_t dw, int64_t kw, int64_t w, int64_t* lo, int64_t* hi)
{
    int64_t a, b;
    if (dw == 1) {
        a = iw0 >= 0 ? 0 : -iw0;
        b = w - iw0;
    } else {
        a = iw0 >= 0 ? 0 : (-iw0 + dw - 1) / dw;
        b = iw0 > w - 1 ? 0 : (w - 1 - iw0) / dw + 1;
    }
    if (a > kw) {
        a = kw;
    }
    if (b > kw) {
        b = kw;
    }
    *lo = a;
    *hi = b > a ? b : a;
}

#define DEFINE_UNFOLD(T, SFX)                                                                      \
    static void unfold_##SFX(const window2d* g, T pad, const T* x, T* cols)                        \
    {                                                                                              \
        for (int64_t p = 0; p < g->planes; ++p) {                                                  \
            const T* img = x + p * g->h * g->w;                                                    \
            T* dst = cols + p * g->oh * g->ow * g->kh * g->kw;                                     \
            for (int64_t oh = 0; oh < g->oh; ++oh) {                                               \
                for (int64_t ow = 0; ow < g->ow; ++ow) {                                           \
                    const int64_t iw0 = ow * g->sw - g->pw;                                        \
                    int64_t lo, hi;                                                                \
                    valid_taps(iw0, g->dw, g->kw, g->w, &lo, &hi);                                 \
                    for (int64_t kh = 0; kh < g->kh; ++kh, dst += g->kw) {                         \
                        const int64_t ih = oh * g->sh + kh * g->dh - g->ph;                        \
                        if (ih < 0 || ih >= g->h) {                                                \
                            for (int64_t k = 0; k < g->kw; ++k) {                                  \
                                dst[k] = pad;                                                      \
                            }                                                                      \
                            continue;                                                              \
                        }                                                                          \
                        const T* row = img + ih * g->w; /* + iw0 could point before the image */   \
                        for (int64_t k = 0; k < lo; ++k) {                                         \
                            dst[k] = pad;                                                          \
                        }                                                                          \
                        for (int64_t k = lo; k < hi; ++k) {                                        \
                            dst[k] = row[iw0 + k * g->dw];                                         \
                        }                                                                          \
                        for (int64_t k = hi; k < g->kw; ++k) {                                     \
                            dst[k] = pad;                                                          \
                        }                                                                          \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

DEFINE_UNFOLD(float, f32)
DEFINE_UNFOLD(double, f64)
DEFINE_UNFOLD(int64_t, i64)
DEFINE_UNFOLD(uint8_t, bool)

int fc_unfold(int dtype, int nd, int64_t n, int64_t c, const int64_t* spatial, const int64_t* kernel,
              const int64_t* stride, const int64_t* pad_lo, const int64_t* pad_hi, const int64_t* dilation,
              double pad_value, const void* x, void* cols)
{
    window2d g;
    const int status = window_setup(dtype, nd, n, c, spatial, kernel, stride, pad_lo, pad_hi, dilation, &g);
    if (status != FC_OK) {
        return status;
    }
    if (ku_bad_ptr(x, g.image_count) || ku_bad_ptr(cols, g.cols_count)) {
        return FC_ERR_NULL;
    }
    if (g.cols_count == 0) {
        return FC_OK;
    }
    switch (dtype) {
    case FC_F32:
        unfold_f32(&g, (float)pad_value, (const float*)x, (float*)cols);
        break;
    case FC_F64:
        unfold_f64(&g, pad_value, (const double*)x, (double*)cols);
        break;
    case FC_I64:
        unfold_i64(&g, fc_ew_f64_to_i64(pad_value), (const int64_t*)x, (int64_t*)cols);
        break;
    default:
        unfold_bool(&g, (uint8_t)(pad_value != 0.0), (const uint8_t*)x, (uint8_t*)cols);
        break;
    }
    return FC_OK;
}

#define DEFINE_FOLD(T, SFX, ADD)                                                                   \
    static void fold_##SFX(const window2d* g, const T* cols, T* x)                                 \
    {                                                                                              \
        for (int64_t p = 0; p < g->planes; ++p) {                                                  \
            T* img = x + p * g->h * g->w;                                                          \
            const T* src = cols + p * g->oh * g->ow * g->kh * g->kw;                               \
            for (int64_t oh = 0; oh < g->oh; ++oh) {                                               \
                for (int64_t ow = 0; ow < g->ow; ++ow) {                                           \
                    const int64_t iw0 = ow * g->sw - g->pw;                                        \
                    int64_t lo, hi;                                                                \
                    valid_taps(iw0, g->dw, g->kw, g->w, &lo, &hi);                                 \
                    for (int64_t kh = 0; kh < g->kh; ++kh, src += g->kw) {                         \
                        const int64_t ih = oh * g->sh + kh * g->dh - g->ph;                        \
                        if (ih < 0 || ih >= g->h || lo == hi) {                                    \
                            continue;                                                              \
                        }                                                                          \
                        T* row = img + ih * g->w;                                                  \
                        for (int64_t k = lo; k < hi; ++k) {                                        \
                            row[iw0 + k * g->dw] = ADD(row[iw0 + k * g->dw], src[k]);              \
                        }                                                                          \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

DEFINE_FOLD(float, f32, fc_ew_add_f32)
DEFINE_FOLD(double, f64, fc_ew_add_f64)
DEFINE_FOLD(int64_t, i64, fc_ew_add_i64)

int fc_fold(int dtype, int nd, int64_t n, int64_t c, const int64_t* spatial, const int64_t* kernel,
            const int64_t* stride, const int64_t* pad_lo, const int64_t* pad_hi, const int64_t* dilation,
            const void* cols, void* x)
{
    window2d g;
    const int status = window_setup(dtype, nd, n, c, spatial, kernel, stride, pad_lo, pad_hi, dilation, &g);
    if (status != FC_OK) {
        return status;
    }
    if (dtype == FC_BOOL) {
        return FC_ERR_DTYPE;
    }
    if (ku_bad_ptr(x, g.image_count) || ku_bad_ptr(cols, g.cols_count)) {
        return FC_ERR_NULL;
    }
    if (g.image_count == 0) {
        return FC_OK;
    }
    memset(x, 0, (size_t)(g.image_count * ku_dtype_size(dtype))); /* all-zero bits: 0, 0.0f, 0.0 */
    if (g.cols_count == 0) {
        return FC_OK;
    }
    switch (dtype) {
    case FC_F32:
        fold_f32(&g, (const float*)cols, (float*)x);
        break;
    case FC_F64:
        fold_f64(&g, (const double*)cols, (double*)x);
        break;
    default:
        fold_i64(&g, (const int64_t*)cols, (int64_t*)x);
        break;
    }
    return FC_OK;
}
