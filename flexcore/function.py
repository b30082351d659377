"""Compiled functions: inputs in, outputs out, shared-variable updates applied in one call."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import profile as profile_mod
from .backends import get_backend
from .ir.core import FlexcoreError, Shared, ShapeError, Var, as_var, placeholder
from .plan import Plan, _no_gc, build_plan

__all__ = ["function", "Function", "TracedFunction"]


def _normalize_updates(updates) -> list[tuple[Shared, Var]]:
    if updates is None:
        return []
    items = updates.items() if isinstance(updates, Mapping) else updates
    out = []
    seen = set()
    for sv, expr in items:
        if not isinstance(sv, Shared):
            raise FlexcoreError(f"updates: the target must be a shared variable, got {sv!r}")
        if id(sv) in seen:
            raise FlexcoreError(f"updates: shared variable {sv.label()} is updated twice")
        seen.add(id(sv))
        expr = as_var(expr, sv)
        if expr.shape != sv.shape:
            raise ShapeError(f"updates: new value for {sv.label()} has shape {expr.shape}, the variable has {sv.shape}")
        if expr.dtype != sv.dtype:
            raise ShapeError(f"updates: new value for {sv.label()} is {expr.dtype}, the variable is {sv.dtype}")
        out.append((sv, expr))
    return out


class Function:
    """A compiled graph.  Call it with one array per input; it returns the outputs (a list, or
    a single array when `outputs` was a single Var) and applies the updates, all in one call.
    Updates see the values from before the call (they are applied together at the end)."""

    def __init__(self, inputs: Sequence[Var], outputs, updates=None, backend=None, name: str | None = None):
        self.single = isinstance(outputs, Var)
        outs = [outputs] if self.single else list(outputs or [])
        for i, v in enumerate(inputs):
            if not isinstance(v, Var) or v.op != "placeholder":
                raise FlexcoreError(f"function: input #{i} must be a placeholder Var, got {v!r}")
        for i, o in enumerate(outs):
            if not isinstance(o, Var):
                raise FlexcoreError(f"function: output #{i} must be a Var, got {type(o).__name__}")
        self.inputs = list(inputs)
        self.name = name
        self.backend = get_backend(backend)
        # A backend lowers graphs with its own passes (fusion for the cpu backend); none for the
        # reference backend, which runs the graph as differentiated and optimised.
        passes = getattr(self.backend, "passes", ())
        self.plan: Plan = build_plan(self.inputs, outs, _normalize_updates(updates), passes=passes)
        self._kernels = self.backend.prepare(self.plan)
        if profile_mod.enabled_by_env() and hasattr(self.backend, "profile"):
            self.start_profiling()
            profile_mod.report_at_exit(self)

    def start_profiling(self) -> None:
        """Time every instruction of the calls that follow (earlier totals are cleared); read
        them with `profile()`.  Needs a backend with an executor (cpu)."""
        self._profiler().set_profiling(self._kernels, True)

    def stop_profiling(self) -> None:
        """Stop timing; the totals so far stay readable."""
        self._profiler().set_profiling(self._kernels, False)

    def profile(self) -> profile_mod.Profile:
        """Where the profiled calls' time went, per instruction and grouped by kernel and op."""
        secs, runs, kernels, ops, labels = self._profiler().profile(self._kernels)
        return profile_mod.Profile(self._label(), runs, secs, kernels, ops, labels)

    def _profiler(self):
        if not hasattr(self.backend, "profile"):
            raise FlexcoreError(f"{self._label()}: profiling needs the cpu backend; this one runs on "
                                f"'{getattr(self.backend, 'name', self.backend)}'")
        return self.backend

    @property
    def peak_bytes(self) -> int:
        """Peak memory of one call: the values alive at once, inputs and parameters included
        (for the cpu backend: its executor's arena plus every input, parameter, constant and
        output array)."""
        return getattr(self._kernels, "peak_bytes", self.plan.peak_bytes)

    def _coerce(self, args) -> list[np.ndarray]:
        if len(args) != len(self.inputs):
            raise FlexcoreError(f"{self._label()}: expected {len(self.inputs)} input(s), got {len(args)}")
        arrays = []
        for i, (v, a) in enumerate(zip(self.inputs, args, strict=True)):
            # The common case, an array that is already right, costs a few attribute reads (this
            # runs on every call, and a compiled call of a small graph takes microseconds).
            if type(a) is np.ndarray and a.shape == v.shape and a.dtype == v.dtype and a.flags.c_contiguous:
                arrays.append(a)
                continue
            arr = np.asarray(a)
            what = f"input #{i}" + (f" '{v.name}'" if v.name else "")
            if arr.shape != v.shape:
                raise ShapeError(f"{self._label()}: {what} needs shape {v.shape}, got {arr.shape}")
            if arr.dtype != v.dtype:
                if not np.can_cast(arr.dtype, v.dtype, "same_kind") and not (
                    arr.dtype.kind in "iu" and v.dtype.kind in "if"
                ):
                    raise ShapeError(
                        f"{self._label()}: {what} needs dtype {v.dtype}, got {arr.dtype}"
                    )
                arr = arr.astype(v.dtype)
            # Not np.ascontiguousarray: it turns a 0-d input (a scalar learning rate) into shape (1,).
            arrays.append(np.asarray(arr, order="C"))
        return arrays

    def _label(self) -> str:
        return f"function '{self.name}'" if self.name else "function"

    def __call__(self, *args):
        outs, upds = self.backend.run(self.plan, self._kernels, self._coerce(args))
        if getattr(self.backend, "fresh_results", False):
            # Every result is a new array owned by nobody else: outputs go out as they are, and
            # the updates become the parameters' values without a copy.  The run read the old
            # values, so updates stay simultaneous.
            for (sv, _), val in zip(self.plan.updates, upds):
                sv.storage.replace(val)
            return outs[0] if self.single else outs
        # An output can be a shared variable's storage or a view of it (an output `w` or
        # `w.reshape(...)`): hand out a copy, so writing into the result cannot change the
        # parameter.  Read-only results (folded constants, broadcast views) are copied too, so
        # every returned array is the caller's to modify.
        stores = [sv.storage.get() for _, sv in self.plan.shared]
        outs = [
            np.array(o)
            if isinstance(o, np.ndarray)
            and (not o.flags.writeable or any(np.may_share_memory(o, s) for s in stores))
            else o
            for o in outs
        ]
        for (sv, _), val in zip(self.plan.updates, upds):
            sv.storage.set(val)
        return outs[0] if self.single else outs


