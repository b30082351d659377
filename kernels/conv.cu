// Convolution and pooling: the executor's CONV and POOL instructions (csrc/include/flexcore/conv.h),
// as direct kernels. Layouts are row-major: x (N, C, H, W), w (O, C/groups, KH, KW),
// y (N, O, OH, OW); a 1-D problem is the 2-D one of height 1 (the lowering encodes it so).
//
//   g = the instruction's immediates on the device:
//     CONV [dtype, mode, n, c, o, groups, slots, h, w, kh, kw, sh, sw, ph_lo, pw_lo, ph_hi, pw_hi, dh, dw[, act]]
//     POOL [dtype, mode, n, c, h, w, kh, kw, sh, sw, ph_lo, pw_lo, ph_hi, pw_hi]
//   fc_cu_conv_fwd_<dt>(g, x, w, bias, act, y, n_y)  one thread per output element; bias (o,)
//       or NULL added to the finished sum, then act (FC_ACT_NONE / FC_ACT_RELU), as fc_conv_ex
//   fc_cu_conv_bwd_data_<dt>(g, gy, w, dx, n_x)   one thread per image element, gathering the
//       taps that read it (no atomics: deterministic)
//   fc_cu_conv_bwd_weight_<dt>(g, x, gy, dw)      one block per weight element, a shared-memory
//       tree over (n, oh, ow); power-of-two block
//   fc_cu_pool_<dt>(g, x, y, share, out, total)   every fc_pool_mode; the backward modes (BACKWARD,
//       SPREAD, GRAD, GRAD_RELU) run one thread per image element and add the windows covering it
//       in window order, which is the order fc_pool adds them in, so the sums agree bit for bit.
// The CONV scratch buffer is not used here.
#include "common.cuh"

enum { C_N = 2, C_C, C_O, C_G, C_SLOTS, C_H, C_W, C_KH, C_KW, C_SH, C_SW, C_PH, C_PW, C_PHH, C_PWH, C_DH, C_DW };

struct ConvGeom {
    int64_t n, c, o, cg, og, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow;
};

static __device__ ConvGeom conv_geom(const int64_t* g)
{
    ConvGeom q;
    q.n = g[C_N];
    q.c = g[C_C];
    q.o = g[C_O];
    q.cg = g[C_C] / g[C_G];
    q.og = g[C_O] / g[C_G];
    q.h = g[C_H];
    q.w = g[C_W];
    q.kh = g[C_KH];
    q.kw = g[C_KW];
    q.sh = g[C_SH];
    q.sw = g[C_SW];
    q.ph = g[C_PH];
    q.pw = g[C_PW];
    q.dh = g[C_DH];
    q.dw = g[C_DW];
    q.oh = (q.h + g[C_PH] + g[C_PHH] - q.dh * (q.kh - 1) - 1) / q.sh + 1;
    q.ow = (q.w + g[C_PW] + g[C_PWH] - q.dw * (q.kw - 1) - 1) / q.sw + 1;
    return q;
}

template <typename T>
static __device__ void conv_fwd(const int64_t* g, const T* x, const T* w, const T* bias, int act, T* y,
                                int64_t total)
{
    const ConvGeom q = conv_geom(g);
    for (int64_t e = fc_cu_index(); e < total; e += fc_cu_stride()) {
        const int64_t ox = e % q.ow, oy = (e / q.ow) % q.oh, o = (e / (q.ow * q.oh)) % q.o;
        const int64_t n = e / (q.ow * q.oh * q.o);
        const int64_t c0 = (o / q.og) * q.cg;
        const int64_t y0 = oy * q.sh - q.ph, x0 = ox * q.sw - q.pw;
        T acc = (T)0;
        for (int64_t ci = 0; ci < q.cg; ++ci) {
            const T* xp = x + (n * q.c + c0 + ci) * q.h * q.w;
            const T* wp = w + (o * q.cg + ci) * q.kh * q.kw;
            for (int64_t ky = 0; ky < q.kh; ++ky) {
                const int64_t iy = y0 + ky * q.dh;
                if (iy < 0 || iy >= q.h) {
                    continue;
                }
                for (int64_t kx = 0; kx < q.kw; ++kx) {
                    const int64_t ix = x0 + kx * q.dw;
                    if (ix >= 0 && ix < q.w) {
                        acc += xp[iy * q.w + ix] * wp[ky * q.kw + kx];
                    }
                }
            }
        }
        if (bias != nullptr) {
            acc = acc + bias[o];
        }
        y[e] = act == FC_ACT_RELU ? (acc > (T)0 ? acc : (T)0) : acc;  // ew_math.h's relu: NaN gives 0
    }
}

