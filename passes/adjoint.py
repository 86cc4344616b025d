"""`adjoint`: replace a linear graph by the graph of its transpose.

Rewrite: the whole graph `A` (linear in its inputs) becomes `Aᵀ`, built by `lowering.adjoint` from
the per-op transpose rules kept next to each op (`@opdef.transpose` in `lowering/ops/*.py`):
Conv <-> ConvTranspose (output_padding derived so shapes round-trip), InteriorPad (zero insertion)
<-> strided Slice (with Flip for negative steps), Pad <-> crop, Reshape, Transpose <-> inverse
permutation, Flip, MatMul / Gemm / Mul / Div by a constant, BatchNormalization without shift,
Add / Sub (fan-in) <-> fan-out, Concat <-> Split, DepthToSpace <-> SpaceToDepth, Interleave <->
strided Slices (+ Pad), Col2Im <-> Im2Col,
NearestUpsample <-> SumPool, Gather <-> ScatterND (add), SparseMatMul <-> its transpose, Identity.
The inputs of the result are the cotangents of the outputs (`<output>_cotangent`), its outputs
those of the inputs. A graph with a non-linear node is refused, naming the op and the node;
`strip_bias` drops biases first (the transpose of the linear part of an affine graph).
"""

from __future__ import annotations

from dataclasses import dataclass

from lowering.ir import Graph

from .base import Pass, PassResult, register_pass


@register_pass
@dataclass
class Adjoint(Pass):
    name = "adjoint"
    summary = "the graph of the transpose of a linear graph (inputs <-> outputs, each op by its transpose rule)"
    strip_bias: bool = False

    def run(self, graph: Graph) -> PassResult:
        from lowering.transposition import adjoint

        transposed = adjoint(graph, strip_bias=self.strip_bias)
        return PassResult(transposed, True, list(transposed.meta.get("adjoint_notes", [])))
