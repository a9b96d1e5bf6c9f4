"""The model, the data and the training loop: everything here is this app's own."""

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from flwr_datasets.partitioner import DirichletPartitioner
from sklearn.datasets import load_digits
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from torch import nn

NUM_CLASSES = 10


class SpikingMLP(nn.Module):
    """64 -> 128 LIF -> 10 LIF (batch-normalised inputs, so that neurons fire from the start),
    multi-step: the image is fed at each of the T steps and the output neurons' firing rates
    are the class scores."""

    def __init__(self, timesteps: int) -> None:
        super().__init__()
        self.timesteps = timesteps
        lif = dict(surrogate_function=surrogate.ATan(), detach_reset=True)
        self.net = nn.Sequential(layer.Flatten(), layer.Linear(64, 128), layer.BatchNorm1d(128), neuron.LIFNode(**lif),
                                 layer.Linear(128, NUM_CLASSES), layer.BatchNorm1d(NUM_CLASSES), neuron.LIFNode(**lif))
        functional.set_step_mode(self.net, "m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unsqueeze(0).repeat(self.timesteps, *[1] * x.dim())).mean(0)


@lru_cache(maxsize=1)
def _digits(seed: int) -> tuple[Dataset, tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn's digits (embedded, no download): 80% to partition, 20% held out."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.8 * len(x))
    train = Dataset.from_dict({"image": x[order[:cut]], "label": digits.target[order[:cut]]})
    test = torch.from_numpy(x[order[cut:]]), torch.from_numpy(digits.target[order[cut:]])
    return train, test


@lru_cache(maxsize=4)
def _partitioner(num_partitions: int, alpha: float, seed: int) -> DirichletPartitioner:
    partitioner = DirichletPartitioner(num_partitions=num_partitions, partition_by="label", alpha=alpha,
                                       min_partition_size=1, seed=seed)
    partitioner.dataset = _digits(seed)[0]
    return partitioner


def load_partition(partition_id: int, num_partitions: int, alpha: float, seed: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """One client's (images, labels): a non-IID share drawn by flwr-datasets' DirichletPartitioner."""
    part = _partitioner(num_partitions, alpha, seed).load_partition(partition_id).with_format("numpy")
    return torch.from_numpy(np.stack(part["image"]).astype(np.float32)), torch.as_tensor(part["label"])


def test_set(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return _digits(seed)[1]


def train(model: SpikingMLP, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, seed: int) -> dict:
    """Plain SGD on the output rates; returns the mean loss and Oort's loss-sq-mean."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    losses = []
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=generator).split(16):
            loss = F.cross_entropy(model(x[batch]) * 10, y[batch], reduction="none")
            optimizer.zero_grad()
            loss.mean().backward()
            optimizer.step()
            functional.reset_net(model)
            losses.append(loss.detach())
    losses = torch.cat(losses)
    return {"train-loss": losses.mean().item(), "loss-sq-mean": losses.pow(2).mean().item()}


@torch.no_grad()
def evaluate(model: SpikingMLP, x: torch.Tensor, y: torch.Tensor) -> dict:
    model.eval()
    scores = model(x) * 10
    functional.reset_net(model)
    return {"loss": F.cross_entropy(scores, y).item(), "accuracy": (scores.argmax(1) == y).float().mean().item()}
