"""Expand this project's own ops into standard ONNX ops of the target opset, so an exported model runs
on any runtime of that opset.

- DepthToSpaceND(x, s)   -> opset >= 18, CRD: Reshape to columns + one Col2Im (blocks = strides = s,
                            the crop as its padding); else strides <= 2: Reshape + Split into phases
                            + the interleave tree below; else DepthToSpace (2-D, equal blocks) or
                            Reshape + Transpose + Reshape; then Slice when it crops
- Flip(x, axes)          -> Slice with step -1 on those axes
- InteriorPad(x, z)      -> Reshape (a size-1 axis after each spread axis) + Pad (z zeros on it)
                            + Reshape (merge) + Slice (drop the trailing zeros)
- Im2Col(x, block)       -> depthwise Conv with one-hot kernels (output channel c·Πb + tap picks
                            tap `tap` of channel c) + Reshape to (N, C·Πb, L)
- Interleave(phases, s)  -> opset >= 18: one Concat (channel-major) + one Col2Im as above; else
                            strides <= 2, the interleave tree: per axis, innermost first, Reshape (a
                            unit axis after it) + Concat on that axis + Reshape (merge); else Concat
                            + DepthToSpace as above; then Slice to the output sizes
- NearestUpsample(x, s)  -> depthwise ConvTranspose with all-ones s-kernels, stride s
- SumPool(x, k)          -> depthwise Conv with all-ones k-kernels, stride k (both exact: products by 1,
                            and each other's transpose, so a written model can be transposed again)

The Col2Im forms are taken for float32 and float16 (onnxruntime's Col2Im is float-only) and non-empty
outputs; Col2Im adds each phase into a zeroed output, so a −0.0 element comes out as +0.0 (every other
value, NaN and Inf included, passes unchanged). Below opset 18 (`--opset 17`) a written model uses
only ops every ONNX runtime has had for years.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..ir import Graph, Node, Value
from ..ops.layout import depth_to_space_nd
from ..ops.tensor import INT64_MIN
from .onnx_sparse import expand_sparse_matmul

# Up to this stride per axis the phases are interleaved by Concats on unit axes (onnxruntime copies
# those in parallel, whole inner blocks at a time); above it one DepthToSpace or Transpose, whose
# single pass beat 8 element-wise Concats per axis (FCN x8: 0.65x vs 0.85x of the native kernel)
CONCAT_INTERLEAVE_MAX_STRIDE = 2


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
    return spread_zeros(graph, node.inputs[0], list(node.attr("interior")), node)


def spread_zeros(graph: Graph, x: Value, interior: list[int], node: Node) -> Value:
    """`interior[a]` zeros between neighbours on axis a, in standard ONNX ops (before `node`)."""
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


def _nearest_upsample(graph: Graph, node: Node) -> Value:
    x = node.inputs[0]
    scales = list(node.attr("scales"))
    channels = x.shape[1]
    ones = graph.const(np.ones((channels, 1, *scales), dtype=x.dtype), "upsample_ones")
    return graph.op("ConvTranspose", x, ones, group=channels, kernel_shape=scales, strides=scales, before=node)


def _sum_pool(graph: Graph, node: Node) -> Value:
    x = node.inputs[0]
    kernel = list(node.attr("kernel_shape"))
    channels = x.shape[1]
    ones = graph.const(np.ones((channels, 1, *kernel), dtype=x.dtype), "sum_pool_ones")
    return graph.op("Conv", x, ones, group=channels, kernel_shape=kernel, strides=kernel, before=node)


def _interleave_axis(graph: Graph, phases: list[Value], axis: int, before: Node) -> Value:
    """Phases of equal shape, interleaved along `axis`: each gets a unit axis after `axis` (a Reshape,
    no copy), one Concat along it, a Reshape merges them. Measured against Concat + DepthToSpace on the
    suite's stride-2 per-phase layers: 1.1-1.6x faster in onnxruntime."""
    shape = list(phases[0].shape)
    fixed = [0, *shape[1:]]  # 0: the batch as it comes (it may be symbolic)
    spread = graph.const(np.asarray([*fixed[: axis + 1], 1, *fixed[axis + 1 :]], np.int64), "phase_unit_axis")
    units = [graph.op("Reshape", p, spread, before=before) for p in phases]
    stacked = graph.op("Concat", *units, axis=axis + 1, before=before)
    merged = [*fixed[:axis], shape[axis] * len(phases), *fixed[axis + 1 :]]
    return graph.op("Reshape", stacked, graph.const(np.asarray(merged, np.int64), "phase_merged"), before=before)


