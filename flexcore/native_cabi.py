"""The raw C ABI of libflexcore through cffi (ABI mode: no compiler needed at run time).

This is the path an embedding program takes, reached from Python: the same exported functions a C
program calls, with status codes instead of exceptions. ``CDEF`` mirrors
``csrc/include/flexcore/flexcore.h``; ``tests/native/test_cabi.py`` fails when they drift apart.

    from flexcore import native_cabi
    y = native_cabi.call_unary("exp", np.arange(4.0))
"""

from __future__ import annotations

import functools

import numpy as np
from cffi import FFI

from flexcore import _native

__all__ = [
    "CDEF",
    "CONV_CDEF",
    "RNN_CDEF",
    "EXECUTOR_CDEF",
    "GEMM_CDEF",
    "KERNELS_CDEF",
    "NativeError",
    "call_unary",
    "ffi",
    "lib",
]

CDEF = """
typedef enum fc_status {
    FC_OK = 0,
    FC_ERR_NULL = -1,
    FC_ERR_SIZE = -2,
    FC_ERR_OP = -3,
    FC_ERR_PROGRAM = -4,
    FC_ERR_CALLBACK = -5,
    FC_ERR_NOMEM = -6,
    FC_ERR_BUSY = -7,
    FC_ERR_OVERLAP = -8,
    FC_ERR_ALIGN = -9,
    FC_ERR_INDEX = -10,
    FC_ERR_DTYPE = -11
} fc_status;

typedef enum fc_unary_op {
    FC_UNARY_NEG = 0,
    FC_UNARY_EXP = 1,
    FC_UNARY_LOG = 2,
    FC_UNARY_LOG1P = 3,
    FC_UNARY_SQRT = 4,
    FC_UNARY_ABS = 5,
    FC_UNARY_SIGMOID = 6,
    FC_UNARY_TANH = 7,
    FC_UNARY_ARCTAN = 8,
    FC_UNARY_RELU = 9,
    FC_UNARY_SIGN = 10,
    FC_UNARY_STEP = 11,
    FC_UNARY_COUNT = 12
} fc_unary_op;

typedef enum fc_binary_op {
    FC_BINARY_ADD = 0,
    FC_BINARY_SUB = 1,
    FC_BINARY_MUL = 2,
    FC_BINARY_DIV = 3,
    FC_BINARY_MAXIMUM = 4,
    FC_BINARY_MINIMUM = 5,
    FC_BINARY_POW = 6,
    FC_BINARY_COUNT = 7
} fc_binary_op;

typedef enum fc_act {
    FC_ACT_NONE = 0,
    FC_ACT_RELU = 1,
    FC_ACT_SIGMOID = 2,
    FC_ACT_TANH = 3,
    FC_ACT_COUNT = 4
} fc_act;

const char* fc_version(void);
const char* fc_strerror(int status);
const char* fc_cpu_isa(void);
int fc_unary_f32(int op, const float* x, float* y, int64_t n);
int fc_unary_f64(int op, const double* x, double* y, int64_t n);
int fc_binary_f32(int op, const float* a, const float* b, float* y, int64_t n);
int fc_binary_f64(int op, const double* a, const double* b, double* y, int64_t n);
int fc_philox_uniform_f32(uint64_t seed, uint64_t salt, int64_t offset, float* out, int64_t n);
int fc_philox_uniform_f64(uint64_t seed, uint64_t salt, int64_t offset, double* out, int64_t n);
"""

