"""The backend registry: name -> a function that compiles a Graph into a runnable callable.

Each backend module registers itself with `@register_backend("name")`. A compiled graph takes
and returns NumPy arrays keyed by the graph's input and output names, whatever runs underneath.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import LoweringError
from ..ir import Graph

DEVICES = ("cpu", "cuda")


@dataclass
class CompiledGraph:
    """A graph ready to run: `fn(inputs) -> outputs`, both dicts of NumPy arrays by name."""

    graph: Graph
    backend: str
    device: str
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    source: str | None = None  # generated code, for backends that generate code
    artifacts: dict[str, Any] = field(default_factory=dict)  # e.g. the fx GraphModule, the ONNX model

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..reference import check_inputs

        return self.run(check_inputs(self.graph, inputs))


Compiler = Callable[..., CompiledGraph]
BACKENDS: dict[str, Compiler] = {}


def register_backend(name: str) -> Callable[[Compiler], Compiler]:
    def register(fn: Compiler) -> Compiler:
        BACKENDS[name] = fn
        return fn

    return register


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # torch missing or broken: no CUDA for us
        return False


def compile_graph(graph: Graph, backend: str = "numpy", device: str = "cpu", **options: Any) -> CompiledGraph:
    """Compile `graph` for `backend` ("numpy", "torch" or "onnx") on `device` ("cpu" or "cuda")."""
    from ..verify import check_runnable
    from . import load_backends

    check_runnable(graph)
    load_backends()
    if backend not in BACKENDS:
        raise LoweringError(f"unknown backend '{backend}' (known: {', '.join(sorted(BACKENDS))})")
    if device not in DEVICES:
        raise LoweringError(f"unknown device '{device}' (known: {', '.join(DEVICES)})")
    if device == "cuda" and not cuda_available():
        raise LoweringError("device 'cuda' was asked for but no CUDA device is available")
    compiler = BACKENDS[backend]
    parameters = inspect.signature(compiler).parameters
    known = [name for name, p in parameters.items() if name not in ("graph", "device") and p.kind != p.VAR_KEYWORD]
    takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters.values())  # a plugin backend may
    unknown = [] if takes_any else sorted(set(options) - set(known))
    if unknown:
        raise LoweringError(
            f"backend '{backend}' has no option {', '.join(unknown)} (options: {', '.join(known) or 'none'})"
        )
    return compiler(graph, device, **options)


def source_text(name: str) -> str:
    """A graph or node name as it may appear in generated source (a docstring or comment): quoted,
    with control characters, non-ASCII, backslashes and double quotes escaped, so no name can end the
    docstring or put a NUL or a line break into the code."""
    return ascii(name).replace('"', "\\x22")
