"""Test cases for every op in the registry: primitives (`flexcore.REGISTRY`) and composites
(`flexcore.COMPOSITES`).

A case says which inputs an op takes (shape and kind of values), how to build it from the API,
how its gradient is checked and, where PyTorch has the op, the torch equivalent.  The suite in
`test_ops_registry.py` runs every case through the same checks and fails when an op has no case,
so a new op cannot land untested.

Input kinds (values are drawn from a numpy Generator seeded per case):
  float     standard normal
  wide      normal * 6 (exercises the stable formulations of softmax, softplus, losses)
  positive  uniform [0.5, 2]          (log, sqrt, divisors, variances)
  away      |x| >= 0.2                 (away from the kink at 0 of relu, abs, step, leaky relu...)
  distinct  all values distinct, at least ~0.01 apart (max, pooling: no ties)
  grid      small integers as floats   (comparisons: ties happen)
  unit      uniform [0.1, 0.9]         (probabilities)
  extreme   magnitudes up to 1000      (overflow in exp, log of 0: stable formulations must hold)
  int       integers in [0, high)      (labels, indices)
  bool      random booleans
A float input takes the dtype of the test (float64 for finite differences, float32 against
torch) unless the case fixes it.

Gradient modes:
  fd     differentiable: first and second order are checked against central finite differences
  nofd   differentiable, but finite differences do not apply at these inputs (ties, a float32
         output); the gradient is checked against torch and by the case's own test
  zero   differentiable with a zero gradient (step, sign, stop_gradient)
  none   not differentiable (comparisons, one_hot, random numbers, integer arithmetic)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import flexcore as fc
from flexcore.ir.core import apply
from flexcore.ir.fused import EwCode as E

FLOAT_KINDS = ("float", "wide", "positive", "away", "distinct", "grid", "unit", "extreme")


@dataclass(frozen=True)
class In:
    """One input of a case."""

    shape: tuple[int, ...]
    kind: str = "float"
    high: int = 0  # kind 'int': values in [0, high)
    dtype: str | None = None  # a fixed dtype; None: the test's float dtype (float kinds)
    diff: bool = True  # differentiate with respect to it (float inputs only)
    torch_grad: bool = True  # torch can differentiate with respect to it

    @property
    def is_float(self) -> bool:
        return self.kind in FLOAT_KINDS

    def resolve_dtype(self, float_dtype) -> np.dtype:
        if self.dtype is not None:
            return np.dtype(self.dtype)
        if self.kind == "int":
            return np.dtype(np.int64)
        if self.kind == "bool":
            return np.dtype(np.bool_)
        return np.dtype(float_dtype)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        s = self.shape
        n = int(np.prod(s, dtype=np.int64))
        if self.kind == "float":
            return rng.standard_normal(s)
        if self.kind == "wide":
            return rng.standard_normal(s) * 6.0
        if self.kind == "positive":
            return rng.uniform(0.5, 2.0, s)
        if self.kind == "away":
            return rng.choice([-1.0, 1.0], s) * (0.2 + np.abs(rng.standard_normal(s)))
        if self.kind == "distinct":
            # A random permutation of an evenly spaced grid, jittered: neighbours stay >= 2/n apart.
            v = (rng.permutation(n) + rng.uniform(0.25, 0.75, n)) * (4.0 / max(n, 1)) - 2.0
            return v.reshape(s)
        if self.kind == "grid":
            return rng.integers(-2, 3, s).astype(np.float64)
        if self.kind == "unit":
            return rng.uniform(0.1, 0.9, s)
        if self.kind == "extreme":
            return rng.choice([-1.0, 1.0], s) * rng.choice(
                [1000.0, 120.0, 95.0, 50.0, 30.0, 3.0], s
            ) + rng.uniform(-0.1, 0.1, s)
        if self.kind == "int":
            return rng.integers(0, self.high, s).astype(np.int64)
        if self.kind == "bool":
            return rng.random(s) < 0.5
        raise ValueError(f"unknown input kind {self.kind!r}")


@dataclass(frozen=True)
class Case:
    """One way of calling an op; `op` is the REGISTRY or COMPOSITES name it covers."""

    op: str
    build: Callable[..., Any]  # Vars -> Var, or a tuple/list of Vars
    inputs: tuple[In, ...]
    torch: Callable[..., Any] | None = None  # torch tensors -> tensor(s), same order as inputs
    label: str = ""
    grad: str = "fd"
    sample: Callable[[np.random.Generator], list[np.ndarray]] | None = None  # overrides the kinds

    @property
    def id(self) -> str:
        return f"{self.op}-{self.label}" if self.label else self.op

    def draw(self, rng: np.random.Generator) -> list[np.ndarray]:
        if self.sample is not None:
            return [np.asarray(a) for a in self.sample(rng)]
        return [i.sample(rng) for i in self.inputs]


def _reject(draw: Callable[[np.random.Generator], list[np.ndarray]], ok: Callable[..., bool]):
    """A sampler that redraws until `ok(*arrays)` holds (used to keep away from kinks)."""

    def sample(rng):
        for _ in range(1000):
            arrays = draw(rng)
            if ok(*arrays):
                return arrays
        raise RuntimeError("could not draw inputs away from the kink")

    return sample


def _apart(a, b, gap=0.1) -> bool:
    return bool(np.min(np.abs(np.subtract(a, b))) >= gap)


def _normals(*shapes):
    return lambda rng: [rng.standard_normal(s) for s in shapes]


# ---------------------------------------------------------------------------------------
# torch helpers (imported lazily: op_cases must import without torch)
# ---------------------------------------------------------------------------------------
def _tf():
    """torch.nn.functional."""
    import torch.nn.functional

    return torch.nn.functional


def _torch():
    import torch

    return torch


def _t_pad(pads):
    """flexcore pads ((before, after) per axis, first axis first) -> torch.nn.functional.pad's
    flat list (last axis first)."""
    out = []
    for lo, hi in reversed(pads):
        out += [lo, hi]
    return out


def _t_unfold(x, kernel, stride, padding, dilation, pad_value):
    """flexcore unfold via torch: (N, C, *S) -> (N, C, *out, *kernel)."""
    tf = _tf()
    xp = tf.pad(x, _t_pad(padding), value=pad_value)
    one_d = len(kernel) == 1
    if one_d:
        xp = xp[:, :, None, :]
        kernel, stride, dilation = (1, *kernel), (1, *stride), (1, *dilation)
    n, c = x.shape[:2]
    cols = tf.unfold(xp, kernel, dilation=dilation, stride=stride)  # (N, C*KH*KW, OH*OW)
    oh = (xp.shape[2] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    ow = (xp.shape[3] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    cols = cols.reshape(n, c, kernel[0], kernel[1], oh, ow).permute(0, 1, 4, 5, 2, 3)
    if one_d:
        return cols[:, :, 0, :, 0, :]
    return cols


def _t_fold(cols, shape, kernel, stride, padding, dilation):
    """flexcore fold via torch: sum the windows back into an image of `shape`."""
    tf = _tf()
    one_d = len(kernel) == 1
    n, c = shape[:2]
    padded = [s + lo + hi for s, (lo, hi) in zip(shape[2:], padding, strict=True)]
    if one_d:
        cols = cols[:, :, None, :, None, :]
        kernel, stride, dilation = (1, *kernel), (1, *stride), (1, *dilation)
        padded = [1, *padded]
        padding = ((0, 0), *tuple(padding))
    oh, ow = cols.shape[2], cols.shape[3]
    flat = cols.permute(0, 1, 4, 5, 2, 3).reshape(n, c * kernel[0] * kernel[1], oh * ow)
    img = tf.fold(flat, padded, kernel, dilation=dilation, stride=stride)
    (t, _), (lft, _) = padding
    img = img[:, :, t : t + (shape[2] if not one_d else 1), lft : lft + shape[-1]]
    return img[:, :, 0, :] if one_d else img


def _t_unslice(g, shape, starts, stops, steps):
    torch = _torch()
    out = torch.zeros(shape, dtype=g.dtype)
    out[tuple(slice(a, b, s) for a, b, s in zip(starts, stops, steps, strict=True))] = g
    return out


def _t_scatter_add(src, idx, n):
    torch = _torch()
    rest = src.shape[idx.dim() :]
    out = torch.zeros((n, *tuple(rest)), dtype=src.dtype)
    return out.index_add(0, idx.reshape(-1), src.reshape((-1, *tuple(rest))))


def _t_clip_gradient(x, limit):
    """The identity, with the gradient flowing back through it clamped to [-limit, limit]."""
    y = x.clone()
    if y.requires_grad:
        y.register_hook(lambda g: g.clamp(-limit, limit))
    return y


def _t_batch_norm_train(x, g, b):
    torch = _torch()
    axes = (0, *tuple(range(2, x.dim())))
    var, mean = torch.var_mean(x, dim=axes, correction=0)
    return _tf().batch_norm(x, None, None, g, b, training=True, eps=1e-5), mean, var


def _t_nll(lp, y):
    # torch wants the classes on axis 1: (N, C, d1, ...).
    if lp.dim() > 2:
        lp = lp.movedim(-1, 1)
    return _tf().nll_loss(lp, y)


def _t_cross_entropy(x, y):
    if x.dim() > 2:
        x = x.movedim(-1, 1)
    return _tf().cross_entropy(x, y)


# ---------------------------------------------------------------------------------------
# the cases
# ---------------------------------------------------------------------------------------
CASES: list[Case] = []


def case(op, build, inputs, torch=None, label="", grad="fd", sample=None):
    CASES.append(Case(op, build, tuple(inputs), torch, label, grad, sample))


# -- elementwise binary -------------------------------------------------------------------
case("add", fc.add, [In((2, 3)), In((3,))], lambda a, b: a + b, "broadcast")
case("add", fc.add, [In((1, 3)), In((5, 1))], lambda a, b: a + b, "outer")
case("add", lambda a: a + 2.5, [In((4,))], lambda a: a + 2.5, "scalar")
case(
    "add",
    fc.add,
    [In((2, 3), "int", high=9), In((3,), "int", high=9)],
    lambda a, b: a + b,
    "int",
    grad="none",
)
case("sub", fc.sub, [In((2, 3)), In((2, 1))], lambda a, b: a - b)
case("sub", lambda a: 1.5 - a, [In((3,))], lambda a: 1.5 - a, "rsub")
case("mul", fc.mul, [In((2, 3)), In((3,))], lambda a, b: a * b)
case("mul", fc.mul, [In((4, 1, 3)), In((5, 1))], lambda a, b: a * b, "outer")
case("div", fc.div, [In((2, 3)), In((3,), "positive")], lambda a, b: a / b)
case("div", lambda b: 2.0 / b, [In((5,), "positive")], lambda b: 2.0 / b, "rdiv")
case("neg", fc.neg, [In((2, 3))], lambda a: -a)
case("neg", fc.neg, [In((4,), "int", high=5)], lambda a: -a, "int", grad="none")
case("pow", fc.pow, [In((2, 3), "positive"), In((3,))], lambda a, b: a**b)
case("pow", lambda a: a**3.0, [In((5,))], lambda a: a**3.0, "cube")
case("pow", lambda b: 2.0**b, [In((5,))], lambda b: 2.0**b, "rpow")
_max_pair = _reject(_normals((2, 3), (3,)), _apart)
case(
    "maximum",
    fc.maximum,
    [In((2, 3)), In((3,))],
    lambda a, b: _torch().maximum(a, b),
    sample=_max_pair,
)
case(
    "minimum",
    fc.minimum,
    [In((2, 3)), In((3,))],
    lambda a, b: _torch().minimum(a, b),
    sample=_max_pair,
)
case(
    "where",
    fc.where,
    [In((2, 3), "bool"), In((2, 3)), In((3,))],
    lambda c, a, b: _torch().where(c, a, b),
)
case(
    "where",
    lambda c, a: fc.where(c, a, 0.0),
    [In((3, 1), "bool"), In((1, 4))],
    lambda c, a: _torch().where(c, a, 0.0),
    "scalar",
)
for _cmp, _tfn in [
    ("eq", "eq"),
    ("ne", "ne"),
    ("lt", "lt"),
    ("le", "le"),
    ("gt", "gt"),
    ("ge", "ge"),
]:
    case(
        _cmp,
        getattr(fc, _cmp),
        [In((2, 3), "grid"), In((3,), "grid")],
        (lambda name: lambda a, b: getattr(_torch(), name)(a, b))(_tfn),
        grad="none",
    )
case(
    "lt",
    lambda a, b: a < b,
    [In((4,), "int", high=3), In((4,), "int", high=3)],
    lambda a, b: a < b,
    "int",
    grad="none",
)

# -- elementwise unary ------------------------------------------------------------------
case("exp", fc.exp, [In((2, 3))], lambda x: x.exp())
case("log", fc.log, [In((2, 3), "positive")], lambda x: x.log())
case("log1p", fc.log1p, [In((2, 3), "positive")], lambda x: x.log1p())
case("sqrt", fc.sqrt, [In((2, 3), "positive")], lambda x: x.sqrt())
case("abs", fc.abs, [In((2, 3), "away")], lambda x: x.abs())
case("sigmoid", fc.sigmoid, [In((2, 3), "wide")], lambda x: x.sigmoid())
case("tanh", fc.tanh, [In((2, 3))], lambda x: x.tanh())
case("arctan", fc.arctan, [In((2, 3))], lambda x: x.arctan())
case("sign", fc.sign, [In((2, 3), "away")], lambda x: x.sign(), grad="zero")
case("step", fc.step, [In((2, 3), "away")], lambda x: (x > 0).to(x.dtype), grad="zero")
case("stop_gradient", fc.stop_gradient, [In((2, 3))], lambda x: x.detach(), grad="zero")
# clip_gradient is the identity whose vjp clips the incoming gradient.  Under the limit (far above
# any cotangent the suite draws) it is the identity's derivative, so finite differences apply;
# over it the clipped gradient is by design not the derivative, so that case is checked against
# torch's clamp hook (its normal weights fall on both sides of 0.5) and with explicit values in
# tests/nn/test_sequences.py.
case(
    "clip_gradient",
    lambda x: fc.clip_gradient(x, 1e3),
    [In((2, 3))],
    lambda x: _t_clip_gradient(x, 1e3),
    "under_limit",
)
case(
    "clip_gradient",
    lambda x: fc.clip_gradient(x, 0.5),
    [In((3, 4))],
    lambda x: _t_clip_gradient(x, 0.5),
    "clipped",
    grad="nofd",
)
case(
    "cast",
    lambda x: fc.cast(x, "float64"),
    [In((2, 3), dtype="float32")],
    lambda x: x.double(),
    "f32_f64",
)
# A float32 result cannot carry a finite difference to 1e-6: its gradient is checked exactly.
case(
    "cast",
    lambda x: fc.cast(x, "float32"),
    [In((2, 3), dtype="float64")],
    lambda x: x.float(),
    "f64_f32",
    grad="nofd",
)
case(
    "cast",
    lambda x: fc.cast(x, "float32"),
    [In((2, 3), "int", high=7)],
    lambda x: x.float(),
    "int",
    grad="none",
)
case(
    "cast",
    lambda x: fc.cast(x, "float64"),
    [In((5,), "bool")],
    lambda x: x.double(),
    "bool",
    grad="none",
)

# -- linear algebra -----------------------------------------------------------------------
case("matmul", fc.matmul, [In((3, 4)), In((4, 5))], lambda a, b: a @ b, "2d")
case("matmul", fc.matmul, [In((2, 3, 4)), In((2, 4, 5))], lambda a, b: a @ b, "batched")
case("matmul", fc.matmul, [In((2, 3, 4)), In((4, 1))], lambda a, b: a @ b, "batch_rank2")
case("matmul", fc.matmul, [In((2, 1, 3, 4)), In((5, 4, 2))], lambda a, b: a @ b, "broadcast_batch")
case("matmul", lambda a, b: a @ b, [In((1, 4)), In((4, 1))], lambda a, b: a @ b, "dot")

# -- movement -----------------------------------------------------------------------------
case("permute", lambda x: fc.permute(x, (2, 0, 1)), [In((2, 3, 4))], lambda x: x.permute(2, 0, 1))
case(
    "permute", lambda x: fc.transpose(x), [In((2, 3, 4))], lambda x: x.permute(2, 1, 0), "transpose"
)
case(
    "permute",
    lambda x: fc.transpose(x, (0, -1, 1)),
    [In((2, 3, 4))],
    lambda x: x.permute(0, 2, 1),
    "transpose_axes",
)
case("permute", lambda x: x.T, [In((3, 5))], lambda x: x.T, "T")
case("reshape", lambda x: fc.reshape(x, (4, -1)), [In((2, 3, 4))], lambda x: x.reshape(4, -1))
case("reshape", lambda x: x.reshape(5), [In((1, 5))], lambda x: x.reshape(5), "method")
case(
    "broadcast_to",
    lambda x: fc.broadcast_to(x, (2, 3, 5)),
    [In((3, 1))],
    lambda x: x.broadcast_to((2, 3, 5)),
)
case(
    "broadcast_to",
    lambda x: fc.broadcast_to(x, (2, 3)),
    [In(())],
    lambda x: x.broadcast_to((2, 3)),
    "scalar",
)
case(
    "concat",
    lambda a, b, c: fc.concat([a, b, c], axis=1),
    [In((2, 3)), In((2, 1)), In((2, 4))],
    lambda a, b, c: _torch().cat([a, b, c], 1),
    "axis1",
)
case(
    "concat",
    lambda a, b: fc.concat([a, b], axis=-3),
    [In((1, 3, 2)), In((2, 3, 2))],
    lambda a, b: _torch().cat([a, b], -3),
    "neg_axis",
)
case(
    "slice",
    lambda x: apply("slice", x, starts=(0, 1, 0), stops=(3, 4, 5), steps=(2, 1, 3)),
    [In((3, 4, 5))],
    lambda x: x[0:3:2, 1:4, 0:5:3],
    "primitive",
)
case(
    "slice",
    lambda x: fc.slice(x, [1, 0], [5, 3], [2, 2]),
    [In((5, 4))],
    lambda x: x[1:5:2, 0:3:2],
    "steps",
)
case(
    "slice", lambda x: fc.slice(x, [-3], [100]), [In((5, 2))], lambda x: x[-3:100], "python_bounds"
)
case("slice", lambda x: x[1:, ::2, -1], [In((3, 5, 4))], lambda x: x[1:, ::2, -1], "getitem")
case(
    "slice",
    lambda x: x[..., None, 1],
    [In((2, 3, 4))],
    lambda x: x[..., None, 1],
    "getitem_ellipsis",
)
case("slice", lambda x: x[2], [In((3, 4))], lambda x: x[2], "getitem_int")
case(
    "unslice",
    lambda g: apply(
        "unslice", g, shape=(3, 4, 5), starts=(0, 1, 0), stops=(3, 4, 5), steps=(2, 2, 3)
    ),
    [In((2, 2, 2))],
    lambda g: _t_unslice(g, (3, 4, 5), (0, 1, 0), (3, 4, 5), (2, 2, 3)),
)
case("split", lambda x: fc.split(x, 3, axis=1), [In((2, 6))], lambda x: x.split(2, dim=1), "equal")
case(
    "split",
    lambda x: fc.split(x, [1, 3, 1], axis=-1),
    [In((3, 5))],
    lambda x: x.split([1, 3, 1], dim=-1),
    "sizes",
)
case(
    "pad",
    lambda x: fc.pad(x, ((1, 2), (0, 3)), value=0.5),
    [In((2, 3))],
    lambda x: _tf().pad(x, _t_pad(((1, 2), (0, 3))), value=0.5),
)
case(
    "pad",
    lambda x: fc.pad(x, ((0, 0), (2, 1), (1, 0))),
    [In((1, 2, 3))],
    lambda x: _tf().pad(x, _t_pad(((0, 0), (2, 1), (1, 0)))),
    "3d",
)

# -- indexing -----------------------------------------------------------------------------
# Indices with repeats, so the gradient must sum rows.
_gather_sample = lambda rng: [rng.standard_normal((5, 3)), np.array([[0, 4, 4, 1], [2, 0, 3, 4]])]  # noqa: E731
case(
    "gather",
    fc.gather,
    [In((5, 3)), In((2, 4), "int", high=5)],
    lambda t, i: t[i],
    "rows",
    sample=_gather_sample,
)
case("gather", fc.gather, [In((5,)), In((3,), "int", high=5)], lambda t, i: t[i], "vector")
case(
    "scatter_add",
    lambda s, i: apply("scatter_add", s, i, n=5),
    [In((2, 4, 3)), In((2, 4), "int", high=5)],
    lambda s, i: _t_scatter_add(s, i, 5),
    sample=lambda rng: [rng.standard_normal((2, 4, 3)), np.array([[0, 4, 4, 1], [2, 0, 3, 4]])],
)
case(
    "one_hot",
    lambda y: fc.one_hot(y, 4),
    [In((2, 3), "int", high=4)],
    lambda y: _tf().one_hot(y, 4).float(),
    grad="none",
)
case(
    "random_uniform",
    lambda s: fc.random_uniform(s, (3, 4), salt=5),
    [In((), "int", high=2**31)],
    None,
    grad="none",
)
case(
    "random_uniform",
    lambda s: fc.random_uniform(s, (7,), dtype="float64"),
    [In((), "int", high=2**31)],
    None,
    "float64",
    grad="none",
)

# -- reductions ---------------------------------------------------------------------------
case("sum", fc.sum, [In((2, 3, 4))], lambda x: x.sum(), "all")
case(
    "sum",
    lambda x: fc.sum(x, 1, keepdims=True),
    [In((2, 3, 4))],
    lambda x: x.sum(1, keepdim=True),
    "keepdims",
)
case("sum", lambda x: fc.sum(x, (0, 2)), [In((2, 3, 4))], lambda x: x.sum((0, 2)), "axes")
case("sum", lambda x: x.sum(-1), [In((3, 1))], lambda x: x.sum(-1), "last")
case(
    "sum",
    lambda x: fc.sum(x, 0),
    [In((5, 3), "bool")],
    lambda x: x.sum(0),
    "bool_counts",
    grad="none",
)
case(
    "sum",
    lambda x: fc.sum(x, 1, keepdims=True),
    [In((2, 3), "int", high=9)],
    lambda x: x.sum(1, keepdim=True),
    "int",
    grad="none",
)
case(
    "max",
    lambda x: fc.max(x, 1, keepdims=True),
    [In((2, 3, 4), "distinct")],
    lambda x: x.amax(1, keepdim=True),
    "keepdims",
)
case(
    "max",
    lambda x: fc.max(x, (0, 2)),
    [In((2, 3, 4), "distinct")],
    lambda x: x.amax((0, 2)),
    "axes",
)
case("max", lambda x: x.max(), [In((5,), "distinct")], lambda x: x.amax(), "all")
# Tied maxima share the gradient equally, as torch.amax does; finite differences do not apply.
case(
    "max", lambda x: fc.max(x, -1), [In((3, 4), "grid")], lambda x: x.amax(-1), "ties", grad="nofd"
)
case("mean", fc.mean, [In((2, 3, 4))], lambda x: x.mean(), "all")
case(
    "mean",
    lambda x: fc.mean(x, (0, 2), keepdims=True),
    [In((2, 3, 4))],
    lambda x: x.mean((0, 2), keepdim=True),
    "axes",
)
case("var", lambda x: fc.var(x, -1), [In((3, 5))], lambda x: x.var(-1, correction=0), "last")
case(
    "var",
    lambda x: fc.var(x, (0, 1), keepdims=True),
    [In((2, 3, 2))],
    lambda x: x.var((0, 1), correction=0, keepdim=True),
    "axes",
)

# -- sliding windows ----------------------------------------------------------------------
_UNF2 = dict(kernel=(2, 3), stride=(2, 1), padding=((1, 0), (2, 1)), dilation=(1, 2))
_UNF1 = dict(kernel=(3,), stride=(2,), padding=((1, 2),), dilation=(2,))
case(
    "unfold",
    lambda x: apply("unfold", x, **_UNF2),
    [In((1, 2, 5, 6))],
    lambda x: _t_unfold(x, pad_value=0.0, **_UNF2),
    "2d",
)
case(
    "unfold",
    lambda x: apply("unfold", x, pad_value=-1.5, **_UNF1),
    [In((2, 3, 7))],
    lambda x: _t_unfold(x, pad_value=-1.5, **_UNF1),
    "1d",
)
case(
    "fold",
    lambda c: apply("fold", c, shape=(1, 2, 5, 6), **_UNF2),
    [In((1, 2, 3, 5, 2, 3))],
    lambda c: _t_fold(c, (1, 2, 5, 6), **_UNF2),
    "2d",
)
case(
    "fold",
    lambda c: apply("fold", c, shape=(2, 3, 7), **_UNF1),
    [In((2, 3, 3, 3))],
    lambda c: _t_fold(c, (2, 3, 7), **_UNF1),
    "1d",
)

# -- elementwise composites and activations -------------------------------------------------
_clip_sample = _reject(_normals((3, 4)), lambda x: _apart(x, -0.5) and _apart(x, 0.7))
case(
    "clip",
    lambda x: fc.clip(x, -0.5, 0.7),
    [In((3, 4))],
    lambda x: x.clamp(-0.5, 0.7),
    sample=_clip_sample,
)
case("square", fc.square, [In((2, 3))], lambda x: x.square())
case("identity", fc.identity, [In((2, 3))], lambda x: x)
case("softsign", fc.softsign, [In((2, 3), "away")], lambda x: _tf().softsign(x))
case("relu", fc.relu, [In((2, 3), "away")], lambda x: x.relu())
case(
    "leaky_relu",
    lambda x: fc.leaky_relu(x, 0.2),
    [In((2, 3), "away")],
    lambda x: _tf().leaky_relu(x, 0.2),
)
case(
    "prelu", fc.prelu, [In((2, 3, 4), "away"), In((3,))], lambda x, a: _tf().prelu(x, a), "channels"
)
case("prelu", fc.prelu, [In((2, 5), "away"), In((1,))], lambda x, a: _tf().prelu(x, a), "shared")
case("elu", lambda x: fc.elu(x, 1.3), [In((2, 3), "away")], lambda x: _tf().elu(x, 1.3))
case("softplus", fc.softplus, [In((3, 4), "wide")], lambda x: _tf().softplus(x))
# Smooth functions built from kinked primitives: the kink (here x = 0) must not show.
_with_zeros = lambda rng: [np.concatenate([np.zeros(3), rng.standard_normal(3)])]  # noqa: E731
case(
    "softplus", fc.softplus, [In((6,))], lambda x: _tf().softplus(x), "at_zero", sample=_with_zeros
)
case("softmax", lambda x: fc.softmax(x), [In((3, 4), "wide")], lambda x: x.softmax(-1), "last")
case("softmax", lambda x: fc.softmax(x, axis=0), [In((3, 1, 4))], lambda x: x.softmax(0), "axis0")
case(
    "log_softmax",
    lambda x: fc.log_softmax(x),
    [In((3, 4), "wide")],
    lambda x: x.log_softmax(-1),
    "last",
)
case(
    "log_softmax",
    lambda x: fc.log_softmax(x, axis=1),
    [In((2, 5, 1))],
    lambda x: x.log_softmax(1),
    "axis1",
)

# -- convolution and pooling ---------------------------------------------------------------
case(
    "conv1d",
    lambda x, w, b: fc.conv1d(x, w, b, stride=2, padding=1, dilation=2, groups=2),
    [In((2, 4, 7)), In((6, 2, 3)), In((6,))],
    lambda x, w, b: _tf().conv1d(x, w, b, stride=2, padding=1, dilation=2, groups=2),
    "groups",
)
case(
    "conv1d",
    lambda x, w: fc.conv1d(x, w, padding="same"),
    [In((1, 3, 6)), In((2, 3, 4))],
    lambda x, w: _tf().conv1d(x, w, padding="same"),
    "same_even",
)
case(
    "conv2d",
    lambda x, w, b: fc.conv2d(x, w, b, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2),
    [In((2, 4, 5, 6)), In((6, 2, 3, 2)), In((6,))],
    lambda x, w, b: _tf().conv2d(x, w, b, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2),
    "groups",
)
case(
    "conv2d",
    lambda x, w: fc.conv2d(x, w, padding="same", dilation=(2, 1)),
    [In((1, 3, 5, 4)), In((2, 3, 2, 3))],
    lambda x, w: _tf().conv2d(x, w, padding="same", dilation=(2, 1)),
    "same_even",
)
case(
    "conv2d",
    lambda x, w, b: fc.conv2d(x, w, b),
    [In((1, 1, 3, 3)), In((1, 1, 3, 3)), In((1,))],
    lambda x, w, b: _tf().conv2d(x, w, b),
    "valid_1x1_out",
)
case(
    "conv2d",
    lambda x, w: fc.conv2d(x, w, padding=((0, 1), (1, 0)), stride=2),
    [In((1, 2, 5, 5)), In((3, 2, 3, 3))],
    lambda x, w: _tf().conv2d(_tf().pad(x, [1, 0, 0, 1]), w, stride=2),
    "asymmetric_pads",
)
case(
    "max_pool1d",
    lambda x: fc.max_pool1d(x, 3, stride=2, padding=1),
    [In((2, 3, 7), "distinct")],
    lambda x: _tf().max_pool1d(x, 3, 2, 1),
)
case(
    "max_pool1d",
    lambda x: fc.max_pool1d(x, 2),
    [In((1, 2, 5), "distinct")],
    lambda x: _tf().max_pool1d(x, 2),
    "default_stride",
)
case(
    "max_pool2d",
    lambda x: fc.max_pool2d(x, (3, 2), stride=2, padding=1),
    [In((2, 2, 5, 6), "distinct")],
    lambda x: _tf().max_pool2d(x, (3, 2), 2, 1),
)
case(
    "max_pool2d",
    lambda x: fc.max_pool2d(x, 2),
    [In((1, 3, 4, 5), "distinct")],
    lambda x: _tf().max_pool2d(x, 2),
    "default_stride",
)
case(
    "avg_pool1d",
    lambda x: fc.avg_pool1d(x, 3, stride=2, padding=1),
    [In((2, 3, 7))],
    lambda x: _tf().avg_pool1d(x, 3, 2, 1),
)
case(
    "avg_pool2d",
    lambda x: fc.avg_pool2d(x, (3, 2), stride=(2, 1), padding=(1, 1)),
    [In((2, 2, 5, 6))],
    lambda x: _tf().avg_pool2d(x, (3, 2), (2, 1), (1, 1)),
)
case(
    "avg_pool2d",
    lambda x: fc.avg_pool2d(x, 2),
    [In((1, 1, 4, 5))],
    lambda x: _tf().avg_pool2d(x, 2),
    "default_stride",
)

# -- dropout and normalisation -------------------------------------------------------------
# The mask is fixed by the seed, so dropout is linear in x and finite differences apply.
case("dropout", lambda x: fc.dropout(x, 0.3, seed=11), [In((4, 5))], None, "const_seed")
case(
    "dropout",
    lambda x, s: fc.dropout(x, 0.5, s, salt=3),
    [In((3, 4)), In((), "int", high=1000)],
    None,
    "var_seed",
)
case(
    "dropout",
    lambda x: fc.dropout(x, 0.3, seed=11, training=False),
    [In((2, 3))],
    lambda x: x,
    "inference",
)
case(
    "batch_norm",
    lambda x, g, b: fc.batch_norm(x, g, b),
    [In((4, 3, 2)), In((3,)), In((3,))],
    _t_batch_norm_train,
    "train",
)
case(
    "batch_norm",
    lambda x, g, b: fc.batch_norm(x, g, b),
    [In((5, 3)), In((3,)), In((3,))],
    _t_batch_norm_train,
    "train_2d",
)
case(
    "batch_norm",
    lambda x, g, b, m, v: fc.batch_norm(x, g, b, m, v, training=False),
    [
        In((2, 3, 2, 2)),
        In((3,)),
        In((3,)),
        In((3,), torch_grad=False),
        In((3,), "positive", torch_grad=False),
    ],
    lambda x, g, b, m, v: _tf().batch_norm(x, m, v, g, b, training=False, eps=1e-5),
    "inference",
)
case(
    "layer_norm",
    lambda x, g, b: fc.layer_norm(x, g, b),
    [In((3, 5)), In((5,)), In((5,))],
    lambda x, g, b: _tf().layer_norm(x, (5,), g, b, eps=1e-5),
    "last",
)
case(
    "layer_norm",
    lambda x: fc.layer_norm(x, axes=(-2, -1)),
    [In((2, 3, 4))],
    lambda x: _tf().layer_norm(x, (3, 4), eps=1e-5),
    "two_axes",
)

# -- losses ---------------------------------------------------------------------------------
case("nll_loss", fc.nll_loss, [In((4, 5)), In((4,), "int", high=5)], _t_nll, "2d")
case("nll_loss", fc.nll_loss, [In((2, 3, 4)), In((2, 3), "int", high=4)], _t_nll, "3d")
case(
    "softmax_cross_entropy",
    fc.softmax_cross_entropy,
    [In((4, 5), "wide"), In((4,), "int", high=5)],
    _t_cross_entropy,
    "2d",
)
case(
    "softmax_cross_entropy",
    fc.softmax_cross_entropy,
    [In((2, 3, 4)), In((2, 3), "int", high=4)],
    _t_cross_entropy,
    "3d",
)
case("mse_loss", fc.mse_loss, [In((3, 4)), In((3, 4))], lambda p, t: _tf().mse_loss(p, t))
case(
    "bce_with_logits",
    fc.bce_with_logits,
    [In((3, 4), "wide"), In((3, 4), "unit")],
    lambda x, t: _tf().binary_cross_entropy_with_logits(x, t),
)
case(
    "bce_with_logits",
    fc.bce_with_logits,
    [In((6,)), In((6,), "unit")],
    lambda x, t: _tf().binary_cross_entropy_with_logits(x, t),
    "at_zero",
    sample=lambda rng: [*_with_zeros(rng), rng.uniform(0.1, 0.9, 6)],
)

# -- edge cases: sizes 1 and 0, broadcasting corners, extreme values -------------------------
case("div", fc.div, [In((3, 1)), In((1, 4), "positive")], lambda a, b: a / b, "outer")
case("pow", fc.pow, [In((3,), "positive"), In((2, 3))], lambda a, b: a**b, "broadcast_base")
case(
    "maximum",
    lambda a: fc.maximum(a, 0.5),
    [In((2, 3))],
    lambda a: a.clamp(min=0.5),
    "scalar",
    sample=_reject(_normals((2, 3)), lambda a: _apart(a, 0.5)),
)
case(
    "where",
    fc.where,
    [In((4, 1), "bool"), In((3,)), In(())],
    lambda c, a, b: _torch().where(c, a, b),
    "cond_broadcast",
    # Both branches taken, so both get a gradient.
    sample=lambda rng: [
        np.array([[True], [False], [False], [True]]),
        rng.standard_normal(3),
        rng.standard_normal(()),
    ],
)
case("reshape", lambda x: fc.reshape(x, ()), [In((1, 1))], lambda x: x.reshape(()), "to_scalar")
case("sum", fc.sum, [In(())], lambda x: x.sum(), "scalar")
case("max", lambda x: fc.max(x, 0), [In((1, 4))], lambda x: x.amax(0), "size1_axis")
case("slice", lambda x: x[2:2], [In((3, 4))], lambda x: x[2:2], "empty")
case("gather", fc.gather, [In((5, 2, 3)), In((4,), "int", high=5)], lambda t, i: t[i], "table3d")
case("matmul", fc.matmul, [In((1, 2, 3)), In((3, 3, 2))], lambda a, b: a @ b, "batch1_vs_3")
case(
    "clip",
    lambda x, lo, hi: fc.clip(x, lo, hi),
    [In((3, 4)), In((4,)), In((4,))],
    lambda x, lo, hi: _torch().clamp(x, lo, hi),
    "tensor_bounds",
    sample=_reject(
        lambda rng: [
            rng.standard_normal((3, 4)),
            rng.uniform(-1.0, -0.2, 4),
            rng.uniform(0.2, 1.0, 4),
        ],
        lambda x, lo, hi: _apart(x, lo) and _apart(x, hi),
    ),
)
case("prelu", fc.prelu, [In((2, 3, 2, 2), "away"), In((3,))], lambda x, a: _tf().prelu(x, a), "4d")
case("elu", fc.elu, [In((2, 3), "away")], lambda x: _tf().elu(x), "default_alpha")
case(
    "leaky_relu",
    fc.leaky_relu,
    [In((2, 3), "away")],
    lambda x: _tf().leaky_relu(x),
    "default_alpha",
)
for _op, _fn in [
    ("sigmoid", lambda x: x.sigmoid()),
    ("tanh", lambda x: x.tanh()),
    ("arctan", lambda x: x.arctan()),
    ("softsign", lambda x: _tf().softsign(x)),
    ("elu", lambda x: _tf().elu(x)),
    ("softplus", lambda x: _tf().softplus(x)),
    ("softmax", lambda x: x.softmax(-1)),
    ("log_softmax", lambda x: x.log_softmax(-1)),
]:
    case(_op, getattr(fc, _op), [In((3, 4), "extreme")], _fn, "extreme")
case(
    "softmax_cross_entropy",
    fc.softmax_cross_entropy,
    [In((4, 5), "extreme"), In((4,), "int", high=5)],
    _t_cross_entropy,
    "extreme",
)
case(
    "bce_with_logits",
    fc.bce_with_logits,
    [In((3, 4), "extreme"), In((3, 4), "unit")],
    lambda x, t: _tf().binary_cross_entropy_with_logits(x, t),
    "extreme",
)
# 'same' with a stride keeps ceil(size / stride) outputs (TensorFlow's rule; torch has no 'same'
# with strides, so its side pads explicitly: a total of 2 here, split (1, 1)).
case(
    "conv2d",
    lambda x, w: fc.conv2d(x, w, stride=2, padding="same"),
    [In((1, 2, 5, 5)), In((3, 2, 3, 3))],
    lambda x, w: _tf().conv2d(x, w, stride=2, padding=1),
    "same_stride2",
)
case(
    "conv1d",
    lambda x, w, b: fc.conv1d(x, w, b, stride=3),
    [In((1, 1, 5)), In((1, 1, 2)), In((1,))],
    lambda x, w, b: _tf().conv1d(x, w, b, stride=3),
    "size1_channels",
)
# An even window with 'same' pads (0, 1): torch's pooling pads symmetrically only, so its side
# pads explicitly (with -inf for max, zeros for average: count_include_pad).
case(
    "max_pool2d",
    lambda x: fc.max_pool2d(x, 2, stride=1, padding="same"),
    [In((1, 2, 4, 5), "distinct")],
    lambda x: _tf().max_pool2d(_tf().pad(x, [0, 1, 0, 1], value=float("-inf")), 2, 1),
    "same",
)
case(
    "avg_pool1d",
    lambda x: fc.avg_pool1d(x, 2, stride=1, padding="same"),
    [In((2, 1, 5))],
    lambda x: _tf().avg_pool1d(_tf().pad(x, [0, 1]), 2, 1),
    "same",
)
case(
    "max_pool1d",
    lambda x: fc.max_pool1d(x, (2,), stride=(3,)),
    [In((1, 1, 8), "distinct")],
    lambda x: _tf().max_pool1d(x, 2, 3),
    "stride_gt_kernel",
)
case(
    "batch_norm",
    lambda x, g, b: fc.batch_norm(x, g, b),
    [In((1, 2, 3, 3)), In((2,)), In((2,))],
    _t_batch_norm_train,
    "batch1",
)
case(
    "layer_norm",
    lambda x, g: fc.layer_norm(x, g),
    [In((1, 3)), In((3,))],
    lambda x, g: _tf().layer_norm(x, (3,), g, eps=1e-5),
    "no_beta",
)

# -- post-autodiff ops (flexcore.ir.fused): made by the lowering passes, never differentiated ------
for _ta in (False, True):
    for _tb in (False, True):
        case(
            "gemm",
            (lambda ta, tb: lambda a, b: apply("gemm", a, b, trans_a=ta, trans_b=tb))(_ta, _tb),
            [In((4, 3) if _ta else (3, 4)), In((5, 4) if _tb else (4, 5))],
            (lambda ta, tb: lambda a, b: (a.T if ta else a) @ (b.T if tb else b))(_ta, _tb),
            f"t{int(_ta)}{int(_tb)}",
            grad="none",
        )
_DENSE = [("identity", False, False), ("relu", True, False), ("sigmoid", False, True), ("tanh", True, True)]
for _act, _ta, _tb in _DENSE:
    case(
        "dense",
        (lambda act, ta, tb: lambda x, w, b: apply("dense", x, w, b, act=act, trans_a=ta, trans_b=tb))(_act, _ta, _tb),
        [In((4, 3) if _ta else (3, 4)), In((5, 4) if _tb else (4, 5)), In((5,))],
        (lambda act, ta, tb: lambda x, w, b: {
            "identity": lambda y: y, "relu": lambda y: y.relu(), "sigmoid": lambda y: y.sigmoid(), "tanh": lambda y: y.tanh()
        }[act]((x.T if ta else x) @ (w.T if tb else w) + b))(_act, _ta, _tb),
        _act,
        grad="none",
    )



# Post-autodiff convolutions (flexcore.ir.fused_conv); torch convolves the explicitly padded input.
def _t_conv(x, w, stride, padding, dilation, groups):
    conv = _tf().conv1d if w.ndim == 3 else _tf().conv2d
    return conv(_tf().pad(x, _t_pad(padding)), w, stride=stride, dilation=dilation, groups=groups)


def _t_conv_backward(which, a, b, shape, stride, padding, dilation, groups):
    """The data (which='x') or weight ('w') gradient of _t_conv by torch's autograd."""
    torch = _torch()
    if which == "x":
        gy, w = a, b.detach()
        x = torch.zeros(shape, dtype=gy.dtype, requires_grad=True)
        return torch.autograd.grad(_t_conv(x, w, stride, padding, dilation, groups), x, gy)[0]
    x, gy = a.detach(), b
    w = torch.zeros(shape, dtype=gy.dtype, requires_grad=True)
    return torch.autograd.grad(_t_conv(x, w, stride, padding, dilation, groups), w, gy)[0]


