"""A 3-D convolutional decoder (volumetric, e.g. a 3-D U-Net's or a voxel VAE's up path) in
PyTorch, exported to ONNX and lowered every way.

    python examples/decoder_3d.py

A latent volume (N, 32, 4, 4, 4) goes through two ConvTranspose3d k4 s2 p1 with BatchNorm and
ReLU, one ConvTranspose3d k3 s2 p1 with `output_size=` given at call time (torch turns it into an
output padding), and a 3x3x3 Conv3d + Sigmoid to an occupancy grid (N, 1, 32, 32, 32). Prints, per
strategy, the ConvTranspose count before and after lowering, the largest error against PyTorch and
the onnxruntime time against the exported model.
"""

from __future__ import annotations

import torch
from _common import check, randomize_batchnorm, run_example
from torch import nn

LATENT, SIZE = 32, 4


class Decoder3d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.ConvTranspose3d(LATENT, 16, 4, 2, 1, bias=False), nn.BatchNorm3d(16), nn.ReLU())
        self.block2 = nn.Sequential(nn.ConvTranspose3d(16, 8, 4, 2, 1, bias=False), nn.BatchNorm3d(8), nn.ReLU())
        self.up3 = nn.ConvTranspose3d(8, 4, 3, stride=2, padding=1)
        self.head = nn.Sequential(nn.ReLU(), nn.Conv3d(4, 1, 3, padding=1), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(z))
        side = x.shape[-1] * 2
        x = self.up3(x, output_size=[side, side, side])  # 15 without output_size, 16 with it
        return self.head(x)


def main() -> None:
    torch.manual_seed(0)
    model = Decoder3d()
    randomize_batchnorm(model)
    rows = run_example(
        "3-D decoder: latent (N, 32, 4, 4, 4) -> occupancy (N, 1, 32, 32, 32), 3 ConvTranspose3d",
        model,
        lambda batch: (torch.randn(batch, LATENT, SIZE, SIZE, SIZE, generator=torch.Generator().manual_seed(batch)),),
        ["latent"],
        "occupancy",
    )
    check(rows, 1e-4)


if __name__ == "__main__":
    main()
