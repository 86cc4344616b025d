"""`matrix`: ConvTranspose as one product with its explicit matrix Fᵀ.

Rewrite (DESIGN.md 3.2): `Y_flat = X_flat · Tᵀ (+ B)` with T the (M·Πo) × (C·Πi) matrix of the
node (lowering.linop builds it from the scatter definition). Dense: one MatMul with a constant.
Sparse: one SparseMatMul with T's nonzeros in COO form (at most C·(M/g)·Πk·Πi of them).
The memory the matrix needs is computed before anything is built, and the pass refuses, in one
line with the estimate, when it exceeds `budget_bytes`. Weights that are graph inputs are
refused: the matrix would have to be rebuilt at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowering.errors import LoweringError
from lowering.geometry import ConvTransposeGeometry
from lowering.ir import Graph, Node, Value
from lowering.linop import ConvTransposeOperator

from .strategy import Cost, Declined, LoweringStrategy, add_bias, batch_of, ints, itemsize, register_strategy, total

DEFAULT_BUDGET = 256 << 20
SPARSE_INDEX_BYTES = 16  # a row and a column index (int64) per nonzero


def structural_nonzeros(g: ConvTransposeGeometry) -> int:
    """Exact nonzeros of Fᵀ: per axis, the (tap, input) pairs whose output lands inside it."""
    per_axis = [
        sum(1 for kappa in range(k) for i in range(n) if 0 <= s * i + d * kappa - p < o)
        for k, n, s, d, p, o in zip(
            g.kernel, g.in_spatial, g.strides, g.dilations, g.pads_begin, g.out_spatial, strict=True
        )
    ]
    return g.in_channels * g.out_channels_per_group * total(per_axis)


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError


@register_strategy
@dataclass
class MatrixLowering(LoweringStrategy):
    name = "matrix"
    summary = "the explicit operator F^T as one MatMul (dense) or SparseMatMul (sparse)"
    budget_bytes: int = DEFAULT_BUDGET
    # "auto": sparse when at most 1/4 of the entries are nonzero; "exact": dense only when no entry is a
    # structural zero (so NaN / Inf inputs are never multiplied by a zero that the definition lacks)
    sparse: str = "auto"

    @classmethod
    def for_auto(cls, budget_bytes: int) -> MatrixLowering:
        """Within auto's small budget, and never multiplying a structural zero (NaN / Inf stay exact)."""
        return cls(budget_bytes=budget_bytes, sparse="exact")

    def _layout(self, g: ConvTransposeGeometry, item: int) -> tuple[bool, int, int]:
        rows, cols = g.out_channels * total(g.out_spatial), g.in_channels * total(g.in_spatial)
        nnz = g.in_channels * g.out_channels_per_group * total(g.kernel) * total(g.in_spatial)
        if self.sparse not in ("auto", "exact", "yes", "no"):
            raise LoweringError(f"matrix: option sparse must be auto, exact, yes or no, got '{self.sparse}'")
        if self.sparse == "exact":
            nnz = structural_nonzeros(g)
        sparse = (
            self.sparse == "yes"
            or (self.sparse == "auto" and 4 * nnz <= rows * cols)
            or (self.sparse == "exact" and nnz < rows * cols)
        )
        matrix_bytes = nnz * (item + SPARSE_INDEX_BYTES) if sparse else rows * cols * item
        return sparse, matrix_bytes, nnz if sparse else rows * cols

    def is_sparse(self, node: Node, g: ConvTransposeGeometry) -> bool:
        """Whether this node's F^T is written sparse (SparseMatMul: ScatterND in ONNX) or dense (MatMul)."""
        return self._layout(g, itemsize(node))[0]

    def cost(self, graph: Graph, node: Node, g: ConvTransposeGeometry) -> Cost:
        item = itemsize(node)
        sparse, matrix_bytes, entries = self._layout(g, item)
        n = batch_of(g)
        return Cost(
            self.name,
            useful_macs=g.useful_macs(n),
            executed_macs=n * entries,
            largest_intermediate_bytes=n * g.out_channels * total(g.out_spatial) * item,
            weight_bytes=matrix_bytes,
            ops=3,
            detail=f"{'sparse' if sparse else 'dense'} F^T {g.out_channels * total(g.out_spatial)} x "
            f"{g.in_channels * total(g.in_spatial)}, {human_bytes(matrix_bytes)}",
        )

    def check(self, graph: Graph, node: Node, g: ConvTransposeGeometry) -> None:
        if graph.constant_value(node.inputs[1]) is None:
            raise Declined(
                f"{node.label}: matrix strategy needs constant weights; W '{node.inputs[1].name}' is a graph input"
            )
        sparse, matrix_bytes, _ = self._layout(g, itemsize(node))
        if matrix_bytes > self.budget_bytes:
            raise Declined(
                f"{node.label}: matrix strategy needs {human_bytes(matrix_bytes)} for the "
                f"{'sparse' if sparse else 'dense'} F^T ({g.out_channels * total(g.out_spatial)} x "
                f"{g.in_channels * total(g.in_spatial)}), above the budget of {human_bytes(self.budget_bytes)} "
                "(raise it with --matrix-budget)"
            )

    def rewrite(self, graph: Graph, node: Node, g: ConvTransposeGeometry) -> Value:
        x, b = node.inputs[0], node.input(2)
        dtype = x.dtype or "float32"
        weight = np.asarray(graph.constant_value(node.inputs[1]), np.float64)
        sparse, _, _ = self._layout(g, itemsize(node))
        matrix = ConvTransposeOperator(g, weight).to_matrix(sparse=True).tocoo()  # (M·Πo, C·Πi)
        flat = graph.op(
            "Reshape", x, graph.const(ints([0, g.in_channels * total(g.in_spatial)]), "x_flat"), before=node
        )
        if sparse:
            y = graph.op(
                "SparseMatMul",
                flat,
                graph.const(matrix.data.astype(dtype), "ft_values"),
                graph.const(matrix.col.astype(np.int64), "ft_rows"),  # rows of Tᵀ
                graph.const(matrix.row.astype(np.int64), "ft_cols"),
                shape=[matrix.shape[1], matrix.shape[0]],
                before=node,
            )
        else:
            y = graph.op("MatMul", flat, graph.const(matrix.toarray().T.astype(dtype), "ft"), before=node)
        y = graph.op("Reshape", y, graph.const(ints([0, g.out_channels, *g.out_spatial]), "y_shape"), before=node)
        return add_bias(graph, y, b, g.rank, node)
