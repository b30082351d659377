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
import tempfile
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
        # Editable installs: the extension module, the library it links against and the fatbins
        # must sit in the source tree.  Each is written to a temporary file beside its destination
        # and renamed over it: copying in place rewrites the pages of a library that running
        # processes have mapped and crashes them; a rename leaves them the old inode.
        build_py = self.get_finalized_command("build_py")
        built_dir = Path(self.build_lib) / PACKAGE
        source_dir = Path(build_py.get_package_dir(PACKAGE))
        pairs = []
        for ext in self.extensions:
            inplace_file, regular_file = self._get_inplace_equivalent(build_py, ext)
            if os.path.exists(regular_file) or not ext.optional:
                pairs.append((Path(regular_file), Path(inplace_file)))
            if getattr(ext, "_needs_stub", False):
                self._write_stub_file(self._get_equivalent_stub(ext, inplace_file), ext, compile=True)
        for artifact in [*built_dir.glob("libflexcore.so"), *built_dir.glob("*.fatbin")]:
            pairs.append((artifact, source_dir / artifact.name))
        for src, dst in pairs:
            _replace_atomically(src, dst)


def _replace_atomically(src: Path, dst: Path) -> None:
    """Copy src to dst through a temporary file in dst's directory and os.replace (always, even
    when dst is newer: it may be stale)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out)
        shutil.copystat(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"copying {src} -> {dst}")


native = os.environ.get("FLEXCORE_NO_NATIVE") != "1"
setup(
    ext_modules=[CMakeExtension(f"{PACKAGE}._flexcore")] if native else [],
    cmdclass={"build_ext": CMakeBuild},
)
