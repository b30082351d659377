"""Training: the seed program learns, a conv network with feedback learns, `gradients` is
right, and each optimizer / penalty / clipping setting takes the step its formula says."""

from __future__ import annotations

import numpy as np
import pytest

from flexcore import ActivationLayer, FeatureMapLayer, InputLayer, Network

REF = "reference"
F64 = "float64"


# ---------------------------------------------------------------------------------------
# the seed program
# ---------------------------------------------------------------------------------------


def test_seed_program_runs_unchanged_and_learns(monkeypatch):
    # The program below is the seed's, word for word; only the data (and its sizes) are ours.
    # It names no backend, so the environment picks the reference one.
    monkeypatch.setenv("FLEXCORE_BACKEND", REF)
    rng = np.random.default_rng(0)
    prototypes = 3.0 * np.sign(rng.normal(size=(10, 196)))  # one +-3 pattern per class

    def make(n):
        labels = rng.integers(0, 10, n)
        x = prototypes[labels][:, None, :] + rng.normal(size=(n, 4, 196))
        return x.astype(np.float32), labels

    training_data, validation_data, test_data = make(1200), make(50), make(50)
    # A plain-SGD stack of four sigmoid layers needs a few hundred steps to leave its plateau.
    mini_batch_size, epochs = 5, 3

    # fmt: off
    net = Network('Demo')
    L1 = InputLayer(inputShape = (196,), sequence_length=4)  # noqa: N806
    L2 = ActivationLayer(inputShape=(300,), passFunction='sigmoid')  # noqa: N806
    L3 = ActivationLayer(inputShape=(150,), passFunction='sigmoid')  # noqa: N806
    L4 = ActivationLayer(inputShape=(10,),passFunction='softmax',ifOutput=True,lossFunction="negativeLogLikelihood")  # noqa: N806, E501
    L5 = ActivationLayer(inputShape=(50,), passFunction='sigmoid')  # noqa: N806
    L6 = ActivationLayer(inputShape=(200,), passFunction='sigmoid')  # noqa: N806
    net.connectDense(L1,L2,return_sequence=True)
    net.connectDense(L2,L3,return_sequence=True)
    net.connectRecurrent(L5,L2)
    net.connectDense(L3,L5, return_sequence=True)
    net.connectDense(L5,L6)
    net.connectDense(L6,L4)
    net.compile(mini_batch_size)
    history = net.fit(training_data, epochs, 0.1, validation_data, test_data)
    # fmt: on

    assert len(history["loss"]) == epochs
    assert history["loss"][-1] < 0.8 * history["loss"][0]
    assert history["test_accuracy"][-1] > 0.5 and history["val_accuracy"][-1] > 0.5  # chance is 0.1
    # The wiring is what the seed meant: L2, L3, L5 every step (L5 feeds L2 back), L6 and L4 once.
    w = net.wiring
    assert [w.seq[id(layer)] for layer in (L2, L3, L5, L6, L4)] == [True, True, True, False, False]


# ---------------------------------------------------------------------------------------
# a conv network whose 3rd conv layer feeds its 1st at the next step
# ---------------------------------------------------------------------------------------


def test_conv_network_with_feedback_learns_a_sequence_task():
    # The class is where a spike sits at step 0; the last step is noise, so only the feedback
    # path c3[t-1] -> c1[t] carries the answer to the output, which reads the last step.
    rng = np.random.default_rng(2)
    n, t_len, length = 96, 3, 6

    def make(n):
        labels = rng.integers(0, 3, n)
        x = 0.1 * rng.normal(size=(n, t_len, 1, length))
        x[np.arange(n), 0, 0, 2 * labels] += 2.0
        return x, labels

    net = Network("convfb", seed=3)
    x = InputLayer((1, length), sequence_length=t_len, name="x")
    c1 = FeatureMapLayer((4, length), activation="tanh", name="c1")
    c2 = FeatureMapLayer((4, length), activation="tanh", name="c2")
    c3 = FeatureMapLayer((4, length), activation="tanh", name="c3")
    y = ActivationLayer((3,), activation="softmax", name="y", output=True, loss="nll")
    net.connect_conv(x, c1, kernel_size=3, return_sequence=True)
    net.connect_conv(c1, c2, kernel_size=3, return_sequence=True)
    net.connect_conv(c2, c3, kernel_size=3, return_sequence=True)
    net.connect_recurrent(c3, c1, kind="conv", kernel_size=3)
    net.connect_dense(c3, y)
    net.compile(16, optimizer="adam", backend=REF)
    train, test = make(n), make(48)
    before = net.evaluate(test)
    history = net.fit(train, 8, 0.02, verbose=False)
    after = net.evaluate(test)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert after["loss"] < 0.5 * before["loss"]
    assert after["accuracy"] > 0.8


# ---------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------


