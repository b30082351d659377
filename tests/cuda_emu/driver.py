"""The emulator as a flexcore CUDA driver (flexcore.backends.cuda.Driver): device memory is host
memory, kernels run through the emulator library (build.py). Test code.

Every access through the driver (htod, dtoh, dtod, memset) is checked against the allocation it
falls in, so a wrong size or offset computed by the backend is an error here; the kernels
themselves access memory unchecked (as on a GPU).
"""

from __future__ import annotations

import bisect
import ctypes

import numpy as np

from .build import build

_STATUS = {1: "bad launch shape", 2: "divergent __syncthreads (some threads finished while others waited)",
           3: "too much dynamic shared memory"}


class EmuDriver:
    """alloc/free/htod/dtoh/dtod/launch on the CPU emulator."""

    name = "emulator"
    block_size = 32  # threads per block the backend uses: few fibers keep emulation fast

    def __init__(self, lib_path=None) -> None:
        self.lib = ctypes.CDLL(str(lib_path or build()))
        self._allocs: dict[int, np.ndarray] = {}
        self._starts: list[int] = []
        self._fns: dict[str, object] = {}
        self.launches = 0
        self.bytes_htod = 0
        self.bytes_dtoh = 0

    def has_kernel(self, name: str) -> bool:
        return hasattr(self.lib, f"emu_launch_{name}")

    # -- memory ------------------------------------------------------------------------------
    def alloc(self, nbytes: int) -> int:
        buf = np.empty(max(int(nbytes), 1) + 256, np.uint8)
        ptr = (buf.ctypes.data + 255) // 256 * 256  # cudaMalloc alignment
        self._allocs[ptr] = buf[ptr - buf.ctypes.data:ptr - buf.ctypes.data + max(int(nbytes), 1)]
        bisect.insort(self._starts, ptr)
        return ptr

    def free(self, ptr: int) -> None:
        del self._allocs[ptr]
        self._starts.remove(ptr)

    def _check(self, ptr: int, nbytes: int) -> None:
        i = bisect.bisect_right(self._starts, ptr) - 1
        if i < 0:
            raise RuntimeError(f"emu: pointer {ptr:#x} is not device memory")
        start = self._starts[i]
        if ptr + nbytes > start + self._allocs[start].size:
            raise RuntimeError(f"emu: access of {nbytes} bytes at {ptr:#x} runs past its allocation")

    def htod(self, ptr: int, array: np.ndarray) -> None:
        a = np.ascontiguousarray(array)
        self._check(ptr, a.nbytes)
        ctypes.memmove(ptr, a.ctypes.data, a.nbytes)
        self.bytes_htod += a.nbytes

    def dtoh(self, array: np.ndarray, ptr: int) -> None:
        assert array.flags.c_contiguous
        self._check(ptr, array.nbytes)
        ctypes.memmove(array.ctypes.data, ptr, array.nbytes)
        self.bytes_dtoh += array.nbytes

    def dtod(self, dst: int, src: int, nbytes: int) -> None:
        self._check(dst, nbytes)
        self._check(src, nbytes)
        ctypes.memmove(dst, src, nbytes)

    def memset(self, ptr: int, nbytes: int) -> None:
        self._check(ptr, nbytes)
        ctypes.memset(ptr, 0, nbytes)

    def synchronize(self) -> None:
        pass

    # -- kernels -----------------------------------------------------------------------------
    def launch(self, name: str, grid, block, shared_bytes: int, args) -> None:
        """cuLaunchKernel: args are numpy scalars (pointers as np.uint64)."""
        fn = self._fns.get(name)
        if fn is None:
            fn = getattr(self.lib, f"emu_launch_{name}", None)
            if fn is None:
                raise RuntimeError(f"emu: no kernel {name}")
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
            self._fns[name] = fn
        bufs = [ctypes.create_string_buffer(np.asarray(a).tobytes(), max(np.asarray(a).nbytes, 1)) for a in args]
        params = (ctypes.c_void_p * max(len(bufs), 1))(*[ctypes.addressof(b) for b in bufs])
        g = (ctypes.c_uint * 3)(*(tuple(grid) + (1, 1, 1))[:3])
        b = (ctypes.c_uint * 3)(*(tuple(block) + (1, 1, 1))[:3])
        self.launches += 1
        status = fn(g, b, int(shared_bytes), params)
        if status:
            what = _STATUS.get(status, status)
            raise RuntimeError(f"emu: launch of {name} grid={tuple(grid)} block={tuple(block)}: {what}")
