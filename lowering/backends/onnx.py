"""ONNX out: `to_onnx(graph, opset=None) -> onnx.ModelProto`.

Nodes are written in the layout of the target opset by a per-op table of downgrade rules; this
project's own ops (Flip, InteriorPad, Im2Col, Interleave, ...) are expanded into standard ONNX ops first, so every
written model runs in any ONNX runtime. Facts kept from an imported model (producer, metadata,
opset imports of other domains) are written back unchanged.

Opaque nodes (ops the IR has no definition for, carried through from an imported model) are
written as they came: same op, domain, name and raw attributes. They are written at another opset
than their source's only when ONNX's definition of the op is the same at both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, helper, numpy_helper

from .. import dtypes
from ..errors import UnsupportedError
from ..ir import Graph, Node, Value
from ..ops import lookup

DEFAULT_OPSET = 18
MIN_EXPORT_OPSET = 11
MAX_EXPORT_OPSET = onnx.defs.onnx_opset_version()

# Ops (or op forms) that need at least this opset.
MIN_OPSET_FOR = {"Col2Im": 18, "ScatterND": 16}  # ScatterND: its reduction attribute


def _value_info(value: Value) -> onnx.ValueInfoProto:
    if value.dtype is None:
        raise UnsupportedError(
            f"value '{value.name}' has no known element type; ONNX needs one for graph inputs and outputs"
        )
    shape = None if value.shape is None else [d if isinstance(d, (int, str)) else None for d in value.shape]
    return helper.make_tensor_value_info(value.name, dtypes.to_onnx(value.dtype or "float32"), shape)


# ----------------------------------------------------------------- per-op layout for older opsets
# A rule gets (node, input names, attributes, opset, graph) and returns (input names, attributes).

Downgrade = Callable[[Node, list[str], dict[str, Any], int, "_Writer"], tuple[list[str], dict[str, Any]]]


def _split_layout(node, names, attrs, opset, writer):
    if opset < 13 and len(names) > 1 and names[1]:
        attrs["split"] = [int(v) for v in writer.constant_of(node.inputs[1])]
        names = names[:1]
    if opset >= 18 and (len(names) < 2 or not names[1]):
        attrs["num_outputs"] = len(node.outputs)
    elif "num_outputs" in attrs and opset < 18:
        del attrs["num_outputs"]
    return names, attrs


def _pad_layout(node, names, attrs, opset, writer):
    if opset < 18 and len(names) > 3 and names[3]:
        raise UnsupportedError(f"{node.label}: the 'axes' input of Pad needs opset >= 18, target is {opset}")
    if opset < 19 and attrs.get("mode") == "wrap":
        raise UnsupportedError(f"{node.label}: Pad mode 'wrap' needs opset >= 19, target is {opset}")
    return names, attrs


def _reshape_layout(node, names, attrs, opset, writer):
    if opset < 14 and attrs.pop("allowzero", 0):
        raise UnsupportedError(f"{node.label}: Reshape with allowzero=1 needs opset >= 14, target is {opset}")
    return names, attrs


def _batchnorm_layout(node, names, attrs, opset, writer):
    if opset < 14:
        attrs.pop("training_mode", None)
    return names, attrs


DOWNGRADES: dict[str, Downgrade] = {
    "Split": _split_layout,
    "Pad": _pad_layout,
    "Reshape": _reshape_layout,
    "BatchNormalization": _batchnorm_layout,
}


def _plain_attribute(node: Node, key: str, value: Any) -> AttributeProto:
    """An opaque node's attribute given as a plain value (e.g. parsed from the text form)."""
    if isinstance(value, np.ndarray):
        return helper.make_attribute(key, numpy_helper.from_array(value))
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, np.ndarray) for v in value):
        return helper.make_attribute(key, [numpy_helper.from_array(v) for v in value])
    if isinstance(value, (list, tuple)) and not value:
        raise UnsupportedError(f"{node.label}: attribute '{key}' is an empty list whose element type is unknown")
    return helper.make_attribute(key, value)


def _opaque_attribute(node: Node, key: str, value: Any) -> AttributeProto:
    if isinstance(value, AttributeProto):
        copied = AttributeProto()
        copied.CopyFrom(value)
        copied.name = key
        return copied
    return _plain_attribute(node, key, value)


class _Writer:
    def __init__(self, graph: Graph, opset: int) -> None:
        self.graph, self.opset = graph, opset
        self.source_opset: int | None = graph.meta.get("opset")
        outputs = {id(v) for v in graph.outputs}
        self.omitted = {
            name
            for name in graph.meta.get("omitted_outputs", [])
            if graph.has_value(name) and not graph.value(name).uses and id(graph.value(name)) not in outputs
        }

    def check_opaque_opset(self, node: Node) -> None:
        """An opaque default-domain op keeps its source layout: refuse an opset where its definition differs."""
        source = self.source_opset
        if node.domain or source is None or source == self.opset:
            return
        try:
            before = onnx.defs.get_schema(node.op, source, "").since_version
            after = onnx.defs.get_schema(node.op, self.opset, "").since_version
        except onnx.defs.SchemaError:
            before, after = None, -1
        if before != after:
            raise UnsupportedError(
                f"{node.label}: op {node.op} is carried through unchanged from opset {source} and ONNX defines it "
                f"differently at opset {self.opset}; write the model at opset {source}"
            )

    def opaque(self, node: Node, names: list[str]) -> onnx.NodeProto:
        self.check_opaque_opset(node)
        proto = helper.make_node(
            node.op,
            names,
            ["" if v.name in self.omitted else v.name for v in node.outputs],
            name=node.name or None,
            domain=node.domain or None,
        )
        proto.attribute.extend(_opaque_attribute(node, key, value) for key, value in node.attrs.items())
        return proto

    def constant_of(self, value: Value | None) -> np.ndarray:
        data = self.graph.constant_value(value)
        if data is None:
            raise UnsupportedError(f"value '{value.name if value else '?'}' must be a constant for opset {self.opset}")
        return data

    def node(self, node: Node) -> onnx.NodeProto:
        opdef = lookup(node.op)
        names = ["" if v is None else v.name for v in node.inputs]
        while names and not names[-1]:
            names.pop()
        if opdef is None:
            return self.opaque(node, names)
        attrs = dict(node.attrs)
        needed = MIN_OPSET_FOR.get(node.op, 0)
        if self.opset < needed:
            raise UnsupportedError(
                f"{node.label}: needs ONNX opset >= {needed}, the target is {self.opset} "
                f"(write opset {needed} or later, e.g. --opset {needed}, or lower with another strategy)"
            )
        if node.op in DOWNGRADES:
            names, attrs = DOWNGRADES[node.op](node, names, attrs, self.opset, self)
        onnx_attrs = {}
        for key, value in attrs.items():
            kind = opdef.attrs[key].kind if opdef is not None and key in opdef.attrs else None
            onnx_attrs[key] = numpy_helper.from_array(np.asarray(value)) if kind == "tensor" else value
        return helper.make_node(
            node.op,
            names,
            [v.name for v in node.outputs],
            name=node.name or None,
            domain=node.domain or None,
            **onnx_attrs,
        )


