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
    along delay-0 connections; `run()` walks t = 0..T-1 so reading t - k is always ready.

    A *window* unrolls `steps` steps of a longer sequence (truncated BPTT, stateful calls):
    `x` then holds the window's steps, and a read of t - k before the window's first step comes
    from `carried[(id(layer), k)]`, the value the layer had k steps before the window (one Var
    per pair of `state_keys`); without `carried`, from the layer's initial state.

    `mask` (bool (N, steps), or None) marks each sequence's valid steps; they must come first
    (a sequence of length L: steps < L).  Valid steps compute exactly what they would without
    the mask; the values a masked step computes are never read by a valid one.  `final_state`
    and a static layer's read of a last step then see each sequence's last valid values: time
    stands still at masked steps.

    Dropout masks come from `seed`, a fresh one per step; a connection with `variational=True`
    draws one mask from `seq_seed` (default `seed`) and applies it at every step."""

    def __init__(self, wiring: Wiring, params: dict[str, Var], batch: int, x: dict[int, Var],
                 dtype: np.dtype, training: bool, seed: Var | None, initial: dict[int, Var] | None = None, *,
                 steps: int | None = None, carried: dict[tuple[int, int], Var] | None = None,
                 mask: Var | None = None, seq_seed: Var | None = None):
        self.w = wiring
        self.params = params
        self.batch = batch
        self.x = x
        self.dtype = np.dtype(dtype)
        self.training = training
        self.seed = seed
        self.seq_seed = seed if seq_seed is None else seq_seed
        self.initial = initial or {}
        self.steps = wiring.T if steps is None else int(steps)
        self.carried = carried
        self.mask = mask
        self.vals: dict[tuple[int, int | None], tuple[Var, Var]] = {}
        self._busy: set[tuple[int, int | None]] = set()
        self._regs: dict[tuple[int, int], list[Var]] = {}
        self._mask_cache: dict[tuple[int, int], Var] = {}
        self._vmasks: dict[int, Var] = {}
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

    def read(self, layer: Layer, t: int) -> Var:
        """The layer's output at step t of this window; t < 0 lies before the window."""
        if t >= 0:
            return self.value(layer, t)
        if not self.w.seq[id(layer)] and not isinstance(layer, InputLayer):
            # A static layer read through a delay >= T: always before it exists.
            return self.init_state(layer)
        if self.carried is not None:
            return self.carried[(id(layer), -t)]
        return self.init_state(layer)

    def mask_at(self, t: int, layer: Layer) -> Var:
        """The mask of step t shaped to broadcast against the layer's (N, *shape) values."""
        key = (t, len(layer.shape))
        m = self._mask_cache.get(key)
        if m is None:
            m = ir.api.reshape(self.mask[:, t], (self.batch,) + (1,) * len(layer.shape))
            self._mask_cache[key] = m
        return m

    def registers(self, layer: Layer, lag: int) -> list[Var]:
        """Under a mask, for each step t of the window: the layer's output `lag` valid steps
        back from the end of step t.  A valid step shifts the registers, a masked one keeps them."""
        key = (id(layer), lag)
        regs = self._regs.get(key)
        if regs is None:
            below = self.registers(layer, lag - 1) if lag > 1 else None
            held = self.read(layer, -lag)
            regs = []
            for t in range(self.steps):
                if below is None:
                    new = self.value(layer, t)
                else:
                    new = below[t - 1] if t >= 1 else self.read(layer, -(lag - 1))
                held = ir.api.where(self.mask_at(t, layer), new, held)
                regs.append(held)
            self._regs[key] = regs
        return regs

    def final_state(self, layer: Layer, lag: int) -> Var:
        """The value a read `lag` steps back sees right after this window (the state to carry)."""
        if self.mask is None:
            return self.read(layer, self.steps - lag)
        return self.registers(layer, lag)[-1]

    def last_value(self, layer: Layer) -> Var:
        """A sequence layer's output at the last (valid) step, as a static layer reads it."""
        if self.mask is None:
            return self.value(layer, self.steps - 1)
        return self.registers(layer, 1)[-1]

    def _source(self, c, t: int | None) -> Var:
        src = c.source
        if c.delay == 0:
            if not self.w.seq[id(src)]:
                return self.value(src, None)
            return self.value(src, t) if t is not None else self.last_value(src)
        return self.read(src, t - c.delay)

    def _contribution(self, c, t: int | None) -> Var:
        x = self._source(c, t)
        if c.clip_grad is not None:
            x = ir.api.clip_gradient(x, c.clip_grad)
        if c.dropout and self.training:
            x = x * self._dropout_mask(c, t, x)
        return c.apply(x, self.connection_params(c))

    def _dropout_mask(self, c, t: int | None, x: Var) -> Var:
        ci = self.conn_index[id(c)]
        if c.variational:
            # One mask per sequence for the whole call, shaped like the source's value; its salt
            # (a multiple of 1_000_003) is none of the per-step salts below.
            m = self._vmasks.get(id(c))
            if m is None:
                m = ir.api.dropout_mask(self.seq_seed, x.shape, c.dropout, salt=ci * 1_000_003, dtype=self.dtype)
                self._vmasks[id(c)] = m
            return m
        salt = ci * 1_000_003 + (t or 0) * 7 + 1
        return ir.api.dropout_mask(self.seed, x.shape, c.dropout, salt=salt, dtype=self.dtype)

    def connection_params(self, c) -> dict[str, Var]:
        """A connection's own parameters plus those it reads from another owner (tied)."""
        params = self._params_of(c.name)
        for local, key in c.param_refs().items():
            if key not in self.params:
                raise FlexcoreError(f"connection '{c.name}' reads parameter '{key}', which the network does not have")
            params[local] = self.params[key]
        return params

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
            prev = self.read(layer, t - 1)
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
        for t in range(self.steps):
            for layer in self.w.order:
                if self.w.seq[id(layer)]:
                    self.both(layer, t)


