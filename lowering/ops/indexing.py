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
    known = ctx.const(1)
    size = data[axis]
    if known is not None and isinstance(size, int) and np.size(known):
        bad = np.asarray(known)[(known < -size) | (known >= size)]
        if bad.size:  # constant indices are checked here; a run-time index out of range is an error there
            valid = f"{-size} to {size - 1}"
            ctx.fail(f"index {int(bad.flat[0])} is out of range for axis {axis} of size {size} (valid: {valid})")
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


# --------------------------------------------------------------------------- transpose rules
# With constant indices both ops only move elements: Gather's transpose scatter-adds the cotangent
# back (ScatterND 'add' into zeros), ScatterND's gathers it (Gather on the flattened indexed axes).


def _zeros_along_first(ctx, z, size: int):
    """Zeros shaped like z but with `size` on axis 0, built from z without arithmetic (symbolic axes allowed)."""
    empty = ctx.op("Slice", z, ctx.ints([0], "starts"), ctx.ints([0], "ends"), ctx.ints([0], "axes"))
    rank = len(z.shape)
    return ctx.pad(empty, [0] * rank, [size] + [0] * (rank - 1))


@gather.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """Gather(x, idx, axis) -> scatter-add of the cotangent into zeros at idx (ScatterND with 'add')."""
    data, indices = node.inputs
    if ctx.is_active(indices):
        ctx.refuse("its indices depend on the graph inputs, so it is not linear")
    axis = node.attr("axis") % len(data.shape)
    dim = data.shape[axis]
    if not isinstance(dim, int):
        ctx.refuse(f"gathers along symbolic axis {axis} ('{dim}')")
    idx = np.asarray(ctx.array(indices), np.int64).reshape(-1)
    idx = np.where(idx < 0, idx + dim, idx)
    lead, rest = list(data.shape[:axis]), list(data.shape[axis + 1 :])
    z = cotangents[0]
    if tuple(indices.shape) != (idx.size,):
        z = ctx.reshape(z, (*lead, idx.size, *rest))
    perm = [axis, *range(axis), *range(axis + 1, len(data.shape))]
    if axis:
        z = ctx.op("Transpose", z, perm=perm)
    scattered = ctx.op(
        "ScatterND", _zeros_along_first(ctx, z, dim), ctx.const(idx.reshape(-1, 1), "indices"), z, reduction="add"
    )
    if axis:
        inverse = [perm.index(a) for a in range(len(perm))]
        scattered = ctx.op("Transpose", scattered, perm=inverse)
    return {0: scattered}


@scatter_nd.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """ScatterND with 'add' (or 'none' without repeated indices): data gets the cotangent (with the
    overwritten positions zeroed for 'none'), updates get it gathered at the indices."""
    data, indices, updates = node.inputs
    reduction = node.attr("reduction")
    if reduction not in ("none", "add"):
        ctx.refuse(f"reduction '{reduction}' is not linear")
    if ctx.is_active(indices):
        ctx.refuse("its indices depend on the graph inputs, so it is not linear")
    for index, value in ((0, data), (2, updates)):
        if not ctx.is_active(value) and np.any(ctx.array(value) != 0):
            ctx.refuse(f"input {index} is the nonzero constant '{value.name}', so it is affine, not linear")
    depth = indices.shape[-1]
    lead = data.shape[:depth]
    if not all(isinstance(d, int) for d in lead):
        ctx.refuse(f"indexes symbolic axes {list(lead)}")
    idx = np.asarray(ctx.array(indices), np.int64).reshape(-1, depth)
    idx = np.where(idx < 0, idx + np.asarray(lead), idx)
    flat = np.ravel_multi_index(tuple(idx.T), lead) if depth else np.zeros(len(idx), np.int64)
    if reduction == "none" and len(np.unique(flat)) != len(flat):
        ctx.refuse("writes some positions twice without a reduction, so the result depends on the order")
    z = cotangents[0]
    out: dict[int, object] = {}
    if ctx.is_active(data):
        if reduction == "add":
            out[0] = z
        else:
            mask = np.ones(int(np.prod(lead)), dtype=data.dtype)
            mask[flat] = 0
            keep = ctx.const(mask.reshape(*lead, *([1] * (len(data.shape) - depth))), "kept")
            out[0] = ctx.op("Mul", z, keep)
    if ctx.is_active(updates):
        rows = ctx.reshape(z, (int(np.prod(lead)), *data.shape[depth:])) if depth != 1 else z
        picked = ctx.op("Gather", rows, ctx.const(flat.reshape(indices.shape[:-1]), "indices"), axis=0)
        out[2] = picked
    return out
