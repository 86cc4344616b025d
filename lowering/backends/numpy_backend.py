"""The NumPy backend: a graph as readable, standalone Python source that needs only NumPy.

`emit_numpy(graph)` returns the source of a module with one function, `run(inputs) -> outputs`
(dicts of arrays by graph names), and the constants too large to inline, which `write_numpy_module`
stores in an `.npz` beside the `.py`. Each op has an emitter in `EMITTERS` that writes one
statement; kernels that need more than one NumPy call are copied in from `numpy_kernels`.
float16 tensors are computed in float32 and cast back at the outputs.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import UnsupportedError
from ..geometry import node_geometry
from ..ir import Graph, Node, Value
from .numpy_kernels import DEPENDS, KERNELS
from .registry import CompiledGraph, register_backend, source_text

INLINE_LIMIT = 16


class _Context:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.names: dict[int, str] = {}
        self.used: set[str] = set()
        self.kernels: list[str] = []
        self.constants: dict[str, np.ndarray] = {}
        self.inline: dict[str, str] = {}

    def name(self, value: Value | None) -> str:
        if value is None:
            return "None"
        key = id(value)
        if key not in self.names:
            base = re.sub(r"\W", "_", value.name).strip("_") or "t"
            if base[0].isdigit() or keyword.iskeyword(base):
                base = "v_" + base
            candidate, counter = base, 1
            while candidate in self.used or candidate in ("np", "run", "inputs", "outputs", "CONSTANTS"):
                candidate, counter = f"{base}_{counter}", counter + 1
            self.used.add(candidate)
            self.names[key] = candidate
        return self.names[key]

    def kernel(self, name: str) -> str:
        for dependency in DEPENDS.get(name, []):
            self.kernel(dependency)
        if name not in self.kernels:
            self.kernels.append(name)
        return name

    def const(self, value: Value | None) -> np.ndarray:
        data = self.graph.constant_value(value)
        if data is None:
            raise UnsupportedError(f"value '{value.name if value else '?'}' must be a constant for the NumPy backend")
        return np.asarray(data)


def _compute_dtype(dtype: str | None) -> str:
    return "float32" if dtype == "float16" else (dtype or "float32")


def _numbers(value: object) -> str:
    """Python source for a number or nested list of numbers; `repr` writes NaN and infinity as bare
    `nan` / `inf`, which are not names in the generated module."""
    return re.sub(r"\b(nan|inf)\b", r"np.\1", repr(value))


def _literal(array: np.ndarray) -> str:
    dtype = _compute_dtype(array.dtype.name)
    return f"np.array({_numbers(array.astype(dtype).tolist())}, dtype=np.{dtype})"


# ----------------------------------------------------------------- emitters: node -> expression

Emitter = Callable[[_Context, Node, list[str]], str]


def _conv(ctx: _Context, node: Node, a: list[str]) -> str:
    g = node_geometry(node)
    bias = a[2] if len(a) > 2 else "None"
    return (
        f"{ctx.kernel('_conv')}({a[0]}, {a[1]}, {bias}, strides={list(g.strides)}, dilations={list(g.dilations)}, "
        f"pads_begin={list(g.pads_begin)}, pads_end={list(g.pads_end)}, group={g.group})"
    )


def _conv_transpose(ctx: _Context, node: Node, a: list[str]) -> str:
    g = node_geometry(node)
    bias = a[2] if len(a) > 2 else "None"
    return (
        f"{ctx.kernel('_conv_transpose')}({a[0]}, {a[1]}, {bias}, strides={list(g.strides)}, "
        f"dilations={list(g.dilations)}, pads_begin={list(g.pads_begin)}, pads_end={list(g.pads_end)}, "
        f"out_sp={list(g.out_spatial)}, group={g.group})"
    )


def _pad(ctx: _Context, node: Node, a: list[str]) -> str:
    x = node.inputs[0]
    rank = len(x.shape)
    pads = [int(p) for p in ctx.const(node.inputs[1]).reshape(-1)]
    axes = (
        list(range(rank)) if node.input(3) is None else [int(v) % rank for v in ctx.const(node.inputs[3]).reshape(-1)]
    )
    begin, end = [0] * rank, [0] * rank
    for k, axis in enumerate(axes):
        begin[axis], end[axis] = pads[k], pads[k + len(axes)]
    mode = node.attr("mode")
    if mode != "constant":
        widths = [(b, e) for b, e in zip(begin, end, strict=True)]
        if min(begin + end) < 0:
            raise UnsupportedError(f"{node.label}: negative pads with mode '{mode}'")
        return f"np.pad({a[0]}, {widths}, mode={({'reflect': 'reflect', 'edge': 'edge', 'wrap': 'wrap'})[mode]!r})"
    fill = 0.0 if node.input(2) is None else float(ctx.const(node.inputs[2]).reshape(-1)[0])
    return f"{ctx.kernel('_pad_crop')}({a[0]}, {begin}, {end}, {fill!r})"


def _slice_text(sl: slice) -> str:
    def part(v):
        return "" if v is None else str(v)

    text = f"{part(sl.start)}:{part(sl.stop)}"
    return text + (f":{sl.step}" if sl.step not in (None, 1) else "")


def _slice(ctx: _Context, node: Node, a: list[str]) -> str:
    from ..ops.tensor import slice_indices

    x = node.inputs[0]
    opt = [None if node.input(i) is None else ctx.const(node.inputs[i]) for i in (3, 4)]
    slices = slice_indices(node.fail, x.shape, ctx.const(node.inputs[1]), ctx.const(node.inputs[2]), *opt)
    big = np.iinfo(np.int64).max
    cleaned = [
        slice(
            None if s.start is None or abs(s.start) >= big // 2 else s.start,
            None if s.stop is None or abs(s.stop) >= big // 2 else s.stop,
            s.step,
        )
        for s in slices
    ]
    while cleaned and cleaned[-1] == slice(None, None, None):
        cleaned.pop()
    return f"{a[0]}[{', '.join(_slice_text(s) for s in cleaned) or '...'}]"


def _reshape(ctx: _Context, node: Node, a: list[str]) -> str:
    shape = node.outputs[0].shape
    dims = [str(d) if isinstance(d, int) else f"{a[0]}.shape[{i}]" for i, d in enumerate(shape)]
    return f"{a[0]}.reshape({', '.join(dims)}{',' if len(dims) == 1 else ''})"


def _transpose(ctx: _Context, node: Node, a: list[str]) -> str:
    perm = node.attr("perm") or list(range(len(node.inputs[0].shape)))[::-1]
    return f"{a[0]}.transpose({tuple(perm)})"


def _split(ctx: _Context, node: Node, a: list[str]) -> str:
    from ..ops.tensor import split_sizes

    x = node.inputs[0]
    axis = node.attr("axis") % len(x.shape)
    sizes_in = None if node.input(1) is None else ctx.const(node.inputs[1])
    sizes = split_sizes(node.fail, x.shape[axis], sizes_in, len(node.outputs))
    cuts = list(np.cumsum(sizes)[:-1])
    return f"np.split({a[0]}, {[int(c) for c in cuts]}, axis={axis})"


def _gemm(ctx: _Context, node: Node, a: list[str]) -> str:
    lhs = f"{a[0]}.T" if node.attr("transA") else a[0]
    rhs = f"{a[1]}.T" if node.attr("transB") else a[1]
    expr = f"({lhs} @ {rhs})"
    if node.attr("alpha") != 1.0:
        expr = f"np.float32({_numbers(node.attr('alpha'))}) * {expr}"
    if len(a) > 2 and a[2] != "None":
        expr += f" + {a[2]}" if node.attr("beta") == 1.0 else f" + np.float32({_numbers(node.attr('beta'))}) * {a[2]}"
    return expr


def _depth_to_space(ctx: _Context, node: Node, a: list[str]) -> str:
    b = node.attr("blocksize")
    n, c, h, w = node.inputs[0].shape
    n = f"{a[0]}.shape[0]"
    if node.attr("mode") == "DCR":
        t = f"{a[0]}.reshape({n}, {b}, {b}, {c // (b * b)}, {h}, {w}).transpose(0, 3, 4, 1, 5, 2)"
    else:
        t = f"{a[0]}.reshape({n}, {c // (b * b)}, {b}, {b}, {h}, {w}).transpose(0, 1, 4, 2, 5, 3)"
    return f"{t}.reshape({n}, {c // (b * b)}, {h * b}, {w * b})"


def _interleave(ctx: _Context, node: Node, a: list[str]) -> str:
    sizes = list(node.outputs[0].shape[2:])
    return f"{ctx.kernel('_interleave')}([{', '.join(a)}], {list(node.attr('strides'))}, {sizes})"


def _depth_to_space_nd(ctx: _Context, node: Node, a: list[str]) -> str:
    blocks = list(node.attr("blocks"))
    begins = list(node.attr("begins") or [0] * len(blocks))
    sizes = list(node.outputs[0].shape[2:])
    return f"{ctx.kernel('_depth_to_space_nd')}({a[0]}, {blocks}, {node.attr('mode')!r}, {begins}, {sizes})"


def _space_to_depth(ctx: _Context, node: Node, a: list[str]) -> str:
    b = node.attr("blocksize")
    _, c, h, w = node.inputs[0].shape
    n = f"{a[0]}.shape[0]"
    return (
        f"{a[0]}.reshape({n}, {c}, {h // b}, {b}, {w // b}, {b}).transpose(0, 3, 5, 1, 2, 4)"
        f".reshape({n}, {c * b * b}, {h // b}, {w // b})"
    )


def _window_args(ctx: _Context, node: Node, rank: int) -> str:
    strides = node.attr("strides") or [1] * rank
    dilations = node.attr("dilations") or [1] * rank
    pads = node.attr("pads") or [0] * (2 * rank)
    return f"strides={list(strides)}, dilations={list(dilations)}, pads={list(pads)}"


def _col2im(ctx: _Context, node: Node, a: list[str]) -> str:
    image = [int(v) for v in ctx.const(node.inputs[1]).reshape(-1)]
    block = [int(v) for v in ctx.const(node.inputs[2]).reshape(-1)]
    return f"{ctx.kernel('_col2im')}({a[0]}, {image}, {block}, {_window_args(ctx, node, len(image))})"


def _im2col(ctx: _Context, node: Node, a: list[str]) -> str:
    block = [int(v) for v in ctx.const(node.inputs[1]).reshape(-1)]
    return f"{ctx.kernel('_im2col')}({a[0]}, {block}, {_window_args(ctx, node, len(block))})"


def _batch_norm(ctx: _Context, node: Node, a: list[str]) -> str:
    rank = len(node.inputs[0].shape)
    shape = f"(-1{', 1' * (rank - 2)})"
    eps = node.attr("epsilon")
    return (
        f"({a[0]} - {a[3]}.reshape{shape}) * ({a[1]} / np.sqrt({a[4]} + np.float32({_numbers(eps)}))).reshape{shape}"
        f" + {a[2]}.reshape{shape}"
    )


def _clip(ctx: _Context, node: Node, a: list[str]) -> str:
    expr = a[0]
    if len(a) > 1 and a[1] != "None":
        expr = f"np.where({expr} < {a[1]}, {a[1]}, {expr})"
    if len(a) > 2 and a[2] != "None":
        expr = f"np.where({expr} > {a[2]}, {a[2]}, {expr})"
    return expr


def _gather(ctx: _Context, node: Node, a: list[str]) -> str:
    return f"np.take({a[0]}, {a[1]}, axis={node.attr('axis')})"


def _scatter_nd(ctx: _Context, node: Node, a: list[str]) -> str:
    if node.attr("reduction") != "add":
        raise UnsupportedError(f"{node.label}: the NumPy backend supports ScatterND with reduction 'add' only")
    return f"{ctx.kernel('_scatter_nd_add')}({a[0]}, {a[1]}, {a[2]})"


def _sparse_matmul(ctx: _Context, node: Node, a: list[str]) -> str:
    return f"{ctx.kernel('_sparse_matmul')}({a[0]}, {a[1]}, {a[2]}, {a[3]}, {node.attr('shape')[1]})"


def _constant(ctx: _Context, node: Node, a: list[str]) -> str:
    from ..ops.tensor import constant_attr_value

    return _literal(np.asarray(constant_attr_value(node)))


def _nearest_upsample(ctx: _Context, node: Node, a: list[str]) -> str:
    scales = list(node.attr("scales"))
    return a[0] + "".join(f".repeat({s}, axis={axis})" for axis, s in enumerate(scales, start=2) if s > 1)


def _sum_pool(ctx: _Context, node: Node, a: list[str]) -> str:
    kernel = list(node.attr("kernel_shape"))
    spatial = node.inputs[0].shape[2:]
    outs = [dim // k for dim, k in zip(spatial, kernel, strict=True)]
    crop = ", ".join(f":{o * k}" for o, k in zip(outs, kernel, strict=True))
    split = ", ".join(f"{o}, {k}" for o, k in zip(outs, kernel, strict=True))
    axes = tuple(3 + 2 * axis for axis in range(len(kernel)))
    return f"{a[0]}[..., {crop}].reshape({a[0]}.shape[0], {a[0]}.shape[1], {split}).sum(axis={axes})"


EMITTERS: dict[str, Emitter] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Pad": _pad,
    "Slice": _slice,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Concat": lambda ctx, node, a: f"np.concatenate([{', '.join(a)}], axis={node.attr('axis')})",
    "Split": _split,
    "MatMul": lambda ctx, node, a: f"{a[0]} @ {a[1]}",
    "Gemm": _gemm,
    "Add": lambda ctx, node, a: f"{a[0]} + {a[1]}",
    "Sub": lambda ctx, node, a: f"{a[0]} - {a[1]}",
    "Mul": lambda ctx, node, a: f"{a[0]} * {a[1]}",
    "Div": lambda ctx, node, a: f"{a[0]} / {a[1]}",
    "Relu": lambda ctx, node, a: f"np.maximum({a[0]}, 0)",
    "LeakyRelu": lambda ctx, node, a: (
        f"np.where({a[0]} >= 0, {a[0]}, {a[0]} * np.float32({_numbers(node.attr('alpha'))}))"
    ),
    "Sigmoid": lambda ctx, node, a: f"{ctx.kernel('_sigmoid')}({a[0]})",
    "Tanh": lambda ctx, node, a: f"np.tanh({a[0]})",
    "Clip": _clip,
    "BatchNormalization": _batch_norm,
    "DepthToSpace": _depth_to_space,
    "DepthToSpaceND": _depth_to_space_nd,
    "SpaceToDepth": _space_to_depth,
    "Col2Im": _col2im,
    "Im2Col": _im2col,
    "InteriorPad": lambda ctx, node, a: f"{ctx.kernel('_interior_pad')}({a[0]}, {list(node.attr('interior'))})",
    "Interleave": _interleave,
    "Flip": lambda ctx, node, a: f"np.flip({a[0]}, axis={tuple(node.attr('axes'))})",
    "Identity": lambda ctx, node, a: a[0],
    "Constant": _constant,
    "Gather": _gather,
    "ScatterND": _scatter_nd,
    "SparseMatMul": _sparse_matmul,
    "NearestUpsample": _nearest_upsample,
    "SumPool": _sum_pool,
}

# Inputs an emitter reads at code-generation time (shapes, pads, ...), so they need no variable.
_COMPILE_TIME_INPUTS = {
    "Pad": {1, 3},
    "Slice": {1, 2, 3, 4},
    "Reshape": {1},
    "Split": {1},
    "Col2Im": {1, 2},
    "Im2Col": {1},
}


def emit_numpy(graph: Graph, *, constants_file: str | None = None) -> tuple[str, dict[str, np.ndarray]]:
    """(source, external constants) of a standalone NumPy module computing `graph`.

    Constants of more than INLINE_LIMIT elements are external: loaded from `constants_file` (an
    .npz beside the module) when given, else expected in a `CONSTANTS` dict injected by the caller.
    """
    ctx = _Context(graph)
    for node in graph.nodes:
        if node.op not in EMITTERS:
            raise UnsupportedError(f"{node.label}: op '{node.op}' is not supported by the NumPy backend")
    body: list[str] = []
    for value in graph.inputs:
        name = ctx.name(value)
        # a float input computes in the graph's type (float16 in float32), whatever float type it came in:
        # as the PyTorch and onnxruntime backends do; no copy when it already has that type
        typed = f", dtype=np.{_compute_dtype(value.dtype)}" if value.dtype and value.dtype.startswith("float") else ""
        body.append(f"    {name} = np.asarray(inputs[{value.name!r}]{typed})")
    compile_time = {
        id(node.inputs[i])
        for node in graph.nodes
        for i in _COMPILE_TIME_INPUTS.get(node.op, ())
        if i < len(node.inputs) and node.inputs[i] is not None
    }
    header: list[str] = []
    for value in graph.initializers.values():
        if id(value) in compile_time and not any(i not in _COMPILE_TIME_INPUTS.get(n.op, ()) for n, i in value.uses):
            continue
        name = ctx.name(value)
        data = np.asarray(value.const)
        if data.size <= INLINE_LIMIT:
            header.append(f"{name} = {_literal(data)}")
        else:
            ctx.constants[name] = data.astype(_compute_dtype(data.dtype.name))
            header.append(f"{name} = CONSTANTS[{name!r}]")
    for node in graph.nodes:
        args = [ctx.name(v) if v is not None else "None" for v in node.inputs]
        expr = EMITTERS[node.op](ctx, node, args)
        outs = ", ".join(ctx.name(v) for v in node.outputs)
        comment = f"  # {node.op}" + (f" {source_text(node.name)}" if node.name else "")
        body.append(f"    {outs}{',' if len(node.outputs) > 1 and node.op != 'Split' else ''} = {expr}{comment}")
    returns = []
    for value in graph.outputs:
        cast = ".astype(np.float16)" if value.dtype == "float16" else ""
        returns.append(f"        {value.name!r}: np.asarray({ctx.name(value)}){cast},")
    loader = (
        f"CONSTANTS = dict(np.load(Path(__file__).with_name({constants_file!r})))\n"
        if constants_file and ctx.constants
        else ""
    )
    kernels = "\n\n".join(KERNELS[k].rstrip() for k in ctx.kernels)
    source = "\n".join(
        [
            f'"""Graph {source_text(graph.name)} as NumPy code, written by the lowering NumPy backend.',
            "",
            "Call run({input name: array}) -> {output name: array}.",
            '"""',
            "",
            *(["from pathlib import Path", ""] if loader else []),
            "import numpy as np",
            "",
            loader,
            kernels,
            "",
            *header,
            "",
            "",
            "def run(inputs):",
            *body,
            "    return {",
            *returns,
            "    }",
            "",
        ]
    )
    source = re.sub(r"\n{3,}(?=\S)", "\n\n\n", source)
    return source, ctx.constants


def write_numpy_module(graph: Graph, path: str | Path) -> list[Path]:
    """Write `path` (.py) and, when needed, its constants `.npz` beside it, atomically."""
    import io

    from ..atomic import write_bytes_atomic

    path = Path(path)
    npz = path.with_suffix(".npz")
    source, constants = emit_numpy(graph, constants_file=npz.name)
    written = []
    if constants:
        buffer = io.BytesIO()
        np.savez(buffer, **constants)
        write_bytes_atomic(npz, buffer.getvalue())
        written.append(npz)
    write_bytes_atomic(path, source.encode())
    return [path, *written]


@register_backend("numpy")
def compile_numpy(graph: Graph, device: str = "cpu") -> CompiledGraph:
    if device != "cpu":
        raise UnsupportedError(f"the NumPy backend runs on the CPU only, not '{device}'")
    source, constants = emit_numpy(graph)
    namespace: dict = {"CONSTANTS": constants, "__name__": f"lowering_numpy_{graph.name!a}"}
    exec(compile(source, f"<numpy backend: {graph.name!a}>", "exec"), namespace)
    return CompiledGraph(graph, "numpy", device, namespace["run"], source=source)
