"""The IR: immutable symbolic tensors (`Var`) and the one op registry.

A `Var` is the result of applying a registered op to other Vars with attributes.  Vars are
immutable: passes build new ones with `Var.replace` instead of editing a graph in place.
Shapes and dtypes are static and concrete; every op checks its inputs when it is applied, so
a shape mistake is reported where the user wrote it, not when the graph runs.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

__all__ = [
    "FlexcoreError",
    "ShapeError",
    "Var",
    "Shared",
    "OpDef",
    "REGISTRY",
    "register_op",
    "get_op",
    "apply",
    "placeholder",
    "shared",
    "const",
    "as_var",
    "toposort",
    "FLOAT_DTYPES",
]


class FlexcoreError(Exception):
    """Base class of the errors flexcore raises on bad input."""


class ShapeError(FlexcoreError, ValueError):
    """Shapes (or dtypes) of an op's arguments do not fit together."""


FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_ALLOWED_DTYPES = FLOAT_DTYPES + (np.dtype(np.int64), np.dtype(np.bool_))

Shape = tuple[int, ...]
_ids = itertools.count()


def normalize_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt in (np.dtype(np.int32), np.dtype(np.int16), np.dtype(np.int8), np.dtype(np.uint8)):
        dt = np.dtype(np.int64)
    if dt not in _ALLOWED_DTYPES:
        raise FlexcoreError(
            f"dtype {dt} is not supported; use one of {', '.join(str(d) for d in _ALLOWED_DTYPES)}"
        )
    return dt


class _Frozen:
    """A hashable, comparable wrapper for an attribute value (constants' arrays)."""

    __slots__ = ("array", "_key")

    def __init__(self, array: np.ndarray):
        array = np.array(array, order="C")  # a private copy (0-d stays 0-d)
        array.setflags(write=False)
        self.array = array
        self._key = (array.dtype.str, array.shape, array.tobytes()) if array.size <= 4096 else id(array)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Frozen) and self._key == other._key

    def __repr__(self) -> str:
        if self.array.size <= 6:
            return np.array2string(self.array, separator=",").replace("\n", "")
        return f"array{self.array.shape}"


class Var:
    """A symbolic tensor: `op` applied to `inputs` with `attrs`, of static `shape` and `dtype`.

    Leaves are placeholders (inputs of a compiled function), shared variables (persistent
    parameters) and constants.  Arithmetic operators build new Vars; `==` keeps Python's
    identity meaning so Vars can be dict keys (use `flexcore.eq` for the elementwise test).
    """

    __slots__ = ("op", "inputs", "attrs", "shape", "dtype", "name", "__weakref__")

    op: str
    inputs: tuple["Var", ...]
    attrs: tuple[tuple[str, Any], ...]
    shape: Shape
    dtype: np.dtype
    name: str | None

    def __init__(self, op, inputs, attrs, shape, dtype, name=None):
        _init_var(
            self, op, tuple(inputs),
            tuple(sorted(attrs.items())) if isinstance(attrs, dict) else attrs,
            tuple(map(int, shape)),  # map: passes build ~10^5 Vars
            dtype if isinstance(dtype, np.dtype) else np.dtype(dtype),
            name,
        )

    def __setattr__(self, key, value):
        raise AttributeError("Var is immutable; build a new one with replace()")

    # -- introspection -------------------------------------------------------------------
    @property
    def attr(self) -> dict[str, Any]:
        return dict(self.attrs)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def is_leaf(self) -> bool:
        return self.op in ("placeholder", "shared", "const")

    def replace(self, inputs: Sequence["Var"] | None = None, name: str | None = None) -> "Var":
        """The same op and attributes over new inputs (shape and dtype are re-inferred)."""
        if self.is_leaf:
            return self
        return apply(self.op, *(self.inputs if inputs is None else inputs), name=name or self.name, **self.attr)

    def label(self) -> str:
        return f"'{self.name}'" if self.name else f"{self.op}"

    def __repr__(self) -> str:
        nm = f" '{self.name}'" if self.name else ""
        return f"Var({self.op}{nm}, shape={self.shape}, dtype={self.dtype})"

    def __bool__(self):
        raise FlexcoreError("a symbolic Var has no truth value; use flexcore.where for a condition")

    # -- operators (the functional API lives in flexcore.ir.api) ---------------------------
    def __add__(self, o):
        return apply("add", self, o)

    def __radd__(self, o):
        return apply("add", o, self)

    def __sub__(self, o):
        return apply("sub", self, o)

    def __rsub__(self, o):
        return apply("sub", o, self)

    def __mul__(self, o):
        return apply("mul", self, o)

    def __rmul__(self, o):
        return apply("mul", o, self)

    def __truediv__(self, o):
        return apply("div", self, o)

    def __rtruediv__(self, o):
        return apply("div", o, self)

    def __pow__(self, o):
        return apply("pow", self, o)

    def __rpow__(self, o):
        return apply("pow", o, self)

    def __neg__(self):
        return apply("neg", self)

    def __matmul__(self, o):
        return apply("matmul", self, o)

    def __rmatmul__(self, o):
        return apply("matmul", o, self)

    def __lt__(self, o):
        return apply("lt", self, o)

    def __le__(self, o):
        return apply("le", self, o)

    def __gt__(self, o):
        return apply("gt", self, o)

    def __ge__(self, o):
        return apply("ge", self, o)

    def __getitem__(self, index):
        from . import api

        return api.getitem(self, index)

    @property
    def T(self) -> "Var":
        return apply("permute", self, axes=tuple(reversed(range(self.ndim))))

    def reshape(self, *shape) -> "Var":
        from . import api

        return api.reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)

    def sum(self, axis=None, keepdims=False) -> "Var":
        from . import api

        return api.sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False) -> "Var":
        from . import api

        return api.mean(self, axis, keepdims)

    def max(self, axis=None, keepdims=False) -> "Var":
        from . import api

        return api.max(self, axis, keepdims)


