"""`fuse_rnn_cells`: the LSTM and GRU cell recipes and their gradients as one kernel per step
each way.

flexcore.nn.cells.lstm builds a step from primitives (four gate layers, a memory layer, a tanh
layer and a product layer), so after autodiff and the GEMM passes a step is four column blocks of
one or two (n, 4h) products (the time-batched input projection, the recurrent product) plus
biases, the activations, c = f c_prev + i g, h = o tanh(c), and in the backward a dozen products
per gate; cells.gru likewise with three blocks of each product, hn = U_n h + b_hn inside
r * hn, and h = n + z (h_prev - n).  This pass finds exactly those forms and swaps them for the
ops of flexcore.ir.fused_rnn: `lstm_cell` / `gru_cell` for the forward and `lstm_cell_grad` /
`gru_cell_grad` for the backward, whose gradient matrices keep the column blocks of the
forward's products, so the data-gradient GEMM reads one whole and the weight and bias gradients
read one join of all steps' matrices (see _join_steps and _unpermute_products).

Matching is structural and conservative: every operand of the forward form is checked (the
gate pre-activations must be sums of one column block of each source and at most one bias of
(h,)), and the backward is fused only when every gradient product autodiff makes for the cell is
found, each exactly once.  A variant (a peephole adds a term to a gate, another activation, a
layer norm) is left alone and runs unfused with the same values.  It runs after the GEMM
passes (the products exist) and before vertical fusion.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..ir.core import Var, apply, const, const_value
from .fusion import _finish, _Graph

__all__ = ["fuse_rnn_cells"]


def _is_one(v: Var) -> bool:
    return v.op == "const" and v.size == 1 and float(const_value(v).reshape(())) == 1.0


def _other(m: Var, a: Var) -> Var | None:
    """The other operand of the binary node m when one of its operands is a."""
    x, y = m.inputs
    if x is a:
        return y
    if y is a:
        return x
    return None


def _muls(g: _Graph, a: Var, pred) -> list[Var]:
    """The products a * b (either order) of a's shape for which pred(b) holds."""
    out = []
    for u in g.users[id(a)]:
        if u.op == "mul" and u.shape == a.shape and u.dtype == a.dtype:
            b = _other(u, a)
            if b is not None and pred(b):
                out.append(u)
    return out


def _one_minus(v: Var, x: Var) -> bool:
    """v is 1 - x."""
    return v.op == "sub" and v.inputs[1] is x and _is_one(v.inputs[0]) and v.shape == x.shape


def _unique(vs: list[Var]) -> Var | None:
    return vs[0] if len(vs) == 1 else None


# ---------------------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------------------
def _sum_terms(v: Var, shape: tuple[int, ...]) -> list[Var]:
    """The terms of the tree of adds under v (adds of v's shape, or of v's shape and a row)."""
    terms, stack = [], [v]
    while stack:
        x = stack.pop()
        if x.op == "add" and x.shape == shape and x.dtype == v.dtype:
            stack.extend(reversed(x.inputs))
        else:
            terms.append(x)
    return terms


def _gate_terms(p: Var, n: int, h: int):
    """({(source, first row): block}, bias, keys in order) when the pre-activation p (n, h) is a
    sum of column blocks (n, h) of (., 4h) matrices, one per source, and at most one row (h,)."""
    if h == 0 or n == 0:
        return None
    blocks: dict[tuple[int, int], int] = {}
    keys: list[tuple[Var, int]] = []
    bias = None
    for t in _sum_terms(p, (n, h)):
        if t.dtype != p.dtype:
            return None
        if t.op == "broadcast_to" and t.inputs[0].shape == (h,):
            t = t.inputs[0]
        if t.shape == (h,):
            if bias is not None:
                return None
            bias = t
            continue
        if t.op != "slice" or t.shape != (n, h):
            return None
        src = t.inputs[0]
        a = t.attr
        if src.ndim != 2 or src.shape[1] != 4 * h or tuple(a["steps"]) != (1, 1):
            return None
        r0, c0 = a["starts"]
        if tuple(a["stops"]) != (r0 + n, c0 + h) or c0 % h:
            return None
        key = (id(src), r0)
        if key in blocks:
            return None
        blocks[key] = c0 // h
        keys.append((src, r0))
    if not keys:
        return None
    return blocks, bias, keys


