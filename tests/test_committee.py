"""Committee mode's protocol core: quorum, rotation, certificates, view changes, evidence, promises
and checkpoint finality, with crashed and Byzantine validators (silent, wrong hash, double signing,
equivocating or censoring sequencers). Messages are delivered by a tiny in-memory bus."""

from __future__ import annotations

import hashlib
import itertools
from collections import deque

import pytest
import torch

from phalanx.aggregate import chain
from phalanx.core.keys import SigningKey
from phalanx.engine.committee import (
    Certificate,
    CheckpointGate,
    Echo,
    PromiseBook,
    Proposal,
    Recomputer,
    Signed,
    StatementError,
    Validator,
    Vote,
    conflicting,
    promise,
    quorum,
    sequencer,
    sign,
    tolerated,
)
from phalanx.engine.committee.ledger import certificate_entry, check_certificate_entry, evidence_entry
from phalanx.ledger import Checkpoint, Policy, Signer, Witness, decode_entry, sign_checkpoint, sign_entry
from phalanx.ledger.note import SIG_COSIGNATURE, parse_note

ORIGIN = "test.phalanx/committee"
UPDATES = {hashlib.sha256(bytes([i])).digest(): torch.tensor([float(i), 2.0 * i, -1.0]) for i in range(5)}
BATCH = tuple(sorted(UPDATES))[:4]


def keys(n):
    signing = [SigningKey.derive("committee-test", i) for i in range(n)]
    return signing, [k.public for k in signing]


def validators(n, round_=0, recompute=None, eligible=None):
    signing, public = keys(n)
    rc = recompute or Recomputer(UPDATES, chain(["median"]), f=tolerated(n), round_=round_)
    return [Validator(i, signing[i], public, ORIGIN, round_, rc, eligible) for i in range(n)]


def deliver(vals, outgoing, down=(), drop=lambda s, to: False):
    """Deliver every statement (and what it causes) to every live validator but its sender."""
    queue = deque(outgoing)
    while queue:
        s = queue.popleft()
        for v in vals:
            if v.index != s.signer and v.index not in down and not drop(s, v.index):
                queue.extend(v.receive(s))


def certified(vals, down=()):
    return {v.index: v.certificate for v in vals if v.index not in down and v.certificate is not None}


def timeouts(vals, down=()):
    out = []
    for v in vals:
        if v.index not in down:
            out += v.timeout()
    return out


# ------------------------------------------------------------------ quorum and rotation

@pytest.mark.parametrize("n,q,f", [(1, 1, 0), (3, 3, 0), (4, 3, 1), (6, 5, 1), (7, 5, 2), (10, 7, 3)])
def test_quorum_is_two_thirds_plus_one_and_tolerates_the_rest(n, q, f):
    assert (quorum(n), tolerated(n)) == (q, f)
    assert 2 * q - n >= f + 1 or f == 0  # two quorums share an honest validator


def test_the_sequencer_rotates_by_round_and_view_over_the_eligible():
    assert [sequencer(r, 0, [0, 1, 2, 3]) for r in range(5)] == [0, 1, 2, 3, 0]
    assert [sequencer(2, v, [0, 1, 2, 3]) for v in range(3)] == [2, 3, 0]
    assert [sequencer(r, 0, [0, 1, 3]) for r in range(4)] == [0, 1, 3, 0]  # 2 rotated out
    with pytest.raises(ValueError, match="no eligible sequencer"):
        sequencer(0, 0, [])


# ------------------------------------------------------------------ the normal case

def test_four_validators_certify_the_recomputed_aggregate_and_the_ledger_entry_rechecks():
    vals = validators(4)
    deliver(vals, vals[0].propose(BATCH))
    certs = certified(vals)
    assert set(certs) == {0, 1, 2, 3} and len({c.value for c in certs.values()}) == 1
    cert = certs[2]
    _, public = keys(4)
    cert.verify(public, ORIGIN)
    want = Recomputer(UPDATES, chain(["median"]), f=1, round_=0)(BATCH)
    assert cert.aggregate == want and cert.batch == BATCH
    body = certificate_entry(cert, public)
    entry = decode_entry(sign_entry(body, SigningKey.derive("committee-test", 0), 0, ORIGIN).encoding)
    check_certificate_entry(entry.body, public, ORIGIN)
    forged = body.model_copy(update={"aggregate": hashlib.sha256(b"other").digest()})
    with pytest.raises(ValueError, match="not the hash of its batch"):
        check_certificate_entry(forged, public, ORIGIN)


