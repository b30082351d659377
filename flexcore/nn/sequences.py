"""Long and ragged sequences: truncated BPTT, stateful calls and per-sequence lengths.

A batch runs as one or more *windows* of consecutive steps.  Each window is one compiled
function (`build_window`) whose inputs are the window's steps and, unless it starts the
sequence, the *state* carried in from the step before it; it returns the state after its last
step.  The state is every value a later step reads through a delay: lags 1..k of a layer read
with a delay of up to k, lag 1 of a memory layer (`graph.state_keys`).  It crosses the window
boundary as values, not gradients: backpropagation stays inside a window.

- `truncate=k`: windows of k steps (the last one shorter when k does not divide T); `fit` takes
  one optimizer step per window whose loss has a term, on the window's loss (plus penalties).
- `stateful`: the state after one batch is the state before the next batch *of the same size*
  (row i continues row i); `Network.reset_state()` goes back to the initial states.
- `lengths`: sequence i is valid for steps t < lengths[i].  Masked steps neither change the
  state nor count in the loss (see `build_window` for each kind of output).

A window's loss is the network's loss restricted to its steps, so the window losses of a batch
add up to the batch's loss:
- loss_steps='all': each step's term is weighted as in the whole sequence (1/T each; under
  lengths 1/(N * length_i) per valid step of sequence i, so each sequence weighs the same and
  a padded batch has the loss of its sequences run one by one, averaged);
- loss_steps='last': the term lies in the window holding the last step (under lengths, the one
  holding each sequence's own last valid step); the other windows have no loss and no step;
- a static output (it reads sequences' last steps) exists in the last window only; under
  truncation its gradient reaches the sequence layers' last window only.

Dropout in a window draws per-step masks from a seed of its own (window 0's is the batch's), so
a batch run in one window draws what an untruncated batch draws; `variational` masks come from
the batch's seed, so all windows of a sequence share them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import ir, optim
from ..autodiff import grad
from ..ir.core import FlexcoreError, ShapeError, Var
from .graph import Unroller, check_windows, state_keys
from .layers import Layer

if TYPE_CHECKING:  # pragma: no cover
    from .network import Network

__all__ = [
    "PLAIN",
    "Spec",
    "build_window",
    "check_lengths",
    "clear_padding",
    "run_batch",
    "state_names",
    "window_dtypes",
]

_LABEL_LOSSES = ("nll", "cross_entropy")
_WINDOW_SEED_STRIDE = 1 << 40  # window w of a batch draws per-step dropout from seed + w * stride


@dataclass(frozen=True)
class Spec:
    """What one compiled window function does.

    mode       'train' (loss, gradients, optimizer updates), 'eval' (loss), 'gradients' (loss
               and parameter gradients, no update) or 'predict' (outputs only)
    training   dropout on (then the function takes two seeds: per step and per sequence)
    first      the window starts the sequence: reads before it see the initial states (else the
               carried state is an input)
    last       the window ends the sequence: static layers exist, 'last'-step outputs are read
    carry_out  the state after the window is returned
    masked     per-sequence lengths: takes a mask (N, W), a last-valid-step indicator (N, W) and
               1 / length (N,)
    """

    mode: str
    training: bool
    first: bool = True
    last: bool = True
    carry_out: bool = False
    masked: bool = False


# The whole sequence in one call: the functions `Network.compile` always makes.
PLAIN = {
    "train": Spec("train", True),
    "eval": Spec("eval", False),
    "predict": Spec("predict", False),
    "gradients": Spec("gradients", False),
}


def _y_dtype(layer: Layer, dt: np.dtype) -> Any:
    return np.int64 if layer.loss in _LABEL_LOSSES else dt


def window_dtypes(net: Network, spec: Spec) -> list[Any]:
    """The input dtypes of a window function, in its argument order: inputs, targets (unless
    predicting), mask / last-step / 1-over-length (masked), carried state (unless first),
    learning rate (train), per-step and per-sequence seed (training)."""
    w = net.wiring
    dt = net._compiled["dtype"]
    out: list[Any] = [dt] * len(w.inputs)
    if spec.mode != "predict":
        out += [_y_dtype(layer, dt) for layer in w.outputs]
    if spec.masked:
        out += [dt, dt, dt]
    if not spec.first:
        out += [dt] * len(state_keys(w))
    if spec.mode == "train":
        out.append(dt)
    if spec.training:
        out += [np.int64, np.int64]
    return out


def layout(net: Network, spec: Spec) -> list[tuple[Layer, str]]:
    """The outputs a window returns, each with how it covers the batch:
    'all'    a sequence output with loss_steps='all': (N, W, ...), the window's steps
    'last'   a sequence output read at the last step: (N, ...), last window only
    'ends'   the same under lengths: (N, ...), the rows whose last valid step lies in the window
    'static' a static output: (N, ...), last window only"""
    w = net.wiring
    res = []
    for layer in w.outputs:
        if w.seq[id(layer)] and layer.loss_steps == "all":
            res.append((layer, "all"))
        elif w.seq[id(layer)]:
            if spec.masked:
                res.append((layer, "ends"))
            elif spec.last:
                res.append((layer, "last"))
        elif spec.last:
            res.append((layer, "static"))
    return res


def _every_step(layer: Layer, net: Network) -> bool:
    return net.wiring.seq[id(layer)] and layer.loss_steps == "all"


def _stack(vs: list[Var]) -> Var:
    """(N, ...) per step -> (N, W, ...)."""
    return ir.api.concat([ir.api.reshape(v, (v.shape[0], 1, *v.shape[1:])) for v in vs], axis=1)


def _window_steps(net: Network, xs: list[Var]) -> int | None:
    for layer, x in zip(net.wiring.inputs, xs, strict=True):
        if layer.sequence_length is not None:
            return x.shape[1]
    return None


def _check_targets(net: Network, ys: list[Var], steps: int | None) -> None:
    for layer, y in zip(net.wiring.outputs, ys, strict=True):
        per_step = () if layer.loss in _LABEL_LOSSES else layer.shape
        lead = (y.shape[0], steps) if _every_step(layer, net) else (y.shape[0],)
        if y.shape != lead + per_step:
            raise ShapeError(
                f"targets for output layer '{layer.name}' need shape {lead + per_step} "
                f"(batch first), got {y.shape}"
            )


def build_window(net: Network, spec: Spec, *args: Var):
    """The graph of one window (see `Spec` and `window_dtypes` for the arguments).  Returns the
    outputs [loss] + outputs-by-`layout` (or + gradients, mode 'gradients') + final state
    (carry_out), and for mode 'train' the optimizer updates."""
    w = net.wiring
    cfg = net._compiled
    it = iter(args)
    xs = [next(it) for _ in w.inputs]
    ys = [next(it) for _ in w.outputs] if spec.mode != "predict" else None
    mask = last_ind = inv_len = None
    if spec.masked:
        mask, last_ind, inv_len = next(it), next(it), next(it)
    keys = state_keys(w)
    carried = None if spec.first else {(id(layer), k): next(it) for layer, k in keys}
    lr = next(it) if spec.mode == "train" else None
    seed = seq_seed = None
    if spec.training:
        seed, seq_seed = next(it), next(it)
    steps = _window_steps(net, xs)
    if ys is not None:
        _check_targets(net, ys, steps)
    batch = xs[0].shape[0]
    x_of = {id(layer): x for layer, x in zip(w.inputs, xs, strict=True)}
    valid = None if mask is None else ir.api.gt(mask, 0.5)
    un = Unroller(w, net.params, batch, x_of, cfg["dtype"], spec.training, seed, steps=steps,
                  carried=carried, mask=valid, seq_seed=seq_seed)
    un.run()

    y_of = {id(layer): y for layer, y in zip(w.outputs, ys, strict=True)} if ys is not None else {}
    preds: list[Var] = []
    total: Var | None = None
    for layer, kind in layout(net, spec):
        y = y_of.get(id(layer))
        lw = layer.loss_weight
        term = None
        if kind == "all":
            pairs = [un.both(layer, t) for t in range(steps)]
            out_seq = _stack([o for _, o in pairs])
            if mask is None:
                preds.append(out_seq)
                if y is not None:
                    parts = [net._loss_of(layer, p, o, y[:, t]) for t, (p, o) in enumerate(pairs)]
                    term = _sum(parts) * (lw / w.T)
            else:
                # The whole window at once (a few ops, not a few per step): masked steps of the
                # returned sequence read 0, and step t of sequence i weighs 1 / (N * length_i)
                # where valid, 0 where masked.
                shown = ir.api.reshape(valid, (batch, steps) + (1,) * len(layer.shape))
                preds.append(ir.api.where(shown, out_seq, 0.0))
                if y is not None:
                    weight = mask * ir.api.reshape(inv_len, (batch, 1)) * (1.0 / batch)
                    pre_seq = _stack([p for p, _ in pairs])  # dropped unless the loss reads it
                    per_step = net._loss_of(layer, pre_seq, out_seq, y, per_example=True)
                    term = ir.api.sum(per_step * weight) * lw
        elif kind == "ends":
            # Each row's value at its last valid step, if that lies in this window (else the
            # window's last step: a real value, so the unused loss stays finite).
            pre, out = un.both(layer, steps - 1)
            for t in range(steps - 1):
                hit = ir.api.gt(last_ind[:, t], 0.5)
                hit = ir.api.reshape(hit, (batch,) + (1,) * len(layer.shape))
                p_t, o_t = un.both(layer, t)
                pre, out = ir.api.where(hit, p_t, pre), ir.api.where(hit, o_t, out)
            preds.append(out)
            if y is not None:
                ends_here = ir.api.sum(last_ind, 1)  # 1 for the rows whose last step is here
                vec = net._loss_of(layer, pre, out, y, per_example=True)
                term = ir.api.sum(vec * ends_here) * (lw / batch)
        else:
            pre, out = un.both(layer, steps - 1 if kind == "last" else None)
            preds.append(out)
            if y is not None:
                term = net._loss_of(layer, pre, out, y) * lw
        if term is not None:
            total = term if total is None else total + term

    finals = [un.final_state(layer, k) for layer, k in keys] if spec.carry_out else []
    if spec.mode == "predict":
        return preds + finals
    if total is None:
        raise FlexcoreError(f"internal: a {spec.mode} window without a loss term ({spec})")
    if spec.mode == "eval":
        return [total, *preds, *finals]
    loss = net._regularised(total)
    params = net._trainable()
    grads = grad(loss, params, disconnected="zero")
    if spec.mode == "gradients":
        return [loss, *grads, *finals]
    if cfg["clip_norm"]:
        grads = optim.clip_by_global_norm(grads, cfg["clip_norm"])
    updates = cfg["optimizer"].updates(params, grads, lr)
    return [total, *preds, *finals], updates


def _sum(vs: list[Var]) -> Var:
    acc = vs[0]
    for v in vs[1:]:
        acc = acc + v
    return acc


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
def check_lengths(lengths: Any, n: int, t_len: int | None, what: str) -> np.ndarray:
    """`lengths` as an int64 array of n values in [1, t_len] (the network's sequence length)."""
    if t_len is None:
        raise FlexcoreError(
            f"{what}: lengths need a sequence: give an InputLayer a sequence_length"
        )
    arr = np.asarray(lengths)
    if arr.shape != (n,) or arr.dtype.kind not in "iu":
        raise FlexcoreError(
            f"{what}: lengths must be {n} integers (one per sequence), got {arr.dtype} {arr.shape}"
        )
    if n and (arr.min() < 1 or arr.max() > t_len):
        raise FlexcoreError(
            f"{what}: lengths must be in [1, {t_len}] (the sequence length), "
            f"got [{arr.min()}, {arr.max()}]"
        )
    return arr.astype(np.int64)


def clear_padding(
    net: Network, xs: list[np.ndarray], ys: list[np.ndarray] | None, lengths: np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Copies with the steps at or after each sequence's length zeroed, in the inputs and in
    the per-step targets: whatever padding holds (NaN, label -1) then never reaches a gradient
    (0 times NaN is NaN), and no valid step reads it."""
    w = net.wiring
    pad = np.arange(w.T)[None, :] >= lengths[:, None]  # (N, T)

    def clean(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a[pad] = 0
        return a

    xs = [clean(x) if layer.sequence_length is not None else x
          for layer, x in zip(w.inputs, xs, strict=True)]
    if ys is not None:
        ys = [clean(y) if _every_step(layer, net) else y
              for layer, y in zip(w.outputs, ys, strict=True)]
    return xs, ys


def _mask_arrays(lengths: np.ndarray, t_len: int, dt: np.dtype):
    """mask (N, T): step valid; last (N, T): the sequence's last valid step; 1 / length (N,)."""
    t = np.arange(t_len)[None, :]
    mask = (t < lengths[:, None]).astype(dt)
    last = (t == lengths[:, None] - 1).astype(dt)
    return mask, last, (1.0 / lengths).astype(dt)


# ---------------------------------------------------------------------------------------
# running a batch
# ---------------------------------------------------------------------------------------
def _windows(t_len: int | None, truncate: int | None) -> list[tuple[int, int | None]]:
    if t_len is None:
        if truncate is not None:
            raise FlexcoreError("truncate needs a sequence: give an InputLayer a sequence_length")
        return [(0, None)]
    k = t_len if truncate is None else truncate
    return [(t0, min(t0 + k, t_len)) for t0 in range(0, t_len, k)]


def _contributes(lay: list[tuple[Layer, str]], masks, t0: int, t1: int | None) -> bool:
    """Whether the window's loss has a term for some row (else it takes no step)."""
    for _, kind in lay:
        if kind in ("last", "static"):
            return True
        if kind == "all" and (masks is None or masks[0][:, t0:t1].any()):
            return True
        if kind == "ends" and masks[1][:, t0:t1].any():
            return True
    return False


def run_batch(net: Network, mode: str, xs: list[np.ndarray], ys: list[np.ndarray] | None,
              lengths: np.ndarray | None = None, *, truncate: int | None = None,
              stateful: bool = False, training: bool = False, lr: float | None = None,
              seed: int = 0):
    """Run one batch (arrays of N rows, whole sequences) window by window.

    Returns (loss, outputs, gradients): the sum of the window losses (None for 'predict'), one
    array per output layer as `predict` returns them, and for mode 'gradients' the sum of the
    window gradients (all taken at the same weights).  Mode 'train' updates the parameters
    after each window that has a loss term."""
    w = net.wiring
    dt = net._compiled["dtype"]
    n = xs[0].shape[0]
    masked = lengths is not None
    masks = _mask_arrays(lengths, w.T, dt) if masked else None
    state = net._stored_state(n) if stateful else None
    wins = _windows(w.T, truncate)
    if len(wins) > 1:
        check_windows(w)
    loss_sum: float | None = None
    grad_sum: list[np.ndarray] | None = None
    parts: dict[int, list[np.ndarray]] = {}  # 'all' outputs: one piece per window
    whole: dict[int, np.ndarray] = {}  # the other outputs
    for wi, (t0, t1) in enumerate(wins):
        last = wi == len(wins) - 1
        first = state is None
        carry_out = not last or stateful
        lay = layout(net, Spec(mode, training, first, last, carry_out, masked))
        # A window without a loss term (all but the last, for last-step losses) only moves the
        # state on: no gradient, no optimizer step.
        fmode = mode if mode != "predict" and _contributes(lay, masks, t0, t1) else "predict"
        spec = Spec(fmode, training, first, last, carry_out, masked)
        cut = t1 is not None
        args: list[Any] = [x[:, t0:t1] if cut and layer.sequence_length is not None else x
                           for layer, x in zip(w.inputs, xs, strict=True)]
        if fmode != "predict":
            args += [y[:, t0:t1] if cut and _every_step(layer, net) else y
                     for layer, y in zip(w.outputs, ys, strict=True)]
        if masked:
            args += [masks[0][:, t0:t1], masks[1][:, t0:t1], masks[2]]
        if not first:
            args += state
        if fmode == "train":
            args.append(np.asarray(lr, dt))
        if training:
            args += [np.int64(seed + wi * _WINDOW_SEED_STRIDE), np.int64(seed)]
        res = net._window_fn(spec)(*args)
        if fmode != "predict":
            loss_sum = float(res[0]) + (loss_sum or 0.0)
            res = res[1:]
        if fmode == "gradients":
            k = len(net.params)
            gs, res = res[:k], res[k:]
            grad_sum = list(gs) if grad_sum is None else [
                a + b for a, b in zip(grad_sum, gs, strict=True)
            ]
        else:
            outs, res = res[: len(lay)], res[len(lay):]
            for (layer, kind), o in zip(lay, outs, strict=True):
                if kind == "all":
                    parts.setdefault(id(layer), []).append(o)
                elif kind == "ends":
                    rows = masks[1][:, t0:t1].any(axis=1)
                    acc = whole.setdefault(id(layer), np.zeros_like(o))
                    acc[rows] = o[rows]
                else:
                    whole[id(layer)] = o
        if carry_out:
            state = list(res)
    if stateful:
        net._store_state(n, state)
    outputs = None
    if mode != "gradients":
        outputs = [
            np.concatenate(parts[id(layer)], axis=1) if id(layer) in parts else whole[id(layer)]
            for layer in w.outputs
        ]
    return loss_sum, outputs, grad_sum


def state_names(net: Network) -> list[tuple[str, int, tuple[int, ...]]]:
    """The carried state's identity: (layer name, lag, shape) per value, in argument order."""
    return [(layer.name, k, layer.shape) for layer, k in state_keys(net.wiring)]
