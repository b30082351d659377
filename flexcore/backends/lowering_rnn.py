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


def _cell(lw: Lowerer, st: Step, opcode: int, mode: int, n_src: int, flags: int, order: list[int]) -> bool:
    """One LSTM_CELL / GRU_CELL instruction: the first `n_src` inputs are row-strided sources (the
    forward's gate blocks, read in place with their row stride), the others dense; the backward
    (mode 1) has no strided source and reads n, h from the forward's planes (its first input)."""
    dt = st.var.dtype
    if dt not in FLOATS:
        return False
    _, n, h = st.var.shape if mode == 0 else lw.plan.slots[st.inputs[0]].shape
    srcs = [_rows(lw, s) for s in st.inputs[:n_src]]
    rest = [lw.dense(s) for s in st.inputs[n_src:]]
    out = lw.value(st.var)
    lw.views[st.out] = out
    if out.size:
        lds = [ld for _, ld in srcs] + [0] * (2 - n_src)
        ins = [lw.operand(v) for v, _ in srcs] + [lw.operand(v) for v in rest]
        lw.emit(opcode, ins, [out.buf], [DTYPE_CODE[dt], mode, n, h, *lds, flags, *order])
    return True


@lowering("lstm_cell")
def _lstm_cell(lw: Lowerer, st: Step) -> bool:
    has_bias = bool(st.attrs["has_bias"])
    n_src = len(st.inputs) - 1 - has_bias
    return _cell(lw, st, LSTM_CELL, 0, n_src, (n_src == 2) | (2 * has_bias), st.attrs["order"])


@lowering("lstm_cell_grad")
def _lstm_cell_grad(lw: Lowerer, st: Step) -> bool:
    return _cell(lw, st, LSTM_CELL, 1, 0, int(bool(st.attrs["has_dc"])), st.attrs["order"])


@lowering("gru_cell")
def _gru_cell(lw: Lowerer, st: Step) -> bool:
    has_h = bool(st.attrs["has_h"])
    return _cell(lw, st, GRU_CELL, 0, 1 + has_h, int(has_h), [*st.attrs["xorder"], *st.attrs["horder"]])


@lowering("gru_cell_grad")
def _gru_cell_grad(lw: Lowerer, st: Step) -> bool:
    return _cell(lw, st, GRU_CELL, 1, 0, 0, [*st.attrs["xorder"], *st.attrs["horder"]])
