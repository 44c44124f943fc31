"""Gradient inversion: rebuild a node's training sample from the update it sent.

An update from one local step on one sample is ``-lr`` times that sample's gradient at the
model the node started from, which every receiver knows. Both attacks search for an input
whose gradient at those weights matches it:

- **DLG**, deep leakage from gradients (Zhu, Liu, Han 2019, NeurIPS, Algorithm 1): minimise
  ``||grad L(w; x') - g||^2`` over a dummy input ``x'`` with L-BFGS. The label comes first, from
  the sign of the last layer's bias gradient, ``p - onehot(y)``, whose only negative entry is the
  true class (iDLG: Zhao, Mopuri, Bilen 2020, "iDLG: improved deep leakage from gradients",
  Section 3).
- **Inverting gradients** (Geiping, Bauermeister, Droge, Moeller 2020, NeurIPS, Section 4, eq. 4):
  minimise the cosine distance ``1 - <grad L(w; x'), g> / (||.|| ||g||)`` plus a total-variation
  prior ``alpha TV(x')`` with Adam on signed gradients, which copes with ReLU networks and with
  gradients whose scale is unknown (an update is the gradient times an unknown learning rate).

Quality is measured as the papers do: PSNR and SSIM (Wang, Bovik, Sheikh, Simoncelli 2004) of
the reconstruction against the true sample, through ``scikit-image``, on the pixel range the
caller gives (for standardised data, ``1 / std``: PSNR is unchanged by the affine map back to
pixels). Under DP the update is clipped and noised, and the match no longer points to the sample.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from phalanx.models.flat import FlatModel


def infer_label(fm: FlatModel, gradient: torch.Tensor) -> int:
    """iDLG: the class whose last-layer bias gradient is negative (the most negative one).

    ``gradient``: the flat gradient (or an update, whose sign flip the caller has undone).
    """
    return infer_labels(fm, gradient, 1)[0]


def infer_labels(fm: FlatModel, gradient: torch.Tensor, count: int) -> list[int]:
    """The labels of a summed gradient of ``count`` samples: the ``count`` most negative entries
    of the last layer's bias gradient, ``sum_i (p_i - onehot(y_i))`` (exact for distinct labels,
    iDLG's rule for one sample; Yin et al. 2021, "See through gradients", Section 3.2, for more)."""
    last = fm.slots[-1]
    if not last.name.endswith("bias"):
        raise ValueError(f"label inference needs a last layer with a bias (the model ends in {last.name})")
    bias = gradient[last.offset : last.offset + last.numel]
    order = bias.argsort().tolist()
    return [order[i % len(order)] for i in range(count)]


def _gradient_at(fm: FlatModel, weights: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(x (b, ...), y (b,)) -> flat gradient of the summed loss at weights``, differentiable in ``x``."""
    leaf = weights.detach().clone().requires_grad_(True)

    def grad_of(x, y):
        loss = F.cross_entropy(fm.functional(leaf, x), y, reduction="sum")
        return torch.autograd.grad(loss, leaf, create_graph=True)[0]

    return grad_of


def dlg(fm: FlatModel, weights: torch.Tensor, gradient: torch.Tensor, shape: tuple[int, ...],
        generator: torch.Generator, *, label: int | None = None, steps: int = 200,
        restarts: int = 3, batch: int = 1) -> torch.Tensor:
    """DLG with iDLG labels: ``batch`` dummy inputs whose summed gradient matches ``gradient``.

    Returns ``(*shape)`` for one sample, ``(batch, *shape)`` for more (a revealed sum of
    ``batch`` single-sample updates). L-BFGS from ``restarts`` random starts; the attacker
    keeps the one whose gradient matches best (it can see its own objective, never the true
    samples). The objective is scaled by ``||g||^2``, so that L-BFGS's tolerances do not depend
    on the gradient's size.
    """
    labels = infer_labels(fm, gradient, batch) if label is None else [label] * batch
    y = torch.tensor(labels, device=weights.device)
    grad_of = _gradient_at(fm, weights)
    target = gradient.detach()
    scale = target.square().sum().clamp(min=1e-30)
    best, best_loss = None, float("inf")
    for _ in range(restarts):
        x = torch.randn((batch, *shape), generator=generator, device=generator.device).to(weights.device)
        x.requires_grad_(True)
        opt = torch.optim.LBFGS([x], lr=1.0, max_iter=steps, history_size=100, tolerance_grad=1e-12,
                                tolerance_change=1e-14, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = (grad_of(x, y) - target).square().sum() / scale
            loss.backward()
            return loss

        opt.step(closure)
        with torch.enable_grad():
            final = float(((grad_of(x, y) - target).square().sum() / scale).detach())
        if final < best_loss or best is None:
            best, best_loss = x.detach(), final
    return best[0] if batch == 1 else best


def inverting_gradients(fm: FlatModel, weights: torch.Tensor, gradient: torch.Tensor,
                        shape: tuple[int, ...], generator: torch.Generator, *, label: int | None = None,
                        steps: int = 1000, lr: float = 0.1, tv: float = 1e-4) -> torch.Tensor:
    """Geiping et al.'s cosine-matching reconstruction with a total-variation prior."""
    y = torch.tensor([infer_label(fm, gradient) if label is None else label], device=weights.device)
    grad_of = _gradient_at(fm, weights)
    x = torch.randn((1, *shape), generator=generator, device=generator.device).to(weights.device)
    x.requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(steps * f) for f in (3 / 8, 5 / 8, 7 / 8)], 0.1)
    target = gradient.detach()
    for _ in range(steps):
        opt.zero_grad()
        g = grad_of(x, y)
        loss = 1 - F.cosine_similarity(g, target, dim=0) + tv * total_variation(x)
        loss.backward()
        x.grad.sign_()
        opt.step()
        sched.step()
    return x.detach()[0]


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels of ``(b, c, h, w)`` images."""
    if x.ndim < 4:
        return x.new_zeros(())
    return ((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())


def image_quality(reconstruction: torch.Tensor, original: torch.Tensor, data_range: float) -> dict[str, float]:
    """PSNR (dB) and SSIM of a reconstruction against the original, over the pixel range given.

    A sign-flipped or shifted reconstruction is not forgiven: both are compared as they are.
    """
    rec = _image(reconstruction)
    ref = _image(original)
    psnr = float(peak_signal_noise_ratio(ref, rec, data_range=data_range))
    ssim = float(structural_similarity(ref, rec, data_range=data_range,
                                       win_size=min(7, *[s - (1 - s % 2) for s in ref.shape[-2:]])))
    return {"psnr_db": psnr, "ssim": ssim}


def _image(t: torch.Tensor) -> np.ndarray:
    """A ``(c, h, w)`` or ``(h, w)`` tensor as a 2-D float64 array (channels side by side)."""
    a = t.detach().double().cpu()
    if a.ndim == 3:
        a = torch.cat(list(a), dim=1)
    if a.ndim != 2:
        raise ValueError(f"image quality needs images (got shape {tuple(t.shape)})")
    return a.numpy()
