"""The structural audit: re-derive every stored byte from what is signed, and check the rules.

Every byte of a ledger is covered by a hash, a signature or a recomputation, and the audit
checks each one, from the store alone:

1. **the file**: SQLite's own structure check (``PRAGMA quick_check``);
2. **meta**: all settings present, the format known, the log's signature over them valid (and
   the log key the one the auditor expects, when given one);
3. **every entry**, in order: its index is the next one; its encoding decodes strictly; the
   ``leaf`` column is its RFC 9162 leaf hash; the ``type``, ``node``, ``seq`` and ``round``
   columns are what the encoding says; its submitter's signature holds for this log; it passes
   the structural rules of :mod:`.state` (registered keys, no replay, references to earlier
   entries of the right type, update commitments from nodes that committed the dataset);
   equivocation evidence re-verified from the signed envelope it carries (:mod:`.evidence`);
   then any extra checks the caller adds (the engine's quarantine, governance and replay checks);
4. **every checkpoint**, in order: numbered 0.., sizes increasing; the note is a checkpoint of
   this log, signed by the log, and *every* signature line on it is from a known key and
   verifies (an unknown line is tampering: the log only stores cosignatures it verified); its
   root is the tree's at its size; it is consistent with the one before (RFC 9162 proof); and
   the policy's cosignature quorum is met.

Entries after the last checkpoint are checked one by one but are not yet under a signed tree
head; the report says how many. (Whoever deletes them together with the tail of the file cannot
be caught from the file alone: only a witness or a receipt holder remembers a larger size.)

:func:`audit` stops at the first failure by default; each failure says where (table, row,
column) and what was found.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from phalanx.core.keys import KeyFormatError, SignatureError, VerifyKey
from phalanx.core.merkle import MerkleTree, ProofError, leaf_hash, verify_consistency
from phalanx.ledger.checkpoint import Checkpoint, CheckpointError
from phalanx.ledger.entries import Entry, EntryError, decode_entry
from phalanx.ledger.evidence import evidence_check
from phalanx.ledger.log import read_signed_meta
from phalanx.ledger.note import NoteError, Verifier, parse_note, parse_vkey, verify_note
from phalanx.ledger.policy import Policy, PolicyError
from phalanx.ledger.state import LedgerState, StructureError
from phalanx.ledger.storage import Store, StorageError

#: An extra per-entry check: raise ``ValueError`` (or return a message) when the entry fails it.
EntryCheck = Callable[[int, Entry, LedgerState], "str | None"]


@dataclass(frozen=True)
class Finding:
    where: str
    what: str

    def __str__(self) -> str:
        return " ".join(f"{self.where}: {self.what}".split())  # always one line


class AuditStopped(Exception):
    """Raised internally to stop at the first finding."""


@dataclass
class AuditReport:
    """What the audit checked and what it found."""

    location: str
    entries: int = 0
    checkpoints: int = 0
    uncheckpointed: int = 0
    log_vkey: str = ""
    pinned: bool = False
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        if not self.ok:
            return f"audit failed: {self.findings[0]}"
        tail = f"; {self.uncheckpointed} entries after the last checkpoint" if self.uncheckpointed else ""
        trust = "" if self.pinned else " (log key read from the ledger itself: pass --log-key or --policy to pin it)"
        return (f"ok: {self.entries} entries, {self.checkpoints} checkpoints, every signature, hash and "
                f"proof verified{tail}{trust}")


class _Auditor:
    def __init__(self, report: AuditReport, stop_at_first: bool):
        self.report = report
        self.stop = stop_at_first

    def fail(self, where: str, what: str) -> None:
        self.report.findings.append(Finding(where, what))
        if self.stop:
            raise AuditStopped


def audit(location: str | Path, *, log_key: str | Verifier | None = None, policy: Policy | None = None,
          checks: Sequence[EntryCheck] = (), stop_at_first: bool = True, workers: int | None = None) -> AuditReport:
    """Audit the ledger at ``location`` (read-only). See the module docstring for what is checked.

    ``log_key`` (a vkey) or ``policy`` pins the trusted keys; without them the audit trusts the
    log key and policy stored in the ledger and says so. ``checks`` are the engine's extra
    per-entry checks. Entry signatures are verified in ``workers`` processes (default: one per
    core for logs of more than 10,000 entries, none below).
    """
    started = time.perf_counter()
    report = _Auditor(AuditReport(str(location)), stop_at_first)
    store = None
    try:
        try:
            store = Store(location, readonly=True)
        except StorageError as e:
            report.fail("store", str(e))
            return report.report
        _audit(store, report, log_key, policy, checks, workers)
    except AuditStopped:
        pass
    except StorageError as e:
        report.report.findings.append(Finding("store", str(e)))
    finally:
        if store is not None:
            store.close()
        report.report.seconds = time.perf_counter() - started
    return report.report


def _audit(store: Store, a: _Auditor, log_key, policy, checks, workers) -> None:
    problem = store.integrity_problem()
    if problem:
        a.fail("file", f"the database structure is damaged ({problem})")
    pinned_key = parse_vkey(log_key) if isinstance(log_key, str) else log_key
    if policy is not None and pinned_key is None:
        if len(policy.logs) != 1:
            a.fail("policy", "name the log key to expect (the policy lists several logs)")
        pinned_key = policy.logs[0]
    try:
        meta = read_signed_meta(store, pinned_key)
    except StorageError as e:
        a.fail("meta", str(e).split(": meta: ", 1)[-1])
        return
    log = parse_vkey(meta["log_vkey"].decode())
    origin = meta["origin"].decode()
    a.report.log_vkey, a.report.pinned = log.vkey, pinned_key is not None
    policy = policy or Policy.parse(meta["policy"].decode())
    if log not in policy.logs:
        a.fail("policy", f"the policy does not list this ledger's log key {log.vkey}")
    tree, state = MerkleTree(), LedgerState()
    checks = (evidence_check(origin), *checks)
    if workers is None:
        workers = (os.cpu_count() or 1) if store.count_entries() > 10_000 else 0
    _audit_entries(store, a, origin, tree, state, checks, workers)
    _audit_checkpoints(store, a, origin, log, policy, tree)


def _verify_signatures(chunk: list[tuple[int, bytes, bytes, bytes]]) -> list[tuple[int, str]]:
    """(index, key, signature, message) -> the failures, as (index, reason). Runs in a worker."""
    failures = []
    for index, key, signature, message in chunk:
        try:
            VerifyKey(key).verify(signature, message)
        except (SignatureError, KeyFormatError) as e:
            failures.append((index, str(e)))
    return failures


class _SignatureChecks:
    """Entry signatures checked in worker processes while the main one decodes and applies the
    rules (Ed25519 verification is most of an audit's time); in-line when ``workers`` is 0."""

    CHUNK = 2000

    def __init__(self, workers: int):
        self.pool = None
        if workers > 0:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else None)
            self.pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
        self.pending: list[tuple[int, bytes, bytes, bytes]] = []
        self.futures: list[concurrent.futures.Future] = []

    def add(self, index: int, entry: Entry, origin: str) -> list[tuple[int, str]]:
        """Queue one entry's signature; in-line mode returns its failure at once."""
        item = (index, entry.key, entry.signature, entry.signed_message(origin))
        if self.pool is None:
            return _verify_signatures([item])
        self.pending.append(item)
        if len(self.pending) >= self.CHUNK:
            self.futures.append(self.pool.submit(_verify_signatures, self.pending))
            self.pending = []
        return []

    def failures(self) -> list[tuple[int, str]]:
        """Every failure from the workers, in index order."""
        if self.pool is None:
            return []
        if self.pending:
            self.futures.append(self.pool.submit(_verify_signatures, self.pending))
            self.pending = []
        return sorted(f for future in self.futures for f in future.result())

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def _audit_entries(store: Store, a: _Auditor, origin: str, tree: MerkleTree, state: LedgerState,
                   checks: Sequence[EntryCheck], workers: int) -> None:
    signatures = _SignatureChecks(workers)
    try:
        try:
            _entries_in_order(store, a, origin, tree, state, checks, signatures)
        except AuditStopped:
            stopped = a.report.findings.pop()  # a signature checked in a worker may fail earlier
            first = next(iter(signatures.failures()), None)
            row = _row_of(stopped)
            if first is not None and (row is None or first[0] < row):
                a.report.findings.append(Finding(f"entries row {first[0]} data", f"signature: {first[1]}"))
            else:
                a.report.findings.append(stopped)
            raise
        for index, reason in signatures.failures():
            a.fail(f"entries row {index} data", f"signature: {reason}")
    finally:
        signatures.close()


