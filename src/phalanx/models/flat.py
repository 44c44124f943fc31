"""Flat parameter vectors: how aggregators, attacks and the ledger see a model.

A model with parameters ``p_1 .. p_k`` is one row ``concat(p_1.flatten(), ..., p_k.flatten())``
of length ``d``. All nodes' models are the rows of one ``(n, d)`` tensor.

:class:`FlatModel` re-points a template module's parameters into one flat buffer, so that

- the per-node loop copies a row in, trains the module in place, and copies the row out (the
  node's weights stay in cache while it trains, which is what wins on a small CPU);
- the batched path calls :meth:`FlatModel.functional` with a row, or with a ``vmap``-ed batch of
  rows, through ``torch.func.functional_call`` without copying anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call


@dataclass(frozen=True)
class ParamSlot:
    name: str
    offset: int
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


class FlatModel:
    """A template module whose parameters are views into one flat vector ``self.flat``."""

    def __init__(self, module: nn.Module):
        if any(True for _ in module.buffers()):
            raise ValueError("models with buffers (e.g. batch norm statistics) are not supported yet")
        self.module = module
        slots, offset = [], 0
        for name, p in module.named_parameters():
            slots.append(ParamSlot(name, offset, tuple(p.shape)))
            offset += p.numel()
        self.slots: tuple[ParamSlot, ...] = tuple(slots)
        self.dim = offset
        first = next(module.parameters())
        self.flat = torch.empty(self.dim, dtype=first.dtype, device=first.device)
        with torch.no_grad():
            for slot, p in zip(self.slots, module.parameters()):
                self.flat[slot.offset : slot.offset + slot.numel].copy_(p.reshape(-1))
        self._rebind()

    def _rebind(self) -> None:
        """Make each module parameter a view into ``self.flat``."""
        owners = dict(self.module.named_modules())
        for slot in self.slots:
            owner_name, _, attr = slot.name.rpartition(".")
            view = self.flat[slot.offset : slot.offset + slot.numel].view(slot.shape)
            setattr(owners[owner_name], attr, nn.Parameter(view))
        self.params: list[torch.Tensor] = list(self.module.parameters())

    def to(self, device: torch.device | str) -> "FlatModel":
        self.module.to(device)
        self.flat = self.flat.to(device)
        self._rebind()
        return self

    def views(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Parameter dict viewing ``rows`` (shape ``(..., d)``), for ``functional_call``."""
        lead = rows.shape[:-1]
        return {
            s.name: rows[..., s.offset : s.offset + s.numel].view(*lead, *s.shape) for s in self.slots
        }

    def functional(self, row: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The module's output on ``x`` with parameters taken from the flat ``row``."""
        return functional_call(self.module, self.views(row), (x,))


def initial_row(factory: Callable[[], nn.Module], seed: int) -> torch.Tensor:
    """The flat initial parameters of a freshly built model, deterministic in ``seed``."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        module = factory()
    finally:
        torch.random.set_rng_state(state)
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])
