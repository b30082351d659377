"""Unrolling: what each layer reads at step t, checked value by value against hand-unrolled
numpy on tiny instances with known weights."""

from __future__ import annotations

import numpy as np
import pytest

from flexcore import ActivationLayer, FeatureMapLayer, InputLayer, MemoryLayer, Network

REF = "reference"
F64 = "float64"
RNG = np.random.default_rng(11)


def rand(*shape):
    return RNG.normal(size=shape)


def compile64(net: Network, batch: int) -> Network:
    return net.compile(batch, backend=REF, dtype=F64)


def out_layer(shape, name="y", **kw):
    """An output that is exactly its summed input: identity activation, no bias."""
    kw.setdefault("loss", "mse")
    return ActivationLayer(shape, name=name, output=True, bias=False, **kw)


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def softmax(v):
    e = np.exp(v - v.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ---------------------------------------------------------------------------------------
# delays
# ---------------------------------------------------------------------------------------


def test_delay_three_reads_the_value_three_steps_back():
    n, t_len = 2, 7
    net = Network()
    x = InputLayer((3,), sequence_length=t_len, name="x")
    y = out_layer((3,), loss_steps="all")
    net.connect_identity(x, y, delay=3)
    compile64(net, n)
    xv = rand(n, t_len, 3)
    out = net.predict(xv)
    assert out.shape == (n, t_len, 3)
    np.testing.assert_array_equal(out[:, :3], 0.0)  # before t = 0 a source is its initial state
    np.testing.assert_array_equal(out[:, 3:], xv[:, :-3])


def test_delay_three_through_a_dense_connection_with_given_initial_state():
    n, t_len = 2, 6
    h0 = np.array([0.5, -1.25, 2.0])
    net = Network()
    x = InputLayer((3,), sequence_length=t_len, name="x", initial_state=h0)
    y = out_layer((3,), loss_steps="all")
    conn = net.connect_recurrent(x, y, delay=3)
    compile64(net, n)
    w = rand(3, 3)
    net.set_weights({f"{conn.name}.W": w})
    xv = rand(n, t_len, 3)
    out = net.predict(xv)
    np.testing.assert_allclose(out[:, :3], np.broadcast_to(h0 @ w, (n, 3, 3)), rtol=1e-14)
    np.testing.assert_allclose(out[:, 3:], xv[:, :-3] @ w, rtol=1e-14)


def test_a_layer_sums_connections_of_different_delays():
    # y_t = x_t + 2 * x_{t-1} - x_{t-3}, with the input's given initial state before t = 0.
    n, t_len = 2, 5
    x0 = np.array([1.0, 3.0])
    net = Network()
    x = InputLayer((2,), sequence_length=t_len, name="x", initial_state=x0)
    y = out_layer((2,), loss_steps="all")
    net.connect_identity(x, y, return_sequence=True)
    net.connect_identity(x, y, delay=1, scale=2.0)
    net.connect_identity(x, y, delay=3, scale=-1.0)
    compile64(net, n)
    xv = rand(n, t_len, 2)
    padded = np.concatenate([np.broadcast_to(x0, (n, 3, 2)), xv], axis=1)  # padded[:, t + 3] = x_t
    want = xv + 2 * padded[:, 2:-1] - padded[:, :-3]
    np.testing.assert_allclose(net.predict(xv), want, rtol=1e-14, atol=1e-15)


# ---------------------------------------------------------------------------------------
# a conv network with feedback from the 3rd conv layer into the 1st
# ---------------------------------------------------------------------------------------


def conv1d_same(x, w):
    """x (N, C_in, L), w (C_out, C_in, K) with odd K: cross-correlation, zero 'same' padding."""
    k = w.shape[-1]
    p = k // 2
    xp = np.pad(x, ((0, 0), (0, 0), (p, p)))
    n, _, length = x.shape
    out = np.zeros((n, w.shape[0], length))
    for i in range(length):
        out[:, :, i] = np.einsum("ncK,ocK->no", xp[:, :, i : i + k], w)
    return out


def feedback_conv_net(c=2, length=5, t_len=3, k=3):
    net = Network("convfb")
    x = InputLayer((1, length), sequence_length=t_len, name="x")
    c1 = FeatureMapLayer((c, length), activation="tanh", name="c1")
    c2 = FeatureMapLayer((c, length), activation="tanh", name="c2")
    c3 = FeatureMapLayer((c, length), activation="tanh", name="c3")
    y = ActivationLayer((3,), activation="softmax", name="y", output=True, loss="nll")
    net.connect_conv(x, c1, kernel_size=k, return_sequence=True)
    net.connect_conv(c1, c2, kernel_size=k, return_sequence=True)
    net.connect_conv(c2, c3, kernel_size=k, return_sequence=True)
    fb = net.connect_recurrent(c3, c1, kind="conv", kernel_size=k)  # c1 at t reads c3 at t-1
    net.connect_dense(c3, y)  # y reads c3's last step
    return net, fb


def test_conv_feedback_from_third_to_first_layer_matches_hand_unrolling():
    n, t_len = 2, 3
    net, fb = feedback_conv_net(t_len=t_len)
    compile64(net, n)
    net.set_weights({k: RNG.uniform(-0.8, 0.8, v.shape) for k, v in net.weights().items()})
    w = net.weights()
    xv = rand(n, t_len, 1, 5)

    def bias(name):
        return w[f"{name}.b"][None, :, None]

    c3 = np.zeros((n, 2, 5))  # c3 before t = 0
    for t in range(t_len):
        c1 = np.tanh(
            conv1d_same(xv[:, t], w["x->c1.W"]) + conv1d_same(c3, w[f"{fb.name}.W"]) + bias("c1")
        )
        c2 = np.tanh(conv1d_same(c1, w["c1->c2.W"]) + bias("c2"))
        c3 = np.tanh(conv1d_same(c2, w["c2->c3.W"]) + bias("c3"))
    want = softmax(c3.reshape(n, -1) @ w["c3->y.W"] + w["y.b"])
    np.testing.assert_allclose(net.predict(xv), want, rtol=1e-12, atol=1e-14)
    # The feedback matters: without it (zero weights) the answer differs.
    net.set_weights({f"{fb.name}.W": np.zeros_like(w[f"{fb.name}.W"])})
    assert not np.allclose(net.predict(xv), want, atol=1e-4)


# ---------------------------------------------------------------------------------------
# return_sequence, sequence targets, predict shapes
# ---------------------------------------------------------------------------------------


def test_static_layer_reads_the_last_step():
    n, t_len = 3, 4
    net = Network()
    x = InputLayer((2,), sequence_length=t_len, name="x")
    h = ActivationLayer((2,), bias=False, name="h")
    y = out_layer((2,))
    net.connect_identity(x, h, return_sequence=True)  # h exists at every step
    net.connect_recurrent(h, h, kind="identity")  # h_t = x_t + h_{t-1}: a running sum
    net.connect_identity(h, y)  # y is static: it reads h's last step
    compile64(net, n)
    assert net.wiring.seq[id(h)] and not net.wiring.seq[id(y)]
    xv = rand(n, t_len, 2)
    out = net.predict(xv)
    assert out.shape == (n, 2)
    np.testing.assert_allclose(out, xv.sum(axis=1), rtol=1e-13)


def test_return_sequence_keeps_downstream_layers_at_every_step():
    n, t_len = 2, 3
    net = Network()
    x = InputLayer((2,), sequence_length=t_len, name="x")
    h = ActivationLayer((2,), activation="tanh", bias=False, name="h")
    y_last = out_layer((2,), name="last")  # sequence layer, loss at the last step
    y_all = out_layer((2,), name="all", loss_steps="all")  # sequence layer, loss at every step
    y_static = out_layer((2,), name="static")  # static layer
    net.connect_identity(x, h, return_sequence=True)
    net.connect_identity(h, y_last, return_sequence=True)
    net.connect_identity(h, y_all, return_sequence=True)
    net.connect_identity(h, y_static)
    compile64(net, n)
    xv = rand(n, t_len, 2)
    last, every, static = net.predict(xv)
    assert last.shape == (n, 2) and every.shape == (n, t_len, 2) and static.shape == (n, 2)
    np.testing.assert_allclose(every, np.tanh(xv), rtol=1e-14)
    np.testing.assert_allclose(last, np.tanh(xv[:, -1]), rtol=1e-14)
    np.testing.assert_allclose(static, np.tanh(xv[:, -1]), rtol=1e-14)


def test_sequence_targets_with_loss_at_every_step():
    n, t_len, k = 4, 3, 5
    net = Network()
    x = InputLayer((2,), sequence_length=t_len, name="x")
    y = ActivationLayer(
        (k,), activation="softmax", name="y", output=True, loss="nll", loss_steps="all"
    )
    net.connect_dense(x, y, return_sequence=True)
    net.connect_recurrent(y, y)
    compile64(net, n)
    xv = rand(n, t_len, 2)
    labels = RNG.integers(0, k, size=(n, t_len))
    probs = net.predict(xv)
    assert probs.shape == (n, t_len, k)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-13)
    # The loss is the mean over steps of each step's mean nll: the mean over all (n, t) pairs.
    picked = np.take_along_axis(probs, labels[..., None], -1)[..., 0]
    res = net.evaluate((xv, labels))
    assert res["loss"] == pytest.approx(-np.log(picked).mean(), rel=1e-12)
    assert res["accuracy"] == pytest.approx((probs.argmax(-1) == labels).mean(), rel=1e-12)


