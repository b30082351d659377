"""The benchmark models in flexcore (flexcore.nn), and their compiled functions as participants.

A training step is one call of the compiled train function (`Network._fns['train']`, the
function `fit` calls once per minibatch) with fixed arrays: inputs, targets, learning rate and
dropout seed.  `fit`'s own loop (shuffling, slicing, the progress bar) is not timed.  Inference is
one call of the compiled predict function.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from flexcore import ActivationLayer, FeatureMapLayer, InputLayer, Network
from flexcore.nn import cells

from .harness import Participant

LR = 0.01
N_CLASSES = 10


@dataclass
class Built:
    """A compiled network with the handles the peers need to copy its weights."""

    net: Network
    names: dict[str, str]  # role in the model -> flexcore parameter name
    cell: Any = None


def participant(built: Built, xs: list[np.ndarray], ys: list[np.ndarray], name: str = "flexcore",
                t_build: float = 0.0, infer: bool = True) -> Participant:
    """Compile the train function for these exact arrays (timed, with `t_build`: the compile
    time up to the first step) and, unless `infer` is False, the predict function; wrap them."""
    net = built.net
    traced = net._fns["train"]
    # After the data come the learning rate (the one float) and the dropout seeds (integers).
    scalars = traced.dtypes[len(xs) + len(ys):]
    if sum(dt.kind == "f" for dt in scalars) != 1:
        raise RuntimeError(f"unexpected train-function arguments after the data: {[str(d) for d in scalars]}")
    extra = [np.asarray(LR if dt.kind == "f" else 0, dt) for dt in scalars]
    t0 = time.perf_counter()
    train = traced.compiled(*[x.shape for x in xs], *[y.shape for y in ys], *[() for _ in extra])
    compile_s = t_build + time.perf_counter() - t0
    predict = net._fns["predict"].compiled(*[x.shape for x in xs]) if infer else None
    args = [*xs, *ys, *extra]

    def step() -> float:
        return float(train(*args)[0])

    def forward() -> np.ndarray:
        return predict(*xs)[0]

    return Participant(
        name=name, train=step, infer=forward if predict is not None else None,
        train_memory=lambda: train.peak_bytes, infer_memory=lambda: predict.peak_bytes if predict else None,
        memory_method="Function.peak_bytes (compiled plan)", compile_s=compile_s, same_update=True,
    )


def _compile(net: Network, batch: int) -> float:
    t0 = time.perf_counter()
    net.compile(batch, optimizer="sgd")
    return time.perf_counter() - t0


def randomize_biases(net: Network, seed: int = 1) -> None:
    """flexcore initialises biases to zero; non-zero ones make the cross-check see them."""
    rng = np.random.default_rng(seed)
    net.set_weights({k: rng.uniform(-0.1, 0.1, v.shape) for k, v in net.weights().items() if k.endswith(".b")})


def recurrent_cell(kind: str, n_in: int, hidden: int, batch: int, steps: int) -> tuple[Built, float]:
    """x (T steps of n_in) -> LSTM / GRU / vanilla-RNN cell -> dense head on h at the last step
    -> softmax, negative log-likelihood."""
    net = Network(f"{kind}-{n_in}-{hidden}-T{steps}", seed=0)
    x = InputLayer((n_in,), sequence_length=steps, name="x")
    cell = getattr(cells, kind)(net, x, hidden, name=kind)
    y = ActivationLayer((N_CLASSES,), activation="softmax", output=True, loss="nll", name="y")
    head = net.connect_dense(cell.out, y)
    t = _compile(net, batch)
    return Built(net, {"head.W": f"{head.name}.W", "head.b": "y.b"}, cell=cell), t


def seed_topology(steps: int, batch: int) -> tuple[Built, float]:
    """The FlexNet seed's example: L1 (196) -> L2 (300) -> L3 (150) -> L5 (50), L5 at t-1 feeds
    L2; after the last step L5 -> L6 (200) -> L4 (10, softmax).  Sigmoid layers with biases,
    dense connections without."""
    net = Network(f"seed-T{steps}", seed=0)
    l1 = InputLayer((196,), sequence_length=steps, name="L1")
    l2 = ActivationLayer((300,), activation="sigmoid", name="L2")
    l3 = ActivationLayer((150,), activation="sigmoid", name="L3")
    l4 = ActivationLayer((10,), activation="softmax", output=True, loss="nll", name="L4")
    l5 = ActivationLayer((50,), activation="sigmoid", name="L5")
    l6 = ActivationLayer((200,), activation="sigmoid", name="L6")
    c = {
        "W12": net.connect_dense(l1, l2, return_sequence=True),
        "W23": net.connect_dense(l2, l3, return_sequence=True),
        "W52": net.connect_recurrent(l5, l2),
        "W35": net.connect_dense(l3, l5, return_sequence=True),
        "W56": net.connect_dense(l5, l6),
        "W64": net.connect_dense(l6, l4),
    }
    t = _compile(net, batch)
    randomize_biases(net)
    names = {k: f"{v.name}.W" for k, v in c.items()}
    names.update({f"b{i}": f"L{i}.b" for i in (2, 3, 4, 5, 6)})
    return Built(net, names), t


def mlp(batch: int, sizes: tuple[int, ...] = (784, 300, 150, 10)) -> tuple[Built, float]:
    """784-300-150-10, sigmoid hidden layers, softmax output, negative log-likelihood."""
    net = Network("mlp", seed=0)
    layers: list[Any] = [InputLayer((sizes[0],), name="x")]
    for i, n in enumerate(sizes[1:-1], 1):
        layers.append(ActivationLayer((n,), activation="sigmoid", name=f"h{i}"))
    layers.append(ActivationLayer((sizes[-1],), activation="softmax", output=True, loss="nll", name="y"))
    names = {}
    for i, (a, b) in enumerate(itertools.pairwise(layers)):
        names[f"W{i}"] = f"{net.connect_dense(a, b).name}.W"
        names[f"b{i}"] = f"{b.name}.b"
    t = _compile(net, batch)
    randomize_biases(net)
    return Built(net, names), t


def small_cnn(batch: int) -> tuple[Built, float]:
    """1x28x28 -> conv 3x3 32 + ReLU -> max-pool 2 -> conv 3x3 64 + ReLU -> max-pool 2 -> dense
    128 + ReLU -> dense 10, softmax, negative log-likelihood ('same' padding)."""
    net = Network("cnn", seed=0)
    x = InputLayer((1, 28, 28), name="x")
    c1 = FeatureMapLayer((32, 28, 28), activation="relu", name="c1")
    p1 = FeatureMapLayer((32, 14, 14), bias=False, name="p1")
    c2 = FeatureMapLayer((64, 14, 14), activation="relu", name="c2")
    p2 = FeatureMapLayer((64, 7, 7), bias=False, name="p2")
    f1 = ActivationLayer((128,), activation="relu", name="f1")
    y = ActivationLayer((10,), activation="softmax", output=True, loss="nll", name="y")
    names = {
        "conv1.W": f"{net.connect_conv(x, c1, kernel_size=3).name}.W", "conv1.b": "c1.b",
        "conv2.W": f"{net.connect_conv(p1, c2, kernel_size=3).name}.W", "conv2.b": "c2.b",
        "fc1.W": f"{net.connect_dense(p2, f1).name}.W", "fc1.b": "f1.b",
        "fc2.W": f"{net.connect_dense(f1, y).name}.W", "fc2.b": "y.b",
    }
    net.connect_pool(c1, p1, "max", 2)
    net.connect_pool(c2, p2, "max", 2)
    t = _compile(net, batch)
    randomize_biases(net)
    return Built(net, names), t


def conv_recurrent(steps: int, batch: int, channels: int) -> tuple[Built, float]:
    """Three 3x3 conv layers (tanh, `channels` maps of 28x28) on 1x28x28 frames; the 3rd layer at
    t-1 feeds the 1st at t through a 3x3 conv; a dense head reads the 3rd layer at the last step."""
    net = Network(f"convrec-T{steps}", seed=0)
    x = InputLayer((1, 28, 28), sequence_length=steps, name="x")
    c1 = FeatureMapLayer((channels, 28, 28), activation="tanh", name="c1")
    c2 = FeatureMapLayer((channels, 28, 28), activation="tanh", name="c2")
    c3 = FeatureMapLayer((channels, 28, 28), activation="tanh", name="c3")
    y = ActivationLayer((10,), activation="softmax", output=True, loss="nll", name="y")
    names = {
        "Wx1": f"{net.connect_conv(x, c1, kernel_size=3, return_sequence=True).name}.W",
        "W12": f"{net.connect_conv(c1, c2, kernel_size=3, return_sequence=True).name}.W",
        "W23": f"{net.connect_conv(c2, c3, kernel_size=3, return_sequence=True).name}.W",
        "W31": f"{net.connect_recurrent(c3, c1, kind='conv', kernel_size=3).name}.W",
        "head.W": f"{net.connect_dense(c3, y).name}.W",
        "b1": "c1.b", "b2": "c2.b", "b3": "c3.b", "head.b": "y.b",
    }
    t = _compile(net, batch)
    randomize_biases(net)
    return Built(net, names), t
