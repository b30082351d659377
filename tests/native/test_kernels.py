"""The generic C kernels (csrc/include/flexcore/kernels.h) through the raw C ABI (cffi), against the
op registry's reference implementations (flexcore/ir/ops.py: the specification) and numpy.

Arrays are handed over as (pointer, element strides), so non-contiguous and broadcast operands
are numpy views passed as they are. Results are compared bit for bit wherever IEEE arithmetic
defines them; C-library math (exp, log, pow...) is compared with a float64 reference within a few
ulps, and sums within the accuracy kernels.h documents.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexcore import native_cabi
from flexcore.ir.core import REGISTRY

ffi = native_cabi.ffi

FLOATS = [np.float32, np.float64]
SIZES = [0, 1, 3, 17, 127]
FC_OK = 0
HYPOTHESIS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def _codes(enum: str, prefix: str) -> dict[str, int]:
    """An enum of the cdef as {"name": code}, without its _COUNT sentinel."""
    return {
        name.removeprefix(prefix).lower(): code
        for name, code in ffi.typeof(enum).relements.items()
        if not name.endswith("_COUNT")
    }


_FC_DTYPE = _codes("fc_dtype", "FC_")
DTYPES = {np.dtype(t): _FC_DTYPE[name] for t, name in
          [(np.float32, "f32"), (np.float64, "f64"), (np.int64, "i64"), (np.bool_, "bool")]}
UNARY = _codes("fc_unary_op", "FC_UNARY_")
BINARY = _codes("fc_binary_op", "FC_BINARY_")
COMPARE = _codes("fc_compare_op", "FC_CMP_")
REDUCE = _codes("fc_reduce_op", "FC_REDUCE_")
EW = _codes("fc_ew_code", "FC_EW_")


@pytest.fixture(scope="module")
def lib(native):
    return native_cabi.lib()


# ---------------------------------------------------------------------------------------- helpers


def ptr(a: np.ndarray | None):
    """The address of a's first element (a view's, not its base's); the caller keeps a alive."""
    return ffi.NULL if a is None else ffi.cast("void*", a.ctypes.data)


def i64s(values) -> object:
    return ffi.new("int64_t[]", [int(v) for v in values])


