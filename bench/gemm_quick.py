"""flexcore's GEMM against numpy (OpenBLAS), float32, same thread count for both.

    PYTHONPATH=. python bench/gemm_quick.py [--threads 2] [--rounds 7] [--only square|rnn]

Square products n = 64 .. 2048 and the shapes of an RNN step (batch m = 32/64, k = 256/512 inputs,
n = 4 * 256 gate units) with their backward variants: dX = dY @ W^T (NT) and dW = X^T @ dY (TN).
Each case is validated against a float64 product first, then timed interleaved (flexcore, numpy,
flexcore, numpy, ...: the host's speed drifts by up to 2x over minutes, so only same-window ratios
mean anything); a round times enough repetitions for --round-ms and the table shows the median
round of each library and the ratio of the medians.

Before each round the benchmark sleeps --settle seconds: both libraries keep their worker threads
polling for a while after a call (OpenBLAS for ~2^28 cycles, flexcore for 100 us), and a round that
starts while the other library's workers still poll shares the cores with them (measured: flexcore
at half speed right after numpy). Rounds of 150 ms make the first calls after the pause (workers
waking up, caches refilling) negligible: with 20 ms rounds both libraries measured 20-40% slower.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# OpenBLAS reads these when it loads: let it pick its kernels for this CPU (no forced core type or
# cache size left over from the environment) and use the benchmark's thread count.
for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(var, None)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="threads for both libraries (default 2)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds per case (default 7)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--only", choices=["square", "rnn"], help="run one group of cases")
    p.add_argument("--settle", type=float, default=0.15, help="idle seconds before each round (default 0.15)")
    p.add_argument("--round-ms", type=float, default=150.0, help="timed milliseconds per round (default 150)")
    return p.parse_args()


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.threads)
    os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)

import numpy as np  # noqa: E402  (after the OpenBLAS environment is set)
from threadpoolctl import threadpool_info, threadpool_limits  # noqa: E402

from flexcore import _native  # noqa: E402


def cases() -> list[tuple[str, int, int, int, bool, bool]]:
    """(label, m, n, k, trans_a, trans_b)"""
    out = []
    if ARGS.only in (None, "square"):
        out += [(f"square {n}", n, n, n, False, False) for n in (64, 128, 256, 512, 1024, 2048)]
    if ARGS.only in (None, "rnn"):
        # the bench suite's RNN rows (bench/cases.py RNN_GEMM_SHAPES): batch x hidden @ hidden x 4 hidden
        out += [(f"rnn bench {m}x{k}@{k}x{n}", m, n, k, False, False) for m, k, n in ((64, 512, 2048), (32, 256, 1024), (32, 128, 512))]
        hidden4 = 4 * 256
        for batch in (32, 64):
            for k in (256, 512):
                out += [
                    (f"rnn fwd x@W    b{batch} k{k}", batch, hidden4, k, False, False),
                    (f"rnn fwd x@W^T  b{batch} k{k}", batch, hidden4, k, False, True),
                    (f"rnn dX dY@W^T  b{batch} k{k}", batch, k, hidden4, False, True),
                    (f"rnn dW X^T@dY  b{batch} k{k}", k, hidden4, batch, True, False),
                ]
    return out


def operands(rng, m, n, k, trans_a, trans_b, dtype):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return a, b


def validate(native, a, b, trans_a, trans_b) -> None:
    op_a = a.T if trans_a else a
    op_b = b.T if trans_b else b
    got = native.gemm(a, b, trans_a=trans_a, trans_b=trans_b).astype(np.float64)
    want = op_a.astype(np.float64) @ op_b.astype(np.float64)
    bound = (op_a.shape[1] + 3) * np.finfo(a.dtype).eps * (np.abs(op_a) @ np.abs(op_b))
    if not np.all(np.abs(got - want) <= bound):
        sys.exit(f"flexcore's GEMM is wrong on {op_a.shape} x {op_b.shape}: not timing it")


def per_call_seconds(fn, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def main() -> None:
    native = _native.module
    if native is None:
        sys.exit(f"flexcore's native part is not built: {_native.load_error}")
    dtype = np.dtype(ARGS.dtype)
    native.set_num_threads(ARGS.threads)
    with threadpool_limits(limits=ARGS.threads):
        blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
        print(
            f"flexcore: isa {native.cpu_isa()}, {native.get_num_threads()} threads | numpy "
            f"{np.__version__}: "
            + ", ".join(
                f"{p['internal_api']} {p['version']} ({p.get('architecture')}, {p['num_threads']} threads)"
                for p in blas
            )
        )
        print(f"{dtype}, median of {ARGS.rounds} interleaved rounds; load average {os.getloadavg()[0]:.2f} at start\n")
        print(
            f"{'case':28s} {'m':>5s} {'n':>5s} {'k':>5s} {'op':>3s} | {'flexcore':>9s} "
            f"{'numpy':>9s} GFLOP/s | {'fc/np':>5s} | {'fc us':>9s} | load"
        )
        rng = np.random.default_rng(0)
        for label, m, n, k, ta, tb in cases():
            a, b = operands(rng, m, n, k, ta, tb, dtype)
            validate(native, a, b, ta, tb)
            op_a, op_b = (a.T if ta else a), (b.T if tb else b)
            c_fc = np.empty((m, n), dtype)
            c_np = np.empty((m, n), dtype)

            def run_fc(a=a, b=b, ta=ta, tb=tb, c=c_fc):
                native.gemm(a, b, trans_a=ta, trans_b=tb, c=c)

            def run_np(op_a=op_a, op_b=op_b, c=c_np):
                np.matmul(op_a, op_b, out=c)

            flops = 2.0 * m * n * k
            run_fc(), run_np()  # warm up: pools started, buffers grown
            single = min(per_call_seconds(run_fc, 1), per_call_seconds(run_np, 1))
            reps = max(1, int(ARGS.round_ms / 1000 / max(single, 1e-7)))
            t_fc, t_np = [], []
            for _ in range(ARGS.rounds):
                time.sleep(ARGS.settle)
                t_fc.append(per_call_seconds(run_fc, reps))
                time.sleep(ARGS.settle)
                t_np.append(per_call_seconds(run_np, reps))
            fc, nump = float(np.median(t_fc)), float(np.median(t_np))
            op = ("T" if ta else "N") + ("T" if tb else "N")
            print(
                f"{label:28s} {m:5d} {n:5d} {k:5d} {op:>3s} | {flops / fc / 1e9:9.1f} "
                f"{flops / nump / 1e9:9.1f}         | {nump / fc:5.2f} | {fc * 1e6:9.1f} | {os.getloadavg()[0]:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
