"""The model zoo and the flat-parameter view that aggregators, attacks and training share."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch
from torch import nn

from phalanx.models import MODELS, FlatModel, initial_row

SHAPES = [(1, 28, 28), (1, 8, 8)]


def build(name: str, shape=(1, 8, 8), classes: int = 10, **params) -> nn.Module:
    return MODELS.build(name, shape, classes, **params)


# ------------------------------------------------------------------------------- the zoo


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", ["logistic", "mlp", "cnn"])
def test_every_model_maps_a_batch_to_class_logits(name, shape):
    torch.manual_seed(0)
    model = build(name, shape)
    out = model(torch.randn(5, *shape))
    assert out.shape == (5, 10)
    assert torch.isfinite(out).all()


def test_logistic_is_one_linear_layer_over_the_pixels():
    model = build("logistic", (1, 28, 28))
    assert sum(p.numel() for p in model.parameters()) == 28 * 28 * 10 + 10


@pytest.mark.parametrize("hidden, expected", [(200, 784 * 200 + 200 + 200 * 10 + 10), (3, 784 * 3 + 3 + 3 * 10 + 10)])
def test_mlp_hidden_width_sets_the_parameter_count(hidden, expected):
    model = build("mlp", (1, 28, 28), hidden=hidden)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_mlp_default_hidden_is_200():
    assert MODELS.validate("mlp", {}) == {"hidden": 200}


def test_mlp_hidden_must_be_positive():
    with pytest.raises(pydantic.ValidationError):
        build("mlp", hidden=0)


def test_cnn_is_lenet5_shaped_on_28x28():
    # LeNet-5 on padded 28x28 (pad 2 -> 32x32): 6@5x5, 16@5x5 -> 16*5*5 = 400 -> 120 -> 84 -> 10
    model = build("cnn", (1, 28, 28))
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [6, 16]
    assert convs[0].padding == (2, 2)
    assert [(m.in_features, m.out_features) for m in linears] == [(400, 120), (120, 84), (84, 10)]


def test_cnn_refuses_non_image_inputs():
    with pytest.raises(ValueError, match=r"cnn needs image inputs \(C, H, W\)"):
        build("cnn", (64,))


# ------------------------------------------------------------------------------ FlatModel


def tiny_logistic() -> nn.Module:
    """2 inputs -> 3 classes: weight (3, 2) then bias (3,), d = 9."""
    return nn.Sequential(nn.Flatten(), nn.Linear(2, 3))


def test_dim_and_slots_follow_the_parameters():
    module = build("mlp", (1, 8, 8), hidden=5)
    fm = FlatModel(module)
    numels = [p.numel() for p in module.parameters()]
    assert fm.dim == sum(numels) == 64 * 5 + 5 + 5 * 10 + 10
    assert [s.numel for s in fm.slots] == numels
    assert [s.offset for s in fm.slots] == [sum(numels[:i]) for i in range(len(numels))]
    assert [s.name for s in fm.slots] == ["1.weight", "1.bias", "3.weight", "3.bias"]


def test_flat_starts_as_the_module_initial_parameters():
    torch.manual_seed(3)
    module = tiny_logistic()
    expected = torch.cat([p.detach().reshape(-1).clone() for p in module.parameters()])
    fm = FlatModel(module)
    assert torch.equal(fm.flat, expected)


def test_parameters_are_views_into_flat():
    fm = FlatModel(tiny_logistic())
    x = torch.tensor([[1.0, 2.0]])
    with torch.no_grad():
        # weight [[1, 0], [0, 1], [1, 1]], bias [10, 20, 30]: logits = W x + b = [11, 22, 33]
        fm.flat.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 10.0, 20.0, 30.0]))
        assert torch.equal(fm.module(x), torch.tensor([[11.0, 22.0, 33.0]]))
        fm.flat[6:] = 0.0  # zero the bias in the flat vector only
        assert torch.equal(fm.module(x), torch.tensor([[1.0, 2.0, 3.0]]))
    # and the other way: writing a parameter writes the flat vector
    with torch.no_grad():
        fm.module[1].weight.fill_(7.0)
    assert torch.equal(fm.flat[:6], torch.full((6,), 7.0))


@pytest.mark.parametrize("name", ["logistic", "mlp", "cnn"])
def test_functional_with_a_row_equals_the_module_with_that_row(name):
    fm = FlatModel(build(name, (1, 8, 8)))
    g = torch.Generator().manual_seed(1)
    row = torch.randn(fm.dim, generator=g) * 0.1
    x = torch.randn(4, 1, 8, 8, generator=g)
    before = fm.flat.clone()
    out = fm.functional(row, x)
    assert torch.equal(fm.flat, before)  # functional does not touch the template
    with torch.no_grad():
        fm.flat.copy_(row)
        expected = fm.module(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_functional_vmaps_over_a_stack_of_rows():
    fm = FlatModel(tiny_logistic())
    rows = torch.tensor([[1.0, 0, 0, 1, 1, 1, 0, 0, 0], [0.0, 0, 0, 0, 0, 0, 1, 2, 3]])
    x = torch.tensor([[1.0, 2.0]])
    out = torch.func.vmap(fm.functional, in_dims=(0, None))(rows, x)
    assert torch.equal(out, torch.tensor([[[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0]]]))


def test_views_splits_a_row_into_named_shapes():
    fm = FlatModel(tiny_logistic())
    views = fm.views(torch.arange(9.0))
    assert torch.equal(views["1.weight"], torch.arange(6.0).view(3, 2))
    assert torch.equal(views["1.bias"], torch.tensor([6.0, 7.0, 8.0]))


def test_models_with_buffers_are_refused():
    with pytest.raises(ValueError, match="buffers"):
        FlatModel(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))


# ----------------------------------------------------------------------------- initial_row


def factory():
    return build("mlp", (1, 8, 8), hidden=4)


def test_initial_row_is_deterministic_in_the_seed():
    assert torch.equal(initial_row(factory, 5), initial_row(factory, 5))


def test_initial_row_differs_across_seeds():
    assert not torch.equal(initial_row(factory, 5), initial_row(factory, 6))


def test_initial_row_is_torch_default_init_under_that_seed():
    torch.manual_seed(11)
    expected = torch.cat([p.detach().reshape(-1) for p in factory().parameters()])
    assert torch.equal(initial_row(factory, 11), expected)


def test_initial_row_leaves_the_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    row = initial_row(factory, 9)
    assert torch.equal(torch.rand(4), expected)
    assert row.shape == (64 * 4 + 4 + 4 * 10 + 10,)
    assert not math.isnan(float(row.sum()))
