"""Post-autodiff convolution ops: what `flexcore.passes.conv.fuse_conv` turns the unfold/matmul
composite of conv1d/conv2d (and its gradients) into, so the cpu backend runs each as one kernel
(`fc_conv`, csrc/include/flexcore/conv.h: im2col into a small per-thread scratch + GEMM, the
output written in (N, C, *spatial) directly).

- `conv_forward(x, w)`: y = conv(x, w), x (N, C, *S), w (O, C/groups, *kernel).
- `conv_forward_bias(x, w, b, act)`: act(conv(x, w) + b), b (O,) on the channel axis and act
  "identity" or "relu" (where(y > 0, y, 0)): a conv layer's bias add, and its relu, folded
  into the convolution by fuse_conv.
- `conv_backward_data(gy, w, shape)`: the input gradient fold(gy-windows @ w) of that conv,
  for an input of `shape`.
- `conv_backward_weight(x, gy, kernel)`: the weight gradient, sum over images of
  windows(x)^T @ gy.

Attributes are those of `unfold` (stride, padding pairs, dilation) plus groups.  Each reference
implementation calls the numpy functions of the graph it replaces in the same order (unfold,
reshape, transpose, matmul, fold), so it gives the unfused graph's numbers.  None has a gradient
rule: they exist only after differentiation.
"""

from __future__ import annotations

import math

import numpy as np

from .core import FLOAT_DTYPES, REQUIRED, ShapeError, register_op
from .ops import _fold_impl, _unfold_impl, _window_geometry

__all__ = ["CONV_OPS", "POOL_OPS"]

CONV_OPS = ("conv_forward", "conv_forward_bias", "conv_backward_data", "conv_backward_weight")
_ATTRS = {"stride": REQUIRED, "padding": REQUIRED, "dilation": REQUIRED, "groups": 1}


def _check(op, x_shape, w_shape, stride, padding, dilation, groups, dts):
    """The output spatial shape of the convolution of an input of x_shape with w_shape."""
    if len(set(dts)) != 1 or dts[0] not in FLOAT_DTYPES:
        raise ShapeError(f"op '{op}': operands must share one float dtype, got {', '.join(map(str, dts))}")
    nd = len(w_shape) - 2
    if nd not in (1, 2) or len(x_shape) != nd + 2:
        raise ShapeError(f"op '{op}': input {x_shape} and weight {w_shape} are not a 1-d or 2-d convolution")
    n, c = x_shape[:2]
    o, cg = w_shape[:2]
    if groups < 1 or c % groups or o % groups or cg != c // groups:
        raise ShapeError(f"op '{op}': input {x_shape}, weight {w_shape} and groups={groups} do not fit")
    return _window_geometry(op, x_shape[2:], tuple(w_shape[2:]), stride, padding, dilation)


