"""Datasets and non-IID partitioning, shared by the ServerApp and the ClientApp."""

from core.config import read_by_clients
from data import partition, sources
from data.partition import PARTITIONERS, client_test_data, client_train_data, partition_sizes
from data.sources import DATASETS, DatasetSpec, Split, load_split, split_of

KEYS = read_by_clients({**sources.KEYS, **partition.KEYS})  # the run-config keys of data/

__all__ = [
    "DATASETS",
    "KEYS",
    "PARTITIONERS",
    "DatasetSpec",
    "Split",
    "client_test_data",
    "client_train_data",
    "load_split",
    "partition_sizes",
    "split_of",
]
