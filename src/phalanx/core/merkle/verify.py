"""Checking inclusion and consistency proofs: RFC 9162 sections 2.1.3.2 and 2.1.4.2, exactly.

Each verifier returns ``None`` when the proof holds and raises a :class:`ProofError` subclass
that names the check that failed. Before running the RFC's loop, the inputs are checked the way
transparency-dev/merkle's ``proof/verify.go`` does, where the RFC says nothing:

- every hash (leaf, roots, proof elements) is 32 bytes;
- the proof has exactly the length its sizes imply, counted up front so that the error says
  so (the RFC's loop also fails on a wrong length, later, as a root mismatch or a path that
  runs past the root);
- inclusion needs ``index < size``;
- consistency needs ``0 < size1 <= size2``: a size1 of 0 is rejected even when size2 is 0
  (a proof from the empty tree proves nothing);
- equal sizes need an empty proof and equal roots.

The expected lengths: an inclusion path for leaf i of a tree of n has one hash for each level
where the paths to i and n - 1 split, ``bit_length(i ^ (n - 1))``, plus one for each left
sibling above that, ``popcount(i >> that)``. A consistency proof from m to n is the path of leaf
m - 1 in the tree of n from the level of the largest complete subtree ending at m (m's trailing
zero bits) upwards, plus that subtree's own hash unless m is a power of two (then it is root1).
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256

from phalanx.core.merkle.hashing import HASH_SIZE

_NODE = b"\x01"


class ProofError(ValueError):
    """A Merkle proof that does not hold; the message names the failed check."""


class HashLengthError(ProofError):
    """A leaf hash, root or proof element is not a 32-byte SHA-256 digest."""


class TreeSizeError(ProofError):
    """The sizes or the index are impossible (index >= size, size1 > size2, size1 = 0, ...)."""


class ProofLengthError(ProofError):
    """The proof has more or fewer hashes than its sizes imply."""


class RootMismatchError(ProofError):
    """The proof leads to a different root than the one given."""


def _check_hash(what: str, value: bytes) -> None:
    if not isinstance(value, (bytes, bytearray)) or len(value) != HASH_SIZE:
        got = f"{len(value)} bytes" if isinstance(value, (bytes, bytearray)) else type(value).__name__
        raise HashLengthError(f"{what} is not a {HASH_SIZE}-byte hash (got {got})")


def _check_proof_hashes(kind: str, proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        _check_hash(f"{kind} proof element {i}", h)


def inclusion_proof_length(index: int, size: int) -> int:
    """How many hashes the inclusion path of leaf ``index`` in a tree of ``size`` has."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def consistency_proof_length(size1: int, size2: int) -> int:
    """How many hashes the consistency proof from ``size1`` to ``size2`` has (0 < size1 < size2)."""
    shift = (size1 & -size1).bit_length() - 1  # trailing zeros of size1
    last = size1 - 1
    inner = (last ^ (size2 - 1)).bit_length()
    border = (last >> inner).bit_count()
    seed = 0 if size1 == 1 << shift else 1
    return seed + (inner - shift) + border


