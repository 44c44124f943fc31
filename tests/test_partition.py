"""Tests of phalanx.data.partition: parts are disjoint, cover, and skew as asked."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.data import PARTITIONERS, label_histogram
from phalanx.data import partition as part

ALL = [
    ("iid", {}),
    ("dirichlet", {"alpha": 0.5}),
    ("dirichlet", {"alpha": 0.5, "min_size": 3}),
    ("shards", {"shards_per_node": 2}),
    ("quantity_skew", {"alpha": 1.0, "min_size": 1}),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for name, kw in ALL]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def balanced_labels(num_classes: int, per_class: int, seed: int = 0) -> torch.Tensor:
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return labels[torch.randperm(len(labels), generator=gen(seed))]


def split(name, labels, nodes, seed, **kw):
    return PARTITIONERS.build(name, labels, nodes, gen(seed), **kw)


def assert_disjoint_cover(parts: list[torch.Tensor], n: int, nodes: int) -> None:
    assert len(parts) == nodes
    assert all(p.dtype == torch.int64 and p.ndim == 1 for p in parts)
    everything = torch.cat(parts)
    assert len(everything) == n  # no index twice ...
    assert torch.equal(torch.sort(everything).values, torch.arange(n))  # ... and every index once


def mean_max_class_share(labels: torch.Tensor, parts, num_classes: int) -> float:
    hist = label_histogram(labels, parts, num_classes).double()
    sizes = hist.sum(1)
    keep = sizes > 0
    return (hist[keep].max(1).values / sizes[keep]).mean().item()


# ----------------------------------------------------------------------------- shared contract


@pytest.mark.parametrize("name, kw", ALL, ids=IDS)
def test_disjoint_cover_and_node_count(name, kw):
    labels = balanced_labels(5, 40)
    assert_disjoint_cover(split(name, labels, 7, seed=1, **kw), len(labels), 7)


@pytest.mark.parametrize("name, kw", ALL, ids=IDS)
def test_deterministic_per_seed(name, kw):
    labels = balanced_labels(5, 40)
    a, b, c = (split(name, labels, 6, seed=s, **kw) for s in (3, 3, 4))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("name, kw", ALL, ids=IDS)
def test_uses_only_the_given_generator(name, kw):
    labels = balanced_labels(5, 40)
    torch.manual_seed(123)
    np.random.seed(123)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    first = split(name, labels, 6, seed=5, **kw)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)
    torch.manual_seed(999)
    np.random.seed(999)
    second = split(name, labels, 6, seed=5, **kw)
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))


@pytest.mark.parametrize("name, kw", ALL, ids=IDS)
def test_other_label_dtypes_accepted_and_bad_labels_refused(name, kw):
    labels = balanced_labels(4, 30)
    expected = split(name, labels, 5, seed=2, **kw)
    got = split(name, labels.to(torch.int32), 5, seed=2, **kw)
    assert all(torch.equal(x, y) for x, y in zip(expected, got, strict=True))
    with pytest.raises(ValueError, match="integers"):
        split(name, labels.float(), 5, seed=2, **kw)
    with pytest.raises(ValueError, match="one-dimensional"):
        split(name, labels.view(2, -1), 5, seed=2, **kw)
    with pytest.raises(ValueError, match="at least 1"):
        split(name, labels, 0, seed=2, **kw)


@st.composite
def problems(draw, min_per_node: int = 1):
    nodes = draw(st.integers(1, 12))
    n = draw(st.integers(nodes * min_per_node, 150))
    num_classes = draw(st.integers(1, 6))
    labels = torch.tensor(draw(st.lists(st.integers(0, num_classes - 1), min_size=n, max_size=n)))
    return labels, nodes, draw(st.integers(0, 2**32))


@settings(max_examples=40, deadline=None)
@given(problems(), st.sampled_from(["iid", "dirichlet", "quantity_skew"]))
def test_property_disjoint_cover(problem, name):
    labels, nodes, seed = problem
    assert_disjoint_cover(split(name, labels, nodes, seed), len(labels), nodes)


@settings(max_examples=40, deadline=None)
@given(problems(min_per_node=2), st.integers(1, 2))
def test_property_shards_disjoint_cover(problem, per_node):
    labels, nodes, seed = problem
    parts = split("shards", labels, nodes, seed, shards_per_node=per_node)
    assert_disjoint_cover(parts, len(labels), nodes)


# ------------------------------------------------------------------------------------------ iid


def test_iid_sizes_differ_by_at_most_one():
    sizes = [len(p) for p in split("iid", balanced_labels(3, 7), 4, seed=0)]
    assert sorted(sizes) == [5, 5, 5, 6]


def test_iid_more_nodes_than_samples():
    with pytest.raises(ValueError, match="5 nodes .* 4 samples"):
        split("iid", torch.tensor([0, 1, 0, 1]), 5, seed=0)


# ------------------------------------------------------------------------------------ dirichlet


def test_dirichlet_alpha_controls_label_skew():
    labels = balanced_labels(10, 200)
    shares = {
        alpha: np.mean(
            [mean_max_class_share(labels, split("dirichlet", labels, 10, s, alpha=alpha), 10)
             for s in range(3)]
        )
        for alpha in (100.0, 0.05)
    }
    assert shares[100.0] < 0.2  # near-uniform: about 1/10 per class
    assert shares[0.05] > 0.6  # each node dominated by one class


def test_dirichlet_min_size_met():
    labels = balanced_labels(10, 30)
    parts = split("dirichlet", labels, 10, seed=0, alpha=0.1, min_size=10)
    assert min(len(p) for p in parts) >= 10
    assert_disjoint_cover(parts, len(labels), 10)


def test_dirichlet_min_size_impossible():
    with pytest.raises(ValueError, match="needs 12 samples, only 10"):
        split("dirichlet", torch.zeros(10, dtype=torch.long), 4, seed=0, min_size=3)


def test_dirichlet_min_size_unreachable_gives_up(monkeypatch):
    monkeypatch.setattr(part, "MAX_DRAWS", 20)
    # one class of 20 over 10 nodes with min_size 2: only an exactly even draw works
    with pytest.raises(ValueError, match="no draw in 20 .* raise alpha or lower min_size"):
        split("dirichlet", torch.zeros(20, dtype=torch.long), 10, seed=0, alpha=0.01, min_size=2)


# --------------------------------------------------------------------------------------- shards


@pytest.mark.parametrize("per_node", [1, 2, 3])
def test_shards_give_each_node_at_most_shards_per_node_classes(per_node):
    labels = balanced_labels(10, 30)  # 10 nodes x per_node shards divide each class exactly
    parts = split("shards", labels, 10, seed=0, shards_per_node=per_node)
    hist = label_histogram(labels, parts, 10)
    assert ((hist > 0).sum(1) <= per_node).all()
    assert (hist.sum(1) == 30).all()


def test_shards_too_many_shards():
    with pytest.raises(ValueError, match="12 shards cannot be cut from 10 samples"):
        split("shards", torch.arange(10) % 2, 6, seed=0, shards_per_node=2)


# -------------------------------------------------------------------------------- quantity_skew


def test_quantity_skew_sizes_vary_labels_stay_iid():
    labels = balanced_labels(10, 500)
    parts = split("quantity_skew", labels, 5, seed=0, alpha=0.5)
    sizes = torch.tensor([len(p) for p in parts])
    assert sizes.max() > 2 * sizes.min()
    hist = label_histogram(labels, parts, 10).double()
    big = sizes >= 500
    assert big.any()
    shares = hist[big] / sizes[big, None]
    assert (shares - 0.1).abs().max() < 0.05


def test_quantity_skew_alpha_controls_spread():
    labels = balanced_labels(2, 500)
    even = [len(p) for p in split("quantity_skew", labels, 10, seed=1, alpha=1e4)]
    skewed = [len(p) for p in split("quantity_skew", labels, 10, seed=1, alpha=0.05)]
    assert max(even) - min(even) < 20
    assert max(skewed) - min(skewed) > 300


def test_quantity_skew_min_size():
    parts = split("quantity_skew", torch.zeros(40, dtype=torch.long), 8, seed=0, alpha=0.01,
                  min_size=5)
    assert [len(p) for p in parts] == [5] * 8
    with pytest.raises(ValueError, match="needs 45 samples, only 40"):
        split("quantity_skew", torch.zeros(40, dtype=torch.long), 9, seed=0, min_size=5)


# ------------------------------------------------------------------------------ label_histogram


def test_label_histogram_by_hand():
    labels = torch.tensor([0, 1, 1, 2, 2, 2])
    empty = torch.tensor([], dtype=torch.long)
    parts = [torch.tensor([0, 1]), torch.tensor([3, 4, 5]), torch.tensor([2]), empty]
    hist = label_histogram(labels, parts, 4)
    assert hist.dtype == torch.int64
    assert hist.tolist() == [[1, 1, 0, 0], [0, 0, 3, 0], [0, 1, 0, 0], [0, 0, 0, 0]]


def test_label_histogram_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        label_histogram(torch.tensor([0, 2]), [torch.tensor([0, 1])], 2)


def test_label_histogram_no_nodes():
    assert label_histogram(torch.tensor([0]), [], 3).shape == (0, 3)


# ------------------------------------------------------------------------------------- registry


def test_registry_validates_hyper_parameters():
    assert set(PARTITIONERS.names()) >= {"iid", "dirichlet", "shards", "quantity_skew"}
    assert PARTITIONERS.validate("dirichlet", {}) == {"alpha": 0.5, "min_size": 0}
    for name, bad in [
        ("dirichlet", {"alpha": 0}),
        ("dirichlet", {"min_size": -1}),
        ("shards", {"shards_per_node": 0}),
        ("quantity_skew", {"alpha": -1.0}),
        ("iid", {"alpha": 1.0}),
    ]:
        with pytest.raises(pydantic.ValidationError):
            PARTITIONERS.validate(name, bad)