_CONVS = [
    # x shape, w shape, y shape, attrs, label
    ((2, 4, 7, 6), (6, 2, 3, 2), (2, 6, 2, 3), dict(stride=(2, 3), padding=((1, 0), (2, 1)), dilation=(2, 1), groups=2),
     "2d_strided_grouped"),
    ((3, 3, 5, 5), (4, 3, 3, 3), (3, 4, 5, 5), dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=1),
     "2d_same"),
    ((2, 3, 4, 5), (2, 3, 1, 1), (2, 2, 4, 5), dict(stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1),
     "2d_pointwise"),
    ((3, 2, 9), (4, 1, 3), (3, 4, 3), dict(stride=(2,), padding=((1, 0),), dilation=(2,), groups=2), "1d"),
]
for _xs, _ws, _ys, _at, _label in _CONVS:
    case(
        "conv_forward",
        (lambda at: lambda x, w: apply("conv_forward", x, w, **at))(_at),
        [In(_xs), In(_ws)],
        (lambda at: lambda x, w: _t_conv(x, w, **at))(_at),
        _label,
        grad="none",
    )
    case(
        "conv_forward_bias",
        (lambda at: lambda x, w, b: apply("conv_forward_bias", x, w, b, **at))(_at),
        [In(_xs), In(_ws), In(_ws[:1])],
        (lambda at: lambda x, w, b: (lambda y: y + b.reshape((1, -1) + (1,) * (y.ndim - 2)))(_t_conv(x, w, **at)))(_at),
        _label,
        grad="none",
    )
    case(
        "conv_forward_bias",
        (lambda at: lambda x, w, b: apply("conv_forward_bias", x, w, b, act="relu", **at))(_at),
        [In(_xs), In(_ws), In(_ws[:1])],
        (lambda at: lambda x, w, b: _torch().relu(_t_conv(x, w, **at) + b.reshape((1, -1) + (1,) * (x.ndim - 2))))(_at),
        f"{_label}_relu",
        grad="none",
    )
    case(
        "conv_backward_data",
        (lambda at, xs: lambda gy, w: apply("conv_backward_data", gy, w, shape=xs, **at))(_at, _xs),
        [In(_ys), In(_ws)],
        (lambda at, xs: lambda gy, w: _t_conv_backward("x", gy, w, xs, **at))(_at, _xs),
        _label,
        grad="none",
    )
    case(
        "conv_backward_weight",
        (lambda at, ws: lambda x, gy: apply("conv_backward_weight", x, gy, kernel=ws[2:], **at))(_at, _ws),
        [In(_xs), In(_ys)],
        (lambda at, ws: lambda x, gy: _t_conv_backward("w", x, gy, ws, **at))(_at, _ws),
        _label,
        grad="none",
    )


