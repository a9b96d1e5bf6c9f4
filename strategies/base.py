"""The base of every SpikeFed strategy: Flower's FedAvg with client choice as a hook.

A strategy is built and started like Flower's ``FedAvg`` (its keyword arguments, plus
its own) and works with any ClientApp that follows the protocol in ``core.protocol``.
Flower's FedAvg samples with the global ``random`` module; here a strategy chooses with a
generator seeded by (seed, round), over the clients in id order. A client's id is its
partition id when SpikeFed's discovery found the clients at start (``clients=``; a run then
repeats exactly), else its node id. Every train reply passes
:func:`core.validation.check_train_reply` before a strategy scores or aggregates it;
rejections are logged and counted by reason. The strategy's state
(:attr:`SelectionStrategy.STATE`) goes into each round's checkpoint.

A strategy with :attr:`SelectionStrategy.two_phase` runs each round in two phases: the
clients it selected train and reply with their metrics only (the train config carries
``two-phase = true``; the ClientApp keeps the trained weights in its node state), then
the server asks the ones :meth:`SelectionStrategy.choose_aggregated` picked for their
weights with a ``train.upload`` message and tells the others to drop theirs
(``train.discard``), in one exchange. Bytes sent and received (the serialised content of
every message) and the clients' energy estimates are counted per round.

A client whose message was not answered in time (a straggler) is busy until its late reply
arrives: it is not asked again before (its late reply would write back a node state older
than the new message's, and Flower runs a node's messages independently).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.common.serde import recorddict_to_proto
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords, sample_nodes

from core import faults
from core.config import ConfigError, Key, RunConfig, above, at_least, check_range, choice, share
from core.protocol import (COMPUTE_SECONDS, DISCARD, ENERGY_KEYS, EXECUTOR, FAULT_KEY, NUM_EXAMPLES, SERVER_ROUND,
                           TWO_PHASE_KEY, UPLOAD)
from core.validation import Rejection, check_statistics_reply, check_train_reply

# Run-config keys every strategy reads (each strategy declares its own in its KEYS).
KEYS = {
    "fraction-train": above(0.25, 0, 1, meaning="share of clients trained per round, in (0, 1]"),
    "min-train-nodes": at_least(2, 1, meaning="at least this many clients per round (<= `num-partitions`)"),
    "fraction-evaluate": at_least(0.0, 0, 1, meaning="share of clients for federated evaluation (0 = off)"),
    "round-timeout": above(600.0, 0, meaning=(
        "seconds a round waits for train (and query, evaluate) replies; later ones count as `timeout`")),
    "min-valid-replies": at_least(1, 1, meaning=(
        "fewest valid replies a round aggregates; with fewer the global model stays as it was")),
    "fault-crash": share(0.0, meaning=(
        "share of each round's selected clients whose ClientApp raises (fault injection)")),
    "fault-straggle": share(0.0, meaning="share that sleeps past `round-timeout`"),
    "fault-corrupt": share(0.0, meaning=(
        "share that returns a corrupted reply (NaN/Inf weights, wrong shape or dtype, missing array, firing rate > 1,"
        " num-examples 0)")),
    # Flower's fixed-clipping DP around any strategy (strategies/privacy.py); 0: off
    "dp-noise-multiplier": at_least(0.0, 0, meaning=(
        "Flower's fixed-clipping DP of the model updates around any strategy ([privacy.md](privacy.md)): std of the "
        "Gaussian noise on the aggregate, as a multiple of `dp-clipping-norm` / n (n = the number aggregated); 0 = "
        "off")),
    "dp-clipping-norm": above(1.0, 0, meaning=(
        "L2 norm each aggregated update is clipped to (`dp-noise-multiplier` > 0)")),
    "dp-clipping": choice("server", ("server", "client"), meaning=(
        "where updates are clipped: `server` (Flower's server-side fixed clipping) or `client` (its client-side "
        "wrapper and clipping mod, SFedCA's uploads included)")),
    "dp-delta": above(1e-5, 0, 0.1, meaning=(
        "delta at which Flower's RDP accountant reports the model's epsilon (`dp_model_epsilon` in `rounds.csv`)")),
}


def clients_per_round(num_clients: int, fraction_train: float, min_train_nodes: int) -> int:
    """Flower's FedAvg rule: max(int(fraction x N), minimum)."""
    return max(int(num_clients * fraction_train), min_train_nodes)


