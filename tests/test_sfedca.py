"""SFedCA: the paper's credit, the balance and top-credit rules on constructed statistics,
random candidates, and the class-wise firing intensity on a real spiking network."""

import logging
import uuid
from collections import Counter

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MessageType, Metadata, MetricRecord, RecordDict

from clients.replies import KEPT_ARRAYS
from core.config import ConfigError
from core.protocol import DISCARD, MESSAGE_KEYS, UPLOAD
from data import load_split, split_of
from models import get_workload
from models.workloads.classify import recalibrate_batchnorm
from models.firing import firing_statistics
from models.spiking_cnn import SpikingCNN
from strategies.base import ClientInfo
from server.config import KEYS, load_config
from strategies.sfedca import GREEDY_STEPS, SFedCA, balanced_subset, credits, greedy_subset, imbalance, profiles
from core.protocol import CLASS_AFTER, CLASS_BEFORE, FIRING_AFTER, FIRING_BEFORE, firing_metrics


def test_credit_is_the_l1_change_summed_over_classes():
    assert credits([0.1, 0.2, 0.7], [0.3, 0.2, 0.5])[0] == pytest.approx(0.4)
    assert credits([[0.0, 0.0], [0.5, 0.5]], [[0.0, 0.5], [0.5, 0.5]]).tolist() == pytest.approx([0.5, 0.0])


