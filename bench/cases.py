"""The cases: public RNN benchmark configurations plus the models flexcore was made for.

Each case function returns table rows.  --quick keeps every case but shrinks the longest
sequences and the largest sizes; a row run at a size other than its --full size says so
(`reduced`, and the full size in its config).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import fc_models
from .harness import (
    MISSING,
    OK,
    PEER_MISSING,
    MismatchError,
    Participant,
    Row,
    Stats,
    alternate,
    build,
    check_outputs,
    compare,
    paired_ratio,
    reason_of,
)

try:  # torch is in the test extra; without it the torch peers are missing, nothing else
    import torch

    from . import torch_models
    TORCH_ERROR = ""
except Exception as _e:  # pragma: no cover - depends on the install
    torch = None  # type: ignore[assignment]
    torch_models = None  # type: ignore[assignment]
    TORCH_ERROR = f"torch not importable: {reason_of(_e)}"

from . import pytensor_models as ptm


@dataclass
class Settings:
    """quick or full; at least `reps` timed rounds per model and mode, up to `max_reps` while
    they fit in `budget_s`; repetitions last at least `min_rep_s`."""

    quick: bool
    reps: int
    warmup: int
    min_rep_s: float
    budget_s: float
    max_reps: int
    log: Callable[[str], None] = print
    notes: list[str] = field(default_factory=list)
    completed: list[Row] = field(default_factory=list)
    on_rows: Callable[[list[Row]], None] | None = None  # told after each model (the worker saves them)

    def done(self, rows: list[Row]) -> list[Row]:
        """Record finished rows, so that a later crash in the same case does not lose them."""
        self.completed += rows
        if self.on_rows is not None:
            self.on_rows(self.completed)
        return rows

    @classmethod
    def for_mode(cls, quick: bool, reps: int | None = None, log: Callable[[str], None] = print) -> Settings:
        if quick:
            return cls(True, reps or 3, 1, 0.02, 2.0, max(reps or 3, 9), log)
        return cls(False, reps or 7, 2, 0.1, 20.0, max(reps or 7, 21), log)

    def timing(self) -> dict:
        """Keyword arguments of harness.compare."""
        return {"reps": self.reps, "warmup": self.warmup, "min_rep_s": self.min_rep_s, "log": self.log,
                "budget_s": self.budget_s, "max_reps": self.max_reps}

    def size(self, full: int, quick: int) -> tuple[int, bool]:
        """The size to run and whether it is reduced from the --full one."""
        return (quick, quick != full) if self.quick else (full, False)


def _data(batch: int, shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, *shape)).astype(np.float32), rng.integers(0, fc_models.N_CLASSES, batch)


def _torch_peer(name: str, make: Callable[[], Participant]) -> Participant:
    if torch is None:
        return Participant.absent(name, TORCH_ERROR)
    return build(name, make)


def _pytensor_peer(make: Callable[[], Participant], name: str = "pytensor scan") -> Participant:
    try:
        ptm.load()
    except ptm.PeerMissingError as e:
        return Participant.absent(name, str(e))
    return build(name, make)


def run_model(s: Settings, case: str, config: str, x: np.ndarray, y: np.ndarray,
              make_built: Callable[[], tuple[fc_models.Built, float]],
              make_peers: Callable[[fc_models.Built], list[Participant]], reduced: bool = False) -> list[Row]:
    """Build flexcore's network (its weights are the ones every peer copies), then the peers,
    then flexcore's compiled functions, and compare them (harness.compare)."""
    s.log(f"[{case}] {config}")
    try:
        built, t_build = make_built()
    except Exception as e:
        return s.done([Row(case, config, mode, "-", status=MISSING, note=f"flexcore: building the network failed: "
                           f"{reason_of(e)}", reduced=reduced) for mode in ("train", "infer")])
    peers = make_peers(built)
    fc = build("flexcore", lambda: fc_models.participant(built, [x], [y], t_build=t_build))
    return s.done(compare(case, config, fc, peers, reduced=reduced, **s.timing()))


# ----------------------------------------------------------------------------------------
# recurrent cells: LSTM, GRU, vanilla RNN
# ----------------------------------------------------------------------------------------


