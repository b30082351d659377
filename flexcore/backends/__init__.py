"""Backends, discovered by name: 'reference' (numpy), 'cpu' (C kernels), 'cuda' (CUDA kernels via pycuda).

`FLEXCORE_BACKEND=` picks the default; without it, 'cpu' when the native part is built, else
'reference' (and flexcore says so once, in one line, on stderr).
"""

from __future__ import annotations

import importlib
import os
import sys

from ..ir.core import FlexcoreError

_MODULES = {"reference": ("reference", "ReferenceBackend"), "cpu": ("cpu", "CPUBackend"),
            "cuda": ("cuda", "CUDABackend")}
_instances: dict[str, object] = {}
_told = False


def available() -> list[str]:
    return list(_MODULES)


def default_name() -> str:
    global _told
    env = os.environ.get("FLEXCORE_BACKEND")
    if env:
        return env
    from .. import _native

    if _native.available:
        return "cpu"
    if not _told:
        _told = True
        print(f"flexcore: native extension not available ({_native.load_error}); using the reference backend", file=sys.stderr)
    return "reference"


def get_backend(name: str | object | None = None):
    """The backend instance for `name` (None: the default)."""
    if name is not None and not isinstance(name, str):
        return name
    name = name or default_name()
    if name not in _MODULES:
        raise FlexcoreError(f"unknown backend '{name}'; valid: {', '.join(_MODULES)}")
    if name not in _instances:
        mod, cls = _MODULES[name]
        _instances[name] = getattr(importlib.import_module(f"{__name__}.{mod}"), cls)()
    return _instances[name]
