"""The attack success rate: the share of an attack's chosen test inputs sent to its target.

A targeted data attack names its success set (:meth:`phalanx.attacks.DataAttack.success_set`):
for a backdoor, the triggered test images whose true class is not the target; for a one-to-one
label flip, the test images of the source class. A model's attack success rate is the share of
those it classifies as the target (Gu et al. 2017's backdoor success; Fung et al. 2020's "attack
rate"). The engine reports it every evaluated round beside accuracy: the global model's in a
star, the mean (and the largest) over honest nodes in gossip.

What a clean model already does matters: some test images of other classes look like the
target, trigger or not. The range reports the rate of a run without attackers beside it, and the
README's tables subtract it.
"""

from __future__ import annotations

import torch

from phalanx.models.flat import FlatModel


@torch.no_grad()
def success_rates(flat_model: FlatModel, rows: torch.Tensor, inputs: torch.Tensor, target: int,
                  batch: int = 4096) -> torch.Tensor:
    """``(r,)``: for each model row, the share of ``inputs`` it classifies as ``target``."""
    out = []
    for row in rows:
        flat_model.flat.copy_(row)
        hits = 0
        for s in range(0, len(inputs), batch):
            hits += int((flat_model.module(inputs[s : s + batch]).argmax(1) == target).sum())
        out.append(hits / max(1, len(inputs)))
    return torch.tensor(out, dtype=torch.float64)