# Post-autodiff max pooling (flexcore.ir.fused_conv); 'grid' values make ties.
def _t_max_pool_parts(which, x, y, share, kernel, stride, padding):
    """max_pool_ties ('ties') or max_pool_backward ('backward') from torch's unfold."""
    tf = _tf()
    nd = len(kernel)
    xp = tf.pad(x, _t_pad(padding), value=float("-inf"))
    if nd == 1:
        xp = xp.unsqueeze(2)
    k2, s2 = ((1,) + tuple(kernel), (1,) + tuple(stride)) if nd == 1 else (kernel, stride)
    cols = tf.unfold(xp, k2, stride=s2)  # (N, C*K, P)
    n, c = x.shape[:2]
    cols = cols.reshape(n, c, -1, cols.shape[-1])  # (N, C, K, P)
    m = (cols == y.reshape(n, c, 1, -1)).to(x.dtype)
    if which == "ties":
        return m.sum(2).reshape(y.shape)
    d = (m * share.reshape(n, c, 1, -1)).reshape(n, -1, cols.shape[-1])
    padded = tuple(xp.shape[2:])
    img = tf.fold(d, padded, k2, stride=s2).reshape((n, c) + padded)
    lo = [p[0] for p in padding]
    if nd == 1:
        return img[:, :, 0, lo[0] : lo[0] + x.shape[2]]
    return img[:, :, lo[0] : lo[0] + x.shape[2], lo[1] : lo[1] + x.shape[3]]


