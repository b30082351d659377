"""Lowering passes: how the connection abstraction stays fast.

They run after autodiff and `optimize()`, on the graph a backend is about to plan, and rewrite
it into fewer, larger kernels (the ops of flexcore.ir.fused).  Each is a whole-graph function
`roots -> roots`; `FUSION_PASSES` is the order they expect (each leaves the forms the next one
looks for):

1. `batch_over_time`  matrix products with the same right operand B whose left operands do not
   depend on one another's results (an input projection x[t] @ W at every step) become one GEMM
   on the stacked left operands, followed by row slices; and a sum of matrix products
   sum_t A_t @ B_t (a weight gradient sum_t x[t]^T @ g[t]) becomes one GEMM
   concat_t(A_t, axis=1) @ concat_t(B_t, axis=0).
2. `fuse_horizontal`  products with the same left operand A (the four LSTM gate projections of
   h[t-1]) become A @ concat(B_1..B_k, axis=1), followed by column slices; sums of products (dh
   = sum_k g_k @ W_k^T) become one GEMM as above.
3. `absorb_transposes` every matrix product becomes `gemm`, reading a transposed operand in place.
4. `fuse_dense`       gemm + bias row + activation becomes `dense`.
5. `fuse_elementwise` trees of elementwise ops whose intermediate results have no other reader
   become one `fused_ew` program (the kernel fc_fused_ew runs).

Grouping products must not create a cycle: a group is fused only when no operand it concatenates
can be reached from a result of the group.  `_Deps` answers that in time proportional to the
part of the graph below the operands, using levels (the longest path from a leaf) kept as a
strict potential: every edge, including the ones fused groups add, goes up a level.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ..ir.core import REGISTRY, FlexcoreError, Var, apply, const, const_value, toposort
from ..ir.fused import MAX_INPUTS, MAX_INSTRUCTIONS, EwCode, input_mode
from . import rebuild  # defined before flexcore.passes imports this module

__all__ = [
    "FUSION_PASSES",
    "LOWERING_PASSES",
    "absorb_transposes",
    "batch_over_time",
    "fuse_dense",
    "fuse_elementwise",
    "fuse_horizontal",
    "lowering_pipeline",
]

Pass = Callable[[Sequence[Var]], list[Var]]


# ---------------------------------------------------------------------------------------
# graph helpers
# ---------------------------------------------------------------------------------------
class _Graph:
    """Readers and topological positions of the graph under `roots`."""

    def __init__(self, roots: Sequence[Var]):
        self.roots = list(roots)
        self.order = toposort(self.roots)
        pos: dict[int, int] = {}
        users: dict[int, list[Var]] = {}
        for i, v in enumerate(self.order):  # locals: this runs over the whole graph per pass
            vid = id(v)
            pos[vid] = i
            users[vid] = []
            for x in v.inputs:
                us = users[id(x)]
                if not us or us[-1] is not v:  # v's appends are consecutive: one entry per reader
                    us.append(v)
        self.pos = pos
        self.users = users
        self.root_ids = {id(r) for r in self.roots}

    def only_user(self, v: Var) -> Var | None:
        """The one node that reads v, when exactly one does and v is not a result."""
        us = self.users[id(v)]
        return us[0] if len(us) == 1 and id(v) not in self.root_ids else None


class _Deps:
    """Reachability in the graph plus the edges fused groups add (each member of a group then
    depends on every operand of the group)."""

    def __init__(self, g: _Graph):
        self.g = g
        level: dict[int, int] = {}
        for v in g.order:
            lv = 0
            for x in v.inputs:
                lx = level[id(x)]
                if lx >= lv:
                    lv = lx + 1
            level[id(v)] = lv
        self.level = level
        self.extra: dict[int, list[Var]] = {}

    def _succ(self, v: Var) -> list[Var]:
        more = self.extra.get(id(v))
        return self.g.users[id(v)] + more if more else self.g.users[id(v)]

    def reaches(self, sources: Sequence[Var], targets: Sequence[Var]) -> bool:
        """Whether some target can be reached from some source (a path of length 0 counts)."""
        tid = {id(t) for t in targets}
        top = max(self.level[id(t)] for t in targets)
        stack = list(sources)
        seen = {id(s) for s in stack}
        while stack:
            v = stack.pop()
            if id(v) in tid:
                return True
            for u in self._succ(v):
                # Levels rise along every edge: nothing above the highest target leads to one.
                if id(u) not in seen and self.level[id(u)] <= top:
                    seen.add(id(u))
                    stack.append(u)
        return False

    def join(self, operands: Sequence[Var], members: Sequence[Var]) -> None:
        """Record that `members` now depend on all of `operands`, raising levels to keep the
        potential strict."""
        top = max(self.level[id(o)] for o in operands)
        for o in operands:
            self.extra.setdefault(id(o), []).extend(members)
        stack = []
        for m in members:
            if self.level[id(m)] <= top:
                self.level[id(m)] = top + 1
                stack.append(m)
        while stack:
            v = stack.pop()
            lv = self.level[id(v)] + 1
            for u in self._succ(v):
                if self.level[id(u)] < lv:
                    self.level[id(u)] = lv
                    stack.append(u)

    def independent(self, members: list[Var], operands_of: Callable[[Var], Sequence[Var]]) -> list[Var]:
        """The members that can be fused into one group: all of them when no operand of any is
        reachable from any member, else the largest subset separated by a level (every
        operand below it, every member at or above it)."""
        lv = self.level
        op_top = {id(m): max(lv[id(o)] for o in operands_of(m)) for m in members}
        if max(op_top.values()) < min(lv[id(m)] for m in members):
            return members
        operands = [o for m in members for o in operands_of(m)]
        if not self.reaches(members, operands):
            return members
        # Sweep the threshold L: member m fits when op_top(m) < L <= level(m).
        events = sorted([(op_top[id(m)] + 1, 1) for m in members] + [(lv[id(m)] + 1, -1) for m in members])
        best, best_at, count = 0, None, 0
        for at, delta in events:
            count += delta
            if count > best:
                best, best_at = count, at
        if best_at is None:
            return []
        return [m for m in members if op_top[id(m)] < best_at <= lv[id(m)]]


def _merge_slices(v: Var) -> Var:
    """slice(slice(x)) -> slice(x): a time step's block of one gate's block of a GEMM result
    (time batching, then horizontal fusion) becomes one block of the GEMM result."""
    if v.op != "slice" or v.inputs[0].op != "slice":
        return v
    inner, outer = v.inputs[0].attr, v.attr
    starts, stops, steps = [], [], []
    ranges = zip(
        inner["starts"],
        inner["steps"],
        outer["starts"],
        outer["stops"],
        outer["steps"],
        strict=True,
    )
    for a1, s1, a2, b2, s2 in ranges:
        n = len(range(a2, b2, s2))
        start, step = a1 + a2 * s1, s1 * s2
        starts.append(start)
        stops.append(start + (n - 1) * step + 1 if n else start)
        steps.append(step)
    x = v.inputs[0].inputs[0]
    return apply("slice", x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps), name=v.name)


def _substitute(roots: Sequence[Var], subst: dict[int, Var]) -> list[Var]:
    """The graph under `roots` with each Var whose id is in `subst` replaced by its entry (which
    may itself read replaced Vars), rebuilt bottom-up with common subexpressions merged (the
    weight joins a pass makes at every step become one)."""
    # A depth-first walk over the graph as substituted (a replaced Var's one "input" is its
    # replacement), inputs taken last to first, each Var finished after them.  memo and `active`
    # (the Vars on the current path) hold Vars themselves, which hash by identity: no id() call
    # per edge on graphs of ~10^5 nodes.
    memo: dict[Var, Var] = {}
    seen: dict[tuple, Var] = {}
    active: set[Var] = set()
    new_of = subst.get
    for root in roots:
        if root in memo:
            continue
        new = new_of(id(root))
        active.add(root)
        stack = [(root, new, reversed((new,) if new is not None else root.inputs))]
        push, pop = stack.append, stack.pop
        while stack:
            v, new, it = stack[-1]
            for x in it:
                if x not in memo:
                    if x in active:  # x reads v, and v reads x
                        raise FlexcoreError(f"internal: a lowering pass made a cycle through {x.label()}")
                    active.add(x)
                    nx = new_of(id(x))
                    push((x, nx, reversed((nx,) if nx is not None else x.inputs)))
                    break
            else:
                pop()
                active.discard(v)
                if new is not None:
                    memo[v] = memo[new]
                    continue
                ins = [memo[x] for x in v.inputs]
                key = (v.op, tuple(map(id, ins)), v.attrs)
                hit = seen.get(key)
                if hit is None:
                    hit = seen[key] = _merge_slices(rebuild(v, ins))
                memo[v] = hit
    return [memo[r] for r in roots]


def _finish(roots: Sequence[Var], subst: dict[int, Var]) -> list[Var]:
    return _substitute(roots, subst) if subst else list(roots)


# ---------------------------------------------------------------------------------------
# matrix products
# ---------------------------------------------------------------------------------------
def _is_swap(v: Var) -> bool:
    return v.op == "permute" and v.ndim == 2 and tuple(v.attr["axes"]) == (1, 0)


def _is_product(v: Var) -> bool:
    """A matmul of two matrices (batched matmuls are left alone)."""
    return v.op == "matmul" and v.inputs[0].ndim == 2 and v.inputs[1].ndim == 2


def _base(v: Var) -> Var:
    """v, or what v transposes."""
    return v.inputs[0] if _is_swap(v) else v


# _right_order: joins of right operands (the weights a group of h @ W_k reads, the gradients
# g[t] a weight gradient sums over) run against graph order, joins of left operands (x[t]) with
# it.  The backward pass makes the gradients of later steps first (each g[t] needs g[t+1]), so
# either way a join over time is in time order, and the stacked inputs x[t] and the gradients
# g[t] of one weight gradient line up; the weights only need one order, the same in the forward
# group and in the backward sum over gates (which then read one joined weight).


def _anchor(g: _Graph, v: Var) -> tuple[int, int]:
    """Where an operand sits in the graph, for ordering the operands a group joins: the
    position of what it transposes, or of its first piece when it is a join itself, so that
    operands made of the same Vars order alike (and their joins are shared).  Steps of a
    sequence input order by time, so their join is one permute (see _time_major)."""
    while True:
        v = _base(v)
        if v.op != "concat":
            break
        v = v.inputs[0]
    step = _step_of(v)
    if step is not None:
        return g.pos.get(id(step[0]), -1), step[1]
    return g.pos.get(id(v), -1), 0


def _swap(v: Var) -> Var:
    return apply("permute", v, axes=(1, 0))


def _step_of(v: Var) -> tuple[Var, int] | None:
    """(P, t) when v is P[:, t] of a 3-d P (a sequence input read at step t), else None."""
    if v.op != "reshape" or v.ndim != 2 or v.inputs[0].op != "slice":
        return None
    sl = v.inputs[0]
    p = sl.inputs[0]
    if p.ndim != 3 or v.shape != (p.shape[0], p.shape[2]):
        return None
    a = sl.attr
    t = a["starts"][1]
    if tuple(a["starts"]) != (0, t, 0) or tuple(a["stops"]) != (p.shape[0], t + 1, p.shape[2]):
        return None
    return p, t


def _time_major(vs: Sequence[Var]) -> Var | None:
    """concat_t(P[:, t], axis=0) for consecutive t as one permute of P (B, T, F) to (T, B, F):
    one copy instead of a slice per step."""
    steps = [_step_of(v) for v in vs]
    if any(s is None for s in steps):
        return None
    p, t0 = steps[0]
    if any(q is not p or t != t0 + i for i, (q, t) in enumerate(steps)):
        return None
    n = len(steps)
    if n != p.shape[1]:
        p = apply("slice", p, starts=(0, t0, 0), stops=(p.shape[0], t0 + n, p.shape[2]), steps=(1, 1, 1))
    return apply("reshape", apply("permute", p, axes=(1, 0, 2)), shape=(n * p.shape[0], p.shape[2]))


_TRANSPOSED: weakref.WeakKeyDictionary[Var, Var] = weakref.WeakKeyDictionary()


def _transposed(c: Var) -> Var:
    """The constant c transposed, one Var per c: CSE tells large constants apart by identity
    only, and the sums of every weight gradient must join the same Vars to share the join."""
    t = _TRANSPOSED.get(c)
    if t is None:
        t = _TRANSPOSED[c] = const(const_value(c).T)
    return t


def _concat(vs: Sequence[Var], axis: int) -> Var:
    """Matrices joined along `axis`; transposes are concatenated below the transpose, so one
    transposed operand stays a transpose that gemm reads in place."""
    if len(vs) == 1:
        return vs[0]
    if axis == 0:
        tm = _time_major(vs)
        if tm is not None:
            return tm
    if all(_is_swap(v) or v.op == "const" for v in vs) and any(_is_swap(v) for v in vs):
        # A constant among them (a transposed zero initial state, folded) is transposed here.
        inner = [v.inputs[0] if _is_swap(v) else _transposed(v) for v in vs]
        return _swap(_concat(inner, 1 - axis))
    return apply("concat", *vs, axis=axis)


def _block(v: Var, axis: int, start: int, stop: int) -> Var:
    starts, stops = [0, 0], list(v.shape)
    starts[axis], stops[axis] = start, stop
    return apply("slice", v, starts=tuple(starts), stops=tuple(stops), steps=(1, 1))


def _split(v: Var, parts: Sequence[Var], axis: int, subst: dict[int, Var]) -> None:
    """Each of `parts` becomes its block of v along `axis`, in order."""
    start = 0
    for p in parts:
        stop = start + p.shape[axis]
        subst[id(p)] = _block(v, axis, start, stop)
        start = stop


def _is_plain_add(v: Var) -> bool:
    return v.op == "add" and v.dtype.kind == "f" and all(x.shape == v.shape for x in v.inputs)


def _sum_terms(g: _Graph, root: Var) -> list[Var]:
    """The terms of the tree of adds under `root` whose inner adds nothing else reads."""
    terms, stack = [], [root]
    while stack:
        v = stack.pop()
        for x in reversed(v.inputs):
            if _is_plain_add(x) and g.only_user(x) is v:
                stack.append(x)
            else:
                terms.append(x)
    return terms


def _sum_trees(g: _Graph) -> list[tuple[Var, list[Var]]]:
    """(root, terms) for each tree of adds, its terms in order; a term counted twice (x + x)
    appears twice."""
    out = []
    for v in g.order:
        if not _is_plain_add(v):
            continue
        parent = g.only_user(v)
        if parent is not None and _is_plain_add(parent):
            continue  # an inner add: its tree is handled from the top
        out.append((v, _sum_terms(g, v)))
    return out


def _only_terms(g: _Graph, terms: list[Var], pred: Callable[[Var], bool]) -> list[Var]:
    """The terms satisfying pred that only the tree reads (once)."""
    count: dict[int, int] = defaultdict(int)
    for t in terms:
        count[id(t)] += 1
    return [t for t in terms if count[id(t)] == 1 and g.only_user(t) is not None and pred(t)]


def _row_sum_of(g: _Graph, t: Var) -> Var | None:
    """X when t sums the rows of the matrix X (sum over axis 0, maybe reshaped: what sum_to
    makes of a bias gradient), read by nothing else; else None."""
    r = t
    if r.op == "reshape":
        r = r.inputs[0]
        if g.only_user(r) is not t:
            return None
    if r.op != "sum" or r.inputs[0].ndim != 2 or tuple(r.attr["axes"] or ()) != (0,):
        return None
    return r.inputs[0]


def _sum_order(g: _Graph, prods: list[Var]) -> list[Var]:
    """The order a sum of products joins its terms in (by the right operands, see _right_order)."""
    return sorted(prods, key=lambda m: (_anchor(g, m.inputs[1]), _anchor(g, m.inputs[0])), reverse=True)


def _piece_rank(v: Var, rank: dict[int, int]) -> int | None:
    """The rank of the first piece of a joined operand (below transposes and joins) that has one
    (the first step's gate gradients are in no per-step join: dh of the initial state is not
    needed)."""
    v = _base(v)
    if v.op != "concat":
        return rank.get(id(v))
    for x in v.inputs:
        r = _piece_rank(x, rank)
        if r is not None:
            return r
    return None


def _fuse_sum(g: _Graph, root: Var, terms: list[Var], prods: list[Var], reds: list[Var]) -> Var:
    """The tree of adds with its products as one product and its row sums as one row sum."""
    acc = None
    if len(prods) >= 2:
        # sum_j A_j @ B_j -> concat_j(A_j, axis=1) @ concat_j(B_j, axis=0): the inner dimension
        # runs over all the terms.  Ordered by the right operands (see _right_order): sums over
        # time then join the gradients g[t] in one order for every weight (one copy shared by
        # all), and sums over gates join the weights as the forward pass's group did.
        prods = _sum_order(g, prods)
        acc = apply(
            "matmul",
            _concat([m.inputs[0] for m in prods], 1),
            _concat([m.inputs[1] for m in prods], 0),
        )
    else:
        prods = []
    if len(reds) >= 2:
        # sum_t rowsum(X_t) -> rowsum(concat_t(X_t, axis=0)): a bias gradient in one reduction,
        # over the gradients the weight gradient joined already.
        xs = sorted((_row_sum_of(g, t) for t in reds), key=lambda x: _anchor(g, x), reverse=True)
        r = apply("sum", _concat(xs, 0), axes=(0,), keepdims=True)
        if r.shape != root.shape:
            r = apply("reshape", r, shape=root.shape)
        acc = r if acc is None else apply("add", acc, r)
    else:
        reds = []
    done = {id(t) for t in prods} | {id(t) for t in reds}
    for t in terms:
        if id(t) not in done:
            acc = apply("add", acc, t)
    return acc


def _group_products(g: _Graph, shared: int, row_sums: bool) -> dict[int, Var]:
    """The substitutions that group matrix products, `shared` naming the operand a group has in
    common (1: the right one, stacked along rows; 0: the left one, joined along columns), and
    that turn sums of products into one product (and, with `row_sums`, sums of row sums into
    one row sum).

    A product can be in a group and a sum at once (x[t] @ W + h[t-1] @ U, or the weight gradient
    terms x[t]^T @ g[t] and h[t-1]^T @ g[t], which share g[t]); it goes where it merges with more
    products: x[t] @ W with the other steps' x @ W, x[t]^T @ g[t] into the sum over all steps."""
    deps = _Deps(g)
    other = 1 - shared
    groups: dict[int, list[Var]] = defaultdict(list)
    for v in g.order:
        if _is_product(v):
            groups[id(v.inputs[shared])].append(v)
    group_size: dict[int, int] = {}
    for members in groups.values():
        if len(members) >= 2:
            n = len(deps.independent(members, lambda m: (m.inputs[other],)))
            group_size.update((id(m), n) for m in members)

    sums = []
    in_sum: set[int] = set()
    for root, terms in _sum_trees(g):
        prods = _only_terms(g, terms, _is_product)
        prods = [m for m in prods if group_size.get(id(m), 0) <= len(prods)]
        reds = _only_terms(g, terms, lambda t: _row_sum_of(g, t) is not None) if row_sums else []
        if len(reds) >= 2 and len({(_row_sum_of(g, t).shape[1], _row_sum_of(g, t).dtype) for t in reds}) != 1:
            reds = []
        if len(prods) >= 2 or len(reds) >= 2:
            sums.append((root, terms, prods, reds))
            if len(prods) >= 2:
                in_sum.update(id(m) for m in prods)

    # Where a sum joins its left operands (dh = sum_k g_k @ W_k^T joins one step's gate gradients
    # g_k, along columns), a group joining operands that start with those pieces (the weight gradients
    # x^T @ concat_t(g_k[t]) over the gates k) follows the sum's order: every join of the gate
    # gradients then lays the gates out alike, so the lowering gives them one buffer
    # (lowering.plan_frames) instead of copying between two layouts.
    rank: dict[int, int] = {}
    if not shared:
        for _, _, prods, _ in sums:
            if len(prods) >= 2:
                for i, m in enumerate(_sum_order(g, prods)):
                    rank.setdefault(id(_base(m.inputs[0])), i)
        for v in g.order:  # and the joins earlier passes made (batch_over_time fuses the dh sums)
            if v.op == "concat" and v.ndim == 2 and v.attr["axis"] % 2 == 1:
                for i, x in enumerate(v.inputs):
                    rank.setdefault(id(x), i)

    subst: dict[int, Var] = {}
    for members in groups.values():
        # Fusing other groups only adds dependencies: a group found dependent stays so.
        members = [m for m in members if id(m) not in in_sum and group_size.get(id(m), 0) >= 2]
        if len(members) < 2:
            continue
        chosen = deps.independent(members, lambda m: (m.inputs[other],))
        if len(chosen) < 2:
            continue
        # Ordered by the operands the group joins, so groups over the same operands (the four
        # gates' x[t] @ W_k) join them the same way and CSE merges the copies; right operands
        # in the order of _right_order.
        keys = [_piece_rank(m.inputs[other], rank) for m in chosen]
        if None not in keys and len(set(keys)) == len(keys):
            chosen = [m for _, m in sorted(zip(keys, chosen), key=lambda km: km[0])]
        else:
            chosen.sort(key=lambda m: _anchor(g, m.inputs[other]), reverse=not shared)
        joined = _concat([m.inputs[other] for m in chosen], other)
        fused = apply("matmul", joined, chosen[0].inputs[1]) if shared else apply("matmul", chosen[0].inputs[0], joined)
        _split(fused, chosen, other, subst)
        deps.join([m.inputs[other] for m in chosen], chosen)

    # A fused sum reads the operands of its terms, which were below it already: no new paths.
    for root, terms, prods, reds in sums:
        subst[id(root)] = _fuse_sum(g, root, terms, prods, reds)
    return subst


