"""The cpu backend (C++ executor + C kernels) against the reference backend, its memory planner,
its fallback to the reference implementation, and the executor's C ABI.

Tolerances (cpu vs reference, same inputs):
- float64: 1e-12 relative to the largest magnitude of the tensor.  Both sides round every
  operation to float64; they differ in the order of sums (GEMM blocking, the pairwise / blocked
  reductions) and in exp/log/tanh implementations (glibc vs numpy's own, <= 1 ulp each).  The
  worst case in the suite is a tanh gradient 1 - tanh(x)^2 at |x| ~ 3, where one ulp of tanh
  becomes ~1e-14 of the result.
- float32: 1e-5 relative (about 80 ulp) elementwise, plus 1e-6 of the largest magnitude: a few
  ulp from exp/tanh implementations and float32 GEMM (fc_sgemm accumulates in float32 with FMA;
  numpy calls OpenBLAS), times a problem-size factor: sums of up to ~100 terms here, and backward
  graphs that subtract nearly equal terms (softmax's s * (g - sum(g * s)) measured 50 ulp of the
  result).  The same bound the op suite uses for float32 against torch, for the same reasons.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

import flexcore as fc
from flexcore import _native
from flexcore.backends import cpu as cpu_backend
from flexcore.backends import lowering, memory
from flexcore.ir.core import REGISTRY, FlexcoreError, ShapeError, apply

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ir"))
from op_cases import CASES, Case

REF, CPU = "reference", "cpu"


@pytest.fixture(scope="module", autouse=True)
def native_built():
    """Skip when the extension was never built (a pure-Python install); fail when it was built
    but does not load (see tests/native/conftest.py)."""
    if _native.available:
        return
    if not any(Path(_native.__file__).parent.glob("_flexcore*.so")):
        pytest.skip("native extension not built (pip install -e .)")
    pytest.fail(f"native extension is built but does not load: {_native.load_error}")


def assert_close(got, want, dtype, what=""):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.shape, want.shape, got.dtype, want.dtype)
    if want.dtype.kind != "f":
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    finite = want[np.isfinite(want)]
    scale = float(np.abs(finite).max()) if finite.size else 0.0
    if np.dtype(dtype) == np.float64:
        rtol, atol = 1e-12, 1e-12 * scale
    else:
        rtol, atol = 1e-5, 1e-6 * scale
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


# ---------------------------------------------------------------------------------------
# every op case of the registry suite, forward and backward
# ---------------------------------------------------------------------------------------
def setup_case(c: Case, float_dtype):
    rng = np.random.default_rng(zlib.crc32(c.id.encode()))
    arrays = c.draw(rng)
    phs, feeds = [], []
    for i, (spec, a) in enumerate(zip(c.inputs, arrays, strict=True)):
        dt = spec.resolve_dtype(float_dtype)
        phs.append(fc.placeholder(spec.shape, dt, name=f"in{i}"))
        feeds.append(np.asarray(a).astype(dt))
    outs = c.build(*phs)
    outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
    return rng, phs, feeds, outs


def both(phs, outs, feeds):
    ref = fc.function(phs, outs, backend=REF)(*feeds)
    got = fc.function(phs, outs, backend=CPU)(*feeds)
    return got, ref


DTYPES = [pytest.param(np.float64, id="f64"), pytest.param(np.float32, id="f32")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [pytest.param(c, id=c.id) for c in CASES])
def test_forward_matches_reference(c, dtype):
    _, phs, feeds, outs = setup_case(c, dtype)
    got, ref = both(phs, outs, feeds)
    for k, (g, r) in enumerate(zip(got, ref, strict=True)):
        assert_close(g, r, dtype, f"{c.id} output {k}")


def _differentiable(c: Case) -> bool:
    return c.grad != "none" and any(s.is_float and s.diff for s in c.inputs)


def case_gradients(c, dtype):
    """The case's placeholders, feeds and the gradients of a random weighting of its outputs
    with respect to its differentiable float inputs (shared by the backend suites)."""
    rng, phs, feeds, outs = setup_case(c, dtype)
    weights = [rng.standard_normal(o.shape) for o in outs]
    cost = None
    for o, w in zip(outs, weights, strict=True):
        t = fc.sum(o * fc.const(w.astype(o.dtype)))
        cost = t if cost is None else cost + t
    wrt = [phs[i] for i, s in enumerate(c.inputs) if s.is_float and s.diff]
    return phs, feeds, fc.grad(cost, wrt, disconnected="zero")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [pytest.param(c, id=c.id) for c in CASES if _differentiable(c)])
def test_backward_matches_reference(c, dtype):
    phs, feeds, grads = case_gradients(c, dtype)
    got, ref = both(phs, grads, feeds)
    for k, (g, r) in enumerate(zip(got, ref, strict=True)):
        assert_close(g, r, dtype, f"{c.id} gradient {k}")


def _edge_cases():
    """(id, input specs, build, feeds): layouts the op cases do not reach (empty and 0-d values,
    views into views, broadcast batches, ranks above the kernels' 8 axes, integer and bool ops)."""
    rng = np.random.default_rng(0)
    f64, i64 = np.float64, np.int64
    x9 = rng.standard_normal((2, 1, 2, 1, 2, 2, 1, 2, 2, 2))
    rev = tuple(reversed(range(10)))
    cases = [
        ("matmul k=0", [((3, 0), f64), ((0, 4), f64)], lambda a, b: [a @ b], [np.zeros((3, 0)), np.zeros((0, 4))]),
        ("matmul broadcast batch", [((2, 1, 3, 4), f64), ((5, 4, 2), f64)],
         lambda a, b: [a @ b, fc.permute(b, (0, 2, 1)) @ fc.permute(a, (0, 1, 3, 2))],
         [rng.standard_normal((2, 1, 3, 4)), rng.standard_normal((5, 4, 2))]),
        ("matmul strided views", [((2, 1, 4, 4), f64), ((5, 4, 4), f64)],
         lambda a, b: [fc.permute(a, (0, 1, 3, 2)) @ fc.permute(b, (0, 2, 1)),
                       b[:, 1:3] @ fc.permute(a[1], (0, 2, 1)), fc.permute(a, (1, 0, 2, 3)) @ b[:1]],
         [rng.standard_normal((2, 1, 4, 4)), rng.standard_normal((5, 4, 4))]),
        ("empty slices", [((3, 4), f64)], lambda x: [fc.concat([x[1:1], x], axis=0), x[:, 2:2] * 2.0],
         [rng.standard_normal((3, 4))]),
        ("empty sums", [((0, 4), f64)], lambda x: [fc.sum(x, 0), fc.sum(x)], [np.zeros((0, 4))]),
        ("scalars", [((), f64)], lambda x: [x * 2.0, fc.exp(x), fc.sum(x), fc.maximum(x, 0.5)], [np.array(1.5)]),
        ("int and bool", [((3, 4), i64), ((3, 4), np.bool_)],
         lambda a, b: [a + a, a * 3, -a, fc.maximum(a, a * 2), fc.sum(b), fc.sum(b, 1), fc.max(b, 0),
                       fc.cast(b, "float64"), fc.where(b, a, a * 0), fc.lt(a, 3)],
         [rng.integers(-5, 5, (3, 4)), rng.random((3, 4)) < 0.5]),
        ("rank 10", [(x9.shape, f64)],
         lambda x: [x + fc.permute(x, rev).T, fc.sum(fc.permute(x, rev), (0, 2, 4, 6, 8))], [x9]),
        ("reductions over split axes", [((3, 4, 5, 6), f64)],
         lambda x: [fc.sum(x, (0, 2)), fc.max(x, (1, 3)), fc.sum(x, (1, 2)),
                    fc.max(fc.permute(x, (3, 2, 1, 0)), (0, 1), keepdims=True),
                    # outer and inner axes (a conv bias gradient): two REDUCEs, no permute
                    fc.sum(x, (0, 2, 3), keepdims=True), fc.max(x, (0, 3)), fc.sum(x[:, 1:3], (0, 2, 3))],
         [rng.standard_normal((3, 4, 5, 6))]),
        ("strided elementwise", [((4, 6), f64)],
         lambda x: [x[::2, 1::3] * fc.permute(x, (1, 0))[::3, :4:2], fc.broadcast_to(x[0:1], (3, 4, 6)) + x],
         [rng.standard_normal((4, 6))]),
        ("pad and unslice", [((3, 4), f64)],
         lambda x: [fc.pad(x, ((1, 2), (0, 1)), 3.5),
                    apply("unslice", x, shape=(7, 9), starts=(1, 0), stops=(7, 8), steps=(2, 2))],
         [rng.standard_normal((3, 4))]),
        ("random streams", [((), i64)],
         lambda s: [apply("random_uniform", s, shape=(3, 5), salt=2**64 - 1, dtype="float64"),
                    apply("random_uniform", s, shape=(7,), salt=3, dtype="float32")], [np.array(123)]),
        ("one value, many outputs", [((3,), f64)], lambda x: [x, x, x * 1.0, fc.reshape(x, (3, 1))],
         [rng.standard_normal(3)]),
    ]
    return [pytest.param(*c[1:], id=c[0]) for c in cases]


@pytest.mark.parametrize(("specs", "build", "feeds"), _edge_cases())
def test_edge_layouts_match_reference(specs, build, feeds):
    phs = [fc.placeholder(s, d) for s, d in specs]
    got, ref = both(phs, build(*phs), feeds)
    for k, (g, r) in enumerate(zip(got, ref, strict=True)):
        assert_close(g, r, np.float64, f"output {k}")


def test_float32_bias_gradient_sum_is_accurate():
    """sum over (N, H, W) of float32 NCHW (two REDUCEs: each row's sum, then over N) stays within
    a few float32 ulps of the exact sum."""
    x = np.random.default_rng(5).standard_normal((7, 3, 17, 19)).astype(np.float32) + 0.25
    ph = fc.placeholder(x.shape, np.float32)
    (got,) = fc.function([ph], [fc.sum(ph, (0, 2, 3))], backend=CPU)(x)
    exact = x.astype(np.float64).sum((0, 2, 3))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, exact, rtol=4 * 2.0**-24 * float(np.abs(x).sum() / np.abs(exact).min()), atol=0)


