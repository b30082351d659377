"""`fuse_conv`: the conv1d/conv2d composite and its two gradients as single ops.

conv1d/conv2d (flexcore.ir.api) are unfold -> reshape/permute -> matmul -> permute/reshape, so
after autodiff a convolution is three matrix products over a materialised (N, g, P, K) window
tensor: the forward product, the data gradient (a product followed by fold) and the weight
gradient (a product summed over the batch).  This pass finds those exact forms and replaces them
with the ops of flexcore.ir.fused_conv, which the cpu backend runs as one kernel each (im2col of
one image at a time into a small scratch, then GEMM, the output written in place).

Matching is structural and conservative: every movement op, axis order and shape of the composite
is checked, and anything that differs is left alone (it still runs, unfused).  Replacements keep
the replaced node's shape through a reshape/permute of the new op, which the lowering turns into
views (no copies).  It runs before the fusion passes, while the products are still `matmul`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..ir.core import Var, apply, const_value, toposort

__all__ = ["fuse_conv"]


def _windows(a: Var):
    """(x, unfold attrs, groups) when `a` (N, g, P, C/g * K) is the composite's window matrix
    reshape(permute(reshape(unfold(x), (N, g, C/g, P, K)), (0, 1, 3, 2, 4)), (N, g, P, C/g*K))."""
    if a.op != "reshape" or a.ndim != 4:
        return None
    p1 = a.inputs[0]
    if p1.op != "permute" or tuple(p1.attr["axes"]) != (0, 1, 3, 2, 4):
        return None
    r = p1.inputs[0]
    if r.op != "reshape" or r.ndim != 5:
        return None
    u = r.inputs[0]
    if u.op != "unfold" or float(u.attr["pad_value"]) != 0.0:
        return None
    x = u.inputs[0]
    kernel = tuple(u.attr["kernel"])
    nd = len(kernel)
    n, c = x.shape[:2]
    out_sp = u.shape[2 : 2 + nd]
    kk, p = math.prod(kernel), math.prod(out_sp)
    g = r.shape[1]
    if g < 1 or c % g or r.shape != (n, g, c // g, p, kk) or a.shape != (n, g, p, (c // g) * kk):
        return None
    attrs = {k: u.attr[k] for k in ("stride", "padding", "dilation")}
    return x, kernel, out_sp, attrs, g


def _grad_rows(gm: Var, n: int, g: int, out_sp: tuple[int, ...]):
    """gy (N, O, *out) when `gm` (N, g, P, O/g) is permute(reshape(gy, (N, g, O/g, P)), (0, 1, 3, 2))."""
    if gm.op != "permute" or tuple(gm.attr["axes"]) != (0, 1, 3, 2):
        return None
    r = gm.inputs[0]
    if r.op != "reshape" or r.ndim != 4 or r.shape[:2] != (n, g) or r.shape[3] != math.prod(out_sp):
        return None
    gy = r.inputs[0]
    shape = (n, g * r.shape[2]) + tuple(out_sp)
    return gy if gy.shape == shape else apply("reshape", gy, shape=shape)


def _weight_rows(wr: Var, g: int, w_shape: tuple[int, ...]):
    """w (O, C/g, *kernel) when `wr` is reshape(w, (1, g, O/g, C/g * K))."""
    if wr.op != "reshape" or wr.shape != (1, g, w_shape[0] // g, math.prod(w_shape[1:])):
        return None
    w = wr.inputs[0]
    return w if w.shape == w_shape else apply("reshape", w, shape=w_shape)


def _forward(m: Var):
    a, b = m.inputs
    found = _windows(a)
    if found is None or b.op != "permute" or tuple(b.attr["axes"]) != (0, 1, 3, 2):
        return None
    x, kernel, out_sp, attrs, g = found
    og = m.shape[-1]
    w = _weight_rows(b.inputs[0], g, (g * og, x.shape[1] // g) + kernel)
    if w is None:
        return None
    y = apply("conv_forward", x, w, groups=g, **attrs)
    n = x.shape[0]
    return apply("permute", apply("reshape", y, shape=(n, g, og, math.prod(out_sp))), axes=(0, 1, 3, 2))


def _backward_data(f: Var):
    r3 = f.inputs[0]
    if r3.op != "reshape":
        return None
    p = r3.inputs[0]
    if p.op != "permute" or tuple(p.attr["axes"]) != (0, 1, 3, 2, 4):
        return None
    r2 = p.inputs[0]
    if r2.op != "reshape" or r2.ndim != 5:
        return None
    m = r2.inputs[0]
    if m.op != "matmul" or m.ndim != 4:
        return None
    shape = tuple(f.attr["shape"])
    kernel = tuple(f.attr["kernel"])
    nd = len(kernel)
    n, c = shape[:2]
    out_sp = r3.shape[2 : 2 + nd]
    g = m.shape[1]
    if g < 1 or c % g:
        return None
    cg, kk, pp = c // g, math.prod(kernel), math.prod(out_sp)
    if m.shape != (n, g, pp, cg * kk) or r2.shape != (n, g, pp, cg, kk) or r3.shape != (n, c) + out_sp + kernel:
        return None
    gm, wr = m.inputs
    gy = _grad_rows(gm, n, g, out_sp)
    if gy is None or gm.shape[-1] < 1:
        return None
    w = _weight_rows(wr, g, (gy.shape[1], cg) + kernel)
    if w is None:
        return None
    attrs = {k: f.attr[k] for k in ("stride", "padding", "dilation")}
    return apply("conv_backward_data", gy, w, shape=shape, groups=g, **attrs)


def _backward_weight(s: Var):
    if _axes(s) != (0,) or not s.attr["keepdims"]:
        return None
    m = s.inputs[0]
    if m.op != "matmul" or m.ndim != 4:
        return None
    at, gm = m.inputs
    if at.op != "permute" or tuple(at.attr["axes"]) != (0, 1, 3, 2):
        return None
    found = _windows(at.inputs[0])
    if found is None:
        return None
    x, kernel, out_sp, attrs, g = found
    gy = _grad_rows(gm, x.shape[0], g, out_sp)
    if gy is None:
        return None
    dw = apply("conv_backward_weight", x, gy, kernel=kernel, groups=g, **attrs)
    o, k = dw.shape[0], math.prod(dw.shape[1:])
    return apply("permute", apply("reshape", dw, shape=(1, g, o // g, k)), axes=(0, 1, 3, 2))


# -- max pooling -------------------------------------------------------------------------
def _pool_unfold(u: Var):
    """(x, attrs) when u is unfold(x) as max pooling makes it (padding -inf, dilation 1)."""
    if u.op != "unfold" or float(u.attr["pad_value"]) != -np.inf or any(d != 1 for d in u.attr["dilation"]):
        return None
    return u.inputs[0], {"kernel": tuple(u.attr["kernel"]), "stride": tuple(u.attr["stride"]),
                         "padding": u.attr["padding"]}


def _window_axes(u: Var) -> tuple[int, ...]:
    nd = len(u.attr["kernel"])
    return tuple(range(2 + nd, 2 + 2 * nd))


def _axes(v: Var) -> tuple[int, ...] | None:
    axes = v.attr["axes"]
    if axes is None:
        return None
    return tuple(sorted(a % v.inputs[0].ndim for a in (axes if isinstance(axes, tuple) else (axes,))))


def _pool_max(y: Var):
    """(x, attrs) when y is max(unfold(x), window axes) without kept dims."""
    if y.op != "max" or y.attr["keepdims"]:
        return None
    found = _pool_unfold(y.inputs[0])
    if found is None or _axes(y) != _window_axes(y.inputs[0]):
        return None
    return found


def _pool_forward(y: Var):
    found = _pool_max(y)
    return None if found is None else apply("max_pool_forward", found[0], **found[1])


def _pool_mask(e: Var):
    """(x, y, attrs) when e is eq(unfold(x), reshape(y, kept dims)) with y = max(that unfold)."""
    if e.op != "eq":
        return None
    u, r = e.inputs
    if r.op != "reshape" or _pool_unfold(u) is None:
        return None
    y = r.inputs[0]
    if _pool_max(y) is None or y.inputs[0] is not u or r.shape != y.shape + (1,) * len(u.attr["kernel"]):
        return None
    x, attrs = _pool_unfold(u)
    return x, y, attrs


def _pool_ties(s: Var):
    """sum(cast(mask), window axes, keepdims) -> max_pool_ties."""
    c = s.inputs[0]
    if not s.attr["keepdims"] or c.op != "cast" or c.dtype != s.dtype:
        return None
    found = _pool_mask(c.inputs[0])
    if found is None or _axes(s) != _window_axes(c.inputs[0].inputs[0]):
        return None
    x, y, attrs = found
    return apply("reshape", apply("max_pool_ties", x, y, **attrs), shape=s.shape)


def _pool_backward(f: Var):
    """fold(where(mask, broadcast_to(share), 0)) -> max_pool_backward."""
    wh = f.inputs[0]
    if wh.op != "where":
        return None
    e, b, z = wh.inputs
    if z.op != "const" or z.size != 1 or float(const_value(z).reshape(())) != 0.0:
        return None
    found = _pool_mask(e)
    if found is None or b.op != "broadcast_to" or b.shape != wh.shape:
        return None
    x, y, attrs = found
    u = e.inputs[0]
    same = {k: tuple(f.attr[k]) if k != "padding" else f.attr[k] for k in ("kernel", "stride", "padding")}
    if same != attrs or tuple(f.attr["shape"]) != x.shape or tuple(f.attr["dilation"]) != tuple(u.attr["dilation"]):
        return None
    share = b.inputs[0]
    if share.shape != y.shape + (1,) * len(attrs["kernel"]):
        return None
    # max's own gradient: share = g / (the tie count of these windows): one pass.
    if share.op == "div" and share.inputs[0].shape == share.shape:
        ties = _pool_ties(share.inputs[1]) if share.inputs[1].op == "sum" else None
        t = ties.inputs[0] if ties is not None else None
        if t is not None and t.inputs[0] is x and t.inputs[1] is y and share.inputs[1].inputs[0].inputs[0] is e:
            g = apply("reshape", share.inputs[0], shape=y.shape)
            return apply("max_pool_grad", x, y, g, **attrs)
    return apply("max_pool_backward", x, y, apply("reshape", share, shape=y.shape), **attrs)


# -- average pooling: sum over windows of a zero-padded unfold, and its adjoint --------------
def _sum_unfold(u: Var):
    if u.op != "unfold" or float(u.attr["pad_value"]) != 0.0 or any(d != 1 for d in u.attr["dilation"]):
        return None
    return u.inputs[0], {"kernel": tuple(u.attr["kernel"]), "stride": tuple(u.attr["stride"]),
                         "padding": u.attr["padding"]}


def _window_sum(s: Var):
    """sum(unfold(x), window axes) -> window_sum (reshaped when the sum keeps its axes)."""
    u = s.inputs[0]
    found = _sum_unfold(u)
    if found is None or _axes(s) != _window_axes(u):
        return None
    out = apply("window_sum", found[0], **found[1])
    return out if out.shape == s.shape else apply("reshape", out, shape=s.shape)


def _window_spread(f: Var):
    """fold(broadcast_to(s)) with s one value per window -> window_spread."""
    b = f.inputs[0]
    if b.op != "broadcast_to" or any(d != 1 for d in f.attr["dilation"]):
        return None
    nd = len(f.attr["kernel"])
    s = b.inputs[0]
    out_sp = b.shape[2 : 2 + nd]
    if s.shape not in (b.shape[:2] + out_sp + (1,) * nd, b.shape[:2] + out_sp):
        return None
    attrs = {"kernel": tuple(f.attr["kernel"]), "stride": tuple(f.attr["stride"]), "padding": f.attr["padding"]}
    s = apply("reshape", s, shape=b.shape[:2] + out_sp) if s.ndim != 2 + nd else s
    return apply("window_spread", s, shape=tuple(f.attr["shape"]), **attrs)


def _first(*fns):
    def match(v: Var):
        for fn in fns:
            out = fn(v)
            if out is not None:
                return out
        return None

    return match


_MATCHERS = {
    "matmul": _forward,
    "fold": _first(_backward_data, _pool_backward, _window_spread),
    "sum": _first(_backward_weight, _pool_ties, _window_sum),
    "max": _pool_forward,
}


def _same_order(top: Var, base: Var) -> bool:
    """Whether the reshape/permute chain from `base` up to `top` leaves every element where it was
    (the conv forward's own reshape/permute pairs): replayed on the element indices."""
    chain = []
    while top is not base:
        if top.op not in ("reshape", "permute"):
            return False
        chain.append(top)
        top = top.inputs[0]
    if not chain:
        return True
    idx = np.arange(math.prod(base.shape)).reshape(base.shape)
    for v in reversed(chain):
        idx = np.reshape(idx, v.shape) if v.op == "reshape" else np.transpose(idx, v.attr["axes"])
    return idx.shape == chain[0].shape and np.array_equal(idx.ravel(), np.arange(idx.size))


def _bias_add(v: Var, users: dict[int, int]):
    """conv_forward_bias(x, w, b) when `v` adds a per-channel bias b to a conv_forward's output
    (seen through the reshapes/permutes that leave it in place) that nothing else reads."""
    for y, b in (v.inputs, v.inputs[::-1]):
        base = y
        while base.op in ("reshape", "permute") and users.get(id(base), 0) == 1:
            base = base.inputs[0]
        if base.op != "conv_forward" or users.get(id(base), 0) != 1 or base.shape != v.shape or y.shape != v.shape:
            continue
        o = base.shape[1]
        lead = (1,) * (v.ndim - b.ndim) + tuple(b.shape)
        if b.dtype != v.dtype or len(lead) != v.ndim or lead != (1, o) + (1,) * (v.ndim - 2):
            continue
        if not _same_order(y, base):
            continue
        return apply("conv_forward_bias", *base.inputs, apply("reshape", b, shape=(o,)), **base.attr)
    return None


def fuse_conv(roots: Sequence[Var]) -> list[Var]:
    """Convolutions (forward, data gradient, weight gradient) of the conv composite become
    conv_forward / conv_backward_data / conv_backward_weight; a conv_forward whose only use is
    the add of a per-channel bias then becomes conv_forward_bias."""
    from .fusion import _finish  # fusion imports flexcore.passes, which may import this module

    subst: dict[int, Var] = {}
    for v in toposort(roots):
        fn = _MATCHERS.get(v.op)
        if fn is None or v.dtype.kind != "f":
            continue
        new = fn(v)
        if new is not None and new.shape == v.shape and new.dtype == v.dtype:
            subst[id(v)] = new
    out = _finish(roots, subst) if subst else list(roots)
    order = toposort(out)
    if not any(v.op == "conv_forward" for v in order):
        return out
    users: dict[int, int] = {}  # readers of each value, the roots counting as one each
    for u in [u for v in order for u in v.inputs] + list(out):
        users[id(u)] = users.get(id(u), 0) + 1
    subst = {}
    for v in order:
        if v.op == "add" and v.dtype.kind == "f":
            new = _bias_add(v, users)
            if new is not None and new.shape == v.shape:
                subst[id(v)] = new
    out = _finish(out, subst) if subst else out
    return _fold_relu(out) if subst else out


def _fold_relu(roots: list[Var]) -> list[Var]:
    """conv_forward_bias whose only readers are a relu (where(z > 0, z, 0)) -> the same with
    act="relu"; the mask z > 0 read elsewhere (the relu gradient) becomes relu(z) > 0, which
    is the same (fuse_dense does this for dense layers), so z itself need not be kept."""
    from .fusion import _finish, _Graph, _relu_of

    g = _Graph(roots)
    subst: dict[int, Var] = {}
    for z in g.order:
        if z.op != "conv_forward_bias" or z.attr["act"] != "identity":
            continue
        relu = _relu_of(g, z)
        if relu is None:
            continue
        gt, wh = relu
        out = subst[id(wh)] = apply("conv_forward_bias", *z.inputs, **{**z.attr, "act": "relu"})
        if len(g.users[id(gt)]) > 1 or id(gt) in g.root_ids:
            subst[id(gt)] = apply("gt", out, gt.inputs[1])
    return _relu_pool_grad(_finish(roots, subst)) if subst else roots


def _relu_pool_grad(roots: list[Var]) -> list[Var]:
    """where(x > 0, max_pool_grad(x, y, g), 0) -> max_pool_grad(x, y, g, relu=True): the relu's
    gradient applied inside the pooling gradient (x is the relu's output, the pooling's input),
    which then need not be read again after it."""
    from .fusion import _finish, _Graph, _is_zero

    g = _Graph(roots)
    subst: dict[int, Var] = {}
    for wh in g.order:
        if wh.op != "where" or not _is_zero(wh.inputs[2]):
            continue
        gt, pg = wh.inputs[0], wh.inputs[1]
        if pg.op != "max_pool_grad" or pg.attr["relu"] or gt.op != "gt" or not _is_zero(gt.inputs[1]):
            continue
        if gt.inputs[0] is not pg.inputs[0] or wh.shape != pg.shape or g.only_user(pg) is not wh:
            continue
        subst[id(wh)] = apply("max_pool_grad", *pg.inputs, **{**pg.attr, "relu": True})
    return _finish(roots, subst) if subst else roots
