"""Measuring side by side: the correctness pre-check, interleaved timing, medians and spreads.

The machines drift (up to 2x minutes apart), so no absolute time is trusted alone: flexcore and
its peers are timed in rounds, A B C A B C ..., and each ratio is the median of the ratios within
a round.  Before anything is timed, every peer must compute the loss flexcore computes on the same
weights and data; a mismatch is a FAILED row, never a number.
"""

from __future__ import annotations

import math
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# float32 agreement.  Where the parameters match one for one, flexcore and its peers agree to one
# or two float32 rounding units (measured: <= 2e-7 relative on the losses of every case here,
# T <= 150 steps, dot products up to 2048 long; <= 3e-7 on the softmax outputs), and a wrong
# weight, bias or gate moves the first loss by 1e-3 or more.  The second loss moves less for a wrong
# gradient, since one SGD step of 0.01 changes little: torch's cells, which update two biases per
# gate where flexcore updates their sum, move it by 9e-6 to 3e-5.  1e-5 keeps a 50x margin above
# rounding and is as tight as that allows.
LOSS_RTOL = 1e-5
LOSS_ATOL = 1e-7
# Outputs are softmax probabilities (in [0, 1]) or GEMM results (compared relative to their largest
# entry: a float32 dot product of length K is off by about K * 6e-8 of it at worst, 1.2e-4 at 2048,
# typically 100 times less).
OUT_ATOL = 1e-5


class MismatchError(Exception):
    """A peer and flexcore disagree on the same weights and data."""

    def __init__(self, what: str, flexcore_value: float, peer_value: float, detail: str = "",
                 labels: tuple[str, str] = ("flexcore", "peer")):
        self.what = what
        self.flexcore_value = flexcore_value
        self.peer_value = peer_value
        msg = f"{what}: {labels[0]} {flexcore_value!r}, {labels[1]} {peer_value!r}"
        super().__init__(msg + (f" ({detail})" if detail else ""))


@dataclass
class Participant:
    """One framework's version of a benchmark model.

    train():  one full training step (forward, backward, SGD update); returns the loss computed
              in that step, before its update.
    infer():  one forward pass; returns the outputs as a numpy array (None: no inference row).
    same_update: the parameters are the same as flexcore's, one for one, so the loss after an SGD
              step must agree too (torch's cells keep two biases per gate where flexcore keeps
              their sum, so their second loss differs by design and is not compared).
    """

    name: str
    train: Callable[[], float] | None
    infer: Callable[[], Any] | None = None
    train_memory: Callable[[], int] | None = None
    infer_memory: Callable[[], int] | None = None
    memory_method: str = ""
    compile_s: float | None = None
    same_update: bool = False
    missing: str | None = None  # why this participant cannot run; then nothing else is used

    @classmethod
    def absent(cls, name: str, reason: str) -> Participant:
        return cls(name=name, train=None, missing=reason)


def reason_of(exc: BaseException, limit: int = 160) -> str:
    """A one-line reason for a 'missing' row: the exception's type and first line."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build(name: str, maker: Callable[[], Participant]) -> Participant:
    """Run a participant's constructor; an exception makes it 'missing' with the reason."""
    try:
        return maker()
    except Exception as e:
        return Participant.absent(name, reason_of(e))


# ----------------------------------------------------------------------------------------
# the correctness pre-check
# ----------------------------------------------------------------------------------------


def losses_agree(a: float, b: float, rtol: float = LOSS_RTOL, atol: float = LOSS_ATOL) -> bool:
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    return abs(a - b) <= atol + rtol * max(abs(a), abs(b))


def check_loss(what: str, flexcore_loss: float, peer_loss: float) -> None:
    """Raise MismatchError unless the two losses agree to float32 accuracy."""
    if not losses_agree(float(flexcore_loss), float(peer_loss)):
        rel = abs(flexcore_loss - peer_loss) / max(abs(flexcore_loss), abs(peer_loss), 1e-30)
        raise MismatchError(what, float(flexcore_loss), float(peer_loss),
                          f"relative difference {rel:.2e} > {LOSS_RTOL:g}")


