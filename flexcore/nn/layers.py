"""Layers hold activity; they own no weight matrices (connections do).

A layer's value at step t is activation(combine(contributions) + bias), where each incoming
connection contributes its transform of the source's value at t - delay.  `combine` is 'sum'
(the default) or 'product' (a multiplicative gate).  A MemoryLayer instead keeps
c_t = F * c_{t-1} + I * G from connections labelled forget / input / candidate.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np

from .. import ir
from ..ir.api import ACTIVATIONS
from ..ir.core import FlexcoreError, Var

__all__ = ["Layer", "InputLayer", "ActivationLayer", "FeatureMapLayer", "MemoryLayer", "LOSSES", "loss_name"]

_counter = itertools.count(1)

# Seed spellings of FlexNet, accepted as aliases of the PEP 8 names.
_ALIASES = {
    "inputShape": "input_shape",
    "shape": "input_shape",
    "passFunction": "activation",
    "pass_function": "activation",
    "ifOutput": "output",
    "if_output": "output",
    "lossFunction": "loss",
    "loss_function": "loss",
    "sequenceLength": "sequence_length",
    "initialState": "initial_state",
    "lossWeight": "loss_weight",
}

LOSSES = {
    "negative_log_likelihood": "nll",
    "negativeLogLikelihood": "nll",
    "nll": "nll",
    "cross_entropy": "cross_entropy",
    "crossEntropy": "cross_entropy",
    "softmax_cross_entropy": "cross_entropy",
    "mse": "mse",
    "mean_squared_error": "mse",
    "meanSquaredError": "mse",
    "binary_cross_entropy": "bce",
    "binaryCrossEntropy": "bce",
    "bce_with_logits": "bce_logits",
}


def loss_name(name: str, layer: str) -> str:
    try:
        return LOSSES[name]
    except KeyError:
        raise FlexcoreError(f"layer '{layer}': unknown loss '{name}'; valid: {', '.join(sorted(LOSSES))}") from None


def _resolve_kwargs(cls: str, kwargs: dict[str, Any], valid: Sequence[str]) -> dict[str, Any]:
    out = {}
    for k, v in kwargs.items():
        k2 = _ALIASES.get(k, k)
        if k2 not in valid:
            raise FlexcoreError(f"{cls}: unknown argument '{k}'; valid: {', '.join(sorted(valid))}")
        if k2 in out:
            raise FlexcoreError(f"{cls}: argument '{k2}' given twice (as '{k}' and its alias)")
        out[k2] = v
    return out


def _shape(shape, cls: str, name: str) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise FlexcoreError(f"{cls} '{name}': input_shape must be an int or a tuple of ints, got {shape!r}") from None
    if not shape or any(s < 1 for s in shape):
        raise FlexcoreError(f"{cls} '{name}': input_shape must be positive sizes, got {shape}")
    return shape


class Layer:
    """Base class: a named holder of activity of a fixed per-example shape."""

    kind = "layer"
    _valid = (
        "input_shape",
        "name",
        "activation",
        "activation_args",
        "combine",
        "bias",
        "output",
        "loss",
        "loss_weight",
        "loss_steps",
        "initial_state",
        "norm",
    )

    def __init__(self, input_shape=None, **kwargs):
        kw = _resolve_kwargs(type(self).__name__, kwargs, Layer._valid)
        if input_shape is None:
            input_shape = kw.pop("input_shape", None)
        elif "input_shape" in kw:
            raise FlexcoreError(f"{type(self).__name__}: input_shape given twice")
        self.name: str = kw.pop("name", None) or f"{type(self).__name__.replace('Layer', '').lower() or 'layer'}{next(_counter)}"
        if input_shape is None:
            raise FlexcoreError(f"{type(self).__name__} '{self.name}': input_shape is required")
        self.shape = _shape(input_shape, type(self).__name__, self.name)
        self.activation = kw.pop("activation", "identity")
        if not isinstance(self.activation, str) or self.activation not in ACTIVATIONS:
            raise FlexcoreError(
                f"layer '{self.name}': unknown activation {self.activation!r}; valid: {', '.join(sorted(ACTIVATIONS))}"
            )
        self.activation_args = dict(kw.pop("activation_args", None) or {})
        self.combine = kw.pop("combine", "sum")
        if self.combine not in ("sum", "product"):
            raise FlexcoreError(f"layer '{self.name}': combine must be 'sum' or 'product', got {self.combine!r}")
        self.bias = bool(kw.pop("bias", self.combine == "sum"))
        self.output = bool(kw.pop("output", False))
        loss = kw.pop("loss", None)
        self.loss = loss_name(loss, self.name) if loss is not None else None
        if self.output and self.loss is None:
            raise FlexcoreError(f"output layer '{self.name}' needs a loss; valid: {', '.join(sorted(LOSSES))}")
        if self.loss is not None and not self.output:
            self.output = True
        self.loss_weight = float(kw.pop("loss_weight", 1.0))
        self.loss_steps = kw.pop("loss_steps", "last")
        if self.loss_steps not in ("last", "all"):
            raise FlexcoreError(f"layer '{self.name}': loss_steps must be 'last' or 'all', got {self.loss_steps!r}")
        self.initial_state = kw.pop("initial_state", "zeros")
        self._check_initial_state()
        self.norm = kw.pop("norm", None)
        if self.norm not in (None, "layer"):
            raise FlexcoreError(f"layer '{self.name}': norm must be None or 'layer', got {self.norm!r}")
        if kw:  # pragma: no cover - every valid key is consumed above
            raise FlexcoreError(f"layer '{self.name}': unused arguments {sorted(kw)}")

    def _check_initial_state(self) -> None:
        s = self.initial_state
        if isinstance(s, str):
            if s not in ("zeros", "learnable"):
                raise FlexcoreError(f"layer '{self.name}': initial_state must be 'zeros', 'learnable' or an array, got {s!r}")
            return
        arr = np.asarray(s, dtype=np.float64)
        if arr.shape != self.shape:
            raise FlexcoreError(f"layer '{self.name}': initial_state has shape {arr.shape}, the layer has {self.shape}")
        self.initial_state = arr

    # -- IR -----------------------------------------------------------------------------
    def param_specs(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Parameters this layer owns: name -> (shape, initialiser)."""
        specs: dict[str, tuple[tuple[int, ...], str]] = {}
        c = self.shape[0]
        if self.bias:
            specs["b"] = ((c,) if len(self.shape) > 1 else self.shape, "zeros")
        if self.activation == "prelu":
            specs["slope"] = ((c,), "prelu")
        if self.norm == "layer":
            specs["gamma"] = (self.shape, "ones")
            specs["beta"] = (self.shape, "zeros")
        if isinstance(self.initial_state, str) and self.initial_state == "learnable":
            specs["h0"] = (self.shape, "zeros")
        return specs

    def finish(self, pre: Var, params: dict[str, Var]) -> tuple[Var, Var]:
        """From the combined pre-activation to (pre-activation with bias, output)."""
        if self.norm == "layer":
            axes = tuple(range(1, pre.ndim))
            pre = ir.api.layer_norm(pre, params["gamma"], params["beta"], axes=axes)
        if self.bias:
            b = params["b"]
            pre = pre + (ir.api.reshape(b, (1, -1) + (1,) * (pre.ndim - 2)) if pre.ndim > 2 else b)
        return pre, self.activate(pre, params)

    def activate(self, pre: Var, params: dict[str, Var]) -> Var:
        fn = ACTIVATIONS[self.activation]
        if self.activation == "prelu":
            return fn(pre, params["slope"])
        if self.activation in ("softmax", "log_softmax"):
            if pre.ndim != 2:
                raise FlexcoreError(f"layer '{self.name}': {self.activation} needs a vector layer, shape is {self.shape}")
            return fn(pre, axis=-1)
        return fn(pre, **self.activation_args)

    def config(self) -> dict[str, Any]:
        """JSON-able description (architecture save)."""
        init = self.initial_state if isinstance(self.initial_state, str) else np.asarray(self.initial_state).tolist()
        return {
            "class": type(self).__name__,
            "name": self.name,
            "input_shape": list(self.shape),
            "activation": self.activation,
            "activation_args": self.activation_args,
            "combine": self.combine,
            "bias": self.bias,
            "output": self.output,
            "loss": self.loss,
            "loss_weight": self.loss_weight,
            "loss_steps": self.loss_steps,
            "initial_state": init,
            "norm": self.norm,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self.name}', shape={self.shape}, activation='{self.activation}')"