def test_profiles_sum_to_one_and_a_silent_client_is_neutral():
    np.testing.assert_allclose(profiles([[2.0, 2.0, 0.0], [0.0, 0.0, 0.0]]), [[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    assert imbalance(np.array([0.25, 0.25, 0.25, 0.25])) == pytest.approx(0.0)


def make_clients(n):
    return {100 + i: ClientInfo(100 + i, i, 10) for i in range(n)}


def reply(node, before, after, examples=10, statistic="output", rates=True):
    """A first-phase (statistics only) reply as the server receives it from ``node``."""
    metadata = Metadata(run_id=1, message_id="", src_node_id=node, dst_node_id=0,
                        reply_to_message_id="m", group_id="", created_at=0.0, ttl=60.0,
                        message_type=MessageType.TRAIN)
    metrics = {"num-examples": examples}
    if rates and statistic == "output":
        metrics |= firing_metrics(FIRING_BEFORE, {"hidden": [0.5], "out": before})
        metrics |= firing_metrics(FIRING_AFTER, {"hidden": [0.5], "out": after})
    elif rates:
        metrics |= {CLASS_BEFORE: before, CLASS_AFTER: after}
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), metadata=metadata)


def chosen_ids(clients, messages):
    return [clients[m.metadata.src_node_id].partition_id for m in messages]


# Four candidates after local training under label skew: clients 0 and 1 learned class 0
# hard (large change: the highest credits), clients 2 and 3 one class each, 1 and 2.
SKEWED = [
    ([0.0, 0.0, 0.0], [0.9, 0.0, 0.0]),  # credit 0.9
    ([0.0, 0.0, 0.0], [0.95, 0.0, 0.0]),  # credit 0.95
    ([0.1, 0.1, 0.1], [0.1, 0.5, 0.1]),  # credit 0.4
    ([0.1, 0.1, 0.1], [0.1, 0.1, 0.4]),  # credit 0.3
]


@pytest.mark.parametrize("statistic", ["output", "class"])
def test_balance_picks_the_covering_subset_that_top_credit_misses(statistic):
    clients = make_clients(4)
    replies = [reply(100 + i, b, a, statistic=statistic) for i, (b, a) in enumerate(SKEWED)]
    balance = SFedCA(clients=clients, min_train_nodes=3, fraction_train=1e-6, seed=0, statistic=statistic, rule="balance")
    top = SFedCA(clients=clients, min_train_nodes=3, fraction_train=1e-6, seed=0, statistic=statistic, rule="top-credit")
    # balance: one class-0 client with the class-1 and class-2 clients covers all three classes
    # (0 and 1 give the same profile: the first subset wins the tie)
    assert chosen_ids(clients, balance.choose_aggregated(1, replies)) == [0, 2, 3]
    # top credit: the three largest changes, two of which learned the same class
    assert chosen_ids(clients, top.choose_aggregated(1, replies)) == [0, 1, 2]
    assert balance.record.scores == pytest.approx({0: 0.9, 1: 0.95, 2: 0.4, 3: 0.3})


def test_balance_weights_clients_by_their_examples():
    # classes 0, 1, 1, 0: with equal sizes the first class-0 / class-1 pair balances; when
    # client 0 holds ten times the examples, pairing it is skewed and the small class-0 client is taken
    stats = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    assert balanced_subset(stats, np.array([10, 10, 10, 10]), 2) == [0, 1]
    assert balanced_subset(stats, np.array([100, 10, 10, 10]), 2) == [1, 3]


def test_greedy_balance_for_many_candidates_still_covers_the_classes(monkeypatch):
    import strategies.sfedca as sfedca

    monkeypatch.setattr(sfedca, "EXACT_SUBSETS", 1)  # force the greedy path
    labels = [0] * 30 + [1, 2, 3, 4, 1, 2, 3, 4, 1, 2]  # 40 one-class clients, most of class 0
    stats = np.eye(5)[labels]
    picked = balanced_subset(stats, np.ones(40), 5)
    assert sorted(stats[picked].argmax(1).tolist()) == [0, 1, 2, 3, 4]



def plain_greedy(p, w, k):
    """The greedy step written plainly, one row per step (SFedCA's search before batching)."""
    left = np.ones(len(p), dtype=bool)
    total, mass = np.zeros(p.shape[1]), 0.0
    for _ in range(k):
        rest = np.flatnonzero(left)
        best = rest[np.argmin(imbalance((total + p[rest]) / (mass + w[rest])[:, None]))]
        left[best] = False
        total, mass = total + p[best], mass + w[best]
    return np.flatnonzero(~left).tolist()


def test_greedy_takes_one_row_per_step_up_to_greedy_steps_and_batches_beyond():
    """Up to GREEDY_STEPS rows: the plain greedy's choice, ties and rounding included (the
    committed experiments' selections); beyond, batches that stay about as balanced."""
    rng = np.random.default_rng(0)
    for trial in range(64):
        m, classes = int(rng.integers(10, 120)), int(rng.choice([1, 2, 3, 9, 10, 17]))
        k = int(rng.integers(1, min(m, GREEDY_STEPS + 1)))
        kind = trial % 4
        if kind == 0:  # small integers: many exact ties
            stats = rng.integers(0, 3, (m, classes)).astype(float)
        elif kind == 1:  # a few distinct rows, duplicated
            stats = rng.random((4, classes))[rng.integers(0, 4, m)]
        elif kind == 2:  # silent rows among one-class rows
            stats = np.eye(classes)[rng.integers(0, classes, m)] * (rng.random((m, 1)) < 0.7)
        else:
            stats = rng.random((m, classes))
        weights = rng.integers(1, 4, m).astype(float) if trial % 2 else np.full(m, 10.0)
        p = profiles(stats) * weights[:, None]
        assert greedy_subset(p, weights, k) == plain_greedy(p, weights, k), trial
    for seed in range(5):  # label-skewed clients (Dirichlet 0.1 profiles), 200 of 400 chosen in batches of 20
        rng = np.random.default_rng(seed)
        stats, weights = rng.dirichlet(np.full(10, 0.1), 400), rng.integers(5, 50, 400).astype(float)
        p = profiles(stats) * weights[:, None]
        batched, plain = greedy_subset(p, weights, 200, steps=10), plain_greedy(p, weights, 200)
        assert len(set(batched)) == 200
        drawn = rng.choice(400, 200, replace=False)
        gap = [imbalance(p[rows].sum(0) / weights[rows].sum()) for rows in (batched, plain, drawn)]
        assert gap[0] <= 2.5 * gap[1] and gap[0] <= gap[2] / 4, (seed, gap)


def test_ties_in_credit_go_to_the_lower_partition_id():
    clients = make_clients(3)
    sfedca = SFedCA(clients=clients, min_train_nodes=1, fraction_train=1e-6, seed=0, rule="top-credit")
    replies = [reply(102, [0.1], [0.3]), reply(101, [0.3], [0.1])]
    assert chosen_ids(clients, sfedca.choose_aggregated(1, replies)) == [1]


def test_missing_or_misshapen_statistics_are_left_out_said_once_and_filled_at_random(caplog):
    clients = make_clients(5)
    replies = [reply(100, [0.1, 0.1], [0.1, 0.2]), reply(101, [0.1, 0.1], [0.6, 0.1]),
               reply(102, [0.0], [0.0], rates=False), reply(103, [0.0, 0.0, 0.0], [0.9, 0.9, 0.9]),
               reply(104, [0.0], [0.0], rates=False)]
    sfedca = SFedCA(clients=clients, min_train_nodes=2, fraction_train=1e-6, seed=0, rule="top-credit")
    with caplog.at_level(logging.WARNING):
        assert chosen_ids(clients, sfedca.choose_aggregated(1, replies)) == [0, 1]
        sfedca.choose_aggregated(2, replies)
    assert caplog.text.count("lack the metric 'firing-before/'") == 1  # said once, in one line
    assert sfedca.record.rejected[3].reason == "firing-rate" and 2 not in sfedca.record.scores
    # k = 3 with two credited replies: the third place goes to a reply without statistics
    sfedca = SFedCA(clients=clients, min_train_nodes=3, fraction_train=1e-6, seed=0, rule="top-credit")
    chosen = chosen_ids(clients, sfedca.choose_aggregated(1, replies))
    assert len(chosen) == 3 and chosen[:2] == [0, 1] and chosen[2] in (2, 4)


def test_candidates_are_random_seeded_and_factor_times_k():
    clients = make_clients(20)
    pool = sorted(clients.values(), key=lambda c: c.partition_id)
    a = SFedCA(clients=clients, min_train_nodes=3, fraction_train=1e-6, seed=1, candidate_factor=2.0).select(1, pool)
    b = SFedCA(clients=clients, min_train_nodes=3, fraction_train=1e-6, seed=1, candidate_factor=2.0).select(1, pool)
    c = SFedCA(clients=clients, min_train_nodes=3, fraction_train=1e-6, seed=1, candidate_factor=2.0).select(2, pool)
    assert a == b and len(a) == 6 and a != c
    assert len(SFedCA(clients=clients, min_train_nodes=3, fraction_train=1e-6, seed=1, candidate_factor=1.5).select(1, pool)) == 5
    assert len(SFedCA(clients=clients, min_train_nodes=3, fraction_train=1e-6, seed=1).select(1, pool[:4])) == 4  # fewer connected


def test_class_wise_firing_intensity_is_the_network_rate_on_each_class():
    split = load_split("digits", "data-cache", 0.2, 0)
    torch.manual_seed(0)
    model = SpikingCNN(1, 8, 10, timesteps=4)
    x, y = torch.as_tensor(split.x_train[:120]), torch.as_tensor(split.y_train[:120])
    recalibrate_batchnorm(model, x)  # BatchNorm on the data's statistics: the untrained network fires
    keep = y != 3  # class 3 absent from this client
    stats = firing_statistics(model, x[keep], 4, y[keep], 10, batch_size=1000)
    assert len(stats.class_intensity) == 10 and stats.class_intensity[3] == 0.0
    assert all(v > 0 for c, v in enumerate(stats.class_intensity) if c != 3)
    # class 5 alone: the network-wide rate is the neuron-weighted mean of the layers' rates
    only = firing_statistics(model, x[y == 5], 4, batch_size=1000)
    neurons = {"net.lif1": 16 * 8 * 8, "net.lif2": 32 * 4 * 4, "net.lif_out": 10}
    network = sum(np.mean(only.rates[k]) * n for k, n in neurons.items()) / sum(neurons.values())
    assert stats.class_intensity[5] == pytest.approx(network, rel=1e-4)


# --- when the rule chooses: after training (two phases), before it, or on cached statistics ---

class LocalGrid:
    """Flower's transport for a unit test: every message goes to SpikeFed's real ClientApp
    in this process, one Context per node (node ids 1000 + partition id), an exception
    becoming an error reply as Flower's runtime makes it; replies of ``held`` nodes come
    only from a later ``pull_messages`` once they are no longer held (a straggler's late reply).
    ``app``: another ClientApp than SpikeFed's."""

    def __init__(self, cfg, held=(), app=None):
        self.app = app
        self.contexts = {1000 + i: Context(run_id=1, node_id=1000 + i, state=RecordDict(), run_config={},
                                           node_config={"partition-id": i, "num-partitions": cfg.num_partitions})
                         for i in range(cfg.num_partitions)}
        self.held, self.late, self.log, self.raw = set(held), [], [], {}

    def get_node_ids(self):
        return list(self.contexts)

    def send_and_receive(self, messages, timeout=None):
        from clients.app import app

        app = self.app or app
        replies = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            try:
                reply = app(msg, self.contexts[msg.metadata.dst_node_id])
            except Exception as err:  # noqa: BLE001 - what Flower's runtime does with a ClientApp's exception
                reply = Message(Error(code=0, reason=str(err)), reply_to=msg)
            self.log.append((msg, reply))
            if reply.has_content() and reply.content.array_records:  # as sent: a DP wrapper clips the received copy in place
                self.raw[id(reply)] = {k: v.numpy().copy() for k, v in reply.content["arrays"].items()}
            (self.late if msg.metadata.dst_node_id in self.held else replies).append(reply)
        return replies

    def pull_messages(self, message_ids):
        wanted = set(message_ids)
        out = [r for r in self.late
               if r.metadata.reply_to_message_id in wanted and r.metadata.src_node_id not in self.held]
        self.late = [r for r in self.late if r not in out]
        return out

    def sent(self, kind):
        return [(m, r) for m, r in self.log if m.metadata.message_type == kind]


def federation(**keys):
    cfg = load_config({"num-partitions": 8, "fraction-train": 0.25, "local-epochs": 1, "timesteps": 2,
                       "strategy": "sfedca", **keys})
    clients = {1000 + i: ClientInfo(1000 + i, i, 1) for i in range(cfg.num_partitions)}
    model = get_workload(cfg.workload).initial_model(cfg, split_of(cfg).spec)
    return cfg, SFedCA.from_config(cfg, clients), ArrayRecord(model.state_dict())


def one_round(strategy, grid, cfg, arrays, server_round=1):
    messages = strategy.configure_train(server_round, arrays, ConfigRecord(cfg.for_clients(KEYS)), grid)
    return messages, strategy.aggregate_train(server_round, grid.send_and_receive(messages))


def energy(pairs):
    return sum(next(iter(r.content.metric_records.values()))["energy-snn"] for _, r in pairs)


def test_before_training_the_rule_chooses_on_the_received_models_statistics_and_only_the_chosen_train(task_identity):
    cfg, strategy, arrays = federation(**{"sfedca-when": "before"})
    grid = LocalGrid(cfg)
    messages, (aggregated, _) = one_round(strategy, grid, cfg, arrays)
    queries, trains = grid.sent(MessageType.QUERY), grid.sent(MessageType.TRAIN)
    assert (len(queries), len(trains), len(grid.log)) == (4, 2, 6)  # m = 4 asked, k = 2 train, nothing else
    assert all(m.content["config"]["query-statistics"] for m, _ in queries)
    assert not any(m.content["config"].get("two-phase", False) for m in messages)
    # the two that trained are the balance rule's pick over the received model's output rates
    answers = {r.metadata.src_node_id - 1000: r.content["info"] for _, r in queries}
    order = sorted(answers)
    output = max(k for k in answers[order[0]] if k.startswith(FIRING_BEFORE))
    assert not any(k.startswith(FIRING_AFTER) for k in answers[order[0]])  # no training behind a query
    expected = [order[i] for i in balanced_subset(np.array([answers[p][output] for p in order]),
                                                  np.array([answers[p]["num-examples"] for p in order]), 2)]
    assert [m.metadata.dst_node_id - 1000 for m in messages] == expected
    assert aggregated is not None and [c.partition_id for c in strategy.record.selected] == expected
    assert strategy.record.energy["energy-snn"] == pytest.approx(energy(queries) + energy(trains))
    assert energy(queries) > 0


def test_messages_carry_only_the_keys_a_clientapp_reads_and_the_clients_train_on_them(task_identity):
    cfg, strategy, arrays = federation()
    grid = LocalGrid(cfg)
    _, (aggregated, _) = one_round(strategy, grid, cfg, arrays)
    sent = {k for m, _ in grid.log for k in m.content["config"]}
    assert sent - set(MESSAGE_KEYS) == {name for name, key in KEYS.items() if key.client}
    assert not sent & {"num-server-rounds", "results-dir", "sfedca-candidate-factor", "fault-crash", "dda-images"}
    assert aggregated is not None and not any(r.has_error() for _, r in grid.log)  # nothing a client needs is missing


def test_top_credit_before_training_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="sfedca-rule='top-credit' with sfedca-when='before'.*accepted"):
        load_config({"strategy": "sfedca", "sfedca-when": "before", "sfedca-rule": "top-credit"})


