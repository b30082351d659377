"""Optimizers against torch.optim: same initial weights, same loss, same batches, float64."""

from __future__ import annotations

import numpy as np
import pytest

import flexcore as fc
from flexcore import optim

torch = pytest.importorskip("torch")

BACKEND = "reference"
STEPS = 5
SHAPES = {"w1": (4, 6), "b1": (6,), "w2": (6, 3), "b2": (3,)}
BATCH = 16


def init_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.normal(0.0, 0.5, s) for k, s in SHAPES.items()}


def batches(seed: int = 1, n: int = STEPS) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(BATCH, 4)), rng.normal(size=(BATCH, 3))) for _ in range(n)]


def fc_loss(p, x, y):
    h = fc.tanh(x @ p["w1"] + p["b1"])
    d = h @ p["w2"] + p["b2"] - y
    return fc.mean(d * d)


def torch_loss(p, x, y):
    h = torch.tanh(x @ p["w1"] + p["b1"])
    d = h @ p["w2"] + p["b2"] - y
    return (d * d).mean()


class FcTrainer:
    """A flexcore MLP trained by `opt`; lr is a float baked into the graph or a placeholder."""

    def __init__(self, opt, weights, lr, lr_placeholder: bool, dtype=np.float64, clip=None, l2=0.0):
        self.p = {k: fc.shared(np.asarray(v, dtype), name=k) for k, v in weights.items()}
        self.params = list(self.p.values())
        x = fc.placeholder((BATCH, 4), dtype, name="x")
        y = fc.placeholder((BATCH, 3), dtype, name="y")
        loss = fc_loss(self.p, x, y)
        if l2:
            loss = loss + (l2 / 2) * optim.l2_penalty(self.params)
        grads = fc.grad(loss, self.params)
        if clip is not None:
            grads = optim.clip_by_global_norm(grads, clip)
        self.lr_placeholder = lr_placeholder
        self.lr = lr
        inputs = [x, y]
        lr_arg = lr
        if lr_placeholder:
            lr_arg = fc.placeholder((), dtype, name="lr")
            inputs.append(lr_arg)
        self.opt = opt
        self.fn = fc.function(
            inputs, loss, updates=opt.updates(self.params, grads, lr_arg), backend=BACKEND
        )

    def step(self, x, y, lr=None):
        args = [x, y] + ([np.asarray(self.lr if lr is None else lr)] if self.lr_placeholder else [])
        return float(self.fn(*args))

    def values(self):
        return {k: v.get_value() for k, v in self.p.items()}


class TorchTrainer:
    def __init__(self, make_opt, weights, lr, dtype=torch.float64, clip=None):
        self.p = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in weights.items()}
        self.opt = make_opt(list(self.p.values()), lr)
        self.dtype = dtype
        self.clip = clip

    def step(self, x, y, lr=None):
        if lr is not None:
            for group in self.opt.param_groups:
                group["lr"] = lr
        self.opt.zero_grad()
        loss = torch_loss(
            self.p, torch.tensor(x, dtype=self.dtype), torch.tensor(y, dtype=self.dtype)
        )
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(list(self.p.values()), self.clip)
        self.opt.step()
        return float(loss.detach())

    def values(self):
        return {k: v.detach().numpy().copy() for k, v in self.p.items()}


# (id, flexcore optimizer factory, torch optimizer factory, lr)
CONFIGS = [
    ("sgd", lambda: optim.SGD(), lambda ps, lr: torch.optim.SGD(ps, lr=lr), 0.1),
    (
        "momentum",
        lambda: optim.SGD(momentum=0.9),
        lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9),
        0.05,
    ),
    (
        "nesterov",
        lambda: optim.SGD(momentum=0.9, nesterov=True),
        lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9, nesterov=True),
        0.05,
    ),
    (
        "sgd_wd",
        lambda: optim.SGD(weight_decay=0.1),
        lambda ps, lr: torch.optim.SGD(ps, lr=lr, weight_decay=0.1),
        0.1,
    ),
    (
        "momentum_wd",
        lambda: optim.SGD(momentum=0.8, weight_decay=0.05),
        lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.8, weight_decay=0.05),
        0.05,
    ),
    ("adam", lambda: optim.Adam(), lambda ps, lr: torch.optim.Adam(ps, lr=lr), 0.01),
    (
        "adam_custom",
        lambda: optim.Adam(beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=0.02),
        lambda ps, lr: torch.optim.Adam(ps, lr=lr, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.02),
        0.02,
    ),
    ("rmsprop", lambda: optim.RMSprop(), lambda ps, lr: torch.optim.RMSprop(ps, lr=lr), 0.01),
    (
        "rmsprop_momentum",
        lambda: optim.RMSprop(momentum=0.9),
        lambda ps, lr: torch.optim.RMSprop(ps, lr=lr, momentum=0.9),
        0.01,
    ),
    (
        "rmsprop_centered",
        lambda: optim.RMSprop(centered=True),
        lambda ps, lr: torch.optim.RMSprop(ps, lr=lr, centered=True),
        0.01,
    ),
    (
        "rmsprop_all",
        lambda: optim.RMSprop(alpha=0.9, eps=1e-6, momentum=0.5, centered=True, weight_decay=0.01),
        lambda ps, lr: torch.optim.RMSprop(
            ps, lr=lr, alpha=0.9, eps=1e-6, momentum=0.5, centered=True, weight_decay=0.01
        ),
        0.01,
    ),
]


