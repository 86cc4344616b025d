"""Matrix products: MatMul (NumPy semantics, batched) and Gemm."""

from __future__ import annotations

import numpy as np

from ..ir import Node
from .registry import Attr, InferContext, TensorType, define
from .shapes import broadcast

matmul = define("MatMul", inputs=("A", "B"), linear_inputs=(0, 1), doc="Matrix product with NumPy semantics.")


@matmul.infer
def _(ctx: InferContext) -> list[TensorType]:
    a, b = ctx.shape(0), ctx.shape(1)
    if ctx.dtype(0) != ctx.dtype(1):
        ctx.fail(f"inputs have different element types {ctx.dtype(0)} and {ctx.dtype(1)}")
    if not a or not b:
        ctx.fail("inputs must have rank >= 1")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        ctx.fail(f"inner dimensions differ: A {list(a)} x B {list(b)} ({a2[-1]} vs {b2[-2]})")
    batch = broadcast(ctx, [a2[:-2], b2[:-2]]) if len(a2) > 2 or len(b2) > 2 else ()
    out = (*batch, *([a2[-2]] if len(a) > 1 else []), *([b2[-1]] if len(b) > 1 else []))
    return [TensorType(out, ctx.dtype(0))]


@matmul.reference
def _(node: Node, a, b) -> list[np.ndarray]:
    return [np.matmul(a, b)]


gemm = define(
    "Gemm",
    inputs=("A", "B", "C?"),
    attrs={
        "alpha": Attr("float", 1.0),
        "beta": Attr("float", 1.0),
        "transA": Attr("int", 0),
        "transB": Attr("int", 0),
    },
    doc="alpha·op(A)·op(B) + beta·C for 2-D A and B; C broadcasts.",
)


@gemm.infer
def _(ctx: InferContext) -> list[TensorType]:
    a, b = ctx.shape(0), ctx.shape(1)
    if len(a) != 2 or len(b) != 2:
        ctx.fail(f"A and B must be 2-D, got ranks {len(a)} and {len(b)}")
    m, k = (a[1], a[0]) if ctx.attr("transA") else (a[0], a[1])
    k2, n = (b[1], b[0]) if ctx.attr("transB") else (b[0], b[1])
    if k != k2:
        ctx.fail(f"inner dimensions differ: {k} vs {k2}")
    if ctx.input(2) is not None:
        broadcast(ctx, [(m, n), ctx.shape(2)])
    return [TensorType((m, n), ctx.dtype(0))]


@gemm.reference
def _(node: Node, a, b, c=None) -> list[np.ndarray]:
    a = a.T if node.attr("transA") else a
    b = b.T if node.attr("transB") else b
    y = node.attr("alpha") * (a @ b)
    if c is not None:
        y = y + node.attr("beta") * c
    return [y]