def cell_rows(s: Settings, case: str, kind: str, n_in: int, hidden: int, batch: int, steps: int,
              full_steps: int) -> list[Row]:
    reduced = steps != full_steps
    label = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN tanh"}[kind]
    config = (f"{label} in {n_in}, hidden {hidden}, batch {batch}, T {steps}"
              + (f" (full: T {full_steps})" if reduced else ""))
    x, y = _data(batch, (steps, n_in))

    def peers(built: fc_models.Built) -> list[Participant]:
        out = []
        if torch is None:
            out += [Participant.absent(n, TORCH_ERROR) for n in (f"torch nn.{kind.upper()}",
                                                                 f"torch {kind.upper()}Cell loop")]
        else:
            from flexcore.nn.cells import copy_from_torch

            fused = torch_models.make_fused(kind, n_in, hidden)
            copy_from_torch(built.net, built.cell, fused)
            rng = np.random.default_rng(5)
            built.net.set_weights({built.names["head.b"]: rng.uniform(-0.1, 0.1, fc_models.N_CLASSES)})
            xt = torch_models.time_major(x)
            for name, model in torch_models.cell_models(kind, fused, built).items():
                out.append(build(name, lambda m=model, n=name: torch_models.participant(n, m, xt, y,
                                                                                      same_update=False)))
        return [*out, _pytensor_peer(lambda: ptm.recurrent_cell(kind, built, x, y))]

    return run_model(s, case, config, x, y, lambda: fc_models.recurrent_cell(kind, n_in, hidden, batch, steps),
                     peers, reduced)


def case_lstm_fastrnns(s: Settings) -> list[Row]:
    t, _ = s.size(100, 20)
    return cell_rows(s, "LSTM (fastrnns)", "lstm", 512, 512, 64, t, 100)


def case_lstm_deepbench(s: Settings) -> list[Row]:
    t, _ = s.size(150, 30)
    return cell_rows(s, "LSTM (DeepBench)", "lstm", 256, 256, 32, t, 150)


def case_rnnbench(s: Settings) -> list[Row]:
    rows = []
    for kind in ("lstm", "rnn"):
        for hidden in (128, 512):
            rows += cell_rows(s, "LSTM / RNN (rnn-benchmarks)", kind, hidden, hidden, 32, 30, 30)
    return rows


def case_lstm_small_input(s: Settings) -> list[Row]:
    t, _ = s.size(100, 30)
    return cell_rows(s, "LSTM (input 64)", "lstm", 64, 256, 32, t, 100)


def case_gru(s: Settings) -> list[Row]:
    t, _ = s.size(100, 30)
    return cell_rows(s, "GRU", "gru", 64, 256, 32, t, 100)


# ----------------------------------------------------------------------------------------
# the seed topology, conv-recurrent, MLP, CNN
# ----------------------------------------------------------------------------------------


def seed_rows(s: Settings, steps: int, batch: int = 64) -> list[Row]:
    x, y = _data(batch, (steps, 196))

    def peers(built: fc_models.Built) -> list[Participant]:
        return [_torch_peer("torch loop", lambda: torch_models.participant(
                    "torch loop", torch_models.SeedTopology(built), torch_models.time_major(x), y, same_update=True)),
                _pytensor_peer(lambda: ptm.seed_topology(built, x, y))]

    return run_model(s, "seed topology", f"196-300-150-50-200-10, L5@t-1 -> L2, batch {batch}, T {steps}", x, y,
                     lambda: fc_models.seed_topology(steps, batch), peers)


def case_seed(s: Settings) -> list[Row]:
    return seed_rows(s, 4) + seed_rows(s, 32)


def case_conv_recurrent(s: Settings) -> list[Row]:
    steps, reduced = s.size(8, 4)
    channels, batch = 8, 32
    config = (f"3 conv 3x3 x{channels} (tanh), conv3@t-1 -> conv1, 1x28x28, batch {batch}, T {steps}"
              + (" (full: T 8)" if reduced else ""))
    x, y = _data(batch, (steps, 1, 28, 28))

    def peers(built: fc_models.Built) -> list[Participant]:
        return [_torch_peer("torch loop", lambda: torch_models.participant(
                    "torch loop", torch_models.ConvRecurrent(built), torch_models.time_major(x), y, same_update=True)),
                Participant.absent("pytensor", ptm.NO_CONV)]

    return run_model(s, "conv-recurrent", config, x, y, lambda: fc_models.conv_recurrent(steps, batch, channels),
                     peers, reduced)


def mlp_rows(s: Settings, batch: int) -> list[Row]:
    x, y = _data(batch, (784,))

    def peers(built: fc_models.Built) -> list[Participant]:
        return [_torch_peer("torch", lambda: torch_models.participant(
                    "torch", torch_models.mlp(built), torch.from_numpy(x), y, same_update=True)),
                _pytensor_peer(lambda: ptm.mlp(built, x, y), name="pytensor")]

    return run_model(s, "MLP", f"784-300-150-10 sigmoid, batch {batch}", x, y, lambda: fc_models.mlp(batch), peers)


def case_mlp(s: Settings) -> list[Row]:
    return mlp_rows(s, 64) + mlp_rows(s, 256)


