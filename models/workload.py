"""The interface every client workload implements, and the device it runs on."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from data import DatasetSpec
    from server.config import RunConfig

Data = tuple[np.ndarray, np.ndarray]  # (images [N, C, H, W] float32, labels [N])


def torch_device() -> torch.device:
    """CUDA when present, else CPU (spikingjelly picks its CUDA kernels by device)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Workload:
    """What the ClientApp and ServerApp call; they never look inside the model."""

    def build_model(self, cfg: RunConfig, spec: DatasetSpec) -> torch.nn.Module:
        """A freshly initialised model for data of shape ``spec``."""
        raise NotImplementedError

    def initial_model(self, cfg: RunConfig, spec: DatasetSpec) -> torch.nn.Module:
        """The server's global model before round 1 (a workload may start from a checkpoint)."""
        return self.build_model(cfg, spec)

    def train(self, model: torch.nn.Module, data: Data, cfg: RunConfig, seed: int) -> dict[str, float]:
        """Train in place for ``cfg.local_epochs``; returns metrics such as ``train-loss``."""
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module, data: Data, cfg: RunConfig) -> dict[str, float]:
        """Metrics of ``model`` on ``data`` (``loss`` and, where it applies, ``accuracy``)."""
        raise NotImplementedError

    def firing_rates(self, model: torch.nn.Module, data: Data, cfg: RunConfig) -> dict[str, list[float]]:
        """Per spiking layer, the firing rates in [0, 1] on ``data``."""
        raise NotImplementedError
