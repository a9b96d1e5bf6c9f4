"""Differential privacy in SpikeFed: the clipping of a model update (Flower's FlatClip,
for its fixed-clipping DP wrappers, :mod:`strategies.privacy`), and local differential
privacy for the firing statistics a client sends SFedCA (``sfedca-dp-epsilon``, off at
``inf``, the default).

Each client releases only the statistic vectors SFedCA's rule reads (every other firing
list is left out of the reply): normalised to sum 1 (a distribution over classes: two
local datasets move it by at most sqrt(2) in L2, the sensitivity), plus Gaussian noise of
standard deviation z x sqrt(2), then clipped to [0, 1] (post-processing). z is the
smallest noise multiplier whose releases in one round compose to ``sfedca-dp-epsilon`` at
``sfedca-dp-delta``; the server counts each client's releases over the run and reports
the largest epsilon spent.

Accounting: Flower's own RDP accountant (``flwr.supercore.privacy_accounting``, backed by
Google's dp-accounting), the one Flower's DP strategy wrappers use, so a run's statistics
and its model updates are accounted the same way. No sampling amplification is claimed: a
client knows when it is asked.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.supercore.differential_privacy import add_gaussian_noise_inplace, compute_clip_model_update
from flwr.supercore.privacy_accounting import (GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig,
                                               SamplingMethod)
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

from core.protocol import CLASS_AFTER, CLASS_BEFORE, FIRING_AFTER, FIRING_BEFORE, statistic_keys

SENSITIVITY = math.sqrt(2.0)  # L2 distance between two distributions over classes, at most


def enabled(cfg: Mapping[str, Any]) -> bool:
    return cfg["strategy"] == "sfedca" and math.isfinite(cfg["sfedca-dp-epsilon"])


def released(cfg: Mapping[str, Any], kind: str) -> tuple[str, ...]:
    """Which statistics (``before``, ``after``) a reply of ``kind`` (train or query) releases:
    what the rule reads (top-credit: both; balance: the trained model's after training, the
    received model's in the query when it chooses before training)."""
    if cfg["sfedca-rule"] == "top-credit":
        return ("before", "after") if kind == "train" else ()
    if cfg["sfedca-when"] == "before":
        return ("before",) if kind == "query" else ()
    return ("after",) if kind == "train" else ()


def releases_per_round(cfg: Mapping[str, Any]) -> int:
    return 2 if cfg["sfedca-rule"] == "top-credit" else 1


@functools.lru_cache(maxsize=1024)
def epsilon_spent(noise_multiplier: float, delta: float, releases: int) -> float:
    """Epsilon at ``delta`` after ``releases`` Gaussian releases with ``noise_multiplier``."""
    accountant = RdpAccountant(PrivacyConfig(target_delta=delta, population_size=1,
                                             neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                             sampling_method=SamplingMethod.NO_AMPLIFICATION))
    accountant.compose(GaussianPrivacyEvent(noise_multiplier, 1, 1), count=releases)
    return accountant.get_epsilon(delta)


@functools.lru_cache(maxsize=64)
def noise_multiplier(epsilon: float, delta: float, releases: int) -> float:
    """The smallest noise multiplier (to 0.1 %) whose ``releases`` compose to at most ``epsilon`` at ``delta``."""
    low, high = 1e-2, 1.0
    while epsilon_spent(high, delta, releases) > epsilon:
        low, high = high, high * 2
    while high / low > 1.001:
        middle = math.sqrt(low * high)
        low, high = (middle, high) if epsilon_spent(middle, delta, releases) > epsilon else (low, middle)
    return high


def privatise(vector: list[float], noise: float, rng: np.random.Generator) -> list[float]:
    """The Gaussian mechanism on ``vector`` normalised to sum 1 (a silent one: uniform)."""
    v = np.asarray(vector, dtype=float)
    p = v / v.sum() if v.sum() > 0 else np.full(len(v), 1.0 / len(v))
    return np.clip(p + rng.normal(0.0, noise * SENSITIVITY, len(p)), 0.0, 1.0).tolist()


def private_statistics(metrics: Mapping[str, Any], cfg: Mapping[str, Any], kind: str,
                       rng: np.random.Generator) -> dict[str, Any]:
    """``metrics`` with every firing statistic left out but the released ones, privatised."""
    keys = statistic_keys(tuple(metrics), cfg["sfedca-statistic"])
    noise = noise_multiplier(cfg["sfedca-dp-epsilon"], cfg["sfedca-dp-delta"], releases_per_round(cfg))
    out = {k: v for k, v in metrics.items() if not k.startswith((FIRING_BEFORE, FIRING_AFTER, CLASS_BEFORE,
                                                                 CLASS_AFTER))}
    for phase in released(cfg, kind):
        if keys.get(phase):
            out[keys[phase]] = privatise(metrics[keys[phase]], noise, rng)
    return out



def floating(reference: ArrayRecord) -> list[str]:
    """The keys of ``reference``'s floating-point arrays: the model update a DP release
    covers (an integer buffer such as BatchNorm's step count is not data)."""
    return [k for k in reference if np.issubdtype(reference[k].numpy().dtype, np.floating)]


def clip_update(arrays: ArrayRecord, reference: ArrayRecord, clipping_norm: float) -> ArrayRecord:
    """``arrays`` with their update from ``reference`` clipped to ``clipping_norm`` (L2 over
    every floating-point array together: Flower's compute_clip_model_update); integer
    buffers take the reference's values."""
    keys = floating(reference)
    params = [arrays[k].numpy().copy() for k in keys]
    compute_clip_model_update(params, [reference[k].numpy() for k in keys], clipping_norm)
    clipped = dict(zip(keys, params))
    return ArrayRecord({k: Array(np.asarray(clipped[k])) if k in clipped else reference[k] for k in reference})


def add_noise(arrays: ArrayRecord, std: float) -> ArrayRecord:
    """``arrays`` plus Gaussian noise of ``std`` on every floating-point array (Flower's
    add_gaussian_noise_inplace, which draws from numpy's global generator)."""
    keys = floating(arrays)
    params = [arrays[k].numpy().copy() for k in keys]
    add_gaussian_noise_inplace(params, std)
    noisy = dict(zip(keys, params))
    return ArrayRecord({k: Array(np.asarray(noisy[k])) if k in noisy else arrays[k] for k in arrays})
