"""ONNX in: `from_onnx(path_or_model) -> Graph`.

Old-opset encodings (attributes that later became inputs) are rewritten to the current layout on
the way in, by a per-op table, so the rest of the project sees one form of every op. What the IR
does not model (producer, opset imports, metadata, value_info names) is kept in `graph.meta` and
written back by `to_onnx`.

Whole models come in whole: a node whose op the IR has no definition for (Softmax, Resize, an op
of another domain, ...) becomes an *opaque* node. It keeps its raw `onnx.AttributeProto`s in
`node.attrs` (written back verbatim by `to_onnx`), and its output types come from ONNX shape
inference or the model's value_info. Passes leave opaque nodes alone, the ONNX backend writes them
unchanged, and the NumPy and PyTorch backends refuse them by op and node name.
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
from ..errors import LoweringError, ModelLoadError, UnsupportedError, first_line
from ..ir import Graph, Value
from ..ops import lookup

MIN_OPSET = 7
MAX_OPSET = onnx.defs.onnx_opset_version()


def load_model(source: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """Read and check an ONNX model; every failure is one ModelLoadError line."""
    if isinstance(source, onnx.ModelProto):
        model = source
        label = "model"
    elif not isinstance(source, (str, os.PathLike)):
        raise ModelLoadError(f"expected a path or an onnx.ModelProto, got {type(source).__name__}")
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
        except onnx.checker.ValidationError as error:  # the protobuf parsed; its external data did not load
            first = first_line(error)
            raise ModelLoadError(f"cannot read {label}: {first}") from None
        except Exception as error:  # protobuf raises several unrelated types
            raise ModelLoadError(f"cannot read {label}: not a valid ONNX protobuf ({type(error).__name__})") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.input and not model.graph.output):
        raise ModelLoadError(f"{label} is not an ONNX model: it has no graph")
    try:
        onnx.checker.check_model(model)
    except Exception as error:
        first = first_line(error)
        raise ModelLoadError(f"{label} fails the ONNX checker: {first}") from None
    _check_names_are_text(model, label)
    return model


def _check_names_are_text(model: onnx.ModelProto, label: str) -> None:
    """protobuf hands back a string field that is not valid UTF-8 as bytes, and the checker lets it
    through; any of them (a name, the graph's name, a doc string, metadata) would fail later, when
    the model is written again."""
    found = _invalid_text(model, "")
    if found is not None:
        where, text = found
        raise ModelLoadError(f"{label}: {where} {text!r} is not valid UTF-8")


def _invalid_text(message: Any, path: str) -> tuple[str, bytes] | None:
    """(field path, value) of the first string field of `message` or its sub-messages that is bytes."""
    for field, value in message.ListFields():
        if field.type not in (field.TYPE_MESSAGE, field.TYPE_STRING):
            continue  # numbers and bytes (a tensor's data) hold no text
        where = f"{path}.{field.name}" if path else field.name
        items = list(enumerate(value)) if _is_repeated(field) else [(None, value)]
        for index, item in items:
            at = where if index is None else f"{where}[{index}]"
            if field.type == field.TYPE_MESSAGE:
                found = _invalid_text(item, at)
                if found is not None:
                    return found
            elif field.type == field.TYPE_STRING and isinstance(item, bytes):
                return at, item
    return None


def _is_repeated(field: Any) -> bool:
    """Whether a protobuf field is repeated (`is_repeated` from protobuf 5.29; `label` before it)."""
    repeated = getattr(field, "is_repeated", None)
    return bool(repeated) if repeated is not None else field.label == field.LABEL_REPEATED


def _opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 1


def _shape(
    type_proto: onnx.TypeProto, anonymous: Callable[[], str | None] = lambda: None, what: str = "value"
) -> tuple[tuple[int | str, ...] | None, str]:
    """Shape and element type; a dim with neither value nor name gets the name `anonymous()` gives.
    `what` names the value in a refusal ("graph input 'x'")."""
    if not type_proto.HasField("tensor_type"):
        kind = type_proto.WhichOneof("value")
        raise UnsupportedError(f"{what}: only tensor inputs and outputs are supported, got {kind}")
    tensor = type_proto.tensor_type
    try:
        dtype = dtypes.from_onnx(tensor.elem_type)
    except UnsupportedError as error:
        raise UnsupportedError(f"{what}: {error}") from None
    if not tensor.HasField("shape"):
        return None, dtype
    dims: list[int | str] = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
        else:
            dims.append(dim.dim_param or anonymous())  # type: ignore[arg-type]
    return tuple(dims), dtype


class _AnonymousDims:
    """Distinct names for unnamed dims: two unknown sizes must not be bound to each other.

    Called, it gives a fresh name; `fresh` lists the names given, which a graph output's declared
    dims may later replace (see `_name_anonymous_dims`).
    """

    def __init__(self, onnx_graph: onnx.GraphProto) -> None:
        infos = (*onnx_graph.input, *onnx_graph.output, *onnx_graph.value_info)
        self.taken = {d.dim_param for v in infos for d in v.type.tensor_type.shape.dim if d.dim_param}
        self.fresh: set[str] = set()
        self._counter = itertools.count()

    def __call__(self) -> str:
        while True:
            name = f"unk__{next(self._counter)}"
            if name not in self.taken:
                self.taken.add(name)
                self.fresh.add(name)
                return name


def _name_anonymous_dims(graph: Graph, declared: dict[str, tuple[int | str | None, ...]], fresh: set[str]) -> None:
    """Where a graph output's dim is one this module had to name (an opaque op's output that ONNX
    inference could not size) and the model declares it, use the declared size or name everywhere
    that dim occurs. Each fresh name stands for one unknown size, so the renaming stays consistent."""
    rename: dict[str, int | str] = {}
    conflicting: set[str] = set()
    for value in graph.outputs:
        want = declared.get(value.name)
        if value.shape is None or want is None or len(want) != len(value.shape):
            continue
        for have, new in zip(value.shape, want, strict=True):
            anonymous = isinstance(have, str) and have in fresh and new is not None and new != have
            if anonymous and rename.setdefault(have, new) != new:  # type: ignore[arg-type]
                conflicting.add(have)  # type: ignore[arg-type]
    for name in conflicting:
        del rename[name]
    if not rename:
        return
    for value in graph.values():
        if value.shape is not None and any(isinstance(d, str) and d in rename for d in value.shape):
            value.shape = tuple(rename.get(d, d) if isinstance(d, str) else d for d in value.shape)


def tensor_array(tensor: onnx.TensorProto, what: str) -> np.ndarray:
    """The array a stored tensor holds. The ONNX checker does not compare a tensor's data with its
    element type and shape, so a mismatch (or an unknown element type) surfaces here, as one line."""
    try:
        return numpy_helper.to_array(tensor)
    except KeyError:  # onnx's table of element types has no such entry
        raise ModelLoadError(f"{what} has an unknown element type ({tensor.data_type})") from None
    except (ValueError, TypeError) as error:
        first = first_line(error)
        raise ModelLoadError(f"{what}: its data does not fit its shape {list(tensor.dims)} ({first})") from None


def attribute_value(attr: AttributeProto) -> Any:
    """The plain Python value of an ONNX attribute (how the text form prints an opaque node's attribute)."""
    if attr.type == AttributeProto.TENSOR:
        return tensor_array(attr.t, f"attribute '{attr.name}'")
    if attr.type == AttributeProto.TENSORS:
        return [tensor_array(t, f"attribute '{attr.name}'") for t in attr.tensors]
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value


SUBGRAPH_ATTRIBUTES = (AttributeProto.GRAPH, AttributeProto.GRAPHS)


def _opaque_attribute(attr: AttributeProto) -> AttributeProto:
    if attr.type in SUBGRAPH_ATTRIBUTES:
        # a subgraph may read values of the enclosing graph by name, which passes cannot see
        raise UnsupportedError(
            f"attribute '{attr.name}' holds a subgraph; control flow (If, Loop, Scan) is not supported"
        )
    copied = AttributeProto()
    copied.CopyFrom(attr)
    return copied


def _attribute(attr: AttributeProto) -> Any:
    if attr.type == AttributeProto.TENSOR:
        return tensor_array(attr.t, f"attribute '{attr.name}'")
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


class _InferredTypes:
    """Types of intermediate values, for the outputs of opaque nodes: ONNX shape inference first
    (run once, on the first opaque node), then the model's own value_info and graph outputs."""

    def __init__(self, model: onnx.ModelProto, anonymous: _AnonymousDims) -> None:
        self.model, self.anonymous = model, anonymous
        self.types: dict[str, onnx.TypeProto] | None = None

    def _collect(self) -> dict[str, onnx.TypeProto]:
        declared = [*self.model.graph.value_info, *self.model.graph.output]
        try:
            inferred = list(onnx.shape_inference.infer_shapes(self.model, data_prop=True).graph.value_info)
        except Exception:  # inference refuses some models (e.g. above 2 GiB, unknown domains): fall back
            inferred = []
        for info in inferred:  # names ONNX inference made up for unknown dims are anonymous too
            for dim in info.type.tensor_type.shape.dim:
                if dim.dim_param and dim.dim_param not in self.anonymous.taken:
                    self.anonymous.taken.add(dim.dim_param)
                    self.anonymous.fresh.add(dim.dim_param)
        types: dict[str, onnx.TypeProto] = {}
        for info in (*declared, *inferred):  # inference refines what the model declares
            if info.type.WhichOneof("value") is not None:
                types[info.name] = info.type
        return types

    def __call__(self, name: str, label: str) -> tuple[tuple[int | str, ...] | None, str | None]:
        if self.types is None:
            self.types = self._collect()
        type_proto = self.types.get(name)
        if type_proto is None:
            return None, None
        return _shape(type_proto, self.anonymous, f"{label}: output '{name}'")


def _default_domain(domain: str) -> str:
    return "" if domain == "ai.onnx" else domain


def _node_kind(proto: onnx.NodeProto, label: str) -> str:
    """'known' (an op of the registry, in its domain) or 'opaque'; an op that shadows one is refused."""
    domain = _default_domain(proto.domain)
    opdef = lookup(proto.op_type)
    if opdef is None:
        return "opaque"
    if opdef.domain == domain:
        return "known"
    # ops are looked up by name alone, so a foreign op may not borrow the name of a defined one
    raise UnsupportedError(
        f"{label}: op '{domain + '::' if domain else ''}{proto.op_type}' is not supported "
        f"(its name is that of the {'ONNX' if not opdef.domain else opdef.domain} op {proto.op_type})"
    )


def _output_names(graph: Graph, proto: onnx.NodeProto) -> tuple[list[str], list[str]]:
    """Output names with trailing omitted outputs dropped; an omitted output before a present one gets
    a fresh name, listed second so the writer can omit it again."""
    outputs = list(proto.output)
    while outputs and not outputs[-1]:
        outputs.pop()
    omitted = []
    for index, name in enumerate(outputs):
        if not name:
            outputs[index] = graph.fresh_name(f"{proto.name or proto.op_type.lower()}_omitted_{index}")
            omitted.append(outputs[index])
    return outputs, omitted


def _check_declared_output(value: Value, declared: tuple, declared_dtype: str | None) -> None:
    """A graph output's declared type must agree with what its node computes (symbolic and unknown
    dimensions agree with anything): ONNX calls such a model invalid, and a silent override would
    hand the user a shape they did not ask for."""
    what = f"graph output '{value.name}'"
    if declared_dtype is not None and value.dtype is not None and declared_dtype != value.dtype:
        raise ModelLoadError(f"{what} is declared {declared_dtype} but its node computes {value.dtype}")
    if len(declared) != len(value.shape):
        raise ModelLoadError(
            f"{what} is declared with rank {len(declared)} but its node computes rank {len(value.shape)}"
        )
    for axis, (want, got) in enumerate(zip(declared, value.shape, strict=True)):
        if isinstance(want, int) and isinstance(got, int) and want != got:
            computes = f"its node computes {list(value.shape)}"
            raise ModelLoadError(f"{what} is declared {list(declared)} but {computes} (axis {axis}: {want} vs {got})")


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
        graph.add_initializer(tensor.name, tensor_array(tensor, f"initializer '{tensor.name}'"))
    listed_initializers = []
    anonymous = _AnonymousDims(onnx_graph)
    for proto in onnx_graph.input:
        if proto.name in initializer_names:
            listed_initializers.append(proto.name)  # old exporters list weights as inputs too
            continue
        shape, dtype = _shape(proto.type, anonymous, f"graph input '{proto.name}'")
        graph.add_input(proto.name, shape, dtype)
    if listed_initializers:
        graph.meta["initializer_inputs"] = listed_initializers

    inferred_types = _InferredTypes(model, anonymous)
    omitted_outputs: list[str] = []
    for index, proto in enumerate(onnx_graph.node):
        label = f"{proto.op_type} '{proto.name}'" if proto.name else f"{proto.op_type} (node {index})"
        known = _node_kind(proto, label) == "known"
        try:
            if known:
                attrs = {a.name: _attribute(a) for a in proto.attribute}
            else:
                attrs = {a.name: _opaque_attribute(a) for a in proto.attribute}
        except (UnsupportedError, ModelLoadError) as error:
            raise type(error)(f"{label}: {error}") from None
        inputs: list[Value | None] = []
        for name in proto.input:
            if not name:
                inputs.append(None)
            elif not graph.has_value(name):
                raise ModelLoadError(f"{label}: input '{name}' is not defined before it is used")
            else:
                inputs.append(graph.value(name))
        if not known:
            outputs, omitted = _output_names(graph, proto)
            omitted_outputs += omitted
            types = [inferred_types(name, label) for name in outputs]
            graph.add_node(
                proto.op_type,
                inputs,
                attrs,
                outputs=outputs,
                name=proto.name,
                domain=_default_domain(proto.domain),
                output_types=types,
            )
            continue
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

    declared_outputs: dict[str, tuple[int | str | None, ...]] = {}
    for proto in onnx_graph.output:
        if not graph.has_value(proto.name):
            raise ModelLoadError(f"graph output '{proto.name}' is not produced by any node")
        value = graph.value(proto.name)
        declared, declared_dtype = _shape(proto.type, what=f"graph output '{proto.name}'")
        if value.dtype is None:  # an opaque node's output that inference could not type
            value.dtype = declared_dtype
        if value.shape is None:
            value.shape = _shape(proto.type, anonymous)[0]
        elif declared is not None:
            _check_declared_output(value, declared, declared_dtype)
            declared_outputs[value.name] = declared
        graph.outputs.append(value)
    _name_anonymous_dims(graph, declared_outputs, anonymous.fresh)
    graph.meta["value_info"] = [vi.name for vi in onnx_graph.value_info]
    if omitted_outputs:
        graph.meta["omitted_outputs"] = omitted_outputs
    return graph
