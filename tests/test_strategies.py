"""Selection rules on constructed inputs (no Flower round needed to check a rule)."""

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from strategies import STRATEGIES
from strategies.base import ClientInfo
from core.validation import check_train_reply
from strategies.clustered import ClusteredSampling, size_clusters
from strategies.oort import Oort
from strategies.power_of_choice import highest_loss
from strategies.random_selection import RandomSelection


def make_clients(sizes):
    return {1000 + i: ClientInfo(1000 + i, i, n) for i, n in enumerate(sizes)}


def ids(chosen):
    return [c.partition_id for c in chosen]


def test_registry_names():
    assert set(STRATEGIES) >= {"random", "power-of-choice", "oort", "clustered"}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_is_built_like_fedavg(name):
    """No arguments needed, FedAvg's keyword arguments accepted, each run-config key of its own a keyword."""
    from flwr.serverapp.strategy import FedAvg

    cls = STRATEGIES[name]
    assert isinstance(cls(), FedAvg)
    strategy = cls(fraction_train=0.3, min_train_nodes=3, fraction_evaluate=0.0, min_available_nodes=7, seed=4)
    assert (strategy.fraction_train, strategy.min_available_nodes, strategy.seed) == (0.3, 7, 4)
    assert strategy.wanted(20) == 6 and strategy.wanted(5) == 3  # Flower's rule: max(int(0.3 N), 3)
    options = {key.removeprefix(cls.PREFIX).replace("-", "_"): spec.default for key, spec in cls.KEYS.items()}
    cls(**options)  # a key the constructor did not take would raise TypeError
    with pytest.raises(TypeError):
        cls(no_such_option=1)


def test_without_discovery_clients_are_node_ids_sized_by_their_replies():
    from flwr.app import Message, MessageType, Metadata

    strategy = RandomSelection(fraction_train=0.5, min_train_nodes=1)
    assert strategy.client(123) == ClientInfo(123, 123, 1)
    strategy._global_arrays = ArrayRecord({"w": torch.zeros(2)})
    metadata = Metadata(run_id=1, message_id="", src_node_id=123, dst_node_id=0, reply_to_message_id="m",
                        group_id="", created_at=0.0, ttl=60.0, message_type=MessageType.TRAIN)
    content = RecordDict({"arrays": ArrayRecord({"w": torch.ones(2)}), "metrics": MetricRecord({"num-examples": 37})})
    assert len(strategy.valid_train_replies([Message(content=content, metadata=metadata)], [])) == 1
    assert strategy.client(123) == ClientInfo(123, 123, 37)


def test_random_is_seeded_and_sized():
    clients = make_clients([10] * 20)
    pool = sorted(clients.values(), key=lambda c: c.partition_id)
    a = RandomSelection(clients=clients, fraction_train=1e-6, min_train_nodes=5, seed=3).select(1, pool)
    b = RandomSelection(clients=clients, fraction_train=1e-6, min_train_nodes=5, seed=3).select(1, pool)
    c = RandomSelection(clients=clients, fraction_train=1e-6, min_train_nodes=5, seed=4).select(1, pool)
    assert ids(a) == ids(b) and len(set(ids(a))) == 5 and ids(a) != ids(c)


def test_fewer_connected_than_wanted_uses_all_connected():
    clients = make_clients([10] * 6)
    pool = sorted(clients.values(), key=lambda c: c.partition_id)[:3]
    assert ids(RandomSelection(clients=clients, fraction_train=1e-6, min_train_nodes=5, seed=0).select(1, pool)) == [0, 1, 2]


def test_power_of_choice_keeps_the_highest_losses():
    pool = list(make_clients([10] * 5).values())
    losses = {0: 0.2, 1: 0.9, 2: 0.5, 3: 0.9, 4: 0.1}
    assert ids(highest_loss(pool, losses, 2)) == [1, 3]
    assert ids(highest_loss(pool, losses, 3)) == [1, 2, 3]
    # a tie at the cut goes to the lower partition id; silent clients are skipped
    assert ids(highest_loss(pool, {0: 0.5, 2: 0.5, 4: 0.5}, 2)) == [0, 2]


