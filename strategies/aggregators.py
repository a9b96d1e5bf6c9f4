"""How a SpikeFed strategy aggregates the updates it chose: one of Flower's strategies
(run config ``aggregator``), composed with the selection instead of FedAvg.

The aggregator is Flower's own class, with ``fraction_train = 0``: its
``configure_train`` then does only its part of the round (FedOpt keeps the current arrays,
FedProx puts ``proximal-mu`` into the train config, FedAvgM keeps its arrays) and samples
no one, since FedAvg returns before sampling when ``fraction_train`` is 0; the selection
strategy chooses and messages the cohort, and hands the updates it aggregates to the
aggregator's ``aggregate_train``.

- ``fedavg`` (default): FedAvg's weighted mean (McMahan et al. 2017).
- ``fedprox``: FedAvg on the server; each client adds mu/2 ||w - w_t||^2 to its loss (Li et
  al., MLSys 2020), mu = ``fedprox-mu``, read from the train config's ``proximal-mu`` as
  Flower's FedProx sends it (any ClientApp that follows Flower's FedProx works).
- ``fedadam``, ``fedyogi``: adaptive server optimisers (Reddi et al., ICLR 2021) with server
  learning rate ``server-learning-rate``, Flower's other defaults (beta_1 0.9, beta_2 0.99,
  tau 1e-3).
- ``fedavgm``: server momentum ``server-momentum`` (Hsu et al. 2019), server learning rate 1.

``aggregation-weights = afedsnn`` weighs each update by AFedSNN's mixing weight instead of
its number of examples (:func:`afedsnn_weights`), under any aggregator.

A server optimiser steps the model's parameters; its buffers (BatchNorm's running
statistics) take FedAvg's weighted mean instead. Flower's optimisers step every array:
on BatchNorm's running variance FedAdam moves each entry about eta per round from its
initial 1, while the clients' statistics are near 0.05, and the network went silent (10%
accuracy for 10 rounds on digits, 20 clients, SFedCA; FedAvg reached 0.95). Reddi et al.
used GroupNorm, which has no running statistics.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedProx, FedYogi
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from core.config import ConfigError, RunConfig, above, at_least, choice, share
from core.protocol import FIRING_AFTER, NUM_EXAMPLES
from strategies.messaging import reply_metrics

AGGREGATORS: dict[str, type[FedAvg]] = {"fedavg": FedAvg, "fedprox": FedProx, "fedadam": FedAdam,
                                        "fedyogi": FedYogi, "fedavgm": FedAvgM}
# what each aggregator learns across rounds: checkpointed, so that a resumed run goes on exactly
STATE: dict[type, tuple[str, ...]] = {FedAdam: ("m_t", "v_t"), FedYogi: ("m_t", "v_t"), FedAvgM: ("momentum_vector",)}

KEYS = {
    "aggregator": choice("fedavg", tuple(AGGREGATORS), meaning=(
        "Flower strategy that aggregates the chosen updates: `fedavg`, `fedprox`, `fedadam`, `fedyogi`, `fedavgm`"
        " ([strategies.md](strategies.md#aggregators))")),
    "fedprox-mu": at_least(0.01, 0, meaning="`aggregator = fedprox`: weight mu of the proximal term"),
    "server-learning-rate": above(0.03, 0, meaning=(
        "`aggregator = fedadam | fedyogi`: the server's learning rate eta "
        "([strategies.md](strategies.md#aggregators))")),
    "server-momentum": share(0.9, meaning="`aggregator = fedavgm`: the server's momentum"),
    "aggregation-weights": choice("examples", ("examples", "afedsnn"), meaning=(
        "what each aggregated update weighs: `examples` (FedAvg's) or `afedsnn` (AFedSNN's information age x spike "
        "rate, [strategies.md](strategies.md#aggregators))")),
}
AFEDSNN_WEIGHT = "afedsnn-weight"  # the metric an update's AFedSNN weight is written under, Flower's weighted_by_key


def mean_rate(metrics: MetricRecord) -> float | None:
    """The mean of a reply's ``firing-after/`` rates over every spiking layer (None without them)."""
    rates = [np.asarray(v, dtype=float) for k, v in sorted(metrics.items()) if k.startswith(FIRING_AFTER)]
    return float(np.mean(np.concatenate(rates))) if rates else None


def afedsnn_weights(updates: list[Message]) -> list[float]:
    """AFedSNN's mixing weight of each update (its eqs. 16, 18 and 19 as rebuilt in GitHub
    CyberStaZJU/FedSNN, ``src/fedsnn/aggregation.py``): n_i / n x 1 / (1 + e^age_i) x
    N(r_i; mu, sigma), r_i the update's mean firing rate after training (every spiking layer),
    mu and sigma their mean and standard deviation over the round's updates. An update whose
    rate is far from the others' weighs less. The age is the number of global versions the
    update is behind: 0 for all in SpikeFed's synchronous rounds (late replies are dropped), so
    that factor is 1/2 for every update and cancels; with one update, or equal rates, the
    weights are the examples'. A reply without firing rates counts as having the mean rate."""
    metrics = [reply_metrics(m) for m in updates]
    rates = [mean_rate(r) for r in metrics]
    known = [r for r in rates if r is not None]
    mu, sigma = (float(np.mean(known)), float(np.std(known))) if known else (0.0, 0.0)
    total = sum(float(r[NUM_EXAMPLES]) for r in metrics)
    out = []
    for r, rate in zip(metrics, rates):
        rate = mu if rate is None else rate
        density = (1.0 if sigma == 0
                   else math.exp(-((rate - mu) ** 2) / (2 * sigma ** 2)) / math.sqrt(2 * math.pi * sigma))
        out.append(float(r[NUM_EXAMPLES]) / total / (1 + math.exp(0)) * density)
    return out


