"""PyTorch in: `from_torch(module, example_inputs) -> Graph`, through `torch.export`.

The module is exported with `torch.export.export` (in eval mode, its training flags restored
afterwards), and each node of the exported ATen graph is turned into IR nodes by one handler of
`ATEN` (packet name -> handler). Parameters, buffers and lifted constants become initializers
named by their state-dict key (`up.weight`), user inputs become graph inputs (a dimension that
`dynamic_shapes` makes symbolic keeps torch's symbol, e.g. `s0`), and the returned tensors become
the graph outputs. Every op the table lacks is refused before anything is built, in one line that
names each of them.

Covered: Conv and ConvTranspose of 1-3 spatial axes (`nn.Conv*`, `nn.ConvTranspose*`, including
`output_size=` at call time, which torch resolves to `output_padding` before the graph is traced),
BatchNorm in inference mode, ReLU / LeakyReLU / Tanh / Sigmoid / SiLU / ReLU6 / Hardtanh / clamp,
`torch.cat`, `pixel_shuffle`, elementwise add / sub / mul / div (skip connections), Linear on
matrices, reshape / view / flatten with static sizes, and the no-ops of inference (dropout, clone,
contiguous, detach).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import dtypes
from ..errors import LoweringError, UnsupportedError
from ..ir import Graph, Value


def _torch() -> Any:
    import torch

    return torch


# --------------------------------------------------------------------------- building


class _Builder:
    """The IR graph under construction and the map from fx nodes to IR values."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.env: dict[Any, Value | tuple[Value, ...] | None] = {}
        self.lazy: dict[Any, tuple[str, Any]] = {}  # fx placeholder -> (initializer name, tensor), made on use

    def value(self, arg: Any) -> Value:
        if arg in self.lazy:
            name, tensor = self.lazy.pop(arg)
            self.env[arg] = self.graph.add_initializer(self.graph.fresh_name(name), _to_numpy(tensor))
        value = self.env.get(arg)
        if not isinstance(value, Value):
            raise UnsupportedError(f"from_torch: '{arg}' is not a tensor the graph computes")
        return value

    def scalar(self, number: float, like: Value, hint: str = "scalar") -> Value:
        return self.graph.const(np.asarray(number, dtype=like.dtype), hint)

    def operand(self, arg: Any, like: Value) -> Value:
        """A tensor operand, or a Python number made a constant of `like`'s element type."""
        if isinstance(arg, (int, float)) and not isinstance(arg, bool):
            return self.scalar(arg, like)
        return self.value(arg)

    def op(self, fx_node: Any, op: str, *inputs: Value | None, **attrs: Any) -> Value:
        return self.graph.add_node(op, list(inputs), attrs, outputs=[self.fresh(fx_node)], name=fx_node.name).outputs[0]

    def step(self, fx_node: Any, op: str, *inputs: Value | None, **attrs: Any) -> Value:
        """An intermediate node of a handler that emits several (named after the fx node)."""
        hint = f"{fx_node.name}_{op.lower()}"
        return self.graph.add_node(op, list(inputs), attrs, outputs=[self.graph.fresh_name(hint)]).outputs[0]

    def fresh(self, fx_node: Any) -> str:
        return self.graph.fresh_name(fx_node.name)


def _to_numpy(tensor: Any) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == _torch().bfloat16:
        raise UnsupportedError("from_torch: bfloat16 tensors are not supported")
    return tensor.contiguous().numpy()


def _dtype(torch_dtype: Any) -> str:
    return dtypes.canonical(str(torch_dtype).removeprefix("torch."))


def _dims(shape: Sequence[Any]) -> tuple[int | str, ...]:
    return tuple(d if isinstance(d, int) else str(d) for d in shape)


def _bind(fx_node: Any) -> dict[str, Any]:
    """The node's arguments by schema name, defaults filled in."""
    target = fx_node.target
    schema = getattr(target, "_schema", None)
    if schema is None:
        return {str(i): a for i, a in enumerate(fx_node.args)}
    bound: dict[str, Any] = {}
    for index, argument in enumerate(schema.arguments):
        if index < len(fx_node.args):
            bound[argument.name] = fx_node.args[index]
        elif argument.name in fx_node.kwargs:
            bound[argument.name] = fx_node.kwargs[argument.name]
        elif argument.has_default_value():
            bound[argument.name] = argument.default_value
        else:
            bound[argument.name] = None
    return bound


