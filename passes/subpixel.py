"""`subpixel`: polyphase ConvTranspose, no multiply-add on an inserted zero (DESIGN.md 3.4).

Work in canvas coordinates P = o + p_begin = s·i + δ·κ. On each axis, the output positions with
residue r = P mod s form phase r, which only taps κ with δ·κ ≡ r (mod s) reach; at P = s·q + r,

    Y_r[q] = Σ_{κ in T_r} X[q − t_κ] · W[κ],    t_κ = (δ·κ − r) / s,

a stride-1 correlation whose taps are `s/gcd(δ,s)` apart in κ and `δ' = δ/gcd(δ,s)` apart in the
input. Every phase is computed on the same q-range [q0, q0 + Q) with q0 = floor(p_begin / s) and
Q = ceil((p_begin + o) / s) − q0; the phases are interleaved (position (q − q0)·s + r) and the
interleave is cropped to [p_begin − q0·s, + o). Multi-dimensional phases are products of axis phases.

Two forms, chosen by executed multiply-adds (option `form`):
- per-phase: one Conv per phase with its own flipped sub-kernel (dilation δ'); phases without
  taps are zeros; then Concat + interleave. Executes exactly the useful multiply-adds (up to the
  at most one extra row per axis of the common q-range).
- fused: one Conv with Πs·M output channels whose sub-kernels are zero-padded to a common size
  F = floor(δ·(k − 1)/s) + 1, then the interleave (DepthToSpace when it is one). Best when k is a
  multiple of s; it multiplies by the padding zeros otherwise. The padding taps also multiply
  input elements by 0, so a NaN or Inf input spreads further than in the definition.
Bias is added after the crop, so phases without taps give the bias alone.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from lowering.errors import LoweringError
from lowering.geometry import ConvTransposeGeometry
from lowering.ir import Graph, Node, Value

from .strategy import (
    Cost,
    LoweringStrategy,
    add_bias,
    batch_of,
    conv_padded,
    ints,
    itemsize,
    register_strategy,
    swap_group_channels,
    total,
    zeros_with_batch,
)


@dataclass(frozen=True)
class AxisPhases:
    """The polyphase split of one spatial axis."""

    stride: int
    q0: int  # first q of the common range
    count: int  # Q, the common number of q per phase
    crop: int  # where the output starts in the interleaved axis
    sub_dilation: int  # δ' = δ / gcd(δ, s)
    tap_step: int  # s / gcd(δ, s): taps of one phase are this far apart in κ
    taps: tuple[tuple[int, ...], ...]  # taps[r]: κ of phase r, ascending
    offsets: tuple[tuple[int, ...], ...]  # offsets[r]: t_κ of those taps
    fused_size: int  # F

    @property
    def last_offset(self) -> int:
        """The largest t_κ over all phases: floor(δ·(k − 1) / s), the fused kernel's first tap."""
        return self.fused_size - 1


