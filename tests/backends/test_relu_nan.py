"""relu(NaN) is the same on every path: the reference backend's relu composite is
where(x > 0, x, 0), so NaN (and -0.0) give +0.0; the cpu kernels that compute relu (the elementwise
unary, the fused elementwise RELU opcode, the GEMM epilogue behind the dense op) must agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import flexcore as fc
from flexcore import _native
from flexcore.ir.core import apply
from flexcore.ir.fused import EwCode

VALUES = [np.nan, -np.nan, -np.inf, -2.0, -0.0, 0.0, 0.5, np.inf]


@pytest.fixture(scope="module")
def native():
    if _native.available:
        return _native.module
    if not any(Path(_native.__file__).parent.glob("_flexcore*.so")):
        pytest.skip("native extension not built")
    pytest.fail(f"native extension is built but does not load: {_native.load_error}")


def oracle(x: np.ndarray) -> np.ndarray:
    """The reference backend's relu, computed through the IR (not restated here)."""
    p = fc.placeholder(x.shape, str(x.dtype))
    (out,) = fc.function([p], [fc.relu(p)], backend="reference")(x)
    return np.asarray(out)


def same_bits(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reference_relu_of_nan_is_zero(dtype):
    want = oracle(np.array(VALUES, dtype))
    assert not np.isnan(want).any() and not np.signbit(want).any()
    np.testing.assert_array_equal(want, [0, 0, 0, 0, 0, 0, 0.5, np.inf])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_cpu_relu_path_matches_the_reference(native, dtype):
    x = np.array(VALUES, dtype)
    want = oracle(x)
    # the elementwise unary kernel
    same_bits(native.unary("relu", x), want)
    # the fused elementwise RELU opcode, run by the cpu executor
    p = fc.placeholder(x.shape, str(x.dtype))
    y = apply("fused_ew", p, program=[(int(EwCode.RELU), 0, 0, 0)], consts=(), modes=(0,), shape=x.shape)
    (got,) = fc.function([p], [y], backend="cpu")(x)
    same_bits(got, want)
    # fc.relu compiled for the cpu backend
    (got,) = fc.function([p], [fc.relu(p)], backend="cpu")(x)
    same_bits(got, want)
    # the GEMM epilogue: 1 x 1 @ 1 x n + bias, the bias carrying the special values
    a = np.ones((3, 1), dtype)
    b = np.zeros((1, x.size), dtype)
    same_bits(native.gemm(a, b, bias=x, act="relu"), np.broadcast_to(want, (3, x.size)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dense_relu_matches_the_reference_with_nan(dtype):
    """relu(x @ w + b) fused into one dense op (GEMM + epilogue) on the cpu backend, with NaN and
    infinities in the pre-activation, equals the reference backend bit for bit in the NaN lanes."""
    rng = np.random.default_rng(0)
    x, w, b = fc.placeholder((5, 3), dtype), fc.placeholder((3, 8), dtype), fc.placeholder((8,), dtype)
    y = fc.relu(x @ w + b)
    xv = rng.standard_normal((5, 3)).astype(dtype)
    wv = rng.standard_normal((3, 8)).astype(dtype)
    bv = np.array(VALUES, dtype)
    ref = np.asarray(fc.function([x, w, b], [y], backend="reference")(xv, wv, bv)[0])
    f = fc.function([x, w, b], [y], backend="cpu")
    got = np.asarray(f(xv, wv, bv)[0])
    assert not np.isnan(ref).any()
    assert not np.isnan(got).any()
    special = ~np.isfinite(bv)
    np.testing.assert_array_equal(got[:, special], ref[:, special])
    np.testing.assert_allclose(got, ref, rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-6)
