"""Every op in the registry, checked the same way (the cases live in op_cases.py):

- the shape/dtype rule of every node agrees with what the reference implementation returns;
- the gradient agrees with central finite differences in float64, and so does the gradient of
  the gradient (a Hessian-vector product);
- ops marked not differentiable give no gradient, zero-gradient ops give zeros;
- forward and gradient agree with PyTorch in float32, on the same inputs and weights.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from op_cases import CASES, Case

import flexcore as fc
from flexcore.ir.core import REGISTRY, FlexcoreError, ShapeError, apply, const_value, toposort

torch = pytest.importorskip("torch")

# torch's own note that 'same' with an even kernel copies the input; nothing to act on here.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")

FD_STEP = 1e-5  # central differences: truncation ~h^2 f''' ~ 1e-10, rounding ~1e-16 / h ~ 1e-11
FD_TOL = 1e-6

# float32 against torch.  Both sides round every operation to float32 (eps = 6e-8) but order
# sums differently and use different exp/log implementations (a few ulp).  An output that is
# a sum of n terms then differs by about n * eps * max|term|; with n <= 100 here that is below
# 1e-5 relative.  Elements that cancel to near zero keep the absolute error of their terms, so
# the absolute tolerance scales with the largest magnitude in the tensor.
TORCH_RTOL = 1e-5
TORCH_ATOL = 1e-6


def case_params(pred=lambda c: True):
    return [pytest.param(c, id=c.id) for c in CASES if pred(c)]


def case_rng(c: Case, salt: str = "") -> np.random.Generator:
    return np.random.default_rng(zlib.crc32((c.id + salt).encode()))


def as_tuple(res) -> tuple:
    return tuple(res) if isinstance(res, (tuple, list)) else (res,)


def setup(c: Case, float_dtype, rng):
    """Placeholders, input arrays and outputs of a case."""
    arrays = c.draw(rng)
    phs, feeds = [], []
    for i, (spec, a) in enumerate(zip(c.inputs, arrays, strict=True)):
        dt = spec.resolve_dtype(float_dtype)
        assert a.shape == spec.shape, (
            f"case {c.id}: sample {i} has shape {a.shape}, spec {spec.shape}"
        )
        phs.append(fc.placeholder(spec.shape, dt, name=f"in{i}"))
        feeds.append(np.asarray(a).astype(dt))
    outs = as_tuple(c.build(*phs))
    return phs, feeds, outs


def diff_indices(c: Case) -> list[int]:
    return [i for i, s in enumerate(c.inputs) if s.is_float and s.diff]


def interpret(outputs, phs, feeds) -> list[np.ndarray]:
    """Run a graph node by node with the registry's numpy implementations, unoptimised, and check
    that every node's result has exactly the shape and dtype its shape rule promised."""
    vals = {id(p): f for p, f in zip(phs, feeds, strict=True)}
    for v in toposort(outputs):
        if v.op == "placeholder":
            r = vals[id(v)]
        elif v.op == "const":
            r = const_value(v)
        elif v.op == "shared":
            r = v.storage.get()
        else:
            r = np.asarray(REGISTRY[v.op].impl(*[vals[id(x)] for x in v.inputs], **v.attr))
        assert r.shape == v.shape and r.dtype == v.dtype, (
            f"op '{v.op}' {dict((k, a) for k, a in v.attrs if k != 'id')}: "
            f"the shape rule says {v.shape} {v.dtype}, "
            f"the reference computes {r.shape} {r.dtype}"
        )
        vals[id(v)] = r
    return [vals[id(o)] for o in outputs]


def compiled(phs, outs):
    return fc.function(phs, list(outs), backend="reference")


def rel_err(a, b) -> float:
    """Norm-wise relative error ||a - b|| / max(||a||, ||b||); 0 when both are exactly zero."""
    a = np.concatenate([np.ravel(x).astype(np.float64) for x in a])
    b = np.concatenate([np.ravel(x).astype(np.float64) for x in b])
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b)), "non-finite values"
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if scale == 0.0 else float(np.linalg.norm(a - b) / scale)


