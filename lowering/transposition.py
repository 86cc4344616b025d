"""The adjoint of a linear graph: the graph of its transpose, built by a reverse walk.

A graph that is linear in its inputs is a matrix `A` (DESIGN.md section 1); `adjoint(graph)` builds
the graph of `Aᵀ`, so that `⟨A u, v⟩ = ⟨u, Aᵀ v⟩` for every u and v. It walks the nodes from the
outputs back to the inputs, as reverse-mode differentiation does, and asks each node's op for its
transpose rule (`@opdef.transpose`, kept next to the op): given the cotangents of the node's outputs,
the rule emits the nodes that compute the cotangents of its linear inputs. A value used by several
nodes (fan-out) receives one contribution from each, summed with `Add`; so the transpose of `Add`
is fan-out, and the other way round.

A rule is `rule(ctx, node, cotangents) -> {input index: value}`: `ctx` is a `TransposeContext` (the
graph being built, the data of constant inputs, small emit helpers, `ctx.refuse(why)`),
`cotangents[k]` the cotangent of output k in the new graph (None when nothing downstream reads
it), and each returned value must have the shape of the input it is the cotangent of.

Linearity. A value is *active* when it depends on a graph input. Every node that lies on a path
from an input to an output must be linear in its active inputs: its op has a transpose rule, every
active input is one of the op's `linear_inputs`, and the rule accepts the node (no bias, no second
active factor of a product). Values computed from constants alone are folded to constants of the
adjoint graph. Anything else is refused with a `NotLinearError` that names the op and the node.
`strip_bias=True` first drops the biases of Conv, ConvTranspose and Gemm, additions of constants
and the shift of BatchNormalization, i.e. it transposes the linear part of an affine graph.

Names. The adjoint graph has one input per output of the graph and one output per input, in order.
A name gains the suffix `_cotangent`, or loses it when it already ends with it, so that
`adjoint(adjoint(g))` has exactly the input and output names of `g`: `x -> y` becomes
`y_cotangent -> x_cotangent`. The graph name gains or loses `_adjoint` the same way. One exception:
when an input `x` is itself an output, the adjoint's input takes `x_cotangent` and its output for `x`
gets a fresh name (such as `x_cotangent_1`), as two values cannot share a name.

Matrix view. `as_operator(graph)` is the graph as a `scipy.sparse.linalg.LinearOperator` acting on
the flattened input tensor, batch axis included (the samples of a batch are the diagonal blocks of
one block-diagonal matrix): `matvec` evaluates the graph, `rmatvec` its adjoint, both in float64.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import numpy as np

from .errors import InputError, UnsupportedError
from .ir import Graph, Node, Shape, Value

COTANGENT_SUFFIX = "_cotangent"
GRAPH_SUFFIX = "_adjoint"


class NotLinearError(UnsupportedError):
    """The graph is not linear in its inputs, or uses a linear op without a transpose rule."""


def _toggle_suffix(name: str, suffix: str) -> str:
    if name.endswith(suffix) and len(name) > len(suffix):
        return name[: -len(suffix)]
    return name + suffix


def cotangent_name(name: str) -> str:
    """The adjoint graph's name for the cotangent of `name`: `y` <-> `y_cotangent`."""
    return _toggle_suffix(name, COTANGENT_SUFFIX)


def _is_linear_input(node: Node, index: int) -> bool:
    opdef = node.opdef
    if opdef is None:
        return False
    if index in opdef.linear_inputs:
        return True
    variadic = bool(opdef.inputs) and opdef.inputs[-1].endswith("*")
    return variadic and index >= len(opdef.inputs) - 1 and len(opdef.inputs) - 1 in opdef.linear_inputs


def _input_label(node: Node, index: int) -> str:
    opdef = node.opdef
    spec = ""
    if opdef is not None and opdef.inputs:
        spec = opdef.inputs[min(index, len(opdef.inputs) - 1)].rstrip("?*")
    value = node.input(index)
    named = f" '{value.name}'" if value is not None else ""
    return f"input {index}" + (f" ({spec}{named})" if spec else named)


def active_values(graph: Graph) -> set[int]:
    """ids of the values that depend on a graph input (forward closure, nodes in graph order)."""
    active = {id(v) for v in graph.inputs}
    for node in graph.nodes:
        if any(v is not None and id(v) in active for v in node.inputs):
            active.update(id(v) for v in node.outputs)
    return active


