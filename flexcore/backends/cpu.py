"""The CPU backend: a plan is lowered once to an executor program (flexcore/backends/lowering.py)
and every call runs the whole program in C++ (forward, backward, updates) with the GIL released.

Ops without a C kernel run inside the program as CALLBACK instructions on the reference
implementation; the backend says so once per op.  Outputs and updated parameter values are
written straight into fresh arrays, which the caller owns (`fresh_results`): Function hands the
update arrays to the parameters' storages without copying them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import _native
from ..ir.core import REGISTRY, FlexcoreError, Shared
from ..passes import FUSION_PASSES
from ..passes.conv import fuse_conv
from ..passes.rnn import fuse_rnn_cells
from ..plan import Plan, Step
from .lowering import Lowered, lower

_announced: set[str] = set()


def announce_fallbacks(ops) -> None:
    """One line on stderr per op name, the first time a plan needs its reference fallback."""
    for op in sorted(set(ops) - _announced):
        _announced.add(op)
        print(f"flexcore: the cpu backend has no C kernel for {op} yet; it runs on the reference implementation",
              file=sys.stderr)


def _reference_callback(steps: list[Step]) -> Callable[[int, list[np.ndarray]], None]:
    """The host side of CALLBACK instructions: arrays = the step's inputs (read-only views), then
    its output buffer, which receives the reference result."""
    table = [(REGISTRY[st.op].impl, st.attrs, st) for st in steps]

    def callback(index: int, arrays: list[np.ndarray]) -> None:
        impl, attrs, st = table[index]
        try:
            r = impl(*arrays[:-1], **attrs)
        except FlexcoreError:
            raise
        except (ValueError, IndexError, FloatingPointError) as e:
            raise FlexcoreError(f"while computing {st.var.label()} ({st.op}, shape {st.var.shape}): {e}") from e
        r = np.asarray(r)
        if r.shape != st.var.shape:
            raise FlexcoreError(f"internal: kernel '{st.op}' returned shape {r.shape}, expected {st.var.shape}")
        np.copyto(arrays[-1], r, casting="unsafe")  # the reference backend's np.asarray(r, dtype)

    return callback


@dataclass
class Prepared:
    """A plan made ready for the executor."""

    program: object  # flexcore._flexcore.Program
    params: list[Shared]
    output_specs: list[tuple[np.dtype, tuple[int, ...]]]
    n_outputs: int
    callback: Callable
    lowered: Lowered

    @property
    def peak_bytes(self) -> int:
        return self.lowered.peak_bytes

    @property
    def arena_bytes(self) -> int:
        return self.lowered.arena_bytes

    def error(self, exc: RuntimeError) -> FlexcoreError:
        """A failed run as a FlexcoreError naming the node whose kernel failed."""
        i = self.program.failed_instruction
        st = self.lowered.instr_steps[i] if 0 <= i < len(self.lowered.instr_steps) else None
        if st is None:
            return FlexcoreError(str(exc))
        return FlexcoreError(f"while computing {st.var.label()} ({st.op}, shape {st.var.shape}): {exc}")


class CPUBackend:
    """Runs plans on libflexcore's executor."""

    name = "cpu"
    fresh_results = True  # outputs and updates are new arrays, shared with nothing
    # conv ops, LSTM cells, gemm, dense and fused_ew map straight onto kernels; cells are matched
    # once the GEMM passes have joined the gate products, before vertical fusion.
    passes = (fuse_conv, *FUSION_PASSES[: FUSION_PASSES.index("fuse_dense")], fuse_rnn_cells,
              *FUSION_PASSES[FUSION_PASSES.index("fuse_dense") :])

    def __init__(self) -> None:
        if not _native.available:
            raise FlexcoreError(f"the cpu backend needs the native extension, which did not load: {_native.load_error}")

    def prepare(self, plan: Plan) -> Prepared:
        low = lower(plan)
        announce_fallbacks(low.fallback_ops)
        program = _native.module.Program(
            low.buffers, low.code, low.fimm, low.consts, low.input_specs, low.param_specs, low.output_specs,
            low.callbacks,
        )
        # The plan's peak is now the executor's real footprint (arena + caller-side arrays).
        plan.peak_bytes = low.peak_bytes
        return Prepared(program, low.params, low.output_specs, len(plan.outputs),
                        _reference_callback(low.callback_steps), low)

    def set_profiling(self, prep: Prepared, on: bool) -> None:
        prep.program.set_profiling(on)

    def profile(self, prep: Prepared) -> tuple[np.ndarray, int, list[str], list[str], list[str]]:
        """Seconds per run of each instruction, the number of profiled runs, and per instruction
        its opcode name, graph op and the value it computes."""
        from ..profile import OPCODE_NAMES, opcodes

        secs, runs = prep.program.profile()
        kernels = [OPCODE_NAMES[c] if 0 <= c < len(OPCODE_NAMES) else str(c) for c in opcodes(prep.lowered.code)]
        steps = prep.lowered.instr_steps
        ops = [st.op if st is not None else "-" for st in steps]
        labels = [f"{st.var.label()} {st.var.shape}" if st is not None else "(output copy)" for st in steps]
        return np.asarray(secs) / max(runs, 1), int(runs), kernels, ops, labels

    def run(self, plan: Plan, prep: Prepared, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        # Kernels need aligned data; numpy's own arrays are, a view into a byte buffer may not be.
        inputs = [a if a.flags.aligned else a.copy() for a in inputs]
        params = [sv.storage.get() for sv in prep.params]
        outs = [np.empty(shape, dtype) for dtype, shape in prep.output_specs]
        try:
            prep.program.run(inputs, params, outs, prep.callback)
        except RuntimeError as e:  # a kernel's error status (callbacks raise their own errors)
            raise prep.error(e) from None
        n = prep.n_outputs
        return outs[:n], outs[n:]
