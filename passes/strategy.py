"""What every ConvTranspose lowering shares: the strategy base class, its cost figures and the
small graph-building steps several lowerings emit (grouped weight swaps, padding, bias).

A strategy is a pass that replaces each ConvTranspose node by other ops computing the same
function. It reports a `Cost` for a node before rewriting anything, which is what `auto` and
`--explain` read, and it may decline a node (`Declined`) with a reason instead of rewriting it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from lowering.errors import LoweringError
from lowering.geometry import ConvTransposeGeometry, node_geometry
from lowering.ir import Graph, Node, Value

from .base import Pass, PassResult, register_pass


class Declined(LoweringError):
    """A strategy cannot (or will not) lower this node; the message says why."""


@dataclass(frozen=True)
class Cost:
    """Static cost figures of one lowering of one node (batch taken from the graph, 1 if symbolic)."""

    strategy: str
    useful_macs: int  # N·C·(M/g)·Πk·Πi, the definition's multiply-adds
    executed_macs: int  # what the lowered graph multiplies, zeros included
    largest_intermediate_bytes: int
    weight_bytes: int  # weights the lowered graph holds (sub-kernels, an explicit matrix, ...)
    ops: int  # nodes the lowering emits (a proxy for per-op overhead)
    detail: str = ""

    @property
    def waste(self) -> float:
        """Executed over useful multiply-adds (1.0: no work on zeros)."""
        return self.executed_macs / self.useful_macs if self.useful_macs else 1.0


def batch_of(geometry: ConvTransposeGeometry) -> int:
    """The batch size for cost figures: the node's batch, or 1 when it is symbolic."""
    return geometry.batch if isinstance(geometry.batch, int) else 1


def itemsize(node: Node) -> int:
    """Bytes per element of the node's input X (float32 when unknown)."""
    return np.dtype(node.inputs[0].dtype or "float32").itemsize  # type: ignore[union-attr]


STRATEGIES: dict[str, type[LoweringStrategy]] = {}


def register_strategy(cls: type[LoweringStrategy]) -> type[LoweringStrategy]:
    """Register a ConvTranspose lowering: as a pass, and as a strategy for `lower`, `auto` and `compare`."""
    register_pass(cls)
    STRATEGIES[cls.name] = cls
    return cls


class LoweringStrategy(Pass):
    """Base of the ConvTranspose lowerings. Subclasses implement `cost` and `rewrite`."""

    strategy_doc: ClassVar[str] = ""

    def cost(self, graph: Graph, node: Node, geometry: ConvTransposeGeometry) -> Cost:
        """Static cost figures of lowering `node` this way, computed without rewriting anything."""
        raise NotImplementedError(f"strategy '{self.name}' does not implement cost(), which auto and --explain need")

    def check(self, graph: Graph, node: Node, geometry: ConvTransposeGeometry) -> None:
        """Raise Declined when this strategy cannot lower the node (default: it always can)."""

    @classmethod
    def for_auto(cls, budget_bytes: int) -> LoweringStrategy:
        """The configuration `auto` weighs against the other strategies (default: the default one);
        `budget_bytes` is the memory auto lets a strategy spend on explicit operators."""
        return cls()

    def rewrite(self, graph: Graph, node: Node, geometry: ConvTransposeGeometry) -> Value:
        """Emit the replacement before `node` and return the value that replaces its output."""
        raise NotImplementedError(f"strategy '{self.name}' does not implement rewrite()")

    def lower_node(self, graph: Graph, node: Node) -> None:
        """Check, rewrite and replace one ConvTranspose node (raises Declined when `check` refuses)."""
        geometry = node_geometry(node)
        assert isinstance(geometry, ConvTransposeGeometry)
        self.check(graph, node, geometry)
        replacement = self.rewrite(graph, node, geometry)
        graph.replace_all_uses_with(node.outputs[0], replacement)
        graph.remove_node(node)

    def run(self, graph: Graph) -> PassResult:
        """Lower every ConvTranspose node of the graph with this strategy."""
        nodes = graph.nodes_of("ConvTranspose")
        for node in nodes:
            self.lower_node(graph, node)
        return PassResult(graph, bool(nodes))


# ----------------------------------------------------------------- building blocks


def ints(values) -> np.ndarray:
    """An int64 array, the type ONNX wants for shape, pad and index operands."""
    return np.asarray(list(values), dtype=np.int64)