def test_no_op_of_the_suite_falls_back():
    """Every primitive (and every composite's parts) has a kernel: lowering all cases needs no
    CALLBACK instruction."""
    used = set()
    for c in CASES:
        _, phs, _, outs = setup_case(c, np.float64)
        used |= fc.function(phs, outs, backend=CPU)._kernels.lowered.fallback_ops
    assert used == set()


# ---------------------------------------------------------------------------------------
# the program a plan becomes
# ---------------------------------------------------------------------------------------
def decode(low: lowering.Lowered):
    """(opcode, operand buffer ids) of every instruction, decoded from the flat code."""
    code, out, pos = low.code, [], 0
    while pos < len(code):
        op, n_in, n_out, n_int = (int(v) for v in code[pos : pos + 4])
        ids = [int(v) for v in code[pos + 5 : pos + 5 + n_in + n_out]]
        out.append((op, ids))
        pos += 5 + n_in + n_out + n_int
    return out


def check_memory_plan(low: lowering.Lowered) -> None:
    """The planner's invariants, checked from the final buffer table and the code alone:
    no two arena buffers alive at one instruction share a byte, aliases are used only while
    their root lives, the arena is no bigger than the values it holds laid end to end."""
    bufs = low.buffers
    instrs = decode(low)

    def root(b):
        while bufs[b][0] == lowering.ALIAS:
            b = int(bufs[b][1])
        return b

    touched: dict[int, list[int]] = {}
    for i, (_, ids) in enumerate(instrs):
        for b in ids:
            touched.setdefault(b, []).append(i)
    # Lifetime of each arena root: every instruction that touches it or an alias of it.
    life: dict[int, tuple[int, int]] = {}
    for b, uses in touched.items():
        r = root(b)
        if bufs[r][0] == lowering.ARENA:
            lo, hi = life.get(r, (uses[0], uses[-1]))
            life[r] = (min(lo, uses[0]), max(hi, uses[-1]))
    arena = [(r, int(bufs[r][2]), int(bufs[r][3])) for r in life if bufs[r][3] > 0]
    for i, (a, oa, na) in enumerate(arena):
        assert oa % memory.ALIGN == 0
        assert oa + na <= low.arena_bytes
        for b, ob, nb in arena[i + 1 :]:
            (s1, e1), (s2, e2) = life[a], life[b]
            if s1 <= e2 and s2 <= e1:
                assert oa + na <= ob or ob + nb <= oa, f"buffers {a} and {b} are alive together and overlap"
    # The planner's own intervals cover what the code does (an alias extends its root's life).
    planned = {iv.key: iv for iv in low.intervals}
    for r, (s, e) in life.items():
        assert planned[r].start <= s and e <= planned[r].end
    for b, uses in touched.items():
        r = root(b)
        if b != r and bufs[r][0] == lowering.ARENA:
            assert planned[r].start <= min(uses) and max(uses) <= planned[r].end, f"alias {b} outlives {r}"
    naive = sum(memory.align_up(int(bufs[r][3])) for r in life)
    assert low.arena_bytes <= naive
    assert memory.overlaps(low.intervals, low.offsets) == []


