"""Expand this project's own ops into standard ONNX ops, so every exported model runs anywhere.

- Flip(x, axes)          -> Slice with step -1 on those axes
- InteriorPad(x, z)      -> Reshape (a size-1 axis after each spread axis) + Pad (z zeros on it)
                            + Reshape (merge) + Slice (drop the trailing zeros)
- Im2Col(x, block)       -> depthwise Conv with one-hot kernels (output channel c·Πb + tap picks
                            tap `tap` of channel c) + Reshape to (N, C·Πb, L)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..ir import Graph, Node, Value
from .onnx_sparse import expand_sparse_matmul

INT64_MIN = int(np.iinfo(np.int64).min)


def _flip(graph: Graph, node: Node) -> Value:
    axes = list(node.attr("axes"))
    n = len(axes)
    return graph.op(
        "Slice",
        node.inputs[0],
        graph.const(np.full(n, -1, np.int64), "flip_starts"),
        graph.const(np.full(n, INT64_MIN, np.int64), "flip_ends"),
        graph.const(np.asarray(axes, np.int64), "flip_axes"),
        graph.const(np.full(n, -1, np.int64), "flip_steps"),
        before=node,
    )


def _interior_pad(graph: Graph, node: Node) -> Value:
    x = node.inputs[0]
    interior = list(node.attr("interior"))
    shape = list(x.shape)
    spread = [a for a, z in enumerate(interior) if z > 0 and shape[a] != 0]
    if not spread:
        return graph.op("Identity", x, before=node)
    expanded: list[int] = []
    pads_end: list[int] = []
    merged: list[int] = []
    for axis, dim in enumerate(shape):
        expanded.append(0 if isinstance(dim, str) else dim)
        pads_end.append(0)
        if axis in spread:
            expanded.append(1)
            pads_end.append(interior[axis])
            merged.append(dim * (interior[axis] + 1))
        else:
            merged.append(0 if isinstance(dim, str) else dim)
    t = graph.op("Reshape", x, graph.const(np.asarray(expanded, np.int64), "ip_shape"), before=node)
    t = graph.op(
        "Pad",
        t,
        graph.const(np.asarray([0] * len(pads_end) + pads_end, np.int64), "ip_pads"),
        graph.const(np.zeros((), dtype=x.dtype), "ip_zero"),
        before=node,
    )
    t = graph.op("Reshape", t, graph.const(np.asarray(merged, np.int64), "ip_merged"), before=node)
    ends = [(shape[a] - 1) * (interior[a] + 1) + 1 for a in spread]
    return graph.op(
        "Slice",
        t,
        graph.const(np.zeros(len(spread), np.int64), "ip_starts"),
        graph.const(np.asarray(ends, np.int64), "ip_ends"),
        graph.const(np.asarray(spread, np.int64), "ip_axes"),
        before=node,
    )


def _im2col(graph: Graph, node: Node) -> Value:
    x = node.inputs[0]
    block = [int(v) for v in graph.constant_value(node.inputs[1]).reshape(-1)]  # type: ignore[union-attr]
    channels = x.shape[1]
    taps = math.prod(block)
    kernel = np.zeros((channels * taps, 1, *block), dtype=x.dtype)
    eye = np.eye(taps, dtype=x.dtype).reshape(taps, *block)
    for c in range(channels):
        kernel[c * taps : (c + 1) * taps, 0] = eye
    attrs = {k: node.attrs[k] for k in ("dilations", "pads", "strides") if k in node.attrs}
    y = graph.op("Conv", x, graph.const(kernel, "im2col_onehot"), before=node, group=channels, **attrs)
    out = node.outputs[0].shape
    return graph.op("Reshape", y, graph.const(np.asarray([0, out[1], out[2]], np.int64), "im2col_shape"), before=node)


EXPANSIONS: dict[str, Callable[[Graph, Node], Value]] = {
    "Flip": _flip,
    "InteriorPad": _interior_pad,
    "Im2Col": _im2col,
    "SparseMatMul": expand_sparse_matmul,
}


def legalize_for_onnx(graph: Graph) -> Graph:
    """A copy of `graph` with every op of this project's domain expanded; `graph` itself if none."""
    if not any(n.op in EXPANSIONS for n in graph.nodes):
        return graph
    graph = graph.copy()
    for node in [n for n in graph.nodes if n.op in EXPANSIONS]:
        replacement = EXPANSIONS[node.op](graph, node)
        graph.replace_all_uses_with(node.outputs[0], replacement)
        operands = [v for v in node.inputs if v is not None and v.is_initializer]
        graph.remove_node(node)
        for value in operands:  # e.g. Im2Col's block shape, now baked into the one-hot kernel
            if not value.uses and graph.initializers.get(value.name) is value and value not in graph.outputs:
                graph.remove_initializer(value)
    return graph