def test_cached_candidates_are_ranked_on_their_last_statistics_and_the_unseen_explored_as_random_does():
    clients = make_clients(8)
    pool = sorted(clients.values(), key=lambda c: c.partition_id)
    strategy = SFedCA(clients=clients, min_train_nodes=2, fraction_train=1e-6, seed=3, when="cached")
    first = strategy.select(1, pool)  # nothing seen yet: k of the candidates at random
    assert len(first) == 2 and set(first) <= set(strategy.sample(strategy.round_rng(1), pool, 4))
    # every client seen: 0-3 hold class 0 only, 4-7 class 1 only; a balanced pair takes one of each
    strategy.cache = {i: ([0.0, 0.0], [1.0, 0.0] if i < 4 else [0.0, 1.0], 10) for i in range(8)}
    for server_round in range(2, 8):
        chosen = strategy.select(server_round, pool)
        candidates = strategy.sample(strategy.round_rng(server_round), pool, 4)
        if len({c.partition_id < 4 for c in candidates}) == 2:
            assert {c.partition_id < 4 for c in chosen} == {True, False}, server_round
    # an unseen candidate drawn among random's k trains whatever the cached statistics say
    del strategy.cache[5]
    rounds = [r for r in range(2, 60) if 5 in [c.partition_id for c in strategy.sample(
        strategy.round_rng(r, "explore"), strategy.sample(strategy.round_rng(r), pool, 4), 2)]]
    assert rounds and all(5 in [c.partition_id for c in strategy.select(r, pool)] for r in rounds[:3])