def assert_same(fc_vals, torch_vals, rtol=1e-10):
    for k in SHAPES:
        np.testing.assert_allclose(
            fc_vals[k], torch_vals[k], rtol=rtol, atol=0, err_msg=f"parameter {k}"
        )


@pytest.mark.parametrize("lr_placeholder", [False, True], ids=["lr_float", "lr_placeholder"])
@pytest.mark.parametrize("name,make_fc,make_torch,lr", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_matches_torch(name, make_fc, make_torch, lr, lr_placeholder):
    w = init_weights()
    ours = FcTrainer(make_fc(), w, lr, lr_placeholder)
    ref = TorchTrainer(make_torch, w, lr)
    for x, y in batches():
        loss_ours, loss_ref = ours.step(x, y), ref.step(x, y)
        assert loss_ours == pytest.approx(loss_ref, rel=1e-10)
        assert_same(ours.values(), ref.values())
    # The parameters moved: the comparison above is not between two untouched copies.
    assert not np.allclose(ours.values()["w1"], w["w1"])


def test_adam_float32_as_accurate_as_torch():
    """In float32 the two runs differ by rounding; flexcore must be as close to the float64
    result as torch's float32 run is (computing Adam's bias corrections in float32 was 6x worse)."""
    w = init_weights()

    def run(np_dtype, torch_dtype):
        ours = FcTrainer(optim.Adam(), w, 0.01, lr_placeholder=True, dtype=np_dtype)
        ref = TorchTrainer(lambda ps, lr: torch.optim.Adam(ps, lr=lr), w, 0.01, dtype=torch_dtype)
        for x, y in batches():
            ours.step(x.astype(np_dtype), y.astype(np_dtype), lr=np_dtype(0.01))
            ref.step(x.astype(np_dtype), y.astype(np_dtype))
        return ours.values(), ref.values()

    ours64, torch64 = run(np.float64, torch.float64)
    assert_same(ours64, torch64)
    ours32, torch32 = run(np.float32, torch.float32)
    for k in SHAPES:
        assert ours32[k].dtype == np.float32
        err_ours = np.abs(ours32[k] - torch64[k]).max()
        err_torch = np.abs(torch32[k] - torch64[k]).max()
        assert err_ours <= 1.5 * err_torch + 1e-8, (k, err_ours, err_torch)
        # Within a few float32 ulps of the weights' scale (~1) of torch's own float32 run.
        np.testing.assert_allclose(ours32[k], torch32[k], rtol=1e-6, atol=2.5e-7)


def test_lr_placeholder_changes_step_without_recompiling():
    w = init_weights()
    ours = FcTrainer(optim.SGD(momentum=0.9), w, 0.1, lr_placeholder=True)
    ref = TorchTrainer(lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9), w, 0.1)
    fn = ours.fn
    data = batches()
    for (x, y), lr in zip(data, [0.1, 0.01, 0.1, 0.0, 0.03], strict=True):
        before = ours.values()
        ours.step(x, y, lr=lr)
        ref.step(x, y, lr=lr)
        assert_same(ours.values(), ref.values())
        if lr == 0.0:
            for k in SHAPES:
                np.testing.assert_array_equal(ours.values()[k], before[k])
    assert ours.fn is fn

    # Same gradient, two learning rates: the step scales with lr (plain SGD: p - lr * g).
    p = fc.shared(np.array([1.0, -2.0, 3.0]), name="p")
    lr_ph = fc.placeholder((), np.float64, name="lr")
    loss = fc.sum(p * p)
    step = fc.function(
        [lr_ph], loss, updates=optim.SGD().updates([p], [fc.grad(loss, p)], lr_ph), backend=BACKEND
    )
    step(np.float64(0.1))
    np.testing.assert_allclose(
        p.get_value(), np.array([1.0, -2.0, 3.0]) * (1 - 2 * 0.1), rtol=1e-15
    )
    p.set_value(np.array([1.0, -2.0, 3.0]))
    step(np.float64(0.25))
    np.testing.assert_allclose(
        p.get_value(), np.array([1.0, -2.0, 3.0]) * (1 - 2 * 0.25), rtol=1e-15
    )