def swap_group_channels(
    graph: Graph, w: Value, group: int, in_per_group: int, out_per_group: int, kernel, before: Node
) -> Value:
    """ConvTranspose-layout weights (C, Mg, k...) -> Conv layout (g·Mg, C/g, k...): in/out swapped per group."""
    kernel = list(kernel)
    t = graph.op(
        "Reshape", w, graph.const(ints([group, in_per_group, out_per_group, *kernel]), "w_groups"), before=before
    )
    t = graph.op("Transpose", t, perm=[0, 2, 1, *range(3, 3 + len(kernel))], before=before)
    return graph.op(
        "Reshape", t, graph.const(ints([group * out_per_group, in_per_group, *kernel]), "w_conv"), before=before
    )


def zeros_with_batch(graph: Graph, x: Value, tail: list[int], before: Node) -> Value:
    """Zeros of shape (N, *tail), N taken from x, built without arithmetic on x (so NaN and Inf in x
    cannot leak in): an empty slice of x padded out with zeros."""
    axes = list(range(1, len(tail) + 1))
    empty = graph.op(
        "Slice",
        x,
        graph.const(ints([0] * len(axes)), "starts"),
        graph.const(ints([0] * len(axes)), "ends"),
        graph.const(ints(axes), "axes"),
        before=before,
    )
    return graph.op("Pad", empty, graph.const(ints([0] * (len(tail) + 1) + [0, *tail]), "pads"), before=before)


def pad_spatial(graph: Graph, x: Value, begin, end, before: Node) -> Value:
    """Pad (positive) or crop (negative) the spatial axes of an (N, C, spatial...) tensor."""
    begin, end = list(begin), list(end)
    if not any(begin) and not any(end):
        return x
    crops = [min(b, 0) + min(e, 0) for b, e in zip(begin, end, strict=True)]
    if any(c < 0 and i + c < 1 for i, c in zip(x.shape[2:], crops, strict=True)):  # type: ignore[index]
        # a crop reaching past the data into the other side's padding: pad first, then crop, so no
        # step has to remove more than the tensor holds
        x = pad_spatial(graph, x, [max(b, 0) for b in begin], [max(e, 0) for e in end], before)
        begin, end = [min(b, 0) for b in begin], [min(e, 0) for e in end]
    pads = ints([0, 0, *begin, 0, 0, *end])
    return graph.op("Pad", x, graph.const(pads, "pads"), before=before)


def conv_padded(graph: Graph, x: Value, w: Value, b: Value | None, begin, end, before: Node, **attrs) -> Value:
    """Conv with arbitrary (possibly negative) pads: negative parts become a crop in front of it,
    since runtimes accept only non-negative Conv pads."""
    begin, end = list(begin), list(end)
    # A crop that reaches past the data into the other side's padding would leave a negative size:
    # materialise the padding of such an axis first, then crop.
    short = [i + min(b, 0) + min(e, 0) < 1 for i, b, e in zip(x.shape[2:], begin, end, strict=True)]  # type: ignore[index]
    early_b = [max(b, 0) if s else 0 for b, s in zip(begin, short, strict=True)]
    early_e = [max(e, 0) if s else 0 for e, s in zip(end, short, strict=True)]
    x = pad_spatial(graph, x, early_b, early_e, before)
    begin = [b - p for b, p in zip(begin, early_b, strict=True)]
    end = [e - p for e, p in zip(end, early_e, strict=True)]
    crop_b, crop_e = [min(p, 0) for p in begin], [min(p, 0) for p in end]
    x = pad_spatial(graph, x, crop_b, crop_e, before)
    pads = [max(p, 0) for p in begin] + [max(p, 0) for p in end]
    inputs = [x, w] + ([b] if b is not None else [])
    return graph.add_node("Conv", inputs, {**attrs, "pads": pads}, before=before).outputs[0]


def add_bias(graph: Graph, y: Value, b: Value | None, rank: int, before: Node) -> Value:
    """y + B broadcast over the spatial axes (B has one value per output channel)."""
    if b is None:
        return y
    shaped = graph.op("Reshape", b, graph.const(ints([-1, *([1] * rank)]), "bias_shape"), before=before)
    return graph.op("Add", y, shaped, before=before)


def total(values) -> int:
    """The product of `values` (1 for none): element counts of shapes and kernels."""
    return math.prod(values)