def _needed_nodes(graph: Graph, active: set[int]) -> set[int]:
    """ids of the active nodes on a path to an output: the nodes the adjoint transposes."""
    live = {id(v) for v in graph.outputs if id(v) in active}
    needed: set[int] = set()
    for node in reversed(graph.nodes):
        if any(id(v) in live for v in node.outputs):
            needed.add(id(node))
            live.update(id(v) for v in node.inputs if v is not None and id(v) in active)
    return needed


class TransposeContext:
    """What a transpose rule sees: the source graph, the adjoint graph being built and helpers.

    Values of the source graph that a rule reads as constants (weights, pads, shapes) come through
    `array` (their data) or `constant` (a constant of the adjoint graph); everything a rule emits
    goes into `graph` through `op` / `add_node`.
    """

    def __init__(self, source: Graph, graph: Graph, active: set[int]) -> None:
        self.source = source
        self.graph = graph
        self._active = active
        self._arrays: dict[int, np.ndarray] = {}
        self._constants: dict[int, Value] = {}
        self.node: Node | None = None

    # ------------------------------------------------------------ reading the source graph
    def is_active(self, value: Value | None) -> bool:
        """Whether `value` depends on a graph input (else it is a constant)."""
        return value is not None and id(value) in self._active

    def _elided(self, value: Value) -> str | None:
        """The digest of a constant whose data was elided in the text the source was parsed from."""
        elided = self.source.meta.get("elided_constants", {})
        return elided.get(value.name) if value.is_initializer else None

    def array(self, value: Value) -> np.ndarray:
        """The data of a constant value of the source graph, folding the constant ops it comes from."""
        if self.is_active(value):
            raise AssertionError(f"value '{value.name}' depends on the graph inputs; it has no constant data")
        if self._elided(value) is not None:
            self.refuse(f"needs the data of constant '{value.name}', which was elided in the text it was parsed from")
        key = id(value)
        if key not in self._arrays:
            data = self.source.constant_value(value)
            if data is None:
                producer = value.producer
                if producer is None:
                    raise NotLinearError(f"value '{value.name}' is neither an input, a constant nor computed")
                args = [None if v is None else self.array(v) for v in producer.inputs]
                for out, result in zip(producer.outputs, producer.opdef.evaluate(producer, args), strict=True):
                    result = np.asarray(result)
                    self._arrays[id(out)] = result.astype(out.dtype) if out.dtype else result
                data = self._arrays[key]
            self._arrays[key] = np.asarray(data)
        return self._arrays[key]

    def constant(self, value: Value) -> Value:
        """A constant of the adjoint graph holding the data of the source graph's constant `value`."""
        key = id(value)
        if key not in self._constants:
            digest = self._elided(value)
            if digest is not None:  # carried as it is, still marked elided (evaluating the result is refused)
                copied = self.graph.const(value.const, hint=value.name)  # type: ignore[arg-type]
                self.graph.meta.setdefault("elided_constants", {})[copied.name] = digest
            else:
                copied = self.graph.const(self.array(value), hint=value.name)
            self._constants[key] = copied
        return self._constants[key]

    # ------------------------------------------------------------ building the adjoint graph
    def op(self, op: str, *inputs: Value | None, **attrs: Any) -> Value:
        """Emit a one-output node into the adjoint graph; return its output."""
        return self.graph.op(op, *inputs, **attrs)

    def add_node(self, op: str, inputs: Sequence[Value | None], attrs: dict[str, Any], outputs: int) -> list[Value]:
        """Emit a node with `outputs` outputs into the adjoint graph; return them."""
        return self.graph.add_node(op, inputs, attrs, outputs=outputs).outputs

    def const(self, array: Any, hint: str = "const", dtype: str | None = None) -> Value:
        """A new constant of the adjoint graph."""
        return self.graph.const(array, hint=hint, dtype=dtype)

    def ints(self, values: Sequence[int], hint: str = "ints") -> Value:
        """A new int64 constant (pads, starts, shapes) of the adjoint graph."""
        return self.graph.const(np.asarray(list(values), dtype=np.int64), hint=hint)

    def zeros(self, value: Value) -> Value:
        """A zero cotangent for the source value `value` (its shape must be static)."""
        shape = value.shape
        if shape is None or not all(isinstance(d, int) for d in shape):
            self.refuse(f"needs a zero tensor of the shape of '{value.name}' ({shape}), which is not static")
        return self.graph.const(np.zeros(shape, dtype=value.dtype), hint=f"{value.name}_zero")

    def pad(self, x: Value, begin: Sequence[int], end: Sequence[int]) -> Value:
        """Pad (positive) or crop (negative) every axis of `x` with zeros; `x` itself when all are 0."""
        if not any(begin) and not any(end):
            return x
        return self.op("Pad", x, self.ints([*begin, *end], "pads"))

    def reshape(self, x: Value, shape: Shape) -> Value:
        """Reshape `x` to `shape`. A symbolic dimension copies x's same axis (0) when x has it there,
        else becomes -1 (one such at most); a literal size 0 needs `allowzero`."""
        target: list[int] = []
        copies = inferred = 0
        for axis, dim in enumerate(shape):
            if isinstance(dim, int):
                target.append(dim)
            elif x.shape is not None and axis < len(x.shape) and x.shape[axis] == dim:
                target.append(0)
                copies += 1
            else:
                target.append(-1)
                inferred += 1
        empty = any(dim == 0 for dim in shape)
        if inferred > 1 or (empty and copies):
            self.refuse(f"cannot reshape '{x.name}' {list(x.shape or ())} back to {list(shape)}")
        attrs = {"allowzero": 1} if empty else {}
        return self.op("Reshape", x, self.ints(target, "shape"), **attrs)

    # ------------------------------------------------------------ refusing
    def refuse(self, message: str) -> NoReturn:
        """Stop: the current node cannot be transposed. The message is prefixed with the op and node."""
        where = self.node.label if self.node is not None else f"graph '{self.source.name}'"
        raise NotLinearError(f"{where}: {message}")

    def require_no_bias(self, index: int, what: str = "bias") -> None:
        """Refuse a node whose optional input `index` adds a nonzero constant (an affine op)."""
        node = self.node
        assert node is not None
        value = node.input(index)
        if value is None:
            return
        if np.any(self.array(value) != 0):
            self.refuse(
                f"adds the {what} '{value.name}', so it is affine, not linear; "
                "drop biases first with --strip-bias (strip_bias=True) to transpose the linear part"
            )


