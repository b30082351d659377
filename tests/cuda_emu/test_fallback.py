"""The cuda backend never meets an executor opcode it lacks: the lowering (given the backend's
opcode set) lowers such steps as CALLBACKs, which run the reference op on the host, announced once."""

from __future__ import annotations

import numpy as np

import flexcore as fc
from flexcore.backends import cuda, lowering

FAKE = 250  # an opcode no backend has


def _fake_sum(lw: lowering.Lowerer, st) -> bool:
    x = lw.dense(st.inputs[0])
    out = lw.value(st.var)
    lw.views[st.out] = out
    lw.emit(FAKE, [lw.operand(x)], [out.buf], [out.size])
    return True


def test_an_unsupported_opcode_falls_back_to_the_reference(cuda_backend, monkeypatch, capsys):
    monkeypatch.setitem(lowering.LOWERINGS, "sum", _fake_sum)
    monkeypatch.setattr(cuda, "_announced", set())
    x = fc.placeholder((5, 7), np.float64, name="x")
    y = fc.sum(x * 2.0, axis=1) + 1.0
    feeds = [np.random.default_rng(0).standard_normal((5, 7))]
    for _ in range(2):  # two programs: the notice comes once
        f = fc.function([x], y, backend=cuda_backend)
        assert FAKE not in lowering.opcodes_of(f._kernels.lowered.code)
        assert lowering.CALLBACK in lowering.opcodes_of(f._kernels.lowered.code)
        np.testing.assert_allclose(f(*feeds), (feeds[0] * 2.0).sum(axis=1) + 1.0, rtol=1e-12)
    err = capsys.readouterr().err
    assert err.count("no CUDA kernel for sum") == 1, err
    # The steps around the fallback still run as kernels, and the cpu lowering is unchanged.
    ops = lowering.opcodes_of(f._kernels.lowered.code)
    assert ops.count(lowering.CALLBACK) == 1 and len(ops) > 1
    assert FAKE in lowering.opcodes_of(lowering.lower(f.plan).code)


def test_an_unsupported_mode_of_a_known_opcode_falls_back(cuda_backend, monkeypatch, capsys):
    """Opcodes whose modes grow (POOL, CONV, FUSED_EW inputs) are checked on the mode too."""
    monkeypatch.setattr(cuda_backend, "pool_modes", frozenset({0, 1, 2, 3, 4}))  # no FC_POOL_GRAD
    monkeypatch.setattr(cuda, "_announced", set())
    x = fc.placeholder((2, 3, 7, 5), np.float64, name="x")
    g = fc.placeholder((2, 3, 3, 4), np.float64, name="g")
    y = fc.max_pool2d(x, (3, 2), stride=(2, 1))
    (gx,) = fc.grad(fc.sum(y * g), [x])
    rng = np.random.default_rng(1)
    feeds = [rng.integers(-2, 2, size=(2, 3, 7, 5)).astype(np.float64), rng.standard_normal((2, 3, 3, 4))]
    f = fc.function([x, g], [y, gx], backend=cuda_backend)
    assert "max_pool_grad" in {st.op for st in f.plan.steps}
    ops = lowering.opcodes_of(f._kernels.lowered.code)
    assert lowering.CALLBACK in ops and lowering.POOL in ops  # the forward still has its kernel
    ref = fc.function([x, g], [y, gx], backend="reference")(*feeds)
    for a, b in zip(f(*feeds), ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert capsys.readouterr().err.count("no CUDA kernel for max_pool_grad") == 1
