"""The benchmark models in PyTensor (Theano's maintained successor), on its C backend.

Recurrence is `scan`, the input projection of all steps is one GEMM before it (what a careful
Theano user writes), and functions are compiled with mode="CVM" (C implementations of the ops,
the C virtual machine linking them).  That backend calls a BLAS it links itself (PYTENSOR_FLAGS
blas__ldflags, which `bench.env` points at the system OpenBLAS); without one, PyTensor falls back
to slow numpy dot products, so the peer is reported missing instead of measured.

Parameters are flexcore's one for one (gate matrices concatenated into one shared matrix, whose
gradient and update are those of the parts), so the loss after an SGD step is compared too.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .fc_models import LR, Built
from .harness import Participant
from .memory import TRACEMALLOC_METHOD, nbytes, traced_peak

MODE = "CVM"
NO_CONV = ("PyTensor 3 has no neural-network conv2d (its AbstractConv ops were removed); "
           "pytensor.tensor.signal.convolve2d is a single-channel signal op")


class PeerMissingError(Exception):
    pass


def load():
    """pytensor and pytensor.tensor, or PeerMissingError saying why they cannot be the peer."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pytensor
            import pytensor.tensor as pt
    except ImportError as e:
        raise PeerMissingError(f"PyTensor not installed ({e}); pip install -e .[bench]") from None
    if not pytensor.config.blas__ldflags:
        raise PeerMissingError("PyTensor's C backend found no BLAS to link (apt-get install libopenblas-dev, "
                          "or set PYTENSOR_FLAGS=blas__ldflags=...)")
    if not pytensor.config.cxx:
        raise PeerMissingError("PyTensor found no C++ compiler for its C backend")
    return pytensor, pt


def _f32(a: Any) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _participant(name: str, shared: Sequence[Any], x_syms: list[Any], x_vals: list[np.ndarray], y_sym: Any,
                 y_val: np.ndarray, logits: Any, t_start: float, with_infer: bool = True) -> Participant:
    pytensor, pt = load()
    labels = y_sym
    logp = pt.special.log_softmax(logits, axis=-1)
    loss = -pt.mean(logp[pt.arange(logits.shape[0]), labels])
    grads = pytensor.grad(loss, list(shared))
    lr = pt.scalar("lr", dtype="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_f = pytensor.function([*x_syms, y_sym, lr], loss,
                                    updates=[(p, p - lr * g) for p, g in zip(shared, grads)], mode=MODE)
        compile_s = time.perf_counter() - t_start
        infer_f = pytensor.function(x_syms, pt.special.softmax(logits, axis=-1), mode=MODE) if with_infer else None
    lr_val = np.float32(LR)

    def step() -> float:
        return float(train_f(*x_vals, y_val, lr_val))

    def infer() -> np.ndarray:
        return infer_f(*x_vals)

    live = nbytes([p.get_value(borrow=True) for p in shared] + list(x_vals) + [y_val])
    return Participant(
        name=name, train=step, infer=infer if infer_f is not None else None,
        train_memory=lambda: live + traced_peak(step), infer_memory=lambda: live + traced_peak(infer),
        memory_method=TRACEMALLOC_METHOD, compile_s=compile_s, same_update=True,
    )


def _scan(pytensor, fn, sequences, outputs_info):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytensor.scan(fn, sequences=sequences, outputs_info=outputs_info, return_updates=False)


def _projection(pt, x, w, b):
    """x (T, B, F) @ w + b for all steps at once, as one (T*B, F) GEMM."""
    t, bsz = x.shape[0], x.shape[1]
    return (pt.dot(x.reshape((t * bsz, x.shape[2])), w) + b).reshape((t, bsz, w.shape[1]))


