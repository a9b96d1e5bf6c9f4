"""Energy estimate of a spiking network from its measured activity (45 nm figures).

A synaptic layer (convolution or linear) whose input is spikes does one accumulate (AC,
0.9 pJ) per non-zero input and weight it meets: its synaptic operations are its dense
MACs times the measured input firing rate. A layer whose input is analog (the first
convolution, fed the image at every step) does MACs (4.6 pJ). The same-shape ANN does
each layer's MACs once per sample instead of once per step. Figures from Horowitz,
"Computing's energy problem", ISSCC 2014 (32-bit float add 0.9 pJ, mult-add 4.6 pJ), as
used across the SNN literature for this comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from spikingjelly.activation_based import functional
from torch import nn

E_AC = 0.9e-12  # joules per accumulate
E_MAC = 4.6e-12  # joules per multiply-accumulate
TRAIN_FACTOR = 3  # a training step costs about three forward passes (forward, two backward products)


@dataclass(frozen=True)
class OperationCounts:
    """Per sample, one forward pass over all T steps."""

    synaptic_ops: float  # accumulates triggered by input spikes
    dense_macs: float  # MACs of layers with analog input
    ann_macs: float  # MACs of the same-shape ANN (one step)

    def snn_joules(self, forward_passes: float) -> float:
        return forward_passes * (self.synaptic_ops * E_AC + self.dense_macs * E_MAC)

    def ann_joules(self, forward_passes: float) -> float:
        return forward_passes * self.ann_macs * E_MAC


def _macs(module: nn.Module, output: torch.Tensor) -> float:
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    kernel = module.weight[0].numel()  # in_channels / groups x kernel size
    return output.numel() * kernel


@torch.no_grad()
def operation_counts(model: nn.Module, x: torch.Tensor, timesteps: int) -> OperationCounts:
    """Count the operations of ``model`` on the samples ``x`` (call it on a few hundred:
    the rates are averages) with forward hooks on its convolution and linear layers."""
    totals = {"synaptic_ops": 0.0, "dense_macs": 0.0, "all_macs": 0.0}

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        inp = inputs[0]
        macs = _macs(module, output)
        totals["all_macs"] += macs
        if bool(((inp == 0) | (inp == 1)).all()):
            totals["synaptic_ops"] += macs * inp.count_nonzero().item() / inp.numel()
        else:
            totals["dense_macs"] += macs

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(count) for m in layers]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
        functional.reset_net(model)
        model.train(was_training)
    n = len(x)
    return OperationCounts(totals["synaptic_ops"] / n, totals["dense_macs"] / n, totals["all_macs"] / (n * timesteps))


def local_energy(model: nn.Module, x: torch.Tensor, timesteps: int, train_samples: float,
                 inference_samples: float, probe: int = 256) -> dict[str, float]:
    """Estimated joules of a client's local work: ``train_samples`` training steps' worth of
    samples (x :data:`TRAIN_FACTOR`) and ``inference_samples`` forward passes, for the spiking
    model (counted on its first ``probe`` samples) and for the same-shape ANN."""
    counts = operation_counts(model, x[:probe], timesteps)
    passes = TRAIN_FACTOR * train_samples + inference_samples
    return {"energy-snn": counts.snn_joules(passes), "energy-ann": counts.ann_joules(passes)}
