"""flexcore: a symbolic deep-learning framework whose unit of design is the connection.

Below the layer API lies the IR: build a graph from placeholders and shared variables with the
functions here, differentiate it with `grad`, compile it with `function`.

    import flexcore as fc
    x = fc.placeholder((64, 10)); w = fc.shared(np.zeros((10, 3), np.float32), name="w")
    loss = fc.mean(fc.softmax_cross_entropy(x @ w, y))
    step = fc.function([x, y], loss, updates=[(w, w - 0.1 * fc.grad(loss, w))])
"""

from . import _native  # noqa: F401  (never raises; tells whether the C extension is built)
from .autodiff import grad, hessian_vector_product, vjp
from .function import Function, TracedFunction, function, trace
from .ir.api import *  # noqa: F401,F403  (the functional op API)
from .ir.api import ACTIVATIONS, COMPOSITES, activation
from .ir.core import REGISTRY, FlexcoreError, Shared, ShapeError, Var, const, placeholder, shared
from .printing import debugprint, draw_graph, to_dot
from .nn import (
    ActivationLayer,
    FeatureMapLayer,
    History,
    InputLayer,
    MemoryLayer,
    Network,
)

__version__ = "0.1.0"

__all__ = [
    "ActivationLayer",
    "FeatureMapLayer",
    "History",
    "InputLayer",
    "MemoryLayer",
    "Network",
    "ACTIVATIONS",
    "COMPOSITES",
    "REGISTRY",
    "FlexcoreError",
    "Function",
    "ShapeError",
    "Shared",
    "TracedFunction",
    "Var",
    "activation",
    "const",
    "debugprint",
    "draw_graph",
    "function",
    "grad",
    "hessian_vector_product",
    "placeholder",
    "shared",
    "to_dot",
    "trace",
    "vjp",
]
