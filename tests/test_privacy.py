"""Local DP of SFedCA's statistics (core/privacy.py): calibration by Flower's RDP
accountant, what a reply releases, the spent epsilon per round; and the one-line refusals."""

import math

import numpy as np
import pytest

from core import privacy
from core.config import ConfigError
from core.protocol import CLASS_AFTER, CLASS_BEFORE, FIRING_AFTER, FIRING_BEFORE, firing_metrics
from server.config import KEYS, load_config


@pytest.mark.parametrize("epsilon", [1.0, 4.0, 16.0])
@pytest.mark.parametrize("releases", [1, 2])
def test_the_noise_is_the_least_that_keeps_a_rounds_releases_within_epsilon(epsilon, releases):
    z = privacy.noise_multiplier(epsilon, 1e-5, releases)
    assert privacy.epsilon_spent(z, 1e-5, releases) <= epsilon < privacy.epsilon_spent(z / 1.01, 1e-5, releases)
    assert privacy.epsilon_spent(z, 1e-5, 10 * releases) > 3 * epsilon  # ten rounds cost more than three


def test_the_mechanism_normalises_then_adds_noise_of_the_calibrated_spread():
    rng = np.random.default_rng(0)
    draws = np.array([privacy.privatise([2.0, 2.0, 0.0, 0.0], 0.05, rng) for _ in range(4000)])
    assert draws.min() >= 0 and draws.max() <= 1
    np.testing.assert_allclose(draws.mean(0), [0.5, 0.5, 0.02, 0.02], atol=0.01)  # zero-clipped entries lift
    assert draws[:, 0].std() == pytest.approx(0.05 * math.sqrt(2), rel=0.05)


def metrics():
    return {"num-examples": 12, "train-loss": 0.5,
            **firing_metrics(FIRING_BEFORE, {"hidden": [0.2, 0.3], "out": [0.1, 0.3, 0.0]}),
            **firing_metrics(FIRING_AFTER, {"hidden": [0.2, 0.4], "out": [0.0, 0.6, 0.0]}),
            CLASS_BEFORE: [0.1, 0.2, 0.0], CLASS_AFTER: [0.1, 0.5, 0.0]}


@pytest.mark.parametrize("rule, when, kind, released", [
    ("balance", "after", "train", ["firing-after/01/out"]),
    ("balance", "cached", "train", ["firing-after/01/out"]),
    ("balance", "before", "train", []),
    ("balance", "before", "query", ["firing-before/01/out"]),
    ("top-credit", "after", "train", ["firing-after/01/out", "firing-before/01/out"]),
])
def test_a_reply_under_dp_releases_only_what_the_rule_reads(rule, when, kind, released):
    cfg = load_config({"strategy": "sfedca", "sfedca-rule": rule, "sfedca-when": when, "sfedca-dp-epsilon": 4.0})
    out = privacy.private_statistics(metrics(), cfg, kind, np.random.default_rng(0))
    assert sorted(k for k in out if k.startswith(("firing", "class"))) == released
    assert out["num-examples"] == 12 and out["train-loss"] == 0.5
    for key in released:
        assert len(out[key]) == 3 and out[key] != metrics()[key] and all(0 <= v <= 1 for v in out[key])


