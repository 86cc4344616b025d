"""The op registry: each op's attribute schema, shape inference (which is also its verification)
and float64 reference semantics, declared side by side.

Ops register with `define(...)` and attach their rules with decorators:

    conv_t = define("ConvTranspose", inputs=("X", "W", "B?"), attrs={"group": Attr("int", 1), ...})

    @conv_t.infer
    def _(ctx: InferContext) -> list[TensorType]: ...

    @conv_t.reference
    def _(node: Node, x, w, b=None) -> list[np.ndarray]: ...

Everything that knows about a particular op lives with that op; the IR, the printer, the ONNX
bridge and the reference evaluator only consult this table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np

from ..errors import VerificationError
from ..ir import Node, Shape, Value

ATTR_KINDS = ("int", "ints", "float", "floats", "string", "strings", "tensor")


@dataclass(frozen=True)
class Attr:
    """One attribute of an op: its kind (see ATTR_KINDS), default (None: absent) and meaning."""

    kind: str
    default: Any = None
    doc: str = ""
    required: bool = False


@dataclass(frozen=True)
class TensorType:
    shape: Shape | None
    dtype: str | None

    def __iter__(self):
        return iter((self.shape, self.dtype))


InferFn = Callable[["InferContext"], list[TensorType]]
ReferenceFn = Callable[..., list[np.ndarray]]


@dataclass
class OpDef:
    """Everything the project knows about one op type."""

    name: str
    inputs: tuple[str, ...]  # names; suffix '?' optional, '*' variadic (last only)
    attrs: dict[str, Attr] = field(default_factory=dict)
    outputs: str = "1"  # "1", or "*" when the count is given by the node
    domain: str = ""  # "" is the ONNX default domain; "lowering" for this project's own ops
    doc: str = ""
    linear_inputs: tuple[int, ...] = ()  # inputs in which the op is linear (others must be constant)
    _infer: InferFn | None = None
    _reference: ReferenceFn | None = None
    _transpose: Callable[..., Any] | None = None  # adjoint rule, used by the adjoint pass

    def infer(self, fn: InferFn) -> InferFn:
        self._infer = fn
        return fn

    def reference(self, fn: ReferenceFn) -> ReferenceFn:
        self._reference = fn
        return fn

    def transpose(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Attach the op's transpose rule (how the adjoint pass transposes a node of this op)."""
        self._transpose = fn
        return fn

    @property
    def min_inputs(self) -> int:
        return sum(1 for n in self.inputs if not n.endswith(("?", "*")))

    @property
    def max_inputs(self) -> int | None:
        return None if self.inputs and self.inputs[-1].endswith("*") else len(self.inputs)

    def evaluate(self, node: Node, arrays: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        if self._reference is None:
            raise NotImplementedError(f"{self.name} has no reference semantics")
        return list(self._reference(node, *arrays))


_REGISTRY: dict[str, OpDef] = {}


def define(name: str, **kwargs: Any) -> OpDef:
    """Declare a new op; attach `infer` and `reference` to the returned OpDef."""
    if name in _REGISTRY:
        raise ValueError(f"op {name} is defined twice")
    opdef = OpDef(name, **kwargs)
    _REGISTRY[name] = opdef
    return opdef


def lookup(name: str) -> OpDef | None:
    return _REGISTRY.get(name)


def registered_ops() -> dict[str, OpDef]:
    return dict(sorted(_REGISTRY.items()))


class InferContext:
    """What a shape-inference rule sees: the node, its input types and compile-time constant inputs."""

    def __init__(self, node: Node, num_outputs: int) -> None:
        self.node = node
        self.num_outputs = num_outputs

    def attr(self, name: str) -> Any:
        return self.node.attr(name)

    def has(self, name: str) -> bool:
        return name in self.node.attrs

    def input(self, index: int) -> Value | None:
        return self.node.input(index)

    def shape(self, index: int) -> Shape:
        value = self.node.input(index)
        if value is None or value.shape is None:
            self.fail(f"input {index} has no known shape")
        return value.shape  # type: ignore[return-value]

    def dtype(self, index: int) -> str:
        value = self.node.input(index)
        if value is None or value.dtype is None:
            self.fail(f"input {index} has no known element type")
        return value.dtype  # type: ignore[return-value]

    def const(self, index: int) -> np.ndarray | None:
        """The data of input `index` if it is known at compile time, else None."""
        value = self.node.input(index)
        graph = self.node._graph or (value._graph if value is not None else None)
        if value is None or graph is None:
            return None
        return graph.constant_value(value)

    def require_const(self, index: int, what: str) -> np.ndarray:
        data = self.const(index)
        if data is None:
            self.fail(f"input {index} ({what}) must be a constant known at compile time")
        return data  # type: ignore[return-value]

    def fail(self, message: str, *, attr: str | None = None, axis: int | None = None) -> NoReturn:
        """Raise a one-line VerificationError naming the node, the attribute and the axis."""
        self.node.fail(message, attr=attr, axis=axis)


def _coerce(node: Node, name: str, spec: Attr, value: Any) -> Any:
    def bad(why: str) -> VerificationError:
        return VerificationError(f"{node.label}: attribute '{name}' {why}")

    kind = spec.kind
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise bad(f"must be an int, got {type(value).__name__} {value!r}")
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise bad(f"must be a float, got {type(value).__name__} {value!r}")
        return float(value)
    if kind == "string":
        if isinstance(value, bytes):
            value = value.decode()
        if not isinstance(value, str):
            raise bad(f"must be a string, got {type(value).__name__} {value!r}")
        return value
    if kind in ("ints", "floats", "strings"):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, np.ndarray)):
            raise bad(f"must be a list, got {type(value).__name__} {value!r}")
        element = Attr(kind[:-1])
        return [_coerce(node, name, element, v) for v in list(value)]
    if kind == "tensor":
        if not isinstance(value, np.ndarray):
            raise bad(f"must be a tensor, got {type(value).__name__}")
        data = np.array(value, copy=True)
        data.setflags(write=False)
        return data
    raise AssertionError(kind)


