"""CONV and POOL on the cuda backend (kernels/conv.cu, in emulation) against the reference backend:
dilation, strides, asymmetric padding and groups on odd sizes, forward and every gradient, and
max pooling's ties and all-padding windows. The registry cases (test_cuda_backend.py) add more."""

from __future__ import annotations

import numpy as np
import pytest

import flexcore as fc
from flexcore.backends import lowering
from flexcore.ir.core import apply


def _run(backend, phs, outs, feeds):
    f = fc.function(phs, outs, backend=backend)
    return f, f(*feeds)


def _check(cuda_backend, phs, outs, feeds, dtype, opcode):
    f, got = _run(cuda_backend, phs, outs, feeds)
    _, ref = _run("reference", phs, outs, feeds)
    ops = lowering.opcodes_of(f._kernels.lowered.code)
    assert (opcode is None or opcode in ops) and lowering.CALLBACK not in ops
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, **tol)
    return f


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("x_shape", "w_shape", "at"), [
    ((3, 4, 9, 7), (6, 2, 3, 2), dict(stride=(2, 1), padding=((1, 2), (0, 1)), dilation=(2, 3), groups=2)),
    ((2, 3, 5, 6), (5, 3, 1, 1), dict(stride=(2, 2), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1)),
    ((2, 6, 13), (3, 2, 4), dict(stride=(3,), padding=((2, 1),), dilation=(2,), groups=3)),
])
def test_conv_modes(cuda_backend, dtype, x_shape, w_shape, at):
    """The three conv ops as fuse_conv makes them, on odd sizes with every geometry attribute."""
    rng = np.random.default_rng(7)
    x = fc.placeholder(x_shape, dtype, name="x")
    w = fc.placeholder(w_shape, dtype, name="w")
    y = apply("conv_forward", x, w, **at)
    gy = fc.placeholder(y.shape, dtype, name="gy")
    dx = apply("conv_backward_data", gy, w, shape=x_shape, **at)
    dw = apply("conv_backward_weight", x, gy, kernel=w_shape[2:], **at)
    b = fc.placeholder((w_shape[0],), dtype, name="b")
    yb = apply("conv_forward_bias", x, w, b, **at)
    feeds = [rng.standard_normal(s).astype(dtype) for s in (x_shape, w_shape, y.shape, (w_shape[0],))]
    _check(cuda_backend, [x, w, gy, b], [y, dx, dw, yb], feeds, dtype, lowering.CONV)


def test_conv_layer_gradients(cuda_backend):
    """conv2d and its gradients through fc.grad: fuse_conv runs for the cuda backend too."""
    rng = np.random.default_rng(5)
    x = fc.placeholder((2, 3, 8, 7), np.float64, name="x")
    w = fc.placeholder((4, 3, 3, 3), np.float64, name="w")
    y = fc.conv2d(x, w, stride=2, padding=1, dilation=(1, 2))
    g = fc.placeholder(y.shape, np.float64, name="g")
    gx, gw = fc.grad(fc.sum(y * g), [x, w])
    feeds = [rng.standard_normal(s) for s in ((2, 3, 8, 7), (4, 3, 3, 3), y.shape)]
    f = _check(cuda_backend, [x, w, g], [y, gx, gw], feeds, np.float64, lowering.CONV)
    assert {"conv_forward", "conv_backward_data", "conv_backward_weight"} <= {st.op for st in f.plan.steps}


def test_conv_layer_with_bias(cuda_backend):
    """max_pool(relu(conv2d(x, w, b))): bias and relu folded into the convolution
    (conv_forward_bias, act relu), the relu's gradient into max_pool_grad (GRAD_RELU)."""
    rng = np.random.default_rng(6)
    x = fc.placeholder((3, 2, 7, 6), np.float32, name="x")
    w = fc.placeholder((5, 2, 3, 3), np.float32, name="w")
    b = fc.placeholder((5,), np.float32, name="b")
    y = fc.max_pool2d(fc.relu(fc.conv2d(x, w, b, padding=1)), 2)
    g = fc.placeholder(y.shape, np.float32, name="g")
    grads = fc.grad(fc.sum(y * g), [x, w, b])
    feeds = [rng.standard_normal(s).astype(np.float32) for s in ((3, 2, 7, 6), (5, 2, 3, 3), (5,), y.shape)]
    f = _check(cuda_backend, [x, w, b, g], [y, *grads], feeds, np.float32, lowering.CONV)
    steps = f.plan.steps
    assert [st.attrs["act"] for st in steps if st.op == "conv_forward_bias"] == ["relu"]
    assert [st.attrs["relu"] for st in steps if st.op == "max_pool_grad"] == [True]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_forward_and_gradient(cuda_backend, dtype, kind):
    rng = np.random.default_rng(3)
    # few distinct values: windows with tied maxima; padding 2 with kernel 3 and stride 1 gives
    # windows with only two taps inside the image
    xv = rng.integers(-2, 2, size=(2, 3, 7, 5)).astype(dtype)
    x = fc.placeholder(xv.shape, dtype, name="x")
    pool = fc.max_pool2d if kind == "max" else fc.avg_pool2d
    y = pool(x, (3, 2), stride=(2, 1), padding=((2, 1), (1, 0)))
    g = fc.placeholder(y.shape, dtype, name="g")
    (gx,) = fc.grad(fc.sum(y * g), [x])
    f = _check(cuda_backend, [x, g], [y, gx], [xv, rng.standard_normal(y.shape).astype(dtype)], dtype,
               lowering.POOL)
    ops = {st.op for st in f.plan.steps}
    assert ops >= ({"max_pool_forward", "max_pool_grad"} if kind == "max" else {"window_sum", "window_spread"})
