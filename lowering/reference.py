"""The float64 reference evaluator: runs any graph straight from the op definitions.

It is the oracle every lowering and backend is measured against, so it takes no shortcut that a
lowering also takes: every node runs its registry reference, in float64, in graph order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from . import dtypes
from .errors import InputError, UnsupportedError
from .ir import Graph, Value
from .verify import check_runnable


def _as_reference(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    return array.astype(np.float64) if array.dtype.kind == "f" else array


def check_inputs(graph: Graph, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Match run-time arrays to graph inputs by name; one clear line for a missing, extra or misshapen one."""
    if not isinstance(inputs, Mapping):
        raise InputError(f"inputs must be a mapping of input name -> array, got {type(inputs).__name__}")
    names = [v.name for v in graph.inputs]
    missing = [n for n in names if n not in inputs]
    extra = sorted(set(inputs) - set(names))
    if missing:
        raise InputError(f"missing input(s) {', '.join(missing)}; the graph takes {', '.join(names)}")
    if extra:
        raise InputError(f"unknown input(s) {', '.join(extra)}; the graph takes {', '.join(names)}")
    bound: dict[str, int] = {}
    out: dict[str, np.ndarray] = {}
    for value in graph.inputs:
        try:
            array = np.asarray(inputs[value.name])
        except ValueError as error:  # a ragged nested list
            raise InputError(f"input '{value.name}' is not an array: {error}") from None
        if array.dtype.kind not in "biuf":
            raise InputError(f"input '{value.name}' has element type {array.dtype.name}, not a number type")
        _check_shape(value, array, bound)
        if value.dtype is not None and dtypes.is_float(value.dtype) != (array.dtype.kind == "f"):
            raise InputError(
                f"input '{value.name}' has element type {array.dtype.name}, the graph expects {value.dtype}"
            )
        out[value.name] = array
    return out


def _check_shape(value: Value, array: np.ndarray, bound: dict[str, int]) -> None:
    if value.shape is None:
        return
    if array.ndim != len(value.shape):
        raise InputError(
            f"input '{value.name}' has shape {list(array.shape)} (rank {array.ndim}), "
            f"the graph expects {list(value.shape)} (rank {len(value.shape)})"
        )
    for axis, (want, got) in enumerate(zip(value.shape, array.shape, strict=True)):
        if isinstance(want, str):
            if bound.setdefault(want, got) != got:
                raise InputError(
                    f"input '{value.name}' axis {axis} is {got} but '{want}' was already bound to {bound[want]}"
                )
        elif want != got:
            raise InputError(
                f"input '{value.name}' has shape {list(array.shape)}, the graph expects {list(value.shape)} "
                f"(axis {axis}: {got} vs {want})"
            )


def evaluate(graph: Graph, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run `graph` in float64 on named inputs and return its outputs by name.

    Float inputs and constants are promoted to float64 whatever their declared type, so the result
    is the exact function of the definitions, free of any backend's rounding.
    """
    check_runnable(graph)
    env: dict[int, np.ndarray] = {}
    for name, array in check_inputs(graph, inputs).items():
        env[id(graph.value(name))] = _as_reference(array)
    for value in graph.initializers.values():
        env[id(value)] = _as_reference(value.const)  # type: ignore[arg-type]
    for node in graph.nodes:
        opdef = node.opdef
        if opdef is None or opdef._reference is None:
            raise UnsupportedError(f"{node.label}: op '{node.op}' has no reference semantics")
        args = [None if v is None else env[id(v)] for v in node.inputs]
        results = opdef.evaluate(node, args)
        for value, result in zip(node.outputs, results, strict=True):
            env[id(value)] = _as_reference(result)
    return {value.name: env[id(value)] for value in graph.outputs}
