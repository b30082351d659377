"""Autodiff edge cases: argument checks, disconnected inputs, accumulation, shared variables,
explicit cotangents, second order, and integer paths.  (Per-op gradients are checked by the
registry-driven suite.)"""

from __future__ import annotations

import numpy as np
import pytest

import flexcore as fc
from flexcore.ir.core import REGISTRY

REF = "reference"
RNG = np.random.default_rng(2)


def run(inputs, outputs, *feed):
    return fc.function(inputs, outputs, backend=REF)(*feed)


def numeric_grad(fn, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of a scalar function of a float64 array."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (fn(x + e) - fn(x - e)) / (2 * eps)
    return g


# ---------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------


def test_grad_of_a_non_scalar_cost_is_a_shape_error_with_a_hint():
    x = fc.placeholder((3,), name="x")
    with pytest.raises(fc.ShapeError, match=r"scalar.*\(3,\).*sum or mean.*vjp"):
        fc.grad(fc.exp(x), x)


def test_grad_of_an_integer_cost_is_an_error():
    n = fc.placeholder((3,), np.int64, name="n")
    with pytest.raises(fc.FlexcoreError, match="float32 or float64"):
        fc.grad(fc.sum(n), n)


def test_grad_wrt_an_integer_var_is_an_error():
    x = fc.placeholder((3,), name="x")
    n = fc.placeholder((3,), np.int64, name="n")
    cost = fc.sum(x * fc.cast(n, np.float32))
    with pytest.raises(fc.FlexcoreError, match=r"'n'.*int64"):
        fc.grad(cost, n)
    with pytest.raises(fc.FlexcoreError, match="'n'"):
        fc.grad(cost, [x, n])


def test_disconnected_wrt_raises_by_default():
    x = fc.placeholder((3,), name="x")
    other = fc.placeholder((2, 2), name="other")
    with pytest.raises(fc.FlexcoreError, match=r"does not depend on 'other'.*disconnected='zero'"):
        fc.grad(fc.sum(x * x), [x, other])


def test_disconnected_wrt_gives_zeros_on_request():
    x = fc.placeholder((3,), np.float64, name="x")
    other = fc.placeholder((2, 2), np.float64, name="other")
    gx, go = fc.grad(fc.sum(x * x), [x, other], disconnected="zero")
    assert go.shape == (2, 2) and go.dtype == np.float64
    xv = RNG.normal(size=3)
    gxv, gov = run([x, other], [gx, go], xv, np.ones((2, 2)))
    np.testing.assert_allclose(gxv, 2 * xv)
    np.testing.assert_array_equal(gov, np.zeros((2, 2)))
    with pytest.raises(fc.FlexcoreError, match="disconnected"):
        fc.grad(fc.sum(x), x, disconnected="ignore")


# ---------------------------------------------------------------------------------------
# accumulation, shared variables, explicit cotangents
# ---------------------------------------------------------------------------------------


def test_gradient_accumulates_over_a_var_used_twice():
    x = fc.placeholder((4,), np.float64, name="x")
    xv = RNG.normal(size=4)
    np.testing.assert_allclose(run([x], fc.grad(fc.sum(x * x), x), xv), 2 * xv)
    # Used on several paths at different depths.
    cost = fc.sum(x * x + fc.exp(x) * x)
    np.testing.assert_allclose(run([x], fc.grad(cost, x), xv), 2 * xv + np.exp(xv) * (1 + xv))


def test_grad_list_in_list_out_and_repeated_wrt():
    x = fc.placeholder((2,), np.float64, name="x")
    y = fc.placeholder((2,), np.float64, name="y")
    gs = fc.grad(fc.sum(x * y), [y, x, y])
    assert isinstance(gs, list) and len(gs) == 3
    xv, yv = RNG.normal(size=2), RNG.normal(size=2)
    a, b, c = run([x, y], gs, xv, yv)
    np.testing.assert_allclose(a, xv)
    np.testing.assert_allclose(b, yv)
    np.testing.assert_allclose(c, xv)


def test_grad_through_a_shared_variable():
    x = fc.placeholder((5, 3), name="x")
    w = fc.shared(RNG.normal(size=(3, 2)).astype(np.float32), name="w")
    cost = fc.sum(fc.tanh(x @ w))
    gw = fc.grad(cost, w)
    assert gw.shape == w.shape
    f = fc.function([x], gw, backend=REF)
    xv = RNG.normal(size=(5, 3)).astype(np.float32)
    for _ in range(2):  # the gradient follows the variable's current value
        wv = w.get_value()
        want = xv.T @ (1 - np.tanh(xv @ wv) ** 2)
        np.testing.assert_allclose(f(xv), want, rtol=1e-5, atol=1e-6)
        w.set_value(wv + 1.0)


def test_vjp_with_explicit_cotangents():
    x = fc.placeholder((3, 4), np.float64, name="x")
    a = RNG.normal(size=(4, 2))
    y = x @ fc.const(a)
    z = fc.exp(x)
    cy = fc.placeholder((3, 2), np.float64, name="cy")
    cz = fc.placeholder((3, 4), np.float64, name="cz")
    xv, cyv, czv = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 2)), RNG.normal(size=(3, 4))
    (g1,) = fc.vjp([y], [cy], [x])
    np.testing.assert_allclose(run([x, cy], g1, xv, cyv), cyv @ a.T)
    # Several outputs: their products add up.
    (g2,) = fc.vjp([y, z], [cy, cz], [x])
    np.testing.assert_allclose(run([x, cy, cz], g2, xv, cyv, czv), cyv @ a.T + czv * np.exp(xv))


