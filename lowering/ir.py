"""The graph IR: Values, Nodes and Graphs.

A `Value` is an SSA edge: produced by at most one node (or by the graph as an input or a constant
initializer) and used by any number of nodes. Values compare by identity, never by name, so a pass
can rename or replace them without confusing two edges that happen to share a name. Every edit goes
through `Graph` so that producers, uses and unique names stay consistent; `Graph.verify` checks that
they are, and re-runs each op's shape inference and verification from the op registry.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NoReturn

import numpy as np

from . import dtypes
from .errors import LoweringError, VerificationError

Dim = int | str
Shape = tuple[Dim, ...]


class Value:
    """A tensor edge of the graph: name, shape, element type, producer and uses.

    `shape` is a tuple of ints, with a string for a symbolic dimension (e.g. a dynamic batch), or
    None when unknown. `const` holds the data of a constant initializer (read-only), else None.
    """

    __slots__ = ("_graph", "const", "dtype", "name", "producer", "shape", "uses")

    def __init__(self, name: str, shape: Shape | None, dtype: str | None) -> None:
        self.name = name
        self.shape = None if shape is None else tuple(shape)
        self.dtype = None if dtype is None else dtypes.canonical(dtype)
        self.producer: Node | None = None
        self.uses: list[tuple[Node, int]] = []
        self.const: np.ndarray | None = None
        self._graph: Graph | None = None

    @property
    def rank(self) -> int | None:
        """The number of dimensions, or None when the shape is unknown."""
        return None if self.shape is None else len(self.shape)

    @property
    def is_initializer(self) -> bool:
        """Whether this value is a constant initializer (its data is in `const`)."""
        return self.const is not None

    def type_str(self) -> str:
        """The type as the text form prints it, e.g. `f32[1,64,32,32]`."""
        from .text import format_type

        return format_type(self.shape, self.dtype)

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type_str()}"


class Node:
    """One operation: op type, ordered inputs (None for an omitted optional input), attributes, outputs.

    `attrs` holds only the attributes that were given; `attr()` falls back to the op's schema
    default, so a printed or exported node says exactly what its source said.
    """

    __slots__ = ("_graph", "attrs", "domain", "inputs", "name", "op", "outputs")

    def __init__(
        self,
        op: str,
        inputs: Sequence[Value | None],
        attrs: dict[str, Any] | None = None,
        outputs: Sequence[Value] = (),
        name: str = "",
        domain: str = "",
    ) -> None:
        self.op = op
        self.inputs: list[Value | None] = list(inputs)
        self.attrs: dict[str, Any] = dict(attrs or {})
        self.outputs: list[Value] = list(outputs)
        self.name = name
        self.domain = domain
        self._graph: Graph | None = None

    @property
    def opdef(self):  # -> OpDef | None (import cycle)
        """The op's definition in the op registry (schema, shape inference, reference), or None."""
        from .ops import lookup

        return lookup(self.op)

    def attr(self, name: str) -> Any:
        """The attribute's value, or its schema default when the node does not set it."""
        if name in self.attrs:
            return self.attrs[name]
        opdef = self.opdef
        if opdef is None or name not in opdef.attrs:
            raise KeyError(f"{self.op} has no attribute {name!r}")
        return opdef.attrs[name].default

    @property
    def label(self) -> str:
        """How error messages name this node: op type and node name."""
        return f"{self.op} '{self.name}'" if self.name else self.op

    def input(self, index: int) -> Value | None:
        """Input `index`, or None when it is omitted or past the end (optional trailing inputs)."""
        return self.inputs[index] if index < len(self.inputs) else None

    def fail(self, message: str, *, attr: str | None = None, axis: int | None = None) -> NoReturn:
        """Raise a one-line VerificationError naming this node, the attribute and the axis."""
        where = self.label
        if attr is not None:
            where += f": attribute '{attr}'"
        if axis is not None:
            where += f" axis {axis}"
        raise VerificationError(f"{where}: {message}")

    def __repr__(self) -> str:
        outs = ", ".join(f"%{v.name}" for v in self.outputs)
        ins = ", ".join("none" if v is None else f"%{v.name}" for v in self.inputs)
        return f"{outs} = {self.op}({ins})"


_NAME_SUFFIX = re.compile(r"^(.*?)(?:_(\d+))?$", re.DOTALL)  # names may hold any character