def mlp_step(dtype, sizes=(784, 300, 150, 10), batch=64, seed=0):
    """An SGD training step of an MLP (relu hidden layers, softmax cross-entropy)."""
    rng = np.random.default_rng(seed)
    x = fc.placeholder((batch, sizes[0]), dtype, name="x")
    y = fc.placeholder((batch,), np.int64, name="y")
    params, h = [], x
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        w = fc.shared((rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype), name=f"w{i}")
        bias = fc.shared(np.zeros(b, dtype), name=f"b{i}")
        params += [w, bias]
        h = h @ w + bias
        if i < len(sizes) - 2:
            h = fc.relu(h)
    loss = fc.softmax_cross_entropy(h, y)
    updates = [(p, p - 0.1 * g) for p, g in zip(params, fc.grad(loss, params), strict=True)]
    feeds = (rng.standard_normal((batch, sizes[0])).astype(dtype), rng.integers(0, sizes[-1], batch))
    return [x, y], loss, updates, params, feeds


def test_memory_plan_of_a_training_step():
    ins, loss, updates, _, _ = mlp_step(np.float32)
    f = fc.function(ins, loss, updates=updates, backend=CPU)
    low = f._kernels.lowered
    check_memory_plan(low)
    # Values are reused: the arena is smaller than the plan's values laid end to end.
    naive = sum(memory.align_up(iv.size) for iv in low.intervals)
    assert low.arena_bytes < naive
    # peak_bytes is the executor's footprint: its arena plus every array of the call.
    ext = sum(math.prod(s) * np.dtype(d).itemsize for d, s in low.input_specs + low.param_specs + low.output_specs)
    assert f.peak_bytes == low.arena_bytes + ext + sum(c.nbytes for c in low.consts)
    assert f.peak_bytes == f.plan.peak_bytes == f._kernels.program.arena_bytes + ext + sum(c.nbytes for c in low.consts)


@pytest.mark.parametrize("c", [pytest.param(c, id=c.id) for c in CASES if _differentiable(c)][::3])
def test_memory_plan_of_op_backward_graphs(c):
    rng, phs, _, outs = setup_case(c, np.float64)
    cost = sum((fc.sum(o * fc.const(rng.standard_normal(o.shape))) for o in outs), fc.const(0.0))
    wrt = [phs[i] for i, s in enumerate(c.inputs) if s.is_float and s.diff]
    f = fc.function(phs, [*outs, *fc.grad(cost, wrt, disconnected="zero")], backend=CPU)
    check_memory_plan(f._kernels.lowered)


def test_planner_on_random_lifetimes():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        starts = rng.integers(0, 30, n)
        ivs = [
            memory.Interval(k, int(rng.choice([0, 1, 4, 64, 100, 4096])), int(s), int(s + rng.integers(0, 10)))
            for k, s in enumerate(starts)
        ]
        offsets, arena = memory.plan_offsets(ivs)
        assert memory.overlaps(ivs, offsets) == []
        assert all(o % memory.ALIGN == 0 for o in offsets.values())
        assert arena <= sum(memory.align_up(iv.size) for iv in ivs)
        # ... and no smaller than what is alive at once (true of any valid placement).
        assert arena >= max(sum(iv.size for iv in ivs if iv.start <= t <= iv.end) for t in range(40))


def test_planner_reuses_the_freed_range():
    # a dies before c is born: c takes a's place; b, alive throughout, keeps its own.
    ivs = [memory.Interval(0, 256, 0, 1), memory.Interval(1, 128, 0, 5), memory.Interval(2, 200, 2, 3)]
    offsets, arena = memory.plan_offsets(ivs)
    assert offsets[2] == offsets[0] and arena == 256 + 128


def test_outputs_are_produced_in_place_and_copies_only_where_needed():
    x = fc.placeholder((4, 3), np.float64, name="x")
    w = fc.shared(np.arange(12.0).reshape(3, 4), name="w")
    y = fc.tanh(x)
    f = fc.function([x], [y, y, x, w.reshape(12), fc.permute(y, (1, 0))], backend=CPU)
    low = f._kernels.lowered
    ops = [op for op, _ in decode(low)]
    # tanh writes its OUTPUT buffer; the second y, x, w and the transpose are copies.
    assert ops.count(lowering.UNARY) == 1
    assert ops.count(lowering.COPY) == 3 and ops.count(lowering.COPY_STRIDED) == 1
    xv = np.linspace(-1, 1, 12).reshape(4, 3)
    y1, y2, xo, wo, yt = f(xv)
    assert_close(y1, np.tanh(xv), np.float64)
    assert y1 is not y2 and not np.shares_memory(y1, y2)
    np.testing.assert_array_equal(y2, y1)
    np.testing.assert_array_equal(xo, xv)
    np.testing.assert_array_equal(yt, y1.T)
    wo[:] = -1  # the result is the caller's: the parameter does not change
    np.testing.assert_array_equal(w.get_value().reshape(12), np.arange(12.0))


def test_views_read_in_place():
    """permute / broadcast / slice / reshape feed kernels as strided views: no copy instruction,
    and a transposed matrix is GEMM's trans flag."""
    a = fc.placeholder((5, 4), np.float64, name="a")
    b = fc.placeholder((5, 6), np.float64, name="b")
    c = fc.placeholder((4,), np.float64, name="c")
    prod = fc.permute(a, (1, 0)) @ b  # (4, 6)
    ew = fc.permute(a, (1, 0))[1:3] * fc.broadcast_to(fc.reshape(c, (4, 1)), (4, 5))[1:3]
    f = fc.function([a, b, c], [prod, ew], backend=CPU)
    ops = [op for op, _ in decode(f._kernels.lowered)]
    assert lowering.COPY not in ops and lowering.COPY_STRIDED not in ops
    av, bv, cv = (np.random.default_rng(3).standard_normal(s) for s in ((5, 4), (5, 6), (4,)))
    got = f(av, bv, cv)
    np.testing.assert_allclose(got[0], av.T @ bv, rtol=1e-13)
    np.testing.assert_array_equal(got[1], av.T[1:3] * cv[1:3, None])


def test_updates_are_simultaneous_and_not_copied():
    a = fc.shared(np.array([1.0, 2.0]), name="a")
    b = fc.shared(np.array([10.0, 20.0]), name="b")
    f = fc.function([], [], updates=[(a, b), (b, a + b)], backend=CPU)
    f()
    np.testing.assert_array_equal(a.get_value(), [10.0, 20.0])
    np.testing.assert_array_equal(b.get_value(), [11.0, 22.0])
    va, vb = a.storage.get(), b.storage.get()
    assert a.storage.version == b.storage.version == 1
    f()
    assert a.storage.get() is not va and b.storage.get() is not vb
    np.testing.assert_array_equal(a.get_value(), [11.0, 22.0])
    np.testing.assert_array_equal(b.get_value(), [21.0, 42.0])


def test_storage_replace_checks_what_it_takes():
    s = fc.shared(np.zeros((2, 3)), name="s")
    new = np.ones((2, 3))
    s.storage.replace(new)
    assert s.storage.get() is new and s.storage.version == 1
    with pytest.raises(ShapeError, match="expected float64"):
        s.storage.replace(np.ones((3, 2)))
    with pytest.raises(ShapeError, match="expected float64"):
        s.storage.replace(np.ones((2, 3), np.float32))
    with pytest.raises(FlexcoreError, match="C-contiguous"):
        s.storage.replace(np.ones((3, 2)).T)


