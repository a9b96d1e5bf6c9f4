"""Stage 4, distillation: the student matches the teacher's temperature-softened outputs."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from models.dda.networks import logits


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the softened distributions, times T^2 (Hinton et al. 2015)."""
    return F.kl_div(F.log_softmax(student_logits / temperature, 1), F.softmax(teacher_logits / temperature, 1),
                    reduction="batchmean") * temperature ** 2


def distill(teacher: nn.Module, student: nn.Module, images: torch.Tensor, epochs: int, batch_size: int = 64,
            lr: float = 1e-3, temperature: float = 4.0, seed: int = 0,
            on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``student`` on ``images`` (synthetic, augmented or real) against the frozen
    teacher's outputs; returns the loss per epoch."""
    generator = torch.Generator().manual_seed(seed)
    teacher.eval()
    with torch.no_grad():
        targets = torch.cat([logits(teacher, chunk) for chunk in images.split(256)])
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    history = []
    student.train()
    for epoch in range(epochs):
        total = 0.0
        for batch in torch.randperm(len(images), generator=generator).split(batch_size):
            batch = batch.to(images.device)
            loss = kd_loss(logits(student, images[batch]), targets[batch], temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        history.append(total / len(images))
        if on_epoch:
            on_epoch(epoch, history[-1])
    return history


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model``'s logits (see :func:`models.dda.networks.logits`)."""
    model.eval()
    correct = sum((logits(model, xb).argmax(1) == yb).sum().item() for xb, yb in zip(x.split(256), y.split(256)))
    return correct / len(y)