def test_several_outputs_each_with_its_own_loss_and_weight():
    n = 4

    def build(w1, w2):
        net = Network(seed=5)
        x = InputLayer((3,), sequence_length=2, name="x")
        h = ActivationLayer((4,), activation="tanh", name="h")
        a = ActivationLayer(
            (3,), activation="softmax", name="a", output=True, loss="nll", loss_weight=w1
        )
        b = ActivationLayer(
            (2,),
            activation="identity",
            name="b",
            output=True,
            loss="mse",
            loss_weight=w2,
            loss_steps="all",
        )
        net.connect_dense(x, h, return_sequence=True)
        net.connect_recurrent(h, h)
        net.connect_dense(h, a)
        net.connect_dense(h, b, return_sequence=True)
        return compile64(net, n)

    xv = rand(n, 2, 3)
    ya = RNG.integers(0, 3, size=n)
    yb = rand(n, 2, 2)
    net = build(0.3, 2.0)
    pa, pb = net.predict(xv)
    assert pa.shape == (n, 3) and pb.shape == (n, 2, 2)
    nll = -np.log(pa[np.arange(n), ya]).mean()
    mse = ((pb - yb) ** 2).mean()
    assert net.evaluate((xv, {"a": ya, "b": yb}))["loss"] == pytest.approx(
        0.3 * nll + 2.0 * mse, rel=1e-12
    )
    # Targets as a list in output order mean the same.
    assert net.evaluate((xv, [ya, yb]))["loss"] == pytest.approx(0.3 * nll + 2.0 * mse, rel=1e-12)
    # The gradient is the same weighted sum of the per-output gradients.
    g = net.gradients((xv, [ya, yb]))
    ga = build(1.0, 0.0).gradients((xv, [ya, yb]))
    gb = build(0.0, 1.0).gradients((xv, [ya, yb]))
    for k in g:
        np.testing.assert_allclose(
            g[k], 0.3 * ga[k] + 2.0 * gb[k], rtol=1e-10, atol=1e-14, err_msg=k
        )


