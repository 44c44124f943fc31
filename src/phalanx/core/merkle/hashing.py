"""The hashes of an RFC 9162 Merkle tree: leaves, interior nodes, and the tree head of a list.

RFC 9162 (Laurie, Messeri, Stradling 2021, Certificate Transparency 2.0), section 2.1.1, defines
the Merkle Tree Hash (MTH) of a list of n inputs D[n] with SHA-256:

- MTH({}) = SHA-256() (the hash of the empty string);
- MTH({d(0)}) = SHA-256(0x00 || d(0))                          (a leaf);
- MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))      (a node),
  where k is the largest power of two smaller than n.

The 0x00 / 0x01 prefixes keep a leaf from ever hashing like a node (second pre-image resistance).
The tree of 2 leaves ``a, b`` has root ``node_hash(leaf_hash(a), leaf_hash(b))``; of 3 leaves
``a, b, c`` it is ``node_hash(node_hash(la, lb), lc)``: the last leaf waits at a higher level.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from hashlib import sha256

#: Every hash in the tree is a SHA-256 digest.
HASH_SIZE = 32
#: The root of the empty tree, MTH({}) = SHA-256 of the empty string.
EMPTY_ROOT = sha256(b"").digest()

_LEAF = b"\x00"
_NODE = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one entry, a leaf of the tree."""
    return sha256(_LEAF + data).digest()


def leaf_hashes(entries: Iterable[bytes]) -> list[bytes]:
    """``[leaf_hash(e) for e in entries]``, in one tight loop (the fast path for batches)."""
    return [sha256(_LEAF + e).digest() for e in entries]


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node from its two children."""
    return sha256(_NODE + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162's split: the largest power of two strictly smaller than ``n`` (n >= 2)."""
    if n < 2:
        raise ValueError(f"the split point is defined for n >= 2 (got {n})")
    return 1 << ((n - 1).bit_length() - 1)


def root_of(hashes: Sequence[bytes]) -> bytes:
    """MTH of a list of *leaf hashes* (not entries): the root of the tree they form.

    Computed bottom-up, level by level (the odd node at the end of a level moves up unchanged),
    which gives the same value as the RFC's recursive split.
    """
    if not hashes:
        return EMPTY_ROOT
    level = list(hashes)
    while len(level) > 1:
        paired = [sha256(_NODE + a + b).digest() for a, b in zip(level[0::2], level[1::2])]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]