# csrc/include/flexcore/kernels.h, the generic kernels (one string per header, each checked
# against its header by tests/native/test_cabi.py).
KERNELS_CDEF = """
typedef enum fc_dtype {
    FC_F32 = 0,
    FC_F64 = 1,
    FC_I64 = 2,
    FC_BOOL = 3,
    FC_DTYPE_COUNT = 4
} fc_dtype;

typedef enum fc_kernel_limit {
    FC_MAX_NDIM = 8,
    FC_FUSED_MAX_INPUTS = 64,
    FC_FUSED_MAX_INSTR = 64
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

typedef enum fc_fused_mode {
    FC_IN_FULL = 0,
    FC_IN_SCALAR = 1,
    FC_IN_ROW = 2,
    FC_IN_COL = 3,
    FC_IN_STRIDED = 4,
    FC_IN_MODE_COUNT = 5
} fc_fused_mode;

typedef enum fc_ew_code {
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
    FC_EW_ADD = 12,
    FC_EW_SUB = 13,
    FC_EW_MUL = 14,
    FC_EW_DIV = 15,
    FC_EW_POW = 16,
    FC_EW_MAX = 17,
    FC_EW_MIN = 18,
    FC_EW_GT = 19,
    FC_EW_GE = 20,
    FC_EW_LT = 21,
    FC_EW_LE = 22,
    FC_EW_EQ = 23,
    FC_EW_NE = 24,
    FC_EW_WHERE = 25,
    FC_EW_CONST = 26,
    FC_EW_CODE_COUNT = 27
} fc_ew_code;

int fc_ew_unary(int dtype, int op, int64_t n, const void* x, void* y);
int fc_ew_binary(int dtype, int op, int ndim, const int64_t* shape, const void* a, const int64_t* sa,
                 const void* b, const int64_t* sb, void* y);
int fc_ew_compare(int dtype, int op, int ndim, const int64_t* shape, const void* a, const int64_t* sa,
                  const void* b, const int64_t* sb, void* y);
int fc_ew_where(int dtype, int ndim, const int64_t* shape, const void* cond, const int64_t* sc,
                const void* a, const int64_t* sa, const void* b, const int64_t* sb, void* y);
int fc_cast(int src_dtype, int dst_dtype, int64_t n, const void* x, void* y);
int fc_copy_strided(int elem_bytes, int ndim, const int64_t* shape, const void* src,
                    const int64_t* src_strides, void* dst, const int64_t* dst_strides);
int fc_fill(int dtype, int64_t n, double value, void* dst);
int fc_reduce(int dtype, int op, int64_t outer, int64_t red, int64_t inner, const void* x, void* y);
int fc_reduce_ld(int dtype, int op, int64_t outer, int64_t red, int64_t inner, int64_t ld, const void* x,
                 void* y);
int fc_gather(int dtype, int64_t n_idx, const int64_t* idx, int64_t rows, int64_t row_len,
              const void* table, void* out);
int fc_scatter_add(int dtype, int64_t n_idx, const int64_t* idx, int64_t rows, int64_t row_len,
                   const void* src, void* out);
int fc_one_hot(int dtype, int64_t n, const int64_t* labels, int64_t classes, void* out);
int fc_unfold(int dtype, int nd, int64_t n, int64_t c, const int64_t* spatial, const int64_t* kernel,
              const int64_t* stride, const int64_t* pad_lo, const int64_t* pad_hi, const int64_t* dilation,
              double pad_value, const void* x, void* cols);
int fc_fold(int dtype, int nd, int64_t n, int64_t c, const int64_t* spatial, const int64_t* kernel,
            const int64_t* stride, const int64_t* pad_lo, const int64_t* pad_hi, const int64_t* dilation,
            const void* cols, void* x);
int fc_fused_ew(int dtype, int n_inputs, const void* const* inputs, const int32_t* input_modes,
                const int64_t* input_lens, int64_t n, int64_t cols, int n_instr, const int32_t* code,
                int n_consts, const double* consts, void* out);
int fc_fused_ew_ld(int dtype, int n_inputs, const void* const* inputs, const int32_t* input_modes,
                   const int64_t* input_lens, int64_t n, int64_t cols, int n_instr, const int32_t* code,
                   int n_consts, const double* consts, void* out, int64_t out_ld);
int fc_softmax_rows(int dtype, int log, int64_t rows, int64_t cols, const void* x, void* y);
"""