class _Cell:
    """A matched forward step: activations, c_prev, c, tanh(c), h, and how to feed lstm_cell."""

    def __init__(self, acts, cp, c, tc, hout, sources, biases, order):
        self.acts, self.cp, self.c, self.tc, self.hout = acts, cp, c, tc, hout
        self.sources, self.biases, self.order = sources, biases, order


def _match_gates(acts: Sequence[Var], n: int, h: int):
    found = [_gate_terms(a.inputs[0], n, h) for a in acts]
    if any(f is None for f in found):
        return None
    key_sets = [set(f[0]) for f in found]
    if any(ks != key_sets[0] for ks in key_sets) or len(key_sets[0]) > 2:
        return None
    keys = found[0][2]
    order = []
    for blocks, _, _ in found:
        bs = {blocks[k] for k in blocks}
        if len(bs) != 1:  # a gate reads the same block of every source
            return None
        order.append(bs.pop())
    if sorted(order) != [0, 1, 2, 3]:
        return None
    biases = [f[1] for f in found]
    if any(b is None for b in biases) and not all(b is None for b in biases):
        return None
    return keys, (None if biases[0] is None else biases), tuple(order)


def _match_cell(hout: Var) -> _Cell | None:
    """hout = o * tanh(c), c = f * c_prev + i * g, i, f, o sigmoids and g a tanh of gate sums."""
    if hout.op != "mul" or hout.ndim != 2 or hout.dtype.kind != "f":
        return None
    n, h = hout.shape
    for oa, tc in (hout.inputs, hout.inputs[::-1]):
        if oa.op != "sigmoid" or tc.op != "tanh" or oa.shape != hout.shape or tc.shape != hout.shape:
            continue
        c = tc.inputs[0]
        if c.op != "add" or c.shape != hout.shape or any(x.op != "mul" or x.shape != c.shape for x in c.inputs):
            continue
        for m_fc, m_ig in (c.inputs, c.inputs[::-1]):
            for fa, cp in (m_fc.inputs, m_fc.inputs[::-1]):
                for ia, ga in (m_ig.inputs, m_ig.inputs[::-1]):
                    if fa.op != "sigmoid" or ia.op != "sigmoid" or ga.op != "tanh":
                        continue
                    if cp.shape != hout.shape or cp.dtype != hout.dtype or ia.shape != hout.shape:
                        continue
                    acts = (ia, fa, ga, oa)
                    if len({id(a) for a in acts}) != 4:
                        continue
                    m = _match_gates(acts, n, h)
                    if m is None:
                        continue
                    keys, biases, order = m
                    return _Cell(acts, cp, c, tc, hout, keys, biases, order)
    return None


def _plane(y: Var, k: int) -> Var:
    _, n, h = y.shape
    s = apply("slice", y, starts=(k, 0, 0), stops=(k + 1, n, h), steps=(1, 1, 1))
    return apply("reshape", s, shape=(n, h))


def _rows_of(src: tuple[Var, int], n: int, width: int) -> Var:
    v, r0 = src
    if v.shape[0] == n and r0 == 0:
        return v
    return apply("slice", v, starts=(r0, 0), stops=(r0 + n, width), steps=(1, 1))


def _forward_op(cell: _Cell) -> Var:
    n, h = cell.hout.shape
    srcs = [_rows_of(src, n, 4 * h) for src in cell.sources]
    ins = list(srcs)
    if cell.biases is not None:
        by_block = [None] * 4
        for k, b in enumerate(cell.biases):
            by_block[cell.order[k]] = b
        ins.append(apply("concat", *by_block, axis=0))
    ins.append(cell.cp)
    return apply("lstm_cell", *ins, order=cell.order, has_bias=cell.biases is not None)


# ---------------------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------------------
def _chain(g: _Graph, start: Var, factors: Sequence[Var], last) -> list[Var]:
    """Nodes ((start * f1) * f2 ...) * L with pred last(L), products in either operand order."""
    level = [start]
    for f in factors:
        level = [m for x in level for m in _muls(g, x, lambda b, f=f: b is f)]
    return [m for x in level for m in _muls(g, x, last)]


