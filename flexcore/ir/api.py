"""The functional API over the IR: thin wrappers of primitives and the composite ops.

Composites (softmax, convolution, pooling, normalisation, losses, most activations) are
Python functions that build primitives; they are listed in `COMPOSITES` so the registry-driven
test suite checks them exactly like primitives.
"""

from __future__ import annotations

import builtins
from typing import Any, Callable, Sequence

import numpy as np

from . import ops as _ops  # noqa: F401  (registers the primitives)
from .core import FlexcoreError, ShapeError, Var, apply, as_var, const

__all__ = [
    "add",
    "sub",
    "mul",
    "div",
    "neg",
    "pow",
    "maximum",
    "minimum",
    "where",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "exp",
    "log",
    "log1p",
    "sqrt",
    "abs",
    "sign",
    "cast",
    "stop_gradient",
    "clip_gradient",
    "clip",
    "square",
    "identity",
    "step",
    "sigmoid",
    "tanh",
    "arctan",
    "softsign",
    "relu",
    "leaky_relu",
    "prelu",
    "elu",
    "softplus",
    "matmul",
    "permute",
    "transpose",
    "reshape",
    "broadcast_to",
    "concat",
    "slice",
    "split",
    "pad",
    "gather",
    "one_hot",
    "sum",
    "max",
    "mean",
    "var",
    "softmax",
    "log_softmax",
    "conv_padding",
    "conv1d",
    "conv2d",
    "max_pool1d",
    "max_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "random_uniform",
    "dropout_mask",
    "dropout",
    "batch_norm",
    "layer_norm",
    "nll_loss",
    "softmax_cross_entropy",
    "mse_loss",
    "bce_with_logits",
    "activation",
]

COMPOSITES: dict[str, Callable[..., Any]] = {}


def composite(fn):
    """Register a composite op under its function name."""
    COMPOSITES[fn.__name__] = fn
    return fn


def _v(x, like=None) -> Var:
    return as_var(x, like)


# ---------------------------------------------------------------------------------------
# arithmetic, comparison, elementwise math (primitives)
# ---------------------------------------------------------------------------------------
def add(a, b):
    return apply("add", a, b)


def sub(a, b):
    return apply("sub", a, b)


def mul(a, b):
    return apply("mul", a, b)


def div(a, b):
    return apply("div", a, b)


def neg(x):
    return apply("neg", x)


def pow(a, b):  # noqa: A001 - the op's name
    return apply("pow", a, b)


def maximum(a, b):
    return apply("maximum", a, b)


def minimum(a, b):
    return apply("minimum", a, b)


def where(cond, a, b):
    return apply("where", cond, a, b)


def eq(a, b):
    return apply("eq", a, b)


def ne(a, b):
    return apply("ne", a, b)


def lt(a, b):
    return apply("lt", a, b)


def le(a, b):
    return apply("le", a, b)


def gt(a, b):
    return apply("gt", a, b)


def ge(a, b):
    return apply("ge", a, b)


def exp(x):
    return apply("exp", x)


def log(x):
    return apply("log", x)


def log1p(x):
    return apply("log1p", x)


def sqrt(x):
    return apply("sqrt", x)


def abs(x):  # noqa: A001
    return apply("abs", x)


def sign(x):
    return apply("sign", x)


def cast(x, dtype):
    return apply("cast", x, dtype=np.dtype(dtype).str)


def stop_gradient(x):
    return apply("stop_gradient", x)


def clip_gradient(x, limit: float):
    """x unchanged; the gradient flowing back through it is clipped elementwise to
    [-limit, limit] (per-step clipping of the gradient into a recurrent layer)."""
    return apply("clip_gradient", x, limit=float(limit))


@composite
def clip(x, lo, hi):
    """Limit x to [lo, hi]; the gradient is zero outside."""
    return minimum(maximum(x, lo), hi)


@composite
def square(x):
    return x * x


# ---------------------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------------------
@composite
def identity(x):
    return x