def test_scalar_input_stays_scalar():
    """A 0-d input (the learning rate) must reach the graph as shape (), not (1,): with
    (1,) the Adam step size lr / (1 - beta1^t) came out (1,) and the plan failed."""
    lr = fc.placeholder((), np.float64, name="lr")
    out = fc.function([lr], lr * 2.0, backend=BACKEND)(np.float64(0.5))
    assert out.shape == () and float(out) == 1.0


def test_float32_lr_placeholder_drives_float64_params():
    w = init_weights()
    lr32 = np.float32(0.05)
    p64 = {k: fc.shared(v, name=k) for k, v in w.items()}
    x = fc.placeholder((BATCH, 4), np.float64, name="x")
    y = fc.placeholder((BATCH, 3), np.float64, name="y")
    loss = fc_loss(p64, x, y)
    params = list(p64.values())
    lr_ph = fc.placeholder((), np.float32, name="lr")
    fn = fc.function(
        [x, y, lr_ph],
        loss,
        updates=optim.Adam().updates(params, fc.grad(loss, params), lr_ph),
        backend=BACKEND,
    )
    ref = TorchTrainer(lambda ps, lr: torch.optim.Adam(ps, lr=lr), w, float(lr32))
    for xb, yb in batches():
        fn(xb, yb, lr32)
        ref.step(xb, yb)
    assert_same({k: v.get_value() for k, v in p64.items()}, ref.values())


def test_clip_by_global_norm_matches_torch():
    rng = np.random.default_rng(3)
    arrays = [rng.normal(size=s) for s in [(3, 4), (5,), (2, 2, 2)]]
    total = np.sqrt(sum((a * a).sum() for a in arrays))
    for max_norm in [0.5 * total, 2.0 * total]:
        phs = [fc.placeholder(a.shape, np.float64, name=f"g{i}") for i, a in enumerate(arrays)]
        clipped = optim.clip_by_global_norm(phs, max_norm)
        fn = fc.function(phs, [*clipped, optim.global_norm(phs)], backend=BACKEND)
        *ours, norm = fn(*arrays)
        ts = [torch.zeros(a.shape, dtype=torch.float64, requires_grad=True) for a in arrays]
        for t, a in zip(ts, arrays, strict=True):
            t.grad = torch.tensor(a)
        torch_norm = torch.nn.utils.clip_grad_norm_(ts, max_norm)
        assert float(norm) == pytest.approx(float(torch_norm), rel=1e-12)
        for o, t in zip(ours, ts, strict=True):
            np.testing.assert_allclose(o, t.grad.numpy(), rtol=1e-12, atol=0)
        if max_norm > total:
            for o, a in zip(ours, arrays, strict=True):
                np.testing.assert_array_equal(o, a)
        else:
            clipped_norm = np.sqrt(sum((o * o).sum() for o in ours))
            assert clipped_norm == pytest.approx(max_norm, rel=1e-5)


def test_clipped_training_matches_torch():
    w = init_weights()
    ours = FcTrainer(optim.SGD(momentum=0.9), w, 0.1, lr_placeholder=False, clip=0.3)
    ref = TorchTrainer(lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9), w, 0.1, clip=0.3)
    for x, y in batches():
        ours.step(x, y)
        ref.step(x, y)
        assert_same(ours.values(), ref.values())


def test_penalties():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(7,))
    pa, pb = fc.shared(a, name="a"), fc.shared(b, name="b")
    l1, l2 = fc.function(
        [], [optim.l1_penalty([pa, pb]), optim.l2_penalty([pa, pb])], backend=BACKEND
    )()
    assert float(l1) == pytest.approx(np.abs(a).sum() + np.abs(b).sum(), rel=1e-14)
    assert float(l2) == pytest.approx((a * a).sum() + (b * b).sum(), rel=1e-14)
    g1, g2 = fc.function(
        [], fc.grad(optim.l1_penalty([pa]) + optim.l2_penalty([pb]), [pa, pb]), backend=BACKEND
    )()
    np.testing.assert_array_equal(g1, np.sign(a))
    np.testing.assert_allclose(g2, 2 * b, rtol=1e-15)


def test_l2_penalty_equals_torch_weight_decay():
    w = init_weights()
    ours = FcTrainer(optim.SGD(momentum=0.9), w, 0.05, lr_placeholder=False, l2=0.1)
    ref = TorchTrainer(
        lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9, weight_decay=0.1), w, 0.05
    )
    for x, y in batches():
        ours.step(x, y)
        ref.step(x, y)
        assert_same(ours.values(), ref.values())


