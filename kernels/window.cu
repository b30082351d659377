// Sliding windows (the executor's UNFOLD and FOLD): image (N, C, *spatial), windows
// (N, C, *out, *kernel), as ops.py's unfold/fold and csrc/src/window.c. A 1-D problem is the 2-D
// one with a height-1 image and kernel (the host passes that geometry).
//   geo = {planes, h, w, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow} (int64, device memory)
//   fc_cu_unfold_{f32,f64,i64,bool}(geo, pad, x, cols, n_cols)   one thread per window element
//   fc_cu_fold_{f32,f64,i64}(geo, cols, x, n_image)              one thread per image element,
//       summing the window taps that read it in a fixed order (no atomics: deterministic)
#include "common.cuh"

enum { G_PLANES, G_H, G_W, G_KH, G_KW, G_SH, G_SW, G_DH, G_DW, G_PH, G_PW, G_OH, G_OW };

template <typename T>
static __device__ void unfold_impl(const int64_t* g, T pad, const T* x, T* cols, int64_t total)
{
    const int64_t h = g[G_H], w = g[G_W], kh = g[G_KH], kw = g[G_KW], oh = g[G_OH], ow = g[G_OW];
    for (int64_t e = fc_cu_index(); e < total; e += fc_cu_stride()) {
        int64_t r = e;
        const int64_t kx = r % kw;
        r /= kw;
        const int64_t ky = r % kh;
        r /= kh;
        const int64_t ox = r % ow;
        r /= ow;
        const int64_t oy = r % oh;
        const int64_t p = r / oh;
        const int64_t iy = oy * g[G_SH] - g[G_PH] + ky * g[G_DH];
        const int64_t ix = ox * g[G_SW] - g[G_PW] + kx * g[G_DW];
        cols[e] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? x[(p * h + iy) * w + ix] : pad;
    }
}

template <typename T>
static __device__ void fold_impl(const int64_t* g, const T* cols, T* x, int64_t total)
{
    const int64_t h = g[G_H], w = g[G_W], kh = g[G_KH], kw = g[G_KW], oh = g[G_OH], ow = g[G_OW];
    const int64_t sh = g[G_SH], sw = g[G_SW], dh = g[G_DH], dw = g[G_DW];
    for (int64_t e = fc_cu_index(); e < total; e += fc_cu_stride()) {
        const int64_t ix = e % w, iy = (e / w) % h, p = e / (w * h);
        T acc = (T)0;
        for (int64_t ky = 0; ky < kh; ++ky) {
            const int64_t ty = iy + g[G_PH] - ky * dh;  // = oy * sh
            if (ty < 0 || ty % sh != 0 || ty / sh >= oh) {
                continue;
            }
            const int64_t oy = ty / sh;
            for (int64_t kx = 0; kx < kw; ++kx) {
                const int64_t tx = ix + g[G_PW] - kx * dw;
                if (tx < 0 || tx % sw != 0 || tx / sw >= ow) {
                    continue;
                }
                const int64_t ox = tx / sw;
                acc += cols[(((p * oh + oy) * ow + ox) * kh + ky) * kw + kx];
            }
        }
        x[e] = acc;
    }
}

#define DEFINE_UNFOLD(T, SFX)                                                                      \
    extern "C" __global__ void fc_cu_unfold_##SFX(const int64_t* g, T pad, const T* x, T* cols, int64_t total) \
    {                                                                                              \
        unfold_impl<T>(g, pad, x, cols, total);                                                    \
    }
DEFINE_UNFOLD(float, f32)
DEFINE_UNFOLD(double, f64)
DEFINE_UNFOLD(int64_t, i64)
DEFINE_UNFOLD(uint8_t, bool)

#define DEFINE_FOLD(T, SFX)                                                                        \
    extern "C" __global__ void fc_cu_fold_##SFX(const int64_t* g, const T* cols, T* x, int64_t total) \
    {                                                                                              \
        fold_impl<T>(g, cols, x, total);                                                           \
    }
DEFINE_FOLD(float, f32)
DEFINE_FOLD(double, f64)
DEFINE_FOLD(int64_t, i64)
