"""The self-supervised rotation head of DDA's synthesis (GitHub SLGSP/DDA,
``datafree/synthesis/dda.py``: ``MLPHead``, ``train_head``, ``loss_dda``).

A small MLP on the *student's* embedding predicts the joint label (rotation k x 90
degrees, class) of each of an image's 4 rotations. The head learns it on the pool's
batches (:meth:`RotationHead.train_step`, after each student step); the synthesis
*maximises* its loss, so new images are ones whose rotations the student cannot tell
apart yet. The head is reset after every synthesis, as the authors do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.dda.networks import embedding

ROTATIONS = 4


def rotations(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 4 rotations of ``images`` and their joint labels ``k * num_classes + label``."""
    rotated = torch.cat([torch.rot90(images, k, (2, 3)) for k in range(ROTATIONS)])
    joint = torch.cat([k * num_classes + labels for k in range(ROTATIONS)])
    return rotated, joint


class RotationHead(nn.Module):
    """Linear-ReLU-Linear to 4 x classes outputs, L2-normalised (the authors' ``MLPHead``).

    Parameters
    ----------
    width : size of the student's embedding.
    num_classes : classes of the task.
    """

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, ROTATIONS * num_classes))
        self.optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(features), dim=1)

    def loss(self, student: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the head on the student's embedding of the rotated ``images``
        (differentiable in ``images``: the synthesis maximises it)."""
        rotated, joint = rotations(images, labels, self.num_classes)
        return F.cross_entropy(self(embedding(student, rotated)), joint)

    def train_step(self, student: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
        """One SGD step of the head on a pool batch (the student in eval mode, not trained)."""
        was_training = student.training
        student.eval()
        with torch.no_grad():
            rotated, joint = rotations(images, labels, self.num_classes)
            features = embedding(student, rotated)
        loss = F.cross_entropy(self(features), joint)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        student.train(was_training)
        return loss.item()

    def reset(self) -> None:
        """Normal(0, 0.02) weights, zero biases (the authors' ``reset_model``); fresh momentum."""
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)
        self.optimizer.state.clear()
