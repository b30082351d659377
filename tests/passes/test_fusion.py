"""The lowering passes (flexcore.passes.fusion): each fires on a minimal graph and keeps its
values; on real training graphs (an unrolled LSTM, the seed's recurrent topology) the whole
pipeline turns per-step GEMMs into batched ones and still computes the same loss, gradients
and updated parameters as the unfused graph on the reference backend.

Values are compared in float64 to about 1e-12: the passes reorder sums (one GEMM over several
products), which moves the last bits; fused elementwise programs and dense/gemm reproduce the
unfused numbers bit for bit, which the tests of those check exactly.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import flexcore as fc
from flexcore import ActivationLayer, InputLayer, Network
from flexcore.backends.reference import ReferenceBackend
from flexcore.ir.core import FlexcoreError, Var, toposort
from flexcore.ir.fused import MAX_INPUTS, MAX_INSTRUCTIONS, EwCode, InMode
from flexcore.nn import cells
from flexcore.passes import FUSION_PASSES, LOWERING_PASSES, lowering_pipeline, optimize
from flexcore.plan import build_plan

ROOT = Path(__file__).resolve().parents[2]
RTOL = 1e-12
GEMMS = ("matmul", "gemm", "dense")


def run(inputs, outputs, feed, passes=(), updates=()):
    """Outputs (and updated values) of the graph on the reference backend, lowered by `passes`."""
    plan = build_plan(inputs, outputs, list(updates), passes=passes)
    be = ReferenceBackend()
    outs, upds = be.run(plan, be.prepare(plan), feed)
    return outs + upds, plan


def assert_close(got, want, rtol=RTOL):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        # relative to the array's largest element: sums that cancel keep their terms' error
        scale = float(np.max(np.abs(w), initial=0.0))
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale)


def ops(roots) -> Counter:
    return Counter(v.op for v in toposort(roots))


def lower(roots, *names):
    roots = optimize(list(roots))
    for fn in lowering_pipeline(names):
        roots = fn(roots)
    return roots


def rand(rng, *shape):
    return rng.standard_normal(shape)


# ---------------------------------------------------------------------------------------
# absorb_transposes
# ---------------------------------------------------------------------------------------
def test_absorb_transposes_reads_transposed_operands_in_place():
    rng = np.random.default_rng(0)
    x, g, w = (
        fc.placeholder((5, 3), "float64"),
        fc.placeholder((5, 4), "float64"),
        fc.placeholder((4, 3), "float64"),
    )
    outs = [x.T @ g, g @ w, x @ w.T, fc.transpose(w) @ fc.transpose(g)]
    lowered = lower(outs, "absorb_transposes")
    c = ops(lowered)
    assert c["gemm"] == 4 and c["matmul"] == 0 and c["permute"] == 0
    flags = [(v.attr["trans_a"], v.attr["trans_b"]) for v in lowered]
    assert flags == [(True, False), (False, False), (False, True), (True, True)]
    feed = [rand(rng, 5, 3), rand(rng, 5, 4), rand(rng, 4, 3)]
    want, _ = run([x, g, w], outs, feed)
    got, _ = run([x, g, w], outs, feed, ["absorb_transposes"])
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)  # the same matmul call on a transposed view


def test_absorb_transposes_leaves_batched_matmul_alone():
    a, b = fc.placeholder((2, 3, 4)), fc.placeholder((2, 4, 5))
    assert ops(lower([a @ b], "absorb_transposes"))["matmul"] == 1


# ---------------------------------------------------------------------------------------
# fuse_dense
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("act", ["identity", "relu", "sigmoid", "tanh"])
def test_fuse_dense_forward(act):
    rng = np.random.default_rng(1)
    x, w, b = (
        fc.placeholder((6, 4), "float64"),
        fc.placeholder((4, 5), "float64"),
        fc.placeholder((5,), "float64"),
    )
    y = fc.activation(act)(x @ w + b)
    lowered = lower([y], "absorb_transposes", "fuse_dense")
    (d,) = lowered
    assert d.op == "dense" and d.attr["act"] == act
    assert ops(lowered)["gemm"] == 0 and ops(lowered)["add"] == 0
    feed = [rand(rng, 6, 4), rand(rng, 4, 5), rand(rng, 5)]
    want, _ = run([x, w, b], [y], feed)
    got, _ = run([x, w, b], [y], feed, ["absorb_transposes", "fuse_dense"])
    np.testing.assert_array_equal(got[0], want[0])


def test_fuse_dense_transposed_and_bias_first():
    rng = np.random.default_rng(2)
    x, w, b = (
        fc.placeholder((4, 6), "float64"),
        fc.placeholder((5, 4), "float64"),
        fc.placeholder((5,), "float64"),
    )
    y = fc.tanh(b + x.T @ w.T)
    (d,) = lower([y], "absorb_transposes", "fuse_dense")
    assert d.op == "dense" and d.attr["trans_a"] and d.attr["trans_b"] and d.attr["act"] == "tanh"
    feed = [rand(rng, 4, 6), rand(rng, 5, 4), rand(rng, 5)]
    want, _ = run([x, w, b], [y], feed)
    got, _ = run([x, w, b], [y], feed, ["absorb_transposes", "fuse_dense"])
    np.testing.assert_array_equal(got[0], want[0])


def test_fuse_dense_relu_in_training_rewrites_the_mask():
    """The relu's gradient reads the mask pre > 0; fused, it reads relu(pre) > 0 (the same)."""
    rng = np.random.default_rng(3)
    x, w, b = (
        fc.placeholder((8, 4), "float64"),
        fc.placeholder((4, 5), "float64"),
        fc.placeholder((5,), "float64"),
    )
    y = fc.relu(x @ w + b)
    loss = fc.sum(y * y)
    outs = [loss, *fc.grad(loss, [w, b])]
    lowered = lower(outs, "absorb_transposes", "fuse_dense")
    dense = [v for v in toposort(lowered) if v.op == "dense"]
    assert len(dense) == 1 and dense[0].attr["act"] == "relu"
    masks = [v for v in toposort(lowered) if v.op == "gt"]
    assert masks and all(m.inputs[0] is dense[0] for m in masks)
    feed = [rand(rng, 8, 4), rand(rng, 4, 5), rand(rng, 5)]
    want, _ = run([x, w, b], outs, feed)
    got, _ = run([x, w, b], outs, feed, ["absorb_transposes", "fuse_dense"])
    assert_close(got, want)


