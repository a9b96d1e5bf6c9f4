"""Dataset registry: each loader returns images as float32 [N, C, H, W] in [0, 1].

`digits` (scikit-learn, embedded, no download) is the default. MNIST, Fashion-MNIST and
CIFAR-10 are read by torchvision from files already under ``data-dir`` (torchvision's
layout); nothing is downloaded. torchvision is imported only for those, so that digits
runs where no torchvision matching the installed torch is present (the CPU Docker image).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from server.config import ConfigError


@dataclass(frozen=True)
class DatasetSpec:
    """Shape of one sample and the number of classes."""

    channels: int
    size: int
    num_classes: int


@dataclass(frozen=True)
class Split:
    """A dataset's train and held-out test split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    spec: DatasetSpec


def _digits(data_dir: str, test_fraction: float, seed: int) -> Split:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # pixel values are 0..16
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return Split(x_tr, y_tr, x_te, y_te, DatasetSpec(1, 8, 10))


def _synthetic(data_dir: str, test_fraction: float, seed: int) -> Split:
    """MNIST-sized (60,000 + 10,000) 8x8 images: a digits image of the class plus Gaussian
    noise. Learnable and embedded, for scale benchmarks with thousands of clients; not a
    benchmark of accuracy."""
    base = _digits(data_dir, test_fraction, seed)
    rng = np.random.default_rng(seed)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        pick = rng.integers(len(base.y_train), size=n)
        noise = rng.normal(0, 0.15, size=(n, *base.x_train.shape[1:])).astype(np.float32)
        return np.clip(base.x_train[pick] + noise, 0, 1), base.y_train[pick]

    return Split(*draw(60_000), *draw(10_000), base.spec)


def _reader(label: str) -> type:
    """torchvision's reader class for ``label``; CIFAR-10's checks that the batch files
    exist but not their published MD5 sums, so that subsets and the tests' small files load."""
    import torchvision.datasets as tvd

    if label != "CIFAR10":
        return getattr(tvd, label)

    class CIFAR10Files(tvd.CIFAR10):
        train_list = [[name, None] for name, _ in tvd.CIFAR10.train_list]
        test_list = [[name, None] for name, _ in tvd.CIFAR10.test_list]
        meta = {**tvd.CIFAR10.meta, "md5": None}

    return CIFAR10Files


def _torchvision(label: str, spec: DatasetSpec) -> Callable[[str, float, int], Split]:
    """Loader for a torchvision dataset with an official train/test split."""

    def load(data_dir: str, test_fraction: float, seed: int) -> Split:
        cls = _reader(label)
        try:
            parts = [cls(root=data_dir, train=train, download=False) for train in (True, False)]
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
            folder = Path(data_dir).resolve()
            raise ConfigError(
                f"no readable {label} files under data-dir='{folder}' ({err}); put torchvision's "
                f"{label} folder there, or use dataset='digits'"
            ) from None
        arrays = []
        for part in parts:
            images = np.asarray(part.data, dtype=np.float32) / 255.0
            images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
            arrays += [images, np.asarray(part.targets, dtype=np.int64)]
        return Split(*arrays, spec)

    return load


DATASETS: dict[str, Callable[[str, float, int], Split]] = {
    "digits": _digits,
    "synthetic": _synthetic,
    "mnist": _torchvision("MNIST", DatasetSpec(1, 28, 10)),
    "fashion-mnist": _torchvision("FashionMNIST", DatasetSpec(1, 28, 10)),
    "cifar10": _torchvision("CIFAR10", DatasetSpec(3, 32, 10)),
}


@functools.lru_cache(maxsize=4)
def load_split(dataset: str, data_dir: str, test_fraction: float, seed: int) -> Split:
    """Load ``dataset`` once per process (Ray actors reuse it across rounds)."""
    return DATASETS[dataset](data_dir, test_fraction, seed)
