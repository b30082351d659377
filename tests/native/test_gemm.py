"""flexcore's own GEMM (csrc/gemm, flexcore/gemm.h) against a float64 numpy product.

Accuracy is checked elementwise against the rounding-error bound of any summation order:
|C - C_ref| <= (k + 3) * eps * (|alpha| |op(A)| @ |op(B)| + |beta C0| + |bias|) (+ a few eps of the
result after an activation), with eps the dtype's machine epsilon. The micro-kernels alone are
tested in C (tests/c/test_gemm_ukr.c), run by ctest from tests/native/test_embed_c.py, also under
ASan + UBSan.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexcore import _native

PACKAGE_DIR = Path(_native.__file__).resolve().parent
DTYPES = [np.float32, np.float64]
ACTS = {
    "none": lambda x: x,
    "relu": lambda x: np.where(x > 0, x, 0.0),  # the dense op's reference (NaN gives 0)
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
}


def stored(rng, rows, cols, dtype, pad=0):
    """A rows x cols matrix whose row stride is cols + pad (a view into a wider array)."""
    wide = rng.standard_normal((rows, cols + pad)).astype(dtype)
    return wide[:, :cols]


def reference(a, b, trans_a, trans_b, alpha=1.0, beta=0.0, c0=None, bias=None, act="none"):
    """(expected result, elementwise error bound) in float64."""
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    op_a = a64.T if trans_a else a64
    op_b = b64.T if trans_b else b64
    k = op_a.shape[1]
    pre = alpha * (op_a @ op_b)
    mag = abs(alpha) * (np.abs(op_a) @ np.abs(op_b))
    if beta != 0:
        pre = pre + beta * c0.astype(np.float64)
        mag = mag + np.abs(beta * c0.astype(np.float64))
    if bias is not None:
        pre = pre + bias.astype(np.float64)
        mag = mag + np.abs(bias.astype(np.float64))
    with np.errstate(over="ignore"):
        want = ACTS[act](pre)
    eps = np.finfo(a.dtype).eps
    bound = (k + 3) * eps * mag + 4 * eps * np.abs(want) + np.finfo(np.float64).tiny
    return want, bound


def assert_within(got, want, bound):
    assert got.shape == want.shape
    err = np.abs(got.astype(np.float64) - want)
    worst = np.max(err / bound) if err.size else 0.0
    assert np.all(err <= bound), f"error up to {worst:.3g} x the bound"


def make_problem(rng, m, n, k, trans_a, trans_b, dtype, pad=0):
    a = stored(rng, k if trans_a else m, m if trans_a else k, dtype, pad)
    b = stored(rng, n if trans_b else k, k if trans_b else n, dtype, pad)
    return a, b


SIZES = [
    (1, 1, 1),
    (3, 3, 3),
    (17, 17, 17),
    (127, 127, 127),
    (0, 3, 5),
    (3, 0, 5),
    (3, 5, 0),
    (1, 17, 127),
    (127, 3, 17),
    (37, 300, 257),
    (151, 33, 300),
    (6, 16, 256),
    (7, 17, 513),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("trans_a", "trans_b"), [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize(("m", "n", "k"), SIZES)
def test_matches_float64_reference(native, m, n, k, trans_a, trans_b, dtype):
    rng = np.random.default_rng(m * 10007 + n * 101 + k)
    a, b = make_problem(rng, m, n, k, trans_a, trans_b, dtype)
    got = native.gemm(a, b, trans_a=bool(trans_a), trans_b=bool(trans_b))
    assert got.dtype == dtype and got.shape == (m, n)
    assert_within(got, *reference(a, b, trans_a, trans_b))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("trans_a", "trans_b"), [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_leading_dimensions_larger_than_rows(native, trans_a, trans_b, dtype):
    rng = np.random.default_rng(1)
    m, n, k = 29, 45, 70
    a, b = make_problem(rng, m, n, k, trans_a, trans_b, dtype, pad=11)
    assert a.strides[0] > a.shape[1] * a.itemsize  # really strided rows
    c_wide = np.full((m, n + 7), 5.0, dtype)
    c = c_wide[:, :n]
    out = native.gemm(a, b, trans_a=bool(trans_a), trans_b=bool(trans_b), c=c)
    assert out is c or np.shares_memory(out, c)
    assert_within(c, *reference(a, b, trans_a, trans_b))
    assert np.all(c_wide[:, n:] == 5.0), "columns past n were written"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 0.0), (-0.5, 0.0), (1.0, 1.0), (2.0, -1.5), (0.0, 0.5), (0.0, 0.0)])
def test_alpha_beta(native, alpha, beta, dtype):
    rng = np.random.default_rng(2)
    m, n, k = 40, 50, 300  # k > KC: beta applies on the first pass only
    a, b = make_problem(rng, m, n, k, 0, 1, dtype)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    if beta == 0:
        c0[:] = np.nan  # beta == 0: C is written, never read
    c = c0.copy()
    native.gemm(a, b, trans_b=True, alpha=alpha, beta=beta, c=c)
    assert np.all(np.isfinite(c))
    assert_within(c, *reference(a, b, 0, 1, alpha, beta, c0))


def test_alpha_zero_reads_neither_a_nor_b(native):
    a = np.full((4, 3), np.nan, np.float32)
    b = np.full((3, 5), np.inf, np.float32)
    c = np.ones((4, 5), np.float32)
    native.gemm(a, b, alpha=0.0, beta=2.0, c=c)
    np.testing.assert_array_equal(c, 2.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("k", [0, 40, 300])
def test_fused_bias_and_activation(native, act, with_bias, k, dtype):
    rng = np.random.default_rng(3)
    m, n = 33, 70
    a, b = make_problem(rng, m, n, k, 1, 0, dtype)
    bias = rng.standard_normal(n).astype(dtype) if with_bias else None
    c0 = rng.standard_normal((m, n)).astype(dtype)
    beta = 0.5 if k == 40 else 0.0
    c = c0.copy()
    native.gemm(a, b, trans_a=True, beta=beta, c=c, bias=bias, act=act)
    assert_within(c, *reference(a, b, 1, 0, 1.0, beta, c0, bias, act))


def test_activation_extremes(native):
    """The epilogue uses ew_math.h: sigmoid saturates without NaN; relu is the reference's
    where(y > 0, y, 0), so NaN gives 0 (tests/backends/test_relu_nan.py checks every path)."""
    a = np.array([[1.0], [1.0], [1.0]], np.float32)
    b = np.array([[-1000.0, 1000.0, 0.0]], np.float32)
    np.testing.assert_array_equal(native.gemm(a, b, act="sigmoid")[0], [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(native.gemm(a, b, act="tanh")[0], [-1.0, 1.0, 0.0])
    bias = np.array([np.nan, 0.0, -1.0], np.float32)
    out = native.gemm(a, b, bias=bias, act="relu")[0]
    assert out[0] == 0.0 and out[1] == 1000.0 and out[2] == 0.0


@pytest.mark.parametrize("shape", [(300, 200, 100), (64, 1030, 256), (512, 48, 64), (2, 3000, 5)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_thread_counts_give_identical_bits(native, shape, dtype):
    """A thread count changes which thread computes a tile, never how: results are bit-identical."""
    m, n, k = shape
    rng = np.random.default_rng(4)
    a, b = make_problem(rng, m, n, k, 0, 0, dtype)
    saved = native.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            native.set_num_threads(threads)
            assert native.get_num_threads() == threads
            results.append(native.gemm(a, b))
    finally:
        native.set_num_threads(saved)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])
    assert_within(results[0], *reference(a, b, 0, 0))


FORK_CHECK = textwrap.dedent(
    """
    import os
    import numpy as np
    from flexcore import _native
    native = _native.module
    native.set_num_threads(2)
    a = np.ones((256, 256), np.float32)
    native.gemm(a, a)  # the parent's pool now has a worker thread
    pid = os.fork()
    if pid == 0:  # the child has no workers: its pool must start over, not wait for them
        ok = bool(np.all(native.gemm(a, a) == 256.0))
        # ... and start a worker of its own (else every product would run on one thread)
        ok = ok and len(os.listdir("/proc/self/task")) >= 2
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status))
    """
)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc (Linux)")
def test_pool_survives_fork(native):
    out = run_python(FORK_CHECK, timeout=60)
    assert out.stdout.strip() == "0"


def test_set_num_threads_rejects_nonpositive(native):
    with pytest.raises(ValueError, match="n >= 1"):
        native.set_num_threads(0)
    saved = native.get_num_threads()
    try:
        native.set_num_threads(1000)
        assert native.get_num_threads() == 64
    finally:
        native.set_num_threads(saved)


def test_num_threads_from_environment(native):
    code = "from flexcore import _native; print(_native.module.get_num_threads())"
    assert run_python(code, FLEXCORE_NUM_THREADS="3").stdout.strip() == "3"
    default = run_python(code).stdout.strip()
    assert default == str(min(len(os.sched_getaffinity(0)), 64))


def test_argument_errors(native):
    a = np.ones((3, 4), np.float32)
    b = np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match="op\\(a\\) has shape"):
        native.gemm(a, b.T.copy())
    with pytest.raises(ValueError, match="dtype"):
        native.gemm(a, b.astype(np.float64))
    with pytest.raises(ValueError, match="dtype"):
        native.gemm(a.astype(np.int32), b)
    with pytest.raises(ValueError, match="2-D"):
        native.gemm(a[None], b)
    with pytest.raises(TypeError, match=r"numpy\.ndarray"):
        native.gemm([[1.0]], b)
    with pytest.raises(ValueError, match="contiguous rows"):
        native.gemm(a.T, b[:3])  # a transposed view: use trans_a=True on the original instead
    with pytest.raises(ValueError, match="row stride"):
        native.gemm(a[::-1], b)
    with pytest.raises(ValueError, match="beta != 0 needs"):
        native.gemm(a, b, beta=1.0)
    with pytest.raises(ValueError, match="unknown activation op 'gelu'"):
        native.gemm(a, b, act="gelu")
    with pytest.raises(ValueError, match="argument 'c' must be"):
        native.gemm(a, b, c=np.empty((3, 4), np.float32))
    with pytest.raises(ValueError, match="argument 'bias' must be"):
        native.gemm(a, b, bias=np.ones(4, np.float32))
    readonly = np.empty((3, 5), np.float32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        native.gemm(a, b, c=readonly)
    square = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match="share memory"):
        native.gemm(square, square, c=square)


def test_transposed_operands_via_flags(native):
    """numpy's a.T @ b is gemm(a, b, trans_a=True): no copy of the transpose is made."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((50, 20)).astype(np.float32)
    b = rng.standard_normal((50, 30)).astype(np.float32)
    got = native.gemm(a, b, trans_a=True)
    assert_within(got, *reference(a, b, 1, 0))


