"""Heterogeneous devices and the simulated clock of a round (run config ``devices``).

Each client gets a device: compute latency (milliseconds per sample, forward pass), uplink
and downlink bandwidth (kbit/s) and an availability (the probability that it is online in a
round). A round's simulated seconds are its critical path as the strategy's protocol makes
it: every exchange (the train messages; SFedCA's upload phase; Power-of-Choice's and
SFedCA-before's queries; federated evaluation) lasts as long as its slowest client, whose
time is downlink bytes / downlink + work x latency + uplink bytes / uplink. A message left
unanswered costs the round's timeout. Offline clients cannot be chosen.

The cost model is FedScale's (Lai et al., "FedScale: Benchmarking Model and System
Performance of Federated Learning at Scale", ICML 2022; ``get_completion_time`` of its
client metadata): a training sample costs 3 forward passes. The work of a train message is
the one the energy estimate counts (``clients/app.py``): num-examples x local epochs
training samples and 2 x num-examples forward passes (the firing statistics before and
after); a query is num-examples forward passes, an evaluation the evaluated samples. The
server knows each client's num-examples from discovery, so the clock is a function of the
run config and seed: a rerun gives the same seconds (measured wall times would not).

Where devices come from:

- ``mobile``: a documented distribution, drawn per client from the run's seed. Latency is
  log-normal around ``devices-sample-ms`` (sigma 0.8: the 10th-90th percentile devices
  differ 7.8x); uplink log-normal around 5,000 kbit/s (sigma 1), downlink 4x the uplink;
  availability uniform in [0.5, 1].
- a path: FedScale's device-capacity trace (``client_device_capacity``: a pickled dict
  client -> {"computation": ms per sample, "communication": kbit/s}, both directions). Each
  client takes a trace entry drawn with the run's seed; availability 1 (FedScale's
  availability trace, ``client_behave_trace``, is not read). The pickle is read with an
  unpickler that builds no objects, only dicts and numbers. The trace itself is not in
  this repository (FedScale serves it from its data site; no machine here can fetch it).
"""

from __future__ import annotations

import functools
import math
import pickle
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import MessageType

from core.config import ConfigError, Key, RunConfig, above

TRAIN_PASSES = 3.0  # a training sample costs this many forward passes (FedScale's augmentation factor)
MOBILE_SIGMA = 0.8  # log-normal sigma of the compute latency
UPLINK_KBPS, UPLINK_SIGMA, DOWNLINK_FACTOR = 5_000.0, 1.0, 4.0
AVAILABILITY = (0.5, 1.0)

KEYS = {
    "devices": Key("none", meaning=(
        "client devices for the simulated clock: `none`, `mobile` (a documented distribution) or the path of "
        "FedScale's device-capacity trace ([strategies.md](strategies.md#devices))")),
    "devices-sample-ms": above(0.65, 0, meaning=(
        "`devices = mobile`: the median device's milliseconds per sample and forward pass (default: one core of "
        "the 2-core CI machine, Fashion-MNIST 14x14, T = 4)")),
}


@dataclass(frozen=True)
class Device:
    """A client's device: ``compute_ms`` per sample and forward pass, bandwidths in kbit/s,
    ``availability`` the probability of being online in a round."""

    compute_ms: float
    uplink_kbps: float
    downlink_kbps: float
    availability: float = 1.0

    def seconds(self, downlink_bytes: int, uplink_bytes: int, passes: float) -> float:
        """Time to receive ``downlink_bytes``, compute ``passes`` forward passes and send ``uplink_bytes``."""
        return (8 * downlink_bytes / (1000 * self.downlink_kbps) + passes * self.compute_ms / 1000
                + 8 * uplink_bytes / (1000 * self.uplink_kbps))


class _Numbers(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"{module}.{name} is not a number or a dict")


