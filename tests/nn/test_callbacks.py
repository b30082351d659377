"""Callbacks: early stopping stops at the epoch its rule says and restores the best weights,
a checkpoint holds the best epoch's network, a scheduler's rates are the ones trained with."""

from __future__ import annotations

import numpy as np
import pytest

from flexcore import ActivationLayer, FlexcoreError, InputLayer, Network
from flexcore.nn import Callback, EarlyStopping, LearningRateScheduler, ModelCheckpoint

REF = "reference"


def small_net(seed=0):
    net = Network("cb", seed=seed)
    x = InputLayer(4, name="x")
    h = ActivationLayer(6, activation="tanh", name="h")
    y = ActivationLayer(3, activation="softmax", output=True, loss="nll", name="y")
    net.connect_dense(x, h)
    net.connect_dense(h, y)
    net.compile(8, backend=REF, dtype="float64")
    return net


def data(seed=0, n=32):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)


class Recorder(Callback):
    """Keeps a copy of the weights after every epoch."""

    def __init__(self):
        self.weights = []

    def on_epoch_end(self, net, epoch, metrics):
        self.weights.append(net.weights())


# ---------------------------------------------------------------------------------------
# early stopping
# ---------------------------------------------------------------------------------------


def drive(cb, values, key="val_loss"):
    """Feed a scripted metric sequence; returns the epoch at which the callback asked to stop."""
    cb.on_train_begin(None, None)
    for epoch, v in enumerate(values):
        if cb.on_epoch_end(_NoWeights(), epoch, {key: v, "loss": 1.0}):
            return epoch
    return None


class _NoWeights:
    def weights(self):
        return {}


@pytest.mark.parametrize(("values", "patience", "min_delta", "stop", "best_epoch"), [
    # best at epoch 2 (0.5); epochs 3, 4 do not improve; patience 2 stops at epoch 4
    ([1.0, 0.8, 0.5, 0.6, 0.55, 0.4], 2, 0.0, 4, 2),
    # patience 0 and 1 both stop at the first epoch without improvement
    ([1.0, 0.8, 0.9, 0.7], 0, 0.0, 2, 1),
    ([1.0, 0.8, 0.9, 0.7], 1, 0.0, 2, 1),
    # an improvement resets the count: 0.45 at epoch 4 improves on 0.5
    ([1.0, 0.5, 0.6, 0.7, 0.45, 0.5, 0.5, 0.5], 3, 0.0, 7, 4),
    # min_delta: 0.95 and 0.91 are not better than 1.0 by more than 0.1
    ([1.0, 0.95, 0.91, 0.5], 2, 0.1, 2, 0),
    # never stops when it keeps improving
    ([3.0, 2.0, 1.0, 0.5], 0, 0.0, None, 3),
])
def test_early_stopping_on_a_scripted_sequence(values, patience, min_delta, stop, best_epoch):
    es = EarlyStopping("val_loss", patience=patience, min_delta=min_delta)
    assert drive(es, values) == stop
    assert es.best_epoch == best_epoch and es.best == values[best_epoch]
    assert es.stopped_epoch == stop


def test_early_stopping_mode_max_and_auto():
    es = EarlyStopping("val_accuracy", patience=1)  # auto: accuracy grows
    assert es.mode == "max"
    assert drive(es, [0.5, 0.7, 0.6, 0.9], key="val_accuracy") == 2
    es = EarlyStopping("score", mode="max", patience=1)
    assert drive(es, [1.0, 2.0, 3.0, 2.5], key="score") == 3
    assert EarlyStopping("val_loss").mode == "min"


def test_early_stopping_in_fit_stops_and_restores_the_best_weights():
    # The monitored metric is the scripted learning rate, so the best epoch is known: the rate
    # is lowest at epoch 1, and with patience 2 training stops at epoch 3.
    rates = [0.3, 0.1, 0.2, 0.25, 0.05, 0.05]
    net = small_net()
    rec = Recorder()
    es = EarlyStopping("lr", mode="min", patience=2, restore_best=True)
    hist = net.fit(data(), len(rates), lambda e: rates[e], verbose=False, callbacks=[rec, es])
    assert len(hist["loss"]) == 4 and es.stopped_epoch == 3 and es.best_epoch == 1
    assert hist["lr"] == rates[:4]
    for k, v in net.weights().items():
        np.testing.assert_array_equal(v, rec.weights[1][k])
    assert not np.array_equal(rec.weights[3]["h.b"], rec.weights[1]["h.b"])  # it did move on