def _match_backward(g: _Graph, cell: _Cell):
    ia, fa, ga, oa = cell.acts
    tc, cp = cell.tc, cell.cp
    # dch = (dh * o) * (1 - tc * tc)
    sq = [u for u in g.users[id(tc)] if u.op == "mul" and u.inputs[0] is tc and u.inputs[1] is tc]
    omt = [u for s in sq for u in g.users[id(s)] if _one_minus(u, s)]
    cands = []
    for om in omt:
        for m in g.users[id(om)]:
            if m.op != "mul" or m.shape != tc.shape:
                continue
            x = _other(m, om)
            if x is None or x.op != "mul":
                continue
            dh = _other(x, oa)
            if dh is not None and dh.shape == tc.shape and dh.dtype == tc.dtype:
                cands.append((dh, m))
    if len(cands) != 1:
        return None
    dh, dch = cands[0]
    # dc = dcn + dch, or dch alone
    options = [(dch, None)]
    for u in g.users[id(dch)]:
        if u.op == "add" and u.shape == dch.shape:
            dcn = _other(u, dch)
            if dcn is not None and dcn is not dch and dcn.shape == dch.shape and dcn.dtype == dch.dtype:
                options.append((u, dcn))
    found = []
    for d, dcn in options:
        d_g = _chain(g, d, [ia], lambda b: b.op == "sub" and _is_one(b.inputs[0]) and b.inputs[1].op == "mul"
                     and b.inputs[1].inputs[0] is ga and b.inputs[1].inputs[1] is ga)
        d_i = _chain(g, d, [ga, ia], lambda b: _one_minus(b, ia))
        d_f = _chain(g, d, [cp, fa], lambda b: _one_minus(b, fa))
        if d_g or d_i or d_f:
            found.append((d, dcn, d_g, d_i, d_f))
    if len(found) != 1:
        return None
    d, dcn, d_g, d_i, d_f = found[0]
    d_o = _chain(g, dh, [tc, oa], lambda b: _one_minus(b, oa))
    grads = [_unique(x) for x in (d_i, d_f, d_g, d_o)]
    if any(x is None for x in grads):
        return None
    dcp = _muls(g, d, lambda b: b is fa)
    if len(dcp) > 1:
        return None
    return dh, dcn, grads, (dcp[0] if dcp else None)


# ---------------------------------------------------------------------------------------
# GRU
# ---------------------------------------------------------------------------------------
def _is_const_value(v: Var, value: float) -> bool:
    return v.op == "const" and v.size >= 1 and bool(np.all(const_value(v) == value))