def estrides(a: np.ndarray) -> list[int]:
    """a's strides in elements (the kernels' unit)."""
    assert all(s >= 0 and s % a.itemsize == 0 for s in a.strides), a.strides
    return [s // a.itemsize for s in a.strides]


def ok(lib, status: int) -> None:
    assert status == FC_OK, f"status {status}: {ffi.string(lib.fc_strerror(status)).decode()}"


def code(dtype) -> int:
    """The fc_dtype code of a numpy dtype (or scalar type)."""
    return DTYPES[np.dtype(dtype)]


def rng_values(rng, shape, dtype, specials: bool = False) -> np.ndarray:
    """Random values of a dtype; with `specials`, some are 0, -0, +-inf, NaN or 1."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.asarray(rng.random(shape) < 0.5)
    if dtype == np.int64:
        return np.asarray(rng.integers(-50, 50, shape))
    x = np.asarray(rng.normal(0, 3, shape)).astype(dtype)
    if specials and x.size:
        pool = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0], dtype)
        mask = rng.random(shape) < 0.15
        x[mask] = rng.choice(pool, int(mask.sum()))
    return x


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    """Equal values, dtypes and shapes; NaN matches NaN and a zero's sign must match."""
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
    np.testing.assert_array_equal(got, want)
    if got.dtype.kind == "f":
        np.testing.assert_array_equal(np.signbit(got[got == 0]), np.signbit(want[want == 0]))


def assert_ulps(got: np.ndarray, want64: np.ndarray, dtype, ulps: int = 4) -> None:
    """got (dtype) within `ulps` ulps of the float64 reference, same non-finite values."""
    with np.errstate(all="ignore"):
        ref = want64.astype(dtype)
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(got[~finite], ref[~finite])
    if np.dtype(dtype) == np.float64:
        np.testing.assert_allclose(got[finite], ref[finite], rtol=1e-12, atol=1e-300)
    else:
        err = np.abs(got[finite].astype(np.float64) - want64[finite])
        assert (err <= ulps * np.spacing(np.abs(ref[finite])).astype(np.float64)).all()


# ------------------------------------------------------------------------- kernel call wrappers


def ew_binary(lib, op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    shape = np.broadcast_shapes(a.shape, b.shape)
    av, bv = np.broadcast_to(a, shape), np.broadcast_to(b, shape)
    y = np.empty(shape, a.dtype)
    ok(lib, lib.fc_ew_binary(code(a.dtype), BINARY[op], len(shape), i64s(shape), ptr(av), i64s(estrides(av)),
                             ptr(bv), i64s(estrides(bv)), ptr(y)))
    return y


def ew_compare(lib, op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    shape = np.broadcast_shapes(a.shape, b.shape)
    av, bv = np.broadcast_to(a, shape), np.broadcast_to(b, shape)
    y = np.empty(shape, np.bool_)
    ok(lib, lib.fc_ew_compare(code(a.dtype), COMPARE[op], len(shape), i64s(shape), ptr(av), i64s(estrides(av)),
                              ptr(bv), i64s(estrides(bv)), ptr(y)))
    return y


def ew_where(lib, c: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    shape = np.broadcast_shapes(c.shape, a.shape, b.shape)
    cv, av, bv = (np.broadcast_to(v, shape) for v in (c, a, b))
    y = np.empty(shape, a.dtype)
    ok(lib, lib.fc_ew_where(code(a.dtype), len(shape), i64s(shape), ptr(cv), i64s(estrides(cv)), ptr(av),
                            i64s(estrides(av)), ptr(bv), i64s(estrides(bv)), ptr(y)))
    return y


def ew_unary(lib, op: str, x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    ok(lib, lib.fc_ew_unary(code(x.dtype), UNARY[op], x.size, ptr(x), ptr(y)))
    return y


def cast(lib, x: np.ndarray, dtype) -> np.ndarray:
    y = np.empty(x.shape, dtype)
    ok(lib, lib.fc_cast(code(x.dtype), code(dtype), x.size, ptr(x), ptr(y)))
    return y


def copy_into(lib, dst: np.ndarray, src: np.ndarray) -> None:
    """dst[...] = src (same shape; src may be any view, dst any non-overlapping view)."""
    assert dst.shape == src.shape and dst.itemsize == src.itemsize
    ok(lib, lib.fc_copy_strided(src.itemsize, src.ndim, i64s(src.shape), ptr(src), i64s(estrides(src)), ptr(dst),
                                i64s(estrides(dst))))


def reduce(lib, op: str, x: np.ndarray, outer: int, red: int, inner: int) -> np.ndarray:
    out_dtype = np.int64 if op == "sum" and x.dtype == np.bool_ else x.dtype
    y = np.empty((outer, inner), out_dtype)
    ok(lib, lib.fc_reduce(code(x.dtype), REDUCE[op], outer, red, inner, ptr(x), ptr(y)))
    return y


def window_args(kernel, stride, padding, dilation):
    return (i64s(kernel), i64s(stride), i64s([p[0] for p in padding]), i64s([p[1] for p in padding]),
            i64s(dilation))


def unfold(lib, x, kernel, stride, padding, dilation, pad_value=0.0):
    nd = len(kernel)
    spatial = x.shape[2:]
    outs = [(s + lo + hi - d * (k - 1) - 1) // st_ + 1
            for s, k, st_, (lo, hi), d in zip(spatial, kernel, stride, padding, dilation)]
    cols = np.empty(x.shape[:2] + tuple(outs) + tuple(kernel), x.dtype)
    ok(lib, lib.fc_unfold(code(x.dtype), nd, x.shape[0], x.shape[1], i64s(spatial),
                          *window_args(kernel, stride, padding, dilation), pad_value, ptr(x), ptr(cols)))
    return cols


def fold(lib, cols, shape, kernel, stride, padding, dilation):
    x = np.empty(shape, cols.dtype)
    ok(lib, lib.fc_fold(code(cols.dtype), len(kernel), shape[0], shape[1], i64s(shape[2:]),
                        *window_args(kernel, stride, padding, dilation), ptr(cols), ptr(x)))
    return x


class Fused:
    """The arguments of one fc_fused_ew call, kept alive together."""

    def __init__(self, inputs, modes, program, consts):
        self.inputs = [np.ascontiguousarray(x) for x in inputs]
        self.ptrs = ffi.new("void*[]", [ptr(x) for x in self.inputs] or [ffi.NULL])
        self.modes = ffi.new("int32_t[]", [int(m) for m in modes] or [0])
        self.lens = ffi.new("int64_t[]", [x.size for x in self.inputs] or [0])
        self.code = ffi.new("int32_t[]", [int(v) for ins in program for v in ins] or [0])
        self.consts = ffi.new("double[]", [float(c) for c in consts] or [0.0])
        self.n_instr = len(program)
        self.n_consts = len(consts)

    def call(self, lib, dtype, shape, out=None, n_inputs=None, n_instr=None, cols=None, instructions=None):
        n = math.prod(shape)
        cols = (shape[-1] if shape else 1) if cols is None else cols
        if out is None:
            out = np.empty(shape, dtype)
        status = lib.fc_fused_ew(code(dtype), len(self.inputs) if n_inputs is None else n_inputs,
                                 self.ptrs, self.modes, self.lens, n, cols,
                                 self.n_instr if n_instr is None else n_instr,
                                 self.code if instructions is None else instructions, self.n_consts, self.consts,
                                 ptr(out))
        return status, out


# ------------------------------------------------------------------------------- elementwise

BROADCAST_PAIRS = [
    ((17,), (17,)),
    ((3, 127), (3, 127)),
    ((0,), (0,)),
    ((4, 0, 3), (4, 1, 3)),
    ((), ()),
    ((1,), (1,)),
    ((), (3, 17)),  # a scalar
    ((3, 17), ()),
    ((5, 17), (17,)),  # a row
    ((5, 17), (1, 17)),
    ((5, 17), (5, 1)),  # a column
    ((2, 1, 4), (3, 1)),
    ((3, 1, 5), (1, 4, 1)),
    ((2, 3, 4, 5), (3, 1, 5)),
    ((1, 127), (3, 1)),
]

BINARY_DTYPE_OPS = {
    np.float32: ["add", "sub", "mul", "div", "pow", "maximum", "minimum"],
    np.float64: ["add", "sub", "mul", "div", "pow", "maximum", "minimum"],
    np.int64: ["add", "sub", "mul", "maximum", "minimum"],
    np.bool_: ["add", "mul", "maximum", "minimum"],
}


def _reference_binary(op, a, b):
    if a.dtype == np.bool_:  # ops.py allows these on bool; numpy's bool ufuncs are the reference
        return {"add": np.add, "mul": np.multiply, "maximum": np.maximum, "minimum": np.minimum}[op](a, b)
    return REGISTRY[op].impl(a, b)


@pytest.mark.parametrize("shapes", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("dtype", list(BINARY_DTYPE_OPS), ids=lambda d: np.dtype(d).name)
def test_ew_binary_matches_registry(lib, dtype, shapes):
    rng = np.random.default_rng(len(shapes[0]) * 100 + len(shapes[1]))
    a = rng_values(rng, shapes[0], dtype, specials=True)
    b = rng_values(rng, shapes[1], dtype, specials=True)
    for op in BINARY_DTYPE_OPS[dtype]:
        with np.errstate(all="ignore"):
            want = _reference_binary(op, a, b)
            got = ew_binary(lib, op, a, b)
        if op == "pow":  # C pow() against the float64 result
            with np.errstate(all="ignore"):
                want64 = np.power(a.astype(np.float64), b.astype(np.float64))
            assert_ulps(got, np.asarray(want64), dtype)
        else:
            assert_same(got, np.asarray(want, dtype=got.dtype))


@pytest.mark.parametrize("dtype", FLOATS)
def test_ew_binary_non_contiguous_and_in_place(lib, dtype):
    rng = np.random.default_rng(7)
    base = rng_values(rng, (20, 34), dtype, specials=True)
    a = base.T[::3, 1:12:2]  # (12, 6), transposed and sliced: strides (3, 68) elements
    b = rng_values(rng, (6, 24), dtype)[:, ::2].T  # (12, 6), strides (2, 24)
    assert not a.flags.c_contiguous and not b.flags.c_contiguous
    with np.errstate(all="ignore"):
        for op in ("add", "mul", "maximum"):
            assert_same(ew_binary(lib, op, a, b), REGISTRY[op].impl(a, b))
    # y may alias an operand that is contiguous with the output's shape
    c = np.ascontiguousarray(a)
    want = REGISTRY["sub"].impl(c, b)
    ok(lib, lib.fc_ew_binary(code(c.dtype), BINARY["sub"], 2, i64s(c.shape), ptr(c), ffi.NULL, ptr(b),
                             i64s(estrides(b)), ptr(c)))
    assert_same(c, want)


@st.composite
def broadcast_operands(draw):
    """An output shape and two operand views broadcasting to it, possibly sliced/transposed."""
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=ndim, max_size=ndim)))
    operands = []
    for _ in range(2):
        drop = draw(st.integers(0, ndim))  # leading axes the operand lacks
        own = tuple(1 if draw(st.booleans()) else s for s in shape[drop:])
        step = draw(st.integers(1, 3))
        transpose = draw(st.booleans()) and len(own) >= 2
        operands.append((own, step, transpose))
    return shape, operands, draw(st.integers(0, 2**32 - 1))


def _make_view(rng, own, step, transpose, dtype):
    """An array of shape `own`, as a view with non-unit strides when step > 1 or transposed."""
    if transpose:
        own_t = own[:-2] + (own[-1], own[-2])
        big = rng_values(rng, tuple(s * step for s in own_t), dtype, specials=True)
        view = big[tuple(slice(None, None, step) for _ in own_t)]
        return np.swapaxes(view, -1, -2)
    big = rng_values(rng, tuple(s * step for s in own), dtype, specials=True)
    return big[(*(slice(None, None, step) for _ in own), ...)]  # a view, even of rank 0


@HYPOTHESIS
@given(case=broadcast_operands(), dtype=st.sampled_from(FLOATS), op=st.sampled_from(["add", "sub", "mul", "div",
                                                                                  "maximum", "minimum"]))
def test_ew_binary_hypothesis(lib, case, dtype, op):
    shape, operands, seed = case
    rng = np.random.default_rng(seed)
    a, b = (_make_view(rng, *o, dtype) for o in operands)
    with np.errstate(all="ignore"):
        want = np.broadcast_to(REGISTRY[op].impl(a, b), shape).copy()
    assert_same(ew_binary(lib, op, np.broadcast_to(a, shape), b), want)


@pytest.mark.parametrize("shapes", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: d.name)
def test_ew_compare_matches_registry(lib, dtype, shapes):
    rng = np.random.default_rng(3)
    a = rng_values(rng, shapes[0], dtype, specials=True)
    b = rng_values(rng, shapes[1], dtype, specials=True)
    if a.size and b.size and dtype != np.bool_:  # ties
        a.reshape(-1)[0] = b.reshape(-1)[0]
    for op in COMPARE:
        assert_same(ew_compare(lib, op, a, b), np.asarray(REGISTRY[op].impl(a, b)))


def test_ew_compare_bool_bytes_other_than_one(lib):
    """A bool byte other than 0/1 reads as true (numpy itself never makes one)."""
    a = np.array([2, 0, 1, 255], np.uint8).view(np.bool_)
    b = np.array([1, 0, 3, 0], np.uint8).view(np.bool_)
    assert_same(ew_compare(lib, "eq", a, b), np.array([True, True, True, False]))


@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: d.name)
@pytest.mark.parametrize(
    "shapes",
    [((17,), (17,), (17,)), ((0, 3), (0, 3), (3,)), ((5, 17), (5, 17), ()), ((5, 17), (), (5, 17)),
     ((3, 1, 4), (1, 5, 1), (5, 4)), ((), (), ()), ((127,), (1,), (127,))],
    ids=str,
)
def test_ew_where_matches_registry(lib, dtype, shapes):
    rng = np.random.default_rng(11)
    c = rng.random(shapes[0]) < 0.5
    a = rng_values(rng, shapes[1], dtype, specials=True)
    b = rng_values(rng, shapes[2], dtype, specials=True)
    assert_same(ew_where(lib, c, a, b), np.asarray(REGISTRY["where"].impl(c, a, b)))
    # a transposed condition
    ct = (rng.random(shapes[0][::-1]) < 0.5).T
    assert_same(ew_where(lib, ct, a, b), np.asarray(REGISTRY["where"].impl(ct, a, b)))


UNARY_SAMPLES = {
    "neg": (-10, 10), "exp": (-20, 20), "log": (1e-6, 100), "log1p": (-0.999, 10), "sqrt": (0, 100),
    "abs": (-10, 10), "sigmoid": (-30, 30), "tanh": (-10, 10), "arctan": (-50, 50), "relu": (-10, 10),
    "sign": (-10, 10), "step": (-10, 10),
}
EXACT_UNARY = {"neg", "abs", "sqrt", "relu", "sign", "step"}


def test_every_unary_op_has_a_sample():
    assert set(UNARY) == set(UNARY_SAMPLES)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op", sorted(UNARY_SAMPLES))
def test_ew_unary_matches_registry(lib, native, op, dtype, n):
    lo, hi = UNARY_SAMPLES[op]
    rng = np.random.default_rng(n)
    x = rng.uniform(lo, hi, n).astype(dtype)
    if n >= 3:
        x[:3] = [0.0, -0.0, np.nan]
    got = ew_unary(lib, op, x)
    np.testing.assert_array_equal(got, native.unary(op, x))  # the same kernel as fc_unary_*
    ref = (lambda v: np.where(v > 0, v, np.zeros((), v.dtype))) if op == "relu" else REGISTRY[op].impl
    with np.errstate(all="ignore"):
        if op in EXACT_UNARY:
            assert_same(got, np.asarray(ref(x), dtype))
        else:
            assert_ulps(got, ref(x.astype(np.float64)), dtype)


def test_ew_unary_int64_neg_wraps(lib):
    x = np.array([0, 5, -7, np.iinfo(np.int64).max, np.iinfo(np.int64).min], np.int64)
    assert_same(ew_unary(lib, "neg", x), np.negative(x))  # numpy wraps INT64_MIN too
    y = np.empty_like(x)
    assert lib.fc_ew_unary(code(x.dtype), UNARY["exp"], x.size, ptr(x), ptr(y)) == lib.FC_ERR_DTYPE


@pytest.mark.parametrize("src", list(DTYPES), ids=lambda d: d.name)
@pytest.mark.parametrize("dst", list(DTYPES), ids=lambda d: d.name)
def test_cast_matches_registry(lib, src, dst):
    rng = np.random.default_rng(5)
    if src.kind == "f":
        x = np.concatenate([rng.normal(0, 1e3, 200), [0.0, -0.0, 0.5, -0.5, 1.5, -2.5, 1e15]]).astype(src)
    else:
        x = rng_values(rng, (200,), src)
    if src == np.int64:
        x[:3] = [2**53 + 1, -(2**62) - 1, 2**24 + 1]  # round to nearest in float32/float64
    assert_same(cast(lib, x, dst), REGISTRY["cast"].impl(x, dtype=dst.str))


@pytest.mark.parametrize("src", FLOATS)
def test_cast_float_to_int64_saturates(lib, src):
    """Where numpy's result is undefined, the kernel saturates and maps NaN to 0 (kernels.h)."""
    big = 2.0**63
    x = np.array([np.nan, np.inf, -np.inf, big, -big, 4 * big, -4 * big, big / 2, -1.9, 1.9], src)
    want = [0, 2**63 - 1, -(2**63), 2**63 - 1, -(2**63), 2**63 - 1, -(2**63), 2**62, -1, 1]
    np.testing.assert_array_equal(cast(lib, x, np.int64), np.array(want, np.int64))
    assert_same(cast(lib, np.array([np.nan, -0.0, np.inf], src), np.bool_), np.array([True, False, True]))
    if src == np.float64:
        assert_same(cast(lib, np.array([1e300, -1e300]), np.float32), np.array([np.inf, -np.inf], np.float32))


# ----------------------------------------------------------------------------- data movement

ELEM_DTYPES = [np.uint8, np.float16, np.float32, np.float64, np.dtype("V3"), np.dtype("V16")]


def _random_bytes(rng, shape, dtype):
    dtype = np.dtype(dtype)
    raw = rng.integers(0, 256, math.prod(shape) * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


@st.composite
def strided_copies(draw):
    ndim = draw(st.integers(0, 5))
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim)))
    perm = draw(st.permutations(range(ndim)))
    steps = tuple(draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim)))
    broadcast = tuple(draw(st.lists(st.booleans(), min_size=ndim, max_size=ndim)))
    dst_steps = tuple(draw(st.lists(st.integers(1, 2), min_size=ndim, max_size=ndim)))
    return shape, perm, steps, broadcast, dst_steps, draw(st.sampled_from(ELEM_DTYPES)), draw(st.integers(0, 2**32))


