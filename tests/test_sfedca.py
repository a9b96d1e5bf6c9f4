"""SFedCA: the credit formula on hand-computed vectors and the selection rule."""

import logging

import pytest
import torch
from flwr.app import ArrayRecord, Message, MessageType, Metadata, MetricRecord, RecordDict

from strategies.base import ClientInfo, firing_metrics
from strategies.validation import FIRING_AFTER, FIRING_BEFORE
from strategies.sfedca import SFedCA, credits

BEFORE, AFTER = [0.1, 0.2, 0.7], [0.3, 0.2, 0.5]


@pytest.mark.parametrize("distance, expected", [
    ("l1", 0.4),            # |0.2| + 0 + |-0.2|
    ("l2", 0.282843),       # sqrt(0.04 + 0.04)
    ("cosine", 0.072828),   # 1 - 0.42 / (sqrt(0.54) * sqrt(0.38))
    ("kl", 0.161348),       # 0.3 ln(0.3/0.1) + 0.2 ln 1 + 0.5 ln(0.5/0.7)
])
def test_credit_by_hand(distance, expected):
    assert credits(BEFORE, AFTER, distance)[0] == pytest.approx(expected, abs=1e-5)
    assert credits(BEFORE, BEFORE, distance)[0] == pytest.approx(0.0, abs=1e-9)


def test_credit_of_a_layer_that_starts_firing():
    assert credits([0.0, 0.0], [0.0, 0.5], "cosine")[0] == 1.0
    assert credits([0.0, 0.0], [0.0, 0.0], "cosine")[0] == 0.0


def test_layer_order_survives_sorted_keys():
    rates = {f"net.lif{i}": [i / 20] for i in range(12)} | {"net.out": [0.9, 0.1]}
    metrics = MetricRecord(dict(sorted(firing_metrics(FIRING_AFTER, rates).items())))
    layers = [metrics[k] for k in sorted(metrics)]
    assert layers[-1] == [0.9, 0.1] and layers[0] == [0.0] and len(layers) == 13


def make_clients(n):
    return {100 + i: ClientInfo(100 + i, i, 10) for i in range(n)}


def train_reply(node, before, after, rates=True):
    """A train reply as the server receives it from ``node``."""
    metadata = Metadata(run_id=1, message_id="", src_node_id=node, dst_node_id=0,
                        reply_to_message_id="m", group_id="", created_at=0.0, ttl=60.0,
                        message_type=MessageType.TRAIN)
    metrics = {"num-examples": 10}
    if rates:
        metrics |= firing_metrics(FIRING_BEFORE, {"hidden": [0.5], "out": before})
        metrics |= firing_metrics(FIRING_AFTER, {"hidden": [0.5], "out": after})
    content = RecordDict({"arrays": ArrayRecord({"w": torch.zeros(1)}), "metrics": MetricRecord(metrics)})
    return Message(content=content, metadata=metadata)


def test_the_candidates_whose_firing_changed_most_are_aggregated(caplog):
    clients = make_clients(5)
    sfedca = SFedCA(clients, clients_per_round=2, seed=0, credit_decay=0.5)
    replies = [
        train_reply(100, [0.1, 0.1], [0.1, 0.2]),  # credit 0.1
        train_reply(101, [0.1, 0.1], [0.6, 0.1]),  # credit 0.5
        train_reply(102, [0.1, 0.1], [0.1, 0.1]),  # credit 0
        train_reply(103, [0.5, 0.5], [0.2, 0.5]),  # credit 0.3
        train_reply(104, [0.0, 0.0], [0.0, 0.0], rates=False),
    ]
    with caplog.at_level(logging.ERROR):
        chosen = sfedca.choose_aggregated(1, replies)
    assert [clients[m.metadata.src_node_id].partition_id for m in chosen] == [1, 3]
    assert sfedca.record.scores == pytest.approx({0: 0.1, 1: 0.5, 2: 0.0, 3: 0.3})
    assert 4 not in sfedca.credits  # missing statistics are not a zero credit
    assert "firing-before/" in caplog.text and "client 4" in caplog.text
    # credits persist as a moving average: 0.5 * 0.5 + 0.5 * 0.1 for client 1 next round
    sfedca.choose_aggregated(2, [train_reply(101, [0.1, 0.1], [0.2, 0.1])])
    assert sfedca.credits[1] == pytest.approx(0.3) and sfedca.last_seen[1] == 2


def test_ties_in_credit_go_to_the_lower_partition_id():
    clients = make_clients(3)
    sfedca = SFedCA(clients, clients_per_round=1, seed=0)
    replies = [train_reply(102, [0.1], [0.3]), train_reply(101, [0.3], [0.1])]
    chosen = sfedca.choose_aggregated(1, replies)
    assert [clients[m.metadata.src_node_id].partition_id for m in chosen] == [1]


def test_candidates_are_high_credit_clients_plus_unseen_ones():
    clients = make_clients(10)
    pool = sorted(clients.values(), key=lambda c: c.partition_id)
    sfedca = SFedCA(clients, clients_per_round=2, seed=0, candidate_fraction=0.4, explore_fraction=0.25)
    assert len(sfedca.select(1, pool)) == 4  # nothing seen yet: 4 drawn at random
    sfedca.credits = {0: 0.9, 1: 0.1, 2: 0.8, 3: 0.7, 4: 0.2, 5: 0.05}
    sfedca.last_seen = {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1}
    chosen = [c.partition_id for c in sfedca.select(2, pool)]
    # 3 exploit slots: clients 0, 2, 3; 1 exploration slot: an unseen client (6..9)
    assert chosen[:3] == [0, 2, 3] and chosen[3] in (6, 7, 8, 9) and len(chosen) == 4
    # every client seen: the exploration slot goes to the one heard from longest ago
    sfedca.credits |= {6: 0.0, 7: 0.0, 8: 0.0, 9: 0.0}
    sfedca.last_seen |= {6: 2, 7: 2, 8: 2, 9: 2, 4: 0}
    assert [c.partition_id for c in sfedca.select(3, pool)] == [0, 2, 3, 4]


def test_fewer_connected_clients_than_candidates():
    clients = make_clients(10)
    pool = sorted(clients.values(), key=lambda c: c.partition_id)[:3]
    sfedca = SFedCA(clients, clients_per_round=2, seed=0, candidate_fraction=0.5)
    assert [c.partition_id for c in sfedca.select(1, pool)] == [0, 1, 2]
