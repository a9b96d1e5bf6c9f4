"""Dataset registry: each loader returns images as float32 [N, C, H, W] in [0, 1].

`digits` (scikit-learn, embedded, no download) is the default. MNIST and Fashion-MNIST
are read from the published IDX files (gzipped or not) by :func:`read_idx`: under
``data-dir`` in torchvision's layout (``MNIST/raw``, ``FashionMNIST/raw``) or, for
Fashion-MNIST, where Debian's ``dataset-fashion-mnist`` package puts them
(:data:`SYSTEM_FASHION_MNIST`). CIFAR-10 is read by torchvision from ``data-dir``;
torchvision is imported only for it, so that the other datasets run where no torchvision
matching the installed torch is present (the CPU Docker image). Nothing is downloaded.

:func:`load_split` can shrink a split for small machines: ``image_size`` resizes (area
averaging down, e.g. 28 -> 14; bilinear up, e.g. 28 -> 32) and ``max_train`` / ``max_test`` keep a stratified random subset.
"""

from __future__ import annotations

import functools
import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path

import numpy as np

from core.config import ConfigError, Key, above, at_least, choice

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


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


def cached_arrays(path: Path, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays stored at ``path``, else ``compute()``'s, stored there: written whole under
    a temporary name, then renamed, so that a reader never sees half a file. A read-only
    folder only means every process computes its own."""
    try:
        with np.load(path) as stored:
            return dict(stored)
    except (OSError, ValueError):
        pass
    arrays = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(temporary, **arrays)
        os.replace(temporary, path)
    except OSError:
        pass
    return arrays


def _digits(data_dir: str, test_fraction: float, seed: int) -> Split:
    """scikit-learn's digits, split stratified. Importing scikit-learn takes about 2 s, so
    the split is kept under data-dir (named by its version, the fraction and the seed):
    every Ray actor and SuperNode after the first reads it instead."""
    def split() -> dict[str, np.ndarray]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x = (digits.images / 16.0).astype(np.float32)[:, None]  # pixel values are 0..16
        y = digits.target.astype(np.int64)
        parts = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
        return dict(zip(("x_train", "x_test", "y_train", "y_test"), parts))

    name = f"digits-sklearn{version('scikit-learn')}-test{test_fraction}-seed{seed}.npz"
    a = cached_arrays(Path(data_dir) / "splits" / name, split)
    return Split(a["x_train"], a["y_train"], a["x_test"], a["y_test"], DatasetSpec(1, 8, 10))


def _synthetic(data_dir: str, test_fraction: float, seed: int, train_samples: int = 60_000) -> Split:
    """``train_samples`` (MNIST-sized by default) + 10,000 8x8 images: a digits image of the
    class plus Gaussian noise. Learnable and embedded, for scale benchmarks with thousands of
    clients (``synthetic-1m``: 1,000,000 training images, 10 each for 100,000 clients); not
    a benchmark of accuracy."""
    base = _digits(data_dir, test_fraction, seed)
    rng = np.random.default_rng(seed)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        pick = rng.integers(len(base.y_train), size=n)
        noise = rng.normal(0, 0.15, size=(n, *base.x_train.shape[1:])).astype(np.float32)
        return np.clip(base.x_train[pick] + noise, 0, 1), base.y_train[pick]

    return Split(*draw(train_samples), *draw(10_000), base.spec)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's format: two zero bytes, a type byte, the number of dimensions,
    big-endian uint32 sizes, then the data), gzipped when its name ends in ``.gz``."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_TYPES:
        raise ConfigError(f"{str(path)!r} is not an IDX file (bad magic number); accepted: the published "
                          "MNIST / Fashion-MNIST files")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, offset=4))
    data = np.frombuffer(raw, IDX_TYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ConfigError(f"{str(path)!r} holds {data.size} values but its header says {shape}; the file is "
                          "truncated or corrupt")
    return data.reshape(shape)


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _mnist_like(label: str, system_folder: Path | None) -> Callable[[str, float, int], Split]:
    """Loader for MNIST-format files under ``data-dir/<label>/raw`` (then ``system_folder``)."""

    def load(data_dir: str, test_fraction: float, seed: int) -> Split:
        folders = [Path(data_dir) / label / "raw"] + ([system_folder] if system_folder else [])
        stems = [f"{p}-{kind}-ubyte" for p in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")]
        for folder in folders:
            files = [_idx_file(folder, stem) for stem in stems]
            if all(files):
                x_tr, y_tr, x_te, y_te = (read_idx(f) for f in files)
                scale = lambda x: (x.astype(np.float32) / 255.0)[:, None]  # noqa: E731
                return Split(scale(x_tr), y_tr.astype(np.int64), scale(x_te), y_te.astype(np.int64),
                             DatasetSpec(1, x_tr.shape[-1], 10))
        where = " or ".join(f"'{f.resolve()}'" for f in folders)
        hint = (" (as root: apt-get install dataset-fashion-mnist, or `make fashion-mnist`)"
                if system_folder else "")
        raise ConfigError(f"no {label} IDX files (train/t10k images and labels) under {where}; put the "
                          f"published files there{hint}, or use dataset='digits'")

    return load


def _reader() -> type:
    """torchvision's CIFAR-10 reader, checking that the batch files exist but not their
    published MD5 sums, so that subsets and the tests' small files load."""
    import torchvision.datasets as tvd

    class CIFAR10Files(tvd.CIFAR10):
        train_list = [[name, None] for name, _ in tvd.CIFAR10.train_list]
        test_list = [[name, None] for name, _ in tvd.CIFAR10.test_list]
        meta = {**tvd.CIFAR10.meta, "md5": None}

    return CIFAR10Files


def _cifar10(label: str, spec: DatasetSpec) -> Callable[[str, float, int], Split]:
    """Loader for CIFAR-10's official train/test split, read by torchvision."""

    def load(data_dir: str, test_fraction: float, seed: int) -> Split:
        cls = _reader()
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
    "synthetic-1m": functools.partial(_synthetic, train_samples=1_000_000),
    "mnist": _mnist_like("MNIST", None),
    "fashion-mnist": _mnist_like("FashionMNIST", SYSTEM_FASHION_MNIST),
    "cifar10": _cifar10("CIFAR10", DatasetSpec(3, 32, 10)),
}


