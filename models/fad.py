"""Frechet autoencoder distance (FAD), the generator metric of the ESVAE and FSVAE papers.

FAD is the Frechet distance between the latent codes that an ANN autoencoder, trained
on the dataset's training images, gives two image sets. The papers use a 64-d latent and
5,000 images; neither stored source holds their autoencoder, so the recipe here is this
project's: :class:`Autoencoder` (three stride-2 Conv-BN-ReLU layers of 32, 64 and 128
channels, Linear to 64; a mirrored transposed-conv decoder with a sigmoid), MSE, Adam
lr 1e-3, batch 128, :data:`EPOCHS` epochs, seeded. `spikefed esvae train` keeps its
weights under ``data-dir/fad/``, so every model of one comparison is measured with the
same autoencoder.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.frechet import frechet_distance

LATENT = 64
EPOCHS = 10
CHANNELS = (32, 64, 128)


class Autoencoder(nn.Module):
    """The FAD feature extractor; ``encode`` gives the [N, 64] codes."""

    def __init__(self, in_channels: int, image_size: int) -> None:
        super().__init__()
        side = image_size
        for _ in CHANNELS:
            side = (side - 1) // 2 + 1
        enc: list[nn.Module] = []
        for c_in, c_out in zip((in_channels, *CHANNELS[:-1]), CHANNELS):
            enc += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(CHANNELS[-1] * side * side, LATENT))
        dec: list[nn.Module] = [nn.Linear(LATENT, CHANNELS[-1] * side * side), nn.ReLU(),
                                nn.Unflatten(1, (CHANNELS[-1], side, side))]
        for c_in, c_out in zip(CHANNELS[::-1], (*CHANNELS[::-1][1:], in_channels)):
            dec += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.decoder = nn.Sequential(*dec[:-2], nn.Upsample(size=(image_size, image_size), mode="bilinear"),
                                     nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
        self.eval()
        return torch.cat([self.encoder(xb).cpu() for xb in x.split(batch_size)]).double().numpy()


def train_autoencoder(model: Autoencoder, x: torch.Tensor, seed: int, epochs: int = EPOCHS) -> Autoencoder:
    """Train ``model`` in place with the recipe above on images ``x`` [N, C, H, W] in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(128):
            loss = F.mse_loss(model(x[batch]), x[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def fad(model: Autoencoder, real: torch.Tensor, generated: torch.Tensor) -> float:
    """Frechet distance of the two image sets' latent codes."""
    return frechet_distance(model.encode(generated.cpu()), model.encode(real.cpu()))