# ---------------------------------------------------------------------------------------
# initial states
# ---------------------------------------------------------------------------------------


def running_sum_net(initial_state, n=2, t_len=4):
    net = Network(seed=1)
    x = InputLayer((3,), sequence_length=t_len, name="x")
    h = ActivationLayer((3,), bias=False, name="h", initial_state=initial_state)
    y = out_layer((3,), loss_steps="all")
    net.connect_identity(x, h, return_sequence=True)
    net.connect_recurrent(h, h, kind="identity")  # h_t = x_t + h_{t-1}
    net.connect_identity(h, y, return_sequence=True)
    return compile64(net, n)


def test_initial_state_zeros_and_given_array():
    xv = rand(2, 4, 3)
    np.testing.assert_allclose(running_sum_net("zeros").predict(xv), np.cumsum(xv, 1), rtol=1e-13)
    h0 = np.array([0.1, -0.2, 0.3])  # kept in float64 for a float64 network
    np.testing.assert_allclose(
        running_sum_net(h0).predict(xv), h0 + np.cumsum(xv, 1), rtol=1e-13, atol=1e-15
    )


def test_learnable_initial_state_has_the_right_gradient():
    n, t_len = 2, 4
    net = running_sum_net("learnable", n, t_len)
    h0 = np.array([0.4, -0.1, 0.7])
    net.set_weights({"h.h0": h0})
    xv, target = rand(n, t_len, 3), rand(n, t_len, 3)
    # loss = mean over (n, t, j) of (h0_j + cumsum - target)^2:
    # d loss / d h0_j = 2 * sum over (n, t) of the residual / (n * t * 3)
    resid = h0 + np.cumsum(xv, 1) - target
    g = net.gradients((xv, target))
    np.testing.assert_allclose(g["h.h0"], 2 * resid.sum((0, 1)) / resid.size, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# combination, memory layers, identity and pooling connections
# ---------------------------------------------------------------------------------------


def test_product_combine_multiplies_the_contributions():
    n = 3
    net = Network()
    xs = [InputLayer((4,), name=f"x{i}") for i in range(3)]
    p = ActivationLayer((4,), combine="product", activation="tanh", name="p")
    assert not p.bias  # a product gate has no bias unless asked for
    y = out_layer((4,))
    for x in xs:
        net.connect_identity(x, p)
    net.connect_identity(p, y)
    compile64(net, n)
    vals = [rand(n, 4) for _ in xs]
    np.testing.assert_allclose(net.predict(vals), np.tanh(vals[0] * vals[1] * vals[2]), rtol=1e-14)


@pytest.mark.parametrize(
    "roles",
    [
        ("forget", "input", "candidate"),
        ("input", "candidate"),
        ("forget", "candidate"),
        ("candidate",),
    ],
)
def test_memory_layer_roles(roles):
    n, t_len = 2, 4
    c0 = np.array([1.0, -2.0])
    net = Network()
    xs = {r: InputLayer((2,), sequence_length=t_len, name=f"x_{r}") for r in roles}
    c = MemoryLayer((2,), name="c", initial_state=c0)
    y = out_layer((2,), loss_steps="all")
    for r, x in xs.items():
        net.connect_gate(x, c, r)
    net.connect_identity(c, y, return_sequence=True)
    compile64(net, n)
    vals = {r: rand(n, t_len, 2) for r in roles}
    # c_t = F_t * c_{t-1} + I_t * G_t, F = 1 without forget connections, I = 1 without input ones
    prev, want = np.broadcast_to(c0, (n, 2)), []
    for t in range(t_len):
        f = vals["forget"][:, t] if "forget" in vals else 1.0
        i = vals["input"][:, t] if "input" in vals else 1.0
        prev = f * prev + i * vals["candidate"][:, t]
        want.append(prev)
    out = net.predict([vals[r] for r in roles])
    np.testing.assert_allclose(out, np.stack(want, 1), rtol=1e-13, atol=1e-15)


def test_identity_connections_scale_and_reshape():
    n = 3
    net = Network()
    fm = InputLayer((2, 3), name="fm")
    v = InputLayer((6,), name="v")
    y = out_layer((6,))
    net.connect_identity(fm, y, scale=2.5)  # a (2, 3) map into a (6,) vector: reshaped
    net.connect_identity(v, y, scale=-0.5)  # a skip path
    compile64(net, n)
    a, b = rand(n, 2, 3), rand(n, 6)
    np.testing.assert_allclose(
        net.predict([a, b]), 2.5 * a.reshape(n, 6) - 0.5 * b, rtol=1e-14, atol=1e-15
    )


def test_pooling_connections_1d_and_2d():
    n = 2
    net = Network()
    x1 = InputLayer((2, 6), name="x1")
    x2 = InputLayer((3, 4, 4), name="x2")
    m1 = FeatureMapLayer((2, 3), bias=False, name="m1", output=True, loss="mse")
    a2 = FeatureMapLayer((3, 2, 2), bias=False, name="a2", output=True, loss="mse")
    net.connect_pool(x1, m1, mode="max", kernel_size=2)
    net.connect_pool(x2, a2, mode="avg", kernel_size=2)
    compile64(net, n)
    v1, v2 = rand(n, 2, 6), rand(n, 3, 4, 4)
    out1, out2 = net.predict([v1, v2])
    np.testing.assert_allclose(out1, v1.reshape(n, 2, 3, 2).max(-1), rtol=1e-15)
    np.testing.assert_allclose(out2, v2.reshape(n, 3, 2, 2, 2, 2).mean((3, 5)), rtol=1e-14)


def test_dense_connection_with_activation_and_bias():
    # The general layer: activation(sum of W x + bias); the basic case the rest builds on.
    n = 3
    net = Network()
    x = InputLayer((4,), name="x")
    y = ActivationLayer((2,), activation="sigmoid", name="y", output=True, loss="mse")
    net.connect_dense(x, y)
    compile64(net, n)
    w = net.weights()
    net.set_weights({"y.b": np.array([0.3, -0.4])})
    xv = rand(n, 4)
    np.testing.assert_allclose(net.predict(xv), sigmoid(xv @ w["x->y.W"] + [0.3, -0.4]), rtol=1e-14)