class InputLayer(Layer):
    """Where data enters: vectors (F,) or feature maps (C, L) / (C, H, W), optionally a sequence
    of `sequence_length` steps (data then has shape (N, T, *input_shape))."""

    kind = "input"
    _valid = ("input_shape", "name", "sequence_length", "initial_state")

    def __init__(self, input_shape=None, sequence_length: int | None = None, **kwargs):
        kw = _resolve_kwargs("InputLayer", kwargs, self._valid)
        if "sequence_length" in kw:
            sequence_length = kw.pop("sequence_length")
        if input_shape is None:
            input_shape = kw.pop("input_shape", None)
        super().__init__(input_shape, bias=False, **kw)
        if sequence_length is not None and (not isinstance(sequence_length, (int, np.integer)) or sequence_length < 1):
            raise FlexcoreError(f"InputLayer '{self.name}': sequence_length must be a positive int, got {sequence_length!r}")
        self.sequence_length = None if sequence_length is None else int(sequence_length)

    def param_specs(self):
        # No bias or norm; only a learnable state before t = 0 (read by a recurrent connection).
        if isinstance(self.initial_state, str) and self.initial_state == "learnable":
            return {"h0": (self.shape, "zeros")}
        return {}

    def config(self):
        init = self.initial_state if isinstance(self.initial_state, str) else np.asarray(self.initial_state).tolist()
        return {"class": "InputLayer", "name": self.name, "input_shape": list(self.shape),
                "sequence_length": self.sequence_length, "initial_state": init}


