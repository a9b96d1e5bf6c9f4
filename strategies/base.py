"""The base of every SpikeFed strategy: Flower's FedAvg with client choice as a hook.

A strategy is built and started like Flower's ``FedAvg`` (its keyword arguments, plus
its own) and works with any ClientApp that follows the protocol in ``core.protocol``.
Flower's FedAvg samples with the global ``random`` module; here a strategy chooses with a
generator seeded by (seed, round), over the clients in id order. A client's id is its
partition id when SpikeFed's discovery found the clients at start (``clients=``; a run then
repeats exactly), else its node id. The strategy's state (:attr:`SelectionStrategy.STATE`)
goes into each round's checkpoint. The round's messages, two-phase rounds and reply checks
are :mod:`strategies.messaging`'s; what a round did and cost, :mod:`strategies.accounting`'s.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from core.config import Key, RunConfig
from core.protocol import SERVER_ROUND, TWO_PHASE_KEY
from strategies.aggregators import Aggregation
from strategies.accounting import Observer, RoundRecord, recorded, summarise_train_metrics
from strategies.devices import Devices
from strategies.messaging import RoundMessaging
from strategies.settings import ClientInfo, Reliability, clients_per_round


class SelectionStrategy(RoundMessaging, FedAvg):
    """FedAvg whose training cohort comes from :meth:`select`.

    Parameters
    ----------
    fraction_train, fraction_evaluate, min_train_nodes, min_evaluate_nodes, min_available_nodes, **kwargs
        As Flower's ``FedAvg``: each round max(int(N x fraction_train), min_train_nodes) clients
        train, N the number of clients (known ones with ``clients``, else connected nodes).
    seed : int
        Seed of the selection; the same seed selects the same clients (by position in id order).
    clients : dict[int, ClientInfo] | None
        The federation's clients by node id, found by SpikeFed's discovery; None: clients are
        their node ids and Flower's ``min_available_nodes`` are awaited before round 1.
    reliability : Reliability
        Fewest valid replies to aggregate, faults to inject (default: none).
    observers : list of callables
        Each is called as ``observer(record, arrays)`` when a round is over, with the round's
        :class:`~strategies.accounting.RoundRecord` and the new global weights.
    devices : Devices | None
        The clients' devices (needs ``clients``): only online clients are chosen, and each
        round's record gets its simulated seconds (:mod:`strategies.devices`).
    aggregation : Aggregation | None
        The Flower strategy that aggregates the chosen updates (default: FedAvg with this
        one's ``weighted_by_key`` and metrics aggregation; :mod:`strategies.aggregators`).
    """

    KEYS: dict[str, Key] = {}  # run-config keys of this strategy, named PREFIX + its keyword argument
    PREFIX = ""
    STATE: tuple[str, ...] = ()  # attributes that carry learned state across rounds (checkpointed)
    two_phase = False  # True: selected clients reply with statistics; the chosen upload weights after

    @classmethod
    def from_config(cls, cfg: RunConfig, clients: dict[int, ClientInfo], buffers: Iterable[str] = ()
                    ) -> SelectionStrategy:
        """Build the strategy from SpikeFed's run config, discovered ``clients`` and the names
        of the model's ``buffers`` (which a server optimiser leaves to FedAvg)."""
        options = {key.removeprefix(cls.PREFIX).replace("-", "_"): cfg[key] for key in cls.KEYS}
        return cls(fraction_train=cfg.fraction_train, fraction_evaluate=cfg.fraction_evaluate,
                   min_train_nodes=cfg.min_train_nodes, min_evaluate_nodes=int(cfg.fraction_evaluate > 0),
                   min_available_nodes=len(clients), seed=cfg.seed, clients=clients,
                   reliability=Reliability.from_config(cfg),
                   devices=Devices.from_config(cfg, [c.partition_id for c in clients.values()]),
                   aggregation=Aggregation.from_config(cfg, buffers, train_metrics_aggr_fn=summarise_train_metrics),
                   **options)

    def __init__(self, fraction_train: float = 1.0, fraction_evaluate: float = 1.0, min_train_nodes: int = 2,
                 min_evaluate_nodes: int = 2, min_available_nodes: int = 2, *, seed: int = 0,
                 clients: dict[int, ClientInfo] | None = None, reliability: Reliability | None = None,
                 observers: Iterable[Observer] = (), devices: Devices | None = None,
                 aggregation: Aggregation | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("train_metrics_aggr_fn", summarise_train_metrics)
        super().__init__(fraction_train, fraction_evaluate, min_train_nodes, min_evaluate_nodes,
                         min_available_nodes, **kwargs)
        self.clients = clients
        self.seed = seed
        self.reliability = reliability or Reliability()
        self.observers = list(observers)
        if devices is not None and clients is None:
            raise ValueError("devices need the federation's clients (clients=...): a device belongs to a partition id")
        self.devices = devices
        self.aggregation = aggregation or Aggregation(weighted_by_key=self.weighted_by_key,
                                                      train_metrics_aggr_fn=self.train_metrics_aggr_fn)
        self.clients_per_round = self.wanted(len(clients)) if clients else min_train_nodes
        self.timeout = 3600.0  # start()'s
        self.round_offset = 0  # rounds done before a resume: Flower counts from 1 again
        self.record = RoundRecord()
        self._sizes: dict[int, int] = {}  # without discovery: node id -> num-examples last reported
        self._sent: list[ClientInfo] = []
        self._global_arrays: ArrayRecord | None = None
        self._config: ConfigRecord | None = None
        self._grid: Grid | None = None

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, timeout: float = 3600,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None, **kwargs: Any):
        """Flower's ``Strategy.start``; ``timeout`` also bounds the second phase and queries.
        After each round the record goes to the :attr:`observers`."""
        self.timeout = timeout
        return super().start(grid, initial_arrays, num_rounds, timeout, evaluate_fn=recorded(self, evaluate_fn),
                             **kwargs)

    def wanted(self, num_clients: int) -> int:
        return clients_per_round(num_clients, self.fraction_train, self.min_train_nodes)

    def state_dict(self) -> dict:
        """The learned state (:attr:`STATE`, and the aggregator's), for the checkpoint."""
        return {**{name: getattr(self, name) for name in self.STATE}, "aggregation": self.aggregation.state_dict()}

    def load_state_dict(self, state: dict, completed_rounds: int) -> None:
        """Continue after ``completed_rounds`` rounds with ``state`` from a checkpoint."""
        for name in self.STATE:
            setattr(self, name, state[name])
        self.aggregation.load_state_dict(state.get("aggregation", {}))
        self.round_offset = completed_rounds

    def round_rng(self, server_round: int, purpose: str = "train") -> np.random.Generator:
        """A generator that depends only on the seed, the round and the purpose."""
        return np.random.default_rng([self.seed, server_round, zlib.crc32(purpose.encode())])

    def cohort_size(self, candidates: list[ClientInfo], wanted: int | None = None) -> int:
        """``wanted`` (default clients_per_round), or all candidates when fewer are connected."""
        wanted = self.clients_per_round if wanted is None else wanted
        if len(candidates) < wanted:
            log(WARNING, "only %d clients connected, fewer than the %d wanted: using all",
                len(candidates), wanted)
        return min(wanted, len(candidates))

    def random_candidates(self, server_round: int, candidates: list[ClientInfo], factor: float) -> list[ClientInfo]:
        """m = max(k, ceil(factor x k)) candidates drawn uniformly (all of them when fewer are connected)."""
        wanted = max(self.clients_per_round, math.ceil(factor * self.clients_per_round))
        return self.sample(self.round_rng(server_round), candidates, self.cohort_size(candidates, wanted))

    def sample(self, rng: np.random.Generator, candidates: list[ClientInfo], size: int,
               weights: list[float] | None = None) -> list[ClientInfo]:
        """``size`` candidates without replacement (uniform, or proportional to ``weights``)."""
        p = None if weights is None else np.asarray(weights, dtype=float) / np.sum(weights)
        picked = rng.choice(len(candidates), size=size, replace=False, p=p)
        return [candidates[i] for i in sorted(picked)]

    def client(self, node_id: int) -> ClientInfo:
        """The client on ``node_id``."""
        if self.clients is not None:
            return self.clients[node_id]
        return ClientInfo(node_id, node_id, self._sizes.get(node_id, 1))

    def select(self, server_round: int, candidates: list[ClientInfo]) -> list[ClientInfo]:
        """The clients that train in ``server_round``. Override this hook."""
        raise NotImplementedError

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        server_round += self.round_offset
        self.record = RoundRecord(server_round, sim_seconds=0.0 if self.devices else None)  # a round may send nothing
        config[SERVER_ROUND] = server_round
        self.aggregation.configure(server_round, arrays, config, grid)
        self._global_arrays, self._config, self._grid = arrays, config, grid
        candidates = self.available(grid)
        self.clients_per_round = self.wanted(len(self.clients) if self.clients is not None else len(candidates))
        self._sent = self.select(server_round, candidates)
        log(INFO, "configure_train: clients %s", [c.partition_id for c in self._sent])
        self.inject_faults(server_round)
        if self.two_phase:
            config = ConfigRecord({**config, TWO_PHASE_KEY: True})
        messages = list(self._messages(arrays, config, self._sent, MessageType.TRAIN, self.record.injected))
        self.record.sent(messages)
        self._train_messages = messages  # Flower's start() sends them; their ids are set then
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the valid replies (sorted, so the weighted sum is reproducible); with
        fewer than ``min_valid_replies`` of them the global model stays as it was."""
        return self.aggregate_updates(server_round, self.collect_updates(server_round, replies))

    def aggregate_updates(self, server_round: int, updates: list[Message]
                          ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg over ``updates`` (:meth:`collect_updates`), or None when fewer than ``min_valid_replies``."""
        server_round += self.round_offset
        if len(updates) < self.reliability.min_valid_replies:
            log(WARNING, "round %d: %d valid replies, fewer than min-valid-replies=%d: the global "
                "model stays as it was", server_round, len(updates), self.reliability.min_valid_replies)
            self.record.model_updated = False
            return None, None
        self.record.selected = [self.client(m.metadata.src_node_id) for m in updates]
        arrays, metrics = self.aggregation.aggregate(server_round, updates, self._global_arrays)
        self.record.train_metrics = metrics
        return arrays, metrics

    def choose_aggregated(self, server_round: int, replies: list[Message]) -> list[Message]:
        """Which valid replies are aggregated: all of them, unless a strategy decides after training."""
        return replies
