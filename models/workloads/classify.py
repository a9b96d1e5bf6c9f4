"""The `classify` workload: a spiking CNN trained with surrogate gradients."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

from models.spiking_cnn import SpikingCNN
from models.device import model_device, torch_device
from models.workloads.base import Data, ProximalTerm, Workload

if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from core.config import RunConfig
    from data import DatasetSpec, Split


def _tensors(data: Data, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data
    return torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)


def recalibrate_batchnorm(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256) -> None:
    """Replace the BatchNorm running statistics of ``model`` by their exact values on ``x``
    (torch's ``update_bn``). With the default momentum, the few batches of a client's round
    leave them near their initial (0, 1): the evaluated model's neurons then stay silent
    for rounds (the "dead start": 10% test accuracy for the first four rounds of the demo)."""

    def batches():
        for batch in x.split(batch_size):
            yield batch
            functional.reset_net(model)  # runs after the model has consumed the batch

    torch.optim.swa_utils.update_bn(batches(), model)


class ClassifyWorkload(Workload):
    """Image classification with :class:`SpikingCNN`.

    The loss is the MSE between the output firing rates and the one-hot label
    (spikingjelly's convention for rate-coded outputs); Adam with ``lr``. After local
    training the BatchNorm statistics are recalibrated on the local data
    (:func:`recalibrate_batchnorm`), so that the aggregated model fires from round 1.
    """

    METRICS = {"accuracy": True, "loss": False}

    def build_model(self, cfg: RunConfig, spec: DatasetSpec) -> SpikingCNN:
        return SpikingCNN(spec.channels, spec.size, spec.num_classes, cfg.timesteps).to(torch_device(cfg))

    def after_round(self, server_round: int, state_dict: dict[str, torch.Tensor], cfg: RunConfig,
                    split: Split, directory: Path) -> dict[str, Any]:
        """With ``dda-distill-every`` K: every K rounds, DDA from the global model into a
        compact spiking student, no client data (:func:`models.dda.pipeline.distill_global_student`)."""
        if not cfg.dda_distill_every or server_round % cfg.dda_distill_every:
            return {}
        from models.dda.pipeline import distill_global_student  # models.dda builds on this module

        teacher = self.build_model(cfg, split.spec)
        teacher.load_state_dict(state_dict)
        return {"student_accuracy": distill_global_student(teacher, cfg, split, server_round, directory)}

    def train(self, model: SpikingCNN, data: Data, cfg: RunConfig, seed: int,
              proximal_mu: float = 0.0) -> dict[str, float]:
        x, y = _tensors(data, model_device(model))
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        proximal = ProximalTerm(model, proximal_mu)
        num_classes = model.net.fc.out_features
        model.train()
        for _ in range(cfg.local_epochs):
            total, squares = 0.0, 0.0  # of the last epoch's per-sample losses
            for batch in torch.randperm(len(x), generator=generator).split(cfg.batch_size):
                batch = batch.to(x.device)
                rates = model(x[batch]).mean(0)
                per_sample = F.mse_loss(rates, F.one_hot(y[batch], num_classes).float(),
                                        reduction="none").mean(1)
                loss = per_sample.mean() + proximal(model)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                functional.reset_net(model)
                total += per_sample.sum().item()
                squares += per_sample.pow(2).sum().item()
        recalibrate_batchnorm(model, x)
        # loss-sq-mean: mean squared per-sample loss (Oort's statistical utility needs it)
        return {"train-loss": total / len(x), "loss-sq-mean": squares / len(x)}

    @torch.no_grad()
    def evaluate(self, model: SpikingCNN, data: Data, cfg: RunConfig) -> dict[str, float]:
        x, y = _tensors(data, model_device(model))
        num_classes = model.net.fc.out_features
        model.eval()
        loss, correct = 0.0, 0
        for start in range(0, len(x), 256):
            xb, yb = x[start:start + 256], y[start:start + 256]
            rates = model(xb).mean(0)
            functional.reset_net(model)
            loss += F.mse_loss(rates, F.one_hot(yb, num_classes).float(), reduction="sum").item() / num_classes
            correct += (rates.argmax(1) == yb).sum().item()
        return {"loss": loss / len(x), "accuracy": correct / len(x)}
