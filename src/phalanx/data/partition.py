"""Splitting a training set among nodes, from identical to pathologically skewed.

A partitioner is a plug-in of :data:`PARTITIONERS` called as
``fn(labels, num_nodes, generator, **hyper_params)``. It returns one ``int64`` tensor of
indices into ``labels`` per node; the parts are disjoint, and the same generator seed gives the
same parts. All randomness comes from ``generator`` (never from torch's or numpy's global
state); each part is in a random order.

The schemes, from the literature on federated learning with non-IID data:

* ``iid``: a uniform random split into near-equal parts.
* ``dirichlet`` (label skew): Hsu, Qi and Brown, "Measuring the effects of non-identical data
  distribution for federated visual classification", 2019, Section 3, model each node's class
  mix as a draw from a Dirichlet distribution of concentration ``alpha``: large ``alpha`` is
  close to IID, small ``alpha`` gives each node few classes. We use the per-class form of
  Yurochkin et al. 2019 ("Bayesian nonparametric federated learning of neural networks") and of
  Li, Diao, Chen and He 2022 (NIID-Bench, Section III, "distribution-based label imbalance"):
  for each class ``k``, ``p_k ~ Dir(alpha * 1_N)`` over the ``N`` nodes, and the class's
  shuffled samples are cut in those proportions.
* ``shards`` (pathological non-IID): McMahan et al., "Communication-efficient learning of deep
  networks from decentralized data", 2017, Section 3: sort by label, cut into
  ``N * shards_per_node`` equal shards, deal ``shards_per_node`` random shards to each node.
* ``quantity_skew``: Li et al. 2022 (NIID-Bench, Section III, "quantity skew"): labels IID,
  node sizes in proportions ``q ~ Dir(alpha * 1_N)``.

:func:`label_histogram` counts each node's samples per class.

Dirichlet draws use ``numpy.random.default_rng(seed)`` with ``seed`` drawn from ``generator``
(``torch.distributions.Dirichlet`` cannot take a generator).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated

import numpy as np
import torch
from pydantic import Field

from phalanx.core import Registry

__all__ = ["MAX_DRAWS", "PARTITIONERS", "label_histogram"]

PARTITIONERS: Registry[Callable[..., list[torch.Tensor]]] = Registry("partitioner")

#: How many Dirichlet draws ``dirichlet`` tries before giving up on ``min_size``.
MAX_DRAWS = 1000


def _check(labels: torch.Tensor, num_nodes: int) -> torch.Tensor:
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if int(num_nodes) < 1:
        raise ValueError(f"num_nodes must be at least 1, got {num_nodes}")
    return labels.detach().to("cpu", torch.int64)


def _numpy_rng(generator: torch.Generator) -> np.random.Generator:
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return np.random.default_rng(seed)


def _group(owner: torch.Tensor, num_nodes: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Indices of each node given ``owner[i]`` = node of sample ``i``, in random order."""
    perm = torch.randperm(len(owner), generator=generator)
    owner = owner[perm]
    order = torch.argsort(owner, stable=True)
    sizes = torch.bincount(owner, minlength=num_nodes).tolist()
    return [part.clone() for part in torch.split(perm[order], sizes)]


def _cut_points(proportions: np.ndarray, n: int) -> np.ndarray:
    """Sizes of ``len(proportions)`` consecutive pieces of ``n`` items, in those proportions."""
    ends = np.floor(np.cumsum(proportions) * n).astype(np.int64)
    ends = np.minimum(ends, n)
    ends[-1] = n
    return np.diff(ends, prepend=0)


