"""Flower's fixed-clipping DP wrappers around SpikeFed's strategies (run config
``dp-noise-multiplier`` > 0, ``dp-clipping-norm``, ``dp-clipping = server | client``).

Flower's ``DifferentialPrivacyServerSideFixedClipping`` and ``...ClientSideFixedClipping``
accept any strategy, but they clip the replies Flower's ``start()`` hands to
``aggregate_train`` and size the noise by the clients sampled. In a two-phase round
(SFedCA) those replies carry statistics only: the models are uploaded later, inside the
inner ``aggregate_train``, and fewer are aggregated than were sampled; and Flower's
``fixedclipping_mod`` clips a ``train`` reply's weights, not the kept weights a
``train.upload`` sends (it refuses a reply without an ArrayRecord). The subclasses here
take Flower's arguments and release where a SpikeFed round does:

- the updates are those the strategy aggregates (``collect_updates``: in two phases, the
  uploads), clipped on the server (server side) or by SpikeFed's ClientApp before it keeps
  or sends its weights (client side: the train config carries Flower's ``clipping_norm``);
- every update weighs the same (Flower's accounting assumes uniform FedAvg) and the noise
  std is noise_multiplier x clipping_norm / n, n the number aggregated;
- the accountant (Flower's RDP one) composes one Gaussian release of n clients per round
  that updated the model; rounds.csv gets the epsilon spent (``dp_model_epsilon``).
"""

from __future__ import annotations

from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (DifferentialPrivacyClientSideFixedClipping,
                                     DifferentialPrivacyServerSideFixedClipping)
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, compute_stdv
from flwr.supercore.privacy_accounting import (GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig,
                                               SamplingMethod)
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

from core.config import RunConfig
from core.privacy import add_noise, clip_update
from strategies.accounting import recorded
from strategies.base import SelectionStrategy
from strategies.messaging import reply_metrics

UNIFORM = "dp-weight"  # the metric every update carries under DP: FedAvg weighs them the same
ACCOUNTANT = "dp-accountant"  # the accountant's state in the strategy's checkpointed state


class FixedClipping:
    """What both sides share (mixed into Flower's wrappers below).

    Parameters
    ----------
    strategy : SelectionStrategy
        The SpikeFed strategy wrapped.
    noise_multiplier, clipping_norm : float
        As Flower's wrappers.
    accountant : RdpAccountant | None
        Flower's accountant (no-amplification); None: no accounting.
    """

    CLIENT_SIDE = False

    def __init__(self, strategy: SelectionStrategy, noise_multiplier: float, clipping_norm: float, *,
                 accountant: RdpAccountant | None = None) -> None:
        # num_sampled_clients is set per round, to the number aggregated; the accountant is kept
        # here, not passed to Flower's check, which wants FedAvg's own aggregate_train
        super().__init__(strategy, noise_multiplier, clipping_norm, 1)
        self.accountant = accountant
        self.current_arrays = ArrayRecord()
        # every update weighs the same, in the strategy's own FedAvg and in its aggregator
        strategy.weighted_by_key = strategy.aggregation.aggregator.weighted_by_key = UNIFORM

    @property
    def record(self):
        return self.strategy.record

    def state_dict(self) -> dict:
        return {**self.strategy.state_dict(), ACCOUNTANT: self.accountant.state_dict() if self.accountant else None}

    def load_state_dict(self, state: dict, completed_rounds: int) -> None:
        self.strategy.load_state_dict(state, completed_rounds)
        if self.accountant is not None and state.get(ACCOUNTANT):
            self.accountant.load_state_dict(state[ACCOUNTANT])

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, timeout: float = 3600,
              evaluate_fn=None, **kwargs: Any):
        """Flower's wrapper's start; the inner strategy's exchanges (uploads, queries) get the
        same timeout, and its observers each round's record."""
        self.strategy.timeout = timeout
        return super().start(grid, initial_arrays, num_rounds, timeout,
                             evaluate_fn=recorded(self.strategy, evaluate_fn), **kwargs)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        self.current_arrays = arrays
        if self.CLIENT_SIDE:
            config[KEY_CLIPPING_NORM] = self.clipping_norm
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies) -> tuple[ArrayRecord | None, MetricRecord | None]:
        updates = self.strategy.collect_updates(server_round, replies)
        for msg in updates:
            if not self.CLIENT_SIDE:
                for name, record in list(msg.content.array_records.items()):
                    msg.content[name] = clip_update(record, self.current_arrays, self.clipping_norm)
            reply_metrics(msg)[UNIFORM] = 1
        arrays, metrics = self.strategy.aggregate_updates(server_round, updates)
        if arrays is None:
            return None, None
        self.num_sampled_clients = len(updates)
        arrays = add_noise(arrays, compute_stdv(self.noise_multiplier, self.clipping_norm, len(updates)))
        if self.accountant is not None:
            self.accountant.compose(GaussianPrivacyEvent(self.noise_multiplier, len(updates),
                                                         self.accountant.config.population_size))
            self.record.model_epsilon = self.accountant.get_privacy_spent().epsilon
        return arrays, metrics


class ServerSideFixedClipping(FixedClipping, DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side fixed clipping, clipping the updates a SpikeFed round aggregates."""

    def __repr__(self) -> str:
        return f"ServerSideFixedClipping({self.strategy!r})"


class ClientSideFixedClipping(FixedClipping, DifferentialPrivacyClientSideFixedClipping):
    """Flower's client-side fixed clipping: SpikeFed's ClientApp clips what it keeps or sends."""

    CLIENT_SIDE = True

    def __repr__(self) -> str:
        return f"ClientSideFixedClipping({self.strategy!r})"


def wrap(strategy: SelectionStrategy, cfg: RunConfig) -> SelectionStrategy | FixedClipping:
    """``strategy`` inside the DP wrapper the run config asks for (none when dp-noise-multiplier is 0)."""
    if cfg.dp_noise_multiplier == 0:
        return strategy
    accountant = RdpAccountant(PrivacyConfig(target_delta=cfg.dp_delta, population_size=cfg.num_partitions,
                                             neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                             sampling_method=SamplingMethod.NO_AMPLIFICATION))
    side = ClientSideFixedClipping if cfg.dp_clipping == "client" else ServerSideFixedClipping
    return side(strategy, cfg.dp_noise_multiplier, cfg.dp_clipping_norm, accountant=accountant)
