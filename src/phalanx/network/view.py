"""A deployed node's view: the few peers its gossip rounds talk to, chosen by a peer sampler.

:class:`SampledPeers` is the :class:`~.peers.PeerSampler` a node uses in place of
:class:`~.peers.AllPeers` when its ``node.yaml`` names a sampler (``sampling: {name: basalt,
view: 4}``). It keeps one of :mod:`.sampling`'s samplers over the peers the node has heard of,
indexed in the order it heard of them:

- the **candidates** of a round are the registered peers that seem up: the node's peer table,
  filled by the genesis, bootstrap lines and peer exchange (which passes on the records of the
  exchanging nodes' views, Basalt's pull); what was **pushed** to the node since the last round
  (a peer's update or its peer record) is Brahms' push set (Bortnikov et al. 2009, section 4);
- once per round the sampler updates its view (Basalt: each of ``view`` slots keeps the
  candidate of smallest rank under its seed, one slot re-seeded per round; Auvolat et al. 2023,
  sections 3 and 4.2) and the round sends to the distinct peers in it;
- **scores** (:class:`~.scoring.PeerScores`, after gossipsub v1.1) count first deliveries and
  invalid messages (a refused update, a malformed body); a graylisted peer is no candidate.

Basalt's rank is hierarchical over the address's /8, /16, /24 and /32 prefixes; peers behind one
address (every node of a loopback network) then tie, and the tie is broken by a hash of the node
ID under the slot's seed, so identities on one address compete for the slots one address would
win. The rank here is exact (64 bits of prefix ranks, then the tie-break, sorted
lexicographically). Loopback addresses are exempt from the IP colocation factor, as gossipsub
v1.1 lets a deployment whitelist addresses (``IPColocationFactorWhitelist``): on one machine
every node shares an address by construction.
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
from urllib.parse import urlparse

import numpy as np

from phalanx.network.peers import Peer, PeerTable
from phalanx.network.sampling import SAMPLERS, Basalt, mix
from phalanx.network.scoring import PeerScores


def ipv4_of(url: str) -> tuple[int, bool]:
    """The IPv4 address (as an int) a peer's URL names, and whether it is a loopback address; a
    host name or an IPv6 address is read as a hash of it (one "address" per host)."""
    host = urlparse(url).hostname or ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return int.from_bytes(hashlib.sha256(host.encode()).digest()[:4], "big"), host == "localhost"
    if ip.version == 4:
        return int(ip), ip.is_loopback
    return int.from_bytes(hashlib.sha256(ip.packed).digest()[:4], "big"), ip.is_loopback


def exact_rank(seeds: np.ndarray, ips: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """(slots, candidates) ranks, 0 the smallest: each prefix /8, /16, /24, /32 hashed under the
    slot's seed (16 bits each, as :func:`.sampling.hierarchical_rank`), then the tie-break."""
    a = ips.astype(np.uint64)[None, :]
    s = seeds.astype(np.uint64)[:, None]
    hi = np.zeros((len(seeds), len(ips)), dtype=np.uint64)
    for level, bits in enumerate((8, 16, 24, 32)):
        h = mix(s ^ mix((a >> np.uint64(32 - bits)) + np.uint64(level << 40)))
        hi = (hi << np.uint64(16)) | (h >> np.uint64(48))
    lo = mix(s ^ mix(tiebreak.astype(np.uint64)[None, :]))
    return np.argsort(np.lexsort((lo, hi), axis=-1), axis=-1)


class NodeBasalt(Basalt):
    """Basalt over a node's peers: ``addresses`` hold the IPv4 address in the high 32 bits and
    the node ID's tie-break in the low 32."""

    def _rank(self, seeds, cands):
        keys = self.addresses[cands].astype(np.uint64)
        return exact_rank(seeds, keys >> np.uint64(32), keys & np.uint64(0xFFFFFFFF))


def build_sampler(name: str, view: int, rng: np.random.Generator, scores: PeerScores):
    """One of :data:`.sampling.SAMPLERS` by name, over an empty population (it grows)."""
    if name not in SAMPLERS:
        raise ValueError(f"peer sampler {name!r} is not one of {', '.join(sorted(SAMPLERS))}")
    cls = NodeBasalt if name == "basalt" else SAMPLERS[name]
    return cls(np.zeros(0, dtype=np.uint64), view, rng, scores=scores)