def target_opset(graph: Graph, opset: int | None = None) -> int:
    """The opset `to_onnx` writes `graph` at: `opset`, else the source model's (at least 11), else 18."""
    target = opset if opset is not None else max(graph.meta.get("opset", DEFAULT_OPSET), MIN_EXPORT_OPSET)
    if target < MIN_EXPORT_OPSET:
        raise UnsupportedError(f"ONNX opset {target} is below {MIN_EXPORT_OPSET}, the lowest this exporter writes")
    if target > MAX_EXPORT_OPSET:
        raise UnsupportedError(f"ONNX opset {target} is above {MAX_EXPORT_OPSET}, the highest the installed onnx knows")
    return target


def _write_initializer(graph: onnx.GraphProto, name: str, array: np.ndarray) -> None:
    """Append `array` to the graph's initializers as raw little-endian bytes, built in place: handing
    make_graph and make_model finished TensorProtos copied every weight twice more (a quarter of the
    lowering + export time of DCGAN). Strings go through numpy_helper."""
    if array.dtype.kind in "OSU":
        graph.initializer.append(numpy_helper.from_array(array, name))
        return
    tensor = graph.initializer.add()
    tensor.name = name
    tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype.newbyteorder("="))
    tensor.dims.extend(array.shape)
    tensor.raw_data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def to_onnx(graph: Graph, opset: int | None = None) -> onnx.ModelProto:
    """Write `graph` as an ONNX model at `opset` (default: the source model's opset, else 18)."""
    from ..verify import check_runnable

    check_runnable(graph)
    return write_model(graph, opset)


def write_model(graph: Graph, opset: int | None = None) -> onnx.ModelProto:
    """`to_onnx` for a graph already checked (`lowering.compile` checks before any backend runs)."""
    from .onnx_legalize import legalize_for_onnx

    target = target_opset(graph, opset)
    graph = legalize_for_onnx(graph, target)
    writer = _Writer(graph, target)
    meta = graph.meta
    listed = [graph.initializers[n] for n in meta.get("initializer_inputs", []) if n in graph.initializers]
    inputs = [_value_info(v) for v in graph.inputs] + [_value_info(v) for v in listed]
    outputs = [_value_info(v) for v in graph.outputs]
    output_ids = {id(v) for v in graph.outputs}
    value_info = [
        _value_info(v)
        for node in graph.nodes
        for v in node.outputs
        if id(v) not in output_ids and v.dtype is not None and v.name not in writer.omitted
    ]
    nodes = [writer.node(n) for n in graph.nodes]
    # a constant that a downgrade turned into an attribute (Split's sizes below opset 13) is read by no
    # written node any more; runtimes warn about such initializers, so it is left out
    read = {name for n in nodes for name in n.input} | {v.name for v in (*graph.outputs, *listed)}
    onnx_graph = helper.make_graph(
        nodes, graph.name, inputs, outputs, value_info=value_info, doc_string=meta.get("graph_doc_string") or None
    )
    imports = {d: v for d, v in meta.get("opset_imports", {}).items() if d not in ("", "ai.onnx")}
    for node in graph.nodes:  # an opaque op of a domain the graph never imported (e.g. built from text)
        if node.domain and node.opdef is None:
            imports.setdefault(node.domain, 1)
    imports[""] = target
    opset_imports = [helper.make_opsetid(d, v) for d, v in sorted(imports.items())]
    model = helper.make_model(
        onnx_graph,
        opset_imports=opset_imports,
        producer_name=meta.get("producer_name") or "lowering",
        producer_version=meta.get("producer_version") or "",
    )
    model.ir_version = max(
        meta.get("ir_version", 0) if opset is None else 0,
        helper.find_min_ir_version_for(opset_imports, ignore_unknown=True),
    )
    for v in graph.initializers.values():  # written into the model in place: weights are most of its bytes
        if v.name in read or not v.uses:
            _write_initializer(model.graph, v.name, np.asarray(v.const))
    if meta.get("model_domain"):
        model.domain = meta["model_domain"]
    if meta.get("model_version"):
        model.model_version = meta["model_version"]
    if meta.get("doc_string"):
        model.doc_string = meta["doc_string"]
    for key, value in meta.get("metadata_props", {}).items():
        model.metadata_props.add(key=key, value=value)
    return model
