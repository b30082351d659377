/* flexcore C ABI, part 2: the generic CPU kernels behind every IR op of flexcore/ir/ops.py
 * (except matmul, see the GEMM header): elementwise with broadcasting, casts, strided copies,
 * reductions, indexing, sliding windows, fused elementwise programs and row softmax.
 *
 * The conventions of flexcore.h hold here too (status returns, checks at the edge, enum values
 * never renumbered, cffi cdef kept in flexcore/native_cabi.py). In addition:
 *  - `dtype` is an fc_dtype code. float32/float64/int64 are the C types float/double/int64_t;
 *    bool is one byte holding 0 or 1, as in numpy. A bool input byte other than 0 reads as true;
 *    a bool a kernel computes is 0 or 1 (kernels that only move data copy bytes as they are). A
 *    dtype an operation does not support gives FC_ERR_DTYPE.
 *  - shapes and strides are int64 arrays of `ndim` entries, ndim in [0, FC_MAX_NDIM]; strides
 *    count ELEMENTS (not bytes), are >= 0, and may be 0 (broadcasting). With ndim == 0 the shape
 *    and stride pointers may be NULL (one element). Where a stride argument may be NULL, NULL
 *    means "contiguous (row-major) with `shape`".
 *  - the element count (the product of the shape) and the largest offset an array is read or
 *    written at must fit in int64 (in bytes), else FC_ERR_SIZE.
 *  - data pointers are void*; one may be NULL only when nothing is read or written through it.
 *  - an output may alias an input exactly only where the function says so; outputs never
 *    overlap inputs otherwise.
 *  - numerics are numpy's: the math is in flexcore/ew_math.h (shared with the CUDA kernels), and
 *    results equal numpy's bit for bit where IEEE arithmetic defines them (+ - * /, sqrt,
 *    comparisons, max/min with NaN propagation); exp/log/tanh/pow... use the C math library.
 *  - every kernel is deterministic: the same inputs give the same bits on every run. */
#ifndef FLEXCORE_KERNELS_H
#define FLEXCORE_KERNELS_H

#include <stdint.h>

#include "flexcore/flexcore.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fc_dtype {
    FC_F32 = 0,
    FC_F64 = 1,
    FC_I64 = 2,
    FC_BOOL = 3,
    FC_DTYPE_COUNT = 4
} fc_dtype;

typedef enum fc_kernel_limit {
    FC_MAX_NDIM = 8,          /* most axes an array argument may have */
    FC_FUSED_MAX_INPUTS = 64, /* fc_fused_ew: most inputs */
    FC_FUSED_MAX_INSTR = 64   /* fc_fused_ew: most instructions */
} fc_kernel_limit;

typedef enum fc_compare_op {
    FC_CMP_EQ = 0,
    FC_CMP_NE = 1,
    FC_CMP_LT = 2,
    FC_CMP_LE = 3,
    FC_CMP_GT = 4,
    FC_CMP_GE = 5,
    FC_CMP_COUNT = 6
} fc_compare_op;

typedef enum fc_reduce_op {
    FC_REDUCE_SUM = 0,
    FC_REDUCE_MAX = 1,
    FC_REDUCE_COUNT = 2
} fc_reduce_op;

/* fc_fused_ew input modes: how element i (row-major, of n) of the output reads an input. */
typedef enum fc_fused_mode {
    FC_IN_FULL = 0,   /* n elements: reads [i] */
    FC_IN_SCALAR = 1, /* 1 element: reads [0] */
    FC_IN_ROW = 2,    /* cols elements: reads [i % cols] (a (1, cols) operand) */
    FC_IN_COL = 3,    /* n / cols elements: reads [i / cols] (an (n / cols, 1) operand) */
    FC_IN_STRIDED = 4, /* rows of cols elements, input_lens[j] (>= cols) apart: reads
                          [(i / cols) * input_lens[j] + i % cols] (a column block of a matrix) */
    FC_IN_MODE_COUNT = 5
} fc_fused_mode;

/* fc_fused_ew opcodes. Operand fields a, b, c are register numbers (CONST: an index into consts);
 * the fields an opcode does not use are ignored and should be 0. */
