"""Post-autodiff ops: the forms the lowering passes (flexcore.passes.fusion) rewrite graphs into.

They exist only after differentiation, so none has a gradient rule (`differentiable=False`):

- `gemm(a, b, trans_a, trans_b)`: op(a) @ op(b) on matrices, op = transpose where the flag says so
  (the backward pass is full of `x.T @ g`; the transpose is read in place, never materialised).
- `dense(x, w, b, act, trans_a, trans_b)`: act(op(x) @ op(w) + b), act one of `DENSE_ACTIVATIONS`.
- `fused_ew(*inputs, program, consts, modes, shape)`: a straight-line elementwise program, the one
  the C kernel `fc_fused_ew` (csrc/include/flexcore/kernels.h) runs.  Registers 0..n-1 hold the
  inputs, instruction k = (opcode, a, b, c) writes register n + k, the result is the last
  register.  Input j is read per `modes[j]` (`InMode`): the whole output shape, a scalar, a row
  broadcast along the last axis or a column broadcast across it.

Each reference implementation calls the numpy functions of the unfused ops in the same order, so
a fused graph gives the same numbers as the graph it replaces, bit for bit.
"""

from __future__ import annotations

import enum
import math

import numpy as np

from .core import FLOAT_DTYPES, REQUIRED, ShapeError, Var, register_op
from .ops import _sigmoid

__all__ = [
    "DENSE_ACTIVATIONS",
    "MAX_INPUTS",
    "MAX_INSTRUCTIONS",
    "EwCode",
    "InMode",
    "input_mode",
    "run_program",
]

# The limits of fc_fused_ew (fc_kernel_limit in kernels.h).
MAX_INSTRUCTIONS = 64
MAX_INPUTS = 64


class EwCode(enum.IntEnum):
    """Opcodes of a fused elementwise program: `enum fc_ew_code` of kernels.h, same numbers."""

    NEG = 0
    EXP = 1
    LOG = 2
    LOG1P = 3
    SQRT = 4
    ABS = 5
    SIGMOID = 6
    TANH = 7
    ARCTAN = 8
    SIGN = 9
    STEP = 10
    RELU = 11
    ADD = 12
    SUB = 13
    MUL = 14
    DIV = 15
    POW = 16
    MAX = 17
    MIN = 18
    GT = 19
    GE = 20
    LT = 21
    LE = 22
    EQ = 23
    NE = 24
    WHERE = 25
    CONST = 26


class InMode(enum.IntEnum):
    """How element i of the output reads an input: `enum fc_fused_mode` of kernels.h."""

    FULL = 0  # [i]
    SCALAR = 1  # [0]
    ROW = 2  # [i % cols], an operand of shape (..., 1, cols)
    COL = 3  # [i // cols], an operand of shape (*out[:-1], 1)
    # [(i // cols) * ld + i % cols]: rows ld apart.  Only the cpu lowering uses it, for a FULL
    # operand that is a column block of a wider matrix (read in place instead of copied); a
    # fused_ew op never carries it.
    STRIDED = 4


_UNARY = {
    EwCode.NEG: np.negative,
    EwCode.EXP: np.exp,
    EwCode.LOG: np.log,
    EwCode.LOG1P: np.log1p,
    EwCode.SQRT: np.sqrt,
    EwCode.ABS: np.abs,
    EwCode.SIGMOID: _sigmoid,
    EwCode.TANH: np.tanh,
    EwCode.ARCTAN: np.arctan,
    EwCode.SIGN: np.sign,
    EwCode.STEP: lambda x: (x > 0).astype(x.dtype),  # the 'step' primitive's implementation
    # fc_ew_relu is the relu composite where(x > 0, x, 0): NaN gives 0.
    EwCode.RELU: lambda x: np.where(x > 0, x, np.zeros((), x.dtype)),
}
_BINARY = {
    EwCode.ADD: np.add,
    EwCode.SUB: np.subtract,
    EwCode.MUL: np.multiply,
    EwCode.DIV: np.divide,
    EwCode.POW: np.power,
    EwCode.MAX: np.maximum,
    EwCode.MIN: np.minimum,
}
_COMPARE = {
    EwCode.GT: np.greater,
    EwCode.GE: np.greater_equal,
    EwCode.LT: np.less,
    EwCode.LE: np.less_equal,
    EwCode.EQ: np.equal,
    EwCode.NE: np.not_equal,
}
_MODES = frozenset(int(m) for m in InMode)
# How many register operands each opcode reads (CONST reads a const index instead); plain ints,
# as programs hold them.
_ARITY = {
    **{int(c): 1 for c in _UNARY},
    **{int(c): 2 for c in _BINARY},
    **{int(c): 2 for c in _COMPARE},
    int(EwCode.WHERE): 3,
    int(EwCode.CONST): 0,
}


