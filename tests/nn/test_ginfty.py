"""GInfty: the depth gate's values and gradient, the growth rule, growth that keeps every trained
weight (and the optimizer's state) and the predictions, depths(), save/load, and the seed
paper's finding on a small parity task: harder parity makes the network deeper."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from flexcore import ActivationLayer, FlexcoreError, InputLayer, Network
from flexcore.nn import GInfty, ScalarGate, ginfty
from flexcore.nn.ginfty import delta

REF = "reference"


def parity_data(k: int, rng: np.random.Generator, n: int = 256):
    """8 inputs in {-1, +1}; the label is the parity of the first k of them, the other 8 - k
    inputs are noise."""
    bits = rng.integers(0, 2, (n, 8))
    return (2 * bits - 1).astype(np.float64), (bits[:, :k].sum(1) % 2).astype(np.int64)


def ginfty_net(width=6, depth=2.0, l2=1e-3, seed=0, batch=16, **kw) -> tuple[Network, GInfty]:
    net = Network("gi", seed=seed)
    x = InputLayer(8, name="x")
    g = ginfty(net, x, width, depth=depth, l2=l2, **kw)
    y = ActivationLayer(2, activation="softmax", output=True, loss="nll", name="y")
    net.connect_dense(g.out, y)
    net.compile(batch, optimizer="adam", backend=REF, dtype="float64")
    return net, g


# ---------------------------------------------------------------------------------------
# the gate
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("i", "w", "want"), [
    (1, 2.0, 1.0 - math.exp(-1.0)),  # 0.6321...
    (2, 2.0, 0.0),                   # i = w: exactly 0
    (3, 2.0, 0.0),                   # i > w: relu cuts 1 - e^(1) < 0
    (1, 1.5, 1.0 - math.exp(-0.5)),  # 0.3935...
    (2, 4.0, 1.0 - math.exp(-2.0)),  # 0.8647...
    (1, 10.0, 1.0 - math.exp(-9.0)),
])
def test_delta_formula(i, w, want):
    assert delta(i, w) == pytest.approx(want, rel=1e-15, abs=0)


def test_the_ir_computes_each_block_with_its_delta():
    # Identity activations and no projection make the meta-layer linear, so numpy can follow:
    # x_i = x_{i-1} + delta_i * (x_{i-1} W_i + b_i).
    net = Network("lin", seed=1)
    x = InputLayer(4, name="x")
    g = ginfty(net, x, 4, depth=3.4, activation="identity", block_activation="identity", project=False)
    y = ActivationLayer(4, output=True, loss="mse", name="y")
    net.connect_identity(g.out, y)
    net.compile(5, backend=REF, dtype="float64")
    rng = np.random.default_rng(0)
    net.set_weights({k: rng.normal(size=v.shape) for k, v in net.weights().items() if not k.endswith(".s")})
    assert g.blocks == 4  # ceil(3.4): blocks 1..3 active, block 4 ready with delta 0
    xs = rng.normal(size=(5, 4))
    h = xs.copy()
    ws = net.weights()
    for i in range(1, 5):
        h = h + delta(i, 3.4) * (h @ ws[f"ginfty.dense{i}.W"] + ws[f"ginfty.f{i}.b"])
    h = h + ws["y.b"]
    np.testing.assert_allclose(net.predict(xs), h, rtol=1e-12, atol=1e-12)
    assert g.deltas(net)[3] == 0.0 and g.deltas(net)[2] > 0.0


def test_gradient_of_the_depth_matches_finite_differences():
    # d objective / d w through every gate that reads it, plus the l2 * w^2 penalty.
    rng = np.random.default_rng(3)
    net, g = ginfty_net(depth=2.6, l2=0.05)
    xs, ys = parity_data(4, rng, 32)
    analytic = net.gradients((xs, ys))[g.depth_param]

    def objective(w):
        net.set_weights({g.depth_param: np.array(w)})
        return net.evaluate((xs, ys))["loss"] + 0.05 * w * w  # evaluate gives the data loss

    eps = 1e-6
    numeric = (objective(2.6 + eps) - objective(2.6 - eps)) / (2 * eps)
    assert analytic.shape == ()
    assert abs(analytic) > 1e-3  # a gradient that is there, not an empty check
    assert float(analytic) == pytest.approx(numeric, rel=1e-6)


def test_scalar_gate_checks_its_arguments():
    a, b = InputLayer(3, name="a"), ActivationLayer(3, name="b")
    with pytest.raises(FlexcoreError, match="unknown gate 'tanh'"):
        ScalarGate(a, b, gate="tanh")
    owner = ScalarGate(a, b, gate="ginfty", index=1, init=2.0)
    reader = ScalarGate(a, b, gate="ginfty", index=2, share=owner)
    assert reader.share == owner.name and reader.param_specs() == {} and owner.param_specs() == {"s": ((), 2.0)}
    with pytest.raises(FlexcoreError, match="itself reads"):
        ScalarGate(a, b, share=reader)
    with pytest.raises(FlexcoreError, match="belong to the gate that owns"):
        ScalarGate(a, b, share=owner, l2=0.1)
    with pytest.raises(FlexcoreError, match="equal sizes"):
        ScalarGate(a, ActivationLayer(4, name="c"))


def test_ginfty_checks_its_arguments():
    net = Network("bad")
    x = InputLayer(8, name="x")
    with pytest.raises(FlexcoreError, match="initial depth must be > 1"):
        ginfty(net, x, 4, depth=1.0)
    with pytest.raises(FlexcoreError, match="must have shape"):
        ginfty(net, x, 4, project=False)
    ginfty(net, x, 4, name="g")
    with pytest.raises(FlexcoreError, match="already has a meta-layer named 'g'"):
        ginfty(net, x, 4, name="g")


# ---------------------------------------------------------------------------------------
# growth
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("w", "blocks"), [(2.0, 2), (2.5, 3), (3.0, 3), (3.001, 4), (5.2, 6)])
def test_growth_rule_keeps_blocks_up_to_ceil_w(w, blocks):
    net, g = ginfty_net(depth=2.0)
    assert g.blocks == 2
    net.set_weights({g.depth_param: np.array(w)})
    added = g.grow(net)
    assert (g.blocks, added) == (blocks, blocks - 2)
    # Every block with delta > 0 is built, and the last one built has delta 0.
    ds = g.deltas(net)
    assert ds[-1] == 0.0 and all(d > 0 for d in ds[:-1])


def test_growth_stops_at_max_blocks_with_a_warning():
    net, g = ginfty_net(depth=2.0, max_blocks=3)
    net.set_weights({g.depth_param: np.array(7.5)})
    with pytest.warns(UserWarning, match="max_blocks=3"):
        assert g.grow(net) == 1
    assert g.blocks == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        assert g.grow(net) == 0


def test_growth_keeps_weights_optimizer_state_and_predictions():
    rng = np.random.default_rng(5)
    xs, ys = parity_data(3, rng, 64)
    net, g = ginfty_net(depth=2.0)
    net.fit((xs, ys), 2, 0.01, verbose=False, shuffle=False)
    # Put w past the ready block 2, so block 2 is active and block 3 must be built.
    net.set_weights({g.depth_param: np.array(2.5)})
    params_before = dict(net.params)
    values_before = net.weights()
    opt = net._compiled["optimizer"]
    state_before = dict(opt.state())
    pred_before = net.predict(xs)

    assert g.grow(net) == 1 and g.blocks == 3
    assert net.predict(xs).tolist() == pred_before.tolist()  # block 3 has delta 0: exactly the same
    for k, v in values_before.items():
        assert net.params[k] is params_before[k]  # the same shared variable ...
        assert np.array_equal(net.params[k].get_value(), v)  # ... with the same value
    new = sorted(set(net.params) - set(params_before))
    assert new == ["ginfty.dense3.W", "ginfty.f3.b"]

    # Training goes on with the old optimizer state: Adam's step counts of the old parameters
    # continue (4 batches per epoch, 2 epochs, then 1), the new block's start at the growth.
    net.fit((xs, ys), 1, 0.01, verbose=False, shuffle=False)
    state = opt.state()
    for k, v in state_before.items():
        assert state[k] is v
    assert int(state["ginfty.dense1.W.step"].get_value()) == 12
    assert int(state["ginfty.dense3.W.step"].get_value()) == 4


def test_fit_grows_the_network_and_reports_depths():
    rng = np.random.default_rng(0)
    xs, ys = parity_data(8, rng, 512)
    net, g = ginfty_net(width=16, depth=2.0, seed=0, batch=32)
    assert net.depths() == {"ginfty": 2.0}
    net.fit((xs, ys), 20, 0.01, verbose=False)
    w = net.depths()["ginfty"]
    assert w > 2.5  # it went past the 2 blocks it started with ...
    assert g.blocks == math.ceil(w) >= 3  # ... and grew to ceil(w) blocks along the way
    assert w == pytest.approx(float(net.weights()[g.depth_param]))


def test_a_grown_network_saves_loads_and_keeps_growing(tmp_path):
    rng = np.random.default_rng(1)
    xs, ys = parity_data(5, rng, 64)
    net, g = ginfty_net(depth=2.0)
    net.set_weights({g.depth_param: np.array(3.5)})
    g.grow(net)
    net.fit((xs, ys), 1, 0.01, verbose=False)
    net.save(tmp_path / "gi")
    back = Network.load(tmp_path / "gi")
    assert back.depths() == pytest.approx(net.depths())
    np.testing.assert_array_equal(back.predict(xs), net.predict(xs))
    (m,) = back.meta_layers
    assert m.blocks == 4 and m.out.name == "ginfty.out"
    back.set_weights({m.depth_param: np.array(4.2)})
    assert m.grow(back) == 1 and m.blocks == 5
    back.predict(xs)  # the grown copy still compiles and runs


# ---------------------------------------------------------------------------------------
# the paper's parity experiment, small
# ---------------------------------------------------------------------------------------


def test_harder_parity_learns_a_deeper_network():
    # Parity of k = 8 inputs needs more depth than parity of 1 input (which is the input
    # itself); with the depth penalty the network keeps only the depth it needs.  Three seeds
    # each; every k = 8 run ends deeper than every k = 1 run (by about 0.7 to 1 block here).
    def final_depth(k, seed):
        rng = np.random.default_rng(seed)
        xs, ys = parity_data(k, rng, 512)
        net, _ = ginfty_net(width=16, depth=2.0, seed=seed, batch=32)
        net.fit((xs, ys), 20, 0.01, verbose=False)
        return net.depths()["ginfty"]

    shallow = [final_depth(1, s) for s in range(3)]
    deep = [final_depth(8, s) for s in range(3)]
    assert min(deep) > max(shallow) + 0.5, (shallow, deep)
