"""Graph passes: every registered rewrite fires and keeps values; CSE merges; DCE drops.

Each rewrite test runs `rewrite()` with only that rewrite registered, checks the graph it
produces, and compares the values of the graph before and after on the reference backend
(plans built with `optimize_graph=False`, so nothing else rewrites them).
"""

from __future__ import annotations

import numpy as np
import pytest

import flexcore as fc
from flexcore import passes
from flexcore.backends import get_backend
from flexcore.ir.core import Var, apply, const_value, toposort
from flexcore.plan import build_plan

RNG = np.random.default_rng(0)


def evaluate(inputs: list[Var], outputs: list[Var], feed: list[np.ndarray]) -> list[np.ndarray]:
    """Run the graph exactly as built (no passes) on the reference backend."""
    plan = build_plan(inputs, outputs, [], optimize_graph=False)
    backend = get_backend("reference")
    outs, _ = backend.run(plan, backend.prepare(plan), feed)
    return outs


def only(monkeypatch, name: str) -> None:
    """Leave just the rewrite `name` registered for the rest of the test."""
    chosen = [r for r in passes.REWRITES if r.name == name]
    assert len(chosen) == 1, f"rewrite {name} is not registered"
    monkeypatch.setattr(passes, "REWRITES", chosen)


def assert_same_values(inputs, before: Var, after: Var, feed) -> None:
    (a,) = evaluate(inputs, [before], feed)
    (b,) = evaluate(inputs, [after], feed)
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=0)


def ops_of(root: Var) -> list[str]:
    return [v.op for v in toposort([root])]


def rand(*shape, dtype=np.float32):
    return RNG.normal(size=shape).astype(dtype)


# ---------------------------------------------------------------------------------------
# one test per registered rewrite
# ---------------------------------------------------------------------------------------


def test_fold_constants(monkeypatch):
    only(monkeypatch, "fold_constants")
    x = fc.placeholder((3, 4), name="x")
    c = fc.exp(fc.const(np.float32(1.0)) + fc.const(np.float32(2.0)))
    y = x * c
    (new,) = passes.rewrite([y])
    assert new.op == "mul" and new.inputs[0] is x
    folded = new.inputs[1]
    assert folded.op == "const"
    np.testing.assert_allclose(const_value(folded), np.exp(np.float32(3.0)), rtol=1e-6)
    assert_same_values([x], y, new, [rand(3, 4)])


def test_fold_constants_never_folds_random_uniform(monkeypatch):
    only(monkeypatch, "fold_constants")
    r = fc.random_uniform(7, (3,))
    assert r.inputs[0].op == "const"  # all inputs constant: the one reason fold would fire
    assert passes.fold_constants(r) is None
    y = r * (fc.const(np.float32(2.0)) * fc.const(np.float32(3.0)))
    (new,) = passes.rewrite([y])
    assert new.op == "mul" and new.inputs[0].op == "random_uniform"
    assert new.inputs[1].op == "const" and const_value(new.inputs[1]) == 6.0
    assert_same_values([], y, new, [])


def test_fold_constants_leaves_large_results(monkeypatch):
    only(monkeypatch, "fold_constants")
    one = fc.const(np.float32(1.0))
    big = fc.broadcast_to(one, (300, 300))  # 90,000 elements: above the folding limit
    small = fc.broadcast_to(one, (200, 200))  # 40,000 elements: folded
    big_new, small_new = passes.rewrite([big, small])
    assert big_new.op == "broadcast_to"
    assert small_new.op == "const" and small_new.shape == (200, 200)
    assert_same_values([], small, small_new, [])
    assert_same_values([], fc.sum(big), fc.sum(big_new), [])


def test_fold_constants_leaves_failing_ops_to_run_time(monkeypatch):
    # An out-of-range constant index must not crash compilation with a bare IndexError from a
    # pass: the op stays, and running it raises a FlexcoreError naming the op.
    only(monkeypatch, "fold_constants")
    g = fc.gather(fc.const(np.zeros((3, 2), np.float32)), fc.const(np.array([5])))
    (new,) = passes.rewrite([g])
    assert new.op == "gather"
    f = fc.function([], g, backend="reference")
    with pytest.raises(fc.FlexcoreError, match="gather"):
        f()


