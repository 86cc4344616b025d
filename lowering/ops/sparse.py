"""SparseMatMul (this project's op): a dense tensor times a constant sparse matrix in COO form.

It carries the `matrix` lowering's explicit Fᵀ without densifying it: memory and multiply-adds
are proportional to the nonzeros, at most C·(M/g)·Πk·Πi for a ConvTranspose.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..ir import Node
from .registry import Attr, InferContext, TensorType, define

sparse_matmul = define(
    "SparseMatMul",
    inputs=("A", "values", "rows", "cols"),
    attrs={"shape": Attr("ints", required=True, doc="[K, N]: the sparse matrix B is K x N")},
    domain="lowering",
    linear_inputs=(0,),
    doc="A (..., K) · B with B = COO(values, (rows, cols), shape) -> (..., N); duplicate entries add.",
)


@sparse_matmul.infer
def _(ctx: InferContext) -> list[TensorType]:
    shape = ctx.shape(0)
    dims = list(ctx.attr("shape"))
    if len(dims) != 2 or min(dims) < 1:
        ctx.fail(f"must be [K, N] with K, N >= 1, got {dims}", attr="shape")
    if not shape or shape[-1] != dims[0]:
        ctx.fail(f"A's last axis is {shape[-1] if shape else None} but the sparse matrix has {dims[0]} rows")
    nnz = ctx.shape(1)
    for index, what in ((2, "rows"), (3, "cols")):
        if tuple(ctx.shape(index)) != tuple(nnz) or len(nnz) != 1:
            ctx.fail(
                f"values, rows and cols must be 1-D of equal length; got {list(nnz)}, {what} {list(ctx.shape(index))}"
            )
        if ctx.dtype(index) != "int64":
            ctx.fail(f"{what} must be int64, got {ctx.dtype(index)}")
    if ctx.dtype(1) != ctx.dtype(0):
        ctx.fail(f"values have element type {ctx.dtype(1)} but A has {ctx.dtype(0)}")
    return [TensorType((*shape[:-1], dims[1]), ctx.dtype(0))]


def coo(node: Node, values, rows, cols) -> sp.csr_matrix:
    k, n = node.attr("shape")
    return sp.csr_matrix((values, (rows, cols)), shape=(k, n))


@sparse_matmul.reference
def _(node: Node, a, values, rows, cols) -> list[np.ndarray]:
    matrix = coo(node, values, rows, cols)
    flat = a.reshape(-1, a.shape[-1])
    return [np.asarray((matrix.T @ flat.T).T).reshape(*a.shape[:-1], matrix.shape[1])]


@sparse_matmul.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """A · B -> Z · Bᵀ: the same nonzeros with rows and columns exchanged."""
    k, n = node.attr("shape")
    values, rows, cols = (ctx.constant(v) for v in node.inputs[1:4])
    return {0: ctx.op("SparseMatMul", cotangents[0], values, cols, rows, shape=[n, k])}
