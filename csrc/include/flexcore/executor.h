/* flexcore executor: runs a whole compiled plan (forward, backward, optimizer update) in one call.
 *
 * A program is a list of buffers and a list of instructions over them, built once (by the Python
 * cpu backend, or by a C program embedding libflexcore) and run many times.
 *
 * Buffers.  `buffers` holds FC_BUFFER_FIELDS int64 values per buffer: {kind, a, b, nbytes}:
 *   FC_BUF_INPUT   a = input index      the pointer comes with each run (read only)
 *   FC_BUF_PARAM   a = parameter index  the pointer comes with each run (read only)
 *   FC_BUF_CONST   a = constant index   consts[a], fixed at creation (read only; the caller keeps
 *                                       the memory alive until fc_program_destroy)
 *   FC_BUF_ARENA   b = byte offset      inside the program's arena (allocated once, 64-byte aligned)
 *   FC_BUF_ALIAS   a = base buffer id (< this id), b = byte offset into the base: a zero-copy view
 *   FC_BUF_OUTPUT  a = output index     the pointer comes with each run (written)
 * Unused fields must be 0. nbytes is the buffer's size; every access is checked against it.
 *
 * Instructions.  `code` is a sequence of instructions, each
 *     opcode, n_in, n_out, n_int, n_dbl, in_0 .. in_{n_in-1}, out_0 .. out_{n_out-1}, int_0 ..
 * (buffer ids, then n_int int64 immediates); each instruction also takes its n_dbl double
 * immediates, in order, from `fimm`. What the operands and immediates mean depends on the opcode
 * (see fc_opcode). Instructions write only to ARENA and OUTPUT buffers (or aliases of them); an
 * output never overlaps another operand of its instruction.
 *
 * fc_program_create decodes and validates everything once: buffer ids, counts, op codes, dtypes
 * and the byte extent of every access. A malformed program is rejected with FC_ERR_PROGRAM (or
 * FC_ERR_OP for an unknown kernel op code), never run.
 *
 * Runs.  fc_program_run executes every instruction in order. Input, parameter and output pointers
 * must point to at least their buffer's nbytes and be aligned for the element types the program
 * reads there (FC_ERR_ALIGN otherwise); an output may not overlap any other input, parameter,
 * constant or output (FC_ERR_OVERLAP). A program owns its arena, so one program runs in one thread
 * at a time: a run that starts while another run of the same program is under way returns
 * FC_ERR_BUSY. Different programs run concurrently.
 *
 * flexcore/native_cabi.py keeps a cffi cdef of this file (EXECUTOR_CDEF); tests/native/test_cabi.py
 * checks that the two agree. */
#ifndef FLEXCORE_EXECUTOR_H
#define FLEXCORE_EXECUTOR_H

#include <stdint.h>

#include "flexcore/flexcore.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fc_buffer_kind {
    FC_BUF_INPUT = 0,
    FC_BUF_PARAM = 1,
    FC_BUF_CONST = 2,
    FC_BUF_ARENA = 3,
    FC_BUF_ALIAS = 4,
    FC_BUF_OUTPUT = 5,
    FC_BUF_KIND_COUNT = 6
} fc_buffer_kind;

/* Sizes of the flat encoding: int64 fields per buffer, int64 header words per instruction. */
typedef enum fc_program_layout {
    FC_BUFFER_FIELDS = 4,
    FC_INSTR_HEADER = 5
} fc_program_layout;

/* Opcodes. Operands are listed as ins -> outs; [..] are the int64 immediates, {..} the doubles.
 * n counts elements; dtypes are fc_dtype codes; operands are dense (row-major) unless strides are
 * given (in elements, >= 0; an operand's start is its buffer's start: offsets are ALIAS buffers).
 * Each opcode calls the kernel of the same name in flexcore/kernels.h or flexcore/gemm.h. */
