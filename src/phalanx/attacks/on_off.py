"""On-off: behave long enough to earn trust, attack, behave again; the classic attack on reputation.

Sun, Han, Yu and Liu 2006, "Defense of trust management vulnerabilities in distributed networks"
(IEEE Communications Magazine) name it: a node that alternates good and bad behaviour keeps a
good enough reputation to stay in the network. With a reputation that forgets (Jøsang and
Ismail 2002's forgetting factor) the good rounds restore its score quickly after each burst;
without forgetting, a long good record buries a short burst. The range measures both.

The cycle has ``honest`` rounds then ``attacking`` rounds, starting with the honest ones
(``start="honest"``) or the attacking ones: in round ``t`` (counted from 1) the node attacks when
``(t - 1) mod (honest + attacking)`` is at least ``honest`` (with ``start="honest"``). (The
parameters are not named ``on`` and ``off``: YAML reads those words as booleans.) While honest it sends its
own trained update; while attacking, what the wrapped update ``attack`` crafts (any registered
update attack, with its hyper-parameters: ``{name: sign_flip, scale: 2}``). Its knowledge is the
wrapped attack's.

Worked example: ``honest=3, attacking=2`` attacks in rounds 4, 5, 9, 10, 14, 15, ...
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import Field, validate_call

from phalanx.attacks.base import AttackView, UpdateAttack


class OnOff(UpdateAttack):
    """Honest for ``honest`` rounds, then the wrapped ``attack`` for ``attacking`` rounds, over and over."""

    label = "on_off"

    @validate_call
    def __init__(
        self,
        *,
        attack: str | dict[str, Any] = "sign_flip",
        attacking: Annotated[int, Field(ge=1, le=100_000)] = 5,
        honest: Annotated[int, Field(ge=0, le=100_000)] = 10,
        start: Literal["honest", "attacking"] = "honest",
    ):
        from phalanx.attacks import UPDATE_ATTACKS  # the registry lives in the package's __init__

        spec = {"name": attack} if isinstance(attack, str) else dict(attack)
        name = spec.pop("name", None)
        if not isinstance(name, str):
            raise ValueError("on_off: attack needs a name, e.g. {name: sign_flip}")
        if name == "on_off":
            raise ValueError("on_off: cannot wrap itself")
        self.inner = UPDATE_ATTACKS.build(name, **spec)
        self.knowledge = self.inner.knowledge
        self.on, self.off, self.start = attacking, honest, start

    def attacking(self, round: int) -> bool:
        """Whether round ``round`` (from 1) is in an attacking phase."""
        position = (max(1, round) - 1) % (self.on + self.off)
        return position >= self.off if self.start == "honest" else position < self.on

    def craft(self, view: AttackView) -> torch.Tensor:
        if self.attacking(view.round):
            return self.inner.craft(view)
        return view.own_updates[:, None, :].clone()

    def claims(self, view: AttackView) -> torch.Tensor | None:
        return self.inner.claims(view) if self.attacking(view.round) else None