typedef enum fc_ew_code {
    /* unary, r = f(a): the fc_unary_op functions of the same name (numpy semantics) */
    FC_EW_NEG = 0,
    FC_EW_EXP = 1,
    FC_EW_LOG = 2,
    FC_EW_LOG1P = 3,
    FC_EW_SQRT = 4,
    FC_EW_ABS = 5,
    FC_EW_SIGMOID = 6,
    FC_EW_TANH = 7,
    FC_EW_ARCTAN = 8,
    FC_EW_SIGN = 9,
    FC_EW_STEP = 10,
    FC_EW_RELU = 11,
    /* binary, r = f(a, b); MAX/MIN are np.maximum/np.minimum (NaN wins) */
    FC_EW_ADD = 12,
    FC_EW_SUB = 13,
    FC_EW_MUL = 14,
    FC_EW_DIV = 15,
    FC_EW_POW = 16,
    FC_EW_MAX = 17,
    FC_EW_MIN = 18,
    /* comparisons, r = (a OP b) ? 1.0 : 0.0 (false when either is NaN, except NE) */
    FC_EW_GT = 19,
    FC_EW_GE = 20,
    FC_EW_LT = 21,
    FC_EW_LE = 22,
    FC_EW_EQ = 23,
    FC_EW_NE = 24,
    /* r = (a != 0) ? b : c; a NaN condition is nonzero, so it picks b */
    FC_EW_WHERE = 25,
    /* r = consts[a] (rounded to float32 for an f32 program) */
    FC_EW_CONST = 26,
    FC_EW_CODE_COUNT = 27
} fc_ew_code;

/* ------------------------------------------------------------------------------------------
 * Elementwise
 * ------------------------------------------------------------------------------------------ */

/* y[i] = op(x[i]) for i < n, x and y contiguous, op an fc_unary_op; y may alias x exactly.
 * float32/float64 take every op; int64 takes FC_UNARY_NEG only (wrapping, like numpy:
 * -INT64_MIN == INT64_MIN); anything else is FC_ERR_DTYPE. */
FC_API int fc_ew_unary(int dtype, int op, int64_t n, const void* x, void* y);

/* y = op(a, b) with broadcasting, op an fc_binary_op. y is contiguous with `shape`; a and b are
 * read at strides sa and sb (NULL: contiguous with `shape`), so a broadcast operand has stride 0
 * on its broadcast axes (numpy's broadcast_to strides, in elements). y may alias a or b exactly
 * when that operand is contiguous with `shape`.
 * float32/float64: every op, numpy semantics (NaN propagates, pow is C pow()).
 * int64: ADD SUB MUL (wrapping, like numpy) MAXIMUM MINIMUM. bool: ADD and MAXIMUM (or), MUL and
 * MINIMUM (and), as numpy. Others: FC_ERR_DTYPE.
 * Fast paths (no per-element index arithmetic): same-shape contiguous operands, a scalar operand,
 * and a broadcast row or column; all other layouts run a generic strided loop. */
FC_API int fc_ew_binary(int dtype, int op, int ndim, const int64_t* shape, const void* a, const int64_t* sa,
                        const void* b, const int64_t* sb, void* y);

/* y = (a OP b) as bool (one byte, 0/1), op an fc_compare_op; a and b of one dtype (any of the
 * four), broadcast as in fc_ew_binary; y contiguous with `shape`. IEEE comparisons: NaN compares
 * unequal to everything (only NE is true). */
FC_API int fc_ew_compare(int dtype, int op, int ndim, const int64_t* shape, const void* a, const int64_t* sa,
                         const void* b, const int64_t* sb, void* y);

/* y = cond ? a : b elementwise (np.where); cond is bool, a and b of `dtype` (any of the four);
 * each read at its own strides (NULL: contiguous); y contiguous with `shape`. y may alias a or b
 * exactly when that operand is contiguous with `shape`. */
FC_API int fc_ew_where(int dtype, int ndim, const int64_t* shape, const void* cond, const int64_t* sc,
                       const void* a, const int64_t* sa, const void* b, const int64_t* sb, void* y);

/* y[i] = x[i] converted from src_dtype to dst_dtype (numpy astype), n contiguous elements; y may
 * alias x exactly only when both dtypes have the same size. Rounding to nearest for
 * int64 -> float and float64 -> float32 (out-of-range float64 becomes +-inf); to bool: x != 0
 * (NaN is true). float -> int64 truncates toward zero; where numpy's result is undefined (a value
 * outside [-2^63, 2^63), NaN) this kernel saturates to INT64_MIN / INT64_MAX and maps NaN to 0. */
FC_API int fc_cast(int src_dtype, int dst_dtype, int64_t n, const void* x, void* y);

/* ------------------------------------------------------------------------------------------
 * Data movement
 * ------------------------------------------------------------------------------------------ */

/* dst[index * dst_strides] = src[index * src_strides] for every index of `shape`, elements of
 * elem_bytes bytes (> 0; dtype-free). This one kernel is permute, broadcast_to (src stride 0),
 * slice (src offset and strides), concat (one call per piece into a dst offset) and the interiors
 * of unslice and pad (dst offset and strides into a filled buffer). NULL strides: contiguous.
 * dst must not overlap src, and no two indices may map to one dst element (a dst stride of 0 on
 * an axis longer than 1 leaves unspecified which source element lands there).
 * Fast paths: contiguous inner axes are merged into one memcpy-sized run; a 2-D transpose (the
 * innermost axis contiguous in dst, the next one contiguous in src) is copied in cache blocks. */
