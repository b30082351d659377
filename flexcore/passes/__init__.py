"""Graph passes: small registered rewrites applied before a graph is planned.

A rewrite is a function `(var) -> Var | None` registered for some ops and a phase; it returns a
replacement with the same shape and dtype, or None.  `rewrite()` rebuilds the graph bottom-up
(Vars are immutable), so a pass never edits a graph in place.  Whole-graph passes (CSE, DCE)
are plain functions over the roots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from ..ir.core import REGISTRY, FlexcoreError, Var, apply, const, const_value, toposort, var_like

__all__ = [
    "register_rewrite",
    "rewrite",
    "rebuild",
    "cse",
    "dce",
    "optimize",
    "REWRITES",
    "PHASES",
    "FUSION_PASSES",
    "LOWERING_PASSES",
    "lowering_pipeline",
]

PHASES = ("fold", "simplify")


@dataclass(frozen=True)
class Rewrite:
    name: str
    ops: tuple[str, ...] | None  # None: every op
    phase: str
    fn: Callable[[Var], Var | None]


REWRITES: list[Rewrite] = []


def register_rewrite(*ops: str, phase: str = "simplify"):
    """Register `fn(var) -> Var | None` for the given ops (none given: every op)."""
    if phase not in PHASES:
        raise FlexcoreError(f"unknown phase '{phase}'; valid: {', '.join(PHASES)}")

    def deco(fn):
        REWRITES.append(Rewrite(fn.__name__, tuple(ops) or None, phase, fn))
        return fn

    return deco


def _rules(phases: Iterable[str]) -> dict[str | None, list[Rewrite]]:
    table: dict[str | None, list[Rewrite]] = {}
    for r in REWRITES:
        if r.phase in phases:
            for op in r.ops or (None,):
                table.setdefault(op, []).append(r)
    return table


def rebuild(v: Var, inputs: Sequence[Var]) -> Var:
    """v over new inputs.  When they have the shapes and dtypes of the old ones, the result's
    shape and dtype are v's (an op's shape rule reads nothing else), so the rule is not run
    again: rebuilding whole graphs is most of what passes do."""
    same = fits = True
    for a, b in zip(inputs, v.inputs):  # plain loops: this runs for most nodes of every pass
        if a is not b:
            same = False
            if a.shape != b.shape or a.dtype != b.dtype:
                fits = False
                break
    if same:
        return v
    if fits:
        return var_like(v, inputs)
    return v.replace(inputs)


def rewrite(roots: Sequence[Var], phases: Iterable[str] = PHASES, max_iter: int = 32) -> list[Var]:
    """Apply the registered rewrites of `phases` bottom-up until none fires; new roots."""
    table = _rules(tuple(phases))
    generic = table.get(None, [])
    # The rules to try on each op, op-specific ones first, joined once per op (not per node).
    rules_of: dict[str, list[Rewrite]] = {}
    memo: dict[Var, Var] = {}
    for v in toposort(roots):
        nv = rebuild(v, [memo[x] for x in v.inputs])
        for _ in range(max_iter):
            rules = rules_of.get(nv.op)
            if rules is None:
                rules = rules_of[nv.op] = table.get(nv.op, []) + generic
            for r in rules:
                out = r.fn(nv)
                if out is not None and out is not nv:
                    if out.shape != nv.shape or out.dtype != nv.dtype:
                        raise FlexcoreError(
                            f"internal: rewrite '{r.name}' changed {nv.op} from {nv.shape} {nv.dtype} "
                            f"to {out.shape} {out.dtype}"
                        )
                    nv = out
                    break
            else:
                break
        memo[v] = nv
    return [memo[r] for r in roots]


def cse(roots: Sequence[Var]) -> list[Var]:
    """Common-subexpression elimination: one Var for each distinct (op, inputs, attrs)."""
    # Keyed by the Vars themselves (identity hash and equality): no id() call per edge.
    canon: dict[Var, Var] = {}
    seen: dict[tuple, Var] = {}
    for v in toposort(roots):
        ins = tuple([canon[x] for x in v.inputs])
        key = (v.op, ins, v.attrs)
        hit = seen.get(key)
        if hit is None:
            hit = rebuild(v, ins)
            seen[key] = hit
        canon[v] = hit
    return [canon[r] for r in roots]


def dce(roots: Sequence[Var]) -> list[Var]:
    """Dead-code elimination: the nodes that the roots need, each after its inputs.  Anything
    else the user built (an unused branch, a layer the loss never reads) is not planned."""
    return toposort(roots)


def optimize(roots: Sequence[Var]) -> list[Var]:
    """The standard pipeline: fold constants and simplify, then merge common subexpressions."""
    return cse(rewrite(cse(list(roots))))


# ---------------------------------------------------------------------------------------
# rewrites
# ---------------------------------------------------------------------------------------
_FOLD_LIMIT = 1 << 16  # elements; larger results stay as ops rather than bloating the graph


@register_rewrite(phase="fold")
def fold_constants(v: Var) -> Var | None:
    """An op whose inputs are all constants becomes a constant (computed by the reference)."""
    # The cheap test first: this runs on every node of every graph.
    if v.is_leaf or not v.inputs or not all(x.op == "const" for x in v.inputs):
        return None
    if v.op == "random_uniform" or v.size > _FOLD_LIMIT:
        return None
    od = REGISTRY[v.op]
    try:
        value = od.impl(*[const_value(x) for x in v.inputs], **v.attr)
    except (ValueError, IndexError, FloatingPointError):
        # Leave a failing op (an index out of range) in the graph: the backend reports it when
        # the function runs, naming the node, instead of a bare error from inside a pass.
        return None
    return const(np.asarray(value, dtype=v.dtype).reshape(v.shape), name=v.name)


def _is_const(v: Var, value: float) -> bool:
    return v.op == "const" and bool(np.all(const_value(v) == value))


@register_rewrite("add", "sub")
def drop_add_zero(v: Var) -> Var | None:
    """x + 0 and x - 0 -> x (0 + x too), when no broadcasting is lost."""
    a, b = v.inputs
    if _is_const(b, 0) and a.shape == v.shape:
        return a
    if v.op == "add" and _is_const(a, 0) and b.shape == v.shape:
        return b
    return None


@register_rewrite("matmul")
def drop_zero_product(v: Var) -> Var | None:
    """0 @ x and x @ 0 -> zeros: a recurrent connection reading the zero initial state at t = 0
    (and its weight gradient's term at that step) costs no GEMM."""
    a, b = v.inputs
    if _is_const(a, 0) or _is_const(b, 0):
        return apply("broadcast_to", const(np.zeros((), v.dtype)), shape=v.shape, name=v.name)
    return None


@register_rewrite("mul", "div")
def drop_mul_one(v: Var) -> Var | None:
    """x * 1 and x / 1 -> x (1 * x too), when no broadcasting is lost."""
    a, b = v.inputs
    if _is_const(b, 1) and a.shape == v.shape:
        return a
    if v.op == "mul" and _is_const(a, 1) and b.shape == v.shape:
        return b
    return None


@register_rewrite("reshape", "broadcast_to", "permute", "cast", "stop_gradient", "clip_gradient")
def drop_noop(v: Var) -> Var | None:
    """Movement ops that change nothing, casts to the same dtype, and stop_gradient and
    clip_gradient (which only matter while differentiating) disappear."""
    x = v.inputs[0]
    if v.op == "permute":
        return x if tuple(v.attr["axes"]) == tuple(range(x.ndim)) else None
    if v.op in ("stop_gradient", "clip_gradient"):
        return x
    return x if x.shape == v.shape and x.dtype == v.dtype else None


@register_rewrite("reshape")
def merge_reshapes(v: Var) -> Var | None:
    """reshape(reshape(x)) -> reshape(x)."""
    x = v.inputs[0]
    if x.op == "reshape":
        return apply("reshape", x.inputs[0], shape=v.shape, name=v.name)
    return None


@register_rewrite("permute")
def merge_permutes(v: Var) -> Var | None:
    """permute(permute(x, p), q) -> permute(x, p[q])."""
    x = v.inputs[0]
    if x.op == "permute":
        p, q = x.attr["axes"], v.attr["axes"]
        axes = tuple(p[i] for i in q)
        return apply("permute", x.inputs[0], axes=axes, name=v.name)
    return None


@register_rewrite("neg")
def drop_double_neg(v: Var) -> Var | None:
    """-(-x) -> x."""
    x = v.inputs[0]
    return x.inputs[0] if x.op == "neg" else None


# The lowering passes (fusion) import the helpers above.
from .fusion import FUSION_PASSES, LOWERING_PASSES, lowering_pipeline  # noqa: E402
