"""Compiled functions: outputs, shared variables and updates, input checking, peak memory,
traced functions, and a small training loop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import flexcore as fc

REF = "reference"
RNG = np.random.default_rng(1)


def rand(*shape, dtype=np.float32):
    return RNG.normal(size=shape).astype(dtype)


# ---------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------


def test_single_output_is_an_array_and_a_list_gives_a_list():
    x = fc.placeholder((3,), name="x")
    xv = rand(3)
    single = fc.function([x], fc.exp(x), backend=REF)(xv)
    assert isinstance(single, np.ndarray)
    np.testing.assert_allclose(single, np.exp(xv), rtol=1e-6)

    one = fc.function([x], [fc.exp(x)], backend=REF)(xv)
    assert isinstance(one, list) and len(one) == 1
    np.testing.assert_allclose(one[0], np.exp(xv), rtol=1e-6)

    a, b = fc.function([x], [fc.exp(x), fc.sum(x)], backend=REF)(xv)
    np.testing.assert_allclose(a, np.exp(xv), rtol=1e-6)
    np.testing.assert_allclose(b, xv.sum(), rtol=1e-6)


def test_outputs_do_not_alias_shared_storage():
    # Writing into a returned array must not change the parameter behind it.
    w = fc.shared(np.ones((2, 3), np.float32), name="w")
    for out in (w, fc.reshape(w, (3, 2)), fc.permute(w, (1, 0))):
        got = fc.function([], out, backend=REF)()
        got[...] = 7.0
        np.testing.assert_array_equal(w.get_value(), np.ones((2, 3), np.float32))


def test_outputs_are_writeable():
    # Folded constants and broadcast views are read-only inside the plan; the caller still
    # gets arrays it may modify in place.
    x = fc.placeholder((3,), name="x")
    other = fc.placeholder((2,), name="other")
    outs = fc.function(
        [x, other],
        [
            fc.broadcast_to(x, (2, 3)),
            fc.const(np.ones(2, np.float32)),
            *fc.grad(fc.sum(x), [x, other], "zero"),
        ],
        backend=REF,
    )(np.ones(3), np.ones(2))
    for o in outs:
        o *= 2.0
    np.testing.assert_array_equal(outs[2], [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(outs[3], [0.0, 0.0])


# ---------------------------------------------------------------------------------------
# shared variables and updates
# ---------------------------------------------------------------------------------------


def test_shared_variables_persist_between_calls():
    count = fc.shared(np.float32(0.0), name="count")
    tick = fc.function([], count, updates=[(count, count + 1.0)], backend=REF)
    # Each call returns the value from before its own update.
    assert [float(tick()) for _ in range(3)] == [0.0, 1.0, 2.0]
    assert float(count.get_value()) == 3.0
    count.set_value(np.float32(10.0))
    assert float(tick()) == 10.0 and float(count.get_value()) == 11.0


def test_updates_apply_in_the_same_call_and_outputs_see_old_values():
    x = fc.placeholder((3,), name="x")
    acc = fc.shared(np.zeros(3, np.float32), name="acc")
    f = fc.function([x], [acc, acc + x], updates={acc: acc + x}, backend=REF)
    xv = rand(3)
    old, new = f(xv)
    np.testing.assert_array_equal(old, np.zeros(3, np.float32))
    np.testing.assert_allclose(new, xv, rtol=1e-6)
    np.testing.assert_allclose(acc.get_value(), xv, rtol=1e-6)  # applied by this call already


def test_updates_are_simultaneous():
    a = fc.shared(np.array([1.0, 2.0], np.float32), name="a")
    b = fc.shared(np.array([3.0, 4.0], np.float32), name="b")
    swap = fc.function([], [], updates=[(a, b), (b, a)], backend=REF)
    assert swap() == []
    np.testing.assert_array_equal(a.get_value(), [3.0, 4.0])
    np.testing.assert_array_equal(b.get_value(), [1.0, 2.0])
    # Each update reads the other's old value, not the one written in this call.
    mix = fc.function([], [], updates=[(a, a + b), (b, a - b)], backend=REF)
    mix()
    np.testing.assert_array_equal(a.get_value(), [4.0, 6.0])
    np.testing.assert_array_equal(b.get_value(), [2.0, 2.0])


def test_update_target_must_be_shared():
    x = fc.placeholder((2,), name="x")
    w = fc.shared(np.zeros(2, np.float32), name="w")
    with pytest.raises(fc.FlexcoreError, match="must be a shared variable"):
        fc.function([x], x, updates=[(x, x + 1.0)], backend=REF)
    with pytest.raises(fc.FlexcoreError, match="must be a shared variable"):
        fc.function([x], x, updates=[(w * 1.0, x)], backend=REF)


def test_updating_a_variable_twice_is_an_error():
    w = fc.shared(np.zeros(2, np.float32), name="w")
    with pytest.raises(fc.FlexcoreError, match="'w' is updated twice"):
        fc.function([], [], updates=[(w, w + 1.0), (w, w * 2.0)], backend=REF)


def test_update_must_keep_shape_and_dtype():
    w = fc.shared(np.zeros(2, np.float32), name="w")
    with pytest.raises(fc.ShapeError, match=r"'w'.*shape"):
        fc.function([], [], updates=[(w, fc.concat([w, w]))], backend=REF)
    with pytest.raises(fc.ShapeError, match=r"'w'.*float64"):
        fc.function([], [], updates=[(w, fc.cast(w, np.float64))], backend=REF)


# ---------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------


def test_wrong_input_shape_names_the_input():
    x = fc.placeholder((4, 3), name="x")
    f = fc.function([x], fc.sum(x), backend=REF)
    with pytest.raises(fc.ShapeError, match=r"'x' needs shape \(4, 3\), got \(4, 2\)"):
        f(np.ones((4, 2), np.float32))


def test_wrong_input_dtype_names_the_input():
    n = fc.placeholder((4,), np.int64, name="labels")
    f = fc.function([n], fc.sum(n), backend=REF)
    with pytest.raises(fc.ShapeError, match="'labels' needs dtype int64, got float64"):
        f(np.ones(4))


def test_an_unnamed_input_is_named_by_position():
    a = fc.placeholder((2,))
    b = fc.placeholder((2,))
    f = fc.function([a, b], a + b, backend=REF)
    with pytest.raises(fc.ShapeError, match=r"input #1 needs shape \(2,\)"):
        f(np.ones(2, np.float32), np.ones(3, np.float32))


def test_wrong_number_of_inputs():
    x = fc.placeholder((2,), name="x")
    f = fc.function([x], x * 2.0, backend=REF)
    with pytest.raises(fc.FlexcoreError, match="expected 1 input"):
        f()


def test_missing_placeholder_is_named():
    x = fc.placeholder((2,), name="x")
    y = fc.placeholder((2,), name="forgotten")
    with pytest.raises(fc.FlexcoreError, match="'forgotten'"):
        fc.function([x], x + y, backend=REF)


def test_an_input_the_outputs_do_not_read_is_accepted():
    x = fc.placeholder((2,), name="x")
    unused = fc.placeholder((5,), name="unused")
    f = fc.function([x, unused], x * 2.0, backend=REF)
    np.testing.assert_allclose(f(np.ones(2), np.zeros(5)), [2.0, 2.0])


def test_coerce_accepts_int32_labels_for_an_integer_input():
    labels = fc.placeholder((4,), np.int32, name="labels")  # int32 is stored as int64
    assert labels.dtype == np.int64
    f = fc.function([labels], fc.one_hot(labels, 5), backend=REF)
    for arr in (np.array([0, 4, 2, 1], np.int32), np.array([0, 4, 2, 1], np.int64), [0, 4, 2, 1]):
        np.testing.assert_array_equal(f(arr), np.eye(5, dtype=np.float32)[[0, 4, 2, 1]])


def test_coerce_casts_float64_to_float32():
    x = fc.placeholder((3,), np.float32, name="x")
    f = fc.function([x], x * 3.0, backend=REF)
    out = f(np.array([1.0, 2.0, 1.0 / 3.0], np.float64))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [3.0, 6.0, 1.0], rtol=1e-6)
    # Integers are fine for a float input too.
    np.testing.assert_allclose(f(np.array([1, 2, 3])), [3.0, 6.0, 9.0])


def test_coerce_rejects_floats_for_an_integer_input():
    n = fc.placeholder((3,), np.int64, name="n")
    f = fc.function([n], n * 2, backend=REF)
    with pytest.raises(fc.ShapeError, match="'n' needs dtype int64"):
        f(np.array([1.0, 2.0, 3.0], np.float32))
    np.testing.assert_array_equal(f(np.array([1, 2, 3])), [2, 4, 6])


def test_inputs_must_be_placeholders():
    w = fc.shared(np.zeros(2, np.float32), name="w")
    with pytest.raises(fc.FlexcoreError, match="input #0 must be a placeholder"):
        fc.function([w], w * 2.0, backend=REF)


# ---------------------------------------------------------------------------------------
# peak memory
# ---------------------------------------------------------------------------------------


def test_peak_bytes_of_a_tiny_chain_by_hand():
    x = fc.placeholder((100,), name="x")  # 400 bytes, resident for the whole call
    f = fc.function([x], fc.sum(fc.log(fc.exp(x))), backend=REF)
    assert [st.op for st in f.plan.steps] == ["exp", "log", "sum"]
    # exp: x + exp = 800; log: x + exp + log = 1200, then exp dies; sum: x + log + 4 = 804.
    assert f.peak_bytes == 1200


def test_peak_bytes_is_positive_and_grows_with_the_graph():
    x = fc.placeholder((32, 64), name="x")
    small = fc.function([x], fc.sum(fc.tanh(x)), backend=REF)
    w = fc.shared(rand(64, 256), name="w")
    big = fc.function([x], fc.sum(fc.tanh(x @ w) @ fc.permute(w, (1, 0))), backend=REF)
    assert small.peak_bytes > 0
    # At least the input, the weights and the two (32, 256) intermediates are alive at once.
    assert big.peak_bytes >= x.nbytes + w.nbytes + 2 * 32 * 256 * 4
    assert big.peak_bytes > small.peak_bytes


# ---------------------------------------------------------------------------------------
# traced functions
# ---------------------------------------------------------------------------------------


def test_trace_caches_one_plan_per_input_shapes():
    builds = []

    def builder(x, y):
        builds.append(x.shape)
        return [fc.sum(x * 2.0, axis=1), fc.sum(fc.one_hot(y, 3), axis=0)]

    f = fc.trace(builder, [np.float32, np.int64], backend=REF)
    for n in (8, 8, 5):
        xv = rand(n, 4)
        yv = RNG.integers(0, 3, size=n)
        s, counts = f(xv, yv)
        np.testing.assert_allclose(s, 2 * xv.sum(axis=1), rtol=1e-5)
        np.testing.assert_array_equal(counts, np.bincount(yv, minlength=3))
    assert len(f.cache) == 2
    assert builds == [(8, 4), (5, 4)]


def test_trace_checks_the_number_of_inputs():
    f = fc.trace(lambda x, y: x + y, [np.float32, np.float32], backend=REF)
    with pytest.raises(fc.FlexcoreError, match="expected 2 input"):
        f(np.ones(3))
    assert not f.cache


def test_trace_with_updates():
    total = fc.shared(np.float32(0.0), name="total")

    def builder(x):
        s = fc.sum(x)
        return s, [(total, total + s)]

    f = fc.trace(builder, [np.float32], backend=REF)
    f(np.ones((4, 2)))
    f(np.ones((3, 2)))
    assert float(total.get_value()) == 14.0 and len(f.cache) == 2


# ---------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------


def test_sgd_logistic_regression_converges():
    rng = np.random.default_rng(3)
    n, d = 64, 2
    xs = rng.normal(size=(n, d)).astype(np.float32)
    true_w = np.array([2.0, -3.0], np.float32)
    margin = xs @ true_w
    xs += (0.5 * np.sign(margin))[:, None] * true_w / np.linalg.norm(true_w)  # a clear gap
    ys = (xs @ true_w > 0).astype(np.float32)

    x = fc.placeholder((n, d), name="x")
    y = fc.placeholder((n,), name="y")
    w = fc.shared(np.zeros(d, np.float32), name="w")
    b = fc.shared(np.float32(0.0), name="b")
    logits = fc.sum(x * w, axis=1) + b
    loss = fc.bce_with_logits(logits, y)
    gw, gb = fc.grad(loss, [w, b])
    lr = 0.5
    step = fc.function([x, y], loss, updates=[(w, w - lr * gw), (b, b - lr * gb)], backend=REF)
    predict = fc.function([x], fc.gt(logits, 0.0), backend=REF)

    losses = [float(step(xs, ys)) for _ in range(200)]
    assert losses[0] == pytest.approx(np.log(2.0), rel=1e-6)  # zero weights: p = 1/2
    assert losses[-1] < 0.05 * losses[0]
    assert all(b2 <= a2 + 1e-7 for a2, b2 in itertools.pairwise(losses))
    assert (predict(xs) == (ys > 0)).mean() == 1.0
