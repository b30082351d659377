"""The fused LSTM and GRU cell kernels (csrc/src/rnn_cell.c, flexcore/rnn.h) through the C ABI, against the
reference implementations of flexcore.ir.fused_rnn: odd sizes, row strides wider than 4h, every
gate order, the optional operands, float32 and float64, the vectorised and the scalar (libm)
path; and the argument checks at the API edge."""

from __future__ import annotations

import numpy as np
import pytest
from test_vmath import run_python

from flexcore import native_cabi
from flexcore.ir.fused_rnn import lstm_backward_ref, lstm_forward_ref

SFX = {np.float32: "f32", np.float64: "f64"}
CT = {np.float32: "float*", np.float64: "double*"}


@pytest.fixture
def lib(native):
    return native_cabi.lib()


def _p(a, dtype):
    ffi = native_cabi.ffi
    if a is None:
        return ffi.NULL
    assert a.dtype == dtype and a.strides[-1] == a.itemsize  # rows may be apart (a column window)
    return ffi.cast(CT[dtype], a.__array_interface__["data"][0])


def _order(order):
    return native_cabi.ffi.new("int64_t[4]", list(order))


def fwd(lib, n, h, a, b, bias, cp, order, dtype):
    out = np.full((7, n, h), np.nan, dtype)
    lda = a.strides[0] // a.itemsize if a is not None else 4 * h
    ldb = b.strides[0] // b.itemsize if b is not None else 0
    st = getattr(lib, f"fc_lstm_cell_fwd_{SFX[dtype]}")(
        n, h, _p(a, dtype), lda, _p(b, dtype), ldb, _p(bias, dtype), _p(cp, dtype), _order(order), _p(out, dtype))
    return st, out


def bwd(lib, n, h, y, cp, dh, dc, order, dtype, want_dcp=True):
    dg = np.full((n, 4 * h), np.nan, dtype)
    dcp = np.full((n, h), np.nan, dtype) if want_dcp else None
    st = getattr(lib, f"fc_lstm_cell_bwd_{SFX[dtype]}")(
        n, h, _p(y, dtype), _p(cp, dtype), _p(dh, dtype), _p(dc, dtype), _order(order), _p(dg, dtype), _p(dcp, dtype))
    return st, dg, dcp


def _inputs(rng, n, h, dtype, pad):
    """a and b as column windows of wider matrices (row stride 4h + pad)."""
    wide = rng.normal(size=(2, n, 4 * h + pad)).astype(dtype) * 2
    return wide[0][:, :4 * h], wide[1][:, pad:]


TOL = {np.float32: 3e-6, np.float64: 1e-14}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("n", "h"), [(1, 1), (3, 3), (1, 17), (3, 127), (5, 8)])
@pytest.mark.parametrize("pad", [0, 5])
def test_forward_and_backward_match_the_reference(lib, n, h, dtype, pad):
    rng = np.random.default_rng(n * 1000 + h)
    a, b = _inputs(rng, n, h, dtype, pad)
    bias = rng.normal(size=4 * h).astype(dtype)
    cp = rng.normal(size=(n, h)).astype(dtype)
    dh, dc = rng.normal(size=(2, n, h)).astype(dtype)
    for order in [(0, 1, 2, 3), (1, 2, 0, 3), (3, 0, 2, 1)]:
        for srcs, bi, c in [((a, b), bias, cp), ((a,), None, cp), ((a, b), None, None), ((a,), bias, None)]:
            st, y = fwd(lib, n, h, srcs[0], srcs[1] if len(srcs) > 1 else None, bi, c, order, dtype)
            assert st == 0
            want = lstm_forward_ref(srcs, bi, np.zeros((n, h), dtype) if c is None else c, order)
            np.testing.assert_allclose(y, want, rtol=TOL[dtype], atol=TOL[dtype])
            for d in (dc, None):
                st, dg, dcp = bwd(lib, n, h, y, c, dh, d, order, dtype)
                assert st == 0
                wg, wc = lstm_backward_ref(y, np.zeros((n, h), dtype) if c is None else c, dh, d, order)
                np.testing.assert_allclose(dg, wg, rtol=TOL[dtype], atol=TOL[dtype])
                np.testing.assert_allclose(dcp, wc, rtol=TOL[dtype], atol=TOL[dtype])
    st, dg, _ = bwd(lib, n, h, y, cp, dh, dc, (0, 1, 2, 3), dtype, want_dcp=False)
    assert st == 0 and np.isfinite(dg).all()