def normalize_attrs(node: Node, attrs: dict[str, Any]) -> dict[str, Any]:
    """Check attribute names and kinds against the op schema; coerce to plain Python values.

    Ops without a definition (carried through opaquely) keep their attributes as given.
    """
    opdef = lookup(node.op)
    if opdef is None:
        return dict(attrs)
    out: dict[str, Any] = {}
    for name, value in attrs.items():
        if name not in opdef.attrs:
            known = ", ".join(sorted(opdef.attrs)) or "none"
            raise VerificationError(f"{node.label}: unknown attribute '{name}' (known: {known})")
        out[name] = _coerce(node, name, opdef.attrs[name], value)
    for name, spec in opdef.attrs.items():
        if spec.required and name not in out:
            raise VerificationError(f"{node.label}: required attribute '{name}' is missing")
    return dict(sorted(out.items()))


def infer_node(node: Node, num_outputs: int) -> list[TensorType]:
    """Verify a node against its op's rules and return its output types."""
    opdef = lookup(node.op)
    if opdef is None:
        from ..errors import UnsupportedError

        raise UnsupportedError(f"{node.label}: op '{node.op}' is not supported")
    count = len(node.inputs)
    while count and node.inputs[count - 1] is None:
        count -= 1
    if count < opdef.min_inputs or (opdef.max_inputs is not None and count > opdef.max_inputs):
        expected = (
            f"{opdef.min_inputs}..{opdef.max_inputs}" if opdef.max_inputs != opdef.min_inputs else f"{opdef.min_inputs}"
        )
        raise VerificationError(f"{node.label}: expected {expected} inputs, got {count}")
    for index, spec in enumerate(opdef.inputs):
        if not spec.endswith(("?", "*")) and node.input(index) is None:
            raise VerificationError(f"{node.label}: required input {index} ({spec}) is missing")
    if opdef.outputs == "1" and num_outputs != 1:
        raise VerificationError(f"{node.label}: has exactly one output, got {num_outputs}")
    if opdef._infer is None:
        raise NotImplementedError(f"{opdef.name} has no shape inference")
    return [TensorType(*t) for t in opdef._infer(InferContext(node, num_outputs))]