def test_the_candidates_not_chosen_drop_the_weights_they_kept(task_identity):
    cfg, strategy, arrays = federation()
    grid = LocalGrid(cfg)
    _, (aggregated, _) = one_round(strategy, grid, cfg, arrays)
    trained = {m.metadata.dst_node_id for m, _ in grid.sent(MessageType.TRAIN)}
    uploads, discards = grid.sent(UPLOAD), grid.sent(DISCARD)
    assert aggregated is not None and len(trained) == 4 and len(uploads) == 2
    assert {m.metadata.dst_node_id for m, _ in discards} == trained - {m.metadata.dst_node_id for m, _ in uploads}
    assert all(r.content["info"]["dropped"] == 1 for _, r in discards)
    assert all(KEPT_ARRAYS not in grid.contexts[node].state for node in trained)  # nothing held after the round


def test_a_straggler_is_not_asked_again_until_its_late_reply_has_arrived(task_identity):
    cfg, strategy, arrays = federation(**{"fraction-train": 1.0})
    grid = LocalGrid(cfg, held={1003})
    one_round(strategy, grid, cfg, arrays, 1)
    assert strategy.record.rejected[3].reason == "timeout"
    second, _ = one_round(strategy, grid, cfg, arrays, 2)  # still working on round 1: not asked
    assert 1003 not in {m.metadata.dst_node_id for m in second} and len(second) == 7
    grid.held.clear()  # its round-1 reply arrives
    third, _ = one_round(strategy, grid, cfg, arrays, 3)
    assert 1003 in {m.metadata.dst_node_id for m in third} and not strategy._unanswered