class Storage:
    """The persistent value behind a shared variable (a parameter or optimizer state)."""

    __slots__ = ("_value", "_fetch", "shape", "dtype", "name", "version", "__weakref__")

    def __init__(self, value: np.ndarray, name: str | None):
        self.shape = value.shape
        self.dtype = value.dtype
        self.name = name
        self.version = 0
        self._value = value
        self._fetch = None

    def get(self) -> np.ndarray:
        if self._fetch is not None:  # the value lives on a device: copy it back once, when read
            self._value, self._fetch = self._fetch(), None
        return self._value

    def replace_lazy(self, fetch) -> None:
        """A new value that stays where a backend computed it (device memory) until someone reads
        it: `fetch()` returns it as a C-contiguous array of this storage's shape and dtype."""
        self._fetch = fetch
        self.version += 1

    def set(self, value) -> None:
        arr = np.asarray(value)
        if arr.shape != self.shape:
            raise ShapeError(f"shared variable '{self.name}': new value has shape {arr.shape}, expected {self.shape}")
        # C order whatever the source's layout (a transposed view): kernels take row-major data.
        self._value = np.array(arr, dtype=self.dtype, copy=True, order="C")
        self._fetch = None
        self.version += 1

    def replace(self, array: np.ndarray) -> None:
        """Take `array` as the new value without copying it: the caller hands it over and keeps
        no other reference that could write to it (a backend's freshly computed update)."""
        if not isinstance(array, np.ndarray) or array.shape != self.shape or array.dtype != self.dtype:
            got = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
            raise ShapeError(f"shared variable '{self.name}': replacement is {got}, expected {self.dtype} {self.shape}")
        if not (array.flags.c_contiguous and array.flags.aligned and array.flags.writeable):
            raise FlexcoreError(f"shared variable '{self.name}': a replacement array must be C-contiguous, aligned and writeable")
        self._value = array
        self._fetch = None
        self.version += 1


class Shared(Var):
    """A shared variable: a leaf whose value persists between calls of compiled functions."""

    __slots__ = ("storage",)

    def __init__(self, value: np.ndarray, name: str | None):
        super().__init__("shared", (), {"id": next(_ids)}, value.shape, value.dtype, name)
        object.__setattr__(self, "storage", Storage(value, name))

    def get_value(self) -> np.ndarray:
        """A copy of the current value."""
        return self.storage.get().copy()

    def set_value(self, value) -> None:
        self.storage.set(value)

    @property
    def value(self) -> np.ndarray:
        return self.get_value()


