"""FLAME: cluster out the odd updates, clip the rest to the median norm, add a little noise.

Nguyen et al. 2022, "FLAME: taming backdoors in federated learning" (USENIX Security),
Algorithm 1:

1. **Clustering.** The cosine distances ``1 - cos(W_i, W_j)`` between the senders' local
   models ``W_i = G + u_i`` go to HDBSCAN (Campello, Moulavi and Sander 2013) with ``min_cluster_size = floor(n/2) + 1`` and
   ``min_samples = 1``: only a majority can form a cluster, and the rows outside it (HDBSCAN's
   noise, or a minority cluster) are dropped. The clustering is scikit-learn's
   ``sklearn.cluster.HDBSCAN`` on the precomputed distance matrix, with
   ``allow_single_cluster=True`` (a round with no attacker is one cluster). When no cluster
   forms at all, every row is kept, as in the public implementations.
2. **Clipping.** ``S = median_i ||u_i||`` over all the round's rows; each kept row is scaled by
   ``min(1, S / ||u_i||)``.
3. **Noise.** Gaussian noise of standard deviation ``lambda * S`` is added to the aggregate
   (``lambda = 0.001`` for image classification in the paper, Section 5).

The paper clusters the local *models* and clips their differences from the global one,
``W_i - G``: in a star, the clustering reads ``base + rows`` (the engine passes the global model as
``base``) and the clipping the rows, the updates. In gossip the base is the receiver's own model,
the same construction around it. (Clustering the updates instead measured worse: on the backdoor
grid's round data it kept all 8 BadNets nodes in 3 of 8 rounds where the models' clustering kept
none or one; the cosine between models is close to a monotone function of the distance between
updates, which is what HDBSCAN's single-linkage tree sees.) Without a base the rows themselves are
clustered. The aggregate is the rule the chain names (``mean`` for the paper's FLAME). Dropped rows
are flagged.

HDBSCAN is a library call per receiver; in gossip the receivers are clustered one after another
(a loop over receivers, at ``O(k^2)`` each, small beside the ``O(k d)`` distance matrix).

Worked example: nine rows close to (1, 0) and one at (0, 1): the nine form the cluster, the
tenth is dropped and flagged; the kept rows are clipped to the median norm of all ten.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import torch
from pydantic import Field, validate_call

from phalanx.aggregate.base import masked_fill_rows
from phalanx.defenses.screen import SCREENS, Screen, Screening, cosine_matrix


def majority_cluster(distances: np.ndarray) -> np.ndarray:
    """Which of ``n`` rows lie in HDBSCAN's majority cluster, from ``(n, n)`` precomputed distances.

    ``min_cluster_size = n // 2 + 1``, ``min_samples = 1``; all rows when ``n < 3`` or no cluster forms.
    """
    from sklearn.cluster import HDBSCAN

    n = distances.shape[0]
    if n < 3:
        return np.ones(n, dtype=bool)
    labels = HDBSCAN(min_cluster_size=n // 2 + 1, min_samples=1, metric="precomputed",
                     allow_single_cluster=True, copy=True).fit_predict(np.ascontiguousarray(distances, dtype=np.float64))
    found = labels[labels >= 0]
    if len(found) == 0:
        return np.ones(n, dtype=bool)
    return labels == np.bincount(found).argmax()


@SCREENS.register("flame")
class Flame(Screen):
    """FLAME: HDBSCAN on cosine distances keeps the majority, clipped to the median norm, plus noise."""

    label = "flame"

    @validate_call
    def __init__(self, *, noise: Annotated[float, Field(ge=0, le=10)] = 0.001):
        self.noise = noise

    def screen(self, rows, mask, state, generator=None, base=None):
        clean = masked_fill_rows(rows, mask)
        m, k, _ = rows.shape
        models = clean if base is None else clean + base[:, None, :]  # the paper clusters local models
        cos = cosine_matrix(models, mask).cpu().numpy()
        keep = torch.zeros(m, k, dtype=torch.bool)
        for i in range(m):  # one HDBSCAN per receiver (a library call)
            real = mask[i].cpu().nonzero().squeeze(1).numpy()
            dist = np.clip(1.0 - cos[i][np.ix_(real, real)], 0.0, 2.0)
            np.fill_diagonal(dist, 0.0)
            keep[i, torch.as_tensor(real, dtype=torch.long)] = torch.as_tensor(majority_cluster(dist))
        keep = keep.to(mask.device) & mask
        norms = clean.norm(dim=-1)
        median = torch.stack([norms[i][mask[i]].median() if bool(mask[i].any()) else norms.new_zeros(())
                              for i in range(m)])
        scale = torch.where(norms > median[:, None], median[:, None] / norms.clamp(min=1e-30),
                            torch.ones_like(norms))
        clipped = clean * scale[..., None]
        return Screening(clipped, keep.to(rows.dtype), mask & ~keep, self.noise * median), {}