def weighted_cost(outs, weights):
    """sum_k sum(outs[k] * weights[k]): a scalar that sees every output element."""
    cost = None
    for o, w in zip(outs, weights, strict=True):
        t = fc.sum(o * fc.const(w.astype(o.dtype)))
        cost = t if cost is None else cost + t
    return cost


# ---------------------------------------------------------------------------------------
# the registry drives the cases
# ---------------------------------------------------------------------------------------
def test_every_op_has_cases():
    names = set(REGISTRY) | set(fc.COMPOSITES)
    covered = {c.op for c in CASES}
    assert names - covered == set(), f"ops without test cases: {sorted(names - covered)}"
    assert covered - names == set(), f"cases for ops that do not exist: {sorted(covered - names)}"


def test_every_activation_is_an_op():
    for name, fn in fc.ACTIVATIONS.items():
        assert (
            fn.__name__ in REGISTRY
            or fn.__name__ in fc.COMPOSITES
            or fn.__name__ in {c.op for c in CASES}
        ), name


@pytest.mark.parametrize("c", case_params())
def test_grad_mode_agrees_with_registry(c):
    """A primitive marked differentiable=False cannot have a case claiming a gradient, and a
    differentiable primitive on float inputs cannot be declared 'none'."""
    od = REGISTRY.get(c.op)
    if od is None or c.op in fc.COMPOSITES:
        assert c.op in fc.COMPOSITES
        return
    if c.grad != "none":
        assert od.differentiable, (
            f"{c.op} is marked not differentiable but case {c.id} checks a gradient"
        )
    elif any(s.is_float for s in c.inputs):
        assert not od.differentiable, f"{c.op} is differentiable but case {c.id} says it is not"


