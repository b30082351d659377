"""The CUDA backend: the cpu backend's lowering (flexcore/backends/lowering.py: buffers, views,
strides, one planned arena) run instruction by instruction as CUDA kernels (kernels/*.cu).

A plan is lowered exactly as for the cpu backend; `prepare` turns each executor instruction into
one or two kernel launches whose arguments are fixed then (device pointers of the arena, of the
plan's input/output/constant buffers and of its parameters; shapes and strides are read by the
kernels from the program's immediates, uploaded once). A run copies the inputs to the device,
launches, and copies the outputs back. Parameters live on the device between calls: each
parameter's storage has one device mirror, uploaded when the host value changed (its version),
and an update is copied on the device into the mirror and reaches the host only when read
(`Storage.replace_lazy`). CALLBACK instructions (ops without a kernel) run the reference
implementation on the host, with their operands copied each way; the backend says so once per op.

The device is reached through a *driver* with five operations (alloc, free, htod, dtoh, launch,
plus dtod and memset): `PyCudaDriver` (pycuda, imported only when the backend is created) or,
in the tests, the CPU emulator of tests/cuda_emu, which runs the same kernel sources.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..ir.core import FlexcoreError, Shared
from ..plan import Plan
from . import lowering as lwr
from .cpu import CPUBackend, _reference_callback

KERNEL_DIR = Path(__file__).resolve().parents[2] / "kernels"
INCLUDE_DIR = Path(__file__).resolve().parents[2] / "csrc" / "include"
NVCC_FLAGS = ("-std=c++17", "-O3")
TILE, GEMM_TILE = 16, 64  # kernels/gemm.cu: threads per block side (FC_CU_TILE), c tile side (FC_CU_BT)
DT_NAME = {0: "f32", 1: "f64", 2: "i64", 3: "bool"}
DT_SIZE = {0: 4, 1: 8, 2: 8, 3: 1}
DT_NP = {0: np.float32, 1: np.float64, 2: np.int64, 3: np.uint8}
COPY_KERNEL = {1: "u8", 4: "u32", 8: "u64"}
IN_STRIDED = 4  # fc_fused_mode FC_IN_STRIDED: rows of `cols` elements, ld apart

_announced: set[str] = set()


class Driver(Protocol):
    """What the backend needs from a CUDA device. Pointers are ints; launch arguments are numpy
    scalars (pointers as np.uint64), in the kernel's parameter order."""

    def alloc(self, nbytes: int) -> int: ...
    def free(self, ptr: int) -> None: ...
    def htod(self, ptr: int, array: np.ndarray) -> None: ...
    def dtoh(self, array: np.ndarray, ptr: int) -> None: ...
    def dtod(self, dst: int, src: int, nbytes: int) -> None: ...
    def memset(self, ptr: int, nbytes: int) -> None: ...
    def launch(self, name: str, grid: tuple, block: tuple, shared_bytes: int, args: list) -> None: ...
    def synchronize(self) -> None: ...


def kernel_sources() -> list[Path]:
    return sorted(KERNEL_DIR.glob("*.cu"))


def source_hash(flags=NVCC_FLAGS) -> str:
    """The cache key of compiled kernels: every kernel source, shared header and flag."""
    h = hashlib.sha256(" ".join(flags).encode())
    for f in kernel_sources() + sorted(KERNEL_DIR.glob("*.cuh")) + sorted((INCLUDE_DIR / "flexcore").glob("*.h")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:20]