def check(cfg: RunConfig) -> None:
    """The strategy keys that depend on each other or on the federation's size."""
    check_range("min-valid-replies", cfg.min_valid_replies, 1,
                clients_per_round(cfg.num_partitions, cfg.fraction_train, cfg.min_train_nodes))
    faulty = cfg.fault_crash + cfg.fault_straggle + cfg.fault_corrupt
    if faulty > 1:
        raise ConfigError(f"fault-crash + fault-straggle + fault-corrupt = {faulty:g} is more than every "
                          "selected client; accepted: a sum in [0, 1]")
    if cfg.min_train_nodes > cfg.num_partitions:
        raise ConfigError(f"min-train-nodes={cfg.min_train_nodes} is more clients per round than "
                          f"num-partitions={cfg.num_partitions}; accepted: 1..{cfg.num_partitions}")


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


def reply_metrics(msg: Message) -> MetricRecord:
    """A validated train reply's MetricRecord (``content.metric_records`` would copy every
    record into a new dict on each call: slow over thousands of replies)."""
    return next(record for record in msg.content.values() if isinstance(record, MetricRecord))


@dataclass(frozen=True)
class ClientInfo:
    """What the server knows about a SuperNode: its client id (the partition id with
    SpikeFed's discovery, else the node id) and its data size (without discovery: from
    its last reply, 1 before)."""

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
    compute_seconds: float = 0.0  # the clients' own timing of their local work, valid replies summed
    executors: dict[int, str] = field(default_factory=dict)  # partition id -> "host/device" its update ran on
    statistics_epsilon: float | None = None  # SFedCA under local DP: the largest epsilon a client has spent
    model_epsilon: float | None = None  # under a DP wrapper: the epsilon the model releases have spent
    train_metrics: MetricRecord | None = None
    evaluate_metrics: MetricRecord | None = None