def step(x):
    """Binary step: 1 where x > 0 else 0; its gradient is zero."""
    return apply("step", x)


def sigmoid(x):
    return apply("sigmoid", x)


def tanh(x):
    return apply("tanh", x)


def arctan(x):
    return apply("arctan", x)


@composite
def softsign(x):
    return x / (abs(x) + 1.0)


@composite
def relu(x):
    """max(x, 0); the gradient at exactly 0 is 0, as in torch."""
    x = _v(x)
    return where(x > 0.0, x, 0.0)


@composite
def leaky_relu(x, alpha: float = 0.01):
    return where(_v(x) > 0.0, x, x * alpha)


@composite
def prelu(x, slope):
    """Leaky ReLU whose negative slope is a tensor (learnable); a slope of shape (C,) applies per
    channel on axis 1, like torch.nn.PReLU."""
    x, slope = _v(x), _v(slope)
    if slope.ndim == 1 and x.ndim >= 2 and slope.shape[0] not in (1,):
        if slope.shape[0] != x.shape[1]:
            raise ShapeError(f"prelu: slope has {slope.shape[0]} channels, input has {x.shape[1]} on axis 1")
        slope = reshape(slope, (1, -1) + (1,) * (x.ndim - 2))
    return where(x > 0.0, x, x * slope)


@composite
def elu(x, alpha: float = 1.0):
    x = _v(x)
    # exp only of the non-positive part, so the unused branch never overflows.
    return where(x > 0.0, x, (exp(minimum(x, 0.0)) - 1.0) * alpha)


@composite
def softplus(x):
    x = _v(x)
    # log(1 + e^x) with e^x bounded; above 40 it equals x in float32 and float64 alike.  No abs or
    # maximum here: their kinks at 0 made the gradient at x = 0 come out 1 instead of 1/2.
    return where(x > 40.0, x, log1p(exp(minimum(x, 40.0))))


# ---------------------------------------------------------------------------------------
# shape and indexing
# ---------------------------------------------------------------------------------------
def matmul(a, b):
    return apply("matmul", a, b)


def permute(x, axes: Sequence[int]):
    return apply("permute", x, axes=tuple(int(a) % _v(x).ndim for a in axes))


def transpose(x, axes: Sequence[int] | None = None):
    x = _v(x)
    return permute(x, tuple(reversed(range(x.ndim))) if axes is None else axes)


def reshape(x, shape: Sequence[int]):
    return apply("reshape", x, shape=tuple(int(s) for s in shape))


def broadcast_to(x, shape: Sequence[int]):
    return apply("broadcast_to", x, shape=tuple(int(s) for s in shape))


def concat(xs: Sequence[Any], axis: int = 0):
    xs = list(xs)
    return apply("concat", *xs, axis=int(axis))


def _slice_bounds(n: int, s: slice) -> tuple[int, int, int]:
    a, b, st = s.indices(n)
    if st < 1:
        raise FlexcoreError("negative slice steps are not supported")
    return a, builtins.max(a, b), st


@composite
def slice(x, starts: Sequence[int], stops: Sequence[int], steps: Sequence[int] | None = None):  # noqa: A001
    """x[starts[0]:stops[0]:steps[0], ...]; bounds follow Python's slicing rules."""
    x = _v(x)
    steps = steps or [1] * len(starts)
    full = [builtins.slice(None)] * x.ndim
    for d, (a, b, s) in enumerate(zip(starts, stops, steps)):
        full[d] = builtins.slice(a, b, s)
    return getitem(x, tuple(full))


