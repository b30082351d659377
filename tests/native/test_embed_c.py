"""Build tests/c/test_embed.c and tests/c/test_kernels.c against libflexcore with CMake and run
them: once as released (-O3, warnings as errors) and once under AddressSanitizer + UBSan.
Independent of the installed package: each build starts from the sources in a fresh directory."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _c_compiler() -> str | None:
    return (
        os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    )


@pytest.mark.parametrize("sanitize", [False, True], ids=["release", "asan-ubsan"])
def test_embed_c(tmp_path, sanitize):
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    if _c_compiler() is None:
        pytest.skip("no C compiler (cc, gcc, clang or $CC) is installed")
    build = tmp_path / "build"
    configure = [
        cmake,
        "-S",
        str(REPO),
        "-B",
        str(build),
        "-DFLEXCORE_PYTHON=OFF",
        "-DFLEXCORE_BUILD_TESTS=ON",
        "-DFLEXCORE_WERROR=ON",
        f"-DFLEXCORE_SANITIZE={'ON' if sanitize else 'OFF'}",
        f"-DCMAKE_BUILD_TYPE={'RelWithDebInfo' if sanitize else 'Release'}",
    ]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    env = {k: v for k, v in os.environ.items() if k not in ("FLEXCORE_ISA", "CMAKE_GENERATOR")}
    # Any sanitizer report fails the run (UBSan aborts via -fno-sanitize-recover; ASan always).
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=1"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"

    def run(cmd: list[str]) -> subprocess.CompletedProcess:
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}"
        return result

    run(configure)
    run([cmake, "--build", str(build), "--parallel", "2"])
    run([shutil.which("ctest") or "ctest", "--test-dir", str(build), "--output-on-failure"])
    # ctest hides the programs' own tallies; run them once more to check those and the sanitizer
    # output. test_kernels drives every generic kernel (kernels.h) through its fast paths and edges.
    for program in ("test_embed", "test_kernels"):
        result = run([str(build / program)])
        assert result.stdout.strip().endswith(" 0 failed"), result.stdout
        assert "runtime error" not in result.stderr and "Sanitizer" not in result.stderr, result.stderr