class PyCudaDriver:
    """The driver on a real GPU, through pycuda. Kernels come from the fatbins the build put next
    to this package (FLEXCORE_CUDA=1), else they are compiled by pycuda at first use and cached
    in ~/.cache/flexcore/cuda keyed on the source hash and flags."""

    name = "pycuda"
    block_size = 256

    def __init__(self) -> None:
        try:
            import pycuda.autoinit  # noqa: F401  (creates the context)
            import pycuda.driver as cuda
        except Exception as e:  # ImportError, or no driver / no device
            raise FlexcoreError(f"the cuda backend needs pycuda and a CUDA device (pip install .[cuda]): {e}") from e
        self.cuda = cuda
        self._allocs: dict[int, Any] = {}
        self._fns: dict[str, Any] = {}
        self.modules = [self._load(cu) for cu in kernel_sources()]

    def _load(self, cu: Path):
        fatbin = Path(__file__).resolve().parents[1] / f"{cu.stem}.fatbin"
        if fatbin.exists() and fatbin.stat().st_mtime >= cu.stat().st_mtime:
            return self.cuda.module_from_buffer(fatbin.read_bytes())
        from pycuda import compiler

        major, minor = self.cuda.Context.get_device().compute_capability()
        arch = f"sm_{major}{minor}"
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flexcore" / "cuda"
        path = cache / f"{cu.stem}-{source_hash()}-{arch}.cubin"
        if not path.exists():
            cubin = compiler.compile(cu.read_text(), options=list(NVCC_FLAGS), arch=arch, no_extern_c=True,
                                     include_dirs=[str(INCLUDE_DIR), str(KERNEL_DIR)])
            cache.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(cubin)
            tmp.replace(path)
        return self.cuda.module_from_buffer(path.read_bytes())

    def has_kernel(self, name: str) -> bool:
        try:
            self._fn(name)
            return True
        except KeyError:
            return False

    def _fn(self, name: str):
        if name not in self._fns:
            for m in self.modules:
                try:
                    self._fns[name] = m.get_function(name)
                    break
                except self.cuda.LogicError:
                    continue
            else:
                raise KeyError(name)
        return self._fns[name]

    def alloc(self, nbytes: int) -> int:
        a = self.cuda.mem_alloc(max(int(nbytes), 1))
        self._allocs[int(a)] = a
        return int(a)

    def free(self, ptr: int) -> None:
        self._allocs.pop(ptr).free()

    def htod(self, ptr: int, array: np.ndarray) -> None:
        self.cuda.memcpy_htod(ptr, np.ascontiguousarray(array))

    def dtoh(self, array: np.ndarray, ptr: int) -> None:
        self.cuda.memcpy_dtoh(array, ptr)

    def dtod(self, dst: int, src: int, nbytes: int) -> None:
        self.cuda.memcpy_dtod(dst, src, nbytes)

    def memset(self, ptr: int, nbytes: int) -> None:
        self.cuda.memset_d8(ptr, 0, nbytes)

    def launch(self, name, grid, block, shared_bytes, args) -> None:
        self._fn(name)(*args, grid=tuple(grid), block=tuple(block), shared=int(shared_bytes))

    def synchronize(self) -> None:
        self.cuda.Context.synchronize()


def _driver_from_env(spec: str) -> Driver:
    """FLEXCORE_CUDA_DRIVER=module:Class, e.g. tests.cuda_emu.driver:EmuDriver to run anything
    (the whole test suite with FLEXCORE_BACKEND=cuda) on the CPU emulator."""
    import importlib

    mod, _, cls = spec.partition(":")
    try:
        return getattr(importlib.import_module(mod), cls)()
    except (ImportError, AttributeError, ValueError) as e:
        raise FlexcoreError(f"FLEXCORE_CUDA_DRIVER={spec!r}: cannot create the driver ({e})") from e


def announce_fallbacks(ops) -> None:
    for op in sorted(set(ops) - _announced):
        _announced.add(op)
        print(f"flexcore: the cuda backend has no CUDA kernel for {op} yet; it runs on the reference "
              "implementation on the host", file=sys.stderr)


def _p(ptr: int) -> np.uint64:
    return np.uint64(ptr)


def _i64(v: int) -> np.int64:
    return np.int64(v)


