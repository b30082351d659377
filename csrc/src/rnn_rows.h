/* Row kernels of the fused LSTM and GRU cells (rnn_cell.c) for one instruction set: one pass over a row,
 * everything in registers. Internal to libflexcore. NULL operands as in flexcore/rnn.h. */
#ifndef FLEXCORE_RNN_ROWS_H
#define FLEXCORE_RNN_ROWS_H

#include <stdint.h>

typedef struct fc_rnn_rows {
    /* Gate k's pre-activation is (a + b) + bias over block blk[k]; pl: the seven output rows. */
    void (*fwd)(int64_t h, const float* a, const float* b, const float* bias, const int64_t* blk, const float* c_prev,
                float* const* pl);
    /* fw: the rows of i, f, g, o and tanh(c); d: the rows of di, df, dg, do. */
    void (*bwd)(int64_t h, const float* const* fw, const float* c_prev, const float* dh, const float* dc,
                float* const* d, float* dc_prev);
    /* GRU: x, hh rows with the blocks xb, hb (hh may be NULL), bias (4h) b_r, b_z, b_n, b_hn;
     * pl: the five output rows r, z, nn, hn, h. */
    void (*gru_fwd)(int64_t h, const float* x, const float* hh, const float* bias, const int64_t* xb,
                    const int64_t* hb, const float* h_prev, float* const* pl);
    /* fw: the rows of r, z, nn, hn; d: the rows of dx_r, dx_z, dx_n, dh_r, dh_z, dh_n. */
    void (*gru_bwd)(int64_t h, const float* const* fw, const float* h_prev, const float* dh, float* const* d,
                    float* dh_prev);
} fc_rnn_rows;

/* The AVX2 + FMA row kernels; NULL where they were not compiled (not x86-64 GCC/Clang). */
extern const fc_rnn_rows* const fc_rnn_rows_avx2;

#endif /* FLEXCORE_RNN_ROWS_H */
