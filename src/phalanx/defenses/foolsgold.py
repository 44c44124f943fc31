"""FoolsGold: sybils that share a goal send similar updates, round after round; weigh them down.

Fung, Yoon and Beschastnikh 2020, "The limitations of federated learning in Sybil settings"
(RAID), Algorithm 1. Each sender ``i``'s updates are summed over the rounds, ``H_i = sum_t
u_i,t`` (the history keeps what one round hides: honest nodes with different data drift apart,
sybils with one goal keep pointing the same way). Then, over the senders of the round:

1. ``cs_ij = cos(H_i, H_j)`` for ``i != j``, and ``v_i = max_j cs_ij``;
2. pardoning: ``cs_ij *= v_i / v_j`` wherever ``v_i < v_j`` (an honest node that happens to
   resemble a sybil is not punished for the sybil's similarity);
3. ``alpha_i = 1 - max_j cs_ij``, clipped to ``[0, 1]``, then divided by its maximum;
4. the logit: ``alpha_i = kappa (ln(alpha_i / (1 - alpha_i)) + 0.5)`` (``alpha_i = 1`` taken as
   0.99), clipped to ``[0, 1]``.

The weights multiply the rule's weights (with ``mean``: the weighted mean of the round's updates;
the paper's code sums ``alpha_i u_i`` and lets the learning rate absorb the scale; the engine
adds the aggregate at rate 1, so the weighted mean is the same direction at a bounded step).
A sender whose weight is 0 is flagged. The paper's optional feature-importance weighting of the
output layer is not built.

Star only: a history is a sum of the sender's own updates, which a gossip receiver never sees
(it receives models). State: ``history``, one ``(d,)`` sum per slot.

Worked example: histories (1, 0), (0, 1) and two identical (1, 1): the identical pair has cosine
1, so ``alpha = 0`` for both; the other two have cosine 0.71 with them, pardoned to 0.71 x 0.71 = 0.5
(their own maximum, 0.71, is below the pair's 1), so ``alpha = 0.5``, rescaled to 1, taken as 0.99
and sent through the logit (5.1) to 1.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from pydantic import Field, validate_call

from phalanx.aggregate.base import masked_fill_rows
from phalanx.defenses.screen import SCREENS, Screen, Screening, cosine_matrix


def foolsgold_weights(history: torch.Tensor, mask: torch.Tensor, kappa: float = 1.0) -> torch.Tensor:
    """FoolsGold's weights ``(m, k)`` in ``[0, 1]`` from each slot's summed updates ``(m, k, d)``.

    Masked-out slots get weight 0 and take no part in anyone's similarity.
    """
    m, k, _ = history.shape
    cs = cosine_matrix(history, mask)
    others = mask[:, :, None] & mask[:, None, :] & ~torch.eye(k, dtype=torch.bool, device=mask.device)
    cs = torch.where(others, cs, torch.full((), -math.inf, dtype=cs.dtype, device=cs.device))
    v = cs.max(dim=2).values  # (m, k): -inf for a slot with no other row
    v_i, v_j = v[:, :, None], v[:, None, :]
    pardon = others & (v_i < v_j) & (v_j > 0) & torch.isfinite(v_i)
    cs = torch.where(pardon, cs * v_i / torch.where(v_j > 0, v_j, torch.ones_like(v_j)), cs)
    top = cs.max(dim=2).values
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # alone: nothing to resemble
    wv = (1 - top).clamp(0, 1)
    wv = torch.where(mask, wv, torch.zeros_like(wv))
    peak = wv.max(dim=1, keepdim=True).values
    wv = torch.where(peak > 0, wv / torch.where(peak > 0, peak, torch.ones_like(peak)), wv)
    wv = torch.where(wv >= 1, torch.full_like(wv, 0.99), wv)
    with torch.no_grad():
        logit = kappa * (torch.log(wv / (1 - wv)) + 0.5)  # log(0) = -inf -> weight 0
    out = torch.nan_to_num(logit, nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)
    return torch.where(mask, out, torch.zeros_like(out))


@SCREENS.register("foolsgold")
class FoolsGold(Screen):
    """FoolsGold: weigh down senders whose summed updates resemble another sender's (sybils)."""

    label = "foolsgold"
    topologies = ("star",)
    needs_updates = True

    @validate_call
    def __init__(self, *, kappa: Annotated[float, Field(gt=0, le=100)] = 1.0):
        self.kappa = kappa

    def state_shapes(self, d: int) -> dict[str, tuple[int, ...]]:
        return {"history": (d,)}

    def screen(self, rows, mask, state, generator=None, base=None):
        clean = masked_fill_rows(rows, mask)
        history = state["history"] + torch.where(mask[..., None], clean, torch.zeros_like(clean)).to(
            state["history"].dtype)
        weights = foolsgold_weights(history, mask, self.kappa).to(rows.dtype)
        flags = mask & (weights <= 0)
        return Screening(rows, weights, flags), {"history": history}
