"""The `onnx` run-time backend: the graph written as ONNX and run by onnxruntime.

CPU uses CPUExecutionProvider; CUDA uses CUDAExecutionProvider when the installed onnxruntime has
it. Thread counts are fixed by the caller's options so measurements are repeatable.
"""

from __future__ import annotations

import numpy as np

from ..errors import LoweringError
from ..ir import Graph
from .onnx import to_onnx
from .registry import CompiledGraph, register_backend


def session_options(threads: int | None = None, spinning: bool = False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:  # a spinning pool starves whatever runs next on a small machine
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


@register_backend("onnx")
def compile_onnx(
    graph: Graph, device: str = "cpu", *, opset: int | None = None, threads: int | None = None, **_: object
) -> CompiledGraph:
    import onnxruntime as ort

    model = to_onnx(graph, opset=opset)
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise LoweringError("device 'cuda' needs onnxruntime with CUDAExecutionProvider (onnxruntime-gpu)")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=providers)
    except Exception as error:  # onnxruntime refuses some valid models (e.g. configurations it lacks kernels for)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LoweringError(f"onnxruntime refused the model: {first}") from None
    names = [v.name for v in graph.outputs]
    input_types = {v.name: v.dtype for v in graph.inputs}

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: np.ascontiguousarray(v, dtype=input_types[k]) for k, v in inputs.items()}
        return dict(zip(names, session.run(names, feeds), strict=True))

    return CompiledGraph(graph, "onnx", device, run, artifacts={"model": model, "session": session})