_POOLS = [
    ((2, 3, 6, 7), dict(kernel=(2, 2), stride=(2, 2), padding=((0, 0), (0, 0))), (2, 3, 3, 3), "2d"),
    ((2, 2, 5, 6), dict(kernel=(3, 2), stride=(1, 2), padding=((1, 1), (0, 1))), (2, 2, 5, 3), "2d_overlap_padded"),
    ((3, 2, 9), dict(kernel=(3,), stride=(2,), padding=((1, 1),)), (3, 2, 5), "1d"),
]
def _t_max_pool(x, kernel, stride, padding):
    pool = _tf().max_pool1d if len(kernel) == 1 else _tf().max_pool2d
    return pool(_tf().pad(x, _t_pad(padding), value=float("-inf")), kernel, stride)


def _pool_op(op, at):
    """The op on x (and a share), with y = max_pool_forward(x) as the gradient passes it."""
    fwd = {k: v for k, v in at.items() if k != "relu"}

    def build(x, *share):
        return apply(op, x, *((apply("max_pool_forward", x, **fwd),) if op != "max_pool_forward" else ()), *share, **at)

    return build


for _xs, _at, _ys, _label in _POOLS:
    case("max_pool_forward", _pool_op("max_pool_forward", _at), [In(_xs, "grid")],
         (lambda at: lambda x: _t_max_pool(x, **at))(_at), _label, grad="none")
    case("max_pool_ties", _pool_op("max_pool_ties", _at), [In(_xs, "grid")],
         (lambda at: lambda x: _t_max_pool_parts("ties", x, _t_max_pool(x, **at), None, **at))(_at), _label,
         grad="none")
    case("max_pool_backward", _pool_op("max_pool_backward", _at), [In(_xs, "grid"), In(_ys)],
         (lambda at: lambda x, s: _t_max_pool_parts("backward", x, _t_max_pool(x, **at), s, **at))(_at), _label,
         grad="none")
    case("max_pool_grad", _pool_op("max_pool_grad", _at), [In(_xs, "grid"), In(_ys)],
         (lambda at: lambda x, g: _t_max_pool_parts(
             "backward", x, _t_max_pool(x, **at),
             g / _t_max_pool_parts("ties", x, _t_max_pool(x, **at), None, **at), **at))(_at), _label,
         grad="none")
    case("max_pool_grad", _pool_op("max_pool_grad", {**_at, "relu": True}), [In(_xs, "grid"), In(_ys)],
         (lambda at: lambda x, g: (x > 0) * _t_max_pool_parts(
             "backward", x, _t_max_pool(x, **at),
             g / _t_max_pool_parts("ties", x, _t_max_pool(x, **at), None, **at), **at))(_at), f"{_label}_relu",
         grad="none")


