"""Less data movement in compiled programs (flexcore/backends/lowering.py):

- concat elision (`plan_frames`): the producers of a concat's inputs write straight into their
  window of the concat's buffer (row blocks, and column blocks through GEMM's ldc, the fused
  elementwise kernel's output row stride and REDUCE's row stride), so the concat copies nothing;
- the SGD fold (`plan_sgd_folds`): p - lr * (a @ b) is one GEMM into the update's buffer with
  alpha = -lr read at run time, beta = 1.

Values are checked against the reference backend (tolerances as tests/backends/test_cpu_backend.py)
and against the same plan lowered without these rewrites (`lower(..., elide=False)`); the
instruction counts check that the rewrites happened.
"""

from __future__ import annotations

import numpy as np
import pytest

import flexcore as fc
from flexcore import _native, optim
from flexcore.backends import cpu as cpu_backend
from flexcore.backends import lowering
from flexcore.passes.rnn import fuse_rnn_cells
from flexcore.profile import opcodes

pytestmark = pytest.mark.skipif(not _native.available, reason="native extension not built")

REF, CPU = "reference", "cpu"


def tol(dtype):
    return (1e-12, 1e-12) if np.dtype(dtype) == np.float64 else (1e-5, 1e-6)


def assert_close(got, want, dtype, what=""):
    rtol, atol = tol(dtype)
    got, want = np.asarray(got), np.asarray(want)
    scale = float(np.abs(want).max()) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale, err_msg=what)


@pytest.fixture
def unelided(monkeypatch):
    """Within the block, cpu functions are lowered without concat elision and SGD folding."""

    class Switch:
        def __enter__(self):
            monkeypatch.setattr(cpu_backend, "lower", lambda plan: lowering.lower(plan, elide=False))

        def __exit__(self, *exc):
            monkeypatch.undo()

    return Switch()


def lowered(f) -> lowering.Lowered:
    return f._kernels.lowered


def concat_copies(f) -> int:
    low = lowered(f)
    return sum(1 for op, st in zip(opcodes(low.code), low.instr_steps)
               if op in (lowering.COPY, lowering.COPY_STRIDED) and st is not None and st.op == "concat")


def instrs(f, opcode) -> list[tuple[int, list[int], int]]:
    """(n_in, ints, n_dbl) of every instruction with `opcode`."""
    return [(n_in, ints, n_dbl) for op, n_in, ints, n_dbl in lowering.decode(lowered(f).code) if op == opcode]


# ---------------------------------------------------------------------------------------------
# concat elision
# ---------------------------------------------------------------------------------------------
T, B, H, K = 3, 5, 17, 4  # steps, rows, a gate's columns, gates: odd sizes on purpose


def gate_graph(dtype, reorder: bool):
    """The shape of an LSTM's backward pass: per-step pieces g[t][k] (fused elementwise programs
    and a GEMM, over a recurrence r[t] = r[t-1] @ w_r) joined per step along columns (what dh
    reads), per gate over time along rows, and those joined along columns (what the weight
    gradients read); with `reorder`, a second join orders the gates differently (it cannot share
    the frame and copies)."""
    rng = np.random.default_rng(0)
    x = fc.placeholder((T, B, 3), dtype, name="x")
    w = fc.shared(rng.normal(size=(3, H)).astype(dtype), name="w")
    w_r = fc.shared((rng.normal(size=(H, H)) / H).astype(dtype), name="w_r")
    v = fc.shared((0.05 * rng.normal(size=(K * H, 7))).astype(dtype), name="v")  # tanh(ps @ v) unsaturated
    u = fc.shared(rng.normal(size=(B, 2)).astype(dtype), name="u")
    r = fc.tanh(fc.reshape(x[0:1], (B, 3)) @ w)
    g = []
    for _ in range(T):
        r = r @ w_r  # a GEMM output the next step's GEMM reads: not batched over time
        g.append([fc.sigmoid(r) * 2.0 + 1.0, r, r * 3.0 - 1.0, fc.tanh(r) - r * r][:K])
    per_step = [fc.concat(g[t], axis=1) for t in range(T)]  # (B, K*H)
    per_gate = [fc.concat([g[t][k] for t in range(T)], axis=0) for k in range(K)]  # (T*B, H)
    big = fc.concat(per_gate, axis=1)  # (T*B, K*H)
    outs = [fc.sum(fc.tanh(ps @ v)) for ps in per_step]
    outs.append(fc.transpose(fc.reshape(big, (T, B, K * H))[0]) @ u)  # reads a row block of big
    outs += [fc.sum(pg, axis=0) for pg in per_gate]  # column sums of column blocks
    outs.append(fc.transpose(big) @ fc.reshape(x, (T * B, 3)))
    if reorder:
        outs.append(fc.concat(per_gate[::-1], axis=1) * 2.0)
    outs.append(g[1][0])  # a piece that is also an output
    loss = sum(fc.sum(o * o) for o in outs)
    gw, gv = fc.grad(loss, [w, v])
    return [x], outs + [gw, gv], [rng.normal(size=(T, B, 3)).astype(dtype)]


