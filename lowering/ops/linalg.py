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
    linear_inputs=(0, 1),  # in one of A and B at a time, the other constant, and C zero
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


# --------------------------------------------------------------------------- transpose rules


def _active_factor(ctx, node: Node) -> int:
    """Which of A and B is the linear operand; a product of two active operands is bilinear, refused."""
    a, b = (ctx.is_active(v) for v in node.inputs[:2])
    if a and b:
        ctx.refuse("multiplies two values that both depend on the graph inputs, so it is bilinear, not linear")
    return 0 if a else 1


def _swap_last(array: np.ndarray) -> np.ndarray:
    return np.swapaxes(array, -1, -2)


@matmul.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """Y = A·B with one factor constant: Ā = Ȳ·Bᵀ, or B̄ = Aᵀ·Ȳ (1-D operands as NumPy treats them)."""
    index = _active_factor(ctx, node)
    z = cotangents[0]
    x = node.inputs[index]
    c = ctx.array(node.inputs[1 - index])
    rx, rc = len(x.shape), c.ndim
    broadcast = f"broadcasting {x.name} over the batch axes of the constant needs a sum; no rule here"
    if index == 0:  # Y = X·C
        if rx == 1 and rc == 1:
            return {0: ctx.op("Mul", ctx.const(c, "matmul_b"), z)}
        if rx == 1 and rc == 2:
            return {0: ctx.op("MatMul", ctx.const(c, "matmul_b"), z)}
        if rc == 1:  # (..., M, K)·(K,) = (..., M): outer product of Ȳ with C
            column = ctx.op("Reshape", z, ctx.ints([0] * (rx - 1) + [1], "shape"))
            return {0: ctx.op("MatMul", column, ctx.const(c.reshape(1, -1), "matmul_b"))}
        if rx >= 2 and tuple(z.shape[:-2]) == tuple(x.shape[:-2]):
            return {0: ctx.op("MatMul", z, ctx.const(_swap_last(c), "matmul_bt"))}
        ctx.refuse(broadcast)
    # Y = C·X
    if rx == 1 and rc == 1:
        return {1: ctx.op("Mul", ctx.const(c, "matmul_a"), z)}
    if rx == 1 and rc == 2:
        return {1: ctx.op("MatMul", ctx.const(c.T, "matmul_at"), z)}
    if rc == 1:  # (K,)·(..., K, N) = (..., N): outer product of C with Ȳ
        row = ctx.op("Reshape", z, ctx.ints([0] * (rx - 2) + [1, x.shape[-1]], "shape"))
        return {1: ctx.op("MatMul", ctx.const(c.reshape(-1, 1), "matmul_a"), row)}
    if rx >= 2 and tuple(z.shape[:-2]) == tuple(x.shape[:-2]):
        return {1: ctx.op("MatMul", ctx.const(_swap_last(c), "matmul_at"), z)}
    ctx.refuse(broadcast)


@gemm.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """alpha·op(A)·op(B) with one factor constant and no C: another Gemm with the transposes moved."""
    if node.input(2) is not None and node.attr("beta") != 0:
        ctx.require_no_bias(2, "bias C")
    index = _active_factor(ctx, node)
    z = cotangents[0]
    alpha, ta, tb = node.attr("alpha"), node.attr("transA"), node.attr("transB")
    if index == 0:  # op(A)ᵀ-cotangent = alpha·Z·op(B)ᵀ
        b = ctx.constant(node.inputs[1])
        if ta:
            return {0: ctx.op("Gemm", b, z, alpha=alpha, transA=tb, transB=1)}
        return {0: ctx.op("Gemm", z, b, alpha=alpha, transB=1 - tb)}
    a = ctx.constant(node.inputs[0])  # op(B)-cotangent = alpha·op(A)ᵀ·Z
    if tb:
        return {1: ctx.op("Gemm", z, a, alpha=alpha, transA=1, transB=ta)}
    return {1: ctx.op("Gemm", a, z, alpha=alpha, transA=1 - ta)}
