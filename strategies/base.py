"""The base of every SpikeFed strategy: Flower's FedAvg with client choice as a hook.

Flower's FedAvg samples with the global ``random`` module over node ids that differ
from run to run. Here each node is known by its client (partition) id, found once at
start, so a strategy chooses among clients with a seeded generator and a run repeats
exactly. Every train reply passes :func:`strategies.validation.check_train_reply`
before a strategy scores or aggregates it; rejections are logged and counted by reason.
The strategy's state (:attr:`SelectionStrategy.STATE`) goes into each round's checkpoint.

A strategy with :attr:`SelectionStrategy.TWO_PHASE` runs each round in two phases: the
clients it selected train and reply with their metrics only (the train config carries
``two-phase = true``; the ClientApp keeps the trained weights in its node state), then
the server asks the ones :meth:`SelectionStrategy.choose_aggregated` picked for their
weights with a ``train.upload`` message. Bytes sent and received (the serialised
content of every message) and the clients' energy estimates are counted per round.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from logging import ERROR, INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.common.serde import recorddict_to_proto
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from clients import faults
from server.config import RunConfig
from strategies.validation import Rejection, check_statistics_reply, check_train_reply

UPLOAD = f"{MessageType.TRAIN}.upload"  # second phase: a chosen client sends the weights it kept
TWO_PHASE_KEY = "two-phase"  # train-config key: reply with metrics only, keep the weights
ENERGY_KEYS = ("energy-snn", "energy-ann")  # joules a client estimates for its local work


def message_bytes(messages: Iterable[Message]) -> int:
    """Bytes of the ``messages``' content as Flower serialises it for the wire (protobuf);
    a content shared by several messages (a broadcast) is serialised once and counted each time."""
    sizes: dict[int, int] = {}
    total = 0
    for msg in messages:
        if msg.has_error():
            continue
        key = id(msg.content)
        if key not in sizes:
            sizes[key] = recorddict_to_proto(msg.content).ByteSize()
        total += sizes[key]
    return total


def firing_metrics(prefix: str, rates: dict[str, list[float]]) -> dict[str, list[float]]:
    """Metric entries ``<prefix><depth>/<layer>``: records travel with sorted keys, so the
    two-digit depth keeps the layers' order (the last is the output layer)."""
    return {f"{prefix}{i:02d}/{name}": rates[name] for i, name in enumerate(rates)}


def reply_metrics(msg: Message) -> MetricRecord:
    """A validated train reply's MetricRecord (``content.metric_records`` would copy every
    record into a new dict on each call: slow over thousands of replies)."""
    return next(record for record in msg.content.values() if isinstance(record, MetricRecord))


@dataclass(frozen=True)
class ClientInfo:
    """What the server knows about a SuperNode: its partition id and data size."""

    node_id: int
    partition_id: int
    num_examples: int


@dataclass
class RoundRecord:
    """What a strategy did in one round, for the results table."""

    selected: list[ClientInfo] = field(default_factory=list)
    scores: dict[int, float] = field(default_factory=dict)  # partition id -> the score a rule ranked by
    rejected: dict[int, Rejection] = field(default_factory=dict)  # partition id -> why not aggregated
    injected: dict[int, str] = field(default_factory=dict)  # partition id -> fault injected
    client_updates: int = 0  # train replies received (a client trained), aggregated or not
    model_updated: bool = True  # False: too few valid replies, the global model stayed as it was
    uplink_bytes: int = 0  # clients -> server, every message of the round
    downlink_bytes: int = 0  # server -> clients
    energy: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ENERGY_KEYS, 0.0))  # of valid replies
    train_metrics: MetricRecord | None = None
    evaluate_metrics: MetricRecord | None = None