@dataclass(frozen=True)
class Reliability:
    """How few valid replies a round aggregates, which faults it injects (SpikeFed's tests)."""

    min_valid_replies: int = 1
    fault_crash: float = 0.0
    fault_straggle: float = 0.0
    fault_corrupt: float = 0.0

    @classmethod
    def from_config(cls, cfg: RunConfig) -> Reliability:
        return cls(cfg.min_valid_replies, cfg.fault_crash, cfg.fault_straggle, cfg.fault_corrupt)

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
    """

    KEYS: dict[str, Key] = {}  # run-config keys of this strategy, named PREFIX + its keyword argument
    PREFIX = ""
    STATE: tuple[str, ...] = ()  # attributes that carry learned state across rounds (checkpointed)
    two_phase = False  # True: selected clients reply with statistics; the chosen upload weights after

    @classmethod
    def from_config(cls, cfg: RunConfig, clients: dict[int, ClientInfo]) -> SelectionStrategy:
        """Build the strategy from SpikeFed's run config and discovered ``clients``."""
        options = {key.removeprefix(cls.PREFIX).replace("-", "_"): cfg[key] for key in cls.KEYS}
        return cls(fraction_train=cfg.fraction_train, fraction_evaluate=cfg.fraction_evaluate,
                   min_train_nodes=cfg.min_train_nodes, min_evaluate_nodes=int(cfg.fraction_evaluate > 0),
                   min_available_nodes=len(clients), seed=cfg.seed, clients=clients,
                   reliability=Reliability.from_config(cfg), **options)

    def __init__(self, fraction_train: float = 1.0, fraction_evaluate: float = 1.0, min_train_nodes: int = 2,
                 min_evaluate_nodes: int = 2, min_available_nodes: int = 2, *, seed: int = 0,
                 clients: dict[int, ClientInfo] | None = None, reliability: Reliability | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("train_metrics_aggr_fn", summarise_train_metrics)
        super().__init__(fraction_train, fraction_evaluate, min_train_nodes, min_evaluate_nodes,
                         min_available_nodes, **kwargs)
        self.clients = clients
        self.seed = seed
        self.reliability = reliability or Reliability()
        self.clients_per_round = self.wanted(len(clients)) if clients else min_train_nodes
        self.timeout = 3600.0  # start()'s
        self.round_offset = 0  # rounds done before a resume: Flower counts from 1 again
        self.record = RoundRecord()
        self._sizes: dict[int, int] = {}  # without discovery: node id -> num-examples last reported
        self._said: set[str] = set()
        self._sent: list[ClientInfo] = []
        self._train_messages: list[Message] = []
        self._unanswered: dict[str, Message] = {}  # message id -> a sent message not answered in time
        self._discards = True  # False once a ClientApp has failed a train.discard
        self._global_arrays: ArrayRecord | None = None
        self._config: ConfigRecord | None = None
        self._grid: Grid | None = None

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, timeout: float = 3600,
              **kwargs: Any):
        """Flower's ``Strategy.start``; ``timeout`` also bounds the second phase and queries."""
        self.timeout = timeout
        return super().start(grid, initial_arrays, num_rounds, timeout, **kwargs)

    def wanted(self, num_clients: int) -> int:
        return clients_per_round(num_clients, self.fraction_train, self.min_train_nodes)

    def state_dict(self) -> dict:
        """The learned state (:attr:`STATE`), for the checkpoint."""
        return {name: getattr(self, name) for name in self.STATE}

    def load_state_dict(self, state: dict, completed_rounds: int) -> None:
        """Continue after ``completed_rounds`` rounds with ``state`` from a checkpoint."""
        for name in self.STATE:
            setattr(self, name, state[name])
        self.round_offset = completed_rounds

    def say_once(self, topic: str, message: str, *args: Any) -> None:
        """Log a WARNING the first time ``topic`` comes up (e.g. a statistic missing from every reply)."""
        if topic not in self._said:
            self._said.add(topic)
            log(WARNING, "%s: " + message, type(self).__name__, *args)

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

    def client(self, node_id: int) -> ClientInfo:
        """The client on ``node_id``."""
        if self.clients is not None:
            return self.clients[node_id]
        return ClientInfo(node_id, node_id, self._sizes.get(node_id, 1))

    def available(self, grid: Grid) -> list[ClientInfo]:
        """Known clients whose nodes are connected and not busy (:meth:`busy_nodes`; without
        discovery: every connected node, once ``min_available_nodes`` are), in client-id order."""
        busy = self.busy_nodes(grid)
        if self.clients is None:
            _, connected = sample_nodes(grid, self.min_available_nodes, 0)  # waits for them
            return [self.client(n) for n in sorted(connected) if n not in busy]
        connected = set(grid.get_node_ids()) - busy
        return sorted((c for n, c in self.clients.items() if n in connected), key=lambda c: c.partition_id)

    def busy_nodes(self, grid: Grid) -> set[int]:
        """Nodes still working on a message that was not answered in time: late replies that
        have arrived are pulled (and dropped: the round they belong to is over), messages past
        their TTL are forgotten."""
        if self._unanswered:
            for reply in grid.pull_messages(list(self._unanswered)):
                self._unanswered.pop(reply.metadata.reply_to_message_id, None)
            now = time.time()
            self._unanswered = {i: m for i, m in self._unanswered.items()
                                if m.metadata.created_at + m.metadata.ttl > now}
        busy = {m.metadata.dst_node_id for m in self._unanswered.values()}
        if busy:
            log(INFO, "%d clients still busy with an unanswered message: not asked now", len(busy))
        return busy

    def note_unanswered(self, sent: Iterable[Message], replies: Iterable[Message]) -> None:
        """Remember the messages of ``sent`` that ``replies`` do not answer."""
        answered = {r.metadata.reply_to_message_id for r in replies}
        self._unanswered.update({m.metadata.message_id: m for m in sent if m.metadata.message_id not in answered})

    def query(self, chosen: list[ClientInfo], **config: Any) -> dict[int, MetricRecord]:
        """Send the current global model to ``chosen`` as `query` messages (the round's
        config plus ``config``); their statistics on it (e.g. local loss), by client id.
        Failed replies are logged."""
        messages = self._messages(self._global_arrays, ConfigRecord({**self._config, **config}), chosen,
                                  MessageType.QUERY)
        out = {}
        for reply in self.exchange(messages):
            client = self.client(reply.metadata.src_node_id)
            if reply.has_error() or "info" not in reply.content.metric_records:
                reason = reply.error.reason if reply.has_error() else "no MetricRecord 'info' in the reply"
                self.say_once("query", "a client did not answer the query (%s); see docs/protocol.md", reason)
                log(INFO, "client %d did not answer the query", client.partition_id)
            else:
                out[client.partition_id] = reply.content["info"]
                self.add_costs(out[client.partition_id])
        return out

    def exchange(self, messages: Iterable[Message]) -> list[Message]:
        """Send ``messages`` and wait for the replies (up to the timeout), counting bytes."""
        messages = list(messages)
        self.record.downlink_bytes += message_bytes(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=self.timeout))
        self.record.uplink_bytes += message_bytes(replies)
        self.note_unanswered(messages, replies)
        return replies

    def add_costs(self, metrics: Mapping[str, Any]) -> None:
        """Add a reply's energy estimates and compute seconds to the round's (0 when absent or not finite)."""
        def finite(key: str) -> float:
            value = metrics.get(key, 0.0)
            return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else 0.0

        for key in ENERGY_KEYS:
            self.record.energy[key] += finite(key)
        self.record.compute_seconds += finite(COMPUTE_SECONDS)

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
                        self.configrecord_key: ConfigRecord({**config, FAULT_KEY: injected.get(c.partition_id, "")})}),
            [c.node_id], message_type)]

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        server_round += self.round_offset
        self.record = RoundRecord()
        config[SERVER_ROUND] = server_round
        self._global_arrays, self._config, self._grid = arrays, config, grid
        candidates = self.available(grid)
        self.clients_per_round = self.wanted(len(self.clients) if self.clients is not None else len(candidates))
        self._sent = self.select(server_round, candidates)
        log(INFO, "configure_train: clients %s", [c.partition_id for c in self._sent])
        r = self.reliability
        if r.injects_faults:
            self.record.injected = faults.assign(self.round_rng(server_round, "faults"),
                                                 [c.partition_id for c in self._sent],
                                                 r.fault_crash, r.fault_straggle, r.fault_corrupt)
            log(INFO, "injected faults: %s", self.record.injected)
        if self.two_phase:
            config = ConfigRecord({**config, TWO_PHASE_KEY: True})
        messages = list(self._messages(arrays, config, self._sent, MessageType.TRAIN, self.record.injected))
        self.record.downlink_bytes += message_bytes(messages)
        self._train_messages = messages  # Flower's start() sends them; their ids are set then
        return messages

    def reject(self, client: ClientInfo, rejection: Rejection) -> None:
        self.record.rejected[client.partition_id] = rejection
        log(WARNING, "client %d (node %d) rejected (%s): %s", client.partition_id, client.node_id, *rejection)

    def valid_train_replies(self, replies: Iterable[Message], expected: list[ClientInfo],
                            weights: bool | None = True) -> list[Message]:
        """Replies that arrived in time, without error, and pass :func:`check_train_reply`
        (``weights``), :func:`check_statistics_reply` (not ``weights``) or whichever fits the
        reply (None), in client-id order; the others, and ``expected`` clients that did not
        reply, are recorded with their reason."""
        valid = []
        replied = set()
        for msg in sorted(replies, key=lambda m: self.client(m.metadata.src_node_id).partition_id):
            client = self.client(msg.metadata.src_node_id)
            replied.add(client.node_id)
            if msg.has_error():
                rejection = Rejection("error", msg.error.reason)
            elif weights or (weights is None and msg.content.array_records):
                rejection = check_train_reply(msg.content, self._global_arrays)
            else:
                rejection = check_statistics_reply(msg.content)
            if rejection is None:
                valid.append(msg)
                if self.clients is None:
                    self._sizes[client.node_id] = int(reply_metrics(msg)[NUM_EXAMPLES])
            else:
                self.reject(client, rejection)
        for client in expected:
            if client.node_id not in replied:
                self.reject(client, Rejection("timeout", f"no reply within {self.timeout:g} s"))
        return valid

    def collect_uploads(self, server_round: int, chosen: list[Message], others: list[Message]) -> list[Message]:
        """Second phase: ask the clients of ``chosen`` (first-phase replies) for the weights
        they kept, and tell those of ``others`` (not chosen) to drop theirs; the valid uploads.
        A client that fails now costs only its own update. A reply that already holds weights
        (a ClientApp that ignores ``two-phase``) is used as it is."""
        uploaded = [m for m in chosen if m.content.array_records]
        if uploaded:
            self.say_once("two-phase", "ClientApps replied with their weights in the first phase (they ignore "
                          "'%s', docs/protocol.md): those are aggregated without an upload phase", TWO_PHASE_KEY)
        clients = [self.client(m.metadata.src_node_id) for m in chosen if not m.content.array_records]
        dropping = [m.metadata.src_node_id for m in others if not m.content.array_records and self._discards]
        record = RecordDict({self.configrecord_key: ConfigRecord({SERVER_ROUND: server_round})})
        messages = [*self._construct_messages(record, [c.node_id for c in clients], UPLOAD),
                    *self._construct_messages(record, dropping, DISCARD)]
        if messages:
            replies = self.exchange(messages)
            uploads = [r for r in replies if r.metadata.message_type == UPLOAD]
            uploaded += self.valid_train_replies(uploads, clients)
            if any(r.has_error() for r in replies if r.metadata.message_type == DISCARD):
                self._discards = False
                self.say_once("discard", "a ClientApp did not answer '%s' (docs/protocol.md): candidates not chosen "
                              "keep their weights until they train again; not sent any more", DISCARD)
        return sorted(uploaded, key=lambda m: self.client(m.metadata.src_node_id).partition_id)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the valid replies (sorted, so the weighted sum is reproducible); with
        fewer than ``min_valid_replies`` of them the global model stays as it was."""
        return self.aggregate_updates(server_round, self.collect_updates(server_round, replies))

    def collect_updates(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        """The round's updates to aggregate: the valid train replies the strategy chooses
        (two phases: their uploads), in client-id order. A DP wrapper clips these."""
        server_round += self.round_offset
        replies = list(replies)
        self.record.client_updates = len(replies)
        self.record.uplink_bytes += message_bytes(replies)
        self.note_unanswered(self._train_messages, replies)
        trained = self.valid_train_replies(replies, self._sent, weights=None if self.two_phase else True)
        for msg in trained:
            self.add_costs(reply_metrics(msg))
            if EXECUTOR in msg.content.config_records:
                where = msg.content.config_records[EXECUTOR]
                self.record.executors[self.client(msg.metadata.src_node_id).partition_id] = \
                    f"{where.get('host', '?')}/{where.get('device', '?')}"
        valid = self.choose_aggregated(server_round, trained)
        if self.two_phase and trained:
            chosen = {id(m) for m in valid}
            valid = self.collect_uploads(server_round, valid, [m for m in trained if id(m) not in chosen])
        return valid

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
        arrays, metrics = super().aggregate_train(server_round, updates)
        self.record.train_metrics = metrics
        # FedAvg's weighted mean turns integer buffers (BatchNorm's step count) into floats
        reference = self._global_arrays.to_torch_state_dict()
        arrays = ArrayRecord({k: v.to(reference[k].dtype) for k, v in arrays.to_torch_state_dict().items()})
        return arrays, metrics

    def has_statistics(self, metrics: Mapping[str, Any], keys: Iterable[str], fallback: str) -> bool:
        """Whether a reply's ``metrics`` carry a metric starting with each of ``keys``; the
        first time one is missing, says so in one line with what the strategy does instead."""
        missing = [k for k in keys if not any(m.startswith(k) for m in metrics)]
        if missing:
            self.say_once(f"missing {missing[0]}", "client replies lack the metric %r (docs/protocol.md): %s",
                          missing[0], fallback)
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
        size = max(int(len(candidates) * self.fraction_evaluate), self.min_evaluate_nodes, 1)
        chosen = self.sample(self.round_rng(server_round, "evaluate"), candidates, min(size, len(candidates)))
        config[SERVER_ROUND] = server_round
        messages = list(self._messages(arrays, config, chosen, MessageType.EVALUATE))
        self.record.downlink_bytes += message_bytes(messages)
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        server_round += self.round_offset
        ordered = sorted(replies, key=lambda m: self.client(m.metadata.src_node_id).partition_id)
        self.record.uplink_bytes += message_bytes(ordered)
        self.record.evaluate_metrics = super().aggregate_evaluate(server_round, ordered)
        return self.record.evaluate_metrics
