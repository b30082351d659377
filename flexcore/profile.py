"""Opt-in profiles of compiled functions: where a call's time goes, per executor instruction.

    fn.start_profiling()          # or FLEXCORE_PROFILE=1 for every compiled function
    for _ in range(100): fn(*args)
    print(fn.profile())           # time per run by kernel and graph op, then the costliest instructions

With FLEXCORE_PROFILE=1 every cpu-backend function profiles from its creation, and the profiles of
the functions that ran are printed to stderr when the interpreter exits.  Profiling reads a clock
around every instruction (tens of nanoseconds each); a function that is not profiled pays nothing.
"""

from __future__ import annotations

import atexit
import os
import sys
import weakref
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Profile", "ProfileRow", "enabled_by_env"]

# fc_opcode names, by code (flexcore/executor.h)
OPCODE_NAMES = (
    "CALLBACK", "COPY", "FILL", "COPY_STRIDED", "UNARY", "BINARY", "COMPARE", "WHERE", "CAST", "GEMM",
    "REDUCE", "SOFTMAX", "GATHER", "SCATTER_ADD", "ONE_HOT", "UNFOLD", "FOLD", "FUSED_EW", "PHILOX",
    "CONV", "POOL", "LSTM_CELL", "GRU_CELL", "GEMM_PACK",
)
HEADER = 5  # opcode, n_in, n_out, n_int, n_dbl


def opcodes(code: np.ndarray) -> list[int]:
    """The opcode of each instruction of an encoded program (flexcore/executor.h)."""
    out, pos, code = [], 0, [int(c) for c in code]
    while pos < len(code):
        op, n_in, n_out, n_int = code[pos : pos + 4]
        out.append(op)
        pos += HEADER + n_in + n_out + n_int
    return out


@dataclass(frozen=True)
class ProfileRow:
    """Time of one group of instructions (seconds per run, averaged over the profiled runs)."""

    kernel: str  # executor opcode, e.g. GEMM, FUSED_EW
    op: str  # the graph op the instructions compute, e.g. dense, fused_ew, add ('-': output copies)
    instructions: int
    seconds: float  # per run, all the group's instructions together
    share: float  # of the run's total


@dataclass
class Profile:
    """Per-instruction times of a compiled function's runs since profiling started."""

    name: str
    runs: int
    seconds: np.ndarray  # per run, one entry per instruction
    kernels: list[str]  # opcode name per instruction
    ops: list[str]  # graph op per instruction
    labels: list[str]  # the value each instruction computes
    rows: list[ProfileRow] = field(init=False)

    def __post_init__(self) -> None:
        groups: dict[tuple[str, str], list[float]] = defaultdict(list)
        for k, o, s in zip(self.kernels, self.ops, self.seconds):
            groups[(k, o)].append(float(s))
        total = self.total or 1.0
        self.rows = sorted(
            (ProfileRow(k, o, len(v), sum(v), sum(v) / total) for (k, o), v in groups.items()),
            key=lambda r: -r.seconds,
        )

    @property
    def total(self) -> float:
        """Seconds per run inside the instructions (the call's Python side excluded)."""
        return float(self.seconds.sum())

    def by_kernel(self) -> dict[str, float]:
        """Seconds per run for each executor opcode."""
        out: dict[str, float] = defaultdict(float)
        for r in self.rows:
            out[r.kernel] += r.seconds
        return dict(out)

    def by_op(self) -> dict[str, float]:
        """Seconds per run for each graph op."""
        out: dict[str, float] = defaultdict(float)
        for r in self.rows:
            out[r.op] += r.seconds
        return dict(out)

    def top(self, n: int = 10) -> list[tuple[int, float, str]]:
        """The n costliest instructions: (index, seconds per run, what it computes)."""
        idx = np.argsort(-self.seconds, kind="stable")[:n]
        return [(int(i), float(self.seconds[i]), f"{self.kernels[i]} {self.labels[i]}") for i in idx]

    def __str__(self) -> str:
        lines = [f"profile of {self.name}: {self.runs} run(s), {self.total * 1e3:.3f} ms per run in "
                 f"{len(self.seconds)} instructions"]
        lines.append(f"  {'kernel':<13} {'op':<16} {'instrs':>6} {'ms/run':>9} {'share':>6}")
        for r in self.rows:
            lines.append(f"  {r.kernel:<13} {r.op:<16} {r.instructions:>6} {r.seconds * 1e3:>9.4f} {r.share:>6.1%}")
        lines.append("  costliest instructions:")
        for i, s, what in self.top(8):
            lines.append(f"    #{i:<5} {s * 1e3:>9.4f} ms  {what}")
        return "\n".join(lines)


def enabled_by_env() -> bool:
    return os.environ.get("FLEXCORE_PROFILE", "") not in ("", "0")


_at_exit: weakref.WeakSet = weakref.WeakSet()
_registered = False


def report_at_exit(fn) -> None:
    """Print fn's profile to stderr when the interpreter exits (FLEXCORE_PROFILE=1), if it ran."""
    global _registered
    if not _registered:
        atexit.register(_report)
        _registered = True
    _at_exit.add(fn)


def _report() -> None:
    for fn in list(_at_exit):
        try:
            p = fn.profile()
        except Exception:  # the process is exiting; a profile that cannot be read is skipped
            continue
        if p.runs:
            print(p, file=sys.stderr)