# ------------------------------------------------------------------------------- batched (C ABI)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("shape_a", "shape_b"),
    [((5, 7, 11), (5, 11, 9)), ((7, 11), (5, 11, 9)), ((5, 7, 11), (11, 9)), ((1, 3, 4), (1, 4, 2))],
)
def test_batched_with_broadcast(native, shape_a, shape_b, dtype):
    """numpy matmul broadcasting: a 2-D operand is shared by every product (stride 0)."""
    from flexcore import native_cabi

    lib = native_cabi.lib()
    ffi = native_cabi.ffi
    rng = np.random.default_rng(6)
    a = rng.standard_normal(shape_a).astype(dtype)
    b = rng.standard_normal(shape_b).astype(dtype)
    batch = max(a.shape[0] if a.ndim == 3 else 1, b.shape[0] if b.ndim == 3 else 1)
    m, k = a.shape[-2:]
    n = b.shape[-1]
    c = np.full((batch, m, n), np.nan, dtype)
    ctype, prefix = ("float", "s") if dtype == np.float32 else ("double", "d")
    status = getattr(lib, f"fc_{prefix}gemm_batched")(
        0, 0, batch, m, n, k, 1.0,
        ffi.from_buffer(f"{ctype}[]", a), k, m * k if a.ndim == 3 else 0,
        ffi.from_buffer(f"{ctype}[]", b), n, k * n if b.ndim == 3 else 0,
        0.0, ffi.from_buffer(f"{ctype}[]", c, require_writable=True), n, m * n,
    )  # fmt: skip
    assert status == lib.FC_OK
    for i in range(batch):
        ai = a[i] if a.ndim == 3 else a
        bi = b[i] if b.ndim == 3 else b
        assert_within(c[i], *reference(ai, bi, 0, 0))


