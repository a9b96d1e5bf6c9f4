"""ESVAE, a spiking VAE with a Poisson latent, and the same-shape ANN VAE it is compared with.

Following the summary of Zhan et al., "ESVAE: An Efficient Spiking Variational
Autoencoder with Reparameterizable Poisson Spiking Sampling" (arXiv 2310.14839) in
shared/papers.md (the stored copy of the paper holds only its abstract, so the choices
marked *here* are this project's):

- LIF neurons as in the authors' code: membrane decay 0.25 (u = 0.25 u + I), threshold
  0.2, hard reset to 0 (not detached), rectangular surrogate of width 1
  (:func:`esvae_lif`); tdBN normalises to that threshold;
- encoder: four Conv(3x3)-tdBN-LIF layers (32, 64, 128, 256 channels; stride 2 while the
  feature map is larger than 2x2, stride 1 after, *here* so 8x8 digits fit), then
  Linear-BN-LIF to ``latent_dim`` latent neurons; the image is fed directly at every step;
- posterior rate r_q = the latent spikes' mean over the T steps;
- learnable prior r_p = sigmoid(Linear(eps)), eps ~ N(0, I) of size ``latent_dim``;
- z = Poisson spike train of rate r_q (training, reconstruction) or r_p (sampling),
  see :mod:`models.poisson`;
- decoder: Linear-BN-LIF to 256 x s x s, transposed Conv-tdBN-LIF layers mirroring the
  encoder, a last transposed conv to the image channels read by a non-spiking LIF
  membrane (its potential after the last step, *here*), then tanh;
- loss = MSE(reconstruction, image in [-1, 1]) + lambda * MMD(r_q, r_p).

Images enter in [0, 1]; ``reconstruct`` and ``sample`` return [0, 1] images.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

from models.mmd import mmd
from models.poisson import poisson_spikes

CHANNELS = (32, 64, 128, 256)
V_THRESHOLD = 0.2
DECAY = 0.25


def esvae_lif() -> neuron.LIFNode:
    """The authors' LIF: u = DECAY * u + I (spikingjelly's tau = 1 / (1 - DECAY) without
    input decay), spike at V_THRESHOLD, hard reset to 0."""
    return neuron.LIFNode(tau=1 / (1 - DECAY), decay_input=False, v_threshold=V_THRESHOLD, v_reset=0.0,
                          surrogate_function=surrogate.Rect(alpha=1.0), detach_reset=False)


def _strides(size: int) -> list[int]:
    """Stride 2 while the map is larger than 2x2, then 1: 8 -> 2x2, 28 and 32 -> 2x2."""
    out = []
    for _ in CHANNELS:
        out.append(2 if size > 2 else 1)
        size = (size - 1) // out[-1] + 1
    return out


def _sizes(size: int) -> list[int]:
    """Feature-map side after each encoder layer."""
    sizes = []
    for stride in _strides(size):
        size = (size - 1) // stride + 1
        sizes.append(size)
    return sizes


def _tdbn(channels: int) -> nn.Module:
    """Threshold-dependent BN (tdBN, Zheng et al. 2021) over [T, N, C, H, W]."""
    return layer.ThresholdDependentBatchNorm2d(alpha=1.0, v_th=V_THRESHOLD, num_features=channels)


class _DirectEncoder(nn.Sequential):
    """Spiking layers fed the image, scaled to [-1, 1], at every one of T steps."""

    def __init__(self, timesteps: int, layers: OrderedDict[str, nn.Module]) -> None:
        super().__init__(layers)
        self.timesteps = timesteps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] in [0, 1] -> latent spikes [T, N, latent_dim]."""
        return super().forward((2 * x - 1).unsqueeze(0).repeat(self.timesteps, 1, 1, 1, 1))