# ---------------------------------------------------------------------------------------
# shape rules against the reference
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("float_dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("c", case_params())
def test_shape_rule_matches_reference(c, float_dtype):
    phs, feeds, outs = setup(c, float_dtype, case_rng(c))
    for o in outs:
        assert isinstance(o, fc.Var)
    direct = interpret(outs, phs, feeds)
    results = as_tuple(compiled(phs, outs)(*feeds))
    for o, d, r in zip(outs, direct, results, strict=True):
        assert r.shape == o.shape and r.dtype == o.dtype, (
            f"{o}: function returned {r.shape} {r.dtype}"
        )
        # The optimised plan computes the same numbers as the unoptimised graph.
        np.testing.assert_array_equal(r, d)


# ---------------------------------------------------------------------------------------
# gradients against finite differences (float64)
# ---------------------------------------------------------------------------------------
def objective(fn, feeds, weights) -> float:
    return float(
        sum(
            np.sum(np.asarray(o, np.float64) * w)
            for o, w in zip(as_tuple(fn(*feeds)), weights, strict=True)
        )
    )


def finite_difference_grad(fn, feeds, weights, i) -> np.ndarray:
    """Central differences of the weighted objective w.r.t. input i, element by element.  The
    step is the one actually taken after rounding to the input's dtype."""
    x = feeds[i]
    g = np.zeros(x.shape, np.float64)
    for j in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[j] += FD_STEP
        xm[j] -= FD_STEP
        step = float(xp[j]) - float(xm[j])
        fp = objective(fn, [*feeds[:i], xp, *feeds[i + 1 :]], weights)
        fm = objective(fn, [*feeds[:i], xm, *feeds[i + 1 :]], weights)
        g[j] = (fp - fm) / step
    return g


@pytest.mark.parametrize("c", case_params(lambda c: c.grad == "fd"))
def test_gradient_matches_finite_differences(c):
    rng = case_rng(c)
    phs, feeds, outs = setup(c, np.float64, rng)
    weights = [rng.standard_normal(o.shape) for o in outs]
    idx = diff_indices(c)
    assert idx, f"case {c.id} has no input to differentiate"
    grads = fc.grad(weighted_cost(outs, weights), [phs[i] for i in idx])
    analytic = compiled(phs, grads)(*feeds)
    # The backward graph's own shape rules, and the optimiser, agree with the reference too.
    for a, d in zip(analytic, interpret(grads, phs, feeds), strict=True):
        np.testing.assert_allclose(a, d, rtol=1e-12, atol=1e-14)
    fwd = compiled(phs, outs)
    for i, a in zip(idx, analytic, strict=True):
        assert a.shape == feeds[i].shape and a.dtype == feeds[i].dtype
        fd = finite_difference_grad(fwd, feeds, weights, i)
        # A zero gradient would make the comparison vacuous (only an empty output has one here).
        assert np.any(fd != 0) or all(o.size == 0 for o in outs), (
            f"{c.id}: input {i} has a zero gradient"
        )
        err = rel_err([a], [fd])
        assert err < FD_TOL, (
            f"{c.id}: gradient of input {i} differs from finite differences by {err:.2e}"
        )


def _second_order_ok(c: Case) -> bool:
    # A fixed float32 input cannot be stepped finely enough for a difference of gradients.
    return c.grad == "fd" and all(
        s.dtype in (None, "float64") for s in c.inputs if s.is_float and s.diff
    )


# The ops whose gradient-of-gradient must be checked (every 'fd' case is; this keeps them 'fd').
SECOND_ORDER_REQUIRED = (
    "tanh",
    "sigmoid",
    "exp",
    "log",
    "mul",
    "div",
    "matmul",
    "softmax",
    "log_softmax",
    "conv2d",
    "max_pool2d",
    "layer_norm",
    "softmax_cross_entropy",
    "gather",
)


def test_second_order_covers_the_required_ops():
    covered = {c.op for c in CASES if _second_order_ok(c)}
    assert set(SECOND_ORDER_REQUIRED) <= covered, sorted(set(SECOND_ORDER_REQUIRED) - covered)


@pytest.mark.parametrize("c", case_params(_second_order_ok))
def test_second_order_matches_finite_differences(c):
    """H v (the gradient of <grad, v>) against (grad(x + h v) - grad(x - h v)) / 2h.

    The cost adds a quadratic term in the outputs, so the check also covers ops that are linear
    or piecewise linear (their H v is J^T D J v, which goes through the vjp of their vjp)."""
    rng = case_rng(c, "second-order")
    phs, feeds, outs = setup(c, np.float64, case_rng(c))
    w1 = [rng.standard_normal(o.shape) for o in outs]
    w2 = [rng.standard_normal(o.shape) for o in outs]
    cost = weighted_cost(outs, w1) + weighted_cost([o * o for o in outs], w2)
    idx = diff_indices(c)
    xs = [phs[i] for i in idx]
    vs = [rng.standard_normal(phs[i].shape) for i in idx]
    hv = fc.hessian_vector_product(cost, xs, [fc.const(v) for v in vs])
    analytic = compiled(phs, hv)(*feeds)
    for a, d in zip(analytic, interpret(hv, phs, feeds), strict=True):
        np.testing.assert_allclose(a, d, rtol=1e-12, atol=1e-14)
    gfn = compiled(phs, fc.grad(cost, xs))

    def grads_at(sign):
        moved = list(feeds)
        for i, v in zip(idx, vs, strict=True):
            moved[i] = feeds[i] + sign * FD_STEP * v
        return gfn(*moved)

    fd = [(p - m) / (2 * FD_STEP) for p, m in zip(grads_at(1.0), grads_at(-1.0), strict=True)]
    assert any(np.any(f != 0) for f in fd) or all(o.size == 0 for o in outs), f"{c.id}: H v is zero"
    err = rel_err(analytic, fd)
    assert err < FD_TOL, (
        f"{c.id}: Hessian-vector product differs from finite differences by {err:.2e}"
    )


# ---------------------------------------------------------------------------------------
# zero gradients and no gradients
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", case_params(lambda c: c.grad == "zero"))
def test_zero_gradient_ops_give_zeros(c):
    rng = case_rng(c)
    phs, feeds, outs = setup(c, np.float64, rng)
    weights = [rng.standard_normal(o.shape) for o in outs]
    idx = diff_indices(c)
    grads = fc.grad(weighted_cost(outs, weights), [phs[i] for i in idx])
    for i, g in zip(idx, compiled(phs, grads)(*feeds), strict=True):
        assert g.shape == feeds[i].shape and g.dtype == feeds[i].dtype
        np.testing.assert_array_equal(g, np.zeros_like(feeds[i]))


@pytest.mark.parametrize("c", case_params(lambda c: c.grad == "none"))
def test_not_differentiable_ops_give_no_gradient(c):
    rng = case_rng(c)
    phs, feeds, outs = setup(c, np.float64, rng)
    weights = [rng.standard_normal(o.shape) for o in outs]
    cost = weighted_cost([fc.cast(o, "float64") for o in outs], weights)
    floats = [p for p, s in zip(phs, c.inputs, strict=True) if s.is_float]
    others = [p for p, s in zip(phs, c.inputs, strict=True) if not s.is_float]
    if floats:
        with pytest.raises(FlexcoreError, match="does not depend"):
            fc.grad(cost, floats)
        zeros = compiled(phs, fc.grad(cost, floats, disconnected="zero"))(*feeds)
        for z, p in zip(zeros, floats, strict=True):
            np.testing.assert_array_equal(z, np.zeros(p.shape))
    for p in others:
        with pytest.raises(FlexcoreError, match="cannot differentiate"):
            fc.grad(cost, p)


def test_zero_gradient_paths():
    """A path through a zero-gradient op adds nothing but keeps the Var connected; a path only
    through a non-differentiable op leaves it disconnected."""
    x = fc.placeholder((3,), "float64")
    xv = np.array([-1.0, 0.5, 2.0])
    g = fc.grad(fc.sum(fc.stop_gradient(x) * x), x)
    np.testing.assert_array_equal(compiled([x], [g])(xv)[0], xv)
    g = fc.grad(fc.sum(fc.step(fc.tanh(x))), x)  # connected through tanh, then step's zero
    np.testing.assert_array_equal(compiled([x], [g])(xv)[0], np.zeros(3))
    with pytest.raises(FlexcoreError, match="does not depend"):
        fc.grad(fc.sum(fc.cast(fc.tanh(x) > 0.0, "float64")), x)


def test_cast_to_float32_passes_the_gradient_back_exactly():
    x = fc.placeholder((2, 3), "float64")
    w = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    g = fc.grad(fc.sum(fc.cast(x, "float32") * fc.const(w)), x)
    assert g.dtype == np.float64
    np.testing.assert_array_equal(compiled([x], [g])(np.ones((2, 3)))[0], w.astype(np.float64))


def test_max_ties_share_the_gradient_equally():
    x = fc.placeholder((2, 4), "float64")
    g = fc.grad(fc.sum(fc.max(x, -1) * fc.const(np.array([1.0, 6.0]))), x)
    got = compiled([x], [g])(np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, -1.0]]))[0]
    np.testing.assert_array_equal(got, [[0, 0.5, 0.5, 0], [2, 2, 2, 0]])


