"""Run-time helpers of the PyTorch backend: the calls the generated fx code makes where one ONNX-style
op needs more than one torch op (padding modes, DepthToSpaceND's copy plans, Interleave, Col2Im and
Im2Col for any rank, ScatterND, convolutions on weights prepacked for oneDNN, sparse products).

Each helper uses only `torch`, `F`, `itertools`, `math`, `functools`, other helpers and its
arguments, so that `write_torch_module` can copy its source into a standalone file (HELPERS lists
them). Loops run over kernel taps, phases or axes, never over elements. torch is imported on first
use (`load_torch`), like every backend's runtime: importing this module is cheap.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from typing import Any

torch: Any = None  # set by load_torch(); the helpers below only run after it
F: Any = None


def load_torch() -> Any:
    """Import torch and torch.nn.functional into this module's globals (once) and return torch."""
    global torch, F
    if torch is None:
        import torch as _torch
        import torch.nn.functional as _functional

        torch, F = _torch, _functional
    return torch


def pad_value(x, pads, value):
    """Constant padding (torch pad order) with a fill that is only known at run time."""
    return F.pad(x, pads, value=float(value.reshape(-1)[0]) if value.numel() else 0.0)


def pad_mode(x, begin, end, mode):
    """Pad with mode 'reflect', 'edge' or 'wrap' (NumPy's rules, any amount); negative pads crop."""
    for axis, (b, e) in enumerate(zip(begin, end, strict=True)):
        if b < 0 or e < 0:
            start = max(0, -b)
            x = x.narrow(axis, start, x.shape[axis] - start - max(0, -e))
        b, e = max(0, b), max(0, e)
        if b == 0 and e == 0:
            continue
        n = x.shape[axis]
        index = torch.arange(-b, n + e, device=x.device)
        if mode == "edge" or n == 1:
            index = index.clamp(0, n - 1)
        elif mode == "wrap":
            index = index.remainder(n)
        else:  # reflect about the first and last element, repeatedly
            period = 2 * (n - 1)
            index = index.remainder(period)
            index = torch.where(index >= n, period - index, index)
        x = x.index_select(axis, index)
    return x


def depth_to_space_crd(x, block):
    """ONNX DepthToSpace in CRD order. torch.pixel_shuffle keeps its input's memory format, so on a
    channels-last conv result it returns channels-last and the NCHW copy after it is a slow transpose;
    `depth_to_space_nd` writes NCHW directly instead."""
    if x.is_contiguous():
        return torch.pixel_shuffle(x, block)
    return depth_to_space_nd(x, [block, block], "CRD", [0, 0], [x.shape[2] * block, x.shape[3] * block])


def phase_steps_of(channel_stride, blocks, mode, channels):
    """The memory step of output channel m and of each axis's phase in a DepthToSpaceND input: channel
    = phase · M + m (DCR) or m · Πs + phase (CRD), the phase flattened row-major over the axes."""
    inner = [math.prod(blocks[a + 1 :]) for a in range(len(blocks))]
    if mode == "DCR":
        return channel_stride, [channel_stride * channels * k for k in inner]
    return channel_stride * math.prod(blocks), [channel_stride * k for k in inner]