@PARTITIONERS.register("iid")
def iid(labels: torch.Tensor, num_nodes: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffle, then split into parts whose sizes differ by at most one."""
    labels = _check(labels, num_nodes)
    n = len(labels)
    if num_nodes > n:
        raise ValueError(f"iid: cannot give {num_nodes} nodes a sample each from {n} samples")
    perm = torch.randperm(n, generator=generator)
    return [part.clone() for part in torch.tensor_split(perm, num_nodes)]


@PARTITIONERS.register("dirichlet")
def dirichlet(
    labels: torch.Tensor,
    num_nodes: int,
    generator: torch.Generator,
    *,
    alpha: Annotated[float, Field(gt=0)] = 0.5,
    min_size: Annotated[int, Field(ge=0)] = 0,
) -> list[torch.Tensor]:
    """Label skew: each class is split among the nodes in proportions drawn from Dir(alpha).

    Draws are repeated (at most :data:`MAX_DRAWS` times) until every node has ``min_size``
    samples.
    """
    labels = _check(labels, num_nodes)
    n = len(labels)
    if min_size * num_nodes > n:
        raise ValueError(
            f"dirichlet: {num_nodes} nodes x min_size {min_size} needs "
            f"{min_size * num_nodes} samples, only {n} available"
        )
    classes, class_sizes = torch.unique(labels, return_counts=True)
    rng = _numpy_rng(generator)
    for _ in range(MAX_DRAWS):
        props = rng.dirichlet(np.full(num_nodes, float(alpha)), size=len(classes))
        counts = np.stack([_cut_points(p, int(c)) for p, c in zip(props, class_sizes, strict=True)])
        if counts.sum(0).min() >= min_size:
            break
    else:
        raise ValueError(
            f"dirichlet: no draw in {MAX_DRAWS} gave every one of {num_nodes} nodes "
            f"{min_size} samples with alpha={alpha}; raise alpha or lower min_size"
        )
    owner = torch.empty(n, dtype=torch.int64)
    nodes = torch.arange(num_nodes)
    for k, cls in enumerate(classes):
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        owner[members] = torch.repeat_interleave(nodes, torch.from_numpy(counts[k]))
    return _group(owner, num_nodes, generator)


@PARTITIONERS.register("shards")
def shards(
    labels: torch.Tensor,
    num_nodes: int,
    generator: torch.Generator,
    *,
    shards_per_node: Annotated[int, Field(ge=1)] = 2,
) -> list[torch.Tensor]:
    """Pathological non-IID: sort by label, deal ``shards_per_node`` random shards to each node."""
    labels = _check(labels, num_nodes)
    n = len(labels)
    num_shards = num_nodes * shards_per_node
    if num_shards > n:
        raise ValueError(
            f"shards: {num_nodes} nodes x {shards_per_node} shards = {num_shards} shards "
            f"cannot be cut from {n} samples"
        )
    # Shuffle first so that ties within a class are broken at random, then sort stably.
    perm = torch.randperm(n, generator=generator)
    by_label = perm[torch.argsort(labels[perm], stable=True)]
    shard_sizes = torch.full((num_shards,), n // num_shards)
    shard_sizes[: n % num_shards] += 1
    shard_of_position = torch.repeat_interleave(torch.arange(num_shards), shard_sizes)
    node_of_shard = torch.empty(num_shards, dtype=torch.int64)
    node_of_shard[torch.randperm(num_shards, generator=generator)] = torch.arange(
        num_nodes
    ).repeat_interleave(shards_per_node)
    owner = torch.empty(n, dtype=torch.int64)
    owner[by_label] = node_of_shard[shard_of_position]
    return _group(owner, num_nodes, generator)


@PARTITIONERS.register("quantity_skew")
def quantity_skew(
    labels: torch.Tensor,
    num_nodes: int,
    generator: torch.Generator,
    *,
    alpha: Annotated[float, Field(gt=0)] = 1.0,
    min_size: Annotated[int, Field(ge=0)] = 1,
) -> list[torch.Tensor]:
    """Quantity skew: IID labels, node sizes in proportions drawn from Dir(alpha), each >= min_size.

    Every node first gets ``min_size`` samples; the rest are shared in the drawn proportions.
    """
    labels = _check(labels, num_nodes)
    n = len(labels)
    spare = n - min_size * num_nodes
    if spare < 0:
        raise ValueError(
            f"quantity_skew: {num_nodes} nodes x min_size {min_size} needs "
            f"{min_size * num_nodes} samples, only {n} available"
        )
    rng = _numpy_rng(generator)
    props = rng.dirichlet(np.full(num_nodes, float(alpha)))
    sizes = (_cut_points(props, spare) + min_size).tolist()
    perm = torch.randperm(n, generator=generator)
    return [part.clone() for part in torch.split(perm, sizes)]


def label_histogram(
    labels: torch.Tensor, parts: Sequence[torch.Tensor], num_classes: int
) -> torch.Tensor:
    """``(num_nodes, num_classes)`` int64 counts: row ``i`` counts the labels of ``parts[i]``."""
    labels = labels.detach().to("cpu", torch.int64)
    if len(parts) == 0:
        return torch.zeros(0, num_classes, dtype=torch.int64)
    index = torch.cat([torch.as_tensor(p, dtype=torch.int64).cpu().reshape(-1) for p in parts])
    node = torch.repeat_interleave(
        torch.arange(len(parts)), torch.tensor([torch.as_tensor(p).numel() for p in parts])
    )
    picked = labels[index]
    if picked.numel() and (picked.min() < 0 or picked.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}); found {int(picked.min())}..{int(picked.max())}"
        )
    flat = torch.bincount(node * num_classes + picked, minlength=len(parts) * num_classes)
    return flat.view(len(parts), num_classes)
