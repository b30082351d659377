"""fuse_conv: the conv composite's forward, data-gradient and weight-gradient products become the
conv ops of flexcore.ir.fused_conv, with the reference backend's values (cpu backend)."""

from __future__ import annotations

import numpy as np
import pytest

import flexcore as fc
from flexcore.passes import optimize
from flexcore.passes.conv import fuse_conv

pytestmark = pytest.mark.skipif(not fc._native.available, reason="the native extension is not built")

CONFIGS = [
    ((4, 3, 10, 10), (5, 3, 3, 3), {"padding": 1}),
    ((3, 4, 9, 11), (6, 2, 3, 2), {"stride": (2, 3), "padding": ((1, 0), (2, 1)), "dilation": (2, 1), "groups": 2}),
    ((3, 4, 9, 11), (6, 4, 1, 1), {}),
    ((3, 4, 9, 11), (6, 4, 1, 1), {"stride": 2, "padding": 1}),
    ((3, 2, 5, 4), (2, 2, 3, 3), {"stride": 2, "padding": ((1, 1), (1, 1))}),
    ((5, 2, 17), (4, 2, 5), {"padding": "same"}),
    ((5, 2, 17), (4, 1, 3), {"stride": 2, "dilation": 2, "groups": 2}),
    ((7, 3, 8, 8), (2, 3, 3, 3), {"stride": 3}),
    # unit stride, output as wide as the input: conv_tmpl.h's whole-plane im2col / col2im rows
    ((2, 3, 2, 5), (4, 3, 3, 3), {"padding": 1}),
    ((3, 2, 6, 7), (3, 2, 3, 3), {"padding": ((1, 1), (0, 2))}),
    ((2, 2, 7, 9), (3, 2, 3, 3), {"padding": "same", "dilation": 2}),
    ((2, 1, 5, 1), (2, 1, 3, 1), {"padding": ((1, 1), (0, 0))}),
    ((3, 4, 5, 6), (2, 2, 5, 3), {"padding": ((2, 2), (1, 1)), "groups": 2}),
]


def _graph(xs, ws, kw, dtype):
    x, w = fc.placeholder(xs, dtype, name="x"), fc.placeholder(ws, dtype, name="w")
    y = (fc.conv2d if len(xs) == 4 else fc.conv1d)(x, w, **kw)
    c = fc.const(np.random.default_rng(1).standard_normal(y.shape).astype(dtype))
    gx, gw = fc.grad(fc.sum(fc.tanh(y) * c), [x, w])
    return [x, w], [y, gx, gw]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("xs", "ws", "kw"), CONFIGS)
def test_conv_and_its_gradients_become_conv_ops_with_the_reference_values(xs, ws, kw, dtype):
    phs, outs = _graph(xs, ws, kw, dtype)
    ops = [v.op for v in fc.ir.toposort(fuse_conv(optimize(outs)))]
    assert {"conv_forward", "conv_backward_data", "conv_backward_weight"} <= set(ops)
    assert "unfold" not in ops and "fold" not in ops
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)]
    ref = fc.function(phs, outs, backend="reference")(*feeds)
    cpu = fc.function(phs, outs, backend="cpu")
    assert not cpu._kernels.lowered.fallback_ops
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for k, (g, r) in enumerate(zip(cpu(*feeds), ref, strict=True)):
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol * float(np.abs(r).max()), err_msg=f"output {k}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("xs", "ws", "kw"), [CONFIGS[0], CONFIGS[1], CONFIGS[5], ((1, 1, 6, 5), (3, 1, 3, 3), {})])
def test_a_conv_layer_bias_add_becomes_conv_forward_bias(xs, ws, kw, dtype):
    """relu(conv(x, w, b)) and its gradients: the add of the bias is folded into the conv."""
    x, w = fc.placeholder(xs, dtype, name="x"), fc.placeholder(ws, dtype, name="w")
    b = fc.placeholder((ws[0],), dtype, name="b")
    y = fc.relu((fc.conv2d if len(xs) == 4 else fc.conv1d)(x, w, b, **kw))
    c = fc.const(np.random.default_rng(1).standard_normal(y.shape).astype(dtype))
    grads = fc.grad(fc.sum(y * c), [x, w, b])
    ops = [v.op for v in fc.ir.toposort(fuse_conv(optimize([y, *grads])))]
    assert "conv_forward_bias" in ops and "conv_forward" not in ops and "add" not in ops
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal(s).astype(dtype) for s in (xs, ws, (ws[0],))]
    ref = fc.function([x, w, b], [y, *grads], backend="reference")(*feeds)
    cpu = fc.function([x, w, b], [y, *grads], backend="cpu")
    assert not cpu._kernels.lowered.fallback_ops
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for k, (g, r) in enumerate(zip(cpu(*feeds), ref, strict=True)):
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol * float(np.abs(r).max()), err_msg=f"output {k}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("xs", "pool"), [((3, 2, 8, 10), (2, {})), ((1, 3, 7, 7), (2, {})),
                                          ((2, 2, 9, 8), (3, {"stride": 2, "padding": 1}))])
