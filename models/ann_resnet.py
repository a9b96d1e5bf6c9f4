"""A small ResNet (He et al. 2016, the CIFAR variant: a 3x3 stem, three stages of basic
blocks, global average pooling): the ResNet-style teacher of the paper-scale DDA check,
closer to the WRN/ResNet teachers of data-free KD than :class:`models.ann_cnn.AnnCNN`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class AnnResNet(nn.Module):
    """ResNet-(6n+2) with widths ``widths`` per stage; the embedding is the pooled last stage.

    Parameters
    ----------
    in_channels, image_size, num_classes : shape of the data (any size: the pooling is global).
    widths : channels of the three stages.
    blocks : basic blocks per stage (1 = ResNet-8, 3 = ResNet-20).
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int,
                 widths: tuple[int, int, int] = (32, 64, 128), blocks: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                   nn.ReLU()]
        cin = widths[0]
        for stage, width in enumerate(widths):
            for block in range(blocks):
                layers.append(BasicBlock(cin, width, 2 if stage and not block else 1))
                cin = width
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, widths[-1]]."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
