"""Connections own the weights.  Each maps its source's value (at t - delay) to a contribution
of the target's shape.  delay == 0 is a feed-forward connection within a step; delay >= 1 is
a recurrent connection, allowed from any layer to any layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import ir
from ..ir.api import conv_padding
from ..ir.core import FlexcoreError, ShapeError, Var
from .layers import Layer, MemoryLayer

__all__ = ["Connection", "Dense", "Conv", "Pool", "Identity", "CONNECTION_KINDS"]


class Connection:
    kind = "connection"

    def __init__(self, source: Layer, target: Layer, delay: int = 0, return_sequence: bool = False,
                 name: str | None = None, role: str | None = None, dropout: float = 0.0):
        for what, layer in (("source", source), ("target", target)):
            if not isinstance(layer, Layer):
                raise FlexcoreError(f"connection {what} must be a Layer, got {type(layer).__name__}")
        if not isinstance(delay, (int, np.integer)) or delay < 0:
            raise FlexcoreError(f"connection {source.name} -> {target.name}: delay must be an int >= 0, got {delay!r}")
        if target.kind == "input":
            raise FlexcoreError(f"connection {source.name} -> {target.name}: an InputLayer cannot receive connections")
        if not 0.0 <= float(dropout) < 1.0:
            raise FlexcoreError(f"connection {source.name} -> {target.name}: dropout must be in [0, 1), got {dropout}")
        self.source, self.target = source, target
        self.delay = int(delay)
        self.return_sequence = bool(return_sequence)
        self.dropout = float(dropout)
        if isinstance(target, MemoryLayer):
            if role not in MemoryLayer.ROLES:
                raise FlexcoreError(
                    f"connection {source.name} -> memory layer {target.name} needs role= one of {', '.join(MemoryLayer.ROLES)}"
                )
        elif role is not None:
            raise FlexcoreError(f"connection {source.name} -> {target.name}: role= is only for memory layers")
        self.role = role
        suffix = f"@t-{self.delay}" if self.delay else ""
        self.name = name or f"{source.name}->{target.name}{suffix}"
        self.check_shapes()

    @property
    def recurrent(self) -> bool:
        return self.delay > 0

    def _where(self) -> str:
        return f"connection '{self.name}' ({self.source.name} {self.source.shape} -> {self.target.name} {self.target.shape})"

    def check_shapes(self) -> None:
        """Raise ShapeError at connect time when the source cannot feed the target."""

    def param_specs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {}

    def apply(self, x: Var, params: dict[str, Var]) -> Var:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "source": self.source.name,
            "target": self.target.name,
            "delay": self.delay,
            "return_sequence": self.return_sequence,
            "name": self.name,
            "role": self.role,
            "dropout": self.dropout,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self.name}')"


class Dense(Connection):
    """A full weight matrix from the flattened source to the flattened target."""

    kind = "dense"

    def __init__(self, source, target, bias: bool = False, init: str = "glorot", **kw):
        self.bias = bool(bias)
        self.init = init
        super().__init__(source, target, **kw)

    def param_specs(self):
        n_in, n_out = int(np.prod(self.source.shape)), int(np.prod(self.target.shape))
        specs = {"W": ((n_in, n_out), self.init)}
        if self.bias:
            specs["b"] = ((n_out,), "zeros")
        return specs

    def apply(self, x, params):
        b = x.shape[0]
        y = ir.api.reshape(x, (b, -1)) @ params["W"]
        if self.bias:
            y = y + params["b"]
        return y if len(self.target.shape) == 1 else ir.api.reshape(y, (b,) + self.target.shape)

    def config(self):
        return {**super().config(), "bias": self.bias, "init": self.init}


class Conv(Connection):
    """A convolution between feature maps (1-d: (C, L); 2-d: (C, H, W)).  The default padding
    'same' keeps the spatial size at stride 1; the target's shape must equal the output's."""

    kind = "conv"

    def __init__(self, source, target, kernel_size=3, stride=1, padding="same", dilation=1, groups: int = 1,
                 bias: bool = False, **kw):
        nd = len(source.shape) - 1
        if nd not in (1, 2):
            raise ShapeError(f"conv connection {source.name} -> {target.name}: the source must be a feature map "
                             f"(C, L) or (C, H, W), got shape {source.shape}")
        self.nd = nd
        self.kernel = ir.api._tuple(kernel_size, nd, "kernel_size")
        self.stride = ir.api._tuple(stride, nd, "stride")
        self.dilation = ir.api._tuple(dilation, nd, "dilation")
        self.padding = padding
        self.groups = int(groups)
        self.bias = bool(bias)
        super().__init__(source, target, **kw)

    def out_shape(self) -> tuple[int, ...]:
        c_out = self.target.shape[0]
        pads = conv_padding(self.padding, self.source.shape[1:], self.kernel, self.stride, self.dilation)
        sp = []
        for i, k, s, d, (lo, hi) in zip(self.source.shape[1:], self.kernel, self.stride, self.dilation, pads):
            sp.append((i + lo + hi - d * (k - 1) - 1) // s + 1)
        return (c_out,) + tuple(sp)

    def check_shapes(self):
        if len(self.target.shape) != len(self.source.shape):
            raise ShapeError(f"{self._where()}: a {self.nd}-d conv needs a target of rank {self.nd + 1}")
        c_in, c_out = self.source.shape[0], self.target.shape[0]
        if c_in % self.groups or c_out % self.groups:
            raise ShapeError(f"{self._where()}: groups={self.groups} must divide {c_in} input and {c_out} output channels")
        out = self.out_shape()
        if out != self.target.shape:
            raise ShapeError(f"{self._where()}: the convolution gives shape {out}, the target layer has {self.target.shape}")

    def param_specs(self):
        c_in, c_out = self.source.shape[0], self.target.shape[0]
        specs = {"W": ((c_out, c_in // self.groups) + self.kernel, "conv")}
        if self.bias:
            specs["b"] = ((c_out,), "zeros")
        return specs

    def apply(self, x, params):
        fn = ir.api.conv1d if self.nd == 1 else ir.api.conv2d
        return fn(x, params["W"], params.get("b"), self.stride, self.padding, self.dilation, self.groups)

    def config(self):
        return {**super().config(), "kernel_size": list(self.kernel), "stride": list(self.stride),
                "padding": self.padding if isinstance(self.padding, (str, int)) else list(self.padding),
                "dilation": list(self.dilation), "groups": self.groups, "bias": self.bias}


class Pool(Connection):
    """Max or average pooling between feature maps of the same channel count (no weights)."""

    kind = "pool"

    def __init__(self, source, target, mode: str = "max", kernel_size=2, stride=None, padding=0, **kw):
        nd = len(source.shape) - 1
        if nd not in (1, 2):
            raise ShapeError(f"pool connection {source.name} -> {target.name}: the source must be a feature map, got {source.shape}")
        if mode not in ("max", "avg"):
            raise FlexcoreError(f"pool connection {source.name} -> {target.name}: mode must be 'max' or 'avg', got {mode!r}")
        self.nd, self.mode = nd, mode
        self.kernel = ir.api._tuple(kernel_size, nd, "kernel_size")
        self.stride = self.kernel if stride is None else ir.api._tuple(stride, nd, "stride")
        self.padding = padding
        super().__init__(source, target, **kw)

    def check_shapes(self):
        pads = conv_padding(self.padding, self.source.shape[1:], self.kernel, self.stride, (1,) * self.nd)
        sp = tuple((i + lo + hi - k) // s + 1 for i, k, s, (lo, hi) in zip(self.source.shape[1:], self.kernel, self.stride, pads))
        out = (self.source.shape[0],) + sp
        if out != self.target.shape:
            raise ShapeError(f"{self._where()}: pooling gives shape {out}, the target layer has {self.target.shape}")

    def apply(self, x, params):
        fn = {("max", 1): ir.api.max_pool1d, ("max", 2): ir.api.max_pool2d,
              ("avg", 1): ir.api.avg_pool1d, ("avg", 2): ir.api.avg_pool2d}[(self.mode, self.nd)]
        return fn(x, self.kernel, self.stride, self.padding)

    def config(self):
        return {**super().config(), "mode": self.mode, "kernel_size": list(self.kernel), "stride": list(self.stride),
                "padding": self.padding if isinstance(self.padding, (str, int)) else list(self.padding)}


class Identity(Connection):
    """The source's value as it is, times a fixed `scale` (a skip / residual path; no weights).
    A source of the same size but another shape is reshaped."""

    kind = "identity"

    def __init__(self, source, target, scale: float = 1.0, **kw):
        self.scale = float(scale)
        super().__init__(source, target, **kw)

    def check_shapes(self):
        if int(np.prod(self.source.shape)) != int(np.prod(self.target.shape)):
            raise ShapeError(f"{self._where()}: an identity connection needs equal sizes")

    def apply(self, x, params):
        if x.shape[1:] != self.target.shape:
            x = ir.api.reshape(x, (x.shape[0],) + self.target.shape)
        return x if self.scale == 1.0 else x * self.scale

    def config(self):
        return {**super().config(), "scale": self.scale}


CONNECTION_KINDS = {"dense": Dense, "conv": Conv, "pool": Pool, "identity": Identity}
