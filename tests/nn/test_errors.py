"""The errors users meet: each raised before any computation, each naming the user's layers."""

from __future__ import annotations

import re

import numpy as np
import pytest

from flexcore import (
    ActivationLayer,
    FeatureMapLayer,
    FlexcoreError,
    InputLayer,
    MemoryLayer,
    Network,
    ShapeError,
)
from flexcore.function import Function
from flexcore.ir.api import ACTIVATIONS
from flexcore.nn.layers import LOSSES

REF = "reference"


@pytest.fixture
def no_computation(monkeypatch):
    """Fails the test if anything is compiled or run: the error must come first."""

    def refuse(*a, **k):
        raise AssertionError("something was compiled before the error was raised")

    monkeypatch.setattr(Function, "__init__", refuse)


# ---------------------------------------------------------------------------------------
# wiring
# ---------------------------------------------------------------------------------------


def test_cycle_of_delay_zero_connections_names_the_layers_on_it(no_computation):
    net = Network()
    x = InputLayer((2,), name="inp")
    a, b, c = (ActivationLayer((2,), name=n) for n in ("alpha", "beta", "gamma"))
    off = ActivationLayer((2,), name="offcycle")
    y = ActivationLayer((2,), name="out", output=True, loss="mse")
    net.connect_dense(x, a)
    net.connect_dense(a, b)
    net.connect_dense(b, c)
    net.connect_dense(c, a)  # closes alpha -> beta -> gamma -> alpha within one step
    net.connect_dense(x, off)
    net.connect_dense(off, y)
    net.connect_dense(c, y)
    with pytest.raises(FlexcoreError, match="cycle") as e:
        net.compile(4, backend=REF)
    msg = str(e.value)
    assert re.search(r"'alpha' -> 'beta' -> 'gamma' -> 'alpha'", msg), msg
    assert "'offcycle'" not in msg and "'inp'" not in msg and "'out'" not in msg
    assert "delay" in msg  # says how to fix it


def test_a_delay_closes_the_same_loop():
    net = Network()
    x = InputLayer((2,), sequence_length=3, name="inp")
    a, b = ActivationLayer((2,), name="alpha"), ActivationLayer((2,), name="beta")
    y = ActivationLayer((2,), name="out", output=True, loss="mse")
    net.connect_dense(x, a, return_sequence=True)
    net.connect_dense(a, b, return_sequence=True)
    net.connect_recurrent(b, a)
    net.connect_dense(b, y)
    net.compile(4, backend=REF)
    assert net.predict(np.zeros((4, 3, 2))).shape == (4, 2)


def test_self_loop_without_delay(no_computation):
    net = Network()
    x = InputLayer((2,), name="inp")
    a = ActivationLayer((2,), name="selfish")
    y = ActivationLayer((2,), name="out", output=True, loss="mse")
    net.connect_dense(x, a)
    net.connect_dense(a, a)
    net.connect_dense(a, y)
    with pytest.raises(FlexcoreError, match=r"cycle: 'selfish' -> 'selfish'"):
        net.compile(4)


def test_static_layer_fed_back_into_the_sequence_it_reads(no_computation):
    net = Network()
    x = InputLayer((2,), sequence_length=3, name="inp")
    h = ActivationLayer((2,), name="steps")
    s = ActivationLayer((2,), name="summary")
    y = ActivationLayer((2,), name="out", output=True, loss="mse")
    net.connect_dense(x, h, return_sequence=True)
    net.connect_dense(h, s)  # summary reads the last step of steps ...
    net.connect_recurrent(s, h)  # ... and steps reads summary at t - 1
    net.connect_dense(s, y)
    with pytest.raises(
        FlexcoreError, match=r"'steps' -> 'summary' -> 'steps'.*'summary' exists only once"
    ):
        net.compile(4)


def test_layer_that_reaches_no_output(no_computation):
    net = Network()
    x = InputLayer((2,), name="inp")
    h = ActivationLayer((2,), name="hidden")
    dead = ActivationLayer((2,), name="deadend")
    y = ActivationLayer((2,), name="out", output=True, loss="mse")
    net.connect_dense(x, h)
    net.connect_dense(h, dead)
    net.connect_dense(h, y)
    with pytest.raises(FlexcoreError, match=r"'deadend' reach no output") as e:
        net.compile(4)
    assert "'hidden'" not in str(e.value)


def test_no_output_layer(no_computation):
    net = Network()
    x = InputLayer((2,), name="inp")
    h = ActivationLayer((2,), name="last_one")
    net.connect_dense(x, h)
    with pytest.raises(FlexcoreError, match="no output layer") as e:
        net.compile(4)
    msg = str(e.value)
    assert "output=True" in msg and "'last_one'" in msg


def test_layer_without_incoming_connection(no_computation):
    net = Network()
    x = InputLayer((2,), name="inp")
    orphan = ActivationLayer((2,), name="orphan")
    y = ActivationLayer((2,), name="out", output=True, loss="mse")
    net.connect_dense(x, y)
    net.connect_dense(orphan, y)
    with pytest.raises(FlexcoreError, match="'orphan' has no incoming connection"):
        net.compile(4)


