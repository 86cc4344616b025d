"""Data-movement ops: Pad, Slice, Reshape, Transpose, Concat, Split, Constant, Identity, and this
project's Flip and InteriorPad (zero insertion), which the lowerings emit.

Operands that decide shapes (pads, starts, target shapes, split sizes) must be compile-time
constants, as ONNX exporters produce them; the IR keeps the ONNX input layout so models
round-trip unchanged.
"""

from __future__ import annotations

import math

import numpy as np

from ..ir import Dim, Node
from .registry import Attr, InferContext, TensorType, define
from .shapes import normalize_axis

# --------------------------------------------------------------------------- Constant / Identity

constant = define(
    "Constant",
    inputs=(),
    attrs={
        "value": Attr("tensor"),
        "value_float": Attr("float"),
        "value_floats": Attr("floats"),
        "value_int": Attr("int"),
        "value_ints": Attr("ints"),
    },
    doc="A tensor known at compile time.",
)

_CONSTANT_FORMS = {
    "value": lambda v: v,
    "value_float": lambda v: np.array(v, np.float32),
    "value_floats": lambda v: np.array(v, np.float32),
    "value_int": lambda v: np.array(v, np.int64),
    "value_ints": lambda v: np.array(v, np.int64),
}


def constant_attr_value(node: Node) -> np.ndarray:
    """The tensor a Constant node holds, whichever attribute form carries it."""
    given = [name for name in _CONSTANT_FORMS if name in node.attrs]
    if len(given) != 1:
        node.fail(f"exactly one of {', '.join(_CONSTANT_FORMS)} must be set, got {len(given)}")
    return np.asarray(_CONSTANT_FORMS[given[0]](node.attrs[given[0]]))


@constant.infer
def _(ctx: InferContext) -> list[TensorType]:
    value = constant_attr_value(ctx.node)
    return [TensorType(value.shape, value.dtype.name)]


@constant.reference
def _(node: Node) -> list[np.ndarray]:
    return [constant_attr_value(node)]


identity = define("Identity", inputs=("input",), linear_inputs=(0,))


@identity.infer
def _(ctx: InferContext) -> list[TensorType]:
    return [TensorType(ctx.shape(0), ctx.dtype(0))]


@identity.reference
def _(node: Node, x: np.ndarray) -> list[np.ndarray]:
    return [x]


# --------------------------------------------------------------------------- Pad

PAD_MODES = ("constant", "reflect", "edge", "wrap")

pad = define(
    "Pad",
    inputs=("data", "pads", "constant_value?", "axes?"),
    attrs={"mode": Attr("string", "constant", "constant, reflect, edge or wrap")},
    linear_inputs=(0,),
    doc="Pad (ONNX opset >= 11 layout); negative pads crop.",
)


def _pad_amounts(ctx_or_node, rank: int, pads: np.ndarray, axes: np.ndarray | None) -> list[tuple[int, int]]:
    fail = ctx_or_node.fail
    axes_list = list(range(rank)) if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    if len(pads) != 2 * len(axes_list):
        fail(f"pads has {len(pads)} values, expected {2 * len(axes_list)} (begin and end for {len(axes_list)} axes)")
    amounts = [(0, 0)] * rank
    for k, axis in enumerate(axes_list):
        if not -rank <= axis < rank:
            fail(f"axis {axis} is out of range for rank {rank}", attr="axes")
        amounts[axis % rank] = (pads[k], pads[k + len(axes_list)])
    return amounts


@pad.infer
def _(ctx: InferContext) -> list[TensorType]:
    shape = ctx.shape(0)
    if ctx.attr("mode") not in PAD_MODES:
        ctx.fail(f"must be one of {', '.join(PAD_MODES)}, got '{ctx.attr('mode')}'", attr="mode")
    amounts = _pad_amounts(ctx, len(shape), ctx.require_const(1, "pads"), ctx.const(3))
    out: list[Dim] = []
    for axis, (dim, (before, after)) in enumerate(zip(shape, amounts, strict=True)):
        if before == 0 and after == 0:
            out.append(dim)
            continue
        if not isinstance(dim, int):
            ctx.fail(f"cannot pad symbolic axis {axis} ('{dim}')")
        size = dim + before + after
        if size < 0:
            ctx.fail(f"axis {axis}: pads {before}, {after} crop more than its size {dim}")
        out.append(size)
    return [TensorType(tuple(out), ctx.dtype(0))]


