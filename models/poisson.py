"""Reparameterisable Poisson spiking sampling (ESVAE, Zhan et al. 2023).

A latent neuron with rate r in [0, 1] spikes at step t when r > u_t, u_t ~ U(0, 1) drawn
fresh each step, so its spike train is Bernoulli(r) per step (a discrete-time Poisson
process of rate r). The step function has no useful gradient, so the backward pass uses
a rectangular surrogate around r = u: d spike / d r = 1/w where |r - u| < w/2, else 0.
Its expectation over u is 1 = d E[spike] / d r away from the edges of [0, 1].
"""

from __future__ import annotations

import torch


class PoissonSpikeSampling(torch.autograd.Function):
    """``rate`` [...], ``uniform`` [T, ...] -> spikes [T, ...]; gradient to ``rate`` only."""

    @staticmethod
    def forward(ctx, rate: torch.Tensor, uniform: torch.Tensor, width: float) -> torch.Tensor:
        diff = rate.unsqueeze(0) - uniform
        ctx.save_for_backward(diff)
        ctx.width = width
        return (diff > 0).to(rate.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (diff,) = ctx.saved_tensors
        surrogate = (diff.abs() < ctx.width / 2).to(grad.dtype) / ctx.width
        return (grad * surrogate).sum(0), None, None


def poisson_spikes(rate: torch.Tensor, timesteps: int, width: float = 0.5,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """A spike train [T, *rate.shape] whose per-step spike probability is ``rate``."""
    uniform = torch.rand((timesteps, *rate.shape), generator=generator, device=rate.device, dtype=rate.dtype)
    return PoissonSpikeSampling.apply(rate, uniform, width)
