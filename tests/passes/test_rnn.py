"""fuse_rnn_cells: each LSTM (GRU) step of the cell recipe becomes `lstm_cell` (`gru_cell`), its
backward `lstm_cell_grad` (`gru_cell_grad`), with the values of the unfused graph (reference
backend running the fused plan with the ops' numpy implementations, and the cpu backend's
kernels); variants the pass does not
recognise run unfused with the same values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flexcore as fc
from flexcore import ActivationLayer, InputLayer, MemoryLayer, Network
from flexcore.backends.cpu import CPUBackend
from flexcore.backends.reference import ReferenceBackend
from flexcore.ir.core import toposort
from flexcore.nn import cells
from flexcore.passes.rnn import fuse_rnn_cells

F, T = 4, 4


class _Recording(ReferenceBackend):
    """The reference backend running the cpu backend's passes: the fused ops' numpy
    implementations, and the ops of the final graphs it planned."""

    name = "reference"

    def __init__(self) -> None:
        self.ops: list[str] = []
        self.passes = (*CPUBackend.passes, self._record)

    def _record(self, roots):
        self.ops += [v.op for v in toposort(roots)]
        return list(roots)


def _lstm_by_hand(net, source, hidden, g_act="tanh", c_act="tanh"):
    """cells.lstm with the candidate's and the output's activation as parameters."""
    L = {g: ActivationLayer(hidden, activation=a, name=f"m.{g}")
         for g, a in (("i", "sigmoid"), ("f", "sigmoid"), ("g", g_act), ("o", "sigmoid"))}
    c = MemoryLayer(hidden, name="m.c")
    tc = ActivationLayer(hidden, activation=c_act, bias=False, name="m.tc")
    h = ActivationLayer(hidden, combine="product", name="m.h")
    for g in "ifgo":
        net.connect_dense(source, L[g], return_sequence=True)
        net.connect_recurrent(h, L[g])
    net.connect_gate(L["f"], c, "forget")
    net.connect_gate(L["i"], c, "input")
    net.connect_gate(L["g"], c, "candidate")
    net.connect_identity(c, tc, return_sequence=True)
    net.connect_identity(L["o"], h, return_sequence=True)
    net.connect_identity(tc, h, return_sequence=True)
    return h


def _gru_by_hand(net, source, hidden, n_act="tanh", extra=None):
    """cells.gru with the candidate's activation as a parameter, and optionally one more layer
    feeding the update gate."""
    L = {"r": ActivationLayer(hidden, activation="sigmoid", name="q.r"),
         "z": ActivationLayer(hidden, activation="sigmoid", name="q.z"),
         "hn": ActivationLayer(hidden, name="q.hn"),
         "rhn": ActivationLayer(hidden, combine="product", name="q.rhn"),
         "n": ActivationLayer(hidden, activation=n_act, name="q.n"),
         "d": ActivationLayer(hidden, bias=False, name="q.d"),
         "zd": ActivationLayer(hidden, combine="product", name="q.zd"),
         "h": ActivationLayer(hidden, bias=False, name="q.h")}
    for g in ("r", "z", "n"):
        net.connect_dense(source, L[g], return_sequence=True)
    for g in ("r", "z", "hn"):
        net.connect_recurrent(L["h"], L[g])
    if extra is not None:
        net.connect_recurrent(extra, L["z"], delay=2)
    net.connect_identity(L["r"], L["rhn"], return_sequence=True)
    net.connect_identity(L["hn"], L["rhn"], return_sequence=True)
    net.connect_identity(L["rhn"], L["n"], return_sequence=True)
    net.connect_recurrent(L["h"], L["d"], kind="identity")
    net.connect_identity(L["n"], L["d"], scale=-1.0, return_sequence=True)
    net.connect_identity(L["z"], L["zd"], return_sequence=True)
    net.connect_identity(L["d"], L["zd"], return_sequence=True)
    net.connect_identity(L["n"], L["h"], return_sequence=True)
    net.connect_identity(L["zd"], L["h"], return_sequence=True)
    return L["h"]


def _net(hidden, variant="plain"):
    net = Network(f"lstm-{variant}", seed=1)
    x = InputLayer((F,), sequence_length=T, name="x")
    if variant == "plain":
        out = cells.lstm(net, x, hidden).out
    elif variant == "gru":
        out = cells.gru(net, x, hidden).out
    elif variant == "gru_by_hand":
        out = _gru_by_hand(net, x, hidden)
    elif variant == "gru_sigmoid_candidate":
        out = _gru_by_hand(net, x, hidden, n_act="sigmoid")
    elif variant == "gru_other_source":
        out = _gru_by_hand(net, x, hidden, extra=x)
    elif variant == "peephole":
        out = cells.lstm(net, x, hidden, peephole=True).out
    elif variant == "layer_norm":
        out = cells.lstm(net, x, hidden, layer_norm=True).out
    elif variant == "other_source":
        cell = cells.lstm(net, x, hidden)
        net.connect_recurrent(x, cell.i, delay=2)
        out = cell.out
    elif variant == "sigmoid_candidate":
        out = _lstm_by_hand(net, x, hidden, g_act="sigmoid")
    elif variant == "relu_output":
        out = _lstm_by_hand(net, x, hidden, c_act="relu")
    else:
        raise ValueError(variant)
    y = ActivationLayer((3,), name="y", output=True, loss="mse", loss_steps="all")
    net.connect_dense(out, y, return_sequence=True)
    return net


def _data(n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, T, F)).astype(dtype) * 2, rng.normal(size=(n, T, 3)).astype(dtype)


def _run(hidden, n, dtype, backend, variant="plain"):
    net = _net(hidden, variant)
    net.compile(n, backend=backend, dtype=dtype)
    rng = np.random.default_rng(7)
    # Biases away from zero, so every gate's values matter.
    net.set_weights({k: v + rng.uniform(-0.5, 0.5, v.shape).astype(v.dtype) for k, v in net.weights().items()})
    x, t = _data(n, dtype)
    return net.predict(x), net.gradients((x, t))


def _assert_close(got, want, dtype):
    tol = 1e-12 if np.dtype(dtype) == np.float64 else 2e-5
    out, grads = got
    np.testing.assert_allclose(out, want[0], rtol=0, atol=tol * max(1.0, np.abs(want[0]).max()))
    assert set(grads) == set(want[1])
    for k, g in want[1].items():
        np.testing.assert_allclose(grads[k], g, rtol=0, atol=tol * max(1.0, np.abs(g).max()), err_msg=k)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("hidden", [1, 3, 17, 127])
@pytest.mark.parametrize("n", [1, 3])
def test_lstm_steps_fuse_with_the_reference_values(hidden, n, dtype):
    rec = _Recording()
    fused = _run(hidden, n, dtype, rec)
    # Every step of the prediction and the gradient run: T forward cells (twice), T backward.
    assert rec.ops.count("lstm_cell") == 2 * T
    assert rec.ops.count("lstm_cell_grad") == T
    assert not {"sigmoid", "tanh"} & set(rec.ops)
    _assert_close(fused, _run(hidden, n, dtype, "reference"), dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("hidden", [1, 3, 17, 127])
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("variant", ["gru", "gru_by_hand"])
def test_gru_steps_fuse_with_the_reference_values(hidden, n, dtype, variant):
    rec = _Recording()
    fused = _run(hidden, n, dtype, rec, variant)
    assert rec.ops.count("gru_cell") == 2 * T
    assert rec.ops.count("gru_cell_grad") == T
    assert not {"sigmoid", "tanh"} & set(rec.ops)
    _assert_close(fused, _run(hidden, n, dtype, "reference", variant), dtype)


@pytest.mark.skipif(not fc._native.available, reason="the native extension is not built")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("hidden", "n"), [(1, 1), (3, 3), (17, 1), (127, 3)])
@pytest.mark.parametrize("variant", ["plain", "gru"])
def test_the_cpu_kernels_give_the_reference_values(hidden, n, dtype, variant):
    _assert_close(_run(hidden, n, dtype, "cpu", variant), _run(hidden, n, dtype, "reference", variant), dtype)


# Steps that are plain LSTM steps all the same: a peephole reads c[-1] = 0 at t = 0, a gate
# reading x two steps back reads the zero initial state at t = 0, 1 (in the prediction and the
# gradient plan each).
FUSED_STEPS = {"peephole": 1, "other_source": 2, "layer_norm": 0, "sigmoid_candidate": 0, "relu_output": 0,
               "gru_sigmoid_candidate": 0, "gru_other_source": 2}


@pytest.mark.parametrize("variant", list(FUSED_STEPS))
def test_variants_run_unfused_with_the_same_values(variant):
    rec = _Recording()
    fused = _run(5, 3, "float64", rec, variant)
    kind = "gru_cell" if variant.startswith("gru") else "lstm_cell"
    assert rec.ops.count(kind) == 2 * FUSED_STEPS[variant]
    assert rec.ops.count(f"{kind}_grad") <= FUSED_STEPS[variant]
    _assert_close(fused, _run(5, 3, "float64", "reference", variant), "float64")
    if fc._native.available:
        _assert_close(_run(5, 3, "float64", "cpu", variant), fused, "float64")


def test_other_graphs_are_left_alone():
    a, b = fc.placeholder((2, 3)), fc.placeholder((2, 3))
    y = fc.sigmoid(a) * fc.tanh(b)
    assert fuse_rnn_cells([y]) == [y]


@settings(max_examples=8, deadline=None)
@given(hidden=st.integers(1, 40), n=st.integers(1, 5), order=st.permutations(range(4)),
       two=st.booleans(), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_a_cell_written_in_ir_fuses_for_any_block_order(hidden, n, order, two, bias, seed):
    """The gates' blocks in any order of the (n, 4h) sources, one or two sources, with or
    without a bias: the fused graph computes the unfused one's h, c and gradients."""
    rng = np.random.default_rng(seed)
    dt = np.float64
    srcs = [fc.placeholder((n, 4 * hidden), dt, name=f"s{k}") for k in range(1 + two)]
    bs = [fc.placeholder((hidden,), dt, name=f"b{k}") for k in range(4)]
    cp = fc.placeholder((n, hidden), dt, name="cp")
    pre = []
    for k in range(4):
        cols = slice(order[k] * hidden, (order[k] + 1) * hidden)
        p = srcs[0][:, cols]
        for s in srcs[1:]:
            p = p + s[:, cols]
        pre.append(p + bs[k] if bias else p)
    i, f, o = (fc.sigmoid(p) for p in (pre[0], pre[1], pre[3]))
    g = fc.tanh(pre[2])
    c = f * cp + i * g
    h = o * fc.tanh(c)
    w = fc.const(rng.normal(size=(n, hidden)))
    loss = fc.sum(h * w) + fc.sum(c * c)
    ins = srcs + (bs if bias else []) + [cp]
    outs = [h, c, *fc.grad(loss, ins)]
    rec = _Recording()
    feeds = [rng.normal(size=v.shape) * 2 for v in ins]
    got = fc.function(ins, outs, backend=rec)(*feeds)
    assert rec.ops.count("lstm_cell") == 1 and rec.ops.count("lstm_cell_grad") == 1
    want = fc.function(ins, outs, backend="reference")(*feeds)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    if fc._native.available:
        for a, b in zip(fc.function(ins, outs, backend="cpu")(*feeds), want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def _grad_matrix(v) -> bool:
    return v.op == "reshape" and v.inputs[0].op == "slice" and v.inputs[0].inputs[0].op.endswith("_cell_grad")


@pytest.mark.parametrize(("variant", "joins"), [("plain", 1), ("gru", 2)])
def test_weight_gradients_read_one_join_of_the_steps(variant, joins):
    """The gradient matrices of all steps are joined once (twice for a GRU: x's and hh's) and the
    weight and bias gradients read blocks of that join: no per-gate join, no permuted copy."""

    class Last(_Recording):
        def _record(self, roots):
            self.ops = list(toposort(roots))
            return list(roots)

    rec = Last()
    net = _net(5, variant)
    net.compile(3, backend=rec, dtype="float64")
    x, t = _data(3, "float64")
    net.gradients((x, t))
    concats = [v for v in rec.ops if v.op == "concat"]
    whole = [v for v in concats if v.ndim == 2 and all(_grad_matrix(x) for x in v.inputs)]
    assert len(whole) == joins
    assert not [v for v in concats if any(x.op == "slice" and _grad_matrix(x.inputs[0]) for x in v.inputs)]