def test_early_stopping_without_restore_keeps_the_last_weights():
    net = small_net()
    rec = Recorder()
    es = EarlyStopping("lr", mode="min", patience=1, restore_best=False)
    net.fit(data(), 5, lambda e: [0.1, 0.2, 0.3, 0.4, 0.5][e], verbose=False, callbacks=[rec, es])
    assert es.stopped_epoch == 1
    for k, v in net.weights().items():
        np.testing.assert_array_equal(v, rec.weights[-1][k])


def test_an_unknown_metric_is_named_with_the_available_ones():
    net = small_net()
    with pytest.raises(FlexcoreError, match=r"'val_loss' is not among .*accuracy, loss, lr, time.*validation_data"):
        net.fit(data(), 2, 0.1, verbose=False, callbacks=[EarlyStopping()])
    with pytest.raises(FlexcoreError, match="mode must be"):
        EarlyStopping(mode="lowest")
    with pytest.raises(FlexcoreError, match="patience"):
        EarlyStopping(patience=-1)


# ---------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------


def test_checkpoint_holds_the_best_epochs_network(tmp_path):
    train, val = data(0, 48), data(1, 24)
    net = small_net()
    rec = Recorder()
    ck = ModelCheckpoint(str(tmp_path / "best"), monitor="val_loss")
    # A rate that overshoots late makes the last epoch worse than the best one.
    rates = [0.5, 0.5, 0.5, 8.0, 8.0]
    hist = net.fit(train, len(rates), lambda e: rates[e], validation_data=val, verbose=False,
                   callbacks=[rec, ck])
    best = int(np.argmin(hist["val_loss"]))
    assert ck.best_epoch == best and ck.best == hist["val_loss"][best]
    assert best < len(rates) - 1  # the test means something only if the last epoch is not the best
    assert len(ck.saved) == len({i for i, v in enumerate(hist["val_loss"]) if v == min(hist["val_loss"][:i + 1])})
    back = Network.load(tmp_path / "best")
    for k, v in back.weights().items():
        np.testing.assert_array_equal(v, rec.weights[best][k])
    assert back.evaluate(val)["loss"] == pytest.approx(hist["val_loss"][best], rel=1e-12)


def test_checkpoint_every_epoch_with_a_formatted_path(tmp_path):
    net = small_net()
    ck = ModelCheckpoint(str(tmp_path / "e{epoch:02d}-{loss:.2f}"), monitor="loss", save_best_only=False)
    hist = net.fit(data(), 3, 0.1, verbose=False, callbacks=[ck])
    want = [str(tmp_path / f"e{e + 1:02d}-{hist['loss'][e]:.2f}.json") for e in range(3)]
    assert ck.saved == want
    assert all((tmp_path / p).exists() for p in want)
    with pytest.raises(FlexcoreError, match="cannot fill the path"):
        net.fit(data(), 1, 0.1, verbose=False, callbacks=[ModelCheckpoint(str(tmp_path / "{nope}"), "loss")])


# ---------------------------------------------------------------------------------------
# learning-rate schedules
# ---------------------------------------------------------------------------------------


def test_scheduler_rates_are_the_ones_trained_with():
    net = small_net()
    sched = LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch else lr)
    hist = net.fit(data(), 4, 0.2, verbose=False, callbacks=[sched])
    assert hist["lr"] == [0.2, 0.1, 0.05, 0.025]


def test_scheduler_steps_like_sgd_with_those_rates():
    # Two networks from the same start: one scheduled, one given the same rates as a function
    # of the epoch; plain SGD without shuffling makes their weights equal.
    rates = [0.3, 0.1, 0.03]
    a, b = small_net(), small_net()
    a.fit(data(), 3, 1.0, shuffle=False, verbose=False,
          callbacks=[LearningRateScheduler(lambda epoch, lr: rates[epoch])])
    b.fit(data(), 3, lambda e: rates[e], shuffle=False, verbose=False)
    for k, v in a.weights().items():
        np.testing.assert_array_equal(v, b.weights()[k])


def test_scheduler_rejects_a_bad_rate():
    net = small_net()
    with pytest.raises(FlexcoreError, match="finite number >= 0"):
        net.fit(data(), 1, 0.1, verbose=False, callbacks=[LearningRateScheduler(lambda e, lr: -1.0)])
    with pytest.raises(FlexcoreError, match="callable"):
        LearningRateScheduler(0.1)