# Run-config keys of the data sources.
KEYS = {
    "dataset": choice("digits", tuple(sorted(DATASETS)), meaning=(
        "`digits` (embedded), `synthetic` (70,000 noisy digits images, embedded, for scale tests), `synthetic-1m` "
        "(the same with 1,000,000 training images: 10 each for 100,000 clients), `mnist`, `fashion-mnist`, `cifar10`")),
    "data-dir": Key("data-cache", meaning=(
        "folder holding `MNIST/raw/` or `FashionMNIST/raw/` (the published IDX files, gzipped or not) or "
        "torchvision's `cifar-10-batches-py/` (nothing is downloaded); `fashion-mnist` falls back to "
        "`/usr/share/datasets/fashion-mnist` (Debian's `dataset-fashion-mnist`, which `make` installs when it can); "
        "the partitions are cached in its `partitions/` folder (one file per setting of the data and partition keys),"
        " so that a simulation's clients read what the ServerApp computed")),
    "test-fraction": above(0.2, 0, 0.9, meaning=(
        "held-out test share for `digits` (the others use their official test split)")),
    "image-size": at_least(0, 0, meaning=(
        "resize images to this side (area averaging, e.g. 14 for 28x28 Fashion-MNIST on a small machine); 0 = as "
        "stored")),
    "max-train-samples": at_least(0, 0, meaning=(
        "keep a stratified random subset of this many training images (seeded); 0 = all")),
    "max-test-samples": at_least(0, 0, meaning="the same for the test split"),
}


def _subset(x: np.ndarray, y: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random subset of ``size`` samples with each class in proportion (largest remainders)."""
    if not size or size >= len(y):
        return x, y
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * size / len(y)
    take = np.floor(quota).astype(int)
    take[np.argsort(take - quota)[:size - take.sum()]] += 1
    keep = np.concatenate([rng.choice(np.flatnonzero(y == c), n, replace=False) for c, n in zip(classes, take)])
    keep.sort()
    return x[keep], y[keep]


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    """Area averaging down, bilinear up (28 -> 32 as torchvision's Resize does)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(x)
    if size < x.shape[-1]:
        return F.interpolate(x, size=(size, size), mode="area").numpy()
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1).numpy()


@functools.lru_cache(maxsize=4)
def load_split(dataset: str, data_dir: str, test_fraction: float, seed: int, image_size: int = 0,
               max_train: int = 0, max_test: int = 0) -> Split:
    """Load ``dataset`` once per process (Ray actors reuse it across rounds), resized to
    ``image_size`` and cut to ``max_train`` / ``max_test`` samples when those are non-zero."""
    split = DATASETS[dataset](data_dir, test_fraction, seed)
    rng = np.random.default_rng(seed)
    x_tr, y_tr = _subset(split.x_train, split.y_train, max_train, rng)
    x_te, y_te = _subset(split.x_test, split.y_test, max_test, rng)
    if image_size and image_size != split.spec.size:
        x_tr, x_te = _resize(x_tr, image_size), _resize(x_te, image_size)
        split = replace(split, spec=replace(split.spec, size=image_size))
    return Split(x_tr, y_tr, x_te, y_te, split.spec)


def split_of(cfg) -> Split:
    """The split ``cfg`` (a RunConfig) asks for."""
    return load_split(cfg.dataset, cfg.data_dir, cfg.test_fraction, cfg.seed, cfg.image_size,
                      cfg.max_train_samples, cfg.max_test_samples)
