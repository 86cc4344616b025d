"""Elementwise ops: broadcasting arithmetic, the activations decoders use, Clip and
inference-mode BatchNormalization. Each family is one table, so adding an op is one line.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import dtypes
from ..ir import Node
from .registry import Attr, InferContext, TensorType, define, lookup
from .shapes import broadcast

# --------------------------------------------------------------------------- binary, broadcasting

BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": lambda a, b: (
        np.divide(a, b) if a.dtype.kind == "f" else (np.trunc(a / b)).astype(a.dtype)
    ),  # ONNX: ints truncate
}


def _binary(name: str, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    opdef = define(name, inputs=("A", "B"), doc=f"Elementwise {name} with NumPy broadcasting.")

    @opdef.infer
    def _(ctx: InferContext) -> list[TensorType]:
        if ctx.dtype(0) != ctx.dtype(1):
            ctx.fail(f"inputs have different element types {ctx.dtype(0)} and {ctx.dtype(1)}")
        return [TensorType(broadcast(ctx, [ctx.shape(0), ctx.shape(1)]), ctx.dtype(0))]

    @opdef.reference
    def _(node: Node, a, b) -> list[np.ndarray]:
        return [fn(a, b)]


for _name, _fn in BINARY.items():
    _binary(_name, _fn)

# Add and Sub are linear in both operands together; Mul in either one (the other constant); Div in A.
for _name, _linear in {"Add": (0, 1), "Sub": (0, 1), "Mul": (0, 1), "Div": (0,)}.items():
    lookup(_name).linear_inputs = _linear


# --------------------------------------------------------------------------- unary activations


def _sigmoid(x: np.ndarray, node: Node) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


UNARY: dict[str, tuple[dict[str, Attr], Callable[[np.ndarray, Node], np.ndarray]]] = {
    # `x < 0` rather than `x > 0`: NaN must pass through, as in ONNX's max(0, x) and torch.relu
    "Relu": ({}, lambda x, node: np.where(x < 0, np.zeros_like(x), x)),
    "LeakyRelu": (
        {"alpha": Attr("float", 0.01)},
        lambda x, node: np.where(x >= 0, x, x * node.attr("alpha")),
    ),
    "Sigmoid": ({}, _sigmoid),
    "Tanh": ({}, lambda x, node: np.tanh(x)),
}


def _unary(name: str, attrs: dict[str, Attr], fn: Callable[[np.ndarray, Node], np.ndarray]) -> None:
    opdef = define(name, inputs=("X",), attrs=attrs, doc=f"Elementwise {name}.")

    @opdef.infer
    def _(ctx: InferContext) -> list[TensorType]:
        if not dtypes.is_float(ctx.dtype(0)):
            ctx.fail(f"input must be a float tensor, got {ctx.dtype(0)}")
        return [TensorType(ctx.shape(0), ctx.dtype(0))]

    @opdef.reference
    def _(node: Node, x) -> list[np.ndarray]:
        return [fn(x, node)]


for _name, (_attrs, _fn) in UNARY.items():
    _unary(_name, _attrs, _fn)


# --------------------------------------------------------------------------- Clip

clip = define("Clip", inputs=("input", "min?", "max?"), doc="Clamp to [min, max] (ONNX opset >= 11 layout).")


@clip.infer
def _(ctx: InferContext) -> list[TensorType]:
    for index in (1, 2):
        value = ctx.input(index)
        if value is not None and value.shape is not None and len(value.shape) != 0:
            ctx.fail(
                f"input {index} ({'min' if index == 1 else 'max'}) must be a scalar, got shape {list(value.shape)}"
            )
    return [TensorType(ctx.shape(0), ctx.dtype(0))]


@clip.reference
def _(node: Node, x, lo=None, hi=None) -> list[np.ndarray]:
    if lo is not None:
        x = np.where(x < lo, lo, x)
    if hi is not None:
        x = np.where(x > hi, hi, x)
    return [x]


# --------------------------------------------------------------------------- BatchNormalization

batch_norm = define(
    "BatchNormalization",
    inputs=("X", "scale", "B", "input_mean", "input_var"),
    outputs="*",
    attrs={
        "epsilon": Attr("float", 1e-5),
        "momentum": Attr("float", 0.9, "training only; ignored in inference"),
        "training_mode": Attr("int", 0, "only 0 (inference) is supported"),
    },
    linear_inputs=(0,),  # when its shift B − mean·scale/√(var + ε) is zero
    doc="Inference-mode batch normalisation over axis 1.",
)


@batch_norm.infer
def _(ctx: InferContext) -> list[TensorType]:
    if ctx.attr("training_mode") != 0:
        ctx.fail("only inference mode (0) is supported", attr="training_mode")
    if ctx.num_outputs != 1:
        ctx.fail(f"inference mode has one output, got {ctx.num_outputs}")
    shape = ctx.shape(0)
    if len(shape) < 2:
        ctx.fail(f"input X must have rank >= 2, got {len(shape)}")
    for index, what in enumerate(("scale", "B", "input_mean", "input_var"), start=1):
        if tuple(ctx.shape(index)) != (shape[1],):
            ctx.fail(f"{what} must have shape [{shape[1]}] (one per channel), got {list(ctx.shape(index))}")
    return [TensorType(shape, ctx.dtype(0))]


@batch_norm.reference
def _(node: Node, x, scale, bias, mean, var) -> list[np.ndarray]:
    per_channel = (-1, *([1] * (x.ndim - 2)))
    inv = scale / np.sqrt(var + node.attr("epsilon"))
    return [(x - mean.reshape(per_channel)) * inv.reshape(per_channel) + bias.reshape(per_channel)]


# --------------------------------------------------------------------------- transpose rules


def _unbroadcast(ctx, node: Node, index: int) -> None:
    """A broadcast operand's transpose would need a sum over the broadcast axes: refused."""
    x, y = node.inputs[index], node.outputs[0]
    if tuple(x.shape) != tuple(y.shape):
        ctx.refuse(
            f"broadcasts input {index} ('{x.name}') from {list(x.shape)} to {list(y.shape)}; its transpose "
            "would sum over the broadcast axes, which has no rule here"
        )


