"""The aggregation contract: rows in, one row out, batched over receivers.

**Batched form.** In gossip every receiver aggregates a different set of neighbours, so the
primary form is ``aggregate(rows (m, k, d), mask (m, k), weights (m, k) | None, context) ->
(m, d)``: ``mask[r, j]`` says whether slot ``j`` of receiver ``r`` holds a real row. A masked-out
slot may hold anything (even NaN) and must not influence the output. A rule must not loop over
receivers or rows in Python. The single-receiver call ``rule(rows (n, d), weights, context)`` is
the batched form with ``m = 1``.

**Declared f.** A robust rule assumes at most ``f`` of its rows are Byzantine. ``f`` is a
constructor hyper-parameter for direct use (``get("krum", f=2)``); the engine instead passes a
per-receiver ``Context.f`` (an ``(m,)`` integer tensor), since in gossip every receiver declares
its own. The conditions that depend on the rows actually present (``2f < n``, ``n >= 4f + 3``)
are :meth:`Aggregator.min_rows`, checked on every call per receiver: the single call raises
:class:`InsufficientRows` with the formula; the engine lets a receiver below its bound keep its
own model and logs an availability event.

**Contract.** Each rule declares, as class attributes that the property tests are generated
from:

- ``accepts_weights``: whether per-row weights have a standard meaning for it (Krum, Bulyan, MDA
  and ``sign_majority`` have none; the engine then passes ``None``);
- ``bound``: what its output is guaranteed to stay within when at most ``f`` rows are
  arbitrarily bad and the rule's row condition holds:

  - ``"hull"``: the convex hull of the honest rows (selection and averaging of honest rows);
  - ``"box"``: the coordinate-wise range of the honest rows (coordinate-wise rules);
  - ``"ball"``: ``||out - mu_H|| <= ball_factor(n, f) * max_{i in H} ||x_i - mu_H||``, with
    ``mu_H`` the honest mean (geometric median);
  - ``"radius"``: ``||out - center(ctx)|| <= radius(ctx)`` whatever the rows (clipping rules,
    FLTrust's root norm);
  - ``"sign"``: every coordinate in ``[-scale, scale]`` (``sign_majority``);
  - ``"none"``: no guarantee (``mean``).

- ``translation_equivariant``: ``rule(rows + c) == rule(rows) + c``;
- ``permutation_invariant``: reordering the rows does not change the output (bucketing, which
  shuffles, declares ``False``);
- ``needs_root``: it reads ``Context.root`` (FLTrust's trusted update);
- ``stateful``: it reads ``Context.previous``, its own previous output for this receiver
  (centered clipping's momentum). State is kept by the caller, never hidden in the rule.

**Pre-aggregators** map ``(m, k, d)`` rows to ``(m, k', d)`` rows with a new mask (clipping,
nearest-neighbour mixing, bucketing) and chain in front of any rule (:mod:`phalanx.aggregate.chain`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, ClassVar, Literal

import pydantic
import torch
from pydantic import Field

Bound = Literal["hull", "box", "ball", "radius", "sign", "none"]


class InsufficientRows(ValueError):
    """A rule was called with fewer rows than its robustness condition needs."""


@dataclass(frozen=True)
class Context:
    """What one call may read besides the rows (all optional, all per receiver)."""

    f: torch.Tensor | None = None  # (m,) int64: each receiver's declared f
    root: torch.Tensor | None = None  # (m, d): a trusted update (FLTrust's root update)
    previous: torch.Tensor | None = None  # (m, d): this rule's previous output (its state)
    generator: torch.Generator | None = None  # randomness (bucketing's shuffle)

    def select(self, which: torch.Tensor) -> Context:
        """The context of a subset of receivers (``which``: bool mask or indices over m)."""
        pick = lambda t: None if t is None else t[which]
        return replace(self, f=pick(self.f), root=pick(self.root), previous=pick(self.previous))


class Stage:
    """What rules and pre-aggregators share: a declared ``f`` and a row condition."""

    f: int = 0
    permutation_invariant: ClassVar[bool] = True  # False for bucketing (it shuffles)
    translation_equivariant: ClassVar[bool] = True

    def declared_f(self, m: int, device: torch.device, context: Context | None) -> torch.Tensor:
        """Each receiver's declared f, ``(m,)`` int64: the context's, else the constructor's."""
        if context is not None and context.f is not None:
            return context.f.to(device=device, dtype=torch.int64)
        return torch.full((m,), int(getattr(self, "f", 0)), dtype=torch.int64, device=device)

    def min_rows(self, f: torch.Tensor) -> torch.Tensor:
        """The fewest rows each receiver needs, given its declared ``f`` (``(m,)`` int64)."""
        return torch.ones_like(f)

    def requirement(self) -> str:
        """The condition of :meth:`min_rows`, as a formula, for error messages."""
        return "n >= 1"

    def admissible(self, counts: torch.Tensor, f: torch.Tensor | None = None) -> torch.Tensor:
        """Which receivers have enough rows (``counts``: rows per receiver)."""
        if f is None:
            f = torch.full_like(counts, int(getattr(self, "f", 0)))
        return counts >= self.min_rows(f.to(counts.device))

    def check_single(self, n: int, context: Context | None) -> None:
        f = self.declared_f(1, torch.device("cpu"), context)
        need = int(self.min_rows(f)[0])
        if n < need:
            raise InsufficientRows(f"{self.name()}: got {n} rows with f={int(f[0])}, needs "
                                   f"{self.requirement()} ({need} rows)")

    def as_batch(self, rows: torch.Tensor, weights: torch.Tensor | None, context: Context | None):
        """A single receiver's ``(n, d)`` call as the batched arguments, its row count checked."""
        if rows.ndim != 2:
            raise ValueError(f"{self.name()}: expected (n, d) rows, got shape {tuple(rows.shape)}")
        context = _single(context)
        self.check_single(rows.shape[0], context)
        mask = torch.ones(1, rows.shape[0], dtype=torch.bool, device=rows.device)
        return rows[None], mask, None if weights is None else weights[None], context

    label: ClassVar[str] = ""  # the registered name, for messages

    @classmethod
    def name(cls) -> str:
        return cls.label or cls.__name__


