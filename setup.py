"""Build the native part of flexcore with CMake during `pip install`.

Package metadata is in pyproject.toml; this file only plugs CMake into setuptools' build_ext. One
CMake build produces flexcore/_flexcore*.so (pybind11), flexcore/libflexcore.so (the C ABI, found by
the module through its $ORIGIN rpath) and, with FLEXCORE_CUDA=1, flexcore/*.fatbin.

Environment:
  FLEXCORE_NO_NATIVE=1   skip the native build: a pure-Python install
  FLEXCORE_CUDA=1        also compile kernels/*.cu when nvcc is found
  FLEXCORE_CMAKE_ARGS    extra arguments for the CMake configure step (shell syntax)
"""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
PACKAGE = "flexcore"


class CMakeExtension(Extension):
    """An extension whose sources CMake knows; setuptools only needs its name."""

    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import pybind11  # a build requirement, present in the isolated build environment

        cmake = shutil.which("cmake")
        if cmake is None:
            raise RuntimeError(
                "cmake is needed to build flexcore's native part (pip install cmake)"
            )
        # CMake writes every shared library and fatbin straight into the package directory.
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / "cmake"
        configure = [
            cmake,
            "-S",
            str(ROOT),
            "-B",
            str(build_dir),
            f"-DCMAKE_BUILD_TYPE={'Debug' if self.debug else 'Release'}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DFLEXCORE_CUDA={'ON' if os.environ.get('FLEXCORE_CUDA') == '1' else 'OFF'}",
        ]
        if "CMAKE_GENERATOR" not in os.environ and shutil.which("ninja"):
            configure += ["-G", "Ninja"]
        configure += shlex.split(os.environ.get("FLEXCORE_CMAKE_ARGS", ""))
        # pip's isolated build environment (with its cmake, ninja, pybind11) is a new temporary
        # directory on every run, but build_temp (./build/temp.*) is kept: a cache from an earlier
        # run would point at tools that no longer exist. A fresh cache with the old object files
        # still builds incrementally.
        (build_dir / "CMakeCache.txt").unlink(missing_ok=True)
        subprocess.run(configure, check=True)
        subprocess.run(
            [cmake, "--build", str(build_dir), "--parallel", str(os.cpu_count() or 1)], check=True
        )
        if not Path(self.get_ext_fullpath(ext.name)).exists():
            raise RuntimeError(f"CMake did not produce {self.get_ext_fullpath(ext.name)}")

    def copy_extensions_to_source(self) -> None:
        # Editable installs: setuptools copies the extension module into the source tree, but not
        # the library it links against nor the fatbins, which must sit next to it.
        super().copy_extensions_to_source()
        built_dir = Path(self.build_lib) / PACKAGE
        source_dir = Path(self.get_finalized_command("build_py").get_package_dir(PACKAGE))
        for artifact in [*built_dir.glob("libflexcore.so"), *built_dir.glob("*.fatbin")]:
            # Unconditionally: copy_file() would skip a destination that is newer, even if stale.
            shutil.copy2(artifact, source_dir / artifact.name)


native = os.environ.get("FLEXCORE_NO_NATIVE") != "1"
setup(
    ext_modules=[CMakeExtension(f"{PACKAGE}._flexcore")] if native else [],
    cmdclass={"build_ext": CMakeBuild},
)
