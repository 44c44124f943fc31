"""The aggregation step that simulated and deployed rounds share, for one chunk of receivers.

Both the simulation's gossip round (:mod:`.simulation`, many receivers at once) and a deployed
node (:mod:`.node`, one receiver: itself) hand the defense chain the same thing: each receiver's
rows relative to a reference model (its trained model, or its model before the round for a rule
that reads a trusted root update), a mask of the rows that arrived and passed validation, the
declared f per receiver, its previous state for a stateful rule, and the round's generator. A
receiver whose rows fail a stage's bound keeps its own model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from phalanx.aggregate import Chain, Context


def declared_f(rows: torch.Tensor, count: int | None, share: float | None) -> torch.Tensor:
    """Declared f for receivers that aggregate from ``rows`` others: a count, or a share rounded up."""
    if count is not None:
        return torch.full_like(rows, count)
    return torch.ceil((share or 0.0) * rows.to(torch.float64) - 1e-9).clamp(min=0).to(torch.int64)


def aggregate_relative(chain: Chain, msgs: torch.Tensor, mask: torch.Tensor, ref: torch.Tensor,
                       own: torch.Tensor, f: torch.Tensor, ok: torch.Tensor, weights: torch.Tensor | None,
                       previous: torch.Tensor | None, generator: torch.Generator, *, relative: bool = False,
                       post: Callable[[torch.Tensor, torch.Tensor, Callable], torch.Tensor] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """New models of a chunk of receivers, and the rule's raw output for the ones that aggregated.

    ``msgs`` (c, k, d) are the absolute models in each receiver's slots (shifted in place: the
    caller's own gathered copy), ``mask`` (c, k) which arrived, ``ref`` (c, d) the frame,
    ``own`` (c, d) each receiver's trained model, ``ok`` (c,) who may aggregate (the chain's row
    bounds), ``weights`` (c, k) or ``None``, ``previous`` (c, d) a stateful rule's state.
    ``relative``: ``msgs`` are already relative to ``ref`` (a screen shifted them). ``post(got,
    sel, pick)`` may change the rule's output before it becomes the model (the simulation's guard
    observes it there and adds its noise). Returns ``(new (c, d), got, sel)``: ``got`` is the
    rule's output for receivers ``sel`` before ``post`` (the new state of a stateful rule).
    """
    out = torch.zeros_like(own)
    sel = ok.nonzero().squeeze(1)
    got = None
    if len(sel):
        everyone = len(sel) == len(own)
        pick = (lambda t: t) if everyone else (lambda t: t[sel])  # no copy when all aggregate
        if not relative:
            msgs -= ref[:, None, :]
        context = Context(f=pick(f), root=pick(own - ref) if chain.needs_root else None,
                          previous=pick(previous) if chain.stateful else None, generator=generator)
        got = chain.aggregate(pick(msgs), pick(mask), None if weights is None else pick(weights), context)
        out[sel] = got if post is None else post(got, sel, pick)
    return torch.where(ok[:, None], ref + out, own), got, sel


@torch.no_grad()
def evaluate_rows(flat_model, rows: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                  batch: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(accuracy, mean cross-entropy) of each model row on the test set, through ``flat_model``."""
    module = flat_model.module
    n = max(1, len(test_y))
    accs, losses = [], []
    for row in rows:
        flat_model.flat.copy_(row)
        correct, total_loss = 0, 0.0
        for s in range(0, len(test_y), batch):
            logits = module(test_x[s : s + batch])
            y = test_y[s : s + batch]
            correct += int((logits.argmax(1) == y).sum())
            total_loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        accs.append(correct / n)
        losses.append(total_loss / n)
    return torch.tensor(accs), torch.tensor(losses)