def recurrent_cell(kind: str, built: Built, x: np.ndarray, y: np.ndarray, with_infer: bool = True) -> Participant:
    """LSTM / GRU / vanilla RNN by scan; x is (N, T, F) as flexcore takes it."""
    pytensor, pt = load()
    t0 = time.perf_counter()
    w = built.net.weights()
    cell = built.cell
    H = cell.hidden  # noqa: N806

    def cat(keys: list[str]) -> np.ndarray:
        return _f32(np.concatenate([w[k] for k in keys], axis=-1))

    def sh(a: np.ndarray, nm: str):
        return pytensor.shared(_f32(a), name=nm)

    gates = {"lstm": "ifgo", "gru": ("r", "z", "n"), "rnn": ("h",)}[kind]
    W = sh(cat([f"{cell.conns[f'x->{g}'].name}.W" for g in gates]), "W")  # noqa: N806
    rec = ("r", "z", "hn") if kind == "gru" else gates
    U = sh(cat([f"{cell.conns[f'h->{g}'].name}.W" for g in rec]), "U")  # noqa: N806
    b = sh(cat([f"{cell.layers[g].name}.b" for g in gates]), "b")
    shared = [W, U, b]
    if kind == "gru":
        b_hn = sh(w[f"{cell.layers['hn'].name}.b"], "b_hn")
        shared.append(b_hn)
    Wo = sh(w[built.names["head.W"]], "Wo")  # noqa: N806
    bo = sh(w[built.names["head.b"]], "bo")
    shared += [Wo, bo]

    xs = pt.tensor3("x", dtype="float32")
    ys = pt.lvector("y")
    xp = _projection(pt, xs, W, b)
    h0 = pt.zeros((xs.shape[1], H), dtype="float32")
    if kind == "lstm":
        def step(xt, h, c):
            z = xt + pt.dot(h, U)
            i, f = pt.sigmoid(z[:, :H]), pt.sigmoid(z[:, H:2 * H])
            g, o = pt.tanh(z[:, 2 * H:3 * H]), pt.sigmoid(z[:, 3 * H:])
            c = f * c + i * g
            return o * pt.tanh(c), c

        hs, _ = _scan(pytensor, step, [xp], [h0, h0])
    elif kind == "gru":
        def step(xt, h):
            hp = pt.dot(h, U)
            r = pt.sigmoid(xt[:, :H] + hp[:, :H])
            z = pt.sigmoid(xt[:, H:2 * H] + hp[:, H:2 * H])
            n = pt.tanh(xt[:, 2 * H:] + r * (hp[:, 2 * H:] + b_hn))
            return n + z * (h - n)

        hs = _scan(pytensor, step, [xp], [h0])
    else:
        hs = _scan(pytensor, lambda xt, h: pt.tanh(xt + pt.dot(h, U)), [xp], [h0])
    logits = pt.dot(hs[-1], Wo) + bo
    return _participant("pytensor scan", shared, [xs], [_f32(np.swapaxes(x, 0, 1))], ys,
                        np.asarray(y, np.int64), logits, t0, with_infer)


def seed_topology(built: Built, x: np.ndarray, y: np.ndarray) -> Participant:
    pytensor, pt = load()
    t0 = time.perf_counter()
    w = built.net.weights()
    p = {k: pytensor.shared(_f32(w[v]), name=k) for k, v in built.names.items()}
    xs = pt.tensor3("x", dtype="float32")
    ys = pt.lvector("y")
    xp = _projection(pt, xs, p["W12"], p["b2"])

    def step(xt, h5):
        h2 = pt.sigmoid(xt + pt.dot(h5, p["W52"]))
        h3 = pt.sigmoid(pt.dot(h2, p["W23"]) + p["b3"])
        return pt.sigmoid(pt.dot(h3, p["W35"]) + p["b5"])

    h5s = _scan(pytensor, step, [xp], [pt.zeros((xs.shape[1], 50), dtype="float32")])
    h6 = pt.sigmoid(pt.dot(h5s[-1], p["W56"]) + p["b6"])
    logits = pt.dot(h6, p["W64"]) + p["b4"]
    return _participant("pytensor scan", list(p.values()), [xs], [_f32(np.swapaxes(x, 0, 1))], ys,
                        np.asarray(y, np.int64), logits, t0)


def mlp(built: Built, x: np.ndarray, y: np.ndarray, n_layers: int = 3) -> Participant:
    pytensor, pt = load()
    t0 = time.perf_counter()
    w = built.net.weights()
    p = {k: pytensor.shared(_f32(w[v]), name=k) for k, v in built.names.items()}
    xs = pt.matrix("x", dtype="float32")
    ys = pt.lvector("y")
    h = xs
    for i in range(n_layers):
        h = pt.dot(h, p[f"W{i}"]) + p[f"b{i}"]
        if i < n_layers - 1:
            h = pt.sigmoid(h)
    return _participant("pytensor", list(p.values()), [xs], [_f32(x)], ys, np.asarray(y, np.int64), h, t0)


def version() -> str:
    pytensor, _ = load()
    return pytensor.__version__
