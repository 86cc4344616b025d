"""Conv and ConvTranspose: schema, shape inference and the float64 reference.

The references follow the definitions of DESIGN.md section 2 literally, one kernel tap at a time:
ConvTranspose scatters `X[i]·W[κ]` to `o = s·i + δ·κ − p_begin`; Conv gathers
`X[s·o + δ·κ − p_begin]·W[κ]`. They share nothing with the lowerings, which is what makes them
an oracle.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .. import dtypes
from ..geometry import (
    ConvGeometry,
    ConvTransposeGeometry,
    conv_geometry,
    conv_transpose_geometry,
    node_geometry,
)
from ..ir import Node
from .registry import Attr, InferContext, TensorType, define

_COMMON = {
    "auto_pad": Attr("string", "NOTSET", "NOTSET (explicit pads), SAME_UPPER, SAME_LOWER or VALID"),
    "dilations": Attr("ints", None, "kernel dilation per spatial axis (default 1)"),
    "group": Attr("int", 1, "number of channel groups"),
    "kernel_shape": Attr("ints", None, "kernel size per spatial axis; must agree with W"),
    "pads": Attr("ints", None, "begin pads of every spatial axis, then end pads (default 0)"),
    "strides": Attr("ints", None, "stride per spatial axis (default 1)"),
}

conv_transpose = define(
    "ConvTranspose",
    inputs=("X", "W", "B?"),
    attrs={
        **_COMMON,
        "output_padding": Attr("ints", None, "extra output elements at the end of each spatial axis"),
        "output_shape": Attr("ints", None, "spatial output size; pads are derived from it"),
    },
    linear_inputs=(0,),
    doc="Transposed convolution (ONNX ConvTranspose), the adjoint of Conv.",
)

conv = define(
    "Conv",
    inputs=("X", "W", "B?"),
    attrs=dict(_COMMON),
    linear_inputs=(0,),
    doc="Convolution (ONNX Conv, a cross-correlation).",
)


def _check_types(ctx: InferContext) -> str:
    dtype = ctx.dtype(0)
    if not dtypes.is_float(dtype):
        ctx.fail(f"input X must be a float tensor, got {dtype}")
    for index, what in ((1, "weight W"), (2, "bias B")):
        value = ctx.input(index)
        if value is not None and value.dtype is not None and value.dtype != dtype:
            ctx.fail(f"{what} has element type {value.dtype} but input X has {dtype}")
    return dtype


def _resolve(ctx: InferContext, resolver):
    b = ctx.input(2)
    return resolver(ctx.attr, ctx.has, ctx.shape(0), ctx.shape(1), None if b is None else b.shape, ctx.fail)


@conv_transpose.infer
def _infer_conv_transpose(ctx: InferContext) -> list[TensorType]:
    dtype = _check_types(ctx)
    geometry = _resolve(ctx, conv_transpose_geometry)
    return [TensorType(geometry.output_shape, dtype)]


@conv.infer
def _infer_conv(ctx: InferContext) -> list[TensorType]:
    dtype = _check_types(ctx)
    geometry = _resolve(ctx, conv_geometry)
    return [TensorType(geometry.output_shape, dtype)]


# --------------------------------------------------------------------------- reference semantics


def window(src: np.ndarray, offsets: tuple[int, ...], sizes: tuple[int, ...]) -> np.ndarray:
    """`out[..., o] = src[..., o + offset]` on the trailing axes where that index exists, else 0."""
    rank = len(offsets)
    lead = src.shape[: src.ndim - rank]
    out = np.zeros((*lead, *sizes), dtype=src.dtype)
    dst_slices, src_slices = [], []
    for offset, size, extent in zip(offsets, sizes, src.shape[src.ndim - rank :], strict=True):
        lo, hi = max(0, -offset), min(size, extent - offset)
        if hi <= lo:
            return out
        dst_slices.append(slice(lo, hi))
        src_slices.append(slice(lo + offset, hi + offset))
    out[(..., *dst_slices)] = src[(..., *src_slices)]
    return out


def conv_transpose_reference(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None, g: ConvTransposeGeometry
) -> np.ndarray:
    """ConvTranspose by its scatter definition, in float64, one kernel tap at a time."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n = x.shape[0]
    cg, mg = g.in_channels_per_group, g.out_channels_per_group
    xg = x.reshape(n, g.group, cg, math.prod(g.in_spatial))  # (N, g, C/g, Πi); N may be 0
    wg = w.reshape(g.group, cg, mg, *g.kernel)
    reach = tuple(s * (i - 1) + K for s, i, K in zip(g.strides, g.in_spatial, g.effective_kernel, strict=True))
    canvas = np.zeros((n, g.group, mg, *reach))
    for tap in itertools.product(*(range(k) for k in g.kernel)):
        contribution = np.einsum("ngcp,gcm->ngmp", xg, wg[(..., *tap)], optimize=True).reshape(
            n, g.group, mg, *g.in_spatial
        )
        target = tuple(
            slice(d * t, d * t + s * (i - 1) + 1, s)
            for d, t, s, i in zip(g.dilations, tap, g.strides, g.in_spatial, strict=True)
        )
        canvas[(..., *target)] += contribution
    y = window(canvas.reshape(n, g.out_channels, *reach), g.pads_begin, g.out_spatial)
    if b is not None:
        y += np.asarray(b, np.float64).reshape(-1, *([1] * g.rank))
    return y


