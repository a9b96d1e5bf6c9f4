"""Fault injection (run config `fault-crash`, `fault-straggle`, `fault-corrupt`; off by
default): the server assigns faults to a share of each round's selected clients with a
seeded generator and tells each client its fault in the train message's config; the
ClientApp then crashes, sleeps past the round timeout, or corrupts its reply."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from core.protocol import FIRING_AFTER

CORRUPTIONS = ("nan", "inf", "shape", "dtype", "missing-key", "firing-rate", "num-examples")


class InjectedCrash(RuntimeError):
    """Raised by a ClientApp told to crash."""


def assign(rng: np.random.Generator, partition_ids: list[int], crash: float, straggle: float,
           corrupt: float) -> dict[int, str]:
    """Partition id -> fault for ``round(share * len(partition_ids))`` clients of each kind
    (rounding half up), disjoint, drawn by ``rng``; a corruption kind is drawn per client."""
    order = [partition_ids[i] for i in rng.permutation(len(partition_ids))]
    counts = [math.floor(share * len(order) + 0.5) for share in (crash, straggle, corrupt)]
    kinds = ["crash"] * counts[0] + ["straggle"] * counts[1] + [
        f"corrupt:{CORRUPTIONS[i]}" for i in rng.integers(len(CORRUPTIONS), size=counts[2])]
    return dict(zip(order, kinds))


def before_training(fault: str, round_timeout: float) -> None:
    """Crash, or straggle: sleep until the server has stopped waiting for this reply."""
    if fault == "crash":
        raise InjectedCrash("injected crash (fault-crash)")
    if fault == "straggle":
        time.sleep(round_timeout + 2)


def corrupt(fault: str, arrays: dict[str, torch.Tensor], metrics: dict) -> None:
    """Apply ``corrupt:<kind>`` to the reply's arrays and metrics, in place."""
    kind = fault.removeprefix("corrupt:")
    first = next(k for k, v in arrays.items() if v.is_floating_point())
    if kind == "nan":
        arrays[first] = torch.full_like(arrays[first], float("nan"))
    elif kind == "inf":
        arrays[first] = arrays[first].clone().fill_(float("inf"))
    elif kind == "shape":
        arrays[first] = torch.zeros(arrays[first].numel() + 1)
    elif kind == "dtype":
        arrays[first] = arrays[first].double()
    elif kind == "missing-key":
        del arrays[first]
    elif kind == "firing-rate":
        key = next(k for k in metrics if k.startswith(FIRING_AFTER))
        metrics[key] = [1.5 for _ in metrics[key]]
    elif kind == "num-examples":
        metrics["num-examples"] = 0