@functools.lru_cache(maxsize=4)  # the config check and every strategy built from it read the same file
def read_trace(path: str) -> tuple[Device, ...]:
    """FedScale's device-capacity trace at ``path``, in key order; ConfigError when unreadable."""
    try:
        with open(path, "rb") as f:
            trace = _Numbers(f).load()
        devices = tuple(Device(float(v["computation"]), float(v["communication"]), float(v["communication"]))
                        for _, v in sorted(trace.items(), key=lambda item: str(item[0])))
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"devices={path!r} is not FedScale's device-capacity trace ({type(err).__name__}: {err}); "
                          "accepted: none, mobile, or a pickled dict client -> {'computation': ms, "
                          "'communication': kbit/s}") from None
    bad = next((d for d in devices if not (d.compute_ms > 0 and d.uplink_kbps > 0 and math.isfinite(d.compute_ms)
                                            and math.isfinite(d.uplink_kbps))), None)
    if not devices or bad is not None:
        raise ConfigError(f"devices={path!r}: {'no entries' if not devices else bad}; accepted: every computation "
                          "and communication finite and > 0")
    return devices


def check(cfg: RunConfig) -> None:
    if cfg.devices not in ("none", "mobile"):
        if not Path(cfg.devices).is_file():
            raise ConfigError(f"devices={cfg.devices!r} is neither a known distribution nor a file; accepted: none, "
                              "mobile, or the path of FedScale's device-capacity trace")
        read_trace(cfg.devices)


class Devices:
    """The federation's devices by partition id, their availability per round, and the clock."""

    def __init__(self, devices: dict[int, Device], seed: int = 0, local_epochs: int = 1) -> None:
        self.devices = devices
        self.seed = seed
        self.local_epochs = local_epochs

    @classmethod
    def from_config(cls, cfg: RunConfig, partition_ids: Iterable[int]) -> Devices | None:
        """The devices ``cfg.devices`` gives the clients ``partition_ids``; None when ``none``."""
        if cfg.devices == "none":
            return None
        pids = sorted(partition_ids)
        rng = np.random.default_rng([cfg.seed, zlib.crc32(b"devices")])
        if cfg.devices == "mobile":
            compute = cfg.devices_sample_ms * rng.lognormal(0.0, MOBILE_SIGMA, len(pids))
            uplink = UPLINK_KBPS * rng.lognormal(0.0, UPLINK_SIGMA, len(pids))
            online = rng.uniform(*AVAILABILITY, len(pids))
            return cls({p: Device(float(c), float(u), float(DOWNLINK_FACTOR * u), float(a))
                        for p, c, u, a in zip(pids, compute, uplink, online)}, cfg.seed, cfg.local_epochs)
        trace = read_trace(cfg.devices)
        return cls({p: trace[int(i)] for p, i in zip(pids, rng.integers(len(trace), size=len(pids)))}, cfg.seed,
                   cfg.local_epochs)

    def online(self, server_round: int) -> set[int]:
        """The partition ids online in ``server_round`` (each with its device's availability)."""
        draws = np.random.default_rng([self.seed, server_round, zlib.crc32(b"online")]).random(len(self.devices))
        return {p for p, u in zip(sorted(self.devices), draws) if u < self.devices[p].availability}

    def passes(self, message_type: str, num_examples: int) -> float:
        """Forward passes a message of ``message_type`` costs a client holding ``num_examples``:
        a train message local training and the firing statistics before and after, a query
        or an evaluation one pass over the data, the second phase's messages none."""
        if message_type == MessageType.TRAIN:
            return TRAIN_PASSES * num_examples * self.local_epochs + 2 * num_examples
        return float(num_examples) if message_type in (MessageType.QUERY, MessageType.EVALUATE) else 0.0

    def train_seconds(self, partition_id: int, num_examples: int, model_bytes: int) -> float:
        """A train message's expected duration on the client's device (Oort's system utility)."""
        passes = self.passes(MessageType.TRAIN, num_examples)
        return self.devices[partition_id].seconds(model_bytes, model_bytes, passes)

    def phase(self, work: Iterable[tuple[int, int, int | None, float]], timeout: float) -> float:
        """Seconds of one exchange: ``work`` holds (partition id, downlink bytes, uplink bytes
        or None when unanswered, forward passes) per client; the slowest decides."""
        return max((timeout if up is None else self.devices[pid].seconds(down, up, passes)
                    for pid, down, up, passes in work), default=0.0)
