"""The model zoo: small classifiers that the range trains by the hundred.

Every model is a plain ``torch.nn.Module`` built by a registered factory
``factory(input_shape, num_classes, *, <hyper-parameters>)``. The engine never keeps one module
per node: it keeps all nodes' parameters as rows of one ``(n, d)`` tensor and runs a single
template module over them (see :mod:`phalanx.models.flat`).

- ``logistic``: multinomial logistic (softmax) regression, one linear layer.
- ``mlp``: one hidden ReLU layer (784-200-10 on 28x28 inputs by default).
- ``cnn``: the LeNet-5 shape of LeCun et al. 1998 ("Gradient-based learning applied to document
  recognition", Fig. 2): conv 5x5 (6) -> pool -> conv 5x5 (16) -> pool -> 120 -> 84 -> classes,
  with ReLU and max pooling as is usual today. Inputs smaller than 32x32 are zero-padded so the
  two 5x5 convolutions fit (2 pixels for 28x28, as in the MNIST version of the paper).
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import Field
from torch import nn

from phalanx.core import Registry

MODELS: Registry = Registry("model")


@MODELS.register("logistic")
def logistic(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Multinomial logistic regression: one linear layer on the flattened input."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


@MODELS.register("mlp")
def mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    hidden: Annotated[int, Field(ge=1, le=65536)] = 200,
) -> nn.Module:
    """Multi-layer perceptron with one hidden ReLU layer of ``hidden`` units."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


@MODELS.register("cnn")
def cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """LeNet-5 shaped CNN (LeCun et al. 1998): two 5x5 conv + pool stages, then 120-84-classes."""
    if len(input_shape) != 3:
        raise ValueError(f"cnn needs image inputs (C, H, W), got shape {tuple(input_shape)}")
    channels, height, width = input_shape
    pad = max(0, (32 - min(height, width)) // 2)
    side_h = ((height + 2 * pad - 4) // 2 - 4) // 2
    side_w = ((width + 2 * pad - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=pad),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * side_h * side_w, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )
