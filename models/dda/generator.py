"""The image generator of DDA's synthesis (the authors' code, after CMI/Fast data-free KD,
GitHub SLGSP/DDA ``datafree/models/generator.py``): noise -> image, reset before every
batch; :func:`models.dda.synthesis.synthesize_batch` trains it together with its noise."""

from __future__ import annotations

import torch
from torch import nn

SYNTHESES = ("generator", "inversion")  # dda-synthesis: this network per batch, or pixels optimised per batch


class Generator(nn.Module):
    """DCGAN-like conditional generator: (noise, label) -> image in [0, 1].

    Parameters
    ----------
    nz : size of the noise vector (the authors use 256).
    num_classes : labels embedded into the noise (one learned vector per class, added).
    shape : (channels, height, width) of the images, square (8 px digits up to 32 px CIFAR).
    width : channels of the first feature map (size // 4 pixels a side; halved after the
        second upsampling, which lands on the image size).
    """

    def __init__(self, nz: int, num_classes: int, shape: tuple[int, int, int], width: int = 64) -> None:
        super().__init__()
        channels, size, _ = shape
        self.nz, self.init = nz, size // 4
        self.label = nn.Embedding(num_classes, nz)
        self.project = nn.Sequential(nn.Linear(nz, width * self.init ** 2), nn.BatchNorm1d(width * self.init ** 2))
        self.body = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2),
            nn.Upsample(size=(size, size)),
            nn.Conv2d(width, width // 2, 3, padding=1, bias=False), nn.BatchNorm2d(width // 2), nn.LeakyReLU(0.2),
            nn.Conv2d(width // 2, channels, 3, padding=1), nn.Sigmoid())
        self.reset()

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.project(z + self.label(labels)).view(len(z), -1, self.init, self.init)
        return self.body(h)

    def reset(self) -> None:
        """Normal(0, 0.02) weights, BatchNorm scales Normal(1, 0.02) (the authors' ``reset_model``)."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)