class SampledPeers:
    """A node's view of ``view`` slots, drawn by sampler ``name``, seeded by ``seed`` (bytes)."""

    def __init__(self, name: str, view: int, seed: bytes):
        self.name, self.v = name, view
        self.nodes: list[bytes] = []
        self.index: dict[bytes, int] = {}
        self.scores = PeerScores(np.zeros(0, dtype=np.uint32))
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(b"phalanx.net/view\n" + seed).digest()[:8], "big"))
        self.sampler = build_sampler(name, view, rng, self.scores)
        self.pushed: set[int] = set()
        self.round: int | None = None
        self.round_count = 0
        self._lock = threading.Lock()

    # -- the population ----------------------------------------------------------------------
    def _indices(self, peers: list[Peer]) -> np.ndarray:
        """Each peer's index, adding the new ones (the sampler's and the scores' arrays grow)."""
        new = [p for p in peers if p.node not in self.index]
        if new:
            keys, scored = [], []
            for p in new:
                self.index[p.node] = len(self.nodes)
                self.nodes.append(p.node)
                ip, loopback = ipv4_of(p.url)
                node32 = int.from_bytes(p.node[:4], "big")
                keys.append((ip << 32) | node32)
                scored.append(node32 if loopback else ip)  # loopback: whitelisted from colocation
            s = self.scores
            s.addresses = np.concatenate([s.addresses, np.array(scored, dtype=np.uint32)])
            for counter in ("first", "invalid", "behaviour"):
                setattr(s, counter, np.concatenate([getattr(s, counter), np.zeros(len(new))]))
            self.sampler.addresses = np.concatenate([self.sampler.addresses, np.array(keys, dtype=np.uint64)])
        return np.array([self.index[p.node] for p in peers], dtype=int)

    # -- what the node tells it --------------------------------------------------------------
    def heard(self, peer: Peer) -> None:
        """``peer`` pushed something to this node (its update, its peer record)."""
        with self._lock:
            self.pushed.add(int(self._indices([peer])[0]))

    def delivered(self, peer: Peer) -> None:
        with self._lock:
            self.scores.deliver(self._indices([peer]))

    def invalid(self, peer: Peer) -> None:
        """``peer`` sent an invalid message (gossipsub v1.1's P4)."""
        with self._lock:
            self.scores.invalid_message(self._indices([peer]))

    # -- the view ----------------------------------------------------------------------------
    def sample(self, table: PeerTable, round_: int) -> list[Peer]:
        """The distinct live peers of the view, updated once per round from the table's candidates."""
        with self._lock:
            live = [p for p in table.all() if p.registered and p.up]
            cands = self._indices(live)
            if round_ != self.round:
                self.round = round_
                # the first round's pushes are the bootstrap: ``view`` of the peers the genesis or
                # config named (more would read as push flooding to Brahms)
                pushed = np.array(sorted(self.pushed), dtype=int)
                if self.round_count == 0 and len(cands):
                    pushed = self.sampler.rng.choice(cands, min(self.v, len(cands)), replace=False)
                self.pushed, self.round_count = set(), self.round_count + 1
                view = self.sampler.view
                held = view >= 0
                view[held & ~self.scores.acceptable()[np.maximum(view, 0)]] = -1  # graylisted: evicted
                self.sampler.update(cands, pushed)
                self.scores.decay()
            slots = self.sampler.view
            ok = self.scores.acceptable()
            chosen = {self.nodes[i] for i in slots[slots >= 0].tolist() if ok[i]}
        return [p for p in live if p.node in chosen]

    def describe(self, table: PeerTable) -> dict:
        """For the node's status: the sampler, its view size, and the peers in the view now."""
        with self._lock:
            slots = self.sampler.view
            nodes = [self.nodes[i] for i in slots[slots >= 0].tolist()]
        names = [(p.name or p.node.hex()[:16]) if (p := table.get(n)) else n.hex()[:16] for n in nodes]
        return {"sampler": self.name, "size": self.v, "slots": len(slots), "peers": sorted(set(names))}
