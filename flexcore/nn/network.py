"""The Network: layers and the connections between them, unrolled, differentiated, compiled
and trained."""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import numpy as np

from .. import ir, optim
from ..function import TracedFunction
from ..ir.core import FlexcoreError, Shared, ShapeError, Var
from .connections import Conv, Connection, Dense, Identity, Pool
from .graph import Wiring, analyze
from .history import History
from .layers import InputLayer, Layer, MemoryLayer
from .sequences import PLAIN, Spec, build_window, check_lengths, clear_padding, run_batch, state_names, window_dtypes

__all__ = ["Network"]

_LABEL_LOSSES = ("nll", "cross_entropy")


def _init_param(rng: np.random.Generator, shape: tuple[int, ...], how: str | float, dtype) -> np.ndarray:
    if isinstance(how, (int, float)):  # a fill value (a ScalarGate's initial scalar)
        return np.full(shape, how, dtype)
    if how == "zeros":
        return np.zeros(shape, dtype)
    if how == "ones":
        return np.ones(shape, dtype)
    if how == "prelu":
        return np.full(shape, 0.25, dtype)
    if how == "glorot":
        lim = math.sqrt(6.0 / (shape[0] + shape[1]))
        return rng.uniform(-lim, lim, shape).astype(dtype)
    if how == "conv":
        rf = int(np.prod(shape[2:]))
        lim = math.sqrt(6.0 / (shape[1] * rf + shape[0] * rf))
        return rng.uniform(-lim, lim, shape).astype(dtype)
    if how == "orthogonal":
        a = rng.standard_normal((max(shape), min(shape)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        return (q if shape[0] >= shape[1] else q.T)[: shape[0], : shape[1]].astype(dtype)
    raise FlexcoreError(f"unknown initialiser '{how}'; valid: zeros, ones, glorot, conv, orthogonal")


class Network:
    """A network of layers joined by weight-owning connections.

        net = Network('demo')
        x = InputLayer(input_shape=(10,), sequence_length=4)
        h = ActivationLayer(input_shape=(32,), activation='tanh')
        y = ActivationLayer(input_shape=(3,), activation='softmax', output=True, loss='nll')
        net.connect_dense(x, h, return_sequence=True)
        net.connect_recurrent(h, h)          # delay 1
        net.connect_dense(h, y)              # y reads h's last step
        net.compile(32); net.fit((inputs, labels), epochs=5, learning_rate=0.1)
    """

    def __init__(self, name: str = "network", seed: int = 0):
        self.name = name
        self.seed = int(seed)
        self.layers: list[Layer] = []
        self.connections: list[Connection] = []
        self.params: dict[str, Shared] = {}
        self._rng = np.random.default_rng(self.seed)
        self._compiled: dict[str, Any] | None = None
        self._fns: dict[str, TracedFunction] | None = None
        self._wiring: Wiring | None = None
        self._step = 0
        # Stateful calls: batch size -> (state identity, carried values); see reset_state.
        self._states: dict[int, tuple[list, list[np.ndarray]]] = {}
        # Meta-layers (GInfty) that change the network while it trains; see flexcore.nn.ginfty.
        self.meta_layers: list[Any] = []

    # -- building -------------------------------------------------------------------------
    def add(self, *layers: Layer) -> "Network":
        for layer in layers:
            self._register(layer)
        return self

    def _register(self, layer: Layer) -> None:
        if not isinstance(layer, Layer):
            raise FlexcoreError(f"expected a Layer, got {type(layer).__name__}")
        if any(l is layer for l in self.layers):
            return
        if any(l.name == layer.name for l in self.layers):
            raise FlexcoreError(f"network '{self.name}' already has a layer named '{layer.name}'")
        self.layers.append(layer)
        self._invalidate()

    def _invalidate(self) -> None:
        """The wiring changed: analyse it again and rebuild compiled functions on next use."""
        self._wiring = None
        self._fns = None

    def connect(self, connection: Connection) -> Connection:
        """Add a connection object (connect_* build them for you)."""
        self._register(connection.source)
        self._register(connection.target)
        if any(c.name == connection.name for c in self.connections):
            raise FlexcoreError(f"network '{self.name}' already has a connection named '{connection.name}'; pass name=")
        self.connections.append(connection)
        self._invalidate()
        return connection

    def connect_dense(self, source: Layer, target: Layer, delay: int = 0, return_sequence: bool = False, **kw) -> Dense:
        """A weight matrix from source to target (delay >= 1: recurrent, from t - delay)."""
        return self.connect(Dense(source, target, delay=delay, return_sequence=return_sequence, **kw))

    def connect_conv(self, source: Layer, target: Layer, kernel_size=3, delay: int = 0, return_sequence: bool = False, **kw) -> Conv:
        """A 1-d or 2-d convolution (by the source's rank) between feature-map layers."""
        return self.connect(Conv(source, target, kernel_size=kernel_size, delay=delay, return_sequence=return_sequence, **kw))

    connect_conv1d = connect_conv
    connect_conv2d = connect_conv

    def connect_pool(self, source: Layer, target: Layer, mode: str = "max", kernel_size=2, delay: int = 0,
                     return_sequence: bool = False, **kw) -> Pool:
        """Max or average pooling between feature-map layers (no weights)."""
        return self.connect(Pool(source, target, mode=mode, kernel_size=kernel_size, delay=delay,
                                 return_sequence=return_sequence, **kw))

    def connect_identity(self, source: Layer, target: Layer, scale: float = 1.0, delay: int = 0,
                         return_sequence: bool = False, **kw) -> Identity:
        """The source's value as it is (a skip or residual path; no weights)."""
        return self.connect(Identity(source, target, scale=scale, delay=delay, return_sequence=return_sequence, **kw))

    def connect_recurrent(self, source: Layer, target: Layer, delay: int = 1, kind: str = "dense", **kw) -> Connection:
        """A recurrent connection from `source` at t - delay into `target` at t; any kind
        ('dense', 'conv', 'pool', 'identity'), from any layer to any layer."""
        if not isinstance(delay, (int, np.integer)) or delay < 1:
            raise FlexcoreError(f"connect_recurrent {source.name} -> {target.name}: delay must be an int >= 1, got {delay!r}")
        makers: dict[str, Callable[..., Connection]] = {
            "dense": self.connect_dense, "conv": self.connect_conv, "pool": self.connect_pool, "identity": self.connect_identity,
        }
        if kind not in makers:
            raise FlexcoreError(f"connect_recurrent: unknown kind '{kind}'; valid: {', '.join(makers)}")
        return makers[kind](source, target, delay=delay, **kw)

    def connect_gate(self, source: Layer, memory: MemoryLayer, role: str, **kw) -> Identity:
        """Feed a memory layer: role 'forget', 'input' or 'candidate' (an identity connection)."""
        return self.connect_identity(source, memory, role=role, return_sequence=True, **kw)

    # the seed's spellings
    connectDense = connect_dense
    connectConv = connect_conv
    connectPool = connect_pool
    connectIdentity = connect_identity
    connectRecurrent = connect_recurrent
    connectGate = connect_gate

    def layer(self, name: str) -> Layer:
        for l in self.layers:
            if l.name == name:
                return l
        raise FlexcoreError(f"network '{self.name}' has no layer '{name}'; layers: {', '.join(l.name for l in self.layers)}")

    # -- analysis and parameters ----------------------------------------------------------
    @property
    def wiring(self) -> Wiring:
        if self._wiring is None:
            self._wiring = analyze(self.layers, self.connections)
        return self._wiring

    @property
    def inputs(self) -> list[InputLayer]:
        return self.wiring.inputs

    @property
    def outputs(self) -> list[Layer]:
        return self.wiring.outputs

    def _owners(self):
        return [(l.name, l) for l in self.layers] + [(c.name, c) for c in self.connections]

    def _ensure_params(self, dtype) -> None:
        for owner_name, owner in self._owners():
            for pname, (shape, how) in owner.param_specs().items():
                key = f"{owner_name}.{pname}"
                p = self.params.get(key)
                if p is None or p.shape != tuple(shape):
                    self.params[key] = ir.shared(_init_param(self._rng, tuple(shape), how, dtype), name=key)
                elif p.dtype != np.dtype(dtype):
                    self.params[key] = ir.shared(p.get_value().astype(dtype), name=key)

    def weights(self) -> dict[str, np.ndarray]:
        """Copies of every parameter, by name '<layer or connection>.<param>'."""
        return {k: p.get_value() for k, p in self.params.items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        for k, v in weights.items():
            if k not in self.params:
                raise FlexcoreError(f"set_weights: network '{self.name}' has no parameter '{k}'")
            self.params[k].set_value(np.asarray(v, dtype=self.params[k].dtype))

    # -- compiling ------------------------------------------------------------------------
    def compile(self, batch_size: int = 32, optimizer: Any = "sgd", backend: Any = None, l1: float = 0.0,
                l2: float = 0.0, clip_norm: float | None = None, dtype: Any = "float32", stateful: bool = False,
                **kw) -> "Network":
        """Unroll the network into the IR, differentiate it and compile it for `batch_size`
        (other batch sizes, like a smaller last batch, compile once more on first use).

        `stateful=True`: fit, evaluate and predict carry the recurrent state from one batch to
        the next of the same size (row i continues row i) and from call to call, until
        `reset_state()`; each call can override it."""
        if kw:
            alias = {"mini_batch_size": "batch_size"}
            bad = [k for k in kw if k not in alias]
            if bad:
                raise FlexcoreError(f"compile: unknown argument(s) {', '.join(bad)}; valid: batch_size, optimizer, backend, l1, l2, clip_norm, dtype, stateful")
            batch_size = kw.get("mini_batch_size", batch_size)
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise FlexcoreError(f"compile: batch_size must be a positive int, got {batch_size!r}")
        self.wiring  # noqa: B018  (validates the wiring before anything is built)
        dtype = np.dtype(dtype)
        self._ensure_params(dtype)
        opt = optim.get_optimizer(optimizer)
        self._compiled = {
            "batch_size": int(batch_size), "optimizer": opt, "backend": backend, "l1": float(l1), "l2": float(l2),
            "clip_norm": clip_norm, "dtype": dtype, "stateful": bool(stateful),
        }
        self._make_functions()
        return self

    def _require_compiled(self) -> dict[str, Any]:
        if self._compiled is None:
            raise FlexcoreError(f"network '{self.name}' is not compiled; call compile(batch_size) first")
        if self._fns is None:
            self._ensure_params(self._compiled["dtype"])
            self._make_functions()
        return self._compiled

    def _make_functions(self) -> None:
        # The whole-sequence functions; windowed ones (truncate, stateful, lengths) are made by
        # _window_fn on first use.  All are built by sequences.build_window.
        self._fns = {}
        for name, spec in PLAIN.items():
            self._fns[name] = self._traced(spec, name)

    def _traced(self, spec: Spec, label: str) -> TracedFunction:
        cfg = self._compiled
        return TracedFunction(lambda *args: build_window(self, spec, *args), window_dtypes(self, spec),
                              cfg["backend"], f"{self.name}.{label}")

    def _window_fn(self, spec: Spec) -> TracedFunction:
        """The compiled function for a window spec (one plan per input shapes, as always)."""
        for name, plain in PLAIN.items():
            if spec == plain:
                return self._fns[name]
        fn = self._fns.get(spec)
        if fn is None:
            fn = self._fns[spec] = self._traced(spec, f"{spec.mode}-window")
        return fn

    def _loss_of(self, layer: Layer, pre: Var, out: Var, y: Var, per_example: bool = False) -> Var:
        """The layer's loss at one step: the mean over the batch, or (per_example) one loss per
        example, each the mean over the layer's elements as the batch loss is.  Per example, the
        values may carry more leading axes than the batch (N, T, *shape): one loss per (n, t)."""
        kind = layer.loss
        if kind in _LABEL_LOSSES:
            if layer.activation == "softmax":
                lp = ir.api.log_softmax(pre, -1)
            elif layer.activation == "log_softmax":
                lp = out
            elif kind == "cross_entropy":
                lp = ir.api.log_softmax(out, -1)
            else:
                lp = ir.api.log(out)
            if not per_example:
                return ir.api.nll_loss(lp, y)
            return -ir.api.sum(lp * ir.api.one_hot(y, lp.shape[-1], lp.dtype), -1)
        axes = tuple(range(out.ndim - len(layer.shape), out.ndim))
        if kind == "mse":
            if not per_example:
                return ir.api.mse_loss(out, y)
            d = out - y
            return ir.api.mean(d * d, axes)
        if kind == "bce" and layer.activation != "sigmoid":
            raise FlexcoreError(
                f"layer '{layer.name}': binary_cross_entropy needs a sigmoid activation (or use 'bce_with_logits')"
            )
        x = pre if kind == "bce" else out
        if not per_example:
            return ir.api.bce_with_logits(x, y)
        return ir.api.mean(ir.api.softplus(x) - x * y, axes)

    def _trainable(self) -> list[Shared]:
        return list(self.params.values())

    def _regularised(self, loss: Var) -> Var:
        cfg = self._compiled
        mats = [p for k, p in self.params.items() if k.endswith(".W")]
        if cfg["l1"]:
            loss = loss + optim.l1_penalty(mats) * cfg["l1"]
        if cfg["l2"]:
            loss = loss + optim.l2_penalty(mats) * cfg["l2"]
        for c in self.connections:  # a connection's own regulariser (a ScalarGate's l2)
            term = c.penalty({k: self.params[f"{c.name}.{k}"] for k in c.param_specs()})
            if term is not None:
                loss = loss + term
        return loss

    def _target_shape(self, layer: Layer, n: int) -> tuple[int, ...]:
        per_step = () if layer.loss in _LABEL_LOSSES else layer.shape
        if self.wiring.seq[id(layer)] and layer.loss_steps == "all":
            return (n, self.wiring.T) + per_step
        return (n,) + per_step

    # -- data -----------------------------------------------------------------------------
    def _as_list(self, value, layers: list[Layer], what: str) -> list[np.ndarray]:
        if isinstance(value, dict):
            missing = [l.name for l in layers if l.name not in value]
            if missing:
                raise FlexcoreError(f"{what}: missing data for layer(s) {', '.join(missing)}")
            return [np.asarray(value[l.name]) for l in layers]
        if len(layers) == 1:
            # A list holding one array is the per-layer form ([x] as for several inputs), not data.
            one = isinstance(value, (list, tuple)) and len(value) == 1
            if one and isinstance(value[0], np.ndarray):
                return [value[0]]
            return [np.asarray(value)]
        if not isinstance(value, (list, tuple)) or len(value) != len(layers):
            raise FlexcoreError(f"{what}: the network has {len(layers)} layers here ({', '.join(l.name for l in layers)}); "
                                "pass a list in that order or a dict by layer name")
        return [np.asarray(v) for v in value]

    def _inputs(self, inputs) -> list[np.ndarray]:
        xs = self._as_list(inputs, self.wiring.inputs, "inputs")
        n = None
        for layer, x in zip(self.wiring.inputs, xs):
            want = ((layer.sequence_length,) if layer.sequence_length else ()) + layer.shape
            if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
                raise ShapeError(
                    f"input layer '{layer.name}' takes data of shape (N, {', '.join(map(str, want))}), got {x.shape}"
                )
            if n is not None and x.shape[0] != n:
                raise ShapeError(f"input layers disagree on the number of examples: {n} and {x.shape[0]} ('{layer.name}')")
            n = x.shape[0]
        if n == 0:
            raise ShapeError(f"input layer '{self.wiring.inputs[0].name}': the data holds no examples")
        return xs

    def _data(self, data, what: str, lengths=None) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray | None]:
        """(inputs, targets, lengths) from an (inputs, targets) pair or an (inputs, targets,
        lengths) triple; with lengths, the padding is zeroed (see sequences.clear_padding)."""
        if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
            raise FlexcoreError(f"{what} must be an (inputs, targets) pair or an (inputs, targets, lengths) triple")
        if len(data) == 3:
            if lengths is not None:
                raise FlexcoreError(f"{what}: lengths given twice (in the data and as lengths=)")
            lengths = data[2]
        xs = self._inputs(data[0])
        ys = self._as_list(data[1], self.wiring.outputs, f"{what} targets")
        n = xs[0].shape[0]
        for layer, y in zip(self.wiring.outputs, ys):
            if y.shape[0] != n:
                raise ShapeError(f"{what}: {n} inputs but {y.shape[0]} targets for '{layer.name}'")
            want = self._target_shape(layer, n)
            if y.shape != want:
                raise ShapeError(f"{what}: targets for output layer '{layer.name}' need shape {want}, got {y.shape}")
        if lengths is not None:
            lengths = check_lengths(lengths, n, self.wiring.T, what)
            xs, ys = clear_padding(self, xs, ys, lengths)
        for layer, y in zip(self.wiring.outputs, ys):
            if layer.loss in _LABEL_LOSSES:
                if y.dtype.kind not in "iu":
                    raise FlexcoreError(f"{what}: targets for '{layer.name}' must be integer class labels, got {y.dtype}")
                k = layer.shape[-1]
                if y.size and (y.min() < 0 or y.max() >= k):
                    raise FlexcoreError(f"{what}: labels for '{layer.name}' must be in [0, {k}), got [{y.min()}, {y.max()}]")
        return xs, ys, lengths

    def _batches(self, n: int, batch: int, order: np.ndarray | None = None):
        idx = np.arange(n) if order is None else order
        for s in range(0, n, batch):
            yield idx[s:s + batch]

    # -- training and inference -----------------------------------------------------------
    def fit(self, training_data, epochs: int = 1, learning_rate: float | Callable[[int], float] = 0.1,
            validation_data=None, test_data=None, *, shuffle: bool | None = None, verbose: bool = True,
            callbacks: Sequence[Any] = (), truncate: int | None = None, stateful: bool | None = None,
            lengths=None) -> History:
        """Train with minibatches of the compiled batch size.  `learning_rate` is a number or a
        function of the epoch.  Returns a History of per-epoch metrics.

        Long and ragged sequences (see flexcore.nn.sequences):
        truncate  truncated BPTT: each batch runs in windows of `truncate` steps, backpropagates
                  within a window only and takes an optimizer step per window with a loss term;
                  the state crosses windows as values
        stateful  batch b+1 starts from batch b's final state, row by row, and so on across
                  epochs and calls until reset_state() (default: compile's setting); needs
                  shuffle=False, which is then the default
        lengths   one length per training sequence: steps at or after it neither change the
                  state nor count in the loss (validation_data / test_data take them as a
                  third element: (inputs, targets, lengths))"""
        cfg = self._require_compiled()
        xs, ys, lengths = self._data(training_data, "training_data", lengths)
        val = self._data(validation_data, "validation_data") if validation_data is not None else None
        test = self._data(test_data, "test_data") if test_data is not None else None
        truncate = self._check_truncate(truncate, "fit")
        stateful = cfg["stateful"] if stateful is None else bool(stateful)
        if shuffle is None:
            shuffle = not stateful
        elif shuffle and stateful:
            raise FlexcoreError("fit: stateful training needs shuffle=False (batch b+1 continues batch b row by row)")
        n = xs[0].shape[0]
        bs = cfg["batch_size"]
        history = History()
        from tqdm.auto import tqdm

        # Meta-layers watch training as callbacks do, first: a GInfty grows the network between
        # epochs, and the user's callbacks (a checkpoint) then see the grown one.
        callbacks = [*self.meta_layers, *callbacks]
        for cb in callbacks:
            cb.on_train_begin(self, history)
        for epoch in range(int(epochs)):
            lr = learning_rate(epoch) if callable(learning_rate) else learning_rate
            for cb in callbacks:  # a callback may set this epoch's rate (LearningRateScheduler)
                hook = getattr(cb, "on_epoch_begin", None)
                new_lr = hook(self, epoch, lr) if hook is not None else None
                lr = lr if new_lr is None else new_lr
            cfg = self._require_compiled()  # rebuilt when the wiring changed (a GInfty grew)
            # Seeded by the steps taken so far: a later fit call shuffles anew, and fit(2 epochs)
            # visits the examples as fit(1 epoch) twice does.
            order = np.random.default_rng([self.seed, 7919, self._step]).permutation(n) if shuffle else None
            t0 = time.perf_counter()
            tot_loss, tot_correct, seen = 0.0, 0.0, 0
            bar = tqdm(total=n, desc=f"epoch {epoch + 1}/{epochs}", unit="ex", disable=not verbose, leave=True)
            for idx in self._batches(n, bs, order):
                self._step += 1
                part = None if lengths is None else lengths[idx]
                loss, preds, _ = run_batch(self, "train", [x[idx] for x in xs], [y[idx] for y in ys], part,
                                           truncate=truncate, stateful=stateful, training=True, lr=lr,
                                           seed=self.seed * 1_000_003 + self._step)
                if not math.isfinite(loss):
                    bar.close()
                    raise FlexcoreError(f"training diverged at epoch {epoch + 1}: the loss is {loss}; lower the learning rate")
                m = len(idx)
                tot_loss += loss * m
                tot_correct += self._correct(preds, [y[idx] for y in ys], part)
                seen += m
                post = {"loss": f"{tot_loss / seen:.4f}"}
                if self._classifies():
                    post["acc"] = f"{tot_correct / seen:.3f}"
                bar.set_postfix(post, refresh=False)
                bar.update(m)
            metrics = {"loss": tot_loss / seen, "time": time.perf_counter() - t0, "lr": float(lr)}
            if self._classifies():
                metrics["accuracy"] = tot_correct / seen
            for prefix, d in (("val_", val), ("test_", test)):
                if d is not None:
                    # Held-out data starts from the initial state and leaves the carried one alone.
                    metrics.update({prefix + k: v for k, v in self._evaluate(*d, truncate=truncate).items()})
            bar.set_postfix({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in metrics.items() if k != "time"})
            bar.close()
            history.append(epoch, metrics)
            stop = False
            for cb in callbacks:
                stop = bool(cb.on_epoch_end(self, epoch, metrics)) or stop
            if stop:
                break
        for cb in callbacks:
            cb.on_train_end(self, history)
        return history

    def _classifies(self) -> bool:
        return any(l.loss in _LABEL_LOSSES for l in self.wiring.outputs)

    def _correct(self, preds: list[np.ndarray], ys: list[np.ndarray], lengths: np.ndarray | None = None) -> float:
        for layer, p, y in zip(self.wiring.outputs, preds, ys):
            if layer.loss in _LABEL_LOSSES:
                hit = (np.argmax(p, axis=-1) == y).reshape(len(y), -1)
                if lengths is not None and self.wiring.seq[id(layer)] and layer.loss_steps == "all":
                    valid = np.arange(hit.shape[1])[None, :] < lengths[:, None]  # padding does not count
                    return float(((hit & valid).sum(axis=1) / lengths).sum())
                return float(hit.mean(axis=1).sum())
        return 0.0

    def _evaluate(self, xs, ys, lengths=None, *, truncate: int | None = None, stateful: bool = False) -> dict[str, float]:
        cfg = self._require_compiled()
        n = xs[0].shape[0]
        tot, correct = 0.0, 0.0
        for idx in self._batches(n, cfg["batch_size"]):
            part = None if lengths is None else lengths[idx]
            loss, preds, _ = run_batch(self, "eval", [x[idx] for x in xs], [y[idx] for y in ys], part,
                                       truncate=truncate, stateful=stateful)
            tot += loss * len(idx)
            correct += self._correct(preds, [y[idx] for y in ys], part)
        out = {"loss": tot / n}
        if self._classifies():
            out["accuracy"] = correct / n
        return out

    def evaluate(self, data, *, truncate: int | None = None, stateful: bool | None = None,
                 lengths=None) -> dict[str, float]:
        """Mean loss (and accuracy for classification outputs) over `data` = (inputs, targets)
        or (inputs, targets, lengths).  `truncate` runs each batch in windows (the same values);
        `stateful` (default: compile's setting) continues and updates the carried state."""
        cfg = self._require_compiled()
        xs, ys, lengths = self._data(data, "data", lengths)
        stateful = cfg["stateful"] if stateful is None else bool(stateful)
        return self._evaluate(xs, ys, lengths, truncate=self._check_truncate(truncate, "evaluate"), stateful=stateful)

    def gradients(self, data, *, truncate: int | None = None, lengths=None) -> dict[str, np.ndarray]:
        """Gradients of the objective `fit` minimises (the weighted output losses plus the l1/l2
        penalties), with respect to every parameter, by name as in `weights()`; for `data` =
        (inputs, targets) or (inputs, targets, lengths), averaged over all examples.  Dropout is
        off and nothing is clipped or updated: what one plain SGD step would follow.  With
        `truncate`, each batch's gradient is the sum of its windows' truncated gradients, all at
        the current weights.  Always from the initial state."""
        cfg = self._require_compiled()
        xs, ys, lengths = self._data(data, "data", lengths)
        truncate = self._check_truncate(truncate, "gradients")
        n = xs[0].shape[0]
        total: list[np.ndarray] | None = None
        for idx in self._batches(n, cfg["batch_size"]):
            # Each loss is a mean over its batch, so batch gradients weigh by batch size.
            _, _, gs = run_batch(self, "gradients", [x[idx] for x in xs], [y[idx] for y in ys],
                                 None if lengths is None else lengths[idx], truncate=truncate)
            part = [g * (len(idx) / n) for g in gs]
            total = part if total is None else [a + b for a, b in zip(total, part, strict=True)]
        return dict(zip(self.params, total, strict=True))

    def predict(self, inputs, *, truncate: int | None = None, stateful: bool | None = None, lengths=None,
                training: bool = False, seed: int | None = None) -> np.ndarray | list[np.ndarray]:
        """Outputs of the output layers (one array per output layer; a single array for one).

        lengths   per-sequence lengths: a returned sequence reads 0 at masked steps, a
                  last-step output is each sequence's own last valid step
        truncate  run each batch in windows of that many steps (the same values)
        stateful  (default: compile's setting) batches of the compiled size run one after the
                  other, each continuing the state the previous call or batch *of its size*
                  left, so any N works: a batch size never seen starts from the initial state
        training  apply dropout (Monte Carlo dropout); `seed` picks the masks"""
        cfg = self._require_compiled()
        xs = self._inputs(inputs)
        n = xs[0].shape[0]
        if lengths is not None:
            lengths = check_lengths(lengths, n, self.wiring.T, "predict")
            xs, _ = clear_padding(self, xs, None, lengths)
        truncate = self._check_truncate(truncate, "predict")
        stateful = cfg["stateful"] if stateful is None else bool(stateful)
        base = self.seed * 1_000_003 + self._step if seed is None else int(seed)
        chunks: list[list[np.ndarray]] = []
        for b, idx in enumerate(self._batches(n, cfg["batch_size"])):
            # Each batch draws its own dropout masks (the same for the same seed).
            batch_seed = int(np.random.default_rng([base, b]).integers(0, 2**62)) if training else 0
            _, outs, _ = run_batch(self, "predict", [x[idx] for x in xs], None,
                                   None if lengths is None else lengths[idx], truncate=truncate,
                                   stateful=stateful, training=bool(training), seed=batch_seed)
            chunks.append(outs)
        outs = [np.concatenate([c[i] for c in chunks]) for i in range(len(self.wiring.outputs))]
        return outs[0] if len(outs) == 1 else outs

    @staticmethod
    def _check_truncate(truncate, what: str) -> int | None:
        if truncate is None:
            return None
        if isinstance(truncate, (bool, np.bool_)) or not isinstance(truncate, (int, np.integer)) or truncate < 1:
            raise FlexcoreError(f"{what}: truncate must be a positive int (steps per window), got {truncate!r}")
        return int(truncate)

    # -- stateful calls -------------------------------------------------------------------
    def reset_state(self) -> None:
        """Forget the state that stateful calls carry: the next stateful call of every batch
        size starts from the layers' initial states."""
        self._states.clear()

    def _stored_state(self, n: int) -> list[np.ndarray] | None:
        entry = self._states.get(n)
        # A state saved before the network changed (a GInfty grew it) belongs to another network.
        if entry is None or entry[0] != state_names(self):
            return None
        return entry[1]

    def _store_state(self, n: int, values: list[np.ndarray]) -> None:
        self._states[n] = (state_names(self), list(values))

    # -- introspection and files ----------------------------------------------------------
    def summary(self) -> str:
        w = self.wiring
        lines = [f"Network '{self.name}'" + (f", sequence length {w.T}" if w.T else "")]
        for l in w.order:
            mode = "every step" if w.seq[id(l)] else ("static" if w.T else "")
            lines.append(f"  {type(l).__name__:16s} {l.name:14s} {str(l.shape):16s} {l.activation if l.kind == 'layer' else '':10s} {mode}")
        for c in self.connections:
            n = sum(int(np.prod(s)) for s, _ in c.param_specs().values())
            lines.append(f"  {type(c).__name__:16s} {c.name:30s} delay {c.delay}  params {n}")
        total = sum(int(np.prod(s)) for _, o in self._owners() for s, _ in o.param_specs().values())
        lines.append(f"  total parameters: {total}")
        return "\n".join(lines)

    def depths(self) -> dict[str, float]:
        """The learned depth w of each GInfty meta-layer, by the meta-layer's name."""
        return {m.name: m.depth(self) for m in self.meta_layers}

    def to_dot(self, unrolled: bool = False, steps: int = 3) -> str:
        """The network in graphviz DOT: layers as boxes (name, shape, activation), connections as
        edges, a recurrent one dashed and labelled by its delay ('t-2').  `unrolled=True` draws
        the first `steps` time steps, one cluster per step (see flexcore.nn.drawing)."""
        from .drawing import network_to_dot

        return network_to_dot(self, unrolled=unrolled, steps=steps)

    def draw(self, path: str, unrolled: bool = False, steps: int = 3) -> str:
        """Render `to_dot(...)` with graphviz's `dot` to `path` (.svg, .png or .pdf)."""
        from .drawing import render_dot

        return render_dot(self.to_dot(unrolled=unrolled, steps=steps), path)

    def save(self, path: str) -> tuple[str, str]:
        """Write the architecture (`path`.json) and the weights (`path`.npz), each atomically."""
        from .io import save_network

        return save_network(self, path)

    @classmethod
    def load(cls, path: str) -> "Network":
        """Rebuild a network saved with `save` (no code from the file is ever executed)."""
        from .io import load_network

        return load_network(path)
