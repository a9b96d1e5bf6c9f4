"""Non-IID partitioning with flwr-datasets' partitioners.

The partitioners run over an in-memory ``datasets.Dataset`` of (label, index) rows;
a partition is the list of training-sample indices it receives. The partitions are
cached under ``data-dir/partitions/`` (named by every key they depend on), so that the
clients of a simulation read what the ServerApp computed at start.
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.config import ConfigError, RunConfig, above, at_least, choice
from data.sources import cached_arrays, split_of

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner

PARTITIONERS = ("dirichlet", "iid", "pathological", "shards")

# Run-config keys of the partitioning.
KEYS = {
    "partitioner": choice("dirichlet", PARTITIONERS, meaning=(
        "`iid`, `dirichlet`, `pathological`, `shards` (flwr-datasets partitioners, by label)")),
    "num-partitions": at_least(20, 1, meaning="number of clients (= SuperNodes)"),
    "dirichlet-alpha": above(0.5, 0, meaning="Dirichlet concentration, > 0 (smaller = more skew)"),
    "min-partition-size": at_least(5, 0, meaning="smallest Dirichlet partition accepted"),
    "classes-per-client": at_least(2, 1, meaning="classes per client for `pathological`"),
    "shards-per-client": at_least(2, 1, meaning="shards per client for `shards`"),
}
# What the partitions depend on: the keys above and the training split's.
SPLIT_KEYS = ("dataset", "data-dir", "test-fraction", "max-train-samples", "seed")


def partitioner(cfg: RunConfig) -> Partitioner:
    """The flwr-datasets partitioner ``cfg`` names (imported here: a client that reads its
    partitions from the cache never loads flwr-datasets, which takes seconds to import)."""
    from flwr_datasets.partitioner import (DirichletPartitioner, IidPartitioner, PathologicalPartitioner,
                                           ShardPartitioner)

    if cfg.partitioner == "iid":
        return IidPartitioner(num_partitions=cfg.num_partitions)
    if cfg.partitioner == "dirichlet":
        return DirichletPartitioner(num_partitions=cfg.num_partitions, partition_by="label",
                                    alpha=cfg.dirichlet_alpha, min_partition_size=cfg.min_partition_size,
                                    seed=cfg.seed)
    if cfg.partitioner == "pathological":
        # client i always gets class i mod C: every class is held by some client
        return PathologicalPartitioner(num_partitions=cfg.num_partitions, partition_by="label",
                                       num_classes_per_partition=cfg.classes_per_client,
                                       class_assignment_mode="first-deterministic", seed=cfg.seed)
    return ShardPartitioner(num_partitions=cfg.num_partitions, partition_by="label",
                            num_shards_per_partition=cfg.shards_per_client, seed=cfg.seed)


def cache_path(cfg: RunConfig) -> Path:
    """Where the partitions of ``cfg`` are kept (under data-dir, named by what they depend on)."""
    keys = {k: cfg[k] for k in (*SPLIT_KEYS, *KEYS)} | {"flwr-datasets": version("flwr-datasets"), "format": 2}
    digest = hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cfg.data_dir) / "partitions" / f"{digest}.npz"


@functools.lru_cache(maxsize=8)
def partition_indices(cfg: RunConfig) -> tuple[np.ndarray, ...]:
    """Training-sample indices of every partition: read from the cache, else computed with
    flwr-datasets and cached (the ServerApp computes them at start; its clients read them)."""
    def concatenated() -> dict[str, np.ndarray]:  # two arrays, not one per partition: 100,000 read fast
        parts = compute_partitions(cfg)
        return {"indices": np.concatenate(parts), "ends": np.cumsum([len(p) for p in parts])}

    stored = cached_arrays(cache_path(cfg), concatenated)
    return tuple(np.split(stored["indices"], stored["ends"][:-1]))


def compute_partitions(cfg: RunConfig) -> tuple[np.ndarray, ...]:
    """Run the partitioner; ConfigError with advice when it cannot split the data."""
    import datasets

    labels = split_of(cfg).y_train
    rows = datasets.Dataset.from_dict({"label": labels, "index": np.arange(len(labels))})
    part = partitioner(cfg)
    # IidPartitioner shards contiguously: shuffle first so that IID means IID.
    part.dataset = rows.shuffle(seed=cfg.seed)
    try:
        with warnings.catch_warnings():  # Dirichlet re-draws warn on every attempt; failure is reported below
            warnings.filterwarnings("ignore", "The specified min_partition_size", UserWarning)
            parts = tuple(np.asarray(part.load_partition(i)["index"], dtype=np.int64)
                          for i in range(cfg.num_partitions))
        if any(len(p) == 0 for p in parts):
            raise ValueError(f"partition {[len(p) for p in parts].index(0)} is empty.")
        return parts
    except ValueError as err:
        hint = {
            "dirichlet": "lower min-partition-size, raise dirichlet-alpha or use fewer num-partitions",
            "pathological": "lower classes-per-client or use fewer num-partitions",
            "shards": "lower shards-per-client or use fewer num-partitions",
        }.get(cfg.partitioner, "use fewer num-partitions")
        reason = str(err).splitlines()[0]
        raise ConfigError(
            f"partitioner={cfg.partitioner!r} cannot split {cfg.dataset} ({len(labels)} "
            f"training samples) into num-partitions={cfg.num_partitions}: {reason} "
            f"Change: {hint}"
        ) from None


def partition_sizes(cfg: RunConfig) -> list[int]:
    """Number of training samples per partition; raises ConfigError if unsplittable."""
    return [len(p) for p in partition_indices(cfg)]


def client_train_data(cfg: RunConfig, partition_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The (images, labels) of one client's training partition."""
    idx = partition_indices(cfg)[partition_id]
    split = split_of(cfg)
    return split.x_train[idx], split.y_train[idx]


def client_test_data(cfg: RunConfig, partition_id: int) -> tuple[np.ndarray, np.ndarray]:
    """One client's share of the held-out test split (IID, disjoint across clients).

    Used for federated evaluation: the clients' shares together are the test split.
    """
    split = split_of(cfg)
    order = np.random.default_rng(cfg.seed).permutation(len(split.y_test))
    idx = np.array_split(order, cfg.num_partitions)[partition_id]
    return split.x_test[idx], split.y_test[idx]