def _t_window_sum(x, kernel, stride, padding):
    pool = _tf().avg_pool1d if len(kernel) == 1 else _tf().avg_pool2d
    return pool(_tf().pad(x, _t_pad(padding)), kernel, stride) * float(np.prod(kernel))


def _t_window_spread(s, shape, kernel, stride, padding):
    torch = _torch()
    x = torch.zeros(shape, dtype=s.dtype, requires_grad=True)
    return torch.autograd.grad(_t_window_sum(x, kernel, stride, padding), x, s)[0]


for _xs, _at, _ys, _label in _POOLS:
    case("window_sum", (lambda at: lambda x: apply("window_sum", x, **at))(_at), [In(_xs)],
         (lambda at: lambda x: _t_window_sum(x, **at))(_at), _label, grad="none")
    case("window_spread", (lambda at, xs: lambda s: apply("window_spread", s, shape=xs, **at))(_at, _xs), [In(_ys)],
         (lambda at, xs: lambda s: _t_window_spread(s, xs, **at))(_at, _xs), _label, grad="none")

def _t_lstm_cell(order, *xs):
    """torch's LSTM step from gate blocks: sources, [bias,] c_prev -> the seven planes."""
    t = _torch()
    cp = xs[-1]
    h = cp.shape[1]
    n_src = 2 if len(xs) == 4 else len(xs) - 1
    acts = []
    for k in range(4):
        cols = slice(order[k] * h, (order[k] + 1) * h)
        p = sum(x[:, cols] for x in xs[:n_src])
        if len(xs) - 1 > n_src:
            p = p + xs[n_src][cols]
        acts.append(p.tanh() if k == 2 else p.sigmoid())
    i, f, g, o = acts
    c = f * cp + i * g
    return t.stack([i, f, g, o, c, c.tanh(), o * c.tanh()])