# ---------------------------------------------------------------------------------------
# PyTorch agreement (float32)
# ---------------------------------------------------------------------------------------
def assert_close_f32(ours, theirs, what):
    theirs = np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs torch {theirs.shape}"
    if ours.dtype.kind in "bi":
        np.testing.assert_array_equal(ours, theirs, err_msg=what)
        return
    scale = max(1.0, float(np.max(np.abs(theirs), initial=0.0)))
    np.testing.assert_allclose(
        ours, theirs, rtol=TORCH_RTOL, atol=TORCH_ATOL * scale, equal_nan=False, err_msg=what
    )


@pytest.mark.parametrize("c", case_params(lambda c: c.torch is not None))
def test_matches_torch(c):
    rng = case_rng(c)
    phs, feeds, outs = setup(c, np.float32, rng)
    ours = as_tuple(compiled(phs, outs)(*feeds))
    tins = []
    for s, f in zip(c.inputs, feeds, strict=True):
        t = torch.from_numpy(np.array(f))
        if s.is_float and s.diff and s.torch_grad and c.grad in ("fd", "nofd"):
            t.requires_grad_(True)
        tins.append(t)
    touts = as_tuple(c.torch(*tins))
    assert len(touts) == len(ours), f"{c.id}: {len(ours)} outputs, torch gives {len(touts)}"
    for k, (o, t) in enumerate(zip(ours, touts, strict=True)):
        assert str(t.dtype).replace("torch.", "") == str(o.dtype), (
            f"{c.id} output {k}: {o.dtype} vs torch {t.dtype}"
        )
        assert_close_f32(o, t.detach().numpy(), f"{c.id}: output {k}")
    if c.grad not in ("fd", "nofd"):
        return
    idx = [i for i in diff_indices(c) if c.inputs[i].torch_grad]
    weights = [rng.standard_normal(o.shape).astype(o.dtype) for o in outs]
    grads = compiled(phs, fc.grad(weighted_cost(outs, weights), [phs[i] for i in idx]))(*feeds)
    tcost = sum((t * torch.from_numpy(w)).sum() for t, w in zip(touts, weights, strict=True))
    tgrads = torch.autograd.grad(tcost, [tins[i] for i in idx])
    for i, g, tg in zip(idx, grads, tgrads, strict=True):
        assert_close_f32(g, tg.numpy(), f"{c.id}: gradient of input {i}")


