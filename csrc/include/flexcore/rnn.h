/* flexcore fused LSTM and GRU cell kernels: the post-autodiff ops lstm_cell / lstm_cell_grad /
 * gru_cell / gru_cell_grad of flexcore/ir/fused_rnn.py (per-element math in flexcore/rnn_math.h,
 * shared with the CUDA kernels).
 *
 * One step of a batch of n rows with hidden size h. Gate pre-activations come as one or two
 * (n, 4h) matrices a and b (row strides lda, ldb >= 4h; b may be NULL) plus a bias row of 4h
 * (NULL: none): the pre-activation of a gate is (a + b) + bias over its column block. The blocks
 * hold the gates in the order `order` gives: order[k] is the block (0..3) of gate k of torch's
 * i, f, g, o (NULL: 0, 1, 2, 3, torch's layout).
 *
 * fc_lstm_cell_fwd_*: c_prev (n, h) dense (NULL: zeros) -> out (7, n, h) dense, the planes
 *     i, f, g, o (activations), c, tanh(c), h.
 * fc_lstm_cell_bwd_*: fwd (7, n, h) as the forward wrote it, c_prev (NULL: zeros), dh (n, h),
 *     dc (n, h, what c receives besides h, NULL: zeros) -> dgates (n, 4h) dense, the gradients of
 *     the pre-activations in the blocks of `order`, and dc_prev (n, h) (NULL: not wanted).
 * Outputs must not overlap the inputs. float32 uses the vectorised sigmoid/tanh of the selected
 * ISA (FLEXCORE_ISA=scalar: libm), float64 libm. */
#ifndef FLEXCORE_RNN_H
#define FLEXCORE_RNN_H

#include <stdint.h>

#include "flexcore/flexcore.h"

#ifdef __cplusplus
extern "C" {
#endif

FC_API int fc_lstm_cell_fwd_f32(int64_t n, int64_t h, const float* a, int64_t lda, const float* b, int64_t ldb,
                                const float* bias, const float* c_prev, const int64_t* order, float* out);
FC_API int fc_lstm_cell_fwd_f64(int64_t n, int64_t h, const double* a, int64_t lda, const double* b, int64_t ldb,
                                const double* bias, const double* c_prev, const int64_t* order, double* out);
FC_API int fc_lstm_cell_bwd_f32(int64_t n, int64_t h, const float* fwd, const float* c_prev, const float* dh,
                                const float* dc, const int64_t* order, float* dgates, float* dc_prev);
FC_API int fc_lstm_cell_bwd_f64(int64_t n, int64_t h, const double* fwd, const double* c_prev, const double* dh,
                                const double* dc, const int64_t* order, double* dgates, double* dc_prev);

/* GRU, torch's formulation. x (n, 3h) holds the input projection's blocks of r, z, n in the
 * blocks xorder[0..2]; hh (n, 3h) (NULL: zeros, h_prev is zero) the recurrent product's blocks
 * of r, z and hn in the blocks horder[0..2]; row strides ldx, ldh >= 3h. bias (4h): b_r, b_z,
 * b_n, b_hn (NULL: zeros). NULL orders: 0, 1, 2.
 *   r = s((x_r + hh_r) + b_r),  z = s((x_z + hh_z) + b_z),  hn = hh_n + b_hn,
 *   nn = tanh((x_n + r hn) + b_n),  h = nn + z (h_prev - nn)
 * fc_gru_cell_fwd_*: -> out (5, n, h), the planes r, z, nn, hn, h.
 * fc_gru_cell_bwd_*: fwd (5, n, h), h_prev (NULL: zeros), dh (n, h) -> dx (n, 3h) the gradients
 *     of x's blocks, dhh (n, 3h) those of hh's blocks, dh_prev (n, h) the gradient h_prev gets
 *     through this step's h = ... + z h_prev (NULL: not wanted). */
FC_API int fc_gru_cell_fwd_f32(int64_t n, int64_t h, const float* x, int64_t ldx, const float* hh, int64_t ldh,
                               const float* bias, const float* h_prev, const int64_t* xorder, const int64_t* horder,
                               float* out);
FC_API int fc_gru_cell_fwd_f64(int64_t n, int64_t h, const double* x, int64_t ldx, const double* hh, int64_t ldh,
                               const double* bias, const double* h_prev, const int64_t* xorder, const int64_t* horder,
                               double* out);
FC_API int fc_gru_cell_bwd_f32(int64_t n, int64_t h, const float* fwd, const float* h_prev, const float* dh,
                               const int64_t* xorder, const int64_t* horder, float* dx, float* dhh, float* dh_prev);
FC_API int fc_gru_cell_bwd_f64(int64_t n, int64_t h, const double* fwd, const double* h_prev, const double* dh,
                               const int64_t* xorder, const int64_t* horder, double* dx, double* dhh, double* dh_prev);

#ifdef __cplusplus
}
#endif

#endif /* FLEXCORE_RNN_H */