def _lsb(x: int) -> int:
    return x & 1


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` whose head is ``root``.

    RFC 9162 section 2.1.3.2. Raises :class:`ProofError` (naming the check) when it does not hold.
    """
    _check_hash("inclusion: leaf hash", leaf_hash)
    _check_hash("inclusion: root", root)
    _check_proof_hashes("inclusion", proof)
    if index < 0 or size < 0:
        raise TreeSizeError(f"inclusion: negative leaf index or tree size (index {index}, size {size})")
    if index >= size:  # step 1
        raise TreeSizeError(f"inclusion: leaf index {index} is not below tree size {size}")
    want = inclusion_proof_length(index, size)
    if len(proof) != want:
        raise ProofLengthError(f"inclusion: wrong proof length {len(proof)} for leaf {index} of a tree "
                               f"of {size} (want {want})")
    fn, sn = index, size - 1  # step 2
    r = bytes(leaf_hash)  # step 3
    for p in proof:  # step 4
        if sn == 0:
            raise ProofLengthError(f"inclusion: proof runs past the root (leaf {index}, size {size})")
        if _lsb(fn) or fn == sn:
            r = sha256(_NODE + p + r).digest()
            if not _lsb(fn):
                while not (_lsb(fn) or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = sha256(_NODE + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:  # step 5
        raise ProofLengthError(f"inclusion: proof stops below the root (leaf {index}, size {size})")
    if r != root:
        raise RootMismatchError(f"inclusion: the proof for leaf {index} leads to root {r.hex()[:16]}..., "
                                f"not the given root {bytes(root).hex()[:16]}... of the tree of {size}")


def roots_from_consistency_proof(size1: int, size2: int, proof: Sequence[bytes],
                                 root1: bytes) -> tuple[bytes, bytes]:
    """The two roots a consistency proof yields: ``(fr, sr)`` of RFC 9162 section 2.1.4.2.

    ``fr`` is the root at ``size1`` and ``sr`` the root at ``size2`` that the proof implies. When
    ``size1`` is a power of two the proof does not carry the old root, and ``fr`` is ``root1``.
    The checks on sizes and lengths are made here; comparing the roots is the caller's.
    """
    _check_hash("consistency: first root", root1)
    _check_proof_hashes("consistency", proof)
    if size1 < 0 or size2 < 0:
        raise TreeSizeError(f"consistency: negative tree size (size1 {size1}, size2 {size2})")
    if size2 < size1:
        raise TreeSizeError(f"consistency: size2 ({size2}) is smaller than size1 ({size1})")
    if size1 == 0:
        raise TreeSizeError(f"consistency: a proof from the empty tree (size1 0, size2 {size2}) is meaningless")
    if size1 == size2:
        if proof:
            raise ProofLengthError(f"consistency: equal sizes ({size1}) need an empty proof (got {len(proof)} hashes)")
        return bytes(root1), bytes(root1)
    if not proof:  # step 1
        raise ProofLengthError(f"consistency: empty proof from size {size1} to {size2}")
    want = consistency_proof_length(size1, size2)
    if len(proof) != want:
        raise ProofLengthError(f"consistency: wrong proof length {len(proof)} from size {size1} to {size2} "
                               f"(want {want})")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # step 2: first is an exact power of 2
        path.insert(0, bytes(root1))
    fn, sn = size1 - 1, size2 - 1  # step 3
    while _lsb(fn):  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:
            raise ProofLengthError(f"consistency: proof runs past the root (size {size1} to {size2})")
        if _lsb(fn) or fn == sn:
            fr = sha256(_NODE + c + fr).digest()
            sr = sha256(_NODE + c + sr).digest()
            if not _lsb(fn):
                while not (_lsb(fn) or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = sha256(_NODE + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:  # step 7
        raise ProofLengthError(f"consistency: proof stops below the root (size {size1} to {size2})")
    return bytes(fr), bytes(sr)


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Check that the tree of ``size1`` with head ``root1`` is a prefix of ``size2``'s with ``root2``.

    RFC 9162 section 2.1.4.2. Raises :class:`ProofError` (naming the check) when it does not hold.
    """
    _check_hash("consistency: second root", root2)
    fr, sr = roots_from_consistency_proof(size1, size2, proof, root1)
    if size1 == size2:
        if root1 != root2:
            raise RootMismatchError(f"consistency: equal sizes ({size1}) but different roots")
        return
    if fr != root1:
        raise RootMismatchError(f"consistency: the proof from {size1} to {size2} leads to a first root "
                                f"{fr.hex()[:16]}... that is not the given {bytes(root1).hex()[:16]}...")
    if sr != root2:
        raise RootMismatchError(f"consistency: the proof from {size1} to {size2} leads to a second root "
                                f"{sr.hex()[:16]}... that is not the given {bytes(root2).hex()[:16]}...")
