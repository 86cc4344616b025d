"""Resolved convolution geometry: every attribute of Conv / ConvTranspose made explicit per axis.

ONNX leaves much implicit (auto_pad, output_shape, defaults that depend on rank). Shape inference,
the reference, the linear-operator view and every lowering need the same explicit numbers, so they
are computed once, here, together with all the checks that make a configuration valid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from .ir import Dim, Node, Shape

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")

Fail = Callable[..., NoReturn]


def _prod(values: Sequence[int]) -> int:
    return math.prod(values)


@dataclass(frozen=True)
class _ConvAxes:
    """What Conv and ConvTranspose geometries share: channels, groups and the per-axis numbers."""

    batch: Dim
    in_channels: int  # C
    out_channels: int  # M
    group: int
    in_spatial: tuple[int, ...]
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.in_spatial)

    @property
    def effective_kernel(self) -> tuple[int, ...]:
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations, strict=True))

    @property
    def pads(self) -> list[int]:
        """ONNX layout: all begins, then all ends."""
        return [*self.pads_begin, *self.pads_end]

    @property
    def in_channels_per_group(self) -> int:
        return self.in_channels // self.group

    @property
    def out_channels_per_group(self) -> int:
        return self.out_channels // self.group

    @property
    def input_shape(self) -> Shape:
        return (self.batch, self.in_channels, *self.in_spatial)

    @property
    def output_shape(self) -> Shape:
        return (self.batch, self.out_channels, *self.out_spatial)  # type: ignore[attr-defined]

    def _batch_or_one(self, batch: int | None) -> int:
        return batch if batch is not None else (self.batch if isinstance(self.batch, int) else 1)

    def with_batch(self, batch: Dim):
        return replace(self, batch=batch)


@dataclass(frozen=True)
class ConvTransposeGeometry(_ConvAxes):
    """A ConvTranspose with explicit per-axis numbers (see DESIGN.md section 2).

    Output position of input `i` and tap `κ` on axis j: `o = s·i + δ·κ − pads_begin`, kept when
    `0 <= o < out_spatial`.
    """

    output_padding: tuple[int, ...]
    out_spatial: tuple[int, ...]

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.in_channels, self.out_channels_per_group, *self.kernel)

    def useful_macs(self, batch: int | None = None) -> int:
        """Multiply-adds of the definition: N·C·(M/g)·Πk·Πi (taps that fall outside the output included)."""
        return (
            self._batch_or_one(batch)
            * self.in_channels
            * self.out_channels_per_group
            * _prod(self.kernel)
            * _prod(self.in_spatial)
        )

    def adjoint(self) -> ConvGeometry:
        """The Conv that is this operator's transpose: (N, M, o) -> (N, C, i), weights shared.

        Its end pads are `pads_end − output_padding` (negative means crop): exactly the input
        extent the scatter reaches, so the Conv's output size is `in_spatial` for any output_padding.
        """
        return ConvGeometry(
            batch=self.batch,
            in_channels=self.out_channels,
            out_channels=self.in_channels,
            group=self.group,
            in_spatial=self.out_spatial,
            kernel=self.kernel,
            strides=self.strides,
            dilations=self.dilations,
            pads_begin=self.pads_begin,
            pads_end=tuple(p - a for p, a in zip(self.pads_end, self.output_padding, strict=True)),
            out_spatial=self.in_spatial,
        )


@dataclass(frozen=True)
class ConvGeometry(_ConvAxes):
    """A Conv with explicit per-axis numbers: `Y[o] = Σ X[s·o + δ·κ − pads_begin] · W[κ]`."""

    out_spatial: tuple[int, ...]

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels // self.group, *self.kernel)

    def useful_macs(self, batch: int | None = None) -> int:
        """Multiply-adds of the definition: N·M·(C/g)·Πk·Πo."""
        return (
            self._batch_or_one(batch)
            * self.out_channels
            * self.in_channels_per_group
            * _prod(self.kernel)
            * _prod(self.out_spatial)
        )

    def adjoint(self) -> ConvTransposeGeometry:
        """The ConvTranspose that is this Conv's transpose, output_padding chosen so shapes round-trip."""
        # Conv output o = floor((i + pb + pe − K)/s) + 1 drops a remainder r = (i + pb + pe − K) mod s;
        # the transpose gives it back as output_padding.
        remainders = tuple(
            (i + pb + pe - k) % s
            for i, pb, pe, k, s in zip(
                self.in_spatial,
                self.pads_begin,
                self.pads_end,
                self.effective_kernel,
                self.strides,
                strict=True,
            )
        )
        return ConvTransposeGeometry(
            batch=self.batch,
            in_channels=self.out_channels,
            out_channels=self.in_channels,
            group=self.group,
            in_spatial=self.out_spatial,
            kernel=self.kernel,
            strides=self.strides,
            dilations=self.dilations,
            pads_begin=self.pads_begin,
            pads_end=self.pads_end,
            output_padding=remainders,
            out_spatial=self.in_spatial,
        )