@HYPOTHESIS
@given(case=strided_copies())
def test_copy_strided_hypothesis(lib, case):
    """src: a permuted, sliced, partly broadcast view; dst: a strided view into a larger buffer."""
    shape, perm, steps, broadcast, dst_steps, dtype, seed = case
    rng = np.random.default_rng(seed)
    # build src as a permutation of a sliced base, then broadcast chosen axes (stride 0)
    src_shape_p = tuple(1 if broadcast[perm[d]] else shape[perm[d]] for d in range(len(shape)))
    base = _random_bytes(rng, tuple(s * st_ for s, st_ in zip(src_shape_p, steps)), dtype)
    sliced = base[(*(slice(None, None, st_) for st_ in steps), ...)]
    src = np.broadcast_to(np.transpose(sliced, np.argsort(perm)), shape)
    big = _random_bytes(rng, tuple(s * st_ for s, st_ in zip(shape, dst_steps)), dtype)
    before = big.copy()
    dst = big[(*(slice(None, None, st_) for st_ in dst_steps), ...)]
    copy_into(lib, dst, src)
    assert dst.tobytes() == np.ascontiguousarray(src).tobytes()
    untouched = np.ones(big.shape, bool)
    untouched[tuple(slice(None, None, st_) for st_ in dst_steps)] = False
    assert big[untouched].tobytes() == before[untouched].tobytes()


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64, np.dtype("V12")], ids=str)
@pytest.mark.parametrize("shape", [(300, 200), (127, 65), (17, 3), (1, 500), (3, 40, 33)], ids=str)
def test_copy_strided_transpose(lib, dtype, shape):
    """2-D permutes (and batched ones) take the blocked transpose path; results equal numpy's."""
    x = _random_bytes(np.random.default_rng(0), shape, dtype)
    xt = np.swapaxes(x, -1, -2)
    out = np.empty(xt.shape, x.dtype)
    copy_into(lib, out, xt)
    assert out.tobytes() == np.ascontiguousarray(xt).tobytes()
    np.testing.assert_array_equal(out.view(np.uint8), np.ascontiguousarray(xt).view(np.uint8))


@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: d.name)
def test_movement_ops_through_copy_strided(lib, dtype):
    """permute, broadcast_to, slice, concat, unslice and pad of ops.py, each as copies (+ a fill)."""
    rng = np.random.default_rng(1)
    x = rng_values(rng, (3, 4, 5), dtype)

    want = REGISTRY["permute"].impl(x, axes=(2, 0, 1))
    got = np.empty(want.shape, dtype)
    copy_into(lib, got, np.transpose(x, (2, 0, 1)))
    assert_same(got, want)

    want = REGISTRY["broadcast_to"].impl(x[:, :1, :], shape=(2, 3, 4, 5))
    got = np.empty(want.shape, dtype)
    copy_into(lib, got, np.broadcast_to(x[:, :1, :], (2, 3, 4, 5)))
    assert_same(got, want)

    starts, stops, steps = (1, 0, 1), (3, 4, 5), (1, 2, 3)
    want = REGISTRY["slice"].impl(x, starts=starts, stops=stops, steps=steps)
    got = np.empty(want.shape, dtype)
    copy_into(lib, got, x[1:3, 0:4:2, 1:5:3])
    assert_same(got, want)

    y = rng_values(rng, (3, 2, 5), dtype)
    want = REGISTRY["concat"].impl(x, y, axis=1)
    got = np.empty(want.shape, dtype)
    copy_into(lib, got[:, :4], x)  # one copy per piece, into a strided window of the output
    copy_into(lib, got[:, 4:], y)
    assert_same(got, want)

    g = rng_values(rng, (2, 2, 2), dtype)
    want = REGISTRY["unslice"].impl(g, shape=(3, 4, 5), starts=starts, stops=stops, steps=steps)
    got = np.empty((3, 4, 5), dtype)
    ok(lib, lib.fc_fill(code(dtype), got.size, 0.0, ptr(got)))
    copy_into(lib, got[1:3, 0:4:2, 1:5:3], g)
    assert_same(got, want)

    pads = ((1, 0), (0, 2), (3, 1))
    want = REGISTRY["pad"].impl(x, pads=pads, value=1.0)
    got = np.empty(want.shape, dtype)
    ok(lib, lib.fc_fill(code(dtype), got.size, 1.0, ptr(got)))
    copy_into(lib, got[1:4, 0:4, 3:8], x)
    assert_same(got, want)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: d.name)
