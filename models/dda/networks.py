"""Logits and embeddings of the networks DDA works with: :class:`AnnCNN` and :class:`SpikingCNN`.

For the spiking CNN, the logits are the readout layer's input currents averaged over
the T steps (the quantity its output spikes threshold) and the embedding is the firing
rate of the flattened last feature map.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import functional
from torch import nn

from models.ann_cnn import AnnCNN
from models.spiking_cnn import SpikingCNN

STUDENTS = ("snn", "ann")


def _steps(model: SpikingCNN, x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(0).repeat(model.timesteps, *([1] * x.dim()))


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[N, classes] class scores, differentiable (neurons are reset afterwards)."""
    if isinstance(model, SpikingCNN):
        out = model.net[:-1](_steps(model, x)).mean(0)  # up to the readout Linear
        functional.reset_net(model)
        return out
    return model(x)


def embedding(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[N, D] penultimate features."""
    if isinstance(model, SpikingCNN):
        out = model.net[:-2](_steps(model, x)).mean(0)  # up to flatten: rates of the last feature map
        functional.reset_net(model)
        return out
    assert isinstance(model, AnnCNN), type(model)
    return model.embed(x)


def embedding_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(:func:`embedding`, :func:`logits`) from one pass: both networks' logits are a linear
    readout of the embedding (for the spiking CNN, of the rates, since the mean over T
    commutes with the Linear)."""
    features = embedding(model, x)
    return features, (model.net.fc if isinstance(model, SpikingCNN) else model.head)(features)


def build_student(kind: str, in_channels: int, image_size: int, num_classes: int, timesteps: int) -> nn.Module:
    """A compact student: ``snn`` = SpikingCNN(8, 16 channels), ``ann`` = AnnCNN(8, 16 channels)."""
    if kind == "snn":
        return SpikingCNN(in_channels, image_size, num_classes, timesteps, channels=(8, 16))
    if kind == "ann":
        return AnnCNN(in_channels, image_size, num_classes, channels=(8, 16), hidden=32)
    raise ValueError(f"student {kind!r}; accepted: {', '.join(STUDENTS)}")