@pad.reference
def _(node: Node, data, pads, constant_value=None, axes=None) -> list[np.ndarray]:
    amounts = _pad_amounts(node, data.ndim, pads, axes)
    mode = node.attr("mode")
    if mode == "constant":
        # out[o] = data[o − begin] where that index exists, else the fill value (any signs of pads)
        fill = 0 if constant_value is None or np.size(constant_value) == 0 else np.asarray(constant_value).item()
        out = np.full([n + b + a for n, (b, a) in zip(data.shape, amounts, strict=True)], fill, dtype=data.dtype)
        src, dst = [], []
        for n, (b, a) in zip(data.shape, amounts, strict=True):
            lo, start = max(0, -b), max(0, b)
            length = min(n + min(0, a) - lo, n + b + a - start)
            if length <= 0:
                return [out]
            src.append(slice(lo, lo + length))
            dst.append(slice(start, start + length))
        out[tuple(dst)] = data[tuple(src)]
        return [out]
    crop = tuple(slice(max(0, -b), data.shape[i] - max(0, -a)) for i, (b, a) in enumerate(amounts))
    widths = [(max(0, b), max(0, a)) for b, a in amounts]
    return [np.pad(data[crop], widths, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])]


# --------------------------------------------------------------------------- Slice

# a Slice end that, with a negative step, runs through index 0 whatever the axis size (ONNX clamps it)
INT64_MIN = int(np.iinfo(np.int64).min)

slice_op = define(
    "Slice",
    inputs=("data", "starts", "ends", "axes?", "steps?"),
    linear_inputs=(0,),
    doc="Strided slice (ONNX opset >= 10 layout), with NumPy's clamping rules.",
)


def slice_indices(fail, shape, starts, ends, axes, steps) -> tuple[slice, ...]:
    """Python slices equivalent to an ONNX Slice (ONNX's clamping rules are NumPy's)."""
    rank = len(shape)
    starts = [int(v) for v in np.asarray(starts).reshape(-1)]
    ends = [int(v) for v in np.asarray(ends).reshape(-1)]
    axes_list = list(range(len(starts))) if axes is None else [int(v) for v in np.asarray(axes).reshape(-1)]
    steps_list = [1] * len(starts) if steps is None else [int(v) for v in np.asarray(steps).reshape(-1)]
    if not len(starts) == len(ends) == len(axes_list) == len(steps_list):
        fail(
            f"starts, ends, axes and steps must have equal lengths, got "
            f"{len(starts)}, {len(ends)}, {len(axes_list)}, {len(steps_list)}"
        )
    slices = [slice(None)] * rank
    seen: set[int] = set()
    for start, end, axis, step in zip(starts, ends, axes_list, steps_list, strict=True):
        if not -rank <= axis < rank:
            fail(f"axis {axis} is out of range for rank {rank}", attr="axes")
        axis %= rank
        if axis in seen:
            fail(f"axis {axis} is sliced twice")
        seen.add(axis)
        if step == 0:
            fail(f"step on axis {axis} must not be 0")
        slices[axis] = slice(start, end, step)
    return tuple(slices)


@slice_op.infer
def _(ctx: InferContext) -> list[TensorType]:
    shape = ctx.shape(0)
    slices = slice_indices(
        ctx.fail,
        shape,
        ctx.require_const(1, "starts"),
        ctx.require_const(2, "ends"),
        ctx.const(3) if ctx.input(3) is not None else None,
        ctx.const(4) if ctx.input(4) is not None else None,
    )
    if ctx.input(3) is not None and ctx.const(3) is None:
        ctx.fail("input 3 (axes) must be a constant known at compile time")
    if ctx.input(4) is not None and ctx.const(4) is None:
        ctx.fail("input 4 (steps) must be a constant known at compile time")
    out: list[Dim] = []
    for axis, (dim, sl) in enumerate(zip(shape, slices, strict=True)):
        if sl == slice(None):
            out.append(dim)
        elif not isinstance(dim, int):
            ctx.fail(f"cannot slice symbolic axis {axis} ('{dim}')")
        else:
            out.append(len(range(dim)[sl]))
    return [TensorType(tuple(out), ctx.dtype(0))]