def _row_of(finding: Finding) -> int | None:
    parts = finding.where.split()
    return int(parts[2]) if len(parts) >= 3 and parts[:2] == ["entries", "row"] and parts[2].isdigit() else None


def _entries_in_order(store: Store, a: _Auditor, origin: str, tree: MerkleTree, state: LedgerState,
                      checks: Sequence[EntryCheck], signatures: _SignatureChecks) -> None:
    expected = 0
    batch: list[bytes] = []
    for row in store.rows():
        where = f"entries row {row.idx}"
        if row.idx != expected:
            a.fail(where, f"expected entry {expected} (entries are numbered 0, 1, 2, ... with no gap)")
            return
        expected += 1
        try:
            entry = decode_entry(row.data)
        except EntryError as e:
            a.fail(f"{where} data", str(e))
            return
        leaf = leaf_hash(row.data)
        if row.leaf != leaf:
            a.fail(f"{where} leaf", "is not the leaf hash of the entry's data")
        columns = {"type": entry.type, "node": entry.node_id, "seq": entry.seq,
                   "round": getattr(entry.body, "round", None) if entry.type in ("update_commitment", "aggregate_record")
                   else None}
        for column, want in columns.items():
            if getattr(row, column) != want:
                a.fail(f"{where} {column}", f"holds {_show(getattr(row, column))}, the signed entry says {_show(want)}")
        for index, reason in signatures.add(row.idx, entry, origin):
            a.fail(f"{where} data", f"signature: {reason}")
        if entry.type == "key_rotation":
            try:
                entry.verify(origin)  # the new key's proof
            except EntryError as e:
                a.fail(f"{where} data", str(e))
        try:
            state.apply(row.idx, entry)
        except StructureError as e:
            a.fail(f"{where} data", str(e))
            try:  # only reached when collecting every finding: keep going as if it were allowed
                state.record(row.idx, entry)
            except (KeyError, AttributeError):
                state.record_plain(row.idx, entry.type, entry.node_id, entry.seq, None)
        for check in checks:
            try:
                message = check(row.idx, entry, state)
            except ValueError as e:
                message = str(e)
            if message:
                a.fail(f"{where}", f"{getattr(check, '__name__', 'check')}: {message}")
        batch.append(leaf)
        if len(batch) >= 65_536:
            tree.append_leaf_hashes(batch)
            batch = []
    tree.append_leaf_hashes(batch)
    a.report.entries = tree.size


