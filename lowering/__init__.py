"""lowering: a compiler-style lowering framework for transposed convolution.

The public API:

- IR: `Graph`, `Node`, `Value`; `parse_ir(text)` and `str(graph)` for the text form.
- Semantics: `evaluate(graph, inputs)` runs any graph in float64 from the op definitions.
- Linear operators: `conv_operator(graph, node)` views a Conv / ConvTranspose as a matrix.
- Lowering: `lower(graph, strategy="auto" | "zero-insertion" | "matrix" | "col2im" | "subpixel"
  | "subpixel-fused")`.
- ONNX: `from_onnx(path_or_model)`, `to_onnx(graph, opset=None)`.
"""

from . import ops as _ops  # noqa: F401  (registers every op)
from .api import lower
from .backends.onnx import to_onnx
from .compile import compile
from .errors import (
    InputError,
    LoweringError,
    ModelLoadError,
    ParseError,
    UnsupportedError,
    VerificationError,
)
from .frontends.onnx import from_onnx
from .geometry import ConvGeometry, ConvTransposeGeometry, node_geometry
from .ir import Graph, Node, Value
from .linop import ConvOperator, ConvTransposeOperator, conv_operator
from .reference import evaluate
from .text import parse_ir

__version__ = "0.1.0"

__all__ = [
    "ConvGeometry",
    "ConvOperator",
    "ConvTransposeGeometry",
    "ConvTransposeOperator",
    "Graph",
    "InputError",
    "LoweringError",
    "ModelLoadError",
    "Node",
    "ParseError",
    "UnsupportedError",
    "Value",
    "VerificationError",
    "compile",
    "conv_operator",
    "evaluate",
    "from_onnx",
    "lower",
    "node_geometry",
    "parse_ir",
    "to_onnx",
]

# Names whose modules load on first use (they pull in heavier dependencies).
_LAZY = {
    "adjoint": ("lowering.transposition", "adjoint"),
    "as_operator": ("lowering.transposition", "as_operator"),
    "from_torch": ("lowering.frontends.torch", "from_torch"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'lowering' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