def gate_join_copies(f) -> int:
    """Copies made by the joins gate_graph builds (known by their shapes)."""
    low = lowered(f)
    shapes = {(B, K * H), (T * B, H), (T * B, K * H)}
    return sum(1 for op, st in zip(opcodes(low.code), low.instr_steps)
               if op in (lowering.COPY, lowering.COPY_STRIDED) and st is not None and st.op == "concat"
               and st.var.shape in shapes)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reorder", [False, True], ids=["one-order", "two-orders"])
def test_concat_elision_values(dtype, reorder, unelided):
    ins, outs, feeds = gate_graph(dtype, reorder)
    want = fc.function(ins, outs, backend=REF)(*feeds)
    f = fc.function(ins, outs, backend=CPU)
    got = f(*feeds)
    with unelided:
        plain = fc.function(ins, outs, backend=CPU)
        base = plain(*feeds)
    for i, (a, b, c) in enumerate(zip(got, want, base, strict=True)):
        assert_close(a, b, dtype, f"output {i} vs reference")
        assert_close(a, c, dtype, f"output {i} vs unelided")
    assert gate_join_copies(plain) >= T * K + K * T + K
    # the reordered join copies its K column blocks; nothing else does
    assert gate_join_copies(f) == (K if reorder else 0)
    # The column blocks were written in place: fused elementwise with an output row stride, GEMM
    # with ldc > n, column sums with a row stride.
    fused = instrs(f, lowering.FUSED_EW)
    assert any(len(ints) == 4 + n_in + 4 * ints[3] + ints[4:4 + n_in].count(lowering.IN_STRIDED) + 1
               for n_in, ints, _ in fused)
    assert any(ints[11] > ints[5] for _, ints, _ in instrs(f, lowering.GEMM))  # ldc > n
    assert any(len(ints) == 6 for _, ints, _ in instrs(f, lowering.REDUCE))
    # Elision saves memory.  (Packing is left out of the comparison: the frame lets two GEMMs that
    # read one join share a pre-packed copy of it, which the unelided plan cannot see.)
    assert (lowering.lower(f.plan, prepack=False).arena_bytes
            < lowering.lower(f.plan, elide=False, prepack=False).arena_bytes)


def test_concat_of_parameters_and_nested_concats(unelided):
    """Inputs no step produces (parameters, inputs) are copied into the frame; a nested join is a
    view of the outer one; a value joined twice in one concat keeps the plain copies."""
    rng = np.random.default_rng(1)
    x = fc.placeholder((4, 3), np.float64, name="x")
    w = fc.shared(rng.normal(size=(3, 3)), name="w")
    a, b = fc.tanh(x), x @ w
    inner = fc.concat([a, b], axis=1)  # (4, 6)
    outer = fc.concat([inner, fc.concat([w, w], axis=1)[:1], fc.exp(inner)], axis=0)  # (9, 6)
    twice = fc.concat([a, a, b], axis=0)
    outs = [outer, twice, fc.sum(outer, axis=0), inner]
    feed = rng.normal(size=(4, 3))
    want = fc.function([x], outs, backend=REF)(feed)
    got = fc.function([x], outs, backend=CPU)(feed)
    for g, v in zip(got, want, strict=True):
        assert_close(g, v, np.float64)


