"""Reverse-mode automatic differentiation over the IR.

`grad` walks the graph backwards once, calling each primitive's `vjp`, and returns IR: the
backward graph is optimised and run like any other, and can itself be differentiated.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..ir.core import (
    FLOAT_DTYPES,
    FlexcoreError,
    ShapeError,
    Var,
    apply,
    as_var,
    const,
    get_op,
    toposort,
)

__all__ = ["grad", "vjp", "hessian_vector_product"]


def vjp(outputs: Sequence[Var], cotangents: Sequence[Var], wrt: Sequence[Var], disconnected: str = "raise") -> list[Var]:
    """Vector-Jacobian products: sum_k cotangents[k] . d outputs[k] / d wrt[i], for each i."""
    if disconnected not in ("raise", "zero"):
        raise FlexcoreError("disconnected must be 'raise' or 'zero'")
    outputs, cotangents, wrt = list(outputs), list(cotangents), list(wrt)
    if len(outputs) != len(cotangents):
        raise FlexcoreError(
            f"vjp: {len(outputs)} output(s) need as many cotangents, got {len(cotangents)}"
        )
    # Arrays and numbers become constants here; left as they are they would meet Vars in the
    # gradient rules (ndarray * Var) and build object arrays.
    cotangents = [as_var(c, o) for o, c in zip(outputs, cotangents, strict=True)]
    for o, c in zip(outputs, cotangents):
        if o.shape != c.shape:
            raise ShapeError(f"grad: the gradient given for {o.label()} has shape {c.shape}, the output has {o.shape}")
        if o.dtype != c.dtype:
            raise ShapeError(
                f"grad: the gradient given for {o.label()} is {c.dtype}, the output is {o.dtype}"
            )
    for w in wrt:
        if not isinstance(w, Var):
            raise FlexcoreError(f"grad: wrt must be Vars, got {type(w).__name__}")
        if w.dtype not in FLOAT_DTYPES:
            raise FlexcoreError(f"grad: cannot differentiate with respect to {w.label()} of dtype {w.dtype}")

    order = toposort(outputs)
    # Only nodes on a path from some wrt to some output through differentiable ops need adjoints.
    wrt_ids = {id(w) for w in wrt}
    depends: set[int] = set()
    for v in order:
        if id(v) in wrt_ids or (
            not v.is_leaf and get_op(v.op).differentiable and any(id(x) in depends for x in v.inputs)
        ):
            depends.add(id(v))

    adj: dict[int, Var] = {}
    # Nodes the backward walk reaches, even when only through zero gradients (a vjp's None, as
    # step, sign and stop_gradient give): a wrt reached that way gets zeros, it is not disconnected.
    reached: set[int] = set()
    for o, c in zip(outputs, cotangents):
        if id(o) in depends:
            adj[id(o)] = adj[id(o)] + c if id(o) in adj else c
            reached.add(id(o))

    for v in reversed(order):
        if id(v) not in reached or v.is_leaf:
            continue
        od = get_op(v.op)
        if not od.differentiable:  # a wrt computed by such an op: nothing flows past it
            continue
        g = adj.get(id(v))
        if g is None:
            reached.update(id(x) for x in v.inputs if id(x) in depends and x.dtype in FLOAT_DTYPES)
            continue
        grads = od.vjp(g, v, *v.inputs, **v.attr)
        if len(grads) != len(v.inputs):
            raise FlexcoreError(f"internal: vjp of '{v.op}' returned {len(grads)} gradients for {len(v.inputs)} inputs")
        for x, gx in zip(v.inputs, grads):
            if id(x) not in depends or x.dtype not in FLOAT_DTYPES:
                continue
            reached.add(id(x))
            if gx is None:
                continue
            if gx.shape != x.shape or gx.dtype != x.dtype:
                raise FlexcoreError(
                    f"internal: vjp of '{v.op}' gave a gradient of {gx.shape} {gx.dtype} for an input of {x.shape} {x.dtype}"
                )
            adj[id(x)] = adj[id(x)] + gx if id(x) in adj else gx

    result = []
    for w in wrt:
        g = adj.get(id(w))
        if g is None:
            if disconnected == "raise" and id(w) not in reached:
                raise FlexcoreError(
                    f"grad: the cost does not depend on {w.label()} (shape {w.shape}), or only through ops "
                    "that are not differentiable; "
                    "pass disconnected='zero' to get zeros instead"
                )
            g = apply("broadcast_to", apply("cast", 0.0, dtype=w.dtype.str), shape=w.shape)
        result.append(g)
    return result


def grad(cost: Var, wrt: Var | Sequence[Var], disconnected: str = "raise"):
    """d cost / d wrt as IR.  `cost` must be a scalar; `wrt` a Var or a list of Vars (a list
    in, a list out).  `disconnected='zero'` returns zeros for Vars the cost does not reach."""
    if not isinstance(cost, Var) or cost.shape != ():
        raise ShapeError(
            f"grad: the cost must be a scalar Var, got shape {getattr(cost, 'shape', type(cost).__name__)}; "
            "reduce it (sum or mean) first, or use vjp"
        )
    if cost.dtype not in FLOAT_DTYPES:
        raise FlexcoreError(f"grad: the cost must be float32 or float64, got {cost.dtype}")
    single = isinstance(wrt, Var)
    seeds = [apply("cast", 1.0, dtype=cost.dtype.str)]
    gs = vjp([cost], seeds, [wrt] if single else list(wrt), disconnected)
    return gs[0] if single else gs


def hessian_vector_product(cost: Var, wrt: Sequence[Var], vectors: Sequence[Var]) -> list[Var]:
    """H v for the Hessian of `cost` with respect to `wrt`: the gradient of <grad, v>."""
    wrt, vectors = list(wrt), list(vectors)
    if len(vectors) != len(wrt):
        raise FlexcoreError(
            f"hessian_vector_product: {len(wrt)} wrt Var(s) need as many vectors, "
            f"got {len(vectors)}"
        )
    # Arrays become constants (an ndarray times a Var would build an object array), and a vector
    # must match its Var exactly: broadcasting it would silently compute another product.
    vectors = [
        v if isinstance(v, Var) else const(np.asarray(v, dtype=w.dtype))
        for w, v in zip(wrt, vectors, strict=True)
    ]
    for w, v in zip(wrt, vectors, strict=True):
        if v.shape != w.shape or v.dtype != w.dtype:
            raise ShapeError(
                f"hessian_vector_product: the vector for {w.label()} is {v.shape} {v.dtype}, "
                f"the Var has {w.shape} {w.dtype}"
            )
    gs = grad(cost, wrt)
    dot = None
    for g, v in zip(gs, vectors):
        term = apply("sum", g * v, axes=None, keepdims=False)
        dot = term if dot is None else dot + term
    return grad(dot, list(wrt), disconnected="zero")