def getitem(x: Var, index) -> Var:
    """Basic indexing: integers, slices with positive steps, Ellipsis and None."""
    if not isinstance(index, tuple):
        index = (index,)
    n_real = builtins.sum(1 for i in index if i is not None and i is not Ellipsis)
    if n_real > x.ndim:
        raise ShapeError(f"too many indices ({n_real}) for shape {x.shape}")
    if Ellipsis in index:
        k = index.index(Ellipsis)
        index = index[:k] + (builtins.slice(None),) * (x.ndim - n_real) + index[k + 1:]
    starts, stops, steps, out_shape, d = [], [], [], [], 0
    for i in index:
        if i is None:
            out_shape.append(1)
            continue
        n = x.shape[d]
        if isinstance(i, (int, np.integer)):
            j = int(i) + n if i < 0 else int(i)
            if not 0 <= j < n:
                raise ShapeError(f"index {i} is out of bounds for axis {d} of size {n}")
            starts.append(j), stops.append(j + 1), steps.append(1)
        elif isinstance(i, builtins.slice):
            a, b, st = _slice_bounds(n, i)
            starts.append(a), stops.append(b), steps.append(st)
            out_shape.append(len(range(a, b, st)))
        else:
            raise FlexcoreError(f"unsupported index {i!r}; use gather for integer-array indexing")
        d += 1
    for dd in range(d, x.ndim):
        starts.append(0), stops.append(x.shape[dd]), steps.append(1)
        out_shape.append(x.shape[dd])
    y = x
    if (tuple(starts), tuple(stops)) != ((0,) * x.ndim, x.shape) or builtins.any(s != 1 for s in steps):
        y = apply("slice", x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))
    return y if tuple(out_shape) == y.shape else reshape(y, out_shape)


