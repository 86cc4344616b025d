"""A DCGAN generator (Radford et al. 2016) in PyTorch, exported to ONNX and lowered every way.

    python examples/dcgan_generator.py

Four ConvTranspose2d layers (k4 s1 p0, then k4 s2 p1) with BatchNorm and ReLU take a latent
vector (N, 32, 1, 1) to an image (N, 3, 32, 32). Prints, per strategy, the ConvTranspose count
before and after lowering, the largest error against PyTorch and the onnxruntime time against
the exported model.
"""

from __future__ import annotations

import torch
from _common import check, randomize_batchnorm, run_example
from torch import nn

LATENT = 32


def generator(latent: int = LATENT, width: int = 32, channels: int = 3) -> nn.Module:
    def up(c_in: int, c_out: int, first: bool = False) -> list[nn.Module]:
        stride, pad = (1, 0) if first else (2, 1)
        return [nn.ConvTranspose2d(c_in, c_out, 4, stride, pad, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    model = nn.Sequential(
        *up(latent, width * 4, first=True),  # 1 -> 4
        *up(width * 4, width * 2),  # 4 -> 8
        *up(width * 2, width),  # 8 -> 16
        nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False),  # 16 -> 32
        nn.Tanh(),
    )
    randomize_batchnorm(model)
    return model


def main() -> None:
    torch.manual_seed(0)
    model = generator()
    rows = run_example(
        "DCGAN generator: latent (N, 32, 1, 1) -> image (N, 3, 32, 32), 4 ConvTranspose2d",
        model,
        lambda batch: (torch.randn(batch, LATENT, 1, 1, generator=torch.Generator().manual_seed(batch)),),
        ["z"],
        "image",
    )
    check(rows, 1e-4)


if __name__ == "__main__":
    main()
