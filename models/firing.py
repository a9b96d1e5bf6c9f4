"""Firing statistics of a spiking network, read with spikingjelly's OutputMonitor."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from spikingjelly.activation_based import functional, monitor, neuron
from torch import nn


@dataclass(frozen=True)
class FiringStatistics:
    """``rates``: per spiking layer, one rate per channel (convolutions) or neuron (linear
    layers; the output layer gives one rate per class). ``class_intensity``: per class c,
    the firing rate of the whole network (all its neurons over the T steps) averaged over
    the samples of label c; 0 for a class absent from the data (SFedCA's class-wise
    firing intensity)."""

    rates: dict[str, list[float]]
    class_intensity: list[float]


def _per_sample(spikes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """[T, N, C, ...] spikes -> (per-channel counts summed over T and N, each averaged over
    the channel's positions; per-sample spike totals over T and every neuron [N]; the
    layer's number of neurons)."""
    s = spikes.detach().float()
    per_sample = s.flatten(2).sum(dim=(0, 2))
    neurons = s[0, 0].numel()
    if s.dim() > 3:
        s = s.flatten(3).mean(3)
    return s.sum(dim=(0, 1)), per_sample, neurons


@torch.no_grad()
def firing_statistics(model: nn.Module, x: torch.Tensor, timesteps: int, labels: torch.Tensor | None = None,
                      num_classes: int = 0, batch_size: int = 256) -> FiringStatistics:
    """Rates of every spiking layer of ``model`` on the inputs ``x`` (averaged over the T
    steps and all samples) and, when ``labels`` are given, the class-wise intensity."""
    was_training = model.training
    model.eval()
    totals: dict[str, torch.Tensor] = {}
    neurons = 0
    per_sample = torch.zeros(len(x), device=x.device)
    with monitor.OutputMonitor(model, neuron.BaseNode, function_on_output=_per_sample) as mon:
        for start in range(0, len(x), batch_size):
            model(x[start:start + batch_size])
            functional.reset_net(model)
        for name in mon.monitored_layers:
            totals[name] = torch.stack([channels for channels, _, _ in mon[name]]).sum(0)
            per_sample += torch.cat([samples for _, samples, _ in mon[name]])
            neurons += mon[name][0][2]
    model.train(was_training)
    rates = {name: (t / (timesteps * len(x))).cpu().tolist() for name, t in totals.items()}
    intensity = [0.0] * num_classes
    if labels is not None and neurons:
        rate = per_sample / (timesteps * neurons)
        for c in range(num_classes):
            mask = labels == c
            if mask.any():
                intensity[c] = rate[mask].mean().item()
    return FiringStatistics(rates, intensity)

