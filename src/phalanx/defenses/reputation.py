"""Beta reputation with forgetting: each receiver scores each sender from what it has seen.

Jøsang and Ismail 2002, "The beta reputation system" (Bled eConference), Sections 3 and 5: a
sender's behaviour is a sequence of observations, ``r`` positive and ``s`` negative; the
reputation is the expected value of ``Beta(r + 1, s + 1)``,

    score = (r + 1) / (r + s + 2),

0.5 with no evidence. **Forgetting** (their Section 5, factor ``lambda`` in ``[0, 1]``): before a
new observation ``(p, q)`` is added, the old evidence is discounted,
``r <- lambda r + p``, ``s <- lambda s + q``; ``lambda = 1`` remembers everything, ``lambda = 0``
only the last round. It is the knob an on-off attacker plays against
(:mod:`phalanx.attacks.on_off`).

**Evidence, each round a receiver aggregates.** Each round is one observation of each sender
whose row the receiver got: positive to the extent the row passes *every* check that is on (the
smallest of the checks' scores in ``[0, 1]``, so one failed check makes a bad round), negative for
the rest. The checks:

- ``distance``: 1 when the row lies within ``distance_factor`` times the median distance of the
  receiver's rows from the reference, else 0;
- ``cosine``: 1 when the row's cosine with the reference exceeds both ``cosine_threshold`` and
  ``cosine_factor`` times the median cosine of the receiver's rows, else 0 (relative, like the
  distance check: under non-IID data an honest row's cosine with the aggregate may be small, but
  a row that carries nothing of the common direction is smaller still);
- ``root_loss``: 1 unless the model moved by the row has a loss on the trusted root set (the star
  server's root sample) above the median over the rows by more than ``loss_margin`` median
  absolute deviations;
- ``similarity``: FoolsGold's weight of the sender from the summed history of its rows
  (:func:`~phalanx.defenses.foolsgold.foolsgold_weights`): collusion is evidence;
- ``flags`` (off by default): 0 when a screen earlier in the list flagged the row (FoolsGold's
  zero weight, FLAME's outliers), so that their one-round verdicts build up into a score the
  validators read. Off by default because a screen may flag honest rows often: FLAME's HDBSCAN
  leaves about half of the honest rows out of its cluster in a round with no attacker at all
  (measured on the backdoor grid), and two such rounds in a row would sink a new node's score.
Besides the rounds, each row the receiver had to drop (non-finite, wrong shape) adds
``invalid`` negative observations, and each failed audit of the sender's data commitment adds
``audit`` at every receiver (:mod:`phalanx.defenses.provenance`).

The reference is the receiver's aggregate this round (``reference="aggregate"``, the robust
aggregate of the chain in use), or the coordinate-wise median of its rows (``"median"``), which
does not depend on the chain.

**Local use.** A receiver's scores drive only its own aggregation: a sender scored below
``threshold`` is dropped from that receiver's rows and flagged; with ``use="weight"`` the others
are also weighted by their score. Network-wide consequences (quarantine) are the validators'
decision (:mod:`phalanx.defenses.quarantine`). State per slot: ``alpha`` (positive evidence),
``beta`` (negative) and, with ``similarity``, the summed ``history``.

Worked example: with ``lambda = 0.5`` a sender seen good twice then bad once has
``r = 0.5 (0.5 + 1) = 0.75, s = 1``: score 1.75 / 3.75 = 0.47.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field, validate_call

from phalanx.aggregate.base import masked_fill_rows
from phalanx.defenses.foolsgold import foolsgold_weights
from phalanx.defenses.screen import SCREENS, Screen, Screening

Weight = Annotated[float, Field(ge=0, le=1000)]


def beta_score(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """The expected value of ``Beta(alpha + 1, beta + 1)``: ``(alpha + 1) / (alpha + beta + 2)``."""
    return (alpha + 1) / (alpha + beta + 2)


def forget_and_add(alpha, beta, positive, negative, forgetting: float, seen: torch.Tensor):
    """``alpha, beta`` after one round of evidence where ``seen``: ``x <- forgetting * x + new``."""
    new_alpha = torch.where(seen, forgetting * alpha + positive, alpha)
    new_beta = torch.where(seen, forgetting * beta + negative, beta)
    return new_alpha, new_beta


def _masked_median(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(m,)`` median over the real entries of ``(m, k)`` values (NaN where none)."""
    nan = torch.full((), float("nan"), dtype=values.dtype, device=values.device)
    return torch.where(mask, values, nan).nanmedian(dim=1).values


def distance_evidence(rows, mask, reference, factor: float) -> torch.Tensor:
    """1 where a row is within ``factor`` times the receiver's median distance to ``reference``."""
    dist = (masked_fill_rows(rows, mask) - reference[:, None, :]).norm(dim=-1)
    median = _masked_median(dist, mask)
    return (dist <= factor * median[:, None]).to(rows.dtype)


def cosine_evidence(rows, mask, reference, threshold: float, factor: float = 0.0) -> torch.Tensor:
    """1 where a row's cosine with ``reference`` exceeds ``threshold`` and ``factor`` x the median cosine."""
    clean = masked_fill_rows(rows, mask)
    cos = torch.nn.functional.cosine_similarity(clean, reference[:, None, :].expand_as(clean), dim=-1)
    median = _masked_median(cos, mask)
    limit = torch.maximum(torch.full_like(median, threshold), factor * median)
    return (cos > limit[:, None]).to(rows.dtype)