def _windows(x, kernel, stride, padding, dilation, groups):
    """unfold(x) as the conv composite lays it out: (N, g, P, C/g * K)."""
    n, c = x.shape[:2]
    cols = _unfold_impl(x, kernel, stride, padding, dilation, 0.0)
    out_sp = cols.shape[2 : 2 + len(kernel)]
    p, kk = math.prod(out_sp), math.prod(kernel)
    cols = np.reshape(cols, (n, groups, c // groups, p, kk))
    return np.reshape(np.transpose(cols, (0, 1, 3, 2, 4)), (n, groups, p, (c // groups) * kk)), out_sp


def _grad_rows(gy, groups):
    """gy (N, O, *out) as (N, g, P, O/g)."""
    n, o = gy.shape[:2]
    return np.transpose(np.reshape(gy, (n, groups, o // groups, -1)), (0, 1, 3, 2))


def _forward_impl(x, w, stride, padding, dilation, groups):
    kernel = tuple(w.shape[2:])
    cols, out_sp = _windows(x, kernel, stride, padding, dilation, groups)
    o, k = w.shape[0], cols.shape[-1]
    wm = np.transpose(np.reshape(w, (1, groups, o // groups, k)), (0, 1, 3, 2))
    y = np.matmul(cols, wm)
    return np.reshape(np.transpose(y, (0, 1, 3, 2)), (x.shape[0], o) + tuple(out_sp))


def _forward_bias_impl(x, w, b, stride, padding, dilation, groups, act):
    y = _forward_impl(x, w, stride, padding, dilation, groups)
    y = y + np.reshape(b, (1, -1) + (1,) * (y.ndim - 2))
    return np.where(y > 0, y, np.zeros((), y.dtype)) if act == "relu" else y


def _backward_data_impl(gy, w, shape, stride, padding, dilation, groups):
    kernel = tuple(w.shape[2:])
    n, c = shape[:2]
    o, cg = w.shape[:2]
    kk = math.prod(kernel)
    wr = np.reshape(w, (1, groups, o // groups, cg * kk))
    d = np.matmul(_grad_rows(gy, groups), wr)  # (N, g, P, K)
    out_sp = gy.shape[2:]
    d = np.reshape(d, (n, groups, math.prod(out_sp), cg, kk))
    d = np.reshape(np.transpose(d, (0, 1, 3, 2, 4)), (n, c) + tuple(out_sp) + kernel)
    return _fold_impl(d, tuple(shape), kernel, stride, padding, dilation)


def _backward_weight_impl(x, gy, kernel, stride, padding, dilation, groups):
    cols, _ = _windows(x, tuple(kernel), stride, padding, dilation, groups)
    dw = np.matmul(np.transpose(cols, (0, 1, 3, 2)), _grad_rows(gy, groups))  # (N, g, K, O/g)
    dw = np.sum(dw, axis=(0,), keepdims=True)
    o = gy.shape[1]
    return np.reshape(np.transpose(dw, (0, 1, 3, 2)), (o, x.shape[1] // groups) + tuple(kernel))


def _forward_infer(vs, stride, padding, dilation, groups):
    x, w = vs
    out = _check("conv_forward", x.shape, w.shape, stride, padding, dilation, groups, [x.dtype, w.dtype])
    return (x.shape[0], w.shape[0]) + out, x.dtype


def _forward_bias_infer(vs, stride, padding, dilation, groups, act):
    x, w, b = vs
    if act not in ("identity", "relu"):
        raise ShapeError(f"op 'conv_forward_bias': act must be 'identity' or 'relu', got {act!r}")
    out = _check("conv_forward_bias", x.shape, w.shape, stride, padding, dilation, groups,
                 [x.dtype, w.dtype, b.dtype])
    if b.shape != (w.shape[0],):
        raise ShapeError(f"op 'conv_forward_bias': bias {b.shape} is not one value per output channel ({w.shape[0]})")
    return (x.shape[0], w.shape[0]) + out, x.dtype


def _backward_data_infer(vs, shape, stride, padding, dilation, groups):
    gy, w = vs
    shape = tuple(int(s) for s in shape)
    out = _check("conv_backward_data", shape, w.shape, stride, padding, dilation, groups, [gy.dtype, w.dtype])
    if gy.shape != (shape[0], w.shape[0]) + out:
        raise ShapeError(f"op 'conv_backward_data': gradient {gy.shape} does not fit input {shape}, weight {w.shape}")
    return shape, gy.dtype


def _backward_weight_infer(vs, kernel, stride, padding, dilation, groups):
    x, gy = vs
    kernel = tuple(int(k) for k in kernel)
    w_shape = (gy.shape[1], x.shape[1] // max(groups, 1)) + kernel if gy.ndim >= 2 and x.ndim >= 2 else ()
    out = _check("conv_backward_weight", x.shape, w_shape, stride, padding, dilation, groups, [x.dtype, gy.dtype])
    if gy.shape != (x.shape[0], w_shape[0]) + out:
        raise ShapeError(f"op 'conv_backward_weight': gradient {gy.shape} does not fit input {x.shape}")
    return w_shape, x.dtype


register_op(
    "conv_forward",
    infer=_forward_infer,
    impl=_forward_impl,
    attrs=dict(_ATTRS),
    args=("x", "w"),
    kind="window",
    differentiable=False,
    doc="convolution (cross-correlation) of x (N, C, *S) with w (O, C/groups, *kernel); made by fuse_conv",
)
register_op(
    "conv_forward_bias",
    infer=_forward_bias_infer,
    impl=_forward_bias_impl,
    attrs={**_ATTRS, "act": "identity"},
    args=("x", "w", "b"),
    kind="window",
    differentiable=False,
    doc="act(conv_forward(x, w) + b[channel]), b (O,), act identity or relu; made by fuse_conv",
)
register_op(
    "conv_backward_data",
    infer=_backward_data_infer,
    impl=_backward_data_impl,
    attrs={"shape": REQUIRED, **_ATTRS},
    args=("gy", "w"),
    kind="window",
    differentiable=False,
    doc="the input gradient of conv_forward for an input of `shape`; made by fuse_conv",
)
register_op(
    "conv_backward_weight",
    infer=_backward_weight_infer,
    impl=_backward_weight_impl,
    attrs={"kernel": REQUIRED, **_ATTRS},
    args=("x", "gy"),
    kind="window",
    differentiable=False,
    doc="the weight gradient of conv_forward (summed over the batch); made by fuse_conv",
)


# ---------------------------------------------------------------------------------------
# max pooling: max over unfold(x, pad_value=-inf) windows, and the pieces of its gradient
# ---------------------------------------------------------------------------------------
POOL_OPS = ("max_pool_forward", "max_pool_ties", "max_pool_backward", "max_pool_grad", "window_sum", "window_spread")
_POOL_ATTRS = {"kernel": REQUIRED, "stride": REQUIRED, "padding": REQUIRED}


def _pool_windows(x, kernel, stride, padding):
    nd = len(kernel)
    cols = _unfold_impl(x, tuple(kernel), tuple(stride), padding, (1,) * nd, -np.inf)
    return cols, tuple(range(2 + nd, 2 + 2 * nd))


def _pool_match(x, y, kernel, stride, padding):
    """The window taps equal to their window's maximum y, as max's gradient compares them."""
    cols, axes = _pool_windows(x, kernel, stride, padding)
    return np.equal(cols, np.reshape(y, y.shape + (1,) * len(kernel))), axes


def _max_pool_forward_impl(x, kernel, stride, padding):
    cols, axes = _pool_windows(x, kernel, stride, padding)
    return np.max(cols, axis=axes)


def _max_pool_ties_impl(x, y, kernel, stride, padding):
    m, axes = _pool_match(x, y, kernel, stride, padding)
    return np.reshape(np.sum(m.astype(x.dtype), axis=axes, keepdims=True), y.shape)


def _max_pool_backward_impl(x, y, share, kernel, stride, padding):
    m, _ = _pool_match(x, y, kernel, stride, padding)
    spread = np.broadcast_to(np.reshape(share, share.shape + (1,) * len(kernel)), m.shape)
    d = np.where(m, spread, np.zeros((), x.dtype))
    return _fold_impl(d, x.shape, tuple(kernel), tuple(stride), padding, (1,) * len(kernel))


def _pool_out(op, vs, kernel, stride, padding):
    x = vs[0]
    nd = len(kernel)
    if nd not in (1, 2) or x.ndim != nd + 2:
        raise ShapeError(f"op '{op}': input must be (N, C, *spatial) with {nd} spatial axes, got {x.shape}")
    if len({v.dtype for v in vs}) != 1 or x.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"op '{op}': operands must share one float dtype")
    out = x.shape[:2] + _window_geometry(op, x.shape[2:], tuple(kernel), tuple(stride), padding, (1,) * nd)
    for v in vs[1:]:
        if v.shape != out:
            raise ShapeError(f"op '{op}': window operands must have shape {out}, got {v.shape}")
    return out, x.dtype


register_op(
    "max_pool_forward",
    infer=lambda vs, kernel, stride, padding: _pool_out("max_pool_forward", vs, kernel, stride, padding),
    impl=_max_pool_forward_impl,
    attrs=dict(_POOL_ATTRS),
    args=("x",),
    kind="window",
    differentiable=False,
    doc="max over windows of x (padding reads -inf); made by fuse_conv",
)
register_op(
    "max_pool_ties",
    infer=lambda vs, kernel, stride, padding: _pool_out("max_pool_ties", vs, kernel, stride, padding),
    impl=_max_pool_ties_impl,
    attrs=dict(_POOL_ATTRS),
    args=("x", "y"),
    kind="window",
    differentiable=False,
    doc="how many taps of each window equal its maximum y; made by fuse_conv",
)
def _max_pool_grad_impl(x, y, g, kernel, stride, padding, relu):
    m, axes = _pool_match(x, y, kernel, stride, padding)
    count = np.sum(m.astype(x.dtype), axis=axes, keepdims=True)
    share = np.divide(np.reshape(g, count.shape), count)
    d = np.where(m, np.broadcast_to(share, m.shape), np.zeros((), x.dtype))
    d = _fold_impl(d, x.shape, tuple(kernel), tuple(stride), padding, (1,) * len(kernel))
    return np.where(x > 0, d, np.zeros((), x.dtype)) if relu else d


register_op(
    "max_pool_grad",
    infer=lambda vs, kernel, stride, padding, relu: (vs[0].shape, _pool_out("max_pool_grad", vs, kernel, stride,
                                                                         padding)[1]),
    impl=_max_pool_grad_impl,
    attrs={**_POOL_ATTRS, "relu": False},
    args=("x", "y", "g"),
    kind="window",
    differentiable=False,
    doc="max pooling's input gradient: g shared equally among each window's taps equal to y (relu=True: then "
        "where(x > 0, ., 0), the gradient through the relu whose output x is); made by fuse_conv",
)
register_op(
    "max_pool_backward",
    infer=lambda vs, kernel, stride, padding: (vs[0].shape, _pool_out("max_pool_backward", vs, kernel, stride,
                                                                       padding)[1]),
    impl=_max_pool_backward_impl,
    attrs=dict(_POOL_ATTRS),
    args=("x", "y", "share"),
    kind="window",
    differentiable=False,
    doc="each window's share added at its taps equal to its maximum y; made by fuse_conv",
)


# ---------------------------------------------------------------------------------------
# the linear window maps under average pooling (padding reads 0, dilation 1)
# ---------------------------------------------------------------------------------------
def _window_sum_impl(x, kernel, stride, padding):
    nd = len(kernel)
    cols = _unfold_impl(x, tuple(kernel), tuple(stride), padding, (1,) * nd, 0.0)
    return np.sum(cols, axis=tuple(range(2 + nd, 2 + 2 * nd)))


def _window_spread_impl(s, shape, kernel, stride, padding):
    nd = len(kernel)
    spread = np.broadcast_to(np.reshape(s, s.shape + (1,) * nd), s.shape + tuple(kernel))
    return _fold_impl(spread, tuple(shape), tuple(kernel), tuple(stride), padding, (1,) * nd)


def _window_spread_infer(vs, shape, kernel, stride, padding):
    shape = tuple(int(n) for n in shape)
    from .core import Var

    like = Var("placeholder", (), {}, shape, vs[0].dtype, None)
    out, dt = _pool_out("window_spread", [like, vs[0]], kernel, stride, padding)
    return shape, dt


register_op(
    "window_sum",
    infer=lambda vs, kernel, stride, padding: _pool_out("window_sum", vs, kernel, stride, padding),
    impl=_window_sum_impl,
    attrs=dict(_POOL_ATTRS),
    args=("x",),
    kind="window",
    differentiable=False,
    doc="the sum of each window of x (padding reads 0): average pooling's sum; made by fuse_conv",
)
register_op(
    "window_spread",
    infer=_window_spread_infer,
    impl=_window_spread_impl,
    attrs={"shape": REQUIRED, **_POOL_ATTRS},
    args=("s",),
    kind="window",
    differentiable=False,
    doc="s at every tap of its window, summed into an image of `shape` (window_sum's adjoint); made by fuse_conv",
)