def test_bad_arguments_are_status_codes(lib):
    dtype = np.float32
    n, h = 2, 3
    a = np.zeros((n, 4 * h), dtype)
    cp = np.zeros((n, h), dtype)
    ok = (0, 1, 2, 3)
    assert fwd(lib, n, h, a, None, None, cp, ok, dtype)[0] == 0
    for order in [(0, 1, 2, 2), (0, 1, 2, 4), (-1, 1, 2, 3)]:
        assert fwd(lib, n, h, a, None, None, cp, order, dtype)[0] == native_cabi.lib().FC_ERR_SIZE
    f = lib.fc_lstm_cell_fwd_f32
    out = np.zeros((7, n, h), dtype)
    P = lambda x: _p(x, dtype)  # noqa: E731
    assert f(n, h, P(a), 4 * h - 1, native_cabi.ffi.NULL, 0, native_cabi.ffi.NULL, P(cp), _order(ok), P(out)) == \
        lib.FC_ERR_SIZE
    assert f(-1, h, P(a), 4 * h, native_cabi.ffi.NULL, 0, native_cabi.ffi.NULL, P(cp), _order(ok), P(out)) == \
        lib.FC_ERR_SIZE
    assert f(n, h, native_cabi.ffi.NULL, 4 * h, native_cabi.ffi.NULL, 0, native_cabi.ffi.NULL, P(cp), _order(ok),
             P(out)) == lib.FC_ERR_NULL
    assert f(1 << 62, h, P(a), 4 * h, native_cabi.ffi.NULL, 0, native_cabi.ffi.NULL, P(cp), _order(ok), P(out)) == \
        lib.FC_ERR_SIZE
    g = lib.fc_lstm_cell_bwd_f32
    dg = np.zeros((n, 4 * h), dtype)
    assert g(n, h, P(out), P(cp), native_cabi.ffi.NULL, native_cabi.ffi.NULL, _order(ok), P(dg),
             native_cabi.ffi.NULL) == lib.FC_ERR_NULL
    assert g(n, h, P(out), P(cp), P(cp), native_cabi.ffi.NULL, _order((1, 1, 2, 3)), P(dg),
             native_cabi.ffi.NULL) == lib.FC_ERR_SIZE
    # Nothing to do: n = 0 or h = 0 touch no memory.
    assert f(0, h, native_cabi.ffi.NULL, 4 * h, native_cabi.ffi.NULL, 0, native_cabi.ffi.NULL, native_cabi.ffi.NULL,
             native_cabi.ffi.NULL, native_cabi.ffi.NULL) == 0


# n * h from which rnn_cell.c splits the batch rows across threads (CELL_PAR_MIN): sizes just below
# and above it, odd ones and one wide batch.
THREAD_SIZES = [(2, 2047), (2, 2048), (3, 1365), (17, 241), (33, 257)]


def _warm_pool(lib):
    """A threaded product just before: the pool's workers still poll, so the cell's check of how
    soon a worker would join (fc_pool_join_delay_ns) lets it split the rows."""
    x, c = np.ones((2, 256, 256), np.float32)
    assert lib.fc_sgemm(0, 0, 256, 256, 256, 1.0, _p(x, np.float32), 256, _p(x, np.float32), 256, 0.0,
                        _p(c, np.float32), 256) == 0
    assert (c == 256).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("n", "h"), THREAD_SIZES)
