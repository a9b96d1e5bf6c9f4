"""Fault injection (run config `fault-crash`, `fault-straggle`, `fault-corrupt`; off by
default): the server assigns faults to a share of each round's selected clients with a
seeded generator and tells each client its fault in the train message's config; the
ClientApp then crashes, sleeps past the round timeout, or corrupts its reply
(:mod:`clients.faults`)."""

from __future__ import annotations

import math

import numpy as np

CORRUPTIONS = ("nan", "inf", "shape", "dtype", "missing-key", "firing-rate", "num-examples")


def assign(rng: np.random.Generator, partition_ids: list[int], crash: float, straggle: float,
           corrupt: float) -> dict[int, str]:
    """Partition id -> fault for ``round(share * len(partition_ids))`` clients of each kind
    (rounding half up), disjoint, drawn by ``rng``; a corruption kind is drawn per client."""
    order = [partition_ids[i] for i in rng.permutation(len(partition_ids))]
    counts = [math.floor(share * len(order) + 0.5) for share in (crash, straggle, corrupt)]
    kinds = ["crash"] * counts[0] + ["straggle"] * counts[1] + [
        f"corrupt:{CORRUPTIONS[i]}" for i in rng.integers(len(CORRUPTIONS), size=counts[2])]
    return dict(zip(order, kinds))