# ----------------------------------------------------------------------------- strip biases


def strip_biases(graph: Graph) -> tuple[Graph, list[str]]:
    """A copy of `graph` without the biases of its active nodes, and one note per bias dropped.

    Dropped: the bias B of Conv / ConvTranspose, C of Gemm, the constant operand of an Add (or Sub)
    whose other operand is active (the node becomes Identity, or a negation), and the shift of
    BatchNormalization (B and mean set to 0, leaving the per-channel scale).
    """
    graph = graph.copy()
    active = active_values(graph)
    notes: list[str] = []

    def is_active(v: Value | None) -> bool:
        return v is not None and id(v) in active

    for node in list(graph.nodes):
        if not any(is_active(v) for v in node.inputs):
            continue
        if node.op in ("Conv", "ConvTranspose", "Gemm") and node.input(2) is not None and not is_active(node.input(2)):
            notes.append(f"dropped the bias '{node.inputs[2].name}' of {node.label}")  # type: ignore[union-attr]
            graph.set_input(node, 2, None)
            del node.inputs[2:]
        elif node.op in ("Add", "Sub") and sum(is_active(v) for v in node.inputs) == 1:
            index = 0 if is_active(node.inputs[0]) else 1
            kept, bias = node.inputs[index], node.inputs[1 - index]
            assert kept is not None and bias is not None
            if kept.shape != node.outputs[0].shape:
                continue  # the constant broadcasts the active operand: leave it for the refusal to name
            if node.op == "Sub" and index == 1:
                minus = graph.const(np.asarray(-1, dtype=kept.dtype), "minus_one")
                replacement = graph.op("Mul", kept, minus, before=node)
            else:
                replacement = graph.op("Identity", kept, before=node)
            active.add(id(replacement))
            notes.append(f"dropped the constant '{bias.name}' added by {node.label}")
            graph.replace_all_uses_with(node.outputs[0], replacement)
            if node.name:
                replacement.producer.name = node.name  # type: ignore[union-attr]
            graph.remove_node(node)
        elif node.op == "BatchNormalization" and not any(is_active(v) for v in node.inputs[1:]):
            channels = node.inputs[1].shape  # type: ignore[union-attr]
            zero = graph.const(np.zeros(channels, dtype=node.inputs[2].dtype), f"{node.name or 'bn'}_zero")  # type: ignore[union-attr, arg-type]
            graph.set_input(node, 2, zero)
            graph.set_input(node, 3, zero)
            notes.append(f"dropped the shift (B and mean) of {node.label}")
    return graph, notes


