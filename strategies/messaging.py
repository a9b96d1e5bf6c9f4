"""A strategy's messages to its clients within a round, and what comes back.

A strategy with ``two_phase`` runs each round in two phases: the clients it selected train
and reply with their metrics only (the train config carries ``two-phase = true``; the
ClientApp keeps the trained weights in its node state), then the server asks the ones
``choose_aggregated`` picked for their weights with a ``train.upload`` message and tells
the others to drop theirs (``train.discard``), in one exchange. Queries (Power-of-Choice's
losses, SFedCA's statistics before training) are one exchange too. Every message's bytes
are counted in the round's record (:mod:`strategies.accounting`).

Every train reply passes :func:`core.validation.check_train_reply` before a strategy scores
or aggregates it; rejections are logged and counted by reason. A client whose message was
not answered in time (a straggler) is busy until its late reply arrives: it is not asked
again before (its late reply would write back a node state older than the new message's,
and Flower runs a node's messages independently).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from logging import INFO, WARNING
from typing import TYPE_CHECKING, Any

from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from core import faults
from core.protocol import (
    DISCARD,
    EXECUTOR,
    FAULT_KEY,
    NUM_EXAMPLES,
    SERVER_ROUND,
    TWO_PHASE_KEY,
    UPLOAD,
)
from core.validation import Rejection, check_statistics_reply, check_train_reply, error_line
from strategies.accounting import content_bytes

if TYPE_CHECKING:
    from strategies.base import ClientInfo


def reply_metrics(msg: Message) -> MetricRecord:
    """A validated train reply's MetricRecord (``content.metric_records`` would copy every
    record into a new dict on each call: slow over thousands of replies)."""
    return next(record for record in msg.content.values() if isinstance(record, MetricRecord))


class RoundMessaging:
    """The message exchanges of :class:`strategies.base.SelectionStrategy` (a mixin: it uses
    the strategy's ``record``, ``client()``, ``choose_aggregated()`` and Flower's message
    construction)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._said: set[str] = set()
        self._train_messages: list[Message] = []
        self._evaluate_messages: list[Message] = []
        self._unanswered: dict[str, Message] = {}  # message id -> a sent message not answered in time
        self._discards = True  # False once a ClientApp has failed a train.discard

    def say_once(self, topic: str, message: str, *args: Any) -> None:
        """Log a WARNING the first time ``topic`` comes up (e.g. a statistic missing from every reply)."""
        if topic not in self._said:
            self._said.add(topic)
            log(WARNING, "%s: " + message, type(self).__name__, *args)

    def inject_faults(self, server_round: int) -> None:
        """With fault injection on, which of the round's clients get which fault (``record.injected``)."""
        r = self.reliability
        if r.injects_faults:
            self.record.injected = faults.assign(self.round_rng(server_round, "faults"),
                                                 [c.partition_id for c in self._sent],
                                                 r.fault_crash, r.fault_straggle, r.fault_corrupt)
            log(INFO, "injected faults: %s", self.record.injected)

    def available(self, grid: Grid) -> list[ClientInfo]:
        """Known clients whose nodes are connected, not busy (:meth:`busy_nodes`) and, with
        devices, online this round (without discovery: every connected node, once
        ``min_available_nodes`` are), in client-id order."""
        busy = self.busy_nodes(grid)
        if self.clients is None:
            _, connected = sample_nodes(grid, self.min_available_nodes, 0)  # waits for them
            return [self.client(n) for n in sorted(connected) if n not in busy]
        connected = set(grid.get_node_ids()) - busy
        online = self.devices.online(self.record.server_round) if self.devices is not None else None
        available = (c for n, c in self.clients.items()
                     if n in connected and (online is None or c.partition_id in online))
        return sorted(available, key=lambda c: c.partition_id)

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

    def exchange(self, messages: Iterable[Message]) -> list[Message]:
        """Send ``messages`` and wait for the replies (up to the timeout), counting bytes and time."""
        messages = list(messages)
        self.record.sent(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=self.timeout))
        self.record.received(replies)
        self.note_unanswered(messages, replies)
        self.clock(messages, replies)
        return replies

    def clock(self, sent: list[Message], replies: list[Message]) -> None:
        """With devices: add the exchange of ``sent`` and their ``replies`` to the round's
        simulated seconds (its slowest client, :meth:`strategies.devices.Devices.phase`)."""
        if self.devices is None or not sent:
            return
        answered = {r.metadata.reply_to_message_id: (r, size) for r, size in zip(replies, content_bytes(replies))}
        work = []
        for msg, size in zip(sent, content_bytes(sent)):
            client = self.client(msg.metadata.dst_node_id)
            reply, up = answered.get(msg.metadata.message_id, (None, None))
            examples = client.num_examples  # discovery's: the training data; an evaluation says what it evaluated
            if msg.metadata.message_type == MessageType.EVALUATE and reply is not None and not reply.has_error():
                examples = int(next(iter(reply.content.metric_records.values()), {}).get(NUM_EXAMPLES, examples))
            work.append((client.partition_id, size, up, self.devices.passes(msg.metadata.message_type, examples)))
        self.record.sim_seconds = (self.record.sim_seconds or 0.0) + self.devices.phase(work, self.timeout)

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
                reason = error_line(reply.error.reason) if reply.has_error() else "no MetricRecord 'info' in the reply"
                self.say_once("query", "a client did not answer the query (%s); see docs/protocol.md", reason)
                log(INFO, "client %d did not answer the query", client.partition_id)
            else:
                out[client.partition_id] = reply.content["info"]
                self.record.add_costs(out[client.partition_id])
        return out

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
                rejection = Rejection("error", error_line(msg.error.reason))
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

    def collect_updates(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        """The round's updates to aggregate: the valid train replies the strategy chooses
        (two phases: their uploads), in client-id order. A DP wrapper clips these."""
        server_round += self.round_offset
        replies = list(replies)
        self.record.client_updates = len(replies)
        self.record.received(replies)
        self.note_unanswered(self._train_messages, replies)
        self.clock(self._train_messages, replies)
        trained = self.valid_train_replies(replies, self._sent, weights=None if self.two_phase else True)
        for msg in trained:
            self.record.add_costs(reply_metrics(msg))
            if EXECUTOR in msg.content.config_records:
                where = msg.content.config_records[EXECUTOR]
                self.record.executors[self.client(msg.metadata.src_node_id).partition_id] = \
                    f"{where.get('host', '?')}/{where.get('device', '?')}"
        valid = self.choose_aggregated(server_round, trained)
        if self.two_phase and trained:
            chosen = {id(m) for m in valid}
            valid = self.collect_uploads(server_round, valid, [m for m in trained if id(m) not in chosen])
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
    def has_statistics(self, metrics: Mapping[str, Any], keys: Iterable[str], fallback: str) -> bool:
        """Whether a reply's ``metrics`` carry a metric starting with each of ``keys``; the
        first time one is missing, says so in one line with what the strategy does instead."""
        missing = [k for k in keys if not any(m.startswith(k) for m in metrics)]
        if missing:
            self.say_once(f"missing {missing[0]}", "client replies lack the metric %r (docs/protocol.md): %s",
                          missing[0], fallback)
        return not missing

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
        self.record.sent(messages)
        self._evaluate_messages = messages
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        server_round += self.round_offset
        ordered = sorted(replies, key=lambda m: self.client(m.metadata.src_node_id).partition_id)
        self.record.received(ordered)
        self.clock(self._evaluate_messages, ordered)
        self.record.evaluate_metrics = super().aggregate_evaluate(server_round, ordered)
        return self.record.evaluate_metrics
