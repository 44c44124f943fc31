"""The aggregator contract: ``(n, d)`` rows in, one ``(d,)`` row out; batched over receivers.

The primary form is batched, because in gossip every receiver aggregates a different set of
neighbours: ``aggregate(rows (m, k, d), mask (m, k), weights (m, k) | None) -> (m, d)``, where
``mask[r, j]`` says whether slot ``j`` of receiver ``r`` holds a real row. A rule must not loop
over receivers or rows in Python. The single-receiver call ``rule(rows (n, d), weights)`` is the
batched form with ``m = 1``.

Each rule declares its contract as class attributes, which property tests are generated from:

- ``accepts_weights``: whether per-row weights have a standard meaning for this rule;
- ``bound``: what the output is guaranteed to stay within (``"hull"``: the convex hull of the
  rows it was given; later rules declare weaker or stronger bounds).

A rule that needs a minimum number of rows (``2f < n``, ``n >= 4f + 3``) says so in
:meth:`Aggregator.admissible`, checked on every call per receiver: a receiver whose live rows fall
below the bound keeps its own model, and the engine logs that as an availability event.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch


class InsufficientRows(ValueError):
    """A rule was called with fewer rows than its robustness condition needs."""


class Aggregator:
    """Base class of every aggregation rule (see the module docstring for the contract)."""

    accepts_weights: ClassVar[bool] = False
    bound: ClassVar[str] = "hull"

    def admissible(self, counts: torch.Tensor) -> torch.Tensor:
        """Which receivers have enough rows for this rule (``counts``: rows per receiver)."""
        return counts >= 1

    def requirement(self) -> str:
        """The condition of :meth:`admissible`, in words, for error messages."""
        return "at least 1 row"

    def aggregate(
        self,
        rows: torch.Tensor,
        mask: torch.Tensor,
        weights: torch.Tensor | None = None,
        context: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def __call__(
        self,
        rows: torch.Tensor,
        weights: torch.Tensor | None = None,
        context: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        if rows.ndim != 2:
            raise ValueError(f"expected (n, d) rows, got shape {tuple(rows.shape)}")
        n = rows.shape[0]
        if not bool(self.admissible(torch.tensor([n]))[0]):
            raise InsufficientRows(f"{type(self).__name__} got {n} rows, needs {self.requirement()}")
        mask = torch.ones(1, n, dtype=torch.bool, device=rows.device)
        w = None if weights is None else weights[None]
        return self.aggregate(rows[None], mask, w, context)[0]
