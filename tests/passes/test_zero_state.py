"""A product with a constant zero (a recurrent connection reading the zero initial state at t = 0)
is folded away: no GEMM is planned for it, and results and gradients are unchanged."""

from __future__ import annotations

import numpy as np

import flexcore as fc
from flexcore.passes import optimize
from flexcore.ir.core import toposort


def _matmuls(roots):
    return [v for v in toposort(roots) if v.op == "matmul"]


def test_zero_times_weight_is_folded_and_values_agree():
    rng = np.random.default_rng(0)
    x = fc.placeholder((4, 3), np.float64, name="x")
    w = fc.shared(rng.standard_normal((3, 5)), name="w")
    u = fc.shared(rng.standard_normal((5, 5)), name="u")
    h0 = fc.broadcast_to(fc.const(np.zeros(())), (4, 5))
    h1 = fc.tanh(x @ w + h0 @ u)  # t = 0: the state term is zero
    h2 = fc.tanh(x @ w + h1 @ u)
    loss = fc.sum(h2 * h2)
    grads = fc.grad(loss, [w, u])
    roots = optimize([loss, *grads])
    # x @ w (once, shared by both steps), h1 @ u; in the gradients: x^T g twice and h1^T g and
    # g @ u^T -- but nothing multiplies the zero state.
    for m in _matmuls(roots):
        for side in m.inputs:
            assert not (side.op == "const" and not np.any(fc.ir.core.const_value(side))), m
    xv = rng.standard_normal((4, 3))
    for backend in ("reference", "cpu"):
        f = fc.function([x], [loss, *grads], backend=backend)
        got = f(xv)
        h1v = np.tanh(xv @ w.storage.get())
        h2v = np.tanh(xv @ w.storage.get() + h1v @ u.storage.get())
        np.testing.assert_allclose(got[0], np.sum(h2v * h2v), rtol=1e-12)
        # u's gradient has exactly one term (from step 2): h1^T (dL/dpre2)
        g2 = 2 * h2v * (1 - h2v ** 2)
        np.testing.assert_allclose(got[2], h1v.T @ g2, rtol=1e-12)


def test_a_network_plans_one_recurrent_product_fewer_than_steps():
    net = fc.Network("zs", seed=0)
    x = fc.InputLayer((3,), sequence_length=4, name="x")
    h = fc.ActivationLayer((5,), activation="tanh", name="h")
    y = fc.ActivationLayer((2,), activation="softmax", output=True, loss="nll", name="y")
    net.connect_dense(x, h, return_sequence=True)
    rec = net.connect_recurrent(h, h)
    net.connect_dense(h, y)
    net.compile(2, optimizer="sgd")
    fn = net._fns["predict"].compiled((2, 4, 3))
    products = [st for st in fn.plan.steps if st.op in ("matmul", "gemm", "dense")
                and any(fn.plan.slots[i].shape == (5, 5) for i in st.inputs)]
    assert len(products) == 3, [(st.op, st.var.shape) for st in products]
