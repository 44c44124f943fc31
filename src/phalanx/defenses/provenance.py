"""Data provenance: an auditor checks a node's committed statistics against the data it holds.

At registration a node commits to its dataset: a Merkle root over salted sample hashes, and,
under a separate salt, its sample count and label histogram (the ledger's ``dataset_commitment``,
``stats = SHA-256(salt || CBOR {count, histogram})``; see ``phalanx.data.commitment`` where the
ledger work builds it). The count and histogram are opened only to an auditor. An auditor that
holds the node's data (a regulator, the data's owner) can then check, without anything going on
a public log:

1. that the opening is well formed (a count >= 0, one non-negative count per class, summing to
   the count) and opens the commitment;
2. that the histogram of the data it holds matches the committed one, to within ``tolerance`` in
   total variation distance (half the L1 distance of the two label distributions);
3. that every sample count the node claimed when weighting its updates is at most the committed
   count.

A failed check is evidence against the node, fed into every receiver's reputation (an audit is
public evidence once its verdict is logged); a malformed opening is a rejection with its reason,
never an exception. **What a commitment does not do:** it binds a node to its own claim, not to
the truth. A node that commits to poisoned labels passes check 1 and fails check 2 only against
an auditor who sees the true labels; a node that inflates its count in the commitment itself
passes all three. What protects the aggregation from inflated counts is the cap on claimed counts
(:func:`~phalanx.defenses.validation.cap_claims`), which trusts no claim.

Worked example: committed histogram (50, 50), data held (90, 10): distance 0.4, above a
tolerance of 0.1, so the audit fails with "label histogram diverges".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from phalanx.core.commitment import CommitmentError, hiding_commitment, open_commitment
from phalanx.core.encoding import encode


def stats_bytes(count: int, histogram: Sequence[int]) -> bytes:
    """The bytes a statistics commitment is taken over: CBOR ``{count, histogram}``."""
    return encode({"count": int(count), "histogram": [int(c) for c in histogram]})


def commit_stats(count: int, histogram: Sequence[int], salt: bytes) -> bytes:
    """``SHA-256(salt || CBOR {count, histogram})``: the hidden statistics of a dataset."""
    return hiding_commitment(salt, stats_bytes(count, histogram))


@dataclass(frozen=True)
class StatsOpening:
    """A node's committed statistics and what opens them (given to its auditor)."""

    commitment: bytes
    count: int
    histogram: tuple[int, ...]
    salt: bytes


@dataclass(frozen=True)
class AuditResult:
    ok: bool
    reason: str = ""
    divergence: float | None = None


def histogram_divergence(committed: Sequence[int], held: Sequence[int]) -> float:
    """Total variation distance between two label histograms' distributions (0 if both empty)."""
    a = torch.as_tensor(list(committed), dtype=torch.float64)
    b = torch.as_tensor(list(held), dtype=torch.float64)
    if a.sum() == 0 and b.sum() == 0:
        return 0.0
    pa = a / a.sum() if a.sum() > 0 else a
    pb = b / b.sum() if b.sum() > 0 else b
    return float(0.5 * (pa - pb).abs().sum())


def _malformed(opening: object, num_classes: int) -> str | None:
    try:
        count, histogram = opening.count, opening.histogram  # type: ignore[attr-defined]
        commitment, salt = opening.commitment, opening.salt  # type: ignore[attr-defined]
    except AttributeError as e:
        return f"the opening lacks a field ({e.name})"
    if not isinstance(commitment, (bytes, bytearray)) or len(commitment) != 32:
        return "the commitment is not 32 bytes"
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        return f"the count is not an integer >= 0 (got {count!r})"
    try:
        hist = [c for c in histogram]
    except TypeError:
        return "the histogram is not a sequence"
    if len(hist) != num_classes:
        return f"the histogram has {len(hist)} classes, not {num_classes}"
    if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in hist):
        return "the histogram holds a value that is not an integer >= 0"
    if sum(hist) != count:
        return f"the histogram sums to {sum(hist)}, not the count {count}"
    try:
        open_commitment(bytes(commitment), salt, stats_bytes(count, hist))
    except CommitmentError as e:
        return str(e)
    return None


def audit(opening: object, held_labels: torch.Tensor, num_classes: int, tolerance: float = 0.1,
          claims: Sequence[float] = ()) -> AuditResult:
    """Check an opening against the labels the auditor holds and the counts the node claimed."""
    problem = _malformed(opening, num_classes)
    if problem is not None:
        return AuditResult(False, f"malformed commitment: {problem}")
    held = torch.bincount(held_labels.cpu().to(torch.int64), minlength=num_classes)[:num_classes].tolist()
    divergence = histogram_divergence(opening.histogram, held)  # type: ignore[attr-defined]
    if divergence > tolerance:
        return AuditResult(False, f"label histogram diverges from the commitment (distance {divergence:.3f} "
                                  f"> {tolerance:g})", divergence)
    over = [c for c in claims if c > opening.count]  # type: ignore[attr-defined]
    if over:
        return AuditResult(False, f"claimed {max(over):g} samples, committed {opening.count}", divergence)  # type: ignore[attr-defined]
    return AuditResult(True, "", divergence)
