"""The one place that loads flexcore's native part.

Importing this module never fails and never prints: when the extension is missing (a pure-Python
install, FLEXCORE_NO_NATIVE=1) or cannot be loaded, ``available`` is False and ``load_error`` says
why; callers decide whether and how to tell the user.

``module`` is the pybind11 extension ``flexcore._flexcore`` (NumPy in, NumPy out);
``flexcore.native_cabi`` reaches the same library, ``lib_path()``, through cffi.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

__all__ = ["available", "isa", "lib_path", "load_error", "module"]

_PACKAGE_DIR = Path(__file__).resolve().parent
_LIB_NAME = "libflexcore.so"


def _load() -> tuple[ModuleType | None, str | None]:
    try:
        return importlib.import_module("flexcore._flexcore"), None
    # Not only ImportError: a broken build can fail in the module's init with anything, and
    # `import flexcore` must still work (the reference backend needs nothing native).
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


module: ModuleType | None
load_error: str | None
module, load_error = _load()
available: bool = module is not None


def isa() -> str:
    """Instruction set the C kernels use: "avx512", "avx2" or "scalar"; "none" when not built.

    Detected once per process by libflexcore; FLEXCORE_ISA (set before the first call) can lower it.
    """
    return module.cpu_isa() if module is not None else "none"


def lib_path() -> str | None:
    """Path of libflexcore.so inside the installed package, or None when it is not there."""
    path = _PACKAGE_DIR / _LIB_NAME
    return str(path) if path.is_file() else None