def test_a_certificate_short_of_the_quorum_or_with_a_foreign_vote_does_not_verify():
    vals = validators(4)
    deliver(vals, vals[0].propose(BATCH))
    cert = vals[1].certificate
    _, public = keys(4)
    with pytest.raises(StatementError, match="2 distinct votes, the quorum is 3"):
        Certificate(cert.proposal, cert.votes[:2]).verify(public, ORIGIN)
    with pytest.raises(StatementError, match="3 distinct votes, the quorum is 3|distinct votes"):
        Certificate(cert.proposal, cert.votes[:2] + cert.votes[:1]).verify(public, ORIGIN)
    other = sign(Vote(0, 1, cert.value), SigningKey.derive("committee-test", 3), 3, ORIGIN)
    with pytest.raises(StatementError, match="not a vote for round 0 view 0"):
        Certificate(cert.proposal, cert.votes[:2] + (other,)).verify(public, ORIGIN)


def test_the_aggregate_is_recomputed_in_the_batch_order_on_one_thread():
    rc = Recomputer(UPDATES, chain(["mean"]), f=0, round_=0)
    assert rc(BATCH) == rc(BATCH) and rc(BATCH) != rc(BATCH[::-1]) or rc(BATCH) == rc(BATCH[::-1])
    assert rc(BATCH[:2] + (hashlib.sha256(b"unrevealed").digest(),)) is None  # cannot check: no echo


# ------------------------------------------------------------------ crashes

@pytest.mark.parametrize("n", [4, 7, 10])
def test_rounds_certify_with_f_crashed_validators_and_stall_with_one_more(n):
    f = tolerated(n)
    down = set(range(n - f, n))  # the last f: never the sequencer of view 0
    vals = validators(n)
    deliver(vals, vals[0].propose(BATCH), down)
    assert len(certified(vals, down)) == n - f
    down = set(range(n - f - 1, n))
    vals = validators(n)
    deliver(vals, vals[0].propose(BATCH), down)
    assert certified(vals, down) == {}


def test_a_crashed_sequencer_is_rotated_by_the_view_change_and_the_round_certifies():
    vals = validators(4)
    down = {0}  # the sequencer of round 0, view 0, says nothing
    deliver(vals, timeouts(vals, down), down)
    assert all(v.view == 1 for v in vals[1:]) and vals[1].is_sequencer
    deliver(vals, vals[1].propose(BATCH), down)
    certs = certified(vals, down)
    assert set(certs) == {1, 2, 3} and {c.view for c in certs.values()} == {1}
    assert len(certs[2].proposal.statement.justification) == 3


# ------------------------------------------------------------------ Byzantine validators

def test_a_byzantine_validator_that_signs_a_wrong_hash_cannot_stop_or_change_the_round():
    vals = validators(4)
    bad = vals[3]
    bad.recompute = lambda batch: hashlib.sha256(b"not the aggregate").digest()
    wrong = hashlib.sha256(b"a wrong value").digest()
    key3 = SigningKey.derive("committee-test", 3)
    deliver(vals, [sign(Echo(0, 0, wrong), key3, 3, ORIGIN), sign(Vote(0, 0, wrong), key3, 3, ORIGIN)]
            + vals[0].propose(BATCH))
    certs = certified(vals)
    assert {c.value for c in certs.values()} == {vals[0].proposals[0].statement.value}
    assert all(3 not in c.signers for c in certs.values())
    assert vals[1].certificate.aggregate == vals[0].recompute(BATCH)
    assert any(e.kind == "wrong_aggregate" and e.culprit == 0 for e in bad.evidence)  # it disagrees, alone


def test_a_sequencer_proposing_a_wrong_aggregate_is_refused_and_rotated():
    vals = validators(4)
    liar = vals[0]
    honest = liar.recompute
    liar.recompute = lambda batch: hashlib.sha256(b"forged").digest()
    deliver(vals, liar.propose(BATCH))
    assert certified(vals) == {}
    assert all(any(e.kind == "wrong_aggregate" and e.culprit == 0 for e in v.evidence) for v in vals[1:])
    liar.recompute = honest
    deliver(vals, timeouts(vals, {0}), {0})
    deliver(vals, vals[1].propose(BATCH), {0})
    assert {c.view for c in certified(vals, {0}).values()} == {1}


def test_double_signing_is_kept_as_evidence_and_yields_no_second_certificate():
    vals = validators(4)
    byz_key = SigningKey.derive("committee-test", 3)
    deliver(vals, vals[0].propose(BATCH), down={3})
    value = vals[0].certificate.value
    other = hashlib.sha256(b"another value").digest()
    double = [sign(Vote(0, 0, v), byz_key, 3, ORIGIN) for v in (value, other)]
    deliver(vals, double, down={3})
    assert all(any(e.kind == "double_sign" and e.culprit == 3 for e in v.evidence) for v in vals[:3])
    assert {c.value for c in certified(vals, {3}).values()} == {value}
    _, public = keys(4)
    entry = evidence_entry(vals[1].evidence[0], public)
    assert entry.node == public[3].node_id and [Signed.decode(s) for s in entry.statements] == list(
        vals[1].evidence[0].statements)