# --------------------------------------------------------------------------- attribute reading


def split_padding(totals: Sequence[int], auto_pad: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Split total padding per axis between begin and end: SAME_UPPER puts the odd one at the end."""
    begin = tuple(t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in totals)
    return begin, tuple(t - b for t, b in zip(totals, begin, strict=True))


class _Attrs:
    """Reads per-axis attributes of a conv node with defaults and length checks."""

    def __init__(self, get: Callable[[str], Any], has: Callable[[str], bool], rank: int, fail: Fail) -> None:
        self.get, self.has, self.rank, self.fail = get, has, rank, fail

    def per_axis(self, name: str, default: int, length: int | None = None) -> tuple[int, ...]:
        length = self.rank if length is None else length
        if not self.has(name) or self.get(name) is None:
            return (default,) * length
        values = tuple(self.get(name))
        if len(values) != length:
            self.fail(f"has {len(values)} values, expected {length} for {self.rank}-D input", attr=name)
        return values


def _spatial_ints(shape: Shape, what: str, fail: Fail) -> tuple[int, ...]:
    for axis, dim in enumerate(shape[2:]):
        if not isinstance(dim, int):
            fail(f"{what} spatial axis {axis} is symbolic ('{dim}'); symbolic spatial dimensions are not supported")
    return tuple(shape[2:])  # type: ignore[return-value]


def _common_checks(
    x_shape: Shape, w_shape: Shape, attrs: _Attrs, fail: Fail
) -> tuple[int, int, tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...], str]:
    rank = attrs.rank
    if len(x_shape) < 3:
        fail(f"input X must have rank >= 3 (N, C, spatial...), got rank {len(x_shape)}")
    if len(w_shape) != len(x_shape):
        fail(f"weight W has rank {len(w_shape)} but input X has rank {len(x_shape)}")
    channels = x_shape[1]
    if not isinstance(channels, int):
        fail(f"input X channel dimension is symbolic ('{channels}')")
    group = attrs.get("group")
    if group < 1:
        fail(f"must be >= 1, got {group}", attr="group")
    if channels % group != 0:
        fail(f"input channels {channels} are not divisible by group {group}", attr="group")
    kernel = _spatial_ints(w_shape, "weight W", fail)
    in_spatial = _spatial_ints(x_shape, "input X", fail)
    for axis, size in enumerate(in_spatial):
        if size < 1:  # onnxruntime and PyTorch refuse it too; the output-size formulas assume >= 1
            fail(f"input X spatial axis {axis} has size {size}; a convolution needs at least one input position")
    if attrs.has("kernel_shape") and attrs.get("kernel_shape") is not None:
        given = attrs.per_axis("kernel_shape", 1)
        for axis, (k_attr, k_w) in enumerate(zip(given, kernel, strict=True)):
            if k_attr != k_w:
                fail(f"is {k_attr} but weight W has kernel size {k_w}", attr="kernel_shape", axis=axis)
    for axis, k in enumerate(kernel):
        if k < 1:
            fail(f"weight W kernel size on spatial axis {axis} must be >= 1, got {k}")
    strides = attrs.per_axis("strides", 1)
    dilations = attrs.per_axis("dilations", 1)
    for name, values in (("strides", strides), ("dilations", dilations)):
        for axis, v in enumerate(values):
            if v < 1:
                fail(f"must be >= 1, got {v}", attr=name, axis=axis)
    auto_pad = attrs.get("auto_pad")
    if auto_pad not in AUTO_PADS:
        fail(f"must be one of {', '.join(AUTO_PADS)}, got '{auto_pad}'", attr="auto_pad")
    if auto_pad != "NOTSET" and attrs.has("pads") and any(attrs.get("pads") or []):
        fail(f"explicit pads {list(attrs.get('pads'))} cannot be combined with auto_pad '{auto_pad}'", attr="pads")
    if rank != len(kernel):
        fail(f"weight W has {len(kernel)} spatial axes but input X has {rank}")
    return channels, group, in_spatial, kernel, strides, dilations, auto_pad


def _check_bias(b_shape: Shape | None, out_channels: int, fail: Fail) -> None:
    if b_shape is not None and tuple(b_shape) != (out_channels,):
        fail(f"bias B must have shape [{out_channels}] (one value per output channel), got {list(b_shape)}")


def conv_transpose_geometry(
    get: Callable[[str], Any],
    has: Callable[[str], bool],
    x_shape: Shape,
    w_shape: Shape,
    b_shape: Shape | None,
    fail: Fail,
) -> ConvTransposeGeometry:
    """Resolve and check a ConvTranspose: X (N, C, i...), W (C, M/g, k...), B (M,)."""
    rank = len(x_shape) - 2
    attrs = _Attrs(get, has, rank, fail)
    channels, group, in_spatial, kernel, strides, dilations, auto_pad = _common_checks(x_shape, w_shape, attrs, fail)
    if w_shape[0] != channels:
        fail(f"weight W dimension 0 is {w_shape[0]} but input X has {channels} channels (W is C x M/group x k...)")
    out_per_group = w_shape[1]
    if not isinstance(out_per_group, int) or out_per_group < 1:
        fail(f"weight W dimension 1 (output channels per group) must be >= 1, got {out_per_group}")
    out_channels = out_per_group * group
    _check_bias(b_shape, out_channels, fail)

    output_padding = attrs.per_axis("output_padding", 0)
    for axis, (a, s, d) in enumerate(zip(output_padding, strides, dilations, strict=True)):
        if a < 0:
            fail(f"must be >= 0, got {a}", attr="output_padding", axis=axis)
        if a >= max(s, d):
            fail(
                f"is {a} but must be smaller than stride {s} or dilation {d} (at most {max(s, d) - 1})",
                attr="output_padding",
                axis=axis,
            )
    effective = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True))
    full = tuple(s * (i - 1) + a + K for s, i, a, K in zip(strides, in_spatial, output_padding, effective, strict=True))

    target: tuple[int, ...] | None = None
    if has("output_shape") and get("output_shape") is not None:
        given = tuple(get("output_shape"))
        if len(given) == rank + 2:  # some exporters include N and C
            for axis, (want, got) in enumerate(zip((x_shape[0], out_channels), given[:2], strict=True)):
                if isinstance(want, int) and want != got:
                    what = ("batch", "output channels")[axis]
                    fail(f"includes {what} {got} but the node's {what} is {want}", attr="output_shape", axis=axis)
            given = given[2:]
        if len(given) != rank:
            fail(f"has {len(given)} values, expected {rank} (spatial axes only)", attr="output_shape")
        target = given
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = tuple(i * s for i, s in zip(in_spatial, strides, strict=True))

    if target is not None:
        totals = tuple(f - t for f, t in zip(full, target, strict=True))
        pads_begin, pads_end = split_padding(totals, auto_pad)
    elif auto_pad == "VALID":
        pads_begin = pads_end = (0,) * rank
    else:
        pads = attrs.per_axis("pads", 0, 2 * rank)
        pads_begin, pads_end = pads[:rank], pads[rank:]
    out_spatial = tuple(f - b - e for f, b, e in zip(full, pads_begin, pads_end, strict=True))
    for axis, o in enumerate(out_spatial):
        if o < 1:
            fail(
                f"output size on spatial axis {axis} would be {o} (must be >= 1): "
                f"stride {strides[axis]} x (input {in_spatial[axis]} - 1) + output_padding {output_padding[axis]} "
                f"+ effective kernel {effective[axis]} - pads {pads_begin[axis]} - {pads_end[axis]}"
            )
    return ConvTransposeGeometry(
        batch=x_shape[0],
        in_channels=channels,
        out_channels=out_channels,
        group=group,
        in_spatial=in_spatial,
        kernel=kernel,
        strides=strides,
        dilations=dilations,
        pads_begin=pads_begin,
        pads_end=pads_end,
        output_padding=output_padding,
        out_spatial=out_spatial,
    )


def conv_geometry(
    get: Callable[[str], Any],
    has: Callable[[str], bool],
    x_shape: Shape,
    w_shape: Shape,
    b_shape: Shape | None,
    fail: Fail,
) -> ConvGeometry:
    """Resolve and check a Conv: X (N, C, i...), W (M, C/g, k...), B (M,)."""
    rank = len(x_shape) - 2
    attrs = _Attrs(get, has, rank, fail)
    channels, group, in_spatial, kernel, strides, dilations, auto_pad = _common_checks(x_shape, w_shape, attrs, fail)
    out_channels = w_shape[0]
    if not isinstance(out_channels, int) or out_channels % group != 0:
        fail(
            f"output channels {out_channels} (weight W dimension 0) are not divisible by group {group}",
            attr="group",
        )
    if w_shape[1] * group != channels:
        fail(
            f"weight W dimension 1 is {w_shape[1]} but input X has {channels} channels in {group} groups "
            f"(W is M x C/group x k..., expected {channels // group})"
        )
    _check_bias(b_shape, out_channels, fail)
    effective = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True))
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = tuple(-(-i // s) for i, s in zip(in_spatial, strides, strict=True))
        totals = tuple(
            max(0, (o - 1) * s + K - i) for o, s, K, i in zip(out, strides, effective, in_spatial, strict=True)
        )
        pads_begin, pads_end = split_padding(totals, auto_pad)
    elif auto_pad == "VALID":
        pads_begin = pads_end = (0,) * rank
    else:
        pads = attrs.per_axis("pads", 0, 2 * rank)
        pads_begin, pads_end = pads[:rank], pads[rank:]
    out_spatial = []
    for axis, (i, b, e, K, s) in enumerate(zip(in_spatial, pads_begin, pads_end, effective, strides, strict=True)):
        span = i + b + e - K
        if span < 0:
            fail(
                f"padded input size {i + b + e} on spatial axis {axis} is smaller than the effective kernel {K}; "
                "output size would be < 1"
            )
        out_spatial.append(span // s + 1)
    return ConvGeometry(
        batch=x_shape[0],
        in_channels=channels,
        out_channels=out_channels,
        group=group,
        in_spatial=in_spatial,
        kernel=kernel,
        strides=strides,
        dilations=dilations,
        pads_begin=pads_begin,
        pads_end=pads_end,
        out_spatial=tuple(out_spatial),
    )


def node_geometry(
    node: Node,
    x_shape: Shape | None = None,
    w_shape: Shape | None = None,
    b_shape: Shape | None = None,
) -> ConvTransposeGeometry | ConvGeometry:
    """The resolved geometry of a Conv or ConvTranspose node.

    Shapes default to those recorded in the graph; pass run-time shapes to resolve against the
    arrays actually fed (another batch size, weights given as inputs).
    """
    x, w, b = node.input(0), node.input(1), node.input(2)
    x_shape = x_shape if x_shape is not None else (x.shape if x is not None else None)
    w_shape = w_shape if w_shape is not None else (w.shape if w is not None else None)
    if b_shape is None and b is not None:
        b_shape = b.shape
    if x_shape is None or w_shape is None:
        node.fail("input X and weight W need known shapes")
    resolve = {"ConvTranspose": conv_transpose_geometry, "Conv": conv_geometry}[node.op]
    return resolve(node.attr, lambda name: name in node.attrs, x_shape, w_shape, b_shape, node.fail)