def test_sequence_layer_reading_a_sequence_without_return_sequence(no_computation):
    net = Network()
    x = InputLayer((2,), sequence_length=3, name="inp")
    h = ActivationLayer((2,), name="rec")
    y = ActivationLayer((2,), name="out", output=True, loss="mse")
    net.connect_dense(x, h)  # forgot return_sequence=True
    net.connect_recurrent(h, h)
    net.connect_dense(h, y)
    with pytest.raises(FlexcoreError, match="return_sequence=True") as e:
        net.compile(4)
    assert "'rec'" in str(e.value) and "'inp'" in str(e.value)


def test_recurrence_without_a_sequence(no_computation):
    net = Network()
    x = InputLayer((2,), name="inp")
    h = ActivationLayer((2,), name="rec")
    y = ActivationLayer((2,), name="out", output=True, loss="mse")
    net.connect_dense(x, h)
    net.connect_recurrent(h, h)
    net.connect_dense(h, y)
    with pytest.raises(FlexcoreError, match="sequence_length") as e:
        net.compile(4)
    assert "rec->rec@t-1" in str(e.value)


def test_memory_layer_without_candidate(no_computation):
    net = Network()
    x = InputLayer((2,), sequence_length=3, name="inp")
    c = MemoryLayer((2,), name="mem")
    y = ActivationLayer((2,), name="out", output=True, loss="mse")
    net.connect_gate(x, c, "forget")
    net.connect_dense(c, y)
    with pytest.raises(FlexcoreError, match=r"memory layer 'mem' needs .*candidate"):
        net.compile(4)
    with pytest.raises(FlexcoreError, match=r"role= one of forget, input, candidate"):
        net.connect_identity(x, c, return_sequence=True)


# ---------------------------------------------------------------------------------------
# shapes at connect time
# ---------------------------------------------------------------------------------------


def test_conv_output_shape_does_not_fit_the_target():
    net = Network()
    src = FeatureMapLayer((2, 8), name="maps_in")
    dst = FeatureMapLayer((3, 7), name="maps_out")
    with pytest.raises(ShapeError) as e:
        net.connect_conv(src, dst, kernel_size=3)
    msg = str(e.value)
    for part in ("'maps_in", "maps_out", "(2, 8)", "(3, 7)", "(3, 8)"):
        assert part in msg, (part, msg)
    assert net.connections == []  # nothing half-registered
    # stride 2 halves the length: a (3, 4) target fits
    net.connect_conv(src, FeatureMapLayer((3, 4), name="strided"), kernel_size=3, stride=2)


def test_conv_between_ranks_and_groups():
    src = FeatureMapLayer((2, 8), name="maps_in")
    with pytest.raises(ShapeError, match=r"maps_in.*vec.*rank 2"):
        Network().connect_conv(src, ActivationLayer((16,), name="vec"))
    with pytest.raises(ShapeError, match="feature map"):
        Network().connect_conv(ActivationLayer((16,), name="vec"), src)
    with pytest.raises(ShapeError, match="groups=3 must divide 2 input"):
        Network().connect_conv(src, FeatureMapLayer((3, 8), name="m3"), groups=3)


def test_identity_size_mismatch():
    with pytest.raises(ShapeError) as e:
        Network().connect_identity(
            ActivationLayer((4,), name="four"), ActivationLayer((5,), name="five")
        )
    msg = str(e.value)
    assert all(p in msg for p in ("four (4,)", "five (5,)", "equal sizes")), msg


def test_pool_shape_mismatch():
    with pytest.raises(ShapeError) as e:
        Network().connect_pool(
            FeatureMapLayer((2, 8), name="big"), FeatureMapLayer((2, 3), name="small")
        )
    msg = str(e.value)
    assert all(p in msg for p in ("big (2, 8)", "small (2, 3)", "(2, 4)")), msg


def test_bad_delay_and_bad_kind():
    a, b = InputLayer((2,), name="a"), ActivationLayer((2,), name="b")
    with pytest.raises(FlexcoreError, match="a -> b: delay must be an int >= 1"):
        Network().connect_recurrent(a, b, delay=0)
    with pytest.raises(FlexcoreError, match="delay must be an int >= 0"):
        Network().connect_dense(a, b, delay=-1)
    with pytest.raises(
        FlexcoreError, match="unknown kind 'lstm'; valid: dense, conv, pool, identity"
    ):
        Network().connect_recurrent(a, b, kind="lstm")
    with pytest.raises(FlexcoreError, match="InputLayer cannot receive"):
        Network().connect_dense(b, a)


# ---------------------------------------------------------------------------------------
# names of activations and losses
# ---------------------------------------------------------------------------------------


def test_unknown_activation_lists_the_valid_ones():
    with pytest.raises(FlexcoreError) as e:
        ActivationLayer((3,), name="h", passFunction="sigmoud")
    msg = str(e.value)
    assert "'h'" in msg and "'sigmoud'" in msg
    assert all(a in msg for a in ACTIVATIONS)