# ----------------------------------------------------------------------------- the adjoint


def _check_structure(graph: Graph, active: set[int], needed: set[int]) -> None:
    """Refuse, in graph order, the first node that cannot be linear: no rule, or an active non-linear input."""
    for node in graph.nodes:
        if id(node) not in needed:
            continue
        opdef = node.opdef
        if opdef is None:
            raise NotLinearError(
                f"{node.label}: op '{node.op}' is not known to this project, so it has no transpose rule"
            )
        if opdef._transpose is None:
            if opdef.linear_inputs:
                raise NotLinearError(
                    f"{node.label}: {node.op} is linear but has no transpose rule yet, so the adjoint pass cannot "
                    "transpose this graph"
                )
            raise NotLinearError(
                f"{node.label}: not a linear op, so the graph is not linear in its inputs and has no adjoint"
            )
        for index, value in enumerate(node.inputs):
            if value is not None and id(value) in active and not _is_linear_input(node, index):
                raise NotLinearError(
                    f"{node.label}: {_input_label(node, index)} depends on the graph inputs, but {node.op} is linear "
                    "only in its other inputs (the graph is not linear in its inputs)"
                )


def _same_shape(a: Shape | None, b: Shape | None) -> bool:
    return a is None or b is None or tuple(a) == tuple(b)


def _sum(graph: Graph, values: list[Value]) -> Value:
    total = values[0]
    for value in values[1:]:
        total = graph.op("Add", total, value)
    return total


def _rename(graph: Graph, value: Value, name: str) -> None:
    if value.is_initializer:
        del graph.initializers[value.name]
        graph.rename(value, name)
        graph.initializers[name] = value
    else:
        graph.rename(value, name)


def _remove_dead(graph: Graph) -> None:
    outputs = {id(v) for v in graph.outputs}
    for node in reversed(list(graph.nodes)):
        if all(not v.uses and id(v) not in outputs for v in node.outputs):
            graph.remove_node(node)
    for value in list(graph.initializers.values()):
        if not value.uses and id(value) not in outputs:
            graph.remove_initializer(value)


_META_DROPPED = ("initializer_inputs", "lowering_notes", "elided_constants")


def adjoint(graph: Graph, strip_bias: bool = False) -> Graph:
    """The graph of the transpose of `graph`, which must be linear in its inputs.

    Inputs of the result: one per output of `graph` (the cotangent, named `<output>_cotangent`);
    outputs: one per input (named `<input>_cotangent`); see the module docstring for the naming
    rule, which makes `adjoint(adjoint(g))` take and return the names of `g`. `graph` is not modified.
    With `strip_bias`, biases are dropped first (see `strip_biases`); the notes saying which are kept
    in the result's `meta["adjoint_notes"]`.
    """
    notes: list[str] = []
    source = graph
    if strip_bias:
        source, notes = strip_biases(graph)
    active = active_values(source)
    needed = _needed_nodes(source, active)
    _check_structure(source, active, needed)

    result = Graph(_toggle_suffix(source.name, GRAPH_SUFFIX))
    result.meta = {
        k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
        for k, v in source.meta.items()
        if k not in _META_DROPPED
    }
    ctx = TransposeContext(source, result, active)
    contributions: dict[int, list[Value]] = {}

    for value in source.outputs:
        name = cotangent_name(value.name)
        if result.has_value(name):  # the same value listed twice as an output
            name = result.fresh_name(name)
        seed = result.add_input(name, value.shape, value.dtype or "float32")
        if id(value) in active:
            contributions.setdefault(id(value), []).append(seed)

    def total(value: Value) -> Value | None:
        parts = contributions.get(id(value))
        if not parts:
            return None
        if len(parts) > 1:
            parts[:] = [_sum(result, parts)]
            _rename(result, parts[0], result.fresh_name(cotangent_name(value.name)))
        return parts[0]

    for node in reversed(source.nodes):
        if id(node) not in needed:
            continue
        cotangents = [total(v) for v in node.outputs]
        if all(c is None for c in cotangents):
            continue
        ctx.node = node
        existing = {id(v) for v in result.values()}
        produced = node.opdef._transpose(ctx, node, cotangents)  # type: ignore[union-attr, misc]
        items = produced.items() if isinstance(produced, Mapping) else enumerate(produced)
        for index, value in items:
            primal = node.input(index)
            if value is None or primal is None or id(primal) not in active:
                continue
            if id(value) not in existing:  # name a new cotangent after its primal value, for readable IR
                _rename(result, value, result.fresh_name(cotangent_name(primal.name)))
                existing.add(id(value))
            if not _same_shape(value.shape, primal.shape):
                raise AssertionError(
                    f"{node.label}: the transpose rule gave input {index} a cotangent of shape "
                    f"{list(value.shape or ())}, but the input has shape {list(primal.shape or ())}"
                )
            contributions.setdefault(id(primal), []).append(value)
        ctx.node = None

    outputs: list[Value] = []
    for value in source.inputs:
        ctx.node = None
        cotangent = total(value)
        if cotangent is None:  # the output does not depend on this input
            cotangent = ctx.zeros(value)
        desired = cotangent_name(value.name)
        if cotangent.name != desired or any(o is cotangent for o in outputs):
            if cotangent in result.inputs or cotangent.is_initializer or any(o is cotangent for o in outputs):
                cotangent = result.op("Identity", cotangent)
            if result.has_value(desired):
                holder = result.value(desired)
                if holder in result.inputs:  # the input is also an output of the source graph
                    desired = result.fresh_name(desired)
                else:
                    _rename(result, holder, result.fresh_name(desired + "_t"))
            _rename(result, cotangent, desired)
        outputs.append(cotangent)
    result.outputs = outputs
    _remove_dead(result)
    result.meta["adjoint_notes"] = notes
    result.verify()
    return result


