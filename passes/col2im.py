"""`col2im`: ConvTranspose as one (grouped) MatMul followed by Col2Im's scatter-add.

Rewrite (DESIGN.md 3.3), with Πk taps and Πi input positions:
    cols[n, G] = W_Gᵀ · X[n, G]            (M/g·Πk) × Πi per group G, one batched MatMul
                                           (a broadcast Mul when C/g = 1: depthwise)
    Y = Col2Im(cols, image, k, strides s, dilations δ, pads) + B
Col2Im's block `l`, tap `κ` lands at `s·l + δ·κ − p_begin`: the ConvTranspose scatter itself.
ONNX Col2Im takes only non-negative pads; when `p_begin < 0` or `p_end < a` the scatter goes to
the full reach `s·(i − 1) + K` and a Pad then crops / widens it to the output.
Exact multiply-adds; its cost is the column buffer of (M/g)·Πk·Πi per group and sample.
"""

from __future__ import annotations

from dataclasses import dataclass

from lowering.geometry import ConvTransposeGeometry
from lowering.ir import Graph, Node, Value

from .strategy import Cost, LoweringStrategy, add_bias, batch_of, ints, itemsize, pad_spatial, register_strategy, total


@register_strategy
@dataclass
class Col2ImLowering(LoweringStrategy):
    name = "col2im"
    summary = "MatMul per group + Col2Im (scatter-add) + bias"

    def cost(self, graph: Graph, node: Node, g: ConvTransposeGeometry) -> Cost:
        n = batch_of(g)
        cols = n * g.out_channels * total(g.kernel) * total(g.in_spatial)
        return Cost(
            self.name,
            useful_macs=g.useful_macs(n),
            executed_macs=g.useful_macs(n),
            largest_intermediate_bytes=cols * itemsize(node),
            weight_bytes=g.in_channels * g.out_channels_per_group * total(g.kernel) * itemsize(node),
            ops=4,
            detail=f"column buffer {cols:,} elements",
        )

    def rewrite(self, graph: Graph, node: Node, g: ConvTransposeGeometry) -> Value:
        x, w, b = node.inputs[0], node.inputs[1], node.input(2)
        grp, cg, mg = g.group, g.in_channels_per_group, g.out_channels_per_group
        taps, positions = total(g.kernel), total(g.in_spatial)
        # W (C, M/g, k...) -> (g, M/g·Πk, C/g): each group's Wᵀ, ready to multiply (C/g, Πi) blocks
        wt = graph.op("Reshape", w, graph.const(ints([grp, cg, mg * taps]), "w_groups"), before=node)
        wt = graph.op("Transpose", wt, perm=[0, 2, 1], before=node)
        xg = graph.op("Reshape", x, graph.const(ints([0, grp, cg, positions]), "x_groups"), before=node)
        # (N, g, M/g·Πk, Πi). With one input channel per group (depthwise) each product is a single term:
        # a broadcast Mul, not g tiny matrix products
        cols = graph.op("Mul" if cg == 1 else "MatMul", wt, xg, before=node)
        cols = graph.op("Reshape", cols, graph.const(ints([0, g.out_channels * taps, positions]), "cols"), before=node)

        scatter_end = [pe - a for pe, a in zip(g.pads_end, g.output_padding, strict=True)]
        if min(g.pads_begin) >= 0 and min(scatter_end) >= 0:
            image, pads, crop_begin, crop_end = g.out_spatial, [*g.pads_begin, *scatter_end], None, None
        else:  # scatter to the full reach, then crop / widen with a Pad
            image = tuple(s * (i - 1) + K for s, i, K in zip(g.strides, g.in_spatial, g.effective_kernel, strict=True))
            pads = [0] * (2 * g.rank)
            crop_begin = [-p for p in g.pads_begin]
            crop_end = [o + p - r for o, p, r in zip(g.out_spatial, g.pads_begin, image, strict=True)]
        y = graph.op(
            "Col2Im",
            cols,
            graph.const(ints(image), "image_shape"),
            graph.const(ints(g.kernel), "block_shape"),
            dilations=list(g.dilations),
            pads=pads,
            strides=list(g.strides),
            before=node,
        )
        if crop_begin is not None:
            y = pad_spatial(graph, y, crop_begin, crop_end, node)
        return add_bias(graph, y, b, g.rank, node)
