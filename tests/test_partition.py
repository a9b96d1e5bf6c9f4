import numpy as np
import pytest

from data import client_test_data, client_train_data, load_split, partition_sizes
from data.partition import partition_indices
from server.config import ConfigError, load_config


def label_histograms(cfg):
    return np.array([np.bincount(client_train_data(cfg, i)[1], minlength=10)
                     for i in range(cfg.num_partitions)])


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet", "pathological", "shards"])
def test_every_training_sample_lands_in_exactly_one_partition(partitioner):
    cfg = load_config({"partitioner": partitioner, "num-partitions": 10, "dirichlet-alpha": 0.1})
    indices = np.concatenate(partition_indices(cfg))
    assert len(indices) == len(np.unique(indices))
    n_train = len(load_split("digits", cfg.data_dir, cfg.test_fraction, cfg.seed).y_train)
    if partitioner != "shards":  # shards may leave an incomplete last shard out
        assert sorted(indices) == list(range(n_train))


def test_dirichlet_skews_labels_and_iid_does_not():
    iid = label_histograms(load_config({"partitioner": "iid", "num-partitions": 10}))
    skew = label_histograms(load_config({"partitioner": "dirichlet", "dirichlet-alpha": 0.1,
                                         "num-partitions": 10}))

    def mean_top_class_share(h):
        return float(np.mean(h.max(1) / h.sum(1)))

    # IID: every client sees every class in about the global proportion (~0.1 each).
    assert (iid > 0).all() and mean_top_class_share(iid) < 0.2
    # Dirichlet 0.1: most of a client's data comes from few classes.
    assert mean_top_class_share(skew) > 0.4
    assert (skew == 0).sum() > 20


def test_pathological_gives_each_client_k_classes():
    h = label_histograms(load_config({"partitioner": "pathological", "classes-per-client": 2,
                                      "num-partitions": 10}))
    assert ((h > 0).sum(1) <= 2).all()


def test_partitioning_is_seeded():
    a = partition_indices(load_config({"seed": 1}))
    b = partition_indices(load_config({"seed": 1, "run-name": "other"}))
    c = partition_indices(load_config({"seed": 2}))
    assert all((x == y).all() for x, y in zip(a, b))
    assert any(len(x) != len(y) or (x != y).any() for x, y in zip(a, c))


def test_impossible_dirichlet_split_says_what_to_change():
    cfg = load_config({"dirichlet-alpha": 0.05, "num-partitions": 200, "min-partition-size": 20})
    with pytest.raises(ConfigError) as err:
        partition_sizes(cfg)
    assert "min-partition-size" in str(err.value) and "num-partitions=200" in str(err.value)


def test_client_test_shares_cover_the_test_split_once():
    cfg = load_config({"num-partitions": 7})
    split = load_split("digits", cfg.data_dir, cfg.test_fraction, cfg.seed)
    sizes = [len(client_test_data(cfg, i)[1]) for i in range(7)]
    assert sum(sizes) == len(split.y_test) and min(sizes) > 0


def test_partitions_are_cached_and_read_back_without_flwr_datasets(tmp_path):
    """The ServerApp computes the partitions once; a client process reads the same indices
    from data-dir without importing flwr-datasets (seconds per Ray actor)."""
    import subprocess
    import sys

    from data.partition import cache_path

    cfg = load_config({"num-partitions": 7, "data-dir": str(tmp_path), "seed": 3})
    computed = partition_indices(cfg)
    assert cache_path(cfg).exists() and cache_path(cfg) != cache_path(load_config({**cfg, "seed": 4}))
    probe = ("import sys; from server.config import load_config; from data.partition import partition_indices; "
             f"parts = partition_indices(load_config({{'num-partitions': 7, 'data-dir': {str(tmp_path)!r}, 'seed': 3}})); "
             "assert 'flwr_datasets' not in sys.modules; print(' '.join(str(int(p.sum())) for p in parts))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [str(int(p.sum())) for p in computed]