# ---------------------------------------------------------------------------------------
# named checks
# ---------------------------------------------------------------------------------------
def test_tanh_second_derivative():
    """d^2/dx^2 tanh(x) = -2 tanh(x) (1 - tanh(x)^2): closed form and finite differences."""
    xs = np.array([-2.5, -1.0, -0.3, 0.0, 0.4, 1.1, 3.0])
    x = fc.placeholder(xs.shape, "float64")
    d1 = fc.grad(fc.sum(fc.tanh(x)), x)  # elementwise: the sum's gradient is tanh'(x)
    d2 = fc.grad(fc.sum(d1), x)
    f1, f2 = compiled([x], [d1]), compiled([x], [d2])
    t = np.tanh(xs)
    np.testing.assert_allclose(f1(xs)[0], 1 - t * t, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(f2(xs)[0], -2 * t * (1 - t * t), rtol=1e-13, atol=1e-15)
    fd = (f1(xs + FD_STEP)[0] - f1(xs - FD_STEP)[0]) / (2 * FD_STEP)
    assert rel_err([f2(xs)[0]], [fd]) < FD_TOL


def test_mlp_hessian_vector_product():
    """H v of a 2-layer tanh MLP with softmax cross-entropy, against differences of gradients."""
    rng = np.random.default_rng(7)
    n, d, h, k = 5, 4, 6, 3
    x = fc.placeholder((n, d), "float64")
    y = fc.placeholder((n,), "int64")
    params = [
        fc.placeholder(s, "float64", name=nm)
        for s, nm in [((d, h), "w1"), ((h,), "b1"), ((h, k), "w2"), ((k,), "b2")]
    ]
    w1, b1, w2, b2 = params
    loss = fc.softmax_cross_entropy(fc.tanh(x @ w1 + b1) @ w2 + b2, y)
    vs = [rng.standard_normal(p.shape) for p in params]
    hv = fc.hessian_vector_product(loss, params, [fc.const(v) for v in vs])
    f_hv = compiled([x, y, *params], hv)
    f_g = compiled([x, y, *params], fc.grad(loss, params))
    xv, yv = rng.standard_normal((n, d)), rng.integers(0, k, n)
    pv = [rng.standard_normal(p.shape) for p in params]
    got = f_hv(xv, yv, *pv)
    plus = f_g(xv, yv, *[p + FD_STEP * v for p, v in zip(pv, vs, strict=True)])
    minus = f_g(xv, yv, *[p - FD_STEP * v for p, v in zip(pv, vs, strict=True)])
    fd = [(a - b) / (2 * FD_STEP) for a, b in zip(plus, minus, strict=True)]
    assert rel_err(got, fd) < FD_TOL
    # H v is linear in v: a sanity check that it is not, say, the gradient.
    got2 = compiled(
        [x, y, *params], fc.hessian_vector_product(loss, params, [fc.const(2 * v) for v in vs])
    )(xv, yv, *pv)
    assert rel_err(got2, [2 * g for g in got]) < 1e-12


# ---------------------------------------------------------------------------------------
# dropout: reproducible masks from explicit seeds
# ---------------------------------------------------------------------------------------
def _dropout_out(shape, p, seed, salt=0, dtype="float64"):
    x = fc.placeholder(shape, dtype)
    return compiled([x], [fc.dropout(x, p, seed, salt)])(np.ones(shape, dtype))[0]


def test_dropout_same_seed_same_mask():
    a = _dropout_out((50, 40), 0.3, seed=123)
    b = _dropout_out((50, 40), 0.3, seed=123)
    np.testing.assert_array_equal(a, b)


def test_dropout_different_seed_or_salt_different_mask():
    base = _dropout_out((50, 40), 0.3, seed=123) != 0
    for other in (
        _dropout_out((50, 40), 0.3, seed=124),
        _dropout_out((50, 40), 0.3, seed=123, salt=1),
    ):
        # Independent masks agree on about p^2 + (1-p)^2 = 58% of the elements, not all of them.
        agree = np.mean(base == (other != 0))
        assert 0.5 < agree < 0.66


def test_dropout_keep_rate_and_scale():
    p, n = 0.3, 200_000
    out = _dropout_out((n,), p, seed=9)
    kept = out != 0
    # The keep rate is binomial: 5 standard deviations is sqrt(p (1-p) / n) * 5 = 0.005.
    assert abs(kept.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(out[kept], 1.0 / (1.0 - p), rtol=1e-15)


def test_dropout_seed_as_input():
    x = fc.placeholder((30, 30), "float32")
    s = fc.placeholder((), "int64")
    f = compiled([x, s], [fc.dropout(x, 0.5, s)])
    ones = np.ones((30, 30), np.float32)
    m1, m1b, m2 = f(ones, 5)[0], f(ones, 5)[0], f(ones, 6)[0]
    np.testing.assert_array_equal(m1, m1b)
    assert np.any(m1 != m2)
    assert set(np.unique(m1)) <= {0.0, 2.0}


def test_dropout_off():
    x = fc.placeholder((3, 4))
    assert fc.dropout(x, 0.5, seed=1, training=False) is x
    assert fc.dropout(x, 0.0, seed=1) is x
    with pytest.raises(FlexcoreError, match="p must be in"):
        fc.dropout(x, 1.0, seed=1)


def test_random_uniform_range_and_mean():
    u = compiled([], [fc.random_uniform(3, (100_000,), dtype="float64")])()[0]
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / u.size)


# ---------------------------------------------------------------------------------------
# bad input: errors name the op, the argument and the shapes
# ---------------------------------------------------------------------------------------
def _message(exc_info) -> str:
    return str(exc_info.value)


def test_add_shape_mismatch():
    a, b = fc.placeholder((2, 3), name="a"), fc.placeholder((4, 3), name="b")
    with pytest.raises(ShapeError) as e:
        fc.add(a, b)
    m = _message(e)
    for part in ("'add'", "'a'", "'b'", "(2, 3)", "(4, 3)"):
        assert part in m, m


def test_matmul_inner_dims():
    a, b = fc.placeholder((2, 3)), fc.placeholder((4, 5))
    with pytest.raises(ShapeError) as e:
        a @ b
    m = _message(e)
    for part in ("'matmul'", "inner", "(2, 3)", "(4, 5)", "argument 'a'", "argument 'b'"):
        assert part in m, m


def test_conv2d_channel_mismatch():
    x, w = fc.placeholder((1, 3, 5, 5)), fc.placeholder((4, 2, 3, 3))
    with pytest.raises(ShapeError) as e:
        fc.conv2d(x, w)
    m = _message(e)
    for part in ("conv2d", "input", "weight", "(1, 3, 5, 5)", "(4, 2, 3, 3)"):
        assert part in m, m


def test_concat_mismatch():
    a, b = fc.placeholder((2, 3)), fc.placeholder((3, 4))
    with pytest.raises(ShapeError) as e:
        fc.concat([a, b], axis=0)
    m = _message(e)
    for part in ("'concat'", "(2, 3)", "(3, 4)", "argument"):
        assert part in m, m


def test_unknown_attribute_lists_valid_ones():
    x = fc.placeholder((2, 3))
    with pytest.raises(FlexcoreError) as e:
        apply("sum", x, axis=0)
    m = _message(e)
    assert "'sum'" in m and "axis" in m and "axes, keepdims" in m, m


def test_unknown_activation_lists_valid_names():
    with pytest.raises(FlexcoreError) as e:
        fc.activation("sigmoidd")
    m = _message(e)
    assert "sigmoidd" in m
    for name in fc.ACTIVATIONS:
        assert name in m, m


def test_hessian_vector_product_checks_its_vectors():
    x = fc.placeholder((2, 3), "float64")
    cost = fc.sum(fc.tanh(x))
    with pytest.raises(ShapeError, match=r"\(3,\)"):
        fc.hessian_vector_product(cost, [x], [fc.const(np.ones(3))])  # would broadcast
    with pytest.raises(FlexcoreError, match="as many vectors"):
        fc.hessian_vector_product(cost, [x], [])
    # A plain array is a constant vector.
    hv = fc.hessian_vector_product(cost, [x], [np.ones((2, 3))])[0]
    xv = np.linspace(-1, 1, 6).reshape(2, 3)
    t = np.tanh(xv)
    np.testing.assert_allclose(
        compiled([x], [hv])(xv)[0], -2 * t * (1 - t * t), rtol=1e-13, atol=1e-15
    )


def test_reduction_axis_out_of_range():
    with pytest.raises(ShapeError, match=r"'sum': axis 0 is out of range for a tensor of rank 0"):
        fc.sum(fc.placeholder(()), 0)
    with pytest.raises(ShapeError, match=r"'max': axis -3 is out of range for a tensor of rank 2"):
        fc.max(fc.placeholder((2, 3)), -3)


def test_neg_of_bool_is_refused():
    with pytest.raises(ShapeError, match=r"'neg'.*bool"):
        fc.neg(fc.placeholder((2,)) > 0.0)


def test_split_into_zero_sections_is_refused():
    with pytest.raises(ShapeError, match="sections must be >= 1"):
        fc.split(fc.placeholder((2, 3)), 0)


def test_pool_padding_as_large_as_the_kernel_is_refused():
    with pytest.raises(ShapeError, match="max_pool2d: padding"):
        fc.max_pool2d(fc.placeholder((1, 1, 4, 4)), 2, padding=2)
    with pytest.raises(ShapeError, match="avg_pool1d: padding"):
        fc.avg_pool1d(fc.placeholder((1, 1, 4)), 3, padding=((0, 3),))


def test_index_out_of_range_is_reported_when_run():
    table, idx = fc.placeholder((4, 2)), fc.placeholder((3,), "int64")
    f = compiled([table, idx], [fc.gather(table, idx)])
    with pytest.raises(FlexcoreError, match=r"gather.*out of range"):
        f(np.zeros((4, 2), np.float32), np.array([0, 4, 1]))


def test_gradient_of_nonscalar_cost_is_refused():
    x = fc.placeholder((2, 3))
    with pytest.raises(ShapeError, match="scalar"):
        fc.grad(fc.tanh(x), x)
