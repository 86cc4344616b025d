"""SparseMatMul in standard ONNX: gather the rows a nonzero reads, scale, scatter-add to its column.

    A (B, K) -> Aᵀ (K, B) -> Gather(rows) (nnz, B) · values -> ScatterND(zeros (N, B), cols, add)
    -> (N, B) -> transpose -> (B, N)

Memory and multiply-adds stay proportional to the nonzeros. The zeros are an empty slice of Aᵀ
padded out, so no arithmetic touches A there and NaN or Inf in A reach only the columns the
matrix connects them to. ScatterND's `add` reduction needs opset 16.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Value


def _ints(values) -> np.ndarray:
    return np.asarray(list(values), dtype=np.int64)


def expand_sparse_matmul(graph: Graph, node: Node) -> Value:
    a, values, rows, cols = node.inputs
    n = node.attr("shape")[1]
    if a.shape is None or len(a.shape) != 2:
        node.fail(f"the ONNX form of SparseMatMul takes a 2-D input, got shape {a.shape}")
    at = graph.op("Transpose", a, perm=[1, 0], before=node)
    picked = graph.op("Gather", at, rows, axis=0, before=node)
    scale = graph.op("Reshape", values, graph.const(_ints([-1, 1]), "sparse_scale"), before=node)
    updates = graph.op("Mul", picked, scale, before=node)
    empty = graph.op(
        "Slice",
        at,
        graph.const(_ints([0]), "starts"),
        graph.const(_ints([0]), "ends"),
        graph.const(_ints([0]), "axes"),
        before=node,
    )
    zeros = graph.op("Pad", empty, graph.const(_ints([0, 0, n, 0]), "sparse_rows"), before=node)
    index = graph.op("Reshape", cols, graph.const(_ints([-1, 1]), "sparse_index"), before=node)
    summed = graph.op("ScatterND", zeros, index, updates, reduction="add", before=node)
    return graph.op("Transpose", summed, perm=[1, 0], before=node)