def test_state_names_and_reuse():
    w = init_weights()
    opt = optim.Adam()
    assert opt.state() == {}
    ours = FcTrainer(opt, w, 0.01, lr_placeholder=False)
    names = [f"{k}.{s}" for k in SHAPES for s in ("m", "v", "step")]
    assert sorted(opt.state()) == sorted(names)
    for k in SHAPES:
        assert opt.state()[f"{k}.m"].shape == SHAPES[k]
        assert opt.state()[f"{k}.step"].dtype == np.int64
    for x, y in batches(n=3):
        ours.step(x, y)
    assert int(opt.state()["w1.step"].get_value()) == 3

    # A second step function for the same parameters reuses the same state variables.
    before = opt.state()
    grads = [fc.grad(fc.sum(p * p), p) for p in ours.params]
    ups = opt.updates(ours.params, grads, 0.01)
    assert opt.state() == before
    targets = {id(sv) for sv, _ in ups}
    assert all(id(sv) in targets for sv in before.values())


def test_state_save_restore_reproduces_training():
    w = init_weights()
    opt = optim.RMSprop(momentum=0.9, centered=True)
    ours = FcTrainer(opt, w, 0.01, lr_placeholder=False)
    data = batches(n=6)
    for x, y in data[:2]:
        ours.step(x, y)
    saved_params = ours.values()
    saved_state = {k: v.get_value() for k, v in opt.state().items()}
    for x, y in data[2:]:
        ours.step(x, y)
    first = ours.values()
    for k, v in ours.p.items():
        v.set_value(saved_params[k])
    for k, v in opt.state().items():
        v.set_value(saved_state[k])
    for x, y in data[2:]:
        ours.step(x, y)
    for k in SHAPES:
        np.testing.assert_array_equal(ours.values()[k], first[k])
    assert not np.array_equal(first["w1"], saved_params["w1"])


def test_unnamed_and_duplicate_names():
    opt = optim.SGD(momentum=0.9)
    a, b = fc.shared(np.ones(2)), fc.shared(np.ones(3))
    opt.updates([a, b], [fc.grad(fc.sum(a * a), a), fc.grad(fc.sum(b * b), b)], 0.1)
    assert sorted(opt.state()) == ["param0.momentum", "param1.momentum"]

    c, d = fc.shared(np.ones(2), name="w"), fc.shared(np.ones(2), name="w")
    with pytest.raises(fc.FlexcoreError, match="named 'w'"):
        optim.Adam().updates([c, d], [fc.grad(fc.sum(c * c), c), fc.grad(fc.sum(d * d), d)], 0.1)


def test_get_optimizer():
    for name, cls in [("sgd", optim.SGD), ("adam", optim.Adam), ("rmsprop", optim.RMSprop)]:
        assert type(optim.get_optimizer(name)) is cls
    m = optim.get_optimizer("Momentum")
    assert isinstance(m, optim.SGD) and m.momentum == 0.9 and not m.nesterov
    n = optim.get_optimizer("nesterov")
    assert isinstance(n, optim.SGD) and n.momentum == 0.9 and n.nesterov
    assert optim.get_optimizer("adam", beta1=0.5).beta1 == 0.5
    inst = optim.Adam()
    assert optim.get_optimizer(inst) is inst


def test_unknown_optimizer_lists_valid_names():
    with pytest.raises(fc.FlexcoreError) as e:
        optim.get_optimizer("adagrad")
    msg = str(e.value)
    assert "adagrad" in msg
    for name in ("sgd", "momentum", "nesterov", "adam", "rmsprop"):
        assert name in msg
    with pytest.raises(fc.FlexcoreError, match="valid names"):
        optim.get_optimizer(42)


def test_bad_arguments():
    p = fc.shared(np.ones(3), name="p")
    g = fc.grad(fc.sum(p * p), p)
    with pytest.raises(fc.FlexcoreError, match="nesterov"):
        optim.SGD(nesterov=True)
    with pytest.raises(fc.FlexcoreError, match="beta1"):
        optim.Adam(beta1=1.0)
    with pytest.raises(fc.FlexcoreError, match="momentum"):
        optim.SGD(momentum=-0.1)
    with pytest.raises(fc.FlexcoreError, match="2 gradient"):
        optim.SGD().updates([p], [g, g], 0.1)
    with pytest.raises(fc.FlexcoreError, match="learning rate"):
        optim.SGD().updates([p], [g], -1.0)
    with pytest.raises(fc.ShapeError, match="scalar"):
        optim.SGD().updates([p], [g], fc.placeholder((3,), np.float64))
    with pytest.raises(fc.ShapeError, match="gradient of 'p'"):
        optim.SGD().updates([p], [fc.placeholder((2,), np.float64)], 0.1)
    with pytest.raises(fc.FlexcoreError, match="shared variable"):
        optim.SGD().updates([fc.placeholder((3,), np.float64)], [g], 0.1)