FC_API int fc_copy_strided(int elem_bytes, int ndim, const int64_t* shape, const void* src,
                           const int64_t* src_strides, void* dst, const int64_t* dst_strides);

/* dst[i] = value converted to dtype (as fc_cast converts a float64) for i < n. */
FC_API int fc_fill(int dtype, int64_t n, double value, void* dst);

/* ------------------------------------------------------------------------------------------
 * Reductions
 * ------------------------------------------------------------------------------------------ */

/* y[o, j] = op over r of x[o, r, j], x contiguous (outer, red, inner), y contiguous (outer,
 * inner). Reducing several adjacent axes is one call (multiply their sizes into red); other
 * axis sets need a permute (fc_copy_strided) first, or one call per axis.
 * SUM: float32 and float64 accumulate in float64: pairwise along a contiguous run (inner == 1),
 * and across rows (inner > 1) in blocks of 128 rows whose partial sums are then added. Before the
 * final rounding the error is below (log2(red) + 2), resp. (130 + red / 128), float64 ulps of
 * sum |x|: a float32 sum is within one float32 ulp of the exact sum (plus that error, which only
 * matters when the sum cancels to below ~1e-7 of sum |x|), and float64 sums are at least as
 * accurate as numpy's (pairwise along the last axis, sequential across rows). int64 wraps; bool
 * counts (y is int64, as ops.py's sum of bool). An empty sum (red == 0) is 0.
 * MAX: any dtype, y of the same dtype; NaN propagates (np.max); bool is 'any'. red must be > 0
 * unless outer * inner == 0 (FC_ERR_SIZE otherwise, like numpy). */
FC_API int fc_reduce(int dtype, int op, int64_t outer, int64_t red, int64_t inner, const void* x, void* y);
/* fc_reduce over x whose rows (of inner elements) are ld >= inner elements apart: element
 * (o, r, j) at x[(o * red + r) * ld + j] (a column block of a wider matrix). */
FC_API int fc_reduce_ld(int dtype, int op, int64_t outer, int64_t red, int64_t inner, int64_t ld, const void* x,
                        void* y);

/* ------------------------------------------------------------------------------------------
 * Indexing. Every index is checked before anything is written: one outside [0, rows) (or
 * [0, classes)) gives FC_ERR_INDEX and leaves `out` untouched.
 * ------------------------------------------------------------------------------------------ */

/* out[i, :] = table[idx[i], :] for i < n_idx; table (rows, row_len), out (n_idx, row_len), both
 * contiguous, any dtype. */
FC_API int fc_gather(int dtype, int64_t n_idx, const int64_t* idx, int64_t rows, int64_t row_len,
                     const void* table, void* out);

/* out = zeros(rows, row_len), then out[idx[i], :] += src[i, :] for i = 0, 1, ..., n_idx - 1 in
 * this order (so float sums are deterministic and equal np.add.at's); src (n_idx, row_len).
 * float32, float64, int64 (wrapping). */
FC_API int fc_scatter_add(int dtype, int64_t n_idx, const int64_t* idx, int64_t rows, int64_t row_len,
                          const void* src, void* out);

/* out[i, k] = (labels[i] == k) for i < n, k < classes, in any dtype (1 / 0); out (n, classes). */
FC_API int fc_one_hot(int dtype, int64_t n, const int64_t* labels, int64_t classes, void* out);

/* ------------------------------------------------------------------------------------------
 * Sliding windows: the primitives unfold (im2col) and fold (col2im) of ops.py, same layout.
 * nd spatial axes (1 or 2); per axis d: kernel[d], stride[d], dilation[d] >= 1, pad_lo[d],
 * pad_hi[d] >= 0, and the output length
 *     out[d] = (spatial[d] + pad_lo[d] + pad_hi[d] - dilation[d] * (kernel[d] - 1) - 1) / stride[d] + 1
 * needs a non-negative numerator (FC_ERR_SIZE otherwise). Window position o, tap k reads spatial
 * index o * stride + k * dilation - pad_lo, which may fall in the padding.
 * ------------------------------------------------------------------------------------------ */

/* x (n, c, *spatial) -> cols (n, c, *out, *kernel), both contiguous; padding positions read
 * pad_value (converted as fc_fill does). Any dtype. */
FC_API int fc_unfold(int dtype, int nd, int64_t n, int64_t c, const int64_t* spatial, const int64_t* kernel,
                     const int64_t* stride, const int64_t* pad_lo, const int64_t* pad_hi, const int64_t* dilation,
                     double pad_value, const void* x, void* cols);