# ---------------------------------------------------------------------------------------
# fallback, errors
# ---------------------------------------------------------------------------------------
def test_an_op_without_lowering_runs_on_its_reference_and_says_so_once(monkeypatch, capsys):
    monkeypatch.delitem(lowering.LOWERINGS, "tanh")
    monkeypatch.setattr(cpu_backend, "_announced", set())
    x = fc.placeholder((3, 4), np.float64, name="x")
    w = fc.shared(np.linspace(-1, 1, 8).reshape(4, 2), name="w")
    loss = fc.sum(fc.tanh(x @ w) * 3.0)
    g = fc.grad(loss, w)
    xv = np.random.default_rng(0).standard_normal((3, 4))
    f = fc.function([x], [loss, g], backend=CPU)
    assert "tanh" in f._kernels.lowered.fallback_ops
    assert lowering.CALLBACK in [op for op, _ in decode(f._kernels.lowered)]
    f2 = fc.function([x], fc.tanh(x), backend=CPU)  # a second plan with tanh: no second notice
    err = capsys.readouterr().err
    assert err.count("no C kernel for tanh") == 1, err
    assert "it runs on the reference implementation" in err
    for got, want in zip(f(xv), fc.function([x], [loss, g], backend=REF)(xv), strict=True):
        assert_close(got, want, np.float64)
    np.testing.assert_array_equal(f2(xv), np.tanh(xv))  # the reference itself: exact


def test_exceptions_in_a_callback_propagate(monkeypatch):
    monkeypatch.delitem(lowering.LOWERINGS, "gather")
    table = fc.placeholder((4, 2), np.float64, name="table")
    idx = fc.placeholder((3,), np.int64, name="idx")
    f = fc.function([table, idx], fc.gather(table, idx) * 2.0, backend=CPU)
    tv = np.arange(8.0).reshape(4, 2)
    with pytest.raises(FlexcoreError, match=r"while computing gather .*index out of range"):
        f(tv, np.array([0, 7, 1]))
    # The program is intact: the next call works.
    np.testing.assert_array_equal(f(tv, np.array([3, 0, 1])), tv[[3, 0, 1]] * 2.0)

    def boom(*args, **kw):
        raise ZeroDivisionError("custom failure")

    # Any exception of the reference implementation comes out of the run as itself.
    monkeypatch.setitem(REGISTRY, "gather", dataclasses.replace(REGISTRY["gather"], impl=boom))
    g = fc.function([table, idx], fc.gather(table, idx) + 1.0, backend=CPU)
    with pytest.raises(ZeroDivisionError, match="custom failure"):
        g(tv, np.array([0, 1, 2]))


def test_a_kernel_error_names_the_node():
    table = fc.placeholder((4, 2), np.float32, name="table")
    idx = fc.placeholder((3,), np.int64, name="idx")
    f = fc.function([table, idx], fc.gather(table, idx), backend=CPU)
    with pytest.raises(FlexcoreError, match=r"while computing gather \(gather, shape \(3, 2\)\).*index"):
        f(np.zeros((4, 2), np.float32), np.array([0, -1, 2]))


def test_program_run_checks_its_arrays():
    x = fc.placeholder((2, 3), np.float32, name="x")
    f = fc.function([x], fc.exp(x), backend=CPU)
    prog = f._kernels.program
    good = np.zeros((2, 3), np.float32)
    out = np.empty((2, 3), np.float32)
    prog.run([good], [], [out], None)
    np.testing.assert_array_equal(out, 1.0)
    with pytest.raises(ValueError, match="input #0"):
        prog.run([np.zeros((2, 3), np.float64)], [], [out], None)
    with pytest.raises(ValueError, match="input #0"):
        prog.run([np.zeros((3, 2), np.float32).T], [], [out], None)
    with pytest.raises(ValueError, match="expected 1 output"):
        prog.run([good], [], [], None)
    ro = np.empty((2, 3), np.float32)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        prog.run([good], [], [ro], None)
    with pytest.raises(RuntimeError, match="overlaps"):
        prog.run([good], [], [good], None)


def test_a_callback_cannot_rerun_its_program(monkeypatch):
    monkeypatch.delitem(lowering.LOWERINGS, "exp")
    x = fc.placeholder((2,), np.float64, name="x")
    f = fc.function([x], fc.exp(x), backend=CPU)
    prog = f._kernels.program

    def reenter(index, arrays):
        prog.run([np.zeros(2)], [], [np.empty(2)], reenter)

    with pytest.raises(RuntimeError, match="re-entered"):
        prog.run([np.zeros(2)], [], [np.empty(2)], reenter)


# ---------------------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------------------
def test_the_gil_is_released_during_a_run():
    # A worker thread makes one long compiled call while this thread records the time in a loop.
    # Holding the GIL through the C++ run, the worker would let this thread run no bytecode at
    # all between entering and leaving the run (switching only happens between bytecodes), so
    # no timestamp could fall in the middle half of the call; released, this thread runs there.
    # Under load it still gets the CPU at some point of a call of >= 0.2 s, so the check does not
    # depend on how fast either thread is.
    n = 400
    a = fc.placeholder((n, n), np.float64, name="a")
    av = np.random.default_rng(0).standard_normal((n, n)) * 0.01
    depth = 2
    while True:  # a call long enough for its middle half to span many scheduler slices
        y = a
        for _ in range(depth):
            y = fc.tanh(y @ a)
        f = fc.function([a], fc.sum(y), backend=CPU)
        t0 = time.perf_counter()
        f(av)
        if time.perf_counter() - t0 > 0.2 or depth > 4096:
            break
        depth *= 2
    span: list[float] = []

    def call():
        span.append(time.perf_counter())
        f(av)
        span.append(time.perf_counter())

    stamps: list[float] = []
    worker = threading.Thread(target=call)
    worker.start()
    while worker.is_alive():
        stamps.append(time.perf_counter())
    worker.join()
    begin, end = span
    quarter = (end - begin) / 4
    inside = [s for s in stamps if begin + quarter < s < end - quarter]
    assert inside, f"no Python ran during the middle of a {end - begin:.3f} s run: the GIL was held"


def test_two_threads_run_one_program():
    x = fc.placeholder((50, 50), np.float64, name="x")
    f = fc.function([x], fc.tanh(x @ x), backend=CPU)
    xs = [np.random.default_rng(i).standard_normal((50, 50)) * 0.1 for i in range(2)]
    want = [np.tanh(v @ v) for v in xs]
    errors = []

    def work(i):
        try:
            for _ in range(200):
                np.testing.assert_allclose(f(xs[i]), want[i], rtol=1e-12)
        except Exception as e:
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []


# ---------------------------------------------------------------------------------------
# training: the same parameters after three steps
# ---------------------------------------------------------------------------------------
def _train(build, backend, dtype, steps=3):
    """The network's weights before and after `steps` SGD steps (one epoch, no shuffling)."""
    net, (x, y) = build(dtype)
    net.compile(len(x) // steps, optimizer="sgd", backend=backend, dtype=dtype)
    before = net.weights()
    net.fit((x, y), epochs=1, learning_rate=0.1, shuffle=False, verbose=False)
    return before, net.weights()


def _mlp_net(dtype):
    from flexcore import ActivationLayer, InputLayer, Network

    net = Network("mlp", seed=0)
    x = InputLayer((20,), name="x")
    h = ActivationLayer((32,), activation="relu", name="h")
    h2 = ActivationLayer((16,), activation="tanh", name="h2")
    y = ActivationLayer((5,), activation="softmax", output=True, loss="negative_log_likelihood", name="y")
    net.connect_dense(x, h)
    net.connect_dense(h, h2)
    net.connect_dense(h2, y)
    rng = np.random.default_rng(0)
    return net, (rng.standard_normal((24, 20)).astype(dtype), rng.integers(0, 5, 24))


def _lstm_net(dtype):
    from flexcore import ActivationLayer, InputLayer, Network
    from flexcore.nn import cells

    net = Network("lstm", seed=0)
    x = InputLayer((6,), sequence_length=5, name="x")
    cell = cells.lstm(net, x, 8)
    y = ActivationLayer((3,), activation="softmax", output=True, loss="negative_log_likelihood", name="y")
    net.connect_dense(cell.out, y)
    rng = np.random.default_rng(1)
    return net, (rng.standard_normal((12, 5, 6)).astype(dtype), rng.integers(0, 3, 12))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("build", [_mlp_net, _lstm_net], ids=["mlp", "lstm"])
def test_training_gives_the_reference_parameters(build, dtype):
    start, got = _train(build, CPU, dtype)
    start_ref, want = _train(build, REF, dtype)
    assert got.keys() == want.keys() == start.keys()
    tol = 1e-12 if dtype == "float64" else 1e-5
    for k in want:
        np.testing.assert_array_equal(start[k], start_ref[k])
        assert not np.array_equal(want[k], start[k]), f"{k} did not train"
        scale = max(float(np.abs(want[k]).max()), 1e-3)
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=tol * scale, err_msg=k)


def test_mlp_training_step_matches_reference():
    for dtype in (np.float64, np.float32):
        results = {}
        for backend in (CPU, REF):
            ins, loss, updates, params, feeds = mlp_step(dtype)
            f = fc.function(ins, loss, updates=updates, backend=backend)
            losses = [float(f(*feeds)) for _ in range(3)]
            results[backend] = (losses, [p.get_value() for p in params])
        (lc, pc), (lr, pr) = results[CPU], results[REF]
        assert_close(np.array(lc, dtype), np.array(lr, dtype), dtype)
        for a, b in zip(pc, pr, strict=True):
            assert_close(a, b, dtype)


# ---------------------------------------------------------------------------------------
# the raw C ABI rejects malformed programs
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cabi():
    from flexcore import native_cabi

    return native_cabi.ffi, native_cabi.lib()


def _create(cabi, buffers, code, fimm=(), consts=(), n_in=1, n_par=0, n_out=1):
    ffi, lib = cabi
    b = np.ascontiguousarray(np.array(buffers, np.int64).reshape(-1))
    c = np.ascontiguousarray(np.array(code, np.int64))
    d = np.ascontiguousarray(np.array(fimm, np.float64))
    cptrs = ffi.new("void*[]", [ffi.cast("void*", a.ctypes.data) for a in consts]) if consts else ffi.NULL
    out = ffi.new("fc_program**")
    status = lib.fc_program_create(
        ffi.cast("int64_t*", b.ctypes.data), len(b) // 4, cptrs, len(consts), n_in, n_par, n_out,
        ffi.cast("int64_t*", c.ctypes.data), len(c), ffi.cast("double*", d.ctypes.data), len(d), out,
    )
    return status, out[0]


def _ptrs(ffi, arrays):
    return ffi.new("void*[]", [ffi.cast("void*", a.ctypes.data) for a in arrays])


IN, OUT, ARENA, ALIAS = lowering.INPUT, lowering.OUTPUT, lowering.ARENA, lowering.ALIAS
# y = exp(x) for 4 doubles, through an arena temporary: x -> t (exp) -> y (copy)
GOOD_BUFFERS = [[IN, 0, 0, 32], [ARENA, 0, 0, 32], [OUT, 0, 0, 32]]
GOOD_CODE = [lowering.UNARY, 1, 1, 3, 0, 0, 1, 1, 1, 4, lowering.COPY, 1, 1, 1, 0, 1, 2, 32]


def test_a_hand_written_program_runs(cabi):
    ffi, lib = cabi
    status, prog = _create(cabi, GOOD_BUFFERS, GOOD_CODE)
    assert status == lib.FC_OK
    try:
        x, y = np.arange(4.0), np.zeros(4)
        assert lib.fc_program_run(prog, _ptrs(ffi, [x]), ffi.NULL, _ptrs(ffi, [y]), ffi.NULL, ffi.NULL) == lib.FC_OK
        np.testing.assert_allclose(y, np.exp(x), rtol=1e-15)
        size = ffi.new("int64_t*")
        assert lib.fc_program_arena_bytes(prog, size) == lib.FC_OK and size[0] == 32
        # An output that overlaps the input, and a misaligned double, are refused.
        run = lib.fc_program_run
        assert run(prog, _ptrs(ffi, [x]), ffi.NULL, _ptrs(ffi, [x]), ffi.NULL, ffi.NULL) == lib.FC_ERR_OVERLAP
        raw = np.zeros(5 * 8 + 1, np.uint8)
        odd = ffi.new("void*[]", [ffi.cast("void*", raw.ctypes.data + 1)])
        assert run(prog, odd, ffi.NULL, _ptrs(ffi, [y]), ffi.NULL, ffi.NULL) == lib.FC_ERR_ALIGN
        assert run(prog, ffi.NULL, ffi.NULL, _ptrs(ffi, [y]), ffi.NULL, ffi.NULL) == lib.FC_ERR_NULL
    finally:
        assert lib.fc_program_destroy(prog) == lib.FC_OK
    assert lib.fc_program_destroy(ffi.NULL) == lib.FC_OK


