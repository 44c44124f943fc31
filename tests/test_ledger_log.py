"""The Ledger on both backends (SQLite file, throwaway PostgreSQL): appending, rules, checkpoints
with witnesses, proofs, receipts, reopening, hostile input, and kill -9 in the middle of appends."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ledger_sample as ls
from conftest import REPO, SRC
from phalanx.core.keys import SigningKey
from phalanx.core.merkle import verify_consistency, verify_inclusion
from phalanx.ledger.audit import audit
from phalanx.ledger.entries import DatasetCommitment, sign_entry
from phalanx.ledger.log import Ledger, RejectedEntry
from phalanx.ledger.note import Signer
from phalanx.ledger.receipt import Receipt, ReceiptError, verify_receipt
from phalanx.ledger.storage import ConcurrentWriteError, StorageError
from phalanx.ledger.witness import Witness


def test_a_full_ledger_reopens_to_the_same_tree_and_audits(ledger_location):
    sample = ls.build(ledger_location)
    ledger = sample.ledger
    size, root = ledger.size, ledger.root()
    published = ledger.checkpoints()
    assert [p.checkpoint.size for p in published] == [8, 13, 18, 35]
    assert all(sample.policy.is_final(p.format()) for p in published)
    ledger.close()
    with Ledger.open(ledger_location, signer=sample.log) as again:
        assert (again.size, again.root()) == (size, root)
        for index in (0, 7, 29):
            verify_inclusion(again.entry(index).leaf_hash, index, size, again.inclusion_proof(index), root)
        verify_consistency(8, size, again.consistency_proof(8), again.root(8), root)
        assert again.next_seq(sample.nodes[2]) == 6  # registration, dataset, two updates, two votes
        again.submit(DatasetCommitment(name="more", root=ls.h("more"), samples=3), sample.nodes[0])
        again.checkpoint(sample.witnesses)
    report = audit(ledger_location, policy=sample.policy)
    assert report.ok, report.summary()
    assert (report.entries, report.checkpoints, report.uncheckpointed) == (36, 5, 0)


def test_a_rejected_batch_stores_nothing(ledger_location):
    sample = ls.build(ledger_location, rounds=0, everything=False)
    ledger, node = sample.ledger, sample.nodes[0]
    size = ledger.size
    good = sign_entry(DatasetCommitment(name="ok", root=ls.h("ok"), samples=1), node, ledger.next_seq(node), ledger.origin)
    forged = sign_entry(DatasetCommitment(name="forged", root=ls.h("f"), samples=1), SigningKey.derive("forger"),
                        ledger.next_seq(node) + 1, ledger.origin)
    forged = type(forged)(forged.body, node.public.raw, forged.seq, forged.signature, forged.encoding)
    with pytest.raises(RejectedEntry, match="entry 1 of the batch .* bad signature"):
        ledger.append_many([good, forged])
    assert ledger.size == size and ledger.store.count_entries() == size
    ledger.append(good)
    with pytest.raises(RejectedEntry, match="replayed entry"):
        ledger.append(good)  # the same bytes again
    elsewhere = sign_entry(DatasetCommitment(name="x", root=ls.h("x"), samples=1), node, ledger.next_seq(node),
                           "another.log/origin")
    with pytest.raises(RejectedEntry, match="bad signature"):
        ledger.append(elsewhere)  # signed for another log
    assert ledger.store.count_entries() == size + 1
    ledger.close()
    assert audit(ledger_location).ok


def test_a_second_writer_is_refused_not_interleaved(ledger_location):
    sample = ls.build(ledger_location, rounds=0, everything=False)
    first, node = sample.ledger, sample.nodes[1]
    second = Ledger.open(ledger_location)
    first.submit(DatasetCommitment(name="a", root=ls.h("a"), samples=1), node)
    with pytest.raises(ConcurrentWriteError, match="another writer"):
        second.submit(DatasetCommitment(name="b", root=ls.h("b"), samples=1), node)
    second.close()
    first.close()
    assert audit(ledger_location).ok


def test_checkpoints_with_witnesses_down_or_behind(ledger_location):
    log = ls.log_signer()
    ws = ls.make_witnesses(log, 4)
    policy = ls.Policy.byzantine([log.vkey], {w.name: w.vkey for w in ws})
    ledger = Ledger.create(ledger_location, log, policy=policy)
    keys = ls.node_keys(3)
    ls.register(ledger, keys)

    class Down:
        name, vkey = ws[3].name, ws[3].vkey

        def add_checkpoint(self, *args):
            raise ConnectionError("unreachable")

    published = ledger.checkpoint([ws[0], ws[1], ws[2], Down()])
    assert published.final and list(published.refusals) == [ws[3].name]
    assert "ConnectionError: unreachable" in published.refusals[ws[3].name]
    ls.round_entries(ledger, keys, 0, b"s" * 32)
    published = ledger.checkpoint([ws[0], ws[1]])
    assert not published.final  # 2 of 4 < 3
    # a witness that missed checkpoints answers 409 with its size; the log retries from there
    published = ledger.checkpoint([ws[2], ws[3]])
    assert published.final and published.refusals == {}
    assert ws[3].latest_size(log.name) == ledger.size
    ledger.close()
    assert audit(ledger_location, policy=policy).ok


def test_receipts_verify_offline_and_every_step_can_fail(tmp_path):
    sample = ls.build(tmp_path / "ledger.db")
    receipt = sample.ledger.receipt(9)
    text = receipt.format()
    assert text.startswith("c2sp.org/tlog-proof@v1\nextra ") and "\nindex 9\n" in text
    checked = verify_receipt(text, sample.policy)
    assert checked.entry.type == "update_commitment" and checked.checkpoint.size == 35
    again = Receipt.parse(text)
    assert again == receipt
    with pytest.raises(ReceiptError, match="step 4"):
        verify_receipt(Receipt(10, receipt.proof, receipt.checkpoint, receipt.extra), sample.policy)
    with pytest.raises(ReceiptError, match="step 4"):
        verify_receipt(Receipt(9, receipt.proof[:-1], receipt.checkpoint, receipt.extra), sample.policy)
    with pytest.raises(ReceiptError, match="step 1: the entry given is not"):
        verify_receipt(receipt, sample.policy, entry=sample.ledger.entry(8).encoding)
    weak = ls.Policy.byzantine([sample.log.vkey], {w.name: w.vkey for w in ls.make_witnesses(sample.log, 4, "other")})
    with pytest.raises(ReceiptError, match="steps 2-3: .*needs 3 of 4, has 0"):
        verify_receipt(receipt, weak)
    with pytest.raises(ReceiptError, match="steps 2-3"):
        verify_receipt(receipt, ls.Policy([Signer(ls.ORIGIN, SigningKey.derive("not the log")).verifier]))
    with pytest.raises(ReceiptError, match="index"):
        Receipt.parse(text.replace("index 9", "index 09"))
    with pytest.raises(ReceiptError, match="does not start with"):
        Receipt.parse(text.replace("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2"))
    with pytest.raises(IndexError, match="not covered by a stored checkpoint"):
        sample.ledger.submit(DatasetCommitment(name="late", root=ls.h("late"), samples=1), sample.nodes[0])
        sample.ledger.receipt(sample.ledger.size - 1)


def test_opening_what_is_not_a_sound_ledger_says_so_and_changes_nothing(tmp_path):
    sample = ls.build(tmp_path / "ledger.db")
    sample.ledger.close()
    original = (tmp_path / "ledger.db").read_bytes()
    digest = hashlib.sha256(original).hexdigest()
    with pytest.raises(StorageError, match="already exists"):
        Ledger.create(tmp_path / "ledger.db", sample.log)
    with pytest.raises(StorageError, match="no such ledger file"):
        Ledger.open(tmp_path / "missing.db")
    with pytest.raises(StorageError, match="log key is .* not"):
        Ledger.open(tmp_path / "ledger.db", signer=Signer(ls.ORIGIN, SigningKey.derive("someone else")))
    (tmp_path / "text.db").write_text("hello, I am not a database\n" * 100)
    with pytest.raises(StorageError, match="corrupted or not a ledger"):
        Ledger.open(tmp_path / "text.db")
    for cut in (100, 4096, len(original) // 2, len(original) - 1):
        (tmp_path / "cut.db").write_bytes(original[:cut])
        with pytest.raises(StorageError):
            Ledger.open(tmp_path / "cut.db")
        report = audit(tmp_path / "cut.db")
        assert not report.ok and "\n" not in report.summary()
    assert hashlib.sha256((tmp_path / "ledger.db").read_bytes()).hexdigest() == digest
    assert audit(tmp_path / "ledger.db").ok


# ---------------------------------------------------------------- kill -9 while appending

CHILD = """
import sys
sys.path[:0] = [{src!r}, {tests!r}]
import ledger_sample as ls
from phalanx.ledger.log import Ledger
location = {location!r}
sample = ls.build(location, rounds=0, everything=False)
ledger, keys = sample.ledger, sample.nodes
print("ready", ledger.size, flush=True)
for r in range(100000):
    ls.round_entries(ledger, keys, r, b"s" * 32)
    print("acked", ledger.size, flush=True)
    if r % 3 == 0:
        ledger.checkpoint(sample.witnesses)
        print("checkpointed", ledger.size, flush=True)