def small_net(seed=0, **compile_kw):
    """x (4,) sequence of 3 -> h (3, tanh, recurrent) -> y (2 classes)."""
    net = Network("small", seed=seed)
    x = InputLayer((4,), sequence_length=3, name="x")
    h = ActivationLayer((3,), activation="tanh", name="h")
    y = ActivationLayer((2,), activation="softmax", name="y", output=True, loss="nll")
    net.connect_dense(x, h, return_sequence=True)
    net.connect_recurrent(h, h)
    net.connect_dense(h, y)
    compile_kw.setdefault("backend", REF)
    compile_kw.setdefault("dtype", F64)
    net.compile(compile_kw.pop("batch_size", 8), **compile_kw)
    rng = np.random.default_rng(seed + 100)
    # Non-zero biases, so every parameter moves and every penalty term shows.
    net.set_weights({k: rng.uniform(-0.8, 0.8, v.shape) for k, v in net.weights().items()})
    return net


def small_data(n=8, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3, 4)), rng.integers(0, 2, n)


def test_gradients_match_finite_differences_of_the_loss():
    net = small_net()
    data = small_data()
    g = net.gradients(data)
    assert set(g) == set(net.weights())
    w0 = net.weights()
    eps = 1e-6
    for k, v in w0.items():
        for idx in np.ndindex(v.shape):
            for sign in (1, -1):
                w = v.copy()
                w[idx] += sign * eps
                net.set_weights({k: w})
                if sign == 1:
                    up = net.evaluate(data)["loss"]
                else:
                    down = net.evaluate(data)["loss"]
            net.set_weights({k: v})
            assert g[k][idx] == pytest.approx((up - down) / (2 * eps), abs=1e-8), (k, idx)


def test_gradients_over_several_batches_are_the_mean_over_all_examples():
    data = small_data(n=10)
    whole = small_net(batch_size=10).gradients(data)
    batched = small_net(batch_size=4).gradients(data)  # batches of 4, 4 and 2
    for k in whole:
        np.testing.assert_allclose(batched[k], whole[k], rtol=1e-12, atol=1e-15, err_msg=k)


# ---------------------------------------------------------------------------------------
# one or two steps of each optimizer, by hand
# ---------------------------------------------------------------------------------------


def two_steps(net, data, lr):
    """Weights and gradients before each of two training steps, and the weights after."""
    ws, gs, losses = [], [], []
    for _ in range(2):
        ws.append(net.weights())
        gs.append(net.gradients(data))
        losses.append(net.evaluate(data)["loss"])
        h = net.fit(data, 1, lr, shuffle=False, verbose=False)  # one batch: one step
        assert h["loss"][0] == pytest.approx(losses[-1], rel=1e-12)  # the loss before the step
    ws.append(net.weights())
    return ws, gs


def sgd(w, g, lr):
    return {k: w[k] - lr * g[k] for k in w}


def test_sgd_step():
    data, lr = small_data(), 0.3
    ws, gs = two_steps(small_net(), data, lr)
    for i in range(2):
        want = sgd(ws[i], gs[i], lr)
        for k in want:
            np.testing.assert_allclose(ws[i + 1][k], want[k], rtol=1e-13, atol=1e-15, err_msg=k)
            assert not np.allclose(ws[i + 1][k], ws[i][k])


def test_nesterov_steps():
    data, lr, mu = small_data(), 0.1, 0.9
    ws, gs = two_steps(small_net(optimizer="nesterov"), data, lr)
    for k in ws[0]:
        buf1 = gs[0][k]
        w1 = ws[0][k] - lr * (gs[0][k] + mu * buf1)
        buf2 = mu * buf1 + gs[1][k]
        w2 = w1 - lr * (gs[1][k] + mu * buf2)
        np.testing.assert_allclose(ws[1][k], w1, rtol=1e-13, atol=1e-15, err_msg=k)
        np.testing.assert_allclose(ws[2][k], w2, rtol=1e-13, atol=1e-15, err_msg=k)


def test_adam_steps():
    data, lr, b1, b2, eps = small_data(), 0.05, 0.9, 0.999, 1e-8
    ws, gs = two_steps(small_net(optimizer="adam"), data, lr)
    for k in ws[0]:
        m = v = 0.0
        w = ws[0][k]
        for t, g in enumerate((gs[0][k], gs[1][k]), start=1):
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            w = w - lr / (1 - b1**t) * m / (np.sqrt(v) / np.sqrt(1 - b2**t) + eps)
            np.testing.assert_allclose(ws[t][k], w, rtol=1e-12, atol=1e-14, err_msg=f"{k} step {t}")


