"""Which checkpoints a node accepts, and how it notices that it is stalled.

A checkpoint is final with q witness cosignatures (the ledger's :class:`~phalanx.ledger.Policy`
with a group of the n validators as witnesses and threshold q). Honest witnesses cosign only
consistent extensions of what they cosigned before (:class:`~phalanx.ledger.Witness`), so two
conflicting checkpoints (one size, two roots) would need q cosignatures each, 2q - n >= f + 1
witnesses on both, an honest one among them: at most one of them is ever final.

A :class:`CheckpointGate` keeps every conflicting pair it sees as
:class:`~phalanx.ledger.Equivocation` evidence (whether or not either is final), accepts a
checkpoint only when the policy makes it final (``witness_quorum=True``; the naive gate takes
any checkpoint the log signed), and reports a stall when no new checkpoint became final for
``stall_after`` ticks. Cross-checking with peers cannot reveal a split view when every peer is
the attacker's; refusing what lacks the witness quorum, and noticing the stall, can (issue 7,
"split views"). A stall is the node's cue to time out the view (rotate the sequencer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from phalanx.ledger import Equivocation, NoteError, Policy, PolicyError
from phalanx.ledger.checkpoint import Checkpoint


@dataclass
class CheckpointGate:
    policy: Policy
    stall_after: int
    witness_quorum: bool = True
    accepted: dict[int, tuple[Checkpoint, bytes]] = field(default_factory=dict)  # size -> (checkpoint, note)
    seen: dict[int, tuple[Checkpoint, bytes]] = field(default_factory=dict)
    evidence: list[Equivocation] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    last_progress: int = 0

    def offer(self, note: bytes, now: int) -> str:
        """``final`` (accepted), ``pending`` (log-signed, short of the quorum), ``conflict`` or ``refused``."""
        try:
            signed = self.policy.open(note)
        except NoteError as e:
            self.refused.append(f"checkpoint: {e}")
            return "refused"
        cp = signed.checkpoint
        earlier = self.seen.get(cp.size) or self.accepted.get(cp.size)
        if earlier is not None and earlier[0].root != cp.root:
            pair = Equivocation(first=earlier[1], second=bytes(note))
            if all((e.first, e.second) != (pair.first, pair.second) for e in self.evidence):
                self.evidence.append(pair)
            if cp.size in self.accepted:
                return "conflict"
        self.seen.setdefault(cp.size, (cp, bytes(note)))
        if self.witness_quorum:
            try:
                self.policy.check(note)
            except PolicyError as e:
                self.refused.append(str(e))
                return "pending"
        if cp.size in self.accepted:
            return "final" if self.accepted[cp.size][0].root == cp.root else "conflict"
        if self.accepted and cp.size < max(self.accepted):
            return "final"  # an older checkpoint: nothing new
        self.accepted[cp.size] = (cp, bytes(note))
        self.last_progress = now
        return "final"

    def stalled(self, now: int) -> bool:
        return now - self.last_progress > self.stall_after