def _t_lstm_cell_grad(order, fwd, cp, dh, *dc):
    """The step's pre-activation gradients (torch's autograd) and dc_prev, flat."""
    t = _torch()
    i, f, g, o = (fwd[k].detach() for k in range(4))
    pre = [t.logit(i), t.logit(f), t.atanh(g), t.logit(o)]
    pre = [p.clone().requires_grad_(True) for p in pre]
    cpv = cp.detach().clone().requires_grad_(True)
    c = pre[1].sigmoid() * cpv + pre[0].sigmoid() * pre[2].tanh()
    h = pre[3].sigmoid() * c.tanh()
    outs, gs = [h], [dh]
    if dc:
        outs.append(c)
        gs.append(dc[0])
    grads = t.autograd.grad(outs, pre + [cpv], gs)
    n, hh = cp.shape
    dgates = t.zeros((n, 4 * hh), dtype=cp.dtype)
    for k in range(4):
        dgates[:, order[k] * hh : (order[k] + 1) * hh] = grads[k]
    return t.cat([dgates.reshape(-1), grads[4].reshape(-1)])


def _lstm_fwd_ins(rng):
    return [rng.uniform(0.05, 0.95, (3, 5)), rng.uniform(0.05, 0.95, (3, 5)), rng.uniform(-0.9, 0.9, (3, 5)),
            rng.uniform(0.05, 0.95, (3, 5))]