# csrc/include/flexcore/gemm.h, matrix products (its fc_act enum is in flexcore.h's CDEF) and
# pre-packed operands.
GEMM_CDEF = """
int fc_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
             int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
int fc_dgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
             int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc);
int fc_sgemm_batched(int trans_a, int trans_b, int64_t batch, int64_t m, int64_t n, int64_t k,
                     float alpha, const float* a, int64_t lda, int64_t stride_a, const float* b,
                     int64_t ldb, int64_t stride_b, float beta, float* c, int64_t ldc,
                     int64_t stride_c);
int fc_dgemm_batched(int trans_a, int trans_b, int64_t batch, int64_t m, int64_t n, int64_t k,
                     double alpha, const double* a, int64_t lda, int64_t stride_a, const double* b,
                     int64_t ldb, int64_t stride_b, double beta, double* c, int64_t ldc,
                     int64_t stride_c);
int fc_sgemm_ex(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                int64_t ldc, const float* bias, int act);
int fc_dgemm_ex(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                const double* a, int64_t lda, const double* b, int64_t ldb, double beta, double* c,
                int64_t ldc, const double* bias, int act);
typedef enum fc_gemm_packing {
    FC_GEMM_OPERAND_A = 0,
    FC_GEMM_OPERAND_B = 1,
    FC_GEMM_PACKED = 2
} fc_gemm_packing;
int fc_gemm_packed_bytes(int dtype, int operand, int64_t rows, int64_t cols, int64_t* bytes);
int fc_sgemm_pack(int operand, int trans, int64_t rows, int64_t cols, const float* x,
                  int64_t ldx, void* packed, int64_t packed_bytes);
int fc_dgemm_pack(int operand, int trans, int64_t rows, int64_t cols, const double* x,
                  int64_t ldx, void* packed, int64_t packed_bytes);
int fc_sgemm_packed(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                    const void* a, int64_t lda, const void* b, int64_t ldb, float beta,
                    float* c, int64_t ldc, const float* bias, int act);
int fc_dgemm_packed(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, double alpha,
                    const void* a, int64_t lda, const void* b, int64_t ldb, double beta,
                    double* c, int64_t ldc, const double* bias, int act);
int fc_set_num_threads(int n);
int fc_get_num_threads(void);
"""

# csrc/include/flexcore/executor.h, the plan executor.
# csrc/include/flexcore/rnn.h, the fused LSTM cell.
RNN_CDEF = """
int fc_lstm_cell_fwd_f32(int64_t n, int64_t h, const float* a, int64_t lda, const float* b, int64_t ldb,
                         const float* bias, const float* c_prev, const int64_t* order, float* out);
int fc_lstm_cell_fwd_f64(int64_t n, int64_t h, const double* a, int64_t lda, const double* b, int64_t ldb,
                         const double* bias, const double* c_prev, const int64_t* order, double* out);
int fc_lstm_cell_bwd_f32(int64_t n, int64_t h, const float* fwd, const float* c_prev, const float* dh,
                         const float* dc, const int64_t* order, float* dgates, float* dc_prev);
int fc_lstm_cell_bwd_f64(int64_t n, int64_t h, const double* fwd, const double* c_prev, const double* dh,
                         const double* dc, const int64_t* order, double* dgates, double* dc_prev);
int fc_gru_cell_fwd_f32(int64_t n, int64_t h, const float* x, int64_t ldx, const float* hh, int64_t ldh,
                        const float* bias, const float* h_prev, const int64_t* xorder, const int64_t* horder,
                        float* out);
int fc_gru_cell_fwd_f64(int64_t n, int64_t h, const double* x, int64_t ldx, const double* hh, int64_t ldh,
                        const double* bias, const double* h_prev, const int64_t* xorder, const int64_t* horder,
                        double* out);
int fc_gru_cell_bwd_f32(int64_t n, int64_t h, const float* fwd, const float* h_prev, const float* dh,
                        const int64_t* xorder, const int64_t* horder, float* dx, float* dhh, float* dh_prev);
int fc_gru_cell_bwd_f64(int64_t n, int64_t h, const double* fwd, const double* h_prev, const double* dh,
                        const int64_t* xorder, const int64_t* horder, double* dx, double* dhh, double* dh_prev);
"""

