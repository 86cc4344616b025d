"""Sliding-window ops: ONNX Col2Im (scatter-add of column blocks into an image) and this project's
Im2Col (its adjoint: gather every block of an image into columns).

Both use the same block geometry: block `l` and tap `κ` touch image position `s·l + δ·κ − p_begin`
on each axis, with `L = Π (floor((image + p_begin + p_end − K)/s) + 1)` blocks.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..ir import Node
from .conv import window
from .registry import Attr, InferContext, TensorType, define
from .shapes import static_dims

_WINDOW_ATTRS = {
    "dilations": Attr("ints", None, "per spatial axis (default 1)"),
    "pads": Attr("ints", None, "begin pads of every spatial axis, then end pads (default 0)"),
    "strides": Attr("ints", None, "per spatial axis (default 1)"),
}

col2im = define(
    "Col2Im",
    inputs=("input", "image_shape", "block_shape"),
    attrs=dict(_WINDOW_ATTRS),
    linear_inputs=(0,),
    doc="ONNX Col2Im (opset 18): (N, C·Πblock, L) -> (N, C, *image_shape), overlapping blocks summed.",
)
im2col = define(
    "Im2Col",
    inputs=("input", "block_shape"),
    attrs=dict(_WINDOW_ATTRS),
    domain="lowering",
    linear_inputs=(0,),
    doc="(N, C, *image) -> (N, C·Πblock, L): every block as a column; the adjoint of Col2Im.",
)


def block_grid(fail, image, block, node_attr) -> tuple[list[int], list[int], list[int], list[int]]:
    """(strides, dilations, pads, blocks per axis) for an image and block shape, checked."""
    rank = len(image)
    if len(block) != rank:
        fail(f"block_shape has {len(block)} values but the image has {rank} spatial axes")

    def per_axis(name: str, default: int, length: int) -> list[int]:
        values = node_attr(name)
        if values is None:
            return [default] * length
        if len(values) != length:
            fail(f"has {len(values)} values, expected {length}", attr=name)
        return list(values)

    strides, dilations, pads = (
        per_axis("strides", 1, rank),
        per_axis("dilations", 1, rank),
        per_axis("pads", 0, 2 * rank),
    )
    blocks = []
    for axis in range(rank):
        if strides[axis] < 1 or dilations[axis] < 1:
            fail(f"strides and dilations must be >= 1, got {strides[axis]} and {dilations[axis]}", axis=axis)
        if block[axis] < 1:
            fail(f"block_shape[{axis}] must be >= 1, got {block[axis]}")
        effective = (block[axis] - 1) * dilations[axis] + 1
        span = image[axis] + pads[axis] + pads[axis + rank] - effective
        if span < 0:
            fail(
                f"padded image size {image[axis] + pads[axis] + pads[axis + rank]} on axis {axis} is smaller "
                f"than the effective block {effective}"
            )
        blocks.append(span // strides[axis] + 1)
    return strides, dilations, pads, blocks


def _ints(array) -> list[int]:
    return [int(v) for v in np.asarray(array).reshape(-1)]


@col2im.infer
def _(ctx: InferContext) -> list[TensorType]:
    shape = ctx.shape(0)
    if len(shape) != 3:
        ctx.fail(f"input must be 3-D (N, C·Πblock, L), got rank {len(shape)}")
    image = _ints(ctx.require_const(1, "image_shape"))
    block = _ints(ctx.require_const(2, "block_shape"))
    _, _, _, blocks = block_grid(ctx.fail, image, block, ctx.attr)
    n, cb, length = shape
    cb, length = static_dims(ctx, (cb, length), "input")
    if cb % math.prod(block):
        ctx.fail(f"input dimension 1 ({cb}) is not divisible by the block size {math.prod(block)}")
    if length != math.prod(blocks):
        ctx.fail(f"input dimension 2 is {length} but the image has {math.prod(blocks)} blocks {blocks}")
    return [TensorType((n, cb // math.prod(block), *image), ctx.dtype(0))]


@col2im.reference
def _(node: Node, cols, image_shape, block_shape) -> list[np.ndarray]:
    image, block = _ints(image_shape), _ints(block_shape)
    strides, dilations, pads, blocks = block_grid(node.fail, image, block, node.attr)
    rank = len(image)
    n = cols.shape[0]
    channels = cols.shape[1] // math.prod(block)
    cols = cols.reshape(n, channels, *block, *blocks)
    padded = [i + pads[a] + pads[a + rank] for a, i in enumerate(image)]
    canvas = np.zeros((n, channels, *padded), dtype=np.result_type(cols.dtype, np.float64))
    for tap in itertools.product(*(range(b) for b in block)):
        target = tuple(
            slice(dilations[a] * tap[a], dilations[a] * tap[a] + strides[a] * (blocks[a] - 1) + 1, strides[a])
            for a in range(rank)
        )
        canvas[(..., *target)] += cols[(slice(None), slice(None), *tap)]
    return [window(canvas, tuple(pads[:rank]), tuple(image))]


@im2col.infer
def _(ctx: InferContext) -> list[TensorType]:
    shape = ctx.shape(0)
    if len(shape) < 3:
        ctx.fail(f"input must have rank >= 3 (N, C, spatial...), got {len(shape)}")
    image = static_dims(ctx, shape[2:], "input spatial")
    block = _ints(ctx.require_const(1, "block_shape"))
    _, _, _, blocks = block_grid(ctx.fail, image, block, ctx.attr)
    channels = static_dims(ctx, shape[1:2], "input channel")[0]
    return [TensorType((shape[0], channels * math.prod(block), math.prod(blocks)), ctx.dtype(0))]


@im2col.reference
def _(node: Node, x, block_shape) -> list[np.ndarray]:
    image, block = list(x.shape[2:]), _ints(block_shape)
    strides, dilations, pads, blocks = block_grid(node.fail, image, block, node.attr)
    rank = len(image)
    padded = window(x, tuple(-p for p in pads[:rank]), tuple(i + pads[a] + pads[a + rank] for a, i in enumerate(image)))
    n, channels = x.shape[:2]
    cols = np.zeros((n, channels, *block, *blocks), dtype=x.dtype)
    for tap in itertools.product(*(range(b) for b in block)):
        source = tuple(
            slice(dilations[a] * tap[a], dilations[a] * tap[a] + strides[a] * (blocks[a] - 1) + 1, strides[a])
            for a in range(rank)
        )
        cols[(slice(None), slice(None), *tap)] = padded[(..., *source)]
    return [cols.reshape(n, channels * math.prod(block), math.prod(blocks))]


# --------------------------------------------------------------------------- transpose rules


def _window_attrs(node: Node) -> dict:
    return {k: list(node.attrs[k]) for k in ("dilations", "pads", "strides") if k in node.attrs}


@col2im.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """Col2Im scatter-adds blocks; its transpose gathers them: Im2Col with the same geometry."""
    block = ctx.constant(node.inputs[2])
    return {0: ctx.op("Im2Col", cotangents[0], block, **_window_attrs(node))}


@im2col.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    image = ctx.ints(list(node.inputs[0].shape[2:]), "image_shape")
    block = ctx.constant(node.inputs[1])
    return {0: ctx.op("Col2Im", cotangents[0], image, block, **_window_attrs(node))}