def test_size_clusters_follow_fraboni_algorithm_1():
    # sizes 50, 30, 20 with m=2: masses 1.0, 0.6, 0.4 -> row 0 holds client 0 alone,
    # row 1 holds clients 1 and 2 with 0.6 and 0.4
    rows = size_clusters([50, 30, 20], 2)
    np.testing.assert_allclose(rows, [[1.0, 0.0, 0.0], [0.0, 0.6, 0.4]])
    # a client overflowing a row continues in the next: sizes 3, 3, 2 with m=2
    rows = size_clusters([3, 3, 2], 2)
    np.testing.assert_allclose(rows, [[0.75, 0.25, 0.0], [0.0, 0.5, 0.5]])
    np.testing.assert_allclose(size_clusters([5, 9, 1, 7, 3], 3).sum(1), 1.0)


def test_clustered_always_takes_the_client_that_fills_a_cluster():
    clients = make_clients([50, 30, 20])
    pool = sorted(clients.values(), key=lambda c: c.partition_id)
    for r in range(1, 20):
        chosen = ids(ClusteredSampling(clients=clients, fraction_train=1e-6, min_train_nodes=2, seed=0).select(r, pool))
        assert chosen[0] == 0 and len(chosen) == 2 and chosen[1] in (1, 2)


def test_oort_explores_unseen_clients_first_then_exploits_utility():
    clients = make_clients([10] * 6)
    pool = sorted(clients.values(), key=lambda c: c.partition_id)
    oort = Oort(clients=clients, fraction_train=1e-6, min_train_nodes=2, seed=0, explore_fraction=0.0, explore_min=0.0)
    assert len(oort.select(1, pool)) == 2 and oort.record.scores == {}  # nothing seen: explore
    oort.utility = {i: u for i, u in enumerate([1.0, 50.0, 2.0, 40.0, 3.0, 4.0])}
    oort.last_round = {i: 1 for i in range(6)}
    for r in range(2, 10):
        assert ids(oort.select(r, pool)) == [1, 3]
    # staleness bonus sqrt(0.1 * log R / L_i): client 0, last trained in round 1, gets
    # sqrt(0.1 * ln 10 / 1) = 0.4799 in round 10; client 1, trained in round 9, 0.1600
    oort.last_round = {0: 1, 1: 9, 2: 9, 3: 9, 4: 9, 5: 9}
    oort.select(10, pool)
    assert oort.record.scores[0] == pytest.approx(1.0 + 0.479852, abs=1e-5)
    assert oort.record.scores[1] == pytest.approx(50.0 + 0.159951, abs=1e-5)


def test_oort_mixes_exploration_and_exploitation():
    clients = make_clients([10] * 10)
    pool = sorted(clients.values(), key=lambda c: c.partition_id)
    oort = Oort(clients=clients, fraction_train=1e-6, min_train_nodes=4, seed=0, explore_fraction=0.5, explore_min=0.5)
    oort.utility = {0: 9.0, 1: 8.0, 2: 7.0, 3: 6.0, 4: 5.0}
    oort.last_round = {i: 1 for i in range(5)}
    chosen = ids(oort.select(2, pool))
    assert len([p for p in chosen if p >= 5]) == 2  # half the cohort explores unseen 5..9
    assert set(p for p in chosen if p < 5) <= {0, 1, 2}  # exploitation above the 95% cutoff


def reply(arrays, **metrics):
    tensors = {k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()}
    return RecordDict({"arrays": ArrayRecord(tensors),
                       "metrics": MetricRecord({"num-examples": 10, **metrics})})


def test_train_replies_are_checked_before_aggregation():
    ref = ArrayRecord({"w": torch.zeros(2, 2)})
    assert check_train_reply(reply({"w": np.ones((2, 2))}, **{"firing-after/l": [0.1, 0.5]}), ref) is None
    assert check_train_reply(reply({"w": [[np.nan, 0], [0, 0]]}), ref).reason == "non-finite"
    assert check_train_reply(reply({"w": np.ones((3, 2))}), ref).reason == "shape"
    assert check_train_reply(reply({"v": np.ones((2, 2))}), ref).reason == "keys"
    rejection = check_train_reply(reply({"w": np.ones((2, 2))}, **{"firing-before/l": [1.5]}), ref)
    assert rejection.reason == "firing-rate" and "outside [0, 1]" in rejection.detail