def _split(vals, n, byz, prop_a, prop_b, group_a):
    """The Byzantine sequencer sends ``prop_a`` to ``group_a`` and ``prop_b`` to the rest."""
    out = []
    for v in vals:
        if v.index in byz:
            continue
        out += v.receive(prop_a if v.index in group_a else prop_b)
    return out


@pytest.mark.parametrize("group_a", [{1}, {1, 2}, {1, 2, 3}])
def test_an_equivocating_sequencer_gets_at_most_one_value_certified_then_a_later_view_certifies(group_a):
    n, byz = 4, {0}
    vals = validators(n)
    key0 = SigningKey.derive("committee-test", 0)
    other = tuple(sorted(UPDATES))[1:5]
    rc = vals[1].recompute
    prop_a = sign(Proposal(0, 0, BATCH, rc(BATCH)), key0, 0, ORIGIN)
    prop_b = sign(Proposal(0, 0, other, rc(other)), key0, 0, ORIGIN)
    # the Byzantine validator also echoes and votes for both values to whoever listens
    byz_statements = [sign(k(0, 0, p.statement.value), key0, 0, ORIGIN) for p in (prop_a, prop_b) for k in (Echo, Vote)]
    deliver(vals, _split(vals, n, byz, prop_a, prop_b, group_a) + byz_statements, down=byz)
    values = {c.value for c in certified(vals, byz).values()}
    assert len(values) <= 1
    deliver(vals, timeouts(vals, byz), byz)  # the round did not finish everywhere: rotate
    deliver(vals, vals[1].propose(other), byz)
    final = {c.value for c in certified(vals, byz).values()}
    assert len(final) == 1 and len(certified(vals, byz)) == 3
    assert values <= final  # a value certified in view 0 is the one view 1 keeps
    vals[1].receive(prop_a), vals[1].receive(prop_b)
    assert any(e.kind == "equivocating_proposal" and e.culprit == 0 for e in vals[1].evidence)


def test_a_new_sequencer_must_re_propose_the_prepared_value():
    vals = validators(4)
    # view 0: everyone echoes and votes, but only validator 1 hears the votes (the others' clocks fire)
    props = vals[0].propose(BATCH)
    deliver(vals, props, drop=lambda s, to: isinstance(s.statement, Vote) and to != 1)
    assert vals[1].certificate is not None and vals[2].certificate is None
    # view 1 (its sequencer is 1, which already certified): validators 2, 3, 0 move on
    late = [v for v in vals if v.index != 1]
    changes = []
    for v in late:
        changes += v.timeout()
    seq = vals[1]
    for c in changes:
        seq.receive(c)
    # a Byzantine view-1 sequencer with the same q view changes proposes another batch: refused
    other = tuple(sorted(UPDATES))[1:5]
    forged = sign(Proposal(0, 1, other, seq.recompute(other), tuple(changes)), SigningKey.derive("committee-test", 1),
                  1, ORIGIN)
    assert vals[2].receive(forged) == [] and "must be re-proposed" in vals[2].refused[-1]


# ------------------------------------------------------------------ hostile input

def test_hostile_statements_are_refused_with_a_reason_and_the_validator_keeps_serving():
    vals = validators(4)
    v = vals[1]
    good = vals[0].propose(BATCH)[0]
    forged = Signed(good.statement, 0, bytes(64))
    stranger = sign(good.statement, SigningKey.derive("stranger"), 0, ORIGIN)
    not_seq = sign(good.statement, SigningKey.derive("committee-test", 2), 2, ORIGIN)
    other_round = sign(Proposal(5, 0, BATCH, good.statement.aggregate), SigningKey.derive("committee-test", 0), 0,
                       ORIGIN)
    bad_index = Signed(good.statement, 9, good.signature)
    for s in (forged, stranger, not_seq, other_round, bad_index):
        assert v.receive(s) == []
    assert len(v.refused) == 5
    assert "bad signature" in v.refused[0] or "verify" in v.refused[0]
    assert "sequencer is 0" in v.refused[2] and "round 5" in v.refused[3] and "not a validator" in v.refused[4]
    assert v.receive(good)  # still serving: it echoes the real one
    with pytest.raises(StatementError):
        Signed.decode(b"\xa0")
    assert Signed.decode(good.encode()) == good


# ------------------------------------------------------------------ promises and censorship