def case_cnn(s: Settings) -> list[Row]:
    batch = 64
    x, y = _data(batch, (1, 28, 28))

    def peers(built: fc_models.Built) -> list[Participant]:
        out = []
        for name, channels_last in (("torch NCHW", False), ("torch channels-last", True)):
            def make(n=name, cl=channels_last):
                xt = torch.from_numpy(x)
                xt = xt.contiguous(memory_format=torch.channels_last) if cl else xt
                return torch_models.participant(n, torch_models.small_cnn(built, cl), xt, y, same_update=True)
            out.append(_torch_peer(name, make))
        return [*out, Participant.absent("pytensor", ptm.NO_CONV)]

    return run_model(s, "small CNN", f"1x28x28, conv32-pool-conv64-pool-fc128-fc10 (ReLU), batch {batch}", x, y,
                     lambda: fc_models.small_cnn(batch), peers)


# ----------------------------------------------------------------------------------------
# GEMM
# ----------------------------------------------------------------------------------------


def flexcore_gemm() -> tuple[Callable | None, str]:
    """flexcore's native GEMM entry point, or why there is none."""
    from flexcore import _native

    if _native.module is None:
        return None, f"native extension not built ({_native.load_error})"
    fn = getattr(_native.module, "gemm", None)
    if fn is None:
        return None, "flexcore._flexcore has no gemm yet"
    return fn, ""


def gemm_rows(s: Settings, m: int, k: int, n: int, label: str) -> list[Row]:
    """flexcore's GEMM against numpy's (OpenBLAS) and torch's, each result checked against a
    float64 product first; every call allocates its result, as `a @ b` does."""
    config = f"{label}: {m}x{k} @ {k}x{n}"
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    flops = 2.0 * m * n * k
    calls: dict[str, Callable] = {"numpy": lambda: a @ b}
    missing: dict[str, str] = {}
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        calls["torch mm"] = lambda: torch.mm(ta, tb)
    else:
        missing["torch mm"] = TORCH_ERROR
    fc_fn, fc_why = flexcore_gemm()
    if fc_fn is not None:
        calls = {"flexcore": lambda: fc_fn(a, b), **calls}
    failed: dict[str, str] = {}
    for name, fn in list(calls.items()):
        try:
            res = fn()
            check_outputs(f"{name} result", ref, res.numpy() if hasattr(res, "numpy") else np.asarray(res),
                          labels=("float64 product", name))
        except MismatchError as e:
            failed[name] = str(e)
        except Exception as e:
            if name != "flexcore":
                raise
            fc_why = f"gemm(a, b) failed: {reason_of(e)}"
            del calls[name]
    timed = {nm: fn for nm, fn in calls.items() if nm not in failed}
    samples = dict(zip(timed, alternate(list(timed.values()), reps=max(s.reps, 5), warmup=s.warmup,
                                        min_rep_s=s.min_rep_s, budget_s=s.budget_s, max_reps=s.max_reps)))
    rows: list[Row] = []
    for name in [nm for nm in (*calls, *missing) if nm != "flexcore"]:
        row = Row("GEMM", config, "gemm", name)
        if "flexcore" in failed or name in failed:
            row.status = "FAILED"
            row.note = "; ".join(f"{nm} {failed[nm]}" for nm in ("flexcore", name) if nm in failed)
            rows.append(row)
            continue
        if name in missing:
            row.status, row.note = PEER_MISSING, missing[name]
        if "flexcore" not in samples:
            row.status, row.note = MISSING, f"flexcore: {fc_why}"
        else:
            row.flexcore = Stats(samples["flexcore"]).as_dict()
            row.extra["flexcore_gflops"] = flops / row.flexcore["median_ms"] / 1e6
        if name in samples:
            row.peer_time = Stats(samples[name]).as_dict()
            row.extra["peer_gflops"] = flops / row.peer_time["median_ms"] / 1e6
            if "flexcore" in samples:
                r = paired_ratio(samples["flexcore"], samples[name])
                row.ratio = {"median": r.median, "p25": r.quantile(0.25), "p75": r.quantile(0.75), "n": len(r.samples)}
        rows.append(row)
    return s.done(rows)


RNN_GEMM_SHAPES = (  # batch x hidden x 4*hidden: one step's recurrent GEMM of the LSTM cases
    (64, 512, 2048, "fastrnns LSTM"), (32, 256, 1024, "DeepBench LSTM"),
    (32, 128, 512, "rnn-benchmarks LSTM 128"), (32, 512, 2048, "rnn-benchmarks LSTM 512"),
)


