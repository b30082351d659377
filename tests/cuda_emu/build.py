"""Builds the CUDA emulator library: the real kernels/*.cu compiled as C++ on the CPU.

For each kernels/<name>.cu the generator writes one translation unit: emu.h (force-included),
the kernel source, then one trampoline per kernel,

    extern "C" int emu_launch_<kernel>(const unsigned* grid, const unsigned* block,
                                       size_t shared_bytes, void** params)

whose arguments are those of cuLaunchKernel: params[i] points at the i-th argument's value. The
kernel names come from the preprocessed source (every kernel is `extern "C" __global__ void
fc_cu_<name>(...)` and emu.h turns __global__ into a marker); the trampoline unpacks params with
the kernel's own parameter types (a template over its function type), so nothing parses C types.

The library is cached under build/cuda_emu/<hash of every input>/, so a session builds it once.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
KERNELS = ROOT / "kernels"
INCLUDE = ROOT / "csrc" / "include"
MARK = re.compile(r'extern\s+"C"\s+__attribute__\(\(used\)\)\s+void\s+(fc_cu_\w+)\s*\(')

TRAMPOLINE_HEAD = """
#include <cstddef>
#include <type_traits>
#include <utility>
namespace emu {
int launch(const unsigned* grid, const unsigned* block, std::size_t shmem, void (*body)(void*), void* params);
template <typename... A, std::size_t... I>
void call_with(void (*f)(A...), void** p, std::index_sequence<I...>)
{
    f(*static_cast<std::remove_cv_t<A>*>(p[I])...);
}
template <typename... A>
void call(void (*f)(A...), void** p)
{
    call_with(f, p, std::index_sequence_for<A...>{});
}
}  // namespace emu
"""

TRAMPOLINE = """
extern "C" int emu_launch_{name}(const unsigned* grid, const unsigned* block, std::size_t shmem, void** params)
{{
    return emu::launch(grid, block, shmem, [](void* p) {{ emu::call(&{name}, static_cast<void**>(p)); }}, params);
}}
"""


def compiler() -> str | None:
    for cxx in (os.environ.get("CXX"), "g++", "clang++", "c++"):
        if cxx and shutil.which(cxx):
            return cxx
    return None


def sources() -> list[Path]:
    """The kernels, plus the emulator's own self-test kernels (never built by nvcc)."""
    return sorted(KERNELS.glob("*.cu")) + [HERE / "selftest.cu"]


def _digest(cxx: str) -> str:
    h = hashlib.sha256(cxx.encode())
    files = [HERE / "emu.h", HERE / "runtime.cpp", Path(__file__)] + sources()
    files += sorted(KERNELS.glob("*.cuh")) + sorted((INCLUDE / "flexcore").glob("*.h"))
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def kernel_names(cxx: str, cu: Path) -> list[str]:
    pre = subprocess.run([cxx, "-std=c++17", "-E", "-x", "c++", "-include", str(HERE / "emu.h"), "-I", str(INCLUDE),
                          "-I", str(KERNELS), str(cu)], check=True, capture_output=True, text=True).stdout
    return sorted(set(MARK.findall(pre)))


def build(out_root: Path | None = None, verbose: bool = False) -> Path:
    """Path of the emulator library, built if the cached one is missing or stale."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++/clang++) found")
    out_root = out_root or ROOT / "build" / "cuda_emu"
    out = out_root / _digest(cxx)
    lib = out / "libfc_cuda_emu.so"
    if lib.exists():
        return lib
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    flags = ["-std=c++17", "-O2", "-g", "-fPIC", "-Wall", "-Wno-unused-function", "-I", str(INCLUDE), "-I",
             str(KERNELS), "-I", str(HERE)]
    units = [HERE / "runtime.cpp"]
    for cu in sources():
        names = kernel_names(cxx, cu)
        tu = tmp / f"emu_{cu.stem}.cpp"
        tu.write_text('#include "emu.h"\n' + f'#include "{cu}"\n' + TRAMPOLINE_HEAD
                      + "".join(TRAMPOLINE.format(name=n) for n in names))
        units.append(tu)

    def compile_one(src: Path) -> Path:
        obj = tmp / (src.stem + ".o")
        r = subprocess.run([cxx, *flags, "-c", str(src), "-o", str(obj)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"emulator build failed for {src.name}:\n{r.stderr[-4000:]}")
        return obj

    with ThreadPoolExecutor(max_workers=2) as pool:
        objs = list(pool.map(compile_one, units))
    subprocess.run([cxx, "-shared", "-o", str(tmp / lib.name), *map(str, objs)], check=True)
    try:
        tmp.rename(out)
    except OSError:  # another process won the race; its library is the same
        shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        print(f"built {lib}", file=sys.stderr)
    return lib


if __name__ == "__main__":
    print(build(verbose=True))