def test_threaded_rows_are_the_single_thread_bits(lib, n, h, dtype):
    """Forward and backward on two threads (rows split across the pool, when a worker is ready in
    time) give the same bits as on one thread, and match the reference. Whether a call splits
    depends on the load (a wrong split leaves NaN rows, caught by the comparison)."""
    rng = np.random.default_rng(n + h)
    a, b = _inputs(rng, n, h, dtype, 3)
    bias = rng.normal(size=4 * h).astype(dtype)
    cp, dh, dc = rng.normal(size=(3, n, h)).astype(dtype)
    order = (2, 0, 3, 1)
    saved = lib.fc_get_num_threads()
    results = {}
    try:
        for threads in (1, 2):
            assert lib.fc_set_num_threads(threads) == 0
            runs = []
            for _ in range(10):  # the split is skipped while other processes hold the cores
                _warm_pool(lib)
                runs.append(fwd(lib, n, h, a, b, bias, cp, order, dtype))
            y = runs[-1][1]
            assert all(st == 0 for st, _ in runs) and all(np.array_equal(r[1], y) for r in runs)
            _warm_pool(lib)
            st, dg, dcp = bwd(lib, n, h, y, cp, dh, dc, order, dtype)
            assert st == 0
            results[threads] = (y, dg, dcp)
    finally:
        lib.fc_set_num_threads(saved)
    for one, two in zip(results[1], results[2]):
        assert one.tobytes() == two.tobytes()
    y, dg, dcp = results[2]
    np.testing.assert_allclose(y, lstm_forward_ref((a, b), bias, cp, order), rtol=TOL[dtype], atol=TOL[dtype])
    wg, wc = lstm_backward_ref(y, cp, dh, dc, order)
    np.testing.assert_allclose(dg, wg, rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_allclose(dcp, wc, rtol=TOL[dtype], atol=TOL[dtype])


SCALAR = """
import numpy as np
from flexcore import native_cabi, _native
from flexcore.ir.fused_rnn import lstm_forward_ref, lstm_backward_ref, gru_forward_ref
assert _native.module.cpu_isa() == "scalar"
lib, ffi = native_cabi.lib(), native_cabi.ffi
rng = np.random.default_rng(5)
for n, h in [(1, 1), (3, 17), (2, 127), (17, 241)]:
    a = (rng.normal(size=(n, 4 * h)) * 3).astype(np.float32)
    bias = rng.normal(size=4 * h).astype(np.float32)
    cp, dh, dc = rng.normal(size=(3, n, h)).astype(np.float32)
    out = np.empty((7, n, h), np.float32)
    f = lambda x: ffi.cast("float*", ffi.from_buffer(x))
    order = ffi.new("int64_t[4]", [3, 1, 0, 2])
    assert lib.fc_lstm_cell_fwd_f32(n, h, f(a), 4 * h, ffi.NULL, 0, f(bias), f(cp), order, f(out)) == 0
    want = lstm_forward_ref((a,), bias, cp, (3, 1, 0, 2))
    np.testing.assert_allclose(out, want, rtol=3e-6, atol=3e-6)
    dg, dcp = np.empty((n, 4 * h), np.float32), np.empty((n, h), np.float32)
    assert lib.fc_lstm_cell_bwd_f32(n, h, f(out), f(cp), f(dh), f(dc), order, f(dg), f(dcp)) == 0
    wg, wc = lstm_backward_ref(out, cp, dh, dc, (3, 1, 0, 2))
    np.testing.assert_allclose(dg, wg, rtol=3e-6, atol=3e-6)
    np.testing.assert_allclose(dcp, wc, rtol=3e-6, atol=3e-6)
    hh = (rng.normal(size=(n, 3 * h)) * 2).astype(np.float32)
    gb = rng.normal(size=4 * h).astype(np.float32)
    o3 = ffi.new("int64_t[3]", [2, 0, 1])
    gout = np.empty((5, n, h), np.float32)
    assert lib.fc_gru_cell_fwd_f32(n, h, f(a), 4 * h, f(hh), 3 * h, f(gb), f(cp), o3, o3, f(gout)) == 0
    np.testing.assert_allclose(gout, gru_forward_ref(a[:, :3 * h], hh, gb, cp, (2, 0, 1), (2, 0, 1)),
                               rtol=3e-6, atol=3e-6)
print("ok")
"""


def test_the_scalar_path_matches_the_reference(native):
    assert run_python(SCALAR, FLEXCORE_ISA="scalar").stdout.strip() == "ok"


# -- GRU ----------------------------------------------------------------------------------------
from flexcore.ir.fused_rnn import gru_backward_ref, gru_forward_ref  # noqa: E402


def _order3(order):
    return native_cabi.ffi.new("int64_t[3]", list(order))


def gru_fwd(lib, n, h, x, hh, bias, hp, xo, ho, dtype):
    out = np.full((5, n, h), np.nan, dtype)
    ldx = x.strides[0] // x.itemsize
    ldh = hh.strides[0] // hh.itemsize if hh is not None else 0
    st = getattr(lib, f"fc_gru_cell_fwd_{SFX[dtype]}")(
        n, h, _p(x, dtype), ldx, _p(hh, dtype), ldh, _p(bias, dtype), _p(hp, dtype), _order3(xo), _order3(ho),
        _p(out, dtype))
    return st, out


def gru_bwd(lib, n, h, y, hp, dh, xo, ho, dtype):
    dx, dhh, dp = (np.full(s, np.nan, dtype) for s in ((n, 3 * h), (n, 3 * h), (n, h)))
    st = getattr(lib, f"fc_gru_cell_bwd_{SFX[dtype]}")(
        n, h, _p(y, dtype), _p(hp, dtype), _p(dh, dtype), _order3(xo), _order3(ho), _p(dx, dtype), _p(dhh, dtype),
        _p(dp, dtype))
    return st, dx, dhh, dp


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("n", "h"), [(1, 1), (3, 3), (1, 17), (3, 127)])
@pytest.mark.parametrize("pad", [0, 4])
def test_gru_forward_and_backward_match_the_reference(lib, n, h, dtype, pad):
    rng = np.random.default_rng(n * 100 + h)
    wide = rng.normal(size=(2, n, 3 * h + pad)).astype(dtype) * 2
    x, hh = wide[0][:, pad:], wide[1][:, : 3 * h]
    bias = rng.normal(size=4 * h).astype(dtype)
    hp, dh = rng.normal(size=(2, n, h)).astype(dtype)
    zeros = np.zeros((n, h), dtype)
    for xo, ho in [((0, 1, 2), (0, 1, 2)), ((1, 0, 2), (2, 0, 1))]:
        for src_h, prev in [(hh, hp), (None, None)]:
            st, y = gru_fwd(lib, n, h, x, src_h, bias, prev, xo, ho, dtype)
            assert st == 0
            want = gru_forward_ref(x, src_h, bias, zeros if prev is None else prev, xo, ho)
            np.testing.assert_allclose(y, want, rtol=TOL[dtype], atol=TOL[dtype])
            st, *got = gru_bwd(lib, n, h, y, prev, dh, xo, ho, dtype)
            assert st == 0
            for a, b in zip(got, gru_backward_ref(y, zeros if prev is None else prev, dh, xo, ho), strict=True):
                np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype])


