"""Small shape helpers shared by shape-inference rules (broadcasting, axis normalisation)."""

from __future__ import annotations

from collections.abc import Sequence

from ..ir import Dim, Shape
from .registry import InferContext


def normalize_axis(ctx: InferContext, axis: int, rank: int, attr: str = "axis") -> int:
    if not -rank <= axis < rank:
        ctx.fail(f"axis {axis} is out of range for rank {rank}", attr=attr)
    return axis % rank


def broadcast(ctx: InferContext, shapes: Sequence[Shape]) -> Shape:
    """NumPy / ONNX multidirectional broadcasting; symbolic dims broadcast only with 1 or themselves."""
    rank = max(len(s) for s in shapes)
    out: list[Dim] = []
    for axis in range(rank):
        dims = [s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0]
        result: Dim = 1
        for dim in dims:
            if dim == 1:
                continue
            if result == 1:
                result = dim
            elif dim != result:
                ctx.fail(f"shapes {[list(s) for s in shapes]} do not broadcast (axis {axis}: {result} vs {dim})")
        out.append(result)
    return tuple(out)


def static_dims(ctx: InferContext, shape: Shape, what: str) -> tuple[int, ...]:
    for axis, dim in enumerate(shape):
        if not isinstance(dim, int):
            ctx.fail(f"{what} axis {axis} is symbolic ('{dim}'); a static size is needed here")
    return tuple(shape)  # type: ignore[return-value]