def check(cfg: RunConfig) -> None:
    """Flower's DP wrappers add noise to what the aggregator returns: calibrated for a mean of
    clipped updates, not for a server optimiser's step."""
    if cfg.aggregation_weights == "afedsnn" and cfg.dp_noise_multiplier > 0:
        raise ConfigError(f"aggregation-weights='afedsnn' with dp-noise-multiplier={cfg.dp_noise_multiplier:g}: "
                          "Flower's DP accounting weighs every update the same; accepted: aggregation-weights="
                          "'examples' with DP, or dp-noise-multiplier=0")
    if cfg.aggregator in ("fedadam", "fedyogi", "fedavgm") and cfg.dp_noise_multiplier > 0:
        raise ConfigError(f"aggregator={cfg.aggregator!r} with dp-noise-multiplier={cfg.dp_noise_multiplier:g}: the "
                          "DP noise is sized for a mean of clipped updates, not a server optimiser's step; accepted: "
                          "aggregator in fedavg, fedprox with DP, or dp-noise-multiplier=0")


class Aggregation:
    """How a SpikeFed strategy aggregates the updates it chose: a Flower strategy (FedAvg
    unless ``aggregator`` is given) that samples no one, and the names of the model's
    ``buffers``, which a server optimiser leaves to FedAvg's mean."""

    def __init__(self, aggregator: FedAvg | None = None, buffers: Iterable[str] = (), afedsnn: bool = False,
                 **kwargs: Any) -> None:
        self.aggregator = aggregator or FedAvg(**kwargs)
        self.aggregator.fraction_train = self.aggregator.fraction_evaluate = 0.0  # after __init__, which warns of 0
        self.buffers = frozenset(buffers)
        self.afedsnn = afedsnn  # weigh by afedsnn_weights(): the aggregator reads them as its weighted_by_key
        if afedsnn:
            self.aggregator.weighted_by_key = AFEDSNN_WEIGHT

    @classmethod
    def from_config(cls, cfg: RunConfig, buffers: Iterable[str] = (), **kwargs: Any) -> Aggregation:
        """The aggregator ``cfg.aggregator`` names, with Flower's ``kwargs`` (``train_metrics_aggr_fn``...)."""
        options = {"fedavg": {}, "fedprox": {"proximal_mu": cfg.fedprox_mu},
                   "fedadam": {"eta": cfg.server_learning_rate}, "fedyogi": {"eta": cfg.server_learning_rate},
                   "fedavgm": {"server_momentum": cfg.server_momentum}}[cfg.aggregator]
        return cls(AGGREGATORS[cfg.aggregator](**kwargs, **options), buffers, cfg.aggregation_weights == "afedsnn")

    def configure(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> None:
        """The aggregator's own part of the round: FedOpt's current arrays, FedProx's ``proximal-mu``
        in ``config`` (with ``fraction_train`` 0, FedAvg returns before it samples)."""
        self.aggregator.configure_train(server_round, arrays, config, grid)

    def aggregate(self, server_round: int, updates: list[Message], reference: ArrayRecord
                  ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The aggregator's aggregation of ``updates``, with the buffers' entries replaced by
        FedAvg's weighted mean of them when it is a server optimiser, in the dtypes of
        ``reference`` (the global model: a weighted mean turns BatchNorm's integer step count into a float)."""
        if self.afedsnn:
            for update, weight in zip(updates, afedsnn_weights(updates)):
                reply_metrics(update)[AFEDSNN_WEIGHT] = weight
        arrays, metrics = self.aggregator.aggregate_train(server_round, updates)
        if arrays is None:
            return arrays, metrics
        if self.buffers and type(self.aggregator) not in (FedAvg, FedProx):
            mean = aggregate_arrayrecords([m.content for m in updates], self.aggregator.weighted_by_key)
            arrays = ArrayRecord({k: mean[k] if k in self.buffers else v for k, v in arrays.items()})
        dtypes = {k: v.dtype for k, v in reference.to_torch_state_dict().items()}
        return ArrayRecord({k: v.to(dtypes[k]) for k, v in arrays.to_torch_state_dict().items()}), metrics

    def state_dict(self) -> dict[str, Any]:
        """What the aggregator has learned (:data:`STATE`), as tensors (the checkpoint loads weights only)."""
        return {name: _convert(getattr(self.aggregator, name), lambda a: torch.from_numpy(np.asarray(a)))
                for name in STATE.get(type(self.aggregator), ())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self.aggregator, name, _convert(value, lambda t: np.asarray(t.numpy())))


def _convert(value: Any, to: Any) -> Any:
    if isinstance(value, dict):
        return {k: to(v) for k, v in value.items()}
    return None if value is None else [to(v) for v in value]
