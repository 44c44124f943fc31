"""Fuzzing the parsers of hostile input with hypothesis: notes, vkeys, checkpoints, policies, witness
requests, receipts and entries. Each either refuses the input with its own error, or returns a
value that re-serializes to the same bytes; a mutated signed object never verifies as something else.

``PHALANX_FUZZ_EXAMPLES`` sets the examples per target (default 300); the last test prints how
many inputs each target was given (``pytest -s``).
"""

from __future__ import annotations

import collections
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ledger_sample as ls
from phalanx.core.keys import SigningKey
from phalanx.ledger.checkpoint import Checkpoint, CheckpointError, sign_checkpoint
from phalanx.ledger.entries import Entry, EntryError, decode_entry
from phalanx.ledger.note import NoteError, parse_note, parse_vkey, verify_note
from phalanx.ledger.policy import Policy, PolicyError
from phalanx.ledger.receipt import Receipt, ReceiptError
from phalanx.ledger.witness import WitnessError, parse_add_checkpoint

EXAMPLES = int(os.environ.get("PHALANX_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TRIED: collections.Counter = collections.Counter()

LOG = ls.log_signer()
WITNESS = ls.make_witnesses(LOG, 1)[0]
CHECKPOINT = Checkpoint(LOG.name, 3, SigningKey.derive("root").public.raw)
NOTE = sign_checkpoint(CHECKPOINT, LOG).with_signatures(
    [WITNESS.signer.sign(CHECKPOINT.text(), 1_700_000_000)]).format()
VERIFIERS = [LOG.verifier, WITNESS.signer.verifier]


def _entries() -> list[Entry]:
    from phalanx.ledger.entries import sign_entry
    from test_ledger_entries import update

    key = SigningKey.derive("fuzz")
    return [sign_entry(update(round_=r), key, r, ls.ORIGIN) for r in range(3)]


ENTRIES = _entries()


def mutations(original: bytes):
    """Byte flips, insertions, deletions and splices of a valid input."""
    n = len(original)
    flip = st.tuples(st.integers(0, n - 1), st.integers(1, 255)).map(
        lambda t: original[:t[0]] + bytes([original[t[0]] ^ t[1]]) + original[t[0] + 1:])
    insert = st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=8)).map(
        lambda t: original[:t[0]] + t[1] + original[t[0]:])
    delete = st.tuples(st.integers(0, n - 1), st.integers(1, 8)).map(lambda t: original[:t[0]] + original[t[0] + t[1]:])
    splice = st.tuples(st.integers(0, n), st.integers(0, n)).map(lambda t: original[:t[0]] + original[t[1]:])
    return st.one_of(flip, insert, delete, splice)


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutations(NOTE)))
def test_note_parser_and_verifier(data):
    TRIED["signed notes"] += 1
    try:
        note = parse_note(data)
    except NoteError:
        return
    assert parse_note(note.format()) == note
    try:
        verified = verify_note(note, VERIFIERS)
    except NoteError:
        return
    assert verified.note.text == parse_note(NOTE).text  # nothing else verifies under these keys


@FUZZ
@given(st.one_of(st.text(max_size=120), mutations(LOG.vkey.encode()).map(lambda b: b.decode("utf-8", "replace"))))
def test_vkey_parser(text):
    TRIED["vkeys"] += 1
    try:
        verifier = parse_vkey(text)
    except NoteError:
        return
    assert verifier.vkey == text.strip()


@FUZZ
@given(st.one_of(st.text(max_size=200), mutations(CHECKPOINT.text().encode()).map(lambda b: b.decode("utf-8", "replace"))))
def test_checkpoint_parser(text):
    TRIED["checkpoint texts"] += 1
    try:
        cp = Checkpoint.parse(text)
    except CheckpointError:
        return
    assert cp.text() == text


POLICY = Policy.byzantine([LOG.vkey], [w.vkey for w in ls.make_witnesses(LOG, 4)]).format().encode()


@FUZZ
@given(st.one_of(st.text(max_size=200), mutations(POLICY).map(lambda b: b.decode("utf-8", "replace"))))
def test_policy_parser(text):
    TRIED["policies"] += 1
    try:
        policy = Policy.parse(text)
    except PolicyError:
        return
    assert Policy.parse(policy.format()).format() == policy.format()


REQUEST = b"old 2\n" + b"\n".join([b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="] * 2) + b"\n\n" + NOTE


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutations(REQUEST)))
def test_witness_request_parser(data):
    TRIED["witness requests"] += 1
    try:
        parse_add_checkpoint(data)
    except WitnessError:
        return
    try:
        WITNESS.add_checkpoint(*parse_add_checkpoint(data))
    except WitnessError:
        pass


RECEIPT = Receipt(2, (b"a" * 32, b"b" * 32), NOTE, ENTRIES[0].encoding).format().encode()


@FUZZ
@given(st.one_of(st.binary(max_size=300), mutations(RECEIPT)))
def test_receipt_parser(data):
    TRIED["receipts"] += 1
    try:
        receipt = Receipt.parse(data)
    except ReceiptError:
        return
    assert Receipt.parse(receipt.format()) == receipt


@FUZZ
@given(st.one_of(st.binary(max_size=400), *[mutations(e.encoding) for e in ENTRIES]))
def test_entry_decoder(data):
    TRIED["entries"] += 1
    try:
        entry = decode_entry(data)
    except EntryError:
        return
    assert entry.encoding == data
    try:
        entry.verify(ls.ORIGIN)
    except EntryError:
        return
    assert data in [e.encoding for e in ENTRIES]  # a mutation never verifies


def test_zz_report_how_many_inputs_were_tried():
    print("\nfuzz inputs tried:", ", ".join(f"{k} {v}" for k, v in sorted(TRIED.items())),
          f"(total {sum(TRIED.values())})")
