"""Compile work must grow about linearly in the number of unrolled steps T.

Guarded without timing: we count the lines of flexcore's own Python code executed while compiling
an unrolled LSTM training step (a deterministic measure of work, loop iterations included) at
T = 4, 8, 16, 32.  Linear work has equal increments per added step; a quadratic term (say a planner
that scans every value still alive for each new one) makes the increments grow with T.
"""

from __future__ import annotations

import os
import sys

import numpy as np

import flexcore
from flexcore import ActivationLayer, InputLayer, Network
from flexcore.nn import cells

PKG = os.path.dirname(flexcore.__file__) + os.sep


def _lines_to_compile(steps: int) -> int:
    net = Network(f"lstm-T{steps}", seed=0)
    x = InputLayer((3,), sequence_length=steps, name="x")
    cell = cells.lstm(net, x, 5, name="lstm")
    y = ActivationLayer((2,), activation="softmax", output=True, loss="nll", name="y")
    net.connect_dense(cell.out, y)
    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename.startswith(PKG) else None

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        net.compile(2, optimizer="sgd")
        traced = net._fns["train"]
        extra = [() for _ in traced.dtypes[2:]]
        fn = traced.compiled((2, steps, 3), (2,), *extra)
    finally:
        sys.settrace(old)
    assert fn.plan.steps, "nothing was compiled"
    return count


def test_compile_work_is_linear_in_steps():
    counts = {t: _lines_to_compile(t) for t in (4, 8, 16, 32)}
    inc = [counts[8] - counts[4], (counts[16] - counts[8]) / 2, (counts[32] - counts[16]) / 4]
    assert all(i > 0 for i in inc), counts
    # Per-step increments may wobble a little (fusion groups) but must not grow: a
    # quadratic term of even 1% of the linear one at T = 32 would show here.
    assert inc[2] <= 1.05 * inc[0] and inc[1] <= 1.05 * inc[0], (counts, inc)
