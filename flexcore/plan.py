"""A Plan: an optimised graph laid out as a flat list of steps over numbered value slots.

Liveness is computed once: each step lists the slots whose last reader it is, so an executor
frees (or reuses) them right away.  `peak_bytes` is the most memory the values alive at once
take while the plan runs (inputs, parameters and constants included).
"""

from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .ir.core import FlexcoreError, Shared, Var, const_value
from .passes import dce, lowering_pipeline, optimize


@dataclass
class Step:
    var: Var
    op: str
    attrs: dict
    inputs: tuple[int, ...]
    out: int
    free: tuple[int, ...] = ()


@dataclass
class Plan:
    slots: list[Var]
    inputs: list[int]  # slot of each function input, in call order
    shared: list[tuple[int, Shared]]
    consts: list[tuple[int, np.ndarray]]
    steps: list[Step]
    outputs: list[int]
    updates: list[tuple[Shared, int]]
    peak_bytes: int = 0
    graph: list[Var] = field(default_factory=list)
    pass_seconds: dict[str, float] = field(default_factory=dict)  # time each pass took

    def summary(self) -> str:
        from collections import Counter

        ops = Counter(s.op for s in self.steps)
        body = ", ".join(f"{op} x{n}" for op, n in ops.most_common())
        return f"{len(self.steps)} steps ({body}); peak {self.peak_bytes / 1e6:.2f} MB"


@contextlib.contextmanager
def _no_gc():
    """Passes allocate a Var per rebuilt node; the collector's full sweeps over a heap of tens
    of thousands of them made compiling grow faster than the graph.  The IR holds no reference
    cycles (Vars only point at their inputs), so reference counting frees what passes drop."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _run_passes(roots: list[Var], optimize_graph: bool, passes, seconds: dict[str, float]) -> list[Var]:
    if optimize_graph:
        t0 = time.perf_counter()
        roots = optimize(roots)
        seconds["optimize"] = time.perf_counter() - t0
    for fn in lowering_pipeline(passes):
        t0 = time.perf_counter()
        roots = fn(roots)
        name = getattr(fn, "__name__", "pass")
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
    return roots


def build_plan(
    inputs: Sequence[Var],
    outputs: Sequence[Var],
    updates: Sequence[tuple[Shared, Var]],
    optimize_graph: bool = True,
    passes: Sequence[str | Callable[[Sequence[Var]], list[Var]]] = (),
) -> Plan:
    """Lay out the graph of `outputs` and `updates` as a Plan.  `optimize_graph` runs
    `optimize()`; `passes` (lowering pass names of flexcore.passes.LOWERING_PASSES, or functions
    roots -> roots) run after it, in the order given: a backend's `passes` attribute."""
    roots = list(outputs) + [u for _, u in updates]
    seconds: dict[str, float] = {}
    with _no_gc():
        roots = _run_passes(roots, optimize_graph, passes, seconds)
    order = dce(roots)
    slot_of: dict[int, int] = {}
    slots: list[Var] = []
    for v in order:
        slot_of[id(v)] = len(slots)
        slots.append(v)

    in_ids = {id(v) for v in inputs}
    missing = [v for v in order if v.op == "placeholder" and id(v) not in in_ids]
    if missing:
        names = ", ".join(v.label() + f" {v.shape}" for v in missing)
        raise FlexcoreError(f"function: the outputs depend on input(s) not listed in `inputs`: {names}")

    # Inputs the optimised graph no longer reads still get a slot (their value is ignored).
    input_slots = []
    for v in inputs:
        if id(v) not in slot_of:
            slot_of[id(v)] = len(slots)
            slots.append(v)
        input_slots.append(slot_of[id(v)])

    shared = [(slot_of[id(v)], v) for v in order if v.op == "shared"]
    consts = [(slot_of[id(v)], const_value(v)) for v in order if v.op == "const"]
    steps = [
        Step(v, v.op, v.attr, tuple(slot_of[id(x)] for x in v.inputs), slot_of[id(v)]) for v in order if not v.is_leaf
    ]
    n_out = len(outputs)
    out_slots = [slot_of[id(r)] for r in roots[:n_out]]
    upd = [(sv, slot_of[id(r)]) for (sv, _), r in zip(updates, roots[n_out:])]

    # Liveness: a computed value dies after its last reader unless it is returned.
    keep = set(out_slots) | {s for _, s in upd}
    last: dict[int, int] = {}
    for i, st in enumerate(steps):
        for s in st.inputs:
            last[s] = i
    computed = {st.out for st in steps}
    frees: dict[int, list[int]] = {}
    for s, i in last.items():
        if s in computed and s not in keep:
            frees.setdefault(i, []).append(s)
    for i, st in enumerate(steps):
        st.free = tuple(frees.get(i, ()))

    # Peak memory of a straightforward run of this plan.
    resident = sum(slots[s].nbytes for s in set(input_slots) | {s for s, _ in shared} | {s for s, _ in consts})
    alive = resident
    peak = alive
    for i, st in enumerate(steps):
        alive += slots[st.out].nbytes
        peak = max(peak, alive)
        alive -= sum(slots[s].nbytes for s in st.free)
        if st.out not in last and st.out not in keep:
            alive -= slots[st.out].nbytes
    return Plan(slots, input_slots, shared, consts, steps, out_slots, upd, peak, order, seconds)