def test_fill(lib, dtype, n):
    for value in (0.0, -0.0, 2.75, -3.5, np.inf, np.nan, 1e300):
        got = np.empty(n, dtype)
        ok(lib, lib.fc_fill(code(dtype), n, value, ptr(got)))
        want = cast(lib, np.full(n, value), dtype)  # fc_fill converts as fc_cast from float64
        assert_same(got, want)
        if np.isfinite(value) and abs(value) < 1e18:
            with np.errstate(all="ignore"):
                assert_same(got, np.full(n, value).astype(dtype))


# -------------------------------------------------------------------------------- reductions

REDUCE_SHAPES = [(1, 1, 1), (3, 17, 1), (2, 127, 3), (1, 0, 4), (0, 5, 3), (4, 3, 0), (5, 1, 17), (1, 300, 257),
                 (2, 1000, 1), (1, 100003, 1), (1, 5000, 7), (2, 131, 2051)]


@pytest.mark.parametrize("shape", REDUCE_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", FLOATS)
def test_sum_float_accuracy(lib, dtype, shape):
    """Float sums: within 1 float32 ulp + float64 rounding noise of the exact sum (kernels.h), and
    within numpy's own pairwise error bound of numpy's result."""
    outer, red, inner = shape
    rng = np.random.default_rng(red)
    x = (rng.normal(0, 1, shape) + 0.1).astype(dtype)
    got = reduce(lib, "sum", x, outer, red, inner)
    want = REGISTRY["sum"].impl(x, axes=(1,), keepdims=False)
    assert got.dtype == want.dtype
    x64 = x.astype(np.float64)
    exact = np.array([[math.fsum(x64[o, :, j]) for j in range(inner)] for o in range(outer)]).reshape(outer, inner)
    abs_sum = np.abs(x64).sum(axis=1)
    eps64 = np.finfo(np.float64).eps
    noise = (130 + red / 128 + math.log2(red + 1)) * eps64 * abs_sum
    ulp = np.spacing(np.abs(exact).astype(dtype)).astype(np.float64)
    assert (np.abs(got - exact) <= ulp + noise).all()
    eps = np.finfo(dtype).eps
    numpy_bound = (math.log2(red + 1) + 2) * eps * abs_sum if inner == 1 else (red + 2) * eps * abs_sum
    assert (np.abs(got.astype(np.float64) - want.astype(np.float64)) <= numpy_bound + ulp).all()


@pytest.mark.parametrize("shape", [(1, 131, 2047), (2, 133, 2048), (2, 131, 2049), (1, 7, 4099)], ids=str)
@pytest.mark.parametrize("dtype", FLOATS)
def test_sum_across_rows_is_per_column(lib, dtype, shape):
    """Wide rows are summed in column chunks (reduce.c ROW_CHUNK = 2048): every column's sum is bit for
    bit the sum of that column reduced alone (inner 1, rows ld apart), on both sides of a chunk
    edge, dense and with a row stride."""
    outer, red, inner = shape
    ld = inner + 3
    wide = (np.random.default_rng(inner).normal(0, 1, (outer * red, ld)) + 0.1).astype(dtype)
    base = wide.ctypes.data + wide.itemsize
    got = np.empty((outer, inner), dtype)
    ok(lib, lib.fc_reduce_ld(code(dtype), REDUCE["sum"], outer, red, inner, ld, ffi.cast("void*", base), ptr(got)))
    dense = np.ascontiguousarray(wide[:, 1:1 + inner])
    assert_same(reduce(lib, "sum", dense, outer, red, inner), got)
    col = np.empty((outer, 1), dtype)
    for j in sorted({0, 1, inner // 2, 2046, 2047, 2048, 2049, inner - 2, inner - 1} & set(range(inner))):
        ok(lib, lib.fc_reduce_ld(code(dtype), REDUCE["sum"], outer, red, 1, ld,
                                 ffi.cast("void*", base + j * wide.itemsize), ptr(col)))
        assert_same(col[:, 0], got[:, j])


@pytest.mark.parametrize("shape", REDUCE_SHAPES[:8], ids=str)
@pytest.mark.parametrize("dtype", [np.int64, np.bool_], ids=lambda d: np.dtype(d).name)
def test_sum_int_and_bool(lib, dtype, shape):
    outer, red, inner = shape
    x = rng_values(np.random.default_rng(2), shape, dtype)
    got = reduce(lib, "sum", x, outer, red, inner)
    assert_same(got, REGISTRY["sum"].impl(x, axes=(1,), keepdims=False))  # bool counts into int64


def test_sum_int64_wraps(lib):
    x = np.array([2**62, 2**62, 2**62, 5], np.int64)
    assert_same(reduce(lib, "sum", x, 1, 4, 1), np.sum(x, keepdims=True).reshape(1, 1))


@pytest.mark.parametrize("shape", [s for s in REDUCE_SHAPES if s[1] > 0 or s[0] * s[2] == 0], ids=str)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: d.name)
def test_max_matches_registry(lib, dtype, shape):
    outer, red, inner = shape
    x = rng_values(np.random.default_rng(4), shape, dtype, specials=True)
    got = reduce(lib, "max", x, outer, red, inner)
    if x.size:
        assert_same(got + 0, REGISTRY["max"].impl(x, axes=(1,), keepdims=False) + 0)  # +0: -0.0 ties are either
    assert got.shape == (outer, inner)


def test_max_propagates_nan_from_any_position(lib):
    for i in range(20):
        x = np.arange(20, dtype=np.float32)
        x[i] = np.nan
        assert np.isnan(reduce(lib, "max", x, 1, 20, 1)[0, 0])
        assert np.isnan(reduce(lib, "max", x.reshape(20, 1), 1, 20, 1)[0, 0])


def test_max_of_nothing_is_an_error(lib):
    y = np.empty(3, np.float32)
    assert lib.fc_reduce(0, REDUCE["max"], 3, 0, 1, ffi.NULL, ptr(y)) == lib.FC_ERR_SIZE
    assert lib.fc_reduce(0, REDUCE["max"], 0, 0, 1, ffi.NULL, ptr(y)) == FC_OK  # nothing to compute


# ---------------------------------------------------------------------------------- indexing


@pytest.mark.parametrize("n_idx", SIZES)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: d.name)
def test_gather_matches_registry(lib, dtype, n_idx):
    rng = np.random.default_rng(n_idx)
    for rows, row_len in [(5, 3), (17, 1), (1, 127), (4, 0)]:
        table = rng_values(rng, (rows, row_len), dtype)
        idx = rng.integers(0, rows, n_idx)
        out = np.empty((n_idx, row_len), dtype)
        ok(lib, lib.fc_gather(code(dtype), n_idx, ptr(idx), rows, row_len, ptr(table), ptr(out)))
        assert_same(out, REGISTRY["gather"].impl(table, idx))


@pytest.mark.parametrize("n_idx", SIZES + [1000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64], ids=lambda d: np.dtype(d).name)
def test_scatter_add_matches_registry(lib, dtype, n_idx):
    """Bit for bit against np.add.at: the same order of additions."""
    rng = np.random.default_rng(n_idx)
    for rows, row_len in [(5, 3), (3, 17), (1, 127), (4, 0), (7, 1)]:
        src = rng_values(rng, (n_idx, row_len), dtype)
        idx = rng.integers(0, rows, n_idx)
        out = np.full((rows, row_len), 99, dtype)
        ok(lib, lib.fc_scatter_add(code(dtype), n_idx, ptr(idx), rows, row_len, ptr(src), ptr(out)))
        assert_same(out, REGISTRY["scatter_add"].impl(src, idx, n=rows))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: d.name)
def test_one_hot_matches_registry(lib, dtype, n):
    labels = np.random.default_rng(n).integers(0, 10, n)
    out = np.full((n, 10), 7, dtype)
    ok(lib, lib.fc_one_hot(code(dtype), n, ptr(labels), 10, ptr(out)))
    assert_same(out, REGISTRY["one_hot"].impl(labels, n=10, dtype=dtype.name))