def test_gru_bad_arguments_are_status_codes(lib):
    dtype, n, h = np.float64, 2, 3
    x = np.zeros((n, 3 * h))
    bias, hp = np.zeros(4 * h), np.zeros((n, h))
    assert gru_fwd(lib, n, h, x, None, bias, hp, (0, 1, 2), (0, 1, 2), dtype)[0] == 0
    assert gru_fwd(lib, n, h, x, None, bias, hp, (0, 1, 1), (0, 1, 2), dtype)[0] == lib.FC_ERR_SIZE
    assert gru_fwd(lib, n, h, x, None, bias, hp, (0, 1, 2), (3, 1, 2), dtype)[0] == lib.FC_ERR_SIZE
    out = np.zeros((5, n, h))
    f = lib.fc_gru_cell_fwd_f64
    NULL = native_cabi.ffi.NULL
    assert f(n, h, _p(x, dtype), 3 * h - 1, NULL, 0, NULL, NULL, NULL, NULL, _p(out, dtype)) == lib.FC_ERR_SIZE
    assert f(n, h, NULL, 3 * h, NULL, 0, NULL, NULL, NULL, NULL, _p(out, dtype)) == lib.FC_ERR_NULL
    assert f(-2, h, _p(x, dtype), 3 * h, NULL, 0, NULL, NULL, NULL, NULL, _p(out, dtype)) == lib.FC_ERR_SIZE
    g = lib.fc_gru_cell_bwd_f64
    dx = np.zeros((n, 3 * h))
    assert g(n, h, _p(out, dtype), NULL, NULL, NULL, NULL, _p(dx, dtype), _p(dx, dtype), NULL) == lib.FC_ERR_NULL