def input_mode(shape: tuple[int, ...], out: tuple[int, ...]) -> InMode | None:
    """The mode in which an operand of `shape` broadcasts to `out`, or None when none fits."""
    shape, out = tuple(shape), tuple(out)
    if shape == out:
        return InMode.FULL
    if len(shape) > len(out):
        return None
    if math.prod(shape) == 1:
        return InMode.SCALAR
    padded = (1,) * (len(out) - len(shape)) + shape
    if all(s == 1 for s in padded[:-1]) and padded[-1] == out[-1]:
        return InMode.ROW
    if padded[:-1] == out[:-1] and padded[-1] == 1:
        return InMode.COL
    return None


def _mode_fits(mode: int, shape: tuple[int, ...], out: tuple[int, ...]) -> bool:
    """Whether an operand of `shape` can be read in `mode` (the element count the kernel needs,
    and numpy broadcasting for the reference)."""
    n = math.prod(out)
    cols = out[-1] if out else 1
    size = math.prod(shape)
    if mode == InMode.FULL:
        return tuple(shape) == tuple(out)
    if mode == InMode.SCALAR:
        return size == 1 and len(shape) <= len(out)
    if mode in (InMode.ROW, InMode.COL):
        want = input_mode(shape, out)
        if want == InMode.SCALAR:  # a 1-element row or column: (1, 1) against (m, 1) or (1, n)
            return size == (cols if mode == InMode.ROW else n // max(cols, 1))
        return want == mode
    return False


def _spread(x: np.ndarray, mode: int, out: tuple[int, ...]) -> np.ndarray:
    """An input reshaped so numpy broadcasting reads it as the kernel does."""
    if mode == InMode.FULL:
        return x
    if mode == InMode.SCALAR:
        return x.reshape(())
    if mode == InMode.ROW:
        return x.reshape((out[-1],) if out else ())
    return x.reshape((*out[:-1], 1))


def run_program(inputs, modes, program, consts, shape, dtype) -> np.ndarray:
    """Evaluate a fused elementwise program with numpy (the reference of fc_fused_ew)."""
    dtype = np.dtype(dtype)
    shape = tuple(shape)
    regs = [_spread(np.asarray(x), m, shape) for x, m in zip(inputs, modes, strict=True)]
    for op, a, b, c in program:
        op = EwCode(op)
        if op in _UNARY:
            r = _UNARY[op](regs[a])
        elif op in _BINARY:
            r = _BINARY[op](regs[a], regs[b])
        elif op in _COMPARE:
            r = _COMPARE[op](regs[a], regs[b]).astype(dtype)
        elif op == EwCode.WHERE:
            r = np.where(regs[a] != 0, regs[b], regs[c])
        else:  # CONST
            r = np.asarray(consts[a], dtype=dtype)
        regs.append(r)
    out = regs[-1]
    if out.shape != shape or out.dtype != dtype:
        out = np.ascontiguousarray(np.broadcast_to(out, shape), dtype=dtype)
    return out


def _common_float_dtype(op: str, vs: list[Var]) -> np.dtype:
    dts = {v.dtype for v in vs}
    if len(dts) != 1 or vs[0].dtype not in FLOAT_DTYPES:
        raise ShapeError(f"op '{op}': arguments must share one float dtype, got {', '.join(str(v.dtype) for v in vs)}")
    return vs[0].dtype


def _fused_infer(vs, program, consts, modes, shape):
    shape = tuple(int(s) for s in shape)
    if not 1 <= len(vs) <= MAX_INPUTS:
        raise ShapeError(f"op 'fused_ew': takes 1 to {MAX_INPUTS} inputs, got {len(vs)}")
    dt = _common_float_dtype("fused_ew", vs)
    if len(modes) != len(vs):
        raise ShapeError(f"op 'fused_ew': {len(vs)} inputs need as many modes, got {len(modes)}")
    for j, (v, m) in enumerate(zip(vs, modes, strict=True)):
        if m not in _MODES or not _mode_fits(m, v.shape, shape):
            raise ShapeError(
                f"op 'fused_ew': input {j} of shape {v.shape} cannot be read in mode {m} for output {shape}"
            )
    if not 1 <= len(program) <= MAX_INSTRUCTIONS:
        raise ShapeError(f"op 'fused_ew': a program has 1 to {MAX_INSTRUCTIONS} instructions, got {len(program)}")
    n_in, n_consts = len(vs), len(consts)
    for k, ins in enumerate(program):
        arity = _ARITY.get(ins[0]) if len(ins) == 4 else None
        if arity is None:
            raise ShapeError(f"op 'fused_ew': instruction {k} {ins} is not (opcode, a, b, c) with a known opcode")
        if ins[0] == EwCode.CONST:
            if not 0 <= ins[1] < n_consts:
                raise ShapeError(f"op 'fused_ew': instruction {k} loads const {ins[1]} of {n_consts}")
            continue
        for r in ins[1 : 1 + arity]:
            if not 0 <= r < n_in + k:
                raise ShapeError(f"op 'fused_ew': instruction {k} reads register {r}, which is not written before it")
    return shape, dt


register_op(
    "fused_ew",
    infer=_fused_infer,
    impl=lambda *xs, program, consts, modes, shape: run_program(xs, modes, program, consts, shape, xs[0].dtype),
    attrs={"program": REQUIRED, "consts": (), "modes": REQUIRED, "shape": REQUIRED},
    variadic=True,
    kind="elementwise",
    differentiable=False,
    doc="a fused elementwise program (fc_fused_ew); made by the fuse_elementwise pass",
)


def _op_shape(v: Var, trans: bool) -> tuple[int, int]:
    return (v.shape[1], v.shape[0]) if trans else v.shape


def _gemm_infer(op: str, a: Var, b: Var, trans_a: bool, trans_b: bool):
    dt = _common_float_dtype(op, [a, b])
    if a.ndim != 2 or b.ndim != 2:
        raise ShapeError(f"op '{op}': both operands must be matrices, got shapes {a.shape} and {b.shape}")
    (m, k), (k2, n) = _op_shape(a, trans_a), _op_shape(b, trans_b)
    if k != k2:
        ta, tb = ("^T" if trans_a else ""), ("^T" if trans_b else "")
        raise ShapeError(f"op '{op}': inner dimensions differ: {a.shape}{ta} @ {b.shape}{tb}")
    return (m, n), dt


def _product(a: np.ndarray, b: np.ndarray, trans_a: bool, trans_b: bool) -> np.ndarray:
    # np.transpose is a view, as the 'permute' primitive's is: the same matmul call as unfused.
    return np.matmul(np.transpose(a) if trans_a else a, np.transpose(b) if trans_b else b)


register_op(
    "gemm",
    infer=lambda vs, trans_a, trans_b: _gemm_infer("gemm", vs[0], vs[1], trans_a, trans_b),
    impl=_product,
    attrs={"trans_a": False, "trans_b": False},
    args=("a", "b"),
    kind="matmul",
    differentiable=False,
    doc="op(a) @ op(b) for matrices, op a transpose where trans_a / trans_b say so",
)

DENSE_ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh")


def _dense_infer(vs, act, trans_a, trans_b):
    x, w, b = vs
    shape, dt = _gemm_infer("dense", x, w, trans_a, trans_b)
    if b.shape != (shape[1],) or b.dtype != dt:
        raise ShapeError(f"op 'dense': the bias must be {dt} of shape ({shape[1]},), got {b.dtype} {b.shape}")
    if act not in DENSE_ACTIVATIONS:
        raise ShapeError(f"op 'dense': unknown activation '{act}'; valid: {', '.join(DENSE_ACTIVATIONS)}")
    return shape, dt


def _dense_impl(x, w, b, act, trans_a, trans_b):
    y = np.add(_product(x, w, trans_a, trans_b), b)
    if act == "relu":  # the relu composite: where(y > 0, y, 0), so NaN gives 0
        zero = np.zeros((), y.dtype)
        return np.where(np.greater(y, zero), y, zero)
    if act == "sigmoid":
        return _sigmoid(y)
    if act == "tanh":
        return np.tanh(y)
    return y


register_op(
    "dense",
    infer=_dense_infer,
    impl=_dense_impl,
    attrs={"act": "identity", "trans_a": False, "trans_b": False},
    args=("x", "w", "b"),
    kind="matmul",
    differentiable=False,
    doc="act(op(x) @ op(w) + b): a dense layer in one kernel (relu is where(y > 0, y, 0))",
)