def test_drop_add_zero(monkeypatch):
    only(monkeypatch, "drop_add_zero")
    x = fc.placeholder((3, 4), name="x")
    zero = np.float32(0.0)
    for y in (x + zero, zero + x, x - zero, fc.add(x, fc.const(np.zeros((3, 4), np.float32)))):
        (new,) = passes.rewrite([y])
        assert new is x, y
        assert_same_values([x], y, new, [rand(3, 4)])
    # 0 - x is -x, and x + 1 is not an identity.
    for y in (zero - x, x + np.float32(1.0)):
        (new,) = passes.rewrite([y])
        assert new is y


def test_drop_add_zero_keeps_broadcasting(monkeypatch):
    only(monkeypatch, "drop_add_zero")
    x = fc.placeholder((3, 1), name="x")
    zeros = fc.const(np.zeros((3, 4), np.float32))
    for y in (x + zeros, zeros + x, x - zeros):
        assert y.shape == (3, 4)
        (new,) = passes.rewrite([y])
        assert new is y
        assert_same_values([x], y, new, [rand(3, 1)])


def test_drop_mul_one(monkeypatch):
    only(monkeypatch, "drop_mul_one")
    x = fc.placeholder((3, 4), name="x")
    one = np.float32(1.0)
    for y in (x * one, one * x, x / one, fc.mul(x, fc.const(np.ones((1, 4), np.float32)))):
        (new,) = passes.rewrite([y])
        assert new is x, y
        assert_same_values([x], y, new, [rand(3, 4)])
    for y in (one / x, x * np.float32(2.0)):
        (new,) = passes.rewrite([y])
        assert new is y


def test_drop_mul_one_keeps_broadcasting(monkeypatch):
    only(monkeypatch, "drop_mul_one")
    x = fc.placeholder((1, 4), name="x")
    ones = fc.const(np.ones((3, 1), np.float32))
    for y in (x * ones, ones * x, x / ones):
        assert y.shape == (3, 4)
        (new,) = passes.rewrite([y])
        assert new is y
        assert_same_values([x], y, new, [rand(1, 4)])


def test_drop_noop(monkeypatch):
    only(monkeypatch, "drop_noop")
    x = fc.placeholder((2, 3), name="x")
    noops = [
        apply("reshape", x, shape=(2, 3)),
        apply("broadcast_to", x, shape=(2, 3)),
        apply("permute", x, axes=(0, 1)),
        fc.cast(x, np.float32),
        fc.stop_gradient(x),
    ]
    for y in noops:
        (new,) = passes.rewrite([fc.exp(y)])
        assert new.op == "exp" and new.inputs[0] is x, y
        assert_same_values([x], fc.exp(y), new, [rand(2, 3)])
    # Ops that do change something stay.
    real = [
        apply("reshape", x, shape=(3, 2)),
        apply("broadcast_to", x, shape=(4, 2, 3)),
        apply("permute", x, axes=(1, 0)),
        fc.cast(x, np.float64),
    ]
    for y in real:
        (new,) = passes.rewrite([y])
        assert new is y


def test_merge_reshapes(monkeypatch):
    only(monkeypatch, "merge_reshapes")
    x = fc.placeholder((2, 6), name="x")
    y = fc.reshape(fc.reshape(fc.reshape(x, (12,)), (6, 2)), (3, 4))
    (new,) = passes.rewrite([y])
    assert ops_of(new) == ["placeholder", "reshape"]
    assert new.shape == (3, 4) and new.inputs[0] is x
    assert_same_values([x], y, new, [rand(2, 6)])


def test_merge_permutes(monkeypatch):
    only(monkeypatch, "merge_permutes")
    x = fc.placeholder((2, 3, 4), name="x")
    p, q = (1, 2, 0), (0, 2, 1)
    y = fc.permute(fc.permute(x, p), q)
    (new,) = passes.rewrite([y])
    assert ops_of(new) == ["placeholder", "permute"]
    assert new.attr["axes"] == (1, 0, 2)
    xv = rand(2, 3, 4)
    np.testing.assert_array_equal(evaluate([x], [new], [xv])[0], xv.transpose(p).transpose(q))
    assert_same_values([x], y, new, [xv])


