// Fused LSTM and GRU cell kernels, forward and backward: the LSTM_CELL and GRU_CELL executor
// instructions (flexcore/executor.h; the C kernels are csrc/src/rnn_cell.c, flexcore/rnn.h). One
// thread per (row, unit), grid-stride. The activations are ew_math.h's and the combinations
// rnn_math.h's, the functions the C kernels use, so the CPU tests check this arithmetic.
//
// `imm` is the instruction's immediates on the device:
//   LSTM_CELL [dtype, mode, n, h, lda, ldb, flags, order[4]]
//     fc_cu_lstm_fwd_<dt>(imm, a, b, bias, c_prev, out): pre-activation of gate k (torch's i, f, g,
//         o) = (a + b) + bias over column block order[k] of a / b (row strides lda / ldb; b, bias
//         may be NULL); out (7, n, h) = i, f, g, o, c, tanh(c), h
//     fc_cu_lstm_bwd_<dt>(imm, fwd, c_prev, dh, dc, out): out = dgates (n, 4h) in the blocks of
//         order, then dc_prev (n, h); dc may be NULL (zero)
//   GRU_CELL [dtype, mode, n, h, ldx, ldh, flags, xorder[3], horder[3]]
//     fc_cu_gru_fwd_<dt>(imm, x, hh, bias, h_prev, out): x's blocks xorder of r, z, n, hh's blocks
//         horder of r, z, hn (hh may be NULL), bias (4h) = b_r, b_z, b_n, b_hn;
//         out (5, n, h) = r, z, nn, hn, h
//     fc_cu_gru_bwd_<dt>(imm, fwd, h_prev, dh, out): out = dx (n, 3h), dhh (n, 3h), dh_prev (n, h)
#include "common.cuh"
#include "flexcore/rnn_math.h"

static __device__ __forceinline__ float sig(float v) { return fc_ew_sigmoid_f32(v); }
static __device__ __forceinline__ double sig(double v) { return fc_ew_sigmoid_f64(v); }
static __device__ __forceinline__ float th(float v) { return fc_ew_tanh_f32(v); }
static __device__ __forceinline__ double th(double v) { return fc_ew_tanh_f64(v); }
static __device__ __forceinline__ float lstm_c(float i, float f, float g, float cp) { return fc_lstm_c_f32(i, f, g, cp); }
static __device__ __forceinline__ double lstm_c(double i, double f, double g, double cp)
{
    return fc_lstm_c_f64(i, f, g, cp);
}
static __device__ __forceinline__ float lstm_h(float o, float tc) { return fc_lstm_h_f32(o, tc); }
static __device__ __forceinline__ double lstm_h(double o, double tc) { return fc_lstm_h_f64(o, tc); }
static __device__ __forceinline__ void lstm_grad(float i, float f, float g, float o, float cp, float tc, float dh,
                                                 float dcn, float* di, float* df, float* dg, float* dout, float* dcp)
{
    fc_lstm_grad_f32(i, f, g, o, cp, tc, dh, dcn, di, df, dg, dout, dcp);
}
static __device__ __forceinline__ void lstm_grad(double i, double f, double g, double o, double cp, double tc,
                                                 double dh, double dcn, double* di, double* df, double* dg,
                                                 double* dout, double* dcp)
{
    fc_lstm_grad_f64(i, f, g, o, cp, tc, dh, dcn, di, df, dg, dout, dcp);
}
static __device__ __forceinline__ float gru_h(float z, float nn, float hp) { return fc_gru_h_f32(z, nn, hp); }
static __device__ __forceinline__ double gru_h(double z, double nn, double hp) { return fc_gru_h_f64(z, nn, hp); }
static __device__ __forceinline__ void gru_grad(float r, float z, float nn, float hn, float hp, float dh, float* dxr,
                                                float* dxz, float* dxn, float* dhn, float* dhp)
{
    fc_gru_grad_f32(r, z, nn, hn, hp, dh, dxr, dxz, dxn, dhn, dhp);
}
static __device__ __forceinline__ void gru_grad(double r, double z, double nn, double hn, double hp, double dh,
                                                double* dxr, double* dxz, double* dxn, double* dhn, double* dhp)
{
    fc_gru_grad_f64(r, z, nn, hn, hp, dh, dxr, dxz, dxn, dhn, dhp);
}

enum { LS_N = 2, LS_H = 3, LS_LDA = 4, LS_LDB = 5, LS_ORDER = 7 };
enum { GR_N = 2, GR_H = 3, GR_LDX = 4, GR_LDH = 5, GR_XORDER = 7, GR_HORDER = 10 };

template <typename T>
static __device__ void lstm_fwd(const int64_t* imm, const T* a, const T* b, const T* bias, const T* c_prev, T* out)
{
    const int64_t n = imm[LS_N], h = imm[LS_H], lda = imm[LS_LDA], ldb = imm[LS_LDB], nh = n * h;
    for (int64_t e = fc_cu_index(); e < nh; e += fc_cu_stride()) {
        const int64_t r = e / h, j = e % h;
        T act[4];
        for (int k = 0; k < 4; ++k) {
            const int64_t col = imm[LS_ORDER + k] * h + j;
            T p = a[r * lda + col];
            if (b != nullptr) {
                p = p + b[r * ldb + col];
            }
            if (bias != nullptr) {
                p = p + bias[col];
            }
            act[k] = k == 2 ? th(p) : sig(p);
            out[k * nh + e] = act[k];
        }
        const T c = lstm_c(act[0], act[1], act[2], c_prev[e]);
        const T tc = th(c);
        out[4 * nh + e] = c;
        out[5 * nh + e] = tc;
        out[6 * nh + e] = lstm_h(act[3], tc);
    }
}

