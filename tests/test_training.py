"""Local training: every strategy equals training each node alone with torch.optim.SGD."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from phalanx.models import MODELS, FlatModel, initial_row
from phalanx.train import SGDConfig, Shards, batch_plan, choose_strategy, choose_workers, train_nodes
from phalanx.train.local import SMALL_MODEL_DIM

SHAPE = (1, 8, 8)
CLASSES = 4
# different sizes: an empty shard (node 1), one smaller than the batch (node 2, 3 < 4)
SIZES = [7, 0, 3, 12, 5]
CONFIG = SGDConfig(epochs=2, batch_size=4, lr=0.1, momentum=0.9, weight_decay=0.01)


def factory(name: str):
    params = {"hidden": 6} if name == "mlp" else {}
    return lambda: MODELS.build(name, SHAPE, CLASSES, **params)


def start_rows(name: str, n: int) -> torch.Tensor:
    """Every node starts from a different model, so a mix-up between rows would show."""
    return torch.stack([initial_row(factory(name), seed) for seed in range(n)])


def reference_train(name, row, shards: Shards, plan_k: torch.Tensor, config: SGDConfig):
    """One node alone: a plain module, torch.optim.SGD, the batches of ``plan_k`` in order."""
    module = factory(name)()
    nn.utils.vector_to_parameters(row.clone(), module.parameters())
    opt = torch.optim.SGD(module.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    for epoch in plan_k:
        for batch in epoch:
            idx = batch[batch >= 0]
            if len(idx) == 0:
                continue
            opt.zero_grad()
            F.cross_entropy(module(shards.x[idx]), shards.y[idx]).backward()
            opt.step()
    return nn.utils.parameters_to_vector(module.parameters()).detach()


STRATEGIES = [("loop", 0), ("vmap", 0), ("chunked", 1), ("chunked", 2), ("chunked", 3),
              ("chunked", 0), ("auto", 0), ("loop-2-workers", 0), ("loop-3-workers", 0)]


@pytest.mark.parametrize("strategy, chunk", STRATEGIES, ids=[f"{s}-{c}" for s, c in STRATEGIES])
@pytest.mark.parametrize("name", ["logistic", "mlp", "cnn"])
def test_every_strategy_equals_each_node_alone_with_torch_sgd(make_shards, name, strategy, chunk):
    shards = make_shards(SIZES, input_shape=SHAPE, num_classes=CLASSES, seed=1)
    n = len(SIZES)
    rows = start_rows(name, n)
    start = rows.clone()
    nodes = torch.arange(n)
    plan = batch_plan(shards, nodes, CONFIG.epochs, CONFIG.batch_size, torch.Generator().manual_seed(7))

    workers = int(strategy.split("-")[1]) if strategy.endswith("-workers") else 1
    train_nodes(FlatModel(factory(name)()), rows, nodes, shards, CONFIG,
                torch.Generator().manual_seed(7), strategy=strategy.split("-")[0], chunk_size=chunk,
                workers=workers)

    for k in range(n):
        expected = reference_train(name, start[k], shards, plan[k], CONFIG)
        torch.testing.assert_close(rows[k], expected, rtol=0, atol=1e-5, msg=f"node {k}")
    assert torch.equal(rows[1], start[1])  # the empty shard took no step
    for k in (0, 2, 3, 4):
        assert not torch.equal(rows[k], start[k])  # every other node did learn


@pytest.mark.parametrize("strategy, chunk", [("loop", 0), ("vmap", 0), ("chunked", 2)])
def test_only_the_given_nodes_rows_change(make_shards, strategy, chunk):
    """Also the thread pool's contract: each worker writes only its own nodes' rows."""
    shards = make_shards(SIZES, input_shape=SHAPE, num_classes=CLASSES, seed=2)
    rows = start_rows("logistic", len(SIZES))
    start = rows.clone()
    nodes = torch.tensor([3, 0])  # unsorted on purpose
    plan = batch_plan(shards, nodes, CONFIG.epochs, CONFIG.batch_size, torch.Generator().manual_seed(4))

    train_nodes(FlatModel(factory("logistic")()), rows, nodes, shards, CONFIG,
                torch.Generator().manual_seed(4), strategy=strategy, chunk_size=chunk)

    for other in (1, 2, 4):
        assert torch.equal(rows[other], start[other])
    for pos, node in enumerate(nodes.tolist()):
        expected = reference_train("logistic", start[node], shards, plan[pos], CONFIG)
        torch.testing.assert_close(rows[node], expected, rtol=0, atol=1e-5)


def test_no_nodes_is_a_no_op(make_shards):
    shards = make_shards([3, 3], input_shape=SHAPE, num_classes=CLASSES)
    rows = start_rows("logistic", 2)
    start = rows.clone()
    train_nodes(FlatModel(factory("logistic")()), rows, torch.tensor([], dtype=torch.int64),
                shards, CONFIG, torch.Generator().manual_seed(0))
    assert torch.equal(rows, start)


def test_plain_sgd_step_by_hand(make_shards):
    """One sample, one step, zero model: the step is -lr * grad of CE at uniform logits."""
    x = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # (1, 1, 2, 2): only pixel 0 is on
    shards = Shards.from_parts(x, torch.tensor([2]), [torch.tensor([0])])
    fm = FlatModel(MODELS.build("logistic", (1, 2, 2), 3))
    rows = torch.zeros(1, fm.dim)
    train_nodes(fm, rows, torch.tensor([0]), shards, SGDConfig(batch_size=1, lr=0.3),
                torch.Generator().manual_seed(0), strategy="loop")
    # softmax of zeros = 1/3 each; dCE/dlogit = p - onehot(2) = (1/3, 1/3, -2/3)
    g = torch.tensor([1 / 3, 1 / 3, -2 / 3])
    weight = torch.zeros(3, 4)
    weight[:, 0] = -0.3 * g  # only pixel 0 carries gradient
    expected = torch.cat([weight.reshape(-1), -0.3 * g])
    torch.testing.assert_close(rows[0], expected, rtol=0, atol=1e-7)


# ----------------------------------------------------------------------------- batch_plan


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 17), min_size=1, max_size=6),
    batch=st.integers(1, 6),
    epochs=st.integers(1, 3),
    seed=st.integers(0, 2**31),
)
def test_batch_plan_is_a_permutation_of_each_shard_per_epoch(sizes, batch, epochs, seed):
    shards = synthetic(sizes)
    nodes = torch.arange(len(sizes))
    plan = batch_plan(shards, nodes, epochs, batch, torch.Generator().manual_seed(seed))

    width = max(1, max(sizes))
    steps = -(-width // batch)
    assert plan.shape == (len(sizes), epochs, steps, batch)
    for k, size in enumerate(sizes):
        own = sorted(shards.index[k, :size].tolist())
        for e in range(epochs):
            flat = plan[k, e].reshape(-1)
            assert sorted(flat[flat >= 0].tolist()) == own
            # samples first, then only padding (-1): the last batch may be short
            assert flat[:size].ge(0).all() and flat[size:].eq(-1).all()
            assert int(plan[k, e].ge(0).any(dim=1).sum()) == -(-size // batch)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(0, 9), min_size=2, max_size=5), seed=st.integers(0, 2**31))
def test_batch_plan_of_a_subset_indexes_the_pool_rows_of_those_nodes(sizes, seed):
    shards = synthetic(sizes)
    nodes = torch.tensor([len(sizes) - 1, 0])
    plan = batch_plan(shards, nodes, 1, 4, torch.Generator().manual_seed(seed))
    for pos, node in enumerate(nodes.tolist()):
        got = plan[pos].reshape(-1)
        assert sorted(got[got >= 0].tolist()) == shards.index[node, : sizes[node]].tolist()


def test_batch_plan_is_deterministic_in_the_generator_and_reshuffles_each_epoch():
    shards = synthetic([40, 40])
    nodes = torch.arange(2)
    a = batch_plan(shards, nodes, 2, 8, torch.Generator().manual_seed(1))
    b = batch_plan(shards, nodes, 2, 8, torch.Generator().manual_seed(1))
    c = batch_plan(shards, nodes, 2, 8, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a[:, 0], a[:, 1])  # 40! orders: a repeat would be a bug


def synthetic(sizes) -> Shards:
    """Shards whose pool rows are owned in order (node 0 gets 0..s0-1, ...); data is unused."""
    total = max(1, sum(sizes))
    parts, start = [], 0
    for s in sizes:
        parts.append(torch.arange(start, start + s))
        start += s
    return Shards.from_parts(torch.zeros(total, 1), torch.zeros(total, dtype=torch.int64), parts)


# ------------------------------------------------------------------------------- choosing


def test_choose_strategy_is_vmap_on_cuda():
    assert choose_strategy(torch.device("cuda"), 10, 100) == "vmap"
    assert choose_strategy(torch.device("cuda"), 10**7, 1) == "vmap"


def test_choose_strategy_on_cpu_is_the_loop():
    cpu = torch.device("cpu")
    assert choose_strategy(cpu, 100, 1) == "loop"
    assert choose_strategy(cpu, 10**6, 1000) == "loop"


def test_choose_workers_threads_only_larger_models_on_cpu(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert choose_workers(cpu, SMALL_MODEL_DIM - 1, 100) == 1  # tiny model: GIL-bound
    assert choose_workers(cpu, SMALL_MODEL_DIM, 100) == 4  # one per core
    assert choose_workers(cpu, SMALL_MODEL_DIM, 3) == 3  # never more than the nodes
    assert choose_workers(torch.device("cuda"), SMALL_MODEL_DIM, 100) == 1