def check_outputs(what: str, flexcore_out: np.ndarray, peer_out: np.ndarray, atol: float = OUT_ATOL,
                  labels: tuple[str, str] = ("flexcore", "peer")) -> None:
    """Raise MismatchError unless two output arrays agree entrywise (relative to their largest
    entry when that exceeds 1)."""
    a, b = np.asarray(flexcore_out, np.float64), np.asarray(peer_out, np.float64)
    if a.shape != b.shape:
        raise MismatchError(f"{what} shape", float("nan"), float("nan"), f"{a.shape} vs {b.shape}", labels)
    scale = max(1.0, float(np.max(np.abs(a))) if a.size else 1.0)
    err = float(np.max(np.abs(a - b))) if a.size else 0.0
    if not math.isfinite(err) or err > atol * scale:
        i = np.unravel_index(int(np.nanargmax(np.abs(a - b))), a.shape) if a.size else ()
        raise MismatchError(f"{what} at {tuple(int(j) for j in i)}", float(a[i]), float(b[i]),
                          f"max abs difference {err:.2e} > {atol:g} x {scale:.3g}", labels)


@dataclass
class CheckRecord:
    """What the pre-check saw for one peer (kept in the JSON)."""

    flexcore_losses: list[float] = field(default_factory=list)
    peer_losses: list[float] = field(default_factory=list)
    max_output_diff: float | None = None


def precheck(fc: Participant, peers: Sequence[Participant]) -> dict[str, CheckRecord | MismatchError]:
    """Compare every peer with flexcore before timing: inference outputs and the first step's
    loss on identical weights, and for `same_update` peers the second step's loss as well (so
    gradients and the SGD update are checked, not only the forward pass).  Leaves every model
    two training steps further.  Returns, per peer name, its record or the MismatchError; a peer
    that raises instead is marked missing (flexcore raising propagates)."""
    fc_out = fc.infer() if fc.infer is not None else None
    peer_outs: dict[str, Any] = {}
    for p in peers:
        try:
            peer_outs[p.name] = p.infer() if (p.infer is not None and fc_out is not None) else None
        except Exception as e:
            p.missing = f"inference failed: {reason_of(e)}"
    fc_losses = [float(fc.train()), float(fc.train())]
    res: dict[str, CheckRecord | MismatchError] = {}
    for p in peers:
        if p.missing is not None:
            continue
        rec = CheckRecord(flexcore_losses=fc_losses)
        try:
            rec.peer_losses = [float(p.train()), float(p.train())]
        except Exception as e:
            p.missing = f"training step failed: {reason_of(e)}"
            continue
        try:
            check_loss("loss of step 1", fc_losses[0], rec.peer_losses[0])
            if p.same_update:
                check_loss("loss of step 2 (after one SGD update)", fc_losses[1], rec.peer_losses[1])
            if peer_outs.get(p.name) is not None:
                check_outputs("inference output", fc_out, peer_outs[p.name])
                rec.max_output_diff = float(np.max(np.abs(np.asarray(fc_out, np.float64) - peer_outs[p.name])))
            res[p.name] = rec
        except MismatchError as e:
            res[p.name] = e
    return res


# ----------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------


@dataclass
class Stats:
    """Per-call times of the repetitions, in seconds."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def quantile(self, q: float) -> float:
        s = sorted(self.samples)
        if len(s) == 1:
            return s[0]
        pos = q * (len(s) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median."""
        m = self.median
        return (self.quantile(0.75) - self.quantile(0.25)) / m if m > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "median_ms": self.median * 1e3,
            "p25_ms": self.quantile(0.25) * 1e3,
            "p75_ms": self.quantile(0.75) * 1e3,
            "min_ms": min(self.samples) * 1e3,
            "max_ms": max(self.samples) * 1e3,
            "spread": self.spread,
            "reps": len(self.samples),
        }


def paired_ratio(fc: Sequence[float], peer: Sequence[float]) -> Stats:
    """Ratios peer / flexcore within each round (both measured in the same minute)."""
    return Stats([p / f for f, p in zip(fc, peer, strict=True) if f > 0])


def calls_per_rep(one_call_s: float, min_rep_s: float, max_calls: int = 1000) -> int:
    """How many calls one repetition makes so that it lasts at least min_rep_s (the clock and
    the loop then cost nothing measurable)."""
    if one_call_s <= 0:
        return max_calls
    return int(min(max_calls, max(1, math.ceil(min_rep_s / one_call_s))))


