"""save / load: JSON + .npz, no pickle, exact round trips, clear errors for damaged files, and
a save that fails half way leaves the previous files as they were."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from flexcore import (
    ActivationLayer,
    FeatureMapLayer,
    FlexcoreError,
    InputLayer,
    MemoryLayer,
    Network,
    optim,
)
from flexcore.nn import cells
from flexcore.nn import io as nn_io

REF = "reference"


def lstm_net(seed=0, dtype="float64"):
    """An LSTM cell, a layer with a given initial state, an input with a learnable one, a
    memory layer and a delay-2 identity path: most of what a file has to carry."""
    net = Network("saved", seed=seed)
    x = InputLayer((3,), sequence_length=4, name="x", initial_state="learnable")
    cell = cells.lstm(net, x, 5, layer_norm=True)
    side = ActivationLayer(
        (3,), activation="elu", name="side", initial_state=np.array([0.1, -0.2, 0.3])
    )
    mem = MemoryLayer((3,), name="mem", initial_state=np.array([1.0, 2.0, 3.0]))
    y = ActivationLayer(
        (2,), activation="softmax", name="y", output=True, loss="nll", loss_weight=0.5
    )
    z = ActivationLayer((3,), name="z", output=True, loss="mse", loss_steps="all")
    net.connect_dense(x, side, return_sequence=True, bias=True)
    net.connect_recurrent(side, side, delay=2, kind="identity", scale=0.5)
    net.connect_gate(side, mem, "candidate")
    net.connect_gate(x, mem, "forget")
    net.connect_dense(cell.out, y)
    net.connect_dense(mem, z, return_sequence=True)
    net.connect_recurrent(x, z, delay=3, kind="identity")
    net.compile(4, optimizer="adam", backend=REF, dtype=dtype, l2=0.01, clip_norm=1.5)
    rng = np.random.default_rng(seed + 1)
    net.set_weights({k: rng.uniform(-0.5, 0.5, v.shape) for k, v in net.weights().items()})
    return net


def conv_net(seed=0):
    net = Network("convsaved", seed=seed)
    x = InputLayer((2, 6, 6), name="img")
    c = FeatureMapLayer((3, 6, 6), activation="relu", name="c")
    p = FeatureMapLayer((3, 3, 3), name="p", bias=False)
    y = ActivationLayer((4,), activation="softmax", name="y", output=True, loss="cross_entropy")
    net.connect_conv(x, c, kernel_size=3, bias=True)
    net.connect_pool(c, p, mode="avg", kernel_size=2)
    net.connect_dense(p, y)
    return net.compile(5, backend=REF)


def inputs_for(net, n=6, seed=9):
    rng = np.random.default_rng(seed)
    xs = [
        rng.normal(
            size=(n, *((layer.sequence_length,) if layer.sequence_length else ()), *layer.shape)
        ).astype(np.float32)
        for layer in net.inputs
    ]
    return xs[0] if len(xs) == 1 else xs


# ---------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lstm_net, conv_net])
def test_round_trip_predicts_exactly_the_same(tmp_path, make):
    net = make()
    xs = inputs_for(net)
    jpath, wpath = net.save(tmp_path / "model")
    assert (jpath, wpath) == (str(tmp_path / "model.json"), str(tmp_path / "model.npz"))
    loaded = Network.load(tmp_path / "model")
    before, after = net.predict(xs), loaded.predict(xs)
    as_list = lambda v: v if isinstance(v, list) else [v]  # noqa: E731
    for a, b in zip(as_list(before), as_list(after), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert loaded.summary() == net.summary()
    w0, w1 = net.weights(), loaded.weights()
    assert w0.keys() == w1.keys()
    for k in w0:
        assert w0[k].dtype == w1[k].dtype
        np.testing.assert_array_equal(w0[k], w1[k])


def test_round_trip_keeps_layer_and_compile_settings(tmp_path):
    net = lstm_net()
    net.save(tmp_path / "m.json")  # either file's name names the pair
    loaded = Network.load(str(tmp_path / "m.npz"))
    for a, b in zip(net.layers, loaded.layers, strict=True):
        ca, cb = a.config(), b.config()
        assert ca == cb, (ca, cb)
    assert [c.config() for c in net.connections] == [c.config() for c in loaded.connections]
    c0, c1 = net._compiled, loaded._compiled
    for key in ("batch_size", "dtype", "backend", "l1", "l2", "clip_norm"):
        assert c0[key] == c1[key], key
    assert repr(c0["optimizer"]) == repr(c1["optimizer"])
    # The loaded network trains as the original does (same data, same steps).
    data = (inputs_for(net, 8), {"y": np.arange(8) % 2, "z": np.zeros((8, 4, 3))})
    h0 = net.fit(data, 2, 0.01, shuffle=False, verbose=False)
    h1 = loaded.fit(data, 2, 0.01, shuffle=False, verbose=False)
    np.testing.assert_array_equal(h0["loss"], h1["loss"])


def test_training_resumes_after_load_as_if_never_saved(tmp_path):
    # Adam's moments and step counts, and the step count seeding the shuffles, are saved.
    net = lstm_net()
    data = (inputs_for(net, 12), {"y": np.arange(12) % 2, "z": np.zeros((12, 4, 3))})
    net.fit(data, 2, 0.01, verbose=False)
    net.save(tmp_path / "model")
    with np.load(tmp_path / "model.npz", allow_pickle=False) as z:
        assert {
            "optimizer/x->side.W.m",
            "optimizer/x->side.W.v",
            "optimizer/x->side.W.step",
        } <= set(z.files)
    loaded = Network.load(tmp_path / "model")
    h0 = net.fit(data, 2, 0.01, verbose=False)
    h1 = loaded.fit(data, 2, 0.01, verbose=False)
    np.testing.assert_array_equal(h0["loss"], h1["loss"])
    for k, v in net.weights().items():
        np.testing.assert_array_equal(loaded.weights()[k], v)


def test_a_users_own_optimizer_class_does_not_block_loading(tmp_path):
    class Mine(optim.SGD):
        pass

    net = conv_net()
    net.compile(5, optimizer=Mine(momentum=0.5), backend=REF)
    net.save(tmp_path / "model")
    loaded = Network.load(tmp_path / "model")
    assert type(loaded._compiled["optimizer"]) is optim.SGD  # rebuilt by name: plain SGD
    xs = inputs_for(net)
    np.testing.assert_array_equal(net.predict(xs), loaded.predict(xs))


def test_an_uncompiled_network_round_trips(tmp_path):
    net = Network("raw", seed=4)
    x = InputLayer((3,), name="x")
    y = ActivationLayer((2,), name="y", output=True, loss="mse")
    net.connect_dense(x, y)
    net.save(tmp_path / "raw")
    loaded = Network.load(tmp_path / "raw")
    assert loaded._compiled is None
    net.compile(2, backend=REF)
    loaded.compile(2, backend=REF)
    xs = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(net.predict(xs), loaded.predict(xs))


def test_files_are_plain_json_and_npz_without_pickle(tmp_path):
    net = lstm_net()
    jpath, wpath = net.save(tmp_path / "model")
    assert sorted(os.listdir(tmp_path)) == ["model.json", "model.npz"]
    with open(jpath, encoding="utf-8") as f:
        arch = json.load(f)  # plain JSON: dicts, lists, strings, numbers
    assert arch["format"] == "flexcore-network" and arch["weights_file"] == "model.npz"
    assert {layer["name"] for layer in arch["layers"]} >= {"x", "side", "mem", "y", "z", "lstm.h"}

    def plain(v):
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return v is None or isinstance(v, (str, int, float, bool))

    assert plain(arch)
    with np.load(wpath, allow_pickle=False) as z:
        stored = {k: z[k] for k in z.files}
    assert stored.keys() == net.weights().keys()
    assert all(v.dtype != object for v in stored.values())
    with zipfile.ZipFile(wpath) as z:
        assert all(n.endswith(".npy") for n in z.namelist())


# ---------------------------------------------------------------------------------------
# damaged files
# ---------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    net = lstm_net()
    jpath, wpath = net.save(tmp_path / "model")
    return tmp_path / "model", jpath, wpath


def refused(path, *words):
    with pytest.raises(FlexcoreError) as e:
        Network.load(path)
    msg = str(e.value)
    assert "cannot load network" in msg and all(w in msg for w in words), msg
    return msg


def test_truncated_npz(saved):
    base, _, wpath = saved
    data = Path(wpath).read_bytes()
    Path(wpath).write_bytes(data[: len(data) // 2])
    refused(base, "model.npz", "truncated")


def test_tampered_npz(saved):
    base, _, wpath = saved
    data = bytearray(Path(wpath).read_bytes())
    data[len(data) // 2] ^= 0x01
    Path(wpath).write_bytes(bytes(data))
    refused(base, "model.npz", "modified")


def test_truncated_json(saved):
    base, jpath, _ = saved
    text = Path(jpath).read_bytes()
    Path(jpath).write_bytes(text[: len(text) // 2])
    refused(base, "model.json", "not valid JSON")


@pytest.mark.parametrize("where", ["layers", "connections"])
def test_json_naming_an_unknown_class(saved, where):
    base, jpath, _ = saved
    arch = json.loads(Path(jpath).read_text())
    arch[where][1]["class"] = "EvilLayer"
    Path(jpath).write_text(json.dumps(arch))
    refused(base, "unknown", "'EvilLayer'")


def test_json_with_a_missing_field(saved):
    base, jpath, _ = saved
    arch = json.loads(Path(jpath).read_text())
    del arch["layers"][1]["input_shape"]
    Path(jpath).write_text(json.dumps(arch))
    refused(base, "incomplete")


def test_json_that_is_not_a_network(saved):
    base, jpath, _ = saved
    Path(jpath).write_text(json.dumps([1, 2, 3]))
    refused(base, "not a flexcore network file")


def test_pair_from_different_saves(tmp_path):
    a, b = lstm_net(seed=0), lstm_net(seed=1)
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    os.replace(tmp_path / "b.npz", tmp_path / "a.npz")
    refused(tmp_path / "a", "a.npz", "another save")


def test_missing_weights_file(saved):
    base, _, wpath = saved
    os.unlink(wpath)
    refused(base, "model.npz")


def test_weights_file_outside_the_directory_is_refused(saved):
    base, jpath, _ = saved
    arch = json.loads(Path(jpath).read_text())
    arch["weights_file"] = "../elsewhere.npz"
    Path(jpath).write_text(json.dumps(arch))
    refused(base, "weights file name is invalid")


# ---------------------------------------------------------------------------------------
# atomic saves
# ---------------------------------------------------------------------------------------


def snapshot(directory):
    return {p.name: p.read_bytes() for p in sorted(Path(directory).iterdir())}


@pytest.mark.parametrize("failing_call", [1, 2])
def test_a_failed_rename_leaves_the_previous_pair(tmp_path, monkeypatch, failing_call):
    old = lstm_net(seed=0)
    old.save(tmp_path / "model")
    before = snapshot(tmp_path)
    xs = inputs_for(old)
    expected = old.predict(xs)

    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append(dst)
        if len(calls) == failing_call:  # 1: renaming the weights, 2: the architecture
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(nn_io.os, "replace", flaky_replace)
    with pytest.raises(OSError, match="disk full"):
        lstm_net(seed=1).save(tmp_path / "model")
    monkeypatch.setattr(nn_io.os, "replace", real_replace)

    assert snapshot(tmp_path) == before  # same names (no temporary left), same bytes
    loaded = Network.load(tmp_path / "model")
    for a, b in zip(expected, loaded.predict(xs), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_failed_write_leaves_the_previous_pair(tmp_path, monkeypatch):
    lstm_net(seed=0).save(tmp_path / "model")
    before = snapshot(tmp_path)
    real_fsync = os.fsync
    calls = []

    def flaky_fsync(fd):
        calls.append(fd)
        if len(calls) == 2:  # while the architecture's temporary file is written
            raise OSError("I/O error")
        return real_fsync(fd)

    monkeypatch.setattr(nn_io.os, "fsync", flaky_fsync)
    with pytest.raises(OSError, match="I/O error"):
        lstm_net(seed=1).save(tmp_path / "model")
    monkeypatch.setattr(nn_io.os, "fsync", real_fsync)
    assert snapshot(tmp_path) == before


def test_save_over_a_previous_pair_replaces_both(tmp_path):
    lstm_net(seed=0).save(tmp_path / "model")
    new = lstm_net(seed=1)
    new.save(tmp_path / "model")
    assert sorted(os.listdir(tmp_path)) == ["model.json", "model.npz"]
    loaded = Network.load(tmp_path / "model")
    for k, v in new.weights().items():
        np.testing.assert_array_equal(loaded.weights()[k], v)