def conv_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, g: ConvGeometry) -> np.ndarray:
    """Conv by its gather definition, in float64, one kernel tap at a time."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n = x.shape[0]
    cg, mg = g.in_channels // g.group, g.out_channels // g.group
    padded_size = tuple(i + pb + pe for i, pb, pe in zip(g.in_spatial, g.pads_begin, g.pads_end, strict=True))
    padded = window(x, tuple(-p for p in g.pads_begin), padded_size).reshape(n, g.group, cg, *padded_size)
    wg = w.reshape(g.group, mg, cg, *g.kernel)
    y = np.zeros((n, g.group, mg, *g.out_spatial))
    for tap in itertools.product(*(range(k) for k in g.kernel)):
        source = tuple(
            slice(d * t, d * t + s * (o - 1) + 1, s)
            for d, t, s, o in zip(g.dilations, tap, g.strides, g.out_spatial, strict=True)
        )
        y += np.einsum("ngc...,gmc->ngm...", padded[(..., *source)], wg[(..., *tap)], optimize=True)
    y = y.reshape(n, g.out_channels, *g.out_spatial)
    if b is not None:
        y += np.asarray(b, np.float64).reshape(-1, *([1] * g.rank))
    return y


@conv_transpose.reference
def _ref_conv_transpose(node: Node, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> list[np.ndarray]:
    geometry = node_geometry(node, x.shape, w.shape, None if b is None else b.shape)
    return [conv_transpose_reference(x, w, b, geometry)]  # type: ignore[arg-type]


@conv.reference
def _ref_conv(node: Node, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> list[np.ndarray]:
    geometry = node_geometry(node, x.shape, w.shape, None if b is None else b.shape)
    return [conv_reference(x, w, b, geometry)]  # type: ignore[arg-type]


# --------------------------------------------------------------------------- transpose rules


@conv.transpose
def _transpose_conv(ctx, node: Node, cotangents) -> dict[int, object]:
    """Conv -> ConvTranspose with the same weights, strides, dilations, pads and group; output_padding
    gives back the remainder the Conv's floor dropped, so the result has the Conv's input shape."""
    ctx.require_no_bias(2)
    g = node_geometry(node).adjoint()
    attrs = {
        "dilations": list(g.dilations),
        "group": g.group,
        "kernel_shape": list(g.kernel),
        "pads": g.pads,
        "strides": list(g.strides),
    }
    if any(g.output_padding):
        attrs["output_padding"] = list(g.output_padding)
    return {0: ctx.op("ConvTranspose", cotangents[0], ctx.constant(node.inputs[1]), **attrs)}


@conv_transpose.transpose
def _transpose_conv_transpose(ctx, node: Node, cotangents) -> dict[int, object]:
    """ConvTranspose -> Conv with the same weights and pads (p_begin, p_end − output_padding).

    A negative pad (a crop) is not valid on a Conv in ONNX, so then all padding moves into a Pad in
    front of it; the padded size is s·(i − 1) + K, at least the kernel.
    """
    ctx.require_no_bias(2)
    g = node_geometry(node).adjoint()
    z = cotangents[0]
    pads = g.pads
    if min(pads) < 0:
        z = ctx.pad(z, [0, 0, *g.pads_begin], [0, 0, *g.pads_end])
        pads = [0] * len(pads)
    attrs = {
        "dilations": list(g.dilations),
        "group": g.group,
        "kernel_shape": list(g.kernel),
        "pads": pads,
        "strides": list(g.strides),
    }
    return {0: ctx.op("Conv", z, ctx.constant(node.inputs[1]), **attrs)}
