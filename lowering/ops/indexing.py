"""Gather and ScatterND (ONNX semantics): the index ops a sparse product is expressed with in
standard ONNX."""

from __future__ import annotations

import numpy as np

from ..ir import Node
from .registry import Attr, InferContext, TensorType, define
from .shapes import normalize_axis

gather = define("Gather", inputs=("data", "indices"), attrs={"axis": Attr("int", 0)}, linear_inputs=(0,))


@gather.infer
def _(ctx: InferContext) -> list[TensorType]:
    data, indices = ctx.shape(0), ctx.shape(1)
    axis = normalize_axis(ctx, ctx.attr("axis"), len(data))
    if ctx.dtype(1) not in ("int64", "int32"):
        ctx.fail(f"indices must be int32 or int64, got {ctx.dtype(1)}")
    return [TensorType((*data[:axis], *indices, *data[axis + 1 :]), ctx.dtype(0))]


@gather.reference
def _(node: Node, data, indices) -> list[np.ndarray]:
    axis = node.attr("axis") % data.ndim
    indices = np.where(indices < 0, indices + data.shape[axis], indices)
    return [np.take(data, indices, axis=axis)]


REDUCTIONS = {"none": None, "add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}

scatter_nd = define(
    "ScatterND",
    inputs=("data", "indices", "updates"),
    attrs={"reduction": Attr("string", "none", "none, add, mul, max or min (opset >= 16 for all but none)")},
    linear_inputs=(0, 2),
)


@scatter_nd.infer
def _(ctx: InferContext) -> list[TensorType]:
    data, indices, updates = ctx.shape(0), ctx.shape(1), ctx.shape(2)
    if ctx.attr("reduction") not in REDUCTIONS:
        ctx.fail(f"must be one of {', '.join(REDUCTIONS)}, got '{ctx.attr('reduction')}'", attr="reduction")
    if not indices or not isinstance(indices[-1], int) or indices[-1] > len(data):
        ctx.fail(f"indices shape {list(indices)} does not index data of rank {len(data)}")
    expected = (*indices[:-1], *data[indices[-1] :])
    if tuple(updates) != tuple(expected):
        ctx.fail(f"updates must have shape {list(expected)}, got {list(updates)}")
    return [TensorType(data, ctx.dtype(0))]


@scatter_nd.reference
def _(node: Node, data, indices, updates) -> list[np.ndarray]:
    out = np.array(data, copy=True)
    depth = indices.shape[-1]
    flat_index = indices.reshape(-1, depth)
    flat_updates = updates.reshape(-1, *data.shape[depth:])
    reduce = REDUCTIONS[node.attr("reduction")]
    target = tuple(flat_index[:, a] for a in range(depth))
    if reduce is None:
        out[target] = flat_updates
    else:
        reduce.at(out, target, flat_updates)
    return [out]
