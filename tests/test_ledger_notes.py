"""Signed notes, vkeys, checkpoints, cosignatures, policies, witnesses and equivocation evidence,
against the C2SP specs' own examples and rules."""

from __future__ import annotations

import base64

import pytest

from ledger_sample import log_signer, make_witnesses
from phalanx.core.keys import SigningKey
from phalanx.core.merkle import EMPTY_ROOT, MerkleTree
from phalanx.ledger.checkpoint import Checkpoint, CheckpointError, open_checkpoint, sign_checkpoint
from phalanx.ledger.equivocation import Equivocation, EvidenceError, verify_equivocation
from phalanx.ledger.note import (
    SIG_COSIGNATURE,
    Note,
    NoteError,
    NoteVerificationError,
    Signer,
    cosignature_message,
    parse_note,
    parse_private_key,
    parse_vkey,
    verify_note,
)
from phalanx.ledger.policy import Policy, PolicyError
from phalanx.ledger.witness import (
    BadRequest,
    Conflict,
    FileWitnessState,
    Forbidden,
    UnknownLog,
    Unprocessable,
    Witness,
    format_add_checkpoint,
)

# c2sp.org/signed-note's example
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = ("This is an example message.\n\n\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Z"
             "tg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n").encode()


def test_the_specs_example_note_verifies_under_its_vkey():
    verified = verify_note(SPEC_NOTE, [SPEC_VKEY])
    assert verified.note.text == "This is an example message.\n"
    assert verified.verified[0].verifier.name == "example.com/foo"
    tampered = SPEC_NOTE.replace(b"example message", b"example massage")
    with pytest.raises(NoteVerificationError, match="signature by known key example.com/foo does not verify"):
        verify_note(tampered, [SPEC_VKEY])


def test_unknown_signatures_are_ignored_but_one_known_is_needed():
    other = Signer("other.example/key", SigningKey.derive("other"))
    note = parse_note(SPEC_NOTE).with_signatures([other.sign("This is an example message.\n")])
    verified = verify_note(note, [SPEC_VKEY])
    assert [s.name for s in verified.unknown] == ["other.example/key"]
    with pytest.raises(NoteVerificationError, match="no signature from a known key"):
        verify_note(SPEC_NOTE, [other.vkey])
    # same name, another key (so another ID): unknown, not a failure of the known key
    impostor = Signer("example.com/foo", SigningKey.derive("impostor"))
    verify_note(parse_note(SPEC_NOTE).with_signatures([impostor.sign("x")]), [SPEC_VKEY])


@pytest.mark.parametrize("data,what", [
    (b"text\n\n\xe2\x80\x94 a AAAAAAAA\n\xff", "not valid UTF-8"),
    (b"text\n\x01\n\n\xe2\x80\x94 a AAAAAAAA\n", "control character"),
    (b"text\r\n\n\xe2\x80\x94 a AAAAAAAA\n", "control character"),
    (b"text\n\xe2\x80\x94 a AAAAAAAA\n", "no blank line"),
    (b"text\n\n", "no signature lines"),
    (b"text\n\n\xe2\x80\x94 a AAAAAAAA", "do not end in a newline"),
    (b"text\n\n- a AAAAAAAA\n", "em dash"),
    (b"text\n\n\xe2\x80\x94 a+b AAAAAAAA\n", r"contains a space or '\+'"),
    (b"text\n\n\xe2\x80\x94  AAAAAAAA\n", "key name is empty"),
    (b"text\n\n\xe2\x80\x94 a\xe2\x80\x83b AAAAAAAA\n", "no space between|contains a space"),
    (b"text\n\n\xe2\x80\x94 a AAAA\n", "too short"),
    (b"text\n\n\xe2\x80\x94 a AAAA!AAA\n", "not valid base64"),
    (b"text\n\n\xe2\x80\x94 a AAAAAAB=\n", "not in canonical base64"),
])
def test_malformed_notes_are_refused_with_the_reason(data, what):
    with pytest.raises(NoteError, match=what):
        parse_note(data)