def state_keys(wiring: Wiring) -> list[tuple[Layer, int]]:
    """The values a window carries to the next one, as (layer, lag) pairs: lags 1..k of every
    layer read through a delay of up to k (a memory layer reads itself at lag 1), and lag 1 of
    every sequence layer a static layer reads (its last valid value, under a mask)."""
    need: dict[int, int] = {}
    for l in wiring.layers:
        for c in wiring.incoming[id(l)]:
            src = c.source
            if c.delay and (wiring.seq[id(src)] or isinstance(src, InputLayer)):
                need[id(src)] = max(need.get(id(src), 0), c.delay)
            elif not c.delay and wiring.seq[id(src)] and not wiring.seq[id(l)]:
                need[id(src)] = max(need.get(id(src), 0), 1)
        if isinstance(l, MemoryLayer):
            need[id(l)] = max(need.get(id(l), 0), 1)
    return [(l, k) for l in wiring.layers for k in range(1, need.get(id(l), 0) + 1)]


def check_windows(wiring: Wiring) -> None:
    """Several windows of one sequence (truncated BPTT) need every step's inputs within reach:
    a sequence layer must not read a static layer that is computed from a sequence's last step
    (it exists only after the whole sequence)."""
    late: set[int] = set()
    changed = True
    while changed:
        changed = False
        for l in wiring.layers:
            if wiring.seq[id(l)] or isinstance(l, InputLayer) or id(l) in late:
                continue
            if any(wiring.seq[id(c.source)] or id(c.source) in late for c in wiring.incoming[id(l)]):
                late.add(id(l))
                changed = True
    for l in wiring.layers:
        if not wiring.seq[id(l)]:
            continue
        for c in wiring.incoming[id(l)]:
            if id(c.source) in late and c.delay < wiring.T:
                raise FlexcoreError(
                    f"connection '{c.name}': '{l.name}' reads '{c.source.name}', which exists only after the last "
                    "step of the whole sequence, so the sequence cannot be run in windows (truncate)"
                )


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
