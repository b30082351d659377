/* flexcore C ABI: the functions libflexcore exports to C programs, cffi and the pybind11 module.
 *
 * Conventions, for every function here:
 *  - the return value is a status: FC_OK (0) or a negative fc_status; fc_strerror() names it;
 *  - arguments are checked at this edge: NULL pointers, negative sizes and unknown op codes are
 *    reported, never undefined behaviour; a pointer may be NULL only when its length n is 0;
 *  - arrays are dense and of length n; an output may alias an input exactly (in-place), but
 *    partially overlapping arrays give unspecified values;
 *  - enum values are part of the ABI: new entries are appended, existing ones never renumbered.
 *
 * flexcore/native_cabi.py keeps a cffi cdef of this file; tests/native/test_cabi.py checks that the
 * two agree, so change both together. */
#ifndef FLEXCORE_FLEXCORE_H
#define FLEXCORE_FLEXCORE_H

#include <stdint.h>

#if defined(FLEXCORE_BUILDING) && (defined(__GNUC__) || defined(__clang__))
#define FC_API __attribute__((visibility("default")))
#else
#define FC_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fc_status {
    FC_OK = 0,
    FC_ERR_NULL = -1,   /* a required pointer is NULL */
    FC_ERR_SIZE = -2,   /* a length or offset is negative or out of range */
    FC_ERR_OP = -3,     /* unknown op code */
    FC_ERR_PROGRAM = -4,  /* malformed executor program (buffer, instruction or access out of range) */
    FC_ERR_CALLBACK = -5, /* a host callback of the executor reported an error */
    FC_ERR_NOMEM = -6,    /* memory allocation failed */
    FC_ERR_BUSY = -7,     /* the program is already running (runs of one program do not nest) */
    FC_ERR_OVERLAP = -8,  /* an output buffer overlaps another buffer of the call */
    FC_ERR_ALIGN = -9,    /* a pointer is not aligned for its element type */
    FC_ERR_INDEX = -10,   /* an index value (gather, scatter, one-hot, program register) is out of range */
    FC_ERR_DTYPE = -11    /* unknown dtype code, or a dtype the operation does not support */
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
    FC_UNARY_SIGN = 10, /* np.sign: -1, 0 (for +-0) or 1; NaN stays NaN */
    FC_UNARY_STEP = 11, /* x > 0 ? 1 : 0 (NaN gives 0) */
    FC_UNARY_COUNT = 12
} fc_unary_op;

typedef enum fc_binary_op {
    FC_BINARY_ADD = 0,
    FC_BINARY_SUB = 1,
    FC_BINARY_MUL = 2,
    FC_BINARY_DIV = 3,
    FC_BINARY_MAXIMUM = 4,
    FC_BINARY_MINIMUM = 5,
    FC_BINARY_POW = 6, /* C pow(), as np.power */
    FC_BINARY_COUNT = 7
} fc_binary_op;

/* Activation fused into a GEMM's epilogue (fc_sgemm_ex): the math of the unary op of that name. */
typedef enum fc_act {
    FC_ACT_NONE = 0,
    FC_ACT_RELU = 1,
    FC_ACT_SIGMOID = 2,
    FC_ACT_TANH = 3,
    FC_ACT_COUNT = 4
} fc_act;

/* Library version, "MAJOR.MINOR.PATCH"; equals the Python package version. */
FC_API const char* fc_version(void);

/* Static text for a status code ("unknown status" for codes not in fc_status). */
FC_API const char* fc_strerror(int status);

/* Instruction set the kernels dispatch to: "avx512", "avx2" or "scalar". Detected once per
 * process; the environment variable FLEXCORE_ISA=scalar|avx2|avx512 lowers it, but never raises it
 * above what the CPU supports (asking for more reports what the CPU has). */
FC_API const char* fc_cpu_isa(void);

/* y[i] = op(x[i]) for i < n. */
FC_API int fc_unary_f32(int op, const float* x, float* y, int64_t n);
FC_API int fc_unary_f64(int op, const double* x, double* y, int64_t n);

/* y[i] = op(a[i], b[i]) for i < n. */
FC_API int fc_binary_f32(int op, const float* a, const float* b, float* y, int64_t n);
FC_API int fc_binary_f64(int op, const double* a, const double* b, double* y, int64_t n);

/* out[i] = uniform in [0, 1) for the global element index j = offset + i, from Philox4x32-10 with
 * key = (seed_lo, seed_hi) and counter = (j_lo, j_hi, salt_lo, salt_hi); see philox.h for the exact
 * bits. Requires offset >= 0 and offset + n <= INT64_MAX. */
FC_API int fc_philox_uniform_f32(uint64_t seed, uint64_t salt, int64_t offset, float* out, int64_t n);
FC_API int fc_philox_uniform_f64(uint64_t seed, uint64_t salt, int64_t offset, double* out, int64_t n);

#ifdef __cplusplus
}
#endif

/* The generic kernels (elementwise with broadcasting, reductions, indexing, windows, fused
 * programs) have their own header, included here so one include gives the whole kernel ABI. */
#include "flexcore/kernels.h"
/* Matrix products (GEMM), likewise. */
#include "flexcore/gemm.h"

#endif /* FLEXCORE_FLEXCORE_H */
