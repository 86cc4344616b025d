"""The PyTorch backend: a graph as a `torch.fx.GraphModule`, built node by node from the IR.

`emit_torch(graph)` writes one fx graph directly (no tracing): a placeholder per graph input, the
calls of one emitter per IR node (`EMITTERS`, op -> function adding fx nodes), constants as buffers
of the root module (so `.to(device)` moves them and `gm.code` reads `self.<buffer>`), and a dict of
outputs keyed by the graph's output names. `ConvTranspose` runs torch's native
`conv_transpose{1,2,3}d`, the kernel every lowering is measured against.

Operands that decide shapes (pads, slice bounds, target shapes, split sizes) are read at build
time and never become tensors. Calls that need more than one torch op go through the run-time
helpers of `torch_kernels`, whose source `write_torch_module` copies into a standalone file. float16 graphs compute
in float32 (cast at the inputs and outputs); float32 and float64 graphs compute in their own type.

torch is imported on first use, like every backend's runtime: importing this module is cheap.
"""

from __future__ import annotations

import inspect
import io
import itertools
import keyword
import math
import operator
import re
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import dtypes
from ..errors import LoweringError, UnsupportedError
from ..geometry import node_geometry
from ..ir import Graph, Node, Value
from . import torch_kernels
from .registry import CompiledGraph, register_backend, source_text
from .torch_kernels import (
    HELPERS,
    col2im_nd,
    conv_prepacked,
    conv_prepacked_plain,
    conv_transpose_prepacked,
    depth_to_space_crd,
    depth_to_space_dcr,
    depth_to_space_nd,
    gather,
    im2col_nd,
    interior_pad,
    interleave,
    pad_mode,
    pad_value,
    scatter_nd,
    space_to_depth,
    sparse_matmul,
    sparse_matmul_coo,
)

torch: Any = None  # set by _load_torch(); the emitters below only run after it
F: Any = None


def _load_torch() -> Any:
    """torch (and F) here and in `torch_kernels`, imported on first use."""
    global torch, F
    torch = torch_kernels.load_torch()
    F = torch_kernels.F
    return torch


# --------------------------------------------------------------------------- building the fx graph

_RESERVED = {"self", "torch", "F", "itertools", "math", "inf", "nan", "device", "NoneType", "fx_pytree", "pytree"}


def _identifier(name: str, used: set[str]) -> str:
    base = re.sub(r"\W", "_", name).strip("_") or "t"
    if base[0].isdigit() or keyword.iskeyword(base) or base in _RESERVED or base.startswith("lowering_"):
        base = "v_" + base
    candidate, counter = base, 1
    while candidate in used:
        candidate, counter = f"{base}_{counter}", counter + 1
    used.add(candidate)
    return candidate


def _compute_dtype(dtype: str | None) -> str:
    """float16 computes in float32; every other type in itself."""
    return "float32" if dtype == "float16" else (dtype or "float32")


def torch_pads(begin: list[int], end: list[int]) -> list[int]:
    """F.pad's list (last axis first) for per-axis begin/end amounts, without trailing no-op axes."""
    pads: list[int] = []
    for b, e in zip(reversed(begin), reversed(end), strict=True):
        pads += [int(b), int(e)]
    while len(pads) > 2 and pads[-1] == 0 and pads[-2] == 0:
        del pads[-2:]
    return pads