class ActivationLayer(Layer):
    """The general layer: incoming contributions combined (sum or product), plus a bias, then
    an activation from the registry.  Works for vectors and for feature maps."""


class FeatureMapLayer(ActivationLayer):
    """A layer of feature maps, shape (channels, length) or (channels, height, width); its bias
    is per channel.  Target of conv and pooling connections."""

    def __init__(self, input_shape=None, **kwargs):
        super().__init__(input_shape, **kwargs)
        if len(self.shape) not in (2, 3):
            raise FlexcoreError(f"FeatureMapLayer '{self.name}': shape must be (C, L) or (C, H, W), got {self.shape}")


class MemoryLayer(Layer):
    """A memory cell: c_t = F * c_{t-1} + I * G, where F, I and G are the summed connections with
    role 'forget', 'input' and 'candidate' (F is 1 without forget connections, I is 1 without
    input connections).  It reads its own previous value; its initial state is as for any layer."""

    kind = "memory"
    _valid = ("input_shape", "name", "initial_state", "output", "loss", "loss_weight", "loss_steps")
    ROLES = ("forget", "input", "candidate")

    def __init__(self, input_shape=None, **kwargs):
        kw = _resolve_kwargs("MemoryLayer", kwargs, self._valid)
        if input_shape is None:
            input_shape = kw.pop("input_shape", None)
        super().__init__(input_shape, bias=False, **kw)

    def config(self):
        cfg = super().config()
        cfg["class"] = "MemoryLayer"
        for k in ("activation", "activation_args", "combine", "bias", "norm"):
            cfg.pop(k)
        return cfg