def test_batched_errors(native):
    from flexcore import native_cabi

    lib = native_cabi.lib()
    ffi = native_cabi.ffi
    buf = np.zeros(64, np.float32)
    p = ffi.from_buffer("float[]", buf, require_writable=True)
    # C matrices of a batch must not overlap; A and B may (broadcasting).
    assert lib.fc_sgemm_batched(0, 0, 2, 2, 2, 2, 1, p, 2, 0, p, 2, 0, 0, p, 2, 0) == lib.FC_ERR_OVERLAP
    assert lib.fc_sgemm_batched(0, 0, 2, 2, 2, 2, 1, p, 2, 0, p, 2, 0, 0, p, 2, -4) == lib.FC_ERR_SIZE
    assert lib.fc_sgemm_batched(3, 0, 2, 2, 2, 2, 1, p, 2, 0, p, 2, 0, 0, p, 2, 4) == lib.FC_ERR_OP
    assert lib.fc_sgemm(0, 0, 2, 2, 2, 1, ffi.NULL, 2, p, 2, 0, p, 2) == lib.FC_ERR_NULL
    assert lib.fc_sgemm(0, 0, 2, 2, 2, 1, p, 1, p, 2, 0, p, 2) == lib.FC_ERR_SIZE  # lda < k
    assert lib.fc_sgemm(0, 0, 2**62, 2, 2, 1, p, 2, p, 2, 0, p, 2) == lib.FC_ERR_SIZE  # overflow
    assert lib.fc_sgemm_ex(0, 0, 2, 2, 2, 1, p, 2, p, 2, 0, p, 2, ffi.NULL, 7) == lib.FC_ERR_OP


