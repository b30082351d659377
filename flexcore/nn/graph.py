"""Static analysis of a network's wiring and its unrolling over time into the IR.

Time modes: a *sequence* layer exists at every step t = 0..T-1; a *static* layer exists once.
Inputs with a sequence_length are sequence layers; a layer is a sequence layer when it receives
a recurrent connection or a `return_sequence=True` connection from a sequence layer.  A static
layer that reads a sequence layer reads its last step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import ir
from ..ir.core import FlexcoreError, Var
from .layers import InputLayer, Layer, MemoryLayer

if TYPE_CHECKING:  # pragma: no cover
    from .connections import Connection


@dataclass
class Wiring:
    layers: list[Layer]
    incoming: dict[int, list["Connection"]]
    T: int | None
    seq: dict[int, bool]
    order: list[Layer]  # a topological order over delay-0 connections
    inputs: list[InputLayer]
    outputs: list[Layer]


def _find_cycle(layers: list[Layer], edges: dict[int, list[Layer]]) -> list[Layer] | None:
    color: dict[int, int] = {}
    parent: dict[int, Layer] = {}
    for start in layers:
        if color.get(id(start)):
            continue
        stack = [(start, iter(edges.get(id(start), [])))]
        color[id(start)] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                color[id(node)] = 2
                stack.pop()
                continue
            c = color.get(id(nxt), 0)
            if c == 1:
                cycle = [nxt]
                for n, _ in reversed(stack):
                    cycle.append(n)
                    if n is nxt:
                        break
                return list(reversed(cycle))
            if c == 0:
                color[id(nxt)] = 1
                parent[id(nxt)] = node
                stack.append((nxt, iter(edges.get(id(nxt), []))))
    return None


def analyze(layers: list[Layer], connections: list["Connection"]) -> Wiring:
    """Check the wiring and work out time modes and the order of evaluation; every problem is
    raised here, before any computation, naming the user's layers."""
    if not layers:
        raise FlexcoreError("the network has no layers")
    outputs = [l for l in layers if l.output]
    if not outputs:
        fed = {id(c.source) for c in connections}
        sinks = [l.name for l in layers if id(l) not in fed]
        raise FlexcoreError(
            "the network has no output layer; mark one with output=True (ifOutput=True) and a loss"
            + (f" (layers that feed nothing: {', '.join(repr(n) for n in sinks)})" if sinks else "")
        )
    inputs = [l for l in layers if isinstance(l, InputLayer)]
    if not inputs:
        raise FlexcoreError("the network has no InputLayer")
    incoming: dict[int, list] = {id(l): [] for l in layers}
    outgoing: dict[int, list] = {id(l): [] for l in layers}
    for c in connections:
        incoming[id(c.target)].append(c)
        outgoing[id(c.source)].append(c)
    for l in layers:
        if not isinstance(l, InputLayer) and not incoming[id(l)]:
            raise FlexcoreError(f"layer '{l.name}' has no incoming connection")
        if isinstance(l, MemoryLayer) and not any(c.role == "candidate" for c in incoming[id(l)]):
            raise FlexcoreError(f"memory layer '{l.name}' needs at least one connection with role='candidate'")

    lengths = {l.sequence_length for l in inputs if l.sequence_length is not None}
    if len(lengths) > 1:
        raise FlexcoreError(
            "input layers have different sequence lengths: "
            + ", ".join(f"'{l.name}' {l.sequence_length}" for l in inputs if l.sequence_length)
        )
    T = lengths.pop() if lengths else None

    # delay-0 connections must form a DAG within a step.
    edges: dict[int, list[Layer]] = {}
    for c in connections:
        if c.delay == 0:
            edges.setdefault(id(c.source), []).append(c.target)
    cyc = _find_cycle(layers, edges)
    if cyc:
        names = " -> ".join(f"'{l.name}'" for l in cyc)
        raise FlexcoreError(f"the delay-0 connections form a cycle: {names}; make one of them recurrent (delay >= 1)")

    if T is None:
        rec = [c for c in connections if c.recurrent]
        if rec:
            raise FlexcoreError(
                f"recurrent connection '{rec[0].name}' needs a sequence: give an InputLayer a sequence_length"
            )
        mem = [l for l in layers if isinstance(l, MemoryLayer)]
        if mem:
            raise FlexcoreError(f"memory layer '{mem[0].name}' needs a sequence: give an InputLayer a sequence_length")

    # Time modes (a fixed point: recurrence can make a loop of sequence layers).
    seq = {id(l): isinstance(l, InputLayer) and l.sequence_length is not None for l in layers}
    changed = True
    while changed:
        changed = False
        for l in layers:
            if seq[id(l)] or isinstance(l, InputLayer):
                continue
            if isinstance(l, MemoryLayer) or any(c.recurrent or (c.return_sequence and seq[id(c.source)]) for c in incoming[id(l)]):
                seq[id(l)] = True
                changed = True
    for l in layers:
        if not seq[id(l)]:
            continue
        for c in incoming[id(l)]:
            if c.delay == 0 and seq[id(c.source)] and not c.return_sequence:
                raise FlexcoreError(
                    f"connection '{c.name}': '{l.name}' exists at every step (it is recurrent or fed step by step), "
                    f"so it cannot read only the last step of '{c.source.name}'; pass return_sequence=True"
                )

    # A static layer exists once, after the last step; a sequence that reads it back through a
    # delay shorter than the sequence needs it before it exists.
    late: dict[int, list[Layer]] = {k: list(v) for k, v in edges.items()}
    for c in connections:
        static_source = not seq[id(c.source)] and not isinstance(c.source, InputLayer)
        if c.delay and static_source and c.delay < T:
            late.setdefault(id(c.source), []).append(c.target)
    cyc = _find_cycle(layers, late)
    if cyc:
        names = " -> ".join(f"'{l.name}'" for l in cyc)
        static = next(l for l in cyc if not seq[id(l)])
        raise FlexcoreError(
            f"the layers {names} depend on each other: '{static.name}' exists only once, after "
            "the last step, so no step can read it back; feed it with return_sequence=True so it "
            "exists at every step"
        )

    # Every layer must matter for some output.
    reach = {id(l) for l in outputs}
    changed = True
    while changed:
        changed = False
        for c in connections:
            if id(c.target) in reach and id(c.source) not in reach:
                reach.add(id(c.source))
                changed = True
    dead = [l.name for l in layers if id(l) not in reach]
    if dead:
        raise FlexcoreError(f"layer(s) {', '.join(repr(n) for n in dead)} reach no output layer")

    # Topological order over delay-0 edges.
    indeg = {id(l): 0 for l in layers}
    for c in connections:
        if c.delay == 0:
            indeg[id(c.target)] += 1
    order, ready = [], [l for l in layers if indeg[id(l)] == 0]
    while ready:
        l = ready.pop(0)
        order.append(l)
        for t in edges.get(id(l), []):
            indeg[id(t)] -= 1
            if indeg[id(t)] == 0:
                ready.append(t)
    return Wiring(layers, incoming, T, seq, order, inputs, outputs)


