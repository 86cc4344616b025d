"""Op definitions. Importing this package registers every op the IR knows."""

from .registry import (
    Attr,
    InferContext,
    OpDef,
    TensorType,
    define,
    infer_node,
    lookup,
    normalize_attrs,
    registered_ops,
)

# Registration happens on import; the order is the order of the catalogue.
from . import conv, elementwise, indexing, layout, linalg, pooling, sparse, tensor, windows  # noqa: F401  isort: skip

__all__ = [
    "Attr",
    "InferContext",
    "OpDef",
    "TensorType",
    "define",
    "infer_node",
    "lookup",
    "normalize_attrs",
    "registered_ops",
]
