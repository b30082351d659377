"""Long and ragged sequences: truncated BPTT, stateful calls, per-step gradient clipping,
variable lengths and variational dropout, each checked value by value (hand-unrolled numpy,
or the same network run another way that must give the same numbers)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import flexcore as fc
from flexcore import ActivationLayer, FlexcoreError, InputLayer, Network
from flexcore.nn import cells

REF = "reference"
F64 = "float64"
F, H = 2, 3


def fixed_weights(net: Network, scale: float = 0.8) -> None:
    """Weights drawn per parameter name, so networks of different sequence lengths built with
    the same names get the same numbers."""
    ws = {}
    for k, v in net.weights().items():
        rng = np.random.default_rng(zlib.crc32(k.encode()))
        ws[k] = rng.uniform(-scale, scale, v.shape)
    net.set_weights(ws)


def seq_net(
    t_len: int,
    out: str = "all",
    cell: str = "rnn",
    delay2: bool = False,
    batch: int = 4,
    stateful: bool = False,
    optimizer="sgd",
    dropout: float = 0.0,
) -> Network:
    """x (F,) -> a cell (tanh RNN or LSTM, H units) -> y; `out`:
    'all'    y (2,) at every step, mse against targets (N, t_len, 2)
    'last'   y (3,) softmax, a sequence layer whose nll loss reads the last step
    'static' y (3,) softmax, a static layer reading h's last step
    `delay2` adds a connection from h two steps back; `dropout` sits on the input connection."""
    net = Network("seq", seed=5)
    x = InputLayer((F,), sequence_length=t_len, name="x")
    if cell == "lstm":
        h = cells.lstm(net, x, H, name="lstm").out
        target = net.layer("lstm.g")
    else:
        h = ActivationLayer((H,), activation="tanh", name="h")
        net.connect_dense(x, h, return_sequence=True, dropout=dropout)
        net.connect_recurrent(h, h)
        target = h
    if delay2:
        net.connect_recurrent(h, target, delay=2)
    if out == "all":
        y = ActivationLayer((2,), name="y", output=True, loss="mse", loss_steps="all")
        net.connect_dense(h, y, return_sequence=True)
    else:
        y = ActivationLayer((3,), activation="softmax", name="y", output=True, loss="nll")
        net.connect_dense(h, y, return_sequence=out == "last")
    net.compile(batch, backend=REF, dtype=F64, stateful=stateful, optimizer=optimizer)
    fixed_weights(net)
    return net


def seq_data(n: int, t_len: int, out: str = "all", seed: int = 1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, t_len, F))
    y = rng.normal(size=(n, t_len, 2)) if out == "all" else rng.integers(0, 3, n)
    return x, y


def assert_weights_close(a: dict, b: dict, rtol=1e-12, atol=1e-14):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


# ---------------------------------------------------------------------------------------
# truncated BPTT
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_truncate_of_at_least_the_sequence_length_is_full_bptt_exactly(optimizer):
    t_len = 5
    data = seq_data(8, t_len)
    ref = seq_net(t_len, delay2=True, optimizer=optimizer, dropout=0.3)
    ref.fit(data, 2, 0.1, shuffle=False, verbose=False)
    for k in (t_len, t_len + 3):
        net = seq_net(t_len, delay2=True, optimizer=optimizer, dropout=0.3)
        net.fit(data, 2, 0.1, shuffle=False, verbose=False, truncate=k)
        for name, v in ref.weights().items():
            np.testing.assert_array_equal(net.weights()[name], v, err_msg=name)


@pytest.mark.parametrize("cell,out", [("lstm", "all"), ("rnn", "last"), ("lstm", "static")])
def test_windows_carry_the_state_forward_values_equal_the_whole_sequence(cell, out):
    # Windows of 2 steps under a delay of 2 and 1 and an LSTM memory: every lag crosses over.
    t_len = 7
    x, y = seq_data(6, t_len, out)
    net = seq_net(t_len, out, cell=cell, delay2=True)
    whole = net.predict(x)
    for k in (1, 2, 3):
        np.testing.assert_array_equal(net.predict(x, truncate=k), whole)
        # The window losses add up to the whole loss (in another order: rounding only).
        assert net.evaluate((x, y), truncate=k)["loss"] == pytest.approx(
            net.evaluate((x, y))["loss"], rel=1e-13
        )


def test_windows_carry_inputs_read_through_delays():
    # y_t = x_{t-3} + W c (c a static input read 2 steps back: its initial state before t = 2).
    t_len = 7
    net = Network("inputs")
    x = InputLayer((2,), sequence_length=t_len, name="x", initial_state=[0.5, -1.0])
    c = InputLayer((3,), name="c", initial_state=[1.0, 2.0, 3.0])
    y = ActivationLayer((2,), name="y", output=True, loss="mse", loss_steps="all", bias=False)
    net.connect_identity(x, y, delay=3)
    net.connect_dense(c, y, delay=2, name="cy")
    net.compile(3, backend=REF, dtype=F64)
    fixed_weights(net)
    rng = np.random.default_rng(9)
    xv, cv = rng.normal(size=(3, t_len, 2)), rng.normal(size=(3, 3))
    w = net.weights()["cy.W"]
    want = np.concatenate([np.broadcast_to([0.5, -1.0], (3, 3, 2)), xv[:, :-3]], axis=1)
    want = want + np.where(
        np.arange(t_len)[None, :, None] < 2, np.array([1.0, 2.0, 3.0]) @ w, (cv @ w)[:, None]
    )
    np.testing.assert_allclose(net.predict([xv, cv]), want, rtol=1e-14)
    for k in (1, 2, 4):
        np.testing.assert_array_equal(net.predict([xv, cv], truncate=k), net.predict([xv, cv]))


def linear_rnn(
    t_len: int, a: float, b: float, out: str = "last", batch: int = 2, clip_grad=None
) -> Network:
    """h_t = a h_{t-1} + b x_t (one unit, no bias); y = h, mse at the last step or every step."""
    net = Network("lin")
    x = InputLayer((1,), sequence_length=t_len, name="x")
    h = ActivationLayer((1,), name="h", bias=False)
    y = ActivationLayer((1,), name="y", output=True, loss="mse", bias=False, loss_steps=out)
    net.connect_dense(x, h, return_sequence=True, name="in")
    net.connect_recurrent(h, h, name="rec", clip_grad=clip_grad)
    net.connect_identity(h, y, return_sequence=True)
    net.compile(batch, backend=REF, dtype=F64)
    net.set_weights({"in.W": [[b]], "rec.W": [[a]]})
    return net


def hand_rnn(x: np.ndarray, a: float, b: float) -> np.ndarray:
    h = np.zeros(x.shape[0])
    out = []
    for t in range(x.shape[1]):
        h = a * h + b * x[:, t]
        out.append(h)
    return np.stack(out, 1)  # (N, t_len)


def test_truncated_gradient_is_backpropagation_inside_the_last_window():
    t_len, k, a, b = 6, 2, 0.7, -1.3
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2, t_len, 1)), rng.normal(size=(2, 1))
    net = linear_rnn(t_len, a, b)
    h = hand_rnn(x[..., 0], a, b)
    e = 2 * (h[:, -1] - y[:, 0]) / 2  # d mean((h_T-1 - y)^2) / d h_T-1, batch of 2
    # The last window holds steps 4 and 5; h_3 enters it as a value.
    want_a = np.sum(e * (h[:, 4] + a * h[:, 3]))
    want_b = np.sum(e * (x[:, 5, 0] + a * x[:, 4, 0]))
    g = net.gradients((x, y), truncate=k)
    assert g["rec.W"][0, 0] == pytest.approx(want_a, rel=1e-13)
    assert g["in.W"][0, 0] == pytest.approx(want_b, rel=1e-13)
    # Full BPTT differs: it reaches back to step 0.
    full = sum(e * a ** (t_len - 1 - t) * (h[:, t - 1] if t else 0.0) for t in range(t_len)).sum()
    assert net.gradients((x, y))["rec.W"][0, 0] == pytest.approx(full, rel=1e-13)
    assert abs(full - want_a) > 1e-2


def test_truncated_gradient_does_not_depend_on_inputs_before_the_window():
    # Moving x_0 by d and x_1 by -a d leaves h_1, h_2, ... as they were (dyadic numbers: exactly),
    # so the carried state is the same.  The last window's gradient must not change; full BPTT's
    # does, through h_0.
    t_len, a, b, d = 6, 0.5, 1.0, 0.25
    rng = np.random.default_rng(4)
    x = rng.integers(-8, 8, size=(2, t_len, 1)) / 8.0
    y = rng.integers(-8, 8, size=(2, 1)) / 8.0
    moved = x.copy()
    moved[:, 0] += d
    moved[:, 1] -= a * d
    np.testing.assert_array_equal(
        hand_rnn(moved[..., 0], a, b)[:, 1:], hand_rnn(x[..., 0], a, b)[:, 1:]
    )
    net = linear_rnn(t_len, a, b)
    for k in (2, 3, 5):
        g0, g1 = net.gradients((x, y), truncate=k), net.gradients((moved, y), truncate=k)
        for name in g0:
            np.testing.assert_array_equal(g0[name], g1[name], err_msg=f"{name}, truncate={k}")
    f0, f1 = net.gradients((x, y)), net.gradients((moved, y))
    assert abs(f0["rec.W"][0, 0] - f1["rec.W"][0, 0]) > 1e-3


def test_last_step_loss_takes_one_step_on_the_last_window_only():
    # Only the window holding the last step has a loss: one optimizer step (Adam's counter
    # says 1), on the truncated gradient.
    t_len, k, lr = 6, 4, 0.05
    x, y = seq_data(4, t_len, "last")
    net = seq_net(t_len, "last")
    w0, g = net.weights(), net.gradients((x, y), truncate=k)
    net.fit((x, y), 1, lr, shuffle=False, verbose=False, truncate=k)
    assert_weights_close(net.weights(), {n: w0[n] - lr * g[n] for n in w0})
    adam = seq_net(t_len, "last", optimizer="adam")
    adam.fit((x, y), 1, lr, shuffle=False, verbose=False, truncate=k)
    steps = {
        n: v.get_value()
        for n, v in adam._compiled["optimizer"].state().items()
        if n.endswith(".step")
    }
    assert steps and all(s == 1 for s in steps.values())


def test_every_step_loss_takes_one_step_per_window_on_carried_state():
    # y_t = h_t at every step: window 1 (steps 0-2) steps the weights, then window 2 (steps
    # 3-5) starts from h_2 as computed before that step, and steps again from the new weights.
    t_len, k, lr, a, b = 6, 3, 0.1, 0.6, 0.9
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(2, t_len, 1)), rng.normal(size=(2, t_len, 1))
    net = linear_rnn(t_len, a, b, out="all")
    net.fit((x, y), 1, lr, shuffle=False, verbose=False, truncate=k)

    def window_grads(a, b, h_in, xs, ys):
        # loss = sum over the window's steps of mean_i (h - y)^2 / t_len
        hs, h = [], h_in
        for t in range(xs.shape[1]):
            h = a * h + b * xs[:, t]
            hs.append(h)
        ga = gb = 0.0
        carry = np.zeros_like(h_in)
        for t in reversed(range(xs.shape[1])):
            dh = 2 * (hs[t] - ys[:, t]) / (2 * t_len) + carry
            ga += np.sum(dh * (hs[t - 1] if t else h_in))
            gb += np.sum(dh * xs[:, t])
            carry = dh * a
        return ga, gb, hs[-1]

    ga, gb, h2 = window_grads(a, b, np.zeros(2), x[:, :3, 0], y[:, :3, 0])
    a1, b1 = a - lr * ga, b - lr * gb
    ga, gb, _ = window_grads(a1, b1, h2, x[:, 3:, 0], y[:, 3:, 0])
    assert net.weights()["rec.W"][0, 0] == pytest.approx(a1 - lr * ga, rel=1e-13)
    assert net.weights()["in.W"][0, 0] == pytest.approx(b1 - lr * gb, rel=1e-13)


# ---------------------------------------------------------------------------------------
# stateful calls
# ---------------------------------------------------------------------------------------


def test_stateful_calls_equal_one_long_sequence():
    t_len = 4
    x, _ = seq_data(4, 2 * t_len)
    long_net = seq_net(2 * t_len, cell="lstm", delay2=True)
    whole = long_net.predict(x)
    net = seq_net(t_len, cell="lstm", delay2=True, stateful=True)
    first, second = net.predict(x[:, :t_len]), net.predict(x[:, t_len:])
    np.testing.assert_array_equal(first, whole[:, :t_len])
    np.testing.assert_array_equal(second, whole[:, t_len:])
    net.reset_state()
    np.testing.assert_array_equal(
        net.predict(x[:, t_len:]), seq_net(t_len, cell="lstm", delay2=True).predict(x[:, t_len:])
    )


def test_stateful_training_on_chunks_is_truncated_bptt_on_the_whole():
    # Chunk c of a stateful run is window c of the long run; the chunk's loss averages its own
    # t_len steps, the window's weighs them 1 / 2T (half as much), hence 2 lr there.
    t_len, lr = 3, 0.2
    x, y = seq_data(4, 2 * t_len)
    long_net = seq_net(2 * t_len, cell="lstm")
    long_net.fit((x, y), 1, 2 * lr, shuffle=False, verbose=False, truncate=t_len)
    net = seq_net(t_len, cell="lstm", stateful=True)
    h1 = net.fit((x[:, :t_len], y[:, :t_len]), 1, lr, verbose=False)
    h2 = net.fit((x[:, t_len:], y[:, t_len:]), 1, lr, verbose=False)
    assert_weights_close(net.weights(), long_net.weights())
    assert h1["loss"][0] > 0 and h2["loss"][0] > 0


def test_stateful_batches_continue_row_by_row_within_a_call():
    # 8 rows in batches of 4: rows 4-7 continue rows 0-3 (batch-aligned).
    t_len = 3
    x, _ = seq_data(8, t_len)
    net = seq_net(t_len, stateful=True)
    out = net.predict(x)
    long_net = seq_net(2 * t_len)
    joined = np.concatenate([x[:4], x[4:]], axis=1)
    want = long_net.predict(joined)
    np.testing.assert_array_equal(out[:4], want[:, :t_len])
    np.testing.assert_array_equal(out[4:], want[:, t_len:])


def test_stateful_state_is_kept_per_batch_size():
    # Training leaves the state of its batch size (4); prediction on 3 sequences starts from the
    # initial state and keeps a state of its own; the training-size state is left alone.
    t_len = 3
    x, y = seq_data(4, 3 * t_len, seed=7)
    net = seq_net(t_len, stateful=True)
    fresh = seq_net(t_len)
    long_net = seq_net(3 * t_len)
    want4 = long_net.predict(x)
    want3 = seq_net(2 * t_len).predict(x[:3, t_len : 3 * t_len])
    net.fit((x[:, :t_len], y[:, :t_len]), 1, 0.0, verbose=False)  # lr 0: only the state moves on
    np.testing.assert_array_equal(net.predict(x[:, :t_len], stateful=False), want4[:, :t_len])
    np.testing.assert_array_equal(
        net.predict(x[:3, t_len : 2 * t_len]), fresh.predict(x[:3, t_len : 2 * t_len])
    )  # size 3: fresh
    np.testing.assert_array_equal(
        net.predict(x[:3, 2 * t_len :]), want3[:, t_len:]
    )  # size 3 continues its own
    np.testing.assert_array_equal(
        net.predict(x[:, t_len : 2 * t_len]), want4[:, t_len : 2 * t_len]
    )  # size 4 continues
    # stateful=False for one call: the initial state, and the carried one is untouched.
    np.testing.assert_array_equal(
        net.predict(x[:, 2 * t_len :], stateful=False), fresh.predict(x[:, 2 * t_len :])
    )
    np.testing.assert_array_equal(net.predict(x[:, 2 * t_len :]), want4[:, 2 * t_len :])


def test_reset_state_starts_again():
    t_len = 3
    x, _ = seq_data(4, t_len)
    net = seq_net(t_len, stateful=True)
    a = net.predict(x)
    assert not np.array_equal(net.predict(x), a)
    net.reset_state()
    np.testing.assert_array_equal(net.predict(x), a)


def test_stateful_fit_refuses_shuffling():
    net = seq_net(3, stateful=True)
    with pytest.raises(FlexcoreError, match="shuffle=False"):
        net.fit(seq_data(4, 3), 1, 0.1, shuffle=True, verbose=False)


def test_learnable_initial_state_learns_only_where_a_sequence_starts():
    t_len = 3
    x, y = seq_data(4, t_len)

    def make():
        net = Network("h0")
        xi = InputLayer((F,), sequence_length=t_len, name="x")
        h = ActivationLayer((H,), activation="tanh", name="h", initial_state="learnable")
        yo = ActivationLayer((2,), name="y", output=True, loss="mse", loss_steps="all")
        net.connect_dense(xi, h, return_sequence=True)
        net.connect_recurrent(h, h)
        net.connect_dense(h, yo, return_sequence=True)
        net.compile(4, backend=REF, dtype=F64, stateful=True)
        fixed_weights(net)
        return net

    net = make()
    net.fit((x, y), 1, 0.1, verbose=False)
    h0 = net.weights()["h.h0"]
    assert np.abs(h0).max() > 1e-4  # the first call starts from h0
    net.fit((x, y), 1, 0.1, verbose=False)
    np.testing.assert_array_equal(net.weights()["h.h0"], h0)  # the second continues: h0 unused


# ---------------------------------------------------------------------------------------
# per-step gradient clipping
# ---------------------------------------------------------------------------------------


def test_clip_gradient_op_values_both_regimes():
    x = fc.placeholder((5,), F64)
    c = fc.placeholder((5,), F64)
    y = fc.clip_gradient(x, 1.0)
    g = fc.grad(fc.sum(y * c), x)
    # The gradient of the clipped gradient: 1 where the cotangent was inside the limits.
    gg = fc.grad(fc.sum(g * g), c)
    fn = fc.function([x, c], [y, g, gg], backend=REF)
    xv = np.array([0.3, -2.0, 5.0, 0.0, 1.5])
    cv = np.array([-3.0, -0.5, 0.2, 2.0, 1.0])
    out, grad, ggrad = fn(xv, cv)
    np.testing.assert_array_equal(out, xv)
    np.testing.assert_array_equal(grad, [-1.0, -0.5, 0.2, 1.0, 1.0])
    np.testing.assert_array_equal(ggrad, [0.0, -1.0, 0.4, 0.0, 2.0])
    with pytest.raises(fc.ShapeError, match="limit"):
        fc.clip_gradient(x, 0.0)


def test_recurrent_clip_grad_clips_the_gradient_into_the_previous_step():
    t_len, a, b, c = 4, 0.9, 1.0, 0.5
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(2, t_len, 1)) * 2, rng.normal(size=(2, t_len, 1))
    plain, clipped = linear_rnn(t_len, a, b, "all"), linear_rnn(t_len, a, b, "all", clip_grad=c)
    np.testing.assert_array_equal(clipped.predict(x), plain.predict(x))  # forward unchanged
    h = hand_rnn(x[..., 0], a, b)
    # dL/dh_t = direct term + clip(a * dL/dh_{t+1}): the recurrent connection clips what flows back.
    gl = 2 * (h - y[..., 0]) / (2 * t_len)
    dh, carry, flows = np.zeros_like(h), np.zeros(2), []
    for t in reversed(range(t_len)):
        dh[:, t] = gl[:, t] + carry
        flows.append(dh[:, t] * a)
        carry = np.clip(flows[-1], -c, c)
    flows = np.abs(flows[:-1])  # what reaches steps 0..t_len-2 through the connection
    assert np.any(flows > c) and np.any(flows < c)  # both regimes
    want_a = np.sum(dh[:, 1:] * h[:, :-1])
    want_b = np.sum(dh * x[..., 0])
    g = clipped.gradients((x, y))
    assert g["rec.W"][0, 0] == pytest.approx(want_a, rel=1e-13)
    assert g["in.W"][0, 0] == pytest.approx(want_b, rel=1e-13)
    assert abs(plain.gradients((x, y))["in.W"][0, 0] - want_b) > 1e-3


def test_clip_grad_is_saved_and_checked(tmp_path):
    net = linear_rnn(3, 0.5, 1.0, clip_grad=0.25)
    loaded = Network.load(net.save(str(tmp_path / "n"))[0])
    assert [c.clip_grad for c in loaded.connections] == [c.clip_grad for c in net.connections]
    with pytest.raises(FlexcoreError, match="clip_grad"):
        Network().connect_recurrent(
            InputLayer(2, sequence_length=2), ActivationLayer(2), clip_grad=-1.0
        )


# ---------------------------------------------------------------------------------------
# variable lengths
# ---------------------------------------------------------------------------------------

LENGTHS = np.array([6, 3, 1, 4])


def padded_data(out: str, t_len: int = 6, seed: int = 2):
    x, y = seq_data(len(LENGTHS), t_len, out, seed)
    pad = np.arange(t_len)[None, :] >= LENGTHS[:, None]
    x[pad] = np.nan  # whatever the padding holds must not matter
    if out == "all":
        y[pad] = np.nan
    return x, y


# A static output under truncation: its gradient reaches the last window only, so that case is
# test_static_output_under_lengths_and_truncation_reads_the_last_valid_step below.
@pytest.mark.parametrize(
    "cell,out,truncate",
    [
        ("lstm", "all", None),
        ("rnn", "last", None),
        ("lstm", "static", None),
        ("lstm", "all", 2),
        ("rnn", "last", 2),
    ],
)
def test_padding_changes_nothing(cell, out, truncate):
    """A padded batch with lengths = each sequence run alone: outputs, loss and gradients
    (the batch's are the mean of the sequences')."""
    t_len = 6
    x, y = padded_data(out, t_len)
    net = seq_net(t_len, out, cell=cell, delay2=True)
    pred = net.predict(x, lengths=LENGTHS, truncate=truncate)
    loss = net.evaluate((x, y), lengths=LENGTHS, truncate=truncate)["loss"]
    grads = net.gradients((x, y, LENGTHS), truncate=truncate)
    losses, gsum = [], None
    for i, n_i in enumerate(LENGTHS):
        alone = seq_net(int(n_i), out, cell=cell, delay2=True, batch=1)
        xi = x[i : i + 1, :n_i]
        yi = y[i : i + 1, :n_i] if out == "all" else y[i : i + 1]
        p = alone.predict(xi, truncate=truncate)
        if out == "all":
            np.testing.assert_allclose(pred[i, :n_i], p[0], rtol=1e-13, atol=1e-15)
            np.testing.assert_array_equal(pred[i, n_i:], 0.0)  # masked steps read 0
        else:
            np.testing.assert_allclose(pred[i], p[0], rtol=1e-13, atol=1e-15)
        losses.append(alone.evaluate((xi, yi), truncate=truncate)["loss"])
        g = alone.gradients((xi, yi), truncate=truncate)
        gsum = g if gsum is None else {k: gsum[k] + g[k] for k in g}
    assert loss == pytest.approx(np.mean(losses), rel=1e-12)
    assert_weights_close(
        grads, {k: v / len(LENGTHS) for k, v in gsum.items()}, rtol=1e-11, atol=1e-14
    )


def test_static_output_under_lengths_and_truncation_reads_the_last_valid_step():
    t_len = 6
    x, y = padded_data("static", t_len)
    net = seq_net(t_len, "static", cell="lstm", delay2=True)
    want = net.predict(x, lengths=LENGTHS)
    np.testing.assert_array_equal(net.predict(x, lengths=LENGTHS, truncate=2), want)
    assert net.evaluate((x, y, LENGTHS), truncate=2)["loss"] == pytest.approx(
        net.evaluate((x, y, LENGTHS))["loss"], rel=1e-13
    )


def test_padding_changes_no_training_step():
    t_len, lr = 6, 0.3
    x, y = padded_data("all", t_len)
    net = seq_net(t_len, cell="lstm")
    w0, g = net.weights(), net.gradients((x, y, LENGTHS))
    net.fit((x, y), 1, lr, verbose=False, lengths=LENGTHS)
    assert_weights_close(net.weights(), {k: w0[k] - lr * g[k] for k in w0})


def test_a_finished_sequence_keeps_its_state_for_the_next_call():
    # Time stands still at masked steps: row 1 stops after 2 steps, and the next stateful call
    # continues it as if its steps came right after those 2 (also through the delay of 2).
    t_len = 4
    rng = np.random.default_rng(8)
    x1, x2 = rng.normal(size=(4, t_len, F)), rng.normal(size=(4, t_len, F))
    lengths = np.array([4, 2, 4, 3])
    net = seq_net(t_len, cell="lstm", delay2=True, stateful=True)
    net.predict(x1, lengths=lengths)
    second = net.predict(x2)
    long_net = seq_net(2 * t_len, cell="lstm", delay2=True, batch=1)
    for i, n_i in enumerate(lengths):
        joined = np.concatenate([x1[i : i + 1, :n_i], x2[i : i + 1]], axis=1)
        joined = np.concatenate([joined, np.zeros((1, 2 * t_len - joined.shape[1], F))], axis=1)
        want = long_net.predict(joined, lengths=[n_i + t_len])
        np.testing.assert_allclose(second[i], want[0, n_i : n_i + t_len], rtol=1e-13, atol=1e-15)


def test_accuracy_counts_valid_steps_only():
    t_len = 4
    net = Network("acc")
    x = InputLayer((3,), sequence_length=t_len, name="x")
    y = ActivationLayer(
        (3,), activation="softmax", name="y", output=True, loss="nll", loss_steps="all", bias=False
    )
    net.connect_identity(x, y, return_sequence=True)
    net.compile(2, backend=REF, dtype=F64)
    labels = np.array([[0, 1, 2, 0], [2, 2, 1, 1]])
    xv = np.eye(3)[labels] * 5.0
    wrong = labels.copy()
    wrong[0, 3] = 1  # a wrong label, but in the padding of row 0
    wrong[1, 1] = 0  # a wrong label at a valid step of row 1 (1 of 3)
    acc = net.evaluate((xv, wrong, [3, 3]))["accuracy"]
    assert acc == pytest.approx((1.0 + 2.0 / 3.0) / 2)


def test_lengths_are_checked():
    net = seq_net(4)
    x, y = seq_data(4, 4)
    with pytest.raises(FlexcoreError, match=r"lengths must be in \[1, 4\]"):
        net.evaluate((x, y), lengths=[4, 0, 2, 2])
    with pytest.raises(FlexcoreError, match="one per sequence"):
        net.predict(x, lengths=[4, 2])
    with pytest.raises(FlexcoreError, match="given twice"):
        net.evaluate((x, y, [1, 2, 3, 4]), lengths=[1, 2, 3, 4])
    with pytest.raises(FlexcoreError, match="truncate must be a positive int"):
        net.fit((x, y), 1, 0.1, verbose=False, truncate=0)


def test_windows_refuse_a_sequence_that_reads_the_future():
    # s exists once, after the last step; g reads it at every step: no window can.
    net = Network("future")
    x = InputLayer((2,), sequence_length=3, name="x")
    h = ActivationLayer((2,), name="h")
    s = ActivationLayer((2,), name="s")
    g = ActivationLayer((2,), name="g", output=True, loss="mse", loss_steps="all")
    net.connect_dense(x, h, return_sequence=True)
    net.connect_dense(h, s)
    net.connect_dense(x, g, return_sequence=True)
    net.connect_dense(s, g, delay=1)
    net.compile(2, backend=REF, dtype=F64)
    net.predict(np.zeros((2, 3, 2)))  # the whole sequence at once is fine, call by call too
    net.predict(np.zeros((2, 3, 2)), stateful=True)
    with pytest.raises(FlexcoreError, match="'g' reads 's'"):
        net.predict(np.zeros((2, 3, 2)), truncate=1)


def test_single_step_sequence_outputs_keep_their_time_axis():
    # T = 1 with loss_steps='all': targets (N, 1, ...), and so are the outputs; the loss pairs
    # each output with its own target (once an (N, 2) output met (N, 1, 2) targets and the mse
    # broadcast to N x N pairs).
    net = seq_net(1)
    x, y = seq_data(4, 1)
    pred = net.predict(x)
    assert pred.shape == (4, 1, 2)
    want = np.mean((pred - y) ** 2)
    assert net.evaluate((x, y))["loss"] == pytest.approx(want, rel=1e-13)
    h = net.fit((x, y), 1, 0.1, verbose=False)
    assert h["loss"][0] == pytest.approx(want, rel=1e-13)


# ---------------------------------------------------------------------------------------
# variational dropout
# ---------------------------------------------------------------------------------------


def dropout_net(
    t_len: int, p: float, variational: bool, recurrent: bool = False, n: int = 64, f: int = 32
):
    """y_t = x_t (or x_{t-1}) through an identity connection with dropout: with x = 1, y is
    the mask applied at each step."""
    net = Network("drop")
    x = InputLayer((f,), sequence_length=t_len, name="x", initial_state=np.ones(f))
    y = ActivationLayer((f,), name="y", output=True, loss="mse", loss_steps="all", bias=False)
    kw = dict(dropout=p, variational=variational)
    if recurrent:
        net.connect_recurrent(x, y, kind="identity", **kw)
    else:
        net.connect_identity(x, y, return_sequence=True, **kw)
    net.compile(n, backend=REF, dtype=F64)
    return net


@pytest.mark.parametrize("recurrent", [False, True])
def test_variational_dropout_reuses_one_mask_per_sequence(recurrent):
    t_len, p, n, f = 5, 0.4, 64, 32
    net = dropout_net(t_len, p, True, recurrent, n, f)
    ones = np.ones((n, t_len, f))
    out = net.predict(ones, training=True, seed=3)
    for t in range(1, t_len):
        np.testing.assert_array_equal(out[:, t], out[:, 0])  # the same mask at every step
    assert set(np.unique(out)) == {0.0, 1.0 / (1.0 - p)}
    assert len({row.tobytes() for row in out[:, 0]}) == n  # each sequence has its own
    kept = np.mean(out[:, 0] != 0)
    assert abs(kept - (1 - p)) < 5 * np.sqrt(p * (1 - p) / (n * f))
    # Windows of one call share the mask; another seed draws another.
    np.testing.assert_array_equal(net.predict(ones, training=True, seed=3, truncate=2), out)
    assert not np.array_equal(net.predict(ones, training=True, seed=4), out)
    # Inference applies no dropout.
    np.testing.assert_array_equal(net.predict(ones), ones)
    assert net.evaluate((ones, ones))["loss"] == 0.0


@pytest.mark.parametrize("truncate", [None, 2])
def test_plain_dropout_draws_a_mask_per_step(truncate):
    # Also across windows: window 2's first step does not repeat window 1's.
    t_len, p = 4, 0.4
    out = dropout_net(t_len, p, False).predict(
        np.ones((64, t_len, 32)), training=True, seed=3, truncate=truncate
    )
    for t in range(t_len):
        for u in range(t):
            agree = np.mean((out[:, t] != 0) == (out[:, u] != 0))
            assert 0.4 < agree < 0.65  # independent masks agree on p^2 + (1-p)^2 = 52% of entries


def test_training_applies_one_variational_mask_at_every_step():
    # y_t = (m * x_t) W with x = 1, W = 0 and targets -1: the mse over all steps has
    # dL/dW = mean over steps of 2 * mean_i m_i (x = 1).  One mask per sequence for the whole
    # call: that is 2 * mean_i m_i for the mask drawn from the step's seed; a fresh mask per
    # step would average t_len masks instead.
    t_len, p, n, f, lr = 3, 0.5, 8, 4, 0.5
    net = Network("vd")
    x = InputLayer((f,), sequence_length=t_len, name="x")
    y = ActivationLayer((1,), name="y", output=True, loss="mse", loss_steps="all", bias=False)
    net.connect_dense(x, y, return_sequence=True, dropout=p, variational=True, name="c")
    net.compile(n, backend=REF, dtype=F64)
    net.set_weights({"c.W": np.zeros((f, 1))})
    net.fit((np.ones((n, t_len, f)), -np.ones((n, t_len, 1))), 1, lr, verbose=False)
    # The first step's seed, and the connection's variational salt (its index 0 times 1_000_003).
    seed = net.seed * 1_000_003 + 1
    m = fc.function([], [fc.dropout_mask(seed, (n, f), p, salt=0, dtype=F64)], backend=REF)()[0]
    assert 0 < np.mean(m != 0) < 1
    np.testing.assert_allclose(net.weights()["c.W"][:, 0], -lr * 2 * m.mean(axis=0), rtol=1e-14)