@pytest.mark.parametrize("bad", [-1, 5, 2**62, -(2**63)])
def test_indices_out_of_range_write_nothing(lib, bad):
    table = np.arange(15, dtype=np.float32).reshape(5, 3)
    idx = np.array([0, 4, bad, 1], np.int64)
    out = np.full((4, 3), -1.0, np.float32)
    assert lib.fc_gather(0, 4, ptr(idx), 5, 3, ptr(table), ptr(out)) == lib.FC_ERR_INDEX
    assert (out == -1.0).all()
    acc = np.full((5, 3), -1.0, np.float32)
    src = np.ones((4, 3), np.float32)
    assert lib.fc_scatter_add(0, 4, ptr(idx), 5, 3, ptr(src), ptr(acc)) == lib.FC_ERR_INDEX
    assert (acc == -1.0).all()
    hot = np.full((4, 5), -1.0, np.float32)
    assert lib.fc_one_hot(0, 4, ptr(idx), 5, ptr(hot)) == lib.FC_ERR_INDEX
    assert (hot == -1.0).all()
    with pytest.raises(IndexError):  # the reference refuses these too
        REGISTRY["gather"].impl(table, idx)


# ------------------------------------------------------------------------------ sliding windows

WINDOWS_1D = [
    # (length, kernel, stride, padding, dilation)
    (17, 3, 1, (0, 0), 1),
    (17, 3, 2, (1, 1), 1),
    (16, 4, 3, (2, 0), 2),
    (5, 5, 1, (0, 0), 1),
    (3, 2, 1, (4, 3), 1),  # windows entirely in the padding
    (1, 1, 1, (0, 0), 1),
    (0, 2, 1, (1, 1), 1),  # an empty image, all padding
    (127, 7, 5, (3, 3), 3),
]
WINDOWS_2D = [
    # (shape, kernel, stride, padding, dilation)
    ((5, 6), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ((7, 5), (2, 3), (2, 1), ((0, 1), (2, 0)), (1, 2)),
    ((4, 4), (4, 4), (1, 1), ((0, 0), (0, 0)), (1, 1)),
    ((9, 8), (3, 2), (3, 2), ((2, 2), (1, 3)), (2, 1)),
    ((1, 1), (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1)),
    ((3, 17), (3, 5), (1, 4), ((1, 1), (2, 2)), (1, 1)),
]


def _window_cases():
    for length, k, s, pad, d in WINDOWS_1D:
        yield (2, 3, length), (k,), (s,), (pad,), (d,)
    for shape, k, s, pad, d in WINDOWS_2D:
        yield (2, 3) + shape, k, s, pad, d


@pytest.mark.parametrize("case", list(_window_cases()), ids=str)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: d.name)
def test_unfold_matches_registry(lib, dtype, case):
    shape, kernel, stride, padding, dilation = case
    x = rng_values(np.random.default_rng(0), shape, dtype)
    for pad_value in (0.0, -2.0):
        want = REGISTRY["unfold"].impl(x, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                                       pad_value=pad_value)
        assert_same(unfold(lib, x, kernel, stride, padding, dilation, pad_value), want)


@pytest.mark.parametrize("case", list(_window_cases()), ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64], ids=lambda d: np.dtype(d).name)
def test_fold_matches_registry(lib, dtype, case):
    """Bit for bit: the windows are added in np.add.at's order."""
    shape, kernel, stride, padding, dilation = case
    cols_shape = unfold(lib, np.zeros(shape, dtype), kernel, stride, padding, dilation).shape
    cols = rng_values(np.random.default_rng(1), cols_shape, dtype)
    want = REGISTRY["fold"].impl(cols, shape=shape, kernel=kernel, stride=stride, padding=padding, dilation=dilation)
    assert_same(fold(lib, cols, shape, kernel, stride, padding, dilation), want)


@pytest.mark.parametrize("case", list(_window_cases()), ids=str)
def test_fold_is_the_adjoint_of_unfold(lib, case):
    shape, kernel, stride, padding, dilation = case
    rng = np.random.default_rng(2)
    x = rng.normal(size=shape)
    cols = unfold(lib, x, kernel, stride, padding, dilation)
    c = rng.normal(size=cols.shape)
    np.testing.assert_allclose(np.vdot(cols, c), np.vdot(x, fold(lib, c, shape, kernel, stride, padding, dilation)),
                               rtol=1e-12, atol=1e-12)


def test_window_geometry_errors(lib):
    x = np.zeros((1, 1, 4), np.float32)
    cols = np.zeros(64, np.float32)
    args = dict(kernel=(5,), stride=(1,), padding=((0, 0),), dilation=(1,))

    def call(nd=1, kernel=(5,), stride=(1,), padding=((0, 0),), dilation=(1,)):
        return lib.fc_unfold(0, nd, 1, 1, i64s([4]), *window_args(kernel, stride, padding, dilation), 0.0, ptr(x),
                             ptr(cols))

    assert call(**args) == lib.FC_ERR_SIZE  # the window does not fit
    assert call(kernel=(3,)) == FC_OK
    assert call(kernel=(3,), stride=(0,)) == lib.FC_ERR_SIZE
    assert call(kernel=(3,), dilation=(0,)) == lib.FC_ERR_SIZE
    assert call(kernel=(3,), padding=((-1, 0),)) == lib.FC_ERR_SIZE
    assert call(nd=3, kernel=(3,)) == lib.FC_ERR_SIZE
    assert call(kernel=(2**62,), dilation=(4,)) == lib.FC_ERR_SIZE  # span overflows
    assert lib.fc_fold(3, 1, 1, 1, i64s([4]), *window_args((3,), (1,), ((0, 0),), (1,)), ptr(cols), ptr(x)) == \
        lib.FC_ERR_DTYPE


# ------------------------------------------------------------------------------- fused programs

UNARY_EW = ["neg", "exp", "log", "log1p", "sqrt", "abs", "sigmoid", "tanh", "arctan", "sign", "step", "relu"]
BINARY_EW = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "pow": "pow", "max": "maximum",
             "min": "minimum"}
COMPARE_EW = ["gt", "ge", "lt", "le", "eq", "ne"]
# Opcodes whose numpy functions equal IEEE arithmetic bit for bit (the others call the C library).
EXACT_EW = [EW[o] for o in ["neg", "sqrt", "abs", "sign", "step", "relu", "add", "sub", "mul", "div", "max", "min",
                            *COMPARE_EW, "where", "const"]]


def test_fused_opcodes_agree_with_the_ir():
    from flexcore.ir.fused import EwCode, InMode

    assert {c.name.lower(): int(c) for c in EwCode} == EW
    assert {m.name: int(m) for m in InMode} == {k.upper(): v for k, v in _codes("fc_fused_mode", "FC_IN_").items()}


def unfused_chain(lib, inputs, modes, program, consts, shape, dtype):
    """The program run as a chain of the unfused C kernels, one per instruction."""
    from flexcore.ir.fused import _spread

    dtype = np.dtype(dtype)
    regs = [np.ascontiguousarray(np.broadcast_to(_spread(x, m, shape), shape)) for x, m in zip(inputs, modes)]
    names = {v: k for k, v in EW.items()}
    for op, a, b, c in program:
        name = names[op]
        if name in UNARY_EW:
            r = ew_unary(lib, name, regs[a])
        elif name in BINARY_EW:
            r = ew_binary(lib, BINARY_EW[name], regs[a], regs[b])
        elif name in COMPARE_EW:
            r = cast(lib, ew_compare(lib, name, regs[a], regs[b]), dtype)
        elif name == "where":
            r = ew_where(lib, ew_compare(lib, "ne", regs[a], np.zeros((), dtype)), regs[b], regs[c])
        else:
            r = np.full(shape, consts[a], dtype)
        regs.append(r.reshape(shape))
    return regs[-1]


@st.composite
def fused_programs(draw, opcodes, max_instr=12, max_inputs=4):
    rows = draw(st.integers(0, 6))
    cols = draw(st.integers(1, 300))
    n_inputs = draw(st.integers(1, max_inputs))
    modes = draw(st.lists(st.integers(0, 3), min_size=n_inputs, max_size=n_inputs))
    consts = draw(st.lists(st.sampled_from([0.0, -0.0, 1.0, -2.5, 0.1, 1e10, np.inf, np.nan]), max_size=3))
    n_instr = draw(st.integers(1, max_instr))
    program = []
    for k in range(n_instr):
        choices = [o for o in opcodes if o != EW["const"] or consts]
        op = draw(st.sampled_from(choices))
        regs = st.integers(0, n_inputs + k - 1)
        a, b, c = draw(regs), draw(regs), draw(regs)
        if op == EW["const"]:
            a, b, c = draw(st.integers(0, len(consts) - 1)), 0, 0
        program.append((op, a, b, c))
    return (rows, cols), modes, program, consts, draw(st.integers(0, 2**32 - 1))