def test_the_text_ends_at_the_last_blank_line_and_signature_count_is_bounded():
    log = log_signer()
    text = "a\n\nb\n"
    note = Note(text, (log.sign(text),))
    assert parse_note(note.format()).text == "a\n\nb\n"
    many = Note(text, tuple(Signer(f"k{i}", SigningKey.derive(i)).sign(text) for i in range(101)))
    with pytest.raises(NoteError, match="101 signatures is more than the 100"):
        parse_note(many.format())
    parse_note(Note(text, many.signatures[:16]).format())  # the spec's minimum


@pytest.mark.parametrize("vkey,what", [
    ("bad+key", r"expected <name>\+<key ID>\+<key>"),
    ("a b+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "contains a space"),
    ("+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "key name is empty"),
    ("example.com/foo+530D903A+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "8 lowercase hex"),
    ("example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "does not match the key"),
    ("example.com/bar+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "does not match the key"),
    ("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2", "base64"),
    ("example.com/foo+530d903a+B+kyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "does not match|unsupported"),
])
def test_bad_vkeys_are_refused(vkey, what):
    with pytest.raises(NoteError, match=what):
        parse_vkey(vkey)


def test_vkey_splits_on_plus_at_most_twice_since_base64_holds_plus():
    for i in range(40):  # find keys whose base64 contains '+'
        signer = Signer("example.test/log", SigningKey.derive("plus", i))
        if "+" in signer.vkey.split("+", 2)[2]:
            assert parse_vkey(signer.vkey).public_key == signer.key.public.raw
            break
    else:
        pytest.fail("no key with a '+' in its base64 among 40")


def test_private_keys_round_trip():
    signer = Signer("w.example/1", SigningKey.derive("pk"), SIG_COSIGNATURE)
    again = parse_private_key(signer.private_key())
    assert again.vkey == signer.vkey and again.key.seed == signer.key.seed


# ---------------------------------------------------------------- checkpoints and cosignatures


def test_checkpoint_text_is_exactly_the_spec_format():
    cp = Checkpoint("example.com/behind-the-sofa", 20852163,
                    base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="))
    assert cp.text() == "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    assert Checkpoint.parse(cp.text()) == cp
    assert Checkpoint.parse(cp.text() + "ext\n").extensions == ("ext",)


@pytest.mark.parametrize("text,what", [
    ("o\n012\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "no leading zeros"),
    ("o\n+12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "no leading zeros"),
    ("o\n\u0661\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "no leading zeros"),
    ("\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "origin line is empty"),
    ("o\n12\n", "origin, size and root are required"),
    ("o\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n", "empty extension line"),
    ("o\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=", "does not end in a newline"),
    ("o\n12\n" + base64.b64encode(b"r" * 31).decode() + "\n", "31 bytes, not 32"),
    ("o\n0\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n", "size 0 must carry the empty tree's root"),
])
def test_malformed_checkpoints_are_refused(text, what):
    with pytest.raises(CheckpointError, match=what):
        Checkpoint.parse(text)


def test_cosignature_is_the_specs_timestamped_message():
    log, witness = log_signer(), Signer("w.example/1", SigningKey.derive("w"), SIG_COSIGNATURE)
    cp = Checkpoint(log.name, 0, EMPTY_ROOT)
    line = witness.sign(cp.text(), 1679315147)
    assert line.signature[:8] == (1679315147).to_bytes(8, "big")
    assert cosignature_message(cp.text().encode(), 1679315147).startswith(b"cosignature/v1\ntime 1679315147\n")
    witness.key.public.verify(line.signature[8:], cosignature_message(cp.text().encode(), 1679315147))
    note = sign_checkpoint(cp, log).with_signatures([line])
    signed = open_checkpoint(note.format(), [log.verifier, witness.verifier])
    assert signed.verified.signed_by(witness.verifier).timestamp == 1679315147
    with pytest.raises(NoteVerificationError, match="not signed by a known key of that log"):
        open_checkpoint(note.format(), [witness.verifier])  # a cosignature alone is not the log's


# ---------------------------------------------------------------- policies


def test_policy_file_round_trip_and_quorum():
    log = log_signer()
    ws = make_witnesses(log, 4)
    text = (f"# the test log\nlog {log.vkey}\n" + "".join(f"witness w{i} {w.vkey}\n" for i, w in enumerate(ws))
            + "group core 2 w0 w1 w2\ngroup all-of-it all core w3\nquorum all-of-it\n")
    policy = Policy.parse(text)
    assert Policy.parse(policy.format()).format() == policy.format()
    cp = Checkpoint(log.name, 0, EMPTY_ROOT)
    note = sign_checkpoint(cp, log)
    with pytest.raises(PolicyError, match="group all-of-it needs 2 of 2, has 0"):
        policy.check(note.format())
    lines = [w.add_checkpoint(0, [], note.format())[0] for w in ws[1:]]
    assert policy.is_final(note.with_signatures(lines).format())
    assert not policy.is_final(note.with_signatures(lines[:2]).format())  # w1, w2 but not w3


def test_byzantine_quorum_is_2f_plus_1_of_3f_plus_1():
    log = log_signer()
    for n, need in ((1, 1), (3, 3), (4, 3), (7, 5), (10, 7)):
        policy = Policy.byzantine([log.vkey], [w.vkey for w in make_witnesses(log, n)])
        assert policy.groups["witnesses"].threshold == need
    with pytest.raises(PolicyError, match="tolerate at most f = 1"):
        Policy.byzantine([log.vkey], [w.vkey for w in make_witnesses(log, 4)], f=2)


@pytest.mark.parametrize("text,what", [
    ("log x\nquorum none\n", "line 1"),
    ("quorum w\n", "not defined on an earlier line"),
    ("group g 1 w\nquorum g\n", "member 'w' is not defined"),
    ("", "no quorum line"),
    ("quorum none\nquorum none\n", "a second quorum line"),
    ("frobnicate x\nquorum none\n", "cannot read 'frobnicate'"),
    ("\x85\nquorum none\n", "cannot read"),  # found by the fuzzer: U+0085 is not a separator here
])
def test_malformed_policies_name_the_line(text, what):
    with pytest.raises(PolicyError, match=what):
        Policy.parse(text)


# ---------------------------------------------------------------- the witness


def _tree(n: int) -> MerkleTree:
    tree = MerkleTree()
    tree.extend([f"leaf {i}".encode() for i in range(n)])
    return tree


def _signed(log: Signer, tree: MerkleTree, size: int, root: bytes | None = None) -> bytes:
    return sign_checkpoint(Checkpoint(log.name, size, root or tree.root(size)), log).format()


def test_witness_cosigns_only_consistent_extensions(tmp_path):
    log = log_signer()
    (witness,) = make_witnesses(log, 1)
    witness.state = FileWitnessState(tmp_path / "w.json")
    tree = _tree(20)
    assert witness.add_checkpoint(0, [], _signed(log, tree, 5))
    with pytest.raises(Conflict) as conflict:
        witness.add_checkpoint(0, [], _signed(log, tree, 9))
    assert conflict.value.latest_size == 5 and conflict.value.status == 409
    witness.add_checkpoint(5, tree.consistency_proof(5, 9), _signed(log, tree, 9))
    with pytest.raises(Unprocessable, match="no consistency"):
        witness.add_checkpoint(9, tree.consistency_proof(8, 12), _signed(log, tree, 12))
    with pytest.raises(BadRequest, match="above the checkpoint's size"):
        witness.add_checkpoint(13, [], _signed(log, tree, 12))
    with pytest.raises(Unprocessable, match="from old size 0 the consistency proof must be empty"):
        Witness(witness.signer, [log.vkey]).add_checkpoint(0, [b"x" * 32], _signed(log, tree, 3))
    assert FileWitnessState(tmp_path / "w.json").get(log.name).size == 9  # persisted
    other = Signer("other.example/log", SigningKey.derive("other"))
    with pytest.raises(UnknownLog):
        witness.add_checkpoint(0, [], sign_checkpoint(Checkpoint(other.name, 1, tree.root(1)), other).format())
    forged = Signer(log.name, SigningKey.derive("forger"))
    with pytest.raises(Forbidden):
        witness.add_checkpoint(9, [], sign_checkpoint(Checkpoint(log.name, 9, tree.root(9)), forged).format())


def test_witness_request_body_in_the_specs_text_form():
    log = log_signer()
    (witness,) = make_witnesses(log, 1)
    tree = _tree(10)
    witness.add_checkpoint(0, [], _signed(log, tree, 4))
    body = format_add_checkpoint(4, tree.consistency_proof(4, 10), _signed(log, tree, 10))
    response = witness.add_checkpoint_request(body).decode()
    assert response.startswith("\u2014 witness0.test ") and response.endswith("\n")
    with pytest.raises(BadRequest, match="leading zeros"):
        witness.add_checkpoint_request(body.replace(b"old 4", b"old 04"))


def test_equivocation_same_size_is_caught_and_rechecks_from_the_evidence_alone():
    log = log_signer()
    (witness,) = make_witnesses(log, 1)
    honest, fork = _tree(8), MerkleTree()
    fork.extend([f"other {i}".encode() for i in range(8)])
    witness.add_checkpoint(0, [], _signed(log, honest, 8))
    with pytest.raises(Unprocessable) as refused:
        witness.add_checkpoint(8, [], _signed(log, fork, 8))
    evidence = Equivocation.from_json(refused.value.evidence.to_json())
    a, b = verify_equivocation(evidence, [log.vkey])
    assert a.size == b.size == 8 and a.root != b.root
    with pytest.raises(EvidenceError, match="no contradiction"):
        verify_equivocation(Equivocation(_signed(log, honest, 8), _signed(log, honest, 8)), [log.vkey])
    with pytest.raises(EvidenceError, match="does not verify"):
        verify_equivocation(evidence, [Signer(log.name, SigningKey.derive("x")).vkey])


def test_equivocation_across_sizes_with_a_proof_from_the_larger_tree():
    log = log_signer()
    (witness,) = make_witnesses(log, 1)
    honest = _tree(6)
    fork = MerkleTree()
    fork.extend([f"leaf {i}".encode() for i in range(3)] + [f"fork {i}".encode() for i in range(9)])
    witness.add_checkpoint(0, [], _signed(log, honest, 6))
    # the forked log proves consistency from ITS size-6 tree to size 12: the proof holds for the
    # new root but yields another root at size 6, which is the evidence
    with pytest.raises(Unprocessable) as refused:
        witness.add_checkpoint(6, fork.consistency_proof(6, 12), _signed(log, fork, 12))
    evidence = refused.value.evidence
    assert evidence is not None and evidence.root_at_first_size == fork.root(6)
    a, b = verify_equivocation(Equivocation.from_json(evidence.to_json()), [log.vkey])
    assert (a.size, b.size) == (6, 12)
    forged = Equivocation(evidence.first, evidence.second, honest.root(6), evidence.proof)
    with pytest.raises(EvidenceError, match="no contradiction"):
        verify_equivocation(forged, [log.vkey])
    bent = Equivocation(evidence.first, evidence.second, fork.root(5), evidence.proof)
    with pytest.raises(EvidenceError, match="does not tie"):
        verify_equivocation(bent, [log.vkey])
    with pytest.raises(EvidenceError, match="malformed"):
        Equivocation.from_json('{"format": "phalanx.ledger/equivocation/v1"}')
