"""FSVAE, the fully spiking VAE with an autoregressive Bernoulli latent (the spiking baseline of ESVAE).

Following Kamata et al., "Fully Spiking Variational Autoencoder" (AAAI 2022) and the authors'
code (github.com/kamata1729/FullySpikingVAE); the choices marked *here* are this project's:

- encoder and decoder: those of :class:`models.esvae.ESVAE` (this class subclasses it; the
  authors' are the same shape, with a membrane read-out weighted 0.8^(T-t) instead of the
  last membrane potential);
- posterior q(z_t | x_<=t, z_<t): a spiking net fed concat(encoder spikes at t, z_{t-1}),
  z_0 = 0, of Linear-BN-LIF layers to 2C, 4C and k*C neurons (C = ``latent_dim``), as the
  authors', whose tdBN (scale alpha * V_th, alpha = 2) pools statistics over N and T; a net
  run one step at a time cannot pool over T, so *here* each step has its own BN (batch
  normalisation through time, Kim & Panda 2021), which keeps training and evaluation alike;
  z_t takes, for each latent neuron, one of its k spikes at random, so z_t ~ Bernoulli(mean
  of the k spikes) with the gradient flowing through the chosen spike;
- prior p(z_t | z_<t): the same net fed z_{t-1} only; in training it reads the posterior's
  z_{t-1} (teacher forcing, *here*: the authors' MNIST config mixes in scheduled sampling);
- z_{t-1} enters both nets detached, as in the authors' code; every neuron is the authors'
  LIF (:func:`models.esvae.esvae_lif`: decay 0.25, V_th = 0.2, hard reset);
- loss = MSE(reconstruction, image in [-1, 1]) + ``mmd_weight`` * mean((PSP(q) - PSP(p))^2),
  q and p the k-spike means [T, N, C], PSP a first-order synapse with tau_s = 2; the authors
  add the two terms with weight 1.

The latent nets run in spikingjelly's single-step mode, one step at a time. ESVAE's
``prior`` layer is removed: the training loop gives a module of that name 10x the learning rate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer
from torch import nn

from models.esvae import ESVAE, esvae_lif

TAU_S = 2.0  # synaptic time constant of the PSP filter in the MMD


class _LatentNet(nn.Module):
    """Single-step Linear-BN-LIF layers to 2C, 4C and k*C neurons, one BN per layer and step,
    its weight set to alpha * V_th with the authors' alpha = 2 (as their tdBN scales).

    Parameters
    ----------
    in_features : input size; latent_dim : C; k : spikes per latent neuron; timesteps : T.
    """

    def __init__(self, in_features: int, latent_dim: int, k: int, timesteps: int) -> None:
        super().__init__()
        widths = (2 * latent_dim, 4 * latent_dim, k * latent_dim)
        self.fcs = nn.ModuleList(layer.Linear(a, b, bias=False) for a, b in zip((in_features, *widths), widths))
        self.lifs = nn.ModuleList(esvae_lif() for _ in widths)
        self.bns = nn.ModuleList(nn.ModuleList(nn.BatchNorm1d(b) for _ in range(timesteps)) for b in widths)
        for bns, spike in zip(self.bns, self.lifs):
            for bn in bns:
                nn.init.constant_(bn.weight, 2 * spike.v_threshold)

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """Input [N, in_features] at step ``t`` -> spikes [N, k*C]."""
        for fc, bns, spike in zip(self.fcs, self.bns, self.lifs):
            x = spike(bns[t](fc(x)))
        return x


def psp(x: torch.Tensor, tau_s: float = TAU_S) -> torch.Tensor:
    """Postsynaptic potential of inputs [T, ...]: psp_t = psp_{t-1} (1 - 1/tau_s) + x_t / tau_s."""
    out, syn = [], torch.zeros_like(x[0])
    for x_t in x:
        syn = syn * (1 - 1 / tau_s) + x_t / tau_s
        out.append(syn)
    return torch.stack(out)


class FSVAE(ESVAE):
    """Spiking VAE with autoregressive Bernoulli posterior and prior.

    Parameters
    ----------
    in_channels, image_size : shape of the (square) images.
    latent_dim : number of latent neurons C.
    timesteps : T.
    k : spikes per latent neuron and step that z_t picks from.
    mmd_weight : weight of the PSP-MMD term.
    """

    def __init__(self, in_channels: int, image_size: int, latent_dim: int = 128, timesteps: int = 16,
                 k: int = 20, mmd_weight: float = 1.0) -> None:
        super().__init__(in_channels, image_size, latent_dim, timesteps)
        del self.prior, self.mmd_lambda, self.mmd_kernel  # ESVAE's prior and its MMD settings
        self.k, self.mmd_weight = k, mmd_weight
        self.posterior_net = _LatentNet(2 * latent_dim, latent_dim, k, timesteps)
        self.prior_net = _LatentNet(latent_dim, latent_dim, k, timesteps)

    def _step(self, net: _LatentNet, t: int, generator: torch.Generator | None,
              *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step ``t`` of a latent net -> (z_t [N, C]: one of each neuron's k spikes, their mean [N, C])."""
        spikes = net(torch.cat(inputs, 1), t).unflatten(1, (self.latent_dim, self.k))
        pick = torch.randint(self.k, (*spikes.shape[:2], 1), generator=generator, device=spikes.device)
        return spikes.gather(2, pick).squeeze(2), spikes.mean(2)

    def posterior(self, x: torch.Tensor, generator: torch.Generator | None = None,
                  with_prior: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Images [N, C, H, W] in [0, 1] -> (z [T, N, C], posterior probabilities q [T, N, C],
        with ``with_prior`` the prior's probabilities p [T, N, C] given the posterior's z_<t).
        Leaves the neurons charged: reset them with ``functional.reset_net``."""
        h = self.encoder(x)
        z = h.new_zeros(h.shape[1:])
        zs, qs, ps = [], [], []
        for t, h_t in enumerate(h):
            prev = z.detach()
            if with_prior:
                ps.append(self._step(self.prior_net, t, generator, prev)[1])
            z, q = self._step(self.posterior_net, t, generator, h_t, prev)
            zs.append(z)
            qs.append(q)
        return torch.stack(zs), torch.stack(qs), torch.stack(ps) if with_prior else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (reconstruction in [-1, 1], posterior probabilities q [T, N, C]); resets the neurons."""
        z, q, _ = self.posterior(x)
        recon = self.decode(z)
        functional.reset_net(self)
        return recon, q

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (mean loss, per-sample reconstruction MSE in [0, 1] pixels); resets the neurons."""
        z, q, p = self.posterior(x, with_prior=True)
        per_sample = F.mse_loss(self.decode(z), 2 * x - 1, reduction="none").flatten(1).mean(1)
        loss = per_sample.mean() + self.mmd_weight * (psp(q) - psp(p)).pow(2).mean()
        functional.reset_net(self)
        return loss, per_sample.detach() / 4

    def latent_spikes(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The posterior's z [T, N, C] for images ``x`` (ESVAE's ``reconstruct`` decodes it)."""
        return self.posterior(x, generator)[0]

    def prior_spikes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z_1, ..., z_T drawn in turn from the prior net (ESVAE's ``sample`` decodes them)."""
        z = torch.zeros(n, self.latent_dim, device=self.decoder[0].weight.device)
        zs = []
        for t in range(self.timesteps):
            z = self._step(self.prior_net, t, generator, z)[0]
            zs.append(z)
        return torch.stack(zs)
