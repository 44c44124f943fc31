"""Adversarial examples: FGSM and PGD, crafted against one model, tried on others.

- **FGSM**, Goodfellow, Shlens and Szegedy 2015 ("Explaining and harnessing adversarial
  examples", Section 4): one step of size ``epsilon`` along the sign of the loss gradient,
  ``x' = clip(x + epsilon sign(grad_x L(f(x), y)))``.
- **PGD**, Madry, Makelov, Schmidt, Tsipras and Vladu 2018 ("Towards deep learning models
  resistant to adversarial attacks", Section 2.1): from a uniform random start in the
  ``epsilon`` ball, ``steps`` signed-gradient steps of ``step_size``, each projected back onto the
  L-infinity ball of radius ``epsilon`` around ``x`` and onto the valid pixel range.

Both are untargeted and L-infinity bounded; ``epsilon`` is in the model's input space (the range
standardizes pixels, so a raw budget of 0.1 is ``0.1 / std``; :func:`raw_to_input` converts). The
valid range is ``[low, high]``, the standardized black and white.

**Transfer** (Papernot, McDaniel and Goodfellow 2016, "Transferability in machine learning"):
examples crafted against one model often fool another trained on the same task, less so across
architectures. :func:`success_rate` counts, among the inputs a target model classifies correctly
when clean, the share it misclassifies once perturbed.

Worked example: a linear model ``f(x) = w x`` with ``w = (1, -1)``, label 0 and a loss that grows
along ``-w``: FGSM with ``epsilon = 0.1`` moves ``x`` by ``(-0.1, +0.1)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Logits = Callable[[torch.Tensor], torch.Tensor]


def raw_to_input(epsilon: float, std: float) -> float:
    """A budget in raw pixel units ``[0, 1]`` as a budget in the standardized input space."""
    return epsilon / std


def _gradient_sign(model: Logits, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    return grad.sign()


def fgsm(model: Logits, x: torch.Tensor, y: torch.Tensor, epsilon: float, low: float, high: float) -> torch.Tensor:
    """One signed-gradient step of size ``epsilon``, clipped to ``[low, high]``."""
    with torch.enable_grad():
        step = _gradient_sign(model, x, y)
    return (x + epsilon * step).clamp(low, high).detach()


def pgd(model: Logits, x: torch.Tensor, y: torch.Tensor, epsilon: float, low: float, high: float,
        steps: int = 10, step_size: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient descent in the L-infinity ball of radius ``epsilon`` around ``x``."""
    step_size = 2.5 * epsilon / steps if step_size is None else step_size
    noise = torch.rand(x.shape, generator=generator, device=x.device if generator is None else generator.device)
    adv = (x + epsilon * (2 * noise.to(x) - 1)).clamp(low, high)
    with torch.enable_grad():
        for _ in range(steps):
            adv = adv + step_size * _gradient_sign(model, adv, y)
            adv = torch.minimum(torch.maximum(adv, x - epsilon), x + epsilon).clamp(low, high).detach()
    return adv


@torch.no_grad()
def success_rate(model: Logits, clean: torch.Tensor, adversarial: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
    """Among the inputs ``model`` gets right when clean, the share it gets wrong when perturbed."""
    right = model(clean).argmax(1) == y
    fooled = (model(adversarial).argmax(1) != y) & right
    count = int(right.sum())
    return (int(fooled.sum()) / count if count else 0.0), count