template <typename T>
static __device__ void conv_bwd_data(const int64_t* g, const T* gy, const T* w, T* dx, int64_t total)
{
    const ConvGeom q = conv_geom(g);
    for (int64_t e = fc_cu_index(); e < total; e += fc_cu_stride()) {
        const int64_t ix = e % q.w, iy = (e / q.w) % q.h, c = (e / (q.w * q.h)) % q.c;
        const int64_t n = e / (q.w * q.h * q.c);
        const int64_t grp = c / q.cg, ci = c % q.cg;
        T acc = (T)0;
        for (int64_t oi = 0; oi < q.og; ++oi) {
            const int64_t o = grp * q.og + oi;
            const T* gp = gy + (n * q.o + o) * q.oh * q.ow;
            const T* wp = w + (o * q.cg + ci) * q.kh * q.kw;
            for (int64_t ky = 0; ky < q.kh; ++ky) {
                const int64_t ty = iy + q.ph - ky * q.dh;  // = oy * sh
                if (ty < 0 || ty % q.sh != 0 || ty / q.sh >= q.oh) {
                    continue;
                }
                for (int64_t kx = 0; kx < q.kw; ++kx) {
                    const int64_t tx = ix + q.pw - kx * q.dw;
                    if (tx < 0 || tx % q.sw != 0 || tx / q.sw >= q.ow) {
                        continue;
                    }
                    acc += gp[(ty / q.sh) * q.ow + tx / q.sw] * wp[ky * q.kw + kx];
                }
            }
        }
        dx[e] = acc;
    }
}

template <typename T>
static __device__ void conv_bwd_weight(const int64_t* g, const T* x, const T* gy, T* dw)
{
    __shared__ T part[FC_CU_MAX_BLOCK];
    const ConvGeom q = conv_geom(g);
    const unsigned tid = threadIdx.x, nt = blockDim.x;
    const int64_t n_w = q.o * q.cg * q.kh * q.kw, red = q.n * q.oh * q.ow;
    for (int64_t e = blockIdx.x; e < n_w; e += gridDim.x) {
        const int64_t kx = e % q.kw, ky = (e / q.kw) % q.kh, ci = (e / (q.kw * q.kh)) % q.cg;
        const int64_t o = e / (q.kw * q.kh * q.cg);
        const int64_t c = (o / q.og) * q.cg + ci;
        T acc = (T)0;
        for (int64_t r = tid; r < red; r += nt) {
            const int64_t ox = r % q.ow, oy = (r / q.ow) % q.oh, n = r / (q.ow * q.oh);
            const int64_t iy = oy * q.sh - q.ph + ky * q.dh, ix = ox * q.sw - q.pw + kx * q.dw;
            if (iy >= 0 && iy < q.h && ix >= 0 && ix < q.w) {
                acc += x[((n * q.c + c) * q.h + iy) * q.w + ix] * gy[((n * q.o + o) * q.oh + oy) * q.ow + ox];
            }
        }
        part[tid] = acc;
        __syncthreads();
        for (unsigned s = nt / 2; s > 0; s /= 2) {
            if (tid < s) {
                part[tid] += part[tid + s];
            }
            __syncthreads();
        }
        if (tid == 0) {
            dw[e] = part[0];
        }
        __syncthreads();  // part is reused by the next weight
    }
}

enum { P_N = 2, P_C, P_H, P_W, P_KH, P_KW, P_SH, P_SW, P_PH, P_PW, P_PHH, P_PWH };
enum { POOL_MAX = 0, POOL_TIES, POOL_BACKWARD, POOL_SUM, POOL_SPREAD, POOL_GRAD, POOL_GRAD_RELU };  // fc_pool_mode

// How many taps of window (oy, ox) of plane xp equal t (padding taps read -inf), as FC_POOL_TIES.
template <typename T>
static __device__ int64_t window_ties(const T* xp, int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t y0,
                                      int64_t x0, T t)
{
    const int64_t ky_lo = y0 < 0 ? -y0 : 0, ky_hi = y0 + kh > h ? h - y0 : kh;
    const int64_t kx_lo = x0 < 0 ? -x0 : 0, kx_hi = x0 + kw > w ? w - x0 : kw;
    const int64_t valid = (ky_hi > ky_lo ? ky_hi - ky_lo : 0) * (kx_hi > kx_lo ? kx_hi - kx_lo : 0);
    int64_t count = t == (T)-INFINITY ? kh * kw - valid : 0;
    for (int64_t ky = ky_lo; ky < ky_hi; ++ky) {
        for (int64_t kx = kx_lo; kx < kx_hi; ++kx) {
            count += xp[(y0 + ky) * w + x0 + kx] == t;
        }
    }
    return count;
}