@slice_op.reference
def _(node: Node, data, starts, ends, axes=None, steps=None) -> list[np.ndarray]:
    return [data[slice_indices(node.fail, data.shape, starts, ends, axes, steps)]]


# --------------------------------------------------------------------------- Reshape

reshape = define(
    "Reshape",
    inputs=("data", "shape"),
    attrs={"allowzero": Attr("int", 0, "1: a 0 in shape means size 0, not 'copy this axis'")},
    linear_inputs=(0,),
)


def reshape_target(fail, shape, target, allowzero: int) -> tuple[Dim, ...]:
    target = [int(v) for v in np.asarray(target).reshape(-1)]
    out: list[Dim] = []
    for axis, t in enumerate(target):
        if t == 0 and not allowzero:
            if axis >= len(shape):
                fail(f"shape[{axis}] = 0 copies input axis {axis}, but the input has rank {len(shape)}")
            out.append(shape[axis])
        else:
            if t < -1:
                fail(f"shape[{axis}] = {t} is invalid (only -1 may be negative)")
            out.append(t)
    if out.count(-1) > 1:
        fail("shape has more than one -1")
    if -1 in out:
        known = [d for d in out if d != -1]
        if all(isinstance(d, int) for d in shape) and all(isinstance(d, int) for d in known):
            total, rest = math.prod(shape), math.prod(known)  # type: ignore[arg-type]
            if rest == 0 or total % rest != 0:
                fail(f"cannot reshape {list(shape)} (size {total}) to {target}")
            out[out.index(-1)] = total // rest
        else:
            symbolic = [d for d in shape if not isinstance(d, int)]
            if len(symbolic) == 1 and symbolic[0] in known:
                out[out.index(-1)] = math.prod(d for d in shape if isinstance(d, int)) // math.prod(
                    d for d in known if isinstance(d, int)
                )
            else:
                fail(f"cannot infer -1 in reshape of symbolic shape {list(shape)} to {target}")
    elif all(isinstance(d, int) for d in (*shape, *out)) and math.prod(shape) != math.prod(out):  # type: ignore[arg-type]
        fail(f"cannot reshape {list(shape)} (size {math.prod(shape)}) to {list(out)} (size {math.prod(out)})")  # type: ignore[arg-type]
    return tuple(out)


@reshape.infer
def _(ctx: InferContext) -> list[TensorType]:
    if ctx.dtype(1) not in (None, "int64"):  # ONNX's Reshape takes its shape as int64 only
        ctx.fail(f"input 1 (shape) must be int64, got {ctx.dtype(1)}")
    target = reshape_target(ctx.fail, ctx.shape(0), ctx.require_const(1, "shape"), ctx.attr("allowzero"))
    return [TensorType(target, ctx.dtype(0))]


@reshape.reference
def _(node: Node, data, shape) -> list[np.ndarray]:
    return [data.reshape(reshape_target(node.fail, data.shape, shape, node.attr("allowzero")))]


# --------------------------------------------------------------------------- Transpose

transpose = define("Transpose", inputs=("data",), attrs={"perm": Attr("ints", None)}, linear_inputs=(0,))


def _perm(fail, perm, rank: int) -> list[int]:
    perm = list(range(rank))[::-1] if perm is None else list(perm)
    if sorted(perm) != list(range(rank)):
        fail(f"{perm} is not a permutation of {rank} axes", attr="perm")
    return perm