def test_frames_are_consistent_and_tile():
    """plan_frames: every value of a frame sits inside the frame's box, the leaves tile it, and a
    concat whose order disagrees with the frames taken before it is left out."""
    ins, outs, _ = gate_graph(np.float64, reorder=True)
    f = fc.function(ins, outs, backend=CPU)
    plan = f.plan
    frames = lowering.plan_frames(plan)
    concats = {st.out: st for st in plan.steps if st.op == "concat"}
    assert frames.joined and set(frames.joined) < set(concats)
    for s, (k, index) in frames.home.items():
        box, _ = frames.shapes[k]
        assert all(i >= 0 and i + n <= m for i, n, m in zip(index, plan.slots[s].shape, box))
    for s in frames.joined:  # each input of a joined concat is at its offset in the output
        st = concats[s]
        ax = st.attrs["axis"] % st.var.ndim
        k, at = frames.home[s]
        pos = 0
        for i in st.inputs:
            assert frames.home[i][0] == k
            assert frames.home[i][1] == tuple(a + (pos if d == ax else 0) for d, a in enumerate(at))
            pos += plan.slots[i].shape[ax]
    assert lowering._tiles((4, 6), [((0, 0), (4, 3)), ((0, 3), (4, 3))])
    assert not lowering._tiles((4, 6), [((0, 0), (4, 3)), ((0, 2), (4, 4))])  # overlap
    assert not lowering._tiles((4, 6), [((0, 0), (4, 3)), ((1, 3), (3, 3))])  # a hole


def lstm_train(steps, batch=4):
    from flexcore import ActivationLayer, InputLayer, Network
    from flexcore.nn import cells

    net = Network("lstm", seed=0)
    x = InputLayer((6,), sequence_length=steps, name="x")
    cell = cells.lstm(net, x, 8)
    y = ActivationLayer((3,), activation="softmax", output=True, loss="negative_log_likelihood", name="y")
    net.connect_dense(cell.out, y)
    return net


def _lstm_train_fns(unelided):
    net = lstm_train(7)
    net.compile(batch_size=4, optimizer="sgd")
    traced = net._fns["train"]
    args = [(4, 7, 6), (4,), *[() for _ in traced.dtypes[2:]]]
    f = traced.compiled(*args)
    with unelided:
        net2 = lstm_train(7)
        net2.compile(batch_size=4, optimizer="sgd")
        plain = net2._fns["train"].compiled(*args)
    return f, plain


def test_unfused_lstm_plan_loses_its_per_step_concat_copies(unelided, monkeypatch):
    """An LSTM training step left to the generic passes (what a cell variant the cell pass does
    not match gets): the per-step and per-gate joins of the gate gradients, the weight
    gradients' joins of them (fusion orders their gates as the per-step join does) and the join
    of h over time copy nothing; what is left is joining the gates' weight parameters."""
    monkeypatch.setattr(cpu_backend.CPUBackend, "passes",
                        tuple(p for p in cpu_backend.CPUBackend.passes if p is not fuse_rnn_cells))
    f, plain = _lstm_train_fns(unelided)
    n_params = 2 * 4  # the joined input and recurrent weights
    assert concat_copies(plain) > 7 * 4 * 2
    assert concat_copies(f) == n_params


def test_fused_lstm_plan_copies_only_parameters_and_cell_planes(unelided):
    """With the fused cells the gate gradients are whole matrices already; what a join still
    copies is the gates' weights and biases (3 joins of 4) and the planes of the cells' outputs
    read through views (the 7 steps' gate gradients, the 6 h read by the recurrent weight
    gradient), which a frame cannot place."""
    f, _ = _lstm_train_fns(unelided)
    assert concat_copies(f) == 3 * 4 + 7 + 6