@composite
def split(x, sections: int | Sequence[int], axis: int = 0) -> list[Var]:
    """Split into `sections` equal parts, or at the given sizes when a list."""
    x = _v(x)
    ax = axis % x.ndim
    n = x.shape[ax]
    if isinstance(sections, (int, np.integer)):
        if sections < 1:
            raise ShapeError(f"split: sections must be >= 1, got {sections}")
        if n % sections:
            raise ShapeError(f"split: axis {ax} of size {n} does not divide into {sections} equal parts")
        sizes = [n // sections] * sections
    else:
        sizes = list(sections)
        if builtins.sum(sizes) != n:
            raise ShapeError(f"split: sizes {sizes} do not add up to {n} on axis {ax}")
    out, start = [], 0
    for s in sizes:
        idx = [builtins.slice(None)] * x.ndim
        idx[ax] = builtins.slice(start, start + s)
        out.append(getitem(x, tuple(idx)))
        start += s
    return out


def pad(x, pads: Sequence[tuple[int, int]], value: float = 0.0):
    return apply("pad", x, pads=tuple((int(a), int(b)) for a, b in pads), value=float(value))


def gather(table, indices):
    """Rows of `table` at integer `indices` (an embedding lookup)."""
    return apply("gather", table, indices)


def one_hot(labels, n: int, dtype="float32"):
    return apply("one_hot", labels, n=int(n), dtype=np.dtype(dtype).str)


# ---------------------------------------------------------------------------------------
# reductions
# ---------------------------------------------------------------------------------------
def _axes(axis):
    if axis is None:
        return None
    return (int(axis),) if isinstance(axis, (int, np.integer)) else tuple(int(a) for a in axis)


def sum(x, axis=None, keepdims: bool = False):  # noqa: A001
    return apply("sum", x, axes=_axes(axis), keepdims=bool(keepdims))


def max(x, axis=None, keepdims: bool = False):  # noqa: A001
    return apply("max", x, axes=_axes(axis), keepdims=bool(keepdims))


def _count(x: Var, axis) -> int:
    axes = range(x.ndim) if axis is None else [a % x.ndim for a in _axes(axis)]
    return int(np.prod([x.shape[a] for a in axes], dtype=np.int64))


@composite
def mean(x, axis=None, keepdims: bool = False):
    x = _v(x)
    return sum(x, axis, keepdims) * (1.0 / builtins.max(_count(x, axis), 1))


@composite
def var(x, axis=None, keepdims: bool = False):
    """Biased variance (divides by n), as normalisation layers use."""
    x = _v(x)
    d = x - mean(x, axis, keepdims=True)
    return mean(d * d, axis, keepdims)


@composite
def softmax(x, axis: int = -1):
    x = _v(x)
    e = exp(x - stop_gradient(max(x, axis, keepdims=True)))
    return e / sum(e, axis, keepdims=True)


@composite
def log_softmax(x, axis: int = -1):
    x = _v(x)
    z = x - stop_gradient(max(x, axis, keepdims=True))
    return z - log(sum(exp(z), axis, keepdims=True))


# ---------------------------------------------------------------------------------------
# convolution and pooling (sliding windows + matmul / reductions)
# ---------------------------------------------------------------------------------------
def _tuple(v, n: int, what: str) -> tuple[int, ...]:
    if isinstance(v, (int, np.integer)):
        return (int(v),) * n
    v = tuple(int(i) for i in v)
    if len(v) != n:
        raise ShapeError(f"{what} needs {n} values, got {v}")
    return v


def conv_padding(padding, in_spatial, kernel, stride, dilation) -> tuple[tuple[int, int], ...]:
    """Explicit (before, after) pads from an int, per-axis ints, pairs, 'valid' or 'same'."""
    n = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * n
        if padding != "same":
            raise FlexcoreError(f"padding '{padding}' is unknown; valid: 'valid', 'same', an int, or pairs")
        pads = []
        for i, k, s, d in zip(in_spatial, kernel, stride, dilation):
            out = -(-i // s)
            total = builtins.max((out - 1) * s + d * (k - 1) + 1 - i, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    if isinstance(padding, (int, np.integer)):
        return ((int(padding), int(padding)),) * n
    padding = tuple(padding)
    if len(padding) != n:
        raise ShapeError(f"padding needs {n} entries, got {padding}")
    return tuple((int(p), int(p)) if isinstance(p, (int, np.integer)) else (int(p[0]), int(p[1])) for p in padding)


def _conv(x, w, b, stride, padding, dilation, groups, nd):
    x, w = _v(x), _v(w)
    if x.ndim != nd + 2:
        raise ShapeError(f"conv{nd}d: input must have shape (N, C, {'L' if nd == 1 else 'H, W'}), got {x.shape}")
    if w.ndim != nd + 2:
        raise ShapeError(f"conv{nd}d: weight must have shape (O, C/groups, *kernel), got {w.shape}")
    n, c = x.shape[:2]
    o, cg = w.shape[:2]
    kernel = w.shape[2:]
    if c % groups or o % groups or cg != c // groups:
        raise ShapeError(
            f"conv{nd}d: input of shape {x.shape} has {c} channels and weight has shape {w.shape}; "
            f"with groups={groups} the weight needs "
            f"{c // builtins.max(groups, 1)} input channels and a multiple of {groups} output channels"
        )
    stride, dilation = _tuple(stride, nd, "stride"), _tuple(dilation, nd, "dilation")
    pads = conv_padding(padding, x.shape[2:], kernel, stride, dilation)
    cols = apply("unfold", x, kernel=tuple(kernel), stride=stride, padding=pads, dilation=dilation, pad_value=0.0)
    out_sp = cols.shape[2 : 2 + nd]
    p = int(np.prod(out_sp))
    k = cg * int(np.prod(kernel))
    g = groups
    # (N, C, *out, *k) -> (N, g, P, C/g * K)
    cols = reshape(cols, (n, g, cg, p, int(np.prod(kernel))))
    cols = reshape(permute(cols, (0, 1, 3, 2, 4)), (n, g, p, k))
    wm = permute(reshape(w, (1, g, o // g, k)), (0, 1, 3, 2))  # (1, g, K, O/g)
    y = matmul(cols, wm)  # (N, g, P, O/g)
    y = reshape(permute(y, (0, 1, 3, 2)), (n, o) + tuple(out_sp))
    if b is not None:
        b = _v(b)
        if b.shape != (o,):
            raise ShapeError(f"conv{nd}d: bias must have shape ({o},), got {b.shape}")
        y = y + reshape(b, (1, o) + (1,) * nd)
    return y


@composite
def conv1d(x, w, b=None, stride=1, padding=0, dilation=1, groups: int = 1):
    """1-d convolution (cross-correlation, like torch): x (N, C, L), w (O, C/groups, K)."""
    return _conv(x, w, b, stride, padding, dilation, groups, 1)


@composite
def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups: int = 1):
    """2-d convolution (cross-correlation, like torch): x (N, C, H, W), w (O, C/groups, KH, KW)."""
    return _conv(x, w, b, stride, padding, dilation, groups, 2)


def _pool(x, kernel, stride, padding, nd, kind):
    x = _v(x)
    if x.ndim != nd + 2:
        raise ShapeError(f"{kind}_pool{nd}d: input must be (N, C, *spatial) with {nd} spatial axes, got {x.shape}")
    kernel = _tuple(kernel, nd, "kernel")
    stride = kernel if stride is None else _tuple(stride, nd, "stride")
    pads = conv_padding(padding, x.shape[2:], kernel, stride, (1,) * nd)
    if builtins.any(p >= k for pair, k in zip(pads, kernel) for p in pair):
        # A window could then lie wholly in the padding: -inf out of max pooling, 0 out of average.
        raise ShapeError(
            f"{kind}_pool{nd}d: padding {pads} must be smaller than the kernel {kernel} on each side"
        )
    pad_value = -np.inf if kind == "max" else 0.0
    cols = apply("unfold", x, kernel=kernel, stride=stride, padding=pads, dilation=(1,) * nd, pad_value=pad_value)
    axes = tuple(range(2 + nd, 2 + 2 * nd))
    return max(cols, axes) if kind == "max" else mean(cols, axes)


@composite
def max_pool1d(x, kernel, stride=None, padding=0):
    return _pool(x, kernel, stride, padding, 1, "max")


@composite
def max_pool2d(x, kernel, stride=None, padding=0):
    return _pool(x, kernel, stride, padding, 2, "max")


@composite
def avg_pool1d(x, kernel, stride=None, padding=0):
    """Average pooling; padded positions count as zeros (torch's count_include_pad=True)."""
    return _pool(x, kernel, stride, padding, 1, "avg")


@composite
def avg_pool2d(x, kernel, stride=None, padding=0):
    """Average pooling; padded positions count as zeros (torch's count_include_pad=True)."""
    return _pool(x, kernel, stride, padding, 2, "avg")


# ---------------------------------------------------------------------------------------
# dropout and normalisation
# ---------------------------------------------------------------------------------------
def random_uniform(seed, shape: Sequence[int], salt: int = 0, dtype="float32"):
    """Uniform [0, 1) numbers drawn from Philox keyed by (seed, salt): reproducible everywhere."""
    seed = seed if isinstance(seed, Var) else const(np.asarray(int(seed), np.int64))
    return apply("random_uniform", seed, shape=tuple(int(s) for s in shape), salt=int(salt), dtype=np.dtype(dtype).str)


def dropout_mask(seed, shape, p: float, salt: int = 0, dtype="float32"):
    """The scaled keep-mask of inverted dropout: 0 with probability p, else 1 / (1 - p)."""
    if not 0.0 <= p < 1.0:
        raise FlexcoreError(f"dropout: p must be in [0, 1), got {p}")
    u = random_uniform(seed, shape, salt, dtype)
    return cast(u >= _v(p, u), dtype) * (1.0 / (1.0 - p))


@composite
def dropout(x, p: float, seed, salt: int = 0, training: bool = True):
    """Inverted dropout; the mask comes from (seed, salt), so a run is reproducible."""
    x = _v(x)
    if not training or p == 0.0:
        return x
    return x * dropout_mask(seed, x.shape, p, salt, x.dtype)


def _norm_param(v, c: int, nd: int, what: str, layer: str):
    v = _v(v)
    if v.shape != (c,):
        raise ShapeError(f"{layer}: {what} must have shape ({c},), got {v.shape}")
    return reshape(v, (1, c) + (1,) * nd)


@composite
def batch_norm(x, gamma, beta, running_mean=None, running_var=None, training: bool = True, eps: float = 1e-5):
    """Batch normalisation over every axis but 1 (channels).

    Training: normalises with the batch statistics and returns (y, batch_mean, batch_var) so the
    caller can update running statistics (torch uses the unbiased batch variance for those).
    Inference: normalises with running_mean / running_var and returns y.
    """
    x = _v(x)
    if x.ndim < 2:
        raise ShapeError(f"batch_norm: input needs shape (N, C, ...), got {x.shape}")
    c, nd = x.shape[1], x.ndim - 2
    axes = (0,) + tuple(range(2, x.ndim))
    g = _norm_param(gamma, c, nd, "gamma", "batch_norm")
    b = _norm_param(beta, c, nd, "beta", "batch_norm")
    if training:
        mu = mean(x, axes, keepdims=True)
        d = x - mu
        v = mean(d * d, axes, keepdims=True)
        y = d / sqrt(v + eps) * g + b
        return y, reshape(mu, (c,)), reshape(v, (c,))
    if running_mean is None or running_var is None:
        raise FlexcoreError("batch_norm: inference needs running_mean and running_var")
    mu = _norm_param(running_mean, c, nd, "running_mean", "batch_norm")
    v = _norm_param(running_var, c, nd, "running_var", "batch_norm")
    return (x - mu) / sqrt(v + eps) * g + b


@composite
def layer_norm(x, gamma=None, beta=None, axes=-1, eps: float = 1e-5):
    """Layer normalisation over `axes` (the last by default) with optional elementwise affine."""
    x = _v(x)
    ax = _axes(axes)
    mu = mean(x, ax, keepdims=True)
    d = x - mu
    y = d / sqrt(mean(d * d, ax, keepdims=True) + eps)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


# ---------------------------------------------------------------------------------------
# losses (each returns the mean over the batch)
# ---------------------------------------------------------------------------------------
def _check_labels(fn: str, logits: Var, labels: Var) -> None:
    if labels.dtype.kind != "i":
        raise ShapeError(f"{fn}: labels must be integers, got {labels.dtype}")
    if logits.shape[:-1] != labels.shape:
        raise ShapeError(f"{fn}: predictions of shape {logits.shape} need labels of shape {logits.shape[:-1]}, got {labels.shape}")


@composite
def nll_loss(log_probs, labels):
    """Negative log-likelihood of integer labels under log-probabilities (N, ..., classes)."""
    lp, y = _v(log_probs), _v(labels)
    _check_labels("nll_loss", lp, y)
    picked = sum(lp * one_hot(y, lp.shape[-1], lp.dtype), -1)
    return -mean(picked)


@composite
def softmax_cross_entropy(logits, labels):
    """Cross-entropy of integer labels on raw logits, via a stable log-softmax."""
    return nll_loss(log_softmax(logits, -1), labels)


@composite
def mse_loss(pred, target):
    d = _v(pred) - target
    return mean(d * d)


@composite
def bce_with_logits(logits, target):
    """Binary cross-entropy on logits: softplus(x) - x*t, stable for any x."""
    x = _v(logits)
    return mean(softplus(x) - x * target)


ACTIVATIONS: dict[str, Callable[..., Var]] = {
    "identity": identity,
    "linear": identity,
    "step": step,
    "binary_step": step,
    "sigmoid": sigmoid,
    "logistic": sigmoid,
    "tanh": tanh,
    "arctan": arctan,
    "softsign": softsign,
    "relu": relu,
    "leaky_relu": leaky_relu,
    "prelu": prelu,
    "elu": elu,
    "softplus": softplus,
    "softmax": softmax,
    "log_softmax": log_softmax,
}


def activation(name: str) -> Callable[..., Var]:
    """The activation function registered under `name` (the error lists the valid names)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise FlexcoreError(f"unknown activation '{name}'; valid: {', '.join(sorted(ACTIVATIONS))}") from None
