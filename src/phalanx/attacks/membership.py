"""Membership inference: was this sample in the training data of that model?

Two attacks, scored the same way, so that the range can put a number on what an update or a
model leaks, with and without differential privacy:

- **Loss threshold** (Yeom, Giacomelli, Fredrikson, Jha 2018, "Privacy risk in machine learning:
  analyzing the connection to overfitting", CSF, Section 3.2): a sample is called a member when
  the model's loss on it is low. The score is ``-loss``.
- **Likelihood ratio, LiRA** (Carlini, Chien, Nasr, Song, Terzis, Tramer 2022, "Membership
  inference attacks from first principles", IEEE S&P, Section IV, Algorithm 1), in a form small
  enough for a CPU: ``K`` shadow models are trained like the target on random halves of a
  population that contains the candidate samples, so each candidate is *in* about half of them
  and *out* of the others. For each candidate, the logit-scaled confidence on its true label,
  ``phi = log(p / (1 - p))``, is fitted by one Gaussian over the IN shadows and one over the OUT
  shadows; the score is the log-likelihood ratio of the target's ``phi`` under the two. With
  too few IN shadows for a candidate the offline variant (OUT only: how far above the OUT
  distribution the target's confidence lies) is used, as the paper's Section VI-C does.

**Metrics** (Carlini et al. 2022, Section III: report the true-positive rate at low
false-positive rates, not only the AUC): :func:`roc_metrics` gives the AUC and the TPR at 1%
and 0.1% FPR, from ``sklearn.metrics.roc_curve``.

This module holds the statistics; training the target and the shadow models is the range's
(:mod:`phalanx.range.leakage`), which passes the scores in.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score, roc_curve

Logits = Callable[[torch.Tensor], torch.Tensor]  # inputs (b, ...) -> logits (b, classes)


@torch.no_grad()
def per_sample_loss(logits_of: Logits, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """Cross-entropy of every sample, ``(b,)``."""
    return torch.cat([F.cross_entropy(logits_of(x[s : s + batch]), y[s : s + batch], reduction="none")
                      for s in range(0, len(y), batch)]) if len(y) else torch.zeros(0)


def loss_threshold_scores(logits_of: Logits, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Yeom et al.'s score: ``-loss``, higher for the samples the model fits best."""
    return -per_sample_loss(logits_of, x, y)


@torch.no_grad()
def scaled_confidence(logits_of: Logits, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """``phi = log(p_y / (1 - p_y))`` per sample, computed stably from the logits (LiRA, eq. 4)."""
    out = []
    for s in range(0, len(y), batch):
        logits = logits_of(x[s : s + batch]).double()
        yb = y[s : s + batch]
        true = logits.gather(1, yb[:, None])[:, 0]
        others = logits.scatter(1, yb[:, None], float("-inf")).logsumexp(1)
        out.append(true - others)  # log p - log(1 - p)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def lira_scores(target_phi: torch.Tensor, shadow_phi: torch.Tensor, shadow_in: torch.Tensor,
                min_in: int = 2, eps: float = 1e-3) -> torch.Tensor:
    """Per-candidate log-likelihood ratio ``log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out)``.

    ``target_phi``: ``(n,)`` the target model's scaled confidence on each candidate;
    ``shadow_phi``: ``(K, n)`` each shadow model's; ``shadow_in``: ``(K, n)`` bool, whether the
    candidate was in that shadow's training data. Variances are per candidate (floored at
    ``eps``); a candidate with fewer than ``min_in`` IN shadows gets the offline score, the
    one-sided ``(phi - mu_out) / s_out``.
    """
    phi = shadow_phi.double()
    inside = shadow_in.double()
    outside = 1.0 - inside
    n_in, n_out = inside.sum(0), outside.sum(0)
    if bool((n_out < 1).any()):
        raise ValueError("LiRA: every candidate needs at least one shadow model trained without it")
    mu_in = (phi * inside).sum(0) / n_in.clamp(min=1)
    mu_out = (phi * outside).sum(0) / n_out
    var_in = (((phi - mu_in) ** 2) * inside).sum(0) / (n_in - 1).clamp(min=1)
    var_out = (((phi - mu_out) ** 2) * outside).sum(0) / (n_out - 1).clamp(min=1)
    # one pooled variance per side keeps the ratio stable with few shadows (the paper's
    # "fixed variance" variant, Section VI-B)
    s_in = var_in.mean().clamp(min=eps).sqrt()
    s_out = var_out.mean().clamp(min=eps).sqrt()
    t = target_phi.double()
    online = (_log_normal(t, mu_in, s_in) - _log_normal(t, mu_out, s_out))
    offline = (t - mu_out) / s_out
    return torch.where(n_in >= min_in, online, offline)


def _log_normal(x: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * math.log(2 * math.pi)


def roc_metrics(member_scores: torch.Tensor, nonmember_scores: torch.Tensor) -> dict[str, float]:
    """AUC and the true-positive rate at 1% and 0.1% false positives (higher score: member)."""
    if len(member_scores) == 0 or len(nonmember_scores) == 0:
        raise ValueError("membership metrics need at least one member and one non-member")
    scores = np.concatenate([member_scores.double().cpu().numpy(), nonmember_scores.double().cpu().numpy()])
    labels = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
    fpr, tpr, _ = roc_curve(labels, scores)
    return {
        "auc": float(roc_auc_score(labels, scores)),
        "tpr_at_1pct_fpr": _tpr_at(fpr, tpr, 0.01),
        "tpr_at_0.1pct_fpr": _tpr_at(fpr, tpr, 0.001),
        "members": int(len(member_scores)), "nonmembers": int(len(nonmember_scores)),
    }


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, at: float) -> float:
    """The best TPR with FPR at most ``at`` (0 when no threshold gets that low)."""
    ok = fpr <= at
    return float(tpr[ok].max()) if ok.any() else 0.0