# ------------------------------------------------------------------------------- property-based


@settings(max_examples=150, deadline=None)
@given(
    m=st.integers(0, 70),
    n=st.integers(0, 70),
    k=st.integers(0, 300),
    trans_a=st.booleans(),
    trans_b=st.booleans(),
    pad=st.integers(0, 3),
    use_f64=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_hypothesis_shapes(native, m, n, k, trans_a, trans_b, pad, use_f64, seed):
    dtype = np.float64 if use_f64 else np.float32
    rng = np.random.default_rng(seed)
    a, b = make_problem(rng, m, n, k, trans_a, trans_b, dtype, pad)
    got = native.gemm(a, b, trans_a=trans_a, trans_b=trans_b)
    assert_within(got, *reference(a, b, trans_a, trans_b))


# ------------------------------------------------------------------------------- every ISA path


def run_python(code: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter importing this flexcore (FLEXCORE_ISA is read once)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("FLEXCORE_ISA", "FLEXCORE_NUM_THREADS")}
    full_env["PYTHONPATH"] = str(PACKAGE_DIR.parent)
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True, check=True, timeout=timeout
    )


ISA_CHECK = textwrap.dedent(
    """
    import numpy as np
    from flexcore import _native
    from tests.native.test_gemm import SIZES, assert_within, make_problem, reference
    native = _native.module
    rng = np.random.default_rng(7)
    checked = 0
    for dtype in (np.float32, np.float64):
        for m, n, k in SIZES + [(70, 1030, 300), (200, 40, 50)]:
            for ta in (0, 1):
                for tb in (0, 1):
                    a, b = make_problem(rng, m, n, k, ta, tb, dtype, pad=ta + 2 * tb)
                    bias = rng.standard_normal(n).astype(dtype)
                    c = native.gemm(a, b, trans_a=bool(ta), trans_b=bool(tb), bias=bias, act="tanh")
                    assert_within(c, *reference(a, b, ta, tb, bias=bias, act="tanh"))
                    checked += 1
    print(native.cpu_isa(), checked)
    """
)


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
def test_every_isa_path(native, isa):
    order = ["scalar", "avx2", "avx512"]
    if order.index(isa) > order.index(native.cpu_isa()):
        pytest.skip(f"this CPU runs {native.cpu_isa()} at most; the {isa} kernels cannot run here")
    out = run_python(ISA_CHECK, FLEXCORE_ISA=isa, FLEXCORE_NUM_THREADS="2")
    reported, checked = out.stdout.split()
    assert reported == isa
    assert int(checked) == 2 * (len(SIZES) + 2) * 4