def test_drop_double_neg(monkeypatch):
    only(monkeypatch, "drop_double_neg")
    x = fc.placeholder((5,), name="x")
    y = fc.exp(fc.neg(fc.neg(x)))
    (new,) = passes.rewrite([y])
    assert ops_of(new) == ["placeholder", "exp"]
    assert_same_values([x], y, new, [rand(5)])
    (odd,) = passes.rewrite([fc.neg(fc.neg(fc.neg(x)))])
    assert ops_of(odd) == ["placeholder", "neg"]


def test_drop_zero_product(monkeypatch):
    only(monkeypatch, "drop_zero_product")
    x = fc.placeholder((3, 4), name="x")
    zeros_left = fc.const(np.zeros((2, 3), np.float32))
    zeros_right = fc.const(np.zeros((4, 5), np.float32))
    for y in (zeros_left @ x, x @ zeros_right):
        (new,) = passes.rewrite([y])
        assert "matmul" not in ops_of(new) and new.shape == y.shape and new.dtype == y.dtype
        assert_same_values([x], y, new, [rand(3, 4)])
    # a non-zero constant is a product like any other
    y = fc.const(np.ones((2, 3), np.float32)) @ x
    (new,) = passes.rewrite([y])
    assert new is y


REWRITE_TESTS = {
    "drop_zero_product": test_drop_zero_product,
    "fold_constants": test_fold_constants,
    "drop_add_zero": test_drop_add_zero,
    "drop_mul_one": test_drop_mul_one,
    "drop_noop": test_drop_noop,
    "merge_reshapes": test_merge_reshapes,
    "merge_permutes": test_merge_permutes,
    "drop_double_neg": test_drop_double_neg,
}


def test_every_rewrite_has_a_test():
    registered = [r.name for r in passes.REWRITES]
    assert len(registered) == len(set(registered)), "two rewrites share a name"
    untested = sorted(set(registered) - set(REWRITE_TESTS))
    assert not untested, f"rewrites without a test in REWRITE_TESTS: {untested}"
    stale = sorted(set(REWRITE_TESTS) - set(registered))
    assert not stale, f"REWRITE_TESTS names rewrites that are not registered: {stale}"
    for name, test in REWRITE_TESTS.items():
        assert globals()[test.__name__] is test, name


# ---------------------------------------------------------------------------------------
# the whole pipeline
# ---------------------------------------------------------------------------------------


