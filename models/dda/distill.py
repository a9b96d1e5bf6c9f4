"""Stage 4, distillation: the student matches the teacher's temperature-softened outputs,
optionally with the authors' extra terms (cross-entropy on the synthetic labels, feature
alignment to the teacher's embedding) and their optimiser (SGD with cosine annealing)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.dda.networks import embedding, embedding_and_logits, logits

OPTIMIZERS = ("adam", "sgd-cosine")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the softened distributions, times T^2 (Hinton et al. 2015)."""
    return F.kl_div(F.log_softmax(student_logits / temperature, 1), F.softmax(teacher_logits / temperature, 1),
                    reduction="batchmean") * temperature ** 2


@dataclass(frozen=True)
class KDOptions:
    """The student's loss and optimiser.

    Parameters
    ----------
    temperature : of the KL term (``dda-temperature``; the authors use 20).
    ce_weight : weight of cross-entropy to the images' labels (the synthetic target labels,
        inherited by their variants; ``dda-ce-weight``, 0 = off).
    feature_weight : weight of the MSE between the teacher's embedding and a learned linear
        projection of the student's (their widths differ; the projection trains with the
        student and is dropped afterwards; ``dda-feature-weight``, 0 = off; authors: 30).
    optimizer : ``adam`` (lr 1e-3) or ``sgd-cosine`` (SGD lr 0.1, momentum 0.9, no weight
        decay, learning rate annealed to 0 over the epochs by a cosine; the authors').
    """

    temperature: float = 4.0
    ce_weight: float = 0.0
    feature_weight: float = 0.0
    optimizer: str = "adam"

    @classmethod
    def of(cls, cfg) -> KDOptions:
        """The options a run config's ``dda-*`` keys ask for."""
        return cls(cfg.dda_temperature, cfg.dda_ce_weight, cfg.dda_feature_weight, cfg.dda_optimizer)


def distill(teacher: nn.Module, student: nn.Module, images: torch.Tensor, epochs: int, batch_size: int = 64,
            options: KDOptions = KDOptions(), labels: torch.Tensor | None = None, seed: int = 0,
            on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``student`` on ``images`` (synthetic, augmented or real) against the frozen
    teacher's outputs with ``options`` (``labels`` [N] are needed when ``ce_weight`` > 0);
    returns the loss per epoch."""
    if options.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={options.optimizer!r}; accepted: {', '.join(OPTIMIZERS)}")
    if options.ce_weight and labels is None:
        raise ValueError("ce_weight > 0 needs the images' labels")
    generator = torch.Generator().manual_seed(seed)
    teacher.eval()
    with torch.no_grad():
        targets = torch.cat([logits(teacher, chunk) for chunk in images.split(256)])
        if options.feature_weight:
            features = torch.cat([embedding(teacher, chunk) for chunk in images.split(256)])
    parameters = list(student.parameters())
    if options.feature_weight:
        with torch.no_grad():
            width = embedding(student, images[:2]).shape[1]
        projection = nn.Linear(width, features.shape[1]).to(images.device)
        parameters += list(projection.parameters())
    if options.optimizer == "adam":
        optimizer, scheduler = torch.optim.Adam(parameters, lr=1e-3), None
    else:
        optimizer = torch.optim.SGD(parameters, lr=0.1, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    history = []
    student.train()
    for epoch in range(epochs):
        total = 0.0
        for batch in torch.randperm(len(images), generator=generator).split(batch_size):
            if len(batch) == 1 and len(images) > 1:  # BatchNorm cannot train on one image
                continue
            batch = batch.to(images.device)
            student_features, out = embedding_and_logits(student, images[batch])
            loss = kd_loss(out, targets[batch], options.temperature)
            if options.ce_weight:
                loss = loss + options.ce_weight * F.cross_entropy(out, labels[batch])
            if options.feature_weight:
                loss = loss + options.feature_weight * F.mse_loss(projection(student_features), features[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        if scheduler:
            scheduler.step()
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