def time_calls(fn: Callable[[], Any], n: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds per call, over n back-to-back calls."""
    t0 = clock()
    for _ in range(n):
        fn()
    return (clock() - t0) / n


def rounds_for(round_s: float, reps: int, budget_s: float | None, max_reps: int | None) -> int:
    """`reps` rounds, or more (up to max_reps) when a round is cheap enough that more of them
    fit in budget_s: more rounds make the medians steadier at no cost worth mentioning."""
    if budget_s is None or max_reps is None or round_s <= 0:
        return reps
    fit = math.floor(budget_s / round_s + 1e-9)  # 1.0 / 0.2 must give 5, not 4.999...
    return max(reps, min(max_reps, fit))


# Long enough for OpenBLAS's (THREAD_TIMEOUT 2^28 cycles, ~75 ms here) and libgomp's spinning
# workers to go to sleep.
SETTLE_S = 0.1


def alternate(fns: Sequence[Callable[[], Any]], reps: int, warmup: int = 1, min_rep_s: float = 0.05,
              clock: Callable[[], float] = time.perf_counter, budget_s: float | None = None,
              max_reps: int | None = None, settle_s: float = SETTLE_S) -> list[list[float]]:
    """Time each of `fns` in rounds, interleaved A B C A B C ...: after `warmup` calls each
    (which also size the repetitions), every round times one repetition of each function.
    There are `reps` rounds, or up to `max_reps` when they fit in `budget_s` seconds.
    Before each function's turn the process sleeps `settle_s`: OpenBLAS and OpenMP worker
    threads keep spinning for tens of milliseconds after a call and would steal the cores from
    whoever is timed next (each participant is measured at its best, not in another's wake).
    Returns, per function, its per-call seconds of each round."""
    n_calls = []
    round_s = 0.0
    for fn in fns:
        time.sleep(settle_s)
        t = time_calls(fn, 1, clock)
        for _ in range(max(0, warmup - 1)):
            t = time_calls(fn, 1, clock)
        n_calls.append(calls_per_rep(t, min_rep_s))
        round_s += t * n_calls[-1]
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds_for(round_s, reps, budget_s, max_reps)):
        for i, fn in enumerate(fns):
            time.sleep(settle_s)
            samples[i].append(time_calls(fn, n_calls[i], clock))
    return samples


# ----------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------

OK, MISSING, FAILED, PEER_MISSING = "ok", "missing", "FAILED", "peer missing"


@dataclass
class Row:
    """One line of the table: flexcore against one peer, for training or inference."""

    case: str
    config: str
    mode: str  # "train", "infer", "compile", "gemm"
    peer: str
    status: str = OK
    flexcore: dict[str, Any] | None = None  # Stats.as_dict()
    peer_time: dict[str, Any] | None = None
    ratio: dict[str, Any] | None = None  # Stats.as_dict() of peer / flexcore, in plain numbers
    flexcore_bytes: int | None = None
    peer_bytes: int | None = None
    peer_memory_method: str = ""
    reduced: bool = False
    note: str = ""
    check: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status == FAILED


def _ratio_dict(st: Stats) -> dict[str, Any]:
    return {"median": st.median, "p25": st.quantile(0.25), "p75": st.quantile(0.75), "n": len(st.samples)}


def _memory(fn: Callable[[], int] | None) -> tuple[int | None, str]:
    if fn is None:
        return None, ""
    try:
        return int(fn()), ""
    except Exception as e:
        return None, f"memory not measured: {reason_of(e)}"


def _append(note: str, more: str) -> str:
    return f"{note}; {more}" if note else more


def compare(case: str, config: str, fc: Participant, peers: Sequence[Participant], *, reps: int, warmup: int,
            min_rep_s: float, reduced: bool = False, log: Callable[[str], None] = lambda s: None,
            budget_s: float | None = None, max_reps: int | None = None) -> list[Row]:
    """The whole protocol for one model: pre-check every peer against flexcore, then time
    training steps of flexcore and every peer that passed in interleaved rounds, then inference
    the same way.  Returns two rows (train, infer) per peer.  When flexcore is missing, the
    peers are still timed (alone) so that their figures are in the table."""
    if not peers:
        peers = [Participant.absent("(no peer)", "no peer for this case")]
    runnable = [p for p in peers if p.missing is None]
    checks: dict[str, CheckRecord | MismatchError] = {}
    phases = [f"{p.name} compiled in {p.compile_s:.1f} s" for p in (fc, *peers) if p.compile_s is not None]
    t_phase = time.perf_counter()
    if fc.missing is None:
        try:
            checks = precheck(fc, runnable)
        except Exception as e:
            log(traceback.format_exc())
            fc.missing = f"failed while running: {reason_of(e)}"
    if fc.missing is not None:
        for p in runnable:  # not checked against anything; make sure they run at all
            try:
                p.train()
            except Exception as e:
                p.missing = f"training step failed: {reason_of(e)}"
    passed = [p for p in peers if p.missing is None and not isinstance(checks.get(p.name), MismatchError)]
    phases.append(f"check {time.perf_counter() - t_phase:.1f} s")

    rows: list[Row] = []
    for mode in ("train", "infer"):
        parts = [p for p in ([fc] if fc.missing is None else []) + passed if getattr(p, mode) is not None]
        timed: dict[str, list[float]] = {}
        timing_error = ""
        t_phase = time.perf_counter()
        if parts:
            try:
                samples = alternate([getattr(p, mode) for p in parts], reps=reps, warmup=warmup, min_rep_s=min_rep_s,
                                    budget_s=budget_s, max_reps=max_reps)
                timed = {p.name: s for p, s in zip(parts, samples)}
            except Exception as e:
                log(traceback.format_exc())
                timing_error = f"{mode} failed while timed: {reason_of(e)}"
        n_rounds = len(next(iter(timed.values()))) if timed else 0
        phases.append(f"{mode} {time.perf_counter() - t_phase:.1f} s ({n_rounds} rounds)")
        t_phase = time.perf_counter()
        fc_bytes, fc_mem_note = (None, "")
        if fc.missing is None:
            fc_bytes, fc_mem_note = _memory(fc.train_memory if mode == "train" else fc.infer_memory)
        for p in peers:
            row = Row(case, config, mode, p.name, reduced=reduced, flexcore_bytes=fc_bytes)
            if fc.compile_s is not None:
                row.extra["flexcore_compile_s"] = fc.compile_s
            if p.compile_s is not None:
                row.extra["peer_compile_s"] = p.compile_s
            chk = checks.get(p.name)
            if fc.missing is not None:
                row.status, row.note = MISSING, f"flexcore: {fc.missing}"
            if isinstance(chk, MismatchError):
                row.status = FAILED
                row.note = f"loss check FAILED: {chk}"
                row.check = {"what": chk.what, "flexcore": chk.flexcore_value, "peer": chk.peer_value}
                rows.append(row)
                continue
            if p.missing is not None:
                if row.status == OK:
                    row.status, row.note = PEER_MISSING, p.missing
                else:
                    row.note = _append(row.note, f"peer: {p.missing}")
                rows.append(row)
                continue
            if isinstance(chk, CheckRecord):
                row.check = {"flexcore_losses": chk.flexcore_losses, "peer_losses": chk.peer_losses,
                             "max_output_diff": chk.max_output_diff, "second_loss_compared": p.same_update}
            if fc.name in timed:
                row.flexcore = Stats(timed[fc.name]).as_dict()
            if p.name in timed:
                row.peer_time = Stats(timed[p.name]).as_dict()
                if fc.name in timed:
                    row.ratio = _ratio_dict(paired_ratio(timed[fc.name], timed[p.name]))
            elif getattr(p, mode) is None:
                row.note = _append(row.note, f"{p.name} has no {mode} function")
            if timing_error:
                row.status = MISSING if row.status == OK else row.status
                row.note = _append(row.note, timing_error)
            row.peer_bytes, why = _memory(p.train_memory if mode == "train" else p.infer_memory)
            row.peer_memory_method = p.memory_method
            row.note = _append(row.note, why) if why else row.note
            row.note = _append(row.note, fc_mem_note) if fc_mem_note else row.note
            rows.append(row)
        phases.append(f"{mode} memory {time.perf_counter() - t_phase:.1f} s")
    log(f"    {'; '.join(phases)}")
    return rows