def test_a_missed_inclusion_promise_is_evidence_and_rotates_the_sequencer_out():
    signing, public = keys(4)
    book = PromiseBook(public, ORIGIN)
    censored = hashlib.sha256(b"censored update").digest()
    book.hold(promise(signing[1], 1, ORIGIN, 1, censored, delay=1))
    with pytest.raises(StatementError):
        book.hold(sign(Echo(1, 0, censored), signing[1], 1, ORIGIN))
    for r in (1, 2):
        vals = validators(4, round_=r)
        deliver(vals, vals[r % 4].propose(BATCH))
        book.certified(vals[0].certificate)
        if r == 1:
            assert book.missed() == []  # the deadline (round 2) has not been certified yet
    (evidence,) = book.missed()
    assert evidence.kind == "missed_promise" and evidence.culprit == 1
    eligible = [i for i in range(4) if i != evidence.culprit]
    assert 1 not in {sequencer(r, v, eligible) for r in range(8) for v in range(3)}


def test_an_included_promise_is_kept():
    signing, public = keys(4)
    book = PromiseBook(public, ORIGIN)
    book.hold(promise(signing[1], 1, ORIGIN, 1, BATCH[0], delay=0))
    vals = validators(4, round_=1)
    deliver(vals, vals[1].propose(BATCH))
    book.certified(vals[0].certificate)
    assert book.missed() == []


def test_conflicting_certificates_are_one_piece_of_evidence():
    a, b = validators(4, 0), validators(4, 0)
    deliver(a, a[0].propose(BATCH))
    deliver(b, b[0].propose(tuple(sorted(UPDATES))[1:5]))
    e = conflicting(a[0].certificate, b[0].certificate)
    assert e.kind == "conflicting_certificates" and e.culprit is None
    assert conflicting(a[0].certificate, a[1].certificate) is None


# ------------------------------------------------------------------ checkpoint finality

def _log_and_witnesses(n):
    log = Signer(ORIGIN, SigningKey.derive("committee-log"))
    witnesses = [Witness(Signer(f"w{i}", SigningKey.derive("committee-witness", i), SIG_COSIGNATURE), [log.vkey],
                         clock=lambda: 1_700_000_000) for i in range(n)]
    policy = Policy.byzantine([log.vkey], {w.name: w.vkey for w in witnesses}, f=tolerated(n))
    return log, witnesses, policy


def _cosigned(note, witnesses):
    sigs = []
    for w in witnesses:
        try:
            sigs += w.add_checkpoint(0, [], note.format())
        except Exception:  # an honest witness refuses a fork of what it cosigned
            pass
    return note.with_signatures(sigs).format()


@pytest.mark.parametrize("n", [4, 7])
def test_of_two_conflicting_checkpoints_at_most_one_is_ever_final_and_the_pair_is_kept(n):
    log, _, policy = _log_and_witnesses(n)
    f = tolerated(n)
    a = sign_checkpoint(Checkpoint(ORIGIN, 5, hashlib.sha256(b"a").digest()), log)
    b = sign_checkpoint(Checkpoint(ORIGIN, 5, hashlib.sha256(b"b").digest()), log)
    honest = n - f
    for first in itertools.product("ab", repeat=honest):  # which fork each honest witness saw first
        _, ws, _ = _log_and_witnesses(n)
        byz, hon = ws[:f], ws[f:]
        order = {"a": a, "b": b}
        notes = {"a": [], "b": []}
        for w, x in zip(hon, first):
            for y in (x, "b" if x == "a" else "a"):  # then it is offered the other one: refused
                notes[y].append(w)
        final = {x: policy.is_final(_cosigned(order[x], notes[x] + byz)) for x in "ab"}
        assert not (final["a"] and final["b"])
    gate = CheckpointGate(policy, stall_after=3)
    _, ws, _ = _log_and_witnesses(n)
    assert gate.offer(_cosigned(a, ws), now=1) == "final"
    assert gate.offer(_cosigned(b, ws[:f]), now=2) == "conflict"
    assert len(gate.evidence) == 1 and parse_note(gate.evidence[0].second).text == b.text


def test_the_naive_gate_accepts_a_fork_the_witness_quorum_refuses_and_a_stall_is_noticed():
    log, ws, policy = _log_and_witnesses(4)
    fork = sign_checkpoint(Checkpoint(ORIGIN, 3, hashlib.sha256(b"fork").digest()), log).format()
    naive, guarded = CheckpointGate(policy, 3, witness_quorum=False), CheckpointGate(policy, 3)
    assert naive.offer(fork, now=1) == "final"
    assert guarded.offer(fork, now=1) == "pending" and "is not final" in guarded.refused[-1]
    assert not guarded.stalled(3) and guarded.stalled(4)