def test_lowering_codes_are_the_headers(cabi):
    """The lowering's copies of the C enums (opcodes, buffer kinds, dtypes, op codes) agree with
    the headers, read through the cffi cdef (which test_cabi.py checks against the headers)."""
    ffi, _ = cabi

    def enum(name, prefix):
        return {k.removeprefix(prefix): v for k, v in ffi.typeof(name).relements.items() if not k.endswith("COUNT")}

    assert enum("fc_opcode", "FC_OPC_") == lowering.OPCODES
    kinds = enum("fc_buffer_kind", "FC_BUF_")
    kinds.pop("KIND_COUNT", None)
    assert kinds == lowering.BUFFER_KINDS
    assert enum("fc_dtype", "FC_") == {"F32": 0, "F64": 1, "I64": 2, "BOOL": 3}
    assert {str(k): v for k, v in lowering.DTYPE_CODE.items()} == {"float32": 0, "float64": 1, "int64": 2, "bool": 3}
    unary = enum("fc_unary_op", "FC_UNARY_")
    assert {k: unary[k.upper()] for k in lowering.UNARY_CODE} == lowering.UNARY_CODE
    binary = enum("fc_binary_op", "FC_BINARY_")
    assert {k: binary[k.upper()] for k in lowering.BINARY_CODE} == lowering.BINARY_CODE
    cmp = enum("fc_compare_op", "FC_CMP_")
    assert {k: cmp[k.upper()] for k in lowering.COMPARE_CODE} == lowering.COMPARE_CODE
    red = enum("fc_reduce_op", "FC_REDUCE_")
    assert {k: red[k.upper()] for k in lowering.REDUCE_CODE} == lowering.REDUCE_CODE
    acts = enum("fc_act", "FC_ACT_")
    assert {k: acts[k.upper() if k != "identity" else "NONE"] for k in lowering.ACT_CODE} == lowering.ACT_CODE
    assert ffi.typeof("fc_kernel_limit").relements["FC_MAX_NDIM"] == lowering.MAX_NDIM


def _run_program(cabi, buffers, code, inputs, outputs, fimm=()):
    ffi, lib = cabi
    status, prog = _create(cabi, buffers, code, fimm, n_in=len(inputs), n_out=len(outputs))
    assert status == lib.FC_OK
    try:
        null = ffi.NULL
        assert lib.fc_program_run(prog, _ptrs(ffi, inputs), null, _ptrs(ffi, outputs), null, null) == lib.FC_OK
    finally:
        lib.fc_program_destroy(prog)


def test_opcodes_the_lowering_does_not_emit(cabi):
    """SOFTMAX, and GEMM over a batch with a bias and an activation, run as documented."""
    x = np.random.default_rng(0).standard_normal((2, 3))
    y, ly = np.empty((2, 3)), np.empty((2, 3))
    sm = lowering.SOFTMAX
    code = [sm, 1, 1, 4, 0, 0, 1, 1, 0, 2, 3, sm, 1, 1, 4, 0, 0, 2, 1, 1, 2, 3]
    _run_program(cabi, [[IN, 0, 0, 48], [OUT, 0, 0, 48], [OUT, 1, 0, 48]], code, [x], [y, ly])
    e = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(1, keepdims=True), rtol=1e-14)
    np.testing.assert_allclose(ly, np.log(e / e.sum(1, keepdims=True)), rtol=1e-14)

    rng = np.random.default_rng(1)
    a, b, bias = rng.standard_normal((2, 2, 3)), rng.standard_normal((3, 4)), rng.standard_normal(4)
    c = np.empty((2, 2, 4))
    # c_i = tanh(a_i @ b + bias): batch 2, m 2, n 4, k 3; b broadcast (stride 0); act 3 = tanh
    ints = [1, 0, 0, 2, 2, 4, 3, 3, 6, 4, 0, 4, 8, 3]
    code = [lowering.GEMM, 3, 1, len(ints), 0, 0, 1, 2, 3, *ints]
    buffers = [[IN, 0, 0, 96], [IN, 1, 0, 96], [IN, 2, 0, 32], [OUT, 0, 0, 128]]
    _run_program(cabi, buffers, code, [a, b, bias], [c])
    np.testing.assert_allclose(c, np.tanh(a @ b + bias), rtol=1e-13)


def _bad_programs():
    """(what, buffers, code, fimm) of malformed programs."""
    cp, un = lowering.COPY, lowering.UNARY
    yield "buffer id out of range", GOOD_BUFFERS, [cp, 1, 1, 1, 0, 0, 7, 32], ()
    yield "negative buffer id", GOOD_BUFFERS, [cp, 1, 1, 1, 0, -1, 1, 32], ()
    yield "copy past the end", GOOD_BUFFERS, [cp, 1, 1, 1, 0, 0, 1, 40], ()
    yield "exp past the end", GOOD_BUFFERS, [un, 1, 1, 3, 0, 0, 2, 1, 1, 5], ()
    yield "write to an input", GOOD_BUFFERS, [cp, 1, 1, 1, 0, 1, 0, 32], ()
    yield "unknown opcode", GOOD_BUFFERS, [99, 1, 1, 0, 0, 0, 1], ()
    yield "negative opcode", GOOD_BUFFERS, [-1, 1, 1, 0, 0, 0, 1], ()
    yield "truncated header", GOOD_BUFFERS, [cp, 1, 1], ()
    yield "truncated operands", GOOD_BUFFERS, [cp, 1, 1, 1, 0, 0], ()
    yield "huge counts", GOOD_BUFFERS, [cp, 2**62, 2**62, 2**62, 0, 0, 1, 32], ()
    yield "wrong operand count", GOOD_BUFFERS, [cp, 2, 1, 1, 0, 0, 0, 1, 32], ()
    yield "unknown dtype", GOOD_BUFFERS, [un, 1, 1, 3, 0, 0, 2, 9, 1, 4], ()
    yield "a double too many", GOOD_BUFFERS, GOOD_CODE, (1.0,)
    yield "missing double", GOOD_BUFFERS, [lowering.FILL, 0, 1, 2, 1, 2, 1, 4], ()
    yield "unknown buffer kind", [[9, 0, 0, 32], [OUT, 0, 0, 32]], [cp, 1, 1, 1, 0, 0, 1, 32], ()
    yield "input index out of range", [[IN, 3, 0, 32], [OUT, 0, 0, 32]], [cp, 1, 1, 1, 0, 0, 1, 32], ()
    copy01 = [cp, 1, 1, 1, 0, 0, 1, 32]
    yield "two buffers on one output", [[IN, 0, 0, 32], [OUT, 0, 0, 32], [OUT, 0, 0, 32]], copy01, ()
    yield "misaligned arena offset", [[IN, 0, 0, 32], [ARENA, 0, 8, 32], [OUT, 0, 0, 32]], GOOD_CODE, ()
    yield "negative size", [[IN, 0, 0, -8], [OUT, 0, 0, 32]], [cp, 1, 1, 1, 0, 0, 1, 0], ()
    yield "alias past its base", [[IN, 0, 0, 32], [ALIAS, 0, 16, 32], [OUT, 0, 0, 32]], [cp, 1, 1, 1, 0, 1, 2, 8], ()
    yield "alias of a later buffer", [[IN, 0, 0, 32], [ALIAS, 2, 0, 8], [OUT, 0, 0, 32]], [cp, 1, 1, 1, 0, 0, 1, 8], ()
    yield "write through an alias of an input", [[IN, 0, 0, 32], [ALIAS, 0, 8, 8], [OUT, 0, 0, 32]], [
        cp, 1, 1, 1, 0, 2, 1, 8], ()
    overlapping = [[IN, 0, 0, 32], [ARENA, 0, 0, 32], [ARENA, 0, 0, 32], [OUT, 0, 0, 32]]
    yield "output overlaps an input", overlapping, [cp, 1, 1, 1, 0, 0, 1, 32, cp, 1, 1, 1, 0, 1, 2, 32], ()
    yield "callback size mismatch", GOOD_BUFFERS, [lowering.CALLBACK, 1, 1, 3, 0, 0, 2, 0, 32, 64], ()
    # a 2x2 @ 2x2 product of 4 doubles each, but A's leading dimension 4 reads 6 of them
    gemm = [lowering.GEMM, 2, 1, 14, 0, 0, 0, 1] + [1, 0, 0, 1, 2, 2, 2, 4, 0, 2, 0, 2, 0, 0]
    yield "gemm reads past its operand", [[IN, 0, 0, 32], [OUT, 0, 0, 32]], gemm, ()
    # GEMM_PACK of a 2x2 double B into a buffer too small for its panels (any ISA's are >= 32
    # bytes of doubles plus a header), and a GEMM reading a packed operand from one
    pack = [lowering.GEMM_PACK, 1, 1, 6, 0, 0, 1, 1, lowering.OPERAND_B, 0, 2, 2, 2]
    yield "packed operand too small", [[IN, 0, 0, 32], [ARENA, 0, 0, 32], [OUT, 0, 0, 32]], pack, ()
    yield "pack of an unknown operand", [[IN, 0, 0, 32], [ARENA, 0, 0, 4096], [OUT, 0, 0, 32]], [
        *pack[:7], 2, *pack[8:]], ()
    packed_gemm = [lowering.GEMM, 2, 1, 14, 0, 0, 1, 2] + [1, 0, lowering.PACKED, 1, 2, 2, 2, 2, 0, 0, 0, 2, 0, 0]
    yield "gemm reads a packed operand past its end", [[IN, 0, 0, 32], [IN, 1, 0, 32], [OUT, 0, 0, 32]], \
        packed_gemm, ()
    batched = [lowering.GEMM, 2, 1, 14, 0, 0, 1, 2] + [1, 0, lowering.PACKED, 2, 1, 2, 2, 2, 2, 0, 4, 2, 2, 0]
    yield "packed operand with a batch stride", [[IN, 0, 0, 32], [IN, 1, 0, 4096], [OUT, 0, 0, 32]], batched, ()


