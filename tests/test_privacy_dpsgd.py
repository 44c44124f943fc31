"""DP-SGD: Poisson batches, per-sample clipping, noise, and the strategies of local training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from phalanx.models import MODELS, FlatModel, initial_row
from phalanx.privacy.dpsgd import (DPSGD, clip_and_sum, per_sample_grad_fn, poisson_plan,
                                   sample_rates, steps_per_epoch)
from phalanx.train import SGDConfig, Shards
from phalanx.train.local import train_nodes

SHAPE = (1, 8, 8)


def _data(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    total = sum(sizes)
    x = torch.randn(total, *SHAPE, generator=g)
    y = torch.randint(0, 10, (total,), generator=g)
    parts, start = [], 0
    for s in sizes:
        parts.append(torch.arange(start, start + s))
        start += s
    return Shards.from_parts(x, y, parts)


def test_sample_rates_and_steps_per_node():
    sizes = torch.tensor([100, 30, 10, 0])
    assert sample_rates(sizes, 20).tolist() == pytest.approx([0.2, 2 / 3, 1.0, 1.0])
    assert steps_per_epoch(sizes, 20).tolist() == [5, 2, 1, 0]


def test_poisson_plan_draws_each_sample_at_its_nodes_rate():
    # Arrange: node 0 has 200 samples (q = 0.1, 10 steps an epoch), node 1 has 40 (q = 0.5, 2
    # steps), node 2 none
    shards = _data([200, 40, 0])
    nodes = torch.arange(3)

    # Act: 30 epochs, so every sample of node 0 has 300 chances to be drawn
    plan, active = poisson_plan(shards.index[nodes], shards.sizes[nodes], 30, 20,
                                torch.Generator().manual_seed(1))

    # Assert: steps per epoch, padding, membership, and inclusion frequencies near q
    assert active[:, 0].sum(-1).tolist() == [10, 2, 0]
    assert bool((plan[2] == -1).all()) and bool((plan[1, :, 2:] == -1).all())
    drawn0 = plan[0][plan[0] >= 0]
    assert set(drawn0.tolist()) <= set(range(200))
    counts0 = torch.bincount(drawn0, minlength=200).double()
    assert counts0.mean().item() == pytest.approx(300 * 0.1, rel=0.05)  # 30 epochs x 10 steps x q
    drawn1 = plan[1][plan[1] >= 0]
    assert set(drawn1.tolist()) <= set(range(200, 240))
    assert torch.bincount(drawn1 - 200, minlength=40).double().mean().item() == pytest.approx(30, rel=0.1)


def test_clip_and_sum_worked_by_hand():
    # C = 1: (3, 4) has norm 5 and becomes (0.6, 0.8); (0.3, 0.4) is kept; the padded row is out
    g = torch.tensor([[[3.0, 4.0], [0.3, 0.4], [100.0, 0.0]]])
    valid = torch.tensor([[True, True, False]])
    out = clip_and_sum(g, valid, 1.0)
    assert torch.allclose(out, torch.tensor([[0.9, 1.2]]))


def test_per_sample_gradients_equal_one_backward_per_sample():
    model = MODELS.build("mlp", SHAPE, 10)
    fm = FlatModel(model)
    shards = _data([5])
    x, y = shards.x, shards.y
    got = per_sample_grad_fn(fm)(fm.flat.detach().clone(), x, y)
    for j in range(5):
        fm.module.zero_grad()
        loss = F.cross_entropy(fm.module(x[j : j + 1]), y[j : j + 1])
        grads = torch.autograd.grad(loss, fm.params)
        assert torch.allclose(got[j], torch.cat([g.reshape(-1) for g in grads]), atol=1e-6)


def _reference_dpsgd(fm, row, x, y, plan_k, active_k, config, clip):
    """One node by hand, without noise: a backward per sample, clip, sum / B, SGD with momentum."""
    w = row.clone()
    buf = torch.zeros_like(w)
    for e in range(plan_k.shape[0]):
        for s in range(plan_k.shape[1]):
            if not bool(active_k[e, s]):
                break
            total = torch.zeros_like(w)
            for i in plan_k[e, s][plan_k[e, s] >= 0].tolist():
                with torch.no_grad():
                    fm.flat.copy_(w)
                loss = F.cross_entropy(fm.module(x[i : i + 1]), y[i : i + 1])
                g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, fm.params)])
                total += g * min(1.0, clip / float(g.norm()))
            g = total / config.batch_size + config.weight_decay * w
            buf = config.momentum * buf + g
            w = w - config.lr * buf
    return w


@pytest.mark.parametrize("strategy", ["loop", "vmap", "chunked"])
def test_every_strategy_equals_dpsgd_by_hand_without_noise(strategy):
    # Arrange: unequal shards (one empty), momentum and weight decay, a clip that bites
    shards = _data([23, 9, 0, 14])
    factory = lambda: MODELS.build("mlp", SHAPE, 10)  # noqa: E731
    fm = FlatModel(factory())
    start = initial_row(factory, 0)
    config = SGDConfig(epochs=2, batch_size=5, lr=0.1, momentum=0.9, weight_decay=1e-3)
    dp = DPSGD(clip=0.5, noise_multiplier=torch.zeros(4))
    nodes = torch.arange(4)
    rows = start.expand(4, -1).clone()

    # Act
    train_nodes(fm, rows, nodes, shards, config, torch.Generator().manual_seed(3), strategy, 2, 1,
                dp=dp, noise_seed=0)

    # Assert: the same plan by hand, node by node
    plan, active = poisson_plan(shards.index, shards.sizes, 2, 5, torch.Generator().manual_seed(3))
    for k in range(4):
        want = _reference_dpsgd(fm, start, shards.x, shards.y, plan[k], active[k], config, 0.5)
        assert torch.allclose(rows[k], want, atol=1e-5), f"node {k}"
    assert torch.equal(rows[2], start)  # the empty shard took no step


def test_noise_has_the_calibrated_scale():
    # A single step on a node whose data gives zero gradient past the clip: what moves the row is
    # the noise, lr * sigma * C / B per coordinate
    factory = lambda: MODELS.build("logistic", SHAPE, 10)  # noqa: E731
    fm = FlatModel(factory())
    shards = _data([10])
    rows = initial_row(factory, 0)[None].clone()
    start = rows.clone()
    sigma, clip, batch = 3.0, 1e-6, 10  # the clip makes the gradient part at most 1e-6
    train_nodes(fm, rows, torch.arange(1), shards, SGDConfig(epochs=1, batch_size=batch, lr=1.0),
                torch.Generator().manual_seed(0), "loop", 0, 1,
                dp=DPSGD(clip=clip, noise_multiplier=torch.tensor([sigma / clip])), noise_seed=7)
    moved = (rows - start)[0]
    assert moved.std().item() == pytest.approx(sigma / batch, rel=0.05)  # 650 coordinates
    assert abs(moved.mean().item()) < 4 * sigma / batch / moved.numel() ** 0.5


@pytest.mark.filterwarnings("ignore:Full backward hook")
def test_opacus_clips_the_same_gradient():
    # The clipped, summed gradient of one batch is Opacus's (noise 0, same clip norm)
    opacus = pytest.importorskip("opacus")
    from opacus import GradSampleModule

    torch.manual_seed(0)
    model = MODELS.build("mlp", SHAPE, 10)
    fm = FlatModel(MODELS.build("mlp", SHAPE, 10))
    with torch.no_grad():
        fm.flat.copy_(torch.cat([p.reshape(-1) for p in model.parameters()]))
    shards = _data([12])
    ours = clip_and_sum(per_sample_grad_fn(fm)(fm.flat.detach().clone(), shards.x, shards.y),
                        torch.ones(12, dtype=torch.bool), 0.3)

    gsm = GradSampleModule(model)
    F.cross_entropy(gsm(shards.x), shards.y, reduction="sum").backward()
    per_sample = torch.cat([p.grad_sample.reshape(12, -1) for p in gsm.parameters()], dim=1)
    factor = (0.3 / per_sample.norm(dim=1)).clamp(max=1.0)
    theirs = (factor[:, None] * per_sample).sum(0)
    assert opacus.__version__
    assert torch.allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("model", ["logistic", "mlp", "cnn"])
def test_ghost_clipping_equals_clipping_each_per_sample_gradient(model):
    # Arrange: a clip that bites some samples and not others
    from phalanx.privacy.ghost import GhostClipping

    shape = (1, 28, 28)
    fm = FlatModel(MODELS.build(model, shape, 10))
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(9, *shape, generator=g), torch.randint(0, 10, (9,), generator=g)
    per_sample = per_sample_grad_fn(fm)(fm.flat.detach().clone(), x, y)
    clip = float(per_sample.norm(dim=1).median())

    # Act
    got = GhostClipping(fm.module, [s.name for s in fm.slots]).clipped_sum(x, y, clip)

    # Assert
    want = clip_and_sum(per_sample, torch.ones(9, dtype=torch.bool), clip)
    assert torch.allclose(got, want, atol=1e-5 * float(want.abs().max()))


def test_models_with_other_layers_clip_through_per_sample_gradients():
    # A LayerNorm has parameters ghost clipping does not handle: the loop falls back to torch.func
    from phalanx.privacy.ghost import supported

    class Normed(torch.nn.Sequential):
        def __init__(self):
            super().__init__(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.LayerNorm(16),
                             torch.nn.Linear(16, 10))

    assert not supported(Normed()) and supported(MODELS.build("cnn", (1, 28, 28), 10))
    shards = _data([12])
    fm = FlatModel(Normed())
    start = fm.flat.detach().clone()
    rows = start[None].clone()
    config = SGDConfig(epochs=1, batch_size=4, lr=0.1)
    train_nodes(fm, rows, torch.arange(1), shards, config, torch.Generator().manual_seed(3), "loop",
                0, 1, dp=DPSGD(clip=0.1, noise_multiplier=torch.zeros(1)), noise_seed=0)
    plan, active = poisson_plan(shards.index, shards.sizes, 1, 4, torch.Generator().manual_seed(3))
    want = _reference_dpsgd(fm, start, shards.x, shards.y, plan[0], active[0], config, 0.1)
    assert torch.allclose(rows[0], want, atol=1e-5)
