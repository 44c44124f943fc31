"""The RFC 9162 Merkle tree: hashing, an incremental tree, proofs and their verifiers.

One concern per file, as transparency-dev/merkle does it:

- :mod:`.hashing`: leaf and node hashes, the empty root, the root of a list;
- :mod:`.tree`: :class:`MerkleTree`, append-only, every complete subtree kept;
- :mod:`.proofs`: building inclusion and consistency proofs (RFC 9162 sections 2.1.3.1, 2.1.4.1);
- :mod:`.verify`: checking them (sections 2.1.3.2, 2.1.4.2), raising a :class:`ProofError`.
"""

from phalanx.core.merkle.hashing import (
    EMPTY_ROOT,
    HASH_SIZE,
    leaf_hash,
    leaf_hashes,
    node_hash,
    root_of,
)
from phalanx.core.merkle.proofs import consistency_proof, inclusion_proof
from phalanx.core.merkle.tree import MerkleTree
from phalanx.core.merkle.verify import (
    HashLengthError,
    ProofError,
    ProofLengthError,
    RootMismatchError,
    TreeSizeError,
    consistency_proof_length,
    inclusion_proof_length,
    roots_from_consistency_proof,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "EMPTY_ROOT", "HASH_SIZE", "HashLengthError", "MerkleTree", "ProofError", "ProofLengthError",
    "RootMismatchError", "TreeSizeError", "consistency_proof", "consistency_proof_length",
    "inclusion_proof", "inclusion_proof_length", "leaf_hash", "leaf_hashes", "node_hash", "root_of",
    "roots_from_consistency_proof", "verify_consistency", "verify_inclusion",
]
