"""Built-in example models, built in code with seeded weights so they need no download.

`lowering inspect --example dcgan` (and every other command taking a model) accepts these names.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from .errors import LoweringError
from .ir import Graph, Value


def _weights(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def _batchnorm(graph: Graph, x: Value, channels: int, rng: np.random.Generator, name: str) -> Value:
    scale = graph.const((1.0 + 0.1 * rng.standard_normal(channels)).astype(np.float32), f"{name}_scale")
    shift = graph.const((0.1 * rng.standard_normal(channels)).astype(np.float32), f"{name}_shift")
    mean = graph.const((0.1 * rng.standard_normal(channels)).astype(np.float32), f"{name}_mean")
    var = graph.const((1.0 + 0.1 * rng.random(channels)).astype(np.float32), f"{name}_var")
    return graph.op("BatchNormalization", x, scale, shift, mean, var, name=name)


def dcgan(batch: int = 1) -> Graph:
    """The DCGAN generator (Radford et al. 2016): 100 -> 512x4x4 -> ... -> 3x64x64."""
    rng = np.random.default_rng(0)
    graph = Graph("dcgan_generator")
    x = graph.add_input("z", (batch, 100, 1, 1))
    channels = [100, 512, 256, 128, 64, 3]
    for layer, (c_in, c_out) in enumerate(itertools.pairwise(channels)):
        first, last = layer == 0, layer == len(channels) - 2
        w = graph.const(_weights(rng, (c_in, c_out, 4, 4), c_in * 16), f"up{layer}_w")
        attrs = {"strides": [1, 1], "pads": [0, 0, 0, 0]} if first else {"strides": [2, 2], "pads": [1, 1, 1, 1]}
        x = graph.op("ConvTranspose", x, w, name=f"up{layer}", kernel_shape=[4, 4], **attrs)
        if last:
            x = graph.op("Tanh", x, name="out")
        else:
            x = graph.op("Relu", _batchnorm(graph, x, c_out, rng, f"bn{layer}"), name=f"relu{layer}")
    graph.rename(x, "image")
    graph.outputs.append(x)
    return graph


def unet_decoder(batch: int = 1) -> Graph:
    """A U-Net-style decoder stage: k2 s2 up-convolution, skip connection by concatenation, 3x3 Conv."""
    rng = np.random.default_rng(1)
    graph = Graph("unet_decoder")
    x = graph.add_input("bottleneck", (batch, 64, 8, 8))
    skip = graph.add_input("skip", (batch, 32, 16, 16))
    w = graph.const(_weights(rng, (64, 32, 2, 2), 64 * 4), "up_w")
    b = graph.const((0.1 * rng.standard_normal(32)).astype(np.float32), "up_b")
    up = graph.op("ConvTranspose", x, w, b, name="up", strides=[2, 2])
    cat = graph.op("Concat", up, skip, name="cat", axis=1)
    wc = graph.const(_weights(rng, (32, 64, 3, 3), 64 * 9), "conv_w")
    y = graph.op("Relu", graph.op("Conv", cat, wc, name="conv", pads=[1, 1, 1, 1]), name="relu")
    graph.rename(y, "features")
    graph.outputs.append(y)
    return graph


def vocoder(batch: int = 1) -> Graph:
    """A HiFi-GAN-style 1-D upsampler: ConvTranspose1d stages with large strides and LeakyRelu."""
    rng = np.random.default_rng(2)
    graph = Graph("vocoder_upsampler")
    x = graph.add_input("mel", (batch, 80, 32))
    channels, rates = [80, 64, 32, 16], [8, 8, 2]
    for layer, (c_in, c_out, s) in enumerate(zip(channels, channels[1:], rates, strict=False)):
        w = graph.const(_weights(rng, (c_in, c_out, 2 * s), c_in * 2 * s), f"up{layer}_w")
        b = graph.const(np.zeros(c_out, np.float32), f"up{layer}_b")
        x = graph.op("LeakyRelu", x, name=f"act{layer}", alpha=0.1)
        x = graph.op("ConvTranspose", x, w, b, name=f"up{layer}", strides=[s], pads=[s // 2, s // 2])
    graph.rename(x, "audio_features")
    graph.outputs.append(x)
    return graph


EXAMPLES: dict[str, Callable[..., Graph]] = {
    "dcgan": dcgan,
    "unet-decoder": unet_decoder,
    "vocoder": vocoder,
}


def example(name: str, batch: int = 1) -> Graph:
    if name not in EXAMPLES:
        raise LoweringError(f"unknown example '{name}' (known: {', '.join(EXAMPLES)})")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        # the builders would happily make a graph of batch 0 or -1, with negative multiply-adds
        raise LoweringError(f"batch size must be a positive integer, got {batch!r}")
    return EXAMPLES[name](batch)
