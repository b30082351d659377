"""The fused LSTM/GRU cell kernels (kernels/rnn_gates.cu) in emulation, forward and backward: against
the ops' reference implementations (flexcore.ir.fused_rnn) on odd sizes, gate orders, row strides
wider than the gate blocks and the optional operands, and against torch autograd of torch's own
cell equations (float64)."""

from __future__ import annotations

import numpy as np
import pytest

from flexcore.ir.fused_rnn import gru_backward_ref, gru_forward_ref, lstm_backward_ref, lstm_forward_ref

torch = pytest.importorskip("torch")

from .test_kernels import Dev  # noqa: E402


@pytest.fixture
def dev(emu_driver):
    d = Dev(emu_driver)
    yield d
    d.close()


def _tol(dtype):
    return dict(rtol=1e-12, atol=1e-13) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)


def _launch(dev, name, n_elems, args):
    blk = dev.drv.block_size
    dev.drv.launch(name, (max(1, min(-(-n_elems // blk), 3)),), (blk,), 0, args)


def _wide(rng, n, w, pad, dtype):
    """An (n, w) window of an (n, w + pad) matrix, as (base, window, row stride)."""
    base = (rng.standard_normal((n, w + pad)) * 2).astype(dtype)
    return base, base[:, pad:], w + pad


def _sfx(dtype):
    return "f32" if dtype == np.float32 else "f64"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("n", "h", "pad", "order", "has_b", "has_bias", "has_dc"), [
    (5, 7, 0, (0, 1, 2, 3), True, True, True),
    (1, 1, 3, (1, 2, 0, 3), False, True, False),
    (3, 17, 5, (3, 0, 2, 1), True, False, True),
])
def test_lstm_kernels_match_the_reference(dev, dtype, n, h, pad, order, has_b, has_bias, has_dc):
    rng = np.random.default_rng(n * 10 + h)
    isz = np.dtype(dtype).itemsize
    a_base, a, lda = _wide(rng, n, 4 * h, pad, dtype)
    b_base, b, ldb = _wide(rng, n, 4 * h, pad + 1, dtype)
    bias, c_prev, dh, dc = ((rng.standard_normal(s)).astype(dtype) for s in ((4 * h,), (n, h), (n, h), (n, h)))
    flags = int(has_b) | 2 * int(has_bias)
    imm = dev.put(np.array([0 if dtype == np.float32 else 1, 0, n, h, lda, ldb if has_b else 0, flags, *order],
                           np.int64))
    pa = dev.put(a_base) + np.uint64(pad * isz)
    pb = dev.put(b_base) + np.uint64((pad + 1) * isz) if has_b else np.uint64(0)
    pbias = dev.put(bias) if has_bias else np.uint64(0)
    pcp, out = dev.put(c_prev), dev.empty(7 * n * h * isz)
    _launch(dev, f"fc_cu_lstm_fwd_{_sfx(dtype)}", n * h, [imm, pa, pb, pbias, pcp, out])
    y = dev.get(out, (7, n, h), dtype)
    want = lstm_forward_ref((a, b) if has_b else (a,), bias if has_bias else None, c_prev, order)
    np.testing.assert_allclose(y, want, **_tol(dtype))

    imm_b = dev.put(np.array([0 if dtype == np.float32 else 1, 1, n, h, 0, 0, int(has_dc), *order], np.int64))
    grads = dev.empty(5 * n * h * isz)
    _launch(dev, f"fc_cu_lstm_bwd_{_sfx(dtype)}", n * h,
            [imm_b, dev.put(y), pcp, dev.put(dh), dev.put(dc) if has_dc else np.uint64(0), grads])
    got = dev.get(grads, (5 * n * h,), dtype)
    wg, wc = lstm_backward_ref(y, c_prev, dh, dc if has_dc else None, order)
    np.testing.assert_allclose(got[: 4 * n * h].reshape(n, 4 * h), wg, **_tol(dtype))
    np.testing.assert_allclose(got[4 * n * h :].reshape(n, h), wc, **_tol(dtype))


def test_lstm_kernels_match_torch(dev):
    """torch's cell in its own gate order, float64: outputs and the gradients of h and c."""
    rng = np.random.default_rng(11)
    n, h = 5, 7
    gates, c_prev, dh, dc = (rng.standard_normal(s) * 2 for s in ((n, 4 * h), (n, h), (n, h), (n, h)))
    imm = dev.put(np.array([1, 0, n, h, 4 * h, 0, 0, 0, 1, 2, 3], np.int64))
    pc, out = dev.put(c_prev), dev.empty(7 * n * h * 8)
    _launch(dev, "fc_cu_lstm_fwd_f64", n * h, [imm, dev.put(gates), np.uint64(0), np.uint64(0), pc, out])
    grads = dev.empty(5 * n * h * 8)
    imm_b = dev.put(np.array([1, 1, n, h, 0, 0, 1, 0, 1, 2, 3], np.int64))
    _launch(dev, "fc_cu_lstm_bwd_f64", n * h, [imm_b, out, pc, dev.put(dh), dev.put(dc), grads])

    tg = torch.tensor(gates, requires_grad=True)
    tc = torch.tensor(c_prev, requires_grad=True)
    i, f, g, o = tg.split(h, dim=1)
    c_want = torch.sigmoid(f) * tc + torch.sigmoid(i) * torch.tanh(g)
    h_want = torch.sigmoid(o) * torch.tanh(c_want)
    torch.autograd.backward([h_want, c_want], [torch.tensor(dh), torch.tensor(dc)])
    y = dev.get(out, (7, n, h), np.float64)
    got = dev.get(grads, (5 * n * h,), np.float64)
    tol = _tol(np.float64)
    np.testing.assert_allclose(y[4], c_want.detach().numpy(), **tol)
    np.testing.assert_allclose(y[6], h_want.detach().numpy(), **tol)
    np.testing.assert_allclose(got[: 4 * n * h].reshape(n, 4 * h), tg.grad.numpy(), **tol)
    np.testing.assert_allclose(got[4 * n * h :].reshape(n, h), tc.grad.numpy(), **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("n", "h", "pad", "xorder", "horder", "has_h"), [
    (3, 9, 0, (0, 1, 2), (0, 1, 2), True),
    (1, 1, 2, (1, 0, 2), (2, 0, 1), True),
    (3, 17, 4, (2, 1, 0), (0, 1, 2), False),
])
def test_gru_kernels_match_the_reference(dev, dtype, n, h, pad, xorder, horder, has_h):
    rng = np.random.default_rng(n * 10 + h + 1)
    isz = np.dtype(dtype).itemsize
    x_base, x, ldx = _wide(rng, n, 3 * h, pad, dtype)
    h_base, hh, ldh = _wide(rng, n, 3 * h, pad + 2, dtype)
    bias, h_prev, dh = ((rng.standard_normal(s)).astype(dtype) for s in ((4 * h,), (n, h), (n, h)))
    dt = 0 if dtype == np.float32 else 1
    imm = dev.put(np.array([dt, 0, n, h, ldx, ldh if has_h else 0, int(has_h), *xorder, *horder], np.int64))
    px = dev.put(x_base) + np.uint64(pad * isz)
    ph = dev.put(h_base) + np.uint64((pad + 2) * isz) if has_h else np.uint64(0)
    pp, out = dev.put(h_prev), dev.empty(5 * n * h * isz)
    _launch(dev, f"fc_cu_gru_fwd_{_sfx(dtype)}", n * h, [imm, px, ph, dev.put(bias), pp, out])
    y = dev.get(out, (5, n, h), dtype)
    np.testing.assert_allclose(y, gru_forward_ref(x, hh if has_h else None, bias, h_prev, xorder, horder),
                               **_tol(dtype))

    imm_b = dev.put(np.array([dt, 1, n, h, 0, 0, 0, *xorder, *horder], np.int64))
    grads = dev.empty(7 * n * h * isz)
    _launch(dev, f"fc_cu_gru_bwd_{_sfx(dtype)}", n * h, [imm_b, dev.put(y), pp, dev.put(dh), grads])
    got = dev.get(grads, (7 * n * h,), dtype)
    wx, wh, wp = gru_backward_ref(y, h_prev, dh, xorder, horder)
    np.testing.assert_allclose(got[: 3 * n * h].reshape(n, 3 * h), wx, **_tol(dtype))
    np.testing.assert_allclose(got[3 * n * h : 6 * n * h].reshape(n, 3 * h), wh, **_tol(dtype))
    np.testing.assert_allclose(got[6 * n * h :].reshape(n, h), wp, **_tol(dtype))


def test_gru_kernels_match_torch(dev):
    """torch's GRU step equations (b_hn inside r * (...)), float64: h and every input gradient."""
    rng = np.random.default_rng(12)
    n, h = 3, 9
    xg, hg, h_prev, dh = (rng.standard_normal(s) * 2 for s in ((n, 3 * h), (n, 3 * h), (n, h), (n, h)))
    bias = rng.standard_normal(4 * h)
    imm = dev.put(np.array([1, 0, n, h, 3 * h, 3 * h, 1, 0, 1, 2, 0, 1, 2], np.int64))
    pp, out = dev.put(h_prev), dev.empty(5 * n * h * 8)
    _launch(dev, "fc_cu_gru_fwd_f64", n * h, [imm, dev.put(xg), dev.put(hg), dev.put(bias), pp, out])
    imm_b = dev.put(np.array([1, 1, n, h, 0, 0, 0, 0, 1, 2, 0, 1, 2], np.int64))
    grads = dev.empty(7 * n * h * 8)
    _launch(dev, "fc_cu_gru_bwd_f64", n * h, [imm_b, out, pp, dev.put(dh), grads])

    tx, th_, tp = (torch.tensor(a, requires_grad=True) for a in (xg, hg, h_prev))
    b = torch.tensor(bias)
    xr, xz, xn = tx.split(h, dim=1)
    hr, hz, hn = th_.split(h, dim=1)
    r, z = torch.sigmoid(xr + hr + b[:h]), torch.sigmoid(xz + hz + b[h : 2 * h])
    nn = torch.tanh(xn + r * (hn + b[3 * h :]) + b[2 * h : 3 * h])
    h_want = (1 - z) * nn + z * tp
    h_want.backward(torch.tensor(dh))
    tol = _tol(np.float64)
    got = dev.get(grads, (7 * n * h,), np.float64)
    np.testing.assert_allclose(dev.get(out, (5, n, h), np.float64)[4], h_want.detach().numpy(), **tol)
    np.testing.assert_allclose(got[: 3 * n * h].reshape(n, 3 * h), tx.grad.numpy(), **tol)
    np.testing.assert_allclose(got[3 * n * h : 6 * n * h].reshape(n, 3 * h), th_.grad.numpy(), **tol)
    # hh is an input of its own here, so h_prev's gradient is the z * h_prev path alone.
    np.testing.assert_allclose(got[6 * n * h :].reshape(n, h), tp.grad.numpy(), **tol)
