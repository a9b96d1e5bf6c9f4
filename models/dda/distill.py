"""Stage 4, distillation: the student matches the teacher's temperature-softened outputs
on each augmented pool batch, with the authors' extra terms as options (GitHub SLGSP/DDA
``datafree_kd.py``: KL at T 20 + cross-entropy to the synthetic labels + 30 x feature
alignment; SGD 0.1, momentum 0.9, weight decay 1e-4, cosine annealing over the epochs).

A spiking student's class scores are its output firing rates, in [0, 1]; the teacher's
logits span tens. Its KD logits are the rates times one learned positive scale, which
trains with the student and is dropped after: the arg-max, the readout the federation
evaluates with, does not depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.dda.networks import embedding_and_logits, logits
from models.spiking_cnn import SpikingCNN

OPTIMIZERS = ("sgd-cosine", "adam")


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
        inherited by their variants; ``dda-ce-weight``, 0 = off; the authors: 1).
    feature_weight : weight of the MSE between the teacher's embedding and a learned linear
        projection of the student's (their widths differ; the projection trains with the
        student and is dropped afterwards; ``dda-feature-weight``, 0 = off; authors: 30).
    optimizer : ``sgd-cosine`` (SGD lr 0.1, momentum 0.9, weight decay 1e-4, annealed to 0
        over the epochs by a cosine; the authors') or ``adam`` (lr 1e-3, constant).
    """

    temperature: float = 20.0
    ce_weight: float = 1.0
    feature_weight: float = 0.0
    optimizer: str = "sgd-cosine"

    @classmethod
    def of(cls, cfg) -> KDOptions:
        """The options a run config's ``dda-*`` keys ask for."""
        return cls(cfg.dda_temperature, cfg.dda_ce_weight, cfg.dda_feature_weight, cfg.dda_optimizer)


class Distiller:
    """The student, its optimiser and the loss's own parameters (the KD scale of a spiking
    student, the feature projection); :meth:`step` trains on one batch, :meth:`end_epoch`
    anneals the learning rate.

    Parameters
    ----------
    teacher, student : the frozen teacher and the student trained in place.
    options : :class:`KDOptions`.
    epochs : length of the cosine schedule.
    example : a few images, to size the feature projection.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, options: KDOptions, epochs: int,
                 example: torch.Tensor) -> None:
        if options.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={options.optimizer!r}; accepted: {', '.join(OPTIMIZERS)}")
        self.teacher, self.student, self.options = teacher.eval(), student, options
        device = example.device
        parameters = list(student.parameters())
        self.log_scale = None
        if isinstance(student, SpikingCNN):
            self.log_scale = torch.tensor(2.0, device=device, requires_grad=True)  # scale e^2 = 7.4 at start
            parameters.append(self.log_scale)
        self.projection = None
        if options.feature_weight:
            with torch.no_grad():
                widths = [embedding_and_logits(m, example[:2])[0].shape[1] for m in (student, teacher)]
            self.projection = nn.Linear(*widths).to(device)
            parameters += list(self.projection.parameters())
        if options.optimizer == "adam":
            self.optimizer, self.scheduler = torch.optim.Adam(parameters, lr=1e-3), None
        else:
            self.optimizer = torch.optim.SGD(parameters, lr=0.1, momentum=0.9, weight_decay=1e-4)
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, epochs)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The student's KD logits (a spiking student's rates times the learned scale)."""
        out = logits(self.student, x)
        return out * self.log_scale.exp() if self.log_scale is not None else out

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """One optimiser step on ``images`` (labelled by the teacher now, as augmented);
        ``labels`` are the images' target labels, class indices or [N, classes]
        probabilities (for ``ce_weight``)."""
        options = self.options
        with torch.no_grad():
            teacher_features, teacher_logits = embedding_and_logits(self.teacher, images)
        self.student.train()
        features, out = embedding_and_logits(self.student, images)
        if self.log_scale is not None:
            out = out * self.log_scale.exp()
        loss = kd_loss(out, teacher_logits, options.temperature)
        if options.ce_weight:
            loss = loss + options.ce_weight * F.cross_entropy(out, labels)
        if self.projection is not None:
            loss = loss + options.feature_weight * F.mse_loss(self.projection(features), teacher_features)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def end_epoch(self) -> None:
        if self.scheduler:
            self.scheduler.step()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model``'s class scores (:func:`models.dda.networks.logits`: a
    spiking model's output firing rates, the federation's readout)."""
    model.eval()
    correct = sum((logits(model, xb).argmax(1) == yb).sum().item() for xb, yb in zip(x.split(256), y.split(256)))
    return correct / len(y)
