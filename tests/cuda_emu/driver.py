"""The emulator as a flexcore CUDA driver (flexcore.backends.cuda.Driver): device memory is host
memory, kernels run through the emulator library (build.py). Test code.

Every access through the driver (htod, dtoh, dtod, memset) is checked against the allocation it
falls in, so a wrong size or offset computed by the backend is an error here. Kernels access
memory unchecked (as on a GPU), but every allocation sits between two guard zones filled with a
canary pattern that is verified after each launch: a kernel that writes out of bounds (up to
GUARD bytes past either end) fails its launch. Out-of-bounds reads are not detected.
"""

from __future__ import annotations

import bisect
import ctypes

import numpy as np

from .build import build

GUARD = 256
_CANARY = np.frombuffer(bytes([0xA5, 0x5A, 0xC3, 0x3C]) * (GUARD // 4), np.uint8)
_STATUS = {1: "bad launch shape", 2: "divergent __syncthreads (some threads finished while others waited)",
           3: "too much dynamic shared memory"}


class EmuDriver:
    """alloc/free/htod/dtoh/dtod/launch on the CPU emulator."""

    name = "emulator"
    block_size = 32  # threads per block the backend uses: few fibers keep emulation fast

    def __init__(self, lib_path=None) -> None:
        self.lib = ctypes.CDLL(str(lib_path or build()))
        self._allocs: dict[int, np.ndarray] = {}
        self._guards: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._starts: list[int] = []
        self._fns: dict[str, object] = {}
        self.launches = 0
        self.bytes_htod = 0
        self.bytes_dtoh = 0

    def has_kernel(self, name: str) -> bool:
        return hasattr(self.lib, f"emu_launch_{name}")

    # -- memory ------------------------------------------------------------------------------
    def alloc(self, nbytes: int) -> int:
        size = max(int(nbytes), 1)
        buf = np.empty(size + 3 * GUARD, np.uint8)
        start = (buf.ctypes.data + GUARD + 255) // 256 * 256 - buf.ctypes.data  # cudaMalloc alignment
        buf[start - GUARD:start] = _CANARY
        buf[start + size:start + size + GUARD] = _CANARY
        ptr = buf.ctypes.data + start
        self._allocs[ptr] = buf[start:start + size]
        self._guards[ptr] = (buf[start - GUARD:start], buf[start + size:start + size + GUARD])
        bisect.insort(self._starts, ptr)
        return ptr

    def check_guards(self) -> None:
        """Raise if a kernel wrote into the guard zone of an allocation."""
        for ptr, (lo, hi) in self._guards.items():
            if not (np.array_equal(lo, _CANARY) and np.array_equal(hi, _CANARY)):
                side = "before" if not np.array_equal(lo, _CANARY) else "after"
                lo[:] = _CANARY
                hi[:] = _CANARY
                raise RuntimeError(f"emu: a kernel wrote out of bounds {side} the allocation at {ptr:#x} "
                                   f"({self._allocs[ptr].size} bytes)")

    def free(self, ptr: int) -> None:
        del self._allocs[ptr]
        del self._guards[ptr]
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
        self.check_guards()
        if status:
            what = _STATUS.get(status, status)
            raise RuntimeError(f"emu: launch of {name} grid={tuple(grid)} block={tuple(block)}: {what}")