def _fused_inputs(rng, shape, modes, dtype):
    rows, cols = shape
    shapes = {0: (rows, cols), 1: (1,), 2: (cols,), 3: (rows,)}
    return [rng_values(rng, shapes[m], dtype, specials=True) * (1 if rng.random() < 0.5 else 0.3) for m in modes]


@HYPOTHESIS
@given(case=fused_programs(sorted(EW.values())), dtype=st.sampled_from(FLOATS))
def test_fused_equals_unfused_kernels_bit_for_bit(lib, case, dtype):
    shape, modes, program, consts, seed = case
    inputs = [x.astype(dtype) for x in _fused_inputs(np.random.default_rng(seed), shape, modes, dtype)]
    status, got = Fused(inputs, modes, program, consts).call(lib, dtype, shape)
    ok(lib, status)
    with np.errstate(all="ignore"):
        want = unfused_chain(lib, inputs, modes, program, consts, shape, dtype)
    assert_same(got, want)


@HYPOTHESIS
@given(case=fused_programs(EXACT_EW), dtype=st.sampled_from(FLOATS))
def test_fused_equals_numpy_interpreter(lib, case, dtype):
    """Against flexcore.ir.fused.run_program (numpy), bit for bit, over the opcodes whose numpy
    functions are IEEE-exact (exp, log, pow... are C-library math, checked by the test above)."""
    from flexcore.ir.fused import run_program

    shape, modes, program, consts, seed = case
    inputs = [x.astype(dtype) for x in _fused_inputs(np.random.default_rng(seed), shape, modes, dtype)]
    status, got = Fused(inputs, modes, program, consts).call(lib, dtype, shape)
    ok(lib, status)
    with np.errstate(all="ignore"):
        want = run_program(inputs, modes, program, consts, shape, dtype)
    assert_same(got, want)


@pytest.mark.parametrize("dtype", FLOATS)
def test_fused_lstm_cell_against_numpy(lib, dtype):
    """c' = sigmoid(f) * c + sigmoid(i) * tanh(g); h = sigmoid(o) * tanh(c'), with a bias row."""
    from flexcore.ir.fused import run_program

    rng = np.random.default_rng(0)
    rows, cols = 33, 70
    f, i, g, o, c = (rng.normal(size=(rows, cols)).astype(dtype) for _ in range(5))
    bias = rng.normal(size=cols).astype(dtype)
    e = EW
    program = [
        (e["add"], 0, 5, 0),  # 6: f + bias
        (e["sigmoid"], 6, 0, 0),  # 7
        (e["mul"], 7, 4, 0),  # 8: sigmoid(f) * c
        (e["sigmoid"], 1, 0, 0),  # 9
        (e["tanh"], 2, 0, 0),  # 10
        (e["mul"], 9, 10, 0),  # 11
        (e["add"], 8, 11, 0),  # 12: c'
        (e["sigmoid"], 3, 0, 0),  # 13
        (e["tanh"], 12, 0, 0),  # 14
        (e["mul"], 13, 14, 0),  # 15: h
    ]
    inputs, modes = [f, i, g, o, c, bias], [0, 0, 0, 0, 0, 2]
    status, got = Fused(inputs, modes, program, []).call(lib, dtype, (rows, cols))
    ok(lib, status)
    want = run_program(inputs, modes, program, [], (rows, cols), dtype)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(got, want, rtol=16 * eps, atol=16 * eps)  # C library vs numpy tanh/exp
    assert_same(got, unfused_chain(lib, inputs, modes, program, [], (rows, cols), dtype))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("cols", [5, 64, 70])  # blocks filled per row run, and read in place
def test_fused_strided_inputs(lib, dtype, cols):
    """STRIDED inputs (input_lens[j] = the row stride): column blocks of wider matrices, read
    as the same blocks copied out would be; a stride below cols and an overlap with out fail."""
    rng = np.random.default_rng(cols)
    rows = 9
    wide = rng.normal(size=(rows, 4 * cols + 3)).astype(dtype)
    other = rng.normal(size=(rows, 2 * cols)).astype(dtype)
    a, b = wide[:, cols : 2 * cols], other[:, cols:]
    program = [(EW["tanh"], 0, 0, 0), (EW["sigmoid"], 1, 0, 0), (EW["mul"], 2, 3, 0), (EW["add"], 4, 0, 0)]
    call = Fused([wide.ravel()[cols:], other.ravel()[cols:]], [4, 4], program, [])
    call.lens[0], call.lens[1] = wide.shape[1], other.shape[1]
    status, got = call.call(lib, dtype, (rows, cols))
    ok(lib, status)
    status, want = Fused([a, b], [0, 0], program, []).call(lib, dtype, (rows, cols))
    ok(lib, status)
    assert_same(got, want)
    call.lens[1] = cols - 1
    assert call.call(lib, dtype, (rows, cols))[0] == lib.FC_ERR_SIZE
    call.lens[1] = other.shape[1]
    assert call.call(lib, dtype, (rows, cols), out=other[:, :cols].copy())[0] == FC_OK
    overlap = np.zeros((rows, 2 * cols), dtype)
    clash = Fused([overlap.ravel()], [4], [(EW["neg"], 0, 0, 0)], [])
    clash.lens[0] = 2 * cols
    out = overlap.ravel()[(rows - 1) * 2 * cols - rows * cols :][: rows * cols]  # ends in the last row
    assert lib.fc_fused_ew(code(dtype), 1, clash.ptrs, clash.modes, clash.lens, rows * cols, cols, 1, clash.code, 0,
                           clash.consts, ptr(out)) == lib.FC_ERR_OVERLAP


@pytest.mark.parametrize("dtype", FLOATS)
def test_fused_many_live_values_and_inputs(lib, dtype):
    """64 inputs, the 32 broadcast ones live (in slots) until the end of the program, which
    shortens the block; the result is still the exact left-to-right sum."""
    rng = np.random.default_rng(3)
    shape = (7, 301)
    inputs = [rng.normal(size=shape).astype(dtype) for _ in range(32)]
    inputs += [rng.normal(size=shape[1]).astype(dtype) for _ in range(16)]
    inputs += [rng.normal(size=shape[0]).astype(dtype) for _ in range(16)]
    modes = [0] * 32 + [2] * 16 + [3] * 16
    program = [(EW["add"], 0, 1, 0)] + [(EW["add"], 64 + k - 1, k + 1, 0) for k in range(1, 63)]
    assert len(program) == 63
    status, got = Fused(inputs, modes, program, []).call(lib, dtype, shape)
    ok(lib, status)
    want = inputs[0]
    for k, x in enumerate(inputs[1:], start=1):
        want = want + (x if modes[k] != 3 else x[:, None])
    assert_same(got, want)


@pytest.mark.parametrize("dtype", FLOATS)
def test_fused_output_may_alias_a_full_input(lib, dtype):
    x = np.random.default_rng(0).normal(size=(5, 300)).astype(dtype)
    program = [(EW["tanh"], 0, 0, 0), (EW["mul"], 1, 0, 0)]
    want = unfused_chain(lib, [x.copy()], [0], program, [], x.shape, dtype)
    prog = Fused([x], [0], program, [])
    status, _ = prog.call(lib, dtype, x.shape, out=prog.inputs[0])
    ok(lib, status)
    assert_same(prog.inputs[0], want)


def test_fused_program_without_inputs(lib):
    """Constants alone: no input array at all."""
    out = np.empty((3, 5), np.float32)
    code_ = ffi.new("int32_t[]", [EW["const"], 1, 0, 0, EW["exp"], 0, 0, 0])
    consts = ffi.new("double[]", [0.0, 1.0])
    ok(lib, lib.fc_fused_ew(0, 0, ffi.NULL, ffi.NULL, ffi.NULL, 15, 5, 2, code_, 2, consts, ptr(out)))
    assert_same(out, np.full((3, 5), ew_unary(lib, "exp", np.ones(1, np.float32))[0]))