def test_seed_topology_plan_has_no_concat_copies(unelided):
    from bench import fc_models

    built, _ = fc_models.seed_topology(5, 8)
    traced = built.net._fns["train"]
    ydt = traced.dtypes[1]
    yshape = (8, 10) if ydt.kind == "f" else (8,)
    args = [(8, 5, 196), yshape, *[() for _ in traced.dtypes[2:]]]
    f = traced.compiled(*args)
    assert concat_copies(f) == 0
    with unelided:
        built2, _ = fc_models.seed_topology(5, 8)
        plain = built2.net._fns["train"].compiled(*args)
    assert concat_copies(plain) > 5
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 5, 196)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    y = np.eye(10, dtype=ydt)[y] if ydt.kind == "f" else y.astype(ydt)
    extra = [np.asarray(0.05 if dt.kind == "f" else 0, dt) for dt in traced.dtypes[2:]]
    for a, b in zip(f(x, y, *extra), plain(x, y, *extra), strict=True):
        assert_close(a, b, np.float32)
    for (_, p1), (_, p2) in zip(f.plan.shared, plain.plan.shared, strict=True):
        assert_close(p1.get_value(), p2.get_value(), np.float32, p1.name)


# ---------------------------------------------------------------------------------------------
# the SGD fold
# ---------------------------------------------------------------------------------------------
def mlp(dtype, opt, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    x = fc.placeholder((9, 5), dtype, name="x")
    lr = fc.placeholder((), dtype, name="lr")
    w1 = fc.shared(rng.normal(size=(5, 17)).astype(dtype), name="w1")
    b1 = fc.shared(rng.normal(size=(17,)).astype(dtype), name="b1")
    w2 = fc.shared(rng.normal(size=(17, 3)).astype(dtype), name="w2")
    loss = fc.sum(fc.tanh(fc.tanh(x @ w1 + b1) @ w2) ** 2)
    params = [w1, b1, w2]
    return [x, lr], loss, params, opt.updates(params, fc.grad(loss, params), lr)


def scaled_gemms(f) -> int:
    return sum(1 for _, _, n_dbl in instrs(f, lowering.GEMM) if n_dbl == 2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kw", [{}, {"momentum": 0.9}, {"weight_decay": 0.01},
                                {"momentum": 0.5, "nesterov": True, "weight_decay": 0.1}],
                         ids=["plain", "momentum", "weight-decay", "nesterov-wd"])
def test_sgd_fold_values_and_runtime_lr(dtype, kw, unelided):
    """Three steps with different learning rates (0 included): the parameters equal the
    reference's and the unfused program's; only the plain form is folded."""
    x = np.random.default_rng(5).normal(size=(9, 5)).astype(dtype)
    runs = {}
    for name in ("cpu", "plain", "ref"):
        opt = optim.SGD(**kw)  # its state is named after the parameters: one per function
        ins, loss, params, updates = mlp(dtype, opt)
        if name == "plain":
            with unelided:
                f = fc.function(ins, loss, updates=updates, backend=CPU)
        else:
            f = fc.function(ins, loss, updates=updates, backend=REF if name == "ref" else CPU)
        hist = []
        for lr in (0.1, 0.0, 0.35):
            before = [p.get_value() for p in params]
            hist.append((float(f(x, np.asarray(lr, dtype))), [p.get_value() for p in params]))
            if lr == 0.0 and not opt.momentum:
                for a, b in zip(before, hist[-1][1]):
                    np.testing.assert_array_equal(a, b)  # lr 0 changes nothing
        runs[name] = (f, hist)
    f = runs["cpu"][0]
    assert scaled_gemms(f) == (2 if not (opt.momentum or opt.weight_decay) else 0)
    assert scaled_gemms(runs["plain"][0]) == 0
    for other in ("ref", "plain"):
        for (l1, p1), (l2, p2) in zip(runs["cpu"][1], runs[other][1], strict=True):
            assert_close(l1, l2, dtype, f"loss vs {other}")
            for a, b in zip(p1, p2, strict=True):
                assert_close(a, b, dtype, f"parameter vs {other}")


def test_sgd_fold_needs_a_bare_product():
    """A gradient read elsewhere too (here it is also an output) is not folded."""
    rng = np.random.default_rng(2)
    x = fc.placeholder((6, 4), np.float64, name="x")
    w = fc.shared(rng.normal(size=(4, 3)), name="w")
    loss = fc.sum(fc.tanh(x @ w))
    (g,) = fc.grad(loss, [w])
    f = fc.function([x], [loss, g], updates=[(w, w - 0.5 * g)], backend=CPU)
    assert scaled_gemms(f) == 0
    f2 = fc.function([x], loss, updates=[(w, w - 0.5 * g)], backend=CPU)
    assert scaled_gemms(f2) == 1
    feed = rng.normal(size=(6, 4))
    w0 = w.get_value()
    f(feed)
    w1 = w.get_value()
    w.set_value(w0)
    f2(feed)
    assert_close(w.get_value(), w1, np.float64)


