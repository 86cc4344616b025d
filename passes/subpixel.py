"""`subpixel`: polyphase ConvTranspose, no multiply-add on an inserted zero (DESIGN.md 3.4).

Work in canvas coordinates P = o + p_begin = s·i + δ·κ. On each axis, positions with residue
r = P mod s form phase r, which only taps κ with δ·κ ≡ r (mod s) reach; at P = s·q + r,

    Y_r[q] = Σ_{κ in T_r} X[q − t_κ] · W[κ],    t_κ = (δ·κ − r) / s,

a stride-1 correlation whose taps are `s/gcd(δ,s)` apart in κ and `δ' = δ/gcd(δ,s)` apart in the
input. Multi-dimensional phases are products of axis phases. Two forms: option `form` of
`subpixel` (default per-phase; `auto`: the one with fewer executed multiply-adds), and the
`subpixel-fused` strategy for the fused form alone, so that `auto` weighs both per backend:

- per-phase: one Conv per output residue c (output o = s·j + c, canvas phase r = (c + p_begin) mod s,
  q = j + floor((c + p_begin)/s)), each with its own flipped sub-kernel, bias included, on exactly the
  rows it owns, written straight into the output by one Interleave (which the ONNX writer expands
  to Concat + DepthToSpace DCR). Phases without taps are the bias alone. Only when s does not
  divide the output size is the last row of some phases cut off.
- fused (taken by the `auto` form only when no sub-kernel needs padding taps): one Conv with Πs·M
  output channels in (channel, phase) order, the sub-kernels zero-padded
  to a common size F = floor(δ·(k − 1)/s) + 1 on the common q-range [q0, q0 + Q), q0 =
  floor(p_begin/s), Q = ceil((p_begin + o)/s) − q0; the bias is tiled into it. One DepthToSpaceND
  (CRD) interleaves and crops [p_begin − q0·s, + o). Best when k is a multiple of s (for
  k = s it is a 1x1 convolution); otherwise it multiplies by its padding zeros, which also lets a
  NaN or Inf input reach outputs the definition keeps it from.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from lowering.errors import LoweringError
from lowering.geometry import ConvTransposeGeometry
from lowering.ir import Graph, Node, Value
from lowering.ops.tensor import INT64_MIN

from .strategy import (
    Cost,
    Declined,
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
    out: int  # output size o
    pad_begin: int
    sub_dilation: int  # δ' = δ / gcd(δ, s)
    tap_step: int  # s / gcd(δ, s): taps of one phase are this far apart in κ
    taps: tuple[tuple[int, ...], ...]  # taps[r]: κ of canvas phase r, ascending
    offsets: tuple[tuple[int, ...], ...]  # offsets[r]: t_κ of those taps
    fused_size: int  # F

    @property
    def last_offset(self) -> int:
        """The largest t_κ over all phases: floor(δ·(k − 1) / s), the fused kernel's first tap."""
        return self.fused_size - 1

    # common q-range (fused form)
    @property
    def q0(self) -> int:
        return self.pad_begin // self.stride

    @property
    def count(self) -> int:
        return -(-(self.pad_begin + self.out) // self.stride) - self.q0

    @property
    def crop(self) -> int:
        return self.pad_begin - self.q0 * self.stride

    # output residues (per-phase form)
    @property
    def rows(self) -> int:
        """J = ceil(o / s): rows computed per output residue."""
        return -(-self.out // self.stride)

    def phase_of(self, residue: int) -> tuple[int, int]:
        """(canvas phase r, first q) of output residue c."""
        shifted = residue + self.pad_begin
        return shifted % self.stride, shifted // self.stride


def axis_phases(k: int, s: int, d: int, pad_begin: int, out: int) -> AxisPhases:
    taps = tuple(tuple(kappa for kappa in range(k) if (d * kappa - r) % s == 0) for r in range(s))
    offsets = tuple(tuple((d * kappa - r) // s for kappa in phase) for r, phase in enumerate(taps))
    common = math.gcd(d, s)
    return AxisPhases(
        stride=s,
        out=out,
        pad_begin=pad_begin,
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


def exact_fused(g: ConvTransposeGeometry) -> bool:
    """Whether the fused form needs no padding taps: then it multiplies exactly the products of the
    definition, and NaN / Inf inputs reach exactly the outputs they should."""
    return all(a.sub_dilation == 1 and all(len(taps) == a.fused_size for taps in a.taps) for a in phases_of(g))


@register_strategy
@dataclass
class SubpixelLowering(LoweringStrategy):
    name = "subpixel"
    summary = "polyphase decomposition: per-phase stride-1 Convs + Interleave (form=fused: one Conv + interleave)"
    form: str = "per-phase"
    fused_tolerance: float = 1.1  # fused is taken while its MACs are within this factor of per-phase
    exact_only: bool = False  # decline the fused form where a sub-kernel would need padding taps

    def check(self, graph: Graph, node: Node, geometry: ConvTransposeGeometry) -> None:
        if self.exact_only and self.choose(geometry) == "fused" and not exact_fused(geometry):
            raise Declined(f"{node.label}: the fused form would multiply padding taps of its sub-kernels")

    # ------------------------------------------------------------- cost and choice
    def _macs(self, g: ConvTransposeGeometry) -> dict[str, int]:
        axes = phases_of(g)
        n, base = batch_of(g), g.out_channels * g.in_channels_per_group
        per_phase = n * base * total(a.rows for a in axes) * total(g.kernel)
        fused = n * base * total(g.strides) * total(a.count * a.fused_size for a in axes)
        return {"per-phase": per_phase, "fused": fused}

    def choose(self, g: ConvTransposeGeometry) -> str:
        if self.form not in FORMS:
            raise LoweringError(f"subpixel: option form must be one of {', '.join(FORMS)}, got '{self.form}'")
        if self.form != "auto":
            return self.form
        macs = self._macs(g)
        return "fused" if exact_fused(g) and macs["fused"] <= self.fused_tolerance * macs["per-phase"] else "per-phase"

    def cost(self, graph: Graph, node: Node, g: ConvTransposeGeometry) -> Cost:
        form = self.choose(g)
        axes = phases_of(g)
        n, item = batch_of(g), itemsize(node)
        rows = [a.count if form == "fused" else a.rows for a in axes]
        interleaved = n * g.out_channels * total(r * a.stride for r, a in zip(rows, axes, strict=True))
        phases = total(g.strides)
        kernel_elems = total(a.fused_size for a in axes) * phases if form == "fused" else total(g.kernel)
        return Cost(
            self.name,
            useful_macs=g.useful_macs(n),
            executed_macs=self._macs(g)[form],
            largest_intermediate_bytes=interleaved * item,
            weight_bytes=g.in_channels * g.out_channels_per_group * kernel_elems * item,
            ops=3 if form == "fused" else phases + 1,
            detail=f"{form} form, {phases} phases",
        )

    # ------------------------------------------------------------- rewrite
    def rewrite(self, graph: Graph, node: Node, g: ConvTransposeGeometry) -> Value:
        axes = phases_of(g)
        if self.choose(g) == "fused":
            return self._fused(graph, node, g, axes)
        return self._per_phase(graph, node, g, axes)

    @staticmethod
    def _sub_kernel(graph: Graph, w: Value, axes: list[AxisPhases], phase: tuple[int, ...], node: Node) -> Value:
        """W restricted to the taps of canvas phase `phase` on its spatial axes (2...), flipped into
        correlation order; the channel axes are kept as they are ((C, M/g) or, swapped, (M, C/g)).
        One Slice walking the taps backwards (negative steps; the end past index 0 is INT64_MIN, as ONNX
        spells "through the first"): a Slice then a Flip copied the weight twice when folded."""
        taps = [a.taps[r] for a, r in zip(axes, phase, strict=True)]
        return graph.op(
            "Slice",
            w,
            graph.const(ints(tp[-1] for tp in taps), "tap_starts"),
            graph.const(ints(tp[0] - 1 if tp[0] > 0 else INT64_MIN for tp in taps), "tap_ends"),
            graph.const(ints(range(2, 2 + len(axes))), "tap_axes"),
            graph.const(ints(-a.tap_step for a in axes), "tap_steps"),
            before=node,
        )

    def _per_phase(self, graph: Graph, node: Node, g: ConvTransposeGeometry, axes: list[AxisPhases]) -> Value:
        x, w, b = node.inputs[0], node.inputs[1], node.input(2)
        rows = [a.rows for a in axes]
        outputs = []
        for residue in itertools.product(*(range(a.stride) for a in axes)):
            located = [a.phase_of(c) for a, c in zip(axes, residue, strict=True)]
            phase = tuple(r for r, _ in located)
            if any(not a.taps[r] for a, r in zip(axes, phase, strict=True)):
                zeros = zeros_with_batch(graph, x, [g.out_channels, *rows], node)
                outputs.append(add_bias(graph, zeros, b, g.rank, node))
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
            begin = [a.offsets[r][-1] - first for a, (r, first) in zip(axes, located, strict=True)]
            end = [
                j + (n - 1) * a.sub_dilation - i - bp
                for a, j, n, i, bp in zip(axes, rows, sizes, g.in_spatial, begin, strict=True)
            ]
            dilations = [a.sub_dilation if n > 1 else 1 for a, n in zip(axes, sizes, strict=True)]
            outputs.append(
                conv_padded(
                    graph,
                    x,
                    kernel,
                    b,
                    begin,
                    end,
                    node,
                    dilations=dilations,
                    group=g.group,
                    kernel_shape=sizes,
                    strides=[1] * g.rank,
                )
            )
        if len(outputs) == 1:
            return self._crop(graph, outputs[0], [0] * g.rank, axes, rows, node)
        return graph.op(
            "Interleave", *outputs, strides=[a.stride for a in axes], sizes=list(g.out_spatial), before=node
        )

    def _fused(self, graph: Graph, node: Node, g: ConvTransposeGeometry, axes: list[AxisPhases]) -> Value:
        x, w, b = node.inputs[0], node.inputs[1], node.input(2)
        fused = [a.fused_size for a in axes]
        phases = total(a.stride for a in axes)
        # in/out channels swapped first, on whole kernels (runs of Πk elements to move, not of ΠF)
        w = swap_group_channels(
            graph, w, g.group, g.in_channels_per_group, g.out_channels_per_group, g.kernel, node
        )  # (M, C/g, k...)
        per_group = g.in_channels_per_group
        blocks = []
        for phase in itertools.product(*(range(a.stride) for a in axes)):
            if any(not a.taps[r] for a, r in zip(axes, phase, strict=True)):
                zeros = np.zeros((g.out_channels, 1, per_group, *fused), dtype=x.dtype)
                blocks.append(graph.const(zeros, "phase_zeros"))
                continue
            t = self._sub_kernel(graph, w, axes, phase, node)
            if any(a.sub_dilation > 1 for a in axes):
                t = graph.op("InteriorPad", t, interior=[0, 0, *(a.sub_dilation - 1 for a in axes)], before=node)
            front = [a.last_offset - a.offsets[r][-1] for a, r in zip(axes, phase, strict=True)]
            spans = [(len(a.taps[r]) - 1) * a.sub_dilation + 1 for a, r in zip(axes, phase, strict=True)]
            back = [f - b_ - s for f, b_, s in zip(fused, front, spans, strict=True)]
            pads = ints([0, 0, *front, 0, 0, *back])
            if pads.any():
                t = graph.op("Pad", t, graph.const(pads, "phase_pads"), before=node)
            shape = [g.out_channels, 1, per_group, *fused]
            blocks.append(graph.op("Reshape", t, graph.const(ints(shape), "phase_block"), before=node))
        stacked = blocks[0] if phases == 1 else graph.op("Concat", *blocks, axis=1, before=node)  # (M, Πs, C/g, F...)
        kernel = graph.op(
            "Reshape", stacked, graph.const(ints([-1, per_group, *fused]), "phase_major"), before=node
        )  # (M·Πs, C/g, F...): output channel m·Πs + phase
        bias = None
        if b is not None:
            column = graph.op("Reshape", b, graph.const(ints([-1, 1]), "bias_column"), before=node)
            tiled = column if phases == 1 else graph.op("Concat", *([column] * phases), axis=1, before=node)
            bias = graph.op("Reshape", tiled, graph.const(ints([-1]), "bias_tiled"), before=node)
        begin = [a.last_offset - a.q0 for a in axes]
        end = [a.count + f - 1 - i - bp for a, f, i, bp in zip(axes, fused, g.in_spatial, begin, strict=True)]
        y = conv_padded(
            graph,
            x,
            kernel,
            bias,
            begin,
            end,
            node,
            dilations=[1] * g.rank,
            group=g.group,
            kernel_shape=fused,
            strides=[1] * g.rank,
        )
        counts = [a.count for a in axes]
        if all(a.stride == 1 for a in axes):
            return self._crop(graph, y, [a.crop for a in axes], axes, counts, node)
        return graph.op(
            "DepthToSpaceND",
            y,
            blocks=[a.stride for a in axes],
            mode="CRD",
            begins=[a.crop for a in axes],
            sizes=list(g.out_spatial),
            before=node,
        )

    @staticmethod
    def _crop(graph: Graph, y: Value, starts: list[int], axes: list[AxisPhases], rows: list[int], node: Node) -> Value:
        lengths = [q * a.stride for q, a in zip(rows, axes, strict=True)]
        if not any(starts) and all(n == a.out for n, a in zip(lengths, axes, strict=True)):
            return y
        return graph.op(
            "Slice",
            y,
            graph.const(ints(starts), "crop_starts"),
            graph.const(ints(s + a.out for s, a in zip(starts, axes, strict=True)), "crop_ends"),
            graph.const(ints(range(2, 2 + len(axes))), "crop_axes"),
            before=node,
        )


@register_strategy
@dataclass
class SubpixelFusedLowering(SubpixelLowering):
    """The fused form as a strategy of its own, so that `auto` weighs it against the per-phase form per
    backend: which is faster depends on the backend (one large Conv with Πs·M channels against Πs small
    ones and a Concat) more than on the multiply-adds, which favour per-phase. `auto` takes it only
    where it is exact (no sub-kernel needs padding taps)."""

    name = "subpixel-fused"
    summary = "polyphase as one Conv with Πs·M output channels + interleave (= subpixel form=fused)"
    form: str = "fused"

    def __post_init__(self) -> None:
        if self.form != "fused":
            raise LoweringError(f"subpixel-fused: option form is always 'fused' (got '{self.form}'; use subpixel)")

    @classmethod
    def for_auto(cls, budget_bytes: int) -> SubpixelFusedLowering:
        return cls(exact_only=True)