typedef enum fc_opcode {
    /* ins... -> outs...  [index, nbytes of each operand in order]: calls the host callback with
     * the operands' pointers (ins then outs). A non-zero return aborts the run (FC_ERR_CALLBACK). */
    FC_OPC_CALLBACK = 0,
    /* x -> y  [nbytes]: y = x bytewise. */
    FC_OPC_COPY = 1,
    /* -> y  [dtype, n] {value}: fc_fill. */
    FC_OPC_FILL = 2,
    /* x -> y  [elem_bytes, ndim, shape[ndim], x_strides[ndim], y_strides[ndim]]: fc_copy_strided;
     * a y stride may be 0 only on an axis of length <= 1. */
    FC_OPC_COPY_STRIDED = 3,
    /* x -> y  [dtype, fc_unary_op, n]: fc_ew_unary. */
    FC_OPC_UNARY = 4,
    /* a, b -> y  [dtype, fc_binary_op, ndim, shape[ndim], a_strides[ndim], b_strides[ndim]]:
     * fc_ew_binary; y contiguous with shape. */
    FC_OPC_BINARY = 5,
    /* a, b -> y (bool)  [dtype, fc_compare_op, ndim, shape, a_strides, b_strides]: fc_ew_compare. */
    FC_OPC_COMPARE = 6,
    /* cond, a, b -> y  [dtype, ndim, shape, cond_strides, a_strides, b_strides]: fc_ew_where. */
    FC_OPC_WHERE = 7,
    /* x -> y  [src_dtype, dst_dtype, n]: fc_cast. */
    FC_OPC_CAST = 8,
    /* a, b [, bias] -> c  [dtype, trans_a, trans_b, batch, m, n, k, lda, stride_a, ldb, stride_b,
     * ldc, stride_c, fc_act]: c_i = act(op(a_i) @ op(b_i) + bias) for i < batch, with a_i at
     * a + i * stride_a (0: broadcast) and alike; fc_*gemm_batched, or fc_*gemm_packed per batch
     * element when there is a bias (n elements) or an activation. A trans of FC_GEMM_PACKED (2)
     * reads that operand pre-packed by FC_OPC_GEMM_PACK (its ld is ignored, its stride must be 0).
     * With two doubles {alpha, beta} the instruction takes one more input, last, holding one
     * element s of the dtype (read at run time): c_i = act(alpha * s * op(a_i) @ op(b_i) + beta * c_i + bias) (an SGD step folded into
     * the weight gradient's product: c = W, alpha -1, s = lr, beta 1). */
    FC_OPC_GEMM = 9,
    /* x -> y  [dtype, fc_reduce_op, outer, red, inner, optionally ld]: fc_reduce_ld (ld: x's rows of
     * inner elements are ld apart; default inner) (a bool sum gives int64). */
    FC_OPC_REDUCE = 10,
    /* x -> y  [dtype, log, rows, cols]: fc_softmax_rows. */
    FC_OPC_SOFTMAX = 11,
    /* table, idx (int64) -> y  [dtype, n_idx, rows, row_len]: fc_gather. */
    FC_OPC_GATHER = 12,
    /* src, idx (int64) -> y  [dtype, n_idx, rows, row_len]: fc_scatter_add. */
    FC_OPC_SCATTER_ADD = 13,
    /* labels (int64) -> y  [dtype, n, classes]: fc_one_hot. */
    FC_OPC_ONE_HOT = 14,
    /* x -> cols  [dtype, nd, n, c, spatial[nd], kernel[nd], stride[nd], pad_lo[nd], pad_hi[nd],
     * dilation[nd]] {pad_value}: fc_unfold. */
    FC_OPC_UNFOLD = 15,
    /* cols -> x  [the same as UNFOLD] (no doubles): fc_fold. */
    FC_OPC_FOLD = 16,
    /* inputs... -> y  [dtype, n, cols, n_instr, fc_fused_mode of each input, 4 * n_instr code
     * words (opcode, a, b, c; unused fields 0), the row stride of each STRIDED input in order,
     * optionally y's row stride (y is then rows of cols elements that far apart)] {constants}:
     * fc_fused_ew_ld. */
    FC_OPC_FUSED_EW = 17,
    /* seed (one int64, >= 0) -> y  [dtype (f32/f64), salt, n]: fc_philox_uniform_*(seed, salt,
     * 0, y, n); a negative seed fails the run with FC_ERR_SIZE. */
    FC_OPC_PHILOX = 18,
    /* a, b[, bias] -> out, scratch  [dtype, fc_conv_mode, n, c, o, groups, slots, h, w, kh, kw,
     * sh, sw, ph_lo, pw_lo, ph_hi, pw_hi, dh, dw[, act]]: fc_conv_ex (flexcore/conv.h; the bias,
     * o values, and its fc_act immediate only with FC_CONV_FORWARD); scratch holds
     * fc_conv_sizes' scratch bytes. */
    FC_OPC_CONV = 19,
    /* ins -> out  [dtype, fc_pool_mode, n, c, h, w, kh, kw, sh, sw, ph_lo, pw_lo, ph_hi, pw_hi]:
     * fc_pool (flexcore/conv.h); FC_POOL_MAX and FC_POOL_SUM take x, FC_POOL_TIES x and y,
     * FC_POOL_BACKWARD x, y and share, FC_POOL_GRAD x, y and g, FC_POOL_SPREAD s. */
    FC_OPC_POOL = 20,
    /* [dtype, mode, n, h, lda, ldb, flags, order[4]] (flexcore/rnn.h). mode 0, the forward:
     * a, [b,] [bias,] c_prev -> out (7, n, h); flags bit 0: b is given (a, b strided by rows,
     * lda/ldb), bit 1: bias is given. mode 1, the backward: fwd, c_prev, dh [, dc] -> out, n*4h
     * elements of dgates then n*h of dc_prev; flags bit 0: dc is given (lda, ldb unused: 0). */
    FC_OPC_LSTM_CELL = 21,
    /* [dtype, mode, n, h, ldx, ldh, flags, xorder[3], horder[3]] (flexcore/rnn.h). mode 0, the
     * forward: x, [hh,] bias, h_prev -> out (5, n, h); flags bit 0: hh is given (x, hh strided by
     * rows, ldx/ldh). mode 1, the backward: fwd, h_prev, dh -> out, n*3h elements of dx, n*3h of
     * dhh, then n*h of dh_prev (flags 0, ldx, ldh unused: 0). */
    FC_OPC_GRU_CELL = 22,
    /* x -> packed  [dtype, fc_gemm_packing operand (A or B), trans, rows, cols, ld]:
     * fc_*gemm_pack (flexcore/gemm.h) of op(x), rows x cols as the product reads it, for the GEMMs
     * that read it with trans FC_GEMM_PACKED (packed holds fc_gemm_packed_bytes). */
    FC_OPC_GEMM_PACK = 23,
    FC_OPC_COUNT = 24
} fc_opcode;