class _Shapes(nn.Module):
    """The layer plan both VAEs share, from the image shape."""

    def __init__(self, in_channels: int, image_size: int, latent_dim: int) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.latent_dim = in_channels, image_size, latent_dim
        self.strides, self.sizes = _strides(image_size), _sizes(image_size)
        self.side = self.sizes[-1]
        self.flat = CHANNELS[-1] * self.side * self.side

    def deconv_plan(self) -> list[tuple[int, int, int, int]]:
        """(in, out, stride, output_padding) of each transposed conv, back to the image."""
        targets = [*self.sizes[:-1][::-1], self.image_size]
        channels = [*CHANNELS[::-1], self.in_channels]
        plan, size = [], self.side
        for i, (stride, target) in enumerate(zip(self.strides[::-1], targets)):
            pad = target - ((size - 1) * stride - 2 + 3) if stride == 2 else 0
            plan.append((channels[i], channels[i + 1], stride, pad))
            size = target
        return plan


class ESVAE(_Shapes):
    """Spiking VAE with a Poisson latent (multi-step spikingjelly modules).

    Parameters
    ----------
    in_channels, image_size : shape of the (square) images.
    latent_dim : number of latent neurons.
    timesteps : T.
    mmd_lambda : weight of the MMD term.
    mmd_kernel : ``rbf`` or ``linear``.
    """

    def __init__(self, in_channels: int, image_size: int, latent_dim: int = 32, timesteps: int = 16,
                 mmd_lambda: float = 0.001, mmd_kernel: str = "rbf") -> None:
        super().__init__(in_channels, image_size, latent_dim)
        self.timesteps, self.mmd_lambda, self.mmd_kernel = timesteps, mmd_lambda, mmd_kernel
        enc: dict[str, nn.Module] = {}
        for i, (c_in, c_out, stride) in enumerate(zip((in_channels, *CHANNELS[:-1]), CHANNELS, self.strides), 1):
            enc |= {f"conv{i}": layer.Conv2d(c_in, c_out, 3, stride, 1, bias=False), f"bn{i}": _tdbn(c_out),
                    f"lif{i}": esvae_lif()}
        enc |= {"flatten": layer.Flatten(), "fc": layer.Linear(self.flat, latent_dim, bias=False),
                "bn_latent": layer.BatchNorm1d(latent_dim), "lif_latent": esvae_lif()}
        self.encoder = _DirectEncoder(timesteps, OrderedDict(enc))
        self.prior = nn.Linear(latent_dim, latent_dim)
        dec: list[nn.Module] = [layer.Linear(latent_dim, self.flat, bias=False), layer.BatchNorm1d(self.flat), esvae_lif(),
                                nn.Unflatten(2, (CHANNELS[-1], self.side, self.side))]
        plan = self.deconv_plan()
        for c_in, c_out, stride, pad in plan[:-1]:
            dec += [layer.ConvTranspose2d(c_in, c_out, 3, stride, 1, output_padding=pad, bias=False),
                    _tdbn(c_out), esvae_lif()]
        c_in, c_out, stride, pad = plan[-1]
        dec += [layer.ConvTranspose2d(c_in, c_out, 3, stride, 1, output_padding=pad),
                neuron.NonSpikingLIFNode(tau=2.0, decode="last_mem")]
        self.decoder = nn.Sequential(*dec)
        functional.set_step_mode(self, "m")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] in [0, 1] -> posterior rates r_q [N, latent_dim]."""
        return self.encoder(x).mean(0)

    def prior_rates(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(n, self.latent_dim, generator=generator, device=self.prior.weight.device)
        return torch.sigmoid(self.prior(eps))

    def decode(self, spikes: torch.Tensor) -> torch.Tensor:
        """Latent spikes [T, N, latent_dim] -> images [N, C, H, W] in [-1, 1]."""
        return torch.tanh(self.decoder(spikes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (reconstruction in [-1, 1], posterior rates)."""
        r_q = self.encode(x)
        return self.decode(poisson_spikes(r_q, self.timesteps)), r_q

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (mean loss, per-sample reconstruction MSE in [0, 1] pixels); resets the neurons."""
        recon, r_q = self(x)
        r_p = self.prior_rates(len(x))
        per_sample = F.mse_loss(recon, 2 * x - 1, reduction="none").flatten(1).mean(1)
        loss = per_sample.mean() + self.mmd_lambda * mmd(r_q, r_p, self.mmd_kernel)
        functional.reset_net(self)
        return loss, per_sample.detach() / 4

    def latent_spikes(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The latent spike trains [T, N, latent_dim] the decoder reads for images ``x``."""
        return poisson_spikes(self.encode(x), self.timesteps, generator=generator)

    def prior_spikes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` latent spike trains drawn from the prior: eps -> r_p -> spikes."""
        return poisson_spikes(self.prior_rates(n, generator), self.timesteps, generator=generator)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, latent_noise: float = 0.0,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [0, 1]. ``latent_noise`` = std of Gaussian noise added to the latent
        spike trains, as a share of each latent neuron's own std (as for :class:`AnnVAE`)."""
        spikes = self.latent_spikes(x, generator)
        if latent_noise:
            noise = torch.randn(spikes.shape, generator=generator, device=spikes.device)
            spikes = spikes + latent_noise * spikes.std(dim=(0, 1), keepdim=True) * noise
        out = (self.decode(spikes) + 1) / 2
        functional.reset_net(self)
        return out

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` generated images in [0, 1]: prior spikes -> decoder."""
        out = (self.decode(self.prior_spikes(n, generator)) + 1) / 2
        functional.reset_net(self)
        return out


class AnnVAE(_Shapes):
    """The same shape without spikes: Conv-BN-ReLU encoder, Gaussian latent (mu, log var),
    mirrored decoder, tanh output; loss = MSE + ``kl_weight`` * KL(q || N(0, I))."""

    def __init__(self, in_channels: int, image_size: int, latent_dim: int = 32, kl_weight: float = 0.001) -> None:
        super().__init__(in_channels, image_size, latent_dim)
        self.kl_weight = kl_weight
        enc: list[nn.Module] = []
        for c_in, c_out, stride in zip((in_channels, *CHANNELS[:-1]), CHANNELS, self.strides):
            enc += [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(self.flat, 2 * latent_dim))
        dec: list[nn.Module] = [nn.Linear(latent_dim, self.flat, bias=False), nn.BatchNorm1d(self.flat), nn.ReLU(),
                                nn.Unflatten(1, (CHANNELS[-1], self.side, self.side))]
        plan = self.deconv_plan()
        for c_in, c_out, stride, pad in plan[:-1]:
            dec += [nn.ConvTranspose2d(c_in, c_out, 3, stride, 1, output_padding=pad, bias=False),
                    nn.BatchNorm2d(c_out), nn.ReLU()]
        c_in, c_out, stride, pad = plan[-1]
        dec += [nn.ConvTranspose2d(c_in, c_out, 3, stride, 1, output_padding=pad), nn.Tanh()]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_var = self.encoder(2 * x - 1).chunk(2, dim=1)
        return mu, log_var

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_var = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * log_var).exp()
        per_sample = F.mse_loss(self.decoder(z), 2 * x - 1, reduction="none").flatten(1).mean(1)
        kl = -0.5 * (1 + log_var - mu.pow(2) - log_var.exp()).sum(1).mean()
        return per_sample.mean() + self.kl_weight * kl, per_sample.detach() / 4

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, latent_noise: float = 0.0,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [0, 1] from the posterior mean; ``latent_noise`` = std of Gaussian noise
        added to the latent, as a share of each latent unit's own std over the batch."""
        mu, _ = self.encode(x)
        if latent_noise:
            noise = torch.randn(mu.shape, generator=generator, device=mu.device)
            mu = mu + latent_noise * mu.std(0, keepdim=True) * noise
        return (self.decoder(mu) + 1) / 2

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.latent_dim, generator=generator, device=self.decoder[0].weight.device)
        return (self.decoder(z) + 1) / 2
