"""Devices and the simulated clock, Oort's system utility, the spiking-FL peers and Flower's
aggregators under SpikeFed's selection, on constructed inputs (the end-to-end runs are in
tests/test_compare.py's grid and tests/test_simulation.py's `flwr run`)."""

import pickle

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from core.config import ConfigError
from server.config import load_config
from strategies.aggregators import Aggregation
from strategies.base import ClientInfo
from strategies.devices import Device, Devices
from strategies.divfl import facility_location
from strategies.oort import Oort
from strategies.spike_diversity import SpikeDiversity


def test_a_phase_lasts_as_long_as_its_slowest_client():
    # 100,000 bytes down at 1,600 kbit/s: 0.5 s; 1,000 passes at 2 ms: 2 s; 50,000 bytes up at 800 kbit/s: 0.5 s
    slow, fast = Device(2.0, 800.0, 1600.0), Device(0.5, 8000.0, 16000.0)
    assert slow.seconds(100_000, 50_000, 1000) == pytest.approx(3.0)
    devices = Devices({0: slow, 1: fast})
    assert devices.phase([(0, 100_000, 50_000, 1000), (1, 100_000, 50_000, 1000)], timeout=60) == pytest.approx(3.0)
    assert devices.phase([(1, 100_000, 50_000, 1000), (1, 0, 0, 0)], timeout=60) == pytest.approx(0.05 + 0.5 + 0.05)
    assert devices.phase([(1, 100_000, None, 1000)], timeout=60) == 60  # unanswered: the round waited its timeout
    # FedScale's cost model: a training sample is 3 forward passes; the statistics before and after add 2 per sample
    devices.local_epochs = 2
    assert devices.passes(MessageType.TRAIN, 100) == 3 * 100 * 2 + 2 * 100
    assert devices.passes(MessageType.QUERY, 100) == devices.passes(MessageType.EVALUATE, 100) == 100


def write_trace(path, entries):
    with open(path, "wb") as f:
        pickle.dump(entries, f)
    return str(path)


def test_fedscale_traces_are_read_and_bad_devices_are_one_line(tmp_path):
    trace = write_trace(tmp_path / "client_device_capacity",
                        {1: {"computation": 20.0, "communication": 900.0}, 2: {"computation": 40.0, "communication": 50.0}})
    cfg = load_config({"devices": trace, "num-partitions": 6, "seed": 3})
    devices = Devices.from_config(cfg, range(6)).devices
    assert set(devices) == set(range(6))
    assert {(d.compute_ms, d.uplink_kbps, d.downlink_kbps, d.availability) for d in devices.values()} <= {
        (20.0, 900.0, 900.0, 1.0), (40.0, 50.0, 50.0, 1.0)}
    assert Devices.from_config(cfg, range(6)).devices == devices  # seeded
    assert Devices.from_config(load_config({"num-partitions": 6}), range(6)) is None  # devices = none
    bad = {"unknown": ("devices=cloud", "neither a known distribution nor a file"),
           "zero speed": (f"devices={write_trace(tmp_path / 'zero', {1: {'computation': 0.0, 'communication': 5.0}})}",
                          "every computation and communication finite and > 0"),
           "an object": (f"devices={write_trace(tmp_path / 'object', {1: ConfigRecord({})})}", "is not FedScale's"),
           "median speed": ("devices-sample-ms=0", "devices-sample-ms")}
    for setting, expected in bad.values():
        key, value = setting.split("=", 1)
        with pytest.raises(ConfigError, match=expected) as err:
            load_config({key: value, "devices": "mobile"} if key == "devices-sample-ms" else {key: value})
        assert "\n" not in str(err.value)


def test_offline_clients_are_never_online_and_availability_is_seeded():
    cfg = load_config({"devices": "mobile", "num-partitions": 50, "seed": 1})
    devices = Devices.from_config(cfg, range(50))
    devices.devices[7] = Device(1.0, 1.0, 1.0, availability=0.0)
    online = [devices.online(r) for r in range(1, 201)]
    assert all(7 not in o for o in online) and online == [devices.online(r) for r in range(1, 201)]
    share = np.mean([len(o) for o in online]) / 49
    expected = np.mean([d.availability for p, d in devices.devices.items() if p != 7])
    assert share == pytest.approx(expected, abs=0.02) and 0.6 < expected < 0.9  # availability uniform in [0.5, 1]


def clients(n, size=100):
    return {1000 + i: ClientInfo(1000 + i, i, size) for i in range(n)}


