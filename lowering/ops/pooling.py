"""This project's NearestUpsample and SumPool: a transpose pair over non-overlapping windows.

`NearestUpsample` repeats every sample `s` times along each spatial axis (ONNX `Resize` in
nearest mode with integer scales); `SumPool` sums each window of `k` samples with stride `k`
(AveragePool times the window size, floor mode). With `s == k` each is the other's transpose:
upsampling copies a sample into its window, the transpose adds the window back into the sample.
The unpooling "switches" of deconvolutional networks are exactly these, masked.
"""

from __future__ import annotations

import numpy as np

from ..ir import Dim, Node
from .registry import Attr, InferContext, TensorType, define

nearest_upsample = define(
    "NearestUpsample",
    inputs=("X",),
    attrs={"scales": Attr("ints", required=True, doc="integer repeat factor per spatial axis (>= 1)")},
    domain="lowering",
    linear_inputs=(0,),
    doc="(N, C, i...) -> (N, C, i·s...): every sample repeated s times per spatial axis (nearest neighbour).",
)

sum_pool = define(
    "SumPool",
    inputs=("X",),
    attrs={"kernel_shape": Attr("ints", required=True, doc="window per spatial axis; the stride equals it")},
    domain="lowering",
    linear_inputs=(0,),
    doc="(N, C, i...) -> (N, C, floor(i/k)...): sum over non-overlapping windows; a remainder is dropped.",
)


def _factors(ctx_or_node, values, rank: int, attr: str) -> list[int]:
    values = list(values)
    if rank < 1:
        ctx_or_node.fail(f"input must have rank >= 3 (N, C, spatial...), got rank {rank + 2}")
    if len(values) != rank:
        ctx_or_node.fail(f"has {len(values)} values, expected one per spatial axis ({rank})", attr=attr)
    for axis, v in enumerate(values):
        if v < 1:
            ctx_or_node.fail(f"must be >= 1, got {v}", attr=attr, axis=axis)
    return values


@nearest_upsample.infer
def _(ctx: InferContext) -> list[TensorType]:
    shape = ctx.shape(0)
    scales = _factors(ctx, ctx.attr("scales"), len(shape) - 2, "scales")
    out: list[Dim] = list(shape[:2])
    for axis, (dim, s) in enumerate(zip(shape[2:], scales, strict=True)):
        if s == 1:
            out.append(dim)
        elif not isinstance(dim, int):
            ctx.fail(f"cannot upsample symbolic spatial axis {axis} ('{dim}')")
        else:
            out.append(dim * s)
    return [TensorType(tuple(out), ctx.dtype(0))]


@nearest_upsample.reference
def _(node: Node, x) -> list[np.ndarray]:
    scales = _factors(node, node.attr("scales"), x.ndim - 2, "scales")
    for axis, s in enumerate(scales):
        x = np.repeat(x, s, axis=axis + 2)
    return [x]


@sum_pool.infer
def _(ctx: InferContext) -> list[TensorType]:
    shape = ctx.shape(0)
    kernel = _factors(ctx, ctx.attr("kernel_shape"), len(shape) - 2, "kernel_shape")
    out: list[Dim] = list(shape[:2])
    for axis, (dim, k) in enumerate(zip(shape[2:], kernel, strict=True)):
        if k == 1:
            out.append(dim)
        elif not isinstance(dim, int):
            ctx.fail(f"cannot pool symbolic spatial axis {axis} ('{dim}')")
        elif dim < k:
            ctx.fail(f"spatial axis {axis} has size {dim}, smaller than the window {k}")
        else:
            out.append(dim // k)
    return [TensorType(tuple(out), ctx.dtype(0))]


@sum_pool.reference
def _(node: Node, x) -> list[np.ndarray]:
    kernel = _factors(node, node.attr("kernel_shape"), x.ndim - 2, "kernel_shape")
    rank = len(kernel)
    outs = [dim // k for dim, k in zip(x.shape[2:], kernel, strict=True)]
    cropped = x[(..., *(slice(0, o * k) for o, k in zip(outs, kernel, strict=True)))]
    split = [d for o, k in zip(outs, kernel, strict=True) for d in (o, k)]
    blocks = cropped.reshape(*x.shape[:2], *split)
    return [blocks.sum(axis=tuple(3 + 2 * a for a in range(rank)))]


@nearest_upsample.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """Each output sample came from one input sample: add every window back (SumPool, stride = scale)."""
    return {0: ctx.op("SumPool", cotangents[0], kernel_shape=list(node.attr("scales")))}


@sum_pool.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """Spread each sum back over its window (NearestUpsample); the dropped remainder gets zeros."""
    kernel = list(node.attr("kernel_shape"))
    x = node.inputs[0]
    up = ctx.op("NearestUpsample", cotangents[0], scales=kernel)
    rest = [0 if k == 1 else dim - (dim // k) * k for dim, k in zip(x.shape[2:], kernel, strict=True)]  # type: ignore[index]
    if any(rest):
        up = ctx.pad(up, [0] * len(x.shape), [0, 0, *rest])  # type: ignore[arg-type]
    return {0: up}
