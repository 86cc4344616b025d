"""A HiFi-GAN-style 1-D vocoder upsampler in PyTorch, exported to ONNX and lowered every way.

    python examples/vocoder_upsampler.py

A mel spectrogram (N, 80, 32) goes through a 7-tap Conv1d, then four ConvTranspose1d stages with
large strides (8, 8, 2, 2; kernel 2·stride, padding stride/2, as HiFi-GAN V1), each followed by a
residual block (LeakyReLU, dilated Conv1d, added back), and a final Conv1d + Tanh to a waveform
(N, 1, 8192). Prints, per strategy, the ConvTranspose count before and after lowering, the largest
error against PyTorch and the onnxruntime time against the exported model.
"""

from __future__ import annotations

import torch
from _common import check, run_example
from torch import nn

MELS, FRAMES = 80, 32
RATES = [8, 8, 2, 2]
WIDTH = 64


class ResBlock(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.act(x))


class Upsampler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Conv1d(MELS, WIDTH, 7, padding=3)
        layers: list[nn.Module] = []
        channels = WIDTH
        for i, rate in enumerate(RATES):
            layers += [
                nn.LeakyReLU(0.1),
                nn.ConvTranspose1d(channels, channels // 2, 2 * rate, stride=rate, padding=rate // 2),
                ResBlock(channels // 2, dilation=1 + 2 * (i % 2)),
            ]
            channels //= 2
        self.ups = nn.Sequential(*layers)
        self.post = nn.Sequential(nn.LeakyReLU(0.1), nn.Conv1d(channels, 1, 7, padding=3), nn.Tanh())

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.post(self.ups(self.pre(mel)))


def main() -> None:
    torch.manual_seed(0)
    rows = run_example(
        "Vocoder upsampler: mel (N, 80, 32) -> waveform (N, 1, 8192), 4 ConvTranspose1d, strides 8, 8, 2, 2",
        Upsampler(),
        lambda batch: (torch.randn(batch, MELS, FRAMES, generator=torch.Generator().manual_seed(batch)),),
        ["mel"],
        "audio",
    )
    check(rows, 1e-4)


if __name__ == "__main__":
    main()
