"""`zero-insertion`: ConvTranspose as a stride-1 convolution over a zero-inserted input.

Rewrite (DESIGN.md 3.1), per spatial axis j:
    X' = InteriorPad(X, s_j − 1 zeros between samples)
    X'' = pad X' by K_j − 1 − p_begin_j in front and K_j − 1 − p_end_j + a_j behind (negative: crop)
    Y = Conv(X'', flip(swap(W)), B, stride 1, dilation δ_j, group g)
where swap exchanges in/out channels within each group and flip reverses every spatial axis.
Simple and general; it multiplies by the inserted zeros, about 1 − 1/Πs of its work.
"""

from __future__ import annotations

from dataclasses import dataclass

from lowering.geometry import ConvTransposeGeometry
from lowering.ir import Graph, Node, Value

from .strategy import (
    Cost,
    LoweringStrategy,
    batch_of,
    conv_padded,
    itemsize,
    register_strategy,
    swap_group_channels,
    total,
)


@register_strategy
@dataclass
class ZeroInsertion(LoweringStrategy):
    name = "zero-insertion"
    summary = "interior zero padding + pad/crop + stride-1 Conv with flipped, channel-swapped weights"

    def cost(self, graph: Graph, node: Node, g: ConvTransposeGeometry) -> Cost:
        n = batch_of(g)
        spread = [s * (i - 1) + 1 for s, i in zip(g.strides, g.in_spatial, strict=True)]
        padded = [
            sp + (K - 1 - pb) + (K - 1 - pe + a)
            for sp, K, pb, pe, a in zip(
                spread, g.effective_kernel, g.pads_begin, g.pads_end, g.output_padding, strict=True
            )
        ]
        return Cost(
            self.name,
            useful_macs=g.useful_macs(n),
            executed_macs=n * g.out_channels * g.in_channels_per_group * total(g.kernel) * total(g.out_spatial),
            largest_intermediate_bytes=max(n * g.in_channels * total(padded), n * g.out_channels * total(g.out_spatial))
            * itemsize(node),
            weight_bytes=g.in_channels * g.out_channels_per_group * total(g.kernel) * itemsize(node),
            ops=3,
        )

    def rewrite(self, graph: Graph, node: Node, g: ConvTransposeGeometry) -> Value:
        x, w, b = node.inputs[0], node.inputs[1], node.input(2)
        if any(s > 1 for s in g.strides):
            x = graph.op("InteriorPad", x, interior=[0, 0, *(s - 1 for s in g.strides)], before=node)
        begin = [K - 1 - pb for K, pb in zip(g.effective_kernel, g.pads_begin, strict=True)]
        end = [K - 1 - pe + a for K, pe, a in zip(g.effective_kernel, g.pads_end, g.output_padding, strict=True)]
        kernel = swap_group_channels(
            graph, w, g.group, g.in_channels_per_group, g.out_channels_per_group, g.kernel, node
        )
        kernel = graph.op("Flip", kernel, axes=list(range(2, 2 + g.rank)), before=node)
        return conv_padded(
            graph,
            x,
            kernel,
            b,
            begin,
            end,
            node,
            dilations=list(g.dilations),
            group=g.group,
            kernel_shape=list(g.kernel),
            strides=[1] * g.rank,
        )