def test_cuda_lowering_keeps_the_plain_forms():
    """The cuda backend has no kernel for the scaled GEMM, strided fused outputs or strided
    reductions: its `supports` answers the forms' probes no, so those steps lower in the plain
    way (nothing goes to the host), and the rest is still elided."""
    from flexcore.backends.cuda import CUDABackend

    sup = CUDABackend.supports.__get__(object.__new__(CUDABackend))  # reads class attributes only
    assert not any(sup(*probe) for probe in lowering.FORM_PROBES.values())
    m_ins, m_loss, _, m_updates = mlp(np.float64, optim.SGD())
    for ins, outs, updates in [(m_ins, m_loss, m_updates), gate_graph(np.float64, reorder=False)[:2] + ([],)]:
        f = fc.function(ins, outs, updates=updates, backend=CPU)
        low = lowering.lower(f.plan, sup)
        decoded = lowering.decode(low.code)
        assert all(sup(op, n_in, ints, n_dbl) for op, n_in, ints, n_dbl in decoded)
        assert lowering.CALLBACK not in [op for op, *_ in decoded]
    assert 0 < concat_copies_of(low) < concat_copies_of(lowering.lower(f.plan, sup, elide=False))


def concat_copies_of(low) -> int:
    return sum(1 for op, st in zip(opcodes(low.code), low.instr_steps)
               if op in (lowering.COPY, lowering.COPY_STRIDED) and st is not None and st.op == "concat")


# ---------------------------------------------------------------------------------------------
# the new instruction forms through the raw C ABI: they run as documented (executor.h), and
# malformed ones are rejected at creation
# ---------------------------------------------------------------------------------------------
IN, OUT = lowering.INPUT, lowering.OUTPUT


@pytest.fixture(scope="module")
def cabi():
    from flexcore import native_cabi

    return native_cabi.ffi, native_cabi.lib()


def _program(cabi, buffers, code, fimm, n_in, n_out):
    ffi, lib = cabi
    b = np.ascontiguousarray(np.array(buffers, np.int64).reshape(-1))
    c = np.ascontiguousarray(np.array(code, np.int64))
    d = np.ascontiguousarray(np.array(fimm, np.float64))
    out = ffi.new("fc_program**")
    status = lib.fc_program_create(ffi.cast("int64_t*", b.ctypes.data), len(b) // 4, ffi.NULL, 0, n_in, 0, n_out,
                                   ffi.cast("int64_t*", c.ctypes.data), len(c), ffi.cast("double*", d.ctypes.data),
                                   len(d), out)
    return status, out[0]


def _run(cabi, buffers, code, fimm, inputs, outputs):
    ffi, lib = cabi
    status, prog = _program(cabi, buffers, code, fimm, len(inputs), len(outputs))
    assert status == lib.FC_OK
    try:
        ptrs = [ffi.new("void*[]", [ffi.cast("void*", a.ctypes.data) for a in arrs] or [ffi.NULL])
                for arrs in (inputs, outputs)]
        assert lib.fc_program_run(prog, ptrs[0], ffi.NULL, ptrs[1], ffi.NULL, ffi.NULL) == lib.FC_OK
    finally:
        lib.fc_program_destroy(prog)


GEMM_INTS = [1, 0, 0, 1, 2, 4, 3, 3, 0, 4, 0, 4, 0, 0]  # f64, 2x3 @ 3x4, dense
SCALED_BUFFERS = [[IN, 0, 0, 48], [IN, 1, 0, 96], [IN, 2, 0, 8], [IN, 3, 0, 64], [OUT, 0, 0, 64]]


def test_scaled_gemm_runs_as_documented(cabi):
    """c = w, then c = -1 * s * a @ b + 1 * c: one SGD step with the rate s read at run time."""
    rng = np.random.default_rng(0)
    a, b, w = rng.normal(size=(2, 3)), rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    code = [lowering.COPY, 1, 1, 1, 0, 3, 4, 64, lowering.GEMM, 3, 1, 14, 2, 0, 1, 2, 4, *GEMM_INTS]
    for s in (0.25, 0.0, -3.0):
        c = np.empty((2, 4))
        _run(cabi, SCALED_BUFFERS, code, [-1.0, 1.0], [a, b, np.array([s]), w], [c])
        np.testing.assert_allclose(c, w - s * (a @ b), rtol=1e-14, atol=1e-14)


