"""The IR: Vars, the op registry and the functional API (see core, ops, api)."""

from . import api, fused, fused_conv, fused_rnn, ops  # noqa: F401  (ops registers the primitives, fused* the post-autodiff ops)
from .core import REGISTRY, FlexcoreError, Shared, ShapeError, Var, apply, const, placeholder, shared, toposort

__all__ = ["REGISTRY", "FlexcoreError", "Shared", "ShapeError", "Var", "api", "apply", "const", "placeholder", "shared", "toposort"]