class _Builder:
    """What an emitter sees: the IR graph and an fx graph to add calls to."""

    def __init__(self, graph: Graph, prepack: bool = False) -> None:
        _load_torch()
        self.graph = graph
        self.prepack = prepack  # reorder constant float32 Conv weights for oneDNN once (CPU only)
        self.fx = torch.fx.Graph()
        self.root = torch.nn.Module()
        self.env: dict[int, Any] = {}
        self.channels_last_env: dict[int, Any] = {}
        self.buffer_names: set[str] = set()
        self.placeholder_names: set[str] = set()

    # values
    def value(self, value: Value | None) -> Any:
        """The fx node holding `value` at run time (a constant becomes a buffer on first use)."""
        if value is None:
            return None
        key = id(value)
        if key not in self.env:
            data = self.graph.constant_value(value)
            if data is None:
                raise LoweringError(f"value '{value.name}' is used before it is defined")
            self.env[key] = self.buffer(np.asarray(data), value.name)
        return self.env[key]

    def const(self, value: Value | None) -> np.ndarray | None:
        """The data of `value` when known at build time, else None."""
        return None if value is None else self.graph.constant_value(value)

    def require_const(self, node: Node, index: int, what: str) -> np.ndarray:
        data = self.const(node.input(index))
        if data is None:
            raise UnsupportedError(f"{node.label}: input {index} ({what}) must be a constant for the torch backend")
        return np.asarray(data)

    def buffer(self, data: Any, hint: str) -> Any:
        """Register `data` (a NumPy array or a tensor) as a buffer of the root module; return its get_attr node."""
        if isinstance(data, np.ndarray):
            array = data.astype(_compute_dtype(data.dtype.name)) if data.dtype.kind == "f" else data
            tensor = torch.from_numpy(np.array(array, copy=True))
        else:
            tensor = data
        name = _identifier(hint, self.buffer_names)
        while hasattr(self.root, name):
            name = _identifier(hint + "_buffer", self.buffer_names)
        self.root.register_buffer(name, tensor)
        return self.fx.get_attr(name)

    def conv_input(self, value: Value, plain: bool = False) -> Any:
        """`value` as the input of a oneDNN convolution: converted to channels-last memory once when
        several convolutions with a channels-last result read it (oneDNN converts a plain input on every
        call otherwise: the per-phase sub-pixel form's phases all read one input); as it is for a
        single reader (a conversion inside oneDNN measured no slower than an explicit one) and for
        convolutions with a `plain` result, which read plain memory (`conv_prepacked_plain`)."""
        readers = sum(1 for node, _ in value.uses if node.op == "Conv")
        fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(len(value.shape))
        if plain or readers < 2 or fmt is None:
            return self.value(value)
        if id(value) not in self.channels_last_env:
            self.channels_last_env[id(value)] = self.method("contiguous", self.value(value), memory_format=fmt)
        return self.channels_last_env[id(value)]

    # calls
    def call(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        return self.fx.call_function(fn, args, kwargs)

    def method(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.fx.call_method(name, args, kwargs)


Emitter = Callable[[_Builder, Node], Any]  # returns the fx node of the output, or a list for several


def _spatial_fn(node: Node, rank: int, family: str) -> Callable:
    if not 1 <= rank <= 3:
        raise UnsupportedError(f"{node.label}: the torch backend supports 1-D to 3-D {node.op}, got {rank}-D")
    return getattr(torch, f"{family}{rank}d")


def _prepackable_weights(b: _Builder, node: Node) -> np.ndarray | None:
    """The constant weights of a Conv / ConvTranspose when the builder prepacks and oneDNN can take them
    (float32, nothing empty: oneDNN has no primitive for empty tensors), else None."""
    weights = b.const(node.inputs[1])
    static = [d for d in node.inputs[0].shape if isinstance(d, int)]
    if not b.prepack or node.inputs[0].dtype != "float32" or weights is None or np.size(weights) == 0 or 0 in static:
        return None
    return np.asarray(weights)


def _conv(b: _Builder, node: Node) -> Any:
    g = node_geometry(node)
    fn = _spatial_fn(node, g.rank, "conv")
    x = b.value(node.inputs[0])
    weights = _prepackable_weights(b, node)
    consumer = None if weights is None else _plain_consumer(node)
    plain = consumer is not None
    # a DepthToSpaceND's row copies want whole rows: no over-padded (cropped) result for them
    overpad = None if weights is None or consumer == "DepthToSpaceND" else _overpad(g)
    if overpad is not None:
        wider, offsets = overpad
        y = _conv_prepacked(b, node, b.conv_input(node.inputs[0], plain), weights, wider, plain, unpadded=True)
        keep = [slice(e, e + o) for e, o in zip(offsets, g.out_spatial, strict=True)]
        return b.call(operator.getitem, y, (slice(None), slice(None), *keep))
    common = [max(0, min(pb, pe)) for pb, pe in zip(g.pads_begin, g.pads_end, strict=True)]
    begin = [pb - c for pb, c in zip(g.pads_begin, common, strict=True)]
    end = [pe - c for pe, c in zip(g.pads_end, common, strict=True)]
    if any(begin) or any(end):  # torch pads symmetrically: the rest (or a crop) goes first
        x = b.call(F.pad, x, torch_pads(begin, end))
    if weights is not None:
        if not (any(begin) or any(end)):
            x = b.conv_input(node.inputs[0], plain)
        return _conv_prepacked(b, node, x, weights, common, plain)
    return b.call(
        fn,
        x,
        b.value(node.inputs[1]),
        b.value(node.input(2)),
        stride=tuple(g.strides),
        padding=tuple(common),
        dilation=tuple(g.dilations),
        groups=g.group,
    )


OVERPAD_MAX_EXTRA = 1.25


def _overpad(g) -> tuple[list[int], list[int]] | None:
    """(the wider pad per axis, where the wanted outputs start) when a Conv with asymmetric pads runs
    with the wider pad on both sides and its result is cropped (a view): the phase convolutions of the
    per-phase sub-pixel form then read one shared input instead of each padding its own copy
    (0.58-0.93x their time on the suite's 2-D layers). None where F.pad's copy stays: a negative pad
    (a crop), extra outputs off the stride grid or above OVERPAD_MAX_EXTRA of the work, or 1-D (the
    vocoder's eight phases measured 1.0-1.08x). A Conv feeding a DepthToSpaceND's row copies in plain
    memory is not asked (they want whole rows)."""
    if g.rank < 2 or g.pads_begin == g.pads_end or min(*g.pads_begin, *g.pads_end) < 0:
        return None
    wider = [max(pb, pe) for pb, pe in zip(g.pads_begin, g.pads_end, strict=True)]
    if any((w - pb) % s for w, pb, s in zip(wider, g.pads_begin, g.strides, strict=True)):
        return None  # the first wanted output would fall between two computed ones
    if not all(isinstance(o, int) and o > 0 for o in g.out_spatial):
        return None
    grown = math.prod(
        (o + (2 * w - pb - pe) // s) / o
        for o, w, pb, pe, s in zip(g.out_spatial, wider, g.pads_begin, g.pads_end, g.strides, strict=True)
    )
    if grown > OVERPAD_MAX_EXTRA:
        return None
    return wider, [(w - pb) // s for w, pb, s in zip(wider, g.pads_begin, g.strides, strict=True)]


PLAIN_PHASE_MIN_ELEMENTS = 1 << 16
PAIRED_PHASE_MIN_ELEMENTS = 1 << 19


def _feeds_row_copies(consumer: Node) -> bool:
    """A DepthToSpaceND reading whole rows per channel (per-phase row copies, `paired_phase_plan`, or
    `interleave_runs` for blocks > 2) of at least PLAIN_PHASE_MIN_ELEMENTS output elements per phase.
    Measured on the suite's fused sub-pixel layers: plain memory took 0.8-0.95x the time of
    channels-last + its interleaving copy there (U-Net, DCGAN 3-4 at batch 8, super-resolution, the
    3-D decoder at batch 8, the vocoder, FCN x8 at batch 8); with smaller phase copies (the 3-D
    decoder at batch 1: eight of 2^15; FCN x8 at batch 1) oneDNN's plain-output primitive is the
    slower one."""
    blocks = consumer.attr("blocks")
    sizes = consumer.outputs[0].shape[2:]
    if max(blocks) > 2 and any(not isinstance(o, int) or o % s for o, s in zip(sizes, blocks, strict=True)):
        return False  # not whole blocks: the permuting copy, measured from channels-last only
    return _elements_per_phase(consumer, blocks) >= PLAIN_PHASE_MIN_ELEMENTS


def _feeds_paired_phases(consumer: Node) -> bool:
    """An Interleave whose last axis alternates two phases (stride 2, an even size), of at least
    PAIRED_PHASE_MIN_ELEMENTS elements per phase: from plain phases `interleave` writes each pair as
    one complex column. Measured on the suite's per-phase forms against channels-last phases and
    their transposing copies: 0.5-0.9x the time from 2^19.6 elements a phase up (U-Net 2 and 3,
    super-resolution at batch 8), 1.08-1.14x below 2^19 (super-resolution and U-Net 1 at batch 1,
    the DCGAN layers)."""
    strides = consumer.attr("strides")
    sizes = consumer.outputs[0].shape[2:]
    if strides[-1] != 2 or not all(isinstance(o, int) for o in sizes) or sizes[-1] % 2:
        return False
    return _elements_per_phase(consumer, strides) >= PAIRED_PHASE_MIN_ELEMENTS


def _elements_per_phase(consumer: Node, strides: list[int]) -> float:
    """The consumer's output elements per phase (a symbolic axis counted as 1)."""
    return math.prod(d if isinstance(d, int) else 1 for d in consumer.outputs[0].shape) / math.prod(strides)


# consumer op -> whether a prepacked Conv feeding it leaves its result in plain (N, C, spatial...) memory
PLAIN_OUTPUT_CONSUMERS: dict[str, Callable[[Node], bool]] = {
    "DepthToSpaceND": _feeds_row_copies,
    "Interleave": _feeds_paired_phases,
}


def _plain_consumer(node: Node) -> str | None:
    """The op of the one consumer for which this Conv's result is better left in plain memory, or None
    (channels-last, oneDNN's fastest). Grouped (depthwise) convolutions stay channels-last: the
    plain-output primitive measured 1.2-2x slower there."""
    uses = node.outputs[0].uses
    if len(uses) != 1 or node_geometry(node).group != 1:
        return None
    consumer = uses[0][0]
    wants_plain = PLAIN_OUTPUT_CONSUMERS.get(consumer.op)
    return consumer.op if wants_plain is not None and wants_plain(consumer) else None


def _conv_prepacked(
    b: _Builder,
    node: Node,
    x: Any,
    weights: np.ndarray,
    padding: list[int],
    plain: bool = False,
    unpadded: bool = False,
) -> Any:
    """Conv through `conv_prepacked` (`conv_prepacked_plain` for a `plain` result); 1-D runs as 2-D with
    a unit height (oneDNN packs 2-D and 3-D weights)."""
    g = node_geometry(node)
    strides, dilations = list(g.strides), list(g.dilations)
    # the shape of x as the convolution sees it (after the asymmetric rest of the pads): a layout hint only;
    # a symbolic batch is packed for N = 1 (any batch runs, oneDNN may then reorder again for another one)
    shape = [d if isinstance(d, int) else 1 for d in node.inputs[0].shape]
    if not unpadded:
        shape[2:] = [
            n + pb + pe - 2 * c for n, pb, pe, c in zip(shape[2:], g.pads_begin, g.pads_end, padding, strict=True)
        ]
    if g.rank == 1:
        weights, shape = weights[:, :, None], [*shape[:2], 1, *shape[2:]]
        padding, strides, dilations = [0, *padding], [1, *strides], [1, *dilations]
        x = b.method("unsqueeze", x, 2)
    reorder = torch._C._nn.mkldnn_reorder_conv3d_weight if g.rank == 3 else torch._C._nn.mkldnn_reorder_conv2d_weight
    packed = reorder(
        torch.from_numpy(np.array(weights, order="C")).to_mkldnn(), padding, strides, dilations, g.group, shape
    )
    y = b.call(
        conv_prepacked_plain if plain else conv_prepacked,
        x,
        b.buffer(packed, node.inputs[1].name + "_packed"),
        b.value(node.input(2)),
        padding,
        strides,
        dilations,
        g.group,
    )
    return b.method("squeeze", y, 2) if g.rank == 1 else y


def _conv_transpose_prepacked(
    b: _Builder, node: Node, x: Any, bias: Any, weights: np.ndarray, padding: list[int], output_padding: list[int]
) -> Any:
    """ConvTranspose through `conv_transpose_prepacked`, weights reordered into oneDNN's layout once (what
    torch.compile's freezing does); 1-D runs as 2-D with a unit height, like `_conv_prepacked`."""
    g = node_geometry(node)
    shape = [d if isinstance(d, int) else 1 for d in node.inputs[0].shape]  # a layout hint, N = 1 if symbolic
    window = [padding, output_padding, list(g.strides), list(g.dilations)]
    if g.rank == 1:
        weights, shape = weights[:, :, None], [*shape[:2], 1, *shape[2:]]
        window = [[unit, *values] for unit, values in zip((0, 0, 1, 1), window, strict=True)]
        x = b.method("unsqueeze", x, 2)
    tensor = torch.from_numpy(np.array(weights, order="C"))
    packed = torch.ops.mkldnn._reorder_convolution_transpose_weight(tensor, *window, g.group, shape)
    y = b.call(conv_transpose_prepacked, x, b.buffer(packed, node.inputs[1].name + "_packed"), bias, window, g.group)
    return b.method("squeeze", y, 2) if g.rank == 1 else y


def _conv_transpose(b: _Builder, node: Node) -> Any:
    """Native conv_transpose; pads torch cannot express (asymmetric, negative, large) become a crop/extension.

    torch gives the window [p, s·(i−1) + K + a_t − p) of the full scatter for one symmetric p >= 0 and
    0 <= a_t < max(s, δ); ONNX asks for [p_begin, p_begin + o). Take the torch window closest to it,
    then crop or zero-extend with F.pad. Extended positions get the bias only, so then the bias is
    added after the pad instead of inside the convolution.
    """
    g = node_geometry(node)
    fn = _spatial_fn(node, g.rank, "conv_transpose")
    x, w, bias = b.value(node.inputs[0]), b.value(node.inputs[1]), b.value(node.input(2))
    padding, output_padding, begin, end = [], [], [], []
    for i, s, d, K, pb, pe, a, o in zip(
        g.in_spatial,
        g.strides,
        g.dilations,
        g.effective_kernel,
        g.pads_begin,
        g.pads_end,
        g.output_padding,
        g.out_spatial,
        strict=True,
    ):
        full = s * (i - 1) + K
        p = max(0, min(pb, pe))
        a_t = min(max(0, a + p - pe), max(s, d) - 1)
        if full + a_t - 2 * p < 1:
            p, a_t = 0, 0
        padding.append(p)
        output_padding.append(a_t)
        begin.append(p - pb)  # > 0: zero-extend at the start, < 0: crop
        end.append(pb + o - (full + a_t - p))
    extends = any(v > 0 for v in begin + end)
    weights = _prepackable_weights(b, node)
    # oneDNN's deconvolution has no primitive for output_padding >= stride (torch allows < max(stride, dilation))
    onednn_window = all(a < s for a, s in zip(output_padding, g.strides, strict=True))
    if weights is not None and onednn_window:
        y = _conv_transpose_prepacked(b, node, x, None if extends else bias, weights, padding, output_padding)
    else:
        y = b.call(
            fn,
            x,
            w,
            None if extends else bias,
            stride=tuple(g.strides),
            padding=tuple(padding),
            output_padding=tuple(output_padding),
            groups=g.group,
            dilation=tuple(g.dilations),
        )
    if any(begin) or any(end):
        y = b.call(F.pad, y, torch_pads(begin, end))
    if extends and bias is not None:
        y = b.call(operator.add, y, b.method("reshape", bias, (-1, *([1] * g.rank))))
    return y


def _pad(b: _Builder, node: Node) -> Any:
    from ..ops.tensor import _pad_amounts

    x = node.inputs[0]
    rank = len(x.shape)
    axes = None if node.input(3) is None else b.require_const(node, 3, "axes")
    amounts = _pad_amounts(node, rank, b.require_const(node, 1, "pads"), axes)
    begin, end = [a for a, _ in amounts], [e for _, e in amounts]
    mode = node.attr("mode")
    data = b.value(x)
    if not any(begin) and not any(end):
        return data
    if mode != "constant":
        return b.call(pad_mode, data, begin, end, mode)
    pads = torch_pads(begin, end)
    fill_value = node.input(2)
    fill = b.const(fill_value) if fill_value is not None else np.zeros(0)
    if fill is None:
        return b.call(pad_value, data, pads, b.value(fill_value))
    fill = np.asarray(fill).reshape(-1)
    scalar = fill[0].item() if fill.size else 0
    if dtypes.is_float(x.dtype):
        scalar = float(scalar)
    return b.call(F.pad, data, pads, value=scalar) if scalar else b.call(F.pad, data, pads)


def _slice(b: _Builder, node: Node) -> Any:
    """Slices with NumPy's clamping; a negative step is the positive slice of the same elements, flipped."""
    from ..ops.tensor import slice_indices

    x = node.inputs[0]
    optional = [None if node.input(i) is None else b.require_const(node, i, "axes or steps") for i in (3, 4)]
    slices = slice_indices(
        node.fail, x.shape, b.require_const(node, 1, "starts"), b.require_const(node, 2, "ends"), *optional
    )
    index: list[slice] = []
    flips: list[int] = []
    for axis, (dim, sl) in enumerate(zip(x.shape, slices, strict=True)):
        if sl == slice(None):
            index.append(slice(None))
            continue
        picked = range(dim)[sl]
        if len(picked) == 0:
            index.append(slice(0, 0))
        elif picked.step > 0:
            index.append(slice(picked[0], picked[-1] + 1, picked.step if picked.step != 1 else None))
        else:
            step = -picked.step
            index.append(slice(picked[-1], picked[0] + 1, step if step != 1 else None))
            flips.append(axis)
    while index and index[-1] == slice(None):
        index.pop()
    y = b.value(x)
    if index:
        y = b.call(operator.getitem, y, tuple(index))
    if flips:
        y = b.call(torch.flip, y, flips)
    return y


def _reshape(b: _Builder, node: Node) -> Any:
    x = node.inputs[0]
    shape = node.outputs[0].shape
    symbolic = [d for d in shape if not isinstance(d, int)]
    data = b.value(x)
    dims: list[Any] = []
    for dim in shape:
        if isinstance(dim, int):
            dims.append(dim)
        elif len(symbolic) == 1:
            dims.append(-1)
        elif dim in x.shape:
            dims.append(b.method("size", data, list(x.shape).index(dim)))
        else:
            raise UnsupportedError(f"{node.label}: symbolic output dimension '{dim}' is not an input dimension")
    return b.method("reshape", data, tuple(dims))


def _transpose(b: _Builder, node: Node) -> Any:
    perm = node.attr("perm") or list(range(len(node.inputs[0].shape)))[::-1]
    return b.method("permute", b.value(node.inputs[0]), tuple(perm))


def _split(b: _Builder, node: Node) -> list[Any]:
    from ..ops.tensor import split_sizes

    x = node.inputs[0]
    axis = node.attr("axis") % len(x.shape)
    sizes_in = None if node.input(1) is None else b.require_const(node, 1, "split")
    sizes = split_sizes(node.fail, x.shape[axis], sizes_in, len(node.outputs))
    parts = b.call(torch.split, b.value(x), sizes, axis)
    return [b.call(operator.getitem, parts, k) for k in range(len(sizes))]


def _gemm(b: _Builder, node: Node) -> Any:
    lhs, rhs = b.value(node.inputs[0]), b.value(node.inputs[1])
    if node.attr("transA"):
        lhs = b.method("t", lhs)
    if node.attr("transB"):
        rhs = b.method("t", rhs)
    alpha, beta = node.attr("alpha"), node.attr("beta")
    if node.input(2) is not None:
        return b.call(torch.addmm, b.value(node.inputs[2]), lhs, rhs, beta=beta, alpha=alpha)
    y = b.call(torch.mm, lhs, rhs)
    return y if alpha == 1.0 else b.call(operator.mul, y, alpha)


def _binary(fn: Callable) -> Emitter:
    return lambda b, node: b.call(fn, b.value(node.inputs[0]), b.value(node.inputs[1]))


def _div(b: _Builder, node: Node) -> Any:
    lhs, rhs = b.value(node.inputs[0]), b.value(node.inputs[1])
    if dtypes.is_float(node.inputs[0].dtype):
        return b.call(operator.truediv, lhs, rhs)
    return b.call(torch.div, lhs, rhs, rounding_mode="trunc")  # ONNX integer Div truncates


def _unary(name: str) -> Emitter:
    """An elementwise torch function by name (looked up when emitting: torch loads lazily)."""
    return lambda b, node: b.call(getattr(torch, name), b.value(node.inputs[0]))


def _clip(b: _Builder, node: Node) -> Any:
    bounds: dict[str, Any] = {}
    for index, key in ((1, "min"), (2, "max")):
        value = node.input(index)
        if value is None:
            continue
        data = b.const(value)
        if data is None:
            bounds[key] = b.value(value)
        elif np.size(data):
            bounds[key] = np.asarray(data).reshape(-1)[0].item()
    x = b.value(node.inputs[0])
    return b.call(torch.clamp, x, **bounds) if bounds else x


def _batch_norm(b: _Builder, node: Node) -> Any:
    x, scale, bias, mean, var = (b.value(v) for v in node.inputs[:5])
    return b.call(F.batch_norm, x, mean, var, scale, bias, False, 0.0, node.attr("epsilon"))


def _depth_to_space(b: _Builder, node: Node) -> Any:
    x, block = b.value(node.inputs[0]), node.attr("blocksize")
    if node.attr("mode") == "CRD":
        return b.call(depth_to_space_crd, x, block)
    return b.call(depth_to_space_dcr, x, block)


def _window(node: Node, rank: int) -> tuple[list[int], list[int], list[int]]:
    return (
        list(node.attr("strides") or [1] * rank),
        list(node.attr("dilations") or [1] * rank),
        list(node.attr("pads") or [0] * (2 * rank)),
    )


def _col2im(b: _Builder, node: Node) -> Any:
    """1-D and 2-D: F.fold (1-D as 1 x n images: 1.1-2.5x faster than per-tap scatter-adds at 3-16 taps
    on CPU); padding fold cannot express goes onto the folded image, then is cropped. 3-D: per tap."""
    image = [int(v) for v in b.require_const(node, 1, "image_shape").reshape(-1)]
    block = [int(v) for v in b.require_const(node, 2, "block_shape").reshape(-1)]
    strides, dilations, pads = _window(node, len(image))
    cols = b.value(node.inputs[0])
    if len(image) > 2:
        return b.call(col2im_nd, cols, image, block, strides, dilations, pads)
    begin, end = pads[: len(image)], pads[len(image) :]
    if len(image) == 1:
        image, block, strides, dilations = [1, *image], [1, *block], [1, *strides], [1, *dilations]
        begin, end = [0, *begin], [0, *end]
    if begin == end and min(begin) >= 0:
        y = b.call(
            F.fold,
            cols,
            tuple(image),
            tuple(block),
            dilation=tuple(dilations),
            padding=tuple(begin),
            stride=tuple(strides),
        )
    else:
        padded = tuple(i + pb + pe for i, pb, pe in zip(image, begin, end, strict=True))
        y = b.call(F.fold, cols, padded, tuple(block), dilation=tuple(dilations), stride=tuple(strides))
        y = b.call(F.pad, y, torch_pads([0, 0, *(-p for p in begin)], [0, 0, *(-p for p in end)]))
    return b.method("squeeze", y, 2) if len(pads) == 2 else y


def _im2col(b: _Builder, node: Node) -> Any:
    """2-D: F.unfold (asymmetric or negative padding is applied with F.pad first)."""
    block = [int(v) for v in b.require_const(node, 1, "block_shape").reshape(-1)]
    strides, dilations, pads = _window(node, len(block))
    x = b.value(node.inputs[0])
    if len(block) != 2:
        return b.call(im2col_nd, x, block, strides, dilations, pads)
    begin, end = pads[:2], pads[2:]
    common = [max(0, min(pb, pe)) for pb, pe in zip(begin, end, strict=True)]
    rest_begin = [0, 0, *(pb - c for pb, c in zip(begin, common, strict=True))]
    rest_end = [0, 0, *(pe - c for pe, c in zip(end, common, strict=True))]
    if any(rest_begin) or any(rest_end):
        x = b.call(F.pad, x, torch_pads(rest_begin, rest_end))
    return b.call(F.unfold, x, tuple(block), dilation=tuple(dilations), padding=tuple(common), stride=tuple(strides))


def _gather(b: _Builder, node: Node) -> Any:
    data, indices = node.inputs[0], node.inputs[1]
    axis = node.attr("axis") % len(data.shape)
    known = b.const(indices)
    dim = data.shape[axis]
    if known is not None and np.ndim(known) == 1 and isinstance(dim, int):
        flat = np.where(known < 0, known + dim, known).astype(np.int64)
        return b.call(torch.index_select, b.value(data), axis, b.buffer(flat, indices.name))
    return b.call(gather, b.value(data), b.value(indices), axis)


def _scatter_nd(b: _Builder, node: Node) -> Any:
    data, indices, updates = (b.value(v) for v in node.inputs[:3])
    return b.call(scatter_nd, data, indices, updates, node.attr("reduction"))


def _sparse_matmul(b: _Builder, node: Node) -> Any:
    """Constant B: a CSR buffer holding Bᵀ and torch.sparse.mm (on CPU, 1.3e5 nonzeros, batch 1-8, it ran
    in 0.14-0.2 ms against 0.6-10 ms for index_add on gathered columns and 3 ms for COO); else index_add."""
    k, n = node.attr("shape")
    a = b.value(node.inputs[0])
    data = [b.const(v) for v in node.inputs[1:4]]
    if any(d is None for d in data):
        values, rows, cols = (b.value(v) for v in node.inputs[1:4])
        return b.call(sparse_matmul_coo, a, values, rows, cols, n)
    import scipy.sparse as sp

    values, rows, cols = (np.asarray(d) for d in data)
    compute = _compute_dtype(values.dtype.name)  # float16 in float32 (scipy.sparse has no float16 either)
    csr = sp.csr_matrix((values.astype(compute), (cols, rows)), shape=(n, k))  # Bᵀ; duplicate entries add
    csr.sum_duplicates()
    dtype = getattr(torch, compute)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        matrix_t = torch.sparse_csr_tensor(
            torch.from_numpy(csr.indptr.astype(np.int64)),
            torch.from_numpy(csr.indices.astype(np.int64)),
            torch.from_numpy(csr.data).to(dtype),
            (n, k),
        )
    return b.call(sparse_matmul, a, b.buffer(matrix_t, node.inputs[1].name + "_csr"))


def _nearest_upsample(b: _Builder, node: Node) -> Any:
    y = b.value(node.inputs[0])
    for axis, s in enumerate(node.attr("scales"), start=2):
        if s > 1:
            y = b.method("repeat_interleave", y, s, axis)
    return y


def _sum_pool(b: _Builder, node: Node) -> Any:
    """A depthwise convolution with all-ones windows, stride = window: exact sums, any batch, 1-D to 3-D."""
    x = node.inputs[0]
    kernel = list(node.attr("kernel_shape"))
    fn = _spatial_fn(node, len(kernel), "conv")
    ones = b.buffer(np.ones((x.shape[1], 1, *kernel), dtype=x.dtype), "sum_pool_ones")
    return b.call(fn, b.value(x), ones, stride=tuple(kernel), groups=x.shape[1])


EMITTERS: dict[str, Emitter] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Pad": _pad,
    "Slice": _slice,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Concat": lambda b, node: b.call(torch.cat, [b.value(v) for v in node.inputs], node.attr("axis")),
    "Split": _split,
    "MatMul": _binary(operator.matmul),
    "Gemm": _gemm,
    "Add": _binary(operator.add),
    "Sub": _binary(operator.sub),
    "Mul": _binary(operator.mul),
    "Div": _div,
    "Relu": _unary("relu"),
    "LeakyRelu": lambda b, node: b.call(F.leaky_relu, b.value(node.inputs[0]), node.attr("alpha")),
    "Sigmoid": _unary("sigmoid"),
    "Tanh": _unary("tanh"),
    "Clip": _clip,
    "BatchNormalization": _batch_norm,
    "DepthToSpace": _depth_to_space,
    "SpaceToDepth": lambda b, node: b.call(space_to_depth, b.value(node.inputs[0]), node.attr("blocksize")),
    "Col2Im": _col2im,
    "Im2Col": _im2col,
    "InteriorPad": lambda b, node: b.call(interior_pad, b.value(node.inputs[0]), list(node.attr("interior"))),
    "DepthToSpaceND": lambda b, node: b.call(
        depth_to_space_nd,
        b.value(node.inputs[0]),
        list(node.attr("blocks")),
        node.attr("mode"),
        list(node.attr("begins") or [0] * len(node.attr("blocks"))),
        list(node.outputs[0].shape[2:]),
    ),
    "Interleave": lambda b, node: b.call(
        interleave, [b.value(v) for v in node.inputs], list(node.attr("strides")), list(node.outputs[0].shape[2:])
    ),
    "Flip": lambda b, node: b.call(torch.flip, b.value(node.inputs[0]), list(node.attr("axes"))),
    "Identity": lambda b, node: b.value(node.inputs[0]),
    "Constant": lambda b, node: b.value(node.outputs[0]),
    "Gather": _gather,
    "ScatterND": _scatter_nd,
    "SparseMatMul": _sparse_matmul,
    "NearestUpsample": _nearest_upsample,
    "SumPool": _sum_pool,
}


# --------------------------------------------------------------------------- the module


def emit_torch(graph: Graph, device: str = "cpu", prepack: bool = False) -> Any:
    """A `torch.fx.GraphModule` computing `graph`: `gm(*inputs) -> {output name: tensor}`.

    Inputs are positional, in graph order, named after the graph inputs (made identifiers); outputs
    are contiguous tensors. The module is moved to `device`. `prepack` (CPU only) holds constant
    float32 Conv weights in oneDNN's own layout, reordered once here instead of on every call; such a
    module cannot be saved or moved to another device.
    """
    for node in graph.nodes:
        if node.op not in EMITTERS:
            raise UnsupportedError(f"{node.label}: op '{node.op}' is not supported by the torch backend")
    b = _Builder(graph, prepack)
    for value in graph.inputs:
        placeholder = b.fx.placeholder(_identifier(value.name, b.placeholder_names))
        if value.dtype == "float16":
            placeholder = b.method("float", placeholder)
        b.env[id(value)] = placeholder
    for node in graph.nodes:
        before = len(b.fx.nodes)
        result = EMITTERS[node.op](b, node)
        results = result if isinstance(result, list) else [result]
        if len(results) != len(node.outputs):
            raise AssertionError(f"{node.label}: emitter gave {len(results)} results for {len(node.outputs)} outputs")
        fresh = {id(n) for n in itertools.islice(reversed(b.fx.nodes), len(b.fx.nodes) - before)}
        for value, fx_node in zip(node.outputs, results, strict=True):
            b.env[id(value)] = fx_node
            if id(fx_node) in fresh and fx_node.op in ("call_function", "call_method"):
                fx_node._rename(_identifier(value.name, set()))  # gm.code names results as the IR does
    outputs: dict[str, Any] = {}
    for value in graph.outputs:
        fx_node = b.value(value)
        if value.dtype == "float16":
            fx_node = b.method("to", fx_node, torch.float16, memory_format=torch.contiguous_format)
        elif fx_node.op in ("call_function", "call_method"):
            fx_node = b.method("contiguous", fx_node)  # a crop or a blocked layout would be a view
        outputs[value.name] = fx_node
    b.fx.output(outputs)
    b.fx.lint()
    gm = torch.fx.GraphModule(b.root, b.fx, class_name=_identifier(graph.name, set()))
    return gm.to(device)


def _to_tensor(array: np.ndarray, dtype: str | None, device: str) -> Any:
    array = np.asarray(array)
    if dtype is not None and array.dtype.name != dtype:
        array = array.astype(dtype)
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array, copy=True, order="C")
    return torch.from_numpy(array).to(device)


def prepacking_available() -> bool:
    """Whether this torch build has the oneDNN ops `conv_prepacked` and `conv_transpose_prepacked` need."""
    _load_torch()
    mkldnn = torch.ops.mkldnn
    return bool(torch.backends.mkldnn.is_available()) and all(
        hasattr(mkldnn, op) for op in ("_convolution_pointwise", "_convolution_transpose_pointwise")
    )


@register_backend("torch")
def compile_torch(
    graph: Graph,
    device: str = "cpu",
    *,
    compile: bool = False,
    tf32: bool = False,
    prepack: bool | None = None,
) -> CompiledGraph:
    """The graph as an fx GraphModule on `device`, run under `torch.inference_mode()`.

    `compile=True` runs it through `torch.compile` (compiled on the first call). On CUDA, float32
    convolutions run in full precision unless `tf32=True` (cuDNN's default would round to TF32).
    `prepack` (default: on CPU when oneDNN is there and `compile` is off) reorders constant Conv
    and ConvTranspose weights once, as `torch.compile`'s freezing does, instead of on every call.
    """
    available = prepacking_available()
    if prepack is None:
        prepack = device == "cpu" and not compile and available
    elif prepack and (device != "cpu" or compile or not available):
        why = f"device '{device}'" if available else "this torch build has no oneDNN"
        raise LoweringError(
            f"torch backend: prepack needs the CPU, oneDNN and no torch.compile ({'compile=True' if compile else why})"
        )
    gm = emit_torch(graph, device, prepack=prepack)
    fn = torch.compile(gm) if compile else gm
    names = [v.name for v in graph.inputs]
    types = {v.name: v.dtype for v in graph.inputs}
    # outputs that are graph inputs or buffers would share memory with them: copy those
    output_node = next(n for n in gm.graph.nodes if n.op == "output")
    aliased = {name for name, fx_node in output_node.args[0].items() if fx_node.op in ("placeholder", "get_attr")}

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = [_to_tensor(inputs[name], types[name], device) for name in names]
        cudnn = torch.backends.cudnn
        saved = cudnn.allow_tf32
        try:
            if device == "cuda":
                cudnn.allow_tf32 = tf32
            with torch.inference_mode():
                result = fn(*tensors)
        finally:
            if device == "cuda":
                cudnn.allow_tf32 = saved
        return {
            name: (t.detach().cpu().clone() if name in aliased else t.detach().cpu()).numpy()
            for name, t in result.items()
        }

    return CompiledGraph(graph, "torch", device, run, source=gm.code, artifacts={"module": gm})


# --------------------------------------------------------------------------- standalone source


def _global_line(name: str, obj: Any) -> str:
    """The import (or definition) that gives the generated code's global `name` its object."""
    if obj is torch:
        return f"{name} = torch"
    if isinstance(obj, types.ModuleType):
        return f"import {obj.__name__} as {name}"
    if name in ("inf", "nan") and isinstance(obj, float):
        return f"{name} = float({name!r})"
    if obj is type(None):
        return f"{name} = type(None)"
    helper = getattr(obj, "__name__", None)
    if helper in HELPERS and HELPERS[helper] is obj:
        return f"{name} = {helper}"
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    if module and qualname and "." not in qualname and "<" not in qualname:
        return f"from {module} import {qualname} as {name}"
    raise UnsupportedError(f"cannot write generated code that refers to {obj!r} as '{name}'")


def _helpers_used(objects: list[Any]) -> list[str]:
    """Helper names the code calls, with the helpers they call, in definition order."""
    needed: set[str] = set()
    stack = [o.__name__ for o in objects if getattr(o, "__name__", None) in HELPERS and HELPERS[o.__name__] is o]
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            code = getattr(HELPERS[name], "__wrapped__", HELPERS[name]).__code__  # through lru_cache
            stack += [n for n in code.co_names if n in HELPERS]
    return [name for name in HELPERS if name in needed]


def torch_module_source(graph: Graph, gm: Any, buffers_file: str | None) -> str:
    """Standalone Python source for `gm`: helpers, an nn.Module whose buffers load from `buffers_file`."""
    code = gm.graph.python_code(root_module="self")
    used = {name: obj for name, obj in code.globals.items() if re.search(rf"\b{re.escape(name)}\b", code.src)}
    helpers = _helpers_used(list(used.values()))
    aliases = [_global_line(name, obj) for name, obj in sorted(used.items()) if name not in ("torch", "F")]
    class_name = "".join(part.capitalize() for part in re.split(r"[\W_]+", graph.name) if part) or "Model"
    if class_name[0].isdigit():
        class_name = "Model" + class_name
    init = ["    def __init__(self):", "        super().__init__()"]
    if buffers_file:
        init += [
            f"        state = torch.load(Path(__file__).with_name({buffers_file!r}), weights_only=True)",
            "        for name, tensor in state.items():",
            "            self.register_buffer(name, tensor)",
        ]
    forward = [("    " + line).rstrip() for line in code.src.strip("\n").splitlines()]
    inputs = ", ".join(source_text(v.name) for v in graph.inputs)
    outputs = ", ".join(source_text(v.name) for v in graph.outputs)
    sections = [
        "\n".join(
            [
                f'"""Graph {source_text(graph.name)} as a PyTorch module, written by the lowering torch backend.',
                "",
                f"    model = {class_name}()"
                + ("  # buffers load from the .pt file beside this one" if buffers_file else ""),
                f"    outputs = model(*tensors)  # inputs {inputs}; returns a dict with {outputs}",
                '"""',
                "",
                "import functools",
                "import itertools",
                "import math",
                "from pathlib import Path",
                "",
                "import torch",
                "import torch.nn.functional as F",
            ]
        ),
        *[inspect.getsource(HELPERS[name]).strip() for name in helpers],
        "\n".join(aliases),
        "\n".join([f"class {class_name}(torch.nn.Module):", *init, "", *forward]),
    ]
    return "\n\n\n".join(section for section in sections if section) + "\n"


def write_torch_module(graph: Graph, path: str | Path) -> list[Path]:
    """Write `path` (.py, a standalone nn.Module) and its buffers `.pt` beside it, each atomically."""
    from ..atomic import write_bytes_atomic

    path = Path(path)
    gm = emit_torch(graph)
    state = {name: tensor for name, tensor in gm.named_buffers()}
    buffers = path.with_suffix(".pt")
    source = torch_module_source(graph, gm, buffers.name if state else None)
    written = []
    if state:
        stream = io.BytesIO()
        torch.save(state, stream)
        write_bytes_atomic(buffers, stream.getvalue())
        written.append(buffers)
    write_bytes_atomic(path, source.encode())
    return [path, *written]
