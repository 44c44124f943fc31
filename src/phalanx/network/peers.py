"""The peers a node knows: where they listen, their keys, and whether they seem up.

A peer is known from the genesis, from a bootstrap line in the node's configuration, or from
peer exchange: every node signs a small record about itself (node ID, key, X25519 key, URL,
software, roles, time), and nodes pass on the records they hold (``peers`` endpoint). A record
only says where to knock: the handshake that follows checks the version, the fork ID and
admission, and only a node registered in this node's log takes part in its rounds.

Liveness is what this node saw: a failed send marks a peer down (it is not waited for in the next
round), and any message from it marks it up again. Which peers to sample is
:class:`PeerSampler`'s business; :class:`AllPeers` takes every live one, and
:class:`~.view.SampledPeers` a view drawn by Basalt, Brahms or push-pull, with scores after
gossipsub v1.1 (``node.yaml``'s ``sampling``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from phalanx.core.encoding import EncodingError, decode, encode
from phalanx.core.keys import SignatureError, SigningKey, VerifyKey, node_id

RECORD_DOMAIN = b"phalanx.net/peer-record/v1\n"


@dataclass
class Peer:
    node: bytes
    url: str
    xk: bytes | None = None
    key: bytes | None = None  # current Ed25519 key, once known
    name: str = ""
    software: str = ""
    roles: tuple[str, ...] = ()
    registered: bool = False  # in this node's log
    handshaken: bool = False
    up: bool = True
    last_seen: float = 0.0
    refusal: str = ""  # why our last handshake with it failed, if it did
    refusal_status: int = 0
    seq: int | None = None  # our next sequence number in its log
    round: int = 0  # the latest round it sent this node an update for (the round it is working on)
    record: bytes | None = None  # its signed peer record, as peer exchange brought it (passed on)


@dataclass
class PeerTable:
    """Known peers by node ID; thread-safe."""

    me: bytes
    peers: dict[bytes, Peer] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, peer: Peer) -> Peer:
        with self._lock:
            if peer.node == self.me:
                return peer
            known = self.peers.get(peer.node)
            if known is None:
                self.peers[peer.node] = peer
                return peer
            known.url = peer.url or known.url
            known.xk = peer.xk or known.xk
            return known

    def get(self, node: bytes) -> Peer | None:
        return self.peers.get(node)

    def all(self) -> list[Peer]:
        with self._lock:
            return sorted(self.peers.values(), key=lambda p: p.node)

    def seen(self, node: bytes) -> None:
        p = self.peers.get(node)
        if p is not None:
            p.up, p.last_seen = True, time.time()

    def down(self, node: bytes) -> None:
        p = self.peers.get(node)
        if p is not None:
            p.up = False


class PeerSampler(Protocol):
    def sample(self, table: PeerTable, round_: int) -> list[Peer]: ...

    def heard(self, peer: Peer) -> None: ...  # it pushed this node an update or its record

    def delivered(self, peer: Peer) -> None: ...  # its message was valid and new

    def invalid(self, peer: Peer) -> None: ...  # its message was refused as invalid

    def describe(self, table: PeerTable) -> dict: ...


class AllPeers:
    """Every registered peer that seems up (complete graph); :class:`~.view.SampledPeers` is the
    eclipse-resistant alternative (Basalt, Brahms, with peer scores)."""

    def sample(self, table: PeerTable, round_: int) -> list[Peer]:
        return [p for p in table.all() if p.registered and p.up]

    def heard(self, peer: Peer) -> None:
        pass

    def delivered(self, peer: Peer) -> None:
        pass

    def invalid(self, peer: Peer) -> None:
        pass

    def describe(self, table: PeerTable) -> dict:
        return {"sampler": "all"}


def sign_record(key: SigningKey, node: bytes, xk: bytes, url: str, software: str, roles: list[str]) -> bytes:
    fields = {"node": node, "key": key.public.raw, "xk": xk, "url": url, "software": software,
              "roles": list(roles), "ts": int(time.time())}
    return encode({"r": fields, "sig": key.sign(RECORD_DOMAIN + encode(fields))})


def open_record(data: bytes, current_key: bytes | None) -> dict | None:
    """The fields of a peer record whose signature holds (by the node's current key, or by the key
    its node ID names for a node not yet known); ``None`` for anything else."""
    try:
        outer = decode(data, max_size=4096)
        fields, sig = outer["r"], outer["sig"]
        key = fields["key"]
        if current_key is not None and key != current_key:
            return None
        if current_key is None and node_id(key) != fields["node"]:
            return None
        VerifyKey(key).verify(sig, RECORD_DOMAIN + encode(fields))
        if not (isinstance(fields["url"], str) and isinstance(fields["xk"], bytes) and len(fields["xk"]) == 32):
            return None
        return fields
    except (EncodingError, KeyError, TypeError, SignatureError, ValueError):
        return None