def test_fuse_dense_keeps_a_sum_read_elsewhere():
    """pre is read by the activation and returned: dense computes pre, the activation stays."""
    x, w, b = fc.placeholder((3, 4)), fc.placeholder((4, 2)), fc.placeholder((2,))
    pre = x @ w + b
    lowered = lower([pre, fc.sigmoid(pre)], "absorb_transposes", "fuse_dense")
    assert lowered[0].op == "dense" and lowered[0].attr["act"] == "identity"
    assert lowered[1].op == "sigmoid" and lowered[1].inputs[0] is lowered[0]


# ---------------------------------------------------------------------------------------
# fuse_horizontal
# ---------------------------------------------------------------------------------------
def test_fuse_horizontal_joins_products_of_one_left_operand():
    rng = np.random.default_rng(4)
    h = fc.placeholder((3, 4), "float64")
    ws = [fc.placeholder((4, n), "float64") for n in (2, 5, 3, 2)]
    outs = [fc.sigmoid(h @ w) for w in ws]
    lowered = lower(outs, "fuse_horizontal")
    assert ops(lowered)["matmul"] == 1 and ops(lowered)["concat"] == 1
    feed = [rand(rng, 3, 4)] + [rand(rng, *w.shape) for w in ws]
    want, _ = run([h, *ws], outs, feed)
    got, _ = run([h, *ws], outs, feed, ["fuse_horizontal"])
    assert_close(got, want)


def test_fuse_horizontal_sum_of_transposed_products():
    """dh = sum_k g_k @ W_k^T -> concat(g) @ concat(W, axis=1)^T: one GEMM."""
    rng = np.random.default_rng(5)
    gs = [fc.placeholder((3, 5), "float64") for _ in range(4)]
    ws = [fc.placeholder((4, 5), "float64") for _ in range(4)]
    dh = gs[0] @ ws[0].T + gs[1] @ ws[1].T + gs[2] @ ws[2].T + gs[3] @ ws[3].T
    lowered = lower([dh], "fuse_horizontal", "absorb_transposes")
    (v,) = lowered
    assert v.op == "gemm" and v.attr["trans_b"] and ops(lowered)["add"] == 0
    assert v.inputs[1].op == "concat" and v.inputs[1].attr["axis"] == 1  # the weights as in the forward join
    feed = [rand(rng, 3, 5) for _ in gs] + [rand(rng, 4, 5) for _ in ws]
    want, _ = run([*gs, *ws], [dh], feed)
    got, _ = run([*gs, *ws], [dh], feed, ["fuse_horizontal", "absorb_transposes"])
    assert_close(got, want)