class Graph:
    """An ordered list of nodes with named inputs, outputs and constant initializers."""

    def __init__(self, name: str = "main") -> None:
        if not isinstance(name, str):
            raise VerificationError(f"a graph's name must be a str, got {type(name).__name__} {name!r}")
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []
        self.initializers: dict[str, Value] = {}
        self.meta: dict[str, Any] = {}  # format-specific facts (ONNX opset, producer, ...) carried through
        self._values: dict[str, Value] = {}
        self._counter = itertools.count()

    # ----------------------------------------------------------------- names and values
    def _claim(self, value: Value) -> Value:
        if not isinstance(value.name, str) or not value.name:
            raise VerificationError(f"graph '{self.name}': a value name must be a non-empty str, got {value.name!r}")
        if value.name in self._values:
            raise VerificationError(f"graph '{self.name}': value name '{value.name}' is defined twice")
        self._values[value.name] = value
        value._graph = self
        return value

    def fresh_name(self, hint: str = "t") -> str:
        """A value name not yet used in this graph, derived from `hint`."""
        hint = hint or "t"
        if hint not in self._values:
            return hint
        base = _NAME_SUFFIX.match(hint).group(1) or "t"  # type: ignore[union-attr]
        while True:
            candidate = f"{base}_{next(self._counter)}"
            if candidate not in self._values:
                return candidate

    def value(self, name: str) -> Value:
        """The value named `name` (an input, initializer or node output); KeyError if there is none."""
        if name not in self._values:
            raise KeyError(f"graph '{self.name}' has no value named '{name}'")
        return self._values[name]

    def has_value(self, name: str) -> bool:
        """Whether a value of this name exists in the graph."""
        return name in self._values

    def values(self) -> Iterator[Value]:
        """Every value of the graph (inputs, initializers, node outputs), in definition order."""
        return iter(list(self._values.values()))

    def rename(self, value: Value, new_name: str) -> None:
        """Give `value` a new name that is not yet used in the graph."""
        if value.name == new_name:
            return
        if new_name in self._values:
            raise VerificationError(f"graph '{self.name}': value name '{new_name}' is already used")
        del self._values[value.name]
        value.name = new_name
        self._values[new_name] = value

    # ----------------------------------------------------------------- building
    def add_input(self, name: str, shape: Shape | None, dtype: str = "float32") -> Value:
        """Append a graph input; a str in `shape` is a symbolic dimension (e.g. a dynamic batch)."""
        for axis, dim in enumerate(shape or ()):
            if (
                isinstance(dim, bool)
                or not isinstance(dim, (int, np.integer, str))
                or (not isinstance(dim, str) and dim < 0)
            ):
                raise VerificationError(f"graph input '{name}' axis {axis}: size must be >= 0 or a name, got {dim!r}")
        shape = None if shape is None else tuple(d if isinstance(d, str) else int(d) for d in shape)
        value = self._claim(Value(name, shape, dtype))
        self.inputs.append(value)
        return value

    def add_initializer(self, name: str, array: np.ndarray, copy: bool = True) -> Value:
        """A named constant tensor (ONNX initializer), made read-only. The array is copied unless `copy`
        is False, which a pass may ask for an array it has just made and keeps no reference to."""
        data = np.array(array, copy=True) if copy or not isinstance(array, np.ndarray) else array
        data.setflags(write=False)
        value = self._claim(Value(name, data.shape, data.dtype.name))
        value.const = data
        self.initializers[name] = value
        return value

    def const(
        self, array: np.ndarray | Sequence[Any], hint: str = "const", dtype: str | None = None, copy: bool = True
    ) -> Value:
        """A new constant with a fresh name; the usual way for a pass to add weights or shape operands."""
        data = np.asarray(array, dtype=dtype)
        return self.add_initializer(self.fresh_name(hint), data, copy=copy)

    def add_node(
        self,
        op: str,
        inputs: Sequence[Value | None],
        attrs: dict[str, Any] | None = None,
        *,
        outputs: int | Sequence[str] = 1,
        name: str = "",
        domain: str | None = None,
        before: Node | None = None,
        output_types: Sequence[tuple[Shape | None, str | None]] | None = None,
    ) -> Node:
        """Create a node, infer its output types from the op registry and insert it.

        `outputs` is a count (names are made fresh from the node's op) or a list of names.
        The node goes at the end, or just before `before`. Shape inference also verifies the node,
        so an invalid node never enters the graph.
        """
        from .ops import infer_node, lookup, normalize_attrs

        opdef = lookup(op)
        node = Node(op, inputs, {}, (), name, domain if domain is not None else (opdef.domain if opdef else ""))
        node.attrs = normalize_attrs(node, attrs or {})
        for value in node.inputs:
            if value is not None and value._graph is not self:
                raise VerificationError(f"{node.label}: input '{value.name}' does not belong to graph '{self.name}'")
        if isinstance(outputs, int):
            base = name or f"{op.lower()}_out"
            names: list[str] = []
            for index in range(outputs):  # fresh, and distinct from each other before any is claimed
                candidate = self.fresh_name(base if index == 0 else f"{base}_{index}")
                while candidate in names:
                    candidate = self.fresh_name(f"{candidate}_{index}")
                names.append(candidate)
        else:
            names = list(outputs)
        types = list(output_types) if output_types is not None else infer_node(node, len(names))
        if len(types) != len(names):
            raise VerificationError(f"{node.label}: expected {len(types)} outputs, got {len(names)} names")
        # every check before the first change: a refused node leaves the graph as it was
        for index, out_name in enumerate(names):
            if not isinstance(out_name, str) or not out_name:
                raise VerificationError(f"{node.label}: output name {index} must be a non-empty str, got {out_name!r}")
            if out_name in self._values or out_name in names[:index]:
                raise VerificationError(f"graph '{self.name}': value name '{out_name}' is defined twice")
        if before is not None and (before._graph is not self or before not in self.nodes):
            raise VerificationError(f"{node.label}: 'before' node {before.label} is not in graph '{self.name}'")
        for out_name, (shape, dtype) in zip(names, types, strict=True):
            value = self._claim(Value(out_name, shape, dtype))
            value.producer = node
            node.outputs.append(value)
        for index, value in enumerate(node.inputs):
            if value is not None:
                value.uses.append((node, index))
        node._graph = self
        if before is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(self.nodes.index(before), node)
        return node

    def op(self, op: str, *inputs: Value | None, name: str = "", before: Node | None = None, **attrs: Any) -> Value:
        """Builder shorthand: add a one-output node and return its output value."""
        return self.add_node(op, inputs, attrs, name=name, before=before).outputs[0]

    # ----------------------------------------------------------------- editing
    def set_input(self, node: Node, index: int, value: Value | None) -> None:
        """Make `value` (or None: omitted) input `index` of `node`, keeping the uses lists right."""
        if node._graph is not self:
            raise VerificationError(f"{node.label}: set_input on a node that is not in graph '{self.name}'")
        if not 0 <= index < len(node.inputs):
            raise VerificationError(f"{node.label}: input index {index} is out of range (it has {len(node.inputs)})")
        if value is not None and value._graph is not self:
            raise VerificationError(f"{node.label}: value '{value.name}' does not belong to graph '{self.name}'")
        old = node.inputs[index]
        if old is not None:
            old.uses.remove((node, index))
        node.inputs[index] = value
        if value is not None:
            value.uses.append((node, index))

    def replace_all_uses_with(self, old: Value, new: Value, *, keep_output_name: bool = True) -> None:
        """Point every use of `old` (node inputs and graph outputs) at `new`.

        When `old` is a graph output and `keep_output_name` holds, `new` takes over its name, so
        a rewrite never changes the names users call the graph with.
        """
        if old is new:
            return
        for node, index in list(old.uses):
            self.set_input(node, index, new)
        if any(v is old for v in self.outputs):
            self.outputs = [new if v is old else v for v in self.outputs]
            if keep_output_name and new.name != old.name:
                old_name = old.name
                self.rename(old, self.fresh_name(old_name + "_replaced"))
                self.rename(new, old_name)

    def remove_node(self, node: Node) -> None:
        """Remove a node whose outputs are no longer used."""
        if node._graph is not self:
            raise VerificationError(f"{node.label}: cannot remove a node that is not in graph '{self.name}'")
        for value in node.outputs:
            if value.uses or any(v is value for v in self.outputs):
                raise VerificationError(f"{node.label}: cannot remove node, output '{value.name}' is still used")
        for index, value in enumerate(node.inputs):
            if value is not None:
                value.uses.remove((node, index))
        for value in node.outputs:
            del self._values[value.name]
            value._graph = None
        self.nodes.remove(node)
        node._graph = None

    def remove_initializer(self, value: Value) -> None:
        """Remove a constant initializer that nothing uses any more."""
        if value.uses or any(v is value for v in self.outputs):
            raise VerificationError(f"graph '{self.name}': initializer '{value.name}' is still used")
        del self.initializers[value.name]
        del self._values[value.name]
        value._graph = None

    def constant_value(self, value: Value | None) -> np.ndarray | None:
        """The data of a value known at compile time (an initializer or a Constant node), else None."""
        if value is None:
            return None
        if value.const is not None:
            return value.const
        producer = value.producer
        if producer is not None and producer.op == "Constant":
            from .ops.tensor import constant_attr_value

            return constant_attr_value(producer)
        return None

    # ----------------------------------------------------------------- order and analyses
    def topological_sort(self) -> None:
        """Reorder nodes so each comes after the producers of its inputs (stable where possible)."""
        position = {id(n): i for i, n in enumerate(self.nodes)}
        indegree = {id(n): 0 for n in self.nodes}
        consumers: dict[int, list[Node]] = {id(n): [] for n in self.nodes}
        for node in self.nodes:
            for producer in {id(v.producer): v.producer for v in node.inputs if v is not None and v.producer}.values():
                if id(producer) in indegree:
                    indegree[id(node)] += 1
                    consumers[id(producer)].append(node)
        import heapq

        ready = [(position[id(n)], id(n), n) for n in self.nodes if indegree[id(n)] == 0]
        heapq.heapify(ready)
        ordered: list[Node] = []
        while ready:
            _, _, node = heapq.heappop(ready)
            ordered.append(node)
            for consumer in consumers[id(node)]:
                indegree[id(consumer)] -= 1
                if indegree[id(consumer)] == 0:
                    heapq.heappush(ready, (position[id(consumer)], id(consumer), consumer))
        if len(ordered) != len(self.nodes):
            raise VerificationError(f"graph '{self.name}' has a cycle")
        self.nodes = ordered

    def to_networkx(self):
        """A `networkx.DiGraph` with one vertex per node and per value, edges along data flow."""
        import networkx as nx

        dg = nx.DiGraph()
        for value in self._values.values():
            dg.add_node(("value", value.name), kind="value", shape=value.shape, dtype=value.dtype)
        for index, node in enumerate(self.nodes):
            key = ("node", index)
            dg.add_node(key, kind="node", op=node.op, name=node.name, attrs=dict(node.attrs))
            for value in node.inputs:
                if value is not None:
                    dg.add_edge(("value", value.name), key)
            for value in node.outputs:
                dg.add_edge(key, ("value", value.name))
        return dg

    def nodes_of(self, op: str) -> list[Node]:
        """The nodes of op type `op`, in graph order (a list: safe to edit the graph while iterating)."""
        return [n for n in self.nodes if n.op == op]

    # ----------------------------------------------------------------- checks
    def verify(self) -> None:
        """Check structure (names, definitions before uses, producers, uses) and every node's op rules."""
        from .verify import verify_graph

        verify_graph(self)

    def infer_shapes(self) -> None:
        """Recompute every node's output types from its inputs, in order."""
        from .ops import infer_node

        for node in self.nodes:
            for value, (shape, dtype) in zip(node.outputs, infer_node(node, len(node.outputs)), strict=True):
                value.shape, value.dtype = shape, dtype

    # ----------------------------------------------------------------- copies and text
    def copy(self) -> Graph:
        """A structural deep copy; constant arrays are shared (they are read-only)."""
        new = Graph(self.name)
        new.meta = {
            k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v) for k, v in self.meta.items()
        }
        mapping: dict[int, Value] = {}
        for value in self.inputs:
            mapping[id(value)] = new.add_input(value.name, value.shape, value.dtype)
        for name, value in self.initializers.items():
            copied = new._claim(Value(name, value.shape, value.dtype))
            copied.const = value.const
            new.initializers[name] = copied
            mapping[id(value)] = copied
        for node in self.nodes:
            copied_node = new.add_node(
                node.op,
                [None if v is None else mapping[id(v)] for v in node.inputs],
                node.attrs,
                outputs=[v.name for v in node.outputs],
                name=node.name,
                domain=node.domain,
                output_types=[(v.shape, v.dtype) for v in node.outputs],
            )
            for old, fresh in zip(node.outputs, copied_node.outputs, strict=True):
                mapping[id(old)] = fresh
        new.outputs = [mapping[id(v)] for v in self.outputs]
        return new

    def __str__(self) -> str:
        from .text import print_graph

        return print_graph(self)

    def format(self, *, elide_above: int | None = 16) -> str:
        """The text form; constants with more than `elide_above` elements are elided (None: print all)."""
        from .text import print_graph

        return print_graph(self, elide_above=elide_above)

    def __repr__(self) -> str:
        return f"<Graph '{self.name}': {len(self.inputs)} inputs, {len(self.nodes)} nodes, {len(self.outputs)} outputs>"


def all_consumers(values: Iterable[Value]) -> list[Node]:
    """The nodes that use any of `values`, each once, in order of first use."""
    seen: dict[int, Node] = {}
    for value in values:
        for node, _ in value.uses:
            seen.setdefault(id(node), node)
    return list(seen.values())


__all__ = ["Dim", "Graph", "LoweringError", "Node", "Shape", "Value"]
