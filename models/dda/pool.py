"""The image pool the student learns from, and the crop/flip augmentation applied to its
images on the fly (the authors' ``ImagePool`` and their RandomCrop(pad 4) + flip, GitHub
SLGSP/DDA ``datafree/synthesis/dda.py``).

The pool only grows: each synthesis step adds a batch (and, with diffusion, the variants
the filter keeps); the student samples uniformly from everything in it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

AUGMENTS = ("crop-flip", "crop", "none")  # dda-augment


def crop_padding(size: int) -> int:
    """Padding of the random crop: the authors' 4 px at 32 px, scaled to the image size
    (14 px -> 2, 8 px -> 1)."""
    return max(1, round(size / 8))


def crop_flip(x: torch.Tensor, augment: str, generator: torch.Generator) -> torch.Tensor:
    """``x`` [N, C, H, W] randomly cropped after zero padding and (``crop-flip``)
    horizontally flipped, each image its own draw; differentiable in ``x``. torchvision's
    transforms draw one crop per call, i.e. one for the whole batch, hence the indexing."""
    if augment == "none":
        return x
    n, c, h, w = x.shape
    pad = crop_padding(h)
    dy, dx = (torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    out = F.pad(x, (pad, pad, pad, pad))[torch.arange(n, device=x.device)[:, None, None, None],
                                         torch.arange(c, device=x.device)[None, :, None, None], rows, cols]
    if augment == "crop-flip":
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)[:, None, None, None]
        out = torch.where(flip, out.flip(3), out)
    return out


def mixup(x: torch.Tensor, labels: torch.Tensor, alpha: float, num_classes: int,
          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image of ``x`` blended with another of the batch, ``lam x_i + (1 - lam) x_j``,
    ``lam ~ Beta(alpha, alpha)`` per image (Zhang et al. 2018), and the blended one-hot
    targets [N, classes]. Not in the authors' code: images between two classes, for the
    teacher to label (``dda-mixup``)."""
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    lam = torch.as_tensor(np.random.default_rng(seed).beta(alpha, alpha, len(x)), dtype=x.dtype, device=x.device)
    other = torch.randperm(len(x), generator=generator).to(x.device)
    targets = F.one_hot(labels, num_classes).to(x.dtype)
    weight = lam[:, None, None, None]
    return weight * x + (1 - weight) * x[other], lam[:, None] * targets + (1 - lam[:, None]) * targets[other]


class Pool:
    """Images in [0, 1] and their target labels (variants inherit their source's)."""

    def __init__(self) -> None:
        self.images: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def add(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images.append(images.detach())
        self.labels.append(labels.detach())
        self._cache = None

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is None:
            self._cache = torch.cat(self.images), torch.cat(self.labels)
        return self._cache

    def sample(self, batch_size: int, augment: str, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A uniform batch (without replacement within the batch), augmented."""
        images, labels = self.tensors()
        index = torch.randperm(len(images), generator=generator)[:batch_size].to(images.device)
        return crop_flip(images[index], augment, generator), labels[index]

    def __len__(self) -> int:
        return sum(len(x) for x in self.images)