def test_strided_fused_output_and_reduce_run_as_documented(cabi):
    """FUSED_EW with y's row stride writes a column block; REDUCE with x's row stride sums the
    rows of one."""
    x = np.arange(6.0).reshape(2, 3) - 2.5
    y = np.full((2, 5), 9.0)  # y[:, 1:4] = -x, through an output starting one element in
    ints = [1, 6, 3, 1, 0, 0, 0, 0, 0, 5]  # f64, n 6, cols 3, 1 instr; input 0 FULL; NEG r0; y ld 5
    code = [lowering.FUSED_EW, 1, 1, len(ints), 0, 0, 2, *ints]
    _run(cabi, [[IN, 0, 0, 48], [OUT, 0, 0, 80], [lowering.ALIAS, 1, 8, 64]], code, [], [x], [y])
    np.testing.assert_array_equal(y, [[9, 2.5, 1.5, 0.5, 9], [9, -0.5, -1.5, -2.5, 9]])
    wide = np.arange(20.0).reshape(4, 5)
    s = np.empty(3)
    code = [lowering.REDUCE, 1, 1, 6, 0, 1, 2, 1, 0, 1, 4, 3, 5]  # f64 sum, outer 1, red 4, inner 3, ld 5
    _run(cabi, [[IN, 0, 0, 160], [lowering.ALIAS, 0, 8, 152], [OUT, 0, 0, 24]], code, [], [wide], [s])
    np.testing.assert_array_equal(s, wide[:, 1:4].sum(0))


def _bad_forms():
    gemm = [lowering.GEMM, 3, 1, 14, 2, 0, 1, 2, 4, *GEMM_INTS]
    yield "scaled gemm without its doubles", SCALED_BUFFERS, gemm[:4] + [0] + gemm[5:], ()
    yield "scaled gemm with one double", SCALED_BUFFERS, gemm[:4] + [1] + gemm[5:], (-1.0,)
    empty_s = [b if i != 2 else [IN, 2, 0, 0] for i, b in enumerate(SCALED_BUFFERS)]
    yield "scaled gemm with an empty scale", empty_s, gemm, (-1.0, 1.0)
    four = [lowering.GEMM, 4, 1, 14, 0, 0, 1, 2, 3, 4, *GEMM_INTS]
    yield "plain gemm with four inputs", SCALED_BUFFERS, four, ()
    fused = [lowering.FUSED_EW, 1, 1, 10, 0, 0, 1, 1, 6, 3, 1, 0, 0, 0, 0, 0]
    buffers = [[IN, 0, 0, 48], [OUT, 0, 0, 64]]
    yield "fused output row stride below cols", buffers, fused + [2], ()
    yield "fused strided output past its buffer", buffers, fused + [6], ()  # spans 9 doubles in 8
    red = [lowering.REDUCE, 1, 1, 6, 0, 0, 1, 1, 0, 1, 4, 3]
    rbuf = [[IN, 0, 0, 120], [OUT, 0, 0, 24]]
    yield "reduce row stride below inner", rbuf, red + [2], ()
    yield "reduce rows past their buffer", rbuf, red + [5], ()  # spans 18 doubles in 15
    yield "reduce with seven immediates", rbuf, [lowering.REDUCE, 1, 1, 7, 0, 0, 1, 1, 0, 1, 4, 3, 3, 3], ()


@pytest.mark.parametrize(("what", "buffers", "code", "fimm"), list(_bad_forms()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_malformed_forms_are_rejected(cabi, what, buffers, code, fimm):
    ffi, lib = cabi
    n_in = sum(1 for b in buffers if b[0] == IN)
    n_out = sum(1 for b in buffers if b[0] == OUT)
    status, prog = _program(cabi, buffers, code, fimm, n_in, n_out)
    assert status in (lib.FC_ERR_PROGRAM, lib.FC_ERR_OP), (what, status)
    assert prog == ffi.NULL
