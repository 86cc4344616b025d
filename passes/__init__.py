"""Passes over the lowering IR: infrastructure, supporting passes and the ConvTranspose lowerings.

Importing this package registers every built-in pass; `PASSES` maps names to pass classes and
`STRATEGIES` the ConvTranspose lowerings among them.
"""

from .base import PASSES, Pass, PassManager, PassResult, get_pass, parse_pipeline, register_pass
from .strategy import STRATEGIES, Cost, Declined, LoweringStrategy, register_strategy

# Registration happens on import.
from . import canonicalize, dce, fold_batchnorm, fold_constants  # noqa: F401  isort: skip
from . import zero_insertion, matrix, col2im, subpixel, auto, adjoint  # noqa: F401  isort: skip

__all__ = [
    "PASSES",
    "STRATEGIES",
    "Cost",
    "Declined",
    "LoweringStrategy",
    "Pass",
    "PassManager",
    "PassResult",
    "get_pass",
    "parse_pipeline",
    "register_pass",
    "register_strategy",
]
