"""The cuda backend in emulation (tests/cuda_emu: the real kernels/*.cu run on the CPU) against the
reference backend: every op case of the registry suite forward and backward, the cpu backend
suite's edge layouts, training with parameters kept on the device, Philox bit for bit, errors.

No GPU is involved: what emulation cannot check (timing, coalescing, races between blocks, the
GPU's own libm) is listed in emu.h. Tolerances are the cpu backend's (test_cpu_backend.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import flexcore as fc
from flexcore.backends import lowering
from flexcore.ir.core import FlexcoreError, apply

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ir"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backends"))
from op_cases import CASES
from test_cpu_backend import DTYPES, _differentiable, _edge_cases, assert_close, case_gradients, mlp_step, setup_case

REF = "reference"


def both(phs, outs, feeds, backend):
    ref = fc.function(phs, outs, backend=REF)(*feeds)
    got = fc.function(phs, outs, backend=backend)(*feeds)
    return got, ref


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [pytest.param(c, id=c.id) for c in CASES])
def test_forward_matches_reference(c, dtype, cuda_backend):
    _, phs, feeds, outs = setup_case(c, dtype)
    got, ref = both(phs, outs, feeds, cuda_backend)
    for k, (g, r) in enumerate(zip(got, ref, strict=True)):
        assert_close(g, r, dtype, f"{c.id} output {k}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [pytest.param(c, id=c.id) for c in CASES if _differentiable(c)])
def test_backward_matches_reference(c, dtype, cuda_backend):
    phs, feeds, grads = case_gradients(c, dtype)
    got, ref = both(phs, grads, feeds, cuda_backend)
    for k, (g, r) in enumerate(zip(got, ref, strict=True)):
        assert_close(g, r, dtype, f"{c.id} gradient {k}")


@pytest.mark.parametrize(("specs", "build", "feeds"), _edge_cases())
def test_edge_layouts_match_reference(specs, build, feeds, cuda_backend):
    phs = [fc.placeholder(s, d) for s, d in specs]
    got, ref = both(phs, build(*phs), feeds, cuda_backend)
    for k, (g, r) in enumerate(zip(got, ref, strict=True)):
        assert_close(g, r, np.float64, f"output {k}")


def test_every_op_of_the_suite_has_a_kernel(cuda_backend, capsys):
    """Every opcode the lowering emits for the op suite has a CUDA kernel (no host fallback),
    and the kernels it names exist in the emulated library."""
    ops, opcodes = set(), set()
    for c in CASES:
        for dtype in (np.float32, np.float64):
            _, phs, _, outs = setup_case(c, dtype)
            f = fc.function(phs, outs, backend=cuda_backend)
            low = f._kernels.lowered
            assert not low.fallback_ops, (c.id, low.fallback_ops)
            ops |= {st.op for st in f.plan.steps}
            pc = 0
            code = low.code
            while pc < len(code):
                opcode, n_in, n_out, n_int, _ = (int(v) for v in code[pc:pc + 5])
                opcodes.add(opcode)
                pc += 5 + n_in + n_out + n_int
    names = {v: k for k, v in lowering.OPCODES.items()}
    print(f"\ncuda backend: {len(ops)} plan ops of the suite run as CUDA kernels, 0 fall back; "
          f"opcodes used: {sorted(names[o] for o in opcodes)}", file=sys.__stderr__)
    assert lowering.CALLBACK not in opcodes
    assert len(opcodes) >= 15


def test_training_keeps_parameters_on_the_device(cuda_backend, emu_driver):
    for dtype in (np.float64, np.float32):
        results = {}
        for backend in (cuda_backend, REF):
            ins, loss, updates, params, feeds = mlp_step(dtype, sizes=(37, 19, 11, 5), batch=9)
            f = fc.function(ins, loss, updates=updates, backend=backend)
            losses = [float(f(*feeds))]
            if backend is cuda_backend:  # later calls move only the inputs and the loss
                before = emu_driver.bytes_htod, emu_driver.bytes_dtoh
                losses += [float(f(*feeds)) for _ in range(2)]
                moved_in = emu_driver.bytes_htod - before[0]
                moved_out = emu_driver.bytes_dtoh - before[1]
                assert moved_in == 2 * sum(a.nbytes for a in feeds)
                # the loss, and the error word of programs with index checks
                assert moved_out == 2 * np.dtype(dtype).itemsize + (2 * 4 if f._kernels.tagged else 0)
            else:
                losses += [float(f(*feeds)) for _ in range(2)]
            results[backend is cuda_backend] = (losses, [p.get_value() for p in params])
        (lc, pc), (lr, pr) = results[True], results[False]
        assert_close(np.array(lc, dtype), np.array(lr, dtype), dtype)
        for a, b in zip(pc, pr, strict=True):
            assert_close(a, b, dtype)


def test_a_host_write_to_a_parameter_reaches_the_device(cuda_backend):
    w = fc.shared(np.ones((3,), np.float64), name="w")
    x = fc.placeholder((3,), np.float64)
    f = fc.function([x], x * w, updates=[(w, w * 2.0)], backend=cuda_backend)
    np.testing.assert_array_equal(f(np.ones(3)), np.ones(3))
    np.testing.assert_array_equal(w.get_value(), np.full(3, 2.0))  # fetched lazily from the device
    w.set_value(np.full(3, 5.0))
    np.testing.assert_array_equal(f(np.ones(3)), np.full(3, 5.0))
    np.testing.assert_array_equal(w.get_value(), np.full(3, 10.0))


def test_philox_is_bit_identical_to_the_reference(cuda_backend):
    s = fc.placeholder((), np.int64)
    outs = [apply("random_uniform", s, shape=(37, 3), salt=5, dtype="float32"),
            apply("random_uniform", s, shape=(101,), salt=2**64 - 1, dtype="float64"),
            fc.dropout(fc.const(np.ones((9, 13), np.float32)), 0.3, s) if hasattr(fc, "dropout") else s * 1]
    got, ref = both([s], outs, [np.array(2024)], cuda_backend)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_array_equal(g, r)


def test_a_kernel_error_names_the_node(cuda_backend):
    table = fc.placeholder((4, 2), np.float32, name="table")
    idx = fc.placeholder((3,), np.int64, name="idx")
    f = fc.function([table, idx], fc.gather(table, idx), backend=cuda_backend)
    with pytest.raises(FlexcoreError, match=r"while computing gather \(gather, shape \(3, 2\)\).*index"):
        f(np.zeros((4, 2), np.float32), np.array([0, -1, 2]))
    np.testing.assert_array_equal(f(np.arange(8, dtype=np.float32).reshape(4, 2), np.array([3, 0, 3])),
                                  [[6, 7], [0, 1], [6, 7]])  # the error word was reset
