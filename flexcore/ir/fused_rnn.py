"""Post-autodiff LSTM and GRU cell ops: what `flexcore.passes.rnn.fuse_rnn_cells` turns the cell
recipes (flexcore.nn.cells.lstm / gru) and their gradients into, one kernel per step each way
(flexcore/rnn.h).

- `lstm_cell(*sources, [bias,] c_prev, order, has_bias)`: the sources are one or two (n, 4h)
  matrices (the input projection of a step, the recurrent product) whose column blocks hold the
  gate pre-activations, gate k of torch's (i, f, g, o) in block `order[k]`; the pre-activation is
  (source_0 [+ source_1]) [+ bias], bias (4h,) in the same blocks.  The result (7, n, h) holds
  the planes i, f, g, o (activations), c = f c_prev + i g, tanh(c) and h = o tanh(c).
- `lstm_cell_grad(fwd, c_prev, dh, [dc,] order, has_dc)`: from the forward's planes, the gradient
  dh of h and dc of c from elsewhere (the next step), the flat (n*4h + n*h,) result holds the
  gradients of the pre-activations (n, 4h) in the blocks of `order`, then dc_prev (n, h).
- `gru_cell(x, [hh,] bias, h_prev, xorder, horder, has_h)`: torch's GRU step; x (n, 3h) holds
  the input projection's blocks of r, z, n in the blocks `xorder`, hh (n, 3h) the recurrent
  product's blocks of r, z, hn in the blocks `horder` (absent: h_prev is zero), bias (4h,) is
  b_r, b_z, b_n, b_hn.  The result (5, n, h) holds r, z, nn, hn = hh_n + b_hn, h.
- `gru_cell_grad(fwd, h_prev, dh, xorder, horder)`: flat (n*3h + n*3h + n*h,): the gradients of
  x's blocks, of hh's blocks, and what h_prev receives through this step.

Each reference implementation computes what the unfused graph computes, in the same order.
"""

from __future__ import annotations

import numpy as np

from .core import FLOAT_DTYPES, REQUIRED, ShapeError, register_op
from .ops import _sigmoid

__all__ = ["GRU_PLANES", "LSTM_PLANES", "gru_backward_ref", "gru_forward_ref", "lstm_backward_ref", "lstm_forward_ref"]

LSTM_PLANES = ("i", "f", "g", "o", "c", "tanh_c", "h")
GRU_PLANES = ("r", "z", "n", "hn", "h")


def _check_order(op: str, order, k: int = 4) -> tuple[int, ...]:
    order = tuple(int(b) for b in order)
    if sorted(order) != list(range(k)):
        raise ShapeError(f"op '{op}': order {order} is not a permutation of 0..{k - 1}")
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
    h = c_prev.shape[1]
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


# ---------------------------------------------------------------------------------------
# GRU
# ---------------------------------------------------------------------------------------
def _gru_infer(vs, xorder, horder, has_h):
    _check_order("gru_cell", xorder, 3)
    _check_order("gru_cell", horder, 3)
    if len(vs) != 3 + bool(has_h):
        raise ShapeError(f"op 'gru_cell': {len(vs)} inputs, want x, {'hh, ' if has_h else ''}bias, h_prev")
    hp = vs[-1]
    if hp.ndim != 2:
        raise ShapeError(f"op 'gru_cell': h_prev must be (n, h), got {hp.shape}")
    n, h = hp.shape
    for s in vs[: 1 + bool(has_h)]:
        if s.shape != (n, 3 * h):
            raise ShapeError(f"op 'gru_cell': a source {s.shape} does not fit h_prev {hp.shape} (want {(n, 3 * h)})")
    if vs[-2].shape != (4 * h,):
        raise ShapeError(f"op 'gru_cell': bias {vs[-2].shape}, want {(4 * h,)}")
    dts = {v.dtype for v in vs}
    if len(dts) != 1 or hp.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"op 'gru_cell': inputs must share one float dtype, got {sorted(map(str, dts))}")
    return (5, n, h), hp.dtype