class HonestMajority:
    """A stage that needs the honest rows to be a majority, ``n >= 2f + 1``; ``f`` defaults to 0."""

    @pydantic.validate_call
    def __init__(self, *, f: Annotated[int, Field(ge=0)] = 0):
        self.f = f

    def min_rows(self, f: torch.Tensor) -> torch.Tensor:
        return 2 * f + 1

    def requirement(self) -> str:
        return "n >= 2f + 1"


class Aggregator(Stage):
    """Base class of every aggregation rule (see the module docstring for the contract)."""

    accepts_weights: ClassVar[bool] = False
    bound: ClassVar[Bound] = "hull"
    translation_equivariant: ClassVar[bool] = True
    needs_root: ClassVar[bool] = False
    stateful: ClassVar[bool] = False

    def aggregate(
        self,
        rows: torch.Tensor,
        mask: torch.Tensor,
        weights: torch.Tensor | None = None,
        context: Context | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    # -- the bound, for rules that declare "ball", "radius" or "sign" ------------------------
    def ball_factor(self, n: int, f: int) -> float:
        raise NotImplementedError

    def center(self, context: Context | None, m: int, d: int, device) -> torch.Tensor:
        return torch.zeros(m, d, device=device)

    def radius(self, context: Context | None) -> torch.Tensor:
        raise NotImplementedError

    def __call__(
        self,
        rows: torch.Tensor,
        weights: torch.Tensor | None = None,
        context: Context | None = None,
    ) -> torch.Tensor:
        return self.aggregate(*self.as_batch(rows, weights, context))[0]


class PreAggregator(Stage):
    """Base class of a pre-aggregator: ``(m, k, d)`` rows to ``(m, k', d)`` rows.

    ``apply`` returns the new rows, their mask and their weights (``None`` when it was given
    ``None``). ``out_counts`` says how many rows each receiver has afterwards, so a chain can
    check the next stage's condition before running anything.
    """

    def apply(
        self,
        rows: torch.Tensor,
        mask: torch.Tensor,
        weights: torch.Tensor | None = None,
        context: Context | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def out_counts(self, counts: torch.Tensor) -> torch.Tensor:
        return counts

    def __call__(self, rows: torch.Tensor, weights: torch.Tensor | None = None,
                 context: Context | None = None) -> torch.Tensor:
        out, out_mask, _ = self.apply(*self.as_batch(rows, weights, context))
        return out[0] if bool(out_mask.all()) else out[0][out_mask[0]]


def _single(context: Context | None) -> Context | None:
    """Lift a single-receiver context ((d,) root/previous, int f) to the batched form."""
    if context is None:
        return None
    up = lambda t: t[None] if t is not None and t.ndim == 1 else t
    f = None if context.f is None else torch.as_tensor(context.f, dtype=torch.int64).reshape(1)
    return replace(context, f=f, root=up(context.root), previous=up(context.previous))


def masked_fill_rows(rows: torch.Tensor, mask: torch.Tensor, value: float = 0.0) -> torch.Tensor:
    """``rows`` with masked-out slots set to ``value`` (so NaN in an empty slot cannot leak).

    With every slot real (the common case) it returns ``rows`` itself, without a copy: callers
    never write into the result.
    """
    if bool(mask.all()):
        return rows
    return torch.where(mask[..., None], rows, torch.full((), value, dtype=rows.dtype, device=rows.device))


# Temporaries of (m, k, slice) elements: about 4 MB, inside the L3 cache, instead of a full
# (m, k, d) copy per call (measured with 100 x 1e6 rows and 50 x 9 x 159,010 rows on 2 cores:
# a centred Gram matrix takes 165 and 41 ms by slices against 255 and 115 ms whole).
SLICE_ELEMENTS = 1 << 20

# Pairwise distances are recomputed around a robust centre when the mean sits farther than
# sqrt(RECENTRE_RATIO) times the medoid's median distance from the medoid (see below).
RECENTRE_RATIO = 100.0


def coordinate_slices(rows: torch.Tensor) -> range:
    """Start offsets of the coordinate slices that keep ``(m, k, slice)`` temporaries in cache.

    On CPU a slice holds about :data:`SLICE_ELEMENTS` elements over all receivers and rows; on a
    GPU, whose memory bandwidth makes a whole temporary cheap, one slice covers every coordinate.
    """
    m, k, d = rows.shape
    width = d if rows.device.type != "cpu" else min(d, max(1024, SLICE_ELEMENTS // max(1, m * k)))
    return range(0, d, max(1, width)) if d else range(0)


def _width(rows: torch.Tensor, slices: range) -> int:
    return slices.step if len(slices) > 1 else rows.shape[-1]


def distances_to(rows: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``(m, k)`` Euclidean distances from each receiver's rows ``(m, k, d)`` to its point ``(m, d)``.

    Exact differences (no expansion of the square, which loses precision for close rows), taken
    slice by slice (:func:`coordinate_slices`), so the difference never exists as a whole
    ``(m, k, d)`` copy; one pass over the rows either way. The slices' squared norms add up in
    float64, so that a million coordinates lose no digits (relative error about 1e-8 against a
    float64 computation, where one float32 reduction over 1e6 terms is off by about 2e-4).
    """
    slices = coordinate_slices(rows)
    if len(slices) <= 1:
        return (rows - points[:, None, :]).norm(dim=-1)
    w = _width(rows, slices)
    acc = torch.zeros(rows.shape[:2], dtype=torch.float64, device=rows.device)
    for start in slices:
        diff = rows[..., start : start + w] - points[:, None, start : start + w]
        acc += torch.linalg.vector_norm(diff, dim=-1).double().square()
    return acc.sqrt().to(rows.dtype)


def gram(rows: torch.Tensor, mask: torch.Tensor, origin: torch.Tensor,
         dtype: torch.dtype | None = None) -> torch.Tensor:
    """``(m, k, k)`` Gram matrix of each receiver's rows minus its ``origin`` ``(m, d)``.

    Masked-out slots count as zero rows. Accumulated slice by slice (:func:`coordinate_slices`),
    each slice cast to ``dtype`` (default: the rows' own), so a float64 Gram matrix of float32
    rows never needs a float64 copy of more than one slice, and no entry overflows (rows as large
    as float32 allows square to about 1e77 in float64).
    """
    m, k, _ = rows.shape
    dtype = dtype or rows.dtype
    out = torch.zeros(m, k, k, dtype=dtype, device=rows.device)
    every = bool(mask.all())
    slices = coordinate_slices(rows)
    w = _width(rows, slices)
    for start in slices:
        y = (rows[..., start : start + w] - origin[:, None, start : start + w]).to(dtype)
        if not every:
            y = torch.where(mask[:, :, None], y, torch.zeros((), dtype=dtype, device=y.device))
        out.baddbmm_(y, y.transpose(1, 2))
    return out


def _sq_distances_from_gram(g: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    sq = torch.diagonal(g, dim1=1, dim2=2)
    d2 = (sq[:, :, None] + sq[:, None, :] - 2 * g).clamp(min=0)
    both = mask[:, :, None] & mask[:, None, :]
    d2 = torch.where(both, d2, torch.full((), float("inf"), dtype=d2.dtype, device=d2.device))
    eye = torch.eye(g.shape[1], dtype=torch.bool, device=g.device)
    return d2.masked_fill(eye[None] & both, 0.0)


def medoid(d2: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each receiver's row with the smallest median distance to the others, and that distance².

    The median is the ``ceil((n - 1) / 2)``-th nearest other row: with ``2f < n`` an honest row
    has that many honest others, so its median distance is at most the honest diameter, while a
    row far from the honest ones has a median distance at least as far. Returns ``(m,)`` slots
    and ``(m,)`` squared distances.
    """
    n = mask.sum(1)
    closest = d2.sort(dim=2).values  # self (0) first, masked-out slots (+inf) last
    rank = (n // 2).clamp(max=d2.shape[1] - 1)[:, None, None].expand(-1, d2.shape[1], 1)
    median = torch.where(mask, closest.gather(2, rank)[..., 0],
                         torch.full((), float("inf"), dtype=d2.dtype, device=d2.device))
    spread, slot = median.min(dim=1)
    return slot, spread


def pairwise_sq_distances(rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(m, k, k)`` squared Euclidean distances between each receiver's rows.

    Through the Gram matrix of centred rows (one batched product, no ``(k, k, d)`` tensor),
    clamped at 0; pairs involving a masked-out slot are ``+inf``, the diagonal is 0.

    **Centre.** Distances are translation invariant, but the expansion ``||a||^2 + ||b||^2 - 2ab``
    loses the digits of ``||a - b||^2`` that ``||a||^2`` does not have room for, so rows are
    first centred on one of them, each receiver's first real row (in gossip, the receiver's own
    row; a mean would cost one more pass over the rows and be no more robust). That row may be
    a huge Byzantine one, far from the honest rows, and then their small distances round to 0,
    2, 8, ... in float32. So when it lies farther than ``sqrt(RECENTRE_RATIO)`` times the
    :func:`medoid`'s median distance from the medoid (a row amid the honest ones, found even
    from the rounded distances), that receiver's Gram matrix is computed again around the
    medoid row: a second pass over those receivers' rows only.
    """
    first = mask.to(torch.int8).argmax(dim=1)  # each receiver's first real row
    g = gram(rows, mask, rows[torch.arange(rows.shape[0], device=rows.device), first])
    d2 = _sq_distances_from_gram(g, mask)
    slot, spread = medoid(d2, mask)
    far = torch.diagonal(g, dim1=1, dim2=2).gather(1, slot[:, None])[:, 0]
    again = (far > RECENTRE_RATIO * spread).nonzero()[:, 0]
    if len(again):
        sub_rows, sub_mask = rows[again], mask[again]
        centre = sub_rows[torch.arange(len(again), device=rows.device), slot[again]]
        d2[again] = _sq_distances_from_gram(gram(sub_rows, sub_mask, centre), sub_mask)
    return d2
