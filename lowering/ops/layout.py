"""DepthToSpace and SpaceToDepth (4-D, ONNX semantics): the interleave of sub-pixel convolution."""

from __future__ import annotations

import numpy as np

from ..ir import Node
from .registry import Attr, InferContext, TensorType, define

depth_to_space = define(
    "DepthToSpace",
    inputs=("input",),
    attrs={"blocksize": Attr("int", required=True), "mode": Attr("string", "DCR", "DCR or CRD")},
    linear_inputs=(0,),
)
space_to_depth = define(
    "SpaceToDepth", inputs=("input",), attrs={"blocksize": Attr("int", required=True)}, linear_inputs=(0,)
)


def _check(ctx: InferContext) -> tuple[int, tuple]:
    shape = ctx.shape(0)
    if len(shape) != 4:
        ctx.fail(f"input must be 4-D (N, C, H, W), got rank {len(shape)}")
    block = ctx.attr("blocksize")
    if block < 1:
        ctx.fail(f"must be >= 1, got {block}", attr="blocksize")
    return block, shape


@depth_to_space.infer
def _(ctx: InferContext) -> list[TensorType]:
    block, (n, c, h, w) = _check(ctx)
    if ctx.attr("mode") not in ("DCR", "CRD"):
        ctx.fail(f"must be DCR or CRD, got '{ctx.attr('mode')}'", attr="mode")
    if c % (block * block):
        ctx.fail(f"channels {c} are not divisible by blocksize² = {block * block}")
    return [TensorType((n, c // (block * block), h * block, w * block), ctx.dtype(0))]


@depth_to_space.reference
def _(node: Node, x) -> list[np.ndarray]:
    b = node.attr("blocksize")
    n, c, h, w = x.shape
    if node.attr("mode") == "DCR":
        t = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        t = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return [t.reshape(n, c // (b * b), h * b, w * b)]


@space_to_depth.infer
def _(ctx: InferContext) -> list[TensorType]:
    block, (n, c, h, w) = _check(ctx)
    for axis, dim in ((2, h), (3, w)):
        if not isinstance(dim, int) or dim % block:
            ctx.fail(f"axis {axis} size {dim} is not divisible by blocksize {block}")
    return [TensorType((n, c * block * block, h // block, w // block), ctx.dtype(0))]


@space_to_depth.reference
def _(node: Node, x) -> list[np.ndarray]:
    b = node.attr("blocksize")
    n, c, h, w = x.shape
    t = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    return [t.reshape(n, c * b * b, h // b, w // b)]


# --------------------------------------------------------------------------- transpose rules
# Both ops only permute elements, so each transpose is the inverse permutation.


@depth_to_space.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """DCR: SpaceToDepth is its inverse. CRD: undo the interleave with Reshape, Transpose, Reshape."""
    b = node.attr("blocksize")
    z = cotangents[0]
    if node.attr("mode") == "DCR":
        return {0: ctx.op("SpaceToDepth", z, blocksize=b)}
    _, c, h, w = node.inputs[0].shape
    t = ctx.op("Reshape", z, ctx.ints([0, c // (b * b), h, b, w, b], "shape"))
    t = ctx.op("Transpose", t, perm=[0, 1, 3, 5, 2, 4])
    return {0: ctx.op("Reshape", t, ctx.ints([0, c, h, w], "shape"))}


@space_to_depth.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    return {0: ctx.op("DepthToSpace", cotangents[0], blocksize=node.attr("blocksize"), mode="DCR")}
