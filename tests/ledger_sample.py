"""A small but complete ledger for the tests: every entry type, witnesses, checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path

from phalanx.core.commitment import count_commitment, hiding_commitment
from phalanx.core.keys import SigningKey
from phalanx.ledger.entries import (
    Admission,
    AggregateInput,
    AggregateRecord,
    DatasetCommitment,
    GovernanceActivation,
    GovernanceProposal,
    GovernanceVote,
    KeyRevocation,
    NodeRegistration,
    PrivacyBudget,
    Quarantine,  # noqa: F401  (re-exported for the tests)
    Rejection,
    Reputation,
    Rollback,
    SoftwareRelease,
    UpdateCommitment,
    rotate_key,
)
from phalanx.ledger.log import Ledger
from phalanx.ledger.note import SIG_COSIGNATURE, Signer
from phalanx.ledger.policy import Policy
from phalanx.ledger.witness import Witness

ORIGIN = "phalanx.test/ledger"


def h(label: object) -> bytes:
    return sha256(str(label).encode()).digest()


@dataclass
class Sample:
    ledger: Ledger
    log: Signer
    witnesses: list[Witness]
    policy: Policy
    nodes: list[SigningKey]
    salt: bytes = field(default=b"s" * 32)


def log_signer(origin: str = ORIGIN, secret: str = "log") -> Signer:
    return Signer(origin, SigningKey.derive(secret))


def make_witnesses(log: Signer, count: int = 4, secret: str = "witness") -> list[Witness]:
    return [Witness(Signer(f"witness{i}.test", SigningKey.derive(secret, i), SIG_COSIGNATURE), [log.vkey],
                    clock=lambda: 1_700_000_000)
            for i in range(count)]


def node_keys(n: int, secret: str = "node") -> list[SigningKey]:
    return [SigningKey.derive(secret, i) for i in range(n)]


def register(ledger: Ledger, keys: list[SigningKey]) -> None:
    items = []
    for i, key in enumerate(keys):
        roles = ["trainer", "validator"] if i < 3 else ["trainer"]  # the three that vote
        items.append((NodeRegistration(software="phalanx-0.1.0", admission=Admission(kind="invite", evidence=h(i)),
                                       roles=roles), key))
        items.append((DatasetCommitment(name=f"shard{i}", root=h(("data", i)), samples=100 + i), key))
    ledger.submit_many(items)


def round_entries(ledger: Ledger, keys: list[SigningKey], round_: int, salt: bytes) -> list[int]:
    items = [(UpdateCommitment(round=round_, base_model=h(("model", round_)),
                               update=hiding_commitment(salt, f"update {round_} {i}".encode()),
                               dataset=h(("data", i)), protocol="phalanx/1",
                               samples=count_commitment(salt, 100 + i), weight=1.0 + i), key)
             for i, key in enumerate(keys)]
    return [index for _, index in ledger.submit_many(items)]


def aggregate(ledger: Ledger, aggregator: SigningKey, round_: int, updates: list[int]) -> int:
    record = AggregateRecord(round=round_, rule="trimmed_mean", params={"f": 1, "clip": 2.5},
                             inputs=[AggregateInput(entry=i, weight=1.0) for i in updates[:-1]],
                             rejected=[Rejection(entry=updates[-1], reason="non-finite row")],
                             result=h(("model", round_ + 1)), pre_noise=h(("pre", round_)),
                             released=h(("model", round_ + 1)))
    return ledger.submit(record, aggregator)[1]


def build(location: str | Path, *, nodes: int = 4, witnesses: int = 4, rounds: int = 2,
          everything: bool = True) -> Sample:
    """Registrations, datasets, rounds of updates and aggregates, one checkpoint per round, and
    (with ``everything``) every other entry type; ends with a checkpoint over all entries."""
    log = log_signer()
    ws = make_witnesses(log, witnesses)
    policy = Policy.byzantine([log.vkey], {w.name: w.vkey for w in ws})
    ledger = Ledger.create(location, log, policy=policy)
    keys = node_keys(nodes)
    register(ledger, keys)
    ledger.checkpoint(ws)
    salt = b"s" * 32
    for r in range(rounds):
        updates = round_entries(ledger, keys, r, salt)
        aggregate(ledger, keys[0], r, updates)
        ledger.checkpoint(ws)
    if everything:
        submit_the_rest(ledger, keys, updates)
        ledger.checkpoint(ws)
    return Sample(ledger, log, ws, policy, keys, salt)


def submit_the_rest(ledger: Ledger, keys: list[SigningKey], evidence: list[int]) -> None:
    validator, other = keys[0], keys[1]
    # a quarantine is a network-wide decision: a proposal the validators pass, cited by the entry
    _, asked = ledger.submit(GovernanceProposal(action="quarantine", params={"node": keys[-1].node_id.hex(),
                                                                           "round": 1},
                                                title="sent NaN twice", deadline=1), validator)
    ballots = [ledger.submit(GovernanceVote(proposal=asked, choice="yes"), k)[1] for k in keys[:3]]
    _, passed = ledger.submit(GovernanceActivation(proposal=asked, votes=ballots, round=1), validator)
    ledger.submit(Quarantine(node=keys[-1].node_id, round=1, action="quarantine", reason="sent NaN twice",
                             evidence=[passed, *evidence[-1:]]), validator)
    ledger.submit(Reputation(node=keys[-1].node_id, round=1, score=-0.5, reason="outlier", evidence=evidence[-1:]),
                  validator)
    ledger.submit(PrivacyBudget(round=1, node=other.node_id, mechanism="gaussian", accountant="rdp",
                                epsilon=0.25, delta=1e-6, total_epsilon=0.5, total_delta=2e-6), other)
    _, proposal = ledger.submit(GovernanceProposal(action="rollback", params={"round": 1}, title="undo round 1",
                                                   deadline=5), validator)
    votes = [ledger.submit(GovernanceVote(proposal=proposal, choice="yes"), k)[1] for k in keys[:3]]
    _, activation = ledger.submit(GovernanceActivation(proposal=proposal, votes=votes, round=3), validator)
    # round r's aggregate produced model r + 1; the checkpoint after round 1 had 18 entries
    ledger.submit(Rollback(activation=activation, round=1, model=h(("model", 2)), checkpoint=18,
                           reason="round 1 was poisoned"), validator)
    ledger.submit(SoftwareRelease(name="phalanx", version="0.1.1", artifact=h("wheel"), notes="fix"), validator)
    new_key = SigningKey.derive("node", "rotated", 1)
    ledger.append(rotate_key(other, new_key, ledger.next_seq(other), ledger.origin))
    ledger.submit(KeyRevocation(node=keys[-1].node_id, reason="key leaked"), keys[-1])
