"""The CPU backend: ops with a C kernel in libflexcore run there; the others fall back to the
reference implementation, and the backend says so once per op."""

from __future__ import annotations

import sys
from typing import Callable

import numpy as np

from .. import _native
from ..ir.core import FlexcoreError
from ..plan import Plan
from .reference import ReferenceBackend

_UNARY = {"neg", "exp", "log", "log1p", "sqrt", "abs", "sigmoid", "tanh", "arctan"}
_BINARY = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "maximum": "maximum", "minimum": "minimum"}
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_announced: set[str] = set()


def _unary_kernel(op: str, ref: Callable) -> Callable:
    mod = _native.module

    def run(x):
        if x.dtype in _FLOATS and x.flags.c_contiguous:
            return mod.unary(op, x)
        return ref(x)

    return run


def _binary_kernel(op: str, ref: Callable) -> Callable:
    mod = _native.module

    def run(a, b):
        if a.shape == b.shape and a.dtype == b.dtype and a.dtype in _FLOATS and a.flags.c_contiguous and b.flags.c_contiguous:
            return mod.binary(op, a, b)
        return ref(a, b)

    return run


class CPUBackend(ReferenceBackend):
    name = "cpu"

    def __init__(self) -> None:
        if not _native.available:
            raise FlexcoreError(f"the cpu backend needs the native extension, which did not load: {_native.load_error}")

    def has_kernel(self, op: str) -> bool:
        return op in _UNARY or op in _BINARY

    def kernel(self, op: str) -> Callable[..., np.ndarray]:
        ref = super().kernel(op)
        if op in _UNARY:
            return _unary_kernel(op, ref)
        if op in _BINARY:
            return _binary_kernel(_BINARY[op], ref)
        return ref

    def prepare(self, plan: Plan):
        missing = sorted({st.op for st in plan.steps if not self.has_kernel(st.op)} - _announced)
        if missing:
            _announced.update(missing)
            print(f"flexcore: the cpu backend has no C kernel for {', '.join(missing)} yet; "
                  "they run on the reference implementation", file=sys.stderr)
        return super().prepare(plan)
