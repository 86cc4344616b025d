"""A U-Net-style decoder in PyTorch, exported to ONNX and lowered every way.

    python examples/unet_decoder.py

Three decoder stages, each a k2 s2 ConvTranspose2d up-sampling, the encoder's skip connection
concatenated (`torch.cat`), then two 3x3 Conv + BatchNorm + ReLU, with a residual addition
inside the stage; a 1x1 Conv gives the output. Prints, per strategy, the ConvTranspose count
before and after lowering, the largest error against PyTorch and the onnxruntime time against
the exported model.
"""

from __future__ import annotations

import itertools

import torch
from _common import check, randomize_batchnorm, run_example
from torch import nn

CHANNELS = [64, 32, 16, 8]  # bottleneck, then each stage's output
BOTTLENECK = 8  # spatial size of the bottleneck


class Stage(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        self.conv1 = nn.Sequential(nn.Conv2d(2 * c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.conv2 = nn.Sequential(nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.up(x), skip], dim=1)
        x = self.act(self.conv1(x))
        return self.act(x + self.conv2(x))  # residual skip inside the stage


class Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.ModuleList(Stage(a, b) for a, b in itertools.pairwise(CHANNELS))
        self.head = nn.Conv2d(CHANNELS[-1], 1, 1)

    def forward(self, x: torch.Tensor, skip1: torch.Tensor, skip2: torch.Tensor, skip3: torch.Tensor) -> torch.Tensor:
        for stage, skip in zip(self.stages, (skip1, skip2, skip3), strict=True):
            x = stage(x, skip)
        return self.head(x)


def inputs(batch: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(batch)
    shapes = [(CHANNELS[0], BOTTLENECK)] + [(c, BOTTLENECK * 2 ** (i + 1)) for i, c in enumerate(CHANNELS[1:])]
    return tuple(torch.randn(batch, c, s, s, generator=generator) for c, s in shapes)


def main() -> None:
    torch.manual_seed(0)
    model = Decoder()
    randomize_batchnorm(model)
    rows = run_example(
        "U-Net decoder: bottleneck (N, 64, 8, 8) + 3 skips -> (N, 1, 64, 64), 3 ConvTranspose2d k2 s2",
        model,
        inputs,
        ["bottleneck", "skip1", "skip2", "skip3"],
        "mask",
    )
    check(rows, 1e-4)


if __name__ == "__main__":
    main()
