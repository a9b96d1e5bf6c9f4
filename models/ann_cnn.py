"""A small ANN CNN: the teacher that DDA distils from (and an ANN student option)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AnnCNN(nn.Module):
    """Two Conv-BN-ReLU-MaxPool blocks, a hidden layer (the embedding) and a linear readout.

    Parameters
    ----------
    in_channels, image_size, num_classes : shape of the data.
    channels : channels of the two convolution blocks.
    hidden : size of the penultimate (embedding) layer.
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int,
                 channels: tuple[int, int] = (32, 64), hidden: int = 128) -> None:
        super().__init__()
        c1, c2 = channels
        side = image_size // 4
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(c2 * side * side, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
        )
        self.head = nn.Linear(hidden, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, hidden]."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [N, num_classes]."""
        return self.head(self.body(x))


def train_classifier(model: AnnCNN, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch_size: int,
                     seed: int) -> list[float]:
    """Cross-entropy training with Adam (the teacher's loop); returns the loss per epoch."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    model.train()
    for _ in range(epochs):
        total = 0.0
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            batch = batch.to(x.device)
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        history.append(total / len(x))
    return history
