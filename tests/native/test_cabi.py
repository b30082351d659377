"""The raw C ABI through cffi: the cdef agrees with the header, kernels run, errors come back as
status codes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from flexcore import _native, native_cabi
from flexcore.native_cabi import CDEF, CONV_CDEF, EXECUTOR_CDEF, GEMM_CDEF, KERNELS_CDEF, RNN_CDEF, ffi

INCLUDE = Path(__file__).resolve().parents[2] / "csrc" / "include" / "flexcore"
HEADER = INCLUDE / "flexcore.h"
# Each public header of the kernel ABI and the cdef string that mirrors it.
HEADERS_AND_CDEFS = [
    (HEADER, CDEF),
    (INCLUDE / "kernels.h", KERNELS_CDEF),
    (INCLUDE / "gemm.h", GEMM_CDEF),
    (INCLUDE / "executor.h", EXECUTOR_CDEF),
    (INCLUDE / "conv.h", CONV_CDEF),
    (INCLUDE / "rnn.h", RNN_CDEF),
]
# rnn.h declares no enum of its own (fc_act is in flexcore.h).
HEADERS_WITH_ENUMS = [(h, c) for h, c in HEADERS_AND_CDEFS if h.name != "rnn.h"]


def _normalise(declaration: str) -> str:
    return re.sub(r"\s+", " ", declaration).replace("( ", "(").strip()


def header_functions(header: Path = HEADER) -> set[str]:
    """Every exported prototype of the header, as 'ret name(args);' on one line."""
    text = re.sub(r"/\*.*?\*/", "", header.read_text(), flags=re.DOTALL)
    text = re.sub(r"^\s*#.*$", "", text, flags=re.MULTILINE)  # FC_API's own #define
    return {_normalise(m) for m in re.findall(r"FC_API\s+([^;]*;)", text)}


def header_constants(header: Path = HEADER) -> dict[str, int]:
    return {
        name: int(value)
        for name, value in re.findall(r"\b(FC_\w+)\s*=\s*(-?\d+)", header.read_text())
    }


def header_enums(header: Path) -> list[str]:
    return re.findall(r"typedef enum (\w+)", header.read_text())


@pytest.fixture
def lib(native):
    return native_cabi.lib()


@pytest.mark.parametrize(("header", "cdef"), HEADERS_AND_CDEFS, ids=lambda v: getattr(v, "name", ""))
def test_cdef_declares_every_header_function(header, cdef):
    cdef_functions = {
        _normalise(m) for m in re.findall(r"^[^\n]*\bfc_\w+\([^;]*;", cdef, re.MULTILINE)
    }
    assert header_functions(header), "no FC_API prototypes found in the header"
    assert cdef_functions == header_functions(header)


@pytest.mark.parametrize(("header", "cdef"), HEADERS_WITH_ENUMS, ids=lambda v: getattr(v, "name", ""))
def test_cdef_enums_match_header(header, cdef):
    """Every enum of the header (found by `typedef enum`) has the same constants in the cdef."""
    assert header_enums(header), "no enums found in the header"
    cdef_constants = {}
    for enum in header_enums(header):
        cdef_constants.update(ffi.typeof(enum).relements)
    assert cdef_constants == header_constants(header)


def test_library_exports_every_function(lib):
    for prototype in set().union(*(header_functions(h) for h, _ in HEADERS_AND_CDEFS)):
        name = re.search(r"(fc_\w+)\(", prototype).group(1)
        assert callable(getattr(lib, name)), name


def test_identity(lib, native):
    assert ffi.string(lib.fc_version()).decode() == native.version()
    assert ffi.string(lib.fc_cpu_isa()).decode() == native.cpu_isa()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_call_unary_equals_pybind(native, dtype):
    x = np.linspace(-3, 3, 101).astype(dtype)
    for op in native.UNARY_OPS:
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(native_cabi.call_unary(op, x), native.unary(op, x))


def test_call_unary_empty_and_shaped(native):
    assert native_cabi.call_unary("exp", np.empty(0, np.float32)).shape == (0,)
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    np.testing.assert_array_equal(native_cabi.call_unary("sqrt", x), np.sqrt(x))


def test_call_unary_rejects_bad_input(native):
    with pytest.raises(ValueError, match="unknown unary op 'cube'"):
        native_cabi.call_unary("cube", np.ones(3))
    with pytest.raises(ValueError, match="C-contiguous"):
        native_cabi.call_unary("exp", np.ones((3, 3))[:, 0])
    with pytest.raises(ValueError, match="dtype"):
        native_cabi.call_unary("exp", np.ones(3, np.int32))


def test_errors_are_status_codes(lib):
    y = np.zeros(4, np.float32)
    x = np.ones(4, np.float32)
    xp, yp = ffi.from_buffer("float[]", x), ffi.from_buffer("float[]", y)
    assert lib.fc_unary_f32(lib.FC_UNARY_EXP, ffi.NULL, yp, 4) == lib.FC_ERR_NULL
    assert lib.fc_unary_f32(lib.FC_UNARY_EXP, xp, ffi.NULL, 4) == lib.FC_ERR_NULL
    assert lib.fc_unary_f32(lib.FC_UNARY_EXP, xp, yp, -1) == lib.FC_ERR_SIZE
    assert lib.fc_unary_f32(lib.FC_UNARY_COUNT, xp, yp, 4) == lib.FC_ERR_OP
    assert lib.fc_binary_f32(lib.FC_BINARY_ADD, xp, ffi.NULL, yp, 4) == lib.FC_ERR_NULL
    assert lib.fc_binary_f32(lib.FC_BINARY_ADD, xp, xp, yp, -5) == lib.FC_ERR_SIZE
    assert lib.fc_philox_uniform_f32(1, 2, -1, yp, 4) == lib.FC_ERR_SIZE
    assert lib.fc_philox_uniform_f32(1, 2, 0, ffi.NULL, 4) == lib.FC_ERR_NULL
    assert (y == 0).all()  # nothing was written by the failed calls
    assert lib.fc_unary_f32(lib.FC_UNARY_NEG, ffi.NULL, ffi.NULL, 0) == lib.FC_OK
    assert ffi.string(lib.fc_strerror(lib.FC_ERR_SIZE)).decode().startswith("a length")
    with pytest.raises(native_cabi.NativeError, match="status -1"):
        raise native_cabi.NativeError(lib.FC_ERR_NULL)


def test_philox_through_cabi(lib, native):
    out = np.empty(100, np.float64)
    assert lib.fc_philox_uniform_f64(3, 4, 10, ffi.from_buffer("double[]", out), 100) == lib.FC_OK
    np.testing.assert_array_equal(out, native.philox_uniform(3, 4, 10, 100, np.float64))


def test_missing_library_is_a_clear_import_error(monkeypatch):
    monkeypatch.setattr(_native, "lib_path", lambda: None)
    native_cabi.lib.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"libflexcore\.so is not in the flexcore package"):
            native_cabi.lib()
    finally:
        native_cabi.lib.cache_clear()
