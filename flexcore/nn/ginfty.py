"""GInfty: a meta-layer that learns how deep it is ("Going Deeper: Infinite Deep Neural
Networks").

The meta-layer holds sub-layers ("blocks") f_1, f_2, ..., each with its own weights, and one
trainable scalar depth w.  Block i is weighted by

    delta_i = relu(1 - exp(i - w))          (0 for i >= w, rising towards 1 as w passes i)

and the blocks combine residually, x_0 = h(W_in s + b) for the source s, then

    x_i = h(x_{i-1} + delta_i * f_i(x_{i-1})),   f_i(x) = a(W_i x + b_i),   i = 1..n

with h the meta-layer's activation and a the blocks' one (both relu by default).  Only blocks
with i < w do anything, so the network decides its depth by learning w; an L2 penalty l2 * w^2
on w makes depth cost something.

It is a recipe over the public primitives, like the cells in cells.py: f_i is an
ActivationLayer fed by a Dense connection, x_i an ActivationLayer fed by an Identity skip and a
ScalarGate with gate='ginfty' and index=i; every gate reads the one scalar w that the first gate
owns (parameter '<name>.gate1.s').

Growth rule.  Blocks 1..n are built, n = ceil(w) (at least one): the blocks i < w, which are
active, and block n, which is not (delta_n = 0 while w <= n) but stands ready, so that when w
passes n during an epoch the block is already there to fade in and to receive gradient.  While
w <= n + 1 the built network computes exactly what the infinite one does.  After every epoch (and
when training begins) the meta-layer checks w: when w > n it grows to ceil(w) blocks.  It never
shrinks: a block that w falls below keeps its weights with delta = 0 and returns if w rises.

What growth keeps.  The new blocks are appended between x_n and the meta-layer's output layer
'<name>.out' (only the weightless identity x_n -> out is rewired), so every parameter keeps its
name and its Shared variable, and the optimizer finds its state (momentum, Adam's moments and
step counts) under the same parameters; the new blocks get fresh parameters and fresh optimizer
state.  A new block starts with delta ~ 0 and so as x_i = h(x_{i-1}), the identity for h = relu
(x_{i-1} >= 0 already): predictions do not change when a block is added.  What is rebuilt is only
the wiring analysis and the traced train / eval / predict / gradients functions, which are traced
again (once per input shape) on their next call.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from ..ir.core import FlexcoreError
from .connections import Connection, Dense, Identity, ScalarGate
from .layers import ActivationLayer, Layer

__all__ = ["GInfty", "delta", "ginfty"]


def delta(i: int | float, w: float) -> float:
    """delta_i = relu(1 - exp(i - w)), the weight of block i at depth w (plain numbers)."""
    return max(0.0, 1.0 - math.exp(i - w))


def _blocks_for(w: float) -> int:
    return max(1, math.ceil(w))


class GInfty:
    """A GInfty meta-layer inside a Network (built by `ginfty(...)`).  Connect onwards from
    `out`; `depth(net)` is the current w, `blocks` the number of blocks built."""

    def __init__(self, name: str, source: Layer, width: int, depth: float, l2: float, activation: str,
                 block_activation: str, project: bool, return_sequence: bool, max_blocks: int):
        self.name, self.source, self.width = name, source, int(width)
        self.init_depth, self.l2 = float(depth), float(l2)
        self.activation, self.block_activation = activation, block_activation
        self.project, self.return_sequence = bool(project), bool(return_sequence)
        self.max_blocks = int(max_blocks)
        self.blocks = 0
        self.layers: dict[str, Layer] = {}
        self.conns: dict[str, Connection] = {}
        self._warned = False

    # -- the recipe ---------------------------------------------------------------------
    @property
    def out(self) -> Layer:
        """The layer to connect onwards (it reads the last block)."""
        return self.layers["out"]

    @property
    def depth_param(self) -> str:
        """The name of the depth parameter w in `net.params` / `net.weights()`."""
        return f"{self.name}.gate1.s"

    def _x(self, i: int) -> Layer:
        if i == 0:
            return self.layers["in"] if self.project else self.source
        return self.layers[f"x{i}"]

    def _build(self, net, blocks: int) -> None:
        n = self.name
        if self.project:
            self.layers["in"] = ActivationLayer(self.width, activation=self.activation, name=f"{n}.in")
            self.conns["proj"] = net.connect(Dense(self.source, self.layers["in"], name=f"{n}.proj",
                                                   return_sequence=self.return_sequence))
        self.layers["out"] = ActivationLayer(self.width, activation="identity", bias=False, name=f"{n}.out")
        self._add_blocks(net, blocks)

    def _add_blocks(self, net, upto: int) -> None:
        """Blocks blocks+1..upto, then the exit x_upto -> out (replacing the old exit)."""
        n = self.name
        old_exit = self.conns.pop("exit", None)
        if old_exit is not None:
            # The exit is a weightless identity: removing and re-adding it loses nothing.
            net.connections = [c for c in net.connections if c is not old_exit]
            net._invalidate()
        for i in range(self.blocks + 1, upto + 1):
            # The entry block reads the source as the user asked; inside, every layer follows
            # the source's time mode (each step, when it is a sequence).
            seq = self.return_sequence if (i == 1 and not self.project) else True
            prev = self._x(i - 1)
            f = self.layers[f"f{i}"] = ActivationLayer(self.width, activation=self.block_activation, name=f"{n}.f{i}")
            x = self.layers[f"x{i}"] = ActivationLayer(self.width, activation=self.activation, bias=False,
                                                       name=f"{n}.x{i}")
            self.conns[f"dense{i}"] = net.connect(Dense(prev, f, name=f"{n}.dense{i}", return_sequence=seq))
            self.conns[f"skip{i}"] = net.connect(Identity(prev, x, name=f"{n}.skip{i}", return_sequence=seq))
            owner = {"init": self.init_depth, "l2": self.l2} if i == 1 else {"share": f"{n}.gate1"}
            self.conns[f"gate{i}"] = net.connect(ScalarGate(f, x, gate="ginfty", index=i, name=f"{n}.gate{i}",
                                                            return_sequence=True, **owner))
        self.blocks = max(self.blocks, upto)
        self.conns["exit"] = net.connect(Identity(self._x(self.blocks), self.out, name=f"{n}.exit",
                                                  return_sequence=True))

    # -- depth and growth ---------------------------------------------------------------
    def depth(self, net) -> float:
        """The current depth w (its initial value before the network is compiled)."""
        p = net.params.get(self.depth_param)
        return self.init_depth if p is None else float(p.get_value())

    def deltas(self, net) -> list[float]:
        """delta_i of the built blocks at the current depth."""
        w = self.depth(net)
        return [delta(i, w) for i in range(1, self.blocks + 1)]

    def grow(self, net) -> int:
        """Add blocks when w > blocks (up to ceil(w), at most max_blocks); returns how many were
        added.  Parameters and optimizer state of the existing blocks are kept."""
        w = self.depth(net)
        if not math.isfinite(w):
            raise FlexcoreError(f"GInfty '{self.name}': the depth w is {w}; lower the learning rate")
        want = _blocks_for(w)
        if want > self.max_blocks:
            if not self._warned:
                warnings.warn(f"GInfty '{self.name}': the depth w = {w:.3g} asks for {want} blocks, more than "
                              f"max_blocks={self.max_blocks}; it stays at {self.max_blocks}", stacklevel=2)
                self._warned = True
            want = self.max_blocks
        if w <= self.blocks or want <= self.blocks:
            return 0
        before = self.blocks
        self._add_blocks(net, want)
        return self.blocks - before

    # the callback protocol (Network.fit calls these for every meta-layer)
    def on_train_begin(self, net, history) -> None:
        self.grow(net)

    def on_epoch_end(self, net, epoch: int, metrics: dict[str, float]) -> bool:
        self.grow(net)
        return False

    def on_train_end(self, net, history) -> None:
        pass

    # -- files ----------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"class": "GInfty", "name": self.name, "source": self.source.name, "width": self.width,
                "depth": self.init_depth, "l2": self.l2, "activation": self.activation,
                "block_activation": self.block_activation, "project": self.project,
                "return_sequence": self.return_sequence, "max_blocks": self.max_blocks, "blocks": self.blocks}

    @classmethod
    def attach(cls, net, cfg: dict[str, Any]) -> GInfty:
        """The meta-layer of a loaded network, over the layers and connections it already has."""
        m = cls(cfg["name"], net.layer(cfg["source"]), cfg["width"], cfg["depth"], cfg["l2"], cfg["activation"],
                cfg["block_activation"], cfg["project"], cfg["return_sequence"], cfg["max_blocks"])
        m.blocks = int(cfg["blocks"])
        by_name = {c.name: c for c in net.connections}
        names = ["out"] + (["in"] if m.project else []) + [f"{k}{i}" for i in range(1, m.blocks + 1) for k in "fx"]
        for key in names:
            m.layers[key] = net.layer(f"{m.name}.{key}")
        keys = ["exit"] + (["proj"] if m.project else [])
        keys += [f"{k}{i}" for i in range(1, m.blocks + 1) for k in ("dense", "skip", "gate")]
        for key in keys:
            c = by_name.get(f"{m.name}.{key}")
            if c is None:
                raise FlexcoreError(f"GInfty '{m.name}': the network has no connection '{m.name}.{key}'")
            m.conns[key] = c
        net.meta_layers.append(m)
        return m

    def __repr__(self) -> str:
        return f"GInfty('{self.name}', width={self.width}, blocks={self.blocks})"


def ginfty(net, source: Layer, width: int, name: str = "ginfty", depth: float = 2.0, l2: float = 1e-3,
           activation: str = "relu", block_activation: str = "relu", project: bool = True,
           return_sequence: bool = False, max_blocks: int = 64) -> GInfty:
    """Add a GInfty meta-layer reading `source`; connect onwards from the result's `out`.

    width: the size of every block; depth: the initial w (> 1, or no block is active and w
    gets no gradient: delta_1 = 0 and relu's gradient at 0 is 0); l2: the coefficient of l2 * w^2
    in the loss; activation: h, applied after each residual sum (and by the input projection);
    block_activation: the activation inside each f_i; project: read the source through a dense
    projection to `width` (False: the source itself is x_0 and must have `width` units);
    return_sequence: as for connect_dense, for the connection that reads the source;
    max_blocks: growth stops there (with a warning)."""
    if any(m.name == name for m in net.meta_layers):
        raise FlexcoreError(f"network '{net.name}' already has a meta-layer named '{name}'")
    if not isinstance(width, int) or width < 1:
        raise FlexcoreError(f"GInfty '{name}': width must be a positive int, got {width!r}")
    if not (math.isfinite(depth) and depth > 1.0):
        raise FlexcoreError(f"GInfty '{name}': the initial depth must be > 1 (block 1 is active only for w > 1), "
                            f"got {depth}")
    if not (math.isfinite(l2) and l2 >= 0.0):
        raise FlexcoreError(f"GInfty '{name}': l2 must be a finite number >= 0, got {l2}")
    if not project and source.shape != (width,):
        raise FlexcoreError(f"GInfty '{name}': without a projection the source must have shape ({width},), "
                            f"'{source.name}' has {source.shape}")
    if max_blocks < 1:
        raise FlexcoreError(f"GInfty '{name}': max_blocks must be >= 1, got {max_blocks}")
    m = GInfty(name, source, width, depth, l2, activation, block_activation, project, return_sequence, max_blocks)
    m._build(net, min(_blocks_for(depth), m.max_blocks))
    net.meta_layers.append(m)
    return m