def _interleave_tree(graph: Graph, phases: list[Value], strides: list[int], before: Node) -> Value:
    """Phases in row-major residue order, interleaved one axis at a time, innermost first."""
    for axis in reversed(range(len(strides))):
        s = strides[axis]
        if s > 1:
            phases = [_interleave_axis(graph, phases[i : i + s], 2 + axis, before) for i in range(0, len(phases), s)]
    (y,) = phases
    return y


def _fold_phases(
    graph: Graph, phases: Value, channels: int, axes: tuple[list[int], list[int], list[int], list[int]], before: Node
) -> Value:
    """Phases held channel-major (channel m·Πs + phase: Col2Im's column (m, tap)) folded by one Col2Im
    whose blocks are the phases: they do not overlap (stride = block), and the crop is Col2Im's
    padding, so one pass writes the output in its final shape. `axes`: per spatial axis the rows Q,
    blocks s, crop begins and output sizes."""
    rows, blocks, begins, sizes = axes
    ends = [q * s - b - o for q, s, b, o in zip(rows, blocks, begins, sizes, strict=True)]
    shape = graph.const(np.asarray([0, channels * math.prod(blocks), math.prod(rows)], np.int64), "phase_columns")
    return graph.op(
        "Col2Im",
        graph.op("Reshape", phases, shape, before=before),
        graph.const(np.asarray(sizes, np.int64), "image_shape"),
        graph.const(np.asarray(blocks, np.int64), "phase_block"),
        before=before,
        strides=blocks,
        pads=begins + ends,
    )


def _interleave_col2im(graph: Graph, node: Node) -> Value:
    """Interleave as one Concat of the phases, channel-major ((N, M, phases, ΠQ)), folded by Col2Im."""
    strides = list(node.attr("strides"))
    channels, *rows = node.inputs[0].shape[1:]
    unit = graph.const(np.asarray([0, channels, 1, math.prod(rows)], np.int64), "phase_column")
    stacked = graph.op("Concat", *(graph.op("Reshape", p, unit, before=node) for p in node.inputs), axis=2, before=node)
    sizes = list(node.outputs[0].shape[2:])
    return _fold_phases(graph, stacked, channels, (rows, strides, [0] * len(strides), sizes), node)


def _interleave(graph: Graph, node: Node) -> Value:
    """Below opset 18 (or for a single phase, which is the input itself): the interleave tree (strides
    <= CONCAT_INTERLEAVE_MAX_STRIDE) or Concat + DepthToSpace (DCR), cropped to `sizes`."""
    strides = list(node.attr("strides"))
    channels, *rows = node.inputs[0].shape[1:]
    if max(strides) <= CONCAT_INTERLEAVE_MAX_STRIDE:
        y = _interleave_tree(graph, list(node.inputs), strides, node)
    else:
        stacked = graph.op("Concat", *node.inputs, axis=1, before=node)
        y = depth_to_space_nd(graph, stacked, channels, strides, rows, "DCR", node)
    sizes = list(node.outputs[0].shape[2:])
    if sizes == [j * s for j, s in zip(rows, strides, strict=True)]:
        return y if y is not node.inputs[0] else graph.op("Identity", y, before=node)  # never rename an input
    rank = len(strides)
    starts, axes = (
        graph.const([0] * rank, "crop_starts", "int64"),
        graph.const(range(2, 2 + rank), "crop_axes", "int64"),
    )
    return graph.op("Slice", y, starts, graph.const(sizes, "crop_ends", "int64"), axes, before=node)


