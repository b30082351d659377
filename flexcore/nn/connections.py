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

__all__ = ["CONNECTION_KINDS", "GATES", "Connection", "Conv", "Dense", "Identity", "Pool", "ScalarGate"]


class Connection:
    kind = "connection"

    def __init__(self, source: Layer, target: Layer, delay: int = 0, return_sequence: bool = False,
                 name: str | None = None, role: str | None = None, dropout: float = 0.0,
                 variational: bool = False, clip_grad: float | None = None):
        for what, layer in (("source", source), ("target", target)):
            if not isinstance(layer, Layer):
                raise FlexcoreError(f"connection {what} must be a Layer, got {type(layer).__name__}")
        if not isinstance(delay, (int, np.integer)) or delay < 0:
            raise FlexcoreError(f"connection {source.name} -> {target.name}: delay must be an int >= 0, got {delay!r}")
        if target.kind == "input":
            raise FlexcoreError(f"connection {source.name} -> {target.name}: an InputLayer cannot receive connections")
        if not 0.0 <= float(dropout) < 1.0:
            raise FlexcoreError(f"connection {source.name} -> {target.name}: dropout must be in [0, 1), got {dropout}")
        if variational and not float(dropout) > 0.0:
            raise FlexcoreError(f"connection {source.name} -> {target.name}: variational=True needs dropout > 0")
        if clip_grad is not None and not (isinstance(clip_grad, (int, float, np.integer, np.floating))
                                          and np.isfinite(clip_grad) and clip_grad > 0):
            raise FlexcoreError(f"connection {source.name} -> {target.name}: clip_grad must be a finite number > 0, "
                                f"got {clip_grad!r}")
        self.source, self.target = source, target
        self.delay = int(delay)
        self.return_sequence = bool(return_sequence)
        self.dropout = float(dropout)
        # variational: one dropout mask per sequence, reused at every step (Gal & Ghahramani),
        # instead of a fresh mask per step.
        self.variational = bool(variational)
        # clip_grad: the gradient flowing back through this connection into its source is
        # clipped elementwise to [-clip_grad, clip_grad] at every step.
        self.clip_grad = None if clip_grad is None else float(clip_grad)
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

    def param_specs(self) -> dict[str, tuple[tuple[int, ...], str | float]]:
        """Parameters this connection owns: name -> (shape, initialiser or fill value)."""
        return {}

    def param_refs(self) -> dict[str, str]:
        """Parameters this connection reads but another owner holds (tied weights):
        local name -> the full parameter name '<owner>.<param>'."""
        return {}

    def penalty(self, params: dict[str, Var]) -> Var | None:
        """A term added to the training loss (a regulariser of this connection's own
        parameters), or None."""
        return None

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
            "variational": self.variational,
            "clip_grad": self.clip_grad,
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


def _ginfty_gate(s: Var, index: float) -> Var:
    # GInfty's depth gate: relu(1 - exp(index - s)) is 0 for index >= s and rises towards 1
    # as s passes the index, so block `index` fades in continuously as the depth grows.
    return ir.api.relu(1.0 - ir.api.exp(index - s))


# gate name -> g(s, index); the scalar s is a trainable parameter of shape ()
GATES: dict[str, Any] = {
    "linear": lambda s, index: s,
    "sigmoid": lambda s, index: ir.api.sigmoid(s),
    "ginfty": _ginfty_gate,
}


class ScalarGate(Connection):
    """The source's value times g(s), where s is one trainable scalar and g a gate from GATES:
    'linear' (g = s: a learned residual gain, as in ReZero), 'sigmoid', or 'ginfty'
    (g = relu(1 - exp(index - s)), the depth gate of the GInfty meta-layer).

    Several gates can read one scalar: `share=` another ScalarGate (or its name) that owns it;
    the sharing gate then has no parameter of its own, and `init` / `l2` belong to the owner.
    `l2` adds l2 * s**2 to the training loss.  A source of the same size but another shape is
    reshaped, as for Identity."""

    kind = "scalar_gate"

    def __init__(self, source, target, gate: str = "linear", index: float = 0.0, init: float | None = None,
                 l2: float | None = None, share: ScalarGate | str | None = None, **kw):
        where = f"scalar gate {source.name} -> {target.name}"
        if gate not in GATES:
            raise FlexcoreError(f"{where}: unknown gate {gate!r}; valid: {', '.join(GATES)}")
        if isinstance(share, ScalarGate):
            if share.share is not None:
                raise FlexcoreError(f"{where}: share= must name the gate that owns the scalar, "
                                    f"'{share.name}' itself reads '{share.share}'")
            share = share.name
        elif share is not None and not isinstance(share, str):
            raise FlexcoreError(f"{where}: share= must be a ScalarGate or its name, got {type(share).__name__}")
        if share is not None and (init is not None or l2 is not None):
            raise FlexcoreError(f"{where}: init and l2 belong to the gate that owns the scalar ('{share}')")
        l2 = 0.0 if l2 is None else float(l2)
        if not (np.isfinite(l2) and l2 >= 0.0):
            raise FlexcoreError(f"{where}: l2 must be a finite number >= 0, got {l2}")
        self.gate, self.index = gate, float(index)
        self.init = 0.0 if init is None else float(init)
        self.l2, self.share = l2, share
        super().__init__(source, target, **kw)

    def check_shapes(self):
        if int(np.prod(self.source.shape)) != int(np.prod(self.target.shape)):
            raise ShapeError(f"{self._where()}: a scalar gate needs equal sizes")

    def param_specs(self):
        return {} if self.share is not None else {"s": ((), self.init)}

    def param_refs(self):
        return {"s": f"{self.share}.s"} if self.share is not None else {}

    def penalty(self, params):
        if self.share is not None or not self.l2:
            return None
        s = params["s"]
        return s * s * self.l2

    def factor(self, s: Var) -> Var:
        """g(s) as IR: the factor this gate multiplies its source by."""
        return GATES[self.gate](s, self.index)

    def apply(self, x, params):
        if x.shape[1:] != self.target.shape:
            x = ir.api.reshape(x, (x.shape[0],) + self.target.shape)
        return x * self.factor(params["s"])

    def config(self):
        cfg = {**super().config(), "gate": self.gate, "index": self.index, "share": self.share}
        if self.share is None:
            cfg.update(init=self.init, l2=self.l2)
        return cfg


CONNECTION_KINDS = {"dense": Dense, "conv": Conv, "pool": Pool, "identity": Identity, "scalar_gate": ScalarGate}
