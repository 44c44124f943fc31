"""Equivocation evidence in the log (a sender's signed envelope against its own commitment), and
dataset commitments with a hidden count: both re-checked by the structural audit."""

from __future__ import annotations

import hashlib

import pytest
import torch

import ledger_sample as ls
from phalanx.core.commitment import hiding_commitment, open_commitment
from phalanx.core.merkle import MerkleTree, leaf_hash, node_hash, verify_inclusion
from phalanx.data.commitment import commit_dataset, sample_leaves, sample_salt, stats_encoding
from phalanx.ledger import (
    DatasetCommitment,
    EntryError,
    LedgerState,
    StructureError,
    UpdateEquivocation,
    audit,
    envelope_message,
    make_body,
    sign_entry,
)

ORIGIN = ls.ORIGIN


def _ledger_with_updates(tmp_path):
    """Four nodes, one round of update commitments (entries 8-11), checkpointed."""
    sample = ls.build(tmp_path / "ledger.db", everything=False, rounds=1)
    commitments = list(range(8, 12))
    assert all(sample.ledger.entry(i).type == "update_commitment" for i in commitments)
    return sample, commitments


def _evidence(sample, sender: int, receiver: int, entry: int, received: bytes, signer=None):
    keys = sample.nodes
    envelope = (signer or keys[sender]).sign(envelope_message(ORIGIN, 0, keys[receiver].node_id, received))
    return UpdateEquivocation(round=0, node=keys[sender].node_id, commitment=entry, received=received,
                              envelope=envelope)


def test_a_senders_envelope_against_its_commitment_is_evidence_anyone_can_recheck(tmp_path):
    sample, commitments = _ledger_with_updates(tmp_path)
    other = hiding_commitment(sample.salt, b"another update for node 2")
    sample.ledger.submit(_evidence(sample, 3, 1, commitments[3], other), sample.nodes[1])
    sample.ledger.checkpoint(sample.witnesses)
    sample.ledger.close()
    assert audit(tmp_path / "ledger.db", policy=sample.policy).ok


@pytest.mark.parametrize("case,finding", [
    ("forged", "envelope signature does not verify"),       # the receiver signed it itself
    ("other receiver", "envelope signature does not verify"),  # an envelope meant for someone else
    ("same", "names the logged commitment itself"),
    ("wrong node", "not the accused one's"),
])
def test_evidence_that_proves_nothing_fails_the_audit(tmp_path, case, finding):
    sample, commitments = _ledger_with_updates(tmp_path)
    keys = sample.nodes
    other = hiding_commitment(sample.salt, b"another")
    if case == "forged":
        evidence = _evidence(sample, 3, 1, commitments[3], other, signer=keys[1])
    elif case == "other receiver":
        envelope = keys[3].sign(envelope_message(ORIGIN, 0, keys[2].node_id, other))
        evidence = UpdateEquivocation(round=0, node=keys[3].node_id, commitment=commitments[3], received=other,
                                      envelope=envelope)
    elif case == "same":
        logged = sample.ledger.entry(commitments[3]).body.update
        evidence = _evidence(sample, 3, 1, commitments[3], logged)
    else:
        evidence = _evidence(sample, 3, 1, commitments[2], other)
    sample.ledger.submit(evidence, keys[1])
    sample.ledger.checkpoint(sample.witnesses)
    sample.ledger.close()
    report = audit(tmp_path / "ledger.db", policy=sample.policy)
    assert not report.ok and finding in str(report.findings[0]) and "update_equivocation" in str(report.findings[0])


def test_evidence_must_name_an_update_commitment_of_its_round():
    keys = ls.node_keys(2)
    state = LedgerState()
    for i, key in enumerate(keys):
        state.apply(state.size, sign_entry(ls.NodeRegistration(software="s", admission=ls.Admission(kind="open")),
                                           key, 0, ORIGIN))
        state.apply(state.size, sign_entry(DatasetCommitment(name=f"d{i}", root=ls.h(i), samples=1), key, 1, ORIGIN))
    update = ls.UpdateCommitment(round=3, base_model=ls.h("b"), update=ls.h("u"), dataset=ls.h(0), protocol="p",
                                 samples=ls.h("n"))
    state.apply(state.size, sign_entry(update, keys[0], 2, ORIGIN))
    evidence = UpdateEquivocation(round=2, node=keys[0].node_id, commitment=4, received=ls.h("x"), envelope=bytes(64))
    with pytest.raises(StructureError, match="commitment entry 4 is an update of round 3, not 2"):
        state.check(state.size, sign_entry(evidence, keys[1], 2, ORIGIN))
    wrong_type = evidence.model_copy(update={"round": 3, "commitment": 1})
    with pytest.raises(StructureError, match="commitment is a dataset_commitment"):
        state.check(state.size, sign_entry(wrong_type, keys[1], 2, ORIGIN))


def test_a_dataset_commitment_gives_its_count_in_the_clear_or_hidden():
    assert DatasetCommitment(name="d", root=ls.h(1), stats=ls.h(2)).samples is None
    with pytest.raises(EntryError, match="give the sample count"):
        make_body("dataset_commitment", {"name": "d", "root": ls.h(1), "samples": None, "stats": None,
                                         "description": ""})


def test_dataset_commitment_by_hand_two_samples():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    y = torch.tensor([1, 0])
    salt, stats_salt = b"a" * 32, b"b" * 32
    opening = commit_dataset(x, y, 3, salt, stats_salt)
    entries = [hashlib.sha256(sample_salt(salt, i) + x[i].numpy().tobytes() + int(y[i]).to_bytes(8, "big")).digest()
               for i in range(2)]
    assert sample_salt(salt, 1) == hashlib.sha256(salt + (1).to_bytes(8, "big")).digest()
    assert opening.root == node_hash(leaf_hash(entries[0]), leaf_hash(entries[1]))
    assert opening.count == 2 and opening.histogram == (1, 1, 0)
    open_commitment(opening.stats, stats_salt, stats_encoding(2, [1, 1, 0]))
    assert opening.stats != hiding_commitment(stats_salt, stats_encoding(3, [1, 1, 1]))


def test_one_sample_opens_without_the_others_and_the_salt_hides_the_data():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 1, 2, 2, generator=g), torch.randint(0, 3, (5,), generator=g)
    opening = commit_dataset(x, y, 3, b"s" * 32, b"t" * 32)
    tree = MerkleTree()
    leaves = sample_leaves(x, y, b"s" * 32)
    tree.append_leaf_hashes([leaf_hash(e) for e in leaves])
    assert tree.root() == opening.root
    verify_inclusion(leaf_hash(leaves[3]), 3, 5, tree.inclusion_proof(3), opening.root)  # sample 3 alone
    assert commit_dataset(x, y, 3, b"u" * 32, b"t" * 32).root != opening.root  # same data, other salt


def _phalanx_imports(package: str):
    """(file name, imported module) for every import of a phalanx module in the package."""
    import ast
    from pathlib import Path

    import phalanx

    for path in (Path(phalanx.__file__).parent / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                yield path.name, node.module or ""
            elif isinstance(node, ast.Import):
                yield from ((path.name, alias.name) for alias in node.names)


@pytest.mark.parametrize("package", ["ledger", "data"])
def test_package_imports_follow_the_layers(package):
    # shared/ARCHITECTURE.md: ledger and data import only core (and themselves)
    wrong = [(f, m) for f, m in _phalanx_imports(package)
             if m.startswith("phalanx") and not m.startswith((f"phalanx.{package}", "phalanx.core"))]
    assert not wrong