def _audit_checkpoints(store: Store, a: _Auditor, origin: str, log: Verifier, policy: Policy,
                       tree: MerkleTree) -> None:
    known = [log, *policy.witnesses.values()]
    previous: Checkpoint | None = None
    rows = store.checkpoint_rows()
    for expected, (cid, size, note) in enumerate(rows):
        where = f"checkpoints row {cid}"
        if cid != expected:
            a.fail(where, f"expected checkpoint {expected} (checkpoints are numbered 0, 1, 2, ...)")
            return
        try:
            parsed = parse_note(note)
            cp = Checkpoint.parse(parsed.text)
        except (NoteError, CheckpointError) as e:
            a.fail(f"{where} note", str(e))
            continue
        if cp.origin != origin:
            a.fail(f"{where} note", f"origin {cp.origin!r} is not this log's {origin!r}")
        if size != cp.size:
            a.fail(f"{where} size", f"holds {size}, the signed checkpoint says {cp.size}")
        for sig in parsed.signatures:
            if not any(v.matches(sig) for v in known):
                a.fail(f"{where} note", f"signature line by {sig.name!r} (key ID {sig.key_id.hex()}) is from no known key")
        try:
            verified = verify_note(parsed, known)
            if not verified.signed_by(log):
                a.fail(f"{where} note", "not signed by the log")
        except NoteError as e:
            a.fail(f"{where} note", str(e))
        if cp.size > tree.size:
            a.fail(f"{where} note", f"checkpoint of size {cp.size}, but the log has only {tree.size} entries")
            continue
        if tree.root(cp.size) != cp.root:
            a.fail(f"{where} note", f"root at size {cp.size} is not the root of the stored entries")
        if previous is not None:
            if cp.size <= previous.size:
                a.fail(f"{where} size", f"size {cp.size} does not grow from the previous checkpoint's {previous.size}")
            elif previous.size > 0:
                try:
                    verify_consistency(previous.size, cp.size, tree.consistency_proof(previous.size, cp.size),
                                       previous.root, cp.root)
                except ProofError as e:
                    a.fail(f"{where} note", f"not consistent with checkpoint {cid - 1}: {e}")
        try:
            policy.check(parsed)
        except PolicyError as e:
            a.fail(f"{where} note", str(e))
        previous = cp
    a.report.checkpoints = len(rows)
    a.report.uncheckpointed = tree.size - (previous.size if previous else 0)


def _show(value) -> str:
    if isinstance(value, bytes):
        return value.hex()[:16] + "..."
    return repr(value)

