"""Backends: write the IR out to other formats and runtimes.

`onnx` writes ONNX models; `onnxrt`, `numpy_backend` and `torch_backend` compile a graph into a
callable (see `registry.compile_graph`). Backends import their runtime lazily, on first use.
"""

import importlib

_BACKEND_MODULES = ("onnxrt", "numpy_backend", "torch_backend")


def load_backends() -> None:
    """Import every backend module that exists, so each registers itself."""
    for name in _BACKEND_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
