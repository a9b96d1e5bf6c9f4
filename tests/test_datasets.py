"""MNIST, Fashion-MNIST and CIFAR-10 load through the real torchvision readers from
small files written here in the published formats (no download is possible here)."""

import gzip
import pickle
import struct

import numpy as np
import pytest

from data import DATASETS
from server.config import ConfigError

rng = np.random.default_rng(0)


def write_idx(path, array):
    """IDX file as published by LeCun et al.: magic (ubyte, ndim), big-endian dims, data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist_like(root, folder, n_train=30, n_test=10):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def write_cifar10(root, per_batch=6, n_test=8):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else per_batch
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": list(np.arange(n) % 10)}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_like_files_load(tmp_path, name, folder):
    write_mnist_like(tmp_path, folder)
    split = DATASETS[name](str(tmp_path), 0.2, 0)
    assert split.x_train.shape == (30, 1, 28, 28) and split.x_test.shape == (10, 1, 28, 28)
    assert split.x_train.dtype == np.float32 and 0 <= split.x_train.min() and split.x_train.max() <= 1
    assert list(split.y_train[:12]) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert (split.spec.channels, split.spec.size) == (1, 28)


def test_cifar10_batches_load(tmp_path):
    write_cifar10(tmp_path)
    split = DATASETS["cifar10"](str(tmp_path), 0.2, 0)
    assert split.x_train.shape == (30, 3, 32, 32) and split.x_test.shape == (8, 3, 32, 32)
    assert split.x_train.max() <= 1 and split.spec.channels == 3


def test_missing_files_give_a_clear_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        DATASETS["mnist"](str(tmp_path), 0.2, 0)
    assert "MNIST" in str(err.value) and str(tmp_path) in str(err.value)


def write_gz_idx(folder, n_train=40, n_test=20):
    """The layout Debian's dataset-fashion-mnist installs: gzipped IDX files in one folder."""
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for stem, array in ((f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28))),
                            (f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)):
            write_idx(folder / stem, array)
            (folder / f"{stem}.gz").write_bytes(gzip.compress((folder / stem).read_bytes()))
            (folder / stem).unlink()


def test_fashion_mnist_reads_the_gzipped_files_of_the_debian_package(tmp_path, monkeypatch):
    import data.sources as sources

    system = tmp_path / "usr-share-datasets-fashion-mnist"
    write_gz_idx(system)
    monkeypatch.setitem(DATASETS, "fashion-mnist", sources._mnist_like("FashionMNIST", system))
    split = DATASETS["fashion-mnist"](str(tmp_path / "empty-data-dir"), 0.2, 0)
    assert split.x_train.shape == (40, 1, 28, 28) and split.x_test.shape == (20, 1, 28, 28)
    assert list(split.y_test[:11]) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    # the pixels are the file's bytes / 255
    raw = sources.read_idx(system / "train-images-idx3-ubyte.gz")
    np.testing.assert_allclose(split.x_train[:, 0], raw / 255.0, rtol=1e-6)


def test_a_split_can_be_resized_and_cut_to_a_stratified_subset(tmp_path, monkeypatch):
    import data.sources as sources

    write_gz_idx(tmp_path / "fmnist", n_train=100, n_test=50)
    monkeypatch.setitem(DATASETS, "fashion-mnist", sources._mnist_like("FashionMNIST", tmp_path / "fmnist"))
    full = sources.load_split("fashion-mnist", str(tmp_path), 0.2, 0)
    small = sources.load_split("fashion-mnist", str(tmp_path), 0.2, 0, image_size=14, max_train=30, max_test=20)
    assert small.x_train.shape == (30, 1, 14, 14) and small.x_test.shape == (20, 1, 14, 14)
    assert small.spec.size == 14 and full.spec.size == 28
    assert np.bincount(small.y_train, minlength=10).tolist() == [3] * 10  # 10 per class -> 3 per class
    # area resizing: each 14x14 pixel is the mean of a 2x2 block of the 28x28 image
    first = full.x_train[np.flatnonzero(full.y_train == small.y_train[0])]
    blocks = first[:, 0].reshape(len(first), 14, 2, 14, 2).mean((2, 4))
    assert np.isclose(blocks, small.x_train[0, 0], atol=1e-6).all(axis=(1, 2)).any()
    # bilinear up to 32x32 (as the ESVAE authors' Resize): valid pixels, the same mean brightness
    large = sources.load_split("fashion-mnist", str(tmp_path), 0.2, 0, image_size=32)
    assert large.x_train.shape == (100, 1, 32, 32) and 0 <= large.x_train.min() and large.x_train.max() <= 1
    assert abs(large.x_train.mean() - full.x_train.mean()) < 0.02


def test_a_file_that_is_not_idx_gives_one_line(tmp_path):
    folder = tmp_path / "FashionMNIST" / "raw"
    write_gz_idx(folder)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"<html>not found</html>"))
    with pytest.raises(ConfigError) as err:
        DATASETS["fashion-mnist"](str(tmp_path), 0.2, 0)
    assert "not an IDX file" in str(err.value) and "\n" not in str(err.value)


def test_missing_fashion_mnist_says_how_to_install_it(tmp_path, monkeypatch):
    import data.sources as sources

    monkeypatch.setitem(DATASETS, "fashion-mnist", sources._mnist_like("FashionMNIST", tmp_path / "absent"))
    with pytest.raises(ConfigError) as err:
        DATASETS["fashion-mnist"](str(tmp_path), 0.2, 0)
    assert "apt-get install dataset-fashion-mnist" in str(err.value)


def test_the_digits_split_is_kept_under_data_dir_and_read_back_unchanged(tmp_path):
    first = DATASETS["digits"](str(tmp_path), 0.2, 3)
    (kept,) = (tmp_path / "splits").glob("digits-*-test0.2-seed3.npz")
    with np.load(kept) as stored:  # what later processes read instead of importing scikit-learn
        np.testing.assert_array_equal(stored["x_train"], first.x_train)
    again = DATASETS["digits"](str(tmp_path), 0.2, 3)
    for a, b in ((first.x_train, again.x_train), (first.y_test, again.y_test)):
        np.testing.assert_array_equal(a, b)
    assert len(first.y_train) + len(first.y_test) == 1797 and len(first.y_test) == 360
    other = DATASETS["digits"](str(tmp_path), 0.2, 4)  # another seed, another split
    assert not np.array_equal(other.y_train, first.y_train)
