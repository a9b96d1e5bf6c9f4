"""The `esvae` workload: ESVAE trained locally; the server tracks reconstruction MSE.

SFedCA's firing statistics come from the encoder's spiking layers; the last of them is
the latent layer, so the "output" statistic is each latent neuron's rate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from core.config import at_least, choice
from models.esvae import ESVAE
from models.mmd import KERNELS
from models.device import model_device, torch_device
from models.workloads.base import Data, ProximalTerm, Workload

if TYPE_CHECKING:
    from data import DatasetSpec
    from core.config import RunConfig

WEIGHT_CLIP = 4.0  # the authors clip weights to [-4, 4]
PRIOR_LR_FACTOR = 10.0  # and train the prior's layer with 10x the learning rate

KEYS = {  # run-config keys of ESVAE
    "esvae-latent-dim": at_least(32, 1, meaning='ESVAE latent neurons (`workload="esvae"`)'),
    "esvae-mmd-lambda": at_least(0.001, 0, meaning="weight of MMD(r_q, r_p) in the ESVAE loss"),
    "esvae-mmd-kernel": choice("rbf", KERNELS, meaning="`rbf` (multi-bandwidth) or `linear`"),
    "esvae-weight-decay": at_least(0.001, 0, meaning=(  # AdamW's, as the authors train
        "AdamW weight decay of the VAE training loop (the ESVAE authors' value)")),
}


class ESVAEWorkload(Workload):
    """Builds :class:`ESVAE` from the ``esvae-*`` keys; :meth:`train` is the one training loop
    of both VAEs (`spikefed esvae train` uses it for the ANN VAE too)."""

    METRICS = {"mse": False, "loss": False}

    def build_model(self, cfg: RunConfig, spec: DatasetSpec) -> ESVAE:
        return ESVAE(spec.channels, spec.size, cfg.esvae_latent_dim, cfg.timesteps,
                     cfg.esvae_mmd_lambda, cfg.esvae_mmd_kernel).to(torch_device(cfg))

    def train(self, model: torch.nn.Module, data: Data, cfg: RunConfig, seed: int, proximal_mu: float = 0.0,
              on_epoch: Callable[[int, float], None] | None = None) -> dict[str, float]:
        """AdamW over ``cfg.local_epochs`` (plus FedProx's term); ``on_epoch(epoch, mean loss)`` after each epoch."""
        x = torch.as_tensor(data[0], device=model_device(model))
        generator = torch.Generator().manual_seed(seed)
        prior = list(model.prior.parameters()) if hasattr(model, "prior") else []
        others = [p for p in model.parameters() if all(p is not q for q in prior)]
        groups = [{"params": others}] + ([{"params": prior, "lr": cfg.lr * PRIOR_LR_FACTOR}] if prior else [])
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.esvae_weight_decay)
        proximal = ProximalTerm(model, proximal_mu)
        model.train()
        for epoch in range(cfg.local_epochs):
            total, squares, objective = 0.0, 0.0, 0.0  # of the last epoch
            for batch in torch.randperm(len(x), generator=generator).split(cfg.batch_size):
                loss, per_sample = model.loss(x[batch.to(x.device)])
                loss = loss + proximal(model)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    for p in model.parameters():
                        p.clamp_(-WEIGHT_CLIP, WEIGHT_CLIP)
                total += per_sample.sum().item()
                squares += per_sample.pow(2).sum().item()
                objective += loss.item() * len(batch)
            if on_epoch:
                on_epoch(epoch, objective / len(x))
        # train-loss: reconstruction MSE; loss-sq-mean: its per-sample square (Oort's utility)
        return {"train-loss": total / len(x), "loss-sq-mean": squares / len(x)}

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, data: Data, cfg: RunConfig) -> dict[str, float]:
        """Reconstruction MSE in [0, 1] pixels (``loss`` and ``mse``), with a fixed sampling seed."""
        x = torch.as_tensor(data[0], device=model_device(model))
        generator = torch.Generator(device=x.device).manual_seed(cfg.seed)
        model.eval()
        squared = 0.0
        for start in range(0, len(x), 256):
            xb = x[start:start + 256]
            squared += (model.reconstruct(xb, generator=generator) - xb).pow(2).flatten(1).mean(1).sum().item()
        return {"loss": squared / len(x), "mse": squared / len(x)}

    def spiking_network(self, model: ESVAE) -> torch.nn.Module:
        return model.encoder
