"""Optimizers as IR update rules, plus gradient clipping and weight penalties.

An optimizer turns (parameters, gradients, learning rate) into the `(shared, new_value)` pairs
that `flexcore.function(..., updates=...)` applies, so the whole training step (forward,
backward and update) is one compiled graph.  Optimizer state (momentum buffers, moment
estimates, step counters) lives in shared variables the optimizer creates, named after their
parameter ("w.m", "w.v", ...) and listed by `state()` so a network can save and restore them.

    opt = Adam()
    lr = fc.placeholder((), np.float32, name="lr")    # a schedule changes it per call
    grads = fc.grad(loss, params)
    step = fc.function([x, y, lr], loss, updates=opt.updates(params, grads, lr))

The update formulas follow torch.optim's conventions exactly (momentum buffer
`buf = momentum * buf + g`, eps outside the square root, Adam's per-parameter step count), so
a model trained here and one trained with torch from the same weights take the same steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .ir import api
from .ir.core import FLOAT_DTYPES, FlexcoreError, ShapeError, Shared, Var, apply, shared

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adam",
    "Optimizer",
    "RMSprop",
    "clip_by_global_norm",
    "get_optimizer",
    "global_norm",
    "l1_penalty",
    "l2_penalty",
]

Update = tuple[Shared, Var]


def _check_hyper(owner: str, **values: float) -> None:
    for name, v in values.items():
        if not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v) or v < 0:
            raise FlexcoreError(f"{owner}: {name} must be a finite number >= 0, got {v!r}")


def _check_beta(owner: str, **values: float) -> None:
    for name, v in values.items():
        if not isinstance(v, (int, float, np.integer, np.floating)) or not 0.0 <= v < 1.0:
            raise FlexcoreError(f"{owner}: {name} must be in [0, 1), got {v!r}")


def _lr_like(lr: Var | float, p: Var, owner: str) -> Var | float:
    """The learning rate in the parameter's dtype: a float stays a float (it becomes a constant
    of the right dtype where it is used); a scalar Var is cast when the dtypes differ, so one
    float32 placeholder can drive float64 parameters too."""
    if isinstance(lr, Var):
        if lr.shape != ():
            raise ShapeError(
                f"{owner}: the learning rate must be a scalar, got a Var of shape {lr.shape}"
            )
        if lr.dtype not in FLOAT_DTYPES:
            raise FlexcoreError(
                f"{owner}: the learning rate must be float32 or float64, got {lr.dtype}"
            )
        return lr if lr.dtype == p.dtype else apply("cast", lr, dtype=p.dtype.str)
    if isinstance(lr, (bool, np.bool_)) or not isinstance(
        lr, (int, float, np.integer, np.floating)
    ):
        raise FlexcoreError(
            f"{owner}: the learning rate must be a float or a scalar Var, got {type(lr).__name__}"
        )
    if not np.isfinite(lr) or lr < 0:
        raise FlexcoreError(f"{owner}: the learning rate must be a finite number >= 0, got {lr!r}")
    return float(lr)


class Optimizer:
    """Base class: subclasses implement `_param_updates` for one parameter.

    State variables are created the first time `updates` sees a parameter and reused on later
    calls, so building several step functions for the same parameters (one per batch shape,
    say) shares one optimizer state.
    """

    #: short name used in messages and by `get_optimizer`
    name = "optimizer"

    def __init__(self) -> None:
        self._slots: dict[Shared, dict[str, Shared]] = {}  # param -> {suffix: state variable}
        self._state: dict[str, Shared] = {}  # full state name -> state variable
        self._prefix: dict[Shared, str] = {}
        self._unnamed = 0

    # -- public API ---------------------------------------------------------------------
    def updates(
        self, params: Sequence[Shared], grads: Sequence[Var], lr: Var | float
    ) -> list[Update]:
        """The (shared, new_value) pairs of one optimisation step.

        `params` are the shared variables to train, `grads` their gradients (same order, same
        shapes; from `flexcore.grad`), `lr` a float or a scalar placeholder (a schedule then
        changes it per call without recompiling)."""
        params, grads = list(params), list(grads)
        if len(params) != len(grads):
            raise FlexcoreError(
                f"{self.name}: got {len(params)} parameter(s) but {len(grads)} gradient(s)"
            )
        seen: set[int] = set()
        out: list[Update] = []
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            if not isinstance(p, Shared):
                raise FlexcoreError(
                    f"{self.name}: parameter #{i} must be a shared variable, got {p!r}"
                )
            if id(p) in seen:
                raise FlexcoreError(f"{self.name}: parameter {p.label()} is listed twice")
            seen.add(id(p))
            if p.dtype not in FLOAT_DTYPES:
                raise FlexcoreError(
                    f"{self.name}: parameter {p.label()} has dtype {p.dtype}; "
                    "only float parameters train"
                )
            if not isinstance(g, Var):
                raise FlexcoreError(
                    f"{self.name}: the gradient of {p.label()} must be a Var, "
                    f"got {type(g).__name__}"
                )
            if g.shape != p.shape or g.dtype != p.dtype:
                raise ShapeError(
                    f"{self.name}: the gradient of {p.label()} is {g.shape} {g.dtype}, "
                    f"the parameter is {p.shape} {p.dtype}"
                )
            out.extend(self._param_updates(p, g, _lr_like(lr, p, self.name)))
        return out

    def state(self) -> dict[str, Shared]:
        """The optimizer's state variables by name ("<param>.<slot>"), in creation order.
        Empty until `updates` has been called."""
        return dict(self._state)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._config().items())})"
        )

    # -- for subclasses -----------------------------------------------------------------
    def _config(self) -> dict[str, object]:
        return {}

    def _param_updates(self, p: Shared, g: Var, lr: Var | float) -> list[Update]:
        raise NotImplementedError

    def _slot(self, p: Shared, suffix: str, dtype=None) -> Shared:
        """The state variable `<param>.<suffix>`, zeros shaped like `p` (a scalar when
        `dtype` is given: the step counters), created on first use."""
        slots = self._slots.setdefault(p, {})
        if suffix not in slots:
            name = f"{self._param_prefix(p)}.{suffix}"
            value = np.zeros((), dtype) if dtype is not None else np.zeros(p.shape, p.dtype)
            slots[suffix] = self._state[name] = shared(value, name=name)
        return slots[suffix]

    def _param_prefix(self, p: Shared) -> str:
        prefix = self._prefix.get(p)
        if prefix is None:
            taken = set(self._prefix.values())
            if p.name:
                prefix = p.name
            else:
                # Unnamed parameters are numbered in the order this optimizer first sees them.
                while f"param{self._unnamed}" in taken:
                    self._unnamed += 1
                prefix = f"param{self._unnamed}"
            if prefix in taken:
                raise FlexcoreError(
                    f"{self.name}: two different parameters are named '{prefix}'; optimizer "
                    "state is named after its parameter, so parameter names must be unique"
                )
            self._prefix[p] = prefix
        return prefix


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay,
    as torch.optim.SGD (dampening 0):

        g = grad + weight_decay * p
        buf = momentum * buf + g                      (momentum > 0)
        g = g + momentum * buf  if nesterov  else buf
        p = p - lr * g
    """

    name = "sgd"

    def __init__(self, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__()
        _check_hyper("SGD", momentum=momentum, weight_decay=weight_decay)
        if nesterov and momentum <= 0:
            raise FlexcoreError("SGD: nesterov=True needs momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)

    def _config(self):
        return {
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }

    def _param_updates(self, p, g, lr):
        if self.weight_decay:
            g = g + self.weight_decay * p
        ups: list[Update] = []
        if self.momentum:
            buf = self._slot(p, "momentum")
            # torch starts the buffer at g on the first step; momentum * 0 + g is that exactly.
            new_buf = self.momentum * buf + g
            ups.append((buf, new_buf))
            g = g + self.momentum * new_buf if self.nesterov else new_buf
        return [(p, p - lr * g), *ups]


class Adam(Optimizer):
    """Adam with bias correction and L2 weight decay added to the gradient (not AdamW), as
    torch.optim.Adam:

        g = grad + weight_decay * p
        m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g * g
        t = t + 1   (one int64 counter per parameter, like torch's state['step'])
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """

    name = "adam"

    def __init__(
        self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0
    ):
        super().__init__()
        _check_beta("Adam", beta1=beta1, beta2=beta2)
        _check_hyper("Adam", eps=eps, weight_decay=weight_decay)
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)

    def _config(self):
        return {
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }

    def _param_updates(self, p, g, lr):
        if self.weight_decay:
            g = g + self.weight_decay * p
        m, v = self._slot(p, "m"), self._slot(p, "v")
        # The counter is an integer so it counts exactly past float32's 2^24.
        step = self._slot(p, "step", dtype=np.int64)
        new_step = step + 1
        new_m = self.beta1 * m + (1.0 - self.beta1) * g
        new_v = self.beta2 * v + (1.0 - self.beta2) * (g * g)
        # The bias corrections are scalars computed in float64, as torch does in Python floats:
        # in float32, 1 - 0.999^t cancels badly (float32(0.999) is off by 1.3e-8, 1.3e-5 of 0.001).
        f64 = np.dtype(np.float64)
        t = apply("cast", new_step, dtype=f64.str)
        bias1 = 1.0 - apply("pow", self.beta1, t)
        bias2 = 1.0 - apply("pow", self.beta2, t)
        step_size = _as((_as(lr, f64) if isinstance(lr, Var) else lr) / bias1, p.dtype)
        denom = api.sqrt(new_v) / _as(api.sqrt(bias2), p.dtype) + self.eps
        new_p = p - step_size * (new_m / denom)
        return [(p, new_p), (m, new_m), (v, new_v), (step, new_step)]


class RMSprop(Optimizer):
    """RMSprop as torch.optim.RMSprop (eps added outside the square root):

    g = grad + weight_decay * p
    sq = alpha * sq + (1 - alpha) * g * g
    centered: ga = alpha * ga + (1 - alpha) * g;  avg = sqrt(sq - ga * ga) + eps
    else:     avg = sqrt(sq) + eps
    momentum > 0: buf = momentum * buf + g / avg;  p = p - lr * buf
    else:         p = p - lr * g / avg
    """

    name = "rmsprop"

    def __init__(
        self,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        centered: bool = False,
        weight_decay: float = 0.0,
    ):
        super().__init__()
        _check_beta("RMSprop", alpha=alpha)
        _check_hyper("RMSprop", eps=eps, momentum=momentum, weight_decay=weight_decay)
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.centered = bool(centered)
        self.weight_decay = float(weight_decay)

    def _config(self):
        return {
            "alpha": self.alpha,
            "eps": self.eps,
            "momentum": self.momentum,
            "centered": self.centered,
            "weight_decay": self.weight_decay,
        }

    def _param_updates(self, p, g, lr):
        if self.weight_decay:
            g = g + self.weight_decay * p
        sq = self._slot(p, "square_avg")
        new_sq = self.alpha * sq + (1.0 - self.alpha) * (g * g)
        ups: list[Update] = [(sq, new_sq)]
        if self.centered:
            ga = self._slot(p, "grad_avg")
            new_ga = self.alpha * ga + (1.0 - self.alpha) * g
            ups.append((ga, new_ga))
            avg = api.sqrt(new_sq - new_ga * new_ga) + self.eps
        else:
            avg = api.sqrt(new_sq) + self.eps
        if self.momentum:
            buf = self._slot(p, "momentum")
            new_buf = self.momentum * buf + g / avg
            ups.append((buf, new_buf))
            new_p = p - lr * new_buf
        else:
            new_p = p - lr * (g / avg)
        return [(p, new_p), *ups]


# name -> (class, default keyword arguments)
OPTIMIZERS: dict[str, tuple[type[Optimizer], dict[str, object]]] = {
    "sgd": (SGD, {}),
    "momentum": (SGD, {"momentum": 0.9}),
    "nesterov": (SGD, {"momentum": 0.9, "nesterov": True}),
    "adam": (Adam, {}),
    "rmsprop": (RMSprop, {}),
}


def get_optimizer(spec: Optimizer | str, **kwargs) -> Optimizer:
    """An Optimizer instance as is, or a new one by name (case-insensitive): 'sgd',
    'momentum' (SGD, momentum 0.9), 'nesterov' (SGD, Nesterov momentum 0.9), 'adam',
    'rmsprop'.  Keyword arguments override the named optimizer's defaults."""
    if isinstance(spec, Optimizer):
        if kwargs:
            raise FlexcoreError(
                "get_optimizer: keyword arguments apply only when the optimizer is given by name"
            )
        return spec
    if isinstance(spec, str) and spec.lower() in OPTIMIZERS:
        cls, defaults = OPTIMIZERS[spec.lower()]
        return cls(**{**defaults, **kwargs})
    raise FlexcoreError(
        f"unknown optimizer {spec!r}; valid names: {', '.join(OPTIMIZERS)} "
        "(or pass an Optimizer instance)"
    )


# ---------------------------------------------------------------------------------------
# gradient clipping and penalties
# ---------------------------------------------------------------------------------------
def _widest(vs: Sequence[Var], what: str) -> np.dtype:
    if not vs:
        raise FlexcoreError(f"{what}: needs at least one tensor")
    for v in vs:
        if not isinstance(v, Var) or v.dtype not in FLOAT_DTYPES:
            raise FlexcoreError(f"{what}: every tensor must be a float Var, got {v!r}")
    return np.dtype(np.float64) if any(v.dtype == np.float64 for v in vs) else np.dtype(np.float32)


def _as(v: Var, dtype: np.dtype) -> Var:
    return v if v.dtype == dtype else apply("cast", v, dtype=dtype.str)


def global_norm(tensors: Sequence[Var]) -> Var:
    """The L2 norm of all tensors taken together (a scalar of the widest dtype among them)."""
    tensors = list(tensors)
    dt = _widest(tensors, "global_norm")
    # Per-tensor norms, then the norm of those: torch.nn.utils.clip_grad_norm_'s order.
    norms = [api.reshape(_as(api.sqrt(api.sum(g * g)), dt), (1,)) for g in tensors]
    stacked = norms[0] if len(norms) == 1 else api.concat(norms)
    return api.sqrt(api.sum(stacked * stacked))


def clip_by_global_norm(grads: Sequence[Var], max_norm: float | Var) -> list[Var]:
    """Scale all gradients by one factor so that their global L2 norm is at most `max_norm`,
    as torch.nn.utils.clip_grad_norm_: scale = max_norm / (norm + 1e-6), applied when < 1."""
    grads = list(grads)
    total = global_norm(grads)
    if isinstance(max_norm, Var):
        if max_norm.shape != ():
            raise ShapeError(
                f"clip_by_global_norm: max_norm must be a scalar, got shape {max_norm.shape}"
            )
        max_norm = _as(max_norm, total.dtype)
    else:
        _check_hyper("clip_by_global_norm", max_norm=max_norm)
        max_norm = float(max_norm)
    # Multiplying by exactly 1.0 when no clipping is needed leaves the gradients unchanged.
    scale = api.minimum(max_norm / (total + 1e-6), 1.0)
    return [g * _as(scale, g.dtype) for g in grads]


def l1_penalty(params: Sequence[Var]) -> Var:
    """sum |p| over all parameters (a scalar of the widest dtype); multiply by a coefficient
    and add it to the loss."""
    params = list(params)
    dt = _widest(params, "l1_penalty")
    terms = [_as(api.sum(api.abs(p)), dt) for p in params]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def l2_penalty(params: Sequence[Var]) -> Var:
    """sum p^2 over all parameters (no factor 1/2: `loss + wd / 2 * l2_penalty(params)` has the
    gradient of torch's `weight_decay=wd`)."""
    params = list(params)
    dt = _widest(params, "l2_penalty")
    terms = [_as(api.sum(p * p), dt) for p in params]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total