def batch_over_time(roots: Sequence[Var]) -> list[Var]:
    """Time batching: products with one right operand and independent left operands (the input
    projection x[t] @ W of every step) become one GEMM over the stacked left operands; sums of
    products become one GEMM (the weight gradients sum_t x[t]^T @ g[t]), and sums of row sums
    one row sum (the bias gradients sum_t sum_rows(g[t]))."""
    return _finish(roots, _group_products(_Graph(roots), shared=1, row_sums=True))


def fuse_horizontal(roots: Sequence[Var]) -> list[Var]:
    """Horizontal fusion: products with one left operand (the gate projections of h[t-1]) become
    one GEMM against the joined right operands; sums of products become one GEMM (dh =
    sum_k g_k @ W_k^T)."""
    return _finish(roots, _group_products(_Graph(roots), shared=0, row_sums=False))


def absorb_transposes(roots: Sequence[Var]) -> list[Var]:
    """Every product of two matrices becomes `gemm`, which reads a transposed operand in place
    instead of after a `permute`."""
    subst = {}
    for v in toposort(roots):
        if _is_product(v):
            a, b = v.inputs
            subst[id(v)] = apply("gemm", _base(a), _base(b), trans_a=_is_swap(a), trans_b=_is_swap(b), name=v.name)
    return _finish(roots, subst)


