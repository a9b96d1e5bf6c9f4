"""What a round did and cost, as a strategy counts it for rounds.csv: who was chosen and
rejected, the scores a rule ranked by, bytes on the wire (the serialised content of every
message, both ways), and the clients' energy estimates and compute seconds."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.common.serde import recorddict_to_proto
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from core.protocol import COMPUTE_SECONDS, ENERGY_KEYS

if TYPE_CHECKING:
    from core.validation import Rejection
    from strategies.base import ClientInfo, SelectionStrategy


def content_bytes(messages: Iterable[Message]) -> list[int]:
    """Bytes of each message's content as Flower serialises it for the wire (protobuf; 0 for
    an error reply); a content shared by several messages (a broadcast) is serialised once."""
    sizes: dict[int, int] = {}
    out = []
    for msg in messages:
        if msg.has_error():
            out.append(0)
            continue
        key = id(msg.content)
        if key not in sizes:
            sizes[key] = recorddict_to_proto(msg.content).ByteSize()
        out.append(sizes[key])
    return out


def message_bytes(messages: Iterable[Message]) -> int:
    """Bytes of the ``messages``' content on the wire, summed (:func:`content_bytes`)."""
    return sum(content_bytes(messages))


@dataclass
class RoundRecord:
    """What a strategy did in one round, handed to its observers when the round is over
    (:meth:`strategies.base.SelectionStrategy.start`): the results files, the checkpoint."""

    server_round: int = 0  # counted over the whole run (a resumed run continues the count)
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
    evaluate_metrics: MetricRecord | None = None  # federated evaluation (fraction-evaluate > 0)
    server_metrics: MetricRecord | None = None  # what the start()'s evaluate_fn returned for the new model
    eval_seconds: float = 0.0  # evaluate_fn's
    seconds: float = 0.0  # the whole round, from the end of the one before
    sim_seconds: float | None = None  # with devices: the round's critical path on them (strategies/devices.py)

    def sent(self, messages: Iterable[Message]) -> None:
        """Count the bytes of ``messages`` sent to the clients."""
        self.downlink_bytes += message_bytes(messages)

    def received(self, messages: Iterable[Message]) -> None:
        """Count the bytes of ``messages`` received from the clients."""
        self.uplink_bytes += message_bytes(messages)

    def add_costs(self, metrics: Mapping[str, Any]) -> None:
        """Add a reply's energy estimates and compute seconds to the round's (0 when absent or not finite)."""
        def finite(key: str) -> float:
            value = metrics.get(key, 0.0)
            return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else 0.0

        for key in ENERGY_KEYS:
            self.energy[key] += finite(key)
        self.compute_seconds += finite(COMPUTE_SECONDS)


def summarise_train_metrics(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    """Flower's weighted average of the replies' metrics, with each firing-rate list
    reduced to its mean (the full lists stay in the replies for the strategies)."""
    averaged = aggregate_metricrecords(records, weighting_key)
    return MetricRecord({k: float(np.mean(v)) if isinstance(v, list) else v for k, v in averaged.items()})


Observer = Callable[[RoundRecord, ArrayRecord], None]  # given each round's record and the new global weights


def recorded(strategy: SelectionStrategy, evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None
             ) -> Callable[[int, ArrayRecord], MetricRecord | None]:
    """``evaluate_fn`` (Flower calls it after each round, and on the initial model as round
    0), timed; after a round, ``strategy.record`` gets its outcome and goes to the
    strategy's observers."""
    last = time.perf_counter()

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        nonlocal last
        started = time.perf_counter()
        metrics = evaluate_fn(server_round, arrays) if evaluate_fn is not None else None
        if server_round > 0:
            record = strategy.record
            record.server_metrics, record.eval_seconds = metrics, time.perf_counter() - started
            record.seconds = time.perf_counter() - last
            for observe in strategy.observers:
                observe(record, arrays)
        last = time.perf_counter()
        return metrics
    return evaluate