def _split_phases(graph: Graph, x: Value, channels: int, blocks: list[int], mode: str, before: Node) -> list[Value]:
    """The Πs phases of a DepthToSpace input (DCR: phase-major channels, CRD: channel-major), as
    (N, channels, Q...) tensors in row-major residue order: one Split on a phase axis."""
    phases = math.prod(blocks)
    fixed = [0, *x.shape[2:]]  # 0: the batch as it comes
    grouped = [fixed[0], phases, channels, *fixed[1:]] if mode == "DCR" else [fixed[0], channels, phases, *fixed[1:]]
    t = graph.op("Reshape", x, graph.const(np.asarray(grouped, np.int64), "phase_axis"), before=before)
    axis = 1 if mode == "DCR" else 2
    split = graph.const(np.ones(phases, np.int64), "phase_split")
    pieces = graph.add_node("Split", [t, split], {"axis": axis}, outputs=phases, before=before).outputs
    flat = graph.const(np.asarray([fixed[0], channels, *fixed[1:]], np.int64), "phase_shape")
    return [graph.op("Reshape", piece, flat, before=before) for piece in pieces]


def _depth_to_space_col2im(graph: Graph, node: Node) -> Value:
    """DepthToSpaceND in CRD order (its channels are already Col2Im's columns), folded by Col2Im."""
    x = node.inputs[0]
    blocks = list(node.attr("blocks"))
    begins = list(node.attr("begins") or [0] * len(blocks))
    axes = (list(x.shape[2:]), blocks, begins, list(node.outputs[0].shape[2:]))
    return _fold_phases(graph, x, node.outputs[0].shape[1], axes, node)


def _depth_to_space_nd(graph: Graph, node: Node) -> Value:
    """Below opset 18 or in DCR order: split into phases + the interleave tree (blocks <=
    CONCAT_INTERLEAVE_MAX_STRIDE; measured 1.1-1.4x faster than DepthToSpace on the suite's k4 s2
    layers) or DepthToSpace / Reshape + Transpose + Reshape, then the crop as a Slice."""
    x = node.inputs[0]
    blocks = list(node.attr("blocks"))
    rows = list(x.shape[2:])
    channels, mode = node.outputs[0].shape[1], node.attr("mode")
    if math.prod(blocks) > 1 and max(blocks) <= CONCAT_INTERLEAVE_MAX_STRIDE:
        y = _interleave_tree(graph, _split_phases(graph, x, channels, blocks, mode, node), blocks, node)
    else:
        y = depth_to_space_nd(graph, x, channels, blocks, rows, mode, node)
    rank = len(blocks)
    begins = list(node.attr("begins") or [0] * rank)
    sizes = list(node.outputs[0].shape[2:])
    if not any(begins) and sizes == [q * s for q, s in zip(rows, blocks, strict=True)]:
        return y if y is not x else graph.op("Identity", y, before=node)  # never rename an input
    return graph.op(
        "Slice",
        y,
        graph.const(begins, "crop_starts", "int64"),
        graph.const([b + o for b, o in zip(begins, sizes, strict=True)], "crop_ends", "int64"),
        graph.const(range(2, 2 + rank), "crop_axes", "int64"),
        before=node,
    )


EXPANSIONS: dict[str, Callable[[Graph, Node], Value]] = {
    "DepthToSpaceND": _depth_to_space_nd,
    "Flip": _flip,
    "Interleave": _interleave,
    "InteriorPad": _interior_pad,
    "Im2Col": _im2col,
    "SparseMatMul": expand_sparse_matmul,
    "NearestUpsample": _nearest_upsample,
    "SumPool": _sum_pool,
}


def _col2im_dilated_off_2d(graph: Graph, node: Node) -> bool:
    image = graph.constant_value(node.inputs[1])
    return image is not None and image.size != 2 and max(node.attr("dilations") or [1]) > 1


