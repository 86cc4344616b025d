"""`canonicalize`: make every Conv and ConvTranspose say all of its geometry explicitly.

Rules (per node, from its resolved geometry):
- `auto_pad` SAME_UPPER / SAME_LOWER / VALID and `output_shape` become explicit `pads`
  (ConvTranspose pads derived from output_shape may be negative: that widens the output);
- `strides`, `dilations`, `pads`, `kernel_shape`, `group` and, for ConvTranspose,
  `output_padding` are written out with their defaults filled in.
After it, every lowering reads plain numbers and never re-derives ONNX's padding rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lowering.geometry import ConvGeometry, ConvTransposeGeometry, node_geometry
from lowering.ir import Graph

from .base import Pass, PassResult, register_pass


def explicit_attrs(geometry: ConvTransposeGeometry | ConvGeometry) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "dilations": list(geometry.dilations),
        "group": geometry.group,
        "kernel_shape": list(geometry.kernel),
        "pads": geometry.pads,
        "strides": list(geometry.strides),
    }
    if isinstance(geometry, ConvTransposeGeometry):
        attrs["output_padding"] = list(geometry.output_padding)
    return attrs


@register_pass
@dataclass
class Canonicalize(Pass):
    name = "canonicalize"
    summary = "explicit pads (no auto_pad / output_shape) and every default written out on Conv and ConvTranspose"

    def run(self, graph: Graph) -> PassResult:
        modified = False
        for node in graph.nodes:
            if node.op not in ("Conv", "ConvTranspose"):
                continue
            attrs = explicit_attrs(node_geometry(node))
            if attrs != node.attrs:
                node.attrs = dict(sorted(attrs.items()))
                modified = True
        return PassResult(graph, modified)
