"""The native build: the extension loads, reports the right version and ISA, and links the
libflexcore next to it; flexcore._native degrades quietly when the extension is missing."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from flexcore import _native

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR = Path(_native.__file__).resolve().parent  # flexcore.__file__ is None without __init__
ISAS = ("scalar", "avx2", "avx512")  # lowest first


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter that imports this same flexcore package."""
    full_env = {k: v for k, v in os.environ.items() if k != "FLEXCORE_ISA"}
    full_env["PYTHONPATH"] = str(PACKAGE_DIR.parent)
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", code],
        env=full_env,
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE_DIR.parent,
    )


def test_module_loads(native):
    assert _native.available
    assert _native.load_error is None
    assert _native.module is native
    assert set(native.UNARY_OPS) >= {"exp", "sigmoid"} and "add" in native.BINARY_OPS


def test_version_matches_package(native):
    assert native.version() == importlib.metadata.version("flexcore")


def test_declared_versions_agree():
    """pyproject.toml and CMakeLists.txt (which sets fc_version) must name the same version."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    cmake = re.search(r"project\(flexcore VERSION ([0-9.]+)", (REPO / "CMakeLists.txt").read_text())
    assert cmake is not None
    assert pyproject["project"]["version"] == cmake.group(1)


def test_isa_is_known(native):
    assert native.cpu_isa() in ISAS
    assert _native.isa() == native.cpu_isa()


def test_lib_path_is_the_linked_library(native):
    path = _native.lib_path()
    assert path is not None and Path(path).parent == PACKAGE_DIR
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("no /proc/self/maps to see which libflexcore the process loaded")
    loaded = {line.split()[-1] for line in maps.read_text().splitlines() if "libflexcore" in line}
    # The $ORIGIN rpath makes the module load the library beside it, not another copy.
    assert loaded == {str(Path(path).resolve())}


@pytest.mark.parametrize("requested", [*ISAS, "bogus"])
def test_isa_override(native, requested):
    code = "from flexcore import _native; print(_native.isa())"
    detected = run_python(code).stdout.strip()
    got = run_python(code, FLEXCORE_ISA=requested).stdout.strip()
    if requested in ISAS:
        # Lowered on request, never raised above what the CPU has.
        assert got == ISAS[min(ISAS.index(requested), ISAS.index(detected))]
    else:
        assert got == detected


def test_missing_extension_is_quiet():
    """With the extension unloadable, importing flexcore works and _native says why.

    Only stdout is checked: the one-line notice on stderr belongs to the package, not to _native."""
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "flexcore._flexcore":
            raise ImportError("blocked for the test")
sys.meta_path.insert(0, Block())
from flexcore import _native
assert not _native.available and _native.module is None, _native.available
assert "blocked for the test" in _native.load_error, _native.load_error
assert _native.isa() == "none"
"""
    assert run_python(code).stdout == ""
