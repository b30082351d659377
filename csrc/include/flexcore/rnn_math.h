/* Per-element LSTM and GRU cell math, shared by the C kernels (csrc/src/rnn_cell.c) and the CUDA
 * kernels (kernels/rnn_gates.cu), so the CPU tests check the arithmetic the GPU runs.
 *
 * The gate activations (sigmoid, tanh) are applied by the callers (vectorised on the CPU, ew_math.h
 * on the GPU); these functions combine activations. The expressions are parenthesised as
 * flexcore's autodiff builds the unfused cell (flexcore/nn/cells.py), so a fused cell and the
 * graph it replaces round alike.
 *
 * LSTM (torch's gates i, f, g, o as activations; c_prev, c, tc = tanh(c)):
 *   c = f c_prev + i g,  h = o tc
 *   backward, dh the gradient of h and dcn what c receives from elsewhere (the next step):
 *   dc = dcn + dh o (1 - tc^2);  di = dc g i (1 - i);  df = dc c_prev f (1 - f);
 *   dg = dc i (1 - g^2);  do = dh tc o (1 - o);  dc_prev = dc f
 * GRU (torch's formulation: r, z activations, hn = U_n h_prev + b_hn, nn = tanh(xn + r hn)):
 *   h = nn + z (h_prev - nn)
 *   backward: d = dh z (the h_prev - nn path);  dnn = dh - d;  dz = dh (h_prev - nn) z (1 - z);
 *   dxn = dnn (1 - nn^2);  dr = dxn hn r (1 - r);  dhn = dxn r;  dh_prev (this cell's part) = d */
#ifndef FLEXCORE_RNN_MATH_H
#define FLEXCORE_RNN_MATH_H

#include "flexcore/host_device.h"

#define FC_RNN_MATH(T, SFX)                                                                        \
    static inline FC_HOST_DEVICE T fc_lstm_c_##SFX(T i, T f, T g, T c_prev) { return f * c_prev + i * g; } \
    static inline FC_HOST_DEVICE T fc_lstm_h_##SFX(T o, T tc) { return o * tc; }                    \
    static inline FC_HOST_DEVICE void fc_lstm_grad_##SFX(T i, T f, T g, T o, T c_prev, T tc, T dh, T dcn, \
                                                         T* di, T* df, T* dg, T* dout, T* dc_prev)  \
    {                                                                                              \
        const T dc = dcn + (dh * o) * ((T)1 - tc * tc);                                            \
        *dg = (dc * i) * ((T)1 - g * g);                                                           \
        *di = ((dc * g) * i) * ((T)1 - i);                                                         \
        *df = ((dc * c_prev) * f) * ((T)1 - f);                                                    \
        *dout = ((dh * tc) * o) * ((T)1 - o);                                                      \
        *dc_prev = dc * f;                                                                         \
    }                                                                                              \
    static inline FC_HOST_DEVICE T fc_gru_h_##SFX(T z, T nn, T h_prev) { return nn + z * (h_prev - nn); } \
    static inline FC_HOST_DEVICE void fc_gru_grad_##SFX(T r, T z, T nn, T hn, T h_prev, T dh, T* dxr, T* dxz, \
                                                        T* dxn, T* dhn, T* dh_prev)                \
    {                                                                                              \
        const T d = dh * z;                                                                        \
        const T dnn = dh - d;                                                                      \
        *dxz = ((dh * (h_prev - nn)) * z) * ((T)1 - z);                                            \
        *dxn = dnn * ((T)1 - nn * nn);                                                             \
        *dxr = ((*dxn * hn) * r) * ((T)1 - r);                                                     \
        *dhn = *dxn * r;                                                                           \
        *dh_prev = d;                                                                              \
    }

FC_RNN_MATH(float, f32)
FC_RNN_MATH(double, f64)

#undef FC_RNN_MATH

#endif /* FLEXCORE_RNN_MATH_H */
