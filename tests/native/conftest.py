"""Shared fixtures of the native-part tests.

A test that needs the compiled extension takes the `native` fixture: it skips only when the
extension was never built (a pure-Python install), and fails when it was built but does not load.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="session")
def native() -> ModuleType:
    from flexcore import _native

    if _native.available:
        return _native.module
    package_dir = Path(_native.__file__).parent
    if not any(package_dir.glob("_flexcore*.so")):
        pytest.skip(f"native extension not built in {package_dir} (pip install -e .)")
    pytest.fail(f"native extension is in {package_dir} but does not load: {_native.load_error}")
