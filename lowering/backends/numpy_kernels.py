"""Kernels the NumPy backend copies into the code it emits, so emitted modules need only NumPy.

Each kernel is vectorised: loops run over kernel taps or groups, never over tensor elements.
Every function here is standalone (no imports but `np`), because its source text is what gets
copied; `KERNELS` maps a kernel's name to that source.
"""

from __future__ import annotations

import inspect

import numpy as np


def _pad_crop(x, begin, end, value=0.0):
    """Pad (positive) or crop (negative) the trailing len(begin) axes."""
    lead = x.ndim - len(begin)
    if all(b >= 0 and e >= 0 for b, e in zip(begin, end)):
        if any(begin) or any(end):
            x = np.pad(x, [(0, 0)] * lead + list(zip(begin, end)), mode="constant", constant_values=value)
        return x
    # out[o] = x[o - begin] where that index exists, else value
    sizes = [n + b + e for n, b, e in zip(x.shape[lead:], begin, end)]
    out = np.full(x.shape[:lead] + tuple(sizes), value, dtype=x.dtype)
    src, dst = [], []
    for n, b, e, size in zip(x.shape[lead:], begin, end, sizes):
        lo, start = max(0, -b), max(0, b)
        length = min(n + min(0, e) - lo, size - start)
        if length <= 0:
            return out
        src.append(slice(lo, lo + length))
        dst.append(slice(start, start + length))
    out[(Ellipsis, *dst)] = x[(Ellipsis, *src)]
    return out