def function(inputs: Sequence[Var], outputs, updates=None, backend=None, name: str | None = None) -> Function:
    """Compile a graph: `inputs` are placeholders, `outputs` a Var or list of Vars, `updates` a
    list of (shared, new_value) pairs or a dict.  `backend`: 'reference', 'cpu' or None."""
    return Function(inputs, outputs, updates, backend, name)


class TracedFunction:
    """A function built by a Python `builder` per input signature: one plan is compiled and
    cached for each distinct set of input shapes (a smaller last batch compiles once more).

    builder(*placeholders) returns outputs, or (outputs, updates).
    """

    def __init__(self, builder: Callable[..., Any], dtypes: Sequence[Any], backend=None, name: str | None = None):
        self.builder = builder
        self.dtypes = [np.dtype(d) for d in dtypes]
        self.backend = backend
        self.name = name
        self.cache: dict[tuple, Function] = {}

    def compiled(self, *shapes) -> Function:
        key = tuple(tuple(s) for s in shapes)
        fn = self.cache.get(key)
        if fn is None:
            phs = [placeholder(s, dt, name=f"arg{i}") for i, (s, dt) in enumerate(zip(key, self.dtypes))]
            # Building (an unrolled window and its gradient) makes ~10^5 acyclic objects, which
            # refcounting frees: the cycle collector would only rescan them.
            with _no_gc():
                res = self.builder(*phs)
                if isinstance(res, tuple) and len(res) == 2 and isinstance(res[1], (list, dict)):
                    outputs, updates = res
                else:
                    outputs, updates = res, None
                fn = Function(phs, outputs, updates, self.backend, self.name)
            self.cache[key] = fn
        return fn

    def __call__(self, *args):
        if len(args) != len(self.dtypes):
            what = self.name or "traced function"
            raise FlexcoreError(f"{what}: expected {len(self.dtypes)} input(s), got {len(args)}")
        arrays = [np.asarray(a) for a in args]
        return self.compiled(*[a.shape for a in arrays])(*arrays)


def trace(builder: Callable[..., Any], dtypes: Sequence[Any], backend=None, name: str | None = None) -> TracedFunction:
    """A function compiled per input shapes from `builder` (see TracedFunction)."""
    return TracedFunction(builder, dtypes, backend, name)
