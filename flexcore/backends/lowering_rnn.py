"""Lowering of the post-autodiff LSTM and GRU cell ops (flexcore.ir.fused_rnn) to the LSTM_CELL
and GRU_CELL instructions (flexcore/executor.h, kernels in flexcore/rnn.h).  The forward reads its gate
sources in place when they are rows of a wider matrix (a time step's block of the batched input
projection); every other operand is dense."""

from __future__ import annotations

from ..plan import Step
from .lowering import DTYPE_CODE, FLOATS, GRU_CELL, LSTM_CELL, Lowerer, View, lowering


def _rows(lw: Lowerer, slot: int) -> tuple[View, int]:
    """The (n, 4h) or (n, 3h) source and its row stride, copied dense only when its rows are not contiguous."""
    v = lw.views[slot]
    n, w = v.shape
    if v.strides[1] == 1 or w <= 1:
        ld = v.strides[0] if n > 1 else w
        if ld >= w:
            return v, ld
    v = lw.dense(slot)
    return v, w


@lowering("lstm_cell")
def _lstm_cell(lw: Lowerer, st: Step) -> bool:
    dt = st.var.dtype
    if dt not in FLOATS:
        return False
    _, n, h = st.var.shape
    has_bias = bool(st.attrs["has_bias"])
    n_src = len(st.inputs) - 1 - has_bias
    srcs = [_rows(lw, s) for s in st.inputs[:n_src]]
    rest = [lw.dense(s) for s in st.inputs[n_src:]]
    out = lw.value(st.var)
    lw.views[st.out] = out
    if out.size:
        lds = [ld for _, ld in srcs] + [0] * (2 - n_src)
        flags = (n_src == 2) | (2 * has_bias)
        ins = [lw.operand(v) for v, _ in srcs] + [lw.operand(v) for v in rest]
        lw.emit(LSTM_CELL, ins, [out.buf], [DTYPE_CODE[dt], 0, n, h, *lds, flags, *st.attrs["order"]])
    return True


@lowering("lstm_cell_grad")
def _lstm_cell_grad(lw: Lowerer, st: Step) -> bool:
    dt = st.var.dtype
    if dt not in FLOATS:
        return False
    _, n, h = lw.plan.slots[st.inputs[0]].shape
    ins = [lw.dense(s) for s in st.inputs]
    out = lw.value(st.var)
    lw.views[st.out] = out
    if out.size:
        flags = int(bool(st.attrs["has_dc"]))
        lw.emit(LSTM_CELL, [lw.operand(v) for v in ins], [out.buf], [DTYPE_CODE[dt], 1, n, h, 0, 0, flags,
                                                                      *st.attrs["order"]])
    return True


@lowering("gru_cell")
def _gru_cell(lw: Lowerer, st: Step) -> bool:
    dt = st.var.dtype
    if dt not in FLOATS:
        return False
    _, n, h = st.var.shape
    has_h = bool(st.attrs["has_h"])
    srcs = [_rows(lw, s) for s in st.inputs[: 1 + has_h]]
    rest = [lw.dense(s) for s in st.inputs[1 + has_h :]]
    out = lw.value(st.var)
    lw.views[st.out] = out
    if out.size:
        lds = [ld for _, ld in srcs] + [0] * (2 - len(srcs))
        ins = [lw.operand(v) for v, _ in srcs] + [lw.operand(v) for v in rest]
        lw.emit(GRU_CELL, ins, [out.buf], [DTYPE_CODE[dt], 0, n, h, *lds, int(has_h), *st.attrs["xorder"],
                                           *st.attrs["horder"]])
    return True


@lowering("gru_cell_grad")
def _gru_cell_grad(lw: Lowerer, st: Step) -> bool:
    dt = st.var.dtype
    if dt not in FLOATS:
        return False
    _, n, h = lw.plan.slots[st.inputs[0]].shape
    ins = [lw.dense(s) for s in st.inputs]
    out = lw.value(st.var)
    lw.views[st.out] = out
    if out.size:
        lw.emit(GRU_CELL, [lw.operand(v) for v in ins], [out.buf], [DTYPE_CODE[dt], 1, n, h, 0, 0, 0,
                                                                     *st.attrs["xorder"], *st.attrs["horder"]])
    return True
