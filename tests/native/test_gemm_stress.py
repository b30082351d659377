"""The GEMM thread pool under concurrent use: several Python threads (the GIL is released in
gemm) run products of random sizes, transposes, strides and dtypes at once, some large enough to
be split among the pool's threads, some batched through the C ABI (cffi releases the GIL too), while
another thread changes the thread count. Every result is checked against a float64 product, and a
deadlock fails the test after a timeout instead of hanging it (the workers are daemon threads)."""

from __future__ import annotations

import threading
import time

import numpy as np

from test_gemm import assert_within, make_problem, reference

CALLERS = 4
PRODUCTS_PER_CALLER = 40
TIMEOUT_S = 60.0  # a few seconds normally; generous for a loaded CI machine


def _sizes(rng) -> tuple[int, int, int]:
    if rng.random() < 0.25:  # big enough that the pool splits it
        return tuple(int(x) for x in rng.integers(96, 200, size=3))
    return tuple(int(x) for x in rng.choice([1, 2, 3, 5, 16, 17, 33, 64, 127], size=3))


def _batched(rng, dtype) -> None:
    from flexcore import native_cabi

    lib, ffi = native_cabi.lib(), native_cabi.ffi
    batch, m, n, k = (int(x) for x in rng.integers(1, 48, size=4))
    a = rng.standard_normal((batch, m, k)).astype(dtype)
    b = rng.standard_normal((batch, k, n)).astype(dtype)
    c = np.full((batch, m, n), np.nan, dtype)
    ctype, prefix = ("float", "s") if dtype == np.float32 else ("double", "d")
    status = getattr(lib, f"fc_{prefix}gemm_batched")(
        0, 0, batch, m, n, k, 1.0,
        ffi.from_buffer(f"{ctype}[]", a), k, m * k,
        ffi.from_buffer(f"{ctype}[]", b), n, k * n,
        0.0, ffi.from_buffer(f"{ctype}[]", c, require_writable=True), n, m * n,
    )  # fmt: skip
    assert status == lib.FC_OK
    for i in range(batch):
        assert_within(c[i], *reference(a[i], b[i], 0, 0))


def _caller(native, seed: int, errors: list, done: list) -> None:
    rng = np.random.default_rng(seed)
    try:
        for _ in range(PRODUCTS_PER_CALLER):
            dtype = np.float32 if rng.random() < 0.7 else np.float64
            if rng.random() < 0.1:
                _batched(rng, dtype)
                continue
            m, n, k = _sizes(rng)
            ta, tb = (int(x) for x in rng.integers(0, 2, size=2))
            pad = int(rng.integers(0, 3))
            a, b = make_problem(rng, m, n, k, ta, tb, dtype, pad)
            act = str(rng.choice(["none", "relu", "tanh"]))
            bias = rng.standard_normal(n).astype(dtype) if rng.random() < 0.5 else None
            got = native.gemm(a, b, trans_a=bool(ta), trans_b=bool(tb), bias=bias, act=act)
            assert_within(got, *reference(a, b, ta, tb, bias=bias, act=act))
        done.append(seed)
    except BaseException as e:  # reported by the main thread
        errors.append(e)


def test_concurrent_callers_of_random_sizes(native):
    saved = native.get_num_threads()
    errors: list = []
    done: list = []
    stop = threading.Event()

    def flip_threads() -> None:
        rng = np.random.default_rng(99)
        while not stop.is_set():
            native.set_num_threads(int(rng.integers(1, 4)))
            time.sleep(0.002)

    native.set_num_threads(2)
    callers = [
        threading.Thread(target=_caller, args=(native, seed, errors, done), daemon=True) for seed in range(CALLERS)
    ]
    flipper = threading.Thread(target=flip_threads, daemon=True)
    try:
        flipper.start()
        for t in callers:
            t.start()
        deadline = time.monotonic() + TIMEOUT_S
        for t in callers:
            t.join(max(0.0, deadline - time.monotonic()))
        hung = [t for t in callers if t.is_alive()]
    finally:
        stop.set()
        flipper.join(5)
        native.set_num_threads(saved)
    assert not hung, f"{len(hung)} GEMM callers still running after {TIMEOUT_S} s: a deadlock in the pool?"
    if errors:
        raise errors[0]
    assert sorted(done) == list(range(CALLERS))
