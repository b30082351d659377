// Fused LSTM and GRU cell kernels, forward and backward, one thread per (row, unit), in torch's
// gate order. The gate functions are ew_math.h's (sigmoid, tanh), the same the C kernels use.
// Not yet emitted by the lowering (cells are composites that the fusion pass turns into fused_ew
// programs); these are the kernels a fused-cell op will launch.
//
// LSTM, gates (n, 4h) pre-activations [i | f | g | o]:
//   fc_cu_lstm_fwd_<dt>(n, h, gates, c_prev, c, hout, act)   c = f c_prev + i g, hout = o tanh(c);
//       act (n, 4h) receives the activations [i | f | g | o] for the backward pass (NULL: not kept)
//   fc_cu_lstm_bwd_<dt>(n, h, act, c_prev, c, dh, dc, dgates, dc_prev)   dc may be NULL (zero)
// GRU, xg and hg (n, 3h) = input and hidden projections with their biases, [r | z | n]:
//   fc_cu_gru_fwd_<dt>(n, h, xg, hg, h_prev, hout, act)      r = s(xr + hr), z = s(xz + hz),
//       nn = tanh(xn + r hn), hout = (1 - z) nn + z h_prev; act (n, 3h) gets [r | z | nn] or NULL
//   fc_cu_gru_bwd_<dt>(n, h, act, hg, h_prev, dh, dxg, dhg, dh_prev)
#include "common.cuh"

static __device__ __forceinline__ float sig(float v) { return fc_ew_sigmoid_f32(v); }
static __device__ __forceinline__ double sig(double v) { return fc_ew_sigmoid_f64(v); }
static __device__ __forceinline__ float th(float v) { return fc_ew_tanh_f32(v); }
static __device__ __forceinline__ double th(double v) { return fc_ew_tanh_f64(v); }

template <typename T>
static __device__ void lstm_fwd(int64_t n, int64_t h, const T* gates, const T* c_prev, T* c, T* hout, T* act)
{
    for (int64_t e = fc_cu_index(); e < n * h; e += fc_cu_stride()) {
        const int64_t r = e / h, j = e % h;
        const T* g = gates + r * 4 * h;
        const T i = sig(g[j]), f = sig(g[h + j]), gg = th(g[2 * h + j]), o = sig(g[3 * h + j]);
        const T cn = f * c_prev[e] + i * gg;
        c[e] = cn;
        hout[e] = o * th(cn);
        if (act != nullptr) {
            T* a = act + r * 4 * h;
            a[j] = i;
            a[h + j] = f;
            a[2 * h + j] = gg;
            a[3 * h + j] = o;
        }
    }
}

template <typename T>
static __device__ void lstm_bwd(int64_t n, int64_t h, const T* act, const T* c_prev, const T* c, const T* dh,
                                const T* dc, T* dgates, T* dc_prev)
{
    for (int64_t e = fc_cu_index(); e < n * h; e += fc_cu_stride()) {
        const int64_t r = e / h, j = e % h;
        const T* a = act + r * 4 * h;
        const T i = a[j], f = a[h + j], g = a[2 * h + j], o = a[3 * h + j];
        const T tc = th(c[e]);
        const T dct = (dc != nullptr ? dc[e] : (T)0) + dh[e] * o * ((T)1 - tc * tc);
        T* d = dgates + r * 4 * h;
        d[j] = dct * g * i * ((T)1 - i);
        d[h + j] = dct * c_prev[e] * f * ((T)1 - f);
        d[2 * h + j] = dct * i * ((T)1 - g * g);
        d[3 * h + j] = dh[e] * tc * o * ((T)1 - o);
        dc_prev[e] = dct * f;
    }
}

template <typename T>
static __device__ void gru_fwd(int64_t n, int64_t h, const T* xg, const T* hg, const T* h_prev, T* hout, T* act)
{
    for (int64_t e = fc_cu_index(); e < n * h; e += fc_cu_stride()) {
        const int64_t r = e / h, j = e % h;
        const T* x = xg + r * 3 * h;
        const T* hh = hg + r * 3 * h;
        const T rg = sig(x[j] + hh[j]), z = sig(x[h + j] + hh[h + j]);
        const T nn = th(x[2 * h + j] + rg * hh[2 * h + j]);
        hout[e] = ((T)1 - z) * nn + z * h_prev[e];
        if (act != nullptr) {
            T* a = act + r * 3 * h;
            a[j] = rg;
            a[h + j] = z;
            a[2 * h + j] = nn;
        }
    }
}

template <typename T>
static __device__ void gru_bwd(int64_t n, int64_t h, const T* act, const T* hg, const T* h_prev, const T* dh, T* dxg,
                               T* dhg, T* dh_prev)
{
    for (int64_t e = fc_cu_index(); e < n * h; e += fc_cu_stride()) {
        const int64_t r = e / h, j = e % h;
        const T* a = act + r * 3 * h;
        const T rg = a[j], z = a[h + j], nn = a[2 * h + j];
        const T g = dh[e];
        const T dn = g * ((T)1 - z) * ((T)1 - nn * nn);
        const T dz = g * (h_prev[e] - nn) * z * ((T)1 - z);
        const T dr = dn * hg[r * 3 * h + 2 * h + j] * rg * ((T)1 - rg);
        T* dx = dxg + r * 3 * h;
        T* dhh = dhg + r * 3 * h;
        dx[j] = dr;
        dx[h + j] = dz;
        dx[2 * h + j] = dn;
        dhh[j] = dr;
        dhh[h + j] = dz;
        dhh[2 * h + j] = dn * rg;
        dh_prev[e] = g * z;
    }
}

#define DEFINE_CELLS(T, SFX)                                                                       \
    extern "C" __global__ void fc_cu_lstm_fwd_##SFX(int64_t n, int64_t h, const T* gates, const T* c_prev, T* c, \
                                                    T* hout, T* act)                               \
    {                                                                                              \
        lstm_fwd<T>(n, h, gates, c_prev, c, hout, act);                                            \
    }                                                                                              \
    extern "C" __global__ void fc_cu_lstm_bwd_##SFX(int64_t n, int64_t h, const T* act, const T* c_prev, const T* c, \
                                                    const T* dh, const T* dc, T* dgates, T* dc_prev) \
    {                                                                                              \
        lstm_bwd<T>(n, h, act, c_prev, c, dh, dc, dgates, dc_prev);                                \
    }                                                                                              \
    extern "C" __global__ void fc_cu_gru_fwd_##SFX(int64_t n, int64_t h, const T* xg, const T* hg, const T* h_prev, \
                                                   T* hout, T* act)                                \
    {                                                                                              \
        gru_fwd<T>(n, h, xg, hg, h_prev, hout, act);                                               \
    }                                                                                              \
    extern "C" __global__ void fc_cu_gru_bwd_##SFX(int64_t n, int64_t h, const T* act, const T* hg, const T* h_prev, \
                                                   const T* dh, T* dxg, T* dhg, T* dh_prev)        \
    {                                                                                              \
        gru_bwd<T>(n, h, act, hg, h_prev, dh, dxg, dhg, dh_prev);                                  \
    }

DEFINE_CELLS(float, f32)
DEFINE_CELLS(double, f64)