@transpose.infer
def _(ctx: InferContext) -> list[TensorType]:
    shape = ctx.shape(0)
    perm = _perm(ctx.fail, ctx.attr("perm"), len(shape))
    return [TensorType(tuple(shape[p] for p in perm), ctx.dtype(0))]


@transpose.reference
def _(node: Node, data) -> list[np.ndarray]:
    return [np.transpose(data, _perm(node.fail, node.attr("perm"), data.ndim))]


# --------------------------------------------------------------------------- Concat / Split

concat = define("Concat", inputs=("inputs*",), attrs={"axis": Attr("int", required=True)}, linear_inputs=(0,))


@concat.infer
def _(ctx: InferContext) -> list[TensorType]:
    shapes = [ctx.shape(i) for i in range(len(ctx.node.inputs))]
    if not shapes:
        ctx.fail("needs at least one input")
    rank = len(shapes[0])
    axis = normalize_axis(ctx, ctx.attr("axis"), rank)
    dtype = ctx.dtype(0)
    total: Dim = 0
    for index, shape in enumerate(shapes):
        if len(shape) != rank:
            ctx.fail(f"input {index} has rank {len(shape)}, input 0 has rank {rank}")
        if ctx.dtype(index) != dtype:
            ctx.fail(f"input {index} has element type {ctx.dtype(index)}, input 0 has {dtype}")
        for a in range(rank):
            if a != axis and shape[a] != shapes[0][a]:
                ctx.fail(f"input {index} has size {shape[a]} on axis {a}, input 0 has {shapes[0][a]}")
        if not isinstance(shape[axis], int) or not isinstance(total, int):
            ctx.fail(f"cannot concatenate along symbolic axis {axis}")
        total += shape[axis]
    out = list(shapes[0])
    out[axis] = total
    return [TensorType(tuple(out), dtype)]


@concat.reference
def _(node: Node, *arrays) -> list[np.ndarray]:
    return [np.concatenate(arrays, axis=node.attr("axis"))]


split = define(
    "Split",
    inputs=("input", "split?"),
    attrs={"axis": Attr("int", 0), "num_outputs": Attr("int", None, "equal parts (ONNX opset >= 18)")},
    outputs="*",
    linear_inputs=(0,),
)


