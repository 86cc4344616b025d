"""Single ConvTranspose layers: the `--layer` spec language and the built-in benchmark suite.

    "N=1 C=256 M=128 in=8x8 k=4 s=2 p=1"

Keys: N (batch), C (input channels), M (output channels), in (spatial size, `x`-separated, 1-3
axes), k (kernel), s (strides), d (dilations), p (symmetric pads) or pads (begin...,end...),
op (output_padding), out (output_shape), auto_pad, g (group; `g=C` for depthwise), bias (0/1),
dtype (f32/f64/f16). A per-axis key takes one number for every axis or `x`-separated values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .dtypes import canonical
from .errors import LoweringError
from .ir import Graph

_KEYS = ("N", "C", "M", "in", "k", "s", "d", "p", "pads", "op", "out", "auto_pad", "g", "bias", "dtype", "name")


def _numbers(key: str, text: str, rank: int | None, sep: str = "x") -> list[int]:
    try:
        values = [int(v) for v in text.replace(",", sep).split(sep)]
    except ValueError:
        raise LoweringError(f"layer spec: '{key}={text}' is not a list of integers") from None
    if rank is not None and len(values) == 1:
        values *= rank
    if rank is not None and len(values) != rank:
        raise LoweringError(f"layer spec: '{key}={text}' has {len(values)} values for {rank} spatial axes")
    return values


def parse_layer(spec: str, seed: int = 0) -> Graph:
    """A one-node graph (ConvTranspose with constant random weights) from a layer spec."""
    fields: dict[str, str] = {}
    for part in spec.split():
        if "=" not in part:
            raise LoweringError(f"layer spec: '{part}' is not key=value (known keys: {', '.join(_KEYS)})")
        key, value = part.split("=", 1)
        if key not in _KEYS:
            raise LoweringError(f"layer spec: unknown key '{key}' (known keys: {', '.join(_KEYS)})")
        if key in fields:
            raise LoweringError(f"layer spec: '{key}=' is given twice ({key}={fields[key]} and {key}={value})")
        fields[key] = value
    for required in ("C", "M", "in", "k"):
        if required not in fields:
            raise LoweringError(f"layer spec: '{required}=' is required (e.g. \"N=1 C=64 M=32 in=16x16 k=4 s=2 p=1\")")
    spatial = _numbers("in", fields["in"], None)
    rank = len(spatial)
    channels = _numbers("C", fields["C"], 1)[0]
    group = channels if fields.get("g") == "C" else _numbers("g", fields.get("g", "1"), 1)[0]
    out_channels = _numbers("M", fields["M"], 1)[0]
    batch = _numbers("N", fields.get("N", "1"), 1)[0]
    kernel = _numbers("k", fields["k"], rank)
    dtype = canonical(fields.get("dtype", "f32"))
    if group < 1 or out_channels % group or channels % group:
        raise LoweringError(f"layer spec: channels C={channels} and M={out_channels} must be divisible by g={group}")
    attrs: dict = {"strides": _numbers("s", fields.get("s", "1"), rank), "group": group}
    if "d" in fields:
        attrs["dilations"] = _numbers("d", fields["d"], rank)
    if "pads" in fields:
        attrs["pads"] = _numbers("pads", fields["pads"], 2 * rank)
    elif "p" in fields:
        attrs["pads"] = _numbers("p", fields["p"], rank) * 2
    if "op" in fields:
        attrs["output_padding"] = _numbers("op", fields["op"], rank)
    if "out" in fields:
        attrs["output_shape"] = _numbers("out", fields["out"], rank)
    if "auto_pad" in fields:
        attrs["auto_pad"] = fields["auto_pad"]
    rng = np.random.default_rng(seed)
    graph = Graph(fields.get("name", "layer"))
    x = graph.add_input("x", (batch, channels, *spatial), dtype)
    fan_in = channels * math.prod(kernel)
    weights = rng.standard_normal((channels, out_channels // group, *kernel)) / np.sqrt(fan_in)
    w = graph.const(weights.astype(dtype), "w")
    with_bias = fields.get("bias", "1") != "0"
    b = graph.const((0.1 * rng.standard_normal(out_channels)).astype(dtype), "b") if with_bias else None
    y = graph.op("ConvTranspose", x, w, b, name=fields.get("name", "layer"), **attrs)
    graph.rename(y, "y")
    graph.outputs.append(y)
    return graph


@dataclass(frozen=True)
class SuiteLayer:
    name: str
    spec: str  # without N

    def graph(self, batch: int) -> Graph:
        return parse_layer(f"N={batch} name={self.name} {self.spec}")


SUITE: tuple[SuiteLayer, ...] = (
    SuiteLayer("dcgan1", "C=100 M=512 in=1x1 k=4 s=1 p=0"),
    SuiteLayer("dcgan2", "C=512 M=256 in=4x4 k=4 s=2 p=1"),
    SuiteLayer("dcgan3", "C=256 M=128 in=8x8 k=4 s=2 p=1"),
    SuiteLayer("dcgan4", "C=128 M=64 in=16x16 k=4 s=2 p=1"),
    SuiteLayer("dcgan5", "C=64 M=3 in=32x32 k=4 s=2 p=1"),
    SuiteLayer("unet1", "C=1024 M=512 in=28x28 k=2 s=2 p=0"),
    SuiteLayer("unet2", "C=512 M=256 in=56x56 k=2 s=2 p=0"),
    SuiteLayer("unet3", "C=256 M=128 in=112x112 k=2 s=2 p=0"),
    SuiteLayer("fcn-x2", "C=21 M=21 in=16x16 k=4 s=2 p=1"),
    SuiteLayer("fcn-x8", "C=21 M=21 in=32x32 k=16 s=8 p=4"),
    SuiteLayer("superres", "C=64 M=64 in=64x64 k=3 s=2 p=1 op=1"),
    SuiteLayer("vocoder", "C=512 M=256 in=1024 k=16 s=8 p=4"),
    SuiteLayer("depthwise", "C=64 M=64 g=C in=32x32 k=4 s=2 p=1"),
    SuiteLayer("decoder3d", "C=32 M=16 in=8x16x16 k=4 s=2 p=1"),
)
QUICK = ("dcgan2", "fcn-x2", "vocoder", "decoder3d")