def placeholder(shape: Sequence[int], dtype: Any = np.float32, name: str | None = None) -> Var:
    """A symbolic input of fixed shape, fed when a compiled function is called."""
    shape = tuple(shape)
    if any((not isinstance(s, (int, np.integer))) or s < 0 for s in shape):
        raise ShapeError(f"placeholder '{name}': shape must be non-negative integers, got {shape}")
    return Var("placeholder", (), {"id": next(_ids)}, shape, normalize_dtype(dtype), name)


def shared(value, name: str | None = None, dtype: Any = None) -> Shared:
    """A persistent tensor (parameter or optimizer state), initialised with a copy of `value`."""
    arr = np.array(value, dtype=dtype if dtype is not None else None, copy=True, order="C")
    if dtype is None and arr.dtype == np.float64 and not isinstance(value, np.ndarray):
        arr = arr.astype(np.float32)
    arr = arr.astype(normalize_dtype(arr.dtype), copy=False)
    return Shared(arr, name)


def const(value, dtype: Any = None, name: str | None = None) -> Var:
    """A constant tensor baked into the graph."""
    arr = np.asarray(value, dtype=dtype)
    arr = arr.astype(normalize_dtype(arr.dtype), copy=False)
    return Var("const", (), {"value": _Frozen(arr)}, arr.shape, arr.dtype, name)


def const_value(v: Var) -> np.ndarray:
    return v.attr["value"].array


def as_var(x, like: Var | None = None) -> Var:
    """Var as is; a Python number or numpy array becomes a constant (of `like`'s dtype if given)."""
    if isinstance(x, Var):
        return x
    if isinstance(x, (bool, np.bool_)):
        return const(np.asarray(x, dtype=np.bool_))
    if like is not None and isinstance(x, (int, float, np.number)) and like.dtype.kind == "f":
        return const(np.asarray(x, dtype=like.dtype))
    if like is not None and isinstance(x, (int, np.integer)) and like.dtype.kind == "i":
        return const(np.asarray(x, dtype=np.int64))
    if isinstance(x, (float, np.floating)):
        return const(np.asarray(x, dtype=np.float32))
    if isinstance(x, (int, np.integer)):
        return const(np.asarray(x, dtype=np.int64))
    if isinstance(x, np.ndarray):
        return const(x)
    raise FlexcoreError(f"cannot use {type(x).__name__} {x!r} as a tensor")


# ---------------------------------------------------------------------------------------
# The op registry
# ---------------------------------------------------------------------------------------
REQUIRED = object()


@dataclass(frozen=True)
class OpDef:
    """A primitive op: how to infer its result, compute it (numpy) and differentiate it.

    infer(inputs, **attrs) -> (shape, dtype)    raises ShapeError on bad inputs
    impl(*arrays, **attrs) -> np.ndarray         the reference implementation (the spec)
    vjp(g, out, *inputs, **attrs) -> grads       one IR Var (or None) per input
    """

    name: str
    infer: Callable[..., tuple[Shape, np.dtype]]
    impl: Callable[..., np.ndarray]
    vjp: Callable[..., tuple] | None
    attrs: dict[str, Any] = field(default_factory=dict)
    arg_names: tuple[str, ...] = ()
    variadic: bool = False
    kind: str = "other"
    differentiable: bool = True
    doc: str = ""


REGISTRY: dict[str, OpDef] = {}
_LEAF_OPS = ("placeholder", "shared", "const")


def register_op(
    name: str,
    *,
    infer,
    impl,
    vjp=None,
    attrs: dict[str, Any] | None = None,
    args: Sequence[str] = ("x",),
    variadic: bool = False,
    kind: str = "other",
    differentiable: bool = True,
    doc: str = "",
) -> OpDef:
    """Declare a primitive op.  `differentiable=False` is the explicit not-differentiable mark;
    a differentiable op must have a `vjp`."""
    if name in REGISTRY or name in _LEAF_OPS:
        raise FlexcoreError(f"op '{name}' is already registered")
    if differentiable and vjp is None:
        raise FlexcoreError(f"op '{name}' is differentiable but has no vjp")
    od = OpDef(name, infer, impl, vjp, dict(attrs or {}), tuple(args), variadic, kind, differentiable, doc)
    REGISTRY[name] = od
    return od


# The slot descriptors' setters, called directly: they skip Var.__setattr__ (which refuses) and
# the attribute lookup of object.__setattr__, a third of the cost of building a Var.
_SET_VAR_SLOTS = tuple(Var.__dict__[k].__set__ for k in ("op", "inputs", "attrs", "shape", "dtype", "name"))


