"""Kernels launched directly through the emulator on odd sizes, against numpy: the GEMM in every
transposition variant, batched, with the bias + activation epilogue; block reductions that need
several rounds; softmax (the SOFTMAX instruction, which the lowering does not emit yet); the fused
interpreter with every input mode. The backend suite (test_cuda_backend.py) covers the rest."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from flexcore.backends.cuda import TILE


class Dev:
    def __init__(self, drv):
        self.drv = drv
        self.ptrs = []

    def put(self, a):
        a = np.ascontiguousarray(a)
        p = self.drv.alloc(a.nbytes)
        self.ptrs.append(p)
        self.drv.htod(p, a)
        return np.uint64(p)

    def empty(self, nbytes):
        p = self.drv.alloc(nbytes)
        self.ptrs.append(p)
        return np.uint64(p)

    def get(self, p, shape, dtype):
        a = np.empty(shape, dtype)
        self.drv.dtoh(a, int(p))
        return a

    def close(self):
        for p in self.ptrs:
            self.drv.free(p)


@pytest.fixture
def dev(emu_driver):
    d = Dev(emu_driver)
    yield d
    d.close()


def _tol(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)


ACTS = {0: lambda v: v, 1: lambda v: np.maximum(v, 0), 2: lambda v: 1 / (1 + np.exp(-v)), 3: np.tanh}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("ta", "tb"), list(itertools.product((0, 1), repeat=2)))
def test_gemm_variants_batched_with_epilogue(dev, dtype, ta, tb):
    rng = np.random.default_rng(ta * 2 + tb)
    batch, m, n, k = 3, 67, 71, 35  # none a multiple of the tile; m, n span two tiles, k three slices
    a = rng.standard_normal((batch, k, m) if ta else (batch, m, k)).astype(dtype)
    b = rng.standard_normal((batch, n, k) if tb else (batch, k, n)).astype(dtype)
    bias = rng.standard_normal(n).astype(dtype)
    opa = a.transpose(0, 2, 1) if ta else a
    opb = b.transpose(0, 2, 1) if tb else b
    sfx = "f32" if dtype == np.float32 else "f64"
    for act, use_bias in [(0, False), (1, True), (2, True), (3, False)]:
        c = dev.empty(batch * m * n * a.itemsize)
        lda, ldb = a.shape[2], b.shape[2]
        dev.drv.launch(f"fc_cu_gemm_{sfx}", (1, 1, 2), (TILE, TILE, 1), 0, [
            np.int32(ta), np.int32(tb), np.int64(batch), np.int64(m), np.int64(n), np.int64(k), dev.put(a),
            np.int64(lda), np.int64(a[0].size), dev.put(b), np.int64(ldb), np.int64(b[0].size), c, np.int64(n),
            np.int64(m * n), dev.put(bias) if use_bias else np.uint64(0), np.int32(act)])
        want = ACTS[act](opa @ opb + (bias if use_bias else 0))
        np.testing.assert_allclose(dev.get(c, (batch, m, n), dtype), want, **_tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_block_reductions_and_softmax_on_long_rows(dev, dtype, emu_driver):
    rng = np.random.default_rng(7)
    rows, cols = 5, 1237  # many elements per thread, several tree rounds
    x = rng.standard_normal((rows, cols)).astype(dtype) * 4
    x[2, 100] = np.nan
    sfx = "f32" if dtype == np.float32 else "f64"
    blk = emu_driver.block_size
    px = dev.put(x)
    y = dev.empty(rows * x.itemsize)
    dev.drv.launch(f"fc_cu_reduce_rows_sum_{sfx}", (3,), (blk,), 0, [np.int64(rows), np.int64(cols), px, y])
    np.testing.assert_allclose(dev.get(y, rows, dtype), x.astype(np.float64).sum(1).astype(dtype), **_tol(dtype))
    dev.drv.launch(f"fc_cu_reduce_rows_max_{sfx}", (3,), (blk,), 0, [np.int64(rows), np.int64(cols), px, y])
    np.testing.assert_array_equal(dev.get(y, rows, dtype), x.max(1))
    for log in (0, 1):
        out = dev.empty(x.nbytes)
        dev.drv.launch(f"fc_cu_softmax_{sfx}", (2,), (blk,), 0,
                       [np.int32(log), np.int64(rows), np.int64(cols), px, out])
        m = x.max(1, keepdims=True)
        e = np.exp(x - m)
        s = e.astype(np.float64).sum(1, keepdims=True)
        want = (x - m) - np.log(s).astype(dtype) if log else e / s.astype(dtype)
        np.testing.assert_allclose(dev.get(out, x.shape, dtype), want, **_tol(dtype))


def test_fused_interpreter_every_input_mode(dev):
    rng = np.random.default_rng(3)
    rows, cols = 7, 13
    full = rng.standard_normal((rows, cols))
    scalar, row, col = np.array([0.5]), rng.standard_normal(cols), rng.standard_normal(rows)
    add, mul, tanh, _EW_GT, _EW_WHERE, _EW_CONST = 12, 14, 7, 19, 25, 26  # fc_ew_code (flexcore/kernels.h)
    # r4 = full + row; r5 = r4 * col; r6 = tanh(r5); r7 = 1.5; r8 = r6 > scalar; r9 = where(r8, r6, r7)
    code = [add, 0, 2, 0, mul, 4, 3, 0, tanh, 5, 0, 0, _EW_CONST, 0, 0, 0, _EW_GT, 6, 1, 0, _EW_WHERE, 8, 6, 7]
    prog = np.array([0, 1, 2, 3] + code + [0, 0, 0, 0], np.int32)
    ins = np.array([int(dev.put(a)) for a in (full, scalar, row, col)], np.uint64)
    out = dev.empty(full.nbytes)
    dev.drv.launch("fc_cu_fused_f64", (2,), (32,), 0, [dev.put(prog), np.int32(4), np.int32(6), dev.put(ins),
                                                       dev.put(np.array([1.5])), np.int64(full.size), np.int64(cols),
                                                       out])
    r6 = np.tanh((full + row) * col[:, None])
    np.testing.assert_allclose(dev.get(out, full.shape, np.float64), np.where(r6 > 0.5, r6, 1.5),
                               rtol=1e-14, atol=1e-15)


def test_fused_interpreter_strided_input(dev):
    """STRIDED: a column block of a wider matrix read in place (rows ld apart)."""
    rng = np.random.default_rng(4)
    rows, cols, ld = 5, 7, 19
    wide, full = rng.standard_normal((rows, ld)), rng.standard_normal((rows, cols))
    block = wide[:, 3:3 + cols]
    mul, sigmoid = 14, 6
    # r2 = sigmoid(block); r3 = r2 * full
    prog = np.array([4, 0] + [sigmoid, 0, 0, 0, mul, 2, 1, 0] + [ld, 0], np.int32)
    base = int(dev.put(wide)) + 3 * 8
    ins = np.array([base, int(dev.put(full))], np.uint64)
    out = dev.empty(full.nbytes)
    dev.drv.launch("fc_cu_fused_f64", (3,), (16,), 0, [dev.put(prog), np.int32(2), np.int32(2), dev.put(ins),
                                                       dev.put(np.array([0.0])), np.int64(full.size), np.int64(cols),
                                                       out])
    np.testing.assert_allclose(dev.get(out, full.shape, np.float64), full / (1 + np.exp(-block)), rtol=1e-14)
