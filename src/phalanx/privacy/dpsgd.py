"""Sample-level DP-SGD: Poisson batches, per-sample clipping and Gaussian noise (Abadi et al. 2016,
"Deep learning with differential privacy", CCS, Algorithm 1), batched with ``torch.func``.

Each step of node ``i`` (with ``N_i`` samples):

1. **Poisson sampling** (Algorithm 1's "lot"): every sample joins the batch independently with
   probability ``q_i = min(1, B / N_i)``, ``B`` the configured batch size, so a batch has ``B``
   samples on average and may be empty. An epoch is ``ceil(N_i / B)`` steps. This is the
   sampling the accountant amplifies by (:func:`phalanx.privacy.epsilon` at rate ``q_i``), and
   it stays secret: the batches never leave the node.
2. **Per-sample gradients** ``g_j = grad L(w; x_j, y_j)``, all at once with
   ``vmap(grad(loss))`` over the batch (and over nodes, for the batched strategy).
3. **Clipping**: ``g_j <- g_j * min(1, C / ||g_j||)``, so one sample moves the sum by at most ``C``.
4. **Noise**: ``g = (sum_j g_j + N(0, sigma^2 C^2 I)) / B``, divided by the *expected* batch size
   (as Opacus does with Poisson sampling), so that the sensitivity of ``g`` does not depend on
   the batch drawn. An empty batch still takes the noisy step.

The SGD update with momentum and weight decay then follows as in :mod:`phalanx.train.local`
(post-processing: it costs no privacy). The noise multiplier may differ per node (a target
epsilon calibrates it to each node's own ``q_i`` and step count).

**Randomness.** In the simulation the batches and the noise come from generators derived from
the scenario seed, so a run reproduces; the noise is never logged. A deployed node must draw its
noise from the operating system's generator, since anyone who knows a seed can subtract the noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap


@dataclass(frozen=True)
class DPSGD:
    """DP-SGD's two parameters: the clip norm ``C`` and each node's noise multiplier ``sigma``."""

    clip: float
    noise_multiplier: torch.Tensor  # (n,) float: per node, over all nodes of the network

    def __post_init__(self) -> None:
        if not self.clip > 0:
            raise ValueError(f"DP-SGD clip norm must be positive (got {self.clip})")
        if bool((self.noise_multiplier < 0).any()):
            raise ValueError("DP-SGD noise multipliers must be non-negative")


def sample_rates(sizes: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``q_i = min(1, B / N_i)`` per node (1 for an empty shard, which takes no step)."""
    return (batch_size / sizes.clamp(min=1).to(torch.float64)).clamp(max=1.0)


def steps_per_epoch(sizes: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``ceil(N_i / B)`` steps per epoch per node (0 for an empty shard)."""
    return -(-sizes // batch_size)


def poisson_plan(index: torch.Tensor, sizes: torch.Tensor, epochs: int, batch_size: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Poisson batches for ``k`` nodes: ``plan (k, epochs, steps, b_max)`` pool indices, -1 padded,
    and ``active (k, epochs, steps)``: whether node ``i`` takes step ``s`` (``s < ceil(N_i/B)``).

    ``index``: ``(k, width)`` each node's pool indices (``index[i, :sizes[i]]`` are real).
    """
    k, width = index.shape
    q = sample_rates(sizes, batch_size).to(torch.float32)
    steps = steps_per_epoch(sizes, batch_size)
    s_max = max(1, int(steps.max())) if k else 1
    active = torch.arange(s_max, device=sizes.device)[None, :] < steps[:, None]  # (k, s_max)
    real = torch.arange(width, device=sizes.device)[None, :] < sizes[:, None]  # (k, width)
    plans = []
    for _ in range(epochs):
        draw = torch.rand(k, s_max, width, generator=generator, device=generator.device)
        chosen = (draw.to(sizes.device) < q[:, None, None]) & real[:, None, :] & active[..., None]
        b_max = max(1, int(chosen.sum(-1).max())) if k else 1
        first = chosen.to(torch.int8).argsort(dim=-1, descending=True, stable=True)[..., :b_max]
        picked = index[:, None, :].expand(-1, s_max, -1).gather(2, first)
        keep = chosen.gather(2, first)
        plans.append(torch.where(keep, picked, torch.full_like(picked, -1)))
    b_max = max(p.shape[-1] for p in plans)
    plans = [F.pad(p, (0, b_max - p.shape[-1]), value=-1) for p in plans]
    return torch.stack(plans, dim=1), active[:, None, :].expand(-1, epochs, -1)


def clip_and_sum(per_sample: torch.Tensor, valid: torch.Tensor, clip: float) -> torch.Tensor:
    """``sum_j min(1, C / ||g_j||) g_j`` over the valid samples: ``(..., b, d) -> (..., d)``."""
    norms = per_sample.norm(dim=-1)
    factor = torch.where(valid, (clip / norms.clamp(min=1e-12)).clamp(max=1.0), 0.0)
    return torch.einsum("...b,...bd->...d", factor.to(per_sample.dtype), per_sample)


def noisy_mean(clipped_sum: torch.Tensor, noise_std: torch.Tensor, batch_size: int,
               generator: torch.Generator) -> torch.Tensor:
    """``(clipped_sum + N(0, noise_std^2 I)) / B``; ``noise_std`` is ``(...,)``, one per node."""
    noise = torch.randn(clipped_sum.shape, generator=generator, device=generator.device,
                        dtype=clipped_sum.dtype).to(clipped_sum.device)
    return (clipped_sum + noise * noise_std[..., None].to(clipped_sum.dtype)) / batch_size


def per_sample_grad_fn(flat_model):
    """``(row (d,), x (b, ...), y (b,)) -> (b, d)``: each sample's gradient of its loss at ``row``.

    ``torch.func``'s ``vmap(grad(...))`` over the samples, with respect to the parameter
    tensors (views of the row), concatenated in the row's order: differentiating the row itself
    would fill a zero ``(d,)`` gradient per parameter per sample (5x slower, measured).
    """
    module, slots = flat_model.module, flat_model.slots

    def sample_loss(params, x, y):
        return F.cross_entropy(functional_call(module, params, (x[None],)), y[None])

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))

    def fn(row, x, y):
        grads = per_sample(flat_model.views(row), x, y)
        return torch.cat([grads[s.name].reshape(x.shape[0], -1) for s in slots], dim=1)

    return fn