typedef struct fc_program fc_program;

/* The host callback of FC_OPC_CALLBACK: `buffers` holds the instruction's operand pointers (ins,
 * then outs), valid only during the call. Returns 0 on success. */
typedef int (*fc_host_callback)(void* user, int64_t index, void* const* buffers);

/* Validate and build a program; *out receives it (NULL on failure). */
FC_API int fc_program_create(const int64_t* buffers, int64_t n_buffers, const void* const* consts, int64_t n_consts, int64_t n_inputs, int64_t n_params, int64_t n_outputs, const int64_t* code, int64_t code_len, const double* fimm, int64_t fimm_len, fc_program** out);

/* Run every instruction once. `cb` may be NULL when the program has no FC_OPC_CALLBACK. */
FC_API int fc_program_run(fc_program* prog, void* const* inputs, void* const* params, void* const* outputs, fc_host_callback cb, void* user);

/* Free a program and its arena (NULL is a no-op). Not while it runs. */
FC_API int fc_program_destroy(fc_program* prog);

/* Size in bytes of the program's arena. */
FC_API int fc_program_arena_bytes(const fc_program* prog, int64_t* bytes);

/* Index of the instruction that made the last run fail (-1 when the last run succeeded or failed
 * before its first instruction). */
FC_API int fc_program_failed_instruction(const fc_program* prog, int64_t* index);

/* Number of instructions of the program. */
FC_API int fc_program_instruction_count(const fc_program* prog, int64_t* n);

/* Opt-in profiling. With `on` nonzero every later run adds each instruction's wall time to a
 * per-instruction total; switching it on (again) clears the totals, off keeps them. Off: runs
 * read no clock.
 * FC_ERR_BUSY while the program runs. */
FC_API int fc_program_set_profiling(fc_program* prog, int on);

/* The totals: seconds[i] for instruction i < n (n at most the instruction count) and *runs, the
 * number of profiled runs. */
FC_API int fc_program_profile(fc_program* prog, double* seconds, int64_t n, int64_t* runs);

#ifdef __cplusplus
}
#endif

#endif /* FLEXCORE_EXECUTOR_H */
