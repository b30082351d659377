"""Post-autodiff LSTM cell ops: what `flexcore.passes.rnn.fuse_rnn_cells` turns the cell recipe
(flexcore.nn.cells.lstm) and its gradient into, one kernel per step each way (flexcore/rnn.h).

- `lstm_cell(*sources, [bias,] c_prev, order, has_bias)`: the sources are one or two (n, 4h)
  matrices (the input projection of a step, the recurrent product) whose column blocks hold the
  gate pre-activations, gate k of torch's (i, f, g, o) in block `order[k]`; the pre-activation is
  (source_0 [+ source_1]) [+ bias], bias (4h,) in the same blocks.  The result (7, n, h) holds
  the planes i, f, g, o (activations), c = f c_prev + i g, tanh(c) and h = o tanh(c).
- `lstm_cell_grad(fwd, c_prev, dh, [dc,] order, has_dc)`: from the forward's planes, the gradient
  dh of h and dc of c from elsewhere (the next step), the flat (n*4h + n*h,) result holds the
  gradients of the pre-activations (n, 4h) in the blocks of `order`, then dc_prev (n, h).

Each reference implementation computes what the unfused graph computes, in the same order.
"""

from __future__ import annotations

import numpy as np

from .core import FLOAT_DTYPES, REQUIRED, ShapeError, register_op
from .ops import _sigmoid

__all__ = ["LSTM_PLANES", "lstm_forward_ref", "lstm_backward_ref"]

LSTM_PLANES = ("i", "f", "g", "o", "c", "tanh_c", "h")


def _check_order(op: str, order) -> tuple[int, ...]:
    order = tuple(int(k) for k in order)
    if sorted(order) != [0, 1, 2, 3]:
        raise ShapeError(f"op '{op}': order {order} is not a permutation of 0..3")
    return order


def _cell_infer(vs, order, has_bias):
    _check_order("lstm_cell", order)
    n_src = len(vs) - 1 - bool(has_bias)
    if n_src not in (1, 2):
        raise ShapeError(f"op 'lstm_cell': {len(vs)} inputs do not fit 1 or 2 sources, bias={has_bias}, c_prev")
    cp = vs[-1]
    if cp.ndim != 2:
        raise ShapeError(f"op 'lstm_cell': c_prev must be (n, h), got {cp.shape}")
    n, h = cp.shape
    for s in vs[:n_src]:
        if s.shape != (n, 4 * h):
            raise ShapeError(f"op 'lstm_cell': a source {s.shape} does not fit c_prev {cp.shape} (want {(n, 4 * h)})")
    if has_bias and vs[n_src].shape != (4 * h,):
        raise ShapeError(f"op 'lstm_cell': bias {vs[n_src].shape}, want {(4 * h,)}")
    dts = {v.dtype for v in vs}
    if len(dts) != 1 or cp.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"op 'lstm_cell': inputs must share one float dtype, got {sorted(map(str, dts))}")
    return (7, n, h), cp.dtype


def lstm_forward_ref(sources, bias, c_prev, order):
    """The seven planes (7, n, h) of one LSTM step, computed as the unfused graph computes them."""
    n, h = c_prev.shape
    acts = []
    for k in range(4):
        cols = slice(order[k] * h, (order[k] + 1) * h)
        p = sources[0][:, cols]
        for s in sources[1:]:
            p = p + s[:, cols]
        if bias is not None:
            p = p + bias[cols]
        acts.append(np.tanh(p) if k == 2 else _sigmoid(p))
    i, f, g, o = acts
    c = f * c_prev + i * g
    tc = np.tanh(c)
    return np.stack([i, f, g, o, c, tc, o * tc]).astype(c_prev.dtype, copy=False)


def _cell_impl(*xs, order, has_bias):
    cp = xs[-1]
    n_src = len(xs) - 1 - bool(has_bias)
    bias = xs[n_src] if has_bias else None
    return lstm_forward_ref(xs[:n_src], bias, cp, order)


def _grad_infer(vs, order, has_dc):
    _check_order("lstm_cell_grad", order)
    if len(vs) != 3 + bool(has_dc):
        raise ShapeError(f"op 'lstm_cell_grad': {len(vs)} inputs, want fwd, c_prev, dh{', dc' if has_dc else ''}")
    fwd = vs[0]
    if fwd.ndim != 3 or fwd.shape[0] != 7:
        raise ShapeError(f"op 'lstm_cell_grad': fwd must be (7, n, h), got {fwd.shape}")
    _, n, h = fwd.shape
    for v in vs[1:]:
        if v.shape != (n, h):
            raise ShapeError(f"op 'lstm_cell_grad': {v.shape} does not fit fwd {fwd.shape}")
    dts = {v.dtype for v in vs}
    if len(dts) != 1 or fwd.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"op 'lstm_cell_grad': inputs must share one float dtype, got {sorted(map(str, dts))}")
    return (5 * n * h,), fwd.dtype


def lstm_backward_ref(fwd, c_prev, dh, dc, order):
    """dgates (n, 4h) in the blocks of `order` and dc_prev (n, h), as autodiff's graph computes
    them (flexcore/rnn_math.h has the same expressions)."""
    i, f, g, o, _, tc, _ = fwd
    one = np.ones((), fwd.dtype)
    dch = (dh * o) * (one - tc * tc)
    d = dch if dc is None else dc + dch
    grads = (((d * g) * i) * (one - i), ((d * c_prev) * f) * (one - f), (d * i) * (one - g * g),
             ((dh * tc) * o) * (one - o))
    n, h = c_prev.shape
    dgates = np.empty((n, 4 * h), fwd.dtype)
    for k in range(4):
        dgates[:, order[k] * h : (order[k] + 1) * h] = grads[k]
    return dgates, d * f


def _grad_impl(fwd, c_prev, dh, *dc, order, has_dc):
    dgates, dcp = lstm_backward_ref(fwd, c_prev, dh, dc[0] if has_dc else None, order)
    return np.concatenate([dgates.reshape(-1), dcp.reshape(-1)])


register_op(
    "lstm_cell",
    infer=_cell_infer,
    impl=_cell_impl,
    attrs={"order": REQUIRED, "has_bias": REQUIRED},
    args=("sources",),
    variadic=True,
    differentiable=False,
    doc="one LSTM step from gate pre-activation blocks: planes (i, f, g, o, c, tanh c, h); made by fuse_rnn_cells",
)
register_op(
    "lstm_cell_grad",
    infer=_grad_infer,
    impl=_grad_impl,
    attrs={"order": REQUIRED, "has_dc": REQUIRED},
    args=("fwd", "c_prev", "dh"),
    variadic=True,
    differentiable=False,
    doc="the LSTM step's backward: dgates (n, 4h) then dc_prev (n, h), flat; made by fuse_rnn_cells",
)