def test_fused_rejects_bad_programs(lib):
    x = np.ones(12, np.float32)
    good = Fused([x], [0], [(EW["exp"], 0, 0, 0)], [1.0])
    assert good.call(lib, np.float32, (3, 4))[0] == FC_OK

    def status(program, modes=(0,), consts=(1.0,), shape=(3, 4), **kw):
        return Fused([x[: kw.pop("length", 12)]], modes, program, consts).call(lib, np.float32, shape, **kw)[0]

    assert status([(EW["add"], 0, 1, 0)]) == lib.FC_ERR_INDEX  # reads its own register
    assert status([(EW["exp"], 0, 0, 0), (EW["where"], 0, 1, 2)]) == lib.FC_ERR_INDEX
    assert status([(EW["neg"], -1, 0, 0)]) == lib.FC_ERR_INDEX
    assert status([(EW["const"], 1, 0, 0)]) == lib.FC_ERR_INDEX  # only one const
    assert status([(27, 0, 0, 0)]) == lib.FC_ERR_OP
    assert status([(-1, 0, 0, 0)]) == lib.FC_ERR_OP
    assert status([(EW["exp"], 0, 0, 0)], modes=(lib.FC_IN_MODE_COUNT,)) == lib.FC_ERR_OP
    assert status([(EW["exp"], 0, 0, 0)], length=11) == lib.FC_ERR_SIZE  # FULL needs n elements
    assert status([(EW["exp"], 0, 0, 0)], modes=(2,), length=3) == lib.FC_ERR_SIZE  # ROW needs cols
    assert status([(EW["exp"], 0, 0, 0)], modes=(3,), length=3) == FC_OK  # COL: n / cols
    assert status([(EW["exp"], 0, 0, 0)], cols=5) == lib.FC_ERR_SIZE  # n % cols != 0
    assert status([(EW["exp"], 0, 0, 0)], n_instr=0) == lib.FC_ERR_SIZE
    assert status([(EW["exp"], 0, 0, 0)], n_instr=65) == lib.FC_ERR_SIZE
    assert status([(EW["exp"], 0, 0, 0)], n_inputs=65) == lib.FC_ERR_SIZE
    assert status([(EW["exp"], 0, 0, 0)], instructions=ffi.NULL) == lib.FC_ERR_NULL
    out = np.empty(12, np.float32)
    assert lib.fc_fused_ew(2, 1, good.ptrs, good.modes, good.lens, 12, 4, 1, good.code, 1, good.consts,
                           ptr(out)) == lib.FC_ERR_DTYPE
    # an input no live instruction reads may be NULL
    nul = ffi.new("void*[]", [ffi.NULL, ptr(x)])
    modes = ffi.new("int32_t[]", [0, 0])
    lens = ffi.new("int64_t[]", [12, 12])
    code = ffi.new("int32_t[]", [EW["exp"], 0, 0, 0, EW["neg"], 1, 0, 0])
    assert lib.fc_fused_ew(0, 2, nul, modes, lens, 12, 4, 2, code, 0, ffi.NULL, ptr(out)) == FC_OK
    np.testing.assert_array_equal(out, -x)
    code[4 + 1] = 2  # now the result reads the exp of the NULL input
    assert lib.fc_fused_ew(0, 2, nul, modes, lens, 12, 4, 2, code, 0, ffi.NULL, ptr(out)) == lib.FC_ERR_NULL


# ------------------------------------------------------------------------------------- softmax


@pytest.mark.parametrize("cols", [1, 3, 17, 127, 1000])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("log", [False, True])
def test_softmax_rows_against_composite(lib, log, dtype, cols):
    """Against ops.py's composite (max, sub, exp, sum, div / log) evaluated in float64."""
    rng = np.random.default_rng(cols)
    x = (rng.normal(0, 5, (6, cols))).astype(dtype)
    x[0, 0] = 100 if dtype == np.float32 else 800  # exp overflows without the max shift
    y = np.empty_like(x)
    ok(lib, lib.fc_softmax_rows(code(x.dtype), int(log), 6, cols, ptr(x), ptr(y)))
    # x - max is rounded to the dtype, as in the composite; the rest of the reference is float64
    z = (x - x.max(axis=1, keepdims=True)).astype(np.float64)
    total = np.exp(z).sum(axis=1, keepdims=True)
    log_sum = np.log(total)
    want = z - log_sum if log else np.exp(z) / total
    eps = np.finfo(dtype).eps
    sum_err = (math.log2(cols) + cols / 256 + 2) * np.finfo(np.float64).eps  # the float64 row sum (kernels.h)
    # absolute slack: the rounding of log(sum) for log-softmax; of subnormal results for softmax
    atol = 4 * eps * np.abs(log_sum).max() + sum_err if log else 2 * np.finfo(dtype).smallest_subnormal
    np.testing.assert_allclose(y, want, rtol=8 * eps + sum_err, atol=atol)
    if not log:
        np.testing.assert_allclose(y.astype(np.float64).sum(axis=1), 1.0, rtol=cols * eps)
    # in place
    ok(lib, lib.fc_softmax_rows(code(x.dtype), int(log), 6, cols, ptr(x), ptr(x)))
    assert_same(x, y)


def test_softmax_rows_nan_and_empty(lib):
    x = np.array([[1.0, np.nan, 2.0], [0.0, 0.0, 0.0]])
    y = np.empty_like(x)
    ok(lib, lib.fc_softmax_rows(1, 0, 2, 3, ptr(x), ptr(y)))
    assert np.isnan(y[0]).all()
    np.testing.assert_allclose(y[1], 1 / 3)
    assert lib.fc_softmax_rows(1, 0, 0, 3, ffi.NULL, ffi.NULL) == FC_OK
    assert lib.fc_softmax_rows(1, 0, 3, 0, ffi.NULL, ffi.NULL) == FC_OK
    assert lib.fc_softmax_rows(2, 0, 2, 3, ptr(x), ptr(y)) == lib.FC_ERR_DTYPE


# --------------------------------------------------------------------------- argument checks


