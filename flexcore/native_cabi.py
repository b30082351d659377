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

__all__ = ["CDEF", "NativeError", "call_unary", "ffi", "lib"]

CDEF = """
typedef enum fc_status {
    FC_OK = 0,
    FC_ERR_NULL = -1,
    FC_ERR_SIZE = -2,
    FC_ERR_OP = -3
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
    FC_UNARY_COUNT = 10
} fc_unary_op;

typedef enum fc_binary_op {
    FC_BINARY_ADD = 0,
    FC_BINARY_SUB = 1,
    FC_BINARY_MUL = 2,
    FC_BINARY_DIV = 3,
    FC_BINARY_MAXIMUM = 4,
    FC_BINARY_MINIMUM = 5,
    FC_BINARY_COUNT = 6
} fc_binary_op;

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

ffi = FFI()
ffi.cdef(CDEF)

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
