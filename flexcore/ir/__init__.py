"""The IR: Vars, the op registry and the functional API (see core, ops, api)."""

from . import api, ops  # noqa: F401  (ops registers the primitives)
from .core import REGISTRY, FlexcoreError, Shared, ShapeError, Var, apply, const, placeholder, shared, toposort

__all__ = ["REGISTRY", "FlexcoreError", "Shared", "ShapeError", "Var", "api", "apply", "const", "placeholder", "shared", "toposort"]