def test_fuse_horizontal_never_makes_a_cycle():
    """B2 is computed from h @ B1: joining [B1, B2] would need its own result."""
    rng = np.random.default_rng(6)
    h, b1 = fc.placeholder((4, 4), "float64"), fc.placeholder((4, 4), "float64")
    y1 = h @ b1
    y2 = h @ fc.tanh(y1)
    lowered = lower([y1, y2], "fuse_horizontal")
    assert ops(lowered)["matmul"] == 2 and ops(lowered)["concat"] == 0
    feed = [rand(rng, 4, 4), rand(rng, 4, 4)]
    want, _ = run([h, b1], [y1, y2], feed)
    got, _ = run([h, b1], [y1, y2], feed, ["fuse_horizontal"])
    assert_close(got, want)


# ---------------------------------------------------------------------------------------
# batch_over_time
# ---------------------------------------------------------------------------------------
def _sequence(T=6, B=3, F=4, H=5, seed=7):
    rng = np.random.default_rng(seed)
    x = fc.placeholder((B, T, F), "float64", "x")
    w = fc.placeholder((F, H), "float64", "w")
    u = fc.placeholder((H, H), "float64", "u")
    feed = [rand(rng, B, T, F), rand(rng, F, H) * 0.5, rand(rng, H, H) * 0.5]
    return x, w, u, feed


def test_batch_over_time_stacks_the_input_projection_not_the_recurrence():
    x, w, u, feed = _sequence()
    T = x.shape[1]
    h = fc.broadcast_to(fc.const(np.zeros((), "float64")), (x.shape[0], u.shape[0]))
    hs = []
    for t in range(T):
        h = fc.tanh(x[:, t] @ w + h @ u)
        hs.append(h)
    lowered = lower(hs, "batch_over_time")
    mm = [v for v in toposort(lowered) if v.op == "matmul"]
    stacked = [v for v in mm if v.inputs[1] is w]
    assert len(stacked) == 1 and stacked[0].shape == (T * x.shape[0], w.shape[1])
    # x[:, t] for all t is one permute to time-major order, not T slices and a concat
    assert stacked[0].inputs[0].op == "reshape" and stacked[0].inputs[0].inputs[0].op == "permute"
    # each step needs the previous one; the first reads the zero state, which costs no product
    assert sum(v.inputs[1] is u for v in mm) == T - 1
    want, _ = run([x, w, u], hs, feed)
    got, _ = run([x, w, u], hs, feed, ["batch_over_time"])
    assert_close(got, want)


def test_batch_over_time_weight_and_bias_gradients():
    """sum_t x[t]^T @ g[t] and sum_t rowsum(g[t]) become one GEMM and one reduction."""
    x, w, u, feed = _sequence()
    b = fc.placeholder((w.shape[1],), "float64", "b")
    T = x.shape[1]
    h = fc.broadcast_to(fc.const(np.zeros((), "float64")), (x.shape[0], u.shape[0]))
    for t in range(T):
        h = fc.tanh(x[:, t] @ w + h @ u + b)
    loss = fc.sum(h * h)
    outs = [loss, *fc.grad(loss, [w, u, b])]
    feed = [*feed, np.linspace(-0.3, 0.3, w.shape[1])]
    raw = optimize(outs)
    lowered = lower(outs, "batch_over_time")
    # the gradients of w, u and b are each one op over all steps, not T ops summed
    for k in (1, 2):
        assert lowered[k].op == "matmul" and lowered[k].inputs[0].op == "permute", lowered[k].op
    assert lowered[3].op == "reshape" and lowered[3].inputs[0].op == "sum"
    assert ops(lowered)["sum"] < ops(raw)["sum"] - T + 2
    # x @ w, dw (T terms) and du (T - 1: the zero initial state has none): one each
    assert ops(lowered)["matmul"] == ops(raw)["matmul"] - 3 * (T - 1) + 1
    want, _ = run([x, w, u, b], outs, feed)
    got, _ = run([x, w, u, b], outs, feed, ["batch_over_time"])
    assert_close(got, want)


