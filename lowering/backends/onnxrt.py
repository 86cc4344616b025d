"""The `onnx` run-time backend: the graph written as ONNX and run by onnxruntime.

CPU uses CPUExecutionProvider; CUDA uses CUDAExecutionProvider when the installed onnxruntime has
it. Thread counts are fixed by the caller's options so measurements are repeatable.
"""

from __future__ import annotations

import numpy as np

from ..errors import LoweringError, UnsupportedError, first_line
from ..ir import Graph
from .onnx import write_model
from .registry import CompiledGraph, register_backend


def session_options(threads: int | None = None, spinning: bool = False):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:  # a spinning pool starves whatever runs next on a small machine
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 4  # fatal only: its errors reach the user as our one-line message
    return options


def _runtime_refusal(error: Exception, what: str) -> LoweringError:
    """onnxruntime's error as one line: UnsupportedError where it has no kernel for a valid model (a gap
    of the runtime, e.g. float64 Conv or float16 ScatterND), LoweringError otherwise."""
    first = first_line(error)
    missing_kernel = type(error).__name__ == "NotImplemented" or any(
        sign in first for sign in ("NOT_IMPLEMENTED", "data type is not supported")
    )
    return (UnsupportedError if missing_kernel else LoweringError)(f"{what}: {first}")


@register_backend("onnx")
def compile_onnx(
    graph: Graph, device: str = "cpu", *, opset: int | None = None, threads: int | None = None
) -> CompiledGraph:
    import onnxruntime as ort

    model = write_model(graph, opset)  # compile() has checked the graph
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise LoweringError("device 'cuda' needs onnxruntime with CUDAExecutionProvider (onnxruntime-gpu)")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=providers)
    except Exception as error:  # onnxruntime refuses some valid models (e.g. configurations it lacks kernels for)
        raise _runtime_refusal(error, "onnxruntime refused the model") from None
    names = [v.name for v in graph.outputs]
    input_types = {v.name: v.dtype for v in graph.inputs}

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: np.ascontiguousarray(v, dtype=input_types[k]) for k, v in inputs.items()}
        try:
            results = session.run(names, feeds)
        except Exception as error:  # a check of its own at run time (e.g. its output_padding < stride rule)
            raise _runtime_refusal(error, "onnxruntime refused to run the model") from None
        return dict(zip(names, results, strict=True))

    return CompiledGraph(graph, "onnx", device, run, artifacts={"model": model, "session": session})