def test_conv_relu_max_pool_fold_the_relu_into_conv_and_pool_gradient(xs, pool, dtype):
    """relu(conv(x, w, b)) then max pooling, trained: the relu is the conv's epilogue and its
    gradient part of max_pool_grad (relu=True); no elementwise op touches the conv's output.
    A coarse grid with a negative bias makes ties and all-zero windows (where the mask bites)."""
    x, w = fc.placeholder(xs, dtype, name="x"), fc.placeholder((4, xs[1], 3, 3), dtype, name="w")
    b = fc.placeholder((4,), dtype, name="b")
    y = fc.max_pool2d(fc.relu(fc.conv2d(x, w, b, padding=1)), pool[0], **pool[1])
    c = fc.const(np.random.default_rng(1).standard_normal(y.shape).astype(dtype))
    grads = fc.grad(fc.sum(y * c), [x, w, b])
    graph = fc.ir.toposort(fuse_conv(optimize([y, *grads])))
    ops = [v.op for v in graph]
    assert [v.attr["act"] for v in graph if v.op == "conv_forward_bias"] == ["relu"]
    assert [v.attr["relu"] for v in graph if v.op == "max_pool_grad"] == [True]
    assert "where" not in ops and "gt" not in ops
    rng = np.random.default_rng(0)
    feeds = [np.round(rng.standard_normal(xs) * 2).astype(dtype) / 2,
             np.round(rng.standard_normal((4, xs[1], 3, 3)) * 2).astype(dtype) / 2,
             np.array([-1.0, 0.0, 0.5, -3.0], dtype)]
    ref = fc.function([x, w, b], [y, *grads], backend="reference")(*feeds)
    cpu = fc.function([x, w, b], [y, *grads], backend="cpu")
    assert not cpu._kernels.lowered.fallback_ops
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for k, (g, r) in enumerate(zip(cpu(*feeds), ref, strict=True)):
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol * float(np.abs(r).max()), err_msg=f"output {k}")


def test_a_conv_output_read_elsewhere_keeps_its_add():
    """The bias is not folded when the conv's output itself is also used."""
    x, w = fc.placeholder((2, 3, 5, 5), name="x"), fc.placeholder((4, 3, 3, 3), name="w")
    b = fc.placeholder((4,), name="b")
    y = fc.conv2d(x, w, padding=1)
    ops = [v.op for v in fc.ir.toposort(fuse_conv(optimize([y + fc.reshape(b, (1, 4, 1, 1)), y * 2.0])))]
    assert "conv_forward" in ops and "conv_forward_bias" not in ops


def test_other_products_are_left_alone():
    a, b = fc.placeholder((2, 3, 4)), fc.placeholder((4, 5))
    y = fc.matmul(a, b)
    assert fuse_conv([y]) == [y]


def test_the_training_step_no_longer_holds_every_window():
    """The fused step's arena holds one image's windows per thread, not the batch's."""
    phs, outs = _graph((32, 16, 14, 14), (32, 16, 3, 3), {"padding": 1}, np.float32)
    windows = 32 * 16 * 14 * 14 * 9 * 4
    f = fc.function(phs, outs, backend="cpu")
    assert f._kernels.lowered.arena_bytes < windows


POOLS = [
    ((4, 3, 10, 10), 2, {}),
    # 2x2 stride 2 inside the image: pool.c's own path (rows of 1 to 19 windows, odd sizes)
    ((1, 1, 2, 2), 2, {}),
    ((3, 5, 28, 28), 2, {}),
    ((1, 3, 14, 14), 2, {}),
    ((3, 2, 17, 33), 2, {}),
    ((1, 1, 6, 9), 2, {}),
    ((2, 3, 7, 38), 2, {}),
    ((4, 3, 9, 10), 3, {"stride": 2, "padding": 1}),
    ((4, 3, 9, 10), (2, 3), {"stride": 1, "padding": "same"}),
    ((4, 3, 17), 3, {"stride": 2}),
    ((2, 3, 8), 2, {}),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("xs", "k", "kw"), POOLS)
def test_max_pooling_and_its_gradient_become_pool_ops_with_the_reference_values(xs, k, kw, dtype):
    """Inputs on a coarse grid, so windows hold ties (which share the gradient)."""
    x = fc.placeholder(xs, dtype, name="x")
    y = (fc.max_pool2d if len(xs) == 4 else fc.max_pool1d)(x * 1.0, k, **kw)
    c = fc.const(np.random.default_rng(2).standard_normal(y.shape).astype(dtype))
    (gx,) = fc.grad(fc.sum(y * c), [x])
    ops = {v.op for v in fc.ir.toposort(fuse_conv(optimize([y, gx])))}
    assert {"max_pool_forward", "max_pool_grad"} <= ops  # the tie count is folded into the gradient
    assert not {"max_pool_ties", "max_pool_backward"} & ops
    assert "unfold" not in ops and "fold" not in ops
    feed = np.round(np.random.default_rng(3).standard_normal(xs) * 2).astype(dtype) / 2
    ref = fc.function([x], [y, gx], backend="reference")(feed)
    got = fc.function([x], [y, gx], backend="cpu")(feed)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-6 if dtype == np.float32 else 1e-13, atol=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("xs", "k", "kw"), POOLS)
def test_average_pooling_and_its_gradient_become_window_ops_with_the_reference_values(xs, k, kw, dtype):
    """The weights c are an input: with a constant c the (linear) gradient would fold away."""
    x = fc.placeholder(xs, dtype, name="x")
    y = (fc.avg_pool2d if len(xs) == 4 else fc.avg_pool1d)(x * 1.0, k, **kw)
    c = fc.placeholder(y.shape, dtype, name="c")
    (gx,) = fc.grad(fc.sum(y * c), [x])
    ops = {v.op for v in fc.ir.toposort(fuse_conv(optimize([y, gx])))}
    assert {"window_sum", "window_spread"} <= ops
    assert "unfold" not in ops and "fold" not in ops
    rng = np.random.default_rng(3)
    feeds = [rng.standard_normal(xs).astype(dtype), rng.standard_normal(y.shape).astype(dtype)]
    ref = fc.function([x, c], [y, gx], backend="reference")(*feeds)
    got = fc.function([x, c], [y, gx], backend="cpu")(*feeds)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol * float(np.abs(r).max()))