# csrc/include/flexcore/conv.h, the convolution kernels.
CONV_CDEF = """
typedef enum fc_conv_mode {
    FC_CONV_FORWARD = 0,
    FC_CONV_BACKWARD_DATA = 1,
    FC_CONV_BACKWARD_WEIGHT = 2,
    FC_CONV_MODE_COUNT = 3
} fc_conv_mode;
typedef struct fc_conv_geom {
    int64_t n, c, o, groups;
    int64_t h, w;
    int64_t kh, kw;
    int64_t sh, sw;
    int64_t ph_lo, pw_lo, ph_hi, pw_hi;
    int64_t dh, dw;
} fc_conv_geom;
int fc_conv_sizes(int dtype, int mode, const fc_conv_geom* g, int64_t slots, int64_t* a_count,
                  int64_t* b_count, int64_t* out_count, int64_t* scratch_bytes);
int fc_conv(int dtype, int mode, const fc_conv_geom* g, int64_t slots, const void* a, const void* b,
            void* out, void* scratch);
int fc_conv_ex(int dtype, int mode, const fc_conv_geom* g, int64_t slots, const void* a, const void* b,
               const void* bias, int act, void* out, void* scratch);
typedef enum fc_pool_mode {
    FC_POOL_MAX = 0,
    FC_POOL_TIES = 1,
    FC_POOL_BACKWARD = 2,
    FC_POOL_SUM = 3,
    FC_POOL_SPREAD = 4,
    FC_POOL_GRAD = 5,
    FC_POOL_GRAD_RELU = 6,
    FC_POOL_MODE_COUNT = 7
} fc_pool_mode;
typedef struct fc_pool_geom {
    int64_t n, c;
    int64_t h, w;
    int64_t kh, kw;
    int64_t sh, sw;
    int64_t ph_lo, pw_lo, ph_hi, pw_hi;
} fc_pool_geom;
int fc_pool_sizes(const fc_pool_geom* g, int64_t* image_count, int64_t* out_count);
int fc_pool(int dtype, int mode, const fc_pool_geom* g, const void* a, const void* b, const void* c,
                void* out);
"""

EXECUTOR_CDEF = """
typedef enum fc_buffer_kind {
    FC_BUF_INPUT = 0,
    FC_BUF_PARAM = 1,
    FC_BUF_CONST = 2,
    FC_BUF_ARENA = 3,
    FC_BUF_ALIAS = 4,
    FC_BUF_OUTPUT = 5,
    FC_BUF_KIND_COUNT = 6
} fc_buffer_kind;

typedef enum fc_program_layout {
    FC_BUFFER_FIELDS = 4,
    FC_INSTR_HEADER = 5
} fc_program_layout;

typedef enum fc_opcode {
    FC_OPC_CALLBACK = 0,
    FC_OPC_COPY = 1,
    FC_OPC_FILL = 2,
    FC_OPC_COPY_STRIDED = 3,
    FC_OPC_UNARY = 4,
    FC_OPC_BINARY = 5,
    FC_OPC_COMPARE = 6,
    FC_OPC_WHERE = 7,
    FC_OPC_CAST = 8,
    FC_OPC_GEMM = 9,
    FC_OPC_REDUCE = 10,
    FC_OPC_SOFTMAX = 11,
    FC_OPC_GATHER = 12,
    FC_OPC_SCATTER_ADD = 13,
    FC_OPC_ONE_HOT = 14,
    FC_OPC_UNFOLD = 15,
    FC_OPC_FOLD = 16,
    FC_OPC_FUSED_EW = 17,
    FC_OPC_PHILOX = 18,
    FC_OPC_CONV = 19,
    FC_OPC_POOL = 20,
    FC_OPC_LSTM_CELL = 21,
    FC_OPC_GRU_CELL = 22,
    FC_OPC_GEMM_PACK = 23,
    FC_OPC_COUNT = 24
} fc_opcode;

typedef struct fc_program fc_program;
typedef int (*fc_host_callback)(void* user, int64_t index, void* const* buffers);

int fc_program_create(const int64_t* buffers, int64_t n_buffers, const void* const* consts,
                      int64_t n_consts, int64_t n_inputs, int64_t n_params, int64_t n_outputs,
                      const int64_t* code, int64_t code_len, const double* fimm, int64_t fimm_len,
                      fc_program** out);
int fc_program_run(fc_program* prog, void* const* inputs, void* const* params,
                   void* const* outputs, fc_host_callback cb, void* user);
int fc_program_destroy(fc_program* prog);
int fc_program_arena_bytes(const fc_program* prog, int64_t* bytes);
int fc_program_failed_instruction(const fc_program* prog, int64_t* index);
int fc_program_instruction_count(const fc_program* prog, int64_t* n);
int fc_program_set_profiling(fc_program* prog, int on);
int fc_program_profile(fc_program* prog, double* seconds, int64_t n, int64_t* runs);
"""

