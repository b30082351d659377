"""The graph rebuilding every lowering pass ends with (fusion._substitute)."""

import pytest

from flexcore.ir import FlexcoreError, placeholder
from flexcore.ir import api
from flexcore.passes.fusion import _substitute


def test_untouched_graph_keeps_its_vars():
    x, y = placeholder((3, 4), name="x"), placeholder((3, 4), name="y")
    u, w = api.exp(x), api.exp(y)
    out = _substitute([u, w], {id(placeholder((1,))): x})
    assert out[0] is u and out[1] is w


def test_replacement_is_read_through_and_duplicates_merge():
    x, y = placeholder((3, 4), name="x"), placeholder((3, 4), name="y")
    u, w = api.exp(x), api.exp(y)
    s = u + w
    new_s, new_w = _substitute([s, w], {id(y): x})
    # exp(y) with y -> x is exp(x): one Var for both terms and the second root
    assert new_w.op == "exp" and new_w.inputs[0] is x
    assert new_s.op == "add" and new_s.inputs[0] is new_w and new_s.inputs[1] is new_w


def test_chained_replacements():
    x, y, z = (placeholder((2,), name=n) for n in "xyz")
    t = api.tanh(z)
    (out,) = _substitute([t], {id(z): api.exp(y), id(y): x})
    assert out.op == "tanh" and out.inputs[0].op == "exp" and out.inputs[0].inputs[0] is x


def test_a_cycle_is_reported():
    x = placeholder((2,), name="x")
    b = x + x
    c = api.exp(b)
    with pytest.raises(FlexcoreError, match="cycle"):
        _substitute([c], {id(x): c})
    with pytest.raises(FlexcoreError, match="cycle"):
        _substitute([b], {id(b): b})


def test_deep_chain_needs_no_recursion():
    x = placeholder((2,), name="x")
    v = x
    for _ in range(20000):
        v = api.exp(v)
    y = placeholder((2,), name="y")
    (out,) = _substitute([v], {id(x): y})
    n = 0
    while out.op == "exp":
        out, n = out.inputs[0], n + 1
    assert n == 20000 and out is y
