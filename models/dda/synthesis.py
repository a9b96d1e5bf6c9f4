"""Stage 1, synthesis: images inverted from the teacher (DeepInversion, Yin et al. 2020).

A batch of images is optimised so that (a) the statistics of every BatchNorm layer's
input match that layer's running statistics, (b) the teacher classifies each image as
its sampled target label (cross-entropy), and (c) image priors hold (total variation and
l2). Batches from successive iterations accumulate in a :class:`SyntheticBank`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from models.dda.networks import logits


class BNStatistics:
    """Forward hooks on every BatchNorm of ``model``: after a forward pass, :attr:`loss`
    is the sum over layers of ||mean - running_mean||_2 + ||var - running_var||_2 of the
    layer's input batch (over [T x] N and the spatial positions)."""

    def __init__(self, model: nn.Module) -> None:
        self.terms: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules()
                        if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def _hook(self, module: nn.modules.batchnorm._BatchNorm, inputs, _output) -> None:
        x = inputs[0]
        if getattr(module, "step_mode", "s") == "m":  # spikingjelly multi-step BN: [T, N, C, ...]
            x = x.flatten(0, 1)
        dims = [d for d in range(x.dim()) if d != 1]
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        self.terms.append(torch.norm(mean - module.running_mean, 2) + torch.norm(var - module.running_var, 2))

    @property
    def loss(self) -> torch.Tensor:
        return torch.stack(self.terms).sum()

    def clear(self) -> None:
        self.terms = []

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@contextmanager
def frozen(teacher: nn.Module) -> Iterator[BNStatistics]:
    """``teacher`` in eval mode with its parameters' gradients off, and BatchNorm hooks on
    it, for synthesising against it; all restored (hooks removed) on exit."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    stats = BNStatistics(teacher)
    try:
        yield stats
    finally:
        stats.remove()
        for p in teacher.parameters():
            p.requires_grad_(True)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


@dataclass(frozen=True)
class InversionWeights:
    """Weights of the inversion loss terms."""

    bn: float = 1.0
    ce: float = 1.0
    tv: float = 0.05
    l2: float = 1e-4


def invert(teacher: nn.Module, labels: torch.Tensor, shape: tuple[int, int, int], steps: int = 200,
           lr: float = 0.1, weights: InversionWeights = InversionWeights(),
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, list[float]]]:
    """Images [N, *shape] in [0, 1] for ``labels``, and the loss history per step
    (``bn``, ``ce``, ``accuracy`` of the teacher on the images)."""
    device = labels.device
    # the images are sigmoid(z): always valid pixels, no clipping
    z = torch.randn((len(labels), *shape), generator=generator).to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    history: dict[str, list[float]] = {"bn": [], "ce": [], "accuracy": []}
    with frozen(teacher) as stats:
        for _ in range(steps):
            x = torch.sigmoid(z)
            stats.clear()
            out = logits(teacher, x)
            ce = F.cross_entropy(out, labels)
            bn = stats.loss
            loss = weights.bn * bn + weights.ce * ce + weights.tv * total_variation(x) + weights.l2 * x.pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history["bn"].append(bn.item())
            history["ce"].append(ce.item())
            history["accuracy"].append((out.argmax(1) == labels).float().mean().item())
    return torch.sigmoid(z).detach(), history


@dataclass
class SyntheticBank:
    """Synthetic images and their target labels, accumulated across inversion iterations."""

    images: list[torch.Tensor] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)

    def add(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images.append(images.detach())
        self.labels.append(labels.detach())

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat(self.images), torch.cat(self.labels)

    def __len__(self) -> int:
        return sum(len(x) for x in self.images)


def synthesize(teacher: nn.Module, num_images: int, num_classes: int, shape: tuple[int, int, int],
               batch_size: int = 128, steps: int = 200, lr: float = 0.1,
               weights: InversionWeights = InversionWeights(), seed: int = 0,
               device: torch.device | None = None) -> tuple[SyntheticBank, list[dict[str, list[float]]]]:
    """``num_images`` inverted images with balanced labels, batch by batch into a bank."""
    generator = torch.Generator().manual_seed(seed)
    bank, histories = SyntheticBank(), []
    labels = torch.arange(num_images) % num_classes
    labels = labels[torch.randperm(num_images, generator=generator)]
    for batch in labels.split(batch_size):
        images, history = invert(teacher, batch.to(device), shape, steps, lr, weights, generator)
        bank.add(images, batch.to(device))
        histories.append(history)
    return bank, histories