# ---------------------------------------------------------------------------------------
# dense
# ---------------------------------------------------------------------------------------
def _is_zero(v: Var) -> bool:
    return v.op == "const" and v.size == 1 and float(const_value(v).reshape(())) == 0.0


def _relu_of(g: _Graph, s: Var) -> tuple[Var, Var] | None:
    """(gt, where) when the readers of s are exactly where(s > 0, s, 0), the relu composite."""
    us = g.users[id(s)]
    if len(us) != 2 or id(s) in g.root_ids:
        return None
    gt = next((u for u in us if u.op == "gt"), None)
    wh = next((u for u in us if u.op == "where"), None)
    if gt is None or wh is None:
        return None
    if gt.inputs[0] is not s or not _is_zero(gt.inputs[1]) or gt.shape != s.shape:
        return None
    if wh.inputs[0] is not gt or wh.inputs[1] is not s or not _is_zero(wh.inputs[2]) or wh.shape != s.shape:
        return None
    return gt, wh


def fuse_dense(roots: Sequence[Var]) -> list[Var]:
    """gemm (or a matrix matmul) + bias row [+ sigmoid / tanh / relu] -> dense.  The product
    must have no other reader; so must the sum, except that a relu's mask `s > 0` read
    elsewhere (the relu gradient) is rewritten as `relu(s) > 0`, which is the same."""
    g = _Graph(roots)
    subst: dict[int, Var] = {}
    for p in g.order:
        if p.op == "gemm":
            (x, w), flags = p.inputs, {"trans_a": p.attr["trans_a"], "trans_b": p.attr["trans_b"]}
        elif _is_product(p):
            (x, w), flags = p.inputs, {}
        else:
            continue
        s = g.only_user(p)
        if s is None or s.op != "add" or s.shape != p.shape:
            continue
        b = s.inputs[1] if s.inputs[0] is p else s.inputs[0]
        if b is p or b.shape != (p.shape[1],):
            continue
        us = g.users[id(s)]
        relu = _relu_of(g, s)
        if len(us) == 1 and id(s) not in g.root_ids and us[0].op in ("sigmoid", "tanh"):
            subst[id(us[0])] = apply("dense", x, w, b, act=us[0].op, **flags)
        elif relu is not None:
            gt, wh = relu
            out = subst[id(wh)] = apply("dense", x, w, b, act="relu", **flags)
            if len(g.users[id(gt)]) > 1 or id(gt) in g.root_ids:
                subst[id(gt)] = apply("gt", out, gt.inputs[1])
        else:
            subst[id(s)] = apply("dense", x, w, b, act="identity", **flags)
    return _finish(roots, subst)