def gru_forward_ref(x, hh, bias, h_prev, xorder, horder):
    """The five planes (5, n, h) of one GRU step, computed as the unfused graph computes them."""
    n, h = h_prev.shape

    def blk(m, b):
        return m[:, b * h : (b + 1) * h]

    b = [bias[k * h : (k + 1) * h] for k in range(4)]
    pre = [blk(x, xorder[k]) if hh is None else blk(x, xorder[k]) + blk(hh, horder[k]) for k in range(2)]
    r, z = (_sigmoid(p + bk) for p, bk in zip(pre, b))
    hn = (np.zeros((n, h), h_prev.dtype) if hh is None else blk(hh, horder[2])) + b[3]
    nn = np.tanh((blk(x, xorder[2]) + r * hn) + b[2])
    out = nn + z * (h_prev + nn * -np.ones((), h_prev.dtype))
    return np.stack([r, z, nn, hn, out]).astype(h_prev.dtype, copy=False)


def _gru_impl(*xs, xorder, horder, has_h):
    return gru_forward_ref(xs[0], xs[1] if has_h else None, xs[-2], xs[-1], xorder, horder)


def _gru_grad_infer(vs, xorder, horder):
    _check_order("gru_cell_grad", xorder, 3)
    _check_order("gru_cell_grad", horder, 3)
    fwd = vs[0]
    if fwd.ndim != 3 or fwd.shape[0] != 5:
        raise ShapeError(f"op 'gru_cell_grad': fwd must be (5, n, h), got {fwd.shape}")
    _, n, h = fwd.shape
    for v in vs[1:]:
        if v.shape != (n, h):
            raise ShapeError(f"op 'gru_cell_grad': {v.shape} does not fit fwd {fwd.shape}")
    dts = {v.dtype for v in vs}
    if len(dts) != 1 or fwd.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"op 'gru_cell_grad': inputs must share one float dtype, got {sorted(map(str, dts))}")
    return (7 * n * h,), fwd.dtype


def gru_backward_ref(fwd, h_prev, dh, xorder, horder):
    """dx (n, 3h), dhh (n, 3h) and dh_prev (n, h), as autodiff's graph computes them."""
    r, z, nn, hn, _ = fwd
    one = np.ones((), fwd.dtype)
    d = dh * z
    dnn = dh + d * -one
    dz = ((dh * (h_prev + nn * -one)) * z) * (one - z)
    dxn = dnn * (one - nn * nn)
    dr = ((dxn * hn) * r) * (one - r)
    dhn = dxn * r
    n, h = h_prev.shape
    dx, dhh = np.empty((n, 3 * h), fwd.dtype), np.empty((n, 3 * h), fwd.dtype)
    for k, (gx, gh) in enumerate(((dr, dr), (dz, dz), (dxn, dhn))):
        dx[:, xorder[k] * h : (xorder[k] + 1) * h] = gx
        dhh[:, horder[k] * h : (horder[k] + 1) * h] = gh
    return dx, dhh, d


def _gru_grad_impl(fwd, h_prev, dh, xorder, horder):
    return np.concatenate([a.reshape(-1) for a in gru_backward_ref(fwd, h_prev, dh, xorder, horder)])


register_op(
    "gru_cell",
    infer=_gru_infer,
    impl=_gru_impl,
    attrs={"xorder": REQUIRED, "horder": REQUIRED, "has_h": REQUIRED},
    args=("sources",),
    variadic=True,
    differentiable=False,
    doc="one GRU step (torch's) from gate blocks: planes (r, z, n, hn, h); made by fuse_rnn_cells",
)
register_op(
    "gru_cell_grad",
    infer=_gru_grad_infer,
    impl=_gru_grad_impl,
    attrs={"xorder": REQUIRED, "horder": REQUIRED},
    args=("fwd", "h_prev", "dh"),
    differentiable=False,
    doc="the GRU step's backward: dx (n, 3h), dhh (n, 3h), dh_prev (n, h), flat; made by fuse_rnn_cells",
)