def _init_var(v, op, inputs, attrs, shape, dtype, name):
    s_op, s_inputs, s_attrs, s_shape, s_dtype, s_name = _SET_VAR_SLOTS
    s_op(v, op)
    s_inputs(v, inputs)
    s_attrs(v, attrs)
    s_shape(v, shape)
    s_dtype(v, dtype)
    s_name(v, name)


def var_like(v: Var, inputs: Sequence[Var]) -> Var:
    """v's op, attributes, shape, dtype and name over `inputs`, which the caller guarantees have
    the shapes and dtypes of v's own (so nothing needs checking or re-inferring)."""
    out = object.__new__(Var)
    _init_var(out, v.op, tuple(inputs), v.attrs, v.shape, v.dtype, v.name)
    return out


def get_op(name: str) -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise FlexcoreError(f"unknown op '{name}'; registered ops: {', '.join(sorted(REGISTRY))}") from None


def _freeze_attr(value: Any) -> Any:
    """Lists become tuples (nested too): attributes are part of an immutable Var and of the
    keys that CSE hashes, so `shape=[3, 1]` must mean the same as `shape=(3, 1)`."""
    if isinstance(value, (list, tuple)):
        for x in value:  # a plain loop first: most attributes are flat tuples of ints
            if isinstance(x, (list, tuple)):
                return tuple(_freeze_attr(y) for y in value)
        return tuple(value)
    return value


def _check_attrs(od: OpDef, attrs: dict[str, Any]) -> dict[str, Any]:
    unknown = [k for k in attrs if k not in od.attrs]
    if unknown:
        valid = ", ".join(sorted(od.attrs)) or "none"
        raise FlexcoreError(f"op '{od.name}': unknown attribute(s) {', '.join(sorted(unknown))}; valid attributes: {valid}")
    out = {}
    for k, default in od.attrs.items():
        if k in attrs:
            out[k] = _freeze_attr(attrs[k])
        elif default is REQUIRED:
            raise FlexcoreError(f"op '{od.name}': attribute '{k}' is required")
        else:
            out[k] = default
    return out


def apply(op: str, *inputs, name: str | None = None, **attrs) -> Var:
    """Apply a registered primitive op to inputs (Vars, numbers or arrays)."""
    od = get_op(op)
    if not od.variadic and len(inputs) != len(od.arg_names):
        raise FlexcoreError(f"op '{op}' takes {len(od.arg_names)} argument(s) ({', '.join(od.arg_names)}), got {len(inputs)}")
    for x in inputs:
        if not isinstance(x, Var):
            like = next((x for x in inputs if isinstance(x, Var) and x.dtype.kind == "f"), None)
            vs = [as_var(x, like) for x in inputs]
            break
    else:  # all Vars already (nearly every call): nothing to convert
        vs = list(inputs)
    full = _check_attrs(od, attrs)
    shape, dtype = od.infer(vs, **full)
    return Var(op, vs, full, shape, dtype, name)


def arg_label(od_name: str, i: int, v: Var) -> str:
    od = REGISTRY.get(od_name)
    if od is not None and od.arg_names and not od.variadic:
        nm = od.arg_names[i] if i < len(od.arg_names) else f"#{i}"
    else:
        nm = f"#{i}"
    return f"argument '{nm}'" + (f" ({v.name})" if v.name else "")


def toposort(roots: Iterable[Var]) -> list[Var]:
    """All Vars reachable from `roots`, each after its inputs (iterative: deep graphs are fine).
    The order is a depth-first post-order, inputs in argument order."""
    order: list[Var] = []
    seen: set[Var] = set()
    # An explicit stack of input iterators and local names: passes sort graphs of ~10^5 nodes
    # several times per compile.  Vars hash and compare by identity, so the set holds them
    # directly (no id() call per edge).
    emit, mark = order.append, seen.add
    for root in roots:
        if root in seen:
            continue
        mark(root)
        stack = [(root, iter(root.inputs))]
        push, pop = stack.append, stack.pop
        while stack:
            v, it = stack[-1]
            for x in it:
                if x not in seen:
                    mark(x)
                    push((x, iter(x.inputs)))
                    break
            else:
                pop()
                emit(v)
    return order