# ---------------------------------------------------------------------------------------
# vertical fusion of elementwise ops
# ---------------------------------------------------------------------------------------
_UNARY = {
    "neg": EwCode.NEG,
    "exp": EwCode.EXP,
    "log": EwCode.LOG,
    "log1p": EwCode.LOG1P,
    "sqrt": EwCode.SQRT,
    "abs": EwCode.ABS,
    "sigmoid": EwCode.SIGMOID,
    "tanh": EwCode.TANH,
    "arctan": EwCode.ARCTAN,
    "sign": EwCode.SIGN,
    "step": EwCode.STEP,
}
_BINARY = {
    "add": EwCode.ADD,
    "sub": EwCode.SUB,
    "mul": EwCode.MUL,
    "div": EwCode.DIV,
    "pow": EwCode.POW,
    "maximum": EwCode.MAX,
    "minimum": EwCode.MIN,
}
_CHEAP = {"add", "sub", "mul", "div", "neg", "abs", "sign", "maximum", "minimum", "where"}
_COMPARE = {
    "gt": EwCode.GT,
    "ge": EwCode.GE,
    "lt": EwCode.LT,
    "le": EwCode.LE,
    "eq": EwCode.EQ,
    "ne": EwCode.NE,
}


class _Program:
    """One fused_ew op under construction: the group of elementwise ops ending at `root`.

    A member is an elementwise op of the root's shape and dtype that only the group reads; it
    becomes one instruction.  Comparisons under a `where` are recomputed in every group that
    needs them (they are cheap, and a bool cannot be a float input).  Scalar constants become
    CONST instructions; anything else is an input, read whole or broadcast (scalar, row or
    column); a `broadcast_to` of such an operand is read through.  A value read by several
    ops is never a member, so a transcendental result is computed once and read as an input.
    """

    def __init__(self, g: _Graph, root: Var):
        self.g, self.root = g, root
        self.shape, self.dtype = root.shape, root.dtype
        self.members: set[int] = {id(root)}
        self.n_instr = self.n_inputs = self.n_ops = 0

    # -- which operands can be read, and at what cost ------------------------------------
    def _scalar_const(self, v: Var) -> bool:
        return v.op == "const" and v.dtype == self.dtype and v.size == 1 and v.ndim <= len(self.shape)

    def _source(self, v: Var) -> Var:
        """What the program reads for operand v: a broadcast_to is read through when the Var
        it broadcasts fits an input mode itself."""
        if v.op == "broadcast_to" and input_mode(v.inputs[0].shape, self.shape) is not None:
            return v.inputs[0]
        return v

    def _readable(self, v: Var) -> bool:
        """An operand the program can take as an input."""
        return v.dtype == self.dtype and input_mode(self._source(v).shape, self.shape) is not None

    def _compare_ok(self, c: Var) -> bool:
        return (
            c.op in _COMPARE
            and input_mode(c.shape, self.shape) is not None
            and all(self._scalar_const(x) or self._readable(x) for x in c.inputs)
        )

    def fusible(self, v: Var) -> bool:
        """An op the program can compute (its own operands permitting).  Below the root's
        shape (a column, a row, a scalar) only cheap arithmetic: the kernel computes a member
        at every element of the result."""
        if v.dtype != self.dtype:
            return False
        if v.shape != self.shape and (v.op not in _CHEAP or input_mode(v.shape, self.shape) is None):
            return False
        if v.op in _UNARY or v.op in _BINARY:
            operands = v.inputs
        elif v.op == "where":
            if not self._compare_ok(v.inputs[0]):
                return False
            operands = v.inputs[1:]
        else:
            return False
        return all(self._scalar_const(x) or self._readable(x) for x in operands)

    def _read_only_here(self, x: Var) -> bool:
        """Whether the group reads x and nothing else does: its readers are members, or
        comparisons that only the members' wheres read (relu(z): z > 0 and where read z)."""
        g = self.g
        if id(x) in g.root_ids:
            return False
        for r in g.users[id(x)]:
            if id(r) in self.members:
                continue
            if (
                r.op in _COMPARE
                and id(r) not in g.root_ids
                and all(id(w) in self.members and w.inputs[0] is r for w in g.users[id(r)])
            ):
                continue
            return False
        return True

    def _cost(self, v: Var) -> tuple[int, int]:
        """(instructions, inputs) that computing v adds at most, its operands not members."""
        instr, ins = 1, 0
        operands = list(v.inputs)
        if v.op == "where":
            instr += 1
            operands = list(v.inputs[0].inputs) + operands[1:]
        for x in operands:
            if self._scalar_const(x):
                instr += 1
            else:
                ins += 1
        return instr, ins

    def select(self) -> None:
        """Grow the group from the root, breadth first, within the kernel's limits (counted
        pessimistically: an operand counts as an input until it turns out to be a member)."""
        root = self.root
        self.n_instr, self.n_inputs = self._cost(root)
        self.n_ops = 1 + (root.op == "where")
        queue = [root]
        while queue:
            nxt = []
            for u in queue:
                for x in u.inputs[0].inputs + u.inputs[1:] if u.op == "where" else u.inputs:
                    if id(x) in self.members or not self._read_only_here(x) or not self.fusible(x):
                        continue
                    di, dn = self._cost(x)
                    # x stops being an input of u (-1) and brings its own operands (+dn).
                    if self.n_instr + di > MAX_INSTRUCTIONS or self.n_inputs - 1 + dn > MAX_INPUTS:
                        continue
                    self.members.add(id(x))
                    self.n_instr += di
                    self.n_inputs += dn - 1
                    self.n_ops += 1 + (x.op == "where")
                    nxt.append(x)
            queue = nxt

    # -- the program ---------------------------------------------------------------------
    def build(self) -> Var:
        inputs: dict[int, int] = {}  # id(Var) -> input number
        in_vars: list[Var] = []
        consts: dict[bytes, int] = {}
        const_vals: list[float] = []
        code: list[list] = []  # [opcode, a, b, c] with ('in', j) / ('reg', k) operands
        done: dict[int, tuple] = {}

        def operand(x: Var) -> tuple:
            if id(x) in done:
                return done[id(x)]
            if id(x) in self.members:
                ref = emit(x)
            elif self._scalar_const(x):
                val = float(const_value(x).reshape(()))
                key = np.float64(val).tobytes()
                if key not in consts:
                    consts[key] = len(const_vals)
                    const_vals.append(val)
                code.append([EwCode.CONST, consts[key], 0, 0])
                ref = ("reg", len(code) - 1)
            else:
                src = self._source(x)
                if id(src) not in inputs:
                    inputs[id(src)] = len(in_vars)
                    in_vars.append(src)
                ref = ("in", inputs[id(src)])
            done[id(x)] = ref
            return ref

        def emit(v: Var) -> tuple:
            if v.op == "where":
                c = v.inputs[0]
                if id(c) not in done:
                    ca, cb = (operand(x) for x in c.inputs)
                    code.append([_COMPARE[c.op], ca, cb, 0])
                    done[id(c)] = ("reg", len(code) - 1)
                ops = [done[id(c)]] + [operand(x) for x in v.inputs[1:]]
                code.append([EwCode.WHERE, *ops])
            else:
                ops = [operand(x) for x in v.inputs]
                code.append([(_UNARY.get(v.op) if len(ops) == 1 else _BINARY[v.op]), *ops] + [0] * (3 - len(ops)))
            ref = ("reg", len(code) - 1)
            done[id(v)] = ref
            return ref

        emit(self.root)
        n_in = len(in_vars)

        def reg(r) -> int:
            if isinstance(r, tuple):
                return r[1] if r[0] == "in" else n_in + r[1]
            return int(r)  # an unused field, or a CONST's index

        program = tuple((int(op), reg(a), reg(b), reg(c)) for op, a, b, c in code)
        modes = tuple(int(input_mode(x.shape, self.shape)) for x in in_vars)
        attrs = {
            "program": program,
            "consts": tuple(const_vals),
            "modes": modes,
            "shape": self.shape,
        }
        # apply() would copy the program instruction by instruction to freeze it; it is built
        # frozen (tuples of ints), so the op is made directly, checked by its shape rule.
        shape, dtype = REGISTRY["fused_ew"].infer(in_vars, **attrs)
        return Var("fused_ew", in_vars, attrs, shape, dtype, self.root.name)


