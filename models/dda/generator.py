"""Stage 1, synthesis by a generator (the authors' code, after CMI/Fast data-free KD):
instead of optimising the pixels of each batch (:mod:`models.dda.synthesis`), one
conditional generator learns to map noise and a label to images that the teacher's
BatchNorm statistics and cross-entropy accept; its outputs go into a pool
(:class:`~models.dda.synthesis.SyntheticBank`) from which the student samples.

Diversity term: a self-supervised rotation head on the teacher's embedding predicts the
joint label (rotation k x 90 degrees, class), 4 x classes outputs. The head and the
generator both minimise its cross-entropy (the cooperative self-supervision of SS-GAN,
Chen et al. 2019): an image only scores when its rotations are told apart, which
penalises the orientation-free blobs a collapsed generator produces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.dda.networks import embedding, logits
from models.dda.synthesis import InversionWeights, SyntheticBank, frozen, total_variation

ROTATIONS = 4
SYNTHESES = ("inversion", "generator")  # dda-synthesis: synthesis.py per batch, or this module


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

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.project(z + self.label(labels)).view(len(z), -1, self.init, self.init)
        return self.body(h)


def rotations(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 4 rotations of ``images`` and their joint labels ``k * num_classes + label``."""
    rotated = torch.cat([torch.rot90(images, k, (2, 3)) for k in range(ROTATIONS)])
    joint = torch.cat([k * num_classes + labels for k in range(ROTATIONS)])
    return rotated, joint


def generate(teacher: nn.Module, num_images: int, num_classes: int, shape: tuple[int, int, int],
             batch_size: int = 128, steps: int = 200, lr: float = 1e-3, nz: int = 256,
             rotation_weight: float = 1.0, weights: InversionWeights = InversionWeights(), seed: int = 0,
             device: torch.device | None = None) -> tuple[SyntheticBank, list[dict[str, list[float]]]]:
    """``num_images`` generated images with balanced labels, pooled batch by batch.

    Before each pool batch the one generator (kept across batches) takes ``steps`` Adam
    steps at ``lr`` on fresh noise and labels, minimising ``weights.bn`` x BN-statistics
    + ``weights.ce`` x cross-entropy + ``weights.tv`` x total variation +
    ``rotation_weight`` x the rotation head's loss (0 turns the head off); then the
    batch is drawn from new noise. Returns the pool and the loss history per batch
    (``bn``, ``ce``, ``rotation``, ``accuracy`` of the teacher on the generated images),
    the shape :func:`models.dda.synthesis.synthesize` returns. ``batch_size`` is also the
    training batch (at most ``num_images``); ``nz`` the noise size; ``seed`` seeds the noise, the labels and (through
    torch's global generator) the generator's and head's initialisation.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        width = embedding(teacher.eval(), torch.zeros((2, *shape), device=device)).shape[1]
    net = Generator(nz, num_classes, shape).to(device)
    head = nn.Linear(width, ROTATIONS * num_classes).to(device)
    optimizer = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=lr, betas=(0.5, 0.999))
    labels = torch.arange(num_images) % num_classes
    labels = labels[torch.randperm(num_images, generator=generator)]
    bank, histories = SyntheticBank(), []
    train_batch = min(batch_size, max(num_images, 2))  # BatchNorm needs two; a small pool needs no more
    with frozen(teacher) as stats:
        for batch in labels.split(batch_size):
            history: dict[str, list[float]] = {"bn": [], "ce": [], "rotation": [], "accuracy": []}
            net.train()
            for _ in range(steps):
                y = torch.randint(0, num_classes, (train_batch,), generator=generator).to(device)
                x = net(torch.randn((train_batch, nz), generator=generator).to(device), y)
                stats.clear()
                out = logits(teacher, x)
                bn, ce = stats.loss, F.cross_entropy(out, y)
                loss = weights.bn * bn + weights.ce * ce + weights.tv * total_variation(x)
                rotation = torch.zeros(())
                if rotation_weight:
                    rotated, joint = rotations(x, y, num_classes)
                    rotation = F.cross_entropy(head(embedding(teacher, rotated)), joint)
                    loss = loss + rotation_weight * rotation
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                history["bn"].append(bn.item())
                history["ce"].append(ce.item())
                history["rotation"].append(rotation.item())
                history["accuracy"].append((out.argmax(1) == y).float().mean().item())
            net.eval()
            with torch.no_grad():
                batch = batch.to(device)
                bank.add(net(torch.randn((len(batch), nz), generator=generator).to(device), batch), batch)
            histories.append(history)
    return bank, histories
