"""The interface every client workload implements."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from core.config import above, at_least
from models.device import model_device
from models.energy import local_energy
from models.firing import FiringStatistics, firing_statistics

if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from data import DatasetSpec, Split
    from core.config import RunConfig

# Run-config keys of local training, shared by every workload.
KEYS = {
    "local-epochs": at_least(2, 1, meaning="local epochs per round"),
    "batch-size": at_least(32, 1, meaning="local batch size"),
    "lr": above(0.01, 0, meaning="Adam learning rate"),
    "timesteps": at_least(4, 1, meaning="SNN simulation steps T"),
}

Data = tuple[np.ndarray, np.ndarray]  # (images [N, C, H, W] float32, labels [N])


class ProximalTerm:
    """FedProx's mu/2 ||w - w_t||^2 over ``model``'s parameters, w_t their values now (the
    received global model): Li et al., "Federated Optimization in Heterogeneous Networks",
    MLSys 2020, eq. 2. Zero (no copy kept) when ``mu`` is 0."""

    def __init__(self, model: torch.nn.Module, mu: float) -> None:
        self.mu = mu
        self.anchor = [p.detach().clone() for p in model.parameters()] if mu > 0 else []

    def __call__(self, model: torch.nn.Module) -> torch.Tensor | float:
        if not self.anchor:
            return 0.0
        return self.mu / 2 * sum((p - a).pow(2).sum() for p, a in zip(model.parameters(), self.anchor))


class Workload:
    """What the ClientApp and ServerApp call; they never look inside the model."""

    # What :meth:`evaluate` returns that the results compare: name -> higher is better. Each
    # becomes rounds.csv's column test_<name> and a `metric` of experiment files; the first
    # is the headline (`spikefed run` prints it).
    METRICS: dict[str, bool] = {}

    def build_model(self, cfg: RunConfig, spec: DatasetSpec) -> torch.nn.Module:
        """A freshly initialised model for data of shape ``spec``."""
        raise NotImplementedError

    def initial_model(self, cfg: RunConfig, spec: DatasetSpec) -> torch.nn.Module:
        """The server's global model before round 1 (a workload may start from a checkpoint)."""
        return self.build_model(cfg, spec)

    def train(self, model: torch.nn.Module, data: Data, cfg: RunConfig, seed: int,
              proximal_mu: float = 0.0) -> dict[str, float]:
        """Train in place for ``cfg.local_epochs`` (with FedProx's :class:`ProximalTerm`
        ``proximal_mu``); returns metrics such as ``train-loss``."""
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module, data: Data, cfg: RunConfig) -> dict[str, float]:
        """Metrics of ``model`` on ``data`` (``loss`` and, where it applies, ``accuracy``)."""
        raise NotImplementedError

    def after_round(self, server_round: int, state_dict: dict[str, torch.Tensor], cfg: RunConfig,
                    split: Split, directory: Path) -> dict[str, Any]:
        """The ServerApp's hook after each round, on the new global weights: server-side work
        of the workload, whose files go to the run's ``directory``; returns values for
        rounds.csv's columns (default: nothing)."""
        return {}

    def spiking_network(self, model: torch.nn.Module) -> torch.nn.Module:
        """The part of ``model`` whose neurons the firing statistics read (default: all of it)."""
        return model

    def firing_statistics(self, model: torch.nn.Module, data: Data, cfg: RunConfig,
                          num_classes: int = 0) -> FiringStatistics:
        """Per spiking layer, the firing rates in [0, 1] on ``data``; with ``num_classes``,
        also the class-wise firing intensity (SFedCA's `class` statistic)."""
        device = model_device(model)
        x = torch.as_tensor(data[0], device=device)
        labels = torch.as_tensor(data[1], device=device) if num_classes else None
        return firing_statistics(self.spiking_network(model), x, cfg.timesteps, labels, num_classes)

    def firing_rates(self, model: torch.nn.Module, data: Data, cfg: RunConfig) -> dict[str, list[float]]:
        """Per spiking layer, the firing rates in [0, 1] on ``data``."""
        return self.firing_statistics(model, data, cfg).rates

    def energy(self, model: torch.nn.Module, data: Data, cfg: RunConfig, train_samples: float,
               inference_samples: float) -> dict[str, float]:
        """Estimated joules (``energy-snn``, and ``energy-ann`` for the same-shape ANN) of
        ``train_samples`` training and ``inference_samples`` inference samples on ``data``."""
        x = torch.as_tensor(data[0], device=model_device(model))
        return local_energy(model, x, cfg.timesteps, train_samples, inference_samples)