def case_gemm(s: Settings) -> list[Row]:
    sizes = (64, 128, 256, 512, 1024) if s.quick else (64, 128, 256, 512, 1024, 2048)
    if s.quick:
        s.notes.append("GEMM: n = 2048 runs only with --full")
    rows = []
    for n in sizes:
        s.log(f"[GEMM] square {n}")
        rows += gemm_rows(s, n, n, n, f"square {n}")
    for m, k, n, label in RNN_GEMM_SHAPES:
        s.log(f"[GEMM] {label}")
        rows += gemm_rows(s, m, k, n, label)
    return rows


# ----------------------------------------------------------------------------------------
# compile time
# ----------------------------------------------------------------------------------------

COMPILE_CELL = (64, 256, 32)  # input, hidden, batch


def _flexcore_compile(steps: int, x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    """Seconds from compile() until the first step can run (unrolling, autodiff, passes, plan),
    seconds of that first step, and the train function's planned peak bytes."""
    n_in, hidden, batch = COMPILE_CELL
    built, t_build = fc_models.recurrent_cell("lstm", n_in, hidden, batch, steps)
    p = fc_models.participant(built, [x], [y], t_build=t_build, infer=False)
    t0 = time.perf_counter()
    p.train()
    return p.compile_s, time.perf_counter() - t0, p.train_memory()


def case_compile(s: Settings) -> list[Row]:
    """flexcore unrolls the sequence, so its graph grows with T; compile time must grow about
    linearly.  PyTensor's scan compiles one step whatever T is (its C modules cached on disk
    after the first run)."""
    ts = (10, 30, 100) if s.quick else (10, 100, 1000)
    reps = 1 if s.quick else 3
    n_in, hidden, batch = COMPILE_CELL
    rows: list[Row] = []
    prev: tuple[int, float] | None = None
    for steps in ts:
        config = f"LSTM in {n_in}, hidden {hidden}, batch {batch}, T {steps}"
        s.log(f"[compile time] {config}")
        x, y = _data(batch, (steps, n_in))
        row = Row("compile time", config, "compile", "pytensor scan", reduced=False)
        fc_s: list[float] = []
        pt_s: list[float] = []
        first: list[float] = []
        fc_err = pt_err = ""
        try:
            ptm.load()
        except ptm.PeerMissingError as e:
            pt_err = str(e)
        for _ in range(reps):
            if not fc_err:
                try:
                    c, f, peak = _flexcore_compile(steps, x, y)
                    fc_s.append(c)
                    first.append(f)
                    row.flexcore_bytes = peak
                except Exception as e:
                    fc_err = reason_of(e)
            if not pt_err:
                try:
                    built, _ = fc_models.recurrent_cell("lstm", n_in, hidden, batch, steps)
                    pt_s.append(ptm.recurrent_cell("lstm", built, x, y, with_infer=False).compile_s)
                except Exception as e:
                    pt_err = reason_of(e)
        if fc_s:
            row.flexcore = Stats([v for v in fc_s]).as_dict()
            row.extra["flexcore_first_step_s"] = Stats(first).median
            med = Stats(fc_s).median
            row.extra["flexcore_compile_ms_per_step"] = med / steps * 1e3
            if prev is not None:
                growth = med / prev[1]
                row.extra["growth"] = growth
                row.extra["linearity"] = growth / (steps / prev[0])
                row.note = (f"x{growth:.1f} time for x{steps // prev[0]} T (per-T ratio "
                            f"{row.extra['linearity']:.2f}; 1 = linear)")
            prev = (steps, med)
        else:
            row.status, row.note = MISSING, f"flexcore: {fc_err}"
        if pt_s:
            row.peer_time = Stats(pt_s).as_dict()
            if fc_s:
                r = paired_ratio(fc_s, pt_s)
                row.ratio = {"median": r.median, "p25": r.quantile(0.25), "p75": r.quantile(0.75), "n": len(r.samples)}
        elif pt_err:
            row.status = row.status if row.status != OK else PEER_MISSING
            row.note = (row.note + "; " if row.note else "") + f"peer: {pt_err}"
        rows.append(row)
        s.done([row])
    if s.quick:
        s.notes.append("compile time: T = 1000 runs only with --full (quick: T = 10, 30, 100, one repetition)")
    return rows


CASES: dict[str, Callable[[Settings], list[Row]]] = {
    "gemm": case_gemm,
    "lstm_fastrnns": case_lstm_fastrnns,
    "lstm_deepbench": case_lstm_deepbench,
    "rnnbench": case_rnnbench,
    "lstm_small_input": case_lstm_small_input,
    "gru": case_gru,
    "seed": case_seed,
    "conv_recurrent": case_conv_recurrent,
    "mlp": case_mlp,
    "cnn": case_cnn,
    "compile": case_compile,
}
