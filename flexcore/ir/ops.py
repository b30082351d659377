"""The primitive ops: shape rule, reference (numpy) implementation and gradient rule.

Everything else (softmax, convolution, normalisation, losses, most activations) is a composite
built from these in `flexcore.ir.api`, so it needs neither a gradient rule nor a kernel of its
own.  Gradient rules (`vjp`) are written in IR ops, so gradients of gradients work.

vjp signature: vjp(g, out, *inputs, **attrs) -> one Var or None per input (None: no gradient).
"""

from __future__ import annotations

import math

import numpy as np

from .core import (
    FLOAT_DTYPES,
    REQUIRED,
    ShapeError,
    Var,
    apply,
    arg_label,
    normalize_dtype,
    register_op,
)

# ---------------------------------------------------------------------------------------
# helpers for shape rules
# ---------------------------------------------------------------------------------------


def _broadcast_shapes(op: str, vs: list[Var]) -> tuple[int, ...]:
    # Most elementwise ops meet equal shapes; numpy's general rule costs ~10 us a call.
    s0 = vs[0].shape
    for v in vs:
        if v.shape != s0:
            break
    else:
        return s0
    try:
        return tuple(np.broadcast_shapes(*[v.shape for v in vs]))
    except ValueError:
        desc = " and ".join(f"{arg_label(op, i, v)} of shape {v.shape}" for i, v in enumerate(vs))
        raise ShapeError(f"op '{op}': shapes do not broadcast: {desc}") from None


def _same_dtype(op: str, vs: list[Var]) -> np.dtype:
    dts = {v.dtype for v in vs}
    if len(dts) != 1:
        desc = ", ".join(f"{arg_label(op, i, v)} is {v.dtype}" for i, v in enumerate(vs))
        raise ShapeError(f"op '{op}': arguments must have one dtype: {desc}")
    return vs[0].dtype


def _require_float(op: str, v: Var, i: int = 0) -> None:
    if v.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"op '{op}': {arg_label(op, i, v)} must be float32 or float64, got {v.dtype}")


def _norm_axes(op: str, axes, ndim: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(ndim))
    if isinstance(axes, (int, np.integer)):
        axes = (int(axes),)
    out = []
    for a in axes:
        # A scalar has no axes (as in numpy, whose reference implementation would fail on one).
        if not -ndim <= a < ndim:
            raise ShapeError(f"op '{op}': axis {a} is out of range for a tensor of rank {ndim}")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"op '{op}': repeated axis in {tuple(axes)}")
    return tuple(sorted(out))


# ---------------------------------------------------------------------------------------
# helpers for gradient rules (they build IR)
# ---------------------------------------------------------------------------------------