def _per_axis(value: Any, rank: int) -> list[int]:
    values = [int(value)] * rank if isinstance(value, int) else [int(v) for v in value]
    return values * rank if len(values) == 1 and rank > 1 else values


def _label(fx_node: Any) -> str:
    return f"{_target_name(fx_node)} ('{fx_node.name}')"


def _target_name(fx_node: Any) -> str:
    target = fx_node.target
    if target is operator.getitem:
        return "getitem"
    return str(target)


# --------------------------------------------------------------------------- handlers

Handler = Callable[[_Builder, Any, dict[str, Any]], Value | tuple[Value, ...] | None]


def _conv_attrs(fx_node: Any, spatial: int, a: dict[str, Any], transposed: bool) -> dict[str, Any]:
    padding = a.get("padding", 0)
    strides = _per_axis(a.get("stride", 1), spatial)
    dilations = _per_axis(a.get("dilation", 1), spatial)
    attrs: dict[str, Any] = {"strides": strides, "dilations": dilations, "group": int(a.get("groups", 1))}
    if isinstance(padding, str):  # conv*d.padding: 'valid' or 'same' (stride 1, torch puts the odd element last)
        if padding == "valid":
            attrs["pads"] = [0] * (2 * spatial)
        else:
            kernel = list(fx_node.args[1].meta["val"].shape[2:])
            total = [d * (k - 1) for d, k in zip(dilations, kernel, strict=True)]
            attrs["pads"] = [t // 2 for t in total] + [t - t // 2 for t in total]
    else:
        pads = _per_axis(padding, spatial)
        attrs["pads"] = pads + pads
    if transposed:
        attrs["output_padding"] = _per_axis(a.get("output_padding", 0), spatial)
    return attrs


def _convolution_with(transposed: bool | None) -> Handler:
    def handler(b: _Builder, fx_node: Any, a: dict[str, Any]) -> Value:
        x, w = b.value(a["input"]), b.value(a["weight"])
        bias = None if a.get("bias") is None else b.value(a["bias"])
        is_transposed = bool(a["transposed"]) if transposed is None else transposed
        spatial = len(w.shape) - 2  # type: ignore[arg-type]
        op = "ConvTranspose" if is_transposed else "Conv"
        return b.op(fx_node, op, x, w, bias, **_conv_attrs(fx_node, spatial, a, is_transposed))

    return handler


def _batch_norm(b: _Builder, fx_node: Any, a: dict[str, Any]) -> Value:
    if a.get("training"):
        raise UnsupportedError(f"from_torch: {_label(fx_node)}: BatchNorm in training mode is not supported")
    x = b.value(a["input"])
    if a.get("running_mean") is None or a.get("running_var") is None:
        raise UnsupportedError(
            f"from_torch: {_label(fx_node)}: BatchNorm without running statistics (track_running_stats=False) "
            "normalises by the batch's own statistics, which is not supported"
        )
    channels = x.shape[1]  # type: ignore[index]
    dtype = x.dtype or "float32"
    scale = (
        b.graph.const(np.ones(channels, dtype), f"{fx_node.name}_scale")
        if a["weight"] is None
        else b.value(a["weight"])
    )
    shift = (
        b.graph.const(np.zeros(channels, dtype), f"{fx_node.name}_bias") if a["bias"] is None else b.value(a["bias"])
    )
    mean, var = b.value(a["running_mean"]), b.value(a["running_var"])
    return b.op(fx_node, "BatchNormalization", x, scale, shift, mean, var, epsilon=float(a["eps"]))


def _batch_norm_no_training(b: _Builder, fx_node: Any, a: dict[str, Any]) -> tuple[Value, ...]:
    # _native_batch_norm_legit_no_training returns (out, save_mean, save_invstd); only out is read in inference
    return (_batch_norm(b, fx_node, {**a, "training": False}),)


def _getitem(b: _Builder, fx_node: Any, a: dict[str, Any]) -> Value:
    source, index = fx_node.args
    results = b.env.get(source)
    if not isinstance(results, tuple) or not 0 <= index < len(results) or results[index] is None:
        raise UnsupportedError(f"from_torch: {_label(fx_node)}: output {index} of '{source.name}' is not supported")
    return results[index]


def _unary(op: str, **fixed: Any) -> Handler:
    def handler(b: _Builder, fx_node: Any, a: dict[str, Any]) -> Value:
        return b.op(fx_node, op, b.value(fx_node.args[0]), **fixed)

    return handler


def _leaky_relu(b: _Builder, fx_node: Any, a: dict[str, Any]) -> Value:
    return b.op(fx_node, "LeakyRelu", b.value(a["self"]), alpha=float(a["negative_slope"]))


def _clip(lo_key: str, hi_key: str, lo_default: float | None = None, hi_default: float | None = None) -> Handler:
    def handler(b: _Builder, fx_node: Any, a: dict[str, Any]) -> Value:
        x = b.value(a["self"])
        lo = a.get(lo_key, lo_default) if lo_key else lo_default
        hi = a.get(hi_key, hi_default) if hi_key else hi_default
        if any(v is not None and not isinstance(v, (int, float)) for v in (lo, hi)):
            raise UnsupportedError(f"from_torch: {_label(fx_node)}: bounds must be numbers, not tensors")
        bounds = [None if v is None else b.scalar(v, x, f"{fx_node.name}_{k}") for v, k in ((lo, "min"), (hi, "max"))]
        return b.op(fx_node, "Clip", x, *bounds)

    return handler


def _silu(b: _Builder, fx_node: Any, a: dict[str, Any]) -> Value:
    x = b.value(a["self"])
    return b.op(fx_node, "Mul", x, b.step(fx_node, "Sigmoid", x))


def _binary(op: str) -> Handler:
    def handler(b: _Builder, fx_node: Any, a: dict[str, Any]) -> Value:
        first, second = a["self"], a["other"]
        if a.get("rounding_mode") is not None:
            raise UnsupportedError(f"from_torch: {_label(fx_node)}: division with rounding_mode is not supported")
        like = b.value(first) if not isinstance(first, (int, float)) else b.value(second)
        lhs, rhs = b.operand(first, like), b.operand(second, like)
        alpha = a.get("alpha", 1)
        if alpha is not None and alpha != 1:
            rhs = b.step(fx_node, "Mul", rhs, b.scalar(alpha, like, f"{fx_node.name}_alpha"))
        return b.op(fx_node, op, lhs, rhs)

    return handler


def _cat(b: _Builder, fx_node: Any, a: dict[str, Any]) -> Value:
    values = [b.value(t) for t in a["tensors"]]
    rank = len(values[0].shape)  # type: ignore[arg-type]
    return b.op(fx_node, "Concat", *values, axis=int(a["dim"]) % rank)


def _pixel_shuffle(b: _Builder, fx_node: Any, a: dict[str, Any]) -> Value:
    x = b.value(a["self"])
    if x.rank != 4:
        raise UnsupportedError(
            f"from_torch: {_label(fx_node)}: pixel_shuffle is supported on 4-D tensors, got {x.rank}-D"
        )
    return b.op(fx_node, "DepthToSpace", x, blocksize=int(a["upscale_factor"]), mode="CRD")


def _static_sizes(fx_node: Any, sizes: Sequence[Any]) -> list[int]:
    if not all(isinstance(s, int) for s in sizes):
        raise UnsupportedError(f"from_torch: {_label(fx_node)}: sizes computed at run time are not supported")
    return [int(s) for s in sizes]


def _reshape_to(b: _Builder, fx_node: Any, x: Value, sizes: list[int]) -> Value:
    shape = b.graph.const(np.asarray(sizes, np.int64), f"{fx_node.name}_shape")
    return b.op(fx_node, "Reshape", x, shape)


def _reshape(b: _Builder, fx_node: Any, a: dict[str, Any]) -> Value:
    sizes = a.get("shape", a.get("size"))
    return _reshape_to(b, fx_node, b.value(a["self"]), _static_sizes(fx_node, sizes))


def _flatten(b: _Builder, fx_node: Any, a: dict[str, Any]) -> Value:
    x = b.value(a["self"])
    rank = x.rank or 0
    start, end = int(a["start_dim"]) % max(rank, 1), int(a["end_dim"]) % max(rank, 1)
    shape = list(x.shape)  # type: ignore[arg-type]
    if any(isinstance(d, str) for d in shape[start : end + 1]):
        raise UnsupportedError(f"from_torch: {_label(fx_node)}: flattening a symbolic dimension is not supported")
    # 0 keeps a leading (possibly symbolic) dimension as it is
    sizes = [0] * start + [math.prod(shape[start : end + 1])] + [d for d in shape[end + 1 :]]
    return _reshape_to(b, fx_node, x, _static_sizes(fx_node, sizes))


def _linear(b: _Builder, fx_node: Any, a: dict[str, Any]) -> Value:
    x, w = b.value(a["input"]), b.value(a["weight"])
    bias = None if a.get("bias") is None else b.value(a["bias"])
    if x.rank != 2:
        raise UnsupportedError(
            f"from_torch: {_label(fx_node)}: linear is supported on (N, features) inputs, got {x.rank}-D"
        )
    return b.op(fx_node, "Gemm", x, w, bias, transB=1)


def _identity(b: _Builder, fx_node: Any, a: dict[str, Any]) -> Value:
    return b.value(fx_node.args[0])


def _dropout(b: _Builder, fx_node: Any, a: dict[str, Any]) -> Value:
    if a.get("train"):
        raise UnsupportedError(f"from_torch: {_label(fx_node)}: dropout in training mode is not supported")
    return b.value(a["input"])


def _nothing(b: _Builder, fx_node: Any, a: dict[str, Any]) -> None:
    return None


# ATen packet name (or "getitem") -> handler. Both the export's training IR (conv_transpose2d,
# batch_norm, ...) and the core ATen forms (convolution, _native_batch_norm_legit_no_training)
# are covered, so the table does not depend on which decompositions a torch version applies.
ATEN: dict[str, Handler] = {
    "convolution": _convolution_with(None),
    "_convolution": _convolution_with(None),
    "conv1d": _convolution_with(False),
    "conv2d": _convolution_with(False),
    "conv3d": _convolution_with(False),
    "conv_transpose1d": _convolution_with(True),
    "conv_transpose2d": _convolution_with(True),
    "conv_transpose3d": _convolution_with(True),
    "batch_norm": _batch_norm,
    "_native_batch_norm_legit_no_training": _batch_norm_no_training,
    "getitem": _getitem,
    "relu": _unary("Relu"),
    "relu_": _unary("Relu"),
    "leaky_relu": _leaky_relu,
    "leaky_relu_": _leaky_relu,
    "tanh": _unary("Tanh"),
    "tanh_": _unary("Tanh"),
    "sigmoid": _unary("Sigmoid"),
    "sigmoid_": _unary("Sigmoid"),
    "silu": _silu,
    "silu_": _silu,
    "relu6": _clip("", "", 0.0, 6.0),
    "hardtanh": _clip("min_val", "max_val"),
    "hardtanh_": _clip("min_val", "max_val"),
    "clamp": _clip("min", "max"),
    "clamp_min": _clip("min", ""),
    "clamp_max": _clip("", "max"),
    "add": _binary("Add"),
    "add_": _binary("Add"),
    "sub": _binary("Sub"),
    "mul": _binary("Mul"),
    "div": _binary("Div"),
    "cat": _cat,
    "concat": _cat,
    "pixel_shuffle": _pixel_shuffle,
    "reshape": _reshape,
    "view": _reshape,
    "_unsafe_view": _reshape,
    "flatten": _flatten,
    "linear": _linear,
    "dropout": _dropout,
    "feature_dropout": _dropout,
    "clone": _identity,
    "contiguous": _identity,
    "alias": _identity,
    "detach": _identity,
    "detach_": _identity,
    "lift_fresh_copy": _identity,
    "_assert_tensor_metadata": _nothing,
}


def _key(fx_node: Any) -> str:
    target = fx_node.target
    if target is operator.getitem:
        return "getitem"
    packet = getattr(target, "_overloadpacket", None)
    if packet is None or getattr(target, "namespace", "aten") != "aten":
        return f"?{target}"
    return packet.__name__


# --------------------------------------------------------------------------- the entry point


def _export(module: Any, example_inputs: tuple[Any, ...], dynamic_shapes: Any) -> Any:
    torch = _torch()
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        return torch.export.export(module, example_inputs, dynamic_shapes=dynamic_shapes)
    except Exception as error:  # torch.export raises many types; each is one line for the user
        first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise UnsupportedError(f"from_torch: torch.export could not trace {type(module).__name__}: {first}") from None
    finally:
        for m, training in modes.items():
            m.training = training


def from_torch(module: Any, example_inputs: Any, *, dynamic_shapes: Any = None, name: str | None = None) -> Graph:
    """Export `module` with `torch.export` on `example_inputs` and translate it into a Graph.

    `example_inputs` is a tensor or a tuple of tensors, passed to `module` positionally;
    `dynamic_shapes` goes to `torch.export.export` as is (e.g. a symbolic batch). The module is
    traced in eval mode (BatchNorm uses its running statistics). An ATen op this frontend does not
    translate is refused in one line that names every such op.
    """
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise UnsupportedError(f"from_torch: expected a torch.nn.Module, got {type(module).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        inputs = (example_inputs,)
    elif isinstance(example_inputs, (tuple, list)):
        inputs = tuple(example_inputs)
    else:
        raise UnsupportedError(
            f"from_torch: example_inputs must be a torch.Tensor or a tuple of them, got {type(example_inputs).__name__}"
        )
    program = _export(module, inputs, dynamic_shapes)
    fx_graph = program.graph

    unsupported = sorted({_target_name(n) for n in fx_graph.nodes if n.op == "call_function" and _key(n) not in ATEN})
    if unsupported:
        raise UnsupportedError(f"from_torch: unsupported op(s) in {type(module).__name__}: {', '.join(unsupported)}")

    graph = Graph(name or type(module).__name__)
    graph.meta.update(producer_name="lowering.from_torch", producer_version=torch.__version__)
    b = _Builder(graph)
    signature = program.graph_signature
    kinds = {spec.arg.name: spec for spec in signature.input_specs}
    state = {**program.state_dict, **program.constants}
    for fx_node in fx_graph.nodes:
        if fx_node.op == "placeholder":
            spec = kinds.get(fx_node.name)
            kind = getattr(getattr(spec, "kind", None), "name", "USER_INPUT")
            if kind == "USER_INPUT":
                val = fx_node.meta["val"]
                if not isinstance(val, torch.Tensor):
                    raise UnsupportedError(f"from_torch: input '{fx_node.name}' is not a tensor")
                b.env[fx_node] = graph.add_input(fx_node.name, _dims(val.shape), _dtype(val.dtype))
            elif spec is not None and spec.target in state:
                b.lazy[fx_node] = (spec.target, state[spec.target])
            else:
                raise UnsupportedError(
                    f"from_torch: input '{fx_node.name}' ({kind}) has no value in the exported program"
                )
        elif fx_node.op == "call_function":
            try:
                result = ATEN[_key(fx_node)](b, fx_node, _bind(fx_node))
            except LoweringError as error:
                message = str(error)
                raise type(error)(
                    message if message.startswith("from_torch") else f"from_torch: {_label(fx_node)}: {message}"
                ) from None
            b.env[fx_node] = result
            _check_type(fx_node, result)
        elif fx_node.op == "output":
            for returned in fx_node.args[0]:
                graph.outputs.append(b.value(returned))
        else:
            raise UnsupportedError(f"from_torch: fx node '{fx_node.name}' ({fx_node.op}) is not supported")
    return graph


def _check_type(fx_node: Any, result: Any) -> None:
    """The IR's inferred shape must agree with torch's: a disagreement is a bug of a handler above."""
    val = fx_node.meta.get("val")
    torch = _torch()
    if not isinstance(result, Value) or not isinstance(val, torch.Tensor) or result.shape is None:
        return
    want = _dims(val.shape)
    got = result.shape
    if len(want) != len(got) or any(
        isinstance(w, int) and isinstance(g, int) and w != g for w, g in zip(want, got, strict=True)
    ):
        raise AssertionError(f"from_torch: {_label(fx_node)}: the IR infers {list(got)}, torch computed {list(want)}")
