"""Gate blocks of one GEMM result feeding fused elementwise chains, as an LSTM cell makes them:
the cpu lowering may read the column blocks in place (fused_ew's STRIDED input mode), which the
CUDA interpreter must read alike."""

from __future__ import annotations

import numpy as np
import pytest

import flexcore as fc


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gate_blocks_of_a_product(cuda_backend, dtype):
    rng = np.random.default_rng(11)
    b, n_in, h = 5, 6, 7
    x = fc.placeholder((b, n_in), dtype, name="x")
    w = fc.placeholder((n_in, 4 * h), dtype, name="w")
    c = fc.placeholder((b, h), dtype, name="c")
    z = fc.matmul(x, w)
    i, f, g, o = (z[:, k * h:(k + 1) * h] for k in range(4))
    c2 = fc.sigmoid(f) * c + fc.sigmoid(i) * fc.tanh(g)
    h2 = fc.sigmoid(o) * fc.tanh(c2)
    feeds = [rng.standard_normal(s).astype(dtype) for s in ((b, n_in), (n_in, 4 * h), (b, h))]
    got = fc.function([x, w, c], [c2, h2], backend=cuda_backend)(*feeds)
    ref = fc.function([x, w, c], [c2, h2], backend="reference")(*feeds)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    for g_, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g_, r, **tol)
