"""Graph verification: structure first (names, definitions before uses, producer and use links),
then every node against its op's rules (shape inference doubles as verification).

Passes run this after every rewrite, so a broken invariant is reported by the pass that broke it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import UnsupportedError, VerificationError
from .ir import Graph, Value

ELIDED_META = "elided_constants"  # set by the text parser: constants whose data the text left out


def check_runnable(graph: Graph) -> None:
    """Before a graph is run or written out: its structure is sound (a hand-built graph may not be),
    and every constant holds its data (one parsed from elided text holds placeholders, which would
    silently compute NaN)."""
    if not isinstance(graph, Graph):
        raise VerificationError(f"expected a lowering.Graph, got {type(graph).__name__}")
    graph.verify()
    elided = graph.meta.get(ELIDED_META, {})
    if elided:
        raise UnsupportedError(
            f"constant(s) {', '.join(sorted(elided))} were elided in the text this graph was parsed from; "
            "print with elide_above=None to keep their data"
        )


def verify_graph(graph: Graph) -> None:
    from .ops import infer_node, lookup, normalize_attrs

    def fail(message: str) -> None:
        raise VerificationError(f"graph '{graph.name}': {message}")

    defined: dict[int, Value] = {}

    def define(value: Value, what: str) -> None:
        if id(value) in defined:
            fail(f"value '{value.name}' is defined twice ({what})")
        if graph._values.get(value.name) is not value:
            fail(f"value '{value.name}' ({what}) is not registered under its name")
        defined[id(value)] = value

    for value in graph.inputs:
        define(value, "graph input")
        if value.producer is not None:
            fail(f"graph input '{value.name}' has a producer")
    for name, value in graph.initializers.items():
        if value.name != name or value.const is None:
            fail(f"initializer '{name}' is inconsistent (name '{value.name}', data {value.const is not None})")
        define(value, "initializer")

    expected_uses: dict[int, list] = {}
    for position, node in enumerate(graph.nodes):
        if node._graph is not graph:
            fail(f"node {position} ({node.label}) does not belong to this graph")
        for index, value in enumerate(node.inputs):
            if value is None:
                continue
            if id(value) not in defined:
                where = "later" if value.producer in graph.nodes else "nowhere in this graph"
                fail(f"{node.label} uses '{value.name}' which is defined {where} (nodes out of topological order?)")
            expected_uses.setdefault(id(value), []).append((node, index))
        for value in node.outputs:
            if value.producer is not node:
                fail(f"value '{value.name}' does not name {node.label} as its producer")
            define(value, f"output of {node.label}")

    for value in defined.values():
        got = sorted((id(n), i) for n, i in value.uses)
        want = sorted((id(n), i) for n, i in expected_uses.get(id(value), []))
        if got != want:
            fail(f"use list of value '{value.name}' is out of date")
    if len(defined) != len(graph._values):
        stray = sorted(set(graph._values) - {v.name for v in defined.values()})
        fail(f"values registered but not defined by any input, initializer or node: {stray[:5]}")
    for value in graph.outputs:
        if not isinstance(value, Value):
            fail(f"graph output {value!r} is not a Value (outputs hold the values themselves, not names)")
        if id(value) not in defined:
            fail(f"graph output '{value.name}' is not defined")
    if len({v.name for v in graph.outputs}) != len(graph.outputs) and len({id(v) for v in graph.outputs}) == len(
        graph.outputs
    ):
        fail("graph output names are not unique")

    for node in graph.nodes:
        if lookup(node.op) is None:
            continue  # opaque node: carried through, its types come from its source
        if not _same_attrs(normalize_attrs(node, node.attrs), node.attrs):
            raise VerificationError(f"{node.label}: attributes were edited into a form the op schema does not accept")
        inferred = infer_node(node, len(node.outputs))
        for value, (shape, dtype) in zip(node.outputs, inferred, strict=True):
            if value.shape != shape or value.dtype != dtype:
                raise VerificationError(
                    f"{node.label}: output '{value.name}' records {value.type_str()} but the op infers "
                    f"{_fmt(shape, dtype)}"
                )


def _same_attrs(a: dict, b: dict) -> bool:
    """Attribute dicts equal, comparing array values (a Constant's tensor) by content."""
    return a.keys() == b.keys() and all(_same_value(a[key], b[key]) for key in a)


def _same_value(left: Any, right: Any) -> bool:
    if isinstance(left, np.ndarray) or isinstance(right, np.ndarray):
        nan_equal = np.asarray(left).dtype.kind in "fc" and np.asarray(right).dtype.kind in "fc"
        return np.shape(left) == np.shape(right) and bool(np.array_equal(left, right, equal_nan=nan_equal))
    if isinstance(left, (list, tuple)) and type(left) is type(right):
        return len(left) == len(right) and all(_same_value(x, y) for x, y in zip(left, right, strict=True))
    return bool(left == right)


def _fmt(shape, dtype) -> str:
    from .text import format_type

    return format_type(shape, dtype)