def test_oort_with_devices_penalises_clients_slower_than_the_preferred_duration():
    fed = clients(10)
    pool = sorted(fed.values(), key=lambda c: c.partition_id)
    # client 0 computes 100x slower; the bandwidth is so large that only compute counts
    devices = Devices({i: Device(100.0 if i == 0 else 1.0, 1e12, 1e12) for i in range(10)})
    utility = {0: 100.0, 1: 90.0, 2: 80.0, **dict.fromkeys(range(3, 10), 1.0)}
    chosen = {}
    for name, devs in (("without", None), ("with", devices)):
        oort = Oort(clients=fed, fraction_train=1e-6, min_train_nodes=2, seed=0, explore_fraction=0.0,
                    explore_min=0.0, devices=devs)
        oort.utility, oort.last_round = dict(utility), dict.fromkeys(range(10), 1)
        oort._global_arrays = ArrayRecord({"w": torch.zeros(100)})  # set by configure_train in a round
        chosen[name] = {tuple(c.partition_id for c in oort.select(r, pool)) for r in range(2, 30)}
    # durations (3 x 100 x 1 + 2 x 100) passes x 1 or 100 ms: 0.5 s, and 50 s for client 0; T = the
    # 30th-percentile duration (0.5 s); client 0's utility (with its staleness bonus) x (0.5 / 50)^2
    assert oort.record.scores[0] == pytest.approx((100 + np.sqrt(0.1 * np.log(29))) * 1e-4, rel=1e-6)
    assert chosen == {"without": {(0, 1)}, "with": {(1, 2)}}


def test_facility_location_picks_one_representative_per_cluster():
    points = np.array([0.0, 0.1, 10.0, 10.1, 20.0])
    distances = np.abs(points[:, None] - points[None, :])
    # first the medoid of all (10.0: summed distance 30.0), then the point that lowers the sum
    # most: 0.0 and 0.1 tie at 10.2 (the lower index goes first), 20.0 gives 20.0
    assert facility_location(distances, 1) == [2]
    assert facility_location(distances, 2) == [0, 2]
    assert facility_location(distances, 3) == [0, 2, 4]


def _reply(node, metrics):
    from flwr.app import Metadata

    metadata = Metadata(run_id=1, message_id="", src_node_id=node, dst_node_id=0, reply_to_message_id=str(node),
                        group_id="", created_at=0.0, ttl=60.0, message_type=MessageType.TRAIN)
    return Message(content=RecordDict({"metrics": metrics}), metadata=metadata)


def test_spike_diversity_aggregates_candidates_with_different_activity():
    fed = clients(4)
    strategy = SpikeDiversity(clients=fed, fraction_train=1e-6, min_train_nodes=2, seed=0)
    replies = [_reply(1000 + i, MetricRecord({"num-examples": 10, "firing-after/00/lif": r}))
               for i, r in enumerate([[0.1, 0.1], [0.11, 0.1], [0.9, 0.8], [0.1, 0.12]])]
    chosen = strategy.choose_aggregated(1, replies)
    # the medoid of the three similar ones (client 1: summed distance 1.088), then the odd one out
    assert [fed[m.metadata.src_node_id].partition_id for m in chosen] == [1, 2]
    assert strategy.record.scores[2] == strategy.record.scores[1] == 0.0 and strategy.record.scores[3] > 0


def update(node, delta, examples=10):
    arrays = ArrayRecord({"w": torch.full((3,), 1.0 + delta), "bn.running_var": torch.full((3,), 0.05 + delta)})
    return _reply_arrays(node, arrays, examples)


def _reply_arrays(node, arrays, examples):
    message = _reply(node, MetricRecord({"num-examples": examples}))
    message.content["arrays"] = arrays
    return message


def test_a_server_optimiser_steps_the_parameters_and_leaves_buffers_to_fedavg():
    cfg = load_config({"aggregator": "fedadam", "server-learning-rate": 0.1})
    aggregation = Aggregation.from_config(cfg, buffers=["bn.running_var"])
    start = ArrayRecord({"w": torch.ones(3), "bn.running_var": torch.ones(3)})
    config = ConfigRecord({})
    aggregation.configure(1, start, config, grid=None)  # FedOpt keeps the current arrays; nobody is sampled
    arrays, _ = aggregation.aggregate(1, [update(1, 0.2), update(2, 0.4, examples=30)], start)
    new = arrays.to_torch_state_dict()
    # FedAvg's mean of the running variance (0.25 x 0.25 + 0.75 x 0.45); Adam's first step on w:
    # eta x sqrt(1 - 0.99^2) / (1 - 0.9^2) x m / (sqrt(v) + tau) with m = 0.1 d, v = 0.01 d^2, d = 0.35
    assert new["bn.running_var"] == pytest.approx(torch.full((3,), 0.4), abs=1e-6)
    step = 0.1 * np.sqrt(1 - 0.99 ** 2) / (1 - 0.9 ** 2) * 0.035 / (np.sqrt(0.01 * 0.35 ** 2) + 1e-3)
    assert new["w"] == pytest.approx(torch.full((3,), 1.0 + step), abs=1e-5)
    # what it learned survives a checkpoint: after a reload the next step is the same, and
    # differs from a fresh aggregator's
    state = aggregation.state_dict()
    steps = []
    for agg in (aggregation, Aggregation.from_config(cfg, buffers=["bn.running_var"]),
                Aggregation.from_config(cfg, buffers=["bn.running_var"])):
        if len(steps) == 1:
            agg.load_state_dict(state)
        agg.configure(2, arrays, ConfigRecord({}), grid=None)
        steps.append(agg.aggregate(2, [update(1, 0.6)], start)[0]["w"].numpy().tolist())
    assert steps[0] == steps[1] != steps[2]


