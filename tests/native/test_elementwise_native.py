"""Native elementwise kernels against numpy, the reference: every op code, float32 and float64.

Transcendental ops are compared with the float64 numpy result: float64 kernels within rtol 1e-12,
float32 kernels within a few float32 ulps of the exact value. Ops that IEEE arithmetic defines
exactly (neg, abs, relu, add, ...) must equal numpy bit for bit in the same dtype.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

SIZES = [0, 1, 3, 17, 127, 1000]
DTYPES = [np.float32, np.float64]
F32_ULPS = 4


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# op -> (numpy reference, input sampler(rng, n), exact in IEEE arithmetic)
UNARY = {
    "neg": (np.negative, lambda rng, n: rng.uniform(-10, 10, n), True),
    "exp": (np.exp, lambda rng, n: rng.uniform(-20, 20, n), False),
    "log": (np.log, lambda rng, n: np.exp(rng.uniform(-20, 20, n)), False),
    "log1p": (
        np.log1p,
        lambda rng, n: np.concatenate(
            [rng.uniform(-0.999, 10, n - n // 4), rng.uniform(-1e-6, 1e-6, n // 4)]
        ),
        False,
    ),
    "sqrt": (np.sqrt, lambda rng, n: np.exp(rng.uniform(-20, 20, n)), False),
    "abs": (np.abs, lambda rng, n: rng.uniform(-10, 10, n), True),
    "sigmoid": (_sigmoid, lambda rng, n: rng.uniform(-30, 30, n), False),
    "tanh": (np.tanh, lambda rng, n: rng.uniform(-10, 10, n), False),
    "arctan": (np.arctan, lambda rng, n: rng.uniform(-50, 50, n), False),
    "relu": (lambda x: np.where(x > 0, x, np.zeros((), x.dtype)), lambda rng, n: rng.uniform(-10, 10, n), True),
    "sign": (np.sign, lambda rng, n: rng.uniform(-10, 10, n), True),
    "step": (lambda x: (x > 0).astype(x.dtype), lambda rng, n: rng.uniform(-10, 10, n), True),
}

BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "pow": np.power,
}
# C pow() is not correctly rounded, so the kernel is compared with the float64 result as the
# transcendental unary ops are (numpy may use its own SIMD pow on some CPUs).
BINARY_INEXACT = {"pow"}

SPECIALS = np.array(
    [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -2.0,
        np.inf,
        -np.inf,
        np.nan,
        1e30,
        -1e30,
        1e-30,
        1e-40,
        88.0,
        -88.0,
        710.0,
        -710.0,
        1000.0,
        -1000.0,
    ]
)


def assert_matches(got: np.ndarray, x64_ref: np.ndarray, dtype) -> None:
    """got (dtype) against the float64 reference: same non-finite values, close finite ones."""
    assert got.dtype == dtype
    with np.errstate(all="ignore"):
        ref = x64_ref.astype(dtype)  # what a correctly rounded kernel returns
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(got[~finite], ref[~finite])
    if dtype == np.float64:
        np.testing.assert_allclose(got[finite], ref[finite], rtol=1e-12, atol=1e-300)
    else:
        err = np.abs(got[finite].astype(np.float64) - x64_ref[finite])
        tol = F32_ULPS * np.spacing(np.abs(ref[finite])).astype(np.float64)
        bad = err > tol
        assert not bad.any(), (
            f"{bad.sum()} values off by more than {F32_ULPS} ulp, e.g. got {got[finite][bad][:3]}, "
            f"want {x64_ref[finite][bad][:3]}"
        )


def test_every_op_is_tested(native):
    assert set(native.UNARY_OPS) == set(UNARY)
    assert set(native.BINARY_OPS) == set(BINARY)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", UNARY)
def test_unary(native, op, dtype, n):
    reference, sample, exact = UNARY[op]
    x = sample(np.random.default_rng(n), n).astype(dtype)
    got = native.unary(op, x)
    assert got.shape == x.shape and got.dtype == dtype
    if exact:
        np.testing.assert_array_equal(got, reference(x))
    else:
        assert_matches(got, reference(x.astype(np.float64)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", UNARY)
def test_unary_special_values(native, op, dtype):
    reference, _, exact = UNARY[op]
    with np.errstate(all="ignore"):
        x = SPECIALS.astype(dtype)
        want = reference(x) if exact else reference(x.astype(np.float64))
    got = native.unary(op, x)
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        assert_matches(got, want, dtype)
    if op in ("neg", "abs"):
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_saturates_without_nan(native, dtype):
    x = np.array([-1000.0, -100.0, 100.0, 1000.0, -np.inf, np.inf], dtype=dtype)
    got = native.unary("sigmoid", x)
    assert not np.isnan(got).any()
    np.testing.assert_array_equal(got[[0, 4]], [0.0, 0.0])
    np.testing.assert_array_equal(got[[2, 3, 5]], [1.0, 1.0, 1.0])
    assert 0.0 < got[1] < 1e-40  # exp(-100) is subnormal in float32, but not zero


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", BINARY)
def test_binary(native, op, dtype, n):
    rng = np.random.default_rng(1000 + n)
    a = rng.uniform(-10, 10, n).astype(dtype)
    b = rng.uniform(-10, 10, n).astype(dtype)
    if op == "div":
        b = np.copysign(np.abs(b) + 0.1, b).astype(dtype)
    if n >= 3:
        b[1] = a[1]  # a tie, for maximum/minimum
    got = native.binary(op, a, b)
    assert got.shape == a.shape and got.dtype == dtype
    if op in BINARY_INEXACT:
        with np.errstate(all="ignore"):
            assert_matches(got, BINARY[op](a.astype(np.float64), b.astype(np.float64)), dtype)
    else:
        np.testing.assert_array_equal(got, BINARY[op](a, b))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", BINARY)
def test_binary_special_values(native, op, dtype):
    a, b = (v.ravel().astype(dtype) for v in np.meshgrid(SPECIALS, SPECIALS))
    with np.errstate(all="ignore"):
        if op in BINARY_INEXACT:
            assert_matches(native.binary(op, a, b), BINARY[op](a.astype(np.float64), b.astype(np.float64)), dtype)
        else:
            np.testing.assert_array_equal(native.binary(op, a, b), BINARY[op](a, b))


def test_kernels_run_from_threads(native):
    """Kernels run with the GIL released: concurrent calls from threads still agree."""
    x = np.random.default_rng(0).uniform(-5, 5, 200_000)
    want = native.unary("tanh", x)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: native.unary("tanh", x), range(8)))
    for got in results:
        np.testing.assert_array_equal(got, want)


def test_shapes_are_kept(native):
    x = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    assert native.unary("sqrt", x).shape == (3, 4, 5)
    assert native.binary("add", x, x).shape == (3, 4, 5)
    scalar = np.array(2.0)
    assert native.unary("neg", scalar).shape == () and native.unary("neg", scalar) == -2.0


def test_bad_arguments(native):
    x = np.ones((4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"unknown unary op 'cube'; valid: neg, exp"):
        native.unary("cube", x)
    with pytest.raises(ValueError, match=r"unknown binary op 'atan2'; valid: add, sub"):
        native.binary("atan2", x, x)
    with pytest.raises(ValueError, match=r"argument 'x' must be C-contiguous"):
        native.unary("exp", x.T)
    with pytest.raises(ValueError, match=r"argument 'b' must be C-contiguous"):
        native.binary("add", x, x.T)
    with pytest.raises(ValueError, match=r"argument 'x' has dtype int64"):
        native.unary("exp", np.arange(3))
    with pytest.raises(ValueError, match=r"argument 'x' has dtype >f4"):
        native.unary("exp", x.astype(">f4"))
    with pytest.raises(ValueError, match=r"argument 'b' has dtype float64 but 'a' has float32"):
        native.binary("add", x, x.astype(np.float64))
    with pytest.raises(ValueError, match=r"argument 'b' has shape \(4,\) but 'a' has \(4, 4\)"):
        native.binary("add", x, x[0].copy())
    with pytest.raises(TypeError, match=r"argument 'a' must be a numpy.ndarray, not list"):
        native.binary("add", [1.0], x)