def test_unknown_loss_lists_the_valid_ones():
    with pytest.raises(FlexcoreError) as e:
        ActivationLayer((3,), name="y", ifOutput=True, lossFunction="negativeLogLikelyhood")
    msg = str(e.value)
    assert "'y'" in msg and "negativeLogLikelyhood" in msg
    assert all(name in msg for name in LOSSES)
    with pytest.raises(FlexcoreError, match="output layer 'y2' needs a loss"):
        ActivationLayer((3,), name="y2", output=True)


def test_unknown_argument_names_the_valid_ones():
    with pytest.raises(FlexcoreError, match=r"unknown argument 'pasFunction'.*activation"):
        ActivationLayer((3,), pasFunction="tanh")


# ---------------------------------------------------------------------------------------
# data that does not fit
# ---------------------------------------------------------------------------------------


@pytest.fixture
def seq_net():
    net = Network()
    x = InputLayer((3,), sequence_length=4, name="frames")
    h = ActivationLayer((5,), activation="tanh", name="h")
    y = ActivationLayer((2,), activation="softmax", name="label", output=True, loss="nll")
    net.connect_dense(x, h, return_sequence=True)
    net.connect_recurrent(h, h)
    net.connect_dense(h, y)
    return net.compile(4, backend=REF)


GOOD_X = np.zeros((6, 4, 3))
GOOD_Y = np.zeros(6, dtype=np.int64)


@pytest.mark.parametrize(
    "bad_x, bad_y, pattern",
    [
        (
            GOOD_X[:, :3],
            GOOD_Y,
            r"'frames' takes data of shape \(N, 4, 3\), got \(6, 3, 3\)",
        ),  # wrong T
        (
            GOOD_X[..., :2],
            GOOD_Y,
            r"'frames' takes data of shape \(N, 4, 3\), got \(6, 4, 2\)",
        ),  # wrong F
        (
            GOOD_X[0],
            GOOD_Y,
            r"'frames' takes data of shape \(N, 4, 3\), got \(4, 3\)",
        ),  # no batch axis
        (GOOD_X, GOOD_Y[:5], r"6 inputs but 5 targets for 'label'"),  # N mismatch
        (GOOD_X, GOOD_Y + 2, r"labels for 'label' must be in \[0, 2\), got \[2, 2\]"),  # too big
        (GOOD_X, GOOD_Y - 1, r"labels for 'label' must be in \[0, 2\)"),  # negative
        (
            GOOD_X,
            GOOD_Y.astype(float),
            r"targets for 'label' must be integer class labels, got float64",
        ),
        (
            GOOD_X,
            np.zeros((6, 4), np.int64),
            r"'label' need shape \(6,\), got \(6, 4\)",
        ),  # per-step labels
        (GOOD_X[:0], GOOD_Y[:0], r"'frames': the data holds no examples"),
    ],
)
def test_data_that_does_not_fit(seq_net, monkeypatch, bad_x, bad_y, pattern):
    calls = []
    monkeypatch.setattr(Function, "__call__", lambda self, *a: calls.append(a))
    for run in (
        lambda: seq_net.fit((bad_x, bad_y), 1, verbose=False),
        lambda: seq_net.evaluate((bad_x, bad_y)),
    ):
        with pytest.raises(FlexcoreError, match=pattern):
            run()
    assert calls == []  # refused before any batch ran


def test_predict_checks_inputs_too(seq_net):
    with pytest.raises(
        ShapeError, match=r"'frames' takes data of shape \(N, 4, 3\), got \(2, 5, 3\)"
    ):
        seq_net.predict(np.zeros((2, 5, 3)))


def test_several_inputs_by_name_and_mismatched_counts():
    net = Network()
    a = InputLayer((2,), name="left")
    b = InputLayer((3,), name="right")
    y = ActivationLayer((1,), name="y", output=True, loss="mse")
    net.connect_dense(a, y)
    net.connect_dense(b, y)
    net.compile(4, backend=REF)
    with pytest.raises(FlexcoreError, match=r"missing data for layer.*right"):
        net.predict({"left": np.zeros((4, 2))})
    with pytest.raises(FlexcoreError, match=r"2 layers here \(left, right\)"):
        net.predict(np.zeros((4, 2)))
    with pytest.raises(
        ShapeError, match=r"disagree on the number of examples: 4 and 3 \('right'\)"
    ):
        net.predict([np.zeros((4, 2)), np.zeros((3, 3))])
    assert net.predict({"right": np.ones((4, 3)), "left": np.ones((4, 2))}).shape == (4, 1)


def test_float_labels_for_nll_in_training_data(seq_net):
    # integral floats are still refused: an nll output takes class labels
    with pytest.raises(FlexcoreError, match="integer class labels"):
        seq_net.fit((GOOD_X, np.ones(6)), 1, verbose=False)


def test_not_compiled():
    net = Network("lonely")
    x = InputLayer((2,), name="x")
    y = ActivationLayer((2,), name="y", output=True, loss="mse")
    net.connect_dense(x, y)
    with pytest.raises(FlexcoreError, match="network 'lonely' is not compiled"):
        net.predict(np.zeros((1, 2)))
