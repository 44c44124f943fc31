"""Software and protocol versions, minimum versions, and the fork ID of EIP-2124.

**Versions.** A software version is dotted integers (``0.1.0``; a ``phalanx-`` prefix, as in a
node registration's ``software`` field, is dropped), compared as tuples; a protocol version is
one integer. A minimum applies from an activation round (:class:`Minimum`), so a node below it
is refused in the handshake from that round on, and a stale node halts when it gets there.

**Fork ID** (Szilágyi and Jiang, EIP-2124, "Fork identifier for chain compatibility checks",
2019). Two nodes compare ``(FORK_HASH, FORK_NEXT)`` before talking: FORK_HASH sums the genesis
and every upgrade already activated, FORK_NEXT is the round of the next scheduled upgrade (0 if
none). EIP-2124 sums block numbers with CRC32; a Phalanx upgrade is a governance decision, so
the sum covers each upgrade's round *and* a digest of what it changes (two networks that
activate different minimums at the same round get different hashes):
``FORK_HASH = SHA-256("phalanx.net/fork/v1" || genesis || (round_i || digest_i)...)[:4]``.

The EIP's validation rules, with rounds for blocks (:meth:`ForkSchedule.check`):

1. equal hashes: compatible, unless the remote announces a FORK_NEXT this node has already
   passed (then one side missed an upgrade);
2. the remote hash is one of this node's past sums: compatible only if its FORK_NEXT is the
   upgrade that followed it (it knows, and will activate it), else the remote is stale;
3. the remote hash is one of this node's future sums (scheduled, not yet reached): compatible;
4. anything else: another network, or an upgrade this node never heard of.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

FORK_DOMAIN = b"phalanx.net/fork/v1"
_VERSION = re.compile(r"^(?:phalanx-)?(\d{1,9}(?:\.\d{1,9}){0,3})$")


class VersionError(ValueError):
    """A version string that cannot be read, or a node below the minimum (``status`` 426)."""

    status = 400


class TooOld(VersionError):
    status = 426


def parse_version(text: str) -> tuple[int, ...]:
    """``"phalanx-0.10.2"`` -> ``(0, 10, 2)``; raises :class:`VersionError` naming the text."""
    m = _VERSION.match(text or "")
    if m is None:
        raise VersionError(f"version {str(text)[:40]!r} is not dotted integers such as 0.1.0")
    return tuple(int(p) for p in m.group(1).split("."))


def version_text(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def at_least(have: str, need: str) -> bool:
    a, b = parse_version(have), parse_version(need)
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)) >= b + (0,) * (width - len(b))


@dataclass(frozen=True)
class Minimum:
    """From round ``since`` on, nodes need software ``software`` and protocol ``protocol``."""

    since: int
    software: str
    protocol: int
    source: str = "genesis"  # what set it: "genesis" or "proposal entry N"

    def refuse(self, software: str, protocol: int) -> str | None:
        """Why a node with these versions is refused under this minimum, or ``None``."""
        if not at_least(software, self.software):
            return (f"software {software} is below the minimum {self.software} in force since round "
                    f"{self.since} ({self.source}): upgrade")
        if protocol < self.protocol:
            return (f"protocol {protocol} is below the minimum {self.protocol} in force since round "
                    f"{self.since} ({self.source}): upgrade")
        return None


@dataclass(frozen=True)
class Upgrade:
    """An activated upgrade: the round it takes effect and a digest of what it changes."""

    round: int
    digest: bytes


class ForkError(VersionError):
    status = 426


class ForkSchedule:
    """A network's genesis and upgrades, giving the fork ID at any round and the EIP-2124 check."""

    def __init__(self, genesis: bytes, upgrades: list[Upgrade] = ()):
        self.genesis = bytes(genesis)
        self.upgrades = sorted(upgrades, key=lambda u: (u.round, u.digest))
        self.sums = [self._sum(i) for i in range(len(self.upgrades) + 1)]

    def _sum(self, count: int) -> bytes:
        h = hashlib.sha256(FORK_DOMAIN + self.genesis)
        for u in self.upgrades[:count]:
            h.update(u.round.to_bytes(8, "big") + u.digest)
        return h.digest()[:4]

    def _passed(self, head: int) -> int:
        return sum(1 for u in self.upgrades if u.round <= head)

    def fork_id(self, head: int) -> tuple[bytes, int]:
        """(FORK_HASH, FORK_NEXT) of a node at round ``head``."""
        i = self._passed(head)
        nxt = self.upgrades[i].round if i < len(self.upgrades) else 0
        return self.sums[i], nxt

    def check(self, head: int, remote_hash: bytes, remote_next: int) -> None:
        """Raise :class:`ForkError` (one line, saying which side must upgrade) unless compatible."""
        here = self._passed(head)
        for i, value in enumerate(self.sums):
            if value != remote_hash:
                continue
            if i == here:
                if remote_next and head >= remote_next:
                    raise ForkError(f"fork ID {remote_hash.hex()} announces an upgrade at round {remote_next}, "
                                    f"which this node (round {head}) passed without it: this node is stale")
                return
            if i < here:
                if remote_next == self.upgrades[i].round:
                    return
                raise ForkError(f"fork ID {remote_hash.hex()} is stale: it lacks the upgrade activated at round "
                                f"{self.upgrades[i].round}: upgrade the remote node")
            return  # the remote is ahead on a schedule this node knows
        raise ForkError(f"fork ID {remote_hash.hex()} is unknown here ({self.sums[here].hex()} at round {head}): "
                        "another network, or an upgrade this node has not seen")