def _lstm_planes(sample_rng):
    """fwd planes that are a real forward's: activations in range, tc = tanh(c)."""
    i, f, g, o = _lstm_fwd_ins(sample_rng)
    cp = sample_rng.normal(size=(3, 5))
    c = f * cp + i * g
    return np.stack([i, f, g, o, c, np.tanh(c), o * np.tanh(c)]), cp


for _order, _label in (((0, 1, 2, 3), "torch_order"), ((1, 2, 0, 3), "blocks_gifo")):
    case("lstm_cell", (lambda o: lambda a, b, bias, cp: apply("lstm_cell", a, b, bias, cp, order=o, has_bias=True))(
        _order), [In((3, 20)), In((3, 20)), In((20,)), In((3, 5))],
        (lambda o: lambda *xs: _t_lstm_cell(o, *xs))(_order), _label, grad="none")
    case("lstm_cell_grad",
         (lambda o: lambda y, cp, dh, dc: apply("lstm_cell_grad", y, cp, dh, dc, order=o, has_dc=True))(_order),
         [In((7, 3, 5)), In((3, 5)), In((3, 5)), In((3, 5))],
         (lambda o: lambda y, cp, dh, dc: _t_lstm_cell_grad(o, y, cp, dh, dc))(_order), _label, grad="none",
         sample=lambda rng: [*_lstm_planes(rng), rng.normal(size=(3, 5)), rng.normal(size=(3, 5))])
case("lstm_cell", lambda a, cp: apply("lstm_cell", a, cp, order=(3, 2, 1, 0), has_bias=False),
     [In((2, 12)), In((2, 3))], lambda a, cp: _t_lstm_cell((3, 2, 1, 0), a, cp), "one_source", grad="none")
case("lstm_cell_grad", lambda y, cp, dh: apply("lstm_cell_grad", y, cp, dh, order=(0, 1, 2, 3), has_dc=False),
     [In((7, 3, 5)), In((3, 5)), In((3, 5))], lambda y, cp, dh: _t_lstm_cell_grad((0, 1, 2, 3), y, cp, dh),
     "no_dc", grad="none", sample=lambda rng: [*_lstm_planes(rng), rng.normal(size=(3, 5))])


def _t_gru_cell(xo, ho, x, *rest):
    """torch's GRU step from gate blocks: x, [hh,] bias, h_prev -> r, z, n, hn, h."""
    t = _torch()
    hp = rest[-1]
    h = hp.shape[1]
    bias = rest[-2]
    hh = rest[0] if len(rest) == 3 else None
    b = [bias[k * h : (k + 1) * h] for k in range(4)]

    def blk(m, k):
        return m[:, k * h : (k + 1) * h]

    r, z = ((blk(x, xo[k]) + (0 if hh is None else blk(hh, ho[k])) + b[k]).sigmoid() for k in range(2))
    hn = (0 if hh is None else blk(hh, ho[2])) + b[3] + t.zeros_like(hp)
    nn = (blk(x, xo[2]) + r * hn + b[2]).tanh()
    return t.stack([r, z, nn, hn, (1 - z) * nn + z * hp])


