"""Lowering a Plan to an executor program (buffers + instructions, see flexcore/executor.h).

Every plan slot gets a *view*: a buffer, an element offset, a shape and element strides.  Ops that
only move data (reshape of a dense value, permute, broadcast_to, slice, stop_gradient) are views of
their input and emit nothing; a consumer that reads strided operands (elementwise kernels, strided
copies, GEMM for transposes and batch broadcasting) reads the view as it is, any other consumer
gets the view materialised once by a strided copy (`dense`).  Computing ops emit one or a few
instructions through the table `LOWERINGS` (op name -> function(lowerer, step) -> bool); a
function that returns False (an unsupported dtype or rank) and an op without an entry become a
CALLBACK instruction that runs the op's reference implementation.

Buffers: inputs, parameters and constants are the caller's arrays; a slot that is an output (or an
update) is produced straight into its OUTPUT buffer where its producer writes a fresh value, else
copied there; everything else lives in one arena planned by `memory.plan_offsets` from the
instruction-level lifetimes (an ALIAS keeps its root buffer alive).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import _native
from ..ir.core import Shared, Var
from ..ir.ops import _norm_axes
from ..plan import Plan, Step
from . import memory

# fc_opcode (flexcore/executor.h)
CALLBACK, COPY, FILL, COPY_STRIDED, UNARY, BINARY, COMPARE, WHERE, CAST, GEMM, REDUCE, SOFTMAX = range(12)
GATHER, SCATTER_ADD, ONE_HOT, UNFOLD, FOLD, FUSED_EW, PHILOX, CONV, POOL, LSTM_CELL, GRU_CELL = range(12, 23)
GEMM_PACK = 23
OPCODES = {
    "CALLBACK": CALLBACK, "COPY": COPY, "FILL": FILL, "COPY_STRIDED": COPY_STRIDED, "UNARY": UNARY,
    "BINARY": BINARY, "COMPARE": COMPARE, "WHERE": WHERE, "CAST": CAST, "GEMM": GEMM, "REDUCE": REDUCE,
    "SOFTMAX": SOFTMAX, "GATHER": GATHER, "SCATTER_ADD": SCATTER_ADD, "ONE_HOT": ONE_HOT, "UNFOLD": UNFOLD,
    "FOLD": FOLD, "FUSED_EW": FUSED_EW, "PHILOX": PHILOX, "CONV": CONV, "POOL": POOL,
    "LSTM_CELL": LSTM_CELL, "GRU_CELL": GRU_CELL,
    "GEMM_PACK": GEMM_PACK,
}
# fc_gemm_packing: the operand a GEMM_PACK packs, and the trans value of a GEMM that reads it packed.
OPERAND_A, OPERAND_B, PACKED = 0, 1, 2
# fc_buffer_kind
INPUT, PARAM, CONST, ARENA, ALIAS, OUTPUT = range(6)
BUFFER_KINDS = {"INPUT": INPUT, "PARAM": PARAM, "CONST": CONST, "ARENA": ARENA, "ALIAS": ALIAS, "OUTPUT": OUTPUT}
MAX_NDIM = 8  # FC_MAX_NDIM

# Instruction forms beyond the basic ones, each with a probe instruction (opcode, n_in, ints,
# n_dbl) that a backend's `supports` answers for the whole form: a backend without one gets the
# plain lowering for it (a dense output and a copy, an unfolded update), not a host callback.
FORM_PROBES = {
    "fused_out_ld": (FUSED_EW, 1, [0, 1, 1, 1, 0, 0, 0, 0, 0, 1], 0),  # FUSED_EW with an output row stride
    "reduce_ld": (REDUCE, 1, [0, 0, 1, 1, 1, 1], 0),  # REDUCE with a row stride
    "scaled_gemm": (GEMM, 3, [0, 0, 0, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0, 0], 2),  # GEMM alpha * s, beta
}
FORMS = frozenset(FORM_PROBES)

F32, F64, I64, BOOL = (np.dtype(t) for t in (np.float32, np.float64, np.int64, np.bool_))
DTYPE_CODE = {F32: 0, F64: 1, I64: 2, BOOL: 3}
FLOATS = (F32, F64)

UNARY_CODE = {"neg": 0, "exp": 1, "log": 2, "log1p": 3, "sqrt": 4, "abs": 5, "sigmoid": 6, "tanh": 7,
              "arctan": 8, "sign": 10, "step": 11}
BINARY_CODE = {"add": 0, "sub": 1, "mul": 2, "div": 3, "maximum": 4, "minimum": 5, "pow": 6}
# Dtypes of fc_ew_binary beyond the floats (which take every op); bool add/mul are or/and as numpy.
BINARY_INT_OPS = {"add", "sub", "mul", "maximum", "minimum"}
BINARY_BOOL_OPS = {"add", "mul", "maximum", "minimum"}
COMPARE_CODE = {"eq": 0, "ne": 1, "lt": 2, "le": 3, "gt": 4, "ge": 5}
REDUCE_CODE = {"sum": 0, "max": 1}


def c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, acc = [], 1
    for n in reversed(shape):
        out.append(acc)
        acc *= n
    return tuple(reversed(out))


@dataclass(frozen=True)
class View:
    """How to read a value: element `offset` into buffer `buf`, then `strides` (in elements)."""

    buf: int
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: np.dtype

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def is_dense(self) -> bool:
        """Row-major contiguous (strides of length-1 axes do not matter)."""
        return all(n == 1 or s == c for n, s, c in zip(self.shape, self.strides, c_strides(self.shape)))

    def extent(self) -> int:
        """Elements from the first to one past the last element read."""
        if self.size == 0:
            return 0
        return 1 + sum((n - 1) * s for n, s in zip(self.shape, self.strides))

    def index(self, i: int) -> View:
        """v[i]: the view without its first axis, at index i of it."""
        return View(self.buf, self.offset + i * self.strides[0], self.shape[1:], self.strides[1:], self.dtype)

    def reshaped(self, shape: tuple[int, ...]) -> View:
        return View(self.buf, self.offset, tuple(shape), c_strides(tuple(shape)), self.dtype)


def broadcast_strides(v: View, shape: tuple[int, ...]) -> list[int]:
    """Strides that read `v` broadcast to `shape` (numpy's rule: 0 on the broadcast axes)."""
    lead = len(shape) - len(v.shape)
    return [0] * lead + [0 if n == 1 else s for n, s in zip(v.shape, v.strides)]


def simplify(shape, *strides) -> tuple[list[int], list[list[int]]]:
    """Drop length-1 axes and merge adjacent axes that every operand walks contiguously, so kernels
    see few, long axes (and ranks above FC_MAX_NDIM shrink).  A zero-size shape stays as it is."""
    if 0 in shape:
        return list(shape), [list(s) for s in strides]
    dims: list[tuple[int, list[int]]] = []
    for d, n in enumerate(shape):
        if n == 1:
            continue
        sts = [s[d] for s in strides]
        if dims and all(ps == s * n for ps, s in zip(dims[-1][1], sts)):
            dims[-1] = (dims[-1][0] * n, sts)
        else:
            dims.append((n, sts))
    return [n for n, _ in dims], [[st[k] for _, st in dims] for k in range(len(strides))]


@dataclass
class Lowered:
    """The result of lowering: everything fc_program_create needs, and what the backend keeps."""

    buffers: np.ndarray  # (n, 4) int64
    code: np.ndarray
    fimm: np.ndarray
    consts: list[np.ndarray]
    input_specs: list[tuple[np.dtype, tuple[int, ...]]]
    param_specs: list[tuple[np.dtype, tuple[int, ...]]]
    output_specs: list[tuple[np.dtype, tuple[int, ...]]]
    callbacks: list[tuple[int, list[tuple[np.dtype, tuple[int, ...]]]]]
    callback_steps: list[Step]
    params: list[Shared]
    instr_steps: list[Step | None]  # the plan step each instruction belongs to (None: output copies)
    fallback_ops: set[str]
    intervals: list[memory.Interval]  # arena buffers' lifetimes, for tests
    offsets: dict[int, int]
    arena_bytes: int
    alias_base: dict[int, int] = field(default_factory=dict)

    @property
    def peak_bytes(self) -> int:
        """What a run holds: the arena plus every input, parameter, constant and output."""
        ext = sum(math.prod(s) * d.itemsize for d, s in self.input_specs + self.param_specs + self.output_specs)
        return self.arena_bytes + ext + sum(c.nbytes for c in self.consts)


# -- concat elision ------------------------------------------------------------------------------
@dataclass
class Frames:
    """Where concat inputs live inside their concat's output, so their producers write there.

    Each concat says "input i is the output's window at offset o_i along the axis".  Those
    equations, over all concats, join values into components (weighted union-find: each value's
    index offset from its component's representative); a component becomes one dense buffer of
    its bounding box, and each of its values a view at its offset with the buffer's strides.  A
    component is kept only when its equations agree (no value at two places), its leaves (values
    no concat of it produces) are pairwise disjoint and tile the box exactly (no holes).  The
    lowering then places a leaf where its producer can write a view (`Lowerer.value`), and the
    concat copies only what was not placed."""

    home: dict[int, tuple[int, tuple[int, ...]]]  # slot -> (frame, index of its first element)
    shapes: list[tuple[tuple[int, ...], np.dtype]]  # frame -> (box shape, dtype)
    joined: set[int] = field(default_factory=set)  # outputs of the concats the frames elide


def plan_frames(plan: Plan) -> Frames:
    concats = [st for st in plan.steps if st.op == "concat" and st.var.size > 0]
    if not concats:
        return Frames({}, [], set())
    parent: dict[int, int] = {}
    delta: dict[int, tuple[int, ...]] = {}  # index of a slot minus that of its parent

    def find(x: int) -> tuple[int, tuple[int, ...]]:
        path = []
        while x in parent:
            path.append(x)
            x = parent[x]
        # compress: every slot on the path points at the root with its total offset
        acc = None
        for y in reversed(path):
            d = delta[y] if acc is None else tuple(a + b for a, b in zip(acc, delta[y]))
            parent[y], delta[y], acc = x, d, d
        if not path:
            return x, ()
        return x, delta[path[0]]

    shapes: dict[int, tuple[int, ...]] = {}
    # Greedy, in plan order: a concat whose equations disagree with those taken so far (one value
    # at two places, as when two joins of the same pieces order them differently) is left out
    # and copies as usual.
    for st in concats:
        rank = st.var.ndim
        ax = st.attrs["axis"] % rank
        zero = (0,) * rank
        ro, do = find(st.out)
        do = do or zero
        need: dict[int, tuple[int, ...]] = {ro: tuple(-d for d in do)}  # root -> its index - index(out)
        pos, ok = 0, True
        for s in st.inputs:
            rs, ds = find(s)
            want = tuple((pos if k == ax else 0) - d for k, d in enumerate(ds or zero))
            if need.setdefault(rs, want) != want:
                ok = False
                break
            pos += plan.slots[s].shape[ax]
        if not ok:
            continue
        shapes[st.out] = st.var.shape
        for s in st.inputs:
            shapes[s] = plan.slots[s].shape
        base = need[ro]
        for r, w in need.items():
            if r != ro:
                parent[r] = ro
                delta[r] = tuple(a - b for a, b in zip(w, base))
    comps: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
    for s in shapes:
        r, d = find(s)
        comps.setdefault(r, []).append((s, d or (0,) * len(shapes[s])))
    produced = {st.out for st in concats if st.out in shapes}
    frames = Frames({}, [], set())
    for r, nodes in comps.items():
        rank = len(shapes[r])
        lo = [min(d[k] for _, d in nodes) for k in range(rank)]
        hi = [max(d[k] + shapes[s][k] for s, d in nodes) for k in range(rank)]
        box = tuple(h - low for h, low in zip(hi, lo))
        leaves = [(s, tuple(a - b for a, b in zip(d, lo))) for s, d in nodes if s not in produced]
        if not _tiles(box, [(d, shapes[s]) for s, d in leaves]):
            continue
        f = len(frames.shapes)
        frames.shapes.append((box, plan.slots[r].dtype))
        for s, d in nodes:
            frames.home[s] = (f, tuple(a - b for a, b in zip(d, lo)))
        frames.joined.update(s for s, _ in nodes if s in produced)
    return frames


def _tiles(box: tuple[int, ...], boxes: list[tuple[tuple[int, ...], tuple[int, ...]]]) -> bool:
    """Whether the boxes (start, shape) cover `box` exactly once: painted on the grid of their
    boundaries (a few cells per axis), every cell must be hit once."""
    if not boxes or math.prod(box) != sum(math.prod(sh) for _, sh in boxes):
        return False
    cuts = [sorted({0, n, *(d[k] for d, _ in boxes), *(d[k] + sh[k] for d, sh in boxes)}) for k, n in enumerate(box)]
    if math.prod(len(c) - 1 for c in cuts) > 1 << 22:
        return False
    grid = np.zeros([len(c) - 1 for c in cuts], np.int32)
    for d, sh in boxes:
        idx = tuple(slice(c.index(a), c.index(a + n)) for c, a, n in zip(cuts, d, sh))
        grid[idx] += 1
    return bool((grid == 1).all())


# -- SGD folded into the weight gradient's GEMM ----------------------------------------------------
_SGD_SCALAR = {((14, 1, 2, 0), (13, 0, 3, 0)), ((14, 2, 1, 0), (13, 0, 3, 0))}  # x - s * g, inputs x, s, g
_SGD_CONST = {((26, 0, 0, 0), (14, 2, 1, 0), (13, 0, 3, 0)), ((26, 0, 0, 0), (14, 1, 2, 0), (13, 0, 3, 0))}  # x - c * g


@dataclass(frozen=True)
class SgdFold:
    update: Step  # the fused_ew step x - lr * g
    x: int
    lr: int | None  # the slot of a scalar learning rate (read at run time), or
    lr_const: float | None  # a constant one


def plan_sgd_folds(plan: Plan) -> dict[int, SgdFold]:
    """The plain SGD updates p - lr * g whose g is a `gemm` read by nothing else: gemm output slot
    -> the fold.  Such a g is never materialised: the lowering copies p into the update's buffer
    and runs the product with alpha = -lr (read at run time where lr is an input) and beta = 1.
    Other forms (weight decay, momentum: g is not a bare product there) are left as they are."""
    updates = {s for _, s in plan.updates}
    if not updates:
        return {}
    leaves = set(plan.inputs) | {s for s, _ in plan.shared} | {s for s, _ in plan.consts}
    outputs = set(plan.outputs)
    prod = {st.out: st for st in plan.steps}
    readers: dict[int, int] = {}
    for st in plan.steps:
        for s in st.inputs:
            readers[s] = readers.get(s, 0) + 1
    folds = {}
    for st in plan.steps:
        if st.op != "fused_ew" or st.out not in updates:
            continue
        program = tuple(tuple(int(c) for c in ins) for ins in st.attrs["program"])
        modes = tuple(int(m) for m in st.attrs["modes"])
        consts = tuple(st.attrs["consts"])
        if program in _SGD_SCALAR and modes == (IN_FULL, IN_SCALAR, IN_FULL) and not consts:
            x, lr, g = st.inputs
            c = None
        elif program in _SGD_CONST and modes == (IN_FULL, IN_FULL) and len(consts) == 1:
            (x, g), lr, c = st.inputs, None, float(consts[0])
        else:
            continue
        gs = prod.get(g)
        var = st.var
        if (gs is None or gs.op != "gemm" or readers[g] != 1 or g in outputs or g in updates or x not in leaves
                or var.dtype not in FLOATS or var.size == 0 or plan.slots[x].shape != var.shape
                or gs.var.shape != var.shape or gs.var.dtype != var.dtype):
            continue
        if lr is not None and (lr not in leaves or plan.slots[lr].dtype != var.dtype or plan.slots[lr].size != 1):
            continue
        folds[g] = SgdFold(st, x, lr, c)
    return folds

class Lowerer:
    def __init__(self, plan: Plan, host_steps: frozenset[int] = frozenset(), elide: bool = True,
                 forms: frozenset[str] = FORMS, prepack: bool = False) -> None:
        self.plan = plan
        self.host_steps = host_steps  # id() of steps lowered as CALLBACK whatever their rule
        self.prepack = prepack  # pack GEMM operands that several products read (GEMM_PACK)
        self.buffers: list[list[int]] = []  # [kind, a, b, nbytes]
        self.alias_base: dict[int, int] = {}
        self.alias_memo: dict[tuple[int, int, int], int] = {}
        self.values: set[int] = set()  # buffers holding one whole value: may become OUTPUT buffers
        self.code: list[int] = []
        self.fimm: list[float] = []
        self.instr_steps: list[Step | None] = []
        self.instr_bufs: list[list[int]] = []
        self.consts: list[np.ndarray] = []
        self.callbacks: list[tuple[int, list]] = []
        self.callback_steps: list[Step] = []
        self.fallback_ops: set[str] = set()
        self.views: dict[int, View] = {}
        self.step: Step | None = None
        # Outputs then updates: index j of the program's outputs -> its slot.
        self.out_slots = list(plan.outputs) + [s for _, s in plan.updates]
        self.out_of_slot: dict[int, list[int]] = {}
        for j, s in enumerate(self.out_slots):
            self.out_of_slot.setdefault(s, []).append(j)
        self.out_buf: dict[int, int] = {}  # output index -> buffer
        self.forms = forms  # the instruction forms of FORMS the backend runs
        self.frames = plan_frames(plan) if elide else Frames({}, [], set())
        self.frame_buf: dict[int, int] = {}  # frame -> its buffer (made at first use)
        self.frame_roots: set[int] = set()
        self.placed: set[int] = set()  # slots produced straight into their frame
        self.sgd_folds = plan_sgd_folds(plan) if elide and "scaled_gemm" in forms else {}
        self.folded: dict[int, View] = {}  # update slot -> its value, made by a folded GEMM

    # -- buffers and views ------------------------------------------------------------------
    def buffer(self, kind: int, a: int, b: int, nbytes: int) -> int:
        self.buffers.append([kind, a, b, nbytes])
        return len(self.buffers) - 1

    def value(self, var_or_shape, dtype=None, strided_ok: bool | Callable[[View], bool] = False) -> View:
        """A fresh dense buffer for one value (placed in the arena, or made an output).  For the
        current step's own value, its place in a concat's frame where it has one, the step's
        operands do not overlap it, and the place is dense (or the caller writes strided rows:
        `strided_ok`)."""
        st = self.step
        if st is not None and var_or_shape is st.var and st.out in self.frames.home:
            home = self.home(st.out)
            ok = strided_ok(home) if callable(strided_ok) else strided_ok
            if (ok or home.is_dense()) and not any(self.clash(self.views[s], home) for s in st.inputs):
                self.placed.add(st.out)
                return home
        shape, dtype = (var_or_shape.shape, var_or_shape.dtype) if isinstance(var_or_shape, Var) else (
            tuple(var_or_shape), np.dtype(dtype))
        v = View(-1, 0, shape, c_strides(shape), dtype)
        buf = self.buffer(ARENA, 0, 0, v.nbytes)
        self.values.add(buf)
        return View(buf, 0, shape, v.strides, dtype)

    def scratch(self, shape, dtype) -> View:
        """A dense temporary of one step (arena only)."""
        shape = tuple(shape)
        buf = self.buffer(ARENA, 0, 0, math.prod(shape) * np.dtype(dtype).itemsize)
        return View(buf, 0, shape, c_strides(shape), np.dtype(dtype))

    def home(self, slot: int) -> View:
        """The slot's view in its frame's buffer.  The view is at offset 0 of a buffer of its own
        (an ALIAS into the frame), so a rule that writes its output's buffer without looking at
        the view's offset still writes the right place."""
        f, index = self.frames.home[slot]
        shape, dtype = self.frames.shapes[f]
        if f not in self.frame_buf:
            self.frame_buf[f] = self.value(shape, dtype).buf
            self.frame_roots.add(self.frame_buf[f])
        strides = c_strides(shape)
        v = View(self.frame_buf[f], sum(i * t for i, t in zip(index, strides)), self.plan.slots[slot].shape,
                 strides, dtype)
        return View(self.operand(v), 0, v.shape, v.strides, dtype)

    def _at(self, v: View) -> tuple[int, int]:
        """(root buffer, byte offset of v's first element in it)."""
        buf, off = v.buf, v.offset * v.dtype.itemsize
        while buf in self.alias_base:
            off += self.buffers[buf][2]
            buf = self.alias_base[buf]
        return buf, off

    def clash(self, a: View, b: View) -> bool:
        """Whether the executor would see the operands of views a and b overlap (their byte
        extents in one buffer meet)."""
        if a.size == 0 or b.size == 0:
            return False
        (ra, oa), (rb, ob) = self._at(a), self._at(b)
        return ra == rb and oa < ob + b.extent() * b.dtype.itemsize and ob < oa + a.extent() * a.dtype.itemsize

    def operand(self, v: View) -> int:
        """A buffer that starts where `v` starts: the view's own buffer, or an ALIAS into it (a
        frame's buffer is always aliased: an operand covers only its view's extent, so views of
        one frame read and written by one instruction do not overlap for the executor)."""
        if v.offset == 0 and (v.buf not in self.frame_roots or v.extent() * v.dtype.itemsize == self.buffers[v.buf][3]):
            return v.buf
        isz = v.dtype.itemsize
        key = (v.buf, v.offset * isz, v.extent() * isz)
        if key not in self.alias_memo:
            self.alias_memo[key] = self.buffer(ALIAS, v.buf, *key[1:])
            self.alias_base[self.alias_memo[key]] = v.buf
        return self.alias_memo[key]

    def dense(self, slot: int) -> View:
        """The slot's value as a dense view, copied into a fresh buffer (once) if it is strided."""
        v = self.views[slot]
        if not v.is_dense():
            d = self.value(v.shape, v.dtype)
            self.copy(v, d)
            self.views[slot] = v = d
        return v

    # -- emitting -----------------------------------------------------------------------------
    def emit(self, opcode: int, ins, outs, ints=(), dbls=()) -> None:
        ins, outs = list(ins), list(outs)
        self.code += [opcode, len(ins), len(outs), len(ints), len(dbls), *ins, *outs, *(int(i) for i in ints)]
        self.fimm += [float(d) for d in dbls]
        self.instr_steps.append(self.step)
        self.instr_bufs.append(ins + outs)

    def copy(self, src: View, dst: View) -> None:
        """dst = src elementwise (same shape); dense to dense is a byte copy."""
        if src.size == 0:
            return
        if src.is_dense() and dst.is_dense():
            self.emit(COPY, [self.operand(src)], [self.operand(dst)], [src.nbytes])
            return
        shape, (ss, ds) = simplify(src.shape, src.strides, dst.strides)
        if len(shape) > MAX_NDIM:  # split the outermost axis: one copy per index
            for i in range(src.shape[0]):
                self.copy(*(v.index(i) for v in (src, dst)))
            return
        ints = [src.dtype.itemsize, len(shape), *shape, *ss, *ds]
        self.emit(COPY_STRIDED, [self.operand(src)], [self.operand(dst)], ints)

    def fill(self, dst: View, value: float) -> None:
        if dst.size:
            self.emit(FILL, [], [self.operand(dst)], [DTYPE_CODE[dst.dtype], dst.size], [value])

    def const(self, arr: np.ndarray) -> View:
        """A constant buffer holding `arr`."""
        arr = np.asarray(arr, order="C")
        self.consts.append(arr)
        buf = self.buffer(CONST, len(self.consts) - 1, 0, arr.nbytes)
        return View(buf, 0, arr.shape, c_strides(arr.shape), arr.dtype)

    def callback(self, st: Step) -> None:
        """Run the step's reference implementation on the host (dense operands)."""
        ins = [self.dense(s) for s in st.inputs]
        out = self.value(st.var)
        specs = [(v.dtype, v.shape) for v in ins] + [(out.dtype, out.shape)]
        index = len(self.callbacks)
        self.callbacks.append((len(ins), specs))
        self.callback_steps.append(st)
        self.emit(CALLBACK, [self.operand(v) for v in ins], [self.operand(out)],
                  [index, *(v.nbytes for v in ins), out.nbytes])
        self.views[st.out] = out
        self.fallback_ops.add(st.op)

    # -- outputs -----------------------------------------------------------------------------
    def deliver(self, slot: int) -> None:
        """Give every output index of `slot` its buffer: the slot's own value buffer where it has
        one (produced in place, no copy), else a copy made right now (its source stays alive no
        longer than it has to)."""
        for j in self.out_of_slot.get(slot, ()):
            v = self.views[slot]
            whole = v.offset == 0 and v.is_dense() and self.buffers[v.buf][3] == v.nbytes
            if v.buf in self.values and whole and v.buf not in self.out_buf.values():
                self.out_buf[j] = v.buf
                continue
            d = self.value(v.shape, v.dtype)
            self.copy(v, d)
            self.out_buf[j] = d.buf

    # -- the whole plan ----------------------------------------------------------------------
    def lower(self) -> Lowered:
        plan = self.plan
        input_specs, param_specs = [], []
        for i, s in enumerate(plan.inputs):
            v = plan.slots[s]
            buf = self.buffer(INPUT, i, 0, v.nbytes)
            self.views[s] = View(buf, 0, v.shape, c_strides(v.shape), v.dtype)
            input_specs.append((v.dtype, v.shape))
        params = []
        for j, (s, sv) in enumerate(plan.shared):
            buf = self.buffer(PARAM, j, 0, sv.nbytes)
            self.views[s] = View(buf, 0, sv.shape, c_strides(sv.shape), sv.dtype)
            param_specs.append((sv.dtype, sv.shape))
            params.append(sv)
        for k, (s, arr) in enumerate(plan.consts):
            # Not np.ascontiguousarray: it makes a 0-d constant (a scalar) 1-d.
            arr = np.asarray(arr, order="C")
            self.consts.append(arr)
            buf = self.buffer(CONST, k, 0, arr.nbytes)
            self.views[s] = View(buf, 0, arr.shape, c_strides(arr.shape), arr.dtype)
        for s in set(self.out_slots):
            if plan.slots[s].is_leaf:
                self.deliver(s)
        for st in plan.steps:
            self.step = st
            rule = None if id(st) in self.host_steps else LOWERINGS.get(st.op)
            if rule is None or not rule(self, st):
                self.callback(st)
            self.deliver(st.out)
        self.step = None
        return self.finish(input_specs, param_specs, params)

    def root(self, buf: int) -> int:
        while buf in self.alias_base:
            buf = self.alias_base[buf]
        return buf

    def root_offset(self, buf: int) -> tuple[int, int]:
        """(root buffer, byte offset of `buf` in it)."""
        off = 0
        while buf in self.alias_base:
            off += self.buffers[buf][2]
            buf = self.alias_base[buf]
        return buf, off

    def prepack_operands(self) -> None:
        """Pack once what several GEMMs read unchanged: a GEMM operand (the same bytes read the same
        way: offset, transposition, leading dimension, shape) that two or more GEMMs read with no
        instruction writing its buffer in between (an RNN's recurrent weight, read at every step
        forward and again, transposed, at every step backward) gets a GEMM_PACK instruction before
        its first reader, and the readers read the packed panels (trans PACKED), so no GEMM packs
        it again. The packed buffer is an arena value like any other: alive from the pack to its
        last reader."""
        instrs = []  # (position in code, opcode, n_in, n_out, n_int, n_dbl)
        pc = 0
        while pc < len(self.code):
            op, n_in, n_out, n_int, n_dbl = self.code[pc:pc + 5]
            instrs.append((pc, op, n_in, n_out, n_int, n_dbl))
            pc += 5 + n_in + n_out + n_int
        writes: dict[int, list[int]] = {}  # root buffer -> instructions writing it, in order
        uses: dict[tuple, list[tuple[int, int]]] = {}  # operand key -> (instruction, operand 0/1)
        for i, (pc, op, n_in, n_out, n_int, _) in enumerate(instrs):
            for b in self.code[pc + 5 + n_in:pc + 5 + n_in + n_out]:
                writes.setdefault(self.root(b), []).append(i)
            if op != GEMM:
                continue
            g = self.code[pc + 5 + n_in + n_out:pc + 5 + n_in + n_out + n_int]
            dt, ta, tb, batch, m, n, k, lda, sa, ldb, sb = g[:11]
            if m == 0 or n == 0 or k == 0:
                continue
            for side, (t, ld, stride, rows, cols) in enumerate(((ta, lda, sa, m, k), (tb, ldb, sb, k, n))):
                if t not in (0, 1) or (batch > 1 and stride != 0):
                    continue
                root, off = self.root_offset(self.code[pc + 5 + side])
                uses.setdefault((root, off, side, t, ld, rows, cols, dt), []).append((i, side))
        inserts: dict[int, list[list[int]]] = {}  # instruction -> packs to emit before it
        for (root, _, side, t, ld, rows, cols, dt), readers in uses.items():
            wr = writes.get(root, [])
            runs: list[list[tuple[int, int]]] = []
            for i, sd in readers:
                # A new run when some instruction wrote the buffer since the previous reader.
                if not runs or bisect.bisect_left(wr, i) != bisect.bisect_left(wr, runs[-1][-1][0]):
                    runs.append([])
                runs[-1].append((i, sd))
            for run in runs:
                if len(run) < 2:
                    continue
                first_pc, _, n_in, n_out, n_int, _ = instrs[run[0][0]]
                src = self.code[first_pc + 5 + side]
                nbytes = _native.module.gemm_packed_bytes(dt, side, rows, cols)
                packed = self.buffer(ARENA, 0, 0, nbytes)
                inserts.setdefault(run[0][0], []).append([src, packed, dt, side, t, rows, cols, ld])
                for i, sd in run:
                    ipc, _, n_in, n_out, _, _ = instrs[i]
                    self.code[ipc + 5 + sd] = packed
                    self.code[ipc + 5 + n_in + n_out + 1 + sd] = PACKED
                    self.instr_bufs[i][sd] = packed
        if not inserts:
            return
        code, steps, bufs = [], [], []
        for i, (pc, _, n_in, n_out, n_int, _) in enumerate(instrs):
            for src, packed, *ints in inserts.get(i, ()):
                code += [GEMM_PACK, 1, 1, len(ints), 0, src, packed, *ints]
                steps.append(self.instr_steps[i])
                bufs.append([src, packed])
            code += self.code[pc:pc + 5 + n_in + n_out + n_int]
            steps.append(self.instr_steps[i])
            bufs.append(self.instr_bufs[i])
        self.code, self.instr_steps, self.instr_bufs = code, steps, bufs

    def finish(self, input_specs, param_specs, params) -> Lowered:
        for j, buf in self.out_buf.items():
            self.buffers[buf][:3] = [OUTPUT, j, 0]
        if self.prepack:
            self.prepack_operands()
        # Lifetimes of arena buffers, in instruction indices; an alias's uses count for its root.
        start: dict[int, int] = {}
        end: dict[int, int] = {}
        for i, bufs in enumerate(self.instr_bufs):
            for b in bufs:
                r = self.root(b)
                start.setdefault(r, i)
                end[r] = i
        arena = [b for b, spec in enumerate(self.buffers) if spec[0] == ARENA]
        intervals = [memory.Interval(b, self.buffers[b][3], start.get(b, 0), end.get(b, 0)) for b in arena]
        offsets, arena_bytes = memory.plan_offsets(intervals)
        for b in arena:
            self.buffers[b][2] = offsets[b]
        output_specs = [(self.plan.slots[s].dtype, self.plan.slots[s].shape) for s in self.out_slots]
        return Lowered(
            buffers=np.array(self.buffers, dtype=np.int64).reshape(-1, 4),
            code=np.array(self.code, dtype=np.int64),
            fimm=np.array(self.fimm, dtype=np.float64),
            consts=self.consts,
            input_specs=input_specs,
            param_specs=param_specs,
            output_specs=output_specs,
            callbacks=self.callbacks,
            callback_steps=self.callback_steps,
            params=params,
            instr_steps=self.instr_steps,
            fallback_ops=self.fallback_ops,
            intervals=intervals,
            offsets=offsets,
            arena_bytes=arena_bytes,
            alias_base=dict(self.alias_base),
        )


# ---------------------------------------------------------------------------------------------
# the lowering table: op -> function(lowerer, step) -> handled
# ---------------------------------------------------------------------------------------------
LOWERINGS: dict[str, Callable[[Lowerer, Step], bool]] = {}


def lowering(*ops: str):
    def deco(fn):
        for op in ops:
            LOWERINGS[op] = fn
        return fn

    return deco


# -- views: no instructions ---------------------------------------------------------------------
@lowering("reshape")
def _reshape(lw: Lowerer, st: Step) -> bool:
    lw.views[st.out] = lw.dense(st.inputs[0]).reshaped(st.var.shape)
    return True


@lowering("stop_gradient")
def _identity(lw: Lowerer, st: Step) -> bool:
    lw.views[st.out] = lw.views[st.inputs[0]]
    return True


@lowering("permute")
def _permute(lw: Lowerer, st: Step) -> bool:
    x = lw.views[st.inputs[0]]
    axes = st.attrs["axes"]
    lw.views[st.out] = View(x.buf, x.offset, st.var.shape, tuple(x.strides[a] for a in axes), x.dtype)
    return True


@lowering("broadcast_to")
def _broadcast_to(lw: Lowerer, st: Step) -> bool:
    x = lw.views[st.inputs[0]]
    lw.views[st.out] = View(x.buf, x.offset, st.var.shape, tuple(broadcast_strides(x, st.var.shape)), x.dtype)
    return True


@lowering("slice")
def _slice(lw: Lowerer, st: Step) -> bool:
    x = lw.views[st.inputs[0]]
    a = st.attrs
    if st.var.size == 0:
        lw.views[st.out] = lw.value(st.var)
        return True
    offset = x.offset + sum(s * t for s, t in zip(a["starts"], x.strides))
    strides = tuple(t * k for t, k in zip(x.strides, a["steps"]))
    lw.views[st.out] = View(x.buf, offset, st.var.shape, strides, x.dtype)
    return True


# -- data movement with copies --------------------------------------------------------------------
def _window(out: View, starts, steps, shape) -> View:
    """The part of dense `out` at starts / steps with `shape` (a strided view for writing)."""
    offset = out.offset + sum(s * t for s, t in zip(starts, out.strides))
    return View(out.buf, offset, tuple(shape), tuple(t * k for t, k in zip(out.strides, steps)), out.dtype)


@lowering("concat")
def _concat(lw: Lowerer, st: Step) -> bool:
    # In a frame, the inputs whose producers wrote their window (or whose own concat did) are
    # there already; only the rest is copied.
    joined = st.out in lw.frames.joined
    if joined:
        out = lw.home(st.out)
        lw.placed.add(st.out)
    else:  # maybe a piece of another concat's frame
        out = lw.value(st.var, strided_ok=True)
    ax = st.attrs["axis"] % st.var.ndim
    start = 0
    for s in st.inputs:
        x = lw.views[s]
        starts = [0] * st.var.ndim
        starts[ax] = start
        start += x.shape[ax]
        if joined and s in lw.placed:
            continue
        win = _window(out, starts, [1] * st.var.ndim, x.shape)
        if lw.clash(x, win):  # a view of the frame itself: through a temporary
            tmp = lw.scratch(x.shape, x.dtype)
            lw.copy(x, tmp)
            x = tmp
        lw.copy(x, win)
    lw.views[st.out] = out
    return True


@lowering("unslice")
def _unslice(lw: Lowerer, st: Step) -> bool:
    a = st.attrs
    g = lw.views[st.inputs[0]]
    out = lw.value(st.var)
    if g.size != out.size:  # the slice does not cover every element: the rest is zero
        lw.fill(out, 0.0)
    if g.size:
        lw.copy(g, _window(out, a["starts"], a["steps"], g.shape))
    lw.views[st.out] = out
    return True


@lowering("pad")
def _pad(lw: Lowerer, st: Step) -> bool:
    x = lw.views[st.inputs[0]]
    out = lw.value(st.var)
    if x.size != out.size:
        lw.fill(out, st.attrs["value"])
    if x.size:
        lw.copy(x, _window(out, [lo for lo, _ in st.attrs["pads"]], [1] * len(x.shape), x.shape))
    lw.views[st.out] = out
    return True


# -- elementwise -------------------------------------------------------------------------------
@lowering(*UNARY_CODE)
def _unary(lw: Lowerer, st: Step) -> bool:
    dt = st.var.dtype
    if not (dt in FLOATS or (dt == I64 and st.op == "neg")):
        return False
    x = lw.dense(st.inputs[0])
    out = lw.value(st.var)
    if out.size:
        lw.emit(UNARY, [lw.operand(x)], [lw.operand(out)], [DTYPE_CODE[dt], UNARY_CODE[st.op], out.size])
    lw.views[st.out] = out
    return True


def _broadcast_op(lw: Lowerer, st: Step, opcode: int, head: list[int]) -> bool:
    """An elementwise op over broadcast, possibly strided, operands; the output is dense."""
    shape = st.var.shape
    ins = [lw.views[s] for s in st.inputs]
    out_strides = c_strides(shape)
    dims, strides = simplify(shape, *[broadcast_strides(v, shape) for v in ins], out_strides)
    if len(dims) > MAX_NDIM:
        return False
    out = lw.value(st.var)
    if out.size:
        flat = [s for sts in strides[:-1] for s in sts]
        lw.emit(opcode, [lw.operand(v) for v in ins], [lw.operand(out)], [*head, len(dims), *dims, *flat])
    lw.views[st.out] = out
    return True


@lowering(*BINARY_CODE)
def _binary(lw: Lowerer, st: Step) -> bool:
    dt = st.var.dtype
    if not (dt in FLOATS or (dt == I64 and st.op in BINARY_INT_OPS) or (dt == BOOL and st.op in BINARY_BOOL_OPS)):
        return False
    return _broadcast_op(lw, st, BINARY, [DTYPE_CODE[dt], BINARY_CODE[st.op]])


@lowering(*COMPARE_CODE)
def _compare(lw: Lowerer, st: Step) -> bool:
    dt = lw.views[st.inputs[0]].dtype
    return _broadcast_op(lw, st, COMPARE, [DTYPE_CODE[dt], COMPARE_CODE[st.op]])


@lowering("where")
def _where(lw: Lowerer, st: Step) -> bool:
    return _broadcast_op(lw, st, WHERE, [DTYPE_CODE[st.var.dtype]])


@lowering("cast")
def _cast(lw: Lowerer, st: Step) -> bool:
    x = lw.dense(st.inputs[0])
    out = lw.value(st.var)
    if out.size:
        lw.emit(CAST, [lw.operand(x)], [lw.operand(out)], [DTYPE_CODE[x.dtype], DTYPE_CODE[out.dtype], out.size])
    lw.views[st.out] = out
    return True


# -- matmul ------------------------------------------------------------------------------------
def _matrix(v: View, batch: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(trans, ld, batch stride) that let GEMM read the (..., rows, cols) view `v` broadcast to
    `batch`, or None when no such description exists (then the view is copied first)."""
    rows, cols = v.shape[-2:]
    sr, sc = v.strides[-2:]
    if (cols == 1 or sc == 1) and (rows == 1 or sr >= cols):
        trans, ld = 0, (sr if rows > 1 else cols)
    elif (rows == 1 or sr == 1) and (cols == 1 or sc >= rows):
        trans, ld = 1, (sc if cols > 1 else rows)
    else:
        return None
    ld = max(ld, 1)
    # One stride must walk the flattened batch: stride[d] = s * prod(batch[d+1:]) on every axis
    # of length > 1 (all 0: broadcast).
    bstr = broadcast_strides(View(v.buf, 0, v.shape[:-2], v.strides[:-2], v.dtype), batch)
    live = [(d, s) for d, s in enumerate(bstr) if batch[d] > 1]
    if not live or all(s == 0 for _, s in live):
        return trans, ld, 0
    unit = live[-1][1]  # the axes after the last live one have length 1
    if any(s != unit * math.prod(batch[d + 1:]) for d, s in live):
        return None
    return trans, ld, unit


@lowering("matmul")
def _matmul(lw: Lowerer, st: Step) -> bool:
    var = st.var
    if var.dtype not in FLOATS:
        return False
    batch = var.shape[:-2]
    m, n = var.shape[-2:]
    nb = math.prod(batch)
    ops = []
    for s in st.inputs:
        v = lw.views[s]
        desc = _matrix(v, batch)
        if desc is None:  # materialise, broadcast to the full batch
            full = lw.scratch(batch + v.shape[-2:], v.dtype)
            lw.copy(View(v.buf, v.offset, full.shape, tuple(broadcast_strides(v, full.shape)), v.dtype), full)
            v = full
            desc = _matrix(v, batch)
        ops.append((v, desc))
    (a, (ta, lda, sa)), (b, (tb, ldb, sb)) = ops
    k = a.shape[-1]
    out = lw.value(var)
    if out.size:
        bsz, mm, sc = nb, m, m * n
        # B shared by the whole batch and A's matrices stacked densely: one tall product.
        if nb > 1 and sb == 0 and ta == 0 and sa == m * lda and lda == k:
            bsz, mm, sa, sc = 1, nb * m, 0, 0
        lw.emit(GEMM, [lw.operand(a), lw.operand(b)], [lw.operand(out)],
               [DTYPE_CODE[var.dtype], ta, tb, bsz, mm, n, k, lda, sa, ldb, sb, n, sc, 0])
    lw.views[st.out] = out
    return True


def _swap_last(v: View) -> View:
    """v with its last two axes exchanged (no data moves)."""
    return View(v.buf, v.offset, v.shape[:-2] + v.shape[:-3:-1], v.strides[:-2] + v.strides[:-3:-1], v.dtype)


def _gemm_2d(lw: Lowerer, st: Step, a: View, b: View, out: View, bias: View | None = None, act: int = 0,
             scale: tuple[View, float, float] | None = None) -> None:
    """out = act(a @ b + bias) for matrix views a (m, k) and b (k, n), read in place where GEMM
    can (a transposed view is a trans flag), else copied first; with `scale` (s, alpha, beta),
    out = alpha * s * a @ b + beta * out, s read at run time."""
    ops = []
    for v in (a, b):
        desc = _matrix(v, ())
        if desc is None:
            d = lw.scratch(v.shape, v.dtype)
            lw.copy(v, d)
            v, desc = d, _matrix(d, ())
        ops.append((v, desc))
    (a, (ta, lda, _)), (b, (tb, ldb, _)) = ops
    (m, k), n = a.shape, b.shape[1]
    ins = [lw.operand(a), lw.operand(b)] + ([lw.operand(bias)] if bias is not None else [])
    ins += [lw.operand(scale[0])] if scale is not None else []
    ldc = _matrix(out, ())[1]
    lw.emit(GEMM, ins, [lw.operand(out)], [DTYPE_CODE[out.dtype], ta, tb, 1, m, n, k, lda, 0, ldb, 0, ldc, 0, act],
            scale[1:] if scale is not None else ())


def _rows_out(v: View) -> bool:
    """Whether GEMM can write matrix view v: rows with unit stride, ldc apart."""
    d = _matrix(v, ()) if len(v.shape) == 2 else None
    return d is not None and d[0] == 0


@lowering("gemm")
def _gemm(lw: Lowerer, st: Step) -> bool:
    a, b = (lw.views[s] for s in st.inputs)
    a = _swap_last(a) if st.attrs["trans_a"] else a
    b = _swap_last(b) if st.attrs["trans_b"] else b
    fold = lw.sgd_folds.get(st.out)
    if fold is not None and id(fold.update) not in lw.host_steps:
        # p - lr * (a @ b) as one product into the update's buffer: c = p, then c -= lr * a @ b.
        upd = fold.update
        out = lw.value(upd.var.shape, upd.var.dtype)
        lw.copy(lw.views[fold.x], out)
        lr = lw.dense(fold.lr) if fold.lr is not None else lw.const(np.asarray(fold.lr_const, out.dtype))
        _gemm_2d(lw, st, a, b, out, scale=(lr, -1.0, 1.0))
        lw.folded[upd.out] = out
        return True
    out = lw.value(st.var, strided_ok=_rows_out)
    if out.size:
        _gemm_2d(lw, st, a, b, out)
    lw.views[st.out] = out
    return True


# fc_act codes of the activations GEMM applies in its epilogue (relu there is where(y > 0, y, 0),
# NaN gives 0, as the dense op's reference).
ACT_CODE = {"identity": 0, "relu": 1, "sigmoid": 2, "tanh": 3}
IN_FULL, IN_SCALAR, IN_STRIDED = 0, 1, 4  # fc_fused_mode


@lowering("dense")
def _dense(lw: Lowerer, st: Step) -> bool:
    x, w = (lw.views[s] for s in st.inputs[:2])
    bias = lw.dense(st.inputs[2])
    x = _swap_last(x) if st.attrs["trans_a"] else x
    w = _swap_last(w) if st.attrs["trans_b"] else w
    out = lw.value(st.var, strided_ok=_rows_out)
    lw.views[st.out] = out
    if out.size:
        _gemm_2d(lw, st, x, w, out, bias, ACT_CODE[st.attrs["act"]])
    return True


def _row_stride(v: View) -> int | None:
    """ld when the view is rows of its last axis, contiguous, ld elements apart (a column block
    of a wider matrix, such as one gate's block of a fused GEMM result), else None."""
    if len(v.shape) < 2 or v.size == 0 or (v.shape[-1] > 1 and v.strides[-1] != 1):
        return None
    lead = [(n, s) for n, s in zip(v.shape[:-1], v.strides[:-1]) if n > 1]
    if not lead:
        return None
    ld = expect = lead[-1][1]
    for n, s in reversed(lead):
        if s != expect:
            return None
        expect *= n
    return ld if ld >= v.shape[-1] else None


def _fused_out(v: View) -> bool:
    """Whether fc_fused_ew can write view v: rows of its last axis, evenly apart."""
    return not v.shape or _row_stride(v) is not None


@lowering("fused_ew")
def _fused_ew(lw: Lowerer, st: Step) -> bool:
    if st.out in lw.folded:  # computed by the weight gradient's GEMM (plan_sgd_folds)
        lw.views[st.out] = lw.folded[st.out]
        return True
    a = st.attrs
    out = lw.value(st.var, strided_ok=_fused_out if "fused_out_ld" in lw.forms else False)
    ins, modes, lds = [], [int(m) for m in a["modes"]], []
    for j, s in enumerate(st.inputs):
        v = lw.views[s]
        ld = _row_stride(v) if modes[j] == IN_FULL and not v.is_dense() else None
        if ld is None:
            v = lw.dense(s)
        else:  # read in place (fc_fused_ew's STRIDED mode) instead of copied
            modes[j] = IN_STRIDED
            lds.append(ld)
        ins.append(v)
    if out.size:
        code = [int(c) for ins4 in a["program"] for c in ins4]
        cols = out.shape[-1] if out.shape else 1
        out_ld = [] if out.is_dense() else [_row_stride(out)]  # a column block of its frame
        lw.emit(FUSED_EW, [lw.operand(v) for v in ins], [lw.operand(out)],
               [DTYPE_CODE[out.dtype], out.size, cols, len(a["program"]), *modes, *code, *lds, *out_ld],
               [float(c) for c in a["consts"]])
    lw.views[st.out] = out
    return True


# -- reductions ----------------------------------------------------------------------------------
@lowering("sum", "max")
def _reduce(lw: Lowerer, st: Step) -> bool:
    x = lw.views[st.inputs[0]]
    axes = set(_norm_axes(st.op, st.attrs["axes"], len(x.shape)))
    out = lw.value(st.var)
    lw.views[st.out] = out
    if out.size == 0:
        return True
    # Length-1 axes are neither here nor there; merge neighbours of the same kind.
    groups: list[tuple[bool, int, list[int]]] = []  # (reduced, length, axes)
    for d, size in enumerate(x.shape):
        if size == 1:
            continue
        r = d in axes
        if groups and groups[-1][0] == r:
            groups[-1] = (r, groups[-1][1] * size, groups[-1][2] + [d])
        else:
            groups.append((r, size, [d]))
    kept = [d for d in range(len(x.shape)) if d not in axes and x.shape[d] > 1]
    red = [d for d in range(len(x.shape)) if d in axes and x.shape[d] > 1]
    one_block = sum(1 for g in groups if g[0]) <= 1
    order = [d for d in range(len(x.shape)) if x.shape[d] > 1] if one_block else kept + red
    src = View(x.buf, x.offset, tuple(x.shape[d] for d in order), tuple(x.strides[d] for d in order), x.dtype)
    if [g[0] for g in groups] == [True, False, True] and x.is_dense() and x.dtype in FLOATS:
        # Outer and inner axes reduced (a conv bias gradient: sum over N, H, W of NCHW): the
        # inner run first, then the outer axis, which reads x once instead of permuting it.
        (_, a, _), (_, k, _), (_, b, _) = groups
        part = lw.scratch((a, k), x.dtype)
        code = [DTYPE_CODE[x.dtype], REDUCE_CODE[st.op]]
        lw.emit(REDUCE, [lw.operand(x)], [part.buf], [*code, a * k, b, 1])
        lw.emit(REDUCE, [lw.operand(part)], [lw.operand(out)], [*code, 1, a, k])
        return True
    if len(groups) == 2 and groups[0][0] and not groups[1][0] and len(src.shape) == 2 and not src.is_dense():
        ld = _row_stride(src)  # a sum over the rows of a column block (a bias gradient in a frame)
        if ld is not None and "reduce_ld" in lw.forms:
            lw.emit(REDUCE, [lw.operand(src)], [lw.operand(out)],
                    [DTYPE_CODE[x.dtype], REDUCE_CODE[st.op], 1, src.shape[0], src.shape[1], ld])
            return True
    if not (src.is_dense() and order == sorted(order)):
        tmp = lw.scratch(src.shape, x.dtype)
        lw.copy(src, tmp)
        src = tmp
    if one_block:
        first = next((i for i, g in enumerate(groups) if g[0]), len(groups))
        outer = math.prod(g[1] for g in groups[:first])
        redn = groups[first][1] if first < len(groups) else 1
        inner = math.prod(g[1] for g in groups[first + 1:])
    else:
        outer, redn, inner = math.prod(x.shape[d] for d in kept), math.prod(x.shape[d] for d in red), 1
    lw.emit(REDUCE, [lw.operand(src)], [lw.operand(out)], [DTYPE_CODE[x.dtype], REDUCE_CODE[st.op], outer, redn, inner])
    return True


# -- indexing ------------------------------------------------------------------------------------
@lowering("gather")
def _gather(lw: Lowerer, st: Step) -> bool:
    table, idx = lw.dense(st.inputs[0]), lw.dense(st.inputs[1])
    out = lw.value(st.var)
    if out.size:
        lw.emit(GATHER, [lw.operand(table), lw.operand(idx)], [lw.operand(out)],
               [DTYPE_CODE[table.dtype], idx.size, table.shape[0], math.prod(table.shape[1:])])
    lw.views[st.out] = out
    return True


@lowering("scatter_add")
def _scatter_add(lw: Lowerer, st: Step) -> bool:
    if st.var.dtype == BOOL:
        return False
    src, idx = lw.dense(st.inputs[0]), lw.dense(st.inputs[1])
    out = lw.value(st.var)
    if out.size:
        lw.emit(SCATTER_ADD, [lw.operand(src), lw.operand(idx)], [lw.operand(out)],
               [DTYPE_CODE[src.dtype], idx.size, st.var.shape[0], math.prod(st.var.shape[1:])])
    lw.views[st.out] = out
    return True


@lowering("one_hot")
def _one_hot(lw: Lowerer, st: Step) -> bool:
    labels = lw.dense(st.inputs[0])
    out = lw.value(st.var)
    if out.size:
        lw.emit(ONE_HOT, [lw.operand(labels)], [lw.operand(out)], [DTYPE_CODE[out.dtype], labels.size, st.attrs["n"]])
    lw.views[st.out] = out
    return True


# -- sliding windows -----------------------------------------------------------------------------
def _window_ints(dtype, image_shape, attrs) -> list[int]:
    nd = len(attrs["kernel"])
    pads = [tuple(p) for p in attrs["padding"]]
    return [DTYPE_CODE[dtype], nd, image_shape[0], image_shape[1], *image_shape[2:], *attrs["kernel"],
            *attrs["stride"], *(lo for lo, _ in pads), *(hi for _, hi in pads), *attrs["dilation"]]


@lowering("unfold")
def _unfold(lw: Lowerer, st: Step) -> bool:
    x = lw.dense(st.inputs[0])
    out = lw.value(st.var)
    if out.size:
        lw.emit(UNFOLD, [lw.operand(x)], [lw.operand(out)], _window_ints(x.dtype, x.shape, st.attrs),
                [st.attrs["pad_value"]])
    lw.views[st.out] = out
    return True


@lowering("fold")
def _fold(lw: Lowerer, st: Step) -> bool:
    if st.var.dtype == BOOL:
        return False
    cols = lw.dense(st.inputs[0])
    out = lw.value(st.var)
    if out.size:
        lw.emit(FOLD, [lw.operand(cols)], [lw.operand(out)], _window_ints(out.dtype, out.shape, st.attrs))
    lw.views[st.out] = out
    return True


# -- random numbers ------------------------------------------------------------------------------
@lowering("random_uniform")
def _random_uniform(lw: Lowerer, st: Step) -> bool:
    salt = int(st.attrs["salt"])
    if not 0 <= salt < 2**64:
        return False  # the reference reports the bad salt
    seed = lw.dense(st.inputs[0])
    out = lw.value(st.var)
    if out.size:
        # The unsigned salt travels as an int64 immediate (two's complement).
        signed = salt - 2**64 if salt >= 2**63 else salt
        lw.emit(PHILOX, [lw.operand(seed)], [lw.operand(out)], [DTYPE_CODE[out.dtype], signed, out.size])
    lw.views[st.out] = out
    return True


def decode(code) -> list[tuple[int, int, list[int], int]]:
    """(opcode, number of inputs, integer immediates, number of double immediates) of each
    instruction of an executor program."""
    out, pc, code = [], 0, [int(c) for c in code]
    while pc < len(code):
        op, n_in, n_out, n_int, n_dbl = code[pc:pc + 5]
        ipos = pc + 5 + n_in + n_out
        out.append((op, n_in, code[ipos:ipos + n_int], n_dbl))
        pc = ipos + n_int
    return out


def instructions(code) -> list[tuple[int, int, list[int]]]:
    """(opcode, number of inputs, integer immediates) of each instruction of an executor program."""
    return [(op, n_in, ints) for op, n_in, ints, _ in decode(code)]


def opcodes_of(code) -> list[int]:
    """The opcode of each instruction of an executor program."""
    return [op for op, _, _ in instructions(code)]


def lower(plan: Plan, supports: Callable[[int, int, list[int], int], bool] | None = None,
          elide: bool = True, prepack: bool = True) -> Lowered:
    """Lower `plan`; with `supports(opcode, n_inputs, ints, n_dbls)` (whether a backend can run an instruction),
    every step whose lowering emits an instruction it cannot run is lowered again as a CALLBACK
    (its reference implementation on the host), so a backend never meets an instruction it lacks.
    `elide=False` turns off concat elision (`plan_frames`) and SGD folding (`plan_sgd_folds`):
    the straightforward program, for comparisons; `prepack=False` turns off packing GEMM operands
    that several products read (GEMM_PACK)."""
    host: frozenset[int] = frozenset()
    forms = FORMS if supports is None else frozenset(f for f, probe in FORM_PROBES.items() if supports(*probe))
    prepack = prepack and _native.available and (supports is None or supports(GEMM_PACK, 1, [], 0))
    while True:
        low = Lowerer(plan, host, elide, forms, prepack).lower()
        if supports is None:
            return low
        bad = {id(st) for (op, n_in, ints, n_dbl), st in zip(decode(low.code), low.instr_steps)
               if st is not None and not supports(op, n_in, ints, n_dbl)}
        if bad <= host:  # emitted outside any rule: left for the backend to report
            return low
        host |= bad


from . import lowering_conv, lowering_rnn  # noqa: E402,F401  (register the conv and LSTM ops' lowering)