ffi = FFI()
ffi.cdef(CDEF)
ffi.cdef(KERNELS_CDEF)
ffi.cdef(GEMM_CDEF)
ffi.cdef(EXECUTOR_CDEF)
ffi.cdef(CONV_CDEF)
ffi.cdef(RNN_CDEF)

_C_TYPES = {np.dtype(np.float32): ("float", "f32"), np.dtype(np.float64): ("double", "f64")}


class NativeError(RuntimeError):
    """A libflexcore function returned an error status."""

    def __init__(self, status: int) -> None:
        super().__init__(
            f"libflexcore status {status}: {ffi.string(lib().fc_strerror(status)).decode()}"
        )
        self.status = status


@functools.cache
def lib():
    """The opened libflexcore (opened on first use)."""
    path = _native.lib_path()
    if path is None:
        raise ImportError(
            "libflexcore.so is not in the flexcore package: the native part was not built "
            "(install with `pip install .` or `pip install -e .`, without FLEXCORE_NO_NATIVE=1)"
        )
    return ffi.dlopen(path)


# "FC_UNARY_SIGMOID" -> "sigmoid", from the cdef itself; the count sentinel is not an op.
_UNARY_CODES = {
    name.removeprefix("FC_UNARY_").lower(): code
    for name, code in ffi.typeof("fc_unary_op").relements.items()
    if name != "FC_UNARY_COUNT"
}


def call_unary(op_name: str, x: np.ndarray) -> np.ndarray:
    """``op_name(x)`` elementwise through the C ABI; x a C-contiguous float32/float64 array."""
    if op_name not in _UNARY_CODES:
        raise ValueError(f"unknown unary op {op_name!r}; valid: {', '.join(sorted(_UNARY_CODES))}")
    if not isinstance(x, np.ndarray):
        raise TypeError(f"argument 'x' must be a numpy.ndarray, not {type(x).__name__}")
    if x.dtype not in _C_TYPES:
        raise ValueError(f"argument 'x' has dtype {x.dtype}; expected native float32 or float64")
    if not x.flags.c_contiguous:
        raise ValueError("argument 'x' must be C-contiguous")
    c_type, suffix = _C_TYPES[x.dtype]
    y = np.empty_like(x)
    kernel = getattr(lib(), f"fc_unary_{suffix}")
    status = kernel(
        _UNARY_CODES[op_name],
        ffi.from_buffer(f"{c_type}[]", x),
        ffi.from_buffer(f"{c_type}[]", y, require_writable=True),
        x.size,
    )
    if status != 0:
        raise NativeError(status)
    return y