# ----------------------------------------------------------------------------- matrix view


def _static(shape: Shape | None, dims: Mapping[str, int], what: str) -> tuple[int, ...]:
    if shape is None:
        raise UnsupportedError(f"{what} has no known shape")
    out = []
    for axis, dim in enumerate(shape):
        if isinstance(dim, int):
            out.append(dim)
        elif dim in dims:
            out.append(int(dims[dim]))
        else:
            raise UnsupportedError(
                f"{what} axis {axis} is symbolic ('{dim}'): bind it, e.g. as_operator(graph, dims={{'{dim}': 1}})"
            )
    return tuple(out)


def as_operator(graph: Graph, dims: Mapping[str, int] | None = None):
    """The graph as a `scipy.sparse.linalg.LinearOperator`: matvec runs the graph, rmatvec its adjoint.

    The graph must have one input and one output and be linear in its input. Vectors are the input
    and output tensors flattened in C order, the batch axis included, so one operator covers the whole
    batch (a block-diagonal matrix with one block per sample). Symbolic dimensions, such as a dynamic
    batch, are bound by `dims` (e.g. `{"N": 1}`). Both directions are evaluated in float64 by the
    reference evaluator, so the operator is exact enough for `lsqr`, `cg` or `svds`.
    """
    from scipy.sparse.linalg import LinearOperator

    from .reference import evaluate

    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedError(
            f"graph '{graph.name}' has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; "
            "as_operator needs exactly one of each"
        )
    dims = dict(dims or {})
    for name, size in dims.items():
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 0:
            raise InputError(f"as_operator: dims['{name}'] must be an integer >= 0, got {size!r}")
    transposed = adjoint(graph)
    x, y = graph.inputs[0], graph.outputs[0]
    in_shape = _static(x.shape, dims, f"input '{x.name}'")
    out_shape = _static(y.shape, dims, f"output '{y.name}'")
    seed, back = transposed.inputs[0], transposed.outputs[0]

    def matvec(v: np.ndarray) -> np.ndarray:
        out = evaluate(graph, {x.name: np.reshape(np.asarray(v, np.float64), in_shape)})[y.name]
        return np.asarray(out, np.float64).reshape(-1)

    def rmatvec(v: np.ndarray) -> np.ndarray:
        out = evaluate(transposed, {seed.name: np.reshape(np.asarray(v, np.float64), out_shape)})[back.name]
        return np.asarray(out, np.float64).reshape(-1)

    return LinearOperator((math.prod(out_shape), math.prod(in_shape)), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)


__all__ = ["COTANGENT_SUFFIX", "NotLinearError", "TransposeContext", "adjoint", "as_operator", "cotangent_name"]
