"""The reference backend: every op is its numpy implementation from the registry.

Plain and obviously right; the oracle for every other backend.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..ir.core import REGISTRY, FlexcoreError
from ..plan import Plan


class ReferenceBackend:
    """Runs a Plan step by step with the registry's numpy implementations."""

    name = "reference"
    # Lowering passes build_plan applies after optimize() (flexcore.passes.LOWERING_PASSES):
    # none, so the oracle runs the primitives themselves.
    passes: tuple = ()

    def kernel(self, op: str) -> Callable[..., np.ndarray]:
        return REGISTRY[op].impl

    def prepare(self, plan: Plan) -> list[Callable[..., np.ndarray]]:
        """Pick a kernel for each step once, when the plan is built."""
        return [self.kernel(st.op) for st in plan.steps]

    def run(self, plan: Plan, kernels, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        vals: list[np.ndarray | None] = [None] * len(plan.slots)
        for s, a in zip(plan.inputs, inputs):
            vals[s] = a
        for s, sv in plan.shared:
            vals[s] = sv.storage.get()
        for s, a in plan.consts:
            vals[s] = a
        for st, fn in zip(plan.steps, kernels):
            try:
                r = fn(*[vals[i] for i in st.inputs], **st.attrs)
            except FlexcoreError:
                raise
            except (ValueError, IndexError, FloatingPointError) as e:
                raise FlexcoreError(f"while computing {st.var.label()} ({st.op}, shape {st.var.shape}): {e}") from e
            v = st.var
            if not isinstance(r, np.ndarray) or r.dtype != v.dtype or r.shape != v.shape:
                r = np.asarray(r, dtype=v.dtype)
                if r.shape != v.shape:
                    raise FlexcoreError(f"internal: kernel '{st.op}' returned shape {r.shape}, expected {v.shape}")
            vals[st.out] = r
            for s in st.free:
                vals[s] = None
        outs = [vals[s] for s in plan.outputs]
        upds = [vals[s] for _, s in plan.updates]
        return outs, upds