/* The adjoint: x = zeros(n, c, *spatial), then every window element of cols (n, c, *out,
 * *kernel) that falls inside the image is added to the position it was read from, in row-major
 * order of cols (deterministic; np.add.at's order); padding positions are dropped.
 * float32, float64, int64. */
FC_API int fc_fold(int dtype, int nd, int64_t n, int64_t c, const int64_t* spatial, const int64_t* kernel,
                   const int64_t* stride, const int64_t* pad_lo, const int64_t* pad_hi, const int64_t* dilation,
                   const void* cols, void* x);

/* ------------------------------------------------------------------------------------------
 * Fused elementwise programs (vertical fusion)
 *
 * out (n elements, row-major, last axis of length cols) = a straight-line program evaluated at
 * every element, in `dtype` (float32 or float64):
 *  - registers 0 .. n_inputs-1 hold the inputs; inputs[j] is read per input_modes[j] (an
 *    fc_fused_mode) and must have input_lens[j] elements: n (FULL), 1 (SCALAR), cols (ROW),
 *    n / cols (COL); for STRIDED, input_lens[j] is the row stride (>= cols), and the input must
 *    not overlap out. cols >= 1 and n % cols == 0 are required when n > 0 (cols is not read when
 *    n == 0);
 *  - instruction k (0 <= k < n_instr) is the four int32 code[4k .. 4k+3] = (opcode, a, b, c) with
 *    opcode an fc_ew_code; it writes register n_inputs + k, and its register operands must name
 *    earlier registers (0 <= a, b, c < n_inputs + k where used). CONST reads consts[a],
 *    0 <= a < n_consts;
 *  - out = the register of the last instruction (n_instr >= 1).
 * Each instruction computes exactly what the unfused kernel computes (the same ew_math.h
 * function, in the same dtype), so a fused program equals the chain of unfused kernels bit for
 * bit; comparisons and WHERE produce / read 1.0 and 0.0 in place of bool.
 * Example, out = sigmoid(x + bias_row) * 2.0 with x FULL and bias ROW:
 *     inputs {x, bias}, modes {0, 2}, consts {2.0},
 *     code {FC_EW_ADD,0,1,0,  FC_EW_SIGMOID,2,0,0,  FC_EW_CONST,0,0,0,  FC_EW_MUL,3,4,0}
 * The program is checked before anything runs (opcode range, operand registers, modes, lengths;
 * n_inputs <= FC_FUSED_MAX_INPUTS, 1 <= n_instr <= FC_FUSED_MAX_INSTR): FC_ERR_OP for an unknown
 * opcode or mode, FC_ERR_INDEX for an operand register or const index out of range, FC_ERR_SIZE
 * for counts and lengths, FC_ERR_OVERLAP for a STRIDED input overlapping out. It runs over blocks of up to 256 elements, one tight loop per
 * instruction per block, with registers in a fixed 32 KiB stack workspace, a register's space
 * being reused once its value is dead (many live values shorten the block, down to 32).
 * out may alias a FULL input exactly. Inputs of no instruction are not read.
 * ------------------------------------------------------------------------------------------ */
FC_API int fc_fused_ew(int dtype, int n_inputs, const void* const* inputs, const int32_t* input_modes,
                       const int64_t* input_lens, int64_t n, int64_t cols, int n_instr, const int32_t* code,
                       int n_consts, const double* consts, void* out);
/* fc_fused_ew writing the n / cols rows of out out_ld (>= cols) elements apart: out is a column
 * block of a wider matrix (the span is (rows - 1) * out_ld + cols elements). With out_ld != cols
 * no FULL input may overlap that span (FC_ERR_OVERLAP). fc_fused_ew is out_ld == cols. */
FC_API int fc_fused_ew_ld(int dtype, int n_inputs, const void* const* inputs, const int32_t* input_modes,
                          const int64_t* input_lens, int64_t n, int64_t cols, int n_instr, const int32_t* code,
                          int n_consts, const double* consts, void* out, int64_t out_ld);

/* ------------------------------------------------------------------------------------------
 * Softmax over the last axis
 * ------------------------------------------------------------------------------------------ */

/* For each row r of x (rows, cols), contiguous, float32/float64:
 *   log == 0: y = exp(x - max) / sum(exp(x - max))
 *   log != 0: y = (x - max) - log(sum(exp(x - max)))
 * with max the row maximum (NaN propagates: a row with a NaN is all NaN) and the sum accumulated
 * in float64, pairwise as fc_reduce's (relative error about (log2(cols) + cols / 256) float64
 * ulps), so each result is within a few ulps of its dtype. y may alias x exactly. */
FC_API int fc_softmax_rows(int dtype, int log, int64_t rows, int64_t cols, const void* x, void* y);

#ifdef __cplusplus
}
#endif

#endif /* FLEXCORE_KERNELS_H */