def _no_constant_term(ctx, node: Node) -> None:
    for index, value in enumerate(node.inputs):
        if not ctx.is_active(value) and np.any(ctx.array(value) != 0):
            ctx.refuse(
                f"adds the constant '{value.name}' (input {index}), a bias: the op is affine, not linear; "
                "drop biases first with --strip-bias (strip_bias=True) to transpose the linear part"
            )


def _transpose_add(ctx, node: Node, cotangents) -> dict[int, object]:
    """Add (fan-in) <-> fan-out: both operands receive the cotangent; Sub negates the second."""
    _no_constant_term(ctx, node)
    out: dict[int, object] = {}
    for index, value in enumerate(node.inputs):
        if ctx.is_active(value):
            _unbroadcast(ctx, node, index)
            z = cotangents[0]
            if node.op == "Sub" and index == 1:
                z = ctx.op("Mul", z, ctx.const(np.asarray(-1, dtype=value.dtype), "minus_one"))
            out[index] = z
    return out


lookup("Add").transpose(_transpose_add)
lookup("Sub").transpose(_transpose_add)


@lookup("Mul").transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """Multiplication by a constant is diagonal, so self-adjoint: Ā = Ȳ·C."""
    a, b = (ctx.is_active(v) for v in node.inputs)
    if a and b:
        ctx.refuse("multiplies two values that both depend on the graph inputs, so it is bilinear, not linear")
    index = 0 if a else 1
    _unbroadcast(ctx, node, index)
    return {index: ctx.op("Mul", cotangents[0], ctx.constant(node.inputs[1 - index]))}


@lookup("Div").transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """Division by a constant: Ā = Ȳ / C."""
    if not dtypes.is_float(node.inputs[0].dtype):
        ctx.refuse(f"integer division ({node.inputs[0].dtype}) truncates, so it is not linear")
    _unbroadcast(ctx, node, 0)
    return {0: ctx.op("Div", cotangents[0], ctx.constant(node.inputs[1]))}


@batch_norm.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """Without a shift, inference BatchNormalization is a per-channel scale, so it is its own transpose."""
    scale, bias, mean, var = (ctx.array(v).astype(np.float64) for v in node.inputs[1:5])
    shift = bias - mean * scale / np.sqrt(var + node.attr("epsilon"))
    if np.any(shift != 0):
        ctx.refuse(
            "has a shift (B − mean·scale/√(var + ε) is not zero), so it is affine, not linear; "
            "drop it first with --strip-bias (strip_bias=True) to transpose the per-channel scale"
        )
    constants = [ctx.constant(v) for v in node.inputs[1:5]]
    return {0: ctx.op("BatchNormalization", cotangents[0], *constants, epsilon=node.attr("epsilon"))}