def test_vjp_accepts_arrays_and_numbers_as_cotangents():
    x = fc.placeholder((3,), np.float64, name="x")
    y = fc.tanh(x) * 3.0
    c = RNG.normal(size=3)
    (g_arr,) = fc.vjp([y], [c], [x])
    (g_num,) = fc.vjp([fc.sum(y)], [2.0], [x])
    xv = RNG.normal(size=3)
    ga, gn = run([x], [g_arr, g_num], xv)
    np.testing.assert_allclose(ga, c * 3.0 * (1 - np.tanh(xv) ** 2))
    np.testing.assert_allclose(gn, 2.0 * 3.0 * (1 - np.tanh(xv) ** 2))


def test_vjp_checks_its_cotangents():
    x = fc.placeholder((3,), name="x")
    y = fc.exp(x)
    with pytest.raises(fc.ShapeError, match=r"shape \(2,\).*\(3,\)"):
        fc.vjp([y], [fc.const(np.ones(2, np.float32))], [x])
    with pytest.raises(fc.ShapeError, match=r"float64.*float32"):
        fc.vjp([y], [fc.const(np.ones(3, np.float64))], [x])
    with pytest.raises(fc.FlexcoreError, match=r"2 output.*got 1"):
        fc.vjp([y, y], [fc.const(np.ones(3, np.float32))], [x])


# ---------------------------------------------------------------------------------------
# second order
# ---------------------------------------------------------------------------------------


def test_gradient_of_gradient_matches_finite_differences():
    n = 5
    w_val = RNG.normal(size=n)
    x = fc.placeholder((n,), np.float64, name="x")
    w = fc.placeholder((n,), np.float64, name="w")
    gw = fc.grad(fc.sum(fc.sigmoid(x * w)), w)  # x * s'(x w)
    gx = fc.grad(fc.sum(gw), x)
    f = fc.function([x, w], [fc.sum(gw), gx], backend=REF)

    def inner(xv):
        return f(xv, w_val)[0]

    xv = RNG.normal(size=n)
    got = f(xv, w_val)[1]
    np.testing.assert_allclose(got, numeric_grad(inner, xv), rtol=1e-6, atol=1e-8)
    # and the closed form of d/dx [x s(xw)(1 - s(xw))]
    s = 1 / (1 + np.exp(-xv * w_val))
    closed = s * (1 - s) + xv * w_val * s * (1 - s) * (1 - 2 * s)
    np.testing.assert_allclose(got, closed, rtol=1e-10)


def test_hessian_vector_product_of_a_quadratic():
    a = RNG.normal(size=(4, 4))
    x = fc.placeholder((4,), np.float64, name="x")
    v = fc.placeholder((4,), np.float64, name="v")
    cost = 0.5 * fc.sum(x * fc.sum(fc.const(a) * x, axis=1))  # x^T A x / 2
    (hv,) = fc.hessian_vector_product(cost, [x], [v])
    xv, vv = RNG.normal(size=4), RNG.normal(size=4)
    np.testing.assert_allclose(run([x, v], hv, xv, vv), 0.5 * (a + a.T) @ vv, rtol=1e-10)


# ---------------------------------------------------------------------------------------
# integer paths
# ---------------------------------------------------------------------------------------


def test_gather_gives_the_table_a_gradient_and_the_indices_none():
    table = fc.placeholder((4, 3), np.float64, name="table")
    idx = fc.placeholder((5,), np.int64, name="idx")
    rows = fc.gather(table, idx)
    weights = RNG.normal(size=(5, 3))
    cost = fc.sum(rows * fc.const(weights))
    gt = fc.grad(cost, table)
    iv = np.array([0, 2, 2, 3, 2])
    want = np.zeros((4, 3))
    np.add.at(want, iv, weights)  # a row picked twice gets both contributions
    np.testing.assert_allclose(run([table, idx], gt, np.ones((4, 3)), iv), want)
    with pytest.raises(fc.FlexcoreError, match=r"'idx'.*int64"):
        fc.grad(cost, idx)
    g = fc.placeholder((5, 3), np.float64)
    assert REGISTRY["gather"].vjp(g, rows, table, idx)[1] is None


def test_an_integer_detour_carries_no_gradient():
    x = fc.placeholder((3,), np.float64, name="x")
    rounded = fc.cast(fc.cast(x, np.int64), np.float64)  # piecewise constant in x
    xv = np.array([1.5, 2.7, -0.2])
    gx = fc.grad(fc.sum(x * rounded), x)
    np.testing.assert_allclose(run([x], gx, xv), np.trunc(xv))
    with pytest.raises(fc.FlexcoreError, match="does not depend on 'x'"):
        fc.grad(fc.sum(rounded), x)
    zero = fc.grad(fc.sum(rounded), x, disconnected="zero")
    np.testing.assert_array_equal(run([x], zero, xv), np.zeros(3))
