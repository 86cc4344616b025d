"""Shared helpers for the ONNX, text-form and CLI tests: independent oracles and model builders.

Nothing here calls the code under test; these are the references the tests hold it to: ONNX's
own recorded node test cases, onnxruntime running a model, and small ONNX models built by hand
with `onnx.helper`.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def onnx_node_cases(module: str) -> list[Any]:
    """ONNX's own node test cases of `onnx.backend.test.case.node.<module>`, each a TestCase with
    `.model` and `.data_sets = [(inputs, expected outputs)]`.

    The cases are recorded by calling the module's `export*` functions, exactly as ONNX generates
    its backend test data. `collect_testcases` keeps module-level state (a filter on one op type,
    names already used) that another caller may have set, so the export functions run here against
    a fresh copy of that state, which is put back afterwards.
    """
    import onnx.backend.test.case.node as registry
    from onnx.backend.test.case.base import Base

    mod = importlib.import_module(f"onnx.backend.test.case.node.{module}")
    saved = (registry._TargetOpType, registry._existing_names, registry._NodeTestCases)
    registry._TargetOpType, registry._existing_names, registry._NodeTestCases = None, {}, []
    try:
        for cls in vars(mod).values():
            if isinstance(cls, type) and issubclass(cls, Base) and cls.__module__ == mod.__name__:
                for key in sorted(vars(cls)):
                    if key.startswith("export"):
                        np.random.seed(0)  # what ONNX's exporter metaclass does before every export
                        getattr(cls, key)()
        return list(registry._NodeTestCases)
    finally:
        registry._TargetOpType, registry._existing_names, registry._NodeTestCases = saved


def ort_run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run `model` in onnxruntime (CPU); outputs by name."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # keep onnxruntime's warnings about old-style models out of the log
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds)), strict=True))


def tensor_info(name: str, shape: Sequence[int | str | None] | None, elem: int = TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    *,
    opset: int = 17,
    initializers: Mapping[str, np.ndarray] | None = None,
    ir_version: int | None = None,
    name: str = "g",
    **model_kwargs: Any,
) -> onnx.ModelProto:
    """A one-graph ONNX model at `opset` (default domain only), at the lowest IR version for that opset
    unless `ir_version` says otherwise. Below IR version 4 every initializer must also be a graph
    input, as old exporters wrote them; such inputs are added when `inputs` does not list them.
    """
    opsets = [helper.make_opsetid("", opset)]
    ir_version = ir_version if ir_version is not None else helper.find_min_ir_version_for(opsets)
    tensors = [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()]
    inputs = list(inputs)
    if ir_version < 4:
        listed = {v.name for v in inputs}
        inputs += [tensor_info(t.name, list(t.dims), t.data_type) for t in tensors if t.name not in listed]
    graph = helper.make_graph(list(nodes), name, inputs, list(outputs), initializer=tensors)
    model = helper.make_model(graph, opset_imports=opsets, **model_kwargs)
    model.ir_version = ir_version
    return model


def run_cli(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m lowering ARGS` in a subprocess, as a user would type it."""
    return subprocess.run(
        [sys.executable, "-m", "lowering", *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


def one_line(message: str) -> bool:
    return bool(message.strip()) and "\n" not in message.strip()