@dataclass(frozen=True)
class Reliability:
    """How long a round waits, how few valid replies it aggregates, which faults it injects."""

    round_timeout: float = 3600.0
    min_valid_replies: int = 1
    fault_crash: float = 0.0
    fault_straggle: float = 0.0
    fault_corrupt: float = 0.0

    @classmethod
    def from_config(cls, cfg: RunConfig) -> Reliability:
        return cls(cfg.round_timeout, cfg.min_valid_replies, cfg.fault_crash, cfg.fault_straggle,
                   cfg.fault_corrupt)

    @property
    def injects_faults(self) -> bool:
        return self.fault_crash + self.fault_straggle + self.fault_corrupt > 0


def summarise_train_metrics(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    """Flower's weighted average of the replies' metrics, with each firing-rate list
    reduced to its mean (the full lists stay in the replies for the strategies)."""
    averaged = aggregate_metricrecords(records, weighting_key)
    return MetricRecord({k: float(np.mean(v)) if isinstance(v, list) else v for k, v in averaged.items()})


class SelectionStrategy(FedAvg):
    """FedAvg whose training cohort comes from :meth:`select`.

    Parameters
    ----------
    clients : dict[int, ClientInfo]
        The federation's nodes by node id, found at start.
    clients_per_round : int
        How many clients train each round.
    seed : int
        Seed of the selection; the same seed selects the same clients.
    fraction_evaluate : float
        Fraction of clients for federated evaluation (0 = off), as in FedAvg.
    reliability : Reliability
        Round timeout, fewest valid replies to aggregate, faults to inject (default: none).
    """

    STATE: tuple[str, ...] = ()  # attributes that carry learned state across rounds (checkpointed)
    TWO_PHASE = False  # True: selected clients reply with statistics; the chosen upload weights after

    @classmethod
    def from_config(cls, cfg: RunConfig, clients: dict[int, ClientInfo]) -> SelectionStrategy:
        """Build the strategy from the run config (strategies with keys of their own override this)."""
        return cls(clients, cfg.clients_per_round, cfg.seed, cfg.fraction_evaluate)

    def __init__(self, clients: dict[int, ClientInfo], clients_per_round: int, seed: int,
                 fraction_evaluate: float = 0.0, reliability: Reliability | None = None) -> None:
        super().__init__(
            fraction_train=clients_per_round / len(clients),
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=clients_per_round,
            min_evaluate_nodes=1 if fraction_evaluate > 0 else 0,
            min_available_nodes=len(clients),
            train_metrics_aggr_fn=summarise_train_metrics,
        )
        self.clients = clients
        self.clients_per_round = clients_per_round
        self.seed = seed
        self.reliability = reliability or Reliability()
        self.round_offset = 0  # rounds done before a resume: Flower counts from 1 again
        self.record = RoundRecord()
        self._sent: list[ClientInfo] = []
        self._global_arrays: ArrayRecord | None = None
        self._config: ConfigRecord | None = None
        self._grid: Grid | None = None

    def state_dict(self) -> dict:
        """The learned state (:attr:`STATE`), for the checkpoint."""
        return {name: getattr(self, name) for name in self.STATE}

    def load_state_dict(self, state: dict, completed_rounds: int) -> None:
        """Continue after ``completed_rounds`` rounds with ``state`` from a checkpoint."""
        for name in self.STATE:
            setattr(self, name, state[name])
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

    def sample(self, rng: np.random.Generator, candidates: list[ClientInfo], size: int,
               weights: list[float] | None = None) -> list[ClientInfo]:
        """``size`` candidates without replacement (uniform, or proportional to ``weights``)."""
        p = None if weights is None else np.asarray(weights, dtype=float) / np.sum(weights)
        picked = rng.choice(len(candidates), size=size, replace=False, p=p)
        return [candidates[i] for i in sorted(picked)]

    def query(self, chosen: list[ClientInfo]) -> dict[int, MetricRecord]:
        """Send the current global model to ``chosen`` as `query` messages; their
        statistics on it (e.g. local loss), by partition id. Failed replies are logged."""
        messages = self._messages(self._global_arrays, self._config, chosen, MessageType.QUERY)
        out = {}
        for reply in self.exchange(messages):
            client = self.clients[reply.metadata.src_node_id]
            if reply.has_error():
                log(WARNING, "client %d did not answer the query: %s", client.partition_id,
                    reply.error.reason)
            else:
                out[client.partition_id] = reply.content["info"]
                self.add_energy(out[client.partition_id])
        return out

    def exchange(self, messages: Iterable[Message]) -> list[Message]:
        """Send ``messages`` and wait for the replies (up to the round timeout), counting bytes."""
        messages = list(messages)
        self.record.downlink_bytes += message_bytes(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=self.reliability.round_timeout))
        self.record.uplink_bytes += message_bytes(replies)
        return replies

    def add_energy(self, metrics: Mapping[str, Any]) -> None:
        for key in ENERGY_KEYS:
            value = metrics.get(key, 0.0)
            if isinstance(value, (int, float)) and np.isfinite(value):
                self.record.energy[key] += float(value)

    def available(self, grid: Grid) -> list[ClientInfo]:
        """Known clients whose nodes are connected, in partition-id order."""
        connected = set(grid.get_node_ids())
        return sorted((c for n, c in self.clients.items() if n in connected),
                      key=lambda c: c.partition_id)

    def select(self, server_round: int, candidates: list[ClientInfo]) -> list[ClientInfo]:
        """The clients that train in ``server_round``. Override this hook."""
        raise NotImplementedError

    def _messages(self, arrays: ArrayRecord, config: ConfigRecord, chosen: list[ClientInfo],
                  message_type: str, injected: dict[int, str] | None = None) -> Iterable[Message]:
        if not injected:
            record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
            return self._construct_messages(record, [c.node_id for c in chosen], message_type)
        # one config per client: each learns its own fault
        return [msg for c in chosen for msg in self._construct_messages(
            RecordDict({self.arrayrecord_key: arrays,
                        self.configrecord_key: ConfigRecord({**config, faults.FAULT_KEY: injected.get(c.partition_id, "")})}),
            [c.node_id], message_type)]

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        server_round += self.round_offset
        self.record = RoundRecord()
        config["server-round"] = server_round
        self._global_arrays, self._config, self._grid = arrays, config, grid
        self._sent = self.select(server_round, self.available(grid))
        log(INFO, "configure_train: clients %s", [c.partition_id for c in self._sent])
        r = self.reliability
        if r.injects_faults:
            self.record.injected = faults.assign(self.round_rng(server_round, "faults"),
                                                 [c.partition_id for c in self._sent],
                                                 r.fault_crash, r.fault_straggle, r.fault_corrupt)
            log(INFO, "injected faults: %s", self.record.injected)
        if self.TWO_PHASE:
            config = ConfigRecord({**config, TWO_PHASE_KEY: True})
        messages = list(self._messages(arrays, config, self._sent, MessageType.TRAIN, self.record.injected))
        self.record.downlink_bytes += message_bytes(messages)
        return messages

    def reject(self, client: ClientInfo, rejection: Rejection) -> None:
        self.record.rejected[client.partition_id] = rejection
        log(WARNING, "client %d (node %d) rejected (%s): %s", client.partition_id, client.node_id, *rejection)

    def valid_train_replies(self, replies: Iterable[Message], expected: list[ClientInfo],
                            weights: bool = True) -> list[Message]:
        """Replies that arrived in time, without error, and pass :func:`check_train_reply`
        (or :func:`check_statistics_reply` when they carry no ``weights``), in partition
        order; the others, and ``expected`` clients that did not reply, are recorded with
        their reason."""
        valid = []
        replied = set()
        for msg in sorted(replies, key=lambda m: self.clients[m.metadata.src_node_id].partition_id):
            client = self.clients[msg.metadata.src_node_id]
            replied.add(client.node_id)
            if msg.has_error():
                rejection = Rejection("error", msg.error.reason)
            elif weights:
                rejection = check_train_reply(msg.content, self._global_arrays)
            else:
                rejection = check_statistics_reply(msg.content)
            if rejection is None:
                valid.append(msg)
            else:
                self.reject(client, rejection)
        for client in expected:
            if client.node_id not in replied:
                self.reject(client, Rejection("timeout", f"no reply within {self.reliability.round_timeout:g} s"))
        return valid

    def collect_uploads(self, server_round: int, chosen: list[Message]) -> list[Message]:
        """Second phase: ask the clients of ``chosen`` (first-phase replies) for the weights
        they kept; their valid uploads. A client that fails now costs only its own update."""
        clients = [self.clients[m.metadata.src_node_id] for m in chosen]
        record = RecordDict({self.configrecord_key: ConfigRecord({"server-round": server_round})})
        replies = self.exchange(self._construct_messages(record, [c.node_id for c in clients], UPLOAD))
        return self.valid_train_replies(replies, clients)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the valid replies (sorted, so the weighted sum is reproducible); with
        fewer than ``min_valid_replies`` of them the global model stays as it was."""
        server_round += self.round_offset
        replies = list(replies)
        self.record.client_updates = len(replies)
        self.record.uplink_bytes += message_bytes(replies)
        trained = self.valid_train_replies(replies, self._sent, weights=not self.TWO_PHASE)
        for msg in trained:
            self.add_energy(reply_metrics(msg))
        valid = self.choose_aggregated(server_round, trained)
        if self.TWO_PHASE and valid:
            valid = self.collect_uploads(server_round, valid)
        if len(valid) < self.reliability.min_valid_replies:
            log(WARNING, "round %d: %d valid replies, fewer than min-valid-replies=%d: the global "
                "model stays as it was", server_round, len(valid), self.reliability.min_valid_replies)
            self.record.model_updated = False
            return None, None
        self.record.selected = [self.clients[m.metadata.src_node_id] for m in valid]
        arrays, metrics = super().aggregate_train(server_round, valid)
        self.record.train_metrics = metrics
        # FedAvg's weighted mean turns integer buffers (BatchNorm's step count) into floats
        reference = self._global_arrays.to_torch_state_dict()
        arrays = ArrayRecord({k: v.to(reference[k].dtype) for k, v in arrays.to_torch_state_dict().items()})
        return arrays, metrics

    def has_statistics(self, msg: Message, keys: Iterable[str], metrics: Mapping[str, Any] | None = None) -> bool:
        """Whether a reply (whose ``metrics`` may be passed) carries a metric starting with
        each of ``keys``; logs an error naming the first missing one (e.g. from a ClientApp
        that measures no firing rates)."""
        metrics = reply_metrics(msg) if metrics is None else metrics
        missing = [k for k in keys if not any(m.startswith(k) for m in metrics)]
        if missing:
            log(ERROR, "client %d's reply lacks the metric %r that %s needs; it is left out of "
                "the %s rule and not scored", self.clients[msg.metadata.src_node_id].partition_id, missing[0],
                type(self).__name__, type(self).__name__)
        return not missing

    def choose_aggregated(self, server_round: int, replies: list[Message]) -> list[Message]:
        """Which valid replies are aggregated: all of them, unless a strategy decides after training."""
        return replies

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        if self.fraction_evaluate == 0:
            return []
        server_round += self.round_offset
        candidates = self.available(grid)
        size = max(int(len(candidates) * self.fraction_evaluate), 1)
        chosen = self.sample(self.round_rng(server_round, "evaluate"), candidates, size)
        config["server-round"] = server_round
        messages = list(self._messages(arrays, config, chosen, MessageType.EVALUATE))
        self.record.downlink_bytes += message_bytes(messages)
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        server_round += self.round_offset
        ordered = sorted(replies, key=lambda m: self.clients[m.metadata.src_node_id].partition_id)
        self.record.uplink_bytes += message_bytes(ordered)
        self.record.evaluate_metrics = super().aggregate_evaluate(server_round, ordered)
        return self.record.evaluate_metrics