def _t_gru_cell_grad(xo, ho, fwd, hp, dh):
    """Gradients of the step's x and hh blocks (torch's autograd) and what h_prev receives through
    h = (1 - z) n + z h_prev, flat."""
    t = _torch()
    r, z, nn, hn = (fwd[k].detach() for k in range(4))
    n_, h = hp.shape
    pr, pz = (t.logit(v).clone().requires_grad_(True) for v in (r, z))
    xn = (t.atanh(nn) - r * hn).clone().requires_grad_(True)
    hnv = hn.clone().requires_grad_(True)
    hpv = hp.detach().clone().requires_grad_(True)
    rr, zz = pr.sigmoid(), pz.sigmoid()
    out = (1 - zz) * (xn + rr * hnv).tanh() + zz * hpv
    gr, gz, gxn, ghn, ghp = t.autograd.grad(out, [pr, pz, xn, hnv, hpv], dh)
    dx, dhh = t.zeros((n_, 3 * h), dtype=hp.dtype), t.zeros((n_, 3 * h), dtype=hp.dtype)
    for k, (a, b) in enumerate(((gr, gr), (gz, gz), (gxn, ghn))):
        dx[:, xo[k] * h : (xo[k] + 1) * h] = a
        dhh[:, ho[k] * h : (ho[k] + 1) * h] = b
    return t.cat([dx.reshape(-1), dhh.reshape(-1), ghp.reshape(-1)])


def _gru_planes(rng):
    """fwd planes a real forward could have made: r, z in (0, 1), n = tanh(.), hn anything."""
    r, z = rng.uniform(0.05, 0.95, (2, 3, 4))
    nn = rng.uniform(-0.9, 0.9, (3, 4))
    hn = rng.normal(size=(3, 4))
    return np.stack([r, z, nn, hn, rng.normal(size=(3, 4))])


for _xo, _ho, _lbl in (((0, 1, 2), (0, 1, 2), "torch_order"), ((1, 0, 2), (2, 0, 1), "permuted")):
    case("gru_cell", (lambda xo, ho: lambda x, hh, b, hp: apply("gru_cell", x, hh, b, hp, xorder=xo, horder=ho,
                                                               has_h=True))(_xo, _ho),
         [In((3, 12)), In((3, 12)), In((16,)), In((3, 4))],
         (lambda xo, ho: lambda *v: _t_gru_cell(xo, ho, *v))(_xo, _ho), _lbl, grad="none")
    case("gru_cell_grad", (lambda xo, ho: lambda y, hp, dh: apply("gru_cell_grad", y, hp, dh, xorder=xo,
                                                                   horder=ho))(_xo, _ho),
         [In((5, 3, 4)), In((3, 4)), In((3, 4))], (lambda xo, ho: lambda *v: _t_gru_cell_grad(xo, ho, *v))(_xo, _ho),
         _lbl, grad="none", sample=lambda rng: [_gru_planes(rng), rng.normal(size=(3, 4)), rng.normal(size=(3, 4))])
case("gru_cell", lambda x, b, hp: apply("gru_cell", x, b, hp, xorder=(2, 1, 0), horder=(0, 1, 2), has_h=False),
     [In((2, 9)), In((12,)), In((2, 3))], lambda x, b, hp: _t_gru_cell((2, 1, 0), (0, 1, 2), x, b, hp), "no_hh",
     grad="none")


def _fused(program, consts=(), modes=(0,), shape=(2, 3)):
    return lambda *xs: apply("fused_ew", *xs, program=program, consts=consts, modes=modes, shape=shape)


# The example of kernels.h: sigmoid(x + bias_row) * 2.0.
case(
    "fused_ew",
    _fused(((E.ADD, 0, 1, 0), (E.SIGMOID, 2, 0, 0), (E.CONST, 0, 0, 0), (E.MUL, 3, 4, 0)), (2.0,), (0, 2), (3, 4)),
    [In((3, 4)), In((4,))],
    lambda x, b: (x + b).sigmoid() * 2.0,
    "row",
    grad="none",
)
# where(x > c, x * s, -x) with c a column and s a scalar.
case(
    "fused_ew",
    _fused(((E.GT, 0, 1, 0), (E.MUL, 0, 2, 0), (E.NEG, 0, 0, 0), (E.WHERE, 3, 4, 5)), (), (0, 3, 1), (3, 4)),
    [In((3, 4)), In((3, 1)), In(())],
    lambda x, c, s: _torch().where(x > c, x * s, -x),
    "column_scalar",
    grad="none",
)
# Every opcode once: p in [0.5, 2] (registers 0), q normal (1).
_ALL_OPS = (
    (E.CONST, 0, 0, 0),  # 2: 1.0
    (E.SUB, 0, 2, 0),  # 3: p - 1
    (E.LOG, 0, 0, 0),  # 4
    (E.TANH, 4, 0, 0),  # 5: tanh(log p)
    (E.SQRT, 0, 0, 0),  # 6
    (E.ARCTAN, 6, 0, 0),  # 7
    (E.SIGN, 3, 0, 0),  # 8
    (E.MUL, 7, 8, 0),  # 9: arctan(sqrt p) * sign(p - 1)
    (E.STEP, 3, 0, 0),  # 10
    (E.NEG, 3, 0, 0),  # 11: 1 - p
    (E.RELU, 11, 0, 0),  # 12
    (E.LOG1P, 0, 0, 0),  # 13
    (E.MUL, 12, 13, 0),  # 14: relu(1 - p) * log1p(p)
    (E.NEG, 0, 0, 0),  # 15
    (E.EXP, 15, 0, 0),  # 16: exp(-p)
    (E.ABS, 1, 0, 0),  # 17
    (E.DIV, 17, 0, 0),  # 18: |q| / p
    (E.POW, 0, 1, 0),  # 19: p ** q
    (E.MAX, 1, 3, 0),  # 20
    (E.MIN, 1, 11, 0),  # 21
    (E.GE, 1, 2, 0),  # 22: q >= 1
    (E.LT, 1, 3, 0),  # 23: q < p - 1
    (E.LE, 0, 2, 0),  # 24: p <= 1
    (E.EQ, 1, 1, 0),  # 25: true
    (E.NE, 0, 1, 0),  # 26: true
    (E.GT, 1, 0, 0),  # 27: q > p
    (E.WHERE, 22, 19, 18),  # 28
    (E.WHERE, 23, 20, 21),  # 29
    (E.WHERE, 24, 14, 16),  # 30
    (E.WHERE, 27, 10, 5),  # 31
    (E.ADD, 28, 29, 0),  # 32
    (E.ADD, 32, 30, 0),  # 33
    (E.ADD, 33, 31, 0),  # 34
    (E.ADD, 34, 9, 0),  # 35
    (E.MUL, 35, 25, 0),  # 36
    (E.MUL, 36, 26, 0),  # 37
)


def _t_all_ops(p, q):
    t = _torch()
    one = t.ones((), dtype=p.dtype)
    w28 = t.where(q >= one, p**q, q.abs() / p)
    w29 = t.where(q < p - 1, t.maximum(q, p - 1), t.minimum(q, 1 - p))
    w30 = t.where(p <= one, (1 - p).relu() * p.log1p(), (-p).exp())
    w31 = t.where(q > p, (p - 1 > 0).to(p.dtype), p.log().tanh())
    return (w28 + w29 + w30 + w31 + p.sqrt().arctan() * (p - 1).sign()) * (q == q).to(p.dtype) * (p != q).to(p.dtype)


case(
    "fused_ew",
    _fused(_ALL_OPS, (1.0,), (0, 0)),
    [In((2, 3), "positive"), In((2, 3))],
    _t_all_ops,
    "every_opcode",
    grad="none",
)

CASES_BY_ID = {c.id: c for c in CASES}
assert len(CASES_BY_ID) == len(CASES), "case ids must be unique"
