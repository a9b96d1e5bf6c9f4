"""Logits and embeddings of the networks DDA works with: the ANN teachers (:class:`AnnCNN`,
:class:`AnnResNet`: ``embed()`` then a linear ``head``) and :class:`SpikingCNN`.

For the spiking CNN, the logits are the output neurons' firing rates (mean spikes over
the T steps): the readout the federation evaluates with (``ClassifyWorkload.evaluate``),
so a distilled student's accuracy here is the accuracy it starts the federation with.
Its embedding is the firing rate of the flattened last feature map.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional
from torch import nn

from models.ann_cnn import AnnCNN
from models.spiking_cnn import SpikingCNN

STUDENTS = ("snn", "ann")


def embedding_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, D] penultimate features, [N, classes] class scores) from one differentiable
    pass (a spiking model's neurons are reset afterwards)."""
    if isinstance(model, SpikingCNN):
        features = model.net[:-2](x.unsqueeze(0).repeat(model.timesteps, *([1] * x.dim())))  # [T, N, D] spikes
        rates = model.net[-1](model.net.fc(features)).mean(0)  # output spikes averaged over T
        functional.reset_net(model)
        return features.mean(0), rates
    features = model.embed(x)
    return features, model.head(features)


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[N, classes] class scores (see the module docstring)."""
    return embedding_and_logits(model, x)[1] if isinstance(model, SpikingCNN) else model(x)


def embedding(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[N, D] penultimate features."""
    return embedding_and_logits(model, x)[0] if isinstance(model, SpikingCNN) else model.embed(x)


def build_student(kind: str, in_channels: int, image_size: int, num_classes: int, timesteps: int) -> nn.Module:
    """The student: ``snn`` = the ``classify`` workload's default SpikingCNN (16, 32 channels),
    the model a federation trains; ``ann`` = an ANN of the same widths, AnnCNN(16, 32)."""
    if kind == "snn":
        return SpikingCNN(in_channels, image_size, num_classes, timesteps)
    if kind == "ann":
        return AnnCNN(in_channels, image_size, num_classes, channels=(16, 32), hidden=64)
    raise ValueError(f"student {kind!r}; accepted: {', '.join(STUDENTS)}")