def test_batch_over_time_groups_only_independent_products():
    """Two towers that feed each other: each group alone is independent, both together would
    form a cycle.  The second group sees the first one's new dependencies and is not fused."""
    rng = np.random.default_rng(8)
    a1, a2, b1, b2 = (fc.placeholder((3, 3), "float64") for _ in range(4))
    m1w = a1 @ b1
    m2v = fc.tanh(m1w) @ b2
    m2u = a2 @ b2
    m1s = fc.tanh(m2u) @ b1
    outs = [m2v, m1s]
    lowered = lower(outs, "batch_over_time")  # a cycle raises FlexcoreError in the pass
    assert ops(lowered)["matmul"] == 3
    feed = [rand(rng, 3, 3) for _ in range(4)]
    want, _ = run([a1, a2, b1, b2], outs, feed)
    got, _ = run([a1, a2, b1, b2], outs, feed, ["batch_over_time"])
    assert_close(got, want)


# ---------------------------------------------------------------------------------------
# fuse_elementwise
# ---------------------------------------------------------------------------------------
def _fused(roots) -> list[Var]:
    return [v for v in toposort(roots) if v.op == "fused_ew"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fuse_elementwise_the_header_example(dtype):
    """sigmoid(x + bias_row) * 2.0: the program kernels.h gives as its example."""
    rng = np.random.default_rng(9)
    x, b = fc.placeholder((3, 4), dtype), fc.placeholder((4,), dtype)
    y = fc.sigmoid(x + b) * 2.0
    (v,) = lower([y], "fuse_elementwise")
    assert v.op == "fused_ew"
    assert v.attr["modes"] == (InMode.FULL, InMode.ROW) and v.attr["consts"] == (2.0,)
    assert v.attr["program"] == (
        (EwCode.ADD, 0, 1, 0),
        (EwCode.SIGMOID, 2, 0, 0),
        (EwCode.CONST, 0, 0, 0),
        (EwCode.MUL, 3, 4, 0),
    )
    feed = [rand(rng, 3, 4).astype(dtype), rand(rng, 4).astype(dtype)]
    want, _ = run([x, b], [y], feed)
    got, _ = run([x, b], [y], feed, ["fuse_elementwise"])
    np.testing.assert_array_equal(got[0], want[0])  # same numpy calls in the same order


def test_fuse_elementwise_modes_and_where():
    """A column (keepdims reduction), a scalar, a broadcast_to read through, and a relu whose
    comparison is recomputed inside the program."""
    rng = np.random.default_rng(10)
    x = fc.placeholder((4, 5), "float64")
    s = fc.placeholder((), "float64")
    col = fc.sum(x, 1, keepdims=True)
    wide = fc.broadcast_to(fc.reshape(s, (1, 1)), (4, 5))
    y = fc.relu(x - col) * wide + fc.exp(-x) / (col * col + 1.0)  # col * col: a cheap column member
    (v,) = lower([y], "fuse_elementwise")
    assert v.op == "fused_ew"
    modes = dict(zip((x.op for x in v.inputs), v.attr["modes"], strict=True))
    assert sorted(v.attr["modes"]) == [InMode.FULL, InMode.SCALAR, InMode.COL]
    assert modes["sum"] == InMode.COL
    codes = [ins[0] for ins in v.attr["program"]]
    assert EwCode.GT in codes and EwCode.WHERE in codes and EwCode.RELU not in codes
    feed = [rand(rng, 4, 5), np.float64(1.7)]
    want, _ = run([x, s], [y], feed)
    got, _ = run([x, s], [y], feed, ["fuse_elementwise"])
    np.testing.assert_array_equal(got[0], want[0])


def test_fuse_elementwise_shared_values_are_inputs_not_recomputed():
    """t = tanh(a + b) is read by two ops: it is computed once (its own program) and read as an
    input by the programs of both readers."""
    rng = np.random.default_rng(11)
    a, b, c = (fc.placeholder((3, 4), "float64") for _ in range(3))
    t = fc.tanh(a + b)
    outs = [t * c + 1.0, (1.0 - t * t) * c]
    lowered = lower(outs, "fuse_elementwise")
    progs = _fused(lowered)
    assert len(progs) == 3
    tanh_count = sum(ins[0] == EwCode.TANH for p in progs for ins in p.attr["program"])
    assert tanh_count == 1
    feed = [rand(rng, 3, 4) for _ in range(3)]
    want, _ = run([a, b, c], outs, feed)
    got, _ = run([a, b, c], outs, feed, ["fuse_elementwise"])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_fuse_elementwise_respects_the_kernel_limits():
    rng = np.random.default_rng(12)
    xs = [fc.placeholder((2, 3), "float64") for _ in range(100)]
    acc = xs[0]
    for x in xs[1:]:
        acc = fc.tanh(acc) + x
    lowered = lower([acc], "fuse_elementwise")
    progs = _fused(lowered)
    assert len(progs) >= 4  # 198 ops, at most 64 instructions (and 64 inputs) a program
    for p in progs:
        assert len(p.attr["program"]) <= MAX_INSTRUCTIONS and len(p.inputs) <= MAX_INPUTS
    assert sum(len(p.attr["program"]) for p in progs) == 2 * 99  # every tanh and add, once
    feed = [rand(rng, 2, 3) for _ in xs]
    want, _ = run(xs, [acc], feed)
    got, _ = run(xs, [acc], feed, ["fuse_elementwise"])
    np.testing.assert_array_equal(got[0], want[0])


def test_fuse_elementwise_leaves_single_ops_and_other_broadcasts():
    x = fc.placeholder((2, 3, 4, 5))
    b = fc.placeholder((1, 3, 1, 1))  # per channel: no input mode reads it
    lone = fc.exp(x)
    chan = fc.tanh(x + b)
    lowered = lower([lone, chan], "fuse_elementwise")
    assert lowered[0].op == "exp"
    assert lowered[1].op == "tanh" and lowered[1].inputs[0].op == "add"


# ---------------------------------------------------------------------------------------
# the pipeline
# ---------------------------------------------------------------------------------------
def test_pipeline_names_and_order():
    assert list(FUSION_PASSES) == [
        "batch_over_time",
        "fuse_horizontal",
        "absorb_transposes",
        "fuse_dense",
        "fuse_elementwise",
    ]
    assert [f.__name__ for f in lowering_pipeline(FUSION_PASSES)] == list(FUSION_PASSES)
    assert set(LOWERING_PASSES) == set(FUSION_PASSES)
    # a function roots -> roots is a pass too (a backend's own)
    seen = []
    custom = lowering_pipeline(["absorb_transposes", lambda roots: seen.append(roots) or roots])
    x = fc.placeholder((2, 3))
    plan = build_plan([x], [x @ x.T], [], passes=custom)
    assert [st.op for st in plan.steps] == ["gemm"] and seen[0][0].op == "gemm"
    with pytest.raises(FlexcoreError, match=r"unknown lowering pass 'fuse_everything'.*batch_over_time"):
        lowering_pipeline(["fuse_everything"])


def test_reference_backend_runs_the_primitives():
    """No lowering unless a backend asks for it: the oracle's plans hold no fused op."""
    x, w = fc.placeholder((3, 4)), fc.placeholder((4, 2))
    f = fc.function([x, w], fc.sigmoid(x @ w) * 2.0, backend="reference")
    assert ReferenceBackend.passes == ()
    assert {st.op for st in f.plan.steps} == {"matmul", "sigmoid", "mul"}
    assert "optimize" in f.plan.pass_seconds and len(f.plan.pass_seconds) == 1


def test_a_backend_with_passes_lowers_its_plans():
    class Lowering(ReferenceBackend):
        passes = FUSION_PASSES

    rng = np.random.default_rng(13)
    x, w, b = (
        fc.placeholder((3, 4), "float64"),
        fc.placeholder((4, 2), "float64"),
        fc.placeholder((2,), "float64"),
    )
    y = fc.exp(fc.sigmoid(x @ w + b) * 2.0)
    f = fc.function([x, w, b], y, backend=Lowering())
    assert [st.op for st in f.plan.steps] == ["dense", "fused_ew"]
    assert set(f.plan.pass_seconds) == {"optimize", *FUSION_PASSES}
    feed = [rand(rng, 3, 4), rand(rng, 4, 2), rand(rng, 2)]
    np.testing.assert_array_equal(f(*feed), fc.function([x, w, b], y, backend="reference")(*feed))


def test_fused_op_codes_match_the_kernel_header():
    header = ROOT / "csrc" / "include" / "flexcore" / "kernels.h"
    if not header.exists():
        pytest.skip("csrc/include/flexcore/kernels.h is not there yet")
    text = header.read_text()

    def enum(name: str) -> dict[str, int]:
        body = re.search(r"typedef enum " + name + r" \{(.*?)\}", text, re.S).group(1)
        body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
        return {k: int(v) for k, v in re.findall(r"(\w+)\s*=\s*(\d+)", body)}

    codes = enum("fc_ew_code")
    assert {k[len("FC_EW_") :]: v for k, v in codes.items() if k != "FC_EW_CODE_COUNT"} == {
        c.name: int(c) for c in EwCode
    }
    assert codes["FC_EW_CODE_COUNT"] == len(EwCode)
    modes = enum("fc_fused_mode")
    assert {k[len("FC_IN_") :]: v for k, v in modes.items() if k != "FC_IN_MODE_COUNT"} == {
        m.name: int(m) for m in InMode
    }
    limits = enum("fc_kernel_limit")
    assert limits["FC_FUSED_MAX_INPUTS"] == MAX_INPUTS and limits["FC_FUSED_MAX_INSTR"] == MAX_INSTRUCTIONS


# ---------------------------------------------------------------------------------------
# real graphs: an LSTM and the seed's topology, through the layer API
# ---------------------------------------------------------------------------------------
class Recording(ReferenceBackend):
    """The reference backend with lowering passes, keeping the plans it prepares."""

    def __init__(self, passes=()):
        self.passes = tuple(passes)
        self.plans = []

    def prepare(self, plan):
        self.plans.append(plan)
        return super().prepare(plan)

    def train_plan(self):
        return next(p for p in self.plans if p.updates)


def _train_and_compare(make_net, data, batch):
    """Train one step from the same weights unfused and fused; compare everything."""
    nets, backends = [], []
    for passes in ((), FUSION_PASSES):
        net = make_net()
        be = Recording(passes)
        net.compile(batch, optimizer="adam", backend=be, dtype="float64")
        nets.append(net)
        backends.append(be)
    plain, fused = nets
    assert_close([fused.predict(data[0])], [plain.predict(data[0])])
    g_plain, g_fused = plain.gradients(data), fused.gradients(data)
    assert_close([g_fused[k] for k in sorted(g_plain)], [g_plain[k] for k in sorted(g_plain)])
    h_plain = plain.fit(data, 1, 0.01, shuffle=False, verbose=False)
    h_fused = fused.fit(data, 1, 0.01, shuffle=False, verbose=False)
    assert abs(h_fused.last("loss") - h_plain.last("loss")) <= RTOL * abs(h_plain.last("loss"))
    w_plain, w_fused = plain.weights(), fused.weights()
    assert_close([w_fused[k] for k in sorted(w_plain)], [w_plain[k] for k in sorted(w_plain)])
    return backends[1].train_plan(), backends[0].train_plan(), fused


def _lstm(T=5, F=3, H=8, K=3):
    def make():
        net = Network("lstm", seed=3)
        x = InputLayer(input_shape=(F,), sequence_length=T, name="x")
        cell = cells.lstm(net, x, H)
        y = ActivationLayer(input_shape=(K,), activation="softmax", output=True, loss="nll", name="y")
        net.connect_dense(cell.out, y)
        return net

    return make


def _weights_of(net, *names):
    return {id(net.params[n]) for n in names}


def _reads(v: Var, ids: set[int]) -> bool:
    """Whether the join v (or its transpose) is made of exactly the Vars with these ids."""
    while v.op == "permute":
        v = v.inputs[0]
    return v.op == "concat" and {id(x) for x in v.inputs} == ids


def test_lstm_training_step_fused():
    T, F, H, K, B = 5, 3, 8, 3, 4
    rng = np.random.default_rng(14)
    data = (rng.standard_normal((B, T, F)), rng.integers(0, K, B))
    plan, plain_plan, net = _train_and_compare(_lstm(T, F, H, K), data, B)
    steps = [st.var for st in plan.steps]
    assert not [v for v in steps if v.op == "matmul"]
    gemms = [v for v in steps if v.op in GEMMS]
    u = _weights_of(net, *(f"lstm.h->lstm.{g}@t-1.W" for g in "ifgo"))
    w = _weights_of(net, *(f"x->lstm.{g}.W" for g in "ifgo"))
    # the recurrent projections: one GEMM per step against the four joined weights (4 -> 1)
    # (but the first step's, which reads the zero initial state)
    recurrent = [v for v in gemms if not v.attr["trans_b"] and _reads(v.inputs[1], u)]
    assert len(recurrent) == T - 1 and all(v.shape == (B, 4 * H) for v in recurrent)
    # the input projections: one GEMM for all T steps
    inputs = [v for v in gemms if not v.attr["trans_b"] and _reads(v.inputs[1], w)]
    assert len(inputs) == 1 and inputs[0].shape == (T * B, 4 * H)
    # backward: dh per step through the same joined weights, transposed; each weight gradient
    # one GEMM over all steps (and the four gates' together)
    dh = [v for v in gemms if v.attr["trans_b"] and _reads(v.inputs[1], u)]
    assert len(dh) == T - 1
    # the weights are joined once per call (CSE merged the joins of every step), forward and
    # backward alike
    assert len({id(v.inputs[1]) for v in recurrent + dh}) == 1
    # All of them: forward T - 1 + 1 + the output layer's dense; backward the output layer's dh
    # and dW_y, T - 1 dh, and one GEMM each for the input and the recurrent weights of all gates.
    assert len(gemms) == (T - 1 + 1 + 1) + (2 + (T - 1) + 2)
    # Unfused: forward 8 per step but 4 at t = 0 (zero state) + 1; backward 4 dh per step but the
    # first, 1 + 1 for the output layer, 8 weight gradients per step but 4 at t = 0.
    assert sum(st.op == "matmul" for st in plain_plan.steps) == (8 * T - 4 + 1) + (4 * (T - 1) + 2 + 8 * T - 4)
    # the gates' elementwise math is fused: no sigmoid or tanh of a gate is left alone
    assert sum(st.op == "fused_ew" for st in plan.steps) > 0
    assert not [v for v in steps if v.op == "sigmoid"]


@pytest.mark.parametrize("kind", ["gru", "rnn"])
def test_other_cells_training_step_fused(kind):
    """GRU and vanilla RNN (gates read through products and identity connections) keep their
    values too; their input projections are one GEMM for all steps."""
    T, F, H, K, B = 4, 3, 6, 2, 5

    def make():
        net = Network(kind, seed=4)
        x = InputLayer(input_shape=(F,), sequence_length=T, name="x")
        cell = getattr(cells, kind)(net, x, H)
        y = ActivationLayer(input_shape=(K,), activation="softmax", output=True, loss="nll", name="y")
        net.connect_dense(cell.out, y, return_sequence=True)
        return net

    rng = np.random.default_rng(16)
    data = (rng.standard_normal((B, T, F)), rng.integers(0, K, B))
    plan, plain_plan, _ = _train_and_compare(make, data, B)
    gemms = [st.var for st in plan.steps if st.op in GEMMS]
    assert not [st for st in plan.steps if st.op == "matmul"]
    assert len(gemms) < sum(st.op == "matmul" for st in plain_plan.steps)
    stacked = [v for v in gemms if v.shape[0] == T * B and v.inputs[0].op == "reshape"]
    assert len(stacked) == 1  # x[t] @ W for all gates and steps
    # forward: that one, one per step but the first (zero state) for h[t-1] @ U (all gates), the
    # output layer's dense; backward: dh per step but the first (all gates), the output layer's
    # dh and dW_y, and one GEMM each for W and U over all steps
    assert len(gemms) == (1 + (T - 1) + 1) + ((T - 1) + 2 + 2)


def _seed(T=4):
    def make():
        net = Network("Demo", seed=5)
        # Named, so that both networks of a comparison name their parameters alike.
        L1 = InputLayer(inputShape=(10,), sequence_length=T, name="L1")
        L2 = ActivationLayer(inputShape=(300,), passFunction="sigmoid", name="L2")
        L3 = ActivationLayer(inputShape=(150,), passFunction="sigmoid", name="L3")
        L4 = ActivationLayer(
            inputShape=(10,),
            passFunction="softmax",
            ifOutput=True,
            lossFunction="negativeLogLikelihood",
            name="L4",
        )
        L5 = ActivationLayer(inputShape=(50,), passFunction="sigmoid", name="L5")
        L6 = ActivationLayer(inputShape=(200,), passFunction="sigmoid", name="L6")
        net.connectDense(L1, L2, return_sequence=True)
        net.connectDense(L2, L3, return_sequence=True)
        net.connectRecurrent(L5, L2)
        net.connectDense(L3, L5, return_sequence=True)
        net.connectDense(L5, L6)
        net.connectDense(L6, L4)
        return net

    return make


def test_seed_topology_training_step_fused():
    T, B = 4, 6
    rng = np.random.default_rng(15)
    data = (rng.standard_normal((B, T, 10)), rng.integers(0, 10, B))
    plan, plain_plan, net = _train_and_compare(_seed(T), data, B)
    steps = [st.var for st in plan.steps]
    gemms = [v for v in steps if v.op in GEMMS]
    w12 = net.params["L1->L2.W"]
    # the input projection L1 -> L2 of all T steps is one GEMM
    stacked = [v for v in gemms if v.inputs[1] is w12 and not v.attr["trans_b"]]
    assert len(stacked) == 1 and stacked[0].shape == (T * B, 300)
    # Unfused: forward 2T - 1 (L1, L5 -> L2; L5's zero state at t = 0 costs none) + 2T (L2 -> L3
    # -> L5) + 2 (L5 -> L6 -> L4); backward a weight gradient per product (4T - 1 + 2) and an
    # input gradient per product but L1's and the initial state's (3T - 1 + 2).  Fused: L1 -> L2
    # is one GEMM, and each of the six weight gradients is one GEMM over all steps; the rest
    # depends on the previous step.
    assert sum(st.op == "matmul" for st in plain_plan.steps) == 11 * T + 3
    assert len(gemms) == (1 + 3 * T - 1 + 2) + 6 + (3 * T - 1 + 2)
    assert [v for v in steps if v.op == "dense"]  # L5 -> L6 -> L4 read the last step only


# ---------------------------------------------------------------------------------------
# compile time
# ---------------------------------------------------------------------------------------
def _lstm_step(T: int, H: int = 16, F: int = 8, B: int = 4, dtype: str = "float32"):
    """An LSTM training step (SGD) built with the IR API: (inputs, outputs, updates)."""
    rng = np.random.default_rng(0)
    x = fc.placeholder((B, T, F), dtype)
    y = fc.placeholder((B,), "int64")
    W = [fc.shared(rng.standard_normal((F, H)) * 0.3, dtype=dtype) for _ in range(4)]
    U = [fc.shared(rng.standard_normal((H, H)) * 0.3, dtype=dtype) for _ in range(4)]
    bs = [fc.shared(np.zeros(H), dtype=dtype) for _ in range(4)]
    wy = fc.shared(rng.standard_normal((H, 3)) * 0.3, dtype=dtype)
    h = c = fc.broadcast_to(fc.const(np.zeros((), dtype)), (B, H))
    for t in range(T):
        i, f, g, o = (x[:, t] @ W[k] + h @ U[k] + bs[k] for k in range(4))
        c = fc.sigmoid(f) * c + fc.sigmoid(i) * fc.tanh(g)
        h = fc.sigmoid(o) * fc.tanh(c)
    loss = fc.softmax_cross_entropy(h @ wy, y)
    params = [*W, *U, *bs, wy]
    grads = fc.grad(loss, params)
    return [x, y], [loss], [(p, p - 0.1 * gp) for p, gp in zip(params, grads, strict=True)]


def test_a_large_initial_state_still_shares_the_weight_gradient_joins():
    """The zero initial state, a constant of B x H > 4096 elements (which CSE tells apart by
    identity only), must not split the four gates' dU into several GEMMs (its products are
    folded away; before that, all four gates' dU sums had to join the same Vars)."""
    T, H, F, B = 3, 128, 8, 64
    graph = _lstm_step(T, H, F, B, "float64")
    plan = build_plan(*graph, passes=FUSION_PASSES)
    gemms = [st.var for st in plan.steps if st.op in GEMMS]
    # forward: inputs, T - 1 steps (the first reads the zero state), h @ wy; backward: dh of wy,
    # dwy, T - 1 dh, dW, dU
    assert len(gemms) == (1 + T - 1 + 1) + (2 + (T - 1) + 2)
    assert sum(v.shape == (H, 4 * H) for v in gemms) == 1  # dU of the four gates
    rng = np.random.default_rng(17)
    feed = [rng.standard_normal((B, T, F)), rng.integers(0, 3, B)]
    be = ReferenceBackend()
    plain = build_plan(*graph)
    want = be.run(plain, be.prepare(plain), feed)
    got = be.run(plan, be.prepare(plan), feed)
    assert_close(got[0] + got[1], want[0] + want[1])
