"""`lowering.compile(graph, backend=..., device=...)`: a graph as a callable on NumPy arrays."""

from __future__ import annotations

from typing import Any

from .backends.registry import CompiledGraph, compile_graph
from .ir import Graph


def compile(graph: Graph, backend: str = "numpy", device: str = "cpu", **options: Any) -> CompiledGraph:
    """Compile `graph` for `backend` ("numpy", "torch", "onnx") on `device` ("cpu", "cuda").

    The result is called as `fn({input_name: array, ...}) -> {output_name: array, ...}`; inputs are
    checked by name, shape and dtype first, with one clear line for any mismatch.
    """
    return compile_graph(graph, backend, device, **options)