template <typename T>
static __device__ void lstm_bwd(const int64_t* imm, const T* fwd, const T* c_prev, const T* dh, const T* dc, T* out)
{
    const int64_t n = imm[LS_N], h = imm[LS_H], nh = n * h;
    for (int64_t e = fc_cu_index(); e < nh; e += fc_cu_stride()) {
        const int64_t r = e / h, j = e % h;
        T d[4], dcp;
        lstm_grad(fwd[e], fwd[nh + e], fwd[2 * nh + e], fwd[3 * nh + e], c_prev[e], fwd[5 * nh + e], dh[e],
                  dc != nullptr ? dc[e] : (T)0, &d[0], &d[1], &d[2], &d[3], &dcp);
        for (int k = 0; k < 4; ++k) {
            out[r * 4 * h + imm[LS_ORDER + k] * h + j] = d[k];
        }
        out[4 * nh + e] = dcp;
    }
}

template <typename T>
static __device__ void gru_fwd(const int64_t* imm, const T* x, const T* hh, const T* bias, const T* h_prev, T* out)
{
    const int64_t n = imm[GR_N], h = imm[GR_H], ldx = imm[GR_LDX], ldh = imm[GR_LDH], nh = n * h;
    for (int64_t e = fc_cu_index(); e < nh; e += fc_cu_stride()) {
        const int64_t r = e / h, j = e % h;
        const T* xr = x + r * ldx;
        const T* hr = hh != nullptr ? hh + r * ldh : nullptr;
        T g[2];
        for (int k = 0; k < 2; ++k) {
            T p = xr[imm[GR_XORDER + k] * h + j];
            if (hr != nullptr) {
                p = p + hr[imm[GR_HORDER + k] * h + j];
            }
            g[k] = sig(p + bias[k * h + j]);
        }
        const T hn = (hr != nullptr ? hr[imm[GR_HORDER + 2] * h + j] : (T)0) + bias[3 * h + j];
        const T nn = th((xr[imm[GR_XORDER + 2] * h + j] + g[0] * hn) + bias[2 * h + j]);
        out[e] = g[0];
        out[nh + e] = g[1];
        out[2 * nh + e] = nn;
        out[3 * nh + e] = hn;
        out[4 * nh + e] = gru_h(g[1], nn, h_prev[e]);
    }
}

template <typename T>
static __device__ void gru_bwd(const int64_t* imm, const T* fwd, const T* h_prev, const T* dh, T* out)
{
    const int64_t n = imm[GR_N], h = imm[GR_H], nh = n * h;
    for (int64_t e = fc_cu_index(); e < nh; e += fc_cu_stride()) {
        const int64_t r = e / h, j = e % h;
        T dxr, dxz, dxn, dhn, dhp;
        gru_grad(fwd[e], fwd[nh + e], fwd[2 * nh + e], fwd[3 * nh + e], h_prev[e], dh[e], &dxr, &dxz, &dxn, &dhn,
                 &dhp);
        T* dx = out + r * 3 * h + j;
        T* dhh = out + 3 * nh + r * 3 * h + j;
        dx[imm[GR_XORDER] * h] = dxr;
        dx[imm[GR_XORDER + 1] * h] = dxz;
        dx[imm[GR_XORDER + 2] * h] = dxn;
        dhh[imm[GR_HORDER] * h] = dxr;
        dhh[imm[GR_HORDER + 1] * h] = dxz;
        dhh[imm[GR_HORDER + 2] * h] = dhn;
        out[6 * nh + e] = dhp;
    }
}

#define DEFINE_CELLS(T, SFX)                                                                       \
    extern "C" __global__ void fc_cu_lstm_fwd_##SFX(const int64_t* imm, const T* a, const T* b, const T* bias, \
                                                    const T* c_prev, T* out)                       \
    {                                                                                              \
        lstm_fwd<T>(imm, a, b, bias, c_prev, out);                                                 \
    }                                                                                              \
    extern "C" __global__ void fc_cu_lstm_bwd_##SFX(const int64_t* imm, const T* fwd, const T* c_prev, const T* dh, \
                                                    const T* dc, T* out)                           \
    {                                                                                              \
        lstm_bwd<T>(imm, fwd, c_prev, dh, dc, out);                                                \
    }                                                                                              \
    extern "C" __global__ void fc_cu_gru_fwd_##SFX(const int64_t* imm, const T* x, const T* hh, const T* bias, \
                                                   const T* h_prev, T* out)                        \
    {                                                                                              \
        gru_fwd<T>(imm, x, hh, bias, h_prev, out);                                                 \
    }                                                                                              \
    extern "C" __global__ void fc_cu_gru_bwd_##SFX(const int64_t* imm, const T* fwd, const T* h_prev, const T* dh, \
                                                   T* out)                                         \
    {                                                                                              \
        gru_bwd<T>(imm, fwd, h_prev, dh, out);                                                     \
    }

DEFINE_CELLS(float, f32)
DEFINE_CELLS(double, f64)