@pytest.mark.parametrize("sets, message", [
    ({"strategy": "sfedca", "sfedca-dp-epsilon": 0}, "sfedca-dp-epsilon=0"),
    ({"strategy": "sfedca", "sfedca-dp-epsilon": -1}, "sfedca-dp-epsilon=-1"),
    ({"strategy": "sfedca", "sfedca-dp-delta": 0}, "sfedca-dp-delta=0"),
    ({"strategy": "random", "sfedca-dp-epsilon": 4}, "only SFedCA asks for statistics"),
])
def test_bad_privacy_settings_are_one_line(sets, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(sets)
    assert "\n" not in str(err.value) and "accepted" in str(err.value)


@pytest.mark.parametrize("side", ["server", "client"])
def test_flowers_fixed_clipping_around_two_phase_sfedca_clips_each_aggregated_update_and_sizes_the_noise_by_them(
        task_identity, side):
    from flwr.app import ConfigRecord, MessageType
    from test_sfedca import LocalGrid, federation

    from core.protocol import UPLOAD
    from strategies import privacy as dp

    norm, z = 0.05, 0.5
    cfg, strategy, arrays = federation(**{"dp-noise-multiplier": z, "dp-clipping-norm": norm, "dp-clipping": side})
    wrapped = dp.wrap(strategy, cfg)
    assert isinstance(wrapped, dp.ClientSideFixedClipping if side == "client" else dp.ServerSideFixedClipping)
    # the noise is sized for a uniform mean: the aggregator (here FedAvg) weighs every update the same
    # (this federation's clients hold equal shares, so the mean below would not tell)
    assert strategy.aggregation.aggregator.weighted_by_key == dp.UNIFORM
    grid = LocalGrid(cfg)
    np.random.seed(0)
    messages = wrapped.configure_train(1, arrays, ConfigRecord(cfg.for_clients(KEYS)), grid)
    aggregated, _ = wrapped.aggregate_train(1, grid.send_and_receive(messages))
    uploads = [grid.raw[id(r)] for _, r in grid.sent(UPLOAD)]
    assert len(messages) == 4 and len(uploads) == 2 == len(wrapped.record.selected)  # m = 4 sampled, k = 2 released
    assert not any(m.content.array_records for _, m in grid.sent(MessageType.TRAIN))  # the first phase: no weights
    keys = privacy.floating(arrays)
    start = {k: arrays[k].numpy() for k in keys}
    by_hand = []
    for upload in uploads:  # Flower's FlatClip, by hand: the update scaled to at most the norm
        update = {k: upload[k] - start[k] for k in keys}
        length = math.sqrt(sum(float((u ** 2).sum()) for u in update.values()))
        if side == "client":
            assert length <= norm * (1 + 1e-4)  # the ClientApp clipped the weights it kept for the upload
        by_hand.append({k: start[k] + update[k] * min(1.0, norm / length) for k in keys})
    if side == "server":
        assert max(math.sqrt(sum(float(((u[k] - start[k]) ** 2).sum()) for k in keys)) for u in uploads) > norm
    mean = {k: (by_hand[0][k] + by_hand[1][k]) / 2 for k in keys}  # uniform weights
    residual = np.concatenate([(aggregated[k].numpy() - mean[k]).ravel() for k in keys])
    assert residual.std() == pytest.approx(z * norm / 2, rel=0.05)  # noise sized by the 2 aggregated, not 4
    assert abs(residual.mean()) < 4 * z * norm / 2 / math.sqrt(residual.size)
    assert wrapped.record.model_epsilon == pytest.approx(privacy.epsilon_spent(z, 1e-5, 1), rel=1e-6)


def test_the_probe_compares_each_clients_statistics_with_its_label_histogram():
    from experiments.simulation import resolve
    from experiments.statistics_probe import compare, probe

    assert compare([2.0, 0.0], np.array([1.0, 0.0])) == (1.0, 0.0)
    assert compare([0.0, 1.0], np.array([1.0, 0.0])) == (0.0, 2.0)
    cfg = resolve({"num-partitions": 2, "partitioner": "pathological", "classes-per-client": 1, "local-epochs": 1,
                   "timesteps": 2, "fraction-train": 0.5, "max-train-samples": 200}).cfg
    frame = probe(cfg, [0, 1], [4.0]).set_index(["round", "statistic", "phase", "epsilon"])
    assert len(frame) == 2 * 2 * 2 * 2
    # one class per client: after local training the output rates point at it; the class-wise
    # intensity is nonzero on that class only, before training too (once the model fires: round 1)
    assert frame.loc[(1, "output", "after", math.inf), "l1"] < frame.loc[(0, "output", "before", math.inf), "l1"]
    assert frame.loc[(1, "class", "before", math.inf), "l1"] == pytest.approx(0, abs=1e-9)
    assert frame.loc[(1, "output", "after", math.inf), "l1"] < frame.loc[(1, "output", "after", 4.0), "l1"]
