"""The tamper-evident ledger: an RFC 9162 transparency log of signed, typed entries, with C2SP
signed and cosigned checkpoints, SQLite or PostgreSQL storage, offline receipts and the
structural audit. Imports only :mod:`phalanx.core`.

The engine's calls::

    from phalanx.ledger import Ledger, Policy, Signer, Witness, audit
    ledger = Ledger.create("out/ledger.db", Signer(origin, log_key), policy=policy)
    ledger.submit_many([(UpdateCommitment(...), node_key), ...])    # sign + append, one transaction
    ledger.checkpoint(witnesses)                                    # signed, cosigned, stored
    ledger.receipt(index).format()                                  # c2sp.org/tlog-proof@v1
    audit("out/ledger.db", policy=policy, checks=[...]).ok          # every byte re-derived
"""

from phalanx.ledger.audit import AuditReport, EntryCheck, Finding, audit
from phalanx.ledger.blobs import BlobError, BlobStore
from phalanx.ledger.checkpoint import Checkpoint, CheckpointError, SignedCheckpoint, open_checkpoint, sign_checkpoint
from phalanx.ledger.entries import (
    TYPES,
    Admission,
    AggregateInput,
    AggregateRecord,
    Body,
    CommitteeEvidence,
    DatasetCommitment,
    Entry,
    EntryError,
    GovernanceActivation,
    GovernanceProposal,
    GovernanceVote,
    KeyRevocation,
    KeyRotation,
    NodeRegistration,
    PrivacyBudget,
    Quarantine,
    Rejection,
    Reputation,
    Rollback,
    RoundCertificate,
    SoftwareRelease,
    UpdateCommitment,
    UpdateEquivocation,
    decode_entry,
    envelope_message,
    make_body,
    rotate_key,
    sign_entry,
)
from phalanx.ledger.equivocation import Equivocation, EvidenceError, verify_equivocation
from phalanx.ledger.evidence import evidence_check
from phalanx.ledger.log import Cosigner, Ledger, Published, RejectedEntry
from phalanx.ledger.note import (
    SIG_COSIGNATURE,
    SIG_ED25519,
    Note,
    NoteError,
    NoteVerificationError,
    Signer,
    Verifier,
    parse_note,
    parse_private_key,
    parse_vkey,
    verify_note,
)
from phalanx.ledger.policy import Group, Policy, PolicyError
from phalanx.ledger.receipt import Receipt, ReceiptError, VerifiedReceipt, verify_receipt
from phalanx.ledger.state import LedgerState, StructureError
from phalanx.ledger.storage import ConcurrentWriteError, StorageError
from phalanx.ledger.witness import FileWitnessState, MemoryWitnessState, Witness, WitnessError

__all__ = [
    "TYPES", "Admission", "AggregateInput", "AggregateRecord", "AuditReport", "BlobError", "BlobStore", "Body", "CommitteeEvidence",
    "Checkpoint", "CheckpointError", "ConcurrentWriteError", "Cosigner", "DatasetCommitment", "Entry", "EntryCheck",
    "EntryError", "Equivocation", "EvidenceError", "FileWitnessState", "Finding", "GovernanceActivation",
    "GovernanceProposal", "GovernanceVote", "Group", "KeyRevocation", "KeyRotation", "Ledger", "LedgerState",
    "MemoryWitnessState", "NodeRegistration", "Note", "NoteError", "NoteVerificationError", "Policy", "PolicyError",
    "PrivacyBudget", "Published", "Quarantine", "Receipt", "ReceiptError", "Rejection", "RejectedEntry", "Reputation",
    "Rollback", "RoundCertificate", "SIG_COSIGNATURE", "SIG_ED25519", "SignedCheckpoint", "Signer", "SoftwareRelease", "StorageError",
    "StructureError", "UpdateCommitment", "UpdateEquivocation", "VerifiedReceipt", "Verifier", "Witness", "WitnessError", "audit",
    "decode_entry", "envelope_message", "evidence_check", "make_body", "open_checkpoint", "parse_note", "parse_private_key", "parse_vkey", "rotate_key",
    "sign_checkpoint", "sign_entry", "verify_equivocation", "verify_note", "verify_receipt",
]
