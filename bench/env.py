"""The process environment the benchmarks run in, and a record of the machine they ran on.

Every library gets the same two threads, and OpenBLAS runs at its best: OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE (set on the project's machines, where they slow numpy down) are removed.  Both
must happen before numpy, torch or PyTensor load a BLAS, so `python -m bench` re-executes itself
with the cleaned environment first (`reexec_clean`); nothing else in this module imports numpy at
import time.
"""

from __future__ import annotations

import ctypes.util
import datetime as _dt
import glob
import json
import os
import platform
import sys
from typing import Any

THREADS = 2
BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "FLEXCORE_NUM_THREADS")
_MARK = "FLEXCORE_BENCH_CLEAN"
_UNSET = "FLEXCORE_BENCH_UNSET"


def clean_environ(environ: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The environment to run in (thread counts pinned, the OpenBLAS overrides removed, PyTensor
    pointed at a BLAS it can link) and the overrides that were removed."""
    env = dict(environ)
    removed = {k: env.pop(k) for k in BLAS_VARS if k in env}
    for k in THREAD_VARS:
        env[k] = str(THREADS)
    if "PYTENSOR_FLAGS" not in env:
        flags = ["floatX=float32"]
        ld = system_blas_ldflags()
        if ld:
            flags.append(f"blas__ldflags={ld}")
        env["PYTENSOR_FLAGS"] = ",".join(flags)
    env[_MARK] = "1"
    env[_UNSET] = json.dumps(removed)
    return env, removed


def reexec_clean(module: str = "bench") -> None:
    """Replace this process by `python -m module ARGS` in the clean environment, once."""
    if os.environ.get(_MARK) == "1":
        return
    env, _ = clean_environ(dict(os.environ))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], env)


def removed_overrides() -> dict[str, str]:
    """The OpenBLAS variables the re-exec removed (empty when none were set)."""
    try:
        return dict(json.loads(os.environ.get(_UNSET, "{}")))
    except ValueError:
        return {}


def system_blas_ldflags() -> str | None:
    """Linker flags for the system's OpenBLAS (Debian's libopenblas0-pthread / libopenblas-dev),
    which PyTensor's C backend links its GEMM calls against; None when there is none.  Written
    without commas: PYTENSOR_FLAGS splits on them."""
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"):
        for name in ("libopenblas.so", "libopenblas.so.0"):
            if os.path.exists(os.path.join(d, name)):
                lib = "-lopenblas" if name == "libopenblas.so" else f"-l:{name}"
                return f"-L{d} {lib}"
    found = ctypes.util.find_library("openblas")
    return f"-l:{found}" if found else None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_pools() -> list[dict[str, Any]]:
    """The BLAS libraries loaded in this process, with the OpenBLAS kernel each picked."""
    try:
        import threadpoolctl
    except ImportError:
        return [{"error": "threadpoolctl not installed"}]
    return [
        {k: info.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "filepath")}
        for info in threadpoolctl.threadpool_info()
        if info.get("user_api") == "blas"
    ]


def limit_threads() -> None:
    """Pin every thread pool this process has loaded so far to THREADS."""
    try:
        import threadpoolctl

        threadpoolctl.threadpool_limits(THREADS)
    except ImportError:
        pass
    try:
        import torch

        torch.set_num_threads(THREADS)
    except ImportError:
        pass
    from flexcore import _native

    if _native.module is not None and hasattr(_native.module, "set_num_threads"):
        _native.module.set_num_threads(THREADS)  # FLEXCORE_NUM_THREADS says the same; this is sure


def _version(mod: str) -> str | None:
    try:
        m = __import__(mod)
    except Exception as e:  # a broken install is reported, not fatal
        return f"not importable ({type(e).__name__})"
    return getattr(m, "__version__", "?")


def machine_record() -> dict[str, Any]:
    """Date, CPU, the ISA flexcore's kernels use, threads, library versions, BLAS kernels."""
    from flexcore import _native

    rec: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "flexcore_isa": _native.isa(),
        "flexcore_native": _native.available,
        "threads": THREADS,
        "flexcore_gemm_threads": getattr(_native.module, "get_num_threads", lambda: None)(),
        "python": platform.python_version(),
        "versions": {m: _version(m) for m in ("flexcore", "numpy", "torch", "pytensor")},
        "openblas_overrides_removed": removed_overrides(),
        # Other processes on the same cores distort everything (2-thread OpenMP pools most):
        # the load average says how busy the machine was.
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "blas": blas_pools(),
    }
    try:
        import torch

        rec["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        rec["torch_threads"] = torch.get_num_threads()
    except Exception:
        pass
    return rec


def openblas_libs_present() -> list[str]:
    """Paths of system OpenBLAS libraries (for the 'peer missing' message)."""
    return sorted(glob.glob("/usr/lib/*/libopenblas*.so*"))