class Unroller:
    """Builds the IR for a wiring: call `value(layer, t)`.  Feed-forward recursion only goes
    along delay-0 connections; `run()` walks t = 0..T-1 so reading t - k is always ready."""

    def __init__(self, wiring: Wiring, params: dict[str, Var], batch: int, x: dict[int, Var],
                 dtype: np.dtype, training: bool, seed: Var | None, initial: dict[int, Var] | None = None):
        self.w = wiring
        self.params = params
        self.batch = batch
        self.x = x
        self.dtype = np.dtype(dtype)
        self.training = training
        self.seed = seed
        self.initial = initial or {}
        self.vals: dict[tuple[int, int | None], tuple[Var, Var]] = {}
        self._busy: set[tuple[int, int | None]] = set()
        self.conn_index = {id(c): i for i, c in enumerate(c for l in wiring.layers for c in wiring.incoming[id(l)])}

    def _params_of(self, owner_name: str) -> dict[str, Var]:
        pre = owner_name + "."
        return {k[len(pre):]: v for k, v in self.params.items() if k.startswith(pre)}

    def init_state(self, layer: Layer) -> Var:
        """The value a layer has before t = 0."""
        if id(layer) in self.initial:
            return self.initial[id(layer)]
        shape = (self.batch,) + layer.shape
        s = layer.initial_state
        if isinstance(s, str) and s == "zeros":
            return ir.api.broadcast_to(ir.const(np.zeros((), self.dtype)), shape)
        if isinstance(s, str):  # learnable
            h0 = self.params[f"{layer.name}.h0"]
            return ir.api.broadcast_to(ir.api.reshape(h0, (1,) + layer.shape), shape)
        return ir.api.broadcast_to(ir.const(np.asarray(s, self.dtype).reshape((1,) + layer.shape)), shape)

    def value(self, layer: Layer, t: int | None) -> Var:
        return self.both(layer, t)[1]

    def both(self, layer: Layer, t: int | None) -> tuple[Var, Var]:
        """(pre-activation, output) of `layer` at step t (None: a static layer)."""
        seq = self.w.seq[id(layer)]
        if not seq:
            t = None
        key = (id(layer), t)
        hit = self.vals.get(key)
        if hit is not None:
            return hit
        if key in self._busy:
            raise FlexcoreError(
                f"layer '{layer.name}' depends on its own value at the same step through a layer that exists only "
                "at the last step; make that connection recurrent or return a sequence"
            )
        self._busy.add(key)
        try:
            res = self._compute(layer, t)
        finally:
            self._busy.discard(key)
        self.vals[key] = res
        return res

    def _source(self, c, t: int | None) -> Var:
        src = c.source
        src_seq = self.w.seq[id(src)]
        if c.delay == 0:
            if not src_seq:
                return self.value(src, None)
            st = t if t is not None else self.w.T - 1
            return self.value(src, st)
        tt = t - c.delay
        if tt < 0:
            return self.init_state(src)
        return self.value(src, tt if src_seq else None)

    def _contribution(self, c, t: int | None) -> Var:
        x = self._source(c, t)
        if c.dropout and self.training:
            salt = self.conn_index[id(c)] * 1_000_003 + (t or 0) * 7 + 1
            x = x * ir.api.dropout_mask(self.seed, x.shape, c.dropout, salt=salt, dtype=self.dtype)
        return c.apply(x, self._params_of(c.name))

    def _compute(self, layer: Layer, t: int | None) -> tuple[Var, Var]:
        if isinstance(layer, InputLayer):
            xv = self.x[id(layer)]
            v = xv[:, t] if layer.sequence_length is not None else xv
            return v, v
        conns = self.w.incoming[id(layer)]
        if isinstance(layer, MemoryLayer):
            parts: dict[str, list[Var]] = {r: [] for r in MemoryLayer.ROLES}
            for c in conns:
                parts[c.role].append(self._contribution(c, t))
            total = {r: _sum(v) for r, v in parts.items()}
            prev = self.init_state(layer) if t == 0 else self.value(layer, t - 1)
            keep = prev if total["forget"] is None else total["forget"] * prev
            new = total["candidate"] if total["input"] is None else total["input"] * total["candidate"]
            c_t = keep + new
            return c_t, c_t
        contribs = [self._contribution(c, t) for c in conns]
        pre = _sum(contribs) if layer.combine == "sum" else _prod(contribs)
        return layer.finish(pre, self._params_of(layer.name))

    def run(self) -> None:
        """Build every sequence layer at every step, in time order."""
        if self.w.T is None:
            return
        for t in range(self.w.T):
            for layer in self.w.order:
                if self.w.seq[id(layer)]:
                    self.both(layer, t)


def _sum(vs: list[Var]) -> Var | None:
    if not vs:
        return None
    acc = vs[0]
    for v in vs[1:]:
        acc = acc + v
    return acc


def _prod(vs: list[Var]) -> Var:
    acc = vs[0]
    for v in vs[1:]:
        acc = acc * v
    return acc