@functools.lru_cache(maxsize=256)
def phase_copy_plan(shape, stride, blocks, mode, begins, sizes):
    """Per phase of a DepthToSpaceND input of this shape and these strides: the (sizes, strides, offset)
    of the rows it reads and of the cropped output positions it writes. Worked out once per layout, so
    that a call makes two views and one copy per phase (building them by slicing cost ~30 operator
    calls per run, a quarter of a 0.2 ms layer)."""
    n, c = shape[0], shape[1]
    d = len(blocks)
    channels = c // math.prod(blocks)
    channel_step, phase_steps = phase_steps_of(stride[1], blocks, mode, channels)
    out_steps = [math.prod(sizes[a + 1 :]) for a in range(d)]
    out_head = [channels * math.prod(sizes), math.prod(sizes)]
    plan = []
    for residue in itertools.product(*(range(s) for s in blocks)):
        counts, read_offset, write_offset = [], 0, 0
        for a, (r, s, b, o) in enumerate(zip(residue, blocks, begins, sizes, strict=True)):
            first = max(0, -(-(b - r) // s))  # the first row q with q·s + r >= begin
            start = first * s + r - b
            counts.append(len(range(start, o, s)))
            read_offset += r * phase_steps[a] + first * stride[2 + a]
            write_offset += start * out_steps[a]
        if 0 in counts:
            continue
        size = (n, channels, *counts)
        source = (size, (stride[0], channel_step, *stride[2:]), read_offset)
        target = (size, (*out_head, *(s * k for s, k in zip(blocks, out_steps, strict=True))), write_offset)
        plan.append((source, target))
    return tuple(plan)


def complex_pairable(x):
    """Whether two phases of this tensor's type can travel as one complex column: torch has complex
    types for float32 and float64 only (float16 graphs compute in float32 here)."""
    return x.dtype in (torch.float32, torch.float64)


@functools.lru_cache(maxsize=256)
def paired_phase_plan(shape, stride, blocks, mode, begins, sizes):
    """`phase_copy_plan` with the two phases of a last axis of block 2 taken together: the phase
    filling output columns 2j and the one filling 2j + 1 are the real and imaginary parts of one
    complex column j, so that one `torch.complex` writes both (a vectorised pass over whole rows of
    each; two copies with a step of 2 measured 1.4x its time). Per pair: (real source, imaginary
    source, complex target), target in complex elements; None where the output's last axis is odd or
    a phase has no rows."""
    if blocks[-1] != 2 or sizes[-1] % 2:
        return None
    pairs = {}
    for source, (size, steps, offset) in phase_copy_plan(shape, stride, blocks, mode, begins, sizes):
        # every target step is even but the last (2): an offset's parity is the column it starts at
        key = (size, tuple(step // 2 for step in steps), offset // 2)
        pairs.setdefault(key, [None, None])[offset % 2] = source
    if any(None in parts for parts in pairs.values()):
        return None
    return tuple((real, imaginary, target) for target, (real, imaginary) in pairs.items())


@functools.lru_cache(maxsize=256)
def interleave_runs(shape, stride, blocks, mode, begins, sizes):
    """The strided copies that place a DepthToSpaceND input into its cropped output, or None where the
    output is not a whole number of blocks. Along an axis, output position j·s + p reads phase
    (p + begin) mod s at row j + (p + begin) div s: one run of p where that read steps evenly and
    forwards (always for s = 2 on channels-last memory, where a row step exceeds every phase step),
    else two runs split where the phase wraps, each stepping by the phase step. Each copy, one run per
    axis, is (sizes, source steps, source offset, target steps, target offset) over (N, M, rows_0,
    run_0, rows_1, run_1, ...): at most 2^rank copies, each one strided view to another."""
    n, c = shape[0], shape[1]
    channels = c // math.prod(blocks)
    channel_step, phase_steps = phase_steps_of(stride[1], blocks, mode, channels)
    per_axis = []
    for a, (s, b, o) in enumerate(zip(blocks, begins, sizes, strict=True)):
        if o % s or (o - 1 + b) // s >= shape[2 + a]:
            return None
        reads = [((p + b) % s) * phase_steps[a] + ((p + b) // s) * stride[2 + a] for p in range(s)]
        gaps = {later - earlier for earlier, later in itertools.pairwise(reads)} or {0}
        if len(gaps) == 1 and min(gaps) >= 0:
            per_axis.append([(0, s, gaps.pop(), reads[0])])
        else:  # the phase wraps at p = s − begin mod s
            wrap = s - b % s
            per_axis.append([(0, wrap, phase_steps[a], reads[0]), (wrap, s, phase_steps[a], reads[wrap])])
    inner = [math.prod(sizes[a + 1 :]) for a in range(len(blocks))]
    copies = []
    for runs in itertools.product(*per_axis):
        size, source, target = [n, channels], [stride[0], channel_step], [channels * math.prod(sizes), math.prod(sizes)]
        source_offset, target_offset = 0, 0
        for a, (first, end, step, read) in enumerate(runs):
            size += [sizes[a] // blocks[a], end - first]
            source += [stride[2 + a], step]
            target += [blocks[a] * inner[a], inner[a]]
            source_offset += read
            target_offset += first * inner[a]
        copies.append((tuple(size), tuple(source), source_offset, tuple(target), target_offset))
    return tuple(copies)


@functools.lru_cache(maxsize=256)
def depth_to_space_plan(shape, stride, contiguous, floating, on_cpu, blocks, mode, begins, sizes):
    """How `depth_to_space_nd` places an input of this layout, decided once per layout rather than on
    every call: ("runs", `interleave_runs`), ("pairs", `paired_phase_plan`), ("phases",
    `phase_copy_plan`) or ("permute", None); see there."""
    n, c = shape[:2]
    channels = c // math.prod(blocks)
    small = n * channels * math.prod(sizes) < (1 << 18)
    big_blocks = max(blocks) > 2
    channels_last_fits = not big_blocks and (not small or stride[-1] % 64 == 0)
    layout = (shape, stride, blocks, mode, begins, sizes)
    if not on_cpu:  # on a GPU, one permuting copy (each copy below is a kernel launch)
        return "permute", None
    if big_blocks if contiguous else channels_last_fits:
        copies = interleave_runs(*layout)
        if copies is not None:
            return "runs", copies
    if big_blocks or not (contiguous or small):
        return "permute", None
    pairs = paired_phase_plan(*layout) if contiguous and floating else None
    return ("pairs", pairs) if pairs is not None else ("phases", phase_copy_plan(*layout))


def depth_to_space_nd(x, blocks, mode, begins, sizes):
    """DepthToSpaceND: channel phase r of row q to output position q·s + r − begin, every spatial axis.

    Four copy patterns, by the layout the producer left and the size (measured on the suite's fused
    sub-pixel layers; `depth_to_space_plan` picks):
    - "runs", `interleave_runs` (at most 2^rank strided copies): from a channels-last result with
      blocks <= 2 (one copy; 1.3-1.7x faster than the others on DCGAN 4, the depthwise layer,
      super-resolution and the 3-D decoder; on a small result only where a position's channels span a
      multiple of 64 elements: there the per-phase reads, a power-of-two step apart, collide in the
      cache, elsewhere (FCN x2's 84) they are up to 1.5x faster), and from a plain result with larger
      blocks (FCN x8 b8: 0.85x the time of the permuting copy and crop).
    - "pairs", from plain float32 / float64 memory with a last block of 2 and an even output: the two
      phases that alternate along a row as one complex column (`paired_phase_plan`; 0.90-0.96x the
      time of the large U-Net, super-resolution and 3-D decoder fused layers at batch 8).
    - "phases", blocks <= 2, other plain memory or a small channels-last result: one strided copy per
      phase straight into the cropped output (whole rows read from plain memory).
    - "permute", otherwise (a channels-last result with larger blocks, where runs were 1.2x slower on
      FCN x8 b8, an output that is not whole blocks, or a GPU tensor, where each copy is a kernel
      launch): split the channels in place, one permuting copy, then crop.
    """
    n, c, *rows = x.shape
    key = (tuple(blocks), mode, tuple(begins), tuple(sizes))
    kind, plan = depth_to_space_plan(tuple(x.shape), x.stride(), x.is_contiguous(), complex_pairable(x), x.is_cpu, *key)
    channels = c // math.prod(blocks)
    base = x.storage_offset()
    if kind == "runs":
        out = x.new_empty((n, channels, *sizes))
        for size, source, source_offset, target, target_offset in plan:
            out.as_strided(size, target, target_offset).copy_(x.as_strided(size, source, base + source_offset))
        return out
    if kind == "pairs":
        out = x.new_empty((n, channels, *sizes))
        columns = torch.view_as_complex(out.view(*out.shape[:-1], out.shape[-1] // 2, 2))
        for real, imaginary, target in plan:
            torch.complex(
                x.as_strided(real[0], real[1], base + real[2]),
                x.as_strided(imaginary[0], imaginary[1], base + imaginary[2]),
                out=columns.as_strided(*target),
            )
        return out
    if kind == "phases":
        out = x.new_empty((n, channels, *sizes))
        for source, target in plan:
            out.as_strided(*target).copy_(x.as_strided(source[0], source[1], base + source[2]))
        return out
    d = len(blocks)
    if mode == "DCR":  # (N, s..., M, Q...)
        grid = x.view(n, *blocks, channels, *rows)
        phase_axes, channel_axis, row_axes = list(range(1, d + 1)), d + 1, list(range(d + 2, 2 * d + 2))
    else:  # (N, M, s..., Q...)
        grid = x.view(n, channels, *blocks, *rows)
        phase_axes, channel_axis, row_axes = list(range(2, d + 2)), 1, list(range(d + 2, 2 * d + 2))
    perm = [0, channel_axis] + [a for j in range(d) for a in (row_axes[j], phase_axes[j])]
    t = grid.permute(perm).reshape(n, channels, *(q * s for q, s in zip(rows, blocks, strict=True)))
    return t[(slice(None), slice(None), *(slice(b, b + o) for b, o in zip(begins, sizes, strict=True)))]


def depth_to_space_dcr(x, block):
    """ONNX DepthToSpace in DCR order (torch.pixel_shuffle is CRD)."""
    n, c, h, w = x.shape
    t = x.reshape(n, block, block, c // (block * block), h, w).permute(0, 3, 4, 1, 5, 2)
    return t.reshape(n, c // (block * block), h * block, w * block)


def space_to_depth(x, block):
    """ONNX SpaceToDepth (DCR order; torch.pixel_unshuffle is CRD)."""
    n, c, h, w = x.shape
    t = x.reshape(n, c, h // block, block, w // block, block).permute(0, 3, 5, 1, 2, 4)
    return t.reshape(n, c * block * block, h // block, w // block)


def col2im_nd(cols, image, block, strides, dilations, pads):
    """ONNX Col2Im for any rank: scatter-add each kernel tap's columns into a zero canvas."""
    d = len(image)
    n = cols.shape[0]
    taps = 1
    for k in block:
        taps *= k
    c = cols.shape[1] // taps
    padded = [image[a] + pads[a] + pads[a + d] for a in range(d)]
    blocks = [(padded[a] - (block[a] - 1) * dilations[a] - 1) // strides[a] + 1 for a in range(d)]
    cols = cols.reshape(n, c, *block, *blocks)
    canvas = cols.new_zeros((n, c, *padded))
    for tap in itertools.product(*(range(k) for k in block)):
        target = tuple(
            slice(dilations[a] * tap[a], dilations[a] * tap[a] + strides[a] * (blocks[a] - 1) + 1, strides[a])
            for a in range(d)
        )
        canvas[(slice(None), slice(None), *target)] += cols[(slice(None), slice(None), *tap)]
    crop = []
    for a in reversed(range(d)):
        crop += [-pads[a], -pads[a + d]]
    return F.pad(canvas, crop)


def im2col_nd(x, block, strides, dilations, pads):
    """Every block of the (padded) image as a column, (N, C·Πblock, L): one strided slice per tap."""
    d = len(block)
    widths = []
    for a in reversed(range(d)):
        widths += [pads[a], pads[a + d]]
    x = F.pad(x, widths)
    n, c = x.shape[:2]
    blocks = [(x.shape[2 + a] - (block[a] - 1) * dilations[a] - 1) // strides[a] + 1 for a in range(d)]
    columns = []
    for tap in itertools.product(*(range(k) for k in block)):
        source = tuple(
            slice(dilations[a] * tap[a], dilations[a] * tap[a] + strides[a] * (blocks[a] - 1) + 1, strides[a])
            for a in range(d)
        )
        columns.append(x[(slice(None), slice(None), *source)])
    return torch.stack(columns, dim=2).reshape(n, c * len(columns), math.prod(blocks))  # n may be 0


def interior_pad(x, interior):
    """Insert interior[a] zeros between neighbours along every axis a (zeros + strided assignment)."""
    shape = [0 if n == 0 else (n - 1) * (z + 1) + 1 for n, z in zip(x.shape, interior, strict=True)]
    out = x.new_zeros(shape)
    out[tuple(slice(None, None, z + 1) for z in interior)] = x
    return out


def interleave(phases, strides, sizes):
    """Phase r (row-major residues) to positions j·s + r of every spatial axis, cut to `sizes`: one strided
    copy per phase into the output (a Concat + DepthToSpace copies everything twice). Plain float
    phases alternating along an even last axis (stride 2) go in pairs, the two as the real and
    imaginary parts of one complex column: a pass over whole rows of each instead of two element-wise
    strided writes (the large per-phase layers' convolutions leave such phases, `_feeds_paired_phases`)."""
    first = phases[0]
    if not first.is_cpu and all(p.shape == first.shape for p in phases):
        return interleave_stacked(phases, strides, sizes)
    out = first.new_empty((*first.shape[:2], *sizes))
    residues = list(itertools.product(*(range(s) for s in strides)))
    # the rows of each phase that land in the output (its last rows fall off where s does not divide o)
    kept = [
        (
            slice(None),
            slice(None),
            *(slice(0, len(range(r, o, s))) for r, s, o in zip(res, strides, sizes, strict=True)),
        )
        for res in residues
    ]
    pairs_fit = strides[-1] == 2 and sizes[-1] % 2 == 0 and complex_pairable(first)
    if pairs_fit and all(p.stride(-1) == 1 for p in phases):  # plain rows: residues 0 and 1 of the last axis
        columns = torch.view_as_complex(out.view(*out.shape[:-1], out.shape[-1] // 2, 2))  # as one complex column
        for i in range(0, len(phases), 2):
            leading = (slice(r, None, s) for r, s in zip(residues[i][:-1], strides[:-1], strict=True))
            target = columns[(slice(None), slice(None), *leading)]
            torch.complex(phases[i][kept[i]], phases[i + 1][kept[i + 1]], out=target)
        return out
    for phase, residue, rows in zip(phases, residues, kept, strict=True):
        target = tuple(slice(r, None, s) for r, s in zip(residue, strides, strict=True))
        out[(slice(None), slice(None), *target)] = phase[rows]
    return out


def interleave_stacked(phases, strides, sizes):
    """`interleave` of equally shaped phases as one stack and one permuting copy, then the crop (a view):
    two kernels whatever the number of phases, for a GPU, where each strided copy is a kernel launch
    that costs more than the copy itself on these sizes."""
    first = phases[0]
    rows = first.shape[2:]
    d = len(strides)
    grid = torch.stack(phases, 2).view(*first.shape[:2], *strides, *rows)
    perm = [0, 1] + [a for j in range(d) for a in (2 + d + j, 2 + j)]
    full = grid.permute(perm).reshape(*first.shape[:2], *(q * s for q, s in zip(rows, strides, strict=True)))
    return full[(slice(None), slice(None), *(slice(0, o) for o in sizes))]


def gather(data, indices, axis):
    """ONNX Gather: indices of any shape, negative ones counted from the end."""
    axis = axis % data.dim()
    flat = indices.reshape(-1).long()
    flat = torch.where(flat < 0, flat + data.shape[axis], flat)
    out = torch.index_select(data, axis, flat)
    return out.reshape(*data.shape[:axis], *indices.shape, *data.shape[axis + 1 :])


def scatter_nd(data, indices, updates, reduction):
    """ONNX ScatterND with reduction 'none', 'add' (index_put_), 'mul', 'max' or 'min' (scatter_reduce_)."""
    out = data.clone()
    depth = indices.shape[-1]
    lead = data.shape[:depth]
    flat = indices.reshape(-1, depth).long()
    flat = torch.where(flat < 0, flat + torch.tensor(lead, device=flat.device), flat)
    rows = updates.reshape(-1, *data.shape[depth:])
    if reduction in ("none", "add"):
        out.index_put_(tuple(flat.unbind(1)), rows, accumulate=reduction == "add")
        return out
    linear = flat[:, 0] * 0
    for a in range(depth):
        linear = linear * lead[a] + flat[:, a]
    index = linear.reshape(-1, *([1] * (rows.dim() - 1))).expand_as(rows)
    reduce = {"mul": "prod", "max": "amax", "min": "amin"}[reduction]
    out.reshape(-1, *data.shape[depth:]).scatter_reduce_(0, index, rows, reduce, include_self=True)
    return out


def conv_prepacked_plain(x, packed, bias, padding, stride, dilation, groups):
    """`conv_prepacked` with the result in plain (N, C, spatial...) memory, for consumers that read
    whole rows per channel (DepthToSpaceND's per-phase copies): a plain dense input in, oneDNN's own
    conversions on the way in and out. Converting the input to a oneDNN tensor first (shared by the
    per-phase form's convolutions) and the result back with `to_dense` measured 1.02-1.09x the time
    of U-Net, the 3-D decoder b8 and super-resolution b8."""
    return torch.mkldnn_convolution(x, packed, bias, padding, stride, dilation, groups)


def conv_transpose_prepacked(x, packed, bias, window, groups):
    """oneDNN transposed convolution on weights reordered once at build time (CPU, float32); `window` is
    [padding, output_padding, stride, dilation]. Eager conv_transpose reorders its weights every call."""
    padding, output_padding, stride, dilation = window
    return torch.ops.mkldnn._convolution_transpose_pointwise(
        x, packed, bias, padding, output_padding, stride, dilation, groups, "none", [], ""
    )


def conv_prepacked(x, packed, bias, padding, stride, dilation, groups):
    """oneDNN convolution on weights reordered into its blocked layout once, at build time (CPU, float32).

    `F.conv2d` on NCHW tensors reorders the weights on every call; for small layers that is most of
    the time. The result comes back dense in channels-last strides; later ops accept any strides.
    """
    return torch.ops.mkldnn._convolution_pointwise(x, packed, bias, padding, stride, dilation, groups, "none", [], "")


def sparse_matmul(a, matrix_t):
    """a (..., K) times B (K, N), with Bᵀ held as a sparse CSR (N, K) buffer: (Bᵀ · aᵀ)ᵀ."""
    n_cols, k = matrix_t.shape
    flat = a.reshape(-1, k)
    out = torch.sparse.mm(matrix_t, flat.t().contiguous()).t()
    return out.reshape(*a.shape[:-1], n_cols)


def sparse_matmul_coo(a, values, rows, cols, n_cols):
    """a (..., K) times COO(values, (rows, cols)) given at run time: index_add of scaled gathered columns."""
    flat = a.reshape(-1, a.shape[-1])
    out = flat.new_zeros((flat.shape[0], n_cols))
    out.index_add_(1, cols, flat[:, rows] * values)
    return out.reshape(*a.shape[:-1], n_cols)


HELPERS: dict[str, Callable] = {
    fn.__name__: fn
    for fn in (
        pad_value,
        pad_mode,
        depth_to_space_crd,
        depth_to_space_dcr,
        phase_steps_of,
        phase_copy_plan,
        complex_pairable,
        paired_phase_plan,
        interleave_runs,
        depth_to_space_plan,
        depth_to_space_nd,
        space_to_depth,
        col2im_nd,
        im2col_nd,
        interior_pad,
        interleave,
        interleave_stacked,
        gather,
        scatter_nd,
        conv_prepacked,
        conv_prepacked_plain,
        conv_transpose_prepacked,
        sparse_matmul,
        sparse_matmul_coo,
    )
}
