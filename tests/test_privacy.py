"""Local DP of SFedCA's statistics (core/privacy.py): calibration by Flower's RDP
accountant, what a reply releases, the spent epsilon per round; and the one-line refusals."""

import math

import numpy as np
import pytest

from core import privacy
from core.config import ConfigError
from core.protocol import CLASS_AFTER, CLASS_BEFORE, FIRING_AFTER, FIRING_BEFORE, firing_metrics
from server.config import load_config


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
