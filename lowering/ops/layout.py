"""DepthToSpace and SpaceToDepth (4-D, ONNX semantics), and this project's interleaves of sub-pixel
convolution, any rank and cropped: Interleave (one input per phase) and DepthToSpaceND (the phases
packed in the channels of one input, as the fused form's Conv computes them).

`depth_to_space_nd` builds the N-D DepthToSpace out of standard ONNX ops (Reshape, Transpose,
Reshape; DepthToSpace itself in 2-D with equal blocks), for the lowerings and the ONNX writer.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..ir import Dim, Graph, Node, Value
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


# --------------------------------------------------------------------------- Interleave

interleave = define(
    "Interleave",
    inputs=("phases*",),
    attrs={
        "strides": Attr("ints", required=True, doc="s per spatial axis; Πs inputs, residues in row-major order"),
        "sizes": Attr("ints", doc="output spatial sizes, each <= J·s (default J·s): the rest is cropped"),
    },
    domain="lowering",
    linear_inputs=(0,),
    doc="Y[n, c, j·s + r] = phase_r[n, c, j] on every spatial axis (phase index: r in row-major order), "
    "Y cut to `sizes`. Per-phase sub-pixel convolution writes its phases straight into the output with it.",
)


def residues(strides) -> list[tuple[int, ...]]:
    """The phases' residues r, in the order Interleave takes its inputs."""
    return list(itertools.product(*(range(s) for s in strides)))


def phase_counts(residue, strides, sizes) -> list[int]:
    """How many rows of the phase with `residue` land inside the output, per axis."""
    return [len(range(r, o, s)) for r, s, o in zip(residue, strides, sizes, strict=True)]


@interleave.infer
def _(ctx: InferContext) -> list[TensorType]:
    strides = list(ctx.attr("strides"))
    shapes = [ctx.shape(i) for i in range(len(ctx.node.inputs))]
    if any(s < 1 for s in strides):
        ctx.fail(f"must be >= 1, got {strides}", attr="strides")
    phases = int(np.prod(strides))
    if len(shapes) != phases:
        ctx.fail(f"takes Πstrides = {phases} inputs, got {len(shapes)}")
    first = shapes[0]
    if len(first) != 2 + len(strides):
        ctx.fail(f"inputs must have rank 2 + {len(strides)} (one stride per spatial axis), got {len(first)}")
    for index, shape in enumerate(shapes):
        if tuple(shape) != tuple(first) or ctx.dtype(index) != ctx.dtype(0):
            ctx.fail(f"input {index} is {ctx.dtype(index)}{list(shape)}, input 0 is {ctx.dtype(0)}{list(first)}")
    rows = first[2:]
    if not all(isinstance(d, int) for d in first[1:]):
        ctx.fail(f"channels and spatial sizes must be static, got {list(first[1:])}")
    full = [j * s for j, s in zip(rows, strides, strict=True)]
    sizes = list(ctx.attr("sizes") or full)
    if len(sizes) != len(strides):
        ctx.fail(f"has {len(sizes)} values for {len(strides)} spatial axes", attr="sizes")
    for axis, (o, most) in enumerate(zip(sizes, full, strict=True)):
        if not 0 <= o <= most:
            ctx.fail(f"must be in [0, {most}] (J·s), got {o}", attr="sizes", axis=axis)
    out: tuple[Dim, ...] = (*first[:2], *sizes)
    return [TensorType(out, ctx.dtype(0))]


@interleave.reference
def _(node: Node, *phases) -> list[np.ndarray]:
    strides = list(node.attr("strides"))
    rows = phases[0].shape[2:]
    sizes = list(node.attr("sizes") or [j * s for j, s in zip(rows, strides, strict=True)])
    out = np.empty((*phases[0].shape[:2], *sizes), dtype=phases[0].dtype)
    for phase, residue in zip(phases, residues(strides), strict=True):
        counts = phase_counts(residue, strides, sizes)
        target = tuple(slice(r, None, s) for r, s in zip(residue, strides, strict=True))
        out[(..., *target)] = phase[(..., *(slice(0, c) for c in counts))]
    return [out]


@interleave.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """Each phase gets the strided slice of the cotangent it was written to, zero-extended to J rows."""
    strides = list(node.attr("strides"))
    rank = len(strides)
    rows = node.inputs[0].shape[2:]
    sizes = list(node.outputs[0].shape[2:])
    out = {}
    for index, residue in enumerate(residues(strides)):
        t = ctx.op(
            "Slice",
            cotangents[0],
            ctx.ints(residue, "starts"),
            ctx.ints(sizes, "ends"),
            ctx.ints(range(2, 2 + rank), "axes"),
            ctx.ints(strides, "steps"),
        )
        short = [j - c for j, c in zip(rows, phase_counts(residue, strides, sizes), strict=True)]
        out[index] = ctx.pad(t, [0] * (2 + rank), [0, 0, *short])
    return out


# --------------------------------------------------------------------------- DepthToSpaceND

depth_to_space_nd_op = define(
    "DepthToSpaceND",
    inputs=("input",),
    attrs={
        "blocks": Attr("ints", required=True, doc="s per spatial axis"),
        "mode": Attr("string", "DCR", "channel order of the input: DCR = (phase, channel), CRD = (channel, phase)"),
        "begins": Attr("ints", doc="first output position kept per axis, in the uncropped Q·s grid (default 0)"),
        "sizes": Attr("ints", doc="output spatial sizes (default Q·s − begins)"),
    },
    domain="lowering",
    linear_inputs=(0,),
    doc="T[n, c, q·s + r] = X[n, channel(c, r), q] on every spatial axis (r in row-major order), "
    "Y = T[..., begins : begins + sizes]. DepthToSpace of any rank with its crop: the fused sub-pixel "
    "form's tail in one node, so that each backend picks its own copy pattern.",
)


