"""LSTM, GRU and vanilla RNN as recipes over the public primitives.

Each recipe only declares layers and connects them; nothing here is a special op.  A variation
is a line more: a peephole is `net.connect_recurrent(cell.c, cell.f)`, a gate that also reads
another layer two steps back is `net.connect_recurrent(other, cell.i, delay=2)`.

With the same weights (`copy_from_torch`), the recipes compute what torch.nn.LSTM, GRU and RNN
compute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ir.core import FlexcoreError
from .connections import Connection
from .layers import ActivationLayer, Layer, MemoryLayer
from .network import Network

__all__ = ["Cell", "lstm", "gru", "rnn", "copy_from_torch"]


@dataclass
class Cell:
    """The layers and connections a recipe made.  `out` is the layer to connect onwards (h)."""

    kind: str
    hidden: int
    out: Layer
    layers: dict[str, Layer] = field(default_factory=dict)
    conns: dict[str, Connection] = field(default_factory=dict)

    def __getattr__(self, item: str) -> Any:
        layers = self.__dict__.get("layers", {})
        if item in layers:
            return layers[item]
        raise AttributeError(item)


def _gate(name: str, hidden: int, act: str, norm: str | None, bias: bool = True) -> ActivationLayer:
    return ActivationLayer(hidden, activation=act, name=name, norm=norm, bias=bias)


def lstm(net: Network, source: Layer, hidden: int, name: str = "lstm", delay: int = 1, peephole: bool = False,
         layer_norm: bool = False) -> Cell:
    """An LSTM cell reading `source` at every step:
        i, f, o = sigmoid(W x + U h[t-delay] + b),  g = tanh(W x + U h[t-delay] + b)
        c = f * c[t-1] + i * g,  h = o * tanh(c)
    `peephole`: the gates also read c[t-1]; `layer_norm`: gate pre-activations and c are
    layer-normalised before their activation."""
    norm = "layer" if layer_norm else None
    cell = Cell("lstm", hidden, out=None)  # type: ignore[arg-type]
    for g, act in (("i", "sigmoid"), ("f", "sigmoid"), ("g", "tanh"), ("o", "sigmoid")):
        cell.layers[g] = _gate(f"{name}.{g}", hidden, act, norm)
    c = cell.layers["c"] = MemoryLayer(hidden, name=f"{name}.c")
    tc = cell.layers["tanh_c"] = ActivationLayer(hidden, activation="tanh", bias=False, norm=norm, name=f"{name}.tanh_c")
    h = cell.layers["h"] = ActivationLayer(hidden, combine="product", name=f"{name}.h")
    cell.out = h
    for g in "ifgo":
        cell.conns[f"x->{g}"] = net.connect_dense(source, cell.layers[g], return_sequence=True)
        cell.conns[f"h->{g}"] = net.connect_recurrent(h, cell.layers[g], delay=delay)
        if peephole and g != "g":
            cell.conns[f"c->{g}"] = net.connect_recurrent(c, cell.layers[g], delay=1)
    net.connect_gate(cell.layers["f"], c, "forget")
    net.connect_gate(cell.layers["i"], c, "input")
    net.connect_gate(cell.layers["g"], c, "candidate")
    net.connect_identity(c, tc, return_sequence=True)
    net.connect_identity(cell.layers["o"], h, return_sequence=True)
    net.connect_identity(tc, h, return_sequence=True)
    return cell


def gru(net: Network, source: Layer, hidden: int, name: str = "gru", delay: int = 1) -> Cell:
    """A GRU cell (torch's formulation):
        r, z = sigmoid(W x + U h[t-1] + b),  n = tanh(W_n x + b_n + r * (U_n h[t-1] + b_hn))
        h = (1 - z) * n + z * h[t-1]  =  n + z * (h[t-1] - n)"""
    cell = Cell("gru", hidden, out=None)  # type: ignore[arg-type]
    L = cell.layers
    L["r"] = _gate(f"{name}.r", hidden, "sigmoid", None)
    L["z"] = _gate(f"{name}.z", hidden, "sigmoid", None)
    L["hn"] = _gate(f"{name}.hn", hidden, "identity", None)  # U_n h[t-1] + b_hn
    L["rhn"] = ActivationLayer(hidden, combine="product", name=f"{name}.rhn")
    L["n"] = _gate(f"{name}.n", hidden, "tanh", None)
    L["d"] = ActivationLayer(hidden, bias=False, name=f"{name}.d")  # h[t-1] - n
    L["zd"] = ActivationLayer(hidden, combine="product", name=f"{name}.zd")
    h = L["h"] = ActivationLayer(hidden, bias=False, name=f"{name}.h")
    cell.out = h
    for g in ("r", "z", "n"):
        cell.conns[f"x->{g}"] = net.connect_dense(source, L[g], return_sequence=True)
    for g in ("r", "z", "hn"):
        cell.conns[f"h->{g}"] = net.connect_recurrent(h, L[g], delay=delay)
    net.connect_identity(L["r"], L["rhn"], return_sequence=True)
    net.connect_identity(L["hn"], L["rhn"], return_sequence=True)
    net.connect_identity(L["rhn"], L["n"], return_sequence=True)
    net.connect_recurrent(h, L["d"], delay=delay, kind="identity")
    net.connect_identity(L["n"], L["d"], scale=-1.0, return_sequence=True)
    net.connect_identity(L["z"], L["zd"], return_sequence=True)
    net.connect_identity(L["d"], L["zd"], return_sequence=True)
    net.connect_identity(L["n"], h, return_sequence=True)
    net.connect_identity(L["zd"], h, return_sequence=True)
    return cell


def rnn(net: Network, source: Layer, hidden: int, name: str = "rnn", activation: str = "tanh", delay: int = 1) -> Cell:
    """A vanilla RNN cell: h = act(W x + U h[t-delay] + b)."""
    h = ActivationLayer(hidden, activation=activation, name=f"{name}.h")
    cell = Cell("rnn", hidden, out=h, layers={"h": h})
    cell.conns["x->h"] = net.connect_dense(source, h, return_sequence=True)
    cell.conns["h->h"] = net.connect_recurrent(h, h, delay=delay)
    return cell


_GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n"), "rnn": ("h",)}


def copy_from_torch(net: Network, cell: Cell, module: Any, layer: int = 0) -> None:
    """Copy the weights of a torch.nn.LSTM / GRU / RNN (one layer, unidirectional) into `cell`,
    so both compute the same numbers.  Call after `net.compile` (the parameters then exist)."""
    if net._compiled is None:
        raise FlexcoreError("copy_from_torch: compile the network first, so its parameters exist")
    kind = type(module).__name__.lower()
    if kind != cell.kind:
        raise FlexcoreError(f"copy_from_torch: the cell is a {cell.kind}, the torch module a {type(module).__name__}")
    if getattr(module, "bidirectional", False) or getattr(module, "proj_size", 0):
        raise FlexcoreError("copy_from_torch: bidirectional or projected modules are not supported")

    def arr(nm: str) -> np.ndarray:
        t = getattr(module, f"{nm}_l{layer}", None)
        if t is None:
            raise FlexcoreError(f"copy_from_torch: the module has no parameter {nm}_l{layer}")
        return t.detach().cpu().numpy().astype(np.float64)

    H = cell.hidden
    if module.hidden_size != H:
        raise FlexcoreError(f"copy_from_torch: hidden size {module.hidden_size} in torch, {H} in the cell")
    w_ih, w_hh = arr("weight_ih"), arr("weight_hh")
    has_bias = getattr(module, "bias", True)
    b_ih = arr("bias_ih") if has_bias else np.zeros(w_ih.shape[0])
    b_hh = arr("bias_hh") if has_bias else np.zeros(w_hh.shape[0])
    weights: dict[str, np.ndarray] = {}
    for k, g in enumerate(_GATES[cell.kind]):
        rows = slice(k * H, (k + 1) * H)
        weights[f"{cell.conns[f'x->{g}'].name}.W"] = w_ih[rows].T
        if cell.kind == "gru" and g == "n":
            weights[f"{cell.conns['h->hn'].name}.W"] = w_hh[rows].T
            weights[f"{cell.layers['n'].name}.b"] = b_ih[rows]
            weights[f"{cell.layers['hn'].name}.b"] = b_hh[rows]
        else:
            weights[f"{cell.conns[f'h->{g}'].name}.W"] = w_hh[rows].T
            weights[f"{cell.layers[g].name}.b"] = b_ih[rows] + b_hh[rows]
    net.set_weights(weights)