template <typename T>
static __device__ void pool(const int64_t* g, const T* a, const T* b, const T* share, T* out, int64_t total)
{
    const int mode = (int)g[1];
    const int64_t h = g[P_H], w = g[P_W], kh = g[P_KH], kw = g[P_KW], sh = g[P_SH], sw = g[P_SW];
    const int64_t ph = g[P_PH], pw = g[P_PW];
    const int64_t oh = (h + ph + g[P_PHH] - kh) / sh + 1, ow = (w + pw + g[P_PWH] - kw) / sw + 1;
    for (int64_t e = fc_cu_index(); e < total; e += fc_cu_stride()) {
        // e: an image element
        if (mode == POOL_BACKWARD || mode == POOL_SPREAD || mode == POOL_GRAD || mode == POOL_GRAD_RELU) {
            const int64_t ix = e % w, iy = (e / w) % h, pl = e / (w * h);
            // windows oy with oy*sh - ph <= iy < oy*sh - ph + kh, in ascending order
            const int64_t oy_lo = iy + ph - kh + 1 > 0 ? (iy + ph - kh + 1 + sh - 1) / sh : 0;
            const int64_t ox_lo = ix + pw - kw + 1 > 0 ? (ix + pw - kw + 1 + sw - 1) / sw : 0;
            const int64_t oy_hi = (iy + ph) / sh + 1 < oh ? (iy + ph) / sh + 1 : oh;
            const int64_t ox_hi = (ix + pw) / sw + 1 < ow ? (ix + pw) / sw + 1 : ow;
            const T v = mode != POOL_SPREAD ? a[e] : (T)0;  // SPREAD's a is the window sums
            T acc = (T)0;
            for (int64_t oy = oy_lo; oy < oy_hi; ++oy) {
                for (int64_t ox = ox_lo; ox < ox_hi; ++ox) {
                    const int64_t o = (pl * oh + oy) * ow + ox;
                    if (mode == POOL_SPREAD) {
                        acc += a[o];
                    } else if (v == b[o]) {
                        // GRAD: the window's g shared among its ties (the same division as fc_pool)
                        acc += mode == POOL_BACKWARD
                                   ? share[o]
                                   : share[o] / (T)window_ties(a + pl * h * w, h, w, kh, kw, oy * sh - ph,
                                                               ox * sw - pw, b[o]);
                    }
                }
            }
            out[e] = mode == POOL_GRAD_RELU && !(v > (T)0) ? (T)0 : acc;  // where(x > 0, dx, 0)
            continue;
        }
        const int64_t ox = e % ow, oy = (e / ow) % oh, pl = e / (ow * oh);
        const T* xp = a + pl * h * w;
        const int64_t y0 = oy * sh - ph, x0 = ox * sw - pw;
        const int64_t ky_lo = y0 < 0 ? -y0 : 0, ky_hi = y0 + kh > h ? h - y0 : kh;
        const int64_t kx_lo = x0 < 0 ? -x0 : 0, kx_hi = x0 + kw > w ? w - x0 : kw;
        const int64_t valid = (ky_hi > ky_lo ? ky_hi - ky_lo : 0) * (kx_hi > kx_lo ? kx_hi - kx_lo : 0);
        if (mode == POOL_SUM) {
            T acc = (T)0;
            for (int64_t ky = ky_lo; ky < ky_hi; ++ky) {
                for (int64_t kx = kx_lo; kx < kx_hi; ++kx) {
                    acc += xp[(y0 + ky) * w + x0 + kx];
                }
            }
            out[e] = acc;
        } else if (mode == POOL_MAX) {
            T m = valid < kh * kw ? (T)-INFINITY : xp[(y0 + ky_lo) * w + x0 + kx_lo];
            for (int64_t ky = ky_lo; ky < ky_hi; ++ky) {
                for (int64_t kx = kx_lo; kx < kx_hi; ++kx) {
                    const T v = xp[(y0 + ky) * w + x0 + kx];
                    m = (v > m || v != v) && m == m ? v : m;  // NaN propagates, as fc_pool
                }
            }
            out[e] = m;
        } else {  // POOL_TIES
            const int64_t count = window_ties(xp, h, w, kh, kw, y0, x0, b[e]);
            out[e] = (T)count;
        }
    }
}

#define DEFINE_CONV(T, SFX)                                                                                  \
    extern "C" __global__ void fc_cu_conv_fwd_##SFX(const int64_t* g, const T* x, const T* w, const T* bias, \
                                                    int act, T* y, int64_t total)                            \
    {                                                                                                        \
        conv_fwd<T>(g, x, w, bias, act, y, total);                                                           \
    }                                                                                                        \
    extern "C" __global__ void fc_cu_conv_bwd_data_##SFX(const int64_t* g, const T* gy, const T* w, T* dx,  \
                                                         int64_t total)                                      \
    {                                                                                                        \
        conv_bwd_data<T>(g, gy, w, dx, total);                                                               \
    }                                                                                                        \
    extern "C" __global__ void fc_cu_conv_bwd_weight_##SFX(const int64_t* g, const T* x, const T* gy, T* dw) \
    {                                                                                                        \
        conv_bwd_weight<T>(g, x, gy, dw);                                                                    \
    }                                                                                                        \
    extern "C" __global__ void fc_cu_pool_##SFX(const int64_t* g, const T* a, const T* b, const T* share,   \
                                                T* out, int64_t total)                                       \
    {                                                                                                        \
        pool<T>(g, a, b, share, out, total);                                                                 \
    }
DEFINE_CONV(float, f32)
DEFINE_CONV(double, f64)