def axis_phases(k: int, s: int, d: int, pad_begin: int, out: int) -> AxisPhases:
    q0 = pad_begin // s
    count = -(-(pad_begin + out) // s) - q0
    taps = tuple(tuple(kappa for kappa in range(k) if (d * kappa - r) % s == 0) for r in range(s))
    offsets = tuple(tuple((d * kappa - r) // s for kappa in phase) for r, phase in enumerate(taps))
    common = math.gcd(d, s)
    return AxisPhases(
        stride=s,
        q0=q0,
        count=count,
        crop=pad_begin - q0 * s,
        sub_dilation=d // common,
        tap_step=s // common,
        taps=taps,
        offsets=offsets,
        fused_size=(d * (k - 1)) // s + 1,
    )


def phases_of(g: ConvTransposeGeometry) -> list[AxisPhases]:
    return [
        axis_phases(k, s, d, p, o)
        for k, s, d, p, o in zip(g.kernel, g.strides, g.dilations, g.pads_begin, g.out_spatial, strict=True)
    ]


FORMS = ("auto", "fused", "per-phase")


@register_strategy
@dataclass
class SubpixelLowering(LoweringStrategy):
    name = "subpixel"
    summary = "polyphase decomposition: per-phase stride-1 Convs or one fused Conv + interleave, then crop"
    form: str = "auto"
    fused_tolerance: float = 1.1  # fused is taken while its MACs are within this factor of per-phase

    # ------------------------------------------------------------- cost and choice
    def _macs(self, g: ConvTransposeGeometry) -> dict[str, int]:
        axes = phases_of(g)
        n, q = batch_of(g), total(a.count for a in axes)
        per_phase = n * g.out_channels * g.in_channels_per_group * q * total(g.kernel)
        fused = n * g.out_channels * total(g.strides) * g.in_channels_per_group * q * total(a.fused_size for a in axes)
        return {"per-phase": per_phase, "fused": fused}

    def choose(self, g: ConvTransposeGeometry) -> str:
        if self.form not in FORMS:
            raise LoweringError(f"subpixel: option form must be one of {', '.join(FORMS)}, got '{self.form}'")
        if self.form != "auto":
            return self.form
        macs = self._macs(g)
        return "fused" if macs["fused"] <= self.fused_tolerance * macs["per-phase"] else "per-phase"

    def cost(self, graph: Graph, node: Node, g: ConvTransposeGeometry) -> Cost:
        form = self.choose(g)
        axes = phases_of(g)
        n, item = batch_of(g), itemsize(node)
        interleaved = n * g.out_channels * total(a.count * a.stride for a in axes)
        phases = total(g.strides)
        kernel_elems = total(a.fused_size for a in axes) * phases if form == "fused" else total(g.kernel)
        return Cost(
            self.name,
            useful_macs=g.useful_macs(n),
            executed_macs=self._macs(g)[form],
            largest_intermediate_bytes=interleaved * item,
            weight_bytes=g.in_channels * g.out_channels_per_group * kernel_elems * item,
            ops=(2 if form == "fused" else phases + 1) + 3,
            detail=f"{form} form, {phases} phases",
        )

    # ------------------------------------------------------------- rewrite
    def rewrite(self, graph: Graph, node: Node, g: ConvTransposeGeometry) -> Value:
        axes = phases_of(g)
        build = self._fused if self.choose(g) == "fused" else self._per_phase
        y = build(graph, node, g, axes)
        if any(a.crop for a in axes) or any(a.count * a.stride != o for a, o in zip(axes, g.out_spatial, strict=True)):
            y = graph.op(
                "Slice",
                y,
                graph.const(ints(a.crop for a in axes), "crop_starts"),
                graph.const(ints(a.crop + o for a, o in zip(axes, g.out_spatial, strict=True)), "crop_ends"),
                graph.const(ints(range(2, 2 + g.rank)), "crop_axes"),
                before=node,
            )
        return add_bias(graph, y, node.input(2), g.rank, node)

    @staticmethod
    def _sub_kernel(graph: Graph, w: Value, axes: list[AxisPhases], phase: tuple[int, ...], node: Node) -> Value:
        """W restricted to the taps of `phase`, flipped: (C, M/g, n...) in correlation order."""
        taps = [a.taps[r] for a, r in zip(axes, phase, strict=True)]
        t = graph.op(
            "Slice",
            w,
            graph.const(ints(tp[0] for tp in taps), "tap_starts"),
            graph.const(ints(tp[-1] + 1 for tp in taps), "tap_ends"),
            graph.const(ints(range(2, 2 + len(axes))), "tap_axes"),
            graph.const(ints(a.tap_step for a in axes), "tap_steps"),
            before=node,
        )
        return graph.op("Flip", t, axes=list(range(2, 2 + len(axes))), before=node)

    def _per_phase(self, graph: Graph, node: Node, g: ConvTransposeGeometry, axes: list[AxisPhases]) -> Value:
        x, w = node.inputs[0], node.inputs[1]
        counts = [a.count for a in axes]
        outputs = []
        for phase in itertools.product(*(range(a.stride) for a in axes)):
            if any(not a.taps[r] for a, r in zip(axes, phase, strict=True)):
                outputs.append(zeros_with_batch(graph, x, [g.out_channels, *counts], node))
                continue
            sizes = [len(a.taps[r]) for a, r in zip(axes, phase, strict=True)]
            kernel = swap_group_channels(
                graph,
                self._sub_kernel(graph, w, axes, phase, node),
                g.group,
                g.in_channels_per_group,
                g.out_channels_per_group,
                sizes,
                node,
            )
            begin = [a.offsets[r][-1] - a.q0 for a, r in zip(axes, phase, strict=True)]
            end = [
                a.count + (n - 1) * a.sub_dilation - i - b
                for a, n, i, b in zip(axes, sizes, g.in_spatial, begin, strict=True)
            ]
            dilations = [a.sub_dilation if n > 1 else 1 for a, n in zip(axes, sizes, strict=True)]
            outputs.append(
                conv_padded(
                    graph,
                    x,
                    kernel,
                    None,
                    begin,
                    end,
                    node,
                    dilations=dilations,
                    group=g.group,
                    kernel_shape=sizes,
                    strides=[1] * g.rank,
                )
            )
        stacked = outputs[0] if len(outputs) == 1 else graph.op("Concat", *outputs, axis=1, before=node)
        return self._interleave(graph, stacked, [], g.out_channels, axes, node)

    def _fused(self, graph: Graph, node: Node, g: ConvTransposeGeometry, axes: list[AxisPhases]) -> Value:
        x, w = node.inputs[0], node.inputs[1]
        fused = [a.fused_size for a in axes]
        blocks = []
        for phase in itertools.product(*(range(a.stride) for a in axes)):
            if any(not a.taps[r] for a, r in zip(axes, phase, strict=True)):
                zeros = np.zeros((g.in_channels, g.out_channels_per_group, *fused), dtype=x.dtype)
                blocks.append(graph.const(zeros, "phase_zeros"))
                continue
            t = self._sub_kernel(graph, w, axes, phase, node)
            if any(a.sub_dilation > 1 for a in axes):
                t = graph.op("InteriorPad", t, interior=[0, 0, *(a.sub_dilation - 1 for a in axes)], before=node)
            front = [a.last_offset - a.offsets[r][-1] for a, r in zip(axes, phase, strict=True)]
            spans = [(len(a.taps[r]) - 1) * a.sub_dilation + 1 for a, r in zip(axes, phase, strict=True)]
            back = [f - b - s for f, b, s in zip(fused, front, spans, strict=True)]
            pads = ints([0, 0, *front, 0, 0, *back])
            blocks.append(graph.op("Pad", t, graph.const(pads, "phase_pads"), before=node) if pads.any() else t)
        phases = len(blocks)
        stacked = blocks[0] if phases == 1 else graph.op("Concat", *blocks, axis=1, before=node)  # (C, Πs·Mg, F...)
        kernel = swap_group_channels(
            graph, stacked, g.group, g.in_channels_per_group, phases * g.out_channels_per_group, fused, node
        )
        begin = [a.last_offset - a.q0 for a in axes]
        end = [a.count + f - 1 - i - b for a, f, i, b in zip(axes, fused, g.in_spatial, begin, strict=True)]
        y = conv_padded(
            graph,
            x,
            kernel,
            None,
            begin,
            end,
            node,
            dilations=[1] * g.rank,
            group=g.group,
            kernel_shape=fused,
            strides=[1] * g.rank,
        )
        return self._interleave(graph, y, [g.group], g.out_channels_per_group, axes, node)

    @staticmethod
    def _interleave(
        graph: Graph, y: Value, lead: list[int], channels: int, axes: list[AxisPhases], node: Node
    ) -> Value:
        """(N, *lead, Πs, channels, Q...) -> (N, Πlead·channels, Q_1·s_1, ...): phase r of q to q·s + r."""
        strides = [a.stride for a in axes]
        counts = [a.count for a in axes]
        d = len(axes)
        if d == 2 and strides[0] == strides[1] and total(lead) == 1:
            return graph.op("DepthToSpace", y, blocksize=strides[0], mode="DCR", before=node)
        split = [0, *lead, *strides, channels, *counts]
        t = graph.op("Reshape", y, graph.const(ints(split), "phase_split"), before=node)
        first_stride = 1 + len(lead)
        channel_axis = first_stride + d
        perm = [0, *range(1, 1 + len(lead)), channel_axis]
        for j in range(d):
            perm += [channel_axis + 1 + j, first_stride + j]
        t = graph.op("Transpose", t, perm=perm, before=node)
        merged = [0, total(lead) * channels, *(q * s for q, s in zip(counts, strides, strict=True))]
        return graph.op("Reshape", t, graph.const(ints(merged), "interleaved"), before=node)