def test_bad_arguments_are_statuses(lib):
    x = np.ones(8, np.float32)
    y = np.zeros(8, np.float32)
    shape = i64s([8])
    assert lib.fc_ew_binary(9, 0, 1, shape, ptr(x), ffi.NULL, ptr(x), ffi.NULL, ptr(y)) == lib.FC_ERR_DTYPE
    assert lib.fc_ew_binary(0, 99, 1, shape, ptr(x), ffi.NULL, ptr(x), ffi.NULL, ptr(y)) == lib.FC_ERR_OP
    assert lib.fc_ew_binary(2, BINARY["div"], 1, shape, ptr(x), ffi.NULL, ptr(x), ffi.NULL, ptr(y)) == \
        lib.FC_ERR_DTYPE
    assert lib.fc_ew_binary(3, BINARY["sub"], 1, shape, ptr(x), ffi.NULL, ptr(x), ffi.NULL, ptr(y)) == \
        lib.FC_ERR_DTYPE
    assert lib.fc_ew_binary(0, 0, 9, i64s([1] * 9), ptr(x), ffi.NULL, ptr(x), ffi.NULL, ptr(y)) == lib.FC_ERR_SIZE
    assert lib.fc_ew_binary(0, 0, -1, shape, ptr(x), ffi.NULL, ptr(x), ffi.NULL, ptr(y)) == lib.FC_ERR_SIZE
    assert lib.fc_ew_binary(0, 0, 1, ffi.NULL, ptr(x), ffi.NULL, ptr(x), ffi.NULL, ptr(y)) == lib.FC_ERR_NULL
    assert lib.fc_ew_binary(0, 0, 1, i64s([-8]), ptr(x), ffi.NULL, ptr(x), ffi.NULL, ptr(y)) == lib.FC_ERR_SIZE
    assert lib.fc_ew_binary(0, 0, 1, shape, ptr(x), i64s([-1]), ptr(x), ffi.NULL, ptr(y)) == lib.FC_ERR_SIZE
    assert lib.fc_ew_binary(0, 0, 1, shape, ffi.NULL, ffi.NULL, ptr(x), ffi.NULL, ptr(y)) == lib.FC_ERR_NULL
    assert lib.fc_ew_binary(0, 0, 2, i64s([2**40, 2**40]), ptr(x), ffi.NULL, ptr(x), ffi.NULL, ptr(y)) == \
        lib.FC_ERR_SIZE  # 2^80 elements
    assert lib.fc_ew_binary(0, 0, 1, shape, ptr(x), i64s([2**61]), ptr(x), ffi.NULL, ptr(y)) == \
        lib.FC_ERR_SIZE  # the last byte read is past 2^63
    assert lib.fc_ew_binary(0, 0, 1, i64s([0]), ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL) == FC_OK
    assert lib.fc_ew_compare(0, 6, 1, shape, ptr(x), ffi.NULL, ptr(x), ffi.NULL, ptr(y)) == lib.FC_ERR_OP
    assert lib.fc_ew_where(4, 1, shape, ptr(x), ffi.NULL, ptr(x), ffi.NULL, ptr(x), ffi.NULL, ptr(y)) == \
        lib.FC_ERR_DTYPE
    assert lib.fc_ew_unary(0, UNARY["exp"], -1, ptr(x), ptr(y)) == lib.FC_ERR_SIZE
    assert lib.fc_ew_unary(3, UNARY["neg"], 8, ptr(x), ptr(y)) == lib.FC_ERR_DTYPE
    assert lib.fc_cast(0, 7, 8, ptr(x), ptr(y)) == lib.FC_ERR_DTYPE
    assert lib.fc_cast(0, 1, 2**62, ptr(x), ptr(y)) == lib.FC_ERR_SIZE
    assert lib.fc_copy_strided(0, 1, shape, ptr(x), ffi.NULL, ptr(y), ffi.NULL) == lib.FC_ERR_SIZE
    assert lib.fc_copy_strided(4, 1, shape, ptr(x), ffi.NULL, ffi.NULL, ffi.NULL) == lib.FC_ERR_NULL
    assert lib.fc_copy_strided(4, 1, shape, ptr(x), ffi.NULL, ptr(y), i64s([-1])) == lib.FC_ERR_SIZE
    assert lib.fc_fill(5, 8, 0.0, ptr(y)) == lib.FC_ERR_DTYPE
    assert lib.fc_fill(0, -8, 0.0, ptr(y)) == lib.FC_ERR_SIZE
    assert lib.fc_reduce(0, 2, 1, 8, 1, ptr(x), ptr(y)) == lib.FC_ERR_OP
    assert lib.fc_reduce(0, 0, 1, -8, 1, ptr(x), ptr(y)) == lib.FC_ERR_SIZE
    assert lib.fc_reduce(0, 0, 2**32, 2**32, 1, ptr(x), ptr(y)) == lib.FC_ERR_SIZE
    assert lib.fc_reduce(0, 0, 1, 8, 1, ffi.NULL, ptr(y)) == lib.FC_ERR_NULL
    assert lib.fc_gather(0, 1, ffi.NULL, 8, 1, ptr(x), ptr(y)) == lib.FC_ERR_NULL
    assert lib.fc_gather(0, -1, ffi.NULL, 8, 1, ptr(x), ptr(y)) == lib.FC_ERR_SIZE
    assert lib.fc_scatter_add(3, 0, ffi.NULL, 8, 1, ptr(x), ptr(y)) == lib.FC_ERR_DTYPE
    assert lib.fc_one_hot(0, 1, ffi.NULL, 8, ptr(y)) == lib.FC_ERR_NULL
    assert lib.fc_one_hot(0, 2, i64s([0, 0]), -8, ptr(y)) == lib.FC_ERR_SIZE
    assert (y == 0).all()  # no failed call wrote anything
    assert ffi.string(lib.fc_strerror(lib.FC_ERR_INDEX)).decode() == "an index is out of range"
    assert ffi.string(lib.fc_strerror(lib.FC_ERR_DTYPE)).decode() == "unknown or unsupported dtype"


def test_kernels_run_concurrently(lib):
    """The kernels keep no state: concurrent calls (cffi releases the GIL) agree."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 400))
    b = rng.normal(size=400)
    want = ew_binary(lib, "mul", a, b)
    with ThreadPoolExecutor(4) as pool:
        for got in pool.map(lambda _: ew_binary(lib, "mul", a, b), range(8)):
            assert_same(got, want)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("cols", [1, 3, 17, 64, 127])
def test_fused_strided_output(lib, dtype, cols):
    """fc_fused_ew_ld writes rows of out ld apart (a column block of a wider matrix): the same
    values as a dense out, bit for bit, every input mode, nothing outside the block touched; a
    stride below cols fails, and so does a FULL input overlapping the rows' span."""
    rng = np.random.default_rng(cols)
    rows, ld = 7, 2 * cols + 5
    full = rng.normal(size=(rows, cols)).astype(dtype)
    row = rng.normal(size=cols).astype(dtype)
    col = rng.normal(size=rows).astype(dtype)
    scalar = np.array([0.5], dtype)
    wide_in = rng.normal(size=(rows, ld)).astype(dtype)
    inputs = [full, row, col, scalar, wide_in.ravel()[3:]]
    modes = [0, 2, 3, 1, 4]
    program = [(EW["mul"], 0, 1, 0), (EW["add"], 5, 2, 0), (EW["tanh"], 6, 0, 0), (EW["mul"], 7, 3, 0),
               (EW["sub"], 8, 4, 0)]
    dense = Fused(inputs, modes, program, [])
    dense.lens[4] = ld
    status, want = dense.call(lib, dtype, (rows, cols))
    ok(lib, status)
    for out_ld in (cols, cols + 1, 2 * cols + 3):
        wide = np.full((rows + 1) * out_ld, 7.0, dtype)  # out starts one element in
        call = Fused(inputs, modes, program, [])
        call.lens[4] = ld
        ok(lib, lib.fc_fused_ew_ld(code(dtype), 5, call.ptrs, call.modes, call.lens, rows * cols, cols, 5, call.code,
                                   0, call.consts, ptr(wide[1:]), out_ld))
        got = wide[1:1 + rows * out_ld].reshape(rows, out_ld)[:, :cols]
        assert_same(got, want)
        written = np.zeros(wide.size, bool)
        for r in range(rows):
            written[1 + r * out_ld: 1 + r * out_ld + cols] = True
        assert (wide[~written] == 7.0).all()
    call = Fused(inputs, modes, program, [])
    call.lens[4] = ld
    out = np.empty((rows, 2 * cols), dtype)
    assert lib.fc_fused_ew_ld(code(dtype), 5, call.ptrs, call.modes, call.lens, rows * cols, cols, 5, call.code, 0,
                              call.consts, ptr(out), cols - 1) == lib.FC_ERR_SIZE
    # a FULL input inside the span of a strided out (here: its second row's storage)
    span = np.zeros((rows, 2 * cols), dtype)
    clash = Fused([span.ravel()[cols:][: rows * cols]], [0], [(EW["neg"], 0, 0, 0)], [])
    clash.ptrs[0] = ptr(span.ravel()[cols:])
    assert lib.fc_fused_ew_ld(code(dtype), 1, clash.ptrs, clash.modes, clash.lens, rows * cols, cols, 1, clash.code,
                              0, clash.consts, ptr(span), 2 * cols) == lib.FC_ERR_OVERLAP


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 17, 3), (2, 127, 5), (1, 300, 257), (3, 5, 1), (1, 0, 4)], ids=str)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: d.name)
@pytest.mark.parametrize("op", ["sum", "max"])
def test_reduce_with_a_row_stride(lib, dtype, shape, op):
    """fc_reduce_ld over a column block (rows ld apart) gives what fc_reduce gives on the block
    copied out, bit for bit (a float sum of one column: within the blocked row sum's bound, as
    the dense one sums a contiguous run pairwise); ld below the row length fails."""
    outer, red, inner = shape
    if op == "max" and red == 0:
        return
    ld = inner + 4
    wide = rng_values(np.random.default_rng(red + inner), (outer * red, ld), dtype)
    block = np.ascontiguousarray(wide[:, 2:2 + inner])
    want = reduce(lib, op, block, outer, red, inner)
    out_dt = np.int64 if (op == "sum" and np.dtype(dtype) == np.bool_) else dtype
    got = np.empty((outer, inner), out_dt)
    ok(lib, lib.fc_reduce_ld(code(dtype), REDUCE[op], outer, red, inner, ld,
                             ffi.cast("void*", wide.ctypes.data + 2 * wide.itemsize), ptr(got)))
    if op == "sum" and inner == 1 and np.dtype(dtype).kind == "f":
        abs_sum = np.abs(block.astype(np.float64)).reshape(outer, red).sum(1)
        bound = (130 + red / 128) * np.finfo(np.float64).eps * abs_sum
        ulp = np.spacing(np.abs(want.ravel())).astype(np.float64)
        assert (np.abs(got.ravel().astype(np.float64) - want.ravel()) <= 2 * ulp + bound).all()
    else:
        assert_same(got, want)
    assert lib.fc_reduce_ld(code(dtype), REDUCE[op], outer, red, inner, inner - 1, ptr(wide), ptr(got)) == (
        lib.FC_ERR_SIZE if inner > 0 else FC_OK)