def _nd_geometry(node: Node, shape) -> tuple[list[int], int, list[int], list[int], list[int]]:
    """blocks, output channels, rows Q, begins and sizes of a DepthToSpaceND on an input of `shape`."""
    blocks = list(node.attr("blocks"))
    rows = list(shape[2:])
    begins = list(node.attr("begins") or [0] * len(blocks))
    full = [q * s for q, s in zip(rows, blocks, strict=True)]
    sizes = list(node.attr("sizes") or [f - b for f, b in zip(full, begins, strict=True)])
    return blocks, shape[1] // int(np.prod(blocks)), rows, begins, sizes


@depth_to_space_nd_op.infer
def _(ctx: InferContext) -> list[TensorType]:
    shape = ctx.shape(0)
    blocks = list(ctx.attr("blocks"))
    rank = len(blocks)
    if len(shape) != 2 + rank:
        ctx.fail(f"input must have rank 2 + {rank} (one block per spatial axis), got {len(shape)}")
    if any(s < 1 for s in blocks):
        ctx.fail(f"must be >= 1, got {blocks}", attr="blocks")
    if ctx.attr("mode") not in ("DCR", "CRD"):
        ctx.fail(f"must be DCR or CRD, got '{ctx.attr('mode')}'", attr="mode")
    if not all(isinstance(d, int) for d in shape[1:]):
        ctx.fail(f"channels and spatial sizes must be static, got {list(shape[1:])}")
    phases = int(np.prod(blocks))
    if shape[1] % phases:
        ctx.fail(f"channels {shape[1]} are not divisible by Πblocks = {phases}")
    for key in ("begins", "sizes"):
        if ctx.attr(key) is not None and len(ctx.attr(key)) != rank:
            ctx.fail(f"has {len(ctx.attr(key))} values for {rank} spatial axes", attr=key)
    _, channels, rows, begins, sizes = _nd_geometry(ctx.node, shape)
    for axis, (b, o, q, s) in enumerate(zip(begins, sizes, rows, blocks, strict=True)):
        if b < 0 or o < 0 or b + o > q * s:
            ctx.fail(f"begin {b} + size {o} must lie in [0, {q * s}] (Q·s)", attr="sizes", axis=axis)
    return [TensorType((shape[0], channels, *sizes), ctx.dtype(0))]


def _phase_split(
    batch: int, blocks: list[int], channels: int, rows: list[int], mode: str
) -> tuple[list[int], list[int]]:
    """Reshape sizes and permutation taking (N, C, Q...) to (N, M, Q0, s0, Q1, s1, ...)."""
    d = len(blocks)
    if mode == "DCR":  # (N, s..., M, Q...)
        return [batch, *blocks, channels, *rows], [0, d + 1] + [x for j in range(d) for x in (d + 2 + j, 1 + j)]
    return [batch, channels, *blocks, *rows], [0, 1] + [x for j in range(d) for x in (2 + d + j, 2 + j)]


@depth_to_space_nd_op.reference
def _(node: Node, x) -> list[np.ndarray]:
    blocks, channels, rows, begins, sizes = _nd_geometry(node, x.shape)
    split, perm = _phase_split(x.shape[0], blocks, channels, rows, node.attr("mode"))
    t = (
        x.reshape(split)
        .transpose(perm)
        .reshape(x.shape[0], channels, *(q * s for q, s in zip(rows, blocks, strict=True)))
    )
    return [t[(..., *(slice(b, b + o) for b, o in zip(begins, sizes, strict=True)))]]


@depth_to_space_nd_op.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """Zero-extend the cotangent to the Q·s grid, then undo the interleave (Reshape, Transpose, Reshape)."""
    shape = node.inputs[0].shape
    blocks, channels, rows, begins, sizes = _nd_geometry(node, shape)
    full = [q * s for q, s in zip(rows, blocks, strict=True)]
    z = ctx.pad(
        cotangents[0], [0, 0, *begins], [0, 0, *(f - b - o for f, b, o in zip(full, begins, sizes, strict=True))]
    )
    split, perm = _phase_split(0, blocks, channels, rows, node.attr("mode"))
    grid = [0, channels, *(x for q, s in zip(rows, blocks, strict=True) for x in (q, s))]
    t = ctx.op("Reshape", z, ctx.ints(grid, "shape"))
    t = ctx.op("Transpose", t, perm=[int(i) for i in np.argsort(perm)])
    t = ctx.op("Reshape", t, ctx.ints(split, "shape"))
    return {0: ctx.op("Reshape", t, ctx.ints([0, shape[1], *rows], "shape"))}


def depth_to_space_nd(
    graph: Graph, y: Value, channels: int, strides: list[int], rows: list[int], order: str, before: Node
) -> Value:
    """Phase p of row q goes to position q·s + p, any rank. `order` is the channel layout of y:
    DCR = (phase, channel), CRD = (channel, phase), as ONNX DepthToSpace names them."""
    d = len(strides)
    if all(s == 1 for s in strides):
        return y
    if d == 2 and strides[0] == strides[1]:
        return graph.op("DepthToSpace", y, blocksize=strides[0], mode=order, before=before)
    split, perm = _phase_split(0, strides, channels, rows, order)
    t = graph.op("Reshape", y, graph.const(np.asarray(split, np.int64), "phase_split"), before=before)
    t = graph.op("Transpose", t, perm=perm, before=before)
    merged = [0, channels, *(q * s for q, s in zip(rows, strides, strict=True))]
    return graph.op("Reshape", t, graph.const(np.asarray(merged, np.int64), "interleaved"), before=before)
