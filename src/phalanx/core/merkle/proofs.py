"""Building inclusion and consistency proofs, as RFC 9162 section 2.1 defines them.

Both work on anything with ``size`` and ``subtree_hash(start, end)`` (the MTH of leaves
``[start, end)``), such as :class:`phalanx.core.merkle.MerkleTree`.

**Inclusion (audit path), section 2.1.3.1.** For leaf m of D[n], n > 1, with k the largest power
of two smaller than n::

    PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])       if m < k
    PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k])   if m >= k
    PATH(0, {d(0)}) = {}

so the path lists the siblings from the leaf's up to the root's children.

**Consistency, section 2.1.4.1.** For 0 < m <= n, PROOF(m, D[n]) = SUBPROOF(m, D[n], true)::

    SUBPROOF(m, D[m], true)  = {}
    SUBPROOF(m, D[m], false) = {MTH(D[m])}
    SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])          if m <= k
    SUBPROOF(m, D[n], b) = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])  if m > k

Both recursions are unrolled here into a walk down from the root: each step records the sibling
it passes, and the proof is those siblings read back from the bottom.
"""

from __future__ import annotations

from typing import Protocol

from phalanx.core.merkle.hashing import largest_power_of_two_below


class SubtreeHashes(Protocol):
    @property
    def size(self) -> int: ...

    def subtree_hash(self, start: int, end: int) -> bytes: ...


def inclusion_proof(tree: SubtreeHashes, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]): the hashes that lead leaf ``index`` up to the root at ``size``."""
    if not 0 <= size <= tree.size:
        raise IndexError(f"inclusion proof: no tree of size {size} (the tree has {tree.size} leaves)")
    if not 0 <= index < size:
        raise IndexError(f"inclusion proof: leaf index {index} is not below tree size {size}")
    siblings: list[bytes] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = largest_power_of_two_below(hi - lo)
        if m < k:
            siblings.append(tree.subtree_hash(lo + k, hi))
            hi = lo + k
        else:
            siblings.append(tree.subtree_hash(lo, lo + k))
            lo, m = lo + k, m - k
    siblings.reverse()
    return siblings


def consistency_proof(tree: SubtreeHashes, size1: int, size2: int) -> list[bytes]:
    """PROOF(size1, D[size2]): the hashes that show the tree of size1 is a prefix of size2's."""
    if not 0 <= size2 <= tree.size:
        raise IndexError(f"consistency proof: no tree of size {size2} (the tree has {tree.size} leaves)")
    if not 0 < size1 <= size2:
        raise ValueError(f"consistency proof: needs 0 < size1 <= size2 (got size1 {size1}, size2 {size2}); "
                         "the empty tree is a prefix of every tree and has no proof")
    siblings: list[bytes] = []
    lo, hi, m, whole = 0, size2, size1, True
    while m != hi - lo:
        k = largest_power_of_two_below(hi - lo)
        if m <= k:
            siblings.append(tree.subtree_hash(lo + k, hi))
            hi = lo + k
        else:
            siblings.append(tree.subtree_hash(lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        siblings.append(tree.subtree_hash(lo, hi))
    siblings.reverse()
    return siblings