def test_fedprox_sends_its_mu_and_the_term_keeps_local_training_near_the_global_model():
    from data import split_of
    from models import get_workload

    config = ConfigRecord({})
    Aggregation.from_config(load_config({"aggregator": "fedprox", "fedprox-mu": 0.5})).configure(
        1, ArrayRecord({"w": torch.ones(1)}), config, grid=None)
    assert config["proximal-mu"] == 0.5  # Flower's FedProx key, read by SpikeFed's ClientApp
    cfg = load_config({"local-epochs": 3, "lr": 0.05})
    split, workload = split_of(cfg), get_workload("classify")
    data = (split.x_train[:128], split.y_train[:128])
    drift = {}
    for mu in (0.0, 50.0):
        torch.manual_seed(0)
        model = workload.build_model(cfg, split.spec)
        start = [p.detach().clone() for p in model.parameters()]
        workload.train(model, data, cfg, seed=0, proximal_mu=mu)
        drift[mu] = sum((p.detach() - s).pow(2).sum().item() for p, s in zip(model.parameters(), start))
    assert drift[50.0] < 0.5 * drift[0.0]


def test_a_server_optimiser_under_dp_noise_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="aggregator='fedadam' with dp-noise-multiplier=1") as err:
        load_config({"aggregator": "fedadam", "dp-noise-multiplier": 1.0})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="aggregator"):
        load_config({"aggregator": "fedsgd"})
    load_config({"aggregator": "fedprox", "dp-noise-multiplier": 1.0})  # FedProx's server step is FedAvg's


def test_afedsnn_weights_an_update_by_its_examples_and_how_typical_its_spike_rate_is():
    from strategies.aggregators import afedsnn_weights

    def rated(node, rate, examples, value):
        message = _reply_arrays(node, ArrayRecord({"w": torch.full((2,), value)}), examples)
        message.content["metrics"]["firing-after/00/lif"] = [rate, rate]
        return message

    updates = [rated(1, 0.10, 10, 0.0), rated(2, 0.12, 30, 1.0), rated(3, 0.50, 10, 2.0)]
    weights = afedsnn_weights(updates)
    # n_i / n x 1/2 (age 0) x exp(-(r_i - mu)^2 / (2 sigma^2)) / sqrt(2 pi sigma), mu, sigma of the rates
    rates = np.array([0.10, 0.12, 0.50])
    mu, sigma = rates.mean(), rates.std()
    expected = np.array([10, 30, 10]) / 50 / 2 * np.exp(-(rates - mu) ** 2 / (2 * sigma ** 2)) / np.sqrt(2 * np.pi * sigma)
    assert weights == pytest.approx(expected.tolist())
    cfg = load_config({"aggregation-weights": "afedsnn"})
    arrays, _ = Aggregation.from_config(cfg).aggregate(1, updates, ArrayRecord({"w": torch.zeros(2)}))
    assert arrays["w"].numpy() == pytest.approx(np.full(2, (expected @ [0.0, 1.0, 2.0]) / expected.sum()), rel=1e-5)
    # the client with the atypical rate (0.5, weights 2.0) weighs less than under FedAvg, whose mean is 1.0
    assert arrays["w"].numpy()[0] < 0.95
    with pytest.raises(ConfigError, match="aggregation-weights='afedsnn' with dp-noise-multiplier=1"):
        load_config({"aggregation-weights": "afedsnn", "dp-noise-multiplier": 1.0})


def test_a_rounds_clock_adds_its_exchanges_train_upload_and_evaluation(tmp_path, task_identity):
    """SFedCA's round through the real ClientApp (tests/test_sfedca.py's in-process grid):
    devices of 1 ms per pass and a bandwidth that makes messages take under a microsecond.
    The candidates train (discovery says 1 example each: 3 x 1 x 1 + 2 passes), the upload
    phase computes nothing, and federated evaluation costs the samples each client evaluated."""
    from test_sfedca import LocalGrid, federation, one_round

    from server.config import KEYS

    trace = write_trace(tmp_path / "trace", {0: {"computation": 1.0, "communication": 1e9}})
    cfg, strategy, arrays = federation(devices=trace, **{"fraction-evaluate": 1.0})
    grid = LocalGrid(cfg)
    one_round(strategy, grid, cfg, arrays)
    trained = strategy.record.sim_seconds
    assert trained == pytest.approx(5 / 1000, rel=1e-3)
    messages = strategy.configure_evaluate(1, arrays, ConfigRecord(cfg.for_clients(KEYS)), grid)
    replies = grid.send_and_receive(messages)
    strategy.aggregate_evaluate(1, replies)
    evaluated = [int(r.content["metrics"]["num-examples"]) for r in replies]
    # each client evaluated 45 test samples (discovery's count, 1, would give 1 ms)
    assert max(evaluated) > 1 and strategy.record.sim_seconds == pytest.approx(trained + max(evaluated) / 1000, rel=1e-3)
