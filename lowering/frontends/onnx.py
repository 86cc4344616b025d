"""ONNX in: `from_onnx(path_or_model) -> Graph`.

Old-opset encodings (attributes that later became inputs) are rewritten to the current layout on
the way in, by a per-op table, so the rest of the project sees one form of every op. What the IR
does not model (producer, opset imports, metadata, value_info names) is kept in `graph.meta` and
written back by `to_onnx`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, numpy_helper

from .. import dtypes
from ..errors import LoweringError, ModelLoadError, UnsupportedError
from ..ir import Graph, Value
from ..ops import lookup

MIN_OPSET = 7
MAX_OPSET = onnx.defs.onnx_opset_version()


def load_model(source: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """Read and check an ONNX model; every failure is one ModelLoadError line."""
    if isinstance(source, onnx.ModelProto):
        model = source
        label = "model"
    else:
        path = Path(source)
        label = f"'{path}'"
        if not path.exists():
            raise ModelLoadError(f"cannot read {label}: no such file")
        if path.is_dir():
            raise ModelLoadError(f"cannot read {label}: it is a directory, not an ONNX file")
        if path.stat().st_size == 0:
            raise ModelLoadError(f"cannot read {label}: the file is empty")
        try:
            model = onnx.load(str(path))
        except Exception as error:  # protobuf raises several unrelated types
            raise ModelLoadError(f"cannot read {label}: not a valid ONNX protobuf ({type(error).__name__})") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.input and not model.graph.output):
        raise ModelLoadError(f"{label} is not an ONNX model: it has no graph")
    try:
        onnx.checker.check_model(model)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"{label} fails the ONNX checker: {first}") from None
    return model


def _opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 1


def _shape(
    type_proto: onnx.TypeProto, anonymous: Callable[[], str | None] = lambda: None
) -> tuple[tuple[int | str, ...] | None, str]:
    """Shape and element type; a dim with neither value nor name gets the name `anonymous()` gives."""
    if not type_proto.HasField("tensor_type"):
        raise UnsupportedError(f"only tensor inputs and outputs are supported, got {type_proto.WhichOneof('value')}")
    tensor = type_proto.tensor_type
    dtype = dtypes.from_onnx(tensor.elem_type)
    if not tensor.HasField("shape"):
        return None, dtype
    dims: list[int | str] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
        else:
            dims.append(dim.dim_param or anonymous())  # type: ignore[arg-type]
    return tuple(dims), dtype


def _anonymous_dims(onnx_graph: onnx.GraphProto) -> Callable[[], str]:
    """Distinct names for unnamed input dims: two unknown sizes must not be bound to each other."""
    taken = {d.dim_param for v in onnx_graph.input for d in v.type.tensor_type.shape.dim if d.dim_param}
    names = (f"unk__{k}" for k in itertools.count() if f"unk__{k}" not in taken)
    return lambda: next(names)


def _attribute(attr: AttributeProto) -> Any:
    if attr.type == AttributeProto.TENSOR:
        return numpy_helper.to_array(attr.t)
    if attr.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS, AttributeProto.SPARSE_TENSOR):
        raise UnsupportedError(f"attribute '{attr.name}' of type {AttributeProto.AttributeType.Name(attr.type)}")
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value


# ----------------------------------------------------------------- old-opset layouts -> current layout
# Each rule takes (graph, inputs, attrs, opset) and returns the inputs and attributes in the
# current layout. Attributes that moved to inputs become constants.

Upgrade = Callable[[Graph, list[Value | None], dict[str, Any], int], tuple[list[Value | None], dict[str, Any]]]


def _attr_to_input(graph: Graph, attrs: dict[str, Any], name: str, dtype: str) -> Value | None:
    if name not in attrs:
        return None
    return graph.const(np.asarray(attrs.pop(name), dtype=dtype), hint=name)


def _pad_v2(graph, inputs, attrs, opset):
    pads = _attr_to_input(graph, attrs, "pads", "int64")
    value = attrs.pop("value", 0.0)
    fill = graph.const(np.asarray(value, dtype=inputs[0].dtype), hint="pad_value")
    return [inputs[0], pads, fill], attrs


def _slice_v1(graph, inputs, attrs, opset):
    starts = _attr_to_input(graph, attrs, "starts", "int64")
    ends = _attr_to_input(graph, attrs, "ends", "int64")
    axes = _attr_to_input(graph, attrs, "axes", "int64")
    return [inputs[0], starts, ends, axes], attrs


def _clip_v6(graph, inputs, attrs, opset):
    lo = _attr_to_input(graph, attrs, "min", inputs[0].dtype)
    hi = _attr_to_input(graph, attrs, "max", inputs[0].dtype)
    return [inputs[0], lo, hi], attrs


def _split_v2(graph, inputs, attrs, opset):
    sizes = _attr_to_input(graph, attrs, "split", "int64")
    return [inputs[0], sizes], attrs


def _batchnorm_v7(graph, inputs, attrs, opset):
    if attrs.pop("spatial", 1) != 1:
        raise UnsupportedError("BatchNormalization with spatial=0 (per-element statistics) is not supported")
    attrs.pop("is_test", None)
    attrs.pop("consumed_inputs", None)
    return inputs, attrs


UPGRADES: dict[str, tuple[int, Upgrade]] = {
    # op: (first opset of the current layout, rule for older models)
    "Pad": (11, _pad_v2),
    "Slice": (10, _slice_v1),
    "Clip": (11, _clip_v6),
    "Split": (13, _split_v2),
    "BatchNormalization": (9, _batchnorm_v7),
}


def from_onnx(source: str | os.PathLike | onnx.ModelProto) -> Graph:
    """Build a Graph from an ONNX model file or ModelProto (checked, shapes inferred and verified)."""
    model = load_model(source)
    opset = _opset(model)
    if opset < MIN_OPSET or opset > MAX_OPSET:
        raise UnsupportedError(f"ONNX opset {opset} is not supported (supported: {MIN_OPSET} to {MAX_OPSET})")
    onnx_graph = model.graph
    graph = Graph(onnx_graph.name or "main")
    graph.meta.update(
        opset=opset,
        ir_version=model.ir_version,
        opset_imports={e.domain: e.version for e in model.opset_import},
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        model_domain=model.domain,
        model_version=model.model_version,
        doc_string=model.doc_string,
        graph_doc_string=onnx_graph.doc_string,
        metadata_props={p.key: p.value for p in model.metadata_props},
    )
    initializer_names = {t.name for t in onnx_graph.initializer}
    for tensor in onnx_graph.initializer:
        graph.add_initializer(tensor.name, numpy_helper.to_array(tensor))
    listed_initializers = []
    anonymous = _anonymous_dims(onnx_graph)
    for proto in onnx_graph.input:
        if proto.name in initializer_names:
            listed_initializers.append(proto.name)  # old exporters list weights as inputs too
            continue
        shape, dtype = _shape(proto.type, anonymous)
        graph.add_input(proto.name, shape, dtype)
    if listed_initializers:
        graph.meta["initializer_inputs"] = listed_initializers

    for index, proto in enumerate(onnx_graph.node):
        label = f"{proto.op_type} '{proto.name}'" if proto.name else f"{proto.op_type} (node {index})"
        if proto.domain not in ("", "ai.onnx") or lookup(proto.op_type) is None or lookup(proto.op_type).domain:
            raise UnsupportedError(
                f"{label}: op '{proto.domain + '::' if proto.domain else ''}{proto.op_type}' is not supported"
            )
        try:
            attrs = {a.name: _attribute(a) for a in proto.attribute}
        except UnsupportedError as error:
            raise UnsupportedError(f"{label}: {error}") from None
        inputs: list[Value | None] = []
        for name in proto.input:
            if not name:
                inputs.append(None)
            elif not graph.has_value(name):
                raise ModelLoadError(f"{label}: input '{name}' is not defined before it is used")
            else:
                inputs.append(graph.value(name))
        first_current, upgrade = UPGRADES.get(proto.op_type, (0, None))
        if upgrade is not None and opset < first_current:
            inputs, attrs = upgrade(graph, inputs, attrs, opset)
        outputs = list(proto.output)
        while outputs and not outputs[-1]:
            outputs.pop()
        if proto.op_type == "BatchNormalization" and len(outputs) > 1:
            raise UnsupportedError(f"{label}: training-mode outputs (running mean and variance) are not supported")
        try:
            graph.add_node(proto.op_type, inputs, attrs, outputs=outputs, name=proto.name)
        except LoweringError as error:
            message = str(error)
            raise type(error)(message if proto.name or message.startswith(label) else f"{label}: {message}") from None

    for proto in onnx_graph.output:
        if not graph.has_value(proto.name):
            raise ModelLoadError(f"graph output '{proto.name}' is not produced by any node")
        value = graph.value(proto.name)
        declared, _ = _shape(proto.type)
        if declared is not None and value.shape is not None and len(declared) == len(value.shape):
            # keep the exporter's symbolic names where inference only knows "some size"
            value.shape = tuple(
                d if isinstance(v, str) and isinstance(d, str) else v
                for d, v in zip(declared, value.shape, strict=True)
            )
        graph.outputs.append(value)
    graph.meta["value_info"] = [vi.name for vi in onnx_graph.value_info]
    return graph
