"""Entry types, their one encoding and signature, and the structural rules (phalanx.ledger)."""

from __future__ import annotations

import pytest

from ledger_sample import ORIGIN, h
from phalanx.core.encoding import decode, encode
from phalanx.core.keys import SigningKey
from phalanx.ledger.entries import (
    TYPES,
    Admission,
    AggregateInput,
    AggregateRecord,
    DatasetCommitment,
    EntryError,
    GovernanceProposal,
    GovernanceVote,
    KeyRevocation,
    NodeRegistration,
    Rejection,
    UpdateCommitment,
    decode_entry,
    make_body,
    rotate_key,
    sign_entry,
)
from phalanx.ledger.state import LedgerState, StructureError

KEY = SigningKey.derive("entries", 0)


def update(round_=1, dataset=None, weight=0.5):
    return UpdateCommitment(round=round_, base_model=h("base"), update=h("u"), dataset=dataset or h("d"),
                            protocol="phalanx/1", samples=h("n"), weight=weight)


def test_every_issue_type_is_registered():
    assert set(TYPES) == {
        "node_registration", "dataset_commitment", "update_commitment", "aggregate_record", "quarantine",
        "reputation", "privacy_budget", "governance_proposal", "governance_vote", "governance_activation",
        "software_release", "key_rotation", "key_revocation", "rollback", "update_equivocation",
        "round_certificate", "committee_evidence"}


def test_an_entry_has_one_encoding_and_a_domain_separated_signature():
    entry = sign_entry(update(), KEY, 3, ORIGIN)
    again = decode_entry(entry.encoding)
    assert again == entry and again.encoding == entry.encoding
    assert sign_entry(update(), KEY, 3, ORIGIN).encoding == entry.encoding  # deterministic
    again.verify(ORIGIN)
    with pytest.raises(EntryError, match="bad signature"):
        again.verify("another.log/origin")  # bound to its log: no replay into another
    assert entry.signed_message(ORIGIN).startswith(b"phalanx.ledger/entry/v1\n" + ORIGIN.encode() + b"\n")
    assert entry.node_id == KEY.node_id and entry.leaf_hash != entry.node_id


@pytest.mark.parametrize("type_,fields,what", [
    ("update_commitment", {"round": -1}, "body.round: input should be greater than or equal to 0"),
    ("update_commitment", dict(round=1, base_model=b"short", update=b"u" * 32, dataset=b"d" * 32,
                               protocol="p", samples=b"n" * 32), "body.base_model: .*at least 32"),
    ("update_commitment", dict(round=1, base_model=b"b" * 32, update=b"u" * 32, dataset=b"d" * 32,
                               protocol="p", samples=b"n" * 32, weight=float("inf")), "body.weight: .*finite"),
    ("aggregate_record", dict(round=1, rule="mean", inputs=[{"entry": 1, "weight": 1.0}],
                              rejected=[{"entry": 1, "reason": "x"}], result=b"r" * 32), "both used and rejected"),
    ("aggregate_record", dict(round=1, rule="mean", inputs=[], result=b"r" * 32, pre_noise=b"p" * 32),
     "pre_noise and released come together"),
    ("node_registration", dict(software="v1", admission={"kind": "invite"}, roles=["king"]), "body.roles.0"),
    ("dataset_commitment", dict(name="x y", root=b"r" * 32, samples=1), "body.name: string should match"),
    ("governance_vote", dict(proposal=1, choice="maybe"), "body.choice"),
    ("frobnication", {}, "unknown entry type 'frobnication'"),
    ("update_commitment", dict(round=True, base_model=b"b" * 32, update=b"u" * 32, dataset=b"d" * 32,
                               protocol="p", samples=b"n" * 32), "body.round: input should be a valid integer"),
    ("reputation", dict(node=b"n" * 32, round=1, score=1.0, reason="a\x00b"), "control characters"),
])
def test_a_malformed_entry_names_the_field(type_, fields, what):
    with pytest.raises(EntryError, match=what):
        make_body(type_, fields)


def _tamper(entry, **changes):
    value = decode(entry.encoding)
    value.update(changes)
    return encode(value)


def test_decoding_is_exact():
    entry = sign_entry(update(weight=1.0), KEY, 0, ORIGIN)
    value = decode(entry.encoding)
    value["body"]["weight"] = 1  # an int where a float belongs: a second encoding of the same value
    with pytest.raises(EntryError, match="body.weight: expected a float"):
        decode_entry(encode(value))
    value = decode(entry.encoding)
    del value["body"]["weight"]  # a default omitted
    with pytest.raises(EntryError, match="body.weight: not in canonical form"):
        decode_entry(encode(value))
    with pytest.raises(EntryError, match="unknown extra"):
        decode_entry(_tamper(entry, extra=1))
    with pytest.raises(EntryError, match="v: unsupported entry version 2"):
        decode_entry(_tamper(entry, v=2))
    with pytest.raises(EntryError, match="seq: not an integer"):
        decode_entry(_tamper(entry, seq=-1))
    with pytest.raises(EntryError, match="trailing bytes"):
        decode_entry(entry.encoding + b"\x00")
    with pytest.raises(EntryError, match="not valid CBOR"):
        decode_entry(entry.encoding[:-3])
    forged = decode_entry(_tamper(entry, seq=1))  # decodes, but the signature is for seq 0
    with pytest.raises(EntryError, match="bad signature"):
        forged.verify(ORIGIN)


