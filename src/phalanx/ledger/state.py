"""The structural rules every entry must meet given the entries before it, in one place.

The log applies these rules before it appends (so a bad entry never gets in), and the audit
applies the same rules to every stored entry (so one that got in anyway is found). They are the
structural half of issue 6's audit; the rules that need other packages (quarantine and
governance state, replaying aggregation) are the engine's, added to the audit as extra checks.

Rules, for entry i signed by key K with sequence number s:

- **keys**: a ``node_registration`` introduces a key that was never seen; every other entry is
  signed by the current key of a registered node that is not revoked. ``key_rotation`` (signed
  by the old key, with the new key's proof) moves a node to a key never seen; the old key signs
  nothing after. ``key_revocation`` ends a node's key.
- **replay**: s is above every earlier sequence number of K.
- **references** point to earlier entries of the right type: an aggregate record's inputs and
  rejections to update commitments of its round; votes and activations to a proposal (and an
  activation's votes to votes on it, one vote per node and proposal); rollbacks to an
  activation; quarantine and reputation evidence to any earlier entry.
- **provenance**: an update commitment names a dataset root that the same node committed
  earlier; quarantine, reputation and privacy entries name registered nodes.

Node identity survives rotation: a node is the node ID (SHA-256) of the key it registered with.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from phalanx.core.keys import node_id
from phalanx.ledger.entries import (
    AggregateRecord,
    DatasetCommitment,
    Entry,
    GovernanceActivation,
    GovernanceVote,
    KeyRevocation,
    KeyRotation,
    NodeRegistration,
    PrivacyBudget,
    Quarantine,
    Reputation,
    Rollback,
    UpdateCommitment,
    UpdateEquivocation,
)

#: Entry types whose content changes the state beyond their type, key, seq and round.
STATEFUL = frozenset({"node_registration", "dataset_commitment", "key_rotation", "key_revocation",
                      "governance_vote", "governance_activation"})


class StructureError(ValueError):
    """An entry that breaks a structural rule; the message names the rule."""


@dataclass(frozen=True)
class KeyStatus:
    node: bytes               # the node the key belongs to (ID of its registration key)
    since: int                # entry index from which the key signs
    ended: int | None = None  # index of the entry that rotated it away or revoked it
    why: str = ""             # "rotated away" or "revoked"


_MISSING = object()


@dataclass
class LedgerState:
    """What the rules need to know about entries 0..size-1."""

    size: int = 0
    keys: dict[bytes, KeyStatus] = field(default_factory=dict)     # raw public key -> status
    current: dict[bytes, bytes] = field(default_factory=dict)      # node -> its current key
    revoked: dict[bytes, int] = field(default_factory=dict)        # node -> revocation index
    last_seq: dict[bytes, int] = field(default_factory=dict)       # key's node ID -> its last seq
    datasets: set[tuple[bytes, bytes]] = field(default_factory=set)  # (node, root)
    types: list[str] = field(default_factory=list)                 # per index
    rounds: dict[int, int] = field(default_factory=dict)           # index -> round (update commitments)
    votes: dict[tuple[int, bytes], int] = field(default_factory=dict)  # (proposal, node) -> vote index
    vote_of: dict[int, int] = field(default_factory=dict)          # vote index -> proposal
    _journal: list[tuple[Any, Any, Any]] | None = field(default=None, repr=False)

    # -------------------------------------------------------------- queries

    def node_of(self, key: bytes) -> bytes | None:
        status = self.keys.get(key)
        return status.node if status else None

    def is_registered(self, node: bytes) -> bool:
        return node in self.current

    def next_seq(self, key_id: bytes) -> int:
        """The next sequence number for the key whose node ID (SHA-256) is ``key_id``."""
        return self.last_seq.get(key_id, -1) + 1

    # -------------------------------------------------------------- the rules

    def check(self, index: int, entry: Entry) -> None:
        """Raise :class:`StructureError` if entry ``index`` may not follow the entries so far."""
        if index != self.size:
            raise StructureError(f"entry {index} would not be next (the log has {self.size})")
        key, seq, kid = entry.key, entry.seq, entry.node_id
        if seq <= self.last_seq.get(kid, -1):
            raise StructureError(f"replayed entry: seq {seq} of key {key.hex()[:16]}... is not above "
                                 f"its last seq {self.last_seq[kid]}")
        body = entry.body
        if isinstance(body, NodeRegistration):
            if key in self.keys:
                raise StructureError(f"node_registration: key {key.hex()[:16]}... is already known "
                                     f"(since entry {self.keys[key].since})")
            return
        status = self.keys.get(key)
        if status is None:
            raise StructureError(f"{entry.type}: signed by key {key.hex()[:16]}..., which no node registered")
        if status.ended is not None:
            raise StructureError(f"{entry.type}: signed by key {key.hex()[:16]}..., {status.why} at entry {status.ended}")
        self._check_body(index, entry, status.node)

    def _check_body(self, index: int, entry: Entry, node: bytes) -> None:
        body = entry.body
        if isinstance(body, UpdateCommitment):
            if (node, body.dataset) not in self.datasets:
                raise StructureError(f"update_commitment: dataset {body.dataset.hex()[:16]}... was not "
                                     f"committed by node {node.hex()[:16]}...")
        elif isinstance(body, AggregateRecord):
            for what, refs in (("inputs", [i.entry for i in body.inputs]), ("rejected", [r.entry for r in body.rejected])):
                for ref in refs:
                    self._ref(index, entry.type, f"{what} entry {ref}", ref, "update_commitment")
                    if self.rounds.get(ref) != body.round:
                        raise StructureError(f"aggregate_record: {what} entry {ref} is an update of round "
                                             f"{self.rounds.get(ref)}, not {body.round}")
        elif isinstance(body, UpdateEquivocation):
            self._node(entry.type, body.node)
            self._ref(index, entry.type, "commitment", body.commitment, "update_commitment")
            if self.rounds.get(body.commitment) != body.round:
                raise StructureError(f"update_equivocation: commitment entry {body.commitment} is an update of "
                                     f"round {self.rounds.get(body.commitment)}, not {body.round}")
        elif isinstance(body, (Quarantine, Reputation)):
            self._node(entry.type, body.node)
            for ref in body.evidence:
                self._ref(index, entry.type, f"evidence entry {ref}", ref, None)
        elif isinstance(body, PrivacyBudget):
            if body.node is not None:
                self._node(entry.type, body.node)
        elif isinstance(body, GovernanceVote):
            self._ref(index, entry.type, "proposal", body.proposal, "governance_proposal")
            earlier = self.votes.get((body.proposal, node))
            if earlier is not None:
                raise StructureError(f"governance_vote: node {node.hex()[:16]}... already voted on proposal "
                                     f"{body.proposal} (entry {earlier})")
        elif isinstance(body, GovernanceActivation):
            self._ref(index, entry.type, "proposal", body.proposal, "governance_proposal")
            for ref in body.votes:
                self._ref(index, entry.type, f"vote entry {ref}", ref, "governance_vote")
                if self.vote_of.get(ref) != body.proposal:
                    raise StructureError(f"governance_activation: vote entry {ref} is not on proposal {body.proposal}")
        elif isinstance(body, Rollback):
            self._ref(index, entry.type, "activation", body.activation, "governance_activation")
        elif isinstance(body, KeyRotation):
            if body.new_key in self.keys:
                raise StructureError(f"key_rotation: the new key {body.new_key.hex()[:16]}... is already known")
        elif isinstance(body, KeyRevocation):
            self._node(entry.type, body.node)

    def _ref(self, index: int, type_: str, what: str, ref: int, want: str | None) -> None:
        if ref >= index:
            raise StructureError(f"{type_}: {what} is not an earlier entry")
        if want is not None and self.types[ref] != want:
            raise StructureError(f"{type_}: {what} is a {self.types[ref]}, not a {want}")

    def _node(self, type_: str, node: bytes) -> None:
        if node not in self.current:
            raise StructureError(f"{type_}: node {node.hex()[:16]}... is not registered")
        if node in self.revoked:
            raise StructureError(f"{type_}: node {node.hex()[:16]}... was revoked at entry {self.revoked[node]}")

    # -------------------------------------------------------------- applying

    def begin(self) -> None:
        """Start journaling changes, so that :meth:`rollback` can undo a batch that failed."""
        self._journal = []

    def commit(self) -> None:
        self._journal = None

    def rollback(self) -> None:
        for target, key, old in reversed(self._journal or []):
            if target is self.types:
                del self.types[key:]
            elif target is self.datasets:
                self.datasets.discard(key)
            elif target is self:
                self.size = old
            elif old is _MISSING:
                del target[key]
            else:
                target[key] = old
        self._journal = None

    def _set(self, mapping: dict, key: Any, value: Any) -> None:
        if self._journal is not None:
            self._journal.append((mapping, key, mapping.get(key, _MISSING)))
        mapping[key] = value

    def apply(self, index: int, entry: Entry) -> None:
        """Check entry ``index`` and, if it passes, record it."""
        self.check(index, entry)
        self.record(index, entry)

    def record(self, index: int, entry: Entry) -> None:
        """Record an entry that passed :meth:`check` (or was read back from a trusted store)."""
        body, key = entry.body, entry.key
        if isinstance(body, NodeRegistration):
            node = node_id(key)
            self._set(self.keys, key, KeyStatus(node, index))
            self._set(self.current, node, key)
        node = self.node_of(key)
        if isinstance(body, DatasetCommitment):
            if (node, body.root) not in self.datasets:
                if self._journal is not None:
                    self._journal.append((self.datasets, (node, body.root), None))
                self.datasets.add((node, body.root))
        elif isinstance(body, KeyRotation):
            self._set(self.keys, key, replace(self.keys[key], ended=index, why="rotated away"))
            self._set(self.keys, body.new_key, KeyStatus(node, index + 1))
            self._set(self.current, node, body.new_key)
        elif isinstance(body, KeyRevocation):
            self._set(self.revoked, body.node, index)
            current = self.current.get(body.node)
            if current is not None and self.keys[current].ended is None:
                self._set(self.keys, current, replace(self.keys[current], ended=index, why="revoked"))
        elif isinstance(body, GovernanceVote):
            self._set(self.votes, (body.proposal, node), index)
            self._set(self.vote_of, index, body.proposal)
        self.record_plain(index, entry.type, entry.node_id, entry.seq,
                          body.round if isinstance(body, UpdateCommitment) else None)

    def record_plain(self, index: int, type_: str, key_id: bytes, seq: int, round_: int | None) -> None:
        """Record what every entry leaves behind: its type, its key's seq, an update's round."""
        if self._journal is not None:
            self._journal.append((self.types, len(self.types), None))
            self._journal.append((self, None, self.size))
        self.types.append(type_)
        self._set(self.last_seq, key_id, max(seq, self.last_seq.get(key_id, -1)))
        if round_ is not None:
            self._set(self.rounds, index, round_)
        self.size = index + 1