def _conv(x, w, b, strides, dilations, pads_begin, pads_end, group):
    """Grouped N-d convolution as im2col + one batched matmul (BLAS)."""
    d = len(strides)
    x = _pad_crop(x, pads_begin, pads_end)
    n, c = x.shape[:2]
    m, kernel = w.shape[0], w.shape[2:]
    cg, mg = c // group, m // group
    if all(k == 1 for k in kernel) and all(s == 1 for s in strides):
        out_sp = x.shape[2:]
        cols = x.reshape(n, group, cg, int(np.prod(out_sp)))  # explicit: n may be 0
        wm = w.reshape(group, mg, cg)
        y = np.matmul(wm, cols)
    else:
        eff = [(k - 1) * dl + 1 for k, dl in zip(kernel, dilations)]
        win = np.lib.stride_tricks.sliding_window_view(x, eff, axis=tuple(range(2, 2 + d)))
        win = win[
            (slice(None), slice(None))
            + tuple(slice(None, None, s) for s in strides)
            + tuple(slice(None, None, dl) for dl in dilations)
        ]
        out_sp = win.shape[2 : 2 + d]
        # (n, g, cg, o..., k...) -> (n, g, o..., cg, k...); columns (n, g, rows·Πo', cg·Πk) are built a
        # block of output rows at a time, so the im2col buffer stays near `budget` bytes at any size
        win = win.reshape(n, group, cg, *win.shape[2:]).transpose((0, 1, *range(3, 3 + d), 2, *range(3 + d, 3 + 2 * d)))
        depth = cg * int(np.prod(kernel))
        wt = w.reshape(group, mg, depth).transpose(0, 2, 1)
        per_row = n * group * int(np.prod(out_sp[1:])) * depth * x.itemsize
        rows = max(1, min(out_sp[0], (64 << 20) // max(per_row, 1)))
        y = np.empty((n, group, *out_sp, mg), dtype=np.result_type(x, w))
        for start in range(0, out_sp[0], rows):
            block = win[:, :, start : start + rows]
            cols = np.ascontiguousarray(block).reshape(n, group, int(np.prod(block.shape[2 : 2 + d])), depth)
            y[:, :, start : start + rows] = np.matmul(cols, wt).reshape(*block.shape[: 2 + d], mg)
        y = np.moveaxis(y, -1, 2)
    y = y.reshape(n, m, *out_sp)
    if b is not None:
        y = y + b.reshape(-1, *([1] * d))
    return y


def _col2im(cols, image, block, strides, dilations, pads):
    """ONNX Col2Im: scatter-add every column block into the (padded) image, one tap at a time."""
    d = len(image)
    n = cols.shape[0]
    taps = int(np.prod(block))
    c = cols.shape[1] // taps
    padded = [image[a] + pads[a] + pads[a + d] for a in range(d)]
    blocks = [(padded[a] - ((block[a] - 1) * dilations[a] + 1)) // strides[a] + 1 for a in range(d)]
    cols = cols.reshape(n, c, *block, *blocks)
    canvas = np.zeros((n, c, *padded), dtype=cols.dtype)
    for tap in np.ndindex(*block):
        target = tuple(
            slice(dilations[a] * tap[a], dilations[a] * tap[a] + strides[a] * (blocks[a] - 1) + 1, strides[a])
            for a in range(d)
        )
        canvas[(slice(None), slice(None)) + target] += cols[(slice(None), slice(None)) + tap]
    return _pad_crop(canvas, [-p for p in pads[:d]], [-p for p in pads[d:]])


def _im2col(x, block, strides, dilations, pads):
    """Every block of the (padded) image as a column: (N, C·Πblock, L)."""
    d = len(block)
    x = _pad_crop(x, pads[:d], pads[d:])
    eff = [(k - 1) * dl + 1 for k, dl in zip(block, dilations)]
    win = np.lib.stride_tricks.sliding_window_view(x, eff, axis=tuple(range(2, 2 + d)))
    win = win[
        (slice(None), slice(None))
        + tuple(slice(None, None, s) for s in strides)
        + tuple(slice(None, None, dl) for dl in dilations)
    ]
    n, c = x.shape[:2]
    perm = (0, 1, *range(2 + d, 2 + 2 * d), *range(2, 2 + d))
    blocks = int(np.prod(win.shape[2 : 2 + d]))  # explicit, not -1: n may be 0
    return np.ascontiguousarray(win.transpose(perm)).reshape(n, c * int(np.prod(block)), blocks)


def _conv_transpose(x, w, b, strides, dilations, pads_begin, pads_end, out_sp, group):
    """ConvTranspose as GEMM + col2im (for graphs run without lowering)."""
    d = len(strides)
    n, c = x.shape[:2]
    mg, kernel = w.shape[1], w.shape[2:]
    cg, taps = c // group, int(np.prod(kernel))
    positions = int(np.prod(x.shape[2:]))  # explicit, not -1: n may be 0
    cols = np.matmul(w.reshape(group, cg, mg * taps).transpose(0, 2, 1), x.reshape(n, group, cg, positions))
    reach = [s * (i - 1) + (k - 1) * dl + 1 for s, i, k, dl in zip(strides, x.shape[2:], kernel, dilations)]
    y = _col2im(cols.reshape(n, group * mg * taps, positions), reach, list(kernel), strides, dilations, [0] * (2 * d))
    y = _pad_crop(y, [-p for p in pads_begin], [o + p - r for o, p, r in zip(out_sp, pads_begin, reach)])
    if b is not None:
        y = y + b.reshape(-1, *([1] * d))
    return y


def _interior_pad(x, interior):
    shape = tuple(0 if n == 0 else (n - 1) * (z + 1) + 1 for n, z in zip(x.shape, interior))
    out = np.zeros(shape, dtype=x.dtype)
    out[tuple(slice(None, None, z + 1) for z in interior)] = x
    return out


def _interleave(phases, strides, sizes):
    """Phase r (row-major residues) to positions j·s + r of every spatial axis, cut to `sizes`."""
    out = np.empty(phases[0].shape[:2] + tuple(sizes), dtype=phases[0].dtype)
    residues = np.ndindex(*strides)
    for phase, residue in zip(phases, residues):
        counts = [len(range(r, o, s)) for r, s, o in zip(residue, strides, sizes)]
        target = tuple(slice(r, None, s) for r, s in zip(residue, strides))
        out[(Ellipsis, *target)] = phase[(Ellipsis, *(slice(0, c) for c in counts))]
    return out


def _depth_to_space_nd(x, blocks, mode, begins, sizes):
    """Channel phase r of row q to position q·s + r on every axis (DCR or CRD channels), then the crop."""
    d, rows = len(blocks), x.shape[2:]
    channels = x.shape[1] // int(np.prod(blocks))
    if mode == "DCR":
        t = x.reshape(x.shape[0], *blocks, channels, *rows)
        perm = [0, d + 1] + [a for j in range(d) for a in (d + 2 + j, 1 + j)]
    else:
        t = x.reshape(x.shape[0], channels, *blocks, *rows)
        perm = [0, 1] + [a for j in range(d) for a in (2 + d + j, 2 + j)]
    t = t.transpose(perm).reshape(x.shape[0], channels, *(q * s for q, s in zip(rows, blocks)))
    return t[(Ellipsis, *(slice(b, b + o) for b, o in zip(begins, sizes)))]


def _sparse_matmul(a, values, rows, cols, n_cols):
    """a (..., K) times the COO matrix (values at rows, cols): scatter-add of scaled gathered columns."""
    flat = a.reshape(-1, a.shape[-1])
    out = np.zeros((flat.shape[0], n_cols), dtype=np.result_type(a, values))
    np.add.at(out, (slice(None), cols), flat[:, rows] * values)
    return out.reshape(*a.shape[:-1], n_cols)


def _scatter_nd_add(data, indices, updates):
    out = np.array(data, copy=True)
    depth = indices.shape[-1]
    flat = indices.reshape(-1, depth)
    np.add.at(out, tuple(flat[:, a] for a in range(depth)), updates.reshape(-1, *data.shape[depth:]))
    return out


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


KERNELS = {
    fn.__name__: inspect.getsource(fn)
    for fn in (
        _pad_crop,
        _conv,
        _col2im,
        _im2col,
        _conv_transpose,
        _interior_pad,
        _interleave,
        _depth_to_space_nd,
        _sparse_matmul,
        _scatter_nd_add,
        _sigmoid,
    )
}
DEPENDS = {
    "_conv": ["_pad_crop"],
    "_col2im": ["_pad_crop"],
    "_im2col": ["_pad_crop"],
    "_conv_transpose": ["_col2im", "_pad_crop"],
}