def _col2im_undilated(graph: Graph, node: Node) -> Value:
    """Col2Im with dilations δ as Col2Im with dilation 1 over blocks of size (k − 1)·δ + 1 whose
    in-between taps are zero columns (zeros spread between the block taps)."""
    cols = node.inputs[0]
    block = [int(v) for v in graph.constant_value(node.inputs[2]).reshape(-1)]  # type: ignore[union-attr]
    dilations = list(node.attr("dilations"))
    _, cb, length = cols.shape
    channels = cb // int(np.prod(block))
    spread = [(k - 1) * d + 1 for k, d in zip(block, dilations, strict=True)]
    t = graph.op(
        "Reshape", cols, graph.const(np.asarray([0, channels, *block, length], np.int64), "blocks"), before=node
    )
    t = spread_zeros(graph, t, [0, 0, *(d - 1 for d in dilations), 0], node)
    t = graph.op(
        "Reshape",
        t,
        graph.const(np.asarray([0, channels * int(np.prod(spread)), length], np.int64), "spread_cols"),
        before=node,
    )
    attrs = {k: node.attrs[k] for k in ("pads", "strides") if k in node.attrs}
    return graph.op(
        "Col2Im", t, node.inputs[1], graph.const(np.asarray(spread, np.int64), "spread_block"), before=node, **attrs
    )


# op -> (does this node hit a runtime defect, its replacement): onnxruntime 1.32's Col2Im sums wrongly
# when a dilation is > 1 outside 2-D.
WORKAROUNDS: dict[str, tuple[Callable[[Graph, Node], bool], Callable[[Graph, Node], Value]]] = {
    "Col2Im": (_col2im_dilated_off_2d, _col2im_undilated),
}


def _col2im_fits(node: Node) -> bool:
    """A float32/float16 result with no empty axis: onnxruntime's Col2Im exists for float types only and
    refuses an image size of 0."""
    y = node.outputs[0]
    return y.dtype in ("float32", "float16") and all(d != 0 for d in y.shape)


# op -> (lowest opset, does the form fit this node, the expansion used instead of EXPANSIONS[op] at
# that opset and above). The phase interleave as one Col2Im (opset 18) writes the output in one pass;
# measured on the suite's sub-pixel layers in onnxruntime it beat the Concat tree / DepthToSpace on
# every fused layer (U-Net b8 1.03-1.28x -> 0.88-0.90x of the native kernel, DCGAN 2-5 by 0.05-0.15x)
# and on all but the two stride-8 per-phase layers, where the two tie within noise.
NEWER_FORMS: dict[str, tuple[int, Callable[[Graph, Node], bool], Callable[[Graph, Node], Value]]] = {
    "DepthToSpaceND": (
        18,
        lambda graph, node: node.attr("mode") == "CRD" and math.prod(node.attr("blocks")) > 1 and _col2im_fits(node),
        _depth_to_space_col2im,
    ),
    "Interleave": (18, lambda graph, node: len(node.inputs) > 1 and _col2im_fits(node), _interleave_col2im),
}


# A 1-D Conv is written as 2-D from these channel counts on (see RUNTIME_FORMS)
CONV_2D_MIN_IN_CHANNELS = 256
CONV_2D_MIN_OUT_CHANNELS = 128


def _conv_1d_fits(graph: Graph, node: Node) -> bool:
    """A wide float32 1-D Conv with constant weights and no empty axis (onnxruntime's blocked kernels
    are float32; a Reshape cannot infer an axis of an empty tensor)."""
    x, y = node.inputs[0], node.outputs[0]
    weights = graph.constant_value(node.inputs[1])
    if len(x.shape) != 3 or x.dtype != "float32" or weights is None or any(d == 0 for d in (*x.shape, *y.shape)):
        return False
    channels = weights.shape[1] * (node.attr("group") or 1)
    return channels >= CONV_2D_MIN_IN_CHANNELS and weights.shape[0] >= CONV_2D_MIN_OUT_CHANNELS


