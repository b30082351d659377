"""The fused LSTM/GRU cell kernels (kernels/rnn_gates.cu) in emulation, forward and backward,
against torch autograd of torch's own cell equations (float64), on odd sizes."""

from __future__ import annotations

import numpy as np
import pytest

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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lstm_cell_forward_backward(dev, dtype):
    rng = np.random.default_rng(11)
    n, h = 5, 7
    gates, c_prev, dh, dc = (rng.standard_normal(s) * 2 for s in ((n, 4 * h), (n, h), (n, h), (n, h)))
    gates, c_prev, dh, dc = (a.astype(dtype) for a in (gates, c_prev, dh, dc))
    sfx = "f32" if dtype == np.float32 else "f64"
    isz = np.dtype(dtype).itemsize
    c, hout, act = dev.empty(n * h * isz), dev.empty(n * h * isz), dev.empty(n * 4 * h * isz)
    pg, pc = dev.put(gates), dev.put(c_prev)
    _launch(dev, f"fc_cu_lstm_fwd_{sfx}", n * h, [np.int64(n), np.int64(h), pg, pc, c, hout, act])
    dg, dcp = dev.empty(n * 4 * h * isz), dev.empty(n * h * isz)
    _launch(dev, f"fc_cu_lstm_bwd_{sfx}", n * h,
            [np.int64(n), np.int64(h), act, pc, c, dev.put(dh), dev.put(dc), dg, dcp])

    tg = torch.tensor(gates.astype(np.float64), requires_grad=True)
    tc = torch.tensor(c_prev.astype(np.float64), requires_grad=True)
    i, f, g, o = tg.split(h, dim=1)
    c_want = torch.sigmoid(f) * tc + torch.sigmoid(i) * torch.tanh(g)
    h_want = torch.sigmoid(o) * torch.tanh(c_want)
    torch.autograd.backward([h_want, c_want],
                            [torch.tensor(dh.astype(np.float64)), torch.tensor(dc.astype(np.float64))])
    np.testing.assert_allclose(dev.get(c, (n, h), dtype), c_want.detach().numpy(), **_tol(dtype))
    np.testing.assert_allclose(dev.get(hout, (n, h), dtype), h_want.detach().numpy(), **_tol(dtype))
    np.testing.assert_allclose(dev.get(dg, (n, 4 * h), dtype), tg.grad.numpy(), **_tol(dtype))
    np.testing.assert_allclose(dev.get(dcp, (n, h), dtype), tc.grad.numpy(), **_tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gru_cell_forward_backward(dev, dtype):
    rng = np.random.default_rng(12)
    n, h = 3, 9
    xg, hg, h_prev, dh = (rng.standard_normal(s) * 2 for s in ((n, 3 * h), (n, 3 * h), (n, h), (n, h)))
    xg, hg, h_prev, dh = (a.astype(dtype) for a in (xg, hg, h_prev, dh))
    sfx = "f32" if dtype == np.float32 else "f64"
    isz = np.dtype(dtype).itemsize
    hout, act = dev.empty(n * h * isz), dev.empty(n * 3 * h * isz)
    px, ph, pp = dev.put(xg), dev.put(hg), dev.put(h_prev)
    _launch(dev, f"fc_cu_gru_fwd_{sfx}", n * h, [np.int64(n), np.int64(h), px, ph, pp, hout, act])
    dx, dhh, dhp = dev.empty(n * 3 * h * isz), dev.empty(n * 3 * h * isz), dev.empty(n * h * isz)
    _launch(dev, f"fc_cu_gru_bwd_{sfx}", n * h, [np.int64(n), np.int64(h), act, ph, pp, dev.put(dh), dx, dhh, dhp])

    tx, th, tp = (torch.tensor(a.astype(np.float64), requires_grad=True) for a in (xg, hg, h_prev))
    xr, xz, xn = tx.split(h, dim=1)
    hr, hz, hn = th.split(h, dim=1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    nn = torch.tanh(xn + r * hn)
    h_want = (1 - z) * nn + z * tp
    h_want.backward(torch.tensor(dh.astype(np.float64)))
    np.testing.assert_allclose(dev.get(hout, (n, h), dtype), h_want.detach().numpy(), **_tol(dtype))
    np.testing.assert_allclose(dev.get(dx, (n, 3 * h), dtype), tx.grad.numpy(), **_tol(dtype))
    np.testing.assert_allclose(dev.get(dhh, (n, 3 * h), dtype), th.grad.numpy(), **_tol(dtype))
    np.testing.assert_allclose(dev.get(dhp, (n, h), dtype), tp.grad.numpy(), **_tol(dtype))
