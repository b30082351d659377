"""Lowering of the post-autodiff conv ops (flexcore.ir.fused_conv) to the CONV instruction
(fc_conv, csrc/include/flexcore/conv.h).  Registered into lowering.LOWERINGS on import.

The kernel splits the images among `slots` chunks, each with one image's window matrix as scratch
(and, for the weight gradient, a partial sum of the weights), so the arena holds
slots * (C/g * K) * P elements instead of the composite's whole (N, g, P, C/g * K) windows.
"""

from __future__ import annotations

import math

from .. import _native
from ..plan import Step
from .lowering import ACT_CODE, CONV, DTYPE_CODE, FLOATS, POOL, Lowerer, lowering

MODES = {"conv_forward": 0, "conv_forward_bias": 0, "conv_backward_data": 1, "conv_backward_weight": 2}  # fc_conv_mode
MAX_SLOTS = 8


def _slots(n: int) -> int:
    threads = _native.module.get_num_threads() if _native.available else 1
    return max(1, min(n, threads, MAX_SLOTS))


def conv_ints(dtype, mode: int, x_shape, w_shape, attrs, slots: int) -> list[int]:
    """The CONV immediates: [dtype, mode, n, c, o, groups, slots, h, w, kh, kw, sh, sw, ph_lo,
    pw_lo, ph_hi, pw_hi, dh, dw] (then the fc_act of a biased forward); a 1-d convolution is a
    2-d one of height 1."""
    nd = len(w_shape) - 2
    lead = 2 - nd
    sp = [1] * lead + list(x_shape[2:])
    k = [1] * lead + list(w_shape[2:])
    s = [1] * lead + list(attrs["stride"])
    d = [1] * lead + list(attrs["dilation"])
    pads = [(0, 0)] * lead + [tuple(p) for p in attrs["padding"]]
    return [DTYPE_CODE[dtype], mode, x_shape[0], x_shape[1], w_shape[0], attrs["groups"], slots, *sp, *k, *s,
            pads[0][0], pads[1][0], pads[0][1], pads[1][1], *d]


def scratch_elements(mode: int, x_shape, w_shape, out_sp, attrs, slots: int) -> int:
    """What fc_conv_sizes asks for (elements)."""
    kernel = tuple(w_shape[2:])
    cols = (x_shape[1] // attrs["groups"]) * math.prod(kernel) * math.prod(out_sp)
    pointwise = (all(k == 1 for k in kernel) and all(s == 1 for s in attrs["stride"])
                 and all(p == (0, 0) for p in attrs["padding"]))
    if mode == 2:
        return slots * cols + (slots - 1) * math.prod(w_shape)
    return 0 if pointwise else slots * cols


@lowering(*MODES)
def _conv(lw: Lowerer, st: Step) -> bool:
    var = st.var
    if var.dtype not in FLOATS or not _native.available:
        return False
    mode = MODES[st.op]
    a, b = lw.dense(st.inputs[0]), lw.dense(st.inputs[1])
    attrs = st.attrs
    if mode == 0:
        x_shape, w_shape, out_sp = a.shape, b.shape, var.shape[2:]
    elif mode == 1:
        x_shape, w_shape, out_sp = var.shape, b.shape, a.shape[2:]
    else:
        x_shape, w_shape, out_sp = a.shape, var.shape, b.shape[2:]
    out = lw.value(var)
    lw.views[st.out] = out
    if out.size == 0 or a.size == 0:
        return False if out.size else True
    slots = _slots(x_shape[0])
    n_scratch = scratch_elements(mode, x_shape, w_shape, out_sp, attrs, slots)
    scratch = lw.scratch((n_scratch,), var.dtype)
    ints = conv_ints(var.dtype, mode, x_shape, w_shape, attrs, slots)
    ins = [a, b]
    if st.op == "conv_forward_bias":  # + the bias (O,) input and the fc_act immediate
        ins.append(lw.dense(st.inputs[2]))
        ints.append(ACT_CODE[attrs["act"]])
    lw.emit(CONV, [lw.operand(v) for v in ins], [lw.operand(out), scratch.buf], ints)
    return True


POOL_MODES = {"max_pool_forward": 0, "max_pool_ties": 1, "max_pool_backward": 2, "window_sum": 3,
              "window_spread": 4, "max_pool_grad": 5}  # fc_pool_mode
POOL_GRAD_RELU = 6  # max_pool_grad with relu=True


@lowering(*POOL_MODES)
def _pool(lw: Lowerer, st: Step) -> bool:
    var = st.var
    if var.dtype not in FLOATS or not _native.available:
        return False
    ins = [lw.dense(s) for s in st.inputs]
    x = out_view = lw.value(var)
    if st.op != "window_spread":
        x = ins[0]
    out = out_view
    lw.views[st.out] = out
    if out.size == 0 or x.size == 0:
        return not out.size
    a = st.attrs
    lead = 2 - len(a["kernel"])
    sp = [1] * lead + list(x.shape[2:])
    k = [1] * lead + list(a["kernel"])
    s = [1] * lead + list(a["stride"])
    pads = [(0, 0)] * lead + [tuple(p) for p in a["padding"]]
    mode = POOL_GRAD_RELU if st.op == "max_pool_grad" and a["relu"] else POOL_MODES[st.op]
    ints = [DTYPE_CODE[var.dtype], mode, x.shape[0], x.shape[1], *sp, *k, *s,
            pads[0][0], pads[1][0], pads[0][1], pads[1][1]]
    lw.emit(POOL, [lw.operand(v) for v in ins], [lw.operand(out)], ints)
    return True
