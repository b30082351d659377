"""The Network: layers and the connections between them, unrolled, differentiated, compiled
and trained."""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import numpy as np

from .. import ir, optim
from ..autodiff import grad
from ..function import TracedFunction
from ..ir.core import FlexcoreError, Shared, ShapeError, Var
from .connections import Conv, Connection, Dense, Identity, Pool
from .graph import Unroller, Wiring, analyze
from .history import History
from .layers import InputLayer, Layer, MemoryLayer

__all__ = ["Network"]

_LABEL_LOSSES = ("nll", "cross_entropy")


def _init_param(rng: np.random.Generator, shape: tuple[int, ...], how: str, dtype) -> np.ndarray:
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
                l2: float = 0.0, clip_norm: float | None = None, dtype: Any = "float32", **kw) -> "Network":
        """Unroll the network into the IR, differentiate it and compile it for `batch_size`
        (other batch sizes, like a smaller last batch, compile once more on first use)."""
        if kw:
            alias = {"mini_batch_size": "batch_size"}
            bad = [k for k in kw if k not in alias]
            if bad:
                raise FlexcoreError(f"compile: unknown argument(s) {', '.join(bad)}; valid: batch_size, optimizer, backend, l1, l2, clip_norm, dtype")
            batch_size = kw.get("mini_batch_size", batch_size)
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise FlexcoreError(f"compile: batch_size must be a positive int, got {batch_size!r}")
        self.wiring  # noqa: B018  (validates the wiring before anything is built)
        dtype = np.dtype(dtype)
        self._ensure_params(dtype)
        opt = optim.get_optimizer(optimizer)
        self._compiled = {
            "batch_size": int(batch_size), "optimizer": opt, "backend": backend, "l1": float(l1), "l2": float(l2),
            "clip_norm": clip_norm, "dtype": dtype,
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
        cfg = self._compiled
        dt = cfg["dtype"]
        w = self.wiring
        x_dt = [dt] * len(w.inputs)
        y_dt = [np.int64 if l.loss in _LABEL_LOSSES else dt for l in w.outputs]
        self._fns = {
            "train": TracedFunction(self._build_train, x_dt + y_dt + [dt, np.int64], cfg["backend"], f"{self.name}.train"),
            "eval": TracedFunction(self._build_eval, x_dt + y_dt, cfg["backend"], f"{self.name}.eval"),
            "predict": TracedFunction(self._build_predict, x_dt, cfg["backend"], f"{self.name}.predict"),
            "gradients": TracedFunction(self._build_gradients, x_dt + y_dt, cfg["backend"],
                                        f"{self.name}.gradients"),
        }

    def _unroll(self, xs: Sequence[Var], training: bool, seed: Var | None):
        w = self.wiring
        batch = xs[0].shape[0]
        x = {id(l): v for l, v in zip(w.inputs, xs)}
        un = Unroller(w, self.params, batch, x, self._compiled["dtype"], training, seed)
        un.run()
        return un

    def _predictions(self, un: Unroller) -> list[tuple[Layer, list[Var], list[Var]]]:
        res = []
        for l in self.wiring.outputs:
            if self.wiring.seq[id(l)]:
                steps = range(self.wiring.T) if l.loss_steps == "all" else [self.wiring.T - 1]
                pairs = [un.both(l, t) for t in steps]
            else:
                pairs = [un.both(l, None)]
            res.append((l, [p for p, _ in pairs], [o for _, o in pairs]))
        return res

    @staticmethod
    def _stack(vs: list[Var]) -> Var:
        if len(vs) == 1:
            return vs[0]
        return ir.api.concat([ir.api.reshape(v, (v.shape[0], 1) + v.shape[1:]) for v in vs], axis=1)

    def _loss_of(self, layer: Layer, pre: Var, out: Var, y: Var) -> Var:
        kind = layer.loss
        if kind in _LABEL_LOSSES:
            if layer.activation == "softmax":
                return ir.api.nll_loss(ir.api.log_softmax(pre, -1), y)
            if layer.activation == "log_softmax":
                return ir.api.nll_loss(out, y)
            if kind == "cross_entropy":
                return ir.api.softmax_cross_entropy(out, y)
            return ir.api.nll_loss(ir.api.log(out), y)
        if kind == "mse":
            return ir.api.mse_loss(out, y)
        if kind == "bce":
            if layer.activation != "sigmoid":
                raise FlexcoreError(
                    f"layer '{layer.name}': binary_cross_entropy needs a sigmoid activation (or use 'bce_with_logits')"
                )
            return ir.api.bce_with_logits(pre, y)
        return ir.api.bce_with_logits(out, y)

    def _loss(self, preds, ys: Sequence[Var]) -> Var:
        total = None
        for (layer, pres, outs), y in zip(preds, ys):
            terms = []
            for i, (p, o) in enumerate(zip(pres, outs)):
                yt = y[:, i] if len(pres) > 1 else y
                terms.append(self._loss_of(layer, p, o, yt))
            term = terms[0]
            for t in terms[1:]:
                term = term + t
            term = term * (layer.loss_weight / len(terms))
            total = term if total is None else total + term
        return total

    def _trainable(self) -> list[Shared]:
        return list(self.params.values())

    def _regularised(self, loss: Var) -> Var:
        cfg = self._compiled
        mats = [p for k, p in self.params.items() if k.endswith(".W")]
        if cfg["l1"]:
            loss = loss + optim.l1_penalty(mats) * cfg["l1"]
        if cfg["l2"]:
            loss = loss + optim.l2_penalty(mats) * cfg["l2"]
        return loss

    def _split_xy(self, args):
        n_in = len(self.wiring.inputs)
        return list(args[:n_in]), list(args[n_in:])

    def _build_train(self, *args):
        cfg = self._compiled
        xs, rest = self._split_xy(args)
        ys, (lr, seed) = rest[:-2], rest[-2:]
        self._check_targets(ys)
        un = self._unroll(xs, True, seed)
        preds = self._predictions(un)
        data_loss = self._loss(preds, ys)
        loss = self._regularised(data_loss)
        params = self._trainable()
        grads = grad(loss, params, disconnected="zero")
        if cfg["clip_norm"]:
            grads = optim.clip_by_global_norm(grads, cfg["clip_norm"])
        updates = cfg["optimizer"].updates(params, grads, lr)
        return [data_loss] + [self._stack(o) for _, _, o in preds], updates

    def _build_gradients(self, *args):
        xs, ys = self._split_xy(args)
        self._check_targets(ys)
        preds = self._predictions(self._unroll(xs, False, None))
        loss = self._regularised(self._loss(preds, ys))
        return [loss, *grad(loss, self._trainable(), disconnected="zero")]

    def _build_eval(self, *args):
        xs, ys = self._split_xy(args)
        self._check_targets(ys)
        preds = self._predictions(self._unroll(xs, False, None))
        return [self._loss(preds, ys)] + [self._stack(o) for _, _, o in preds]

    def _build_predict(self, *xs):
        preds = self._predictions(self._unroll(list(xs), False, None))
        return [self._stack(o) for _, _, o in preds]

    def _check_targets(self, ys: Sequence[Var]) -> None:
        for layer, y in zip(self.wiring.outputs, ys):
            want = self._target_shape(layer, y.shape[0])
            if y.shape != want:
                raise ShapeError(f"targets for output layer '{layer.name}' need shape {want} (batch first), got {y.shape}")

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

    def _data(self, data, what: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise FlexcoreError(f"{what} must be an (inputs, targets) pair")
        xs = self._inputs(data[0])
        ys = self._as_list(data[1], self.wiring.outputs, f"{what} targets")
        n = xs[0].shape[0]
        for layer, y in zip(self.wiring.outputs, ys):
            if y.shape[0] != n:
                raise ShapeError(f"{what}: {n} inputs but {y.shape[0]} targets for '{layer.name}'")
            want = self._target_shape(layer, n)
            if y.shape != want:
                raise ShapeError(f"{what}: targets for output layer '{layer.name}' need shape {want}, got {y.shape}")
            if layer.loss in _LABEL_LOSSES:
                if y.dtype.kind not in "iu":
                    raise FlexcoreError(f"{what}: targets for '{layer.name}' must be integer class labels, got {y.dtype}")
                k = layer.shape[-1]
                if y.size and (y.min() < 0 or y.max() >= k):
                    raise FlexcoreError(f"{what}: labels for '{layer.name}' must be in [0, {k}), got [{y.min()}, {y.max()}]")
        return xs, ys

    def _batches(self, n: int, batch: int, order: np.ndarray | None = None):
        idx = np.arange(n) if order is None else order
        for s in range(0, n, batch):
            yield idx[s:s + batch]

    # -- training and inference -----------------------------------------------------------
    def fit(self, training_data, epochs: int = 1, learning_rate: float | Callable[[int], float] = 0.1,
            validation_data=None, test_data=None, *, shuffle: bool = True, verbose: bool = True,
            callbacks: Sequence[Any] = ()) -> History:
        """Train with minibatches of the compiled batch size.  `learning_rate` is a number or a
        function of the epoch.  Returns a History of per-epoch metrics."""
        cfg = self._require_compiled()
        xs, ys = self._data(training_data, "training_data")
        val = self._data(validation_data, "validation_data") if validation_data is not None else None
        test = self._data(test_data, "test_data") if test_data is not None else None
        n = xs[0].shape[0]
        bs = cfg["batch_size"]
        history = History()
        from tqdm.auto import tqdm

        for cb in callbacks:
            cb.on_train_begin(self, history)
        for epoch in range(int(epochs)):
            lr = learning_rate(epoch) if callable(learning_rate) else learning_rate
            # Seeded by the steps taken so far: a later fit call shuffles anew, and fit(2 epochs)
            # visits the examples as fit(1 epoch) twice does.
            order = np.random.default_rng([self.seed, 7919, self._step]).permutation(n) if shuffle else None
            t0 = time.perf_counter()
            tot_loss, tot_correct, seen = 0.0, 0.0, 0
            bar = tqdm(total=n, desc=f"epoch {epoch + 1}/{epochs}", unit="ex", disable=not verbose, leave=True)
            for idx in self._batches(n, bs, order):
                self._step += 1
                args = [x[idx] for x in xs] + [y[idx] for y in ys]
                loss, *preds = self._fns["train"](*args, np.asarray(lr, cfg["dtype"]), np.int64(self.seed * 1_000_003 + self._step))
                loss = float(loss)
                if not math.isfinite(loss):
                    bar.close()
                    raise FlexcoreError(f"training diverged at epoch {epoch + 1}: the loss is {loss}; lower the learning rate")
                m = len(idx)
                tot_loss += loss * m
                tot_correct += self._correct(preds, [y[idx] for y in ys])
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
                    metrics.update({prefix + k: v for k, v in self._evaluate(*d).items()})
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

    def _correct(self, preds: list[np.ndarray], ys: list[np.ndarray]) -> float:
        for layer, p, y in zip(self.wiring.outputs, preds, ys):
            if layer.loss in _LABEL_LOSSES:
                hit = np.argmax(p, axis=-1) == y
                return float(hit.reshape(len(y), -1).mean(axis=1).sum())
        return 0.0

    def _evaluate(self, xs, ys) -> dict[str, float]:
        cfg = self._require_compiled()
        n = xs[0].shape[0]
        tot, correct = 0.0, 0.0
        for idx in self._batches(n, cfg["batch_size"]):
            loss, *preds = self._fns["eval"](*[x[idx] for x in xs], *[y[idx] for y in ys])
            tot += float(loss) * len(idx)
            correct += self._correct(preds, [y[idx] for y in ys])
        out = {"loss": tot / n}
        if self._classifies():
            out["accuracy"] = correct / n
        return out

    def evaluate(self, data) -> dict[str, float]:
        """Mean loss (and accuracy for classification outputs) over `data` = (inputs, targets)."""
        return self._evaluate(*self._data(data, "data"))

    def gradients(self, data) -> dict[str, np.ndarray]:
        """Gradients of the objective `fit` minimises (the weighted output losses plus the l1/l2
        penalties), with respect to every parameter, by name as in `weights()`; for `data` =
        (inputs, targets), averaged over all examples.  Dropout is off and nothing is clipped or
        updated: what one plain SGD step would follow."""
        cfg = self._require_compiled()
        xs, ys = self._data(data, "data")
        n = xs[0].shape[0]
        total: list[np.ndarray] | None = None
        for idx in self._batches(n, cfg["batch_size"]):
            # Each loss is a mean over its batch, so batch gradients weigh by batch size.
            _, *gs = self._fns["gradients"](*[x[idx] for x in xs], *[y[idx] for y in ys])
            part = [g * (len(idx) / n) for g in gs]
            total = part if total is None else [a + b for a, b in zip(total, part, strict=True)]
        return dict(zip(self.params, total, strict=True))

    def predict(self, inputs) -> np.ndarray | list[np.ndarray]:
        """Outputs of the output layers (one array per output layer; a single array for one)."""
        cfg = self._require_compiled()
        xs = self._inputs(inputs)
        n = xs[0].shape[0]
        chunks: list[list[np.ndarray]] = []
        for idx in self._batches(n, cfg["batch_size"]):
            chunks.append(self._fns["predict"](*[x[idx] for x in xs]))
        outs = [np.concatenate([c[i] for c in chunks]) for i in range(len(self.wiring.outputs))]
        return outs[0] if len(outs) == 1 else outs

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

    def save(self, path: str) -> tuple[str, str]:
        """Write the architecture (`path`.json) and the weights (`path`.npz), each atomically."""
        from .io import save_network

        return save_network(self, path)

    @classmethod
    def load(cls, path: str) -> "Network":
        """Rebuild a network saved with `save` (no code from the file is ever executed)."""
        from .io import load_network

        return load_network(path)