def test_rmsprop_steps():
    data, lr, alpha, eps = small_data(), 0.01, 0.99, 1e-8
    ws, gs = two_steps(small_net(optimizer="rmsprop"), data, lr)
    for k in ws[0]:
        sq = 0.0
        w = ws[0][k]
        for t, g in enumerate((gs[0][k], gs[1][k]), start=1):
            sq = alpha * sq + (1 - alpha) * g * g
            w = w - lr * g / (np.sqrt(sq) + eps)
            np.testing.assert_allclose(ws[t][k], w, rtol=1e-12, atol=1e-14, err_msg=f"{k} step {t}")


@pytest.mark.parametrize("penalty", ["l1", "l2"])
def test_weight_penalties_change_the_step_of_weight_matrices_only(penalty):
    data, lr, lam = small_data(), 0.2, 0.03
    plain = small_net().gradients(data)
    net = small_net(**{penalty: lam})
    w0 = net.weights()
    g0 = net.gradients(data)  # the penalised objective, the one fit follows
    net.fit(data, 1, lr, shuffle=False, verbose=False)
    w1 = net.weights()
    for k in w0:
        extra = 0.0
        if k.endswith(".W"):  # connection weights; biases are not penalised
            extra = lam * (np.sign(w0[k]) if penalty == "l1" else 2 * w0[k])
            assert np.abs(extra).max() > 1e-3
        np.testing.assert_allclose(g0[k], plain[k] + extra, rtol=1e-13, atol=1e-15, err_msg=k)
        np.testing.assert_allclose(
            w1[k], w0[k] - lr * (plain[k] + extra), rtol=1e-13, atol=1e-15, err_msg=k
        )


def test_clip_norm_scales_the_whole_step():
    data, lr = small_data(), 0.5
    g = small_net().gradients(data)
    norm = np.sqrt(sum((v * v).sum() for v in g.values()))
    for clip, scale in ((0.25 * norm, 0.25 * norm / (norm + 1e-6)), (4.0 * norm, 1.0)):
        net = small_net(clip_norm=clip)
        w0 = net.weights()
        net.fit(data, 1, lr, shuffle=False, verbose=False)
        w1 = net.weights()
        for k in w0:
            np.testing.assert_allclose(
                w1[k], w0[k] - lr * scale * g[k], rtol=1e-12, atol=1e-15, err_msg=k
            )


# ---------------------------------------------------------------------------------------
# learnable initial state
# ---------------------------------------------------------------------------------------


def test_learnable_initial_state_trains():
    rng = np.random.default_rng(4)
    net = Network(seed=2)
    x = InputLayer((3,), sequence_length=4, name="x")
    h = ActivationLayer((3,), activation="tanh", name="h", initial_state="learnable")
    y = ActivationLayer((3,), name="y", output=True, loss="mse", loss_steps="all", bias=False)
    net.connect_dense(x, h, return_sequence=True)
    net.connect_recurrent(h, h)
    net.connect_identity(h, y, return_sequence=True)
    net.compile(8, backend=REF, dtype=F64)
    xv = rng.normal(size=(16, 4, 3))
    target = np.tanh(xv + 0.5)  # an offset only the bias and h0 can supply at t = 0
    h0 = net.weights()["h.h0"]
    np.testing.assert_array_equal(h0, 0.0)
    assert np.abs(net.gradients((xv, target))["h.h0"]).max() > 1e-3
    history = net.fit((xv, target), 15, 0.5, verbose=False)
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert np.abs(net.weights()["h.h0"] - h0).max() > 1e-2


def test_each_fit_call_shuffles_anew_and_epochs_compose():
    data = small_data(n=16)
    seen = []

    def record(net):
        train = net._fns["train"]

        def spy(*args):
            seen.append(args[0][:, 0, 0].copy())  # which examples, in which order
            return train(*args)

        net._fns["train"] = spy

    one = small_net(batch_size=16)
    record(one)
    h1 = [one.fit(data, 1, 0.1, verbose=False)["loss"][0] for _ in range(2)]
    first, second = seen
    assert not np.array_equal(first, second)  # a second fit call does not repeat the order
    assert sorted(first) == sorted(second)
    two = small_net(batch_size=16)
    h2 = two.fit(data, 2, 0.1, verbose=False)["loss"]
    np.testing.assert_array_equal(h1, h2)  # fit(2 epochs) == fit(1 epoch) twice


def test_learning_rate_schedule_is_a_function_of_the_epoch():
    data = small_data()
    net = small_net()
    w0 = net.weights()
    g0 = net.gradients(data)
    history = net.fit(data, 3, lambda epoch: [0.2, 0.0, 0.0][epoch], shuffle=False, verbose=False)
    assert history["lr"] == [0.2, 0.0, 0.0]
    for k, v in net.weights().items():  # one step of 0.2, then two of nothing
        np.testing.assert_allclose(v, w0[k] - 0.2 * g0[k], rtol=1e-13, atol=1e-15, err_msg=k)