"""


@pytest.mark.parametrize("kill_after", [5, 11, 17])
def test_kill_9_mid_append_loses_nothing_acknowledged(ledger_location, kill_after, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD.format(src=str(SRC), tests=str(REPO / "tests"),
                                                   location=str(ledger_location))))
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    acked = 0
    try:
        for line in child.stdout:
            word, size = line.split()
            if word == "acked":
                acked = int(size)
                if acked >= 8 + 4 * kill_after:
                    os.kill(child.pid, signal.SIGKILL)  # mid-loop: the next batch is being written
                    break
        else:
            pytest.fail(f"the child stopped early: {child.stderr.read()[-500:]}")
    finally:
        child.kill()
        child.wait()
    with Ledger.open(ledger_location) as ledger:
        assert ledger.size >= acked  # nothing acknowledged was lost
        assert ledger.size % 4 == 0  # and no half batch was stored
    report = audit(ledger_location)
    assert report.ok, report.summary()


def test_blobs_are_content_addressed_kept_or_dropped(tmp_path):
    from phalanx.ledger.blobs import BlobError, BlobStore

    kept = BlobStore(tmp_path / "blobs")
    digest = kept.put(b"model weights")
    assert digest == hashlib.sha256(b"model weights").digest() and kept.get(digest) == b"model weights"
    assert kept.put(b"model weights") == digest and kept.verify() == 1
    kept.path(digest).write_bytes(b"model weightz")
    with pytest.raises(BlobError, match="no longer hash to its name"):
        kept.get(digest)
    dropped = BlobStore(tmp_path / "dropped", keep=False)
    assert dropped.put(b"update") == hashlib.sha256(b"update").digest()
    with pytest.raises(BlobError, match="not stored"):
        dropped.get(hashlib.sha256(b"update").digest())