def test_under_dp_clients_send_only_the_noisy_statistic_and_rounds_record_the_largest_epsilon_spent(task_identity):
    from core import privacy

    cfg, strategy, arrays = federation(**{"sfedca-dp-epsilon": 4.0})
    grid = LocalGrid(cfg)
    spent = []
    for server_round in (1, 2, 3):
        _, (aggregated, _) = one_round(strategy, grid, cfg, arrays, server_round)
        assert aggregated is not None
        spent.append(strategy.record.statistics_epsilon)
    first_phase = [r for m, r in grid.sent(MessageType.TRAIN)]
    for reply in first_phase:
        rates = [k for k in reply.content["metrics"] if k.startswith(("firing", "class"))]
        assert len(rates) == 1 and rates[0].startswith(FIRING_AFTER)  # the output layer's, nothing else
    asked = Counter(m.metadata.dst_node_id for m, _ in grid.sent(MessageType.TRAIN))
    noise = privacy.noise_multiplier(4.0, 1e-5, 1)
    assert spent[0] == pytest.approx(privacy.epsilon_spent(noise, 1e-5, 1)) and spent[0] <= 4.0
    assert spent[-1] == pytest.approx(privacy.epsilon_spent(noise, 1e-5, max(asked.values())))
    assert spent == sorted(spent)


def test_a_clientapp_without_discard_is_said_once_and_not_sent_it_again(task_identity, caplog):
    from flwr.clientapp import ClientApp

    from clients import app as spikefed

    without_discard = ClientApp()  # SpikeFed's train and upload handlers, no train.discard
    without_discard.train()(spikefed.train)
    without_discard.train("upload")(spikefed.upload)
    cfg, strategy, arrays = federation()
    grid = LocalGrid(cfg, app=without_discard)
    with caplog.at_level(logging.WARNING):
        rounds = [one_round(strategy, grid, cfg, arrays, r)[1][0] for r in (1, 2)]
    assert all(arrays is not None for arrays in rounds) and len(grid.sent(UPLOAD)) == 4
    assert len(grid.sent(DISCARD)) == 2 and all(r.has_error() for _, r in grid.sent(DISCARD))  # round 1 only
    assert caplog.text.count("did not answer 'train.discard'") == 1