def sum_to(g: Var, shape: tuple[int, ...]) -> Var:
    """Sum a broadcast gradient back to `shape` (undo numpy broadcasting)."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape) if s == 1 and g.shape[i + lead] != 1)
    r = apply("sum", g, axes=axes, keepdims=True) if axes else g
    return apply("reshape", r, shape=tuple(shape))


def _where0(mask: Var, g: Var) -> Var:
    """g where mask, else 0."""
    return apply("where", mask, g, 0.0)


# ---------------------------------------------------------------------------------------
# elementwise binary
# ---------------------------------------------------------------------------------------


def _binary_infer(op):
    def infer(vs):
        dt = _same_dtype(op, vs)
        if op not in ("add", "sub", "mul", "maximum", "minimum") and dt.kind not in "f":
            raise ShapeError(f"op '{op}': arguments must be float32 or float64, got {dt}")
        return _broadcast_shapes(op, vs), dt

    return infer


def _binary(name, impl, vjp, doc):
    register_op(name, infer=_binary_infer(name), impl=impl, vjp=vjp, args=("a", "b"), kind="elementwise", doc=doc)


_binary("add", np.add, lambda g, out, a, b: (sum_to(g, a.shape), sum_to(g, b.shape)), "a + b (broadcasting)")
_binary("sub", np.subtract, lambda g, out, a, b: (sum_to(g, a.shape), sum_to(-g, b.shape)), "a - b")
_binary("mul", np.multiply, lambda g, out, a, b: (sum_to(g * b, a.shape), sum_to(g * a, b.shape)), "a * b")
_binary("div", np.divide, lambda g, out, a, b: (sum_to(g / b, a.shape), sum_to(-g * out / b, b.shape)), "a / b")


def _pow_vjp(g, out, a, b):
    ga = sum_to(g * b * apply("pow", a, b - 1.0), a.shape)
    gb = sum_to(g * out * apply("log", a), b.shape)
    return ga, gb


_binary("pow", np.power, _pow_vjp, "a ** b (the gradient for b needs a > 0)")


def _maximum_vjp(g, out, a, b):
    m = apply("ge", a, b)
    return sum_to(_where0(m, g), a.shape), sum_to(apply("where", m, 0.0, g), b.shape)


def _minimum_vjp(g, out, a, b):
    m = apply("le", a, b)
    return sum_to(_where0(m, g), a.shape), sum_to(apply("where", m, 0.0, g), b.shape)


_binary("maximum", np.maximum, _maximum_vjp, "elementwise max; a tie sends the gradient to a")
_binary("minimum", np.minimum, _minimum_vjp, "elementwise min; a tie sends the gradient to a")


def _cmp_infer(op):
    def infer(vs):
        _same_dtype(op, vs)
        return _broadcast_shapes(op, vs), np.dtype(np.bool_)

    return infer


for _name, _fn in [
    ("eq", np.equal),
    ("ne", np.not_equal),
    ("lt", np.less),
    ("le", np.less_equal),
    ("gt", np.greater),
    ("ge", np.greater_equal),
]:
    register_op(
        _name, infer=_cmp_infer(_name), impl=_fn, args=("a", "b"), kind="elementwise", differentiable=False,
        doc=f"comparison {_name} (bool result; not differentiable)",
    )


def _where_infer(vs):
    c, a, b = vs
    if c.dtype != np.bool_:
        raise ShapeError(f"op 'where': {arg_label('where', 0, c)} must be bool, got {c.dtype}")
    dt = _same_dtype("where", [a, b])
    return _broadcast_shapes("where", vs), dt


register_op(
    "where",
    infer=_where_infer,
    impl=np.where,
    vjp=lambda g, out, c, a, b: (None, sum_to(_where0(c, g), a.shape), sum_to(apply("where", c, 0.0, g), b.shape)),
    args=("cond", "a", "b"),
    kind="elementwise",
    doc="cond ? a : b",
)

# ---------------------------------------------------------------------------------------
# elementwise unary
# ---------------------------------------------------------------------------------------


def _unary_infer(op, float_only=True):
    def infer(vs):
        if float_only:
            _require_float(op, vs[0])
        return vs[0].shape, vs[0].dtype

    return infer


def _sigmoid(x):
    # exp of a non-positive argument only: no overflow for large |x|.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _unary(name, impl, vjp, doc, float_only=True):
    register_op(name, infer=_unary_infer(name, float_only), impl=impl, vjp=vjp, kind="elementwise", doc=doc)


def _neg_infer(vs):
    if vs[0].dtype == np.bool_:
        label = arg_label("neg", 0, vs[0])
        raise ShapeError(f"op 'neg': {label} is bool; negate a condition with eq(x, False)")
    return vs[0].shape, vs[0].dtype


register_op(
    "neg", infer=_neg_infer, impl=np.negative, vjp=lambda g, out, x: (-g,), kind="elementwise", doc="-x"
)
_unary("exp", np.exp, lambda g, out, x: (g * out,), "e ** x")
_unary("log", np.log, lambda g, out, x: (g / x,), "natural logarithm")
_unary("log1p", np.log1p, lambda g, out, x: (g / (x + 1.0),), "log(1 + x), accurate near 0")
_unary("sqrt", np.sqrt, lambda g, out, x: (g / (out * 2.0),), "square root")
_unary("abs", np.abs, lambda g, out, x: (g * apply("sign", x),), "absolute value")
_unary("sigmoid", _sigmoid, lambda g, out, x: (g * out * (1.0 - out),), "logistic function 1 / (1 + e^-x)")
_unary("tanh", np.tanh, lambda g, out, x: (g * (1.0 - out * out),), "hyperbolic tangent")
_unary("arctan", np.arctan, lambda g, out, x: (g / (x * x + 1.0),), "arc tangent")
_unary("sign", np.sign, lambda g, out, x: (None,), "sign of x (zero gradient)")
_unary(
    "step",
    lambda x: (x > 0).astype(x.dtype),
    lambda g, out, x: (None,),
    "binary step: 1 where x > 0, else 0 (zero gradient)",
)
register_op(
    "stop_gradient",
    infer=_unary_infer("stop_gradient", False),
    impl=lambda x: x,
    vjp=lambda g, out, x: (None,),
    kind="elementwise",
    doc="identity whose gradient is zero",
)


def _clip_gradient_infer(vs, limit):
    _require_float("clip_gradient", vs[0])
    if not (isinstance(limit, (int, float, np.integer, np.floating)) and np.isfinite(limit) and limit > 0):
        raise ShapeError(f"op 'clip_gradient': limit must be a finite number > 0, got {limit!r}")
    return vs[0].shape, vs[0].dtype


register_op(
    "clip_gradient",
    infer=_clip_gradient_infer,
    impl=lambda x, limit: x,
    # The incoming gradient clipped elementwise; built from maximum/minimum, so the gradient of
    # this gradient exists (1 inside the limits, 0 outside) and double backward works.
    vjp=lambda g, out, x, limit: (apply("minimum", apply("maximum", g, -float(limit)), float(limit)),),
    attrs={"limit": REQUIRED},
    kind="elementwise",
    doc="identity whose incoming gradient is clipped elementwise to [-limit, limit]",
)


def _cast_infer(vs, dtype):
    return vs[0].shape, normalize_dtype(dtype)


def _cast_vjp(g, out, x, dtype):
    if x.dtype.kind != "f":
        return (None,)
    return (apply("cast", g, dtype=x.dtype.str),)


register_op(
    "cast",
    infer=_cast_infer,
    impl=lambda x, dtype: x.astype(dtype),
    vjp=_cast_vjp,
    attrs={"dtype": REQUIRED},
    kind="elementwise",
    doc="convert to another dtype",
)

# ---------------------------------------------------------------------------------------
# linear algebra
# ---------------------------------------------------------------------------------------


def _matmul_infer(vs):
    a, b = vs
    dt = _same_dtype("matmul", vs)
    _require_float("matmul", a)
    if a.ndim < 2 or b.ndim < 2:
        raise ShapeError(f"op 'matmul': both arguments need rank >= 2, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(
            f"op 'matmul': inner dimensions differ: {arg_label('matmul', 0, a)} has shape {a.shape}, "
            f"{arg_label('matmul', 1, b)} has shape {b.shape}"
        )
    try:
        batch = a.shape[:-2] if a.shape[:-2] == b.shape[:-2] else np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ShapeError(f"op 'matmul': batch dimensions do not broadcast: {a.shape} and {b.shape}") from None
    return tuple(batch) + (a.shape[-2], b.shape[-1]), dt


def _swap_last(x: Var) -> Var:
    axes = tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2)
    return apply("permute", x, axes=axes)


register_op(
    "matmul",
    infer=_matmul_infer,
    impl=np.matmul,
    vjp=lambda g, out, a, b: (sum_to(g @ _swap_last(b), a.shape), sum_to(_swap_last(a) @ g, b.shape)),
    args=("a", "b"),
    kind="matmul",
    doc="matrix product over the last two axes; leading axes broadcast",
)

# ---------------------------------------------------------------------------------------
# movement
# ---------------------------------------------------------------------------------------


def _permute_infer(vs, axes):
    x = vs[0]
    if sorted(axes) != list(range(x.ndim)):
        raise ShapeError(f"op 'permute': axes {tuple(axes)} are not a permutation of 0..{x.ndim - 1} for shape {x.shape}")
    return tuple(x.shape[a] for a in axes), x.dtype


register_op(
    "permute",
    infer=_permute_infer,
    impl=lambda x, axes: np.transpose(x, axes),
    vjp=lambda g, out, x, axes: (apply("permute", g, axes=tuple(int(i) for i in np.argsort(axes))),),
    attrs={"axes": REQUIRED},
    kind="movement",
    doc="reorder axes",
)


def _reshape_infer(vs, shape):
    x = vs[0]
    shape = tuple(int(s) for s in shape)
    if shape.count(-1) > 1 or any(s < -1 for s in shape):
        raise ShapeError(f"op 'reshape': invalid target shape {shape}")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if known == 0 or x.size % known:
            raise ShapeError(f"op 'reshape': cannot reshape {x.shape} to {shape}")
        shape = tuple(x.size // known if s == -1 else s for s in shape)
    if math.prod(shape) != x.size:
        raise ShapeError(f"op 'reshape': cannot reshape {arg_label('reshape', 0, x)} of shape {x.shape} ({x.size} elements) to {shape}")
    return shape, x.dtype


register_op(
    "reshape",
    infer=_reshape_infer,
    impl=lambda x, shape: np.reshape(x, shape),
    vjp=lambda g, out, x, shape: (apply("reshape", g, shape=x.shape),),
    attrs={"shape": REQUIRED},
    kind="movement",
    doc="same elements, new shape (one -1 is inferred)",
)


def _broadcast_infer(vs, shape):
    x = vs[0]
    shape = tuple(int(s) for s in shape)
    try:
        if tuple(np.broadcast_shapes(x.shape, shape)) != shape:
            raise ValueError
    except ValueError:
        raise ShapeError(f"op 'broadcast_to': cannot broadcast {arg_label('broadcast_to', 0, x)} of shape {x.shape} to {shape}") from None
    return shape, x.dtype


register_op(
    "broadcast_to",
    infer=_broadcast_infer,
    impl=lambda x, shape: np.broadcast_to(x, shape),
    vjp=lambda g, out, x, shape: (sum_to(g, x.shape),),
    attrs={"shape": REQUIRED},
    kind="movement",
    doc="numpy broadcasting to a larger shape",
)


def _concat_infer(vs, axis):
    if not vs:
        raise ShapeError("op 'concat': needs at least one argument")
    dt = _same_dtype("concat", vs)
    nd = vs[0].ndim
    if not -nd <= axis < nd:
        raise ShapeError(f"op 'concat': axis {axis} out of range for rank {nd}")
    ax = axis % nd
    for i, v in enumerate(vs):
        if v.ndim != nd or any(v.shape[d] != vs[0].shape[d] for d in range(nd) if d != ax):
            raise ShapeError(
                f"op 'concat': {arg_label('concat', i, v)} has shape {v.shape}, which does not match "
                f"{vs[0].shape} outside axis {ax}"
            )
    shape = list(vs[0].shape)
    shape[ax] = sum(v.shape[ax] for v in vs)
    return tuple(shape), dt


def _concat_vjp(g, out, *xs, axis):
    ax = axis % out.ndim
    grads, start = [], 0
    for x in xs:
        stop = start + x.shape[ax]
        starts = [0] * out.ndim
        stops = list(out.shape)
        starts[ax], stops[ax] = start, stop
        grads.append(apply("slice", g, starts=tuple(starts), stops=tuple(stops), steps=(1,) * out.ndim))
        start = stop
    return tuple(grads)


register_op(
    "concat",
    infer=_concat_infer,
    impl=lambda *xs, axis: np.concatenate(xs, axis=axis),
    vjp=_concat_vjp,
    attrs={"axis": 0},
    variadic=True,
    kind="movement",
    doc="join tensors along an axis",
)


def _slice_infer(vs, starts, stops, steps):
    x = vs[0]
    if not (len(starts) == len(stops) == len(steps) == x.ndim):
        raise ShapeError(f"op 'slice': starts/stops/steps need one entry per axis of shape {x.shape}")
    shape = []
    for d, (a, b, s) in enumerate(zip(starts, stops, steps)):
        if s < 1 or not 0 <= a <= b <= x.shape[d]:
            raise ShapeError(f"op 'slice': axis {d}: range {a}:{b}:{s} is invalid for size {x.shape[d]}")
        shape.append(len(range(a, b, s)))
    return tuple(shape), x.dtype


def _slice_impl(x, starts, stops, steps):
    return x[tuple(slice(a, b, s) for a, b, s in zip(starts, stops, steps))]


register_op(
    "slice",
    infer=_slice_infer,
    impl=_slice_impl,
    vjp=lambda g, out, x, starts, stops, steps: (
        apply("unslice", g, shape=x.shape, starts=starts, stops=stops, steps=steps),
    ),
    attrs={"starts": REQUIRED, "stops": REQUIRED, "steps": REQUIRED},
    kind="movement",
    doc="x[a:b:s, ...] with normalised non-negative bounds and positive steps",
)


def _unslice_infer(vs, shape, starts, stops, steps):
    fake = Var("placeholder", (), {}, shape, vs[0].dtype)
    s, _ = _slice_infer([fake], starts, stops, steps)
    if s != vs[0].shape:
        raise ShapeError(f"op 'unslice': argument shape {vs[0].shape} does not fit slice shape {s}")
    return tuple(shape), vs[0].dtype


def _unslice_impl(g, shape, starts, stops, steps):
    out = np.zeros(shape, g.dtype)
    out[tuple(slice(a, b, s) for a, b, s in zip(starts, stops, steps))] = g
    return out


register_op(
    "unslice",
    infer=_unslice_infer,
    impl=_unslice_impl,
    vjp=lambda g, out, x, shape, starts, stops, steps: (
        apply("slice", g, starts=starts, stops=stops, steps=steps),
    ),
    attrs={"shape": REQUIRED, "starts": REQUIRED, "stops": REQUIRED, "steps": REQUIRED},
    kind="movement",
    doc="zeros of `shape` with x written into a slice (the adjoint of slice)",
)


def _pad_infer(vs, pads, value):
    x = vs[0]
    if len(pads) != x.ndim or any(len(p) != 2 or p[0] < 0 or p[1] < 0 for p in pads):
        raise ShapeError(f"op 'pad': pads must be one non-negative (before, after) pair per axis of {x.shape}, got {pads}")
    return tuple(s + a + b for s, (a, b) in zip(x.shape, pads)), x.dtype


def _pad_vjp(g, out, x, pads, value):
    starts = tuple(a for a, _ in pads)
    stops = tuple(a + s for (a, _), s in zip(pads, x.shape))
    return (apply("slice", g, starts=starts, stops=stops, steps=(1,) * x.ndim),)


register_op(
    "pad",
    infer=_pad_infer,
    impl=lambda x, pads, value: np.pad(x, pads, constant_values=value),
    vjp=_pad_vjp,
    attrs={"pads": REQUIRED, "value": 0.0},
    kind="movement",
    doc="constant padding",
)

# ---------------------------------------------------------------------------------------
# indexing
# ---------------------------------------------------------------------------------------


def _gather_infer(vs):
    table, idx = vs
    if idx.dtype.kind != "i":
        raise ShapeError(f"op 'gather': {arg_label('gather', 1, idx)} must be integer, got {idx.dtype}")
    if table.ndim < 1:
        raise ShapeError("op 'gather': the table needs rank >= 1")
    return idx.shape + table.shape[1:], table.dtype


def _gather_impl(table, idx):
    if idx.size and (idx.min() < 0 or idx.max() >= table.shape[0]):
        raise IndexError(f"gather: index out of range [0, {table.shape[0]}): min {idx.min()}, max {idx.max()}")
    return table[idx]


register_op(
    "gather",
    infer=_gather_infer,
    impl=_gather_impl,
    vjp=lambda g, out, table, idx: (apply("scatter_add", g, idx, n=table.shape[0]), None),
    args=("table", "indices"),
    kind="index",
    doc="rows of `table` picked by integer `indices` (embedding lookup)",
)


def _scatter_infer(vs, n):
    src, idx = vs
    if idx.dtype.kind != "i":
        raise ShapeError(f"op 'scatter_add': indices must be integer, got {idx.dtype}")
    if src.shape[: idx.ndim] != idx.shape:
        raise ShapeError(f"op 'scatter_add': source shape {src.shape} does not start with index shape {idx.shape}")
    return (int(n),) + src.shape[idx.ndim:], src.dtype


def _scatter_impl(src, idx, n):
    out = np.zeros((n,) + src.shape[idx.ndim:], src.dtype)
    # idx.size, not -1: a source with no elements (rows of length 0) makes -1 ambiguous
    np.add.at(out, idx.reshape(-1), src.reshape((idx.size,) + src.shape[idx.ndim:]))
    return out


register_op(
    "scatter_add",
    infer=_scatter_infer,
    impl=_scatter_impl,
    vjp=lambda g, out, src, idx, n: (apply("gather", g, idx), None),
    attrs={"n": REQUIRED},
    args=("source", "indices"),
    kind="index",
    doc="sum rows of `source` into n rows at `indices` (the adjoint of gather)",
)


def _one_hot_infer(vs, n, dtype):
    if vs[0].dtype.kind != "i":
        raise ShapeError(f"op 'one_hot': labels must be integer, got {vs[0].dtype}")
    return vs[0].shape + (int(n),), normalize_dtype(dtype)


def _one_hot_impl(idx, n, dtype):
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"one_hot: label out of range [0, {n}): min {idx.min()}, max {idx.max()}")
    return (idx[..., None] == np.arange(n)).astype(dtype)


register_op(
    "one_hot",
    infer=_one_hot_infer,
    impl=_one_hot_impl,
    attrs={"n": REQUIRED, "dtype": "float32"},
    differentiable=False,
    kind="index",
    doc="one-hot encoding of integer labels (not differentiable)",
)

# ---------------------------------------------------------------------------------------
# reductions
# ---------------------------------------------------------------------------------------


def _reduce_infer(op):
    def infer(vs, axes, keepdims):
        x = vs[0]
        ax = _norm_axes(op, axes, x.ndim)
        if op == "max" and any(x.shape[a] == 0 for a in ax):
            raise ShapeError(f"op 'max': cannot reduce over an empty axis of shape {x.shape}")
        shape = tuple(1 if d in ax else s for d, s in enumerate(x.shape)) if keepdims else tuple(
            s for d, s in enumerate(x.shape) if d not in ax
        )
        # A sum of booleans counts (as in numpy and torch); kept as bool it would be an 'any'.
        dt = np.dtype(np.int64) if op == "sum" and x.dtype == np.bool_ else x.dtype
        return shape, dt

    return infer


def _sum_impl(x, axes, keepdims):
    dt = np.int64 if x.dtype == np.bool_ else x.dtype
    return np.sum(x, axis=_axes_tuple(axes), keepdims=keepdims).astype(dt, copy=False)


def _keep_shape(x: Var, axes) -> tuple[int, ...]:
    ax = _norm_axes("sum", axes, x.ndim)
    return tuple(1 if d in ax else s for d, s in enumerate(x.shape))


def _sum_vjp(g, out, x, axes, keepdims):
    return (apply("broadcast_to", apply("reshape", g, shape=_keep_shape(x, axes)), shape=x.shape),)


def _max_vjp(g, out, x, axes, keepdims):
    ks = _keep_shape(x, axes)
    m = apply("eq", x, apply("reshape", out, shape=ks))
    count = apply("sum", apply("cast", m, dtype=x.dtype.str), axes=axes, keepdims=True)
    share = apply("reshape", g, shape=ks) / count
    return (_where0(m, apply("broadcast_to", share, shape=x.shape)),)


def _axes_tuple(axes):
    return None if axes is None else tuple(axes)


register_op(
    "sum",
    infer=_reduce_infer("sum"),
    impl=_sum_impl,
    vjp=_sum_vjp,
    attrs={"axes": None, "keepdims": False},
    kind="reduce",
    doc="sum over axes (all when None)",
)
register_op(
    "max",
    infer=_reduce_infer("max"),
    impl=lambda x, axes, keepdims: np.max(x, axis=_axes_tuple(axes), keepdims=keepdims),
    vjp=_max_vjp,
    attrs={"axes": None, "keepdims": False},
    kind="reduce",
    doc="max over axes; tied maxima share the gradient equally",
)

# ---------------------------------------------------------------------------------------
# sliding windows: the primitive under convolution and pooling
# ---------------------------------------------------------------------------------------


def _window_geometry(op, in_spatial, kernel, stride, padding, dilation):
    nd = len(in_spatial)
    for nm, val in (("kernel", kernel), ("stride", stride), ("padding", padding), ("dilation", dilation)):
        if len(val) != nd:
            raise ShapeError(f"op '{op}': {nm} needs {nd} entries (one per spatial axis), got {val}")
    out = []
    for d in range(nd):
        lo, hi = padding[d]
        if kernel[d] < 1 or stride[d] < 1 or dilation[d] < 1 or lo < 0 or hi < 0:
            raise ShapeError(f"op '{op}': kernel, stride and dilation must be >= 1 and padding >= 0")
        span = dilation[d] * (kernel[d] - 1) + 1
        n = in_spatial[d] + lo + hi - span
        if n < 0:
            raise ShapeError(
                f"op '{op}': window of size {kernel[d]} (dilation {dilation[d]}) does not fit spatial axis {d} of "
                f"size {in_spatial[d]} with padding {padding[d]}"
            )
        out.append(n // stride[d] + 1)
    return tuple(out)


def _unfold_infer(vs, kernel, stride, padding, dilation, pad_value):
    x = vs[0]
    nd = len(kernel)
    if nd not in (1, 2) or x.ndim != nd + 2:
        raise ShapeError(f"op 'unfold': input must be (N, C, *spatial) with 1 or 2 spatial axes, got shape {x.shape}")
    out = _window_geometry("unfold", x.shape[2:], kernel, stride, padding, dilation)
    return x.shape[:2] + out + tuple(kernel), x.dtype


def _window_index(in_spatial, kernel, stride, padding, dilation):
    """For each spatial axis: an index array (out, k) into the padded input."""
    out = _window_geometry("unfold", in_spatial, kernel, stride, padding, dilation)
    return [np.arange(o)[:, None] * s + np.arange(k)[None, :] * dl for o, k, s, dl in zip(out, kernel, stride, dilation)]


def _unfold_impl(x, kernel, stride, padding, dilation, pad_value):
    xp = np.pad(x, ((0, 0), (0, 0)) + tuple(tuple(p) for p in padding), constant_values=pad_value)
    idx = _window_index(x.shape[2:], kernel, stride, padding, dilation)
    if len(kernel) == 1:
        return xp[:, :, idx[0]]  # (N, C, O, K)
    i0 = idx[0][:, None, :, None]
    i1 = idx[1][None, :, None, :]
    return xp[:, :, i0, i1]  # (N, C, OH, OW, KH, KW)


def _fold_infer(vs, shape, kernel, stride, padding, dilation):
    cols = vs[0]
    nd = len(kernel)
    shape = tuple(int(s) for s in shape)
    if len(shape) != nd + 2:
        raise ShapeError(f"op 'fold': output shape {shape} must be (N, C, *spatial) with {nd} spatial axes")
    out = _window_geometry("fold", shape[2:], kernel, stride, padding, dilation)
    want = shape[:2] + out + tuple(kernel)
    if cols.shape != want:
        raise ShapeError(f"op 'fold': windows have shape {cols.shape}, expected {want}")
    return shape, cols.dtype


def _fold_impl(cols, shape, kernel, stride, padding, dilation):
    padded = tuple(s + lo + hi for s, (lo, hi) in zip(shape[2:], padding))
    xp = np.zeros(tuple(shape[:2]) + padded, cols.dtype)
    idx = _window_index(shape[2:], kernel, stride, padding, dilation)
    if len(kernel) == 1:
        np.add.at(xp, (slice(None), slice(None), idx[0]), cols)
    else:
        i0 = idx[0][:, None, :, None]
        i1 = idx[1][None, :, None, :]
        np.add.at(xp, (slice(None), slice(None), i0, i1), cols)
    sl = tuple(slice(lo, lo + s) for s, (lo, hi) in zip(shape[2:], padding))
    return np.ascontiguousarray(xp[(slice(None), slice(None)) + sl])


_WIN_ATTRS = {"kernel": REQUIRED, "stride": REQUIRED, "padding": REQUIRED, "dilation": REQUIRED}

register_op(
    "unfold",
    infer=_unfold_infer,
    impl=_unfold_impl,
    vjp=lambda g, out, x, kernel, stride, padding, dilation, pad_value: (
        apply("fold", g, shape=x.shape, kernel=kernel, stride=stride, padding=padding, dilation=dilation),
    ),
    attrs={**_WIN_ATTRS, "pad_value": 0.0},
    kind="window",
    doc="sliding windows (im2col): (N, C, *S) -> (N, C, *out, *kernel)",
)
register_op(
    "fold",
    infer=_fold_infer,
    impl=_fold_impl,
    vjp=lambda g, out, cols, shape, kernel, stride, padding, dilation: (
        apply("unfold", g, kernel=kernel, stride=stride, padding=padding, dilation=dilation, pad_value=0.0),
    ),
    attrs={"shape": REQUIRED, **_WIN_ATTRS},
    kind="window",
    doc="sum windows back into an image (col2im, the adjoint of unfold)",
)

# ---------------------------------------------------------------------------------------
# randomness: counter-based, so one seed gives one stream on every backend
# ---------------------------------------------------------------------------------------


def _random_infer(vs, shape, salt, dtype):
    seed = vs[0]
    if seed.dtype.kind != "i" or seed.shape != ():
        raise ShapeError(f"op 'random_uniform': the seed must be an integer scalar, got {seed.dtype} {seed.shape}")
    dt = normalize_dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise ShapeError(f"op 'random_uniform': dtype must be float32 or float64, got {dt}")
    return tuple(int(s) for s in shape), dt


def _random_impl(seed, shape, salt, dtype):
    from ..random import philox_uniform

    return philox_uniform(int(seed), int(salt), tuple(shape), np.dtype(dtype))


register_op(
    "random_uniform",
    infer=_random_infer,
    impl=_random_impl,
    attrs={"shape": REQUIRED, "salt": 0, "dtype": "float32"},
    args=("seed",),
    differentiable=False,
    kind="random",
    doc="uniform [0, 1) numbers from Philox4x32-10 keyed by (seed, salt)",
)

