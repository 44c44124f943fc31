"""A simulated committee's certificates and evidence in the run's ledger, and the audit that
re-checks them: a tampered vote, a certificate below quorum, an aggregate other than the certified
one, and an aggregate with no certificate are each refused, by name."""

from __future__ import annotations

import pytest
from test_engine import make_sim
from test_provenance_engine import audited, entries, recorded

from phalanx.engine.provenance import LedgerRecorder
from phalanx.engine.provenance.replay import replay
from phalanx.network import Committee


def run(make_shards, folder, tamper=None, monkeypatch=None, **committee):
    """Three committee rounds of four nodes with a ledger; ``tamper(items)`` rewrites what each
    certified round logs (already signed by the recorder, so only the engine's checks can object)."""
    if tamper is not None:
        written = LedgerRecorder._committee_entries

        def tampered(self, r, index, start):
            items = written(self, r, index, start)
            return tamper(items) if items else items

        monkeypatch.setattr(LedgerRecorder, "_committee_entries", tampered)
    sim = make_sim(make_shards([3, 4, 5, 6]), Committee(4, 0, **committee), weighting="uniform")
    recorded(sim, folder, 3, validators=sim.committee.t.validators)
    return audited(folder)[0]


def replaced(items, kind, **changes):
    """``items`` with the body of the first entry of ``kind`` updated."""
    out = list(items)
    k = next(i for i, (body, _) in enumerate(out) if body.TYPE == kind)
    body, signer = out[k]
    out[k] = (body.model_copy(update={key: change(getattr(body, key)) for key, change in changes.items()}), signer)
    return out


def test_each_certified_round_logs_its_certificate_and_the_audit_and_replay_pass(make_shards, tmp_path):
    report = run(make_shards, tmp_path)
    assert report.ok, report.summary()
    log = entries(tmp_path)
    certs = {e.body.round: i for i, e in log if e.type == "round_certificate"}
    records = [e.body for _, e in log if e.type == "aggregate_record" and e.body.rule != "initial"]
    assert sorted(certs) == [1, 2, 3] and [r.params["certificate"] for r in records] == [certs[1], certs[2], certs[3]]
    registered = {e.key for _, e in log if e.type == "node_registration" and "validator" in e.body.roles}
    assert all(log[i][1].key in registered for i in certs.values())  # the sequencer logs it
    assert replay(tmp_path / "ledger.db", tmp_path / "ledger-private").ok


def test_a_double_signing_validator_is_logged_as_committee_evidence(make_shards, tmp_path):
    report = run(make_shards, tmp_path, byzantine=1, behaviour="double_sign")
    assert report.ok, report.summary()
    evidence = [e.body for _, e in entries(tmp_path) if e.type == "committee_evidence"]
    assert [e.kind for e in evidence] == ["double_sign"] and len(evidence[0].statements) == 2


def flip(sig: bytes) -> bytes:
    return bytes([sig[0] ^ 1]) + sig[1:]


def test_a_tampered_vote_is_refused(make_shards, tmp_path, monkeypatch):
    report = run(make_shards, tmp_path, monkeypatch=monkeypatch, tamper=lambda items: replaced(
        items, "round_certificate", votes=lambda v: [flip(v[0]), *v[1:]]))
    assert not report.ok and "committee: round_certificate round 1: the vote of" in report.summary()
    assert "does not verify" in report.summary()


def test_a_certificate_below_quorum_is_refused(make_shards, tmp_path, monkeypatch):
    report = run(make_shards, tmp_path, monkeypatch=monkeypatch, tamper=lambda items: replaced(
        items, "round_certificate", signers=lambda s: s[:2], votes=lambda v: v[:2]))
    assert not report.ok and "round_certificate round 1: 2 votes, the quorum is 3" in report.summary()


def test_an_aggregate_other_than_the_certified_one_is_refused(make_shards, tmp_path, monkeypatch):
    report = run(make_shards, tmp_path, monkeypatch=monkeypatch, tamper=lambda items: replaced(
        items, "aggregate_record", params=lambda p: {**p, "aggregate": "00" * 32}))
    assert not report.ok
    assert "aggregate record of round 1: it applied aggregate 0000000000000000..., the certificate signed" in \
        report.summary()


def test_a_certificate_whose_value_is_not_its_batch_and_aggregate_is_refused(make_shards, tmp_path, monkeypatch):
    report = run(make_shards, tmp_path, monkeypatch=monkeypatch, tamper=lambda items: replaced(
        items, "round_certificate", aggregate=lambda a: flip(a)))
    assert "the value is not the hash of its batch and aggregate" in report.summary()


def test_an_aggregate_without_a_certificate_is_refused(make_shards, tmp_path, monkeypatch):
    report = run(make_shards, tmp_path, monkeypatch=monkeypatch, tamper=lambda items: [x for x in items if x[0].TYPE != "round_certificate"])
    assert not report.ok
    assert "aggregate record of round 1: a committee run's aggregate needs a certificate, round 1 has none" in \
        report.summary()


def test_an_aggregate_over_other_inputs_than_the_certified_batch_is_refused(make_shards, tmp_path, monkeypatch):
    report = run(make_shards, tmp_path, monkeypatch=monkeypatch, tamper=lambda items: replaced(
        items, "aggregate_record", inputs=lambda x: x[::-1]))
    assert "aggregate record of round 1: its inputs are not the certified batch, in its order" in report.summary()
