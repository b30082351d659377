"""Peak memory of one step, measured for each framework by the means it offers.

flexcore reports the peak of its compiled plan (`Function.peak_bytes`: values alive at once,
inputs and parameters included).  For the peers the same quantity is assembled as: bytes of the
parameters and inputs (alive before the step) + the peak of what the step allocates on top:
  - torch:  its CPU allocator's running total during the step, from the profiler's memory
            events ("Total Allocated"), which see every tensor torch allocates, workspaces of
            the fused kernels included;
  - numpy-based peers (PyTensor's C backend allocates its arrays through numpy):  tracemalloc,
            which numpy reports every array buffer to.
Neither counts the framework's own fixed overhead (code, thread pools), only tensors.
"""

from __future__ import annotations

import json
import os
import tempfile
import tracemalloc
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

TORCH_METHOD = "params+inputs + torch CPU allocator peak (profiler)"
TRACEMALLOC_METHOD = "params+inputs + tracemalloc peak (numpy buffers)"


def nbytes(arrays: Iterable[Any]) -> int:
    """Total bytes of numpy arrays or torch tensors."""
    total = 0
    for a in arrays:
        if hasattr(a, "element_size") and hasattr(a, "nelement"):
            total += int(a.element_size() * a.nelement())
        else:
            total += int(np.asarray(a).nbytes)
    return total


def traced_peak(step: Callable[[], Any]) -> int:
    """Peak bytes that `step` allocates (and numpy or Python report to tracemalloc) above what
    was alive when it started."""
    was = tracemalloc.is_tracing()
    if was:
        tracemalloc.stop()
    tracemalloc.start()
    try:
        step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        if was:
            tracemalloc.start()
    return int(peak)


def torch_allocator_peak(step: Callable[[], Any]) -> int:
    """Peak of torch's CPU allocator total during `step`, counted from the start of the step."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    fd, path = tempfile.mkstemp(suffix=".json", prefix="bench_torch_trace_")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            trace = json.load(f)
    finally:
        os.unlink(path)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    totals = [e["args"]["Total Allocated"] for e in events
              if e.get("name") == "[memory]" and "Total Allocated" in e.get("args", {})]
    return int(max(totals, default=0))