def _classify(p: Var, n: int, h: int, width: int):
    """The terms of the sum p (n, h): [(source, first row, block)], the bias (h,) or None, and the
    other terms; zero constants are dropped.  None when a term is a second bias or a slice that
    is not one column block of a (., width) matrix."""
    slices, bias, others = [], None, []
    for t in _sum_terms(p, (n, h)):
        if t.dtype != p.dtype:
            return None
        if _is_const_value(t, 0.0) and t.shape in ((n, h), (h,), ()):
            continue
        if t.op == "broadcast_to" and t.inputs[0].shape == (h,):
            t = t.inputs[0]
        if t.shape == (h,):
            if bias is not None:
                return None
            bias = t
            continue
        if t.op == "slice" and t.shape == (n, h) and t.inputs[0].ndim == 2 and t.inputs[0].shape[1] == width:
            a = t.attr
            r0, c0 = a["starts"]
            if tuple(a["steps"]) != (1, 1) or tuple(a["stops"]) != (r0 + n, c0 + h) or c0 % h:
                return None
            slices.append((t.inputs[0], r0, c0 // h))
            continue
        others.append(t)
    return slices, bias, others


class _Gru:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def _gru_sources(cr, cz, cn, chn):
    """(x source, hh source or None, xorder, horder) from the slices of the r, z, n and hn sums:
    n reads one block of x; r and z one block of x and one of hh (or none: h_prev is zero); hn
    one block of hh (or none)."""
    if len(cn) != 1:
        return None
    xsrc = cn[0][:2]
    xkey = (id(xsrc[0]), xsrc[1])
    xorder, hparts = [], []
    for sl in (cr, cz):
        xs = [t for t in sl if (id(t[0]), t[1]) == xkey]
        hs = [t for t in sl if (id(t[0]), t[1]) != xkey]
        if len(xs) != 1 or len(hs) > 1:
            return None
        xorder.append(xs[0][2])
        hparts.append(hs)
    if any((id(t[0]), t[1]) == xkey for t in chn) or len(chn) > 1:
        return None
    hparts.append(chn)
    xorder.append(cn[0][2])
    if all(not hp for hp in hparts):
        hsrc, horder = None, (0, 1, 2)
    elif all(len(hp) == 1 for hp in hparts) and len({(id(hp[0][0]), hp[0][1]) for hp in hparts}) == 1:
        hsrc, horder = hparts[0][0][:2], tuple(hp[0][2] for hp in hparts)
    else:
        return None
    if sorted(xorder) != [0, 1, 2] or sorted(horder) != [0, 1, 2]:
        return None
    return xsrc, hsrc, tuple(xorder), horder


def _match_gru(hout: Var) -> _Gru | None:
    """h = nn + z * d, d = h_prev + nn * (-1) (or nn * (-1): h_prev = 0), nn = tanh(x_n + r * hn
    + b_n), hn = hh_n + b_hn, r and z sigmoids of x and hh blocks plus biases."""
    if hout.op != "add" or hout.ndim != 2 or hout.dtype.kind != "f":
        return None
    n, h = hout.shape
    for nn, zd in (hout.inputs, hout.inputs[::-1]):
        if nn.op != "tanh" or zd.op != "mul" or nn.shape != hout.shape or zd.shape != hout.shape:
            continue
        for z, d in (zd.inputs, zd.inputs[::-1]):
            if z.op != "sigmoid" or z.shape != hout.shape:
                continue
            h_prev, neg = None, None
            if d.op == "mul" and _other(d, nn) is not None and _is_neg_one(_other(d, nn)):
                neg = d
            elif d.op == "add" and d.shape == hout.shape:
                for a, m in (d.inputs, d.inputs[::-1]):
                    if m.op == "mul" and _other(m, nn) is not None and _is_neg_one(_other(m, nn)) \
                            and a.shape == hout.shape and a.dtype == hout.dtype:
                        h_prev, neg = a, m
                        break
            if neg is None:
                continue
            cn = _classify(nn.inputs[0], n, h, 3 * h)
            if cn is None or len(cn[2]) != 1 or cn[2][0].op != "mul":
                continue
            rhn = cn[2][0]
            for r, hn in (rhn.inputs, rhn.inputs[::-1]):
                if r.op != "sigmoid" or r.shape != hout.shape or hn.shape != hout.shape or r is z:
                    continue
                cr, cz, chn = (_classify(v, n, h, 3 * h) for v in (r.inputs[0], z.inputs[0], hn))
                if cr is None or cz is None or chn is None or cr[2] or cz[2] or chn[2]:
                    continue
                src = _gru_sources(cr[0], cz[0], cn[0], chn[0])
                if src is None:
                    continue
                xsrc, hsrc, xorder, horder = src
                return _Gru(r=r, z=z, nn=nn, hn=hn, d=d, zd=zd, hout=hout, h_prev=h_prev, xsrc=xsrc, hsrc=hsrc,
                            xorder=xorder, horder=horder, biases=(cr[1], cz[1], cn[1], chn[1]))
    return None


def _gru_forward_op(cell: _Gru) -> Var:
    n, h = cell.hout.shape
    dt = cell.hout.dtype
    ins = [_rows_of(cell.xsrc, n, 3 * h)]
    if cell.hsrc is not None:
        ins.append(_rows_of(cell.hsrc, n, 3 * h))
    zero = None
    biases = []
    for b in cell.biases:
        if b is None:
            zero = zero if zero is not None else const(np.zeros(h, dt))
            b = zero
        biases.append(b)
    ins.append(apply("concat", *biases, axis=0))
    ins.append(cell.h_prev if cell.h_prev is not None else const(np.zeros((n, h), dt)))
    return apply("gru_cell", *ins, xorder=cell.xorder, horder=cell.horder, has_h=cell.hsrc is not None)


def _is_neg_one(v: Var) -> bool:
    return v.size == 1 and _is_const_value(v, -1.0)


def _match_gru_backward(g: _Graph, cell: _Gru):
    r, z, nn, hn, d = cell.r, cell.z, cell.nn, cell.hn, cell.d
    # dz = ((dh * d) * z) * (1 - z)
    cands = []
    for m in g.users[id(d)]:
        if m.op != "mul" or m.shape != d.shape:
            continue
        dh = _other(m, d)
        if dh is None or dh is d or dh.shape != d.shape or dh.dtype != d.dtype:
            continue
        dz = _chain(g, m, [z], lambda b: _one_minus(b, z))
        if len(dz) == 1:
            cands.append((dh, dz[0]))
    if len(cands) != 1:
        return None
    dh, dz = cands[0]
    # dd = dh * z;  dnn = dh + dd * (-1);  dxn = dnn * (1 - nn * nn)
    dd = _unique(_muls(g, dh, lambda b: b is z))
    if dd is None:
        return None
    neg = _unique(_muls(g, dd, _is_neg_one))
    if neg is None:
        return None
    dnn = _unique([u for u in g.users[id(neg)] if u.op == "add" and _other(u, neg) is dh])
    if dnn is None:
        return None
    dxn = _unique(_muls(g, dnn, lambda b: b.op == "sub" and _is_one(b.inputs[0]) and b.inputs[1].op == "mul"
                        and b.inputs[1].inputs[0] is nn and b.inputs[1].inputs[1] is nn))
    if dxn is None:
        return None
    dhn = _unique(_muls(g, dxn, lambda b: b is r))
    dr = _unique(_chain(g, dxn, [hn, r], lambda b: _one_minus(b, r)))
    if dhn is None or dr is None:
        return None
    return dh, dd, (dr, dz, dxn), (dr, dz, dhn)


def _with_run(v: Var, grads, order, whole: Var) -> Var | None:
    """v (a concat along columns) with its run of `grads` placed in the blocks `order` replaced
    by `whole`, the matrix they are the blocks of; None when v has no such run."""
    if v.op != "concat" or v.attr["axis"] % v.ndim != 1:
        return None
    xs = list(v.inputs)
    k = len(grads)
    for i in range(len(xs) - k + 1):
        if all(xs[i + order[j]] is gj for j, gj in enumerate(grads)):
            rest = xs[:i] + [whole] + xs[i + k :]
            return whole if len(rest) == 1 else apply("concat", *rest, axis=v.attr["axis"])
    return None


def _fuse_gru(g: _Graph, cell: _Gru, subst: dict[int, Var]) -> None:
    y = _gru_forward_op(cell)
    for k, x in enumerate((cell.r, cell.z, cell.nn, cell.hn, cell.hout)):
        subst[id(x)] = _plane(y, k)
    bwd = _match_gru_backward(g, cell)
    if bwd is None:
        return
    dh, dd, xgrads, hgrads = bwd
    if any(id(x) in subst for x in (*xgrads, *hgrads, dd)):
        return
    n, h = cell.hout.shape
    nh = n * h
    h_prev = cell.h_prev if cell.h_prev is not None else const(np.zeros((n, h), cell.hout.dtype))
    gr = apply("gru_cell_grad", y, h_prev, dh, xorder=cell.xorder, horder=cell.horder)

    def part(k: int, cols: int) -> Var:
        flat = apply("slice", gr, starts=(k * nh,), stops=((k + cols) * nh,), steps=(1,))
        return apply("reshape", flat, shape=(n, cols * h))

    dx, dhh, dhp = part(0, 3), part(3, 3), part(6, 1)
    for k, x in enumerate(xgrads):
        b = cell.xorder[k]
        subst[id(x)] = apply("slice", dx, starts=(0, b * h), stops=(n, (b + 1) * h), steps=(1, 1))
    b = cell.horder[2]
    subst[id(hgrads[2])] = apply("slice", dhh, starts=(0, b * h), stops=(n, (b + 1) * h), steps=(1, 1))
    subst[id(dd)] = dhp
    # The joins of the gradients the GEMMs read are the op's two matrices.
    for gk in (*xgrads, hgrads[2]):
        for u in g.users[id(gk)]:
            if id(u) not in subst:
                joined = _with_run(u, xgrads, cell.xorder, dx) or _with_run(u, hgrads, cell.horder, dhh)
                if joined is not None:
                    subst[id(u)] = joined


# ---------------------------------------------------------------------------------------
# concat of adjacent slices
# ---------------------------------------------------------------------------------------
def _adjacent(x: Var, y: Var, ax: int) -> Var | None:
    """slice(B) then slice(B) that continues it along axis ax (the same elsewhere): one slice."""
    if x.op != "slice" or y.op != "slice" or x.inputs[0] is not y.inputs[0]:
        return None
    a, b = x.attr, y.attr
    if any(s != 1 for s in a["steps"]) or any(s != 1 for s in b["steps"]):
        return None
    for d in range(x.ndim):
        if d != ax and (a["starts"][d] != b["starts"][d] or a["stops"][d] != b["stops"][d]):
            return None
    if a["stops"][ax] != b["starts"][ax]:
        return None
    base = x.inputs[0]
    starts, stops = list(a["starts"]), list(a["stops"])
    stops[ax] = b["stops"][ax]
    if tuple(starts) == (0,) * base.ndim and tuple(stops) == base.shape:
        return base
    return apply("slice", base, starts=tuple(starts), stops=tuple(stops), steps=(1,) * base.ndim)


def _joined_slices(v: Var) -> Var | None:
    """A concat's runs of slices of one Var that sit next to one another along the concat axis
    become one slice each (the Var itself where it covers it): the gradient matrix a GEMM reads
    whole, or one block copy instead of one per gate."""
    ax = v.attr["axis"] % v.ndim
    out: list[Var] = []
    for x in v.inputs:
        merged = _adjacent(out[-1], x, ax) if out else None
        if merged is not None:
            out[-1] = merged
        else:
            out.append(x)
    if len(out) == len(v.inputs):
        return None
    return out[0] if len(out) == 1 else apply("concat", *out, axis=v.attr["axis"])


# ---------------------------------------------------------------------------------------
# the gradient joins the weight and bias gradients read
# ---------------------------------------------------------------------------------------
_GRAD_OPS = ("lstm_cell_grad", "gru_cell_grad")


def _is_grad_matrix(v: Var) -> bool:
    """v is a cell gradient op's (n, k h) matrix: reshape(slice(op))."""
    return v.op == "reshape" and v.inputs[0].op == "slice" and v.inputs[0].inputs[0].op in _GRAD_OPS


def _cols(v: Var):
    """(base, (r0, r1), (c0, c1)) when v is a unit-step slice of a matrix, else None."""
    if v.op != "slice" or v.ndim != 2 or tuple(v.attr["steps"]) != (1, 1):
        return None
    (r0, c0), (r1, c1) = v.attr["starts"], v.attr["stops"]
    return v.inputs[0], (r0, r1), (c0, c1)


def _is_grad_join(v: Var) -> bool:
    """v is a concat along rows of cell gradient matrices (one per step)."""
    return v.op == "concat" and v.ndim == 2 and v.attr["axis"] % 2 == 0 and all(_is_grad_matrix(x) for x in v.inputs)


def _slice2(v: Var, rows, cols) -> Var:
    if rows == (0, v.shape[0]) and cols == (0, v.shape[1]):
        return v
    return apply("slice", v, starts=(rows[0], cols[0]), stops=(rows[1], cols[1]), steps=(1, 1))


def _join_steps(roots: list[Var]) -> list[Var]:
    """A weight or bias gradient joins one gate's block of every step's gradient matrix along
    rows, once per gate: join the whole matrices once instead (one contiguous copy) and take
    the gates' blocks of the join."""
    g = _Graph(roots)
    subst: dict[int, Var] = {}
    for v in g.order:
        if v.op != "concat" or v.ndim != 2 or v.attr["axis"] % 2 != 0 or len(v.inputs) < 2:
            continue
        parts = [_cols(x) for x in v.inputs]
        if any(p is None for p in parts):
            continue
        base0, _, cols = parts[0]
        if not all(_is_grad_matrix(b) and b.shape == base0.shape and r == (0, b.shape[0]) and c == cols
                   for b, r, c in parts):
            continue
        joined = apply("concat", *[b for b, _, _ in parts], axis=0)
        subst[id(v)] = _slice2(joined, (0, joined.shape[0]), cols)
    return _finish(roots, subst)


def _rows_of_longer_joins(roots: list[Var]) -> list[Var]:
    """A join of consecutive steps' gradient matrices that lies inside a longer join: rows of it."""
    g = _Graph(roots)
    joins = [v for v in g.order if _is_grad_join(v)]
    at: dict[int, list[tuple[Var, int]]] = {}
    for a in joins:
        for k, x in enumerate(a.inputs):
            at.setdefault(id(x), []).append((a, k))
    subst = {}
    for b in joins:
        best = None
        for a, k in at.get(id(b.inputs[0]), []):
            if a is b or len(a.inputs) <= len(b.inputs) or k + len(b.inputs) > len(a.inputs):
                continue
            inside = all(a.inputs[k + j] is x for j, x in enumerate(b.inputs))
            if inside and (best is None or len(a.inputs) > len(best[0].inputs)):
                best = (a, k)
        if best is not None:
            a, k = best
            r0 = sum(x.shape[0] for x in a.inputs[:k])
            subst[id(b)] = _slice2(a, (r0, r0 + b.shape[0]), (0, b.shape[1]))
    return _finish(roots, subst)


def _blocks_of_one_join(p: Var):
    """(join, rows, blocks) when the concat p's pieces are column blocks (equal widths) of the
    same rows of one join of gradient matrices, in the order `blocks`."""
    parts = [_cols(x) for x in p.inputs]
    if any(q is None for q in parts):
        return None
    z, rows, _ = parts[0]
    w = p.inputs[0].shape[1]
    if not _is_grad_join(z) or w == 0 or z.shape[1] != w * len(parts):
        return None
    blocks = []
    for b, r, c in parts:
        if b is not z or r != rows or c[1] - c[0] != w or c[0] % w:
            return None
        blocks.append(c[0] // w)
    return (z, rows, blocks) if sorted(blocks) == list(range(len(parts))) else None


def _gru_piece(piece: Var):
    """(steps' gru_cell_grad ops, block of hh) for a column block of a join of the steps' x or hh
    gradient matrices; x's r and z blocks are hh's (the same values), x's n block has no twin."""
    q = _cols(piece)
    if q is None or not _is_grad_join(q[0]):
        return None
    z, (r0, r1), (c0, c1) = q
    n = z.inputs[0].shape[0]
    h = c1 - c0
    if h <= 0 or c0 % h or r0 % n or r1 % n or any(m.shape != z.inputs[0].shape for m in z.inputs):
        return None
    ops, kinds = [], set()
    for m in z.inputs[r0 // n : r1 // n]:
        sl = m.inputs[0]
        op = sl.inputs[0]
        if op.op != "gru_cell_grad" or m.shape != (n, 3 * h):
            return None
        ops.append(op)
        kinds.add(sl.attr["starts"][0] // (3 * n * h))  # 0: x's matrix, 1: hh's
    if len(kinds) != 1 or len({(o.attr["xorder"], o.attr["horder"]) for o in ops}) != 1:
        return None
    b = c0 // h
    xo, ho = ops[0].attr["xorder"], ops[0].attr["horder"]
    if kinds == {0}:
        k = list(xo).index(b)
        if k == 2:
            return None
        b = ho[k]
    return ops, b


def _gru_hh_blocks(p: Var):
    """_blocks_of_one_join for the recurrent weight gradient of a GRU, whose pieces mix x's r, z
    blocks and hh's n block: all read from one join of the hh matrices instead."""
    pieces = [_gru_piece(x) for x in p.inputs]
    if len(pieces) != 3 or any(q is None for q in pieces):
        return None
    ops = pieces[0][0]
    if any(len(q[0]) != len(ops) or any(a is not b for a, b in zip(q[0], ops)) for q in pieces):
        return None
    blocks = [q[1] for q in pieces]
    if sorted(blocks) != [0, 1, 2]:
        return None
    n, h = ops[0].inputs[1].shape
    mats = [apply("reshape", apply("slice", o, starts=(3 * n * h,), stops=(6 * n * h,), steps=(1,)), shape=(n, 3 * h))
            for o in ops]
    z = mats[0] if len(mats) == 1 else apply("concat", *mats, axis=0)
    if len(mats) == 1:
        return None  # one step: nothing to join
    return z, (0, z.shape[0]), blocks


def _unpermute_products(roots: list[Var]) -> list[Var]:
    """gemm(A, concat of the column blocks of Z in some order), read only block by block -> the
    blocks of gemm(A, Z): a weight gradient reads the joined gradients in place instead of
    a permuted copy; and a bias gradient, the sum over rows of one block of a join, becomes a
    block of one sum over the join's rows."""
    g = _Graph(roots)
    subst: dict[int, Var] = {}
    for m in g.order:
        if m.op != "gemm" or m.attr["trans_b"]:
            continue
        p = m.inputs[1]
        if p.op != "concat" or p.attr["axis"] % 2 != 1 or len(p.inputs) < 2 or id(p) in g.root_ids:
            continue
        found = _blocks_of_one_join(p) or _gru_hh_blocks(p)
        if found is None:
            continue
        z, rows, blocks = found
        w = p.inputs[0].shape[1]
        users = g.users[id(m)]
        cut = [_cols(u) for u in users]
        if id(m) in g.root_ids or any(
            c is None or c[1] != (0, m.shape[0]) or c[2][1] - c[2][0] != w or c[2][0] % w for c in cut
        ):
            continue
        new = apply("gemm", m.inputs[0], _slice2(z, rows, (0, z.shape[1])), trans_a=m.attr["trans_a"], trans_b=False)
        for u, (_, _, c) in zip(users, cut):
            b = blocks[c[0] // w]
            subst[id(u)] = _slice2(new, (0, new.shape[0]), (b * w, (b + 1) * w))
    for v in g.order:
        if v.op != "sum" or v.ndim != 2 or tuple(v.attr["axes"] or ()) != (0,) or not v.attr["keepdims"]:
            continue
        q = _cols(v.inputs[0])
        if q is None or not _is_grad_join(q[0]):
            continue
        z, rows, cols = q
        total = apply("sum", _slice2(z, rows, (0, z.shape[1])), axes=(0,), keepdims=True)
        subst[id(v)] = _slice2(total, (0, 1), cols)
    return _finish(roots, subst)


def fuse_rnn_cells(roots: Sequence[Var]) -> list[Var]:
    """Each recognised LSTM step becomes `lstm_cell`, and its backward, when all of it is found,
    `lstm_cell_grad`; GRU steps likewise `gru_cell` and `gru_cell_grad`."""
    g = _Graph(roots)
    subst: dict[int, Var] = {}
    grus = [c for c in (_match_gru(v) for v in g.order if v.op == "add") if c is not None]
    # A step without the recurrent product (h_prev = 0) lays its hh gradients out like the others,
    # so that the joins over steps (the b_hn gradient) are one column block of every step.
    orders = [c.horder for c in grus if c.hsrc is not None]
    for c in grus:
        if c.hsrc is None and orders:
            c.horder = max(set(orders), key=orders.count)
    for gcell in grus:
        if not any(id(x) in subst for x in (gcell.r, gcell.z, gcell.nn, gcell.hn, gcell.hout)):
            _fuse_gru(g, gcell, subst)
    for v in g.order:
        if v.op != "mul" or id(v) in subst:
            continue
        cell = _match_cell(v)
        if cell is None or any(id(x) in subst for x in (*cell.acts, cell.c, cell.tc)):
            continue
        y = _forward_op(cell)
        for k, x in enumerate((*cell.acts, cell.c, cell.tc, cell.hout)):
            subst[id(x)] = _plane(y, k)
        bwd = _match_backward(g, cell)
        if bwd is None:
            continue
        dh, dcn, grads, dcp = bwd
        if any(id(x) in subst for x in grads):
            continue
        n, h = v.shape
        ins = [y, cell.cp, dh] + ([dcn] if dcn is not None else [])
        gr = apply("lstm_cell_grad", *ins, order=cell.order, has_dc=dcn is not None)
        dgates = apply("reshape", apply("slice", gr, starts=(0,), stops=(4 * n * h,), steps=(1,)), shape=(n, 4 * h))
        for k, x in enumerate(grads):
            b = cell.order[k]
            subst[id(x)] = apply("slice", dgates, starts=(0, b * h), stops=(n, (b + 1) * h), steps=(1, 1))
        if dcp is not None:
            subst[id(dcp)] = apply("reshape", apply("slice", gr, starts=(4 * n * h,), stops=(5 * n * h,), steps=(1,)),
                                   shape=(n, h))
    if not subst:
        return list(roots)
    roots = _finish(roots, subst)
    g = _Graph(roots)
    joins = {}
    for v in g.order:
        if v.op == "concat":
            j = _joined_slices(v)
            if j is not None:
                joins[id(v)] = j
    roots = _rows_of_longer_joins(_join_steps(_finish(roots, joins)))
    return _rows_of_longer_joins(_unpermute_products(roots))
