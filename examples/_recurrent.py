"""The paper's GRUBase, built from flexcore's primitives, for a GRU or an LSTM cell.

GRUBase reads MNIST-1D as 40 steps of one feature with a bidirectional GRU of 6 units and maps
the outputs of *all* steps of both directions, flattened (2 x 40 x 6 = 480 numbers), linearly to
the 10 classes.  Here:

- the backward direction is a second cell reading a second input layer that holds the signal
  reversed in time (so its step s is the signal's step 39 - s);
- the flattened read-out is the output layer itself run as a sequence: it reads each cell's
  output at t - k through its own weight matrix, one connection per delay k = 0..39, and the
  loss reads its last step, where sum_k W_k h[39 - k] is exactly the flattened linear map
  (its earlier steps are never used and the compiler drops them).

`steps` < 40 reads the signal as fewer, wider steps (40 // steps values each); the scripts use
it only for their --quick smoke run, where a 40-step unroll would take longest to compile.
"""

from __future__ import annotations

import _common  # noqa: F401  (puts the checkout on sys.path)
import numpy as np

from flexcore import ActivationLayer, InputLayer, Network
from flexcore.nn import cells

STEPS = 40


def build(kind: str, seed: int, hidden: int, bidirectional: bool = True, steps: int = STEPS,
          readout_init: str = "glorot") -> Network:
    make = {"gru": cells.gru, "lstm": cells.lstm}[kind]
    net = Network(f"mnist1d_{kind}", seed=seed)
    y = ActivationLayer(10, activation="softmax", output=True, loss="nll", name="digit")
    directions = ("fwd", "bwd") if bidirectional else ("fwd",)
    for d in directions:
        x = InputLayer(STEPS // steps, sequence_length=steps, name=f"signal_{d}")
        cell = make(net, x, hidden, name=f"{kind}_{d}")
        net.connect_dense(cell.out, y, return_sequence=True, name=f"{d}[t]->digit", init=readout_init)
        for k in range(1, steps):
            net.connect_recurrent(cell.out, y, delay=k, name=f"{d}[t-{k}]->digit", init=readout_init)
    return net


def prepare(bidirectional: bool = True, steps: int = STEPS):
    """(x (N, 40), labels) -> the inputs by layer name: the signal forwards and reversed."""
    def prep(split):
        x, labels = split
        seq = x.reshape(len(x), steps, STEPS // steps)
        inputs = {"signal_fwd": seq}
        if bidirectional:
            inputs["signal_bwd"] = np.ascontiguousarray(seq[:, ::-1])
        return inputs, labels
    return prep