@pytest.mark.parametrize(
    ("what", "buffers", "code", "fimm"), list(_bad_programs()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_malformed_programs_are_rejected(cabi, what, buffers, code, fimm):
    _, lib = cabi
    status, prog = _create(cabi, buffers, code, fimm)
    assert status in (lib.FC_ERR_PROGRAM, lib.FC_ERR_OP), (what, status)
    assert prog == cabi[0].NULL


def test_create_checks_its_arguments(cabi):
    ffi, lib = cabi
    out = ffi.new("fc_program**")
    null = ffi.NULL

    def create(n_buffers, dest):
        return lib.fc_program_create(null, n_buffers, null, 0, 0, 0, 0, null, 0, null, 0, dest)

    assert create(1, out) == lib.FC_ERR_NULL  # buffers NULL, but one announced
    assert create(-1, out) == lib.FC_ERR_SIZE
    assert create(0, null) == lib.FC_ERR_NULL
    # The empty program is valid and does nothing.
    assert create(0, out) == lib.FC_OK
    assert lib.fc_program_run(out[0], ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL) == lib.FC_OK
    lib.fc_program_destroy(out[0])


def test_mutated_programs_never_crash(cabi):
    """Random single-word changes to a valid program: creation accepts (then the run stays within
    the buffers) or rejects it, never anything else."""
    ffi, lib = cabi
    x = fc.placeholder((3, 4), np.float64, name="x")
    w = fc.shared(np.linspace(-1, 1, 8).reshape(4, 2), name="w")
    f = fc.function([x], [fc.sum(fc.tanh(x @ w), 0), fc.permute(x, (1, 0))[1:3]], backend=CPU)
    low = f._kernels.lowered
    rng = np.random.default_rng(0)
    xv, wv = np.ones((3, 4)), w.get_value()
    outs = [np.empty(s, d) for d, s in low.output_specs]
    accepted = 0
    for _ in range(400):
        buffers, code = low.buffers.copy(), low.code.copy()
        target = buffers.reshape(-1) if rng.random() < 0.3 else code
        i = int(rng.integers(len(target)))
        target[i] = int(rng.choice([-1, 0, 1, 2, 3, 7, 64, 2**31, 2**62, int(target[i]) + 1, int(target[i]) - 1]))
        status, prog = _create(cabi, buffers, code, low.fimm, low.consts, 1, 1, len(outs))
        assert status <= 0
        if status == lib.FC_OK:
            accepted += 1
            r = lib.fc_program_run(prog, _ptrs(ffi, [xv]), _ptrs(ffi, [wv]), _ptrs(ffi, outs), ffi.NULL, ffi.NULL)
            assert r <= 0
            lib.fc_program_destroy(prog)
    assert accepted > 0  # some mutations are harmless (a different arena offset, a size within bounds)


def test_callbacks_through_the_c_abi(cabi):
    ffi, lib = cabi
    # y = callback(x): the host doubles x.
    code = [lowering.CALLBACK, 1, 1, 3, 0, 0, 1, 5, 32, 32]
    status, prog = _create(cabi, [[IN, 0, 0, 32], [OUT, 0, 0, 32]], code)
    assert status == lib.FC_OK
    seen = []

    @ffi.callback("int(void*, int64_t, void* const*)")
    def double(user, index, buffers):
        seen.append(index)
        src = np.frombuffer(ffi.buffer(buffers[0], 32), np.float64)
        dst = np.frombuffer(ffi.buffer(buffers[1], 32), np.float64)
        dst[:] = 2 * src
        return 0

    @ffi.callback("int(void*, int64_t, void* const*)")
    def fail(user, index, buffers):
        return 1

    @ffi.callback("int(void*, int64_t, void* const*)")
    def nested(user, index, buffers):
        # A run of the same program from inside its run is refused.
        inner = lib.fc_program_run(prog, _ptrs(ffi, [x]), ffi.NULL, _ptrs(ffi, [np.zeros(4)]), double, ffi.NULL)
        seen.append(inner)
        return 0

    x, y = np.arange(4.0), np.zeros(4)
    try:

        def run(cb):
            return lib.fc_program_run(prog, _ptrs(ffi, [x]), ffi.NULL, _ptrs(ffi, [y]), cb, ffi.NULL)

        assert run(ffi.NULL) == lib.FC_ERR_NULL  # the program has a callback instruction
        assert run(double) == lib.FC_OK
        np.testing.assert_array_equal(y, 2 * x)
        assert seen == [5]
        assert run(fail) == lib.FC_ERR_CALLBACK
        at = ffi.new("int64_t*")
        assert lib.fc_program_failed_instruction(prog, at) == lib.FC_OK and at[0] == 0
        assert run(nested) == lib.FC_OK
        assert seen[-1] == lib.FC_ERR_BUSY
    finally:
        lib.fc_program_destroy(prog)


# ---------------------------------------------------------------------------------------
# pre-packed GEMM operands (GEMM_PACK)
# ---------------------------------------------------------------------------------------
def rnn_training_step(dtype, weight_left: bool, steps=4, hidden=17, batch=3, inp=5):
    """A plain tanh RNN unrolled over `steps`, its loss, gradients and SGD updates. weight_left:
    the recurrent weight is the left operand (h is hidden x batch), else the right one."""
    rng = np.random.default_rng(11)
    xs = fc.placeholder((steps, batch, inp), dtype, name="x")
    w = fc.shared((rng.standard_normal((hidden, hidden)) / 4).astype(dtype), name="w")
    u = fc.shared((rng.standard_normal((inp, hidden)) / 2).astype(dtype), name="u")
    h = fc.const(np.zeros((hidden, batch) if weight_left else (batch, hidden), dtype))
    for t in range(steps):
        xu = xs[t] @ u
        h = fc.tanh(w @ h + fc.permute(xu, (1, 0))) if weight_left else fc.tanh(h @ w + xu)
    loss = fc.sum(h * h)
    params = [w, u]
    grads = fc.grad(loss, params)
    updates = [(p, p - 0.05 * g) for p, g in zip(params, grads, strict=True)]
    feed = rng.standard_normal((steps, batch, inp)).astype(dtype)
    return xs, [loss, *grads], updates, params, feed


def check_prepacked_rnn(dtype, weight_left: bool) -> int:
    """The cpu backend packs the recurrent weight once per direction and matches the reference
    (outputs and updated parameters); returns the number of GEMM_PACK instructions."""
    results = {}
    for backend in (REF, CPU):
        xs, outs, updates, params, feed = rnn_training_step(dtype, weight_left)
        f = fc.function([xs], outs, updates=updates, backend=backend)
        results[backend] = [np.asarray(v) for v in f(feed)] + [p.get_value() for p in params]
        if backend == CPU:
            low = f._kernels.lowered
            check_memory_plan(low)
            instrs = lowering.instructions(low.code)
            ops = decode(low)
            packs = [i for i, (op, _, _) in enumerate(instrs) if op == lowering.GEMM_PACK]
            packed_bufs = {ops[i][1][1]: i for i in packs}
            readers = 0
            for i, ((op, _, ints), (_, ids)) in enumerate(zip(instrs, ops, strict=True)):
                if op != lowering.GEMM:
                    continue
                for side in (0, 1):
                    if ints[1 + side] == lowering.PACKED:
                        # a packed operand comes from a GEMM_PACK that ran before, for this side
                        assert packed_bufs[ids[side]] < i
                        assert instrs[packed_bufs[ids[side]]][2][1] == side
                        readers += 1
            # w forward and w transposed backward, each read by 3 products (h_0 = 0 folds the
            # first forward one, and nothing needs the gradient of h_0); u's products are batched
            # over time into one
            assert len(packs) == 2 and readers == 2 * 3
    for got, want in zip(results[CPU], results[REF], strict=True):
        assert_close(got, want, dtype)
    return len(packs)


@pytest.mark.parametrize("weight_left", [False, True], ids=["weight-right", "weight-left"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_weight_read_by_several_products_is_packed_once(dtype, weight_left):
    check_prepacked_rnn(dtype, weight_left)


def test_prepacked_products_on_the_scalar_path():
    """The same on FLEXCORE_ISA=scalar (the ISA, hence the panel layout, is chosen once per
    process)."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "FLEXCORE_ISA"} | {"FLEXCORE_ISA": "scalar",
                                                                          "PYTHONPATH": str(root)}
    code = ("import numpy as np\n"
            "from flexcore import _native\n"
            "from tests.backends.test_cpu_backend import check_prepacked_rnn\n"
            "n = [check_prepacked_rnn(dt, left) for dt in (np.float32, np.float64) for left in (0, 1)]\n"
            "print(_native.module.cpu_isa(), min(n))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True,
                         check=True, timeout=600).stdout.split()
    assert out[0] == "scalar" and int(out[1]) >= 2


def test_a_product_read_once_is_not_packed():
    """One product per weight (an MLP): nothing to share, no GEMM_PACK."""
    ins, loss, updates, _, _ = mlp_step(np.float32)
    f = fc.function(ins, loss, updates=updates, backend=CPU)
    assert lowering.GEMM_PACK not in lowering.opcodes_of(f._kernels.lowered.code)


def test_a_packed_operand_through_a_hand_written_program(cabi):
    """GEMM_PACK of B (transposed, with a row stride), then two GEMMs reading it packed, one with a
    bias and an activation: the same numbers as numpy."""
    ffi, lib = cabi
    rng = np.random.default_rng(5)
    m, n, k = 3, 5, 7
    wide = rng.standard_normal((n, k + 2))  # B stored transposed, ld k + 2
    a1, a2 = rng.standard_normal((m, k)), rng.standard_normal((m, k))
    bias = rng.standard_normal(n)
    c1, c2 = np.empty((m, n)), np.empty((m, n))
    nbytes = _native.module.gemm_packed_bytes(1, lowering.OPERAND_B, k, n)
    buffers = [[IN, 0, 0, wide.nbytes], [IN, 1, 0, a1.nbytes], [IN, 2, 0, a2.nbytes], [IN, 3, 0, bias.nbytes],
               [ARENA, 0, 0, nbytes], [OUT, 0, 0, c1.nbytes], [OUT, 1, 0, c2.nbytes]]
    code = [lowering.GEMM_PACK, 1, 1, 6, 0, 0, 4, 1, lowering.OPERAND_B, 1, k, n, k + 2]
    code += [lowering.GEMM, 2, 1, 14, 0, 1, 4, 5, 1, 0, lowering.PACKED, 1, m, n, k, k, 0, 0, 0, n, 0, 0]
    code += [lowering.GEMM, 3, 1, 14, 0, 2, 4, 3, 6, 1, 0, lowering.PACKED, 1, m, n, k, k, 0, 0, 0, n, 0, 3]
    wide_c = np.ascontiguousarray(wide)
    status, prog = _create(cabi, buffers, code, n_in=4, n_out=2)
    assert status == lib.FC_OK
    try:
        assert lib.fc_program_run(prog, _ptrs(ffi, [wide_c, a1, a2, bias]), ffi.NULL, _ptrs(ffi, [c1, c2]),
                                  ffi.NULL, ffi.NULL) == lib.FC_OK
    finally:
        lib.fc_program_destroy(prog)
    bt = wide[:, :k].T
    np.testing.assert_allclose(c1, a1 @ bt, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(c2, np.tanh(a2 @ bt + bias), rtol=1e-13, atol=1e-13)
