"""The executor's opt-in profile (Function.start_profiling / profile, FLEXCORE_PROFILE=1) and the
memory planner's gap bookkeeping.  Functional checks only: what is counted and attributed, never
how long anything took."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import flexcore as fc
from flexcore import _native
from flexcore.backends import memory
from flexcore.ir.core import FlexcoreError

ROOT = Path(__file__).resolve().parents[2]

needs_native = pytest.mark.skipif(not _native.available, reason="native extension not built")


def _mlp_step(backend: str):
    rng = np.random.default_rng(0)
    x = fc.placeholder((8, 5), np.float32, name="x")
    w1 = fc.shared(rng.standard_normal((5, 7)).astype(np.float32), name="w1")
    w2 = fc.shared(rng.standard_normal((7, 3)).astype(np.float32), name="w2")
    loss = fc.sum(fc.tanh(fc.tanh(x @ w1) @ w2) ** 2)
    g1, g2 = fc.grad(loss, [w1, w2])
    f = fc.function([x], loss, updates=[(w1, w1 - 0.1 * g1), (w2, w2 - 0.1 * g2)], backend=backend)
    return f, rng.standard_normal((8, 5)).astype(np.float32)


@needs_native
def test_profile_counts_runs_and_attributes_every_instruction():
    f, xv = _mlp_step("cpu")
    f(xv)  # not profiled
    f.start_profiling()
    for _ in range(3):
        f(xv)
    p = f.profile()
    n_instr = len(f._kernels.lowered.instr_steps)
    assert p.runs == 3
    assert p.seconds.shape == (n_instr,) and len(p.kernels) == len(p.ops) == len(p.labels) == n_instr
    assert (p.seconds >= 0).all() and p.total > 0
    assert "GEMM" in p.kernels
    assert sum(r.instructions for r in p.rows) == n_instr
    assert sum(p.by_kernel().values()) == pytest.approx(p.total)
    assert sum(p.by_op().values()) == pytest.approx(p.total)
    assert "GEMM" in str(p) and "3 run(s)" in str(p)
    f.stop_profiling()
    f(xv)
    assert f.profile().runs == 3  # stopped: totals kept, no more runs counted
    f.start_profiling()  # restarting clears
    assert f.profile().runs == 0 and f.profile().total == 0


@needs_native
def test_profiling_leaves_results_unchanged():
    f, xv = _mlp_step("cpu")
    g, _ = _mlp_step("cpu")
    g.start_profiling()
    for _ in range(2):
        np.testing.assert_array_equal(f(xv), g(xv))


def test_profile_needs_an_executor():
    f, _ = _mlp_step("reference")
    with pytest.raises(FlexcoreError, match="profiling needs the cpu backend"):
        f.start_profiling()


@needs_native
def test_env_var_profiles_and_reports_at_exit():
    code = (
        "import numpy as np, flexcore as fc\n"
        "x = fc.placeholder((4, 3), np.float32, name='x')\n"
        "w = fc.shared(np.ones((3, 2), np.float32), name='w')\n"
        "f = fc.function([x], fc.sum(x @ w), backend='cpu', name='probe')\n"
        "f(np.ones((4, 3), np.float32)); f(np.ones((4, 3), np.float32))\n"
        "assert f.profile().runs == 2\n"
    )
    env = {**os.environ, "FLEXCORE_PROFILE": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "profile of function 'probe': 2 run(s)" in r.stderr and "GEMM" in r.stderr


def test_opcodes_decode_the_instruction_stream():
    from flexcore.profile import opcodes

    # two instructions: op 9 with 2 ins, 1 out, 3 ints, 1 double; op 1 with 1 in, 1 out
    code = np.array([9, 2, 1, 3, 1, 10, 11, 12, 7, 8, 9, 1, 1, 1, 0, 0, 4, 5], np.int64)
    assert opcodes(code) == [9, 1]


def test_planner_merges_neighbouring_gaps():
    # a and b die together and leave one gap of 256 bytes below c: d (256 bytes) fits there
    # only if the two freed neighbours were merged; e then takes the smallest gap that fits.
    ivs = [
        memory.Interval(0, 128, 0, 1),
        memory.Interval(1, 128, 0, 1),
        memory.Interval(2, 64, 0, 9),
        memory.Interval(3, 256, 2, 9),
        memory.Interval(4, 64, 2, 9),
    ]
    offsets, arena = memory.plan_offsets(ivs)
    assert offsets[3] == 0 and offsets[2] == 256 and offsets[4] == 320
    assert arena == 384 and memory.overlaps(ivs, offsets) == []