def fuse_elementwise(roots: Sequence[Var]) -> list[Var]:
    """Vertical fusion: each tree of float elementwise ops whose intermediate results only the
    tree reads becomes one `fused_ew` op (trees of a single op are left as they are)."""
    g = _Graph(roots)
    subst: dict[int, Var] = {}
    claimed: set[int] = set()
    for v in reversed(g.order):
        if id(v) in claimed or v.dtype.kind != "f" or not (v.op in _UNARY or v.op in _BINARY or v.op == "where"):
            continue
        prog = _Program(g, v)
        if not prog.fusible(v):
            continue
        prog.select()
        claimed.update(prog.members)
        if prog.n_ops >= 2:
            subst[id(v)] = prog.build()
    return _finish(roots, subst)


# ---------------------------------------------------------------------------------------
# pipelines
# ---------------------------------------------------------------------------------------
LOWERING_PASSES: dict[str, Pass] = {
    "batch_over_time": batch_over_time,
    "fuse_horizontal": fuse_horizontal,
    "absorb_transposes": absorb_transposes,
    "fuse_dense": fuse_dense,
    "fuse_elementwise": fuse_elementwise,
}

# The order the passes expect: products are grouped while they are still matmuls, become gemm,
# then dense, and what is left of the elementwise ops is fused last.
FUSION_PASSES: tuple[str, ...] = tuple(LOWERING_PASSES)


def lowering_pipeline(names: Iterable[str | Pass] = FUSION_PASSES) -> list[Pass]:
    """The passes named (or given as functions), in the order given."""
    out = []
    for n in names:
        if callable(n):
            out.append(n)
        elif n in LOWERING_PASSES:
            out.append(LOWERING_PASSES[n])
        else:
            raise FlexcoreError(f"unknown lowering pass '{n}'; valid: {', '.join(LOWERING_PASSES)}")
    return out