def split_sizes(fail, dim: int, sizes, count: int) -> list[int]:
    if sizes is not None:
        sizes = [int(v) for v in np.asarray(sizes).reshape(-1)]
        if len(sizes) != count:
            fail(f"split has {len(sizes)} sizes but the node has {count} outputs")
        if sum(sizes) != dim or min(sizes) < 0:
            fail(f"split sizes {sizes} do not add up to the axis size {dim}")
        return sizes
    part = -(-dim // count)  # ONNX 18: the last part may be smaller
    sizes = [min(part, max(0, dim - k * part)) for k in range(count)]
    if sum(sizes) != dim or (count > 1 and sizes[-1] == 0):
        fail(f"axis size {dim} cannot be split into {count} parts")
    return sizes


@split.infer
def _(ctx: InferContext) -> list[TensorType]:
    shape = ctx.shape(0)
    axis = normalize_axis(ctx, ctx.attr("axis"), len(shape))
    count = ctx.num_outputs
    if ctx.attr("num_outputs") is not None and ctx.attr("num_outputs") != count:
        ctx.fail(f"is {ctx.attr('num_outputs')} but the node has {count} outputs", attr="num_outputs")
    dim = shape[axis]
    if not isinstance(dim, int):
        ctx.fail(f"cannot split symbolic axis {axis} ('{dim}')")
    sizes_in = ctx.require_const(1, "split") if ctx.input(1) is not None else None
    sizes = split_sizes(ctx.fail, dim, sizes_in, count)
    return [TensorType(tuple(s if a == axis else d for a, d in enumerate(shape)), ctx.dtype(0)) for s in sizes]


@split.reference
def _(node: Node, data, sizes=None) -> list[np.ndarray]:
    axis = node.attr("axis") % data.ndim
    parts = split_sizes(node.fail, data.shape[axis], sizes, len(node.outputs))
    return np.split(data, np.cumsum(parts)[:-1], axis=axis)


# --------------------------------------------------------------------------- this project's ops

flip = define(
    "Flip",
    inputs=("data",),
    attrs={"axes": Attr("ints", required=True, doc="axes to reverse")},
    domain="lowering",
    linear_inputs=(0,),
    doc="Reverse the order of elements along the given axes (ONNX: Slice with step -1).",
)


@flip.infer
def _(ctx: InferContext) -> list[TensorType]:
    shape = ctx.shape(0)
    axes = [normalize_axis(ctx, a, len(shape), "axes") for a in ctx.attr("axes")]
    if len(set(axes)) != len(axes):
        ctx.fail(f"repeats an axis: {ctx.attr('axes')}", attr="axes")
    return [TensorType(shape, ctx.dtype(0))]


@flip.reference
def _(node: Node, data) -> list[np.ndarray]:
    return [np.flip(data, axis=tuple(node.attr("axes")))]


interior_pad = define(
    "InteriorPad",
    inputs=("data",),
    attrs={"interior": Attr("ints", required=True, doc="zeros inserted between neighbours, per axis")},
    domain="lowering",
    linear_inputs=(0,),
    doc="Zero insertion: `interior[a]` zeros between consecutive elements of axis a (size n -> (n-1)(z+1)+1).",
)


def _interior(fail, interior, rank: int) -> list[int]:
    interior = list(interior)
    if len(interior) != rank:
        fail(f"has {len(interior)} values, expected one per axis ({rank})", attr="interior")
    for axis, z in enumerate(interior):
        if z < 0:
            fail(f"must be >= 0, got {z}", attr="interior", axis=axis)
    return interior


@interior_pad.infer
def _(ctx: InferContext) -> list[TensorType]:
    shape = ctx.shape(0)
    interior = _interior(ctx.fail, ctx.attr("interior"), len(shape))
    out: list[Dim] = []
    for axis, (dim, z) in enumerate(zip(shape, interior, strict=True)):
        if z == 0:
            out.append(dim)
        elif not isinstance(dim, int):
            ctx.fail(f"cannot insert zeros along symbolic axis {axis} ('{dim}')")
        else:
            out.append(0 if dim == 0 else (dim - 1) * (z + 1) + 1)
    return [TensorType(tuple(out), ctx.dtype(0))]


@interior_pad.reference
def _(node: Node, data) -> list[np.ndarray]:
    interior = _interior(node.fail, node.attr("interior"), data.ndim)
    shape = tuple(0 if n == 0 else (n - 1) * (z + 1) + 1 for n, z in zip(data.shape, interior, strict=True))
    out = np.zeros(shape, dtype=data.dtype)
    out[tuple(slice(None, None, z + 1) for z in interior)] = data
    return [out]


# --------------------------------------------------------------------------- transpose rules
# Each rule gets the adjoint-building context (lowering.transposition.TransposeContext), the node and the
# cotangents of its outputs, and returns {input index: cotangent of that input}.


@identity.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    return {0: cotangents[0]}


@pad.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """Pad with zeros <-> crop: the transpose of padding by p is padding by −p (a crop where p > 0)."""
    if node.attr("mode") != "constant":
        ctx.refuse(f"mode '{node.attr('mode')}' is linear but has no transpose rule (only 'constant' has)")
    fill = node.input(2)
    if fill is not None and np.any(ctx.array(fill) != 0):
        ctx.refuse(f"pads with the nonzero constant '{fill.name}', so it is affine, not linear")
    x = node.inputs[0]
    axes = None if node.input(3) is None else ctx.array(node.inputs[3])
    amounts = _pad_amounts(node, len(x.shape), ctx.array(node.inputs[1]), axes)
    z = cotangents[0]
    if all(b >= 0 and a >= 0 for b, a in amounts):  # a plain crop: Slice, which every runtime has
        cropped = [(axis, b, a) for axis, (b, a) in enumerate(amounts) if b or a]
        if not cropped:
            return {0: z}
        starts = [b for _, b, _ in cropped]
        ends = [b + x.shape[axis] for axis, b, _ in cropped]
        return {
            0: ctx.op(
                "Slice",
                z,
                ctx.ints(starts, "starts"),
                ctx.ints(ends, "ends"),
                ctx.ints([c[0] for c in cropped], "axes"),
            )
        }
    return {0: ctx.pad(z, [-b for b, _ in amounts], [-a for _, a in amounts])}


@slice_op.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """A strided slice <-> scatter into zeros: flip (negative steps), insert step − 1 zeros, pad."""
    x = node.inputs[0]
    optional = [None if node.input(i) is None else ctx.array(node.inputs[i]) for i in (3, 4)]
    slices = slice_indices(node.fail, x.shape, ctx.array(node.inputs[1]), ctx.array(node.inputs[2]), *optional)
    rank = len(x.shape)
    flips: list[int] = []
    interior = [0] * rank
    begin, end = [0] * rank, [0] * rank
    for axis, (dim, sl) in enumerate(zip(x.shape, slices, strict=True)):
        if sl == slice(None):
            continue
        picked = range(dim)[sl]
        if len(picked) == 0:
            begin[axis] = dim
            continue
        if len(picked) > 1:
            if picked.step < 0:
                flips.append(axis)
            interior[axis] = abs(picked.step) - 1
        low, high = min(picked[0], picked[-1]), max(picked[0], picked[-1])
        begin[axis], end[axis] = low, dim - 1 - high
    z = cotangents[0]
    if flips:
        z = ctx.op("Flip", z, axes=flips)
    if any(interior):
        z = ctx.op("InteriorPad", z, interior=interior)
    return {0: ctx.pad(z, begin, end)}


@reshape.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    return {0: ctx.reshape(cotangents[0], node.inputs[0].shape)}


@transpose.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """A permutation's transpose is its inverse."""
    perm = _perm(node.fail, node.attr("perm"), len(node.inputs[0].shape))
    inverse = [0] * len(perm)
    for position, axis in enumerate(perm):
        inverse[axis] = position
    return {0: ctx.op("Transpose", cotangents[0], perm=inverse)}


@concat.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """Concat <-> Split: each input gets its own piece of the cotangent."""
    for index, value in enumerate(node.inputs):
        if not ctx.is_active(value) and np.any(ctx.array(value) != 0):
            ctx.refuse(f"concatenates the nonzero constant '{value.name}' (input {index}), so it is affine, not linear")
    if len(node.inputs) == 1:
        return {0: cotangents[0]}
    axis = node.attr("axis") % len(node.outputs[0].shape)
    sizes = [v.shape[axis] for v in node.inputs]
    pieces = ctx.add_node("Split", [cotangents[0], ctx.ints(sizes, "split")], {"axis": axis}, len(sizes))
    return dict(enumerate(pieces))


@split.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """Split <-> Concat; a piece nothing used contributes zeros."""
    parts = [c if c is not None else ctx.zeros(v) for c, v in zip(cotangents, node.outputs, strict=True)]
    if len(parts) == 1:
        return {0: parts[0]}
    return {0: ctx.op("Concat", *parts, axis=node.attr("axis") % len(node.inputs[0].shape))}


@flip.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """A reversal is its own transpose."""
    return {0: ctx.op("Flip", cotangents[0], axes=list(node.attr("axes")))}


@interior_pad.transpose
def _(ctx, node: Node, cotangents) -> dict[int, object]:
    """Zero insertion <-> strided slice: keep every (z+1)-th element, drop the inserted zeros."""
    interior = list(node.attr("interior"))
    shape = node.outputs[0].shape
    axes = [a for a, z in enumerate(interior) if z > 0]
    if not axes:
        return {0: cotangents[0]}
    return {
        0: ctx.op(
            "Slice",
            cotangents[0],
            ctx.ints([0] * len(axes), "starts"),
            ctx.ints([shape[a] for a in axes], "ends"),
            ctx.ints(axes, "axes"),
            ctx.ints([interior[a] + 1 for a in axes], "steps"),
        )
    }