def _grid(n: int, block: int) -> tuple[int, int, int]:
    return (max(1, min(-(-n // block), 65535)), 1, 1)


@dataclass
class _Mirror:
    """A parameter's device copy; `version` is the Storage.version it holds."""

    ptr: int
    version: int = -1


def _free_all(driver: Driver, ptrs: list[int]) -> None:
    for p in ptrs:
        driver.free(p)


@dataclass
class CudaProgram:
    """A plan made ready for the device: launches with their arguments bound."""

    lowered: lwr.Lowered
    params: list[Shared]
    in_ptrs: list[int]
    out_ptrs: list[int]
    param_ptrs: list[int]
    steps: list[Callable[[], None]]
    n_outputs: int
    err_ptr: int
    tagged: dict[int, int]  # error tag -> instruction index
    owned: list[int] = field(default_factory=list)  # device allocations of this program

    @property
    def peak_bytes(self) -> int:
        return self.lowered.peak_bytes

    @property
    def arena_bytes(self) -> int:
        return self.lowered.arena_bytes


class CUDABackend:
    """Runs plans as CUDA kernels through a driver (pycuda unless one is given)."""

    name = "cuda"
    fresh_results = True  # outputs are new arrays; updates are applied by run() itself
    # The cpu backend's passes, whatever ops they make: steps this backend has no kernel for are
    # lowered as host CALLBACKs (lowering.lower with `opcodes`), never a crash.
    passes = CPUBackend.passes
    # The executor opcodes _lower_instr runs; the lowering turns any other into a host CALLBACK.
    opcodes = frozenset({lwr.CALLBACK, lwr.COPY, lwr.FILL, lwr.COPY_STRIDED, lwr.UNARY, lwr.BINARY, lwr.COMPARE,
                         lwr.WHERE, lwr.CAST, lwr.GEMM, lwr.REDUCE, lwr.SOFTMAX, lwr.GATHER, lwr.SCATTER_ADD,
                         lwr.ONE_HOT, lwr.UNFOLD, lwr.FOLD, lwr.FUSED_EW, lwr.PHILOX, lwr.CONV, lwr.POOL,
                         lwr.LSTM_CELL, lwr.GRU_CELL})
    pool_modes = frozenset(range(7))  # fc_pool_mode MAX .. GRAD_RELU
    conv_modes = frozenset(range(3))  # fc_conv_mode
    fused_input_modes = frozenset(range(5))  # fc_fused_mode FULL .. STRIDED

    def supports(self, op: int, n_in: int, ints: list[int], n_dbl: int = 0) -> bool:
        """Whether an executor instruction has CUDA kernels (checked on the opcode and, where an
        opcode has modes that grow, on the mode)."""
        if op not in self.opcodes:
            return False
        if op == lwr.GEMM:  # the scaled form (two doubles and an operand s: a folded SGD step) has none
            return n_dbl == 0
        if op == lwr.POOL:
            return ints[1] in self.pool_modes
        if op == lwr.CONV:
            return ints[1] in self.conv_modes
        if op == lwr.REDUCE:  # [dt, op, outer, red, inner] (a sixth, x's row stride, has no kernel)
            return len(ints) == 5
        if op == lwr.FUSED_EW:  # [dt, n, cols, n_instr, mode of each input, code, lds of STRIDED inputs]
            modes = ints[4:4 + n_in]
            dense_out = len(ints) == 4 + n_in + 4 * ints[3] + modes.count(lwr.IN_STRIDED)  # no out row stride
            return dense_out and all(m in self.fused_input_modes for m in modes)
        return True


    def __init__(self, driver: Driver | None = None) -> None:
        if driver is None and os.environ.get("FLEXCORE_CUDA_DRIVER"):
            driver = _driver_from_env(os.environ["FLEXCORE_CUDA_DRIVER"])
        self.driver = driver if driver is not None else PyCudaDriver()
        self.block = int(getattr(self.driver, "block_size", 256))
        if self.block < 1 or self.block > 256 or self.block & (self.block - 1):
            raise FlexcoreError(f"cuda driver block_size must be a power of two <= 256, got {self.block}")
        # Keyed by the Storage itself (weakly): a parameter's device copy dies with it.
        self._mirrors: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    # -- parameters ------------------------------------------------------------------------
    def _mirror(self, sv: Shared) -> _Mirror:
        st = sv.storage
        m = self._mirrors.get(st)
        if m is None:
            m = _Mirror(self.driver.alloc(max(sv.nbytes, 1)))
            self._mirrors[st] = m
            weakref.finalize(st, _free_all, self.driver, [m.ptr]).atexit = False
        return m

    def _sync_params(self, prog: CudaProgram) -> None:
        for sv in prog.params:
            m = self._mirror(sv)
            if m.version != sv.storage.version:
                self.driver.htod(m.ptr, sv.storage.get())
                m.version = sv.storage.version

    # -- preparing ---------------------------------------------------------------------------
    def prepare(self, plan: Plan) -> CudaProgram:
        low = lwr.lower(plan, self.supports)
        announce_fallbacks(low.fallback_ops)
        plan.peak_bytes = low.peak_bytes
        drv = self.driver
        owned: list[int] = []

        def upload(arr: np.ndarray) -> int:
            arr = np.ascontiguousarray(arr)
            ptr = drv.alloc(max(arr.nbytes, 1))
            owned.append(ptr)
            if arr.nbytes:
                drv.htod(ptr, arr)
            return ptr

        def new(nbytes: int) -> int:
            ptr = drv.alloc(max(int(nbytes), 1))
            owned.append(ptr)
            return ptr

        in_ptrs = [new(math.prod(s) * np.dtype(d).itemsize) for d, s in low.input_specs]
        out_ptrs = [new(math.prod(s) * np.dtype(d).itemsize) for d, s in low.output_specs]
        param_ptrs = [self._mirror(sv).ptr for sv in low.params]
        const_ptrs = [upload(c) for c in low.consts]
        arena = new(low.arena_bytes)
        code_ptr = upload(low.code.astype(np.int64))
        err_ptr = new(4)
        bufs = low.buffers

        def ptr(b: int) -> int:
            kind, a, off, _ = (int(v) for v in bufs[b])
            if kind == lwr.INPUT:
                return in_ptrs[a]
            if kind == lwr.PARAM:
                return param_ptrs[a]
            if kind == lwr.CONST:
                return const_ptrs[a]
            if kind == lwr.ARENA:
                return arena + off
            if kind == lwr.ALIAS:
                return ptr(a) + off
            return out_ptrs[a]

        callback = _reference_callback(low.callback_steps)
        steps: list[Callable[[], None]] = []
        tagged: dict[int, int] = {}
        code = [int(c) for c in low.code]
        fimm = [float(f) for f in low.fimm]
        pc, fpos, index = 0, 0, 0
        blk = self.block
        launch = drv.launch
        while pc < len(code):
            op, n_in, n_out, n_int, n_dbl = code[pc:pc + 5]
            ops = code[pc + 5:pc + 5 + n_in + n_out]
            ins, outs = [ptr(b) for b in ops[:n_in]], [ptr(b) for b in ops[n_in:]]
            ipos = pc + 5 + n_in + n_out  # index of the first immediate in the code
            imm = code[ipos:ipos + n_int]
            dbl = fimm[fpos:fpos + n_dbl]
            gptr = code_ptr + 8 * ipos  # the immediates, on the device
            tag = index + 1
            pc, fpos = ipos + n_int, fpos + n_dbl
            st = self._lower_instr(op, ins, outs, imm, dbl, gptr, err_ptr, tag, blk, launch, upload,
                                   low, ops, callback, ptr)
            if st.get("tagged"):
                tagged[tag] = index
            steps.extend(st["steps"])
            index += 1
        prog = CudaProgram(low, list(low.params), in_ptrs, out_ptrs, param_ptrs, steps, len(plan.outputs),
                           err_ptr, tagged, owned)
        weakref.finalize(prog, _free_all, drv, owned).atexit = False
        return prog

    def _lower_instr(self, op, ins, outs, imm, dbl, gptr, err_ptr, tag, blk, launch, upload, low, ops, callback,
                     ptr) -> dict:
        """The launches of one executor instruction (encodings: flexcore/executor.h)."""
        drv = self.driver
        steps: list[Callable[[], None]] = []
        add = steps.append

        def k(name, n, args, block=blk):
            grid = _grid(n, block)
            add(lambda: launch(name, grid, (block, 1, 1), 0, args))

        if op == lwr.COPY:
            nbytes = imm[0]
            add(lambda: drv.dtod(outs[0], ins[0], nbytes))
        elif op == lwr.FILL:
            dt, n = imm
            k(f"fc_cu_fill_{DT_NAME[dt]}", n, [_p(outs[0]), np.float64(dbl[0]), _i64(n)])
        elif op == lwr.COPY_STRIDED:
            eb, nd = imm[0], imm[1]
            n = math.prod(imm[2:2 + nd])
            if eb not in COPY_KERNEL:
                raise FlexcoreError(f"internal: strided copy of {eb}-byte elements has no CUDA kernel")
            k(f"fc_cu_copy_strided_{COPY_KERNEL[eb]}", n, [_p(gptr + 8), _p(ins[0]), _p(outs[0]), _i64(n)])
        elif op == lwr.UNARY:
            dt, code, n = imm
            if dt == 2:
                k("fc_cu_neg_i64", n, [_p(ins[0]), _p(outs[0]), _i64(n)])
            else:
                k(f"fc_cu_unary_{DT_NAME[dt]}", n, [np.int32(code), _p(ins[0]), _p(outs[0]), _i64(n)])
        elif op in (lwr.BINARY, lwr.COMPARE):
            dt, code, nd = imm[:3]
            n = math.prod(imm[3:3 + nd])
            kind = "binary" if op == lwr.BINARY else "compare"
            k(f"fc_cu_{kind}_{DT_NAME[dt]}", n,
              [np.int32(code), _p(gptr + 16), _p(ins[0]), _p(ins[1]), _p(outs[0]), _i64(n)])
        elif op == lwr.WHERE:
            dt, nd = imm[:2]
            n = math.prod(imm[2:2 + nd])
            k(f"fc_cu_where_{DT_NAME[dt]}", n, [_p(gptr + 8), _p(ins[0]), _p(ins[1]), _p(ins[2]), _p(outs[0]), _i64(n)])
        elif op == lwr.CAST:
            src, dst, n = imm
            k("fc_cu_cast", n, [np.int32(src), np.int32(dst), _p(ins[0]), _p(outs[0]), _i64(n)])
        elif op == lwr.GEMM:
            dt, ta, tb, batch, m, n, kk, lda, sa, ldb, sb, ldc, sc, act = imm
            if batch and m and n:
                bias = ins[2] if len(ins) == 3 else 0
                grid = (min(-(-n // GEMM_TILE), 65535), min(-(-m // GEMM_TILE), 65535), min(batch, 65535))
                args = [np.int32(ta), np.int32(tb), _i64(batch), _i64(m), _i64(n), _i64(kk), _p(ins[0]), _i64(lda),
                        _i64(sa), _p(ins[1]), _i64(ldb), _i64(sb), _p(outs[0]), _i64(ldc), _i64(sc), _p(bias),
                        np.int32(act)]
                name = f"fc_cu_gemm_{DT_NAME[dt]}"
                add(lambda: launch(name, grid, (TILE, TILE, 1), 0, args))
        elif op == lwr.REDUCE:
            dt, rop, outer, red, inner = imm
            n_out = outer * inner
            out_size = 8 if (rop == 0 and dt == 3) else DT_SIZE[dt]
            if n_out == 0:
                pass
            elif red == 0:
                if rop == 1:
                    raise FlexcoreError("internal: max over an empty axis")
                add(lambda: drv.memset(outs[0], n_out * out_size))
            else:
                opname = "sum" if rop == 0 else "max"
                args = [_i64(outer), _i64(red), _p(ins[0]), _p(outs[0])]
                if dt == 3:
                    k(f"fc_cu_reduce_{opname}_bool", n_out,
                      [_i64(outer), _i64(red), _i64(inner), _p(ins[0]), _p(outs[0])])
                elif inner == 1:
                    name, grid = f"fc_cu_reduce_rows_{opname}_{DT_NAME[dt]}", (min(outer, 65535), 1, 1)
                    add(lambda: launch(name, grid, (blk, 1, 1), 0, args))
                else:
                    k(f"fc_cu_reduce_cols_{opname}_{DT_NAME[dt]}", n_out,
                      [_i64(outer), _i64(red), _i64(inner), _p(ins[0]), _p(outs[0])])
        elif op == lwr.SOFTMAX:
            dt, log, rows, cols = imm
            if rows and cols:
                name, grid = f"fc_cu_softmax_{DT_NAME[dt]}", (min(rows, 65535), 1, 1)
                args = [np.int32(log), _i64(rows), _i64(cols), _p(ins[0]), _p(outs[0])]
                add(lambda: launch(name, grid, (blk, 1, 1), 0, args))
        elif op in (lwr.GATHER, lwr.SCATTER_ADD):
            dt, n_idx, rows, length = imm
            tail = [_p(err_ptr), np.int32(tag)]
            if op == lwr.GATHER:
                k(f"fc_cu_gather_{COPY_KERNEL[DT_SIZE[dt]]}", n_idx * length,
                  [_i64(n_idx), _p(ins[1]), _i64(rows), _i64(length), _p(ins[0]), _p(outs[0]), *tail])
            else:
                nbytes = rows * length * DT_SIZE[dt]
                add(lambda: drv.memset(outs[0], nbytes))
                k(f"fc_cu_scatter_add_{DT_NAME[dt]}", n_idx * length,
                  [_i64(n_idx), _p(ins[1]), _i64(rows), _i64(length), _p(ins[0]), _p(outs[0]), *tail])
            return {"steps": steps, "tagged": True}
        elif op == lwr.ONE_HOT:
            dt, n, classes = imm
            k(f"fc_cu_one_hot_{DT_NAME[dt]}", n * classes,
              [_i64(n), _p(ins[0]), _i64(classes), _p(outs[0]), _p(err_ptr), np.int32(tag)])
            return {"steps": steps, "tagged": True}
        elif op in (lwr.UNFOLD, lwr.FOLD):
            dt, nd, nn, c = imm[:4]
            sp, ker, strd, lo, hi, dil = (imm[4 + i * nd:4 + (i + 1) * nd] for i in range(6))
            if nd == 1:  # the 2-D problem with a height-1 image and kernel
                sp, ker, strd, lo, hi, dil = ([1, *sp], [1, *ker], [1, *strd], [0, *lo], [0, *hi], [1, *dil])
            outn = [(sp[d] + lo[d] + hi[d] - dil[d] * (ker[d] - 1) - 1) // strd[d] + 1 for d in range(2)]
            geo = np.array([nn * c, sp[0], sp[1], ker[0], ker[1], strd[0], strd[1], dil[0], dil[1], lo[0], lo[1],
                            outn[0], outn[1]], np.int64)
            gp = upload(geo)
            n_image = nn * c * sp[0] * sp[1]
            n_cols = nn * c * outn[0] * outn[1] * ker[0] * ker[1]
            if op == lwr.UNFOLD:
                pad = DT_NP[dt](dbl[0] != 0) if dt == 3 else DT_NP[dt](dbl[0])
                k(f"fc_cu_unfold_{DT_NAME[dt]}", n_cols, [_p(gp), pad, _p(ins[0]), _p(outs[0]), _i64(n_cols)])
            else:
                k(f"fc_cu_fold_{DT_NAME[dt]}", n_image, [_p(gp), _p(ins[0]), _p(outs[0]), _i64(n_image)])
        elif op == lwr.FUSED_EW:
            dt, n, cols, n_instr = imm[:4]
            n_in = len(ins)
            modes, code_end = imm[4:4 + n_in], 4 + n_in + 4 * n_instr
            strided = iter(imm[code_end:])  # the row stride of each STRIDED input, in order
            lds = [next(strided) if m == IN_STRIDED else 0 for m in modes]
            if max(lds, default=0) >= 2**31:
                raise FlexcoreError("internal: a fused elementwise input's row stride exceeds int32")
            prog = np.array(modes + imm[4 + n_in:code_end] + lds, np.int32)
            pp, ip = upload(prog), upload(np.array(ins, np.uint64))
            cp = upload(np.array(dbl or [0.0], np.float64))
            k(f"fc_cu_fused_{DT_NAME[dt]}", n, [_p(pp), np.int32(n_in), np.int32(n_instr), _p(ip), _p(cp), _i64(n),
                                                _i64(max(cols, 1)), _p(outs[0])])
        elif op == lwr.PHILOX:
            dt, salt, n = imm
            k(f"fc_cu_philox_{DT_NAME[dt]}", n,
              [_p(ins[0]), np.uint64(salt % 2**64), _i64(n), _p(outs[0]), _p(err_ptr), np.int32(tag)])
            return {"steps": steps, "tagged": True}
        elif op == lwr.CONV:  # kernels/conv.cu; the scratch output is not needed
            dt, mode, n, c, o, groups, _, h, w, kh, kw, sh, sw, phl, pwl, phh, pwh, dh, dw = imm[:19]
            oh = (h + phl + phh - dh * (kh - 1) - 1) // sh + 1
            ow = (w + pwl + pwh - dw * (kw - 1) - 1) // sw + 1
            t = DT_NAME[dt]
            if mode == 0:
                bias, act = (ins[2], imm[19]) if len(ins) == 3 else (0, 0)  # conv_forward_bias; NULL: none
                k(f"fc_cu_conv_fwd_{t}", n * o * oh * ow, [_p(gptr), _p(ins[0]), _p(ins[1]), _p(bias), np.int32(act),
                                                            _p(outs[0]), _i64(n * o * oh * ow)])
            elif mode == 1:
                k(f"fc_cu_conv_bwd_data_{t}", n * c * h * w, [_p(gptr), _p(ins[0]), _p(ins[1]), _p(outs[0]),
                                                               _i64(n * c * h * w)])
            else:
                name, grid = f"fc_cu_conv_bwd_weight_{t}", (min(o * (c // groups) * kh * kw, 65535), 1, 1)
                args = [_p(gptr), _p(ins[0]), _p(ins[1]), _p(outs[0])]
                add(lambda: launch(name, grid, (blk, 1, 1), 0, args))
        elif op == lwr.POOL:
            dt, mode, n, c, h, w, kh, kw, sh, sw, phl, pwl, phh, pwh = imm
            oh, ow = (h + phl + phh - kh) // sh + 1, (w + pwl + pwh - kw) // sw + 1
            total = n * c * (h * w if mode in (2, 4, 5, 6) else oh * ow)  # BACKWARD, SPREAD, GRAD, GRAD_RELU
            a, b, sh_ = (*ins, 0, 0)[:3]
            k(f"fc_cu_pool_{DT_NAME[dt]}", total, [_p(gptr), _p(a), _p(b), _p(sh_), _p(outs[0]), _i64(total)])
        elif op == lwr.LSTM_CELL:  # kernels/rnn_gates.cu, reading the immediates in place
            dt, mode, n, h = imm[:4]
            flags, t = imm[6], DT_NAME[dt]
            if mode == 0:
                b = ins[1] if flags & 1 else 0
                bias = ins[1 + (flags & 1)] if flags & 2 else 0
                k(f"fc_cu_lstm_fwd_{t}", n * h, [_p(gptr), _p(ins[0]), _p(b), _p(bias), _p(ins[-1]), _p(outs[0])])
            else:
                dc = ins[3] if flags & 1 else 0
                k(f"fc_cu_lstm_bwd_{t}", n * h, [_p(gptr), _p(ins[0]), _p(ins[1]), _p(ins[2]), _p(dc), _p(outs[0])])
        elif op == lwr.GRU_CELL:
            dt, mode, n, h = imm[:4]
            has_h, t = imm[6] & 1, DT_NAME[dt]
            if mode == 0:
                hh = ins[1] if has_h else 0
                k(f"fc_cu_gru_fwd_{t}", n * h, [_p(gptr), _p(ins[0]), _p(hh), _p(ins[1 + has_h]), _p(ins[2 + has_h]),
                                               _p(outs[0])])
            else:
                k(f"fc_cu_gru_bwd_{t}", n * h, [_p(gptr), _p(ins[0]), _p(ins[1]), _p(ins[2]), _p(outs[0])])
        elif op == lwr.CALLBACK:
            idx = imm[0]
            _, specs = low.callbacks[idx]
            srcs, dst = ins, outs[0]
            arrays_spec = [(np.dtype(d), tuple(s)) for d, s in specs]

            def host() -> None:
                arrays = []
                for (d, s), p in zip(arrays_spec[:-1], srcs):
                    a = np.empty(s, d)
                    if a.nbytes:
                        drv.dtoh(a, p)
                    arrays.append(a)
                d, s = arrays_spec[-1]
                out = np.empty(s, d)
                callback(idx, arrays + [out])
                if out.nbytes:
                    drv.htod(dst, out)

            add(host)
        else:
            raise FlexcoreError(f"internal: the cuda backend cannot run executor opcode {op}")
        return {"steps": steps}

    # -- running -----------------------------------------------------------------------------
    def run(self, plan: Plan, prog: CudaProgram, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], list]:
        drv = self.driver
        for p, a in zip(prog.in_ptrs, inputs):
            if a.nbytes:
                drv.htod(p, a)
        self._sync_params(prog)
        if prog.tagged:
            drv.memset(prog.err_ptr, 4)
        for step in prog.steps:
            step()
        if prog.tagged:
            err = np.zeros(1, np.int32)
            drv.dtoh(err, prog.err_ptr)
            if err[0]:
                i = prog.tagged.get(int(err[0]))
                stp = prog.lowered.instr_steps[i] if i is not None else None
                what = "index out of range" if stp is None or stp.op != "random_uniform" else "negative seed"
                if stp is None:
                    raise FlexcoreError(f"cuda kernel error: {what}")
                raise FlexcoreError(f"while computing {stp.var.label()} ({stp.op}, shape {stp.var.shape}): {what}")
        outs = []
        for (dtype, shape), p in zip(prog.lowered.output_specs[:prog.n_outputs], prog.out_ptrs):
            a = np.empty(shape, dtype)
            if a.nbytes:
                drv.dtoh(a, p)
            outs.append(a)
        # Updates: into the parameters' device mirrors; the host sees them when it reads them.
        for (sv, _), p in zip(plan.updates, prog.out_ptrs[prog.n_outputs:]):
            m = self._mirror(sv)
            if sv.nbytes:
                drv.dtod(m.ptr, p, sv.nbytes)
            sv.storage.replace_lazy(self._fetcher(m, sv))
            m.version = sv.storage.version
        return outs, []

    def _fetcher(self, m: _Mirror, sv: Shared) -> Callable[[], np.ndarray]:
        drv, shape, dtype = self.driver, sv.shape, sv.dtype

        def fetch() -> np.ndarray:
            a = np.empty(shape, dtype)
            if a.nbytes:
                drv.dtoh(a, m.ptr)
            return a

        return fetch