def loss_evidence(losses: torch.Tensor, mask: torch.Tensor, margin: float) -> torch.Tensor:
    """1 unless a row's root loss exceeds the median by ``margin`` median absolute deviations."""
    median = _masked_median(losses, mask)
    mad = _masked_median((losses - median[:, None]).abs(), mask)
    limit = median + margin * mad.clamp(min=1e-6)
    return (losses <= limit[:, None]).to(losses.dtype)


def coordinate_median(rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(m, d)`` coordinate-wise median of each receiver's real rows."""
    nan = torch.full((), float("nan"), dtype=rows.dtype, device=rows.device)
    return torch.where(mask[..., None], rows, nan).nanmedian(dim=1).values


@SCREENS.register("reputation")
class Reputation(Screen):
    """Beta reputation with forgetting per receiver and sender, fed by distance, cosine, root loss, collusion."""

    label = "reputation"

    @validate_call
    def __init__(
        self,
        *,
        forgetting: Annotated[float, Field(ge=0, le=1)] = 0.9,
        threshold: Annotated[float, Field(ge=0, le=1)] = 0.3,
        use: Literal["filter", "weight"] = "filter",
        reference: Literal["aggregate", "median"] = "aggregate",
        distance: bool = True,
        cosine: bool = True,
        root_loss: bool = False,
        similarity: bool = False,
        flags: bool = False,
        invalid: Weight = 5.0,
        audit: Weight = 10.0,
        distance_factor: Annotated[float, Field(gt=0, le=1000)] = 2.0,
        cosine_threshold: Annotated[float, Field(ge=-1, le=1)] = 0.0,
        cosine_factor: Annotated[float, Field(ge=0, le=1)] = 0.5,
        loss_margin: Annotated[float, Field(gt=0, le=1000)] = 3.0,
    ):
        self.forgetting, self.threshold, self.use, self.reference = forgetting, threshold, use, reference
        self.sources = {"distance": distance, "cosine": cosine, "root_loss": root_loss,
                        "similarity": similarity, "flags": flags}
        self.invalid, self.audit = invalid, audit
        self.distance_factor, self.cosine_threshold, self.loss_margin = distance_factor, cosine_threshold, loss_margin
        self.cosine_factor = cosine_factor

    @property
    def needs_root_loss(self) -> bool:
        return self.sources["root_loss"]

    def state_shapes(self, d: int) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {"alpha": (), "beta": ()}
        if self.sources["similarity"]:
            shapes["history"] = (d,)
        return shapes

    def scores(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        return beta_score(state["alpha"], state["beta"])

    def screen(self, rows, mask, state, generator=None, base=None):
        score = self.scores(state).to(rows.dtype)
        keep = mask & (score >= self.threshold)
        weights = keep.to(rows.dtype) * (score if self.use == "weight" else 1.0)
        return Screening(rows, weights, mask & ~keep), {}

    def observe(self, rows: torch.Tensor, mask: torch.Tensor, aggregate: torch.Tensor,
                state: dict[str, torch.Tensor], losses: torch.Tensor | None = None,
                flagged: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The new state after a round in which each receiver aggregated ``rows`` into ``aggregate``.

        ``rows`` ``(m, k, d)`` as the receivers got them (after validation), ``aggregate``
        ``(m, d)`` in the same frame; ``losses`` ``(m, k)``, each row's root-set loss, when the
        ``root_loss`` source is on; ``flagged`` ``(m, k)``, the rows earlier screens flagged.
        """
        reference = aggregate if self.reference == "aggregate" else coordinate_median(rows, mask)
        sources: dict[str, torch.Tensor] = {}
        if self.sources["distance"]:
            sources["distance"] = distance_evidence(rows, mask, reference, self.distance_factor)
        if self.sources["cosine"]:
            sources["cosine"] = cosine_evidence(rows, mask, reference, self.cosine_threshold, self.cosine_factor)
        if self.sources["root_loss"]:
            if losses is None:
                raise ValueError("reputation: root_loss evidence needs a trusted root set (star, with root data)")
            sources["root_loss"] = loss_evidence(losses.to(rows.dtype), mask, self.loss_margin)
        if self.sources["flags"] and flagged is not None:
            sources["flags"] = (~flagged.to(mask.device)).to(rows.dtype)
        new: dict[str, torch.Tensor] = {}
        if self.sources["similarity"]:
            clean = masked_fill_rows(rows, mask)
            history = state["history"] + torch.where(mask[..., None], clean, torch.zeros_like(clean)).to(
                state["history"].dtype)
            sources["similarity"] = foolsgold_weights(history, mask).to(rows.dtype)
            new["history"] = history
        positive = torch.ones(mask.shape, dtype=state["alpha"].dtype, device=mask.device)
        for s in sources.values():
            positive = torch.minimum(positive, s.to(positive.dtype))
        if not sources:
            positive = torch.full_like(positive, 0.5)  # no check on: no information
        negative = 1 - positive
        new["alpha"], new["beta"] = forget_and_add(state["alpha"], state["beta"], positive, negative,
                                                   self.forgetting, mask)
        return new
