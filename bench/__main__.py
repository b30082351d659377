"""python -m bench [--quick | --full] [--cases a,b] [--reps N]

Runs the side-by-side benchmarks, prints the table, writes bench/out/bench-<mode>-<time>.{json,md}
(and latest.{json,md}); --full over all cases also rewrites bench/RESULTS.md.  Exits with 1 when
a peer and flexcore disagree on a loss or a result (a FAILED row), 2 on a bad argument.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from .env import reexec_clean

# Before numpy, torch or PyTensor load a BLAS: pin threads, remove the OpenBLAS overrides.
if __name__ == "__main__":
    reexec_clean("bench")

HERE = os.path.dirname(os.path.abspath(__file__))
CASE_TIMEOUT = {"quick": 600.0, "full": 3600.0}


def parse(argv: list[str]) -> argparse.Namespace:
    from .catalog import CASES

    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="cases:\n" + "\n".join(f"  {k:15s} {v}" for k, v in CASES.items()))
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a few minutes: fewer repetitions, the longest "
                      "sequences and largest sizes shrunk (the default)")
    mode.add_argument("--full", action="store_true", help="every size, more repetitions")
    ap.add_argument("--cases", help="comma-separated case names or prefixes (default: all)")
    ap.add_argument("--reps", type=int, help="timed rounds per model at least (default 3 quick, 7 full)")
    ap.add_argument("--timeout", type=float, help="seconds a case may run before it is stopped and shown as "
                    "missing (default 600 quick, 3600 full)")
    ap.add_argument("--out", default=os.path.join(HERE, "out"), help="output folder (default bench/out)")
    ap.add_argument("--results", action="store_true", help="rewrite bench/RESULTS.md from this run whatever "
                    "its mode (a --full run over all cases always does; the title names the mode)")
    return ap.parse_args(argv)


def run_worker(args: list[str], timeout: float, program: tuple[str, ...] = ("-m", "bench.worker")
               ) -> tuple[dict | None, str]:
    """Run `python -m bench.worker ARGS OUT` and read OUT; on a crash or a hang, None and why.
    The parent itself never loads flexcore's native code: a case that crashes (young C kernels, or
    an extension rebuilt under a running process) takes only its own process down."""
    fd, out = tempfile.mkstemp(suffix=".json", prefix="bench_")
    os.close(fd)
    cmd = [sys.executable, "-X", "faulthandler", *program, *args, out]
    proc = subprocess.Popen(cmd, cwd=os.path.dirname(HERE), start_new_session=True)
    try:
        rc = proc.wait(timeout=timeout)
        why = "" if rc == 0 else (f"its process died of {signal.Signals(-rc).name}" if rc < 0
                                  else f"its process exited with status {rc}")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker's own session: it and what it started
        proc.wait()
        why = f"it did not finish in {timeout:.0f} s (a hang?) and was stopped"
    try:
        with open(out) as f:  # complete, or the rows of the models finished before a crash
            data = json.load(f)
    except (OSError, ValueError):
        data = None
    finally:
        for path in (out, f"{out}.part"):
            if os.path.exists(path):
                os.unlink(path)
    if not why and (data is None or data.get("partial")):
        why = "it wrote no complete result"
    return data, why


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from . import catalog, report
    from .harness import MISSING, Row

    try:
        chosen = catalog.select(args.cases)
    except ValueError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    if args.reps is not None and args.reps < 1:
        print("bench: --reps must be >= 1", file=sys.stderr)
        return 2
    mode = "full" if args.full else "quick"
    timeout = args.timeout or CASE_TIMEOUT[mode]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    load_start = list(os.getloadavg())
    if load_start[0] > 0.5:
        log(f"bench: the machine is busy (load average {load_start[0]:.2f}); other processes distort timings")
    meta, why = run_worker(["--meta"], 300)
    meta = meta or {"error": f"machine record failed: {why}"}
    t0 = time.perf_counter()
    rows: list[Row] = []
    notes: list[str] = []
    for name in chosen:
        t_case = time.perf_counter()
        data, why = run_worker([name, mode, str(args.reps or 0)], timeout)
        data = data or {}
        rows += [Row(**r) for r in data.get("rows", [])]
        notes += data.get("notes", [])
        for pool in data.get("blas", []):
            if pool not in meta.setdefault("blas", []):
                meta["blas"].append(pool)
        if why:
            model = data.get("current") or "-"
            rows.append(Row(name, model, "-", "-", status=MISSING,
                            note=f"the case stopped at {model!r}: {why}; the rows before it are complete"
                            if data.get("rows") else f"the case did not complete: {why}"))
        log(f"  ({name}: {time.perf_counter() - t_case:.0f} s)")
    meta.update({"mode": mode, "cases": chosen, "elapsed_s": time.perf_counter() - t0, "notes": notes,
                 "loadavg_start": load_start, "loadavg": list(os.getloadavg())})

    print(report.text_table(rows))
    for n in notes:
        print(f"- {n}")
    if report.load_warning(meta):
        print(report.load_warning(meta))
    failed = [r for r in rows if r.failed]
    if failed:
        log(f"\nFAILED: {len(failed)} row(s) where a peer and flexcore disagree on the same weights and data:")
        for r in failed:
            log(f"  {r.case} / {r.config} / {r.mode} / {r.peer}: {r.note}")

    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    title = f"flexcore benchmarks ({mode})"
    js, md = report.to_json(rows, meta), report.markdown(rows, meta, title)
    for fname, text in ((f"bench-{mode}-{stamp}.json", js), (f"bench-{mode}-{stamp}.md", md),
                        ("latest.json", js), ("latest.md", md)):
        with open(os.path.join(args.out, fname), "w") as f:
            f.write(text)
    print(f"\nwritten: {os.path.join(args.out, f'bench-{mode}-{stamp}')}.{{json,md}}")
    if args.results or (mode == "full" and args.cases is None):
        path = os.path.join(HERE, "RESULTS.md")
        what = "the latest --full run" if mode == "full" else "a --quick run (reduced sizes, fewer repetitions)"
        with open(path, "w") as f:
            f.write(report.markdown(rows, meta, f"flexcore benchmarks: {what}"))
        print(f"written: {path}")
    return report.exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