def test_key_rotation_needs_the_new_keys_proof():
    new = SigningKey.derive("entries", "new")
    rotation = rotate_key(KEY, new, 5, ORIGIN)
    decode_entry(rotation.encoding).verify(ORIGIN)
    stolen = SigningKey.derive("entries", "someone else's")
    bad = sign_entry(type(rotation.body)(new_key=stolen.public.raw, proof=rotation.body.proof), KEY, 6, ORIGIN)
    with pytest.raises(EntryError, match="new key's proof does not verify"):
        bad.verify(ORIGIN)


# ---------------------------------------------------------------- the structural rules


def _registered(state: LedgerState, *keys: SigningKey) -> None:
    for key in keys:
        state.apply(state.size, sign_entry(NodeRegistration(software="v1", admission=Admission(kind="operator")),
                                           key, state.next_seq(key.node_id), ORIGIN))
        state.apply(state.size, sign_entry(DatasetCommitment(name="d", root=h(("d", key.seed)), samples=1),
                                           key, state.next_seq(key.node_id), ORIGIN))


def _add(state, body, key, seq=None):
    entry = sign_entry(body, key, state.next_seq(key.node_id) if seq is None else seq, ORIGIN)
    state.apply(state.size, entry)
    return state.size - 1


def test_structural_rules_name_what_they_refuse():
    a, b, stranger = (SigningKey.derive("rules", i) for i in range(3))
    state = LedgerState()
    _registered(state, a, b)
    with pytest.raises(StructureError, match="which no node registered"):
        _add(state, update(dataset=h("d")), stranger)
    with pytest.raises(StructureError, match="was not committed by node"):
        _add(state, update(dataset=h("not committed")), a)
    u = _add(state, update(round_=2, dataset=h(("d", a.seed))), a)
    with pytest.raises(StructureError, match="replayed entry: seq 0"):
        _add(state, update(round_=3, dataset=h(("d", a.seed))), a, seq=0)
    with pytest.raises(StructureError, match="is an update of round 2, not 3"):
        _add(state, AggregateRecord(round=3, rule="mean", inputs=[AggregateInput(entry=u, weight=1.0)],
                                    result=h("r")), b)
    with pytest.raises(StructureError, match="inputs entry 0 is a node_registration, not a update_commitment"):
        _add(state, AggregateRecord(round=2, rule="mean", inputs=[AggregateInput(entry=0, weight=1.0)],
                                    result=h("r")), b)
    with pytest.raises(StructureError, match="rejected entry 99 is not an earlier entry"):
        _add(state, AggregateRecord(round=2, rule="mean", inputs=[], rejected=[Rejection(entry=99, reason="x")],
                                    result=h("r")), b)
    _add(state, AggregateRecord(round=2, rule="mean", inputs=[AggregateInput(entry=u, weight=1.0)], result=h("r")), b)
    p = _add(state, GovernanceProposal(action="set_param", title="t", deadline=9), a)
    _add(state, GovernanceVote(proposal=p, choice="yes"), b)
    with pytest.raises(StructureError, match="already voted on proposal"):
        _add(state, GovernanceVote(proposal=p, choice="no"), b)
    with pytest.raises(StructureError, match="already known"):
        _add(state, NodeRegistration(software="v1", admission=Admission(kind="operator")), a)
    _add(state, KeyRevocation(node=b.node_id, reason="leaked"), b)
    with pytest.raises(StructureError, match="revoked at entry"):
        _add(state, GovernanceVote(proposal=p, choice="no"), b)
    new = SigningKey.derive("rules", "new")
    state.apply(state.size, rotate_key(a, new, state.next_seq(a.node_id), ORIGIN))
    with pytest.raises(StructureError, match="rotated away at entry"):
        _add(state, update(round_=4, dataset=h(("d", a.seed))), a)
    _add(state, update(round_=4, dataset=h(("d", a.seed))), new)  # same node, new key, its datasets


def test_a_failed_batch_leaves_the_state_as_it_was():
    a = SigningKey.derive("batch", 0)
    state = LedgerState()
    _registered(state, a)
    before = (state.size, dict(state.last_seq), list(state.types), set(state.datasets), dict(state.keys))
    state.begin()
    state.apply(state.size, sign_entry(DatasetCommitment(name="d2", root=h("d2"), samples=2), a, 2, ORIGIN))
    state.apply(state.size, rotate_key(a, SigningKey.derive("batch", 1), 3, ORIGIN))
    state.rollback()
    assert (state.size, dict(state.last_seq), list(state.types), set(state.datasets), dict(state.keys)) == before