def _conv_1d_as_2d(graph: Graph, node: Node) -> Value:
    """A 1-D Conv as a 2-D one of unit height between two Reshapes (views in any runtime)."""
    x, w, b = node.inputs[0], node.inputs[1], node.input(2)
    weights = np.asarray(graph.constant_value(w))
    rows = graph.op("Reshape", x, graph.const(np.asarray([0, 0, 1, -1], np.int64), "unit_height"), before=node)
    attrs = {"group": node.attr("group") or 1}
    kernel = node.attr("kernel_shape") or [weights.shape[2]]
    attrs["kernel_shape"] = [1, *kernel]
    for name, unit in (("strides", 1), ("dilations", 1)):
        if node.attr(name) is not None:
            attrs[name] = [unit, *node.attr(name)]
    if node.attr("pads") is not None:
        begin, end = node.attr("pads")
        attrs["pads"] = [0, begin, 0, end]
    if node.attr("auto_pad") not in (None, "NOTSET"):
        attrs["auto_pad"] = node.attr("auto_pad")  # a unit height with a unit kernel pads nothing
    kernel_2d = graph.const(weights[:, :, None, :], w.name + "_2d")
    y = graph.op("Conv", rows, kernel_2d, b, before=node, **attrs)
    return graph.op("Reshape", y, graph.const(np.asarray([0, 0, -1], np.int64), "drop_height"), before=node)


# op -> (does the form fit this node, the rewrite): standard ops written in the form onnxruntime runs
# faster. A 1-D Conv runs as im2col + GEMM there, a 2-D one through its blocked (NCHWc) kernels, which
# split the work by output rows and channel blocks. With wide channels the 2-D form won in an A/B of
# sub-pixel lowerings (vocoder, 512 -> 256 channels at stride 8: the model in 0.81-0.88x the time;
# 256 -> 128 channels: 0.88-0.99x); with 128 or fewer input channels it lost up to 2x (one output
# row leaves the two threads too few blocks), so those stay 1-D.
RUNTIME_FORMS: dict[str, tuple[Callable[[Graph, Node], bool], Callable[[Graph, Node], Value]]] = {
    "Conv": (_conv_1d_fits, _conv_1d_as_2d),
}


def _rewrite_for(graph: Graph, node: Node, opset: int) -> Callable[[Graph, Node], Value] | None:
    if node.op in RUNTIME_FORMS and RUNTIME_FORMS[node.op][0](graph, node):
        return RUNTIME_FORMS[node.op][1]
    if node.op in NEWER_FORMS:
        lowest, fits, newer = NEWER_FORMS[node.op]
        if opset >= lowest and fits(graph, node):
            return newer
    if node.op in EXPANSIONS:
        return EXPANSIONS[node.op]
    if node.op in WORKAROUNDS and WORKAROUNDS[node.op][0](graph, node):
        return WORKAROUNDS[node.op][1]
    return None


def legalize_for_onnx(graph: Graph, opset: int) -> Graph:
    """A copy of `graph` with every op of this project's domain expanded into standard ops of `opset`
    (and runtime defects worked around); `graph` itself if there is nothing to do."""
    plans = [(index, rewrite) for index, n in enumerate(graph.nodes) if (rewrite := _rewrite_for(graph, n, opset))]
    if not plans:
        return graph
    graph = graph.copy()  # node for node and in order, so each plan's index names the same node in the copy
    nodes = list(graph.nodes)
    for node, rewrite in ((nodes[index], rewrite) for index, rewrite in plans):
        replacement = rewrite(graph, node)
        graph.replace_all_uses_with(node.outputs[0], replacement)
        operands = [v for v in node.inputs if v is not None and v.is_initializer]
        graph.remove_node(node)
        for value in operands:  # e.g. Im2Col's block shape, now baked into the one-hot kernel
            if not value.uses and graph.initializers.get(value.name) is value and value not in graph.outputs:
                graph.remove_initializer(value)
    return graph