def test_optimize_keeps_values_of_a_gradient_graph():
    x = fc.placeholder((8, 5), name="x")
    y = fc.placeholder((8,), np.int64, name="y")
    w = fc.shared(rand(5, 3), name="w")
    b = fc.shared(np.zeros(3, np.float32), name="b")
    loss = fc.softmax_cross_entropy(x @ w + b, y)
    gw, gb = fc.grad(loss, [w, b])
    outs = [loss, gw, gb]
    feed = [rand(8, 5), RNG.integers(0, 3, size=8)]
    raw = build_plan([x, y], outs, [], optimize_graph=False)
    opt = build_plan([x, y], outs, [])
    assert len(opt.steps) < len(raw.steps)
    backend = get_backend("reference")
    want, _ = backend.run(raw, backend.prepare(raw), feed)
    got, _ = backend.run(opt, backend.prepare(opt), feed)
    for g, e in zip(got, want, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------
# CSE
# ---------------------------------------------------------------------------------------


def count_ops(plan, op: str) -> int:
    return sum(1 for st in plan.steps if st.op == op)


def test_cse_merges_identical_subexpressions():
    x = fc.placeholder((4,), name="x")
    a, b = fc.exp(x), fc.exp(x)
    assert a is not b
    y = fc.tanh(a) * fc.tanh(b)
    assert len(toposort([y])) == 6
    (merged,) = passes.cse([y])
    assert merged.inputs[0] is merged.inputs[1]
    assert len(toposort([merged])) == 4  # x, exp, tanh, mul
    f = fc.function([x], y, backend="reference")
    assert count_ops(f.plan, "exp") == 1 and count_ops(f.plan, "tanh") == 1
    xv = rand(4)
    np.testing.assert_allclose(f(xv), np.tanh(np.exp(xv)) ** 2, rtol=1e-6)


def test_cse_never_merges_distinct_placeholders():
    x1 = fc.placeholder((4,), name="x1")
    x2 = fc.placeholder((4,), name="x2")
    (y,) = passes.cse([fc.exp(x1) + fc.exp(x2)])
    assert y.inputs[0] is not y.inputs[1]
    f = fc.function([x1, x2], fc.exp(x1) + fc.exp(x2), backend="reference")
    assert count_ops(f.plan, "exp") == 2
    a, b = rand(4), rand(4)
    np.testing.assert_allclose(f(a, b), np.exp(a) + np.exp(b), rtol=1e-6)


def test_cse_never_merges_distinct_shared_variables():
    w1 = fc.shared(np.ones(3, np.float32), name="w1")
    w2 = fc.shared(np.ones(3, np.float32), name="w2")  # same value, different variable
    f = fc.function([], fc.exp(w1) + fc.exp(w2), backend="reference")
    assert count_ops(f.plan, "exp") == 2 and len(f.plan.shared) == 2
    w2.set_value(np.zeros(3, np.float32))
    np.testing.assert_allclose(f(), np.e + 1.0, rtol=1e-6)


def test_cse_merges_equal_constants():
    x = fc.placeholder((4,), name="x")
    two_a = fc.const(np.float32(2.0))
    two_b = fc.const(np.float32(2.0))
    y = fc.exp(x * two_a) + fc.exp(x * two_b)
    f = fc.function([x], y, backend="reference")
    assert len(f.plan.consts) == 1
    assert count_ops(f.plan, "mul") == 1 and count_ops(f.plan, "exp") == 1
    xv = rand(4)
    np.testing.assert_allclose(f(xv), 2 * np.exp(2 * xv), rtol=1e-6)


def test_cse_keeps_constants_that_differ_in_dtype_or_shape():
    a = fc.const(np.float32(2.0))
    b = fc.const(np.float64(2.0))
    c = fc.const(np.full((1,), 2.0, np.float32))
    roots = passes.cse([a, b, c, fc.const(np.float32(2.0))])
    assert roots[0] is not roots[1] and roots[0] is not roots[2]
    assert roots[3] is roots[0]


def test_cse_keeps_nodes_with_different_attributes():
    x = fc.placeholder((3, 4), name="x")
    y = fc.sum(fc.sum(x, axis=0)) + fc.sum(fc.sum(x, axis=1))
    f = fc.function([x], y, backend="reference")
    assert count_ops(f.plan, "sum") == 4
    xv = rand(3, 4)
    np.testing.assert_allclose(f(xv), 2 * xv.sum(), rtol=1e-5)


def test_cse_treats_list_attributes_like_tuples():
    # Attributes are hashed into CSE keys; a list given to `apply` must neither crash the pass
    # nor keep two equal nodes apart.
    x = fc.placeholder((2, 3), name="x")
    a = apply("reshape", x, shape=[3, 2])
    b = apply("reshape", x, shape=(3, 2))
    assert a.attr["shape"] == (3, 2)
    f = fc.function([x], fc.exp(a) + fc.exp(b), backend="reference")
    assert count_ops(f.plan, "reshape") == 1 and count_ops(f.plan, "exp") == 1
    xv = rand(2, 3)
    np.testing.assert_allclose(f(xv), 2 * np.exp(xv.reshape(3, 2)), rtol=1e-6)


# ---------------------------------------------------------------------------------------
# DCE
# ---------------------------------------------------------------------------------------


def test_dce_plans_only_what_the_outputs_need():
    x = fc.placeholder((16, 32), name="x")
    w_big = fc.shared(rand(32, 512), name="w_big")
    unused = fc.sum(fc.tanh(x @ w_big) @ fc.permute(w_big, (1, 0)))  # expensive, never read
    used = fc.sum(fc.sigmoid(x))
    f = fc.function([x], used, backend="reference")
    planned = {st.op for st in f.plan.steps}
    assert planned == {"sigmoid", "sum"}
    assert not {"matmul", "tanh", "permute"} & planned
    assert all(sv is not w_big for _, sv in f.plan.shared)
    graph_ids = {id(v) for v in f.plan.graph}
    assert id(unused) not in graph_ids and id(w_big) not in graph_ids
    xv = rand(16, 32)
    np.testing.assert_allclose(f(xv), (1 / (1 + np.exp(-xv))).sum(), rtol=1e-5)


def test_dce_orders_inputs_first_and_drops_unreachable():
    x = fc.placeholder((3,), name="x")
    dead = fc.exp(x)
    y = fc.tanh(x)
    order = passes.dce([y])
    assert order == [x, y]
    assert dead not in order
