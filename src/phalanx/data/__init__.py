"""Data sets that load offline and the partitioners that split them among nodes.

Importing this package registers the loaders in :data:`DATASETS` (``fashion_mnist``,
``mnist5k``, ``digits``, ``idx``) and the partitioners in :data:`PARTITIONERS` (``iid``,
``dirichlet``, ``shards``, ``quantity_skew``).
"""

from phalanx.data import datasets, idx, partition
from phalanx.data.datasets import DATASETS, Dataset, DatasetNotFound
from phalanx.data.idx import IdxFormatError, read_idx
from phalanx.data.partition import PARTITIONERS, label_histogram

__all__ = [
    "DATASETS",
    "PARTITIONERS",
    "Dataset",
    "DatasetNotFound",
    "IdxFormatError",
    "datasets",
    "idx",
    "label_histogram",
    "partition",
    "read_idx",
]
